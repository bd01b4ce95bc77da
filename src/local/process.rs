//! `raftlm server` processes of a local cluster: start, signal, kill and
//! reap them, and read their logs.
//!
//! [`Processes`] runs node `i + 1` (index `i`) as `BINARY server --config
//! FILE` in the cluster's directory, its stderr appended to `node{id}.log`
//! there, with the environment set for it ([`Processes::set_env`]: the log
//! filter, the fault-injection clock file and breaks). A caller that must
//! run the process some other way (in another network namespace) passes its
//! own [`Command`] to [`Processes::start_with`].
//!
//! Process control is synchronous (`std::process`): a kill is immediate and
//! a reap with a deadline polls, so the same calls serve tests, the chaos
//! harness and the asynchronous `raftlm demo` and `raftlm bench`.
//!
//! No child outlives its launcher: each is started with `PR_SET_PDEATHSIG =
//! SIGKILL` (it dies with its parent even if that is killed with SIGKILL),
//! and dropping [`Processes`] continues a stopped child and kills and reaps
//! every one. The kernel sends the parent-death signal when the *thread*
//! that started the child ends: start nodes from a thread that lives as
//! long as they should (the main or test thread, a runtime's `block_on`),
//! not from a blocking-pool thread that may retire.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a reap with a deadline looks whether the process ended.
pub const REAP_POLL: Duration = Duration::from_millis(20);

/// The log filter (`RAFTLM_LOG`) local nodes run with unless told otherwise:
/// the node's own events, openraft's warnings only.
pub const LOG_FILTER: &str = "info,openraft=warn";

/// The environment variable naming the file a fault-injection build reads
/// its wall-clock offset from (`src/clock.rs`).
pub const ENV_FAULT_CLOCK_FILE: &str = "RAFTLM_FAULT_CLOCK_FILE";

/// The environment variable naming what a fault-injection build breaks
/// (`src/fault.rs`).
pub const ENV_FAULT_BREAK: &str = "RAFTLM_FAULT_BREAK";
/// The environment variable naming where a fault-injection build exits on
/// purpose (`src/fault.rs`, `ExitPoint`).
pub const ENV_FAULT_EXIT: &str = "RAFTLM_FAULT_EXIT";

/// The environment variable of the log filter.
pub const ENV_LOG: &str = "RAFTLM_LOG";

struct Slot {
    config: PathBuf,
    log: PathBuf,
    /// Variables set (`Some`) or removed (`None`) for this node.
    env: Vec<(OsString, Option<OsString>)>,
    child: Option<Child>,
    stopped: bool,
}

/// A local cluster's node processes.
pub struct Processes {
    binary: PathBuf,
    dir: PathBuf,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for Processes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processes")
            .field("binary", &self.binary)
            .field("dir", &self.dir)
            .field(
                "pids",
                &(0..self.len()).map(|i| self.pid(i)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Processes {
    /// Processes of `binary` for the config files `configs` (node `i + 1`
    /// at index `i`), run in `dir` with logs `dir/node{i+1}.log`. Nothing
    /// runs yet.
    pub fn new(binary: &Path, dir: &Path, configs: &[PathBuf]) -> Processes {
        let slots = configs
            .iter()
            .enumerate()
            .map(|(i, config)| Slot {
                config: config.clone(),
                log: dir.join(format!("node{}.log", i + 1)),
                env: Vec::new(),
                child: None,
                stopped: false,
            })
            .collect();
        Processes {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            slots,
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The binary the nodes run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Runs the nodes from `binary` from their next start on.
    pub fn set_binary(&mut self, binary: &Path) {
        self.binary = binary.to_path_buf();
    }

    /// Sets `key` to `value` in node `i`'s environment (`None`: removes it)
    /// from its next start on.
    pub fn set_env(&mut self, i: usize, key: &str, value: Option<&std::ffi::OsStr>) {
        let env = &mut self.slots[i].env;
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.map(Into::into)));
    }

    /// [`set_env`](Self::set_env) for every node.
    pub fn set_env_all(&mut self, key: &str, value: Option<&std::ffi::OsStr>) {
        for i in 0..self.len() {
            self.set_env(i, key, value);
        }
    }

    /// Node `i`'s config file.
    pub fn config(&self, i: usize) -> &Path {
        &self.slots[i].config
    }

    /// Node `i`'s log file.
    pub fn log_file(&self, i: usize) -> &Path {
        &self.slots[i].log
    }

    /// The command line that starts node `i` by hand.
    pub fn start_command(&self, i: usize) -> String {
        format!(
            "{} server --config {}",
            self.binary.display(),
            self.slots[i].config.display()
        )
    }

    /// A plain command of the nodes' binary, for [`start_with`](Self::start_with).
    pub fn command(&self) -> Command {
        Command::new(&self.binary)
    }

    /// Starts node `i`; an error if it runs already or cannot be started.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        let command = self.command();
        self.start_with(i, command)
    }

    /// Starts node `i` with `command` (the binary, or a wrapper that runs
    /// it): the launcher adds `server --config FILE`, the directory, the
    /// node's environment, its log, and the parent-death signal.
    pub fn start_with(&mut self, i: usize, command: Command) -> std::io::Result<()> {
        self.spawn(i, command, &[])
    }

    /// Starts node `i` with `args` after `server --config FILE` (for example
    /// `--join`, a new node that waits to be added to the cluster).
    pub fn start_with_args(&mut self, i: usize, args: &[&str]) -> std::io::Result<()> {
        let command = self.command();
        self.spawn(i, command, args)
    }

    fn spawn(&mut self, i: usize, mut command: Command, args: &[&str]) -> std::io::Result<()> {
        if self.slots[i].child.is_some() {
            return Err(std::io::Error::other(format!(
                "node {} runs already",
                i + 1
            )));
        }
        let slot = &self.slots[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)?;
        command
            .arg("server")
            .arg("--config")
            .arg(&slot.config)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &slot.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn()?;
        let slot = &mut self.slots[i];
        slot.child = Some(child);
        slot.stopped = false;
        Ok(())
    }

    /// Whether node `i` has a process that has not been reaped (it may have
    /// ended: see [`try_wait`](Self::try_wait)).
    pub fn running(&self, i: usize) -> bool {
        self.slots[i].child.is_some()
    }

    /// Whether node `i` was stopped with [`pause`](Self::pause).
    pub fn paused(&self, i: usize) -> bool {
        self.slots[i].stopped
    }

    /// Node `i`'s process id, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.slots[i].child.as_ref().map(Child::id)
    }

    /// Sends `signal` to node `i`, if it runs.
    pub fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// Stops node `i` with SIGSTOP.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.slots[i].stopped = self.running(i);
    }

    /// Continues node `i` with SIGCONT.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.slots[i].stopped = false;
    }

    /// Asks node `i` to stop with SIGTERM (a planned stop); see [`reap`](Self::reap).
    pub fn terminate(&mut self, i: usize) {
        self.resume(i);
        self.signal(i, libc::SIGTERM);
    }

    /// Kills node `i` with SIGKILL (continuing it first) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.take(i) {
            // SAFETY: kill(2) on a child we spawned and have not reaped: a
            // stopped process dies promptly only once continued.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Node `i`'s exit status if its process ended (it is then reaped and
    /// forgotten); `None` if it runs or there is none.
    pub fn try_wait(&mut self, i: usize) -> Option<std::io::Result<ExitStatus>> {
        let child = self.slots[i].child.as_mut()?;
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => {
                self.take(i);
                Some(Ok(status))
            }
            Err(error) => {
                self.take(i);
                Some(Err(error))
            }
        }
    }

    /// Waits up to `within` for node `i` to exit and returns its status;
    /// kills it when the time is up (`None`), and returns `None` as well if
    /// it does not run.
    pub fn reap(&mut self, i: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while self.running(i) {
            match self.try_wait(i) {
                Some(result) => return result.ok(),
                None if Instant::now() < deadline => std::thread::sleep(REAP_POLL),
                None => break,
            }
        }
        self.kill(i);
        None
    }

    /// Takes node `i`'s process out of the launcher (the caller ends it).
    pub fn take(&mut self, i: usize) -> Option<Child> {
        let slot = &mut self.slots[i];
        slot.stopped = false;
        slot.child.take()
    }

    /// Asks every node to stop with SIGTERM, waits up to `within` for each,
    /// and kills what is left.
    pub fn stop_all(&mut self, within: Duration) {
        for i in 0..self.len() {
            self.terminate(i);
        }
        for i in 0..self.len() {
            self.reap(i, within);
        }
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.slots[i].log).unwrap_or_default()
    }

    /// Every node's log, headed by its node, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.len())
            .map(|i| format!("--- node {} ---\n{}", i + 1, self.log(i)))
            .collect()
    }

    /// The last `lines` lines of every node's log, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        (0..self.len())
            .map(|i| {
                let text = self.log(i);
                let all: Vec<&str> = text.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!(
                    "--- n{} ({}) ---\n{tail}\n",
                    i + 1,
                    self.log_file(i).display()
                )
            })
            .collect()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
    }
}

/// Writes a wall-clock offset for a fault-injection build to `path` so that
/// a node never reads a half-written file.
pub fn write_clock_offset(path: &Path, offset_ms: i64) -> std::io::Result<()> {
    let temporary = path.with_extension("clock-new");
    std::fs::write(&temporary, offset_ms.to_string())?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for one test's logs.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "raftlm-process-{name}-{}-{}",
            std::process::id(),
            crate::clock::real_wall_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A child is killed and reaped when the launcher drops, even while stopped.
    #[test]
    fn drop_kills_a_stopped_child() {
        let dir = test_dir("drop");
        let config = dir.join("unused.toml");
        let mut processes = Processes::new(Path::new("/bin/sh"), &dir, &[config]);
        let mut command = Command::new("/bin/sh");
        // `server --config FILE` become the script's $0 and arguments.
        command.args(["-c", "sleep 600"]);
        processes.start_with(0, command).unwrap();
        let pid = processes.pid(0).unwrap() as libc::pid_t;
        processes.pause(0);
        assert!(processes.paused(0));
        drop(processes);
        // SAFETY: kill(2) with signal 0 only checks the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "process {pid} outlived its launcher");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A terminated child is reaped with its status within the deadline.
    #[test]
    fn reap_returns_the_exit_status() {
        let dir = test_dir("reap");
        let mut processes = Processes::new(Path::new("/bin/sh"), &dir, &[dir.join("x.toml")]);
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "exit 3"]);
        processes.start_with(0, command).unwrap();
        let status = processes.reap(0, Duration::from_secs(30)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(!processes.running(0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
