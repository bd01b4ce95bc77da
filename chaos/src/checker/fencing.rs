//! `fencing-terms-monotonic`: no answer carries a lower term than an
//! answer that completed before it was sent (real-time order over all
//! clients). See the invariants in the [`super`] docs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::common::{Op, Tally, secs};
use super::model::{FENCING, InvariantResult};

/// Fencing: answers in real-time order never go back to a lower term.
pub(super) fn check_fencing(ops: &[Op]) -> InvariantResult {
    let mut tally = Tally::new(FENCING);
    let mut answers: Vec<(u64, u64, u64, &Op)> = Vec::new();
    for op in ops {
        for attempt in op.attempts.iter().filter(|a| a.answered()) {
            answers.push((
                attempt.invoke_us,
                attempt.complete_us,
                attempt.term.unwrap_or(0),
                op,
            ));
        }
    }
    answers.sort_by_key(|&(invoke, complete, _, op)| (invoke, complete, op.id));
    let mut completions: BinaryHeap<Reverse<(u64, usize)>> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| Reverse((a.1, i)))
        .collect();
    // The highest term among answers completed so far, and which answer it was.
    let mut highest: Option<usize> = None;
    for &(invoke, _, term, op) in &answers {
        while let Some(&Reverse((complete, j))) = completions.peek() {
            if complete >= invoke {
                break;
            }
            completions.pop();
            if highest.is_none_or(|h| answers[j].2 > answers[h].2) {
                highest = Some(j);
            }
        }
        tally.checked += 1;
        if let Some(h) = highest
            && term < answers[h].2
        {
            let (h_invoke, h_complete, h_term, h_op) = answers[h];
            tally.violation(format!(
                "{} sent at {} was answered in term {term}, but {} (sent at {}) had already been answered in term {h_term} at {}",
                op.describe(),
                secs(invoke),
                h_op.describe(),
                secs(h_invoke),
                secs(h_complete)
            ));
        }
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

    // Stale term: an answer in a lower term than one already completed is reported.
    #[test]
    fn stale_term_is_reported() {
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 5, token(5, 5));
        h.renew(2, 5, 11, 4, vec![]); // concurrent with the term-5 answer: allowed
        h.checkout(3, "cad", 1, 20, 30, 4, token(4, 6));
        let verdict = h.check(&[("cad", 5)]);
        assert_eq!(failing(&verdict), vec![FENCING]);
        assert_eq!(result(&verdict, FENCING).violations, 1);
    }
}
