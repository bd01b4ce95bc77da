//! Nodes of a local cluster run in this process ([`Node::start_with_listeners`]),
//! as the integration tests run them: [`bind`] takes listeners on
//! `127.0.0.1:0` first, so the nodes' addresses are known before their
//! configs are made (with [`Plan`](crate::local::files::Plan) and
//! [`nodes_at`](crate::local::files::nodes_at)); [`InProcess`] starts one
//! node per config on them, stops one, and starts it again on the same
//! addresses ([`start_again`]).

use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::node::{Node, NodeError};
use crate::raft::store::StoreError;

/// How long a stopped node's address may take to be free again (the old
/// listener may take a moment to close on a loaded machine).
pub const REBIND_MAX: Duration = Duration::from_secs(10);

/// How long a restarted node waits for its store to be released: an
/// in-process node's last tasks may hold it for a moment after
/// [`Node::shutdown`] returns on a loaded machine (a process releases it
/// when it exits).
pub const STORE_LOCKED_MAX: Duration = Duration::from_secs(30);

/// How often a rebind or a start on a locked store is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Listeners on `127.0.0.1:0` for the client and peer planes of `n` nodes.
#[derive(Debug)]
pub struct Bound {
    /// (client, peer) listeners of node `i + 1` at index `i`.
    pub listeners: Vec<(TcpListener, TcpListener)>,
    /// Client-plane addresses.
    pub addresses: Vec<String>,
    /// Peer-plane addresses.
    pub peer_addresses: Vec<String>,
}

/// Binds the client and peer listeners of `n` nodes on `127.0.0.1:0`.
pub async fn bind(n: usize) -> std::io::Result<Bound> {
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        listeners.push((
            TcpListener::bind("127.0.0.1:0").await?,
            TcpListener::bind("127.0.0.1:0").await?,
        ));
    }
    let address = |l: &TcpListener| l.local_addr().map(|a| a.to_string());
    let mut addresses = Vec::with_capacity(n);
    let mut peer_addresses = Vec::with_capacity(n);
    for (client, peer) in &listeners {
        addresses.push(address(client)?);
        peer_addresses.push(address(peer)?);
    }
    Ok(Bound {
        listeners,
        addresses,
        peer_addresses,
    })
}

/// Binds `address` again after a node on it stopped, trying for up to [`REBIND_MAX`].
pub async fn rebind(address: &str) -> std::io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + REBIND_MAX;
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(RETRY_EVERY).await,
        }
    }
}

/// Starts a stopped node again on its addresses (from its config); a store
/// still locked is retried for up to [`STORE_LOCKED_MAX`], any other error
/// is returned.
pub async fn start_again(config: &Config) -> Result<Node, NodeError> {
    let deadline = tokio::time::Instant::now() + STORE_LOCKED_MAX;
    let bind_error = |error: std::io::Error, address: &str| NodeError::Bind {
        address: address.to_string(),
        source: error,
    };
    loop {
        let client = rebind(config.own_address())
            .await
            .map_err(|e| bind_error(e, config.own_address()))?;
        let peer = rebind(config.own_peer_address())
            .await
            .map_err(|e| bind_error(e, config.own_peer_address()))?;
        match Node::start_with_listeners(config.clone(), client, peer).await {
            Err(NodeError::Store(StoreError::Locked { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(RETRY_EVERY).await;
            }
            other => return other,
        }
    }
}

/// Starts one node per config on the listeners of `bound` (in order): node
/// `i + 1` at index `i`, `Some` while it runs.
pub async fn start_nodes(configs: &[Config], bound: Bound) -> Result<Vec<Option<Node>>, NodeError> {
    let mut nodes = Vec::with_capacity(configs.len());
    for (config, (client, peer)) in configs.iter().zip(bound.listeners) {
        nodes.push(Some(
            Node::start_with_listeners(config.clone(), client, peer).await?,
        ));
    }
    Ok(nodes)
}

/// Nodes running in this process, one per config (node `i + 1` at index `i`).
pub struct InProcess {
    /// Each node's config (tune one with [`config_mut`](Self::config_mut)
    /// before it starts again).
    configs: Vec<Config>,
    nodes: Vec<Option<Node>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("nodes", &self.addresses())
            .field(
                "running",
                &self.nodes.iter().map(Option::is_some).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl InProcess {
    /// Starts one node per config on the listeners of `bound` (in order).
    pub async fn start(configs: Vec<Config>, bound: Bound) -> Result<InProcess, NodeError> {
        let nodes = start_nodes(&configs, bound).await?;
        Ok(InProcess { configs, nodes })
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`, if it runs.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref()
    }

    /// Node `i`'s config.
    pub fn config(&self, i: usize) -> &Config {
        &self.configs[i]
    }

    /// Node `i`'s config, to change before it starts again.
    pub fn config_mut(&mut self, i: usize) -> &mut Config {
        &mut self.configs[i]
    }

    /// The client-plane addresses.
    pub fn addresses(&self) -> Vec<String> {
        self.configs
            .iter()
            .map(|c| c.own_address().to_string())
            .collect()
    }

    /// The client-plane addresses of the running nodes (`None`: stopped).
    pub fn running_addresses(&self) -> Vec<Option<String>> {
        self.configs
            .iter()
            .zip(&self.nodes)
            .map(|(c, n)| n.as_ref().map(|_| c.own_address().to_string()))
            .collect()
    }

    /// Takes node `i` out (the caller shuts it down or drops it).
    pub fn take(&mut self, i: usize) -> Option<Node> {
        self.nodes[i].take()
    }

    /// Shuts node `i` down, if it runs.
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
    }

    /// Starts node `i` again on its addresses ([`start_again`]); a no-op if it runs.
    pub async fn restart(&mut self, i: usize) -> Result<(), NodeError> {
        if self.nodes[i].is_none() {
            self.nodes[i] = Some(start_again(&self.configs[i]).await?);
        }
        Ok(())
    }

    /// Shuts every running node down.
    pub async fn shutdown(mut self) {
        for i in 0..self.len() {
            self.stop(i).await;
        }
    }
}
