//! The `command` access-point backend with real processes: the up command runs
//! before the active node serves, the down command when it stops, and a
//! failing up command keeps the node from serving.

mod common;

use std::time::{Duration, Instant};

use common::process::{ProcessCluster, status};
use raftlm::config::AccessPointMode;

/// Puts every node's access point in command mode on `lo` (a /32) with
/// these up and down commands.
fn command_mode(cluster: &mut ProcessCluster, up: Vec<String>, down: Vec<String>) {
    cluster.tune_all(|config| {
        config.access_point.mode = AccessPointMode::Command;
        config.access_point.prefix = 32;
        config.access_point.interface = "lo".into();
        config.access_point.up = up.clone();
        config.access_point.down = down.clone();
    });
}

/// `sh -c SCRIPT`, as a command of the access point.
fn shell(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

// Every node runs the down command once at start (an earlier process of it
// may have left the address behind); the active node runs the up command
// (with the address substituted) before it serves on the access point, and
// the down command when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_down_commands_run_around_serving() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let journal = cluster.dir.path().join("access-point.journal");
    let append = |word: &str| {
        shell(&format!(
            "echo {word} {{ip}} {{prefix}} {{interface}} >> {}",
            journal.display()
        ))
    };
    command_mode(&mut cluster, append("up"), append("down"));
    cluster.start_all();
    let reply = cluster.wait_access_point(Duration::from_secs(30)).await;
    let ip = cluster.access_point.rsplit_once(':').unwrap().0.to_string();
    let down = format!("down {ip} 32 lo");
    // The third node's start-up down may come after the first up.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = std::fs::read_to_string(&journal).unwrap();
        if text.matches(&down).count() >= 3 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(text.matches(&down).count(), 3, "journal: {text}");
    assert_eq!(text.matches("up ").count(), 1, "journal: {text}");
    assert!(
        text.lines().filter(|l| *l == down).count() == 3
            && text.lines().any(|l| l == format!("up {ip} 32 lo")),
        "journal: {text}"
    );

    // SIGTERM: the node stops serving and runs its down command on the way out.
    let active = reply.active_node as usize;
    cluster.signal(active, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&journal).unwrap();
        if text.matches(&down).count() > 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no down command ran: {text}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another node brings the address up again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if status(&cluster.access_point)
            .await
            .is_some_and(|s| s.active_node as usize != active)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "access point did not move\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ups = std::fs::read_to_string(&journal)
        .unwrap()
        .matches("up ")
        .count();
    assert_eq!(ups, 2);
}

// A failing up command is retried and reported, and the leader does not serve without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_up_command_keeps_the_node_from_serving() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    command_mode(
        &mut cluster,
        shell("echo no such interface >&2; exit 1"),
        vec!["true".into()],
    );
    cluster.start_all();
    // Let an election happen and the up command fail a few times. Kept: that
    // no node serves is an absence, checked after a window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for address in &cluster.addresses {
        assert!(
            status(address).await.is_none(),
            "node at {address} serves without the access point"
        );
    }
    let logs = cluster.logs();
    assert!(logs.contains("access point up command failed"), "{logs}");
    assert!(logs.contains("no such interface"), "{logs}");
}
