//! Check-outs granted and denied, per vendor's feature and denial reason,
//! counted in the replicated state: the figures survive a failover, where a
//! count each node kept in memory would start again at zero on the new
//! active node. A retried request is counted once (its first answer is
//! replayed, not applied again). A check-out of a feature no line names is
//! answered without the log and is not counted here.
//!
//! Bounded: at most [`COUNTED_FEATURES_MAX`] features are counted apart;
//! the rest are counted together under an empty vendor and feature.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{DenyReason, Outcome};

/// Most features whose check-outs are counted apart.
pub const COUNTED_FEATURES_MAX: usize = 4096;

/// One feature's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureCounts {
    /// Check-outs granted.
    pub granted: u64,
    /// Check-outs denied, by reason ([`reason_label`]).
    pub denied: BTreeMap<String, u64>,
}

/// Every feature's counts, by (vendor, feature).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutCounts {
    by_feature: BTreeMap<(String, String), FeatureCounts>,
}

/// A denial reason as metrics label it.
pub fn reason_label(reason: &DenyReason) -> &'static str {
    match reason {
        DenyReason::NoSuchFeature => "no_such_feature",
        DenyReason::VersionNotLicensed => "version_not_licensed",
        DenyReason::Expired => "expired",
        DenyReason::ExceedsLicensed => "exceeds_licensed",
        DenyReason::InUse => "in_use",
        DenyReason::BadCount => "bad_count",
        DenyReason::CapacityReached => "capacity_reached",
        DenyReason::HostsNotListed => "hosts_not_listed",
    }
}

impl CheckoutCounts {
    /// Counts a check-out of `vendor`'s `feature` that came to `outcome`.
    pub fn count(&mut self, vendor: &str, feature: &str, outcome: &Outcome) {
        let mut key = (vendor.to_string(), feature.to_string());
        if !self.by_feature.contains_key(&key) && self.by_feature.len() >= COUNTED_FEATURES_MAX {
            key = (String::new(), String::new());
        }
        let counts = self.by_feature.entry(key).or_default();
        match outcome {
            Outcome::Granted { .. } => counts.granted += 1,
            Outcome::Denied { reason, .. } => {
                *counts
                    .denied
                    .entry(reason_label(reason).to_string())
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    /// The counts, by (vendor, feature).
    pub fn by_feature(&self) -> &BTreeMap<(String, String), FeatureCounts> {
        &self.by_feature
    }

    /// Asserts the bound (a bug otherwise).
    pub fn check_invariants(&self) {
        assert!(self.by_feature.len() <= COUNTED_FEATURES_MAX + 1);
    }
}
