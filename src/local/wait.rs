//! Waiting for a local cluster: [`wait_until`] polls any condition until a
//! deadline, [`wait_active`] finds the node that answers Status (the active
//! node) in an address list, [`wait_licensed`] waits until an address
//! serves licensed features. Each returns [`Timeout`], naming what never
//! came, when the deadline passes; tests turn it into a failure, the demo
//! into a message.

use std::time::Duration;

use crate::local::probe::status_of;
use crate::proto::v1 as pb;
use crate::tls::client::ClientTls;

/// How often a wait polls its condition: often enough that a wait ends soon
/// after the condition holds, rarely enough not to load the nodes.
pub const POLL: Duration = Duration::from_millis(50);

/// A condition that did not hold within its deadline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timed out after {deadline:?} waiting until {what}")]
pub struct Timeout {
    /// The condition.
    pub what: String,
    /// How long it was waited for.
    pub deadline: Duration,
}

/// Polls `poll` every [`POLL`] until it returns `Some`, and returns that
/// value; [`Timeout`] naming `what` if `deadline` passes first. `poll`
/// returns a future, so it can probe a node (`|| async { status(&address).await }`)
/// as well as test a plain condition (`|| async { done().then_some(()) }`).
/// Prefer this to a fixed sleep: it waits for the condition, no longer, and
/// says which one never came.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut poll: F,
) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = poll().await {
            return Ok(value);
        }
        if started.elapsed() >= deadline {
            return Err(Timeout {
                what: what.to_string(),
                deadline,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The index in `addresses` of the node that answers Status (the active
/// node) and its reply, waiting up to `deadline`; `None` entries (nodes
/// that do not run) are skipped.
pub async fn wait_active(
    addresses: &[Option<String>],
    tls: &ClientTls,
    deadline: Duration,
) -> Result<(usize, pb::StatusReply), Timeout> {
    wait_until("a node answers Status", deadline, || async {
        for (i, address) in addresses.iter().enumerate() {
            if let Some(address) = address
                && let Some(reply) = status_of(address, tls).await
            {
                return Some((i, reply));
            }
        }
        None
    })
    .await
}

/// Waits up to `deadline` until `address` answers Status with a licensed
/// feature (the license directory has been imported), and returns the reply.
pub async fn wait_licensed(
    address: &str,
    tls: &ClientTls,
    deadline: Duration,
) -> Result<pb::StatusReply, Timeout> {
    wait_until(
        &format!("{address} serves a licensed feature"),
        deadline,
        || async {
            status_of(address, tls)
                .await
                .filter(|reply| !reply.features.is_empty())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A condition that holds ends the wait with its value; one that never
    /// does ends it with a timeout naming it.
    #[tokio::test]
    async fn wait_until_returns_the_value_or_names_the_condition() {
        let mut polls = 0;
        let value = wait_until("the third poll", Duration::from_secs(1), || {
            polls += 1;
            let done = polls == 3;
            async move { done.then_some(polls) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let timeout = wait_until("never", Duration::from_millis(100), || async { None::<()> })
            .await
            .unwrap_err();
        assert_eq!(
            timeout.to_string(),
            "timed out after 100ms waiting until never"
        );
    }
}
