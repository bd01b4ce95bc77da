//! Session secrets and the public handles derived from them.
//!
//! A client session is identified by a 128-bit [`SessionSecret`] that the
//! client library draws from the operating system's random source. It is
//! sent on every request of the session and is never returned by any RPC,
//! printed or logged. The cluster names the session by a [`SessionId`] of
//! 128 bits derived from the secret with SHA-256 (domain-separated); outputs
//! (`raftlm status`, the logs) show only its upper 64 bits, the public
//! handle. Acting for a session means presenting a secret that derives all
//! 128 bits, of which a stranger knows at most the published half: a
//! preimage search of 2^64 for the half it knows, then a 2^-64 chance at
//! the half it does not.
//!
//! Handles are printed in decimal, as lmstat-style scrapers expect digits.

use std::fmt;

use rand::RngCore as _;
use sha2::{Digest, Sha256};

use super::state::SessionId;

/// Length of a session secret in bytes.
pub const SESSION_SECRET_BYTES: usize = 16;
/// Domain separation for the handle derivation.
const HANDLE_CONTEXT: &[u8] = b"raftlm session handle v1\0";

/// A session's secret. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret([u8; SESSION_SECRET_BYTES]);

impl SessionSecret {
    /// A new secret from the operating system's random source.
    pub fn generate() -> SessionSecret {
        let mut bytes = [0u8; SESSION_SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SessionSecret(bytes)
    }

    /// The secret carried in a request; `None` unless exactly
    /// [`SESSION_SECRET_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<SessionSecret> {
        Some(SessionSecret(bytes.try_into().ok()?))
    }

    /// A secret with fixed bytes, for tests, benchmarks and chaos runs that
    /// need reproducible sessions. Predictable: never for applications.
    #[doc(hidden)]
    pub fn from_seed(seed: u64) -> SessionSecret {
        let mut bytes = [0u8; SESSION_SECRET_BYTES];
        bytes[..8].copy_from_slice(&seed.to_be_bytes());
        bytes[8..].copy_from_slice(&(!seed).to_be_bytes());
        SessionSecret(bytes)
    }

    /// The bytes sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id the cluster names this session by (its upper half is the
    /// public handle outputs show).
    pub fn handle(&self) -> SessionId {
        let digest = Sha256::new()
            .chain_update(HANDLE_CONTEXT)
            .chain_update(self.0)
            .finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        SessionId(u128::from_be_bytes(first))
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionSecret(handle {})", self.handle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The handle is a function of the secret alone, and different secrets get different handles.
    #[test]
    fn handle_is_derived_from_the_secret() {
        let a = SessionSecret::from_seed(1);
        assert_eq!(a.handle(), SessionSecret::from_seed(1).handle());
        assert_ne!(a.handle(), SessionSecret::from_seed(2).handle());
        assert_ne!(SessionSecret::generate(), SessionSecret::generate());
    }

    // Only 16-byte secrets are accepted from the wire.
    #[test]
    fn wire_secrets_are_exactly_sixteen_bytes() {
        assert!(SessionSecret::from_bytes(&[0; 15]).is_none());
        assert!(SessionSecret::from_bytes(&[0; 17]).is_none());
        let secret = SessionSecret::from_bytes(&[7; 16]).unwrap();
        assert_eq!(secret.as_bytes(), &[7; 16]);
    }

    // Debug output shows the handle, never the secret's bytes.
    #[test]
    fn debug_never_shows_the_secret() {
        let secret = SessionSecret::from_bytes(&[0xab; 16]).unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert!(shown.contains(&secret.handle().to_string()), "{shown}");
    }
}
