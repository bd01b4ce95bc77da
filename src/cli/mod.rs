//! The command-line front end: one module per subcommand group.
//!
//! Each subcommand returns `Result<(), Failure>`; `main` prints the failure's
//! one-sentence message on stderr and exits with its code (`README.md`,
//! "Exit codes": 0 success, 1 refused, 2 usage or configuration error,
//! 3 cluster unreachable; and 130, 143, 129 for `checkout` stopped by SIGINT, SIGTERM, SIGHUP, see
//! [`signals`]).

pub mod backup;
pub mod bench;
pub mod bench_cluster;
pub mod bench_etcd;
pub mod bench_figures;
pub mod bench_flood;
pub mod bench_load;
pub mod bench_membership;
pub mod checkout;
pub mod cluster;
pub mod common;
pub mod demo;
pub mod down;
pub mod hostid;
pub mod import;
pub mod license;
pub mod lmutil;
pub mod reach;
pub mod remove;
pub mod server;
pub mod signals;
pub mod status;
pub mod tls;

/// Exit code: the request was refused (no seats, bad license, …).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the cluster could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// A command that did not succeed: the exit code and one plain sentence for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The process exit code (1, 2 or 3; 130, 143 or 129 after a signal).
    pub code: u8,
    /// What went wrong, as one sentence.
    pub message: String,
}

impl Failure {
    /// A refusal (exit code 1).
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_REFUSED,
            message: message.into(),
        }
    }
    /// A usage or configuration error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
    /// The cluster could not be reached (exit code 3).
    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_UNREACHABLE,
            message: message.into(),
        }
    }
}

/// A client for `servers` with TLS set up from the environment
/// (`RAFTLM_CA`, `RAFTLM_CERT`, `RAFTLM_KEY`, `RAFTLM_TLS_NAME`, `RAFTLM_PLAINTEXT`).
pub fn env_client(servers: crate::client::ServerList) -> Result<crate::client::Client, Failure> {
    let options = crate::client::ClientOptions::from_env().map_err(Failure::usage)?;
    Ok(crate::client::Client::with_options(servers, options))
}
