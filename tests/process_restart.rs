//! The real binary as three processes: acknowledged grants survive SIGKILL of
//! every node, and bad data or config is reported clearly at start-up.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::process::{ProcessCluster, license_client, raftlm};
use raftlm::proto::v1 as pb;

// The cluster forms and re-forms whatever order its nodes start in; every checkout
// acknowledged before all three nodes were killed with SIGKILL is present after they
// restart, and the seats in use are exactly those grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_and_restart_keeps_every_acknowledged_grant() {
    let mut cluster = ProcessCluster::new(&[("cad", 1000)]);
    // Pristine nodes, started out of order and apart: they still form one cluster.
    for id in [2, 3, 1] {
        cluster.start(id);
        // Kept: the point is starts spread apart in time.
        std::thread::sleep(Duration::from_millis(300));
    }
    let (active, _) = cluster.wait_active(Duration::from_secs(30)).await;
    // Wait until the license directory has been imported.
    let address = cluster.addresses[active - 1].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = common::process::status(&address).await;
        if status.is_some_and(|s| {
            s.features
                .iter()
                .any(|f| f.feature == "cad" && f.licensed == 1000)
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "license not imported\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Eight concurrent clients, twenty checkouts each.
    let mut tasks = Vec::new();
    for session in 1..=8u64 {
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = license_client(&address).await.expect("connect");
            let mut acknowledged = Vec::new();
            for seq in 1..=20u64 {
                let request = pb::CheckoutRequest {
                    vendor: "acme".into(),
                    version: String::new(),
                    request: Some(common::request_id(session, seq)),
                    feature: "cad".into(),
                    count: 1,
                    user: format!("user{session}"),
                    host: "ws".into(),
                };
                let reply = client
                    .checkout(request)
                    .await
                    .expect("checkout")
                    .into_inner();
                assert!(reply.granted, "{reply:?}");
                let t = reply.token.unwrap();
                acknowledged.push((t.term, t.index, t.slot));
            }
            acknowledged
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 160);

    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in [3, 1, 2] {
        cluster.start(id);
        // Kept: the point is starts spread apart in time.
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, status) = cluster.wait_active(Duration::from_secs(30)).await;
    let held: BTreeSet<_> = status
        .grants
        .iter()
        .map(|g| g.token.as_ref().map(|t| (t.term, t.index, t.slot)).unwrap())
        .collect();
    assert_eq!(
        held, acknowledged,
        "grants after restart differ from those acknowledged"
    );
    let in_use = status
        .features
        .iter()
        .find(|f| f.feature == "cad")
        .unwrap()
        .in_use;
    assert_eq!(in_use, 160);
}

// A corrupt data directory is reported at start-up with a clear error and exit code 2, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_is_reported_not_panicked() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let data = cluster.dir.path().join("node1");
    std::fs::create_dir_all(&data).unwrap();
    // Start once to create the database, then damage every file in it.
    cluster.start(1);
    common::wait_until(
        "node 1 has opened its database (\"node started\")",
        Duration::from_secs(30),
        || async { cluster.log(1).contains("node started").then_some(()) },
    )
    .await;
    cluster.kill(1);
    let mut damaged = 0;
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        if bytes.len() > 16 {
            let garbage: Vec<u8> = bytes
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ (i as u8 | 0x5a))
                .collect();
            std::fs::write(&entry, garbage).unwrap();
            damaged += 1;
        }
    }
    assert!(
        damaged > 0,
        "no database files found under {}",
        data.display()
    );
    let config = cluster.config(1);
    let (code, _, stderr) = raftlm(
        &["server", "--config", config.to_str().unwrap()],
        cluster.dir.path(),
    );
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("data directory"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

// A config with a wrong field is refused with exit code 2 and a message naming the field.
#[test]
fn bad_config_names_the_field() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.tune(1, |config| config.timing.lease_ms = 900);
    let config = cluster.config(1);
    let (code, _, stderr) = raftlm(
        &["server", "--config", config.to_str().unwrap()],
        cluster.dir.path(),
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("timing.lease_ms"), "stderr: {stderr}");
}

// A node whose private key is not its certificate's does not start: exit
// code 2 (a configuration error, as for the cases above), and the message
// names both files and says they do not belong together.
#[test]
fn a_key_that_is_not_the_certificates_is_refused_naming_both_files() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let tls = common::tls();
    let (cert, _) = tls.node(1);
    let (_, other_key) = tls.node(2);
    cluster.tune(1, |config| {
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(other_key.clone());
    });
    let config = cluster.config(1);
    let (code, _, stderr) = raftlm(
        &["server", "--config", config.to_str().unwrap()],
        cluster.dir.path(),
    );
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "the private key {} and the certificate {} do not belong together",
            other_key.display(),
            cert.display()
        )),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
