//! How `raftlm status` reaches each node on its own, whether or not the
//! cluster has an active node: every address it was given and every node
//! their configurations list is asked for `NodeInfo`, all at once, and each
//! failure is told apart — *refused* (the host answered, nothing listens on
//! the port), *unreachable* (no answer in time, no route to the host),
//! *unresolvable* (the name does not resolve), *failed* (connected, but the
//! call failed: TLS, a gRPC error).
//!
//! The name is resolved and a TCP connection opened here first, so that the
//! operating system's own error decides the class; the call itself then goes
//! through tonic like every other client call.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::ErrorKind;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::proto::v1 as pb;
use crate::proto::v1::license_client::LicenseClient;
use crate::tls::client::ClientTls;

/// How one address answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reach {
    /// The node answered `NodeInfo`.
    Answered(Box<pb::NodeInfoReply>),
    /// The host refused the connection: nothing listens on the port (the
    /// node is not running, or the port is wrong).
    Refused(String),
    /// No answer: the connection or the call timed out, or there is no route
    /// to the host or its network.
    Unreachable(String),
    /// The host name does not resolve (DNS).
    Unresolvable(String),
    /// Connected, but the call failed (a TLS handshake, a gRPC error).
    Failed(String),
}

impl Reach {
    /// One word for the class: `reachable`, `refused`, `unreachable`,
    /// `unresolvable` or `failed` (the JSON form's `reachability`).
    pub fn kind(&self) -> &'static str {
        match self {
            Reach::Answered(_) => "reachable",
            Reach::Refused(_) => "refused",
            Reach::Unreachable(_) => "unreachable",
            Reach::Unresolvable(_) => "unresolvable",
            Reach::Failed(_) => "failed",
        }
    }

    /// The node's own report, when it answered.
    pub fn info(&self) -> Option<&pb::NodeInfoReply> {
        match self {
            Reach::Answered(info) => Some(info),
            _ => None,
        }
    }

    /// What went wrong, as a phrase; for an answer, the node's own view:
    /// `standby, term 7, applied 1042, committed 1042, version 0.2.0`.
    pub fn detail(&self) -> String {
        match self {
            Reach::Answered(info) => {
                let role = if info.role.is_empty() {
                    "role not reported"
                } else {
                    &info.role
                };
                let leader = match info.leader {
                    0 => ", knows no leader".to_string(),
                    id if id == info.id => String::new(),
                    id => format!(", leader node {id}"),
                };
                format!(
                    "{role}, term {}, applied {}, committed {}, version {}{leader}",
                    info.term, info.applied_index, info.committed_index, info.version
                )
            }
            Reach::Refused(why)
            | Reach::Unreachable(why)
            | Reach::Unresolvable(why)
            | Reach::Failed(why) => why.clone(),
        }
    }

    /// `kind: detail`, the line `raftlm status` prints under a node.
    pub fn text(&self) -> String {
        format!("{}: {}", self.kind(), self.detail())
    }
}

/// Seconds with one decimal, `3.0 s`.
fn seconds(span: Duration) -> String {
    format!("{:.1} s", span.as_secs_f64())
}

/// The class of an I/O error from connecting: refused, or unreachable
/// (timeouts, no route, and whatever else keeps the connection from being
/// made); `None` for an error that says nothing of the network.
fn class_of(kind: ErrorKind) -> Option<fn(String) -> Reach> {
    match kind {
        ErrorKind::ConnectionRefused => Some(Reach::Refused),
        ErrorKind::TimedOut
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::NetworkDown
        | ErrorKind::AddrNotAvailable
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted => Some(Reach::Unreachable),
        _ => None,
    }
}

/// `error` and its sources, joined with `: `, each said once.
fn chain_text(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

/// The I/O error kind somewhere in `error`'s source chain.
fn io_kind(error: &(dyn Error + 'static)) -> Option<ErrorKind> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        next = error.source();
    }
    None
}

/// A call that failed after the TCP connection was made: refused or
/// unreachable if an I/O error says so (the node went away in between),
/// else failed.
fn after_connect(error: &(dyn Error + 'static)) -> Reach {
    let text = chain_text(error);
    match io_kind(error).and_then(class_of) {
        Some(class) => class(text),
        None => Reach::Failed(text),
    }
}

/// Resolves `address` (`host:port`) and opens a TCP connection to it by
/// `deadline`: `Ok` when one of its addresses accepts, else how it failed.
pub async fn connect(address: &str, deadline: Instant) -> Result<(), Reach> {
    let budget = deadline.saturating_duration_since(Instant::now());
    let resolved: Vec<std::net::SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host(address)).await {
            Err(_) => {
                return Err(Reach::Unresolvable(format!(
                    "the name service did not answer for {address} within {}",
                    seconds(budget)
                )));
            }
            Ok(Err(error)) => {
                return Err(Reach::Unresolvable(format!(
                    "{address} does not resolve: {error}"
                )));
            }
            Ok(Ok(found)) => found.collect(),
        };
    if resolved.is_empty() {
        return Err(Reach::Unresolvable(format!(
            "{address} resolves to no address"
        )));
    }
    // Every address the name has, in the resolver's order, until one
    // accepts; refused only when every one refused.
    let mut failures: Vec<Reach> = Vec::new();
    for ip in &resolved {
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(ip)).await {
            Ok(Ok(_stream)) => return Ok(()),
            Ok(Err(error)) => {
                let text = if ip.to_string() == address {
                    format!("{error}")
                } else {
                    format!("{ip}: {error}")
                };
                failures.push(class_of(error.kind()).unwrap_or(Reach::Unreachable)(text));
            }
            Err(_) => {
                failures.push(Reach::Unreachable(format!(
                    "no answer from {ip} within {}",
                    seconds(budget)
                )));
                break;
            }
        }
    }
    if failures.iter().all(|f| matches!(f, Reach::Refused(_))) {
        let texts: Vec<String> = failures.iter().map(Reach::detail).collect();
        return Err(Reach::Refused(texts.join("; ")));
    }
    let texts: Vec<String> = failures
        .iter()
        .filter(|f| !matches!(f, Reach::Refused(_)))
        .map(Reach::detail)
        .collect();
    Err(Reach::Unreachable(texts.join("; ")))
}

/// Asks `address` for its `NodeInfo` by `deadline`, with `tls`.
pub async fn probe(address: &str, tls: &ClientTls, deadline: Instant) -> Reach {
    let started = Instant::now();
    if let Err(reach) = connect(address, deadline).await {
        return reach;
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let endpoint = match tls.endpoint(address, remaining) {
        Ok(endpoint) => endpoint,
        Err(error) => return Reach::Failed(error),
    };
    let ask = async {
        let channel = endpoint.connect().await.map_err(|e| after_connect(&e))?;
        LicenseClient::new(channel)
            .node_info(pb::NodeInfoRequest::default())
            .await
            .map(|reply| Reach::Answered(Box::new(reply.into_inner())))
            .map_err(|status| match status.source() {
                Some(source) => after_connect(source),
                None => Reach::Failed(format!("{:?}: {}", status.code(), status.message())),
            })
    };
    match tokio::time::timeout_at(deadline, ask).await {
        Ok(Ok(reach) | Err(reach)) => reach,
        Err(_) => Reach::Unreachable(format!(
            "accepts connections but did not answer within {}",
            seconds(started.elapsed())
        )),
    }
}

/// Probes of many addresses at once; an answer's configured nodes are asked
/// in turn, so one answering node is enough to learn them all.
pub struct Survey {
    tls: ClientTls,
    deadline: Instant,
    started: Instant,
    running: JoinSet<(String, Reach)>,
    asked: Vec<String>,
    done: Vec<(String, Reach)>,
}

impl Survey {
    /// Starts probing `addresses`; every probe ends by `deadline`.
    pub fn start(addresses: &[String], tls: &ClientTls, deadline: Instant) -> Survey {
        let mut survey = Survey {
            tls: tls.clone(),
            deadline,
            started: Instant::now(),
            running: JoinSet::new(),
            asked: Vec::new(),
            done: Vec::new(),
        };
        for address in addresses {
            survey.ask(address);
        }
        survey
    }

    /// Probes `address` too, unless it was asked already.
    pub fn ask(&mut self, address: &str) {
        if address.is_empty() || self.asked.iter().any(|a| a == address) {
            return;
        }
        self.asked.push(address.to_string());
        let (address, tls, deadline) = (address.to_string(), self.tls.clone(), self.deadline);
        self.running.spawn(async move {
            let reach = probe(&address, &tls, deadline).await;
            debug!(%address, reach = %reach.text(), "probed");
            (address, reach)
        });
    }

    /// Whether probes are still running.
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    /// Waits for the next probe to end and records it (asking the nodes its
    /// answer lists); returns at once when none is running.
    pub async fn next(&mut self) {
        let Some(joined) = self.running.join_next().await else {
            return;
        };
        let Ok((address, reach)) = joined else {
            return;
        };
        if let Some(info) = reach.info() {
            let listed: Vec<String> = info.nodes.iter().map(|n| n.address.clone()).collect();
            for other in listed {
                self.ask(&other);
            }
        }
        self.done.push((address, reach));
    }

    /// Runs until every probe has ended (they end by the deadline).
    pub async fn run(mut self) -> Vec<(String, Reach)> {
        while self.busy() {
            self.next().await;
        }
        self.finish()
    }

    /// Every address asked and how it answered; one still running is
    /// stopped and counted unreachable.
    pub fn finish(mut self) -> Vec<(String, Reach)> {
        self.running.abort_all();
        let waited = seconds(self.started.elapsed());
        for address in &self.asked {
            if !self.done.iter().any(|(a, _)| a == address) {
                self.done.push((
                    address.clone(),
                    Reach::Unreachable(format!("no answer within {waited}")),
                ));
            }
        }
        self.done
    }
}

/// One row of `raftlm status`'s node list: a configured node (`id`), or an
/// address given with `--server` that no configured node has (the access
/// point, or any address while no node answered).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReach {
    /// The node's id; `None` for an address no configured node has.
    pub id: Option<u64>,
    /// The address asked.
    pub address: String,
    /// How it answered.
    pub reach: Reach,
}

/// The rows for the probes' results: the configured nodes in id order (from
/// `members`, the active node's list when it answered, and from every
/// answer's own configuration), then the addresses asked that no configured
/// node has and that did not answer for one.
pub fn nodes_view(members: &[(u64, String)], probed: &[(String, Reach)]) -> Vec<NodeReach> {
    let mut nodes: BTreeMap<u64, String> = members.iter().cloned().collect();
    for (address, reach) in probed {
        if let Some(info) = reach.info() {
            for node in &info.nodes {
                nodes.entry(node.id).or_insert_with(|| node.address.clone());
            }
            // A node that does not list its configuration still names itself.
            nodes.entry(info.id).or_insert_with(|| address.clone());
        }
    }
    let mut rows: Vec<NodeReach> = nodes
        .iter()
        .map(|(&id, address)| {
            let answered = probed
                .iter()
                .find(|(_, r)| r.info().is_some_and(|i| i.id == id));
            let own = probed.iter().find(|(a, _)| a == address);
            let reach = answered.or(own).map_or_else(
                || Reach::Unreachable("not asked: no time was left".into()),
                |(_, r)| r.clone(),
            );
            NodeReach {
                id: Some(id),
                address: address.clone(),
                reach,
            }
        })
        .collect();
    for (address, reach) in probed {
        let claimed = nodes.values().any(|a| a == address)
            || reach.info().is_some_and(|i| nodes.contains_key(&i.id));
        if !claimed {
            rows.push(NodeReach {
                id: None,
                address: address.clone(),
                reach: reach.clone(),
            });
        }
    }
    rows
}

/// `no quorum: 1 of 3 nodes reachable`, or what else the rows say when no
/// node is active: how many configured nodes answered, out of how many.
pub fn outage_text(rows: &[NodeReach]) -> String {
    let configured = rows.iter().filter(|r| r.id.is_some()).count();
    if configured == 0 {
        let given = rows.len();
        return format!(
            "no node reachable: none of the {given} address{} given answered",
            if given == 1 { "" } else { "es" }
        );
    }
    let reachable = rows
        .iter()
        .filter(|r| r.id.is_some() && r.reach.info().is_some())
        .count();
    let majority = configured / 2 + 1;
    if reachable < majority {
        format!("no quorum: {reachable} of {configured} nodes reachable")
    } else {
        format!(
            "no active node, though {reachable} of {configured} nodes are reachable (an election may be in progress)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u64, nodes: &[(u64, &str)]) -> Reach {
        Reach::Answered(Box::new(pb::NodeInfoReply {
            id,
            role: "candidate".into(),
            term: 9,
            applied_index: 42,
            committed_index: 43,
            version: "1.2.3".into(),
            nodes: nodes
                .iter()
                .map(|(id, address)| pb::ConfiguredNode {
                    id: *id,
                    address: address.to_string(),
                })
                .collect(),
            ..Default::default()
        }))
    }

    // A closed port on 127.0.0.1 is refused, a name under the reserved
    // top-level domain .invalid (it never resolves) is unresolvable, and a
    // port that accepts but never answers is unreachable; each is told
    // apart well within the time limit.
    #[tokio::test]
    async fn refused_unresolvable_and_unreachable_are_told_apart() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        // Accepts connections (the kernel's backlog) but never speaks.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_address = silent.local_addr().unwrap().to_string();
        let tls = ClientTls::plaintext();
        let deadline = Instant::now() + Duration::from_secs(2);
        let started = std::time::Instant::now();
        let (refused, unresolvable, unreachable) = tokio::join!(
            probe(&closed, &tls, deadline),
            probe("nosuchhost.invalid:27000", &tls, deadline),
            probe(&silent_address, &tls, deadline),
        );
        assert!(matches!(refused, Reach::Refused(_)), "{refused:?}");
        assert!(
            refused.text().starts_with("refused: ") && refused.text().contains("refused"),
            "{}",
            refused.text()
        );
        assert!(
            matches!(unresolvable, Reach::Unresolvable(_)),
            "{unresolvable:?}"
        );
        assert!(
            unresolvable
                .text()
                .starts_with("unresolvable: nosuchhost.invalid:27000 does not resolve"),
            "{}",
            unresolvable.text()
        );
        assert!(
            matches!(unreachable, Reach::Unreachable(_)),
            "{unreachable:?}"
        );
        assert!(
            unreachable.text().contains("did not answer within"),
            "{}",
            unreachable.text()
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(silent);
    }

    // The I/O error kinds of a failed connection map to their classes.
    #[test]
    fn io_errors_map_to_classes() {
        let class = |kind| class_of(kind).map(|c| c(String::new()).kind());
        assert_eq!(class(ErrorKind::ConnectionRefused), Some("refused"));
        assert_eq!(class(ErrorKind::TimedOut), Some("unreachable"));
        assert_eq!(class(ErrorKind::HostUnreachable), Some("unreachable"));
        assert_eq!(class(ErrorKind::NetworkUnreachable), Some("unreachable"));
        assert_eq!(class(ErrorKind::InvalidData), None);
        let direct = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(after_connect(&direct).kind(), "refused");
    }

    // One answer names the configured nodes; each gets a row, the silent
    // ones with how they failed, and the summary counts the answers.
    #[test]
    fn rows_cover_every_configured_node() {
        let nodes = [(1, "h1:1"), (2, "h2:2"), (3, "h3:3")];
        let probed = vec![
            ("h1:1".to_string(), answer(1, &nodes)),
            (
                "h2:2".to_string(),
                Reach::Refused("connection refused".into()),
            ),
            (
                "h3:3".to_string(),
                Reach::Unresolvable("h3:3 does not resolve".into()),
            ),
            (
                "vip:9".to_string(),
                Reach::Refused("connection refused".into()),
            ),
        ];
        let rows = nodes_view(&[], &probed);
        let ids: Vec<Option<u64>> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![Some(1), Some(2), Some(3), None]);
        assert_eq!(rows[1].reach.kind(), "refused");
        assert_eq!(rows[2].reach.kind(), "unresolvable");
        assert_eq!(
            rows[0].reach.text(),
            "reachable: candidate, term 9, applied 42, committed 43, version 1.2.3, knows no leader"
        );
        assert_eq!(outage_text(&rows), "no quorum: 1 of 3 nodes reachable");

        // The access point answering for node 2 counts as node 2.
        let probed = vec![
            ("h1:1".to_string(), answer(1, &nodes)),
            ("vip:9".to_string(), answer(2, &nodes)),
        ];
        let rows = nodes_view(&[], &probed);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[1].reach.kind(), "reachable");
        assert_eq!(rows[2].reach.kind(), "unreachable");
        assert!(outage_text(&rows).starts_with("no active node, though 2 of 3"));

        // Nobody answered: the addresses given are all there is.
        let probed = vec![
            (
                "h1:1".to_string(),
                Reach::Refused("connection refused".into()),
            ),
            (
                "h2:2".to_string(),
                Reach::Refused("connection refused".into()),
            ),
        ];
        let rows = nodes_view(&[], &probed);
        assert_eq!(
            outage_text(&rows),
            "no node reachable: none of the 2 addresses given answered"
        );
    }
}
