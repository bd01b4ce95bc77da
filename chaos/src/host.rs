//! The host's side of the access point in `--netns` runs: what systemd does
//! for a node under the shipped unit (`docs/examples/raftlm.service`), played
//! by the harness for each node host of the [`Lan`].
//!
//! - `ExecStopPost=`: after a node's process ended, for whatever reason
//!   (kill, power cut, SIGTERM, a crash, the watchdog), the shipped
//!   `vip-down` runs in the host's namespace and takes the access point's
//!   address off it. An address added with `ip addr` outlives the process
//!   that added it; this is what removes it.
//! - `WatchdogSec=` with `Type=notify`: each node gets a unix datagram
//!   socket as `NOTIFY_SOCKET` and [`WATCHDOG`] as `WATCHDOG_USEC`. Once it
//!   said `READY=1`, a node that sends no `WATCHDOG=1` for [`WATCHDOG`] (it
//!   is paused, or wedged) is killed with its process group and the address
//!   removed; `STOPPING=1` (or a SIGTERM from the harness) disarms it, as
//!   systemd does while a unit stops.
//! - `Restart=on-failure`, for watchdog kills only:
//!   [`crate::cluster::Cluster::supervise`] starts a node the watchdog killed
//!   again when the fault that made it silent ends (the unit's
//!   `RestartSec=2` is about as long). Every other end of a node process is
//!   the nemesis's doing, and the nemesis restarts it itself.
//!
//! A watchdog kill of a node the harness had not paused is no host's
//! business: the node stopped pinging while it ran (a wedged runtime, a
//! Raft core that failed), and the cluster records it as an exit the
//! harness did not cause.
//!
//! The watchdog threads kill by process id, under a lock the cluster also
//! takes to reap and to signal a process, and they run ExecStopPost under it
//! once the process has ended, so a pid is never signalled after it was
//! reaped and a node is never restarted before its ExecStopPost ran.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::lan::{self, Lan};

/// The emulated `WatchdogSec=`, as in `docs/examples/raftlm.service`.
pub const WATCHDOG: Duration = Duration::from_millis(300);

/// The shipped scripts, `docs/examples/vip-up` and `vip-down`.
pub fn example(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples")).join(name)
}

/// One host's unit state.
#[derive(Debug, Default)]
struct Unit {
    /// The node's process id (0: none). Taken to signal it or reap it.
    pid: Mutex<u32>,
    /// `READY=1` received since the last start, and not stopping.
    armed: AtomicBool,
    /// The last `READY=1` or `WATCHDOG=1`, ms since the hosts started.
    last_ping_ms: AtomicU64,
    /// The watchdog killed the current process (cleared when it is reaped).
    killed: AtomicBool,
    /// Until when (ms since the hosts started) a silence is the harness's
    /// doing: `u64::MAX` while it has the process stopped with SIGSTOP, and
    /// two watchdog periods after it continued it (the process needs a
    /// moment to ping again). 0: never paused.
    paused_until_ms: AtomicU64,
    /// `paused` when the watchdog killed it.
    killed_paused: AtomicBool,
    /// How long the killed process had been silent, ms.
    killed_silent_ms: AtomicU64,
}

/// The three hosts' units and their watchdog threads.
#[derive(Debug)]
pub struct Hosts {
    lan: Arc<Lan>,
    dir: PathBuf,
    units: Vec<Arc<Unit>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Watchdog kills so far.
    kills: Arc<AtomicU64>,
    /// ExecStopPost runs so far.
    stop_posts: Arc<AtomicU64>,
    /// When the hosts started: the watchdogs' clock.
    epoch: Instant,
    /// The host side is played (`false`: `--without-host-side`, no watchdog
    /// kills and no ExecStopPost, to show what they prevent).
    enabled: bool,
}

impl Hosts {
    /// Binds a notify socket per host in `dir` and starts the watchdogs.
    pub fn start(lan: Arc<Lan>, dir: &Path, enabled: bool) -> std::io::Result<Hosts> {
        let epoch = Instant::now();
        let mut hosts = Hosts {
            lan,
            dir: dir.to_path_buf(),
            units: (0..3).map(|_| Arc::new(Unit::default())).collect(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            kills: Arc::new(AtomicU64::new(0)),
            stop_posts: Arc::new(AtomicU64::new(0)),
            epoch,
            enabled,
        };
        for i in 0..hosts.units.len() {
            let path = hosts.notify_socket(i);
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path)?;
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            let unit = hosts.units[i].clone();
            let stop = hosts.stop.clone();
            let lan = hosts.lan.clone();
            let kills = hosts.kills.clone();
            let stop_posts = hosts.stop_posts.clone();
            hosts.threads.push(
                std::thread::Builder::new()
                    .name(format!("watchdog-h{}", i + 1))
                    .spawn(move || {
                        watchdog(
                            i,
                            &socket,
                            &unit,
                            &stop,
                            &lan,
                            epoch,
                            &kills,
                            &stop_posts,
                            enabled,
                        )
                    })?,
            );
        }
        Ok(hosts)
    }

    /// Node `i`'s `NOTIFY_SOCKET`.
    pub fn notify_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("notify{}", i + 1))
    }

    /// Node `i` was started as process `pid`; the watchdog waits for READY=1.
    pub fn started(&self, i: usize, pid: u32) {
        let unit = &self.units[i];
        let mut guard = unit.pid.lock().unwrap_or_else(|p| p.into_inner());
        unit.armed.store(false, Ordering::SeqCst);
        unit.killed.store(false, Ordering::SeqCst);
        unit.paused_until_ms.store(0, Ordering::SeqCst);
        *guard = pid;
    }

    /// The harness stopped (`true`) or continued node `i`'s process.
    pub fn set_paused(&self, i: usize, paused: bool) {
        let until = if paused {
            u64::MAX
        } else {
            self.epoch.elapsed().as_millis() as u64 + 2 * WATCHDOG.as_millis() as u64
        };
        self.units[i].paused_until_ms.store(until, Ordering::SeqCst);
    }

    /// Holds node `i`'s pid lock: the watchdog cannot signal the process
    /// while the caller reaps it. Set the pid to 0 once it is reaped.
    pub fn lock(&self, i: usize) -> MutexGuard<'_, u32> {
        self.units[i].pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Disarms node `i`'s watchdog until the next process's READY=1; call
    /// with its pid lock held, when the process is ended or has ended.
    pub fn disarm_locked(&self, i: usize, _pid: &MutexGuard<'_, u32>) {
        self.units[i].armed.store(false, Ordering::SeqCst);
    }

    /// Whether the watchdog killed node `i`'s current process, and if so
    /// whether the harness had it paused then and how long it had been
    /// silent (ms); clears it.
    pub fn take_killed(&self, i: usize) -> Option<(bool, u64)> {
        let unit = &self.units[i];
        unit.killed.swap(false, Ordering::SeqCst).then(|| {
            (
                unit.killed_paused.load(Ordering::SeqCst),
                unit.killed_silent_ms.load(Ordering::SeqCst),
            )
        })
    }

    /// The unit is stopping (a SIGTERM follows): no watchdog kill now.
    pub fn disarm(&self, i: usize) {
        self.units[i].armed.store(false, Ordering::SeqCst);
    }

    /// The unit's `ExecStopPost=` for node `i`: vip-down in its namespace.
    pub fn exec_stop_post(&self, i: usize) {
        if !self.enabled {
            return;
        }
        exec_stop_post(&self.lan, i, &self.stop_posts);
    }

    /// Watchdog kills so far.
    pub fn watchdog_kills(&self) -> u64 {
        self.kills.load(Ordering::SeqCst)
    }

    /// ExecStopPost runs so far.
    pub fn stop_posts(&self) -> u64 {
        self.stop_posts.load(Ordering::SeqCst)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Kills process group `pid` (and the process, should it have left it).
pub fn kill_group(pid: u32) {
    // SAFETY: kill(2) of a process the caller has not reaped (it holds the
    // pid lock or owns the child).
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Kills what is left of process group `pid` after its leader was reaped
/// (an up script's announcements). The group's id stays taken while it has
/// members, so this reaches no one else's.
pub fn kill_leftover_group(pid: u32) {
    // SAFETY: kill(2) of a process group; see above.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

fn exec_stop_post(lan: &Lan, i: usize, count: &AtomicU64) {
    count.fetch_add(1, Ordering::Relaxed);
    let _ = lan
        .command_on_host(i + 1, &example("vip-down"))
        .args([lan::VIP, &lan::PREFIX.to_string(), lan::INTERFACE])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether process `pid` has ended and waits to be reaped.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[allow(clippy::too_many_arguments)]
fn watchdog(
    i: usize,
    socket: &UnixDatagram,
    unit: &Unit,
    stop: &AtomicBool,
    lan: &Lan,
    epoch: Instant,
    kills: &AtomicU64,
    stop_posts: &AtomicU64,
    enabled: bool,
) {
    let mut buffer = [0u8; 512];
    let now_ms = || epoch.elapsed().as_millis() as u64;
    while !stop.load(Ordering::SeqCst) {
        if let Ok(n) = socket.recv(&mut buffer) {
            for line in String::from_utf8_lossy(&buffer[..n]).lines() {
                match line {
                    "READY=1" => {
                        unit.last_ping_ms.store(now_ms(), Ordering::SeqCst);
                        unit.armed.store(true, Ordering::SeqCst);
                    }
                    "WATCHDOG=1" => unit.last_ping_ms.store(now_ms(), Ordering::SeqCst),
                    "STOPPING=1" => unit.armed.store(false, Ordering::SeqCst),
                    _ => {}
                }
            }
        }
        let overdue = |unit: &Unit| {
            let silent = now_ms().saturating_sub(unit.last_ping_ms.load(Ordering::SeqCst));
            (unit.armed.load(Ordering::SeqCst) && silent > WATCHDOG.as_millis() as u64)
                .then_some(silent)
        };
        if !enabled || overdue(unit).is_none() {
            continue;
        }
        let pid = unit.pid.lock().unwrap_or_else(|p| p.into_inner());
        // Looked at again under the lock: a process started or ended since
        // has disarmed the unit.
        let Some(silent) = overdue(unit) else {
            continue;
        };
        unit.armed.store(false, Ordering::SeqCst);
        // A process that ended by itself is not the watchdog's: the cluster
        // reaps it, records the exit and runs ExecStopPost.
        if *pid == 0 || is_zombie(*pid) {
            continue;
        }
        let paused = now_ms() <= unit.paused_until_ms.load(Ordering::SeqCst);
        unit.killed_paused.store(paused, Ordering::SeqCst);
        unit.killed_silent_ms.store(silent, Ordering::SeqCst);
        unit.killed.store(true, Ordering::SeqCst);
        kill_group(*pid);
        // As systemd: ExecStopPost once the process is gone, and before
        // anything can start it again (the cluster starts it under this lock).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_zombie(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        kills.fetch_add(1, Ordering::Relaxed);
        exec_stop_post(lan, i, stop_posts);
        drop(pid);
    }
}

/// Starts `binary` in host `i`'s namespace as the unit would: its own
/// process group (systemd kills the unit's whole cgroup, an up script
/// included), the notify socket and the watchdog interval.
pub fn command(hosts: &Hosts, i: usize, binary: &Path) -> Command {
    let mut command = hosts.lan.command_on_host(i + 1, binary);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .env("NOTIFY_SOCKET", hosts.notify_socket(i))
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    // The state letter is read after the last parenthesis: a command name
    // may contain spaces and parentheses.
    #[test]
    fn only_an_ended_process_is_a_zombie() {
        assert!(!is_zombie(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_zombie(pid), "an exited, unreaped child is a zombie");
        child.wait().unwrap();
        assert!(!is_zombie(pid));
    }
}
