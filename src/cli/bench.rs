//! `raftlm bench`: load generator, idle-session cost and failover timer.
//!
//! By default it starts its own cluster of three (or, with `--nodes 5`,
//! five) real `raftlm server` processes on loopback (real disk, default
//! config, a generated license; see `bench_cluster.rs`) and drives it
//! through the access point; `--server S` targets a running cluster instead. Figures are printed as text, or as one JSON object with
//! `--json`; a progress line goes to stderr every second.
//!
//! - load (`--sessions N --duration D`): N concurrent sessions do
//!   check-out/check-in cycles; every acknowledged RPC is one committed
//!   license operation. Reports operations per second, latency percentiles,
//!   errors by kind, and the nodes' CPU time and peak RSS.
//! - idle (`--idle-sessions N`): N sessions hold a grant each and heartbeat
//!   at the default interval; reports the active node's CPU use and RSS per
//!   held grant.
//! - failover (`--failover K`): kills the active node K times while clients
//!   work, restarting it each time; reports the time from the kill to the
//!   first successful check-out through the access point.
//! - membership (`--membership-grants N`): with N grants held, replaces a
//!   follower by a new node under load (see `bench_membership.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::Failure;
use crate::cli::bench_cluster::{
    LocalCluster, READY_WAIT, STOP_WAIT, TERMINATE_WAIT, free_port, free_ports,
};
use crate::cli::bench_figures::{Latency, gather, latency};
use crate::cli::bench_load::{
    LOAD_CONNECTIONS_MAX, Shared, channel, channels, hold_grants, spawn_load,
};
use crate::local::wait::wait_licensed;
use crate::proto::v1 as pb;
use crate::proto::v1::license_client::LicenseClient;
use crate::tls::client::ClientTls;

/// Arguments of `raftlm bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Target a running cluster (access point or node list) instead of starting one.
    #[arg(long)]
    pub server: Option<String>,
    /// Concurrent sessions doing check-out/check-in cycles.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// How long the load runs (e.g. 30s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Instead of load: this many sessions holding a grant each and heartbeating.
    #[arg(long)]
    pub idle_sessions: Option<usize>,
    /// Instead of load: kill the active node this many times and time each failover.
    #[arg(long)]
    pub failover: Option<usize>,
    /// With --failover: stop the active node with SIGTERM (a planned handover)
    /// instead of kill -9.
    #[arg(long, requires = "failover")]
    pub planned: bool,
    /// Instead of load: build and install a snapshot of a state holding this many grants
    /// (in this process, on a real sled store in a temporary directory).
    #[arg(long)]
    pub snapshot_grants: Option<usize>,
    /// Start the cluster with one command per log entry (to measure what batching gives).
    #[arg(long)]
    pub no_batching: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Keep the started cluster's files here (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Start the cluster without TLS (to measure what TLS costs).
    #[arg(long)]
    pub plaintext: bool,
    /// Run the measurement twice, with TLS on and then off, on two fresh clusters.
    #[arg(long, conflicts_with_all = ["plaintext", "server"])]
    pub compare_tls: bool,
    /// After the load, run the same load against a three-member etcd cluster
    /// started here (one durable put per operation), and print both.
    #[arg(long, conflicts_with_all = ["server", "compare_tls", "failover", "idle_sessions", "snapshot_grants"])]
    pub compare_etcd: bool,
    /// Instead of load: this many throw-away sessions from one address, each
    /// with one denied check-out, and a new session's check-out latency from
    /// another address (127.0.0.2) before and after.
    #[arg(long, conflicts_with_all = ["failover", "idle_sessions", "snapshot_grants", "compare_tls", "compare_etcd"])]
    pub flood: Option<usize>,
    /// The etcd binary for --compare-etcd (default: `etcd` on PATH).
    #[arg(long, requires = "compare_etcd")]
    pub etcd: Option<PathBuf>,
    /// Voters of the cluster bench starts: 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes, conflicts_with = "server")]
    pub nodes: usize,
    /// Instead of load: hold this many grants, then replace a follower by a
    /// new node (`raftlm cluster replace-node`) while --sessions sessions
    /// work; times the learner's catch-up (by snapshot), counts the bytes
    /// sent to it, times the whole replacement and compares the check-outs
    /// per second before, during and after it.
    #[arg(long, conflicts_with_all = ["server", "failover", "idle_sessions", "snapshot_grants", "flood", "compare_tls", "compare_etcd"])]
    pub membership_grants: Option<usize>,
}

/// `--nodes`: a cluster of three or five voters.
fn parse_nodes(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ (3 | 5)) => Ok(n),
        _ => Err(format!("{text:?}: a cluster bench starts has 3 or 5 nodes")),
    }
}

use crate::text::parse_duration;

/// CPU time and peak RSS of one node process.
#[derive(Debug, Default, Serialize, Clone)]
struct NodeUsage {
    node: usize,
    cpu_s: f64,
    peak_rss_mib: f64,
    rss_mib: f64,
}

fn node_usage(node: usize, pid: u32) -> Option<NodeUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some(NodeUsage {
        node,
        cpu_s: ticks as f64 / hz,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        rss_mib: kib("VmRSS:") / 1024.0,
    })
}

fn usages(cluster: Option<&LocalCluster>) -> Vec<NodeUsage> {
    let Some(cluster) = cluster else {
        return Vec::new();
    };
    (1..=cluster.processes.len())
        .filter_map(|id| node_usage(id, cluster.pid(id)?))
        .collect()
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    if args.sessions == 0 {
        return Err(Failure::usage("--sessions must be at least 1"));
    }
    if args.failover.is_some() && args.server.is_some() {
        return Err(Failure::usage(
            "--failover kills nodes, so it needs the cluster bench starts itself; drop --server",
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    if let Some(grants) = args.snapshot_grants {
        let report = runtime.block_on(snapshot(grants))?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        } else {
            print_text(&report);
        }
        return Ok(());
    }
    runtime.block_on(bench(args))
}

/// Builds a state with `grants` grants through the real state-machine store,
/// then times building its snapshot and installing it on a second store.
async fn snapshot(grants: usize) -> Result<Report, Failure> {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use crate::license::state::{Batch, Command as StateCommand, RequestId, SessionId};
    use crate::license::{Expiry, FeatureLine, LineKind};

    let fail = |e: &dyn std::fmt::Display| Failure::usage(format!("snapshot benchmark: {e}"));
    let temp = TempDir::new()?;
    let (_, mut source) = crate::raft::store::open(&temp.0.join("source")).map_err(|e| fail(&e))?;
    let key = crate::license::signature::VendorSigningKey::generate(Some("acme"));
    let mut line = FeatureLine {
        kind: LineKind::Feature,
        feature: "bench".into(),
        vendor: "acme".into(),
        version: "1.0".into(),
        expiry: Expiry::Permanent,
        seats: u32::try_from(grants).unwrap_or(u32::MAX).max(1),
        attributes: Vec::new(),
        cluster_id: None,
        host_ids: Vec::new(),
        signature: String::new(),
        line: 3,
    };
    crate::license::signature::sign_held(&key, "LICSRV", &mut line);
    let now_ms = 1_795_000_000_000;
    let entry = |index: u64, commands: Vec<StateCommand>| crate::raft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch { now_ms, commands }),
    };
    let mut entries = vec![entry(
        1,
        vec![
            StateCommand::Activate {
                term: crate::license::state::Term(1),
                node: crate::license::state::NodeId(1),
                cluster_name: "LICSRV".into(),
                cluster_id: None,
                lease_ms: 250,
                wait_ms: 350,
            },
            StateCommand::TrustKey {
                vendor: Some("acme".into()),
                key: key.public_key().to_bytes(),
                author: "bench".into(),
            },
            StateCommand::ImportLicense {
                name: "bench.lic".into(),
                lines: vec![line],
                author: "bench".into(),
            },
        ],
    )];
    let per_entry = 1000;
    for (i, chunk) in (0..grants)
        .collect::<Vec<_>>()
        .chunks(per_entry)
        .enumerate()
    {
        let commands = chunk
            .iter()
            .map(|n| StateCommand::Checkout {
                vendor: "acme".into(),
                version: String::new(),
                request: RequestId {
                    session: SessionId(*n as u128 + 1),
                    seq: 1,
                },
                feature: "bench".into(),
                count: 1,
                user: format!("user{n}"),
                host: format!("host{}", n % 500),
            })
            .collect();
        entries.push(entry(i as u64 + 2, commands));
    }
    for chunk in entries.chunks(64) {
        source.apply(chunk.to_vec()).await.map_err(|e| fail(&e))?;
    }
    let held = source.read(|s| s.grants().len());
    let started = Instant::now();
    let built = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(|e| fail(&e))?;
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    let bytes = built.snapshot.get_ref().len();
    let (_, mut target) = crate::raft::store::open(&temp.0.join("target")).map_err(|e| fail(&e))?;
    let started = Instant::now();
    target
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .map_err(|e| fail(&e))?;
    let install_ms = started.elapsed().as_secs_f64() * 1000.0;
    if target.read(|s| s.grants().len()) != held {
        return Err(fail(
            &"the installed snapshot holds a different number of grants",
        ));
    }
    let backup = backup_figures(&source, &temp.0.join("restored")).await?;
    Ok(Report {
        mode: "snapshot".into(),
        sessions: held,
        batching: true,
        snapshot_bytes: Some(bytes),
        snapshot_build_ms: Some(build_ms),
        snapshot_install_ms: Some(install_ms),
        backup: Some(backup),
        ..Default::default()
    })
}

/// What `raftlm backup` and `raftlm restore` cost for the state of `source`:
/// the file's size, taking it (copy, digest, encode: what the active node
/// does), checking it (what `--verify` and `restore` do) and restoring it
/// into the empty directory `into`.
async fn backup_figures(
    source: &crate::raft::state_machine::StateMachineStore,
    into: &std::path::Path,
) -> Result<BackupFigures, Failure> {
    use crate::raft::backup::{self, Backup};
    let fail = |e: &dyn std::fmt::Display| Failure::usage(format!("backup benchmark: {e}"));
    let started = Instant::now();
    let (applied, membership, state) = source.copy_applied();
    let last_applied = applied.ok_or_else(|| fail(&"nothing applied"))?;
    let bytes = backup::encode(&Backup {
        cluster_name: "LICSRV".into(),
        raftlm_version: env!("CARGO_PKG_VERSION").into(),
        node: 1,
        created_ms: crate::clock::wall_ms(),
        term: last_applied.leader_id.term,
        last_applied,
        membership,
        state_digest: state.digest().map_err(|e| fail(&e))?,
        state,
    })
    .map_err(|e| fail(&e))?;
    let take_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let read = backup::decode(&bytes).map_err(|e| fail(&e))?;
    backup::verify(&read).map_err(|e| fail(&e))?;
    let verify_ms = started.elapsed().as_secs_f64() * 1000.0;
    let member = crate::raft::Member {
        address: "127.0.0.1:27000".into(),
        peer_address: "127.0.0.1:27100".into(),
    };
    let started = Instant::now();
    crate::raft::restore::restore(
        &read,
        into,
        1,
        [(1, member)].into_iter().collect(),
        crate::raft::restore::restored_term(read.term, None),
    )
    .await
    .map_err(|e| fail(&e))?;
    let restore_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(BackupFigures {
        bytes: bytes.len(),
        take_ms,
        verify_ms,
        restore_ms,
    })
}

/// [`backup_figures`]' figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct BackupFigures {
    bytes: usize,
    take_ms: f64,
    verify_ms: f64,
    restore_ms: f64,
}

async fn bench(args: BenchArgs) -> Result<(), Failure> {
    let reports = if args.compare_etcd {
        let etcd = crate::cli::bench_etcd::binary(args.etcd.as_deref())?;
        let ours = bench_once(&args, args.plaintext).await?;
        let dir = TempDir::new()?;
        let figures =
            crate::cli::bench_etcd::measure(&etcd, &dir.0, args.sessions, args.duration).await?;
        let mut samples = figures.samples;
        let theirs = Report {
            mode: format!("etcd ({})", figures.version),
            tls: false,
            sessions: args.sessions,
            duration_s: figures.elapsed.as_secs_f64(),
            batching: true,
            ops_per_s: Some(figures.operations as f64 / figures.elapsed.as_secs_f64()),
            operations: Some(figures.operations),
            latency: Some(latency(&mut samples)),
            errors: figures.errors,
            ..Default::default()
        };
        vec![ours, theirs]
    } else if args.compare_tls {
        vec![
            bench_once(&args, false).await?,
            bench_once(&args, true).await?,
        ]
    } else {
        vec![bench_once(&args, args.plaintext).await?]
    };
    if args.json {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        println!("{}", json.unwrap_or_default());
    } else {
        for report in &reports {
            print_text(report);
        }
        match reports.as_slice() {
            [ours, theirs] if args.compare_etcd => print_etcd_ratio(ours, theirs),
            [on, off] => print_tls_cost(on, off),
            _ => {}
        }
    }
    Ok(())
}

fn print_etcd_ratio(ours: &Report, etcd: &Report) {
    if let (Some(a), Some(b)) = (ours.ops_per_s, etcd.ops_per_s) {
        println!(
            "raftlm vs etcd, same machine, same run: {a:.0} ops/s vs {b:.0} puts/s ({:.2}x)",
            a / b.max(f64::MIN_POSITIVE)
        );
    }
    if let (Some(a), Some(b)) = (&ours.latency, &etcd.latency) {
        println!(
            "raftlm vs etcd: p50 {:.2} vs {:.2} ms, p99 {:.2} vs {:.2} ms",
            a.p50_ms, b.p50_ms, a.p99_ms, b.p99_ms
        );
    }
}

fn print_tls_cost(on: &Report, off: &Report) {
    if let (Some(a), Some(b)) = (on.ops_per_s, off.ops_per_s) {
        println!(
            "TLS cost: {a:.0} ops/s with TLS, {b:.0} without: {:.1} % of throughput",
            (1.0 - a / b) * 100.0
        );
    }
    if let (Some(a), Some(b)) = (&on.latency, &off.latency) {
        println!(
            "TLS cost: p50 {:.2} vs {:.2} ms, p99 {:.2} vs {:.2} ms",
            a.p50_ms, b.p50_ms, a.p99_ms, b.p99_ms
        );
    }
    if let (Some(a), Some(b)) = (&on.failover, &off.failover) {
        println!(
            "TLS cost: failover median {:.0} vs {:.0} ms, max {:.0} vs {:.0} ms",
            a.p50_ms, b.p50_ms, a.max_ms, b.max_ms
        );
    }
}

async fn bench_once(args: &BenchArgs, plaintext: bool) -> Result<Report, Failure> {
    let temp;
    let mut cluster = None;
    let mut tls = ClientTls::from_env().map_err(Failure::usage)?;
    let target = match &args.server {
        Some(server) => server.split(',').next().unwrap_or_default().to_string(),
        None => {
            let dir = match &args.dir {
                Some(dir) => dir.clone(),
                None => {
                    temp = TempDir::new()?;
                    temp.0.clone()
                }
            };
            // The membership benchmark adds a node of its own.
            let spares = usize::from(args.membership_grants.is_some());
            let ports = free_ports(args.nodes + spares)?;
            let access_point = format!("127.0.0.101:{}", free_port()?);
            let no_batching = args.no_batching;
            // Every bench session comes from this machine's one address.
            let held = args
                .idle_sessions
                .or(args.membership_grants.map(|g| g + args.sessions));
            let membership = args.membership_grants.is_some();
            let tune = move |config: &mut crate::config::Config| {
                if no_batching {
                    config.batching.commands_max = 1;
                }
                if let Some(held) = held
                    && held > crate::config::SESSIONS_PER_ADDRESS_MAX
                {
                    config.limits.sessions_per_address_max =
                        held.min(crate::license::state::SESSIONS_MAX);
                }
                if membership {
                    crate::cli::bench_membership::tune(config);
                }
            };
            let local =
                LocalCluster::start(&dir, &ports, args.nodes, &access_point, plaintext, tune)?;
            tls = local.client_tls.clone();
            eprintln!(
                "bench: started a {}-node cluster in {}",
                args.nodes,
                dir.display()
            );
            if wait_licensed(&access_point, &tls, READY_WAIT)
                .await
                .is_err()
            {
                return Err(Failure::unreachable(format!(
                    "the cluster did not become ready in 30 s; see the logs in {}",
                    dir.display()
                )));
            }
            cluster = Some(local);
            access_point
        }
    };
    let target = normalize(&target);
    let mut report = if let Some(kills) = args.failover {
        let cluster = cluster
            .as_mut()
            .ok_or_else(|| Failure::usage("failover needs a local cluster"))?;
        failover(cluster, kills, args.planned).await?
    } else if let Some(grants) = args.membership_grants {
        let cluster = cluster
            .as_mut()
            .ok_or_else(|| Failure::usage("the membership benchmark needs a local cluster"))?;
        let figures = crate::cli::bench_membership::measure(cluster, grants, args.sessions).await?;
        Report {
            mode: "membership".into(),
            sessions: args.sessions,
            duration_s: figures.seconds,
            batching: !args.no_batching,
            errors: figures.errors.clone(),
            nodes: usages(Some(cluster)),
            membership: Some(figures),
            ..Default::default()
        }
    } else if let Some(sessions) = args.flood {
        let before = usages(cluster.as_ref());
        let mut figures = crate::cli::bench_flood::flood(&target, &tls, sessions).await?;
        let after = usages(cluster.as_ref());
        let peak = |u: &[NodeUsage]| u.iter().map(|n| n.rss_mib).fold(0.0, f64::max);
        if !after.is_empty() {
            figures.rss_mib = Some((peak(&before), peak(&after)));
        }
        Report {
            mode: "flood".into(),
            sessions,
            duration_s: figures.seconds,
            batching: !args.no_batching,
            nodes: after,
            flood: Some(figures),
            ..Default::default()
        }
    } else if let Some(idle) = args.idle_sessions {
        idle_sessions(&target, &tls, idle, args.duration, cluster.as_ref()).await?
    } else {
        load(
            &target,
            &tls,
            args.sessions,
            args.duration,
            cluster.as_ref(),
            args.no_batching,
        )
        .await?
    };
    report.tls = !tls.plaintext;
    report.voters = cluster.as_ref().map(|c| c.voters);
    if let Some(mut cluster) = cluster {
        cluster.processes.stop_all(STOP_WAIT);
    }
    Ok(report)
}

/// `port@host` → `host:port`.
fn normalize(server: &str) -> String {
    match server.split_once('@') {
        Some((port, host)) if port.chars().all(|c| c.is_ascii_digit()) => format!("{host}:{port}"),
        _ => server.to_string(),
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, Failure> {
        let dir = std::env::temp_dir().join(format!(
            "raftlm-bench-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything bench measured.
#[derive(Debug, Default, Serialize)]
struct Report {
    mode: String,
    /// Whether the clients and nodes spoke TLS.
    tls: bool,
    sessions: usize,
    duration_s: f64,
    batching: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ops_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency: Option<Latency>,
    errors: BTreeMap<String, u64>,
    nodes: Vec<NodeUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_node: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_cpu_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_per_grant_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failover_ms: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failover: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_build_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_install_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<BackupFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flood: Option<crate::cli::bench_flood::FloodFigures>,
    /// The voters of the cluster bench started (`None`: `--server`, or no cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    voters: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    membership: Option<crate::cli::bench_membership::MembershipFigures>,
}

async fn load(
    target: &str,
    tls: &ClientTls,
    sessions: usize,
    duration: Duration,
    cluster: Option<&LocalCluster>,
    no_batching: bool,
) -> Result<Report, Failure> {
    let channels = channels(target, tls, sessions.clamp(1, LOAD_CONNECTIONS_MAX)).await?;
    let before = usages(cluster);
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let tasks = spawn_load(&channels, sessions, &shared);
    let mut last = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration.saturating_sub(started.elapsed())))
            .await;
        let ops = shared.ops.load(Ordering::Relaxed);
        eprint!(
            "\rbench: {:>5.1}s  {:>8} ops  {:>8} ops/s   ",
            started.elapsed().as_secs_f64(),
            ops,
            ops - last
        );
        last = ops;
    }
    shared.done.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    eprintln!();
    let (mut samples, errors) = gather(tasks).await;
    let after = usages(cluster);
    let nodes = after
        .iter()
        .map(|a| {
            let cpu_before = before
                .iter()
                .find(|b| b.node == a.node)
                .map_or(0.0, |b| b.cpu_s);
            NodeUsage {
                cpu_s: a.cpu_s - cpu_before,
                ..a.clone()
            }
        })
        .collect();
    let operations = samples.len() as u64;
    Ok(Report {
        mode: "load".into(),
        sessions,
        duration_s: elapsed.as_secs_f64(),
        batching: !no_batching,
        ops_per_s: Some(operations as f64 / elapsed.as_secs_f64()),
        operations: Some(operations),
        latency: Some(latency(&mut samples)),
        errors,
        nodes,
        ..Default::default()
    })
}

async fn idle_sessions(
    target: &str,
    tls: &ClientTls,
    sessions: usize,
    duration: Duration,
    cluster: Option<&LocalCluster>,
) -> Result<Report, Failure> {
    let status = crate::local::probe::status_of(target, tls)
        .await
        .ok_or_else(|| Failure::unreachable(format!("{target} does not answer")))?;
    let active = status.active_node as usize;
    let pid = cluster.and_then(|c| c.pid(active));
    let rss_before = pid
        .and_then(|p| node_usage(active, p))
        .map_or(0.0, |u| u.rss_mib);
    let channels = channels(target, tls, LOAD_CONNECTIONS_MAX).await?;
    // Check out one seat per session, in parallel waves.
    let (held, errors) = hold_grants(&channels, sessions, "idle").await;
    // Heartbeat each session every TTL/3 (10 s by default), spread evenly.
    let interval = Duration::from_millis(status_ttl_ms(target, tls).await / 3);
    let cpu_before = pid
        .and_then(|p| node_usage(active, p))
        .map_or(0.0, |u| u.cpu_s);
    let started = Instant::now();
    let held = Arc::new(held);
    let renewed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let workers = 8usize;
    for w in 0..workers {
        let held = held.clone();
        let renewed = renewed.clone();
        let mut client = LicenseClient::new(channels[w % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<_> = held.iter().skip(w).step_by(workers).cloned().collect();
            if mine.is_empty() {
                return;
            }
            let gap = interval / mine.len() as u32;
            let mut tick = tokio::time::interval(gap.max(Duration::from_micros(50)));
            let mut i = 0;
            while started.elapsed() < duration {
                tick.tick().await;
                let (session, token) = &mine[i % mine.len()];
                let request = pb::RenewRequest {
                    session_secret: session.clone(),
                    tokens: vec![*token],
                    ..Default::default()
                };
                if client.renew(request).await.is_ok() {
                    renewed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprint!(
            "\rbench: {:>5.1}s  {} renewals   ",
            started.elapsed().as_secs_f64(),
            renewed.load(Ordering::Relaxed)
        );
    }
    for task in tasks {
        let _ = task.await;
    }
    eprintln!();
    let elapsed = started.elapsed();
    let usage = pid.and_then(|p| node_usage(active, p));
    let cpu = usage
        .as_ref()
        .map(|u| (u.cpu_s - cpu_before) / elapsed.as_secs_f64() * 100.0);
    let rss = usage.as_ref().map(|u| u.rss_mib);
    Ok(Report {
        mode: "idle".into(),
        sessions,
        duration_s: elapsed.as_secs_f64(),
        batching: true,
        operations: Some(renewed.load(Ordering::Relaxed)),
        ops_per_s: Some(renewed.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()),
        errors,
        nodes: usages(cluster),
        active_node: Some(active as u64),
        active_cpu_percent: cpu,
        active_rss_mib: rss,
        rss_per_grant_bytes: rss
            .map(|r| (r - rss_before) * 1024.0 * 1024.0 / held.len().max(1) as f64),
        ..Default::default()
    })
}

async fn status_ttl_ms(target: &str, tls: &ClientTls) -> u64 {
    let Ok(channel) = channel(target, tls).await else {
        return 30_000;
    };
    let reply = LicenseClient::new(channel)
        .renew(pb::RenewRequest {
            session_secret: crate::license::secret::SessionSecret::generate()
                .as_bytes()
                .to_vec(),
            ..Default::default()
        })
        .await;
    reply
        .map(|r| r.into_inner().session_ttl_ms)
        .unwrap_or(30_000)
        .max(300)
}

async fn failover(
    cluster: &mut LocalCluster,
    kills: usize,
    planned: bool,
) -> Result<Report, Failure> {
    let mut times = Vec::with_capacity(kills);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // As between kills: the cluster settles (and its leader has led a while) first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for round in 1..=kills {
        let status = cluster.status().await.ok_or_else(|| {
            Failure::unreachable("the access point does not answer before a kill")
        })?;
        let active = status.active_node as usize;
        if !(1..=cluster.voters).contains(&active) {
            return Err(Failure::unreachable("no active node before a kill"));
        }
        let access_point = cluster.access_point.clone();
        let tls = cluster.client_tls.clone();
        if planned {
            cluster.processes.terminate(active - 1);
        } else {
            cluster.processes.kill(active - 1);
        }
        let killed = Instant::now();
        // Clients retry through the access point until a check-out succeeds.
        let (_, retries) = first_checkout(&tls, &access_point, killed, FIRST_CHECKOUT_LIMIT)
            .await
            .ok_or_else(|| Failure::unreachable("no check-out succeeded within 60 s of a kill"))?;
        *errors.entry("retries".into()).or_default() += retries;
        let took = killed.elapsed().as_millis() as u64;
        times.push(took);
        let how = if planned { "SIGTERM" } else { "kill" };
        eprintln!("bench: {how} {round}/{kills} of node {active}: first check-out after {took} ms");
        if planned {
            cluster.processes.reap(active - 1, TERMINATE_WAIT);
        }
        cluster.start_node(active)?;
        // Let the restarted node catch up before the next kill.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut samples: Vec<u64> = times.iter().map(|ms| ms * 1000).collect();
    Ok(Report {
        mode: if planned { "handover" } else { "failover" }.into(),
        sessions: 1,
        batching: true,
        errors,
        nodes: usages(Some(cluster)),
        failover_ms: Some(times),
        failover: Some(latency(&mut samples)),
        ..Default::default()
    })
}

fn print_text(report: &Report) {
    let tls = match (report.mode.as_str(), report.tls) {
        // The snapshot benchmark runs in this process, without a network.
        ("snapshot", _) => "",
        (_, true) => ", TLS on",
        (_, false) => ", TLS off",
    };
    let voters = report
        .voters
        .map_or_else(String::new, |n| format!(", {n} nodes"));
    println!(
        "raftlm bench — {} ({} sessions, {:.1} s{tls}{voters})",
        report.mode, report.sessions, report.duration_s
    );
    if let (Some(ops), Some(n)) = (report.ops_per_s, report.operations) {
        if report.mode.starts_with("etcd") {
            println!("  durable puts: {n} ({ops:.0}/s)");
        } else {
            println!(
                "  committed license operations: {n} ({ops:.0}/s), batching {}",
                if report.batching { "on" } else { "off" }
            );
        }
    }
    if let Some(l) = &report.latency {
        println!(
            "  latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    if let Some(f) = &report.flood {
        println!(
            "  flood: {} throw-away sessions from 127.0.0.1 in {:.1} s ({:.0}/s): {} denied, {} otherwise",
            f.sessions,
            f.seconds,
            f.sessions as f64 / f.seconds.max(f64::MIN_POSITIVE),
            f.denied,
            f.other
        );
        for (when, l, refused) in [
            ("before", &f.probe_before_ms, f.probe_refused.0),
            ("after", &f.probe_after_ms, f.probe_refused.1),
        ] {
            println!(
                "  new session from 127.0.0.2 {when} the flood: check-out p50 {:.2}  p99 {:.2}  max {:.2} ms, {refused} not granted",
                l.p50_ms, l.p99_ms, l.max_ms
            );
        }
        if let Some((before, after)) = f.rss_mib {
            println!("  largest node RSS: {before:.1} MiB before, {after:.1} MiB after");
        }
    }
    if let Some(f) = &report.failover {
        let how = if report.mode == "handover" {
            "SIGTERM (planned handover)"
        } else {
            "kill -9"
        };
        println!(
            "  failover ms ({how} → first check-out via the access point): median {:.0}  p99 {:.0}  max {:.0}",
            f.p50_ms, f.p99_ms, f.max_ms
        );
        if let Some(all) = &report.failover_ms {
            println!("  each: {all:?}");
        }
    }
    if let (Some(bytes), Some(build), Some(install)) = (
        report.snapshot_bytes,
        report.snapshot_build_ms,
        report.snapshot_install_ms,
    ) {
        println!(
            "  snapshot of {} grants: {bytes} bytes, built in {build:.0} ms, installed in {install:.0} ms",
            report.sessions
        );
    }
    if let Some(b) = &report.backup {
        println!(
            "  backup of {} grants: {} bytes, taken in {:.0} ms, verified in {:.0} ms, restored in {:.0} ms",
            report.sessions, b.bytes, b.take_ms, b.verify_ms, b.restore_ms
        );
    }
    if let Some(m) = &report.membership {
        print!("{}", crate::cli::bench_membership::text(m));
    }
    if let Some(cpu) = report.active_cpu_percent {
        println!("  active node: {cpu:.1}% of one core while heartbeating");
    }
    if let Some(rss) = report.active_rss_mib {
        println!("  active node RSS: {rss:.1} MiB");
    }
    if let Some(per) = report.rss_per_grant_bytes {
        println!("  RSS per held grant: {per:.0} bytes");
    }
    for node in &report.nodes {
        println!(
            "  node {}: cpu {:.2} s, peak RSS {:.1} MiB",
            node.node, node.cpu_s, node.peak_rss_mib
        );
    }
    if report.errors.is_empty() {
        println!("  errors: none");
    }
    for (kind, n) in &report.errors {
        println!("  errors: {kind}: {n}");
    }
}

/// How long [`first_checkout`] keeps trying after a kill.
pub const FIRST_CHECKOUT_LIMIT: Duration = Duration::from_secs(60);
/// Bound of one attempt of [`first_checkout`], as a whole.
pub const FIRST_CHECKOUT_ATTEMPT: Duration = Duration::from_secs(1);

/// From `start` to the first granted check-out through `address`, retried
/// every 10 ms on a fresh connection (200 ms connect timeout). Each attempt
/// is bounded as a whole by [`FIRST_CHECKOUT_ATTEMPT`]: tonic's connect
/// timeout covers the TCP connect only, and a TLS handshake with a host that
/// let the address go after accepting the connection gets no answer at all.
/// Returns the time taken and the attempts that failed, or `None` after `limit`.
pub async fn first_checkout(
    tls: &ClientTls,
    address: &str,
    start: Instant,
    limit: Duration,
) -> Option<(Duration, u64)> {
    let session = crate::license::secret::SessionSecret::generate()
        .as_bytes()
        .to_vec();
    let mut seq = 0;
    loop {
        seq += 1;
        let attempt = async {
            let channel = tls
                .endpoint(address, Duration::from_millis(200))
                .ok()?
                .timeout(Duration::from_millis(500))
                .connect()
                .await
                .ok()?;
            let request = pb::CheckoutRequest {
                vendor: "acme".into(),
                version: String::new(),
                request: Some(pb::RequestId {
                    session_secret: session.clone(),
                    seq,
                }),
                feature: "bench".into(),
                count: 1,
                user: "failover".into(),
                host: "bench".into(),
            };
            LicenseClient::new(channel)
                .checkout(request)
                .await
                .ok()
                .filter(|r| r.get_ref().granted)
        };
        if let Ok(Some(_)) = tokio::time::timeout(FIRST_CHECKOUT_ATTEMPT, attempt).await {
            return Some((start.elapsed(), seq - 1));
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
