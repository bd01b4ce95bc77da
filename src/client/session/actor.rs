//! The session's task: the one owner of its [`Core`]. It takes the
//! handle's requests over a bounded channel, sleeps until the deadlines the
//! core names, runs the calls the core asks for as sub-tasks (so a slow
//! check-out never delays a heartbeat, and an answer is recorded even if the
//! caller stopped waiting for it), feeds their answers back, and publishes
//! the state and events the core decides on.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::core::{Action, CheckoutJob, Core, Input, Now, Refused, Ticket};
use super::{ADOPTION_CANDIDATES_MAX, SessionEvent, SessionState};
use crate::client::error::ClientError;
use crate::client::rpc::{CacheReport, Checkin, Client, Grant, SessionRequest, Want};
use crate::license::secret::SessionSecret;
use crate::license::state::{GrantToken, SessionId};

/// What the [`Session`](super::Session) handle asks of the task.
pub(super) enum Request {
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

/// The task that performs a session's core.
pub(super) struct Actor {
    pub core: Core,
    pub client: Client,
    // std Mutex: one copy in or out, never held across `.await`.
    pub id: Arc<Mutex<SessionId>>,
    pub state: watch::Sender<SessionState>,
    pub events: broadcast::Sender<SessionEvent>,
    /// The calls in flight; each ends in an input for the core.
    pub tasks: JoinSet<Input>,
    /// The renewal in flight, if any (at most one at a time).
    pub renew: Option<AbortHandle>,
    /// The application's check-outs waiting for their answer.
    pub checkout_replies: HashMap<Ticket, oneshot::Sender<Result<Grant, ClientError>>>,
    /// The application's check-ins waiting for their answer.
    pub checkin_replies: HashMap<Ticket, oneshot::Sender<Result<Checkin, ClientError>>>,
    pub next_ticket: Ticket,
}

impl Actor {
    /// Runs until the handle closes the session or is dropped.
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            let heartbeat_at = self.core.heartbeat_at();
            let grace_at = self.core.grace_at(Instant::now());
            let lapse_at = self.core.lapse_at();
            // A timer that is not armed sleeps until a moment its guard never lets it reach.
            let never = Instant::now();
            let input = tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Close { reply }) => {
                        let result = self.close().await;
                        let _ = reply.send(result);
                        return;
                    }
                    Some(request) => match self.input(request) {
                        Some(input) => input,
                        None => continue,
                    },
                    None => {
                        debug!(session = %self.core.session(), "session handle dropped: stopping");
                        return;
                    }
                },
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => match joined {
                    Ok(input) => input,
                    Err(error) => {
                        error!(%error, "a session sub-task failed");
                        if self.renew.as_ref().is_none_or(|r| r.id() != error.id()) {
                            continue;
                        }
                        self.renew = None;
                        Input::RenewLost
                    }
                },
                _ = tokio::time::sleep_until(heartbeat_at.unwrap_or(never)), if heartbeat_at.is_some() => Input::HeartbeatDue,
                _ = tokio::time::sleep_until(grace_at.unwrap_or(never)), if grace_at.is_some() => Input::GraceDue,
                _ = tokio::time::sleep_until(lapse_at.unwrap_or(never)), if lapse_at.is_some() => Input::Lapsed,
            };
            self.step(input);
        }
    }

    /// The core's input for a request of the handle; `None` when it is
    /// answered at once.
    fn input(&mut self, request: Request) -> Option<Input> {
        let ticket = self.next_ticket;
        match request {
            Request::Checkout {
                feature,
                version,
                count,
                reply,
            } => {
                self.next_ticket += 1;
                self.checkout_replies.insert(ticket, reply);
                Some(Input::Checkout {
                    feature,
                    version,
                    count,
                    ticket,
                })
            }
            Request::Checkin { token, reply } => {
                self.next_ticket += 1;
                self.checkin_replies.insert(ticket, reply);
                Some(Input::Checkin { token, ticket })
            }
            Request::Grants { reply } => {
                let _ = reply.send(self.core.grants());
                None
            }
            Request::Close { .. } => unreachable!("close is handled by run"),
        }
    }

    /// Feeds `input` to the core and performs what it decides.
    fn step(&mut self, input: Input) {
        if matches!(input, Input::Renewed { .. }) {
            self.renew = None;
        }
        let actions = self.core.step(Now::read(), input);
        for action in actions {
            self.perform(action);
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Checkout { job, want } => self.spawn_checkout(job, want),
            Action::Checkin {
                id,
                token,
                ticket,
                refused,
            } => self.spawn_checkin(id, token, ticket, refused),
            Action::Renew {
                session,
                secret,
                tokens,
                report,
            } => self.spawn_renew(session, secret, tokens, report),
            Action::Adopt { job, want, known } => self.spawn_adopt(job, want, known),
            Action::ReplyCheckout { ticket, result } => {
                let granted = result.is_ok();
                if let Some(reply) = self.checkout_replies.remove(&ticket)
                    && reply.send(result).is_err()
                    && granted
                {
                    debug!("the application stopped waiting for a check-out; the grant is held");
                }
            }
            Action::ReplyCheckin { ticket, result } => {
                if let Some(reply) = self.checkin_replies.remove(&ticket) {
                    let _ = reply.send(result);
                }
            }
            Action::SetId(session) => *self.id.lock().unwrap_or_else(|p| p.into_inner()) = session,
            Action::SetState(state) => {
                self.state.send_replace(state);
            }
            Action::Emit(event) => {
                info!(session = %self.core.session(), ?event, "session event");
                // No receiver is not an error: nobody is listening.
                let _ = self.events.send(event);
            }
        }
    }

    fn spawn_checkout(&mut self, job: Box<CheckoutJob>, want: Want) {
        let client = self.client.clone();
        let timeout = client.options().call_timeout;
        let options = self.core.options();
        let (user, host) = (options.user.clone(), options.host.clone());
        self.tasks.spawn(async move {
            let result = client
                .checkout_within(timeout, &job.id, &want, &user, &host)
                .await;
            Input::CheckedOut { job, result }
        });
    }

    fn spawn_checkin(
        &mut self,
        id: SessionRequest,
        token: GrantToken,
        ticket: Option<Ticket>,
        refused: Option<Box<Refused>>,
    ) {
        let client = self.client.clone();
        let timeout = client.options().call_timeout;
        self.tasks.spawn(async move {
            let result = client.checkin_within(timeout, &id, token).await;
            Input::CheckedIn {
                id,
                token,
                ticket,
                refused,
                result,
            }
        });
    }

    fn spawn_renew(
        &mut self,
        session: SessionId,
        secret: SessionSecret,
        tokens: Vec<GrantToken>,
        report: CacheReport,
    ) {
        let client = self.client.clone();
        let timeout = self.core.options().unreachable_after;
        self.renew = Some(self.tasks.spawn(async move {
            let sent = Instant::now();
            let result = client.renew_within(timeout, &secret, &tokens, report).await;
            Input::Renewed {
                session,
                sent,
                result,
            }
        }));
    }

    fn spawn_adopt(&mut self, job: Box<CheckoutJob>, want: Want, known: BTreeSet<GrantToken>) {
        let client = self.client.clone();
        let timeout = client.options().call_timeout;
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
            Input::Adoptable { job, result }
        });
    }

    /// Waits for calls in flight, resolves unknown check-outs, checks every
    /// grant in, and marks the session closed.
    async fn close(&mut self) -> Result<(), ClientError> {
        self.core.begin_close();
        // A renewal is moot now; check-outs in flight are waited for, so that
        // a seat granted at the last moment is checked in too.
        if let Some(renew) = self.renew.take() {
            renew.abort();
        }
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(input) => self.step(input),
                Err(error) if error.is_cancelled() => {}
                Err(error) => error!(%error, "a session sub-task failed"),
            }
        }
        for job in self.core.take_unresolved() {
            if let Ok(grant) = self.resolve(&job).await {
                self.core.hold_to_release(grant);
            }
        }
        let result = self.check_in_all().await;
        for action in self.core.closed() {
            self.perform(action);
        }
        result
    }

    /// Asks again, with the same id, for a check-out whose outcome is unknown.
    async fn resolve(&mut self, job: &CheckoutJob) -> Result<Grant, ClientError> {
        let timeout = self.client.options().call_timeout;
        let options = self.core.options();
        let want = job.want(&options.vendor);
        let (user, host) = (options.user.clone(), options.host.clone());
        let granted = self
            .client
            .checkout_within(timeout, &job.id, &want, &user, &host)
            .await;
        if !self.core.is_stale(&granted) {
            return granted;
        }
        let known = self.core.known();
        let candidates = self
            .client
            .session_grants_within(
                timeout,
                &job.id.secret,
                &want,
                |g| !known.contains(&g.token),
                ADOPTION_CANDIDATES_MAX,
            )
            .await?;
        self.core
            .take_unknown(job, candidates)
            .ok_or(ClientError::StaleRequest)
    }

    /// Checks in every grant held, at once; the first failure, if any.
    async fn check_in_all(&mut self) -> Result<(), ClientError> {
        let timeout = self.client.options().call_timeout;
        let mut checkins = JoinSet::new();
        for (id, token) in self.core.final_checkins() {
            let client = self.client.clone();
            checkins
                .spawn(async move { (token, client.checkin_within(timeout, &id, token).await) });
        }
        let mut first_error = None;
        while let Some(joined) = checkins.join_next().await {
            match joined {
                Ok((token, Ok(_))) => self.core.released_at_close(token),
                Ok((token, Err(error))) => {
                    warn!(%token, %error, "check-in at close failed");
                    first_error.get_or_insert(error);
                }
                Err(error) => error!(%error, "a check-in task failed"),
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
