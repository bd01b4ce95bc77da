//! [`Shared`]: what every service and background task of one node holds —
//! the Raft node, the state, the batcher, the session tracker, the lease —
//! and the checks every request makes with it (does this node serve, does it
//! still serve just before the reply).

use std::sync::Arc;

use crate::config::Config;
use crate::lease::Lease;
use crate::license::signature::VendorPublicKey;
use crate::raft::Raft;
use crate::raft::state_machine::StateMachineStore;
use crate::tls::acceptor::{Refusals, TlsState};

use super::batcher::{self, Batcher};
use super::error::ServiceError;
use super::rate;
use super::sessions::SessionTracker;

/// What every service of one node shares.
pub struct Shared {
    /// This node's id.
    pub node_id: u64,
    /// The node's configuration.
    pub config: Arc<Config>,
    /// The local Raft node.
    pub raft: Raft,
    /// The local state machine, for reads.
    pub state: StateMachineStore,
    /// The local Raft log, for `NodeInfo`'s list of entry hashes (a
    /// read-only use next to the Raft core, which owns the writes).
    pub log: crate::raft::log_store::LogStore,
    /// Proposes commands.
    pub batcher: Batcher,
    /// Heartbeats of client sessions, kept by the active node.
    pub sessions: SessionTracker,
    /// Check-outs per source address by sessions the state does not hold
    /// (`limits.unheld_writes_per_address_per_s`).
    pub unheld_writes: rate::AddressRate,
    /// Vendor keys this cluster trusts.
    pub trusted: Vec<VendorPublicKey>,
    /// The Raft transport, for when each peer last answered.
    pub network: crate::raft::network::Network,
    /// The quorum lease the activator keeps: whether, and in which term, this node serves.
    pub lease: Arc<Lease>,
    /// This node's TLS material; `None` when the config says `tls.plaintext`.
    pub tls: Option<Arc<TlsState>>,
    /// Refused connections and requests, each logged once.
    pub refusals: Arc<Refusals>,
    /// Why this node stepped back from leadership for good (its config cannot
    /// be safe with the cluster's), if it did.
    pub stepped_back: Arc<std::sync::OnceLock<String>>,
    /// Whether this node's wall clock agrees with its peers'.
    pub clock: Arc<crate::clock::Clock>,
    /// An administrator asked this node to stop (`raftlm down`).
    pub shutdown_requested: tokio::sync::Notify,
    /// The process got SIGHUP: read the license directory again now.
    pub reread_license_dir: tokio::sync::Notify,
}

impl Shared {
    /// The term this node serves in, or why it does not serve.
    pub fn serving(&self) -> Result<u64, ServiceError> {
        if let Some(crate::license::ids::Term(term)) = self.lease.serving_term() {
            return Ok(term);
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        // A node that leads but does not serve yet (waiting out the previous lease) gives no hint.
        let leader = metrics
            .current_leader
            .filter(|id| *id != self.node_id)
            .and_then(|id| {
                let node = metrics.membership_config.membership().get_node(&id)?;
                Some((id, self.client_address(id, node)))
            });
        Err(ServiceError::NotActive {
            node: self.node_id,
            leader,
        })
    }

    /// Member `id`'s client-plane address: where `raftlm cluster
    /// set-address` moved it, else its membership entry's.
    pub fn client_address(&self, id: u64, member: &crate::raft::Member) -> String {
        self.moved_address(id)
            .map_or_else(|| member.address.clone(), |moved| moved.address)
    }

    /// Member `id`'s client and peer addresses if `set-address` moved it.
    pub fn moved_address(&self, id: u64) -> Option<crate::license::formats::MemberAddress> {
        self.state
            .read(|state| state.formats().addresses.get(&id).cloned())
    }

    /// Checks, just before a reply is sent, that this node still serves in
    /// `term`: a node that lost its lease (or was stopped and resumed) must not
    /// answer from before.
    pub fn confirm(&self, term: u64) -> Result<u64, ServiceError> {
        match self.serving() {
            Ok(now) if now == term => Ok(term),
            Ok(_) => Err(ServiceError::NotActive {
                node: self.node_id,
                leader: None,
            }),
            Err(error) => Err(error),
        }
    }

    /// Proposes `command` through the batcher and waits until it is applied:
    /// its outcome and the log id it was committed at.
    pub async fn propose(
        &self,
        command: crate::license::state::Command,
    ) -> Result<batcher::Applied, ServiceError> {
        self.batcher
            .submit(command)
            .await
            .map_err(|e| ServiceError::from_batch(self.node_id, e))
    }
}
