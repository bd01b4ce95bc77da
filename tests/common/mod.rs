//! Shared helpers for cluster tests: vendor keys, signed licenses, node configs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use raftlm::config::{Config, NodeAddress};
use raftlm::license::signature::{self, VendorSigningKey};

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

/// A node config for node `id` of `addresses` (ids 1..), data under `dir/node{id}`.
pub fn node_config(dir: &Path, id: u64, addresses: &[String], vendor_pub: &Path) -> Config {
    let nodes = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| NodeAddress {
            id: i as u64 + 1,
            address: address.clone(),
        })
        .collect();
    let mut config: Config = Config {
        node_id: id,
        cluster_name: CLUSTER.to_string(),
        data_dir: dir.join(format!("node{id}")),
        listen: None,
        nodes,
        vendor_keys: vec![vendor_pub.to_path_buf()],
        license_dir: None,
        access_point: Default::default(),
        timing: Default::default(),
        batching: Default::default(),
        snapshot: Default::default(),
    };
    config.access_point.mode = raftlm::config::AccessPointMode::None;
    config.validate().unwrap();
    config
}

/// A check-out request as a client sends it (user "ada" on host "ws1").
pub fn checkout_request(
    session: u64,
    seq: u64,
    feature: &str,
    count: u32,
) -> raftlm::proto::v1::CheckoutRequest {
    raftlm::proto::v1::CheckoutRequest {
        request: Some(raftlm::proto::v1::RequestId { session, seq }),
        feature: feature.into(),
        count,
        user: "ada".into(),
        host: "ws1".into(),
    }
}

/// Three listeners on `127.0.0.1:0` and their addresses, for an in-process cluster.
pub async fn bind_three() -> (Vec<tokio::net::TcpListener>, Vec<String>) {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    (listeners, addresses)
}

pub mod process;
