//! The node's read-only HTTP surface, on the management address `[http]
//! listen` (plaintext; bind it to a management network):
//!
//! - `GET /healthz`: 200 while the process runs, its Raft core runs (as the
//!   systemd watchdog checks it) and its store answers a read; else 503 with
//!   the reason.
//! - `GET /readyz`: 200 only while this node serves (`Shared::serving`), so a
//!   readiness-gated load balancer or Kubernetes Service sends clients to the
//!   active node alone; else 503 naming the active node.
//! - `GET /metrics`: OpenMetrics text (`prometheus-client`), read from this
//!   node's own state and Raft metrics: no log entry, no quorum round. Labels
//!   never carry a user, host or session.
//!
//! Any other path is 404, any other method 405 (HEAD is answered as GET).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::Shared;

/// The OpenMetrics content type `/metrics` answers with.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The router of the HTTP surface.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: /healthz, /readyz, /metrics\n",
            )
        })
        .with_state(shared)
}

/// Serves the HTTP surface on `listener` until `stop` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let address = listener.local_addr().ok();
    if let Err(error) = axum::serve(listener, router(shared))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(?address, %error, "the HTTP listener stopped");
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if let Err(fatal) = &shared.raft.metrics().borrow().running_state {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {}: the Raft core stopped: {fatal}\n", shared.node_id),
        );
    }
    if let Err(error) = shared.log.entry_hashes(None, 1) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "node {}: the store does not answer a read: {error}\n",
                shared.node_id
            ),
        );
    }
    text(StatusCode::OK, format!("node {}: ok\n", shared.node_id))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.serving() {
        Ok(term) => text(
            StatusCode::OK,
            format!("node {} is the active node (term {term})\n", shared.node_id),
        ),
        Err(error) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match render(&shared) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics do not encode: {error}\n"),
        ),
    }
}

type Labels = Vec<(&'static str, String)>;

/// A gauge family registered under `name`.
fn family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

/// A counter family registered under `name` (exposed as `name_total`).
fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

/// A gauge without labels registered under `name`.
fn single(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::default();
    registry.register(name, help, gauge.clone());
    gauge
}

/// A float gauge without labels registered under `name`.
fn single_float(registry: &mut Registry, name: &str, help: &str) -> Gauge<f64, AtomicU64> {
    let gauge = Gauge::<f64, AtomicU64>::default();
    registry.register(name, help, gauge.clone());
    gauge
}

/// A float gauge registered under `name`.
fn float(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(name, help, family.clone());
    family
}

fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// This node's figures, as OpenMetrics text.
pub fn render(shared: &Shared) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("raftlm");
    let licensed = family(
        &mut registry,
        "seats_licensed",
        "Seats of a vendor's feature in its imported lines",
    );
    let unexpired = family(
        &mut registry,
        "seats_unexpired",
        "Seats of a feature's lines that count now (unexpired, hosts listed)",
    );
    let in_use = family(
        &mut registry,
        "seats_in_use",
        "Seats of a feature held by grants",
    );
    let free = family(
        &mut registry,
        "seats_free",
        "Seats of a feature free for a check-out now",
    );
    let grants = single(&mut registry, "grants", "Grants held");
    let sessions = single(
        &mut registry,
        "sessions",
        "Client sessions the license state holds",
    );
    let write_format = single(
        &mut registry,
        "write_format",
        "The record format the cluster writes",
    );
    let activations = single(
        &mut registry,
        "activations",
        "Activations applied (failovers + 1)",
    );
    let active = single(
        &mut registry,
        "active",
        "1 while this node is the active node and serves",
    );
    let term = single(&mut registry, "term", "This node's current Raft term");
    let last_log = single(
        &mut registry,
        "last_log_index",
        "This node's last log index",
    );
    let applied = single(
        &mut registry,
        "applied_index",
        "The last log index this node applied",
    );
    let matched = family(
        &mut registry,
        "member_matched_index",
        "On the active node: the last log index each member holds",
    );
    let lag = family(
        &mut registry,
        "member_lag",
        "On the active node: entries each member's log is behind",
    );
    let clock = float(
        &mut registry,
        "peer_clock_offset_seconds",
        "Each peer's wall clock minus this node's, from its last Raft reply",
    );
    let cert = single_float(
        &mut registry,
        "certificate_expiry_seconds",
        "Seconds until this node's certificate expires",
    );

    let granted = counters(
        &mut registry,
        "checkouts_granted",
        "Check-outs granted, counted in the replicated state (they survive failover)",
    );
    let denied = counters(
        &mut registry,
        "checkouts_denied",
        "Check-outs denied, by reason, counted in the replicated state (a feature no line names is answered without the log and not counted)",
    );
    shared.state.read(|state| {
        for f in state.features() {
            let labels: Labels = vec![("vendor", f.vendor.clone()), ("feature", f.feature.clone())];
            licensed.get_or_create(&labels).set(count(f.licensed));
            unexpired.get_or_create(&labels).set(count(f.unexpired));
            in_use.get_or_create(&labels).set(count(f.in_use));
            free.get_or_create(&labels)
                .set(count(f.unexpired.saturating_sub(f.in_use)));
        }
        for ((vendor, feature), counts) in state.checkout_counts().by_feature() {
            let labels: Labels = vec![("vendor", vendor.clone()), ("feature", feature.clone())];
            granted.get_or_create(&labels).inc_by(counts.granted);
            for (reason, n) in &counts.denied {
                let mut labels = labels.clone();
                labels.push(("reason", reason.clone()));
                denied.get_or_create(&labels).inc_by(*n);
            }
        }
        grants.set(count(state.grants().len()));
        sessions.set(count(state.sessions().len()));
        write_format.set(i64::from(state.formats().write));
        activations.set(count(state.activations()));
    });
    let serving = shared.serving().is_ok();
    active.set(i64::from(serving));
    let m = shared.raft.metrics().borrow().clone();
    term.set(count(m.current_term));
    last_log.set(count(m.last_log_index.unwrap_or(0)));
    applied.set(count(m.last_applied.map_or(0, |l| l.index)));
    if serving && let Some(replication) = &m.replication {
        let last = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        for (id, at) in replication {
            let index = at.map_or(0, |l| l.index);
            let role = if voters.contains(id) {
                "voter"
            } else {
                "learner"
            };
            let labels: Labels = vec![("node", id.to_string()), ("role", role.to_string())];
            matched.get_or_create(&labels).set(count(index));
            lag.get_or_create(&labels)
                .set(count(last.saturating_sub(index)));
        }
    }
    for (id, peer) in shared.clock.judge().peers {
        if let crate::clock::PeerClock::Agrees(offset) | crate::clock::PeerClock::Off(offset) = peer
        {
            clock
                .get_or_create(&vec![("node", id.to_string())])
                .set(offset as f64 / 1000.0);
        }
    }
    if let Some(tls) = &shared.tls {
        let left = tls.current().cert.not_after_unix - crate::clock::wall_ms() as i64 / 1000;
        cert.set(left as f64);
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}
