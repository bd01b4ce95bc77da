//! Wall clocks: this node's, and whether its peers agree with it.
//!
//! State time (the time license expiry is judged on) comes from the batches
//! the active node stamps with its wall clock, and the state keeps the
//! largest it has seen (`src/license/state.rs`). One node whose clock is
//! years ahead could therefore expire every dated license for good, if it
//! were allowed to stamp. So a node stamps, and activates, only while its
//! clock agrees within `timing.clock_skew_max_ms` with the clocks of a
//! majority of the voters, itself included:
//!
//! - every Raft RPC reply carries the replying node's wall clock
//!   (`RaftMessage.wall_ms`), and the sender files a [`Sample`]: the peer's
//!   clock and this node's boot-time clock at the middle of the round trip;
//! - [`Clock::judge`] projects each fresh sample to now on the boot-time
//!   clock (which a wall-clock step does not move) and compares it with this
//!   node's wall clock now, so a jump of this node's clock shows at once,
//!   and a jump of a peer's at its next reply (every heartbeat on a leader);
//! - the batcher asks [`Clock::stamp`] for every batch: a node whose clock
//!   disagrees proposes nothing, so state time moves at most the bound away
//!   from what a majority of clocks say; the activator does not activate,
//!   stops serving, and steps back from leadership for a while.
//!
//! With three nodes one agreeing peer is enough, and a node that only one
//! reachable peer disagrees with (the third down) serves nothing until it
//! can tell which of the two clocks is wrong.
//!
//! Built with the test-only `fault-injection` feature, [`wall_ms`] adds the
//! offset (signed ms) written in the file named by `RAFTLM_FAULT_CLOCK_FILE`,
//! which the chaos harness changes while the node runs to jump its clock.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use crate::lease::boottime_ms;

/// How old a peer's clock sample may be and still count (ms on the boot-time
/// clock). A leader gets one per heartbeat; clocks drift by at most a few
/// ms per minute, so a sample this old still says where the peer's clock is.
pub const SAMPLE_AGE_MAX_MS: u64 = 5_000;

/// Samples with a round trip longer than this are not filed: the peer's
/// clock is known only to within half the round trip.
pub const SAMPLE_RTT_MAX_MS: u64 = 2_000;

/// This node's wall clock, ms since the epoch (0 before 1970): the system
/// clock, shifted by the fault-injection offset in a test build. Everything
/// the node stamps, judges or compares with its peers reads this one.
pub fn wall_ms() -> u64 {
    let real = real_wall_ms();
    #[cfg(feature = "fault-injection")]
    {
        real.saturating_add_signed(fault::offset_ms())
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        real
    }
}

/// The system clock, ms since the epoch (0 before 1970), never shifted:
/// for what must not follow a node's injected clock jump, such as a
/// certificate's validity, a command's display of "now", or the chaos
/// harness's own clock.
pub fn real_wall_ms() -> u64 {
    epoch_ms(std::time::SystemTime::now())
}

/// `time` in ms since the epoch (0 before 1970).
pub fn epoch_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether this binary reads a clock offset from `RAFTLM_FAULT_CLOCK_FILE`
/// (the test-only `fault-injection` feature, with the variable set).
pub fn fault_injection_active() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        fault::path().is_some()
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        false
    }
}

#[cfg(feature = "fault-injection")]
mod fault {
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    /// How long a read offset is used before the file is read again.
    const REREAD: Duration = Duration::from_millis(10);

    pub(super) fn path() -> Option<&'static PathBuf> {
        static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
        PATH.get_or_init(|| std::env::var_os("RAFTLM_FAULT_CLOCK_FILE").map(PathBuf::from))
            .as_ref()
    }

    /// The offset in the file (0 if it is missing or does not parse).
    pub(super) fn offset_ms() -> i64 {
        static CACHE: Mutex<Option<(Instant, i64)>> = Mutex::new(None);
        let Some(path) = path() else {
            return 0;
        };
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, offset)) = *cache
            && at.elapsed() < REREAD
        {
            return offset;
        }
        let offset = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        *cache = Some((Instant::now(), offset));
        offset
    }
}

/// One reading of a peer's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The peer's wall clock, ms since the epoch.
    pub peer_wall_ms: u64,
    /// This node's boot-time clock at the middle of the round trip.
    pub boot_ms: u64,
}

/// How a peer's clock compares with this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClock {
    /// No fresh sample (the peer has not answered lately).
    Unknown,
    /// The peer's clock minus this node's, in ms, within the bound.
    Agrees(i64),
    /// The peer's clock minus this node's, in ms, beyond the bound.
    Off(i64),
}

/// This node's clock against its peers', at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The bound the offsets were judged against.
    pub skew_max_ms: u64,
    /// Each peer (voters other than this node), by id.
    pub peers: BTreeMap<u64, PeerClock>,
    /// Voters whose clocks agree with this node's, itself included.
    pub agreeing: usize,
    /// Voters needed for a majority.
    pub quorum: usize,
}

impl Verdict {
    /// Whether this node's clock agrees with a majority of the voters'.
    pub fn ok(&self) -> bool {
        self.agreeing >= self.quorum
    }

    /// Whether so many peers disagree that no majority can agree with this
    /// node's clock, whatever the unknown ones say: this node's clock is the
    /// odd one.
    pub fn condemned(&self) -> bool {
        let off = self
            .peers
            .values()
            .filter(|p| matches!(p, PeerClock::Off(_)))
            .count();
        let voters = self.peers.len() + 1;
        off > voters - self.quorum
    }

    /// Peers beyond the bound, with their offsets.
    pub fn off(&self) -> Vec<(u64, i64)> {
        self.peers
            .iter()
            .filter_map(|(id, p)| match p {
                PeerClock::Off(offset) => Some((*id, *offset)),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|(id, p)| match p {
                PeerClock::Unknown => format!("node {id}: no recent reading"),
                PeerClock::Agrees(o) => format!("node {id}: {}", offset_text(*o)),
                PeerClock::Off(o) => format!("node {id}: {} (beyond the bound)", offset_text(*o)),
            })
            .collect();
        write!(
            f,
            "{} of {} voters agree within {} ms ({} needed); {}",
            self.agreeing,
            self.peers.len() + 1,
            self.skew_max_ms,
            self.quorum,
            peers.join(", ")
        )
    }
}

/// `+3m12.5s` style: a peer clock's offset from this node's, in ms.
pub fn offset_text(offset_ms: i64) -> String {
    let sign = if offset_ms < 0 { '-' } else { '+' };
    // Rounded to the tenth of a second shown, so 59.96 s reads 1m0.0s.
    let ms = offset_ms.unsigned_abs().saturating_add(50) / 100 * 100;
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let (hours, rest) = (rest / 3_600_000, rest % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = rest as f64 / 1000.0;
    let mut text = String::from(sign);
    if days > 0 {
        text.push_str(&format!("{days}d"));
    }
    if days > 0 || hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if days > 0 || hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&format!("{seconds:.1}s"));
    text
}

/// What this node knows of its peers' clocks.
pub struct Clock {
    node_id: u64,
    // std Mutex: replaced on a membership change, copied by `judge`.
    voters: Mutex<Vec<u64>>,
    skew_max_ms: u64,
    // std Mutex: one insert or a copy of three entries, never across `.await`.
    samples: Mutex<BTreeMap<u64, Sample>>,
}

impl Clock {
    /// A clock for `node_id` among `voters` (this node included), judged
    /// against `skew_max_ms`.
    pub fn new(node_id: u64, voters: Vec<u64>, skew_max_ms: u64) -> Clock {
        Clock {
            node_id,
            voters: Mutex::new(voters),
            skew_max_ms,
            samples: Mutex::default(),
        }
    }

    /// The voters from now on (after a membership change), this node
    /// included if it is one.
    pub fn set_voters(&self, voters: Vec<u64>) {
        *self.voters.lock().unwrap_or_else(|p| p.into_inner()) = voters;
    }

    /// The bound clocks are judged against.
    pub fn skew_max_ms(&self) -> u64 {
        self.skew_max_ms
    }

    /// Files a reading of `peer`'s clock, `peer_wall_ms`, answered to a
    /// request sent at `sent_boot_ms` and answered at `answered_boot_ms`
    /// (boot-time clock). A reading from a slow round trip is dropped.
    pub fn record(&self, peer: u64, peer_wall_ms: u64, sent_boot_ms: u64, answered_boot_ms: u64) {
        if peer_wall_ms == 0 || answered_boot_ms.saturating_sub(sent_boot_ms) > SAMPLE_RTT_MAX_MS {
            return;
        }
        let sample = Sample {
            peer_wall_ms,
            boot_ms: sent_boot_ms + answered_boot_ms.saturating_sub(sent_boot_ms) / 2,
        };
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, sample);
    }

    /// This node's clock against its peers', now.
    pub fn judge(&self) -> Verdict {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let voters = self
            .voters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        judge(
            self.node_id,
            &voters,
            &samples,
            self.skew_max_ms,
            wall_ms(),
            boottime_ms(),
        )
    }

    /// The time to stamp a batch with: this node's wall clock, if it agrees
    /// with a majority; otherwise why not.
    pub fn stamp(&self) -> Result<u64, Verdict> {
        let verdict = self.judge();
        if verdict.ok() {
            Ok(wall_ms())
        } else {
            Err(verdict)
        }
    }
}

/// [`Clock::judge`] on explicit inputs: `wall_ms` and `boot_ms` are this
/// node's wall and boot-time clocks now.
pub fn judge(
    node_id: u64,
    voters: &[u64],
    samples: &BTreeMap<u64, Sample>,
    skew_max_ms: u64,
    wall_ms: u64,
    boot_ms: u64,
) -> Verdict {
    let mut peers = BTreeMap::new();
    let mut agreeing = usize::from(voters.contains(&node_id));
    for &peer in voters.iter().filter(|&&v| v != node_id) {
        let clock = match samples.get(&peer) {
            Some(s) if boot_ms.saturating_sub(s.boot_ms) <= SAMPLE_AGE_MAX_MS => {
                // The peer's clock now, projected on this node's boot-time clock.
                let peer_now =
                    i128::from(s.peer_wall_ms) + (i128::from(boot_ms) - i128::from(s.boot_ms));
                let offset = (peer_now - i128::from(wall_ms))
                    .clamp(i128::from(i64::MIN), i128::from(i64::MAX))
                    as i64;
                if offset.unsigned_abs() <= skew_max_ms {
                    agreeing += 1;
                    PeerClock::Agrees(offset)
                } else {
                    PeerClock::Off(offset)
                }
            }
            _ => PeerClock::Unknown,
        };
        peers.insert(peer, clock);
    }
    Verdict {
        skew_max_ms,
        peers,
        agreeing,
        quorum: voters.len() / 2 + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: u64 = 120_000;
    const WALL: u64 = 1_800_000_000_000;
    const BOOT: u64 = 50_000;

    fn sample(offset: i64, age_ms: u64) -> Sample {
        Sample {
            peer_wall_ms: (WALL - age_ms).saturating_add_signed(offset),
            boot_ms: BOOT - age_ms,
        }
    }

    fn verdict(samples: &[(u64, Sample)], wall: u64) -> Verdict {
        let samples = samples.iter().copied().collect();
        judge(1, &[1, 2, 3], &samples, BOUND, wall, BOOT)
    }

    #[test]
    fn agreeing_peers_make_a_majority() {
        let v = verdict(&[(2, sample(500, 100)), (3, sample(-90_000, 4_000))], WALL);
        assert_eq!(v.peers[&2], PeerClock::Agrees(500));
        assert_eq!(v.peers[&3], PeerClock::Agrees(-90_000));
        assert!(v.ok() && !v.condemned());
    }

    // One agreeing peer of two is a majority of three; the odd peer is named.
    #[test]
    fn one_peer_off_is_reported_but_this_node_serves() {
        let year = 365 * 86_400_000;
        let v = verdict(&[(2, sample(year, 100)), (3, sample(10, 100))], WALL);
        assert!(v.ok());
        assert_eq!(v.off(), vec![(2, year)]);
        assert!(
            v.to_string()
                .contains("node 2: +365d0h0m0.0s (beyond the bound)")
        );
    }

    // This node's clock jumped a year ahead after the samples were taken: the
    // projection on the boot-time clock shows it at once, both peers are off.
    #[test]
    fn a_jump_of_this_nodes_clock_shows_at_once() {
        let year = 365 * 86_400_000u64;
        let samples = [(2, sample(0, 100)), (3, sample(0, 100))];
        assert!(verdict(&samples, WALL).ok());
        let v = verdict(&samples, WALL + year);
        assert!(!v.ok() && v.condemned());
        assert_eq!(v.off(), vec![(2, -(year as i64)), (3, -(year as i64))]);
        // A jump back just as well.
        assert!(verdict(&samples, WALL - 3 * BOUND).condemned());
        // Within the bound it still agrees.
        assert!(verdict(&samples, WALL + BOUND).ok());
    }

    // Stale or missing samples are unknown: not a majority, not condemned.
    #[test]
    fn unknown_peers_neither_agree_nor_condemn() {
        let v = verdict(&[(2, sample(0, SAMPLE_AGE_MAX_MS + 1))], WALL);
        assert_eq!(v.peers[&2], PeerClock::Unknown);
        assert_eq!(v.peers[&3], PeerClock::Unknown);
        assert!(!v.ok() && !v.condemned());
        // One peer off and one unknown: this node cannot tell which clock is wrong.
        let v = verdict(&[(2, sample(10 * BOUND as i64, 10))], WALL);
        assert!(!v.ok() && !v.condemned());
    }

    #[test]
    fn slow_round_trips_are_not_filed() {
        let clock = Clock::new(1, vec![1, 2, 3], BOUND);
        clock.record(2, WALL, 1_000, 1_000 + SAMPLE_RTT_MAX_MS + 1);
        clock.record(3, 0, 1_000, 1_001);
        assert!(clock.samples.lock().unwrap().is_empty());
        clock.record(2, WALL, 1_000, 1_010);
        assert_eq!(
            clock.samples.lock().unwrap()[&2],
            Sample {
                peer_wall_ms: WALL,
                boot_ms: 1_005
            }
        );
    }

    #[test]
    fn offsets_read_well() {
        assert_eq!(offset_text(0), "+0.0s");
        assert_eq!(offset_text(-1_500), "-1.5s");
        assert_eq!(offset_text(192_500), "+3m12.5s");
        assert_eq!(offset_text(-(3 * 3_600_000 + 5_000)), "-3h0m5.0s");
        assert_eq!(offset_text(59_960), "+1m0.0s");
        assert_eq!(offset_text(i64::MIN), "-106751991167d7h12m55.8s");
    }
}
