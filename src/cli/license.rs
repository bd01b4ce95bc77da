//! `raftlm license ...`: the vendor's and the administrator's license tools.
//!
//! - `keygen` creates a vendor key pair (`PREFIX.key`, mode 0600, and `PREFIX.pub`);
//! - `sign` adds a signature to every feature line of a license file;
//! - `verify` checks a file offline, as a cluster would, and prints its features.
//!
//! `sign` and `verify` print warnings on standard error, one line each:
//! lines a cluster does not import (`uncounted`, `PACKAGE`), `VENDOR` fields
//! it ignores, and lines that have expired by this machine's clock (a cluster
//! imports them, counting 0 seats; `verify` marks them `expired, 0 seats`).
//!
//! This is the shell around [`crate::license::file`] and
//! [`crate::license::signature`]: it reads and writes files, reads the clock
//! and prints. Exit codes (`README.md`, "Exit codes"): a file that is refused (does not
//! parse, bad signature, wrong cluster, every line expired) is exit 1; a file or key that
//! cannot be read or written, or a malformed key file, is exit 2.
//!
//! Left out: `import` (sending a file to a running cluster), which needs the
//! client library and is added to [`LicenseCommand`] with it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::cli::Failure;
use crate::license::file::{self, LICENSE_FILE_BYTES_MAX};
use crate::license::pool::{self, Verdict};
use crate::license::signature::{self, VendorSigningKey};
use crate::license::{FeatureLine, LineKind};

/// The license tools.
#[derive(Debug, Clone, Subcommand)]
pub enum LicenseCommand {
    /// Create a vendor key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        /// Path prefix of the key files; `.key` and `.pub` are appended.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// The vendor the key signs for: clusters accept it only on that
        /// vendor's lines. Required unless --any-vendor.
        #[arg(long, value_name = "NAME", required_unless_present = "any_vendor")]
        vendor: Option<String>,
        /// Make a key that may sign lines of any vendor (for a vendor that
        /// issues under several names). Not the default: a key bound to one
        /// vendor cannot be used to add seats to another's features.
        #[arg(long, conflicts_with = "vendor")]
        any_vendor: bool,
    },
    /// Sign every FEATURE/INCREMENT line of a license file.
    Sign {
        /// The vendor secret key file (PREFIX.key).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The license file to sign.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Where to write the signed file (default: standard output).
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Check license files offline, as a cluster would, and list their lines
    /// with which count and which are superseded (give an old and a renewed
    /// file together to see which the cluster would use).
    Verify {
        /// A trusted vendor public key file (PREFIX.pub); repeat for several.
        #[arg(long = "pubkey", value_name = "FILE", required = true)]
        pubkeys: Vec<PathBuf>,
        /// The cluster (access point) name the file must be issued for.
        #[arg(long, value_name = "NAME")]
        cluster_name: String,
        // This doc is the --help text, where <hex> is meant literally.
        #[allow(rustdoc::invalid_html_tags)]
        /// The cluster's identity (sha256:<hex>, as `raftlm status` and
        /// `raftlm tls identity` print it): files bound to another identity
        /// are refused. Without it, a file's identity binding is shown but not checked.
        #[arg(long, value_name = "sha256:HEX")]
        cluster_id: Option<crate::license::ClusterId>,
        /// The license files to check.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Import license files into the running cluster (like `lmreread`).
    Import(crate::cli::import::Args),
    /// Ask the active node to read its license_dir again now (as SIGHUP does
    /// on that node; administrators).
    Reread {
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = crate::client::DEFAULT_SERVER, value_name = "S")]
        server: crate::client::ServerList,
    },
    /// Trust a vendor public key in the running cluster (administrators).
    Trust {
        /// The vendor's public key file (PREFIX.pub).
        #[arg(value_name = "FILE.pub")]
        key: PathBuf,
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = crate::client::DEFAULT_SERVER, value_name = "S")]
        server: crate::client::ServerList,
    },
    /// Stop trusting a vendor key (refused while an imported license holds lines it signed).
    Untrust {
        /// The key id, as `raftlm status` lists it.
        #[arg(value_name = "KEY_ID")]
        key_id: String,
        /// The access point or node list: host:port or port@host, comma-separated.
        #[arg(long, env = "RAFTLM_SERVER", default_value = crate::client::DEFAULT_SERVER, value_name = "S")]
        server: crate::client::ServerList,
    },
}

/// Runs one license command.
pub fn run(cmd: LicenseCommand) -> Result<(), Failure> {
    match cmd {
        LicenseCommand::Import(args) => crate::cli::import::run_args(args),
        LicenseCommand::Trust { key, server } => trust(&key, server),
        LicenseCommand::Reread { server } => reread(server),
        LicenseCommand::Untrust { key_id, server } => untrust(&key_id, server),
        LicenseCommand::Keygen { out, vendor, .. } => keygen(&out, vendor.as_deref()),
        LicenseCommand::Sign { key, file, out } => sign(&key, &file, out.as_deref()),
        LicenseCommand::Verify {
            pubkeys,
            cluster_name,
            cluster_id,
            files,
        } => verify(&pubkeys, &cluster_name, cluster_id.as_ref(), &files),
    }
}

fn reread(server: crate::client::ServerList) -> Result<(), Failure> {
    crate::cli::common::init_logging(crate::cli::common::CLIENT_LOG_DEFAULT);
    let client = crate::cli::env_client(server)?;
    let reply = crate::cli::common::runtime()?
        .block_on(client.reread_license_dir())
        .map_err(crate::cli::common::failure)?;
    println!(
        "node {} read {}: {} file{}",
        reply.node,
        reply.dir,
        reply.files.len(),
        if reply.files.len() == 1 { "" } else { "s" }
    );
    for file in &reply.files {
        println!("  {file}");
    }
    if reply.files.iter().any(|f| f.contains(": refused: ")) {
        return Err(Failure::refused(
            "some license files were refused (listed above)",
        ));
    }
    Ok(())
}

fn trust(path: &Path, server: crate::client::ServerList) -> Result<(), Failure> {
    crate::cli::common::init_logging(crate::cli::common::CLIENT_LOG_DEFAULT);
    // Parsed here first, so a wrong file is a usage error naming it.
    let key = crate::keys::load_public_key(path).map_err(|e| Failure::usage(e.to_string()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    let client = crate::cli::env_client(server)?;
    let id = crate::cli::common::runtime()?
        .block_on(client.trust_key(&text))
        .map_err(crate::cli::common::failure)?;
    println!(
        "trusted vendor key {id} for {}",
        key.vendor()
            .map_or("any vendor".to_string(), |v| format!("vendor {v}"))
    );
    Ok(())
}

fn untrust(key_id: &str, server: crate::client::ServerList) -> Result<(), Failure> {
    crate::cli::common::init_logging(crate::cli::common::CLIENT_LOG_DEFAULT);
    let client = crate::cli::env_client(server)?;
    crate::cli::common::runtime()?
        .block_on(client.untrust_key(key_id))
        .map_err(crate::cli::common::failure)?;
    println!("vendor key {key_id} is no longer trusted");
    Ok(())
}

/// `PREFIX` + `suffix` (appended, so `acme.v2` gives `acme.v2.key`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut path = prefix.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

fn keygen(prefix: &Path, vendor: Option<&str>) -> Result<(), Failure> {
    if let Some(vendor) = vendor
        && !crate::text::is_name(vendor, usize::MAX)
    {
        return Err(Failure::usage(format!(
            "vendor {vendor:?} is not a name, expected letters, digits, '_', '.' or '-'"
        )));
    }
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    for path in [&key_path, &pub_path] {
        if path.exists() {
            return Err(Failure::usage(format!(
                "{} already exists: choose another --out prefix or move the old key away (an existing key is never overwritten)",
                path.display()
            )));
        }
    }
    let key = VendorSigningKey::generate(vendor);
    write_new(&key_path, &key.to_file_text(), 0o600)?;
    let public = key.public_key();
    write_new(&pub_path, &public.to_file_text(), 0o644)?;
    println!(
        "wrote secret key {} (mode 0600: keep it private, it signs license files)",
        key_path.display()
    );
    println!(
        "wrote public key {} (give it to the clusters that accept your files)",
        pub_path.display()
    );
    println!(
        "key id {}, signs for {}",
        public.key_id(),
        match vendor {
            Some(v) => format!("vendor {v:?} only"),
            None => "any vendor".to_string(),
        }
    );
    Ok(())
}

/// Creates `path` (which must not exist) with `mode` and writes `text` to it.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::usage(format!("cannot write {}: {e}", path.display()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)
}

/// Reads a license file, refusing one too large to be a license file.
fn read_license(path: &Path) -> Result<String, Failure> {
    let fail = |e: std::io::Error| {
        Failure::usage(format!("cannot read license file {}: {e}", path.display()))
    };
    let len = std::fs::metadata(path).map_err(fail)?.len();
    if len > LICENSE_FILE_BYTES_MAX as u64 {
        return Err(Failure::refused(format!(
            "{}: the file is {len} bytes long, expected at most {LICENSE_FILE_BYTES_MAX} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(fail)
}

fn sign(key_path: &Path, path: &Path, out: Option<&Path>) -> Result<(), Failure> {
    let key = crate::keys::load_signing_key(key_path).map_err(|e| Failure::usage(e.to_string()))?;
    let text = read_license(path)?;
    let name = path.display().to_string();
    refuse_issued_ahead(&name, &text, crate::clock::real_wall_ms())?;
    let signed = signature::sign_text(&name, &text, &key).map_err(|e| match e {
        signature::SignError::SelfCheck { .. } => Failure::usage(e.to_string()),
        _ => Failure::refused(e.to_string()),
    })?;
    // The text parsed (sign_text checked it): warn about what a cluster will
    // not use, and about lines this machine's clock says have expired.
    if let Ok(parsed) = file::parse(&name, &text) {
        for warning in sign_warnings(&name, &parsed, crate::clock::real_wall_ms()) {
            eprintln!("warning: {warning}");
        }
    }
    match out {
        None => {
            print!("{signed}");
            Ok(())
        }
        Some(out) => std::fs::write(out, signed)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", out.display()))),
    }
}

/// Refuses to sign a line whose `ISSUED` date is further ahead of this
/// machine's clock than a cluster would accept
/// ([`pool::ISSUED_AHEAD_MAX_MS`]): every cluster would refuse the file.
fn refuse_issued_ahead(name: &str, text: &str, now_ms: u64) -> Result<(), Failure> {
    // A file that does not parse is reported by the signing itself.
    let Ok(parsed) = file::parse(name, text) else {
        return Ok(());
    };
    for line in &parsed.lines {
        if let Some(issued) = line.issued
            && pool::issued_too_far(issued, now_ms)
        {
            let (at, column) = line.issued_at.unwrap_or((line.line, 1));
            return Err(Failure::refused(format!(
                "{name}:{at}:{column}: {} {:?} is issued {issued} but this machine's clock says {}: a cluster accepts a line issued at most one day ahead of its time; correct the ISSUED date (or this machine's clock)",
                line.kind.keyword(),
                line.feature,
                crate::license::feature::time_text(now_ms)
            )));
        }
    }
    Ok(())
}

/// What `sign` warns about (it signs anyway): the file's warnings (lines not
/// imported, ignored VENDOR fields) and every line that has expired at
/// `now_ms`, and whether a cluster would refuse the file as wholly expired.
pub fn sign_warnings(name: &str, parsed: &file::LicenseFile, now_ms: u64) -> Vec<String> {
    let mut out = parsed.warnings(name);
    let expired: Vec<&file::ParsedFeature> = parsed
        .lines
        .iter()
        .filter(|l| !l.expiry.is_valid_at(now_ms))
        .collect();
    for line in &expired {
        out.push(format!(
            "{name}:{}: {} {:?} has already expired on {} by this machine's clock: signed anyway, a cluster counts it 0 seats",
            line.line,
            line.kind.keyword(),
            line.feature,
            line.expiry
        ));
    }
    if !expired.is_empty() && expired.len() == parsed.lines.len() {
        out.push(format!(
            "{name}: every feature line has expired: a cluster refuses the file (give the lines later expiry dates)"
        ));
    }
    out
}

fn verify(
    pubkeys: &[PathBuf],
    cluster_name: &str,
    cluster_id: Option<&crate::license::ClusterId>,
    paths: &[PathBuf],
) -> Result<(), Failure> {
    let trusted = pubkeys
        .iter()
        .map(|p| crate::keys::load_public_key(p).map_err(|e| Failure::usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut licenses: BTreeMap<String, Vec<FeatureLine>> = BTreeMap::new();
    let now_ms = crate::clock::real_wall_ms();
    for path in paths {
        let text = read_license(path)?;
        let name = path.display().to_string();
        let parsed = file::parse(&name, &text).map_err(|e| Failure::refused(e.to_string()))?;
        let lines = match cluster_id {
            Some(id) => {
                signature::verify_bound(&parsed, &name, &trusted, cluster_name, Some(id), now_ms)
            }
            None => signature::verify(&parsed, &name, &trusted, cluster_name, now_ms),
        }
        .map_err(|e| Failure::refused(e.to_string()))?;
        for warning in parsed
            .warnings(&name)
            .into_iter()
            .chain(signature::expired_notes(&name, &lines, now_ms))
        {
            eprintln!("warning: {warning}");
        }
        let bound = parsed.server.cluster_id;
        let unchecked = if bound.is_some() && cluster_id.is_none() {
            " (the identity is not checked: give --cluster-id to check it)"
        } else {
            ""
        };
        println!(
            "{name}: {} feature line{} verified for cluster {cluster_name:?}, {}{unchecked}",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            signature::binding_text(&parsed.server.name, bound.as_ref(), &parsed.server.host_ids),
        );
        if !parsed.server.host_ids.is_empty() {
            println!(
                "{name}: its lines count only while a majority of the cluster's voters report one of these {} host ids (raftlm hostid prints a machine's)",
                parsed.server.host_ids.len()
            );
        }
        licenses.insert(name, lines);
    }
    // Which lines a cluster holding all these files would count.
    let verdicts = pool::evaluate(&licenses).verdicts;
    let rows: Vec<(String, &FeatureLine, String)> = licenses
        .iter()
        .flat_map(|(name, lines)| {
            let verdicts = &verdicts;
            lines.iter().enumerate().map(move |(i, line)| {
                let verdict = match verdicts.get(&(name.clone(), i)) {
                    Some(Verdict::Duplicate { license, line }) => {
                        format!("duplicate of {license}:{line}")
                    }
                    Some(Verdict::Superseded { license, line }) => {
                        format!("superseded by {license}:{line}")
                    }
                    Some(Verdict::Counts) | None if !line.expiry.is_valid_at(now_ms) => {
                        "expired, 0 seats".to_string()
                    }
                    Some(Verdict::Counts) | None => "counts".to_string(),
                };
                (name.clone(), line, verdict)
            })
        })
        .collect();
    if !rows.is_empty() {
        print!("{}", table(&rows, paths.len() > 1));
    }
    Ok(())
}

/// The feature lines as a table with aligned columns: each line's file (when
/// several were given) and whether it counts.
fn table(lines: &[(String, &FeatureLine, String)], with_file: bool) -> String {
    // Seats are numbers: right-aligned.
    const SEATS_COLUMN: usize = 5;
    let header = [
        "FILE", "FEATURE", "VENDOR", "VERSION", "EXPIRY", "SEATS", "KIND", "COUNTS",
    ];
    let rows: Vec<[String; 8]> = lines
        .iter()
        .map(|(file, l, verdict)| {
            [
                format!("{file}:{}", l.line),
                l.feature.clone(),
                l.vendor.clone(),
                l.version.clone(),
                l.expiry.to_string(),
                l.seats.to_string(),
                match l.kind {
                    LineKind::Feature => "FEATURE",
                    LineKind::Increment => "INCREMENT",
                }
                .to_string(),
                verdict.clone(),
            ]
        })
        .collect();
    let skip = usize::from(!with_file);
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[&str]| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate().skip(skip) {
            if i == SEATS_COLUMN {
                line.push_str(&format!("{cell:>w$}  "));
            } else if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header);
    for row in &rows {
        push_row(&row.each_ref().map(String::as_str));
    }
    out
}
