//! A node whose wall clock jumps a year ahead: it stops serving and steps
//! back, another node takes over, state time does not follow the wrong
//! clock (a dated license stays unexpired), and `status` names the node and
//! its offset. The nodes run a `raftlm` built with the test-only feature
//! fault-injection into a target directory of its own
//! (`common::process::fault_injection_binary`), which this test builds.

mod common;

use std::time::{Duration, Instant};

use common::process::{ProcessCluster, fault_injection_binary, license_client, status};
use raftlm::license::feature::Date;
use raftlm::proto::v1 as pb;

const DAY_MS: i64 = 86_400_000;

fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Checks out one seat of `feature` at `address` as a new session.
async fn checkout(address: &str, session: u64, feature: &str) -> pb::CheckoutReply {
    let mut client = license_client(address).await.expect("connects");
    client
        .checkout(common::checkout_request(session, 1, feature, 1))
        .await
        .expect("checkout answered")
        .into_inner()
}

/// The status of the active node other than `not`, waiting up to `limit`.
async fn active_other_than(
    cluster: &ProcessCluster,
    not: usize,
    limit: Duration,
) -> (usize, pb::StatusReply) {
    let deadline = Instant::now() + limit;
    loop {
        for id in (1..=3).filter(|&id| id != not) {
            if let Some(reply) = status(&cluster.addresses[id - 1]).await
                && reply.active_node == id as u64
            {
                return (id, reply);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node but {not} became active within {limit:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_jumps_a_year_stops_serving_and_state_time_stays() {
    let mut cluster = ProcessCluster::new(&[("cad", 5)]).with_binary(fault_injection_binary());
    // A license valid for 30 more days (true time).
    let expiry = Date::from_unix_ms(real_now_ms() + 30 * DAY_MS as u64);
    let dated = format!(
        "SERVER {} ANY 27000\nVENDOR acme\nFEATURE dated acme 2.0 {expiry} 3\n",
        common::CLUSTER
    );
    let dated = raftlm::license::signature::sign_text("dated.lic", &dated, &cluster.key).unwrap();
    std::fs::write(cluster.dir.path().join("licenses/dated.lic"), dated).unwrap();
    cluster.start_all();
    let (first, _) = cluster.wait_active(Duration::from_secs(20)).await;
    // The license directory is imported just after activation.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = checkout(&cluster.addresses[first - 1], 1, "dated").await;
        if reply.granted {
            break;
        }
        assert!(
            reply.reason == pb::DenyReason::NoSuchFeature as i32 && Instant::now() < deadline,
            "{reply:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The active node's clock jumps 400 days ahead.
    let jump = 400 * DAY_MS;
    cluster.set_clock_offset(first, jump);
    let (second, _) = active_other_than(&cluster, first, Duration::from_secs(20)).await;

    // The new active node names the odd clock and its offset.
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let reply = status(&cluster.addresses[second - 1]).await;
        if let Some(reply) = reply
            && let Some(node) = reply.nodes.iter().find(|n| n.id == first as u64)
            && node.clock_known
        {
            break (reply.clone(), node.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no reading of node {first}'s clock\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (reply, node) = report;
    assert!(node.clock_off, "{node:?}");
    assert!(
        (node.clock_offset_ms - jump).abs() < 60_000,
        "offset {} ms, jumped {jump} ms",
        node.clock_offset_ms
    );
    assert_eq!(reply.clock_skew_max_ms, 120_000);
    let text = raftlm::cli::status::to_text(&reply, &[], 0);
    assert!(
        text.contains("clock: +400d0h0m") || text.contains("clock: +399d23h59m"),
        "{text}"
    );
    assert!(text.contains("OFF"), "{text}");
    assert!(
        cluster
            .log(first)
            .contains("disagrees with a majority of its peers"),
        "{}",
        cluster.log(first)
    );

    // State time did not follow the wrong clock: the dated line still counts
    // and grants, and the last activation is stamped with a sane time.
    let dated = reply
        .features
        .iter()
        .find(|f| f.feature == "dated")
        .expect("dated feature");
    assert_eq!(dated.unexpired, 3, "{dated:?}");
    assert!(
        reply.last_activation_ms < real_now_ms() + 120_000,
        "state time moved to {}",
        reply.last_activation_ms
    );
    let granted = checkout(&cluster.addresses[second - 1], 2, "dated").await;
    assert!(granted.granted, "{granted:?}");

    // The clock comes back: the node is reported in agreement again.
    cluster.set_clock_offset(first, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(reply) = status(&cluster.addresses[second - 1]).await
            && reply
                .nodes
                .iter()
                .any(|n| n.id == first as u64 && n.clock_known && !n.clock_off)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {first}'s clock never agreed again\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
