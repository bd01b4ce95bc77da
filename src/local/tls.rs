//! The certificates of a local cluster: a CA, one certificate per node and an
//! administrator's, in `DIR/tls/`, for `raftlm demo`, `raftlm bench`, the
//! tests and the chaos harness alike.
//!
//! The files are what `raftlm tls init` and `raftlm tls issue` write; a CA
//! already in the directory is reused (so a demo restarted on the same
//! directory keeps its CA), node and administrator certificates are issued
//! afresh each time.

use std::path::{Path, PathBuf};

use crate::tls::cert::{
    self, CA_CERT_FILE, CA_DAYS_DEFAULT, CERT_DAYS_DEFAULT, IssueRequest, Subject,
};
use crate::tls::client::{ClientTls, ENV_CA, ENV_CERT, ENV_KEY};

/// The administrator certificate's name in a local cluster.
pub const LOCAL_ADMIN: &str = "admin";

/// A local cluster's certificate files.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The directory holding them (`DIR/tls`).
    pub dir: PathBuf,
}

impl ClusterTls {
    /// Creates (or reuses) the CA of `cluster` in `dir` and issues
    /// certificates for `nodes` — each naming `node-<id>.<cluster>`, the
    /// cluster name and the extra names `sans` (the addresses clients dial:
    /// the nodes' and the access point's) — and an administrator's.
    pub fn create(
        dir: &Path,
        cluster: &str,
        nodes: &[u64],
        sans: &[String],
    ) -> Result<ClusterTls, String> {
        // Certificates are dated by the system clock, never a shifted one.
        let now = (crate::clock::real_wall_ms() / 1000) as i64;
        if !dir.join(CA_CERT_FILE).exists() {
            cert::init_ca(dir, cluster, CA_DAYS_DEFAULT, now).map_err(|e| e.to_string())?;
        }
        let tls = ClusterTls {
            dir: dir.to_path_buf(),
        };
        let valid = |subject| IssueRequest {
            subject,
            extra_sans: sans.to_vec(),
            not_before_unix: now - 60,
            not_after_unix: now + i64::from(CERT_DAYS_DEFAULT) * 86_400,
        };
        for &id in nodes {
            cert::issue(dir, dir, &valid(Subject::Node { id }), true).map_err(|e| e.to_string())?;
        }
        let admin = IssueRequest {
            extra_sans: Vec::new(),
            ..valid(Subject::Admin {
                name: LOCAL_ADMIN.into(),
            })
        };
        cert::issue(dir, dir, &admin, true).map_err(|e| e.to_string())?;
        Ok(tls)
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// Node `id`'s certificate and key.
    pub fn node(&self, id: u64) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("node-{id}.crt")),
            self.dir.join(format!("node-{id}.key")),
        )
    }

    /// The administrator's certificate and key.
    pub fn admin(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{LOCAL_ADMIN}.crt")),
            self.dir.join(format!("{LOCAL_ADMIN}.key")),
        )
    }

    /// The `[tls]` section of node `id`'s config.
    pub fn node_config(&self, id: u64) -> crate::config::Tls {
        let (cert, key) = self.node(id);
        crate::config::Tls {
            plaintext: false,
            ca: Some(self.ca()),
            cert: Some(cert),
            key: Some(key),
        }
    }

    /// How an application dials the cluster: trusting its CA, no certificate.
    pub fn client(&self) -> Result<ClientTls, String> {
        ClientTls::from_files(Some(&self.ca()), None, None)
    }

    /// How an administrator dials the cluster: trusting its CA, with the
    /// administrator's certificate.
    pub fn administrator(&self) -> Result<ClientTls, String> {
        let (cert, key) = self.admin();
        ClientTls::from_files(Some(&self.ca()), Some(&cert), Some(&key))
    }

    /// The shell lines that make the CLI use these files as the administrator.
    pub fn env_lines(&self) -> String {
        let (cert, key) = self.admin();
        format!(
            "export {ENV_CA}={}\nexport {ENV_CERT}={}\nexport {ENV_KEY}={}\n",
            self.ca().display(),
            cert.display(),
            key.display()
        )
    }
}
