//! The license state machine: table tests for each command and property tests
//! over random command sequences that assert the invariants.

use proptest::prelude::*;
use raftlm::codec;
use raftlm::license::state::{
    Batch, Command, DEDUP_WINDOW, DenyReason, GrantToken, LicenseState, LogPosition, NodeId,
    Outcome, RequestId, SessionId, Term,
};
use raftlm::license::{Date, Expiry, FeatureLine, LineKind};

const NOW_MS: u64 = 1_795_000_000_000; // late 2026

fn line(feature: &str, seats: u32, expiry: Expiry, signature: &str) -> FeatureLine {
    FeatureLine {
        kind: LineKind::Feature,
        feature: feature.to_string(),
        vendor: "acme".to_string(),
        version: "2.0".to_string(),
        expiry,
        seats,
        attributes: Vec::new(),
        signature: signature.to_string(),
        line: 3,
    }
}

fn checkout(session: u64, seq: u64, feature: &str, count: u32) -> Command {
    Command::Checkout {
        request: RequestId {
            session: SessionId(session),
            seq,
        },
        feature: feature.to_string(),
        count,
        user: "ada".to_string(),
        host: "ws1".to_string(),
    }
}

fn checkin(session: u64, seq: u64, token: GrantToken) -> Command {
    Command::Checkin {
        request: RequestId {
            session: SessionId(session),
            seq,
        },
        token,
    }
}

/// Applies commands one per log index, starting at index 1, term 1.
struct Log {
    state: LicenseState,
    index: u64,
}

impl Log {
    fn new() -> Log {
        Log {
            state: LicenseState::new(),
            index: 0,
        }
    }
    fn apply(&mut self, command: Command) -> Outcome {
        self.apply_at(NOW_MS, command)
    }
    fn apply_at(&mut self, now_ms: u64, command: Command) -> Outcome {
        self.index += 1;
        let at = LogPosition {
            term: 1,
            index: self.index,
        };
        let mut outcomes = self.state.apply_batch(
            at,
            &Batch {
                now_ms,
                commands: vec![command],
            },
        );
        self.state.check_invariants();
        outcomes.remove(0)
    }
    fn import(&mut self, name: &str, lines: Vec<FeatureLine>) -> Outcome {
        self.apply(Command::ImportLicense {
            name: name.to_string(),
            lines,
            author: "CN=test".into(),
        })
    }
}

fn token_of(outcome: &Outcome) -> GrantToken {
    match outcome {
        Outcome::Granted { token, .. } => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

// Seats are granted until the pool is empty, then refused with the numbers; check-in frees them.
#[test]
fn checkout_until_exhausted_then_checkin() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 3, Expiry::Permanent, "s1")]);
    let first = log.apply(checkout(1, 1, "cad", 2));
    assert!(matches!(
        first,
        Outcome::Granted {
            count: 2,
            available: 1,
            total: 3,
            ..
        }
    ));
    let denied = log.apply(checkout(2, 1, "cad", 2));
    assert_eq!(
        denied,
        Outcome::Denied {
            reason: DenyReason::InUse,
            available: 1,
            total: 3
        }
    );
    let back = log.apply(checkin(1, 2, token_of(&first)));
    assert_eq!(
        back,
        Outcome::CheckedIn {
            feature: "cad".into(),
            count: 2
        }
    );
    assert_eq!(log.state.in_use("cad"), 0);
    assert!(matches!(
        log.apply(checkout(2, 2, "cad", 3)),
        Outcome::Granted { .. }
    ));
}

// A client asking for more seats than exist is refused at once with the numbers, and a
// feature with no license or a zero count is refused with its own reason.
#[test]
fn impossible_requests_are_refused_with_reasons() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 5, Expiry::Permanent, "s1")]);
    assert_eq!(
        log.apply(checkout(1, 1, "cad", 6)),
        Outcome::Denied {
            reason: DenyReason::ExceedsLicensed,
            available: 5,
            total: 5
        }
    );
    assert_eq!(
        log.apply(checkout(1, 2, "cam", 1)),
        Outcome::Denied {
            reason: DenyReason::NoSuchFeature,
            available: 0,
            total: 0
        }
    );
    assert_eq!(
        log.apply(checkout(1, 3, "cad", 0)),
        Outcome::Denied {
            reason: DenyReason::BadCount,
            available: 5,
            total: 5
        }
    );
}

// A retried request returns its first outcome and takes no second seat.
#[test]
fn retried_request_returns_first_outcome() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 5, Expiry::Permanent, "s1")]);
    let first = log.apply(checkout(7, 1, "cad", 2));
    let again = log.apply(checkout(7, 1, "cad", 2));
    assert_eq!(first, again);
    assert_eq!(log.state.in_use("cad"), 2);
    assert_eq!(log.state.grants().len(), 1);
}

// A request older than the retry window is answered Stale, never applied a second time.
#[test]
fn request_older_than_window_is_stale() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 1000, Expiry::Permanent, "s1")]);
    for seq in 1..=(DEDUP_WINDOW as u64 + 1) {
        log.apply(checkout(7, seq, "cad", 1));
    }
    assert_eq!(log.apply(checkout(7, 1, "cad", 1)), Outcome::Stale);
    assert_eq!(log.state.in_use("cad"), DEDUP_WINDOW as u32 + 1);
}

// Grant tokens come from the entry's term, index and slot, so every grant in a batch differs.
#[test]
fn tokens_are_term_index_slot() {
    let mut state = LicenseState::new();
    let batch = Batch {
        now_ms: NOW_MS,
        commands: vec![
            Command::ImportLicense {
                name: "a".into(),
                lines: vec![line("cad", 9, Expiry::Permanent, "s")],
                author: "CN=test".into(),
            },
            checkout(1, 1, "cad", 1),
            checkout(2, 1, "cad", 1),
        ],
    };
    let outcomes = state.apply_batch(LogPosition { term: 4, index: 17 }, &batch);
    assert_eq!(
        token_of(&outcomes[1]),
        GrantToken {
            term: 4,
            index: 17,
            slot: 1
        }
    );
    assert_eq!(
        token_of(&outcomes[2]),
        GrantToken {
            term: 4,
            index: 17,
            slot: 2
        }
    );
}

// Only the holding session can check a grant in; an unknown token changes nothing.
#[test]
fn checkin_needs_the_holding_session() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 5, Expiry::Permanent, "s1")]);
    let token = token_of(&log.apply(checkout(1, 1, "cad", 1)));
    assert_eq!(log.apply(checkin(2, 1, token)), Outcome::UnknownGrant);
    let bogus = GrantToken {
        term: 9,
        index: 9,
        slot: 9,
    };
    assert_eq!(log.apply(checkin(1, 2, bogus)), Outcome::UnknownGrant);
    assert_eq!(log.state.in_use("cad"), 1);
}

// Expiring a session releases all its grants and forgets it.
#[test]
fn expire_releases_a_sessions_grants() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 5, Expiry::Permanent, "s1")]);
    log.apply(checkout(1, 1, "cad", 2));
    log.apply(checkout(1, 2, "cad", 1));
    log.apply(checkout(2, 1, "cad", 1));
    let outcome = log.apply(Command::Expire {
        sessions: vec![SessionId(1), SessionId(99)],
    });
    assert_eq!(
        outcome,
        Outcome::Expired {
            sessions: 1,
            grants: 2
        }
    );
    assert_eq!(log.state.in_use("cad"), 1);
    assert!(!log.state.sessions().contains_key(&SessionId(1)));
}

// A request from an expired session (a late retry, a client back from caching mode) is
// refused as SessionExpired and takes no seat: the client must start a new session.
#[test]
fn expired_session_is_dead() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 5, Expiry::Permanent, "s1")]);
    log.apply(checkout(1, 1, "cad", 2));
    log.apply(Command::Expire {
        sessions: vec![SessionId(1)],
    });
    assert_eq!(log.apply(checkout(1, 1, "cad", 2)), Outcome::SessionExpired);
    assert_eq!(log.apply(checkout(1, 2, "cad", 1)), Outcome::SessionExpired);
    assert_eq!(log.state.in_use("cad"), 0);
    assert!(log.state.is_expired(SessionId(1)));
}

// INCREMENT lines add seats; a line past its expiry grants nothing new but grants held stay.
#[test]
fn increments_add_and_expired_lines_stop_granting() {
    let mut log = Log::new();
    let expires = Expiry::On(Date::parse("31-dec-2026").unwrap());
    let mut inc = line("cad", 2, expires, "s2");
    inc.kind = LineKind::Increment;
    log.import(
        "acme.lic",
        vec![line("cad", 1, Expiry::Permanent, "s1"), inc],
    );
    assert_eq!(log.state.seats_licensed("cad"), (3, 3));
    let held = log.apply(checkout(1, 1, "cad", 3));
    assert!(matches!(held, Outcome::Granted { .. }));
    let new_year = Date::parse("01-jan-2027").unwrap().start_ms();
    log.apply_at(new_year, Command::Expire { sessions: vec![] });
    assert_eq!(log.state.seats_licensed("cad"), (3, 1));
    assert_eq!(
        log.state.in_use("cad"),
        3,
        "seats held before expiry stay held"
    );
    log.apply(checkin(1, 2, token_of(&held)));
    assert_eq!(
        log.apply(checkout(2, 1, "cad", 2)),
        Outcome::Denied {
            reason: DenyReason::ExceedsLicensed,
            available: 1,
            total: 1
        }
    );
}

// A line imported twice (same signature, another file name) counts once.
#[test]
fn the_same_line_imported_twice_counts_once() {
    let mut log = Log::new();
    log.import("a.lic", vec![line("cad", 4, Expiry::Permanent, "same")]);
    let outcome = log.import("copy.lic", vec![line("cad", 4, Expiry::Permanent, "same")]);
    assert_eq!(
        outcome,
        Outcome::Imported {
            name: "copy.lic".into(),
            lines: 0,
            duplicates: 1
        }
    );
    assert_eq!(log.state.seats_licensed("cad"), (4, 4));
}

// Removing or shrinking a license below the seats in use is refused: nothing held is lost.
#[test]
fn license_changes_never_strand_grants() {
    let mut log = Log::new();
    log.import("a.lic", vec![line("cad", 4, Expiry::Permanent, "s1")]);
    log.apply(checkout(1, 1, "cad", 3));
    let refusal = Outcome::LicenseRefused {
        feature: "cad".into(),
        in_use: 3,
        licensed: 0,
    };
    assert_eq!(
        log.apply(Command::RemoveLicense {
            name: "a.lic".into(),
            author: "CN=test".into(),
        }),
        refusal
    );
    let shrink = log.import("a.lic", vec![line("cad", 2, Expiry::Permanent, "s9")]);
    assert_eq!(
        shrink,
        Outcome::LicenseRefused {
            feature: "cad".into(),
            in_use: 3,
            licensed: 2
        }
    );
    assert_eq!(
        log.apply(Command::RemoveLicense {
            name: "none".into(),
            author: "CN=test".into(),
        }),
        Outcome::NoSuchLicense
    );
    log.apply(Command::Expire {
        sessions: vec![SessionId(1)],
    });
    assert_eq!(
        log.apply(Command::RemoveLicense {
            name: "a.lic".into(),
            author: "CN=test".into(),
        }),
        Outcome::Removed {
            name: "a.lic".into()
        }
    );
}

// State time is the maximum stamped time: a leader with a slow clock cannot move it back.
#[test]
fn time_never_runs_backwards() {
    let mut log = Log::new();
    log.apply_at(
        NOW_MS,
        Command::Activate {
            term: Term(1),
            node: NodeId(1),
        },
    );
    log.apply_at(
        NOW_MS - 60_000,
        Command::Activate {
            term: Term(2),
            node: NodeId(2),
        },
    );
    assert_eq!(log.state.now_ms(), NOW_MS);
    let activation = log.state.activation().unwrap();
    assert_eq!(
        (activation.node, activation.term, activation.at_ms),
        (NodeId(2), Term(2), NOW_MS)
    );
    assert_eq!(log.state.activations(), 2);
}

// The whole state survives encode → decode through the codec (the snapshot format).
#[test]
fn state_round_trips_through_the_codec() {
    let mut log = Log::new();
    log.import("a.lic", vec![line("cad", 4, Expiry::Permanent, "s1")]);
    log.apply(checkout(1, 1, "cad", 3));
    let bytes = codec::encode(&log.state).unwrap();
    let back: LicenseState = codec::decode(&bytes).unwrap();
    assert_eq!(back, log.state);
}

#[derive(Debug, Clone)]
enum Op {
    Checkout {
        session: u64,
        feature: usize,
        count: u32,
    },
    Retry,
    Checkin {
        pick: usize,
    },
    ForeignCheckin {
        session: u64,
        pick: usize,
    },
    Expire {
        session: u64,
    },
    Import {
        feature: usize,
        seats: u32,
        expired: bool,
        name: usize,
    },
    Remove {
        name: usize,
    },
    Tick {
        ms: u64,
    },
}

const FEATURES: [&str; 3] = ["cad", "sim", "viz"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..5u64, 0..3usize, 0..5u32).prop_map(|(session, feature, count)| Op::Checkout { session, feature, count }),
        2 => Just(Op::Retry),
        3 => any::<usize>().prop_map(|pick| Op::Checkin { pick }),
        1 => (0..5u64, any::<usize>()).prop_map(|(session, pick)| Op::ForeignCheckin { session, pick }),
        1 => (0..5u64).prop_map(|session| Op::Expire { session }),
        1 => (0..3usize, 1..6u32, any::<bool>(), 0..3usize).prop_map(|(feature, seats, expired, name)| Op::Import { feature, seats, expired, name }),
        1 => (0..3usize).prop_map(|name| Op::Remove { name }),
        1 => (0..100_000_000u64).prop_map(|ms| Op::Tick { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    // Under any command sequence: seats in use never exceed seats licensed (asserted inside
    // apply and by check_invariants), a replayed request returns the identical outcome and
    // takes no seat, no two live grants share a token, and the state round-trips the codec.
    #[test]
    fn invariants_hold_under_random_commands(ops in proptest::collection::vec(op(), 1..120)) {
        let mut log = Log::new();
        let mut seqs = [0u64; 5];
        // Expired sessions are dead; the client slot starts a new session id.
        let mut generation = [0u64; 5];
        let sid = |slot: u64, generation: &[u64; 5]| slot + 10 * generation[slot as usize];
        let mut last: Option<(Command, Outcome)> = None;
        let mut now = NOW_MS;
        let mut issued = std::collections::BTreeSet::new();
        for op in ops {
            let command = match op {
                Op::Checkout { session, feature, count } => {
                    seqs[session as usize] += 1;
                    checkout(sid(session, &generation), seqs[session as usize], FEATURES[feature], count)
                }
                Op::Retry => match &last {
                    Some((command, first)) => {
                        let (grants, used) = (log.state.grants().len(), FEATURES.map(|f| log.state.in_use(f)));
                        let again = log.apply_at(now, command.clone());
                        let session = match command {
                            Command::Checkout { request, .. } | Command::Checkin { request, .. } => request.session,
                            _ => unreachable!(),
                        };
                        if log.state.is_expired(session) {
                            prop_assert_eq!(&again, &Outcome::SessionExpired);
                        } else {
                            prop_assert_eq!(&again, first, "a retried request changed its answer");
                        }
                        prop_assert_eq!(grants, log.state.grants().len());
                        prop_assert_eq!(used, FEATURES.map(|f| log.state.in_use(f)));
                        continue;
                    }
                    None => continue,
                },
                Op::Checkin { pick } | Op::ForeignCheckin { pick, .. } if log.state.grants().is_empty() => {
                    let _ = pick;
                    continue;
                }
                Op::Checkin { pick } => {
                    let grant = log.state.grants().values().nth(pick % log.state.grants().len()).unwrap().clone();
                    let slot = grant.session.0 % 10;
                    seqs[slot as usize] += 1;
                    checkin(grant.session.0, seqs[slot as usize], grant.token)
                }
                Op::ForeignCheckin { session, pick } => {
                    let token = *log.state.grants().keys().nth(pick % log.state.grants().len()).unwrap();
                    seqs[session as usize] += 1;
                    checkin(sid(session, &generation), seqs[session as usize], token)
                }
                Op::Expire { session } => {
                    let id = sid(session, &generation);
                    generation[session as usize] += 1;
                    seqs[session as usize] = 0;
                    Command::Expire { sessions: vec![SessionId(id)] }
                }
                Op::Import { feature, seats, expired, name } => {
                    let expiry = if expired { Expiry::On(Date::from_unix_ms(now)) } else { Expiry::Permanent };
                    let signature = format!("sig-{feature}-{seats}-{expired}-{name}");
                    Command::ImportLicense { name: format!("f{name}.lic"), lines: vec![line(FEATURES[feature], seats, expiry, &signature)], author: "CN=test".into() }
                }
                Op::Remove { name } => Command::RemoveLicense { name: format!("f{name}.lic"), author: "CN=test".into() },
                Op::Tick { ms } => {
                    now += ms;
                    Command::Expire { sessions: vec![] }
                }
            };
            let outcome = log.apply_at(now, command.clone());
            if let Outcome::Granted { token, .. } = &outcome {
                prop_assert!(issued.insert(*token), "token {} issued twice", token);
            }
            for feature in FEATURES {
                let (licensed, _) = log.state.seats_licensed(feature);
                prop_assert!(log.state.in_use(feature) <= licensed);
            }
            if matches!(command, Command::Checkout { .. } | Command::Checkin { .. }) {
                last = Some((command, outcome));
            }
        }
        let bytes = codec::encode(&log.state).unwrap();
        let back: LicenseState = codec::decode(&bytes).unwrap();
        prop_assert_eq!(back, log.state);
    }
}
