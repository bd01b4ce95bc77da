//! Expiry on time: `expiry-judged-on-true-time` (dated licenses expire by
//! the run's true time, within the clock tolerance) and
//! `silent-sessions-expire-in-time` (a silent session's grants are gone by
//! its TTL, a sweep period and slack after its last touch and the serving
//! spell's start). See the invariants in the [`super`] docs.

use std::collections::{BTreeSet, HashMap};

use super::common::{Op, Spells, Tally, secs};
use super::model::{CheckInput, EXPIRE_IN_TIME, EXPIRY, InvariantResult};
use crate::history::{EventType, OpKind};

/// Expiry on true time: see the module docs.
pub(super) fn check_expiry(ops: &[Op], input: &CheckInput) -> InvariantResult {
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
pub(super) fn check_expire_in_time(
    ops: &[Op],
    spells: &Spells,
    input: &CheckInput,
) -> InvariantResult {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

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
}
