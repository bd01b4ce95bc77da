//! The client library applications link: find the cluster, check seats out
//! and in, heartbeat, and keep working through failover and outages.
//!
//! - [`ServerList`] parses where the cluster is (`--server` / `RAFTLM_SERVER`:
//!   the access point, or a node list in `host:port` or FlexNet's `port@host`).
//! - [`Client`] calls the cluster: it finds the active node by following the
//!   leader hints of the others, retries with capped, jittered back-off within
//!   a deadline, and refuses replies from a term older than one it has seen
//!   (fencing). Refusals come back at once as [`ClientError::Denied`] or
//!   [`ClientError::Refused`]; no answer in time is [`ClientError::Unreachable`].
//! - [`Session`] is one client process: check-outs with request ids (a retry
//!   never takes a second seat), a heartbeat task that re-attaches the grants
//!   to a new active node after a failover, and *caching mode* when no node
//!   answers: grants stay valid for the grace period and the session resumes
//!   them when the cluster answers again. The application watches
//!   [`SessionState`] and [`SessionEvent`]s.
//!
//! # Example
//!
//! ```no_run
//! use raftlm::client::{Client, ClientError, ServerList, Session, SessionEvent, SessionOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let servers = ServerList::parse("27000@h1,27000@h2,27000@h3")?;
//! let session = Session::start(Client::new(servers), SessionOptions::default());
//! let mut events = session.subscribe();
//! match session.checkout("cad", 1).await {
//!     Ok(grant) => println!("got {} seat(s) of cad: grant {}", grant.count, grant.token),
//!     Err(ClientError::Denied { message, .. }) => return Err(message.into()),
//!     Err(error) => return Err(error.into()),
//! }
//! tokio::spawn(async move {
//!     while let Ok(event) = events.recv().await {
//!         if let SessionEvent::EnteredCaching { grace_until, .. } = event {
//!             eprintln!("license cluster unreachable; licensed until {grace_until:?}");
//!         }
//!     }
//! });
//! // ... the application works; the session heartbeats in the background ...
//! session.close().await?; // checks everything in
//! # Ok(())
//! # }
//! ```
//!
//! TLS: [`ClientOptions::tls`] says whom to trust and which certificate to
//! present; [`ClientOptions::from_env`] takes it from `RAFTLM_CA`,
//! `RAFTLM_CERT` and `RAFTLM_KEY`.
//!
//! Left out: persisting a session across process restarts.

mod backoff;
mod error;
mod fence;
mod rpc;
mod server_list;
mod session;

pub use backoff::Backoff;
pub use error::ClientError;
pub use fence::{StaleTerm, TermFence};
pub use rpc::{
    CHANNELS_MAX, CacheReport, Checkin, Client, ClientOptions, Grant, HINT_HOPS_MAX, Renewal,
    SESSION_GRANTS_PAGES_MAX, SessionRequest, Want,
};
pub use server_list::{
    DEFAULT_SERVER, HOST_BYTES_MAX, SERVER_ENV, SERVERS_MAX, ServerList, ServerListError,
};
pub use session::{
    ADOPTED_REMEMBERED, ADOPTION_CANDIDATES_MAX, CACHING_PROBE_PAUSE, DEFAULT_SESSION_TTL,
    HEARTBEAT_MIN, REQUESTS_MAX, SESSION_RESTARTS_MAX, Session, SessionEvent, SessionOptions,
    SessionState, UNRESOLVED_MAX, VALIDITY_MARGIN_DIVISOR, local_host, local_user,
};

pub use crate::license::secret::SessionSecret;
pub use crate::license::state::{DenyReason, GrantToken, RequestId, SessionId};
pub use crate::tls::client::ClientTls;

/// The example in `docs/client.md`, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/client.md")]
pub struct ClientGuideExample;
