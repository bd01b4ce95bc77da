//! The nodes' final states: `replicas-converge` (every node's store, read
//! after the run, holds the same state at the compared index) and
//! `live-states-converge` (after the drain every node answers at one applied
//! index with one digest, equal to its replayed store's). See the invariants
//! in the [`super`] docs.

use std::collections::BTreeSet;

use super::common::Tally;
use super::model::{CONVERGE, InvariantResult, LIVE, LiveView, ReplicaView};
use crate::history::Token;

/// Replicas: every node readable, at the same index, with the same state.
pub(super) fn check_convergence(replicas: &[ReplicaView]) -> InvariantResult {
    let mut tally = Tally::new(CONVERGE);
    for replica in replicas {
        tally.checked += 1;
        if let Some(error) = &replica.error {
            tally.violation(format!("node {}: {error}", replica.node));
        }
    }
    let readable: Vec<&ReplicaView> = replicas.iter().filter(|r| r.error.is_none()).collect();
    if let Some(first) = readable.first() {
        for other in &readable[1..] {
            if other.index != first.index {
                tally.violation(format!(
                    "node {} was compared at log index {} but node {} at {}",
                    first.node, first.index, other.node, other.index
                ));
            } else if other.digest != first.digest {
                let mine: BTreeSet<Token> = first.grants.iter().map(|g| g.token).collect();
                let theirs: BTreeSet<Token> = other.grants.iter().map(|g| g.token).collect();
                let only = |a: &BTreeSet<Token>, b: &BTreeSet<Token>| {
                    a.difference(b)
                        .map(Token::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                tally.violation(format!(
                    "nodes {} and {} hold different license states at log index {} (digests {} and {}; seats in use {:?} and {:?}; grants only on node {}: [{}]; only on node {}: [{}]; the harness replays each log with its own raftlm, so build it from the binary's source)",
                    first.node,
                    other.node,
                    first.index,
                    first.digest,
                    other.digest,
                    first.in_use,
                    other.in_use,
                    first.node,
                    only(&mine, &theirs),
                    other.node,
                    only(&theirs, &mine)
                ));
            }
        }
    }
    tally.finish()
}

/// Live states: every node answered, all at one applied index, with one
/// digest; and a node's live digest equals its replayed store's where both
/// are at the same index.
pub(super) fn check_live(live: &[LiveView], replicas: &[ReplicaView]) -> InvariantResult {
    let mut tally = Tally::new(LIVE);
    for view in live {
        tally.checked += 1;
        if let Some(error) = &view.error {
            tally.violation(format!("node {}: {error}", view.node));
        }
    }
    let answered: Vec<&LiveView> = live.iter().filter(|v| v.error.is_none()).collect();
    let figures = |v: &LiveView| {
        format!(
            "node {} applied {} (committed {}, digest {})",
            v.node, v.applied_index, v.committed_index, v.digest
        )
    };
    if let Some(first) = answered.first() {
        for other in &answered[1..] {
            if other.applied_index != first.applied_index {
                tally.violation(format!(
                    "the nodes did not reach one applied index while the cluster was quiescent: {}; {}",
                    figures(first),
                    figures(other)
                ));
            } else if other.digest != first.digest {
                tally.violation(format!(
                    "nodes {} and {} hold different live license states at applied index {}: {}; {}",
                    first.node,
                    other.node,
                    first.applied_index,
                    figures(first),
                    figures(other)
                ));
            }
        }
    }
    for view in &answered {
        let Some(stored) = replicas
            .iter()
            .find(|r| r.node == view.node && r.error.is_none() && r.index == view.applied_index)
        else {
            continue;
        };
        tally.checked += 1;
        if stored.digest != view.digest {
            tally.violation(format!(
                "node {}'s live state at applied index {} has digest {}, but its store replayed to that index gives {} (the harness replays with its own raftlm: build it from the binary's source)",
                view.node, view.applied_index, view.digest, stored.digest
            ));
        }
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

    // Replicas with different states at the same index are reported.
    #[test]
    fn diverging_replicas_are_reported() {
        let view = |node, digest: &str, grants: Vec<GrantSeen>| ReplicaView {
            node,
            index: 40,
            last_index: 40,
            committed: Some(40),
            snapshot_index: None,
            digest: digest.into(),
            grants,
            in_use: BTreeMap::new(),
            error: None,
        };
        let mut h = Builder::new();
        h.checkout(1, "cad", 1, 0, 10, 2, token(2, 5));
        h.events.sort_by_key(|e| e.time_us);
        let mut input = CheckInput {
            licensed: [("cad".to_string(), 5)].into(),
            session_ttl_us: TTL_US,
            replicas: vec![
                view(1, "aa", vec![seen(token(2, 5), 1, "cad", 1)]),
                view(2, "aa", vec![seen(token(2, 5), 1, "cad", 1)]),
            ],
            replicas_read_us: 50_000,
            ..CheckInput::default()
        };
        assert_eq!(failing(&check(&h.events, &input)), Vec::<&str>::new());
        input.replicas.push(view(3, "bb", vec![]));
        let verdict = check(&h.events, &input);
        assert_eq!(failing(&verdict), vec![CONVERGE]);
        assert!(result(&verdict, CONVERGE).examples[0].contains("only on node 1: [2.5.0]"));
    }

    // Live states converge: nodes at one applied index must report one
    // digest; a differing digest, a node left behind, a node that did not
    // answer, and a live digest that differs from the node's own replayed
    // store at the same index are reported with the figures.
    #[test]
    fn diverging_live_states_are_reported() {
        let live = |node, applied_index, digest: &str| LiveView {
            node,
            applied_index,
            committed_index: applied_index,
            digest: digest.into(),
            error: None,
        };
        let stored = |node, index, digest: &str| ReplicaView {
            node,
            index,
            last_index: index,
            committed: Some(index),
            snapshot_index: None,
            digest: digest.into(),
            grants: Vec::new(),
            in_use: BTreeMap::new(),
            error: None,
        };
        let check_live_input = |live: Vec<LiveView>, replicas: Vec<ReplicaView>| {
            let input = CheckInput {
                live,
                replicas,
                ..CheckInput::default()
            };
            check(&[], &input)
        };
        let same = vec![live(1, 40, "aa"), live(2, 40, "aa"), live(3, 40, "aa")];
        let replicas = vec![
            stored(1, 40, "aa"),
            stored(2, 40, "aa"),
            stored(3, 40, "aa"),
        ];
        let verdict = check_live_input(same.clone(), replicas.clone());
        assert_eq!(failing(&verdict), Vec::<&str>::new(), "{verdict:#?}");
        assert_eq!(result(&verdict, LIVE).checked, 6);

        let mut differing = same.clone();
        differing[2].digest = "bb".into();
        let verdict = check_live_input(differing, Vec::new());
        assert_eq!(failing(&verdict), vec![LIVE]);
        let result_live = result(&verdict, LIVE);
        assert_eq!(result_live.violations, 1);
        assert!(
            result_live.examples[0]
                .contains("nodes 1 and 3 hold different live license states at applied index 40")
                && result_live.examples[0].contains("node 3 applied 40 (committed 40, digest bb)"),
            "{result_live:?}"
        );

        let mut behind = same.clone();
        behind[1].applied_index = 39;
        behind[2].error = Some("no answer".into());
        let verdict = check_live_input(behind, Vec::new());
        let result_live = result(&verdict, LIVE);
        assert_eq!(result_live.violations, 2, "{result_live:?}");
        assert!(result_live.examples[0].starts_with("node 3: no answer"));
        assert!(result_live.examples[1].contains("did not reach one applied index"));

        let mut replayed = replicas;
        replayed[0].digest = "cc".into();
        let verdict = check_live_input(same, replayed);
        assert_eq!(failing(&verdict), vec![CONVERGE, LIVE]);
        assert!(
            result(&verdict, LIVE).examples[0]
                .contains("node 1's live state at applied index 40 has digest aa, but its store replayed to that index gives cc")
        );
    }

    // An unreadable replica fails convergence.
    #[test]
    fn unreadable_replica_is_reported() {
        let input = CheckInput {
            replicas: vec![ReplicaView {
                node: 2,
                index: 0,
                last_index: 0,
                committed: None,
                snapshot_index: None,
                digest: String::new(),
                grants: Vec::new(),
                in_use: BTreeMap::new(),
                error: Some("cannot open".into()),
            }],
            ..Default::default()
        };
        assert_eq!(failing(&check(&[], &input)), vec![CONVERGE]);
    }
}
