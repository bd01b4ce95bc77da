//! The client side every `raftlm bench` mode drives a cluster with:
//! connections, the check-out/check-in workers of the load, and sessions
//! that each take one seat and hold it. `bench.rs` and
//! `bench_membership.rs` share them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::cli::Failure;
use crate::cli::bench_figures::WorkerResult;
use crate::proto::v1 as pb;
use crate::proto::v1::license_client::LicenseClient;
use crate::tls::client::ClientTls;

/// Connections the load's workers share, at most.
pub(crate) const LOAD_CONNECTIONS_MAX: usize = 8;

/// Check-outs sent at once while sessions take their seats ([`hold_grants`]).
const HOLD_WAVE: usize = 512;

/// An open channel to `address`, or why not.
pub(crate) async fn channel(address: &str, tls: &ClientTls) -> Result<Channel, Failure> {
    tls.endpoint(address, Duration::from_secs(1))
        .map_err(|e| Failure::usage(format!("bad server address {address}: {e}")))?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Failure::unreachable(format!("cannot connect to {address}: {e}")))
}

/// `count` channels to `address`.
pub(crate) async fn channels(
    address: &str,
    tls: &ClientTls,
    count: usize,
) -> Result<Vec<Channel>, Failure> {
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        all.push(channel(address, tls).await?);
    }
    Ok(all)
}

/// An RPC error as the reports count it: its code in lower case.
pub(crate) fn error_kind(status: &tonic::Status) -> String {
    format!("{:?}", status.code()).to_lowercase()
}

/// What the load's workers share: when to stop, and what they did so far.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set to stop the workers.
    pub(crate) done: AtomicBool,
    /// Committed operations answered (check-outs and check-ins).
    pub(crate) ops: AtomicU64,
    /// Check-outs granted.
    pub(crate) checkouts: AtomicU64,
}

/// A check-out of one seat of the bench feature.
pub(crate) fn checkout_request(session: &[u8], seq: u64, user: &str) -> pb::CheckoutRequest {
    pb::CheckoutRequest {
        vendor: "acme".into(),
        version: String::new(),
        request: Some(pb::RequestId {
            session_secret: session.to_vec(),
            seq,
        }),
        feature: "bench".into(),
        count: 1,
        user: user.into(),
        host: "bench".into(),
    }
}

/// Starts `sessions` workers over `channels`, each doing check-out/check-in
/// cycles of one seat until `shared.done` is set; each returns its latencies
/// (µs) and errors.
pub(crate) fn spawn_load(
    channels: &[Channel],
    sessions: usize,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<WorkerResult>> {
    (0..sessions)
        .map(|i| {
            let client = LicenseClient::new(channels[i % channels.len()].clone());
            tokio::spawn(worker(client, shared.clone()))
        })
        .collect()
}

async fn worker(mut client: LicenseClient<Channel>, shared: Arc<Shared>) -> WorkerResult {
    let session = crate::license::secret::SessionSecret::generate()
        .as_bytes()
        .to_vec();
    let mut seq = 0u64;
    let mut samples = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while !shared.done.load(Ordering::Relaxed) {
        seq += 1;
        let t = Instant::now();
        let token = match client
            .checkout(checkout_request(&session, seq, "bench"))
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                samples.push(t.elapsed().as_micros() as u64);
                shared.ops.fetch_add(1, Ordering::Relaxed);
                if !reply.granted {
                    *errors
                        .entry(format!("denied: {}", reply.message))
                        .or_default() += 1;
                    continue;
                }
                shared.checkouts.fetch_add(1, Ordering::Relaxed);
                reply.token
            }
            Err(status) => {
                *errors.entry(error_kind(&status)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        seq += 1;
        let t = Instant::now();
        match client
            .checkin(pb::CheckinRequest {
                request: Some(pb::RequestId {
                    session_secret: session.clone(),
                    seq,
                }),
                token,
            })
            .await
        {
            Ok(_) => {
                samples.push(t.elapsed().as_micros() as u64);
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => *errors.entry(error_kind(&status)).or_default() += 1,
        }
    }
    (samples, errors)
}

/// Grants held by [`hold_grants`]: each session's secret and its grant.
pub(crate) type Held = Vec<(Vec<u8>, pb::GrantToken)>;

/// `sessions` new sessions over `channels`, each checking out one seat of
/// the bench feature as `user`, [`HOLD_WAVE`] at a time; the grants and the
/// refusals by kind. Progress goes to stderr.
pub(crate) async fn hold_grants(
    channels: &[Channel],
    sessions: usize,
    user: &str,
) -> (Held, BTreeMap<String, u64>) {
    let mut held: Held = Vec::with_capacity(sessions);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = 0;
    while next < sessions {
        let mut tasks = Vec::new();
        for i in next..(next + HOLD_WAVE).min(sessions) {
            let mut client = LicenseClient::new(channels[i % channels.len()].clone());
            let user = user.to_string();
            tasks.push(tokio::spawn(async move {
                let session = crate::license::secret::SessionSecret::generate()
                    .as_bytes()
                    .to_vec();
                let reply = client.checkout(checkout_request(&session, 1, &user)).await;
                (session, reply)
            }));
        }
        for task in tasks {
            match task.await {
                Ok((session, Ok(reply))) => match reply.into_inner().token {
                    Some(token) => held.push((session, token)),
                    None => *errors.entry("denied".into()).or_default() += 1,
                },
                Ok((_, Err(status))) => *errors.entry(error_kind(&status)).or_default() += 1,
                Err(_) => *errors.entry("task".into()).or_default() += 1,
            }
        }
        next += HOLD_WAVE;
        eprint!("\rbench: {} of {sessions} grants held   ", held.len());
    }
    eprintln!();
    (held, errors)
}
