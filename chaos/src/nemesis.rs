//! The nemesis: a seeded schedule of faults, one at a time, each healed
//! before the next.
//!
//! Fault types (`--faults`):
//! - `kill` — SIGKILL one node (the active one or one at random), restart it
//!   on the same data after a while;
//! - `pause` — SIGSTOP a node (the active one 70 % of the time, else a
//!   follower) for longer than the election timeout, and one pause in five
//!   for longer than the session TTL, then SIGCONT (it must not answer from
//!   before its pause);
//! - `partition` — through the proxies: `isolate` (a node cut off both
//!   ways), `one-way` (a node cannot reach one or both peers, but they reach
//!   it), `ring` (each node reaches only its successor: every node sees a
//!   different majority), `bridge` (two nodes cannot talk, the third talks to
//!   both), `delay` (every link delayed), `jitter` (every link delayed by a
//!   different amount per chunk), `freeze` (a node's links stall both ways
//!   without closing), `slow` (every link 80–140 ms late for longer than the
//!   session TTL: the quorum lease cannot be renewed, yet heartbeats arrive,
//!   so service stops without an election and comes back in the same term —
//!   the sessions must not be billed for the outage); a cut link refuses or
//!   black-holes new connections at random; with `--netns`, `isolate` sets
//!   the node host's link down instead (its clients lose it too);
//! - `restart` — a graceful stop (SIGTERM) of one node and a start;
//! - `kill-all` — SIGKILL of every node, then all restarted on their data;
//! - `power` — the power fails on one node or on every node at once: every
//!   write not yet synced is dropped from its disk (see [`crate::powerfs`]),
//!   the process dies, and it restarts on what its disk kept;
//! - `clock` — one node's wall clock (the active one 60 % of the time) jumps
//!   forward or back by minutes, days or years (now and then by less than
//!   the nodes' clock bound), stays there for a while, and jumps back; it
//!   needs a raftlm built with the feature fault-injection, and the run
//!   carries dated licenses whose expiry the checker judges;
//! - `isolate` — the active node cut off from every peer for 1–4 s (what
//!   `partition/isolate` does now and then, every time);
//! - `overlap` — faults on top of each other: a partition that heals while
//!   another node is paused; a kill of the active node and then, during the
//!   new leader's `L + M` wait, of another node; or successive kills of each
//!   new active node (each restarted as the next goes down).
//!
//! With five nodes (`--nodes 5`) a majority survives two nodes down, so
//! faults take up to two at once: half the kills, pauses and power cuts of
//! one node take a second node with them, and a third of the partitions are
//! a 2|3 split (two nodes, the active one 60 % of the time, cut off from the
//! other three). Their names end in `/two-nodes` (`kill/two-nodes`,
//! `pause/two-nodes`, `power/two-nodes`, `partition/two-nodes`), so the
//! report counts them, and their unavailability, apart. With three nodes
//! nothing of this is drawn, and a seed replays the schedule it always did.
//!
//! Faults are drawn from a shuffled deck of the enabled types, so every
//! type appears once before any appears twice (a type listed twice is in
//! the deck twice, and so drawn twice as often). Every random choice comes
//! from the seed: the schedule (quiet times, the deck's order) from one
//! stream, and each fault's own choices (its target, whether it aims at the
//! active node, durations, kinds) from a stream of its own, seeded by the
//! seed and the fault's number. What a fault aimed at the *active* node hits
//! depends on the run (which node won the election), and is recorded.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::cluster::{Cluster, label};
use crate::history::{Event, EventType, History, OpKind};
use crate::proxy::{Link, Proxies};

/// How long after a power cut's restart, once a node serves, the harness
/// asks every node for its log and state digests again: the restarted
/// nodes have written by then (a leader that lost its tail writes new
/// entries where its followers hold others).
pub const LOG_SETTLE: Duration = Duration::from_secs(3);

/// A type of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL one node, restart it later.
    Kill,
    /// SIGSTOP the active node past the election timeout, then SIGCONT.
    Pause,
    /// Cut or delay links through the proxies.
    Partition,
    /// SIGTERM one node and start it again.
    Restart,
    /// SIGKILL every node, restart them all.
    KillAll,
    /// Power cut of one node or all: unsynced writes lost, then a restart.
    Power,
    /// One node's wall clock jumps by minutes to years, then back.
    Clock,
    /// Faults on top of each other.
    Overlap,
    /// The active node cut off from every peer (a `partition/isolate` aimed
    /// at the active node every time): the sharpest test of the lease.
    Isolate,
}

impl FaultKind {
    /// Every fault type.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Restart,
        FaultKind::KillAll,
        FaultKind::Power,
        FaultKind::Clock,
        FaultKind::Overlap,
        FaultKind::Isolate,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Restart => "restart",
            FaultKind::KillAll => "kill-all",
            FaultKind::Power => "power",
            FaultKind::Clock => "clock",
            FaultKind::Overlap => "overlap",
            FaultKind::Isolate => "isolate",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault \"{s}\": use kill, pause, partition, restart, kill-all, power, clock, overlap or isolate"
                )
            })
    }
}

/// How the nemesis behaves.
#[derive(Debug, Clone)]
pub struct NemesisSpec {
    /// Fault types to draw from.
    pub faults: Vec<FaultKind>,
    /// Seeds every choice.
    pub seed: u64,
    /// The nodes' `election_timeout_max_ms`: pauses last longer than this.
    pub election_timeout_max_ms: u64,
    /// The nodes' session TTL: long pauses and `slow` links outlast it.
    pub session_ttl_ms: u64,
    /// The nodes' `lease_ms + lease_margin_ms`: a new leader's wait.
    pub lease_wait_ms: u64,
}

/// The nemesis.
pub struct Nemesis {
    spec: NemesisSpec,
    /// The schedule: quiet times and the order of fault types.
    schedule: StdRng,
    /// The current fault's own choices (targets, durations, kinds), seeded
    /// afresh for every fault from the seed and the fault's number, so that
    /// what one fault drew never shifts the next.
    rng: StdRng,
    deck: Vec<FaultKind>,
    faults: u64,
    /// Host links cut on a LAN (`--netns`).
    link_cuts: u64,
    /// Every node's recent log and state digests, asked after each power cut.
    log_views: Vec<crate::checker::LogView>,
    /// Power cuts so far, and the nodes they left with a lost log tail.
    power_cuts: PowerCuts,
}

/// Power cuts, and what they took (see [`crate::tail`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerCuts {
    /// Cuts of every node at once.
    pub every_node: u64,
    /// Cuts of one node.
    pub one_node: u64,
    /// Cuts of two nodes at once (five-node runs).
    pub two_nodes: u64,
    /// Nodes that came back with their log ending below what they had
    /// applied, each with the fault it came from.
    pub tail_losses: Vec<String>,
}

impl PowerCuts {
    /// The report's line.
    pub fn line(&self) -> String {
        let leaders = self
            .tail_losses
            .iter()
            .filter(|l| l.contains("(active)"))
            .count();
        let two = if self.two_nodes > 0 {
            format!("{} of two nodes, ", self.two_nodes)
        } else {
            String::new()
        };
        let mut line = format!(
            "{} of every node, {two}{} of one node; nodes back with a lost log tail: {} (the active node: {leaders})",
            self.every_node,
            self.one_node,
            self.tail_losses.len()
        );
        for loss in &self.tail_losses {
            line.push_str("\n  ");
            line.push_str(loss);
        }
        line
    }
}

/// The fewest nodes at which the nemesis takes two down at once: a
/// majority is left (three of five). A three-node run never draws for it,
/// so its schedule is what it was before five-node runs existed.
pub const TWO_NODE_FAULTS_FROM: usize = 5;

/// With [`TWO_NODE_FAULTS_FROM`] nodes or more, the chance that a kill, a
/// pause or a power cut of one node takes a second node with it.
pub const TWO_NODE_CHANCE: f64 = 0.5;

/// With [`TWO_NODE_FAULTS_FROM`] nodes or more, the chance that a partition
/// is a 2|3 split.
pub const SPLIT_CHANCE: f64 = 0.35;

/// The partition variant that is a 2|3 split (the others are 0–7).
const SPLIT: u32 = 8;

/// The suffix of the name of a fault on two nodes at once (`kill/two-nodes`,
/// `pause/two-nodes`, `power/two-nodes`, `partition/two-nodes`): the report
/// counts them apart.
pub const TWO_NODES: &str = "/two-nodes";

/// A fault's name and nodes: `kind` on `node`, or `kind/two-nodes` on
/// `node` and `second`.
fn named(kind: &'static str, node: usize, second: Option<usize>) -> (&'static str, Vec<usize>) {
    match second {
        None => (kind, vec![node]),
        Some(second) => {
            let name = match kind {
                "kill" => "kill/two-nodes",
                "pause" => "pause/two-nodes",
                _ => "power/two-nodes",
            };
            (name, vec![node, second])
        }
    }
}

/// ` and n4` for a second node, else nothing.
fn and(second: Option<usize>) -> String {
    second.map_or_else(String::new, |s| format!(" and {}", label(s)))
}

/// `n1,n4`.
fn labels(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|&i| label(i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Most a pause lasts beyond its base (the election timeout, or the session
/// TTL): long enough to outlast an election, short enough that a run sees
/// many.
pub const PAUSE_EXTRA_MAX_MS: u64 = 2500;

/// The longest pause the nemesis makes (see [`PAUSE_EXTRA_MAX_MS`]).
pub fn longest_pause(session_ttl_ms: u64, election_timeout_max_ms: u64) -> Duration {
    Duration::from_millis(session_ttl_ms.max(election_timeout_max_ms) + PAUSE_EXTRA_MAX_MS)
}

fn ms(rng: &mut StdRng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.gen_range(from..to))
}

impl Nemesis {
    /// A nemesis with its own generator.
    pub fn new(spec: NemesisSpec) -> Nemesis {
        Nemesis {
            schedule: StdRng::seed_from_u64(spec.seed),
            rng: StdRng::seed_from_u64(spec.seed),
            spec,
            deck: Vec::new(),
            faults: 0,
            link_cuts: 0,
            power_cuts: PowerCuts::default(),
            log_views: Vec::new(),
        }
    }

    /// Host links cut so far (`--netns` runs).
    pub fn link_cuts(&self) -> u64 {
        self.link_cuts
    }

    /// The power cuts so far.
    pub fn power_cuts(&self) -> &PowerCuts {
        &self.power_cuts
    }

    /// Counts a power cut of `nodes` of `n`, and the log tails it took.
    pub fn count_power_cut(
        &mut self,
        nodes: usize,
        n: usize,
        fault: &str,
        losses: &[crate::tail::TailLoss],
    ) {
        if nodes == n {
            self.power_cuts.every_node += 1;
        } else if nodes == 2 {
            self.power_cuts.two_nodes += 1;
        } else {
            self.power_cuts.one_node += 1;
        }
        self.power_cuts
            .tail_losses
            .extend(losses.iter().map(|l| format!("{fault}: {l}")));
    }

    /// The nodes' logs and state digests asked after each power cut so far
    /// (see [`crate::node_info::log_views`]); taken out.
    pub fn take_log_views(&mut self) -> Vec<crate::checker::LogView> {
        std::mem::take(&mut self.log_views)
    }

    /// Cuts node `node` off from every peer: on a LAN its host's link goes
    /// down (clients lose it too, and it cannot answer ARP); on loopback its
    /// proxies cut the peer links with `cut`. Returns how, for the history.
    fn cut_off(
        &mut self,
        cluster: &Cluster,
        proxies: &Proxies,
        node: usize,
        cut: Link,
    ) -> &'static str {
        if let Some(lan) = &cluster.spec.netns {
            lan.link(node + 1, false);
            self.link_cuts += 1;
            return "host link down";
        }
        for other in (0..cluster.len()).filter(|&o| o != node) {
            proxies.set_both(node, other, cut);
        }
        match cut {
            Link::Down { blackhole: true } => "black-holed",
            _ => "refused",
        }
    }

    /// Heals every link: the proxies' and, on a LAN, the hosts'.
    fn heal(cluster: &Cluster, proxies: &Proxies) {
        proxies.heal();
        if let Some(lan) = &cluster.spec.netns {
            for id in 1..=cluster.len() {
                if !lan.link_up(id) {
                    lan.link(id, true);
                }
            }
        }
    }

    /// Injects faults until `until`; every fault is healed before it returns.
    pub async fn run(
        &mut self,
        cluster: &mut Cluster,
        proxies: &Proxies,
        history: &History,
        until: Instant,
    ) -> anyhow::Result<()> {
        if self.spec.faults.is_empty() {
            tokio::time::sleep_until(until).await;
            return Ok(());
        }
        loop {
            let quiet = ms(&mut self.schedule, 500, 2000);
            if Instant::now() + quiet >= until {
                tokio::time::sleep_until(until).await;
                return Ok(());
            }
            tokio::time::sleep(quiet).await;
            if self.deck.is_empty() {
                self.deck = self.spec.faults.clone();
                self.deck.shuffle(&mut self.schedule);
            }
            let kind = self.deck.pop().unwrap_or(FaultKind::Kill);
            self.faults += 1;
            self.rng = StdRng::seed_from_u64(crate::workload::mix(self.spec.seed, self.faults));
            self.inject(kind, cluster, proxies, history).await?;
            // On a LAN, the hosts restart what their watchdog killed
            // (Restart=on-failure) once the fault is over.
            let restarted = cluster.supervise()?;
            if restarted > 0 {
                Self::record(
                    history,
                    kind.name(),
                    "host",
                    "",
                    &format!(
                        "{restarted} node(s) the host watchdog killed started again (Restart=on-failure)"
                    ),
                );
            }
        }
    }

    /// With [`TWO_NODE_FAULTS_FROM`] nodes or more, a second node other
    /// than `node` with probability [`TWO_NODE_CHANCE`]; with fewer, `None`
    /// and nothing drawn.
    fn second(&mut self, n: usize, node: usize) -> Option<usize> {
        if n < TWO_NODE_FAULTS_FROM || !self.rng.gen_bool(TWO_NODE_CHANCE) {
            return None;
        }
        Some((node + self.rng.gen_range(1..n)) % n)
    }

    /// A 2|3 split (`partition/two-nodes`): a node (the active one 60 % of
    /// the time) and another cut off from the other three, which keep a
    /// majority; the two still reach each other.
    async fn split(
        &mut self,
        cluster: &mut Cluster,
        proxies: &Proxies,
        cut: Link,
        how: &str,
    ) -> (&'static str, String, String) {
        let n = cluster.len();
        let (node, active) = self.target(cluster, 0.6).await;
        let other = (node + self.rng.gen_range(1..n)) % n;
        let minority = [node, other];
        let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
        for &a in &minority {
            for &b in &majority {
                proxies.set_both(a, b, cut);
            }
        }
        (
            "partition/two-nodes",
            labels(&minority),
            format!(
                "{}{} and {} cut off from {} ({how}): a {}|{} split",
                label(node),
                if active { " (active)" } else { "" },
                label(other),
                labels(&majority),
                minority.len(),
                majority.len()
            ),
        )
    }

    /// The active node (if any answers quickly) or, with probability `1 - p_active`, a random one.
    async fn target(&mut self, cluster: &mut Cluster, p_active: f64) -> (usize, bool) {
        let random = self.rng.gen_range(0..cluster.len());
        let want_active = self.rng.gen_bool(p_active);
        if want_active && let Some((active, _)) = cluster.active(Duration::from_millis(300)).await {
            return (active, true);
        }
        (random, false)
    }

    fn record(history: &History, fault: &str, phase: &str, nodes: &str, detail: &str) {
        let mut event = Event::new("nemesis", EventType::Info, OpKind::Nemesis, 0);
        event.fault = Some(fault.to_string());
        event.node = Some(nodes.to_string()).filter(|n| !n.is_empty());
        event.detail = Some(format!("{phase}: {detail}"));
        history.record(event);
    }

    /// Injects one fault of `kind`, waits, heals.
    async fn inject(
        &mut self,
        kind: FaultKind,
        cluster: &mut Cluster,
        proxies: &Proxies,
        history: &History,
    ) -> anyhow::Result<()> {
        match kind {
            FaultKind::Kill => {
                let (node, active) = self.target(cluster, 0.6).await;
                let second = self.second(cluster.len(), node);
                let down = ms(&mut self.rng, 500, 3000);
                let what = format!(
                    "kill -9 {}{}{}, restart after {down:?}",
                    label(node),
                    if active { " (active)" } else { "" },
                    and(second)
                );
                let (name, nodes) = named("kill", node, second);
                let names = labels(&nodes);
                Self::record(history, name, "start", &names, &what);
                for &i in &nodes {
                    cluster.kill(i);
                }
                tokio::time::sleep(down).await;
                for &i in &nodes {
                    cluster.start(i)?;
                }
                Self::record(history, name, "end", &names, &what);
            }
            FaultKind::Pause => {
                let (node, active) = self.target(cluster, 0.7).await;
                let second = self.second(cluster.len(), node);
                let base = if self.rng.gen_bool(0.2) {
                    self.spec.session_ttl_ms
                } else {
                    self.spec.election_timeout_max_ms
                };
                let paused =
                    Duration::from_millis(base) + ms(&mut self.rng, 200, PAUSE_EXTRA_MAX_MS);
                let what = format!(
                    "SIGSTOP {}{}{} for {paused:?}, then SIGCONT",
                    label(node),
                    if active { " (active)" } else { "" },
                    and(second)
                );
                let (name, nodes) = named("pause", node, second);
                let names = labels(&nodes);
                Self::record(history, name, "start", &names, &what);
                for &i in &nodes {
                    cluster.pause(i);
                }
                tokio::time::sleep(paused).await;
                for &i in &nodes {
                    cluster.resume(i);
                }
                Self::record(history, name, "end", &names, &what);
            }
            FaultKind::Partition => {
                let hold = ms(&mut self.rng, 1000, 5000);
                let blackhole = self.rng.gen_bool(0.5);
                let cut = Link::Down { blackhole };
                let how = if blackhole { "black-holed" } else { "refused" };
                let n = cluster.len();
                let mut hold = hold;
                // With three nodes nothing is drawn for the split.
                let split = n >= TWO_NODE_FAULTS_FROM && self.rng.gen_bool(SPLIT_CHANCE);
                let variant = if split {
                    SPLIT
                } else {
                    self.rng.gen_range(0..8)
                };
                let (name, nodes, what) = match variant {
                    SPLIT => self.split(cluster, proxies, cut, how).await,
                    0 => {
                        let (node, active) = self.target(cluster, 0.6).await;
                        let how = self.cut_off(cluster, proxies, node, cut);
                        (
                            "partition/isolate",
                            label(node),
                            format!(
                                "{}{} cut off from every peer ({how})",
                                label(node),
                                if active { " (active)" } else { "" }
                            ),
                        )
                    }
                    1 => {
                        let (from, active) = self.target(cluster, 0.5).await;
                        let both = self.rng.gen_bool(0.5);
                        let to = (from + self.rng.gen_range(1..n)) % n;
                        let targets: Vec<usize> = if both {
                            (0..n).filter(|&o| o != from).collect()
                        } else {
                            vec![to]
                        };
                        for &t in &targets {
                            proxies.set(from, t, cut);
                        }
                        let names: Vec<String> = targets.iter().map(|&t| label(t)).collect();
                        (
                            "partition/one-way",
                            label(from),
                            format!(
                                "{}{} cannot reach {} ({how}); the reverse direction works",
                                label(from),
                                if active { " (active)" } else { "" },
                                names.join(" and ")
                            ),
                        )
                    }
                    2 => {
                        for i in 0..n {
                            proxies.set(i, (i + n - 1) % n, cut);
                        }
                        (
                            "partition/ring",
                            String::new(),
                            format!(
                                "majorities ring: each node reaches only its successor ({how})"
                            ),
                        )
                    }
                    3 => {
                        let middle = self.rng.gen_range(0..n);
                        let ends: Vec<usize> = (0..n).filter(|&o| o != middle).collect();
                        for (k, &a) in ends.iter().enumerate() {
                            for &b in &ends[k + 1..] {
                                proxies.set_both(a, b, cut);
                            }
                        }
                        (
                            "partition/bridge",
                            label(middle),
                            format!(
                                "bridge through {}: the other nodes cannot talk to each other ({how})",
                                label(middle)
                            ),
                        )
                    }
                    4 => {
                        let delay = ms(&mut self.rng, 20, 200);
                        proxies.set_all(Link::Delayed(delay));
                        (
                            "partition/delay",
                            String::new(),
                            format!("every link delayed by {delay:?} each way"),
                        )
                    }
                    5 => {
                        let mut spreads = Vec::new();
                        for from in 0..n {
                            for to in (0..n).filter(|&t| t != from) {
                                let max = ms(&mut self.rng, 10, 120);
                                proxies.set(
                                    from,
                                    to,
                                    Link::Jittered {
                                        min: Duration::ZERO,
                                        max,
                                    },
                                );
                                spreads.push(format!(
                                    "{}→{} 0–{}",
                                    label(from),
                                    label(to),
                                    max.as_millis()
                                ));
                            }
                        }
                        (
                            "partition/jitter",
                            String::new(),
                            format!("every link jittered per chunk (ms: {})", spreads.join(", ")),
                        )
                    }
                    6 => {
                        let (node, active) = self.target(cluster, 0.6).await;
                        for other in (0..n).filter(|&o| o != node) {
                            proxies.set_both(node, other, Link::Frozen);
                        }
                        (
                            "partition/freeze",
                            label(node),
                            format!(
                                "{}{}'s links stalled both ways, connections left open",
                                label(node),
                                if active { " (active)" } else { "" }
                            ),
                        )
                    }
                    _ => {
                        let delay = ms(&mut self.rng, 80, 140);
                        hold = Duration::from_millis(self.spec.session_ttl_ms)
                            + ms(&mut self.rng, 1000, 3000);
                        proxies.set_all(Link::Delayed(delay));
                        (
                            "partition/slow",
                            String::new(),
                            format!(
                                "every link delayed by {delay:?} each way, longer than the session TTL"
                            ),
                        )
                    }
                };
                let what = format!("{what}, for {hold:?}");
                Self::record(history, name, "start", &nodes, &what);
                tokio::time::sleep(hold).await;
                Self::heal(cluster, proxies);
                Self::record(history, name, "end", &nodes, &what);
            }
            FaultKind::Restart => {
                let (node, active) = self.target(cluster, 0.6).await;
                let what = format!(
                    "graceful restart (SIGTERM) of {}{}",
                    label(node),
                    if active { " (active)" } else { "" }
                );
                Self::record(history, "restart", "start", &label(node), &what);
                cluster.terminate(node).await;
                tokio::time::sleep(ms(&mut self.rng, 0, 1000)).await;
                cluster.start(node)?;
                Self::record(history, "restart", "end", &label(node), &what);
            }
            FaultKind::KillAll => {
                let down = ms(&mut self.rng, 0, 2000);
                let what = format!("kill -9 of every node, all restarted after {down:?}");
                Self::record(history, "kill-all", "start", "", &what);
                for node in 0..cluster.len() {
                    cluster.kill(node);
                }
                tokio::time::sleep(down).await;
                for node in 0..cluster.len() {
                    cluster.start(node)?;
                }
                Self::record(history, "kill-all", "end", "", &what);
            }
            FaultKind::Clock => {
                let (node, active) = self.target(cluster, 0.6).await;
                const MINUTE: i64 = 60_000;
                const DAY: i64 = 1_440 * MINUTE;
                let bound = crate::cluster::CLOCK_SKEW_MAX_MS as i64;
                let magnitude = match self.rng.gen_range(0..20) {
                    0..=2 => self.rng.gen_range(bound / 5..bound * 4 / 5),
                    3..=8 => self.rng.gen_range(2 * MINUTE..30 * MINUTE),
                    9..=14 => self.rng.gen_range(DAY..90 * DAY),
                    _ => self.rng.gen_range(365 * DAY..5 * 365 * DAY),
                };
                let jump = if self.rng.gen_bool(0.5) {
                    magnitude
                } else {
                    -magnitude
                };
                let hold = ms(&mut self.rng, 1000, 5000);
                let what = format!(
                    "wall clock of {}{} jumped by {}, back after {hold:?}",
                    label(node),
                    if active { " (active)" } else { "" },
                    raftlm::clock::offset_text(jump)
                );
                Self::record(history, "clock", "start", &label(node), &what);
                cluster.set_clock_jump(node, jump)?;
                tokio::time::sleep(hold).await;
                cluster.set_clock_jump(node, 0)?;
                Self::record(history, "clock", "end", &label(node), &what);
            }
            FaultKind::Overlap => self.overlap(cluster, proxies, history).await?,
            FaultKind::Isolate => {
                let (node, active) = self.target(cluster, 1.0).await;
                let hold = ms(&mut self.rng, 1000, 4000);
                let cut = Link::Down {
                    blackhole: self.rng.gen_bool(0.5),
                };
                let how = self.cut_off(cluster, proxies, node, cut);
                let what = format!(
                    "{}{} cut off from every peer ({how}), for {hold:?}",
                    label(node),
                    if active { " (active)" } else { "" }
                );
                Self::record(history, "isolate", "start", &label(node), &what);
                tokio::time::sleep(hold).await;
                Self::heal(cluster, proxies);
                Self::record(history, "isolate", "end", &label(node), &what);
            }
            FaultKind::Power => {
                let n = cluster.len();
                let (nodes, whom) = if self.rng.gen_bool(0.3) {
                    ((0..n).collect::<Vec<_>>(), "every node".to_string())
                } else {
                    let (node, active) = self.target(cluster, 0.6).await;
                    let second = self.second(n, node);
                    let whom = format!(
                        "{}{}{}",
                        label(node),
                        if active { " (active)" } else { "" },
                        and(second)
                    );
                    (named("power", node, second).1, whom)
                };
                let name = if nodes.len() == 2 {
                    "power/two-nodes"
                } else {
                    "power"
                };
                let down = ms(&mut self.rng, 500, 3000);
                let what =
                    format!("power cut of {whom}: unsynced writes dropped, restart after {down:?}");
                let names: Vec<String> = nodes.iter().map(|&i| label(i)).collect();
                let names = names.join(",");
                let watch = crate::tail::TailWatch::before(cluster, &nodes).await;
                Self::record(history, name, "start", &names, &what);
                let losses = cluster.power_cut(&nodes)?;
                let lost: Vec<String> = nodes
                    .iter()
                    .zip(&losses)
                    .map(|(&i, loss)| {
                        format!(
                            "{} lost {} KiB in {} files and {} names",
                            label(i),
                            loss.bytes / 1024,
                            loss.files,
                            loss.names
                        )
                    })
                    .collect();
                tokio::time::sleep(down).await;
                for &node in &nodes {
                    cluster.start(node)?;
                }
                let tails = watch.after(cluster).await;
                let fault = format!("fault {}", self.faults);
                self.count_power_cut(nodes.len(), n, &fault, &tails);
                let mut what = format!("{what}; {}", lost.join("; "));
                for tail in &tails {
                    what.push_str(&format!("; {tail}"));
                }
                Self::record(history, name, "end", &names, &what);
                // Every node's log ids, entry hashes and state digests, once
                // a node serves and again after the restarted ones wrote:
                // a leader that lost its tail may write other entries under
                // log ids its followers hold, which a later snapshot would
                // hide from the end-of-run checks.
                let cut = format!("fault {} (power cut of {names})", self.faults);
                let serving = cluster
                    .wait_ready(crate::cluster::READY_LIMIT)
                    .await
                    .is_some();
                let first = if serving {
                    "serving again"
                } else {
                    "no node serving"
                };
                self.log_views
                    .extend(crate::node_info::log_views(cluster, &format!("{cut}: {first}")).await);
                tokio::time::sleep(LOG_SETTLE).await;
                self.log_views.extend(
                    crate::node_info::log_views(
                        cluster,
                        &format!("{cut}: {} s later", LOG_SETTLE.as_secs()),
                    )
                    .await,
                );
            }
        }
        Ok(())
    }

    /// Faults on top of each other (`overlap`).
    async fn overlap(
        &mut self,
        cluster: &mut Cluster,
        proxies: &Proxies,
        history: &History,
    ) -> anyhow::Result<()> {
        let n = cluster.len();
        match self.rng.gen_range(0..3) {
            0 => {
                // A partition that starts and heals while another node is paused.
                let (paused, active) = self.target(cluster, 0.5).await;
                let isolated = (paused + self.rng.gen_range(1..n)) % n;
                let before = ms(&mut self.rng, 100, 600);
                let hold = ms(&mut self.rng, 500, 2000);
                let after = ms(&mut self.rng, 200, 1500);
                let what = format!(
                    "SIGSTOP {}{}; {before:?} later {} cut off from every peer for {hold:?}, healed; SIGCONT {after:?} after the heal",
                    label(paused),
                    if active { " (active)" } else { "" },
                    label(isolated)
                );
                let nodes = format!("{},{}", label(paused), label(isolated));
                Self::record(history, "overlap/pause-partition", "start", &nodes, &what);
                cluster.pause(paused);
                tokio::time::sleep(before).await;
                let cut = Link::Down {
                    blackhole: self.rng.gen_bool(0.5),
                };
                self.cut_off(cluster, proxies, isolated, cut);
                tokio::time::sleep(hold).await;
                Self::heal(cluster, proxies);
                tokio::time::sleep(after).await;
                cluster.resume(paused);
                Self::record(history, "overlap/pause-partition", "end", &nodes, &what);
            }
            1 => {
                // The active node dies; during the next leader's L + M wait
                // (an election timeout plus part of the wait later) another does.
                let (first, active) = self.target(cluster, 1.0).await;
                let second = (first + self.rng.gen_range(1..n)) % n;
                let gap = Duration::from_millis(
                    self.spec.election_timeout_max_ms
                        + self.rng.gen_range(0..self.spec.lease_wait_ms.max(1)),
                );
                let down = ms(&mut self.rng, 500, 2000);
                let what = format!(
                    "kill -9 {}{}, then {} {gap:?} later (in the new leader's L + M wait); both restarted after {down:?}",
                    label(first),
                    if active { " (active)" } else { "" },
                    label(second)
                );
                let nodes = format!("{},{}", label(first), label(second));
                Self::record(history, "overlap/kill-in-wait", "start", &nodes, &what);
                cluster.kill(first);
                tokio::time::sleep(gap).await;
                cluster.kill(second);
                tokio::time::sleep(down).await;
                cluster.start(first)?;
                cluster.start(second)?;
                Self::record(history, "overlap/kill-in-wait", "end", &nodes, &what);
            }
            _ => {
                // Each new active node is killed as soon as it serves, and the
                // one before it restarted, so a quorum can always form.
                let kills = self.rng.gen_range(2..=4);
                let what = format!("{kills} successive kills of each new active node");
                Self::record(history, "overlap/successive-kills", "start", "", &what);
                let mut down: Option<usize> = None;
                let mut killed = Vec::new();
                for _ in 0..kills {
                    let Some((active, _)) = cluster.active(Duration::from_millis(300)).await else {
                        // Nobody serves yet: look again shortly.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    cluster.kill(active);
                    killed.push(label(active));
                    if let Some(previous) = down.replace(active) {
                        cluster.start(previous)?;
                    }
                    let deadline = Instant::now() + Duration::from_secs(3);
                    while Instant::now() < deadline
                        && cluster.active(Duration::from_millis(300)).await.is_none()
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                tokio::time::sleep(ms(&mut self.rng, 200, 1500)).await;
                if let Some(last) = down {
                    cluster.start(last)?;
                }
                let what = format!("{what}: killed {}", killed.join(", "));
                Self::record(history, "overlap/successive-kills", "end", "", &what);
            }
        }
        Ok(())
    }
}
