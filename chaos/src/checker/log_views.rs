//! The log views asked while the nodes ran and read from their stores:
//! `one-entry-per-log-id` (a log id names one entry, the same bytes, in
//! every view at any moment) and `states-agree-at-each-index` (every digest
//! any view reports at an applied index is the same), and the report's line
//! on the views ([`log_views_line`]). See the invariants in the [`super`]
//! docs.

use std::collections::{BTreeMap, BTreeSet};

use super::common::Tally;
use super::model::{InvariantResult, LogView, ONE_ENTRY, STATES_AT};

/// The report's line on the log views: how many, at how many moments, how
/// many nodes could not be asked (their entries and digests were not
/// compared), and how much they held.
pub fn log_views_line(logs: &[LogView]) -> String {
    let moments: BTreeSet<&str> = logs.iter().map(|v| v.when.as_str()).collect();
    let unasked: Vec<String> = logs
        .iter()
        .filter_map(|v| {
            v.error
                .as_ref()
                .map(|e| format!("node {} ({}): {e}", v.node, v.when))
        })
        .collect();
    let entries: usize = logs.iter().map(|v| v.entries.len()).sum();
    let digests: usize = logs.iter().map(|v| v.digests.len()).sum();
    let mut line = format!(
        "{} views at {} moments (after each power cut, the final restart, the end, the stores), {entries} entries and {digests} state digests seen; {} not answered",
        logs.len(),
        moments.len(),
        unasked.len()
    );
    if let Some(first) = unasked.first() {
        line.push_str(&format!(", first: {first}"));
    }
    line
}

/// `one-entry-per-log-id`: a log id names one entry for the life of the
/// cluster, so every view of every node, at any moment, that holds an entry
/// under a log id holds the same bytes (the same hash). The views are
/// compared across time as well: a node that held one entry under a log id
/// before a power cut and another after it broke the promise even if no
/// other node was asked in between. `checked`: the log ids seen by two
/// nodes or more.
pub(super) fn check_one_entry_per_log_id(logs: &[LogView]) -> InvariantResult {
    let mut tally = Tally::new(ONE_ENTRY);
    // Per log id: each distinct hash with the first view that showed it, and
    // the nodes that held it.
    type Seen<'a> = (Vec<(&'a str, &'a LogView)>, BTreeSet<usize>);
    let mut by_id: BTreeMap<(u64, u64, u64), Seen> = BTreeMap::new();
    for view in logs.iter().filter(|v| v.error.is_none()) {
        // Term 0 is no leader's: it is the membership entry every pristine
        // node writes for itself when it forms the cluster (openraft's
        // `initialize`, log id (0, 0, 0)), never replicated; with each
        // node's own peer addresses in it (the harness's proxies) the bytes
        // differ by design.
        for entry in view.entries.iter().filter(|e| e.term > 0) {
            let (hashes, nodes) = by_id
                .entry((entry.term, entry.leader, entry.index))
                .or_default();
            nodes.insert(view.node);
            if !hashes.iter().any(|(h, _)| *h == entry.hash) {
                hashes.push((&entry.hash, view));
            }
        }
    }
    for ((term, leader, index), (hashes, nodes)) in &by_id {
        if nodes.len() >= 2 || hashes.len() >= 2 {
            tally.checked += 1;
        }
        if hashes.len() >= 2 {
            let held: Vec<String> = hashes
                .iter()
                .map(|(hash, view)| format!("node {} ({}) holds hash {hash}", view.node, view.when))
                .collect();
            tally.violation(format!(
                "two different entries under log id (term {term}, leader node {leader}, index {index}): {}",
                held.join("; ")
            ));
        }
    }
    tally.finish()
}

/// `states-agree-at-each-index`: entries are applied only once committed,
/// in log order, by a deterministic state machine, so every node's license
/// state right after applying index `i` is the same, whenever it applied
/// it (before or after a restart). Every digest any view reports at an
/// index (the nodes' recent digests asked while they ran, the stores
/// replayed after the run) must be the same. `checked`: the indexes two
/// nodes or more reported.
pub(super) fn check_states_at_each_index(logs: &[LogView]) -> InvariantResult {
    let mut tally = Tally::new(STATES_AT);
    type Seen<'a> = (Vec<(&'a str, &'a LogView)>, BTreeSet<usize>);
    let mut by_index: BTreeMap<u64, Seen> = BTreeMap::new();
    for view in logs.iter().filter(|v| v.error.is_none()) {
        for (index, digest) in &view.digests {
            let (digests, nodes) = by_index.entry(*index).or_default();
            nodes.insert(view.node);
            if !digests.iter().any(|(d, _)| *d == digest) {
                digests.push((digest, view));
            }
        }
    }
    for (index, (digests, nodes)) in &by_index {
        if nodes.len() >= 2 || digests.len() >= 2 {
            tally.checked += 1;
        }
        if digests.len() >= 2 {
            let held: Vec<String> = digests
                .iter()
                .map(|(digest, view)| {
                    format!(
                        "node {} ({}) reports digest {}",
                        view.node,
                        view.when,
                        &digest[..digest.len().min(16)]
                    )
                })
                .collect();
            tally.violation(format!(
                "different license states after applying index {index}: {}",
                held.join("; ")
            ));
        }
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

    // The power-cut divergence: the leader of term 4 (node 3) lost a tail
    // its followers had flushed and committed, led term 4 again and wrote
    // new entries at those indexes. Views of one log id with two hashes, on
    // two nodes or on one node before and after the cut, are violations;
    // equal entries and entries under different log ids are not.
    #[test]
    fn two_entries_under_one_log_id_are_reported() {
        let entry = |index, hash: &str| EntrySeen {
            term: 4,
            leader: 3,
            index,
            hash: hash.into(),
        };
        let view = |node, when: &str, entries: Vec<EntrySeen>| LogView {
            node,
            when: when.into(),
            entries,
            digests: Vec::new(),
            error: None,
        };
        let run = |logs: Vec<LogView>| {
            check(
                &[],
                &CheckInput {
                    logs,
                    ..CheckInput::default()
                },
            )
        };
        let equal = vec![
            view(
                1,
                "power cut 1: serving",
                vec![entry(10, "aa"), entry(11, "bb")],
            ),
            view(
                2,
                "power cut 1: serving",
                vec![entry(10, "aa"), entry(11, "bb")],
            ),
            view(3, "power cut 1: serving", vec![entry(10, "aa")]),
        ];
        let verdict = run(equal.clone());
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, ONE_ENTRY).checked, 2);

        // Node 3 holds other bytes under (4, 3, 11) than nodes 1 and 2.
        let mut diverged = equal.clone();
        diverged.push(view(
            3,
            "power cut 1: 3 s later",
            vec![entry(10, "aa"), entry(11, "cc"), entry(12, "dd")],
        ));
        let verdict = run(diverged);
        assert_eq!(failing(&verdict), vec![ONE_ENTRY]);
        let one = result(&verdict, ONE_ENTRY);
        assert_eq!(one.violations, 1, "{one:?}");
        assert!(
            one.examples[0].contains(
                "two different entries under log id (term 4, leader node 3, index 11): node 1 (power cut 1: serving) holds hash bb; node 3 (power cut 1: 3 s later) holds hash cc"
            ),
            "{one:?}"
        );

        // One node alone, before and after a cut: still two entries under one id.
        let verdict = run(vec![
            view(3, "before", vec![entry(11, "bb")]),
            view(3, "after", vec![entry(11, "cc")]),
        ]);
        assert_eq!(result(&verdict, ONE_ENTRY).violations, 1);

        // The same index under another leader's log id is a different entry.
        let mut other_term = entry(11, "cc");
        other_term.term = 5;
        let verdict = run(vec![
            view(1, "end", vec![entry(11, "bb")]),
            view(2, "end", vec![other_term]),
        ]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");

        // The bootstrap membership (term 0) is each node's own.
        let bootstrap = |hash: &str| EntrySeen {
            term: 0,
            leader: 0,
            index: 0,
            hash: hash.into(),
        };
        let verdict = run(vec![
            view(1, "end", vec![bootstrap("b1")]),
            view(2, "end", vec![bootstrap("b2")]),
        ]);
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");

        // A view with an error holds nothing to compare.
        let mut unasked = view(3, "end", vec![entry(10, "zz")]);
        unasked.error = Some("no answer".into());
        let mut views = equal;
        views.push(unasked);
        assert_eq!(failing(&run(views)), Vec::<&str>::new());
    }

    // States compared at a common applied index while the cluster runs: a
    // node whose state after applying index 128 differs from another's is
    // reported, even if both later converge; equal digests, and digests at
    // indexes no other node reported, are not.
    #[test]
    fn different_states_at_one_index_are_reported() {
        let view = |node, when: &str, digests: &[(u64, &str)]| LogView {
            node,
            when: when.into(),
            entries: Vec::new(),
            digests: digests.iter().map(|(i, d)| (*i, d.to_string())).collect(),
            error: None,
        };
        let run = |logs: Vec<LogView>| {
            check(
                &[],
                &CheckInput {
                    logs,
                    ..CheckInput::default()
                },
            )
        };
        let equal = vec![
            view(1, "power cut 2: serving", &[(64, "d64"), (128, "d128")]),
            view(2, "power cut 2: serving", &[(128, "d128"), (192, "d192")]),
            view(3, "power cut 2: serving", &[(192, "d192")]),
        ];
        let verdict = run(equal.clone());
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, STATES_AT).checked, 2);

        let mut diverged = equal.clone();
        diverged.push(view(
            3,
            "power cut 2: 3 s later",
            &[(192, "x192"), (256, "d256")],
        ));
        diverged.push(view(1, "end", &[(256, "d256")]));
        let verdict = run(diverged);
        assert_eq!(failing(&verdict), vec![STATES_AT]);
        let at = result(&verdict, STATES_AT);
        assert_eq!((at.violations, at.checked), (1, 3), "{at:?}");
        assert!(
            at.examples[0].contains(
                "different license states after applying index 192: node 2 (power cut 2: serving) reports digest d192; node 3 (power cut 2: 3 s later) reports digest x192"
            ),
            "{at:?}"
        );
    }
}
