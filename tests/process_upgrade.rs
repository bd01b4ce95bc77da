//! A rolling upgrade for real: a cluster of the previous release (raftlm
//! 0.1.0, which reads and writes record format 6 only) is upgraded to this
//! one node by node while sessions hold seats and another takes and returns
//! seats all along: standby nodes first, the active node last with `raftlm
//! down`. No grant is lost, no seat is granted twice, every replica ends
//! with the same state, and once every node runs this release the cluster
//! writes format 7.
//!
//! The previous release is built by this test from git (the commit below,
//! with `git archive` into the target directory, so the checkout is not
//! touched) the first time it runs; later runs reuse the binary. Without git
//! or without that commit in the repository (a shallow clone) the test says
//! so and skips. To move the test to a newer previous release, change
//! [`PREVIOUS_RELEASE`] to that release's commit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::process::{PATIENCE, ProcessCluster, raftlm, same_state, session, status_until};

/// raftlm 0.1.0: the last commit that reads and writes record format 6 only.
const PREVIOUS_RELEASE: &str = "8431d39384f5dba6720f9dd80c81ee396e0a7ffb";

const SEATS: u32 = 20;
const HELD: usize = 10;

/// The previous release's binary, built once; `None` (and a line saying
/// why) when it cannot be built here.
fn previous_binary() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let has_commit = Command::new("git")
        .args(["-C"])
        .arg(repo)
        .args(["cat-file", "-e", &format!("{PREVIOUS_RELEASE}^{{commit}}")])
        .status()
        .is_ok_and(|s| s.success());
    if !has_commit {
        eprintln!(
            "skipped: the previous release's commit {PREVIOUS_RELEASE} is not in this repository (no git, or a shallow clone): the rolling upgrade was not run"
        );
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo.join("target"), PathBuf::from)
        .join("previous-release");
    let source = target.join(&PREVIOUS_RELEASE[..12]);
    let binary = target.join("target/debug/raftlm");
    if !source.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&source).unwrap();
        let archive = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["archive", "--format=tar", PREVIOUS_RELEASE])
            .output()
            .unwrap();
        assert!(archive.status.success(), "git archive failed");
        let mut untar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&source)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        untar
            .stdin
            .take()
            .unwrap()
            .write_all(&archive.stdout)
            .unwrap();
        assert!(untar.wait().unwrap().success(), "tar failed");
    }
    eprintln!(
        "building the previous release ({PREVIOUS_RELEASE}) in {}",
        target.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--locked", "--bin", "raftlm"])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", target.join("target"))
        // No debug info: it builds and links faster, and it is not debugged.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .status()
        .unwrap();
    assert!(built.success(), "the previous release does not build");
    Some(binary)
}

/// Restarts node `id` with `binary` after it stopped.
fn restart_with(cluster: &mut ProcessCluster, id: usize, binary: &Path) {
    cluster
        .processes
        .start_with(id - 1, Command::new(binary))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_the_previous_release_is_upgraded_node_by_node_under_load() {
    let Some(previous) = previous_binary() else {
        return;
    };
    let current = PathBuf::from(env!("CARGO_BIN_EXE_raftlm"));
    let mut cluster = ProcessCluster::new(&[("cad", SEATS)]).with_binary(previous);
    cluster.start_all();
    cluster.wait_licensed().await;
    let all = cluster.addresses.clone();
    let version = Command::new(cluster.processes.binary())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        "raftlm 0.1.0",
        "the previous release runs"
    );

    // Seats held through the whole upgrade, and seats taken and returned
    // all along by another session.
    let holder = session(&all, "ada");
    let mut held = Vec::new();
    for _ in 0..HELD {
        held.push(holder.checkout("cad", 1).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, churned) = (stop.clone(), churned.clone());
        let churner = session(&all, "bob");
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A check-out may fail while the active node changes: the
                // client retries, and the loop goes on.
                if let Ok(grant) = churner.checkout("cad", 2).await {
                    churner.checkin(&grant).await.unwrap();
                    churned.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            churner
        })
    };

    // Standby nodes first: stop, new binary, start, wait until standby.
    let (active, _) = cluster.wait_active(PATIENCE).await;
    for id in (1..=3).filter(|&id| id != active) {
        cluster.processes.terminate(id - 1);
        cluster
            .processes
            .reap(id - 1, Duration::from_secs(10))
            .expect("a standby node stops on SIGTERM");
        restart_with(&mut cluster, id, &current);
        status_until(&cluster, "the upgraded node is a standby again", |s| {
            s.nodes
                .iter()
                .any(|n| n.id == id as u64 && n.role == "standby" && n.lag == 0)
        })
        .await;
        let before = churned.load(Ordering::Relaxed);
        common::wait_until("seats are taken and returned", PATIENCE, || async {
            (churned.load(Ordering::Relaxed) > before + 3).then_some(())
        })
        .await;
    }

    // The active node last: it hands over to an upgraded node.
    let (code, out, err) = raftlm(&["down", "--server", &all[active - 1]], cluster.dir.path());
    assert_eq!(code, 0, "{out}{err}");
    cluster
        .processes
        .reap(active - 1, Duration::from_secs(10))
        .expect("the active node stops after raftlm down");
    let (successor, _) = cluster.wait_active(PATIENCE).await;
    assert_ne!(successor, active);
    restart_with(&mut cluster, active, &current);

    // Every node runs this release: the cluster writes format 7.
    let raised = status_until(&cluster, "the cluster writes format 7", |s| {
        s.write_format == 7
            && s.nodes
                .iter()
                .all(|n| n.version == env!("CARGO_PKG_VERSION") && n.reads_formats_max == 7)
    })
    .await;
    assert!(
        raised
            .admin_actions
            .iter()
            .any(|a| a.result.contains("the cluster writes format 7 (was 6)")),
        "{:?}",
        raised.admin_actions
    );
    let before = churned.load(Ordering::Relaxed);
    common::wait_until(
        "seats are taken and returned after the raise",
        PATIENCE,
        || async { (churned.load(Ordering::Relaxed) > before + 3).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let churner = churn.await.unwrap();
    drop(churner);

    // No grant lost: the held seats are still held, and still this
    // session's; no seat granted twice: exactly the rest is free.
    let status = status_until(&cluster, "only the held seats are in use", |s| {
        s.features
            .iter()
            .any(|f| f.feature == "cad" && f.in_use == HELD as u32)
    })
    .await;
    let cad = status.features.iter().find(|f| f.feature == "cad").unwrap();
    assert_eq!(cad.licensed, SEATS, "{cad:?}");
    let greedy = session(&all, "eve");
    let free = SEATS - HELD as u32;
    assert!(
        greedy.checkout("cad", free + 1).await.is_err(),
        "more seats granted than are free"
    );
    let rest = greedy.checkout("cad", free).await.unwrap();
    same_state(&all).await;
    greedy.checkin(&rest).await.unwrap();
    for grant in &held {
        holder.checkin(grant).await.unwrap();
    }
    assert!(
        churned.load(Ordering::Relaxed) > 0,
        "no seat was taken during the upgrade"
    );
}
