//! What a node restored from a backup was restored from, and the check that
//! keeps nodes restored from different backups from forming a cluster
//! (decision 0020).
//!
//! `raftlm restore` writes, with the restored state, the file
//! [`RESTORED_FILE`]: the backup's state digest and last applied log id
//! (together, which backup it was) and the term the node was restored to.
//! Until the node has applied an activation in that term or above, its
//! restore is *pending*.
//!
//! Before a node activates, and before a node whose restore is pending
//! starts an election, it asks every voter on the peer plane
//! ([`RestoreCheckService`]) whether its restore is pending and from which
//! backup. That first round waits no longer than the node's other questions
//! before activating, so a silent voter does not delay a failover. If any
//! restore is pending it asks every voter again, for the digest of its state
//! now as well, and goes on only if every voter answered, all were restored
//! from the same backup, and each one's state is still that backup's
//! (nothing but empty and membership entries is applied before the first
//! activation, and neither changes the license state). Otherwise it logs,
//! once for each different reason, the backups seen (digests and log ids)
//! and the fix: restore every node from the same file.
//!
//! No election before the check matters: a leader restored from one backup
//! replicating to a node restored from another puts its entries over that
//! node's committed ones, which openraft stops that node's Raft for. The
//! digest rule catches what slips past (a leader that was not restored,
//! whose snapshot replaced a restored follower's state).
//!
//! Left out: a voter that never answers keeps a restored cluster from
//! electing and activating (restore with a config that lists only the
//! nodes that exist); a node left with its old data while the others were
//! restored is not checked before it is elected, only before it activates.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::codec;
use crate::license::state::LicenseState;
use crate::proto::v1 as pb;

use super::backup::Backup;
use super::network::Network;
use super::state_machine::StateMachineStore;
use super::{LogId, Member};

/// The file, next to sled's, that says what a restored node was restored from.
pub const RESTORED_FILE: &str = "RAFTLM_RESTORED";
/// The file while it is being written.
const RESTORED_TMP_FILE: &str = "RAFTLM_RESTORED.tmp";

/// How long a node about to activate waits between two checks that found
/// the voters restored from different backups (or one silent): the check
/// asks every voter for a digest of its state, and the node repeats it
/// until the voters agree, so not at every tick.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(3);

/// Longest a voter may take to answer the check: encoding and hashing a
/// large state takes hundreds of milliseconds.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a restored node was restored from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredFrom {
    /// The backup's state digest ([`LicenseState::digest`]), of the state
    /// as restored (a restore starts the members' record formats and moved
    /// addresses afresh).
    pub state_digest: String,
    /// The last log entry applied to the backup's state.
    pub last_applied: LogId,
    /// The term the node was restored to (its vote): the first activation
    /// of the restored cluster is in this term or above.
    pub restored_term: u64,
}

impl RestoredFrom {
    /// The record of a restore of `backup` to `restored_term`.
    pub fn of(backup: &Backup, restored_term: u64) -> RestoredFrom {
        RestoredFrom {
            state_digest: backup.state_digest.clone(),
            last_applied: backup.last_applied,
            restored_term,
        }
    }

    /// Which backup it was, as nodes compare and messages show it.
    pub fn backup(&self) -> String {
        let at = self.last_applied;
        format!(
            "state {} at log id {}-{}-{}",
            self.state_digest, at.leader_id.term, at.leader_id.node_id, at.index
        )
    }

    /// Whether no activation has happened in `state` since the restore.
    pub fn pending(&self, state: &LicenseState) -> bool {
        state
            .activation()
            .is_none_or(|a| a.term.0 < self.restored_term)
    }

    /// Writes the record into `dir` atomically and durably (temporary file,
    /// fsync, rename, fsync of the directory). Blocking.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let bytes = codec::encode(self).map_err(io::Error::other)?;
        let tmp = dir.join(RESTORED_TMP_FILE);
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(RESTORED_FILE))?;
        fs::File::open(dir)?.sync_all()
    }

    /// The record in `dir`, `None` if the node was not restored; the error
    /// names the file.
    pub fn read(dir: &Path) -> Result<Option<RestoredFrom>, String> {
        let path = dir.join(RESTORED_FILE);
        match fs::read(&path) {
            Ok(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// A voter's answer: while its restore is pending, what it was restored
/// from (and, when asked, the digest of its state now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// [`RestoredFrom::backup`].
    pub backup: String,
    /// The term it was restored to.
    pub restored_term: u64,
    /// The digest of its state now; empty unless asked for.
    pub state_digest: String,
    /// The backup's digest.
    pub backup_digest: String,
}

/// Every voter's answer, by node id (`Err`: it did not answer).
pub type Answers = BTreeMap<u64, Result<Option<Pending>, String>>;

/// This node's side of the check: its record and its state.
pub struct RestoreCheck {
    record: Option<RestoredFrom>,
    state: StateMachineStore,
    /// The last refusal logged, so each is logged once (std Mutex: no
    /// `.await` while held).
    logged: Mutex<Option<String>>,
}

impl RestoreCheck {
    /// The check of a node whose record is `record` (see [`RestoredFrom::read`]).
    pub fn new(record: Option<RestoredFrom>, state: StateMachineStore) -> Arc<RestoreCheck> {
        Arc::new(RestoreCheck {
            record,
            state,
            logged: Mutex::new(None),
        })
    }

    /// This node's answer: `Some` while its restore is pending, with the
    /// digest of its state if `with_digest`.
    pub fn pending(&self, with_digest: bool) -> Option<Pending> {
        let record = self.record.as_ref()?;
        let state = self
            .state
            .read(|s| record.pending(s).then(|| with_digest.then(|| s.clone())))?;
        // The copy is encoded outside the lock.
        let state_digest = state.map_or_else(String::new, |state| {
            state
                .digest()
                .unwrap_or_else(|e| format!("unencodable: {e}"))
        });
        Some(Pending {
            backup: record.backup(),
            restored_term: record.restored_term,
            state_digest,
            backup_digest: record.state_digest.clone(),
        })
    }

    /// Whether this node may start an election or activate, asking
    /// `voters` (this node among them) over `network`, the first round
    /// within `timeout`: `Err` with a short reason if not, after logging the
    /// whole reason once and waiting [`RECHECK_INTERVAL`].
    pub async fn check(
        &self,
        node_id: u64,
        voters: Vec<(u64, Option<Member>)>,
        network: &Network,
        timeout: Duration,
    ) -> Result<(), String> {
        let activated_term = self.state.read(|s| s.activation().map(|a| a.term.0));
        let quick = self.round(node_id, &voters, network, false, timeout).await;
        if !any_pending(&quick, activated_term) {
            return Ok(());
        }
        let answers = self
            .round(node_id, &voters, network, true, ANSWER_TIMEOUT)
            .await;
        let Err(refusal) = judge(&answers, activated_term) else {
            *self.logged.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Ok(());
        };
        let why = refusal.to_string();
        let fresh = {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = logged.as_deref() != Some(why.as_str());
            *logged = Some(why.clone());
            fresh
        };
        match refusal {
            // Nodes of a restored cluster start one after another.
            Refusal::Silent(_) if fresh => info!("not electing or activating yet: {why}"),
            Refusal::Different(_) if fresh => {
                error!("not electing or activating: {why}");
            }
            _ => {}
        }
        tokio::time::sleep(RECHECK_INTERVAL).await;
        Err("the voters were not all restored from the same backup, or not all answered (logged once above)".into())
    }

    /// Every voter's answer, this node's own included.
    async fn round(
        &self,
        node_id: u64,
        voters: &[(u64, Option<Member>)],
        network: &Network,
        with_digest: bool,
        timeout: Duration,
    ) -> Answers {
        let mut asks = tokio::task::JoinSet::new();
        for (id, member) in voters.iter().cloned() {
            if id == node_id {
                continue;
            }
            let network = network.clone();
            asks.spawn(async move {
                let answer = match member {
                    Some(member) => ask(&network, id, &member, with_digest, timeout).await,
                    None => Err("not in the membership's node list".into()),
                };
                (id, answer)
            });
        }
        let mut answers = Answers::from([(node_id, Ok(self.pending(with_digest)))]);
        while let Some(joined) = asks.join_next().await {
            if let Ok((id, answer)) = joined {
                answers.insert(id, answer);
            }
        }
        answers
    }
}

/// Asks `target` what it was restored from.
async fn ask(
    network: &Network,
    target: u64,
    member: &Member,
    with_state_digest: bool,
    timeout: Duration,
) -> Result<Option<Pending>, String> {
    let channel = network.channel(target, member).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(pb::RestoredFromRequest { with_state_digest });
    request.set_timeout(timeout);
    let mut client = pb::restore_check_client::RestoreCheckClient::new(channel);
    match tokio::time::timeout(timeout, client.restored_from(request)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(status)) => Err(status.message().to_string()),
        Ok(Ok(reply)) => {
            let reply = reply.into_inner();
            Ok((!reply.backup.is_empty()).then_some(Pending {
                backup: reply.backup,
                restored_term: reply.restored_term,
                state_digest: reply.state_digest,
                backup_digest: reply.backup_digest,
            }))
        }
    }
}

/// `answer`, unless this node has applied an activation in its restored
/// term or above (`activated_term`): the voter then merely lags behind the
/// restored cluster's first activation, and its restore counts as done.
fn still_pending(answer: &Option<Pending>, activated_term: Option<u64>) -> Option<Pending> {
    answer
        .clone()
        .filter(|p| activated_term.is_none_or(|t| t < p.restored_term))
}

/// Whether any voter that answered has a restore pending.
pub fn any_pending(answers: &Answers, activated_term: Option<u64>) -> bool {
    answers.values().any(|a| {
        a.as_ref()
            .is_ok_and(|a| still_pending(a, activated_term).is_some())
    })
}

/// Why the voters may not elect or activate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A restore is pending and not every voter answered (the reason).
    #[error("{0}")]
    Silent(String),
    /// The voters were restored from different backups, or one's state was
    /// replaced (the reason, with the backups and the fix).
    #[error("{0}")]
    Different(String),
}

/// The rules of the module docs over every voter's answer with the digests
/// (this node's included), with the term of the last activation this node
/// has applied: a voter that reports a restore pending though this node
/// has applied an activation in its restored term or above merely lags.
pub fn judge(answers: &Answers, activated_term: Option<u64>) -> Result<(), Refusal> {
    let pending = |answer: &Option<Pending>| still_pending(answer, activated_term);
    if !any_pending(answers, activated_term) {
        return Ok(());
    }
    let silent: Vec<String> = answers
        .iter()
        .filter_map(|(id, a)| a.as_ref().err().map(|e| format!("node {id}: {e}")))
        .collect();
    if !silent.is_empty() {
        return Err(Refusal::Silent(format!(
            "this cluster was restored from a backup and elects and activates once every voter has said which backup it was restored from; not every voter answered ({})",
            silent.join("; ")
        )));
    }
    let mut groups: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, answer) in answers {
        let Ok(answer) = answer else { continue };
        let from =
            pending(answer).map_or_else(|| "no backup (not restored)".to_string(), |p| p.backup);
        groups.entry(from).or_default().push(*id);
    }
    if groups.len() > 1 {
        let seen: Vec<String> = groups
            .iter()
            .map(|(from, ids)| format!("{} from {from}", nodes(ids)))
            .collect();
        return Err(Refusal::Different(format!(
            "the voters were restored from different backups: {}; restore every node from the same file (raftlm restore FILE --config CONFIG into empty data directories), then start them",
            seen.join("; ")
        )));
    }
    for (id, answer) in answers {
        if let Ok(Some(p)) = answer
            && p.state_digest != p.backup_digest
        {
            return Err(Refusal::Different(format!(
                "node {id}'s state (digest {}) is no longer that of the backup it was restored from ({}): a node restored from another backup replaced it; restore every node from the same file (raftlm restore FILE --config CONFIG into empty data directories), then start them",
                p.state_digest, p.backup
            )));
        }
    }
    Ok(())
}

fn nodes(ids: &[u64]) -> String {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    match ids.len() {
        1 => format!("node {}", list[0]),
        _ => format!("nodes {}", list.join(", ")),
    }
}

/// The peer-plane service that answers what this node was restored from.
pub struct RestoreCheckService {
    check: Arc<RestoreCheck>,
}

impl RestoreCheckService {
    /// The tonic service answering for `check`.
    pub fn server(
        check: Arc<RestoreCheck>,
    ) -> pb::restore_check_server::RestoreCheckServer<RestoreCheckService> {
        pb::restore_check_server::RestoreCheckServer::new(RestoreCheckService { check })
    }
}

#[tonic::async_trait]
impl pb::restore_check_server::RestoreCheck for RestoreCheckService {
    async fn restored_from(
        &self,
        request: tonic::Request<pb::RestoredFromRequest>,
    ) -> Result<tonic::Response<pb::RestoredFromReply>, tonic::Status> {
        // Only nodes reach the peer plane (mutual TLS with a member's
        // certificate); what it says is no secret among them.
        let check = self.check.clone();
        let with_digest = request.get_ref().with_state_digest;
        let pending = tokio::task::spawn_blocking(move || check.pending(with_digest))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(match pending {
            None => pb::RestoredFromReply::default(),
            Some(p) => pb::RestoredFromReply {
                backup: p.backup,
                restored_term: p.restored_term,
                state_digest: p.state_digest,
                backup_digest: p.backup_digest,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(backup: &str, digest: &str) -> Result<Option<Pending>, String> {
        Ok(Some(Pending {
            backup: format!("state {backup} at log id 5-1-100"),
            restored_term: 1_000_005,
            state_digest: digest.into(),
            backup_digest: backup.into(),
        }))
    }

    fn answers(list: Vec<(u64, Result<Option<Pending>, String>)>) -> Answers {
        list.into_iter().collect()
    }

    /// Nodes restored from one backup activate; from two, or with a state
    /// replaced, or with a voter silent, they do not, and the reason names
    /// the backups and the fix.
    #[test]
    fn only_voters_restored_from_one_backup_activate() {
        let same = answers(vec![
            (1, pending("aaa", "aaa")),
            (2, pending("aaa", "aaa")),
            (3, pending("aaa", "aaa")),
        ]);
        assert_eq!(judge(&same, None), Ok(()));
        let two = answers(vec![
            (1, pending("aaa", "aaa")),
            (2, pending("aaa", "aaa")),
            (3, pending("bbb", "bbb")),
        ]);
        let why = judge(&two, None).unwrap_err().to_string();
        assert!(
            why.contains("nodes 1, 2 from state aaa at log id 5-1-100; node 3 from state bbb"),
            "{why}"
        );
        assert!(
            why.contains("restore every node from the same file"),
            "{why}"
        );
        let replaced = answers(vec![
            (1, pending("aaa", "bbb")),
            (2, pending("aaa", "aaa")),
            (3, pending("aaa", "aaa")),
        ]);
        let why = judge(&replaced, None).unwrap_err().to_string();
        assert!(why.contains("node 1's state (digest bbb)"), "{why}");
        let silent = answers(vec![
            (1, pending("aaa", "aaa")),
            (2, pending("aaa", "aaa")),
            (3, Err("no answer".into())),
        ]);
        assert!(matches!(
            judge(&silent, None),
            Err(Refusal::Silent(why)) if why.contains("node 3: no answer")
        ));
        let stranger = answers(vec![
            (1, pending("aaa", "aaa")),
            (2, pending("aaa", "aaa")),
            (3, Ok(None)),
        ]);
        assert!(
            judge(&stranger, None)
                .unwrap_err()
                .to_string()
                .contains("node 3 from no backup")
        );
    }

    /// Without a pending restore nothing is asked of anyone: a silent voter
    /// does not hold a failover up, and a voter that has not applied the
    /// restored cluster's first activation yet merely lags.
    #[test]
    fn clusters_without_a_pending_restore_are_not_held_up() {
        let plain = answers(vec![(1, Ok(None)), (2, Ok(None)), (3, Err("down".into()))]);
        assert_eq!(judge(&plain, None), Ok(()));
        let lagging = answers(vec![
            (1, Ok(None)),
            (2, pending("aaa", "aaa")),
            (3, Ok(None)),
        ]);
        assert_eq!(judge(&lagging, Some(1_000_006)), Ok(()));
        assert!(judge(&lagging, Some(7)).is_err());
    }

    #[test]
    fn the_record_reads_back_and_is_pending_until_an_activation_in_its_term() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RestoredFrom::read(dir.path()), Ok(None));
        let backup = super::super::backup::sample(4, 9);
        let record = RestoredFrom::of(&backup, 1_000_004);
        record.write(dir.path()).unwrap();
        assert_eq!(RestoredFrom::read(dir.path()), Ok(Some(record.clone())));
        assert!(record.pending(&backup.state));
        assert!(
            record
                .backup()
                .starts_with(&format!("state {}", backup.state_digest))
        );
    }
}
