//! Answers to hostile and odd requests: `no-impossible-answer` (no
//! check-out is answered what the workload cannot be told, counts the
//! cluster must refuse are refused, and no grant is released twice) and
//! `renewal-reports-unknown` (a renewal lists as unknown every checked-in,
//! foreign or made-up token it quoted). See the invariants in the [`super`]
//! docs.

use std::collections::{BTreeMap, BTreeSet};

use super::common::{GrantLife, Op, Tally, secs};
use super::model::{CheckInput, IMPOSSIBLE, InvariantResult, RENEW_UNKNOWN};
use crate::history::{EventType, OpKind, Token};

/// Impossible answers: see the module docs.
pub(super) fn check_impossible(ops: &[Op], input: &CheckInput) -> InvariantResult {
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

/// Renewals report what the session does not hold: see the module docs.
pub(super) fn check_renewal_unknown(
    ops: &[Op],
    grants: &BTreeMap<Token, GrantLife>,
) -> InvariantResult {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

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
}
