//! Taking a backup on the active node (the admin RPC `Backup`, `raftlm
//! backup`): the license state, its last applied log id and membership are
//! copied under the state machine's lock, so they describe one moment; the
//! copy is digested and encoded off the async workers ([`crate::raft::backup`]
//! is the file), one backup at a time, and streamed in pieces.

use std::sync::Arc;

use crate::raft::backup::{self, Backup};
use crate::server::{ServiceError, Shared};

/// Backups a node takes at once: encoding the whole state is as costly as a
/// digest, so a second administrator's waits.
pub const BACKUPS_IN_FLIGHT_MAX: usize = 1;
static BACKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BACKUPS_IN_FLIGHT_MAX);

/// A backup the active node took: the term it serves in, the log index the
/// state is at, and the file's bytes.
pub struct Taken {
    /// The term this node served in when it took the copy.
    pub term: u64,
    /// The last applied log index of the copy.
    pub applied_index: u64,
    /// The backup file.
    pub bytes: Vec<u8>,
}

/// Takes a backup, if this node serves (otherwise the client is sent on).
pub async fn take(shared: &Arc<Shared>) -> Result<Taken, ServiceError> {
    let term = shared.serving()?;
    let _one_at_a_time = BACKUPS
        .acquire()
        .await
        .map_err(|_| ServiceError::Unknown("the backup limiter is closed".into()))?;
    let (applied, membership, state) = shared.state.copy_applied();
    let Some(last_applied) = applied else {
        return Err(ServiceError::Refused(
            "the cluster has applied nothing yet: there is nothing to back up".into(),
        ));
    };
    let cluster_name = shared.config.cluster_name.clone();
    let node = shared.node_id;
    let bytes = tokio::task::spawn_blocking(move || {
        let state_digest = state.digest()?;
        backup::encode(&Backup {
            cluster_name,
            raftlm_version: env!("CARGO_PKG_VERSION").to_string(),
            node,
            created_ms: crate::clock::wall_ms(),
            term,
            last_applied,
            membership,
            state_digest,
            state,
        })
    })
    .await
    .map_err(|e| ServiceError::Unknown(format!("the backup task failed: {e}")))?
    .map_err(|e| ServiceError::Unknown(format!("the state does not encode: {e}")))?;
    let term = shared.confirm(term)?;
    tracing::info!(
        bytes = bytes.len(),
        applied_index = last_applied.index,
        "backup taken"
    );
    Ok(Taken {
        term,
        applied_index: last_applied.index,
        bytes,
    })
}
