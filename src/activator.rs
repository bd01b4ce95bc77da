//! The activator: decides when this node may serve, owns the client access
//! point, and fences itself.
//!
//! openraft 0.9 keeps a partitioned leader in `ServerState::Leader`, so that
//! state is not permission to serve. The activator keeps its own **quorum
//! lease** (DESIGN §4):
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
//! Access point backends (`access_point.mode`): `bind` binds the socket
//! address (on one machine every 127.x address is local and the kernel allows
//! one holder; a bind that fails because a stopped former active node still
//! holds it is retried while the node serves on its own address); `command`
//! runs the configured `up` command (retried and reported until it succeeds;
//! the node does not serve without it) and then binds, and runs `down` on
//! release; `none` serves on the node's own address only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{AccessPoint, AccessPointMode};
use crate::license::state::{Command, NodeId, Term};
use crate::server::Shared;
use crate::tls::acceptor::Plane;

use crate::lease::LeaseState;
pub use crate::lease::{Lease, boottime_ms};

/// A running access point: the listener's server task and how to stop it.
struct Held {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs the activator until `stop` resolves, then stops serving and releases
/// the access point.
pub async fn run(shared: Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let timing = shared.config.timing;
    let lease_ms = timing.lease_ms;
    let mut ticker = tokio::time::interval(Duration::from_millis(timing.heartbeat_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term_seen = 0u64;
    let mut first_round_ms: Option<u64> = None;
    let mut held: Option<Held> = None;
    let mut raised_ap = false;
    let mut last_ap_error_ms = 0u64;
    let mut metrics = shared.raft.metrics();
    let mut was_leader = false;
    // Until when (boot-time ms) this node stays out of leadership because its
    // clock disagreed with its peers'.
    let mut clock_back_until: Option<u64> = None;
    // The peers whose clocks were last reported beyond the bound.
    let mut clocks_reported: Vec<u64> = Vec::new();
    // When the next step is due sooner than the next tick (the end of the L + M wait).
    let mut wake_at: Option<tokio::time::Instant> = None;
    tokio::pin!(stop);
    loop {
        let wake = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
            // A change of leader or term is acted on at once, not at the next tick.
            changed = metrics.changed() => {
                if changed.is_err() {
                    break;
                }
                let m = metrics.borrow_and_update();
                let leader = m.current_leader == Some(shared.node_id) && m.state.is_leader();
                if leader == was_leader && m.current_term == term_seen {
                    continue;
                }
            }
            _ = wake => {}
        }
        wake_at = None;
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (
                m.current_leader == Some(shared.node_id) && m.state.is_leader(),
                m.current_term,
            )
        };
        was_leader = leader;
        if let Some(until) = clock_back_until {
            let now = boottime_ms();
            if now < until {
                // No quorum rounds meanwhile: their heartbeats would keep the
                // followers from electing a node with a good clock.
                wake_at = Some(tokio::time::Instant::now() + Duration::from_millis(until - now));
                continue;
            }
            clock_back_until = None;
            if shared.stepped_back.get().is_none() {
                shared.raft.runtime_config().heartbeat(true);
                shared.raft.runtime_config().elect(true);
                info!("clock step-back over: taking part in elections again");
            }
        }
        if !leader || term != term_seen {
            let was = shared.lease.get();
            if was.serving {
                info!(term = was.term, "no longer leader: stopping service");
            }
            shared.lease.update(|l| *l = LeaseState::default());
            release(&shared.config.access_point, held.take(), &mut raised_ap).await;
            term_seen = term;
            first_round_ms = None;
            if !leader {
                continue;
            }
        }

        // One quorum round.
        let t0 = boottime_ms();
        let round = tokio::time::timeout(
            Duration::from_millis(lease_ms),
            shared.raft.get_read_log_id(),
        )
        .await;
        let still_leader = {
            let metrics = shared.raft.metrics();
            let m = metrics.borrow();
            m.current_leader == Some(shared.node_id) && m.current_term == term
        };
        if matches!(round, Ok(Ok(_))) && still_leader {
            shared.lease.update(|l| {
                l.term = term;
                l.until_ms = t0 + lease_ms;
            });
            first_round_ms.get_or_insert(t0);
        }

        let now = boottime_ms();
        let verdict = shared.clock.judge();
        report_clocks(&verdict, &mut clocks_reported);
        if verdict.condemned() {
            // This node's clock is the odd one: it must not stamp state time
            // (the batcher already refuses to) nor stay leader.
            error!(
                %verdict,
                "this node's wall clock disagrees with a majority of its peers' by more than timing.clock_skew_max_ms: not serving, and stepping back from leadership; fix the clock (NTP)"
            );
            shared.raft.runtime_config().heartbeat(false);
            shared.raft.runtime_config().elect(false);
            shared.lease.update(|l| *l = LeaseState::default());
            release(&shared.config.access_point, held.take(), &mut raised_ap).await;
            first_round_ms = None;
            clock_back_until = Some(now + 3 * timing.election_timeout_max_ms);
            continue;
        }
        let lease = shared.lease.get();
        if lease.serving && !verdict.ok() {
            warn!(
                term,
                %verdict,
                "no majority of clocks agrees with this node's: stopping service and releasing the access point"
            );
            shared.lease.update(|l| l.serving = false);
            release(&shared.config.access_point, held.take(), &mut raised_ap).await;
            first_round_ms = None;
            continue;
        }
        if lease.serving && now >= lease.until_ms {
            // Stop serving first (services already refuse: the lease is checked per request), then release.
            warn!(
                term,
                "quorum lease lapsed: stopping service and releasing the access point"
            );
            shared.lease.update(|l| l.serving = false);
            release(&shared.config.access_point, held.take(), &mut raised_ap).await;
            first_round_ms = None;
            continue;
        }
        let Some(first) = first_round_ms else {
            continue;
        };
        let serve_from = first + lease_ms + timing.lease_margin_ms;
        if !lease.serving && now < serve_from {
            wake_at = Some(tokio::time::Instant::now() + Duration::from_millis(serve_from - now));
        }
        if !lease.serving && now >= serve_from && now < lease.until_ms && !verdict.ok() {
            if now >= last_ap_error_ms + 1000 {
                warn!(%verdict, "not activating until a majority of clocks agrees with this node's");
                last_ap_error_ms = now;
            }
            continue;
        }
        if !lease.serving && now >= serve_from && now < lease.until_ms {
            // Command mode: the address must be up before the node serves.
            if shared.config.access_point.mode == AccessPointMode::Command && !raised_ap {
                match run_command(&shared.config.access_point, &shared.config.access_point.up).await
                {
                    Ok(()) => raised_ap = true,
                    Err(message) => {
                        if now >= last_ap_error_ms + 1000 {
                            error!(%message, "access point up command failed; retrying, not serving until it succeeds");
                            last_ap_error_ms = now;
                        }
                        continue;
                    }
                }
            }
            let activate = Command::Activate {
                term: Term(term),
                node: NodeId(shared.node_id),
                cluster_name: shared.config.cluster_name.clone(),
                lease_ms,
                wait_ms: lease_ms + timing.lease_margin_ms,
            };
            match shared.batcher.submit(activate).await {
                Ok((
                    crate::license::state::Outcome::WrongCluster {
                        held: theirs,
                        asked,
                    },
                    _,
                )) => {
                    let why = format!(
                        "this node's cluster_name \"{asked}\" is not the cluster's \"{theirs}\""
                    );
                    step_back(&shared, why);
                    release(&shared.config.access_point, held.take(), &mut raised_ap).await;
                    // A follower from now on, until the process stops.
                    (&mut stop).await;
                    break;
                }
                Ok((
                    crate::license::state::Outcome::TimingIncompatible {
                        previous,
                        lease_ms: previous_lease,
                        wait_ms,
                    },
                    _,
                )) => {
                    let previous = previous.0;
                    let why = format!(
                        "node {previous} was active with lease_ms = {previous_lease}, and this node waits only lease_ms + lease_margin_ms = {wait_ms} ms before serving, so both could serve at once; give this node's [timing] a lease_ms + lease_margin_ms of at least {previous_lease}, or node {previous} a lease_ms of at most {wait_ms}"
                    );
                    step_back(&shared, why);
                    release(&shared.config.access_point, held.take(), &mut raised_ap).await;
                    // A follower from now on, until the process stops.
                    (&mut stop).await;
                    break;
                }
                Ok((_, log_id)) if log_id.leader_id.term == term => {
                    shared.lease.update(|l| {
                        if l.term == term {
                            l.serving = true;
                        }
                    });
                    info!(term, %log_id, "active: serving license requests");
                }
                Ok((_, log_id)) => warn!(term, %log_id, "activation committed in another term"),
                Err(error) => warn!(term, %error, "activation not committed"),
            }
        }
        if shared.lease.get().serving
            && held.is_none()
            && shared.config.access_point.mode != AccessPointMode::None
        {
            match bind(shared.clone()).await {
                Ok(h) => {
                    info!(address = %shared.config.access_point.address, "access point up");
                    held = Some(h);
                }
                Err(message) => {
                    if now >= last_ap_error_ms + 1000 {
                        warn!(%message, "access point not bound yet; serving on this node's own address and retrying");
                        last_ap_error_ms = now;
                    }
                }
            }
        }
    }
    shared.lease.update(|l| *l = LeaseState::default());
    release(&shared.config.access_point, held.take(), &mut raised_ap).await;
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

/// This node must not serve (its config cannot be safe with the cluster's):
/// it stops sending heartbeats and never starts an election again, so that a
/// node that may serve is elected instead (openraft 0.9 never makes a leader
/// step down by itself), and says why, in the log and in [`Shared::stepped_back`].
fn step_back(shared: &Shared, why: String) {
    error!(
        %why,
        "not serving: stepping back from leadership (no heartbeats, no elections) so that another node takes over; fix this node's config and restart it"
    );
    shared.raft.runtime_config().heartbeat(false);
    shared.raft.runtime_config().elect(false);
    shared.lease.update(|l| *l = LeaseState::default());
    let _ = shared.stepped_back.set(why);
}

async fn bind(shared: Arc<Shared>) -> Result<Held, String> {
    let address: SocketAddr = shared.config.access_point.address;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot bind {address}: {e}"))?;
    let (stop, mut stopped) = watch::channel(false);
    let router = crate::server::server_builder()
        .add_service(crate::server::license_service(shared.clone()))
        .add_service(crate::server::admin_service(shared.clone()));
    let signal = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let serving = crate::server::serve(
        router,
        listener,
        shared.tls.clone(),
        Plane::Client,
        Vec::new(),
        shared.refusals.clone(),
        signal,
    );
    let task = tokio::spawn(async move {
        if let Err(error) = serving.await {
            error!(%error, "access point server failed");
        }
    });
    Ok(Held { stop, task })
}

/// Closes the access point's listener and, in command mode, takes the address down.
async fn release(access_point: &AccessPoint, held: Option<Held>, raised_ap: &mut bool) {
    if let Some(held) = held {
        let _ = held.stop.send(true);
        let mut task = held.task;
        // Open client connections are asked to go away; do not wait on them for long.
        if tokio::time::timeout(Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
        info!(address = %access_point.address, "access point released");
    }
    if *raised_ap {
        if let Err(message) = run_command(access_point, &access_point.down).await {
            error!(%message, "access point down command failed");
        }
        *raised_ap = false;
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
