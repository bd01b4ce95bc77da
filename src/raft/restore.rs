//! Writing a [`Backup`] into a node's empty data directory, offline, so the
//! node starts as a member of a restored cluster (`raftlm restore`).
//!
//! openraft's `initialize` refuses a node that has a log or a vote, and a
//! restored node must have both a state and a vote, so the restore writes,
//! through raftlm's own stores (the same checks as a snapshot received from a
//! peer, the same creation record and marker file as any new database):
//! - the snapshot: the backup's state after its last applied log id, with
//!   the membership of the restored node's config (every member a voter);
//! - a vote in a term above the backup's ([`restored_term`]), for no leader
//!   yet (uncommitted, this node's own), so the first election of the
//!   restored cluster is in a higher term still;
//! - which backup it was ([`super::restored`]), so that nodes restored from
//!   different backups refuse to form a cluster.
//!
//! Clients refuse answers from a term lower than the highest they saw, and
//! grant tokens embed the term, so a restored cluster in a lower term would be
//! refused by every client that outlived the old one, and its new tokens
//! could equal tokens issued after the backup was taken: hence the term.
//! openraft, starting on a snapshot with no log after it, purges the log up
//! to the snapshot (`StorageHelper::get_initial_state`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};

use super::backup::Backup;
use super::state_machine::snapshot_data;
use super::store::{self, StoreError};
use super::{Member, SnapshotMeta, StoredMembership, Vote};

/// How far above the backup's term a restored cluster starts when the
/// administrator names no term: far above any term the old cluster could
/// have reached since the backup (a term is one election; a cluster that
/// elects every second for eleven days reaches a million).
pub const RESTORE_TERM_GAP: u64 = 1_000_000;

/// The term a restored node votes in: one above the higher of the backup's
/// term and `above` when the administrator gives one (`--above-term T`,
/// the highest term the old cluster or its clients reached), else the
/// backup's term plus [`RESTORE_TERM_GAP`].
pub fn restored_term(backup_term: u64, above: Option<u64>) -> u64 {
    match above {
        Some(above) => backup_term.max(above).saturating_add(1),
        None => backup_term.saturating_add(RESTORE_TERM_GAP),
    }
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The data directory holds something already.
    #[error(
        "data directory {0} is not empty: restore writes only into an empty directory (move it aside first)"
    )]
    NotEmpty(String),
    /// The node is not among the members.
    #[error("node {0} is not among the [[nodes]] of its config")]
    NotAMember(u64),
    /// The store could not be opened or written.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The snapshot or the vote could not be stored.
    #[error("cannot write the restored state into {dir}: {detail}")]
    Write {
        /// The data directory.
        dir: String,
        /// What failed.
        detail: String,
    },
}

/// True if `dir` does not exist or is an empty directory.
pub fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(error),
    }
}

/// Writes `backup` into the empty data directory `dir` of node `node_id`,
/// whose cluster is `members`, with a vote in `term` (see the module docs).
/// The caller checked the backup ([`super::backup::verify`]) and that its
/// cluster name is the config's.
pub async fn restore(
    backup: &Backup,
    dir: &Path,
    node_id: u64,
    members: BTreeMap<u64, Member>,
    term: u64,
) -> Result<(), RestoreError> {
    let shown = dir.display().to_string();
    match is_empty_dir(dir) {
        Ok(true) => {}
        Ok(false) => return Err(RestoreError::NotEmpty(shown)),
        Err(error) => {
            return Err(RestoreError::Write {
                dir: shown,
                detail: error.to_string(),
            });
        }
    }
    if !members.contains_key(&node_id) {
        return Err(RestoreError::NotAMember(node_id));
    }
    std::fs::create_dir_all(dir).map_err(|e| RestoreError::Write {
        dir: shown.clone(),
        detail: e.to_string(),
    })?;
    let write = |detail: String| RestoreError::Write {
        dir: shown.clone(),
        detail,
    };
    let (mut log, mut machine) = store::open(dir)?;
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let last = backup.last_applied;
    let membership =
        StoredMembership::new(Some(last), openraft::Membership::new(vec![voters], members));
    // The new cluster's members are the config's: what the old ones read
    // and where they moved is forgotten (the write format is kept).
    let mut state = backup.state.clone();
    state.reset_formats();
    // What the restored nodes compare at their first activation: the state
    // as restored (equal to the backup's unless it recorded formats).
    let restored_digest = state.digest().map_err(|e| write(e.to_string()))?;
    let data = snapshot_data(last, membership.clone(), state).map_err(|e| write(e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: membership,
        snapshot_id: format!("restored-{}-{}", last.leader_id.term, last.index),
    };
    machine
        .install_snapshot(&meta, Box::new(Cursor::new(data)))
        .await
        .map_err(|e| write(e.to_string()))?;
    log.save_vote(&Vote::new(term, node_id))
        .await
        .map_err(|e| write(e.to_string()))?;
    super::restored::RestoredFrom {
        state_digest: restored_digest,
        ..super::restored::RestoredFrom::of(backup, term)
    }
    .write(dir)
    .map_err(|e| write(e.to_string()))?;
    tracing::info!(dir = %shown, node = node_id, term, last_applied = %last, "restored from a backup");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::backup::Backup;

    fn backup() -> Backup {
        crate::raft::backup::sample(4, 9)
    }

    fn members() -> BTreeMap<u64, Member> {
        (1..=3)
            .map(|id| {
                let member = Member {
                    address: format!("127.0.0.1:{}", 27000 + id),
                    peer_address: format!("127.0.0.1:{}", 27100 + id),
                };
                (id, member)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_restored_store_opens_with_the_backup_state_its_members_and_a_higher_vote() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node1");
        let taken = backup();
        let term = restored_term(taken.term, None);
        restore(&taken, &data, 1, members(), term).await.unwrap();
        let (mut log, mut machine) = store::open(&data).unwrap();
        let vote = log.read_vote().await.unwrap().unwrap();
        assert_eq!(vote.leader_id().term, term);
        assert!(!vote.is_committed());
        let (applied, membership) = machine.applied_state().await.unwrap();
        assert_eq!(applied, Some(taken.last_applied));
        let voters: Vec<u64> = membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 2, 3]);
        assert_eq!(
            machine.read(|s| s.digest().unwrap()),
            taken.state_digest,
            "the restored state is the backup's"
        );
        let record = crate::raft::restored::RestoredFrom::read(&data).unwrap();
        assert_eq!(
            record,
            Some(crate::raft::restored::RestoredFrom::of(&taken, term)),
            "the restore records which backup it was"
        );
    }

    #[tokio::test]
    async fn a_restore_refuses_a_directory_that_holds_anything_or_a_stranger() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node1");
        std::fs::create_dir_all(data.join("leftover")).unwrap();
        let error = restore(&backup(), &data, 1, members(), 5)
            .await
            .unwrap_err();
        assert!(matches!(error, RestoreError::NotEmpty(_)), "{error}");
        let empty = dir.path().join("node9");
        let error = restore(&backup(), &empty, 9, members(), 5)
            .await
            .unwrap_err();
        assert!(matches!(error, RestoreError::NotAMember(9)), "{error}");
    }

    #[test]
    fn the_restored_term_is_above_the_backup_and_the_given_floor() {
        assert_eq!(restored_term(7, None), 7 + RESTORE_TERM_GAP);
        assert_eq!(restored_term(7, Some(90)), 91);
        assert_eq!(restored_term(700, Some(90)), 701);
        assert_eq!(restored_term(u64::MAX, None), u64::MAX);
    }
}
