//! `raftlm status` in an outage, with the real binary against three real
//! processes: with two of three nodes stopped it answers within its timeout,
//! says there is no quorum, and shows each node's own report or how it
//! failed (refused, unreachable, unresolvable), in text and JSON.

mod common;

use std::time::{Duration, Instant};

use common::process::{ProcessCluster, raftlm};

/// Generous: `status` waits 3 s by default, and machines running many tests
/// at once are slow; this only catches a status that waits like before (15 s).
const STATUS_TIME_MAX: Duration = Duration::from_secs(10);

/// Runs `raftlm status ARGS` and times it.
fn timed_status(cluster: &ProcessCluster, args: &[&str]) -> (i32, String, String, Duration) {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    let started = Instant::now();
    let (code, out, err) = raftlm(&all, cluster.dir.path());
    (code, out, err, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_two_of_three_nodes_down_reports_no_quorum_quickly() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.start_all();
    let (active, _) = cluster.wait_active(Duration::from_secs(30)).await;
    let nodes = cluster.addresses.join(",");

    // Healthy: every node answers on its own too.
    let (code, out, err, _) = timed_status(&cluster, &["--server", &nodes]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.matches("        reachable: ").count(), 3, "{out}");
    assert!(out.contains("reachable: active, term "), "{out}");

    // Stop the active node and one other: one node is left, without quorum.
    let survivor = (1..=3).find(|&id| id != active).unwrap();
    for id in (1..=3).filter(|&id| id != survivor) {
        cluster.kill(id);
    }
    for id in (1..=3).filter(|&id| id != survivor) {
        let address = cluster.addresses[id - 1].clone();
        common::wait_until(
            &format!("node {id} ({address}) refuses connections"),
            Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(&address)
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
    }

    let (code, out, err, took) = timed_status(&cluster, &["--server", &nodes]);
    eprintln!("status with 2 of 3 nodes down took {took:?}");
    assert_eq!(code, 3, "exit code 3: no node is active\n{out}\n{err}");
    assert!(took < STATUS_TIME_MAX, "took {took:?}\n{out}\n{err}");
    assert!(
        out.contains("Active node: none: no quorum: 1 of 3 nodes reachable"),
        "{out}"
    );
    assert!(!out.contains("election in progress"), "{out}");
    assert!(
        err.starts_with("raftlm: no quorum: 1 of 3 nodes reachable; "),
        "{err}"
    );
    for id in 1..=3 {
        let row = format!("    node {id}  {}  ", cluster.addresses[id - 1]);
        let at = out
            .find(&row)
            .unwrap_or_else(|| panic!("no row for node {id}\n{out}"));
        let reach = out[at..].lines().nth(1).unwrap_or_default();
        if id == survivor {
            assert!(reach.starts_with("        reachable: "), "{out}");
            assert!(reach.contains(", term "), "{reach}");
            assert!(reach.contains(", applied "), "{reach}");
            assert!(reach.contains(", committed "), "{reach}");
            assert!(reach.contains(", version "), "{reach}");
        } else {
            assert!(reach.starts_with("        refused: "), "{out}");
        }
    }

    // Given only the survivor and a name that does not resolve: the other
    // nodes come from the survivor's configuration, the name is listed apart.
    let survivor_address = &cluster.addresses[survivor - 1];
    let (code, out, err, took) = timed_status(
        &cluster,
        &[
            "--server",
            &format!("{survivor_address},nosuchhost.invalid:27000"),
            "--json",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(took < STATUS_TIME_MAX, "took {took:?}\n{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        json["summary"], "no quorum: 1 of 3 nodes reachable",
        "{json}"
    );
    assert_eq!(json["active_node"], 0, "{json}");
    assert_eq!(json["configured"], 3, "{json}");
    assert_eq!(json["reachable"], 1, "{json}");
    let listed = json["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{json}");
    for node in listed {
        let id = node["id"].as_u64().unwrap() as usize;
        let expected = if id == survivor {
            "reachable"
        } else {
            "refused"
        };
        assert_eq!(node["reachability"], expected, "{json}");
        assert_eq!(node["address"], cluster.addresses[id - 1], "{json}");
    }
    let survivor_json = &listed[survivor - 1];
    assert!(survivor_json["term"].as_u64().unwrap() > 0, "{json}");
    assert!(
        survivor_json["applied_index"].as_u64().unwrap() > 0,
        "{json}"
    );
    assert!(survivor_json["version"].is_string(), "{json}");
    let other = &json["other_addresses"][0];
    assert_eq!(other["id"], serde_json::Value::Null, "{json}");
    assert_eq!(other["address"], "nosuchhost.invalid:27000", "{json}");
    assert_eq!(other["reachability"], "unresolvable", "{json}");
}
