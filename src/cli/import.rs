//! `raftlm license import FILE... [--server S]`: sends license files to the
//! running cluster (FlexNet's `lmreread`).
//!
//! Each file is imported under its file name (importing a name again replaces
//! that license). The cluster verifies the signatures and the `SERVER` line
//! against its name before it commits the import. Files are imported in the
//! order given; the first one refused stops the command with exit 1 and the
//! cluster's reason (the files before it stay imported). A file that cannot be
//! read is exit 2; an unreachable cluster exit 3.
//!
//! The cluster's warnings about an imported file are printed on standard
//! error, one line each (`warning: acme.lic:8: INCREMENT "cad" expired on
//! 31-dec-2025: imported, counts 0 seats`): expired lines, lines not imported
//! (`uncounted`, `PACKAGE`) and ignored `VENDOR` fields.

use std::path::{Path, PathBuf};

use crate::cli::Failure;
use crate::cli::common::{CLIENT_LOG_DEFAULT, failure, init_logging, runtime};
use crate::client::{ClientError, DEFAULT_SERVER, ServerList};

/// `raftlm license import`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// License files to import; each is imported under its file name.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// The access point or node list: host:port or port@host, comma-separated.
    #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
    pub server: ServerList,
}

/// Runs `raftlm license import` with [`Args`].
pub fn run_args(args: Args) -> Result<(), Failure> {
    run(args.files, args.server)
}

/// Imports `files` into the cluster at `server`, printing what was imported.
pub fn run(files: Vec<PathBuf>, server: ServerList) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    // Read every file first, so a typo in the last name imports nothing.
    let licenses = files
        .iter()
        .map(|path| read(path))
        .collect::<Result<Vec<_>, _>>()?;
    runtime()?.block_on(async move {
        let client = crate::cli::env_client(server)?;
        for (name, text) in licenses {
            match client.import_license(&name, &text).await {
                Ok(reply) => {
                    for note in &reply.notes {
                        eprintln!("warning: {note}");
                    }
                    println!(
                        "imported {}: {} feature line{}{}{}, term {}",
                        reply.name,
                        reply.lines,
                        if reply.lines == 1 { "" } else { "s" },
                        match reply.duplicates {
                            0 => String::new(),
                            1 => " (1 duplicate line counted once)".to_string(),
                            n => format!(" ({n} duplicate lines counted once)"),
                        },
                        match reply.superseded {
                            0 => String::new(),
                            n =>
                                format!(" ({n} superseded by a newer issuance; see raftlm status)"),
                        },
                        reply.term
                    );
                }
                Err(ClientError::Refused(reason)) => {
                    return Err(Failure::refused(if reason.contains(&name) {
                        reason
                    } else {
                        format!("{name} was refused: {reason}")
                    }));
                }
                Err(error) => return Err(failure(error)),
            }
        }
        Ok(())
    })
}

/// The license name (the file name) and text of `path`.
fn read(path: &Path) -> Result<(String, String), Failure> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{} has no file name to import it under",
                path.display()
            ))
        })?
        .to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok((name, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A file that cannot be read is a usage error (exit 2) naming the file, before anything is sent.
    #[test]
    fn unreadable_file_is_a_usage_error() {
        let missing = PathBuf::from("/nonexistent/raftlm/acme.lic");
        let failure = read(&missing).unwrap_err();
        assert_eq!(failure.code, crate::cli::EXIT_USAGE);
        assert!(
            failure
                .message
                .starts_with("cannot read /nonexistent/raftlm/acme.lic: "),
            "{}",
            failure.message
        );
        assert_eq!(
            read(Path::new("/")).unwrap_err().message,
            "/ has no file name to import it under"
        );
    }
}
