//! Applications: workers that use raftlm's own client library
//! (`raftlm::client::Session`), as a vendor's program does, next to the raw
//! session workers of [`crate::workload`].
//!
//! Each application reaches the cluster through a proxy of its own (a
//! [`LinkProxy`] to the access point) and nothing else: its client is told
//! not to follow leader hints (`ClientOptions::follow_leader_hints`), so all
//! of its traffic — check-outs, check-ins, the library's renewals, caching
//! mode, its term fence and its re-attachment after failover — crosses that
//! link. A cutter takes one application at a time off the network (refused,
//! black-holed or frozen) for longer than the session TTL, so the cluster
//! expires its session while it runs on cached grants.
//!
//! Half the applications run with a grace period of zero, half with
//! [`AppSpec::grace`]. While it holds a grant, an application looks at
//! `grants_valid()` every [`VALID_POLL`] and records, with the grant's
//! check-in (or abandonment), the last moment it saw the grant valid ([`OpKind::Use`]).
//! [`overuse`] then compares that with the reads of the cluster's state: a
//! grant an application still treated as valid after a read had shown the
//! cluster no longer holds it is caching-mode over-use. With a grace of zero
//! the library's rule must make it zero; with a grace it is reported with its
//! bound.
//!
//! History: check-outs and check-ins as operations of process `a{k}` (one
//! invoke and one answer each — the library retries inside), grants the
//! library checked out again after its session was expired
//! (`GrantRecovered`) as check-outs of the new session, and a nemesis event
//! for every cut.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use raftlm::client::{
    Client, ClientError, ClientOptions, Grant, ServerList, Session, SessionEvent, SessionOptions,
};
use raftlm::license::state::GrantToken;
use raftlm::tls::client::ClientTls;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::history::{Event, EventType, History, OpKind, Token, session_hex};
use crate::proxy::{Link, LinkProxy};
use crate::workload::{Phase, mix};

/// How often an application holding a grant looks at `grants_valid()`.
pub const VALID_POLL: Duration = Duration::from_millis(25);
/// The longest one library call may take before the application gives up on it.
pub const CALL_LIMIT: Duration = Duration::from_secs(20);

/// What the applications do.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// How many applications.
    pub apps: usize,
    /// The access point each application's proxy forwards to.
    pub access_point: SocketAddr,
    /// Features and seats licensed (the applications ask for 1–2 seats).
    pub features: Vec<(String, u32)>,
    /// The features' vendor.
    pub vendor: String,
    /// Seeds every choice.
    pub seed: u64,
    /// The nodes' session TTL: cuts last longer.
    pub session_ttl: Duration,
    /// The grace period of the odd-numbered applications (the even ones have none).
    pub grace: Duration,
    /// About how often one application is cut off.
    pub cut_every: Duration,
    /// How to dial (the run's CA and the cluster's TLS name).
    pub tls: ClientTls,
}

/// The running applications and their cutter.
pub struct Apps {
    tasks: Vec<JoinHandle<()>>,
    busy: Arc<AtomicUsize>,
}

impl Apps {
    /// Starts the applications, each behind its own proxy, and the cutter;
    /// they follow `phase` (the workload's).
    pub async fn start(
        spec: AppSpec,
        history: Arc<History>,
        phase: watch::Receiver<Phase>,
    ) -> anyhow::Result<Apps> {
        let busy = Arc::new(AtomicUsize::new(0));
        let mut links = Vec::new();
        let mut tasks = Vec::new();
        for k in 0..spec.apps {
            let proxy = Arc::new(LinkProxy::start(spec.access_point).await?);
            links.push(proxy.clone());
            let app = App {
                k,
                spec: spec.clone(),
                history: history.clone(),
                phase: phase.clone(),
                busy: busy.clone(),
                rng: StdRng::seed_from_u64(mix(spec.seed, 5_000 + k as u64)),
                proxy,
                aliases: BTreeMap::new(),
            };
            tasks.push(tokio::spawn(app.run()));
        }
        if !links.is_empty() {
            let cutter = Cutter {
                links,
                spec: spec.clone(),
                history,
                phase,
                rng: StdRng::seed_from_u64(mix(spec.seed, 4_999)),
            };
            tasks.push(tokio::spawn(cutter.run()));
        }
        Ok(Apps { tasks, busy })
    }

    /// Waits up to `limit` for the library calls in flight to end (after the
    /// workload's phase left `Run`).
    pub async fn idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every application to end (after the phase became `Stop`).
    pub async fn stop(self) {
        for task in self.tasks {
            let _ = tokio::time::timeout(CALL_LIMIT + Duration::from_secs(5), task).await;
        }
    }
}

/// One application.
struct App {
    k: usize,
    spec: AppSpec,
    history: Arc<History>,
    phase: watch::Receiver<Phase>,
    busy: Arc<AtomicUsize>,
    rng: StdRng,
    proxy: Arc<LinkProxy>,
    /// Lost grant → the grant the library checked out in its place.
    aliases: BTreeMap<GrantToken, GrantToken>,
}

impl App {
    fn name(&self) -> String {
        format!("a{}", self.k)
    }

    fn grace(&self) -> Duration {
        if self.k.is_multiple_of(2) {
            Duration::ZERO
        } else {
            self.spec.grace
        }
    }

    fn event(&self, kind: EventType, op: OpKind, id: u64, session: &Session) -> Event {
        let mut event = Event::new(&self.name(), kind, op, id);
        event.session = Some(session_hex(session.id().public()));
        event.node = Some("ap".into());
        event
    }

    async fn run(mut self) {
        let options = ClientOptions {
            follow_leader_hints: false,
            tls: self.spec.tls.clone(),
            ..ClientOptions::default()
        };
        let servers = match ServerList::parse(&self.proxy.address.to_string()) {
            Ok(servers) => servers,
            Err(_) => return,
        };
        let session = Session::start(
            Client::with_options(servers, options),
            SessionOptions {
                vendor: self.spec.vendor.clone(),
                user: self.name(),
                host: "chaos".into(),
                grace_period: self.grace(),
                ..SessionOptions::default()
            },
        );
        let mut events = session.subscribe();
        let mut held: Vec<(Grant, Option<Instant>)> = Vec::new();
        loop {
            self.follow(&session, &mut events);
            if *self.phase.borrow() != Phase::Run {
                break;
            }
            let (feature, seats) = {
                let i = self.rng.gen_range(0..self.spec.features.len());
                self.spec.features[i].clone()
            };
            let count = self.rng.gen_range(1..=2.min(seats.max(1)));
            // One hold in four outlasts the session TTL, so a cut-off
            // application is seen using its grant while the cluster expires it.
            let hold = if self.rng.gen_bool(0.25) {
                self.spec.session_ttl + Duration::from_millis(self.rng.gen_range(2000..8000))
            } else {
                Duration::from_millis(self.rng.gen_range(300..3000))
            };
            let think = Duration::from_millis(self.rng.gen_range(100..800));
            if let Some(grant) = self.checkout(&session, &feature, count).await {
                held.push((grant, None));
                let until = Instant::now() + hold;
                while Instant::now() < until && *self.phase.borrow() == Phase::Run {
                    if session.state().grants_valid() {
                        let now = Instant::now();
                        for (_, seen) in held.iter_mut() {
                            *seen = Some(now);
                        }
                    }
                    self.follow(&session, &mut events);
                    tokio::time::sleep(VALID_POLL).await;
                }
                if *self.phase.borrow() != Phase::Run {
                    break;
                }
                for (grant, seen) in std::mem::take(&mut held) {
                    // Use ends when the application asks to check in.
                    self.record_use(&session, &grant, seen);
                    self.checkin(&session, &grant, &mut events).await;
                }
            }
            tokio::time::sleep(think).await;
        }
        // The run's end: hold what is held (the library keeps renewing)
        // until the phase is `Stop`, then abandon the session.
        let mut phase = self.phase.clone();
        let _ = phase.wait_for(|p| *p == Phase::Stop).await;
        self.follow(&session, &mut events);
        let mut tokens = Vec::new();
        for (grant, seen) in &held {
            self.record_use(&session, grant, *seen);
            tokens.push(Token::from(self.current(grant.token)));
        }
        let mut event = self.event(EventType::Info, OpKind::Abandon, 0, &session);
        event.tokens = tokens;
        event.detail =
            Some("the run ended: the application stops, its grants are left to expire".into());
        self.history.record(event);
        drop(session);
    }

    /// The token a grant is held under now (after the library replaced it).
    fn current(&self, mut token: GrantToken) -> GrantToken {
        for _ in 0..=self.aliases.len() {
            match self.aliases.get(&token) {
                Some(next) => token = *next,
                None => break,
            }
        }
        token
    }

    /// Records what the library did on its own: grants it checked out again
    /// under a new session after the old one was expired.
    fn follow(&mut self, session: &Session, events: &mut broadcast::Receiver<SessionEvent>) {
        loop {
            match events.try_recv() {
                Ok(SessionEvent::GrantRecovered { lost, grant }) => {
                    self.aliases.insert(lost, grant.token);
                    let id = self.history.next_id();
                    let mut invoke = self.event(EventType::Invoke, OpKind::Checkout, id, session);
                    invoke.feature = Some(grant.feature.clone());
                    invoke.count = Some(grant.count);
                    invoke.detail = Some(format!(
                        "the library checks out again grant {} lost with its expired session",
                        Token::from(lost)
                    ));
                    self.history.record(invoke);
                    let mut ok = self.event(EventType::Ok, OpKind::Checkout, id, session);
                    ok.feature = Some(grant.feature.clone());
                    ok.count = Some(grant.count);
                    ok.token = Some(Token::from(grant.token));
                    ok.term = Some(grant.term);
                    self.history.record(ok);
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }

    async fn checkout(&mut self, session: &Session, feature: &str, count: u32) -> Option<Grant> {
        let id = self.history.next_id();
        let mut invoke = self.event(EventType::Invoke, OpKind::Checkout, id, session);
        invoke.feature = Some(feature.to_string());
        invoke.count = Some(count);
        invoke.attempt = Some(1);
        self.history.record(invoke);
        self.busy.fetch_add(1, Ordering::SeqCst);
        let result = tokio::time::timeout(CALL_LIMIT, session.checkout(feature, count)).await;
        self.busy.fetch_sub(1, Ordering::SeqCst);
        let (kind, detail, grant) = match result {
            Ok(Ok(grant)) => (EventType::Ok, None, Some(grant)),
            Ok(Err(ClientError::Denied { reason, .. })) => {
                (EventType::Fail, Some(deny_word(reason).to_string()), None)
            }
            Ok(Err(ClientError::SessionExpired)) => {
                (EventType::Fail, Some("session-expired".into()), None)
            }
            Ok(Err(error)) => (EventType::Unknown, Some(error.to_string()), None),
            Err(_) => (
                EventType::Unknown,
                Some(format!("no answer within {CALL_LIMIT:?}")),
                None,
            ),
        };
        let mut done = self.event(kind, OpKind::Checkout, id, session);
        done.feature = Some(feature.to_string());
        done.count = Some(count);
        done.attempt = Some(1);
        done.detail = detail;
        if let Some(grant) = &grant {
            done.token = Some(Token::from(grant.token));
            done.term = Some(grant.term);
        }
        self.history.record(done);
        grant
    }

    /// Checks `grant` in. The library may replace a grant it recovers after
    /// its session was expired at any moment, also during this call (it then
    /// checks in the replacement): the replacement is recorded as soon as the
    /// library says so, before and after the call, and a check-in that
    /// released a replacement made meanwhile is recorded as a check-in of it.
    async fn checkin(
        &mut self,
        session: &Session,
        grant: &Grant,
        events: &mut broadcast::Receiver<SessionEvent>,
    ) {
        self.follow(session, events);
        let token = self.current(grant.token);
        let id = self.history.next_id();
        let mut invoke = self.event(EventType::Invoke, OpKind::Checkin, id, session);
        invoke.token = Some(Token::from(token));
        invoke.attempt = Some(1);
        self.history.record(invoke);
        self.busy.fetch_add(1, Ordering::SeqCst);
        let result = tokio::time::timeout(CALL_LIMIT, session.checkin(grant)).await;
        self.busy.fetch_sub(1, Ordering::SeqCst);
        let (kind, detail) = match result {
            Ok(Ok(checkin)) if checkin.released => (EventType::Ok, None),
            Ok(Ok(_)) => (EventType::Fail, Some("not-held".to_string())),
            Ok(Err(error)) => (EventType::Unknown, Some(error.to_string())),
            Err(_) => (
                EventType::Unknown,
                Some(format!("no answer within {CALL_LIMIT:?}")),
            ),
        };
        let mut done = self.event(kind, OpKind::Checkin, id, session);
        done.token = Some(Token::from(token));
        done.attempt = Some(1);
        done.detail = detail.clone();
        self.history.record(done);
        self.follow(session, events);
        let replaced = self.current(grant.token);
        if replaced != token {
            // The grant was recovered under a new token during the call, and
            // the call checked that one in.
            let id = self.history.next_id();
            let mut invoke = self.event(EventType::Invoke, OpKind::Checkin, id, session);
            invoke.token = Some(Token::from(replaced));
            invoke.attempt = Some(1);
            invoke.detail = Some(format!(
                "the check-in of {} sent before the library replaced it",
                Token::from(token)
            ));
            self.history.record(invoke);
            let mut done = self.event(kind, OpKind::Checkin, id, session);
            done.token = Some(Token::from(replaced));
            done.attempt = Some(1);
            done.detail = detail;
            self.history.record(done);
        }
    }

    /// Records the last moment the application saw `grant` valid.
    fn record_use(&self, session: &Session, grant: &Grant, seen: Option<Instant>) {
        let mut event = self.event(EventType::Info, OpKind::Use, 0, session);
        event.token = Some(Token::from(self.current(grant.token)));
        event.feature = Some(grant.feature.clone());
        event.count = Some(grant.count);
        event.valid_until_us = seen.map(|at| self.history.us_at(at.into_std()));
        event.grace_ms = Some(self.grace().as_millis() as u64);
        self.history.record(event);
    }
}

/// The word the history uses for a library denial (as the raw workers'
/// `deny_detail` does for the wire's reasons).
fn deny_word(reason: raftlm::license::state::DenyReason) -> &'static str {
    use raftlm::license::state::DenyReason;
    match reason {
        DenyReason::NoSuchFeature => "no-such-feature",
        DenyReason::VersionNotLicensed => "version-not-licensed",
        DenyReason::Expired => "expired",
        DenyReason::ExceedsLicensed => "exceeds-licensed",
        DenyReason::InUse => "in-use",
        DenyReason::BadCount => "bad-count",
        DenyReason::CapacityReached => "capacity-reached",
        DenyReason::HostsNotListed => "hosts-not-listed",
    }
}

/// Takes one application at a time off the network for longer than the TTL.
struct Cutter {
    links: Vec<Arc<LinkProxy>>,
    spec: AppSpec,
    history: Arc<History>,
    phase: watch::Receiver<Phase>,
    rng: StdRng,
}

impl Cutter {
    fn record(&self, phase: &str, app: usize, what: &str) {
        let mut event = Event::new("nemesis", EventType::Info, OpKind::Nemesis, 0);
        event.fault = Some("client/cut-off".into());
        event.node = Some(format!("a{app}"));
        event.detail = Some(format!("{phase}: {what}"));
        self.history.record(event);
    }

    async fn run(mut self) {
        loop {
            let every = self.spec.cut_every.as_millis() as u64;
            let quiet = Duration::from_millis(self.rng.gen_range(every / 2..=every.max(1)));
            let mut phase = self.phase.clone();
            if tokio::time::timeout(quiet, phase.wait_for(|p| *p != Phase::Run))
                .await
                .is_ok()
            {
                return;
            }
            let app = self.rng.gen_range(0..self.links.len());
            let hold =
                self.spec.session_ttl + Duration::from_millis(self.rng.gen_range(1000..4000));
            let (link, how) = match self.rng.gen_range(0..3) {
                0 => (Link::Down { blackhole: false }, "refused"),
                1 => (Link::Down { blackhole: true }, "black-holed"),
                _ => (Link::Frozen, "frozen"),
            };
            let what = format!(
                "application a{app} (grace {} ms) cut off from the cluster ({how}) for {hold:?}",
                if app.is_multiple_of(2) {
                    0
                } else {
                    self.spec.grace.as_millis()
                }
            );
            self.record("start", app, &what);
            self.links[app].set(link);
            // Healed early if the run moves on, so the end-of-run reads see
            // every application.
            let mut phase = self.phase.clone();
            let _ = tokio::time::timeout(hold, phase.wait_for(|p| *p != Phase::Run)).await;
            self.links[app].set(Link::Up);
            self.record("end", app, &what);
        }
    }
}

/// Caching-mode over-use, from the history: for every grant an application
/// reported using, how long after a read showed the cluster no longer held
/// it the application still saw it valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overuse {
    /// Grants of applications without a grace period that were looked at.
    pub without_grace: u64,
    /// Of those, grants used after the cluster had released them (must be 0).
    pub without_grace_overused: u64,
    /// Grants of applications with a grace period that were looked at.
    pub with_grace: u64,
    /// Of those, grants used after the cluster had released them.
    pub with_grace_overused: u64,
    /// The longest over-use, ms, of applications with a grace period.
    pub longest_ms: u64,
    /// Their grace period, ms: over-use beyond it would break the library's promise.
    pub grace_ms: u64,
    /// Examples, one sentence each.
    pub examples: Vec<String>,
}

/// Computes [`Overuse`] from the history's `use` events and state reads.
pub fn overuse(events: &[Event]) -> Overuse {
    // Reads: (sent, answered, tokens held).
    let mut sent: BTreeMap<u64, u64> = BTreeMap::new();
    let mut reads: Vec<(u64, u64, std::collections::BTreeSet<Token>)> = Vec::new();
    for event in events.iter().filter(|e| e.op == OpKind::Read) {
        match event.kind {
            EventType::Invoke => {
                sent.entry(event.id).or_insert(event.time_us);
            }
            EventType::Ok => {
                let at = sent.get(&event.id).copied().unwrap_or(event.time_us);
                let tokens = event.grants.iter().flatten().map(|g| g.token).collect();
                reads.push((at, event.time_us, tokens));
            }
            _ => {}
        }
    }
    // When each grant was granted (its check-out's answer).
    let granted: BTreeMap<Token, u64> = events
        .iter()
        .filter(|e| e.op == OpKind::Checkout && e.kind == EventType::Ok)
        .filter_map(|e| Some((e.token?, e.time_us)))
        .collect();
    let mut result = Overuse::default();
    for used in events.iter().filter(|e| e.op == OpKind::Use) {
        let (Some(token), Some(grace_ms)) = (used.token, used.grace_ms) else {
            continue;
        };
        let Some(&granted_at) = granted.get(&token) else {
            continue;
        };
        let with_grace = grace_ms > 0;
        if with_grace {
            result.with_grace += 1;
            result.grace_ms = result.grace_ms.max(grace_ms);
        } else {
            result.without_grace += 1;
        }
        let Some(valid_until) = used.valid_until_us else {
            continue;
        };
        // The first read sent after the grant existed that no longer holds it.
        let released = reads
            .iter()
            .filter(|(at, _, tokens)| *at >= granted_at && !tokens.contains(&token))
            .map(|(_, answered, _)| *answered)
            .min();
        let Some(released) = released else { continue };
        if valid_until <= released {
            continue;
        }
        let over_ms = (valid_until - released) / 1000;
        if with_grace {
            result.with_grace_overused += 1;
            result.longest_ms = result.longest_ms.max(over_ms);
        } else {
            result.without_grace_overused += 1;
        }
        if result.examples.len() < 5 {
            result.examples.push(format!(
                "{} (grace {grace_ms} ms) saw grant {token} valid at {:.3} s, {over_ms} ms after a read answered at {:.3} s showed the cluster no longer held it",
                used.process,
                valid_until as f64 / 1e6,
                released as f64 / 1e6
            ));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time_us: u64, mut event: Event) -> Event {
        event.time_us = time_us;
        event
    }

    fn token(index: u64) -> Token {
        Token {
            term: 1,
            index,
            slot: 0,
        }
    }

    fn history(valid_until_us: u64, grace_ms: u64) -> Vec<Event> {
        let mut granted = Event::new("a0", EventType::Ok, OpKind::Checkout, 1);
        granted.token = Some(token(7));
        let read_invoke = Event::new("reader", EventType::Invoke, OpKind::Read, 2);
        // The read answered at 5 s holds no grant: the cluster released 1.7.0.
        let read = Event::new("reader", EventType::Ok, OpKind::Read, 2);
        let mut used = Event::new("a0", EventType::Info, OpKind::Use, 0);
        used.token = Some(token(7));
        used.valid_until_us = Some(valid_until_us);
        used.grace_ms = Some(grace_ms);
        vec![
            at(1_000_000, granted),
            at(4_900_000, read_invoke),
            at(5_000_000, read),
            at(9_000_000, used),
        ]
    }

    // A grant seen valid after a read showed it released is over-use: a
    // violation without grace, reported with its length with a grace; seen
    // valid only before the read, it is not.
    #[test]
    fn use_after_release_is_overuse() {
        let without = overuse(&history(6_200_000, 0));
        assert_eq!(
            (without.without_grace, without.without_grace_overused),
            (1, 1)
        );
        assert!(without.examples[0].contains("1200 ms after"), "{without:?}");

        let with = overuse(&history(8_000_000, 12_000));
        assert_eq!((with.with_grace, with.with_grace_overused), (1, 1));
        assert_eq!((with.longest_ms, with.grace_ms), (3000, 12_000));

        let before = overuse(&history(4_950_000, 0));
        assert_eq!(
            (before.without_grace, before.without_grace_overused),
            (1, 0)
        );
    }
}
