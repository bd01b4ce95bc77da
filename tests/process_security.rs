//! The trust boundaries with real processes: the peer plane admits only
//! members with certificates from the cluster CA, a peer cannot speak for
//! another, administrators need the role, sessions are secrets, expired
//! certificates are refused and rotated ones are picked up without a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::{ProcessCluster, license_client, status};
use raftlm::local::tls::ClusterTls;
use raftlm::proto::v1 as pb;
use raftlm::proto::v1::admin_client::AdminClient;
use raftlm::proto::v1::license_client::LicenseClient;
use raftlm::proto::v1::raft_client::RaftClient;
use raftlm::tls::cert::{self, IssueRequest, Subject};
use raftlm::tls::client::ClientTls;
use raftlm::tls::identity::node_dns_name;

async fn licensed(cluster: &mut ProcessCluster) -> pb::StatusReply {
    cluster.start_all();
    let deadline = Instant::now() + Duration::from_secs(30);
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

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A channel to `address` dialled with `tls`, or the connection error.
async fn dial(address: &str, tls: &ClientTls) -> Result<tonic::transport::Channel, String> {
    tls.endpoint(address, Duration::from_secs(2))
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A Raft Vote request claiming to come from node `from` in term `term`.
fn vote_request(from: u64, term: u64) -> pb::RaftMessage {
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(term, from),
        last_log_id: None,
    };
    pb::RaftMessage {
        payload: raftlm::codec::encode(&vote).unwrap(),
        wall_ms: 0,
        host_id: String::new(),
        ..Default::default()
    }
}

/// The result of sending a Vote to `address` over `tls`: the gRPC status
/// code, or `None` when no connection could be made at all.
async fn try_vote(address: &str, tls: &ClientTls, from: u64) -> Option<tonic::Code> {
    let channel = dial(address, tls).await.ok()?;
    match RaftClient::new(channel)
        .vote(vote_request(from, 1_000))
        .await
    {
        Ok(_) => Some(tonic::Code::Ok),
        Err(status) => Some(status.code()),
    }
}

/// Whether a gRPC server handled the request (any answer a service or the
/// router gives), as opposed to a connection that never carried it.
fn served(code: Option<tonic::Code>) -> bool {
    matches!(
        code,
        Some(
            tonic::Code::Ok
                | tonic::Code::Unimplemented
                | tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
        )
    )
}

/// Node `id`'s certificate as a peer presents it, dialling node `target`.
fn as_node(tls: &ClusterTls, id: u64, target: u64) -> ClientTls {
    let (cert, key) = tls.node(id);
    ClientTls::from_files(Some(&tls.ca()), Some(&cert), Some(&key))
        .unwrap()
        .with_server_name(node_dns_name(target, common::CLUSTER))
}

/// Waits until some node's log contains `needle`.
fn wait_log(cluster: &ProcessCluster, nodes: &[usize], needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !nodes.iter().any(|&id| cluster.log(id).contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "no log of nodes {nodes:?} says {needle:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// A node whose certificate comes from another CA cannot join: the members refuse its
// connections (and it refuses theirs), each log says why, and it never receives the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_a_certificate_from_another_ca_cannot_join() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let rogue = ClusterTls::create(
        &cluster.dir.path().join("rogue-tls"),
        common::CLUSTER,
        &[3],
        &["127.0.0.1".to_string()],
    )
    .unwrap();
    cluster.tune(3, |config| config.tls = rogue.node_config(3));
    let reply = licensed(&mut cluster).await;
    assert_ne!(reply.active_node, 3);
    // The leader dials node 3 and refuses its certificate; node 3, dialling the members for
    // votes, refuses theirs. Each side's log says why.
    let why = "certificate not issued by the cluster CA (unknown CA)";
    wait_log(&cluster, &[1, 2], why, Duration::from_secs(20));
    wait_log(&cluster, &[3], why, Duration::from_secs(20));
    let reply = status(&cluster.access_point).await.unwrap();
    let node3 = reply.nodes.iter().find(|n| n.id == 3).unwrap();
    assert_eq!(node3.role, "unreachable", "{reply:?}");
}

// No listening port of any node answers a Raft RPC without a peer certificate: the
// client ports and the access point have no Raft service, and the peer ports refuse a
// handshake without a member's certificate (an administrator's does not do either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_port_answers_raft_without_a_peer_certificate() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    licensed(&mut cluster).await;
    let client = common::client_tls();
    let admin = common::admin_tls();
    let mut client_ports = cluster.addresses.clone();
    client_ports.push(cluster.access_point.clone());
    for address in &client_ports {
        for tls in [&client, &admin] {
            assert_eq!(
                try_vote(address, tls, 1).await,
                Some(tonic::Code::Unimplemented),
                "{address} has a Raft service on the client plane"
            );
        }
        let plaintext = try_vote(address, &ClientTls::plaintext(), 1).await;
        assert!(
            !served(plaintext),
            "{address} served plaintext: {plaintext:?}"
        );
    }
    for (i, address) in cluster.peer_addresses.iter().enumerate() {
        let server = node_dns_name(i as u64 + 1, common::CLUSTER);
        for tls in [
            ClientTls::plaintext(),
            client.clone().with_server_name(&server),
            admin.clone().with_server_name(&server),
        ] {
            let answer = try_vote(address, &tls, 1).await;
            assert!(
                !served(answer),
                "peer port {address} answered a Raft RPC without a member's certificate: {answer:?}"
            );
        }
    }
    wait_log(
        &cluster,
        &[1, 2, 3],
        "no client certificate presented",
        Duration::from_secs(5),
    );
}

// A member's certificate speaks only for that member: node 2's certificate cannot send a
// vote as node 3, the refusal is logged, and the forged vote moves no term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_2_cannot_vote_as_node_3() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let before = licensed(&mut cluster).await;
    let target = if before.active_node == 1 { 2 } else { 1 };
    let from = if target == 2 { 3 } else { 2 };
    let claimed = 6 - target - from;
    let address = cluster.peer_addresses[target as usize - 1].clone();
    let forged = try_vote(&address, &as_node(common::tls(), from, target), claimed).await;
    assert_eq!(forged, Some(tonic::Code::PermissionDenied));
    wait_log(
        &cluster,
        &[target as usize],
        &format!("node {from}'s certificate sent a Raft request as node {claimed}"),
        Duration::from_secs(5),
    );
    let after = status(&cluster.access_point).await.unwrap();
    assert_eq!(after.term, before.term, "a forged vote moved the term");
    assert_eq!(after.active_node, before.active_node);
}

// A handover is believed only from the leader of its term. A member that does
// not lead, with its own certificate, tells a standby that it hands over the
// current term: refused FAILED_PRECONDITION and logged, no election starts,
// and the active node keeps serving in the same term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_from_a_member_that_does_not_lead_is_refused() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let before = licensed(&mut cluster).await;
    let active = before.active_node;
    let target = if active == 1 { 2 } else { 1 };
    let from = 6 - active - target;
    let address = cluster.peer_addresses[target as usize - 1].clone();
    let channel = dial(&address, &as_node(common::tls(), from, target))
        .await
        .unwrap();
    let refused = RaftClient::new(channel)
        .handover(pb::HandoverRequest {
            from,
            term: before.term,
            served: true,
        })
        .await
        .expect_err("a handover from a node that does not lead");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    wait_log(
        &cluster,
        &[target as usize],
        "handover refused: the sender does not lead that term",
        Duration::from_secs(5),
    );
    // Kept: that the refused handover changes nothing is an absence, so the
    // leader is checked after a window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status(&cluster.access_point).await.unwrap();
    assert_eq!(
        (after.term, after.active_node),
        (before.term, active),
        "a forged handover moved the cluster"
    );
}

// Admin RPCs need the administrator role: no certificate is UNAUTHENTICATED; a client's,
// a node's or an expired administrator's certificate is refused; the administrator's works,
// and the action is recorded with its author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rpcs_need_the_administrator_role() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    licensed(&mut cluster).await;
    let ca_dir = common::tls().dir.clone();
    let out = cluster.dir.path().join("certs");
    let now = now_unix();
    let issue = |subject, not_after_unix| {
        cert::issue(
            &ca_dir,
            &out,
            &IssueRequest {
                subject,
                extra_sans: Vec::new(),
                not_before_unix: now - 7200,
                not_after_unix,
            },
            true,
        )
        .unwrap()
    };
    let app = issue(Subject::Client { name: "app".into() }, now + 86_400);
    let expired = issue(
        Subject::Admin {
            name: "old-admin".into(),
        },
        now - 3600,
    );
    let with = |cert: &Path, key: &Path| {
        ClientTls::from_files(Some(&common::tls().ca()), Some(cert), Some(key))
            .unwrap()
            .with_server_name(common::CLUSTER)
    };
    let (node_cert, node_key) = common::tls().node(1);
    let remove = pb::RemoveLicenseRequest {
        name: "acme.lic".into(),
    };
    let ap = cluster.access_point.clone();
    let code = |tls: ClientTls| {
        let (ap, remove) = (ap.clone(), remove.clone());
        async move {
            match dial(&ap, &tls).await {
                Err(error) => Err(error),
                Ok(channel) => Ok(AdminClient::new(channel)
                    .remove_license(remove)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())),
            }
        }
    };
    assert_eq!(
        code(common::client_tls()).await,
        Ok(Err(tonic::Code::Unauthenticated))
    );
    assert_eq!(
        code(with(&app.cert, &app.key)).await,
        Ok(Err(tonic::Code::PermissionDenied))
    );
    assert_eq!(
        code(with(&node_cert, &node_key)).await,
        Ok(Err(tonic::Code::PermissionDenied))
    );
    // The expired certificate fails the handshake (or its first request) and the node says why.
    let expired_answer = code(with(&expired.cert, &expired.key)).await;
    assert!(
        !matches!(expired_answer, Ok(Ok(()))),
        "an expired administrator certificate was accepted"
    );
    wait_log(
        &cluster,
        &[1, 2, 3],
        "certificate expired",
        Duration::from_secs(5),
    );
    let still = status(&ap).await.unwrap();
    assert_eq!(
        still.features.len(),
        1,
        "a refused removal removed the license"
    );

    // The administrator's certificate works; the action names its author.
    let mut admin = AdminClient::new(dial(&ap, &common::admin_tls()).await.unwrap());
    admin
        .import_license(pb::ImportLicenseRequest {
            name: "more.lic".into(),
            text: common::signed_license(&cluster.key, &[("sim", 2)]),
        })
        .await
        .unwrap();
    let after = status(&ap).await.unwrap();
    let action = after.admin_actions.last().unwrap();
    assert_eq!(action.author, "CN=admin");
    assert_eq!(action.action, "import license more.lic");
}

// A stranger holding everything status publishes (tokens, session handles) cannot check a
// victim's grant in, renew it away, or push the victim's retry window: the victim's seats
// and its next requests are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_touch_another_session() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    licensed(&mut cluster).await;
    let ap = cluster.access_point.clone();
    let mut victim = license_client(&ap).await.unwrap();
    let granted = victim
        .checkout(common::checkout_request(41, 1, "cad", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted);
    let published = status(&ap).await.unwrap();
    let grant = published
        .grants
        .iter()
        .find(|g| g.token == granted.token)
        .unwrap();
    assert_eq!(grant.session_handle, common::handle(41));

    let mut stranger = license_client(&ap).await.unwrap();
    // Check-in of the victim's token under the stranger's own session.
    let refused = stranger
        .checkin(pb::CheckinRequest {
            request: Some(common::request_id(666, 1)),
            token: granted.token,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // The handle is not a secret: quoting it as one names another session (or is malformed).
    for fake in [
        grant.session_handle.to_be_bytes().to_vec(),
        [grant.session_handle.to_be_bytes(), [0; 8]].concat(),
    ] {
        let answer = stranger
            .checkin(pb::CheckinRequest {
                request: Some(pb::RequestId {
                    session_secret: fake,
                    seq: 1_000_000,
                }),
                token: granted.token,
            })
            .await;
        assert!(
            matches!(&answer, Err(s) if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::InvalidArgument)),
            "{answer:?}"
        );
    }
    // A renewal quoting the victim's token reports it as not the stranger's, and changes nothing.
    let renewed = stranger
        .renew(pb::RenewRequest {
            session_secret: common::secret(666),
            tokens: vec![granted.token.unwrap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.unknown, vec![granted.token.unwrap()]);

    let after = status(&ap).await.unwrap();
    assert!(after.grants.iter().any(|g| g.token == granted.token));
    assert_eq!(after.features[0].in_use, 2);
    // The victim's window is untouched: its next request is served, its check-in works.
    let next = victim
        .checkout(common::checkout_request(41, 2, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(next.granted, "{next:?}");
    let released = victim
        .checkin(pb::CheckinRequest {
            request: Some(common::request_id(41, 3)),
            token: granted.token,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(released.released);
}

// Certificates rotated on disk are used without a restart: each node reloads its new
// certificate, reports it, and the peers keep replicating with the new identities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_used_without_a_restart() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let own = ClusterTls::create(
        &cluster.dir.path().join("own-tls"),
        common::CLUSTER,
        &[1, 2, 3],
        &["127.0.0.1".to_string()],
    )
    .unwrap();
    for id in 1..=3 {
        cluster.tune(id, |config| config.tls = own.node_config(id as u64));
    }
    cluster.start_all();
    let client = own.client().unwrap().with_server_name(common::CLUSTER);
    let info = |address: String, client: ClientTls| async move {
        let channel = dial(&address, &client).await.ok()?;
        LicenseClient::new(channel)
            .node_info(pb::NodeInfoRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut before = Vec::new();
    for address in &cluster.addresses {
        loop {
            if let Some(reply) = info(address.clone(), client.clone()).await {
                before.push(reply.cert_not_after_unix);
                break;
            }
            assert!(Instant::now() < deadline, "{}", cluster.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let now = now_unix();
    for id in 1..=3 {
        cert::issue(
            &own.dir,
            &own.dir,
            &IssueRequest {
                subject: Subject::Node { id },
                extra_sans: vec!["127.0.0.1".into()],
                not_before_unix: now - 60,
                not_after_unix: now + 100 * 86_400,
            },
            true,
        )
        .unwrap();
    }
    for (i, address) in cluster.addresses.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let reply = info(address.clone(), client.clone()).await;
            if let Some(reply) = reply
                && reply.cert_not_after_unix != before[i]
            {
                assert!((reply.cert_not_after_unix - (now + 100 * 86_400)).abs() < 5);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not pick up its new certificate\n{}",
                i + 1,
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    wait_log(
        &cluster,
        &[1, 2, 3],
        "certificates reloaded",
        Duration::from_secs(5),
    );
    // Replication goes on with the new identities: a check-out commits through a quorum.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = async {
            let channel = dial(&cluster.access_point, &client).await.ok()?;
            LicenseClient::new(channel)
                .checkout(common::checkout_request(51, 1, "cad", 1))
                .await
                .ok()
                .map(|r| r.into_inner())
        }
        .await;
        if answer.is_some_and(|a| a.granted) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
