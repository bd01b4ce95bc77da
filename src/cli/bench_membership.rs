//! `raftlm bench --membership-grants N`: what a membership change costs on
//! a cluster holding N grants, measured in one run.
//!
//! 1. N sessions take one seat each and keep it (the nodes' session TTL is
//!    [`HELD_TTL_MS`], so they need no heartbeats), and the nodes snapshot
//!    every [`SNAPSHOT_EVERY`] entries keeping [`LOGS_KEPT`]; the change
//!    waits for the log to pass [`PURGED_AFTER`]: the log a new node would
//!    need is then purged, and it catches up by snapshot.
//! 2. `--sessions` workers do check-out/check-in cycles throughout; the
//!    check-outs granted are counted over [`WINDOW`] before the change,
//!    during it, and over [`WINDOW`] after it.
//! 3. The spare node starts with `--join`, and `raftlm cluster replace-node
//!    OLD NEW …` (the command administrators run, as a child process)
//!    replaces the highest-numbered follower by it. Meanwhile the membership
//!    is read every [`WATCH_EVERY`]: when the new node shows up as a
//!    learner, when it is within `raftlm cluster add-node`'s default lag of
//!    the active node's log (caught up), and when it is a voter. Should the
//!    chosen follower become the active node meanwhile (the command refuses
//!    to remove the active node), the command runs again for another
//!    follower, resuming with the learner already added.
//! 4. The new node's peer address in the membership is a counting proxy in
//!    this process: the bytes sent to it until it caught up are what the
//!    catch-up cost on the network (TLS records: the snapshot and the log
//!    after it). The proxy stays in the new node's path to the end.
//!
//! The replaced node runs until the command ends (a planned replacement:
//! the old hardware goes once its successor votes), then stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::Failure;
use crate::cli::bench_cluster::{LocalCluster, TERMINATE_WAIT};
use crate::cli::bench_figures::gather;
use crate::cli::bench_load::{LOAD_CONNECTIONS_MAX, Shared, channels, hold_grants, spawn_load};
use crate::client::{Client, ClientOptions};
use crate::tls::client::{ClientTls, ENV_CA, ENV_CERT, ENV_KEY, ENV_PLAINTEXT};

/// The nodes' session TTL in this benchmark: the held grants' sessions send
/// no heartbeats and must outlive the run.
pub const HELD_TTL_MS: u64 = 3_600_000;
/// The nodes snapshot every this many log entries in this benchmark (the
/// default, 5,000, may not be reached before the change).
pub const SNAPSHOT_EVERY: u64 = 1_000;
/// Log entries kept behind a snapshot in this benchmark.
pub const LOGS_KEPT: u64 = 100;
/// How long the check-outs are counted before and after the change.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The load's run before the first window starts.
const WARM_UP: Duration = Duration::from_secs(2);
/// How often the membership is read during the change.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How long the replacement may take, at most.
const CHANGE_LIMIT: Duration = Duration::from_secs(300);
/// Rounds of check-outs that take the grants, at most (each round makes
/// again those the last one could not).
const FILL_ROUNDS_MAX: usize = 5;
/// Runs of `replace-node` at most (see [`MembershipFigures::attempts`]).
const REPLACE_ATTEMPTS_MAX: u32 = 3;
/// How long the joining node may take to listen.
const LISTEN_WAIT: Duration = Duration::from_secs(30);
/// What a node logs when it installs a snapshot sent by the leader.
const SNAPSHOT_INSTALLED: &str = "snapshot installed";

/// The config changes of this benchmark's cluster.
pub fn tune(config: &mut crate::config::Config) {
    config.timing.session_ttl_ms = HELD_TTL_MS;
    // Every session comes from this machine's one address, and a check-out
    // whose answer was lost may have made a session all the same.
    config.limits.sessions_per_address_max = crate::license::state::SESSIONS_MAX;
    config.snapshot.logs_since_last = SNAPSHOT_EVERY;
    config.snapshot.logs_kept = LOGS_KEPT;
}

/// What the membership benchmark measured.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct MembershipFigures {
    /// Grants held by sessions of their own when the change began.
    pub(crate) grants_held: usize,
    /// How long taking them took, s.
    pub(crate) fill_s: f64,
    /// The voter replaced, and its successor.
    pub(crate) replaced: u64,
    pub(crate) successor: u64,
    /// The active node's last log index when the command started.
    pub(crate) log_index: u64,
    /// Whether the successor installed a snapshot from the leader.
    pub(crate) snapshot_installed: bool,
    /// From the successor's first sight in the membership as a learner to
    /// its log within `raftlm cluster add-node`'s default lag, ms.
    pub(crate) catch_up_ms: Option<f64>,
    /// Bytes sent to the successor's peer address until then (and from it).
    pub(crate) catch_up_bytes_to: Option<u64>,
    pub(crate) catch_up_bytes_from: Option<u64>,
    /// From the command's start to the successor a voter in the membership, ms.
    pub(crate) voter_ms: Option<f64>,
    /// The command's run, start to exit, ms (every attempt).
    pub(crate) command_ms: f64,
    /// Runs of the command: more than one when the follower chosen became
    /// the active node during the change (the command refuses to remove it).
    pub(crate) attempts: u32,
    /// Check-outs granted per second before, during and after the change.
    pub(crate) checkouts_per_s_before: f64,
    pub(crate) checkouts_per_s_during: f64,
    pub(crate) checkouts_per_s_after: f64,
    /// The whole measurement, s.
    pub(crate) seconds: f64,
    /// Refusals and RPC errors of the fill and the load, by kind.
    pub(crate) errors: std::collections::BTreeMap<String, u64>,
}

/// Counts a moment's granted check-outs: (when, how many so far).
fn mark(shared: &Shared) -> (Instant, u64) {
    (Instant::now(), shared.checkouts.load(Ordering::Relaxed))
}

/// Check-outs per second between two marks.
fn rate(from: (Instant, u64), to: (Instant, u64)) -> f64 {
    (to.1 - from.1) as f64 / to.0.duration_since(from.0).as_secs_f64().max(1e-9)
}

/// Runs the benchmark on `cluster` (its voters running, one spare node).
pub(crate) async fn measure(
    cluster: &mut LocalCluster,
    grants: usize,
    sessions: usize,
) -> Result<MembershipFigures, Failure> {
    let started = Instant::now();
    let successor = cluster.addresses.len();
    if successor <= cluster.voters {
        return Err(Failure::usage(
            "the membership benchmark needs a spare node",
        ));
    }
    let admin_tls = match &cluster.tls {
        Some(tls) => tls.administrator().map_err(Failure::usage)?,
        None => ClientTls::plaintext(),
    };
    let admin = Client::with_options(
        cluster
            .access_point
            .parse()
            .map_err(|e| Failure::usage(format!("bad access point: {e}")))?,
        ClientOptions {
            tls: admin_tls,
            ..ClientOptions::default()
        },
    );
    let target = cluster.access_point.clone();
    let connections = channels(&target, &cluster.client_tls, LOAD_CONNECTIONS_MAX).await?;

    // 1. The grants held: check-outs refused while the cluster was busy
    // (a lease that lapsed, an election) are made again by new sessions.
    let mut held = Vec::with_capacity(grants);
    let mut errors = std::collections::BTreeMap::new();
    for _ in 0..FILL_ROUNDS_MAX {
        if held.len() >= grants {
            break;
        }
        let (more, refused) = hold_grants(&connections, grants - held.len(), "held").await;
        held.extend(more);
        for (kind, n) in refused {
            *errors.entry(format!("fill: {kind}")).or_default() += n;
        }
    }
    let fill_s = started.elapsed().as_secs_f64();

    // 2. The load, and the window before.
    let shared = Arc::new(Shared::default());
    let tasks = spawn_load(&connections, sessions, &shared);
    tokio::time::sleep(WARM_UP).await;
    log_purged(&admin).await?;
    let before_start = mark(&shared);
    tokio::time::sleep(WINDOW).await;
    let before_end = mark(&shared);
    eprintln!(
        "bench: {} grants held; {:.0} check-outs/s before the change",
        held.len(),
        rate(before_start, before_end)
    );

    // 3. The replacement.
    let mut replaced = follower(&admin, cluster.voters).await?;
    let successor_id = successor as u64;
    let (client_address, peer_address) = cluster.addresses[successor - 1].clone();
    let proxy = CountingProxy::start(&peer_address).await?;
    cluster
        .processes
        .start_with_args(successor - 1, &["--join"])
        .map_err(|e| Failure::usage(format!("cannot start node {successor_id}: {e}")))?;
    listening(&client_address).await?;
    let command_start = mark(&shared);
    let mut watched = Watched::default();
    let mut attempts = 0;
    let output = loop {
        attempts += 1;
        let mut command = replace_command(
            cluster,
            replaced,
            successor_id,
            &proxy.address.to_string(),
            &client_address,
        )?;
        let child = command
            .spawn()
            .map_err(|e| Failure::usage(format!("cannot run raftlm cluster replace-node: {e}")))?;
        let output = tokio::spawn(child.wait_with_output());
        watch(
            &admin,
            successor_id,
            &proxy,
            command_start.0,
            &output,
            &mut watched,
        )
        .await;
        let output = output
            .await
            .map_err(|e| Failure::usage(format!("raftlm cluster replace-node: {e}")))?
            .map_err(|e| Failure::usage(format!("raftlm cluster replace-node: {e}")))?;
        // The command refuses to remove the active node; when leadership
        // moved to the chosen follower meanwhile, it runs again for another
        // (resuming: the learner is added already).
        let moved = String::from_utf8_lossy(&output.stderr).contains("is the active node");
        if output.status.success() || !moved || attempts >= REPLACE_ATTEMPTS_MAX {
            break output;
        }
        eprintln!("bench: node {replaced} became the active node; replacing another follower");
        replaced = follower(&admin, cluster.voters).await?;
    };
    let command_end = mark(&shared);
    if !output.status.success() {
        return Err(Failure::refused(format!(
            "raftlm cluster replace-node {replaced} {successor_id} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    eprintln!(
        "bench: node {successor_id} replaced node {replaced} in {:.0} ms",
        command_end.0.duration_since(command_start.0).as_secs_f64() * 1000.0
    );
    cluster.processes.terminate(replaced as usize - 1);
    cluster
        .processes
        .reap(replaced as usize - 1, TERMINATE_WAIT);

    // 4. The window after.
    tokio::time::sleep(WARM_UP).await;
    let after_start = mark(&shared);
    tokio::time::sleep(WINDOW).await;
    let after_end = mark(&shared);
    shared.done.store(true, Ordering::Relaxed);
    let (_, load_errors) = gather(tasks).await;
    for (kind, n) in load_errors {
        *errors.entry(format!("load: {kind}")).or_default() += n;
    }
    proxy.stop();
    Ok(MembershipFigures {
        attempts,
        grants_held: held.len(),
        fill_s,
        replaced,
        successor: successor_id,
        log_index: watched.log_index,
        snapshot_installed: cluster
            .processes
            .log(successor - 1)
            .contains(SNAPSHOT_INSTALLED),
        catch_up_ms: watched.caught_up.map(|(ms, _, _)| ms),
        catch_up_bytes_to: watched.caught_up.map(|(_, to, _)| to),
        catch_up_bytes_from: watched.caught_up.map(|(_, _, from)| from),
        voter_ms: watched.voter_ms,
        command_ms: command_end.0.duration_since(command_start.0).as_secs_f64() * 1000.0,
        checkouts_per_s_before: rate(before_start, before_end),
        checkouts_per_s_during: rate(command_start, command_end),
        checkouts_per_s_after: rate(after_start, after_end),
        seconds: started.elapsed().as_secs_f64(),
        errors,
    })
}

/// The active node's last log index beyond which its log has certainly
/// been snapshotted and purged past the start: a snapshot
/// [`SNAPSHOT_EVERY`] entries in, with time to build it.
pub const PURGED_AFTER: u64 = SNAPSHOT_EVERY * 3 / 2;
/// How long the load may take to write that far.
const PURGE_WAIT: Duration = Duration::from_secs(120);

/// Waits until the active node's log is past [`PURGED_AFTER`], so that a
/// new node must catch up by snapshot.
async fn log_purged(admin: &Client) -> Result<(), Failure> {
    let deadline = Instant::now() + PURGE_WAIT;
    loop {
        if let Ok(view) = admin.membership().await
            && view.last_log_index >= PURGED_AFTER
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::unreachable(format!(
                "the log did not reach index {PURGED_AFTER} within {PURGE_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The highest-numbered voter of `1..=voters` that is not the active node.
/// The membership names the active node without listing every grant, as a
/// status would.
async fn follower(admin: &Client, voters: usize) -> Result<u64, Failure> {
    let active = admin
        .membership()
        .await
        .map_err(|e| Failure::unreachable(format!("no membership from the access point: {e}")))?
        .node;
    Ok((1..=voters as u64)
        .rev()
        .find(|&id| id != active)
        .unwrap_or(1))
}

/// Waits until `address` accepts connections.
async fn listening(address: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + LISTEN_WAIT;
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if Instant::now() > deadline {
            return Err(Failure::unreachable(format!(
                "the new node does not listen on {address} after {LISTEN_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `raftlm cluster replace-node OLD NEW PEER CLIENT` as the cluster's
/// administrator, through the access point.
fn replace_command(
    cluster: &LocalCluster,
    old: u64,
    new: u64,
    peer_address: &str,
    client_address: &str,
) -> Result<tokio::process::Command, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::usage(format!("cannot find the raftlm binary: {e}")))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args([
            "cluster",
            "replace-node",
            &old.to_string(),
            &new.to_string(),
        ])
        .args([
            peer_address,
            client_address,
            "--server",
            &cluster.access_point,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match &cluster.tls {
        Some(tls) => {
            let (cert, key) = tls.admin();
            command
                .env(ENV_CA, tls.ca())
                .env(ENV_CERT, cert)
                .env(ENV_KEY, key)
                .env_remove(ENV_PLAINTEXT);
        }
        None => {
            command.env(ENV_PLAINTEXT, "1");
        }
    }
    Ok(command)
}

/// What [`watch`] saw.
#[derive(Debug, Default)]
struct Watched {
    log_index: u64,
    /// When the new node was first seen a member.
    learner_at: Option<Instant>,
    /// (ms from learner to caught up, bytes to it, bytes from it).
    caught_up: Option<(f64, u64, u64)>,
    voter_ms: Option<f64>,
}

/// Reads the membership every [`WATCH_EVERY`] until the command ends (or
/// [`CHANGE_LIMIT`] passes), and once more: when `id` is first a learner,
/// caught up, a voter.
async fn watch(
    admin: &Client,
    id: u64,
    proxy: &CountingProxy,
    started: Instant,
    command: &tokio::task::JoinHandle<std::io::Result<std::process::Output>>,
    watched: &mut Watched,
) {
    let lag_max = crate::cli::cluster::ADD_NODE_LAG_DEFAULT;
    loop {
        // One more read after the command ended: it may have made the
        // node a voter since the last.
        let finished = command.is_finished() || started.elapsed() > CHANGE_LIMIT;
        if let Ok(view) = admin.membership().await {
            if watched.log_index == 0 {
                watched.log_index = view.last_log_index;
            }
            if let Some(member) = view.members.iter().find(|m| m.id == id) {
                let now = Instant::now();
                let since = *watched.learner_at.get_or_insert(now);
                if watched.caught_up.is_none() && member.matched_index > 0 && member.lag <= lag_max
                {
                    watched.caught_up = Some((
                        now.duration_since(since).as_secs_f64() * 1000.0,
                        proxy.to_node.load(Ordering::Relaxed),
                        proxy.from_node.load(Ordering::Relaxed),
                    ));
                }
                if watched.voter_ms.is_none() && member.voter && !view.joint {
                    watched.voter_ms = Some(now.duration_since(started).as_secs_f64() * 1000.0);
                }
            }
        }
        if finished {
            return;
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// A TCP proxy in front of one address that counts the bytes each way.
struct CountingProxy {
    address: SocketAddr,
    /// Bytes sent to the proxied node.
    to_node: Arc<AtomicU64>,
    /// Bytes the proxied node sent back.
    from_node: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// A proxy on 127.0.0.1 forwarding to `target`.
    async fn start(target: &str) -> Result<CountingProxy, Failure> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Failure::usage(format!("cannot bind a proxy: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| Failure::usage(format!("cannot bind a proxy: {e}")))?;
        let to_node = Arc::new(AtomicU64::new(0));
        let from_node = Arc::new(AtomicU64::new(0));
        let target = target.to_string();
        let (to, from) = (to_node.clone(), from_node.clone());
        let task = tokio::spawn(async move {
            // Dropped with the accept loop: every connection ends with it.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                connections.spawn(pump(in_read, out_write, to.clone()));
                connections.spawn(pump(out_read, in_write, from.clone()));
            }
        });
        Ok(CountingProxy {
            address,
            to_node,
            from_node,
            task,
        })
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, counting the bytes, until either side ends.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        counted.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// The figures as `raftlm bench` prints them.
pub(crate) fn text(m: &MembershipFigures) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "not seen".to_string(), |v| format!("{v:.0} ms"));
    let bytes = |v: Option<u64>| {
        v.map_or_else(
            || "not seen".to_string(),
            |v| format!("{v} bytes ({:.2} MB)", v as f64 / 1e6),
        )
    };
    format!(
        "  {} grants held (taken in {:.1} s); node {} replaced node {} at log index {}\n  \
         learner catch-up: {}, {} sent to it ({} back); by snapshot: {}\n  \
         replace-node: a voter after {}, the command done in {:.0} ms ({} run{})\n  \
         check-outs/s: {:.0} before, {:.0} during the change, {:.0} after ({} s windows)\n",
        m.grants_held,
        m.fill_s,
        m.successor,
        m.replaced,
        m.log_index,
        ms(m.catch_up_ms),
        bytes(m.catch_up_bytes_to),
        bytes(m.catch_up_bytes_from),
        if m.snapshot_installed { "yes" } else { "no" },
        ms(m.voter_ms),
        m.command_ms,
        m.attempts,
        if m.attempts == 1 { "" } else { "s" },
        m.checkouts_per_s_before,
        m.checkouts_per_s_during,
        m.checkouts_per_s_after,
        WINDOW.as_secs()
    )
}
