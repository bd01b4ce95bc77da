//! Shared helpers for cluster tests: vendor keys, signed licenses,
//! certificates, node configs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use raftlm::config::{Config, Tls};
use raftlm::license::secret::SessionSecret;
use raftlm::license::signature::{self, VendorSigningKey};
use raftlm::local::files::{self, Plan};
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
/// nodes 1 to 5 and an administrator, made once. Test clients verify the
/// cluster name (every node certificate carries it), so any address works.
pub fn tls() -> &'static ClusterTls {
    static TLS: OnceLock<ClusterTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("raftlm-test-tls-")
            .tempdir()
            .unwrap()
            .keep();
        ClusterTls::create(&dir, CLUSTER, &[1, 2, 3, 4, 5], &["127.0.0.1".to_string()]).unwrap()
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
    tls().node_config(id)
}

/// A node config for node `id` of `addresses`/`peer_addresses` (ids 1..),
/// data under `dir/node{id}`, TLS on with [`tls`], no access point, the
/// [`in_process_timing`].
pub fn node_config(
    dir: &Path,
    id: u64,
    addresses: &[String],
    peer_addresses: &[String],
    vendor_pub: &Path,
) -> Config {
    let mut plan = Plan::new(dir, files::nodes_at(addresses, peer_addresses));
    plan.cluster = CLUSTER.to_string();
    let mut config = plan.config(id as usize - 1, vendor_pub, Some(tls()));
    config.data_dir = dir.join(&config.data_dir);
    config.timing = in_process_timing();
    config.validate().unwrap();
    config
}

/// [`node_config`] for every node of `addresses`, each changed by `tune`.
pub fn node_configs(
    dir: &Path,
    addresses: &[String],
    peer_addresses: &[String],
    vendor_pub: &Path,
    tune: impl Fn(&mut Config),
) -> Vec<Config> {
    (1..=addresses.len() as u64)
        .map(|id| {
            let mut config = node_config(dir, id, addresses, peer_addresses, vendor_pub);
            tune(&mut config);
            config
        })
        .collect()
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

/// Polls `poll` until it returns `Some` and returns that value
/// ([`raftlm::local::wait::wait_until`]); fails the test naming `what` if
/// `deadline` passes first. Keep deadlines generous (shared machines).
pub async fn wait_until<T, F, Fut>(what: &str, deadline: std::time::Duration, poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match raftlm::local::wait::wait_until(what, deadline, poll).await {
        Ok(value) => value,
        Err(timeout) => panic!("{timeout}"),
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

pub mod process;
