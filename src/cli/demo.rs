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
use crate::local::files::{
    self, LOCAL_CLUSTER, LicenseFile, Plan, Security, Written, loopback_nodes,
};
use crate::local::process::Processes;
use crate::local::wait::wait_licensed;

/// The demo's access point.
pub const DEMO_ACCESS_POINT: &str = "127.0.0.100:27000";

/// Arguments of `raftlm demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for keys, license, configs, data and logs (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First of consecutive ports (one per node) for the nodes' own
    /// addresses on 127.0.0.1 (their peer ports are 100 higher).
    #[arg(long, default_value_t = 27001)]
    pub base_port: u16,
    /// How many nodes: 3 (tolerates one failure) or 5 (tolerates two).
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    pub nodes: u16,
    /// Run without TLS (anyone on the network can then act as a node or an administrator).
    #[arg(long)]
    pub plaintext: bool,
}

/// `--nodes`: 3 or 5.
fn parse_nodes(text: &str) -> Result<u16, String> {
    match text {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("{text:?}: a demo cluster has 3 or 5 nodes")),
    }
}

const SAMPLE_LICENSE: &str = "\
# A sample license for the raftlm demo cluster.
SERVER LICSRV ANY 27000
VENDOR acme
FEATURE cad acme 2.0 permanent 25 ISSUED=22-nov-2026 NOTICE=\"demo license\"
FEATURE sim acme 1.5 31-dec-2030 10
INCREMENT sim acme 1.5 permanent 2
";

/// How long the demo waits for the cluster to serve before it prints what
/// to try anyway (three nodes elect and import the license in a second or two).
const READY_WAIT: Duration = Duration::from_secs(20);

/// How long each node may take to stop after Ctrl-C before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// How often the demo looks whether a node exited.
const EXIT_POLL: Duration = Duration::from_millis(500);

/// The plan of the demo's cluster in `dir`: nodes on `ports`, the access
/// point [`DEMO_ACCESS_POINT`], the sample license.
pub fn plan(dir: &std::path::Path, ports: &[u16], plaintext: bool) -> Plan {
    // Named lic1, lic2, …: lmstat shows members by name, and scrapers key
    // them by their first DNS label (every demo node is on 127.0.0.1).
    let nodes = loopback_nodes(ports)
        .into_iter()
        .map(|node| files::NodePlan {
            name: Some(format!("lic{}", node.id)),
            ..node
        })
        .collect();
    let mut plan = Plan::new(dir, nodes);
    plan.access_point = files::bind_access_point(
        DEMO_ACCESS_POINT
            .parse()
            .expect("the demo access point is a socket address"),
    );
    plan.licenses = vec![LicenseFile::text("local.lic", SAMPLE_LICENSE)];
    plan.header =
        Some("raftlm local node {id}; every field is described in docs/examples/node1.toml".into());
    plan.security = if plaintext {
        Security::Plaintext
    } else {
        let ap_host = DEMO_ACCESS_POINT
            .rsplit_once(':')
            .map_or(DEMO_ACCESS_POINT, |(host, _)| host);
        Security::Tls {
            sans: vec!["127.0.0.1".to_string(), ap_host.to_string()],
        }
    };
    plan
}

/// Runs the demo until Ctrl-C.
pub fn run(args: DemoArgs) -> Result<(), Failure> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("raftlm-demo-{}", std::process::id())),
    };
    let ports: Vec<u16> = (0..args.nodes)
        .map(|i| args.base_port.checked_add(i))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            Failure::usage(format!(
                "--base-port is too high for {} consecutive ports",
                args.nodes
            ))
        })?;
    let plan = plan(&dir, &ports, args.plaintext);
    plan.check_ports_free()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let written = plan.write().map_err(|e| Failure::usage(e.to_string()))?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::usage(format!("cannot find the raftlm binary: {e}")))?;
    let processes = Processes::new(&exe, &dir, &written.config_files);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(supervise(&dir, &written, processes))
}

async fn supervise(
    dir: &std::path::Path,
    written: &Written,
    mut processes: Processes,
) -> Result<(), Failure> {
    for i in 0..processes.len() {
        processes
            .start(i)
            .map_err(|e| Failure::usage(format!("cannot start node {}: {e}", i + 1)))?;
    }
    let count = match processes.len() {
        3 => "three".to_string(),
        5 => "five".to_string(),
        n => n.to_string(),
    };
    println!(
        "raftlm demo: {count} nodes of cluster {LOCAL_CLUSTER} in {}",
        dir.display()
    );
    for (i, config) in written.configs.iter().enumerate() {
        let pid = processes.pid(i).unwrap_or(0);
        println!(
            "  node {} pid {pid:<8} {}  log {}",
            i + 1,
            config.own_address(),
            processes.log_file(i).display()
        );
    }
    println!("  access point {DEMO_ACCESS_POINT} (held by the active node)");
    match &written.tls {
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
    match wait_licensed(DEMO_ACCESS_POINT, &written.client_tls, READY_WAIT).await {
        Ok(reply) => println!(
            "\nnode {} is active. Try, in another terminal:",
            reply.active_node
        ),
        Err(_) => {
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

    let mut ticker = tokio::time::interval(EXIT_POLL);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        for i in 0..processes.len() {
            if let Some(Ok(status)) = processes.try_wait(i) {
                println!(
                    "node {} exited ({status}); start it again with: {}",
                    i + 1,
                    processes.start_command(i)
                );
            }
        }
    }
    println!("\nstopping the nodes");
    processes.stop_all(STOP_WAIT);
    println!("data and logs are kept in {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demo_cluster_has_three_or_five_nodes() {
        assert_eq!(parse_nodes("3"), Ok(3));
        assert_eq!(parse_nodes("5"), Ok(5));
        for bad in ["4", "1", "", "five"] {
            assert!(parse_nodes(bad).is_err(), "{bad:?}");
        }
    }
}
