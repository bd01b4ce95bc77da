//! The cluster `raftlm bench` starts: three or five `raftlm server`
//! processes on loopback (real disk, the default config unless a mode tunes
//! it, a generated license) behind an access point, and spare nodes
//! configured to join it later. `bench.rs` and `bench_membership.rs` share it.

use std::time::Duration;

use crate::cli::Failure;
use crate::local::files::{self, LicenseFile, PEER_PORT_OFFSET, Plan, Security};
use crate::local::probe::status_of;
use crate::local::process::Processes;
use crate::local::tls::ClusterTls;
use crate::proto::v1 as pb;
use crate::tls::client::ClientTls;

/// The license of a cluster bench starts: plenty of `bench`, one seat of `scarce`.
pub(crate) const BENCH_LICENSE: &str = "SERVER LICSRV ANY 27000\nVENDOR acme\nFEATURE bench acme 1.0 permanent 1000000\nFEATURE scarce acme 1.0 permanent 1\n";

/// The cluster `raftlm bench` started: three or five `raftlm server`
/// processes on loopback behind an access point, and maybe spare nodes
/// configured to join it later (`raftlm server --join`).
pub(crate) struct LocalCluster {
    pub(crate) processes: Processes,
    pub(crate) access_point: String,
    pub(crate) client_tls: ClientTls,
    /// The certificates (`None`: plaintext).
    pub(crate) tls: Option<ClusterTls>,
    /// The voters it was started with: nodes `1..=voters`.
    pub(crate) voters: usize,
    /// Every node's client and peer address, node `i + 1` at index `i`.
    pub(crate) addresses: Vec<(String, String)>,
}

/// How long a started cluster may take to serve its license.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(30);

/// How long a node stopped with SIGTERM may take to exit before it is killed.
pub(crate) const TERMINATE_WAIT: Duration = Duration::from_secs(10);

/// How long each node may take to stop at the end before it is killed.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(5);

impl LocalCluster {
    /// Writes the files of a cluster in `dir` with nodes on `ports` and
    /// starts the first `voters` of them as the cluster (its nodes run the
    /// running binary); the others are spares, configured to join later.
    pub(crate) fn start(
        dir: &std::path::Path,
        ports: &[u16],
        voters: usize,
        access_point: &str,
        plaintext: bool,
        tune: impl Fn(&mut crate::config::Config) + Send + Sync + 'static,
    ) -> Result<LocalCluster, Failure> {
        let nodes = files::loopback_nodes(ports);
        let addresses = nodes
            .iter()
            .map(|n| (n.address.clone(), n.peer_address.clone()))
            .collect();
        let mut plan = Plan::new(dir, nodes)
            .tuned(move |config| {
                // The cluster forms of the voters; a spare knows them and itself.
                if config.node_id as usize <= voters {
                    config.nodes.truncate(voters);
                }
            })
            .tuned(tune);
        let address = access_point
            .parse()
            .map_err(|e| Failure::usage(format!("bad access point {access_point}: {e}")))?;
        plan.access_point = files::bind_access_point(address);
        plan.licenses = vec![LicenseFile::text("local.lic", BENCH_LICENSE)];
        plan.security = if plaintext {
            Security::Plaintext
        } else {
            let host = access_point
                .rsplit_once(':')
                .map_or(access_point, |(host, _)| host);
            Security::Tls {
                sans: vec!["127.0.0.1".to_string(), host.to_string()],
            }
        };
        plan.check_ports_free()
            .map_err(|e| Failure::usage(e.to_string()))?;
        let written = plan.write().map_err(|e| Failure::usage(e.to_string()))?;
        let exe = std::env::current_exe()
            .map_err(|e| Failure::usage(format!("cannot find the raftlm binary: {e}")))?;
        let mut cluster = LocalCluster {
            processes: Processes::new(&exe, dir, &written.config_files),
            access_point: access_point.to_string(),
            client_tls: written.client_tls,
            tls: written.tls,
            voters,
            addresses,
        };
        for id in 1..=voters {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// Starts node `id` (1-based).
    pub(crate) fn start_node(&mut self, id: usize) -> Result<(), Failure> {
        self.processes
            .start(id - 1)
            .map_err(|e| Failure::usage(format!("cannot start node {id}: {e}")))
    }

    /// The process id of node `id`, if it runs.
    pub(crate) fn pid(&self, id: usize) -> Option<u32> {
        self.processes.pid(id - 1)
    }

    /// Status from the access point, if it answers within a second.
    pub(crate) async fn status(&self) -> Option<pb::StatusReply> {
        status_of(&self.access_point, &self.client_tls).await
    }
}

/// `n` distinct client ports whose peer ports (`+ PEER_PORT_OFFSET`) are
/// free too.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, Failure> {
    for _ in 0..32 {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
        let distinct = ports
            .iter()
            .all(|p| ports.iter().filter(|q| *q == p).count() == 1);
        let peers_free = ports.iter().all(|p| {
            p.checked_add(PEER_PORT_OFFSET).is_some_and(|peer| {
                !ports.contains(&peer) && std::net::TcpListener::bind(("127.0.0.1", peer)).is_ok()
            })
        });
        if distinct && peers_free {
            return Ok(ports);
        }
    }
    Err(Failure::usage(format!(
        "no {n} free port pairs on 127.0.0.1"
    )))
}

pub(crate) fn free_port() -> Result<u16, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::usage(format!("no free port on 127.0.0.1: {e}")))
}
