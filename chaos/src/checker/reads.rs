//! `reads-never-go-back`: in real-time order a Status read never shows a
//! lower applied index than a read answered before it was sent, nor than a
//! check-out or check-in answered before it was sent. See the invariants in
//! the [`super`] docs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::common::{Op, Tally, secs};
use super::model::{InvariantResult, READS};
use crate::history::{EventType, OpKind};

/// Reads never go back: see the module docs. One sort and one heap: O(n log n).
pub(super) fn check_reads(ops: &[Op]) -> InvariantResult {
    let mut tally = Tally::new(READS);
    // Answers that carry an index: (invoke, complete, index, is_read, op).
    let mut answers: Vec<(u64, u64, u64, bool, &Op)> = Vec::new();
    for op in ops {
        let is_read = matches!(op.kind, OpKind::Read | OpKind::Drain);
        let is_write = matches!(op.kind, OpKind::Checkout | OpKind::Checkin);
        if !(is_read || is_write) {
            continue;
        }
        for attempt in &op.attempts {
            let Some(index) = attempt.index else { continue };
            // A read counts when it was answered with a state; a write when
            // the cluster answered it at all (a denial is committed too).
            let counts = if is_read {
                attempt.outcome == EventType::Ok
            } else {
                attempt.term.is_some()
            };
            if counts {
                answers.push((attempt.invoke_us, attempt.complete_us, index, is_read, op));
            }
        }
    }
    answers.sort_by_key(|&(invoke, complete, _, _, op)| (invoke, complete, op.id));
    let mut completions: BinaryHeap<Reverse<(u64, usize)>> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| Reverse((a.1, i)))
        .collect();
    // The answer with the highest index among those completed so far.
    let mut highest: Option<usize> = None;
    for &(invoke, _, index, is_read, op) in &answers {
        while let Some(&Reverse((complete, j))) = completions.peek() {
            if complete >= invoke {
                break;
            }
            completions.pop();
            if highest.is_none_or(|h| answers[j].2 > answers[h].2) {
                highest = Some(j);
            }
        }
        if !is_read {
            continue;
        }
        tally.checked += 1;
        if let Some(h) = highest
            && index < answers[h].2
        {
            let (h_invoke, h_complete, h_index, h_read, h_op) = answers[h];
            let what = if h_read {
                "showed applied index"
            } else {
                "was applied at index"
            };
            tally.violation(format!(
                "{} sent at {} showed applied index {index}, but {} (sent at {}) {what} {h_index} and was answered at {}, before this read was sent",
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

    /// Sets the index of the last event (a completion) pushed.
    fn with_index(h: &mut Builder, index: u64) {
        h.events.last_mut().unwrap().index = Some(index);
    }

    // Reads never go back: a read sent after another read was answered must
    // not show a lower applied index (whoever sent them), and a read must
    // show at least the index of every check-out or check-in (a denial too)
    // answered before it was sent; overlapping operations are not ordered.
    #[test]
    fn reads_that_go_back_are_reported() {
        let build = |late_read_index: u64, read_after_write_index: u64| {
            let mut h = Builder::new();
            h.read(0, 10, 2, vec![]);
            with_index(&mut h, 10);
            // Overlaps the first read: a lower index is allowed.
            h.read(5, 20, 2, vec![]);
            with_index(&mut h, 8);
            // Sent after the first was answered.
            h.read(30, 40, 2, vec![]);
            with_index(&mut h, late_read_index);
            // A denied check-out applied at 20, then a read.
            h.checkout_attempt(7, 1, 1, "cad", 1, 50, 60, Some((2, None)));
            with_index(&mut h, 20);
            h.read(70, 80, 2, vec![]);
            with_index(&mut h, read_after_write_index);
            // A read without an index (an old history) is not judged.
            h.read(90, 100, 2, vec![]);
            h.check(&[("cad", 5)])
        };
        let verdict = build(10, 20);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, READS).checked, 4);

        let verdict = build(9, 19);
        assert_eq!(failing(&verdict), vec![READS], "{verdict:#?}");
        let reads = result(&verdict, READS);
        assert_eq!(reads.violations, 2, "{reads:?}");
        assert!(
            reads.examples[0].contains("showed applied index 9")
                && reads.examples[0].contains("showed applied index 10"),
            "{reads:?}"
        );
        assert!(
            reads.examples[1].contains("checkout op 7")
                && reads.examples[1].contains("was applied at index 20"),
            "{reads:?}"
        );
    }

    // An old history line without the index field still parses.
    #[test]
    fn histories_without_indices_still_parse() {
        let line = r#"{"time_us":5,"process":"reader","type":"ok","op":"read","id":3,"term":2}"#;
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!(event.index, None);
    }
}
