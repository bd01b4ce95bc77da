//! One raftlm node: storage, Raft, the services, and their start-up and shutdown.
//!
//! [`Node::start`] opens the node's sled database, starts openraft with the
//! configured timing, forms the cluster if this node is pristine (every node
//! initializes with the same member list, which openraft documents as safe,
//! so the three nodes form the cluster in any start order), serves gRPC on
//! the node's own address, and starts the background tasks: the batcher, the
//! session sweeper and the license-directory importer. [`Node::shutdown`]
//! stops them all and waits for them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, warn};

use crate::activator::{self, Lease};
use crate::clock::Clock;
use crate::config::Config;
use crate::license::HostId;
use crate::license::formats::Advertisement;
use crate::license::signature::KeyError;
use crate::proto::v1::license_server::LicenseServer;
use crate::raft::network::{Network, RaftService, SelfReport};
use crate::raft::store::{self, StoreError};
use crate::raft::{Member, Raft};
use crate::server::Shared;
use crate::server::batcher::Batcher;
use crate::server::license::LicenseService;
use crate::server::sessions::SessionTracker;
use crate::server::sweeper;
use crate::tls::acceptor::{self, MemberIds, Plane, Refusals, TlsError, TlsState};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be opened or is corrupt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A vendor key file could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The node's address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// openraft refused the configuration or failed to start.
    #[error("raft could not start: {0}")]
    Raft(String),
    /// The certificate files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `--join` on a data directory that holds something.
    #[error(
        "--join starts a new node with an empty data directory, but {} is not empty: start this node without --join (it is a member already), or move the directory aside",
        .0.display()
    )]
    JoinNotEmpty(std::path::PathBuf),
    /// The record of a restore ([`crate::raft::restored::RESTORED_FILE`]) cannot be read.
    #[error(
        "cannot read what this node was restored from ({0}): restore the node again from the same backup as the others"
    )]
    Restored(String),
}

/// How a node starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// As a member: a pristine node forms the cluster of its config.
    Member,
    /// As a new node waiting to be added to a running cluster.
    Join,
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
    peer_address: std::net::SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, if anywhere.
    http_address: Option<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    /// Stops the peer plane, after the activator has stopped.
    peer_stop: watch::Sender<bool>,
    /// The activator: awaited before Raft stops, so that a stopping leader
    /// releases the access point and hands over first.
    activator: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

/// openraft's heartbeat interval: twice raftlm's `heartbeat_ms`, but below
/// the lease. openraft sends its own heartbeats this often and gives every
/// RPC of a quorum round this long; the activator starts a round every
/// `heartbeat_ms` without waiting for the last, so one slow round (on a
/// loaded machine) no longer lets the lease lapse. Safety does not depend on
/// it: a round's lease starts when the round is started, and voters refuse
/// votes for `election_timeout_max_ms` after each AppendEntries they get.
pub fn openraft_heartbeat_ms(timing: &crate::config::Timing) -> u64 {
    (2 * timing.heartbeat_ms)
        .min(timing.lease_ms.saturating_sub(timing.heartbeat_ms))
        .max(timing.heartbeat_ms)
}

/// How long the leader waits for a follower to receive *and install* a
/// snapshot (openraft's `install_snapshot_timeout`, 200 ms by default).
/// Installing verifies every license line's signature and syncs the snapshot
/// to disk before answering, which on a loaded machine or a slow disk takes
/// longer than 200 ms; with the default, the leader gave up on every attempt,
/// sent the snapshot again, and a follower that had to catch up by snapshot
/// never did — with both followers in that state nothing committed
/// (`raftlm-chaos`, which keeps few log entries behind a snapshot, found it).
/// The wait only holds up replication to the follower that needs it.
pub const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 10_000;

/// Most entries in one AppendEntries: enough that a follower catching up
/// moves fast. Bytes are bounded apart from this (`APPEND_BYTES_MAX`,
/// `src/raft/network.rs`).
pub const APPEND_ENTRIES_MAX: u64 = 300;

/// openraft's configuration from ours.
pub fn raft_config(config: &Config) -> Result<openraft::Config, NodeError> {
    let t = &config.timing;
    let raft = openraft::Config {
        cluster_name: config.cluster_name.clone(),
        heartbeat_interval: openraft_heartbeat_ms(t),
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot.logs_since_last),
        max_in_snapshot_log_to_keep: config.snapshot.logs_kept,
        max_payload_entries: APPEND_ENTRIES_MAX,
        install_snapshot_timeout: SNAPSHOT_INSTALL_TIMEOUT_MS,
        // openraft's own election timer is off: the activator starts every
        // election, and only after a pre-vote a majority grants
        // (`src/raft/pre_vote.rs`). openraft's timer would raise the term of
        // a node cut off from its peers at every timeout, and that term
        // would depose a healthy leader when the node came back.
        enable_elect: false,
        ..Default::default()
    };
    raft.validate().map_err(|e| NodeError::Raft(e.to_string()))
}

async fn bind(
    address: Option<std::net::SocketAddr>,
    named: &str,
) -> Result<TcpListener, NodeError> {
    let address = address.ok_or_else(|| NodeError::Bind {
        address: named.to_string(),
        source: std::io::Error::other("not an IP socket address"),
    })?;
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Bind {
            address: address.to_string(),
            source,
        })
}

/// Binds the node's own client and peer addresses, as its config names them.
async fn bind_own(config: &Config) -> Result<(TcpListener, TcpListener), NodeError> {
    let client = bind(config.listen_address(), config.own_address()).await?;
    let peer = bind(config.peer_listen_address(), config.own_peer_address()).await?;
    Ok((client, peer))
}

impl Node {
    /// Starts a node, binding its client and peer addresses from the config.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let (client, peer) = bind_own(&config).await?;
        Node::start_with_listeners(config, client, peer).await
    }

    /// Starts a node on already bound listeners for the client plane and the
    /// peer plane (tests bind `127.0.0.1:0`).
    pub async fn start_with_listeners(
        config: Config,
        client: TcpListener,
        peer: TcpListener,
    ) -> Result<Node, NodeError> {
        Node::start_as(config, client, peer, Start::Member).await
    }

    /// Starts a new node that waits to be added to a running cluster
    /// (`raftlm server --join`, then `raftlm cluster add-node`): it never
    /// forms a cluster of its own, and its data directory must be empty
    /// ([`NodeError::JoinNotEmpty`] otherwise).
    pub async fn join(config: Config) -> Result<Node, NodeError> {
        let (client, peer) = bind_own(&config).await?;
        Node::join_with_listeners(config, client, peer).await
    }

    /// [`Node::join`] on already bound listeners.
    pub async fn join_with_listeners(
        config: Config,
        client: TcpListener,
        peer: TcpListener,
    ) -> Result<Node, NodeError> {
        Node::start_as(config, client, peer, Start::Join).await
    }

    /// Starts the node in the span every log line of it carries.
    async fn start_as(
        config: Config,
        client: TcpListener,
        peer: TcpListener,
        start: Start,
    ) -> Result<Node, NodeError> {
        let span = tracing::info_span!("node", id = config.node_id);
        Node::start_inner(config, client, peer, start)
            .instrument(span)
            .await
    }

    async fn start_inner(
        config: Config,
        listener: TcpListener,
        peer_listener: TcpListener,
        start: Start,
    ) -> Result<Node, NodeError> {
        if start == Start::Join
            && !crate::raft::restore::is_empty_dir(&config.data_dir).unwrap_or(false)
        {
            return Err(NodeError::JoinNotEmpty(config.data_dir.clone()));
        }
        let node_id = config.node_id;
        // Tasks spawned below run outside the caller's span: give each the
        // node span `start_with_listeners` entered (one `node{id=N}`, not two).
        let span = tracing::Span::current();
        let local = |l: &TcpListener, named: &str| {
            l.local_addr().map_err(|source| NodeError::Bind {
                address: named.to_string(),
                source,
            })
        };
        let address = local(&listener, config.own_address())?;
        let peer_address = local(&peer_listener, config.own_peer_address())?;
        for warning in config.warnings() {
            warn!("{warning}");
        }
        let tls = match config.tls_files() {
            Some(files) => {
                if let Some(warning) = acceptor::key_permissions_warning(&files.key) {
                    warn!("{warning}");
                }
                Some(Arc::new(TlsState::load(
                    files,
                    &config.cluster_name,
                    node_id,
                )?))
            }
            None => {
                warn!(
                    "tls.plaintext is set: this cluster is UNENCRYPTED and anyone who reaches a node can act as a peer or an administrator"
                );
                None
            }
        };
        if crate::raft::disk_sync::SKIPPED {
            warn!(
                "built with the test-only feature skip-fdatasync: acknowledged writes do NOT survive a power cut"
            );
        }
        let refusals = Arc::new(Refusals::default());
        let trusted = config
            .vendor_keys
            .iter()
            .map(|path| crate::keys::load_public_key(path))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut log_store, state_machine) = store::open(&config.data_dir)?;
        let owner = store::Owner {
            cluster_name: config.cluster_name.clone(),
            node_id,
            cluster_id: tls.as_ref().map(|t| t.current().cluster_id.to_string()),
        };
        if let Some(warning) = store::claim(&config.data_dir, &owner)? {
            warn!("{warning}");
        }
        let restored_from = crate::raft::restored::RestoredFrom::read(&config.data_dir)
            .map_err(NodeError::Restored)?;
        if let Some(record) = &restored_from {
            info!(backup = %record.backup(), restored_term = record.restored_term, "restored from a backup");
        }
        log_store.break_leader_tail(node_id);
        if crate::fault::broken(crate::fault::Break::RestoredLeader) {
            warn!(
                "restored-leader is broken: a node that led keeps its vote and openraft restores it as leader of its old term"
            );
        } else if let Some((stored, now)) = log_store.demote_restored_leadership(node_id)? {
            info!(%stored, %now, "this node led before it stopped: it starts as a follower and leads again only by winning an election in a higher term");
        }
        let peers = config
            .nodes
            .iter()
            .map(|n| (n.id, n.peer_address.clone()))
            .collect();
        let clock = Arc::new(Clock::new(
            node_id,
            config.nodes.iter().map(|n| n.id).collect(),
            config.timing.clock_skew_max_ms,
        ));
        if crate::clock::fault_injection_active() {
            warn!(
                "built with the test-only feature fault-injection and RAFTLM_FAULT_CLOCK_FILE set: this node's wall clock is shifted by that file"
            );
        }
        crate::fault::set_node(node_id);
        if let Some(point) = crate::fault::exit_point() {
            warn!(
                ?point,
                "built with the test-only feature fault-injection and RAFTLM_FAULT_EXIT set: this node exits on purpose at that point"
            );
        }
        if !crate::fault::breaks().is_empty() {
            warn!(
                breaks = ?crate::fault::breaks(),
                "built with the test-only feature fault-injection and RAFTLM_FAULT_BREAK set: these parts are broken on purpose"
            );
        }
        let host_id = read_host_id(config.machine_id_file());
        let report = SelfReport {
            host_id,
            formats: Advertisement::this_build(formats_cap()),
        };
        let network = Network::new(
            &config.cluster_name,
            peers,
            tls.clone(),
            refusals.clone(),
            clock.clone(),
            report.clone(),
        );
        if config.access_point.mode == crate::config::AccessPointMode::Command {
            activator::clear_stale_address(&config.access_point).await;
        }
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config(&config)?),
            network.clone(),
            log_store.clone(),
            state_machine.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        if start == Start::Join {
            info!(
                "joining: this node waits to be added (raftlm cluster add-node) and forms no cluster of its own"
            );
        } else if !initialized {
            let members: BTreeMap<u64, Member> = config
                .nodes
                .iter()
                .map(|n| {
                    let member = Member {
                        address: n.address.clone(),
                        peer_address: n.peer_address.clone(),
                    };
                    (n.id, member)
                })
                .collect();
            info!(?members, "pristine node: forming the cluster");
            if let Err(error) = raft.initialize(members).await {
                // NotAllowed means another path already initialized it; anything else is logged.
                warn!(%error, "initialize");
            }
        }

        let (batcher, batcher_task) = Batcher::spawn(raft.clone(), config.batching, clock.clone());
        let config = Arc::new(config);
        let shared = Arc::new(Shared {
            node_id,
            config: config.clone(),
            raft: raft.clone(),
            state: state_machine,
            log: log_store,
            batcher,
            sessions: SessionTracker::default(),
            trusted,
            network,
            lease: Arc::new(Lease::default()),
            tls: tls.clone(),
            refusals: refusals.clone(),
            stepped_back: Arc::new(std::sync::OnceLock::new()),
            clock,
            shutdown_requested: tokio::sync::Notify::new(),
            reread_license_dir: tokio::sync::Notify::new(),
            unheld_writes: crate::server::rate::AddressRate::new(
                config.limits.unheld_writes_per_address_per_s,
            ),
        });
        let (stop, _) = watch::channel(false);
        let mut tasks = vec![batcher_task];
        // The peer plane admits the applied membership's nodes; a pristine
        // node admits its config's (the membership it is about to form), a
        // joining one every node of the cluster until it is added.
        let members = match start {
            Start::Join => MemberIds::unknown(),
            Start::Member => MemberIds::of(config.nodes.iter().map(|n| n.id)),
        };
        let member_hosts = crate::config::member_ips(&config.nodes);

        let (health, health_service) = tonic_health::server::health_reporter();
        report_health(&health, false).await;
        let client_router = crate::server::server_builder()
            .add_service(health_service)
            .add_service(crate::server::license_service(shared.clone()))
            .add_service(crate::server::admin_service(shared.clone()));
        let (handover_sender, handover_receiver) =
            tokio::sync::mpsc::channel(crate::raft::network::HANDOVERS_QUEUED_MAX);
        let leader_contact = Arc::new(std::sync::atomic::AtomicU64::new(activator::boottime_ms()));
        let peer_router = crate::server::server_builder().add_service(RaftService::server(
            raft.clone(),
            tls.as_ref().map(|_| config.cluster_name.clone()),
            refusals.clone(),
            leader_contact.clone(),
            handover_sender,
            report,
            config.timing.election_timeout_min_ms,
        ));
        let restore_check =
            crate::raft::restored::RestoreCheck::new(restored_from, shared.state.clone());
        let peer_router = peer_router.add_service(
            crate::raft::restored::RestoreCheckService::server(restore_check.clone()),
        );
        // The access point serves the same router as the node's own address.
        let serve: activator::ServeListener = {
            let router = client_router.clone();
            let member_hosts = member_hosts.clone();
            let tls = tls.clone();
            let refusals = refusals.clone();
            let span = span.clone();
            Arc::new(move |listener, mut stopped| {
                let serving = crate::server::serve(
                    router.clone(),
                    listener,
                    tls.clone(),
                    Plane::Client,
                    crate::tls::acceptor::Members {
                        ids: MemberIds::default(),
                        addresses: member_hosts.clone(),
                    },
                    refusals.clone(),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                );
                tokio::spawn(
                    async move {
                        if let Err(error) = serving.await {
                            error!(%error, "access point server failed");
                        }
                    }
                    .instrument(span.clone()),
                )
            })
        };
        let propose: activator::Propose = {
            let shared = shared.clone();
            Arc::new(move |command| {
                let batcher = shared.batcher.clone();
                let shared = shared.clone();
                Box::pin(async move {
                    let own = match &command {
                        crate::license::state::Command::Activate { cluster_id, .. } => *cluster_id,
                        _ => None,
                    };
                    let result = batcher.submit(command).await.map_err(|e| e.to_string());
                    // The identity is recorded once; a node whose CA was
                    // re-issued since serves under the recorded one.
                    if let Some(own) = own
                        && let Some(recorded) = shared.state.read(|s| s.cluster_id().copied())
                        && recorded != own
                    {
                        warn!(
                            %own,
                            %recorded,
                            "this node's CA is not the CA the cluster identity was recorded from: license files stay bound to the recorded identity"
                        );
                    }
                    result
                })
            })
        };
        let context = Arc::new(activator::Context {
            node_id,
            config: config.clone(),
            raft: raft.clone(),
            lease: shared.lease.clone(),
            clock: shared.clock.clone(),
            stepped_back: shared.stepped_back.clone(),
            propose,
            serve,
            leader_contact,
            handovers: std::sync::Mutex::new(Some(handover_receiver)),
            network: shared.network.clone(),
            tls: tls.clone(),
            restore_check,
        });
        // The peer plane stops after the activator: a stopping leader that
        // handed over must still be able to grant its successor's vote.
        let (peer_stop, _) = watch::channel(false);
        for (router, listener, plane, stopped) in [
            (client_router, listener, Plane::Client, stop.subscribe()),
            (
                peer_router,
                peer_listener,
                Plane::Peer,
                peer_stop.subscribe(),
            ),
        ] {
            let serving = crate::server::serve(
                router,
                listener,
                tls.clone(),
                plane,
                crate::tls::acceptor::Members {
                    ids: members.clone(),
                    addresses: member_hosts.clone(),
                },
                refusals.clone(),
                wait_stop(stopped),
            );
            tasks.push(tokio::spawn(
                async move {
                    if let Err(error) = serving.await {
                        error!(%error, ?plane, "gRPC server failed");
                    }
                }
                .instrument(span.clone()),
            ));
        }
        if let Some(tls) = tls {
            tasks.push(tokio::spawn(
                acceptor::watch_files(tls, wait_stop(stop.subscribe())).instrument(span.clone()),
            ));
        }
        let activator = tokio::spawn(
            activator::run(context, wait_stop(stop.subscribe())).instrument(span.clone()),
        );
        tasks.push(tokio::spawn(
            sweeper::sweep(shared.clone(), wait_stop(stop.subscribe())).instrument(span.clone()),
        ));
        tasks.push(tokio::spawn(
            crate::server::hosts::watch(shared.clone(), wait_stop(stop.subscribe()))
                .instrument(span.clone()),
        ));
        tasks.push(tokio::spawn(
            crate::server::formats::watch(shared.clone(), wait_stop(stop.subscribe()))
                .instrument(span.clone()),
        ));
        tasks.push(tokio::spawn(
            import_license_dir(shared.clone(), wait_stop(stop.subscribe()))
                .instrument(span.clone()),
        ));
        tasks.push(tokio::spawn(
            watch_health(shared.clone(), health, wait_stop(stop.subscribe()))
                .instrument(span.clone()),
        ));
        tasks.push(tokio::spawn(
            watch_raft_core(shared.raft.clone(), wait_stop(stop.subscribe()))
                .instrument(span.clone()),
        ));
        tasks.push(tokio::spawn(
            crate::server::membership::follow(shared.clone(), members, wait_stop(stop.subscribe()))
                .instrument(span.clone()),
        ));
        let http_address = match config.http.listen {
            None => None,
            Some(listen) => {
                let listener = bind(Some(listen), "http.listen").await?;
                let bound = listener.local_addr().ok();
                tasks.push(tokio::spawn(
                    crate::server::http::serve(
                        shared.clone(),
                        listener,
                        wait_stop(stop.subscribe()),
                    )
                    .instrument(span.clone()),
                ));
                info!(address = ?bound, "HTTP surface: /healthz, /readyz, /metrics");
                bound
            }
        };
        info!(%address, %peer_address, "node started");
        Ok(Node {
            shared,
            address,
            peer_address,
            http_address,
            stop,
            peer_stop,
            activator,
            tasks,
        })
    }

    /// The node's parts, shared by its services.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The local Raft node.
    pub fn raft(&self) -> &Raft {
        &self.shared.raft
    }

    /// The address the node serves clients on (license and admin services).
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// The address the node serves the peer plane (Raft RPCs) on.
    pub fn peer_address(&self) -> std::net::SocketAddr {
        self.peer_address
    }

    /// Where the HTTP surface listens (`[http] listen`), if it is on.
    pub fn http_address(&self) -> Option<std::net::SocketAddr> {
        self.http_address
    }

    /// Stops serving, stops Raft and every task, and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // Release and hand over first (bounded: the activator gives up on a
        // down that keeps failing after STOP_RELEASE_MAX).
        let limit = activator::STOP_RELEASE_MAX + ACTIVATOR_STOP_SLACK;
        if tokio::time::timeout(limit, self.activator).await.is_err() {
            warn!("the activator did not stop within {limit:?}");
        }
        let _ = self.peer_stop.send(true);
        match tokio::time::timeout(RAFT_STOP_MAX, self.shared.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "raft shutdown"),
            Err(_) => warn!("raft did not stop within {RAFT_STOP_MAX:?}; going on"),
        }
        let Node { shared, tasks, .. } = self;
        // The batcher stops when the last handle to it is dropped.
        drop(shared);
        // The servers stop taking requests at once and finish the ones in
        // flight; connections that stay open (a client's idle connection, a
        // health Watch) do not hold the stop: whatever has not ended by the
        // deadline is aborted, which closes its connections.
        let deadline = tokio::time::Instant::now() + TASKS_STOP_MAX;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                // Awaited after the abort: the task (and the store handles
                // it holds) is dropped before this returns, so the data
                // directory can be opened again at once.
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// This machine's host id, derived from the machine id in `path`
/// ([`crate::license::host`]); the error names the file.
pub fn machine_host_id(path: &Path) -> Result<HostId, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    HostId::from_machine_id(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The environment variable that caps the record formats a node says it
/// reads and accepts on the peer plane: a test setting that makes a node of
/// this release behave, on the wire, as one of the previous release does.
pub const FORMATS_MAX_ENV: &str = "RAFTLM_FORMATS_MAX";

/// [`FORMATS_MAX_ENV`], logged when set.
fn formats_cap() -> Option<u8> {
    let text = std::env::var(FORMATS_MAX_ENV).ok()?;
    match text.trim().parse::<u8>() {
        Ok(cap) => {
            warn!(
                cap,
                "{FORMATS_MAX_ENV} is set: this node says it reads record formats up to {cap} and refuses newer ones on the peer plane (a test setting)"
            );
            Some(cap)
        }
        Err(_) => {
            warn!(value = %text, "{FORMATS_MAX_ENV} is not a format number; ignored");
            None
        }
    }
}

/// [`machine_host_id`], logged: a node without a host id runs, but license
/// lines bound to host ids do not count it.
fn read_host_id(path: &Path) -> Option<HostId> {
    match machine_host_id(path) {
        Ok(id) => {
            info!(host_id = %id, file = %path.display(), "host id");
            Some(id)
        }
        Err(error) => {
            warn!(%error, "no host id: license lines bound to host ids do not count this node (set machine_id_file)");
            None
        }
    }
}

/// Logs, once, that the Raft core stopped with a fatal error (a storage
/// error, a panic in it): the node no longer takes part in the cluster. (With
/// openraft's own log off by default, this is where it shows.)
async fn watch_raft_core(raft: crate::raft::Raft, stop: impl std::future::Future<Output = ()>) {
    let mut metrics = raft.metrics();
    tokio::pin!(stop);
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            if matches!(fatal, openraft::error::Fatal::Stopped) {
                return;
            }
            error!(%fatal, "the Raft core stopped: this node no longer takes part in the cluster; see the log above, then restart it");
            return;
        }
        tokio::select! {
            _ = &mut stop => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// Longest a stopping node waits for the Raft core to stop.
pub const RAFT_STOP_MAX: Duration = Duration::from_secs(2);
/// Longest a stopping node waits, after the Raft core stopped, for its
/// servers and background tasks to finish what they were doing; then they
/// are aborted. The access point was released and handed over before.
pub const TASKS_STOP_MAX: Duration = Duration::from_millis(300);

/// How much longer than the activator's `STOP_RELEASE_MAX` a shutdown waits
/// for it: room for the handover that follows the release
/// (`HANDOVER_CATCH_UP_MAX`, the RPC, `HANDOVER_WAIT_MAX`).
pub const ACTIVATOR_STOP_SLACK: Duration = Duration::from_secs(5);
/// How often the license-directory importer looks again (whether this node
/// became active, and the directory), besides a SIGHUP or a new Raft view.
pub const LICENSE_DIR_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the gRPC health status is brought in line with whether this
/// node serves.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Sets the gRPC health status of the server (`""`) and of the license
/// service: SERVING only while this node is the active node.
async fn report_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    if serving {
        health.set_serving::<LicenseServer<LicenseService>>().await;
    } else {
        health
            .set_not_serving::<LicenseServer<LicenseService>>()
            .await;
    }
}

/// Keeps the gRPC health status truthful: a load balancer or monitor asking
/// a standby (which refuses every license request) hears NOT_SERVING, the
/// active node SERVING, and a stopping node NOT_SERVING.
async fn watch_health(
    shared: Arc<Shared>,
    health: tonic_health::server::HealthReporter,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut reported = false;
    loop {
        let serving = shared.serving().is_ok();
        if serving != reported {
            report_health(&health, serving).await;
            reported = serving;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
        }
    }
    report_health(&health, false).await;
}

async fn wait_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Imports the license directory's files through the log when this node
/// becomes active: each file the cluster has never imported under its name
/// with its present content (new or changed files). A file the cluster has
/// imported as it is — even if an administrator removed it or imported a
/// newer version since — is skipped, so a failover never undoes an
/// administrator's change (another node's directory may hold an older copy).
async fn import_license_dir(shared: Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let dir = shared.config.license_dir.clone();
    if dir.is_none() && shared.trusted.is_empty() {
        return;
    }
    let mut metrics = shared.raft.metrics();
    let mut imported_in_term = None;
    // Set by SIGHUP (`raftlm server`): read the directory again now.
    let mut reread = false;
    // A failure is logged when it starts or changes, not at every attempt.
    let mut last_failure: Option<String> = None;
    tokio::pin!(stop);
    loop {
        let term = shared.serving().ok();
        if reread {
            reread = false;
            match (&dir, term) {
                (None, _) => {
                    info!("license directory reread asked, but this node has no license_dir")
                }
                (Some(_), None) => info!(
                    "license directory reread asked, but this node is not active: the active node reads its own license_dir (raftlm license reread asks it)"
                ),
                (Some(_), Some(_)) => imported_in_term = None,
            }
        }
        if term.is_some() && term != imported_in_term {
            let done = match crate::server::admin::bootstrap_trust(&shared).await {
                Err(error) => Err(error),
                Ok(()) => match &dir {
                    Some(dir) => crate::server::admin::import_dir(&shared, dir)
                        .await
                        .map(|_| ()),
                    None => Ok(()),
                },
            };
            match done {
                Ok(()) => {
                    imported_in_term = term;
                    if last_failure.take().is_some() {
                        info!("license directory imported");
                    }
                }
                Err(error) => {
                    if last_failure.as_deref() != Some(error.as_str()) {
                        warn!(%error, "license directory not imported yet; retried, logged again if the reason changes");
                        last_failure = Some(error);
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shared.reread_license_dir.notified() => reread = true,
            _ = tokio::time::sleep(LICENSE_DIR_CHECK_INTERVAL) => {}
        }
    }
}
