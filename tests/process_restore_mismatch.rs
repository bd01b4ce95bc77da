//! Nodes restored from different backup files refuse to form a cluster, with
//! real processes: two backups of one cluster taken before and after a
//! check-out, two nodes restored from the first and one from the second.
//! No node activates, and the log names both backups and the fix. (A
//! cluster restored from one file activates: `tests/process_backup.rs`.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{ProcessCluster, raftlm, status};
use raftlm::client::{Client, ClientOptions, ServerList, Session, SessionOptions};
use raftlm::raft::backup::{self, Backup};

const PATIENCE: Duration = Duration::from_secs(60);

/// `raftlm backup` of the running cluster into `file`, decoded.
fn take_backup(cluster: &ProcessCluster, file: &Path) -> Backup {
    let (code, out, err) = raftlm(
        &[
            "backup",
            "--out",
            file.to_str().unwrap(),
            "--server",
            &cluster.access_point,
        ],
        cluster.dir.path(),
    );
    assert_eq!(code, 0, "backup failed: {out}{err}\n{}", cluster.logs());
    backup::decode(&std::fs::read(file).unwrap()).unwrap()
}

/// A user promise: nodes restored from different files refuse to form a
/// cluster (digests compared at the first activation), saying why and what
/// to do, rather than one backup silently replacing the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_restored_from_different_backups_do_not_activate() {
    let mut cluster = ProcessCluster::new(&[("cad", 3)]);
    cluster.start_all();
    cluster.wait_licensed().await;
    let dir = cluster.dir.path().to_path_buf();
    let first_file = dir.join("first.backup");
    let first = take_backup(&cluster, &first_file);
    let servers: ServerList = cluster.access_point.parse().unwrap();
    let session = Session::start(
        Client::with_options(
            servers,
            ClientOptions {
                tls: common::client_tls(),
                ..ClientOptions::default()
            },
        ),
        SessionOptions {
            vendor: "acme".into(),
            user: "ada".into(),
            host: "ws1".into(),
            ..SessionOptions::default()
        },
    );
    session.checkout("cad", 1).await.unwrap();
    let second_file = dir.join("second.backup");
    let second = take_backup(&cluster, &second_file);
    assert_ne!(first.state_digest, second.state_digest);
    drop(session);

    // Every node lost; nodes 1 and 2 restored from the first file, node 3
    // from the second.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        std::fs::remove_dir_all(&cluster.configs[id - 1].data_dir).unwrap();
        let file = if id == 3 { &second_file } else { &first_file };
        let (code, out, err) = raftlm(
            &[
                "restore",
                file.to_str().unwrap(),
                "--config",
                cluster.config(id).to_str().unwrap(),
            ],
            &dir,
        );
        assert_eq!(code, 0, "restore of node {id}: {out}{err}");
    }
    cluster.start_all();

    let refused =
        raftlm::local::wait::wait_until("a node refuses to activate", PATIENCE, || async {
            (1..=3).find_map(|id| {
                cluster
                    .log(id)
                    .lines()
                    .find(|line| line.contains("restored from different backups"))
                    .map(str::to_string)
            })
        })
        .await;
    let refusal = refused.unwrap_or_else(|timeout| panic!("{timeout}\n{}", cluster.logs()));
    let backup_text = |b: &Backup| {
        format!(
            "state {} at log id {}-{}-{}",
            b.state_digest,
            b.last_applied.leader_id.term,
            b.last_applied.leader_id.node_id,
            b.last_applied.index
        )
    };
    assert!(
        refusal.contains(&format!("nodes 1, 2 from {}", backup_text(&first))),
        "{refusal}"
    );
    assert!(
        refusal.contains(&format!("node 3 from {}", backup_text(&second))),
        "{refusal}"
    );
    assert!(
        refusal.contains("restore every node from the same file"),
        "{refusal}"
    );
    // Nobody serves: no node answers Status as the active node.
    for address in cluster.addresses.iter().chain([&cluster.access_point]) {
        assert!(
            status(address).await.is_none(),
            "{address} serves:\n{}",
            cluster.logs()
        );
    }
}
