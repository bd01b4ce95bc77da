//! Deliberate breakage, to show the chaos harness catches it (test-only).
//!
//! A binary built with the test-only cargo feature `fault-injection` reads
//! `RAFTLM_FAULT_BREAK`, a comma-separated list of [`Break`] names, once at
//! start; each named part then misbehaves on purpose. `raftlm-chaos --break`
//! sets it for its nodes, and its tests require each break to be caught by
//! an invariant. Without the feature [`broken`] is a constant `false` and the
//! variable is never read: no shipped build can be broken this way. (The
//! feature's other use, the clock offset, lives in `src/clock.rs`.)
//!
//! The same feature lets a process test crash a node at a chosen point, to
//! show that what is left behind is recovered: `RAFTLM_FAULT_EXIT` names an
//! [`ExitPoint`], read once at start, and the node exits with
//! [`EXIT_CODE`] when it gets there. Without the feature [`exit_after_joint`]
//! does nothing and the variable is never read.

/// A part of raftlm that can be broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// `sweeper`: sessions are expired after a twentieth of the session TTL.
    Sweeper,
    /// `dedup`: the per-session retry window is not consulted, so a retried
    /// request is applied again.
    Dedup,
    /// `lease`: the quorum lease never lapses; a leader serves until it hears
    /// of a higher term.
    Lease,
    /// `restored-leader`: a node that led before it stopped keeps its own
    /// committed vote, so openraft restores it as leader of its old term
    /// (`LogStore::demote_restored_leadership` is skipped).
    RestoredLeader,
    /// `incomplete-activation`: the activator does not check, before it
    /// activates, that this node has applied what its peers have.
    IncompleteActivation,
    /// `leader-tail`: a node's appends of its own entries (as leader) are not
    /// flushed, though reported flushed, so a power cut of every node loses
    /// a log tail its followers flushed and committed.
    LeaderTail,
}

impl Break {
    /// Every break, by the name `RAFTLM_FAULT_BREAK` uses.
    pub const ALL: [(&'static str, Break); 6] = [
        ("sweeper", Break::Sweeper),
        ("dedup", Break::Dedup),
        ("lease", Break::Lease),
        ("restored-leader", Break::RestoredLeader),
        ("incomplete-activation", Break::IncompleteActivation),
        ("leader-tail", Break::LeaderTail),
    ];
}

/// Whether this binary was built with the test-only feature `fault-injection`.
pub const BUILT_IN: bool = cfg!(feature = "fault-injection");

/// Whether `part` is broken in this process.
#[inline]
pub fn broken(part: Break) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        breaks().contains(&part)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = part;
        false
    }
}

/// The breaks named in `RAFTLM_FAULT_BREAK` (unknown names are ignored;
/// the node logs what it found at start).
#[cfg(feature = "fault-injection")]
pub fn breaks() -> &'static [Break] {
    static BREAKS: std::sync::OnceLock<Vec<Break>> = std::sync::OnceLock::new();
    BREAKS.get_or_init(|| {
        let list = std::env::var("RAFTLM_FAULT_BREAK").unwrap_or_default();
        list.split(',')
            .filter_map(|name| {
                Break::ALL
                    .iter()
                    .find(|(n, _)| *n == name.trim())
                    .map(|(_, b)| *b)
            })
            .collect()
    })
}

/// The breaks in effect (none without the feature).
#[cfg(not(feature = "fault-injection"))]
pub fn breaks() -> &'static [Break] {
    &[]
}

/// A point at which a node exits on purpose (test-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitPoint {
    /// `after-joint`: the leader exits as it applies a joint configuration
    /// it proposed. openraft's `change_membership` has then committed the
    /// joint entry and not yet proposed the final one (it does so once the
    /// joint entry is applied), so the cluster is left in the joint
    /// configuration, as when a leader dies between the two entries.
    AfterJoint,
}

impl ExitPoint {
    /// Every exit point, by the name `RAFTLM_FAULT_EXIT` uses.
    pub const ALL: [(&'static str, ExitPoint); 1] = [("after-joint", ExitPoint::AfterJoint)];
}

/// The exit status of a node that exited at an [`ExitPoint`].
pub const EXIT_CODE: i32 = 86;

/// Tells the exit points which node this process runs (one node per
/// process: exit points are for process tests).
pub fn set_node(id: u64) {
    #[cfg(feature = "fault-injection")]
    {
        let _ = NODE.set(id);
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = id;
    }
}

#[cfg(feature = "fault-injection")]
static NODE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The exit point named in `RAFTLM_FAULT_EXIT`, if any (none without the
/// feature; an unknown name is none).
pub fn exit_point() -> Option<ExitPoint> {
    #[cfg(feature = "fault-injection")]
    {
        static POINT: std::sync::OnceLock<Option<ExitPoint>> = std::sync::OnceLock::new();
        *POINT.get_or_init(|| {
            let name = std::env::var("RAFTLM_FAULT_EXIT").unwrap_or_default();
            ExitPoint::ALL
                .iter()
                .find(|(n, _)| *n == name.trim())
                .map(|(_, p)| *p)
        })
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        None
    }
}

/// Called by the state machine as it applies a membership entry at log
/// index `index`, proposed by node `leader`, `joint` if it holds a joint
/// configuration: at the exit point `after-joint`, exits if it is a joint
/// configuration this node proposed.
pub fn exit_after_joint(index: u64, leader: u64, joint: bool) {
    #[cfg(feature = "fault-injection")]
    if exit_point() == Some(ExitPoint::AfterJoint) && joint && NODE.get() == Some(&leader) {
        tracing::error!(
            index,
            "test-only exit point after-joint: exiting as the joint configuration this node proposed is applied"
        );
        std::process::exit(EXIT_CODE);
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = (index, leader, joint);
    }
}
