//! What the harness asks every node on its own address (`NodeInfo`): its
//! live state digest, and its most recent log entries with the state digests
//! it kept, for the checker's `one-entry-per-log-id` and
//! `states-agree-at-each-index`. The run asks at its end, the nemesis after
//! every power cut.

use std::time::Duration;

use crate::checker;
use crate::cluster::Cluster;

/// One NodeInfo with the state digest, with the run's client TLS.
pub async fn node_info(
    cluster: &Cluster,
    address: &str,
) -> anyhow::Result<raftlm::proto::v1::NodeInfoReply> {
    node_info_with(
        cluster,
        address,
        raftlm::proto::v1::NodeInfoRequest {
            with_state_digest: true,
            ..Default::default()
        },
    )
    .await
}

/// Attempts per node when asking for its log and digests.
const LOG_ASKS: u32 = 3;

/// Asks every node (on its own address) for its most recent log entries
/// (log ids and hashes, as many as a node lists) and the state digests it
/// kept at recent applied indexes, for `one-entry-per-log-id` and
/// `states-agree-at-each-index`. `when` names the moment in the report.
pub async fn log_views(cluster: &Cluster, when: &str) -> Vec<checker::LogView> {
    let mut views = Vec::new();
    for i in 0..cluster.len() {
        let address = cluster.spec.real[i].to_string();
        let mut view = checker::LogView {
            node: i + 1,
            when: when.to_string(),
            ..checker::LogView::default()
        };
        for attempt in 1..=LOG_ASKS {
            let request = raftlm::proto::v1::NodeInfoRequest {
                log_hashes: raftlm::raft::log_store::ENTRY_HASHES_MAX as u32,
                with_state_digests: true,
                ..Default::default()
            };
            match node_info_with(cluster, &address, request).await {
                Ok(info) => {
                    view.error = None;
                    view.entries = info
                        .log_hashes
                        .into_iter()
                        .map(|e| checker::EntrySeen {
                            term: e.term,
                            leader: e.leader,
                            index: e.index,
                            hash: e.hash,
                        })
                        .collect();
                    view.digests = info
                        .state_digests
                        .into_iter()
                        .map(|d| (d.index, d.digest))
                        .collect();
                    break;
                }
                Err(error) => {
                    view.error = Some(format!("NodeInfo at {address}: {error}"));
                    if attempt < LOG_ASKS {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
        }
        views.push(view);
    }
    views
}

/// One NodeInfo, with the run's administrator TLS (listing log entries
/// takes the administrator role).
async fn node_info_with(
    cluster: &Cluster,
    address: &str,
    request: raftlm::proto::v1::NodeInfoRequest,
) -> anyhow::Result<raftlm::proto::v1::NodeInfoReply> {
    let channel = cluster
        .admin_tls
        .endpoint(address, Duration::from_secs(2))
        .map_err(|e| anyhow::anyhow!(e))?
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(
        raftlm::proto::v1::license_client::LicenseClient::new(channel)
            .node_info(request)
            .await?
            .into_inner(),
    )
}
