//! Real `raftlm server` processes on loopback, killed when the harness drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftlm::proto::v1 as pb;
use raftlm::proto::v1::license_client::LicenseClient;

/// A free TCP port on 127.0.0.1 (bound and released; the race with other
/// programs is acceptable in tests). Never the same port twice in one test
/// process: the kernel may hand a just-released port out again, and a
/// cluster whose config lists one address twice does not start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// An access-point address unlikely to collide with another test's: 127.x.y.z:port.
pub fn access_point() -> String {
    let port = free_port();
    let n = std::process::id() as u16 ^ port;
    format!(
        "127.{}.{}.{}:{}",
        100 + (n % 100),
        (n >> 8) % 250 + 1,
        port % 250 + 1,
        port
    )
}

/// Three `raftlm server` processes and their files.
pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub addresses: Vec<String>,
    pub peer_addresses: Vec<String>,
    pub access_point: String,
    pub children: Vec<Option<Child>>,
    pub key: raftlm::license::signature::VendorSigningKey,
    /// The `raftlm` binary the nodes run: the test's own unless
    /// [`with_binary`](Self::with_binary) chose another.
    pub binary: PathBuf,
    /// `RAFTLM_LOG` for the nodes; `None`: the node's own default.
    pub log_filter: Option<String>,
}

impl ProcessCluster {
    /// Writes keys, a signed license (`features`) in the license directory and
    /// three configs; `extra` is appended to every config (e.g. a [snapshot] table).
    pub fn new(features: &[(&str, u32)], extra: &str) -> ProcessCluster {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = super::vendor_key(dir.path());
        let licenses = dir.path().join("licenses");
        std::fs::create_dir_all(&licenses).unwrap();
        std::fs::write(
            licenses.join("acme.lic"),
            super::signed_license(&key, features),
        )
        .unwrap();
        let addresses: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peer_addresses: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let access_point = access_point();
        for id in 1..=3u64 {
            let mut text = format!(
                "node_id = {id}\ncluster_name = \"{}\"\ndata_dir = \"node{id}\"\nvendor_keys = [\"{}\"]\nlicense_dir = \"licenses\"\n",
                super::CLUSTER,
                public.display()
            );
            for (i, (address, peer)) in addresses.iter().zip(&peer_addresses).enumerate() {
                text.push_str(&format!(
                    "[[nodes]]\nid = {}\naddress = \"{address}\"\npeer_address = \"{peer}\"\n",
                    i + 1
                ));
            }
            text.push_str(&super::tls().config_section(id));
            text.push_str(&format!(
                "[access_point]\nmode = \"bind\"\naddress = \"{access_point}\"\n"
            ));
            text.push_str(extra);
            std::fs::write(dir.path().join(format!("node{id}.toml")), text).unwrap();
        }
        ProcessCluster {
            dir,
            addresses,
            peer_addresses,
            access_point,
            children: vec![None, None, None],
            key,
            binary: PathBuf::from(env!("CARGO_BIN_EXE_raftlm")),
            log_filter: Some("info,openraft=warn".into()),
        }
    }

    /// Runs the nodes with `RAFTLM_LOG` set to `filter` (`None`: unset, the
    /// node's own default).
    pub fn with_log_filter(mut self, filter: Option<&str>) -> ProcessCluster {
        self.log_filter = filter.map(str::to_string);
        self
    }

    /// Runs the nodes from `binary` instead (see [`fault_injection_binary`]).
    pub fn with_binary(mut self, binary: PathBuf) -> ProcessCluster {
        self.binary = binary;
        self
    }

    /// The config file of node `id` (1-based).
    pub fn config(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.toml"))
    }

    /// Replaces the table headed `header` (e.g. `[tls]`) of node `id`'s config with `table`.
    pub fn replace_table(&self, id: usize, header: &str, table: &str) {
        let path = self.config(id);
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text
            .find(header)
            .unwrap_or_else(|| panic!("no {header} in {}", path.display()));
        let end = text[start + 1..]
            .find("\n[")
            .map_or(text.len(), |i| start + 1 + i + 1);
        let mut new = text[..start].to_string();
        new.push_str(table);
        if !table.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&text[end..]);
        std::fs::write(&path, new).unwrap();
    }

    /// Starts node `id` (1-based); its log goes to `node{id}.log` in the directory.
    pub fn start(&mut self, id: usize) {
        assert!(self.children[id - 1].is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))
            .unwrap();
        let mut command = Command::new(&self.binary);
        match &self.log_filter {
            Some(filter) => command.env("RAFTLM_LOG", filter),
            None => command.env_remove("RAFTLM_LOG"),
        };
        let child = command
            .args(["server", "--config"])
            .arg(self.config(id))
            // Read only by a binary built with the test-only feature
            // fault-injection (src/clock.rs); see `set_clock_offset`.
            .env("RAFTLM_FAULT_CLOCK_FILE", self.clock_file(id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[id - 1] = Some(child);
    }

    /// The file node `id`'s wall-clock offset is read from.
    pub fn clock_file(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.clock"))
    }

    /// Shifts node `id`'s wall clock by `offset_ms` (from the real clock),
    /// in a binary built with the feature fault-injection.
    pub fn set_clock_offset(&self, id: usize, offset_ms: i64) {
        let path = self.clock_file(id);
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, offset_ms.to_string()).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
    }

    /// Starts all three nodes.
    pub fn start_all(&mut self) {
        for id in 1..=3 {
            self.start(id);
        }
    }

    /// The process id of node `id`.
    pub fn pid(&self, id: usize) -> u32 {
        self.children[id - 1]
            .as_ref()
            .expect("node not running")
            .id()
    }

    /// Sends SIGKILL to node `id` and reaps it.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`, …) to node `id`.
    pub fn signal(&self, id: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(id).to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The log of node `id` so far, for failure messages.
    pub fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// All logs, for failure messages.
    pub fn logs(&self) -> String {
        (1..=3)
            .map(|id| format!("--- node {id} ---\n{}", self.log(id)))
            .collect()
    }

    /// Waits up to 30 s until the access point answers Status with a licensed
    /// feature (the license directory has been imported).
    pub async fn wait_licensed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(&self.access_point)
            .await
            .is_none_or(|s| s.features.is_empty())
        {
            assert!(
                Instant::now() < deadline,
                "cluster not serving\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The 1-based id of the node that answers Status (the active node), waiting up to `limit`.
    pub async fn wait_active(&self, limit: Duration) -> (usize, pb::StatusReply) {
        let deadline = Instant::now() + limit;
        loop {
            for (i, address) in self.addresses.iter().enumerate() {
                if self.children[i].is_none() {
                    continue;
                }
                if let Some(reply) = status(address).await {
                    return (i + 1, reply);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no active node within {limit:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the access point answers Status.
    pub async fn wait_access_point(&self, limit: Duration) -> pb::StatusReply {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(reply) = status(&self.access_point).await {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "access point not up within {limit:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for id in 1..=3 {
            if let Some(child) = self.children[id - 1].as_ref() {
                // A stopped process must be continued to die promptly on some kernels.
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(child.id().to_string())
                    .status();
            }
            self.kill(id);
        }
    }
}

/// A Status call with a short timeout; `None` if the node does not answer it.
pub async fn status(address: &str) -> Option<pb::StatusReply> {
    raftlm::local::probe::status_of(address, &super::client_tls()).await
}

/// A license client for `address` with a per-request timeout.
pub async fn license_client(address: &str) -> Option<LicenseClient<tonic::transport::Channel>> {
    let channel = super::client_tls()
        .endpoint(address, Duration::from_millis(300))
        .ok()?
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .ok()?;
    Some(LicenseClient::new(channel))
}

/// `raftlm` built with the test-only feature fault-injection (`src/fault.rs`,
/// `src/clock.rs`), into `fault-injection/` under this test's target
/// directory so that no workspace build has the feature; built once per test
/// process (a no-op when it is fresh). Panics, saying why, if cargo cannot
/// build it and no such binary exists.
pub fn fault_injection_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let own = std::path::Path::new(env!("CARGO_BIN_EXE_raftlm"));
            let profile_dir = own.parent().expect("the binary lives in a directory");
            let profile = profile_dir.file_name().expect("a profile directory");
            let target_dir = profile_dir
                .parent()
                .expect("the profile directory has a parent")
                .join("fault-injection");
            let binary = target_dir.join(profile).join("raftlm");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "-p", "raftlm", "--bin", "raftlm"])
                .args(["--features", "fault-injection", "--target-dir"])
                .arg(&target_dir);
            if profile == "release" {
                build.arg("--release");
            }
            let status = build.status();
            assert!(
                matches!(status, Ok(s) if s.success()) || binary.is_file(),
                "cannot build raftlm with the feature fault-injection ({status:?}) and {} does not exist",
                binary.display()
            );
            binary
        })
        .clone()
}

/// The `raftlm` binary, with the environment that makes its client commands
/// use the test CA and the administrator certificate.
pub fn raftlm_command() -> Command {
    let (cert, key) = super::tls().admin();
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftlm"));
    command
        .env("RAFTLM_CA", super::tls().ca())
        .env("RAFTLM_CERT", cert)
        .env("RAFTLM_KEY", key)
        .env("RAFTLM_TLS_NAME", super::CLUSTER)
        .env_remove("RAFTLM_PLAINTEXT");
    command
}

/// Runs `raftlm` with arguments and returns (exit code, stdout, stderr).
pub fn raftlm(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let output = raftlm_command()
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
