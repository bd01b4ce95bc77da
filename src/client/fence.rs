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

use crate::license::ids::Term;

/// A reply from a term older than one already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "it answered from term {term}, below term {highest} seen before: it was deposed, or the cluster was restored or rebuilt in a lower term (a new client accepts it)"
)]
pub struct StaleTerm {
    /// The reply's term.
    pub term: Term,
    /// The highest term seen before it.
    pub highest: Term,
}

/// The highest term seen; shared by every clone of a client.
#[derive(Debug, Default)]
pub struct TermFence {
    /// The highest term's number (an atomic holds the bare number).
    highest: AtomicU64,
}

impl TermFence {
    /// A fence that has seen no term yet.
    pub fn new() -> TermFence {
        TermFence::default()
    }

    /// Admits a reply from `term` (raising the highest term seen) or refuses it
    /// when a higher term has been seen already. An equal term is admitted.
    pub fn admit(&self, term: Term) -> Result<(), StaleTerm> {
        let before = Term(self.highest.fetch_max(term.0, Ordering::AcqRel));
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
    pub fn highest(&self) -> Term {
        Term(self.highest.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fencing: a reply from a lower term than one already seen is refused; equal and higher pass.
    #[test]
    fn lower_term_is_refused() {
        let fence = TermFence::new();
        assert_eq!(fence.highest(), Term(0));
        assert_eq!(fence.admit(Term(3)), Ok(()));
        assert_eq!(fence.admit(Term(3)), Ok(()));
        assert_eq!(
            fence.admit(Term(2)),
            Err(StaleTerm {
                term: Term(2),
                highest: Term(3)
            })
        );
        assert_eq!(
            fence.highest(),
            Term(3),
            "a refused reply does not lower the highest term"
        );
        assert_eq!(fence.admit(Term(5)), Ok(()));
        assert_eq!(
            fence.admit(Term(4)),
            Err(StaleTerm {
                term: Term(4),
                highest: Term(5)
            })
        );
        assert_eq!(
            fence.admit(Term(4)).unwrap_err().to_string(),
            "it answered from term 4, below term 5 seen before: it was deposed, or the cluster was restored or rebuilt in a lower term (a new client accepts it)"
        );
    }
}
