//! The license state machine: table tests for each command and property tests
//! over random command sequences that assert the invariants.

use proptest::prelude::*;
use raftlm::codec;
use raftlm::license::signature::{self, VendorSigningKey};
use raftlm::license::state::{
    Batch, Command, DEDUP_WINDOW, DenyReason, GrantToken, LicenseState, LogIndex, LogPosition,
    NodeId, Outcome, RequestId, SessionId, Term,
};
use raftlm::license::{Date, Expiry, FeatureLine, LineKind};

const NOW_MS: u64 = 1_795_000_000_000; // late 2026

/// The cluster name the test states are bound to.
const CLUSTER: &str = "LICSRV";

/// acme's signing key, trusted by every test state.
fn acme_key() -> VendorSigningKey {
    VendorSigningKey::from_seed(Some("acme"), [7; 32])
}

/// A state that has been activated (recording the cluster name) and trusts
/// acme's key, as a cluster's is before any license is imported.
fn bootstrapped_state() -> LicenseState {
    let mut state = LicenseState::new();
    let batch = Batch {
        now_ms: NOW_MS,
        commands: vec![
            Command::Activate {
                term: Term(1),
                node: NodeId(1),
                cluster_name: CLUSTER.into(),
                cluster_id: None,
                lease_ms: 250,
                wait_ms: 350,
            },
            Command::TrustKey {
                vendor: Some("acme".into()),
                key: acme_key().public_key().to_bytes(),
                author: "CN=test".into(),
            },
            // acme's rotated key and vendor beta's key.
            Command::TrustKey {
                vendor: Some("acme".into()),
                key: VendorSigningKey::from_seed(Some("acme"), [8; 32])
                    .public_key()
                    .to_bytes(),
                author: "CN=test".into(),
            },
            Command::TrustKey {
                vendor: Some("beta".into()),
                key: VendorSigningKey::from_seed(Some("beta"), [9; 32])
                    .public_key()
                    .to_bytes(),
                author: "CN=test".into(),
            },
        ],
    };
    state.apply_batch(
        LogPosition {
            term: Term(1),
            index: LogIndex(1),
        },
        &batch,
    );
    state
}

/// `line` signed by acme's key for the test cluster.
fn signed(mut line: FeatureLine) -> FeatureLine {
    signature::sign_held(&acme_key(), CLUSTER, &mut line);
    line
}

/// An INCREMENT line of acme's `feature`, signed; its serial is `serial`, so
/// lines with different serials are different purchases and add up.
fn line(feature: &str, seats: u32, expiry: Expiry, serial: &str) -> FeatureLine {
    signed(FeatureLine {
        kind: LineKind::Increment,
        feature: feature.to_string(),
        vendor: "acme".to_string(),
        version: "2.0".to_string(),
        expiry,
        seats,
        attributes: vec![("SN".to_string(), serial.to_string())],
        cluster_id: None,
        host_ids: Vec::new(),
        signature: String::new(),
        line: 3,
    })
}

fn checkout(session: u64, seq: u64, feature: &str, count: u32) -> Command {
    Command::Checkout {
        request: RequestId {
            session: SessionId(session.into()),
            seq,
        },
        vendor: "acme".to_string(),
        feature: feature.to_string(),
        version: String::new(),
        count,
        user: "ada".to_string(),
        host: "ws1".to_string(),
    }
}

fn checkin(session: u64, seq: u64, token: GrantToken) -> Command {
    Command::Checkin {
        request: RequestId {
            session: SessionId(session.into()),
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
            state: bootstrapped_state(),
            index: 1,
        }
    }
    fn apply(&mut self, command: Command) -> Outcome {
        self.apply_at(NOW_MS, command)
    }
    /// `apply` without the invariant check after it (for long loops).
    fn apply_unchecked(&mut self, command: Command) -> Outcome {
        self.index += 1;
        let at = LogPosition {
            term: Term(1),
            index: LogIndex(self.index),
        };
        let batch = Batch {
            now_ms: NOW_MS,
            commands: vec![command],
        };
        self.state.apply_batch(at, &batch).remove(0)
    }
    fn apply_at(&mut self, now_ms: u64, command: Command) -> Outcome {
        self.index += 1;
        let at = LogPosition {
            term: Term(1),
            index: LogIndex(self.index),
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

/// Raises `log`'s state to record format 7, as the active node does once
/// every member reads it (what format 7 added is kept from then on).
fn at_format_7(log: &mut Log) {
    use raftlm::license::formats::Advertisement;
    let said = Advertisement::this_build(None);
    let outcome = log.apply(Command::RecordFormats {
        members: vec![(NodeId(1), said)],
        write: 7,
        author: "node 1 (active)".into(),
    });
    assert!(
        matches!(outcome, Outcome::FormatsRecorded { write: 7, .. }),
        "{outcome:?}"
    );
}

fn token_of(outcome: &Outcome) -> GrantToken {
    match outcome {
        Outcome::Granted { token, .. } => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

// An administrator's removal frees the seats of exactly the grants named,
// records who asked, and tells only the holder's renewals; a removal of a
// grant gone meanwhile changes nothing. A selection that matches nothing,
// or grants of two vendors without --vendor, is refused before the log.
#[test]
fn removed_grants_free_their_seats_and_name_who_removed_them() {
    use raftlm::proto::v1::RemoveGrantsRequest;
    use raftlm::server::remove::select;
    let mut log = Log::new();
    // Sessions with a public handle (the upper 64 bits) of their own.
    let id = |n: u64| SessionId(u128::from(n) << 64);
    let checkout =
        |n: u64, seq: u64, feature: &str, count: u32| match checkout(0, seq, feature, count) {
            Command::Checkout {
                vendor,
                feature,
                version,
                count,
                user,
                host,
                ..
            } => Command::Checkout {
                request: RequestId {
                    session: id(n),
                    seq,
                },
                vendor,
                feature,
                version,
                count,
                user,
                host,
            },
            other => other,
        };
    log.import("acme.lic", vec![line("cad", 3, Expiry::Permanent, "A1")]);
    at_format_7(&mut log);
    let first = token_of(&log.apply(checkout(1, 1, "cad", 2)));
    let second = token_of(&log.apply(checkout(2, 1, "cad", 1)));
    assert!(matches!(
        log.apply(checkout(3, 1, "cad", 1)),
        Outcome::Denied { .. }
    ));
    let session = id(1).public();
    let asked = RemoveGrantsRequest {
        session,
        ..Default::default()
    };
    let (tokens, text) = select(&log.state, &asked).unwrap();
    assert_eq!(tokens, vec![first]);
    assert_eq!(text, format!("session {session}"));
    let outcome = log.apply(Command::RemoveGrants {
        tokens: tokens.clone(),
        asked: text,
        author: "CN=admin".into(),
    });
    let Outcome::GrantsRemoved { removed } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].count, removed[0].user.as_str()), (2, "ada"));
    assert!(log.state.grant(&first).is_none());
    let removal = log.state.removal(&first, id(1)).unwrap();
    assert_eq!(removal.author, "CN=admin");
    assert!(log.state.removal(&first, id(2)).is_none());
    assert!(log.state.removal(&second, id(2)).is_none());
    let last = log.state.admin_actions().back().unwrap();
    assert!(last.result.starts_with("removed 1:"), "{last:?}");
    // The seats are free again.
    assert!(matches!(
        log.apply(checkout(3, 2, "cad", 2)),
        Outcome::Granted { .. }
    ));
    // Removing it again changes nothing; the selection is refused first.
    assert_eq!(
        log.apply(Command::RemoveGrants {
            tokens,
            asked: "again".into(),
            author: "CN=admin".into(),
        }),
        Outcome::GrantsRemoved { removed: vec![] }
    );
    assert!(select(&log.state, &asked).is_err());
    let by_grant = RemoveGrantsRequest {
        grant: second.to_string(),
        ..Default::default()
    };
    assert_eq!(select(&log.state, &by_grant).unwrap().0, vec![second]);
    let by_holder = RemoveGrantsRequest {
        feature: "cad".into(),
        user: "ada".into(),
        host: "ws1".into(),
        ..Default::default()
    };
    assert_eq!(select(&log.state, &by_holder).unwrap().0.len(), 2);
    let two_ways = RemoveGrantsRequest {
        grant: second.to_string(),
        session,
        ..Default::default()
    };
    assert!(select(&log.state, &two_ways).is_err());
    let nobody = RemoveGrantsRequest {
        feature: "cad".into(),
        user: "eve".into(),
        host: "ws1".into(),
        ..Default::default()
    };
    let refused = select(&log.state, &nobody).unwrap_err().to_string();
    assert!(refused.contains("no grant matches"), "{refused}");
}

// Check-outs are counted per feature, granted and denied by reason, in the
// replicated state; a retried request is counted once (its first answer is
// replayed).
#[test]
fn checkouts_are_counted_once_per_request_by_outcome() {
    let mut log = Log::new();
    // Not counted while the cluster writes format 6.
    log.import("acme.lic", vec![line("cad", 2, Expiry::Permanent, "A1")]);
    let early = token_of(&log.apply(checkout(9, 1, "cad", 1)));
    assert!(log.state.checkout_counts().by_feature().is_empty());
    log.apply(checkin(9, 2, early));
    at_format_7(&mut log);
    log.apply(checkout(1, 1, "cad", 2));
    log.apply(checkout(1, 1, "cad", 2)); // a retry of the same request
    log.apply(checkout(2, 1, "cad", 1)); // in use
    log.apply(checkout(3, 1, "cad", 5)); // more than licensed
    let counts =
        &log.state.checkout_counts().by_feature()[&("acme".to_string(), "cad".to_string())];
    assert_eq!(counts.granted, 1);
    assert_eq!(counts.denied.get("in_use"), Some(&1));
    assert_eq!(counts.denied.get("exceeds_licensed"), Some(&1));
    assert_eq!(counts.denied.values().sum::<u64>(), 2);
}

// A removal is a command of record format 7: a format-6 log cannot hold it.
#[test]
fn a_removal_is_not_written_in_format_6() {
    let command = Command::RemoveGrants {
        tokens: vec![],
        asked: "session 1".into(),
        author: "CN=admin".into(),
    };
    assert!(codec::encode_as(6, &command).is_err());
    assert_eq!(command.format(), 7);
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
    assert_eq!(log.state.in_use("acme", "cad"), 0);
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
    assert_eq!(log.state.in_use("acme", "cad"), 2);
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
    assert_eq!(log.state.in_use("acme", "cad"), DEDUP_WINDOW as u32 + 1);
}

// Grant tokens come from the entry's term, index and slot, so every grant in a batch differs.
#[test]
fn tokens_are_term_index_slot() {
    let mut state = bootstrapped_state();
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
    let outcomes = state.apply_batch(
        LogPosition {
            term: Term(4),
            index: LogIndex(17),
        },
        &batch,
    );
    assert_eq!(
        token_of(&outcomes[1]),
        GrantToken {
            term: Term(4),
            index: LogIndex(17),
            slot: 1
        }
    );
    assert_eq!(
        token_of(&outcomes[2]),
        GrantToken {
            term: Term(4),
            index: LogIndex(17),
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
        term: Term(9),
        index: LogIndex(9),
        slot: 9,
    };
    assert_eq!(log.apply(checkin(1, 2, bogus)), Outcome::UnknownGrant);
    assert_eq!(log.state.in_use("acme", "cad"), 1);
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
    assert_eq!(log.state.in_use("acme", "cad"), 1);
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
    assert_eq!(log.state.in_use("acme", "cad"), 0);
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
    assert_eq!(log.state.seats_licensed("acme", "cad"), (3, 3));
    let held = log.apply(checkout(1, 1, "cad", 3));
    assert!(matches!(held, Outcome::Granted { .. }));
    let new_year = Date::parse("01-jan-2027").unwrap().start_ms();
    log.apply_at(new_year, Command::Expire { sessions: vec![] });
    assert_eq!(log.state.seats_licensed("acme", "cad"), (3, 1));
    assert_eq!(
        log.state.in_use("acme", "cad"),
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

// A file with an expired line among valid ones is imported on apply: the
// expired line is held and counts 0 seats, and the feature summary gives the
// seats per expiry. A file whose every line has expired at state time is refused.
#[test]
fn expired_lines_are_imported_as_expired() {
    let mut log = Log::new();
    let dated = Expiry::On(Date::parse("31-dec-2099").unwrap());
    let expired = Expiry::On(Date::parse("31-dec-2025").unwrap());
    let outcome = log.import(
        "acme.lic",
        vec![
            line("cad", 25, dated, "s1"),
            line("cad", 10, expired, "s2"),
            line("cad", 5, Expiry::Permanent, "s3"),
        ],
    );
    assert!(
        matches!(outcome, Outcome::Imported { lines: 3, .. }),
        "{outcome:?}"
    );
    assert_eq!(log.state.seats_licensed("acme", "cad"), (40, 30));
    let summary = log.state.features();
    let by_expiry: Vec<String> = summary[0].by_expiry.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        by_expiry,
        [
            "25 until 31-dec-2099",
            "5 permanent",
            "10 expired on 31-dec-2025"
        ]
    );
    assert_eq!(summary[0].unexpired, 30);

    let outcome = log.import(
        "old.lic",
        vec![
            line("sim", 3, expired, "s4"),
            line(
                "sim",
                2,
                Expiry::On(Date::parse("30-jun-2025").unwrap()),
                "s5",
            ),
        ],
    );
    assert!(
        matches!(&outcome, Outcome::LicenseUnverified { line: 3, reason }
            if reason == "old.lic: every feature line has expired, the last on 31-dec-2025 (line 3): the file would grant no seat (get a renewed file from the vendor)"),
        "{outcome:?}"
    );
    assert!(!log.state.licenses().contains_key("old.lic"));
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
            lines: 1,
            duplicates: 1,
            superseded: 0
        }
    );
    assert_eq!(log.state.seats_licensed("acme", "cad"), (4, 4));
}

// Removing or shrinking a license below the seats in use is refused: nothing held is lost.
#[test]
fn license_changes_never_strand_grants() {
    let mut log = Log::new();
    log.import("a.lic", vec![line("cad", 4, Expiry::Permanent, "s1")]);
    log.apply(checkout(1, 1, "cad", 3));
    let refusal = Outcome::LicenseRefused {
        vendor: "acme".into(),
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
            vendor: "acme".into(),
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
            cluster_name: CLUSTER.into(),
            cluster_id: None,
            lease_ms: 250,
            wait_ms: 350,
        },
    );
    log.apply_at(
        NOW_MS - 60_000,
        Command::Activate {
            term: Term(2),
            node: NodeId(2),
            cluster_name: CLUSTER.into(),
            cluster_id: None,
            lease_ms: 250,
            wait_ms: 350,
        },
    );
    assert_eq!(log.state.now_ms(), NOW_MS);
    let activation = log.state.activation().unwrap();
    assert_eq!(
        (activation.node, activation.term, activation.at_ms),
        (NodeId(2), Term(2), NOW_MS)
    );
    // The bootstrap's activation and these two.
    assert_eq!(log.state.activations(), 3);
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
                        let (grants, used) = (log.state.grants().len(), FEATURES.map(|f| log.state.in_use("acme", f)));
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
                        prop_assert_eq!(used, FEATURES.map(|f| log.state.in_use("acme", f)));
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
                    let slot = (grant.session.0 % 10) as u64;
                    seqs[slot as usize] += 1;
                    checkin(grant.session.0 as u64, seqs[slot as usize], grant.token)
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
                    Command::Expire { sessions: vec![SessionId(id.into())] }
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
                let (licensed, _) = log.state.seats_licensed("acme", feature);
                prop_assert!(log.state.in_use("acme", feature) <= licensed);
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

/// A line with every field given, for the pooling and supersession tests.
fn full_line(
    kind: LineKind,
    vendor: &str,
    version: &str,
    seats: u32,
    attributes: &[(&str, &str)],
    signature: &str,
) -> FeatureLine {
    let line = FeatureLine {
        kind,
        feature: "cad".to_string(),
        vendor: vendor.to_string(),
        version: version.to_string(),
        expiry: Expiry::Permanent,
        seats,
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cluster_id: None,
        host_ids: Vec::new(),
        signature: String::new(),
        line: 3,
    };
    // Each vendor signs with its own key ("rotated" signs acme's lines with a second key).
    let key = match signature {
        "key2" => VendorSigningKey::from_seed(Some(vendor), [8; 32]),
        _ if vendor == "acme" => acme_key(),
        _ => VendorSigningKey::from_seed(Some(vendor), [9; 32]),
    };
    let mut line = line;
    signature::sign_held(&key, CLUSTER, &mut line);
    line
}

/// A check-out of `vendor`'s cad in `version` or higher.
fn checkout_of(session: u64, vendor: &str, version: &str, count: u32) -> Command {
    Command::Checkout {
        request: RequestId {
            session: SessionId(session.into()),
            seq: 1,
        },
        vendor: vendor.to_string(),
        feature: "cad".to_string(),
        version: version.to_string(),
        count,
        user: "ada".to_string(),
        host: "ws1".to_string(),
    }
}

// A line bound to host ids counts only while a majority of the voters report
// a listed one: not before any report, while two of three do, not once two
// report other ids (a grant made earlier is kept, new check-outs are
// refused), and again when the machines are back. Unbound lines always count.
#[test]
fn lines_bound_to_host_ids_count_while_a_majority_of_voters_report_one() {
    use raftlm::license::HostId;
    let host = |n: u8| HostId([n; 16]);
    let report = |ids: [u8; 3]| Command::ReportHosts {
        voters: ids
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId(i as u64 + 1), Some(host(*n))))
            .collect(),
        author: "node 1 (active)".into(),
    };
    let mut bound = line("cad", 4, Expiry::Permanent, "SN-bound");
    bound.host_ids = vec![host(1), host(2), host(3)];
    let bound = signed(bound);
    let mut log = Log::new();
    assert!(matches!(
        log.import("bound.lic", vec![bound]),
        Outcome::Imported { .. }
    ));
    assert!(matches!(
        log.apply(checkout(1, 1, "cad", 1)),
        Outcome::Denied {
            reason: DenyReason::HostsNotListed,
            ..
        }
    ));
    assert_eq!(log.state.seats_licensed("acme", "cad"), (4, 0));
    assert!(matches!(
        log.apply(report([1, 2, 9])),
        Outcome::HostsReported { voters: 3 }
    ));
    let granted = log.apply(checkout(2, 1, "cad", 3));
    assert!(matches!(granted, Outcome::Granted { .. }), "{granted:?}");
    assert_eq!(log.state.seats_licensed("acme", "cad"), (4, 4));
    log.apply(report([1, 8, 9]));
    assert!(matches!(
        log.apply(checkout(3, 1, "cad", 1)),
        Outcome::Denied {
            reason: DenyReason::HostsNotListed,
            available: 0,
            total: 0,
        }
    ));
    assert_eq!(
        log.state.in_use("acme", "cad"),
        3,
        "earlier grants are kept"
    );
    let summary = &log.state.features()[0];
    assert_eq!(summary.unexpired, 0);
    assert!(summary.by_expiry[0].hosts_unlisted);
    assert_eq!(
        summary.by_expiry[0].to_string(),
        "4 permanent (hosts not listed: count 0)"
    );
    log.apply(report([3, 2, 9]));
    assert!(matches!(
        log.apply(checkout(4, 1, "cad", 1)),
        Outcome::Granted { .. }
    ));
    // An unbound line counts whatever the voters report; the 4 seats held
    // under the bound line still count against the feature.
    log.apply(report([7, 8, 9]));
    log.import(
        "free.lic",
        vec![line("cad", 6, Expiry::Permanent, "SN-free")],
    );
    assert!(matches!(
        log.apply(checkout(5, 1, "cad", 3)),
        Outcome::Denied {
            reason: DenyReason::InUse,
            available: 2,
            total: 6,
        }
    ));
    assert!(matches!(
        log.apply(checkout(6, 1, "cad", 2)),
        Outcome::Granted { .. }
    ));
    // The binding is signed: a line whose host ids were changed does not verify.
    let mut forged = line("cad", 4, Expiry::Permanent, "SN-forged");
    forged.host_ids = vec![host(1), host(2), host(3)];
    let mut forged = signed(forged);
    forged.host_ids = vec![host(7), host(8), host(9)];
    assert!(matches!(
        log.import("forged.lic", vec![forged]),
        Outcome::LicenseUnverified { .. }
    ));
    // A report naming more voters than any cluster has is refused.
    let huge = Command::ReportHosts {
        voters: (0..=raftlm::license::state::HOST_REPORT_VOTERS_MAX as u64)
            .map(|n| (NodeId(n), None))
            .collect(),
        author: "node 1 (active)".into(),
    };
    assert!(matches!(log.apply(huge), Outcome::HostsRefused { .. }));
    assert_eq!(log.state.hosts().voters.len(), 3);
}

// Two vendors with a feature of the same name never share seats: a second vendor's
// 100 seats of "cad" add nothing to acme's, and each vendor's check-outs use its own.
#[test]
fn vendors_with_the_same_feature_never_share_seats() {
    let mut log = Log::new();
    log.import(
        "acme.lic",
        vec![full_line(LineKind::Feature, "acme", "1.0", 2, &[], "a")],
    );
    log.import(
        "beta.lic",
        vec![full_line(LineKind::Feature, "beta", "1.0", 100, &[], "b")],
    );
    assert_eq!(log.state.seats_licensed("acme", "cad"), (2, 2));
    assert!(matches!(
        log.apply(checkout_of(1, "acme", "", 2)),
        Outcome::Granted { .. }
    ));
    assert_eq!(
        log.apply(checkout_of(2, "acme", "", 1)),
        Outcome::Denied {
            reason: DenyReason::InUse,
            available: 0,
            total: 2
        }
    );
    assert!(matches!(
        log.apply(checkout_of(3, "beta", "", 50)),
        Outcome::Granted { .. }
    ));
    assert_eq!(
        log.apply(checkout_of(4, "gamma", "", 1)),
        Outcome::Denied {
            reason: DenyReason::NoSuchFeature,
            available: 0,
            total: 0
        }
    );
    assert_eq!(log.state.in_use("acme", "cad"), 2);
    assert_eq!(log.state.in_use("beta", "cad"), 50);
}

// An old and a renewed file imported together grant the renewal's count, whether the
// renewal is larger or smaller, and in whichever order they are imported.
#[test]
fn a_renewal_supersedes_the_old_file() {
    let old = full_line(
        LineKind::Feature,
        "acme",
        "2.0",
        25,
        &[("ISSUED", "01-jan-2026")],
        "old",
    );
    let renewal = full_line(
        LineKind::Feature,
        "acme",
        "2.0",
        10,
        &[("ISSUED", "15-nov-2026")],
        "new",
    );
    for order in [[&old, &renewal], [&renewal, &old]] {
        let mut log = Log::new();
        log.import("first.lic", vec![order[0].clone()]);
        let second = log.import("second.lic", vec![order[1].clone()]);
        assert!(matches!(second, Outcome::Imported { .. }), "{second:?}");
        assert_eq!(log.state.seats_licensed("acme", "cad"), (10, 10));
    }
}

// The same line re-signed (with a rotated key) counts once; two INCREMENTs with distinct
// serials count twice; a later issuance of the same serial replaces the earlier one.
#[test]
fn identical_content_once_distinct_serials_add() {
    let mut log = Log::new();
    let purchase = |sn: &str, seats, issued: &str, sig: &str| {
        full_line(
            LineKind::Increment,
            "acme",
            "1.0",
            seats,
            &[("SN", sn), ("ISSUED", issued)],
            sig,
        )
    };
    log.import("a.lic", vec![purchase("1", 5, "01-jan-2026", "key1")]);
    let resigned = log.import("b.lic", vec![purchase("1", 5, "01-jan-2026", "key2")]);
    assert_eq!(
        resigned,
        Outcome::Imported {
            name: "b.lic".into(),
            lines: 1,
            duplicates: 1,
            superseded: 0
        }
    );
    assert_eq!(log.state.seats_licensed("acme", "cad"), (5, 5));
    log.import("c.lic", vec![purchase("2", 5, "01-jan-2026", "key1")]);
    assert_eq!(log.state.seats_licensed("acme", "cad"), (10, 10));
    log.import("d.lic", vec![purchase("2", 7, "01-jun-2026", "key1")]);
    assert_eq!(log.state.seats_licensed("acme", "cad"), (12, 12));
}

// FlexNet's version rule: a request for version 2 is not served by a version-1 line, and a
// version-1 request may use a version-2 line.
#[test]
fn a_version_2_request_is_not_served_by_a_version_1_line() {
    let mut log = Log::new();
    log.import(
        "a.lic",
        vec![
            full_line(LineKind::Increment, "acme", "1.0", 3, &[("SN", "1")], "a"),
            full_line(LineKind::Increment, "acme", "2.0", 1, &[("SN", "2")], "b"),
        ],
    );
    assert!(matches!(
        log.apply(checkout_of(1, "acme", "2.0", 1)),
        Outcome::Granted { total: 1, .. }
    ));
    assert_eq!(
        log.apply(checkout_of(2, "acme", "2", 1)),
        Outcome::Denied {
            reason: DenyReason::InUse,
            available: 0,
            total: 1
        }
    );
    assert_eq!(
        log.apply(checkout_of(3, "acme", "3.0", 1)),
        Outcome::Denied {
            reason: DenyReason::VersionNotLicensed,
            available: 0,
            total: 0
        }
    );
    // Version 1 is served by the three version-1 seats.
    assert!(matches!(
        log.apply(checkout_of(4, "acme", "1.0", 3)),
        Outcome::Granted { available: 0, .. }
    ));
}

// A forged import — a line signed by a key the cluster does not trust, or edited after
// signing — is refused on apply by every replica and changes nothing.
#[test]
fn a_forged_import_is_refused_on_apply() {
    let mut log = Log::new();
    let mut stranger = line("cad", 5, Expiry::Permanent, "1");
    signature::sign_held(
        &VendorSigningKey::from_seed(Some("acme"), [5; 32]),
        CLUSTER,
        &mut stranger,
    );
    let outcome = log.import("forged.lic", vec![stranger]);
    assert!(
        matches!(&outcome, Outcome::LicenseUnverified { reason, .. } if reason.contains("does not trust")),
        "{outcome:?}"
    );
    let mut edited = line("cad", 5, Expiry::Permanent, "1");
    edited.seats = 500;
    let outcome = log.import("edited.lic", vec![edited]);
    assert!(
        matches!(&outcome, Outcome::LicenseUnverified { reason, .. } if reason.contains("does not match")),
        "{outcome:?}"
    );
    let mut other_cluster = line("cad", 5, Expiry::Permanent, "1");
    signature::sign_held(&acme_key(), "OTHER", &mut other_cluster);
    assert!(matches!(
        log.import("moved.lic", vec![other_cluster]),
        Outcome::LicenseUnverified { .. }
    ));
    assert!(log.state.licenses().is_empty());
    assert_eq!(log.state.seats_licensed("acme", "cad"), (0, 0));
}

// A state holding a line that does not verify (a forged snapshot) is detected, so a
// node never installs it; an honest state passes.
#[test]
fn a_forged_snapshot_line_does_not_verify() {
    let mut log = Log::new();
    log.import("a.lic", vec![line("cad", 5, Expiry::Permanent, "1")]);
    assert_eq!(log.state.verify_lines(), Ok(()));
    // Change one character of the line's signature in the encoded state (what a forged
    // InstallSnapshot would carry): same length, so it still decodes.
    let mut bytes = codec::encode(&log.state).unwrap();
    let sign = log.state.licenses()["a.lic"][0].signature.clone();
    let at = bytes
        .windows(sign.len())
        .position(|w| w == sign.as_bytes())
        .unwrap()
        + sign.len()
        - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let forged: LicenseState = codec::decode(&bytes).unwrap();
    let error = forged.verify_lines().unwrap_err();
    assert!(error.contains("does not match"), "{error}");
}

// The cluster name is recorded by the first activation; a node configured for another
// cluster cannot activate.
#[test]
fn another_cluster_name_cannot_activate() {
    let mut log = Log::new();
    let outcome = log.apply(Command::Activate {
        term: Term(2),
        node: NodeId(2),
        cluster_name: "OTHER".into(),
        cluster_id: None,
        lease_ms: 250,
        wait_ms: 350,
    });
    assert_eq!(
        outcome,
        Outcome::WrongCluster {
            held: CLUSTER.into(),
            asked: "OTHER".into()
        }
    );
    assert_eq!(log.state.cluster_name(), Some(CLUSTER));
}

// A trusted key cannot be untrusted while an imported license holds lines only it
// verifies; after the license is removed it can, and its lines no longer import.
#[test]
fn untrusting_a_key_in_use_is_refused() {
    let mut log = Log::new();
    log.import("a.lic", vec![line("cad", 5, Expiry::Permanent, "1")]);
    let id = raftlm::license::state::key_id_of(&acme_key().public_key().to_bytes());
    let untrust = |id: &str| Command::UntrustKey {
        key_id: id.to_string(),
        author: "CN=test".into(),
    };
    assert_eq!(
        log.apply(untrust(&id)),
        Outcome::KeyInUse {
            license: "a.lic".into()
        }
    );
    log.apply(Command::RemoveLicense {
        name: "a.lic".into(),
        author: "CN=test".into(),
    });
    assert_eq!(
        log.apply(untrust(&id)),
        Outcome::KeyUntrusted { key_id: id.clone() }
    );
    assert_eq!(log.apply(untrust(&id)), Outcome::NoSuchKey);
    assert!(matches!(
        log.import("a.lic", vec![line("cad", 5, Expiry::Permanent, "1")]),
        Outcome::LicenseUnverified { .. }
    ));
}

/// An acme `feature` line issued on `issued` (dd-mmm-yyyy), signed.
fn issued_line(feature: &str, issued: &str, serial: &str) -> FeatureLine {
    let mut line = line(feature, 5, Expiry::Permanent, serial);
    line.attributes.push(("ISSUED".into(), issued.into()));
    signed(line)
}

// No license date moves state time. A line issued decades ahead (a year typed
// wrong) is refused on apply, naming the date and the cluster's time, and
// state time stays where the clocks put it; so is one two days ahead. A
// renewal issued tomorrow (a vendor east of UTC) is accepted, and the next
// grant starts at the active node's stamp, not at tomorrow's midnight.
#[test]
fn license_dates_never_move_state_time() {
    const DAY_MS: u64 = 86_400_000;
    let mut log = Log::new();
    let outcome = log.import("typo.lic", vec![issued_line("cad", "07-dec-2062", "1")]);
    match &outcome {
        Outcome::LicenseUnverified { line, reason } => {
            assert_eq!(*line, 3);
            assert!(
                reason.contains("is issued 07-dec-2062 but the cluster's time is ")
                    && reason.contains("ask the vendor for a corrected file"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(log.state.now_ms(), NOW_MS);
    assert!(log.state.licenses().is_empty());
    let in_two_days = Date::from_unix_ms(NOW_MS + 2 * DAY_MS).to_string();
    assert!(matches!(
        log.import("early.lic", vec![issued_line("cad", &in_two_days, "2")]),
        Outcome::LicenseUnverified { .. }
    ));
    let tomorrow = Date::from_unix_ms(NOW_MS + DAY_MS).to_string();
    assert!(matches!(
        log.import("renewal.lic", vec![issued_line("cad", &tomorrow, "3")]),
        Outcome::Imported { .. }
    ));
    assert_eq!(log.state.now_ms(), NOW_MS);
    let token = token_of(&log.apply_at(NOW_MS + 5, checkout(1, 1, "cad", 1)));
    assert_eq!(log.state.grant(&token).unwrap().since_ms, NOW_MS + 5);
    assert_eq!(log.state.now_ms(), NOW_MS + 5);
}

// A node's vendor_keys bootstrap the trust set once in a cluster's life: after
// an administrator untrusts every key, another bootstrap (the next import, a
// failover) changes nothing, and the state says it has trusted keys before.
#[test]
fn a_vendor_keys_bootstrap_happens_once() {
    let mut state = LicenseState::new();
    let acme = acme_key().public_key().to_bytes();
    let bootstrap = Command::BootstrapTrust {
        keys: vec![(Some("acme".into()), acme)],
        author: "node 1 (vendor_keys bootstrap)".into(),
    };
    let mut index = 0;
    let mut apply = |state: &mut LicenseState, command: &Command| {
        index += 1;
        let batch = Batch {
            now_ms: NOW_MS,
            commands: vec![command.clone()],
        };
        let outcome = state
            .apply_batch(
                LogPosition {
                    term: Term(1),
                    index: LogIndex(index),
                },
                &batch,
            )
            .remove(0);
        state.check_invariants();
        outcome
    };
    assert!(!state.trusted_ever());
    let id = raftlm::license::state::key_id_of(&acme);
    assert_eq!(
        apply(&mut state, &bootstrap),
        Outcome::KeysBootstrapped {
            key_ids: vec![id.clone()]
        }
    );
    assert!(state.trusted_ever());
    let untrust = Command::UntrustKey {
        key_id: id.clone(),
        author: "CN=admin".into(),
    };
    assert_eq!(
        apply(&mut state, &untrust),
        Outcome::KeyUntrusted { key_id: id.clone() }
    );
    assert_eq!(apply(&mut state, &bootstrap), Outcome::BootstrapDone);
    assert!(state.trusted_keys().is_empty() && state.trusted_ever());
    // An administrator can still trust it again.
    let trust = Command::TrustKey {
        vendor: Some("acme".into()),
        key: acme,
        author: "CN=admin".into(),
    };
    assert_eq!(
        apply(&mut state, &trust),
        Outcome::KeyTrusted { key_id: id }
    );
    // A bootstrap with an unusable key (the identity point: weak) trusts none of its keys.
    let mut fresh = LicenseState::new();
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let bad = Command::BootstrapTrust {
        keys: vec![(Some("acme".into()), acme), (None, weak)],
        author: "node 2 (vendor_keys bootstrap)".into(),
    };
    assert!(matches!(apply(&mut fresh, &bad), Outcome::BadKey { .. }));
    assert!(fresh.trusted_keys().is_empty() && !fresh.trusted_ever());
}

// A flood of throw-away sessions whose check-outs are denied leaves no
// session behind (so it cannot fill the session table and lock anyone out),
// a retry of a denied request gets its first answer even after seats were
// freed, the remembered answers stay bounded, and a grant still creates its
// session as before.
#[test]
fn denials_create_no_session_and_retries_get_their_first_answer() {
    let mut log = Log::new();
    log.import("acme.lic", vec![line("cad", 1, Expiry::Permanent, "s1")]);
    let token = token_of(&log.apply(checkout(1, 1, "cad", 1)));
    assert_eq!(log.state.sessions().len(), 1);

    let flood = raftlm::license::state::UNHELD_ANSWERS_REMEMBERED as u64 + 4_000;
    for session in 0..flood {
        let outcome = log.apply_unchecked(checkout(1_000 + session, 1, "cad", 1));
        assert!(matches!(outcome, Outcome::Denied { .. }), "{outcome:?}");
    }
    log.state.check_invariants();
    assert_eq!(log.state.sessions().len(), 1, "denials created sessions");

    // The seat is freed; the retry of the last denied request still gets its denial.
    log.apply(checkin(1, 2, token));
    let last = 1_000 + flood - 1;
    let retried = log.apply(checkout(last, 1, "cad", 1));
    assert!(
        matches!(retried, Outcome::Denied { .. }),
        "a retry got a different answer: {retried:?}"
    );
    // The oldest denials are forgotten: their retry is evaluated afresh.
    let forgotten = log.apply(checkout(1_000, 1, "cad", 1));
    assert!(
        matches!(forgotten, Outcome::Granted { .. }),
        "{forgotten:?}"
    );
    assert!(
        log.state
            .sessions()
            .contains_key(&SessionId(1_000u64.into()))
    );
    // A new request of a throw-away session is evaluated afresh too.
    let fresh = log.apply(checkout(last, 2, "cad", 1));
    assert!(matches!(fresh, Outcome::Denied { .. }), "{fresh:?}");
}

// An activation is refused when the new node waited less than the previous
// active node's lease could still run; it is recorded once the wait covers
// it, and a node is never held to its own earlier lease.
#[test]
fn activation_must_wait_out_the_previous_lease() {
    let mut log = Log::new();
    let activate = |term: u64, node: u64, lease_ms: u64, wait_ms: u64| Command::Activate {
        term: Term(term),
        node: NodeId(node),
        cluster_name: CLUSTER.into(),
        cluster_id: None,
        lease_ms,
        wait_ms,
    };
    assert_eq!(log.apply(activate(2, 2, 390, 490)), Outcome::Activated);
    let activations = log.state.activations();
    assert_eq!(
        log.apply(activate(3, 3, 150, 150)),
        Outcome::TimingIncompatible {
            previous: NodeId(2),
            lease_ms: 390,
            wait_ms: 150,
        }
    );
    assert_eq!(
        log.state.activations(),
        activations,
        "a refused activation was recorded"
    );
    assert_eq!(log.apply(activate(4, 1, 250, 390)), Outcome::Activated);
    assert_eq!(log.apply(activate(5, 1, 100, 100)), Outcome::Activated);
}

// The sweeper's log line names whose seats an expiry frees: each session's
// handle, user, host and seats, the first EXPIRED_SESSIONS_NAMED_MAX of them,
// and a count of the rest.
#[test]
fn expiry_log_lines_name_the_sessions() {
    use raftlm::server::sessions::{EXPIRED_SESSIONS_NAMED_MAX, expired_text};
    let mut log = Log::new();
    log.import(
        "a.lic",
        vec![
            line("cad", 100, Expiry::Permanent, "SN-1"),
            line("cam", 100, Expiry::Permanent, "SN-2"),
        ],
    );
    assert!(matches!(
        log.apply(checkout(1, 1, "cad", 2)),
        Outcome::Granted { .. }
    ));
    assert!(matches!(
        log.apply(checkout(1, 2, "cam", 1)),
        Outcome::Granted { .. }
    ));
    let one = SessionId(1u64.into());
    let unknown = SessionId(2u64.into());
    assert_eq!(
        expired_text(&log.state, &[one, unknown]),
        format!("session {one} (ada@ws1: cad x2, cam x1), session {unknown} (no seats)")
    );
    let many: Vec<SessionId> = (100..100 + EXPIRED_SESSIONS_NAMED_MAX as u64 + 3)
        .map(|n| SessionId(n.into()))
        .collect();
    let text = expired_text(&log.state, &many);
    assert!(text.ends_with(", and 3 more"), "{text}");
    assert_eq!(text.matches("session ").count(), EXPIRED_SESSIONS_NAMED_MAX);
}
