//! A planned stop (SIGTERM) of the active node hands over: it releases the
//! access point, asks the most up-to-date follower to start an election at
//! once, stays up to grant the vote, and exits; the successor serves, and a
//! client's grant survives.

mod common;

use std::time::Duration;

use common::process::{ProcessCluster, license_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_active_node_hands_over() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)], "");
    cluster.start_all();
    let before = cluster.wait_access_point(Duration::from_secs(30)).await;
    let first = before.active_node as usize;
    // Let the leader lead for longer than election_timeout_max_ms, so it may grant votes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut client = license_client(&cluster.access_point)
        .await
        .expect("connects");
    let granted = client
        .checkout(common::checkout_request(1, 1, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted, "{granted:?}");

    cluster.signal(first, "TERM");
    let after = cluster.wait_access_point(Duration::from_secs(10)).await;
    assert_ne!(after.active_node as usize, first, "{after:?}");
    // The old node exits by itself.
    let mut child = cluster.children[first - 1].take().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "node {first} did not exit\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = cluster.log(first);
    assert!(log.contains("handed over: node"), "{log}");
    let successor = after.active_node as usize;
    assert!(
        cluster
            .log(successor)
            .contains(&format!("active in term {}", after.term)),
        "{}",
        cluster.log(successor)
    );
    // The grant made before the handover is held by the new active node.
    assert!(
        after.grants.iter().any(|g| g.token == granted.token),
        "{after:?}"
    );
}
