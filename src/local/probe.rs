//! Asking one node of a local cluster for its status, with deadlines, for
//! `raftlm demo` and `raftlm bench`, the tests and the chaos harness.

use std::time::Duration;

use crate::proto::v1 as pb;
use crate::proto::v1::license_client::LicenseClient;
use crate::tls::client::ClientTls;

/// Status from `address`, if it answers within a second.
pub async fn status_of(address: &str, tls: &ClientTls) -> Option<pb::StatusReply> {
    status_within(
        address,
        tls,
        Duration::from_millis(300),
        Duration::from_secs(1),
    )
    .await
}

/// Status from `address`: `None` if it cannot be connected within `connect`
/// or does not answer within `answer` after that.
pub async fn status_within(
    address: &str,
    tls: &ClientTls,
    connect: Duration,
    answer: Duration,
) -> Option<pb::StatusReply> {
    let channel = tls
        .endpoint(address, connect)
        .ok()?
        .timeout(answer)
        .connect()
        .await
        .ok()?;
    LicenseClient::new(channel)
        .status(pb::StatusRequest::default())
        .await
        .ok()
        .map(|r| r.into_inner())
}
