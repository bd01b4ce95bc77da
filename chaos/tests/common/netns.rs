//! A three-node cluster on a LAN in a box ([`raftlm_chaos::lan`], the one
//! `raftlm-chaos --netns` runs on) whose access point is a real address
//! moved by the shipped `docs/examples/vip-up` and `vip-down` scripts. Its
//! files are written by `raftlm::local::files`.
//!
//! The harness plays the host's side of the shipped systemd unit
//! (`docs/examples/raftlm.service`): `ExecStopPost` (vip-down in the host's
//! namespace) after a node's process ended, and the watchdog (a unix
//! datagram socket per host as `NOTIFY_SOCKET`, `WATCHDOG_USEC`; a node
//! silent for `WatchdogSec` is killed with its process group and the
//! address removed).
#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftlm::config::{AccessPoint, AccessPointMode};
use raftlm::local::files::{self, LOCAL_CLUSTER, LicenseFile, Plan, Security};
use raftlm::local::tls::ClusterTls;
use raftlm::tls::client::ClientTls;
pub use raftlm_chaos::host::example;
pub use raftlm_chaos::lan::*;

/// The harness's `WatchdogSec`, as in `docs/examples/raftlm.service`.
pub const WATCHDOG: Duration = Duration::from_millis(300);

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
    /// The cluster's certificates.
    pub tls: ClusterTls,
    /// How a client dials the cluster (by its name: any address works).
    pub client_tls: ClientTls,
    /// The `raftlm` binary the nodes and the client commands run.
    binary: PathBuf,
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
        let addresses: Vec<String> = (1..=3).map(|i| format!("{}:{PORT}", host_ip(i))).collect();
        let peers: Vec<String> = (1..=3)
            .map(|i| format!("{}:{PEER_PORT}", host_ip(i)))
            .collect();
        let mut plan = Plan::new(dir.path(), files::nodes_at(&addresses, &peers));
        plan.licenses = vec![LicenseFile::features("acme.lic", LOCAL_CLUSTER, features)];
        plan.security = Security::Tls {
            sans: vec![VIP.to_string()],
        };
        let script = |name: &str| -> Vec<String> {
            vec![
                example(name).display().to_string(),
                "{ip}".into(),
                "{prefix}".into(),
                "{interface}".into(),
            ]
        };
        plan.access_point = AccessPoint {
            mode: AccessPointMode::Command,
            address: format!("{VIP}:{PORT}").parse().unwrap(),
            prefix: 24,
            interface: "eth0".into(),
            up: script("vip-up"),
            down: script("vip-down"),
        };
        let written = plan.write().unwrap();
        let tls = written.tls.expect("the cluster runs with TLS");
        let client_tls = written.client_tls.with_server_name(LOCAL_CLUSTER);
        let key = written.key;
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
            tls,
            client_tls,
            binary: super::raftlm_binary(),
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
        let spawned = Lan::command_in(&self.lan.hosts[id - 1], &self.binary)
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
        let (cert, key) = self.tls.admin();
        let mut command = Lan::command_in(&self.lan.client, &self.binary);
        command
            .env("RAFTLM_CA", self.tls.ca())
            .env("RAFTLM_CERT", cert)
            .env("RAFTLM_KEY", key)
            .env("RAFTLM_TLS_NAME", LOCAL_CLUSTER)
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
