//! A node cut off from its peers keeps running, and comes back without
//! forcing an election: its pre-votes (src/raft/pre_vote.rs) find no
//! majority, so its term does not grow while it is cut off, and the leader
//! keeps its term and its place when it returns. The three `raftlm server`
//! processes reach each other only through the harness's TCP proxies
//! (`raftlm_chaos::proxy`): each node's peer view in its config
//! (`raftlm::local::files::NodePlan::peer_view`) lists its peers at the
//! proxies' addresses, and cutting a node's links drops and refuses its
//! connections both ways.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raftlm::local::files::{self, LicenseFile, Plan, Security};
use raftlm::local::process::{ENV_LOG, LOG_FILTER, Processes};
use raftlm::local::wait::{wait_licensed, wait_until};
use raftlm::proto::v1 as pb;
use raftlm::proto::v1::license_client::LicenseClient;
use raftlm::tls::client::ClientTls;
use raftlm_chaos::cluster::free_port;
use raftlm_chaos::proxy::{LOOPBACK, Link, Proxies};

/// How long the node is cut off: a hundred of its election attempts.
const ISOLATION: Duration = Duration::from_secs(30);

/// Three node processes whose peer links go through [`Proxies`].
struct Isolated {
    /// Declared first: the processes are killed before the directory goes.
    processes: Processes,
    proxies: Proxies,
    addresses: Vec<String>,
    access_point: String,
    client_tls: ClientTls,
    _dir: tempfile::TempDir,
}

impl Isolated {
    /// Writes the files (a license for `features`) and starts the nodes.
    async fn start(features: &[(&str, u32)]) -> Isolated {
        let dir = tempfile::tempdir().unwrap();
        let port = || free_port().unwrap();
        let addresses: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", port())).collect();
        let peers: Vec<SocketAddr> = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], port())))
            .collect();
        let proxies = Proxies::start(LOOPBACK, &peers).await.unwrap();
        let peer_strings: Vec<String> = peers.iter().map(ToString::to_string).collect();
        let mut nodes = files::nodes_at(&addresses, &peer_strings);
        // Every node reaches every peer through the proxy of that ordered pair.
        for (from, node) in nodes.iter_mut().enumerate() {
            node.peer_view = Some(
                (0..3)
                    .map(|to| match proxies.address(from, to) {
                        Some(proxy) if to != from => proxy.to_string(),
                        _ => peer_strings[to].clone(),
                    })
                    .collect(),
            );
        }
        let access_point: SocketAddr = SocketAddr::from(([127, 0, 0, 103], port()));
        let mut plan = Plan::new(dir.path(), nodes);
        plan.access_point = files::bind_access_point(access_point);
        plan.licenses = vec![LicenseFile::features("acme.lic", &plan.cluster, features)];
        plan.security = Security::Tls {
            sans: vec!["127.0.0.1".into(), access_point.ip().to_string()],
        };
        let written = plan.write().unwrap();
        let mut processes =
            Processes::new(&common::raftlm_binary(), dir.path(), &written.config_files);
        processes.set_env_all(ENV_LOG, Some(LOG_FILTER.as_ref()));
        for i in 0..3 {
            processes.start(i).unwrap();
        }
        Isolated {
            processes,
            proxies,
            addresses,
            access_point: access_point.to_string(),
            client_tls: written.client_tls,
            _dir: dir,
        }
    }

    fn log(&self, id: usize) -> String {
        self.processes.log(id - 1)
    }

    fn logs(&self) -> String {
        self.processes.logs()
    }
}

/// Node `id`'s own view of its term (NodeInfo, answered by every node).
async fn term_of(cluster: &Isolated, id: usize) -> Option<u64> {
    Some(info_of(cluster, id).await?.term)
}

/// Node `id`'s own view (NodeInfo), if it answers.
async fn info_of(cluster: &Isolated, id: usize) -> Option<pb::NodeInfoReply> {
    let channel = cluster
        .client_tls
        .endpoint(&cluster.addresses[id - 1], Duration::from_millis(300))
        .ok()?
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .ok()?;
    let reply = LicenseClient::new(channel)
        .node_info(pb::NodeInfoRequest::default())
        .await
        .ok()?;
    Some(reply.into_inner())
}

/// The access point's status once it serves the licensed features.
async fn serving(cluster: &Isolated, limit: Duration) -> pb::StatusReply {
    match wait_licensed(&cluster.access_point, &cluster.client_tls, limit).await {
        Ok(reply) => reply,
        Err(timeout) => panic!(
            "access point not serving licenses: {timeout}\n{}",
            cluster.logs()
        ),
    }
}

// A follower cut off for 30 s does not raise its term, and when its links
// come back the leader is the same node in the same term: no election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_rejoins_without_an_election() {
    let cluster = Isolated::start(&[("cad", 5)]).await;
    let before = serving(&cluster, Duration::from_secs(30)).await;
    let leader = before.active_node as usize;
    let isolated = leader % 3 + 1;
    // Let the follower hold the whole log and the leader's term.
    let leader_applied = info_of(&cluster, leader)
        .await
        .expect("the leader answers NodeInfo")
        .applied_index;
    wait_until(
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
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}\n{}", cluster.logs()));
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
        cluster
            .proxies
            .set_both(isolated - 1, other - 1, Link::Down { blackhole: false });
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
    cluster.proxies.heal();

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
