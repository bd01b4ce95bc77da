//! The run's figures, not invariants: operations by kind and outcome,
//! sessions and how many the cluster expired, and unavailability per fault
//! type (from a fault's start to the end of the first check-out attempt
//! sent after it that the cluster answered).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::common::Op;
use super::model::Verdict;
use crate::history::{Event, EventType, OpKind};

/// Operations by kind and outcome, attempts, and check-outs answered or
/// denied "in use".
pub(super) fn operation_counts(ops: &[Op], verdict: &mut Verdict) {
    for op in ops {
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
}

/// How many sessions ran, and how many the cluster expired while they were
/// still heartbeating.
pub(super) fn session_figures(events: &[Event], ops: &[Op], verdict: &mut Verdict) {
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

/// Nearest-rank percentile of sorted values.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Faults by type and the time from each to the next answered check-out.
pub(super) fn unavailability(events: &[Event], ops: &[Op], verdict: &mut Verdict) {
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

    // Nearest-rank percentiles.
    #[test]
    fn percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
