//! `TermFence`: the client side of fencing (`docs/architecture.md`, "The activator").
//!
//! The term is the fencing token: every reply carries the term of the node
//! that answered. The fence remembers the highest term seen and refuses a
//! reply from a lower one, because it can only come from a node that was
//! deposed (for example one resumed after a pause that still believes it is
//! active). The client treats a refused reply like an unavailable node and
//! asks elsewhere. Terms never decrease in Raft, so a correct cluster never
//! trips the fence.

use std::sync::atomic::{AtomicU64, Ordering};

/// A reply from a term older than one already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a reply from term {term} was refused: term {highest} has already been seen")]
pub struct StaleTerm {
    /// The reply's term.
    pub term: u64,
    /// The highest term seen before it.
    pub highest: u64,
}

/// The highest term seen; shared by every clone of a client.
#[derive(Debug, Default)]
pub struct TermFence {
    highest: AtomicU64,
}

impl TermFence {
    /// A fence that has seen no term yet.
    pub fn new() -> TermFence {
        TermFence::default()
    }

    /// Admits a reply from `term` (raising the highest term seen) or refuses it
    /// when a higher term has been seen already. An equal term is admitted.
    pub fn admit(&self, term: u64) -> Result<(), StaleTerm> {
        let before = self.highest.fetch_max(term, Ordering::AcqRel);
        if term < before {
            Err(StaleTerm {
                term,
                highest: before,
            })
        } else {
            Ok(())
        }
    }

    /// The highest term seen, 0 before the first reply.
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fencing: a reply from a lower term than one already seen is refused; equal and higher pass.
    #[test]
    fn lower_term_is_refused() {
        let fence = TermFence::new();
        assert_eq!(fence.highest(), 0);
        assert_eq!(fence.admit(3), Ok(()));
        assert_eq!(fence.admit(3), Ok(()));
        assert_eq!(
            fence.admit(2),
            Err(StaleTerm {
                term: 2,
                highest: 3
            })
        );
        assert_eq!(
            fence.highest(),
            3,
            "a refused reply does not lower the highest term"
        );
        assert_eq!(fence.admit(5), Ok(()));
        assert_eq!(
            fence.admit(4),
            Err(StaleTerm {
                term: 4,
                highest: 5
            })
        );
        assert_eq!(
            fence.admit(4).unwrap_err().to_string(),
            "a reply from term 4 was refused: term 5 has already been seen"
        );
    }
}
