//! Real `raftlm server` processes on loopback, killed when the harness drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raftlm::config::Config;
use raftlm::local::files::{self, LicenseFile, Plan, Security};
use raftlm::local::process::{
    ENV_FAULT_CLOCK_FILE, ENV_LOG, LOG_FILTER, Processes, write_clock_offset,
};
use raftlm::local::wait;
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

/// `raftlm server` processes on loopback (three unless [`ProcessCluster::with_nodes`]
/// says otherwise) and their files, written by `raftlm::local`.
pub struct ProcessCluster {
    /// The processes; declared first so they are killed before the directory goes.
    pub processes: Processes,
    pub dir: tempfile::TempDir,
    pub addresses: Vec<String>,
    pub peer_addresses: Vec<String>,
    pub access_point: String,
    pub key: raftlm::license::signature::VendorSigningKey,
    /// Each node's config as written (node `id` at index `id - 1`).
    pub configs: Vec<Config>,
}

impl ProcessCluster {
    /// Three nodes: keys, a signed license (`features`) in the license
    /// directory and the configs, written; nothing runs yet.
    pub fn new(features: &[(&str, u32)]) -> ProcessCluster {
        ProcessCluster::with_nodes(3, features)
    }

    /// [`ProcessCluster::new`] with `n` nodes.
    pub fn with_nodes(n: usize, features: &[(&str, u32)]) -> ProcessCluster {
        let dir = tempfile::tempdir().unwrap();
        let addresses: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peer_addresses: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let access_point = access_point();
        let mut plan = Plan::new(dir.path(), files::nodes_at(&addresses, &peer_addresses));
        plan.cluster = super::CLUSTER.to_string();
        plan.access_point = files::bind_access_point(access_point.parse().unwrap());
        plan.licenses = vec![LicenseFile::features("acme.lic", super::CLUSTER, features)];
        plan.security = Security::Existing(super::tls().clone());
        let written = plan.write().unwrap();
        let mut processes = Processes::new(
            Path::new(env!("CARGO_BIN_EXE_raftlm")),
            dir.path(),
            &written.config_files,
        );
        processes.set_env_all(ENV_LOG, Some(LOG_FILTER.as_ref()));
        for i in 0..n {
            // Read only by a binary built with the test-only feature
            // fault-injection (src/clock.rs); see `set_clock_offset`.
            let clock = dir.path().join(format!("node{}.clock", i + 1));
            processes.set_env(i, ENV_FAULT_CLOCK_FILE, Some(clock.as_os_str()));
        }
        ProcessCluster {
            processes,
            dir,
            addresses,
            peer_addresses,
            access_point,
            key: written.key,
            configs: written.configs,
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Runs the nodes with `RAFTLM_LOG` set to `filter` (`None`: unset, the
    /// node's own default).
    pub fn with_log_filter(mut self, filter: Option<&str>) -> ProcessCluster {
        self.processes
            .set_env_all(ENV_LOG, filter.map(std::ffi::OsStr::new));
        self
    }

    /// Runs the nodes from `binary` instead (see [`fault_injection_binary`]).
    pub fn with_binary(mut self, binary: PathBuf) -> ProcessCluster {
        self.processes.set_binary(&binary);
        self
    }

    /// The config file of node `id` (1-based).
    pub fn config(&self, id: usize) -> PathBuf {
        self.processes.config(id - 1).to_path_buf()
    }

    /// Changes node `id`'s config with `tune` and writes it again (not
    /// validated: a test may write one the node must refuse).
    pub fn tune(&mut self, id: usize, tune: impl FnOnce(&mut Config)) {
        tune(&mut self.configs[id - 1]);
        files::write_config(&self.config(id), &self.configs[id - 1], None).unwrap();
    }

    /// [`tune`](Self::tune) for every node.
    pub fn tune_all(&mut self, tune: impl Fn(&mut Config)) {
        for id in 1..=self.len() {
            self.tune(id, &tune);
        }
    }

    /// Starts node `id` (1-based); its log goes to `node{id}.log` in the directory.
    pub fn start(&mut self, id: usize) {
        self.processes.start(id - 1).unwrap();
    }

    /// Starts node `id` with `--join`: a new node that waits to be added.
    pub fn start_joining(&mut self, id: usize) {
        self.processes.start_with_args(id - 1, &["--join"]).unwrap();
    }

    /// The file node `id`'s wall-clock offset is read from.
    pub fn clock_file(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.clock"))
    }

    /// Shifts node `id`'s wall clock by `offset_ms` (from the real clock),
    /// in a binary built with the feature fault-injection.
    pub fn set_clock_offset(&self, id: usize, offset_ms: i64) {
        write_clock_offset(&self.clock_file(id), offset_ms).unwrap();
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for id in 1..=self.len() {
            self.start(id);
        }
    }

    /// The process id of node `id`.
    pub fn pid(&self, id: usize) -> u32 {
        self.processes.pid(id - 1).expect("node not running")
    }

    /// Sends SIGKILL to node `id` and reaps it.
    pub fn kill(&mut self, id: usize) {
        self.processes.kill(id - 1);
    }

    /// Sends `signal` (`libc::SIGSTOP`, …) to node `id`.
    pub fn signal(&self, id: usize, signal: libc::c_int) {
        assert!(self.processes.running(id - 1), "node {id} is not running");
        self.processes.signal(id - 1, signal);
    }

    /// The log of node `id` so far, for failure messages.
    pub fn log(&self, id: usize) -> String {
        self.processes.log(id - 1)
    }

    /// All logs, for failure messages.
    pub fn logs(&self) -> String {
        self.processes.logs()
    }

    /// Waits up to 30 s until the access point answers Status with a licensed
    /// feature (the license directory has been imported).
    pub async fn wait_licensed(&self) {
        let tls = super::client_tls();
        if let Err(timeout) = wait::wait_licensed(&self.access_point, &tls, LICENSED_WAIT).await {
            panic!("cluster not serving: {timeout}\n{}", self.logs());
        }
    }

    /// The 1-based id of the node that answers Status (the active node), waiting up to `limit`.
    pub async fn wait_active(&self, limit: Duration) -> (usize, pb::StatusReply) {
        let running: Vec<Option<String>> = self
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| self.processes.running(i).then(|| a.clone()))
            .collect();
        match wait::wait_active(&running, &super::client_tls(), limit).await {
            Ok((i, reply)) => (i + 1, reply),
            Err(timeout) => panic!("no active node: {timeout}\n{}", self.logs()),
        }
    }

    /// Waits until the access point answers Status.
    pub async fn wait_access_point(&self, limit: Duration) -> pb::StatusReply {
        let waited = wait::wait_until("the access point answers Status", limit, || {
            status(&self.access_point)
        })
        .await;
        waited.unwrap_or_else(|timeout| panic!("{timeout}\n{}", self.logs()))
    }
}

/// How long a test cluster may take to import its license and serve it.
const LICENSED_WAIT: Duration = Duration::from_secs(30);

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

/// How long the helpers below wait for a cluster to reach a state.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A license session of vendor acme for `user` on host ws1, through the
/// nodes at `addresses`.
pub fn session(addresses: &[String], user: &str) -> raftlm::client::Session {
    let servers: raftlm::client::ServerList = addresses.join(",").parse().unwrap();
    let client = raftlm::client::Client::with_options(
        servers,
        raftlm::client::ClientOptions {
            tls: super::client_tls(),
            ..raftlm::client::ClientOptions::default()
        },
    );
    raftlm::client::Session::start(
        client,
        raftlm::client::SessionOptions {
            vendor: "acme".into(),
            user: user.into(),
            host: "ws1".into(),
            ..raftlm::client::SessionOptions::default()
        },
    )
}

/// `raftlm ARGS… --server ADDRESSES` with an administrator's certificate:
/// the exit code, and stdout and stderr together.
pub fn raftlm_at(cluster: &ProcessCluster, addresses: &[String], args: &[&str]) -> (i32, String) {
    let server = addresses.join(",");
    let mut all = args.to_vec();
    all.extend_from_slice(&["--server", &server]);
    let (code, out, err) = raftlm(&all, cluster.dir.path());
    (code, format!("{out}{err}"))
}

/// Waits up to [`PATIENCE`] until a running node's Status satisfies `check`.
pub async fn status_until(
    cluster: &ProcessCluster,
    what: &str,
    check: impl Fn(&pb::StatusReply) -> bool,
) -> pb::StatusReply {
    let running: Vec<String> = (0..cluster.len())
        .filter(|i| cluster.processes.running(*i))
        .map(|i| cluster.addresses[i].clone())
        .collect();
    super::wait_until(what, PATIENCE, || async {
        for address in &running {
            if let Some(reply) = status(address).await
                && check(&reply)
            {
                return Some(reply);
            }
        }
        None
    })
    .await
}

/// Each node's applied index and state digest at `addresses`, once they all
/// agree (waiting up to [`PATIENCE`]).
pub async fn same_state(addresses: &[String]) -> (u64, String) {
    let ask = pb::NodeInfoRequest {
        with_state_digest: true,
        ..Default::default()
    };
    super::wait_until("every replica holds the same state", PATIENCE, || async {
        let mut seen = Vec::new();
        for address in addresses {
            let mut client = LicenseClient::new(
                super::admin_tls()
                    .endpoint(address, Duration::from_secs(2))
                    .ok()?
                    .connect()
                    .await
                    .ok()?,
            );
            let info = client.node_info(ask).await.ok()?.into_inner();
            seen.push((info.applied_index, info.state_digest));
        }
        seen.windows(2)
            .all(|w| w[0] == w[1])
            .then(|| seen[0].clone())
    })
    .await
}
