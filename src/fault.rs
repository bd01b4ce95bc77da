//! Deliberate breakage, to show the chaos harness catches it (test-only).
//!
//! A binary built with the test-only cargo feature `fault-injection` reads
//! `RAFTLM_FAULT_BREAK`, a comma-separated list of [`Break`] names, once at
//! start; each named part then misbehaves on purpose. `raftlm-chaos --break`
//! sets it for its nodes, and its tests require each break to be caught by
//! an invariant. Without the feature [`broken`] is a constant `false` and the
//! variable is never read: no shipped build can be broken this way. (The
//! feature's other use, the clock offset, lives in `src/clock.rs`.)

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
