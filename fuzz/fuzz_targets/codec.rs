//! Every `raftlm::codec::decode` of bytes that come from disk or a peer.
//!
//! The first input byte picks the type; the rest is the record (format
//! version byte, forced to `codec::FORMAT_VERSION`, then the bincode body).
//! For each type:
//! - `decode` never panics, and never allocates past libFuzzer's limit;
//! - a decoded value encodes, its encoding decodes again, and that value
//!   encodes to the same bytes (the round trip is stable);
//! - `encoded_len` agrees with `encode`;
//! - formatting the value for logs (`Debug`, and `Display` where the code
//!   logs it with `%`) does not panic.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use openraft::error::{Infallible, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftlm::codec;
use raftlm::license::state::{Batch, Command, LicenseState, Outcome};
use raftlm::raft::{Entry, LogId, Member, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What the state machine's snapshot data encodes (the private
/// `raft::state_machine::Live`): bincode writes a struct as its fields in
/// order, so this tuple has the same encoding.
type Live = (Option<LogId>, StoredMembership, LicenseState);

/// The marker file outside sled (the private `raft::store::Marker`, a struct
/// of one field).
type Marker = (Option<Vote>,);

/// Decodes `body` as `T`; on success checks the round trip.
fn check<T>(body: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + Debug,
{
    let value: T = codec::decode(body).ok()?;
    let first = codec::encode(&value).expect("a decoded value encodes");
    assert_eq!(
        codec::encoded_len(&value).expect("a decoded value has a length"),
        first.len(),
        "encoded_len disagrees with encode"
    );
    let again: T = codec::decode(&first)
        .unwrap_or_else(|e| panic!("an encoded value does not decode: {e}: {value:?}"));
    let second = codec::encode(&again).expect("a decoded value encodes");
    assert_eq!(first, second, "the round trip changed the encoding");
    let _ = format!("{value:?}");
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // The version byte is forced to this build's, so seeds stay useful
    // across a format bump (a wrong version is refused before any decoding).
    let mut record = rest.to_vec();
    if let Some(version) = record.first_mut() {
        *version = codec::FORMAT_VERSION;
    }
    let body = record.as_slice();
    match selector % 16 {
        // The log tree: one entry per key.
        0 => {
            if let Some(entry) = check::<Entry>(body) {
                let _ = entry.to_string();
            }
        }
        // The meta tree: vote, committed and purged log ids.
        1 => {
            if let Some(vote) = check::<Vote>(body) {
                let _ = vote.to_string();
            }
        }
        2 => {
            if let Some(id) = check::<LogId>(body) {
                let _ = id.to_string();
            }
        }
        // The marker file, and the creation record.
        3 => {
            check::<Marker>(body);
        }
        4 => {
            check::<String>(body);
        }
        // The state tree: snapshot metadata and data.
        5 => {
            if let Some(meta) = check::<SnapshotMeta>(body) {
                let _ = meta.to_string();
                let _ = meta.last_membership.to_string();
            }
        }
        6 => {
            if let Some((_, membership, _)) = check::<Live>(body) {
                let _ = membership.to_string();
            }
        }
        7 => {
            check::<LicenseState>(body);
        }
        // The log payload and its parts.
        8 => {
            check::<Batch>(body);
        }
        9 => {
            check::<Command>(body);
        }
        10 => {
            check::<Vec<Outcome>>(body);
        }
        // Requests a peer sends (decoded by RaftService).
        11 => {
            check::<AppendEntriesRequest<TypeConfig>>(body);
        }
        12 => {
            check::<VoteRequest<u64>>(body);
        }
        13 => {
            if let Some(request) = check::<InstallSnapshotRequest<TypeConfig>>(body) {
                let _ = request.meta.to_string();
            }
        }
        // Replies a peer sends (decoded by Connection::send).
        14 => {
            check::<Result<AppendEntriesResponse<u64>, RaftError<u64, Infallible>>>(body);
            check::<Result<VoteResponse<u64>, RaftError<u64, Infallible>>>(body);
        }
        _ => {
            check::<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>>(
                body,
            );
            check::<Member>(body);
        }
    }
});
