//! Opening a node's sled database: the one entry point to durable Raft state.
//!
//! Each node keeps everything it must not forget in ONE sled database in its
//! data directory, so a single `flush_async()` makes every earlier write of
//! every tree durable (sled flushes its whole page cache, in write order):
//!
//! | tree    | key                     | value (each a [`codec`] record)              |
//! |---------|-------------------------|----------------------------------------------|
//! | `log`   | big-endian u64 index    | the log [`Entry`](super::Entry)              |
//! | `meta`  | `vote`, `committed`, `purged` | the vote, last committed and last purged log ids |
//! | `state` | `meta`, `data`          | the latest snapshot: its `SnapshotMeta` and its bytes |
//!
//! sled treats any damage to its write log as a torn write: it silently
//! recovers the longest valid prefix and drops everything after the damage,
//! so a truncated or overwritten file opens as an emptied or rolled-back
//! database, without error. Two checks catch the dangerous cases:
//! - the `meta` tree holds a `created` record, written (flushed) when the
//!   database is created, before the marker file [`MARKER_FILE`] is written
//!   next to sled's files: a marker without the record is
//!   [`StoreError::Emptied`];
//! - the marker also records the latest vote, rewritten (atomically, after
//!   sled's flush) by every `save_vote`: a database holding an older vote is
//!   [`StoreError::VoteLost`], instead of a voter that could vote twice in a
//!   term. Votes are saved on elections only, so this costs no fsync on the
//!   write path.
//!
//! [`open`] validates what it reads before openraft sees it: every metadata
//! record decodes, the first and last log entries decode and sit under their
//! own index, the log has no hole (from the entry after the last purged one
//! to the last one), and the stored snapshot decodes, agrees with its
//! metadata and keeps the license invariants. A corrupt or truncated database
//! is therefore reported at start-up as a [`StoreError`] naming the data
//! directory and what is wrong, not as a panic or a confused node. sled
//! itself can panic on some garbage instead of returning an error, so the
//! whole opening runs under `catch_unwind` and such a panic is reported as
//! corruption too (the panic message is still printed by the panic hook).
//!
//! Invariants kept by the stores and checked here:
//! - the log is contiguous: entry indexes `purged + 1 ..= last` are all present;
//! - a purge records the purged log id before deleting entries, so an
//!   interrupted purge is finished here;
//! - the stored snapshot's data encodes exactly the state its metadata names.
//!
//! Left out: the middle log entries are checked for presence, not decoded
//! (a bad one is reported when it is read); sled's own checksums guard the
//! pages. Damage that makes sled drop only writes made after the last vote
//! (log entries, `committed`, snapshots) cannot be told from a crash before
//! they were flushed and is not detected: that would take a high-water mark
//! outside sled updated on every append, i.e. a second fsync per write.
//! There is no repair tool: the messages tell the operator to restore a
//! backup or to remove the directory so the node rejoins as an empty one.

use std::cmp::Ordering;
use std::fs;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec;

use super::Vote;
use super::disk_sync::DiskSync;
use super::log_store::LogStore;
pub use super::marker::MARKER_FILE;
use super::marker::{Marker, write_marker};
use super::state_machine::StateMachineStore;
pub use super::storage_error::{OWNER_FILE, StoreError};
use super::storage_error::{panic_message, sled_error};

/// Name of the tree holding the log entries.
pub(crate) const LOG_TREE: &str = "log";
/// Name of the tree holding the vote, committed and purged log ids.
pub(crate) const META_TREE: &str = "meta";
/// Name of the tree holding the latest state-machine snapshot.
pub(crate) const STATE_TREE: &str = "state";

/// Key, in the `meta` tree, of the record written when the database is created.
const CREATED_KEY: &[u8] = b"created";
/// What the creation record holds.
const CREATED_TAG: &str = "raftlm node database";
/// The owner file while it is being written.
const OWNER_TMP_FILE: &str = "RAFTLM_OWNER.tmp";

/// Opens (creating if needed) the sled database in `dir` and returns the log
/// store and the state-machine store over it, after validating what is stored
/// (see the module docs).
///
/// Blocking: call it at start-up, before the Raft node is built. Only one
/// process may hold a directory; a second `open` returns
/// [`StoreError::Locked`].
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let shared: Arc<Path> = Arc::from(dir);
    // sled 0.34 can panic on garbage instead of returning an error; a panic
    // here leaves nothing half-built behind (everything is dropped), so it is
    // safe to report it and let the caller exit.
    match catch_unwind(AssertUnwindSafe(|| open_checked(&shared))) {
        Ok(result) => result,
        Err(payload) => Err(StoreError::Corrupt {
            dir: dir.to_path_buf(),
            detail: format!("sled panicked: {}", panic_message(payload.as_ref())),
        }),
    }
}

fn open_checked(dir: &Arc<Path>) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = sled::Config::new()
        .path(dir)
        .open()
        .map_err(|source| open_error(dir, source))?;
    let tree = |name: &str| {
        db.open_tree(name)
            .map_err(|source| sled_error(dir, format!("open tree {name}"), source))
    };
    let log = tree(LOG_TREE)?;
    let meta = tree(META_TREE)?;
    let state = tree(STATE_TREE)?;
    check_format(dir, &meta)?;
    let sync = Arc::new(DiskSync::open(dir).map_err(|source| StoreError::Marker {
        dir: dir.to_path_buf(),
        file: dir.join("db"),
        source,
    })?);
    let log_store = LogStore::open(dir.clone(), log, meta.clone(), sync.clone())?;
    check_marker(dir, &meta, log_store.vote_at_open()?, &sync)?;
    let state_machine = StateMachineStore::open(dir.clone(), state, sync)?;
    Ok((log_store, state_machine))
}

/// Refuses a database written in another record format before anything in it
/// is decoded: every record starts with the format-version byte, and the
/// creation record is the first one a database gets.
fn check_format(dir: &Path, meta: &sled::Tree) -> Result<(), StoreError> {
    let created = meta
        .get(CREATED_KEY)
        .map_err(|e| sled_error(dir, "read the creation record", e))?;
    match created.as_deref().and_then(|bytes| bytes.first()) {
        Some(&found) if !(codec::FORMAT_OLDEST..=codec::FORMAT_NEWEST).contains(&found) => {
            Err(StoreError::Format {
                dir: dir.to_path_buf(),
                found,
            })
        }
        _ => Ok(()),
    }
}

/// Whose a data directory is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The cluster name.
    pub cluster_name: String,
    /// The node id.
    pub node_id: u64,
    /// The cluster identity (`sha256:…` of the CA's public key) when the
    /// node runs with TLS. A re-issued CA changes it, so it is compared for a
    /// warning only.
    pub cluster_id: Option<String>,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} of cluster {}", self.node_id, self.cluster_name)?;
        if let Some(id) = &self.cluster_id {
            write!(f, " ({id})")?;
        }
        Ok(())
    }
}

/// Checks that the data directory `dir` (a store [`open`] just opened) is
/// `owner`'s, and records it when the directory has no owner yet (a new
/// one, or one made before owners were recorded): written to a temporary
/// file, synced, renamed and the directory synced. A directory of another
/// node or cluster is refused; another cluster identity (a re-issued CA)
/// only returns a warning to log. Blocking.
pub fn claim(dir: &Path, owner: &Owner) -> Result<Option<String>, StoreError> {
    let path = dir.join(OWNER_FILE);
    let record_error = |source| StoreError::Record {
        dir: dir.to_path_buf(),
        what: format!("the owner file {OWNER_FILE}"),
        source,
    };
    let io_error = |source| StoreError::Marker {
        dir: dir.to_path_buf(),
        file: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let found: Owner = codec::decode(&bytes).map_err(record_error)?;
            if found.cluster_name != owner.cluster_name || found.node_id != owner.node_id {
                return Err(StoreError::Foreign {
                    dir: dir.to_path_buf(),
                    found: found.to_string(),
                    this: owner.to_string(),
                });
            }
            Ok(match (&found.cluster_id, &owner.cluster_id) {
                (Some(was), Some(now)) if was != now => Some(format!(
                    "the data directory was created under cluster identity {was}, this node's CA is {now} (a re-issued CA?)"
                )),
                _ => None,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bytes = codec::encode(owner).map_err(record_error)?;
            let tmp = dir.join(OWNER_TMP_FILE);
            let mut file = fs::File::create(&tmp).map_err(io_error)?;
            file.write_all(&bytes).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            fs::rename(&tmp, &path).map_err(io_error)?;
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error)?;
            Ok(None)
        }
        Err(e) => Err(io_error(e)),
    }
}

/// Checks the database against the marker file, then brings the marker up to
/// date (creating it for a new database).
///
/// sled treats a damaged write log as a torn write and recovers the longest
/// valid prefix without error; a truncated or overwritten file thus opens as
/// an emptied or rolled-back database. A new database records [`CREATED_KEY`]
/// (flushed) before the marker is written, so a marker without the record
/// means the database lost its contents, and a stored vote below the
/// marker's means it lost its latest writes.
fn check_marker(
    dir: &Path,
    meta: &sled::Tree,
    vote: Option<Vote>,
    sync: &DiskSync,
) -> Result<(), StoreError> {
    let path = dir.join(MARKER_FILE);
    let marker_error = |source| StoreError::Marker {
        dir: dir.to_path_buf(),
        file: path.clone(),
        source,
    };
    let record_error = |what: &str, source| StoreError::Record {
        dir: dir.to_path_buf(),
        what: what.to_owned(),
        source,
    };
    let marker: Option<Marker> = match fs::read(&path) {
        Ok(bytes) => Some(
            codec::decode(&bytes)
                .map_err(|e| record_error(&format!("the marker file {MARKER_FILE}"), e))?,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(marker_error(e)),
    };
    let created = meta
        .get(CREATED_KEY)
        .map_err(|e| sled_error(dir, "read the creation record", e))?;
    match (created, &marker) {
        (Some(bytes), _) => {
            let _: String =
                codec::decode(&bytes).map_err(|e| record_error("the creation record", e))?;
        }
        (None, Some(_)) => {
            return Err(StoreError::Emptied {
                dir: dir.to_path_buf(),
                marker: path,
            });
        }
        (None, None) => {
            let bytes =
                codec::encode(CREATED_TAG).map_err(|e| record_error("the creation record", e))?;
            meta.insert(CREATED_KEY, bytes)
                .map_err(|e| sled_error(dir, "write the creation record", e))?;
            meta.flush()
                .map_err(|e| sled_error(dir, "flush the database", e))?;
            // Synced before the marker is written: a power cut between the
            // two must not leave a marker without its creation record (which
            // the next start would report as a database that lost its
            // contents).
            sync.sync().map_err(|source| StoreError::Marker {
                dir: dir.to_path_buf(),
                file: dir.join("db"),
                source,
            })?;
            tracing::info!(dir = %dir.display(), "created a new node database");
        }
    }
    if let Some(floor) = marker.as_ref().and_then(|m| m.vote) {
        let kept = vote.is_some_and(|v| {
            matches!(
                v.partial_cmp(&floor),
                Some(Ordering::Greater | Ordering::Equal)
            )
        });
        if !kept {
            return Err(StoreError::VoteLost {
                dir: dir.to_path_buf(),
                saved: floor.to_string(),
                found: vote.map_or_else(|| String::from("no vote"), |v| v.to_string()),
            });
        }
    }
    // Missing (new database, or lost in a crash before its rename) or behind
    // (a crash between flushing a vote and rewriting the marker).
    if marker.is_none_or(|m| m.vote != vote) {
        write_marker(dir, &Marker { vote }).map_err(marker_error)?;
    }
    Ok(())
}

/// Maps the error of `sled::Config::open`.
fn open_error(dir: &Path, source: sled::Error) -> StoreError {
    let dir = dir.to_path_buf();
    match source {
        // sled reports a held lock as an `Other` I/O error with this text
        // (config.rs, `try_lock`); there is no dedicated kind to match.
        sled::Error::Io(ref e) if e.to_string().contains("could not acquire lock") => {
            StoreError::Locked { dir, source }
        }
        sled::Error::Io(_) => StoreError::Open { dir, source },
        // With our fixed configuration, `Unsupported`, `Corruption` and
        // `ReportableBug` at open come from an unreadable `conf` or `db` file.
        _ => StoreError::Corrupt {
            dir,
            detail: source.to_string(),
        },
    }
}
