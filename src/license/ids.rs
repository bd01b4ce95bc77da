//! Small ids of the license state: sessions ([`SessionId`]) and their
//! requests ([`RequestId`]), Raft terms ([`Term`]), nodes ([`NodeId`]), log
//! indexes ([`LogIndex`]), grants ([`GrantToken`]), and where a command sits
//! in the log ([`LogPosition`]).
//!
//! Plain values with no dependency on the rest of the license domain; every
//! other part of it builds on them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A client session (one client process), named by 128 bits derived from
/// the session's secret (see [`super::secret`]). Outputs show only its
/// [`public`](SessionId::public) half, in decimal as lmstat-style scrapers
/// expect; acting for a session takes a secret that derives all 128 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u128);

impl SessionId {
    /// The handle outputs show: the upper 64 bits.
    pub fn public(self) -> u64 {
        (self.0 >> 64) as u64
    }
}

impl fmt::Display for SessionId {
    /// The public handle, in decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.public())
    }
}

/// Identifies one client request: its session and the session's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The session that sent the request.
    pub session: SessionId,
    /// The request's number within its session, starting at 1.
    pub seq: u64,
}

/// A Raft term, used as the fencing token.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

/// A node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// The index of an entry in the Raft log (the first entry is 1; 0 is "none").
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Names a grant: the term and log index of the entry that created it and its
/// slot within that entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GrantToken {
    /// Term of the creating entry.
    pub term: Term,
    /// Log index of the creating entry.
    pub index: LogIndex,
    /// Position of the check-out within the entry's batch.
    pub slot: u32,
}

impl fmt::Display for GrantToken {
    /// `term.index.slot`, e.g. `3.1042.7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.term, self.index, self.slot)
    }
}

impl std::str::FromStr for GrantToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("grant token \"{s}\" is not of the form TERM.INDEX.SLOT");
        let mut it = s.split('.');
        let mut next = || it.next().ok_or_else(bad)?.parse::<u64>().map_err(|_| bad());
        let (term, index, slot) = (next()?, next()?, next()?);
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(GrantToken {
            term: Term(term),
            index: LogIndex(index),
            slot: u32::try_from(slot).map_err(|_| bad())?,
        })
    }
}

/// Where a command sits in the log: used to build grant tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// Term of the entry.
    pub term: Term,
    /// Index of the entry.
    pub index: LogIndex,
}
