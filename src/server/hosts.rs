//! The active node's record of the voters' host ids.
//!
//! License lines bound to host ids (`SERVER … HOSTIDS=`) count only while a
//! majority of the voters report a listed id ([`crate::license::host`]).
//! Every replica must judge that alike, so the judgement reads a record in
//! the state, not each node's view: while it serves, the active node compares
//! what the voters report (its own id, and the id in each peer's last Raft
//! reply) with the record, and proposes a new record
//! ([`Command::ReportHosts`]) when they differ. A voter that has not
//! answered since this node started keeps its recorded id: a node that is
//! down does not take seats away, as with FlexNet's triad, where two of three
//! servers keep serving. A cluster that holds no line bound to host ids
//! records nothing (its log carries no reports): the first report follows
//! the import of the first bound file within [`HOST_REPORT_PERIOD`].

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{info, warn};

use super::Shared;
use crate::license::HostId;
use crate::license::state::{Command, NodeId};

/// How often the active node compares the voters' host ids with the record:
/// a replaced machine's lines count (or stop counting) within this of its
/// first answer.
pub const HOST_REPORT_PERIOD: Duration = Duration::from_secs(1);

/// The record the voters' reports call for, or `None` when the state's
/// record already says the same.
pub fn wanted(shared: &Shared) -> Option<Vec<(NodeId, Option<HostId>)>> {
    let (bound, recorded) = shared.state.read(|state| {
        let bound = state
            .licenses()
            .values()
            .flatten()
            .any(|line| !line.host_ids.is_empty());
        (bound, state.hosts().voters.clone())
    });
    if !bound {
        return None;
    }
    let answered = view(shared);
    let wanted: BTreeMap<u64, Option<HostId>> = answered
        .into_iter()
        .map(|(voter, id)| match id {
            Some(reported) => (voter, reported),
            None => (voter, recorded.get(&voter).copied().flatten()),
        })
        .collect();
    (wanted != recorded).then(|| {
        wanted
            .into_iter()
            .map(|(voter, id)| (NodeId(voter), id))
            .collect()
    })
}

/// What this node hears now: every voter, with the host id it reported
/// (`Some(None)`: it answered without one; `None`: it has not answered since
/// this node started). This node's own id is its own.
pub fn view(shared: &Shared) -> BTreeMap<u64, Option<Option<HostId>>> {
    let voters: Vec<u64> = shared
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let answered = shared.network.peer_hosts();
    voters
        .into_iter()
        .map(|voter| {
            let id = if voter == shared.node_id {
                Some(shared.network.host_id())
            } else {
                answered.get(&voter).copied()
            };
            (voter, id)
        })
        .collect()
}

/// Runs until `stop` resolves: while this node serves, keeps the state's
/// record of the voters' host ids up to date.
pub async fn watch(shared: std::sync::Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let mut ticker = tokio::time::interval(HOST_REPORT_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failure is logged when it starts or changes, not at every attempt.
    let mut last_failure: Option<String> = None;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        if shared.serving().is_err() {
            continue;
        }
        let Some(voters) = wanted(&shared) else {
            continue;
        };
        let command = Command::ReportHosts {
            voters,
            author: format!("node {} (active)", shared.node_id),
        };
        match shared.batcher.submit(command).await {
            Ok((outcome, log_id)) => {
                last_failure = None;
                info!(%log_id, ?outcome, "voters' host ids recorded");
            }
            Err(error) => {
                let error = error.to_string();
                if last_failure.as_deref() != Some(error.as_str()) {
                    warn!(%error, "cannot record the voters' host ids; retried, logged again if the reason changes");
                    last_failure = Some(error);
                }
            }
        }
    }
}
