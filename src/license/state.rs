//! `LicenseState`: the replicated license state machine, as plain data.
//!
//! Every node applies the same commands in the same (Raft log) order to its
//! own `LicenseState`, so every node holds the same seats, grants and
//! sessions. `apply` is deterministic: no clock, no randomness, no I/O. Time
//! enters inside the command batch: the active node stamps `now_ms` on each
//! batch it proposes, and the state keeps `max(previous, now_ms)` so its time
//! never runs backwards even when a new leader's clock is behind the old one's.
//!
//! # Seats and grants
//!
//! Seats belong to a vendor's feature: imported lines are pooled per
//! `(vendor, feature)` and only the lines that count under the supersession
//! rules add seats ([`super::pool`]: the same signed content once, the newest
//! FEATURE issuance, INCREMENTs by distinct serial). A check-out names the
//! vendor, the feature and the lowest version it accepts; it is served by
//! counted lines of that version or higher. A line past its expiry date no
//! longer grants: new check-outs can use only the seats of unexpired lines.
//! Seats already granted stay granted until they are checked in or their
//! session expires, which is what applications expect from a floating-license
//! server (a running program is not killed at midnight). The invariant is
//! therefore that the grants fit the lines of their pool (for every version
//! requested, the seats granted at or above it are at most the seats licensed
//! at or above it), checked after every command, and a check-out never takes a
//! seat beyond the unexpired ones.
//!
//! A grant is named by its [`GrantToken`]: the term and log index of the
//! entry that created it, plus its slot in that entry (the batcher puts many
//! commands in one entry). Tokens are unique by construction and a retried or
//! recycled token can never name a different grant.
//!
//! # Sessions and retries
//!
//! Every client-originated command carries a [`RequestId`] `(session, seq)`.
//! The state remembers the outcomes of the last [`DEDUP_WINDOW`] requests of
//! each session, so a retried request returns the first outcome and never
//! takes a second seat. A request older than the window is answered
//! [`Outcome::Stale`] instead of being applied again. A session that was
//! expired is dead: its later requests (a retry that was in flight, a client
//! back from caching mode) are answered [`Outcome::SessionExpired`], and the
//! client starts a new session. The last [`EXPIRED_SESSIONS_REMEMBERED`]
//! expired sessions are remembered for this.
//!
//! Only a grant creates a session. A request from a session the state does
//! not hold that changes nothing (a denied check-out, a check-in of an
//! unknown grant) leaves no session behind; its answer is kept among the last
//! [`UNHELD_ANSWERS_REMEMBERED`] such answers, so its retry still gets it
//! (docs/decisions/0013-a-denial-creates-no-session.md).
//!
//! # Invariants
//!
//! Checked after every apply; a violation is a bug and panics with the
//! values, so replicas can never diverge silently:
//! - seats in use ≤ seats licensed, per feature;
//! - the per-feature use counters equal the sum of the live grants;
//! - state time never decreases.
//!
//! State time comes from the active node's clock alone (the `now_ms` it
//! stamps, which the activator keeps within `timing.clock_skew_max_ms` of a
//! majority's clocks). Nothing in a license file moves it: a line issued more
//! than a day ahead of it is refused
//! (docs/decisions/0016-license-dates-never-move-the-clusters-time.md).
//!
//! Left out here: signature checking (done before a license is proposed) and
//! session liveness (the active node tracks heartbeats in memory and proposes
//! `Expire`).
//!
//! The ids, the commands and outcomes, and the trust in vendor keys live in
//! [`super::ids`], [`super::command`] and [`super::trust`]; they are
//! re-exported here, so `state::Command` and the like name them too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::counters::CheckoutCounts;
use super::feature::{Expiry, FeatureLine};
use super::formats::{ClusterFormats, FORMAT_MEMBERS_MAX, FORMAT_SET_ADDRESS};
use super::host::HostReport;
use super::identity::ClusterId;
use super::pool::{self, At, Pool, PoolKey, Verdict, Version};
use super::removal::{REMOVE_GRANTS_MAX, Removal, Removals};
use super::signature::{self, VendorPublicKey};
use super::trust;

pub use super::command::{Batch, Command, DenyReason, Outcome, RemovedGrant};
pub use super::ids::{GrantToken, LogIndex, LogPosition, NodeId, RequestId, SessionId, Term};
pub use super::trust::{TRUSTED_KEYS_MAX, TrustedKey, key_id_of};

/// How many recent outcomes each session remembers for retries.
pub const DEDUP_WINDOW: usize = 32;
/// Most live grants the state holds; a check-out beyond it is denied.
pub const GRANTS_MAX: usize = 1_000_000;
/// Most sessions the state holds; a new session beyond it is denied.
pub const SESSIONS_MAX: usize = 1_000_000;
/// How many expired sessions the state remembers, so that a late request
/// from one is refused instead of starting it again.
pub const EXPIRED_SESSIONS_REMEMBERED: usize = 100_000;
/// Most seats one check-out may ask for.
pub const CHECKOUT_SEATS_MAX: u32 = 1_000_000;
/// How many administrators' actions the state remembers, newest last.
pub const ADMIN_ACTIONS_REMEMBERED: usize = 64;
/// Most node ids the state keeps as retired: a cluster replaces a machine
/// now and then, not thousands of times; a change beyond it is refused.
pub const RETIRED_NODES_MAX: usize = 4096;
/// First answers of requests from sessions the state does not hold (a
/// denied first check-out creates no session), newest last, so that a retry
/// gets its first answer: about six seconds of a flood at 10,000 denials a
/// second, far longer than a client retries.
pub const UNHELD_ANSWERS_REMEMBERED: usize = 65_536;
/// Most voters one host report names: more than any cluster raftlm runs
/// (three or five voters, a few more while members are replaced).
pub const HOST_REPORT_VOTERS_MAX: usize = 16;
/// How many contents of one license name the state remembers having imported.
pub const IMPORTS_REMEMBERED_PER_NAME: usize = 16;
/// Most license names whose imported contents the state remembers.
pub const IMPORTED_NAMES_MAX: usize = 4096;

/// What a check-out asks for.
struct Want<'a> {
    vendor: &'a str,
    feature: &'a str,
    version: &'a str,
    count: u32,
}

/// Seats held by one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The grant token.
    pub token: GrantToken,
    /// The vendor of the feature.
    pub vendor: String,
    /// The feature.
    pub feature: String,
    /// The lowest version the check-out accepted (empty: any).
    pub version: String,
    /// Seats held.
    pub count: u32,
    /// The holding session.
    pub session: SessionId,
    /// User name reported by the client.
    pub user: String,
    /// Host name reported by the client.
    pub host: String,
    /// State time when granted (ms since the epoch).
    pub since_ms: u64,
}

/// What the state knows of a client session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Grants the session holds.
    pub grants: BTreeSet<GrantToken>,
    /// Outcomes of its last requests, oldest first.
    recent: VecDeque<(u64, Outcome)>,
    /// Highest sequence number evicted from `recent`; requests at or below it
    /// that are not in `recent` are stale.
    forgotten_seq: u64,
}

/// An administrator's action, as the state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAction {
    /// State time when it was applied (ms since the epoch).
    pub at_ms: u64,
    /// Who asked (an administrator certificate's subject, or a node).
    pub author: String,
    /// What was asked, e.g. `import license acme.lic`.
    pub action: String,
    /// What came of it, e.g. `imported 3 lines` or the refusal.
    pub result: String,
}

/// The node that last became active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The node.
    pub node: NodeId,
    /// Its term.
    pub term: Term,
    /// State time of the activation.
    pub at_ms: u64,
    /// Its quorum lease (ms): a successor must have waited at least this long.
    pub lease_ms: u64,
}

/// The replicated license state. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseState {
    /// State time: the highest `now_ms` applied (ms since the epoch).
    now_ms: u64,
    /// Imported licenses by name, lines in file order.
    licenses: BTreeMap<String, Vec<FeatureLine>>,
    /// The counted lines of each vendor's feature, derived from `licenses`
    /// (kept so a check-out does not re-evaluate every line).
    pools: BTreeMap<PoolKey, Pool>,
    /// Seats in use per vendor's feature, by the version the grants asked for.
    demand: BTreeMap<PoolKey, BTreeMap<Version, u32>>,
    /// Live grants.
    grants: BTreeMap<GrantToken, Grant>,
    /// Known sessions.
    sessions: BTreeMap<SessionId, Session>,
    /// The last activation, if any.
    activation: Option<Activation>,
    /// Number of activations applied (failovers + 1).
    activations: u64,
    /// Recently expired sessions, oldest first (bounded by
    /// [`EXPIRED_SESSIONS_REMEMBERED`]), and the same as a set for look-ups.
    expired_order: VecDeque<SessionId>,
    expired_set: BTreeSet<SessionId>,
    /// The last [`ADMIN_ACTIONS_REMEMBERED`] administrators' actions, oldest first.
    admin_actions: VecDeque<AdminAction>,
    /// The first answers of the last [`UNHELD_ANSWERS_REMEMBERED`] requests
    /// from sessions the state did not hold (requests that changed nothing),
    /// oldest first, and the same as a map for look-ups.
    unheld_order: VecDeque<RequestId>,
    unheld: BTreeMap<RequestId, Outcome>,
    /// The cluster name license lines must be issued for: recorded by the
    /// first activation.
    cluster_name: Option<String>,
    /// The cluster identity license lines bound to one must name: recorded
    /// by the first activation that carries one (a node with TLS), never
    /// changed afterwards.
    cluster_id: Option<ClusterId>,
    /// Vendor keys the cluster trusts, by key id (hex).
    trusted: BTreeMap<String, TrustedKey>,
    /// The host id each voter reported, as the active node last recorded it.
    hosts: HostReport,
    /// Whether the cluster has ever trusted a vendor key (by a bootstrap or
    /// an administrator). Once it has, a `vendor_keys` bootstrap changes
    /// nothing: an untrust of the last key leaves no key trusted.
    trusted_ever: bool,
    /// Per license name, the contents ([`content_hash`]) it has ever been
    /// imported with (the last [`IMPORTS_REMEMBERED_PER_NAME`]), kept across
    /// removals: a license directory re-imports a file only when it changed.
    imported: BTreeMap<String, VecDeque<[u8; 32]>>,
    /// Node ids that left the cluster: never members again (a certificate
    /// issued for one admits nobody), at most [`RETIRED_NODES_MAX`].
    retired_nodes: BTreeSet<u64>,
    /// The format the cluster writes, what each member reads, and members'
    /// moved addresses. Added in format 7: a format-6 record has none and
    /// reads as the default (format 6, nothing recorded).
    #[serde(with = "crate::codec::added_in_7")]
    formats: ClusterFormats,
    /// Grants administrators removed, for their holders' renewals. Added in
    /// format 7.
    #[serde(with = "crate::codec::added_in_7")]
    removals: Removals,
    /// Check-outs granted and denied, per feature and reason, for metrics
    /// that survive a failover. Added in format 7.
    #[serde(with = "crate::codec::added_in_7")]
    checkouts: CheckoutCounts,
}

/// A digest of license lines' content and signatures (deterministic).
pub fn content_hash(lines: &[FeatureLine]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    for line in lines {
        field(line.kind.keyword().as_bytes());
        field(line.feature.as_bytes());
        field(line.vendor.as_bytes());
        field(line.version.as_bytes());
        field(line.expiry.to_string().as_bytes());
        field(&line.seats.to_be_bytes());
        for (key, value) in &line.attributes {
            field(key.as_bytes());
            field(value.as_bytes());
        }
        field(line.signature.as_bytes());
    }
    hash.finalize().into()
}

/// A summary of one vendor's feature, for status reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSummary {
    /// The feature name.
    pub feature: String,
    /// The vendor.
    pub vendor: String,
    /// Highest version licensed.
    pub version: String,
    /// Seats of all counted lines.
    pub licensed: u32,
    /// Seats of unexpired lines.
    pub unexpired: u32,
    /// Seats in use.
    pub in_use: u32,
    /// The latest expiry among the lines.
    pub expiry: Expiry,
    /// The seats of the counted lines by expiry: dated ones still valid,
    /// soonest first, then permanent ones, then those that have expired.
    pub by_expiry: Vec<ExpirySeats>,
}

/// Seats of a feature's counted lines that share an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpirySeats {
    /// When they stop granting.
    pub expiry: Expiry,
    /// How many seats.
    pub seats: u32,
    /// Whether they have expired at state time (they count 0 seats).
    pub expired: bool,
    /// Whether they are bound to host ids that fewer than a majority of the
    /// voters report (they count 0 seats while that lasts).
    pub hosts_unlisted: bool,
}

impl fmt::Display for ExpirySeats {
    /// `25 until 31-dec-2027`, `5 permanent`, `10 expired on 31-dec-2025`,
    /// `5 permanent (hosts not listed: count 0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.expiry, self.expired) {
            (Expiry::Permanent, _) => write!(f, "{} permanent", self.seats)?,
            (Expiry::On(date), false) => write!(f, "{} until {date}", self.seats)?,
            (Expiry::On(date), true) => return write!(f, "{} expired on {date}", self.seats),
        }
        if self.hosts_unlisted {
            f.write_str(" (hosts not listed: count 0)")?;
        }
        Ok(())
    }
}

impl LicenseState {
    /// An empty state: no licenses, no grants, time zero.
    pub fn new() -> LicenseState {
        LicenseState::default()
    }

    /// Applies one batch at a log position; returns one outcome per command.
    pub fn apply_batch(&mut self, at: LogPosition, batch: &Batch) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(batch.commands.len());
        for (slot, command) in batch.commands.iter().enumerate() {
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            outcomes.push(self.apply(at, slot, batch.now_ms, command));
        }
        outcomes
    }

    /// Applies one command at a log position and slot, with the proposer's time.
    ///
    /// Panics if an invariant breaks afterwards (a bug, never user input).
    pub fn apply(&mut self, at: LogPosition, slot: u32, now_ms: u64, command: &Command) -> Outcome {
        let before_ms = self.now_ms;
        self.now_ms = self.now_ms.max(now_ms);
        let outcome = match command {
            Command::ImportLicense {
                name,
                lines,
                author,
            } => {
                let outcome = self.import(name, lines);
                self.record_admin(author, format!("import license {name}"), &outcome);
                outcome
            }
            Command::RemoveLicense { name, author } => {
                let outcome = self.remove(name);
                self.record_admin(author, format!("remove license {name}"), &outcome);
                outcome
            }
            Command::Checkout {
                request,
                vendor,
                feature,
                version,
                count,
                user,
                host,
            } => {
                let token = GrantToken {
                    term: at.term,
                    index: at.index,
                    slot,
                };
                let want = Want {
                    vendor,
                    feature,
                    version,
                    count: *count,
                };
                self.deduplicated(*request, |state| {
                    let outcome = state.checkout(token, request.session, &want, user, host);
                    // Counted from the moment the cluster writes format 7:
                    // a format-6 snapshot or digest could not carry counts,
                    // and a node installing one would disagree for good.
                    if state.formats.write >= FORMAT_SET_ADDRESS {
                        state.checkouts.count(vendor, feature, &outcome);
                    }
                    outcome
                })
            }
            Command::Checkin { request, token } => {
                self.deduplicated(*request, |state| state.checkin(request.session, *token))
            }
            Command::Expire { sessions } => self.expire(sessions),
            Command::Activate {
                term,
                node,
                cluster_name,
                cluster_id,
                lease_ms,
                wait_ms,
            } => match (&self.cluster_name, &self.activation) {
                (Some(held), _) if held != cluster_name => Outcome::WrongCluster {
                    held: held.clone(),
                    asked: cluster_name.clone(),
                },
                // The previous active node may have served until its lease ran
                // out; a successor that waited less could overlap it.
                (_, Some(previous)) if previous.node != *node && *wait_ms < previous.lease_ms => {
                    Outcome::TimingIncompatible {
                        previous: previous.node,
                        lease_ms: previous.lease_ms,
                        wait_ms: *wait_ms,
                    }
                }
                _ => {
                    self.cluster_name = Some(cluster_name.clone());
                    if self.cluster_id.is_none() {
                        self.cluster_id = *cluster_id;
                    }
                    self.activation = Some(Activation {
                        node: *node,
                        term: *term,
                        at_ms: self.now_ms,
                        lease_ms: *lease_ms,
                    });
                    self.activations += 1;
                    Outcome::Activated
                }
            },
            Command::TrustKey {
                vendor,
                key,
                author,
            } => {
                let outcome = trust::trust_key(
                    &mut self.trusted,
                    &mut self.trusted_ever,
                    vendor,
                    key,
                    author,
                    self.now_ms,
                );
                let id = key_id_of(key);
                self.record_admin(author, format!("trust key {id}"), &outcome);
                outcome
            }
            Command::BootstrapTrust { keys, author } => {
                if self.trusted_ever {
                    Outcome::BootstrapDone
                } else {
                    let outcome = trust::bootstrap(
                        &mut self.trusted,
                        &mut self.trusted_ever,
                        keys,
                        author,
                        self.now_ms,
                    );
                    let ids: Vec<String> = keys.iter().map(|(_, k)| key_id_of(k)).collect();
                    self.record_admin(author, format!("trust keys {}", ids.join(", ")), &outcome);
                    outcome
                }
            }
            Command::ReportHosts { voters, author } => {
                let outcome = if voters.len() > HOST_REPORT_VOTERS_MAX {
                    Outcome::HostsRefused {
                        voters: u32::try_from(voters.len()).unwrap_or(u32::MAX),
                    }
                } else {
                    self.hosts = HostReport {
                        voters: voters.iter().map(|(node, id)| (node.0, *id)).collect(),
                    };
                    Outcome::HostsReported {
                        voters: u32::try_from(self.hosts.voters.len()).unwrap_or(u32::MAX),
                    }
                };
                let listed: Vec<String> = voters
                    .iter()
                    .take(HOST_REPORT_VOTERS_MAX)
                    .map(|(node, id)| match id {
                        Some(id) => format!("node {} {id}", node.0),
                        None => format!("node {} unknown", node.0),
                    })
                    .collect();
                self.record_admin(
                    author,
                    format!("report host ids: {}", listed.join(", ")),
                    &outcome,
                );
                outcome
            }
            Command::RecordMembership {
                action,
                retire,
                author,
            } => {
                let fresh: BTreeSet<u64> = retire
                    .iter()
                    .copied()
                    .filter(|id| !self.retired_nodes.contains(id))
                    .collect();
                let outcome = if self.retired_nodes.len() + fresh.len() > RETIRED_NODES_MAX {
                    Outcome::TooManyRetired
                } else {
                    for id in &fresh {
                        self.formats.forget(*id);
                    }
                    self.retired_nodes.extend(fresh);
                    Outcome::MembershipRecorded {
                        retired: u32::try_from(self.retired_nodes.len()).unwrap_or(u32::MAX),
                    }
                };
                self.record_admin(author, action.clone(), &outcome);
                outcome
            }
            Command::RecordFormats {
                members,
                write,
                author,
            } => {
                let outcome = match self.formats.record(members, *write) {
                    Ok(from) => Outcome::FormatsRecorded {
                        from,
                        write: *write,
                    },
                    Err(reason) => Outcome::FormatsRefused { reason },
                };
                let listed: Vec<String> = members
                    .iter()
                    .take(FORMAT_MEMBERS_MAX)
                    .map(|(node, said)| format!("node {} {said}", node.0))
                    .collect();
                self.record_admin(
                    author,
                    format!(
                        "record formats: {}; write format {write}",
                        listed.join(", ")
                    ),
                    &outcome,
                );
                outcome
            }
            Command::RemoveGrants {
                tokens,
                asked,
                author,
            } => {
                let outcome = self.remove_grants(tokens, author);
                self.record_admin(author, format!("remove {asked}"), &outcome);
                outcome
            }
            Command::SetAddress {
                node,
                address,
                peer_address,
                author,
            } => {
                let outcome = match self.formats.set_address(*node, address, peer_address) {
                    Ok(()) => Outcome::AddressSet { node: *node },
                    Err(reason) => Outcome::FormatsRefused { reason },
                };
                self.record_admin(
                    author,
                    format!(
                        "set address of node {}: client {address}, peer {peer_address}",
                        node.0
                    ),
                    &outcome,
                );
                outcome
            }
            Command::UntrustKey { key_id, author } => {
                let outcome = trust::untrust_key(
                    &mut self.trusted,
                    key_id,
                    &self.licenses,
                    self.cluster_name.as_deref(),
                    self.cluster_id.as_ref(),
                );
                self.record_admin(author, format!("untrust key {key_id}"), &outcome);
                outcome
            }
        };
        assert!(
            self.now_ms >= before_ms,
            "time regression {} → {}",
            before_ms,
            self.now_ms
        );
        self.check_seats();
        outcome
    }

    fn record_admin(&mut self, author: &str, action: String, outcome: &Outcome) {
        let result = match outcome {
            Outcome::Imported {
                lines,
                duplicates,
                superseded,
                ..
            } => {
                format!("imported {lines} lines ({duplicates} duplicates, {superseded} superseded)")
            }
            Outcome::Removed { .. } => "removed".to_string(),
            Outcome::KeyTrusted { .. } | Outcome::KeysBootstrapped { .. } => "trusted".to_string(),
            Outcome::KeyUntrusted { .. } => "no longer trusted".to_string(),
            Outcome::NoSuchKey => "refused: no trusted key has that id".to_string(),
            Outcome::KeyInUse { license } => {
                format!("refused: license {license} holds lines it signed")
            }
            Outcome::BadKey { reason } => format!("refused: {reason}"),
            Outcome::MembershipRecorded { .. } => "recorded".to_string(),
            Outcome::FormatsRecorded { from, write } if from == write => "recorded".to_string(),
            Outcome::FormatsRecorded { from, write } => {
                format!("recorded; the cluster writes format {write} (was {from})")
            }
            Outcome::AddressSet { .. } => "moved".to_string(),
            Outcome::GrantsRemoved { removed } => {
                let listed: Vec<String> = removed
                    .iter()
                    .map(|g| {
                        format!(
                            "{} {} of {} {} (user {}, host {}, session {})",
                            g.token, g.count, g.vendor, g.feature, g.user, g.host, g.session
                        )
                    })
                    .collect();
                format!("removed {}: {}", removed.len(), listed.join("; "))
            }
            Outcome::FormatsRefused { reason } => format!("refused: {reason}"),
            Outcome::TooManyRetired => {
                format!("refused: at most {RETIRED_NODES_MAX} node ids are retired")
            }
            Outcome::HostsReported { voters } => format!("recorded for {voters} voters"),
            Outcome::HostsRefused { voters } => format!(
                "refused: {voters} voters named, at most {HOST_REPORT_VOTERS_MAX} are recorded"
            ),
            Outcome::LicenseUnverified { line, reason } => {
                format!("refused: line {line}: {reason}")
            }
            Outcome::NoSuchLicense => "refused: no license by that name".to_string(),
            Outcome::LicenseRefused {
                vendor,
                feature,
                in_use,
                licensed,
            } => format!(
                "refused: {in_use} seats of {vendor} {feature} in use, {licensed} would remain licensed"
            ),
            other => format!("{other:?}"),
        };
        if self.admin_actions.len() >= ADMIN_ACTIONS_REMEMBERED {
            self.admin_actions.pop_front();
        }
        self.admin_actions.push_back(AdminAction {
            at_ms: self.now_ms,
            author: author.to_string(),
            action,
            result,
        });
    }

    fn deduplicated(
        &mut self,
        request: RequestId,
        run: impl FnOnce(&mut LicenseState) -> Outcome,
    ) -> Outcome {
        if let Some(first) = self.unheld.get(&request) {
            return first.clone();
        }
        if let Some(session) = self.sessions.get(&request.session) {
            if let Some((_, first)) = session.recent.iter().find(|(seq, _)| *seq == request.seq)
                && !crate::fault::broken(crate::fault::Break::Dedup)
            {
                return first.clone();
            }
            if request.seq <= session.forgotten_seq {
                return Outcome::Stale;
            }
        } else if self.expired_set.contains(&request.session) {
            return Outcome::SessionExpired;
        } else if self.sessions.len() >= SESSIONS_MAX {
            return Outcome::Denied {
                reason: DenyReason::CapacityReached,
                available: 0,
                total: 0,
            };
        }
        let outcome = run(self);
        if !self.sessions.contains_key(&request.session) {
            // Only a grant creates a session: this request changed nothing
            // (a denial, an unknown grant). Its answer is remembered apart, in
            // a bounded list, so a flood of throw-away sessions holds no seat
            // and no session, and a retry still gets the first answer.
            if self.unheld_order.len() >= UNHELD_ANSWERS_REMEMBERED
                && let Some(oldest) = self.unheld_order.pop_front()
            {
                self.unheld.remove(&oldest);
            }
            self.unheld_order.push_back(request);
            self.unheld.insert(request, outcome.clone());
            return outcome;
        }
        let session = self
            .sessions
            .entry(request.session)
            .or_insert_with(|| Session {
                grants: BTreeSet::new(),
                recent: VecDeque::new(),
                forgotten_seq: 0,
            });
        if session.recent.len() >= DEDUP_WINDOW
            && let Some((seq, _)) = session.recent.pop_front()
        {
            session.forgotten_seq = session.forgotten_seq.max(seq);
        }
        session.recent.push_back((request.seq, outcome.clone()));
        outcome
    }

    fn checkout(
        &mut self,
        token: GrantToken,
        session: SessionId,
        want: &Want<'_>,
        user: &str,
        host: &str,
    ) -> Outcome {
        let key = (want.vendor.to_string(), want.feature.to_string());
        let version = Version::parse(want.version);
        let pool = self.pools.get(&key);
        let no_demand = BTreeMap::new();
        let demand = self.demand.get(&key).unwrap_or(&no_demand);
        let at = self.at();
        let licensed = pool.map_or(0, |p| p.supply(&Version::any(), None));
        let for_version = pool.map_or(0, |p| p.supply(&version, None));
        let unexpired = pool.map_or(0, |p| p.supply(&version, Some(&at)));
        let available = pool.map_or(0, |p| p.available(demand, &version, &at));
        let count = want.count;
        let deny = |reason| Outcome::Denied {
            reason,
            available,
            total: unexpired,
        };
        if count == 0 || count > CHECKOUT_SEATS_MAX {
            return deny(DenyReason::BadCount);
        }
        if licensed == 0 {
            return deny(DenyReason::NoSuchFeature);
        }
        if for_version == 0 {
            return deny(DenyReason::VersionNotLicensed);
        }
        if unexpired == 0 {
            // Nothing grants now: expired, or bound to host ids the voters
            // do not report (judged on the dates alone to tell them apart).
            let dated_only = At {
                ms: self.now_ms,
                hosts: None,
            };
            let unexpired_anywhere = pool.map_or(0, |p| p.supply(&version, Some(&dated_only)));
            return deny(if unexpired_anywhere == 0 {
                DenyReason::Expired
            } else {
                DenyReason::HostsNotListed
            });
        }
        if count > unexpired {
            return deny(DenyReason::ExceedsLicensed);
        }
        if count > available {
            return deny(DenyReason::InUse);
        }
        if self.grants.len() >= GRANTS_MAX {
            return deny(DenyReason::CapacityReached);
        }
        let feature = want.feature.to_string();
        let grant = Grant {
            token,
            vendor: want.vendor.to_string(),
            feature: feature.clone(),
            version: want.version.to_string(),
            count,
            session,
            user: user.to_string(),
            host: host.to_string(),
            since_ms: self.now_ms,
        };
        let previous = self.grants.insert(token, grant);
        assert!(previous.is_none(), "grant token {token} issued twice");
        *self
            .demand
            .entry(key)
            .or_default()
            .entry(version)
            .or_insert(0) += count;
        self.sessions
            .entry(session)
            .or_insert_with(|| Session {
                grants: BTreeSet::new(),
                recent: VecDeque::new(),
                forgotten_seq: 0,
            })
            .grants
            .insert(token);
        Outcome::Granted {
            token,
            feature,
            count,
            available: available - count,
            total: unexpired,
        }
    }

    fn checkin(&mut self, session: SessionId, token: GrantToken) -> Outcome {
        match self.grants.get(&token) {
            Some(grant) if grant.session == session => {}
            _ => return Outcome::UnknownGrant,
        }
        match self.release(token) {
            Some(grant) => Outcome::CheckedIn {
                feature: grant.feature,
                count: grant.count,
            },
            None => Outcome::UnknownGrant,
        }
    }

    /// Removes a grant and returns its seats; `None` if there is no such grant.
    fn release(&mut self, token: GrantToken) -> Option<Grant> {
        let grant = self.grants.remove(&token)?;
        let key = (grant.vendor.clone(), grant.feature.clone());
        let version = Version::parse(&grant.version);
        let demand = self.demand.get_mut(&key).unwrap_or_else(|| {
            panic!(
                "grant {token} of {} {} has no seat count",
                grant.vendor, grant.feature
            )
        });
        let used = demand.get_mut(&version).unwrap_or_else(|| {
            panic!(
                "grant {token} of {} {} has no seat count for its version",
                grant.vendor, grant.feature
            )
        });
        *used = used.checked_sub(grant.count).unwrap_or_else(|| {
            panic!(
                "seat count of {} {} below zero releasing {token}",
                grant.vendor, grant.feature
            )
        });
        if *used == 0 {
            demand.remove(&version);
        }
        if demand.is_empty() {
            self.demand.remove(&key);
        }
        if let Some(session) = self.sessions.get_mut(&grant.session) {
            session.grants.remove(&token);
        }
        Some(grant)
    }

    /// Removes the grants of `tokens` that are still held (at most
    /// [`REMOVE_GRANTS_MAX`]), remembering each for its holder.
    fn remove_grants(&mut self, tokens: &[GrantToken], author: &str) -> Outcome {
        if self.formats.write < FORMAT_SET_ADDRESS {
            return Outcome::FormatsRefused {
                reason: format!(
                    "removing grants needs record format {FORMAT_SET_ADDRESS}; the cluster writes {}",
                    self.formats.write
                ),
            };
        }
        let mut removed = Vec::new();
        for token in tokens.iter().take(REMOVE_GRANTS_MAX) {
            let Some(grant) = self.release(*token) else {
                continue;
            };
            self.removals.record(
                *token,
                Removal {
                    session: grant.session,
                    author: author.to_string(),
                    at_ms: self.now_ms,
                },
            );
            removed.push(RemovedGrant {
                token: *token,
                vendor: grant.vendor,
                feature: grant.feature,
                count: grant.count,
                session: grant.session,
                user: grant.user,
                host: grant.host,
            });
        }
        Outcome::GrantsRemoved { removed }
    }

    /// Check-outs granted and denied so far, per feature and reason.
    pub fn checkout_counts(&self) -> &CheckoutCounts {
        &self.checkouts
    }

    /// Who removed `token` from `session`, and when, if remembered.
    pub fn removal(&self, token: &GrantToken, session: SessionId) -> Option<&Removal> {
        self.removals.of(token, session)
    }

    fn expire(&mut self, sessions: &[SessionId]) -> Outcome {
        let (mut expired, mut released) = (0, 0);
        for id in sessions {
            let Some(session) = self.sessions.remove(id) else {
                continue;
            };
            expired += 1;
            if self.expired_set.insert(*id) {
                self.expired_order.push_back(*id);
            }
            if self.expired_order.len() > EXPIRED_SESSIONS_REMEMBERED
                && let Some(oldest) = self.expired_order.pop_front()
            {
                self.expired_set.remove(&oldest);
            }
            for token in session.grants {
                if self.release(token).is_some() {
                    released += 1;
                }
            }
        }
        Outcome::Expired {
            sessions: expired,
            grants: released,
        }
    }

    fn import(&mut self, name: &str, lines: &[FeatureLine]) -> Outcome {
        // Every node checks every line against the cluster's own trust
        // anchors, whatever the proposer checked: a forged entry changes nothing.
        if let Err((line, reason)) = self.verify(name, lines) {
            return Outcome::LicenseUnverified { line, reason };
        }
        // State time is not touched: it moves only with the active node's
        // clock (`verify` refused any line issued too far ahead of it).
        let mut candidate = self.licenses.clone();
        candidate.insert(name.to_string(), lines.to_vec());
        let evaluation = pool::evaluate(&candidate);
        if let Some(refusal) = self.shortfall(&evaluation.pools) {
            return refusal;
        }
        let (mut duplicates, mut superseded) = (0, 0);
        for ((license, _), verdict) in &evaluation.verdicts {
            if license == name {
                match verdict {
                    Verdict::Counts => {}
                    Verdict::Duplicate { .. } => duplicates += 1,
                    Verdict::Superseded { .. } => superseded += 1,
                }
            }
        }
        self.licenses = candidate;
        self.pools = evaluation.pools;
        self.remember_import(name, content_hash(lines));
        Outcome::Imported {
            name: name.to_string(),
            lines: u32::try_from(lines.len()).unwrap_or(u32::MAX),
            duplicates,
            superseded,
        }
    }

    fn remove(&mut self, name: &str) -> Outcome {
        if !self.licenses.contains_key(name) {
            return Outcome::NoSuchLicense;
        }
        let mut candidate = self.licenses.clone();
        candidate.remove(name);
        let evaluation = pool::evaluate(&candidate);
        if let Some(refusal) = self.shortfall(&evaluation.pools) {
            return refusal;
        }
        self.licenses = candidate;
        self.pools = evaluation.pools;
        Outcome::Removed {
            name: name.to_string(),
        }
    }

    /// The answer a `Checkin` of `token` by `request` would get, when
    /// applying it would change nothing but the state's memory of answers: a
    /// session the state does not hold, or a grant the session does not hold
    /// (unknown, already released, never granted). `None` when the check-in
    /// must go through the log (the grant is the session's, or the request
    /// was answered before and must get that first answer from the same
    /// place). The active node answers these without a proposal, so a flood of
    /// check-ins of made-up grants writes nothing to the log.
    pub fn checkin_answer_without_log(
        &self,
        request: RequestId,
        token: &GrantToken,
    ) -> Option<Outcome> {
        if let Some(first) = self.unheld.get(&request) {
            return Some(first.clone());
        }
        match self.sessions.get(&request.session) {
            Some(session) => {
                if let Some((_, first)) = session.recent.iter().find(|(seq, _)| *seq == request.seq)
                {
                    return Some(first.clone());
                }
                if request.seq <= session.forgotten_seq {
                    return Some(Outcome::Stale);
                }
                (!session.grants.contains(token)).then_some(Outcome::UnknownGrant)
            }
            None if self.expired_set.contains(&request.session) => Some(Outcome::SessionExpired),
            None => Some(Outcome::UnknownGrant),
        }
    }

    /// Whether the cluster has ever trusted a vendor key: once it has, the
    /// nodes' `vendor_keys` are never trusted again.
    pub fn trusted_ever(&self) -> bool {
        self.trusted_ever
    }

    /// The trusted keys, as signature checks take them.
    pub fn anchors(&self) -> Vec<VendorPublicKey> {
        trust::anchors(&self.trusted)
    }

    /// Checks `lines` of license `name` against the trust anchors and the
    /// cluster name, and that not every line has expired at state time (an
    /// expired line among valid ones is held and counts 0 seats); the first
    /// failure as (line, reason).
    fn verify(&self, name: &str, lines: &[FeatureLine]) -> Result<(), (u32, String)> {
        let Some(cluster) = &self.cluster_name else {
            return Err((
                0,
                "no node has activated yet, so the cluster name is not recorded".into(),
            ));
        };
        let anchors = self.anchors();
        for line in lines {
            signature::verify_held(name, line, cluster, &anchors)
                .map_err(|e| (line.line, e.to_string()))?;
            signature::check_binding(
                name,
                line.line,
                line.cluster_id.as_ref(),
                self.cluster_id.as_ref(),
            )
            .map_err(|e| (line.line, e.to_string()))?;
            if let Some(issued) = pool::issued_ahead(line, self.now_ms) {
                return Err((
                    line.line,
                    format!(
                        "{name}:{}: the {} line for \"{}\" is issued {issued} but the cluster's time is {}: ask the vendor for a corrected file (a line may be issued at most one day ahead)",
                        line.line,
                        line.kind.keyword(),
                        line.feature,
                        super::feature::time_text(self.now_ms)
                    ),
                ));
            }
        }
        match signature::all_expired(name, lines, self.now_ms) {
            Some(error @ signature::VerifyError::AllExpired { line, .. }) => {
                Err((line, error.to_string()))
            }
            Some(other) => Err((0, other.to_string())),
            None => Ok(()),
        }
    }

    /// Checks every held line's signature against the held anchors and
    /// cluster name, and its identity binding against the recorded identity
    /// (not expiry: lines may expire while held). A snapshot
    /// received from another node is installed only if this passes.
    pub fn verify_lines(&self) -> Result<(), String> {
        trust::verify_held_lines(
            &self.trusted,
            &self.licenses,
            self.cluster_name.as_deref(),
            self.cluster_id.as_ref(),
        )
    }

    fn remember_import(&mut self, name: &str, hash: [u8; 32]) {
        if !self.imported.contains_key(name) && self.imported.len() >= IMPORTED_NAMES_MAX {
            // Forget the name that sorts first: bounded, and the same on every replica.
            if let Some(first) = self.imported.keys().next().cloned() {
                self.imported.remove(&first);
            }
        }
        let seen = self.imported.entry(name.to_string()).or_default();
        if !seen.contains(&hash) {
            if seen.len() >= IMPORTS_REMEMBERED_PER_NAME {
                seen.pop_front();
            }
            seen.push_back(hash);
        }
    }

    /// Whether license `name` was ever imported with exactly `lines` (even
    /// if it was removed or replaced since).
    pub fn was_imported(&self, name: &str, lines: &[FeatureLine]) -> bool {
        let hash = content_hash(lines);
        self.imported
            .get(name)
            .is_some_and(|seen| seen.contains(&hash))
    }

    /// The trusted keys, by id.
    pub fn trusted_keys(&self) -> &BTreeMap<String, TrustedKey> {
        &self.trusted
    }

    /// The cluster name recorded by the first activation.
    pub fn cluster_name(&self) -> Option<&str> {
        self.cluster_name.as_deref()
    }

    /// The cluster identity recorded by the first activation that carried one.
    pub fn cluster_id(&self) -> Option<&ClusterId> {
        self.cluster_id.as_ref()
    }

    /// A refusal if `pools` would license fewer seats than are in use.
    fn shortfall(&self, pools: &BTreeMap<PoolKey, Pool>) -> Option<Outcome> {
        let empty = Pool::default();
        self.demand.iter().find_map(|((vendor, feature), demand)| {
            let pool = pools
                .get(&(vendor.clone(), feature.clone()))
                .unwrap_or(&empty);
            pool.shortfall(demand, None)
                .map(|(_, in_use, licensed)| Outcome::LicenseRefused {
                    vendor: vendor.clone(),
                    feature: feature.clone(),
                    in_use,
                    licensed,
                })
        })
    }

    /// Seats licensed for a vendor's feature: (all counted lines, unexpired
    /// counted lines at state time).
    pub fn seats_licensed(&self, vendor: &str, feature: &str) -> (u32, u32) {
        let key = (vendor.to_string(), feature.to_string());
        self.pools.get(&key).map_or((0, 0), |p| {
            (
                p.supply(&Version::any(), None),
                p.supply(&Version::any(), Some(&self.at())),
            )
        })
    }

    /// Seats of `vendor`'s `feature` a check-out for `version` or higher
    /// could take now, and the unexpired seats licensed at or above it: the
    /// `available` and `total` a check-out reports.
    pub fn seats_free(&self, vendor: &str, feature: &str, version: &str) -> (u32, u32) {
        let key = (vendor.to_string(), feature.to_string());
        let Some(pool) = self.pools.get(&key) else {
            return (0, 0);
        };
        let version = Version::parse(version);
        let no_demand = BTreeMap::new();
        let demand = self.demand.get(&key).unwrap_or(&no_demand);
        (
            pool.available(demand, &version, &self.at()),
            pool.supply(&version, Some(&self.at())),
        )
    }

    /// The grants `session` holds, oldest (lowest token) first, starting
    /// after `after` when given.
    pub fn session_grants(
        &self,
        session: SessionId,
        after: Option<GrantToken>,
    ) -> impl Iterator<Item = &Grant> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.sessions
            .get(&session)
            .into_iter()
            .flat_map(move |s| s.grants.range((start, Bound::Unbounded)))
            .filter_map(|token| self.grants.get(token))
    }

    /// The signed lines that back a grant of `vendor`'s `feature` in
    /// `version` or higher.
    pub fn backing(&self, vendor: &str, feature: &str, version: &str) -> Vec<FeatureLine> {
        self.pools
            .get(&(vendor.to_string(), feature.to_string()))
            .map(|p| {
                p.backing(&Version::parse(version))
                    .into_iter()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Which lines count and why, per `(license, line index)`.
    pub fn verdicts(&self) -> BTreeMap<(String, usize), Verdict> {
        pool::evaluate(&self.licenses).verdicts
    }

    /// State time and the voters' host ids: what decides whether a counted
    /// line grants now.
    fn at(&self) -> At<'_> {
        At {
            ms: self.now_ms,
            hosts: Some(&self.hosts),
        }
    }

    /// The host id each voter reported, as the active node last recorded it.
    pub fn hosts(&self) -> &HostReport {
        &self.hosts
    }

    /// Asserts the seat invariant: in every pool the grants fit the lines.
    /// Cheap: O(pools × versions).
    fn check_seats(&self) {
        let empty = Pool::default();
        for (key, demand) in &self.demand {
            let pool = self.pools.get(key).unwrap_or(&empty);
            if let Some((version, in_use, licensed)) = pool.shortfall(demand, None) {
                panic!(
                    "{} {}: {in_use} seats in use for version {version:?} and up but {licensed} licensed",
                    key.0, key.1
                );
            }
        }
    }

    /// Checks that every grant was made by a log entry at or before
    /// `last_index`, the last entry applied to this state (`None`: none yet).
    /// A snapshot holding a grant of a later entry would hand that entry's
    /// check-out a token already in use (and `apply` panics on that). O(grants);
    /// snapshot loading calls it with the snapshot's last applied index.
    pub fn check_applied_through(&self, last_index: Option<u64>) -> Result<(), String> {
        match self
            .grants
            .keys()
            .find(|token| last_index.is_none_or(|last| token.index > LogIndex(last)))
        {
            Some(token) => Err(format!(
                "grant {token} was made by log entry {} but the last entry applied is {}",
                token.index,
                last_index.map_or_else(|| "none".to_string(), |i| i.to_string())
            )),
            None => Ok(()),
        }
    }

    /// Asserts every invariant, including the expensive ones: the use
    /// counters equal the sum of the grants, sessions and grants agree.
    /// O(grants); tests and snapshot loading call it.
    pub fn check_invariants(&self) {
        self.check_seats();
        self.formats.check_invariants();
        self.removals.check_invariants();
        self.checkouts.check_invariants();
        // What format 7 added stays empty while the cluster writes 6: a
        // format-6 encoding (a snapshot, a digest) leaves it out.
        if self.formats.write < FORMAT_SET_ADDRESS {
            assert!(
                self.removals.is_empty()
                    && self.checkouts.by_feature().is_empty()
                    && self.formats.members.is_empty()
                    && self.formats.addresses.is_empty(),
                "the state writes format {} but holds what format {FORMAT_SET_ADDRESS} added",
                self.formats.write
            );
        }
        let mut counted: BTreeMap<PoolKey, BTreeMap<Version, u32>> = BTreeMap::new();
        for (token, grant) in &self.grants {
            assert_eq!(
                *token, grant.token,
                "grant filed under {token} names {}",
                grant.token
            );
            *counted
                .entry((grant.vendor.clone(), grant.feature.clone()))
                .or_default()
                .entry(Version::parse(&grant.version))
                .or_insert(0) += grant.count;
            let held = self
                .sessions
                .get(&grant.session)
                .is_some_and(|s| s.grants.contains(token));
            assert!(
                held,
                "grant {token} is not listed by its session {}",
                grant.session
            );
        }
        assert_eq!(
            counted, self.demand,
            "seat counters disagree with the grants"
        );
        assert_eq!(
            pool::evaluate(&self.licenses).pools,
            self.pools,
            "counted lines disagree with the licenses"
        );
        let listed: usize = self.sessions.values().map(|s| s.grants.len()).sum();
        assert_eq!(
            listed,
            self.grants.len(),
            "sessions list {listed} grants, state holds {}",
            self.grants.len()
        );
        // The same sessions, not only as many: a state whose set misses a
        // listed session lets that session start again, and the next apply
        // finds it both expired and live.
        assert!(
            self.expired_order.len() == self.expired_set.len()
                && self.expired_order.iter().collect::<BTreeSet<_>>()
                    == self.expired_set.iter().collect::<BTreeSet<_>>(),
            "expired-session list and set disagree"
        );
        assert!(
            self.unheld_order.len() == self.unheld.len()
                && self.unheld_order.iter().collect::<BTreeSet<_>>()
                    == self.unheld.keys().collect::<BTreeSet<_>>(),
            "list and map of unheld answers disagree"
        );
        assert!(self.unheld.len() <= UNHELD_ANSWERS_REMEMBERED);
        for id in &self.expired_order {
            assert!(
                !self.sessions.contains_key(id),
                "session {id} is both expired and live"
            );
        }
    }

    /// A digest of the whole state: SHA-256, in lowercase hex, of its
    /// canonical encoding ([`crate::codec`], the encoding snapshots use).
    /// Deterministic: every collection in the state is ordered (`BTreeMap`,
    /// `BTreeSet`, `VecDeque` kept in apply order), so equal states encode,
    /// and digest, equally on every node. O(state size); nodes compute it
    /// only when asked (`NodeInfo` with `with_state_digest`).
    pub fn digest(&self) -> Result<String, crate::codec::CodecError> {
        use sha2::{Digest, Sha256};
        // In the cluster's write format, so that nodes of two releases
        // holding the same state agree during a rolling upgrade.
        let bytes = crate::codec::encode_as(self.formats.write, self)?;
        let hash = Sha256::digest(&bytes);
        Ok(hash.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// State time (ms since the epoch): the highest `now_ms` applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Live grants, by token.
    pub fn grants(&self) -> &BTreeMap<GrantToken, Grant> {
        &self.grants
    }

    /// A live grant.
    pub fn grant(&self, token: &GrantToken) -> Option<&Grant> {
        self.grants.get(token)
    }

    /// Whether a session was expired (and is remembered as such).
    pub fn is_expired(&self, session: SessionId) -> bool {
        self.expired_set.contains(&session)
    }

    /// Known sessions, by id.
    pub fn sessions(&self) -> &BTreeMap<SessionId, Session> {
        &self.sessions
    }

    /// Imported licenses by name.
    pub fn licenses(&self) -> &BTreeMap<String, Vec<FeatureLine>> {
        &self.licenses
    }

    /// Seats in use for a vendor's feature.
    pub fn in_use(&self, vendor: &str, feature: &str) -> u32 {
        self.demand
            .get(&(vendor.to_string(), feature.to_string()))
            .map_or(0, |d| d.values().fold(0u32, |s, n| s.saturating_add(*n)))
    }

    /// The last activation, if any node has become active.
    pub fn activation(&self) -> Option<Activation> {
        self.activation
    }

    /// How many activations have been applied.
    pub fn activations(&self) -> u64 {
        self.activations
    }

    /// The most recent administrators' actions, oldest first.
    pub fn retired_nodes(&self) -> &BTreeSet<u64> {
        &self.retired_nodes
    }

    /// The format the cluster writes, what each member reads, and members'
    /// moved addresses.
    pub fn formats(&self) -> &ClusterFormats {
        &self.formats
    }

    /// Puts `formats` in place: a restore starts the new cluster's record
    /// afresh (its members are the config's) but keeps the write format.
    pub fn reset_formats(&mut self) {
        self.formats = ClusterFormats {
            write: self.formats.write,
            ..ClusterFormats::default()
        };
    }

    /// The last administrators' actions, oldest first.
    pub fn admin_actions(&self) -> &VecDeque<AdminAction> {
        &self.admin_actions
    }

    /// One summary per licensed vendor's feature, by (vendor, feature).
    pub fn features(&self) -> Vec<FeatureSummary> {
        self.pools
            .iter()
            .map(|((vendor, feature), pool)| {
                let version = pool
                    .lines
                    .iter()
                    .max_by(|a, b| a.version.cmp(&b.version))
                    .map(|l| l.version_text.clone())
                    .unwrap_or_default();
                let expiry = pool
                    .lines
                    .iter()
                    .map(|l| l.expiry)
                    .reduce(later_expiry)
                    .unwrap_or(Expiry::Permanent);
                // (expired, unlisted, permanent, date) orders valid dates
                // first, then permanent, then lines bound to hosts the
                // voters do not report, then expired dates.
                let mut groups: BTreeMap<(bool, bool, bool, Expiry), u32> = BTreeMap::new();
                for line in &pool.lines {
                    let expired = !line.expiry.is_valid_at(self.now_ms);
                    let unlisted = !self.hosts.admits(&line.signed.host_ids);
                    let permanent = line.expiry == Expiry::Permanent;
                    let seats = groups
                        .entry((expired, unlisted, permanent, line.expiry))
                        .or_default();
                    *seats = seats.saturating_add(line.seats);
                }
                let by_expiry = groups
                    .into_iter()
                    .map(
                        |((expired, hosts_unlisted, _, expiry), seats)| ExpirySeats {
                            expiry,
                            seats,
                            expired,
                            hosts_unlisted,
                        },
                    )
                    .collect();
                FeatureSummary {
                    feature: feature.clone(),
                    vendor: vendor.clone(),
                    version,
                    licensed: pool.supply(&Version::any(), None),
                    unexpired: pool.supply(&Version::any(), Some(&self.at())),
                    in_use: self.in_use(vendor, feature),
                    expiry,
                    by_expiry,
                }
            })
            .collect()
    }
}

impl Session {
    /// How many recent outcomes this session remembers.
    pub fn remembered(&self) -> usize {
        self.recent.len()
    }
}

fn later_expiry(a: Expiry, b: Expiry) -> Expiry {
    match (a, b) {
        (Expiry::Permanent, _) | (_, Expiry::Permanent) => Expiry::Permanent,
        (Expiry::On(x), Expiry::On(y)) => Expiry::On(x.max(y)),
    }
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use super::*;

    fn refusal(state: &LicenseState) -> Option<String> {
        std::panic::catch_unwind(|| state.check_invariants())
            .err()
            .map(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            })
    }

    // Found by the `snapshot` fuzz target (fuzz/README.md): a snapshot whose
    // expired-session list and set held as many sessions but not the same
    // ones passed check_invariants; a check-out from the listed session then
    // made it live, and the check after that apply panicked ("session 0 is
    // both expired and live"). Such a snapshot is now refused when loaded.
    #[test]
    fn expired_list_and_set_must_hold_the_same_sessions() {
        let mut state = LicenseState::new();
        state.expired_order.push_back(SessionId(0));
        state.expired_set.insert(SessionId(5));
        let message = refusal(&state).expect("the state is refused");
        assert!(
            message.contains("expired-session list and set disagree"),
            "{message}"
        );

        // A listed session twice, with one the list misses, is refused too.
        state.expired_order.push_back(SessionId(0));
        state.expired_set.insert(SessionId(0));
        assert!(refusal(&state).is_some());

        state.expired_order.pop_back();
        state.expired_set.remove(&SessionId(5));
        assert_eq!(refusal(&state), None);
    }

    // Found by the `snapshot` fuzz target (fuzz/README.md): a snapshot whose
    // state held grant 1.3.0 while its last applied entry was 1.2 passed every
    // check; the check-out of the next entry (1.3, slot 0) then got the same
    // token and apply panicked ("grant token 1.3.0 issued twice"), poisoning
    // the state machine. Snapshot loading now refuses such a state.
    #[test]
    fn grants_from_entries_not_applied_are_refused() {
        let key = signature::VendorSigningKey::from_seed(None, [7; 32]);
        let mut line = FeatureLine {
            kind: crate::license::feature::LineKind::Feature,
            feature: "cad".into(),
            vendor: "acme".into(),
            version: "2.0".into(),
            expiry: Expiry::Permanent,
            seats: 5,
            attributes: Vec::new(),
            cluster_id: None,
            host_ids: Vec::new(),
            signature: String::new(),
            line: 1,
        };
        signature::sign_held(&key, "LICSRV", &mut line);
        let checkout = |session: u128| Command::Checkout {
            request: RequestId {
                session: SessionId(session),
                seq: 1,
            },
            vendor: "acme".into(),
            feature: "cad".into(),
            version: String::new(),
            count: 1,
            user: "ada".into(),
            host: "ws1".into(),
        };
        let mut state = LicenseState::new();
        let setup = Batch {
            now_ms: 1_000,
            commands: vec![
                Command::Activate {
                    term: Term(1),
                    node: NodeId(1),
                    cluster_name: "LICSRV".into(),
                    cluster_id: None,
                    lease_ms: 250,
                    wait_ms: 350,
                },
                Command::TrustKey {
                    vendor: None,
                    key: key.public_key().to_bytes(),
                    author: "CN=test".into(),
                },
                Command::ImportLicense {
                    name: "site.lic".into(),
                    lines: vec![line],
                    author: "CN=test".into(),
                },
            ],
        };
        state.apply_batch(
            LogPosition {
                term: Term(1),
                index: LogIndex(1),
            },
            &setup,
        );
        let next = |session| Batch {
            now_ms: 2_000,
            commands: vec![checkout(session)],
        };
        let outcomes = state.apply_batch(
            LogPosition {
                term: Term(1),
                index: LogIndex(3),
            },
            &next(1),
        );
        assert!(
            matches!(outcomes[..], [Outcome::Granted { .. }]),
            "{outcomes:?}"
        );
        state.check_invariants();

        assert_eq!(state.check_applied_through(Some(3)), Ok(()));
        assert_eq!(
            state.check_applied_through(Some(2)),
            Err("grant 1.3.0 was made by log entry 3 but the last entry applied is 2".into())
        );
        assert!(state.check_applied_through(None).is_err());
        // What the refusal prevents: entry 1.3 applied again to that state.
        let mut replayed = state.clone();
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            replayed.apply_batch(
                LogPosition {
                    term: Term(1),
                    index: LogIndex(3),
                },
                &next(2),
            )
        }));
        assert!(panicked.is_err());
    }

    // Replicas are compared by digest: equal states digest equally, and any
    // applied change (here one more activation) changes the digest.
    #[test]
    fn digest_is_deterministic_and_sees_every_change() {
        let activate = |term| Batch {
            now_ms: 1_000,
            commands: vec![Command::Activate {
                term: Term(term),
                node: NodeId(1),
                cluster_name: "LICSRV".into(),
                cluster_id: None,
                lease_ms: 250,
                wait_ms: 350,
            }],
        };
        let mut a = LicenseState::new();
        let mut b = LicenseState::new();
        assert_eq!(a.digest().unwrap(), b.digest().unwrap());
        a.apply_batch(
            LogPosition {
                term: Term(1),
                index: LogIndex(1),
            },
            &activate(1),
        );
        b.apply_batch(
            LogPosition {
                term: Term(1),
                index: LogIndex(1),
            },
            &activate(1),
        );
        let digest = a.digest().unwrap();
        assert_eq!(digest.len(), 64);
        assert!(digest.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(digest, b.digest().unwrap());
        assert_eq!(digest, a.clone().digest().unwrap());
        b.apply_batch(
            LogPosition {
                term: Term(2),
                index: LogIndex(2),
            },
            &activate(2),
        );
        assert_ne!(digest, b.digest().unwrap());
    }

    // The same check for the answers kept for requests of unheld sessions.
    #[test]
    fn unheld_list_and_map_must_hold_the_same_requests() {
        let request = |seq| RequestId {
            session: SessionId(1),
            seq,
        };
        let mut state = LicenseState::new();
        state.unheld_order.push_back(request(1));
        state.unheld.insert(request(2), Outcome::UnknownGrant);
        let message = refusal(&state).expect("the state is refused");
        assert!(message.contains("unheld answers disagree"), "{message}");

        state.unheld.clear();
        state.unheld.insert(request(1), Outcome::UnknownGrant);
        assert_eq!(refusal(&state), None);
    }
}
