//! What the client and the server agree on beyond the protobuf messages
//! (`proto/raftlm/v1/*.proto`): the response metadata keys, and the
//! conversions between protobuf messages and domain values that both sides
//! make. The client imports this, never the server.

use crate::license::ids::{LogIndex, Term};
use crate::license::state::GrantToken;
use crate::proto::v1 as pb;

/// Response metadata: the address of the node that serves, when this one does not.
pub const LEADER_ADDRESS_KEY: &str = "raftlm-leader";
/// Response metadata: the id of the node that serves.
pub const LEADER_ID_KEY: &str = "raftlm-leader-id";
/// Response metadata on a `RESOURCE_EXHAUSTED` answer: the name of the
/// configured limit the request ran into. Retrying at once cannot help, unlike
/// a node that is only busy.
pub const LIMIT_KEY: &str = "raftlm-limit";

/// The wire form of a grant token.
pub fn token_to_pb(token: GrantToken) -> pb::GrantToken {
    pb::GrantToken {
        term: token.term.0,
        index: token.index.0,
        slot: token.slot,
    }
}

/// A grant token from its wire form.
pub fn token_from_pb(token: &pb::GrantToken) -> GrantToken {
    GrantToken {
        term: Term(token.term),
        index: LogIndex(token.index),
        slot: token.slot,
    }
}
