//! The Raft log and Raft metadata, durable in sled: openraft's `RaftLogStorage`.
//!
//! [`LogStore`] keeps log entries in the `log` tree (key: big-endian u64
//! index, so sled's key order is log order) and the vote, the last committed
//! log id and the last purged log id in the `meta` tree, each a
//! [`codec`] record. It is a cheap handle (two `sled::Tree`s,
//! which are `Arc`s inside) and is its own log reader.
//!
//! Durability, as openraft requires — "flushed" below means sled's
//! `flush_async()` followed by a real `fdatasync` of sled's files
//! ([`DiskSync`]; sled's own flush is a `sync_file_range`, which a power cut
//! can undo):
//! - an append writes its entries in one sled batch, awaits the flush, and
//!   only then calls the `LogFlushed` callback. The
//!   flush happens inside `append`, so the Raft core never issues its next
//!   storage command (and never saves a `committed` beyond) before the
//!   entries are on disk;
//! - `save_vote` returns only after the flush, and after recording the vote
//!   in the marker file outside sled as well (a floor that
//!   [`open`](super::store::open) checks, see [`store`](super::store));
//! - `truncate` and `purge` flush before returning; a purge first records the
//!   purged log id (flushed), then deletes the entries, so a crash in between
//!   leaves entries that [`open`](super::store::open) finishes deleting;
//! - `save_committed` is NOT flushed on its own: openraft calls it on every
//!   commit, and a flush there would double the fsyncs per client write. It
//!   becomes durable with the next flush (sled flushes the whole database, in
//!   write order). Losing the latest value is safe: on restart openraft
//!   re-applies less of the log and the leader's next commit index brings the
//!   rest; and it can never be ahead of the durable log, because an entry is
//!   committed here only after its append returned (flushed).
//!
//! Every write goes through one sled tree per call and openraft issues
//! storage calls one at a time, so writes are serialized as openraft demands.
//!
//! Left out: a size limit on what one read returns (openraft's default
//! `limited_get_log_entries` reads the whole range it asks for; its
//! replication already bounds that range by `max_payload_entries`).

// openraft's `StorageError` (224 bytes) is the error its storage traits
// require; private helpers return it as is rather than box and unbox it.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};

use super::disk_sync::DiskSync;
use super::marker::{MARKER_FILE, Marker, write_marker};
use super::storage_error::{StoreError, sled_error};
use super::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Key of the vote in the `meta` tree.
const VOTE_KEY: &[u8] = b"vote";
/// Key of the last committed log id in the `meta` tree.
const COMMITTED_KEY: &[u8] = b"committed";
/// Key of the last purged log id in the `meta` tree.
const PURGED_KEY: &[u8] = b"purged";

/// The durable Raft log and metadata of one node. See the module docs.
#[derive(Clone)]
pub struct LogStore {
    /// The data directory, for messages.
    dir: Arc<Path>,
    /// Entries by big-endian index.
    log: sled::Tree,
    /// Vote, committed and purged records.
    meta: sled::Tree,
    /// Makes flushed writes survive a power cut.
    sync: Arc<DiskSync>,
    /// Test-only break `leader-tail` ([`crate::fault`]): this node's id, whose
    /// own entries (written as leader) are appended without a flush.
    unsynced_leader: Option<u64>,
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// sled failed.
    #[error(transparent)]
    Sled(#[from] sled::Error),
    /// The record does not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The sled key of a log index: big-endian, so key order is index order.
fn key_of(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index of a sled key, if it is one.
fn index_of(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// Reads and decodes one record; `None` if absent.
fn get_record<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, ReadError> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Turns any error into openraft's error payload.
fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// Most entries one [`LogStore::entry_hashes`] call lists for `NodeInfo`.
pub const ENTRY_HASHES_MAX: usize = 1024;

/// Bytes of SHA-256 kept in an entry's hash: enough to tell two entries
/// apart, short enough to list a thousand in one reply.
pub const ENTRY_HASH_BYTES: usize = 16;

/// One stored log entry: its log id and a hash of its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHash {
    /// The entry's log id (the leader that created it, and its index).
    pub log_id: LogId,
    /// The first [`ENTRY_HASH_BYTES`] of the SHA-256 of the entry's stored
    /// bytes (its [`codec`] record, log id included), lowercase hex.
    pub hash: String,
}

/// The hash [`EntryHash`] carries, of an entry's stored bytes.
pub fn entry_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..ENTRY_HASH_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl LogStore {
    /// With the test-only break `leader-tail` ([`crate::fault::Break::LeaderTail`]):
    /// entries node `node_id` appends as leader are written but neither
    /// flushed nor synced, though reported flushed, so a power cut of every
    /// node loses a tail the followers hold. Call before handing the store
    /// to Raft (clones made earlier keep flushing).
    pub fn break_leader_tail(&mut self, node_id: u64) {
        if crate::fault::broken(crate::fault::Break::LeaderTail) {
            self.unsynced_leader = Some(node_id);
        }
    }

    /// Lists stored entries with a hash of each one's bytes, in index order:
    /// at most `limit`, from index `from` on, or (`from` = `None`) the last
    /// `limit` entries. Reads sled directly (no Raft call), so it can run
    /// next to the Raft core; an entry truncated or purged meanwhile is
    /// simply not listed. For checking that no two nodes hold different
    /// entries under one log id (`NodeInfo`, and the chaos harness's offline
    /// read).
    pub fn entry_hashes(
        &self,
        from: Option<u64>,
        limit: usize,
    ) -> Result<Vec<EntryHash>, StorageError> {
        let one = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            let (_, bytes) = item.map_err(|e| StorageIOError::read_logs(any(e)))?;
            let entry: Entry =
                codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(any(e)))?;
            Ok::<_, StorageError>(EntryHash {
                log_id: entry.log_id,
                hash: entry_hash(&bytes),
            })
        };
        let mut listed = match from {
            Some(from) => self
                .log
                .range(key_of(from)..)
                .take(limit)
                .map(one)
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let mut last = self
                    .log
                    .iter()
                    .rev()
                    .take(limit)
                    .map(one)
                    .collect::<Result<Vec<_>, _>>()?;
                last.reverse();
                last
            }
        };
        listed.sort_by_key(|e| e.log_id.index);
        Ok(listed)
    }

    /// Opens the log store over its trees, validating them (see
    /// [`store`](super::store)). Finishes a purge interrupted by a crash.
    pub(crate) fn open(
        dir: Arc<Path>,
        log: sled::Tree,
        meta: sled::Tree,
        sync: Arc<DiskSync>,
    ) -> Result<LogStore, StoreError> {
        let store = LogStore {
            dir,
            log,
            meta,
            sync,
            unsynced_leader: None,
        };
        let vote = store.vote_at_open()?;
        let committed: Option<LogId> =
            store.read_at_open(&store.meta, COMMITTED_KEY, "the committed log id")?;
        let purged: Option<LogId> =
            store.read_at_open(&store.meta, PURGED_KEY, "the last purged log id")?;

        if let Some(purged) = purged {
            store.finish_purge(purged.index)?;
        }
        let span = store.check_contiguous()?;
        if let Some((first, last)) = span {
            for index in [first, last] {
                let what = format!("log entry {index}");
                let entry: Entry = store
                    .read_at_open(&store.log, &key_of(index), &what)?
                    .ok_or_else(|| StoreError::LogHole {
                        dir: store.dir.to_path_buf(),
                        after: first,
                        next: last,
                    })?;
                if entry.log_id.index != index {
                    return Err(StoreError::LogMisplaced {
                        dir: store.dir.to_path_buf(),
                        key: index,
                        found: entry.log_id.index,
                    });
                }
            }
            if let Some(purged) = purged
                && purged.index.checked_add(1) != Some(first)
            {
                return Err(StoreError::LogStart {
                    dir: store.dir.to_path_buf(),
                    purged: purged.index,
                    first,
                });
            }
        }
        tracing::info!(
            dir = %store.dir.display(),
            vote = ?vote,
            committed = ?committed,
            purged = ?purged,
            log = ?span,
            "log store opened"
        );
        Ok(store)
    }

    /// Deletes entries at or below `purged`: a purge recorded its id, then
    /// crashed before (durably) deleting them.
    fn finish_purge(&self, purged: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut count = 0u64;
        for key in self.log.range(..=key_of(purged)).keys() {
            let key = key.map_err(|e| sled_error(&self.dir, "read the log", e))?;
            batch.remove(key);
            count += 1;
        }
        if count > 0 {
            tracing::warn!(dir = %self.dir.display(), purged, count, "finishing an interrupted log purge");
            self.log
                .apply_batch(batch)
                .map_err(|e| sled_error(&self.dir, "purge the log", e))?;
            self.log
                .flush()
                .map_err(|e| sled_error(&self.dir, "flush the database", e))?;
        }
        Ok(())
    }

    /// Checks every key is an index and no index is missing between the first
    /// and the last; returns `(first, last)` if the log is not empty.
    fn check_contiguous(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let mut span: Option<(u64, u64)> = None;
        for key in self.log.iter().keys() {
            let key = key.map_err(|e| sled_error(&self.dir, "read the log", e))?;
            let index = index_of(&key).ok_or(StoreError::LogKey {
                dir: self.dir.to_path_buf(),
                len: key.len(),
            })?;
            span = match span {
                None => Some((index, index)),
                Some((first, last)) if last.checked_add(1) == Some(index) => Some((first, index)),
                Some((_, last)) => {
                    return Err(StoreError::LogHole {
                        dir: self.dir.to_path_buf(),
                        after: last,
                        next: index,
                    });
                }
            };
        }
        Ok(span)
    }

    /// Reads one record while opening; errors name the record as `what`.
    fn read_at_open<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        get_record(tree, key).map_err(|e| match e {
            ReadError::Sled(source) => sled_error(&self.dir, format!("read {what}"), source),
            ReadError::Codec(source) => StoreError::Record {
                dir: self.dir.to_path_buf(),
                what: what.to_owned(),
                source,
            },
        })
    }

    /// The stored vote, read while opening.
    pub(crate) fn vote_at_open(&self) -> Result<Option<Vote>, StoreError> {
        self.read_at_open(&self.meta, VOTE_KEY, "the vote")
    }

    /// Makes a node that led before it stopped start as a follower: if the
    /// stored vote is this node's own *committed* vote (it was leader of that
    /// term), replaces it with the same term's uncommitted vote for itself
    /// and returns `(stored, replacement)`. Call it before openraft starts.
    ///
    /// Why: openraft 0.9.25's `Engine::startup` restores a node whose vote is
    /// its own committed vote as leader of that term at once ("Previously it
    /// is a leader. restore it as leader at once"), without an election and
    /// without a first entry of a new leadership. But a leader's own log is
    /// not a safe record of what was committed in its term: a power cut can
    /// take from it a tail that its followers hold and that was committed
    /// (see `docs/decisions/0015-a-restarted-leader-never-leads-its-old-term.md`).
    /// Restored as leader of the same term with that shorter log, the node
    /// would write new entries under log ids the followers already hold with
    /// other contents, and serve from a rolled-back state. As a follower it
    /// can lead again only by winning an election in a higher term, which
    /// Raft's vote rule grants only to a log holding every committed entry.
    ///
    /// The replacement keeps the term (a vote never goes below the term it
    /// had) and stays this node's own vote, so the node can grant no vote in
    /// that term that it could not grant before. The marker file is
    /// rewritten first: a crash between the two writes leaves the stored
    /// committed vote above the marker's floor, which
    /// [`open`](super::store::open) accepts, and the next start demotes it
    /// again. Blocking.
    pub fn demote_restored_leadership(
        &self,
        node_id: u64,
    ) -> Result<Option<(Vote, Vote)>, StoreError> {
        let Some(stored) = self.vote_at_open()? else {
            return Ok(None);
        };
        if !stored.is_committed() || stored.leader_id().voted_for() != Some(node_id) {
            return Ok(None);
        }
        let replacement = Vote::new(stored.leader_id().get_term(), node_id);
        write_marker(
            &self.dir,
            &Marker {
                vote: Some(replacement),
            },
        )
        .map_err(|source| StoreError::Marker {
            dir: self.dir.to_path_buf(),
            file: self.dir.join(MARKER_FILE),
            source,
        })?;
        let bytes = codec::encode(&replacement).map_err(|source| StoreError::Record {
            dir: self.dir.to_path_buf(),
            what: "the vote".into(),
            source,
        })?;
        self.meta
            .insert(VOTE_KEY, bytes)
            .map_err(|e| sled_error(&self.dir, "write the vote", e))?;
        self.meta
            .flush()
            .map_err(|e| sled_error(&self.dir, "flush the database", e))?;
        self.sync
            .sync()
            .map_err(|e| sled_error(&self.dir, "sync the database", sled::Error::Io(e)))?;
        Ok(Some((stored, replacement)))
    }

    /// Reads the last purged log id.
    fn read_purged(&self) -> Result<Option<LogId>, StorageError> {
        get_record(&self.meta, PURGED_KEY).map_err(|e| StorageIOError::read_logs(any(e)).into())
    }

    /// Removes the given keys from the log in one batch and flushes.
    async fn remove_and_flush(&self, keys: sled::Iter) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in keys.keys() {
            batch.remove(key.map_err(|e| StorageIOError::read_logs(any(e)))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        self.log
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        self.sync
            .sync_async()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.log.range(key_of(start)..key_of(end)),
            None => self.log.range(key_of(start)..),
        };
        let mut entries = Vec::new();
        for item in iter.values() {
            let bytes = item.map_err(|e| StorageIOError::read_logs(any(e)))?;
            let entry: Entry =
                codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(any(e)))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_purged()?;
        let last = self
            .log
            .last()
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let last_log_id = match last {
            Some((_, bytes)) => {
                let entry: Entry =
                    codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(any(e)))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = codec::encode(vote).map_err(|e| StorageIOError::write_vote(any(e)))?;
        self.meta
            .insert(VOTE_KEY, bytes)
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        self.meta
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        self.sync
            .sync_async()
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        // Then the floor outside sled (see `store`); blocking file I/O, off
        // the async workers. Votes are saved on elections only.
        let dir = self.dir.clone();
        let marker = Marker { vote: Some(*vote) };
        tokio::task::spawn_blocking(move || write_marker(&dir, &marker))
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)))?
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        tracing::debug!(%vote, "vote saved");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        get_record(&self.meta, VOTE_KEY).map_err(|e| StorageIOError::read_vote(any(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on purpose; see the module docs.
        match committed {
            Some(committed) => {
                let bytes = codec::encode(&committed).map_err(|e| StorageIOError::write(any(e)))?;
                self.meta
                    .insert(COMMITTED_KEY, bytes)
                    .map_err(|e| StorageIOError::write(any(e)))?;
            }
            None => {
                self.meta
                    .remove(COMMITTED_KEY)
                    .map_err(|e| StorageIOError::write(any(e)))?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        get_record(&self.meta, COMMITTED_KEY).map_err(|e| StorageIOError::read(any(e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for entry in entries {
            let bytes = codec::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, any(e)))?;
            batch.insert(&key_of(entry.log_id.index)[..], bytes);
            last = Some(entry.log_id);
        }
        let own = |me: u64| last.is_some_and(|l: LogId| l.leader_id.node_id == me);
        let written = match self.log.apply_batch(batch) {
            Ok(()) if self.unsynced_leader.is_some_and(own) => Ok(()),
            Ok(()) => match self.log.flush_async().await {
                // sled's flush is a sync_file_range; the fdatasync makes it a real one.
                Ok(_) => self.sync.sync_async().await.map_err(sled::Error::Io),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                tracing::trace!(last = ?last, "log entries flushed");
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let error = StorageIOError::write_logs(any(e.clone()));
                callback.log_io_completed(Err(io::Error::other(e)));
                Err(error.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the log from this entry on");
        let keys = self.log.range(key_of(log_id.index)..);
        self.remove_and_flush(keys).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the log up to this entry");
        // Record first (durably), then delete: a crash in between leaves
        // entries that opening the store deletes, never a hole.
        let bytes = codec::encode(&log_id).map_err(|e| StorageIOError::write_logs(any(e)))?;
        self.meta
            .insert(PURGED_KEY, bytes)
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        self.meta
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        self.sync
            .sync_async()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        let keys = self.log.range(..=key_of(log_id.index));
        self.remove_and_flush(keys).await
    }
}
