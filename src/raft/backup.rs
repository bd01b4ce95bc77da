//! A backup of the license state: one file an administrator keeps away from
//! the cluster, written by `raftlm backup`, checked by `raftlm backup
//! --verify` and written into empty data directories by `raftlm restore`
//! ([`super::restore`]).
//!
//! The active node takes it under the state machine's lock, at one applied
//! log index (as the state digest of `NodeInfo` is taken), so the state, the
//! log id and the membership describe the same moment.
//!
//! # The file
//!
//! | bytes            | what                                                   |
//! |------------------|--------------------------------------------------------|
//! | 14               | [`BACKUP_MAGIC`], `raftlm backup\n`                    |
//! | 1                | [`BACKUP_FORMAT`], the layout of this file             |
//! | the rest but 32  | one [`codec`] record of [`Backup`] (its own format byte first) |
//! | 32               | SHA-256 of every byte before it                        |
//!
//! [`decode`] checks the magic, the layout version, the checksum and then
//! decodes; [`verify`] checks what a decoded backup says about itself: the
//! license state's invariants, that its grants come from entries at or below
//! the backup's log index, its digest, and every license line against the
//! trust anchors the state holds. A backup whose record format is not the
//! one this build reads is refused naming both.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, CodecError};
use crate::license::state::LicenseState;

use super::{LogId, StoredMembership};

/// The first bytes of every backup file.
pub const BACKUP_MAGIC: &[u8; 14] = b"raftlm backup\n";
/// The layout of the file around the record (magic, this byte, the record,
/// the checksum). The record's own format is the codec's.
pub const BACKUP_FORMAT: u8 = 1;
/// Bytes of the trailing checksum.
const CHECKSUM_BYTES: usize = 32;
/// Largest piece of a backup one streamed message carries: 100,000 grants
/// encode to about 8 MB, and gRPC refuses messages over 4 MiB by default.
pub const BACKUP_CHUNK_BYTES_MAX: usize = 1 << 20;
/// Largest backup read or received: the codec's record limit.
pub const BACKUP_BYTES_MAX: usize = codec::RECORD_BYTES_MAX;

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    /// The cluster name the licenses are bound to; a restore refuses a node
    /// whose config names another.
    pub cluster_name: String,
    /// The raftlm version of the node that wrote it.
    pub raftlm_version: String,
    /// The node that wrote it (the active node).
    pub node: u64,
    /// When it was taken, wall-clock ms since the epoch.
    pub created_ms: u64,
    /// The writing node's Raft term at the time: a restored cluster starts
    /// above it, so that clients which saw it accept the restored cluster.
    pub term: u64,
    /// The last log entry applied to [`state`](Self::state).
    pub last_applied: LogId,
    /// The membership applied at that point (informative: a restore takes
    /// its members from the restored node's config).
    pub membership: StoredMembership,
    /// [`LicenseState::digest`] of `state`.
    pub state_digest: String,
    /// The license state.
    pub state: LicenseState,
}

/// Why a backup cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The bytes do not start with [`BACKUP_MAGIC`].
    #[error("not a raftlm backup (it does not start with \"raftlm backup\")")]
    NotABackup,
    /// The file is larger than [`BACKUP_BYTES_MAX`].
    #[error("the backup is {0} bytes, more than the {BACKUP_BYTES_MAX} a backup may have")]
    TooLarge(usize),
    /// The file is shorter than its fixed parts.
    #[error("the backup is truncated ({0} bytes)")]
    Truncated(usize),
    /// The layout version is not this build's.
    #[error(
        "checksum-and-layout check: backup layout version {found} is not supported (this build reads version {BACKUP_FORMAT})"
    )]
    Layout {
        /// The version byte found.
        found: u8,
    },
    /// The checksum does not match the bytes.
    #[error(
        "checksum check: the backup's SHA-256 is {computed} but it records {stated}: the file was changed or damaged"
    )]
    Checksum {
        /// The checksum written in the file.
        stated: String,
        /// The checksum of the bytes read.
        computed: String,
    },
    /// The record does not decode (including a record format this build does not read).
    #[error("decoding check: {0}")]
    Decode(#[from] CodecError),
    /// The license state breaks an invariant.
    #[error("invariant check: {0}")]
    Invariant(String),
    /// The state's digest is not the one recorded.
    #[error("digest check: the state's digest is {computed} but the backup records {stated}")]
    Digest {
        /// The digest written in the backup.
        stated: String,
        /// The digest of the decoded state.
        computed: String,
    },
    /// A license line does not verify against the state's trust anchors.
    #[error("license check: {0}")]
    Lines(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's bytes for `backup`, in the record format its cluster writes
/// (so a backup of a cluster that has not raised its format yet is one the
/// previous release reads too).
pub fn encode(backup: &Backup) -> Result<Vec<u8>, CodecError> {
    encode_as(backup.state.formats().write, backup)
}

/// The file's bytes for `backup`, in record format `format`.
pub fn encode_as(format: u8, backup: &Backup) -> Result<Vec<u8>, CodecError> {
    let mut out = BACKUP_MAGIC.to_vec();
    out.push(BACKUP_FORMAT);
    out.extend(codec::encode_as(format, backup)?);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// Reads a backup file's bytes: magic, layout, checksum, then the record.
/// Does not [`verify`] what it says.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    if bytes.len() > BACKUP_BYTES_MAX {
        return Err(BackupError::TooLarge(bytes.len()));
    }
    if !bytes.starts_with(BACKUP_MAGIC) {
        return Err(BackupError::NotABackup);
    }
    if bytes.len() < BACKUP_MAGIC.len() + 1 + CHECKSUM_BYTES {
        return Err(BackupError::Truncated(bytes.len()));
    }
    let found = bytes[BACKUP_MAGIC.len()];
    if found != BACKUP_FORMAT {
        return Err(BackupError::Layout { found });
    }
    let (covered, stated) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let computed = Sha256::digest(covered);
    if computed.as_slice() != stated {
        return Err(BackupError::Checksum {
            stated: hex(stated),
            computed: hex(&computed),
        });
    }
    Ok(codec::decode(&covered[BACKUP_MAGIC.len() + 1..])?)
}

/// Checks what a decoded backup says about itself (see the module docs).
pub fn verify(backup: &Backup) -> Result<(), BackupError> {
    let state = &backup.state;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.check_invariants())).map_err(
        |payload| BackupError::Invariant(super::storage_error::panic_message(payload.as_ref())),
    )?;
    state
        .check_applied_through(Some(backup.last_applied.index))
        .map_err(BackupError::Invariant)?;
    let computed = state.digest()?;
    if computed != backup.state_digest {
        return Err(BackupError::Digest {
            stated: backup.state_digest.clone(),
            computed,
        });
    }
    state.verify_lines().map_err(BackupError::Lines)
}

/// The backup split into streamed pieces of at most
/// [`BACKUP_CHUNK_BYTES_MAX`] bytes.
pub fn chunks(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.chunks(BACKUP_CHUNK_BYTES_MAX)
}

/// A backup of a state with one activation by node 1 at `term`, log index
/// `index`, for tests.
#[cfg(test)]
pub(crate) fn sample(term: u64, index: u64) -> Backup {
    use crate::license::state::{Batch, Command, LogIndex, LogPosition, NodeId, Term};
    let mut state = LicenseState::new();
    state.apply_batch(
        LogPosition {
            term: Term(term),
            index: LogIndex(index),
        },
        &Batch {
            now_ms: 1_000,
            commands: vec![Command::Activate {
                term: Term(term),
                node: NodeId(1),
                cluster_name: "LICSRV".into(),
                cluster_id: None,
                lease_ms: 250,
                wait_ms: 350,
            }],
        },
    );
    Backup {
        cluster_name: "LICSRV".into(),
        raftlm_version: env!("CARGO_PKG_VERSION").into(),
        node: 1,
        created_ms: 5,
        term,
        last_applied: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
        membership: StoredMembership::default(),
        state_digest: state.digest().expect("a small state encodes"),
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> Backup {
        sample(3, 7)
    }

    #[test]
    fn a_backup_reads_back_and_verifies() {
        let bytes = encode(&backup()).unwrap();
        let read = decode(&bytes).unwrap();
        verify(&read).unwrap();
        assert_eq!(read.last_applied.index, 7);
        assert_eq!(read.state_digest, backup().state_digest);
    }

    #[test]
    fn every_changed_byte_is_caught() {
        let bytes = encode(&backup()).unwrap();
        for at in [
            0,
            BACKUP_MAGIC.len(),
            BACKUP_MAGIC.len() + 3,
            bytes.len() - 1,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(
                decode(&bad).is_err(),
                "a change at byte {at} went unnoticed"
            );
        }
        let error = decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(error, BackupError::Checksum { .. }), "{error}");
        assert!(matches!(decode(b"hello"), Err(BackupError::NotABackup)));
    }

    #[test]
    fn a_digest_that_does_not_match_is_named() {
        let mut wrong = backup();
        wrong.state_digest = "00".repeat(32);
        let error = verify(&wrong).unwrap_err();
        assert!(error.to_string().starts_with("digest check"), "{error}");
    }

    #[test]
    fn another_layout_is_refused_naming_both_versions() {
        let mut bytes = encode(&backup()).unwrap();
        bytes[BACKUP_MAGIC.len()] = 9;
        let error = decode(&bytes).unwrap_err().to_string();
        assert!(
            error.contains("version 9") && error.contains("version 1"),
            "{error}"
        );
    }
}
