//! `Session`: one client process's check-outs, heartbeats and caching mode.
//!
//! A session is a task that owns the session's state — its id, the request
//! sequence, the grants held — and takes requests from the [`Session`] handle
//! over a bounded channel with a oneshot for each reply, so the task is the
//! one owner of the session's mutable state. Network calls run as sub-tasks
//! of that task, so a slow check-out never delays a heartbeat, and an answer
//! is recorded even if the caller stopped waiting for it.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::client::error::ClientError;
use crate::client::rpc::{CacheReport, Checkin, Client, Grant, Renewal};
use crate::client::rpc::{SessionRequest, Want};
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

enum Request {
    Checkout {
        feature: String,
        version: String,
        count: u32,
        reply: oneshot::Sender<Result<Grant, ClientError>>,
    },
    Checkin {
        token: GrantToken,
        reply: oneshot::Sender<Result<Checkin, ClientError>>,
    },
    Grants {
        reply: oneshot::Sender<Vec<Grant>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
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
        let now = Instant::now();
        let actor = Actor {
            client,
            options,
            secret,
            session,
            seq: 0,
            id: id.clone(),
            held: BTreeMap::new(),
            adopted: BTreeSet::new(),
            aliases: HashMap::new(),
            pending_checkins: Vec::new(),
            unresolved: Vec::new(),
            recovering: Vec::new(),
            ttl: DEFAULT_SESSION_TTL,
            last_contact: None,
            last_connected: None,
            started: (now, SystemTime::now()),
            state: state_tx,
            events: events.clone(),
            tasks: JoinSet::new(),
            renew: None,
            next_heartbeat: now,
            grace_deadline: None,
            valid_until: None,
            closing: false,
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

/// A grant the session holds.
struct Held {
    grant: Grant,
    /// A check-in has been sent (or failed and waits to be retried).
    releasing: bool,
}

/// Why a check-out is being made.
enum Purpose {
    /// The application asked; it waits for the answer.
    App(oneshot::Sender<Result<Grant, ClientError>>),
    /// A lost grant is being checked out again.
    Recover { lost: Grant },
    /// A check-out whose call got no answer is asked again with the same id,
    /// to learn whether a seat was granted (and check it in if so).
    Resolve,
}

struct CheckoutJob {
    id: SessionRequest,
    feature: String,
    version: String,
    count: u32,
    purpose: Purpose,
    restarts: u32,
}

impl CheckoutJob {
    fn want(&self, vendor: &str) -> Want {
        Want {
            vendor: vendor.to_string(),
            feature: self.feature.clone(),
            version: self.version.clone(),
            count: self.count,
        }
    }
}

/// A check-out whose grant the application refused (its lines are not signed
/// by a trusted vendor key): it fails with `error` once the grant's check-in
/// is answered.
struct Refused {
    job: CheckoutJob,
    error: ClientError,
}

/// A finished sub-task.
enum Done {
    Checkout {
        // Boxed: a job with its grant is several times larger than the other variants.
        job: Box<CheckoutJob>,
        result: Result<Grant, ClientError>,
    },
    Checkin {
        id: SessionRequest,
        token: GrantToken,
        reply: Option<oneshot::Sender<Result<Checkin, ClientError>>>,
        /// The check-out whose grant this check-in gives back, failed after it.
        refused: Option<Box<Refused>>,
        result: Result<Checkin, ClientError>,
    },
    Renew {
        session: SessionId,
        /// When the renewal call started (no attempt was sent before it).
        sent: Instant,
        result: Result<Renewal, ClientError>,
    },
    /// The grants that a check-out answered "stale" may have taken.
    Adopt {
        job: Box<CheckoutJob>,
        result: Result<Vec<Grant>, ClientError>,
    },
}

struct Actor {
    client: Client,
    options: SessionOptions,
    /// The session's secret, sent on every request; never logged.
    secret: SessionSecret,
    /// Its public handle, for logs and events.
    session: SessionId,
    seq: u64,
    // std Mutex: one copy in or out, never held across `.await`.
    id: Arc<Mutex<SessionId>>,
    held: BTreeMap<GrantToken, Held>,
    /// Grants adopted after a stale answer, at most [`ADOPTED_REMEMBERED`].
    adopted: BTreeSet<GrantToken>,
    /// Lost token → the token of the grant that replaced it.
    aliases: HashMap<GrantToken, GrantToken>,
    /// Check-ins whose call got no answer, to retry with the same id.
    pending_checkins: Vec<(SessionRequest, GrantToken)>,
    /// Check-outs whose call got no answer, to resolve with the same id.
    unresolved: Vec<CheckoutJob>,
    /// Lost grants waiting to be checked out again.
    recovering: Vec<Grant>,
    ttl: Duration,
    /// When the cluster last answered: monotonic and wall clock.
    last_contact: Option<(Instant, SystemTime)>,
    /// The node and term that answered the last renewal.
    last_connected: Option<(String, u64)>,
    started: (Instant, SystemTime),
    state: watch::Sender<SessionState>,
    events: broadcast::Sender<SessionEvent>,
    tasks: JoinSet<Done>,
    /// The renewal in flight, if any (at most one at a time).
    renew: Option<tokio::task::AbortHandle>,
    next_heartbeat: Instant,
    /// In caching mode: when the grace period ends.
    grace_deadline: Option<Instant>,
    /// Until when the last answered renewal of this session id keeps grants
    /// valid (see [`VALIDITY_MARGIN_DIVISOR`]).
    valid_until: Option<Instant>,
    closing: bool,
}

impl Actor {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            let heartbeat_at = self.next_heartbeat;
            let grace_at = self
                .grace_deadline
                .map(|d| d.min(Instant::now() + GRACE_WAKE_MAX));
            // While connected: the moment the last answered renewal stops
            // covering the grants, if no other is answered first.
            let lapse_at = match *self.state.borrow() {
                SessionState::Connected { valid_until, .. } => Some(valid_until),
                _ => None,
            };
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Close { reply }) => {
                        let result = self.close().await;
                        let _ = reply.send(result);
                        return;
                    }
                    Some(request) => self.handle(request),
                    None => {
                        debug!(session = %self.session, "session handle dropped: stopping");
                        return;
                    }
                },
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => match joined {
                    Ok(done) => self.finished(done),
                    Err(error) => {
                        error!(%error, "a session sub-task failed");
                        if self.renew.as_ref().is_some_and(|r| r.id() == error.id()) {
                            // Keep heartbeating even if one renewal task died.
                            self.renew = None;
                            self.next_heartbeat = Instant::now() + self.heartbeat_interval();
                        }
                    }
                },
                _ = tokio::time::sleep_until(heartbeat_at), if self.renew.is_none() => self.start_renew(),
                _ = tokio::time::sleep_until(grace_at.unwrap_or(heartbeat_at)), if grace_at.is_some() => {
                    self.check_grace();
                }
                _ = tokio::time::sleep_until(lapse_at.unwrap_or(heartbeat_at)), if lapse_at.is_some() => {
                    self.enter_caching(&[], "no renewal was answered within the session TTL");
                }
            }
        }
    }

    fn next_id(&mut self) -> SessionRequest {
        self.seq += 1;
        SessionRequest {
            secret: self.secret.clone(),
            seq: self.seq,
        }
    }

    fn emit(&self, event: SessionEvent) {
        info!(session = %self.session, ?event, "session event");
        // No receiver is not an error: nobody is listening.
        let _ = self.events.send(event);
    }

    fn set_state(&self, state: SessionState) {
        self.state.send_replace(state);
    }

    fn is_caching(&self) -> bool {
        matches!(
            *self.state.borrow(),
            SessionState::Caching { .. } | SessionState::GraceExpired { .. }
        )
    }

    fn heartbeat_interval(&self) -> Duration {
        self.options
            .heartbeat_interval
            .unwrap_or(self.ttl / 3)
            .max(HEARTBEAT_MIN)
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Checkout {
                feature,
                version,
                count,
                reply,
            } => {
                let id = self.next_id();
                self.spawn_checkout(CheckoutJob {
                    id,
                    feature,
                    version,
                    count,
                    purpose: Purpose::App(reply),
                    restarts: 0,
                });
            }
            Request::Checkin { token, reply } => {
                let token = self.current_token(token);
                if let Some(held) = self.held.get_mut(&token) {
                    held.releasing = true;
                }
                // A check-in already pending for this grant keeps its request id.
                let id = match self.pending_checkins.iter().position(|(_, t)| *t == token) {
                    Some(i) => self.pending_checkins.swap_remove(i).0,
                    None => self.next_id(),
                };
                self.spawn_checkin(id, token, Some(reply));
            }
            Request::Grants { reply } => {
                let held = self.held.values().filter(|h| !h.releasing);
                let _ = reply.send(held.map(|h| h.grant.clone()).collect());
            }
            Request::Close { .. } => unreachable!("close is handled by run"),
        }
    }

    /// The token a grant is held under now (following replacements after losses).
    fn current_token(&self, mut token: GrantToken) -> GrantToken {
        // Bounded: each alias points to a newer grant, and aliases never form a cycle.
        for _ in 0..=self.aliases.len() {
            match self.aliases.get(&token) {
                Some(next) => token = *next,
                None => break,
            }
        }
        token
    }

    fn spawn_checkout(&mut self, job: CheckoutJob) {
        let client = self.client.clone();
        let timeout = client.options().call_timeout;
        let (user, host) = (self.options.user.clone(), self.options.host.clone());
        let want = job.want(&self.options.vendor);
        debug!(session = %self.session, request = ?job.id.id(), feature = %job.feature, "sending a check-out");
        self.tasks.spawn(async move {
            let result = client
                .checkout_within(timeout, &job.id, &want, &user, &host)
                .await;
            Done::Checkout {
                job: Box::new(job),
                result,
            }
        });
    }

    fn spawn_checkin(
        &mut self,
        id: SessionRequest,
        token: GrantToken,
        reply: Option<oneshot::Sender<Result<Checkin, ClientError>>>,
    ) {
        self.spawn_checkin_then(id, token, reply, None);
    }

    /// Checks `token` in; once the call is answered (or has failed, and waits
    /// to be retried), fails the check-out `refused` if given.
    fn spawn_checkin_then(
        &mut self,
        id: SessionRequest,
        token: GrantToken,
        reply: Option<oneshot::Sender<Result<Checkin, ClientError>>>,
        refused: Option<Box<Refused>>,
    ) {
        let client = self.client.clone();
        let timeout = client.options().call_timeout;
        self.tasks.spawn(async move {
            let result = client.checkin_within(timeout, &id, token).await;
            Done::Checkin {
                id,
                token,
                reply,
                refused,
                result,
            }
        });
    }

    fn start_renew(&mut self) {
        let tokens: Vec<GrantToken> = self.held.keys().copied().collect();
        let report = match &*self.state.borrow() {
            SessionState::Caching { since, .. } | SessionState::GraceExpired { since } => {
                CacheReport {
                    cached_for_ms: SystemTime::now()
                        .duration_since(*since)
                        .map_or(0, |d| d.as_millis() as u64),
                    cached_since_ms: crate::clock::epoch_ms(*since),
                }
            }
            _ => CacheReport::default(),
        };
        let client = self.client.clone();
        let session = self.session;
        let secret = self.secret.clone();
        let timeout = self.options.unreachable_after;
        self.renew = Some(self.tasks.spawn(async move {
            let sent = Instant::now();
            let result = client.renew_within(timeout, &secret, &tokens, report).await;
            Done::Renew {
                session,
                sent,
                result,
            }
        }));
    }

    fn contact(&mut self) {
        self.last_contact = Some((Instant::now(), SystemTime::now()));
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Renew {
                session,
                sent,
                result,
            } => self.renewed(session, sent, result),
            Done::Checkout { job, result } => self.checked_out(*job, result),
            Done::Adopt { job, result } => self.adopt(*job, result),
            Done::Checkin {
                id,
                token,
                reply,
                refused,
                result,
            } => {
                self.checked_in(id, token, reply, result);
                if let Some(refused) = refused {
                    let Refused { job, error } = *refused;
                    self.fail_checkout(job, error);
                }
            }
        }
    }

    fn renewed(&mut self, session: SessionId, sent: Instant, result: Result<Renewal, ClientError>) {
        self.renew = None;
        let renewal = match result {
            Ok(renewal) => renewal,
            Err(ClientError::Unreachable { tried, last }) => {
                if !self.is_caching() {
                    self.enter_caching(&tried, &last);
                } else {
                    debug!(session = %self.session, %last, "cluster still unreachable");
                }
                self.next_heartbeat =
                    Instant::now() + CACHING_PROBE_PAUSE.min(self.heartbeat_interval());
                return;
            }
            Err(error) => {
                warn!(session = %self.session, %error, "renewal refused");
                self.next_heartbeat = Instant::now() + self.heartbeat_interval();
                return;
            }
        };
        self.contact();
        if !renewal.session_ttl.is_zero() {
            self.ttl = renewal.session_ttl;
        }
        // An answer for an id the session left behind says nothing about the
        // current one's life.
        if session == self.session {
            let margin = self.ttl / VALIDITY_MARGIN_DIVISOR;
            self.valid_until = Some(sent + self.ttl.saturating_sub(margin));
        }
        let valid_until = self.valid_until.unwrap_or(sent);
        // The state changes before the events go out, so a receiver of an
        // event sees the state it announces.
        let previous = self.state.borrow().clone();
        self.set_state(SessionState::Connected {
            valid_until,
            active_address: renewal.address.clone(),
            term: renewal.term,
        });
        let mut events = Vec::new();
        match previous {
            SessionState::Connecting => events.push(SessionEvent::Connected {
                address: renewal.address.clone(),
                term: renewal.term,
            }),
            SessionState::Connected {
                active_address,
                term,
                ..
            } => {
                if active_address != renewal.address || term != renewal.term {
                    events.push(SessionEvent::FailedOver {
                        from: active_address,
                        to: renewal.address.clone(),
                        term: renewal.term,
                    });
                }
            }
            SessionState::Caching { since, .. } | SessionState::GraceExpired { since } => {
                let cached_for = SystemTime::now().duration_since(since).unwrap_or_default();
                info!(
                    session = %self.session,
                    cached_for_ms = cached_for.as_millis() as u64,
                    grants = self.held.len(),
                    address = %renewal.address,
                    "left caching mode; the cluster was told how long the session was cut off"
                );
                self.grace_deadline = None;
                events.push(SessionEvent::LeftCaching {
                    cached_for,
                    address: renewal.address.clone(),
                    term: renewal.term,
                });
                // The active node may have changed while the session was cut off.
                if let Some((from, term)) = self.last_connected.take()
                    && (from != renewal.address || term != renewal.term)
                {
                    events.push(SessionEvent::FailedOver {
                        from,
                        to: renewal.address.clone(),
                        term: renewal.term,
                    });
                }
            }
            SessionState::Closed => {}
        }
        for event in events {
            self.emit(event);
        }
        self.last_connected = Some((renewal.address.clone(), renewal.term));
        if session == self.session {
            for token in &renewal.unknown {
                if self.held.get(token).is_some_and(|h| !h.releasing) {
                    self.lose(*token);
                }
            }
            if renewal.session_expired {
                // Whether or not it held grants: go on under a new session
                // now, not at the next check-out.
                self.restart_session();
            }
        }
        self.next_heartbeat = Instant::now() + self.heartbeat_interval();
        self.resume_pending();
    }

    fn enter_caching(&mut self, tried: &[String], last: &str) {
        let (since_instant, since) = self.last_contact.unwrap_or(self.started);
        let grace = since_instant
            .checked_add(self.options.grace_period)
            .unwrap_or(since_instant);
        let deadline = self.valid_until.map_or(grace, |v| v.max(grace));
        let grace_until = since
            .checked_add(deadline.saturating_duration_since(since_instant))
            .unwrap_or(since);
        self.grace_deadline = Some(deadline);
        warn!(
            session = %self.session,
            ?tried,
            %last,
            grants = self.held.len(),
            "no node answered the renewal: entering caching mode"
        );
        self.set_state(SessionState::Caching {
            since,
            grace_until,
            valid_until: deadline,
        });
        self.emit(SessionEvent::EnteredCaching { since, grace_until });
        self.check_grace();
    }

    fn check_grace(&mut self) {
        let Some(deadline) = self.grace_deadline else {
            return;
        };
        if Instant::now() < deadline {
            return;
        }
        self.grace_deadline = None;
        // Read first, then write: `borrow()` holds the watch's read lock, and
        // `set_state` inside an `if let` on it would wait for it forever.
        let caching_since = match *self.state.borrow() {
            SessionState::Caching { since, .. } => Some(since),
            _ => None,
        };
        if let Some(since) = caching_since {
            warn!(session = %self.session, "the grace period ran out: grants are no longer valid");
            self.set_state(SessionState::GraceExpired { since });
            self.emit(SessionEvent::GraceExpired { since });
        }
    }

    /// A held grant is gone from the cluster: report it and check it out again.
    fn lose(&mut self, token: GrantToken) {
        let Some(held) = self.held.remove(&token) else {
            return;
        };
        let grant = held.grant;
        self.emit(SessionEvent::GrantLost {
            token,
            feature: grant.feature.clone(),
            count: grant.count,
        });
        self.recovering.push(grant);
    }

    /// After the cluster answered: retry what got no answer before.
    fn resume_pending(&mut self) {
        if self.closing {
            return;
        }
        for (id, token) in std::mem::take(&mut self.pending_checkins) {
            self.spawn_checkin(id, token, None);
        }
        for job in std::mem::take(&mut self.unresolved) {
            self.spawn_checkout(job);
        }
        for lost in std::mem::take(&mut self.recovering) {
            let id = self.next_id();
            let (feature, version, count) =
                (lost.feature.clone(), lost.version.clone(), lost.count);
            self.spawn_checkout(CheckoutJob {
                id,
                feature,
                version,
                count,
                purpose: Purpose::Recover { lost },
                restarts: 0,
            });
        }
    }

    /// The cluster expired the session: go on under a new id; every grant held is lost.
    fn restart_session(&mut self) {
        let old = self.session;
        self.secret = SessionSecret::generate();
        self.session = self.secret.handle();
        self.seq = 0;
        *self.id.lock().unwrap_or_else(|p| p.into_inner()) = self.session;
        warn!(%old, new = %self.session, "the cluster expired the session: starting a new one");
        self.emit(SessionEvent::SessionRestarted {
            old,
            new: self.session,
        });
        // The expired session's grants, check-ins and unknown check-outs went with it.
        self.pending_checkins.clear();
        self.unresolved.clear();
        let tokens: Vec<GrantToken> = self.held.keys().copied().collect();
        for token in tokens {
            if self.held.get(&token).is_some_and(|h| h.releasing) {
                self.held.remove(&token);
            } else {
                self.lose(token);
            }
        }
    }

    fn checked_out(&mut self, job: CheckoutJob, result: Result<Grant, ClientError>) {
        let stale = match &result {
            Err(ClientError::StaleRequest) => true,
            // The grant was adopted for another (stale) request of the same
            // seats: that request's own grant is this one's to take.
            Ok(grant) => self.is_known(grant.token),
            Err(_) => false,
        };
        if stale && job.id.secret == self.secret {
            if result.is_ok() {
                self.contact();
            }
            self.spawn_adopt(job);
            return;
        }
        self.accept(job, result);
    }

    /// Whether the session holds `token` or has adopted it.
    fn is_known(&self, token: GrantToken) -> bool {
        self.held.contains_key(&token) || self.adopted.contains(&token)
    }

    /// Asks the cluster which grants the session holds that `job` may have taken.
    fn spawn_adopt(&mut self, job: CheckoutJob) {
        let client = self.client.clone();
        let timeout = client.options().call_timeout;
        let want = job.want(&self.options.vendor);
        let known: BTreeSet<GrantToken> = self
            .held
            .keys()
            .chain(self.adopted.iter())
            .copied()
            .collect();
        self.tasks.spawn(async move {
            let result = client
                .session_grants_within(
                    timeout,
                    &job.id.secret,
                    &want,
                    |g| !known.contains(&g.token),
                    ADOPTION_CANDIDATES_MAX,
                )
                .await;
            Done::Adopt {
                job: Box::new(job),
                result,
            }
        });
    }

    /// The oldest of `candidates` the session does not know yet, now taken as
    /// `job`'s grant.
    fn take_unknown(&mut self, job: &CheckoutJob, candidates: Vec<Grant>) -> Option<Grant> {
        let grant = candidates
            .into_iter()
            .filter(|g| !self.is_known(g.token))
            .min_by_key(|g| g.token)?;
        info!(
            session = %self.session,
            request = ?job.id.id(),
            token = %grant.token,
            feature = %grant.feature,
            "a check-out answered as stale took this grant: adopting it"
        );
        self.adopted.insert(grant.token);
        if self.adopted.len() > ADOPTED_REMEMBERED {
            self.adopted.pop_first();
        }
        Some(grant)
    }

    fn adopt(&mut self, job: CheckoutJob, result: Result<Vec<Grant>, ClientError>) {
        let result = match result {
            Ok(candidates) => {
                self.contact();
                match self.take_unknown(&job, candidates) {
                    Some(grant) => Ok(grant),
                    None => {
                        debug!(request = ?job.id.id(), "no unknown grant matches a stale check-out");
                        Err(ClientError::StaleRequest)
                    }
                }
            }
            Err(error) => Err(error),
        };
        self.accept(job, result);
    }

    fn accept(&mut self, mut job: CheckoutJob, result: Result<Grant, ClientError>) {
        if result.is_ok() {
            self.contact();
            if self.is_caching() {
                // The cluster answers again: renew now to leave caching mode.
                self.next_heartbeat = Instant::now();
            }
        }
        let result = match result {
            // The application's own check: seats backed by lines no key it trusts
            // signed are not seats its vendor sold. They go back at once.
            Ok(grant)
                if !self.options.vendor_keys.is_empty()
                    && !matches!(job.purpose, Purpose::Resolve) =>
            {
                let cluster_ids = self.client.options().tls.cluster_ids();
                match grant.verify(&self.options.vendor_keys, &cluster_ids) {
                    Ok(()) => Ok(grant),
                    Err(reason) => {
                        warn!(token = %grant.token, %reason, "grant backed by a line no trusted vendor key signed: checking it in");
                        let (token, feature) = (grant.token, grant.feature.clone());
                        self.held.insert(
                            token,
                            Held {
                                grant,
                                releasing: true,
                            },
                        );
                        let id = self.next_id();
                        // The caller hears of the refusal once the check-in is
                        // answered: a caller that closes or drops the session on
                        // this error then leaves no seat held.
                        let refused = Refused {
                            job,
                            error: ClientError::UntrustedLicense { feature, reason },
                        };
                        self.spawn_checkin_then(id, token, None, Some(Box::new(refused)));
                        return;
                    }
                }
            }
            other => other,
        };
        match result {
            Ok(grant) => match job.purpose {
                Purpose::App(reply) => {
                    self.held.insert(
                        grant.token,
                        Held {
                            grant: grant.clone(),
                            releasing: false,
                        },
                    );
                    if reply.send(Ok(grant)).is_err() {
                        debug!(
                            "the application stopped waiting for a check-out; the grant is held"
                        );
                    }
                }
                Purpose::Recover { lost } => {
                    self.held.insert(
                        grant.token,
                        Held {
                            grant: grant.clone(),
                            releasing: false,
                        },
                    );
                    self.aliases.insert(lost.token, grant.token);
                    self.emit(SessionEvent::GrantRecovered {
                        lost: lost.token,
                        grant,
                    });
                }
                Purpose::Resolve => {
                    info!(token = %grant.token, "a check-out the application was told failed was granted: checking it in");
                    // Held (and quoted) until the check-in is through.
                    self.held.insert(
                        grant.token,
                        Held {
                            grant: grant.clone(),
                            releasing: true,
                        },
                    );
                    let id = self.next_id();
                    self.spawn_checkin(id, grant.token, None);
                }
            },
            Err(ClientError::SessionExpired) => {
                if job.id.secret == self.secret {
                    self.restart_session();
                    // The cluster just answered: check the lost grants out again now.
                    self.resume_pending();
                }
                if matches!(job.purpose, Purpose::Resolve) {
                    return; // The session's seats are gone; nothing to resolve.
                }
                job.restarts += 1;
                if job.restarts > SESSION_RESTARTS_MAX {
                    self.fail_checkout(job, ClientError::SessionExpired);
                    return;
                }
                job.id = self.next_id();
                self.spawn_checkout(job);
            }
            Err(error @ ClientError::Unreachable { .. }) => match job.purpose {
                Purpose::App(reply) => {
                    let unresolved = CheckoutJob {
                        id: job.id,
                        feature: job.feature,
                        version: job.version,
                        count: job.count,
                        purpose: Purpose::Resolve,
                        restarts: 0,
                    };
                    self.remember_unresolved(unresolved);
                    let _ = reply.send(Err(error));
                }
                Purpose::Recover { lost } => self.recovering.push(lost),
                Purpose::Resolve => self.remember_unresolved(job),
            },
            Err(error) => self.fail_checkout(job, error),
        }
    }

    fn remember_unresolved(&mut self, job: CheckoutJob) {
        if job.id.secret != self.secret || self.unresolved.len() >= UNRESOLVED_MAX {
            warn!(request = ?job.id.id(), "a check-out's outcome will not be resolved");
            return;
        }
        self.unresolved.push(job);
    }

    fn fail_checkout(&mut self, job: CheckoutJob, error: ClientError) {
        match job.purpose {
            Purpose::App(reply) => {
                let _ = reply.send(Err(error));
            }
            Purpose::Recover { lost } => self.emit(SessionEvent::GrantNotRecovered {
                lost: lost.token,
                feature: lost.feature,
                count: lost.count,
                reason: error.to_string(),
            }),
            Purpose::Resolve => {
                debug!(request = ?job.id.id(), %error, "a check-out with unknown outcome was not granted")
            }
        }
    }

    fn checked_in(
        &mut self,
        id: SessionRequest,
        token: GrantToken,
        reply: Option<oneshot::Sender<Result<Checkin, ClientError>>>,
        result: Result<Checkin, ClientError>,
    ) {
        match &result {
            Ok(checkin) => {
                self.contact();
                self.held.remove(&token);
                self.aliases.retain(|_, t| *t != token);
                if !checkin.released {
                    debug!(%token, "checked in a grant the cluster did not hold");
                }
            }
            Err(ClientError::Unreachable { .. }) => {
                if id.secret == self.secret && self.held.contains_key(&token) {
                    self.pending_checkins.push((id, token));
                }
            }
            Err(error) => {
                warn!(%token, %error, "check-in refused");
                if let Some(held) = self.held.get_mut(&token) {
                    held.releasing = false;
                }
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    /// Waits for calls in flight, resolves unknown check-outs, checks every
    /// grant in, and marks the session closed.
    async fn close(&mut self) -> Result<(), ClientError> {
        self.closing = true;
        // A renewal is moot now; check-outs in flight are waited for, so that
        // a seat granted at the last moment is checked in too.
        if let Some(renew) = self.renew.take() {
            renew.abort();
        }
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(done) => self.finished(done),
                Err(error) if error.is_cancelled() => {}
                Err(error) => error!(%error, "a session sub-task failed"),
            }
        }
        let timeout = self.client.options().call_timeout;
        let (user, host) = (self.options.user.clone(), self.options.host.clone());
        for job in std::mem::take(&mut self.unresolved) {
            let want = job.want(&self.options.vendor);
            let mut granted = self
                .client
                .checkout_within(timeout, &job.id, &want, &user, &host)
                .await;
            let stale = match &granted {
                Err(ClientError::StaleRequest) => true,
                Ok(grant) => self.is_known(grant.token),
                Err(_) => false,
            };
            if stale {
                let known: BTreeSet<GrantToken> = self
                    .held
                    .keys()
                    .chain(self.adopted.iter())
                    .copied()
                    .collect();
                let candidates = self
                    .client
                    .session_grants_within(
                        timeout,
                        &job.id.secret,
                        &want,
                        |g| !known.contains(&g.token),
                        ADOPTION_CANDIDATES_MAX,
                    )
                    .await;
                granted = match candidates {
                    Ok(candidates) => self
                        .take_unknown(&job, candidates)
                        .ok_or(ClientError::StaleRequest),
                    Err(error) => Err(error),
                };
            }
            if let Ok(grant) = granted {
                self.held.insert(
                    grant.token,
                    Held {
                        grant,
                        releasing: true,
                    },
                );
            }
        }
        let mut first_error = None;
        let pending: HashMap<GrantToken, SessionRequest> =
            std::mem::take(&mut self.pending_checkins)
                .into_iter()
                .map(|(id, token)| (token, id))
                .collect();
        let tokens: Vec<GrantToken> = self.held.keys().copied().collect();
        let mut checkins = JoinSet::new();
        for token in tokens {
            let id = pending
                .get(&token)
                .cloned()
                .unwrap_or_else(|| self.next_id());
            let client = self.client.clone();
            checkins
                .spawn(async move { (token, client.checkin_within(timeout, &id, token).await) });
        }
        while let Some(joined) = checkins.join_next().await {
            match joined {
                Ok((token, Ok(_))) => {
                    self.held.remove(&token);
                }
                Ok((token, Err(error))) => {
                    warn!(%token, %error, "check-in at close failed");
                    first_error.get_or_insert(error);
                }
                Err(error) => error!(%error, "a check-in task failed"),
            }
        }
        info!(session = %self.session, "session closed");
        self.set_state(SessionState::Closed);
        first_error.map_or(Ok(()), Err)
    }
}
