//! Trust in vendor keys: the keys the cluster trusts ([`TrustedKey`]), their
//! ids ([`key_id_of`]), and how `LicenseState` trusts and untrusts them and
//! checks the license lines it holds against them.
//!
//! Free functions over the state's trust fields, which `LicenseState`
//! (`state.rs`) calls with its own fields and a time: this module imports the
//! commands' outcomes and the signatures, never the state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::Outcome;
use super::feature::FeatureLine;
use super::identity::ClusterId;
use super::signature::{self, VendorPublicKey};

/// Most vendor keys the cluster trusts at once.
pub const TRUSTED_KEYS_MAX: usize = 256;

/// A vendor key the cluster trusts, as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// The vendor it may sign for; `None`: any vendor.
    pub vendor: Option<String>,
    /// The Ed25519 public key.
    pub key: [u8; 32],
    /// Who trusted it.
    pub author: String,
    /// State time when it was trusted.
    pub since_ms: u64,
}

/// The id of a key's bytes, as `raftlm status` and `license untrust` name it.
pub fn key_id_of(key: &[u8; 32]) -> String {
    VendorPublicKey::from_parts(None, *key)
        .map(|k| k.key_id().to_string())
        .unwrap_or_else(|| key[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// The trusted keys, as signature checks take them.
pub(super) fn anchors(trusted: &BTreeMap<String, TrustedKey>) -> Vec<VendorPublicKey> {
    trusted
        .values()
        .filter_map(|t| VendorPublicKey::from_parts(t.vendor.clone(), t.key))
        .collect()
}

/// Checks every held line's signature against the anchors of `trusted` and
/// the cluster name, and its identity binding against the recorded identity
/// (not expiry: lines may expire while held).
pub(super) fn verify_held_lines(
    trusted: &BTreeMap<String, TrustedKey>,
    licenses: &BTreeMap<String, Vec<FeatureLine>>,
    cluster_name: Option<&str>,
    cluster_id: Option<&ClusterId>,
) -> Result<(), String> {
    if licenses.values().all(Vec::is_empty) {
        return Ok(());
    }
    let Some(cluster) = cluster_name else {
        return Err("license lines are held but no cluster name is recorded".into());
    };
    let anchors = anchors(trusted);
    for (name, lines) in licenses {
        for line in lines {
            signature::verify_held(name, line, cluster, &anchors).map_err(|e| e.to_string())?;
            signature::check_binding(name, line.line, line.cluster_id.as_ref(), cluster_id)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Trusts `key` for `vendor` (`None`: any vendor) from state time `now_ms`,
/// and records that the cluster has trusted a key.
pub(super) fn trust_key(
    trusted: &mut BTreeMap<String, TrustedKey>,
    trusted_ever: &mut bool,
    vendor: &Option<String>,
    key: &[u8; 32],
    author: &str,
    now_ms: u64,
) -> Outcome {
    if VendorPublicKey::from_parts(vendor.clone(), *key).is_none() {
        return Outcome::BadKey {
            reason: "not a usable Ed25519 public key".into(),
        };
    }
    let key_id = key_id_of(key);
    if !trusted.contains_key(&key_id) && trusted.len() >= TRUSTED_KEYS_MAX {
        return Outcome::BadKey {
            reason: format!("the cluster trusts {TRUSTED_KEYS_MAX} keys already"),
        };
    }
    *trusted_ever = true;
    trusted.insert(
        key_id.clone(),
        TrustedKey {
            vendor: vendor.clone(),
            key: *key,
            author: author.to_string(),
            since_ms: now_ms,
        },
    );
    Outcome::KeyTrusted { key_id }
}

/// Trusts a node's `vendor_keys`, all or nothing: every key is checked
/// before any is trusted. For a cluster that has never trusted a key (the
/// caller answers [`Outcome::BootstrapDone`] on any other).
pub(super) fn bootstrap(
    trusted: &mut BTreeMap<String, TrustedKey>,
    trusted_ever: &mut bool,
    keys: &[(Option<String>, [u8; 32])],
    author: &str,
    now_ms: u64,
) -> Outcome {
    // Checked whole before any key is trusted: a bootstrap
    // is all or nothing.
    let unusable = keys
        .iter()
        .find(|(vendor, key)| VendorPublicKey::from_parts(vendor.clone(), *key).is_none());
    if keys.is_empty() || keys.len() > TRUSTED_KEYS_MAX {
        Outcome::BadKey {
            reason: format!(
                "a vendor_keys bootstrap takes 1 to {TRUSTED_KEYS_MAX} keys, not {}",
                keys.len()
            ),
        }
    } else if unusable.is_some() {
        Outcome::BadKey {
            reason: "not a usable Ed25519 public key".into(),
        }
    } else {
        for (vendor, key) in keys {
            let trusted = trust_key(trusted, trusted_ever, vendor, key, author, now_ms);
            assert!(
                matches!(trusted, Outcome::KeyTrusted { .. }),
                "a checked bootstrap key was refused: {trusted:?}"
            );
        }
        Outcome::KeysBootstrapped {
            key_ids: keys.iter().map(|(_, k)| key_id_of(k)).collect(),
        }
    }
}

/// Stops trusting the key `key_id`; refused while a line of `licenses`
/// verifies only through it (the key is kept then).
pub(super) fn untrust_key(
    trusted: &mut BTreeMap<String, TrustedKey>,
    key_id: &str,
    licenses: &BTreeMap<String, Vec<FeatureLine>>,
    cluster_name: Option<&str>,
    cluster_id: Option<&ClusterId>,
) -> Outcome {
    let Some(removed) = trusted.remove(key_id) else {
        return Outcome::NoSuchKey;
    };
    // Refused while an imported line still verifies only through it.
    if let Err(_error) = verify_held_lines(trusted, licenses, cluster_name, cluster_id) {
        let anchors = anchors(trusted);
        let cluster = cluster_name.unwrap_or_default();
        let license = licenses
            .iter()
            .find(|(name, lines)| {
                lines
                    .iter()
                    .any(|l| signature::verify_held(name, l, cluster, &anchors).is_err())
            })
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
        trusted.insert(key_id.to_string(), removed);
        return Outcome::KeyInUse { license };
    }
    Outcome::KeyUntrusted {
        key_id: key_id.to_string(),
    }
}
