//! The run's report: figures and verdicts, as text or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checker::{
    DrainFinding, InvariantResult, OutcomeCounts, ReplicaView, Unavailability, Verdict,
};
use crate::lan::Sampled;
use crate::nemesis::TWO_NODES;

/// One node's store, summarized for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSummary {
    /// The node (1-based).
    pub node: usize,
    /// The index the state was compared at.
    pub index: u64,
    /// The node's last log index.
    pub last_index: u64,
    /// The node's saved committed index.
    pub committed: Option<u64>,
    /// The node's snapshot index.
    pub snapshot_index: Option<u64>,
    /// Digest of the license state at `index`.
    pub digest: String,
    /// Grants in that state.
    pub grants: usize,
    /// Why it could not be read, if so.
    pub error: Option<String>,
}

impl From<&ReplicaView> for ReplicaSummary {
    fn from(v: &ReplicaView) -> ReplicaSummary {
        ReplicaSummary {
            node: v.node,
            index: v.index,
            last_index: v.last_index,
            committed: v.committed,
            snapshot_index: v.snapshot_index,
            digest: v.digest.clone(),
            grants: v.grants.len(),
            error: v.error.clone(),
        }
    }
}

/// What the sampler of a `--netns` run saw of the access point's address
/// (see [`crate::lan`]) and what the hosts' systemd side did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanFindings {
    /// Samples of every host's addresses and the client's neighbour table.
    pub samples: u64,
    /// The longest gap between two samples (the sampler's resolution), ms.
    pub longest_gap_ms: f64,
    /// Times the address went to another host.
    pub address_moves: u64,
    /// Spells in which two hosts with their link up held the address.
    pub doubles: u64,
    /// The longest such spell, ms.
    pub longest_double_ms: f64,
    /// The bound a double answer must stay within: the nodes' `lease_ms`.
    pub lease_ms: u64,
    /// Changes of the host the client's ARP entry points to.
    pub neighbour_changes: u64,
    /// The longest time the client's ARP entry pointed to a host other than
    /// the single holder, ms.
    pub longest_stale_neighbour_ms: f64,
    /// Nodes the hosts' watchdog killed (paused or wedged).
    pub watchdog_kills: u64,
    /// ExecStopPost runs (vip-down after a process ended).
    pub stop_posts: u64,
    /// Host links cut (a veth set down).
    pub link_cuts: u64,
    /// Every double answer longer than the lease, described.
    pub beyond_lease: Vec<String>,
    /// The first [`DOUBLE_SPELLS_LISTED`] double answers of any length:
    /// (ms after sampling began, which started with the history; ms long).
    #[serde(default)]
    pub double_spells: Vec<(u64, f64)>,
}

/// Double answers listed one by one in [`LanFindings::double_spells`].
pub const DOUBLE_SPELLS_LISTED: usize = 20;

impl LanFindings {
    /// The findings from what the sampler saw (`lease_ms`: the bound on a
    /// double answer) and the hosts' and nemesis's counts.
    pub fn new(
        seen: &Sampled,
        lease_ms: u64,
        watchdog_kills: u64,
        stop_posts: u64,
        link_cuts: u64,
    ) -> LanFindings {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        LanFindings {
            samples: seen.samples,
            longest_gap_ms: ms(seen.longest_gap),
            address_moves: seen.address_moves() as u64,
            doubles: seen.doubles.len() as u64,
            longest_double_ms: ms(seen.longest_double),
            lease_ms,
            neighbour_changes: seen.neighbour.len().saturating_sub(1) as u64,
            longest_stale_neighbour_ms: ms(seen.longest_stale_neighbour),
            watchdog_kills,
            stop_posts,
            link_cuts,
            beyond_lease: seen
                .doubles
                .iter()
                .filter(|(_, d)| d.as_millis() > u128::from(lease_ms))
                .map(|(at, d)| {
                    format!(
                        "two hosts held the access point's address for {} ms, from {at} ms after sampling began",
                        d.as_millis()
                    )
                })
                .collect(),
            double_spells: seen
                .doubles
                .iter()
                .take(DOUBLE_SPELLS_LISTED)
                .map(|(at, d)| (*at, ms(*d)))
                .collect(),
        }
    }

    /// `one-host-answers-for-the-access-point`: two hosts never answer ARP
    /// for the access point's address at once for longer than the lease.
    pub fn invariant(&self) -> InvariantResult {
        let mut examples = self.beyond_lease.clone();
        if self.samples == 0 {
            examples.push("the sampler took no samples: nothing was checked".into());
        }
        InvariantResult {
            name: "one-host-answers-for-the-access-point".into(),
            passed: examples.is_empty(),
            checked: self.samples,
            violations: examples.len() as u64,
            examples,
        }
    }

    /// The report's one-line summary.
    pub fn line(&self) -> String {
        format!(
            "LAN in a box (3 node hosts, 1 client host, 198.51.100.0/24; the access point a real address moved by vip-up/vip-down): {} address moves; longest double answer {:.0} ms over {} spells (lease {} ms); client ARP entry changed {} times, longest stale {:.0} ms; {} watchdog kills, {} ExecStopPost runs, {} link cuts; {} samples, longest gap {:.0} ms",
            self.address_moves,
            self.longest_double_ms,
            self.doubles,
            self.lease_ms,
            self.neighbour_changes,
            self.longest_stale_neighbour_ms,
            self.watchdog_kills,
            self.stop_posts,
            self.link_cuts,
            self.samples,
            self.longest_gap_ms
        )
    }
}

/// Everything a run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The seed: replays every random choice.
    pub seed: u64,
    /// Nodes in the cluster (3 or 5).
    #[serde(default)]
    pub nodes: usize,
    /// The command line that replays this run.
    pub replay: String,
    /// Fault-injection time asked for, seconds.
    pub duration_s: f64,
    /// Wall time of the whole run (start-up and final checks included), seconds.
    pub elapsed_s: f64,
    /// Session workers.
    pub sessions: usize,
    /// Fault types enabled.
    pub faults_enabled: Vec<String>,
    /// Seats licensed per feature.
    pub licensed: BTreeMap<String, u32>,
    /// The raftlm binary run.
    pub binary: String,
    /// The run directory, if it was kept.
    pub run_dir: Option<String>,
    /// History events recorded.
    pub events: usize,
    /// Operations by kind and outcome.
    pub operations: BTreeMap<String, OutcomeCounts>,
    /// Faults injected, by type.
    pub faults: BTreeMap<String, u64>,
    /// Faults injected in all.
    pub faults_total: u64,
    /// Of them, faults on two nodes at once (named `…/two-nodes`; five-node runs).
    #[serde(default)]
    pub two_node_faults: u64,
    /// Invariants, each with its counter-examples.
    pub invariants: Vec<InvariantResult>,
    /// Time from each fault to the next answered check-out, per type.
    pub unavailability: BTreeMap<String, Unavailability>,
    /// Grants made (ok check-outs).
    pub grants: u64,
    /// Check-outs denied because the pool was exhausted.
    pub denied_in_use: u64,
    /// Most seats certainly held at once, per feature.
    pub peak_seats: BTreeMap<String, u32>,
    /// Each node's store after the run.
    pub replicas: Vec<ReplicaSummary>,
    /// The end-of-run drain: how long it waited and what it read.
    pub drain: Option<DrainFinding>,
    /// What the nodes' data directories are on.
    pub disk: String,
    /// Network namespaces: what the LAN in a box saw, or why there was none.
    pub network_namespaces: String,
    /// The nodes' logs and state digests asked after each power cut and at
    /// the end, and read from the stores (see [`crate::checker::LogView`]).
    #[serde(default)]
    pub log_views: String,
    /// Power cuts (of every node, of one) and the nodes they left with a
    /// lost log tail (see [`crate::tail`]); empty without power cuts.
    #[serde(default)]
    pub power_cuts: String,
    /// With `--netns`: the access point's address on the LAN through the run.
    #[serde(default)]
    pub lan: Option<LanFindings>,
    /// Violations over every invariant.
    pub violations: u64,
    /// Whether every invariant held.
    pub passed: bool,
    /// What the hostile client sent and was answered, when it ran.
    pub hostile: Option<crate::hostile::HostileStats>,
    /// Applications on raftlm's client library: how many, and their
    /// caching-mode over-use (`src/apps.rs`).
    pub apps: usize,
    /// Caching-mode over-use of the applications' grants.
    pub overuse: Option<crate::apps::Overuse>,
    /// Snapshots each node installed from the leader (`snapshot installed`
    /// lines in its log), node 1 first.
    pub snapshot_installs: Vec<u64>,
    /// Check-out attempts the cluster answered.
    #[serde(default)]
    pub checkouts_answered: u64,
    /// Sessions the workload ran.
    #[serde(default)]
    pub sessions_run: u64,
    /// Sessions expired while still heartbeating.
    #[serde(default)]
    pub live_sessions_expired: u64,
    /// Applications' sessions expired while the application was cut off.
    #[serde(default)]
    pub app_sessions_expired: u64,
}

impl Report {
    /// Fills the verdict's parts in.
    pub fn with_verdict(mut self, verdict: &Verdict, replicas: &[ReplicaView]) -> Report {
        self.operations = verdict.operations.clone();
        self.faults = verdict.faults.clone();
        self.faults_total = verdict.faults.values().sum();
        self.two_node_faults = verdict
            .faults
            .iter()
            .filter(|(name, _)| name.ends_with(TWO_NODES))
            .map(|(_, n)| n)
            .sum();
        self.invariants = verdict.invariants.clone();
        self.unavailability = verdict.unavailability.clone();
        self.grants = verdict.grants;
        self.denied_in_use = verdict.denied_in_use;
        self.peak_seats = verdict.peak_seats.clone();
        self.replicas = replicas.iter().map(ReplicaSummary::from).collect();
        self.drain = verdict.drain.clone();
        self.checkouts_answered = verdict.checkouts_answered;
        self.sessions_run = verdict.sessions;
        self.live_sessions_expired = verdict.live_sessions_expired;
        self.app_sessions_expired = verdict.app_sessions_expired;
        self.violations = verdict.violations();
        self.passed = self.violations == 0;
        self
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let nodes = if self.nodes > 3 {
            format!("{} nodes, ", self.nodes)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "raftlm-chaos: seed {}, {nodes}{:.0} s of faults ({:.0} s in all), {} sessions, faults {}",
            self.seed,
            self.duration_s,
            self.elapsed_s,
            self.sessions,
            self.faults_enabled.join(",")
        );
        let _ = writeln!(out, "replay: {}", self.replay);
        let licensed: Vec<String> = self
            .licensed
            .iter()
            .map(|(f, n)| format!("{f} {n} seats"))
            .collect();
        let _ = writeln!(
            out,
            "license: {}; {} grants made, {} check-outs denied (pool exhausted: {:.0} % of the {} answered), peak seats held {:?}",
            licensed.join(", "),
            self.grants,
            self.denied_in_use,
            100.0 * self.denied_in_use as f64 / self.checkouts_answered.max(1) as f64,
            self.checkouts_answered,
            self.peak_seats
        );
        let _ = writeln!(
            out,
            "sessions: {} run, {} expired by the cluster while still heartbeating, {} applications' sessions expired while cut off; snapshots installed from the leader per node: {:?}",
            self.sessions_run,
            self.live_sessions_expired,
            self.app_sessions_expired,
            self.snapshot_installs
        );
        let _ = writeln!(out, "\noperations ({} history events)", self.events);
        let _ = writeln!(
            out,
            "  {:<10} {:>7} {:>7} {:>8} {:>9} {:>17}",
            "", "ok", "fail", "unknown", "attempts", "unknown attempts"
        );
        for (kind, c) in &self.operations {
            let _ = writeln!(
                out,
                "  {:<10} {:>7} {:>7} {:>8} {:>9} {:>17}",
                kind, c.ok, c.fail, c.unknown, c.attempts, c.unknown_attempts
            );
        }
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "\nfaults injected: {} ({})",
            self.faults_total,
            faults.join(", ")
        );
        if self.nodes > 3 {
            let two: Vec<String> = self
                .faults
                .iter()
                .filter(|(k, _)| k.ends_with(TWO_NODES))
                .map(|(k, n)| format!("{} {n}", k.trim_end_matches(TWO_NODES)))
                .collect();
            let _ = writeln!(
                out,
                "faults on two nodes at once: {} ({}); on one node or every node: {}",
                self.two_node_faults,
                two.join(", "),
                self.faults_total - self.two_node_faults
            );
        }
        let _ = writeln!(out, "disk: {}", self.disk);
        let _ = writeln!(out, "network namespaces: {}", self.network_namespaces);
        if !self.log_views.is_empty() {
            let _ = writeln!(out, "logs and state digests: {}", self.log_views);
        }
        if !self.power_cuts.is_empty() {
            let _ = writeln!(out, "power cuts: {}", self.power_cuts);
        }
        if let Some(lan) = self.lan.as_ref().filter(|l| !l.double_spells.is_empty()) {
            let spells: Vec<String> = lan
                .double_spells
                .iter()
                .map(|(at, ms)| format!("{:.1} s: {ms:.0} ms", *at as f64 / 1000.0))
                .collect();
            let _ = writeln!(
                out,
                "  double answers (time into the run: length): {}",
                spells.join(", ")
            );
        }
        if let Some(drain) = &self.drain {
            let _ = writeln!(out, "{}", drain_line(drain));
        }
        let _ = writeln!(out, "\ninvariants");
        for i in &self.invariants {
            let _ = writeln!(
                out,
                "  {} {:<28} checked {:>6}, violations {}",
                if i.passed { "PASS" } else { "FAIL" },
                i.name,
                i.checked,
                i.violations
            );
            for example in &i.examples {
                let _ = writeln!(out, "       - {example}");
            }
        }
        let _ = writeln!(
            out,
            "\nunavailability: fault start → first answered check-out sent after it (ms)"
        );
        let _ = writeln!(
            out,
            "  {:<20} {:>6} {:>9} {:>8} {:>8} {:>8}",
            "fault", "count", "recovered", "p50", "p99", "max"
        );
        for (kind, u) in &self.unavailability {
            let _ = writeln!(
                out,
                "  {:<20} {:>6} {:>9} {:>8.0} {:>8.0} {:>8.0}",
                kind, u.faults, u.recovered, u.p50_ms, u.p99_ms, u.max_ms
            );
        }
        if let Some(o) = &self.overuse {
            let _ = writeln!(
                out,
                "\napplications ({} on raftlm's client library, each behind its own cut-off-able link):\n  \
                 caching-mode over-use: without grace {} of {} grants (must be 0); \
                 with a {} ms grace {} of {} grants, longest {} ms (bound: the grace)",
                self.apps,
                o.without_grace_overused,
                o.without_grace,
                o.grace_ms,
                o.with_grace_overused,
                o.with_grace,
                o.longest_ms
            );
        }
        match &self.hostile {
            None => {
                let _ = writeln!(out, "\nhostile client: off (--hostile runs one)");
            }
            Some(h) => {
                let _ = writeln!(
                    out,
                    "\nhostile client (requests from {}, idle sockets from {}, digest requests from {}; honest unavailability above is with it): {} requests, {} unexpected answers",
                    crate::hostile::SOURCE,
                    crate::hostile::IDLE_SOURCE,
                    crate::hostile::DIGEST_SOURCE,
                    h.requests,
                    h.violations
                );
                let _ = writeln!(
                    out,
                    "  {:<20} {:>9} {:>9} {:>10} {:>10}",
                    "kind", "sent", "expected", "unexpected", "no verdict"
                );
                for (kind, k) in &h.kinds {
                    let _ = writeln!(
                        out,
                        "  {kind:<20} {:>9} {:>9} {:>10} {:>10}",
                        k.sent, k.expected, k.unexpected, k.no_verdict
                    );
                }
                let i = &h.idle;
                if i.listeners > 0 {
                    let _ = writeln!(
                        out,
                        "  idle sockets: {} held open against {} listeners (client and peer plane of each node); dropped at once {}, dropped after holding {} (longest held {} ms, bound {} ms); connects refused or timed out {}",
                        i.sockets,
                        i.listeners,
                        i.dropped_at_once,
                        i.dropped_after_holding,
                        i.longest_held_ms,
                        i.held_max_ms,
                        i.connects_failed
                    );
                }
                let _ = writeln!(out, "  answers:");
                for (answer, n) in &h.answers {
                    let _ = writeln!(out, "    {answer:<48} {n:>7}");
                }
            }
        }
        let _ = writeln!(
            out,
            "\nreplicas (each node's own store, read after the run)"
        );
        for r in &self.replicas {
            match &r.error {
                Some(error) => {
                    let _ = writeln!(out, "  node {}: {error}", r.node);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  node {}: state at index {} digest {} ({} grants); log to {}, committed {:?}, snapshot {:?}",
                        r.node,
                        r.index,
                        r.digest,
                        r.grants,
                        r.last_index,
                        r.committed,
                        r.snapshot_index
                    );
                }
            }
        }
        if let Some(dir) = &self.run_dir {
            let _ = writeln!(out, "\nrun directory (history.jsonl, node logs): {dir}");
        }
        let _ = writeln!(
            out,
            "\nresult: {} ({} violations)",
            if self.passed { "PASS" } else { "FAIL" },
            self.violations
        );
        out
    }
}

/// The report's drain line: the wait and what the read found.
fn drain_line(drain: &DrainFinding) -> String {
    let plan = drain
        .plan
        .as_deref()
        .and_then(|p| p.rsplit_once("waiting "))
        .map_or("?", |(_, plan)| plan);
    let (Some(start), Some(read)) = (drain.started_us, drain.read_us) else {
        return format!("drain: planned wait {plan}; no drain read was answered");
    };
    let in_use: Vec<String> = drain
        .in_use
        .iter()
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    format!(
        "drain: clients stopped at {:.1} s; planned wait {plan} after a node served; read {:.1} s after the stop ({} read{}): {} grants, seats in use {}",
        start as f64 / 1e6,
        read.saturating_sub(start) as f64 / 1e6,
        drain.reads,
        if drain.reads == 1 { "" } else { "s" },
        drain.grants.len(),
        in_use.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // A double answer within the lease passes (the old holder may not have
    // run its down command yet); one beyond it is a violation, with where.
    #[test]
    fn only_double_answers_beyond_the_lease_are_violations() {
        let seen = Sampled {
            samples: 100,
            doubles: vec![
                (1_000, Duration::from_millis(40)),
                (5_000, Duration::from_millis(150)),
                (9_000, Duration::from_millis(420)),
            ],
            longest_double: Duration::from_millis(420),
            ..Sampled::default()
        };
        let findings = LanFindings::new(&seen, 150, 1, 4, 2);
        let invariant = findings.invariant();
        assert!(!invariant.passed);
        assert_eq!(invariant.violations, 1);
        assert_eq!(invariant.checked, 100);
        assert!(
            invariant.examples[0].contains("420 ms, from 9000 ms"),
            "{:?}",
            invariant.examples
        );
        assert_eq!(findings.doubles, 3);
        assert_eq!(findings.double_spells[2], (9_000, 420.0));
        assert_eq!(findings.longest_double_ms, 420.0);

        let calm = Sampled {
            samples: 10,
            ..Sampled::default()
        };
        let calm = LanFindings::new(&calm, 150, 0, 0, 0);
        assert!(calm.invariant().passed);
        // A sampler that saw nothing proves nothing.
        let blind = LanFindings::new(&Sampled::default(), 150, 0, 0, 0);
        assert!(!blind.invariant().passed);
        assert!(calm.line().contains("0 address moves"), "{}", calm.line());
    }
}
