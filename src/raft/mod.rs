//! Replication: the license state as a replicated, durable Raft state machine.
//!
//! The Raft log's payload is a [`Batch`] of license commands, stamped with the
//! active node's time; the response to one log entry is one
//! [`Outcome`] per command. Each node keeps the log, the Raft
//! metadata and the latest state-machine snapshot in its own sled database
//! (see `docs/architecture.md`).

use std::io::Cursor;

use crate::license::state::{Batch, Outcome};

pub mod backup;
pub mod disk_sync;
pub mod log_store;
pub mod marker;
pub mod network;
pub mod pre_vote;
pub mod restore;
pub mod restored;
pub mod state_machine;
pub mod storage_error;
pub mod store;

/// A member of the cluster as the Raft membership records it: where clients
/// and peers reach it.
///
/// Each node dials its peers at the `peer_address` of its own config's
/// `[[nodes]]` list first (so a node behind a proxy, or with a per-node view
/// of the network, keeps its view); the membership's copy is the fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The client-plane address (license and admin services), `host:port`.
    pub address: String,
    /// The peer-plane address (Raft RPCs), `host:port`.
    pub peer_address: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (peer {})", self.address, self.peer_address)
    }
}

openraft::declare_raft_types!(
    /// raftlm's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft node handle of our type configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log id.
pub type LogId = openraft::LogId<u64>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Cluster membership as stored.
pub type StoredMembership = openraft::StoredMembership<u64, Member>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<u64, Member>;
/// A snapshot with its data.
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
/// A vote.
pub type Vote = openraft::Vote<u64>;
/// Storage error of our configuration.
pub type StorageError = openraft::StorageError<u64>;
