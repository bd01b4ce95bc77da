//! The client-facing license service: Checkout, Renew, Checkin, Status,
//! SessionGrants.
//!
//! Check-outs and check-ins are committed through Raft (via the batcher)
//! before the reply. Renewals touch the in-memory session tracker only.
//! Status and SessionGrants are linearizable reads: the node confirms with a
//! quorum that it still leads, waits until its state machine has applied up
//! to that point, then reads. Every reply carries the term it was answered in.
//!
//! A check-out that would start a new session from a source address that
//! already has `limits.sessions_per_address_max` live sessions is refused
//! before anything is proposed (see [`crate::server::sessions`]).

use std::net::IpAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::license::ids::Term;
use crate::license::secret::{SESSION_SECRET_BYTES, SessionSecret};
use crate::license::state::{self, Command, DenyReason, Outcome, RequestId, SessionId};
use crate::proto::v1 as pb;
use crate::proto::v1::license_server::License;
use crate::raft::log_store::ENTRY_HASHES_MAX;
use crate::server::sessions::{Refusal, Renewing};
use crate::server::{ServiceError, Shared};
use crate::wire::{token_from_pb, token_to_pb};

/// Longest feature, user or host name accepted, in bytes.
pub const NAME_BYTES_MAX: usize = 255;
/// A peer that answered a Raft RPC this recently is reported reachable.
pub const REACHABLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);
/// Most grant tokens one renewal may quote.
pub const RENEW_TOKENS_MAX: usize = 4096;
/// Most of a session's grants one SessionGrants reply looks at (matching the
/// request's feature or not); the rest come page by page. A session holds at
/// most [`GRANTS_MAX`](state::GRANTS_MAX) grants (the state's limit; there is
/// no per-session one), so a client pages at most
/// `GRANTS_MAX / SESSION_GRANTS_PAGE_MAX` (977) times. One reply holds at most
/// this many grants of five names of at most [`NAME_BYTES_MAX`] bytes each,
/// about 1.4 MB, within a client's default 4 MiB message limit.
pub const SESSION_GRANTS_PAGE_MAX: usize = 1024;
/// Most grants one Status reply lists (about 75 bytes each: well under the
/// clients' 4 MiB reply limit); the rest come in further pages.
pub const STATUS_GRANTS_PAGE_MAX: usize = 10_000;
/// Largest license-service request accepted, in bytes (a renewal quoting
/// [`RENEW_TOKENS_MAX`] tokens fits with room to spare).
pub const CLIENT_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// State digests (`NodeInfo` with `with_state_digest`) a node computes at
/// once: encoding and hashing the whole state is the costliest read there
/// is, so administrators' digests queue behind one another instead of
/// sharing the cores with the requests the node serves.
pub const DIGESTS_IN_FLIGHT_MAX: usize = 1;
static DIGESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DIGESTS_IN_FLIGHT_MAX);

/// The license service of one node.
pub struct LicenseService {
    shared: Arc<Shared>,
}

impl LicenseService {
    /// A service over the node's shared parts.
    pub fn new(shared: Arc<Shared>) -> LicenseService {
        LicenseService { shared }
    }
}

/// A held line as the wire carries it to the application.
pub fn signed_line_to_pb(line: &crate::license::FeatureLine) -> pb::SignedLine {
    pb::SignedLine {
        keyword: line.kind.keyword().to_string(),
        feature: line.feature.clone(),
        vendor: line.vendor.clone(),
        version: line.version.clone(),
        expiry: line.expiry.to_string(),
        seats: line.seats,
        attributes: line
            .attributes
            .iter()
            .map(|(key, value)| pb::Attribute {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        signature: line.signature.clone(),
        cluster_id: line.cluster_id.map(|id| id.to_string()).unwrap_or_default(),
        host_ids: line.host_ids.iter().map(|id| id.to_string()).collect(),
    }
}

/// The session a request's secret names (its handle).
fn session_of(secret: &[u8]) -> Result<SessionId, ServiceError> {
    SessionSecret::from_bytes(secret)
        .map(|s| s.handle())
        .ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "the session secret must be {SESSION_SECRET_BYTES} bytes, not {}",
                secret.len()
            ))
        })
}

fn request_id(request: Option<pb::RequestId>) -> Result<RequestId, ServiceError> {
    let request =
        request.ok_or_else(|| ServiceError::InvalidArgument("request id is missing".into()))?;
    if request.seq == 0 {
        return Err(ServiceError::InvalidArgument(
            "request sequence numbers start at 1".into(),
        ));
    }
    Ok(RequestId {
        session: session_of(&request.session_secret)?,
        seq: request.seq,
    })
}

fn check_name(what: &str, value: &str, required: bool) -> Result<(), ServiceError> {
    if required && value.is_empty() {
        return Err(ServiceError::InvalidArgument(format!("{what} is empty")));
    }
    if value.len() > NAME_BYTES_MAX {
        return Err(ServiceError::InvalidArgument(format!(
            "{what} is longer than {NAME_BYTES_MAX} bytes"
        )));
    }
    super::error::check_text(what, value)
}

fn deny_reason(reason: &DenyReason) -> pb::DenyReason {
    match reason {
        DenyReason::NoSuchFeature => pb::DenyReason::NoSuchFeature,
        DenyReason::VersionNotLicensed => pb::DenyReason::VersionNotLicensed,
        DenyReason::Expired => pb::DenyReason::Expired,
        DenyReason::ExceedsLicensed => pb::DenyReason::ExceedsLicensed,
        DenyReason::InUse => pb::DenyReason::InUse,
        DenyReason::BadCount => pb::DenyReason::BadCount,
        DenyReason::CapacityReached => pb::DenyReason::CapacityReached,
        DenyReason::HostsNotListed => pb::DenyReason::HostsNotListed,
    }
}

/// One plain sentence for a denied check-out.
pub fn denial_message(
    vendor: &str,
    feature: &str,
    version: &str,
    count: u32,
    reason: &DenyReason,
    available: u32,
    total: u32,
) -> String {
    match reason {
        DenyReason::NoSuchFeature => {
            format!("no license for feature \"{feature}\" of vendor {vendor}")
        }
        DenyReason::VersionNotLicensed => format!(
            "feature \"{feature}\" of vendor {vendor} is not licensed in version {version} or higher"
        ),
        DenyReason::Expired => format!("every license for feature \"{feature}\" has expired"),
        DenyReason::ExceedsLicensed => {
            format!("{count} seats of \"{feature}\" asked for, but only {total} are licensed")
        }
        DenyReason::InUse => {
            format!("{count} seats of \"{feature}\" asked for, {available} of {total} are free")
        }
        DenyReason::BadCount => format!(
            "{count} is not a seat count: ask for 1 to {}",
            state::CHECKOUT_SEATS_MAX
        ),
        DenyReason::CapacityReached => reason.to_string(),
        DenyReason::HostsNotListed => format!(
            "the licenses for feature \"{feature}\" are bound to host ids that fewer than a majority of the cluster's nodes report (raftlm status shows each node's host id)"
        ),
    }
}

impl LicenseService {
    async fn checkout(
        &self,
        request: pb::CheckoutRequest,
        peer: Option<IpAddr>,
    ) -> Result<pb::CheckoutReply, ServiceError> {
        let id = request_id(request.request)?;
        check_name("vendor", &request.vendor, true)?;
        check_name("feature", &request.feature, true)?;
        check_name("version", &request.version, false)?;
        check_name("user", &request.user, false)?;
        check_name("host", &request.host, false)?;
        let term = self.shared.serving()?;
        // A check-out of a feature the cluster does not license at all can never
        // succeed (and never did, so no retry can be owed a grant): answered
        // without touching the log.
        let (licensed, held) = self.shared.state.read(|s| {
            (
                s.seats_licensed(&request.vendor, &request.feature).0 > 0,
                s.sessions().contains_key(&id.session),
            )
        });
        if !licensed {
            let term = self.shared.confirm(term)?;
            return Ok(pb::CheckoutReply {
                term,
                // Nothing was applied for it: the index this answer was read at.
                applied_index: self.shared.state.last_applied().map_or(0, |l| l.index),
                count: request.count,
                reason: pb::DenyReason::NoSuchFeature as i32,
                message: denial_message(
                    &request.vendor,
                    &request.feature,
                    &request.version,
                    request.count,
                    &DenyReason::NoSuchFeature,
                    0,
                    0,
                ),
                ..Default::default()
            });
        }
        // A request that would start a new session from an address that has
        // its share already is refused here, before anything is proposed.
        let max = self.shared.config.limits.sessions_per_address_max;
        let admitted = self
            .shared
            .sessions
            .admit(Term(term), id.session, peer, !held, max);
        if admitted == Err(Refusal::Doomed) {
            return Err(ServiceError::Expiring(id.session.to_string()));
        }
        if let Err(Refusal::Limit(sessions)) = admitted {
            let address = peer.map_or_else(String::new, |a| a.to_string());
            return Err(ServiceError::LimitReached {
                limit: "limits.sessions_per_address_max",
                message: format!(
                    "{address} has {sessions} live sessions already, the most one address may \
                     have (limits.sessions_per_address_max = {max}): close sessions there, or \
                     raise the limit"
                ),
            });
        }
        // A session the state does not hold pays for its check-out when it is
        // denied (its answer is written to the log and no session counts it):
        // a token is taken now and given back if the check-out creates the
        // session.
        if !held && !self.shared.unheld_writes.take(peer) {
            self.shared.sessions.forget(Term(term), id.session);
            let address = peer.map_or_else(String::new, |a| a.to_string());
            let per_s = self.shared.unheld_writes.per_s();
            return Err(ServiceError::LimitReached {
                limit: "limits.unheld_writes_per_address_per_s",
                message: format!(
                    "{address} sent more check-outs from sessions that hold no seats than \
                     limits.unheld_writes_per_address_per_s = {per_s} a second allows (they \
                     were denied, and each denial is written to the log): retry later, or \
                     raise the limit"
                ),
            });
        }
        let command = Command::Checkout {
            request: id,
            vendor: request.vendor.clone(),
            feature: request.feature.clone(),
            version: request.version.clone(),
            count: request.count,
            user: request.user,
            host: request.host,
        };
        let proposed = self.shared.propose(command).await;
        if !held {
            if self
                .shared
                .state
                .read(|s| s.sessions().contains_key(&id.session))
            {
                // Recorded again: a sweep while the request was in flight
                // forgets a session the state did not hold yet. (Its outcome
                // is the state's; a doomed mark cannot change it now.)
                let _ = self.shared.sessions.touch(Term(term), id.session, peer);
                self.shared.unheld_writes.give_back(peer);
            } else {
                // Denied (or not applied): no session was created, so the
                // place it took in its address's count is free again.
                self.shared.sessions.forget(Term(term), id.session);
            }
        }
        let (outcome, log_id) = proposed?;
        let term = self.shared.confirm(log_id.leader_id.term)?;
        let mut reply = pb::CheckoutReply {
            term,
            count: request.count,
            // The entry that carried this request (a retry's own entry, where
            // the retry table answered it): applied before this reply.
            applied_index: log_id.index,
            ..Default::default()
        };
        match outcome {
            Outcome::Granted {
                token,
                count,
                available,
                total,
                ..
            } => {
                reply.granted = true;
                reply.token = Some(token_to_pb(token));
                let (lines, cluster) = self.shared.state.read(|s| {
                    (
                        s.backing(&request.vendor, &request.feature, &request.version),
                        s.cluster_name().unwrap_or_default().to_string(),
                    )
                });
                reply.lines = lines.iter().map(signed_line_to_pb).collect();
                reply.cluster_name = cluster;
                reply.count = count;
                reply.available = available;
                reply.total = total;
            }
            Outcome::Denied {
                reason,
                available,
                total,
            } => {
                reply.reason = deny_reason(&reason) as i32;
                reply.available = available;
                reply.total = total;
                reply.message = denial_message(
                    &request.vendor,
                    &request.feature,
                    &request.version,
                    request.count,
                    &reason,
                    available,
                    total,
                );
            }
            Outcome::Stale => {
                reply.reason = pb::DenyReason::StaleRequest as i32;
                reply.message = "the request is older than the session's retry window".into();
            }
            Outcome::SessionExpired => {
                reply.reason = pb::DenyReason::SessionExpired as i32;
                reply.message =
                    "the session was expired after it stopped heartbeating; start a new session"
                        .into();
            }
            other => {
                return Err(ServiceError::Unknown(format!(
                    "unexpected outcome for a check-out: {other:?}"
                )));
            }
        }
        Ok(reply)
    }

    fn renew(
        &self,
        request: pb::RenewRequest,
        peer: Option<IpAddr>,
    ) -> Result<pb::RenewReply, ServiceError> {
        if request.tokens.len() > RENEW_TOKENS_MAX {
            return Err(ServiceError::InvalidArgument(format!(
                "a renewal may quote at most {RENEW_TOKENS_MAX} grants"
            )));
        }
        let session = session_of(&request.session_secret)?;
        let term = self.shared.serving()?;
        if request.cached_for_ms > 0 {
            tracing::info!(
                %session,
                cached_for_ms = request.cached_for_ms,
                cached_since_ms = request.cached_since_ms,
                grants = request.tokens.len(),
                "session reconnected after running in caching mode"
            );
        }
        // Touched before the state is read, so the sweeper cannot choose the
        // session in between (`SessionTracker::renewing`).
        let renewing = self.shared.sessions.renewing(Term(term), session, peer);
        if renewing == Renewing::Doomed {
            return Err(ServiceError::Expiring(session.to_string()));
        }
        let (unknown, removed, session_expired, held) = self.shared.state.read(|state| {
            let unknown: Vec<pb::GrantToken> = request
                .tokens
                .iter()
                .filter(|t| {
                    state
                        .grant(&token_from_pb(t))
                        .is_none_or(|g| g.session != session)
                })
                .cloned()
                .collect();
            let removed = unknown
                .iter()
                .filter_map(|t| {
                    let removal = state.removal(&token_from_pb(t), session)?;
                    Some(pb::GrantRemoval {
                        token: Some(*t),
                        author: removal.author.clone(),
                        at_ms: removal.at_ms,
                    })
                })
                .collect();
            let held = state.sessions().contains_key(&session);
            (unknown, removed, state.is_expired(session), held)
        });
        // Only a session the state holds is tracked: a renewal cannot make up
        // sessions that count against its address.
        if held && renewing == Renewing::Untracked {
            // Not tracked a moment ago, so the sweeper had not chosen it: the
            // sweeper starts the TTL of a session it has not seen afresh.
            let _ = self.shared.sessions.touch(Term(term), session, peer);
        }
        // Checked again after the read: a reply must not outlive this node's lease.
        let term = self.shared.confirm(term)?;
        Ok(pb::RenewReply {
            term,
            unknown,
            session_ttl_ms: self.shared.config.timing.session_ttl_ms,
            session_expired,
            removed,
        })
    }

    async fn checkin(
        &self,
        request: pb::CheckinRequest,
        peer: Option<IpAddr>,
    ) -> Result<pb::CheckinReply, ServiceError> {
        let id = request_id(request.request)?;
        let token = request
            .token
            .ok_or_else(|| ServiceError::InvalidArgument("grant token is missing".into()))?;
        let token = token_from_pb(&token);
        let term = self.shared.serving()?;
        // Another session's grant is refused before anything is proposed: the
        // victim's grants and retry window stay as they are. (Tokens are never
        // reused, so a grant that belongs to another session always will.)
        let (foreign, held) = self.shared.state.read(|state| {
            (
                state.grant(&token).is_some_and(|g| g.session != id.session),
                state.sessions().contains_key(&id.session),
            )
        });
        if foreign {
            return Err(ServiceError::PermissionDenied(format!(
                "grant {token} belongs to another session"
            )));
        }
        // A check-in creates no session: only one the state holds is tracked.
        if held
            && self
                .shared
                .sessions
                .touch(Term(term), id.session, peer)
                .is_err()
        {
            return Err(ServiceError::Expiring(id.session.to_string()));
        }
        // A check-in that would change nothing (a grant the session does not
        // hold, a session the state does not hold, an answer already given)
        // is answered from the state, without a proposal: made-up check-ins
        // cost no log write. This node serves under its lease and its state
        // holds every entry it acknowledged, so the answer is the one the log
        // would give now.
        let known = self.shared.state.read_applied(|applied, state| {
            state
                .checkin_answer_without_log(id, &token)
                .map(|outcome| (outcome, applied.map_or(0, |l| l.index)))
        });
        if let Some((outcome, applied_index)) = known {
            let term = self.shared.confirm(term)?;
            let mut reply = pb::CheckinReply {
                term,
                applied_index,
                ..Default::default()
            };
            if let Outcome::CheckedIn { feature, count } = outcome {
                reply.released = true;
                reply.feature = feature;
                reply.count = count;
            }
            return Ok(reply);
        }
        let command = Command::Checkin { request: id, token };
        let (outcome, log_id) = self.shared.propose(command).await?;
        let term = self.shared.confirm(log_id.leader_id.term)?;
        let mut reply = pb::CheckinReply {
            term,
            applied_index: log_id.index,
            ..Default::default()
        };
        if let Outcome::CheckedIn { feature, count } = outcome {
            reply.released = true;
            reply.feature = feature;
            reply.count = count;
        }
        Ok(reply)
    }

    async fn status(&self, request: pb::StatusRequest) -> Result<pb::StatusReply, ServiceError> {
        check_name("vendor", &request.vendor, false)?;
        check_name("feature", &request.feature, false)?;
        let term = self.shared.serving()?;
        self.linearizable().await?;
        let reply = status_reply(&self.shared, term, &request);
        self.shared.confirm(term)?;
        Ok(reply)
    }

    /// Confirms with a quorum that this node still leads and waits until its
    /// state machine has applied everything committed before: a read after
    /// it sees every write acknowledged before the request.
    async fn linearizable(&self) -> Result<(), ServiceError> {
        self.shared
            .raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::NotActive {
                node: self.shared.node_id,
                leader: leader_of(&e).map(|(id, address)| {
                    let moved = self.shared.moved_address(id);
                    (id, moved.map_or(address, |m| m.address))
                }),
            })
    }

    /// The grants the session of the request's secret holds (only its holder
    /// knows the secret), at most [`SESSION_GRANTS_PAGE_MAX`] looked at per
    /// reply. A read: nothing is proposed.
    async fn session_grants(
        &self,
        request: pb::SessionGrantsRequest,
    ) -> Result<pb::SessionGrantsReply, ServiceError> {
        let session = session_of(&request.session_secret)?;
        check_name("vendor", &request.vendor, false)?;
        check_name("feature", &request.feature, false)?;
        check_name("version", &request.version, false)?;
        if request.feature.is_empty() && !(request.vendor.is_empty() && request.version.is_empty())
        {
            return Err(ServiceError::InvalidArgument(
                "a vendor or version needs a feature to go with it".into(),
            ));
        }
        if !request.feature.is_empty() && request.vendor.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "a feature needs its vendor".into(),
            ));
        }
        let after = request.after.as_ref().map(token_from_pb);
        let term = self.shared.serving()?;
        self.linearizable().await?;
        let mut reply = self.shared.state.read(|state| {
            let mut reply = pb::SessionGrantsReply {
                session_expired: state.is_expired(session),
                ..Default::default()
            };
            let mut looked_at = state.session_grants(session, after);
            for grant in looked_at.by_ref().take(SESSION_GRANTS_PAGE_MAX) {
                reply.next = Some(token_to_pb(grant.token));
                let wanted = request.feature.is_empty()
                    || (grant.vendor == request.vendor
                        && grant.feature == request.feature
                        && grant.version == request.version);
                if wanted {
                    reply.grants.push(grant_status(grant));
                }
            }
            if looked_at.next().is_none() {
                reply.next = None;
            }
            if !request.feature.is_empty() {
                let backing = state.backing(&request.vendor, &request.feature, &request.version);
                reply.lines = backing.iter().map(signed_line_to_pb).collect();
                reply.cluster_name = state.cluster_name().unwrap_or_default().to_string();
                (reply.available, reply.total) =
                    state.seats_free(&request.vendor, &request.feature, &request.version);
            }
            reply
        });
        reply.term = self.shared.confirm(term)?;
        Ok(reply)
    }
}

/// A grant as status outputs show it.
fn grant_status(g: &state::Grant) -> pb::GrantStatus {
    pb::GrantStatus {
        token: Some(token_to_pb(g.token)),
        feature: g.feature.clone(),
        count: g.count,
        session_handle: g.session.public(),
        vendor: g.vendor.clone(),
        version: g.version.clone(),
        user: g.user.clone(),
        host: g.host.clone(),
        since_ms: g.since_ms,
    }
}

fn leader_of(
    error: &openraft::error::RaftError<
        u64,
        openraft::error::CheckIsLeaderError<u64, crate::raft::Member>,
    >,
) -> Option<(u64, String)> {
    match error {
        openraft::error::RaftError::APIError(
            openraft::error::CheckIsLeaderError::ForwardToLeader(f),
        ) => f
            .leader_id
            .zip(f.leader_node.as_ref().map(|n| n.address.clone())),
        _ => None,
    }
}

/// One page of the grants of `asked`'s vendor and feature: the grants after
/// `asked.grants_after`, at most `asked.grants_max` (and never more than
/// [`STATUS_GRANTS_PAGE_MAX`]), the token to ask the next page after, and how
/// many match in all.
fn grants_page(
    state: &state::LicenseState,
    asked: &pb::StatusRequest,
    wanted: impl Fn(&str, &str) -> bool,
) -> (Vec<pb::GrantStatus>, Option<pb::GrantToken>, u64) {
    use std::ops::Bound;
    let limit = match asked.grants_max as usize {
        0 => STATUS_GRANTS_PAGE_MAX,
        n => n.min(STATUS_GRANTS_PAGE_MAX),
    };
    let matching = |g: &&state::Grant| wanted(&g.vendor, &g.feature);
    let total = if asked.vendor.is_empty() && asked.feature.is_empty() {
        state.grants().len() as u64
    } else {
        state.grants().values().filter(matching).count() as u64
    };
    let from = match &asked.grants_after {
        Some(after) => Bound::Excluded(token_from_pb(after)),
        None => Bound::Unbounded,
    };
    let mut page: Vec<pb::GrantStatus> = state
        .grants()
        .range((from, Bound::Unbounded))
        .map(|(_, g)| g)
        .filter(matching)
        .take(limit + 1)
        .map(grant_status)
        .collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().and_then(|g| g.token)
    });
    (page, next.flatten(), total)
}

/// Every imported line with whether it counts and why not (a line that has
/// expired at state time, or is bound to host ids a majority of the voters
/// do not report, counts 0 seats).
fn license_lines(state: &state::LicenseState) -> Vec<pb::LicenseLine> {
    let verdicts = state.verdicts();
    let now_ms = state.now_ms();
    let hosts = state.hosts();
    state
        .licenses()
        .iter()
        .flat_map(|(name, lines)| {
            let verdicts = &verdicts;
            lines.iter().enumerate().map(move |(i, line)| {
                let verdict = verdicts.get(&(name.clone(), i));
                let expired = !line.expiry.is_valid_at(now_ms);
                let unlisted = !hosts.admits(&line.host_ids);
                let counts = !expired
                    && !unlisted
                    && matches!(verdict, Some(crate::license::pool::Verdict::Counts));
                pb::LicenseLine {
                    license: name.clone(),
                    line: line.line,
                    keyword: line.kind.keyword().to_string(),
                    vendor: line.vendor.clone(),
                    feature: line.feature.clone(),
                    version: line.version.clone(),
                    seats: line.seats,
                    expiry: line.expiry.to_string(),
                    counts,
                    cluster_id: line.cluster_id.map(|id| id.to_string()).unwrap_or_default(),
                    host_ids: line.host_ids.iter().map(|id| id.to_string()).collect(),
                    hosts_listed: u32::try_from(hosts.listed(&line.host_ids)).unwrap_or(u32::MAX),
                    voters: u32::try_from(hosts.voters.len()).unwrap_or(u32::MAX),
                    reason: if counts {
                        String::new()
                    } else if expired {
                        format!("expired on {}: imported, counts 0 seats", line.expiry)
                    } else if unlisted {
                        format!(
                            "bound to host ids and {}, not a majority: counts 0 seats",
                            hosts.describe(&line.host_ids)
                        )
                    } else {
                        verdict.map(|v| v.to_string()).unwrap_or_default()
                    },
                }
            })
        })
        .collect()
}

/// Builds the status reply from the local state and Raft metrics.
pub fn status_reply(shared: &Shared, term: u64, asked: &pb::StatusRequest) -> pb::StatusReply {
    let metrics = shared.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let clocks = shared.clock.judge();
    let hosts = shared.state.read(|state| state.hosts().clone());
    // A node's host id as the cluster records it, or, before any line bound
    // to host ids made the active node record them, as this node hears it.
    let heard = crate::server::hosts::view(shared);
    // What each member says it reads (as the active node hears it).
    let formats = crate::server::formats::view(shared);
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    // A pending change of the voters: both halves of the joint configuration.
    let joint = membership.get_joint_config();
    let half = |i: usize| -> Vec<u64> {
        match joint.get(i) {
            Some(ids) if joint.len() > 1 => ids.iter().copied().collect(),
            _ => Vec::new(),
        }
    };
    let (voters_old, voters_new) = (half(0), half(1));
    let last_index = metrics.last_log_index.unwrap_or(0);
    // What the active node knows of each member's log (its own: all of it).
    let matched = |id: u64| -> Option<u64> {
        if id == shared.node_id {
            return metrics.last_log_index;
        }
        metrics
            .replication
            .as_ref()?
            .get(&id)?
            .as_ref()
            .map(|l| l.index)
    };
    let nodes = membership
        .nodes()
        .map(|(id, node)| {
            let (clock_offset_ms, clock_known, clock_off) = match clocks.peers.get(id) {
                Some(crate::clock::PeerClock::Agrees(offset)) => (*offset, true, false),
                Some(crate::clock::PeerClock::Off(offset)) => (*offset, true, true),
                _ => (0, false, false),
            };
            let role = if Some(*id) == metrics.current_leader {
                "active"
            } else {
                // A peer counts as reachable if it answered a Raft RPC within the last second
                // (the active node sends heartbeats every heartbeat_ms).
                let reachable = shared
                    .network
                    .last_contact(*id)
                    .is_some_and(|at| at.elapsed() < REACHABLE_WITHIN);
                if reachable { "standby" } else { "unreachable" }
            };
            let said = formats.get(id).cloned().flatten();
            pb::NodeStatus {
                id: *id,
                name: shared
                    .config
                    .nodes
                    .iter()
                    .find(|n| n.id == *id)
                    .and_then(|n| n.name.clone())
                    .unwrap_or_default(),
                address: shared.client_address(*id, node),
                version: said.as_ref().map(|a| a.version.clone()).unwrap_or_default(),
                reads_formats_min: said.as_ref().map_or(0, |a| u32::from(a.reads_min)),
                reads_formats_max: said.as_ref().map_or(0, |a| u32::from(a.reads_max)),
                role: role.to_string(),
                clock_offset_ms,
                clock_known,
                clock_off,
                host_id: hosts
                    .voters
                    .get(id)
                    .copied()
                    .flatten()
                    .or_else(|| heard.get(id).copied().flatten().flatten())
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
                learner: !voters.contains(id),
                matched_index: matched(*id).unwrap_or(0),
                lag: matched(*id).map_or(0, |m| last_index.saturating_sub(m)),
            }
        })
        .collect();
    let active_address = metrics
        .current_leader
        .and_then(|id| Some(shared.client_address(id, membership.get_node(&id)?)))
        .unwrap_or_default();
    // The index is read with the state, under one lock: the reply shows the
    // state as of exactly `applied_index` (openraft's metrics may lag it).
    shared.state.read_applied(|applied, state| {
        let wanted = |vendor: &str, feature: &str| {
            (asked.vendor.is_empty() || asked.vendor == vendor)
                && (asked.feature.is_empty() || asked.feature == feature)
        };
        let features = state
            .features()
            .into_iter()
            .filter(|f| wanted(&f.vendor, &f.feature))
            .map(|f| pb::FeatureStatus {
                feature: f.feature,
                vendor: f.vendor,
                version: f.version,
                licensed: f.licensed,
                unexpired: f.unexpired,
                in_use: f.in_use,
                expiry: f.expiry.to_string(),
                by_expiry: f
                    .by_expiry
                    .iter()
                    .map(|e| pb::ExpirySeats {
                        expiry: e.expiry.to_string(),
                        seats: e.seats,
                        expired: e.expired,
                        hosts_unlisted: e.hosts_unlisted,
                    })
                    .collect(),
            })
            .collect();
        let (grants, grants_next, grants_total) = grants_page(state, asked, wanted);
        let activation = state.activation();
        pb::StatusReply {
            term,
            cluster_name: shared.config.cluster_name.clone(),
            active_node: metrics.current_leader.unwrap_or(0),
            active_address,
            nodes,
            features,
            grants,
            grants_next,
            grants_total,
            last_activation_ms: activation.map_or(0, |a| a.at_ms),
            activations: state.activations(),
            applied_index: applied.map_or(0, |l| l.index),
            serving_for_ms: shared.lease.serving_since().map_or(0, |(_, since)| {
                crate::lease::boottime_ms().saturating_sub(since)
            }),
            admin_actions: state
                .admin_actions()
                .iter()
                .map(|a| pb::AdminAction {
                    at_ms: a.at_ms,
                    author: a.author.clone(),
                    action: a.action.clone(),
                    result: a.result.clone(),
                })
                .collect(),
            plaintext: shared.tls.is_none(),
            write_format: u32::from(state.formats().write),
            voters_old: voters_old.clone(),
            voters_new: voters_new.clone(),
            cluster_id: state
                .cluster_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            lines: license_lines(state)
                .into_iter()
                .filter(|l| wanted(&l.vendor, &l.feature))
                .collect(),
            trusted_keys: state
                .trusted_keys()
                .iter()
                .map(|(id, k)| pb::TrustedKey {
                    key_id: id.clone(),
                    vendor: k.vendor.clone().unwrap_or_else(|| "*".into()),
                    author: k.author.clone(),
                    since_ms: k.since_ms,
                })
                .collect(),
            clock_skew_max_ms: clocks.skew_max_ms,
            state_time_ms: state.now_ms(),
            clock_ms: crate::clock::wall_ms(),
            trusted_ever: state.trusted_ever(),
        }
    })
}

/// The request's TCP peer address (an IPv4 client reaching an IPv6 socket
/// counts as its IPv4 address); `None` when the transport has none. User and
/// host names in a request are the client's claims; this is not.
fn peer_address<T>(request: &Request<T>) -> Option<IpAddr> {
    request.remote_addr().map(|a| a.ip().to_canonical())
}

#[tonic::async_trait]
impl License for LicenseService {
    async fn checkout(
        &self,
        request: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::CheckoutReply>, Status> {
        let peer = peer_address(&request);
        Ok(Response::new(
            LicenseService::checkout(self, request.into_inner(), peer).await?,
        ))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewReply>, Status> {
        let peer = peer_address(&request);
        Ok(Response::new(LicenseService::renew(
            self,
            request.into_inner(),
            peer,
        )?))
    }

    async fn checkin(
        &self,
        request: Request<pb::CheckinRequest>,
    ) -> Result<Response<pb::CheckinReply>, Status> {
        let peer = peer_address(&request);
        Ok(Response::new(
            LicenseService::checkin(self, request.into_inner(), peer).await?,
        ))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(
            LicenseService::status(self, request.into_inner()).await?,
        ))
    }

    async fn session_grants(
        &self,
        request: Request<pb::SessionGrantsRequest>,
    ) -> Result<Response<pb::SessionGrantsReply>, Status> {
        Ok(Response::new(
            LicenseService::session_grants(self, request.into_inner()).await?,
        ))
    }

    async fn node_info(
        &self,
        request: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoReply>, Status> {
        let cert = self.shared.tls.as_ref().map(|t| t.current().cert.clone());
        // Listing log entries reads up to ENTRY_HASHES_MAX entries from sled
        // and hashes each: not a read to give every client for free, so it
        // takes an administrator's certificate. (What it shows is harmless —
        // a log id says only which term and index an entry has, and a
        // truncated SHA-256 of an entry holding random session keys and
        // tokens reveals nothing of it — but its cost is not.)
        //
        // The same for the state digests: encoding and hashing the whole
        // state costs time in proportion to it (hundreds of milliseconds for
        // a large one), so a flood of them from anyone could starve the
        // active node. They take an administrator's certificate, and a node
        // computes one at a time (DIGESTS_IN_FLIGHT_MAX), from a copy of the
        // state taken under its lock, encoded outside it.
        let asks = request.get_ref();
        if asks.log_hashes > 0 || asks.with_state_digest || asks.with_state_digests {
            crate::server::admin::administrator(&self.shared, &request)?;
        }
        let request = request.into_inner();
        let with_digest = request.with_state_digest;
        let log_hashes = if request.log_hashes == 0 {
            Vec::new()
        } else {
            let limit = (request.log_hashes as usize).min(ENTRY_HASHES_MAX);
            let from = (request.log_hashes_from > 0).then_some(request.log_hashes_from);
            self.shared
                .log
                .entry_hashes(from, limit)
                .map_err(|e| ServiceError::Unknown(format!("cannot read the log: {e}")))?
                .into_iter()
                .map(|e| pb::LogEntryHash {
                    term: e.log_id.leader_id.term,
                    leader: e.log_id.leader_id.node_id,
                    index: e.log_id.index,
                    hash: e.hash,
                })
                .collect()
        };
        let state_digests = if request.with_state_digests {
            self.shared
                .state
                .recent_digests()
                .into_iter()
                .map(|(index, digest)| pb::StateDigestAt { index, digest })
                .collect()
        } else {
            Vec::new()
        };
        // This node's own view, leader or not: not a linearizable read.
        let committed_index = self
            .shared
            .raft
            .with_raft_state(|raft| raft.committed.map_or(0, |c| c.index))
            .await
            .map_err(|e| ServiceError::Unknown(format!("raft stopped: {e}")))?;
        // The copy is taken under the lock that reads the index, so the two
        // describe the same state; it is encoded and hashed outside the lock.
        let (applied_index, state_digest) = if with_digest {
            let _one_at_a_time = DIGESTS
                .acquire()
                .await
                .map_err(|_| ServiceError::Unknown("the digest limiter is closed".into()))?;
            let (applied, copy) = self
                .shared
                .state
                .read_applied(|applied, state| (applied.map_or(0, |l| l.index), state.clone()));
            let digest = tokio::task::spawn_blocking(move || copy.digest())
                .await
                .map_err(|e| ServiceError::Unknown(format!("the digest task failed: {e}")))?
                .map_err(|e| ServiceError::Unknown(format!("the state does not encode: {e}")))?;
            (applied, digest)
        } else {
            let applied = self
                .shared
                .state
                .read_applied(|applied, _| applied.map_or(0, |l| l.index));
            (applied, String::new())
        };
        let (term, role, leader) = own_role(&self.shared);
        Ok(Response::new(pb::NodeInfoReply {
            term,
            role,
            leader,
            nodes: self
                .shared
                .config
                .nodes
                .iter()
                .map(|n| pb::ConfiguredNode {
                    id: n.id,
                    address: n.address.clone(),
                })
                .collect(),
            applied_index,
            committed_index,
            state_digest,
            log_hashes,
            state_digests,
            id: self.shared.node_id,
            cluster_name: self.shared.config.cluster_name.clone(),
            cluster_id: self
                .shared
                .tls
                .as_ref()
                .map(|tls| tls.current().cluster_id.to_string())
                .unwrap_or_default(),
            tls: cert.is_some(),
            cert_subject: cert.as_ref().map(|c| c.subject.clone()).unwrap_or_default(),
            cert_not_after_unix: cert.map_or(0, |c| c.not_after_unix),
            now_ms: crate::clock::wall_ms(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

/// This node's term, its role as it sees itself (see `NodeInfoReply.role`)
/// and the leader it knows (0: none), from its Raft metrics: no round trip
/// through the Raft core, so a node answers even while it campaigns.
fn own_role(shared: &Shared) -> (u64, String, u64) {
    let serving = shared.lease.serving_term().is_some();
    let metrics = shared.raft.metrics();
    let metrics = metrics.borrow();
    let role = match metrics.state {
        openraft::ServerState::Leader if serving => "active",
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "standby",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "stopping",
    };
    (
        metrics.current_term,
        role.to_string(),
        metrics.current_leader.unwrap_or(0),
    )
}
