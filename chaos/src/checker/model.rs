//! The checker's public types: what it is given besides the history
//! ([`CheckInput`] and the views of the nodes in it), what it finds
//! ([`Verdict`], one [`InvariantResult`] per invariant), and the invariants'
//! names in report order ([`INVARIANTS`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::GrantSeen;

/// Names of the invariants, in report order.
pub const INVARIANTS: [&str; 17] = [
    SEATS,
    AVAILABLE,
    LOST,
    PHANTOM,
    DOUBLE,
    FENCING,
    READS,
    CONVERGE,
    LIVE,
    ONE_ENTRY,
    STATES_AT,
    EXPIRY,
    IMPOSSIBLE,
    RENEW_UNKNOWN,
    EXIT,
    LEAK,
    EXPIRE_IN_TIME,
];
pub(super) const SEATS: &str = "seats-never-over-granted";
pub(super) const LOST: &str = "no-lost-grant";
pub(super) const PHANTOM: &str = "no-phantom-grant";
pub(super) const DOUBLE: &str = "retry-never-double-grants";
pub(super) const FENCING: &str = "fencing-terms-monotonic";
pub(super) const READS: &str = "reads-never-go-back";
pub(super) const CONVERGE: &str = "replicas-converge";
pub(super) const LIVE: &str = "live-states-converge";
pub(super) const ONE_ENTRY: &str = "one-entry-per-log-id";
pub(super) const STATES_AT: &str = "states-agree-at-each-index";
pub(super) const EXPIRY: &str = "expiry-judged-on-true-time";
pub(super) const IMPOSSIBLE: &str = "no-impossible-answer";
pub(super) const RENEW_UNKNOWN: &str = "renewal-reports-unknown";
pub(super) const EXIT: &str = "no-unexpected-exit";
pub(super) const LEAK: &str = "no-leaked-seat";
pub(super) const AVAILABLE: &str = "available-never-overstated";
pub(super) const EXPIRE_IN_TIME: &str = "silent-sessions-expire-in-time";

/// Counter-examples kept per invariant.
pub const EXAMPLES_MAX: usize = 5;

/// One node's store as read after the run (see [`crate::replica`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// The node (1-based).
    pub node: usize,
    /// The log index the state is taken at (the same for every readable node).
    pub index: u64,
    /// The node's last log index.
    pub last_index: u64,
    /// The node's saved committed index.
    pub committed: Option<u64>,
    /// The index of the node's stored snapshot.
    pub snapshot_index: Option<u64>,
    /// A digest of the whole license state at `index` (equal states, equal digests).
    pub digest: String,
    /// The grants at `index`.
    pub grants: Vec<GrantSeen>,
    /// Seats in use per feature at `index`.
    pub in_use: BTreeMap<String, u32>,
    /// Why the node's state could not be read or compared, if so.
    pub error: Option<String>,
}

/// One node's live state as its `NodeInfo` reported it after the drain,
/// before the nodes were stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveView {
    /// The node (1-based).
    pub node: usize,
    /// The last log index applied to its state machine.
    pub applied_index: u64,
    /// The highest index it knew committed.
    pub committed_index: u64,
    /// The digest of its license state as of `applied_index` (SHA-256 hex).
    pub digest: String,
    /// Why the node could not be asked, if so.
    pub error: Option<String>,
}

/// One log entry a node held when asked: its log id and a hash of its
/// stored bytes (`NodeInfo`'s `LogEntryHash`, or the offline store read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySeen {
    /// The term of the leader that created the entry.
    pub term: u64,
    /// The node of that leader.
    pub leader: u64,
    /// The entry's index.
    pub index: u64,
    /// A hash of the entry's bytes (equal entries, equal hashes).
    pub hash: String,
}

/// What one node showed of its log and its states at one moment: asked with
/// `NodeInfo` while it ran (after each power cut, and at the end), or read
/// from its store after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogView {
    /// The node (1-based).
    pub node: usize,
    /// When it was asked, for the reader ("power cut 3 of node 2: serving again").
    pub when: String,
    /// Its recent log entries.
    pub entries: Vec<EntrySeen>,
    /// The digests of its license state at applied indexes, `(index, digest)`.
    pub digests: Vec<(u64, String)>,
    /// Why it could not be asked, if so (its view is then empty).
    pub error: Option<String>,
}

/// What the checker needs besides the history.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    /// Seats licensed per feature.
    pub licensed: BTreeMap<String, u32>,
    /// The nodes' session TTL, in microseconds.
    pub session_ttl_us: u64,
    /// Each node's final state; empty when not read.
    pub replicas: Vec<ReplicaView>,
    /// Each node's live state, asked after the drain; empty when not asked.
    pub live: Vec<LiveView>,
    /// Every node's recent log and state digests, asked after each power cut
    /// and at the end, and read from its store after the run; empty when
    /// not asked.
    pub logs: Vec<LogView>,
    /// When the replicas were read (harness time, µs): the processes had stopped.
    pub replicas_read_us: u64,
    /// Dated features: when (harness time, µs; `i64`, as it may be before the
    /// run) each stops being valid in true time.
    pub expiries: BTreeMap<String, i64>,
    /// How far state time may be from true time, µs.
    pub expiry_tolerance_us: u64,
    /// Node processes the harness started.
    pub node_starts: u64,
    /// Node processes that ended without the harness ending them, or did
    /// not stop gracefully when asked.
    pub exits: Vec<NodeExit>,
    /// Node log files scanned for panics after the run.
    pub logs_scanned: u64,
    /// Lines of those logs that tell of a panic (see [`super::panics_in_log`]).
    pub log_panics: Vec<LogLine>,
    /// The run ended with a drain (see [`DrainFinding`]): without an answered
    /// drain read `no-leaked-seat` fails. A history with a drain's start event
    /// is held to it as well.
    pub expect_drain: bool,
    /// Features whose license an administrator imports and removes during the
    /// run: "no such feature" is a fair answer for them.
    pub churned: BTreeSet<String>,
    /// How long after a silent session's TTL ran out (counted from its last
    /// touch and from the answering node's serving spell) its grants must be
    /// gone: a sweep period and slack. 0: `silent-sessions-expire-in-time`
    /// is not checked.
    pub expire_within_us: u64,
}

/// What the end-of-run drain found: the clients stopped, and after every
/// session could have expired a linearizable Status read was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainFinding {
    /// When the clients stopped and the wait began (harness time, µs).
    pub started_us: Option<u64>,
    /// What the wait was made of (the drain's start event).
    pub plan: Option<String>,
    /// When the judged (last answered) drain read was sent.
    pub read_us: Option<u64>,
    /// Drain reads answered (more than one when the active node changed during the wait).
    pub reads: u64,
    /// Grants that read held.
    pub grants: Vec<GrantSeen>,
    /// Seats in use per feature in that read.
    pub in_use: BTreeMap<String, u32>,
}

/// A node process that ended without the harness ending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeExit {
    /// The node (1-based).
    pub node: usize,
    /// When the harness noticed (harness time, µs).
    pub noticed_us: u64,
    /// When it was last seen running before that, if it was.
    pub last_running_us: Option<u64>,
    /// The exit status and circumstances.
    pub what: String,
}

/// One line of a node's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The node (1-based).
    pub node: usize,
    /// The line number, from 1.
    pub line: usize,
    /// The line (and the next one, where the panic message continues there).
    pub text: String,
}

/// Operations of one kind, by final outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Operations answered ok.
    pub ok: u64,
    /// Operations that certainly did not take effect (denied, not held).
    pub fail: u64,
    /// Operations whose outcome stayed unknown after every retry.
    pub unknown: u64,
    /// Attempts, retries included.
    pub attempts: u64,
    /// Attempts that ended unknown (then retried or given up).
    pub unknown_attempts: u64,
}

/// One invariant's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantResult {
    /// The invariant's name.
    pub name: String,
    /// Whether no violation was found.
    pub passed: bool,
    /// How many things were checked (grants, answers, reads…), to show it did something.
    pub checked: u64,
    /// Violations found.
    pub violations: u64,
    /// The first few counter-examples, each one sentence naming operations and times.
    pub examples: Vec<String>,
}

/// Unavailability after the faults of one type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unavailability {
    /// Faults of this type.
    pub faults: u64,
    /// Faults after which a check-out was answered.
    pub recovered: u64,
    /// Median time to the first answered check-out, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Longest, ms.
    pub max_ms: f64,
}

/// The checker's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Operations by kind and outcome.
    pub operations: BTreeMap<String, OutcomeCounts>,
    /// Faults injected, by type.
    pub faults: BTreeMap<String, u64>,
    /// Every invariant, in [`INVARIANTS`] order.
    pub invariants: Vec<InvariantResult>,
    /// Unavailability per fault type.
    pub unavailability: BTreeMap<String, Unavailability>,
    /// Seats granted (ok check-outs).
    pub grants: u64,
    /// Check-outs denied because the pool was exhausted.
    pub denied_in_use: u64,
    /// Most seats certainly held at once, per feature.
    pub peak_seats: BTreeMap<String, u32>,
    /// The end-of-run drain, when the history has one.
    pub drain: Option<DrainFinding>,
    /// Check-out attempts the cluster answered (granted or denied).
    pub checkouts_answered: u64,
    /// Sessions the workload ran.
    pub sessions: u64,
    /// Sessions the cluster expired while they were still heartbeating (told
    /// "session expired" before the workload gave them up): expiry caused by
    /// faults, slow heartbeats or a check-in at the TTL's edge.
    pub live_sessions_expired: u64,
    /// Applications' sessions the cluster expired while the application was
    /// cut off (its client library then started a new one).
    pub app_sessions_expired: u64,
}

impl Verdict {
    /// Total violations over every invariant.
    pub fn violations(&self) -> u64 {
        self.invariants.iter().map(|i| i.violations).sum()
    }
}
