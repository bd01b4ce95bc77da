//! The node's services: the license and admin gRPC services, the session
//! tracker and its sweeper, and the batcher they propose through.
//!
//! Services hold no business rules: they check that this node serves, turn a
//! request into a [`Command`](crate::license::state::Command), submit it to
//! the [`Batcher`], and turn the outcome into a reply. The rules live in
//! [`LicenseState`](crate::license::state::LicenseState).

pub mod addresses;
pub mod admin;
pub mod backup;
pub mod batcher;
pub mod error;
pub mod formats;
pub mod hosts;
pub mod http;
pub mod license;
pub mod membership;
pub mod rate;
pub mod remove;
pub mod sessions;
pub mod shared;
pub mod sweeper;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::{Router, TcpIncoming};

use crate::tls::acceptor::{self, Plane, Refusals, TlsState};

pub use batcher::Batcher;
pub use error::ServiceError;
pub use shared::Shared;

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
