//! `raftlm server --config FILE`: runs one node until SIGINT or SIGTERM;
//! SIGHUP makes it read its `license_dir` again (if it is the active node).

use std::path::PathBuf;

use tracing::{info, warn};

use crate::cli::Failure;
use crate::config::Config;
use crate::node::Node;
use crate::sd_notify;

/// Runs one node from its config file; with `join`, a new node that waits
/// to be added to a running cluster ([`Node::join`]).
pub fn run(config_path: PathBuf, join: bool) -> Result<(), Failure> {
    let config = Config::load(&config_path).map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(dir) = &config.license_dir
        && !dir.is_dir()
    {
        return Err(Failure::usage(format!(
            "{}: license_dir = {:?} is not a directory this node can read; create it, or remove the setting",
            config_path.display(),
            dir.display().to_string()
        )));
    }
    crate::cli::common::init_logging(NODE_LOG_DEFAULT);
    crash_on_panic();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let started = if join {
            Node::join(config).await
        } else {
            Node::start(config).await
        };
        let node = started.map_err(|e| Failure::usage(e.to_string()))?;
        let asked = node.shared().clone();
        let hangups = tokio::spawn(reread_on_hangup(asked.clone()));
        // systemd (Type=notify, WatchdogSec=): ready now, then keep-alives
        // while the Raft core runs; see crate::sd_notify.
        sd_notify::notify("READY=1");
        let watchdog = match (sd_notify::NotifySocket::from_env(), sd_notify::watchdog_period_from_env()) {
            (Some(socket), Some(period)) => {
                info!(period_ms = period.as_millis() as u64, "pinging the systemd watchdog");
                let raft = node.raft().clone();
                Some(tokio::spawn(sd_notify::keep_alive(socket, period, move || {
                    raft.metrics().borrow().running_state.is_ok()
                })))
            }
            _ => None,
        };
        tokio::select! {
            _ = wait_for_signal() => info!("stopping"),
            _ = asked.shutdown_requested.notified() => info!("stopping: an administrator asked (raftlm down)"),
        }
        sd_notify::notify("STOPPING=1");
        // Keep pinging while the node releases the access point and stops
        // (bounded by the activator's own limit), then stop. A second signal
        // while it stops ends the process at once.
        tokio::select! {
            _ = node.shutdown() => {}
            _ = wait_for_signal() => {
                warn!("a second signal while stopping: exiting at once");
                std::process::exit(STOP_INTERRUPTED_EXIT);
            }
        }
        hangups.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
            let _ = watchdog.await;
        }
        Ok::<(), Failure>(())
    })?;
    // Work left on the blocking pool (a store call that was under way) does
    // not hold the exit.
    runtime.shutdown_timeout(RUNTIME_STOP_MAX);
    info!("stopped");
    Ok(())
}

/// Exit status when a second signal ends a stopping node at once.
const STOP_INTERRUPTED_EXIT: i32 = 1;
/// What a node logs unless `RAFTLM_LOG` says otherwise. openraft is off:
/// it logs every failed call to a down peer at error level, many a second;
/// raftlm logs a peer's outage itself, when it starts, once a minute and
/// when it ends, and logs a Raft core that stopped.
const NODE_LOG_DEFAULT: &str = "info,openraft=off";
/// Longest the process waits for blocking work after the node stopped.
const RUNTIME_STOP_MAX: std::time::Duration = std::time::Duration::from_millis(200);

/// A panic anywhere in a node (a broken invariant in the state machine, a
/// bug) ends the process at once: a replica must never go on with a state
/// it cannot trust. The default hook prints the message first.
fn crash_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!("panic: {info}; stopping the node");
        std::process::abort();
    }));
}

/// Asks the node to read its license directory again at every SIGHUP.
async fn reread_on_hangup(shared: std::sync::Arc<crate::server::Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP: the license directory is read at each activation only");
        return;
    };
    while hangups.recv().await.is_some() {
        info!("SIGHUP: reading the license directory again");
        shared.reread_license_dir.notify_one();
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
