//! `raftlm cluster members|add-node|remove-node`: the cluster's membership,
//! changed online through the active node (administrator certificate).
//!
//! `add-node ID PEER_ADDRESS CLIENT_ADDRESS` adds a node started with
//! `raftlm server --join` as a learner, waits until it is within `--lag`
//! entries of the active node's log, printing its progress, then makes it a
//! voter. Every step reads the membership first, so the command is safe to
//! run again after it was interrupted or the active node changed: it
//! resumes a learner already added and completes a pending joint
//! configuration (openraft changes voters in two log entries, and a leader
//! lost between them leaves the first behind).

use std::time::{Duration, Instant};

use crate::cli::Failure;
use crate::cli::common::{CLIENT_LOG_DEFAULT, failure, init_logging, runtime};
use crate::client::{Client, DEFAULT_SERVER, ServerList};
use crate::proto::v1 as pb;

/// How far behind the active node's log a learner may be when it is made a
/// voter, by default: a few batches, caught up within a heartbeat or two.
pub const ADD_NODE_LAG_DEFAULT: u64 = 100;
/// How long `add-node` waits for the learner to catch up, by default.
pub const ADD_NODE_TIMEOUT_DEFAULT: &str = "5m";
/// How often `add-node` looks at the learner's progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

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
        /// Its peer-plane address, host:port.
        peer_address: String,
        /// Its client-plane address, host:port.
        client_address: String,
        /// Made a voter once its log is within this many entries of the active node's.
        #[arg(long, default_value_t = ADD_NODE_LAG_DEFAULT)]
        lag: u64,
        /// How long to wait for it to catch up; the learner stays if it does not.
        #[arg(long, default_value = ADD_NODE_TIMEOUT_DEFAULT, value_parser = crate::text::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
        server: ServerList,
    },
    /// Removes a node (a learner, or a voter that may be gone for good).
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

/// Runs one `raftlm cluster` command.
pub fn run(command: ClusterCommand) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    let server = match &command {
        ClusterCommand::Members { server }
        | ClusterCommand::AddNode { server, .. }
        | ClusterCommand::RemoveNode { server, .. } => server.clone(),
    };
    let client = crate::cli::env_client(server)?;
    runtime()?.block_on(async move {
        match command {
            ClusterCommand::Members { .. } => {
                let view = client.membership().await.map_err(failure)?;
                print!("{}", members_text(&view));
                Ok(())
            }
            ClusterCommand::AddNode {
                id,
                peer_address,
                client_address,
                lag,
                timeout,
                ..
            } => {
                let adding = Adding {
                    id,
                    peer_address,
                    client_address,
                    lag,
                    timeout,
                };
                add_node(&client, &adding).await
            }
            ClusterCommand::RemoveNode { id, force, .. } => {
                let view = client.membership().await.map_err(failure)?;
                if !view.members.iter().any(|m| m.id == id) {
                    return Err(Failure::refused(format!(
                        "node {id} is not a member (members: {})",
                        ids(view.members.iter().map(|m| m.id))
                    )));
                }
                let reply = client.remove_node(id, force).await.map_err(failure)?;
                changed(&format!("node {id} removed"), &reply);
                Ok(())
            }
        }
    })
}

/// What `add-node` was asked.
struct Adding {
    id: u64,
    peer_address: String,
    client_address: String,
    lag: u64,
    timeout: Duration,
}

async fn add_node(client: &Client, adding: &Adding) -> Result<(), Failure> {
    let id = adding.id;
    let view = client.membership().await.map_err(failure)?;
    let voters = |view: &pb::MembershipReply| -> Vec<u64> {
        view.members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect()
    };
    if view.joint {
        // An interrupted change: complete it first, whatever it was.
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
    }
    let view = client.membership().await.map_err(failure)?;
    match view.members.iter().find(|m| m.id == id) {
        Some(member) if member.voter => {
            println!("node {id} is a voter already");
            return Ok(());
        }
        Some(_) => println!("node {id} is a learner already: waiting for it to catch up"),
        None => {
            let reply = client
                .add_learner(id, &adding.client_address, &adding.peer_address)
                .await
                .map_err(failure)?;
            for warning in &reply.warnings {
                println!("note: {warning}");
            }
            println!(
                "node {id} added as a learner at {} (peer {})",
                adding.client_address, adding.peer_address
            );
        }
    }
    let deadline = Instant::now() + adding.timeout;
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
        if member.matched_index > 0 && member.lag <= adding.lag {
            let mut wanted = voters(&view);
            wanted.push(id);
            let reply = client
                .change_voters(&wanted, false)
                .await
                .map_err(failure)?;
            changed(&format!("node {id} is a voter"), &reply);
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::refused(format!(
                "node {id} did not catch up within {:?} (it holds the log up to {} of {}); it stays a learner: run this command again to wait longer, or raftlm cluster remove-node {id}",
                adding.timeout, member.matched_index, view.last_log_index
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

/// The membership as `raftlm cluster members` prints it.
pub fn members_text(view: &pb::MembershipReply) -> String {
    let mut text = format!(
        "members (term {}, active node {}, last log index {}):\n",
        view.term, view.node, view.last_log_index
    );
    for m in &view.members {
        text.push_str(&format!(
            "  node {}  {}  {} (peer {})  log up to {} ({} behind){}\n",
            m.id,
            if m.voter { "voter  " } else { "learner" },
            m.address,
            m.peer_address,
            m.matched_index,
            m.lag,
            if m.reachable { "" } else { "  not answering" }
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
