//! `raftlm cluster members|add-node|replace-node|remove-node|set-address`: the
//! cluster's membership, changed online through the active node
//! (administrator certificate).
//!
//! `add-node ID PEER_ADDRESS CLIENT_ADDRESS` adds a node started with
//! `raftlm server --join` as a learner, waits until it is within `--lag`
//! entries of the active node's log, printing its progress, then makes it a
//! voter. Every step reads the membership first, so the command is safe to
//! run again after it was interrupted or the active node changed: it
//! resumes a learner already added and completes a pending joint
//! configuration (openraft changes voters in two log entries, and a leader
//! lost between them leaves the first behind). `replace-node OLD NEW …` is
//! `add-node NEW …` whose last step swaps OLD for NEW in one change of the
//! voters, so the cluster never has an even number of voters on the way.
//! `set-address ID PEER_ADDRESS CLIENT_ADDRESS` moves a member, keeping its
//! id, through the log (`src/server/addresses.rs`).
//!
//! Taking out the active node (`remove-node` of it, or `replace-node` whose
//! OLD is it) first checks that the change could be made without it, then
//! has it hand over and stop as `raftlm down` does, waits for another node
//! to be active and makes the change through that one. Run again after an
//! interruption, the command finds the node stopped and no longer active,
//! and goes on.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cli::Failure;
use crate::cli::common::{CLIENT_LOG_DEFAULT, failure, init_logging, runtime};
use crate::client::{Client, DEFAULT_SERVER, ServerList};
use crate::license::formats::Advertisement;
use crate::proto::v1 as pb;

/// How far behind the active node's log a learner may be when it is made a
/// voter, by default: a few batches, caught up within a heartbeat or two.
pub const ADD_NODE_LAG_DEFAULT: u64 = 100;
/// How long `add-node` waits for the learner to catch up, by default.
pub const ADD_NODE_TIMEOUT_DEFAULT: &str = "5m";
/// How often `add-node` looks at the learner's progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How long `remove-node` and `replace-node` wait for another node to be
/// active after the active node they take out handed over: an election and
/// an activation take about a second; this leaves room for a slow machine.
pub const HANDOVER_WAIT_MAX: Duration = Duration::from_secs(30);

/// `raftlm cluster` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Lists the members: voters and learners, how far each has replicated, and a pending change.
    Members {
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
        server: ServerList,
    },
    /// Adds a node started with `raftlm server --join`: a learner first, a voter once caught up.
    AddNode {
        /// The new node's id (its config's node_id; ids are never reused).
        id: u64,
        #[command(flatten)]
        newcomer: Newcomer,
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
        server: ServerList,
    },
    /// Replaces voter OLD (gone or going) by a new node under a new id: learner, catch-up, then one change of the voters (an active OLD hands over and stops first).
    ReplaceNode {
        /// The voter to replace.
        old: u64,
        /// The new node's id (never an id used before).
        new: u64,
        #[command(flatten)]
        newcomer: Newcomer,
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
        server: ServerList,
    },
    /// Moves member ID to new addresses (its data directory moves with it, so it keeps its id).
    SetAddress {
        /// The member's id.
        id: u64,
        /// Its new peer-plane address, host:port.
        peer_address: String,
        /// Its new client-plane address, host:port.
        client_address: String,
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
        server: ServerList,
    },
    /// Removes a node (a learner, or a voter that may be gone for good; the active node hands over and stops first).
    RemoveNode {
        /// The node's id.
        id: u64,
        /// Allow leaving fewer than three voters.
        #[arg(long)]
        force: bool,
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
        server: ServerList,
    },
}

/// Where a new node is and how long to wait for it (`add-node`, `replace-node`).
#[derive(Debug, Clone, clap::Args)]
pub struct Newcomer {
    /// Its peer-plane address, host:port.
    pub peer_address: String,
    /// Its client-plane address, host:port.
    pub client_address: String,
    /// Made a voter once its log is within this many entries of the active node's.
    #[arg(long, default_value_t = ADD_NODE_LAG_DEFAULT)]
    pub lag: u64,
    /// How long to wait for it to catch up; the learner stays if it does not.
    #[arg(long, default_value = ADD_NODE_TIMEOUT_DEFAULT, value_parser = crate::text::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Runs one `raftlm cluster` command.
pub fn run(command: ClusterCommand) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    let server = match &command {
        ClusterCommand::Members { server }
        | ClusterCommand::AddNode { server, .. }
        | ClusterCommand::ReplaceNode { server, .. }
        | ClusterCommand::RemoveNode { server, .. }
        | ClusterCommand::SetAddress { server, .. } => server.clone(),
    };
    let client = crate::cli::env_client(server)?;
    runtime()?.block_on(async move {
        match command {
            ClusterCommand::Members { .. } => {
                let view = client.membership().await.map_err(failure)?;
                print!("{}", members_text(&view));
                Ok(())
            }
            ClusterCommand::AddNode { id, newcomer, .. } => {
                add_node(&client, id, &newcomer, None).await
            }
            ClusterCommand::ReplaceNode {
                old, new, newcomer, ..
            } => {
                let view = client.membership().await.map_err(failure)?;
                let new_is_voter = view.members.iter().any(|m| m.id == new && m.voter);
                if !new_is_voter && !view.members.iter().any(|m| m.id == old && m.voter) {
                    return Err(Failure::refused(format!(
                        "node {old} is not a voter (voters: {})",
                        ids(view.members.iter().filter(|m| m.voter).map(|m| m.id))
                    )));
                }
                add_node(&client, new, &newcomer, Some(old)).await
            }
            ClusterCommand::SetAddress {
                id,
                peer_address,
                client_address,
                ..
            } => {
                let reply = client
                    .set_address(id, &client_address, &peer_address)
                    .await
                    .map_err(failure)?;
                changed(&format!("node {id} moved"), &reply);
                Ok(())
            }
            ClusterCommand::RemoveNode { id, force, .. } => {
                let view = client.membership().await.map_err(failure)?;
                if !view.members.iter().any(|m| m.id == id) {
                    return Err(Failure::refused(format!(
                        "node {id} is not a member (members: {})",
                        ids(view.members.iter().map(|m| m.id))
                    )));
                }
                if view.node == id {
                    let wanted = voters_but(&view, id);
                    hand_over_first(&client, &view, id, &wanted, force).await?;
                }
                match client.remove_node(id, force).await {
                    Ok(reply) => {
                        changed(&format!("node {id} removed"), &reply);
                        Ok(())
                    }
                    // The client retries a call that got no answer in time;
                    // a retry of a removal that was made is refused as "not
                    // a member". It was one when this command began.
                    Err(error) => {
                        let now = client.membership().await.map_err(failure)?;
                        if now.members.iter().any(|m| m.id == id) || now.joint {
                            return Err(failure(error));
                        }
                        println!("node {id} removed");
                        print!("{}", members_text(&now));
                        Ok(())
                    }
                }
            }
        }
    })
}

/// The voters of `view` but `id`.
fn voters_but(view: &pb::MembershipReply, id: u64) -> BTreeSet<u64> {
    view.members
        .iter()
        .filter(|m| m.voter && m.id != id)
        .map(|m| m.id)
        .collect()
}

/// Node `id` is the active node and the change takes it out of the voters
/// (making them `wanted`): checks that the change could be made without it
/// (so that no node is stopped for a change the next active node would
/// refuse), has it hand over and stop as `raftlm down` does, and waits
/// until another node is active.
async fn hand_over_first(
    client: &Client,
    view: &pb::MembershipReply,
    id: u64,
    wanted: &BTreeSet<u64>,
    force: bool,
) -> Result<(), Failure> {
    crate::server::membership::check_voters(view, wanted, force)
        .map_err(|refusal| Failure::refused(refusal.to_string()))?;
    let Some(member) = view.members.iter().find(|m| m.id == id) else {
        return Err(Failure::refused(format!("node {id} is not a member")));
    };
    println!("node {id} is the active node: it hands over and stops first (as with raftlm down)");
    crate::cli::down::stop_node(id, &member.address).await?;
    let deadline = Instant::now() + HANDOVER_WAIT_MAX;
    loop {
        match client.membership().await {
            Ok(now) if now.node != id => {
                println!("node {} is active (term {})", now.node, now.term);
                return Ok(());
            }
            _ if Instant::now() >= deadline => {
                return Err(Failure::unreachable(format!(
                    "no other node became active within {HANDOVER_WAIT_MAX:?} of node {id}'s handover; run the command again once one is"
                )));
            }
            _ => tokio::time::sleep(PROGRESS_INTERVAL).await,
        }
    }
}

/// `add-node` (and `replace-node`, which swaps `replacing` for the new
/// node in the last step): every step reads the membership first, so a run
/// interrupted anywhere is finished by running it again.
async fn add_node(
    client: &Client,
    id: u64,
    newcomer: &Newcomer,
    replacing: Option<u64>,
) -> Result<(), Failure> {
    complete_pending(client).await?;
    let view = client.membership().await.map_err(failure)?;
    match view.members.iter().find(|m| m.id == id) {
        Some(member) if member.voter => {
            return finish_replacement(client, &view, id, replacing).await;
        }
        Some(_) => println!("node {id} is a learner already: waiting for it to catch up"),
        None => {
            let reply = client
                .add_learner(id, &newcomer.client_address, &newcomer.peer_address)
                .await
                .map_err(failure)?;
            for warning in &reply.warnings {
                println!("note: {warning}");
            }
            println!(
                "node {id} added as a learner at {} (peer {})",
                newcomer.client_address, newcomer.peer_address
            );
        }
    }
    let view = caught_up(client, id, newcomer).await?;
    if let Some(old) = replacing
        && old == view.node
    {
        let mut wanted = voters_but(&view, old);
        wanted.insert(id);
        hand_over_first(client, &view, old, &wanted, false).await?;
    }
    let mut wanted: Vec<u64> = view
        .members
        .iter()
        .filter(|m| m.voter && Some(m.id) != replacing)
        .map(|m| m.id)
        .collect();
    wanted.push(id);
    let reply = client
        .change_voters(&wanted, false)
        .await
        .map_err(failure)?;
    let done = match replacing {
        Some(old) => format!("node {id} is a voter in place of node {old}"),
        None => format!("node {id} is a voter"),
    };
    changed(&done, &reply);
    Ok(())
}

/// Completes a change of the voters an earlier run left half done.
async fn complete_pending(client: &Client) -> Result<(), Failure> {
    let view = client.membership().await.map_err(failure)?;
    if !view.joint {
        return Ok(());
    }
    println!(
        "a change of the voters from {} to {} is pending: completing it",
        ids(view.voters_old.iter().copied()),
        ids(view.voters_new.iter().copied())
    );
    let reply = client
        .change_voters(&view.voters_new, false)
        .await
        .map_err(failure)?;
    changed("pending change completed", &reply);
    Ok(())
}

/// Node `id` is a voter already: a replacement interrupted after the swap
/// removes the old voter if it is still a member.
async fn finish_replacement(
    client: &Client,
    view: &pb::MembershipReply,
    id: u64,
    replacing: Option<u64>,
) -> Result<(), Failure> {
    match replacing {
        Some(old) if view.members.iter().any(|m| m.id == old) => {
            if view.node == old {
                hand_over_first(client, view, old, &voters_but(view, old), false).await?;
            }
            let reply = client.remove_node(old, false).await.map_err(failure)?;
            changed(&format!("node {old} removed; node {id} is a voter"), &reply);
        }
        _ => println!("node {id} is a voter already"),
    }
    Ok(())
}

/// Waits until learner `id` is within `--lag` entries, printing its
/// progress; the membership then.
async fn caught_up(
    client: &Client,
    id: u64,
    newcomer: &Newcomer,
) -> Result<pb::MembershipReply, Failure> {
    let deadline = Instant::now() + newcomer.timeout;
    let mut shown = None;
    loop {
        let view = client.membership().await.map_err(failure)?;
        let Some(member) = view.members.iter().find(|m| m.id == id) else {
            return Err(Failure::refused(format!(
                "node {id} is no longer a member: another administrator removed it"
            )));
        };
        let progress = (member.matched_index, member.lag);
        if shown != Some(progress) {
            println!(
                "node {id}: holds the log up to {} of {} ({} behind){}",
                member.matched_index,
                view.last_log_index,
                member.lag,
                if member.reachable {
                    ""
                } else {
                    ", not answering"
                }
            );
            shown = Some(progress);
        }
        let write = u8::try_from(view.write_format).unwrap_or(u8::MAX);
        if let Some(said) = advertisement(member)
            && !said.reads(write)
        {
            return Err(Failure::refused(format!(
                "node {id} ({said}) does not read format {write}, which the cluster writes: it cannot follow the log. Start it with a release that reads format {write}, or raftlm cluster remove-node {id}"
            )));
        }
        if member.matched_index > 0 && member.lag <= newcomer.lag {
            return Ok(view);
        }
        if Instant::now() >= deadline {
            return Err(Failure::refused(format!(
                "node {id} did not catch up within {:?} (it holds the log up to {} of {}); it stays a learner: run this command again to wait longer, or raftlm cluster remove-node {id}",
                newcomer.timeout, member.matched_index, view.last_log_index
            )));
        }
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

fn changed(what: &str, reply: &pb::MembershipChangeReply) {
    println!("{what}");
    for warning in &reply.warnings {
        println!("note: {warning}");
    }
    if let Some(view) = &reply.membership {
        print!("{}", members_text(view));
    }
}

fn ids(ids: impl Iterator<Item = u64>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// What a member said it reads, if the active node knows.
pub fn advertisement(m: &pb::MemberStatus) -> Option<Advertisement> {
    release(&m.version, m.reads_formats_min, m.reads_formats_max)
}

/// A release and the formats it reads, from a reply's fields (`None`: unknown).
pub fn release(version: &str, min: u32, max: u32) -> Option<Advertisement> {
    let format = |n: u32| u8::try_from(n).ok().filter(|n| *n > 0);
    Some(Advertisement {
        version: version.to_string(),
        reads_min: format(min)?,
        reads_max: format(max)?,
    })
}

/// The membership as `raftlm cluster members` prints it.
pub fn members_text(view: &pb::MembershipReply) -> String {
    let mut text = format!(
        "members (term {}, active node {}, last log index {}, write format {}):\n",
        view.term, view.node, view.last_log_index, view.write_format
    );
    for m in &view.members {
        text.push_str(&format!(
            "  node {}  {}  {} (peer {})  log up to {} ({} behind){}{}\n",
            m.id,
            if m.voter { "voter  " } else { "learner" },
            m.address,
            m.peer_address,
            m.matched_index,
            m.lag,
            if m.reachable { "" } else { "  not answering" },
            advertisement(m).map_or(String::new(), |said| format!("  {said}"))
        ));
    }
    if view.joint {
        text.push_str(&format!(
            "  pending: the voters change from {} to {} (raftlm cluster add-node or remove-node again completes it)\n",
            ids(view.voters_old.iter().copied()),
            ids(view.voters_new.iter().copied())
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_show_voters_learners_lag_and_a_pending_change() {
        let member = |id: u64, voter: bool, lag: u64, reachable: bool| pb::MemberStatus {
            id,
            address: format!("10.0.0.{id}:27000"),
            peer_address: format!("10.0.0.{id}:27100"),
            voter,
            matched_index: 40 - lag,
            lag,
            reachable,
            ..Default::default()
        };
        let view = pb::MembershipReply {
            term: 7,
            node: 1,
            last_log_index: 40,
            members: vec![
                member(1, true, 0, true),
                member(2, true, 0, false),
                member(4, false, 25, true),
            ],
            joint: true,
            voters_old: vec![1, 2, 3],
            voters_new: vec![1, 2, 4],
            write_format: 7,
        };
        let text = members_text(&view);
        assert!(
            text.starts_with("members (term 7, active node 1, last log index 40, write format 7):"),
            "{text}"
        );
        assert!(text.contains("node 2  voter    10.0.0.2:27000 (peer 10.0.0.2:27100)  log up to 40 (0 behind)  not answering"), "{text}");
        assert!(
            text.contains(
                "node 4  learner  10.0.0.4:27000 (peer 10.0.0.4:27100)  log up to 15 (25 behind)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("pending: the voters change from 1, 2, 3 to 1, 2, 4"),
            "{text}"
        );
    }
}
