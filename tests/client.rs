//! The client library against an in-process three-node cluster: discovery by
//! leader hints, check-out and check-in, refusals, retries with one request
//! id, failover under a live session, and caching mode through a full outage.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use raftlm::client::Want;
use raftlm::client::{
    Client, ClientError, ClientOptions, DenyReason, GrantToken, ServerList, Session, SessionEvent,
    SessionId, SessionOptions, SessionRequest, SessionSecret, SessionState,
};
use raftlm::license::signature::VendorSigningKey;
use raftlm::node::Node;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// How long a test waits for something the cluster or session should do.
const PATIENCE: Duration = Duration::from_secs(30);

/// Clusters that may run at once in this test binary: on a small machine,
/// many clusters starved of CPU keep losing their leases and never serve.
static CLUSTER_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Three nodes on loopback that can be stopped and restarted on the same
/// addresses and data directories.
struct TestCluster {
    dir: tempfile::TempDir,
    key: VendorSigningKey,
    public: PathBuf,
    addresses: Vec<String>,
    peer_addresses: Vec<String>,
    nodes: Vec<Option<Node>>,
    session_ttl_ms: Option<u64>,
    _slot: tokio::sync::SemaphorePermit<'static>,
}

impl TestCluster {
    async fn start() -> TestCluster {
        TestCluster::start_with_ttl(None).await
    }

    async fn start_with_ttl(session_ttl_ms: Option<u64>) -> TestCluster {
        let slot = CLUSTER_SLOTS.acquire().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = common::vendor_key(dir.path());
        let bound = common::bind_three().await;
        let mut cluster = TestCluster {
            dir,
            key,
            public,
            addresses: bound.addresses,
            peer_addresses: bound.peer_addresses,
            nodes: vec![None, None, None],
            session_ttl_ms,
            _slot: slot,
        };
        for (i, (client, peer)) in bound.listeners.into_iter().enumerate() {
            cluster.start_on(i, client, peer).await;
        }
        cluster
    }

    async fn start_on(&mut self, i: usize, client: TcpListener, peer: TcpListener) {
        let mut config = common::node_config(
            self.dir.path(),
            i as u64 + 1,
            &self.addresses,
            &self.peer_addresses,
            &self.public,
        );
        if let Some(ttl) = self.session_ttl_ms {
            config.timing.session_ttl_ms = ttl;
            config.validate().unwrap();
        }
        self.nodes[i] = Some(
            Node::start_with_listeners(config, client, peer)
                .await
                .unwrap(),
        );
    }

    /// Restarts a stopped node on its old address and data directory.
    async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {} is running", i + 1);
        let client = common::rebind(&self.addresses[i]).await;
        let peer = common::rebind(&self.peer_addresses[i]).await;
        self.start_on(i, client, peer).await;
    }

    async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
    }

    /// The index of the node that serves, waiting for one.
    async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            for (i, node) in self.nodes.iter().enumerate() {
                if node.as_ref().is_some_and(|n| n.shared().serving().is_ok()) {
                    return i;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .flatten()
                    .map(|n| {
                        let m = n.raft().metrics().borrow().clone();
                        format!(
                            "node {}: {:?} term {} leader {:?}: {:?}",
                            m.id,
                            m.state,
                            m.current_term,
                            m.current_leader,
                            n.shared().serving().err()
                        )
                    })
                    .collect();
                panic!("no node serves after {PATIENCE:?}: {states:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node addresses in the order of `indexes`.
    fn servers(&self, indexes: &[usize]) -> ServerList {
        ServerList::from_addresses(indexes.iter().map(|&i| &self.addresses[i])).unwrap()
    }

    fn all_servers(&self) -> ServerList {
        self.servers(&[0, 1, 2])
    }

    async fn import(&self, features: &[(&str, u32)]) {
        // A loaded machine may take a while to elect and activate the first node.
        self.leader().await;
        let client = Client::with_options(self.all_servers(), quick_client());
        let reply = client
            .import_license("acme.lic", &common::signed_license(&self.key, features))
            .await
            .unwrap();
        assert_eq!(reply.lines as usize, features.len());
    }

    async fn shutdown(mut self) {
        for i in 0..3 {
            self.stop(i).await;
        }
    }
}

/// Client retry timing short enough for tests.
fn quick_client() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        tls: common::admin_tls(),
    }
}

/// Session timing short enough for tests: heartbeats every 200 ms, caching after 1 s of silence.
fn quick_session() -> SessionOptions {
    SessionOptions {
        vendor: "acme".into(),
        user: "ada".into(),
        host: "ws1".into(),
        heartbeat_interval: Some(Duration::from_millis(200)),
        unreachable_after: Duration::from_secs(1),
        ..SessionOptions::default()
    }
}

/// Waits for the first event that `wanted` accepts; panics with the events seen otherwise.
async fn wait_event(
    events: &mut broadcast::Receiver<SessionEvent>,
    what: &str,
    wanted: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if wanted(&event) => return event,
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(error)) => {
                panic!("event channel failed while waiting for {what}: {error}; seen {seen:?}")
            }
            Err(_) => panic!("no {what} within {PATIENCE:?}; seen {seen:?}"),
        }
    }
}

/// Seats of `feature` in use and the grant tokens held by `session`, as the cluster reports them.
async fn cluster_view(
    client: &Client,
    feature: &str,
    session: SessionId,
) -> (u32, Vec<GrantToken>) {
    let status = client.status().await.unwrap();
    let in_use = status
        .features
        .iter()
        .find(|f| f.feature == feature)
        .map_or(0, |f| f.in_use);
    let tokens = status
        .grants
        .iter()
        .filter(|g| g.session_handle == session.public())
        .filter_map(|g| {
            g.token.map(|t| GrantToken {
                term: t.term,
                index: t.index,
                slot: t.slot,
            })
        })
        .collect();
    (in_use, tokens)
}

// A client given only a follower, or the node list with followers first, reaches the active node by its hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_leader_hint() {
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    let only_follower = Client::with_options(cluster.servers(&[followers[0]]), quick_client());
    let status = only_follower.status().await.unwrap();
    assert_eq!(status.active_address, cluster.addresses[leader]);
    assert_eq!(
        only_follower.last_address().as_deref(),
        Some(cluster.addresses[leader].as_str())
    );
    assert!(only_follower.highest_term() >= 1);

    let list = Client::with_options(
        cluster.servers(&[followers[0], followers[1], leader]),
        quick_client(),
    );
    list.status().await.unwrap();
    assert_eq!(
        list.last_address().as_deref(),
        Some(cluster.addresses[leader].as_str())
    );
    cluster.shutdown().await;
}

// A session checks seats out and in; the cluster's count of seats in use follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_checkin() {
    let cluster = TestCluster::start().await;
    cluster.import(&[("cad", 3)]).await;
    let client = Client::with_options(cluster.all_servers(), quick_client());
    let session = Session::start(client.clone(), quick_session());

    let grant = session.checkout("cad", 2).await.unwrap();
    assert_eq!(
        (
            grant.feature.as_str(),
            grant.count,
            grant.available,
            grant.total
        ),
        ("cad", 2, 1, 3)
    );
    assert_eq!(session.grants().await.unwrap(), vec![grant.clone()]);
    assert_eq!(
        cluster_view(&client, "cad", session.id()).await,
        (2, vec![grant.token])
    );

    let checkin = session.checkin(&grant).await.unwrap();
    assert!(checkin.released && checkin.count == 2, "{checkin:?}");
    assert!(session.grants().await.unwrap().is_empty());
    assert_eq!(
        cluster_view(&client, "cad", session.id()).await,
        (0, vec![])
    );

    session.close().await.unwrap();
    cluster.shutdown().await;
}

// A refusal comes back as Denied with the cluster's numbers and sentence, not retried into Unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_returns_the_numbers() {
    let cluster = TestCluster::start().await;
    cluster.import(&[("cad", 3)]).await;
    let client = Client::with_options(cluster.all_servers(), quick_client());
    let session = Session::start(client.clone(), quick_session());

    let error = session.checkout("cad", 5).await.unwrap_err();
    assert_eq!(
        error,
        ClientError::Denied {
            feature: "cad".into(),
            reason: DenyReason::ExceedsLicensed,
            available: 3,
            total: 3,
            message: "5 seats of \"cad\" asked for, but only 3 are licensed".into(),
        }
    );
    let _held = session.checkout("cad", 2).await.unwrap();
    match session.checkout("cad", 2).await.unwrap_err() {
        ClientError::Denied {
            reason: DenyReason::InUse,
            available: 1,
            total: 3,
            ..
        } => {}
        other => panic!("expected an in-use denial, got {other:?}"),
    }
    match session.checkout("cam", 1).await.unwrap_err() {
        ClientError::Denied {
            reason: DenyReason::NoSuchFeature,
            ..
        } => {}
        other => panic!("expected no such feature, got {other:?}"),
    }
    session.close().await.unwrap();
    assert_eq!(
        cluster_view(&client, "cad", SessionId(0)).await.0,
        0,
        "close checks everything in"
    );
    cluster.shutdown().await;
}

// A check-out retried with the same request id gets the same grant token and takes one seat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_request_takes_one_seat() {
    let cluster = TestCluster::start().await;
    cluster.import(&[("cad", 3)]).await;
    let client = Client::with_options(cluster.all_servers(), quick_client());
    let id = SessionRequest {
        secret: SessionSecret::from_seed(0x5eed),
        seq: 1,
    };

    let first = client
        .checkout(&id, &Want::seats("acme", "cad", 1), "ada", "ws1")
        .await
        .unwrap();
    let again = client
        .checkout(&id, &Want::seats("acme", "cad", 1), "ada", "ws1")
        .await
        .unwrap();
    assert_eq!(first.token, again.token);
    assert_eq!(
        cluster_view(&client, "cad", id.secret.handle()).await,
        (1, vec![first.token])
    );
    cluster.shutdown().await;
}

// When the active node stops, the session's heartbeat re-attaches the same grant to the new
// active node: no new check-out, the same seats in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_the_grant() {
    let mut cluster = TestCluster::start().await;
    cluster.import(&[("cad", 3)]).await;
    let leader = cluster.leader().await;
    let client = Client::with_options(cluster.all_servers(), quick_client());
    // Renewals may go unanswered for longer than a failover takes, so no caching mode.
    let options = SessionOptions {
        unreachable_after: Duration::from_secs(10),
        ..quick_session()
    };
    let session = Session::start(client.clone(), options);
    let mut events = session.subscribe();
    let grant = session.checkout("cad", 2).await.unwrap();
    let id = session.id();
    assert_eq!(grant.address, cluster.addresses[leader]);

    cluster.stop(leader).await;
    let event = wait_event(&mut events, "failover", |e| {
        matches!(e, SessionEvent::FailedOver { .. })
    })
    .await;
    let SessionEvent::FailedOver { from, to, term } = event else {
        unreachable!()
    };
    assert_eq!(from, cluster.addresses[leader]);
    assert_ne!(to, from);
    assert!(
        term > grant.term,
        "term {term} after failover, grant from term {}",
        grant.term
    );
    assert_eq!(
        session.state(),
        SessionState::Connected {
            active_address: to.clone(),
            term
        }
    );

    assert_eq!(session.id(), id, "the session was not restarted");
    assert_eq!(session.grants().await.unwrap(), vec![grant.clone()]);
    assert_eq!(
        cluster_view(&client, "cad", id).await,
        (2, vec![grant.token])
    );

    session.close().await.unwrap();
    cluster.shutdown().await;
}

// With every node down the session enters caching mode and keeps its grant valid; when the
// nodes come back on the same addresses and data it leaves caching mode with the same grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_mode_through_a_full_outage() {
    let mut cluster = TestCluster::start().await;
    cluster.import(&[("cad", 3)]).await;
    let client = Client::with_options(cluster.all_servers(), quick_client());
    let session = Session::start(client.clone(), quick_session());
    let mut events = session.subscribe();
    let grant = session.checkout("cad", 1).await.unwrap();
    let id = session.id();

    for i in 0..3 {
        cluster.stop(i).await;
    }
    wait_event(&mut events, "caching mode", |e| {
        matches!(e, SessionEvent::EnteredCaching { .. })
    })
    .await;
    let state = session.state();
    assert!(
        matches!(state, SessionState::Caching { .. }) && state.grants_valid(),
        "{state:?}"
    );
    assert_eq!(
        session.grants().await.unwrap(),
        vec![grant.clone()],
        "grants are held while caching"
    );

    for i in 0..3 {
        cluster.restart(i).await;
    }
    let event = wait_event(&mut events, "leaving caching mode", |e| {
        matches!(e, SessionEvent::LeftCaching { .. })
    })
    .await;
    let SessionEvent::LeftCaching { cached_for, .. } = event else {
        unreachable!()
    };
    assert!(cached_for > Duration::ZERO);
    assert!(
        matches!(session.state(), SessionState::Connected { .. }),
        "{:?}",
        session.state()
    );
    assert_eq!(session.id(), id, "the session was not restarted");
    assert_eq!(session.grants().await.unwrap(), vec![grant.clone()]);
    assert_eq!(
        cluster_view(&client, "cad", id).await,
        (1, vec![grant.token])
    );

    session.close().await.unwrap();
    assert_eq!(cluster_view(&client, "cad", id).await, (0, vec![]));
    cluster.shutdown().await;
}

/// A TCP proxy in front of one node that the test can cut (every connection
/// dropped, new ones closed at once) and reopen: a network partition between
/// one client and the cluster.
struct Proxy {
    address: String,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (open, open_rx) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                if !*open_rx.borrow() {
                    continue; // dropped: closed at once
                }
                let mut cut = open_rx.clone();
                let target = target.clone();
                connections.spawn(async move {
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Proxy {
            address,
            open,
            task,
        }
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// A session cut off from the cluster for longer than the session TTL finds its grant expired
// when it reconnects: it leaves caching mode, starts a new session id and checks the lost
// grant out again, reporting each step as an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_recovers_its_grant() {
    // The shortest TTL the config allows (three election timeouts).
    let cluster = TestCluster::start_with_ttl(Some(2400)).await;
    cluster.import(&[("cad", 3)]).await;
    let leader = cluster.leader().await;
    let observer = Client::with_options(cluster.all_servers(), quick_client());
    // The session reaches the cluster only through the proxy (to the active node, so that no
    // leader hint leads it around the proxy).
    let proxy = Proxy::start(cluster.addresses[leader].clone()).await;
    let through_proxy = ServerList::parse(&proxy.address).unwrap();
    let session = Session::start(
        Client::with_options(through_proxy, quick_client()),
        quick_session(),
    );
    let mut events = session.subscribe();
    let grant = session.checkout("cad", 2).await.unwrap();
    let old = session.id();

    proxy.set_open(false);
    wait_event(&mut events, "caching mode", |e| {
        matches!(e, SessionEvent::EnteredCaching { .. })
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cluster_view(&observer, "cad", old).await.0 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not expire the silent session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        session.grants().await.unwrap(),
        vec![grant.clone()],
        "the grant is cached meanwhile"
    );

    proxy.set_open(true);
    wait_event(&mut events, "leaving caching mode", |e| {
        matches!(e, SessionEvent::LeftCaching { .. })
    })
    .await;
    let lost = wait_event(&mut events, "a lost grant", |e| {
        matches!(e, SessionEvent::GrantLost { .. })
    })
    .await;
    assert_eq!(
        lost,
        SessionEvent::GrantLost {
            token: grant.token,
            feature: "cad".into(),
            count: 2
        }
    );
    let restarted = wait_event(&mut events, "a session restart", |e| {
        matches!(e, SessionEvent::SessionRestarted { .. })
    })
    .await;
    assert_eq!(
        restarted,
        SessionEvent::SessionRestarted {
            old,
            new: session.id()
        }
    );
    let recovered = wait_event(&mut events, "a recovered grant", |e| {
        matches!(e, SessionEvent::GrantRecovered { .. })
    })
    .await;
    let SessionEvent::GrantRecovered {
        lost,
        grant: new_grant,
    } = recovered
    else {
        unreachable!()
    };
    assert_eq!(lost, grant.token);
    assert_ne!(new_grant.token, grant.token);
    assert_eq!(session.grants().await.unwrap(), vec![new_grant.clone()]);
    assert_eq!(
        cluster_view(&observer, "cad", session.id()).await,
        (2, vec![new_grant.token])
    );

    // The application's old grant still checks in: it names the replacement.
    let checkin = session.checkin(&grant).await.unwrap();
    assert!(checkin.released, "{checkin:?}");
    assert_eq!(
        cluster_view(&observer, "cad", session.id()).await,
        (0, vec![])
    );
    session.close().await.unwrap();
    cluster.shutdown().await;
}

// The application checks too: with the vendor's key compiled in, a grant backed only by
// the vendor's lines is accepted; once a customer trusts a key of their own in the
// cluster and adds lines signed with it, grants are refused (UntrustedLicense) and their
// seats go back at once, although the cluster itself counts those lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_own_key_yields_grants_the_application_refuses() {
    let cluster = TestCluster::start().await;
    cluster.import(&[("cad", 2)]).await;
    let admin = Client::with_options(cluster.all_servers(), quick_client());
    let vendor_app = SessionOptions {
        vendor_keys: vec![cluster.key.public_key()],
        ..quick_session()
    };
    let session = Session::start(admin.clone(), vendor_app.clone());
    let grant = session.checkout("cad", 1).await.unwrap();
    assert_eq!(grant.backing.len(), 1);
    session.close().await.unwrap();

    // The customer makes a key claiming to be acme's, trusts it and signs 100 seats.
    let customer = VendorSigningKey::generate(Some("acme"));
    admin
        .trust_key(&customer.public_key().to_file_text())
        .await
        .unwrap();
    let text = format!(
        "SERVER {} ANY 27000\nVENDOR acme\nINCREMENT cad acme 2.0 permanent 100 SN=extra\n",
        common::CLUSTER
    );
    let signed = raftlm::license::signature::sign_text("extra.lic", &text, &customer).unwrap();
    admin.import_license("extra.lic", &signed).await.unwrap();
    assert_eq!(cluster_view(&admin, "cad", SessionId(0)).await.0, 0);

    // The cluster now counts 102 seats, and an application without the vendor's key takes one…
    let unchecked = Session::start(admin.clone(), quick_session());
    let taken = unchecked.checkout("cad", 1).await.unwrap();
    assert_eq!(taken.total, 102);
    unchecked.close().await.unwrap();
    // …but the vendor's application refuses the grant and gives the seat back.
    let session = Session::start(admin.clone(), vendor_app);
    match session.checkout("cad", 1).await {
        Err(ClientError::UntrustedLicense { feature, reason }) => {
            assert_eq!(feature, "cad");
            assert!(
                reason.contains(
                    "INCREMENT line cad acme 2.0 100 seats SN=extra is not signed by the vendor's key"
                ),
                "{reason}"
            );
        }
        other => panic!("expected an untrusted license, got {other:?}"),
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cluster_view(&admin, "cad", SessionId(0)).await.0 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused grant's seat was not checked in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    session.close().await.unwrap();
    cluster.shutdown().await;
}

// A session the cluster expired is told so by its next renewal, even when it
// holds no grant, and goes on under a new id at once rather than at its next
// check-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_reports_an_expired_session() {
    // The shortest TTL the config allows (three election timeouts).
    let cluster = TestCluster::start_with_ttl(Some(2400)).await;
    cluster.import(&[("cad", 3)]).await;
    // Heartbeats farther apart than the TTL: the cluster expires the session between two.
    let options = SessionOptions {
        heartbeat_interval: Some(Duration::from_secs(4)),
        unreachable_after: Duration::from_secs(10),
        ..quick_session()
    };
    let session = Session::start(
        Client::with_options(cluster.all_servers(), quick_client()),
        options,
    );
    let mut events = session.subscribe();
    let grant = session.checkout("cad", 1).await.unwrap();
    assert!(session.checkin(&grant).await.unwrap().released);
    let old = session.id();
    let restarted = wait_event(&mut events, "a session restart", |e| {
        matches!(e, SessionEvent::SessionRestarted { .. })
    })
    .await;
    assert_eq!(
        restarted,
        SessionEvent::SessionRestarted {
            old,
            new: session.id()
        }
    );
    assert_ne!(session.id(), old);
    let again = session.checkout("cad", 1).await.unwrap();
    assert!(session.checkin(&again).await.unwrap().released);
    session.close().await.unwrap();
    cluster.shutdown().await;
}
