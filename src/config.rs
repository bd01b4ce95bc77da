//! Node configuration: one TOML file per node, one validated struct.
//!
//! Every field, its default and its meaning is documented in
//! `docs/examples/node1.toml`; defaults live here, in one place
//! ([`Timing::default`], [`Batching::default`], …). [`Config::load`] parses
//! and validates, and every error names the file and the field
//! ("timing.lease_ms (500) must be less than timing.election_timeout_min_ms (400)").
//! Unknown fields are refused, so a typo is an error rather than a silently
//! ignored setting.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration that cannot be used, with the file and the field named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a field of the wrong type or name.
    #[error("config {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A field has a value raftlm cannot use.
    #[error("config {path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, as a dotted TOML path.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// Where systemd keeps the machine id (machine-id(5)): the default of
/// `machine_id_file`.
pub const MACHINE_ID_FILE: &str = "/etc/machine-id";

/// One node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id: one of the ids in `nodes`.
    pub node_id: u64,
    /// The cluster name: the access point's name that license files are issued for
    /// (their `SERVER` line). Case-sensitive.
    pub cluster_name: String,
    /// Where this node keeps its sled database.
    pub data_dir: PathBuf,
    /// Address to listen on for license and admin gRPC (the client plane).
    /// Defaults to this node's `address` in `nodes`; set it to e.g.
    /// `0.0.0.0:27001` to listen on every interface while clients use the
    /// address in `nodes`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Address to listen on for the Raft RPCs of the peer plane. Defaults to
    /// this node's `peer_address` in `nodes`.
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// Every node of the cluster, this one included; the same list on every node.
    pub nodes: Vec<NodeAddress>,
    /// Vendor public key files (`raftlm license keygen` writes them) trusted
    /// by the first active node of a cluster that has never trusted a key: a
    /// bootstrap, once in the cluster's life. Afterwards the trusted keys are
    /// cluster state, changed only with `raftlm license trust|untrust`; an
    /// untrust of the last key is never undone from this list.
    #[serde(default)]
    pub vendor_keys: Vec<PathBuf>,
    /// A directory of license files imported at start-up (each once, through the log).
    #[serde(default)]
    pub license_dir: Option<PathBuf>,
    /// The file holding this machine's systemd machine id, from which the
    /// node's host id is derived (`raftlm hostid` prints it; a license file
    /// may be bound to host ids). Unset: [`MACHINE_ID_FILE`]. Point it at
    /// the host's file when the node runs in a container.
    #[serde(default)]
    pub machine_id_file: Option<PathBuf>,
    /// The client access point.
    #[serde(default)]
    pub access_point: AccessPoint,
    /// Raft, lease and session timing.
    #[serde(default)]
    pub timing: Timing,
    /// How requests are batched into log entries.
    #[serde(default)]
    pub batching: Batching,
    /// When snapshots are taken.
    #[serde(default)]
    pub snapshot: SnapshotPolicy,
    /// Certificates of both planes (see docs/security.md).
    #[serde(default)]
    pub tls: Tls,
    /// Limits on what one client source may hold.
    #[serde(default)]
    pub limits: Limits,
    /// The read-only HTTP surface: health, readiness and metrics. Not
    /// written when it is off, so a config without it reads the same in a
    /// release that has no `[http]`.
    #[serde(default, skip_serializing_if = "Http::is_off")]
    pub http: Http,
}

/// The read-only HTTP surface (`src/server/http.rs`): `GET /healthz`,
/// `/readyz`, `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Where it is served, plaintext: a management address (the surface
    /// shows seat counts and the cluster's health, never a user, host or
    /// session). None: no HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Http {
    /// Whether no HTTP is served.
    pub fn is_off(&self) -> bool {
        self.listen.is_none()
    }
}

/// Live sessions whose requests come from one source IP address, by default
/// ([`Limits::sessions_per_address_max`]).
///
/// Every application process is one session, and the user and host names a
/// session reports are only its claims: the TCP peer address is the one thing
/// about a client the cluster can check. A terminal server (or a NAT gateway)
/// puts many users' applications behind one address, so the limit must sit
/// well above what one such host runs: 4,096 is sixteen times the 256
/// connections one address may hold open per listener
/// ([`CONNECTIONS_PER_ADDRESS_MAX`](crate::tls::acceptor::CONNECTIONS_PER_ADDRESS_MAX)),
/// which covers every connection slot of the active node's two client
/// listeners (its own address and the access point) with room for sessions
/// that closed and have not expired yet (a closed session stays live for the
/// session TTL: about 136 application starts a second, sustained, at the
/// default 30 s TTL). Yet one address can then hold at most 0.4 % of the
/// state's [`SESSIONS_MAX`](crate::license::state::SESSIONS_MAX) sessions,
/// so a single misbehaving or hostile host cannot fill the cluster.
pub const SESSIONS_PER_ADDRESS_MAX: usize = 4096;

/// Default of `limits.unheld_writes_per_address_per_s`: check-outs a second,
/// per source address, from sessions that hold nothing and end with
/// nothing (each is denied, and its answer is written to the log). A whole
/// office behind one NAT address whose applications all start at nine and
/// find every seat taken retries well below it; a flood that would fill the
/// log and the state's ring of remembered answers does not pass.
pub const UNHELD_WRITES_PER_ADDRESS_PER_S: u64 = 100;

/// Limits on what one client source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most live sessions whose requests come from one source IP address; a
    /// check-out that would start another one from that address is refused
    /// (`RESOURCE_EXHAUSTED`) without touching the log. Default
    /// [`SESSIONS_PER_ADDRESS_MAX`].
    pub sessions_per_address_max: usize,
    /// Check-outs a second from one source address (an IPv6 /64) by sessions
    /// the state does not hold, counting only those that end denied (they
    /// write their answer to the log but create no session, so the sessions
    /// limit does not see them); a burst of five seconds' worth passes. Over
    /// it, such a check-out is refused (`RESOURCE_EXHAUSTED`) without
    /// touching the log. 0 turns the limit off. Default
    /// [`UNHELD_WRITES_PER_ADDRESS_PER_S`].
    pub unheld_writes_per_address_per_s: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            unheld_writes_per_address_per_s: UNHELD_WRITES_PER_ADDRESS_PER_S,
            sessions_per_address_max: SESSIONS_PER_ADDRESS_MAX,
        }
    }
}

/// TLS for the peer plane (mutual TLS between nodes) and the client plane
/// (TLS to applications and administrators). On unless `plaintext = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Run both planes without TLS. Anyone on the network can then act as
    /// a node or an administrator; the log and `raftlm status` say so.
    #[serde(default)]
    pub plaintext: bool,
    /// The cluster CA certificate (PEM): peers and administrators must hold
    /// certificates it issued.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// This node's certificate (PEM), issued by `raftlm tls issue --node ID`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM, mode 0600).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// The three certificate files of a node with TLS on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// The node's certificate.
    pub cert: PathBuf,
    /// The node's private key.
    pub key: PathBuf,
}

/// A node's id and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    /// The node id (non-zero).
    pub id: u64,
    /// `host:port` clients use to reach it (the client plane: license and admin).
    pub address: String,
    /// `host:port` the other nodes use to reach it (the peer plane: Raft RPCs).
    pub peer_address: String,
    /// The machine's name as `lmutil lmstat` shows it (default: the host of
    /// `address`). Scrapers key servers by its first DNS label, so give
    /// members on one host (or named by IP) names of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The IP addresses the members are named by (in `address` or
/// `peer_address`), deduplicated: the hosts whose connections the TLS
/// acceptor keeps a reserve for. Members named by host name are left out (no
/// name is resolved for this).
pub fn member_ips(nodes: &[NodeAddress]) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = nodes
        .iter()
        .flat_map(|n| [&n.address, &n.peer_address])
        .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_canonical())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// How the active node takes the client access point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessPointMode {
    /// Bind the access-point socket address (no privileges; every 127.x address is local).
    #[default]
    Bind,
    /// Run `up`/`down` commands to add and remove the address, then bind.
    Command,
    /// No access point: clients use the node list.
    None,
}

/// The client access point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPoint {
    /// `bind`, `command` or `none`.
    #[serde(default)]
    pub mode: AccessPointMode,
    /// The access point's socket address, e.g. `127.0.0.100:27000`.
    pub address: SocketAddr,
    /// Network prefix length of the address (`command` mode).
    #[serde(default = "default_prefix")]
    pub prefix: u8,
    /// Network interface the address goes on (`command` mode).
    #[serde(default)]
    pub interface: String,
    /// Command that brings the address up (`command` mode); `{address}`, `{ip}`,
    /// `{prefix}` and `{interface}` are substituted. Run without a shell.
    #[serde(default)]
    pub up: Vec<String>,
    /// Command that takes the address down (`command` mode), same substitutions.
    #[serde(default)]
    pub down: Vec<String>,
}

fn default_prefix() -> u8 {
    24
}

impl Default for AccessPoint {
    fn default() -> AccessPoint {
        AccessPoint {
            mode: AccessPointMode::Bind,
            address: SocketAddr::from(([127, 0, 0, 100], 27000)),
            prefix: default_prefix(),
            interface: String::new(),
            up: Vec::new(),
            down: Vec::new(),
        }
    }
}

/// Raft, lease and session timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout, lower bound.
    pub election_timeout_min_ms: u64,
    /// Election timeout, upper bound.
    pub election_timeout_max_ms: u64,
    /// Quorum lease `L`: how long one successful quorum round lets the active node serve.
    pub lease_ms: u64,
    /// Margin `M`: a new leader waits `L + M` after its first quorum round before it serves.
    pub lease_margin_ms: u64,
    /// A session that has not heartbeated for this long is expired and its seats freed.
    pub session_ttl_ms: u64,
    /// Most a node's wall clock may differ from a majority of its peers'
    /// before it stops stamping state time and does not serve
    /// (`src/clock.rs`): how far a wrong clock can move license expiry.
    pub clock_skew_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            heartbeat_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 300,
            lease_ms: 150,
            lease_margin_ms: 50,
            session_ttl_ms: 30_000,
            clock_skew_max_ms: 120_000,
        }
    }
}

/// How concurrent requests are collected into one log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most commands in one log entry.
    pub commands_max: usize,
    /// How long the batcher waits for more commands after the first, in microseconds.
    pub linger_us: u64,
    /// Most batches proposed and not yet committed at once.
    pub in_flight_max: usize,
}

impl Default for Batching {
    fn default() -> Batching {
        Batching {
            commands_max: 512,
            linger_us: 200,
            in_flight_max: 4,
        }
    }
}

/// When the state machine is snapshotted and the log purged behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotPolicy {
    /// Take a snapshot after this many log entries since the last one.
    pub logs_since_last: u64,
    /// Log entries kept behind a snapshot (so a briefly lagging follower
    /// catches up from the log instead of a snapshot).
    pub logs_kept: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> SnapshotPolicy {
        SnapshotPolicy {
            logs_since_last: 5_000,
            logs_kept: 1_000,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` is used in messages and to
    /// resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config
            .validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: field.to_string(),
                message,
            })?;
        Ok(config)
    }

    /// Relative paths in the file are relative to the file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        self.vendor_keys.iter_mut().for_each(resolve);
        for path in [&mut self.tls.ca, &mut self.tls.cert, &mut self.tls.key]
            .into_iter()
            .flatten()
        {
            resolve(path);
        }
        if let Some(dir) = self.license_dir.as_mut() {
            resolve(dir);
        }
        if let Some(file) = self.machine_id_file.as_mut() {
            resolve(file);
        }
    }

    /// The machine id file this node derives its host id from.
    pub fn machine_id_file(&self) -> &Path {
        self.machine_id_file
            .as_deref()
            .unwrap_or(Path::new(MACHINE_ID_FILE))
    }

    /// What is allowed but unwise in this config, for the node to log at
    /// start-up: a cluster of fewer than three voters survives no node's loss.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.nodes.len() < 3 {
            out.push(format!(
                "nodes: a cluster of {} voter{} loses service when any node is down (a majority of {} is {}): run three or five nodes",
                self.nodes.len(),
                if self.nodes.len() == 1 { "" } else { "s" },
                self.nodes.len(),
                self.nodes.len() / 2 + 1
            ));
        }
        out
    }

    /// Checks every field and relation; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !crate::text::is_name(&self.cluster_name, CLUSTER_NAME_BYTES_MAX) {
            return Err((
                "cluster_name",
                format!(
                    "\"{}\" is not a valid access point name: use letters, digits, '_', '.' and '-'",
                    self.cluster_name
                ),
            ));
        }
        if self.nodes.is_empty() {
            return Err((
                "nodes",
                "list every node of the cluster, this one included".into(),
            ));
        }
        if self.nodes.len() > NODES_MAX {
            return Err(("nodes", format!("at most {NODES_MAX} nodes are supported")));
        }
        let mut ids = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for node in &self.nodes {
            if node.id == 0 {
                return Err(("nodes.id", "node ids start at 1".into()));
            }
            if !ids.insert(node.id) {
                return Err(("nodes.id", format!("node id {} is listed twice", node.id)));
            }
            if !addresses.insert(node.address.as_str()) {
                return Err((
                    "nodes.address",
                    format!("address {} is listed twice", node.address),
                ));
            }
            if !addresses.insert(node.peer_address.as_str()) {
                return Err((
                    "nodes.peer_address",
                    format!("address {} is listed twice", node.peer_address),
                ));
            }
            for (field, address) in [
                ("nodes.address", &node.address),
                ("nodes.peer_address", &node.peer_address),
            ] {
                if split_host_port(address).is_none() {
                    return Err((
                        field,
                        format!("\"{address}\" is not host:port (e.g. 10.0.0.1:27001)"),
                    ));
                }
            }
        }
        if !ids.contains(&self.node_id) {
            return Err((
                "node_id",
                format!(
                    "{} is not one of the ids in nodes ({:?})",
                    self.node_id, ids
                ),
            ));
        }
        if self.listen_address().is_none() {
            return Err((
                "listen",
                format!(
                    "this node's address {} is not an IP socket address; set listen = \"IP:PORT\"",
                    self.own_address()
                ),
            ));
        }
        if self.peer_listen_address().is_none() {
            return Err((
                "peer_listen",
                format!(
                    "this node's peer address {} is not an IP socket address; set peer_listen = \"IP:PORT\"",
                    self.own_peer_address()
                ),
            ));
        }
        if self.listen_address() == self.peer_listen_address() {
            return Err((
                "nodes.peer_address",
                format!(
                    "this node's peer address is also its client address ({}): the Raft RPCs need a port of their own",
                    self.own_address()
                ),
            ));
        }
        if !self.tls.plaintext {
            for (field, value) in [
                ("tls.ca", &self.tls.ca),
                ("tls.cert", &self.tls.cert),
                ("tls.key", &self.tls.key),
            ] {
                if value.is_none() {
                    return Err((
                        field,
                        "is required: give the file made by `raftlm tls`, or set tls.plaintext = true to run without TLS".into(),
                    ));
                }
            }
        }
        let t = &self.timing;
        if t.heartbeat_ms == 0 {
            return Err(("timing.heartbeat_ms", "must be at least 1".into()));
        }
        if t.lease_ms <= t.heartbeat_ms {
            return Err((
                "timing.lease_ms",
                format!(
                    "({}) must be greater than timing.heartbeat_ms ({}): the lease is renewed once per heartbeat",
                    t.lease_ms, t.heartbeat_ms
                ),
            ));
        }
        if t.lease_ms >= t.election_timeout_min_ms {
            return Err((
                "timing.lease_ms",
                format!(
                    "({}) must be less than timing.election_timeout_min_ms ({}): a lease must run out before another node can be elected",
                    t.lease_ms, t.election_timeout_min_ms
                ),
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err((
                "timing.election_timeout_max_ms",
                format!(
                    "({}) must be greater than timing.election_timeout_min_ms ({})",
                    t.election_timeout_max_ms, t.election_timeout_min_ms
                ),
            ));
        }
        // In u128: three timeouts of up to u64::MAX ms must not overflow.
        let three_timeouts = 3 * u128::from(t.election_timeout_max_ms);
        if u128::from(t.session_ttl_ms) < three_timeouts {
            return Err((
                "timing.session_ttl_ms",
                format!(
                    "({}) must be at least three election timeouts ({three_timeouts}), or sessions expire during a failover",
                    t.session_ttl_ms,
                ),
            ));
        }
        if !(1_000..=86_400_000).contains(&t.clock_skew_max_ms) {
            return Err((
                "timing.clock_skew_max_ms",
                format!(
                    "({}) must be between 1000 (clocks are compared to within a round trip) and 86400000 (one day: license expiry is by the day)",
                    t.clock_skew_max_ms
                ),
            ));
        }
        let b = &self.batching;
        if b.commands_max == 0 || b.commands_max > 65_536 {
            return Err((
                "batching.commands_max",
                "must be between 1 and 65536".into(),
            ));
        }
        if b.linger_us > 100_000 {
            return Err((
                "batching.linger_us",
                "must be at most 100000 (0.1 s)".into(),
            ));
        }
        if b.in_flight_max == 0 || b.in_flight_max > 64 {
            return Err(("batching.in_flight_max", "must be between 1 and 64".into()));
        }
        let sessions_max = crate::license::state::SESSIONS_MAX;
        if self.limits.sessions_per_address_max == 0
            || self.limits.sessions_per_address_max > sessions_max
        {
            return Err((
                "limits.sessions_per_address_max",
                format!(
                    "({}) must be between 1 and {sessions_max}, the most sessions the cluster holds",
                    self.limits.sessions_per_address_max
                ),
            ));
        }
        if self.snapshot.logs_since_last == 0 {
            return Err(("snapshot.logs_since_last", "must be at least 1".into()));
        }
        let ap = &self.access_point;
        if ap.mode == AccessPointMode::Command {
            if ap.up.is_empty() {
                return Err(("access_point.up", "command mode needs an up command".into()));
            }
            if ap.down.is_empty() {
                return Err((
                    "access_point.down",
                    "command mode needs a down command".into(),
                ));
            }
            if ap.prefix > 128 {
                return Err(("access_point.prefix", "must be at most 128".into()));
            }
        }
        if ap.mode != AccessPointMode::None
            && let Some(listen) = self.listen_address()
            && listen == ap.address
        {
            return Err((
                "access_point.address",
                format!(
                    "{} is also this node's own address; give the access point its own address",
                    ap.address
                ),
            ));
        }
        Ok(())
    }

    /// This node's address as the other nodes know it.
    pub fn own_address(&self) -> &str {
        self.nodes
            .iter()
            .find(|n| n.id == self.node_id)
            .map(|n| n.address.as_str())
            .unwrap_or("")
    }

    /// This node's peer-plane address as the other nodes know it.
    pub fn own_peer_address(&self) -> &str {
        self.nodes
            .iter()
            .find(|n| n.id == self.node_id)
            .map(|n| n.peer_address.as_str())
            .unwrap_or("")
    }

    /// The socket address this node serves clients on.
    pub fn listen_address(&self) -> Option<SocketAddr> {
        self.listen.or_else(|| self.own_address().parse().ok())
    }

    /// The socket address this node serves the peer plane on.
    pub fn peer_listen_address(&self) -> Option<SocketAddr> {
        self.peer_listen
            .or_else(|| self.own_peer_address().parse().ok())
    }

    /// The certificate files, or `None` when the config runs in plaintext.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        if self.tls.plaintext {
            return None;
        }
        Some(TlsFiles {
            ca: self.tls.ca.clone()?,
            cert: self.tls.cert.clone()?,
            key: self.tls.key.clone()?,
        })
    }
}

/// Most nodes a cluster may list.
pub const NODES_MAX: usize = 7;

/// Longest access-point (cluster) name, in bytes.
pub const CLUSTER_NAME_BYTES_MAX: usize = 255;

/// Splits `host:port` (host may be `[v6]`); `None` if it is not of that form.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 2
cluster_name = "LICSRV"
data_dir = "data/node2"
[tls]
ca = "tls/ca.crt"
cert = "tls/node-2.crt"
key = "tls/node-2.key"
[[nodes]]
id = 1
address = "127.0.0.1:27001"
peer_address = "127.0.0.1:27101"
[[nodes]]
id = 2
address = "127.0.0.1:27002"
peer_address = "127.0.0.1:27102"
[[nodes]]
id = 3
address = "127.0.0.1:27003"
peer_address = "127.0.0.1:27103"
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/raftlm/node.toml"), text).map_err(|e| e.to_string())
    }

    // A cluster of one or two voters is allowed but warned about: losing any
    // node stops it. Three voters draw no warning.
    #[test]
    fn fewer_than_three_voters_are_warned_about() {
        let config = parse(GOOD).unwrap();
        assert!(config.warnings().is_empty());
        let mut two = config.clone();
        two.nodes.truncate(2);
        let warnings = two.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .starts_with("nodes: a cluster of 2 voters loses service when any node is down"),
            "{warnings:?}"
        );
    }

    // A minimal config gets the documented defaults and resolves relative paths.
    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.timing, Timing::default());
        assert_eq!(config.access_point.address.to_string(), "127.0.0.100:27000");
        assert_eq!(config.data_dir, PathBuf::from("/etc/raftlm/data/node2"));
        assert_eq!(
            config.listen_address().unwrap().to_string(),
            "127.0.0.1:27002"
        );
    }

    // Each invalid value is refused with an error naming the file and the field.
    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "node_id = 2",
                "node_id = 9",
                "config /etc/raftlm/node.toml: node_id: 9 is not one of the ids in nodes ({1, 2, 3})",
            ),
            (
                "cluster_name = \"LICSRV\"",
                "cluster_name = \"lic srv\"",
                "config /etc/raftlm/node.toml: cluster_name: \"lic srv\" is not a valid access point name: use letters, digits, '_', '.' and '-'",
            ),
            (
                "address = \"127.0.0.1:27003\"",
                "address = \"127.0.0.1:27002\"",
                "config /etc/raftlm/node.toml: nodes.address: address 127.0.0.1:27002 is listed twice",
            ),
            (
                "data_dir = \"data/node2\"",
                "data_dir = \"data/node2\"\n[timing]\nlease_ms = 500",
                "config /etc/raftlm/node.toml: timing.lease_ms: (500) must be less than timing.election_timeout_min_ms (250): a lease must run out before another node can be elected",
            ),
            (
                "data_dir = \"data/node2\"",
                "data_dir = \"data/node2\"\n[timing]\nlease_ms = 40",
                "config /etc/raftlm/node.toml: timing.lease_ms: (40) must be greater than timing.heartbeat_ms (50): the lease is renewed once per heartbeat",
            ),
            (
                "data_dir = \"data/node2\"",
                "data_dir = \"data/node2\"\n[access_point]\nmode = \"command\"\naddress = \"10.0.0.100:27000\"",
                "config /etc/raftlm/node.toml: access_point.up: command mode needs an up command",
            ),
            (
                "peer_address = \"127.0.0.1:27102\"",
                "peer_address = \"127.0.0.1:27002\"",
                "config /etc/raftlm/node.toml: nodes.peer_address: address 127.0.0.1:27002 is listed twice",
            ),
            (
                "data_dir = \"data/node2\"",
                "data_dir = \"data/node2\"\n[limits]\nsessions_per_address_max = 0",
                "config /etc/raftlm/node.toml: limits.sessions_per_address_max: (0) must be between 1 and 1000000, the most sessions the cluster holds",
            ),
            (
                "key = \"tls/node-2.key\"\n",
                "",
                "config /etc/raftlm/node.toml: tls.key: is required: give the file made by `raftlm tls`, or set tls.plaintext = true to run without TLS",
            ),
        ];
        for (from, to, expected) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_eq!(parse(&text).unwrap_err(), expected, "config:\n{text}");
        }
    }

    // The commented example configs in docs/examples are valid and form one cluster.
    #[test]
    fn example_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples");
        let configs: Vec<Config> = (1..=3)
            .map(|i| Config::load(&dir.join(format!("node{i}.toml"))).unwrap())
            .collect();
        for (i, config) in configs.iter().enumerate() {
            assert_eq!(config.node_id, i as u64 + 1);
            assert_eq!(config.nodes, configs[0].nodes);
            assert_eq!(config.timing, Timing::default());
            assert_eq!(config.batching, Batching::default());
            assert_eq!(config.snapshot, SnapshotPolicy::default());
            assert_eq!(config.limits, Limits::default());
        }
    }

    // TLS is on unless the config says plaintext explicitly; then no files are needed.
    #[test]
    fn tls_is_on_unless_plaintext_is_explicit() {
        let config = parse(GOOD).unwrap();
        let files = config.tls_files().unwrap();
        assert_eq!(files.cert, PathBuf::from("/etc/raftlm/tls/node-2.crt"));
        let start = GOOD.find("[tls]").unwrap();
        let end = GOOD.find("[[nodes]]").unwrap();
        let plain = format!(
            "{}[tls]\nplaintext = true\n{}",
            &GOOD[..start],
            &GOOD[end..]
        );
        assert_eq!(parse(&plain).unwrap().tls_files(), None);
        let none = format!("{}{}", &GOOD[..start], &GOOD[end..]);
        assert!(parse(&none).unwrap_err().contains("tls.ca: is required"));
    }

    // Found with the `config` fuzz target (fuzz/README.md): an election timeout
    // above u64::MAX / 3 overflowed `3 * election_timeout_max_ms` and panicked
    // in debug builds instead of refusing the session TTL.
    #[test]
    fn huge_election_timeout_is_refused_not_overflowed() {
        let text = GOOD.replacen(
            "data_dir = \"data/node2\"",
            "data_dir = \"data/node2\"\n[timing]\nelection_timeout_max_ms = 7000000000000000000",
            1,
        );
        assert_eq!(
            parse(&text).unwrap_err(),
            "config /etc/raftlm/node.toml: timing.session_ttl_ms: (30000) must be at least three \
             election timeouts (21000000000000000000), or sessions expire during a failover"
        );
    }

    // A misspelt field is an error naming it, not a silently ignored setting.
    #[test]
    fn unknown_fields_are_refused() {
        let error = parse(&GOOD.replace("node_id = 2", "node_id = 2\nnode_idd = 3")).unwrap_err();
        assert!(error.contains("unknown field `node_idd`"), "{error}");
        assert!(
            error.starts_with("config /etc/raftlm/node.toml: "),
            "{error}"
        );
    }
}
