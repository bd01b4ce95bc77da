//! The client side of TLS: how applications, the CLI and nodes dial.
//!
//! [`ClientTls`] says whom a connection trusts (the cluster CA, the
//! operating system's roots, or both), which identity it presents (an
//! administrator's or a node's certificate, or none), and what name it
//! expects the server to prove (by default the host of the address dialled;
//! a node dialling a peer expects `node-<id>.<cluster>`). [`ClientTls::endpoint`]
//! turns an address into a tonic endpoint with that configuration; every
//! place raftlm dials goes through it.
//!
//! Defaults from the environment ([`ClientTls::from_env`]):
//! `RAFTLM_CA` (a PEM bundle of trusted CAs; without it the OS's roots),
//! `RAFTLM_CERT` and `RAFTLM_KEY` (a client identity, for administrators),
//! `RAFTLM_TLS_NAME` (the name to verify instead of the address's host), and
//! `RAFTLM_PLAINTEXT=1` (no TLS, for a cluster configured `tls.plaintext`).

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::tls::acceptor::read_pem;

/// Environment variable: the CA bundle (PEM file) a client trusts.
pub const ENV_CA: &str = "RAFTLM_CA";
/// Environment variable: the client certificate (PEM file) a client presents.
pub const ENV_CERT: &str = "RAFTLM_CERT";
/// Environment variable: the client certificate's private key (PEM file).
pub const ENV_KEY: &str = "RAFTLM_KEY";
/// Environment variable: the server name to verify instead of the address's host.
pub const ENV_TLS_NAME: &str = "RAFTLM_TLS_NAME";
/// Environment variable: `1` to connect without TLS.
pub const ENV_PLAINTEXT: &str = "RAFTLM_PLAINTEXT";

/// How a client dials the cluster. See the module docs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// No TLS at all (only for clusters configured `tls.plaintext = true`).
    pub plaintext: bool,
    /// Trusted CA certificates (PEM); with none, the OS's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Also trust the operating system's roots (for enterprise CAs).
    pub native_roots: bool,
    /// Certificate and key (PEM) presented to the server.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry; default the host dialled.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    // Keys are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("plaintext", &self.plaintext)
            .field("ca", &self.ca_pem.is_some())
            .field("native_roots", &self.native_roots)
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// The cluster identities of the CA certificates this client trusts
    /// (its CA file; none with the OS's roots only or without TLS). The
    /// client library's vendor check accepts a line bound to an identity only
    /// if it is one of these.
    pub fn cluster_ids(&self) -> Vec<crate::license::ClusterId> {
        let Some(pem) = &self.ca_pem else {
            return Vec::new();
        };
        match crate::tls::identity::ca_cluster_ids(&String::from_utf8_lossy(pem)) {
            Ok(ids) => ids.into_iter().map(|(id, _)| id).collect(),
            Err(error) => {
                tracing::warn!(%error, "the trusted CA file does not parse: no cluster identity is trusted");
                Vec::new()
            }
        }
    }

    /// No TLS.
    pub fn plaintext() -> ClientTls {
        ClientTls {
            plaintext: true,
            ..ClientTls::default()
        }
    }

    /// Trusts the CA in `ca` (PEM file) and presents the identity in
    /// `cert`/`key` when both are given.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientTls, String> {
        let read = |path: &Path| read_pem(path).map_err(|e| e.to_string());
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err("a client certificate was given without its key".into());
            }
            (None, Some(_)) => {
                return Err("a client key was given without its certificate".into());
            }
        };
        Ok(ClientTls {
            plaintext: false,
            native_roots: ca.is_none(),
            ca_pem: ca.map(read).transpose()?,
            identity,
            server_name: None,
        })
    }

    /// The configuration the environment gives (see the module docs).
    pub fn from_env() -> Result<ClientTls, String> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        match var(ENV_PLAINTEXT).as_deref().and_then(|v| v.to_str()) {
            None | Some("0") => {}
            Some("1") => return Ok(ClientTls::plaintext()),
            Some(other) => {
                return Err(format!(
                    "{ENV_PLAINTEXT}={other:?}: set it to 1 to connect without TLS, or unset it"
                ));
            }
        }
        let ca = var(ENV_CA);
        let cert = var(ENV_CERT);
        let key = var(ENV_KEY);
        let mut tls = ClientTls::from_files(
            ca.as_deref().map(Path::new),
            cert.as_deref().map(Path::new),
            key.as_deref().map(Path::new),
        )
        .map_err(|e| format!("{e} (from {ENV_CA}, {ENV_CERT}, {ENV_KEY})"))?;
        tls.server_name = var(ENV_TLS_NAME).map(|v| v.to_string_lossy().into_owned());
        Ok(tls)
    }

    /// The same configuration, verifying `name` instead of the host dialled.
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// A lazily connecting endpoint for `address` (`host:port`).
    pub fn endpoint(&self, address: &str, connect_timeout: Duration) -> Result<Endpoint, String> {
        let scheme = if self.plaintext { "http" } else { "https" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| format!("\"{address}\" is not a usable address: {e}"))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if !self.plaintext {
            let mut config = ClientTlsConfig::new();
            if let Some(ca) = &self.ca_pem {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if self.native_roots || self.ca_pem.is_none() {
                config = config.with_native_roots();
            }
            if let Some((cert, key)) = &self.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &self.server_name {
                config = config.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS set-up for {address} failed: {e}"))?;
        }
        Ok(endpoint)
    }
}
