//! `raftlm hostid`: this machine's host id, for license files bound to the
//! members' machines (`SERVER … HOSTIDS=`; FlexNet's `lmhostid`).

use std::path::PathBuf;

use super::Failure;
use crate::config::{Config, MACHINE_ID_FILE};

/// Where the machine id is read from.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The machine id file (machine-id(5)); default /etc/machine-id.
    #[arg(long, conflicts_with = "config")]
    pub machine_id_file: Option<PathBuf>,
    /// A node's config file: use its `machine_id_file` (what that node reports).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Prints the host id, one line: `host:<32 hex digits>`.
pub fn run(args: Args) -> Result<(), Failure> {
    let path = match (args.machine_id_file, args.config) {
        (Some(path), _) => path,
        (None, Some(config)) => {
            let config = Config::load(&config).map_err(|e| Failure::usage(e.to_string()))?;
            config.machine_id_file().to_path_buf()
        }
        (None, None) => PathBuf::from(MACHINE_ID_FILE),
    };
    let id = crate::node::machine_host_id(&path).map_err(Failure::usage)?;
    println!("{id}");
    Ok(())
}
