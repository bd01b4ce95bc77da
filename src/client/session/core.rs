//! The session's decisions, as a plain state machine: no tasks, no network,
//! no clock. [`Core::step`] takes what happened ([`Input`]: a request of the
//! application, a timer that came due, the answer to a call) with the time it
//! happened at ([`Now`]), and returns what to do ([`Action`]: make a call,
//! answer the application, publish a state or an event). The task in
//! `actor.rs` performs the actions and feeds the calls' answers back as
//! inputs; it sleeps until the deadlines the core names
//! ([`Core::heartbeat_at`], [`Core::grace_at`], [`Core::lapse_at`]).
//!
//! The rules are the ones the module doc of `super` states: the renewal
//! cadence (a third of the session TTL the cluster announces, or the
//! configured interval, never below [`HEARTBEAT_MIN`]), caching mode on an
//! unanswered renewal or when the last answered one stops covering the
//! grants, the grace deadline, the probe pause while cut off, leaving caching
//! mode on the first answer, which grants are lost, recovered, resolved or
//! adopted after a stale answer.
//!
//! Left out: the application's reply channels (a waiting application is
//! named by a [`Ticket`]; the actor keeps the channel), and randomness beyond
//! drawing a new session secret when the cluster expired the session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    ADOPTED_REMEMBERED, CACHING_PROBE_PAUSE, DEFAULT_SESSION_TTL, GRACE_WAKE_MAX, HEARTBEAT_MIN,
    SESSION_RESTARTS_MAX, SessionEvent, SessionOptions, SessionState, UNRESOLVED_MAX,
    VALIDITY_MARGIN_DIVISOR,
};
use crate::client::error::ClientError;
use crate::client::rpc::{CacheReport, Checkin, Grant, Renewal, SessionRequest, Want};
use crate::license::ClusterId;
use crate::license::ids::Term;
use crate::license::secret::SessionSecret;
use crate::license::state::{GrantToken, SessionId};

/// A moment, on both clocks: the monotonic one that deadlines are set on,
/// and the wall clock that events and caching reports quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Now {
    /// The monotonic clock (tokio's, which tests pause and advance).
    pub at: Instant,
    /// The wall clock at the same moment.
    pub wall: SystemTime,
}

impl Now {
    /// The moment now.
    pub fn read() -> Now {
        Now {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Names an application's request waiting for its answer; the actor holds
/// the reply channel under it.
pub(super) type Ticket = u64;

/// A grant the session holds.
struct Held {
    grant: Grant,
    /// A check-in has been sent (or failed and waits to be retried).
    releasing: bool,
}

/// Why a check-out is being made.
#[derive(Debug)]
pub(super) enum Purpose {
    /// The application asked; it waits for the answer.
    App(Ticket),
    /// A lost grant is being checked out again.
    Recover {
        /// The grant that was lost.
        lost: Grant,
    },
    /// A check-out whose call got no answer is asked again with the same id,
    /// to learn whether a seat was granted (and check it in if so).
    Resolve,
}

/// One check-out, as it travels from the core to a call and back.
#[derive(Debug)]
pub(super) struct CheckoutJob {
    /// The request id (kept across retries of the same check-out).
    pub id: SessionRequest,
    pub feature: String,
    pub version: String,
    pub count: u32,
    pub purpose: Purpose,
    /// How many times it was moved to a new session id.
    pub restarts: u32,
}

impl CheckoutJob {
    /// What the check-out asks for, of `vendor`.
    pub fn want(&self, vendor: &str) -> Want {
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
#[derive(Debug)]
pub(super) struct Refused {
    pub job: CheckoutJob,
    pub error: ClientError,
}

/// Something that happened to the session.
#[derive(Debug)]
pub(super) enum Input {
    /// The application asks for seats.
    Checkout {
        feature: String,
        version: String,
        count: u32,
        ticket: Ticket,
    },
    /// The application checks a grant in.
    Checkin { token: GrantToken, ticket: Ticket },
    /// [`Core::heartbeat_at`] came: renew.
    HeartbeatDue,
    /// [`Core::grace_at`] came: has the grace period run out?
    GraceDue,
    /// [`Core::lapse_at`] came: the last answered renewal no longer covers the grants.
    Lapsed,
    /// The renewal's task died without an answer.
    RenewLost,
    /// A renewal of `session`, whose call started at `sent`, was answered (or not).
    Renewed {
        session: SessionId,
        sent: Instant,
        result: Result<Renewal, ClientError>,
    },
    /// A check-out call ended.
    CheckedOut {
        job: Box<CheckoutJob>,
        result: Result<Grant, ClientError>,
    },
    /// The grants a check-out answered "stale" may have taken, as the cluster listed them.
    Adoptable {
        job: Box<CheckoutJob>,
        result: Result<Vec<Grant>, ClientError>,
    },
    /// A check-in call ended.
    CheckedIn {
        id: SessionRequest,
        token: GrantToken,
        ticket: Option<Ticket>,
        refused: Option<Box<Refused>>,
        result: Result<Checkin, ClientError>,
    },
}

/// What the actor is to do, in order.
#[derive(Debug)]
pub(super) enum Action {
    /// Call a check-out; answer with [`Input::CheckedOut`].
    Checkout { job: Box<CheckoutJob>, want: Want },
    /// Call a check-in; answer with [`Input::CheckedIn`].
    Checkin {
        id: SessionRequest,
        token: GrantToken,
        ticket: Option<Ticket>,
        refused: Option<Box<Refused>>,
    },
    /// Call a renewal quoting `tokens` (at most one in flight); answer with [`Input::Renewed`].
    Renew {
        session: SessionId,
        secret: SessionSecret,
        tokens: Vec<GrantToken>,
        report: CacheReport,
    },
    /// List the session's grants matching `want` that are not in `known`
    /// (the oldest first); answer with [`Input::Adoptable`].
    Adopt {
        job: Box<CheckoutJob>,
        want: Want,
        known: BTreeSet<GrantToken>,
    },
    /// Answer the application's check-out.
    ReplyCheckout {
        ticket: Ticket,
        result: Result<Grant, ClientError>,
    },
    /// Answer the application's check-in.
    ReplyCheckin {
        ticket: Ticket,
        result: Result<Checkin, ClientError>,
    },
    /// The session's id is now this one (before the event that announces it).
    SetId(SessionId),
    /// Publish the session's state.
    SetState(SessionState),
    /// Publish an event.
    Emit(SessionEvent),
}

/// The session's state and rules.
pub(super) struct Core {
    options: SessionOptions,
    /// The identities of the CAs the application trusts, for checking grants
    /// against [`SessionOptions::vendor_keys`].
    cluster_ids: Vec<ClusterId>,
    /// The session's secret, sent on every request; never logged.
    secret: SessionSecret,
    /// Its public handle, for logs and events.
    session: SessionId,
    seq: u64,
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
    /// When the cluster last answered.
    last_contact: Option<Now>,
    /// The node and term that answered the last renewal.
    last_connected: Option<(String, Term)>,
    started: Now,
    state: SessionState,
    /// A renewal is in flight (at most one at a time).
    renewing: bool,
    next_heartbeat: Instant,
    /// In caching mode: when the grace period ends.
    grace_deadline: Option<Instant>,
    /// Until when the last answered renewal of this session id keeps grants
    /// valid (see [`VALIDITY_MARGIN_DIVISOR`]).
    valid_until: Option<Instant>,
    closing: bool,
    /// The time of the step being taken.
    now: Now,
    /// The actions of the step being taken.
    out: Vec<Action>,
}

impl Core {
    /// A session that starts at `now` under `secret`; its first heartbeat is due at once.
    pub fn new(
        options: SessionOptions,
        cluster_ids: Vec<ClusterId>,
        secret: SessionSecret,
        now: Now,
    ) -> Core {
        let session = secret.handle();
        Core {
            options,
            cluster_ids,
            secret,
            session,
            seq: 0,
            held: BTreeMap::new(),
            adopted: BTreeSet::new(),
            aliases: HashMap::new(),
            pending_checkins: Vec::new(),
            unresolved: Vec::new(),
            recovering: Vec::new(),
            ttl: DEFAULT_SESSION_TTL,
            last_contact: None,
            last_connected: None,
            started: now,
            state: SessionState::Connecting,
            renewing: false,
            next_heartbeat: now.at,
            grace_deadline: None,
            valid_until: None,
            closing: false,
            now,
            out: Vec::new(),
        }
    }

    /// The options the session was started with.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// The session's public handle now.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The session's state now.
    #[cfg(test)]
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// When the next renewal is due; `None` while one is in flight.
    pub fn heartbeat_at(&self) -> Option<Instant> {
        (!self.renewing).then_some(self.next_heartbeat)
    }

    /// In caching mode, when to look at the grace period again: its end, or
    /// [`GRACE_WAKE_MAX`] from `now` if that is sooner.
    pub fn grace_at(&self, now: Instant) -> Option<Instant> {
        self.grace_deadline.map(|d| d.min(now + GRACE_WAKE_MAX))
    }

    /// While connected: the moment the last answered renewal stops covering
    /// the grants, if no other is answered first.
    pub fn lapse_at(&self) -> Option<Instant> {
        match self.state {
            SessionState::Connected { valid_until, .. } => Some(valid_until),
            _ => None,
        }
    }

    /// The grants the application holds (not counting those being checked in).
    pub fn grants(&self) -> Vec<Grant> {
        let held = self.held.values().filter(|h| !h.releasing);
        held.map(|h| h.grant.clone()).collect()
    }

    /// Takes `input`, which happened at `now`; returns what to do, in order.
    pub fn step(&mut self, now: Now, input: Input) -> Vec<Action> {
        self.now = now;
        match input {
            Input::Checkout {
                feature,
                version,
                count,
                ticket,
            } => {
                let id = self.next_id();
                self.checkout(CheckoutJob {
                    id,
                    feature,
                    version,
                    count,
                    purpose: Purpose::App(ticket),
                    restarts: 0,
                });
            }
            Input::Checkin { token, ticket } => self.checkin(token, ticket),
            Input::HeartbeatDue => self.start_renew(),
            Input::GraceDue => self.check_grace(),
            Input::Lapsed => {
                self.enter_caching(&[], "no renewal was answered within the session TTL")
            }
            Input::RenewLost => {
                // Keep heartbeating even if one renewal task died.
                self.renewing = false;
                self.next_heartbeat = self.now.at + self.heartbeat_interval();
            }
            Input::Renewed {
                session,
                sent,
                result,
            } => self.renewed(session, sent, result),
            Input::CheckedOut { job, result } => self.checked_out(*job, result),
            Input::Adoptable { job, result } => self.adopt(*job, result),
            Input::CheckedIn {
                id,
                token,
                ticket,
                refused,
                result,
            } => {
                self.checked_in(id, token, ticket, result);
                if let Some(refused) = refused {
                    let Refused { job, error } = *refused;
                    self.fail_checkout(job, error);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    fn next_id(&mut self) -> SessionRequest {
        self.seq += 1;
        SessionRequest {
            secret: self.secret.clone(),
            seq: self.seq,
        }
    }

    fn emit(&mut self, event: SessionEvent) {
        self.out.push(Action::Emit(event));
    }

    fn set_state(&mut self, state: SessionState) {
        self.state = state.clone();
        self.out.push(Action::SetState(state));
    }

    fn is_caching(&self) -> bool {
        matches!(
            self.state,
            SessionState::Caching { .. } | SessionState::GraceExpired { .. }
        )
    }

    fn heartbeat_interval(&self) -> Duration {
        self.options
            .heartbeat_interval
            .unwrap_or(self.ttl / 3)
            .max(HEARTBEAT_MIN)
    }

    fn checkin(&mut self, token: GrantToken, ticket: Ticket) {
        let token = self.current_token(token);
        if let Some(held) = self.held.get_mut(&token) {
            held.releasing = true;
        }
        // A check-in already pending for this grant keeps its request id.
        let id = match self.pending_checkins.iter().position(|(_, t)| *t == token) {
            Some(i) => self.pending_checkins.swap_remove(i).0,
            None => self.next_id(),
        };
        self.send_checkin(id, token, Some(ticket), None);
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

    fn checkout(&mut self, job: CheckoutJob) {
        debug!(session = %self.session, request = ?job.id.id(), feature = %job.feature, "sending a check-out");
        let want = job.want(&self.options.vendor);
        self.out.push(Action::Checkout {
            job: Box::new(job),
            want,
        });
    }

    /// Checks `token` in; once the call is answered (or has failed, and waits
    /// to be retried), fails the check-out `refused` if given.
    fn send_checkin(
        &mut self,
        id: SessionRequest,
        token: GrantToken,
        ticket: Option<Ticket>,
        refused: Option<Box<Refused>>,
    ) {
        self.out.push(Action::Checkin {
            id,
            token,
            ticket,
            refused,
        });
    }

    fn start_renew(&mut self) {
        let tokens: Vec<GrantToken> = self.held.keys().copied().collect();
        let report = match &self.state {
            SessionState::Caching { since, .. } | SessionState::GraceExpired { since } => {
                CacheReport {
                    cached_for_ms: self
                        .now
                        .wall
                        .duration_since(*since)
                        .map_or(0, |d| d.as_millis() as u64),
                    cached_since_ms: crate::clock::epoch_ms(*since),
                }
            }
            _ => CacheReport::default(),
        };
        self.renewing = true;
        self.out.push(Action::Renew {
            session: self.session,
            secret: self.secret.clone(),
            tokens,
            report,
        });
    }

    fn contact(&mut self) {
        self.last_contact = Some(self.now);
    }

    fn renewed(&mut self, session: SessionId, sent: Instant, result: Result<Renewal, ClientError>) {
        self.renewing = false;
        let renewal = match result {
            Ok(renewal) => renewal,
            Err(ClientError::Unreachable { tried, last }) => {
                if !self.is_caching() {
                    self.enter_caching(&tried, &last);
                } else {
                    debug!(session = %self.session, %last, "cluster still unreachable");
                }
                self.next_heartbeat =
                    self.now.at + CACHING_PROBE_PAUSE.min(self.heartbeat_interval());
                return;
            }
            Err(error) => {
                warn!(session = %self.session, %error, "renewal refused");
                self.next_heartbeat = self.now.at + self.heartbeat_interval();
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
        let previous = std::mem::replace(&mut self.state, SessionState::Closed);
        self.set_state(SessionState::Connected {
            valid_until,
            active_address: renewal.address.clone(),
            term: renewal.term,
        });
        self.announce(previous, &renewal);
        self.last_connected = Some((renewal.address.clone(), Term(renewal.term)));
        if session == self.session {
            for removed in &renewal.removed {
                if self.held.get(&removed.token).is_some_and(|h| !h.releasing) {
                    self.removed(removed);
                }
            }
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
        self.next_heartbeat = self.now.at + self.heartbeat_interval();
        self.resume_pending();
    }

    /// The events an answered `renewal` makes of the `previous` state.
    fn announce(&mut self, previous: SessionState, renewal: &Renewal) {
        let to = || renewal.address.clone();
        match previous {
            SessionState::Connecting => self.emit(SessionEvent::Connected {
                address: to(),
                term: renewal.term,
            }),
            SessionState::Connected {
                active_address,
                term,
                ..
            } => {
                if active_address != renewal.address || term != renewal.term {
                    self.emit(SessionEvent::FailedOver {
                        from: active_address,
                        to: to(),
                        term: renewal.term,
                    });
                }
            }
            SessionState::Caching { since, .. } | SessionState::GraceExpired { since } => {
                let cached_for = self.now.wall.duration_since(since).unwrap_or_default();
                info!(
                    session = %self.session,
                    cached_for_ms = cached_for.as_millis() as u64,
                    grants = self.held.len(),
                    address = %renewal.address,
                    "left caching mode; the cluster was told how long the session was cut off"
                );
                self.grace_deadline = None;
                self.emit(SessionEvent::LeftCaching {
                    cached_for,
                    address: to(),
                    term: renewal.term,
                });
                // The active node may have changed while the session was cut off.
                if let Some((from, term)) = self.last_connected.take()
                    && (from != renewal.address || term != Term(renewal.term))
                {
                    self.emit(SessionEvent::FailedOver {
                        from,
                        to: to(),
                        term: renewal.term,
                    });
                }
            }
            SessionState::Closed => {}
        }
    }

    fn enter_caching(&mut self, tried: &[String], last: &str) {
        let since = self.last_contact.unwrap_or(self.started);
        let grace = since
            .at
            .checked_add(self.options.grace_period)
            .unwrap_or(since.at);
        let deadline = self.valid_until.map_or(grace, |v| v.max(grace));
        let grace_until = since
            .wall
            .checked_add(deadline.saturating_duration_since(since.at))
            .unwrap_or(since.wall);
        self.grace_deadline = Some(deadline);
        warn!(
            session = %self.session,
            ?tried,
            %last,
            grants = self.held.len(),
            "no node answered the renewal: entering caching mode"
        );
        self.set_state(SessionState::Caching {
            since: since.wall,
            grace_until,
            valid_until: deadline,
        });
        self.emit(SessionEvent::EnteredCaching {
            since: since.wall,
            grace_until,
        });
        self.check_grace();
    }

    fn check_grace(&mut self) {
        let Some(deadline) = self.grace_deadline else {
            return;
        };
        if self.now.at < deadline {
            return;
        }
        self.grace_deadline = None;
        if let SessionState::Caching { since, .. } = self.state {
            warn!(session = %self.session, "the grace period ran out: grants are no longer valid");
            self.set_state(SessionState::GraceExpired { since });
            self.emit(SessionEvent::GraceExpired { since });
        }
    }

    /// A held grant is gone from the cluster: report it and check it out again.
    /// An administrator removed a held grant: forgotten, announced, and not
    /// checked out again.
    fn removed(&mut self, removed: &crate::client::rpc::Removed) {
        let Some(held) = self.held.remove(&removed.token) else {
            return;
        };
        info!(
            session = %self.session,
            token = %removed.token,
            feature = %held.grant.feature,
            by = %removed.by,
            "an administrator removed a grant; it is not checked out again"
        );
        self.emit(SessionEvent::GrantRemoved {
            token: removed.token,
            feature: held.grant.feature.clone(),
            count: held.grant.count,
            by: removed.by.clone(),
            at: removed.at,
        });
    }

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
            self.send_checkin(id, token, None, None);
        }
        for job in std::mem::take(&mut self.unresolved) {
            self.checkout(job);
        }
        for lost in std::mem::take(&mut self.recovering) {
            let id = self.next_id();
            let (feature, version, count) =
                (lost.feature.clone(), lost.version.clone(), lost.count);
            self.checkout(CheckoutJob {
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
        self.out.push(Action::SetId(self.session));
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

    /// Whether a check-out's `result` leaves its outcome unknown: answered
    /// "stale request", or a grant that was adopted for another request.
    pub fn is_stale(&self, result: &Result<Grant, ClientError>) -> bool {
        match result {
            Err(ClientError::StaleRequest) => true,
            // The grant was adopted for another (stale) request of the same
            // seats: that request's own grant is this one's to take.
            Ok(grant) => self.is_known(grant.token),
            Err(_) => false,
        }
    }

    fn checked_out(&mut self, job: CheckoutJob, result: Result<Grant, ClientError>) {
        if self.is_stale(&result) && job.id.secret == self.secret {
            if result.is_ok() {
                self.contact();
            }
            let want = job.want(&self.options.vendor);
            let known = self.known();
            self.out.push(Action::Adopt {
                job: Box::new(job),
                want,
                known,
            });
            return;
        }
        self.accept(job, result);
    }

    /// Whether the session holds `token` or has adopted it.
    fn is_known(&self, token: GrantToken) -> bool {
        self.held.contains_key(&token) || self.adopted.contains(&token)
    }

    /// The grants the session holds or has adopted.
    pub fn known(&self) -> BTreeSet<GrantToken> {
        self.held
            .keys()
            .chain(self.adopted.iter())
            .copied()
            .collect()
    }

    /// The oldest of `candidates` the session does not know yet, now taken as
    /// `job`'s grant.
    pub fn take_unknown(&mut self, job: &CheckoutJob, candidates: Vec<Grant>) -> Option<Grant> {
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

    fn accept(&mut self, job: CheckoutJob, result: Result<Grant, ClientError>) {
        if result.is_ok() {
            self.contact();
            if self.is_caching() {
                // The cluster answers again: renew now to leave caching mode.
                self.next_heartbeat = self.now.at;
            }
        }
        match result {
            Ok(grant) => {
                // The application's own check: seats backed by lines no key it trusts
                // signed are not seats its vendor sold. They go back at once.
                if !self.options.vendor_keys.is_empty()
                    && !matches!(job.purpose, Purpose::Resolve)
                    && let Err(reason) = grant.verify(&self.options.vendor_keys, &self.cluster_ids)
                {
                    self.refuse(job, grant, reason);
                    return;
                }
                self.granted(job, grant);
            }
            Err(ClientError::SessionExpired) => self.expired(job),
            Err(error @ ClientError::Unreachable { .. }) => match job.purpose {
                Purpose::App(ticket) => {
                    let unresolved = CheckoutJob {
                        id: job.id,
                        feature: job.feature,
                        version: job.version,
                        count: job.count,
                        purpose: Purpose::Resolve,
                        restarts: 0,
                    };
                    self.remember_unresolved(unresolved);
                    self.out.push(Action::ReplyCheckout {
                        ticket,
                        result: Err(error),
                    });
                }
                Purpose::Recover { lost } => self.recovering.push(lost),
                Purpose::Resolve => self.remember_unresolved(job),
            },
            Err(error) => self.fail_checkout(job, error),
        }
    }

    /// `grant` is backed by a line no trusted vendor key signed: it is
    /// checked in, and `job` fails once that check-in is answered, so a
    /// caller that closes or drops the session on this error leaves no seat held.
    fn refuse(&mut self, job: CheckoutJob, grant: Grant, reason: String) {
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
        let refused = Refused {
            job,
            error: ClientError::UntrustedLicense { feature, reason },
        };
        self.send_checkin(id, token, None, Some(Box::new(refused)));
    }

    /// `job` was granted `grant`.
    fn granted(&mut self, job: CheckoutJob, grant: Grant) {
        let releasing = matches!(job.purpose, Purpose::Resolve);
        self.held.insert(
            grant.token,
            Held {
                grant: grant.clone(),
                releasing,
            },
        );
        match job.purpose {
            Purpose::App(ticket) => self.out.push(Action::ReplyCheckout {
                ticket,
                result: Ok(grant),
            }),
            Purpose::Recover { lost } => {
                self.aliases.insert(lost.token, grant.token);
                self.emit(SessionEvent::GrantRecovered {
                    lost: lost.token,
                    grant,
                });
            }
            Purpose::Resolve => {
                info!(token = %grant.token, "a check-out the application was told failed was granted: checking it in");
                // Held (and quoted) until the check-in is through.
                let id = self.next_id();
                self.send_checkin(id, grant.token, None, None);
            }
        }
    }

    /// The cluster expired the session `job` was sent in: go on under a new
    /// session and send `job` again there, at most [`SESSION_RESTARTS_MAX`] times.
    fn expired(&mut self, mut job: CheckoutJob) {
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
        self.checkout(job);
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
            Purpose::App(ticket) => self.out.push(Action::ReplyCheckout {
                ticket,
                result: Err(error),
            }),
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
        ticket: Option<Ticket>,
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
        if let Some(ticket) = ticket {
            self.out.push(Action::ReplyCheckin { ticket, result });
        }
    }

    /// Closing: no renewal any more, nothing resumed; calls in flight still count.
    pub fn begin_close(&mut self) {
        self.closing = true;
        self.renewing = false;
    }

    /// The check-outs whose outcome is still unknown, to resolve before closing.
    pub fn take_unresolved(&mut self) -> Vec<CheckoutJob> {
        std::mem::take(&mut self.unresolved)
    }

    /// `grant` (found while closing) is held until it is checked in.
    pub fn hold_to_release(&mut self, grant: Grant) {
        self.held.insert(
            grant.token,
            Held {
                grant,
                releasing: true,
            },
        );
    }

    /// Every grant held, with the request id to check it in with (the one a
    /// pending check-in already has, else a new one).
    pub fn final_checkins(&mut self) -> Vec<(SessionRequest, GrantToken)> {
        let pending: HashMap<GrantToken, SessionRequest> =
            std::mem::take(&mut self.pending_checkins)
                .into_iter()
                .map(|(id, token)| (token, id))
                .collect();
        let tokens: Vec<GrantToken> = self.held.keys().copied().collect();
        tokens
            .into_iter()
            .map(|token| {
                let id = pending
                    .get(&token)
                    .cloned()
                    .unwrap_or_else(|| self.next_id());
                (id, token)
            })
            .collect()
    }

    /// `token` was checked in at close.
    pub fn released_at_close(&mut self, token: GrantToken) {
        self.held.remove(&token);
    }

    /// The session is closed.
    pub fn closed(&mut self) -> Vec<Action> {
        info!(session = %self.session, "session closed");
        self.set_state(SessionState::Closed);
        std::mem::take(&mut self.out)
    }
}
