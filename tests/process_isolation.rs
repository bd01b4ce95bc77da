//! A node cut off from its peers keeps running, and comes back without
//! forcing an election: its pre-votes (src/raft/pre_vote.rs) find no
//! majority, so its term does not grow while it is cut off, and the leader
//! keeps its term and its place when it returns. The three `raftlm server`
//! processes reach each other only through TCP proxies of the test
//! (`chaos/src/proxy.rs`, shared with `raftlm-chaos`): each node's config
//! lists its peers at the proxies' addresses, and cutting a node's links
//! drops and refuses its connections both ways.

mod common;
#[allow(dead_code)]
#[path = "../chaos/src/proxy.rs"]
mod proxy;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{ProcessCluster, license_client, status};
use proxy::{LOOPBACK, Link, Proxies};
use raftlm::proto::v1 as pb;

/// How long the node is cut off: a hundred of its election attempts.
const ISOLATION: Duration = Duration::from_secs(30);

/// Node `id`'s own view of its term (NodeInfo, answered by every node).
async fn term_of(cluster: &ProcessCluster, id: usize) -> Option<u64> {
    Some(info_of(cluster, id).await?.term)
}

/// Node `id`'s own view (NodeInfo), if it answers.
async fn info_of(cluster: &ProcessCluster, id: usize) -> Option<pb::NodeInfoReply> {
    let mut client = license_client(&cluster.addresses[id - 1]).await?;
    let reply = client
        .node_info(pb::NodeInfoRequest::default())
        .await
        .ok()?;
    Some(reply.into_inner())
}

/// The access point's status once it serves the licensed features.
async fn serving(cluster: &ProcessCluster, limit: Duration) -> pb::StatusReply {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(reply) = status(&cluster.access_point).await
            && !reply.features.is_empty()
        {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "access point not serving licenses\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// A follower cut off for 30 s does not raise its term, and when its links
// come back the leader is the same node in the same term: no election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_rejoins_without_an_election() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let targets: Vec<SocketAddr> = cluster
        .peer_addresses
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let proxies = Proxies::start(LOOPBACK, &targets).await.unwrap();
    // Every node reaches every peer through the proxy of that ordered pair.
    for from in 0..3 {
        cluster.tune(from + 1, |config| {
            for to in (0..3).filter(|&to| to != from) {
                config.nodes[to].peer_address = proxies.address(from, to).unwrap().to_string();
            }
        });
    }
    cluster.start_all();
    let before = serving(&cluster, Duration::from_secs(30)).await;
    let leader = before.active_node as usize;
    let isolated = leader % 3 + 1;
    // Let the follower hold the whole log and the leader's term.
    let leader_applied = info_of(&cluster, leader)
        .await
        .expect("the leader answers NodeInfo")
        .applied_index;
    common::wait_until(
        &format!(
            "node {isolated} has applied index {leader_applied} in term {}",
            before.term
        ),
        Duration::from_secs(30),
        || async {
            info_of(&cluster, isolated)
                .await
                .filter(|i| i.term == before.term && i.applied_index >= leader_applied)
        },
    )
    .await;
    let term_before = term_of(&cluster, isolated).await.unwrap();
    assert_eq!(
        term_before,
        before.term,
        "node {isolated} is not in the leader's term\n{}",
        cluster.logs()
    );
    eprintln!(
        "node {leader} leads term {}; cutting node {isolated} off",
        before.term
    );

    for other in (1..=3).filter(|&id| id != isolated) {
        proxies.set_both(isolated - 1, other - 1, Link::Down { blackhole: false });
    }
    let cut_at = Instant::now();
    let mut highest = term_before;
    while cut_at.elapsed() < ISOLATION {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(term) = term_of(&cluster, isolated).await {
            highest = highest.max(term);
        }
    }
    let term_cut_off = term_of(&cluster, isolated).await.unwrap();
    eprintln!(
        "after {ISOLATION:?} cut off, node {isolated} is in term {term_cut_off} (highest seen {highest}; it was {term_before})"
    );
    // The rest of the cluster served throughout.
    let during = serving(&cluster, Duration::from_secs(5)).await;
    proxies.heal();

    // Time for the node to come back, try its elections and hear the leader.
    // Kept: the node is already in the leader's term, so there is nothing to
    // wait for; this window is where a disruptive election would show.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = serving(&cluster, Duration::from_secs(10)).await;
    let term_rejoined = term_of(&cluster, isolated).await.unwrap();
    eprintln!(
        "after the links came back: node {} leads term {}; node {isolated} is in term {term_rejoined}",
        after.active_node, after.term
    );
    assert_eq!(
        highest,
        term_before,
        "node {isolated}'s term grew while it was cut off\n{}",
        cluster.logs()
    );
    assert_eq!(
        (during.active_node, during.term),
        (before.active_node, before.term),
        "the leader changed while node {isolated} was cut off\n{}",
        cluster.logs()
    );
    assert_eq!(
        (after.active_node, after.term),
        (before.active_node, before.term),
        "node {isolated}'s return forced an election\n{}",
        cluster.logs()
    );
    assert_eq!(
        term_rejoined,
        before.term,
        "node {isolated} is not back in the leader's term\n{}",
        cluster.logs()
    );
    let log = cluster.log(isolated);
    assert!(
        log.contains("no election: a pre-vote round"),
        "node {isolated} did not try pre-votes while cut off\n{log}"
    );
}
