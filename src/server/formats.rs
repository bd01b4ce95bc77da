//! The active node's record of the formats its members read, the cluster's
//! write format, and the gate on command kinds added with a format.
//!
//! Every node says which record formats it reads in each peer-plane message
//! (`src/raft/network.rs`). While it serves, the active node compares what
//! every voter and learner says (itself, each peer's last Raft reply, else
//! what the state recorded) with the state's record, and proposes a
//! [`Command::RecordFormats`] when they differ or when every member reads a
//! newer format than the cluster writes: that command raises the write
//! format. Nothing is recorded while the cluster writes format 6 and cannot
//! raise it (a format-6 log cannot hold the command). On every node, the
//! peer addresses moved with `set-address` are handed to the transport.
//! See docs/decisions/0022-format-negotiation.md.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{info, warn};

use super::Shared;
use super::error::ServiceError;
use crate::license::formats::{Advertisement, ClusterFormats};
use crate::license::state::{Command, NodeId};

/// How often the active node compares what the members read with the
/// record: an upgraded cluster writes its new format within this of the
/// last member's first answer.
pub const FORMAT_REPORT_PERIOD: Duration = Duration::from_secs(1);

/// What every voter and learner says it reads: this node itself, a peer as
/// its last Raft reply to this node said, else as the state recorded it;
/// `None` when nothing is known (it has not answered since this node
/// started, and nothing was recorded).
pub fn view(shared: &Shared) -> BTreeMap<u64, Option<Advertisement>> {
    let members: Vec<u64> = shared
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    let answered = shared.network.peer_formats();
    let recorded = shared.state.read(|state| state.formats().members.clone());
    members
        .into_iter()
        .map(|id| {
            let said = if id == shared.node_id {
                Some(shared.network.advertisement().clone())
            } else {
                answered.get(&id).or_else(|| recorded.get(&id)).cloned()
            };
            (id, said)
        })
        .collect()
}

/// The `RecordFormats` the members call for (what they say, and the write
/// format), or `None` when the state says the same already, or when it
/// cannot be recorded yet.
pub fn wanted(shared: &Shared) -> Option<(Vec<(NodeId, Advertisement)>, u8)> {
    let view = view(shared);
    let (write, recorded) = shared.state.read(|state| {
        let formats = state.formats();
        (formats.write, formats.members.clone())
    });
    // Every member must have said what it reads before anything is recorded.
    let members: BTreeMap<u64, Advertisement> = view
        .into_iter()
        .map(|(id, said)| said.map(|said| (id, said)))
        .collect::<Option<_>>()?;
    let agreed = ClusterFormats::agreed(&members)?;
    let target = agreed.max(write);
    if members.values().any(|said| !said.reads(target)) {
        return None;
    }
    let changed = target > write
        || (write >= crate::license::formats::FORMAT_SET_ADDRESS && members != recorded);
    changed.then(|| {
        (
            members
                .into_iter()
                .map(|(id, said)| (NodeId(id), said))
                .collect(),
            target,
        )
    })
}

/// Refuses `what` unless the cluster writes `format` or newer, naming the
/// members that hold it back.
pub fn require(shared: &Shared, format: u8, what: &str) -> Result<(), ServiceError> {
    let write = shared.state.read(|state| state.formats().write);
    if write >= format {
        return Ok(());
    }
    let holders = ClusterFormats::holding_back(&view(shared), format);
    let why = if holders.is_empty() {
        format!(
            "every member reads it now, and the active node raises the write format within {FORMAT_REPORT_PERIOD:?}: ask again"
        )
    } else {
        format!("held back by {}", holders.join(", "))
    };
    Err(ServiceError::Refused(format!(
        "{what} needs record format {format}, but the cluster writes format {write}: {why}"
    )))
}

/// Runs until `stop` resolves: on every node, hands moved peer addresses to
/// the transport; while this node serves, keeps the state's record of the
/// members' formats up to date and raises the write format when it can.
pub async fn watch(shared: std::sync::Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let mut ticker = tokio::time::interval(FORMAT_REPORT_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failure is logged when it starts or changes, not at every attempt.
    let mut last_failure: Option<String> = None;
    let mut moved_seen = BTreeMap::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let moved: BTreeMap<u64, String> = shared.state.read(|state| {
            state
                .formats()
                .addresses
                .iter()
                .map(|(id, moved)| (*id, moved.peer_address.clone()))
                .collect()
        });
        if moved != moved_seen {
            info!(?moved, "peer addresses moved with set-address");
            shared.network.set_moved(moved.clone());
            moved_seen = moved;
        }
        if shared.serving().is_err() {
            continue;
        }
        let Some((members, write)) = wanted(&shared) else {
            continue;
        };
        let command = Command::RecordFormats {
            members,
            write,
            author: format!("node {} (active)", shared.node_id),
        };
        match shared.batcher.submit(command).await {
            Ok((outcome, log_id)) => {
                last_failure = None;
                info!(%log_id, ?outcome, "members' record formats recorded");
            }
            Err(error) => {
                let error = error.to_string();
                if last_failure.as_deref() != Some(error.as_str()) {
                    warn!(%error, "cannot record the members' record formats; retried, logged again if the reason changes");
                    last_failure = Some(error);
                }
            }
        }
    }
}
