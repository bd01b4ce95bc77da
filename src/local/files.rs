//! The files of a local cluster, written from values: a [`Plan`] names the
//! cluster, its nodes and their addresses (and, optionally, the peer
//! addresses each node dials, so that a harness can put proxies between
//! them), the access point, the licenses to sign, and TLS or plaintext;
//! [`Plan::write`] writes the vendor key pair (reusing a key already in the
//! directory), the signed licenses, the certificates ([`ClusterTls`]) and one
//! config per node.
//!
//! Each node's config is a [`Config`] value, changed by the plan's
//! [`Tune`] and written with `toml::to_string`, then read back with
//! [`Config::load`] — the loader `raftlm server` uses — so a plan that makes
//! a config the server would refuse fails here, naming the field. Paths in
//! the plan may be relative: they are relative to the plan's directory,
//! which is where the config files are written.
//!
//! What is left out: certificates for nodes added later, and host names
//! (every address is a socket address a test or a demo binds).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{AccessPoint, AccessPointMode, Config, ConfigError, NodeAddress};
use crate::license::signature::{self, VendorSigningKey};
use crate::local::tls::ClusterTls;
use crate::tls::client::ClientTls;

/// The cluster (access point) name of local clusters.
pub const LOCAL_CLUSTER: &str = "LICSRV";
/// The vendor whose key signs a local cluster's licenses.
pub const VENDOR: &str = "acme";
/// The vendor's secret key in the plan's directory.
pub const VENDOR_KEY_FILE: &str = "acme.key";
/// The vendor's public key in the plan's directory (every node trusts it).
pub const VENDOR_PUB_FILE: &str = "acme.pub";
/// The license directory every node imports at start-up.
pub const LICENSE_DIR: &str = "licenses";

/// A change to a node's config before it is written.
pub type Tune = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// What cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file or directory could not be written or read.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A port a node would listen on is taken.
    #[error("port {port} on {host} is in use; choose other ports")]
    PortInUse {
        /// The host part of the address.
        host: String,
        /// The port.
        port: u16,
    },
    /// The vendor key or a license could not be made.
    #[error("{0}")]
    License(String),
    /// The certificates could not be made.
    #[error("cannot make the certificates: {0}")]
    Tls(String),
    /// A config could not be written as TOML.
    #[error("cannot write node {node}'s config: {message}")]
    Serialize {
        /// The node id.
        node: u64,
        /// What the serializer said.
        message: String,
    },
    /// A written config does not load back.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// One node of a plan.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// The node id (1-based, as in `[[nodes]]`).
    pub id: u64,
    /// Its client-plane address.
    pub address: String,
    /// Its peer-plane address.
    pub peer_address: String,
    /// Its data directory (relative: to the plan's directory).
    pub data_dir: PathBuf,
    /// The peer addresses this node dials, one per node of the plan in its
    /// order (its own entry is not used); `None`: the nodes' own.
    pub peer_view: Option<Vec<String>>,
    /// Its `[[nodes]] name`, if any (`lmutil lmstat` shows it).
    pub name: Option<String>,
}

/// How the cluster's planes are secured.
#[derive(Debug, Clone)]
pub enum Security {
    /// No TLS (`[tls] plaintext = true`).
    Plaintext,
    /// Certificates made (or a CA reused) in `DIR/tls`, naming these extra
    /// names besides the nodes' (the addresses clients dial).
    Tls {
        /// The extra subject alternative names.
        sans: Vec<String>,
    },
    /// Certificates made beforehand (tests share one CA per test process);
    /// they must cover every node of the plan.
    Existing(ClusterTls),
}

/// A license file to sign with the vendor key.
#[derive(Debug, Clone)]
pub struct LicenseFile {
    /// The file name (`local.lic`).
    pub name: String,
    /// The unsigned text.
    pub text: String,
    /// Whether it goes into the license directory; if not, only its signed
    /// text is returned (an administrator imports it later).
    pub installed: bool,
}

impl LicenseFile {
    /// A license file `name` for `cluster` granting permanent `features`
    /// (name, seats) of [`VENDOR`], installed in the license directory.
    pub fn features(name: &str, cluster: &str, features: &[(&str, u32)]) -> LicenseFile {
        let mut text = format!("SERVER {cluster} ANY 27000\nVENDOR {VENDOR}\n");
        for (feature, seats) in features {
            text.push_str(&format!(
                "FEATURE {feature} {VENDOR} 2.0 permanent {seats}\n"
            ));
        }
        LicenseFile::text(name, &text)
    }

    /// A license file `name` with `text`, installed in the license directory.
    pub fn text(name: &str, text: &str) -> LicenseFile {
        LicenseFile {
            name: name.to_string(),
            text: text.to_string(),
            installed: true,
        }
    }

    /// The same file kept out of the license directory.
    pub fn not_installed(self) -> LicenseFile {
        LicenseFile {
            installed: false,
            ..self
        }
    }
}

/// What a local cluster is made of.
#[derive(Clone)]
pub struct Plan {
    /// The directory of keys, licenses, certificates, configs, data and logs.
    pub dir: PathBuf,
    /// The cluster name (the licenses' `SERVER` line).
    pub cluster: String,
    /// The nodes.
    pub nodes: Vec<NodePlan>,
    /// The access point (mode `none`: clients use the node list).
    pub access_point: AccessPoint,
    /// Licenses to sign.
    pub licenses: Vec<LicenseFile>,
    /// TLS or plaintext.
    pub security: Security,
    /// A comment written above each config; `{id}` in it stands for the node id.
    pub header: Option<String>,
    /// Changes every node's config before it is written.
    pub tune: Tune,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("dir", &self.dir)
            .field("cluster", &self.cluster)
            .field("nodes", &self.nodes)
            .field("access_point", &self.access_point)
            .field("licenses", &self.licenses)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

/// What [`Plan::write`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The vendor key the licenses are signed with.
    pub key: VendorSigningKey,
    /// Its public key file.
    pub public: PathBuf,
    /// The certificates, unless the cluster runs in plaintext.
    pub tls: Option<ClusterTls>,
    /// How applications dial the cluster.
    pub client_tls: ClientTls,
    /// Each node's config file, in the plan's order.
    pub config_files: Vec<PathBuf>,
    /// Each node's config as the server loads it (paths resolved).
    pub configs: Vec<Config>,
    /// The signed text of every license file, by name (installed or not).
    pub signed: Vec<(String, String)>,
}

impl Written {
    /// The signed text of license file `name`.
    pub fn signed(&self, name: &str) -> Option<&str> {
        self.signed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, text)| text.as_str())
    }
}

/// A node's peer port on loopback is its client port plus this
/// ([`loopback_nodes`]), so that a user who picks the client ports knows
/// which others are taken.
pub const PEER_PORT_OFFSET: u16 = 100;

/// Nodes on `127.0.0.1` with the client ports `ports[i]` and the peer ports
/// [`PEER_PORT_OFFSET`] higher, data in `data/node{id}`.
pub fn loopback_nodes(ports: &[u16]) -> Vec<NodePlan> {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let id = i as u64 + 1;
            NodePlan {
                id,
                address: format!("127.0.0.1:{port}"),
                peer_address: format!("127.0.0.1:{}", port.saturating_add(PEER_PORT_OFFSET)),
                data_dir: PathBuf::from(format!("data/node{id}")),
                peer_view: None,
                name: None,
            }
        })
        .collect()
}

/// Nodes at the given client and peer addresses (node `i + 1` at index
/// `i`), data in `node{id}`.
pub fn nodes_at(addresses: &[String], peer_addresses: &[String]) -> Vec<NodePlan> {
    addresses
        .iter()
        .zip(peer_addresses)
        .enumerate()
        .map(|(i, (address, peer))| {
            let id = i as u64 + 1;
            NodePlan {
                id,
                address: address.clone(),
                peer_address: peer.clone(),
                data_dir: PathBuf::from(format!("node{id}")),
                peer_view: None,
                name: None,
            }
        })
        .collect()
}

/// An access point bound at `address` (bind mode).
pub fn bind_access_point(address: std::net::SocketAddr) -> AccessPoint {
    AccessPoint {
        mode: AccessPointMode::Bind,
        address,
        ..AccessPoint::default()
    }
}

/// No access point: clients use the node list.
pub fn no_access_point() -> AccessPoint {
    AccessPoint {
        mode: AccessPointMode::None,
        ..AccessPoint::default()
    }
}

/// Writes `config` to `path` as TOML, under the comment `header`. The config
/// is not validated: a test may write one the server must refuse.
pub fn write_config(path: &Path, config: &Config, header: Option<&str>) -> Result<(), FilesError> {
    let text = toml::to_string(config).map_err(|e| FilesError::Serialize {
        node: config.node_id,
        message: e.to_string(),
    })?;
    let text = match header {
        Some(header) => format!("# {header}\n{text}"),
        None => text,
    };
    write_file(path, &text)
}

fn write_file(path: &Path, text: &str) -> Result<(), FilesError> {
    std::fs::write(path, text).map_err(|source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), FilesError> {
    std::fs::create_dir_all(path).map_err(|source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Plan {
    /// A plan for `nodes` in `dir`: cluster [`LOCAL_CLUSTER`], no access
    /// point, no license, certificates naming `127.0.0.1`, configs as they are.
    pub fn new(dir: &Path, nodes: Vec<NodePlan>) -> Plan {
        Plan {
            dir: dir.to_path_buf(),
            cluster: LOCAL_CLUSTER.to_string(),
            nodes,
            access_point: no_access_point(),
            licenses: Vec::new(),
            security: Security::Tls {
                sans: vec!["127.0.0.1".to_string()],
            },
            header: None,
            tune: Arc::new(|_| {}),
        }
    }

    /// The plan with `tune` applied to every config after the plan's own tuning.
    pub fn tuned(mut self, tune: impl Fn(&mut Config) + Send + Sync + 'static) -> Plan {
        let before = self.tune.clone();
        self.tune = Arc::new(move |config| {
            before(config);
            tune(config);
        });
        self
    }

    /// Fails, naming the port, if a node's client or peer address cannot be bound now.
    pub fn check_ports_free(&self) -> Result<(), FilesError> {
        for address in self
            .nodes
            .iter()
            .flat_map(|n| [&n.address, &n.peer_address])
        {
            if std::net::TcpListener::bind(address.as_str()).is_err() {
                let (host, port) = crate::config::split_host_port(address).unwrap_or((address, 0));
                return Err(FilesError::PortInUse {
                    host: host.to_string(),
                    port,
                });
            }
        }
        Ok(())
    }

    /// Node `i`'s config (0-based, in the plan's order) as a value, before
    /// paths are resolved: `public` is the vendor's public key file, `tls`
    /// the certificates (`None`: plaintext).
    pub fn config(&self, i: usize, public: &Path, tls: Option<&ClusterTls>) -> Config {
        let own = &self.nodes[i];
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(j, node)| NodeAddress {
                name: node.name.clone(),
                id: node.id,
                address: node.address.clone(),
                peer_address: match &own.peer_view {
                    Some(view) if j != i => view[j].clone(),
                    _ => node.peer_address.clone(),
                },
            })
            .collect();
        let tls = match tls {
            Some(tls) => tls.node_config(own.id),
            None => crate::config::Tls {
                plaintext: true,
                ..Default::default()
            },
        };
        let mut config = Config {
            node_id: own.id,
            cluster_name: self.cluster.clone(),
            data_dir: own.data_dir.clone(),
            listen: None,
            peer_listen: None,
            nodes,
            vendor_keys: vec![public.to_path_buf()],
            license_dir: self
                .licenses
                .iter()
                .any(|l| l.installed)
                .then(|| PathBuf::from(LICENSE_DIR)),
            machine_id_file: None,
            access_point: self.access_point.clone(),
            timing: Default::default(),
            batching: Default::default(),
            snapshot: Default::default(),
            tls,
            limits: Default::default(),
            http: Default::default(),
        };
        (self.tune)(&mut config);
        config
    }

    /// The file node `i`'s config is written to.
    pub fn config_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}.toml", self.nodes[i].id))
    }

    /// Writes the vendor key pair (reused if the directory has
    /// [`VENDOR_KEY_FILE`]), the signed licenses, the certificates and every
    /// node's config, and loads each config back.
    pub fn write(&self) -> Result<Written, FilesError> {
        create_dir(&self.dir)?;
        let key_path = self.dir.join(VENDOR_KEY_FILE);
        let key = if key_path.exists() {
            crate::keys::load_signing_key(&key_path)
                .map_err(|e| FilesError::License(e.to_string()))?
        } else {
            let key = VendorSigningKey::generate(Some(VENDOR));
            write_file(&key_path, &key.to_file_text())?;
            key
        };
        let public = self.dir.join(VENDOR_PUB_FILE);
        write_file(&public, &key.public_key().to_file_text())?;
        let mut signed = Vec::new();
        for license in &self.licenses {
            let text = signature::sign_text(&license.name, &license.text, &key)
                .map_err(|e| FilesError::License(format!("cannot sign {}: {e}", license.name)))?;
            if license.installed {
                let dir = self.dir.join(LICENSE_DIR);
                create_dir(&dir)?;
                write_file(&dir.join(&license.name), &text)?;
            }
            signed.push((license.name.clone(), text));
        }
        let (tls, client_tls) = match &self.security {
            Security::Plaintext => (None, ClientTls::plaintext()),
            Security::Tls { sans } => {
                let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
                let tls = ClusterTls::create(&self.dir.join("tls"), &self.cluster, &ids, sans)
                    .map_err(FilesError::Tls)?;
                let client = tls.client().map_err(FilesError::Tls)?;
                (Some(tls), client)
            }
            Security::Existing(tls) => (Some(tls.clone()), tls.client().map_err(FilesError::Tls)?),
        };
        let public_in_file = PathBuf::from(VENDOR_PUB_FILE);
        let mut config_files = Vec::new();
        let mut configs = Vec::new();
        for i in 0..self.nodes.len() {
            let config = self.config(i, &public_in_file, tls.as_ref());
            let header = self
                .header
                .as_ref()
                .map(|h| h.replace("{id}", &config.node_id.to_string()));
            let path = self.config_file(i);
            write_config(&path, &config, header.as_deref())?;
            configs.push(Config::load(&path)?);
            config_files.push(path);
        }
        Ok(Written {
            key,
            public,
            tls,
            client_tls,
            config_files,
            configs,
            signed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(n: usize, from: u16) -> Vec<u16> {
        (0..n as u16).map(|i| from + i).collect()
    }

    /// Every written config loads back with the server's loader, with the
    /// plan's addresses, tuning and license directory, for three and five nodes.
    #[test]
    fn written_configs_load_back() {
        for n in [3, 5] {
            let dir = std::env::temp_dir().join(format!(
                "raftlm-files-test-{}-{n}-{}",
                std::process::id(),
                crate::clock::real_wall_ms()
            ));
            let mut plan = Plan::new(&dir, loopback_nodes(&ports(n, 40001)))
                .tuned(|config| config.timing.session_ttl_ms = 3000);
            plan.access_point = bind_access_point("127.0.0.100:27000".parse().unwrap());
            plan.licenses = vec![LicenseFile::features(
                "local.lic",
                LOCAL_CLUSTER,
                &[("cad", 5)],
            )];
            plan.header = Some("a local node".into());
            let written = plan.write().unwrap();
            assert_eq!(written.configs.len(), n);
            for (i, config) in written.configs.iter().enumerate() {
                let reloaded = Config::load(&written.config_files[i]).unwrap();
                assert_eq!(&reloaded, config);
                assert_eq!(config.node_id, i as u64 + 1);
                assert_eq!(config.nodes.len(), n);
                assert_eq!(config.timing.session_ttl_ms, 3000);
                assert_eq!(config.data_dir, dir.join(format!("data/node{}", i + 1)));
                assert_eq!(config.license_dir, Some(dir.join(LICENSE_DIR)));
                assert_eq!(config.vendor_keys, vec![dir.join(VENDOR_PUB_FILE)]);
                assert!(config.tls_files().is_some());
            }
            assert!(dir.join(LICENSE_DIR).join("local.lic").is_file());
            // The key is reused: a second write signs with the same key.
            let again = plan.write().unwrap();
            assert_eq!(
                again.key.public_key().to_file_text(),
                written.key.public_key().to_file_text()
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A node's peer view replaces the peer addresses of the others in its
    /// config only; its own entry keeps its real peer address.
    #[test]
    fn peer_view_is_per_node() {
        let dir = std::env::temp_dir().join(format!(
            "raftlm-files-view-{}-{}",
            std::process::id(),
            crate::clock::real_wall_ms()
        ));
        let mut nodes = loopback_nodes(&ports(3, 41001));
        nodes[0].peer_view = Some(vec![
            String::new(),
            "127.0.0.1:42002".into(),
            "127.0.0.1:42003".into(),
        ]);
        let mut plan = Plan::new(&dir, nodes);
        plan.security = Security::Plaintext;
        let written = plan.write().unwrap();
        let peers = |i: usize| -> Vec<String> {
            written.configs[i]
                .nodes
                .iter()
                .map(|n| n.peer_address.clone())
                .collect()
        };
        assert_eq!(
            peers(0),
            ["127.0.0.1:41101", "127.0.0.1:42002", "127.0.0.1:42003"]
        );
        assert_eq!(
            peers(1),
            ["127.0.0.1:41101", "127.0.0.1:41102", "127.0.0.1:41103"]
        );
        assert!(written.configs[0].tls.plaintext);
        assert_eq!(written.configs[0].license_dir, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
