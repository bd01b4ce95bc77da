//! The node's services: the license and admin gRPC services, the session
//! tracker and its sweeper, and the batcher they propose through.
//!
//! Services hold no business rules: they check that this node serves, turn a
//! request into a [`Command`](crate::license::state::Command), submit it to
//! the [`Batcher`], and turn the outcome into a reply. The rules live in
//! [`LicenseState`](crate::license::state::LicenseState).

pub mod admin;
pub mod batcher;
pub mod error;
pub mod hosts;
pub mod license;
pub mod rate;
pub mod sessions;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::{Router, TcpIncoming};

use crate::lease::Lease;
use crate::tls::acceptor::{self, Plane, Refusals, TlsState};

use crate::config::Config;
use crate::license::signature::VendorPublicKey;
use crate::raft::Raft;
use crate::raft::state_machine::StateMachineStore;
pub use batcher::Batcher;
pub use error::ServiceError;
use sessions::SessionTracker;

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

/// Longest a client or peer connection lives before the server asks it to
/// reconnect: certificates are checked at each handshake, so a revoked,
/// expired or rotated certificate stops being used within this time.
pub const CONNECTION_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// Most concurrent HTTP/2 streams (requests) one connection may open.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 128;
/// Longest a request may run on the server before it is answered
/// `DEADLINE_EXCEEDED` (clients set shorter deadlines of their own).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often an idle connection is pinged, and how long a ping may go
/// unanswered before the connection is closed (a vanished peer).
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a connection past [`CONNECTION_AGE_MAX`] may take to finish its
/// open requests before it is closed anyway: a stream that never ends (a
/// health `Watch`) does not keep a connection, and the certificate it was
/// opened with, alive for good.
pub const CONNECTION_AGE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The gRPC server settings every plane of a node uses.
pub fn server_builder() -> tonic::transport::Server {
    server_builder_aged(CONNECTION_AGE_MAX, CONNECTION_AGE_GRACE)
}

/// [`server_builder`] with another connection age and grace (tests).
pub fn server_builder_aged(
    age: std::time::Duration,
    grace: std::time::Duration,
) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_connection_age(age)
        .max_connection_age_grace(grace)
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// The license service with its request-size limit.
pub fn license_service(
    shared: Arc<Shared>,
) -> crate::proto::v1::license_server::LicenseServer<license::LicenseService> {
    crate::proto::v1::license_server::LicenseServer::new(license::LicenseService::new(shared))
        .max_decoding_message_size(license::CLIENT_REQUEST_BYTES_MAX)
}

/// The admin service with its request-size limit.
pub fn admin_service(
    shared: Arc<Shared>,
) -> crate::proto::v1::admin_server::AdminServer<admin::AdminService> {
    crate::proto::v1::admin_server::AdminServer::new(admin::AdminService::new(shared))
        .max_decoding_message_size(admin::ADMIN_REQUEST_BYTES_MAX)
}

/// This node's wall clock in ms since the epoch (0 if the clock is before 1970).
pub fn wall_clock_ms() -> u64 {
    crate::clock::wall_ms()
}

/// Serves `router` on `listener` until `stop` resolves: through the TLS
/// acceptor of `plane` when `tls` is set (connections from the members'
/// hosts may use the acceptor's reserve), in plaintext otherwise.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<Arc<TlsState>>,
    plane: Plane,
    members: acceptor::Members,
    refusals: Arc<Refusals>,
    stop: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match tls {
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
        Some(state) => {
            let incoming = acceptor::incoming(listener, state, plane, members, refusals);
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
    }
}

impl Shared {
    /// The term this node serves in, or why it does not serve.
    pub fn serving(&self) -> Result<u64, ServiceError> {
        if let Some(term) = self.lease.serving_term() {
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
                Some((id, node.address.clone()))
            });
        Err(ServiceError::NotActive {
            node: self.node_id,
            leader,
        })
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
