//! Membership changes with real processes and the `raftlm cluster` commands:
//! a node whose data directory was wiped is replaced under a new id (the
//! successor catches up by snapshot, every replica ends with the same state,
//! the old id's certificate is refused on the peer plane, no grant is lost);
//! and a cluster grows 3 → 5 with nodes started with `--join`, loses two
//! nodes at once, the active one among them, keeps serving, refuses a
//! removal that would leave no reachable majority, and shrinks back to 3.

mod common;

use common::process::{PATIENCE, ProcessCluster, raftlm_at, same_state, session};

/// A cluster of `n` configured nodes whose first three form it (the others
/// are started to join), snapshotting often so a newcomer catches up from a
/// snapshot: the log it would need is purged.
fn cluster(n: usize) -> ProcessCluster {
    let mut cluster = ProcessCluster::with_nodes(n, &[("cad", 100)]);
    cluster.tune_all(|config| {
        config.snapshot.logs_since_last = 20;
        config.snapshot.logs_kept = 5;
    });
    for id in 1..=3 {
        cluster.tune(id, |config| config.nodes.truncate(3));
    }
    cluster
}

/// `raftlm cluster …` against the nodes at `addresses`.
fn cluster_command(cluster: &ProcessCluster, addresses: &[String], args: &[&str]) -> (i32, String) {
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    raftlm_at(cluster, addresses, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_replaced_under_a_new_id() {
    let mut cluster = cluster(4);
    for id in 1..=3 {
        cluster.start(id);
    }
    cluster.wait_licensed().await;
    let first_three = cluster.addresses[..3].to_vec();
    let session = session(&first_three, "ada");
    let mut grants = Vec::new();
    for _ in 0..30 {
        grants.push(session.checkout("cad", 1).await.unwrap());
    }
    for grant in grants.drain(..25) {
        session.checkin(&grant).await.unwrap();
    }

    // A follower's disk dies.
    let (active, _) = cluster.wait_active(PATIENCE).await;
    let lost = (1..=3).find(|&id| id != active).unwrap();
    cluster.kill(lost);
    std::fs::remove_dir_all(&cluster.configs[lost - 1].data_dir).unwrap();

    // Its successor, under a new id, replaces it.
    cluster.start_joining(4);
    let (code, out) = cluster_command(
        &cluster,
        &first_three,
        &[
            "replace-node",
            &lost.to_string(),
            "4",
            &cluster.peer_addresses[3],
            &cluster.addresses[3],
        ],
    );
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert!(
        out.contains(&format!("node 4 is a voter in place of node {lost}")),
        "{out}"
    );
    assert!(
        cluster.log(4).contains("snapshot installed"),
        "the successor should catch up from a snapshot:\n{}",
        cluster.log(4)
    );
    let members: Vec<String> = (1..=4)
        .filter(|&id| id != lost)
        .map(|id| cluster.addresses[id - 1].clone())
        .collect();
    same_state(&members).await;

    // The old id's certificate no longer admits its holder.
    cluster.start(lost);
    common::wait_until("a member refuses the old id", PATIENCE, || async {
        (1..=4)
            .filter(|&id| id != lost)
            .any(|id| {
                cluster
                    .log(id)
                    .contains(&format!("node {lost} is not a member of the cluster"))
            })
            .then_some(())
    })
    .await;
    let (code, out) = cluster_command(&cluster, &members, &["members"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&format!("node {lost} ")), "{out}");

    // No grant was lost.
    let status = common::process::status(&cluster.access_point)
        .await
        .unwrap();
    let cad = status.features.iter().find(|f| f.feature == "cad").unwrap();
    assert_eq!(cad.in_use, 5, "{status:?}");
    for grant in &grants {
        session.checkin(grant).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_to_five_loses_two_and_shrinks_back() {
    let mut cluster = cluster(5);
    for id in 1..=3 {
        cluster.start(id);
    }
    cluster.wait_licensed().await;
    let all = cluster.addresses.clone();
    for id in 4..=5 {
        cluster.start_joining(id);
        let (code, out) = cluster_command(
            &cluster,
            &all[..3],
            &[
                "add-node",
                &id.to_string(),
                &cluster.peer_addresses[id - 1],
                &cluster.addresses[id - 1],
            ],
        );
        assert_eq!(code, 0, "{out}\n{}", cluster.logs());
        assert!(out.contains(&format!("node {id} is a voter")), "{out}");
    }
    // Adding it again changes nothing.
    let (code, out) = cluster_command(
        &cluster,
        &all,
        &[
            "add-node",
            "5",
            &cluster.peer_addresses[4],
            &cluster.addresses[4],
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("node 5 is a voter already"), "{out}");

    // Two nodes lost at once, the active one among them.
    let (active, _) = cluster.wait_active(PATIENCE).await;
    let other = if active == 5 { 4 } else { 5 };
    cluster.kill(active);
    cluster.kill(other);
    let (now_active, _) = cluster.wait_active(PATIENCE).await;
    assert!(now_active != active && now_active != other);
    let alive: Vec<String> = (1..=5)
        .filter(|id| *id != active && *id != other)
        .map(|id| all[id - 1].clone())
        .collect();
    let session = session(&alive, "ada");
    let grant = session.checkout("cad", 1).await.unwrap();

    // Removing a live node would leave 2 of 4 voters reachable.
    let live = (1..=5)
        .find(|id| ![active, other, now_active].contains(id))
        .unwrap();
    common::wait_until(
        "the active node sees both lost nodes silent",
        PATIENCE,
        || {
            let (code, out) = cluster_command(&cluster, &alive, &["members"]);
            async move { (code == 0 && out.matches("not answering").count() == 2).then_some(()) }
        },
    )
    .await;
    let (code, out) = cluster_command(&cluster, &alive, &["remove-node", &live.to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("2 of 4 reachable"), "{out}");

    // The two lost nodes are removed: three voters again.
    for id in [active, other] {
        let (code, out) = cluster_command(&cluster, &alive, &["remove-node", &id.to_string()]);
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = cluster_command(&cluster, &alive, &["members"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("voter ").count(), 3, "{out}");
    session.checkin(&grant).await.unwrap();
}
