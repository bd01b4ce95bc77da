//! What every invariant family shares: the history rebuilt as operations
//! and their attempts ([`operations`]), the certain life of an acknowledged
//! grant ([`GrantLife`]) and the lower bound of its session's expiry
//! ([`expiry_lower_bound`], over the serving spells Status reads showed,
//! [`Spells`]), and the tally that collects one invariant's results
//! ([`Tally`]). See "What is certain" in the [`super`] docs. No invariant is
//! checked here.

use std::collections::BTreeMap;

use super::model::{EXAMPLES_MAX, InvariantResult};
use crate::history::{Event, EventType, GrantSeen, OpKind, Token};

/// An attempt at an operation, rebuilt from its invoke and completion events.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) invoke_us: u64,
    pub(super) complete_us: u64,
    /// Ok, Fail or Unknown (no completion event: Unknown, completing at the end of time).
    pub(super) outcome: EventType,
    pub(super) term: Option<u64>,
    /// The log index the answer carries (a read's applied index, a write's).
    pub(super) index: Option<u64>,
    pub(super) token: Option<Token>,
    pub(super) unknown_tokens: Vec<Token>,
    pub(super) grants: Option<Vec<GrantSeen>>,
    pub(super) detail: Option<String>,
    /// Seats in use per feature, for the harness's state reads.
    pub(super) in_use: BTreeMap<String, u32>,
    /// For Status reads: how long the answering node had served without a break, µs.
    pub(super) serving_for_us: Option<u64>,
    /// For check-outs: seats free after the request, and seats licensed, per the reply.
    pub(super) available: Option<u32>,
    pub(super) total: Option<u32>,
}

impl Attempt {
    /// Answered by the cluster (a reply with a term): the request reached a serving node.
    pub(super) fn answered(&self) -> bool {
        matches!(self.outcome, EventType::Ok | EventType::Fail) && self.term.is_some()
    }
}

/// An operation and its attempts.
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub(super) id: u64,
    pub(super) kind: OpKind,
    pub(super) process: String,
    pub(super) session: Option<String>,
    pub(super) seq: Option<u64>,
    pub(super) feature: Option<String>,
    pub(super) count: Option<u32>,
    /// The token quoted by a check-in.
    pub(super) token: Option<Token>,
    /// A renewal's quoted tokens: held, checked in, foreign, made up.
    pub(super) quoted: Quoted,
    pub(super) attempts: Vec<Attempt>,
    /// Sessions the op was sent under before its answer named another: an
    /// application's client library starts a new session when the cluster
    /// expired its old one and retries there. What the attempts under the
    /// old session did is unknown (their answers were lost), so the op may
    /// explain one grant of each of them.
    pub(super) earlier_sessions: Vec<String>,
}

/// The tokens a renewal quoted, by what the session knew of them.
#[derive(Debug, Clone, Default)]
pub(super) struct Quoted {
    pub(super) held: Vec<Token>,
    pub(super) checked_in: Vec<Token>,
    pub(super) foreign: Vec<Token>,
    pub(super) made_up: Vec<Token>,
}

impl Op {
    pub(super) fn outcome(&self) -> EventType {
        if self.attempts.iter().any(|a| a.outcome == EventType::Ok) {
            EventType::Ok
        } else if self.attempts.iter().any(|a| a.outcome == EventType::Fail) {
            EventType::Fail
        } else {
            EventType::Unknown
        }
    }

    pub(super) fn first_ok(&self) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.outcome == EventType::Ok)
    }

    pub(super) fn first_invoke(&self) -> u64 {
        self.attempts.first().map_or(u64::MAX, |a| a.invoke_us)
    }

    pub(super) fn describe(&self) -> String {
        let mut text = format!("{} op {} by {}", self.kind, self.id, self.process);
        if let (Some(session), Some(seq)) = (&self.session, self.seq) {
            text.push_str(&format!(" (request {session}/{seq})"));
        }
        text
    }
}

/// A grant acknowledged by an ok check-out.
#[derive(Debug, Clone)]
pub(super) struct GrantLife {
    pub(super) token: Token,
    pub(super) op: u64,
    pub(super) session: String,
    pub(super) feature: String,
    pub(super) count: u32,
    /// When the ok answer arrived: the grant certainly exists from here.
    pub(super) granted_us: u64,
    /// Lower bound of the session's expiry.
    pub(super) expiry_lb_us: u64,
    /// When the first check-in attempt quoting it was sent.
    pub(super) checkin_sent_us: Option<u64>,
    /// When a check-in of it was answered ok.
    pub(super) checkin_ok_us: Option<u64>,
}

impl GrantLife {
    /// End of the interval in which the grant is certainly held (exclusive).
    pub(super) fn held_until_us(&self) -> u64 {
        self.checkin_sent_us
            .map_or(self.expiry_lb_us, |c| c.min(self.expiry_lb_us))
    }

    /// Certainly held during the whole of `[from, to]`.
    pub(super) fn held_over(&self, from: u64, to: u64) -> bool {
        self.granted_us <= from && to <= self.held_until_us()
    }

    pub(super) fn describe(&self) -> String {
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
pub(super) fn secs(us: u64) -> String {
    if us == u64::MAX {
        return "the end".to_string();
    }
    format!("{:.3} s", us as f64 / 1e6)
}

/// Collects one invariant's results.
pub(super) struct Tally {
    pub(super) name: &'static str,
    pub(super) checked: u64,
    pub(super) violations: u64,
    pub(super) examples: Vec<String>,
}

impl Tally {
    pub(super) fn new(name: &'static str) -> Tally {
        Tally {
            name,
            checked: 0,
            violations: 0,
            examples: Vec::new(),
        }
    }

    pub(super) fn violation(&mut self, example: String) {
        self.violations += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example);
        }
    }

    pub(super) fn finish(self) -> InvariantResult {
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
pub(super) fn operations(events: &[Event]) -> Vec<Op> {
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
pub(super) struct Spell {
    pub(super) invoke_us: u64,
    pub(super) complete_us: u64,
    pub(super) serving_for_us: u64,
}

impl Spell {
    /// The answer was made no earlier than the read was sent.
    pub(super) fn began_no_earlier(&self) -> u64 {
        self.invoke_us.saturating_sub(self.serving_for_us)
    }
    /// The answer was made no later than it arrived.
    pub(super) fn began_no_later(&self) -> u64 {
        self.complete_us.saturating_sub(self.serving_for_us)
    }
}

/// The answered reads' spells, by completion, with the running maximum of
/// [`Spell::began_no_earlier`].
pub(super) struct Spells {
    pub(super) reads: Vec<Spell>,
    /// `latest_start[k]`: the largest `began_no_earlier` of `reads[..=k]`.
    pub(super) latest_start: Vec<u64>,
}

impl Spells {
    pub(super) fn new(ops: &[Op]) -> Spells {
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
    pub(super) fn began_before(&self, before_us: u64) -> Option<u64> {
        let k = self.reads.partition_point(|r| r.complete_us < before_us);
        k.checked_sub(1).map(|k| self.latest_start[k])
    }

    /// The first read sent at or after `from_us`.
    pub(super) fn first_sent_after(&self, from_us: u64) -> Option<&Spell> {
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
pub(super) fn expiry_lower_bound(
    from_us: u64,
    touches: &[(u64, u64)],
    ttl_us: u64,
    spells: &Spells,
) -> u64 {
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
