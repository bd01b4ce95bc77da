//! The history: every operation the workload and the nemesis performed, as
//! JSON lines in the run directory (`history.jsonl`) and in memory for the
//! checker.
//!
//! One operation (a check-out, a check-in, a renewal, a status read) has an
//! `id` unique in the run. Each *attempt* at it is an `invoke` event followed
//! by exactly one completion: `ok` (the cluster answered and the operation
//! took effect as asked), `fail` (the cluster answered and the operation
//! certainly did not take effect, e.g. a denied check-out) or `unknown` (a
//! timeout, a transport error, or `UNAVAILABLE` — the request may or may not
//! have been applied; it is never assumed failed). A check-out or check-in
//! retried after an `unknown` attempt keeps its request id `(session, seq)`
//! and its operation `id`, with the next `attempt` number. The nemesis
//! writes `info` events when a fault starts and ends.
//!
//! Times are microseconds on the harness's monotonic clock since the run
//! started. Session ids are 16 hex digits (as raftlm prints them), so the
//! file reads well with `jq`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an event says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// An attempt was sent.
    Invoke,
    /// The attempt was answered and the operation took effect.
    Ok,
    /// The attempt was answered and the operation certainly did not take effect.
    Fail,
    /// The attempt got no answer that says what happened.
    Unknown,
    /// Not an operation: a fault started or ended, a session was abandoned.
    Info,
}

/// The kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Take seats (Raft write).
    Checkout,
    /// Return a grant (Raft write).
    Checkin,
    /// Heartbeat quoting the grants held (no Raft write).
    Renew,
    /// A linearizable Status read after the cluster healed, with every grant.
    Read,
    /// The end-of-run drain: an info event when the clients stopped, then a
    /// linearizable Status read once every session could have expired.
    Drain,
    /// A fault of the nemesis (info events only).
    Nemesis,
    /// A session stopped heartbeating and was given up (info event only).
    Abandon,
    /// An application's use of a grant: the last moment it saw the grant
    /// valid (info event only; `src/apps.rs`).
    Use,
    /// An administrator imports a license file during the faults (Raft write).
    Import,
    /// An administrator removes that license file (Raft write; refused while
    /// its seats are in use).
    Remove,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpKind::Checkout => "checkout",
            OpKind::Checkin => "checkin",
            OpKind::Renew => "renew",
            OpKind::Read => "read",
            OpKind::Drain => "drain",
            OpKind::Nemesis => "nemesis",
            OpKind::Abandon => "abandon",
            OpKind::Use => "use",
            OpKind::Import => "import",
            OpKind::Remove => "remove",
        })
    }
}

/// A grant token `(term, index, slot)`, printed `term.index.slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token {
    /// Term of the entry that created the grant.
    pub term: u64,
    /// Log index of that entry.
    pub index: u64,
    /// Slot of the check-out within the entry's batch.
    pub slot: u32,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.term, self.index, self.slot)
    }
}

impl From<&raftlm::proto::v1::GrantToken> for Token {
    fn from(t: &raftlm::proto::v1::GrantToken) -> Token {
        Token {
            term: t.term,
            index: t.index,
            slot: t.slot,
        }
    }
}

impl From<Token> for raftlm::proto::v1::GrantToken {
    fn from(t: Token) -> raftlm::proto::v1::GrantToken {
        raftlm::proto::v1::GrantToken {
            term: t.term,
            index: t.index,
            slot: t.slot,
        }
    }
}

impl From<raftlm::license::state::GrantToken> for Token {
    fn from(t: raftlm::license::state::GrantToken) -> Token {
        Token {
            term: t.term.0,
            index: t.index.0,
            slot: t.slot,
        }
    }
}

/// One grant as a state read reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSeen {
    /// The grant token.
    pub token: Token,
    /// The holding session, 16 hex digits.
    pub session: String,
    /// The feature.
    pub feature: String,
    /// Seats held.
    pub count: u32,
}

/// Formats a session id as raftlm does: 16 hex digits.
pub fn session_hex(session: u64) -> String {
    format!("{session:016x}")
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the run started (monotonic).
    pub time_us: u64,
    /// Who acted: `s3` (session worker 3), `s3-hb` (its heartbeat), `nemesis`, `harness`.
    pub process: String,
    /// invoke / ok / fail / unknown / info.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation.
    pub op: OpKind,
    /// The operation's id, unique in the run; retries keep it.
    pub id: u64,
    /// The attempt number, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The client session, 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The request's sequence number within the session (check-out, check-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The feature (check-out; a check-in's ok reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// Seats asked for or returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The grant token: granted by a check-out, returned by a check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// The term (fencing token) of an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// The log index an answer carries: a Status read's applied index (the
    /// state it shows), or the index a check-out's or check-in's command was
    /// applied at. Absent in histories written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The address the attempt went to (`ap` for the access point, `n2` for node 2), or a fault's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Grants quoted by a renewal as held (the session believes it holds them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<Token>,
    /// Also quoted by a renewal: grants of this session whose check-in was
    /// answered ok before the renewal was sent (the answer must call them unknown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked_in_tokens: Vec<Token>,
    /// Also quoted by a renewal: grants made to other sessions (never held by this one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_tokens: Vec<Token>,
    /// Also quoted by a renewal: made-up tokens no check-out was granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub made_up_tokens: Vec<Token>,
    /// Quoted grants a renewal's answer says the cluster does not hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_tokens: Vec<Token>,
    /// Every grant, for a state read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<GrantSeen>>,
    /// Seats in use per feature, for the harness's state reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<BTreeMap<String, u32>>,
    /// Why: a denial reason, an error, a fault's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For nemesis events: the fault type (kill, pause, partition, restart, kill-all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// For `use` events: the last moment (µs) the application saw the grant valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_us: Option<u64>,
    /// For `use` events: the application's grace period, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// For answered Status reads: how long the answering node had served
    /// without a break (`serving_for_ms`), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_for_ms: Option<u64>,
    /// For answered check-outs: the seats the reply says are free after the
    /// request, and the seats licensed and unexpired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<u32>,
    /// See [`Event::available`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
}

impl Event {
    /// An event with only the required fields; the rest are filled by the caller.
    pub fn new(process: &str, kind: EventType, op: OpKind, id: u64) -> Event {
        Event {
            time_us: 0,
            process: process.to_string(),
            kind,
            op,
            id,
            attempt: None,
            session: None,
            seq: None,
            feature: None,
            count: None,
            token: None,
            term: None,
            index: None,
            node: None,
            tokens: Vec::new(),
            checked_in_tokens: Vec::new(),
            foreign_tokens: Vec::new(),
            made_up_tokens: Vec::new(),
            unknown_tokens: Vec::new(),
            grants: None,
            in_use: None,
            detail: None,
            fault: None,
            valid_until_us: None,
            grace_ms: None,
            serving_for_ms: None,
            available: None,
            total: None,
        }
    }
}

/// Records events to `history.jsonl` and keeps them for the checker.
pub struct History {
    start: Instant,
    // std Mutex: an append and a push, never held across `.await`.
    inner: Mutex<Inner>,
}

struct Inner {
    file: Option<BufWriter<File>>,
    events: Vec<Event>,
    next_id: u64,
}

impl History {
    /// A history written to `path` (created or truncated), with time zero now.
    pub fn create(path: &Path) -> anyhow::Result<History> {
        let file = File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(History {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                file: Some(BufWriter::new(file)),
                events: Vec::new(),
                next_id: 1,
            }),
        })
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// `at` in microseconds since the run started (0 if before it).
    pub fn us_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = inner.next_id;
        inner.next_id += 1;
        id
    }

    /// Stamps the event with the current time, appends it, and returns the time.
    pub fn record(&self, mut event: Event) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Stamped under the lock so the file is in time order.
        event.time_us = self.now_us();
        let time = event.time_us;
        if let Some(file) = inner.file.as_mut() {
            // A line that cannot be written is reported once and the file dropped; the
            // in-memory history (what the checker reads) stays complete.
            let line = serde_json::to_string(&event).unwrap_or_default();
            if writeln!(file, "{line}").is_err() {
                eprintln!("raftlm-chaos: cannot write the history file; keeping it in memory only");
                inner.file = None;
            }
        }
        inner.events.push(event);
        time
    }

    /// Flushes the file.
    pub fn flush(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = inner.file.as_mut() {
            let _ = file.flush();
        }
    }

    /// A copy of every event so far, in time order.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .clone()
    }
}

/// Reads a history file written by [`History`].
pub fn load(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A history line round-trips through JSON and leaves absent fields out.
    #[test]
    fn event_round_trips_as_one_json_line() {
        let mut event = Event::new("s1", EventType::Ok, OpKind::Checkout, 7);
        event.session = Some(session_hex(0xabc));
        event.token = Some(Token {
            term: 3,
            index: 10,
            slot: 1,
        });
        let line = serde_json::to_string(&event).unwrap();
        assert!(line.contains("\"type\":\"ok\""), "{line}");
        assert!(!line.contains("grants"), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, event);
    }
}
