//! Why a node's data directory could not be opened or checked: the one error
//! of the sled stores, shared by [`store`](super::store) (which opens the
//! database), [`log_store`](super::log_store) and
//! [`state_machine`](super::state_machine) (which validate what they load),
//! with the helpers that build it.

use std::any::Any;
use std::path::{Path, PathBuf};

use crate::codec::{self, CodecError};

use super::marker::MARKER_FILE;

/// The file naming the directory's owner: cluster name, node id and the
/// cluster identity when the node started with TLS.
pub const OWNER_FILE: &str = "RAFTLM_OWNER";

/// What an operator should do about a corrupt database; ends every corruption message.
const CORRUPT_ADVICE: &str = "the file is corrupt — restore from a backup (raftlm restore), or move the directory aside and replace this node under a new id (raftlm cluster remove-node, then add-node; docs/operations.md, \"Replacing one node\")";

/// Why a node's data directory could not be opened.
///
/// Every message names the data directory and says what is wrong, so it can
/// be shown to an administrator as is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the database (the directory cannot be created or
    /// read, a file cannot be opened, …).
    #[error("data directory {}: the database cannot be opened: {source}", dir.display())]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// The directory belongs to another node or another cluster.
    #[error("data directory {}: it belongs to {found}, but this is {this} ({OWNER_FILE}); a directory copied from another node or cluster would bring its votes and log: give this node its own (empty) directory, and it receives the state from the others", dir.display())]
    Foreign {
        /// The data directory.
        dir: PathBuf,
        /// Whose it is, as its owner file says.
        found: String,
        /// This node.
        this: String,
    },
    /// Another process (or another handle in this one) holds the database.
    #[error("data directory {}: the database is in use by another process (is another raftlm node running with this directory?): {source}", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// sled detected corruption in its files, or panicked reading them.
    #[error("data directory {}: the database is unreadable ({detail}); {CORRUPT_ADVICE}", dir.display())]
    Corrupt {
        /// The data directory.
        dir: PathBuf,
        /// What sled reported.
        detail: String,
    },
    /// The database is empty, but the directory held a node's database: sled
    /// recovered nothing from a truncated or overwritten file.
    #[error("data directory {}: the database is empty but {} says this directory held a node's data: the database file was truncated, overwritten or replaced; {CORRUPT_ADVICE}", dir.display(), marker.display())]
    Emptied {
        /// The data directory.
        dir: PathBuf,
        /// The marker file found.
        marker: PathBuf,
    },
    /// The database holds an older vote than the last one saved: sled lost
    /// its latest writes. Starting would let this node vote twice in a term.
    #[error("data directory {}: the database holds {found} but vote {saved} was saved (see {MARKER_FILE}): the database lost its latest writes; {CORRUPT_ADVICE}", dir.display())]
    VoteLost {
        /// The data directory.
        dir: PathBuf,
        /// The vote the marker file records.
        saved: String,
        /// The vote the database holds.
        found: String,
    },
    /// The marker file cannot be read or written.
    #[error("data directory {}: cannot check or write {}: {source}", dir.display(), file.display())]
    Marker {
        /// The data directory.
        dir: PathBuf,
        /// The marker file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A read or write failed while the database was being checked.
    #[error("data directory {}: cannot {doing}: {source}", dir.display())]
    Sled {
        /// The data directory.
        dir: PathBuf,
        /// What was being done, e.g. "open tree log".
        doing: String,
        /// sled's error.
        source: sled::Error,
    },
    /// The database was written by a raftlm whose record format this build
    /// does not read: each release reads its own format and the previous one.
    #[error("data directory {}: the database was written in record format {found}, but this raftlm reads formats {}–{}; {}", dir.display(), codec::FORMAT_OLDEST, codec::FORMAT_NEWEST, if *found > codec::FORMAT_NEWEST { "it was written by a newer raftlm: run that release on this node" } else { "it cannot be upgraded in place by this release (upgrade one release at a time), or replace the node: stop it, move the directory aside and bring in a successor with `raftlm cluster replace-node`, which receives its state from the others" })]
    Format {
        /// The data directory.
        dir: PathBuf,
        /// The format-version byte found.
        found: u8,
    },
    /// A stored record does not decode.
    #[error("data directory {}: {what} does not decode: {source}; {CORRUPT_ADVICE}", dir.display())]
    Record {
        /// The data directory.
        dir: PathBuf,
        /// Which record, e.g. "log entry 42" or "the vote".
        what: String,
        /// The codec's error.
        source: CodecError,
    },
    /// A key of the log tree is not an 8-byte big-endian index.
    #[error("data directory {}: the log holds a key of {len} bytes, not an 8-byte index; {CORRUPT_ADVICE}", dir.display())]
    LogKey {
        /// The data directory.
        dir: PathBuf,
        /// The key's length.
        len: usize,
    },
    /// A log entry is stored under another index than its own.
    #[error("data directory {}: the log entry stored at index {key} names index {found}; {CORRUPT_ADVICE}", dir.display())]
    LogMisplaced {
        /// The data directory.
        dir: PathBuf,
        /// The index it is stored under.
        key: u64,
        /// The index the entry names.
        found: u64,
    },
    /// The log has a hole: an index between the first and the last entry is missing.
    #[error("data directory {}: the log jumps from entry {after} to entry {next}; entries are missing; {CORRUPT_ADVICE}", dir.display())]
    LogHole {
        /// The data directory.
        dir: PathBuf,
        /// The last index present before the hole.
        after: u64,
        /// The next index present.
        next: u64,
    },
    /// The first log entry does not follow the last purged one.
    #[error("data directory {}: the log was purged up to entry {purged} but starts at entry {first}; entries are missing; {CORRUPT_ADVICE}", dir.display())]
    LogStart {
        /// The data directory.
        dir: PathBuf,
        /// The last purged index.
        purged: u64,
        /// The first index present.
        first: u64,
    },
    /// Only half of the snapshot (metadata or data) is stored.
    #[error("data directory {}: the snapshot has {present} but no {missing}; {CORRUPT_ADVICE}", dir.display())]
    SnapshotIncomplete {
        /// The data directory.
        dir: PathBuf,
        /// The half present.
        present: &'static str,
        /// The half missing.
        missing: &'static str,
    },
    /// The snapshot's data describes another point of the log than its metadata.
    #[error("data directory {}: the snapshot's metadata says {meta} but its data holds {data}; {CORRUPT_ADVICE}", dir.display())]
    SnapshotMismatch {
        /// The data directory.
        dir: PathBuf,
        /// What the metadata says.
        meta: String,
        /// What the data holds.
        data: String,
    },
    /// The snapshot decodes but its license state breaks an invariant.
    #[error("data directory {}: the snapshot's license state is inconsistent ({detail}); {CORRUPT_ADVICE}", dir.display())]
    SnapshotInvariant {
        /// The data directory.
        dir: PathBuf,
        /// The invariant check's message.
        detail: String,
    },
}

/// Maps a sled error met while reading or writing an open database.
pub(crate) fn sled_error(dir: &Path, doing: impl Into<String>, source: sled::Error) -> StoreError {
    let dir = dir.to_path_buf();
    match source {
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            dir,
            detail: source.to_string(),
        },
        _ => StoreError::Sled {
            dir,
            doing: doing.into(),
            source,
        },
    }
}

/// The message of a caught panic, if it carried one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        String::from("no message")
    }
}
