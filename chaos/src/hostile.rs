//! The hostile client (`raftlm-chaos --hostile`): next to the honest
//! sessions, a client that sends what no honest client sends, from its own
//! source address (127.0.0.3):
//!
//! - `junk` — check-outs with a session secret of the wrong length or none;
//! - `long-name` — a feature name over the 255-byte limit;
//! - `oversized` — a 96 KiB request, over the client plane's message limit;
//! - `replay` — one request id sent again and again, and then once more after
//!   40 newer requests of its session;
//! - `flood` — 200 throw-away sessions at once, each asking for a feature
//!   that does not exist or for more seats than are licensed;
//! - `forged-checkin` — a check-in, with its own session, of a grant an
//!   honest session holds (read from `Status`);
//! - `forged-renew` — a renewal of its own session quoting honest grants.
//!
//! It never asks for a seat it could be granted, so the honest history stays
//! complete: any grant it is given, or any honest grant its check-in frees,
//! is a violation (`hostile-requests-refused`), and a freed honest grant is
//! also caught by the checker's no-lost-grant. Every answer is counted by
//! action and gRPC code or deny reason for the report.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftlm::license::secret::SessionSecret;
use raftlm::proto::v1 as pb;
use raftlm::proto::v1::license_client::LicenseClient;
use raftlm::tls::client::ClientTls;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::checker::{EXAMPLES_MAX, InvariantResult};
use crate::workload::Phase;

/// The hostile client's source address.
pub const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));
/// Sessions one flood opens.
pub const FLOOD_SESSIONS: usize = 200;
/// The invariant the hostile client reports.
pub const REFUSED: &str = "hostile-requests-refused";

/// What the hostile client needs.
#[derive(Debug, Clone)]
pub struct HostileSpec {
    /// The access point and the nodes' own addresses.
    pub targets: Vec<String>,
    /// How it dials (TLS with the run's CA).
    pub tls: ClientTls,
    /// Seeds its choices.
    pub seed: u64,
    /// Features the license grants (never asked for a grantable count).
    pub features: Vec<String>,
}

/// What the hostile client sent and was answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostileStats {
    /// Requests sent.
    pub requests: u64,
    /// Answers by `action: answer`.
    pub answers: BTreeMap<String, u64>,
    /// Answers that should have been refusals.
    pub violations: u64,
    /// The first few of them.
    pub examples: Vec<String>,
}

impl HostileStats {
    /// The invariant line for the report.
    pub fn invariant(&self) -> InvariantResult {
        InvariantResult {
            name: REFUSED.into(),
            passed: self.violations == 0,
            checked: self.requests,
            violations: self.violations,
            examples: self.examples.clone(),
        }
    }
}

/// The running hostile client.
pub struct Hostile {
    stats: Arc<Mutex<HostileStats>>,
    task: JoinHandle<()>,
}

impl Hostile {
    /// Starts it; it sends until the phase leaves [`Phase::Run`].
    pub fn start(spec: HostileSpec, phase: watch::Receiver<Phase>) -> Hostile {
        let stats = Arc::new(Mutex::new(HostileStats::default()));
        let client = Client {
            rng: StdRng::seed_from_u64(spec.seed),
            channels: spec
                .targets
                .iter()
                .filter_map(|address| {
                    let endpoint = spec
                        .tls
                        .endpoint(address, Duration::from_millis(500))
                        .ok()?
                        .timeout(Duration::from_secs(2))
                        .local_address(Some(SOURCE));
                    Some(endpoint.connect_lazy())
                })
                .collect(),
            stats: stats.clone(),
            spec,
        };
        let task = tokio::spawn(client.run(phase));
        Hostile { stats, task }
    }

    /// Stops it (it stops by itself once the phase leaves `Run`) and returns what it did.
    pub async fn finish(self) -> HostileStats {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Client {
    spec: HostileSpec,
    rng: StdRng,
    channels: Vec<Channel>,
    stats: Arc<Mutex<HostileStats>>,
}

/// A request id of a fresh random session.
fn fresh(rng: &mut StdRng, seq: u64) -> pb::RequestId {
    pb::RequestId {
        session_secret: SessionSecret::from_seed(rng.r#gen()).as_bytes().to_vec(),
        seq,
    }
}

fn code(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

fn reason(reply: &pb::CheckoutReply) -> String {
    if reply.granted {
        return "GRANTED".into();
    }
    pb::DenyReason::try_from(reply.reason).map_or_else(|_| "denied".into(), |r| format!("{r:?}"))
}

impl Client {
    fn client(&mut self) -> Option<LicenseClient<Channel>> {
        if self.channels.is_empty() {
            return None;
        }
        // Mostly the access point, sometimes a node's own address.
        let index = if self.rng.gen_bool(0.7) {
            0
        } else {
            self.rng.gen_range(0..self.channels.len())
        };
        Some(LicenseClient::new(self.channels[index].clone()))
    }

    fn count(&self, action: &str, answer: &str) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.requests += 1;
        *stats
            .answers
            .entry(format!("{action}: {answer}"))
            .or_default() += 1;
    }

    fn violation(&self, example: String) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.violations += 1;
        if stats.examples.len() < EXAMPLES_MAX {
            stats.examples.push(example);
        }
    }

    /// Sends a check-out that must not be granted and counts the answer.
    async fn checkout(&mut self, action: &str, request: pb::CheckoutRequest) {
        let Some(mut client) = self.client() else {
            return;
        };
        let feature = request.feature.chars().take(40).collect::<String>();
        let answer = match client.checkout(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.granted {
                    self.violation(format!(
                        "{action}: a check-out of {feature} was granted ({:?})",
                        reply.token
                    ));
                }
                reason(&reply)
            }
            Err(status) => code(&status),
        };
        self.count(action, &answer);
    }

    fn request(
        &self,
        request: Option<pb::RequestId>,
        feature: String,
        count: u32,
    ) -> pb::CheckoutRequest {
        pb::CheckoutRequest {
            request,
            vendor: crate::cluster::VENDOR.into(),
            version: String::new(),
            feature,
            count,
            user: "mallory".into(),
            host: "hostile".into(),
        }
    }

    /// A feature and count no check-out can be granted.
    fn ungrantable(&mut self) -> (String, u32) {
        match self.rng.gen_range(0..3) {
            0 => (format!("nosuch-{}", self.rng.gen_range(0..1000)), 1),
            1 => {
                let feature =
                    self.spec.features[self.rng.gen_range(0..self.spec.features.len())].clone();
                (feature, 100_000)
            }
            _ => {
                let feature =
                    self.spec.features[self.rng.gen_range(0..self.spec.features.len())].clone();
                (feature, 0)
            }
        }
    }

    async fn run(mut self, phase: watch::Receiver<Phase>) {
        let replayer = SessionSecret::from_seed(self.rng.r#gen());
        let mut replay_seq = 0u64;
        while *phase.borrow() == Phase::Run {
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(5..40))).await;
            match self.rng.gen_range(0..100) {
                0..=19 => {
                    let length = [0usize, 1, 15, 17, 64][self.rng.gen_range(0..5)];
                    let secret: Vec<u8> = (0..length).map(|_| self.rng.r#gen()).collect();
                    let request = if self.rng.gen_bool(0.2) {
                        None
                    } else {
                        Some(pb::RequestId {
                            session_secret: secret,
                            seq: self.rng.r#gen(),
                        })
                    };
                    let (feature, count) = self.ungrantable();
                    let request = self.request(request, feature, count);
                    self.checkout("junk", request).await;
                }
                20..=34 => {
                    let length = self.rng.gen_range(256..4096);
                    let id = fresh(&mut self.rng, 1);
                    let request = self.request(Some(id), "x".repeat(length), 1);
                    self.checkout("long-name", request).await;
                }
                35..=39 => {
                    let id = fresh(&mut self.rng, 1);
                    let request = self.request(Some(id), "y".repeat(96 * 1024), 1);
                    self.checkout("oversized", request).await;
                }
                40..=59 => {
                    // The same request id again and again; now and then 40 newer ones first.
                    if replay_seq == 0 || self.rng.gen_bool(0.05) {
                        for _ in 0..40 {
                            replay_seq += 1;
                            let id = pb::RequestId {
                                session_secret: replayer.as_bytes().to_vec(),
                                seq: replay_seq,
                            };
                            let (feature, count) = self.ungrantable();
                            let request = self.request(Some(id), feature, count);
                            self.checkout("replay", request).await;
                        }
                    }
                    let id = pb::RequestId {
                        session_secret: replayer.as_bytes().to_vec(),
                        seq: self.rng.gen_range(1..=replay_seq),
                    };
                    let (feature, count) = self.ungrantable();
                    let request = self.request(Some(id), feature, count);
                    self.checkout("replay", request).await;
                }
                60..=64 => {
                    let mut sends = tokio::task::JoinSet::new();
                    for _ in 0..FLOOD_SESSIONS {
                        let Some(mut client) = self.client() else {
                            break;
                        };
                        let (feature, count) = self.ungrantable();
                        let id = fresh(&mut self.rng, 1);
                        let request = self.request(Some(id), feature, count);
                        sends.spawn(async move { client.checkout(request).await });
                    }
                    while let Some(result) = sends.join_next().await {
                        let answer = match result {
                            Ok(Ok(reply)) => {
                                let reply = reply.into_inner();
                                if reply.granted {
                                    self.violation(format!(
                                        "flood: a throw-away session was granted {:?}",
                                        reply.token
                                    ));
                                }
                                reason(&reply)
                            }
                            Ok(Err(status)) => code(&status),
                            Err(_) => "task failed".into(),
                        };
                        self.count("flood", &answer);
                    }
                }
                65..=84 => self.forged_checkin().await,
                _ => self.forged_renew().await,
            }
        }
    }

    /// Honest grants, from a Status read.
    async fn honest_grants(&mut self) -> Vec<pb::GrantStatus> {
        let Some(mut client) = self.client() else {
            return Vec::new();
        };
        match client.status(pb::StatusRequest {}).await {
            Ok(reply) => reply.into_inner().grants,
            Err(_) => Vec::new(),
        }
    }

    async fn forged_checkin(&mut self) {
        let grants = self.honest_grants().await;
        if grants.is_empty() {
            return;
        }
        let grant = grants[self.rng.gen_range(0..grants.len())].clone();
        let Some(mut client) = self.client() else {
            return;
        };
        let request = pb::CheckinRequest {
            request: Some(fresh(&mut self.rng, 1)),
            token: grant.token,
        };
        let answer = match client.checkin(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.released {
                    self.violation(format!(
                        "forged-checkin: grant {:?} of session {} was released by another session",
                        grant.token, grant.session_handle
                    ));
                    "RELEASED".to_string()
                } else {
                    "not-held".to_string()
                }
            }
            Err(status) => code(&status),
        };
        self.count("forged-checkin", &answer);
    }

    async fn forged_renew(&mut self) {
        let grants = self.honest_grants().await;
        let Some(mut client) = self.client() else {
            return;
        };
        let quoted = grants.len();
        let request = pb::RenewRequest {
            session_secret: SessionSecret::from_seed(self.rng.r#gen())
                .as_bytes()
                .to_vec(),
            tokens: grants.into_iter().filter_map(|g| g.token).collect(),
            cached_for_ms: 0,
            cached_since_ms: 0,
        };
        let answer = match client.renew(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.unknown.len() != quoted {
                    self.violation(format!(
                        "forged-renew: a renewal of a foreign session quoting {quoted} honest grants was told only {} are unknown",
                        reply.unknown.len()
                    ));
                }
                "answered, all unknown".to_string()
            }
            Err(status) => code(&status),
        };
        self.count("forged-renew", &answer);
    }
}
