//! License files bound to the members' host ids (`SERVER … HOSTIDS=…`): the
//! active node records the host id each voter reports, the lines count while
//! a majority of the voters report a listed id, and stop counting when two of
//! three machines are replaced by machines the file does not name (each node
//! here reads its own machine id file, as `machine_id_file` allows).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use raftlm::client::{Client, ClientError, ClientOptions, ServerList, Session, SessionOptions};
use raftlm::config::Config;
use raftlm::license::HostId;
use raftlm::license::signature;
use raftlm::license::state::DenyReason;
use raftlm::local::in_process::{bind, start_again, start_nodes};
use raftlm::node::Node;
use raftlm::proto::v1::StatusReply;

const PATIENCE: Duration = Duration::from_secs(60);

fn options(tls: raftlm::tls::client::ClientTls) -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        follow_leader_hints: true,
        tls,
    }
}

/// A machine id (32 hex digits) made of `n`.
fn machine_id(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

fn host(n: u8) -> HostId {
    HostId::from_machine_id(&machine_id(n)).unwrap()
}

struct Cluster {
    nodes: Vec<Option<Node>>,
    configs: Vec<Config>,
    addresses: Vec<String>,
    admin: Client,
}

impl Cluster {
    async fn start(dir: &Path, public: &Path, machines: [u8; 3]) -> Cluster {
        let bound = bind(3).await.unwrap();
        let configs = common::node_configs(
            dir,
            &bound.addresses,
            &bound.peer_addresses,
            public,
            |config| {
                let file = machine_file(dir, config.node_id);
                let machine = machines[config.node_id as usize - 1];
                std::fs::write(&file, format!("{}\n", machine_id(machine))).unwrap();
                config.machine_id_file = Some(file);
            },
        );
        let addresses = bound.addresses.clone();
        let nodes = start_nodes(&configs, bound).await.unwrap();
        let servers: ServerList = addresses.join(",").parse().unwrap();
        Cluster {
            nodes,
            configs,
            addresses,
            admin: Client::with_options(servers, options(common::admin_tls())),
        }
    }

    /// Stops node `id`, gives its machine the machine id `machine`, and
    /// starts it again on the same addresses and data.
    async fn move_to_machine(&mut self, dir: &Path, id: u64, machine: u8) {
        let i = id as usize - 1;
        self.nodes[i].take().unwrap().shutdown().await;
        std::fs::write(machine_file(dir, id), format!("{}\n", machine_id(machine))).unwrap();
        self.nodes[i] = Some(start_again(&self.configs[i]).await.unwrap());
    }

    /// The first status from an active node that satisfies `ready`.
    async fn status_when(&self, what: &str, ready: impl Fn(&StatusReply) -> bool) -> StatusReply {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(status) = self.admin.status().await
                && status.active_node != 0
                && ready(&status)
            {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn session(&self) -> Session {
        let servers: ServerList = self.addresses.join(",").parse().unwrap();
        let client = Client::with_options(servers, options(common::client_tls()));
        Session::start(
            client,
            SessionOptions {
                vendor: "acme".into(),
                user: "ada".into(),
                host: "ws1".into(),
                heartbeat_interval: Some(Duration::from_millis(200)),
                unreachable_after: Duration::from_secs(2),
                ..SessionOptions::default()
            },
        )
    }

    async fn shutdown(self) {
        for node in self.nodes.into_iter().flatten() {
            node.shutdown().await;
        }
    }
}

fn machine_file(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("machine-id-{id}"))
}

/// The host ids each node shows in status, by node id.
fn recorded(status: &StatusReply) -> Vec<String> {
    let mut nodes = status.nodes.clone();
    nodes.sort_by_key(|n| n.id);
    nodes.into_iter().map(|n| n.host_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_bound_to_host_ids_stop_counting_when_a_majority_reports_other_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::vendor_key(dir.path());
    let mut cluster = Cluster::start(dir.path(), &public, [1, 2, 3]).await;

    // Before any bound file, status shows the ids the active node hears, and
    // nothing is recorded through the log.
    let want: Vec<String> = [1, 2, 3].map(|n| host(n).to_string()).to_vec();
    let before = cluster
        .status_when("every node's host id heard", |s| recorded(s) == want)
        .await;
    assert!(
        before
            .admin_actions
            .iter()
            .all(|a| !a.action.starts_with("report host ids")),
        "{:?}",
        before.admin_actions
    );

    let text = format!(
        "SERVER {} ANY 27000 HOSTIDS={},{},{}\nVENDOR acme\nFEATURE cad acme 2.0 permanent 3\n",
        common::CLUSTER,
        host(1),
        host(2),
        host(3)
    );
    let bound = signature::sign_text("hosts.lic", &text, &key).unwrap();
    cluster
        .admin
        .import_license("hosts.lic", &bound)
        .await
        .unwrap();
    // The import makes the active node record what the voters report.
    let status = cluster
        .status_when("the voters' host ids recorded", |s| {
            s.lines.first().is_some_and(|l| l.voters == 3)
        })
        .await;
    assert!(
        status
            .admin_actions
            .iter()
            .any(|a| a.action.starts_with("report host ids: node 1 ")),
        "{:?}",
        status.admin_actions
    );
    let line = &status.lines[0];
    assert_eq!(line.host_ids, want);
    assert_eq!((line.hosts_listed, line.voters), (3, 3));
    assert!(line.counts, "{line:?}");

    let session = cluster.session();
    let held = session.checkout("cad", 1).await.unwrap();
    assert_eq!(held.backing[0].host_ids, [host(1), host(2), host(3)]);

    // Node 2 moves to an unlisted machine: two of three still report a
    // listed id, and the line counts.
    cluster.move_to_machine(dir.path(), 2, 8).await;
    let status = cluster
        .status_when("node 2's new host id recorded", |s| {
            recorded(s)[1] == host(8).to_string()
        })
        .await;
    assert!(status.lines[0].counts, "{:?}", status.lines[0]);
    let second = session.checkout("cad", 1).await.unwrap();

    // Node 3 moves too: one of three is not a majority.
    cluster.move_to_machine(dir.path(), 3, 9).await;
    let status = cluster
        .status_when("node 3's new host id recorded", |s| {
            recorded(s)[2] == host(9).to_string()
        })
        .await;
    let line = &status.lines[0];
    assert!(!line.counts);
    assert_eq!((line.hosts_listed, line.voters), (1, 3));
    assert_eq!(
        line.reason,
        "bound to host ids and 1 of 3 voters report a listed host id, not a majority: counts 0 seats"
    );
    assert_eq!(status.features[0].unexpired, 0);
    assert!(status.features[0].by_expiry[0].hosts_unlisted);
    match session.checkout("cad", 1).await {
        Err(ClientError::Denied { reason, .. }) => {
            assert_eq!(reason, DenyReason::HostsNotListed)
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Seats already held stay held and are returned as usual.
    session.checkin(&second).await.unwrap();
    session.checkin(&held).await.unwrap();

    // Node 2 comes back to its listed machine: two of three again.
    cluster.move_to_machine(dir.path(), 2, 2).await;
    cluster
        .status_when("the line counts again", |s| {
            s.lines.first().is_some_and(|l| l.counts)
        })
        .await;
    session.checkout("cad", 1).await.unwrap();
    session.close().await.unwrap();
    cluster.shutdown().await;
}

// `raftlm hostid` prints the id a node with that machine id file reports,
// from the file or from a node's config; a missing or malformed file is a
// usage error naming it.
#[test]
fn hostid_prints_the_machines_host_id() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine-id");
    std::fs::write(&file, format!("{}\n", machine_id(5))).unwrap();
    let (code, out, err) = common::process::raftlm(
        &["hostid", "--machine-id-file", file.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}\n", host(5)));
    std::fs::write(&file, "not a machine id\n").unwrap();
    let (code, _, err) = common::process::raftlm(
        &["hostid", "--machine-id-file", file.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("is not a machine id"), "{err}");
    let missing = dir.path().join("absent");
    let (code, _, err) = common::process::raftlm(
        &["hostid", "--machine-id-file", missing.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}
