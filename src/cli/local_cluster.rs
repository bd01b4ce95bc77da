//! A three-node cluster of `raftlm server` processes on loopback, for
//! `raftlm demo` and `raftlm bench`: keys, a signed license, certificates
//! ([`ClusterTls`]), configs, and the child processes (killed when the
//! cluster is dropped).
//!
//! Node `i` serves clients on `127.0.0.1:PORT_i` and its peers on
//! `127.0.0.1:PORT_i + PEER_PORT_OFFSET`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::cli::Failure;
use crate::license::signature::{self, VendorSigningKey};
use crate::local::probe::status_of;
use crate::local::tls::ClusterTls;
use crate::proto::v1 as pb;
use crate::tls::client::ClientTls;

/// The cluster (access point) name of local clusters.
pub const LOCAL_CLUSTER: &str = "LICSRV";
/// A node's peer port is its client port plus this.
pub const PEER_PORT_OFFSET: u16 = 100;

/// A local cluster's files and processes.
pub struct LocalCluster {
    /// Directory of keys, license, configs, data and logs.
    pub dir: PathBuf,
    /// The nodes' own addresses (node `i + 1` at index `i`).
    pub addresses: Vec<String>,
    /// The access point address.
    pub access_point: String,
    /// Running nodes.
    pub children: Vec<Option<Child>>,
    /// The certificates, unless the cluster runs in plaintext.
    pub tls: Option<ClusterTls>,
    /// How applications dial it.
    pub client_tls: ClientTls,
    exe: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text)
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))
}

impl LocalCluster {
    /// Writes a vendor key (reused if `dir` has one), `license` signed with it,
    /// certificates in `dir/tls` (unless `plaintext`), and three configs with
    /// `extra` TOML appended to each.
    pub fn prepare(
        dir: &Path,
        ports: &[u16],
        access_point: &str,
        license: &str,
        extra: &str,
        plaintext: bool,
    ) -> Result<LocalCluster, Failure> {
        let licenses = dir.join("licenses");
        std::fs::create_dir_all(&licenses)
            .map_err(|e| Failure::usage(format!("cannot create {}: {e}", licenses.display())))?;
        for port in ports.iter().flat_map(|p| [*p, p + PEER_PORT_OFFSET]) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(Failure::usage(format!(
                    "port {port} on 127.0.0.1 is in use; choose other ports"
                )));
            }
        }
        let key_path = dir.join("acme.key");
        let key = if key_path.exists() {
            crate::keys::load_signing_key(&key_path).map_err(|e| Failure::usage(e.to_string()))?
        } else {
            let key = VendorSigningKey::generate(Some("acme"));
            write(&key_path, &key.to_file_text())?;
            key
        };
        write(&dir.join("acme.pub"), &key.public_key().to_file_text())?;
        let signed = signature::sign_text("local.lic", license, &key)
            .map_err(|e| Failure::usage(e.to_string()))?;
        write(&licenses.join("local.lic"), &signed)?;
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let (tls, client_tls) = if plaintext {
            (None, ClientTls::plaintext())
        } else {
            let ap_host = access_point
                .rsplit_once(':')
                .map_or(access_point, |(host, _)| host);
            let sans = vec!["127.0.0.1".to_string(), ap_host.to_string()];
            let tls = ClusterTls::create(&dir.join("tls"), LOCAL_CLUSTER, &[1, 2, 3], &sans)
                .map_err(Failure::usage)?;
            let client = tls.client().map_err(Failure::usage)?;
            (Some(tls), client)
        };
        for id in 1..=3usize {
            let mut text = format!(
                "# raftlm local node {id}; every field is described in docs/examples/node1.toml\n\
                 node_id = {id}\ncluster_name = \"{LOCAL_CLUSTER}\"\ndata_dir = \"data/node{id}\"\n\
                 vendor_keys = [\"acme.pub\"]\nlicense_dir = \"licenses\"\n"
            );
            for (i, (address, port)) in addresses.iter().zip(ports).enumerate() {
                text.push_str(&format!(
                    "\n[[nodes]]\nid = {}\naddress = \"{address}\"\npeer_address = \"127.0.0.1:{}\"\n",
                    i + 1,
                    port + PEER_PORT_OFFSET
                ));
            }
            match &tls {
                Some(tls) => text.push_str(&tls.config_section(id as u64)),
                None => text.push_str("\n[tls]\nplaintext = true\n"),
            }
            text.push_str(&format!(
                "\n[access_point]\nmode = \"bind\"\naddress = \"{access_point}\"\n"
            ));
            text.push_str(extra);
            write(&dir.join(format!("node{id}.toml")), &text)?;
        }
        let exe = std::env::current_exe()
            .map_err(|e| Failure::usage(format!("cannot find the raftlm binary: {e}")))?;
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            addresses,
            access_point: access_point.to_string(),
            children: vec![None, None, None],
            tls,
            client_tls,
            exe,
        })
    }

    /// The config file of node `id` (1-based).
    pub fn config(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node{id}.toml"))
    }

    /// The log file of node `id`.
    pub fn log(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node{id}.log"))
    }

    /// The command that starts node `id` by hand.
    pub fn start_command(&self, id: usize) -> String {
        format!(
            "{} server --config {}",
            self.exe.display(),
            self.config(id).display()
        )
    }

    /// Starts node `id`, appending its log to `node{id}.log`.
    pub fn start(&mut self, id: usize) -> Result<(), Failure> {
        let log_path = self.log(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Failure::usage(format!("cannot open {}: {e}", log_path.display())))?;
        let child = Command::new(&self.exe)
            .arg("server")
            .arg("--config")
            .arg(self.config(id))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure::usage(format!("cannot start node {id}: {e}")))?;
        self.children[id - 1] = Some(child);
        Ok(())
    }

    /// Starts all three nodes.
    pub fn start_all(&mut self) -> Result<(), Failure> {
        (1..=3).try_for_each(|id| self.start(id))
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.children[id - 1].as_ref().and_then(|c| c.id())
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub async fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            let _ = child.kill().await;
        }
    }

    /// Asks node `id` to stop with SIGTERM (a planned stop); see [`LocalCluster::reap`].
    pub fn terminate(&self, id: usize) {
        if let Some(pid) = self.pid(id) {
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits up to 10 s for node `id` to exit, then kills it.
    pub async fn reap(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take()
            && tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Asks every node to stop with SIGTERM, waits up to 5 s each, then kills what is left.
    pub async fn stop_all(&mut self) {
        for child in self.children.iter().flatten() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) with a pid we spawned and a valid signal number.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        for slot in self.children.iter_mut() {
            if let Some(mut child) = slot.take()
                && tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Status from the access point, if it answers within a second.
    pub async fn status(&self) -> Option<pb::StatusReply> {
        status_of(&self.access_point, &self.client_tls).await
    }

    /// Waits up to `limit` until the access point serves a licensed cluster; returns the active node.
    pub async fn wait_ready(&self, limit: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(reply) = self.status().await
                && !reply.features.is_empty()
            {
                return Some(reply.active_node);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}
