//! `raftlm-chaos`: runs a chaos test of a three- or five-node raftlm
//! cluster and prints a report (see `chaos/README.md`).
//!
//! Exit codes: 0 every invariant held; 1 a violation was found; 2 the run
//! could not be set up or was interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use raftlm::text::parse_duration;
use raftlm_chaos::lan;
use raftlm_chaos::nemesis::FaultKind;
use raftlm_chaos::run::{self, RunConfig};

/// Chaos test of a three- or five-node raftlm cluster: kills, pauses,
/// restarts and cut links under a recorded workload, then a check that no
/// seat was lost or granted twice.
#[derive(Debug, Parser)]
#[command(name = "raftlm-chaos", version, about)]
struct Args {
    /// Seed of every random choice (default: drawn from the clock, and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long to inject faults: `90s`, `10m`, `1h`, or seconds.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Fault types, comma-separated: kill, pause, partition, restart,
    /// kill-all, power, clock, overlap, isolate (a type listed twice is drawn twice as
    /// often). Default: all of them, power only where it can run (root,
    /// /dev/fuse), clock only against a fault-injection build.
    /// `none`: no faults at all (to count spurious elections under load).
    #[arg(long, value_delimiter = ',', value_parser = parse_fault)]
    faults: Option<Vec<Option<FaultKind>>>,
    /// Concurrent client sessions.
    #[arg(long, default_value_t = 32)]
    sessions: usize,
    /// Nodes in the cluster: 3, or 5 (kills, pauses and power cuts then take
    /// a second node half the time, and a third of the partitions are a 2|3
    /// split; the report counts these two-node faults apart). Five nodes run
    /// on loopback only, not with --netns.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    nodes: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep the run directory (history.jsonl, node logs, data, report.json) here.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// The raftlm binary (default: `raftlm` next to this executable).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The nodes' session TTL in milliseconds (at least 2400).
    #[arg(long, default_value_t = 6000)]
    session_ttl_ms: u64,
    /// The nodes snapshot every this many log entries.
    #[arg(long, default_value_t = 300)]
    snapshot_every: u64,
    /// Also run a hostile client (junk, oversized and replayed requests,
    /// session floods, forged and unheld check-ins, control characters in
    /// names) from 127.0.0.3, an idle-socket flood from 127.0.0.77 and a
    /// state-digest flood from 127.0.0.78.
    #[arg(long)]
    hostile: bool,
    /// Break parts of raftlm on purpose, to show the checker catches it:
    /// comma-separated `sweeper`, `dedup`, `lease` (raftlm's `src/fault.rs`).
    /// Needs a raftlm built with the test-only feature fault-injection; the
    /// run is then expected to FAIL.
    #[arg(long = "break", value_delimiter = ',', value_parser = parse_break, value_name = "PARTS")]
    breaks: Vec<String>,
    /// Applications on raftlm's own client library, each behind a link the
    /// run cuts now and then for longer than the session TTL.
    #[arg(long, default_value_t = 4)]
    apps: usize,
    /// Run the nodes on a LAN in a box: a network namespace per node host
    /// and one for the clients (this harness), joined by a bridge in a
    /// namespace of its own on 198.51.100.0/24, the access point a real
    /// address moved by the shipped vip-up/vip-down with the hosts' systemd
    /// side (watchdog, ExecStopPost) played by the harness; `isolate` cuts
    /// a host's link. Needs root, `ip` and `arping`.
    #[arg(long)]
    netns: bool,
    /// With --netns, leave out the hosts' systemd side (no watchdog, no
    /// ExecStopPost): a killed or paused active node's host keeps the
    /// address, to show the checker catches the double answer. The run is
    /// then expected to FAIL.
    #[arg(long, requires = "netns")]
    without_host_side: bool,
}

/// A part of raftlm that `--break` can break.
fn parse_break(text: &str) -> Result<String, String> {
    let names: Vec<&str> = raftlm::fault::Break::ALL.iter().map(|(n, _)| *n).collect();
    if names.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "unknown part {text:?}: one of {}",
            names.join(", ")
        ))
    }
}

/// Whether `binary` was built with the test-only feature fault-injection
/// (its `--version` says so).
fn built_with_fault_injection(binary: &std::path::Path) -> bool {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("fault-injection"))
}

/// `--nodes`: 3 or 5.
fn parse_nodes(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ (3 | 5)) => Ok(n),
        _ => Err(format!("{text:?}: a chaos cluster has 3 or 5 nodes")),
    }
}

/// A fault type, or `none` (no fault).
fn parse_fault(text: &str) -> Result<Option<FaultKind>, String> {
    if text == "none" {
        return Ok(None);
    }
    text.parse().map(Some)
}

fn default_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("raftlm"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The LAN is built, and this thread moved into its client namespace,
    // before the runtime starts: every thread and socket of the run is then
    // a client host's.
    let lan = if args.netns {
        if args.nodes != 3 {
            eprintln!(
                "raftlm-chaos: --netns builds three node hosts; run --nodes {} on loopback (without --netns)",
                args.nodes
            );
            return ExitCode::from(2);
        }
        if args.hostile {
            eprintln!(
                "raftlm-chaos: --hostile sends from 127.0.0.3, 127.0.0.77 and 127.0.0.78, which cannot reach a LAN; run it without --netns"
            );
            return ExitCode::from(2);
        }
        if let Some(why) = lan::unavailable() {
            eprintln!("raftlm-chaos: --netns cannot run here: {why}");
            return ExitCode::from(2);
        }
        let lan = match lan::Lan::build() {
            Ok(lan) => Arc::new(lan),
            Err(error) => {
                eprintln!("raftlm-chaos: cannot build the LAN: {error}");
                return ExitCode::from(2);
            }
        };
        if let Err(error) = lan::enter(lan.client_fd()) {
            eprintln!("raftlm-chaos: cannot enter the client namespace: {error}");
            return ExitCode::from(2);
        }
        Some(lan)
    } else {
        None
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raftlm-chaos: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run_main(args, lan.clone()));
    // The nodes are gone (the run dropped its cluster): now the namespaces.
    drop(runtime);
    drop(lan);
    code
}

async fn run_main(args: Args, lan: Option<Arc<lan::Lan>>) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let Some(binary) = args.binary.clone().or_else(default_binary) else {
        eprintln!("raftlm-chaos: cannot locate the raftlm binary; pass --binary");
        return ExitCode::from(2);
    };
    // The nodes run in the run directory: a relative path must not change meaning.
    let binary = match std::fs::canonicalize(&binary) {
        Ok(binary) => binary,
        Err(error) => {
            eprintln!("raftlm-chaos: cannot use {}: {error}", binary.display());
            return ExitCode::from(2);
        }
    };
    if args.session_ttl_ms < 2400 {
        eprintln!("raftlm-chaos: --session-ttl-ms must be at least 2400 (three election timeouts)");
        return ExitCode::from(2);
    }
    let mut faults = match args.faults.clone() {
        Some(faults) => faults.into_iter().flatten().collect(),
        None => {
            let mut all = FaultKind::ALL.to_vec();
            if let Err(why) = raftlm_chaos::powerfs::available() {
                eprintln!("raftlm-chaos: no power cuts in this run: {why}");
                all.retain(|&f| f != FaultKind::Power);
            }
            if !built_with_fault_injection(&binary) {
                eprintln!(
                    "raftlm-chaos: no clock faults in this run: {} is not a fault-injection build",
                    binary.display()
                );
                all.retain(|&f| f != FaultKind::Clock);
            }
            all
        }
    };
    faults.sort();
    if faults.contains(&FaultKind::Power)
        && let Err(why) = raftlm_chaos::powerfs::available()
    {
        eprintln!("raftlm-chaos: the power fault cannot run here: {why}");
        return ExitCode::from(2);
    }
    if faults.contains(&FaultKind::Clock) && !built_with_fault_injection(&binary) {
        eprintln!(
            "raftlm-chaos: the clock fault needs a raftlm built with the test-only feature fault-injection (cargo build -p raftlm --features fault-injection --target-dir target/fault-injection); {} is not",
            binary.display()
        );
        return ExitCode::from(2);
    }
    if !args.breaks.is_empty() && !built_with_fault_injection(&binary) {
        eprintln!(
            "raftlm-chaos: --break needs a raftlm built with the test-only feature fault-injection (cargo build -p raftlm --features fault-injection --target-dir target/fault-injection); {} is not",
            binary.display()
        );
        return ExitCode::from(2);
    }
    let config = RunConfig {
        seed,
        duration: args.duration,
        faults,
        sessions: args.sessions,
        keep: args.keep.clone(),
        binary,
        session_ttl_ms: args.session_ttl_ms,
        snapshot_every: args.snapshot_every.max(1),
        features: run::FEATURES
            .iter()
            .map(|&(f, n)| (f.to_string(), n))
            .collect(),
        churn: Some((run::CHURN_FEATURE.0.to_string(), run::CHURN_FEATURE.1)),
        progress: true,
        hostile: args.hostile,
        breaks: args.breaks.clone(),
        apps: args.apps,
        netns: lan,
        host_side: !args.without_host_side,
        nodes: args.nodes,
    };
    eprintln!("raftlm-chaos: seed {seed} (replay: {})", config.replay());
    // Dropping the run on Ctrl-C or SIGTERM kills every node it started.
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                eprintln!("raftlm-chaos: cannot watch SIGTERM: {error}");
                return ExitCode::from(2);
            }
        };
    let result = tokio::select! {
        result = run::run(&config) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("raftlm-chaos: cannot encode the report: {error}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.to_text());
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("raftlm-chaos: {error:#} (seed {seed})");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Durations are read in the units the README uses.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        // The grammar is raftlm's own (`raftlm::text`), which also takes days.
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86_400)));
    }
}
