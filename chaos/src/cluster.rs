//! The chaos run's `raftlm server` processes on loopback, on
//! `raftlm::local` (the launcher the demo and the tests use), with what
//! only chaos needs on top: each node's peer view through the harness's
//! proxies, power-cut disks, clock jumps, the hosts' systemd side on a LAN,
//! and a record of exits the harness did not cause.
//!
//! [`Cluster::prepare`] writes a vendor key, the licenses signed with it (in
//! each node's `license_dir`), the cluster's certificates (TLS is on, as in
//! production), and one config per node ([`Plan`]). Node `i`'s own entry in
//! `[[nodes]]` has its real client and peer addresses (and `listen` and
//! `peer_listen` are set to them), while each peer `j` is listed with the
//! address of the proxy `i → j` as its peer address (see [`crate::proxy`]):
//! every node has its own config file, so each sees the cluster through its
//! own proxies. Nodes dial peers at the addresses of their own config, so
//! this view survives a snapshot installed from another node. Certificates
//! name nodes, not addresses, so TLS does not mind the proxies.
//!
//! Processes run under [`Processes`]: they die with the harness even if it
//! is killed with SIGKILL (`PR_SET_PDEATHSIG`); and [`Cluster`]'s `Drop`
//! continues and kills every child (also on panic).
//!
//! With a [`Lan`] (`--netns`), node `i + 1` runs in host `h{i+1}`'s network
//! namespace, on its own address there, and the access point is a real
//! address on the LAN in command mode, moved by the shipped `vip-up` and
//! `vip-down`; the harness plays the systemd unit's side of each host (see
//! [`crate::host`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raftlm::config::{AccessPoint, AccessPointMode};
use raftlm::license::feature::Date;
use raftlm::local::files::{self, LicenseFile, NodePlan, Plan, Security};
use raftlm::local::process::{
    ENV_FAULT_BREAK, ENV_FAULT_CLOCK_FILE, ENV_LOG, LOG_FILTER, Processes, write_clock_offset,
};
use raftlm::local::tls::ClusterTls;
use raftlm::proto::v1 as pb;
use raftlm::tls::client::ClientTls;

use crate::host::{self, Hosts};
use crate::lan::{self, Lan};
use crate::powerfs::{Loss, PowerDisk};

/// The cluster (access point) name the license is issued for.
pub const CLUSTER: &str = "LICSRV";
/// How long a stopped node may take to exit after SIGTERM before it is killed.
pub const TERMINATE_WAIT: Duration = Duration::from_secs(10);

/// What the cluster is made of.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Directory for keys, license, configs, data and logs.
    pub dir: PathBuf,
    /// The `raftlm` binary.
    pub binary: PathBuf,
    /// Each node's real client-plane address (node `i + 1` at index `i`).
    pub real: Vec<SocketAddr>,
    /// Each node's real peer-plane address.
    pub real_peer: Vec<SocketAddr>,
    /// `peers[i][j]`: the peer address node `i` uses for node `j` (its proxy), `i != j`.
    pub peers: Vec<Vec<SocketAddr>>,
    /// The access point.
    pub access_point: SocketAddr,
    /// Features and seats licensed.
    pub features: Vec<(String, u32)>,
    /// The nodes' session TTL.
    pub session_ttl_ms: u64,
    /// Snapshot every this many log entries.
    pub snapshot_every: u64,
    /// Put every data directory on a power-cut filesystem (see [`crate::powerfs`]).
    pub power: bool,
    /// Dated features, each in a license file of its own: name, seats, the
    /// last day it is valid, and its `ISSUED` date.
    pub dated: Vec<(String, u32, Date, Date)>,
    /// With the clock fault: every node's wall clock runs this many ms ahead
    /// of the real one (the run's "true" time), and [`Cluster::set_clock_jump`]
    /// jumps one node's further. The nodes' `timing.clock_skew_max_ms` is
    /// then [`CLOCK_SKEW_MAX_MS`].
    pub clock_base_ms: Option<i64>,
    /// `RAFTLM_FAULT_BREAK` for every node (empty: nothing broken).
    pub breaks: String,
    /// A feature and its seats in a license file that is not in the license
    /// directory: an administrator imports and removes it during the run.
    pub churn: Option<(String, u32)>,
    /// Run the nodes on this LAN in a box, the access point a real address
    /// on it (`None`: loopback, the access point in bind mode).
    pub netns: Option<Arc<Lan>>,
    /// On a LAN, play the hosts' systemd side (watchdog, ExecStopPost).
    pub host_side: bool,
}

/// The name of the license file an administrator imports and removes during a run.
pub const CHURN_LICENSE: &str = "churn.lic";

/// The nodes' `timing.clock_skew_max_ms` in runs with the clock fault: small,
/// so that the expiry invariant is checked within a short run.
pub const CLOCK_SKEW_MAX_MS: u64 = 5_000;

/// Log entries the nodes keep behind a snapshot: few, so that a follower cut
/// off, paused or killed for a few seconds catches up by a snapshot sent from
/// the leader (`snapshot installed` in its log), not only from the log.
pub const LOGS_KEPT: u64 = 10;

/// The vendor of every feature the chaos license grants.
pub const VENDOR: &str = "acme";

/// A node process that ended without the harness ending it (a crash, an
/// abort on panic, a refusal to start), or did not stop gracefully.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The node, 0-based.
    pub node: usize,
    /// When the harness noticed.
    pub noticed: std::time::Instant,
    /// When the process was last seen running before that.
    pub last_running: Option<std::time::Instant>,
    /// What happened: the exit status, and under which circumstances.
    pub what: String,
}

/// The node processes.
pub struct Cluster {
    /// What the cluster is made of.
    pub spec: ClusterSpec,
    /// The certificates.
    pub tls: ClusterTls,
    /// How the harness's clients dial the nodes.
    pub client_tls: ClientTls,
    /// How the harness's administrator dials the nodes (a certificate with the admin role).
    pub admin_tls: ClientTls,
    /// The signed churn license ([`CHURN_LICENSE`]), when the spec has one.
    pub churn_license: Option<String>,
    processes: Processes,
    paused: Vec<bool>,
    /// Exits the harness did not cause, in the order noticed.
    exits: Vec<Exit>,
    /// When each node's process was last seen running.
    seen_running: Vec<Option<std::time::Instant>>,
    /// Node processes started.
    starts: u64,
    /// Each node's power-cut filesystem, when the spec asks for them. Dropped
    /// (unmounted) after `Drop` has killed the nodes.
    disks: Vec<PowerDisk>,
    /// The hosts' systemd side, with a LAN.
    hosts: Option<Hosts>,
    /// Node processes the watchdog killed, restarted by [`Cluster::supervise`].
    watchdog_killed: Vec<bool>,
}

/// `n1`, `n2`, `n3` for the 0-based node `i`.
pub fn label(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Listen ports are drawn from here: below Linux's default ephemeral range
/// (32768–60999), so that an outgoing connection cannot take a stopped
/// node's port before the node restarts on it.
pub const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free port on 127.0.0.1 in [`PORTS`] (bound and released; the race with
/// other programs is acceptable).
pub fn free_port() -> anyhow::Result<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1 in {PORTS:?}")
}

impl Cluster {
    /// Writes the key, the signed licenses and the configs.
    pub fn prepare(spec: ClusterSpec) -> anyhow::Result<Cluster> {
        let dir = &spec.dir;
        let n = spec.real.len();
        let nodes = (0..n)
            .map(|i| NodePlan {
                id: i as u64 + 1,
                address: spec.real[i].to_string(),
                peer_address: spec.real_peer[i].to_string(),
                data_dir: dir.join(format!("data{}", i + 1)),
                name: None,
                peer_view: Some(
                    (0..n)
                        .map(|j| {
                            if i == j {
                                spec.real_peer[i].to_string()
                            } else {
                                spec.peers[i][j].to_string()
                            }
                        })
                        .collect(),
                ),
            })
            .collect();
        let mut plan = Plan::new(dir, nodes);
        plan.cluster = CLUSTER.to_string();
        plan.header =
            Some("raftlm-chaos node {id}: peers are reached through the harness's proxies".into());
        plan.access_point = access_point(&spec);
        // On a LAN clients name the cluster, not an address (as users do).
        plan.security = Security::Tls {
            sans: vec!["127.0.0.1".to_string(), spec.access_point.ip().to_string()],
        };
        let features: Vec<(&str, u32)> = spec
            .features
            .iter()
            .map(|(feature, seats)| (feature.as_str(), *seats))
            .collect();
        plan.licenses = vec![LicenseFile::features("chaos.lic", CLUSTER, &features)];
        for (feature, seats, last_day, issued) in &spec.dated {
            plan.licenses.push(LicenseFile::text(
                &format!("dated-{feature}.lic"),
                &format!(
                    "SERVER {CLUSTER} ANY 27000\nVENDOR {VENDOR}\nFEATURE {feature} {VENDOR} 2.0 {last_day} {seats} ISSUED={issued}\n"
                ),
            ));
        }
        if let Some((feature, seats)) = &spec.churn {
            plan.licenses.push(
                LicenseFile::features(CHURN_LICENSE, CLUSTER, &[(feature.as_str(), *seats)])
                    .not_installed(),
            );
        }
        let real = spec.real.clone();
        let real_peer = spec.real_peer.clone();
        let (session_ttl_ms, snapshot_every) = (spec.session_ttl_ms, spec.snapshot_every);
        let clock = spec.clock_base_ms.is_some();
        let plan = plan.tuned(move |config| {
            let i = config.node_id as usize - 1;
            config.listen = Some(real[i]);
            config.peer_listen = Some(real_peer[i]);
            config.timing.session_ttl_ms = session_ttl_ms;
            if clock {
                config.timing.clock_skew_max_ms = CLOCK_SKEW_MAX_MS;
            }
            config.snapshot.logs_since_last = snapshot_every;
            config.snapshot.logs_kept = LOGS_KEPT;
        });
        let written = plan.write()?;
        let tls = written
            .tls
            .clone()
            .context("a chaos cluster runs with TLS")?;
        let mut client_tls = written.client_tls.clone();
        let mut admin_tls = tls.administrator().map_err(|e| anyhow::anyhow!(e))?;
        if spec.netns.is_some() {
            client_tls = client_tls.with_server_name(CLUSTER);
            admin_tls = admin_tls.with_server_name(CLUSTER);
        }
        let churn_license = written.signed(CHURN_LICENSE).map(str::to_string);
        let mut processes = Processes::new(&spec.binary, dir, &written.config_files);
        let log_filter = std::env::var(ENV_LOG).unwrap_or_else(|_| LOG_FILTER.into());
        processes.set_env_all(ENV_LOG, Some(log_filter.as_ref()));
        let breaks = (!spec.breaks.is_empty()).then(|| std::ffi::OsStr::new(&spec.breaks));
        processes.set_env_all(ENV_FAULT_BREAK, breaks);
        for i in 0..n {
            if spec.clock_base_ms.is_some() {
                processes.set_env(
                    i,
                    ENV_FAULT_CLOCK_FILE,
                    Some(clock_file(dir, i).as_os_str()),
                );
            }
        }
        if let Some(base) = spec.clock_base_ms {
            for i in 0..n {
                write_clock(&clock_file(dir, i), base)?;
            }
        }
        let mut disks = Vec::new();
        for i in 0..n {
            let data = dir.join(format!("data{}", i + 1));
            std::fs::create_dir_all(&data)?;
            if spec.power {
                disks.push(PowerDisk::mount(&data)?);
            }
        }
        Ok(Cluster {
            tls,
            client_tls,
            admin_tls,
            churn_license,
            processes,
            paused: vec![false; n],
            exits: Vec::new(),
            seen_running: vec![None; n],
            starts: 0,
            disks,
            hosts: match &spec.netns {
                Some(lan) => Some(Hosts::start(lan.clone(), dir, spec.host_side)?),
                None => None,
            },
            watchdog_killed: vec![false; n],
            spec,
        })
    }

    /// Watchdog kills and ExecStopPost runs so far (`--netns` runs).
    pub fn host_counts(&self) -> Option<(u64, u64)> {
        self.hosts
            .as_ref()
            .map(|h| (h.watchdog_kills(), h.stop_posts()))
    }

    /// Plays `Restart=on-failure` for nodes the host's watchdog killed:
    /// starts them again. Called when a fault ends.
    pub fn supervise(&mut self) -> anyhow::Result<u64> {
        let mut restarted = 0;
        for i in 0..self.len() {
            self.reap(i);
            if self.watchdog_killed[i] {
                self.watchdog_killed[i] = false;
                self.start(i)?;
                restarted += 1;
            }
        }
        Ok(restarted)
    }

    /// Ends node `i`'s process (reaped, so its pid is free only after the
    /// host's watchdog can no longer signal it) and, on a LAN, runs the
    /// unit's ExecStopPost.
    fn end_process(&mut self, i: usize, mut child: Child) {
        match &self.hosts {
            Some(hosts) => {
                let mut pid = hosts.lock(i);
                hosts.disarm_locked(i, &pid);
                // A process already reaped (a SIGTERM that ended it) is not
                // signalled: its pid may be another's by now. Its group is:
                // an up script's announcements may still run.
                if matches!(child.try_wait(), Ok(None)) {
                    host::kill_group(child.id());
                } else {
                    host::kill_leftover_group(child.id());
                }
                let _ = child.wait();
                *pid = 0;
                // Killed by the watchdog just before: it ran ExecStopPost
                // already, and the harness was ending the process anyway.
                hosts.take_killed(i);
                hosts.exec_stop_post(i);
                drop(pid);
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Sets node `i`'s wall clock `jump_ms` away from the run's true time
    /// (0: back to it). Needs a raftlm built with the feature fault-injection.
    pub fn set_clock_jump(&self, i: usize, jump_ms: i64) -> anyhow::Result<()> {
        let base = self
            .spec
            .clock_base_ms
            .context("the cluster was prepared without the clock fault")?;
        write_clock(&clock_file(&self.spec.dir, i), base + jump_ms)
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.spec.dir.join(format!("data{}", i + 1))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.processes.log_file(i).to_path_buf()
    }

    /// Exits the harness did not cause, so far.
    pub fn exits(&self) -> &[Exit] {
        &self.exits
    }

    /// Node processes started so far.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// Node `i`'s log file.
    pub fn log_file(&self, i: usize) -> PathBuf {
        self.log_path(i)
    }

    /// Reaps node `i` if its process ended, which the harness did not cause
    /// (every signal the harness sends to end a node reaps it itself):
    /// recorded in [`exits`](Self::exits).
    fn reap(&mut self, i: usize) {
        let Some(child_pid) = self.processes.pid(i) else {
            return;
        };
        // On a LAN, under the pid lock: the watchdog kills by pid.
        let guard = self.hosts.as_ref().map(|h| h.lock(i));
        let what = match self.processes.try_wait(i) {
            None => {
                self.seen_running[i] = Some(std::time::Instant::now());
                return;
            }
            Some(Ok(status)) => format!("exited on its own ({status})"),
            Some(Err(error)) => format!("cannot be waited for ({error})"),
        };
        let what = match (&self.hosts, guard) {
            (Some(hosts), Some(mut pid)) => {
                hosts.disarm_locked(i, &pid);
                *pid = 0;
                match hosts.take_killed(i) {
                    // The host's watchdog ended a node the harness had
                    // paused (and ran ExecStopPost): the harness's doing, to
                    // be restarted by `supervise`.
                    Some((true, _)) => {
                        self.watchdog_killed[i] = true;
                        self.paused[i] = false;
                        return;
                    }
                    // It stopped pinging while it ran: a node failure.
                    Some((false, silent_ms)) => {
                        self.watchdog_killed[i] = true;
                        format!(
                            "killed by its host's watchdog: no WATCHDOG=1 for {silent_ms} ms while it was not paused"
                        )
                    }
                    None => {
                        // As systemd does with the rest of the unit's cgroup.
                        host::kill_leftover_group(child_pid);
                        hosts.exec_stop_post(i);
                        what
                    }
                }
            }
            _ => what,
        };
        self.paused[i] = false;
        self.exits.push(Exit {
            node: i,
            noticed: std::time::Instant::now(),
            last_running: self.seen_running[i],
            what,
        });
    }

    /// Starts node `i` (no-op if it runs); its log is appended to `node{i+1}.log`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.reap(i);
        if self.processes.running(i) {
            return Ok(());
        }
        let command = match &self.hosts {
            Some(hosts) => host::command(hosts, i, &self.spec.binary),
            None => self.processes.command(),
        };
        self.processes
            .start_with(i, command)
            .with_context(|| format!("cannot start {}", self.spec.binary.display()))?;
        if let (Some(hosts), Some(pid)) = (&self.hosts, self.processes.pid(i)) {
            hosts.started(i, pid);
        }
        self.watchdog_killed[i] = false;
        self.paused[i] = false;
        self.starts += 1;
        self.seen_running[i] = Some(std::time::Instant::now());
        Ok(())
    }

    /// Holds back (`true`) or lets through the syncs of node `i`'s disk
    /// (see [`PowerDisk::hold_syncs`]).
    pub fn hold_syncs(&self, i: usize, held: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.disks.len() == self.len(),
            "the nodes' data directories are not on power-cut filesystems"
        );
        self.disks[i].hold_syncs(held);
        Ok(())
    }

    /// Whether node `i`'s process runs (possibly stopped).
    pub fn running(&mut self, i: usize) -> bool {
        self.reap(i);
        self.processes.running(i)
    }

    /// Whether node `i` is stopped with SIGSTOP.
    pub fn paused(&self, i: usize) -> bool {
        self.paused[i]
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        self.processes.signal(i, signal);
    }

    /// SIGKILL to node `i`, and reaps it.
    pub fn kill(&mut self, i: usize) {
        // A process that already ended did not end of this kill.
        self.reap(i);
        if let Some(child) = self.processes.take(i) {
            self.end_process(i, child);
        }
        self.paused[i] = false;
    }

    /// The power fails on `nodes` at one instant: their disks stop
    /// answering, the processes are killed, and the disks come back with only
    /// what was synced. The nodes are not restarted. Returns what each lost.
    pub fn power_cut(&mut self, nodes: &[usize]) -> anyhow::Result<Vec<Loss>> {
        anyhow::ensure!(
            self.disks.len() == self.len(),
            "the nodes' data directories are not on power-cut filesystems"
        );
        // An exit before the cut is the node's own doing; one after it (sled
        // panics on the first EIO, before the kill lands) is the cut's.
        for &i in nodes {
            self.reap(i);
        }
        for &i in nodes {
            self.disks[i].cut();
        }
        for &i in nodes {
            // SIGCONT first: a stopped process does not die of SIGKILL until continued.
            self.resume(i);
            if let Some(child) = self.processes.take(i) {
                self.end_process(i, child);
            }
            self.paused[i] = false;
        }
        nodes
            .iter()
            .map(|&i| {
                self.disks[i].restore().with_context(|| {
                    format!("cannot bring {}'s disk back after a power cut", label(i))
                })
            })
            .collect()
    }

    /// Whether the data directories are on power-cut filesystems.
    pub fn has_power_disks(&self) -> bool {
        !self.disks.is_empty()
    }

    /// SIGSTOP to node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(hosts) = &self.hosts {
            hosts.set_paused(i, true);
        }
        self.signal(i, libc::SIGSTOP);
        self.paused[i] = self.processes.running(i);
    }

    /// SIGCONT to node `i`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        if let Some(hosts) = self.hosts.as_ref().filter(|_| self.paused[i]) {
            hosts.set_paused(i, false);
        }
        self.paused[i] = false;
    }

    /// Stops node `i` with SIGTERM (a graceful stop), killing it if it takes
    /// longer than [`TERMINATE_WAIT`].
    /// A graceful stop ends with exit status 0 within the wait; anything
    /// else is recorded in [`exits`](Self::exits).
    pub async fn terminate(&mut self, i: usize) {
        self.reap(i);
        self.resume(i);
        if let Some(hosts) = &self.hosts {
            hosts.disarm(i);
        }
        self.signal(i, libc::SIGTERM);
        self.await_stop(i).await;
    }

    /// Waits for node `i` to end after a SIGTERM, killing it after
    /// [`TERMINATE_WAIT`].
    async fn await_stop(&mut self, i: usize) {
        let deadline = tokio::time::Instant::now() + TERMINATE_WAIT;
        let mut what = None;
        // Out of the launcher while it is waited for: ended below either way.
        let mut taken = self.processes.take(i);
        while let Some(child) = taken.as_mut() {
            match child.try_wait() {
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Ok(None) => {
                    what = Some(format!(
                        "still running {TERMINATE_WAIT:?} after SIGTERM (then killed)"
                    ));
                }
                Ok(Some(status)) if status.success() => {}
                Ok(Some(status)) => what = Some(format!("stopped by SIGTERM with {status}")),
                Err(error) => what = Some(format!("cannot be waited for ({error})")),
            }
            break;
        }
        if let Some(what) = what {
            self.exits.push(Exit {
                node: i,
                noticed: std::time::Instant::now(),
                last_running: self.seen_running[i],
                what,
            });
        }
        if let Some(child) = taken {
            self.end_process(i, child);
        }
        self.paused[i] = false;
    }

    /// Stops every node gracefully, all at once.
    pub async fn terminate_all(&mut self) {
        for i in 0..self.len() {
            self.reap(i);
            self.resume(i);
            if let Some(hosts) = &self.hosts {
                hosts.disarm(i);
            }
            self.signal(i, libc::SIGTERM);
        }
        for i in 0..self.len() {
            self.await_stop(i).await;
        }
    }

    /// The node that answers Status (the active node), if one does within `per_node` each.
    pub async fn active(&mut self, per_node: Duration) -> Option<(usize, pb::StatusReply)> {
        for i in 0..self.len() {
            if !self.running(i) || self.paused[i] {
                continue;
            }
            if let Some(reply) =
                status(&self.spec.real[i].to_string(), &self.client_tls, per_node).await
            {
                return Some((i, reply));
            }
        }
        None
    }

    /// Waits up to `limit` for an active node that serves the licensed features.
    pub async fn wait_ready(&mut self, limit: Duration) -> Option<(usize, pb::StatusReply)> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some((i, reply)) = self.active(Duration::from_millis(500)).await
                && reply.features.len() >= self.spec.features.len() + self.spec.dated.len()
            {
                return Some((i, reply));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The last lines of every node's log, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        self.processes.log_tails(lines)
    }

    /// The directory of the run.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            // A stopped process is continued so that it dies promptly.
            self.resume(i);
            self.kill(i);
        }
    }
}

/// The nodes' access point: bind mode on loopback, or command mode with the
/// shipped scripts on a LAN.
fn access_point(spec: &ClusterSpec) -> AccessPoint {
    if spec.netns.is_none() {
        return files::bind_access_point(spec.access_point);
    }
    let script = |name: &str| -> Vec<String> {
        vec![
            host::example(name).display().to_string(),
            "{ip}".into(),
            "{prefix}".into(),
            "{interface}".into(),
        ]
    };
    AccessPoint {
        mode: AccessPointMode::Command,
        address: spec.access_point,
        prefix: lan::PREFIX,
        interface: lan::INTERFACE.to_string(),
        up: script("vip-up"),
        down: script("vip-down"),
    }
}

/// The file node `i`'s clock offset is read from.
fn clock_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node{}.clock", i + 1))
}

/// Writes a clock offset so that a node never reads a half-written file.
fn write_clock(path: &Path, offset_ms: i64) -> anyhow::Result<()> {
    write_clock_offset(path, offset_ms).with_context(|| format!("cannot write {}", path.display()))
}

/// How long the cluster may take to serve after a start or a heal.
pub const READY_LIMIT: Duration = Duration::from_secs(60);

/// Node `i`'s applied index (NodeInfo on its own address), if it answers
/// within half a second.
pub async fn applied_index(cluster: &Cluster, i: usize) -> Option<u64> {
    let address = cluster.spec.real[i].to_string();
    let ask = async {
        let channel = cluster
            .client_tls
            .endpoint(&address, Duration::from_millis(500))
            .ok()?
            .connect()
            .await
            .ok()?;
        pb::license_client::LicenseClient::new(channel)
            .node_info(pb::NodeInfoRequest::default())
            .await
            .ok()
            .map(|reply| reply.into_inner().applied_index)
    };
    tokio::time::timeout(Duration::from_millis(500), ask)
        .await
        .ok()
        .flatten()
}

/// A Status call to `address` with a deadline; `None` if it does not answer.
pub async fn status(address: &str, tls: &ClientTls, timeout: Duration) -> Option<pb::StatusReply> {
    let call = raftlm::local::probe::status_within(address, tls, timeout, timeout);
    tokio::time::timeout(timeout * 2, call).await.ok().flatten()
}
