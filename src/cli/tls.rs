//! `raftlm tls ...`: the cluster's own CA and the certificates it issues.
//!
//! - `init` makes the CA (`ca.crt`, and `ca.key` with mode 0600) for one cluster;
//! - `issue` makes a node, administrator or client certificate signed by it;
//! - `identity` prints the cluster identity of a CA certificate file (what a
//!   vendor binds license files to).
//!
//! This is the shell around [`crate::tls::cert`]: it reads the clock and
//! prints. Exit codes (`README.md`, "Exit codes"): a refusal (a file that would be
//! overwritten, an expired CA) is exit 1; bad arguments and files that
//! cannot be read or written are exit 2.

use std::path::PathBuf;

use clap::{ArgGroup, Subcommand};

use crate::cli::Failure;
use crate::license::Date;
use crate::tls::cert::{
    self, CA_DAYS_DEFAULT, CERT_DAYS_DEFAULT, CertError, IssueRequest, Issued, Subject,
};
use crate::tls::identity::{CertInfo, Role};

/// Longest validity accepted on the command line, in days (about 100 years).
const DAYS_MAX: i64 = 36_500;
/// Seconds a certificate's validity starts before now, to allow for clock skew.
const CLOCK_SKEW_SECS: i64 = 60;
/// Seconds in a day.
const SECONDS_PER_DAY: i64 = 86_400;

/// The certificate tools.
#[derive(Debug, Clone, Subcommand)]
pub enum TlsCommand {
    /// Make the cluster's CA: DIR/ca.crt and DIR/ca.key (mode 0600); never overwrites.
    Init {
        /// Directory for the CA files (created with mode 0700 if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster (access point) name the CA is for.
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Days the CA is valid.
        #[arg(long, value_name = "N", default_value_t = CA_DAYS_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=DAYS_MAX))]
        days: u32,
    },
    /// Issue a node, administrator or client certificate signed by the CA.
    #[command(group(ArgGroup::new("subject").required(true).args(["node", "admin", "client"])))]
    Issue {
        /// Directory holding ca.crt and ca.key (made by `raftlm tls init`).
        #[arg(long, value_name = "CA_DIR")]
        dir: PathBuf,
        /// Issue for node ID: files node-ID.crt and node-ID.key.
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
        node: Option<u64>,
        /// Issue for administrator NAME: files NAME.crt and NAME.key.
        #[arg(long, value_name = "NAME")]
        admin: Option<String>,
        /// Issue for license client NAME: files NAME.crt and NAME.key.
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// An extra IP address or host name the certificate is valid for; repeat for several.
        #[arg(long = "san", value_name = "HOST_OR_IP")]
        sans: Vec<String>,
        /// Days the certificate is valid (never beyond the CA's own expiry).
        #[arg(long, value_name = "N", default_value_t = CERT_DAYS_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=DAYS_MAX))]
        days: u32,
        /// Directory to write the files to (default: CA_DIR).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replace existing files (certificate rotation).
        #[arg(long)]
        force: bool,
    },
    // This doc is the --help text, where <hex> is meant literally.
    #[allow(rustdoc::invalid_html_tags)]
    /// Print the cluster identity (sha256:<hex> of the CA's public key) of
    /// each CA certificate in a CA file: what a vendor binds license files to.
    Identity {
        /// The CA certificate file (ca.crt, as written by `raftlm tls init`).
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
    },
}

/// Runs one tls command.
pub fn run(command: TlsCommand) -> Result<(), Failure> {
    match command {
        TlsCommand::Init { dir, cluster, days } => {
            // Certificates are dated by the system clock, never a shifted one.
            let now = (crate::clock::real_wall_ms() / 1000) as i64;
            let ca = cert::init_ca(&dir, &cluster, days, now).map_err(failure)?;
            println!(
                "wrote CA key {} (mode 0600: keep it private, it signs every certificate of the cluster)",
                ca.key.display()
            );
            println!(
                "wrote CA certificate {} (give it to every node, administrator and client)",
                ca.cert.display()
            );
            println!("CA for cluster {cluster:?}, {}", expiry(&ca.info, now));
            let pem = std::fs::read(&ca.cert)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", ca.cert.display())))?;
            let der = crate::tls::identity::parse_pem_certs(&String::from_utf8_lossy(&pem))
                .map_err(|e| Failure::usage(format!("{}: {e}", ca.cert.display())))?;
            let id = crate::tls::identity::cluster_id(&der[0])
                .map_err(|e| Failure::usage(format!("{}: {e}", ca.cert.display())))?;
            println!(
                "cluster identity {id} (give it to vendors that bind license files to this cluster)"
            );
            Ok(())
        }
        TlsCommand::Identity { ca } => identity(&ca),
        TlsCommand::Issue {
            dir,
            node,
            admin,
            client,
            sans,
            days,
            out,
            force,
        } => {
            let subject = match (node, admin, client) {
                (Some(id), None, None) => Subject::Node { id },
                (None, Some(name), None) => Subject::Admin { name },
                (None, None, Some(name)) => Subject::Client { name },
                _ => {
                    return Err(Failure::usage(
                        "give exactly one of --node ID, --admin NAME or --client NAME",
                    ));
                }
            };
            // Certificates are dated by the system clock, never a shifted one.
            let now = (crate::clock::real_wall_ms() / 1000) as i64;
            let request = IssueRequest {
                subject,
                extra_sans: sans,
                not_before_unix: now - CLOCK_SKEW_SECS,
                not_after_unix: now + i64::from(days) * SECONDS_PER_DAY,
            };
            let out = out.unwrap_or_else(|| dir.clone());
            let issued = cert::issue(&dir, &out, &request, force).map_err(failure)?;
            report(&issued, &request, now);
            Ok(())
        }
    }
}

/// Prints `sha256:<hex>  cluster NAME` for each CA certificate in `path`.
fn identity(path: &std::path::Path) -> Result<(), Failure> {
    let pem = crate::tls::acceptor::read_pem(path).map_err(|e| Failure::usage(e.to_string()))?;
    let ids = crate::tls::identity::ca_cluster_ids(&String::from_utf8_lossy(&pem))
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    if ids.is_empty() {
        return Err(Failure::usage(format!(
            "{}: holds no CA certificate (give the cluster's ca.crt, not a node or administrator certificate)",
            path.display()
        )));
    }
    for (id, cluster) in ids {
        match cluster {
            Some(name) => println!("{id}  cluster {name}"),
            None => println!("{id}"),
        }
    }
    Ok(())
}

fn report(issued: &Issued, request: &IssueRequest, now: i64) {
    let info = &issued.info;
    println!(
        "wrote key {} (mode 0600: keep it private)",
        issued.key.display()
    );
    println!("wrote certificate {}", issued.cert.display());
    let role = [Role::Node, Role::Admin, Role::Client]
        .into_iter()
        .find(|r| info.has_role(*r))
        .map_or("none", |r| match r {
            Role::Node => "node",
            Role::Admin => "admin",
            Role::Client => "client",
        });
    println!(
        "subject {}, role {role}, serial {}",
        info.subject, info.serial_hex
    );
    let names: Vec<String> = info
        .dns_names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .chain(info.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
        .chain(info.uris.iter().map(|u| format!("URI:{u}")))
        .collect();
    println!("names {}", names.join(", "));
    let cut = if info.not_after_unix < request.not_after_unix {
        " (cut to the CA's own expiry)"
    } else {
        ""
    };
    println!("{}{cut}", expiry(info, now));
}

/// "valid until 31-dec-2027 (825 days left)".
fn expiry(info: &CertInfo, now: i64) -> String {
    let ms = u64::try_from(info.not_after_unix)
        .unwrap_or(0)
        .saturating_mul(1000);
    format!(
        "valid until {} ({} days left)",
        Date::from_unix_ms(ms),
        info.days_left(now)
    )
}

fn failure(e: CertError) -> Failure {
    match e {
        CertError::Exists { .. } | CertError::CaExpired { .. } => Failure::refused(e.to_string()),
        _ => Failure::usage(e.to_string()),
    }
}
