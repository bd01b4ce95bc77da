//! `raftlm backup --out FILE`, `raftlm backup --verify FILE` and `raftlm
//! restore FILE --config FILE [--above-term T]`: a copy of the license state
//! kept away from the cluster, and a cluster rebuilt from it on empty data
//! directories (`docs/operations.md`, "Backup and restore").
//!
//! `backup --out` asks the active node (administrator certificate), checks
//! what it received as `--verify` does, and writes it 0600 through a
//! temporary file, fsync and rename, so a file of that name is always a whole
//! backup. `restore` runs offline on each node of the new cluster
//! (`src/raft/restore.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Failure;
use crate::cli::common::{CLIENT_LOG_DEFAULT, failure, format_time_ms, init_logging, runtime};
use crate::client::{DEFAULT_SERVER, ServerList};
use crate::raft::backup::{self, BACKUP_BYTES_MAX, Backup};
use crate::raft::restore;

/// How long `raftlm backup` waits for the whole backup by default.
pub const BACKUP_TIMEOUT_DEFAULT: &str = "60s";

/// `raftlm backup`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// Write the active node's backup to FILE (replaced atomically, mode 0600).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "verify",
        conflicts_with = "verify"
    )]
    pub out: Option<PathBuf>,
    /// Check a backup file offline instead: checksum, decoding, the state's
    /// invariants and digest, every license line against the trust anchors it holds.
    #[arg(long, value_name = "FILE")]
    pub verify: Option<PathBuf>,
    /// How long to wait for the whole backup.
    #[arg(long, default_value = BACKUP_TIMEOUT_DEFAULT, value_parser = crate::text::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// The access point or node list: host:port or port@host, comma-separated.
    #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
    pub server: ServerList,
}

/// `raftlm restore`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The config of the node to restore; its data_dir must be empty or absent.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The highest term the old cluster or its clients reached, if known: the
    /// restored cluster starts above it (default: the backup's term + 1,000,000).
    #[arg(long, value_name = "T")]
    pub above_term: Option<u64>,
}

/// Runs `raftlm backup`.
pub fn run_backup(args: BackupArgs) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    if let Some(path) = &args.verify {
        let backup = read_checked(path)?;
        print!("{}", summary(path, &backup));
        return Ok(());
    }
    let Some(out) = args.out else {
        return Err(Failure::usage("give --out FILE or --verify FILE"));
    };
    let client = crate::cli::env_client(args.server)?;
    let file = runtime()?
        .block_on(client.backup(args.timeout))
        .map_err(failure)?;
    let backup = checked(&out, &file.bytes)?;
    write_private(&out, &file.bytes)
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", out.display())))?;
    print!("{}", summary(&out, &backup));
    Ok(())
}

/// Runs `raftlm restore`.
pub fn run_restore(args: RestoreArgs) -> Result<(), Failure> {
    init_logging(CLIENT_LOG_DEFAULT);
    let backup = read_checked(&args.file)?;
    let config =
        crate::config::Config::load(&args.config).map_err(|e| Failure::usage(e.to_string()))?;
    if config.cluster_name != backup.cluster_name {
        return Err(Failure::usage(format!(
            "{} is a backup of cluster \"{}\" but {} names cluster \"{}\": licenses are bound to the cluster name",
            args.file.display(),
            backup.cluster_name,
            args.config.display(),
            config.cluster_name
        )));
    }
    match restore::is_empty_dir(&config.data_dir) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Failure::usage(format!(
                "data directory {} is not empty: restore writes only into an empty directory (move it aside first)",
                config.data_dir.display()
            )));
        }
        Err(e) => {
            return Err(Failure::usage(format!(
                "cannot read data directory {}: {e}",
                config.data_dir.display()
            )));
        }
    }
    let members = config
        .nodes
        .iter()
        .map(|n| {
            let member = crate::raft::Member {
                address: n.address.clone(),
                peer_address: n.peer_address.clone(),
            };
            (n.id, member)
        })
        .collect();
    let term = restore::restored_term(backup.term, args.above_term);
    runtime()?
        .block_on(restore::restore(
            &backup,
            &config.data_dir,
            config.node_id,
            members,
            term,
        ))
        .map_err(|e| Failure::usage(e.to_string()))?;
    println!(
        "node {} restored into {}: cluster {} at log index {} (backup taken {}), voting in term {term}",
        config.node_id,
        config.data_dir.display(),
        backup.cluster_name,
        backup.last_applied.index,
        format_time_ms(backup.created_ms),
    );
    if let Some(dir) = &config.license_dir {
        for line in license_dir_notes(dir, &backup) {
            println!("  {line}");
        }
    }
    println!(
        "start it with: raftlm server --config {}",
        args.config.display()
    );
    Ok(())
}

/// Reads and checks a backup file: a missing or unreadable file is a usage
/// error (exit 2), a backup that fails a check is refused (exit 1).
fn read_checked(path: &Path) -> Result<Backup, Failure> {
    let unreadable =
        |e: std::io::Error| Failure::usage(format!("cannot read {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > BACKUP_BYTES_MAX as u64 {
        return Err(Failure::refused(format!(
            "{} is {size} bytes, more than the {BACKUP_BYTES_MAX} a backup may have",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    checked(path, &bytes)
}

/// Decodes and verifies a backup's bytes; a failure names the check.
fn checked(path: &Path, bytes: &[u8]) -> Result<Backup, Failure> {
    let refuse = |e: backup::BackupError| Failure::refused(format!("{}: {e}", path.display()));
    let backup = backup::decode(bytes).map_err(refuse)?;
    backup::verify(&backup).map_err(refuse)?;
    Ok(backup)
}

/// What `backup` and `backup --verify` print.
fn summary(path: &Path, backup: &Backup) -> String {
    let state = &backup.state;
    let features: std::collections::BTreeSet<(&str, &str)> = state
        .licenses()
        .values()
        .flatten()
        .map(|l| (l.vendor.as_str(), l.feature.as_str()))
        .collect();
    format!(
        "{}: backup of cluster {} taken by node {} (raftlm {}) at {}\n  \
         log index {} (term {}), node term {}\n  \
         {} license files, {} features, {} grants, {} sessions, {} trusted keys\n  \
         state digest {}\n  \
         checks passed: checksum, decoding, invariants, digest, license lines\n",
        path.display(),
        backup.cluster_name,
        backup.node,
        backup.raftlm_version,
        format_time_ms(backup.created_ms),
        backup.last_applied.index,
        backup.last_applied.leader_id.term,
        backup.term,
        state.licenses().len(),
        features.len(),
        state.grants().len(),
        state.sessions().len(),
        state.trusted_keys().len(),
        backup.state_digest,
    )
}

/// For each `.lic` file of the restored node's license directory: whether
/// the restored cluster holds it as it is, or would import it again (or
/// refuse it) at its next activation. The restore leaves the directory alone.
fn license_dir_notes(dir: &Path, backup: &Backup) -> Vec<String> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "lic"))
            .collect(),
        Err(e) => {
            return vec![format!(
                "license_dir {}: cannot be read: {e}",
                dir.display()
            )];
        }
    };
    files.sort();
    let state = &backup.state;
    let anchors = state.anchors();
    let mut notes = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let verdict = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| crate::license::file::parse(&name, &text).map_err(|e| e.to_string()))
            .and_then(|parsed| {
                crate::license::signature::verify_bound(
                    &parsed,
                    &name,
                    &anchors,
                    &backup.cluster_name,
                    state.cluster_id(),
                    state.now_ms(),
                )
                .map_err(|e| e.to_string())
            });
        notes.push(match verdict {
            Ok(lines) if state.was_imported(&name, &lines) => {
                format!("license_dir {name}: held as it is; left alone")
            }
            Ok(_) => format!(
                "license_dir {name}: not in the backup as it is now: the next activation imports it again (move it out of {} to keep the backup's licenses)",
                dir.display()
            ),
            Err(why) => format!("license_dir {name}: would be refused: {why}"),
        });
    }
    notes
}

/// Writes `bytes` to `path` with mode 0600: a temporary file next to it,
/// fsync, rename over `path`, fsync of the directory.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let temporary = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(&dir)?.sync_all()
}
