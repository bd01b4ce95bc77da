//! `raftlm demo`: a local three-node cluster on loopback, ready to try.
//!
//! Generates a vendor key, a signed sample license for the demo's cluster
//! name and three node configs under a directory, starts the three nodes as
//! separate processes with the access point on `127.0.0.100:27000`, prints
//! the PIDs and what to try, and stops every node on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::cli::Failure;
use crate::license::signature::{self, VendorSigningKey};

/// The demo's cluster (access point) name.
pub const DEMO_CLUSTER: &str = "LICSRV";
/// The demo's access point.
pub const DEMO_ACCESS_POINT: &str = "127.0.0.100:27000";

/// Arguments of `raftlm demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for keys, license, configs, data and logs (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First of three consecutive ports for the nodes' own addresses on 127.0.0.1.
    #[arg(long, default_value_t = 27001)]
    pub base_port: u16,
}

const SAMPLE_LICENSE: &str = "\
# A sample license for the raftlm demo cluster.
SERVER LICSRV ANY 27000
VENDOR acme
FEATURE cad acme 2.0 permanent 25 ISSUED=22-nov-2026 NOTICE=\"demo license\"
FEATURE sim acme 1.5 31-dec-2030 10
INCREMENT sim acme 1.5 permanent 2
";

/// Runs the demo until Ctrl-C.
pub fn run(args: DemoArgs) -> Result<(), Failure> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("raftlm-demo-{}", std::process::id())),
    };
    let ports: Vec<u16> = (0..3)
        .map(|i| args.base_port.checked_add(i))
        .collect::<Option<_>>()
        .ok_or_else(|| Failure::usage("--base-port is too high for three consecutive ports"))?;
    prepare(&dir, &ports)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(supervise(dir, ports))
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))
}

fn prepare(dir: &Path, ports: &[u16]) -> Result<(), Failure> {
    let licenses = dir.join("licenses");
    std::fs::create_dir_all(&licenses)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", licenses.display())))?;
    for port in ports {
        if std::net::TcpListener::bind(("127.0.0.1", *port)).is_err() {
            return Err(Failure::usage(format!(
                "port {port} on 127.0.0.1 is in use (is another demo running?); choose others with --base-port"
            )));
        }
    }
    let key_path = dir.join("acme.key");
    let key = if key_path.exists() {
        VendorSigningKey::load(&key_path).map_err(|e| Failure::usage(e.to_string()))?
    } else {
        let key = VendorSigningKey::generate(Some("acme"));
        write(&key_path, &key.to_file_text())?;
        key
    };
    write(&dir.join("acme.pub"), &key.public_key().to_file_text())?;
    let signed = signature::sign_text("demo.lic", SAMPLE_LICENSE, &key)
        .map_err(|e| Failure::usage(e.to_string()))?;
    write(&licenses.join("demo.lic"), &signed)?;
    for id in 1..=3u16 {
        let mut text = format!(
            "# raftlm demo node {id}; every field is described in docs/examples/node1.toml\n\
             node_id = {id}\ncluster_name = \"{DEMO_CLUSTER}\"\ndata_dir = \"data/node{id}\"\n\
             vendor_keys = [\"acme.pub\"]\nlicense_dir = \"licenses\"\n"
        );
        for (i, port) in ports.iter().enumerate() {
            text.push_str(&format!("\n[[nodes]]\nid = {}\naddress = \"127.0.0.1:{port}\"\n", i + 1));
        }
        text.push_str(&format!("\n[access_point]\nmode = \"bind\"\naddress = \"{DEMO_ACCESS_POINT}\"\n"));
        write(&dir.join(format!("node{id}.toml")), &text)?;
    }
    Ok(())
}

async fn supervise(dir: PathBuf, ports: Vec<u16>) -> Result<(), Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::usage(format!("cannot find the raftlm binary: {e}")))?;
    let mut children: Vec<Option<Child>> = Vec::new();
    for id in 1..=3 {
        let log_path = dir.join(format!("node{id}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Failure::usage(format!("cannot create {}: {e}", log_path.display())))?;
        let child = Command::new(&exe)
            .arg("server")
            .arg("--config")
            .arg(dir.join(format!("node{id}.toml")))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure::usage(format!("cannot start node {id}: {e}")))?;
        children.push(Some(child));
    }
    println!("raftlm demo: three nodes of cluster {DEMO_CLUSTER} in {}", dir.display());
    for (i, child) in children.iter().enumerate() {
        let pid = child.as_ref().and_then(|c| c.id()).unwrap_or(0);
        println!("  node {} pid {pid:<8} 127.0.0.1:{}  log {}", i + 1, ports[i], dir.join(format!("node{}.log", i + 1)).display());
    }
    println!("  access point {DEMO_ACCESS_POINT} (held by the active node)");
    let ready = wait_ready().await;
    match ready {
        Some(node) => println!("\nnode {node} is active. Try, in another terminal:"),
        None => println!("\nthe cluster is still electing (see the logs). Try, in another terminal:"),
    }
    println!("  raftlm status --server {DEMO_ACCESS_POINT}");
    println!("  raftlm checkout cad --count 2 --hold forever --server {DEMO_ACCESS_POINT}");
    println!("  kill -9 <pid of the active node>     # then watch the checkout fail over and run status again");
    println!("  raftlm checkout sim --count 20 --server {DEMO_ACCESS_POINT}   # refused: only 12 are licensed");
    println!("\nPress Ctrl-C to stop all nodes.");

    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        for (i, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Ok(Some(status)) = child.try_wait() {
                    println!(
                        "node {} exited ({status}); start it again with: {} server --config {}",
                        i + 1,
                        exe.display(),
                        dir.join(format!("node{}.toml", i + 1)).display()
                    );
                    *slot = None;
                }
            }
        }
    }
    println!("\nstopping the nodes");
    for child in children.iter_mut().flatten() {
        if let Some(pid) = child.id() {
            // SIGTERM first, so each node releases the access point and shuts down cleanly.
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for child in children.iter_mut().flatten() {
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    println!("data and logs are kept in {}", dir.display());
    Ok(())
}

async fn wait_ready() -> Option<u64> {
    use crate::proto::v1::license_client::LicenseClient;
    for _ in 0..100 {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.100:27000")
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(1))
            .connect()
            .await;
        if let Ok(channel) = channel {
            if let Ok(reply) = LicenseClient::new(channel).status(crate::proto::v1::StatusRequest {}).await {
                let reply = reply.into_inner();
                if !reply.features.is_empty() {
                    return Some(reply.active_node);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
