//! The hostile client (`raftlm-chaos --hostile`): next to the honest
//! sessions, a client that sends what no honest client sends. Its requests
//! come from its own source address ([`SOURCE`], 127.0.0.3):
//!
//! - `junk` — check-outs with a session secret of the wrong length or none;
//! - `long-name` — a feature name over the 255-byte limit;
//! - `oversized` — a 96 KiB request, over the client plane's message limit;
//! - `replay` — one request id sent again and again, and then once more after
//!   40 newer requests of its session;
//! - `flood` — 200 throw-away sessions at once, each asking for a feature
//!   that does not exist or for more seats than are licensed;
//! - `forged-checkin` — a check-in, with its own session, of a grant an
//!   honest session holds (read from `Status`);
//! - `forged-renew` — a renewal of its own session quoting honest grants;
//! - `control-char` — a check-out with a control character (C0, DEL or C1)
//!   in its user, host, vendor, feature or version name: it must be refused
//!   `INVALID_ARGUMENT` with a message naming the field
//!   (`src/server/error.rs`, `check_text`);
//! - `unheld-checkin` — a check-in of a made-up grant token by a session the
//!   state does not hold (a fresh one, or one long-lived session that never
//!   holds anything). It must be answered "not released" without a log
//!   proposal (`src/server/license.rs`, `checkin`). A proposal would leave
//!   the request's answer in the state (`LicenseState::deduplicated` keeps
//!   the answers of unheld sessions' requests), so each answered one is
//!   followed by a `unheld-probe`: a check-out of more seats than are
//!   licensed with the *same* request id, which goes through the log. If the
//!   check-in's answer is in the state the probe gets it back (the node then
//!   says "unexpected outcome for a check-out"); otherwise it is denied.
//!
//! Two more run as tasks of their own, each from an address of its own so
//! that the server's per-address limits they meet are theirs alone:
//!
//! - `idle-socket` — from [`IDLE_SOURCE`] (127.0.0.77), [`IDLE_SOCKETS`] TCP
//!   connections spread over both listeners (client plane and peer plane) of
//!   every node, none of which ever sends a TLS ClientHello; each is
//!   reopened [`IDLE_REOPEN_DELAY`] after the node drops it. A node holds
//!   at most `HANDSHAKES_PER_ADDRESS_MAX` of them per listener (the rest are
//!   closed at once) and drops those after `HANDSHAKE_TIMEOUT`
//!   (`src/tls/acceptor.rs`). A node that sends a byte on one, or holds one
//!   longer than the spec's `idle_held_max`, is a violation;
//! - `digest` and `digest-admin` — from [`DIGEST_SOURCE`] (127.0.0.78),
//!   `NodeInfo` requests with `with_state_digest = true`: bursts of
//!   [`DIGEST_BURST`] every [`DIGEST_PERIOD`] without a certificate (must be
//!   refused `UNAUTHENTICATED`) or with a node's certificate, which is not an
//!   administrator's (must be refused `PERMISSION_DENIED`); and one every
//!   [`DIGEST_ADMIN_PERIOD`] with the administrator's certificate, which must
//!   be served a digest (`src/server/license.rs`, `node_info`).
//!
//! It never asks for a seat it could be granted, so the honest history stays
//! complete: any grant it is given, any honest grant its check-in frees, and
//! any other answer that should have been a refusal is a violation
//! (`hostile-requests-refused`); a freed honest grant is also caught by the
//! checker's no-lost-grant. Every request is counted by kind (sent, answered
//! as expected, unexpected, no verdict) and every answer by action and gRPC
//! code or deny reason, for the report.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftlm::license::secret::SessionSecret;
use raftlm::proto::v1 as pb;
use raftlm::proto::v1::license_client::LicenseClient;
use raftlm::tls::client::ClientTls;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::checker::{EXAMPLES_MAX, InvariantResult};
use crate::workload::Phase;

/// The hostile client's source address.
pub const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// The idle-socket flood's source address: one address, so the node's
/// per-address handshake limit is what stops it, and not the workload's
/// (127.0.0.1, a member's address) nor the other hostile clients'.
pub const IDLE_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));
/// The digest flood's source address (its own, for the same reason).
pub const DIGEST_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 78));
/// Sessions one flood opens.
pub const FLOOD_SESSIONS: usize = 200;
/// Idle sockets held open at once, spread evenly over the six listeners (a
/// client and a peer listener per node): 40 per listener, five times the
/// per-address handshake limit (`HANDSHAKES_PER_ADDRESS_MAX`, 8), so most
/// are refused at once — and few enough that a 2-core machine still runs
/// the cluster with the reopens.
pub const IDLE_SOCKETS: usize = 240;
/// How long an idle socket waits to be reopened after the node dropped it
/// (or refused the connection): bounds the flood to about
/// [`IDLE_SOCKETS`] connections a second, however fast a node drops them.
pub const IDLE_REOPEN_DELAY: Duration = Duration::from_secs(1);
/// Longest an idle socket's connect may take: a paused node's full accept
/// queue leaves it unanswered, and it is then tried again.
pub const IDLE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle socket dropped sooner than this after it connected was refused at
/// once (a limit); one dropped later was held, in a handshake, until its
/// timeout.
pub const IDLE_AT_ONCE: Duration = Duration::from_secs(1);
/// Slack on top of the handshake timeout and the longest pause before an
/// idle socket a node still holds is a violation: a loaded 2-core machine
/// may run the node's timers late.
pub const IDLE_HELD_SLACK: Duration = Duration::from_secs(10);
/// Digest requests without an administrator's certificate sent at once.
pub const DIGEST_BURST: usize = 8;
/// How often a burst of [`DIGEST_BURST`] is sent: 40 refused requests a
/// second, each refused before any work, so the flood costs the nodes little.
pub const DIGEST_PERIOD: Duration = Duration::from_millis(200);
/// How often the administrator asks one node for its digest: a digest costs
/// the node an encoding of its whole state and a node computes one at a time
/// (`DIGESTS_IN_FLIGHT_MAX`), so the administrator's are bounded too.
pub const DIGEST_ADMIN_PERIOD: Duration = Duration::from_secs(2);
/// Longest a digest request may take: the administrator's queue behind the
/// harness's own (one at a time on each node).
pub const DIGEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Seats the unheld-check-in probe asks for: more than any feature licenses.
pub const PROBE_SEATS: u32 = 100_000;
/// How long [`Hostile::finish`] waits for the client's tasks to stop by
/// themselves: a flood's answers or an administrator's digest may still be
/// on their way when the phase ends.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);
/// The invariant the hostile client reports.
pub const REFUSED: &str = "hostile-requests-refused";

/// What the hostile client needs.
#[derive(Debug, Clone)]
pub struct HostileSpec {
    /// The access point and the nodes' own addresses.
    pub targets: Vec<String>,
    /// The nodes' peer-plane addresses (the idle-socket flood's other targets).
    pub peer_targets: Vec<SocketAddr>,
    /// How it dials (TLS with the run's CA).
    pub tls: ClientTls,
    /// How it dials with a certificate that is not an administrator's (a node's).
    pub stranger_tls: ClientTls,
    /// How it dials with the administrator's certificate.
    pub admin_tls: ClientTls,
    /// Seeds its choices.
    pub seed: u64,
    /// Features the license grants (never asked for a grantable count).
    pub features: Vec<String>,
    /// A feature licensed for the whole run, which the unheld-check-in probe
    /// asks for more seats of than are licensed (`None`: no probe).
    pub steady_feature: Option<String>,
    /// Longest a node may hold an idle socket: its handshake timeout, the
    /// longest pause the nemesis makes, and [`IDLE_HELD_SLACK`].
    pub idle_held_max: Duration,
}

/// What came of one kind of hostile request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Requests (for `idle-socket`: connections) sent.
    pub sent: u64,
    /// Answered as expected: refused (for `digest-admin`: served; for
    /// `idle-socket`: dropped by the node without a byte sent).
    pub expected: u64,
    /// Answered otherwise: each is a violation.
    pub unexpected: u64,
    /// Judged by no node (see [`no_verdict`]): a node down, paused or not
    /// active, a transport error, an idle socket still open when the client
    /// stopped.
    pub no_verdict: u64,
}

/// What the idle-socket flood saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleStats {
    /// Listeners flooded.
    pub listeners: usize,
    /// Sockets held open at once.
    pub sockets: usize,
    /// Connections a node dropped within [`IDLE_AT_ONCE`] (a limit).
    pub dropped_at_once: u64,
    /// Connections a node held for a while (a handshake) and then dropped.
    pub dropped_after_holding: u64,
    /// The longest a node held one before dropping it, ms.
    pub longest_held_ms: u64,
    /// The bound on it (the spec's `idle_held_max`), ms.
    pub held_max_ms: u64,
    /// Connects refused or timed out (a node down or paused).
    pub connects_failed: u64,
}

/// What the hostile client sent and was answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostileStats {
    /// Requests (and idle connections) sent.
    pub requests: u64,
    /// Answers by `action: answer`.
    pub answers: BTreeMap<String, u64>,
    /// Per kind of request: sent, as expected, unexpected, no verdict.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindCounts>,
    /// The idle-socket flood's figures.
    #[serde(default)]
    pub idle: IdleStats,
    /// Answers that should have been refusals (or, for `digest-admin`,
    /// digests).
    pub violations: u64,
    /// The first few of them.
    pub examples: Vec<String>,
}

impl HostileStats {
    /// The invariant line for the report.
    pub fn invariant(&self) -> InvariantResult {
        InvariantResult {
            name: REFUSED.into(),
            passed: self.violations == 0,
            checked: self.requests,
            violations: self.violations,
            examples: self.examples.clone(),
        }
    }
}

/// How an answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// The answer the server must give.
    Expected,
    /// Any other answer: a violation.
    Unexpected,
    /// No node judged the request.
    NoVerdict,
}

/// The shared counters.
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<HostileStats>>);

impl Counter {
    fn with<T>(&self, f: impl FnOnce(&mut HostileStats) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts one request of `kind`, its answer (`answer` under `action`)
    /// and how it is judged; an unexpected one is a violation described by
    /// `example`.
    fn count(&self, kind: &str, action: &str, answer: &str, judged: Judged, example: &str) {
        self.with(|stats| {
            stats.requests += 1;
            *stats
                .answers
                .entry(format!("{action}: {answer}"))
                .or_default() += 1;
            let counts = stats.kinds.entry(kind.to_string()).or_default();
            counts.sent += 1;
            match judged {
                Judged::Expected => counts.expected += 1,
                Judged::NoVerdict => counts.no_verdict += 1,
                Judged::Unexpected => {
                    counts.unexpected += 1;
                    stats.violations += 1;
                    if stats.examples.len() < EXAMPLES_MAX {
                        stats.examples.push(format!("{kind}: {example}"));
                    }
                }
            }
        });
    }
}

/// The running hostile client.
pub struct Hostile {
    stats: Counter,
    tasks: Vec<JoinHandle<()>>,
}

impl Hostile {
    /// Starts it; it sends until the phase leaves [`Phase::Run`].
    pub fn start(spec: HostileSpec, phase: watch::Receiver<Phase>) -> Hostile {
        let stats = Counter::default();
        let channels = |tls: &ClientTls, source: IpAddr, timeout: Duration| -> Vec<Channel> {
            spec.targets
                .iter()
                .filter_map(|address| {
                    let endpoint = tls
                        .endpoint(address, Duration::from_millis(500))
                        .ok()?
                        .timeout(timeout)
                        .local_address(Some(source));
                    Some(endpoint.connect_lazy())
                })
                .collect()
        };
        let client = Client {
            rng: StdRng::seed_from_u64(spec.seed),
            channels: channels(&spec.tls, SOURCE, Duration::from_secs(2)),
            stats: stats.clone(),
            spec: spec.clone(),
        };
        let mut tasks = vec![tokio::spawn(client.run(phase.clone()))];
        let digests = Digests {
            rng: StdRng::seed_from_u64(crate::workload::mix(spec.seed, 1)),
            anonymous: channels(&spec.tls, DIGEST_SOURCE, DIGEST_TIMEOUT),
            stranger: channels(&spec.stranger_tls, DIGEST_SOURCE, DIGEST_TIMEOUT),
            // The nodes' own addresses: the administrator asks each in turn.
            admin: channels(&spec.admin_tls, DIGEST_SOURCE, DIGEST_TIMEOUT)
                .into_iter()
                .skip(1)
                .collect(),
            stats: stats.clone(),
        };
        tasks.push(tokio::spawn(digests.run(phase.clone())));
        let listeners: Vec<(String, SocketAddr)> = spec
            .targets
            .iter()
            .skip(1)
            .filter_map(|a| a.parse::<SocketAddr>().ok())
            .map(|a| ("client", a))
            .chain(spec.peer_targets.iter().map(|&a| ("peer", a)))
            .map(|(plane, a)| (format!("{plane} plane {a}"), a))
            .collect();
        if !listeners.is_empty() {
            stats.with(|s| {
                s.idle.listeners = listeners.len();
                s.idle.sockets = IDLE_SOCKETS;
                s.idle.held_max_ms = spec.idle_held_max.as_millis() as u64;
            });
            for i in 0..IDLE_SOCKETS {
                let (name, address) = listeners[i % listeners.len()].clone();
                tasks.push(tokio::spawn(idle_socket(
                    name,
                    address,
                    spec.idle_held_max,
                    stats.clone(),
                    phase.clone(),
                )));
            }
        }
        Hostile { stats, tasks }
    }

    /// Stops it (it stops by itself once the phase leaves `Run`) and returns what it did.
    pub async fn finish(self) -> HostileStats {
        let Hostile { stats, mut tasks } = self;
        let _ = tokio::time::timeout(FINISH_WAIT, async {
            for task in &mut tasks {
                let _ = task.await;
            }
        })
        .await;
        // Whatever is still sending after the wait sends no more.
        for task in &tasks {
            task.abort();
        }
        stats.with(|s| s.clone())
    }
}

/// Waits until the phase leaves [`Phase::Run`].
async fn stopped(mut phase: watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p != Phase::Run).await;
}

/// One idle socket against `address`: connects from [`IDLE_SOURCE`], sends
/// nothing, waits for the node to drop it, and reopens it.
async fn idle_socket(
    name: String,
    address: SocketAddr,
    held_max: Duration,
    stats: Counter,
    phase: watch::Receiver<Phase>,
) {
    const KIND: &str = "idle-socket";
    while *phase.borrow() == Phase::Run {
        let connected = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(IDLE_SOURCE, 0))?;
            tokio::time::timeout(IDLE_CONNECT_TIMEOUT, socket.connect(address))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
        };
        let mut stream = tokio::select! {
            _ = stopped(phase.clone()) => return,
            connected = connected => match connected {
                Ok(stream) => stream,
                Err(_) => {
                    // Not counted as sent: no connection was made.
                    stats.with(|s| s.idle.connects_failed += 1);
                    tokio::time::sleep(IDLE_REOPEN_DELAY).await;
                    continue;
                }
            },
        };
        let opened = tokio::time::Instant::now();
        let mut byte = [0u8; 1];
        let read = tokio::select! {
            _ = stopped(phase.clone()) => None,
            read = tokio::time::timeout(held_max, stream.read(&mut byte)) => Some(read),
        };
        let held = opened.elapsed();
        match read {
            None => stats.count(KIND, KIND, "still open at the end", Judged::NoVerdict, ""),
            Some(Ok(Ok(0)) | Ok(Err(_))) => {
                let at_once = held < IDLE_AT_ONCE;
                stats.with(|s| {
                    if at_once {
                        s.idle.dropped_at_once += 1;
                    } else {
                        s.idle.dropped_after_holding += 1;
                        s.idle.longest_held_ms = s.idle.longest_held_ms.max(held.as_millis() as u64);
                    }
                });
                let answer = if at_once {
                    "dropped at once"
                } else {
                    "dropped after holding"
                };
                stats.count(KIND, KIND, answer, Judged::Expected, "");
            }
            Some(Ok(Ok(_))) => stats.count(
                KIND,
                KIND,
                "the node sent bytes",
                Judged::Unexpected,
                &format!(
                    "the {name} listener sent a byte on a connection that sent no ClientHello"
                ),
            ),
            Some(Err(_)) => stats.count(
                KIND,
                KIND,
                "held too long",
                Judged::Unexpected,
                &format!(
                    "the {name} listener held a connection that sent no ClientHello for {held:?} (the bound: {held_max:?})"
                ),
            ),
        }
        drop(stream);
        tokio::select! {
            _ = stopped(phase.clone()) => return,
            _ = tokio::time::sleep(IDLE_REOPEN_DELAY) => {}
        }
    }
}

/// Whether no node judged a request refused with `status`: a node not
/// active (UNAVAILABLE), down, paused or cut off, or a transport error —
/// the codes raftlm's own client library retries elsewhere
/// (`src/client/rpc.rs`); the nodes' refusals never use UNKNOWN, INTERNAL
/// or ABORTED (`src/server/error.rs`).
pub fn no_verdict(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Aborted
    )
}

/// A refusal: as expected, unless no node judged it.
fn refused(status: &tonic::Status) -> Judged {
    if no_verdict(status) {
        Judged::NoVerdict
    } else {
        Judged::Expected
    }
}

/// The digest flood.
struct Digests {
    rng: StdRng,
    anonymous: Vec<Channel>,
    stranger: Vec<Channel>,
    admin: Vec<Channel>,
    stats: Counter,
}

impl Digests {
    async fn run(mut self, phase: watch::Receiver<Phase>) {
        if self.anonymous.is_empty() {
            return;
        }
        let request = pb::NodeInfoRequest {
            with_state_digest: true,
            ..Default::default()
        };
        let mut admin_next = tokio::time::Instant::now();
        let mut admin_turn = 0usize;
        let mut tick = tokio::time::interval(DIGEST_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while *phase.borrow() == Phase::Run {
            tick.tick().await;
            let mut sends = tokio::task::JoinSet::new();
            for _ in 0..DIGEST_BURST {
                let index = self.rng.gen_range(0..self.anonymous.len());
                let (who, channel, code) = if self.rng.gen_bool(0.5) || self.stranger.is_empty() {
                    (
                        "without a certificate",
                        self.anonymous[index].clone(),
                        tonic::Code::Unauthenticated,
                    )
                } else {
                    (
                        "with a node's certificate",
                        self.stranger[index % self.stranger.len()].clone(),
                        tonic::Code::PermissionDenied,
                    )
                };
                sends.spawn(async move {
                    let answer = LicenseClient::new(channel).node_info(request).await;
                    (who, code, answer)
                });
            }
            while let Some(sent) = sends.join_next().await {
                let Ok((who, code, answer)) = sent else {
                    continue;
                };
                let (answer, judged, example) = match answer {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        let served = if reply.state_digest.is_empty() {
                            "answered without a digest".to_string()
                        } else {
                            format!("served digest {}", reply.state_digest)
                        };
                        (
                            "ANSWERED".to_string(),
                            Judged::Unexpected,
                            format!(
                                "a state digest asked for {who} was not refused: node {} {served}",
                                reply.id
                            ),
                        )
                    }
                    Err(status) if status.code() == code => {
                        (format!("{code:?}"), Judged::Expected, String::new())
                    }
                    Err(status) if no_verdict(&status) => (
                        format!("{:?}", status.code()),
                        Judged::NoVerdict,
                        String::new(),
                    ),
                    Err(status) => (
                        format!("{:?}", status.code()),
                        Judged::Unexpected,
                        format!(
                            "a state digest asked for {who} was refused {:?} ({}), not {code:?}",
                            status.code(),
                            status.message()
                        ),
                    ),
                };
                self.stats.count(
                    "digest",
                    &format!("digest {who}"),
                    &answer,
                    judged,
                    &example,
                );
            }
            if !self.admin.is_empty() && tokio::time::Instant::now() >= admin_next {
                admin_next = tokio::time::Instant::now() + DIGEST_ADMIN_PERIOD;
                admin_turn = (admin_turn + 1) % self.admin.len();
                let node = admin_turn + 1;
                let answer = LicenseClient::new(self.admin[admin_turn].clone())
                    .node_info(request)
                    .await;
                let (answer, judged, example) = match answer {
                    Ok(reply) => {
                        let digest = reply.into_inner().state_digest;
                        if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                            ("digest".to_string(), Judged::Expected, String::new())
                        } else {
                            (
                                "no digest".to_string(),
                                Judged::Unexpected,
                                format!(
                                    "node {node} answered the administrator's digest request with {digest:?}"
                                ),
                            )
                        }
                    }
                    Err(status) if no_verdict(&status) => (
                        format!("{:?}", status.code()),
                        Judged::NoVerdict,
                        String::new(),
                    ),
                    Err(status) => (
                        format!("{:?}", status.code()),
                        Judged::Unexpected,
                        format!(
                            "node {node} refused the administrator a state digest: {:?} ({})",
                            status.code(),
                            status.message()
                        ),
                    ),
                };
                self.stats
                    .count("digest-admin", "digest-admin", &answer, judged, &example);
            }
        }
    }
}

struct Client {
    spec: HostileSpec,
    rng: StdRng,
    channels: Vec<Channel>,
    stats: Counter,
}

/// A request id of a fresh random session.
fn fresh(rng: &mut StdRng, seq: u64) -> pb::RequestId {
    pb::RequestId {
        session_secret: SessionSecret::from_seed(rng.r#gen()).as_bytes().to_vec(),
        seq,
    }
}

fn code(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

fn reason(reply: &pb::CheckoutReply) -> String {
    if reply.granted {
        return "GRANTED".into();
    }
    pb::DenyReason::try_from(reply.reason).map_or_else(|_| "denied".into(), |r| format!("{r:?}"))
}

/// The name fields of a check-out a control character is put in, as the
/// server names them.
pub const NAME_FIELDS: [&str; 5] = ["user", "host", "vendor", "feature", "version"];

/// A control character: C0 (U+0000–U+001F), DEL (U+007F) or C1
/// (U+0080–U+009F), each range a third of the time.
pub fn control_char(rng: &mut StdRng) -> char {
    let code = match rng.gen_range(0..3) {
        0 => rng.gen_range(0x00..=0x1f),
        1 => 0x7f,
        _ => rng.gen_range(0x80..=0x9f),
    };
    char::from_u32(code).unwrap_or('\u{7f}')
}

/// Puts `bad` into `field` of `request` (in the middle of its name).
pub fn set_name(request: &mut pb::CheckoutRequest, field: &str, bad: char) {
    let name = match field {
        "user" => &mut request.user,
        "host" => &mut request.host,
        "vendor" => &mut request.vendor,
        "feature" => &mut request.feature,
        _ => &mut request.version,
    };
    let at = name.char_indices().nth(name.chars().count() / 2);
    match at {
        Some((at, _)) => name.insert(at, bad),
        None => name.push(bad),
    }
}

/// How the answer to a check-out with control character `bad` in `field` is
/// judged: only `INVALID_ARGUMENT` naming the field and the character is
/// the refusal the server must give.
pub fn judge_control_char(
    field: &str,
    bad: char,
    answer: &Result<pb::CheckoutReply, tonic::Status>,
) -> (String, Judged, String) {
    let named = format!(
        "{field} contains the control character U+{:04X}",
        u32::from(bad)
    );
    match answer {
        Ok(reply) => (
            reason(reply),
            Judged::Unexpected,
            format!(
                "a check-out with U+{:04X} in its {field} name was accepted ({})",
                u32::from(bad),
                reason(reply)
            ),
        ),
        Err(status)
            if status.code() == tonic::Code::InvalidArgument
                && status.message().contains(&named) =>
        {
            ("InvalidArgument".into(), Judged::Expected, String::new())
        }
        Err(status) if no_verdict(status) => (code(status), Judged::NoVerdict, String::new()),
        Err(status) => (
            format!("{} (not naming the field)", code(status)),
            Judged::Unexpected,
            format!(
                "a check-out with U+{:04X} in its {field} name was refused {:?} ({:?}), not INVALID_ARGUMENT saying {named:?}",
                u32::from(bad),
                status.code(),
                status.message()
            ),
        ),
    }
}

impl Client {
    fn client(&mut self) -> Option<LicenseClient<Channel>> {
        if self.channels.is_empty() {
            return None;
        }
        // Mostly the access point, sometimes a node's own address.
        let index = if self.rng.gen_bool(0.7) {
            0
        } else {
            self.rng.gen_range(0..self.channels.len())
        };
        Some(LicenseClient::new(self.channels[index].clone()))
    }

    /// Sends a check-out that must not be granted and counts the answer.
    async fn checkout(&mut self, action: &str, request: pb::CheckoutRequest) {
        let Some(mut client) = self.client() else {
            return;
        };
        let feature = request.feature.chars().take(40).collect::<String>();
        match client.checkout(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let (judged, example) = if reply.granted {
                    (
                        Judged::Unexpected,
                        format!("a check-out of {feature} was granted ({:?})", reply.token),
                    )
                } else {
                    (Judged::Expected, String::new())
                };
                self.stats
                    .count(action, action, &reason(&reply), judged, &example);
            }
            Err(status) => self
                .stats
                .count(action, action, &code(&status), refused(&status), ""),
        }
    }

    fn request(
        &self,
        request: Option<pb::RequestId>,
        feature: String,
        count: u32,
    ) -> pb::CheckoutRequest {
        pb::CheckoutRequest {
            request,
            vendor: crate::cluster::VENDOR.into(),
            version: String::new(),
            feature,
            count,
            user: "mallory".into(),
            host: "hostile".into(),
        }
    }

    /// A feature and count no check-out can be granted.
    fn ungrantable(&mut self) -> (String, u32) {
        match self.rng.gen_range(0..3) {
            0 => (format!("nosuch-{}", self.rng.gen_range(0..1000)), 1),
            1 => {
                let feature =
                    self.spec.features[self.rng.gen_range(0..self.spec.features.len())].clone();
                (feature, 100_000)
            }
            _ => {
                let feature =
                    self.spec.features[self.rng.gen_range(0..self.spec.features.len())].clone();
                (feature, 0)
            }
        }
    }

    async fn run(mut self, phase: watch::Receiver<Phase>) {
        let replayer = SessionSecret::from_seed(self.rng.r#gen());
        let mut replay_seq = 0u64;
        // A session that only ever checks in what it never held.
        let unheld = SessionSecret::from_seed(self.rng.r#gen());
        let mut unheld_seq = 0u64;
        while *phase.borrow() == Phase::Run {
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(5..40))).await;
            match self.rng.gen_range(0..120) {
                0..=19 => {
                    let length = [0usize, 1, 15, 17, 64][self.rng.gen_range(0..5)];
                    let secret: Vec<u8> = (0..length).map(|_| self.rng.r#gen()).collect();
                    let request = if self.rng.gen_bool(0.2) {
                        None
                    } else {
                        Some(pb::RequestId {
                            session_secret: secret,
                            seq: self.rng.r#gen(),
                        })
                    };
                    let (feature, count) = self.ungrantable();
                    let request = self.request(request, feature, count);
                    self.checkout("junk", request).await;
                }
                20..=34 => {
                    let length = self.rng.gen_range(256..4096);
                    let id = fresh(&mut self.rng, 1);
                    let request = self.request(Some(id), "x".repeat(length), 1);
                    self.checkout("long-name", request).await;
                }
                35..=39 => {
                    let id = fresh(&mut self.rng, 1);
                    let request = self.request(Some(id), "y".repeat(96 * 1024), 1);
                    self.checkout("oversized", request).await;
                }
                40..=59 => {
                    // The same request id again and again; now and then 40 newer ones first.
                    if replay_seq == 0 || self.rng.gen_bool(0.05) {
                        for _ in 0..40 {
                            replay_seq += 1;
                            let id = pb::RequestId {
                                session_secret: replayer.as_bytes().to_vec(),
                                seq: replay_seq,
                            };
                            let (feature, count) = self.ungrantable();
                            let request = self.request(Some(id), feature, count);
                            self.checkout("replay", request).await;
                        }
                    }
                    let id = pb::RequestId {
                        session_secret: replayer.as_bytes().to_vec(),
                        seq: self.rng.gen_range(1..=replay_seq),
                    };
                    let (feature, count) = self.ungrantable();
                    let request = self.request(Some(id), feature, count);
                    self.checkout("replay", request).await;
                }
                60..=64 => self.flood().await,
                65..=84 => self.forged_checkin().await,
                85..=99 => self.forged_renew().await,
                100..=109 => self.control_char().await,
                _ => {
                    let id = if self.rng.gen_bool(0.5) {
                        fresh(&mut self.rng, 1)
                    } else {
                        unheld_seq += 1;
                        pb::RequestId {
                            session_secret: unheld.as_bytes().to_vec(),
                            seq: unheld_seq,
                        }
                    };
                    self.unheld_checkin(id).await;
                }
            }
        }
    }

    async fn flood(&mut self) {
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..FLOOD_SESSIONS {
            let Some(mut client) = self.client() else {
                break;
            };
            let (feature, count) = self.ungrantable();
            let id = fresh(&mut self.rng, 1);
            let request = self.request(Some(id), feature, count);
            sends.spawn(async move { client.checkout(request).await });
        }
        while let Some(result) = sends.join_next().await {
            let (answer, judged, example) = match result {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    if reply.granted {
                        (
                            reason(&reply),
                            Judged::Unexpected,
                            format!("a throw-away session was granted {:?}", reply.token),
                        )
                    } else {
                        (reason(&reply), Judged::Expected, String::new())
                    }
                }
                Ok(Err(status)) => (code(&status), refused(&status), String::new()),
                Err(_) => ("task failed".into(), Judged::NoVerdict, String::new()),
            };
            self.stats
                .count("flood", "flood", &answer, judged, &example);
        }
    }

    /// Honest grants, from a Status read.
    async fn honest_grants(&mut self) -> Vec<pb::GrantStatus> {
        let Some(mut client) = self.client() else {
            return Vec::new();
        };
        match client.status(pb::StatusRequest::default()).await {
            Ok(reply) => reply.into_inner().grants,
            Err(_) => Vec::new(),
        }
    }

    async fn forged_checkin(&mut self) {
        let grants = self.honest_grants().await;
        if grants.is_empty() {
            return;
        }
        let grant = grants[self.rng.gen_range(0..grants.len())].clone();
        let Some(mut client) = self.client() else {
            return;
        };
        let request = pb::CheckinRequest {
            request: Some(fresh(&mut self.rng, 1)),
            token: grant.token,
        };
        let (answer, judged, example) = match client.checkin(request).await {
            Ok(reply) => {
                if reply.into_inner().released {
                    (
                        "RELEASED".to_string(),
                        Judged::Unexpected,
                        format!(
                            "grant {:?} of session {} was released by another session",
                            grant.token, grant.session_handle
                        ),
                    )
                } else {
                    ("not-held".to_string(), Judged::Expected, String::new())
                }
            }
            Err(status) => (code(&status), refused(&status), String::new()),
        };
        self.stats.count(
            "forged-checkin",
            "forged-checkin",
            &answer,
            judged,
            &example,
        );
    }

    async fn forged_renew(&mut self) {
        let grants = self.honest_grants().await;
        let Some(mut client) = self.client() else {
            return;
        };
        let quoted = grants.len();
        let request = pb::RenewRequest {
            session_secret: SessionSecret::from_seed(self.rng.r#gen())
                .as_bytes()
                .to_vec(),
            tokens: grants.into_iter().filter_map(|g| g.token).collect(),
            cached_for_ms: 0,
            cached_since_ms: 0,
        };
        let (answer, judged, example) = match client.renew(request).await {
            Ok(reply) => {
                let unknown = reply.into_inner().unknown.len();
                if unknown == quoted {
                    (
                        "answered, all unknown".to_string(),
                        Judged::Expected,
                        String::new(),
                    )
                } else {
                    (
                        "answered, some known".to_string(),
                        Judged::Unexpected,
                        format!(
                            "a renewal of a foreign session quoting {quoted} honest grants was told only {unknown} are unknown"
                        ),
                    )
                }
            }
            Err(status) => (code(&status), refused(&status), String::new()),
        };
        self.stats
            .count("forged-renew", "forged-renew", &answer, judged, &example);
    }

    /// A check-out with a control character in one of its names.
    async fn control_char(&mut self) {
        let field = NAME_FIELDS[self.rng.gen_range(0..NAME_FIELDS.len())];
        let bad = control_char(&mut self.rng);
        let (feature, count) = self.ungrantable();
        let id = fresh(&mut self.rng, 1);
        let mut request = self.request(Some(id), feature, count);
        set_name(&mut request, field, bad);
        let Some(mut client) = self.client() else {
            return;
        };
        let answer = client.checkout(request).await.map(|r| r.into_inner());
        let (answer, judged, example) = judge_control_char(field, bad, &answer);
        self.stats.count(
            "control-char",
            &format!("control-char in {field}"),
            &answer,
            judged,
            &example,
        );
    }

    /// A check-in of a made-up grant by a session the state does not hold,
    /// then, if it was answered, the probe for its trace in the state.
    async fn unheld_checkin(&mut self, id: pb::RequestId) {
        // Terms this high are never reached: the grant does not exist.
        let token = pb::GrantToken {
            term: self.rng.gen_range(1u64 << 40..1u64 << 41),
            index: self.rng.r#gen(),
            slot: self.rng.gen_range(0..4),
        };
        let Some(mut client) = self.client() else {
            return;
        };
        let request = pb::CheckinRequest {
            request: Some(id.clone()),
            token: Some(token),
        };
        const KIND: &str = "unheld-checkin";
        match client.checkin(request).await {
            Ok(reply) if reply.get_ref().released => {
                self.stats.count(
                    KIND,
                    KIND,
                    "RELEASED",
                    Judged::Unexpected,
                    &format!("a check-in of made-up grant {token:?} by an unheld session was answered released"),
                );
            }
            Ok(_) => {
                self.stats
                    .count(KIND, KIND, "not released", Judged::Expected, "");
                self.probe(client, id).await;
            }
            // Not the active node, or its proposals queue full: no verdict.
            Err(status)
                if no_verdict(&status) || status.code() == tonic::Code::ResourceExhausted =>
            {
                self.stats
                    .count(KIND, KIND, &code(&status), Judged::NoVerdict, "");
            }
            Err(status) => self.stats.count(
                KIND,
                KIND,
                &code(&status),
                Judged::Unexpected,
                &format!(
                    "a check-in of made-up grant {token:?} by an unheld session was refused {:?} ({}), not answered \"not released\"",
                    status.code(),
                    status.message()
                ),
            ),
        }
    }

    /// A check-out with the request id of an answered unheld check-in, of
    /// more seats than are licensed: it goes through the log, where the
    /// check-in's answer would be found if the check-in had been proposed.
    async fn probe(&mut self, mut client: LicenseClient<Channel>, id: pb::RequestId) {
        let Some(feature) = self.spec.steady_feature.clone() else {
            return;
        };
        let request = self.request(Some(id.clone()), feature, PROBE_SEATS);
        const KIND: &str = "unheld-probe";
        let written = |message: &str| {
            format!(
                "the log holds an answer to an unheld check-in (seq {}): a check-out with its request id was answered {message:?}",
                id.seq
            )
        };
        let (answer, judged, example) = match client.checkout(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let reason = pb::DenyReason::try_from(reply.reason).ok();
                match reason {
                    _ if reply.granted => (
                        "GRANTED".into(),
                        Judged::Unexpected,
                        format!("a check-out of {PROBE_SEATS} seats was granted"),
                    ),
                    Some(
                        pb::DenyReason::ExceedsLicensed
                        | pb::DenyReason::BadCount
                        | pb::DenyReason::CapacityReached,
                    ) => ("denied: no trace".into(), Judged::Expected, String::new()),
                    // Answered without the log: no verdict on the check-in.
                    Some(pb::DenyReason::NoSuchFeature) => {
                        ("NoSuchFeature".into(), Judged::NoVerdict, String::new())
                    }
                    _ => (
                        format!("denied {reason:?}"),
                        Judged::Unexpected,
                        written(&reply.message),
                    ),
                }
            }
            Err(status)
                if status
                    .message()
                    .contains("unexpected outcome for a check-out") =>
            {
                (
                    "the check-in's answer".into(),
                    Judged::Unexpected,
                    written(status.message()),
                )
            }
            // It did not reach the log: no verdict on the check-in.
            Err(status) => (code(&status), Judged::NoVerdict, String::new()),
        };
        self.stats.count(KIND, KIND, &answer, judged, &example);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The control characters drawn are C0, DEL and C1, each of them.
    #[test]
    fn control_characters_cover_c0_del_and_c1() {
        let mut rng = StdRng::seed_from_u64(1);
        let drawn: Vec<char> = (0..3000).map(|_| control_char(&mut rng)).collect();
        assert!(drawn.iter().all(|c| c.is_control()));
        assert!(drawn.iter().any(|&c| c < '\u{20}'));
        assert!(drawn.contains(&'\u{7f}'));
        assert!(drawn.iter().any(|&c| ('\u{80}'..='\u{9f}').contains(&c)));
        for code in (0..0x20).chain([0x7f]).chain(0x80..0xa0) {
            assert!(
                drawn.contains(&char::from_u32(code).unwrap()),
                "U+{code:04X} never drawn"
            );
        }
    }

    // Each name field gets the character, and only that field.
    #[test]
    fn a_control_character_goes_into_the_named_field() {
        for field in NAME_FIELDS {
            let mut request = pb::CheckoutRequest {
                vendor: "acme".into(),
                feature: "cad".into(),
                user: "mallory".into(),
                host: "hostile".into(),
                ..Default::default()
            };
            set_name(&mut request, field, '\u{9b}');
            let names = [
                ("user", &request.user),
                ("host", &request.host),
                ("vendor", &request.vendor),
                ("feature", &request.feature),
                ("version", &request.version),
            ];
            for (name, value) in names {
                assert_eq!(value.contains('\u{9b}'), name == field, "{field}: {name}");
            }
        }
    }

    // Only INVALID_ARGUMENT naming the field and the character is expected;
    // an accepted name or another refusal is a violation, an unavailable
    // node no verdict.
    #[test]
    fn control_character_answers_are_judged() {
        let named = tonic::Status::invalid_argument(
            "host contains the control character U+001B at byte 3: names are text",
        );
        assert_eq!(
            judge_control_char("host", '\u{1b}', &Err(named.clone())).1,
            Judged::Expected
        );
        assert_eq!(
            judge_control_char("user", '\u{1b}', &Err(named)).1,
            Judged::Unexpected
        );
        let other = tonic::Status::invalid_argument("feature is empty");
        assert_eq!(
            judge_control_char("feature", '\u{1b}', &Err(other)).1,
            Judged::Unexpected
        );
        let denied = pb::CheckoutReply {
            reason: pb::DenyReason::NoSuchFeature as i32,
            ..Default::default()
        };
        assert_eq!(
            judge_control_char("feature", '\u{7f}', &Ok(denied)).1,
            Judged::Unexpected
        );
        for down in [
            tonic::Status::unavailable("connection refused"),
            tonic::Status::internal("h2 protocol error"),
        ] {
            assert_eq!(
                judge_control_char("feature", '\u{7f}', &Err(down)).1,
                Judged::NoVerdict
            );
        }
    }

    // An unexpected answer is a violation with an example; the others are not.
    #[test]
    fn counts_are_kept_per_kind() {
        let counter = Counter::default();
        counter.count(
            "digest",
            "digest a",
            "Unauthenticated",
            Judged::Expected,
            "",
        );
        counter.count("digest", "digest a", "Unavailable", Judged::NoVerdict, "");
        counter.count(
            "digest",
            "digest a",
            "ANSWERED",
            Judged::Unexpected,
            "served",
        );
        let stats = counter.with(|s| s.clone());
        assert_eq!(stats.requests, 3);
        assert_eq!(
            stats.kinds["digest"],
            KindCounts {
                sent: 3,
                expected: 1,
                unexpected: 1,
                no_verdict: 1
            }
        );
        assert_eq!(stats.violations, 1);
        assert_eq!(stats.examples, ["digest: served"]);
        assert!(!stats.invariant().passed);
    }
}
