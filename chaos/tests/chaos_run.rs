//! Fixed-seed chaos runs against the debug `raftlm` binary: about 60 s of
//! every fault type but power cuts (clock jumps included), 45 s of power cuts mixed with
//! kills and pauses, 30 s of kills, pauses and partitions on five nodes with
//! up to two of them down at once, and 40 s of kills, pauses, partitions and
//! power cuts on a LAN in a box (`--netns`), under the recorded workload, and
//! not one violation.
//!
//! Then three runs with a part of raftlm broken on purpose (`--break`), each
//! of which must be caught by the invariant that guards that part.
//!
//! How the binaries are found: the harness is `CARGO_BIN_EXE_raftlm-chaos`
//! (cargo builds it for this test). The `raftlm` binary under test is built
//! with the test-only feature fault-injection (the clock fault and the
//! breaks need it) into a target directory of its own, `fault-injection/`
//! inside the harness's (`cargo build -p raftlm --bin raftlm --features
//! fault-injection --target-dir …`, a no-op when it is fresh): a workspace
//! build never enables the feature, so no `target/debug/raftlm` or
//! `target/release/raftlm` has it.
//!
//! Bounded: the harness runs as a child process that is killed if the test
//! panics or the run exceeds its time limit; the harness kills its nodes on
//! exit (and they die with it through `PR_SET_PDEATHSIG`); the run directory
//! is a temporary directory removed on success and kept, with its path
//! printed, on failure. Everything listens on 127.0.0.0/8, or, in the
//! `--netns` run, inside namespaces the harness made and deletes.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::raftlm_binary;

/// The seed of the fixed run.
const SEED: &str = "20240611";
/// Fault-injection time.
const DURATION: &str = "60s";
/// The whole run (start-up, faults, final kill-all, checks) must end within this.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The seed of the power-cut run.
const POWER_SEED: &str = "20261201";
/// Fault-injection time of the power-cut run.
const POWER_DURATION: &str = "45s";

/// The seed of the five-node run.
const FIVE_SEED: &str = "20261208";
/// Fault-injection time of the five-node run.
const FIVE_DURATION: &str = "30s";

/// The seed of the LAN-in-a-box run.
const NETNS_SEED: &str = "1";
/// Fault-injection time of the LAN-in-a-box run.
const NETNS_DURATION: &str = "40s";

/// Kills the harness if the test ends early, and detaches any power-cut
/// filesystem it left mounted under the run's directory (a killed harness
/// no longer serves them).
struct Harness {
    child: Child,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        raftlm_chaos::powerfs::detach_all_under(&self.dir);
    }
}

/// One finished harness run: its exit status and JSON report, and what to
/// keep if the test fails.
struct Finished {
    status: std::process::ExitStatus,
    report: serde_json::Value,
    harness: Harness,
    work: tempfile::TempDir,
}

impl Finished {
    /// Fails the test with `why`, keeping the run directory.
    fn fail(self, why: String) -> ! {
        drop(self.harness);
        let kept = self.work.keep();
        panic!("{why}; run directory kept at {}", kept.display());
    }

    /// The report's entry for invariant `name`.
    fn invariant(&self, name: &str) -> &serde_json::Value {
        self.report["invariants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("the report has no invariant {name}"))
    }
}

/// Runs the harness with `faults` for `duration` (and `extra` options) to
/// its end and reads its report.
fn run_harness(seed: &str, duration: &str, faults: &str, extra: &[&str]) -> Finished {
    // One run at a time: two clusters and their loads on a small machine
    // would measure the machine, not raftlm.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let binary = raftlm_binary();
    let work = tempfile::Builder::new()
        .prefix("raftlm-chaos-test-")
        .tempdir()
        .unwrap();
    let run_dir = work.path().join("run");
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftlm-chaos"));
    command
        .args(["--seed", seed, "--duration", duration, "--json"])
        .args(["--faults", faults])
        .args(extra)
        .arg("--binary")
        .arg(&binary)
        .arg("--keep")
        .arg(&run_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe; the harness dies with this test's thread.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut harness = Harness {
        child: command.spawn().expect("cannot start raftlm-chaos"),
        dir: work.path().to_path_buf(),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = harness.child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            drop(harness);
            let kept = work.keep();
            panic!(
                "the chaos run took longer than {RUN_LIMIT:?}; its directory is kept at {}",
                kept.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(harness.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    match serde_json::from_str(stdout.trim()) {
        Ok(report) => Finished {
            status,
            report,
            harness,
            work,
        },
        Err(error) => {
            drop(harness);
            let kept = work.keep();
            panic!(
                "raftlm-chaos exited with {status} without a JSON report ({error}); run directory kept at {}\n{stdout}",
                kept.display()
            );
        }
    }
}

/// Runs the harness with `faults` for `duration`, and fails the test unless
/// every invariant held, every type in `must_inject` was injected and grants
/// were made. Returns the JSON report.
fn run_chaos(
    seed: &str,
    duration: &str,
    faults: &str,
    must_inject: &[&str],
    extra: &[&str],
) -> serde_json::Value {
    let run = run_harness(seed, duration, faults, extra);
    let report = &run.report;
    let failed: Vec<&serde_json::Value> = report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["passed"] != true)
        .collect();
    let faults = &report["faults"];
    let count = |prefix: &str| -> u64 {
        faults
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k == prefix || k.starts_with(&format!("{prefix}/")))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    };
    let missing: Vec<&str> = must_inject
        .iter()
        .copied()
        .filter(|k| count(k) == 0)
        .collect();
    let granted = report["operations"]["checkout"]["ok"].as_u64().unwrap_or(0);
    // The newer invariants must have looked at something: denials, tokens
    // quoted but not held, node processes, the drain read, the log ids
    // the nodes share after the final restart.
    let idle: Vec<&str> = [
        "no-impossible-answer",
        "renewal-reports-unknown",
        "no-unexpected-exit",
        "no-leaked-seat",
        "no-overuse-without-grace",
        "one-entry-per-log-id",
    ]
    .into_iter()
    .filter(|name| {
        !report["invariants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == *name && i["checked"].as_u64().unwrap_or(0) > 0)
    })
    .collect();
    if !failed.is_empty()
        || !run.status.success()
        || !missing.is_empty()
        || granted == 0
        || !idle.is_empty()
    {
        let why = format!(
            "chaos run failed (exit {}); violations: {failed:#?}; fault types never injected: {missing:?}; grants: {granted}; invariants that checked nothing: {idle:?}",
            run.status
        );
        run.fail(why);
    }
    eprintln!(
        "chaos run passed: {} faults ({}), {granted} grants, {} invariants checked, drain {}",
        report["faults_total"],
        report["faults"],
        report["invariants"].as_array().unwrap().len(),
        report["drain"]
    );
    run.report
}

/// Runs the harness with `part` of raftlm broken (`--break`) and fails the
/// test unless the run fails (exit 1) with violations of `caught_by`.
fn run_broken(seed: &str, duration: &str, faults: &str, part: &str, caught_by: &str) {
    let what = format!("{part} broken");
    run_caught(seed, duration, faults, &["--break", part], &what, caught_by);
}

/// Runs the harness with `extra` options that leave a safeguard out
/// (`what`) and fails the test unless the run fails (exit 1) with
/// violations of `caught_by`.
fn run_caught(
    seed: &str,
    duration: &str,
    faults: &str,
    extra: &[&str],
    what: &str,
    caught_by: &str,
) {
    let run = run_harness(seed, duration, faults, extra);
    let invariant = run.invariant(caught_by).clone();
    let violations = invariant["violations"].as_u64().unwrap_or(0);
    if run.status.code() != Some(1) || violations == 0 {
        let why = format!(
            "with {what} the run should fail {caught_by}, but it exited with {} and reported {invariant}",
            run.status
        );
        run.fail(why);
    }
    eprintln!("with {what}: {caught_by} caught {violations} violations");
}

// Under kills, pauses, restarts, kill-all, cut links and jumped clocks
// (every fault type but power cuts, which have their own run below), no
// seat is ever granted beyond the license, no acknowledged grant is lost, no
// grant appears from nowhere, retries never grant twice, answers never go
// back to a lower term, every replica ends with the same state, no dated
// feature is refused as expired before its end or granted after it,
// renewals call every token not held unknown, no answer is impossible, no
// node crashes, and no seat is left once the clients stop —
// with a hostile client sending junk, oversized and replayed requests,
// session floods, forged and unheld check-ins, control characters in names,
// idle sockets and state-digest requests alongside.
#[test]
fn fixed_seed_run_has_no_violations() {
    let report = run_chaos(
        SEED,
        DURATION,
        "kill,pause,partition,restart,kill-all,clock,overlap",
        &[
            "kill",
            "pause",
            "partition",
            "restart",
            "kill-all",
            "clock",
            "overlap",
        ],
        &["--hostile"],
    );
    let expiry = report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "expiry-judged-on-true-time")
        .expect("the expiry invariant is reported");
    assert!(expiry["checked"].as_u64().unwrap() > 0, "{expiry}");
    let hostile = report["hostile"]["requests"].as_u64().unwrap_or(0);
    assert!(hostile > 0, "the hostile client sent nothing");
    // Each kind was sent, and some of each was refused (or, for the
    // administrator's digests, served) as expected.
    for kind in [
        "idle-socket",
        "digest",
        "digest-admin",
        "control-char",
        "unheld-checkin",
        "unheld-probe",
    ] {
        let counts = &report["hostile"]["kinds"][kind];
        assert!(
            counts["sent"].as_u64().unwrap_or(0) > 0
                && counts["expected"].as_u64().unwrap_or(0) > 0,
            "hostile {kind}: {counts}"
        );
    }
}

// Power cuts (of one node or all three, unsynced writes dropped) mixed with
// kills, kill-all and pauses, and a power cut of every node at the end: no
// acknowledged grant is lost, and every node that lost writes rejoins (the
// replicas converge). Needs root and /dev/fuse, as CI has; elsewhere it
// says why and checks nothing.
#[test]
fn power_cuts_lose_no_acknowledged_grant() {
    if let Err(why) = raftlm_chaos::powerfs::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let report = run_chaos(
        POWER_SEED,
        POWER_DURATION,
        "power,power,kill,kill-all,pause",
        &["power", "kill", "kill-all", "pause"],
        &[],
    );
    assert!(
        report["disk"]
            .as_str()
            .is_some_and(|d| d.contains("power-cut filesystem")),
        "{}",
        report["disk"]
    );
}

// Five nodes, where kills and pauses take a second node half the time and a
// third of the partitions cut two nodes off from the other three (2|3): the
// same promises hold with two nodes down at once, every one of the five
// replicas converges, and the report counts the two-node faults apart.
#[test]
fn five_nodes_hold_with_two_down() {
    let report = run_chaos(
        FIVE_SEED,
        FIVE_DURATION,
        "kill,pause,partition",
        &["kill", "pause", "partition"],
        &["--nodes", "5"],
    );
    assert_eq!(report["nodes"], 5, "{}", report["replay"]);
    assert_eq!(report["replicas"].as_array().map(Vec::len), Some(5));
    assert!(
        report["two_node_faults"].as_u64().unwrap_or(0) > 0,
        "no fault took two nodes: {}",
        report["faults"]
    );
}

// The same promises on a LAN in a box (`--netns`): every node on a host of
// its own, the clients on another, the access point a real address moved by
// the shipped vip-up/vip-down, the hosts' watchdog and ExecStopPost played
// by the harness, `partition/isolate` a host link set down. Under kills,
// pauses, partitions, power cuts and kill-all the address moves, the watchdog
// takes it off a paused node, and two hosts never hold it at once beyond the
// lease. Needs root (network namespaces) and /dev/fuse, as CI has; elsewhere
// it says why and checks nothing.
#[test]
fn the_access_point_moves_on_a_lan_under_faults() {
    if let Some(why) =
        raftlm_chaos::lan::unavailable().or_else(|| raftlm_chaos::powerfs::available().err())
    {
        eprintln!("skipped: {why}");
        return;
    }
    let report = run_chaos(
        NETNS_SEED,
        NETNS_DURATION,
        "kill,pause,partition,power,kill-all",
        &["kill", "pause", "partition", "power", "kill-all"],
        &["--netns"],
    );
    let lan = &report["lan"];
    let moves = lan["address_moves"].as_u64().unwrap_or(0);
    let kills = lan["watchdog_kills"].as_u64().unwrap_or(0);
    let samples = lan["samples"].as_u64().unwrap_or(0);
    assert!(
        moves > 0 && kills > 0 && samples > 0,
        "the access point never moved, or no paused node was killed by its host's watchdog, or nothing was sampled: {lan}"
    );
    assert!(
        lan["longest_double_ms"].as_f64().unwrap_or(f64::MAX)
            <= lan["lease_ms"].as_f64().unwrap_or(0.0),
        "{lan}"
    );
    eprintln!("{}", report["network_namespaces"]);
}

// Without the hosts' systemd side (no watchdog, no ExecStopPost) the machine
// of a paused active node keeps the access point's address until the node
// resumes and finds its lease gone, answering ARP next to the new holder:
// the LAN sampler must see two hosts holding it beyond the lease. Root only,
// as above.
#[test]
fn a_missing_host_side_is_caught() {
    if let Some(why) = raftlm_chaos::lan::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    run_caught(
        "3",
        "20s",
        "pause",
        &["--netns", "--without-host-side"],
        "the host side left out",
        "one-host-answers-for-the-access-point",
    );
}

// A sweeper that expires sessions after a twentieth of the TTL takes seats
// from sessions that are heartbeating: an acknowledged grant is lost.
#[test]
fn a_broken_sweeper_is_caught() {
    run_broken("20261202", "15s", "none", "sweeper", "no-lost-grant");
}

// Without the per-session retry window a retried check-out is applied
// again: one request id gets two grants.
#[test]
fn a_broken_retry_window_is_caught() {
    run_broken(
        "20261203",
        "20s",
        "none",
        "dedup",
        "retry-never-double-grants",
    );
}

// A leader that serves on after its quorum lease lapsed answers in an old
// term after another node has answered in a newer one: cut the active node
// off from its peers (its clients still reach it) and it goes on answering.
#[test]
fn a_broken_lease_is_caught() {
    run_broken(
        "20261204",
        "30s",
        "isolate",
        "lease",
        "fencing-terms-monotonic",
    );
}
