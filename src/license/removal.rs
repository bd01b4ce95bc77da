//! Grants an administrator removed (`raftlm remove`, lmremove): what the
//! state remembers of each, so that the holder's next renewal is told who
//! removed it and when, rather than only that the cluster does not hold it.
//!
//! Bounded: the last [`REMOVALS_REMEMBERED`] removals, oldest forgotten
//! first. A holder that renews at all renews within its session TTL, long
//! before that many removals follow.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::ids::{GrantToken, SessionId};

/// Removals remembered for the holders' renewals.
pub const REMOVALS_REMEMBERED: usize = 4096;
/// Most grants one `RemoveGrants` command removes.
pub const REMOVE_GRANTS_MAX: usize = 1024;

/// One removed grant, as its holder's renewal is told of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The session that held it.
    pub session: SessionId,
    /// Who removed it (an administrator certificate's subject).
    pub author: String,
    /// State time of the removal (ms since the epoch).
    pub at_ms: u64,
}

/// The removals remembered, oldest first, and by token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removals {
    order: VecDeque<GrantToken>,
    by_token: BTreeMap<GrantToken, Removal>,
}

impl Removals {
    /// Remembers that `token` was removed, forgetting the oldest removal
    /// beyond [`REMOVALS_REMEMBERED`].
    pub fn record(&mut self, token: GrantToken, removal: Removal) {
        if self.by_token.insert(token, removal).is_none() {
            self.order.push_back(token);
        }
        while self.order.len() > REMOVALS_REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.by_token.remove(&oldest);
            }
        }
    }

    /// The removal of `token` from `session`, if remembered.
    pub fn of(&self, token: &GrantToken, session: SessionId) -> Option<&Removal> {
        self.by_token.get(token).filter(|r| r.session == session)
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    /// Asserts that the order and the map agree and the bound holds.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.order.len(),
            self.by_token.len(),
            "removal order and map disagree"
        );
        assert!(self.order.len() <= REMOVALS_REMEMBERED);
        assert!(self.order.iter().all(|t| self.by_token.contains_key(t)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::ids::{LogIndex, Term};

    #[test]
    fn the_oldest_removal_is_forgotten_first() {
        let mut removals = Removals::default();
        let token = |i: u64| GrantToken {
            term: Term(1),
            index: LogIndex(i),
            slot: 0,
        };
        let by = |session: u64| Removal {
            session: SessionId(u128::from(session)),
            author: "CN=admin".into(),
            at_ms: 5,
        };
        for i in 0..(REMOVALS_REMEMBERED as u64 + 2) {
            removals.record(token(i), by(i));
        }
        removals.check_invariants();
        assert_eq!(removals.len(), REMOVALS_REMEMBERED);
        assert!(removals.of(&token(0), SessionId(0)).is_none());
        assert!(removals.of(&token(5), SessionId(5)).is_some());
        // Only the holder is told.
        assert!(removals.of(&token(5), SessionId(6)).is_none());
    }
}
