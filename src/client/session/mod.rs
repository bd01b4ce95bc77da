//! `Session`: one client process's check-outs, heartbeats and caching mode.
//!
//! A session is a task that owns the session's state — its id, the request
//! sequence, the grants held — and takes requests from the [`Session`] handle
//! over a bounded channel with a oneshot for each reply, so the task is the
//! one owner of the session's mutable state. Network calls run as sub-tasks
//! of that task, so a slow check-out never delays a heartbeat, and an answer
//! is recorded even if the caller stopped waiting for it.
//!
//! The decisions below are made by a plain state machine (`core.rs`: inputs
//! and the time in, actions out, no tasks or network), which the task
//! (`actor.rs`) drives and whose actions it performs; this module holds the
//! handle and the public types.
//!
//! # Heartbeats and failover
//!
//! The task renews the session every heartbeat interval (the session TTL the
//! cluster announces, divided by three, unless [`SessionOptions`] says
//! otherwise), quoting every grant token it holds. The cluster answers which
//! tokens it does not hold; those grants are lost ([`SessionEvent::GrantLost`])
//! and checked out again. After a failover the renewal reaches the new active
//! node (the [`Client`] follows leader hints) and quotes the same tokens: the
//! new node holds them from the replicated state, so nothing is checked out
//! again and no seat changes hands ([`SessionEvent::FailedOver`]).
//!
//! # Caching mode
//!
//! When a renewal gets no answer for [`SessionOptions::unreachable_after`], the
//! session enters caching mode ([`SessionState::Caching`]): the grants it holds
//! stay valid for the grace period counted from the cluster's last answer, and
//! the task keeps probing. The first answer ends caching mode
//! ([`SessionEvent::LeftCaching`]); every renewal sent while caching carries how
//! long the session has been cut off, so the cluster learns about it. If the
//! cluster expired the session meanwhile, its grants are gone: the task starts
//! a new session id ([`SessionEvent::SessionRestarted`]) and checks each lost
//! grant out again if seats are free ([`SessionEvent::GrantRecovered`] or
//! [`SessionEvent::GrantNotRecovered`]). When the grace period runs out the
//! state becomes [`SessionState::GraceExpired`]: grants are no longer valid.
//!
//! # Requests whose outcome is unknown
//!
//! A check-out that times out is retried with the same request id inside the
//! call. If the whole call fails, the seat may or may not have been granted;
//! the task asks again with the same id once the cluster answers, and checks
//! in a grant the application was told it did not get. A check-in that fails
//! is retried the same way, and the grant is quoted in heartbeats until then.
//!
//! The cluster remembers the answers to a session's last 32 requests. A
//! check-out retried after more requests than that (its reply was lost while
//! the session went on working) is answered "stale request": the cluster no
//! longer knows whether it granted seats. The task then asks the cluster
//! which grants the session holds ([`Client::session_grants`]) and *adopts*
//! one that matches the check-out (same vendor, feature, version and count)
//! and that the session does not know, the oldest first: a stale request was
//! applied before every request whose answer is still remembered, so if it
//! took seats, the oldest unknown grant is its own or that of another stale
//! request for the same seats, never the grant of a newer request. An adopted
//! grant is held (renewed, checked in, checked in at close) like any other, or
//! checked in at once if the application was already told the check-out
//! failed. If a later answer names a grant that was adopted for another
//! request, its request adopts the next unknown one instead, so no grant is
//! held twice and none is left unknown. When nothing matches, the check-out
//! fails as before. Left out: a stale request that was denied cannot be told
//! from one that was granted; it adopts a matching grant of a newer request
//! still in flight if there is one, and that request, finding its grant
//! taken, then fails as stale — the seats held still match the grants known.
//!
//! Left out: persisting the session across process restarts (a restarted
//! process is a new session; the old one's seats free up after the TTL).

mod actor;
mod core;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::info;

use self::actor::{Actor, Request};
use self::core::{Core, Now};
use crate::client::error::ClientError;
use crate::client::rpc::{Checkin, Client, Grant};
use crate::license::secret::SessionSecret;
use crate::license::state::{GrantToken, SessionId};

/// Most requests queued from the handle to the session task.
pub const REQUESTS_MAX: usize = 64;
/// Shortest heartbeat interval the task uses, whatever the options or TTL say.
pub const HEARTBEAT_MIN: Duration = Duration::from_millis(10);
/// Pause between caching-mode probes (each probe itself retries for up to
/// [`SessionOptions::unreachable_after`]).
pub const CACHING_PROBE_PAUSE: Duration = Duration::from_millis(100);
/// Grants held through renewals stay valid for the session TTL, less a
/// twentieth of it, after the *send* time of the last renewal the cluster
/// answered: the cluster expires a session only after a TTL of silence since
/// it last heard it, which was after that send, so the margin only absorbs
/// clock-rate differences. Past that point the session is in caching mode
/// (valid only within the grace period), whatever the renewal in flight says.
pub const VALIDITY_MARGIN_DIVISOR: u32 = 20;
/// How many times one check-out is moved to a new session id before giving up.
pub const SESSION_RESTARTS_MAX: u32 = 2;
/// Longest the session task sleeps while the grace period runs: the period
/// may be years, and a deadline that far ahead is not slept on in one go.
const GRACE_WAKE_MAX: Duration = Duration::from_secs(3600);
/// Most check-outs with unknown outcome remembered for resolution.
pub const UNRESOLVED_MAX: usize = 1024;
/// The session TTL assumed before the cluster first announces it.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30);
/// Most grants the session remembers having adopted after a stale answer
/// (the oldest are forgotten first): a later answer naming one of them
/// belongs to another request.
pub const ADOPTED_REMEMBERED: usize = 1024;
/// Most unknown matching grants one adoption collects to choose from.
pub const ADOPTION_CANDIDATES_MAX: usize = 64;

/// How a session behaves. Defaults: [`SessionOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// The vendor whose features this session checks out (seats belong to a
    /// vendor's feature, as FlexNet's vendor daemon is implicit in the
    /// connection). Required: a check-out with an empty vendor is refused.
    pub vendor: String,
    /// The vendor's public keys, compiled into the application. When given,
    /// every grant is checked: the lines behind it must be signed by one of
    /// these keys (for their vendor), and lines bound to a cluster identity
    /// must name the identity of a CA the client trusts
    /// ([`ClientTls::cluster_ids`](crate::tls::client::ClientTls::cluster_ids)),
    /// or the seats are checked in again and the check-out fails with
    /// [`ClientError::UntrustedLicense`] once that check-in is answered (or
    /// has failed, to be retried like any other). Empty (the
    /// default): no check — a vendor's product should always set it.
    pub vendor_keys: Vec<crate::license::signature::VendorPublicKey>,
    /// The user name reported with check-outs. Default: `$USER`.
    pub user: String,
    /// The host name reported with check-outs. Default: this machine's host name.
    pub host: String,
    /// How long grants stay valid in caching mode, counted from the cluster's
    /// last answer. Default 30 days.
    pub grace_period: Duration,
    /// The heartbeat interval; `None` (the default) uses a third of the
    /// session TTL the cluster announces.
    pub heartbeat_interval: Option<Duration>,
    /// How long a renewal may go unanswered before the session enters caching
    /// mode. Default 10 s (a third of the default TTL).
    pub unreachable_after: Duration,
    /// Capacity of the event channel; a receiver that falls further behind
    /// misses events (`RecvError::Lagged`). Default 256.
    pub events_max: usize,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            vendor: String::new(),
            vendor_keys: Vec::new(),
            user: local_user(),
            host: local_host(),
            grace_period: Duration::from_secs(30 * 24 * 3600),
            heartbeat_interval: None,
            unreachable_after: Duration::from_secs(10),
            events_max: 256,
        }
    }
}

/// The user name of this process: `$USER`, else `$LOGNAME`, else `unknown`.
pub fn local_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// This machine's host name (from the kernel), else `$HOSTNAME`, else `unknown`.
pub fn local_host() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Whether the session is in touch with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// The cluster has not answered yet.
    Connecting,
    /// The cluster answers; `active_address` answered the last renewal.
    Connected {
        /// The address of the node that answered.
        active_address: String,
        /// Its term.
        term: u64,
        /// Grants are valid until then unless another renewal is answered:
        /// the last answered renewal's send time plus the session TTL, less
        /// [`VALIDITY_MARGIN_DIVISOR`]'s margin.
        valid_until: Instant,
    },
    /// Caching mode: the cluster does not answer; grants stay valid until `grace_until`.
    Caching {
        /// When the cluster last answered (or the session started, if it never did).
        since: SystemTime,
        /// When held grants stop being valid if the cluster still does not answer.
        grace_until: SystemTime,
        /// The same moment on the monotonic clock, which [`Self::grants_valid`] reads:
        /// the later of the last answer plus the grace period and the
        /// connected validity.
        valid_until: Instant,
    },
    /// The grace period ran out without an answer: held grants are no longer valid.
    GraceExpired {
        /// When the cluster last answered.
        since: SystemTime,
    },
    /// The session was closed.
    Closed,
}

impl SessionState {
    /// Whether the grants the session holds may be used, now. Read from the
    /// clock, not only from the state: a session task that is late to flip
    /// the state (a loaded machine) cannot stretch the grants' validity.
    pub fn grants_valid(&self) -> bool {
        match self {
            SessionState::Connected { valid_until, .. }
            | SessionState::Caching { valid_until, .. } => Instant::now() < *valid_until,
            _ => false,
        }
    }
}

/// Something that happened to a session, for the application to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The cluster answered the session for the first time.
    Connected {
        /// The node that answered.
        address: String,
        /// Its term.
        term: u64,
    },
    /// Another node (or the same node in a new term) now answers. Also sent
    /// right after [`SessionEvent::LeftCaching`] when the active node changed
    /// while the session was cut off.
    FailedOver {
        /// The node that answered before.
        from: String,
        /// The node that answers now.
        to: String,
        /// The new term.
        term: u64,
    },
    /// No node answered a renewal: the session runs on its cached grants.
    EnteredCaching {
        /// When the cluster last answered.
        since: SystemTime,
        /// When the grants stop being valid.
        grace_until: SystemTime,
    },
    /// A node answered again; the session's grants are being resumed.
    LeftCaching {
        /// How long the cluster did not answer (since its last answer).
        cached_for: Duration,
        /// The node that answered.
        address: String,
        /// Its term.
        term: u64,
    },
    /// The grace period ran out without an answer.
    GraceExpired {
        /// When the cluster last answered.
        since: SystemTime,
    },
    /// The cluster does not hold this grant any more (its session expired).
    GrantLost {
        /// The lost grant's token.
        token: GrantToken,
        /// Its feature.
        feature: String,
        /// Its seats.
        count: u32,
    },
    /// An administrator removed this grant (`raftlm remove`): its seats are
    /// free, and the session does not check the feature out again by itself.
    GrantRemoved {
        /// The removed grant's token.
        token: GrantToken,
        /// Its feature.
        feature: String,
        /// Its seats.
        count: u32,
        /// Who removed it (the administrator certificate's subject).
        by: String,
        /// When (the cluster's state time).
        at: SystemTime,
    },
    /// The cluster expired the session; the session goes on under a new id.
    SessionRestarted {
        /// The expired session id.
        old: SessionId,
        /// The new one.
        new: SessionId,
    },
    /// A lost grant was checked out again; check it in with either grant.
    GrantRecovered {
        /// The lost grant's token.
        lost: GrantToken,
        /// The new grant.
        grant: Grant,
    },
    /// A lost grant could not be checked out again (for example no seats free).
    GrantNotRecovered {
        /// The lost grant's token.
        lost: GrantToken,
        /// Its feature.
        feature: String,
        /// Its seats.
        count: u32,
        /// Why, as the cluster said it.
        reason: String,
    },
}

/// A license session: checks out and in, heartbeats, and survives failover
/// and cluster outages. Dropping it stops its task (grants are then freed by
/// the cluster after the session TTL); [`Session::close`] checks everything in.
pub struct Session {
    requests: mpsc::Sender<Request>,
    state: watch::Receiver<SessionState>,
    events: broadcast::Sender<SessionEvent>,
    // std Mutex: one copy in or out, never held across `.await`.
    id: Arc<Mutex<SessionId>>,
    task: Option<JoinHandle<()>>,
}

impl Session {
    /// Starts a session with a random id on `client`'s cluster. Must be called
    /// within a tokio runtime. The first heartbeat goes out at once.
    pub fn start(client: Client, options: SessionOptions) -> Session {
        let secret = SessionSecret::generate();
        let session = secret.handle();
        let (requests, receiver) = mpsc::channel(REQUESTS_MAX);
        let (state_tx, state) = watch::channel(SessionState::Connecting);
        let (events, _) = broadcast::channel(options.events_max.max(1));
        let id = Arc::new(Mutex::new(session));
        let cluster_ids = if options.vendor_keys.is_empty() {
            Vec::new()
        } else {
            client.options().tls.cluster_ids()
        };
        let actor = Actor {
            core: Core::new(options, cluster_ids, secret, Now::read()),
            client,
            id: id.clone(),
            state: state_tx,
            events: events.clone(),
            tasks: JoinSet::new(),
            renew: None,
            checkout_replies: HashMap::new(),
            checkin_replies: HashMap::new(),
            next_ticket: 0,
        };
        info!(session = %session, "session started");
        let task = tokio::spawn(actor.run(receiver));
        Session {
            requests,
            state,
            events,
            id,
            task: Some(task),
        }
    }

    /// The session's current id (it changes when the cluster expired the session).
    pub fn id(&self) -> SessionId {
        *self.id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks out `count` seats of `feature`. A refusal is
    /// [`ClientError::Denied`] with the numbers; a call that got no answer is
    /// [`ClientError::Unreachable`] (the session then finds out later whether
    /// a seat was granted, and checks it in if so).
    pub async fn checkout(&self, feature: &str, count: u32) -> Result<Grant, ClientError> {
        self.checkout_version(feature, "", count).await
    }

    /// Checks out `count` seats of `feature` in `version` or higher (FlexNet's
    /// rule: a request for version V is served by lines of version ≥ V).
    pub async fn checkout_version(
        &self,
        feature: &str,
        version: &str,
        count: u32,
    ) -> Result<Grant, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Checkout {
            feature: feature.to_string(),
            version: version.to_string(),
            count,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ClientError::SessionClosed)?
    }

    /// Checks `grant` in. A grant replaced after a loss may be checked in by
    /// its old or new token. If the call gets no answer, the session retries
    /// it when the cluster answers again.
    pub async fn checkin(&self, grant: &Grant) -> Result<Checkin, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Checkin {
            token: grant.token,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ClientError::SessionClosed)?
    }

    /// The grants the session holds (valid while [`SessionState::grants_valid`]),
    /// not counting grants being checked in.
    pub async fn grants(&self) -> Result<Vec<Grant>, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Grants { reply }).await?;
        answer.await.map_err(|_| ClientError::SessionClosed)
    }

    /// The session's state now.
    pub fn state(&self) -> SessionState {
        self.state.borrow().clone()
    }

    /// A receiver of the session's state, to wait for changes.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// A receiver of the session's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Checks in every grant, stops the heartbeat and waits for the task. The
    /// first check-in that failed is returned; the task stops either way.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Close { reply }).await?;
        let result = answer.await.map_err(|_| ClientError::SessionClosed)?;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }

    async fn send(&self, request: Request) -> Result<(), ClientError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| ClientError::SessionClosed)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("state", &*self.state.borrow())
            .finish()
    }
}
