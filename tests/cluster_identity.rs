//! Two clusters with the same name and different CAs: a license file bound
//! to one cluster's identity (`SERVER LICSRV ID=sha256:… 27000`) imports on
//! that cluster and is refused by the other before anything is written to its
//! log, naming both identities; files bound by name only still import on
//! both; and an application's vendor check accepts grants of identity-bound
//! lines only for the CA it trusts.

mod common;

use std::time::Duration;

use raftlm::client::{Client, ClientError, ClientOptions, ServerList, Session, SessionOptions};
use raftlm::license::ClusterId;
use raftlm::license::signature::{self, VendorSigningKey};
use raftlm::local::in_process::{bind, start_nodes};
use raftlm::local::tls::ClusterTls;
use raftlm::node::Node;
use raftlm::tls::client::ClientTls;

const PATIENCE: Duration = Duration::from_secs(60);

struct Cluster {
    nodes: Vec<Node>,
    admin: Client,
    client_tls: ClientTls,
    addresses: Vec<String>,
}

fn options(tls: ClientTls) -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        follow_leader_hints: true,
        tls,
    }
}

/// Starts three in-process nodes named LICSRV whose CA is `ca` (the shared
/// test CA when `None`), trusting `public`.
async fn start(
    dir: &std::path::Path,
    ca: Option<&ClusterTls>,
    public: &std::path::Path,
) -> Cluster {
    let bound = bind(3).await.unwrap();
    let configs = common::node_configs(
        dir,
        &bound.addresses,
        &bound.peer_addresses,
        public,
        |config| {
            if let Some(ca) = ca {
                config.tls = ca.node_config(config.node_id);
            }
        },
    );
    let addresses = bound.addresses.clone();
    let nodes: Vec<Node> = start_nodes(&configs, bound)
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let (admin_tls, client_tls) = match ca {
        Some(ca) => (
            ca.administrator()
                .unwrap()
                .with_server_name(common::CLUSTER),
            ca.client().unwrap().with_server_name(common::CLUSTER),
        ),
        None => (common::admin_tls(), common::client_tls()),
    };
    let servers: ServerList = addresses.join(",").parse().unwrap();
    Cluster {
        nodes,
        admin: Client::with_options(servers, options(admin_tls)),
        client_tls,
        addresses,
    }
}

impl Cluster {
    /// The cluster identity the cluster recorded, once a node is active.
    async fn identity(&self) -> ClusterId {
        common::wait_until("a node is active with an identity", PATIENCE, || async {
            let status = self.admin.status().await.ok()?;
            (status.active_node != 0 && !status.cluster_id.is_empty())
                .then(|| status.cluster_id.parse().unwrap())
        })
        .await
    }

    fn session_client(&self) -> Client {
        let servers: ServerList = self.addresses.join(",").parse().unwrap();
        Client::with_options(servers, options(self.client_tls.clone()))
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

fn ca_identity(path: &std::path::Path) -> ClusterId {
    let pem = std::fs::read_to_string(path).unwrap();
    let ids = raftlm::tls::identity::ca_cluster_ids(&pem).unwrap();
    ids[0].0
}

fn license(key: &VendorSigningKey, hostid: &str, feature: &str, seats: u32) -> String {
    let text = format!(
        "SERVER {} {hostid} 27000\nVENDOR acme\nFEATURE {feature} acme 2.0 permanent {seats}\n",
        common::CLUSTER
    );
    signature::sign_text("t.lic", &text, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_bound_to_one_cluster_is_refused_by_another_of_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let ca_b = ClusterTls::create(
        &dir.path().join("ca-b"),
        common::CLUSTER,
        &[1, 2, 3],
        &["127.0.0.1".to_string()],
    )
    .unwrap();
    let a = start(&dir.path().join("a"), None, &public).await;
    let b = start(&dir.path().join("b"), Some(&ca_b), &public).await;

    // Each cluster's recorded identity is its own CA's, as `tls identity` prints it.
    let (id_a, id_b) = (a.identity().await, b.identity().await);
    assert_eq!(id_a, ca_identity(&common::tls().ca()));
    assert_eq!(id_b, ca_identity(&ca_b.ca()));
    assert_ne!(id_a, id_b);

    // Bound to A: A imports it, B refuses it naming both identities.
    let bound = license(&key, &format!("ID={id_a}"), "cad", 3);
    let reply = a.admin.import_license("bound.lic", &bound).await.unwrap();
    assert_eq!(reply.lines, 1);
    let before = b.admin.status().await.unwrap();
    match b.admin.import_license("bound.lic", &bound).await {
        Err(ClientError::Refused(reason)) => assert!(
            reason.contains(&format!(
                "this file is bound to cluster {id_a} but this cluster is {id_b}"
            )),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Refused before it was proposed: no administrator action recorded, no seats.
    let after = b.admin.status().await.unwrap();
    assert!(
        after
            .admin_actions
            .iter()
            .all(|action| !action.action.contains("bound.lic")),
        "{:?}",
        after.admin_actions
    );
    assert_eq!(after.admin_actions.len(), before.admin_actions.len());
    assert!(after.lines.is_empty());

    // Bound by name only: both import it, as before identities existed.
    let named = license(&key, "ANY", "cam", 2);
    a.admin.import_license("named.lic", &named).await.unwrap();
    b.admin.import_license("named.lic", &named).await.unwrap();
    let status_a = a.admin.status().await.unwrap();
    let line = |status: &raftlm::proto::v1::StatusReply, name: &str| {
        status
            .lines
            .iter()
            .find(|l| l.license == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not held"))
    };
    assert_eq!(line(&status_a, "bound.lic").cluster_id, id_a.to_string());
    assert_eq!(line(&status_a, "named.lic").cluster_id, "");
    assert_eq!(
        line(&b.admin.status().await.unwrap(), "named.lic").cluster_id,
        ""
    );

    // The application on A, with the vendor's key compiled in, accepts the
    // bound grant: the CA it trusts is A's.
    let vendor_app = SessionOptions {
        vendor: "acme".into(),
        user: "ada".into(),
        host: "ws1".into(),
        vendor_keys: vec![key.public_key()],
        heartbeat_interval: Some(Duration::from_millis(200)),
        unreachable_after: Duration::from_secs(1),
        ..SessionOptions::default()
    };
    let session = Session::start(a.session_client(), vendor_app.clone());
    let grant = session.checkout("cad", 1).await.unwrap();
    assert_eq!(grant.backing[0].cluster_id, Some(id_a));
    // The same grant, judged by an application that trusts B's CA, is refused.
    let refused = grant
        .verify(&[key.public_key()], &[id_b])
        .expect_err("bound to another cluster");
    assert_eq!(
        refused,
        format!(
            "the FEATURE line cad acme 2.0 3 seats is bound to cluster {id_a} but this application trusts the CA of cluster {id_b}"
        )
    );
    assert!(
        grant
            .verify(&[key.public_key()], &[])
            .expect_err("no CA")
            .ends_with(
                "but this application trusts no cluster CA file (RAFTLM_CA) to compare it with"
            )
    );
    session.checkin(&grant).await.unwrap();
    session.close().await.unwrap();
    // A name-only grant from B passes B's application's check.
    let session = Session::start(b.session_client(), vendor_app);
    let grant = session.checkout("cam", 1).await.unwrap();
    assert_eq!(grant.backing[0].cluster_id, None);
    session.close().await.unwrap();

    a.shutdown().await;
    b.shutdown().await;
}

// A CA certificate is public: a node whose CA file also holds another
// cluster's CA certificate still takes its identity from the CA that issued
// its own certificate, in whichever order the file lists them.
#[test]
fn a_node_takes_its_identity_from_the_ca_that_issued_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_b = ClusterTls::create(
        &dir.path().join("ca-b"),
        common::CLUSTER,
        &[1],
        &["127.0.0.1".to_string()],
    )
    .unwrap();
    let (id_a, id_b) = (ca_identity(&common::tls().ca()), ca_identity(&ca_b.ca()));
    let pem_a = std::fs::read_to_string(common::tls().ca()).unwrap();
    let pem_b = std::fs::read_to_string(ca_b.ca()).unwrap();
    for (name, bundle) in [
        ("ab.crt", format!("{pem_a}{pem_b}")),
        ("ba.crt", format!("{pem_b}{pem_a}")),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bundle).unwrap();
        let shown = raftlm::tls::identity::ca_cluster_ids(&std::fs::read_to_string(&path).unwrap())
            .unwrap();
        assert_eq!(shown.len(), 2);
        let (cert, key) = ca_b.node(1);
        let state = raftlm::tls::acceptor::TlsState::load(
            raftlm::config::TlsFiles {
                ca: path.clone(),
                cert,
                key,
            },
            common::CLUSTER,
            1,
        )
        .unwrap();
        assert_eq!(state.current().cluster_id, id_b, "{name}");
        assert_ne!(state.current().cluster_id, id_a);
    }
}
