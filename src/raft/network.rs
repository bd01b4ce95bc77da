//! The Raft transport: openraft's RPCs carried over tonic as opaque codec bytes.
//!
//! openraft asks [`Network::new_client`] for a client before every
//! replication stream, heartbeat and read check, so creating one must be
//! cheap: each peer gets one lazily connected tonic [`Channel`], created on
//! first use and cached for the life of the node (a channel reconnects by
//! itself). A peer that cannot be reached is reported as
//! [`Unreachable`], which makes openraft back off instead of retrying hot.
//!
//! Requests and responses are openraft's own types encoded by
//! [`crate::codec`]; the server side (`RaftService`) decodes, calls the local
//! [`Raft`], and encodes the `Result` back, so a remote Raft error travels as a
//! value. Message sizes are bounded by [`RAFT_MESSAGE_BYTES_MAX`]; an
//! AppendEntries over [`APPEND_BYTES_MAX`] is not sent but answered
//! `PayloadTooLarge` with a smaller entry count, which openraft retries with.
//!
//! Record formats: every message and reply says which record formats its
//! sender reads ([`Advertisement`]); a request is encoded in the newest
//! format its receiver said it reads (until it has said, the oldest format
//! that holds the request), and a reply in the newest its requester reads.
//! So a node of the previous release, which sends no such fields, is
//! written to in its own format (docs/decisions/0022-format-negotiation.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::{LogId, Member, Raft, TypeConfig};
use crate::clock::{self, Clock};
use crate::codec;
use crate::lease::boottime_ms;
use crate::license::HostId;
use crate::license::formats::Advertisement;
use crate::proto::v1::RaftMessage;
use crate::proto::v1::raft_client::RaftClient;
use crate::proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use crate::tls::acceptor::{Plane, Refusals, TlsState, peer_node, tls_reason};
use crate::tls::client::ClientTls;
use crate::tls::identity::node_dns_name;

/// Largest Raft message sent or accepted (an AppendEntries with many batches,
/// or one snapshot chunk).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest AppendEntries request sent (unless it holds a single entry, which
/// the batcher keeps under 2 MiB). openraft 0.9 gives an AppendEntries one
/// heartbeat interval to complete — sent, appended and synced on the
/// follower — and retries one that times out with the same entries, for
/// ever: a follower that fell behind by more than one interval can carry would
/// never catch up. 4 MiB takes a few tens of milliseconds on loopback with TLS
/// and a synced write; openraft's own limit is only by entry count (300).
pub const APPEND_BYTES_MAX: usize = 4 * 1024 * 1024;
const _: () = assert!(APPEND_BYTES_MAX < RAFT_MESSAGE_BYTES_MAX);

/// `None` if an AppendEntries of `entries` entries encoded in `bytes` bytes
/// may be sent; else how many entries to send instead (at least one: a
/// single entry is at most the batcher's `BATCH_BYTES_MAX`, below the limit).
pub fn entries_that_fit(entries: usize, bytes: usize) -> Option<u64> {
    if bytes <= APPEND_BYTES_MAX || entries <= 1 {
        return None;
    }
    // Entries are of similar size within one request; aim below the limit.
    let fit = (entries as u128 * APPEND_BYTES_MAX as u128 / bytes as u128) as u64;
    Some(fit.clamp(1, entries as u64 - 1))
}

/// How long a TCP connect to a peer may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A peer's channel, filed with the address and the TLS generation it was built for.
type CachedChannel = (String, u64, Channel);

/// What this node says about itself in every peer-plane message, request
/// or reply.
#[derive(Debug, Clone)]
pub struct SelfReport {
    /// Its host id (`None`: it has none).
    pub host_id: Option<HostId>,
    /// Its release and the record formats it reads.
    pub formats: Advertisement,
}

/// Creates Raft clients: one cached, lazily connected channel per peer.
#[derive(Clone)]
pub struct Network {
    /// The cluster name, for peers' certificate names.
    cluster: Arc<str>,
    /// Peer addresses from this node's config, by node id.
    peers: Arc<BTreeMap<u64, String>>,
    /// This node's TLS material; `None` in plaintext.
    tls: Option<Arc<TlsState>>,
    /// Failed handshakes with peers, each logged once.
    refusals: Arc<Refusals>,
    // std Mutex: held only to look up or insert a channel, never across `.await`.
    channels: Arc<Mutex<HashMap<u64, CachedChannel>>>,
    // When each peer last answered an RPC (std Mutex: one insert or look-up, no `.await`).
    contacts: Arc<Mutex<HashMap<u64, Instant>>>,
    /// Where each peer's wall clock stands, from the replies' `wall_ms`.
    clock: Arc<Clock>,
    /// This node's host id, sent with every request (`None`: it has none).
    host_id: Option<HostId>,
    /// The host id each peer's last reply carried (`None`: it has none;
    /// std Mutex: one insert or copy, no `.await`).
    peer_hosts: Arc<Mutex<BTreeMap<u64, Option<HostId>>>>,
    /// What this node says it reads, sent with every request.
    advertisement: Arc<Advertisement>,
    /// What each peer's last reply said it reads (std Mutex: no `.await`).
    peer_formats: Arc<Mutex<BTreeMap<u64, Advertisement>>>,
    /// Peer addresses moved with `raftlm cluster set-address`, as the
    /// applied state has them: they win over the config and the membership
    /// (std RwLock: one look-up or replacement, no `.await`).
    moved: Arc<RwLock<BTreeMap<u64, String>>>,
    /// Peers whose calls fail, for logging that can be kept: when it starts,
    /// a count once a minute, when it ends (std Mutex: no `.await`).
    outages: Arc<Mutex<HashMap<u64, Outage>>>,
}

/// Longest a `Handover` RPC may take: the stopping leader has stopped
/// serving, so a successor that does not answer at once is not waited for
/// (the others elect a leader when its heartbeats stop).
pub const HANDOVER_RPC_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an idle peer connection is pinged, so a vanished peer is noticed
/// before the next RPC waits on a dead connection.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How often openraft retries a peer that failed: quick to notice its
/// return, cheap while it is gone.
pub const PEER_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// How often a peer that stays unreachable is logged (as a count).
pub const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A peer whose calls have been failing.
struct Outage {
    since: Instant,
    /// Failed calls since the last log line.
    failed: u64,
    /// Failed calls in all.
    total: u64,
    logged: Instant,
}

impl Network {
    /// A factory with no connections yet: peers at `peers` (from this node's
    /// config), dialled with mutual TLS from `tls` (plaintext when `None`);
    /// each reply's wall clock is filed in `clock` and its host id kept
    /// ([`Network::peer_hosts`]); what this node says of itself (`report`)
    /// goes with requests.
    pub fn new(
        cluster: &str,
        peers: BTreeMap<u64, String>,
        tls: Option<Arc<TlsState>>,
        refusals: Arc<Refusals>,
        clock: Arc<Clock>,
        report: SelfReport,
    ) -> Network {
        Network {
            cluster: Arc::from(cluster),
            peers: Arc::new(peers),
            tls,
            refusals,
            channels: Arc::default(),
            contacts: Arc::default(),
            outages: Arc::default(),
            clock,
            host_id: report.host_id,
            peer_hosts: Arc::default(),
            advertisement: Arc::new(report.formats),
            peer_formats: Arc::default(),
            moved: Arc::default(),
        }
    }

    /// What this node says it reads.
    pub fn advertisement(&self) -> &Advertisement {
        &self.advertisement
    }

    /// What each peer that answered a Raft RPC from this node said it reads
    /// in its last reply.
    pub fn peer_formats(&self) -> BTreeMap<u64, Advertisement> {
        self.peer_formats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The format a request to `peer` is written in: the newest it said it
    /// reads, else (`None`) unknown.
    fn format_for(&self, peer: u64) -> Option<u8> {
        self.peer_formats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .map(|a| {
                a.reads_max
                    .clamp(codec::FORMAT_OLDEST, codec::FORMAT_NEWEST)
            })
    }

    /// `request` encoded for `peer`: in the newest format it said it reads;
    /// to a peer that has not said yet (a new node, or this node just
    /// started), in the oldest format that holds it, so a node of the
    /// previous release reads it if it can, and a new node that could not
    /// be written to in the oldest format hears from this node at all and
    /// says what it reads in its reply.
    fn encode_for<T: Serialize + ?Sized>(
        &self,
        peer: u64,
        request: &T,
    ) -> Result<Vec<u8>, codec::CodecError> {
        match self.format_for(peer) {
            Some(format) => codec::encode_as(format, request),
            None => match codec::encode_as(codec::FORMAT_OLDEST, request) {
                Err(codec::CodecError::TooNew(_)) => codec::encode(request),
                encoded => encoded,
            },
        }
    }

    /// Replaces the moved peer addresses (from the applied state).
    pub fn set_moved(&self, moved: BTreeMap<u64, String>) {
        *self.moved.write().unwrap_or_else(|p| p.into_inner()) = moved;
    }

    /// This node's host id, if it has one.
    pub fn host_id(&self) -> Option<HostId> {
        self.host_id
    }

    /// The host id each peer that answered a Raft RPC from this node
    /// reported in its last reply (`None`: it has none).
    pub fn peer_hosts(&self) -> BTreeMap<u64, Option<HostId>> {
        self.peer_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a failed call to `peer`: logged when the peer's calls start
    /// failing, then as a count at most once per [`OUTAGE_LOG_INTERVAL`]
    /// (openraft retries a down peer many times a second).
    fn call_failed(&self, peer: u64, address: &str, reason: &str) {
        let now = Instant::now();
        let mut outages = self.outages.lock().unwrap_or_else(|p| p.into_inner());
        match outages.get_mut(&peer) {
            None => {
                tracing::warn!(
                    peer,
                    address,
                    reason,
                    "peer unreachable; failed calls are counted and logged once a minute until it answers"
                );
                outages.insert(
                    peer,
                    Outage {
                        since: now,
                        failed: 0,
                        total: 1,
                        logged: now,
                    },
                );
            }
            Some(outage) => {
                outage.failed += 1;
                outage.total += 1;
                if now.duration_since(outage.logged) >= OUTAGE_LOG_INTERVAL {
                    tracing::warn!(
                        peer,
                        address,
                        reason,
                        failed = outage.failed,
                        down_for_s = now.duration_since(outage.since).as_secs(),
                        "peer still unreachable"
                    );
                    outage.failed = 0;
                    outage.logged = now;
                }
            }
        }
    }

    /// Records an answered call from `peer`, ending an outage if one runs.
    fn call_answered(&self, peer: u64) {
        let mut outages = self.outages.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outage) = outages.remove(&peer) {
            tracing::info!(
                peer,
                failed = outage.total,
                down_for_ms = outage.since.elapsed().as_millis() as u64,
                "peer reachable again"
            );
        }
    }

    /// When `peer` last answered a Raft RPC from this node, if ever.
    pub fn last_contact(&self, peer: u64) -> Option<Instant> {
        self.contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied()
    }

    /// Asks `target` to start an election at once: this node, the leader of
    /// `term`, has stopped serving (a planned handover).
    pub async fn handover(
        &self,
        from: u64,
        target: u64,
        member: &Member,
        term: u64,
        served: bool,
    ) -> Result<(), String> {
        let channel = self.channel(target, member).map_err(|e| e.to_string())?;
        let mut request =
            tonic::Request::new(crate::proto::v1::HandoverRequest { from, term, served });
        request.set_timeout(HANDOVER_RPC_TIMEOUT);
        RaftClient::new(channel)
            .handover(request)
            .await
            .map(|_| ())
            .map_err(|status| status.message().to_string())
    }

    /// Asks `target` how far it has applied the log: the index of its last
    /// applied entry (`None`: nothing applied yet). Bounded by `timeout`.
    pub async fn progress(
        &self,
        from: u64,
        target: u64,
        member: &Member,
        timeout: Duration,
    ) -> Result<Option<u64>, String> {
        let channel = self.channel(target, member).map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(crate::proto::v1::ProgressRequest { from });
        request.set_timeout(timeout);
        let mut client = RaftClient::new(channel);
        match tokio::time::timeout(timeout, client.progress(request)).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(status)) => Err(status.message().to_string()),
            Ok(Ok(reply)) => Ok(reply.into_inner().applied_index),
        }
    }

    /// Asks `target` whether it would vote for this node (`from`) in `term`
    /// with this last log id (see [`super::pre_vote`]): `Ok` with its answer,
    /// `Err` if it did not answer within `timeout`.
    pub async fn pre_vote(
        &self,
        from: u64,
        target: u64,
        member: &Member,
        ask: super::pre_vote::Ask,
        timeout: Duration,
    ) -> Result<crate::proto::v1::PreVoteReply, String> {
        let channel = self.channel(target, member).map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(crate::proto::v1::PreVoteRequest {
            from,
            term: ask.term.0,
            last_log_id: ask.last_log_id.map(log_id_message),
        });
        request.set_timeout(timeout);
        let mut client = RaftClient::new(channel);
        match tokio::time::timeout(timeout, client.pre_vote(request)).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(status)) => Err(status.message().to_string()),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
        }
    }

    /// The peer address of `target`: where `set-address` moved it, else
    /// from this node's config, else the membership's.
    fn address_of(&self, target: u64, member: &Member) -> String {
        if let Some(moved) = self
            .moved
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target)
        {
            return moved.clone();
        }
        self.peers
            .get(&target)
            .map_or(member.peer_address.as_str(), String::as_str)
            .to_string()
    }

    pub(crate) fn channel(&self, target: u64, member: &Member) -> Result<Channel, NetworkError> {
        let addr = self.address_of(target, member);
        let addr = addr.as_str();
        let generation = self.tls.as_ref().map_or(0, |t| *t.generation().borrow());
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_addr, cached_generation, channel)) = channels.get(&target)
            && cached_addr == addr
            && *cached_generation == generation
        {
            return Ok(channel.clone());
        }
        let client_tls = match &self.tls {
            None => ClientTls::plaintext(),
            Some(tls) => {
                let loaded = tls.current();
                ClientTls {
                    plaintext: false,
                    ca_pem: Some(loaded.ca_pem.clone()),
                    native_roots: false,
                    identity: Some((loaded.cert_pem.clone(), loaded.key_pem.clone())),
                    server_name: Some(node_dns_name(target, &self.cluster)),
                }
            }
        };
        let endpoint = client_tls
            .endpoint(addr, CONNECT_TIMEOUT)
            .map_err(|e| NetworkError::new(&std::io::Error::other(e)))?
            .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(target, (addr.to_string(), generation, channel.clone()));
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &Member) -> Connection {
        Connection {
            target,
            address: self.address_of(target, node),
            member: node.clone(),
            network: self.clone(),
        }
    }
}

/// A client for one peer.
///
/// openraft keeps one connection per replication stream for as long as the
/// stream lives (a whole term), so the channel is looked up on every call:
/// after a certificate reload the next call uses a channel with the new
/// identity.
pub struct Connection {
    target: u64,
    address: String,
    member: Member,
    network: Network,
}

type RpcResult<T, E> = Result<T, RPCError<u64, Member, RaftError<u64, E>>>;

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        request: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = self
            .network
            .encode_for(self.target, request)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(kind, payload, timeout).await
    }

    /// Sends an encoded request and decodes the reply.
    async fn send<Resp, E>(
        &mut self,
        kind: Kind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .network
            .channel(self.target, &self.member)
            .map_err(RPCError::Network)?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        let said = &self.network.advertisement;
        let mut request = tonic::Request::new(RaftMessage {
            payload,
            wall_ms: clock::wall_ms(),
            host_id: host_text(self.network.host_id),
            version: said.version.clone(),
            reads_formats_min: u32::from(said.reads_min),
            reads_formats_max: u32::from(said.reads_max),
        });
        request.set_timeout(timeout);
        let sent_boot_ms = boottime_ms();
        let reply = match kind {
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        if let Err(status) = &reply
            && let Some(reason) = tls_reason(status)
        {
            self.network
                .refusals
                .log_dial(self.target, &self.address, &reason);
        }
        match &reply {
            Ok(_) => self.network.call_answered(self.target),
            Err(status) => self
                .network
                .call_failed(self.target, &self.address, status.message()),
        }
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let reply = reply.into_inner();
        self.network
            .clock
            .record(self.target, reply.wall_ms, sent_boot_ms, boottime_ms());
        self.network
            .peer_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.target, HostId::parse(&reply.host_id));
        self.network
            .peer_formats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.target, advertisement_of(&reply));
        let result: Result<Resp, RaftError<u64, E>> =
            codec::decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.network
            .contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.target, Instant::now());
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        let payload = self
            .network
            .encode_for(self.target, &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let Some(hint) = entries_that_fit(rpc.entries.len(), payload.len()) {
            // openraft sends again with at most `hint` entries.
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.send(Kind::Append, payload, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(Kind::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call(Kind::Vote, &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(PEER_RETRY_INTERVAL))
    }
}

/// A log id as the `PreVote` RPC carries it.
fn log_id_message(id: LogId) -> crate::proto::v1::LogId {
    crate::proto::v1::LogId {
        term: id.leader_id.term,
        leader: id.leader_id.node_id,
        index: id.index,
    }
}

/// A log id from the `PreVote` RPC.
fn log_id_from(message: &crate::proto::v1::LogId) -> LogId {
    LogId::new(
        openraft::CommittedLeaderId::new(message.term, message.leader),
        message.index,
    )
}

/// Most planned handovers queued for the activator. A handover is believed
/// only from the node that leads the current term, which sends one as it
/// stops, so the queue holds one at most in practice. One that finds it full
/// is dropped with a warning and the election is started all the same: this
/// node then activates as after an election nobody planned.
pub const HANDOVERS_QUEUED_MAX: usize = 8;

/// The server side of the Raft transport: hands each RPC to the local Raft.
pub struct RaftService {
    raft: Raft,
    /// Boot-time ms when this node last heard from a leader (an
    /// AppendEntries it accepted) or granted a vote: the activator starts
    /// elections from this.
    contact: Arc<AtomicU64>,
    /// Told of a planned handover to this node: `(from, term, served)`.
    handovers: tokio::sync::mpsc::Sender<(u64, u64, bool)>,
    /// `timing.election_timeout_min_ms`: a pre-vote is refused while a
    /// leader was heard from more recently than this.
    election_timeout_min_ms: u64,
    /// The cluster name, for peers' certificate names; `None` in plaintext
    /// (no sender check).
    cluster: Option<String>,
    refusals: Arc<Refusals>,
    /// This node's host id, written as replies carry it (empty: none).
    host_id: String,
    /// What this node says it reads, in every reply; requests in a newer
    /// format are refused.
    advertisement: Advertisement,
    /// Formats of refused requests, each logged once.
    refused_formats: Mutex<BTreeSet<u8>>,
}

impl RaftService {
    /// A tonic service for the local Raft node, with message-size limits set.
    /// With `cluster` set (TLS on), every RPC's claimed sender must be the
    /// node its connection's certificate names.
    pub fn server(
        raft: Raft,
        cluster: Option<String>,
        refusals: Arc<Refusals>,
        contact: Arc<AtomicU64>,
        handovers: tokio::sync::mpsc::Sender<(u64, u64, bool)>,
        report: SelfReport,
        election_timeout_min_ms: u64,
    ) -> RaftServer<RaftService> {
        RaftServer::new(RaftService {
            raft,
            contact,
            handovers,
            election_timeout_min_ms,
            cluster,
            refusals,
            host_id: host_text(report.host_id),
            advertisement: report.formats,
            refused_formats: Mutex::default(),
        })
        .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX)
    }

    /// Checks that `claimed` (the sender an RPC names) is the node the
    /// connection's certificate names.
    fn check_sender<T>(
        &self,
        request: &tonic::Request<T>,
        claimed: u64,
    ) -> Result<(), tonic::Status> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let certs = request.peer_certs();
        let reason = match peer_node(certs.as_deref().map(Vec::as_slice), cluster) {
            Ok(id) if id == claimed => return Ok(()),
            Ok(id) => format!("node {id}'s certificate sent a Raft request as node {claimed}"),
            Err(reason) => reason,
        };
        let from = request
            .remote_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        self.refusals.log(Plane::Peer, from, &reason);
        Err(tonic::Status::permission_denied(reason))
    }
}

impl RaftService {
    /// Decodes a request's payload, refusing one in a format this node does
    /// not read (logged once per format) rather than failing on it later.
    fn decode<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, tonic::Status> {
        if let Some(found) = codec::format_of(payload) {
            self.check_format(found, "a Raft message")?;
        }
        codec::decode(payload).map_err(|e| {
            tonic::Status::invalid_argument(format!("raft message does not decode: {e}"))
        })
    }

    /// Refuses `what` written in `found` unless this node reads it.
    fn check_format(&self, found: u8, what: &str) -> Result<(), tonic::Status> {
        if self.advertisement.reads(found) {
            return Ok(());
        }
        let reason = format!(
            "{what} in record format {found} refused: this node ({}) does not read it",
            self.advertisement
        );
        if self
            .refused_formats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(found)
        {
            tracing::warn!(%reason, "refused a message this node cannot read; logged once per format");
        }
        Err(tonic::Status::failed_precondition(reason))
    }

    /// A reply in the newest format the requester said it reads.
    fn reply<T: Serialize>(
        &self,
        value: &T,
        request: &RaftMessage,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let format = advertisement_of(request)
            .reads_max
            .clamp(codec::FORMAT_OLDEST, codec::FORMAT_NEWEST);
        let payload = codec::encode_as(format, value)
            .map_err(|e| tonic::Status::internal(format!("raft reply does not encode: {e}")))?;
        Ok(tonic::Response::new(RaftMessage {
            payload,
            wall_ms: clock::wall_ms(),
            host_id: self.host_id.clone(),
            version: self.advertisement.version.clone(),
            reads_formats_min: u32::from(self.advertisement.reads_min),
            reads_formats_max: u32::from(self.advertisement.reads_max),
        }))
    }
}

/// What a message's sender said it reads; a message without it comes from
/// a release before format 7.
fn advertisement_of(message: &RaftMessage) -> Advertisement {
    if message.reads_formats_max == 0 {
        return Advertisement::before_advertising();
    }
    let format = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
    let mut version = message.version.clone();
    version.truncate(crate::license::formats::VERSION_TEXT_MAX);
    Advertisement {
        version,
        reads_min: format(message.reads_formats_min),
        reads_max: format(message.reads_formats_max),
    }
}

/// A host id as the peer plane carries it: `host:<hex>`, or empty.
fn host_text(host_id: Option<HostId>) -> String {
    host_id.map(|id| id.to_string()).unwrap_or_default()
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.decode(&request.get_ref().payload)?;
        self.check_sender(&request, rpc.vote.leader_id().voted_for().unwrap_or(0))?;
        let reply = self.raft.append_entries(rpc).await;
        if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.contact.store(boottime_ms(), Ordering::Relaxed);
        }
        self.reply(&reply, request.get_ref())
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: VoteRequest<u64> = self.decode(&request.get_ref().payload)?;
        self.check_sender(&request, rpc.vote.leader_id().voted_for().unwrap_or(0))?;
        let reply = self.raft.vote(rpc).await;
        if matches!(&reply, Ok(r) if r.vote_granted) {
            self.contact.store(boottime_ms(), Ordering::Relaxed);
        }
        self.reply(&reply, request.get_ref())
    }

    async fn handover(
        &self,
        request: tonic::Request<crate::proto::v1::HandoverRequest>,
    ) -> Result<tonic::Response<crate::proto::v1::HandoverReply>, tonic::Status> {
        let handover = *request.get_ref();
        self.check_sender(&request, handover.from)?;
        // Any member's certificate can send a handover: it is acted on only
        // if this node's own view is that the sender leads that term (it has
        // not moved on: the sender stops before it sends).
        let (term, leader) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_term, m.current_leader)
        };
        if term != handover.term || leader != Some(handover.from) {
            tracing::warn!(
                from = handover.from,
                term = handover.term,
                current_term = term,
                ?leader,
                "handover refused: the sender does not lead that term in this node's view"
            );
            return Err(tonic::Status::failed_precondition(format!(
                "node {} does not lead term {} in this node's view (term {term}, leader {leader:?})",
                handover.from, handover.term
            )));
        }
        // No pre-vote here (decision 0018): the third node heard from the
        // stopping leader moments ago and would refuse one for a whole
        // election timeout. A pre-vote protects availability, not safety, and
        // this election was asked for by the leader of `term` itself, which
        // has stopped serving: it cannot depose a healthy leader.
        // The activator hears of it first, so it knows when it wins the election.
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) =
            self.handovers
                .try_send((handover.from, handover.term, handover.served))
        {
            tracing::warn!(
                from = handover.from,
                term = handover.term,
                "handover not passed to the activator: {HANDOVERS_QUEUED_MAX} are queued already; electing anyway"
            );
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(tonic::Response::new(crate::proto::v1::HandoverReply {}))
    }

    async fn progress(
        &self,
        request: tonic::Request<crate::proto::v1::ProgressRequest>,
    ) -> Result<tonic::Response<crate::proto::v1::ProgressReply>, tonic::Status> {
        self.check_sender(&request, request.get_ref().from)?;
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        Ok(tonic::Response::new(crate::proto::v1::ProgressReply {
            applied_index: m.last_applied.map(|l| l.index),
            term: m.current_term,
        }))
    }

    async fn pre_vote(
        &self,
        request: tonic::Request<crate::proto::v1::PreVoteRequest>,
    ) -> Result<tonic::Response<crate::proto::v1::PreVoteReply>, tonic::Status> {
        let from = request.get_ref().from;
        self.check_sender(&request, from)?;
        let ask = super::pre_vote::Ask {
            term: crate::license::ids::Term(request.get_ref().term),
            last_log_id: request.get_ref().last_log_id.as_ref().map(log_id_from),
        };
        // This node's view, read and not changed: a pre-vote saves no vote,
        // raises no term and does not count as hearing from a leader.
        let (term, leading, quorum_silence) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (
                m.current_term,
                m.state.is_leader() && m.current_leader == Some(m.id),
                m.millis_since_quorum_ack,
            )
        };
        let last_log_id = self.raft.data_metrics().borrow().last_log;
        // A leader hears from itself: its silence is how long ago a quorum
        // last acknowledged it (none yet: silent). A follower's is how long
        // ago it last accepted an AppendEntries or granted a vote.
        let silence_ms = if leading {
            quorum_silence.unwrap_or(u64::MAX)
        } else {
            boottime_ms().saturating_sub(self.contact.load(Ordering::Relaxed))
        };
        let view = super::pre_vote::View {
            term: crate::license::ids::Term(term),
            last_log_id,
            silence_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
        };
        let verdict = super::pre_vote::answer(&ask, &view);
        match &verdict {
            Ok(()) => tracing::debug!(from, term = ask.term.0, "pre-vote granted"),
            Err(refusal) => tracing::debug!(from, term = ask.term.0, %refusal, "pre-vote refused"),
        }
        Ok(tonic::Response::new(crate::proto::v1::PreVoteReply {
            granted: verdict.is_ok(),
            term,
            refusal: verdict.err().map(|r| r.to_string()).unwrap_or_default(),
        }))
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.decode(&request.get_ref().payload)?;
        self.check_sender(&request, rpc.vote.leader_id().voted_for().unwrap_or(0))?;
        // The snapshot's data is a record of its own: its first chunk starts
        // with the format it was written in.
        if rpc.offset == 0
            && let Some(found) = codec::format_of(&rpc.data)
        {
            self.check_format(found, "a snapshot")?;
        }
        let reply = self.raft.install_snapshot(rpc).await;
        self.reply(&reply, request.get_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A request under the limit is sent; one over it asks for fewer entries
    // (never zero, never as many); a single entry is always sent.
    #[test]
    fn oversized_appends_ask_for_fewer_entries() {
        assert_eq!(entries_that_fit(300, APPEND_BYTES_MAX), None);
        assert_eq!(entries_that_fit(1, APPEND_BYTES_MAX * 3), None);
        assert_eq!(entries_that_fit(300, APPEND_BYTES_MAX * 3), Some(100));
        assert_eq!(entries_that_fit(2, APPEND_BYTES_MAX + 1), Some(1));
        assert_eq!(entries_that_fit(10, usize::MAX), Some(1));
    }
}
