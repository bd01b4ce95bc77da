//! One chaos run, start to end: cluster, proxies, workload, nemesis, final
//! reads, replica reads, checker, report.
//!
//! The end of a run is fixed, so every run checks the same things:
//! 1. heal every fault (links up, paused nodes continued, stopped nodes
//!    started) and wait for an active node;
//! 2. stop starting operations (heartbeats go on, so grants stay held) and
//!    read the state with a linearizable Status on the active node;
//! 3. kill -9 every node (or cut the power of every node, when power cuts
//!    are among the faults), restart them on their data, and read again:
//!    every acknowledged grant must have survived;
//! 4. drain: stop the workload (heartbeats too: every session is abandoned,
//!    nothing is checked in), wait until a node serves, then the session TTL,
//!    the activation wait (`lease_ms + lease_margin_ms`), a sweep period and
//!    [`DRAIN_SLACK`], and read again: every seat must be free (waiting again,
//!    at most [`DRAIN_ROUNDS_MAX`] times in all, only if the active node changed
//!    during the wait, as a new active node restarts every TTL);
//! 5. ask every node (`NodeInfo`) for its applied and committed index and its
//!    live state digest, until all stand at one applied index (at most
//!    [`LIVE_CONVERGE_LIMIT`]), and for its recent log ids, entry hashes and
//!    state digests ([`log_views`], asked after every power cut as well, and
//!    once already after the restart of step 3);
//! 6. stop every node gracefully, scan their logs for panics, and read each
//!    node's own store (see [`crate::replica`]);
//! 7. check the history, the node exits the harness did not cause, the
//!    panics, the live states and the replicas (see [`crate::checker`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::apps::{self, AppSpec, Apps};
use crate::checker::{self, CheckInput, InvariantResult};
use crate::cluster::{self, Cluster, ClusterSpec, READY_LIMIT, label};
use crate::history::{Event, EventType, History, OpKind};
use crate::hostile::{Hostile, HostileSpec};
use crate::lan::{self, Lan, Sampler};
use crate::nemesis::{FaultKind, Nemesis, NemesisSpec};
use crate::node_info::{log_views, node_info};
use crate::proxy::{self, Proxies};
use crate::replica;
use crate::report::{LanFindings, Report};
use crate::workload::{Churn, Workload, WorkloadSpec, grants_seen, mix};

/// What a node logs when it installs a snapshot sent by the leader
/// (`src/raft/state_machine.rs`).
pub const SNAPSHOT_INSTALLED: &str = "snapshot installed";

/// The nodes' `election_timeout_max_ms` (raftlm's default; the configs do not change it).
pub fn election_timeout_max_ms() -> u64 {
    raftlm::config::Timing::default().election_timeout_max_ms
}
/// Added to the drain's wait: a renewal in flight when the clients stopped,
/// the commit of the sweep's `Expire`, a loaded machine.
pub const DRAIN_SLACK: Duration = Duration::from_secs(2);
/// Drain reads at most, when the active node keeps changing during the wait.
pub const DRAIN_ROUNDS_MAX: u32 = 3;

/// The period of the active node's session sweep for a TTL: the server's own
/// rule, so the drain's wait follows any change to it.
pub use raftlm::server::sessions::sweep_period;

/// How long after a node serves every abandoned session has certainly been
/// expired and its seats freed: the TTL (a new active node gives every
/// session a fresh one), the activation wait, one sweep period and the slack.
pub fn drain_wait(session_ttl: Duration) -> (Duration, String) {
    let timing = raftlm::config::Timing::default();
    let lease = Duration::from_millis(timing.lease_ms);
    let margin = Duration::from_millis(timing.lease_margin_ms);
    let sweep = sweep_period(session_ttl);
    let wait = session_ttl + lease + margin + sweep + DRAIN_SLACK;
    let plan = format!(
        "{} ms: session TTL {} + lease {} + margin {} + sweep period {} + slack {}",
        wait.as_millis(),
        session_ttl.as_millis(),
        lease.as_millis(),
        margin.as_millis(),
        sweep.as_millis(),
        DRAIN_SLACK.as_millis()
    );
    (wait, plan)
}
/// The report's network-namespace line without `--netns`.
pub const NETNS_SKIPPED: &str = "not used: loopback, the access point in bind mode (raftlm-chaos --netns runs the nodes on a LAN in a box, as root)";
/// How often a `--netns` run samples who holds the access point's address.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(15);

/// The report's disk line with power cuts.
pub const POWER_DISK: &str = "each data directory on a power-cut filesystem (FUSE, in memory): a power cut drops every write not yet synced";
/// The report's disk line without.
pub const PLAIN_DISK: &str =
    "the machine's own (kill -9 loses nothing the kernel holds; no power cuts)";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Fault types, sorted; a type listed more than once is drawn that many times as often.
    pub faults: Vec<FaultKind>,
    /// Concurrent client sessions.
    pub sessions: usize,
    /// Keep the run directory here (must not exist or be empty); else a temporary one is removed.
    pub keep: Option<PathBuf>,
    /// The `raftlm` binary.
    pub binary: PathBuf,
    /// The nodes' session TTL.
    pub session_ttl_ms: u64,
    /// The nodes snapshot every this many entries.
    pub snapshot_every: u64,
    /// Features and seats licensed.
    pub features: Vec<(String, u32)>,
    /// Print progress on stderr.
    pub progress: bool,
    /// Run the hostile client next to the honest sessions (see [`crate::hostile`]).
    pub hostile: bool,
    /// Parts of raftlm broken on purpose (`--break`; `src/fault.rs`).
    pub breaks: Vec<String>,
    /// Applications on raftlm's client library (`src/apps.rs`).
    pub apps: usize,
    /// A feature and its seats in a license an administrator imports and
    /// removes during the run (`None`: no license changes).
    pub churn: Option<(String, u32)>,
    /// Run on this LAN in a box (`--netns`; the caller's threads are in its
    /// client namespace): nodes in host namespaces, the access point a real
    /// address moved between them, host links cut by the partition faults.
    pub netns: Option<Arc<Lan>>,
    /// With `netns`, play the hosts' systemd side (`false`:
    /// `--without-host-side`, expected to fail
    /// `one-host-answers-for-the-access-point`).
    pub host_side: bool,
    /// Nodes in the cluster: 3, or 5 (faults then take up to two at once;
    /// see [`crate::nemesis`]).
    pub nodes: usize,
}

/// The run's license: features and seats. With the default 32 sessions, each
/// holding at most two grants of one to three seats (a quarter of a pool at
/// most), about a third of the check-outs find the pool exhausted.
pub const FEATURES: [(&str, u32); 4] = [("cad", 48), ("sim", 32), ("viz", 52), ("fem", 14)];
/// The feature of the license an administrator imports and removes during the run.
pub const CHURN_FEATURE: (&str, u32) = ("bonus", 4);

impl RunConfig {
    /// Whether power cuts are among the faults (the data directories are then
    /// on power-cut filesystems, and the final restart is a power cut too).
    pub fn power(&self) -> bool {
        self.faults.contains(&FaultKind::Power)
    }

    /// The command line that replays this run.
    pub fn replay(&self) -> String {
        let mut faults: Vec<&str> = self.faults.iter().map(|f| f.name()).collect();
        if faults.is_empty() {
            faults.push("none");
        }
        format!(
            "raftlm-chaos --seed {} --duration {}s --faults {} --sessions {} --apps {}{}{}{}{}{}",
            self.seed,
            self.duration.as_secs(),
            faults.join(","),
            self.sessions,
            self.apps,
            if self.nodes == 3 {
                String::new()
            } else {
                format!(" --nodes {}", self.nodes)
            },
            if self.netns.is_some() { " --netns" } else { "" },
            if self.host_side {
                ""
            } else {
                " --without-host-side"
            },
            if self.hostile { " --hostile" } else { "" },
            if self.breaks.is_empty() {
                String::new()
            } else {
                format!(" --break {}", self.breaks.join(","))
            }
        )
    }
}

/// `no-overuse-without-grace`: an application without a grace period never
/// uses a grant after the cluster released it, and one with a grace period
/// never longer than the grace.
fn overuse_invariant(o: &apps::Overuse) -> InvariantResult {
    let beyond_grace = u64::from(o.with_grace_overused > 0 && o.longest_ms > o.grace_ms);
    let violations = o.without_grace_overused + beyond_grace;
    InvariantResult {
        name: "no-overuse-without-grace".into(),
        passed: violations == 0,
        checked: o.without_grace + o.with_grace,
        violations,
        examples: if violations == 0 {
            Vec::new()
        } else {
            o.examples.clone()
        },
    }
}

/// An access point unlikely to collide with another run's: `127.x.y.z:port`.
fn access_point() -> anyhow::Result<SocketAddr> {
    let port = cluster::free_port()?;
    let n = (std::process::id() as u16) ^ port;
    Ok(format!(
        "127.{}.{}.{}:{port}",
        100 + (n % 100),
        (n >> 8) % 250 + 1,
        port % 250 + 1
    )
    .parse()?)
}

fn progress(config: &RunConfig, message: &str) {
    if config.progress {
        eprintln!("raftlm-chaos: {message}");
    }
}

/// The run directory: kept, or temporary.
enum RunDir {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl RunDir {
    fn path(&self) -> PathBuf {
        match self {
            RunDir::Kept(p) => p.clone(),
            RunDir::Temporary(t) => t.path().to_path_buf(),
        }
    }
}

/// Runs the whole thing and returns the report.
pub async fn run(config: &RunConfig) -> anyhow::Result<Report> {
    let started = Instant::now();
    anyhow::ensure!(
        config.binary.is_file(),
        "the raftlm binary {} does not exist; build it (cargo build -p raftlm) or pass --binary",
        config.binary.display()
    );
    anyhow::ensure!(config.sessions > 0, "--sessions must be at least 1");
    let n = config.nodes;
    anyhow::ensure!(n == 3 || n == 5, "--nodes must be 3 or 5, not {n}");
    anyhow::ensure!(
        n == 3 || config.netns.is_none(),
        "--netns builds three node hosts: run five nodes on loopback"
    );
    let run_dir = match &config.keep {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                anyhow::bail!(
                    "{} is not empty: give --keep a new or empty directory",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)?;
            RunDir::Kept(std::fs::canonicalize(dir)?)
        }
        None => RunDir::Temporary(
            tempfile::Builder::new()
                .prefix("raftlm-chaos-")
                .tempdir()
                .context("cannot create a temporary directory")?,
        ),
    };
    let dir = run_dir.path();

    let (real, real_peer, proxy_address, access_point) = match &config.netns {
        // Every node on its own host's address, the access point on the LAN,
        // the proxies on the client host (nodes reach them over the LAN).
        Some(_) => {
            let on = |id: usize, port: u16| -> anyhow::Result<SocketAddr> {
                Ok(format!("{}:{port}", lan::host_ip(id)).parse()?)
            };
            (
                (1..=n)
                    .map(|id| on(id, lan::PORT))
                    .collect::<anyhow::Result<Vec<_>>>()?,
                (1..=n)
                    .map(|id| on(id, lan::PEER_PORT))
                    .collect::<anyhow::Result<Vec<_>>>()?,
                lan::CLIENT_IP.parse()?,
                format!("{}:{}", lan::VIP, lan::PORT).parse()?,
            )
        }
        None => {
            let mut addresses: Vec<SocketAddr> = Vec::new();
            while addresses.len() < 2 * n {
                let address = SocketAddr::from(([127, 0, 0, 1], cluster::free_port()?));
                if !addresses.contains(&address) {
                    addresses.push(address);
                }
            }
            let real_peer = addresses.split_off(n);
            (addresses, real_peer, proxy::LOOPBACK, access_point()?)
        }
    };
    // The proxies sit on the peer plane: they cut and delay Raft traffic.
    let proxies = Proxies::start(proxy_address, &real_peer).await?;
    let peers: Vec<Vec<SocketAddr>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| proxies.address(i, j).unwrap_or(real_peer[j]))
                .collect()
        })
        .collect();
    let clock = config
        .faults
        .contains(&FaultKind::Clock)
        .then(|| ClockPlan::new(raftlm::clock::real_wall_ms() as i64, config.duration));
    let mut cluster = Cluster::prepare(ClusterSpec {
        dir: dir.clone(),
        binary: config.binary.clone(),
        real: real.clone(),
        real_peer,
        peers,
        access_point,
        features: config.features.clone(),
        session_ttl_ms: config.session_ttl_ms,
        snapshot_every: config.snapshot_every,
        power: config.power(),
        dated: clock.as_ref().map_or_else(Vec::new, ClockPlan::dated),
        clock_base_ms: clock.as_ref().map(|c| c.base_ms),
        breaks: config.breaks.join(","),
        churn: config.churn.clone(),
        netns: config.netns.clone(),
        host_side: config.host_side,
    })?;
    progress(
        config,
        &format!(
            "seed {}; run directory {}; nodes {:?}; access point {access_point}",
            config.seed,
            dir.display(),
            real
        ),
    );
    for i in 0..n {
        cluster.start(i)?;
    }
    if cluster.wait_ready(READY_LIMIT).await.is_none() {
        anyhow::bail!(
            "the cluster did not serve its license within {READY_LIMIT:?}\n{}",
            cluster.log_tails(30)
        );
    }
    if let Some(clock) = &clock {
        clock.check_binary(&cluster).await?;
    }
    // Who holds the access point's address, through every fault to the end.
    let sampler = config
        .netns
        .as_ref()
        .map(|lan| Sampler::start(lan.clone(), SAMPLE_PERIOD));
    progress(
        config,
        "cluster ready; starting the workload and the nemesis",
    );

    let history = Arc::new(History::create(&dir.join("history.jsonl"))?);
    let history_start_ms = raftlm::clock::real_wall_ms() as i64;
    let mut features = config.features.clone();
    features.extend(
        cluster
            .spec
            .dated
            .iter()
            .map(|(f, n, _, _)| (f.clone(), *n)),
    );
    features.extend(config.churn.clone());
    let churn = match (&config.churn, &cluster.churn_license) {
        (Some((feature, _)), Some(text)) => Some(Churn {
            name: cluster::CHURN_LICENSE.into(),
            feature: feature.clone(),
            text: text.clone(),
            tls: cluster.admin_tls.clone(),
        }),
        _ => None,
    };
    let op_deadline = Duration::from_secs(15);
    let workload = Workload::start(
        WorkloadSpec {
            sessions: config.sessions,
            features: features.clone(),
            access_point: access_point.to_string(),
            nodes: real.iter().map(SocketAddr::to_string).collect(),
            seed: mix(config.seed, 1_000_001),
            renew_every: Duration::from_millis(1000),
            attempt_timeout: Duration::from_millis(1000),
            op_deadline,
            abandon_chance: 0.004,
            short_deadline_chance: 0.1,
            read_every: Duration::from_millis(500),
            renew_probe_chance: 0.25,
            tls: cluster.client_tls.clone(),
            session_ttl: Duration::from_millis(config.session_ttl_ms),
            expired_after: drain_wait(Duration::from_millis(config.session_ttl_ms)).0,
            bad_count_chance: 0.03,
            double_checkin_chance: 0.1,
            slow_heartbeat_chance: 0.125,
            churn,
        },
        history.clone(),
    );
    let hostile = config.hostile.then(|| {
        let mut targets = vec![access_point.to_string()];
        targets.extend(real.iter().map(SocketAddr::to_string));
        // A certificate of the cluster's CA that is not an administrator's.
        let (cert, key) = cluster.tls.node(1);
        let stranger_tls = raftlm::tls::client::ClientTls::from_files(
            Some(&cluster.tls.ca()),
            Some(&cert),
            Some(&key),
        )
        .map_err(|e| anyhow::anyhow!("cannot read node 1's certificate: {e}"))?;
        anyhow::Ok(Hostile::start(
            HostileSpec {
                targets,
                peer_targets: cluster.spec.real_peer.clone(),
                tls: cluster.client_tls.clone(),
                stranger_tls,
                admin_tls: cluster.admin_tls.clone(),
                seed: mix(config.seed, 3_000_017),
                features: features.iter().map(|(f, _)| f.clone()).collect(),
                steady_feature: config.features.first().map(|(f, _)| f.clone()),
                idle_held_max: raftlm::tls::acceptor::HANDSHAKE_TIMEOUT
                    + crate::nemesis::longest_pause(
                        config.session_ttl_ms,
                        election_timeout_max_ms(),
                    )
                    + crate::hostile::IDLE_HELD_SLACK,
            },
            workload.phase(),
        ))
    });
    let hostile = hostile.transpose()?;
    let apps = Apps::start(
        AppSpec {
            apps: config.apps,
            access_point,
            features: config.features.clone(),
            vendor: cluster::VENDOR.into(),
            seed: mix(config.seed, 6_000_011),
            session_ttl: Duration::from_millis(config.session_ttl_ms),
            grace: Duration::from_millis(config.session_ttl_ms * 2),
            cut_every: Duration::from_secs(12),
            tls: cluster.client_tls.clone(),
        },
        history.clone(),
        workload.phase(),
    )
    .await?;
    let mut nemesis = Nemesis::new(NemesisSpec {
        faults: config.faults.clone(),
        seed: mix(config.seed, 2_000_003),
        election_timeout_max_ms: election_timeout_max_ms(),
        session_ttl_ms: config.session_ttl_ms,
        lease_wait_ms: {
            let timing = raftlm::config::Timing::default();
            timing.lease_ms + timing.lease_margin_ms
        },
    });
    nemesis
        .run(
            &mut cluster,
            &proxies,
            &history,
            Instant::now() + config.duration,
        )
        .await?;

    // 1. Heal.
    progress(config, "healing every fault");
    proxies.heal();
    if let Some(lan) = &config.netns {
        for id in 1..=n {
            if !lan.link_up(id) {
                lan.link(id, true);
            }
        }
    }
    for i in 0..n {
        if cluster.paused(i) {
            cluster.resume(i);
        }
        if !cluster.running(i) {
            cluster.start(i)?;
        }
    }
    let mut recovery = InvariantResult {
        name: "cluster-recovers-after-heal".into(),
        passed: true,
        checked: 0,
        violations: 0,
        examples: Vec::new(),
    };
    let mut recovered = |cluster: &Cluster, ok: bool, when: &str| {
        recovery.checked += 1;
        if !ok {
            recovery.passed = false;
            recovery.violations += 1;
            recovery.examples.push(format!(
                "no node served within {READY_LIMIT:?} {when}\n{}",
                cluster.log_tails(20)
            ));
        }
    };
    let ready = cluster.wait_ready(READY_LIMIT).await.is_some();
    recovered(&cluster, ready, "after the faults were healed");

    // 2. Hold and read.
    workload.hold(op_deadline + Duration::from_secs(2)).await;
    apps.idle(apps::CALL_LIMIT).await;
    let hostile = match hostile {
        Some(hostile) => Some(hostile.finish().await),
        None => None,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    progress(config, "reading the state after healing");
    read_state(&mut cluster, &history, OpKind::Read, "after heal").await;

    // 3. Kill all (a power cut of all, when power cuts are enabled), restart, read again.
    progress(
        config,
        if config.power() {
            "power cut of every node and restart; reading again"
        } else {
            "kill -9 of every node and restart; reading again"
        },
    );
    // Recorded for the reader of the history, but not as a fault "start": no
    // check-out follows it, so it has no unavailability to measure.
    let mut event = Event::new("nemesis", EventType::Info, OpKind::Nemesis, 0);
    let mut final_watch = None;
    let every: Vec<usize> = (0..n).collect();
    if config.power() {
        final_watch = Some(crate::tail::TailWatch::before(&mut cluster, &every).await);
        let losses = cluster.power_cut(&every)?;
        let lost: u64 = losses.iter().map(|l| l.bytes).sum();
        event.fault = Some(FaultKind::Power.name().into());
        event.detail = Some(format!(
            "final: power cut of every node ({} KiB of unsynced writes dropped), all restarted at once (end of run)",
            lost / 1024
        ));
    } else {
        for &i in &every {
            cluster.kill(i);
        }
        event.fault = Some(FaultKind::KillAll.name().into());
        event.detail =
            Some("final: kill -9 of every node, all restarted at once (end of run)".into());
    }
    history.record(event);
    for &i in &every {
        cluster.start(i)?;
    }
    if let Some(watch) = final_watch {
        let tails = watch.after(&cluster).await;
        nemesis.count_power_cut(n, n, "final power cut", &tails);
    }
    let ready = cluster.wait_ready(READY_LIMIT).await.is_some();
    recovered(&cluster, ready, "after the final kill-all and restart");
    let mut logs = nemesis.take_log_views();
    logs.extend(log_views(&cluster, "final restart: serving again").await);
    read_state(
        &mut cluster,
        &history,
        OpKind::Read,
        "after kill-all and restart",
    )
    .await;

    // 4. Drain: the clients stop, and once every session could have expired
    // no seat may be in use.
    workload.stop().await;
    apps.stop().await;
    drain(&mut cluster, &history, config).await;

    // 5. Each node's live state, while the nodes still run.
    let live = live_states(&cluster).await;
    progress(
        config,
        &format!(
            "live states: {}",
            live.iter()
                .map(|v| match &v.error {
                    Some(error) => format!("node {}: {error}", v.node),
                    None => format!(
                        "node {} applied {} committed {} digest {}",
                        v.node,
                        v.applied_index,
                        v.committed_index,
                        &v.digest[..v.digest.len().min(16)]
                    ),
                })
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );

    logs.extend(log_views(&cluster, "end, before the nodes stop").await);

    // 6. Stop everything and read each store.
    cluster.terminate_all().await;
    let lan_findings = sampler.map(|sampler| {
        let (watchdog_kills, stop_posts) = cluster.host_counts().unwrap_or_default();
        LanFindings::new(
            &sampler.finish(),
            raftlm::config::Timing::default().lease_ms,
            watchdog_kills,
            stop_posts,
            nemesis.link_cuts(),
        )
    });
    let replicas_read_us = history.now_us();
    history.flush();
    // Exits the harness did not cause, and panics in the nodes' logs.
    let exits: Vec<checker::NodeExit> = cluster
        .exits()
        .iter()
        .map(|e| checker::NodeExit {
            node: e.node + 1,
            noticed_us: history.us_at(e.noticed),
            last_running_us: e.last_running.map(|t| history.us_at(t)),
            what: e.what.clone(),
        })
        .collect();
    let mut log_panics = Vec::new();
    let mut snapshot_installs = Vec::new();
    for i in 0..cluster.len() {
        let path = cluster.log_file(i);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                snapshot_installs.push(text.matches(SNAPSHOT_INSTALLED).count() as u64);
                log_panics.extend(checker::panics_in_log(i + 1, &text));
            }
            Err(error) => {
                snapshot_installs.push(0);
                log_panics.push(checker::LogLine {
                    node: i + 1,
                    line: 0,
                    text: format!("cannot read {}: {error}", path.display()),
                });
            }
        }
    }
    let dirs: Vec<PathBuf> = (0..n).map(|i| cluster.data_dir(i)).collect();
    progress(config, "reading every node's own store");
    let (replicas, stored_logs) = tokio::task::spawn_blocking(move || replica::read(&dirs))
        .await
        .context("the replica reader panicked")?;
    logs.extend(stored_logs);
    let log_views_line = checker::log_views_line(&logs);

    // 7. Check.
    let events = history.events();
    let licensed: BTreeMap<String, u32> = features.iter().cloned().collect();
    let mut verdict = checker::check(
        &events,
        &CheckInput {
            licensed: licensed.clone(),
            session_ttl_us: config.session_ttl_ms * 1000,
            replicas: replicas.clone(),
            live,
            logs,
            replicas_read_us,
            expiries: clock
                .as_ref()
                .map_or_else(BTreeMap::new, |c| c.expiries(history_start_ms)),
            expiry_tolerance_us: (cluster::CLOCK_SKEW_MAX_MS + 1000) * 1000,
            node_starts: cluster.starts(),
            exits,
            logs_scanned: cluster.len() as u64,
            log_panics,
            expect_drain: true,
            churned: config.churn.iter().map(|(f, _)| f.clone()).collect(),
            expire_within_us: (sweep_period(Duration::from_millis(config.session_ttl_ms))
                + DRAIN_SLACK)
                .as_micros() as u64,
        },
    );
    verdict.invariants.push(recovery);
    let overuse = apps::overuse(&events);
    verdict.invariants.push(overuse_invariant(&overuse));
    if let Some(stats) = &hostile {
        verdict.invariants.push(stats.invariant());
    }
    if let Some(findings) = &lan_findings {
        verdict.invariants.push(findings.invariant());
    }
    let report = Report {
        seed: config.seed,
        nodes: n,
        replay: config.replay(),
        duration_s: config.duration.as_secs_f64(),
        elapsed_s: started.elapsed().as_secs_f64(),
        sessions: config.sessions,
        faults_enabled: {
            let mut names: Vec<String> =
                config.faults.iter().map(|f| f.name().to_string()).collect();
            names.dedup();
            names
        },
        disk: if config.power() {
            POWER_DISK.into()
        } else {
            PLAIN_DISK.into()
        },
        licensed,
        binary: config.binary.display().to_string(),
        run_dir: config.keep.as_ref().map(|_| dir.display().to_string()),
        events: events.len(),
        operations: BTreeMap::new(),
        faults: BTreeMap::new(),
        faults_total: 0,
        two_node_faults: 0,
        invariants: Vec::new(),
        unavailability: BTreeMap::new(),
        grants: 0,
        denied_in_use: 0,
        peak_seats: BTreeMap::new(),
        replicas: Vec::new(),
        drain: None,
        network_namespaces: lan_findings
            .as_ref()
            .map_or_else(|| NETNS_SKIPPED.into(), LanFindings::line),
        log_views: log_views_line,
        power_cuts: if config.power() {
            nemesis.power_cuts().line()
        } else {
            String::new()
        },
        lan: lan_findings,
        violations: 0,
        passed: false,
        hostile,
        apps: config.apps,
        overuse: (config.apps > 0).then_some(overuse),
        snapshot_installs,
        checkouts_answered: 0,
        sessions_run: 0,
        live_sessions_expired: 0,
        app_sessions_expired: 0,
    }
    .with_verdict(&verdict, &replicas);
    if let Some(keep) = &config.keep {
        let path = keep.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    drop(cluster);
    drop(run_dir);
    Ok(report)
}

const DAY_MS: i64 = 86_400_000;

/// Time in runs with the clock fault. Every node's clock runs `base_ms`
/// ahead of the real one, chosen so that the run's true time (real +
/// `base_ms`) crosses a UTC midnight 40 % into the fault phase: the feature
/// `ending` is licensed through the day before that midnight, so it expires
/// during the run, and `dated` stays valid for 60 more days.
struct ClockPlan {
    base_ms: i64,
    /// The midnight (true time, ms since the epoch) `ending` ends at.
    midnight_ms: i64,
}

impl ClockPlan {
    /// Start-up before the fault phase, roughly.
    const STARTUP_MS: i64 = 5_000;

    fn new(now_ms: i64, duration: Duration) -> ClockPlan {
        let cross_at = now_ms + Self::STARTUP_MS + duration.as_millis() as i64 * 2 / 5;
        // The first midnight at least two minutes after then, so the base is positive.
        let midnight_ms = (cross_at + 120_000).div_euclid(DAY_MS) * DAY_MS + DAY_MS;
        ClockPlan {
            base_ms: midnight_ms - cross_at,
            midnight_ms,
        }
    }

    /// The dated features: name, seats, last day, `ISSUED` date. Both are
    /// issued on the day after `ending`'s last day: "tomorrow" when the run
    /// starts (a vendor east of UTC), which a cluster accepts but must not
    /// take as its time — if it did, `ending` would expire at once, before
    /// the true midnight, and `expiry-judged-on-true-time` would fail.
    fn dated(
        &self,
    ) -> Vec<(
        String,
        u32,
        raftlm::license::feature::Date,
        raftlm::license::feature::Date,
    )> {
        use raftlm::license::feature::Date;
        let day = |ms: i64| Date::from_unix_ms(ms.max(0) as u64);
        let issued = day(self.midnight_ms);
        vec![
            ("ending".into(), 3, day(self.midnight_ms - 1), issued),
            (
                "dated".into(),
                3,
                day(self.midnight_ms + 60 * DAY_MS),
                issued,
            ),
        ]
    }

    /// When each dated feature ends, in harness µs of a history started at
    /// real time `history_start_ms`.
    fn expiries(&self, history_start_ms: i64) -> BTreeMap<String, i64> {
        let harness_us = |true_ms: i64| (true_ms - self.base_ms - history_start_ms) * 1000;
        [
            ("ending".to_string(), harness_us(self.midnight_ms)),
            (
                "dated".to_string(),
                harness_us(self.midnight_ms + 61 * DAY_MS),
            ),
        ]
        .into()
    }

    /// Refuses to run the clock fault against a binary without the
    /// fault-injection feature: its clocks would not move, and the dated
    /// licenses would not mean what the checker assumes.
    async fn check_binary(&self, cluster: &Cluster) -> anyhow::Result<()> {
        let address = cluster.spec.real[0].to_string();
        let channel = cluster
            .client_tls
            .endpoint(&address, Duration::from_secs(2))
            .map_err(|e| anyhow::anyhow!(e))?
            .timeout(Duration::from_secs(2))
            .connect()
            .await?;
        let info = raftlm::proto::v1::license_client::LicenseClient::new(channel)
            .node_info(raftlm::proto::v1::NodeInfoRequest::default())
            .await?
            .into_inner();
        let shift = info.now_ms as i64 - raftlm::clock::real_wall_ms() as i64;
        anyhow::ensure!(
            (shift - self.base_ms).abs() < 10_000,
            "the clock fault needs a raftlm built with the feature fault-injection (cargo build -p raftlm --features fault-injection): node 1's clock is {shift} ms from the real one, expected {} ms",
            self.base_ms
        );
        Ok(())
    }
}

/// How long the nodes are given to reach one applied index after the drain.
pub const LIVE_CONVERGE_LIMIT: Duration = Duration::from_secs(10);

/// Asks every node (on its own address) for its applied and committed
/// indices and its live state digest, until all answer with the same
/// applied index or [`LIVE_CONVERGE_LIMIT`] passes; returns the last answers.
/// The workload has stopped, so only sweeps could still write.
async fn live_states(cluster: &Cluster) -> Vec<checker::LiveView> {
    let deadline = Instant::now() + LIVE_CONVERGE_LIMIT;
    loop {
        let mut views = Vec::new();
        for i in 0..cluster.len() {
            let address = cluster.spec.real[i].to_string();
            let mut view = checker::LiveView {
                node: i + 1,
                ..checker::LiveView::default()
            };
            match node_info(cluster, &address).await {
                Ok(info) => {
                    view.applied_index = info.applied_index;
                    view.committed_index = info.committed_index;
                    view.digest = info.state_digest;
                }
                Err(error) => view.error = Some(format!("NodeInfo at {address}: {error}")),
            }
            views.push(view);
        }
        let all = views.iter().all(|v| v.error.is_none());
        let one_index = views
            .windows(2)
            .all(|w| w[0].applied_index == w[1].applied_index);
        if (all && one_index) || Instant::now() >= deadline {
            return views;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The drain (step 4 of the run's end): see the module docs.
async fn drain(cluster: &mut Cluster, history: &History, config: &RunConfig) {
    let (wait, plan) = drain_wait(Duration::from_millis(config.session_ttl_ms));
    progress(
        config,
        &format!("drain: clients stopped; waiting {plan} after a node serves"),
    );
    let ready = cluster.wait_ready(READY_LIMIT).await;
    let mut event = Event::new("harness", EventType::Info, OpKind::Drain, 0);
    event.detail = Some(match &ready {
        Some((i, reply)) => format!(
            "start: clients stopped (sessions abandoned, nothing checked in); {} serves (term {}, {} activations); waiting {plan}",
            label(*i),
            reply.term,
            reply.activations
        ),
        None => format!(
            "start: clients stopped; no node served within {READY_LIMIT:?}; waiting {plan} anyway"
        ),
    });
    history.record(event);
    let mut activations = ready.map(|(_, reply)| reply.activations);
    for round in 1..=DRAIN_ROUNDS_MAX {
        tokio::time::sleep(wait).await;
        let Some(reply) = read_state(cluster, history, OpKind::Drain, "drain").await else {
            return;
        };
        if reply.grants.is_empty() || activations == Some(reply.activations) {
            return;
        }
        if round < DRAIN_ROUNDS_MAX {
            let mut event = Event::new("harness", EventType::Info, OpKind::Drain, 0);
            event.detail = Some(format!(
                "again: the active node changed during the wait ({:?} → {} activations) and restarted every TTL; waiting {plan} more",
                activations, reply.activations
            ));
            history.record(event);
            progress(config, "drain: a failover during the wait; waiting again");
        }
        activations = Some(reply.activations);
    }
}

/// A linearizable Status read on the active node, recorded as a `kind`
/// operation (a `read`, or the `drain` read) with every grant and the seats
/// in use per feature; retried for up to [`READY_LIMIT`]. Returns the reply.
async fn read_state(
    cluster: &mut Cluster,
    history: &History,
    kind: OpKind,
    when: &str,
) -> Option<raftlm::proto::v1::StatusReply> {
    let id = history.next_id();
    let deadline = Instant::now() + READY_LIMIT;
    let mut attempt = 0u32;
    loop {
        for i in 0..cluster.len() {
            attempt += 1;
            let mut invoke = Event::new("harness", EventType::Invoke, kind, id);
            invoke.attempt = Some(attempt);
            invoke.node = Some(label(i));
            invoke.detail = Some(format!("state read {when}"));
            history.record(invoke);
            let address = cluster.spec.real[i].to_string();
            let reply =
                cluster::status(&address, &cluster.client_tls, Duration::from_secs(2)).await;
            let mut done = Event::new("harness", EventType::Unknown, kind, id);
            done.attempt = Some(attempt);
            done.node = Some(label(i));
            let Some(reply) = reply else {
                done.detail = Some("no answer (not active or not reachable)".into());
                history.record(done);
                continue;
            };
            done.kind = EventType::Ok;
            done.term = Some(reply.term);
            done.index = Some(reply.applied_index);
            done.grants = Some(grants_seen(&reply));
            let mut in_use: BTreeMap<String, u32> = BTreeMap::new();
            for feature in &reply.features {
                *in_use.entry(feature.feature.clone()).or_default() += feature.in_use;
            }
            done.in_use = Some(in_use);
            done.serving_for_ms = Some(reply.serving_for_ms);
            done.detail = Some(format!(
                "applied index {}, {} activations",
                reply.applied_index, reply.activations
            ));
            history.record(done);
            return Some(reply);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
