//! The grants acknowledged by ok check-outs, and three invariants over
//! them: `no-lost-grant` (no answer or read says a certainly held grant is
//! gone), `no-phantom-grant` (every grant a state holds comes from an ok
//! check-out, or one-to-one from an unknown one of its session, and no
//! checked-in grant is read again) and `retry-never-double-grants` (one
//! request id gets one grant, and no state holds a grant only a second
//! application of a retried request explains). See the invariants in the
//! [`super`] docs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::common::{Attempt, GrantLife, Op, Spells, Tally, expiry_lower_bound, secs};
use super::model::{CheckInput, Verdict};
use crate::history::{EventType, GrantSeen, OpKind, Token};

/// Grants acknowledged by ok check-outs, with the lower bound of each one's
/// expiry and when it was checked in; a request answered two different
/// grants over its attempts is a `retry-never-double-grants` violation.
pub(super) fn grant_lives(
    ops: &[Op],
    input: &CheckInput,
    spells: &Spells,
    double: &mut Tally,
    verdict: &mut Verdict,
) -> BTreeMap<Token, GrantLife> {
    // Answered touches per session, sorted by completion.
    let mut touches: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for op in ops {
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
            spells,
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
    grants
}

/// Lost grants seen by answers during the run: renewals, check-ins, session-expired replies.
pub(super) fn check_lost(ops: &[Op], grants: &BTreeMap<Token, GrantLife>, tally: &mut Tally) {
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
pub(super) fn check_final_states(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

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
}
