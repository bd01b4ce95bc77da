//! `raftlm checkout` never leaves a seat held when it exits: stopped by
//! SIGINT, SIGTERM or SIGHUP at any moment — before its check-out is sent,
//! while it is in flight, while the seat is held — it checks in whatever it
//! was or will be granted and exits 130, 143 or 129; and a grant it refuses
//! as untrusted (`--vendor-key`) is checked in before it exits 1. The session
//! TTL is a minute, so a seat freed by the cluster's expiry cannot pass for
//! one checked in: the seats are counted at once after each exit. When no
//! answer comes at all, the wait is bounded and the cluster frees the seat at
//! the end of the (then short) TTL.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::{ProcessCluster, status};
use rand::Rng;

/// Session TTL of the test cluster: far longer than the test, so that no
/// seat is freed by expiry while it runs.
const TTL_MS: u64 = 60_000;
/// Check-outs stopped by a signal.
const TRIES: usize = 30;
/// Longest a `raftlm checkout` may take to exit after its signal: its own
/// bound on the check-in (`CHECKIN_ON_EXIT_TIMEOUT`, 10 s) and some slack.
const EXIT_LIMIT: Duration = Duration::from_secs(15);
/// The log line `raftlm checkout` writes (at debug level) as its check-out
/// is sent; some tries signal as soon as it appears.
const SENDING: &str = "sending a check-out";

/// How long after an exit the seats are counted again, to catch a check-out
/// the command left in flight that the cluster granted after it exited.
const SETTLE: Duration = Duration::from_millis(200);

/// The signals tried, with the exit code each must give.
const SIGNALS: [(libc::c_int, &str, i32); 3] = [
    (libc::SIGINT, "SIGINT", 130),
    (libc::SIGTERM, "SIGTERM", 143),
    (libc::SIGHUP, "SIGHUP", 129),
];

/// Seats of `cad` in use and grants held, as the active node reports them.
async fn seats_held(cluster: &ProcessCluster) -> (u32, usize) {
    for _ in 0..50 {
        if let Some(reply) = status(&cluster.access_point).await {
            let in_use = reply
                .features
                .iter()
                .filter(|f| f.feature == "cad")
                .map(|f| f.in_use)
                .sum();
            return (in_use, reply.grants.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster does not answer Status\n{}", cluster.logs());
}

/// A running `raftlm checkout` whose stderr lines arrive on a channel.
struct Run {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Run {
    fn start(cluster: &ProcessCluster, extra: &[&str]) -> Run {
        use std::os::unix::process::CommandExt;
        let mut command = common::process::raftlm_command();
        command
            .args(["checkout", "cad", "--server", &cluster.access_point])
            .args(extra)
            .env("RAFTLM_LOG", "error,raftlm::client::session=debug")
            .current_dir(cluster.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The command keeps a signal it was started with ignored (as under
        // nohup, which a test runner may itself run under): start it with
        // the three signals at their defaults, as from a terminal.
        // SAFETY: signal(2) is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                for number in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                    libc::signal(number, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let (sender, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Run { child, stderr }
    }

    /// Closes the reading end of the command's stdout, as a terminal that
    /// went away: its writes fail from now on.
    fn close_stdout(&mut self) {
        drop(self.child.stdout.take());
    }

    fn signal(&self, number: libc::c_int) {
        // SAFETY: kill(2) with the pid of a child not yet reaped and a valid signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, number);
        }
    }

    /// Waits for a stderr line containing `text`, keeping the lines read in
    /// `seen`; false if the process's stderr ended or `limit` passed first.
    fn wait_for(&self, text: &str, limit: Duration, seen: &mut Vec<String>) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Waits for the exit (killing the process after `EXIT_LIMIT`); returns
    /// its status, stdout and the rest of stderr.
    fn finish(mut self, mut stderr: Vec<String>) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + EXIT_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                stderr.extend(self.stderr.try_iter());
                panic!(
                    "raftlm checkout did not exit within {EXIT_LIMIT:?} ({status}); stderr:\n{}",
                    stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut stdout = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            let _ = pipe.read_to_string(&mut stdout);
        }
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(1)) {
            stderr.push(line);
        }
        (status, stdout, stderr.join("\n"))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// SIGINT, SIGTERM and SIGHUP at random moments: before the check-out is sent,
// while it is in flight (some tries signal as soon as the command logs that
// it sends it), while the seat is held, while a short hold checks in; some
// SIGHUPs with stdout closed, as when the terminal goes away. After
// every exit no seat is held, long before the session TTL, and the exit code
// is the signal's (or 0 when the hold had ended first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_at_any_moment_leaves_no_seat_held() {
    // More seats than tries: a try that leaves its seat held does not stop the next.
    let mut cluster = ProcessCluster::new(&[("cad", 100)]);
    cluster.tune_all(|config| config.timing.session_ttl_ms = TTL_MS);
    cluster.start_all();
    cluster.wait_licensed().await;
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let (mut before, mut in_flight, mut held, mut finished, mut unhandled) = (0, 0, 0, 0, 0);
    let mut terminal_gone = 0;
    // Every try runs; what went wrong in each is reported together at the end.
    let mut problems: Vec<String> = Vec::new();
    let mut leaked = 0;
    let mut baseline = (0, 0);
    for i in 0..TRIES {
        let (number, name, code) = SIGNALS[i % SIGNALS.len()];
        let hold = if i % 4 == 3 { "150ms" } else { "forever" };
        let mut run = Run::start(&cluster, &["--hold", hold]);
        let mut stderr = Vec::new();
        let moment = if i % 4 == 1 {
            // As the check-out goes out: it is in flight when the signal lands.
            assert!(
                run.wait_for(SENDING, EXIT_LIMIT, &mut stderr),
                "try {i}: no {SENDING:?} line: {stderr:#?}"
            );
            "as the check-out was sent".to_string()
        } else {
            // Early tries cluster around the request; the rest spread over the hold.
            let ms = if i % 2 == 0 {
                rng.gen_range(0..60)
            } else {
                rng.gen_range(0..400)
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("after {ms} ms")
        };
        // Half the SIGHUPs come with the terminal gone.
        let gone = i % 6 == 5;
        if gone {
            run.close_stdout();
        }
        run.signal(number);
        let (exit, stdout, stderr) = run.finish(stderr);
        let gone_text = if gone { " with stdout closed" } else { "" };
        let what = format!(
            "try {i}: {name}{gone_text} {moment}, --hold {hold}: {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        // At once: checked in before the command exited. After SETTLE: no
        // check-out the command left in flight was granted later.
        // Seats a failed try leaves stay held for the rest of the test (the
        // TTL is longer), so each try is judged against those before it.
        let at_exit = seats_held(&cluster).await;
        tokio::time::sleep(SETTLE).await;
        let settled = seats_held(&cluster).await;
        if at_exit != baseline || settled != baseline {
            leaked += 1;
            problems.push(format!(
                "seats in use and grants held before {baseline:?}, at exit {at_exit:?}, \
                 {SETTLE:?} later {settled:?} ({what})"
            ));
            baseline = settled;
        }
        use std::os::unix::process::ExitStatusExt;
        match (exit.code(), exit.signal()) {
            (Some(0), _) => {
                // The hold ended and the seat was checked in before the signal.
                if hold != "150ms" || !(gone || stdout.contains("checked in 1 seat(s)")) {
                    problems.push(format!("exit 0 without a finished hold ({what})"));
                }
                finished += 1;
            }
            (Some(exit_code), _) => {
                if exit_code != code {
                    problems.push(format!("exit code {exit_code}, not {code} ({what})"));
                }
                if gone {
                    // What it printed is lost with the terminal.
                    terminal_gone += 1;
                } else if stdout.contains("checked out 1 seat") {
                    held += 1;
                } else if stdout.contains("while the check-out was in flight") {
                    in_flight += 1;
                } else if stderr.contains("before any seat was asked for") {
                    before += 1;
                } else {
                    problems.push(format!("no account of what was stopped ({what})"));
                }
            }
            (None, Some(signal)) => {
                // Only before the handlers exist, in the process's first
                // moments, when it has sent nothing.
                if signal != number || stderr.contains(SENDING) {
                    problems.push(format!("ended by the signal, not by the command ({what})"));
                }
                unhandled += 1;
            }
            (None, None) => problems.push(format!("no exit status ({what})")),
        }
    }
    eprintln!(
        "{TRIES} tries in {:?}: stopped before the request {before}, during it {in_flight}, \
         while holding {held}, at a moment unknown with stdout closed {terminal_gone}; \
         ended before the signal {finished}; ended by the signal \
         before its handler was installed {unhandled}; left a seat held {leaked}",
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "{} of {TRIES} tries went wrong ({leaked} left a seat held):\n{}\n{}",
        problems.len(),
        problems.join("\n\n"),
        cluster.logs()
    );
    assert!(
        in_flight > 0,
        "no signal landed while a check-out was in flight"
    );
    assert!(held > 0, "no signal landed while a seat was held");
}

// A grant refused as untrusted (its line is not signed by the `--vendor-key`
// given) is checked in before the command exits 1: the seats are free the
// moment it has exited. The vendor's own key is accepted, and that grant is
// checked in too at the end of its hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_grant_is_checked_in_before_the_command_exits() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.tune_all(|config| config.timing.session_ttl_ms = TTL_MS);
    cluster.start_all();
    cluster.wait_licensed().await;
    let other = raftlm::license::signature::VendorSigningKey::generate(Some("acme"));
    let other_pub = cluster.dir.path().join("other.pub");
    std::fs::write(&other_pub, other.public_key().to_file_text()).unwrap();
    let other_pub = other_pub.to_str().unwrap().to_string();
    let own_pub = cluster.dir.path().join("acme.pub");
    let own_pub = own_pub.to_str().unwrap().to_string();

    for i in 0..6 {
        let run = Run::start(&cluster, &["--vendor-key", &other_pub, "--hold", "1s"]);
        let (exit, stdout, stderr) = run.finish(Vec::new());
        let what = format!("try {i}: {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert_eq!(exit.code(), Some(1), "{what}");
        assert!(
            stderr.contains("is not signed by the vendor's key"),
            "{what}"
        );
        assert_eq!(
            seats_held(&cluster).await,
            (0, 0),
            "the refused grant's seat is still held ({what})\n{}",
            cluster.logs()
        );
    }

    let run = Run::start(&cluster, &["--vendor-key", &own_pub, "--hold", "0s"]);
    let (exit, stdout, stderr) = run.finish(Vec::new());
    let what = format!("{exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(exit.code(), Some(0), "{what}");
    assert!(stdout.contains("checked in 1 seat(s)"), "{what}");
    assert_eq!(seats_held(&cluster).await, (0, 0), "{what}");
}

// When no answer comes (every node is stopped right after the check-out is
// sent), the command waits `CHECKIN_ON_EXIT_TIMEOUT` (10 s), not longer, then
// exits 130 saying the check-in was not confirmed; its session has stopped
// heartbeating, so the cluster, once running again, frees whatever it granted
// at the end of the session TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_never_comes_is_waited_for_a_bounded_time() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.tune_all(|config| config.timing.session_ttl_ms = 3000);
    cluster.start_all();
    cluster.wait_licensed().await;
    let run = Run::start(&cluster, &["--hold", "forever"]);
    let mut stderr = Vec::new();
    assert!(
        run.wait_for(SENDING, EXIT_LIMIT, &mut stderr),
        "no {SENDING:?} line: {stderr:#?}"
    );
    for id in 1..=3 {
        cluster.signal(id, libc::SIGSTOP);
    }
    let signalled = Instant::now();
    run.signal(libc::SIGINT);
    let (exit, stdout, stderr) = run.finish(stderr);
    let waited = signalled.elapsed();
    for id in 1..=3 {
        cluster.signal(id, libc::SIGCONT);
    }
    let what = format!("{exit} after {waited:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(exit.code(), Some(130), "{what}");
    assert!(
        stderr.contains("the check-in was not confirmed within 10s"),
        "{what}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(13),
        "{what}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while seats_held(&cluster).await != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "the silent session's seat was not freed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
