//! What every `raftlm bench` mode measures with: latency figures from
//! samples, and the sum of the load workers' results. `bench.rs`,
//! `bench_etcd.rs` and `bench_flood.rs` share them.

use std::collections::BTreeMap;

use serde::Serialize;

/// Latency figures in milliseconds.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

/// Latency figures of `samples` (µs), sorting them.
pub(crate) fn latency(samples: &mut [u64]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    Latency {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
    }
}

/// What one load worker returns: its latencies (µs) and its errors by kind.
pub(crate) type WorkerResult = (Vec<u64>, BTreeMap<String, u64>);

/// Every worker's latencies and errors, summed.
pub(crate) async fn gather(tasks: Vec<tokio::task::JoinHandle<WorkerResult>>) -> WorkerResult {
    let mut samples = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        if let Ok((s, e)) = task.await {
            samples.extend(s);
            for (k, v) in e {
                *errors.entry(k).or_default() += v;
            }
        }
    }
    (samples, errors)
}
