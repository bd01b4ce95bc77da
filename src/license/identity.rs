//! A cluster's identity: the SHA-256 fingerprint of its CA's public key.
//!
//! `raftlm tls init` makes a CA for one cluster; the SHA-256 of that CA's
//! public key (its SubjectPublicKeyInfo, DER) names the cluster in a way a
//! second cluster with its own CA cannot take, whatever its name. It is
//! written `sha256:` followed by 64 lowercase hex digits, for example
//! `sha256:3f1c…e9`. A license file may name it on its `SERVER` line
//! (`SERVER LICSRV ID=sha256:… 27000`); every line's signature then covers
//! it, and a cluster with another identity refuses the file.
//!
//! Pure: the TLS layer computes the value from a certificate
//! ([`crate::tls::identity::cluster_id`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The scheme prefix of a written identity.
pub const CLUSTER_ID_PREFIX: &str = "sha256:";

/// A cluster identity: SHA-256 of the CA's SubjectPublicKeyInfo (DER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 32]);

impl ClusterId {
    /// The identity of the CA whose SubjectPublicKeyInfo is `spki_der`.
    pub fn of_public_key(spki_der: &[u8]) -> ClusterId {
        use sha2::{Digest, Sha256};
        ClusterId(Sha256::digest(spki_der).into())
    }

    /// Parses `sha256:` and 64 lowercase hex digits, exactly as
    /// [`Display`](fmt::Display) writes it (one spelling per identity, so the
    /// signed text has one form).
    pub fn parse(text: &str) -> Option<ClusterId> {
        let hex = text.strip_prefix(CLUSTER_ID_PREFIX)?;
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(ClusterId(out))
    }

    /// The first 12 hex digits, for messages where the whole value is long:
    /// `sha256:3f1c0a9b2d4e…`.
    pub fn short(&self) -> String {
        let full = self.to_string();
        format!("{}…", &full[..CLUSTER_ID_PREFIX.len() + 12])
    }
}

impl fmt::Display for ClusterId {
    /// `sha256:` and 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CLUSTER_ID_PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ClusterId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClusterId::parse(s).ok_or_else(|| {
            format!("{s:?} is not a cluster identity, expected sha256: and 64 lowercase hex digits (as raftlm tls identity prints it)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The written form reads back, and only that form is accepted.
    #[test]
    fn written_form_round_trips_and_is_strict() {
        let id = ClusterId::of_public_key(b"spki");
        let text = id.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(ClusterId::parse(&text), Some(id));
        assert_eq!(text.parse::<ClusterId>(), Ok(id));
        assert_eq!(ClusterId::parse(&text.to_uppercase()), None);
        assert_eq!(ClusterId::parse(&text.replace("sha256:", "SHA256:")), None);
        assert_eq!(ClusterId::parse(&text[..text.len() - 1]), None);
        assert_eq!(ClusterId::parse(&format!("{text}0")), None);
        assert_eq!(ClusterId::parse(&text.replace("sha256:", "")), None);
        assert_eq!(id.short().chars().count(), 7 + 12 + 1);
    }

    // SHA-256 of the bytes given, as written in the docs' example.
    #[test]
    fn fingerprint_is_sha256() {
        assert_eq!(
            ClusterId::of_public_key(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
