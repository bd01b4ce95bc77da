//! Record formats and moved addresses with real processes.
//!
//! A node capped at the previous record format (the test setting
//! `RAFTLM_FORMATS_MAX`, which makes it say it reads format 6 only and
//! refuse newer messages on the peer plane, as the previous release does)
//! holds the cluster's write format at 6, and a command kind of format 7
//! (`set-address`) is refused naming it. Restarted without the cap, the
//! format rises to 7 and the command succeeds: a member moves to another
//! loopback address under its own id, replicates there although the other
//! nodes' configs still name its old address, and a client that knows only
//! another node follows the hint to its new address.

mod common;

use std::time::Duration;

use common::process::{
    PATIENCE, ProcessCluster, free_port, raftlm_at as command, session, status, status_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_the_previous_format_holds_the_cluster_back_until_upgraded() {
    let mut cluster = ProcessCluster::new(&[("cad", 10)]);
    cluster
        .processes
        .set_env(2, raftlm::node::FORMATS_MAX_ENV, Some("6".as_ref()));
    cluster.start_all();
    cluster.wait_licensed().await;
    let all = cluster.addresses.clone();
    let holder = session(&all, "ada");
    let grant = holder.checkout("cad", 2).await.unwrap();

    // The active node has heard node 3 say it reads format 6 only: the
    // cluster keeps writing format 6, and a format-7 command is refused
    // naming node 3, without touching the log.
    let held = status_until(&cluster, "node 3 says it reads format 6", |s| {
        s.nodes
            .iter()
            .any(|n| n.id == 3 && n.reads_formats_max == 6)
    })
    .await;
    assert_eq!(held.write_format, 6, "{held:?}");
    let moved_peer = format!("127.0.0.1:{}", free_port());
    let moved_client = format!("127.0.0.1:{}", free_port());
    let (code, out) = command(
        &cluster,
        &all,
        &["cluster", "set-address", "2", &moved_peer, &moved_client],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("set-address needs record format 7, but the cluster writes format 6")
            && out.contains("node 3 (raftlm ")
            && out.contains("reads format 6)"),
        "{out}"
    );
    let (code, out) = command(&cluster, &all, &["cluster", "members"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("write format 6"), "{out}");

    // Node 3 restarts without the cap: the format rises.
    cluster.kill(3);
    cluster
        .processes
        .set_env(2, raftlm::node::FORMATS_MAX_ENV, None);
    cluster.start(3);
    let raised = status_until(&cluster, "the cluster writes format 7", |s| {
        s.write_format == 7
    })
    .await;
    assert!(
        raised
            .admin_actions
            .iter()
            .any(|a| a.action.starts_with("record formats:")
                && a.result.contains("the cluster writes format 7 (was 6)")),
        "{:?}",
        raised.admin_actions
    );

    // A follower moves to another address under its own id.
    let (active, _) = cluster.wait_active(PATIENCE).await;
    let mover = (1..=3).find(|&id| id != active).unwrap();
    let other = (1..=3).find(|&id| id != active && id != mover).unwrap();
    cluster.kill(mover);
    let (code, out) = command(
        &cluster,
        &all,
        &[
            "cluster",
            "set-address",
            &mover.to_string(),
            &moved_peer,
            &moved_client,
        ],
    );
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert!(out.contains(&format!("node {mover} moved")), "{out}");
    assert!(
        out.contains(&format!("{moved_client} (peer {moved_peer})")),
        "{out}"
    );
    // Only the mover's own config changes; the others keep the old address.
    cluster.tune(mover, |config| {
        let own = config
            .nodes
            .iter_mut()
            .find(|n| n.id == mover as u64)
            .unwrap();
        own.address = moved_client.clone();
        own.peer_address = moved_peer.clone();
    });
    cluster.addresses[mover - 1] = moved_client.clone();
    cluster.start(mover);
    let now = cluster.addresses.clone();
    let moved = status_until(&cluster, "status lists the new address", |s| {
        s.nodes
            .iter()
            .any(|n| n.id == mover as u64 && n.address == moved_client && n.role == "standby")
    })
    .await;
    assert_eq!(moved.write_format, 7);

    // The mover becomes the active node; a client that knows only another
    // node follows that node's hint to the new address.
    for _ in 0..6 {
        let (active, _) = cluster.wait_active(PATIENCE).await;
        if active == mover {
            break;
        }
        let (code, out) = command(&cluster, &now, &["down"]);
        assert_eq!(code, 0, "{out}");
        cluster
            .processes
            .reap(active - 1, Duration::from_secs(10))
            .expect("the stopped node exits");
        cluster.start(active);
    }
    let (active, _) = cluster.wait_active(PATIENCE).await;
    assert_eq!(active, mover, "the moved node never became active");
    let guided = session(std::slice::from_ref(&cluster.addresses[other - 1]), "ada");
    let second = guided.checkout("cad", 1).await.unwrap();
    guided.checkin(&second).await.unwrap();
    holder.checkin(&grant).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftlm_remove_frees_a_seat_held_by_raftlm_checkout_which_says_who_removed_it() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut cluster = ProcessCluster::new(&[("cad", 1)]);
    // Heartbeats every second or so: the holder hears of the removal soon.
    cluster.tune_all(|config| config.timing.session_ttl_ms = 3_000);
    cluster.start_all();
    cluster.wait_licensed().await;
    status_until(&cluster, "the cluster writes format 7", |s| {
        s.write_format == 7
    })
    .await;
    let server = cluster.access_point.clone();
    let mut holder = common::process::raftlm_command()
        .args(["checkout", "cad", "--hold", "forever", "--server", &server])
        .current_dir(cluster.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    let pipe = holder.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let held = status_until(&cluster, "the seat is held", |s| s.grants.len() == 1).await;
    let grant = &held.grants[0];
    let handle = grant.session_handle.to_string();

    // Without an administrator certificate: refused.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_raftlm"))
        .args(["remove", "--session", &handle, "--server", &server])
        .env("RAFTLM_CA", common::tls().ca())
        .env("RAFTLM_TLS_NAME", common::CLUSTER)
        .env_remove("RAFTLM_CERT")
        .env_remove("RAFTLM_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{err}");
    assert!(err.contains("administrator certificate"), "{err}");
    // A request that matches nothing is refused without touching the log.
    let before = status(&server).await.unwrap().applied_index;
    let (code, out) = command(
        &cluster,
        std::slice::from_ref(&server),
        &[
            "remove",
            "--feature",
            "cad",
            "--user",
            "nobody",
            "--host",
            "nowhere",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no grant matches"), "{out}");
    assert_eq!(status(&server).await.unwrap().applied_index, before);

    let (code, out) = command(
        &cluster,
        std::slice::from_ref(&server),
        &["remove", "--session", &handle],
    );
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert!(
        out.contains(&format!(
            "seat(s) of acme \"cad\" held by {} on {}",
            grant.user, grant.host
        )),
        "{out}"
    );
    let freed = status_until(&cluster, "the seat is free", |s| s.grants.is_empty()).await;
    assert!(
        freed
            .admin_actions
            .iter()
            .any(|a| a.action == format!("remove session {handle}")
                && a.result.starts_with("removed 1:")),
        "{:?}",
        freed.admin_actions
    );
    let told = loop {
        let line = said
            .recv_timeout(PATIENCE)
            .expect("raftlm checkout never said the grant was removed");
        if line.contains("was removed by") {
            break line;
        }
    };
    assert!(told.contains("it is not checked out again"), "{told}");
    // It does not take the seat back by itself.
    let other = session(std::slice::from_ref(&server), "ada");
    let taken = other.checkout("cad", 1).await.unwrap();
    other.checkin(&taken).await.unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
}
