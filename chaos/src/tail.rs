//! Which nodes came back from a power cut with a shorter log than they had
//! applied: the "lost log tail" a report names for every power cut.
//!
//! A node's applied index is a floor for its durable log: a follower applies
//! only entries it flushed, and a leader only entries a majority flushed. If
//! a node restarts with its log ending below the index it had applied, its
//! disk lost a tail that was committed. That is harmless while the node
//! restarts as a follower (it cannot be elected without those entries, and
//! the leader sends them again); a leader that came back as leader of its
//! old term with such a log is what rolled back committed grants once
//! (`docs/decisions/0015-a-restarted-leader-never-leads-its-old-term.md`).
//!
//! How it is measured: just before the cut, each node to be cut is asked for
//! its applied index (`NodeInfo`) and the active node is noted; after the
//! restart, the node's own log line `log store opened … log=Some((first,
//! last))`, written when its store is opened and before it talks to any
//! peer, gives the last index its disk kept.

use std::time::Duration;

use crate::cluster::{Cluster, label};

/// How long a restarted node may take to open its store and log it.
const OPENED_WAIT: Duration = Duration::from_secs(10);

/// What the log line of an opened store starts with.
const OPENED: &str = "log store opened";

/// One node cut, as it stood just before the cut.
#[derive(Debug, Clone)]
struct Before {
    node: usize,
    applied: Option<u64>,
    active: bool,
    /// Store openings logged so far, to find the next one.
    opened: usize,
}

/// The nodes of one power cut, read before it.
#[derive(Debug, Clone)]
pub struct TailWatch {
    before: Vec<Before>,
}

/// A node that came back with its log ending below what it had applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLoss {
    /// The node, 0-based.
    pub node: usize,
    /// Whether it was the active node when the power failed.
    pub active: bool,
    /// What it had applied just before the cut.
    pub applied: u64,
    /// Where its log ended when it started again.
    pub log_end: u64,
}

impl std::fmt::Display for TailLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{} came back with its log ending at index {}, below index {} it had applied: {} entries lost",
            label(self.node),
            if self.active { " (active)" } else { "" },
            self.log_end,
            self.applied,
            self.applied - self.log_end
        )
    }
}

/// The `(first, last)` log span of every store opening logged in `text`, in
/// order (`None` for a store with an empty log).
fn openings(text: &str) -> Vec<Option<(u64, u64)>> {
    text.lines()
        .filter(|line| line.contains(OPENED))
        .map(|line| {
            let rest = line.split("log=Some((").nth(1)?;
            let (first, rest) = rest.split_once(", ")?;
            let last = rest.split_once("))")?.0;
            Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
        })
        .collect()
}

fn log_text(cluster: &Cluster, i: usize) -> String {
    std::fs::read(cluster.log_file(i))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

impl TailWatch {
    /// Reads, before a cut of `nodes`, what each has applied and which is active.
    pub async fn before(cluster: &mut Cluster, nodes: &[usize]) -> TailWatch {
        let active = cluster
            .active(Duration::from_millis(300))
            .await
            .map(|(i, _)| i);
        let mut before = Vec::new();
        for &node in nodes {
            let applied = crate::cluster::applied_index(cluster, node).await;
            before.push(Before {
                node,
                applied,
                active: active == Some(node),
                opened: openings(&log_text(cluster, node)).len(),
            });
        }
        TailWatch { before }
    }

    /// After the nodes were started again: each node whose store opened with
    /// its log ending below what it had applied.
    pub async fn after(&self, cluster: &Cluster) -> Vec<TailLoss> {
        let deadline = tokio::time::Instant::now() + OPENED_WAIT;
        let mut lost = Vec::new();
        for before in &self.before {
            let span = loop {
                let all = openings(&log_text(cluster, before.node));
                if all.len() > before.opened {
                    break all.last().copied().flatten();
                }
                if tokio::time::Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if let (Some(applied), Some((_, log_end))) = (before.applied, span)
                && log_end < applied
            {
                lost.push(TailLoss {
                    node: before.node,
                    active: before.active,
                    applied,
                    log_end,
                });
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The span is read from the store's own log line; a store without log
    // entries gives none, and other lines are ignored.
    #[test]
    fn openings_are_read_from_the_node_log() {
        let text = "\
2026-12-07T05:52:35Z  INFO node{id=3}: raftlm::raft::log_store: log store opened dir=/d vote=Some(Vote { leader_id: LeaderId { term: 1, node_id: 3 }, committed: true }) committed=Some(LogId { leader_id: CommittedLeaderId { term: 1, node_id: 3 }, index: 24 }) purged=None log=Some((0, 25))
2026-12-07T05:52:36Z  INFO node{id=3}: raftlm::node: node started
2026-12-07T05:52:40Z  INFO node{id=3}: raftlm::raft::log_store: log store opened dir=/d vote=None committed=None purged=None log=None
";
        assert_eq!(openings(text), vec![Some((0, 25)), None]);
    }
}
