//! The record formats a cluster's members read, the one the cluster writes,
//! and the members' moved addresses.
//!
//! A release reads its own record format and the previous one (`src/codec.rs`).
//! Each node says which formats it reads in every peer-plane message; the
//! active node records what its members say ([`Command::RecordFormats`]) and,
//! once every voter and learner reads a newer format, raises the cluster's
//! write format in the same command. Command kinds added with a format are
//! refused while the cluster writes an older one ([`ClusterFormats::holding_back`]
//! names the members that keep it there). See
//! docs/decisions/0022-format-negotiation.md.
//!
//! Values and rules over the state's field, which `LicenseState`
//! (`state.rs`) applies and turns into outcomes: this module imports
//! neither the commands nor the state (the commands carry its values).
//!
//! [`Command::RecordFormats`]: super::command::Command::RecordFormats

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::NodeId;
use crate::codec::{FORMAT_NEWEST, FORMAT_OLDEST};

/// Most members whose formats or moved addresses the state records.
pub const FORMAT_MEMBERS_MAX: usize = 64;
/// Longest release version a member may report, in bytes.
pub const VERSION_TEXT_MAX: usize = 64;
/// Longest address `set-address` records, in bytes.
pub const ADDRESS_TEXT_MAX: usize = 256;
/// The format that added [`Command::SetAddress`](super::command::Command::SetAddress)
/// and [`Command::RecordFormats`](super::command::Command::RecordFormats).
pub const FORMAT_SET_ADDRESS: u8 = 7;

/// What a node says about itself on the peer plane: its release and the
/// record formats it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertisement {
    /// raftlm's version (`CARGO_PKG_VERSION`); empty for a release that
    /// sends none (one before format 7).
    pub version: String,
    /// The oldest format it reads.
    pub reads_min: u8,
    /// The newest format it reads.
    pub reads_max: u8,
}

impl Advertisement {
    /// This build's, read formats capped at `cap` (a test-only setting that
    /// makes a node behave as the previous release does on the wire).
    pub fn this_build(cap: Option<u8>) -> Self {
        Advertisement {
            version: env!("CARGO_PKG_VERSION").to_string(),
            reads_min: FORMAT_OLDEST,
            reads_max: cap.map_or(FORMAT_NEWEST, |cap| cap.clamp(FORMAT_OLDEST, FORMAT_NEWEST)),
        }
    }

    /// A peer whose messages carry no advertisement: a release before
    /// format 7, which reads format 6 only.
    pub fn before_advertising() -> Self {
        Advertisement {
            version: String::new(),
            reads_min: 6,
            reads_max: 6,
        }
    }

    /// Whether it reads `format`.
    pub fn reads(&self, format: u8) -> bool {
        (self.reads_min..=self.reads_max).contains(&format)
    }
}

impl fmt::Display for Advertisement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version.is_empty() {
            f.write_str("a release before 0.2.0")?;
        } else {
            write!(f, "raftlm {}", self.version)?;
        }
        if self.reads_min == self.reads_max {
            write!(f, " reads format {}", self.reads_min)
        } else {
            write!(f, " reads formats {}–{}", self.reads_min, self.reads_max)
        }
    }
}

/// A member's addresses as `raftlm cluster set-address` recorded them; they
/// replace the ones its membership entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// The client-plane address.
    pub address: String,
    /// The peer-plane address.
    pub peer_address: String,
}

/// The cluster's record formats and moved addresses, as the state holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFormats {
    /// The format the cluster writes: what a snapshot is encoded in, and
    /// the newest command kinds it accepts.
    pub write: u8,
    /// What each member said, as the active node last recorded it.
    pub members: BTreeMap<u64, Advertisement>,
    /// Members' addresses moved with `set-address`.
    pub addresses: BTreeMap<u64, MemberAddress>,
}

impl Default for ClusterFormats {
    /// A state that never recorded formats (a new cluster, or one written
    /// in format 6) writes the oldest format this build reads; the active
    /// node raises it as soon as every member says it reads newer.
    fn default() -> Self {
        ClusterFormats {
            write: FORMAT_OLDEST,
            members: BTreeMap::new(),
            addresses: BTreeMap::new(),
        }
    }
}

impl ClusterFormats {
    /// The newest format every one of `members` reads, if they all read the
    /// current write format (else `None`: somebody cannot follow even now).
    pub fn agreed(members: &BTreeMap<u64, Advertisement>) -> Option<u8> {
        let max = members.values().map(|a| a.reads_max).min()?;
        let min = members.values().map(|a| a.reads_min).max()?;
        (min <= max).then_some(max)
    }

    /// The members (of `view`: every voter and learner, with what it said,
    /// or `None` when nothing is known) that keep the cluster below
    /// `format`, each with the reason.
    pub fn holding_back(view: &BTreeMap<u64, Option<Advertisement>>, format: u8) -> Vec<String> {
        view.iter()
            .filter_map(|(id, said)| match said {
                None => Some(format!("node {id} has not said which formats it reads")),
                Some(a) if !a.reads(format) => Some(format!("node {id} ({a})")),
                Some(_) => None,
            })
            .collect()
    }

    /// Applies a `RecordFormats`: records what the members said and raises
    /// the write format to `write` when every listed member reads it. The
    /// write format before, or why nothing changed.
    pub fn record(&mut self, members: &[(NodeId, Advertisement)], write: u8) -> Result<u8, String> {
        let refused = Err::<u8, String>;
        if members.len() > FORMAT_MEMBERS_MAX {
            return refused(format!(
                "{} members listed, at most {FORMAT_MEMBERS_MAX}",
                members.len()
            ));
        }
        if let Some((id, _)) = members
            .iter()
            .find(|(_, a)| a.version.len() > VERSION_TEXT_MAX)
        {
            return refused(format!(
                "node {id}'s version is longer than {VERSION_TEXT_MAX} bytes"
            ));
        }
        if write < self.write {
            return refused(format!(
                "the cluster writes format {}, it never goes back to {write}",
                self.write
            ));
        }
        if write < FORMAT_SET_ADDRESS {
            return refused(format!(
                "what the members read is recorded from format {FORMAT_SET_ADDRESS} on, not in format {write}"
            ));
        }
        if write > FORMAT_NEWEST {
            return refused(format!(
                "format {write} is newer than this node reads ({FORMAT_NEWEST})"
            ));
        }
        if let Some((id, a)) = members.iter().find(|(_, a)| !a.reads(write)) {
            return refused(format!("node {id} ({a}) does not read format {write}"));
        }
        let from = self.write;
        self.members = members.iter().map(|(id, a)| (id.0, a.clone())).collect();
        self.write = write;
        Ok(from)
    }

    /// Applies a `SetAddress`, or says why nothing changed.
    pub fn set_address(
        &mut self,
        node: NodeId,
        address: &str,
        peer_address: &str,
    ) -> Result<(), String> {
        let refused = Err::<(), String>;
        if address.len() > ADDRESS_TEXT_MAX || peer_address.len() > ADDRESS_TEXT_MAX {
            return refused(format!(
                "an address is longer than {ADDRESS_TEXT_MAX} bytes"
            ));
        }
        if self.write < FORMAT_SET_ADDRESS {
            return refused(format!(
                "the cluster writes format {}; moving an address needs format {FORMAT_SET_ADDRESS}",
                self.write
            ));
        }
        if !self.addresses.contains_key(&node.0) && self.addresses.len() >= FORMAT_MEMBERS_MAX {
            return refused(format!(
                "at most {FORMAT_MEMBERS_MAX} members' addresses are recorded"
            ));
        }
        self.addresses.insert(
            node.0,
            MemberAddress {
                address: address.to_string(),
                peer_address: peer_address.to_string(),
            },
        );
        Ok(())
    }

    /// Forgets a node that left the cluster.
    pub fn forget(&mut self, node: u64) {
        self.members.remove(&node);
        self.addresses.remove(&node);
    }

    /// Asserts the bounds (a bug otherwise).
    pub fn check_invariants(&self) {
        assert!(
            (FORMAT_OLDEST..=FORMAT_NEWEST).contains(&self.write),
            "the cluster writes format {}, outside {FORMAT_OLDEST}–{FORMAT_NEWEST}",
            self.write
        );
        assert!(self.members.len() <= FORMAT_MEMBERS_MAX);
        assert!(self.addresses.len() <= FORMAT_MEMBERS_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(min: u8, max: u8) -> Advertisement {
        Advertisement {
            version: "0.2.0".into(),
            reads_min: min,
            reads_max: max,
        }
    }

    #[test]
    fn the_agreed_format_is_the_newest_every_member_reads() {
        let mut view = BTreeMap::new();
        assert_eq!(ClusterFormats::agreed(&view), None);
        view.insert(1, said(6, 7));
        view.insert(2, said(6, 7));
        assert_eq!(ClusterFormats::agreed(&view), Some(7));
        view.insert(3, Advertisement::before_advertising());
        assert_eq!(ClusterFormats::agreed(&view), Some(6));
        view.insert(3, said(8, 9));
        assert_eq!(ClusterFormats::agreed(&view), None);
    }

    #[test]
    fn a_raise_needs_every_member_and_never_goes_back() {
        let mut formats = ClusterFormats::default();
        assert_eq!(formats.write, 6);
        let old = vec![
            (NodeId(1), said(6, 7)),
            (NodeId(3), Advertisement::before_advertising()),
        ];
        assert!(matches!(
            formats.record(&old, 7),
            Err(reason) if reason.contains("node 3 (a release before 0.2.0 reads format 6)")
        ));
        assert_eq!(formats.write, 6);
        let new = vec![(NodeId(1), said(6, 7)), (NodeId(3), said(6, 7))];
        assert_eq!(formats.record(&new, 7), Ok(6));
        assert!(formats.record(&new, 6).is_err());
        assert_eq!(formats.members.len(), 2);
        formats.forget(3);
        assert_eq!(formats.members.len(), 1);
    }

    #[test]
    fn holding_back_names_each_member_and_why() {
        let view = BTreeMap::from([
            (1, Some(said(6, 7))),
            (2, None),
            (3, Some(Advertisement::before_advertising())),
        ]);
        assert_eq!(
            ClusterFormats::holding_back(&view, 7),
            vec![
                "node 2 has not said which formats it reads".to_string(),
                "node 3 (a release before 0.2.0 reads format 6)".to_string(),
            ]
        );
    }

    #[test]
    fn moving_an_address_waits_for_its_format() {
        let mut formats = ClusterFormats::default();
        assert!(
            formats
                .set_address(NodeId(2), "127.0.0.9:1", "127.0.0.9:2")
                .is_err()
        );
        formats.write = 7;
        assert_eq!(
            formats.set_address(NodeId(2), "127.0.0.9:1", "127.0.0.9:2"),
            Ok(())
        );
        let long = "x".repeat(ADDRESS_TEXT_MAX + 1);
        assert!(formats.set_address(NodeId(2), &long, "a").is_err());
    }
}
