//! `Client`: calls the cluster's license and admin services, finding the
//! active node, retrying, and fencing stale answers.
//!
//! One call is a loop of attempts within the call's timeout:
//! 1. the first attempt goes to the address that answered last (or the first
//!    in the [`ServerList`]);
//! 2. an `UNAVAILABLE` answer with a `raftlm-leader` hint sends the next
//!    attempt straight to the hinted address (at most [`HINT_HOPS_MAX`] hops in
//!    a row without a pause, so two nodes that point at each other cannot spin);
//! 3. anything else that may succeed elsewhere or later (no answer within the
//!    attempt timeout, a transport error, `UNAVAILABLE` without a hint, an
//!    answer from a stale term) moves to the next address in the list after a
//!    capped, jittered back-off ([`Backoff`]);
//! 4. a refusal is returned at once.
//!
//! The caller's request is sent unchanged on every attempt: a check-out or
//! check-in carries its request id, so the cluster answers a retry with the
//! first outcome and never takes a second seat.
//!
//! Every reply carries the answering node's term. The client keeps the highest
//! term seen in a [`TermFence`] shared by all its clones; a reply from a lower
//! term is refused and the call goes on elsewhere (`docs/architecture.md`, "The activator").
//!
//! Every connection uses the [`ClientTls`] of its [`ClientOptions`]: TLS
//! by default, verifying the node's certificate against the cluster CA (or
//! the OS's roots), with an administrator's certificate when one is given.
//!
//! Left out: load balancing — the cluster has one active node, and the
//! client sticks to it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::{debug, warn};

use crate::client::backoff::Backoff;
use crate::client::error::ClientError;
use crate::client::fence::TermFence;
use crate::client::server_list::{ServerList, parse_entry};
use crate::license::secret::SessionSecret;
use crate::license::state::{DenyReason, GrantToken, RequestId, Term};
use crate::proto::v1 as pb;
use crate::proto::v1::admin_client::AdminClient;
use crate::proto::v1::license_client::LicenseClient;
use crate::tls::client::ClientTls;
use crate::wire::{LEADER_ADDRESS_KEY, LIMIT_KEY, token_from_pb, token_to_pb};

/// Most hops along leader hints in a row without a back-off pause.
pub const HINT_HOPS_MAX: u32 = 2;

/// Most cached channels; hinted addresses beyond the server list are evicted past it.
pub const CHANNELS_MAX: usize = 128;

/// Most pages one [`Client::session_grants`] asks for. The server looks at
/// 1,024 of the session's grants per page and a session holds at most
/// [`GRANTS_MAX`](crate::license::state::GRANTS_MAX) (1,000,000), so this
/// covers any session.
pub const SESSION_GRANTS_PAGES_MAX: usize = 1024;

/// How a client retries. Defaults: [`ClientOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// The longest one call (all its attempts and pauses) may take before it
    /// fails with [`ClientError::Unreachable`]. Default 15 s.
    pub call_timeout: Duration,
    /// The longest one attempt (connecting included) may take before the call
    /// moves on to another address. Default 2 s.
    pub attempt_timeout: Duration,
    /// The first pause between attempts. Default 25 ms.
    pub backoff_min: Duration,
    /// The longest pause between attempts. Default 250 ms: a failover takes
    /// about half a second (`docs/performance.md`), and a longer pause would
    /// add most of itself to what the application waits; an attempt at an
    /// address nobody listens on costs the cluster nothing, and a session
    /// keeps its connection, so the retries of many clients do not become a
    /// storm of handshakes.
    pub backoff_max: Duration,
    /// Whether to follow a node's hint to the active node's address. Default
    /// `true`. Set it to `false` where clients may reach the cluster only
    /// through the access point (a firewall passes the virtual IP alone): the
    /// client then retries its own list instead.
    pub follow_leader_hints: bool,
    /// How to dial: whom to trust, which certificate to present. Default:
    /// [`ClientTls::default`], TLS trusting the operating system's roots;
    /// [`ClientOptions::from_env`] reads `RAFTLM_CA` and friends.
    pub tls: ClientTls,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            call_timeout: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            follow_leader_hints: true,
            tls: ClientTls::default(),
        }
    }
}

impl ClientOptions {
    /// The defaults, with TLS configured from the environment
    /// (`RAFTLM_CA`, `RAFTLM_CERT`, `RAFTLM_KEY`, `RAFTLM_TLS_NAME`,
    /// `RAFTLM_PLAINTEXT`; see [`crate::tls::client`]).
    pub fn from_env() -> Result<ClientOptions, String> {
        Ok(ClientOptions {
            tls: ClientTls::from_env()?,
            ..ClientOptions::default()
        })
    }
}

/// One request of a session: the session's secret and the request's number.
/// A retry sends the same value, so the cluster answers it with the first outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// The session's secret (never shown; see [`SessionSecret`]).
    pub secret: SessionSecret,
    /// The request's number within the session, from 1.
    pub seq: u64,
}

impl SessionRequest {
    /// The request id the cluster files this request under (the session's public handle).
    pub fn id(&self) -> RequestId {
        RequestId {
            session: self.secret.handle(),
            seq: self.seq,
        }
    }

    fn to_pb(&self) -> pb::RequestId {
        pb::RequestId {
            session_secret: self.secret.as_bytes().to_vec(),
            seq: self.seq,
        }
    }
}

/// What a check-out asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The vendor whose feature is wanted.
    pub vendor: String,
    /// The feature.
    pub feature: String,
    /// The lowest version accepted; empty for any.
    pub version: String,
    /// Seats wanted.
    pub count: u32,
}

impl Want {
    /// `count` seats of `vendor`'s `feature`, any version.
    pub fn seats(vendor: &str, feature: &str, count: u32) -> Want {
        Want {
            vendor: vendor.to_string(),
            feature: feature.to_string(),
            version: String::new(),
            count,
        }
    }
}

/// Seats checked out: what the cluster granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grant token, quoted in renewals and the check-in.
    pub token: GrantToken,
    /// The vendor of the feature.
    pub vendor: String,
    /// The feature.
    pub feature: String,
    /// The lowest version the check-out accepted; empty for any.
    pub version: String,
    /// Seats granted.
    pub count: u32,
    /// The term (fencing token) of the node that granted it.
    pub term: u64,
    /// The address of the node that granted it.
    pub address: String,
    /// Seats of the feature still free after this grant.
    pub available: u32,
    /// Seats of the feature licensed and unexpired.
    pub total: u32,
    /// The signed lines behind the grant, as the cluster reported them.
    pub backing: Vec<crate::license::FeatureLine>,
    /// The cluster name the lines were issued for.
    pub cluster_name: String,
}

impl Grant {
    /// Checks that every line behind the grant is signed, for the cluster's
    /// name, by one of `vendor_keys` trusted for the line's vendor, and that a
    /// line bound to a cluster identity names one of `cluster_ids` (the
    /// identities of the CAs the application trusts, see
    /// [`crate::tls::client::ClientTls::cluster_ids`]); the first failure as a
    /// sentence.
    pub fn verify(
        &self,
        vendor_keys: &[crate::license::signature::VendorPublicKey],
        cluster_ids: &[crate::license::ClusterId],
    ) -> Result<(), String> {
        if self.backing.is_empty() {
            return Err("the cluster sent no signed lines for it".into());
        }
        for line in &self.backing {
            crate::license::signature::verify_held("grant", line, &self.cluster_name, vendor_keys)
                .map_err(|_| {
                    let serial = crate::license::pool::serial(line)
                        .map(|s| format!(" SN={s}"))
                        .unwrap_or_default();
                    format!(
                        "the {} line {} {} {} {} seats{serial} is not signed by the vendor's key for cluster {}",
                        line.kind.keyword(),
                        line.feature,
                        line.vendor,
                        line.version,
                        line.seats,
                        self.cluster_name
                    )
                })?;
            if let Some(bound) = &line.cluster_id
                && !cluster_ids.contains(bound)
            {
                let trusted = if cluster_ids.is_empty() {
                    "no cluster CA file (RAFTLM_CA) to compare it with".to_string()
                } else {
                    let ids: Vec<String> = cluster_ids.iter().map(|id| id.to_string()).collect();
                    format!("the CA of cluster {}", ids.join(", "))
                };
                return Err(format!(
                    "the {} line {} {} {} {} seats is bound to cluster {bound} but this application trusts {trusted}",
                    line.kind.keyword(),
                    line.feature,
                    line.vendor,
                    line.version,
                    line.seats,
                ));
            }
        }
        Ok(())
    }
}

/// A wire line back as a held line; `None` if a field does not parse.
fn signed_line_from_pb(line: &pb::SignedLine) -> Option<crate::license::FeatureLine> {
    use crate::license::{Expiry, FeatureLine, LineKind};
    Some(FeatureLine {
        kind: match line.keyword.as_str() {
            "FEATURE" => LineKind::Feature,
            "INCREMENT" => LineKind::Increment,
            _ => return None,
        },
        feature: line.feature.clone(),
        vendor: line.vendor.clone(),
        version: line.version.clone(),
        expiry: Expiry::parse(&line.expiry)?,
        seats: line.seats,
        attributes: line
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect(),
        cluster_id: if line.cluster_id.is_empty() {
            None
        } else {
            Some(crate::license::ClusterId::parse(&line.cluster_id)?)
        },
        host_ids: line
            .host_ids
            .iter()
            .map(|id| crate::license::HostId::parse(id))
            .collect::<Option<Vec<_>>>()?,
        signature: line.signature.clone(),
        line: 0,
    })
}

/// The answer to a check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkin {
    /// Whether seats were released; false when the grant was not held (already
    /// checked in, or expired with its session).
    pub released: bool,
    /// The grant's feature, when released.
    pub feature: String,
    /// Seats released.
    pub count: u32,
    /// The term of the node that answered.
    pub term: u64,
}

/// The answer to a renewal (heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The term of the node that answered.
    pub term: u64,
    /// The address of the node that answered.
    pub address: String,
    /// Grant tokens quoted that the cluster does not hold for this session.
    pub unknown: Vec<GrantToken>,
    /// The session TTL the cluster expects heartbeats within.
    pub session_ttl: Duration,
    /// The cluster expired the session: start a new one.
    pub session_expired: bool,
    /// Grants of `unknown` an administrator removed: who, and when.
    pub removed: Vec<Removed>,
}

/// A grant an administrator removed (`raftlm remove`), as a renewal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The grant's token.
    pub token: GrantToken,
    /// Who removed it (the administrator certificate's subject).
    pub by: String,
    /// When (the cluster's state time).
    pub at: std::time::SystemTime,
}

/// What a session in caching mode reports with its renewals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// How long the session has gone without an answer, in ms; 0 when not caching.
    pub cached_for_ms: u64,
    /// When the session last had an answer (ms since the epoch); 0 when not caching.
    pub cached_since_ms: u64,
}

/// A reply, the node that gave it, and its term.
struct Answered<T> {
    reply: T,
    address: String,
    term: Term,
}

/// A reply that carries the answering node's term.
trait Termed {
    fn term(&self) -> Term;
}

macro_rules! termed {
    ($($reply:ty),*) => {
        $(impl Termed for $reply {
            fn term(&self) -> Term {
                Term(self.term)
            }
        })*
    };
}
termed!(
    pb::CheckoutReply,
    pb::CheckinReply,
    pb::RenewReply,
    pb::SessionGrantsReply,
    pb::StatusReply,
    pb::ImportLicenseReply,
    pb::RemoveLicenseReply,
    pb::TrustKeyReply,
    pb::UntrustKeyReply,
    pb::ShutdownReply,
    pb::RereadLicenseDirReply,
    pb::MembershipReply,
    pb::MembershipChangeReply,
    pb::RemoveGrantsReply,
    BackupFile
);

/// A backup file as the active node streamed it ([`Client::backup`]).
#[derive(Debug, Clone)]
pub struct BackupFile {
    /// The term of the node that took it.
    pub term: u64,
    /// The last applied log index of the state it holds.
    pub applied_index: u64,
    /// The file's bytes (see `src/raft/backup.rs`).
    pub bytes: Vec<u8>,
}

/// A handle on the cluster; cheap to clone (clones share channels, the last
/// answering address and the term fence).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    servers: ServerList,
    options: ClientOptions,
    fence: TermFence,
    // std Mutex: short critical sections, never held across `.await`.
    channels: Mutex<HashMap<String, Channel>>,
    last_address: Mutex<Option<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.inner.servers)
            .field("options", &self.inner.options)
            .field("highest_term", &self.highest_term())
            .field("last_address", &self.last_address())
            .finish()
    }
}

/// What to do after an attempt that did not produce a reply.
enum Next {
    /// Follow the active node's address.
    Hint(String),
    /// Try the next address after a pause.
    Elsewhere,
    /// Try the same address again after a pause (the node is overloaded).
    Same,
}

impl Client {
    /// A client of the cluster at `servers`, with default options.
    pub fn new(servers: ServerList) -> Client {
        Client::with_options(servers, ClientOptions::default())
    }

    /// A client of the cluster at `servers`.
    pub fn with_options(servers: ServerList, options: ClientOptions) -> Client {
        Client {
            inner: Arc::new(Inner {
                servers,
                options,
                fence: TermFence::new(),
                channels: Mutex::new(HashMap::new()),
                last_address: Mutex::new(None),
            }),
        }
    }

    /// The addresses this client was given.
    pub fn servers(&self) -> &ServerList {
        &self.inner.servers
    }

    /// The client's retry options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The highest term seen in any reply (0 before the first).
    pub fn highest_term(&self) -> u64 {
        self.inner.fence.highest().0
    }

    /// The address that answered last, if any did.
    pub fn last_address(&self) -> Option<String> {
        self.inner
            .last_address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks out `count` seats of `feature` as request `request`. Retries of
    /// one request must use the same `request` id, so that the cluster answers
    /// them with the first outcome. [`Session::checkout`](crate::client::Session::checkout)
    /// does this bookkeeping for applications.
    pub async fn checkout(
        &self,
        request: &SessionRequest,
        want: &Want,
        user: &str,
        host: &str,
    ) -> Result<Grant, ClientError> {
        self.checkout_within(self.inner.options.call_timeout, request, want, user, host)
            .await
    }

    pub(crate) async fn checkout_within(
        &self,
        timeout: Duration,
        request: &SessionRequest,
        want: &Want,
        user: &str,
        host: &str,
    ) -> Result<Grant, ClientError> {
        if want.vendor.is_empty() {
            return Err(ClientError::Refused(
                "a check-out must name the vendor (SessionOptions::vendor)".into(),
            ));
        }
        let message = pb::CheckoutRequest {
            request: Some(request.to_pb()),
            vendor: want.vendor.clone(),
            feature: want.feature.clone(),
            version: want.version.clone(),
            count: want.count,
            user: user.to_string(),
            host: host.to_string(),
        };
        let answered = self
            .call("checkout", timeout, |channel| {
                let message = message.clone();
                async move { LicenseClient::new(channel).checkout(message).await }
            })
            .await?;
        grant_from_reply(want, answered)
    }

    /// Checks in the grant `token` as request `request`.
    pub async fn checkin(
        &self,
        request: &SessionRequest,
        token: GrantToken,
    ) -> Result<Checkin, ClientError> {
        self.checkin_within(self.inner.options.call_timeout, request, token)
            .await
    }

    pub(crate) async fn checkin_within(
        &self,
        timeout: Duration,
        request: &SessionRequest,
        token: GrantToken,
    ) -> Result<Checkin, ClientError> {
        let message = pb::CheckinRequest {
            request: Some(request.to_pb()),
            token: Some(token_to_pb(token)),
        };
        let answered = self
            .call("checkin", timeout, |channel| {
                let message = message.clone();
                async move { LicenseClient::new(channel).checkin(message).await }
            })
            .await?;
        let reply = answered.reply;
        Ok(Checkin {
            released: reply.released,
            feature: reply.feature,
            count: reply.count,
            term: answered.term.0,
        })
    }

    /// Renews (heartbeats) the session of `session`, quoting the grants it holds.
    pub async fn renew(
        &self,
        session: &SessionSecret,
        tokens: &[GrantToken],
    ) -> Result<Renewal, ClientError> {
        self.renew_within(
            self.inner.options.call_timeout,
            session,
            tokens,
            CacheReport::default(),
        )
        .await
    }

    pub(crate) async fn renew_within(
        &self,
        timeout: Duration,
        session: &SessionSecret,
        tokens: &[GrantToken],
        report: CacheReport,
    ) -> Result<Renewal, ClientError> {
        let message = pb::RenewRequest {
            session_secret: session.as_bytes().to_vec(),
            tokens: tokens.iter().copied().map(token_to_pb).collect(),
            cached_for_ms: report.cached_for_ms,
            cached_since_ms: report.cached_since_ms,
        };
        let answered = self
            .call("renew", timeout, |channel| {
                let message = message.clone();
                async move { LicenseClient::new(channel).renew(message).await }
            })
            .await?;
        let reply = answered.reply;
        Ok(Renewal {
            term: answered.term.0,
            address: answered.address,
            unknown: reply.unknown.iter().map(token_from_pb).collect(),
            session_ttl: Duration::from_millis(reply.session_ttl_ms),
            session_expired: reply.session_expired,
            removed: reply
                .removed
                .iter()
                .filter_map(|r| {
                    Some(Removed {
                        token: token_from_pb(r.token.as_ref()?),
                        by: r.author.clone(),
                        at: std::time::UNIX_EPOCH + Duration::from_millis(r.at_ms),
                    })
                })
                .collect(),
        })
    }

    /// The grants the session of `session` holds of `want`'s vendor, feature
    /// and version, with `want`'s count, oldest first: a linearizable read on
    /// the active node that touches no log. A check-out answered "stale
    /// request" was made long enough ago that the cluster no longer knows its
    /// answer; one of these grants may be the seat it took.
    /// [`Session`](crate::client::Session) asks this by itself and adopts such a
    /// grant.
    pub async fn session_grants(
        &self,
        session: &SessionSecret,
        want: &Want,
    ) -> Result<Vec<Grant>, ClientError> {
        self.session_grants_within(
            self.inner.options.call_timeout,
            session,
            want,
            |_| true,
            usize::MAX,
        )
        .await
    }

    /// Like [`session_grants`](Self::session_grants), keeping only the grants
    /// `keep` accepts and stopping once `most` are kept; `timeout` covers
    /// every page.
    pub(crate) async fn session_grants_within(
        &self,
        timeout: Duration,
        session: &SessionSecret,
        want: &Want,
        keep: impl Fn(&Grant) -> bool,
        most: usize,
    ) -> Result<Vec<Grant>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        let mut after = None;
        for _ in 0..SESSION_GRANTS_PAGES_MAX {
            let message = pb::SessionGrantsRequest {
                session_secret: session.as_bytes().to_vec(),
                vendor: want.vendor.clone(),
                feature: want.feature.clone(),
                version: want.version.clone(),
                after,
            };
            let budget = deadline.saturating_duration_since(Instant::now());
            let answered = self
                .call("session grants", budget, |channel| {
                    let message = message.clone();
                    async move { LicenseClient::new(channel).session_grants(message).await }
                })
                .await?;
            let Answered {
                reply,
                address,
                term,
            } = answered;
            if reply.session_expired {
                return Err(ClientError::SessionExpired);
            }
            let backing = reply
                .lines
                .iter()
                .map(signed_line_from_pb)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ClientError::Protocol {
                    address: address.clone(),
                    message: "a line behind a grant does not parse".into(),
                })?;
            for status in &reply.grants {
                let Some(token) = status.token.as_ref() else {
                    return Err(ClientError::Protocol {
                        address,
                        message: "a grant was listed without its token".into(),
                    });
                };
                let grant = Grant {
                    token: token_from_pb(token),
                    vendor: status.vendor.clone(),
                    feature: status.feature.clone(),
                    version: status.version.clone(),
                    count: status.count,
                    term: term.0,
                    address: address.clone(),
                    available: reply.available,
                    total: reply.total,
                    backing: backing.clone(),
                    cluster_name: reply.cluster_name.clone(),
                };
                let matches = grant.vendor == want.vendor
                    && grant.feature == want.feature
                    && grant.version == want.version
                    && grant.count == want.count;
                if matches && keep(&grant) {
                    kept.push(grant);
                    if kept.len() >= most {
                        return Ok(kept);
                    }
                }
            }
            match reply.next {
                Some(next) => after = Some(next),
                None => return Ok(kept),
            }
        }
        warn!(
            pages = SESSION_GRANTS_PAGES_MAX,
            "stopped paging through a session's grants"
        );
        Ok(kept)
    }

    /// The cluster's status: nodes, the active node and term, features, grants.
    /// A linearizable read on the active node.
    pub async fn status(&self) -> Result<pb::StatusReply, ClientError> {
        let mut reply = self.status_page(pb::StatusRequest::default()).await?;
        // The grants come in pages of at most 10,000; each page is read at
        // its own moment, so a grant made meanwhile may be missing and one
        // returned meanwhile may be listed.
        while let Some(after) = reply.grants_next.take() {
            let page = self
                .status_page(pb::StatusRequest {
                    grants_after: Some(after),
                    ..Default::default()
                })
                .await?;
            reply.grants.extend(page.grants);
            reply.grants_next = page.grants_next;
        }
        Ok(reply)
    }

    /// One page of the status: `asked` filters by vendor and feature and
    /// names where the grants continue (`grants_after`).
    pub async fn status_page(
        &self,
        asked: pb::StatusRequest,
    ) -> Result<pb::StatusReply, ClientError> {
        let answered = self
            .call("status", self.inner.options.call_timeout, |channel| {
                let asked = asked.clone();
                async move { LicenseClient::new(channel).status(asked).await }
            })
            .await?;
        Ok(answered.reply)
    }

    /// Imports (or replaces) the license file `name` with `text`. A file the
    /// cluster refuses (bad signature, issued for another cluster, would strand
    /// grants) is [`ClientError::Refused`] with the cluster's reason.
    pub async fn import_license(
        &self,
        name: &str,
        text: &str,
    ) -> Result<pb::ImportLicenseReply, ClientError> {
        let message = pb::ImportLicenseRequest {
            name: name.to_string(),
            text: text.to_string(),
        };
        let answered = self
            .call(
                "import license",
                self.inner.options.call_timeout,
                |channel| {
                    let message = message.clone();
                    async move { AdminClient::new(channel).import_license(message).await }
                },
            )
            .await?;
        Ok(answered.reply)
    }

    /// Asks the active node to read its license directory again now (as
    /// SIGHUP does on that node); returns its answer, one sentence per file.
    pub async fn reread_license_dir(&self) -> Result<pb::RereadLicenseDirReply, ClientError> {
        let answered = self
            .call(
                "reread license directory",
                self.inner.options.call_timeout,
                |channel| async move {
                    AdminClient::new(channel)
                        .reread_license_dir(pb::RereadLicenseDirRequest {})
                        .await
                },
            )
            .await?;
        Ok(answered.reply)
    }

    /// Takes a backup on the active node and receives it whole, within
    /// `timeout` (one attempt may take all of it: the state is encoded and
    /// streamed in pieces of at most 1 MiB).
    pub async fn backup(&self, timeout: Duration) -> Result<BackupFile, ClientError> {
        let answered = self
            .call_each("backup", timeout, timeout, |channel| async move {
                let mut stream = AdminClient::new(channel)
                    .backup(pb::BackupRequest {})
                    .await?
                    .into_inner();
                let mut file = BackupFile {
                    term: 0,
                    applied_index: 0,
                    bytes: Vec::new(),
                };
                while let Some(chunk) = stream.message().await? {
                    let total = usize::try_from(chunk.total_bytes).unwrap_or(usize::MAX);
                    if total > crate::raft::backup::BACKUP_BYTES_MAX
                        || file.bytes.len() + chunk.data.len() > total
                    {
                        return Err(Status::data_loss(format!(
                            "the backup stream is longer than the {total} bytes it announced"
                        )));
                    }
                    if file.bytes.is_empty() {
                        file.bytes.reserve_exact(total);
                    }
                    file.term = chunk.term;
                    file.applied_index = chunk.applied_index;
                    file.bytes.extend_from_slice(&chunk.data);
                    if file.bytes.len() == total {
                        return Ok(tonic::Response::new(file));
                    }
                }
                Err(Status::data_loss(format!(
                    "the backup stream ended after {} bytes, before the end of the file",
                    file.bytes.len()
                )))
            })
            .await?;
        Ok(answered.reply)
    }

    /// The cluster's members as the active node sees them (administrator).
    pub async fn membership(&self) -> Result<pb::MembershipReply, ClientError> {
        let answered = self
            .call(
                "membership",
                self.inner.options.call_timeout,
                |channel| async move {
                    AdminClient::new(channel)
                        .membership(pb::MembershipRequest {})
                        .await
                },
            )
            .await?;
        Ok(answered.reply)
    }

    /// Adds node `id` as a learner (administrator).
    pub async fn add_learner(
        &self,
        id: u64,
        address: &str,
        peer_address: &str,
    ) -> Result<pb::MembershipChangeReply, ClientError> {
        let message = pb::AddLearnerRequest {
            id,
            address: address.to_string(),
            peer_address: peer_address.to_string(),
        };
        let answered = self
            .call("add learner", self.inner.options.call_timeout, |channel| {
                let message = message.clone();
                async move { AdminClient::new(channel).add_learner(message).await }
            })
            .await?;
        Ok(answered.reply)
    }

    /// Makes `voters` the cluster's voters (administrator).
    pub async fn change_voters(
        &self,
        voters: &[u64],
        force: bool,
    ) -> Result<pb::MembershipChangeReply, ClientError> {
        let message = pb::ChangeVotersRequest {
            voters: voters.to_vec(),
            force,
        };
        let answered = self
            .call(
                "change voters",
                self.inner.options.call_timeout,
                |channel| {
                    let message = message.clone();
                    async move { AdminClient::new(channel).change_voters(message).await }
                },
            )
            .await?;
        Ok(answered.reply)
    }

    /// Removes node `id` from the cluster (administrator).
    pub async fn remove_node(
        &self,
        id: u64,
        force: bool,
    ) -> Result<pb::MembershipChangeReply, ClientError> {
        let message = pb::RemoveNodeRequest { id, force };
        let answered = self
            .call(
                "remove node",
                self.inner.options.call_timeout,
                |channel| async move { AdminClient::new(channel).remove_node(message).await },
            )
            .await?;
        Ok(answered.reply)
    }

    /// Removes grants as `asked` names them (`raftlm remove`, lmremove).
    /// Administrator certificate.
    pub async fn remove_grants(
        &self,
        asked: pb::RemoveGrantsRequest,
    ) -> Result<pb::RemoveGrantsReply, ClientError> {
        let answered = self
            .call(
                "remove grants",
                self.inner.options.call_timeout,
                |channel| {
                    let message = asked.clone();
                    async move { AdminClient::new(channel).remove_grants(message).await }
                },
            )
            .await?;
        Ok(answered.reply)
    }

    /// Moves member `id` to `address` (client plane) and `peer_address`
    /// (`raftlm cluster set-address`). Administrator certificate.
    pub async fn set_address(
        &self,
        id: u64,
        address: &str,
        peer_address: &str,
    ) -> Result<pb::MembershipChangeReply, ClientError> {
        let message = pb::SetAddressRequest {
            id,
            address: address.to_string(),
            peer_address: peer_address.to_string(),
        };
        let answered = self
            .call("set address", self.inner.options.call_timeout, |channel| {
                let message = message.clone();
                async move { AdminClient::new(channel).set_address(message).await }
            })
            .await?;
        Ok(answered.reply)
    }

    /// Trusts the vendor public key in `key_file` (the text of a `.pub` file);
    /// returns its key id.
    pub async fn trust_key(&self, key_file: &str) -> Result<String, ClientError> {
        let message = pb::TrustKeyRequest {
            key_file: key_file.to_string(),
        };
        let answered = self
            .call("trust key", self.inner.options.call_timeout, |channel| {
                let message = message.clone();
                async move { AdminClient::new(channel).trust_key(message).await }
            })
            .await?;
        Ok(answered.reply.key_id)
    }

    /// Asks node `node` (0: the active node) to stop gracefully, handing
    /// over if it is active; returns the node that stops. For a given node,
    /// give a client whose server list is that node's own address.
    pub async fn shutdown(&self, node: u64) -> Result<u64, ClientError> {
        let answered = self
            .call(
                "shutdown",
                self.inner.options.call_timeout,
                |channel| async move {
                    AdminClient::new(channel)
                        .shutdown(pb::ShutdownRequest { node })
                        .await
                },
            )
            .await?;
        Ok(answered.reply.node)
    }

    /// Stops trusting the vendor key `key_id`.
    pub async fn untrust_key(&self, key_id: &str) -> Result<u64, ClientError> {
        let message = pb::UntrustKeyRequest {
            key_id: key_id.to_string(),
        };
        let answered = self
            .call("untrust key", self.inner.options.call_timeout, |channel| {
                let message = message.clone();
                async move { AdminClient::new(channel).untrust_key(message).await }
            })
            .await?;
        Ok(answered.term.0)
    }

    /// Removes the license file `name`; returns the term it was removed in.
    pub async fn remove_license(&self, name: &str) -> Result<u64, ClientError> {
        let message = pb::RemoveLicenseRequest {
            name: name.to_string(),
        };
        let answered = self
            .call(
                "remove license",
                self.inner.options.call_timeout,
                |channel| {
                    let message = message.clone();
                    async move { AdminClient::new(channel).remove_license(message).await }
                },
            )
            .await?;
        Ok(answered.term.0)
    }

    /// Runs `attempt` against node after node until one answers from a term
    /// the fence admits, a refusal comes back, or `timeout` passes; each
    /// attempt has the options' `attempt_timeout`.
    async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        timeout: Duration,
        attempt: F,
    ) -> Result<Answered<T>, ClientError>
    where
        T: Termed,
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let each = self.inner.options.attempt_timeout;
        self.call_each(what, timeout, each, attempt).await
    }

    /// [`call`](Self::call) with `each` as the time one attempt may take.
    async fn call_each<T, F, Fut>(
        &self,
        what: &'static str,
        timeout: Duration,
        each: Duration,
        mut attempt: F,
    ) -> Result<Answered<T>, ClientError>
    where
        T: Termed,
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + timeout;
        let servers = self.inner.servers.addresses();
        // The list position the next "elsewhere" attempt takes.
        let (mut address, mut cursor) = match self.last_address() {
            Some(last) => {
                let position = servers.iter().position(|a| *a == last);
                (last, position.map_or(0, |p| p + 1))
            }
            None => (servers[0].clone(), 1),
        };
        let mut backoff = Backoff::new(
            self.inner.options.backoff_min,
            self.inner.options.backoff_max,
        );
        let mut tried: Vec<String> = Vec::new();
        let mut last = String::from("the call's timeout is zero");
        let mut hops = 0;
        let mut failed_before = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                debug!(what, ?tried, %last, "no node answered");
                return Err(ClientError::Unreachable { tried, last });
            }
            if !tried.contains(&address) {
                tried.push(address.clone());
            }
            let budget = (deadline - now).min(each);
            let next = match self.channel(&address) {
                Err(error) => {
                    last = format!("{address}: {error}");
                    Next::Elsewhere
                }
                Ok(channel) => match tokio::time::timeout(budget, attempt(channel)).await {
                    Ok(Ok(response)) => {
                        let reply = response.into_inner();
                        let term = reply.term();
                        match self.inner.fence.admit(term) {
                            Ok(()) => {
                                self.remember(&address);
                                return Ok(Answered {
                                    reply,
                                    address,
                                    term,
                                });
                            }
                            Err(stale) => {
                                warn!(what, %address, %stale, "fenced off a reply from a deposed node");
                                last = format!("{address}: {stale}");
                                Next::Elsewhere
                            }
                        }
                    }
                    Ok(Err(status)) => {
                        let next = self.classify(&address, &status)?;
                        last = format!("{address}: {}", status_text(&status));
                        next
                    }
                    Err(_) => {
                        self.evict(&address);
                        // An attempt cut short by the call's own deadline says less than the
                        // failure before it: keep that one as the reason.
                        let cut_short = budget < self.inner.options.attempt_timeout;
                        if !(cut_short && failed_before) {
                            last = format!("{address}: no answer within {} ms", budget.as_millis());
                        }
                        Next::Elsewhere
                    }
                },
            };
            failed_before = true;
            debug!(what, %address, %last, "attempt failed");
            match next {
                Next::Hint(hint)
                    if hint != address
                        && hops < HINT_HOPS_MAX
                        && self.inner.options.follow_leader_hints =>
                {
                    hops += 1;
                    address = hint;
                    continue;
                }
                Next::Hint(_) | Next::Elsewhere => {
                    address = servers[cursor % servers.len()].clone();
                    cursor = cursor.wrapping_add(1);
                }
                Next::Same => {}
            }
            hops = 0;
            let pause = backoff
                .next_delay()
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }

    /// What an error status means: a refusal (returned), or where to try next.
    fn classify(&self, address: &str, status: &Status) -> Result<Next, ClientError> {
        match status.code() {
            Code::Unavailable => {
                let hint = status
                    .metadata()
                    .get(LEADER_ADDRESS_KEY)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|hint| parse_entry(hint).ok());
                match hint {
                    Some(hint) => Ok(Next::Hint(hint)),
                    None => {
                        // No hint: an election, a node going down, or a transport
                        // error; a fresh connection next time is cheap.
                        self.evict(address);
                        Ok(Next::Elsewhere)
                    }
                }
            }
            // A configured limit (sessions per address, …) is the cluster's
            // refusal; a busy node may answer a moment later.
            Code::ResourceExhausted if status.metadata().contains_key(LIMIT_KEY) => {
                Err(ClientError::Refused(status.message().to_string()))
            }
            Code::ResourceExhausted => Ok(Next::Same),
            Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::Aborted => {
                self.evict(address);
                Ok(Next::Elsewhere)
            }
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::NotFound => Err(ClientError::Refused(status.message().to_string())),
            code => Err(ClientError::Server {
                code,
                message: status.message().to_string(),
            }),
        }
    }

    /// The channel to `address`, created (lazily connecting) on first use.
    fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = self
            .inner
            .options
            .tls
            .endpoint(address, self.inner.options.attempt_timeout)?;
        let channel = endpoint.connect_lazy();
        if channels.len() >= CHANNELS_MAX {
            // Only hinted addresses can grow the map past the list; drop those.
            let servers = self.inner.servers.addresses();
            channels.retain(|a, _| servers.contains(a));
        }
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `address`, so the next attempt connects afresh.
    fn evict(&self, address: &str) {
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }

    fn remember(&self, address: &str) {
        let mut last = self
            .inner
            .last_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.as_deref() != Some(address) {
            *last = Some(address.to_string());
        }
    }
}

fn status_text(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    }
}

fn grant_from_reply(
    want: &Want,
    answered: Answered<pb::CheckoutReply>,
) -> Result<Grant, ClientError> {
    let feature = want.feature.as_str();
    let Answered {
        reply,
        address,
        term,
    } = answered;
    if reply.granted {
        let token = reply.token.as_ref().ok_or_else(|| ClientError::Protocol {
            address: address.clone(),
            message: "a check-out was granted without a grant token".into(),
        })?;
        let backing = reply
            .lines
            .iter()
            .map(signed_line_from_pb)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ClientError::Protocol {
                address: address.clone(),
                message: "a line behind the grant does not parse".into(),
            })?;
        return Ok(Grant {
            token: token_from_pb(token),
            vendor: want.vendor.clone(),
            feature: feature.to_string(),
            version: want.version.clone(),
            backing,
            cluster_name: reply.cluster_name.clone(),
            count: reply.count,
            term: term.0,
            address,
            available: reply.available,
            total: reply.total,
        });
    }
    let reason = match reply.reason() {
        pb::DenyReason::SessionExpired => return Err(ClientError::SessionExpired),
        pb::DenyReason::StaleRequest => return Err(ClientError::StaleRequest),
        pb::DenyReason::NoSuchFeature => DenyReason::NoSuchFeature,
        pb::DenyReason::VersionNotLicensed => DenyReason::VersionNotLicensed,
        pb::DenyReason::Expired => DenyReason::Expired,
        pb::DenyReason::ExceedsLicensed => DenyReason::ExceedsLicensed,
        pb::DenyReason::InUse => DenyReason::InUse,
        pb::DenyReason::BadCount => DenyReason::BadCount,
        pb::DenyReason::CapacityReached => DenyReason::CapacityReached,
        pb::DenyReason::HostsNotListed => DenyReason::HostsNotListed,
        pb::DenyReason::Unspecified => {
            return Err(ClientError::Protocol {
                address,
                message: "a check-out was denied without a reason".into(),
            });
        }
    };
    let message = if reply.message.is_empty() {
        format!("{feature}: {reason}")
    } else {
        reply.message
    };
    Err(ClientError::Denied {
        feature: feature.to_string(),
        reason,
        available: reply.available,
        total: reply.total,
        message,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::net::TcpListener;
    use tonic::{Request, Response};

    use super::*;
    use crate::proto::v1::license_server::{License, LicenseServer};

    /// A license service that answers Status from whatever term the test sets.
    struct FakeNode {
        term: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl License for FakeNode {
        async fn checkout(
            &self,
            _: Request<pb::CheckoutRequest>,
        ) -> Result<Response<pb::CheckoutReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn renew(
            &self,
            _: Request<pb::RenewRequest>,
        ) -> Result<Response<pb::RenewReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn checkin(
            &self,
            _: Request<pb::CheckinRequest>,
        ) -> Result<Response<pb::CheckinReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn status(
            &self,
            _: Request<pb::StatusRequest>,
        ) -> Result<Response<pb::StatusReply>, Status> {
            let term = self.term.load(Ordering::SeqCst);
            Ok(Response::new(pb::StatusReply {
                term,
                ..Default::default()
            }))
        }
        async fn node_info(
            &self,
            _: Request<pb::NodeInfoRequest>,
        ) -> Result<Response<pb::NodeInfoReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn session_grants(
            &self,
            _: Request<pb::SessionGrantsRequest>,
        ) -> Result<Response<pb::SessionGrantsReply>, Status> {
            Err(Status::unimplemented("fake"))
        }
    }

    async fn fake_node(term: u64) -> (String, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let term = Arc::new(AtomicU64::new(term));
        let service = LicenseServer::new(FakeNode { term: term.clone() });
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        (address, term, task)
    }

    // Fencing: a node answering from a term lower than one already seen is treated as
    // unavailable, and the call is answered by a node of the current term instead.
    #[tokio::test]
    async fn reply_from_a_lower_term_is_refused_and_retried_elsewhere() {
        let (a, a_term, a_task) = fake_node(5).await;
        let (b, b_term, b_task) = fake_node(5).await;
        let options = ClientOptions {
            call_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(10),
            follow_leader_hints: true,
            tls: ClientTls::plaintext(),
        };
        let client = Client::with_options(ServerList::from_addresses([&a, &b]).unwrap(), options);
        assert_eq!(client.status().await.unwrap().term, 5);
        assert_eq!(client.last_address(), Some(a.clone()));

        // `a` is deposed but still answers from its old term; `b` leads in term 6.
        a_term.store(4, Ordering::SeqCst);
        b_term.store(6, Ordering::SeqCst);
        assert_eq!(client.status().await.unwrap().term, 6);
        assert_eq!(client.last_address(), Some(b.clone()));
        assert_eq!(client.highest_term(), 6);

        // Only stale answers left: the call gives up as unreachable, naming the fence.
        b_term.store(5, Ordering::SeqCst);
        match client.status().await.unwrap_err() {
            ClientError::Unreachable { tried, last } => {
                assert_eq!(tried, vec![b.clone(), a.clone()]);
                assert!(last.contains("below term 6 seen before"), "{last}");
                let text = ClientError::Unreachable {
                    tried: tried.clone(),
                    last: last.clone(),
                }
                .to_string();
                assert!(
                    text.starts_with("no raftlm node answered from a term this client accepts"),
                    "{text}"
                );
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
        a_task.abort();
        b_task.abort();
    }
}
