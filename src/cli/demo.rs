//! `raftlm demo`: a local three-node cluster on loopback, ready to try.
//!
//! Generates a vendor key, a signed sample license for the demo's cluster
//! name, a cluster CA with node and administrator certificates (in
//! `DIR/tls/`) and three node configs under a directory, starts the three
//! nodes as separate processes with the access point on `127.0.0.100:27000`,
//! prints the PIDs, the environment lines that make the CLI use the
//! certificates, and what to try, and stops every node on Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::Failure;
use crate::cli::local_cluster::{LOCAL_CLUSTER, LocalCluster};

/// The demo's access point.
pub const DEMO_ACCESS_POINT: &str = "127.0.0.100:27000";

/// Arguments of `raftlm demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for keys, license, configs, data and logs (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First of three consecutive ports for the nodes' own addresses on 127.0.0.1
    /// (their peer ports are 100 higher).
    #[arg(long, default_value_t = 27001)]
    pub base_port: u16,
    /// Run without TLS (anyone on the network can then act as a node or an administrator).
    #[arg(long)]
    pub plaintext: bool,
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
    let cluster = LocalCluster::prepare(
        &dir,
        &ports,
        DEMO_ACCESS_POINT,
        SAMPLE_LICENSE,
        "",
        args.plaintext,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(supervise(cluster))
}

async fn supervise(mut cluster: LocalCluster) -> Result<(), Failure> {
    cluster.start_all()?;
    println!(
        "raftlm demo: three nodes of cluster {LOCAL_CLUSTER} in {}",
        cluster.dir.display()
    );
    for id in 1..=3 {
        let pid = cluster.pid(id).unwrap_or(0);
        println!(
            "  node {id} pid {pid:<8} {}  log {}",
            cluster.addresses[id - 1],
            cluster.log(id).display()
        );
    }
    println!("  access point {DEMO_ACCESS_POINT} (held by the active node)");
    match &cluster.tls {
        Some(tls) => {
            println!(
                "\nTLS is on: certificates are in {}. In the other terminal, first run:\n",
                tls.dir.display()
            );
            for line in tls.env_lines().lines() {
                println!("  {line}");
            }
        }
        None => println!(
            "\nTLS is OFF (--plaintext): the cluster is unencrypted. In the other terminal, first run:\n\n  export RAFTLM_PLAINTEXT=1"
        ),
    }
    match cluster.wait_ready(Duration::from_secs(20)).await {
        Some(node) => println!("\nnode {node} is active. Try, in another terminal:"),
        None => {
            println!("\nthe cluster is still electing (see the logs). Try, in another terminal:")
        }
    }
    println!("  raftlm status --server {DEMO_ACCESS_POINT}");
    println!("  raftlm checkout cad --count 2 --hold forever --server {DEMO_ACCESS_POINT}");
    println!(
        "  kill -9 <pid of the active node>     # then watch the checkout fail over and run status again"
    );
    println!(
        "  raftlm checkout sim --count 20 --server {DEMO_ACCESS_POINT}   # refused: only 12 are licensed"
    );
    println!("\nPress Ctrl-C to stop all nodes.");

    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        for id in 1..=3 {
            let exited = match cluster.children[id - 1].as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                println!(
                    "node {id} exited ({status}); start it again with: {}",
                    cluster.start_command(id)
                );
                cluster.children[id - 1] = None;
            }
        }
    }
    println!("\nstopping the nodes");
    cluster.stop_all().await;
    println!("data and logs are kept in {}", cluster.dir.display());
    Ok(())
}
