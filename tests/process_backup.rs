//! `raftlm backup` and `raftlm restore` on a real three-process cluster: a
//! backup taken while a client holds a seat, every node's data destroyed,
//! the cluster restored on three empty directories, and the client that kept
//! heartbeating through it all keeps its grant and accepts the new term.

mod common;

use std::time::Duration;

use common::process::{ProcessCluster, raftlm, status};
use raftlm::client::{Client, ClientOptions, ServerList, Session, SessionEvent, SessionOptions};
use raftlm::raft::backup;
use raftlm::raft::restore::RESTORE_TERM_GAP;

fn client_options() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        tls: common::client_tls(),
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_backup_keeps_the_seats_of_running_clients() {
    let mut cluster = ProcessCluster::new(&[("cad", 3), ("sim", 1)]);
    cluster.start_all();
    cluster.wait_licensed().await;
    let dir = cluster.dir.path().to_path_buf();

    let servers: ServerList = cluster.access_point.parse().unwrap();
    let session = Session::start(
        Client::with_options(servers, client_options()),
        SessionOptions {
            vendor: "acme".into(),
            user: "ada".into(),
            host: "ws1".into(),
            heartbeat_interval: Some(Duration::from_millis(300)),
            unreachable_after: Duration::from_secs(1),
            ..SessionOptions::default()
        },
    );
    let mut events = session.subscribe();
    let grant = session.checkout("cad", 2).await.unwrap();

    // The backup, checked on the way in and again offline.
    let file = dir.join("cluster.backup");
    let (code, out, err) = raftlm(
        &[
            "backup",
            "--out",
            file.to_str().unwrap(),
            "--server",
            &cluster.access_point,
        ],
        &dir,
    );
    assert_eq!(code, 0, "backup failed: {out}{err}\n{}", cluster.logs());
    assert!(out.contains("checks passed"), "{out}");
    assert!(out.contains("1 grants"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "a backup holds session secrets' handles: owner only"
    );
    // Without the administrator certificate: refused by the cluster.
    let output = common::process::raftlm_command()
        .env_remove("RAFTLM_CERT")
        .env_remove("RAFTLM_KEY")
        .args([
            "backup",
            "--out",
            "x.backup",
            "--server",
            &cluster.access_point,
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("administrator certificate"), "{err}");
    assert!(!dir.join("x.backup").exists());
    let (code, out, err) = raftlm(&["backup", "--verify", file.to_str().unwrap()], &dir);
    assert_eq!(code, 0, "{out}{err}");
    let taken = backup::decode(&std::fs::read(&file).unwrap()).unwrap();
    assert!(taken.state.grants().contains_key(&grant.token));

    // A changed byte is named by its check, and refused (exit 1).
    let bad = dir.join("bad.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&bad, bytes).unwrap();
    let (code, _, err) = raftlm(&["backup", "--verify", bad.to_str().unwrap()], &dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("checksum check"), "{err}");

    // Disaster: every node and every data directory gone.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        std::fs::remove_dir_all(dir.join(format!("node{id}"))).unwrap();
    }
    wait_event(&mut events, |e| {
        matches!(e, SessionEvent::EnteredCaching { .. })
    })
    .await;

    // Restore refuses a directory that holds anything, then restores each node.
    std::fs::create_dir_all(dir.join("node1/leftover")).unwrap();
    let config1 = cluster.config(1);
    let restore = |config: &std::path::Path| {
        raftlm(
            &[
                "restore",
                file.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            &dir,
        )
    };
    let (code, _, err) = restore(&config1);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty"), "{err}");
    std::fs::remove_dir_all(dir.join("node1")).unwrap();
    for id in 1..=3 {
        let (code, out, err) = restore(&cluster.config(id));
        assert_eq!(code, 0, "restore of node {id}: {out}{err}");
        assert!(out.contains("acme.lic: held as it is"), "{out}");
    }
    cluster.start_all();
    cluster.wait_licensed().await;

    // The client left caching mode on the restored cluster, in a higher
    // term, without losing or re-taking its grant.
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap_or_else(|_| panic!("the session never left caching mode: {seen:?}"))
            .unwrap();
        assert!(
            !matches!(
                event,
                SessionEvent::GrantLost { .. } | SessionEvent::SessionRestarted { .. }
            ),
            "{event:?} after the restore; before it: {seen:?}"
        );
        if matches!(event, SessionEvent::LeftCaching { .. }) {
            break;
        }
        seen.push(event);
    }
    let reply = status(&cluster.access_point).await.unwrap();
    assert!(
        reply.term > taken.term + RESTORE_TERM_GAP - 1,
        "term {}",
        reply.term
    );
    let cad = reply.features.iter().find(|f| f.feature == "cad").unwrap();
    assert_eq!(cad.in_use, 2, "{reply:?}");

    // A backup of the restored cluster holds the same licenses and grants.
    let again = dir.join("again.backup");
    let (code, out, err) = raftlm(
        &[
            "backup",
            "--out",
            again.to_str().unwrap(),
            "--server",
            &cluster.access_point,
        ],
        &dir,
    );
    assert_eq!(code, 0, "{out}{err}");
    let after = backup::decode(&std::fs::read(&again).unwrap()).unwrap();
    assert_eq!(
        after.state.grants().keys().collect::<Vec<_>>(),
        taken.state.grants().keys().collect::<Vec<_>>()
    );
    assert_eq!(after.state.licenses(), taken.state.licenses());
    session.checkin(&grant).await.unwrap();
}

async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<SessionEvent>,
    wanted: impl Fn(&SessionEvent) -> bool,
) {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no such event; seen {seen:?}"))
            .unwrap();
        if wanted(&event) {
            return;
        }
        seen.push(event);
    }
}

#[test]
fn backup_needs_a_file_to_write_or_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = raftlm(&["backup"], dir.path());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = raftlm(&["backup", "--verify", "missing.backup"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.backup"), "{err}");
}
