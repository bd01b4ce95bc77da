//! Taking the active node out of the cluster with real processes: `raftlm
//! cluster remove-node` of the active node, then `replace-node` whose OLD
//! is the (new) active node. Each time the active node hands over and
//! stops, as with `raftlm down`, the change is made through its successor,
//! and a client's seats are held throughout.

mod common;

use std::time::Duration;

use common::process::ProcessCluster;
use raftlm::client::{Client, ClientOptions, ServerList, Session, SessionEvent, SessionOptions};

const PATIENCE: Duration = Duration::from_secs(60);

/// Five configured nodes whose first three form the cluster; 4 and 5 are
/// started with `--join`.
fn cluster() -> ProcessCluster {
    let mut cluster = ProcessCluster::with_nodes(5, &[("cad", 10)]);
    for id in 1..=3 {
        cluster.tune(id, |config| config.nodes.truncate(3));
    }
    cluster
}

/// `raftlm cluster …` against every node: (exit code, stdout and stderr).
fn cluster_command(cluster: &ProcessCluster, args: &[&str]) -> (i32, String) {
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    common::process::raftlm_at(cluster, &cluster.addresses, &all)
}

/// Seats of `cad` in use, as the active node reports them.
async fn in_use(cluster: &ProcessCluster) -> u32 {
    cluster
        .wait_access_point(PATIENCE)
        .await
        .features
        .iter()
        .find(|f| f.feature == "cad")
        .map_or(0, |f| f.in_use)
}

/// Reaps node `id`, which must stop by itself (it handed over and stopped).
fn stopped_by_itself(cluster: &mut ProcessCluster, id: usize) {
    let exit = cluster.processes.reap(id - 1, PATIENCE);
    assert!(
        exit.is_some_and(|s| s.success()),
        "node {id} should have stopped by itself after its handover ({exit:?}):\n{}",
        cluster.log(id)
    );
}

/// A user promise: removing or replacing the active node moves the service
/// to another voter first, and clients keep their seats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_node_hands_over_before_it_is_removed_or_replaced() {
    let mut cluster = cluster();
    for id in 1..=3 {
        cluster.start(id);
    }
    cluster.wait_licensed().await;
    let servers: ServerList = cluster.addresses.join(",").parse().unwrap();
    let session = Session::start(
        Client::with_options(
            servers,
            ClientOptions {
                tls: common::client_tls(),
                ..ClientOptions::default()
            },
        ),
        SessionOptions {
            vendor: "acme".into(),
            user: "ada".into(),
            host: "ws1".into(),
            ..SessionOptions::default()
        },
    );
    let mut events = session.subscribe();
    let mut grants = Vec::new();
    for _ in 0..3 {
        grants.push(session.checkout("cad", 1).await.unwrap());
    }

    // Four voters, then the active one removed: three left.
    cluster.start_joining(4);
    let (code, out) = cluster_command(
        &cluster,
        &[
            "add-node",
            "4",
            &cluster.peer_addresses[3],
            &cluster.addresses[3],
        ],
    );
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    let (active, _) = cluster.wait_active(PATIENCE).await;
    let (code, out) = cluster_command(&cluster, &["remove-node", &active.to_string()]);
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert!(
        out.contains(&format!("node {active} is the active node: it hands over")),
        "{out}"
    );
    assert!(out.contains(&format!("node {active} removed")), "{out}");
    stopped_by_itself(&mut cluster, active);
    assert!(
        cluster.log(active).contains("handed over"),
        "{}",
        cluster.log(active)
    );
    let (code, out) = cluster_command(&cluster, &["members"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("voter ").count(), 3, "{out}");
    assert!(!out.contains(&format!("node {active} ")), "{out}");
    assert_eq!(in_use(&cluster).await, 3);

    // The new active node replaced by node 5.
    cluster.start_joining(5);
    let (replaced, _) = cluster.wait_active(PATIENCE).await;
    assert_ne!(replaced, active);
    let (code, out) = cluster_command(
        &cluster,
        &[
            "replace-node",
            &replaced.to_string(),
            "5",
            &cluster.peer_addresses[4],
            &cluster.addresses[4],
        ],
    );
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert!(
        out.contains(&format!(
            "node {replaced} is the active node: it hands over"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("node 5 is a voter in place of node {replaced}")),
        "{out}"
    );
    stopped_by_itself(&mut cluster, replaced);
    let (code, out) = cluster_command(&cluster, &["members"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("voter ").count(), 3, "{out}");
    assert!(out.contains("node 5  voter"), "{out}");
    assert!(!out.contains(&format!("node {replaced} ")), "{out}");

    // The seats were held throughout, by the same grants.
    assert_eq!(in_use(&cluster).await, 3);
    for grant in &grants {
        session.checkin(grant).await.unwrap();
    }
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                SessionEvent::GrantLost { .. } | SessionEvent::SessionRestarted { .. }
            ),
            "{event:?}"
        );
    }
}
