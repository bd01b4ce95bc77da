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

/// The newest record format: what this build writes to its own disk.
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
/// changes among the administrators' actions; 7 — the license state records
/// the cluster's write format, each member's release and the formats it
/// reads, and members' moved addresses (`Command::RecordFormats`,
/// `Command::SetAddress`); grants administrators removed
/// (`Command::RemoveGrants`) and check-outs counted per feature and outcome.
pub const FORMAT_NEWEST: u8 = 7;

/// The oldest record format this build reads: the previous release's, so a
/// cluster can be upgraded node by node (docs/decisions/0022-format-negotiation.md).
pub const FORMAT_OLDEST: u8 = 6;

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
        "record format version {found} is not supported (this build reads versions {FORMAT_OLDEST}–{FORMAT_NEWEST})"
    )]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// A value needs a newer format than the one asked for.
    #[error("{0}")]
    TooNew(String),
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

/// Encodes a value as a record of the newest format ([`FORMAT_NEWEST`]).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as(FORMAT_NEWEST, value)
}

/// Encodes a value as a record of `format`, for a reader that reads no newer
/// one (a peer of the previous release, or a cluster that has not raised its
/// write format yet). A field added in a newer format is left out; a value
/// that cannot be written without one (a command kind added later) is
/// [`CodecError::TooNew`].
pub fn encode_as<T: Serialize + ?Sized>(format: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    if !(FORMAT_OLDEST..=FORMAT_NEWEST).contains(&format) {
        return Err(CodecError::Version { found: format });
    }
    let _context = Context::enter(format);
    let mut out = vec![format];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| match e {
        bincode::error::EncodeError::OtherString(message) => CodecError::TooNew(message),
        e => CodecError::Encode(e),
    })?;
    Ok(out)
}

/// The format a record says it was written in, if it has a version byte.
pub fn format_of(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

/// Decodes a versioned record of any format this build reads; the whole
/// input must be one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if !(FORMAT_OLDEST..=FORMAT_NEWEST).contains(&version) {
        return Err(CodecError::Version { found: version });
    }
    let _context = Context::enter(version);
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(CodecError::Trailing(body.len() - read));
    }
    Ok(value)
}

thread_local! {
    /// The format being encoded or decoded on this thread; [`FORMAT_NEWEST`]
    /// outside [`encode_as`] and [`decode`] (e.g. for JSON).
    static FORMAT: std::cell::Cell<u8> = const { std::cell::Cell::new(FORMAT_NEWEST) };
}

/// Sets the thread's format for one encode or decode, and puts the previous
/// one back when dropped (also on a panic).
struct Context {
    previous: u8,
}

impl Context {
    fn enter(format: u8) -> Self {
        Context {
            previous: FORMAT.with(|f| f.replace(format)),
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        FORMAT.with(|f| f.set(self.previous));
    }
}

/// The format of the record being encoded or decoded on this thread.
fn current() -> u8 {
    FORMAT.with(std::cell::Cell::get)
}

/// `#[serde(with = "crate::codec::added_in_7")]` on a field added in format
/// 7: in a format-6 record it takes no bytes and reads as its `Default`.
/// bincode writes and reads a struct's fields one after another, with no
/// names or count, so a field that is skipped on both sides in the older
/// format leaves the older layout exactly as it was.
pub mod added_in_7 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    const SINCE: u8 = 7;

    /// Writes the field, or nothing in an older format.
    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        if super::current() < SINCE {
            s.serialize_unit()
        } else {
            value.serialize(s)
        }
    }

    /// Reads the field, or its default in an older format.
    pub fn deserialize<'de, T: Deserialize<'de> + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        if super::current() < SINCE {
            <()>::deserialize(d)?;
            Ok(T::default())
        } else {
            T::deserialize(d)
        }
    }
}

/// `#[serde(with = "crate::codec::only_in_7")]` on a field of a command kind
/// added in format 7: writing it in an older format fails
/// ([`CodecError::TooNew`]) instead of producing a record that reader
/// would misread.
pub mod only_in_7 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    const SINCE: u8 = 7;

    /// Writes the field; fails in an older format.
    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        let format = super::current();
        if format < SINCE {
            return Err(serde::ser::Error::custom(format!(
                "this command needs record format {SINCE}; the reader reads format {format}"
            )));
        }
        value.serialize(s)
    }

    /// Reads the field; fails in an older format (no such record exists).
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let format = super::current();
        if format < SINCE {
            return Err(serde::de::Error::custom(format!(
                "a format-{format} record cannot hold a command of format {SINCE}"
            )));
        }
        T::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A record written by encode reads back equal, and names its version.
    #[test]
    fn round_trip_and_version_byte() {
        let value = (7u64, String::from("cad"), vec![1u32, 2, 3]);
        let bytes = encode(&value).unwrap();
        assert_eq!(bytes[0], FORMAT_NEWEST);
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
        assert!(matches!(
            decode::<u64>(&[FORMAT_OLDEST - 1, 1]),
            Err(CodecError::Version { .. })
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

    // What the previous release wrote (tests/data/format6, written by
    // raftlm 0.1.0 in format 6) reads back, its state as it was with
    // nothing recorded of formats; written again in format 6 it is the same
    // bytes, so a node of the previous release reads what this one sends.
    #[test]
    fn the_previous_formats_records_read_and_write_back_unchanged() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format6");
        let backup_bytes = std::fs::read(dir.join("state.backup")).unwrap();
        let digest = std::fs::read_to_string(dir.join("state.digest")).unwrap();
        let backup = crate::raft::backup::decode(&backup_bytes).unwrap();
        crate::raft::backup::verify(&backup).unwrap();
        assert_eq!(backup.state.digest().unwrap(), digest.trim());
        assert_eq!(backup.state.formats().write, 6);
        assert!(backup.state.retired_nodes().contains(&4));
        assert_eq!(crate::raft::backup::encode(&backup).unwrap(), backup_bytes);
        // In format 7 the state carries one more field.
        assert!(crate::raft::backup::encode_as(7, &backup).unwrap().len() > backup_bytes.len());

        let snapshot = std::fs::read(dir.join("snapshot.data")).unwrap();
        assert_eq!(format_of(&snapshot), Some(6));
        let live: (
            Option<crate::raft::LogId>,
            crate::raft::StoredMembership,
            crate::license::state::LicenseState,
        ) = decode(&snapshot).unwrap();
        assert_eq!(live.2, backup.state);
        assert_eq!(encode_as(6, &live).unwrap(), snapshot);
    }

    // A command kind added in format 7 cannot be written in format 6: the
    // writer gets an error, never a record the reader would misread.
    #[test]
    fn a_newer_command_is_not_written_in_an_older_format() {
        use crate::license::ids::NodeId;
        use crate::license::state::Command;
        let command = Command::SetAddress {
            node: NodeId(2),
            address: "127.0.0.9:27000".into(),
            peer_address: "127.0.0.9:27100".into(),
            author: "CN=admin".into(),
        };
        let error = encode_as(6, &command).unwrap_err();
        assert!(matches!(error, CodecError::TooNew(_)), "{error}");
        let bytes = encode_as(7, &command).unwrap();
        assert_eq!(decode::<Command>(&bytes).unwrap(), command);
        // A format-6 record claiming the kind is refused, not misread.
        let mut forged = bytes.clone();
        forged[0] = 6;
        assert!(decode::<Command>(&forged).is_err());
        // Older kinds are the same bytes in both formats.
        let old = Command::Expire { sessions: vec![] };
        assert_eq!(
            encode_as(6, &old).unwrap()[1..],
            encode_as(7, &old).unwrap()[1..]
        );
    }
}
