//! Logs an operator can keep: with one node down, the active node's log
//! grows by a few lines, not by a line per failed call.

mod common;

use std::time::Duration;

use common::process::ProcessCluster;

/// The active node's log growth, in bytes, over `window` while a standby is
/// down, with the nodes' `RAFTLM_LOG` set to `filter` (`None`: the default).
async fn growth_with_one_node_down(filter: Option<&str>, window: Duration) -> (u64, String) {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]).with_log_filter(filter);
    cluster.start_all();
    let (_, status) = cluster.wait_active(Duration::from_secs(30)).await;
    let active = status.active_node as usize;
    let standby = if active == 1 { 2 } else { 1 };
    cluster.kill(standby);
    // The outage's first line is written within a heartbeat or two.
    common::wait_until(
        "the active node logs the outage (\"peer unreachable\")",
        Duration::from_secs(20),
        || async {
            cluster
                .log(active)
                .contains("peer unreachable")
                .then_some(())
        },
    )
    .await;
    let path = cluster.dir.path().join(format!("node{active}.log"));
    let before = std::fs::metadata(&path).unwrap().len();
    // Kept: the log's growth over a fixed window is what is measured.
    tokio::time::sleep(window).await;
    let after = std::fs::metadata(&path).unwrap().len();
    (after - before, cluster.log(active))
}

// With the default log settings, a standby that is down costs the active
// node a line when the outage starts and a count once a minute: over 20 s
// after the first line, well under a kilobyte (100 KB an hour is the
// target; the figure printed is this window's growth scaled to an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_costs_a_few_log_lines() {
    let window = Duration::from_secs(20);
    let (grown, log) = growth_with_one_node_down(None, window).await;
    let per_hour = grown * 3600 / window.as_secs();
    eprintln!(
        "active node's log with one node down (default RAFTLM_LOG): {grown} bytes in {window:?}, {per_hour} bytes an hour"
    );
    assert!(
        log.contains("peer unreachable"),
        "the outage is logged when it starts\n{log}"
    );
    assert!(grown < 1_000, "{grown} bytes in {window:?}\n{log}");
}

// A license_dir that does not exist stops the node at start-up (exit 2,
// naming the setting) instead of a warning many times a second; a file in the
// directory that does not parse is logged as "license file refused", the
// line operations.md tells administrators to alert on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_directory_problems_are_named_once() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let missing = cluster.dir.path().join("missing.toml");
    let mut config = cluster.configs[0].clone();
    config.license_dir = Some(cluster.dir.path().join("no-such-dir"));
    raftlm::local::files::write_config(&missing, &config, None).unwrap();
    let (code, _out, err) = common::process::raftlm(
        &["server", "--config", missing.to_str().unwrap()],
        cluster.dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("license_dir") && err.contains("no-such-dir"),
        "{err}"
    );

    std::fs::write(
        cluster.dir.path().join("licenses").join("broken.lic"),
        "SERVER LICSRV ANY 27000\nVENDOR acme\nFEATURE cad acme 2.0 31-feb-2027 5\n",
    )
    .unwrap();
    cluster.start_all();
    let (_, status) = cluster.wait_active(Duration::from_secs(30)).await;
    let active = status.active_node as usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = cluster.log(active);
        if log.contains("license file refused") && log.contains("broken.lic") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no \"license file refused\" line\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the active node's status lists `feature`.
async fn wait_feature(cluster: &ProcessCluster, feature: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status) = cluster.wait_active(Duration::from_secs(20)).await;
        if status.features.iter().any(|f| f.feature == feature) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{feature} never imported\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The license directory is read again on SIGHUP to the active node (a
// standby says it is not the one that reads), and by `raftlm license reread`,
// which lists what became of each file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_license_directory_is_reread_on_sighup_and_by_command() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.start_all();
    let (active, _) = cluster.wait_active(Duration::from_secs(30)).await;
    let licenses = cluster.dir.path().join("licenses");
    std::fs::write(
        licenses.join("more.lic"),
        common::signed_license(&cluster.key, &[("cam", 3)]),
    )
    .unwrap();
    let standby = active % 3 + 1;
    cluster.signal(standby, libc::SIGHUP);
    cluster.signal(active, libc::SIGHUP);
    wait_feature(&cluster, "cam").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cluster.log(standby).contains("this node is not active") {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not say it is not the one that reads\n{}",
            cluster.log(standby)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    std::fs::write(
        licenses.join("extra.lic"),
        common::signed_license(&cluster.key, &[("sim", 2)]),
    )
    .unwrap();
    std::fs::write(licenses.join("zbroken.lic"), "SERVER LICSRV ANY 27000\n").unwrap();
    let servers = cluster.addresses.join(",");
    let (code, out, err) = common::process::raftlm(
        &["license", "reread", "--server", &servers],
        cluster.dir.path(),
    );
    assert_eq!(code, 1, "one file is refused\n{out}{err}");
    assert!(
        out.contains("acme.lic: unchanged since it was imported"),
        "{out}"
    );
    assert!(
        out.contains("more.lic: unchanged since it was imported"),
        "{out}"
    );
    assert!(out.contains("extra.lic: imported 1 lines"), "{out}");
    assert!(out.contains("zbroken.lic: refused: "), "{out}");
    assert!(err.contains("some license files were refused"), "{err}");
    wait_feature(&cluster, "sim").await;
}
