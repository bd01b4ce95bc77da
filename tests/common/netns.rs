//! A LAN in a box: network namespaces for three node hosts and a client
//! host, joined by veth pairs to a bridge in a namespace of its own, on the
//! documentation range 198.51.100.0/24; and a three-node cluster on it whose
//! access point is a real address moved by the shipped `docs/examples/vip-up`
//! and `vip-down` scripts.
//!
//! Nothing touches the machine's own network: no interface of it joins the
//! bridge and no namespace has a default route. Every namespace is deleted
//! when the [`Lan`] drops, also when a test fails.
//!
//! The harness plays the host's side of the shipped systemd unit
//! (`docs/examples/raftlm.service`): `ExecStopPost` (vip-down in the host's
//! namespace) after a node's process ended, and the watchdog (a unix
//! datagram socket per host as `NOTIFY_SOCKET`, `WATCHDOG_USEC`; a node
//! silent for `WatchdogSec` is killed with its process group and the
//! address removed).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The access point's address on the LAN.
pub const VIP: &str = "198.51.100.100";
/// The client port of every node and of the access point.
pub const PORT: u16 = 27000;
/// The peer port of every node.
pub const PEER_PORT: u16 = 27100;
/// The client host's address.
pub const CLIENT_IP: &str = "198.51.100.200";
/// The harness's `WatchdogSec`, as in `docs/examples/raftlm.service`.
pub const WATCHDOG: Duration = Duration::from_millis(300);

/// Why the namespace tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    let uid = match Command::new("id").arg("-u").output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        Err(error) => return Some(format!("cannot run `id -u`: {error}")),
    };
    if uid != "0" {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    for tool in ["ip", "arping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    // Some containers are root without the right to make namespaces.
    let probe = format!("rlm{}probe", std::process::id());
    let made = match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(output) => output,
        Err(error) => return Some(format!("cannot run `ip`: {error}")),
    };
    if !made.status.success() {
        return Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    None
}

/// Runs `ip` with `args`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The namespaces of one LAN; deleted on drop.
pub struct Lan {
    /// The bridge's namespace.
    pub bridge: String,
    /// The node hosts' namespaces, h1 to h3.
    pub hosts: Vec<String>,
    /// The client host's namespace.
    pub client: String,
    /// Whether each host's link is up (cut with [`Lan::link`]).
    pub links: Arc<Vec<AtomicBool>>,
    /// Each host's MAC address, to read the client's neighbour table.
    pub macs: Vec<String>,
}

impl Lan {
    /// Builds the LAN; names carry the pid and a counter, so parallel tests
    /// and runs do not collide.
    pub fn new() -> Lan {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let base = format!("rlm{}x{run}", std::process::id());
        let mut lan = Lan {
            bridge: format!("{base}br"),
            hosts: (1..=3).map(|i| format!("{base}h{i}")).collect(),
            client: format!("{base}c1"),
            links: Arc::new((0..3).map(|_| AtomicBool::new(true)).collect()),
            macs: Vec::new(),
        };
        // Each namespace is added before it is recorded, so drop deletes
        // exactly the ones that exist.
        let bridge = lan.bridge.clone();
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        let mut members: Vec<(String, String, String)> = lan
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), format!("h{}", i + 1), host_ip(i + 1)))
            .collect();
        members.push((lan.client.clone(), "c1".into(), CLIENT_IP.into()));
        for (ns, port, address) in &members {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
                &bridge,
            ]);
            ip(&["-n", &bridge, "link", "set", port, "master", "br0"]);
            ip(&["-n", &bridge, "link", "set", port, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        lan.macs = lan
            .hosts
            .iter()
            .map(|h| {
                let text = ip_output(&["-n", h, "-o", "link", "show", "eth0"]);
                text.split_whitespace()
                    .skip_while(|w| *w != "link/ether")
                    .nth(1)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        lan
    }

    /// Cuts (`up = false`) or restores host `id`'s link on its own side.
    pub fn link(&self, id: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hosts[id - 1], "link", "set", "eth0", state]);
        self.links[id - 1].store(up, Ordering::SeqCst);
    }

    /// `program` run in namespace `ns` (`ip netns exec`, which execs it:
    /// the child's pid is the program's).
    pub fn command_in(ns: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program);
        command
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.client, &self.bridge]) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Host `id`'s own address.
pub fn host_ip(id: usize) -> String {
    format!("198.51.100.{}", 10 + id)
}

/// A shipped example script, e.g. `vip-up`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/examples")
        .join(name)
}

/// What happened to a node outside raftlm's control, for the test's output.
#[derive(Debug, Clone)]
pub struct HostEvent {
    pub at: Instant,
    pub host: usize,
    pub what: String,
}

/// One host: its node process and its emulated systemd.
struct Host {
    child: Mutex<Option<Child>>,
    /// READY=1 received since the last start.
    ready: AtomicBool,
    /// The last WATCHDOG=1, as milliseconds since the cluster started.
    last_ping_ms: AtomicU64,
}

/// Three `raftlm server` processes on a [`Lan`], with the access point in
/// command mode on [`VIP`].
pub struct NetnsCluster {
    pub dir: tempfile::TempDir,
    pub key: raftlm::license::signature::VendorSigningKey,
    hosts: Vec<Arc<Host>>,
    pub events: Arc<Mutex<Vec<HostEvent>>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    watchdogs: Vec<std::thread::JoinHandle<()>>,
    // Dropped last: the namespaces outlive the processes in them.
    pub lan: Arc<Lan>,
}

impl NetnsCluster {
    /// Writes keys, a license with `features` and three configs (shipped
    /// timing) and starts the watchdog threads; no node runs yet.
    pub fn new(lan: Lan, features: &[(&str, u32)]) -> NetnsCluster {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = super::vendor_key(dir.path());
        let licenses = dir.path().join("licenses");
        std::fs::create_dir_all(&licenses).unwrap();
        std::fs::write(
            licenses.join("acme.lic"),
            super::signed_license(&key, features),
        )
        .unwrap();
        for id in 1..=3usize {
            let mut text = format!(
                "node_id = {id}\ncluster_name = \"{}\"\ndata_dir = \"node{id}\"\nvendor_keys = [\"{}\"]\nlicense_dir = \"licenses\"\n",
                super::CLUSTER,
                public.display()
            );
            for peer in 1..=3 {
                text.push_str(&format!(
                    "[[nodes]]\nid = {peer}\naddress = \"{0}:{PORT}\"\npeer_address = \"{0}:{PEER_PORT}\"\n",
                    host_ip(peer)
                ));
            }
            text.push_str(&super::tls().config_section(id as u64));
            let script = |name: &str| {
                format!(
                    "[\"{}\", \"{{ip}}\", \"{{prefix}}\", \"{{interface}}\"]",
                    example(name).display()
                )
            };
            text.push_str(&format!(
                "[access_point]\nmode = \"command\"\naddress = \"{VIP}:{PORT}\"\nprefix = 24\ninterface = \"eth0\"\nup = {}\ndown = {}\n",
                script("vip-up"),
                script("vip-down")
            ));
            std::fs::write(dir.path().join(format!("node{id}.toml")), text).unwrap();
        }
        let hosts: Vec<Arc<Host>> = (0..3)
            .map(|_| {
                Arc::new(Host {
                    child: Mutex::new(None),
                    ready: AtomicBool::new(false),
                    last_ping_ms: AtomicU64::new(0),
                })
            })
            .collect();
        let mut cluster = NetnsCluster {
            dir,
            key,
            hosts,
            events: Arc::new(Mutex::new(Vec::new())),
            epoch: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            watchdogs: Vec::new(),
            lan: Arc::new(lan),
        };
        for id in 1..=3 {
            let socket = UnixDatagram::bind(cluster.notify_socket(id)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let host = cluster.hosts[id - 1].clone();
            let stop = cluster.stop.clone();
            let events = cluster.events.clone();
            let lan = cluster.lan.clone();
            let epoch = cluster.epoch;
            cluster.watchdogs.push(std::thread::spawn(move || {
                watchdog(id, &socket, &host, &stop, &events, &lan, epoch)
            }));
        }
        cluster
    }

    fn notify_socket(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("notify{id}"))
    }

    /// The config file of node `id`.
    pub fn config(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.toml"))
    }

    /// Starts node `id` in its host's namespace, as the unit would.
    pub fn start(&self, id: usize) {
        let host = &self.hosts[id - 1];
        let mut child = host.child.lock().unwrap();
        assert!(child.is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))
            .unwrap();
        host.ready.store(false, Ordering::SeqCst);
        let spawned = Lan::command_in(
            &self.lan.hosts[id - 1],
            Path::new(env!("CARGO_BIN_EXE_raftlm")),
        )
        .args(["server", "--config"])
        .arg(self.config(id))
        .current_dir(self.dir.path())
        .env("RAFTLM_LOG", "info,openraft=warn")
        .env("NOTIFY_SOCKET", self.notify_socket(id))
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        // Its own process group: the harness kills the whole group, as
        // systemd kills the unit's cgroup (an up script included).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
        *child = Some(spawned);
    }

    /// Starts all three nodes.
    pub fn start_all(&self) {
        for id in 1..=3 {
            self.start(id);
        }
    }

    /// Whether node `id`'s process runs (the watchdog may have killed it).
    pub fn running(&self, id: usize) -> bool {
        self.hosts[id - 1].child.lock().unwrap().is_some()
    }

    /// `kill -9` of node `id`'s process group, then the unit's ExecStopPost.
    pub fn kill(&self, id: usize) {
        end(id, &self.hosts[id - 1], &self.lan, "KILL", &self.events);
    }

    /// SIGTERM to node `id`; waits for it to exit (up to 20 s, the unit's
    /// TimeoutStopSec, then SIGKILL), then the unit's ExecStopPost.
    pub fn terminate(&self, id: usize) {
        end(id, &self.hosts[id - 1], &self.lan, "TERM", &self.events);
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to node `id`'s process. After
    /// `TERM` the watchdog is off, as systemd's is while a unit stops.
    pub fn signal(&self, id: usize, signal: &str) {
        if signal == "TERM" {
            self.hosts[id - 1].ready.store(false, Ordering::SeqCst);
        }
        if let Some(child) = self.hosts[id - 1].child.lock().unwrap().as_ref() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// The log of node `id` so far.
    pub fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// All logs and host events, for failure messages.
    pub fn logs(&self) -> String {
        let mut text: String = (1..=3)
            .map(|id| format!("--- node {id} ---\n{}", self.log(id)))
            .collect();
        for event in self.events.lock().unwrap().iter() {
            text.push_str(&format!(
                "host {} at {:?}: {}\n",
                event.host,
                event.at - self.epoch,
                event.what
            ));
        }
        text
    }

    /// The host events so far.
    pub fn host_events(&self) -> Vec<HostEvent> {
        self.events.lock().unwrap().clone()
    }

    /// `raftlm ARGS` run in the client namespace with the test CA, the
    /// administrator certificate and the cluster's TLS name.
    pub fn client_command(&self) -> Command {
        let (cert, key) = super::tls().admin();
        let mut command =
            Lan::command_in(&self.lan.client, Path::new(env!("CARGO_BIN_EXE_raftlm")));
        command
            .env("RAFTLM_CA", super::tls().ca())
            .env("RAFTLM_CERT", cert)
            .env("RAFTLM_KEY", key)
            .env("RAFTLM_TLS_NAME", super::CLUSTER)
            .env("RAFTLM_SERVER", format!("{VIP}:{PORT}"))
            .env_remove("RAFTLM_PLAINTEXT")
            .current_dir(self.dir.path());
        command
    }

    /// `raftlm status --json` through the access point from the client
    /// namespace; `None` if nothing answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        let output = self
            .client_command()
            .args(["status", "--json"])
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// The active node answering on the access point from the client
    /// namespace, waiting up to `limit`; optionally not `not`.
    pub fn wait_active(&self, limit: Duration, not: Option<usize>) -> (usize, serde_json::Value) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.status() {
                let active = status["active_node"].as_u64().unwrap_or(0) as usize;
                if active != 0 && Some(active) != not {
                    return (active, status);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no active node (other than {not:?}) on the access point within {limit:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for id in 1..=3 {
            let host = &self.hosts[id - 1];
            if let Some(mut child) = host.child.lock().unwrap().take() {
                let group = format!("-{}", child.id());
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &group])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for watchdog in self.watchdogs.drain(..) {
            let _ = watchdog.join();
        }
    }
}

/// Ends node `id` with `signal` and plays ExecStopPost.
fn end(id: usize, host: &Host, lan: &Lan, signal: &str, events: &Mutex<Vec<HostEvent>>) {
    let Some(mut child) = host.child.lock().unwrap().take() else {
        return;
    };
    host.ready.store(false, Ordering::SeqCst);
    if signal == "TERM" {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The whole group (SIGKILL also ends a stopped process).
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    exec_stop_post(id, lan);
    events.lock().unwrap().push(HostEvent {
        at: Instant::now(),
        host: id,
        what: format!("SIG{signal}, then ExecStopPost"),
    });
}

/// The unit's `ExecStopPost=`: the shipped vip-down in the host's namespace.
fn exec_stop_post(id: usize, lan: &Lan) {
    let _ = Lan::command_in(&lan.hosts[id - 1], &example("vip-down"))
        .args([VIP, "24", "eth0"])
        .status();
}

/// systemd's side of `WatchdogSec=` for host `id`: armed by READY=1, it
/// kills a node that sent no WATCHDOG=1 for [`WATCHDOG`].
fn watchdog(
    id: usize,
    socket: &UnixDatagram,
    host: &Host,
    stop: &AtomicBool,
    events: &Mutex<Vec<HostEvent>>,
    lan: &Lan,
    epoch: Instant,
) {
    let mut buffer = [0u8; 256];
    while !stop.load(Ordering::SeqCst) {
        let now_ms = || epoch.elapsed().as_millis() as u64;
        if let Ok(n) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]);
            for line in text.lines() {
                match line {
                    "READY=1" => {
                        host.last_ping_ms.store(now_ms(), Ordering::SeqCst);
                        host.ready.store(true, Ordering::SeqCst);
                    }
                    "WATCHDOG=1" => host.last_ping_ms.store(now_ms(), Ordering::SeqCst),
                    // systemd stops the watchdog once a unit is stopping.
                    "STOPPING=1" => host.ready.store(false, Ordering::SeqCst),
                    _ => {}
                }
            }
        }
        let silent_ms = now_ms().saturating_sub(host.last_ping_ms.load(Ordering::SeqCst));
        if host.ready.load(Ordering::SeqCst) && silent_ms > WATCHDOG.as_millis() as u64 {
            // A process that ended by itself is no watchdog case: systemd
            // sees the exit and runs ExecStopPost.
            let exited = {
                let mut child = host.child.lock().unwrap();
                let ended = child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if ended {
                    child.take();
                    host.ready.store(false, Ordering::SeqCst);
                }
                ended
            };
            if exited {
                exec_stop_post(id, lan);
                events.lock().unwrap().push(HostEvent {
                    at: Instant::now(),
                    host: id,
                    what: "exited, then ExecStopPost".into(),
                });
                continue;
            }
            end(id, host, lan, "KILL", events);
            events.lock().unwrap().push(HostEvent {
                at: Instant::now(),
                host: id,
                what: format!("watchdog: no WATCHDOG=1 for {silent_ms} ms"),
            });
        }
    }
}

/// What the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    /// Samples taken.
    pub samples: u64,
    /// Each change of the set of hosts (with their link up) holding the
    /// access point's address: (ms since the sampler started, holders).
    pub moves: Vec<(u64, BTreeSet<usize>)>,
    /// Each change of the host the client's neighbour entry points to.
    pub neighbour: Vec<(u64, Option<usize>)>,
    /// The longest time two or more hosts held the address at once (from
    /// the first sample that saw it to the first that did not).
    pub longest_double: Duration,
    /// The longest time the client's neighbour entry pointed to a host
    /// other than the single holder of the address (a stale ARP view).
    pub longest_stale_neighbour: Duration,
    /// The longest gap between two samples, the sampler's resolution.
    pub longest_gap: Duration,
}

/// Samples every host's addresses and the client's neighbour entry for the
/// access point every `period`, until dropped or [`Sampler::finish`]ed.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Sampled>>,
}

impl Sampler {
    /// Starts sampling `lan`.
    pub fn start(lan: Arc<Lan>, period: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || sample(&lan, period, &flag));
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns what was seen.
    pub fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sample(lan: &Lan, period: Duration, stop: &AtomicBool) -> Sampled {
    let start = Instant::now();
    let needle = format!(" {VIP}/");
    let mut seen = Sampled::default();
    let mut holders: Option<BTreeSet<usize>> = None;
    let mut neighbour: Option<Option<usize>> = None;
    let mut double_since: Option<Instant> = None;
    let mut stale_since: Option<Instant> = None;
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now_holders: BTreeSet<usize> = (1..=3)
            .filter(|&id| {
                lan.links[id - 1].load(Ordering::SeqCst)
                    && ip_output(&[
                        "-n",
                        &lan.hosts[id - 1],
                        "-4",
                        "-o",
                        "addr",
                        "show",
                        "dev",
                        "eth0",
                    ])
                    .contains(&needle)
            })
            .collect();
        let neigh = ip_output(&["-n", &lan.client, "neigh", "show", VIP]);
        let now_neighbour = lan
            .macs
            .iter()
            .position(|mac| !mac.is_empty() && neigh.contains(mac.as_str()))
            .map(|i| i + 1);
        let now = Instant::now();
        let ms = (now - start).as_millis() as u64;
        seen.samples += 1;
        seen.longest_gap = seen.longest_gap.max(now - last);
        last = now;
        if holders.as_ref() != Some(&now_holders) {
            seen.moves.push((ms, now_holders.clone()));
        }
        if neighbour != Some(now_neighbour) {
            seen.neighbour.push((ms, now_neighbour));
            neighbour = Some(now_neighbour);
        }
        match (now_holders.len() >= 2, double_since) {
            (true, None) => double_since = Some(now),
            (false, Some(since)) => {
                seen.longest_double = seen.longest_double.max(now - since);
                double_since = None;
            }
            _ => {}
        }
        let stale = now_holders.len() == 1
            && now_neighbour.is_some_and(|host| !now_holders.contains(&host));
        match (stale, stale_since) {
            (true, None) => stale_since = Some(now),
            (false, Some(since)) => {
                seen.longest_stale_neighbour = seen.longest_stale_neighbour.max(now - since);
                stale_since = None;
            }
            _ => {}
        }
        holders = Some(now_holders);
        std::thread::sleep(period);
    }
    if let Some(since) = double_since {
        seen.longest_double = seen.longest_double.max(since.elapsed());
    }
    seen
}
