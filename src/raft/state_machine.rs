//! The license state as openraft's state machine, with durable snapshots.
//!
//! [`StateMachineStore`] holds the live [`LicenseState`] in memory together
//! with the last applied log id and the last applied membership. `apply` only
//! changes memory; what is durable is the latest *snapshot*, kept in the
//! `state` tree of the node's sled database under two keys written in one
//! batch: `meta` (the `SnapshotMeta`) and `data` (the snapshot bytes). The
//! snapshot bytes are one [`codec`] record of `{ last_applied,
//! last_membership, state }`, so the data alone says which log position it
//! is the state of.
//!
//! Restart: [`open`](super::store::open) loads the state from the stored
//! snapshot; openraft (0.9.25, storage-v2) then reads the saved `committed`
//! log id and re-applies the log from `last_applied + 1` up to it before the
//! node starts (`StorageHelper::get_initial_state`). Entries after
//! `committed` are applied once the leader says they are committed.
//!
//! Invariants:
//! - the snapshot's metadata and the log position inside its data agree; a
//!   snapshot that does not decode, disagrees with its metadata or breaks a
//!   license invariant is refused with an error, never installed;
//! - the stored snapshot never moves backwards: a snapshot built from an
//!   older state does not overwrite a newer one stored meanwhile (building
//!   runs in its own task, concurrently with `install_snapshot`);
//! - an invariant violation while applying a command is a bug: `apply_batch`
//!   panics, which poisons the lock, and every later access fails loudly.
//!
//! Left out: snapshots are whole-state and held in memory while built or
//! received (the license state is small: grants and sessions, not
//! documents); there is no streaming or chunked snapshot format.

// openraft's `StorageError` (224 bytes) is the error its storage traits
// require; private helpers return it as is rather than box and unbox it.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::license::state::{LicenseState, LogIndex, LogPosition, Outcome, Term};

use super::storage_error::{StoreError, panic_message, sled_error};
use super::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// Key of the stored snapshot's metadata in the `state` tree.
const META_KEY: &[u8] = b"meta";
/// Key of the stored snapshot's data in the `state` tree.
const DATA_KEY: &[u8] = b"data";

/// The state is digested (for [`StateMachineStore::recent_digests`]) after
/// each applied entry whose index is a multiple of this: one encoding and
/// SHA-256 of the whole state per this many entries, so the cost stays a
/// small fraction of the applies even for a state of megabytes.
pub const DIGEST_EVERY: u64 = 64;
/// Digests kept: the most recent, in memory only (a restart starts afresh,
/// and refills it as it re-applies its log).
pub const DIGESTS_KEPT: usize = 32;

/// The state machine of one node. A cheap handle: clones share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The data directory, for messages.
    dir: Arc<Path>,
    /// Makes flushed writes survive a power cut.
    sync: Arc<super::disk_sync::DiskSync>,
    /// The `state` tree: the latest snapshot.
    tree: sled::Tree,
    /// The live state. A `std` lock, not a tokio one: it is never held across
    /// an `.await` (apply, encode and read are synchronous), and readers such
    /// as the license service must not need an async context to look.
    live: RwLock<Live>,
    /// Serializes "compare with the stored snapshot, then write" so a
    /// snapshot never replaces a newer one. Held only for the sled insert,
    /// never across `.await` (the flush comes after).
    store_lock: Mutex<()>,
    /// Makes snapshot ids unique within this process.
    snapshots_built: AtomicU64,
    /// The state's digest at recent applied indexes that are multiples of
    /// [`DIGEST_EVERY`], oldest first, at most [`DIGESTS_KEPT`]; written
    /// under the `live` write lock, right after applying the entry.
    digests: Mutex<VecDeque<(u64, String)>>,
}

/// The live state, and exactly what a snapshot's data encodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Live {
    /// The last log entry applied.
    last_applied: Option<LogId>,
    /// The last membership applied.
    last_membership: StoredMembership,
    /// The license state after `last_applied`.
    state: LicenseState,
}

/// A snapshot's data for `state` after `last_applied`, with `membership`:
/// what [`super::restore`] installs.
pub(crate) fn snapshot_data(
    last_applied: LogId,
    membership: StoredMembership,
    state: LicenseState,
) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&Live {
        last_applied: Some(last_applied),
        last_membership: membership,
        state,
    })
}

/// Runs the license state's invariant checks, turning their panic into a
/// message, and checks that its grants come from entries it has applied.
fn check_invariants(live: &Live) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| live.state.check_invariants()))
        .map_err(|p| panic_message(p.as_ref()))?;
    live.state
        .check_applied_through(live.last_applied.map(|id| id.index))
}

/// Turns any error into openraft's error payload.
fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// The error for a lock poisoned by a panic in `apply` (an invariant bug).
fn poisoned() -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(
        "the state machine lock is poisoned: an earlier apply panicked (a bug); the node must restart",
    ))
    .into()
}

impl StateMachineStore {
    /// Opens the state machine over its tree, loading the stored snapshot
    /// (an empty state if there is none) and validating it.
    pub(crate) fn open(
        dir: Arc<Path>,
        tree: sled::Tree,
        sync: Arc<super::disk_sync::DiskSync>,
    ) -> Result<StateMachineStore, StoreError> {
        let read = |key: &[u8]| {
            tree.get(key)
                .map_err(|e| sled_error(&dir, "read the snapshot", e))
        };
        let live = match (read(META_KEY)?, read(DATA_KEY)?) {
            (None, None) => Live::default(),
            (Some(_), None) => {
                return Err(StoreError::SnapshotIncomplete {
                    dir: dir.to_path_buf(),
                    present: "metadata",
                    missing: "data",
                });
            }
            (None, Some(_)) => {
                return Err(StoreError::SnapshotIncomplete {
                    dir: dir.to_path_buf(),
                    present: "data",
                    missing: "metadata",
                });
            }
            (Some(meta), Some(data)) => {
                let record = |what: &str, source| StoreError::Record {
                    dir: dir.to_path_buf(),
                    what: what.to_owned(),
                    source,
                };
                let meta: SnapshotMeta =
                    codec::decode(&meta).map_err(|e| record("the snapshot metadata", e))?;
                let live: Live =
                    codec::decode(&data).map_err(|e| record("the snapshot data", e))?;
                check_matches(&meta, &live).map_err(|(meta, data)| {
                    StoreError::SnapshotMismatch {
                        dir: dir.to_path_buf(),
                        meta,
                        data,
                    }
                })?;
                check_invariants(&live).map_err(|detail| StoreError::SnapshotInvariant {
                    dir: dir.to_path_buf(),
                    detail,
                })?;
                tracing::info!(dir = %dir.display(), snapshot = %meta, "state machine loaded from its snapshot");
                live
            }
        };
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                dir,
                sync,
                tree,
                live: RwLock::new(live),
                store_lock: Mutex::new(()),
                snapshots_built: AtomicU64::new(0),
                digests: Mutex::new(VecDeque::with_capacity(DIGESTS_KEPT)),
            }),
        })
    }

    /// Runs `f` on the current license state, under a read lock. Keep `f`
    /// short: `apply` waits for it.
    ///
    /// Panics if an earlier `apply` panicked (an invariant bug): the state
    /// may be half-applied and must not be served.
    pub fn read<R>(&self, f: impl FnOnce(&LicenseState) -> R) -> R {
        let live = self
            .inner
            .live
            .read()
            .expect("license state poisoned by a panic in apply (a bug)");
        f(&live.state)
    }

    /// Runs `f` on the log id of the last entry applied and the license
    /// state after it, under one read lock, so the two belong together (an
    /// apply cannot come between reading one and the other).
    ///
    /// Panics like [`read`](Self::read) if an earlier `apply` panicked.
    pub fn read_applied<R>(&self, f: impl FnOnce(Option<LogId>, &LicenseState) -> R) -> R {
        let live = self
            .inner
            .live
            .read()
            .expect("license state poisoned by a panic in apply (a bug)");
        f(live.last_applied, &live.state)
    }

    /// A copy of the last applied log id, the membership applied with it and
    /// the license state, taken under one read lock (for a backup); the
    /// copy is made under the lock, anything costly on it comes after.
    ///
    /// Panics like [`read`](Self::read) if an earlier `apply` panicked.
    pub fn copy_applied(&self) -> (Option<LogId>, StoredMembership, LicenseState) {
        let live = self
            .inner
            .live
            .read()
            .expect("license state poisoned by a panic in apply (a bug)");
        (
            live.last_applied,
            live.last_membership.clone(),
            live.state.clone(),
        )
    }

    /// The log id of the last entry applied to the state, `None` before the first.
    ///
    /// Panics like [`read`](Self::read) if an earlier `apply` panicked.
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner
            .live
            .read()
            .expect("license state poisoned by a panic in apply (a bug)")
            .last_applied
    }

    /// The state's digest (as [`LicenseState::digest`]) right after each
    /// recently applied entry whose index is a multiple of [`DIGEST_EVERY`],
    /// as `(index, digest)`, oldest first; at most [`DIGESTS_KEPT`], all
    /// taken since this process started. Entries are applied only once
    /// committed and in log order, so every node's digest at one index must
    /// be the same: the chaos harness compares them while the cluster runs.
    pub fn recent_digests(&self) -> Vec<(u64, String)> {
        self.inner
            .digests
            .lock()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records the digest of `state`, just applied through `index`.
    fn keep_digest(&self, index: u64, state: &LicenseState) {
        let digest = state
            .digest()
            .unwrap_or_else(|e| format!("unencodable: {e}"));
        if let Ok(mut digests) = self.inner.digests.lock() {
            // A re-apply after a snapshot install or restart may revisit an
            // index: keep one digest per index, in index order.
            digests.retain(|(i, _)| *i < index);
            if digests.len() == DIGESTS_KEPT {
                digests.pop_front();
            }
            digests.push_back((index, digest));
        }
    }

    fn live_read(&self) -> Result<RwLockReadGuard<'_, Live>, StorageError> {
        self.inner.live.read().map_err(|_| poisoned())
    }

    fn live_write(&self) -> Result<RwLockWriteGuard<'_, Live>, StorageError> {
        self.inner.live.write().map_err(|_| poisoned())
    }

    /// Applies entries to the live state; synchronous so no lock guard
    /// lives in a future.
    fn apply_entries(
        &self,
        entries: impl Iterator<Item = Entry>,
    ) -> Result<Vec<Vec<Outcome>>, StorageError> {
        let mut live = self.live_write()?;
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let reply = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => {
                    let at = LogPosition {
                        term: Term(log_id.leader_id.term),
                        index: LogIndex(log_id.index),
                    };
                    live.state.apply_batch(at, &batch)
                }
                EntryPayload::Membership(membership) => {
                    crate::fault::exit_after_joint(
                        log_id.index,
                        log_id.leader_id.node_id,
                        membership.get_joint_config().len() > 1,
                    );
                    live.last_membership = StoredMembership::new(Some(log_id), membership);
                    Vec::new()
                }
            };
            live.last_applied = Some(log_id);
            if log_id.index % DIGEST_EVERY == 0 {
                self.keep_digest(log_id.index, &live.state);
            }
            replies.push(reply);
        }
        Ok(replies)
    }

    /// Encodes the live state as snapshot data, with its metadata.
    fn encode_snapshot(&self) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
        // Encoding under the read lock gives data and metadata of the same
        // moment; `apply` waits for the encoding.
        // In the cluster's write format: a snapshot may be sent to a member
        // of the previous release, which reads no newer one.
        let live = self.live_read()?;
        let data = codec::encode_as(live.state.formats().write, &*live)
            .map_err(|e| StorageIOError::write_snapshot(None, any(e)))?;
        let built = self.inner.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match live.last_applied {
            Some(id) => format!("{}-{}-{built}", id.leader_id.term, id.index),
            None => format!("empty-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: live.last_applied,
            last_membership: live.last_membership.clone(),
            snapshot_id,
        };
        Ok((meta, data))
    }

    /// Stores a snapshot (metadata and data in one batch) and flushes.
    /// With `only_if_newer`, a snapshot older than the stored one is not
    /// written (a build that raced an install).
    async fn store_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        only_if_newer: bool,
    ) -> Result<(), StorageError> {
        let write_error = |e: &dyn std::fmt::Display| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::error(e),
            ))
        };
        let meta_bytes = codec::encode(meta).map_err(|e| write_error(&e))?;
        {
            let _guard = self
                .inner
                .store_lock
                .lock()
                .map_err(|_| write_error(&"the snapshot store lock is poisoned"))?;
            if only_if_newer
                && let Some(stored) = self.stored_meta()?
                && stored.last_log_id > meta.last_log_id
            {
                tracing::debug!(built = %meta, stored = %stored, "a newer snapshot is stored; keeping it");
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            batch.insert(META_KEY, meta_bytes);
            batch.insert(DATA_KEY, data);
            self.inner
                .tree
                .apply_batch(batch)
                .map_err(|e| write_error(&e))?;
        }
        self.inner
            .tree
            .flush_async()
            .await
            .map_err(|e| write_error(&e))?;
        self.inner
            .sync
            .sync_async()
            .await
            .map_err(|e| write_error(&e))?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "snapshot stored");
        Ok(())
    }

    /// The stored snapshot's metadata.
    fn stored_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let read_error = |e: &dyn std::fmt::Display| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::error(e)))
        };
        match self.inner.tree.get(META_KEY).map_err(|e| read_error(&e))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(|e| read_error(&e))?)),
            None => Ok(None),
        }
    }

    /// Reads the stored snapshot (both halves under the store lock, so they match).
    fn stored_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let read_error = |e: &dyn std::fmt::Display| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::error(e)))
        };
        let _guard = self
            .inner
            .store_lock
            .lock()
            .map_err(|_| read_error(&"the snapshot store lock is poisoned"))?;
        let Some(meta) = self.stored_meta()? else {
            return Ok(None);
        };
        let data = self
            .inner
            .tree
            .get(DATA_KEY)
            .map_err(|e| read_error(&e))?
            .ok_or_else(|| {
                read_error(&format!(
                    "snapshot {meta} has no data in {}",
                    self.inner.dir.display()
                ))
            })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

/// Checks a snapshot's metadata against the log position inside its data;
/// on a mismatch returns both, described.
fn check_matches(meta: &SnapshotMeta, live: &Live) -> Result<(), (String, String)> {
    if meta.last_log_id == live.last_applied && meta.last_membership == live.last_membership {
        return Ok(());
    }
    let describe = |last: &Option<LogId>, membership: &StoredMembership| {
        format!("last log id {last:?}, membership {membership}")
    };
    Err((
        describe(&meta.last_log_id, &meta.last_membership),
        describe(&live.last_applied, &live.last_membership),
    ))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, data) = self.encode_snapshot()?;
        self.store_snapshot(&meta, &data, true).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let live = self.live_read()?;
        Ok((live.last_applied, live.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries.into_iter())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let refuse = |why: String| {
            tracing::error!(snapshot = %meta, %why, "refusing a snapshot");
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(why),
            ))
        };
        let data = snapshot.into_inner();
        let live: Live = codec::decode(&data)
            .map_err(|e| refuse(format!("snapshot {meta} does not decode: {e}")))?;
        check_matches(meta, &live).map_err(|(m, d)| {
            refuse(format!("snapshot metadata says {m} but its data holds {d}"))
        })?;
        check_invariants(&live).map_err(|detail| {
            refuse(format!(
                "snapshot {meta} breaks a license invariant: {detail}"
            ))
        })?;
        // Every line of a received snapshot must verify against the anchors it
        // carries: a forged snapshot cannot install unsigned seats.
        live.state.verify_lines().map_err(|detail| {
            refuse(format!(
                "snapshot {meta} holds a license line that does not verify: {detail}"
            ))
        })?;
        // Durable first, then live: if storing fails the node stops with
        // its old state intact.
        self.store_snapshot(meta, &data, false).await?;
        *self.live_write()? = live;
        tracing::info!(snapshot = %meta, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.stored_snapshot()
    }
}
