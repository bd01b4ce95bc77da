//! Membership changes on the active node (`raftlm cluster …`): who the
//! members are and how far each has replicated, adding a learner, changing
//! the voters, removing a node.
//!
//! openraft 0.9.25 changes voters through a joint configuration (two log
//! entries) and does not check that a learner has caught up; a leader lost
//! between the two entries leaves the joint configuration behind. So every
//! change here is checked first, against the applied membership and what
//! the active node knows of each member, and refused without touching the
//! log when it cannot be safe:
//! - a different change while a joint configuration is pending (asking for
//!   the pending one again completes it);
//! - new voters that are not members yet (add them as learners first);
//! - fewer than [`VOTERS_MIN`] voters, unless forced;
//! - a new voter set of which no majority is reachable (answered within
//!   [`REACHABLE_WITHIN_HEARTBEATS`] heartbeats), counting this node. The
//!   check cannot see the future: a voter that dies right after it leaves
//!   the change uncommitted until it or another voter comes back, which
//!   `raftlm cluster members` shows as pending;
//! - removing the active node: it must hand over first, which `raftlm
//!   cluster remove-node` and `replace-node` do (the node stops after its
//!   handover, as with `raftlm down`) before they ask the new active node;
//! - an address another member uses, or an id that left the cluster before.
//!
//! openraft's `SetNodes`, which it documents as able to split the brain, is
//! never used. Every change is first committed as a record (its author,
//! what was asked, the ids it retires: never members again), listed among
//! the administrators' actions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::ChangeMembers;
use tracing::info;

use crate::license::state::{Command, Outcome};
use crate::proto::v1 as pb;
use crate::raft::Member;
use crate::server::{ServiceError, Shared};

/// Fewest voters a change may leave without `force`: three tolerate one
/// failure; two tolerate none, and a single voter is no cluster.
pub const VOTERS_MIN: usize = 3;
/// A member counts as reachable when it answered a Raft RPC of the active
/// node within this many heartbeats (`timing.heartbeat_ms`: the activator's
/// quorum rounds reach every voter that often): a few, so one slow answer
/// does not count against it, and few, because a change whose new voters
/// have no majority alive cannot commit and leaves the cluster without a
/// quorum until they come back.
pub const REACHABLE_WITHIN_HEARTBEATS: u64 = 6;

/// The applied membership and what the active node knows of each member.
pub fn view(shared: &Shared) -> Result<pb::MembershipReply, ServiceError> {
    let term = shared.serving()?;
    let metrics = shared.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let replication = metrics.replication.clone().unwrap_or_default();
    let formats = super::formats::view(shared);
    let members = membership
        .nodes()
        .map(|(id, member)| {
            let own = *id == shared.node_id;
            let matched = if own {
                last
            } else {
                replication
                    .get(id)
                    .and_then(|m| m.as_ref())
                    .map_or(0, |l| l.index)
            };
            let moved = shared.moved_address(*id);
            let said = formats.get(id).cloned().flatten();
            pb::MemberStatus {
                id: *id,
                address: moved
                    .as_ref()
                    .map_or_else(|| member.address.clone(), |m| m.address.clone()),
                peer_address: moved.map_or_else(|| member.peer_address.clone(), |m| m.peer_address),
                version: said.as_ref().map(|a| a.version.clone()).unwrap_or_default(),
                reads_formats_min: said.as_ref().map_or(0, |a| u32::from(a.reads_min)),
                reads_formats_max: said.as_ref().map_or(0, |a| u32::from(a.reads_max)),
                voter: voters.contains(id),
                matched_index: matched,
                lag: last.saturating_sub(matched),
                reachable: own || reachable(shared, *id),
            }
        })
        .collect();
    let configs = membership.get_joint_config();
    let joint = configs.len() > 1;
    let ids = |i: usize| -> Vec<u64> {
        configs
            .get(i)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default()
    };
    Ok(pb::MembershipReply {
        term,
        node: shared.node_id,
        last_log_index: last,
        members,
        joint,
        voters_old: if joint { ids(0) } else { Vec::new() },
        voters_new: if joint { ids(1) } else { Vec::new() },
        write_format: u32::from(shared.state.read(|state| state.formats().write)),
    })
}

fn reachable(shared: &Shared, id: u64) -> bool {
    let within = std::time::Duration::from_millis(
        shared.config.timing.heartbeat_ms * REACHABLE_WITHIN_HEARTBEATS,
    );
    shared
        .network
        .last_contact(id)
        .is_some_and(|at| at.elapsed() <= within)
}

fn list(ids: &BTreeSet<u64>) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds node `id` as a learner at `member`'s addresses.
pub async fn add_learner(
    shared: &Shared,
    id: u64,
    member: Member,
    author: &str,
) -> Result<Vec<String>, ServiceError> {
    let view = view(shared)?;
    crate::server::error::check_text("address", &member.address)?;
    crate::server::error::check_text("peer address", &member.peer_address)?;
    if id == 0 {
        return Err(ServiceError::InvalidArgument("node ids start at 1".into()));
    }
    if shared.state.read(|s| s.retired_nodes().contains(&id)) {
        return Err(ServiceError::Refused(format!(
            "node id {id} left this cluster before, and ids are never used again (its certificate would speak for it): give the new node a new id"
        )));
    }
    if let Some(existing) = view.members.iter().find(|m| m.id == id) {
        if existing.voter {
            return Err(ServiceError::Refused(format!(
                "node {id} is a voter already"
            )));
        }
        if existing.address == member.address && existing.peer_address == member.peer_address {
            return Ok(vec![format!("node {id} is a learner already")]);
        }
        return Err(ServiceError::Refused(format!(
            "node {id} is a learner at {} (peer {}) already; remove it first to add it elsewhere",
            existing.address, existing.peer_address
        )));
    }
    if let Some(other) = view.members.iter().find(|m| {
        m.address == member.address
            || m.peer_address == member.peer_address
            || m.address == member.peer_address
            || m.peer_address == member.address
    }) {
        return Err(ServiceError::Refused(format!(
            "node {} uses that address already ({}, peer {})",
            other.id, other.address, other.peer_address
        )));
    }
    info!(%author, node = id, %member, "adding a learner");
    record(
        shared,
        format!(
            "add node {id} (learner) at {} (peer {})",
            member.address, member.peer_address
        ),
        Vec::new(),
        author,
    )
    .await?;
    shared
        .raft
        .add_learner(id, member, false)
        .await
        .map_err(|e| refusal_of(shared, e))?;
    Ok(Vec::new())
}

/// Makes `wanted` the voters (see the module docs for what is refused).
pub async fn change_voters(
    shared: &Shared,
    wanted: BTreeSet<u64>,
    force: bool,
    author: &str,
) -> Result<Vec<String>, ServiceError> {
    let view = view(shared)?;
    let voters: BTreeSet<u64> = view
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    if !view.joint && wanted == voters {
        return Ok(vec![format!("the voters are {} already", list(&voters))]);
    }
    check_change(&view, shared.node_id, &wanted, force)?;
    let mut warnings = Vec::new();
    if wanted.len().is_multiple_of(2) {
        let tolerated = (wanted.len() - 1) / 2;
        warnings.push(format!(
            "{} voters tolerate {tolerated} failure{}, as {} do: an odd number is better",
            wanted.len(),
            if tolerated == 1 { "" } else { "s" },
            wanted.len() - 1
        ));
    }
    info!(%author, from = %list(&voters), to = %list(&wanted), "changing the voters");
    record(
        shared,
        format!("voters {} → {}", list(&voters), list(&wanted)),
        voters.difference(&wanted).copied().collect(),
        author,
    )
    .await?;
    shared
        .raft
        .change_membership(ChangeMembers::ReplaceAllVoters(wanted), false)
        .await
        .map_err(|e| refusal_of(shared, e))?;
    Ok(warnings)
}

/// Why making `wanted` the voters cannot be safe now, if it cannot (see
/// the module docs); `active` is this node.
fn check_change(
    view: &pb::MembershipReply,
    active: u64,
    wanted: &BTreeSet<u64>,
    force: bool,
) -> Result<(), ServiceError> {
    check_voters(view, wanted, force)?;
    if !wanted.contains(&active) {
        return Err(ServiceError::Refused(format!(
            "node {active} is the active node: it must hand over first (raftlm cluster remove-node and replace-node do, as raftlm down does); run the command again"
        )));
    }
    Ok(())
}

/// The checks of a change of the voters but for the rule on the active
/// node (the active node itself refuses to be left out): whether the
/// change could be made once the active node has handed over. The
/// administrator's command asks this of the membership it read before it
/// stops the active node, so that it does not stop a node for a change the
/// new active node would refuse.
pub fn check_voters(
    view: &pb::MembershipReply,
    wanted: &BTreeSet<u64>,
    force: bool,
) -> Result<(), ServiceError> {
    let refuse = |why: String| Err(ServiceError::Refused(why));
    let members: BTreeMap<u64, &pb::MemberStatus> =
        view.members.iter().map(|m| (m.id, m)).collect();
    let pending: BTreeSet<u64> = view.voters_new.iter().copied().collect();
    if view.joint && pending != *wanted {
        return refuse(format!(
            "a change of the voters from {} to {} is pending: ask for it again (voters {}) to complete it first",
            list(&view.voters_old.iter().copied().collect()),
            list(&pending),
            list(&pending)
        ));
    }
    if let Some(stranger) = wanted.iter().find(|id| !members.contains_key(id)) {
        return refuse(format!(
            "node {stranger} is not a member: add it as a learner first (raftlm cluster add-node)"
        ));
    }
    if wanted.len() < VOTERS_MIN && !force {
        return refuse(format!(
            "the change leaves {} voter{} ({}); fewer than {VOTERS_MIN} tolerate no failure: add --force to do it anyway",
            wanted.len(),
            if wanted.len() == 1 { "" } else { "s" },
            list(wanted)
        ));
    }
    let reachable: BTreeSet<u64> = wanted
        .iter()
        .copied()
        .filter(|id| members.get(id).is_some_and(|m| m.reachable))
        .collect();
    if reachable.len() <= wanted.len() / 2 {
        return refuse(format!(
            "the new voters {} would have {} of {} reachable ({}): a change needs a majority of them answering",
            list(wanted),
            reachable.len(),
            wanted.len(),
            list(&reachable)
        ));
    }
    Ok(())
}

/// Removes node `id`: a learner leaves at once, a voter through a change of
/// the voters without it.
pub async fn remove_node(
    shared: &Shared,
    id: u64,
    force: bool,
    author: &str,
) -> Result<Vec<String>, ServiceError> {
    let view = view(shared)?;
    let Some(member) = view.members.iter().find(|m| m.id == id) else {
        return Err(ServiceError::Refused(format!("node {id} is not a member")));
    };
    if member.voter {
        let wanted: BTreeSet<u64> = view
            .members
            .iter()
            .filter(|m| m.voter && m.id != id)
            .map(|m| m.id)
            .collect();
        return change_voters(shared, wanted, force, author).await;
    }
    if view.joint {
        return Err(ServiceError::Refused(format!(
            "a change of the voters to {} is pending: complete it first (raftlm cluster add-node or remove-node again)",
            list(&view.voters_new.iter().copied().collect())
        )));
    }
    info!(%author, node = id, "removing a learner");
    record(
        shared,
        format!("remove node {id} (learner)"),
        vec![id],
        author,
    )
    .await?;
    shared
        .raft
        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
        .await
        .map_err(|e| refusal_of(shared, e))?;
    Ok(Vec::new())
}

/// Commits the record of a change (among the administrators' actions, with
/// the ids it retires) before the change itself: an id is retired even if
/// the change then fails, which only errs on the side of never reusing it.
async fn record(
    shared: &Shared,
    action: String,
    retire: Vec<u64>,
    author: &str,
) -> Result<(), ServiceError> {
    let command = Command::RecordMembership {
        action,
        retire,
        author: author.to_string(),
    };
    let (outcome, _) = shared.propose(command).await?;
    match outcome {
        Outcome::MembershipRecorded { .. } => Ok(()),
        other => Err(ServiceError::Refused(format!(
            "the membership change was not recorded: {other:?}"
        ))),
    }
}

/// openraft's answer to a membership change, as a service error: not the
/// leader any more sends the client on, anything else is refused with
/// openraft's reason.
fn refusal_of(
    shared: &Shared,
    error: openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, Member>>,
) -> ServiceError {
    match error.forward_to_leader() {
        Some(forward) => ServiceError::NotActive {
            node: shared.node_id,
            leader: forward
                .leader_id
                .zip(forward.leader_node.as_ref())
                .map(|(id, member)| (id, shared.client_address(id, member))),
        },
        None => ServiceError::Refused(format!("the membership change failed: {error}")),
    }
}

/// Keeps what follows the membership in step with the applied membership
/// (voters and learners): the ids the peer plane admits and the voters whose
/// clocks this node's must agree with. Logs each change.
pub async fn follow(
    shared: Arc<Shared>,
    members: crate::tls::acceptor::MemberIds,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut metrics = shared.raft.metrics();
    // Metrics change on every append; the membership only with its own log
    // entry, so the sets are rebuilt only when that entry's id moves.
    let mut seen: Option<Option<crate::raft::LogId>> = None;
    tokio::pin!(stop);
    loop {
        let changed = {
            let m = metrics.borrow_and_update();
            let at = *m.membership_config.log_id();
            (seen != Some(at)).then(|| {
                seen = Some(at);
                let membership = m.membership_config.membership();
                let ids: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
                let voters: Vec<u64> = membership.voter_ids().collect();
                (ids, voters)
            })
        };
        // An uninitialized node (joining) has no membership yet: keep
        // admitting the cluster's nodes until it is added.
        if let Some((ids, voters)) = changed
            && !ids.is_empty()
        {
            if members.set(ids.iter().copied()) {
                info!(members = ?ids, ?voters, "membership applied: the peer plane admits these nodes");
            }
            shared.clock.set_voters(voters);
        }
        tokio::select! {
            _ = &mut stop => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, voter: bool, reachable: bool) -> pb::MemberStatus {
        pb::MemberStatus {
            id,
            address: format!("127.0.0.1:{}", 27000 + id),
            peer_address: format!("127.0.0.1:{}", 27100 + id),
            voter,
            matched_index: 10,
            lag: 0,
            reachable,
            ..Default::default()
        }
    }

    fn view(members: Vec<pb::MemberStatus>) -> pb::MembershipReply {
        pb::MembershipReply {
            term: 3,
            node: 1,
            last_log_index: 10,
            members,
            ..Default::default()
        }
    }

    fn refusal(view: &pb::MembershipReply, wanted: &[u64], force: bool) -> String {
        let wanted: BTreeSet<u64> = wanted.iter().copied().collect();
        match check_change(view, 1, &wanted, force) {
            Ok(()) => String::new(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_change_is_refused_when_it_cannot_be_safe() {
        let five = view((1..=5).map(|id| member(id, true, id <= 3)).collect());
        // Nodes 4 and 5 are silent: removing 2 leaves 1, 3 of 1, 3, 4, 5.
        assert!(
            refusal(&five, &[1, 3, 4, 5], false).contains("2 of 4 reachable (1, 3)"),
            "{}",
            refusal(&five, &[1, 3, 4, 5], false)
        );
        // Removing a silent one keeps a majority answering.
        assert_eq!(refusal(&five, &[1, 2, 3, 4], false), "");
        assert!(refusal(&five, &[1, 2, 3, 6], false).contains("node 6 is not a member"));
        assert!(refusal(&five, &[2, 3, 4], false).contains("node 1 is the active node"));
        // Once node 1 has handed over, the same change may be made.
        assert!(check_voters(&five, &BTreeSet::from([2, 3, 4]), false).is_ok());
        let three = view((1..=3).map(|id| member(id, true, true)).collect());
        assert!(refusal(&three, &[1, 2], false).contains("--force"));
        assert_eq!(refusal(&three, &[1, 2], true), "");
    }

    #[test]
    fn only_the_pending_change_may_go_on() {
        let mut joint = view((1..=4).map(|id| member(id, true, true)).collect());
        joint.joint = true;
        joint.voters_old = vec![1, 2, 3];
        joint.voters_new = vec![1, 2, 3, 4];
        assert_eq!(refusal(&joint, &[1, 2, 3, 4], false), "");
        assert!(
            refusal(&joint, &[1, 2, 4], false).contains("is pending"),
            "{}",
            refusal(&joint, &[1, 2, 4], false)
        );
    }
}
