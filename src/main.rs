//! The `raftlm` binary: one command with subcommands (`README.md`, "Commands").
//!
//! Exit codes: 0 success; 1 the request was refused; 2 usage or configuration
//! error; 3 cluster unreachable; 130, 143, 129 `checkout` stopped by SIGINT,
//! SIGTERM, SIGHUP. Errors go to stderr as one plain sentence.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftlm::cli::{self, Failure};

/// The version `--version` prints; a build with the test-only feature
/// fault-injection says so (`src/fault.rs`), and `raftlm-chaos` checks it.
const VERSION: &str = if raftlm::fault::BUILT_IN {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (test-only fault-injection build)"
    )
} else {
    env!("CARGO_PKG_VERSION")
};

/// raftlm: a floating-license server that runs as a three-node Raft cluster.
#[derive(Debug, Parser)]
#[command(name = "raftlm", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts a local three-node cluster on loopback with a sample license.
    Demo(cli::demo::DemoArgs),
    /// Shows the cluster, the active node, features, seats and grants (like `lmstat -a`).
    Status(cli::status::Args),
    /// Checks out seats of a feature and holds them, heartbeating, until the hold ends or Ctrl-C (or SIGTERM, SIGHUP).
    Checkout(cli::checkout::Args),
    /// Stops the active node (it hands over first) or, with --node, one node (like `lmdown`).
    Down(cli::down::Args),
    /// Load generator, idle-session cost and failover timer.
    Bench(cli::bench::BenchArgs),
    /// Vendor and administrator license tools: keygen, sign, verify, import.
    License {
        #[command(subcommand)]
        command: cli::license::LicenseCommand,
    },
    /// Cluster CA and certificates for nodes, administrators and clients.
    Tls {
        #[command(subcommand)]
        command: cli::tls::TlsCommand,
    },
    /// Prints this machine's host id, for license files bound to host ids (like `lmhostid`).
    Hostid(cli::hostid::Args),
    /// Takes a backup of the license state from the active node (--out FILE), or checks one (--verify FILE).
    Backup(cli::backup::BackupArgs),
    /// Writes a backup into an empty data directory, offline, so the node starts as part of a restored cluster.
    Restore(cli::backup::RestoreArgs),
    /// Frees seats a program holds: one grant, a session's, or a user's on a host (like `lmremove`).
    Remove(cli::remove::Args),
    /// FlexNet's lmutil: lmstat, lmcksum and lmremove with their arguments and output (also as a link named lmutil or lmstat).
    Lmutil {
        /// The tool and its arguments, e.g. `lmstat -c 27000@lic1 -a`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Membership: list the members, add a node, remove one, move one.
    Cluster {
        #[command(subcommand)]
        command: cli::cluster::ClusterCommand,
    },
    /// Runs one node of a cluster.
    Server {
        /// The node's TOML config file.
        #[arg(long)]
        config: std::path::PathBuf,
        /// Start a new node, with an empty data directory, that waits to be
        /// added to a running cluster (raftlm cluster add-node) instead of forming one.
        #[arg(long)]
        join: bool,
    },
}

fn main() -> ExitCode {
    // Run through a link named lmutil or lmstat: lmutil's own arguments.
    let mut argv = std::env::args();
    let called = argv
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()));
    let lmutil = match called.as_deref() {
        Some("lmutil") => Some(argv.collect::<Vec<_>>()),
        Some("lmstat") => Some(std::iter::once("lmstat".to_string()).chain(argv).collect()),
        _ => None,
    };
    if let Some(args) = lmutil {
        return finish(cli::lmutil::run(args));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version to stdout with exit 0, usage errors with exit 2.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                cli::EXIT_USAGE
            } else {
                0
            });
        }
    };
    let result: Result<(), Failure> = match cli.command {
        Command::Server { config, join } => cli::server::run(config, join),
        Command::Cluster { command } => cli::cluster::run(command),
        Command::Demo(args) => cli::demo::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Down(args) => cli::down::run(args),
        Command::Remove(args) => cli::remove::run(args),
        Command::Lmutil { args } => cli::lmutil::run(args),
        Command::Hostid(args) => cli::hostid::run(args),
        Command::Checkout(args) => cli::checkout::run(args),
        Command::License { command } => cli::license::run(command),
        Command::Tls { command } => cli::tls::run(command),
        Command::Backup(args) => cli::backup::run_backup(args),
        Command::Restore(args) => cli::backup::run_restore(args),
    };
    finish(result)
}

/// The exit code of a command's result; a failure's sentence goes to stderr.
fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // A failed write (the terminal went away with SIGHUP) must not
            // replace the exit code with a panic's.
            let _ = writeln!(std::io::stderr(), "raftlm: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
