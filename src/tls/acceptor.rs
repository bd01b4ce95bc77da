//! Accepting TLS connections ourselves, for both planes of a node.
//!
//! tonic's built-in server TLS cannot reload certificates, restrict the
//! protocol version or say why a handshake failed. So a node accepts TCP
//! connections itself, runs the rustls handshake (TLS 1.3 only, ALPN `h2`,
//! the ring provider), and hands tonic only connections that completed it,
//! through `serve_with_incoming`; tonic still sees the peer certificates
//! (`Request::peer_certs`).
//!
//! - [`TlsState`] holds the node's certificate, key and CA as loaded, and the
//!   rustls server configurations built from them. [`watch_files`] reloads
//!   them when a file changes or on `SIGHUP`; a set of files that does not
//!   load (a rotation half done) is reported and the previous set is kept.
//!   New connections use the new set at once; the peer channels are rebuilt
//!   by the Raft network when it sees [`TlsState::generation`] change.
//! - [`incoming`] is the accept loop: every handshake runs in its own task
//!   with [`HANDSHAKE_TIMEOUT`], at most [`HANDSHAKES_IN_FLIGHT_MAX`] at once.
//!   On the peer plane a client certificate is required and must name a
//!   member of the cluster (`node-<id>.<cluster>`, role node); on the client
//!   plane a client certificate is optional (applications present none,
//!   administrators present theirs) but must be issued by the cluster CA
//!   when present.
//! - A refused connection is logged once per source address and reason at
//!   `warn` (then at `debug`), so a scanner cannot flood the log.
//!
//! - Admission: connections and handshakes are limited per listener and per
//!   source address, and a reserve of both is kept for the members' own
//!   addresses, so strangers cannot keep a node from redialling its peers
//!   (see [`incoming`] and the limits below).
//!
//! Left out: certificate revocation lists (revoke by reissuing the CA, see
//! docs/security.md).

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, crypto::CryptoProvider};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{Instrument, debug, error, info, warn};

use crate::config::TlsFiles;
use crate::license::ClusterId;
use crate::tls::identity::{self, CertInfo, Role};

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most handshakes running at once per listener; a connection beyond it is
/// closed at once (a flood of idle sockets cannot stall everyone's handshake).
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Handshakes running at once from one source address, per listener. A
/// handshake takes milliseconds and an application opens one connection per
/// server, so even a NAT address of many applications rarely has more than a
/// few in flight; sockets that never send a ClientHello from one address hold
/// at most this many of the listener's [`HANDSHAKES_IN_FLIGHT_MAX`], so it
/// takes 32 addresses to fill them.
pub const HANDSHAKES_PER_ADDRESS_MAX: usize = 8;
/// Handshakes set aside, per listener, for the cluster members' own
/// addresses (the hosts in `nodes`): when strangers fill
/// [`HANDSHAKES_IN_FLIGHT_MAX`], a node redialling a peer still gets in.
pub const MEMBER_HANDSHAKES_RESERVED: usize = 32;
/// Connections set aside, per listener, for the cluster members' own
/// addresses, beyond [`CONNECTIONS_MAX`]: a node holds a few connections to
/// each peer, so this is room for every member of a five-node cluster many
/// times over.
pub const MEMBER_CONNECTIONS_RESERVED: usize = 64;
/// Most open connections per listener; a connection beyond it is closed at once.
pub const CONNECTIONS_MAX: usize = 1024;
/// Connections open at once from one source address, per listener: one
/// address cannot take every connection of a node. An application holds one
/// connection per server it talks to, so this is a few hundred application
/// processes behind one NAT address.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 256;
/// Most distinct (source address, reason) refusals logged at `warn`.
pub const REFUSALS_REMEMBERED: usize = 1024;
/// How long the acceptor pauses after a failed `accept` (out of file
/// descriptors and the like) instead of spinning on it.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How often [`watch_files`] looks for changed certificate files.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Largest certificate or key file read, in bytes.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// The only application protocol offered: HTTP/2, which gRPC runs on.
const ALPN_H2: &[u8] = b"h2";

/// Why a node's TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file holds no usable PEM data of the kind expected.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The node's certificate does not name this node of this cluster.
    #[error(
        "{}: the certificate names {names} but this is node {node_id} of cluster {cluster}: it must carry the DNS name {expected} and the role node (issue one with `raftlm tls issue --node {node_id}`)",
        path.display()
    )]
    NotThisNode {
        /// The certificate file.
        path: PathBuf,
        /// The names it carries.
        names: String,
        /// This node.
        node_id: u64,
        /// The cluster name.
        cluster: String,
        /// The name it should carry.
        expected: String,
    },
    /// The private key is not the one the certificate was issued for.
    #[error(
        "the private key {} and the certificate {} do not belong together: the certificate was issued for another key; set tls.key to the key written with this certificate, or issue both again (`raftlm tls issue --node N`)",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rustls refused the material.
    #[error("TLS set-up failed: {0}")]
    Rustls(String),
}

/// Which plane a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// Raft RPCs between nodes: mutual TLS, members only.
    Peer,
    /// License and admin services: server-authenticated TLS, client
    /// certificates optional.
    Client,
}

/// One loaded set of TLS material.
pub struct Loaded {
    /// The server configuration of the peer plane.
    pub peer: Arc<ServerConfig>,
    /// The server configuration of the client plane.
    pub client: Arc<ServerConfig>,
    /// The CA certificate file's bytes (PEM).
    pub ca_pem: Vec<u8>,
    /// The node certificate file's bytes (PEM).
    pub cert_pem: Vec<u8>,
    /// The node key file's bytes (PEM).
    pub key_pem: Vec<u8>,
    /// What the node's certificate says.
    pub cert: CertInfo,
    /// The cluster's identity: that of the CA in the CA file that issued
    /// the node's certificate (not merely any CA the file holds, since CA
    /// certificates are public).
    pub cluster_id: ClusterId,
}

/// A node's TLS material, reloadable. See the module docs.
pub struct TlsState {
    files: TlsFiles,
    cluster: String,
    node_id: u64,
    // std RwLock: an Arc cloned out, never held across `.await`.
    current: RwLock<Arc<Loaded>>,
    generation: watch::Sender<u64>,
}

/// The crypto provider of every TLS configuration raftlm builds: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A warning when the private key file at `path` may be read or written by
/// users other than its owner (any of the mode bits `0o077`): anyone who can
/// read a node's key can act as that node.
pub fn key_permissions_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{}: the private key can be read or written by users other than its owner (mode {mode:03o}): anyone who reads it can act as this node; chmod 600 it",
            path.display()
        )
    })
}

/// Reads a PEM file, bounded by [`PEM_FILE_BYTES_MAX`].
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("larger than {PEM_FILE_BYTES_MAX} bytes; is this a certificate?"),
        });
    }
    std::fs::read(path).map_err(read_error)
}

/// The certificates of a PEM file (at least one).
pub fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("holds no usable private key: {e}"),
    })
}

/// A root store holding the certificates of the CA file.
pub fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn server_config(
    roots: &RootCertStore,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    plane: Plane,
) -> Result<ServerConfig, TlsError> {
    let rustls_error = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider());
    let verifier = match plane {
        Plane::Peer => verifier.build(),
        Plane::Client => verifier.allow_unauthenticated().build(),
    }
    .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(rustls_error)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

impl TlsState {
    /// Loads the files and checks that the certificate names node `node_id`
    /// of `cluster`.
    pub fn load(files: TlsFiles, cluster: &str, node_id: u64) -> Result<TlsState, TlsError> {
        let loaded = load(&files, cluster, node_id)?;
        Ok(TlsState {
            files,
            cluster: cluster.to_string(),
            node_id,
            current: RwLock::new(Arc::new(loaded)),
            generation: watch::channel(0).0,
        })
    }

    /// The material in use.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cluster name certificates must carry.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Counts reloads; changes whenever new material is in use.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Loads the files again; `Ok(true)` if their contents changed and the new
    /// material is in use, `Ok(false)` if nothing changed. On an error the
    /// material in use stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let current = self.current();
        let unchanged = read_pem(&self.files.ca)? == current.ca_pem
            && read_pem(&self.files.cert)? == current.cert_pem
            && read_pem(&self.files.key)? == current.key_pem;
        if unchanged {
            return Ok(false);
        }
        let loaded = load(&self.files, &self.cluster, self.node_id)?;
        info!(
            serial = %loaded.cert.serial_hex,
            expires_unix = loaded.cert.not_after_unix,
            "certificates reloaded"
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        self.generation.send_modify(|g| *g += 1);
        Ok(true)
    }
}

/// Checks that `key` is the private key of `chain`'s first certificate,
/// naming both files when it is not (rustls alone would only say the keys
/// are inconsistent, naming neither).
fn key_matches(
    files: &TlsFiles,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Pem {
            path: files.key.clone(),
            what: format!("holds no usable private key: {e}"),
        })?;
    match rustls::sign::CertifiedKey::new(chain.to_vec(), signing).keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
            })
        }
        // A key whose public half the provider cannot tell is left to rustls.
        _ => Ok(()),
    }
}

fn load(files: &TlsFiles, cluster: &str, node_id: u64) -> Result<Loaded, TlsError> {
    let ca_pem = read_pem(&files.ca)?;
    let cert_pem = read_pem(&files.cert)?;
    let key_pem = read_pem(&files.key)?;
    let roots = roots(&files.ca, &ca_pem)?;
    let chain = certificates(&files.cert, &cert_pem)?;
    let key = private_key(&files.key, &key_pem)?;
    key_matches(files, &chain, &key)?;
    let cert = identity::parse(&chain[0]).map_err(|e| TlsError::Pem {
        path: files.cert.clone(),
        what: e.to_string(),
    })?;
    if cert.node_id(cluster) != Some(node_id) {
        let mut names = cert.dns_names.clone();
        names.extend(cert.uris.iter().cloned());
        return Err(TlsError::NotThisNode {
            path: files.cert.clone(),
            names: if names.is_empty() {
                "no names".into()
            } else {
                names.join(", ")
            },
            node_id,
            cluster: cluster.to_string(),
            expected: identity::node_dns_name(node_id, cluster),
        });
    }
    // The node's own chain must verify against the CA it trusts, for its own
    // name, now: a half-done rotation (a new CA with an old certificate) or an
    // expired certificate is refused here instead of making the node unreachable.
    let name = rustls::pki_types::ServerName::try_from(identity::node_dns_name(node_id, cluster))
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let verifies_against = |roots: RootCertStore| -> Result<(), TlsError> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| TlsError::Pem {
            path: files.cert.clone(),
            what: format!(
                "does not verify against the CA in {}: {}",
                files.ca.display(),
                rustls_reason(&e)
            ),
        })
    };
    verifies_against(roots.clone())?;
    // The cluster's identity is the CA this node's certificate chains to:
    // during a CA roll-out the file holds two CAs, and any file may hold a
    // CA certificate copied from elsewhere, but only the issuer's key signed
    // this node's certificate.
    let mut cluster_id = None;
    for ca in certificates(&files.ca, &ca_pem)? {
        let mut one = RootCertStore::empty();
        if one.add(ca.clone()).is_ok() && verifies_against(one).is_ok() {
            cluster_id = Some(identity::cluster_id(&ca).map_err(|e| TlsError::Pem {
                path: files.ca.clone(),
                what: e.to_string(),
            })?);
            break;
        }
    }
    let cluster_id = cluster_id.ok_or_else(|| TlsError::Pem {
        path: files.cert.clone(),
        what: format!(
            "verifies against the CA file {} but against none of its certificates alone",
            files.ca.display()
        ),
    })?;
    Ok(Loaded {
        peer: Arc::new(server_config(&roots, &chain, &key, Plane::Peer)?),
        client: Arc::new(server_config(&roots, &chain, &key, Plane::Client)?),
        ca_pem,
        cert_pem,
        key_pem,
        cert,
        cluster_id,
    })
}

/// Reloads `state` when its files change (checked every
/// [`RELOAD_CHECK_INTERVAL`]) or on `SIGHUP`, until `stop` resolves.
pub async fn watch_files(state: Arc<TlsState>, stop: impl std::future::Future<Output = ()>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            warn!(%error, "cannot listen for SIGHUP; certificates are reloaded when their files change");
            None
        }
    };
    let mut ticker = tokio::time::interval(RELOAD_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    tokio::pin!(stop);
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
            _ = hup => info!("SIGHUP: checking the certificate files"),
        }
        match state.reload() {
            Ok(_) => last_error = None,
            Err(error) => {
                let message = error.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    error!(%message, "new certificate files not used; the previous ones stay in use");
                    last_error = Some(message);
                }
            }
        }
    }
}

/// Remembers which refusals were logged, so each is logged once: the
/// [`REFUSALS_REMEMBERED`] most recently seen (source, reason) pairs. A pair
/// seen again moves to the front, so a steady scanner stays remembered while
/// a flood of new addresses pushes out only the oldest, never everything.
#[derive(Default)]
pub struct Refusals {
    // std Mutex: a few map operations, never held across `.await`.
    seen: Mutex<SeenRefusals>,
}

/// A bounded least-recently-seen set of (source, reason) pairs.
#[derive(Default)]
struct SeenRefusals {
    /// Each pair and the stamp of its last sighting.
    stamps: std::collections::HashMap<(String, String), u64>,
    /// The pairs by last sighting, oldest first.
    order: std::collections::BTreeMap<u64, (String, String)>,
    next: u64,
}

impl SeenRefusals {
    /// Records a sighting; whether the pair was new.
    fn see(&mut self, key: (String, String)) -> bool {
        let stamp = self.next;
        self.next += 1;
        if let Some(old) = self.stamps.insert(key.clone(), stamp) {
            self.order.remove(&old);
            self.order.insert(stamp, key);
            return false;
        }
        self.order.insert(stamp, key);
        while self.stamps.len() > REFUSALS_REMEMBERED {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.stamps.remove(&oldest);
            }
        }
        true
    }
}

impl Refusals {
    fn first(&self, who: String, reason: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.see((who, reason.to_string()))
    }

    /// Logs a refused connection or request: at `warn` the first time this
    /// source and reason are seen, at `debug` after.
    pub fn log(&self, plane: Plane, from: IpAddr, reason: &str) {
        if self.first(from.to_string(), reason) {
            warn!(?plane, %from, reason, "refused");
        } else {
            debug!(?plane, %from, reason, "refused");
        }
    }

    /// Logs that dialling peer `peer` at `address` failed its TLS handshake,
    /// once per peer and reason.
    pub fn log_dial(&self, peer: u64, address: &str, reason: &str) {
        if self.first(format!("dial {peer} {address}"), reason) {
            warn!(peer, address, reason, "cannot connect to peer: refused");
        } else {
            debug!(peer, address, reason, "cannot connect to peer: refused");
        }
    }
}

/// Why a TLS error happened, in plain words, if `error` or one of its
/// sources is a TLS error.
pub fn tls_reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(rustls) = error.downcast_ref::<rustls::Error>() {
            return Some(rustls_reason(rustls));
        }
        if let Some(io) = error.downcast_ref::<io::Error>()
            && let Some(rustls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(rustls_reason(rustls));
        }
        current = error.source();
    }
    None
}

/// Why a handshake failed, in plain words.
pub fn handshake_reason(error: &io::Error) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls) => rustls_reason(rustls),
        None if error.kind() == io::ErrorKind::TimedOut => "handshake timed out".into(),
        None => error.to_string(),
    }
}

fn rustls_reason(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer | C::BadSignature => {
                "certificate not issued by the cluster CA (unknown CA)".into()
            }
            C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
            C::Revoked => "certificate revoked".into(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "certificate not made for this use (extended key usage)".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "certificate does not name the server dialled".into()
            }
            other => format!("certificate refused: {other:?}"),
        },
        rustls::Error::NoCertificatesPresented => "no client certificate presented".into(),
        rustls::Error::InvalidMessage(_) => "not a TLS connection (plaintext?)".into(),
        rustls::Error::PeerIncompatible(why) => format!("incompatible TLS peer: {why:?}"),
        rustls::Error::AlertReceived(alert) => format!("the other side aborted: {alert:?}"),
        other => other.to_string(),
    }
}

/// What the peer plane requires of an accepted connection's certificate:
/// a member of the cluster. Returns the node id it names.
pub fn peer_node(certs: Option<&[CertificateDer<'_>]>, cluster: &str) -> Result<u64, String> {
    let Some(cert) = certs.and_then(|c| c.first()) else {
        return Err("no client certificate presented".into());
    };
    let info = identity::parse(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    if !info.has_role(Role::Node) {
        return Err(format!(
            "certificate of {} does not carry the role node",
            info.subject
        ));
    }
    info.node_id(cluster).ok_or_else(|| {
        format!(
            "certificate of {} names no node of cluster {cluster}",
            info.subject
        )
    })
}

/// A connection that holds its slot of the listener's [`CONNECTIONS_MAX`]
/// (or of the members' reserve) and of its address's
/// [`CONNECTIONS_PER_ADDRESS_MAX`] until it is closed.
pub struct Counted<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
}

/// Things open per source address of one listener (connections, or
/// handshakes in flight), each address at most `limit`.
struct PerAddress {
    limit: usize,
    // std Mutex: held to count, never across `.await`.
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's count against its address; given back on drop.
pub struct AddressSlot {
    table: Arc<PerAddress>,
    address: std::net::IpAddr,
}

impl PerAddress {
    fn new(limit: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            limit,
            open: Default::default(),
        })
    }

    /// A slot for `address`, unless it has `limit` open.
    fn acquire(self: &Arc<Self>, address: std::net::IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for Counted<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Who the cluster's members are, as a listener needs to know them.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// Their node ids: on the peer plane, a certificate must name one.
    pub ids: MemberIds,
    /// Their hosts' IP addresses: connections from these may use the
    /// reserves and are not limited per address.
    pub addresses: Vec<IpAddr>,
}

/// The node ids the peer plane admits, as the applied membership names them
/// (voters and learners), updated on every membership change; a cheap
/// handle, clones share one set. Before a node knows any membership (it was
/// started with `--join` and waits to be added) the set is unknown and every
/// node certificate of the cluster is admitted, so the active node can reach
/// it.
#[derive(Debug, Clone, Default)]
pub struct MemberIds {
    ids: Arc<RwLock<Option<std::collections::BTreeSet<u64>>>>,
}

impl MemberIds {
    /// A set that admits exactly `ids`.
    pub fn of(ids: impl IntoIterator<Item = u64>) -> MemberIds {
        let set = MemberIds::default();
        set.set(ids);
        set
    }

    /// A set not known yet: every node certificate of the cluster is admitted.
    pub fn unknown() -> MemberIds {
        MemberIds::default()
    }

    /// Admits exactly `ids` from now on; returns whether the set changed.
    pub fn set(&self, ids: impl IntoIterator<Item = u64>) -> bool {
        let new: std::collections::BTreeSet<u64> = ids.into_iter().collect();
        let mut held = self.ids.write().unwrap_or_else(|p| p.into_inner());
        if held.as_ref() == Some(&new) {
            return false;
        }
        *held = Some(new);
        true
    }

    /// Whether a certificate naming node `id` is admitted.
    pub fn admits(&self, id: u64) -> bool {
        self.ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|ids| ids.contains(&id))
    }
}

/// The limits one listener admits connections under (see the constants).
struct Admission {
    handshakes: Arc<Semaphore>,
    member_handshakes: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    member_connections: Arc<Semaphore>,
    handshakes_per_address: Arc<PerAddress>,
    connections_per_address: Arc<PerAddress>,
    /// The members' addresses: they may use the reserves, and the
    /// per-address limits do not apply to them.
    members: HashSet<IpAddr>,
}

/// What an admitted connection holds while it shakes hands.
struct Admitted {
    connection: OwnedSemaphorePermit,
    address: Option<AddressSlot>,
    handshake: OwnedSemaphorePermit,
    address_handshake: Option<AddressSlot>,
}

impl Admission {
    fn new(members: &[IpAddr]) -> Admission {
        Admission {
            handshakes: Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX)),
            member_handshakes: Arc::new(Semaphore::new(MEMBER_HANDSHAKES_RESERVED)),
            connections: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
            member_connections: Arc::new(Semaphore::new(MEMBER_CONNECTIONS_RESERVED)),
            handshakes_per_address: PerAddress::new(HANDSHAKES_PER_ADDRESS_MAX),
            connections_per_address: PerAddress::new(CONNECTIONS_PER_ADDRESS_MAX),
            members: members.iter().map(|a| a.to_canonical()).collect(),
        }
    }

    /// Admits a connection from `from`, or says which limit it met. The
    /// address's own limits are checked before it takes anything shared.
    fn admit(&self, from: IpAddr) -> Result<Admitted, String> {
        let from = from.to_canonical();
        let member = self.members.contains(&from);
        let shared_or_reserved = |general: &Arc<Semaphore>, reserve: &Arc<Semaphore>| {
            general.clone().try_acquire_owned().ok().or_else(|| {
                member
                    .then(|| reserve.clone().try_acquire_owned().ok())
                    .flatten()
            })
        };
        let (address, address_handshake) = if member {
            (None, None)
        } else {
            let address = self.connections_per_address.acquire(from).ok_or_else(|| {
                format!(
                    "{CONNECTIONS_PER_ADDRESS_MAX} connections open from this address: the limit"
                )
            })?;
            let handshake = self.handshakes_per_address.acquire(from).ok_or_else(|| {
                format!(
                    "{HANDSHAKES_PER_ADDRESS_MAX} handshakes in progress from this address: the limit"
                )
            })?;
            (Some(address), Some(handshake))
        };
        let connection = shared_or_reserved(&self.connections, &self.member_connections)
            .ok_or_else(|| format!("{CONNECTIONS_MAX} connections open: the limit"))?;
        let handshake =
            shared_or_reserved(&self.handshakes, &self.member_handshakes).ok_or_else(|| {
                format!("{HANDSHAKES_IN_FLIGHT_MAX} handshakes in progress: the limit")
            })?;
        Ok(Admitted {
            connection,
            address,
            handshake,
            address_handshake,
        })
    }
}

/// Accepts connections on `listener` and yields those whose TLS handshake
/// succeeded (and, on the peer plane, whose certificate names one of
/// `members.ids`), until the stream is dropped (the server stopped). At most
/// [`CONNECTIONS_MAX`] are open, [`CONNECTIONS_PER_ADDRESS_MAX`] from one
/// source address, [`HANDSHAKES_IN_FLIGHT_MAX`] shaking hands at once and
/// [`HANDSHAKES_PER_ADDRESS_MAX`] of them from one address; connections from
/// `members.addresses` (the members' hosts) are not limited per address and
/// may use [`MEMBER_CONNECTIONS_RESERVED`] and [`MEMBER_HANDSHAKES_RESERVED`]
/// when strangers hold the rest. A connection beyond any limit is closed and
/// logged.
pub fn incoming(
    listener: TcpListener,
    state: Arc<TlsState>,
    plane: Plane,
    members: Members,
    refusals: Arc<Refusals>,
) -> ReceiverStream<io::Result<Counted<TlsStream<TcpStream>>>> {
    let Members {
        ids: members,
        addresses: member_addresses,
    } = members;
    let (tx, rx) = mpsc::channel(HANDSHAKES_IN_FLIGHT_MAX);
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let admission = Admission::new(&member_addresses);
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, from) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let admitted = match admission.admit(from.ip()) {
                    Ok(admitted) => admitted,
                    Err(limit) => {
                        refusals.log(plane, from.ip(), &limit);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let config = match plane {
                    Plane::Peer => state.current().peer.clone(),
                    Plane::Client => state.current().client.clone(),
                };
                let (tx, refusals, members) = (tx.clone(), refusals.clone(), members.clone());
                let cluster = state.cluster().to_string();
                tokio::spawn(
                    async move {
                        let Admitted {
                            connection,
                            address,
                            handshake,
                            address_handshake,
                        } = admitted;
                        let handshake_done = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            TlsAcceptor::from(config).accept(stream),
                        )
                        .await
                        .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)));
                        // The handshake is over: its permits go back now.
                        drop((handshake, address_handshake));
                        let tls = match handshake_done {
                            Ok(tls) => tls,
                            Err(error) => {
                                refusals.log(plane, from.ip(), &handshake_reason(&error));
                                return;
                            }
                        };
                        if plane == Plane::Peer {
                            let (_, session) = tls.get_ref();
                            match peer_node(session.peer_certificates(), &cluster) {
                                Ok(id) if members.admits(id) => {}
                                Ok(id) => {
                                    refusals.log(
                                        plane,
                                        from.ip(),
                                        &format!("node {id} is not a member of the cluster"),
                                    );
                                    return;
                                }
                                Err(reason) => {
                                    refusals.log(plane, from.ip(), &reason);
                                    return;
                                }
                            }
                        }
                        let _ = tx
                            .send(Ok(Counted {
                                inner: tls,
                                _slot: connection,
                                _address: address,
                            }))
                            .await;
                    }
                    .in_current_span(),
                );
            }
        }
        .instrument(span),
    );
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A private key others can read is warned about; mode 0600 is not.
    #[test]
    fn a_private_key_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node-1.key");
        std::fs::write(&key, b"key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(key_permissions_warning(&key), None);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = key_permissions_warning(&key).unwrap();
        assert!(
            warning.contains("(mode 644)") && warning.contains("chmod 600"),
            "{warning}"
        );
    }

    // Refusals are logged once per (source, reason) among the most recently
    // seen: a flood of new sources pushes out the oldest one by one, and a
    // source seen again stays remembered.
    #[test]
    fn refusals_are_remembered_least_recently_seen_first_out() {
        let refusals = Refusals::default();
        assert!(refusals.first("steady".into(), "no certificate"));
        for i in 0..REFUSALS_REMEMBERED * 3 {
            assert!(refusals.first(format!("flood-{i}"), "no certificate"));
            if i % 100 == 0 {
                assert!(!refusals.first("steady".into(), "no certificate"));
            }
        }
        assert!(!refusals.first("steady".into(), "no certificate"));
        let seen = refusals.seen.lock().unwrap();
        assert_eq!(seen.stamps.len(), REFUSALS_REMEMBERED);
        assert_eq!(seen.order.len(), REFUSALS_REMEMBERED);
        drop(seen);
        assert!(
            refusals.first("flood-0".into(), "no certificate"),
            "the oldest was forgotten"
        );
    }

    // One address gets at most its share; another address still gets in; a
    // closed connection gives its slot back, and idle addresses are forgotten.
    #[test]
    fn one_address_cannot_take_every_connection() {
        let table = PerAddress::new(CONNECTIONS_PER_ADDRESS_MAX);
        let flooding: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let other: std::net::IpAddr = "127.0.0.3".parse().unwrap();
        let slots: Vec<AddressSlot> = (0..CONNECTIONS_PER_ADDRESS_MAX)
            .map(|_| table.acquire(flooding).expect("under the limit"))
            .collect();
        assert!(table.acquire(flooding).is_none());
        let admitted = table.acquire(other).expect("another address gets in");
        drop(slots);
        assert!(table.acquire(flooding).is_some());
        drop(admitted);
        assert!(table.open.lock().unwrap().is_empty());
    }

    // Idle sockets from one address hold at most its share of the
    // handshakes; strangers from many addresses can fill the listener's
    // handshakes, but a member's address still gets in from the reserve, and
    // members are not limited per address.
    #[test]
    fn strangers_cannot_keep_members_out() {
        let member: IpAddr = "10.0.0.11".parse().unwrap();
        let admission = Admission::new(&[member]);
        let flooding: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<Admitted> = (0..HANDSHAKES_PER_ADDRESS_MAX)
            .map(|_| {
                admission
                    .admit(flooding)
                    .expect("under the address's limit")
            })
            .collect();
        assert_eq!(
            admission.admit(flooding).err().unwrap(),
            format!(
                "{HANDSHAKES_PER_ADDRESS_MAX} handshakes in progress from this address: the limit"
            )
        );
        // The refused attempt gave back the connection slot it took first.
        assert_eq!(
            admission.connections_per_address.open.lock().unwrap()[&flooding],
            HANDSHAKES_PER_ADDRESS_MAX
        );
        let mut strangers = held;
        let mut octet = 2u8;
        while admission.handshakes.available_permits() > 0 {
            let from = IpAddr::from([192, 0, 2, octet]);
            octet += 1;
            while admission.handshakes.available_permits() > 0 {
                match admission.admit(from) {
                    Ok(admitted) => strangers.push(admitted),
                    Err(_) => break,
                }
            }
        }
        let stranger = IpAddr::from([198, 51, 100, 7]);
        assert_eq!(
            admission.admit(stranger).err().unwrap(),
            format!("{HANDSHAKES_IN_FLIGHT_MAX} handshakes in progress: the limit")
        );
        let members: Vec<Admitted> = (0..MEMBER_HANDSHAKES_RESERVED)
            .map(|_| admission.admit(member).expect("a member uses the reserve"))
            .collect();
        assert!(admission.admit(member).is_err(), "the reserve is bounded");
        drop(members);
        // A finished handshake gives its permits back.
        strangers.pop();
        assert!(admission.admit(stranger).is_ok());
    }
}
