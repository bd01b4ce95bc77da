//! The seats: `seats-never-over-granted` (no moment at which the grants
//! certainly held, or the grants of a state the cluster showed, add up to
//! more seats than are licensed), `available-never-overstated` (a check-out's
//! reply never says more seats are free than can be) and `no-leaked-seat`
//! (the drain read after the clients stopped holds no grant and no seat in
//! use). See the invariants in the [`super`] docs.

use std::collections::{BTreeMap, BTreeSet};

use super::common::{Attempt, GrantLife, Op, Tally, secs};
use super::model::{AVAILABLE, CheckInput, DrainFinding, InvariantResult, LEAK, SEATS, Verdict};
use crate::history::{Event, EventType, GrantSeen, OpKind, Token};

/// Over-grant: a sweep over the intervals in which grants are certainly
/// held, and every state the cluster showed.
pub(super) fn check_seats(
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
pub(super) fn check_state_seats(ops: &[Op], input: &CheckInput, tally: &mut Tally) {
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

/// `available-never-overstated`: a check-out's reply never says more seats
/// are free than can be — the seats licensed, less every grant of the
/// feature certainly held over the whole operation (so at the moment the
/// request was applied, even for a retry answered from the retry table),
/// less its own grant; for a permanent feature whose license never changes,
/// the reply's total is the seats licensed; and an "in use" denial says
/// fewer seats are free than were asked for.
pub(super) fn check_available(
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

/// No leaked seat: the last answered drain read holds no grant and no seat
/// in use.
pub(super) fn check_drain(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

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
}
