//! `raftlm status [--server S] [--json] [--timeout D]`: the cluster, its
//! nodes, the active node and term, the features and who holds their seats
//! (`lmstat -a`).
//!
//! Next to the active node's linearizable status, every node is asked for
//! its own report (`NodeInfo`: role, term, applied and committed index,
//! version) at the same time, through [`crate::cli::reach`]; all of it ends
//! within `--timeout` (3 s). Without an active node the nodes' reports are
//! what is printed, headed by `no quorum: 1 of 3 nodes reachable` (or how
//! many answered), and the exit code is 3.
//!
//! The text form reads like FlexNet's `lmstat -a`: a header about the
//! cluster, then per feature a `Users of FEATURE:  (Total of N licenses
//! issued;  Total of M licenses in use)` line (N: the seats of lines that have
//! not expired), its seats per expiry, its lines, and one line per grant.
//! `--json` prints one JSON object instead (written here by hand: the crate
//! has no JSON dependency, and the object is flat and small).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use crate::cli::Failure;
use crate::cli::common::{CLIENT_LOG_DEFAULT, failure, format_time_ms, init_logging, runtime};
use crate::cli::reach::{NodeReach, Reach, Survey, nodes_view, outage_text};
use crate::client::{Client, ClientError, ClientOptions, DEFAULT_SERVER, ServerList};
use crate::proto::v1 as pb;
use crate::text::parse_duration;
use crate::tls::client::ClientTls;
use crate::wire::token_from_pb;

/// `raftlm status`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The access point or node list: host:port or port@host, comma-separated.
    #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
    pub server: ServerList,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the active node and the nodes' own reports
    /// (e.g. 3s, 500ms, 1m).
    #[arg(long, default_value = "3s", value_parser = parse_timeout, value_name = "DURATION")]
    pub timeout: Duration,
}

/// A node's certificate expiry is warned about this many days ahead.
pub const CERT_WARN_DAYS: i64 = 30;
/// How long `status` still waits for the nodes' own reports once the active
/// node has answered: a node that is down then costs a healthy cluster's
/// status this much, not the whole `--timeout`.
pub const NODE_INFO_TIMEOUT: Duration = Duration::from_millis(800);
/// `--timeout`'s default: long enough for a failover to finish (about half
/// a second, docs/performance.md) and the new active node to answer, short
/// enough that an outage is reported while the administrator still waits.
pub const STATUS_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Longest `--timeout` accepted: a status that waits longer is a hung
/// monitoring script, not a patient one.
pub const STATUS_TIMEOUT_MAX: Duration = Duration::from_secs(600);

/// Parses `--timeout`: a duration above zero, at most [`STATUS_TIMEOUT_MAX`].
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout.is_zero() || timeout > STATUS_TIMEOUT_MAX {
        return Err(format!(
            "\"{text}\": the timeout must be above 0 and at most {} s",
            STATUS_TIMEOUT_MAX.as_secs()
        ));
    }
    Ok(timeout)
}

/// Runs `raftlm status`. Without an active node it still prints every
/// node's own report, then fails with exit code 3.
pub fn run(args: Args) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    let mut options = ClientOptions::from_env().map_err(Failure::usage)?;
    options.call_timeout = args.timeout;
    options.attempt_timeout = options.attempt_timeout.min(args.timeout);
    let tls = options.tls.clone();
    let addresses = args.server.addresses().to_vec();
    let client = Client::with_options(args.server, options);
    let runtime = runtime()?;
    let (answer, probed) = runtime.block_on(gather(&client, &addresses, &tls, args.timeout));
    // A name lookup stuck in the resolver runs on a blocking thread that
    // no timeout cancels: do not wait for it on the way out.
    runtime.shutdown_background();
    let now = (crate::clock::real_wall_ms() / 1000) as i64;
    match answer {
        Ok(status) => {
            let members: Vec<(u64, String)> = status
                .nodes
                .iter()
                .map(|n| (n.id, n.address.clone()))
                .collect();
            let nodes = nodes_view(&members, &probed);
            if args.json {
                println!("{}", to_json(&status, &nodes, now));
            } else {
                print!("{}", to_text(&status, &nodes, now));
            }
            Ok(())
        }
        Err(error @ ClientError::Unreachable { .. }) => {
            let nodes = nodes_view(&[], &probed);
            let summary = outage_text(&nodes);
            let failure = failure(error);
            if args.json {
                println!("{}", outage_json(&nodes, &summary, &failure.message, now));
            } else {
                print!("{}", outage_to_text(&nodes, &summary, now));
            }
            Err(Failure::unreachable(format!(
                "{summary}; {}",
                failure.message
            )))
        }
        Err(error) => Err(failure(error)),
    }
}

/// Asks the active node for the status and, at the same time, every node
/// for its own report, all within `timeout`; once the active node has
/// answered, the reports still missing get [`NODE_INFO_TIMEOUT`] more.
pub(crate) async fn gather(
    client: &Client,
    addresses: &[String],
    tls: &ClientTls,
    timeout: Duration,
) -> (Result<pb::StatusReply, ClientError>, Vec<(String, Reach)>) {
    let deadline = Instant::now() + timeout;
    let mut survey = Survey::start(addresses, tls, deadline);
    let status = client.status();
    tokio::pin!(status);
    let mut answer: Option<Result<pb::StatusReply, ClientError>> = None;
    let mut stop = deadline;
    loop {
        if answer.is_some() && !survey.busy() {
            break;
        }
        tokio::select! {
            biased;
            result = &mut status, if answer.is_none() => {
                if let Ok(reply) = &result {
                    for node in &reply.nodes {
                        survey.ask(&node.address);
                    }
                    stop = stop.min(Instant::now() + NODE_INFO_TIMEOUT);
                }
                answer = Some(result);
            }
            () = survey.next(), if survey.busy() => {}
            () = tokio::time::sleep_until(stop) => break,
        }
    }
    let answer = answer.unwrap_or_else(|| {
        Err(ClientError::Unreachable {
            tried: addresses.to_vec(),
            last: format!("no answer within {} ms", timeout.as_millis()),
        })
    });
    (answer, survey.finish())
}

/// One line about a node's certificate: its expiry, and a warning within
/// [`CERT_WARN_DAYS`] of it.
fn cert_text(info: Option<&pb::NodeInfoReply>, now_unix: i64) -> String {
    match info {
        None => "certificate: node did not answer".to_string(),
        Some(info) if !info.tls => "NO TLS (tls.plaintext): unencrypted".to_string(),
        Some(info) => {
            let days = (info.cert_not_after_unix - now_unix).div_euclid(86_400);
            let when = format_time_ms(u64::try_from(info.cert_not_after_unix).unwrap_or(0) * 1000);
            if days < 0 {
                format!("certificate EXPIRED {when}")
            } else if days < CERT_WARN_DAYS {
                format!("certificate expires {when} — WARNING: in {days} days, renew it")
            } else {
                format!("certificate expires {when} ({days} days)")
            }
        }
    }
}

fn token_text(token: Option<&pb::GrantToken>) -> String {
    token.map_or_else(|| "-".to_string(), |t| token_from_pb(t).to_string())
}

/// The `lmstat -a`-like text form; `nodes` are how each node answered on
/// its own, `now_unix` the time certificate expiry is judged at.
pub fn to_text(status: &pb::StatusReply, nodes: &[NodeReach], now_unix: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "License server status: {} (cluster of {} nodes)",
        status.cluster_name,
        status.nodes.len()
    );
    if status.cluster_id.is_empty() {
        let _ = writeln!(
            out,
            "    Cluster identity: none recorded (no node has been active with TLS): license files can be bound to the name only"
        );
    } else {
        let _ = writeln!(
            out,
            "    Cluster identity: {} (license files bound to it: SERVER {} ID={} PORT)",
            status.cluster_id, status.cluster_name, status.cluster_id
        );
    }
    let _ = writeln!(
        out,
        "    Record format: the cluster writes format {}",
        status.write_format
    );
    if !status.voters_new.is_empty() {
        let ids = |ids: &[u64]| {
            ids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "    Membership change pending: the voters change from {} to {} (raftlm cluster add-node or remove-node again completes it)",
            ids(&status.voters_old),
            ids(&status.voters_new)
        );
    }
    if status.plaintext {
        let _ = writeln!(
            out,
            "    WARNING: this cluster runs WITHOUT TLS (tls.plaintext): it is unencrypted and anyone on the network can act as a node or an administrator"
        );
    }
    if status.active_node == 0 {
        let _ = writeln!(
            out,
            "    Active node: none (the answering node does not serve), term {}",
            status.term
        );
    } else {
        let _ = writeln!(
            out,
            "    Active node: {} at {}, term {}, serving for {}",
            status.active_node,
            status.active_address,
            status.term,
            format_span_ms(status.serving_for_ms)
        );
    }
    let _ = writeln!(out, "    {}", cluster_time_text(status));
    if status.last_activation_ms == 0 {
        let _ = writeln!(out, "    Last failover: none");
    } else {
        let _ = writeln!(
            out,
            "    Last failover: {} ({} activation{})",
            format_time_ms(status.last_activation_ms),
            status.activations,
            if status.activations == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(out, "\nNodes:");
    for node in &status.nodes {
        let reach = nodes.iter().find(|r| r.id == Some(node.id));
        let info = reach.and_then(|r| r.reach.info());
        let _ = writeln!(
            out,
            "    node {}  {}  {}{}  {}{}{}{}",
            node.id,
            node.address,
            node.role,
            membership_text(node),
            cert_text(info, now_unix),
            clock_text(status, node),
            host_text(node),
            ca_text(status, info)
        );
        if let Some(reach) = reach {
            let _ = writeln!(out, "        {}", reach.reach.text());
        }
    }
    write_other_addresses(&mut out, nodes);
    let _ = writeln!(out, "\nFeature usage info:");
    let mut grants: BTreeMap<(&str, &str), Vec<&pb::GrantStatus>> = BTreeMap::new();
    for grant in &status.grants {
        grants
            .entry((grant.vendor.as_str(), grant.feature.as_str()))
            .or_default()
            .push(grant);
    }
    for feature in &status.features {
        let _ = writeln!(
            out,
            "\nUsers of {}:  (Total of {} license{} issued;  Total of {} license{} in use)",
            feature.feature,
            feature.unexpired,
            if feature.unexpired == 1 { "" } else { "s" },
            feature.in_use,
            if feature.in_use == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "  (vendor {}, version {}: {})",
            feature.vendor,
            feature.version,
            seats_by_expiry(feature)
        );
        for line in status
            .lines
            .iter()
            .filter(|l| l.vendor == feature.vendor && l.feature == feature.feature)
        {
            let _ = writeln!(
                out,
                "    {}:{} {} {} {} seats, expiry {}: {}, {}",
                line.license,
                line.line,
                line.keyword,
                line.version,
                line.seats,
                line.expiry,
                if line.counts { "counts" } else { &line.reason },
                binding_text(&status.cluster_name, line)
            );
        }
        write_grants(
            &mut out,
            grants
                .remove(&(feature.vendor.as_str(), feature.feature.as_str()))
                .unwrap_or_default(),
        );
    }
    // Grants of a feature no imported license names any more.
    for ((_, feature), held) in grants {
        let in_use: u32 = held.iter().map(|g| g.count).sum();
        let _ = writeln!(
            out,
            "\nUsers of {feature}:  (Total of 0 licenses issued;  Total of {in_use} license{} in use)",
            if in_use == 1 { "" } else { "s" }
        );
        write_grants(&mut out, held);
    }
    if status.trusted_keys.is_empty() && status.trusted_ever {
        let _ = writeln!(
            out,
            "\nTrusted vendor keys: none. Every key was untrusted: imports are refused until an administrator runs raftlm license trust (no node's vendor_keys are trusted again)."
        );
    }
    if !status.trusted_keys.is_empty() {
        let _ = writeln!(out, "\nTrusted vendor keys:");
        for key in &status.trusted_keys {
            let _ = writeln!(
                out,
                "    {}  vendor {}  trusted by {} on {}",
                key.key_id,
                key.vendor,
                key.author,
                format_time_ms(key.since_ms)
            );
        }
    }
    if !status.admin_actions.is_empty() {
        let _ = writeln!(out, "\nRecent administrator actions:");
        for action in &status.admin_actions {
            let _ = writeln!(
                out,
                "    {}  {}  {}: {}",
                format_time_ms(action.at_ms),
                action.author,
                action.action,
                action.result
            );
        }
    }
    printable(&out)
}

/// A feature's seats by expiry, `25 until 31-dec-2027, 5 permanent, 10
/// expired on 31-dec-2025`; from the latest expiry alone for a cluster that
/// does not report them.
pub fn seats_by_expiry(feature: &pb::FeatureStatus) -> String {
    if feature.by_expiry.is_empty() {
        return format!("{} seats, expiry {}", feature.licensed, feature.expiry);
    }
    feature
        .by_expiry
        .iter()
        .map(|e| {
            let seats = match (e.expiry.as_str(), e.expired) {
                ("permanent", _) => format!("{} permanent", e.seats),
                (date, false) => format!("{} until {date}", e.seats),
                (date, true) => return format!("{} expired on {date}", e.seats),
            };
            if e.hosts_unlisted {
                format!("{seats} (hosts not listed: count 0)")
            } else {
                seats
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_grants(out: &mut String, mut grants: Vec<&pb::GrantStatus>) {
    if grants.is_empty() {
        return;
    }
    grants.sort_by_key(|g| (g.since_ms, g.token.map(|t| (t.term, t.index, t.slot))));
    let _ = writeln!(out);
    for grant in grants {
        let _ = write!(
            out,
            "    {} {} (session {}) (grant {}), start {}",
            grant.user,
            grant.host,
            grant.session_handle,
            token_text(grant.token.as_ref()),
            format_time_ms(grant.since_ms)
        );
        if grant.count > 1 {
            let _ = write!(out, ", {} licenses", grant.count);
        }
        let _ = writeln!(out);
    }
}

/// The addresses asked that no configured node has (the access point, or
/// every address while no node answered), each with how it answered.
fn write_other_addresses(out: &mut String, nodes: &[NodeReach]) {
    for other in nodes.iter().filter(|r| r.id.is_none()) {
        let _ = writeln!(out, "    address {}", other.address);
        let _ = writeln!(out, "        {}", other.reach.text());
    }
}

/// The text form when no node is active: the summary (`no quorum: 1 of 3
/// nodes reachable`) and each node's own report, or how it failed.
pub fn outage_to_text(nodes: &[NodeReach], summary: &str, now_unix: i64) -> String {
    let mut out = String::new();
    let cluster = nodes
        .iter()
        .find_map(|r| r.reach.info())
        .map_or("unknown (no node answered)", |i| i.cluster_name.as_str());
    let configured = nodes.iter().filter(|r| r.id.is_some()).count();
    let _ = write!(out, "License server status: {cluster}");
    if configured > 0 {
        let _ = write!(out, " (cluster of {configured} nodes)");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "    Active node: none: {summary}");
    let _ = writeln!(
        out,
        "    Below: each node's own view (not a linearizable read); seats and grants need an active node"
    );
    let _ = writeln!(out, "\nNodes:");
    for node in nodes {
        let Some(id) = node.id else { continue };
        let info = node.reach.info();
        let role = info
            .map(|i| i.role.as_str())
            .filter(|r| !r.is_empty())
            .unwrap_or("-");
        let _ = writeln!(
            out,
            "    node {id}  {}  {role}  {}",
            node.address,
            cert_text(info, now_unix)
        );
        let _ = writeln!(out, "        {}", node.reach.text());
    }
    write_other_addresses(&mut out, nodes);
    printable(&out)
}

/// `text` with every control character but the line break written as an
/// escape (`\u{1b}`): whatever a reply holds (a user name, a host name, an
/// author), it cannot move the cursor or recolour an administrator's
/// terminal. Nodes refuse such names already; this also covers a reply from
/// a node that did not.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The cluster's time: the answering node's clock (what it stamps on the
/// entries it proposes) and state time (the newest stamp applied, on which
/// expiry is judged), with a warning when state time is ahead of the clock.
fn cluster_time_text(status: &pb::StatusReply) -> String {
    if status.clock_ms == 0 {
        return "Cluster time: unknown (the answering node did not report its clock)".into();
    }
    let mut text = format!(
        "Cluster time: {} (the answering node's clock; nodes' offsets below), state time {}",
        format_time_ms(status.clock_ms),
        format_time_ms(status.state_time_ms)
    );
    if status.state_time_ms > status.clock_ms.saturating_add(status.clock_skew_max_ms) {
        let _ = write!(
            text,
            "\n    WARNING: state time is {} ahead of the clock: new grants are stamped with state time until the clocks pass it",
            format_span_ms(status.state_time_ms - status.clock_ms)
        );
    }
    text
}

/// `bound to cluster name LICSRV` or `bound to cluster LICSRV sha256:…`,
/// then, for a line bound to host ids, `and hosts host:…, host:… (2 of 3
/// voters report one)`.
fn binding_text(cluster_name: &str, line: &pb::LicenseLine) -> String {
    let cluster = if line.cluster_id.is_empty() {
        format!("bound to cluster name {cluster_name}")
    } else {
        format!("bound to cluster {cluster_name} {}", line.cluster_id)
    };
    if line.host_ids.is_empty() {
        return cluster;
    }
    format!(
        "{cluster} and hosts {} ({} of {} voters report one)",
        line.host_ids.join(", "),
        line.hosts_listed,
        line.voters
    )
}

/// The host id column: the id the cluster records for the node.
fn host_text(node: &pb::NodeStatus) -> String {
    if node.host_id.is_empty() {
        "  host id: none recorded".into()
    } else {
        format!("  host id: {}", node.host_id)
    }
}

/// A note when a node's CA is not the one the cluster's identity was
/// recorded from (its CA was re-issued): files stay bound to the recorded one.
fn ca_text(status: &pb::StatusReply, info: Option<&pb::NodeInfoReply>) -> String {
    match info {
        Some(info)
            if !info.cluster_id.is_empty()
                && !status.cluster_id.is_empty()
                && info.cluster_id != status.cluster_id =>
        {
            format!(
                "  CA {} (not the recorded cluster identity)",
                info.cluster_id
            )
        }
        _ => String::new(),
    }
}

/// The clock column: how far a node's wall clock is from the active node's.
fn clock_text(status: &pb::StatusReply, node: &pb::NodeStatus) -> String {
    if node.id == status.active_node {
        return "  clock: reference".into();
    }
    if !node.clock_known {
        return "  clock: no recent reading".into();
    }
    let offset = crate::clock::offset_text(node.clock_offset_ms);
    if node.clock_off {
        format!(
            "  clock: {offset} OFF (beyond the {} bound: this node does not serve)",
            crate::clock::offset_text(status.clock_skew_max_ms as i64).trim_start_matches('+')
        )
    } else {
        format!("  clock: {offset}")
    }
}

/// A learner, and how far a member's log is behind the active node's.
fn membership_text(node: &pb::NodeStatus) -> String {
    let mut text = String::new();
    if node.learner {
        text.push_str(" (learner)");
    }
    if node.lag > 0 {
        text.push_str(&format!(" (log {} behind)", node.lag));
    }
    if let Some(said) = crate::cli::cluster::release(
        &node.version,
        node.reads_formats_min,
        node.reads_formats_max,
    ) {
        text.push_str(&format!(" ({said})"));
    }
    text
}

/// The `--json` form: one object, on one line.
pub fn to_json(status: &pb::StatusReply, nodes: &[NodeReach], now_unix: i64) -> String {
    let last = (status.last_activation_ms != 0).then(|| format_time_ms(status.last_activation_ms));
    let node_list: Vec<serde_json::Value> = status
        .nodes
        .iter()
        .map(|n| {
            let reach = nodes.iter().find(|r| r.id == Some(n.id));
            let mut value = node_json(n.id, &n.address, reach.map(|r| &r.reach), now_unix);
            value["role"] = n.role.clone().into();
            value["clock_offset_ms"] = n.clock_known.then_some(n.clock_offset_ms).into();
            value["clock_off"] = n.clock_off.into();
            value["host_id"] = (!n.host_id.is_empty()).then(|| n.host_id.clone()).into();
            value["voter"] = (!n.learner).into();
            value["matched_index"] = n.matched_index.into();
            value["lag"] = n.lag.into();
            value["version"] = (!n.version.is_empty()).then(|| n.version.clone()).into();
            value["reads_formats"] = (n.reads_formats_max > 0)
                .then(|| serde_json::json!([n.reads_formats_min, n.reads_formats_max]))
                .into();
            value
        })
        .collect();
    let features: Vec<serde_json::Value> = status
        .features
        .iter()
        .map(|f| {
            serde_json::json!({
                "feature": f.feature,
                "vendor": f.vendor,
                "version": f.version,
                "licensed": f.licensed,
                "unexpired": f.unexpired,
                "in_use": f.in_use,
                "expiry": f.expiry,
                "by_expiry": f
                    .by_expiry
                    .iter()
                    .map(|e| serde_json::json!({
                        "expiry": e.expiry,
                        "seats": e.seats,
                        "expired": e.expired,
                    }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let grants: Vec<serde_json::Value> = status
        .grants
        .iter()
        .map(|g| {
            serde_json::json!({
                "token": token_text(g.token.as_ref()),
                "vendor": g.vendor,
                "feature": g.feature,
                "version": g.version,
                "count": g.count,
                "session": g.session_handle.to_string(),
                "user": g.user,
                "host": g.host,
                "since_ms": g.since_ms,
                "since": format_time_ms(g.since_ms),
            })
        })
        .collect();
    let actions: Vec<serde_json::Value> = status
        .admin_actions
        .iter()
        .map(|a| {
            serde_json::json!({
                "at_ms": a.at_ms,
                "at": format_time_ms(a.at_ms),
                "author": a.author,
                "action": a.action,
                "result": a.result,
            })
        })
        .collect();
    let mut value = serde_json::json!({
        "cluster": status.cluster_name,
        "cluster_id": (!status.cluster_id.is_empty()).then(|| status.cluster_id.clone()),
        "term": status.term,
        "plaintext": status.plaintext,
        "write_format": status.write_format,
        "active_node": status.active_node,
        "active_address": status.active_address,
        "last_failover_ms": status.last_activation_ms,
        "last_failover": last,
        "activations": status.activations,
        "serving_for_ms": status.serving_for_ms,
        "applied_index": status.applied_index,
        "nodes": node_list,
        "other_addresses": other_addresses_json(nodes, now_unix),
        "configured": status.nodes.len(),
        "reachable": status
            .nodes
            .iter()
            .filter(|n| nodes.iter().any(|r| r.id == Some(n.id) && r.reach.info().is_some()))
            .count(),
        "clock_skew_max_ms": status.clock_skew_max_ms,
        "clock_ms": status.clock_ms,
        "clock": format_time_ms(status.clock_ms),
        "state_time_ms": status.state_time_ms,
        "state_time": format_time_ms(status.state_time_ms),
        "trusted_ever": status.trusted_ever,
        "features": features,
        "grants": grants,
        "lines": status
            .lines
            .iter()
            .map(|l| serde_json::json!({
                "license": l.license,
                "line": l.line,
                "keyword": l.keyword,
                "vendor": l.vendor,
                "feature": l.feature,
                "version": l.version,
                "seats": l.seats,
                "expiry": l.expiry,
                "counts": l.counts,
                "reason": l.reason,
                "cluster_id": (!l.cluster_id.is_empty()).then(|| l.cluster_id.clone()),
                "host_ids": l.host_ids,
                "hosts_listed": (!l.host_ids.is_empty()).then_some(l.hosts_listed),
                "voters": (!l.host_ids.is_empty()).then_some(l.voters),
                "binding": binding_text(&status.cluster_name, l),
            }))
            .collect::<Vec<_>>(),
        "admin_actions": actions,
        "trusted_keys": status
            .trusted_keys
            .iter()
            .map(|k| serde_json::json!({
                "key_id": k.key_id,
                "vendor": k.vendor,
                "author": k.author,
                "since_ms": k.since_ms,
            }))
            .collect::<Vec<_>>(),
    });
    // Outside the macro: one object with this many keys is past its
    // recursion limit.
    value["pending_voters"] = (!status.voters_new.is_empty())
        .then(|| serde_json::json!({ "from": status.voters_old, "to": status.voters_new }))
        .into();
    value.to_string()
}

/// One node in the JSON form: what its own report says, or how it failed
/// (`reachability`: reachable, refused, unreachable, unresolvable, failed;
/// `reachability_detail`: the reason or the node's own view).
fn node_json(id: u64, address: &str, reach: Option<&Reach>, now_unix: i64) -> serde_json::Value {
    let info = reach.and_then(Reach::info);
    serde_json::json!({
        "id": id,
        "address": address,
        "reachability": reach.map(Reach::kind),
        "reachability_detail": reach.map(Reach::detail),
        "own_role": info.map(|i| i.role.clone()),
        "term": info.map(|i| i.term),
        "applied_index": info.map(|i| i.applied_index),
        "committed_index": info.map(|i| i.committed_index),
        "version": info.map(|i| i.version.clone()),
        "leader": info.map(|i| i.leader),
        "tls": info.map(|i| i.tls),
        "cert_subject": info.filter(|i| i.tls).map(|i| i.cert_subject.clone()),
        "cert_not_after_unix": info.filter(|i| i.tls).map(|i| i.cert_not_after_unix),
        "cert_days_left": info
            .filter(|i| i.tls)
            .map(|i| (i.cert_not_after_unix - now_unix).div_euclid(86_400)),
        "ca_cluster_id": info.filter(|i| !i.cluster_id.is_empty()).map(|i| i.cluster_id.clone()),
    })
}

/// The addresses asked that no configured node has, in the JSON form
/// (`other_addresses`, each with `id` null).
fn other_addresses_json(nodes: &[NodeReach], now_unix: i64) -> Vec<serde_json::Value> {
    nodes
        .iter()
        .filter(|r| r.id.is_none())
        .map(|r| {
            let mut value = node_json(0, &r.address, Some(&r.reach), now_unix);
            value["id"] = serde_json::Value::Null;
            value
        })
        .collect()
}

/// The `--json` form when no node is active: `active_node` 0, the summary,
/// the error, and each node's own report or how it failed.
pub fn outage_json(nodes: &[NodeReach], summary: &str, error: &str, now_unix: i64) -> String {
    let cluster = nodes
        .iter()
        .find_map(|r| r.reach.info())
        .map(|i| i.cluster_name.clone());
    let node_list: Vec<serde_json::Value> = nodes
        .iter()
        .filter_map(|r| {
            let id = r.id?;
            let mut value = node_json(id, &r.address, Some(&r.reach), now_unix);
            value["role"] = r
                .reach
                .info()
                .map(|i| i.role.clone())
                .filter(|role| !role.is_empty())
                .into();
            Some(value)
        })
        .collect();
    serde_json::json!({
        "cluster": cluster,
        "active_node": 0,
        "summary": summary,
        "error": error,
        "configured": nodes.iter().filter(|r| r.id.is_some()).count(),
        "reachable": nodes
            .iter()
            .filter(|r| r.id.is_some() && r.reach.info().is_some())
            .count(),
        "nodes": node_list,
        "other_addresses": other_addresses_json(nodes, now_unix),
    })
    .to_string()
}

/// A span of time for people: `850 ms`, `42 s`, `3 min 12 s`, `5 h 7 min`, `2 d 3 h`.
fn format_span_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..120 => format!("{s} s"),
        120..7200 => format!("{} min {} s", s / 60, s % 60),
        7200..172_800 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // How long the active node has served, as people read it.
    #[test]
    fn spans_read_well() {
        assert_eq!(format_span_ms(850), "850 ms");
        assert_eq!(format_span_ms(42_300), "42 s");
        assert_eq!(format_span_ms(192_000), "3 min 12 s");
        assert_eq!(format_span_ms(18_420_000), "5 h 7 min");
        assert_eq!(format_span_ms(183_600_000), "2 d 3 h");
    }

    const ID: &str = "sha256:4fa5d61aaaf51880cec6df16755bc09cccf3db0d69ce96ed4ddd7e206576a0f7";

    fn sample() -> pb::StatusReply {
        pb::StatusReply {
            term: 5,
            cluster_name: "LICSRV".into(),
            write_format: 7,
            voters_old: Vec::new(),
            voters_new: Vec::new(),
            grants_next: None,
            grants_total: 0,
            active_node: 2,
            active_address: "127.0.0.1:27002".into(),
            nodes: vec![
                pb::NodeStatus {
                    id: 1,
                    address: "127.0.0.1:27001".into(),
                    role: "standby".into(),
                    clock_offset_ms: 312_400,
                    clock_known: true,
                    clock_off: true,
                    ..Default::default()
                },
                pb::NodeStatus {
                    id: 2,
                    address: "127.0.0.1:27002".into(),
                    role: "active".into(),
                    ..Default::default()
                },
            ],
            features: vec![pb::FeatureStatus {
                feature: "cad".into(),
                vendor: "acme".into(),
                version: "2.0".into(),
                licensed: 25,
                unexpired: 25,
                in_use: 2,
                expiry: "permanent".into(),
                by_expiry: vec![
                    pb::ExpirySeats {
                        expiry: "31-dec-2027".into(),
                        seats: 20,
                        expired: false,
                        hosts_unlisted: false,
                    },
                    pb::ExpirySeats {
                        expiry: "permanent".into(),
                        seats: 5,
                        expired: false,
                        hosts_unlisted: false,
                    },
                    pb::ExpirySeats {
                        expiry: "31-dec-2025".into(),
                        seats: 10,
                        expired: true,
                        hosts_unlisted: false,
                    },
                ],
            }],
            grants: vec![pb::GrantStatus {
                token: Some(pb::GrantToken {
                    term: 3,
                    index: 17,
                    slot: 0,
                }),
                feature: "cad".into(),
                count: 2,
                session_handle: 0xdead_beef,
                vendor: "acme".into(),
                version: String::new(),
                user: "ada \"the\" admin".into(),
                host: "ws1".into(),
                since_ms: 1_795_341_600_000,
            }],
            last_activation_ms: 1_795_341_600_000,
            activations: 3,
            applied_index: 42,
            serving_for_ms: 192_000,
            admin_actions: vec![pb::AdminAction {
                at_ms: 1_795_341_600_000,
                author: "CN=alice".into(),
                action: "import license acme.lic".into(),
                result: "imported 3 lines (0 duplicates)".into(),
            }],
            plaintext: false,
            lines: vec![
                pb::LicenseLine {
                    license: "new.lic".into(),
                    line: 3,
                    keyword: "FEATURE".into(),
                    vendor: "acme".into(),
                    feature: "cad".into(),
                    version: "2.0".into(),
                    seats: 25,
                    expiry: "permanent".into(),
                    counts: true,
                    reason: String::new(),
                    cluster_id: ID.into(),
                    ..Default::default()
                },
                pb::LicenseLine {
                    license: "old.lic".into(),
                    line: 3,
                    keyword: "FEATURE".into(),
                    vendor: "acme".into(),
                    feature: "cad".into(),
                    version: "2.0".into(),
                    seats: 40,
                    expiry: "31-dec-2026".into(),
                    counts: false,
                    reason: "superseded by the newer issuance new.lic:3".into(),
                    cluster_id: String::new(),
                    ..Default::default()
                },
            ],
            trusted_keys: vec![pb::TrustedKey {
                key_id: "0011223344556677".into(),
                vendor: "acme".into(),
                author: "node 1 (vendor_keys bootstrap)".into(),
                since_ms: 1_795_341_600_000,
            }],
            clock_skew_max_ms: 120_000,
            state_time_ms: 1_795_341_590_000,
            clock_ms: 1_795_341_600_000,
            trusted_ever: true,
            cluster_id: ID.into(),
        }
    }

    fn info(id: u64, days: i64) -> pb::NodeInfoReply {
        pb::NodeInfoReply {
            id,
            cluster_name: "LICSRV".into(),
            tls: true,
            cert_subject: format!("CN=node-{id}.LICSRV"),
            cert_not_after_unix: NOW + days * 86_400 + 60,
            now_ms: 0,
            version: "0".into(),
            term: 5,
            role: if id == 2 { "active" } else { "standby" }.into(),
            leader: 2,
            applied_index: 42,
            committed_index: 42,
            nodes: vec![
                pb::ConfiguredNode {
                    id: 1,
                    address: "127.0.0.1:27001".into(),
                },
                pb::ConfiguredNode {
                    id: 2,
                    address: "127.0.0.1:27002".into(),
                },
            ],
            ..Default::default()
        }
    }

    fn reports() -> Vec<NodeReach> {
        [(1, 400), (2, 12)]
            .into_iter()
            .map(|(id, days)| NodeReach {
                id: Some(id),
                address: format!("127.0.0.1:2700{id}"),
                reach: Reach::Answered(Box::new(info(id, days))),
            })
            .collect()
    }

    const NOW: i64 = 1_795_341_600;

    // The text form has lmstat's "Users of" line with totals and one line per grant.
    #[test]
    fn text_reads_like_lmstat() {
        let text = to_text(&sample(), &reports(), NOW);
        assert!(
            text.contains(
                "Users of cad:  (Total of 25 licenses issued;  Total of 2 licenses in use)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    ada \"the\" admin ws1 (session 3735928559) (grant 3.17.0), start 22-nov-2026 10:00:00 UTC, 2 licenses"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "clock: +5m12.4s OFF (beyond the 2m0.0s bound: this node does not serve)"
            ),
            "{text}"
        );
        assert!(text.contains("active  "), "{text}");
        assert!(text.contains("clock: reference"), "{text}");
        assert!(
            text.contains("Active node: 2 at 127.0.0.1:27002, term 5, serving for 3 min 12 s"),
            "{text}"
        );
        assert!(
            text.contains("Last failover: 22-nov-2026 10:00:00 UTC (3 activations)"),
            "{text}"
        );
    }

    // The cluster's time is shown with state time; state time ahead of the
    // clock is called out; a cluster whose keys were all untrusted says so.
    #[test]
    fn text_shows_the_clusters_time_and_an_empty_trust_set() {
        let text = to_text(&sample(), &reports(), NOW);
        assert!(
            text.contains("Cluster time: 22-nov-2026 10:00:00 UTC (the answering node's clock; nodes' offsets below), state time 22-nov-2026 09:59:50 UTC"),
            "{text}"
        );
        assert!(!text.contains("state time is"), "{text}");
        assert!(!text.contains("Trusted vendor keys: none"), "{text}");
        let mut ahead = sample();
        ahead.state_time_ms = ahead.clock_ms + 86_400_000;
        ahead.trusted_keys.clear();
        let text = to_text(&ahead, &reports(), NOW);
        assert!(
            text.contains("WARNING: state time is 24 h 0 min ahead of the clock"),
            "{text}"
        );
        assert!(
            text.contains("Trusted vendor keys: none. Every key was untrusted"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&to_json(&ahead, &reports(), NOW)).unwrap();
        assert_eq!(json["state_time"], "23-nov-2026 10:00:00 UTC");
        assert_eq!(json["clock_ms"], 1_795_341_600_000u64);
        assert_eq!(json["trusted_ever"], true);
    }

    // Control characters in anything a reply holds are escaped in the text
    // form (the JSON form escapes them as JSON does).
    #[test]
    fn text_escapes_control_characters() {
        let mut status = sample();
        status.grants[0].user = "ada\u{1b}[2J\u{9b}".into();
        let text = to_text(&status, &reports(), NOW);
        assert!(text.contains("ada\\u{1b}[2J\\u{9b} "), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    }

    // Certificate expiry is shown per node, with a warning within 30 days.
    #[test]
    fn text_shows_certificate_expiry_and_warns() {
        let text = to_text(&sample(), &reports(), NOW);
        assert!(
            text.contains("node 1  127.0.0.1:27001  standby  certificate expires "),
            "{text}"
        );
        assert!(text.contains("(400 days)"), "{text}");
        assert!(text.contains("WARNING: in 12 days, renew it"), "{text}");
        assert!(!text.contains("WITHOUT TLS"), "{text}");
        let mut plain = sample();
        plain.plaintext = true;
        assert!(to_text(&plain, &[], NOW).contains("WITHOUT TLS"));
        assert!(
            text.contains("CN=alice  import license acme.lic: imported 3 lines"),
            "{text}"
        );
    }

    // Each feature gives its seats per expiry date, expired ones last.
    #[test]
    fn text_shows_seats_per_expiry() {
        let text = to_text(&sample(), &reports(), NOW);
        assert!(
            text.contains(
                "  (vendor acme, version 2.0: 20 until 31-dec-2027, 5 permanent, 10 expired on 31-dec-2025)"
            ),
            "{text}"
        );
        let json = to_json(&sample(), &reports(), NOW);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["features"][0]["by_expiry"][0]["expiry"],
            "31-dec-2027"
        );
        assert_eq!(value["features"][0]["by_expiry"][0]["seats"], 20);
        assert_eq!(value["features"][0]["by_expiry"][2]["expired"], true);
    }

    // Each feature lists its lines: which count, which are superseded and by what.
    #[test]
    fn text_shows_which_lines_count() {
        let text = to_text(&sample(), &reports(), NOW);
        assert!(
            text.contains("    new.lic:3 FEATURE 2.0 25 seats, expiry permanent: counts"),
            "{text}"
        );
        assert!(
            text.contains("old.lic:3 FEATURE 2.0 40 seats, expiry 31-dec-2026: superseded by the newer issuance new.lic:3"),
            "{text}"
        );
    }

    // The cluster identity is shown (text and JSON), with each line's binding,
    // and a node whose CA is not the recorded identity is pointed out.
    #[test]
    fn status_shows_the_identity_and_each_lines_binding() {
        let text = to_text(&sample(), &reports(), NOW);
        assert!(
            text.contains(&format!(
                "    Cluster identity: {ID} (license files bound to it: SERVER LICSRV ID={ID} PORT)"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "    new.lic:3 FEATURE 2.0 25 seats, expiry permanent: counts, bound to cluster LICSRV {ID}"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "superseded by the newer issuance new.lic:3, bound to cluster name LICSRV"
            ),
            "{text}"
        );
        assert!(
            !text.contains("not the recorded cluster identity"),
            "{text}"
        );
        let mut nodes = reports();
        if let Some(Reach::Answered(info)) = nodes.first_mut().map(|r| &mut r.reach) {
            info.cluster_id = "sha256:00".into();
        }
        assert!(
            to_text(&sample(), &nodes, NOW)
                .contains("  CA sha256:00 (not the recorded cluster identity)")
        );
        let mut none = sample();
        none.cluster_id.clear();
        assert!(to_text(&none, &[], NOW).contains("Cluster identity: none recorded"));

        let value: serde_json::Value =
            serde_json::from_str(&to_json(&sample(), &reports(), NOW)).unwrap();
        assert_eq!(value["cluster_id"], ID);
        assert_eq!(value["lines"][0]["cluster_id"], ID);
        assert_eq!(
            value["lines"][0]["binding"],
            format!("bound to cluster LICSRV {ID}")
        );
        assert_eq!(value["lines"][1]["cluster_id"], serde_json::Value::Null);
        assert_eq!(value["lines"][1]["binding"], "bound to cluster name LICSRV");
        let value: serde_json::Value = serde_json::from_str(&to_json(&none, &[], NOW)).unwrap();
        assert_eq!(value["cluster_id"], serde_json::Value::Null);
    }

    // A line bound to host ids says which and how many voters report one;
    // each node shows the host id the cluster records for it.
    #[test]
    fn status_shows_host_bindings_and_each_nodes_host_id() {
        let mut status = sample();
        let host = |n: u8| format!("host:{}", format!("{n:02x}").repeat(16));
        status.nodes[0].host_id = host(1);
        status.lines[1].host_ids = vec![host(1), host(2), host(3)];
        status.lines[1].hosts_listed = 1;
        status.lines[1].voters = 3;
        status.features[0].by_expiry[0].hosts_unlisted = true;
        let text = to_text(&status, &[], NOW);
        assert!(text.contains(&format!("host id: {}", host(1))), "{text}");
        assert!(text.contains("host id: none recorded"), "{text}");
        assert!(
            text.contains(&format!(
                "bound to cluster name LICSRV and hosts {}, {}, {} (1 of 3 voters report one)",
                host(1),
                host(2),
                host(3)
            )),
            "{text}"
        );
        assert!(
            text.contains("20 until 31-dec-2027 (hosts not listed: count 0)"),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&to_json(&status, &[], NOW)).unwrap();
        assert_eq!(value["nodes"][0]["host_id"], host(1));
        assert_eq!(value["nodes"][1]["host_id"], serde_json::Value::Null);
        assert_eq!(value["lines"][1]["hosts_listed"], 1);
        assert_eq!(value["lines"][1]["voters"], 3);
        assert_eq!(value["lines"][0]["host_ids"], serde_json::json!([]));
    }

    // Each node's own view is shown under it (text) and in its object
    // (JSON); without an active node the summary heads the nodes' reports.
    #[test]
    fn nodes_own_views_and_the_outage_form() {
        let mut nodes = reports();
        nodes.push(NodeReach {
            id: None,
            address: "127.0.0.100:27000".into(),
            reach: Reach::Refused("Connection refused (os error 111)".into()),
        });
        let text = to_text(&sample(), &nodes, NOW);
        assert!(
            text.contains(
                "        reachable: standby, term 5, applied 42, committed 42, version 0, leader node 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    address 127.0.0.100:27000\n        refused: Connection refused (os error 111)\n"
            ),
            "{text}"
        );
        let value: serde_json::Value =
            serde_json::from_str(&to_json(&sample(), &nodes, NOW)).unwrap();
        assert_eq!(value["nodes"][0]["reachability"], "reachable");
        assert_eq!(value["nodes"][0]["own_role"], "standby");
        assert_eq!(value["nodes"][0]["committed_index"], 42);
        assert_eq!(value["other_addresses"][0]["reachability"], "refused");
        assert_eq!(value["reachable"], 2);

        let down = vec![
            nodes[0].clone(),
            NodeReach {
                id: Some(2),
                address: "127.0.0.1:27002".into(),
                reach: Reach::Unreachable("no answer within 3.0 s".into()),
            },
        ];
        let summary = crate::cli::reach::outage_text(&down);
        assert_eq!(summary, "no quorum: 1 of 2 nodes reachable");
        let text = outage_to_text(&down, &summary, NOW);
        assert!(
            text.starts_with(
                "License server status: LICSRV (cluster of 2 nodes)\n    Active node: none: no quorum: 1 of 2 nodes reachable\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    node 2  127.0.0.1:27002  -  certificate: node did not answer\n        unreachable: no answer within 3.0 s\n"
            ),
            "{text}"
        );
        let value: serde_json::Value =
            serde_json::from_str(&outage_json(&down, &summary, "no node", NOW)).unwrap();
        assert_eq!(value["summary"], summary);
        assert_eq!(value["cluster"], "LICSRV");
        assert_eq!(value["nodes"][1]["reachability"], "unreachable");
        assert_eq!(value["nodes"][0]["role"], "standby");
        assert_eq!(value["nodes"][1]["role"], serde_json::Value::Null);
    }

    // `--timeout`: its default is the named one; zero and huge are refused.
    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("3s"), Ok(STATUS_TIMEOUT_DEFAULT));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("1d").is_err());
    }

    // The JSON form is valid JSON with the grants, admin actions and certificate days.
    #[test]
    fn json_is_valid_and_complete() {
        let json = to_json(&sample(), &reports(), NOW);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["cluster"], "LICSRV");
        assert_eq!(value["grants"][0]["user"], "ada \"the\" admin");
        assert_eq!(value["grants"][0]["token"], "3.17.0");
        assert_eq!(value["grants"][0]["session"], "3735928559");
        assert_eq!(value["admin_actions"][0]["author"], "CN=alice");
        assert_eq!(value["nodes"][1]["cert_days_left"], 12);
        assert_eq!(value["plaintext"], false);
    }

    // A learner and a lagging member show in the text and the JSON.
    #[test]
    fn learners_and_lag_show() {
        let mut status = sample();
        status.nodes[1].learner = true;
        status.nodes[1].matched_index = 90;
        status.nodes[1].lag = 10;
        let value: serde_json::Value =
            serde_json::from_str(&to_json(&status, &reports(), NOW)).unwrap();
        assert_eq!(value["nodes"][0]["voter"], true);
        assert_eq!(value["nodes"][1]["voter"], false);
        assert_eq!(value["nodes"][1]["matched_index"], 90);
        assert_eq!(value["nodes"][1]["lag"], 10);
        assert_eq!(
            membership_text(&status.nodes[1]),
            " (learner) (log 10 behind)"
        );
        assert_eq!(membership_text(&status.nodes[0]), "");
        assert_eq!(value["pending_voters"], serde_json::Value::Null);
        assert_eq!(value["write_format"], 7);
        // A pending change of the voters, and what each node reads.
        status.voters_old = vec![1, 2, 3];
        status.voters_new = vec![1, 2, 4];
        status.nodes[1].version = "0.2.0".into();
        status.nodes[1].reads_formats_min = 6;
        status.nodes[1].reads_formats_max = 7;
        let value: serde_json::Value =
            serde_json::from_str(&to_json(&status, &reports(), NOW)).unwrap();
        assert_eq!(value["pending_voters"]["to"], serde_json::json!([1, 2, 4]));
        assert_eq!(
            value["nodes"][1]["reads_formats"],
            serde_json::json!([6, 7])
        );
        let text = to_text(&status, &reports(), NOW);
        assert!(
            text.contains("Membership change pending: the voters change from 1, 2, 3 to 1, 2, 4"),
            "{text}"
        );
        assert!(
            text.contains("Record format: the cluster writes format 7"),
            "{text}"
        );
        assert!(
            membership_text(&status.nodes[1]).ends_with("(raftlm 0.2.0 reads formats 6–7)"),
            "{}",
            membership_text(&status.nodes[1])
        );
    }
}
