//! A fixed-seed chaos run against the debug `raftlm` binary: about 60 s of
//! every fault type under the recorded workload, and not one violation.
//!
//! How the binaries are found: the harness is `CARGO_BIN_EXE_raftlm-chaos`
//! (cargo builds it for this test). The `raftlm` binary is not a dependency
//! artifact cargo can hand to another package's tests, so the test asks
//! cargo to build it into the same target directory and profile
//! (`cargo build -p raftlm --bin raftlm`, a no-op when it is fresh) and uses
//! `raftlm` next to the harness. A plain `cargo test` at the workspace root
//! has built it already (the root package's own tests need it).
//!
//! Bounded: the harness runs as a child process that is killed if the test
//! panics or the run exceeds its time limit; the harness kills its nodes on
//! exit (and they die with it through `PR_SET_PDEATHSIG`); the run directory
//! is a temporary directory removed on success and kept, with its path
//! printed, on failure. Everything listens on 127.0.0.0/8.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The seed of the fixed run.
const SEED: &str = "20240611";
/// Fault-injection time.
const DURATION: &str = "60s";
/// The whole run (start-up, faults, final kill-all, checks) must end within this.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Kills the harness if the test ends early.
struct Harness(Child);

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `raftlm` binary in the harness's target directory and profile, built if needed.
fn raftlm_binary() -> PathBuf {
    let harness = Path::new(env!("CARGO_BIN_EXE_raftlm-chaos"));
    let profile_dir = harness.parent().expect("the harness lives in a directory");
    let binary = profile_dir.join("raftlm");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("chaos/ sits in the workspace");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", "raftlm", "--bin", "raftlm", "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status();
    match status {
        Ok(s) if s.success() => {}
        other => assert!(
            binary.is_file(),
            "cannot build the raftlm binary ({other:?}) and {} does not exist: run `cargo build -p raftlm` first",
            binary.display()
        ),
    }
    binary
}

// Under kills, pauses, restarts, kill-all and cut links (every fault type),
// no seat is ever granted beyond the license, no acknowledged grant is lost,
// no grant appears from nowhere, retries never grant twice, answers never go
// back to a lower term, and every replica ends with the same state.
#[test]
fn fixed_seed_run_has_no_violations() {
    let binary = raftlm_binary();
    let work = tempfile::Builder::new()
        .prefix("raftlm-chaos-test-")
        .tempdir()
        .unwrap();
    let run_dir = work.path().join("run");
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftlm-chaos"));
    command
        .args(["--seed", SEED, "--duration", DURATION, "--json"])
        .args(["--faults", "kill,pause,partition,restart,kill-all"])
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
    let mut harness = Harness(command.spawn().expect("cannot start raftlm-chaos"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = harness.0.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let kept = work.keep();
            panic!(
                "the chaos run took longer than {RUN_LIMIT:?}; its directory is kept at {}",
                kept.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(harness.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let report: serde_json::Value = match serde_json::from_str(stdout.trim()) {
        Ok(report) => report,
        Err(error) => {
            let kept = work.keep();
            panic!(
                "raftlm-chaos exited with {status} without a JSON report ({error}); run directory kept at {}\n{stdout}",
                kept.display()
            );
        }
    };
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
    let missing: Vec<&str> = ["kill", "pause", "partition", "restart", "kill-all"]
        .into_iter()
        .filter(|k| count(k) == 0)
        .collect();
    let granted = report["operations"]["checkout"]["ok"].as_u64().unwrap_or(0);
    if !failed.is_empty() || !status.success() || !missing.is_empty() || granted == 0 {
        let kept = work.keep();
        panic!(
            "chaos run failed (exit {status}); violations: {failed:#?}; fault types never injected: {missing:?}; grants: {granted}; run directory kept at {}",
            kept.display()
        );
    }
    eprintln!(
        "chaos run passed: {} faults, {granted} grants, {} invariants checked",
        report["faults_total"],
        report["invariants"].as_array().unwrap().len()
    );
}
