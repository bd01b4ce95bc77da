//! The client library against an in-process three-node cluster: discovery by
//! leader hints, check-out and check-in, refusals, retries with one request
//! id, failover under a live session, and caching mode through a full outage.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raftlm::client::Want;
use raftlm::client::{
    Client, ClientError, ClientOptions, DenyReason, GrantToken, ServerList, Session, SessionEvent,
    SessionId, SessionOptions, SessionRequest, SessionSecret, SessionState,
};
use raftlm::config::Config;
use raftlm::license::signature::VendorSigningKey;
use raftlm::local::in_process::{bind, start_again, start_nodes};
use raftlm::node::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// Keys and data; removed when the cluster is dropped.
    _dir: tempfile::TempDir,
    key: VendorSigningKey,
    addresses: Vec<String>,
    configs: Vec<Config>,
    nodes: Vec<Option<Node>>,
    _slot: tokio::sync::SemaphorePermit<'static>,
}

impl TestCluster {
    async fn start() -> TestCluster {
        TestCluster::start_tuned(|_| {}).await
    }

    async fn start_with_ttl(session_ttl_ms: Option<u64>) -> TestCluster {
        TestCluster::start_tuned(move |config| {
            if let Some(ttl) = session_ttl_ms {
                config.timing.session_ttl_ms = ttl;
            }
        })
        .await
    }

    /// Starts three nodes, each node's config changed by `tune` first.
    async fn start_tuned(tune: impl Fn(&mut Config)) -> TestCluster {
        let slot = CLUSTER_SLOTS.acquire().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = common::vendor_key(dir.path());
        let bound = bind(3).await.unwrap();
        let configs = common::node_configs(
            dir.path(),
            &bound.addresses,
            &bound.peer_addresses,
            &public,
            |config| {
                tune(config);
                config.validate().unwrap();
            },
        );
        TestCluster {
            _dir: dir,
            key,
            addresses: bound.addresses.clone(),
            nodes: start_nodes(&configs, bound).await.unwrap(),
            configs,
            _slot: slot,
        }
    }

    /// Restarts a stopped node on its old address and data directory.
    async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {} is running", i + 1);
        self.nodes[i] = Some(start_again(&self.configs[i]).await.unwrap());
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
        follow_leader_hints: true,
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

/// A session that reaches the cluster only through a proxy to the active
/// node (so that no leader hint leads it around the proxy), and the proxy.
async fn session_through_proxy(cluster: &TestCluster, options: SessionOptions) -> (Proxy, Session) {
    let leader = cluster.leader().await;
    let proxy = Proxy::start(cluster.addresses[leader].clone()).await;
    let through_proxy = ServerList::parse(&proxy.address).unwrap();
    let session = Session::start(Client::with_options(through_proxy, quick_client()), options);
    (proxy, session)
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
        .filter_map(|g| g.token.as_ref().map(raftlm::wire::token_from_pb))
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
    assert!(
        matches!(
            session.state(),
            SessionState::Connected { ref active_address, term: t, .. }
                if *active_address == to && t == term
        ),
        "{:?}",
        session.state()
    );
    assert!(session.state().grants_valid());

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
/// one client and the cluster. It can also lose replies: the node's bytes on
/// the connections open at [`Proxy::drop_replies`] are discarded while the
/// client's requests on them still reach the node, until [`Proxy::heal`] cuts
/// those connections (their byte streams are broken) and the client connects
/// afresh.
struct Proxy {
    address: String,
    open: tokio::sync::watch::Sender<bool>,
    lossy: tokio::sync::watch::Sender<Lossy>,
    /// Connections accepted so far; each is numbered from 1 in order.
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Which of a [`Proxy`]'s connections lose their replies, and which are cut.
#[derive(Debug, Clone, Copy, Default)]
struct Lossy {
    /// Connections numbered up to this one drop every byte from the node.
    drop_replies_upto: u64,
    /// Connections numbered up to this one are closed.
    cut_upto: u64,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (open, open_rx) = tokio::sync::watch::channel(true);
        let (lossy, lossy_rx) = tokio::sync::watch::channel(Lossy::default());
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                if !*open_rx.borrow() {
                    continue; // dropped: closed at once
                }
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let mut cut = open_rx.clone();
                let lossy = lossy_rx.clone();
                let mut lossy_cut = lossy_rx.clone();
                let target = target.clone();
                connections.spawn(async move {
                    let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = socket.into_split();
                    let (mut node_read, mut node_write) = upstream.into_split();
                    let requests = tokio::io::copy(&mut client_read, &mut node_write);
                    let replies = async move {
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            let n = match node_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if lossy.borrow().drop_replies_upto >= number {
                                continue; // lost on the way back
                            }
                            if client_write.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = requests => {}
                        _ = replies => {}
                        _ = cut.wait_for(|open| !*open) => {}
                        _ = lossy_cut.wait_for(|l| l.cut_upto >= number) => {}
                    }
                });
            }
        });
        Proxy {
            address,
            open,
            lossy,
            accepted,
            task,
        }
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// From now on the connections open now lose every reply; requests on
    /// them still reach the node. Connections opened later are not affected.
    fn drop_replies(&self) {
        let upto = self.accepted.load(Ordering::SeqCst);
        self.lossy.send_modify(|l| l.drop_replies_upto = upto);
    }

    /// Cuts the connections that lost replies; new ones work both ways.
    fn heal(&self) {
        self.lossy.send_modify(|l| {
            l.cut_upto = l.drop_replies_upto;
            l.drop_replies_upto = 0;
        });
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
    let observer = Client::with_options(cluster.all_servers(), quick_client());
    let (proxy, session) = session_through_proxy(&cluster, quick_session()).await;
    let mut events = session.subscribe();
    let grant = session.checkout("cad", 2).await.unwrap();
    let old = session.id();

    proxy.set_open(false);
    wait_event(&mut events, "caching mode", |e| {
        matches!(e, SessionEvent::EnteredCaching { .. })
    })
    .await;
    wait_until("the cluster expires the silent session", || async {
        cluster_view(&observer, "cad", old).await.0 == 0
    })
    .await;
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
// seats go back before the refusal is returned, although the cluster itself counts those lines.
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
    // The refusal comes after the check-in was answered: the seat is free already.
    assert_eq!(
        cluster_view(&admin, "cad", SessionId(0)).await.0,
        0,
        "the refused grant's seat was not checked in"
    );
    session.close().await.unwrap();
    cluster.shutdown().await;
}

// A session the cluster expired is told so by its next renewal, even when it
// holds no grant, and goes on under a new id at once rather than at its next
// check-out.
// With no grace period a session cut off from the cluster stops treating
// its grant as valid before the cluster can free the seats: one TTL, less a
// margin, after the send time of the last renewal the cluster answered, which
// is before the cluster last heard from it. Another application that takes
// the freed seats never shares them with the cut-off one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grace_a_cut_off_session_stops_using_seats_before_they_are_freed() {
    let cluster = TestCluster::start_with_ttl(Some(2400)).await;
    cluster.import(&[("cad", 2)]).await;
    let observer = Client::with_options(cluster.all_servers(), quick_client());
    let (proxy, session) = session_through_proxy(
        &cluster,
        SessionOptions {
            grace_period: Duration::ZERO,
            unreachable_after: Duration::from_secs(10),
            ..quick_session()
        },
    )
    .await;
    let grant = session.checkout("cad", 2).await.unwrap();
    let old = session.id();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !session.state().grants_valid() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            session.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    proxy.set_open(false);
    let mut invalid_since = None;
    loop {
        // Validity is read before the cluster is asked, so a "freed" seen
        // below happened after this reading.
        let valid = session.state().grants_valid();
        if !valid && invalid_since.is_none() {
            invalid_since = Some(tokio::time::Instant::now());
        }
        let in_use = cluster_view(&observer, "cad", old).await.0;
        if in_use == 0 {
            assert!(
                !valid,
                "the cluster freed the seats while the cut-off session still held its grant \
                 valid: {:?}",
                session.state()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not expire the silent session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(invalid_since.is_some());
    let other = Session::start(
        Client::with_options(cluster.all_servers(), quick_client()),
        quick_session(),
    );
    other.checkout("cad", 2).await.unwrap();
    assert!(!session.state().grants_valid(), "{:?}", session.state());
    assert!(
        matches!(session.state(), SessionState::GraceExpired { .. }),
        "{:?}",
        session.state()
    );
    drop(grant);
    other.close().await.unwrap();
    cluster.shutdown().await;
}

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

/// Waits until `check` holds, asking again every 50 ms; panics naming `what` after PATIENCE.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_until(what, PATIENCE, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
}

// No seat leaks after a stale answer: a check-out whose reply was lost, and that is retried
// only after 40 more requests of its session pushed it out of the cluster's retry window, is
// answered "stale request". The session then finds the grant the cluster made for it and
// holds it (listed, checked in, nothing left at close) instead of telling the application it
// got nothing while its heartbeats keep the seat taken for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_checkout_adopts_the_grant_it_took() {
    let cluster = TestCluster::start().await;
    cluster.import(&[("cad", 3), ("cam", 3)]).await;
    let leader = cluster.leader().await;
    let observer = Client::with_options(cluster.all_servers(), quick_client());
    let proxy = Proxy::start(cluster.addresses[leader].clone()).await;
    // One attempt outlasts the lost reply: the check-out is retried only when
    // the heal cuts its connection.
    let client_options = ClientOptions {
        call_timeout: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(20),
        ..quick_client()
    };
    let session = Arc::new(Session::start(
        Client::with_options(ServerList::parse(&proxy.address).unwrap(), client_options),
        quick_session(),
    ));
    let mut events = session.subscribe();
    wait_event(&mut events, "the first answer", |e| {
        matches!(e, SessionEvent::Connected { .. })
    })
    .await;
    let id = session.id();

    // The check-out goes out on the session's connection and is committed; its
    // reply is lost.
    proxy.drop_replies();
    let first = tokio::spawn({
        let session = session.clone();
        async move { session.checkout("cad", 1).await }
    });
    wait_until("the check-out is committed", || async {
        cluster_view(&observer, "cad", id).await.1.len() == 1
    })
    .await;
    let (_, committed) = cluster_view(&observer, "cad", id).await;
    // A renewal gets no answer within `unreachable_after` either, so the client
    // drops that connection and dials a new one, which answers.
    wait_event(&mut events, "caching mode", |e| {
        matches!(e, SessionEvent::EnteredCaching { .. })
    })
    .await;
    for _ in 0..20 {
        let other = session.checkout("cam", 1).await.unwrap();
        assert!(session.checkin(&other).await.unwrap().released);
    }
    proxy.heal();

    let grant = first
        .await
        .unwrap()
        .expect("the stale check-out adopts its grant");
    assert_eq!((grant.feature.as_str(), grant.count), ("cad", 1));
    assert_eq!(vec![grant.token], committed, "the grant the cluster made");
    assert_eq!(
        cluster_view(&observer, "cad", id).await,
        (1, vec![grant.token]),
        "exactly one grant for the check-out"
    );
    assert_eq!(session.grants().await.unwrap(), vec![grant.clone()]);

    let checkin = session.checkin(&grant).await.unwrap();
    assert!(checkin.released, "{checkin:?}");
    assert_eq!(cluster_view(&observer, "cad", id).await, (0, vec![]));
    let session = Arc::into_inner(session).expect("no other handle on the session");
    session.close().await.unwrap();
    assert_eq!(cluster_view(&observer, "cam", id).await, (0, vec![]));
    cluster.shutdown().await;
}

// SessionGrants answers only the holder of the session's secret, with the session's own
// grants oldest first (filtered by feature, with the lines behind them), and touches no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_grants_answers_only_the_sessions_own_grants() {
    let cluster = TestCluster::start().await;
    cluster.import(&[("cad", 3), ("cam", 3)]).await;
    let leader = cluster.leader().await;
    let mut wire = common::license_client(&cluster.addresses[leader]).await;
    let mut tokens = Vec::new();
    for (session, seq, feature) in [(1, 1, "cad"), (1, 2, "cam"), (1, 3, "cad"), (2, 1, "cad")] {
        let reply = wire
            .checkout(common::checkout_request(session, seq, feature, 1))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.granted, "{reply:?}");
        tokens.push(reply.token.unwrap());
    }
    let raft = cluster.nodes[leader].as_ref().unwrap().raft().clone();
    let last_index = || raft.metrics().borrow().last_log_index;
    let before = last_index();
    let ask = |session: u64, feature: &str| raftlm::proto::v1::SessionGrantsRequest {
        session_secret: common::secret(session),
        vendor: if feature.is_empty() { "" } else { "acme" }.into(),
        feature: feature.into(),
        version: String::new(),
        after: None,
    };

    let cad = wire
        .session_grants(ask(1, "cad"))
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<_> = cad.grants.iter().map(|g| g.token.unwrap()).collect();
    assert_eq!(
        listed,
        vec![tokens[0], tokens[2]],
        "session 1's cad grants, oldest first"
    );
    assert!(
        cad.grants
            .iter()
            .all(|g| g.session_handle == common::handle(1))
    );
    assert_eq!(cad.lines.len(), 1);
    assert_eq!(cad.cluster_name, common::CLUSTER);
    assert_eq!((cad.available, cad.total, cad.next), (0, 3, None));

    let all = wire.session_grants(ask(1, "")).await.unwrap().into_inner();
    let listed: Vec<_> = all.grants.iter().map(|g| g.token.unwrap()).collect();
    assert_eq!(listed, tokens[..3].to_vec());
    assert!(all.lines.is_empty());
    let other = wire.session_grants(ask(2, "")).await.unwrap().into_inner();
    let listed: Vec<_> = other.grants.iter().map(|g| g.token.unwrap()).collect();
    assert_eq!(listed, vec![tokens[3]], "another secret sees only its own");
    let stranger = wire.session_grants(ask(3, "")).await.unwrap().into_inner();
    assert!(stranger.grants.is_empty() && !stranger.session_expired);
    assert_eq!(last_index(), before, "a read touches no log");

    let mut bad = ask(1, "cad");
    bad.session_secret.pop();
    let status = wire.session_grants(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    cluster.shutdown().await;
}

// One source address may hold at most limits.sessions_per_address_max live sessions: with the
// limit at 5, a sixth new session from 127.0.0.1 is refused RESOURCE_EXHAUSTED with a sentence
// naming the address and the limit, before anything is proposed (the log does not move), and
// the client library reports it as a refusal at once. A session the address has already is not
// refused, and a new session from 127.0.0.2 is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_per_source_address_are_limited() {
    let cluster =
        TestCluster::start_tuned(|config| config.limits.sessions_per_address_max = 5).await;
    cluster.import(&[("cad", 10)]).await;
    let leader = cluster.leader().await;
    let address = &cluster.addresses[leader];
    let mut local = common::license_client(address).await;
    for session in 1..=5 {
        let reply = local
            .checkout(common::checkout_request(session, 1, "cad", 1))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.granted, "session {session}: {reply:?}");
    }
    let raft = cluster.nodes[leader].as_ref().unwrap().raft().clone();
    let last_index = || raft.metrics().borrow().last_log_index;
    let before = last_index();
    let status = local
        .checkout(common::checkout_request(6, 1, "cad", 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let expected = "127.0.0.1 has 5 live sessions already, the most one address may have \
                    (limits.sessions_per_address_max = 5): close sessions there, or raise the limit";
    assert_eq!(status.message(), expected);
    assert_eq!(
        status.metadata().get("raftlm-limit").unwrap(),
        "limits.sessions_per_address_max"
    );
    assert_eq!(last_index(), before, "the refusal touched the log");

    // The client library gives up at once: the cluster refused.
    let library = Session::start(
        Client::with_options(cluster.servers(&[leader]), quick_client()),
        quick_session(),
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        library.checkout("cad", 1).await.unwrap_err(),
        ClientError::Refused(expected.into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retried a refusal"
    );
    drop(library);
    assert_eq!(last_index(), before, "the refusal touched the log");

    // A session the address has already goes on.
    let reply = local
        .checkout(common::checkout_request(1, 2, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.granted, "{reply:?}");

    // Another source address starts a new session.
    let mut other = common::license_client_from(address, "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let reply = other
        .checkout(common::checkout_request(7, 1, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.granted, "{reply:?}");
    cluster.shutdown().await;
}
