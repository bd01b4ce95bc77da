//! The checker: decides from a history (and the replicas' final states)
//! whether raftlm kept its promises. Pure: no I/O, no clock.
//!
//! # What is certain
//!
//! The checker never assumes more than the history proves, so every
//! violation it reports is real (given a correct history):
//!
//! - a grant `g` exists from the moment its check-out was answered `ok`
//!   (`c_g`, the end of the answered attempt) — it was applied before the
//!   reply;
//! - `g` is *certainly held* until the first check-in attempt that quotes it
//!   is sent, or until its session could first have been expired, whichever
//!   is earlier. The session TTL bounds expiry from below: every answered
//!   request of a session (check-out, check-in, renewal) touched it at some
//!   moment between sending and answer, and the active node expires a session
//!   only after a silence longer than the TTL since its last touch in its own
//!   term (a new active node starts every TTL afresh, which only delays
//!   expiry). So, starting from `P = a + TTL` for the granting attempt sent at
//!   `a`, every answered attempt `(a_i, c_i)` with `c_i < P` pushes the bound to
//!   `max(P, a_i + TTL)`. Time in which no node served is not silence: the
//!   active node counts silence from no earlier than the start of its own
//!   serving spell (it became active, or its lease came back after a lapse),
//!   and every Status read says how long the answering node had served
//!   (`serving_for_ms`), so a read sent at `r` shows a spell that began no
//!   earlier than `r − serving_for`. Spells follow each other (one node serves
//!   at a time), so whoever expires the session at or after `P` serves in a
//!   spell that began no earlier than that of any read answered before `P`:
//!   the bound is pushed to `spell start + TTL` as well, and both pushes are
//!   repeated until the bound stays put. The result `E_g` is a lower bound of
//!   the expiry.
//!
//! # Invariants
//!
//! - **seats-never-over-granted** — at no moment do the grants certainly held
//!   of a feature add up to more seats than are licensed, and no state the
//!   cluster showed (a Status read, a node's own store) holds more, counting
//!   every grant in it, acknowledged or not;
//! - **available-never-overstated** — a check-out's reply never says more
//!   seats are free than the licensed seats less every other grant certainly
//!   held over the whole operation and its own; the total it gives for a
//!   permanent feature whose license never changes is the licensed count; an
//!   "in use" denial says fewer seats are free than were asked for;
//! - **no-lost-grant** — no answer says a certainly held grant is gone: a
//!   renewal listing it as unknown, a check-in of it answered "not held", a
//!   request answered "session expired", or a linearizable status read that
//!   lacks it (the workload's reader reads every half second; the harness
//!   reads after healing and after a kill-all + restart);
//! - **no-phantom-grant** — every grant in a read state (every status read,
//!   and the replicas' own stores) comes from an `ok` check-out (same
//!   session, feature and seats) or can be matched one-to-one to an `unknown`
//!   one of its session; a grant whose check-in was answered `ok` before a
//!   read was sent is not in that read;
//! - **retry-never-double-grants** — the attempts of one request id never get
//!   two different grant tokens, and no final state holds a grant that only a
//!   second application of a retried, resolved request could explain;
//! - **fencing-terms-monotonic** — no answer carries a lower term than an
//!   answer that completed before it was sent (real-time order over all
//!   clients);
//! - **reads-never-go-back** — every Status read (the workload's reader, the
//!   harness's reads after healing, after the kill-all and in the drain)
//!   records the applied index of the state it shows, and every check-out
//!   and check-in answer the index its command was applied at (a denial or
//!   "not held" too: both are committed). Status is linearizable, so in
//!   real-time order over all clients (a) a read sent after another read was
//!   answered never shows a lower applied index, and (b) a read shows at
//!   least the index of every check-out or check-in answered before it was
//!   sent. Operations that overlap are not ordered. One sort and a heap of
//!   completions, as for fencing: O(n log n). Answers without an index
//!   (histories from before it was recorded) are not judged;
//! - **replicas-converge** — every node's own store, read after the run, holds
//!   the same log prefix and the same license state at the compared index;
//! - **live-states-converge** — after the drain, before the nodes stop, each
//!   node's `NodeInfo` reports its applied index, its committed index and
//!   the SHA-256 digest of its live license state as of that index (taken
//!   under one lock); the harness asks until all three report one applied
//!   index (up to 10 s: the clients have stopped). Every node must answer,
//!   all must stand at one applied index, nodes at the same index must
//!   report the same digest, and a node's live digest must equal the digest
//!   of its own store replayed by the harness when both are at the same
//!   index (the same digest function, `LicenseState::digest`);
//! - **one-entry-per-log-id** — a log id (leader term, leader node, index)
//!   names one entry for the life of the cluster. After each power cut
//!   (once a node serves, and again a few seconds later), after the final
//!   restart and at the end, the harness asks every node (`NodeInfo`) for
//!   its recent log ids, each with a hash of the entry's stored bytes, and
//!   after the run reads the same from every store ([`LogView`]). Any two
//!   views — two nodes, or one node before and after a restart — that hold
//!   an entry under one log id must hold the same hash. Compared across
//!   time, so a later snapshot that overwrites a divergence cannot hide it;
//! - **states-agree-at-each-index** — each node keeps, in memory, the
//!   digest of its license state right after every applied index that is a
//!   multiple of a fixed step (the most recent few), and `NodeInfo` returns
//!   them, asked at the same moments. Entries are applied only once
//!   committed, so every digest any node ever reports at one index, and the
//!   replayed stores' digests at the compared index, must be equal: the
//!   states are compared at common applied indexes while the cluster runs,
//!   not only at the end;
//! - **expiry-judged-on-true-time** — with dated licenses in the run: no
//!   check-out of a feature is refused as expired while the run's true time
//!   (the harness's clock; node clocks may be jumped) is more than the
//!   tolerance before the feature's end, and none is granted on an attempt
//!   sent more than the tolerance after it. The tolerance is the nodes'
//!   clock bound plus a second: a node stamps state time only while its
//!   clock is within the bound of a majority's.
//! - **renewal-reports-unknown** — a renewal's answer lists as unknown every
//!   token it quoted that the session does not hold: one of its own whose
//!   check-in was answered ok before the renewal was sent, one granted to
//!   another session (the active node matches a quoted token to the
//!   renewing session's grants only), and a made-up one no check-out was
//!   granted. The tokens the session quoted as held are judged by
//!   `no-lost-grant` alone, as before;
//! - **no-unexpected-exit** — no node process ends unless the harness ends
//!   it (a kill, a power cut, a SIGTERM answered by a clean exit within
//!   10 s), and no node's log tells of a panic. The harness notices an exit
//!   when it next looks at the process (a heal, a fault aimed at the active
//!   node, a restart), so the time reported is when it was noticed and when
//!   the process was last seen running;
//! - **no-leaked-seat** — the run ends with a drain: the clients stop
//!   (heartbeats too; sessions are abandoned, not checked in), and once every
//!   session could have expired (a node serving, then the TTL, the
//!   activation wait, a sweep period and slack) a linearizable Status read
//!   must show no grant and no seat in use, and must be answered at all;
//! - **silent-sessions-expire-in-time** — the upper bound of expiry: a
//!   session whose last attempt ended at `T` and a node that served without a
//!   break from `S` (a read's `serving_for`) must have parted by
//!   `max(T, S) + TTL + a sweep period + slack`; no read taken later by that
//!   spell holds its grants, and no check-in of them sent later in it is
//!   answered "released". Only sessions whose heartbeats the history holds
//!   are judged (an application's client library renews unrecorded);
//! - **no-impossible-answer** — no check-out is answered what the workload
//!   cannot be told: "stale request" (a session's requests are sequential, so
//!   a retry is always of its latest request, inside the retry window; the
//!   answer is recorded `unknown` with detail `stale`), "no such feature" for
//!   a licensed feature (an expired line still counts as licensed), "expired"
//!   or "exceeds licensed" for a feature whose end the run does not plan
//!   (permanent lines; the workload asks for at most the seats licensed), and
//!   "bad count", "version not licensed" or no reason at all (it asks for 1
//!   to 3 seats of any version); a check-out of 0 seats or of more than are
//!   licensed (the workload asks for some on purpose) must be refused "bad
//!   count" or "exceeds licensed" and never granted; "no such feature" is
//!   fair for the license an administrator imports and removes during the
//!   run; and no grant is released twice (a second check-in, sent after the
//!   first was answered ok, must be answered "not held"). Dated features
//!   are left to `expiry-judged-on-true-time`.
//!
//! Unavailability is measured per fault type as the time from a fault's start
//! to the end of the first check-out attempt sent after it that the cluster
//! answered (a grant or a denial: both are committed through Raft; with a
//! pool kept exhausted on purpose, a denial proves availability as well).
//!
//! Left out: the checker does not model the session tracker's fresh TTL after
//! a failover (it only lengthens lives, so ignoring it is conservative), and
//! it cannot see grants created by `unknown` check-outs until a final read
//! shows them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{Event, EventType, GrantSeen, OpKind, Token};

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
const SEATS: &str = "seats-never-over-granted";
const LOST: &str = "no-lost-grant";
const PHANTOM: &str = "no-phantom-grant";
const DOUBLE: &str = "retry-never-double-grants";
const FENCING: &str = "fencing-terms-monotonic";
const READS: &str = "reads-never-go-back";
const CONVERGE: &str = "replicas-converge";
const LIVE: &str = "live-states-converge";
const ONE_ENTRY: &str = "one-entry-per-log-id";
const STATES_AT: &str = "states-agree-at-each-index";
const EXPIRY: &str = "expiry-judged-on-true-time";
const IMPOSSIBLE: &str = "no-impossible-answer";
const RENEW_UNKNOWN: &str = "renewal-reports-unknown";
const EXIT: &str = "no-unexpected-exit";
const LEAK: &str = "no-leaked-seat";
const AVAILABLE: &str = "available-never-overstated";
const EXPIRE_IN_TIME: &str = "silent-sessions-expire-in-time";

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

/// The report's line on the log views: how many, at how many moments, how
/// many nodes could not be asked (their entries and digests were not
/// compared), and how much they held.
pub fn log_views_line(logs: &[LogView]) -> String {
    let moments: BTreeSet<&str> = logs.iter().map(|v| v.when.as_str()).collect();
    let unasked: Vec<String> = logs
        .iter()
        .filter_map(|v| {
            v.error
                .as_ref()
                .map(|e| format!("node {} ({}): {e}", v.node, v.when))
        })
        .collect();
    let entries: usize = logs.iter().map(|v| v.entries.len()).sum();
    let digests: usize = logs.iter().map(|v| v.digests.len()).sum();
    let mut line = format!(
        "{} views at {} moments (after each power cut, the final restart, the end, the stores), {entries} entries and {digests} state digests seen; {} not answered",
        logs.len(),
        moments.len(),
        unasked.len()
    );
    if let Some(first) = unasked.first() {
        line.push_str(&format!(", first: {first}"));
    }
    line
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
    /// Lines of those logs that tell of a panic (see [`panics_in_log`]).
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

/// Longest log text kept for one panic line.
pub const LOG_LINE_CHARS_MAX: usize = 400;

/// The lines of node `node`'s log that tell of a panic: Rust's panic message
/// (`thread '…' panicked at file:line:col:`, the message on the next line)
/// and the node's own `panic: …; stopping the node` (its panic hook aborts
/// the process, `src/cli/server.rs`). Any line with "panic" in it counts: a
/// node logs the word only when something panicked.
pub fn panics_in_log(node: usize, text: &str) -> Vec<LogLine> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.to_ascii_lowercase().contains("panic") {
            continue;
        }
        let mut text = line.trim().to_string();
        if text.ends_with(':')
            && let Some(next) = lines.get(i + 1)
        {
            text.push(' ');
            text.push_str(next.trim());
        }
        if text.len() > LOG_LINE_CHARS_MAX {
            let mut cut = LOG_LINE_CHARS_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        found.push(LogLine {
            node,
            line: i + 1,
            text,
        });
    }
    found
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

/// An attempt at an operation, rebuilt from its invoke and completion events.
#[derive(Debug, Clone)]
struct Attempt {
    invoke_us: u64,
    complete_us: u64,
    /// Ok, Fail or Unknown (no completion event: Unknown, completing at the end of time).
    outcome: EventType,
    term: Option<u64>,
    /// The log index the answer carries (a read's applied index, a write's).
    index: Option<u64>,
    token: Option<Token>,
    unknown_tokens: Vec<Token>,
    grants: Option<Vec<GrantSeen>>,
    detail: Option<String>,
    /// Seats in use per feature, for the harness's state reads.
    in_use: BTreeMap<String, u32>,
    /// For Status reads: how long the answering node had served without a break, µs.
    serving_for_us: Option<u64>,
    /// For check-outs: seats free after the request, and seats licensed, per the reply.
    available: Option<u32>,
    total: Option<u32>,
}

impl Attempt {
    /// Answered by the cluster (a reply with a term): the request reached a serving node.
    fn answered(&self) -> bool {
        matches!(self.outcome, EventType::Ok | EventType::Fail) && self.term.is_some()
    }
}

/// An operation and its attempts.
#[derive(Debug, Clone)]
struct Op {
    id: u64,
    kind: OpKind,
    process: String,
    session: Option<String>,
    seq: Option<u64>,
    feature: Option<String>,
    count: Option<u32>,
    /// The token quoted by a check-in.
    token: Option<Token>,
    /// A renewal's quoted tokens: held, checked in, foreign, made up.
    quoted: Quoted,
    attempts: Vec<Attempt>,
    /// Sessions the op was sent under before its answer named another: an
    /// application's client library starts a new session when the cluster
    /// expired its old one and retries there. What the attempts under the
    /// old session did is unknown (their answers were lost), so the op may
    /// explain one grant of each of them.
    earlier_sessions: Vec<String>,
}

/// The tokens a renewal quoted, by what the session knew of them.
#[derive(Debug, Clone, Default)]
struct Quoted {
    held: Vec<Token>,
    checked_in: Vec<Token>,
    foreign: Vec<Token>,
    made_up: Vec<Token>,
}

impl Op {
    fn outcome(&self) -> EventType {
        if self.attempts.iter().any(|a| a.outcome == EventType::Ok) {
            EventType::Ok
        } else if self.attempts.iter().any(|a| a.outcome == EventType::Fail) {
            EventType::Fail
        } else {
            EventType::Unknown
        }
    }

    fn first_ok(&self) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.outcome == EventType::Ok)
    }

    fn first_invoke(&self) -> u64 {
        self.attempts.first().map_or(u64::MAX, |a| a.invoke_us)
    }

    fn describe(&self) -> String {
        let mut text = format!("{} op {} by {}", self.kind, self.id, self.process);
        if let (Some(session), Some(seq)) = (&self.session, self.seq) {
            text.push_str(&format!(" (request {session}/{seq})"));
        }
        text
    }
}

/// A grant acknowledged by an ok check-out.
#[derive(Debug, Clone)]
struct GrantLife {
    token: Token,
    op: u64,
    session: String,
    feature: String,
    count: u32,
    /// When the ok answer arrived: the grant certainly exists from here.
    granted_us: u64,
    /// Lower bound of the session's expiry.
    expiry_lb_us: u64,
    /// When the first check-in attempt quoting it was sent.
    checkin_sent_us: Option<u64>,
    /// When a check-in of it was answered ok.
    checkin_ok_us: Option<u64>,
}

impl GrantLife {
    /// End of the interval in which the grant is certainly held (exclusive).
    fn held_until_us(&self) -> u64 {
        self.checkin_sent_us
            .map_or(self.expiry_lb_us, |c| c.min(self.expiry_lb_us))
    }

    /// Certainly held during the whole of `[from, to]`.
    fn held_over(&self, from: u64, to: u64) -> bool {
        self.granted_us <= from && to <= self.held_until_us()
    }

    fn describe(&self) -> String {
        format!(
            "grant {} ({} × {} for session {}, granted by op {} at {})",
            self.token,
            self.count,
            self.feature,
            self.session,
            self.op,
            secs(self.granted_us)
        )
    }
}

/// Seconds with millisecond precision, for messages.
fn secs(us: u64) -> String {
    if us == u64::MAX {
        return "the end".to_string();
    }
    format!("{:.3} s", us as f64 / 1e6)
}

/// Collects one invariant's results.
struct Tally {
    name: &'static str,
    checked: u64,
    violations: u64,
    examples: Vec<String>,
}

impl Tally {
    fn new(name: &'static str) -> Tally {
        Tally {
            name,
            checked: 0,
            violations: 0,
            examples: Vec::new(),
        }
    }

    fn violation(&mut self, example: String) {
        self.violations += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example);
        }
    }

    fn finish(self) -> InvariantResult {
        InvariantResult {
            name: self.name.to_string(),
            passed: self.violations == 0,
            checked: self.checked,
            violations: self.violations,
            examples: self.examples,
        }
    }
}

/// Rebuilds operations from events: attempts paired by op id and attempt number.
fn operations(events: &[Event]) -> Vec<Op> {
    let mut ops: BTreeMap<u64, Op> = BTreeMap::new();
    for event in events {
        if matches!(event.op, OpKind::Nemesis | OpKind::Abandon | OpKind::Use) {
            continue;
        }
        match event.kind {
            EventType::Invoke => {
                let op = ops.entry(event.id).or_insert_with(|| Op {
                    id: event.id,
                    kind: event.op,
                    process: event.process.clone(),
                    session: event.session.clone(),
                    seq: event.seq,
                    feature: event.feature.clone(),
                    count: event.count,
                    token: event.token,
                    quoted: Quoted {
                        held: event.tokens.clone(),
                        checked_in: event.checked_in_tokens.clone(),
                        foreign: event.foreign_tokens.clone(),
                        made_up: event.made_up_tokens.clone(),
                    },
                    attempts: Vec::new(),
                    earlier_sessions: Vec::new(),
                });
                op.attempts.push(Attempt {
                    invoke_us: event.time_us,
                    complete_us: u64::MAX,
                    outcome: EventType::Unknown,
                    term: None,
                    index: None,
                    token: None,
                    unknown_tokens: Vec::new(),
                    grants: None,
                    detail: None,
                    in_use: BTreeMap::new(),
                    serving_for_us: None,
                    available: None,
                    total: None,
                });
            }
            EventType::Ok | EventType::Fail | EventType::Unknown => {
                let Some(op) = ops.get_mut(&event.id) else {
                    continue;
                };
                let index = event
                    .attempt
                    .map(|n| n as usize)
                    .filter(|n| (1..=op.attempts.len()).contains(n))
                    .unwrap_or(op.attempts.len());
                let Some(attempt) = op.attempts.get_mut(index.wrapping_sub(1)) else {
                    continue;
                };
                attempt.complete_us = event.time_us;
                attempt.outcome = event.kind;
                attempt.term = event.term;
                attempt.index = event.index;
                attempt.token = event.token;
                attempt.unknown_tokens = event.unknown_tokens.clone();
                attempt.grants = event.grants.clone();
                attempt.detail = event.detail.clone();
                attempt.in_use = event.in_use.clone().unwrap_or_default();
                attempt.serving_for_us = event.serving_for_ms.map(|ms| ms.saturating_mul(1000));
                attempt.available = event.available;
                attempt.total = event.total;
                if op.feature.is_none() {
                    op.feature = event.feature.clone();
                }
                // An application's client library may have started a new
                // session while the call was retried (its old one expired): the
                // answer names the session that holds the grant (or was
                // denied), and the old session's attempts are left unknown.
                if matches!(event.kind, EventType::Ok | EventType::Fail)
                    && let Some(session) = &event.session
                    && op.session.as_ref() != Some(session)
                    && let Some(old) = op.session.replace(session.clone())
                {
                    op.earlier_sessions.push(old);
                }
            }
            EventType::Info => {}
        }
    }
    ops.into_values().collect()
}

/// A Status read answered by a node that said how long it had served
/// without a break: its serving spell began between
/// [`Spell::began_no_earlier`] and [`Spell::began_no_later`].
#[derive(Debug, Clone, Copy)]
struct Spell {
    invoke_us: u64,
    complete_us: u64,
    serving_for_us: u64,
}

impl Spell {
    /// The answer was made no earlier than the read was sent.
    fn began_no_earlier(&self) -> u64 {
        self.invoke_us.saturating_sub(self.serving_for_us)
    }
    /// The answer was made no later than it arrived.
    fn began_no_later(&self) -> u64 {
        self.complete_us.saturating_sub(self.serving_for_us)
    }
}

/// The answered reads' spells, by completion, with the running maximum of
/// [`Spell::began_no_earlier`].
struct Spells {
    reads: Vec<Spell>,
    /// `latest_start[k]`: the largest `began_no_earlier` of `reads[..=k]`.
    latest_start: Vec<u64>,
}

impl Spells {
    fn new(ops: &[Op]) -> Spells {
        let mut reads: Vec<Spell> = ops
            .iter()
            .filter(|o| matches!(o.kind, OpKind::Read | OpKind::Drain))
            .flat_map(|o| o.attempts.iter())
            .filter(|a| a.answered())
            .filter_map(|a| {
                Some(Spell {
                    invoke_us: a.invoke_us,
                    complete_us: a.complete_us,
                    serving_for_us: a.serving_for_us?,
                })
            })
            .collect();
        reads.sort_by_key(|r| (r.complete_us, r.invoke_us));
        let mut latest_start = Vec::with_capacity(reads.len());
        let mut latest = 0;
        for read in &reads {
            latest = latest.max(read.began_no_earlier());
            latest_start.push(latest);
        }
        Spells {
            reads,
            latest_start,
        }
    }

    /// The latest moment some node's serving spell is known to have begun,
    /// from the reads answered before `before_us`. Only one node serves at
    /// a time (the lease), and spells follow each other: whoever serves at or
    /// after `before_us` began serving no earlier than this.
    fn began_before(&self, before_us: u64) -> Option<u64> {
        let k = self.reads.partition_point(|r| r.complete_us < before_us);
        k.checked_sub(1).map(|k| self.latest_start[k])
    }

    /// The first read sent at or after `from_us`.
    fn first_sent_after(&self, from_us: u64) -> Option<&Spell> {
        self.reads
            .iter()
            .filter(|r| r.invoke_us >= from_us)
            .min_by_key(|r| r.invoke_us)
    }
}

/// The lower bound of a session's expiry, given a touch no earlier than
/// `from_us`: the active node expires a session only after a silence longer
/// than the TTL since its last touch and since its own serving spell began
/// (`spells`), so time in which no node served is not silence.
fn expiry_lower_bound(from_us: u64, touches: &[(u64, u64)], ttl_us: u64, spells: &Spells) -> u64 {
    let mut bound = from_us.saturating_add(ttl_us);
    loop {
        let before = bound;
        // `touches` is sorted by completion: once one completes at or after the
        // bound, none later can extend it.
        for &(invoke, complete) in touches {
            if complete >= bound {
                break;
            }
            bound = bound.max(invoke.saturating_add(ttl_us));
        }
        if let Some(began) = spells.began_before(bound) {
            bound = bound.max(began.saturating_add(ttl_us));
        }
        if bound == before {
            return bound;
        }
    }
}

/// Checks a history against the invariants. See the module docs.
pub fn check(events: &[Event], input: &CheckInput) -> Verdict {
    let ops = operations(events);
    let mut verdict = Verdict::default();

    // Operations by outcome.
    for op in &ops {
        let counts = verdict.operations.entry(op.kind.to_string()).or_default();
        match op.outcome() {
            EventType::Ok => counts.ok += 1,
            EventType::Fail => counts.fail += 1,
            _ => counts.unknown += 1,
        }
        counts.attempts += op.attempts.len() as u64;
        counts.unknown_attempts += op
            .attempts
            .iter()
            .filter(|a| a.outcome == EventType::Unknown)
            .count() as u64;
        if op.kind == OpKind::Checkout {
            verdict.checkouts_answered +=
                op.attempts.iter().filter(|a| a.answered()).count() as u64;
            verdict.denied_in_use += op
                .attempts
                .iter()
                .filter(|a| a.outcome == EventType::Fail && a.detail.as_deref() == Some("in-use"))
                .count() as u64;
        }
    }

    // Answered touches per session, sorted by completion.
    let mut touches: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for op in &ops {
        if !matches!(op.kind, OpKind::Checkout | OpKind::Checkin | OpKind::Renew) {
            continue;
        }
        let Some(session) = op.session.as_deref() else {
            continue;
        };
        for attempt in op.attempts.iter().filter(|a| a.answered()) {
            touches
                .entry(session)
                .or_default()
                .push((attempt.invoke_us, attempt.complete_us));
        }
    }
    for list in touches.values_mut() {
        list.sort_by_key(|&(invoke, complete)| (complete, invoke));
    }

    let mut double = Tally::new(DOUBLE);
    let mut lost = Tally::new(LOST);
    let mut phantom = Tally::new(PHANTOM);
    let spells = Spells::new(&ops);
    session_figures(events, &ops, &mut verdict);

    // Grants acknowledged by ok check-outs.
    let mut grants: BTreeMap<Token, GrantLife> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.kind == OpKind::Checkout) {
        let oks: Vec<&Attempt> = op
            .attempts
            .iter()
            .filter(|a| a.outcome == EventType::Ok)
            .collect();
        if op.attempts.len() > 1 {
            double.checked += 1;
        }
        let tokens: BTreeSet<Token> = oks.iter().filter_map(|a| a.token).collect();
        if tokens.len() > 1 {
            let list: Vec<String> = tokens.iter().map(Token::to_string).collect();
            double.violation(format!(
                "{} got {} different grants over its {} attempts: {}",
                op.describe(),
                tokens.len(),
                op.attempts.len(),
                list.join(", ")
            ));
        }
        let Some(first) = oks.first() else { continue };
        let Some(token) = first.token else { continue };
        let session = op.session.clone().unwrap_or_default();
        let expiry = expiry_lower_bound(
            first.invoke_us,
            touches.get(session.as_str()).map_or(&[], Vec::as_slice),
            input.session_ttl_us,
            &spells,
        );
        verdict.grants += 1;
        grants.insert(
            token,
            GrantLife {
                token,
                op: op.id,
                session,
                feature: op.feature.clone().unwrap_or_default(),
                count: op.count.unwrap_or(0),
                granted_us: first.complete_us,
                expiry_lb_us: expiry,
                checkin_sent_us: None,
                checkin_ok_us: None,
            },
        );
    }
    // Check-ins: when each grant's first check-in was sent, and when one was answered ok.
    for op in ops.iter().filter(|o| o.kind == OpKind::Checkin) {
        let Some(grant) = op.token.and_then(|t| grants.get_mut(&t)) else {
            continue;
        };
        let sent = op.first_invoke();
        grant.checkin_sent_us = Some(grant.checkin_sent_us.map_or(sent, |s| s.min(sent)));
        if let Some(ok) = op.first_ok() {
            let at = ok.complete_us;
            grant.checkin_ok_us = Some(grant.checkin_ok_us.map_or(at, |s| s.min(at)));
        }
    }

    let seats = check_seats(&ops, &grants, input, &mut verdict);
    check_lost(&ops, &grants, &mut lost);
    check_final_states(&ops, &grants, input, &mut phantom, &mut double, &mut lost);
    let fencing = check_fencing(&ops);
    let reads = check_reads(&ops);
    let converge = check_convergence(&input.replicas);
    let live = check_live(&input.live, &input.replicas);
    let one_entry = check_one_entry_per_log_id(&input.logs);
    let states_at = check_states_at_each_index(&input.logs);
    let expiry = check_expiry(&ops, input);
    let impossible = check_impossible(&ops, input);
    let renew_unknown = check_renewal_unknown(&ops, &grants);
    let exits = check_exits(input);
    let leak = check_drain(events, &ops, input, &mut verdict);
    let available = check_available(&ops, &grants, input);
    let in_time = check_expire_in_time(&ops, &spells, input);

    verdict.invariants = vec![
        seats,
        available,
        lost.finish(),
        phantom.finish(),
        double.finish(),
        fencing,
        reads,
        converge,
        live,
        one_entry,
        states_at,
        expiry,
        impossible,
        renew_unknown,
        exits,
        leak,
        in_time,
    ];
    unavailability(events, &ops, &mut verdict);
    verdict
}

/// How many sessions ran, and how many the cluster expired while they were
/// still heartbeating.
fn session_figures(events: &[Event], ops: &[Op], verdict: &mut Verdict) {
    let mut abandoned: HashMap<&str, u64> = HashMap::new();
    for event in events.iter().filter(|e| e.op == OpKind::Abandon) {
        if let Some(session) = event.session.as_deref() {
            abandoned.entry(session).or_insert(event.time_us);
        }
    }
    let mut sessions: BTreeSet<&str> = BTreeSet::new();
    let mut expired: BTreeSet<&str> = BTreeSet::new();
    for op in ops {
        let Some(session) = op.session.as_deref() else {
            continue;
        };
        sessions.insert(session);
        let given_up = abandoned.get(session).copied().unwrap_or(u64::MAX);
        if op.attempts.iter().any(|a| {
            a.answered() && a.detail.as_deref() == Some("session-expired") && a.invoke_us < given_up
        }) {
            expired.insert(session);
        }
    }
    verdict.sessions = sessions.len() as u64;
    verdict.live_sessions_expired = expired.len() as u64;
    // An application's client library starts a new session when the cluster
    // expired its old one: every session of an application after its first.
    let apps: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.op == OpKind::Use)
        .map(|e| e.process.as_str())
        .collect();
    let mut app_sessions: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for event in events.iter().filter(|e| apps.contains(e.process.as_str())) {
        if let Some(session) = event.session.as_deref() {
            app_sessions
                .entry(&event.process)
                .or_default()
                .insert(session);
        }
    }
    verdict.app_sessions_expired = app_sessions
        .values()
        .map(|s| s.len().saturating_sub(1) as u64)
        .sum();
}

/// Expiry on true time: see the module docs.
fn check_expiry(ops: &[Op], input: &CheckInput) -> InvariantResult {
    let mut tally = Tally::new(EXPIRY);
    let tolerance = input.expiry_tolerance_us as i64;
    for op in ops.iter().filter(|o| o.kind == OpKind::Checkout) {
        let feature = op.feature.as_deref().unwrap_or_default();
        let end = input.expiries.get(feature).copied();
        for attempt in &op.attempts {
            let refused_expired =
                attempt.outcome == EventType::Fail && attempt.detail.as_deref() == Some("expired");
            let granted = attempt.outcome == EventType::Ok;
            if !(refused_expired || granted) || (end.is_none() && granted) {
                continue;
            }
            tally.checked += 1;
            let invoke = attempt.invoke_us as i64;
            let complete = attempt.complete_us.min(i64::MAX as u64) as i64;
            match end {
                None => tally.violation(format!(
                    "{} was refused as expired at {}, but {feature} never expires",
                    op.describe(),
                    secs(attempt.complete_us)
                )),
                Some(end) if refused_expired && complete < end - tolerance => {
                    tally.violation(format!(
                        "{} was refused as expired at {}, {:.1} s before {feature} ends in true time",
                        op.describe(),
                        secs(attempt.complete_us),
                        (end - complete) as f64 / 1e6
                    ))
                }
                Some(end) if granted && invoke > end + tolerance => tally.violation(format!(
                    "{} was granted on an attempt sent at {}, {:.1} s after {feature} ended in true time",
                    op.describe(),
                    secs(attempt.invoke_us),
                    (invoke - end) as f64 / 1e6
                )),
                Some(_) => {}
            }
        }
    }
    tally.finish()
}

/// No leaked seat: the last answered drain read holds no grant and no seat
/// in use.
fn check_drain(
    events: &[Event],
    ops: &[Op],
    input: &CheckInput,
    verdict: &mut Verdict,
) -> InvariantResult {
    let mut tally = Tally::new(LEAK);
    let start = events
        .iter()
        .find(|e| e.op == OpKind::Drain && e.kind == EventType::Info);
    let answered: Vec<&Attempt> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Drain)
        .flat_map(|o| o.attempts.iter())
        .filter(|a| a.outcome == EventType::Ok && a.grants.is_some())
        .collect();
    let drained = start.is_some() || !answered.is_empty();
    if !(drained || input.expect_drain) {
        return tally.finish();
    }
    let mut finding = DrainFinding {
        started_us: start.map(|e| e.time_us),
        plan: start.and_then(|e| e.detail.clone()),
        reads: answered.len() as u64,
        ..DrainFinding::default()
    };
    let Some(last) = answered.iter().max_by_key(|a| a.invoke_us) else {
        tally.violation(match start {
            Some(e) => format!(
                "no drain read could be made: the clients stopped at {} and no node answered Status after the wait",
                secs(e.time_us)
            ),
            None => "the run ended without a drain (no drain read in the history)".into(),
        });
        verdict.drain = Some(finding);
        return tally.finish();
    };
    finding.read_us = Some(last.invoke_us);
    finding.grants = last.grants.clone().unwrap_or_default();
    finding.in_use = last.in_use.clone();
    // Every session of the run must have let go of everything.
    let sessions: BTreeSet<&str> = ops.iter().filter_map(|o| o.session.as_deref()).collect();
    tally.checked = sessions.len() as u64 + finding.in_use.len() as u64;
    let waited = finding.started_us.map_or(String::new(), |s| {
        format!(
            ", {} after the clients stopped",
            secs(last.invoke_us.saturating_sub(s))
        )
    });
    for grant in &finding.grants {
        tally.violation(format!(
            "the drain read sent at {}{waited} still holds grant {} ({} × {} of session {}): a seat leaked",
            secs(last.invoke_us),
            grant.token,
            grant.count,
            grant.feature,
            grant.session
        ));
    }
    for (feature, &seats) in &finding.in_use {
        let listed: u32 = finding
            .grants
            .iter()
            .filter(|g| &g.feature == feature)
            .map(|g| g.count)
            .sum();
        if seats != listed {
            tally.violation(format!(
                "the drain read sent at {}{waited} counts {seats} seats of {feature} in use, but its grants hold {listed}",
                secs(last.invoke_us)
            ));
        }
    }
    verdict.drain = Some(finding);
    tally.finish()
}

/// `available-never-overstated`: a check-out's reply never says more seats
/// are free than can be — the seats licensed, less every grant of the
/// feature certainly held over the whole operation (so at the moment the
/// request was applied, even for a retry answered from the retry table),
/// less its own grant; for a permanent feature whose license never changes,
/// the reply's total is the seats licensed; and an "in use" denial says
/// fewer seats are free than were asked for.
fn check_available(
    ops: &[Op],
    grants: &BTreeMap<Token, GrantLife>,
    input: &CheckInput,
) -> InvariantResult {
    let mut tally = Tally::new(AVAILABLE);
    let mut by_feature: BTreeMap<&str, Vec<&GrantLife>> = BTreeMap::new();
    for grant in grants.values() {
        by_feature.entry(&grant.feature).or_default().push(grant);
    }
    for op in ops.iter().filter(|o| o.kind == OpKind::Checkout) {
        let feature = op.feature.as_deref().unwrap_or_default();
        let Some(&licensed) = input.licensed.get(feature) else {
            continue;
        };
        let fixed = !input.churned.contains(feature) && !input.expiries.contains_key(feature);
        let from = op.first_invoke();
        for attempt in op.attempts.iter().filter(|a| a.answered()) {
            let granted = attempt.outcome == EventType::Ok;
            let in_use = attempt.detail.as_deref() == Some("in-use");
            let (Some(available), Some(total)) = (attempt.available, attempt.total) else {
                continue;
            };
            if !(granted || in_use) {
                continue;
            }
            tally.checked += 1;
            let own = if granted { op.count.unwrap_or(0) } else { 0 };
            let held: u32 = by_feature
                .get(feature)
                .into_iter()
                .flatten()
                .filter(|g| {
                    Some(g.token) != attempt.token && g.held_over(from, attempt.complete_us)
                })
                .map(|g| g.count)
                .sum();
            let most = licensed.saturating_sub(held).saturating_sub(own);
            let sent = secs(attempt.invoke_us);
            if available > most {
                tally.violation(format!(
                    "{} attempt sent at {sent} was answered (term {}) that {available} seats of {feature} are free, but {licensed} are licensed and {held} were certainly held by other grants throughout{}",
                    op.describe(),
                    attempt.term.unwrap_or(0),
                    if own > 0 { format!(", besides the {own} it granted") } else { String::new() }
                ));
            } else if fixed && total != licensed {
                tally.violation(format!(
                    "{} attempt sent at {sent} was answered (term {}) that {total} seats of {feature} are licensed, but the run licenses {licensed}",
                    op.describe(),
                    attempt.term.unwrap_or(0)
                ));
            } else if in_use && available >= op.count.unwrap_or(0) {
                tally.violation(format!(
                    "{} attempt sent at {sent} was denied \"in use\" (term {}) while the reply says {available} seats are free and it asked for {}",
                    op.describe(),
                    attempt.term.unwrap_or(0),
                    op.count.unwrap_or(0)
                ));
            }
        }
    }
    tally.finish()
}

/// `silent-sessions-expire-in-time`: the upper bound of expiry. A session's
/// last possible touch is the end of the last attempt it sent (an attempt
/// that got no answer may still have reached the active node before its
/// deadline). A node that served without a break from `S` must have expired a
/// session silent since `T` by `max(T, S) + TTL + expire_within` (a sweep
/// period and slack). So no grant of the session may be seen after that:
/// neither in a Status read (whose own `serving_for` gives `S`) nor by a
/// check-in answered "released" (judged by the first read sent after its
/// answer, when that read's spell began before the check-in was sent).
/// Sessions whose heartbeats the history does not hold (the applications')
/// are not judged.
fn check_expire_in_time(ops: &[Op], spells: &Spells, input: &CheckInput) -> InvariantResult {
    let mut tally = Tally::new(EXPIRE_IN_TIME);
    if input.expire_within_us == 0 {
        return tally.finish();
    }
    let ttl = input.session_ttl_us;
    // Only sessions whose heartbeats are in the history: an application's
    // client library renews without recording it.
    let heartbeating: BTreeSet<&str> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Renew)
        .filter_map(|o| o.session.as_deref())
        .collect();
    // Per session: attempts by send time, with the running latest end.
    let mut sent: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for op in ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Checkout | OpKind::Checkin | OpKind::Renew))
    {
        let Some(session) = op.session.as_deref().filter(|s| heartbeating.contains(s)) else {
            continue;
        };
        for attempt in &op.attempts {
            sent.entry(session)
                .or_default()
                .push((attempt.invoke_us, attempt.complete_us));
        }
    }
    for list in sent.values_mut() {
        list.sort();
        let mut latest = 0;
        for entry in list.iter_mut() {
            latest = latest.max(entry.1);
            entry.1 = latest;
        }
    }
    // The end of the last attempt the session sent before `at`.
    let last_touch = |session: &str, at: u64| -> Option<u64> {
        let list = sent.get(session)?;
        let k = list.partition_point(|&(invoke, _)| invoke < at);
        k.checked_sub(1).map(|k| list[k].1)
    };
    let due = |touch: u64, spell: u64| {
        touch
            .max(spell)
            .saturating_add(ttl)
            .saturating_add(input.expire_within_us)
    };
    for op in ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Read | OpKind::Drain))
    {
        for attempt in op.attempts.iter().filter(|a| a.answered()) {
            let Some(serving_for) = attempt.serving_for_us else {
                continue;
            };
            let spell = attempt.complete_us.saturating_sub(serving_for);
            for grant in attempt.grants.iter().flatten() {
                let Some(touch) = last_touch(&grant.session, attempt.invoke_us) else {
                    continue;
                };
                if touch == u64::MAX {
                    continue;
                }
                tally.checked += 1;
                let due = due(touch, spell);
                if attempt.invoke_us > due {
                    tally.violation(format!(
                        "{} sent at {} (term {}) still holds grant {} of session {}, silent since {} and served without a break since {}: it was due to expire by {}",
                        op.describe(),
                        secs(attempt.invoke_us),
                        attempt.term.unwrap_or(0),
                        grant.token,
                        grant.session,
                        secs(touch),
                        secs(spell),
                        secs(due)
                    ));
                }
            }
        }
    }
    for op in ops.iter().filter(|o| o.kind == OpKind::Checkin) {
        let Some(session) = op.session.as_deref() else {
            continue;
        };
        for attempt in op
            .attempts
            .iter()
            .filter(|a| a.answered() && a.outcome == EventType::Ok)
        {
            let Some(touch) = last_touch(session, attempt.invoke_us) else {
                continue;
            };
            let Some(read) = spells.first_sent_after(attempt.complete_us) else {
                continue;
            };
            let spell = read.began_no_later();
            if touch == u64::MAX || spell > attempt.invoke_us {
                continue;
            }
            tally.checked += 1;
            let due = due(touch, spell);
            if attempt.invoke_us > due {
                tally.violation(format!(
                    "{} sent at {} was answered (term {}) that grant {} was released, but session {session} was silent since {} and a node served without a break since {}: it was due to expire by {}",
                    op.describe(),
                    secs(attempt.invoke_us),
                    attempt.term.unwrap_or(0),
                    op.token.map_or_else(String::new, |t| t.to_string()),
                    secs(touch),
                    secs(spell),
                    secs(due)
                ));
            }
        }
    }
    tally.finish()
}

/// Node processes end only when the harness ends them, and never panic.
fn check_exits(input: &CheckInput) -> InvariantResult {
    let mut tally = Tally::new(EXIT);
    tally.checked = input.node_starts + input.logs_scanned;
    for exit in &input.exits {
        tally.violation(format!(
            "node {} {}: noticed at {}{}",
            exit.node,
            exit.what,
            secs(exit.noticed_us),
            exit.last_running_us.map_or(String::new(), |t| format!(
                ", last seen running at {}",
                secs(t)
            ))
        ));
    }
    for line in &input.log_panics {
        tally.violation(format!(
            "node {}'s log, line {}: {}",
            line.node, line.line, line.text
        ));
    }
    tally.finish()
}

/// Renewals report what the session does not hold: see the module docs.
fn check_renewal_unknown(ops: &[Op], grants: &BTreeMap<Token, GrantLife>) -> InvariantResult {
    let mut tally = Tally::new(RENEW_UNKNOWN);
    // Every token some answer or read showed to exist: a made-up token that
    // is one of them was not made up after all, and is not judged.
    let mut real: BTreeSet<Token> = grants.keys().copied().collect();
    for op in ops {
        for attempt in &op.attempts {
            real.extend(attempt.token);
            real.extend(attempt.grants.iter().flatten().map(|g| g.token));
        }
    }
    for op in ops.iter().filter(|o| o.kind == OpKind::Renew) {
        let session = op.session.as_deref().unwrap_or_default();
        for attempt in op
            .attempts
            .iter()
            .filter(|a| a.outcome == EventType::Ok && a.answered())
        {
            let mut judge = |token: &Token, kind: &str, why: String| {
                tally.checked += 1;
                if !attempt.unknown_tokens.contains(token) {
                    tally.violation(format!(
                        "{} sent at {} quoted {kind} token {token} ({why}), and the answer (term {}) did not list it as unknown",
                        op.describe(),
                        secs(attempt.invoke_us),
                        attempt.term.unwrap_or(0)
                    ));
                }
            };
            for token in &op.quoted.checked_in {
                let Some(grant) = grants.get(token).filter(|g| g.session == session) else {
                    continue;
                };
                let Some(ok) = grant.checkin_ok_us.filter(|&c| c < attempt.invoke_us) else {
                    continue;
                };
                judge(
                    token,
                    "checked-in",
                    format!(
                        "{}, whose check-in was answered ok at {}",
                        grant.describe(),
                        secs(ok)
                    ),
                );
            }
            for token in &op.quoted.foreign {
                let Some(grant) = grants.get(token).filter(|g| g.session != session) else {
                    continue;
                };
                judge(
                    token,
                    "foreign",
                    format!("{}, never this session's", grant.describe()),
                );
            }
            for token in op.quoted.made_up.iter().filter(|t| !real.contains(t)) {
                judge(token, "made-up", "no check-out was granted it".into());
            }
        }
    }
    tally.finish()
}

/// Impossible answers: see the module docs.
fn check_impossible(ops: &[Op], input: &CheckInput) -> InvariantResult {
    let mut tally = Tally::new(IMPOSSIBLE);
    for op in ops.iter().filter(|o| o.kind == OpKind::Checkout) {
        let feature = op.feature.as_deref().unwrap_or_default();
        let licensed = input.licensed.get(feature).copied();
        let churned = input.churned.contains(feature);
        let planned_end = input.expiries.contains_key(feature);
        let count = op.count.unwrap_or(1);
        // A count the cluster must refuse: none, or more than are licensed.
        let bad = count == 0 || licensed.is_some_and(|l| count > l);
        for attempt in &op.attempts {
            // A reply of the cluster (it carries a term).
            if attempt.term.is_none() {
                continue;
            }
            let granted = attempt.outcome == EventType::Ok;
            let denied = matches!(attempt.outcome, EventType::Fail | EventType::Unknown)
                && attempt.detail.is_some();
            if !(granted || denied) {
                continue;
            }
            let detail = attempt.detail.as_deref().unwrap_or_default();
            let why = if bad {
                let expected = if count == 0 {
                    "bad-count"
                } else {
                    "exceeds-licensed"
                };
                match detail {
                    _ if granted => Some(format!(
                        "granted {count} seats of {feature}, a count the cluster must refuse ({} licensed)",
                        licensed.unwrap_or(0)
                    )),
                    d if d == expected || d == "session-expired" => None,
                    "no-such-feature" if churned || licensed.is_none() => None,
                    "expired" if planned_end => None,
                    other => Some(format!(
                        "denied \"{other}\" for {count} seats of {feature}, which must be refused \"{expected}\""
                    )),
                }
            } else if granted {
                None
            } else {
                match detail {
                    // Requests of a session are sequential: a retry is always of
                    // its latest request, which is inside the retry window.
                    "stale" => Some(
                        "answered \"stale request\", but the session's requests are sequential, so a retry is always of its latest request".to_string(),
                    ),
                    "no-such-feature" if licensed.is_some() && !churned => Some(format!(
                        "denied \"no such feature\", but the run's license has {feature}"
                    )),
                    "expired" | "exceeds-licensed" if licensed.is_some() && !planned_end => Some(format!(
                        "denied \"{detail}\", but {feature} is licensed with every seat permanent and the request asks for at most its seats"
                    )),
                    "bad-count" | "version-not-licensed" | "denied" => Some(format!(
                        "denied \"{detail}\", but the request asks for 1 to {} seats of any version",
                        licensed.unwrap_or(0)
                    )),
                    _ => None,
                }
            };
            tally.checked += 1;
            if let Some(why) = why {
                tally.violation(format!(
                    "{} attempt {} sent at {} was {why} (term {})",
                    op.describe(),
                    1 + op
                        .attempts
                        .iter()
                        .take_while(|a| a.invoke_us < attempt.invoke_us)
                        .count(),
                    secs(attempt.invoke_us),
                    attempt.term.unwrap_or(0)
                ));
            }
        }
    }
    // A grant is released once: a second check-in of it (a new request) that
    // was sent after the first was answered ok must be answered "not held".
    let mut released: BTreeMap<Token, (u64, u64)> = BTreeMap::new();
    let mut checkins: Vec<&Op> = ops.iter().filter(|o| o.kind == OpKind::Checkin).collect();
    checkins.sort_by_key(|o| o.first_invoke());
    for op in checkins {
        let Some(token) = op.token else { continue };
        let Some(ok) = op.first_ok() else { continue };
        if let Some(&(first, at)) = released.get(&token) {
            if at < op.first_invoke() {
                tally.checked += 1;
                tally.violation(format!(
                    "{} released grant {token} at {}, which op {first} had already released at {}",
                    op.describe(),
                    secs(ok.complete_us),
                    secs(at)
                ));
            }
            continue;
        }
        released.insert(token, (op.id, ok.complete_us));
    }
    tally.finish()
}

/// Over-grant: a sweep over the intervals in which grants are certainly
/// held, and every state the cluster showed.
fn check_seats(
    ops: &[Op],
    grants: &BTreeMap<Token, GrantLife>,
    input: &CheckInput,
    verdict: &mut Verdict,
) -> InvariantResult {
    let mut tally = Tally::new(SEATS);
    check_state_seats(ops, input, &mut tally);
    let mut by_feature: BTreeMap<&str, Vec<&GrantLife>> = BTreeMap::new();
    for grant in grants.values() {
        if grant.held_until_us() > grant.granted_us {
            by_feature.entry(&grant.feature).or_default().push(grant);
        }
    }
    for (feature, lives) in by_feature {
        let licensed = input.licensed.get(feature).copied().unwrap_or(0);
        // (time, is_start, token); ends sort before starts at the same time (half-open intervals).
        let mut points: Vec<(u64, bool, Token)> = Vec::new();
        for life in &lives {
            points.push((life.granted_us, true, life.token));
            points.push((life.held_until_us(), false, life.token));
        }
        points.sort();
        let mut live: BTreeSet<Token> = BTreeSet::new();
        let mut held = 0u32;
        let mut peak = 0u32;
        for (time, start, token) in points {
            let count = grants[&token].count;
            if !start {
                if live.remove(&token) {
                    held -= count;
                }
                continue;
            }
            live.insert(token);
            held += count;
            tally.checked += 1;
            peak = peak.max(held);
            if held > licensed {
                let list: Vec<String> = live.iter().map(|t| grants[t].describe()).collect();
                tally.violation(format!(
                    "feature {feature} has {licensed} seats licensed, but at {} these grants were all certainly held ({held} seats): {}",
                    secs(time),
                    list.join("; ")
                ));
            }
        }
        verdict.peak_seats.insert(feature.to_string(), peak);
    }
    tally.finish()
}

/// Over-grant in the states the cluster showed: every grant a Status read or
/// a node's own store holds counts, acknowledged or not (a check-out that
/// timed out but committed holds seats as surely as one answered `ok`).
fn check_state_seats(ops: &[Op], input: &CheckInput, tally: &mut Tally) {
    let mut judge = |grants: &[GrantSeen], what: String| {
        let mut seats: BTreeMap<&str, u32> = BTreeMap::new();
        for grant in grants {
            *seats.entry(&grant.feature).or_default() += grant.count;
        }
        for (feature, held) in seats {
            let Some(&licensed) = input.licensed.get(feature) else {
                continue;
            };
            tally.checked += 1;
            if held > licensed {
                tally.violation(format!(
                    "{what} holds grants of {held} seats of {feature}, which has {licensed} licensed"
                ));
            }
        }
    };
    for op in ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Read | OpKind::Drain))
    {
        for attempt in op.attempts.iter().filter(|a| a.answered()) {
            if let Some(grants) = &attempt.grants {
                judge(
                    grants,
                    format!(
                        "{} sent at {} (term {})",
                        op.describe(),
                        secs(attempt.invoke_us),
                        attempt.term.unwrap_or(0)
                    ),
                );
            }
        }
    }
    for replica in input.replicas.iter().filter(|r| r.error.is_none()) {
        judge(
            &replica.grants,
            format!("node {}'s store at index {}", replica.node, replica.index),
        );
    }
}

/// Lost grants seen by answers during the run: renewals, check-ins, session-expired replies.
fn check_lost(ops: &[Op], grants: &BTreeMap<Token, GrantLife>, tally: &mut Tally) {
    // The first check-in op of each grant: its attempts must not say "not held".
    let mut first_checkin: BTreeMap<Token, &Op> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.kind == OpKind::Checkin) {
        if let Some(token) = op.token {
            let entry = first_checkin.entry(token).or_insert(op);
            if op.first_invoke() < entry.first_invoke() {
                *entry = op;
            }
        }
    }
    let mut by_session: BTreeMap<&str, Vec<&GrantLife>> = BTreeMap::new();
    for grant in grants.values() {
        by_session.entry(&grant.session).or_default().push(grant);
    }
    for op in ops {
        for attempt in op.attempts.iter().filter(|a| a.answered()) {
            let (from, to) = (attempt.invoke_us, attempt.complete_us);
            if op.kind == OpKind::Renew && attempt.outcome == EventType::Ok {
                // Only the tokens quoted as held: the probes (checked in,
                // foreign, made up) are `renewal-reports-unknown`'s.
                for token in attempt
                    .unknown_tokens
                    .iter()
                    .filter(|t| op.quoted.held.contains(t))
                {
                    let Some(grant) = grants.get(token) else {
                        continue;
                    };
                    tally.checked += 1;
                    if grant.held_over(from, to) {
                        tally.violation(format!(
                            "{} sent at {} was answered (term {}) that {} is not held, but it was never checked in and its session could not have expired before {}",
                            op.describe(),
                            secs(from),
                            attempt.term.unwrap_or(0),
                            grant.describe(),
                            secs(grant.expiry_lb_us)
                        ));
                    }
                }
            }
            if op.kind == OpKind::Checkin
                && attempt.outcome == EventType::Fail
                && let Some(grant) = op.token.and_then(|t| grants.get(&t))
                && first_checkin.get(&grant.token).map(|o| o.id) == Some(op.id)
            {
                tally.checked += 1;
                if grant.granted_us <= op.first_invoke() && to <= grant.expiry_lb_us {
                    // A retry answered "not held" after an unknown attempt means the
                    // retry was applied again (the first attempt released the grant).
                    let retried = op
                        .attempts
                        .iter()
                        .take_while(|a| a.invoke_us < from)
                        .any(|a| a.outcome == EventType::Unknown);
                    tally.violation(format!(
                        "{} attempt sent at {} was answered (term {}) that {} is not held, but this is its first check-in and its session could not have expired before {}{}",
                        op.describe(),
                        secs(from),
                        attempt.term.unwrap_or(0),
                        grant.describe(),
                        secs(grant.expiry_lb_us),
                        if retried {
                            " (a retry after an unknown attempt: either the grant was lost or the retry was applied a second time)"
                        } else {
                            ""
                        }
                    ));
                }
            }
            if attempt.outcome == EventType::Fail
                && attempt.detail.as_deref() == Some("session-expired")
                && let Some(session) = op.session.as_deref()
            {
                for grant in by_session.get(session).into_iter().flatten() {
                    tally.checked += 1;
                    if grant.held_over(from, to) {
                        tally.violation(format!(
                            "{} sent at {} was answered (term {}) that session {session} expired, while {} was certainly held (its session could not have expired before {})",
                            op.describe(),
                            secs(from),
                            attempt.term.unwrap_or(0),
                            grant.describe(),
                            secs(grant.expiry_lb_us)
                        ));
                    }
                }
            }
        }
    }
}

/// Final states: status reads (lost, phantom, zombie grants) and replicas (phantom grants).
fn check_final_states(
    ops: &[Op],
    grants: &BTreeMap<Token, GrantLife>,
    input: &CheckInput,
    phantom: &mut Tally,
    double: &mut Tally,
    lost: &mut Tally,
) {
    // Unresolved check-outs per session: each may explain one grant nobody was told about.
    let mut unknown_checkouts: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    // Resolved check-outs that were retried: a second application would look like this.
    let mut retried: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut sessions: BTreeSet<&str> = BTreeSet::new();
    for op in ops {
        if let Some(session) = op.session.as_deref() {
            sessions.insert(session);
        }
        if op.kind != OpKind::Checkout {
            continue;
        }
        let Some(session) = op.session.as_deref() else {
            continue;
        };
        match op.outcome() {
            EventType::Unknown => unknown_checkouts.entry(session).or_default().push(op),
            _ if op.attempts.len() > 1 => retried.entry(session).or_default().push(op),
            _ => {}
        }
        // Under the sessions it left, the op's outcome is unknown.
        for earlier in &op.earlier_sessions {
            sessions.insert(earlier.as_str());
            unknown_checkouts
                .entry(earlier.as_str())
                .or_default()
                .push(op);
        }
    }

    let mut states: Vec<(String, u64, u64, &[GrantSeen], bool)> = Vec::new();
    for op in ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Read | OpKind::Drain))
    {
        for attempt in &op.attempts {
            if attempt.outcome == EventType::Ok
                && let Some(seen) = attempt.grants.as_deref()
            {
                states.push((
                    format!("{} sent at {}", op.describe(), secs(attempt.invoke_us)),
                    attempt.invoke_us,
                    attempt.complete_us,
                    seen,
                    true,
                ));
            }
        }
    }
    for replica in input.replicas.iter().filter(|r| r.error.is_none()) {
        states.push((
            format!(
                "node {}'s own store at log index {}",
                replica.node, replica.index
            ),
            input.replicas_read_us,
            input.replicas_read_us,
            &replica.grants,
            false,
        ));
    }

    for (what, from, to, seen, is_read) in states {
        let present: BTreeSet<Token> = seen.iter().map(|g| g.token).collect();
        if is_read {
            for grant in grants.values() {
                if grant.granted_us > from {
                    continue;
                }
                lost.checked += 1;
                if grant.held_over(from, to) && !present.contains(&grant.token) {
                    lost.violation(format!(
                        "{what} does not hold {}, which was never checked in and whose session could not have expired before {}",
                        grant.describe(),
                        secs(grant.expiry_lb_us)
                    ));
                }
            }
        }
        let mut unexplained: Vec<&GrantSeen> = Vec::new();
        for seen_grant in seen {
            phantom.checked += 1;
            match grants.get(&seen_grant.token) {
                Some(grant) => {
                    if grant.session != seen_grant.session
                        || grant.feature != seen_grant.feature
                        || grant.count != seen_grant.count
                    {
                        phantom.violation(format!(
                            "{what} holds grant {} as {} × {} for session {}, but it was granted as {}",
                            seen_grant.token,
                            seen_grant.count,
                            seen_grant.feature,
                            seen_grant.session,
                            grant.describe()
                        ));
                    } else if is_read && grant.checkin_ok_us.is_some_and(|c| c < from) {
                        phantom.violation(format!(
                            "{what} still holds {}, whose check-in was answered ok at {}",
                            grant.describe(),
                            secs(grant.checkin_ok_us.unwrap_or(0))
                        ));
                    }
                }
                None => unexplained.push(seen_grant),
            }
        }
        // Match unexplained grants one-to-one to unresolved check-outs of their session.
        let mut used: BTreeSet<u64> = BTreeSet::new();
        for seen_grant in unexplained {
            if !sessions.contains(seen_grant.session.as_str()) {
                phantom.violation(format!(
                    "{what} holds grant {} ({} × {}) for session {}, which no client of this run ever used",
                    seen_grant.token, seen_grant.count, seen_grant.feature, seen_grant.session
                ));
                continue;
            }
            let candidate = unknown_checkouts
                .get(seen_grant.session.as_str())
                .into_iter()
                .flatten()
                .find(|op| {
                    !used.contains(&op.id)
                        && op.feature.as_deref() == Some(seen_grant.feature.as_str())
                        && op.count == Some(seen_grant.count)
                        && op.first_invoke() <= to
                });
            if let Some(op) = candidate {
                used.insert(op.id);
                continue;
            }
            let retry = retried
                .get(seen_grant.session.as_str())
                .into_iter()
                .flatten()
                .find(|op| {
                    op.feature.as_deref() == Some(seen_grant.feature.as_str())
                        && op.count == Some(seen_grant.count)
                });
            match retry {
                Some(op) => double.violation(format!(
                    "{what} holds grant {} ({} × {}) of session {} that no ok or unknown check-out explains; {} was retried ({} attempts, outcome {:?}) and was applied twice",
                    seen_grant.token,
                    seen_grant.count,
                    seen_grant.feature,
                    seen_grant.session,
                    op.describe(),
                    op.attempts.len(),
                    op.outcome()
                )),
                None => phantom.violation(format!(
                    "{what} holds grant {} ({} × {}) of session {} that no ok or unknown check-out of that session explains",
                    seen_grant.token, seen_grant.count, seen_grant.feature, seen_grant.session
                )),
            }
        }
    }
}

/// Fencing: answers in real-time order never go back to a lower term.
fn check_fencing(ops: &[Op]) -> InvariantResult {
    let mut tally = Tally::new(FENCING);
    let mut answers: Vec<(u64, u64, u64, &Op)> = Vec::new();
    for op in ops {
        for attempt in op.attempts.iter().filter(|a| a.answered()) {
            answers.push((
                attempt.invoke_us,
                attempt.complete_us,
                attempt.term.unwrap_or(0),
                op,
            ));
        }
    }
    answers.sort_by_key(|&(invoke, complete, _, op)| (invoke, complete, op.id));
    let mut completions: BinaryHeap<Reverse<(u64, usize)>> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| Reverse((a.1, i)))
        .collect();
    // The highest term among answers completed so far, and which answer it was.
    let mut highest: Option<usize> = None;
    for &(invoke, _, term, op) in &answers {
        while let Some(&Reverse((complete, j))) = completions.peek() {
            if complete >= invoke {
                break;
            }
            completions.pop();
            if highest.is_none_or(|h| answers[j].2 > answers[h].2) {
                highest = Some(j);
            }
        }
        tally.checked += 1;
        if let Some(h) = highest
            && term < answers[h].2
        {
            let (h_invoke, h_complete, h_term, h_op) = answers[h];
            tally.violation(format!(
                "{} sent at {} was answered in term {term}, but {} (sent at {}) had already been answered in term {h_term} at {}",
                op.describe(),
                secs(invoke),
                h_op.describe(),
                secs(h_invoke),
                secs(h_complete)
            ));
        }
    }
    tally.finish()
}

/// Reads never go back: see the module docs. One sort and one heap: O(n log n).
fn check_reads(ops: &[Op]) -> InvariantResult {
    let mut tally = Tally::new(READS);
    // Answers that carry an index: (invoke, complete, index, is_read, op).
    let mut answers: Vec<(u64, u64, u64, bool, &Op)> = Vec::new();
    for op in ops {
        let is_read = matches!(op.kind, OpKind::Read | OpKind::Drain);
        let is_write = matches!(op.kind, OpKind::Checkout | OpKind::Checkin);
        if !(is_read || is_write) {
            continue;
        }
        for attempt in &op.attempts {
            let Some(index) = attempt.index else { continue };
            // A read counts when it was answered with a state; a write when
            // the cluster answered it at all (a denial is committed too).
            let counts = if is_read {
                attempt.outcome == EventType::Ok
            } else {
                attempt.term.is_some()
            };
            if counts {
                answers.push((attempt.invoke_us, attempt.complete_us, index, is_read, op));
            }
        }
    }
    answers.sort_by_key(|&(invoke, complete, _, _, op)| (invoke, complete, op.id));
    let mut completions: BinaryHeap<Reverse<(u64, usize)>> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| Reverse((a.1, i)))
        .collect();
    // The answer with the highest index among those completed so far.
    let mut highest: Option<usize> = None;
    for &(invoke, _, index, is_read, op) in &answers {
        while let Some(&Reverse((complete, j))) = completions.peek() {
            if complete >= invoke {
                break;
            }
            completions.pop();
            if highest.is_none_or(|h| answers[j].2 > answers[h].2) {
                highest = Some(j);
            }
        }
        if !is_read {
            continue;
        }
        tally.checked += 1;
        if let Some(h) = highest
            && index < answers[h].2
        {
            let (h_invoke, h_complete, h_index, h_read, h_op) = answers[h];
            let what = if h_read {
                "showed applied index"
            } else {
                "was applied at index"
            };
            tally.violation(format!(
                "{} sent at {} showed applied index {index}, but {} (sent at {}) {what} {h_index} and was answered at {}, before this read was sent",
                op.describe(),
                secs(invoke),
                h_op.describe(),
                secs(h_invoke),
                secs(h_complete)
            ));
        }
    }
    tally.finish()
}

/// Live states: every node answered, all at one applied index, with one
/// digest; and a node's live digest equals its replayed store's where both
/// are at the same index.
fn check_live(live: &[LiveView], replicas: &[ReplicaView]) -> InvariantResult {
    let mut tally = Tally::new(LIVE);
    for view in live {
        tally.checked += 1;
        if let Some(error) = &view.error {
            tally.violation(format!("node {}: {error}", view.node));
        }
    }
    let answered: Vec<&LiveView> = live.iter().filter(|v| v.error.is_none()).collect();
    let figures = |v: &LiveView| {
        format!(
            "node {} applied {} (committed {}, digest {})",
            v.node, v.applied_index, v.committed_index, v.digest
        )
    };
    if let Some(first) = answered.first() {
        for other in &answered[1..] {
            if other.applied_index != first.applied_index {
                tally.violation(format!(
                    "the nodes did not reach one applied index while the cluster was quiescent: {}; {}",
                    figures(first),
                    figures(other)
                ));
            } else if other.digest != first.digest {
                tally.violation(format!(
                    "nodes {} and {} hold different live license states at applied index {}: {}; {}",
                    first.node,
                    other.node,
                    first.applied_index,
                    figures(first),
                    figures(other)
                ));
            }
        }
    }
    for view in &answered {
        let Some(stored) = replicas
            .iter()
            .find(|r| r.node == view.node && r.error.is_none() && r.index == view.applied_index)
        else {
            continue;
        };
        tally.checked += 1;
        if stored.digest != view.digest {
            tally.violation(format!(
                "node {}'s live state at applied index {} has digest {}, but its store replayed to that index gives {} (the harness replays with its own raftlm: build it from the binary's source)",
                view.node, view.applied_index, view.digest, stored.digest
            ));
        }
    }
    tally.finish()
}

/// `one-entry-per-log-id`: a log id names one entry for the life of the
/// cluster, so every view of every node, at any moment, that holds an entry
/// under a log id holds the same bytes (the same hash). The views are
/// compared across time as well: a node that held one entry under a log id
/// before a power cut and another after it broke the promise even if no
/// other node was asked in between. `checked`: the log ids seen by two
/// nodes or more.
fn check_one_entry_per_log_id(logs: &[LogView]) -> InvariantResult {
    let mut tally = Tally::new(ONE_ENTRY);
    // Per log id: each distinct hash with the first view that showed it, and
    // the nodes that held it.
    type Seen<'a> = (Vec<(&'a str, &'a LogView)>, BTreeSet<usize>);
    let mut by_id: BTreeMap<(u64, u64, u64), Seen> = BTreeMap::new();
    for view in logs.iter().filter(|v| v.error.is_none()) {
        // Term 0 is no leader's: it is the membership entry every pristine
        // node writes for itself when it forms the cluster (openraft's
        // `initialize`, log id (0, 0, 0)), never replicated; with each
        // node's own peer addresses in it (the harness's proxies) the bytes
        // differ by design.
        for entry in view.entries.iter().filter(|e| e.term > 0) {
            let (hashes, nodes) = by_id
                .entry((entry.term, entry.leader, entry.index))
                .or_default();
            nodes.insert(view.node);
            if !hashes.iter().any(|(h, _)| *h == entry.hash) {
                hashes.push((&entry.hash, view));
            }
        }
    }
    for ((term, leader, index), (hashes, nodes)) in &by_id {
        if nodes.len() >= 2 || hashes.len() >= 2 {
            tally.checked += 1;
        }
        if hashes.len() >= 2 {
            let held: Vec<String> = hashes
                .iter()
                .map(|(hash, view)| format!("node {} ({}) holds hash {hash}", view.node, view.when))
                .collect();
            tally.violation(format!(
                "two different entries under log id (term {term}, leader node {leader}, index {index}): {}",
                held.join("; ")
            ));
        }
    }
    tally.finish()
}

/// `states-agree-at-each-index`: entries are applied only once committed,
/// in log order, by a deterministic state machine, so every node's license
/// state right after applying index `i` is the same, whenever it applied
/// it (before or after a restart). Every digest any view reports at an
/// index (the nodes' recent digests asked while they ran, the stores
/// replayed after the run) must be the same. `checked`: the indexes two
/// nodes or more reported.
fn check_states_at_each_index(logs: &[LogView]) -> InvariantResult {
    let mut tally = Tally::new(STATES_AT);
    type Seen<'a> = (Vec<(&'a str, &'a LogView)>, BTreeSet<usize>);
    let mut by_index: BTreeMap<u64, Seen> = BTreeMap::new();
    for view in logs.iter().filter(|v| v.error.is_none()) {
        for (index, digest) in &view.digests {
            let (digests, nodes) = by_index.entry(*index).or_default();
            nodes.insert(view.node);
            if !digests.iter().any(|(d, _)| *d == digest) {
                digests.push((digest, view));
            }
        }
    }
    for (index, (digests, nodes)) in &by_index {
        if nodes.len() >= 2 || digests.len() >= 2 {
            tally.checked += 1;
        }
        if digests.len() >= 2 {
            let held: Vec<String> = digests
                .iter()
                .map(|(digest, view)| {
                    format!(
                        "node {} ({}) reports digest {}",
                        view.node,
                        view.when,
                        &digest[..digest.len().min(16)]
                    )
                })
                .collect();
            tally.violation(format!(
                "different license states after applying index {index}: {}",
                held.join("; ")
            ));
        }
    }
    tally.finish()
}

/// Replicas: every node readable, at the same index, with the same state.
fn check_convergence(replicas: &[ReplicaView]) -> InvariantResult {
    let mut tally = Tally::new(CONVERGE);
    for replica in replicas {
        tally.checked += 1;
        if let Some(error) = &replica.error {
            tally.violation(format!("node {}: {error}", replica.node));
        }
    }
    let readable: Vec<&ReplicaView> = replicas.iter().filter(|r| r.error.is_none()).collect();
    if let Some(first) = readable.first() {
        for other in &readable[1..] {
            if other.index != first.index {
                tally.violation(format!(
                    "node {} was compared at log index {} but node {} at {}",
                    first.node, first.index, other.node, other.index
                ));
            } else if other.digest != first.digest {
                let mine: BTreeSet<Token> = first.grants.iter().map(|g| g.token).collect();
                let theirs: BTreeSet<Token> = other.grants.iter().map(|g| g.token).collect();
                let only = |a: &BTreeSet<Token>, b: &BTreeSet<Token>| {
                    a.difference(b)
                        .map(Token::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                tally.violation(format!(
                    "nodes {} and {} hold different license states at log index {} (digests {} and {}; seats in use {:?} and {:?}; grants only on node {}: [{}]; only on node {}: [{}]; the harness replays each log with its own raftlm, so build it from the binary's source)",
                    first.node,
                    other.node,
                    first.index,
                    first.digest,
                    other.digest,
                    first.in_use,
                    other.in_use,
                    first.node,
                    only(&mine, &theirs),
                    other.node,
                    only(&theirs, &mine)
                ));
            }
        }
    }
    tally.finish()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Faults by type and the time from each to the next answered check-out.
fn unavailability(events: &[Event], ops: &[Op], verdict: &mut Verdict) {
    let mut answered: Vec<(u64, u64)> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Checkout)
        .flat_map(|o| o.attempts.iter().filter(|a| a.answered()))
        .map(|a| (a.invoke_us, a.complete_us))
        .collect();
    answered.sort();
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for event in events {
        if event.op != OpKind::Nemesis
            || event.kind != EventType::Info
            || !event
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("start"))
        {
            continue;
        }
        let kind = event.fault.clone().unwrap_or_else(|| "unknown".into());
        *verdict.faults.entry(kind.clone()).or_default() += 1;
        let entry = verdict.unavailability.entry(kind.clone()).or_default();
        entry.faults += 1;
        let start = answered.partition_point(|&(invoke, _)| invoke < event.time_us);
        let first = answered[start..]
            .iter()
            .map(|&(_, complete)| complete)
            .min();
        if let Some(complete) = first {
            entry.recovered += 1;
            times
                .entry(kind)
                .or_default()
                .push((complete - event.time_us) as f64 / 1000.0);
        }
    }
    for (kind, mut list) in times {
        list.sort_by(f64::total_cmp);
        let entry = verdict.unavailability.entry(kind).or_default();
        entry.p50_ms = percentile(&list, 50.0);
        entry.p99_ms = percentile(&list, 99.0);
        entry.max_ms = list.last().copied().unwrap_or(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL_US: u64 = 10_000_000;

    /// Builds histories tersely: times in ms.
    struct Builder {
        events: Vec<Event>,
        next_id: u64,
    }

    fn token(term: u64, index: u64) -> Token {
        Token {
            term,
            index,
            slot: 0,
        }
    }

    fn session(n: u64) -> String {
        crate::history::session_hex(n)
    }

    impl Builder {
        fn new() -> Builder {
            // Ids below 1000 are free for tests that pick them by hand.
            Builder {
                events: Vec::new(),
                next_id: 1000,
            }
        }

        fn push(&mut self, at_ms: u64, mut event: Event) {
            event.time_us = at_ms * 1000;
            self.events.push(event);
        }

        fn base(&self, kind: EventType, op: OpKind, id: u64, s: u64, attempt: u32) -> Event {
            let mut e = Event::new(&format!("s{s}"), kind, op, id);
            e.session = Some(session(s));
            e.attempt = Some(attempt);
            e
        }

        /// One attempt of a check-out; `result` None means unknown.
        #[allow(clippy::too_many_arguments)]
        fn checkout_attempt(
            &mut self,
            id: u64,
            attempt: u32,
            s: u64,
            feature: &str,
            count: u32,
            from_ms: u64,
            to_ms: u64,
            result: Option<(u64, Option<Token>)>,
        ) {
            let mut invoke = self.base(EventType::Invoke, OpKind::Checkout, id, s, attempt);
            invoke.seq = Some(id);
            invoke.feature = Some(feature.into());
            invoke.count = Some(count);
            self.push(from_ms, invoke);
            let kind = match result {
                Some((_, Some(_))) => EventType::Ok,
                Some((_, None)) => EventType::Fail,
                None => EventType::Unknown,
            };
            let mut done = self.base(kind, OpKind::Checkout, id, s, attempt);
            done.seq = Some(id);
            if let Some((term, t)) = result {
                done.term = Some(term);
                done.token = t;
                if t.is_none() {
                    done.detail = Some("in-use".into());
                }
            }
            self.push(to_ms, done);
        }

        #[allow(clippy::too_many_arguments)]
        fn checkout(
            &mut self,
            s: u64,
            feature: &str,
            count: u32,
            from_ms: u64,
            to_ms: u64,
            term: u64,
            t: Token,
        ) -> u64 {
            let id = self.next_id;
            self.next_id += 1;
            self.checkout_attempt(
                id,
                1,
                s,
                feature,
                count,
                from_ms,
                to_ms,
                Some((term, Some(t))),
            );
            id
        }

        fn renew(&mut self, s: u64, from_ms: u64, to_ms: u64, term: u64, unknown: Vec<Token>) {
            let id = self.next_id;
            self.next_id += 1;
            // Quoting (as held) what it is answered unknown, as a real renewal would.
            let mut invoke = self.base(EventType::Invoke, OpKind::Renew, id, s, 1);
            invoke.tokens = unknown.clone();
            self.push(from_ms, invoke);
            let mut done = self.base(EventType::Ok, OpKind::Renew, id, s, 1);
            done.term = Some(term);
            done.unknown_tokens = unknown;
            self.push(to_ms, done);
        }

        fn checkin(&mut self, s: u64, t: Token, from_ms: u64, to_ms: u64, term: u64, ok: bool) {
            let id = self.next_id;
            self.next_id += 1;
            let mut invoke = self.base(EventType::Invoke, OpKind::Checkin, id, s, 1);
            invoke.token = Some(t);
            self.push(from_ms, invoke);
            let kind = if ok { EventType::Ok } else { EventType::Fail };
            let mut done = self.base(kind, OpKind::Checkin, id, s, 1);
            done.term = Some(term);
            self.push(to_ms, done);
        }

        fn read(&mut self, from_ms: u64, to_ms: u64, term: u64, grants: Vec<GrantSeen>) {
            let id = self.next_id;
            self.next_id += 1;
            let mut invoke = Event::new("harness", EventType::Invoke, OpKind::Read, id);
            invoke.attempt = Some(1);
            self.push(from_ms, invoke);
            let mut done = Event::new("harness", EventType::Ok, OpKind::Read, id);
            done.attempt = Some(1);
            done.term = Some(term);
            done.grants = Some(grants);
            self.push(to_ms, done);
        }

        fn fault(&mut self, at_ms: u64, kind: &str) {
            let mut e = Event::new("nemesis", EventType::Info, OpKind::Nemesis, 0);
            e.fault = Some(kind.into());
            e.detail = Some(format!("start {kind}"));
            self.push(at_ms, e);
        }

        fn check(&mut self, licensed: &[(&str, u32)]) -> Verdict {
            self.events.sort_by_key(|e| e.time_us);
            let input = CheckInput {
                licensed: licensed.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
                session_ttl_us: TTL_US,
                replicas: Vec::new(),
                replicas_read_us: 0,
                ..CheckInput::default()
            };
            check(&self.events, &input)
        }
    }

    fn seen(t: Token, s: u64, feature: &str, count: u32) -> GrantSeen {
        GrantSeen {
            token: t,
            session: session(s),
            feature: feature.into(),
            count,
        }
    }

    fn result<'a>(verdict: &'a Verdict, name: &str) -> &'a InvariantResult {
        verdict.invariants.iter().find(|i| i.name == name).unwrap()
    }

    fn failing(verdict: &Verdict) -> Vec<&str> {
        verdict
            .invariants
            .iter()
            .filter(|i| !i.passed)
            .map(|i| i.name.as_str())
            .collect()
    }

    // An application's check-out whose answer was lost while its session
    // expired is retried by its client library under a new session and
    // denied there: a grant the old session held meanwhile is explained (the
    // old session's attempt is unknown), not a phantom.
    #[test]
    fn a_check_out_that_changed_sessions_explains_the_old_sessions_grant() {
        let mut b = Builder::new();
        let t = Token {
            term: 17,
            index: 448,
            slot: 0,
        };
        let mut invoke = b.base(EventType::Invoke, OpKind::Checkout, 500, 1, 1);
        invoke.seq = Some(1);
        invoke.feature = Some("fem".into());
        invoke.count = Some(1);
        b.push(100, invoke);
        b.read(200, 210, 17, vec![seen(t, 1, "fem", 1)]);
        let mut denied = b.base(EventType::Fail, OpKind::Checkout, 500, 2, 1);
        denied.seq = Some(1);
        denied.detail = Some("in-use".into());
        b.push(9_000, denied);
        let verdict = b.check(&[("fem", 1)]);
        assert_eq!(
            result(&verdict, PHANTOM).violations,
            0,
            "{:?}",
            failing(&verdict)
        );
    }

    /// A history where everything went right: grants, a renewal, check-ins, an
    /// unknown check-out that shows up in the final read, and expiry of an
    /// abandoned session freeing its seat.
    fn good_history() -> Builder {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.checkout(2, "cad", 1, 5, 20, 2, token(2, 6));
        h.renew(1, 1000, 1010, 2, vec![]);
        h.checkin(1, token(2, 5), 2000, 2010, 2, true);
        // Session 3 abandons its grant; after its TTL the seat is free again.
        h.checkout(3, "cad", 1, 2100, 2110, 2, token(2, 8));
        // Unknown check-out of session 2 that was applied.
        h.checkout_attempt(99, 1, 2, "cad", 1, 3000, 4000, None);
        h.fault(2500, "kill");
        h.checkout(4, "cad", 1, 15_000, 15_010, 3, token(3, 20));
        h.renew(2, 15_100, 15_110, 3, vec![]);
        h.read(
            15_200,
            15_210,
            3,
            vec![
                seen(token(2, 6), 2, "cad", 1),
                seen(token(2, 9), 2, "cad", 1),
                seen(token(3, 20), 4, "cad", 1),
            ],
        );
        h
    }

    // A correct history passes every invariant, and the figures add up.
    #[test]
    fn good_history_passes() {
        let verdict = good_history().check(&[("cad", 3)]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(verdict.grants, 4);
        assert_eq!(verdict.operations["checkout"].unknown, 1);
        assert_eq!(verdict.faults["kill"], 1);
        let kill = &verdict.unavailability["kill"];
        assert_eq!(kill.recovered, 1);
        // The first answered check-out sent after the fault at 2.5 s ends at 15.01 s.
        assert_eq!(kill.max_ms, 12_510.0);
        assert_eq!(verdict.peak_seats["cad"], 2);
    }

    // Over-grant: three grants of a two-seat feature certainly held at once are reported.
    #[test]
    fn over_grant_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.checkout(2, "cad", 1, 20, 30, 2, token(2, 6));
        h.checkout(3, "cad", 1, 40, 50, 2, token(2, 7));
        let verdict = h.check(&[("cad", 2)]);
        assert_eq!(failing(&verdict), vec![SEATS]);
        let seats = result(&verdict, SEATS);
        assert_eq!(seats.violations, 1);
        assert!(
            seats.examples[0].contains("3 seats"),
            "{:?}",
            seats.examples
        );
    }

    // A grant whose check-in was sent, or whose session may have expired, no longer counts.
    #[test]
    fn released_or_expirable_grants_do_not_count() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        // Check-in sent at 100 ms; its answer is lost (unknown).
        let id = 50;
        let mut invoke = h.base(EventType::Invoke, OpKind::Checkin, id, 1, 1);
        invoke.token = Some(token(2, 5));
        h.push(100, invoke);
        h.push(900, h.base(EventType::Unknown, OpKind::Checkin, id, 1, 1));
        h.checkout(2, "cad", 1, 200, 210, 2, token(2, 6));
        // Session 3's grant: silent, may expire 10 s after its check-out was sent.
        h.checkout(3, "sim", 1, 0, 10, 2, token(2, 7));
        h.checkout(4, "sim", 1, 10_001, 10_020, 2, token(2, 8));
        let verdict = h.check(&[("cad", 1), ("sim", 1)]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
    }

    // Renewals keep a session's grants certainly held past one TTL.
    #[test]
    fn renewals_extend_certain_holding() {
        let mut h = Builder::new();
        h.checkout(1, "sim", 1, 0, 10, 2, token(2, 5));
        for k in 1..=3 {
            h.renew(1, k * 5_000, k * 5_000 + 10, 2, vec![]);
        }
        h.checkout(2, "sim", 1, 16_000, 16_010, 2, token(2, 6));
        let verdict = h.check(&[("sim", 1)]);
        assert_eq!(failing(&verdict), vec![SEATS], "{verdict:#?}");
    }

    // Lost grant: a final read without an acknowledged, held grant is reported.
    #[test]
    fn lost_grant_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.checkout(2, "cad", 1, 0, 10, 2, token(2, 6));
        h.renew(1, 1000, 1010, 3, vec![]);
        h.read(2000, 2010, 3, vec![seen(token(2, 6), 2, "cad", 1)]);
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), vec![LOST]);
        assert!(result(&verdict, LOST).examples[0].contains("2.5.0"));
    }

    // Lost grant seen by a renewal or a check-in answered "not held".
    #[test]
    fn lost_grant_seen_by_renewal_or_checkin_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.renew(1, 1000, 1010, 3, vec![token(2, 5)]);
        h.checkin(1, token(2, 5), 2000, 2010, 3, false);
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), vec![LOST]);
        assert_eq!(result(&verdict, LOST).violations, 2);
    }

    // Phantom grant: a final state holding a grant no check-out explains is reported.
    #[test]
    fn phantom_grant_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.read(
            2000,
            2010,
            3,
            vec![
                seen(token(2, 5), 1, "cad", 1),
                seen(token(2, 7), 1, "cad", 1),
                seen(token(2, 8), 77, "sim", 1),
            ],
        );
        let verdict = h.check(&[("cad", 5), ("sim", 5)]);
        assert_eq!(failing(&verdict), vec![PHANTOM]);
        assert_eq!(result(&verdict, PHANTOM).violations, 2);
    }

    // A checked-in grant still present in a later read is reported.
    #[test]
    fn zombie_grant_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.checkin(1, token(2, 5), 100, 110, 2, true);
        h.read(2000, 2010, 3, vec![seen(token(2, 5), 1, "cad", 1)]);
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), vec![PHANTOM]);
    }

    // Double grant: one request id answered with two different grants is reported,
    // and so is a final state only a second application of a retried request explains.
    #[test]
    fn double_grant_for_one_request_is_reported() {
        let mut h = Builder::new();
        h.checkout_attempt(1, 1, 1, "cad", 1, 0, 10, Some((2, Some(token(2, 5)))));
        h.checkout_attempt(1, 2, 1, "cad", 1, 20, 30, Some((2, Some(token(2, 6)))));
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), vec![DOUBLE]);

        let mut h = Builder::new();
        h.checkout_attempt(1, 1, 1, "cad", 1, 0, 1000, None);
        h.checkout_attempt(1, 2, 1, "cad", 1, 1000, 1010, Some((3, Some(token(3, 9)))));
        h.read(
            2000,
            2010,
            3,
            vec![
                seen(token(3, 9), 1, "cad", 1),
                seen(token(2, 8), 1, "cad", 1),
            ],
        );
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), vec![DOUBLE], "{verdict:#?}");
    }

    // Stale term: an answer in a lower term than one already completed is reported.
    #[test]
    fn stale_term_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 5, token(5, 5));
        h.renew(2, 5, 11, 4, vec![]); // concurrent with the term-5 answer: allowed
        h.checkout(3, "cad", 1, 20, 30, 4, token(4, 6));
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), vec![FENCING]);
        assert_eq!(result(&verdict, FENCING).violations, 1);
    }

    // Replicas with different states at the same index are reported.
    #[test]
    fn diverging_replicas_are_reported() {
        let view = |node, digest: &str, grants: Vec<GrantSeen>| ReplicaView {
            node,
            index: 40,
            last_index: 40,
            committed: Some(40),
            snapshot_index: None,
            digest: digest.into(),
            grants,
            in_use: BTreeMap::new(),
            error: None,
        };
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.events.sort_by_key(|e| e.time_us);
        let mut input = CheckInput {
            licensed: [("cad".to_string(), 5)].into(),
            session_ttl_us: TTL_US,
            replicas: vec![
                view(1, "aa", vec![seen(token(2, 5), 1, "cad", 1)]),
                view(2, "aa", vec![seen(token(2, 5), 1, "cad", 1)]),
            ],
            replicas_read_us: 50_000,
            ..CheckInput::default()
        };
        assert_eq!(failing(&check(&h.events, &input)), Vec::<&str>::new());
        input.replicas.push(view(3, "bb", vec![]));
        let verdict = check(&h.events, &input);
        assert_eq!(failing(&verdict), vec![CONVERGE]);
        assert!(result(&verdict, CONVERGE).examples[0].contains("only on node 1: [2.5.0]"));
    }

    /// Sets the index of the last event (a completion) pushed.
    fn with_index(h: &mut Builder, index: u64) {
        h.events.last_mut().unwrap().index = Some(index);
    }

    // Reads never go back: a read sent after another read was answered must
    // not show a lower applied index (whoever sent them), and a read must
    // show at least the index of every check-out or check-in (a denial too)
    // answered before it was sent; overlapping operations are not ordered.
    #[test]
    fn reads_that_go_back_are_reported() {
        let build = |late_read_index: u64, read_after_write_index: u64| {
            let mut h = Builder::new();
            h.read(0, 10, 2, vec![]);
            with_index(&mut h, 10);
            // Overlaps the first read: a lower index is allowed.
            h.read(5, 20, 2, vec![]);
            with_index(&mut h, 8);
            // Sent after the first was answered.
            h.read(30, 40, 2, vec![]);
            with_index(&mut h, late_read_index);
            // A denied check-out applied at 20, then a read.
            h.checkout_attempt(7, 1, 1, "cad", 1, 50, 60, Some((2, None)));
            with_index(&mut h, 20);
            h.read(70, 80, 2, vec![]);
            with_index(&mut h, read_after_write_index);
            // A read without an index (an old history) is not judged.
            h.read(90, 100, 2, vec![]);
            h.check(&[("cad", 5)])
        };
        let verdict = build(10, 20);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, READS).checked, 4);

        let verdict = build(9, 19);
        assert_eq!(failing(&verdict), vec![READS], "{verdict:#?}");
        let reads = result(&verdict, READS);
        assert_eq!(reads.violations, 2, "{reads:?}");
        assert!(
            reads.examples[0].contains("showed applied index 9")
                && reads.examples[0].contains("showed applied index 10"),
            "{reads:?}"
        );
        assert!(
            reads.examples[1].contains("checkout op 7")
                && reads.examples[1].contains("was applied at index 20"),
            "{reads:?}"
        );
    }

    // An old history line without the index field still parses.
    #[test]
    fn histories_without_indices_still_parse() {
        let line = r#"{"time_us":5,"process":"reader","type":"ok","op":"read","id":3,"term":2}"#;
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!(event.index, None);
    }

    // Live states converge: nodes at one applied index must report one
    // digest; a differing digest, a node left behind, a node that did not
    // answer, and a live digest that differs from the node's own replayed
    // store at the same index are reported with the figures.
    #[test]
    fn diverging_live_states_are_reported() {
        let live = |node, applied_index, digest: &str| LiveView {
            node,
            applied_index,
            committed_index: applied_index,
            digest: digest.into(),
            error: None,
        };
        let stored = |node, index, digest: &str| ReplicaView {
            node,
            index,
            last_index: index,
            committed: Some(index),
            snapshot_index: None,
            digest: digest.into(),
            grants: Vec::new(),
            in_use: BTreeMap::new(),
            error: None,
        };
        let check_live_input = |live: Vec<LiveView>, replicas: Vec<ReplicaView>| {
            let input = CheckInput {
                live,
                replicas,
                ..CheckInput::default()
            };
            check(&[], &input)
        };
        let same = vec![live(1, 40, "aa"), live(2, 40, "aa"), live(3, 40, "aa")];
        let replicas = vec![
            stored(1, 40, "aa"),
            stored(2, 40, "aa"),
            stored(3, 40, "aa"),
        ];
        let verdict = check_live_input(same.clone(), replicas.clone());
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, LIVE).checked, 6);

        let mut differing = same.clone();
        differing[2].digest = "bb".into();
        let verdict = check_live_input(differing, Vec::new());
        assert_eq!(failing(&verdict), vec![LIVE]);
        let result_live = result(&verdict, LIVE);
        assert_eq!(result_live.violations, 1);
        assert!(
            result_live.examples[0]
                .contains("nodes 1 and 3 hold different live license states at applied index 40")
                && result_live.examples[0].contains("node 3 applied 40 (committed 40, digest bb)"),
            "{result_live:?}"
        );

        let mut behind = same.clone();
        behind[1].applied_index = 39;
        behind[2].error = Some("no answer".into());
        let verdict = check_live_input(behind, Vec::new());
        let result_live = result(&verdict, LIVE);
        assert_eq!(result_live.violations, 2, "{result_live:?}");
        assert!(result_live.examples[0].starts_with("node 3: no answer"));
        assert!(result_live.examples[1].contains("did not reach one applied index"));

        let mut replayed = replicas;
        replayed[0].digest = "cc".into();
        let verdict = check_live_input(same, replayed);
        assert_eq!(failing(&verdict), vec![CONVERGE, LIVE]);
        assert!(
            result(&verdict, LIVE).examples[0]
                .contains("node 1's live state at applied index 40 has digest aa, but its store replayed to that index gives cc")
        );
    }

    // The power-cut divergence: the leader of term 4 (node 3) lost a tail
    // its followers had flushed and committed, led term 4 again and wrote
    // new entries at those indexes. Views of one log id with two hashes, on
    // two nodes or on one node before and after the cut, are violations;
    // equal entries and entries under different log ids are not.
    #[test]
    fn two_entries_under_one_log_id_are_reported() {
        let entry = |index, hash: &str| EntrySeen {
            term: 4,
            leader: 3,
            index,
            hash: hash.into(),
        };
        let view = |node, when: &str, entries: Vec<EntrySeen>| LogView {
            node,
            when: when.into(),
            entries,
            digests: Vec::new(),
            error: None,
        };
        let run = |logs: Vec<LogView>| {
            check(
                &[],
                &CheckInput {
                    logs,
                    ..CheckInput::default()
                },
            )
        };
        let equal = vec![
            view(
                1,
                "power cut 1: serving",
                vec![entry(10, "aa"), entry(11, "bb")],
            ),
            view(
                2,
                "power cut 1: serving",
                vec![entry(10, "aa"), entry(11, "bb")],
            ),
            view(3, "power cut 1: serving", vec![entry(10, "aa")]),
        ];
        let verdict = run(equal.clone());
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, ONE_ENTRY).checked, 2);

        // Node 3 holds other bytes under (4, 3, 11) than nodes 1 and 2.
        let mut diverged = equal.clone();
        diverged.push(view(
            3,
            "power cut 1: 3 s later",
            vec![entry(10, "aa"), entry(11, "cc"), entry(12, "dd")],
        ));
        let verdict = run(diverged);
        assert_eq!(failing(&verdict), vec![ONE_ENTRY]);
        let one = result(&verdict, ONE_ENTRY);
        assert_eq!(one.violations, 1, "{one:?}");
        assert!(
            one.examples[0].contains(
                "two different entries under log id (term 4, leader node 3, index 11): node 1 (power cut 1: serving) holds hash bb; node 3 (power cut 1: 3 s later) holds hash cc"
            ),
            "{one:?}"
        );

        // One node alone, before and after a cut: still two entries under one id.
        let verdict = run(vec![
            view(3, "before", vec![entry(11, "bb")]),
            view(3, "after", vec![entry(11, "cc")]),
        ]);
        assert_eq!(result(&verdict, ONE_ENTRY).violations, 1);

        // The same index under another leader's log id is a different entry.
        let mut other_term = entry(11, "cc");
        other_term.term = 5;
        let verdict = run(vec![
            view(1, "end", vec![entry(11, "bb")]),
            view(2, "end", vec![other_term]),
        ]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");

        // The bootstrap membership (term 0) is each node's own.
        let bootstrap = |hash: &str| EntrySeen {
            term: 0,
            leader: 0,
            index: 0,
            hash: hash.into(),
        };
        let verdict = run(vec![
            view(1, "end", vec![bootstrap("b1")]),
            view(2, "end", vec![bootstrap("b2")]),
        ]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");

        // A view with an error holds nothing to compare.
        let mut unasked = view(3, "end", vec![entry(10, "zz")]);
        unasked.error = Some("no answer".into());
        let mut views = equal;
        views.push(unasked);
        assert_eq!(failing(&run(views)), Vec::<&str>::new());
    }

    // States compared at a common applied index while the cluster runs: a
    // node whose state after applying index 128 differs from another's is
    // reported, even if both later converge; equal digests, and digests at
    // indexes no other node reported, are not.
    #[test]
    fn different_states_at_one_index_are_reported() {
        let view = |node, when: &str, digests: &[(u64, &str)]| LogView {
            node,
            when: when.into(),
            entries: Vec::new(),
            digests: digests.iter().map(|(i, d)| (*i, d.to_string())).collect(),
            error: None,
        };
        let run = |logs: Vec<LogView>| {
            check(
                &[],
                &CheckInput {
                    logs,
                    ..CheckInput::default()
                },
            )
        };
        let equal = vec![
            view(1, "power cut 2: serving", &[(64, "d64"), (128, "d128")]),
            view(2, "power cut 2: serving", &[(128, "d128"), (192, "d192")]),
            view(3, "power cut 2: serving", &[(192, "d192")]),
        ];
        let verdict = run(equal.clone());
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, STATES_AT).checked, 2);

        let mut diverged = equal.clone();
        diverged.push(view(
            3,
            "power cut 2: 3 s later",
            &[(192, "x192"), (256, "d256")],
        ));
        diverged.push(view(1, "end", &[(256, "d256")]));
        let verdict = run(diverged);
        assert_eq!(failing(&verdict), vec![STATES_AT]);
        let at = result(&verdict, STATES_AT);
        assert_eq!((at.violations, at.checked), (1, 3), "{at:?}");
        assert!(
            at.examples[0].contains(
                "different license states after applying index 192: node 2 (power cut 2: serving) reports digest d192; node 3 (power cut 2: 3 s later) reports digest x192"
            ),
            "{at:?}"
        );
    }

    // An unreadable replica fails convergence.
    #[test]
    fn unreadable_replica_is_reported() {
        let input = CheckInput {
            replicas: vec![ReplicaView {
                node: 2,
                index: 0,
                last_index: 0,
                committed: None,
                snapshot_index: None,
                digest: String::new(),
                grants: Vec::new(),
                in_use: BTreeMap::new(),
                error: Some("cannot open".into()),
            }],
            ..Default::default()
        };
        assert_eq!(failing(&check(&[], &input)), vec![CONVERGE]);
    }

    // Nearest-rank percentiles.
    #[test]
    fn percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    // A refusal as expired before the feature ends, or a grant sent after
    // it ended (both beyond the tolerance), is reported; within it, not.
    #[test]
    fn expiry_is_judged_on_true_time() {
        let expired = |h: &mut Builder, id: u64, s: u64, feature: &str, from: u64, to: u64| {
            h.checkout_attempt(id, 1, s, feature, 1, from, to, Some((2, None)));
            let done = h.events.last_mut().unwrap();
            done.detail = Some("expired".into());
        };
        let mut h = Builder::new();
        // "ending" ends at 10 s; tolerance 1 s.
        expired(&mut h, 1, 1, "ending", 9_500, 9_600); // within the tolerance
        expired(&mut h, 2, 2, "ending", 5_000, 5_100); // 4.9 s early: violation
        h.checkout(3, "ending", 1, 8_000, 8_100, 2, token(2, 3)); // before the end
        h.checkout(4, "ending", 1, 10_500, 10_600, 2, token(2, 4)); // within the tolerance
        h.checkout(5, "ending", 1, 12_000, 12_100, 2, token(2, 5)); // 2 s late: violation
        expired(&mut h, 6, 6, "cad", 1_000, 1_100); // never expires: violation
        h.checkout(7, "cad", 1, 1_000, 1_100, 2, token(2, 7)); // not checked
        h.events.sort_by_key(|e| e.time_us);
        let input = CheckInput {
            licensed: [("cad".to_string(), 9), ("ending".to_string(), 9)].into(),
            session_ttl_us: TTL_US,
            expiries: [("ending".to_string(), 10_000_000)].into(),
            expiry_tolerance_us: 1_000_000,
            ..CheckInput::default()
        };
        let verdict = check(&h.events, &input);
        let expiry = result(&verdict, EXPIRY);
        assert_eq!((expiry.checked, expiry.violations), (6, 3), "{expiry:?}");
        assert!(
            expiry.examples[0].contains("4.9 s before ending ends"),
            "{expiry:?}"
        );
        assert!(
            expiry
                .examples
                .iter()
                .any(|e| e.contains("2.0 s after ending ended"))
        );
        assert!(
            expiry
                .examples
                .iter()
                .any(|e| e.contains("cad never expires"))
        );
    }

    // Impossible answers: "stale request" to a sequential session, "no such
    // feature" for a licensed feature and "expired" for a permanent one are
    // reported; the same denials of a feature the license lacks, or whose
    // end the run plans, and pool-exhausted denials are not.
    #[test]
    fn impossible_answers_are_reported() {
        let deny = |h: &mut Builder, id: u64, feature: &str, at: u64, detail: &str| {
            h.checkout_attempt(id, 1, id, feature, 1, at, at + 10, Some((2, None)));
            let done = h.events.last_mut().unwrap();
            done.detail = Some(detail.into());
            if detail == "stale" {
                done.kind = EventType::Unknown;
            }
        };
        let input = |h: &mut Builder| {
            h.events.sort_by_key(|e| e.time_us);
            let input = CheckInput {
                licensed: [("cad".to_string(), 5), ("ending".to_string(), 3)].into(),
                session_ttl_us: TTL_US,
                expiries: [("ending".to_string(), 1_000_000)].into(),
                expiry_tolerance_us: 1_000_000,
                ..CheckInput::default()
            };
            check(&h.events, &input)
        };
        let mut h = Builder::new();
        deny(&mut h, 1, "cad", 100, "in-use");
        deny(&mut h, 2, "ending", 5_000, "expired");
        deny(&mut h, 3, "unlicensed", 200, "no-such-feature");
        // Unknown for lack of an answer: no term, not judged.
        h.checkout_attempt(4, 1, 4, "cad", 1, 300, 1300, None);
        let verdict = input(&mut h);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, IMPOSSIBLE).checked, 3);

        deny(&mut h, 5, "cad", 400, "stale");
        deny(&mut h, 6, "cad", 500, "no-such-feature");
        deny(&mut h, 7, "cad", 600, "bad-count");
        deny(&mut h, 8, "ending", 700, "no-such-feature");
        let verdict = input(&mut h);
        let impossible = result(&verdict, IMPOSSIBLE);
        assert_eq!(
            (impossible.checked, impossible.violations),
            (7, 4),
            "{impossible:?}"
        );
        assert!(
            impossible.examples[0].contains("stale request"),
            "{impossible:?}"
        );
        assert!(impossible.examples[1].contains("license has cad"));
    }

    /// A renewal of session `s` quoting `held` and the probes `[checked in,
    /// foreign, made up]`, answered with `unknown`.
    #[allow(clippy::too_many_arguments)]
    fn renew_quoting(
        h: &mut Builder,
        s: u64,
        from_ms: u64,
        to_ms: u64,
        held: Vec<Token>,
        probes: [Vec<Token>; 3],
        unknown: Vec<Token>,
    ) {
        h.renew(s, from_ms, to_ms, 2, unknown);
        let invoke = h
            .events
            .iter_mut()
            .rev()
            .find(|e| e.kind == EventType::Invoke)
            .unwrap();
        let [checked_in, foreign, made_up] = probes;
        invoke.tokens = held;
        invoke.checked_in_tokens = checked_in;
        invoke.foreign_tokens = foreign;
        invoke.made_up_tokens = made_up;
    }

    // Renewals both ways: a checked-in token (ok answered before the renewal
    // was sent), another session's token and a made-up one must each be
    // answered unknown; a foreign token answered unknown is no lost grant of
    // its holder; a check-in answered after the renewal was sent is not judged.
    #[test]
    fn renewal_must_report_tokens_not_held_as_unknown() {
        let build = |answer_unknown: bool| {
            let mut h = Builder::new();
            h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
            h.checkout(2, "cad", 1, 20, 30, 2, token(2, 6));
            h.checkout(1, "cad", 1, 40, 50, 2, token(2, 7));
            h.checkin(1, token(2, 5), 1000, 1010, 2, true);
            // Sent before the check-in of 2.7 was answered: not judged.
            h.checkin(1, token(2, 7), 1500, 1600, 2, true);
            renew_quoting(
                &mut h,
                1,
                1550,
                1560,
                vec![],
                [vec![token(2, 7)], vec![], vec![]],
                vec![],
            );
            let probes = [
                vec![token(2, 5)],
                vec![token(2, 6)],
                vec![token(1 << 41, 3)],
            ];
            let unknown = if answer_unknown {
                vec![token(2, 5), token(2, 6), token(1 << 41, 3)]
            } else {
                vec![]
            };
            renew_quoting(&mut h, 1, 2000, 2010, vec![], probes, unknown);
            h.read(2100, 2110, 2, vec![seen(token(2, 6), 2, "cad", 1)]);
            h.check(&[("cad", 5)])
        };
        let verdict = build(true);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, RENEW_UNKNOWN).checked, 3);

        let verdict = build(false);
        assert_eq!(failing(&verdict), vec![RENEW_UNKNOWN], "{verdict:#?}");
        let renew = result(&verdict, RENEW_UNKNOWN);
        assert_eq!(renew.violations, 3);
        assert!(
            renew.examples[0].contains("checked-in token 2.5.0"),
            "{renew:?}"
        );
        assert!(renew.examples[1].contains("foreign token 2.6.0"));
        assert!(renew.examples[2].contains("made-up token"));
    }

    // Crashes are violations: a node process that ended without the harness
    // ending it, and a panic in a node's log, are each reported with the
    // node, the time and the line; clean logs and no exits pass.
    #[test]
    fn unexpected_exits_and_panics_are_reported() {
        let log = "2026-12-02T06:00:00.000001Z  INFO raftlm::node: serving\n\
                   thread 'tokio-runtime-worker' panicked at src/license/state.rs:812:9:\n\
                   seats in use 6 > licensed 5 for acme cad\n\
                   2026-12-02T06:00:01.000002Z ERROR raftlm::cli::server: panic: boom; stopping the node\n";
        let panics = panics_in_log(2, log);
        assert_eq!(panics.len(), 2, "{panics:?}");
        assert_eq!(panics[0].line, 2);
        assert!(
            panics[0]
                .text
                .ends_with("seats in use 6 > licensed 5 for acme cad"),
            "{panics:?}"
        );
        assert!(panics_in_log(1, "INFO serving\nINFO stopping\n").is_empty());

        let mut input = CheckInput {
            node_starts: 9,
            logs_scanned: 3,
            ..CheckInput::default()
        };
        let verdict = check(&[], &input);
        assert_eq!(failing(&verdict), Vec::<&str>::new());
        assert_eq!(result(&verdict, EXIT).checked, 12);

        input.exits.push(NodeExit {
            node: 3,
            noticed_us: 21_500_000,
            last_running_us: Some(20_000_000),
            what: "exited on its own (signal: 6 (SIGABRT) (core dumped))".into(),
        });
        input.log_panics = panics;
        let verdict = check(&[], &input);
        assert_eq!(failing(&verdict), vec![EXIT]);
        let exit = result(&verdict, EXIT);
        assert_eq!(exit.violations, 3);
        assert!(
            exit.examples[0].contains("node 3 exited on its own (signal: 6")
                && exit.examples[0].contains("noticed at 21.500 s, last seen running at 20.000 s"),
            "{exit:?}"
        );
        assert!(exit.examples[1].starts_with("node 2's log, line 2: thread"));
    }

    // No leaked seat: after the clients stop and every session could have
    // expired, the drain read must hold no grant and count no seat in use; a
    // read holding a grant, a count its grants do not explain, and a drain
    // with no answered read (or none at all) are reported.
    #[test]
    fn leaked_seats_are_reported() {
        let drain = |grants: Vec<GrantSeen>, in_use: u32, answered: bool| {
            let mut h = Builder::new();
            h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
            let mut start = Event::new("harness", EventType::Info, OpKind::Drain, 0);
            start.detail = Some("start: clients stopped; waiting 16000 ms: …".into());
            h.push(5_000, start);
            let mut invoke = Event::new("harness", EventType::Invoke, OpKind::Drain, 77);
            invoke.attempt = Some(1);
            h.push(21_000, invoke);
            let kind = if answered {
                EventType::Ok
            } else {
                EventType::Unknown
            };
            let mut done = Event::new("harness", kind, OpKind::Drain, 77);
            done.attempt = Some(1);
            if answered {
                done.term = Some(3);
                done.grants = Some(grants);
                done.in_use = Some([("cad".to_string(), in_use)].into());
            }
            h.push(21_010, done);
            h.events.sort_by_key(|e| e.time_us);
            let input = CheckInput {
                licensed: [("cad".to_string(), 5)].into(),
                session_ttl_us: TTL_US,
                expect_drain: true,
                ..CheckInput::default()
            };
            check(&h.events, &input)
        };
        let verdict = drain(vec![], 0, true);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, LEAK).checked, 2);
        let finding = verdict.drain.unwrap();
        assert_eq!(
            (finding.started_us, finding.read_us),
            (Some(5_000_000), Some(21_000_000))
        );

        let verdict = drain(vec![seen(token(2, 5), 1, "cad", 1)], 2, true);
        assert_eq!(failing(&verdict), vec![LEAK], "{verdict:#?}");
        let leak = result(&verdict, LEAK);
        assert_eq!(leak.violations, 2, "{leak:?}");
        assert!(
            leak.examples[0].contains("still holds grant 2.5.0"),
            "{leak:?}"
        );
        assert!(leak.examples[1].contains("counts 2 seats of cad in use, but its grants hold 1"));

        let verdict = drain(vec![], 0, false);
        assert_eq!(failing(&verdict), vec![LEAK]);
        assert!(result(&verdict, LEAK).examples[0].starts_with("no drain read could be made"));

        let input = CheckInput {
            expect_drain: true,
            ..CheckInput::default()
        };
        assert_eq!(failing(&check(&[], &input)), vec![LEAK]);
    }

    /// An answered Status read whose node had served for `serving_ms`.
    fn spell_read(
        h: &mut Builder,
        from_ms: u64,
        to_ms: u64,
        serving_ms: u64,
        grants: Vec<GrantSeen>,
    ) {
        h.read(from_ms, to_ms, 3, grants);
        h.events.last_mut().unwrap().serving_for_ms = Some(serving_ms);
    }

    // The lower bound of expiry leaves out time in which no node served: a
    // session billed for an outage (its grant gone one TTL after its last
    // renewal, although the node that expired it had served for less than
    // that) is a lost grant.
    #[test]
    fn expiry_that_bills_an_outage_is_reported() {
        let history = |outage: bool| {
            let mut h = Builder::new();
            h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
            h.renew(1, 1_000, 1_010, 2, vec![]);
            spell_read(
                &mut h,
                2_000,
                2_010,
                3_000,
                vec![seen(token(2, 5), 1, "cad", 1)],
            );
            if outage {
                // Nothing served from ~2 s to 8.5 s: the node that answers at 9 s
                // had served for only 500 ms.
                spell_read(
                    &mut h,
                    9_000,
                    9_010,
                    500,
                    vec![seen(token(2, 5), 1, "cad", 1)],
                );
            }
            // At 12 s a read no longer holds the grant.
            let serving = if outage { 3_500 } else { 12_000 };
            spell_read(&mut h, 12_000, 12_010, serving, vec![]);
            h.check(&[("cad", 5)])
        };
        // Without the outage, 11 s after the last renewal the session may expire.
        let verdict = history(false);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        // With it, the session could not expire before 8.5 s + TTL = 18.5 s.
        let verdict = history(true);
        assert_eq!(failing(&verdict), vec![LOST], "{verdict:#?}");
        assert_eq!(result(&verdict, LOST).violations, 1, "{verdict:#?}");
    }

    // The upper bound of expiry: a silent session's grant seen long after its
    // TTL ran out, on a node that served all along, is reported — in a read
    // and through a check-in answered "released".
    #[test]
    fn silent_session_kept_too_long_is_reported() {
        let check = |h: &mut Builder| {
            h.events.sort_by_key(|e| e.time_us);
            let input = CheckInput {
                licensed: [("cad".to_string(), 5)].into(),
                session_ttl_us: TTL_US,
                expire_within_us: 2_000_000,
                ..CheckInput::default()
            };
            check(&h.events, &input)
        };
        let history = |serving_ms: u64| {
            let mut h = Builder::new();
            h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
            h.renew(1, 1_000, 1_010, 2, vec![]);
            // Silent from 1.01 s: due to expire by 13.01 s on a node serving since before.
            spell_read(
                &mut h,
                20_000,
                20_010,
                serving_ms,
                vec![seen(token(2, 5), 1, "cad", 1)],
            );
            h
        };
        // The answering node had served only since 15 s: its own TTL runs to 27 s.
        let verdict = check(&mut history(5_010));
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, EXPIRE_IN_TIME).checked, 1);
        // Served since 0 s: the grant should have been gone by 13.01 s.
        let verdict = check(&mut history(30_000));
        assert_eq!(failing(&verdict), vec![EXPIRE_IN_TIME], "{verdict:#?}");
        assert!(
            result(&verdict, EXPIRE_IN_TIME).examples[0].contains("due to expire by 13.010 s"),
            "{verdict:#?}"
        );

        // A late check-in answered "released", judged by the read after it.
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.renew(1, 1_000, 1_010, 2, vec![]);
        h.checkin(1, token(2, 5), 20_000, 20_010, 3, true);
        spell_read(&mut h, 20_100, 20_110, 40_000, vec![]);
        let verdict = check(&mut h);
        assert_eq!(failing(&verdict), vec![EXPIRE_IN_TIME], "{verdict:#?}");
        assert!(result(&verdict, EXPIRE_IN_TIME).examples[0].contains("was released"));
    }

    // A reply that says more seats are free than can be, a total that is not
    // what is licensed, and an "in use" denial with seats to spare are reported.
    #[test]
    fn overstated_availability_is_reported() {
        let answered =
            |h: &mut Builder, s: u64, at: u64, t: Option<Token>, available: u32, total: u32| {
                let id = h.next_id;
                h.next_id += 1;
                h.checkout_attempt(id, 1, s, "cad", 1, at, at + 10, Some((2, t)));
                let done = h.events.last_mut().unwrap();
                done.available = Some(available);
                done.total = Some(total);
            };
        let mut h = Builder::new();
        answered(&mut h, 1, 0, Some(token(2, 5)), 2, 3);
        answered(&mut h, 2, 100, Some(token(2, 6)), 1, 3);
        answered(&mut h, 3, 200, None, 0, 3);
        let verdict = h.check(&[("cad", 3)]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, AVAILABLE).checked, 3);

        let mut h = Builder::new();
        answered(&mut h, 1, 0, Some(token(2, 5)), 2, 3);
        // One other grant is held and this one granted: at most 1 is free, not 2.
        answered(&mut h, 2, 100, Some(token(2, 6)), 2, 3);
        answered(&mut h, 3, 200, None, 1, 3);
        answered(&mut h, 4, 300, None, 0, 4);
        let verdict = h.check(&[("cad", 3)]);
        let available = result(&verdict, AVAILABLE);
        assert_eq!(available.violations, 3, "{available:?}");
        assert!(
            available.examples[0].contains("2 seats of cad are free"),
            "{available:?}"
        );
        assert!(
            available.examples[1].contains("denied \"in use\""),
            "{available:?}"
        );
        assert!(
            available.examples[2].contains("4 seats of cad are licensed"),
            "{available:?}"
        );
    }

    // Counts the cluster must refuse, and a grant released twice.
    #[test]
    fn bad_counts_and_double_releases_are_reported() {
        let mut h = Builder::new();
        let bad = |h: &mut Builder, s: u64, count: u32, at: u64, answer: Result<Token, &str>| {
            let id = h.next_id;
            h.next_id += 1;
            let granted = answer.ok();
            h.checkout_attempt(id, 1, s, "cad", count, at, at + 10, Some((2, granted)));
            if let Err(detail) = answer {
                h.events.last_mut().unwrap().detail = Some(detail.into());
            }
        };
        bad(&mut h, 1, 0, 0, Err("bad-count"));
        bad(&mut h, 2, 9, 100, Err("exceeds-licensed"));
        h.checkout(3, "cad", 1, 200, 210, 2, token(2, 7));
        h.checkin(3, token(2, 7), 300, 310, 2, true);
        h.checkin(3, token(2, 7), 400, 410, 2, false);
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");

        bad(&mut h, 4, 0, 500, Ok(token(2, 9)));
        bad(&mut h, 5, 9, 600, Err("in-use"));
        h.checkin(3, token(2, 7), 700, 710, 2, true);
        let verdict = h.check(&[("cad", 5)]);
        let impossible = result(&verdict, IMPOSSIBLE);
        assert_eq!(impossible.violations, 3, "{impossible:?}");
        assert!(
            impossible.examples[0].contains("granted 0 seats"),
            "{impossible:?}"
        );
        assert!(impossible.examples[1].contains("must be refused \"exceeds-licensed\""));
        assert!(impossible.examples[2].contains("had already released"));
    }

    // Over-grant seen in a state: grants of unknown check-outs count too.
    #[test]
    fn over_grant_in_a_read_state_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        // Two check-outs whose answers were lost, both applied.
        h.checkout_attempt(60, 1, 2, "cad", 1, 20, 1020, None);
        h.checkout_attempt(61, 1, 3, "cad", 1, 30, 1030, None);
        let grants = vec![
            seen(token(2, 5), 1, "cad", 1),
            seen(token(2, 6), 2, "cad", 1),
            seen(token(2, 7), 3, "cad", 1),
        ];
        h.read(2_000, 2_010, 2, grants.clone());
        let verdict = h.check(&[("cad", 3)]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        let verdict = h.check(&[("cad", 2)]);
        assert_eq!(failing(&verdict), vec![SEATS], "{verdict:#?}");
        assert!(result(&verdict, SEATS).examples[0].contains("holds grants of 3 seats of cad"));
    }
}
