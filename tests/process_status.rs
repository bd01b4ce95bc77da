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

/// `METHOD PATH` over plain HTTP/1.1: the status code and the body.
async fn http(address: &str, method: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .ok()?
    .ok()?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: raftlm\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The value of the sample `name{labels}` in OpenMetrics `text`.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

// Every node serves /healthz; exactly the active node answers /readyz 200,
// and after it is killed another does once it serves; /metrics parses and
// its seat figures equal status; other paths are 404, other methods 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_surface_shows_health_readiness_and_metrics() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let http_addresses: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", common::process::free_port()))
        .collect();
    for (i, address) in http_addresses.iter().enumerate() {
        let listen = address.parse().unwrap();
        cluster.tune(i + 1, |config| config.http.listen = Some(listen));
    }
    cluster.start_all();
    cluster.wait_licensed().await;
    // Check-outs are counted once the cluster writes format 7.
    common::process::status_until(&cluster, "the cluster writes format 7", |s| {
        s.write_format == 7
    })
    .await;
    let (active, status) = cluster.wait_active(Duration::from_secs(30)).await;
    let session = common::process::session(
        std::slice::from_ref(&cluster.access_point),
        "<script>ada</script>",
    );
    let grant = session.checkout("cad", 2).await.unwrap();

    for address in &http_addresses {
        let (code, body) = http(address, "GET", "/healthz").await.unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let ready = |expected: usize| {
        let addresses = http_addresses.clone();
        async move {
            let mut ready = Vec::new();
            for (i, address) in addresses.iter().enumerate() {
                if let Some((200, _)) = http(address, "GET", "/readyz").await {
                    ready.push(i + 1);
                }
            }
            (ready.len() == 1)
                .then(|| ready[0])
                .filter(|_| expected > 0)
        }
    };
    let answering =
        common::wait_until("one node is ready", Duration::from_secs(30), || ready(1)).await;
    assert_eq!(answering, active);
    let standby = (1..=3).find(|&id| id != active).unwrap();
    let (code, body) = http(&http_addresses[standby - 1], "GET", "/readyz")
        .await
        .unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("is not the active node"), "{body}");

    let (code, metrics) = http(&http_addresses[active - 1], "GET", "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    let cad = status.features.iter().find(|f| f.feature == "cad").unwrap();
    let labels = r#"{vendor="acme",feature="cad"}"#;
    assert_eq!(
        sample(&metrics, &format!("raftlm_seats_licensed{labels}")),
        Some(f64::from(cad.licensed)),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("raftlm_seats_in_use{labels}")),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("raftlm_seats_free{labels}")),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "raftlm_active"), Some(1.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "raftlm_write_format"),
        Some(7.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("ada") && !metrics.contains("ws1"),
        "{metrics}"
    );
    assert_eq!(
        metrics.matches("raftlm_member_lag{").count(),
        3,
        "each member's lag (the active node's own too), with its role: {metrics}"
    );
    assert!(metrics.contains(r#"role="voter""#), "{metrics}");
    assert_eq!(
        sample(&metrics, &format!("raftlm_checkouts_granted_total{labels}")),
        Some(1.0),
        "{metrics}"
    );
    let (_, standby_metrics) = http(&http_addresses[standby - 1], "GET", "/metrics")
        .await
        .unwrap();
    assert_eq!(
        sample(&standby_metrics, "raftlm_active"),
        Some(0.0),
        "{standby_metrics}"
    );

    let (code, _) = http(&http_addresses[0], "GET", "/nope").await.unwrap();
    assert_eq!(code, 404);
    let (code, _) = http(&http_addresses[0], "POST", "/metrics").await.unwrap();
    assert_eq!(code, 405);
    let (code, body) = http(&http_addresses[0], "HEAD", "/healthz").await.unwrap();
    assert_eq!((code, body.as_str()), (200, ""));

    // The active node dies: another answers /readyz once it serves.
    cluster.kill(active);
    let survivors: Vec<String> = (1..=3)
        .filter(|&id| id != active)
        .map(|id| http_addresses[id - 1].clone())
        .collect();
    let next = common::wait_until("another node is ready", Duration::from_secs(30), || {
        let survivors = survivors.clone();
        async move {
            for address in &survivors {
                if let Some((200, _)) = http(address, "GET", "/readyz").await {
                    return Some(address.clone());
                }
            }
            None
        }
    })
    .await;
    assert_ne!(next, http_addresses[active - 1]);
    drop(grant);
}

/// Runs the binary through a link named `name` with `args`: exit code,
/// stdout and stderr.
fn linked(cluster: &ProcessCluster, name: &str, args: &[&str]) -> (i32, String, String) {
    let link = cluster.dir.path().join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_raftlm"), &link).unwrap();
    }
    let mut command = std::process::Command::new(&link);
    for (key, value) in common::process::raftlm_command().get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let output = command
        .args(args)
        .current_dir(cluster.dir.path())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// Through a link named lmutil, `lmutil lmstat -c … -a` lists every member
// by its [[nodes]] name, the active one as MASTER, and each grant with a
// handle that `lmutil lmremove -h` takes back; a link named lmstat is
// `lmutil lmstat`; an unknown option prints lmutil's usage (exit 2), and no
// server answering is lmutil's -15 (exit 241).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmutil_through_a_link_reads_and_removes_as_flexnets_does() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.tune_all(|config| {
        for node in &mut config.nodes {
            node.name = Some(format!("lic{}", node.id));
        }
    });
    cluster.start_all();
    cluster.wait_licensed().await;
    let (active, _) = cluster.wait_active(Duration::from_secs(30)).await;
    let servers: Vec<String> = cluster
        .addresses
        .iter()
        .map(|a| {
            let (host, port) = a.rsplit_once(':').unwrap();
            format!("{port}@{host}")
        })
        .collect();
    let servers = servers.join(",");
    let session = common::process::session(std::slice::from_ref(&cluster.access_point), "ada");
    let _grant = session.checkout("cad", 2).await.unwrap();
    // The write format is 7 (raftlm remove needs it) once the cluster settled.
    common::wait_until(
        "the cluster writes format 7",
        Duration::from_secs(30),
        || async {
            common::process::status(&cluster.access_point)
                .await
                .filter(|s| s.write_format == 7)
        },
    )
    .await;

    let (code, out, err) = linked(&cluster, "lmutil", &["lmstat", "-c", &servers, "-a"]);
    assert_eq!(code, 0, "{out}{err}");
    let ports: Vec<&str> = cluster
        .addresses
        .iter()
        .map(|a| a.rsplit_once(':').unwrap().1)
        .collect();
    assert!(
        out.contains(&format!(
            "License server status: {}@lic1,{}@lic2,{}@lic3\n",
            ports[0], ports[1], ports[2]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "lic{active}: license server UP (MASTER) v{}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    assert!(out.contains("  acme: UP v"), "{out}");
    assert!(
        out.contains("Users of cad:  (Total of 5 licenses issued;  Total of 2 licenses in use)"),
        "{out}"
    );
    let held = out
        .lines()
        .find(|l| l.starts_with("    ada ws1 /dev/tty (v"))
        .unwrap_or_else(|| panic!("no grant line:\n{out}"));
    assert!(held.ends_with(", 2 licenses"), "{held}");
    let handle = held
        .split(&format!("lic{active}/{} ", ports[active - 1]))
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no handle in {held}"))
        .to_string();
    let (code, out, err) = linked(&cluster, "lmstat", &["-c", &servers, "-f", "cad"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Users of cad:"), "{out}");

    let (code, out, err) = linked(
        &cluster,
        "lmutil",
        &[
            "lmremove",
            "-c",
            &servers,
            "-h",
            "cad",
            &format!("lic{active}"),
            ports[active - 1],
            &handle,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed grant"), "{out}");
    let (_, out, _) = linked(&cluster, "lmutil", &["lmstat", "-c", &servers, "-a"]);
    assert!(out.contains("Total of 0 licenses in use"), "{out}");

    let (code, _, err) = linked(&cluster, "lmutil", &["lmstat", "-x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("usage: lmutil lmstat"), "{err}");
    let nobody = format!("{}@127.0.0.1", common::process::free_port());
    let (code, _, err) = linked(&cluster, "lmutil", &["lmstat", "-c", &nobody, "-a"]);
    assert_eq!(code, 241, "{err}");
    assert!(
        err.contains("Cannot connect to license server system"),
        "{err}"
    );
}
