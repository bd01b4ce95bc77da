//! Writes the seed corpora under `fuzz/seeds/<target>/` (run from `fuzz/`:
//! `cargo run --example seeds`). Each seed is a valid input built by the
//! library itself, so the fuzzers start from deep inside each format.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use openraft::error::{Fatal, Infallible, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, CommittedLeaderId, EntryPayload, Membership, SnapshotSegmentId, StorageIOError,
};
use raftlm::codec;
use raftlm::license::signature::{self, VendorSigningKey};
use raftlm::license::state::{
    Batch, Command, GrantToken, LicenseState, LogPosition, NodeId, Outcome, RequestId, SessionId,
    Term,
};
use raftlm::license::{Date, Expiry, FeatureLine, LineKind};
use raftlm::raft::{Entry, LogId, Member, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use serde::Serialize;

const NOW_MS: u64 = 1_795_000_000_000;
const CLUSTER: &str = "LICSRV";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// A codec seed: the selector byte, then the record.
fn codec_seed(selector: u8, name: &str, value: &impl Serialize) {
    let mut bytes = vec![selector];
    bytes.extend(codec::encode(value).unwrap());
    write("codec", &format!("{selector:02}-{name}"), &bytes);
}

/// The key the fuzz targets and seeds trust (the same one `license_file` signs with).
fn key() -> VendorSigningKey {
    VendorSigningKey::from_seed(None, [7; 32])
}

fn line(kind: LineKind, feature: &str, seats: u32, expiry: Expiry, serial: &str) -> FeatureLine {
    let mut line = FeatureLine {
        kind,
        feature: feature.to_string(),
        vendor: "acme".to_string(),
        version: "2.0".to_string(),
        expiry,
        seats,
        attributes: vec![
            ("ISSUED".to_string(), "01-jan-2026".to_string()),
            ("SN".to_string(), serial.to_string()),
        ],
        cluster_id: None,
        host_ids: Vec::new(),
        signature: String::new(),
        line: 3,
    };
    signature::sign_held(&key(), CLUSTER, &mut line);
    line
}

fn request(session: u128, seq: u64) -> RequestId {
    RequestId {
        session: SessionId(session),
        seq,
    }
}

fn checkout(session: u128, seq: u64, feature: &str, count: u32) -> Command {
    Command::Checkout {
        request: request(session, seq),
        vendor: "acme".to_string(),
        feature: feature.to_string(),
        version: String::new(),
        count,
        user: "ada".to_string(),
        host: "ws1".to_string(),
    }
}

fn bootstrap() -> Vec<Command> {
    vec![
        Command::Activate {
            term: Term(1),
            node: NodeId(1),
            cluster_name: CLUSTER.to_string(),
            cluster_id: None,
            lease_ms: 250,
            wait_ms: 350,
        },
        Command::TrustKey {
            vendor: None,
            key: key().public_key().to_bytes(),
            author: "CN=admin".to_string(),
        },
    ]
}

fn import(name: &str) -> Command {
    Command::ImportLicense {
        name: name.to_string(),
        lines: vec![
            line(LineKind::Feature, "cad", 5, Expiry::Permanent, "1"),
            line(
                LineKind::Increment,
                "cad",
                3,
                Expiry::On(Date::from_ymd(2027, 12, 31).unwrap()),
                "2",
            ),
            line(LineKind::Feature, "render", 2, Expiry::Permanent, "3"),
        ],
        author: "CN=admin".to_string(),
    }
}

/// Every kind of command, for batches.
fn every_command() -> Vec<Command> {
    let mut commands = bootstrap();
    commands.push(import("acme.lic"));
    commands.push(checkout(1, 1, "cad", 2));
    commands.push(checkout(2, 1, "render", 1));
    commands.push(Command::Checkin {
        request: request(1, 2),
        token: GrantToken {
            term: 1,
            index: 3,
            slot: 0,
        },
    });
    commands.push(Command::Expire {
        sessions: vec![SessionId(2)],
    });
    commands.push(Command::RemoveLicense {
        name: "other.lic".to_string(),
        author: "CN=admin".to_string(),
    });
    commands.push(Command::UntrustKey {
        key_id: "0011223344556677".to_string(),
        author: "CN=admin".to_string(),
    });
    commands
}

/// A state with licenses, grants, sessions and an expired session, at index 3.
fn busy_state() -> LicenseState {
    let mut state = LicenseState::new();
    state.apply_batch(
        LogPosition { term: 1, index: 1 },
        &Batch {
            now_ms: NOW_MS,
            commands: bootstrap(),
        },
    );
    state.apply_batch(
        LogPosition { term: 1, index: 2 },
        &Batch {
            now_ms: NOW_MS,
            commands: vec![import("acme.lic")],
        },
    );
    state.apply_batch(
        LogPosition { term: 1, index: 3 },
        &Batch {
            now_ms: NOW_MS,
            commands: vec![
                checkout(1, 1, "cad", 2),
                checkout(2, 1, "cad", 1),
                checkout(3, 1, "render", 1),
                Command::Expire {
                    sessions: vec![SessionId(3)],
                },
            ],
        },
    );
    state.check_invariants();
    state
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> StoredMembership {
    let nodes: BTreeMap<u64, Member> = (1..=3)
        .map(|id| {
            (
                id,
                Member {
                    address: format!("127.0.0.1:2700{id}"),
                    peer_address: format!("127.0.0.1:2710{id}"),
                },
            )
        })
        .collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    StoredMembership::new(Some(log_id(1, 0)), Membership::new(vec![voters], nodes))
}

fn codec_seeds() {
    let state = busy_state();
    let live = (Some(log_id(1, 3)), membership(), state.clone());
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 3)),
        last_membership: membership(),
        snapshot_id: "1-3-0".to_string(),
    };
    let batch = Batch {
        now_ms: NOW_MS,
        commands: every_command(),
    };
    let entries: Vec<Entry> = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(membership().membership().clone()),
        },
        Entry {
            log_id: log_id(1, 3),
            payload: EntryPayload::Normal(batch.clone()),
        },
    ];
    for (i, entry) in entries.iter().enumerate() {
        codec_seed(0, &format!("entry{i}"), entry);
    }
    let vote: Vote = Vote::new_committed(2, 1);
    codec_seed(1, "vote", &vote);
    codec_seed(1, "vote-uncommitted", &Vote::new(3, 2));
    codec_seed(2, "log-id", &log_id(2, 41));
    codec_seed(3, "marker", &(Some(vote),));
    codec_seed(3, "marker-empty", &(None::<Vote>,));
    codec_seed(4, "created", &"raftlm".to_string());
    codec_seed(5, "snapshot-meta", &meta);
    codec_seed(6, "live", &live);
    codec_seed(
        6,
        "live-empty",
        &(
            None::<LogId>,
            StoredMembership::default(),
            LicenseState::new(),
        ),
    );
    codec_seed(7, "state", &state);
    codec_seed(8, "batch", &batch);
    for (i, command) in every_command().iter().enumerate() {
        codec_seed(9, &format!("command{i}"), command);
    }
    let mut replay = LicenseState::new();
    let outcomes = replay.apply_batch(LogPosition { term: 1, index: 1 }, &batch);
    codec_seed(10, "outcomes", &outcomes);
    codec_seed(
        10,
        "outcomes-denied",
        &vec![Outcome::Stale, Outcome::SessionExpired],
    );
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(1, 0)),
        entries,
        leader_commit: Some(log_id(1, 2)),
    };
    codec_seed(11, "append", &append);
    codec_seed(
        12,
        "vote-request",
        &VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 9))),
    );
    let install = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: meta.clone(),
        offset: 0,
        data: codec::encode(&live).unwrap(),
        done: true,
    };
    codec_seed(13, "install", &install);
    let ok: Result<AppendEntriesResponse<u64>, RaftError<u64, Infallible>> =
        Ok(AppendEntriesResponse::Success);
    codec_seed(14, "append-ok", &ok);
    let conflict: Result<AppendEntriesResponse<u64>, RaftError<u64, Infallible>> =
        Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 3)));
    codec_seed(14, "append-higher", &conflict);
    let stopped: Result<AppendEntriesResponse<u64>, RaftError<u64, Infallible>> =
        Err(RaftError::Fatal(Fatal::Stopped));
    codec_seed(14, "append-stopped", &stopped);
    let storage: Result<VoteResponse<u64>, RaftError<u64, Infallible>> = Err(RaftError::Fatal(
        Fatal::StorageError(StorageIOError::read_logs(AnyError::error("disk")).into()),
    ));
    codec_seed(14, "vote-storage-error", &storage);
    let granted: Result<VoteResponse<u64>, RaftError<u64, Infallible>> =
        Ok(VoteResponse::new(Vote::new(3, 2), Some(log_id(2, 9)), true));
    codec_seed(14, "vote-granted", &granted);
    let installed: Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> =
        Ok(InstallSnapshotResponse { vote });
    codec_seed(15, "install-ok", &installed);
    let mismatch: Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> = Err(
        RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: "1-3-0".to_string(),
                offset: 0,
            },
            got: SnapshotSegmentId {
                id: "1-3-1".to_string(),
                offset: 7,
            },
        })),
    );
    codec_seed(15, "install-mismatch", &mismatch);
    codec_seed(15, "member", &Member::default());
}

fn snapshot_seeds() {
    let seed = |name: &str, last: Option<LogId>, state: &LicenseState, commands: Vec<Command>| {
        let input = (
            last,
            membership(),
            state.clone(),
            Batch {
                now_ms: NOW_MS + 1_000,
                commands,
            },
        );
        write("snapshot", name, &codec::encode(&input).unwrap());
    };
    let empty = LicenseState::new();
    seed("empty-bootstrap", None, &empty, every_command());
    let busy = busy_state();
    seed(
        "busy-use",
        Some(log_id(1, 3)),
        &busy,
        vec![
            checkout(1, 2, "cad", 1),
            checkout(4, 1, "cad", 9),
            checkout(3, 2, "render", 1),
            Command::Checkin {
                request: request(2, 2),
                token: GrantToken {
                    term: 1,
                    index: 3,
                    slot: 1,
                },
            },
            Command::Expire {
                sessions: vec![SessionId(1)],
            },
        ],
    );
    seed(
        "busy-admin",
        Some(log_id(1, 3)),
        &busy,
        vec![
            import("second.lic"),
            Command::RemoveLicense {
                name: "acme.lic".to_string(),
                author: "CN=admin".to_string(),
            },
            Command::UntrustKey {
                key_id: key().public_key().key_id().to_string(),
                author: "CN=admin".to_string(),
            },
            Command::Activate {
                term: Term(2),
                node: NodeId(2),
                cluster_name: "OTHER".to_string(),
                cluster_id: None,
                lease_ms: 250,
                wait_ms: 100,
            },
        ],
    );
}

fn license_file_seeds(repo: &Path) {
    let mut files = Vec::new();
    for dir in ["tests/data/licenses", "tests/data/licenses/bad"] {
        for entry in fs::read_dir(repo.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "lic") {
                files.push(path);
            }
        }
    }
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        write("license_file", &name, &fs::read(&path).unwrap());
    }
    // A signed file, as a vendor ships it.
    let text = fs::read_to_string(repo.join("tests/data/licenses/good.lic")).unwrap();
    let signed = signature::sign_text("good.lic", &text, &key()).unwrap();
    write("license_file", "signed.lic", signed.as_bytes());
}

fn config_seeds(repo: &Path) {
    for entry in fs::read_dir(repo.join("docs/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            write("config", &name, &fs::read(&path).unwrap());
        }
    }
    let minimal = r#"node_id = 1
cluster_name = "LICSRV"
data_dir = "data"
[tls]
plaintext = true
[access_point]
mode = "command"
address = "10.0.0.100:27000"
prefix = 24
interface = "eth0"
up = ["ip", "addr", "add", "{ip}/{prefix}", "dev", "{interface}"]
down = ["ip", "addr", "del", "{ip}/{prefix}", "dev", "{interface}"]
[timing]
heartbeat_ms = 100
election_timeout_min_ms = 400
election_timeout_max_ms = 800
lease_ms = 250
lease_margin_ms = 100
session_ttl_ms = 30000
[batching]
commands_max = 512
linger_us = 200
in_flight_max = 4
[snapshot]
logs_since_last = 5000
logs_kept = 1000
[[nodes]]
id = 1
address = "10.0.0.1:27001"
peer_address = "10.0.0.1:27101"
[[nodes]]
id = 2
address = "[::1]:27002"
peer_address = "node2.example:27102"
"#;
    write("config", "full-plaintext.toml", minimal.as_bytes());
    // The input that found the overflow in the session-TTL check (README, findings).
    let huge = minimal.replace(
        "election_timeout_max_ms = 800",
        "election_timeout_max_ms = 7000000000000000000",
    );
    write(
        "config",
        "regression-huge-election-timeout.toml",
        huge.as_bytes(),
    );
}

fn key_file_seeds() {
    let any = key();
    let acme = VendorSigningKey::from_seed(Some("acme"), [9; 32]);
    write(
        "key_file",
        "any.pub",
        any.public_key().to_file_text().as_bytes(),
    );
    write("key_file", "any.key", any.to_file_text().as_bytes());
    write(
        "key_file",
        "acme.pub",
        acme.public_key().to_file_text().as_bytes(),
    );
    write("key_file", "acme.key", acme.to_file_text().as_bytes());
    write(
        "key_file",
        "servers",
        b"licsrv:27000, 10.0.0.1:27001,[::1]:27002,node3",
    );
}

fn cert_seeds() {
    use raftlm::tls::cert::{self, IssueRequest, Subject};
    let dir = std::env::temp_dir().join(format!("raftlm-fuzz-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let now = 1_795_000_000;
    let ca = cert::init_ca(&dir.join("ca"), CLUSTER, 365, now).unwrap();
    let node = cert::issue(
        &dir.join("ca"),
        &dir.join("out"),
        &IssueRequest {
            subject: Subject::Node { id: 2 },
            extra_sans: vec!["127.0.0.1".to_string(), "licsrv.example".to_string()],
            not_before_unix: now - 60,
            not_after_unix: now + 86_400,
        },
        false,
    )
    .unwrap();
    for (name, issued) in [("ca", &ca), ("node", &node)] {
        let pem = fs::read_to_string(&issued.cert).unwrap();
        write("cert", &format!("{name}.pem"), pem.as_bytes());
        for der in raftlm::tls::identity::parse_pem_certs(&pem).unwrap() {
            write("cert", &format!("{name}.der"), &der);
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let _ = fs::remove_dir_all(root());
    codec_seeds();
    snapshot_seeds();
    license_file_seeds(&repo);
    config_seeds(&repo);
    key_file_seeds();
    cert_seeds();
    for target in [
        "codec",
        "snapshot",
        "license_file",
        "config",
        "key_file",
        "cert",
    ] {
        let count = fs::read_dir(root().join(target)).unwrap().count();
        println!("{target}: {count} seeds");
    }
}
