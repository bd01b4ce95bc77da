//! The workload: concurrent client sessions that check seats out, hold them
//! while heartbeating, and check them in — every attempt recorded.
//!
//! Each session worker runs one client session at a time with raw tonic
//! clients (full control over request ids and timeouts). Its operations are
//! sequential: a check-out or a check-in gets a new request id
//! `(session, seq)`; an attempt that times out, fails in transport or is
//! answered `UNAVAILABLE` is recorded `unknown` and retried with the *same*
//! request id, following the `raftlm-leader-id` hint or moving on through
//! the access point and the nodes' own addresses, until the operation's
//! deadline. A separate heartbeat task renews the session every
//! [`WorkloadSpec::renew_every`], quoting the grants held; one renewal in
//! four ([`WorkloadSpec::renew_probe_chance`]) also quotes tokens the session
//! does not hold — one it checked in (answered ok), one granted to another
//! session, one made up — each recorded by kind, since the answer must call
//! every one of them unknown.
//!
//! A session is given up ("abandoned": heartbeats stop, grants are left to
//! expire, a new session starts) when an operation stays unknown past its
//! deadline, when the cluster says the session expired, and now and then at
//! random, so that expiry is exercised too.
//!
//! Phases: [`Phase::Run`] does all of the above; in [`Phase::Hold`] no new
//! operation starts but heartbeats go on, so grants stay held while the
//! harness reads the final state; [`Phase::Stop`] ends everything.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftlm::license::secret::SessionSecret;
use raftlm::proto::v1 as pb;
use raftlm::proto::v1::admin_client::AdminClient;
use raftlm::proto::v1::license_client::LicenseClient;
use raftlm::tls::client::ClientTls;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::history::{Event, EventType, GrantSeen, History, OpKind, Token, session_hex};
use raftlm::wire::LEADER_ID_KEY;

/// Pause before an attempt that follows a leader hint.
pub const HINT_PAUSE: Duration = Duration::from_millis(20);
/// Longest pause between attempts after failures without a hint.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long the administrator retries one import or removal.
pub const ADMIN_OP_DEADLINE: Duration = Duration::from_secs(6);
/// Most grants one session holds at once.
pub const GRANTS_PER_SESSION_MAX: usize = 2;
/// Most recent grants of every session kept for other sessions' renewals to quote.
pub const FOREIGN_GRANTS_MAX: usize = 64;
/// Most checked-in grants a session keeps for its renewals to quote.
pub const CHECKED_IN_MAX: usize = 8;

/// What the workload does.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Concurrent session workers.
    pub sessions: usize,
    /// Features and their licensed seats.
    pub features: Vec<(String, u32)>,
    /// The access point, `ip:port`.
    pub access_point: String,
    /// The nodes' own addresses (node `i + 1` at index `i`).
    pub nodes: Vec<String>,
    /// Seeds every random choice of the workload.
    pub seed: u64,
    /// Heartbeat period.
    pub renew_every: Duration,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// How long an operation is retried before it is given up as unknown.
    pub op_deadline: Duration,
    /// Chance, per step of a session, that it is abandoned.
    pub abandon_chance: f64,
    /// Chance that a check-out's or check-in's first attempt gets a 1–30 ms
    /// deadline (its answer is lost while the request is applied).
    pub short_deadline_chance: f64,
    /// How often the reader takes a linearizable Status read of every grant.
    pub read_every: Duration,
    /// Chance that a renewal also quotes tokens the session does not hold: one
    /// it checked in (answered ok), one of another session and a made-up one.
    pub renew_probe_chance: f64,
    /// How the workload's clients dial the cluster (TLS with the run's CA).
    pub tls: ClientTls,
    /// The nodes' session TTL: edge check-ins and slow heartbeats are set by it.
    pub session_ttl: Duration,
    /// How long after a session falls silent it has certainly been expired
    /// while a node serves (the drain's wait): a late check-in waits this long.
    pub expired_after: Duration,
    /// Chance that a check-out asks for a count the cluster must refuse: 0
    /// seats ("bad count") or more than are licensed ("exceeds licensed").
    pub bad_count_chance: f64,
    /// Chance that a check-in answered ok is sent again with a new request id
    /// (it must be answered "not held").
    pub double_checkin_chance: f64,
    /// Chance that a session heartbeats every 75–125 % of the TTL instead of
    /// every [`WorkloadSpec::renew_every`]: on either side of the TTL, so some
    /// such sessions are expired while they still heartbeat, and some
    /// renewals arrive just as the sweeper chooses to expire them.
    pub slow_heartbeat_chance: f64,
    /// A license file an administrator imports and removes again and again
    /// during the run, with the administrator's TLS identity.
    pub churn: Option<Churn>,
}

/// A license that comes and goes during the run (see `Administrator` below).
#[derive(Debug, Clone)]
pub struct Churn {
    /// The license's name.
    pub name: String,
    /// The feature it licenses.
    pub feature: String,
    /// Its signed text.
    pub text: String,
    /// The administrator's TLS identity (certificate with the admin role).
    pub tls: ClientTls,
}

/// The workload's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Operations and heartbeats.
    Run,
    /// Heartbeats only: grants stay held.
    Hold,
    /// Everything stops.
    Stop,
}

/// The running workload.
pub struct Workload {
    phase: watch::Sender<Phase>,
    busy: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts the session workers.
    pub fn start(spec: WorkloadSpec, history: Arc<History>) -> Workload {
        let (phase, watch) = watch::channel(Phase::Run);
        let busy = Arc::new(AtomicUsize::new(0));
        let spec = Arc::new(spec);
        let granted = Arc::new(Mutex::new(VecDeque::new()));
        let tasks: Vec<JoinHandle<()>> = (0..spec.sessions)
            .map(|p| {
                let worker = Worker {
                    process: p,
                    spec: spec.clone(),
                    history: history.clone(),
                    phase: watch.clone(),
                    busy: busy.clone(),
                    granted: granted.clone(),
                    streams: Streams::new(mix(spec.seed, p as u64 + 1)),
                    router: Router::new(&spec),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        let mut tasks = tasks;
        let reader = Reader {
            spec: spec.clone(),
            history: history.clone(),
            router: Router::new(&spec),
        };
        tasks.push(tokio::spawn(reader.run(watch.clone())));
        if let Some(churn) = spec.churn.clone() {
            let mut tls_spec = (*spec).clone();
            tls_spec.tls = churn.tls.clone();
            let administrator = Administrator {
                router: Router::new(&tls_spec),
                churn,
                history: history.clone(),
                rng: StdRng::seed_from_u64(mix(spec.seed, 9_000_001)),
                timeout: spec.attempt_timeout * 2,
            };
            tasks.push(tokio::spawn(administrator.run(watch.clone())));
        }
        Workload { phase, busy, tasks }
    }

    /// The phase, for other clients of the run to follow.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Starts no new operation; heartbeats go on. Waits up to `limit` for the
    /// operations in flight to end.
    pub async fn hold(&self, limit: Duration) {
        self.phase.send_replace(Phase::Hold);
        let deadline = Instant::now() + limit;
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every session and heartbeat and waits for them.
    pub async fn stop(self) {
        self.phase.send_replace(Phase::Stop);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// A seed for stream `n` of a run with `seed` (splitmix64 of both).
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where a client sends its next attempt: the access point, then the nodes.
struct Router {
    /// `(label, address)`: index 0 the access point, index `k` node `k`.
    targets: Vec<(String, String)>,
    channels: HashMap<usize, Channel>,
    current: usize,
    timeout: Duration,
    tls: ClientTls,
}

impl Router {
    fn new(spec: &WorkloadSpec) -> Router {
        let mut targets = vec![("ap".to_string(), spec.access_point.clone())];
        for (i, address) in spec.nodes.iter().enumerate() {
            targets.push((format!("n{}", i + 1), address.clone()));
        }
        Router {
            targets,
            channels: HashMap::new(),
            current: 0,
            timeout: spec.attempt_timeout,
            tls: spec.tls.clone(),
        }
    }

    /// The target of the next attempt and a client for it.
    fn client(&mut self) -> (String, Option<LicenseClient<Channel>>) {
        let (label, channel) = self.client_channel();
        (label, channel.map(LicenseClient::new))
    }

    /// The target of the next attempt and a channel to it.
    fn client_channel(&mut self) -> (String, Option<Channel>) {
        let index = self.current;
        let (label, address) = self.targets[index].clone();
        if !self.channels.contains_key(&index) {
            let endpoint = self
                .tls
                .endpoint(&address, self.timeout)
                .map(|e| e.timeout(self.timeout));
            match endpoint {
                Ok(endpoint) => {
                    self.channels.insert(index, endpoint.connect_lazy());
                }
                Err(_) => return (label, None),
            }
        }
        (label, self.channels.get(&index).cloned())
    }

    /// After an answer: stay. After a failure: follow the hint, or try the next target.
    fn failed(&mut self, hint: Option<u64>) {
        match hint {
            Some(id) if (1..self.targets.len() as u64).contains(&id) => self.current = id as usize,
            _ => self.current = (self.current + 1) % self.targets.len(),
        }
    }

    /// Go back to the access point (clients are configured with it first).
    fn prefer_access_point(&mut self) {
        self.current = 0;
    }
}

/// Why an attempt got no answer.
struct NoAnswer {
    detail: String,
    hint: Option<u64>,
}

fn no_answer(status: &tonic::Status) -> NoAnswer {
    let hint = status
        .metadata()
        .get(LEADER_ID_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut message = status.message().to_string();
    message.truncate(160);
    NoAnswer {
        detail: format!("{:?}: {message}", status.code()),
        hint,
    }
}

/// Sends one RPC with the attempt deadline.
async fn attempt<T, F>(timeout: Duration, call: F) -> Result<T, NoAnswer>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(no_answer(&status)),
        Err(_) => Err(NoAnswer {
            detail: "timed out".into(),
            hint: None,
        }),
    }
}

/// A grant a session holds.
#[derive(Debug, Clone)]
struct Held {
    token: Token,
    until: Instant,
}

/// How an operation ended, for the session's next step.
enum Ended {
    /// Answered; the session goes on.
    Answered,
    /// The session must be given up (unknown outcome, or the session expired).
    GiveUp(&'static str),
}

/// Recent grants of every session: `(session handle, token)`, newest last.
type Granted = Arc<Mutex<VecDeque<(u64, Token)>>>;

struct Worker {
    process: usize,
    spec: Arc<WorkloadSpec>,
    history: Arc<History>,
    phase: watch::Receiver<Phase>,
    busy: Arc<AtomicUsize>,
    /// Shared by every worker: foreign tokens for renewals to quote.
    granted: Granted,
    streams: Streams,
    router: Router,
}

/// A worker's random streams, one per kind of choice: the n-th choice of a
/// kind is the same in every run with the seed, whatever answers, retries and
/// timing did to the choices of other kinds.
struct Streams {
    /// Think times between steps.
    think: StdRng,
    /// Whether a step abandons the session, and how it ends.
    abandon: StdRng,
    /// Whether a step goes back to the access point.
    route: StdRng,
    /// What a step does: check out (feature, count, hold) or wait.
    pick: StdRng,
    /// Short first-attempt deadlines.
    deadline: StdRng,
    /// Session secrets, heartbeat seeds and heartbeat periods.
    session: StdRng,
    /// Double check-ins.
    checkin: StdRng,
}

impl Streams {
    fn new(seed: u64) -> Streams {
        let stream = |n| StdRng::seed_from_u64(mix(seed, n));
        Streams {
            think: stream(1),
            abandon: stream(2),
            route: stream(3),
            pick: stream(4),
            deadline: stream(5),
            session: stream(6),
            checkin: stream(7),
        }
    }
}

/// How a session abandoned at random ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Heartbeats stop; the grants are left to expire.
    Silent,
    /// Heartbeats stop, and one grant is checked in around the TTL later: on
    /// either side of the expiry, the answer must fit the session's bounds.
    EdgeCheckin(Duration),
    /// Heartbeats stop, and one grant is checked in once the session has
    /// certainly expired: it must be answered "not held".
    LateCheckin(Duration),
}

/// One client session's state.
struct Session {
    /// The session's public handle (what the cluster's status shows).
    id: u64,
    /// The session's secret, sent on every request.
    secret: Vec<u8>,
    seq: u64,
    held: Arc<Mutex<Vec<Held>>>,
    /// Grants whose check-in was answered ok (recorded before they are added).
    checked_in: Arc<Mutex<VecDeque<Token>>>,
    /// A slow heartbeater ([`WorkloadSpec::slow_heartbeat_chance`]): it holds
    /// one grant for two to three TTLs and sends nothing else meanwhile, so
    /// its heartbeats alone keep it alive — or do not.
    slow: bool,
    heartbeat_stop: watch::Sender<bool>,
    heartbeat: JoinHandle<()>,
}

impl Worker {
    fn name(&self) -> String {
        format!("s{}", self.process)
    }

    async fn run(mut self) {
        loop {
            let mut session = self.new_session();
            let ended = self.session_loop(&mut session).await;
            let _ = session.heartbeat_stop.send(true);
            if let Some((reason, ending)) = ended {
                let held: Vec<Token> = lock(&session.held).iter().map(|h| h.token).collect();
                let mut event = Event::new(&self.name(), EventType::Info, OpKind::Abandon, 0);
                event.session = Some(session_hex(session.id));
                event.tokens = held.clone();
                event.detail = Some(reason.to_string());
                self.history.record(event);
                self.after_abandon(&mut session, ending, &held).await;
                continue;
            }
            let _ = session.heartbeat.await;
            // The run's end: the session is abandoned like any other, its
            // grants left for the cluster to expire (the drain checks they are).
            let held: Vec<Token> = lock(&session.held).iter().map(|h| h.token).collect();
            let mut event = Event::new(&self.name(), EventType::Info, OpKind::Abandon, 0);
            event.session = Some(session_hex(session.id));
            event.tokens = held;
            event.detail = Some("the run ended: heartbeats stop, grants are left to expire".into());
            self.history.record(event);
            return;
        }
    }

    /// An abandoned session's last word: for [`Ending::EdgeCheckin`] and
    /// [`Ending::LateCheckin`], one of its grants is checked in after the
    /// silence (unless the run leaves its first phase meanwhile).
    async fn after_abandon(&mut self, session: &mut Session, ending: Ending, held: &[Token]) {
        let (Ending::EdgeCheckin(wait) | Ending::LateCheckin(wait)) = ending else {
            return;
        };
        let Some(&token) = held.first() else { return };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.phase.wait_for(|p| *p != Phase::Run) => return,
        }
        self.busy.fetch_add(1, Ordering::SeqCst);
        let _ = self.checkin(session, token).await;
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }

    /// How a session abandoned at random ends: silent half the time, else
    /// with a check-in around the TTL or after the session has certainly expired.
    fn ending(&mut self) -> Ending {
        let rng = &mut self.streams.abandon;
        match rng.gen_range(0..4) {
            0 => {
                let ttl = self.spec.session_ttl.as_millis() as i64;
                let edge = (ttl + rng.gen_range(-600..600)).max(0) as u64;
                Ending::EdgeCheckin(Duration::from_millis(edge))
            }
            1 => Ending::LateCheckin(self.spec.expired_after),
            _ => Ending::Silent,
        }
    }

    fn new_session(&mut self) -> Session {
        // Secrets come from the seeded generator so that a seed replays the run.
        let secret = SessionSecret::from_seed(self.streams.session.r#gen::<u64>());
        let id = secret.handle().public();
        let secret = secret.as_bytes().to_vec();
        let held = Arc::new(Mutex::new(Vec::new()));
        let checked_in = Arc::new(Mutex::new(VecDeque::new()));
        let (heartbeat_stop, stop) = watch::channel(false);
        let heartbeat_seed = self.streams.session.r#gen::<u64>();
        let slow = self
            .streams
            .session
            .gen_bool(self.spec.slow_heartbeat_chance);
        let renew_every = if slow {
            self.spec
                .session_ttl
                .mul_f64(self.streams.session.gen_range(0.75..1.25))
        } else {
            self.spec.renew_every
        };
        let heartbeat = Heartbeat {
            process: format!("s{}-hb", self.process),
            session: id,
            secret: secret.clone(),
            held: held.clone(),
            checked_in: checked_in.clone(),
            granted: self.granted.clone(),
            rng: StdRng::seed_from_u64(heartbeat_seed),
            renew_every,
            spec: self.spec.clone(),
            history: self.history.clone(),
            router: Router::new(&self.spec),
        };
        let heartbeat = tokio::spawn(heartbeat.run(self.phase.clone(), stop));
        Session {
            id,
            secret,
            seq: 0,
            held,
            checked_in,
            slow,
            heartbeat_stop,
            heartbeat,
        }
    }

    /// Runs operations until the phase leaves `Run` (returns `None` once it is
    /// `Stop`) or the session is given up (returns why, and how it ends).
    async fn session_loop(&mut self, session: &mut Session) -> Option<(&'static str, Ending)> {
        loop {
            if *self.phase.borrow() != Phase::Run {
                let _ = self.phase.wait_for(|p| *p == Phase::Stop).await;
                return None;
            }
            let think = Duration::from_millis(self.streams.think.gen_range(50..300));
            tokio::select! {
                _ = tokio::time::sleep(think) => {}
                _ = self.phase.changed() => continue,
            }
            if self.streams.abandon.gen_bool(self.spec.abandon_chance) {
                let ending = self.ending();
                let reason = match ending {
                    Ending::Silent => {
                        "abandoned at random: heartbeats stop, grants are left to expire"
                    }
                    Ending::EdgeCheckin(_) => {
                        "abandoned at random: heartbeats stop, a grant is checked in around the TTL later"
                    }
                    Ending::LateCheckin(_) => {
                        "abandoned at random: heartbeats stop, a grant is checked in after the session certainly expired"
                    }
                };
                return Some((reason, ending));
            }
            if self.streams.route.gen_bool(0.3) {
                self.router.prefer_access_point();
            }
            let now = Instant::now();
            let due = lock(&session.held).iter().position(|h| h.until <= now);
            let holding = lock(&session.held).len();
            let check_out = self.streams.pick.gen_bool(0.7);
            self.busy.fetch_add(1, Ordering::SeqCst);
            let ended = if let Some(index) = due {
                let token = lock(&session.held)[index].token;
                match self.checkin(session, token).await {
                    Ended::Answered
                        if self
                            .streams
                            .checkin
                            .gen_bool(self.spec.double_checkin_chance) =>
                    {
                        // The same grant again, as a new request: "not held".
                        self.checkin(session, token).await
                    }
                    ended => ended,
                }
            } else if holding < GRANTS_PER_SESSION_MAX
                && check_out
                && !(session.slow && holding > 0)
            {
                self.checkout(session).await
            } else {
                Ended::Answered
            };
            self.busy.fetch_sub(1, Ordering::SeqCst);
            if let Ended::GiveUp(reason) = ended {
                return Some((reason, Ending::Silent));
            }
        }
    }

    /// The deadline of attempt `n`: now and then a first attempt gets a very
    /// short one, so that its answer is lost while the cluster applies it —
    /// the retry (same request id) must get the first outcome.
    fn deadline(&mut self, n: u32) -> Duration {
        if n == 1
            && self
                .streams
                .deadline
                .gen_bool(self.spec.short_deadline_chance)
        {
            Duration::from_millis(self.streams.deadline.gen_range(1..30))
        } else {
            self.spec.attempt_timeout
        }
    }

    fn event(&self, session: &Session, kind: EventType, op: OpKind, id: u64, n: u32) -> Event {
        let mut event = Event::new(&self.name(), kind, op, id);
        event.session = Some(session_hex(session.id));
        event.seq = Some(session.seq);
        event.attempt = Some(n);
        event
    }

    async fn checkout(&mut self, session: &mut Session) -> Ended {
        let rng = &mut self.streams.pick;
        let mut pick = rng.gen_range(0..self.spec.features.len());
        // The churn license's feature is asked for rarely, so that its seats
        // are now and then all free and its removal can succeed.
        if self.spec.churn.as_ref().map(|c| &c.feature) == Some(&self.spec.features[pick].0)
            && rng.gen_bool(0.95)
        {
            pick = (pick + 1) % self.spec.features.len();
        }
        let (feature, seats) = self.spec.features[pick].clone();
        // 1 to 3 seats, at most a quarter of the pool; now and then a count
        // the cluster must refuse.
        let most = (seats / 4).clamp(1, 3);
        let count = if rng.gen_bool(self.spec.bad_count_chance) {
            if rng.gen_bool(0.5) {
                0
            } else {
                seats + rng.gen_range(1..4)
            }
        } else {
            rng.gen_range(1..=most)
        };
        let hold = if session.slow {
            self.spec.session_ttl.mul_f64(rng.gen_range(2.0..3.0))
        } else {
            Duration::from_millis(rng.gen_range(200..3000))
        };
        session.seq += 1;
        let id = self.history.next_id();
        let deadline = Instant::now() + self.spec.op_deadline;
        let mut backoff = Duration::from_millis(50);
        for n in 1u32.. {
            let mut invoke = self.event(session, EventType::Invoke, OpKind::Checkout, id, n);
            invoke.feature = Some(feature.clone());
            invoke.count = Some(count);
            let (label, client) = self.router.client();
            invoke.node = Some(label.clone());
            self.history.record(invoke);
            let request = pb::CheckoutRequest {
                vendor: crate::cluster::VENDOR.into(),
                version: String::new(),
                request: Some(pb::RequestId {
                    session_secret: session.secret.clone(),
                    seq: session.seq,
                }),
                feature: feature.clone(),
                count,
                user: "chaos".into(),
                host: self.name(),
            };
            let result = match client {
                Some(mut client) => attempt(self.deadline(n), client.checkout(request)).await,
                None => Err(NoAnswer {
                    detail: "bad address".into(),
                    hint: None,
                }),
            };
            match result {
                Ok(reply) => {
                    let reason = pb::DenyReason::try_from(reply.reason).unwrap_or_default();
                    let (kind, detail) = if reply.granted {
                        (EventType::Ok, None)
                    } else if reason == pb::DenyReason::StaleRequest {
                        // Says nothing of what became of the request: unknown (and
                        // impossible for a sequential session, see the checker).
                        (EventType::Unknown, Some(deny_detail(reason)))
                    } else {
                        (EventType::Fail, Some(deny_detail(reason)))
                    };
                    let mut done = self.event(session, kind, OpKind::Checkout, id, n);
                    done.node = Some(label);
                    done.term = Some(reply.term);
                    done.index = Some(reply.applied_index);
                    done.feature = Some(feature.clone());
                    done.count = Some(reply.count);
                    done.token = reply.token.as_ref().map(Token::from);
                    if kind != EventType::Unknown {
                        done.available = Some(reply.available);
                        done.total = Some(reply.total);
                    }
                    // The checker matches the bare reason word.
                    done.detail = detail.map(str::to_string);
                    self.history.record(done);
                    return match (kind, detail) {
                        (EventType::Ok, _) => {
                            if let Some(token) = reply.token.as_ref().map(Token::from) {
                                lock(&session.held).push(Held {
                                    token,
                                    until: Instant::now() + hold,
                                });
                                let mut granted = lock(&self.granted);
                                if granted.len() >= FOREIGN_GRANTS_MAX {
                                    granted.pop_front();
                                }
                                granted.push_back((session.id, token));
                            }
                            Ended::Answered
                        }
                        (_, Some("session-expired")) => {
                            Ended::GiveUp("the cluster expired the session")
                        }
                        (_, Some("stale")) => Ended::GiveUp("a retry was answered stale"),
                        _ => Ended::Answered,
                    };
                }
                Err(failure) => {
                    let mut done = self.event(session, EventType::Unknown, OpKind::Checkout, id, n);
                    done.node = Some(label);
                    done.detail = Some(failure.detail);
                    self.history.record(done);
                    let followed = failure.hint.is_some();
                    self.router.failed(failure.hint);
                    if Instant::now() >= deadline {
                        return Ended::GiveUp("a check-out stayed unknown past its deadline");
                    }
                    if followed {
                        // A hint is followed at once, but a node that leads without
                        // serving yet must not be asked in a hot loop.
                        tokio::time::sleep(HINT_PAUSE).await;
                    } else {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        Ended::Answered
    }

    async fn checkin(&mut self, session: &mut Session, token: Token) -> Ended {
        session.seq += 1;
        let id = self.history.next_id();
        let deadline = Instant::now() + self.spec.op_deadline;
        let mut backoff = Duration::from_millis(50);
        for n in 1u32.. {
            let mut invoke = self.event(session, EventType::Invoke, OpKind::Checkin, id, n);
            invoke.token = Some(token);
            let (label, client) = self.router.client();
            invoke.node = Some(label.clone());
            self.history.record(invoke);
            let request = pb::CheckinRequest {
                request: Some(pb::RequestId {
                    session_secret: session.secret.clone(),
                    seq: session.seq,
                }),
                token: Some(token.into()),
            };
            let result = match client {
                Some(mut client) => attempt(self.deadline(n), client.checkin(request)).await,
                None => Err(NoAnswer {
                    detail: "bad address".into(),
                    hint: None,
                }),
            };
            match result {
                Ok(reply) => {
                    let kind = if reply.released {
                        EventType::Ok
                    } else {
                        EventType::Fail
                    };
                    let mut done = self.event(session, kind, OpKind::Checkin, id, n);
                    done.node = Some(label);
                    done.term = Some(reply.term);
                    done.index = Some(reply.applied_index);
                    done.token = Some(token);
                    if reply.released {
                        done.feature = Some(reply.feature);
                        done.count = Some(reply.count);
                    } else {
                        done.detail = Some("not-held".into());
                    }
                    self.history.record(done);
                    lock(&session.held).retain(|h| h.token != token);
                    if reply.released {
                        let mut checked_in = lock(&session.checked_in);
                        if checked_in.len() >= CHECKED_IN_MAX {
                            checked_in.pop_front();
                        }
                        checked_in.push_back(token);
                    }
                    return Ended::Answered;
                }
                Err(failure) => {
                    let mut done = self.event(session, EventType::Unknown, OpKind::Checkin, id, n);
                    done.node = Some(label);
                    done.detail = Some(failure.detail);
                    self.history.record(done);
                    let followed = failure.hint.is_some();
                    self.router.failed(failure.hint);
                    if Instant::now() >= deadline {
                        return Ended::GiveUp("a check-in stayed unknown past its deadline");
                    }
                    if followed {
                        // A hint is followed at once, but a node that leads without
                        // serving yet must not be asked in a hot loop.
                        tokio::time::sleep(HINT_PAUSE).await;
                    } else {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        Ended::Answered
    }
}

/// Terms of made-up tokens: no run elects this many leaders.
pub const MADE_UP_TERMS: std::ops::Range<u64> = 1 << 40..1 << 48;

/// The word the history records for a denied check-out: the checker matches
/// it (`in-use`, `session-expired`, `expired`, `stale`, and the impossible ones).
pub fn deny_detail(reason: pb::DenyReason) -> &'static str {
    match reason {
        pb::DenyReason::Unspecified => "denied",
        pb::DenyReason::NoSuchFeature => "no-such-feature",
        pb::DenyReason::Expired => "expired",
        pb::DenyReason::ExceedsLicensed => "exceeds-licensed",
        pb::DenyReason::InUse => "in-use",
        pb::DenyReason::BadCount => "bad-count",
        pb::DenyReason::CapacityReached => "capacity-reached",
        pb::DenyReason::StaleRequest => "stale",
        pb::DenyReason::SessionExpired => "session-expired",
        pb::DenyReason::VersionNotLicensed => "version-not-licensed",
        pb::DenyReason::HostsNotListed => "hosts-not-listed",
    }
}

/// `std` lock that survives a poisoned mutex (a panicked task is a harness bug
/// reported elsewhere; the data is a plain list).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The heartbeat task of one session.
struct Heartbeat {
    process: String,
    session: u64,
    secret: Vec<u8>,
    held: Arc<Mutex<Vec<Held>>>,
    checked_in: Arc<Mutex<VecDeque<Token>>>,
    granted: Granted,
    /// Seeded by the session's worker: which renewals quote probes, and which.
    rng: StdRng,
    /// The session's heartbeat period.
    renew_every: Duration,
    spec: Arc<WorkloadSpec>,
    history: Arc<History>,
    router: Router,
}

/// Tokens a renewal quotes that the session does not hold; every one must be
/// answered unknown.
#[derive(Default)]
struct Probes {
    checked_in: Vec<Token>,
    foreign: Vec<Token>,
    made_up: Vec<Token>,
}

impl Heartbeat {
    /// Now and then ([`WorkloadSpec::renew_probe_chance`]): one token this
    /// session checked in (its ok answer is already recorded), one of another
    /// session, and one no check-out was granted (a term far beyond any a
    /// run reaches). None of them is among `held`.
    fn probes(&mut self, held: &[Token]) -> Probes {
        let mut probes = Probes::default();
        if !self.rng.gen_bool(self.spec.renew_probe_chance) {
            return probes;
        }
        let checked_in: Vec<Token> = lock(&self.checked_in)
            .iter()
            .filter(|t| !held.contains(t))
            .copied()
            .collect();
        if !checked_in.is_empty() {
            probes
                .checked_in
                .push(checked_in[self.rng.gen_range(0..checked_in.len())]);
        }
        let foreign: Vec<Token> = lock(&self.granted)
            .iter()
            .filter(|(session, _)| *session != self.session)
            .map(|(_, t)| *t)
            .collect();
        if !foreign.is_empty() {
            probes
                .foreign
                .push(foreign[self.rng.gen_range(0..foreign.len())]);
        }
        probes.made_up.push(Token {
            term: self.rng.gen_range(MADE_UP_TERMS),
            index: self.rng.r#gen::<u64>() >> 1,
            slot: self.rng.r#gen::<u32>(),
        });
        probes
    }

    async fn run(mut self, mut phase: watch::Receiver<Phase>, mut stop: watch::Receiver<bool>) {
        let mut wait = self.renew_every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
                _ = phase.wait_for(|p| *p == Phase::Stop) => return,
            }
            let tokens: Vec<Token> = lock(&self.held).iter().map(|h| h.token).collect();
            let probes = self.probes(&tokens);
            let quoted: Vec<Token> = tokens
                .iter()
                .chain(&probes.checked_in)
                .chain(&probes.foreign)
                .chain(&probes.made_up)
                .copied()
                .collect();
            let id = self.history.next_id();
            let mut invoke = Event::new(&self.process, EventType::Invoke, OpKind::Renew, id);
            invoke.session = Some(session_hex(self.session));
            invoke.attempt = Some(1);
            invoke.tokens = tokens;
            invoke.checked_in_tokens = probes.checked_in;
            invoke.foreign_tokens = probes.foreign;
            invoke.made_up_tokens = probes.made_up;
            let (label, client) = self.router.client();
            invoke.node = Some(label.clone());
            self.history.record(invoke);
            let request = pb::RenewRequest {
                session_secret: self.secret.clone(),
                tokens: quoted.iter().map(|t| (*t).into()).collect(),
                cached_for_ms: 0,
                cached_since_ms: 0,
            };
            let result = match client {
                Some(mut client) => attempt(self.spec.attempt_timeout, client.renew(request)).await,
                None => Err(NoAnswer {
                    detail: "bad address".into(),
                    hint: None,
                }),
            };
            let mut done = Event::new(&self.process, EventType::Unknown, OpKind::Renew, id);
            done.session = Some(session_hex(self.session));
            done.attempt = Some(1);
            done.node = Some(label);
            match result {
                Ok(reply) => {
                    done.kind = EventType::Ok;
                    done.term = Some(reply.term);
                    done.unknown_tokens = reply.unknown.iter().map(Token::from).collect();
                    if reply.session_expired {
                        done.detail = Some("session-expired".into());
                    }
                    wait = self.renew_every;
                }
                Err(failure) => {
                    done.detail = Some(failure.detail);
                    self.router.failed(failure.hint);
                    // Try again soon: the session must be heard from within its TTL.
                    wait = self.spec.renew_every / 4;
                }
            }
            self.history.record(done);
        }
    }
}

/// The reader: a linearizable Status read of every grant now and then, so
/// that lost, phantom and doubly granted seats are seen during the run and
/// not only at its end.
struct Reader {
    spec: Arc<WorkloadSpec>,
    history: Arc<History>,
    router: Router,
}

impl Reader {
    async fn run(mut self, mut phase: watch::Receiver<Phase>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.spec.read_every) => {}
                _ = phase.wait_for(|p| *p != Phase::Run) => return,
            }
            let id = self.history.next_id();
            let mut invoke = Event::new("reader", EventType::Invoke, OpKind::Read, id);
            invoke.attempt = Some(1);
            let (label, client) = self.router.client();
            invoke.node = Some(label.clone());
            self.history.record(invoke);
            let result = match client {
                Some(mut client) => {
                    attempt(
                        self.spec.attempt_timeout,
                        client.status(pb::StatusRequest::default()),
                    )
                    .await
                }
                None => Err(NoAnswer {
                    detail: "bad address".into(),
                    hint: None,
                }),
            };
            let mut done = Event::new("reader", EventType::Unknown, OpKind::Read, id);
            done.attempt = Some(1);
            done.node = Some(label);
            match result {
                Ok(reply) => {
                    done.kind = EventType::Ok;
                    done.term = Some(reply.term);
                    done.index = Some(reply.applied_index);
                    done.grants = Some(grants_seen(&reply));
                    done.serving_for_ms = Some(reply.serving_for_ms);
                }
                Err(failure) => {
                    done.detail = Some(failure.detail);
                    self.router.failed(failure.hint);
                }
            }
            self.history.record(done);
        }
    }
}

/// The grants of a Status reply, as the history records them.
pub fn grants_seen(reply: &pb::StatusReply) -> Vec<GrantSeen> {
    reply
        .grants
        .iter()
        .filter_map(|g| {
            Some(GrantSeen {
                token: Token::from(g.token.as_ref()?),
                session: session_hex(g.session_handle),
                feature: g.feature.clone(),
                count: g.count,
            })
        })
        .collect()
}

/// The administrator: imports the churn license, and after a while removes
/// it (the cluster refuses while its seats are in use: then it tries again
/// later), over and over while the run lasts. Each attempt is one operation.
struct Administrator {
    router: Router,
    churn: Churn,
    history: Arc<History>,
    rng: StdRng,
    timeout: Duration,
}

impl Administrator {
    async fn run(mut self, mut phase: watch::Receiver<Phase>) {
        let mut import = true;
        loop {
            let wait = Duration::from_millis(self.rng.gen_range(2000..6000));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = phase.wait_for(|p| *p != Phase::Run) => return,
            }
            let kind = if import {
                OpKind::Import
            } else {
                OpKind::Remove
            };
            let id = self.history.next_id();
            let deadline = Instant::now() + ADMIN_OP_DEADLINE;
            for n in 1u32.. {
                if self.attempt(kind, id, n).await {
                    import = !import;
                    break;
                }
                if Instant::now() >= deadline || *phase.borrow() != Phase::Run {
                    break;
                }
                tokio::time::sleep(HINT_PAUSE * 10).await;
            }
        }
    }

    /// One attempt of an import or a removal; true once it took effect.
    async fn attempt(&mut self, kind: OpKind, id: u64, n: u32) -> bool {
        let import = kind == OpKind::Import;
        let mut invoke = Event::new("admin", EventType::Invoke, kind, id);
        invoke.attempt = Some(n);
        invoke.detail = Some(self.churn.name.clone());
        let (label, client) = self.router.client_channel();
        invoke.node = Some(label.clone());
        self.history.record(invoke);
        let result = match client {
            Some(channel) => {
                let mut admin = AdminClient::new(channel);
                if import {
                    attempt(
                        self.timeout,
                        admin.import_license(pb::ImportLicenseRequest {
                            name: self.churn.name.clone(),
                            text: self.churn.text.clone(),
                        }),
                    )
                    .await
                    .map(|r| r.term)
                } else {
                    attempt(
                        self.timeout,
                        admin.remove_license(pb::RemoveLicenseRequest {
                            name: self.churn.name.clone(),
                        }),
                    )
                    .await
                    .map(|r| r.term)
                }
            }
            None => Err(NoAnswer {
                detail: "bad address".into(),
                hint: None,
            }),
        };
        let mut done = Event::new("admin", EventType::Unknown, kind, id);
        done.attempt = Some(n);
        done.node = Some(label);
        let took_effect = match result {
            Ok(term) => {
                done.kind = EventType::Ok;
                done.term = Some(term);
                true
            }
            Err(failure) => {
                // "No such license": an earlier removal whose answer was lost
                // took effect. A refusal because the seats are in use changed
                // nothing: it is tried again.
                let gone = !import && failure.detail.contains("no license by that name");
                if failure.detail.starts_with("FailedPrecondition") {
                    // Refused by the active node: ask it again.
                    done.kind = EventType::Fail;
                } else {
                    self.router.failed(failure.hint);
                }
                done.detail = Some(failure.detail);
                gone
            }
        };
        self.history.record(done);
        took_effect
    }
}
