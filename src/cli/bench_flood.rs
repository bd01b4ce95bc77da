//! `raftlm bench --flood N`: N throw-away sessions from one source address,
//! each with one check-out that is denied, and what a new session from
//! another address sees before and after.
//!
//! The bench license has a feature `scarce` with one seat; bench holds it
//! with one session, then `FLOOD_WORKERS` workers on 127.0.0.1 send N
//! check-outs of `scarce`, each from a fresh session secret. Every one goes
//! through the log and is denied (in use). Before and after, a probe on
//! another source address (127.0.0.2) makes `PROBES` new sessions, each
//! checking out one seat of `bench` and checking it in, and times the
//! check-outs. A denial creates no session in the replicated state, so the
//! flood must neither lock the probe out nor grow the active node's memory
//! by more than the bounded list of remembered answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::transport::Channel;

use crate::cli::Failure;
use crate::cli::bench_figures::{Latency, latency};
use crate::proto::v1 as pb;
use crate::proto::v1::license_client::LicenseClient;
use crate::tls::client::ClientTls;

/// Concurrent flooding workers (over 8 connections).
const FLOOD_WORKERS: usize = 64;
/// New sessions the probe times, before and after the flood.
const PROBES: usize = 200;
/// The probe's source address: not the flood's.
const PROBE_SOURCE: &str = "127.0.0.2";

/// What the flood measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct FloodFigures {
    /// Throw-away sessions sent.
    pub(crate) sessions: usize,
    /// Of them, answered "denied".
    pub(crate) denied: u64,
    /// Answered otherwise (granted, errors).
    pub(crate) other: u64,
    /// How long the flood took.
    pub(crate) seconds: f64,
    /// A new session's check-out from another address before the flood (ms).
    pub(crate) probe_before_ms: Latency,
    /// The same after the flood.
    pub(crate) probe_after_ms: Latency,
    /// Probe check-outs not granted, before and after.
    pub(crate) probe_refused: (u64, u64),
    /// The largest node RSS before and after the flood (MiB), when bench
    /// started the cluster.
    pub(crate) rss_mib: Option<(f64, f64)>,
}

fn request(secret: &[u8], seq: u64, feature: &str) -> pb::CheckoutRequest {
    pb::CheckoutRequest {
        vendor: "acme".into(),
        version: String::new(),
        request: Some(pb::RequestId {
            session_secret: secret.to_vec(),
            seq,
        }),
        feature: feature.into(),
        count: 1,
        user: "bench".into(),
        host: "bench".into(),
    }
}

fn secret() -> Vec<u8> {
    crate::license::secret::SessionSecret::generate()
        .as_bytes()
        .to_vec()
}

async fn connect(target: &str, tls: &ClientTls, from: Option<IpAddr>) -> Result<Channel, Failure> {
    tls.endpoint(target, Duration::from_secs(1))
        .map_err(|e| Failure::usage(format!("bad server address {target}: {e}")))?
        .local_address(from)
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Failure::unreachable(format!("cannot connect to {target}: {e}")))
}

/// `PROBES` new sessions on `channel`: each checks one seat out and in.
/// Returns the check-out latencies (µs) and how many were not granted.
async fn probe(channel: &Channel) -> (Vec<u64>, u64) {
    let mut client = LicenseClient::new(channel.clone());
    let mut samples = Vec::new();
    let mut refused = 0;
    for _ in 0..PROBES {
        let secret = secret();
        let started = Instant::now();
        match client.checkout(request(&secret, 1, "bench")).await {
            Ok(reply) if reply.get_ref().granted => {
                samples.push(started.elapsed().as_micros() as u64);
                let token = reply.into_inner().token;
                let _ = client
                    .checkin(pb::CheckinRequest {
                        request: Some(pb::RequestId {
                            session_secret: secret,
                            seq: 2,
                        }),
                        token,
                    })
                    .await;
            }
            _ => refused += 1,
        }
    }
    (samples, refused)
}

/// Runs the flood against `target` (the access point).
pub(crate) async fn flood(
    target: &str,
    tls: &ClientTls,
    sessions: usize,
) -> Result<FloodFigures, Failure> {
    let probe_source: IpAddr = PROBE_SOURCE.parse().expect("a literal address");
    let probe_channel = connect(target, tls, Some(probe_source)).await?;
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(connect(target, tls, None).await?);
    }
    // The one seat of `scarce`, held for the whole run.
    let holder = secret();
    let held = LicenseClient::new(channels[0].clone())
        .checkout(request(&holder, 1, "scarce"))
        .await
        .map_err(|e| Failure::unreachable(format!("cannot check out scarce: {e}")))?;
    if !held.get_ref().granted {
        return Err(Failure::usage(format!(
            "the bench license's one seat of scarce is not free: {}",
            held.get_ref().message
        )));
    }

    let (mut before, refused_before) = probe(&probe_channel).await;

    let next = Arc::new(AtomicU64::new(0));
    let denied = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..FLOOD_WORKERS {
        let mut client = LicenseClient::new(channels[worker % channels.len()].clone());
        let (next, denied, other) = (next.clone(), denied.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < sessions as u64 {
                match client.checkout(request(&secret(), 1, "scarce")).await {
                    Ok(reply) if !reply.get_ref().granted => denied.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let seconds = started.elapsed().as_secs_f64();

    let (mut after, refused_after) = probe(&probe_channel).await;
    Ok(FloodFigures {
        sessions,
        denied: denied.load(Ordering::Relaxed),
        other: other.load(Ordering::Relaxed),
        seconds,
        probe_before_ms: latency(&mut before),
        probe_after_ms: latency(&mut after),
        probe_refused: (refused_before, refused_after),
        rss_mib: None,
    })
}
