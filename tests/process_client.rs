//! The `raftlm checkout` command as a real client process against a real
//! three-process cluster: caching mode through a full outage, and seats freed
//! when a client dies without checking in.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::{ProcessCluster, status};

/// A `raftlm checkout` child whose stdout lines arrive on a channel; killed on drop.
struct CheckoutProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl CheckoutProcess {
    fn start(server: &str, feature: &str, count: u32) -> CheckoutProcess {
        let mut child = common::process::raftlm_command()
            .args([
                "checkout",
                feature,
                "--count",
                &count.to_string(),
                "--hold",
                "forever",
                "--server",
                server,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        CheckoutProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `text`; returns it.
    fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {text:?} within {limit:?}; output so far: {:#?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for CheckoutProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The grant token printed by `raftlm checkout` ("… grant 1.4.0, term …").
fn token_of(line: &str) -> String {
    line.split("grant ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string()
}

fn token_string(token: &raftlm::proto::v1::GrantToken) -> String {
    format!("{}.{}.{}", token.term, token.index, token.slot)
}

// With every node killed the client enters caching mode and keeps its grant; when the
// nodes restart it leaves caching mode and the cluster still holds the same grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_mode_through_a_full_outage() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.tune_all(|config| config.timing.session_ttl_ms = 3000);
    cluster.start_all();
    cluster.wait_licensed().await;
    let mut client = CheckoutProcess::start(&cluster.access_point, "cad", 2);
    let granted = client.wait_for("checked out 2 seats", Duration::from_secs(15));
    let token = token_of(&granted);

    for id in 1..=3 {
        cluster.kill(id);
    }
    client.wait_for("caching mode", Duration::from_secs(30));
    cluster.start_all();
    client.wait_for("left caching mode", Duration::from_secs(40));
    let reply = status(&cluster.access_point)
        .await
        .expect("status after restart");
    let held: Vec<String> = reply
        .grants
        .iter()
        .filter_map(|g| g.token.as_ref())
        .map(token_string)
        .collect();
    assert_eq!(
        held,
        vec![token.clone()],
        "the cluster should hold exactly the client's grant"
    );
    assert_eq!(reply.features[0].in_use, 2);
}

// A client process killed without checking in loses its seats after the session TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_loses_its_seats_after_the_ttl() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    cluster.tune_all(|config| config.timing.session_ttl_ms = 3000);
    cluster.start_all();
    cluster.wait_licensed().await;
    let mut client = CheckoutProcess::start(&cluster.access_point, "cad", 3);
    client.wait_for("checked out 3 seats", Duration::from_secs(15));
    assert_eq!(
        status(&cluster.access_point).await.unwrap().features[0].in_use,
        3
    );
    let _ = client.child.kill();
    let _ = client.child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if status(&cluster.access_point)
            .await
            .is_some_and(|s| s.features[0].in_use == 0 && s.grants.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seats of the killed client were not freed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// A seat count outside 1..=CHECKOUT_SEATS_MAX is a usage error (exit 2),
// refused before anything is sent.
#[test]
fn a_count_over_the_limit_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for count in ["0", "1000001", "4294967296"] {
        let (code, _out, err) =
            common::process::raftlm(&["checkout", "cad", "--count", count], dir.path());
        assert_eq!(code, 2, "--count {count}: {err}");
        assert!(
            err.contains("1..=1000000") || err.contains("--count"),
            "{err}"
        );
    }
}
