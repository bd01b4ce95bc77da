//! `raftlm down [--node ID] [--server S]`: stops one node gracefully
//! (FlexNet's `lmdown`, for one node). Without `--node` it stops the active
//! node, which hands over to the most up-to-date voter first (service
//! pauses for tens of milliseconds); with `--node ID` it stops that node,
//! reached at its own address as `raftlm status` lists it. Needs an
//! administrator certificate (`RAFTLM_CERT`, `RAFTLM_KEY`). A node started by
//! a service manager that restarts it on exit comes back; stop the service
//! instead to keep it down.

use crate::cli::Failure;
use crate::cli::common::{CLIENT_LOG_DEFAULT, failure, init_logging, runtime};
use crate::client::{DEFAULT_SERVER, ServerList};

/// `raftlm down`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The node to stop (default: the active node).
    #[arg(long, value_name = "ID")]
    pub node: Option<u64>,
    /// The access point or node list: host:port or port@host, comma-separated.
    #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
    pub server: ServerList,
}

/// Runs `raftlm down`.
pub fn run(args: Args) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    runtime()?.block_on(async move {
        let client = crate::cli::env_client(args.server.clone())?;
        let stopped = match args.node {
            None => client.shutdown(0).await.map_err(failure)?,
            Some(id) => {
                let status = client.status().await.map_err(failure)?;
                let Some(node) = status.nodes.iter().find(|n| n.id == id) else {
                    return Err(Failure::usage(format!(
                        "the cluster has no node {id} (its nodes: {})",
                        status
                            .nodes
                            .iter()
                            .map(|n| n.id.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                stop_node(id, &node.address).await?
            }
        };
        println!("node {stopped} is stopping (an active node hands over first)");
        Ok(())
    })
}

/// Asks node `id`, at its own `address`, to stop: an active node hands
/// over to the most up-to-date voter first. Returns the id of the node
/// that is stopping. `raftlm cluster remove-node` and `replace-node` use it
/// to move the service off a node they take out.
pub async fn stop_node(id: u64, address: &str) -> Result<u64, Failure> {
    let list: ServerList = address
        .parse()
        .map_err(|e| Failure::usage(format!("node {id}'s address: {e}")))?;
    let direct = crate::cli::env_client(list)?;
    direct.shutdown(id).await.map_err(failure)
}
