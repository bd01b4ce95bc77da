//! A leader that dies between openraft's two membership entries, with real
//! processes: the nodes run a binary built with the test-only feature
//! fault-injection and `RAFTLM_FAULT_EXIT=after-joint` (`src/fault.rs`), so
//! the leader exits as it applies the joint configuration it proposed,
//! before it can propose the final one. The cluster is left in the joint
//! configuration; the same `raftlm cluster add-node` command, run again,
//! completes the change.

mod common;

use std::time::Duration;

use common::process::{ProcessCluster, fault_injection_binary};
use raftlm::local::process::ENV_FAULT_EXIT;

const PATIENCE: Duration = Duration::from_secs(60);

/// `raftlm cluster …` against the nodes at `addresses`: (exit code, stdout
/// and stderr).
fn cluster_command(cluster: &ProcessCluster, addresses: &[String], args: &[&str]) -> (i32, String) {
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    common::process::raftlm_at(cluster, addresses, &all)
}

/// A promise of decision 0021: a change of the voters left in openraft's
/// joint configuration by a leader lost between its two entries is
/// completed by running the same command again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_left_joint_by_a_dead_leader_is_completed_by_running_it_again() {
    let mut cluster =
        ProcessCluster::with_nodes(4, &[("cad", 10)]).with_binary(fault_injection_binary());
    for id in 1..=3 {
        cluster.tune(id, |config| config.nodes.truncate(3));
    }
    cluster
        .processes
        .set_env_all(ENV_FAULT_EXIT, Some("after-joint".as_ref()));
    for id in 1..=3 {
        cluster.start(id);
    }
    cluster.wait_licensed().await;
    cluster.start_joining(4);
    let (leader, _) = cluster.wait_active(PATIENCE).await;
    let add = [
        "add-node",
        "4",
        &cluster.peer_addresses[3],
        &cluster.addresses[3],
    ];

    // Pointed at the active node alone, the command cannot go on through
    // another node once that one is gone.
    let (code, out) = cluster_command(&cluster, &[cluster.addresses[leader - 1].clone()], &add);
    assert_ne!(code, 0, "the leader should have died mid-change:\n{out}");
    let exit = cluster.processes.reap(leader - 1, PATIENCE);
    assert_eq!(
        exit.and_then(|status| status.code()),
        Some(raftlm::fault::EXIT_CODE),
        "node {leader} should have exited at the joint configuration:\n{out}\n{}",
        cluster.log(leader)
    );
    let others: Vec<String> = (1..=4)
        .filter(|&id| id != leader)
        .map(|id| cluster.addresses[id - 1].clone())
        .collect();
    let pending = common::wait_until(
        "another node is active and shows the pending change",
        PATIENCE,
        || {
            let (code, out) = cluster_command(&cluster, &others, &["members"]);
            async move { (code == 0).then_some(out) }
        },
    )
    .await;
    assert!(
        pending.contains("pending: the voters change from 1, 2, 3 to 1, 2, 3, 4"),
        "{pending}"
    );

    // The same command, run again, completes the change.
    let (code, out) = cluster_command(&cluster, &others, &add);
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert!(
        out.contains("a change of the voters from 1, 2, 3 to 1, 2, 3, 4 is pending: completing it"),
        "{out}"
    );
    assert!(out.contains("node 4 is a voter already"), "{out}");
    let (code, members) = cluster_command(&cluster, &others, &["members"]);
    assert_eq!(code, 0, "{members}");
    assert!(!members.contains("pending"), "{members}");
    assert_eq!(members.matches("voter ").count(), 4, "{members}");

    // The dead leader, started again without the exit point, catches up.
    cluster.processes.set_env(leader - 1, ENV_FAULT_EXIT, None);
    cluster.start(leader);
    common::process::same_state(&cluster.addresses).await;
}
