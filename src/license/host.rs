//! Host ids: which machines a license file's lines may count on.
//!
//! A vendor who wants FlexNet's triad binding names the members' host ids on
//! the file's `SERVER` line (`SERVER LICSRV ID=sha256:… 27000
//! HOSTIDS=host:…,host:…,host:…`, covered by every line's signature). Such
//! lines count only while a majority of the cluster's voters report a host id
//! the file lists ([`HostReport::admits`]): two of three, as with FlexNet.
//!
//! A node's host id is derived from the machine's systemd machine id
//! (`/etc/machine-id`, 128 random bits written when the system is installed):
//! the first 16 bytes of HMAC-SHA256 keyed with the machine id over a fixed
//! application id, written `host:` and 32 lowercase hex digits. This is the
//! application-specific form `machine-id(5)` asks applications to use, so
//! the machine id itself is never shown or sent. Why the machine id and not a
//! MAC address: a machine has one machine id, stable across reboots, network
//! cards, bonding, VLANs and virtual interfaces, and a virtual machine or
//! container host does not invent it at boot; a MAC is one of many, changes
//! with a card, and is set with one `ip link` command. Neither stops an owner
//! who edits the file (`docs/security.md` says what the binding stops).
//!
//! Pure: the node reads the machine id file and passes its text here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The scheme prefix of a written host id.
pub const HOST_ID_PREFIX: &str = "host:";

/// The most host ids one `SERVER` line may list: a cluster of at most this
/// many voters, and a few replacements named in advance.
pub const HOST_IDS_MAX: usize = 16;

/// The application id the machine id is keyed over: fixed, so one machine
/// always has one raftlm host id, and unlike any other application's.
const APPLICATION_ID: &[u8; 16] = b"raftlm host id v";

/// A machine's raftlm host id: 16 bytes derived from its machine id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostId(pub [u8; 16]);

/// Why a machine id file's text is not a machine id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{found:?} is not a machine id, expected 32 hexadecimal digits on one line (see machine-id(5); `systemd-machine-id-setup` writes one)"
)]
pub struct MachineIdError {
    /// The first line of the text (at most 64 characters of it).
    pub found: String,
}

impl HostId {
    /// The host id of the machine whose machine id file holds `text`
    /// (32 hex digits and a line feed; upper case is accepted).
    pub fn from_machine_id(text: &str) -> Result<HostId, MachineIdError> {
        let line = text.lines().next().unwrap_or("").trim();
        let error = || MachineIdError {
            found: line.chars().take(64).collect(),
        };
        if line.len() != 32 {
            return Err(error());
        }
        let mut key = [0u8; 16];
        for (i, pair) in line.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(pair[0].to_ascii_lowercase()).ok_or_else(error)?;
            let lo = hex_digit(pair[1].to_ascii_lowercase()).ok_or_else(error)?;
            key[i] = hi << 4 | lo;
        }
        if key == [0u8; 16] {
            // systemd treats an all-zero id as unset.
            return Err(error());
        }
        let mac = hmac_sha256(&key, APPLICATION_ID);
        let mut out = [0u8; 16];
        out.copy_from_slice(&mac[..16]);
        Ok(HostId(out))
    }

    /// Parses `host:` and 32 lowercase hex digits, exactly as
    /// [`Display`](fmt::Display) writes it (one spelling, so the signed text
    /// has one form).
    pub fn parse(text: &str) -> Option<HostId> {
        let hex = text.strip_prefix(HOST_ID_PREFIX)?;
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
        }
        Some(HostId(out))
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` keyed with `key` (at most one block).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    debug_assert!(key.len() <= BLOCK);
    let mut padded = [0u8; BLOCK];
    padded[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(padded.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(padded.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

impl fmt::Display for HostId {
    /// `host:` and 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HOST_ID_PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for HostId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostId::parse(s).ok_or_else(|| {
            format!("{s:?} is not a host id, expected host: and 32 lowercase hex digits (as raftlm hostid prints it)")
        })
    }
}

/// The host ids the cluster's voters reported, as the active node last
/// recorded them through the log: every voter, with the id it reported
/// (`None`: none yet, e.g. a machine without a machine id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The voters and their host ids.
    pub voters: BTreeMap<u64, Option<HostId>>,
}

impl HostReport {
    /// How many voters report one of `listed`.
    pub fn listed(&self, listed: &[HostId]) -> usize {
        self.voters
            .values()
            .filter(|id| id.is_some_and(|id| listed.contains(&id)))
            .count()
    }

    /// Whether a line bound to `listed` counts: always when it lists none
    /// (bound by name or identity only), otherwise only while a majority of
    /// the voters report a listed id. With no report yet, a bound line does
    /// not count.
    pub fn admits(&self, listed: &[HostId]) -> bool {
        listed.is_empty() || 2 * self.listed(listed) > self.voters.len()
    }

    /// `2 of 3 voters report a listed host id`.
    pub fn describe(&self, listed: &[HostId]) -> String {
        format!(
            "{} of {} voters report a listed host id",
            self.listed(listed),
            self.voters.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The written form reads back, and only that form is accepted.
    #[test]
    fn written_form_round_trips_and_is_strict() {
        let id = HostId::from_machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), 5 + 32);
        assert_eq!(HostId::parse(&text), Some(id));
        assert_eq!(text.parse::<HostId>(), Ok(id));
        assert_eq!(HostId::parse(&text.to_uppercase()), None);
        assert_eq!(HostId::parse(&text[..text.len() - 1]), None);
        assert_eq!(HostId::parse(&text.replace("host:", "")), None);
    }

    // The id is derived (the machine id never appears), is the same for
    // upper and lower case, and differs between machines.
    #[test]
    fn derived_from_the_machine_id() {
        let lower = HostId::from_machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap();
        let upper = HostId::from_machine_id("3D1219C7C4C5404AAA1F6D2A48ADFDA4\n").unwrap();
        assert_eq!(lower, upper);
        assert!(!lower.to_string().contains("3d1219c7"));
        let other = HostId::from_machine_id("3d1219c7c4c5404aaa1f6d2a48adfda5").unwrap();
        assert_ne!(lower, other);
        for bad in [
            "",
            "uninitialized",
            "3d1219c7",
            "zz1219c7c4c5404aaa1f6d2a48adfda4",
        ] {
            assert!(HostId::from_machine_id(bad).is_err(), "{bad:?}");
        }
        assert!(HostId::from_machine_id(&"0".repeat(32)).is_err());
    }

    // RFC 4231 test case 2 ("Jefe"), so the HMAC is the standard one.
    #[test]
    fn hmac_is_rfc_2104() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    // A majority of voters must report a listed id; unbound lines always count.
    #[test]
    fn a_majority_of_voters_must_be_listed() {
        let id = |n: u8| HostId([n; 16]);
        let report = |ids: &[Option<u8>]| HostReport {
            voters: ids
                .iter()
                .enumerate()
                .map(|(i, n)| (i as u64 + 1, n.map(id)))
                .collect(),
        };
        let listed = [id(1), id(2), id(3)];
        assert!(report(&[Some(1), Some(2), Some(3)]).admits(&listed));
        assert!(report(&[Some(1), Some(2), Some(9)]).admits(&listed));
        assert!(!report(&[Some(1), Some(8), Some(9)]).admits(&listed));
        assert!(!report(&[Some(1), None, None]).admits(&listed));
        assert!(!report(&[Some(1), Some(2), Some(8), Some(9)]).admits(&listed));
        assert!(!HostReport::default().admits(&listed));
        assert!(HostReport::default().admits(&[]));
        assert_eq!(
            report(&[Some(1), Some(2), Some(9)]).describe(&listed),
            "2 of 3 voters report a listed host id"
        );
    }
}
