//! The activator: decides when this node may serve, owns the client access
//! point, and fences itself.
//!
//! openraft 0.9 keeps a partitioned leader in `ServerState::Leader`, so that
//! state is not permission to serve. The activator keeps its own **quorum
//! lease** (`docs/architecture.md`, "The activator"; decision 0004):
//!
//! - every `heartbeat_ms` on the leader it notes `t0` on `CLOCK_BOOTTIME`
//!   (which keeps counting while the process is stopped or the machine
//!   sleeps) and asks openraft to confirm leadership with a quorum
//!   (`get_read_log_id`), giving up after `lease_ms`; on success the lease is
//!   valid until `t0 + lease_ms`;
//! - `lease_ms` < `election_timeout_min_ms`, and followers refuse to vote
//!   for `election_timeout_max_ms` after they last heard from the leader, so
//!   no other node can be elected while the lease is valid;
//! - a node that just became leader waits `lease_ms + lease_margin_ms` after
//!   its first successful quorum round, proposes `Activate` (which records the
//!   failover in the state and starts every session's TTL afresh), and only
//!   then serves: by then the previous leader's lease has run out even if a
//!   voter restarted and forgot whom it heard from;
//! - when the lease lapses the node stops serving first (services check the
//!   lease on every request and again just before they reply), then
//!   releases the access point.
//!
//! The term is the fencing token: every reply carries it, and the client
//! library refuses a reply from a lower term than one it has seen.
//!
//! The decisions are a plain state machine, [`core::Core`], tested by the
//! scenario scripts of `tests/data/activator/`; this task only performs its
//! actions (quorum rounds, the `Activate` proposal with a timeout, the access
//! point's listener and commands, stepping back) and feeds their results
//! back. It knows the services only through [`Context`]: a way to propose
//! `Activate` and a way to serve the access point's listener.
//!
//! Access point backends (`access_point.mode`): `bind` binds the socket
//! address (on one machine every 127.x address is local and the kernel allows
//! one holder; a bind that fails because a stopped former active node still
//! holds it is retried while the node serves on its own address); `command`
//! runs the configured `up` command (retried and reported until it succeeds;
//! the node does not serve without it) and then binds, and runs `down` on
//! release — and once when the node starts, before its Raft core does
//! ([`clear_stale_address`]): a node that starts is not active, and a process
//! of it that ended without its `down` (`kill -9`, a crash, a host without the
//! unit's `ExecStopPost`) may have left the address on this machine; `none`
//! serves on the node's own address only.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::{AccessPoint, Config};
use crate::license::state::{Command, NodeId, Outcome, Term};
use crate::raft::{LogId, Raft};

pub mod core;

use self::core::{Action, Activation, ClockView, Core, Input, Level, Settings};
use crate::lease::LeaseState;
pub use crate::lease::{Lease, boottime_ms};

/// Proposes a command and waits for its outcome (the batcher, in a node).
pub type Propose = Arc<
    dyn Fn(Command) -> Pin<Box<dyn Future<Output = Result<(Outcome, LogId), String>> + Send>>
        + Send
        + Sync,
>;

/// Serves the client services on a listener until the receiver says stop.
pub type ServeListener =
    Arc<dyn Fn(TcpListener, watch::Receiver<bool>) -> JoinHandle<()> + Send + Sync>;

/// What the activator works with.
pub struct Context {
    /// This node's id.
    pub node_id: u64,
    /// The node's configuration.
    pub config: Arc<Config>,
    /// The local Raft node.
    pub raft: Raft,
    /// The lease the services read.
    pub lease: Arc<Lease>,
    /// Whether this node's clock agrees with its peers'.
    pub clock: Arc<Clock>,
    /// Why this node stepped back for good, once it did.
    pub stepped_back: Arc<OnceLock<String>>,
    /// Proposes `Activate`.
    pub propose: Propose,
    /// Serves the access point's listener.
    pub serve: ServeListener,
    /// Boot-time ms when this node last heard from a leader or granted a
    /// vote (kept by the Raft service).
    pub leader_contact: Arc<AtomicU64>,
    /// Planned handovers to this node, from the Raft service: `(from, term, served)`.
    pub handovers: std::sync::Mutex<Option<mpsc::Receiver<(u64, u64, bool)>>>,
    /// The Raft transport, to send a handover.
    pub network: crate::raft::network::Network,
    /// The node's TLS material (`None` without TLS): its CA gives the
    /// cluster identity an activation carries.
    pub tls: Option<Arc<crate::tls::acceptor::TlsState>>,
    /// What this node was restored from, checked against every voter's
    /// before an activation (`src/raft/restored.rs`).
    pub restore_check: Arc<crate::raft::restored::RestoreCheck>,
}

/// How long a stopping leader waits for a follower to have its whole log
/// before it hands over to the most up-to-date one anyway.
pub const HANDOVER_CATCH_UP_MAX: Duration = Duration::from_millis(300);
/// How often a stopping leader looks at its followers' progress while it
/// waits for one to catch up: small against `HANDOVER_CATCH_UP_MAX`, since
/// service is paused meanwhile.
pub const HANDOVER_CATCH_UP_POLL: Duration = Duration::from_millis(5);

/// How long a stopping leader keeps running after a handover, so that it can
/// grant the successor its vote, unless it sees the new leader sooner.
pub const HANDOVER_WAIT_MAX: Duration = Duration::from_secs(1);

/// Most results of the activator's own tasks (quorum rounds, access-point
/// commands, the activation, the bind) queued for its loop. The core keeps
/// at most [`ROUNDS_IN_FLIGHT_MAX`](core::ROUNDS_IN_FLIGHT_MAX) rounds and one
/// of each other kind in flight, so a handful are ever outstanding; a task
/// that found the queue full would wait for room, and the loop's own bind
/// result, which cannot wait, would be logged as an error and dropped.
pub const RESULTS_QUEUED_MAX: usize = 64;

/// How often the activator ticks: elections start within this of the
/// moment they are due, and quorum rounds start every heartbeat.
pub const TICK_MAX: Duration = Duration::from_millis(10);

/// Longest an `Activate` proposal may take. A partitioned openraft 0.9
/// leader's `client_write` never returns; after this the activation counts as
/// failed and the access point is released.
pub const ACTIVATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a stopping node waits for its access point to be released (a
/// `down` that keeps failing) before it exits anyway, saying so.
pub const STOP_RELEASE_MAX: Duration = Duration::from_secs(30);

/// Longest a pre-vote round waits for the answers it needs. A peer on a LAN
/// answers within milliseconds, and the round ends as soon as a majority has
/// granted, so a dead or cut-off peer costs nothing once the others have
/// answered; without a majority the round ends after this and the core's next
/// election attempt (`election_timeout_max_ms` later, 300 ms by default)
/// tries again.
pub const PRE_VOTE_TIMEOUT: Duration = Duration::from_millis(100);

/// How often pre-vote rounds that found no majority are logged (as a count):
/// a node cut off from its peers fails one every `election_timeout_max_ms`.
pub const PRE_VOTE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The election driver's own state: one campaign at a time, and its log.
#[derive(Default)]
struct Campaigns {
    /// A pre-vote round (and maybe the election after it) is under way.
    in_flight: std::sync::atomic::AtomicBool,
    /// When a lost round was last logged, and lost rounds since (std Mutex:
    /// no `.await` while held).
    lost: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
    /// The round's task (std Mutex: no `.await` while held), aborted and
    /// awaited when the activator stops, so that nothing of the node (its
    /// Raft handle, its stores) outlives the node's shutdown.
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Campaigns {
    /// Ends the round under way, if any, and waits until it is dropped.
    async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A running access point listener.
struct Held {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A tick: the clock's verdict (the peers whose clocks are off are logged
/// when that set changes), the leader's silence, fresh election jitter.
fn tick(ctx: &Context, rng: &mut rand::rngs::StdRng, clocks_reported: &mut Vec<u64>) -> Input {
    let timing = ctx.config.timing;
    let spread = timing.election_timeout_max_ms - timing.election_timeout_min_ms;
    let verdict = ctx.clock.judge();
    report_clocks(&verdict, clocks_reported);
    Input::Tick {
        clock: clock_view(&verdict),
        silence_ms: boottime_ms().saturating_sub(ctx.leader_contact.load(Ordering::Relaxed)),
        jitter_ms: rng.gen_range(0..=spread),
    }
}

/// The clock's verdict as the core sees it.
fn clock_view(verdict: &crate::clock::Verdict) -> ClockView {
    if verdict.condemned() {
        ClockView::Condemned
    } else if verdict.ok() {
        ClockView::Agrees
    } else {
        ClockView::Unknown
    }
}

/// Runs the activator until `stop` resolves, then stops serving and releases
/// the access point.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()>) {
    let timing = ctx.config.timing;
    let mut core = Core::new(Settings {
        heartbeat_ms: timing.heartbeat_ms,
        lease_ms: timing.lease_ms,
        lease_margin_ms: timing.lease_margin_ms,
        election_timeout_max_ms: timing.election_timeout_max_ms,
        mode: ctx.config.access_point.mode,
        ignore_lapse: crate::fault::broken(crate::fault::Break::Lease),
    });
    let (results, mut inputs) = mpsc::channel::<Input>(RESULTS_QUEUED_MAX);
    let mut ticker =
        tokio::time::interval(Duration::from_millis(timing.heartbeat_ms).min(TICK_MAX));
    let mut rng = rand::rngs::StdRng::from_entropy();
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics = ctx.raft.metrics();
    let mut held: Option<Held> = None;
    let mut clocks_reported: Vec<u64> = Vec::new();
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut seen: (bool, u64, Option<u64>) = (false, 0, None);
    let mut handovers = ctx
        .handovers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| mpsc::channel(1).1);
    let mut handed_over = false;
    let campaigns = Arc::new(Campaigns::default());
    tokio::pin!(stop);
    loop {
        let now = boottime_ms();
        let wake = core
            .wake_at(now)
            .map(|at| tokio::time::Instant::now() + Duration::from_millis(at - now));
        let input = tokio::select! {
            _ = &mut stop, if stop_deadline.is_none() => {
                stop_deadline = Some(tokio::time::Instant::now() + STOP_RELEASE_MAX);
                Input::Stop
            }
            _ = async { tokio::time::sleep_until(stop_deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if stop_deadline.is_some() => {
                error!("stopping without having released the access point (its down command keeps failing)");
                break;
            }
            _ = ticker.tick() => tick(&ctx, &mut rng, &mut clocks_reported),
            _ = async { tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)).await }, if wake.is_some() => {
                tick(&ctx, &mut rng, &mut clocks_reported)
            }
            changed = metrics.changed() => {
                if changed.is_err() {
                    if stop_deadline.is_some() {
                        break;
                    }
                    stop_deadline = Some(tokio::time::Instant::now() + STOP_RELEASE_MAX);
                    Input::Stop
                } else {
                    let m = metrics.borrow_and_update();
                    let view = (
                        m.current_leader == Some(ctx.node_id) && m.state.is_leader(),
                        m.current_term,
                        m.current_leader,
                    );
                    if view == seen {
                        continue;
                    }
                    seen = view;
                    Input::Raft { leader: view.0, term: Term(view.1), leader_id: view.2.map(NodeId) }
                }
            }
            Some(input) = inputs.recv() => input,
            Some((from, term, served)) = handovers.recv() => Input::Handover { from: NodeId(from), term: Term(term), served },
        };
        let actions = core.step(boottime_ms(), input);
        for action in actions {
            if let Action::Handover { term, served } = action {
                handed_over = hand_over(&ctx, term, served).await;
                continue;
            }
            if action == Action::Stopped && handed_over {
                wait_for_successor(&ctx).await;
            }
            if perform(&ctx, action, &mut held, &results, &campaigns).await {
                campaigns.stop().await;
                return;
            }
        }
    }
    campaigns.stop().await;
    ctx.lease.update(|l| *l = LeaseState::default());
    unbind(&ctx.config.access_point, held.take()).await;
}

/// Performs one action; `true` when the activator is done.
async fn perform(
    ctx: &Arc<Context>,
    action: Action,
    held: &mut Option<Held>,
    results: &mpsc::Sender<Input>,
    campaigns: &Arc<Campaigns>,
) -> bool {
    match action {
        Action::Round { term } => {
            let ctx = ctx.clone();
            let results = results.clone();
            tokio::spawn(async move {
                let t0 = boottime_ms();
                let lease = Duration::from_millis(ctx.config.timing.lease_ms);
                let round = tokio::time::timeout(lease, ctx.raft.get_read_log_id()).await;
                let still_leader = {
                    let metrics = ctx.raft.metrics();
                    let m = metrics.borrow();
                    m.current_leader == Some(ctx.node_id) && m.current_term == term.0
                };
                let ok = matches!(round, Ok(Ok(_))) && still_leader;
                let _ = results.send(Input::Round { term, t0, ok }).await;
            });
        }
        Action::Lease {
            term,
            until_ms,
            serving,
        } => ctx.lease.update(|l| {
            l.term = term;
            l.until_ms = until_ms;
            l.serving = serving;
        }),
        Action::Up | Action::Down => {
            let up = action == Action::Up;
            let access_point = ctx.config.access_point.clone();
            let results = results.clone();
            tokio::spawn(async move {
                let argv = if up {
                    &access_point.up
                } else {
                    &access_point.down
                };
                let result = run_command(&access_point, argv).await;
                let _ = results
                    .send(if up {
                        Input::Up { result }
                    } else {
                        Input::Down { result }
                    })
                    .await;
            });
        }
        Action::Activate { term } => {
            let ctx = ctx.clone();
            let results = results.clone();
            tokio::spawn(async move {
                let timing = ctx.config.timing;
                let command = Command::Activate {
                    term,
                    node: NodeId(ctx.node_id),
                    cluster_name: ctx.config.cluster_name.clone(),
                    cluster_id: ctx.tls.as_ref().map(|tls| tls.current().cluster_id),
                    lease_ms: timing.lease_ms,
                    wait_ms: timing.lease_ms + timing.lease_margin_ms,
                };
                // Both ask every voter, and wait at most a lease for each.
                let (restored, caught) = tokio::join!(same_backup(&ctx), caught_up(&ctx));
                let result = match restored.and(caught) {
                    Err(not) => not,
                    Ok(()) => {
                        match tokio::time::timeout(ACTIVATE_TIMEOUT, (ctx.propose)(command)).await {
                            Err(_) => {
                                Activation::Failed(format!("no answer within {ACTIVATE_TIMEOUT:?}"))
                            }
                            Ok(Err(message)) => Activation::Failed(message),
                            Ok(Ok((outcome, log_id))) => activation(outcome, log_id, term),
                        }
                    }
                };
                let _ = results.send(Input::Activated { term, result }).await;
            });
        }
        Action::Bind => {
            let address = ctx.config.access_point.address;
            let result = match TcpListener::bind(address).await {
                Ok(listener) => {
                    let (stop, stopped) = watch::channel(false);
                    let task = (ctx.serve)(listener, stopped);
                    *held = Some(Held { stop, task });
                    Ok(())
                }
                Err(e) => Err(format!("cannot bind {address}: {e}")),
            };
            // Sent by the loop that reads the queue, so it must not wait for
            // room; RESULTS_QUEUED_MAX leaves room for every result in flight.
            if let Err(mpsc::error::TrySendError::Full(_)) =
                results.try_send(Input::Bound { result })
            {
                error!(
                    "the bind's result did not fit in the activator's queue ({RESULTS_QUEUED_MAX}); the core is not told of it"
                );
            }
        }
        Action::Unbind => unbind(&ctx.config.access_point, held.take()).await,
        // openraft's own election timer is off for good (`crate::node::raft_config`):
        // a node stepped back starts no election because the core asks for none.
        Action::StepBack { why, until_ms } => {
            ctx.raft.runtime_config().heartbeat(false);
            if until_ms.is_none() {
                let _ = ctx.stepped_back.set(why);
            }
        }
        Action::Elect => {
            if !campaigns.in_flight.swap(true, Ordering::AcqRel) {
                let ctx = ctx.clone();
                let round = campaigns.clone();
                let task = tokio::spawn(async move {
                    campaign(&ctx, &round).await;
                    round.in_flight.store(false, Ordering::Release);
                });
                *campaigns.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
            }
        }
        Action::Rejoin => {
            if ctx.stepped_back.get().is_none() {
                ctx.raft.runtime_config().heartbeat(true);
            }
        }
        Action::Log { level, message } => match level {
            Level::Info => info!("{message}"),
            Level::Warn => warn!("{message}"),
            Level::Error => error!("{message}"),
        },
        // Performed by the loop in `run`, which waits for it.
        Action::Handover { .. } => {}
        Action::Stopped => return true,
    }
    false
}

/// The election driver: asks every voter a pre-vote for the term this node
/// would start (`src/raft/pre_vote.rs`) and starts the election
/// (`trigger().elect()`) only if a majority, this node included, grants it
/// and no leader was heard from meanwhile. A node that cannot win — cut off
/// from its peers, or with a leader the others still hear — raises no term.
///
/// A planned handover does not come here: the Raft service starts the
/// successor's election at once (see `docs/decisions/0018-pre-vote.md`).
async fn campaign(ctx: &Context, campaigns: &Campaigns) {
    let contact = ctx.leader_contact.load(Ordering::Relaxed);
    let (voters, term) = {
        let metrics = ctx.raft.metrics();
        let m = metrics.borrow();
        if m.state.is_leader() {
            return;
        }
        let membership = m.membership_config.membership();
        let voters: Vec<(u64, Option<crate::raft::Member>)> = membership
            .voter_ids()
            .map(|id| (id, membership.get_node(&id).cloned()))
            .collect();
        (voters, m.current_term)
    };
    if !voters.iter().any(|(id, _)| *id == ctx.node_id) {
        return;
    }
    // A node restored from a backup starts no election before every voter
    // has said it was restored from the same one: a leader replicating to
    // a node restored from another would put its entries over that node's
    // committed ones (openraft stops that node's Raft on it).
    if ctx.restore_check.pending(false).is_some() {
        let timeout = Duration::from_millis(ctx.config.timing.lease_ms);
        if ctx
            .restore_check
            .check(ctx.node_id, voters.clone(), &ctx.network, timeout)
            .await
            .is_err()
        {
            return;
        }
    }
    let ask = crate::raft::pre_vote::Ask {
        term: Term(term + 1),
        last_log_id: ctx.raft.data_metrics().borrow().last_log,
    };
    let mut asks = tokio::task::JoinSet::new();
    for (id, member) in voters.iter().cloned() {
        if id == ctx.node_id {
            continue;
        }
        let network = ctx.network.clone();
        let from = ctx.node_id;
        asks.spawn(async move {
            let answer = match member {
                Some(member) => {
                    network
                        .pre_vote(from, id, &member, ask, PRE_VOTE_TIMEOUT)
                        .await
                }
                None => Err("not in the membership's node list".into()),
            };
            (id, answer)
        });
    }
    let mut granted = 1;
    let mut refusals = Vec::new();
    while !crate::raft::pre_vote::won(granted, voters.len()) {
        let Some(joined) = asks.join_next().await else {
            break;
        };
        let Ok((id, answer)) = joined else { continue };
        match answer {
            Ok(reply) if reply.granted => granted += 1,
            Ok(reply) => refusals.push(format!("node {id}: {}", reply.refusal)),
            Err(error) => refusals.push(format!("node {id}: no answer: {error}")),
        }
    }
    // Answers still outstanding are not needed.
    asks.abort_all();
    if !crate::raft::pre_vote::won(granted, voters.len()) {
        let mut lost = campaigns.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.1 += 1;
        if lost
            .0
            .is_none_or(|at| at.elapsed() >= PRE_VOTE_LOG_INTERVAL)
        {
            info!(
                term = ask.term.0,
                granted,
                voters = voters.len(),
                lost_rounds = lost.1,
                "no election: a pre-vote round for term {} found no majority ({}); logged at most every {PRE_VOTE_LOG_INTERVAL:?}",
                ask.term,
                refusals.join("; ")
            );
            *lost = (Some(std::time::Instant::now()), 0);
        }
        return;
    }
    // Heard from a leader (or voted) while the round ran, or the term moved:
    // this round's answers are out of date.
    let moved = {
        let metrics = ctx.raft.metrics();
        let m = metrics.borrow();
        m.current_term != term || m.state.is_leader()
    };
    if moved || ctx.leader_contact.load(Ordering::Relaxed) != contact {
        return;
    }
    info!(
        term = ask.term.0,
        granted,
        voters = voters.len(),
        "pre-vote granted by a majority: starting an election"
    );
    if let Err(error) = ctx.raft.trigger().elect().await {
        warn!(%error, "cannot start an election");
    }
}

/// Longest a leader about to activate waits for its state machine to apply
/// as far as its peers have. A leader elected in a new term has every
/// committed entry in its log and applies it once the first entry of its
/// term commits, well within this; one that cannot (its log lost committed
/// entries) never will.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(2);

/// Checks, before this leader proposes `Activate`, that its state machine
/// has applied at least as far as every voter that answers a round of
/// `Progress` requests, with answers from a majority (itself included):
/// whatever a majority has committed, at least one of them has applied or
/// this node's log holds it under its own term, so a node that serves after
/// this check answers from a state that has every acknowledged change.
///
/// Raft's election rule already gives this to a leader elected in a new
/// term, once the first entry of its term is applied (which `Activate`
/// waits for). The check guards against a leader that was not elected: a
/// node restored by openraft as leader of the term it led before a restart
/// (`LogStore::demote_restored_leadership` prevents that at start-up), whose
/// own `committed` and log may have lost a tail its followers hold.
async fn caught_up(ctx: &Arc<Context>) -> Result<(), Activation> {
    if crate::fault::broken(crate::fault::Break::IncompleteActivation) {
        return Ok(());
    }
    let (voters, own) = {
        let metrics = ctx.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<(u64, Option<crate::raft::Member>)> = membership
            .voter_ids()
            .map(|id| (id, membership.get_node(&id).cloned()))
            .collect();
        (voters, m.last_applied.map(|l| l.index))
    };
    let timeout = Duration::from_millis(ctx.config.timing.lease_ms);
    let mut asks = tokio::task::JoinSet::new();
    for (id, member) in voters.iter().cloned() {
        if id == ctx.node_id {
            continue;
        }
        let network = ctx.network.clone();
        let from = ctx.node_id;
        asks.spawn(async move {
            let answer = match member {
                Some(member) => network.progress(from, id, &member, timeout).await,
                None => Err("not in the membership's node list".into()),
            };
            (id, answer)
        });
    }
    let mut answered = 1;
    let mut furthest: Option<(u64, u64)> = None;
    let mut failures = Vec::new();
    while let Some(joined) = asks.join_next().await {
        let Ok((id, answer)) = joined else { continue };
        match answer {
            Ok(applied) => {
                answered += 1;
                if let Some(index) = applied
                    && furthest.is_none_or(|(_, f)| index > f)
                {
                    furthest = Some((id, index));
                }
            }
            Err(error) => failures.push(format!("node {id}: {error}")),
        }
    }
    if answered < voters.len() / 2 + 1 {
        return Err(Activation::Failed(format!(
            "only {answered} of {} voters said how far they have applied ({})",
            voters.len(),
            failures.join("; ")
        )));
    }
    let Some((peer, index)) = furthest else {
        return Ok(());
    };
    if own.is_some_and(|own| own >= index) {
        return Ok(());
    }
    match ctx
        .raft
        .wait(Some(CATCH_UP_MAX))
        .applied_index_at_least(Some(index), "activation catch-up")
        .await
    {
        Ok(_) => Ok(()),
        Err(openraft::metrics::WaitError::ShuttingDown) => {
            Err(Activation::Failed("raft is shutting down".into()))
        }
        Err(openraft::metrics::WaitError::Timeout(..)) => {
            let own = ctx.raft.metrics().borrow().last_applied.map(|l| l.index);
            Err(Activation::Behind(format!(
                "node {peer} has applied the log up to index {index}, but this node only up to {} after {CATCH_UP_MAX:?}",
                own.map_or_else(|| "none".to_string(), |i| i.to_string())
            )))
        }
    }
}

/// Checks, before this leader proposes `Activate`, that the voters were not
/// restored from different backups (`src/raft/restored.rs`): while a
/// restore is pending, every voter must have been restored from the same
/// one and still hold its state.
async fn same_backup(ctx: &Arc<Context>) -> Result<(), Activation> {
    let voters: Vec<(u64, Option<crate::raft::Member>)> = {
        let metrics = ctx.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .map(|id| (id, membership.get_node(&id).cloned()))
            .collect()
    };
    let timeout = Duration::from_millis(ctx.config.timing.lease_ms);
    ctx.restore_check
        .check(ctx.node_id, voters, &ctx.network, timeout)
        .await
        .map_err(Activation::Failed)
}

/// Hands leadership over: picks the voter with the most of the log
/// (waiting up to [`HANDOVER_CATCH_UP_MAX`] for one to have all of it) and
/// asks it to start an election. `true` if it was asked.
async fn hand_over(ctx: &Context, term: Term, served: bool) -> bool {
    let deadline = tokio::time::Instant::now() + HANDOVER_CATCH_UP_MAX;
    let successor = loop {
        let (best, complete) = {
            let metrics = ctx.raft.metrics();
            let m = metrics.borrow();
            let last = m.last_log_index;
            // Learners are replicated to as well, but cannot be elected.
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            let best = m.replication.as_ref().and_then(|replication| {
                replication
                    .iter()
                    .filter(|(id, _)| **id != ctx.node_id && voters.contains(id))
                    .max_by_key(|(_, matched)| matched.map(|l| l.index))
                    .map(|(id, matched)| (*id, matched.map(|l| l.index)))
            });
            let member =
                best.and_then(|(id, _)| m.membership_config.membership().get_node(&id).cloned());
            let complete = best.is_some_and(|(_, matched)| matched >= last);
            (best.zip(member), complete)
        };
        match best {
            Some(found) if complete || tokio::time::Instant::now() >= deadline => {
                break Some(found);
            }
            None => break None,
            _ => tokio::time::sleep(HANDOVER_CATCH_UP_POLL).await,
        }
    };
    let Some(((id, matched), member)) = successor else {
        warn!(
            "no follower to hand over to: the others elect a leader when this node's heartbeats stop"
        );
        return false;
    };
    match ctx
        .network
        .handover(ctx.node_id, id, &member, term.0, served)
        .await
    {
        Ok(()) => {
            info!(
                successor = id,
                ?matched,
                term = term.0,
                "handed over: node {id} is starting an election"
            );
            // No more heartbeats: if this node cannot grant the vote (it has
            // led for less than election_timeout_max_ms), the third node's
            // refusal runs out sooner.
            ctx.raft.runtime_config().heartbeat(false);
            true
        }
        Err(error) => {
            warn!(successor = id, %error, "handover refused; the others elect a leader when this node's heartbeats stop");
            false
        }
    }
}

/// After a handover, keeps the node running (it may have to grant the
/// successor its vote) until another node leads, at most [`HANDOVER_WAIT_MAX`].
async fn wait_for_successor(ctx: &Context) {
    let mut metrics = ctx.raft.metrics();
    let wait = metrics.wait_for(|m| m.current_leader.is_some_and(|id| id != ctx.node_id));
    if tokio::time::timeout(HANDOVER_WAIT_MAX, wait).await.is_err() {
        warn!("no new leader within {HANDOVER_WAIT_MAX:?} of the handover; stopping anyway");
    }
}

/// What an applied `Activate` means for the node that proposed it in `term`.
fn activation(outcome: Outcome, log_id: LogId, term: Term) -> Activation {
    match outcome {
        Outcome::WrongCluster { held, asked } => Activation::Refused(format!(
            "this node's cluster_name \"{asked}\" is not the cluster's \"{held}\""
        )),
        Outcome::TimingIncompatible {
            previous,
            lease_ms,
            wait_ms,
        } => {
            let previous = previous.0;
            Activation::Refused(format!(
                "node {previous} was active with lease_ms = {lease_ms}, and this node waits only lease_ms + lease_margin_ms = {wait_ms} ms before serving, so both could serve at once; give this node's [timing] a lease_ms + lease_margin_ms of at least {lease_ms}, or node {previous} a lease_ms of at most {wait_ms}"
            ))
        }
        _ if log_id.leader_id.term == term.0 => Activation::Committed,
        _ => Activation::OtherTerm,
    }
}

/// Logs, once each time the set changes, which peers' clocks are beyond the bound.
fn report_clocks(verdict: &crate::clock::Verdict, reported: &mut Vec<u64>) {
    let off = verdict.off();
    let ids: Vec<u64> = off.iter().map(|(id, _)| *id).collect();
    if ids == *reported {
        return;
    }
    for (id, offset) in &off {
        if !reported.contains(id) {
            warn!(
                node = id,
                offset_ms = offset,
                bound_ms = verdict.skew_max_ms,
                "node {id}'s wall clock is {} from this node's, beyond timing.clock_skew_max_ms",
                crate::clock::offset_text(*offset)
            );
        }
    }
    for id in reported.iter().filter(|id| !ids.contains(id)) {
        info!(
            node = id,
            "node {id}'s wall clock agrees with this node's again"
        );
    }
    *reported = ids;
}

/// Longest the access point's listener waits for open client connections to
/// go away when it closes. The release runs `down` only after it, and a new
/// active node may add the address `election_timeout_max_ms + lease_margin_ms`
/// (350 ms with the default timing) after this node's lease lapsed: the wait
/// must stay well inside that. A 500 ms wait here once let a LAN see two
/// holders for 77 ms (`raftlm-chaos --netns`, seed 1203).
pub const LISTENER_DRAIN_MAX: Duration = Duration::from_millis(100);

/// Closes the access point's listener.
async fn unbind(access_point: &AccessPoint, held: Option<Held>) {
    if let Some(held) = held {
        let _ = held.stop.send(true);
        let mut task = held.task;
        // Open client connections are asked to go away; do not wait on them
        // for long (the node no longer serves them anyway).
        if tokio::time::timeout(LISTENER_DRAIN_MAX, &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
        info!(address = %access_point.address, "access point released");
    }
}

/// Substitutes `{address}`, `{ip}`, `{port}`, `{prefix}` and `{interface}` in a command.
pub fn substitute(access_point: &AccessPoint, argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            arg.replace("{address}", &access_point.address.to_string())
                .replace("{ip}", &access_point.address.ip().to_string())
                .replace("{port}", &access_point.address.port().to_string())
                .replace("{prefix}", &access_point.prefix.to_string())
                .replace("{interface}", &access_point.interface)
        })
        .collect()
}

/// Runs the access point's `down` once at start (see the module docs), before
/// the Raft core starts, so that no election can make this node leader while
/// a slow `down` runs. It removes only this machine's copy of the address, so
/// with one node per machine (as deployed) it cannot take the address from
/// the active node.
pub async fn clear_stale_address(access_point: &AccessPoint) {
    match run_command(access_point, &access_point.down).await {
        Ok(()) => info!(
            "ran the access point's down command at start: this node is not active, so this machine must not hold {}",
            access_point.address.ip()
        ),
        Err(error) => warn!(
            "the access point's down command failed at start ({error}); if an earlier process left the address on this machine, it is still here"
        ),
    }
}

/// Most time an up or down command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

async fn run_command(access_point: &AccessPoint, argv: &[String]) -> Result<(), String> {
    let argv = substitute(access_point, argv);
    let Some((program, args)) = argv.split_first() else {
        return Err("the command is empty".into());
    };
    let mut child = tokio::process::Command::new(program);
    child.args(args).kill_on_drop(true);
    match tokio::time::timeout(COMMAND_TIMEOUT, child.output()).await {
        Err(_) => Err(format!(
            "`{}` did not finish within {:?}",
            argv.join(" "),
            COMMAND_TIMEOUT
        )),
        Ok(Err(e)) => Err(format!("`{}` could not run: {e}", argv.join(" "))),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => Err(format!(
            "`{}` exited with {}: {}",
            argv.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}
