//! `raftlm bench --compare-etcd`: the same load against a three-member etcd
//! cluster started on this machine, so that the comparison is measured in
//! one run, on one disk, at one moment.
//!
//! etcd is started from the `etcd` binary on `PATH` (or `--etcd PATH`), three
//! members on loopback with their data directories in the bench's directory,
//! with etcd's default durability (every commit `fdatasync`ed, batched).
//! The load is `sessions` concurrent workers, each putting its own key with a
//! 128-byte value in a loop, spread over 8 connections to the leader (as
//! raftlm's load is spread over 8 connections to the active node): one
//! replicated, durable log entry per put, as one check-out or check-in is for
//! raftlm. The figures are the puts answered per second and their latency.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::cli::Failure;
use crate::proto::etcd::kv_client::KvClient;
use crate::proto::etcd::maintenance_client::MaintenanceClient;
use crate::proto::etcd::{PutRequest, StatusRequest};

/// Members of the etcd cluster.
const MEMBERS: usize = 3;
/// How long etcd may take to elect a leader after start.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Bytes of each value put.
const VALUE_BYTES: usize = 128;
/// Connections the load is spread over.
const CONNECTIONS: usize = 8;

/// What the etcd load measured.
pub struct EtcdFigures {
    /// `etcd --version`'s first line.
    pub version: String,
    /// Puts answered.
    pub operations: u64,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Each answered put's latency in microseconds.
    pub samples: Vec<u64>,
    /// Failed puts by gRPC code.
    pub errors: BTreeMap<String, u64>,
}

/// The etcd members; killed on drop.
struct Members {
    children: Vec<tokio::process::Child>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

fn free_port() -> Result<u16, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::usage(format!("no free port on 127.0.0.1: {e}")))
}

fn start(etcd: &Path, dir: &Path) -> Result<(Members, Vec<String>), Failure> {
    let mut client_urls = Vec::new();
    let mut peer_urls = Vec::new();
    for _ in 0..MEMBERS {
        client_urls.push(format!("http://127.0.0.1:{}", free_port()?));
        peer_urls.push(format!("http://127.0.0.1:{}", free_port()?));
    }
    let initial: Vec<String> = (0..MEMBERS)
        .map(|i| format!("e{}={}", i + 1, peer_urls[i]))
        .collect();
    let mut members = Members {
        children: Vec::new(),
    };
    for i in 0..MEMBERS {
        let data = dir.join(format!("etcd{}", i + 1));
        let log = std::fs::File::create(dir.join(format!("etcd{}.log", i + 1))).map_err(|e| {
            Failure::usage(format!(
                "cannot create etcd's log in {}: {e}",
                dir.display()
            ))
        })?;
        let mut command = tokio::process::Command::new(etcd);
        command
            .arg("--name")
            .arg(format!("e{}", i + 1))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client_urls[i]])
            .args(["--advertise-client-urls", &client_urls[i]])
            .args(["--listen-peer-urls", &peer_urls[i]])
            .args(["--initial-advertise-peer-urls", &peer_urls[i]])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", "raftlm-bench"])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| Failure::usage(format!("cannot start {}: {e}", etcd.display())))?;
        members.children.push(child);
    }
    Ok((members, client_urls))
}

async fn connect(url: &str) -> Option<Channel> {
    Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()
}

/// The client URL of the member that is the leader, once there is one.
async fn leader(urls: &[String]) -> Option<String> {
    for url in urls {
        let Some(channel) = connect(url).await else {
            continue;
        };
        let Ok(reply) = MaintenanceClient::new(channel)
            .status(StatusRequest::default())
            .await
        else {
            continue;
        };
        let reply = reply.into_inner();
        let me = reply.header.map_or(0, |h| h.member_id);
        if reply.leader != 0 && reply.leader == me {
            return Some(url.clone());
        }
    }
    None
}

fn version(etcd: &Path) -> String {
    std::process::Command::new(etcd)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd (version unknown)".into())
}

/// Starts etcd in `dir`, runs the put load for `duration` and stops etcd.
pub async fn measure(
    etcd: &Path,
    dir: &Path,
    sessions: usize,
    duration: Duration,
) -> Result<EtcdFigures, Failure> {
    let version = version(etcd);
    let (members, urls) = start(etcd, dir)?;
    let deadline = Instant::now() + START_LIMIT;
    let leader = loop {
        if let Some(url) = leader(&urls).await {
            break url;
        }
        if Instant::now() > deadline {
            return Err(Failure::unreachable(format!(
                "etcd elected no leader within {START_LIMIT:?}; see etcd*.log in {}",
                dir.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS.min(sessions.max(1)) {
        channels.push(connect(&leader).await.ok_or_else(|| {
            Failure::unreachable(format!("cannot connect to etcd's leader at {leader}"))
        })?);
    }
    let done = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..sessions {
        let mut client = KvClient::new(channels[worker % channels.len()].clone());
        let (done, ops) = (done.clone(), ops.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("bench/{worker:05}").into_bytes();
            let value = vec![b'v'; VALUE_BYTES];
            let mut samples = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let put = PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                };
                match client.put(put).await {
                    Ok(_) => {
                        samples.push(t.elapsed().as_micros() as u64);
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        *errors
                            .entry(format!("{:?}", status.code()).to_lowercase())
                            .or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (samples, errors)
        }));
    }
    let mut last = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration.saturating_sub(started.elapsed())))
            .await;
        let now = ops.load(Ordering::Relaxed);
        eprint!(
            "\rbench (etcd): {:>5.1}s  {:>8} puts  {:>8} puts/s   ",
            started.elapsed().as_secs_f64(),
            now,
            now - last
        );
        last = now;
    }
    done.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    eprintln!();
    let (samples, errors) = crate::cli::bench_figures::gather(tasks).await;
    drop(members);
    Ok(EtcdFigures {
        version,
        operations: samples.len() as u64,
        elapsed,
        samples,
        errors,
    })
}

/// The `etcd` binary: `explicit`, or the first `etcd` on `PATH`.
pub fn binary(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Failure::usage(
                "--compare-etcd needs the etcd binary: install etcd (Debian: apt-get install etcd-server) or pass --etcd PATH",
            )
        })
}
