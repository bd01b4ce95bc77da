//! Reads every node's own store after the run, offline, and puts the license
//! state of each at one common log index.
//!
//! Why offline: only the active node answers Status, and `NodeInfo` gives
//! a running node's state only as a digest (`live-states-converge` compares
//! those); the grants and the log prefix come from the stores. After the
//! run every node process is stopped (SIGTERM, so sled flushes), and the
//! harness opens each data directory with raftlm's own
//! [`store::open`](raftlm::raft::store::open), which validates it as a
//! restarting node would. Each node's state is its stored snapshot plus its
//! log replayed through [`LicenseState::apply_batch`] — exactly what the node
//! does at start-up.
//!
//! The compared index `T` is the highest index at or below every node's last
//! log index at which all nodes hold an entry with the same log id (Raft's
//! log matching property then says the prefixes up to `T` are equal), and at
//! or above every node's snapshot (a state cannot be rolled back). Equal
//! prefixes applied deterministically must give equal states; a difference
//! is a divergence. A node whose log cannot reach a common `T` is reported
//! as not converged.
//!
//! The replay runs the harness's own copy of raftlm's state machine (the
//! `raftlm` library it links), so the harness must be built from the same
//! source as the `raftlm` binary under test; with a different binary a
//! "divergence" may only mean that the two apply differently.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use openraft::EntryPayload;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use raftlm::license::state::{LicenseState, LogIndex, LogPosition, Term};
use raftlm::raft::log_store::EntryHash;
use raftlm::raft::{Entry, LogId};

use crate::checker::{EntrySeen, LogView, ReplicaView};
use crate::history::{GrantSeen, Token, session_hex};

/// What one node's store holds.
struct Stored {
    node: usize,
    snapshot: Option<LogId>,
    state: LicenseState,
    entries: BTreeMap<u64, Entry>,
    /// Every stored entry's log id and hash, as a live node lists them.
    hashes: Vec<EntryHash>,
    last_index: u64,
    committed: Option<u64>,
}

fn open(node: usize, dir: &Path) -> Result<Stored, String> {
    let (mut log, state_machine) =
        raftlm::raft::store::open(dir).map_err(|e| format!("cannot open its store: {e}"))?;
    let snapshot = state_machine.last_applied();
    let state = state_machine.read(|s| s.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let log_state = RaftLogStorage::get_log_state(&mut log)
            .await
            .map_err(|e| format!("cannot read its log state: {e}"))?;
        let committed = RaftLogStorage::read_committed(&mut log)
            .await
            .map_err(|e| format!("cannot read its committed index: {e}"))?;
        let last_index = log_state
            .last_log_id
            .map(|l| l.index)
            .or(snapshot.map(|s| s.index))
            .unwrap_or(0);
        let first = log_state.last_purged_log_id.map_or(0, |p| p.index + 1);
        let entries = RaftLogReader::try_get_log_entries(&mut log, first..=last_index)
            .await
            .map_err(|e| format!("cannot read its log: {e}"))?;
        let hashes = log
            .entry_hashes(Some(first), usize::MAX)
            .map_err(|e| format!("cannot hash its log: {e}"))?;
        Ok(Stored {
            node,
            snapshot,
            state,
            entries: entries.into_iter().map(|e| (e.log_id.index, e)).collect(),
            hashes,
            last_index,
            committed: committed.map(|c| c.index),
        })
    })
}

impl Stored {
    /// The log id this node holds at `index`, from its log or its snapshot.
    fn log_id_at(&self, index: u64) -> Option<LogId> {
        if let Some(entry) = self.entries.get(&index) {
            return Some(entry.log_id);
        }
        self.snapshot.filter(|s| s.index == index)
    }

    fn snapshot_index(&self) -> Option<u64> {
        self.snapshot.map(|s| s.index)
    }

    /// The license state after applying the log up to `index`.
    fn state_at(&self, index: u64) -> Result<LicenseState, String> {
        let from = self.snapshot.map_or(0, |s| s.index + 1);
        let mut state = self.state.clone();
        for i in from..=index {
            let Some(entry) = self.entries.get(&i) else {
                return Err(format!("its log has no entry {i}"));
            };
            if let EntryPayload::Normal(batch) = &entry.payload {
                let at = LogPosition {
                    term: Term(entry.log_id.leader_id.term),
                    index: LogIndex(i),
                };
                catch_unwind(AssertUnwindSafe(|| state.apply_batch(at, batch))).map_err(|p| {
                    format!("applying entry {i} broke an invariant: {}", panic_text(&p))
                })?;
            }
        }
        catch_unwind(AssertUnwindSafe(|| state.check_invariants())).map_err(|p| {
            format!(
                "its state at {index} breaks an invariant: {}",
                panic_text(&p)
            )
        })?;
        Ok(state)
    }
}

fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".to_string())
}

/// The state's digest: SHA-256 of its canonical encoding
/// ([`LicenseState::digest`]), the same a live node reports in `NodeInfo`,
/// so a node's live state and its replayed store can be compared too.
fn digest(state: &LicenseState) -> String {
    state
        .digest()
        .unwrap_or_else(|error| format!("unencodable: {error}"))
}

fn failed(node: usize, error: String) -> ReplicaView {
    ReplicaView {
        node,
        index: 0,
        last_index: 0,
        committed: None,
        snapshot_index: None,
        digest: String::new(),
        grants: Vec::new(),
        in_use: BTreeMap::new(),
        error: Some(error),
    }
}

/// What the offline read says about the log: every readable node's stored
/// entries (log id and hash of the stored bytes, as a live node lists them
/// in `NodeInfo`) and its replayed state's digest at the compared index, for
/// `one-entry-per-log-id` and `states-agree-at-each-index`.
fn log_view(s: &Stored, compared: Option<&ReplicaView>) -> LogView {
    LogView {
        node: s.node,
        when: "its store, read after the run".into(),
        entries: s
            .hashes
            .iter()
            .map(|h| EntrySeen {
                term: h.log_id.leader_id.term,
                leader: h.log_id.leader_id.node_id,
                index: h.log_id.index,
                hash: h.hash.clone(),
            })
            .collect(),
        digests: compared
            .filter(|v| v.error.is_none())
            .map(|v| vec![(v.index, v.digest.clone())])
            .unwrap_or_default(),
        error: None,
    }
}

/// Reads every node's data directory (`dirs[i]` is node `i + 1`'s) and
/// returns one view per node at the common index, and each readable node's
/// stored log ids and entry hashes (see `log_view` below). The processes must
/// have stopped. Blocking.
pub fn read(dirs: &[PathBuf]) -> (Vec<ReplicaView>, Vec<LogView>) {
    let mut stored = Vec::new();
    let mut views = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        match open(i + 1, dir) {
            Ok(s) => stored.push(s),
            Err(error) => views.push(failed(i + 1, error)),
        }
    }
    let views = states(&stored, views);
    let logs = stored
        .iter()
        .map(|s| log_view(s, views.iter().find(|v| v.node == s.node)))
        .collect();
    (views, logs)
}

/// The views of the readable nodes at their common index, added to `views`.
fn states(stored: &[Stored], mut views: Vec<ReplicaView>) -> Vec<ReplicaView> {
    if stored.is_empty() {
        return views;
    }
    let top = stored.iter().map(|s| s.last_index).min().unwrap_or(0);
    let bottom = stored
        .iter()
        .filter_map(Stored::snapshot_index)
        .max()
        .unwrap_or(0);
    let common = (bottom..=top).rev().find(|&index| {
        let first = stored[0].log_id_at(index);
        first.is_some() && stored.iter().all(|s| s.log_id_at(index) == first)
    });
    let Some(index) = common else {
        let spans: Vec<String> = stored
            .iter()
            .map(|s| {
                format!(
                    "node {} has snapshot {:?} and log up to {}",
                    s.node,
                    s.snapshot_index(),
                    s.last_index
                )
            })
            .collect();
        for s in stored {
            views.push(failed(
                s.node,
                format!(
                    "the nodes share no common log index to compare at ({})",
                    spans.join("; ")
                ),
            ));
        }
        return views;
    };
    for s in stored {
        match s.state_at(index) {
            Ok(state) => {
                let grants = state
                    .grants()
                    .values()
                    .map(|g| GrantSeen {
                        token: Token::from(g.token),
                        session: session_hex(g.session.public()),
                        feature: g.feature.clone(),
                        count: g.count,
                    })
                    .collect();
                let in_use = state
                    .features()
                    .into_iter()
                    .map(|f| (f.feature, f.in_use))
                    .collect();
                views.push(ReplicaView {
                    node: s.node,
                    index,
                    last_index: s.last_index,
                    committed: s.committed,
                    snapshot_index: s.snapshot_index(),
                    digest: digest(&state),
                    grants,
                    in_use,
                    error: None,
                });
            }
            Err(error) => views.push(failed(s.node, error)),
        }
    }
    views.sort_by_key(|v| v.node);
    views
}
