//! The session core on tokio's paused clock: each test advances time to the
//! exact moment a rule should act (a renewal due, the grants' cover lapsing,
//! the grace period running out) and checks that it does not act a
//! millisecond before.

use std::time::{Duration, SystemTime};

use tokio::time::{Instant, advance};

use super::core::{Action, Core, Input, Now};
use super::{CACHING_PROBE_PAUSE, HEARTBEAT_MIN, SessionEvent, SessionOptions, SessionState};
use crate::client::error::ClientError;
use crate::client::rpc::Renewal;
use crate::license::secret::SessionSecret;
use crate::license::state::SessionId;

const MS: Duration = Duration::from_millis(1);
const GRACE: Duration = Duration::from_secs(60);
const UNREACHABLE_AFTER: Duration = Duration::from_secs(10);

/// Both clocks, the wall clock following tokio's paused one.
struct Clock {
    origin: Instant,
    wall: SystemTime,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn now(&self) -> Now {
        let at = Instant::now();
        Now {
            at,
            wall: self.wall + (at - self.origin),
        }
    }

    /// The wall-clock time `after` the origin.
    fn wall(&self, after: Duration) -> SystemTime {
        self.wall + after
    }
}

fn core(clock: &Clock, heartbeat_interval: Option<Duration>) -> Core {
    let options = SessionOptions {
        vendor: "acme".to_string(),
        grace_period: GRACE,
        heartbeat_interval,
        unreachable_after: UNREACHABLE_AFTER,
        ..SessionOptions::default()
    };
    Core::new(options, Vec::new(), SessionSecret::generate(), clock.now())
}

fn renewal(address: &str, term: u64, ttl: Duration) -> Renewal {
    Renewal {
        term,
        address: address.to_string(),
        unknown: Vec::new(),
        session_ttl: ttl,
        session_expired: false,
        removed: Vec::new(),
    }
}

fn unreachable() -> ClientError {
    ClientError::Unreachable {
        tried: vec!["n1:27000".to_string()],
        last: "deadline passed".to_string(),
    }
}

/// The renewal a due heartbeat sends: its session and caching report.
fn send_renewal(core: &mut Core, clock: &Clock) -> (SessionId, u64) {
    let actions = core.step(clock.now(), Input::HeartbeatDue);
    match actions.as_slice() {
        [
            Action::Renew {
                session, report, ..
            },
        ] => (*session, report.cached_for_ms),
        other => panic!("a due heartbeat sends one renewal, not {other:?}"),
    }
}

/// Sends a renewal now and feeds it `result` after `delay`; the actions.
async fn renew(
    core: &mut Core,
    clock: &Clock,
    delay: Duration,
    result: Result<Renewal, ClientError>,
) -> Vec<Action> {
    let (session, _) = send_renewal(core, clock);
    let sent = Instant::now();
    advance(delay).await;
    core.step(
        clock.now(),
        Input::Renewed {
            session,
            sent,
            result,
        },
    )
}

fn events(actions: &[Action]) -> Vec<SessionEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

// The first heartbeat goes out at once; then the session renews every third
// of the TTL the cluster announces (or the configured interval), never more
// often than HEARTBEAT_MIN, and never with two renewals in flight.
#[tokio::test(start_paused = true)]
async fn renewals_follow_a_third_of_the_announced_ttl() {
    let clock = Clock::new();
    let mut core = core(&clock, None);
    assert_eq!(core.heartbeat_at(), Some(clock.origin));
    let (session, _) = send_renewal(&mut core, &clock);
    assert_eq!(core.heartbeat_at(), None, "one renewal in flight at a time");
    advance(200 * MS).await;
    let actions = core.step(
        clock.now(),
        Input::Renewed {
            session,
            sent: clock.origin,
            result: Ok(renewal("n1", 1, Duration::from_secs(9))),
        },
    );
    assert_eq!(
        events(&actions),
        vec![SessionEvent::Connected {
            address: "n1".to_string(),
            term: 1
        }]
    );
    let answered = Instant::now();
    assert_eq!(core.heartbeat_at(), Some(answered + Duration::from_secs(3)));

    // A longer TTL announced later stretches the cadence.
    advance(Duration::from_secs(3)).await;
    renew(
        &mut core,
        &clock,
        MS,
        Ok(renewal("n1", 1, Duration::from_secs(30))),
    )
    .await;
    assert_eq!(
        core.heartbeat_at(),
        Some(Instant::now() + Duration::from_secs(10))
    );

    // A TTL so short that a third of it is below the floor.
    renew(&mut core, &clock, MS, Ok(renewal("n1", 1, 15 * MS))).await;
    assert_eq!(core.heartbeat_at(), Some(Instant::now() + HEARTBEAT_MIN));

    // A configured interval wins over the TTL.
    let mut core = self::core(&clock, Some(Duration::from_secs(2)));
    renew(
        &mut core,
        &clock,
        MS,
        Ok(renewal("n1", 1, Duration::from_secs(9))),
    )
    .await;
    assert_eq!(
        core.heartbeat_at(),
        Some(Instant::now() + Duration::from_secs(2))
    );
}

// Grants are valid until the last answered renewal's send time plus the TTL
// less a twentieth; at that moment, with no other renewal answered, the
// session enters caching mode.
#[tokio::test(start_paused = true)]
async fn grants_lapse_one_ttl_less_the_margin_after_the_last_answered_renewal() {
    let clock = Clock::new();
    let mut core = core(&clock, None);
    let ttl = Duration::from_secs(20);
    renew(
        &mut core,
        &clock,
        Duration::from_secs(1),
        Ok(renewal("n1", 1, ttl)),
    )
    .await;
    let lapse = clock.origin + Duration::from_secs(19);
    assert_eq!(
        core.lapse_at(),
        Some(lapse),
        "sent at 0, TTL 20 s, margin 1 s"
    );

    advance(lapse - Instant::now() - MS).await;
    assert!(
        core.state().grants_valid(),
        "a millisecond before the lapse"
    );
    advance(MS).await;
    assert!(!core.state().grants_valid(), "at the lapse");
    let actions = core.step(clock.now(), Input::Lapsed);
    assert_eq!(
        events(&actions),
        vec![SessionEvent::EnteredCaching {
            since: clock.wall(Duration::from_secs(1)),
            grace_until: clock.wall(Duration::from_secs(1) + GRACE),
        }]
    );
    assert!(matches!(core.state(), SessionState::Caching { .. }));
    assert_eq!(core.lapse_at(), None);
    assert!(
        core.state().grants_valid(),
        "valid again, for the grace period"
    );
}

// A renewal that gets no answer within `unreachable_after` enters caching
// mode; while cut off the session probes every CACHING_PROBE_PAUSE, each
// probe reporting how long it has been cut off; a refused renewal backs off
// a whole heartbeat interval instead.
#[tokio::test(start_paused = true)]
async fn an_unanswered_renewal_enters_caching_and_probes_after_a_pause() {
    let clock = Clock::new();
    let mut core = core(&clock, None);
    renew(
        &mut core,
        &clock,
        MS,
        Ok(renewal("n1", 1, Duration::from_secs(30))),
    )
    .await;
    let contact = clock.wall(MS);
    advance(Duration::from_secs(10)).await;
    let actions = renew(&mut core, &clock, UNREACHABLE_AFTER, Err(unreachable())).await;
    assert_eq!(
        events(&actions),
        vec![SessionEvent::EnteredCaching {
            since: contact,
            grace_until: contact + GRACE,
        }]
    );
    assert_eq!(
        core.heartbeat_at(),
        Some(Instant::now() + CACHING_PROBE_PAUSE)
    );

    advance(CACHING_PROBE_PAUSE).await;
    let (_, cached_for_ms) = send_renewal(&mut core, &clock);
    let cut_off = clock.now().wall.duration_since(contact).unwrap();
    assert_eq!(cached_for_ms, cut_off.as_millis() as u64);
    let session = core_session(&core);
    let actions = core.step(
        clock.now(),
        Input::Renewed {
            session,
            sent: Instant::now(),
            result: Err(unreachable()),
        },
    );
    assert!(events(&actions).is_empty(), "already caching: no new event");
    assert_eq!(
        core.heartbeat_at(),
        Some(Instant::now() + CACHING_PROBE_PAUSE)
    );

    let refused = ClientError::SessionClosed;
    renew(&mut core, &clock, MS, Err(refused)).await;
    assert_eq!(
        core.heartbeat_at(),
        Some(Instant::now() + Duration::from_secs(10))
    );
}

fn core_session(core: &Core) -> SessionId {
    core.session()
}

// In caching mode the grants stay valid until the grace period, counted
// from the cluster's last answer, runs out: not a millisecond before, then
// the session says so once.
#[tokio::test(start_paused = true)]
async fn the_grace_period_runs_out_at_its_deadline() {
    let clock = Clock::new();
    let mut core = core(&clock, None);
    // The cluster never answered: the grace period counts from the start.
    renew(&mut core, &clock, UNREACHABLE_AFTER, Err(unreachable())).await;
    let deadline = clock.origin + GRACE;
    assert_eq!(core.grace_at(Instant::now()), Some(deadline));

    advance(deadline - Instant::now() - MS).await;
    assert!(core.step(clock.now(), Input::GraceDue).is_empty());
    assert!(core.state().grants_valid());
    advance(MS).await;
    let actions = core.step(clock.now(), Input::GraceDue);
    let since = clock.wall(Duration::ZERO);
    assert_eq!(events(&actions), vec![SessionEvent::GraceExpired { since }]);
    assert_eq!(core.state(), &SessionState::GraceExpired { since });
    assert!(!core.state().grants_valid());
    assert_eq!(core.grace_at(Instant::now()), None);
    assert!(
        core.step(clock.now(), Input::GraceDue).is_empty(),
        "said once"
    );
}

// A grace period of years is not slept on in one go: the task wakes at most
// an hour ahead and looks again.
#[tokio::test(start_paused = true)]
async fn a_long_grace_period_is_slept_on_an_hour_at_a_time() {
    let clock = Clock::new();
    let options = SessionOptions {
        vendor: "acme".to_string(),
        grace_period: Duration::from_secs(5 * 365 * 24 * 3600),
        ..SessionOptions::default()
    };
    let mut core = Core::new(options, Vec::new(), SessionSecret::generate(), clock.now());
    renew(&mut core, &clock, UNREACHABLE_AFTER, Err(unreachable())).await;
    let now = Instant::now();
    assert_eq!(core.grace_at(now), Some(now + super::GRACE_WAKE_MAX));
    advance(super::GRACE_WAKE_MAX).await;
    assert!(core.step(clock.now(), Input::GraceDue).is_empty());
    assert!(matches!(core.state(), SessionState::Caching { .. }));
}

// The first answer after caching mode ends it, says how long the session was
// cut off, and reports a failover when another node answers now.
#[tokio::test(start_paused = true)]
async fn the_first_answer_leaves_caching_and_says_how_long() {
    let clock = Clock::new();
    let mut core = core(&clock, None);
    let ttl = Duration::from_secs(30);
    renew(&mut core, &clock, MS, Ok(renewal("n1", 1, ttl))).await;
    let contact = clock.now().wall;
    advance(Duration::from_secs(10)).await;
    renew(&mut core, &clock, UNREACHABLE_AFTER, Err(unreachable())).await;
    advance(Duration::from_secs(25)).await;
    let actions = renew(&mut core, &clock, MS, Ok(renewal("n2", 2, ttl))).await;
    let cached_for = clock.now().wall.duration_since(contact).unwrap();
    assert_eq!(
        cached_for,
        Duration::from_secs(45) + MS,
        "from the last answer to this one"
    );
    assert_eq!(
        events(&actions),
        vec![
            SessionEvent::LeftCaching {
                cached_for,
                address: "n2".to_string(),
                term: 2
            },
            SessionEvent::FailedOver {
                from: "n1".to_string(),
                to: "n2".to_string(),
                term: 2
            },
        ]
    );
    let set_state = actions
        .iter()
        .position(|a| matches!(a, Action::SetState(_)));
    let first_event = actions.iter().position(|a| matches!(a, Action::Emit(_)));
    assert!(
        set_state < first_event,
        "the state changes before the events go out"
    );
    assert!(matches!(
        core.state(),
        SessionState::Connected { term: 2, .. }
    ));
    assert_eq!(core.grace_at(Instant::now()), None);
    assert_eq!(
        core.heartbeat_at(),
        Some(Instant::now() + Duration::from_secs(10))
    );
}

// The whole session on the paused clock, against an address where nothing
// listens: the first renewal goes unanswered, so the session enters caching
// mode no sooner than `unreachable_after` after it started (and within one
// back-off step of it), and the grace period, counted from the start since
// the cluster never answered, runs out at exactly its deadline.
#[tokio::test(start_paused = true)]
async fn a_session_that_never_reaches_the_cluster_caches_then_runs_out_of_grace() {
    use crate::client::rpc::{Client, ClientOptions};
    use crate::client::server_list::ServerList;
    use crate::tls::client::ClientTls;

    let options = ClientOptions {
        tls: ClientTls::plaintext(),
        ..ClientOptions::default()
    };
    let backoff_max = options.backoff_max;
    let client = Client::with_options(ServerList::parse("127.0.0.1:1").unwrap(), options);
    let started = Instant::now();
    let session = super::Session::start(
        client,
        SessionOptions {
            vendor: "acme".to_string(),
            grace_period: GRACE,
            unreachable_after: UNREACHABLE_AFTER,
            ..SessionOptions::default()
        },
    );
    let mut state = session.watch_state();
    state
        .wait_for(|s| matches!(s, SessionState::Caching { .. }))
        .await
        .unwrap();
    let entered = Instant::now() - started;
    assert!(
        entered >= UNREACHABLE_AFTER && entered <= UNREACHABLE_AFTER + backoff_max,
        "entered caching mode {entered:?} after the start"
    );
    assert!(session.state().grants_valid());
    state
        .wait_for(|s| matches!(s, SessionState::GraceExpired { .. }))
        .await
        .unwrap();
    assert_eq!(
        Instant::now() - started,
        GRACE,
        "the grace period ends on time"
    );
    assert!(!session.state().grants_valid());
}
