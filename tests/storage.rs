//! The sled log store and state-machine store: openraft's conformance suite,
//! restart (write, drop, reopen, read back and replay), and start-up on a
//! damaged data directory.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageHelper, StorageIOError,
};
use raftlm::license::signature::{self, VendorSigningKey};
use raftlm::license::state::{
    Batch, Command, GrantToken, LicenseState, LogIndex, Outcome, RequestId, SessionId, Term,
};
use raftlm::license::{Expiry, FeatureLine, LineKind};
use raftlm::raft::log_store::LogStore;
use raftlm::raft::state_machine::StateMachineStore;
use raftlm::raft::store::{self, StoreError};
use raftlm::raft::{Entry, LogId, StorageError, StoredMembership, TypeConfig, Vote};
use tempfile::TempDir;

/// Builds our stores in a fresh temporary directory for each suite case.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) =
            store::open(dir.path()).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId {
        leader_id: CommittedLeaderId::new(term, 1),
        index,
    }
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> Entry {
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], ())),
    }
}

fn normal(term: u64, index: u64, batch: Batch) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(batch),
    }
}

/// A batch that activates the cluster `LICSRV`, trusts acme's key and
/// imports 5 seats of `cad` signed with it.
fn import_cad() -> Batch {
    let key = VendorSigningKey::from_seed(Some("acme"), [7; 32]);
    let mut line = FeatureLine {
        kind: LineKind::Feature,
        feature: "cad".into(),
        vendor: "acme".into(),
        version: "2.0".into(),
        expiry: Expiry::Permanent,
        seats: 5,
        attributes: Vec::new(),
        cluster_id: None,
        host_ids: Vec::new(),
        signature: String::new(),
        line: 1,
    };
    signature::sign_held(&key, "LICSRV", &mut line);
    Batch {
        now_ms: 1_000,
        commands: vec![
            Command::Activate {
                term: raftlm::license::state::Term(1),
                node: raftlm::license::state::NodeId(1),
                cluster_name: "LICSRV".into(),
                cluster_id: None,
                lease_ms: 250,
                wait_ms: 350,
            },
            Command::TrustKey {
                vendor: Some("acme".into()),
                key: key.public_key().to_bytes(),
                author: "CN=test".into(),
            },
            Command::ImportLicense {
                name: "site.lic".into(),
                lines: vec![line],
                author: "CN=test".into(),
            },
        ],
    }
}

/// A batch in which session `session` checks out `count` seats of `cad`.
fn checkout(session: u64, count: u32, now_ms: u64) -> Batch {
    Batch {
        now_ms,
        commands: vec![Command::Checkout {
            request: RequestId {
                session: SessionId(session.into()),
                seq: 1,
            },
            vendor: "acme".into(),
            feature: "cad".into(),
            version: String::new(),
            count,
            user: "ada".into(),
            host: "ws1".into(),
        }],
    }
}

async fn reopen(dir: &Path) -> (LogStore, StateMachineStore) {
    store::open(dir).unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

// Our sled stores satisfy openraft's own storage contract (logs, vote, purge, truncate, snapshots).
#[test]
fn openraft_conformance_suite() {
    if let Err(e) = Suite::test_all(SledStoreBuilder) {
        panic!("openraft's storage suite failed: {e}");
    }
}

// Everything acknowledged to openraft (log, vote, committed, snapshot) is read back equal after a restart.
#[tokio::test]
async fn reopen_reads_back_log_vote_committed_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        membership(1, 0),
        normal(1, 1, import_cad()),
        normal(1, 2, checkout(7, 2, 2_000)),
        blank(2, 3),
    ];
    let vote = Vote::new_committed(2, 1);
    let (snapshot_meta, snapshot_bytes) = {
        let (mut log, mut sm) = store::open(dir.path()).unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(2, 3))).await.unwrap();
        sm.apply(entries.clone()).await.unwrap();
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        (snapshot.meta, snapshot.snapshot.into_inner())
    };

    let (mut log, mut sm) = reopen(dir.path()).await;
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 3)));
    assert_eq!(log.try_get_log_entries(0..).await.unwrap(), entries);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 3)));
    assert_eq!(state.last_purged_log_id, None);
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a stored snapshot");
    assert_eq!(current.meta, snapshot_meta);
    assert_eq!(current.snapshot.into_inner(), snapshot_bytes);
    let (applied, stored_membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 3)));
    assert_eq!(
        stored_membership,
        StoredMembership::new(Some(log_id(1, 0)), membership_of(&entries[0]))
    );
    assert_eq!(sm.last_applied(), Some(log_id(2, 3)));
}

// A node that led before it stopped starts as a follower of the same term:
// its own committed vote becomes its uncommitted vote, durably and with the
// marker file's floor lowered to match, so it opens again; a vote for
// another node, or one not committed, is left alone.
#[tokio::test]
async fn a_restored_leaders_vote_is_demoted_before_raft_starts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = store::open(dir.path()).unwrap();
        log.blocking_append(vec![membership(1, 0), blank(3, 1)])
            .await
            .unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
    }
    let (log, _) = reopen(dir.path()).await;
    // Node 2 was not the leader: nothing to demote.
    assert_eq!(log.demote_restored_leadership(2).unwrap(), None);
    let demoted = log.demote_restored_leadership(1).unwrap();
    assert_eq!(demoted, Some((Vote::new_committed(3, 1), Vote::new(3, 1))));
    drop(log);
    let (mut log, _) = reopen(dir.path()).await;
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    // Already a follower's vote: nothing more to do.
    assert_eq!(log.demote_restored_leadership(1).unwrap(), None);
    // A node that voted for another leader keeps its vote.
    log.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
    assert_eq!(log.demote_restored_leadership(1).unwrap(), None);
    drop(log);
    let (mut log, _) = reopen(dir.path()).await;
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(4, 2))
    );
}

fn membership_of(entry: &Entry) -> Membership<u64, raftlm::raft::Member> {
    match &entry.payload {
        EntryPayload::Membership(m) => m.clone(),
        _ => panic!("not a membership entry"),
    }
}

// Granted seats survive a restart: the snapshot restores them, and openraft replays the committed log after it.
#[tokio::test]
async fn reopen_keeps_granted_seats_and_replays_committed_log() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        membership(1, 0),
        normal(1, 1, import_cad()),
        normal(1, 2, checkout(7, 2, 2_000)),
        normal(1, 3, checkout(8, 1, 3_000)),
    ];
    let (at_snapshot, at_committed) = {
        let (mut log, mut sm) = store::open(dir.path()).unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        let outcomes = sm.apply(entries[..3].to_vec()).await.unwrap();
        let token = GrantToken {
            term: Term(1),
            index: LogIndex(2),
            slot: 0,
        };
        assert!(
            matches!(&outcomes[2][..], [Outcome::Granted { token: t, count: 2, .. }] if *t == token),
            "{outcomes:?}"
        );
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let at_snapshot = sm.read(LicenseState::clone);
        // Applied and committed after the snapshot: only the log and `committed` hold it.
        sm.apply(entries[3..].to_vec()).await.unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        log.purge(log_id(1, 1)).await.unwrap();
        (at_snapshot, sm.read(LicenseState::clone))
    };
    assert_eq!(at_snapshot.in_use("acme", "cad"), 2);
    assert_eq!(at_committed.in_use("acme", "cad"), 3);

    let (mut log, mut sm) = reopen(dir.path()).await;
    assert_eq!(
        sm.read(LicenseState::clone),
        at_snapshot,
        "the state is loaded from the snapshot"
    );
    assert_eq!(sm.last_applied(), Some(log_id(1, 2)));

    // What openraft does when a node starts: re-apply from last_applied + 1 to committed.
    let initial = StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(initial.committed, Some(log_id(1, 3)));
    assert_eq!(sm.last_applied(), Some(log_id(1, 3)));
    assert_eq!(sm.read(LicenseState::clone), at_committed);
    sm.read(LicenseState::check_invariants);

    // And a snapshot of the replayed state survives a further restart.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop((log, sm));
    let (_log, sm) = reopen(dir.path()).await;
    assert_eq!(sm.read(LicenseState::clone), at_committed);
    assert_eq!(sm.read(|s| s.grants().len()), 2);
}

// A purge interrupted after recording the purged id is finished at start-up, not reported as a hole.
#[tokio::test]
async fn interrupted_purge_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = store::open(dir.path()).unwrap();
        log.blocking_append((0..5).map(|i| blank(1, i)))
            .await
            .unwrap();
    }
    {
        // Simulate the crash: the purged id is recorded, the entries are still there.
        let db = sled::open(dir.path()).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("purged", raftlm::codec::encode(&log_id(1, 2)).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let (mut log, _sm) = reopen(dir.path()).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 4)));
    assert_eq!(
        log.try_get_log_entries(0..).await.unwrap(),
        vec![blank(1, 3), blank(1, 4)]
    );
}

// A data directory written in the previous record format (members without a peer
// address) is refused at start-up with a message that says so and what to do.
#[tokio::test]
async fn old_format_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = store::open(dir.path()).unwrap();
        log.blocking_append([membership(1, 0)]).await.unwrap();
    }
    {
        // What format 1 wrote: the same records, with version byte 1.
        let db = sled::open(dir.path()).unwrap();
        let meta = db.open_tree("meta").unwrap();
        let mut created = meta.get("created").unwrap().unwrap().to_vec();
        created[0] = 1;
        meta.insert("created", created).unwrap();
        db.flush().unwrap();
    }
    let error = store::open(dir.path()).err().expect("old format opened");
    assert!(
        matches!(error, StoreError::Format { found: 1, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("record format 1"), "{message}");
    assert!(
        message.contains(&format!(
            "reads formats {}–{}",
            raftlm::codec::FORMAT_OLDEST,
            raftlm::codec::FORMAT_NEWEST
        )),
        "{message}"
    );
    assert!(message.contains("raftlm cluster replace-node"), "{message}");
}

// A snapshot received from the network that does not decode or disagrees with its metadata is refused, not installed.
#[tokio::test]
async fn install_snapshot_refuses_bad_data() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_l, mut leader) = store::open(leader_dir.path()).unwrap();
    let (_f, mut follower) = store::open(follower_dir.path()).unwrap();
    leader
        .apply(vec![membership(1, 0), normal(1, 1, import_cad())])
        .await
        .unwrap();
    let good = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let bytes = good.snapshot.into_inner();

    let mut truncated = bytes.clone();
    truncated.truncate(bytes.len() / 2);
    let result = follower
        .install_snapshot(&good.meta, Box::new(Cursor::new(truncated)))
        .await;
    assert!(result.is_err(), "a truncated snapshot was installed");

    let mut later = good.meta.clone();
    later.last_log_id = Some(log_id(1, 9));
    let result = follower
        .install_snapshot(&later, Box::new(Cursor::new(bytes.clone())))
        .await;
    assert!(
        result.is_err(),
        "a snapshot whose metadata lies was installed"
    );

    assert_eq!(follower.last_applied(), None);
    assert!(follower.get_current_snapshot().await.unwrap().is_none());

    follower
        .install_snapshot(&good.meta, Box::new(Cursor::new(bytes)))
        .await
        .unwrap();
    assert_eq!(follower.last_applied(), Some(log_id(1, 1)));
    assert_eq!(
        follower.read(LicenseState::clone),
        leader.read(LicenseState::clone)
    );
}

// A second process on the same data directory is told the directory is in use.
#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = store::open(dir.path()).unwrap();
    let err = store::open(dir.path())
        .err()
        .expect("a second open succeeded");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

/// Writes a small node database in `dir`: log entries, vote, committed, a snapshot.
async fn write_node(dir: &Path) {
    let (mut log, mut sm) = store::open(dir).unwrap();
    let entries: Vec<Entry> = [membership(1, 0), normal(1, 1, import_cad())]
        .into_iter()
        .chain((2..40).map(|i| blank(1, i)))
        .collect();
    log.blocking_append(entries.clone()).await.unwrap();
    log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
    log.save_committed(Some(log_id(1, 39))).await.unwrap();
    sm.apply(entries).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
}

/// Opens `dir`, which must fail with an error naming the directory; returns the message.
fn open_must_fail(dir: &Path, damage: &str) -> String {
    // A sled handle dropped a moment ago may still hold the directory's lock
    // while its background flusher winds down: wait that out.
    let mut result = store::open(dir);
    for _ in 0..50 {
        match &result {
            Err(StoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                result = store::open(dir);
            }
            _ => break,
        }
    }
    match result {
        Ok(_) => panic!("{damage}: opening a damaged data directory succeeded"),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&dir.display().to_string()),
                "{damage}: {message}"
            );
            message
        }
    }
}

/// The regular files sled keeps in `dir`, recursively.
fn sled_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sled_files(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

// A truncated or overwritten sled file makes start-up fail with a clear error naming the directory, never a panic.
#[tokio::test]
async fn damaged_sled_files_are_a_clear_error() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 6] = [
        ("db overwritten with garbage from byte 512", |dir| {
            overwrite(&dir.join("db"), 512, 256)
        }),
        ("db removed", |dir| fs::remove_file(dir.join("db")).unwrap()),
        ("db truncated to 0 bytes", |dir| {
            truncate(&dir.join("db"), |_| 0)
        }),
        ("db truncated to a third", |dir| {
            truncate(&dir.join("db"), |len| len / 3)
        }),
        ("db overwritten with garbage from byte 0", |dir| {
            overwrite(&dir.join("db"), 0, 4096)
        }),
        ("conf overwritten with garbage", |dir| {
            overwrite(&dir.join("conf"), 0, 64)
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        write_node(dir.path()).await;
        assert!(
            sled_files(dir.path()).iter().any(|f| f.ends_with("db")),
            "sled layout changed"
        );
        damage(dir.path());
        let message = open_must_fail(dir.path(), what);
        assert!(
            message.contains("corrupt") || message.contains("cannot be opened"),
            "{what}: {message}"
        );
    }
}

fn truncate(file: &Path, new_len: fn(u64) -> u64) {
    let f = OpenOptions::new().write(true).open(file).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(new_len(len)).unwrap();
}

fn overwrite(file: &Path, at: u64, len: usize) {
    let mut f = OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    // A fixed pseudo-random pattern, so a failure replays.
    let garbage: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect();
    f.write_all(&garbage).unwrap();
    f.sync_all().unwrap();
}

// Records that sled reads fine but that do not decode, a log with a hole, or a rolled-back vote are reported by name at start-up.
#[tokio::test]
async fn corrupt_records_are_a_clear_error() {
    type Tamper = fn(&sled::Db);
    let cases: [(&str, Tamper, &str); 8] = [
        (
            "vote rolled back",
            |db| {
                let older = raftlm::codec::encode(&Vote::new(0, 1)).unwrap();
                put(db, "meta", b"vote", &older)
            },
            "the database lost its latest writes",
        ),
        (
            "creation record lost",
            |db| del(db, "meta", b"created"),
            "the database is empty but",
        ),
        (
            "vote",
            |db| put(db, "meta", b"vote", b"\x01\xff\xff"),
            "the vote does not decode",
        ),
        (
            "committed",
            |db| put(db, "meta", b"committed", b"\x09"),
            "the committed log id does not decode",
        ),
        (
            "last log entry",
            |db| put(db, "log", &39u64.to_be_bytes(), b"\x01garbage"),
            "log entry 39 does not decode",
        ),
        (
            "hole",
            |db| del(db, "log", &20u64.to_be_bytes()),
            "jumps from entry 19 to entry 21",
        ),
        (
            "snapshot data",
            |db| put(db, "state", b"data", b"\x01\x00"),
            "the snapshot data does not decode",
        ),
        (
            "snapshot half",
            |db| del(db, "state", b"data"),
            "the snapshot has metadata but no data",
        ),
    ];
    for (what, tamper, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_node(dir.path()).await;
        {
            let db = sled::open(dir.path()).unwrap();
            tamper(&db);
            db.flush().unwrap();
        }
        let message = open_must_fail(dir.path(), what);
        assert!(message.contains(expected), "{what}: {message}");
        assert!(
            message.contains("restore from a backup"),
            "{what}: {message}"
        );
    }
}

fn put(db: &sled::Db, tree: &str, key: &[u8], value: &[u8]) {
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
}

fn del(db: &sled::Db, tree: &str, key: &[u8]) {
    db.open_tree(tree).unwrap().remove(key).unwrap();
}

// NodeInfo's entry hashes: the same entry hashes the same on every store,
// another entry under the same log id hashes differently, and the window is
// the last entries or those from an index, bounded by the limit.
#[tokio::test]
async fn entry_hashes_tell_entries_apart_under_one_log_id() {
    let entries = vec![
        membership(1, 0),
        normal(1, 1, import_cad()),
        normal(1, 2, checkout(7, 2, 2_000)),
        blank(1, 3),
    ];
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut log_a, _sm_a) = store::open(a.path()).unwrap();
    let (mut log_b, _sm_b) = store::open(b.path()).unwrap();
    log_a.blocking_append(entries.clone()).await.unwrap();
    let mut other = entries.clone();
    other[2] = normal(1, 2, checkout(8, 1, 2_000));
    log_b.blocking_append(other).await.unwrap();

    let all_a = log_a.entry_hashes(None, usize::MAX).unwrap();
    let all_b = log_b.entry_hashes(Some(0), usize::MAX).unwrap();
    let ids = |h: &[raftlm::raft::log_store::EntryHash]| -> Vec<LogId> {
        h.iter().map(|e| e.log_id).collect()
    };
    assert_eq!(
        ids(&all_a),
        entries.iter().map(|e| e.log_id).collect::<Vec<_>>()
    );
    assert_eq!(ids(&all_a), ids(&all_b));
    for i in [0, 1, 3] {
        assert_eq!(all_a[i].hash, all_b[i].hash, "entry {i}");
    }
    assert_ne!(all_a[2].hash, all_b[2].hash);
    assert_eq!(
        all_a[2].hash.len(),
        2 * raftlm::raft::log_store::ENTRY_HASH_BYTES
    );
    assert_eq!(ids(&log_a.entry_hashes(None, 2).unwrap()), ids(&all_a[2..]));
    assert_eq!(
        ids(&log_a.entry_hashes(Some(1), 2).unwrap()),
        ids(&all_a[1..3])
    );
}

// The state machine keeps the digest of its state at applied indexes that
// are multiples of DIGEST_EVERY, the last DIGESTS_KEPT of them, each equal to
// the state's own digest at that index.
#[tokio::test]
async fn recent_digests_are_kept_at_every_step() {
    use raftlm::raft::state_machine::{DIGEST_EVERY, DIGESTS_KEPT};
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = store::open(dir.path()).unwrap();
    sm.apply(vec![membership(1, 0), normal(1, 1, import_cad())])
        .await
        .unwrap();
    let mut expected = Vec::new();
    let last = DIGEST_EVERY * (DIGESTS_KEPT as u64 + 2);
    for index in 2..=last {
        let entry = if index % 7 == 0 {
            normal(1, index, checkout(index, 1, 2_000 + index))
        } else {
            blank(1, index)
        };
        sm.apply(vec![entry]).await.unwrap();
        if index % DIGEST_EVERY == 0 {
            expected.push((index, sm.read(|s| s.digest().unwrap())));
        }
    }
    let kept = sm.recent_digests();
    assert_eq!(kept.len(), DIGESTS_KEPT);
    assert_eq!(kept, expected[expected.len() - DIGESTS_KEPT..]);
    assert_eq!(kept.last().unwrap().0, last);
}

// A data directory knows its owner: the first start records the cluster name,
// node id and identity; another node's or another cluster's start on it is
// refused naming both; a re-issued CA (another identity) only warns.
#[test]
fn a_data_directory_refuses_another_node_or_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let owner = store::Owner {
        cluster_name: "LICSRV".into(),
        node_id: 1,
        cluster_id: Some("sha256:aa".into()),
    };
    {
        let _store = store::open(dir.path()).unwrap();
        assert_eq!(store::claim(dir.path(), &owner).unwrap(), None);
        assert!(dir.path().join(store::OWNER_FILE).exists());
    }
    let _store = store::open(dir.path()).unwrap();
    assert_eq!(store::claim(dir.path(), &owner).unwrap(), None);
    let node_2 = store::Owner {
        node_id: 2,
        ..owner.clone()
    };
    let refused = store::claim(dir.path(), &node_2).unwrap_err().to_string();
    assert!(
        refused.contains("it belongs to node 1 of cluster LICSRV (sha256:aa), but this is node 2 of cluster LICSRV"),
        "{refused}"
    );
    let other = store::Owner {
        cluster_name: "OTHER".into(),
        ..owner.clone()
    };
    assert!(matches!(
        store::claim(dir.path(), &other),
        Err(store::StoreError::Foreign { .. })
    ));
    let reissued = store::Owner {
        cluster_id: Some("sha256:bb".into()),
        ..owner
    };
    let warning = store::claim(dir.path(), &reissued).unwrap().unwrap();
    assert!(warning.contains("re-issued CA"), "{warning}");
}

// A power cut on a node's first start after the creation record was synced
// but before the marker file was written leaves a database with its record
// and no marker: the next start takes it as a new database and writes the
// marker (the record is synced first, so the opposite — a marker without
// its record, reported as a database that lost its contents — cannot come
// from a cut there).
#[test]
fn a_first_start_cut_before_the_marker_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    drop(store::open(dir.path()).unwrap());
    let marker = dir.path().join(store::MARKER_FILE);
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
    drop(store::open(dir.path()).unwrap_or_else(|e| panic!("reopen failed: {e}")));
    assert!(marker.exists(), "the marker is written again");
}
