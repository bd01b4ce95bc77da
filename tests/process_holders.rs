//! Never two holders of the access point, at process level: in command mode
//! each node's `up` and `down` commands append to one record, so the record
//! says who held the address when. The active node is killed (a dead node
//! holds nothing: the test records its release itself); when the node that
//! takes over runs `up`, the third node is stopped (SIGSTOP) so that its
//! `Activate` cannot commit and its lease lapses — the leader is partitioned
//! between `up` and the commit. It must take the address down again, and at
//! no moment may two nodes hold it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::ProcessCluster;

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The record: `(time ns, node, up?)`, in time order.
fn record(path: &Path) -> Vec<(u128, usize, bool)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut events: Vec<(u128, usize, bool)> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let up = match words.next()? {
                "up" => true,
                "down" => false,
                _ => return None,
            };
            let node = words.next()?.parse().ok()?;
            let at = words.next()?.parse().ok()?;
            Some((at, node, up))
        })
        .collect();
    events.sort();
    events
}

/// Who holds the address after each event; panics at the first moment two do.
fn check_one_holder(events: &[(u128, usize, bool)], logs: &str) -> Vec<usize> {
    let mut holders: Vec<usize> = Vec::new();
    for &(at, node, up) in events {
        if up {
            assert!(
                holders.iter().all(|&h| h == node),
                "node {node} raised the address at {at} while {holders:?} held it: {events:?}\n{logs}"
            );
            if !holders.contains(&node) {
                holders.push(node);
            }
        } else {
            holders.retain(|&h| h != node);
        }
    }
    holders
}

async fn wait_for(
    limit: Duration,
    what: &str,
    logs: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_between_up_and_activation_takes_the_address_down() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]);
    let holders = cluster.dir.path().join("holders.log");
    for id in 1..=3 {
        // `up` records, then takes 300 ms, so the test can stop a peer
        // before the Activate entry commits.
        let script = |what: &str, pause: &str| -> Vec<String> {
            vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo {what} {id} $(date +%s%N) >> {}{pause}",
                    holders.display()
                ),
            ]
        };
        cluster.tune(id, |config| {
            config.access_point.mode = raftlm::config::AccessPointMode::Command;
            config.access_point.up = script("up", "; sleep 0.3");
            config.access_point.down = script("down", "");
        });
    }
    cluster.start_all();
    cluster.wait_access_point(Duration::from_secs(30)).await;
    let first = {
        let events = record(&holders);
        let held = check_one_holder(&events, &cluster.logs());
        assert_eq!(held.len(), 1, "{events:?}");
        held[0]
    };

    // Kill the active node; a dead node holds nothing.
    cluster.kill(first);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&holders)
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "down {first} {}", now_ns())
        })
        .unwrap();
    let seen = record(&holders).len();
    let mut successor = 0;
    wait_for(
        Duration::from_secs(20),
        "no successor ran up",
        || cluster.logs(),
        || {
            if let Some(&(_, node, true)) = record(&holders)[seen..].iter().find(|e| e.2) {
                successor = node;
                true
            } else {
                false
            }
        },
    )
    .await;
    // Cut the successor off from its only peer while its up command runs.
    let third = (1..=3).find(|&id| id != first && id != successor).unwrap();
    cluster.signal(third, libc::SIGSTOP);
    wait_for(
        Duration::from_secs(10),
        "the successor never took the address down",
        || cluster.logs(),
        || {
            record(&holders)[seen..]
                .iter()
                .any(|&(_, node, up)| node == successor && !up)
        },
    )
    .await;
    let log = cluster.log(successor);
    assert!(
        log.contains("lapsed before activation")
            || log.contains("not committed")
            || log.contains("came too late"),
        "{log}"
    );

    // Heal: the third node resumes, the first comes back; one node holds the address.
    cluster.signal(third, libc::SIGCONT);
    cluster.start(first);
    cluster.wait_access_point(Duration::from_secs(30)).await;
    // Kept: a second holder is an absence to watch for over a window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = record(&holders);
    let held = check_one_holder(&events, &cluster.logs());
    assert_eq!(held.len(), 1, "{events:?}");
}
