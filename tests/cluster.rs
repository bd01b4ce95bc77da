//! Three nodes in one process on 127.0.0.1:0: election, replication, redirect,
//! and a grant surviving the loss of the leader.

mod common;

use std::time::Duration;

use raftlm::local::in_process::{InProcess, bind, start_again, start_nodes};
use raftlm::node::Node;
use raftlm::proto::v1 as pb;
use raftlm::proto::v1::license_client::LicenseClient;
use raftlm::wire::LEADER_ADDRESS_KEY;

async fn start_cluster(
    dir: &std::path::Path,
) -> (
    Vec<Option<Node>>,
    raftlm::license::signature::VendorSigningKey,
) {
    let (key, public) = common::vendor_key(dir);
    let bound = bind(3).await.unwrap();
    let configs = common::node_configs(
        dir,
        &bound.addresses,
        &bound.peer_addresses,
        &public,
        |_| {},
    );
    (start_nodes(&configs, bound).await.unwrap(), key)
}

/// Three nodes started from the test configs, with what a test needs to stop
/// and restart one of them on the same addresses.
struct Started {
    nodes: Vec<Option<Node>>,
    configs: Vec<raftlm::config::Config>,
    addresses: Vec<String>,
    peer_addresses: Vec<String>,
}

async fn start_three(dir: &std::path::Path, public: &std::path::Path) -> Started {
    start_three_with(dir, public, |_| {}).await
}

/// [`start_three`] with each node's config changed by `tune` first.
async fn start_three_with(
    dir: &std::path::Path,
    public: &std::path::Path,
    tune: impl Fn(&mut raftlm::config::Config),
) -> Started {
    let bound = bind(3).await.unwrap();
    let (addresses, peer_addresses) = (bound.addresses.clone(), bound.peer_addresses.clone());
    let configs = common::node_configs(dir, &addresses, &peer_addresses, public, tune);
    let nodes = start_nodes(&configs, bound).await.unwrap();
    Started {
        nodes,
        configs,
        addresses,
        peer_addresses,
    }
}

/// The last index in `node`'s log.
fn last_log_index(node: &Node) -> Option<u64> {
    node.raft().metrics().borrow().last_log_index
}

/// The index of the node that serves, once the cluster has settled: its
/// state writes the newest record format (a new cluster raises it with one
/// log entry within a second of serving, and tests that count log entries
/// must not count that one).
async fn leader_of(nodes: &[Option<Node>]) -> usize {
    common::wait_until("a leader is elected", Duration::from_secs(20), || async {
        nodes.iter().position(|node| {
            node.as_ref().is_some_and(|n| {
                n.shared().serving().is_ok()
                    && n.shared().state.read(|s| s.formats().write) == raftlm::codec::FORMAT_NEWEST
            })
        })
    })
    .await
}

async fn client(node: &Node) -> LicenseClient<tonic::transport::Channel> {
    common::license_client(&node.address().to_string()).await
}

use common::checkout_request as checkout;

// A checkout on the leader is replicated to every node; a follower redirects with the
// leader's address; when the leader stops, a new leader serves and the grant is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_redirect_and_survive_leader_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let leader_node = nodes[leader].as_ref().unwrap();

    let mut admin = common::admin_client(&leader_node.address().to_string()).await;
    let imported = admin
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 3)]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.lines, 1);

    let granted = client(leader_node)
        .await
        .checkout(checkout(11, 1, "cad", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted, "{granted:?}");
    let token = granted.token.unwrap();
    let token = raftlm::wire::token_from_pb(&token);

    // Applied on all three.
    for node in nodes.iter().flatten() {
        common::wait_until(
            "the grant is replicated to the node",
            Duration::from_secs(10),
            || async {
                node.shared()
                    .state
                    .read(|s| s.grant(&token).is_some())
                    .then_some(())
            },
        )
        .await;
    }

    // A follower answers UNAVAILABLE with the leader's address.
    let follower = (leader + 1) % 3;
    let status = client(nodes[follower].as_ref().unwrap())
        .await
        .checkout(checkout(12, 1, "cad", 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let hint = status
        .metadata()
        .get(LEADER_ADDRESS_KEY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(hint, leader_node.address().to_string());

    // The leader goes away; a new leader holds the grant and keeps counting seats.
    nodes[leader].take().unwrap().shutdown().await;
    let new_leader = leader_of(&nodes).await;
    assert_ne!(new_leader, leader);
    let new_node = nodes[new_leader].as_ref().unwrap();
    assert!(new_node.shared().state.read(|s| s.grant(&token).is_some()));
    let mut license = client(new_node).await;
    let denied = license
        .checkout(checkout(13, 1, "cad", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !denied.granted && denied.available == 1 && denied.total == 3,
        "{denied:?}"
    );
    // The retried first request returns the first grant, not a second one.
    let retried = license
        .checkout(checkout(11, 1, "cad", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.token, granted.token);
    assert_eq!(new_node.shared().state.read(|s| s.in_use("acme", "cad")), 2);

    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

// A FlexNet file brought over imports into a running cluster: its expired line is held and
// counts 0 seats, its uncounted and PACKAGE lines are skipped, its VENDOR daemon fields
// ignored, and the reply's notes and the status say so; the valid lines grant their seats
// on every node. A file whose every line has expired is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flexnet_file_imports_its_valid_lines_and_holds_expired_ones_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let leader_node = nodes[leader].as_ref().unwrap();
    let text = format!(
        "SERVER {} ANY 27000\n\
         VENDOR acme /opt/acme/acmed /opt/acme/acme.opt 27001\n\
         FEATURE cad acme 2.0 31-dec-2099 25 ISSUED=22-nov-2026\n\
         INCREMENT cad acme 2.0 31-dec-2025 10 SN=7\n\
         FEATURE viewer acme 1.0 permanent uncounted HOSTID=0011223344aa\n\
         PACKAGE suite acme 1.0 COMPONENTS=\"cad viewer\"\n\
         INCREMENT cad acme 2.0 permanent 5\n",
        common::CLUSTER
    );
    let signed = raftlm::license::signature::sign_text("flex.lic", &text, &key).unwrap();
    let mut admin = common::admin_client(&leader_node.address().to_string()).await;
    let imported = admin
        .import_license(pb::ImportLicenseRequest {
            name: "flex.lic".into(),
            text: signed,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.lines, 3);
    assert_eq!(
        imported.notes,
        [
            "flex.lic:2: VENDOR acme: the daemon path, options file and port are ignored by raftlm",
            "flex.lic:5:35: FEATURE \"viewer\" is not imported: uncounted (node-locked) licenses are not served by a floating-license server; ask the vendor for a counted line",
            "flex.lic:6:1: PACKAGE \"suite\" is not imported: PACKAGE lines (suites of features) are not supported; ask the vendor for FEATURE or INCREMENT lines for the package's features",
            "flex.lic:4: INCREMENT \"cad\" expired on 31-dec-2025: imported, counts 0 seats",
        ]
    );

    // Every node holds the three lines and counts 25 + 5 seats.
    for node in nodes.iter().flatten() {
        common::wait_until(
            "the import is applied on the node",
            Duration::from_secs(10),
            || async {
                let seats = node
                    .shared()
                    .state
                    .read(|s| s.seats_licensed("acme", "cad"));
                (seats == (40, 30)).then_some(())
            },
        )
        .await;
    }
    let mut license = client(leader_node).await;
    let granted = license
        .checkout(checkout(41, 1, "cad", 30))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted, "{granted:?}");
    let denied = license
        .checkout(checkout(42, 1, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !denied.granted && denied.available == 0 && denied.total == 30,
        "{denied:?}"
    );
    let viewer = license
        .checkout(checkout(43, 1, "viewer", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(!viewer.granted, "{viewer:?}");

    // The status gives the seats per expiry and marks the expired line.
    let status = license
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let text = raftlm::cli::status::to_text(&status, &[], 0);
    assert!(
        text.contains(
            "Users of cad:  (Total of 30 licenses issued;  Total of 30 licenses in use)\n  (vendor acme, version 2.0: 25 until 31-dec-2099, 5 permanent, 10 expired on 31-dec-2025)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "flex.lic:4 INCREMENT 2.0 10 seats, expiry 31-dec-2025: expired on 31-dec-2025: imported, counts 0 seats"
        ),
        "{text}"
    );

    // An expired renewal still supersedes the line it renews: the import says
    // that the valid line's seats no longer count.
    let sign = |name: &str, body: &str| {
        raftlm::license::signature::sign_text(
            name,
            &format!("SERVER {} ANY 27000\nVENDOR acme\n{body}", common::CLUSTER),
            &key,
        )
        .unwrap()
    };
    admin
        .import_license(pb::ImportLicenseRequest {
            name: "base.lic".into(),
            text: sign(
                "base.lic",
                "FEATURE sim acme 2.0 permanent 4 ISSUED=01-jan-2024\n",
            ),
        })
        .await
        .unwrap();
    let renewed = admin
        .import_license(pb::ImportLicenseRequest {
            name: "renew.lic".into(),
            text: sign(
                "renew.lic",
                "FEATURE sim acme 2.0 31-dec-2025 8 ISSUED=01-jun-2025\nFEATURE viz acme 2.0 permanent 1\n",
            ),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        renewed.notes,
        [
            "renew.lic:3: FEATURE \"sim\" expired on 31-dec-2025: imported, counts 0 seats",
            "base.lic:3: FEATURE \"sim\" is superseded by the newer issuance renew.lic:3, which has expired: its 4 seats no longer count (remove renew.lic, or get a renewed file)",
        ]
    );

    // A file whose every line has expired is refused, naming the file.
    let old = raftlm::license::signature::sign_text(
        "old.lic",
        &format!(
            "SERVER {} ANY 27000\nVENDOR acme\nFEATURE old acme 2.0 31-dec-2025 5\n",
            common::CLUSTER
        ),
        &key,
    )
    .unwrap();
    let refused = admin
        .import_license(pb::ImportLicenseRequest {
            name: "old.lic".into(),
            text: old,
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.message(),
        "old.lic: every feature line has expired, the last on 31-dec-2025 (line 3): the file would grant no seat (get a renewed file from the vendor)"
    );

    for node in nodes.iter_mut() {
        if let Some(node) = node.take() {
            node.shutdown().await;
        }
    }
}

// A node stopped while the others take snapshots and purge their logs catches up through
// a snapshot when it returns, and then holds every grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_catches_up_through_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let bound = bind(3).await.unwrap();
    let (addresses, peer_addresses) = (bound.addresses.clone(), bound.peer_addresses.clone());
    let configs: Vec<_> = (1..=3)
        .map(|id| {
            let mut config =
                common::node_config(dir.path(), id, &addresses, &peer_addresses, &public);
            config.snapshot.logs_since_last = 10;
            config.snapshot.logs_kept = 0;
            config
        })
        .collect();
    let mut nodes = start_nodes(&configs, bound).await.unwrap();
    let leader = leader_of(&nodes).await;
    let lagging = (leader + 1) % 3;
    nodes[lagging].take().unwrap().shutdown().await;

    let leader_node = nodes[leader].as_ref().unwrap();
    let mut admin = common::admin_client(&leader_node.address().to_string()).await;
    admin
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 100)]),
        })
        .await
        .unwrap();
    let mut license = client(leader_node).await;
    let mut tokens = Vec::new();
    for seq in 1..=40u64 {
        let reply = license
            .checkout(checkout(21, seq, "cad", 1))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.granted);
        tokens.push(reply.token.unwrap());
    }
    leader_node.raft().trigger().snapshot().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let purged = leader_node
            .raft()
            .metrics()
            .borrow()
            .purged
            .map_or(0, |p| p.index);
        if purged >= 40 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader did not purge its log (purged up to {purged})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let returned = start_again(&configs[lagging]).await.unwrap();
    // The state and the metrics are updated one after the other: wait for both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held = returned.shared().state.read(|s| s.grants().len());
        let snapshot = returned.raft().metrics().borrow().snapshot;
        if held == tokens.len() && snapshot.is_some_and(|s| s.index >= 40) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "returned node holds {held} grants; its snapshot: {snapshot:?} (none installed?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    returned.shared().state.read(|s| s.check_invariants());
    nodes[lagging] = Some(returned);
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

// Requests that can never succeed are refused without touching the log: 40 concurrent
// admin requests with 3.9 MB names, a removal of a license that is not imported, a name
// with a directory, and a check-out of a feature nobody licenses — while other clients'
// check-outs keep succeeding (retried with the same request id, as clients do, should
// the loaded machine move the active node meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hopeless_requests_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let address = nodes[leader].as_ref().unwrap().address().to_string();
    let addresses: Vec<String> = nodes
        .iter()
        .flatten()
        .map(|n| n.address().to_string())
        .collect();
    let mut admin = common::admin_client(&address).await;
    admin
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 100)]),
        })
        .await
        .unwrap();
    let bytes_before = dir_bytes(dir.path());

    let mut floods = Vec::new();
    for _ in 0..40 {
        let address = address.clone();
        floods.push(tokio::spawn(async move {
            common::admin_client(&address)
                .await
                .remove_license(pb::RemoveLicenseRequest {
                    name: "x".repeat(3_900_000),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }));
    }
    for seq in 1..=20u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        'retry: loop {
            for address in &addresses {
                let mut license = common::license_client(address).await;
                if let Ok(reply) = license.checkout(checkout(31, seq, "cad", 1)).await {
                    assert!(reply.get_ref().granted, "{:?}", reply.get_ref());
                    break 'retry;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "check-out {seq} got no answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for flood in floods {
        let code = flood.await.unwrap().unwrap_err();
        assert!(
            matches!(
                code,
                tonic::Code::InvalidArgument
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::OutOfRange
            ),
            "{code:?}"
        );
    }
    // 40 names of 3.9 MB would be 156 MB in each node's log had they been proposed.
    let grown = dir_bytes(dir.path()).saturating_sub(bytes_before);
    assert!(
        grown < 16 * 1024 * 1024,
        "the data directories grew by {grown} bytes"
    );

    let leader = leader_of(&nodes).await;
    let leader_node = nodes[leader].as_ref().unwrap();
    let mut admin = common::admin_client(&leader_node.address().to_string()).await;
    let unknown = admin
        .remove_license(pb::RemoveLicenseRequest {
            name: "never-imported.lic".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        unknown.code(),
        tonic::Code::FailedPrecondition,
        "{unknown:?}"
    );
    let with_dir = admin
        .remove_license(pb::RemoveLicenseRequest {
            name: "../etc/passwd".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(with_dir.code(), tonic::Code::InvalidArgument);
    let nobody = client(leader_node)
        .await
        .checkout(checkout(32, 1, "no-such-feature", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(!nobody.granted);
    assert_eq!(nobody.reason(), pb::DenyReason::NoSuchFeature);
    // Had any of them been proposed, the state would show it on every node: every
    // applied removal is recorded as an administrator's action, and every applied
    // check-out registers its session. Each was answered, so any proposal is in
    // the leader's log by now: wait until every node has applied that far.
    let last = leader_node
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    for (i, node) in nodes.iter().enumerate() {
        let node = node.as_ref().unwrap();
        common::wait_until(
            &format!("node {} has applied index {last}", i + 1),
            Duration::from_secs(20),
            || async {
                let applied = node.raft().metrics().borrow().last_applied;
                applied.is_some_and(|l| l.index >= last).then_some(())
            },
        )
        .await;
    }
    let nobody_session = raftlm::license::state::SessionId(
        raftlm::license::secret::SessionSecret::from_seed(32)
            .handle()
            .0,
    );
    for node in nodes.iter().flatten() {
        node.shared().state.read(|s| {
            let removals: Vec<_> = s
                .admin_actions()
                .iter()
                .filter(|a| a.action.starts_with("remove license"))
                .collect();
            assert!(
                removals.is_empty(),
                "a removal reached the log: {removals:?}"
            );
            assert!(
                !s.sessions().contains_key(&nobody_session),
                "the hopeless check-out reached the log"
            );
        });
    }

    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

// The license directory is imported when it changed: after an administrator removes a
// license and the active node fails over, the new active node does not import the
// unchanged file again, while a file changed on disk is imported with its new content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_directory_never_undoes_an_administrator() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let licenses = dir.path().join("licenses");
    std::fs::create_dir_all(&licenses).unwrap();
    std::fs::write(
        licenses.join("a.lic"),
        common::signed_license(&key, &[("cad", 3)]),
    )
    .unwrap();
    std::fs::write(
        licenses.join("b.lic"),
        common::signed_license(&key, &[("sim", 4)]),
    )
    .unwrap();
    let bound = bind(3).await.unwrap();
    let configs = common::node_configs(
        dir.path(),
        &bound.addresses,
        &bound.peer_addresses,
        &public,
        |config| config.license_dir = Some(licenses.clone()),
    );
    let mut nodes = start_nodes(&configs, bound).await.unwrap();
    let leader = leader_of(&nodes).await;
    let holds = |node: &Node, name: &str| {
        node.shared()
            .state
            .read(|s| s.licenses().contains_key(name))
    };
    let seats = |node: &Node, feature: &str| {
        node.shared()
            .state
            .read(|s| s.seats_licensed("acme", feature).0)
    };
    common::wait_until(
        "the directory is imported",
        Duration::from_secs(20),
        || async {
            let leader = nodes[leader].as_ref().unwrap();
            (holds(leader, "a.lic") && holds(leader, "b.lic")).then_some(())
        },
    )
    .await;
    let mut admin =
        common::admin_client(&nodes[leader].as_ref().unwrap().address().to_string()).await;
    admin
        .remove_license(pb::RemoveLicenseRequest {
            name: "a.lic".into(),
        })
        .await
        .unwrap();
    std::fs::write(
        licenses.join("b.lic"),
        common::signed_license(&key, &[("sim", 9)]),
    )
    .unwrap();

    nodes[leader].take().unwrap().shutdown().await;
    let new_leader = leader_of(&nodes).await;
    let node = nodes[new_leader].as_ref().unwrap();
    common::wait_until(
        "the changed file is imported",
        Duration::from_secs(20),
        || async { (seats(node, "sim") == 9).then_some(()) },
    )
    .await;
    // The importer reads the directory in file-name order and each import is
    // applied before the next file is read: with b.lic's change applied, its
    // decision on a.lic has been applied too.
    assert!(
        !holds(node, "a.lic"),
        "a failover undid the administrator's removal"
    );
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// An import command of about `bytes` encoded bytes (its one line carries a
/// long attribute; the state machine refuses it as unverified, but the entry
/// is replicated all the same, which is what is measured here).
fn bulky_import(n: usize, bytes: usize) -> raftlm::license::state::Command {
    use raftlm::license::{Expiry, FeatureLine, LineKind};
    raftlm::license::state::Command::ImportLicense {
        name: format!("bulky{n}.lic"),
        lines: vec![FeatureLine {
            kind: LineKind::Feature,
            feature: "bulk".into(),
            vendor: "acme".into(),
            version: "1.0".into(),
            expiry: Expiry::Permanent,
            seats: 1,
            attributes: vec![("NOTICE".into(), "x".repeat(bytes))],
            cluster_id: None,
            host_ids: Vec::new(),
            signature: String::new(),
            line: 3,
        }],
        author: "test".into(),
    }
}

// Bytes are bounded at every step of the log: a command over the per-command
// limit is refused before it is queued (the log does not move); a burst of
// large commands is cut into entries of at most the batch limit; and a
// follower that was away while 36 MB were committed (nine times what one
// AppendEntries may carry) catches up, because an AppendEntries over the message
// limit is answered "payload too large" and resent with fewer entries (one
// AppendEntries of every missing entry would not complete within the
// heartbeat interval openraft allows it, and would be retried for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_fit_messages_and_a_follower_catches_up() {
    use raftlm::server::batcher::{BATCH_BYTES_MAX, COMMAND_BYTES_MAX};
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = common::vendor_key(dir.path());
    let bound = bind(3).await.unwrap();
    let (addresses, peer_addresses) = (bound.addresses.clone(), bound.peer_addresses.clone());
    let configs: Vec<_> = (1..=3)
        .map(|id| {
            let mut config =
                common::node_config(dir.path(), id, &addresses, &peer_addresses, &public);
            // Keep the log: the follower must catch up by AppendEntries, not a snapshot.
            config.snapshot.logs_since_last = 1_000_000;
            config
        })
        .collect();
    let mut nodes = start_nodes(&configs, bound).await.unwrap();
    let leader = leader_of(&nodes).await;
    let shared = nodes[leader].as_ref().unwrap().shared().clone();

    let before = nodes[leader]
        .as_ref()
        .unwrap()
        .raft()
        .metrics()
        .borrow()
        .last_log_index;
    let refused = shared.propose(bulky_import(0, COMMAND_BYTES_MAX)).await;
    assert!(
        matches!(&refused, Err(raftlm::server::error::ServiceError::InvalidArgument(m)) if m.contains("fit one log entry")),
        "{refused:?}"
    );
    let after = nodes[leader]
        .as_ref()
        .unwrap()
        .raft()
        .metrics()
        .borrow()
        .last_log_index;
    assert_eq!(before, after, "a refused command reached the log");

    let lagging = (leader + 1) % 3;
    nodes[lagging].take().unwrap().shutdown().await;
    // 24 commands of 1.5 MB: one per entry, 36 MB, nine times what one AppendEntries carries.
    let size = 1_500_000;
    let proposals: Vec<_> = (1..=24)
        .map(|n| {
            let shared = shared.clone();
            tokio::spawn(async move { shared.propose(bulky_import(n, size)).await })
        })
        .collect();
    let mut entries = std::collections::BTreeSet::new();
    for proposal in proposals {
        let (_, log_id) = proposal.await.unwrap().expect("a large command commits");
        entries.insert(log_id.index);
    }
    // Two of them exceed a batch, so each is an entry of its own.
    assert!(2 * size > BATCH_BYTES_MAX);
    assert_eq!(entries.len(), 24, "entries: {entries:?}");
    let last = *entries.last().unwrap();

    let returned = start_again(&configs[lagging]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let applied = returned
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        if applied >= last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the returned follower applied up to {applied} of {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(returned.raft().metrics().borrow().snapshot.is_none());
    nodes[lagging] = Some(returned);
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

// Timing that cannot be safe together is refused, not served: node 3 waits
// only 120 ms (lease 120, margin 0) before serving, while nodes 1 and 2 hold
// leases of 250 ms. When node 3 wins an election after one of them was
// active, its activation is refused by the state machine (the previous lease
// could still run), node 3 stops heartbeating and never campaigns again
// (openraft would otherwise keep it leader for ever), says why with both
// values, and another node takes over; node 3 never serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_timing_steps_back_instead_of_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = common::vendor_key(dir.path());
    let bound = bind(3).await.unwrap();
    let (addresses, peer_addresses) = (bound.addresses.clone(), bound.peer_addresses.clone());
    let configs: Vec<_> = (1..=3)
        .map(|id| {
            let mut config =
                common::node_config(dir.path(), id, &addresses, &peer_addresses, &public);
            if id == 3 {
                // Waits lease_ms + lease_margin_ms = 60 ms, less than the
                // others' lease.
                config.timing.heartbeat_ms = 30;
                config.timing.lease_ms = 60;
                config.timing.lease_margin_ms = 0;
                config.validate().unwrap();
            }
            config
        })
        .collect();
    let mut nodes = start_nodes(&configs, bound).await.unwrap();
    let restart = |i: usize| {
        let config = configs[i].clone();
        async move {
            start_again(&config)
                .await
                .unwrap_or_else(|error| panic!("cannot restart the node: {error}"))
        }
    };
    // Stop whichever node serves, wait until another serves, and start the
    // stopped one again; until node 3 has won an election after node 1 or 2
    // was active (each round it wins with probability about one half).
    for _round in 0..16 {
        let active = leader_of(&nodes).await;
        nodes[active].take().unwrap().shutdown().await;
        let next = leader_of(&nodes).await;
        nodes[active] = Some(restart(active).await);
        if nodes[2]
            .as_ref()
            .unwrap()
            .shared()
            .stepped_back
            .get()
            .is_some()
        {
            assert_ne!(next, 2);
            break;
        }
    }
    let why = nodes[2]
        .as_ref()
        .unwrap()
        .shared()
        .stepped_back
        .get()
        .cloned()
        .expect("node 3 never won an election in 16 rounds");
    assert!(
        why.contains(&format!(
            "lease_ms = {}",
            common::in_process_timing().lease_ms
        )) && why.contains("= 60 ms"),
        "the reason names both values: {why}"
    );
    // Another node serves; node 3 does not, and stays out.
    let active = leader_of(&nodes).await;
    assert_ne!(active, 2, "node 3 serves after stepping back");
    // Kept: "stays out" is an absence, so it is watched over a fixed window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(nodes[2].as_ref().unwrap().shared().serving().is_err());
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

// Listing a node's recent log entries (NodeInfo's log_hashes, for checking
// that no two nodes hold different entries under one log id) reads up to
// 1,024 entries: a client without the administrator role is refused before
// anything is read, an administrator gets at most what it asked for, in
// index order, and every node lists the same entry under the same log id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_entries_are_listed_to_administrators_only() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let ask = pb::NodeInfoRequest {
        log_hashes: 4,
        ..Default::default()
    };
    let address = nodes[leader].as_ref().unwrap().address().to_string();
    let refused = common::license_client(&address)
        .await
        .node_info(ask)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut lists = Vec::new();
    for node in nodes.iter().flatten() {
        let channel = common::admin_tls()
            .endpoint(&node.address().to_string(), Duration::from_secs(2))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let listed = LicenseClient::new(channel)
            .node_info(ask)
            .await
            .unwrap()
            .into_inner()
            .log_hashes;
        assert!(!listed.is_empty() && listed.len() <= 4, "{listed:?}");
        assert!(listed.windows(2).all(|w| w[0].index < w[1].index));
        lists.push(listed);
    }
    for list in &lists[1..] {
        for entry in list {
            if let Some(same) = lists[0]
                .iter()
                .find(|e| (e.term, e.leader, e.index) == (entry.term, entry.leader, entry.index))
            {
                assert_eq!(
                    same.hash, entry.hash,
                    "log id {}-{}-{}",
                    entry.term, entry.leader, entry.index
                );
            }
        }
    }
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

/// Waits until `check` holds on node `i`'s state.
async fn wait_state(
    nodes: &[Option<Node>],
    i: usize,
    what: &str,
    check: impl Fn(&raftlm::license::state::LicenseState) -> bool,
) {
    common::wait_until(what, Duration::from_secs(20), || async {
        nodes[i]
            .as_ref()
            .unwrap()
            .shared()
            .state
            .read(&check)
            .then_some(())
    })
    .await;
}

// A license cannot move the cluster's time, and a revoked key stays revoked.
// A file issued in 2062 is refused by the active node, naming the date and
// the cluster's time, and state time does not move. After an administrator
// untrusts the only key (the nodes' vendor_keys bootstrapped it), an import
// and two failovers (every node's importer runs the bootstrap again on
// activation) leave the cluster trusting no key, and imports refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_moves_time_and_an_untrusted_key_stays_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let Started {
        mut nodes,
        configs,
        addresses,
        ..
    } = start_three(dir.path(), &public).await;
    let leader = leader_of(&nodes).await;
    wait_state(&nodes, leader, "the vendor_keys bootstrap", |s| {
        !s.trusted_keys().is_empty()
    })
    .await;
    let mut admin = common::admin_client(&addresses[leader]).await;

    let typo = common::signed_license(&key, &[("cad", 10)]).replace(
        "FEATURE cad acme 2.0 permanent 10",
        "FEATURE cad acme 2.0 permanent 10 ISSUED=07-dec-2062",
    );
    let typo = raftlm::license::signature::sign_text("typo.lic", &typo, &key).unwrap();
    let before = nodes[leader]
        .as_ref()
        .unwrap()
        .shared()
        .state
        .read(|s| s.now_ms());
    let refused = admin
        .import_license(pb::ImportLicenseRequest {
            name: "typo.lic".into(),
            text: typo,
        })
        .await
        .expect_err("a line issued in 2062 is refused");
    assert!(
        refused
            .message()
            .contains("is issued 07-dec-2062 but the cluster's time is "),
        "{refused:?}"
    );
    let after = nodes[leader]
        .as_ref()
        .unwrap()
        .shared()
        .state
        .read(|s| s.now_ms());
    assert!(
        after < before + 3_600_000,
        "state time moved from {before} to {after}"
    );

    let key_id = raftlm::license::state::key_id_of(&key.public_key().to_bytes());
    admin
        .untrust_key(pb::UntrustKeyRequest {
            key_id: key_id.clone(),
        })
        .await
        .unwrap();
    let good = common::signed_license(&key, &[("cad", 10)]);
    let refused = admin
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: good.clone(),
        })
        .await
        .expect_err("nothing is trusted");
    assert!(refused.message().contains("trust"), "{refused:?}");

    // Two failovers: each new active node runs the importer's bootstrap.
    let mut active = leader;
    for _ in 0..2 {
        nodes[active].take().unwrap().shutdown().await;
        let stopped = active;
        leader_of(&nodes).await;
        nodes[stopped] = Some(start_again(&configs[stopped]).await.unwrap());
        // The new active node's importer has had time to run. Kept: a
        // bootstrap that correctly trusts nothing leaves no trace in the state
        // to wait for, so the check below is of an absence after a window.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        active = leader_of(&nodes).await;
        for (i, node) in nodes.iter().enumerate() {
            let (keys, ever) = node
                .as_ref()
                .unwrap()
                .shared()
                .state
                .read(|s| (s.trusted_keys().len(), s.trusted_ever()));
            assert_eq!((keys, ever), (0, true), "node {} trusts a key again", i + 1);
        }
    }
    let mut admin = common::admin_client(&addresses[active]).await;
    admin
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: good,
        })
        .await
        .expect_err("still nothing trusted after two failovers");
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

/// Holds `sockets` TCP connections from `from` to `target` that never send a
/// byte, reopening each (after a pause) when the node closes it, until the
/// returned set is dropped.
fn idle_flood(
    target: std::net::SocketAddr,
    from: std::net::IpAddr,
    sockets: usize,
) -> tokio::task::JoinSet<()> {
    use tokio::io::AsyncReadExt as _;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sockets {
        tasks.spawn(async move {
            loop {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind((from, 0).into()).unwrap();
                if let Ok(mut stream) = socket.connect(target).await {
                    let mut buf = [0u8; 64];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    tasks
}

// One address cannot starve handshakes. 1,000 sockets from 127.0.0.9 that
// never send a ClientHello (reopened as the node closes them) against the
// active node's client listener, and as many against its peer listener and a
// follower's. Meanwhile fresh clients from another address (127.0.0.5, not a
// member's) all get answers, the follower is restarted (so it and the active
// node redial each other through the flood) and catches up, and the active
// node serves without a break, past a handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_address_starve_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = common::vendor_key(dir.path());
    let Started {
        mut nodes,
        configs,
        addresses,
        peer_addresses,
    } = start_three(dir.path(), &public).await;
    let leader = leader_of(&nodes).await;
    let follower = (leader + 1) % 3;
    let since = nodes[leader]
        .as_ref()
        .unwrap()
        .shared()
        .lease
        .serving_since();
    assert!(since.is_some());
    let attacker: std::net::IpAddr = "127.0.0.9".parse().unwrap();
    let floods: Vec<_> = [
        &addresses[leader],
        &peer_addresses[leader],
        &peer_addresses[follower],
    ]
    .into_iter()
    .map(|a| idle_flood(a.parse().unwrap(), attacker, 1000))
    .collect();
    let started = tokio::time::Instant::now();
    // Kept: the flood has no "established" signal; a second lets it open its sockets.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stranger: std::net::IpAddr = "127.0.0.5".parse().unwrap();
    for i in 0..20 {
        common::license_client_from(&addresses[leader], stranger)
            .await
            .unwrap_or_else(|e| panic!("fresh client {i} could not connect: {e}"))
            .node_info(pb::NodeInfoRequest::default())
            .await
            .unwrap_or_else(|e| panic!("fresh client {i} got no answer: {e}"));
    }

    nodes[follower].take().unwrap().shutdown().await;
    nodes[follower] = Some(start_again(&configs[follower]).await.unwrap());
    let applied = |i: usize| {
        nodes[i]
            .as_ref()
            .unwrap()
            .shared()
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    };
    let target = applied(leader);
    common::wait_until(
        &format!("the restarted follower has applied index {target} through the flood"),
        Duration::from_secs(20),
        || async { (applied(follower) >= target).then_some(()) },
    )
    .await;
    // Past one handshake timeout: the flood's first sockets were dropped and reopened.
    let past = raftlm::tls::acceptor::HANDSHAKE_TIMEOUT + Duration::from_secs(2);
    tokio::time::sleep(past.saturating_sub(started.elapsed())).await;
    assert_eq!(
        nodes[leader]
            .as_ref()
            .unwrap()
            .shared()
            .lease
            .serving_since(),
        since,
        "the active node's service broke during the flood"
    );
    drop(floods);
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

// Names are text: a control character (C0, DEL or C1) in a user, host,
// vendor, feature or version name, or in a license name, is refused
// INVALID_ARGUMENT naming the field and the character, before anything is
// proposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let address = nodes[leader].as_ref().unwrap().address().to_string();
    let mut admin = common::admin_client(&address).await;
    admin
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 5)]),
        })
        .await
        .unwrap();
    let applied = |nodes: &[Option<Node>]| {
        nodes[leader]
            .as_ref()
            .unwrap()
            .shared()
            .raft
            .metrics()
            .borrow()
            .last_applied
    };
    let before = applied(&nodes);
    let mut license = client(nodes[leader].as_ref().unwrap()).await;
    type SetField = fn(&mut pb::CheckoutRequest, &str);
    let cases: [(&str, SetField); 5] = [
        ("user", |r, v| r.user = v.into()),
        ("host", |r, v| r.host = v.into()),
        ("vendor", |r, v| r.vendor = v.into()),
        ("feature", |r, v| r.feature = v.into()),
        ("version", |r, v| r.version = v.into()),
    ];
    for (seq, (field, set)) in cases.into_iter().enumerate() {
        for (bad, code) in [
            ("ada\u{1b}[2J", "U+001B"),
            ("ws\u{7f}", "U+007F"),
            ("x\u{9b}", "U+009B"),
        ] {
            let mut request = checkout(41, seq as u64 + 1, "cad", 1);
            set(&mut request, bad);
            let refused = license
                .checkout(request)
                .await
                .expect_err("a control character is refused");
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
            assert!(
                refused
                    .message()
                    .contains(&format!("{field} contains the control character {code}")),
                "{refused:?}"
            );
        }
    }
    let refused = admin
        .import_license(pb::ImportLicenseRequest {
            name: "bell\u{7}.lic".into(),
            text: common::signed_license(&key, &[("cad", 5)]),
        })
        .await
        .expect_err("a control character in a license name is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(applied(&nodes), before, "a refused request reached the log");
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

// The state digest costs time in proportion to the state: it takes an
// administrator's certificate. A flood of digest requests from a client
// without one is refused, and the active node serves without a break; an
// administrator still gets a digest, the same on every node once they have
// applied the same index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_digests_are_for_administrators() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let address = nodes[leader].as_ref().unwrap().address().to_string();
    let since = nodes[leader]
        .as_ref()
        .unwrap()
        .shared()
        .lease
        .serving_since();
    let digest = pb::NodeInfoRequest {
        with_state_digest: true,
        ..Default::default()
    };
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let address = address.clone();
        flood.spawn(async move {
            let mut client = common::license_client(&address).await;
            let mut refused = 0;
            for _ in 0..250 {
                let code = client
                    .node_info(digest)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code());
                assert!(
                    matches!(
                        code,
                        Err(tonic::Code::PermissionDenied | tonic::Code::Unauthenticated)
                    ),
                    "a digest without an administrator's certificate: {code:?}"
                );
                refused += 1;
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(count) = flood.join_next().await {
        refused += count.unwrap();
    }
    assert_eq!(refused, 2000);
    assert_eq!(
        nodes[leader]
            .as_ref()
            .unwrap()
            .shared()
            .lease
            .serving_since(),
        since,
        "the active node's service broke during the flood"
    );
    let admin_info = |address: String| async move {
        let channel = common::admin_tls()
            .endpoint(&address, Duration::from_secs(2))
            .unwrap()
            .connect()
            .await
            .unwrap();
        LicenseClient::new(channel)
            .node_info(digest)
            .await
            .unwrap()
            .into_inner()
    };
    let info = admin_info(address.clone()).await;
    assert_eq!(info.state_digest.len(), 64, "{info:?}");
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

// Health tells the truth: SERVING (for the server and for the license
// service) only on the active node, NOT_SERVING on the standbys, which refuse
// every license request; after a failover the new active node says SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_only_on_the_active_node() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let status = |address: String, service: &'static str| async move {
        let channel = common::client_tls()
            .endpoint(&address, Duration::from_secs(2))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status()
    };
    // The watcher follows within its interval.
    for (i, node) in nodes.iter().enumerate() {
        let address = node.as_ref().unwrap().address().to_string();
        let expected = if i == leader {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in ["", "raftlm.v1.License"] {
            common::wait_until(
                &format!("node {} says {expected:?} for {service:?}", i + 1),
                Duration::from_secs(10),
                || async { (status(address.clone(), service).await == expected).then_some(()) },
            )
            .await;
        }
    }
    nodes[leader].take().unwrap().shutdown().await;
    let next = leader_of(&nodes).await;
    let address = nodes[next].as_ref().unwrap().address().to_string();
    common::wait_until(
        &format!("the new active node {} says Serving", next + 1),
        Duration::from_secs(10),
        || async { (status(address.clone(), "").await == ServingStatus::Serving).then_some(()) },
    )
    .await;
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

// A stream that never ends (a health Watch) does not keep its connection
// past the connection age and its grace: the server closes it, as it does at
// CONNECTION_AGE_MAX + CONNECTION_AGE_GRACE on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_ends_at_the_connection_age() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_health, service) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        raftlm::server::server_builder_aged(Duration::from_secs(1), Duration::from_secs(1))
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stream = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let started = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the Watch stream outlived its connection's age"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    server.abort();
}

// Check-ins that would change nothing write nothing: 10,000 check-ins of
// made-up grants, from fresh sessions and from a session that holds a seat,
// are answered "not released" without a log entry; a retry of a real
// check-in gets its first answer; the real check-in goes through the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkins_of_unknown_grants_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let address = nodes[leader].as_ref().unwrap().address().to_string();
    common::admin_client(&address)
        .await
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 5)]),
        })
        .await
        .unwrap();
    let mut license = common::license_client(&address).await;
    let granted = license
        .checkout(checkout(61, 1, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted);
    let token = granted.token.unwrap();
    let last_log = |nodes: &[Option<Node>]| last_log_index(nodes[leader].as_ref().unwrap());
    let before = last_log(&nodes);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..10u64 {
        let address = address.clone();
        tasks.spawn(async move {
            let mut license = common::license_client(&address).await;
            for i in 0..1000u64 {
                // Half from fresh sessions, half from session 61, which holds a seat.
                let session = if i % 2 == 0 {
                    1000 + worker * 1000 + i
                } else {
                    61
                };
                let reply = license
                    .checkin(pb::CheckinRequest {
                        request: Some(common::request_id(session, 2 + worker * 1000 + i)),
                        token: Some(pb::GrantToken {
                            term: 999,
                            index: i,
                            slot: 0,
                        }),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(!reply.released);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(
        last_log(&nodes),
        before,
        "made-up check-ins were written to the log"
    );
    let checkin = pb::CheckinRequest {
        request: Some(common::request_id(61, 20_000)),
        token: Some(token),
    };
    let first = license.checkin(checkin.clone()).await.unwrap().into_inner();
    assert!(first.released, "{first:?}");
    assert!(
        last_log(&nodes) > before,
        "the real check-in went through the log"
    );
    let retry = license.checkin(checkin).await.unwrap().into_inner();
    assert!(retry.released, "a retry gets the first answer: {retry:?}");
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

// A node started on another node's data directory is refused at start-up,
// naming both, instead of bringing that node's votes and log into the
// cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_another_nodes_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = common::vendor_key(dir.path());
    let bound = bind(3).await.unwrap();
    let (addresses, peer_addresses) = (bound.addresses.clone(), bound.peer_addresses.clone());
    let configs = common::node_configs(dir.path(), &addresses, &peer_addresses, &public, |_| {});
    let mut nodes = start_nodes(&configs, bound).await.unwrap();
    leader_of(&nodes).await;
    let first = nodes[0].take().unwrap();
    first.shutdown().await;
    let mut config = common::node_config(dir.path(), 1, &addresses, &peer_addresses, &public);
    config.data_dir = dir.path().join("node2");
    nodes[1].take().unwrap().shutdown().await;
    let refused = match start_again(&config).await {
        Ok(_) => panic!("node 1 started on node 2's data directory"),
        Err(error) => error.to_string(),
    };
    assert!(
        refused.contains("it belongs to node 2 of cluster LICSRV")
            && refused.contains("but this is node 1 of cluster LICSRV"),
        "{refused}"
    );
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
}

// Check-outs from sessions the state does not hold that end denied write
// their answer to the log and create no session: one address may send
// limits.unheld_writes_per_address_per_s of them (a burst of five seconds'
// worth), then they are refused without touching the log, naming the limit.
// Another address is served as usual, and a session that holds seats is not
// limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_from_sessions_that_hold_nothing_are_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let Started {
        nodes, addresses, ..
    } = start_three_with(dir.path(), &public, |config| {
        config.limits.unheld_writes_per_address_per_s = 2;
    })
    .await;
    let leader = leader_of(&nodes).await;
    common::admin_client(&addresses[leader])
        .await
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 1)]),
        })
        .await
        .unwrap();
    let from = |ip: &str| common::license_client_from(&addresses[leader], ip.parse().unwrap());
    let mut a = from("127.0.0.21").await.unwrap();
    let held = a
        .checkout(checkout(70, 1, "cad", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(held.granted);
    let last_log = || last_log_index(nodes[leader].as_ref().unwrap());
    // The burst (10) and what refills meanwhile are denied as usual; the rest
    // are refused.
    let (mut denied, mut refused) = (0, 0);
    for session in 0..40u64 {
        match a.checkout(checkout(7000 + session, 1, "cad", 1)).await {
            Ok(reply) => {
                assert!(!reply.get_ref().granted);
                denied += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(
                    status
                        .message()
                        .contains("limits.unheld_writes_per_address_per_s = 2"),
                    "{status:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        (10..20).contains(&denied),
        "{denied} denied, {refused} refused"
    );
    // Refused ones write nothing: ten more leave the log where it is.
    let before = last_log();
    for session in 0..10u64 {
        let refusal = a
            .checkout(checkout(8000 + session, 1, "cad", 1))
            .await
            .unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::ResourceExhausted);
    }
    assert_eq!(last_log(), before, "refused check-outs reached the log");
    // Another address is denied as usual; the session that holds a seat
    // checks it in from the limited address.
    let mut b = from("127.0.0.22").await.unwrap();
    let other = b.checkout(checkout(9000, 1, "cad", 1)).await.unwrap();
    assert!(!other.get_ref().granted);
    let released = a
        .checkin(pb::CheckinRequest {
            request: Some(common::request_id(70, 2)),
            token: held.token,
        })
        .await
        .unwrap();
    assert!(released.get_ref().released);
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}

/// The index of a running node of `cluster` that serves, waiting for one.
async fn serving_in(cluster: &InProcess) -> usize {
    common::wait_until("a node serves", Duration::from_secs(30), || async {
        (0..cluster.len()).find(|&i| {
            cluster
                .node(i)
                .is_some_and(|n| n.shared().serving().is_ok())
        })
    })
    .await
}

// A five-node cluster in one process serves a check-out; with its active
// node stopped another serves, and the stopped node, started again on its
// addresses, holds the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_in_process_serve_and_restart_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let bound = bind(5).await.unwrap();
    let configs = common::node_configs(
        dir.path(),
        &bound.addresses,
        &bound.peer_addresses,
        &public,
        |_| {},
    );
    let mut cluster = InProcess::start(configs, bound).await.unwrap();
    let leader = serving_in(&cluster).await;
    let address = cluster.addresses()[leader].clone();
    let mut admin = common::admin_client(&address).await;
    admin
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 3)]),
        })
        .await
        .unwrap();
    let granted = common::license_client(&address)
        .await
        .checkout(checkout(51, 1, "cad", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted, "{granted:?}");
    let token = granted.token.unwrap();
    let token = raftlm::license::state::GrantToken {
        term: raftlm::license::state::Term(token.term),
        index: raftlm::license::state::LogIndex(token.index),
        slot: token.slot,
    };

    cluster.stop(leader).await;
    let next = serving_in(&cluster).await;
    assert_ne!(next, leader);
    cluster.restart(leader).await.unwrap();
    let returned = cluster.node(leader).unwrap();
    common::wait_until(
        "the restarted node holds the grant",
        Duration::from_secs(30),
        || async {
            returned
                .shared()
                .state
                .read(|s| s.grant(&token).is_some())
                .then_some(())
        },
    )
    .await;
    cluster.shutdown().await;
}

// Status lists the grants in pages: at most grants_max (and never more than
// the server's limit) per reply, grants_next to go on, grants_total in all;
// a vendor or feature filter narrows the features, lines and grants. The
// client's status() gathers every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_its_grants_and_filters_by_feature() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, key) = start_cluster(dir.path()).await;
    let leader = leader_of(&nodes).await;
    let address = nodes[leader].as_ref().unwrap().address().to_string();
    common::admin_client(&address)
        .await
        .import_license(pb::ImportLicenseRequest {
            name: "acme.lic".into(),
            text: common::signed_license(&key, &[("cad", 30), ("sim", 5)]),
        })
        .await
        .unwrap();
    let mut license = common::license_client(&address).await;
    for i in 0..25u64 {
        let reply = license
            .checkout(checkout(300 + i, 1, "cad", 1))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.granted);
    }
    assert!(
        license
            .checkout(checkout(400, 1, "sim", 2))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    let page = |after: Option<pb::GrantToken>, feature: &str| pb::StatusRequest {
        feature: feature.into(),
        grants_after: after,
        grants_max: 10,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let reply = license
            .status(page(after, "cad"))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert_eq!(reply.grants_total, 25);
        assert!(reply.grants.len() <= 10);
        assert!(
            reply.features.iter().all(|f| f.feature == "cad"),
            "{reply:?}"
        );
        assert!(reply.lines.iter().all(|l| l.feature == "cad"));
        seen.extend(reply.grants.iter().map(|g| g.token.unwrap()));
        match reply.grants_next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), 25, "a grant listed twice");
    let all = license
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.grants.len(), all.grants_total), (26, 26));
    assert!(all.grants_next.is_none());
    let bad = license
        .status(pb::StatusRequest {
            feature: "x".repeat(300),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}
