//! The access point under failure, with the real binary as three processes:
//! kill -9 and SIGSTOP of the active node, session expiry, refusals.

mod common;

use std::time::{Duration, Instant};

use common::process::{ProcessCluster, license_client, status};
use raftlm::proto::v1 as pb;

use common::checkout_request as checkout;

/// A started cluster licensed for `features`, every node's config changed
/// by `tune`, and its active node once the access point serves them all.
async fn licensed_cluster(
    features: &[(&str, u32)],
    tune: impl Fn(&mut raftlm::config::Config),
) -> (ProcessCluster, usize) {
    let mut cluster = ProcessCluster::new(features);
    cluster.tune_all(tune);
    cluster.start_all();
    let reply = common::wait_until(
        "the access point serves every licensed feature",
        Duration::from_secs(30),
        || async {
            status(&cluster.access_point)
                .await
                .filter(|reply| reply.features.len() == features.len())
        },
    )
    .await;
    (cluster, reply.active_node as usize)
}

/// Waits until the access point is served by a node other than `old`.
async fn wait_moved(cluster: &ProcessCluster, old: usize, limit: Duration) -> pb::StatusReply {
    let what = format!("the access point moves from node {old}");
    let moved = raftlm::local::wait::wait_until(&what, limit, || async {
        status(&cluster.access_point)
            .await
            .filter(|reply| reply.active_node as usize != old)
    })
    .await;
    moved.unwrap_or_else(|timeout| panic!("{timeout}\n{}", cluster.logs()))
}

// A client holding seats through kill -9 of the active node keeps them: same grant token,
// no second checkout, seats in use unchanged, and another node owns the access point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_survives_kill_of_the_active_node() {
    let (mut cluster, active) = licensed_cluster(&[("cad", 5)], |_| {}).await;
    let mut client = license_client(&cluster.access_point).await.unwrap();
    let granted = client
        .checkout(checkout(7, 1, "cad", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted, "{granted:?}");
    let token = granted.token.unwrap();

    cluster.kill(active);
    let after = wait_moved(&cluster, active, Duration::from_secs(15)).await;
    assert!(
        after.term > granted.term,
        "new term {} not above {}",
        after.term,
        granted.term
    );

    // The heartbeat re-attaches the grant to the new active node.
    let mut client = license_client(&cluster.access_point).await.unwrap();
    let renewed = client
        .renew(pb::RenewRequest {
            session_secret: common::secret(7),
            tokens: vec![token],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(renewed.unknown.is_empty(), "grant lost: {renewed:?}");
    let grants: Vec<_> = after
        .grants
        .iter()
        .filter(|g| g.session_handle == common::handle(7))
        .collect();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].token.as_ref(), Some(&token));
    assert_eq!(after.features[0].in_use, 2);
}

// A stopped active node is replaced; a request that reached it is answered after SIGCONT
// with UNAVAILABLE, never a grant, and the stopped node gives up the access point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_active_node_is_fenced() {
    let (cluster, active) = licensed_cluster(&[("cad", 5)], |_| {}).await;
    let paused_address = cluster.addresses[active - 1].clone();
    // Connect first, so the request is queued on an open connection while the node is stopped.
    let channel = common::client_tls()
        .endpoint(&paused_address, Duration::from_secs(2))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let mut stale = raftlm::proto::v1::license_client::LicenseClient::new(channel);
    stale.status(pb::StatusRequest::default()).await.unwrap();

    cluster.signal(active, libc::SIGSTOP);
    let request = tokio::spawn(async move { stale.checkout(checkout(9, 1, "cad", 1)).await });
    // Another node takes over (seen on its own address: the stopped node still holds the access point).
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_active = loop {
        let mut found = None;
        for (i, address) in cluster.addresses.iter().enumerate() {
            if i + 1 != active
                && let Some(reply) = status(address).await
            {
                found = Some((i + 1, reply));
            }
        }
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no node took over\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Kept: the old active node stays stopped a while after the takeover, as a
    // paused process would; its held request must still not be answered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.signal(active, libc::SIGCONT);

    let answer = request.await.unwrap();
    match answer {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(reply) => panic!("the stopped node answered after SIGCONT: {reply:?}"),
    }
    let moved = wait_moved(&cluster, active, Duration::from_secs(15)).await;
    assert_eq!(moved.active_node as usize, new_active.0);
    assert!(
        moved
            .grants
            .iter()
            .all(|g| g.session_handle != common::handle(9)),
        "the fenced request was granted"
    );
}

// A session that stops heartbeating (its process was killed without check-in) loses its
// seats after the session TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_session_expires_after_ttl() {
    let (cluster, _) =
        licensed_cluster(&[("cad", 5)], |config| config.timing.session_ttl_ms = 3000).await;
    let mut client = license_client(&cluster.access_point).await.unwrap();
    let granted = client
        .checkout(checkout(5, 1, "cad", 3))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = status(&cluster.access_point).await;
        if reply.is_some_and(|r| r.grants.is_empty() && r.features[0].in_use == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "silent session's seats were not freed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its late retry is refused, not granted again.
    let late = client
        .checkout(checkout(5, 1, "cad", 3))
        .await
        .unwrap()
        .into_inner();
    assert!(!late.granted);
    assert_eq!(late.reason, pb::DenyReason::SessionExpired as i32);
}

// A client asking for more seats than exist is refused at once, with the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_seats_than_licensed_is_refused_with_numbers() {
    let (cluster, _) = licensed_cluster(&[("cad", 5)], |_| {}).await;
    let mut client = license_client(&cluster.access_point).await.unwrap();
    let reply = client
        .checkout(checkout(3, 1, "cad", 6))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.granted);
    assert_eq!(reply.reason, pb::DenyReason::ExceedsLicensed as i32);
    assert_eq!((reply.available, reply.total), (5, 5));
    assert_eq!(
        reply.message,
        "6 seats of \"cad\" asked for, but only 5 are licensed"
    );
}

// A five-node cluster of processes serves a check-out through the access
// point, and still does with two of its nodes killed (the active one among
// them): three of five are a majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_serve_with_two_killed() {
    let mut cluster = ProcessCluster::with_nodes(5, &[("cad", 5)]);
    cluster.start_all();
    cluster.wait_licensed().await;
    let (active, _) = cluster.wait_active(Duration::from_secs(30)).await;
    let mut client = license_client(&cluster.access_point).await.unwrap();
    let first = client
        .checkout(checkout(51, 1, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(first.granted, "{first:?}");
    let follower = active % 5 + 1;
    cluster.kill(follower);
    cluster.kill(active);
    wait_moved(&cluster, active, Duration::from_secs(30)).await;
    let second = common::wait_until(
        "a check-out is granted with two nodes down",
        Duration::from_secs(30),
        || async {
            let mut client = license_client(&cluster.access_point).await?;
            let reply = client.checkout(checkout(52, 1, "cad", 1)).await.ok()?;
            Some(reply.into_inner()).filter(|r| r.granted)
        },
    )
    .await;
    assert_eq!(second.available, 3, "{second:?}");
}
