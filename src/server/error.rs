//! The services' one error enum and its one mapping to `tonic::Status`.
//!
//! A node that is not serving answers `UNAVAILABLE` with the active node's id
//! and address in the response metadata ([`LEADER_ADDRESS_KEY`],
//! [`LEADER_ID_KEY`]) so a client can follow the hint. Successful replies
//! carry the term (the fencing token) in their body.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::server::batcher::BatchError;
use crate::wire::{LEADER_ADDRESS_KEY, LEADER_ID_KEY, LIMIT_KEY};

/// Why a license or admin request was not answered with a reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// This node does not serve: it is not the active node.
    #[error("node {node} is not the active node{}", hint_text(.leader))]
    NotActive {
        /// This node.
        node: u64,
        /// The active node's id and address, when known.
        leader: Option<(u64, String)>,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request was refused (a bad license, a license change that would strand grants).
    #[error("{0}")]
    Refused(String),
    /// The node has too much queued work.
    #[error("{0}")]
    Overloaded(String),
    /// The request would take the client's source past a configured limit.
    #[error("{message}")]
    LimitReached {
        /// The limit, as its config field names it.
        limit: &'static str,
        /// One plain sentence naming the limit, its value and the source.
        message: String,
    },
    /// The session is being expired (the sweeper found it silent for longer
    /// than the session TTL and its `Expire` is in flight): ask again, and the
    /// answer will say whether it was expired.
    #[error("session {0} is being expired after a silence longer than the session TTL; ask again")]
    Expiring(String),
    /// The request may or may not have been applied; retry it with the same request id.
    #[error("{0}; retry with the same request id")]
    Unknown(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Stopped,
    /// The caller did not say who it is (no administrator certificate).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (another session's grant, no administrator role).
    #[error("{0}")]
    PermissionDenied(String),
}

fn hint_text(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, address)) => format!("; node {id} at {address} is"),
        None => "; it knows of no active node (an election is running, or too few nodes are up for a quorum)".to_string(),
    }
}

impl ServiceError {
    /// Maps a batcher error for node `node`.
    pub fn from_batch(node: u64, error: BatchError) -> ServiceError {
        match error {
            BatchError::NotLeader { leader } => ServiceError::NotActive { node, leader },
            BatchError::Overloaded => ServiceError::Overloaded(error.to_string()),
            BatchError::TooLarge(_) => ServiceError::InvalidArgument(error.to_string()),
            BatchError::Stopped => ServiceError::Stopped,
            BatchError::ClockOff(_) => ServiceError::NotActive { node, leader: None },
            BatchError::Failed(message) => ServiceError::Unknown(message),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let message = error.to_string();
        match error {
            ServiceError::NotActive { leader, .. } => {
                let mut status = Status::new(Code::Unavailable, message);
                if let Some((id, address)) = leader {
                    if let Ok(value) = MetadataValue::try_from(address.as_str()) {
                        status.metadata_mut().insert(LEADER_ADDRESS_KEY, value);
                    }
                    status
                        .metadata_mut()
                        .insert(LEADER_ID_KEY, MetadataValue::from(id));
                }
                status
            }
            ServiceError::InvalidArgument(_) => Status::invalid_argument(message),
            ServiceError::Refused(_) => Status::failed_precondition(message),
            ServiceError::Overloaded(_) | ServiceError::Expiring(_) => {
                Status::resource_exhausted(message)
            }
            ServiceError::LimitReached { limit, .. } => {
                let mut status = Status::resource_exhausted(message);
                status
                    .metadata_mut()
                    .insert(LIMIT_KEY, MetadataValue::from_static(limit));
                status
            }
            ServiceError::Unknown(_) => Status::unavailable(message),
            ServiceError::Stopped => Status::unavailable(message),
            ServiceError::Unauthenticated(_) => Status::unauthenticated(message),
            ServiceError::PermissionDenied(_) => Status::permission_denied(message),
        }
    }
}

/// Refuses a name holding a control character (C0, DEL or C1): names are
/// text, printed by `status`, in logs and on terminals, where an escape
/// sequence would rewrite what an administrator reads.
pub fn check_text(what: &str, value: &str) -> Result<(), ServiceError> {
    match value.char_indices().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(ServiceError::InvalidArgument(format!(
            "{what} contains the control character U+{:04X} at byte {at}: names are text",
            u32::from(c)
        ))),
    }
}
