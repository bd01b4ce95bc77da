//! Membership changes online: a three-node cluster grows to five with nodes
//! started to join (learner, catch-up, voter), loses two nodes at once, the
//! active one among them, and keeps serving; a removal that would leave no
//! reachable majority is refused; the two lost nodes are removed and the
//! cluster is three again. Nodes 1 to 3 never list nodes 4 and 5 in their
//! config: they reach them at the addresses the membership records.

mod common;

use std::time::Duration;

use raftlm::client::{Client, ClientOptions, ServerList};
use raftlm::config::Config;
use raftlm::node::Node;
use raftlm::proto::v1 as pb;

const PATIENCE: Duration = Duration::from_secs(60);

fn admin(addresses: &[String]) -> Client {
    let servers: ServerList = addresses.join(",").parse().unwrap();
    Client::with_options(
        servers,
        ClientOptions {
            call_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            follow_leader_hints: true,
            tls: common::admin_tls(),
        },
    )
}

fn voters(view: &pb::MembershipReply) -> Vec<u64> {
    view.members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect()
}

/// Adds node `id` as a learner, waits until it has caught up, makes it a voter.
async fn add_node(admin: &Client, id: u64, address: &str, peer: &str) -> Vec<String> {
    admin.add_learner(id, address, peer).await.unwrap();
    let view = common::wait_until("the learner catches up", PATIENCE, || async {
        let view = admin.membership().await.ok()?;
        let member = view.members.iter().find(|m| m.id == id)?;
        (member.matched_index > 0 && member.lag <= 10).then_some(view)
    })
    .await;
    let mut wanted = voters(&view);
    wanted.push(id);
    let reply = admin.change_voters(&wanted, false).await.unwrap();
    let view = reply.membership.unwrap();
    assert!(voters(&view).contains(&id), "{view:?}");
    reply.warnings
}

async fn wait_serving(addresses: &[String]) -> (usize, pb::StatusReply) {
    common::wait_until("a node serves", PATIENCE, || async {
        for (i, address) in addresses.iter().enumerate() {
            if let Some(reply) =
                raftlm::local::probe::status_of(address, &common::client_tls()).await
                && !reply.features.is_empty()
            {
                return Some((i, reply));
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_grows_to_five_survives_two_losses_and_shrinks_back() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let licenses = dir.path().join("licenses");
    std::fs::create_dir_all(&licenses).unwrap();
    std::fs::write(
        licenses.join("acme.lic"),
        common::signed_license(&key, &[("cad", 10)]),
    )
    .unwrap();
    let bound = raftlm::local::in_process::bind(5).await.unwrap();
    let addresses = bound.addresses.clone();
    let peers = bound.peer_addresses.clone();
    let config = |id: u64, members: usize| -> Config {
        let mut config = common::node_config(
            dir.path(),
            id,
            &addresses[..members],
            &peers[..members],
            &public,
        );
        config.license_dir = Some(licenses.clone());
        config
    };
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (i, (client, peer)) in bound.listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let node = if id <= 3 {
            Node::start_with_listeners(config(id, 3), client, peer).await
        } else {
            Node::join_with_listeners(config(id, 5), client, peer).await
        };
        nodes.push(Some(node.unwrap()));
    }
    let (_, status) = wait_serving(&addresses[..3]).await;
    assert_eq!(status.features.len(), 1);
    let admin = admin(&addresses);

    // Grow: 3 → 4 (a warning: four tolerate one failure) → 5.
    let warnings = add_node(&admin, 4, &addresses[3], &peers[3]).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("4 voters tolerate 1 failure")),
        "{warnings:?}"
    );
    let warnings = add_node(&admin, 5, &addresses[4], &peers[4]).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let view = admin.membership().await.unwrap();
    assert_eq!(voters(&view), vec![1, 2, 3, 4, 5]);
    assert!(!view.joint);
    // Adding a member again, or at an address in use, is refused or a no-op.
    let error = admin
        .add_learner(6, &addresses[0], "127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("uses that address"), "{error}");
    assert!(
        admin
            .add_learner(4, &addresses[3], &peers[3])
            .await
            .is_err()
    );

    // Lose two at once, the active node among them.
    let active = view.node as usize - 1;
    let other = (0..5)
        .find(|&i| i != active && i >= 3)
        .unwrap_or((active + 1) % 5);
    let lost = [active, other];
    for &i in &lost {
        nodes[i].take().unwrap().shutdown().await;
    }
    let alive: Vec<String> = (0..5)
        .filter(|i| !lost.contains(i))
        .map(|i| addresses[i].clone())
        .collect();
    let (_, status) = wait_serving(&alive).await;
    assert!(lost.iter().all(|&i| status.active_node != i as u64 + 1));
    let admin = self::admin(&alive);
    let client = Client::with_options(
        alive.join(",").parse().unwrap(),
        ClientOptions {
            tls: common::client_tls(),
            ..ClientOptions::default()
        },
    );
    let session = raftlm::client::Session::start(
        client,
        raftlm::client::SessionOptions {
            vendor: "acme".into(),
            ..Default::default()
        },
    );
    let grant = session.checkout("cad", 1).await.unwrap();

    // Once the active node sees the two lost nodes gone (as `raftlm cluster
    // members` shows them), removing a live node would leave 2 of 4 voters
    // reachable: refused.
    common::wait_until("the lost nodes are seen unreachable", PATIENCE, || async {
        let view = admin.membership().await.ok()?;
        view.members
            .iter()
            .filter(|m| lost.contains(&(m.id as usize - 1)))
            .all(|m| !m.reachable)
            .then_some(())
    })
    .await;
    let live_other = (0..5)
        .find(|&i| !lost.contains(&i) && i as u64 + 1 != status.active_node)
        .unwrap() as u64
        + 1;
    let error = admin.remove_node(live_other, false).await.unwrap_err();
    assert!(error.to_string().contains("2 of 4 reachable"), "{error}");

    // Shrink back to three: remove the two lost nodes.
    for &i in &lost {
        admin.remove_node(i as u64 + 1, false).await.unwrap();
    }
    let view = admin.membership().await.unwrap();
    assert_eq!(voters(&view).len(), 3, "{view:?}");
    assert!(
        view.members.iter().all(|m| m.voter && m.reachable),
        "{view:?}"
    );
    // A removed id is never used again, and every change is recorded with its author.
    let lost_id = lost[0] as u64 + 1;
    let error = admin
        .add_learner(lost_id, "127.0.0.1:9", "127.0.0.1:10")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("never used again"), "{error}");
    let actions = admin.status().await.unwrap().admin_actions;
    let recorded: Vec<&str> = actions.iter().map(|a| a.action.as_str()).collect();
    assert!(
        recorded
            .iter()
            .any(|a| a.starts_with("add node 5 (learner)"))
            && recorded
                .iter()
                .any(|a| a.starts_with("voters 1, 2, 3, 4 → 1, 2, 3, 4, 5")),
        "{recorded:?}"
    );
    // Fewer than three voters needs --force.
    let error = admin
        .remove_node(live_other, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("--force"), "{error}");
    session.checkin(&grant).await.unwrap();
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn join_refuses_a_data_directory_that_holds_something() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = common::vendor_key(dir.path());
    let bound = raftlm::local::in_process::bind(3).await.unwrap();
    let config = common::node_config(
        dir.path(),
        1,
        &bound.addresses,
        &bound.peer_addresses,
        &public,
    );
    std::fs::create_dir_all(config.data_dir.join("something")).unwrap();
    let (client, peer) = bound.listeners.into_iter().next().unwrap();
    let error = match Node::join_with_listeners(config, client, peer).await {
        Ok(_) => panic!("joined with a data directory that holds something"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("--join") && error.contains("not empty"),
        "{error}"
    );
}
