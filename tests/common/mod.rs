//! Shared helpers for cluster tests: vendor keys, signed licenses,
//! certificates, node configs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use raftlm::config::{Config, NodeAddress, Tls};
use raftlm::license::secret::SessionSecret;
use raftlm::license::signature::{self, VendorSigningKey};
use raftlm::local::tls::ClusterTls;
use raftlm::tls::client::ClientTls;

/// The cluster name test licenses are issued for.
pub const CLUSTER: &str = "LICSRV";

/// A vendor key pair written under `dir` as `acme.key` / `acme.pub`.
pub fn vendor_key(dir: &Path) -> (VendorSigningKey, PathBuf) {
    let key = VendorSigningKey::generate(Some("acme"));
    let public = dir.join("acme.pub");
    std::fs::write(&public, key.public_key().to_file_text()).unwrap();
    std::fs::write(dir.join("acme.key"), key.to_file_text()).unwrap();
    (key, public)
}

/// A signed license text with the given features and seat counts.
pub fn signed_license(key: &VendorSigningKey, features: &[(&str, u32)]) -> String {
    let mut text = format!("SERVER {CLUSTER} ANY 27000\nVENDOR acme\n");
    for (feature, seats) in features {
        text.push_str(&format!("FEATURE {feature} acme 2.0 permanent {seats}\n"));
    }
    signature::sign_text("test.lic", &text, key).unwrap()
}

/// The certificates every test cluster of this test binary uses: one CA,
/// nodes 1 to 3 and an administrator, made once. Test clients verify the
/// cluster name (every node certificate carries it), so any address works.
pub fn tls() -> &'static ClusterTls {
    static TLS: OnceLock<ClusterTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("raftlm-test-tls-")
            .tempdir()
            .unwrap()
            .keep();
        ClusterTls::create(&dir, CLUSTER, &[1, 2, 3], &["127.0.0.1".to_string()]).unwrap()
    })
}

/// How a test application dials a test cluster: TLS, trusting [`tls`]'s CA.
pub fn client_tls() -> ClientTls {
    tls().client().unwrap().with_server_name(CLUSTER)
}

/// How a test administrator dials a test cluster.
pub fn admin_tls() -> ClientTls {
    tls().administrator().unwrap().with_server_name(CLUSTER)
}

/// The `[tls]` section of node `id`'s config, as a config value.
pub fn node_tls(id: u64) -> Tls {
    let (cert, key) = tls().node(id);
    Tls {
        plaintext: false,
        ca: Some(tls().ca()),
        cert: Some(cert),
        key: Some(key),
    }
}

/// A node config for node `id` of `addresses`/`peer_addresses` (ids 1..),
/// data under `dir/node{id}`, TLS on with [`tls`].
pub fn node_config(
    dir: &Path,
    id: u64,
    addresses: &[String],
    peer_addresses: &[String],
    vendor_pub: &Path,
) -> Config {
    let nodes = addresses
        .iter()
        .zip(peer_addresses)
        .enumerate()
        .map(|(i, (address, peer))| NodeAddress {
            id: i as u64 + 1,
            address: address.clone(),
            peer_address: peer.clone(),
        })
        .collect();
    let mut config: Config = Config {
        node_id: id,
        cluster_name: CLUSTER.to_string(),
        data_dir: dir.join(format!("node{id}")),
        listen: None,
        peer_listen: None,
        nodes,
        vendor_keys: vec![vendor_pub.to_path_buf()],
        license_dir: None,
        machine_id_file: None,
        access_point: Default::default(),
        timing: in_process_timing(),
        batching: Default::default(),
        snapshot: Default::default(),
        tls: node_tls(id),
        limits: Default::default(),
    };
    config.access_point.mode = raftlm::config::AccessPointMode::None;
    config.validate().unwrap();
    config
}

/// The timing of in-process test clusters: the shipped timing before it was
/// shortened (heartbeat 100 ms, election 400-800 ms, lease 250 ms, margin
/// 100 ms). Such a test runs several three-node clusters in one process on
/// the machine's two cores, where a 50 ms heartbeat loses leases to
/// scheduling; the process and chaos tests run the shipped defaults.
pub fn in_process_timing() -> raftlm::config::Timing {
    raftlm::config::Timing {
        heartbeat_ms: 100,
        election_timeout_min_ms: 400,
        election_timeout_max_ms: 800,
        lease_ms: 250,
        lease_margin_ms: 100,
        ..Default::default()
    }
}

/// The secret of test session `session` (the same for the same number).
pub fn secret(session: u64) -> Vec<u8> {
    SessionSecret::from_seed(session).as_bytes().to_vec()
}

/// The public handle of test session `session`.
pub fn handle(session: u64) -> u64 {
    SessionSecret::from_seed(session).handle().public()
}

/// A wire request id of test session `session`.
pub fn request_id(session: u64, seq: u64) -> raftlm::proto::v1::RequestId {
    raftlm::proto::v1::RequestId {
        session_secret: secret(session),
        seq,
    }
}

/// A check-out request as a client sends it (user "ada" on host "ws1").
pub fn checkout_request(
    session: u64,
    seq: u64,
    feature: &str,
    count: u32,
) -> raftlm::proto::v1::CheckoutRequest {
    raftlm::proto::v1::CheckoutRequest {
        request: Some(request_id(session, seq)),
        vendor: "acme".into(),
        version: String::new(),
        feature: feature.into(),
        count,
        user: "ada".into(),
        host: "ws1".into(),
    }
}

/// Listeners on `127.0.0.1:0` for the client and peer planes of three nodes.
pub struct Bound {
    /// (client, peer) listeners of node `i + 1`.
    pub listeners: Vec<(tokio::net::TcpListener, tokio::net::TcpListener)>,
    /// Client-plane addresses.
    pub addresses: Vec<String>,
    /// Peer-plane addresses.
    pub peer_addresses: Vec<String>,
}

/// Polls `poll` every 50 ms until it returns `Some`, and returns that value;
/// panics naming `what` if `deadline` passes first. `poll` returns a future,
/// so it can probe a node (`|| async { status(&address).await }`) as well as
/// test a plain condition (`|| async { done().then_some(()) }`). Prefer this
/// to a fixed sleep: it waits for the condition the test needs, no longer,
/// and says which one never came. Keep deadlines generous (shared machines).
pub async fn wait_until<T, F, Fut>(what: &str, deadline: std::time::Duration, mut poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = poll().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Binds the client and peer listeners of an in-process cluster of three.
pub async fn bind_three() -> Bound {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push((bind_any().await, bind_any().await));
    }
    let address = |l: &tokio::net::TcpListener| l.local_addr().unwrap().to_string();
    Bound {
        addresses: listeners.iter().map(|(c, _)| address(c)).collect(),
        peer_addresses: listeners.iter().map(|(_, p)| address(p)).collect(),
        listeners,
    }
}

async fn bind_any() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Binds `address` again after a node on it stopped (the old listener may
/// take a moment to close).
pub async fn rebind(address: &str) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot bind {address} again: {error}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Starts a stopped in-process node again on its addresses. An in-process
/// node's last tasks may hold its store for a moment after `shutdown`
/// returns on a loaded machine (a process releases it when it exits), so a
/// store still locked is retried for a while; any other error is returned.
pub async fn start_again(
    config: &raftlm::config::Config,
    address: &str,
    peer_address: &str,
) -> Result<raftlm::node::Node, raftlm::node::NodeError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let client = rebind(address).await;
        let peer = rebind(peer_address).await;
        match raftlm::node::Node::start_with_listeners(config.clone(), client, peer).await {
            Err(raftlm::node::NodeError::Store(raftlm::raft::store::StoreError::Locked {
                ..
            })) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// A license client of a test cluster's node whose connection comes from the
/// source address `from` (any 127.x address is local): per-address limits
/// then count it apart from other clients.
pub async fn license_client_from(
    address: &str,
    from: std::net::IpAddr,
) -> Result<
    raftlm::proto::v1::license_client::LicenseClient<tonic::transport::Channel>,
    tonic::transport::Error,
> {
    let channel = client_tls()
        .endpoint(address, std::time::Duration::from_secs(2))
        .unwrap()
        .local_address(Some(from))
        .connect()
        .await?;
    Ok(raftlm::proto::v1::license_client::LicenseClient::new(
        channel,
    ))
}

/// A license client of a test cluster's node (TLS, trusting the test CA).
pub async fn license_client(
    address: &str,
) -> raftlm::proto::v1::license_client::LicenseClient<tonic::transport::Channel> {
    let channel = client_tls()
        .endpoint(address, std::time::Duration::from_secs(2))
        .unwrap()
        .connect()
        .await
        .unwrap();
    raftlm::proto::v1::license_client::LicenseClient::new(channel)
}

/// An admin client of a test cluster's node, with the administrator certificate.
pub async fn admin_client(
    address: &str,
) -> raftlm::proto::v1::admin_client::AdminClient<tonic::transport::Channel> {
    let channel = admin_tls()
        .endpoint(address, std::time::Duration::from_secs(2))
        .unwrap()
        .connect()
        .await
        .unwrap();
    raftlm::proto::v1::admin_client::AdminClient::new(channel)
}

pub mod netns;
pub mod process;
