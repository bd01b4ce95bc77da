//! The `command` access-point backend with real processes: the up command runs
//! before the active node serves, the down command when it stops, and a
//! failing up command keeps the node from serving.

mod common;

use std::time::{Duration, Instant};

use common::process::{ProcessCluster, status};

fn command_mode(up: &str, down: &str, access_point: &str) -> String {
    format!("prefix = 32\ninterface = \"lo\"\nup = {up}\ndown = {down}\n",)
        .replace("ACCESS", access_point)
}

/// Replaces the `[access_point]` table of every node config with `table`.
fn set_access_point(cluster: &ProcessCluster, table: &str) {
    for id in 1..=3 {
        cluster.replace_table(id, "[access_point]", table);
    }
}

// Every node runs the down command once at start (an earlier process of it
// may have left the address behind); the active node runs the up command
// (with the address substituted) before it serves on the access point, and
// the down command when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_down_commands_run_around_serving() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)], "");
    let journal = cluster.dir.path().join("access-point.journal");
    let append = |word: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo {word} {{ip}} {{prefix}} {{interface}} >> {}\"]",
            journal.display()
        )
    };
    let table = format!(
        "[access_point]\nmode = \"command\"\naddress = \"{}\"\n{}",
        cluster.access_point,
        command_mode(&append("up"), &append("down"), &cluster.access_point)
    );
    set_access_point(&cluster, &table);
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
    cluster.signal(active, "TERM");
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
    let mut cluster = ProcessCluster::new(&[("cad", 5)], "");
    let table = format!(
        "[access_point]\nmode = \"command\"\naddress = \"{}\"\n{}",
        cluster.access_point,
        command_mode(
            "[\"sh\", \"-c\", \"echo no such interface >&2; exit 1\"]",
            "[\"true\"]",
            &cluster.access_point
        )
    );
    set_access_point(&cluster, &table);
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
