//! The one place that turns persisted and replicated values into bytes.
//!
//! Every record starts with a format-version byte, then the value encoded by
//! bincode 2.0.1's serde layer with `config::standard()`. bincode is pinned
//! and unmaintained (RUSTSEC-2025-0141); keeping it behind this module means it
//! can be replaced in one place (docs/decisions/0003-bincode-behind-codec.md).
//!
//! Persisted types must not use serde `flatten`, `skip`, `tag` or `untagged`:
//! bincode's serde layer cannot represent them.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version written in front of every record.
///
/// History: 1 — the first release; 2 — members carry a peer-plane address,
/// sessions are named by a handle derived from a secret, and administrators'
/// actions are recorded with their author; 3 — the license state keeps the
/// first answers of requests from sessions it does not hold (a denial creates
/// no session); 4 — the license state records whether it ever trusted a
/// vendor key (a `vendor_keys` bootstrap happens once) and the bootstrap is
/// one command; license lines bound to a cluster identity; 5 — license
/// lines bound to host ids, and the voters' host ids in the state; 6 — the
/// node ids that left the cluster (never used again) and membership
/// changes among the administrators' actions.
pub const FORMAT_VERSION: u8 = 6;

/// Largest record [`decode`] accepts; guards against a corrupt length prefix
/// asking for an absurd allocation.
pub const RECORD_BYTES_MAX: usize = 1 << 30;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is empty: not even a version byte.
    #[error("empty record: no format-version byte")]
    Empty,
    /// The record was written by a format this build does not read.
    #[error(
        "record format version {found} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The body does not decode.
    #[error("record does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// Bytes were left over after the value.
    #[error("record has {0} trailing bytes after the value")]
    Trailing(usize),
    /// The value does not encode.
    #[error("value does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_BYTES_MAX>()
}

/// The length of [`encode`]'s record for `value`, without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())?;
    Ok(1 + size.bytes_written)
}

/// Encodes a value as a versioned record.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes a versioned record; the whole input must be one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version { found: version });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(CodecError::Trailing(body.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A record written by encode reads back equal, and names its version.
    #[test]
    fn round_trip_and_version_byte() {
        let value = (7u64, String::from("cad"), vec![1u32, 2, 3]);
        let bytes = encode(&value).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Vec<u32>) = decode(&bytes).unwrap();
        assert_eq!(back, value);
    }

    // Corrupt records are errors, never panics or silent garbage.
    #[test]
    fn corrupt_records_are_refused() {
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<u64>(&[9, 1]),
            Err(CodecError::Version { found: 9 })
        ));
        let mut bytes = encode(&String::from("feature")).unwrap();
        bytes.truncate(4);
        assert!(matches!(
            decode::<String>(&bytes),
            Err(CodecError::Decode(_))
        ));
        let mut bytes = encode(&1u8).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<u8>(&bytes), Err(CodecError::Trailing(1))));
    }

    // The id newtypes are their bare numbers on disk and in JSON: wrapping
    // a grant token's term and index in `Term` and `LogIndex` left every
    // stored record and every JSON output as it was, so FORMAT_VERSION
    // did not move.
    #[test]
    fn id_newtypes_encode_as_bare_numbers() {
        use crate::license::ids::{GrantToken, LogIndex, Term};
        let token = GrantToken {
            term: Term(3),
            index: LogIndex(1042),
            slot: 7,
        };
        assert_eq!(
            encode(&token).unwrap(),
            encode(&(3u64, 1042u64, 7u32)).unwrap()
        );
        assert_eq!(
            decode::<GrantToken>(&encode(&token).unwrap()).unwrap(),
            token
        );
        assert_eq!(
            serde_json::to_string(&token).unwrap(),
            r#"{"term":3,"index":1042,"slot":7}"#
        );
    }
}
