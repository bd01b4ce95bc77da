//! Scenario scripts for the activator's core (`src/activator/core.rs`):
//! each file in `tests/data/activator/` is a list of inputs, each followed by
//! the actions the core returned for it. The test replays the inputs and
//! compares the actions with the file; `RAFTLM_UPDATE_SCRIPTS=1 cargo test
//! --test activator_scripts` writes what the core does now instead (review
//! the diff before committing it).
//!
//! Format, one item per line:
//! - `# ...` a comment, and blank lines, kept as they are;
//! - `settings heartbeat=100 lease=250 margin=100 election_max=800 mode=command` (first;
//!   `mode` is `bind`, `command` or `none`);
//! - `> NOW INPUT`, an input at boot-time ms `NOW`: `raft leader term=N
//!   [leader=ID]`, `raft follower term=N [leader=ID]` (the leader this node
//!   knows, if any), `tick [clock=agrees|unknown|condemned]
//!   [silence=MS] [jitter=MS]` (defaults: agrees, 0, 0), `round term=N t0=T ok|fail`, `up ok|fail "why"`,
//!   `down ok|fail "why"`, `bound ok|fail "why"`,
//!   `activated term=N committed|other-term|failed "why"|refused "why"|behind "why"`,
//!   `handover from=ID term=N [served]`, `stop`;
//! - `  ACTION`, indented: an action the core returned (written by the test);
//! - `  ! holds` / `  ! serves`, indented with `!`: written after an input when
//!   the core holds the access point or serves (so a script shows when); the
//!   runner checks that `! serves` agrees with the last lease the core
//!   published (`lease ... serving=`).
//!
//! `settings` may end with `ignore_lapse`: the core keeps serving when its
//! lease lapses (the test-only `lease` fault; see `Settings::ignore_lapse`).
//!
//! # Cluster scripts
//!
//! Each file in `tests/data/activator/cluster/` drives two or three cores at
//! once, on one shared timeline, and checks after every step that no two of
//! them serve at the same time. The format is the one above, plus:
//! - `cores n1 n2 n3`: builds these cores with the latest `settings` (several
//!   `settings` + `cores` pairs may build cores that differ); core `nK` is
//!   node id `K` (for `leader=K` and `handover from=K`);
//! - `> NOW nK INPUT`: an input to core `nK` at `NOW`, the same time for
//!   every core (boot-time clocks are modelled as one; `NOW` never goes
//!   back). A core sees only its own inputs: Raft views, round results and
//!   handovers are scripted per core, as its own Raft node and transport
//!   would report them;
//! - `expect overlap`: the script builds a situation the checker must catch
//!   (at least one `! overlap` line), instead of one it must not find.
//!
//! **The check.** What a core's services may do is what its published lease
//! (the last [`Action::Lease`] it returned: `until`, `serving`) lets them
//! do, as `src/lease.rs` reads it: answer while `serving` and `now < until`.
//! So core X has a *serving spell* `[start, end)`: it starts at the first
//! step after which X's published lease lets it serve at that step's `NOW`
//! (`serving` and `NOW < until`); its end is the largest `until` published
//! while `serving` — or, for a core built with `ignore_lapse`, whose
//! services also ignore the lapse, at least every later `NOW` while it still
//! serves; and a step after which X publishes `serving=false` at `t` ends the
//! spell at `min(t, end)`. After every step, every two spells of different
//! cores must be disjoint (`a.end <= b.start` or `b.end <= a.start`); each
//! pair that is not is written once, as `  ! overlap nA [s, e) nB [s, e)`. The
//! runner also checks, after every step, that the core's own `serving()`
//! agrees with the lease it published.

use std::path::{Path, PathBuf};

use raftlm::activator::core::{Action, Activation, ClockView, Core, Input, Settings};
use raftlm::config::AccessPointMode;
use raftlm::license::ids::{NodeId, Term};

fn field<'a>(words: &'a [&str], name: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

fn number(words: &[&str], name: &str, line: &str) -> u64 {
    field(words, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("`{line}`: needs {name}=NUMBER"))
}

/// The quoted part of a line, if any.
fn quoted(line: &str) -> String {
    match (line.find('"'), line.rfind('"')) {
        (Some(a), Some(b)) if b > a => line[a + 1..b].to_string(),
        _ => String::new(),
    }
}

fn result(words: &[&str], line: &str) -> Result<(), String> {
    match words.get(1) {
        Some(&"ok") => Ok(()),
        Some(&"fail") => Err(quoted(line)),
        _ => panic!("`{line}`: needs ok or fail \"why\""),
    }
}

fn settings(line: &str) -> Settings {
    let words: Vec<&str> = line.split_whitespace().collect();
    Settings {
        heartbeat_ms: number(&words, "heartbeat", line),
        lease_ms: number(&words, "lease", line),
        lease_margin_ms: number(&words, "margin", line),
        election_timeout_max_ms: number(&words, "election_max", line),
        mode: match field(&words, "mode") {
            Some("bind") => AccessPointMode::Bind,
            Some("command") => AccessPointMode::Command,
            Some("none") => AccessPointMode::None,
            other => panic!("`{line}`: mode must be bind, command or none, not {other:?}"),
        },
        ignore_lapse: words.contains(&"ignore_lapse"),
    }
}

fn input(text: &str) -> Input {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.first().copied() {
        Some("raft") => Input::Raft {
            leader: match words.get(1) {
                Some(&"leader") => true,
                Some(&"follower") => false,
                _ => panic!("`{text}`: raft leader|follower term=N"),
            },
            term: Term(number(&words, "term", text)),
            leader_id: field(&words, "leader").map(|v| {
                NodeId(
                    v.parse()
                        .unwrap_or_else(|_| panic!("`{text}`: leader=N takes a node id")),
                )
            }),
        },
        Some("tick") => Input::Tick {
            clock: match field(&words, "clock") {
                None | Some("agrees") => ClockView::Agrees,
                Some("unknown") => ClockView::Unknown,
                Some("condemned") => ClockView::Condemned,
                Some(other) => panic!("`{text}`: unknown clock {other}"),
            },
            silence_ms: field(&words, "silence").map_or(0, |v| v.parse().unwrap()),
            jitter_ms: field(&words, "jitter").map_or(0, |v| v.parse().unwrap()),
        },
        Some("round") => Input::Round {
            term: Term(number(&words, "term", text)),
            t0: number(&words, "t0", text),
            ok: match words.last() {
                Some(&"ok") => true,
                Some(&"fail") => false,
                _ => panic!("`{text}`: round ... ok|fail"),
            },
        },
        Some("up") => Input::Up {
            result: result(&words, text),
        },
        Some("down") => Input::Down {
            result: result(&words, text),
        },
        Some("bound") => Input::Bound {
            result: result(&words, text),
        },
        Some("activated") => Input::Activated {
            term: Term(number(&words, "term", text)),
            result: match words.get(2) {
                Some(&"committed") => Activation::Committed,
                Some(&"other-term") => Activation::OtherTerm,
                Some(&"failed") => Activation::Failed(quoted(text)),
                Some(&"refused") => Activation::Refused(quoted(text)),
                Some(&"behind") => Activation::Behind(quoted(text)),
                _ => {
                    panic!("`{text}`: activated term=N committed|other-term|failed|refused|behind")
                }
            },
        },
        Some("handover") => Input::Handover {
            from: NodeId(number(&words, "from", text)),
            term: Term(number(&words, "term", text)),
            served: words.contains(&"served"),
        },
        Some("stop") => Input::Stop,
        _ => panic!("unknown input `{text}`"),
    }
}

/// Replays a script and returns it with the actions the core returns now.
fn replay(path: &Path, text: &str) -> String {
    let mut out = String::new();
    let mut core: Option<Core> = None;
    // Whether the lease the core last published lets it serve.
    let mut published = false;
    for line in text.lines() {
        if line.starts_with("  ") {
            continue; // Actions: written again below.
        }
        out.push_str(line);
        out.push('\n');
        if let Some(rest) = line.strip_prefix("settings ") {
            core = Some(Core::new(settings(rest)));
            published = false;
            continue;
        }
        let Some(rest) = line.strip_prefix("> ") else {
            continue;
        };
        let core = core
            .as_mut()
            .unwrap_or_else(|| panic!("{}: inputs before settings", path.display()));
        let (now, text) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("{}: `{line}`: > NOW INPUT", path.display()));
        let now: u64 = now
            .parse()
            .unwrap_or_else(|_| panic!("{}: `{line}`: NOW must be a number", path.display()));
        for action in core.step(now, input(text)) {
            if let Action::Lease { serving, .. } = action {
                published = serving;
            }
            out.push_str(&format!("  {action}\n"));
        }
        assert_eq!(
            core.serving(),
            published,
            "{}: `{line}`: the core's serving and the lease it published disagree",
            path.display()
        );
        if core.serving() {
            out.push_str("  ! serves\n");
        } else if core.holds() {
            out.push_str("  ! holds\n");
        }
    }
    out
}

/// One core's serving spell (see the module doc): `[start, end)`, boot-time ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spell {
    start: u64,
    end: u64,
    /// The core still serves: its end may grow.
    open: bool,
}

impl Spell {
    fn overlaps(&self, other: &Spell) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// The serving spells of every core, and the overlaps already reported.
#[derive(Default)]
struct Spells {
    /// Per core (by name): its spells, oldest first.
    by_core: Vec<(String, Vec<Spell>)>,
    reported: Vec<(usize, usize, usize, usize)>,
}

impl Spells {
    /// Records what core `name` published after a step at `now`: its lease
    /// `until` and `serving`; `ignore_lapse` if its services ignore a lapse.
    fn observe(&mut self, name: &str, now: u64, until: u64, serving: bool, ignore_lapse: bool) {
        let index = match self.by_core.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.by_core.push((name.to_string(), Vec::new()));
                self.by_core.len() - 1
            }
        };
        let spells = &mut self.by_core[index].1;
        match spells.last_mut() {
            Some(spell) if spell.open && serving => {
                spell.end = spell.end.max(until);
                if ignore_lapse {
                    spell.end = spell.end.max(now);
                }
            }
            Some(spell) if spell.open => {
                spell.end = spell.end.min(now);
                spell.open = false;
            }
            _ if serving && (now < until || ignore_lapse) => spells.push(Spell {
                start: now,
                end: until.max(now),
                open: true,
            }),
            _ => {}
        }
    }

    /// Every open spell of a core whose services ignore a lapse lasts at
    /// least until `now`, whichever core stepped.
    fn advance(&mut self, now: u64, ignoring: &[String]) {
        for (name, spells) in &mut self.by_core {
            if let Some(spell) = spells.last_mut()
                && spell.open
                && ignoring.contains(name)
            {
                spell.end = spell.end.max(now);
            }
        }
    }

    /// Overlapping spells of two cores not reported yet, as lines.
    fn overlaps(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for a in 0..self.by_core.len() {
            for b in a + 1..self.by_core.len() {
                for (i, x) in self.by_core[a].1.iter().enumerate() {
                    for (j, y) in self.by_core[b].1.iter().enumerate() {
                        if x.overlaps(y) && !self.reported.contains(&(a, i, b, j)) {
                            self.reported.push((a, i, b, j));
                            lines.push(format!(
                                "! overlap {} [{}, {}) {} [{}, {})",
                                self.by_core[a].0,
                                x.start,
                                x.end,
                                self.by_core[b].0,
                                y.start,
                                y.end
                            ));
                        }
                    }
                }
            }
        }
        lines
    }
}

/// One core of a cluster script.
struct Member {
    name: String,
    core: Core,
    ignore_lapse: bool,
    /// The lease it last published: `until`, `serving`.
    lease: (u64, bool),
}

/// Replays a cluster script and returns it with the actions the cores
/// return now and the overlaps the checker finds.
fn replay_cluster(path: &Path, text: &str) -> String {
    let at = |line: &str| format!("{}: `{line}`", path.display());
    let mut out = String::new();
    let mut settings_now: Option<Settings> = None;
    let mut members: Vec<Member> = Vec::new();
    let mut spells = Spells::default();
    let mut last_now = 0;
    for line in text.lines() {
        if line.starts_with("  ") {
            continue; // Written again below.
        }
        out.push_str(line);
        out.push('\n');
        if let Some(rest) = line.strip_prefix("settings ") {
            settings_now = Some(settings(rest));
            continue;
        }
        if let Some(rest) = line.strip_prefix("cores ") {
            let s = settings_now.unwrap_or_else(|| panic!("{}: cores before settings", at(line)));
            for name in rest.split_whitespace() {
                assert!(
                    name.strip_prefix('n')
                        .is_some_and(|id| id.parse::<u64>().is_ok()),
                    "{}: cores are named nK (K the node id)",
                    at(line)
                );
                members.push(Member {
                    name: name.to_string(),
                    core: Core::new(s),
                    ignore_lapse: s.ignore_lapse,
                    lease: (0, false),
                });
            }
            continue;
        }
        let Some(rest) = line.strip_prefix("> ") else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(now), Some(name), Some(input_text)) = (words.next(), words.next(), words.next())
        else {
            panic!("{}: > NOW nK INPUT", at(line));
        };
        let now: u64 = now
            .parse()
            .unwrap_or_else(|_| panic!("{}: NOW must be a number", at(line)));
        assert!(
            now >= last_now,
            "{}: time goes back from {last_now}",
            at(line)
        );
        last_now = now;
        let member = members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{}: no core {name}", at(line)));
        for action in member.core.step(now, input(input_text)) {
            if let Action::Lease {
                until_ms, serving, ..
            } = action
            {
                member.lease = (until_ms, serving);
            }
            out.push_str(&format!("  {action}\n"));
        }
        assert_eq!(
            member.core.serving(),
            member.lease.1,
            "{}: {name} serves per its core but its published lease says otherwise",
            at(line)
        );
        if member.core.serving() {
            out.push_str("  ! serves\n");
        } else if member.core.holds() {
            out.push_str("  ! holds\n");
        }
        let (until, serving) = member.lease;
        spells.observe(name, now, until, serving, member.ignore_lapse);
        let ignoring: Vec<String> = members
            .iter()
            .filter(|m| m.ignore_lapse)
            .map(|m| m.name.clone())
            .collect();
        spells.advance(now, &ignoring);
        for overlap in spells.overlaps() {
            out.push_str(&format!("  {overlap}\n"));
        }
    }
    out
}

fn scripts_in(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "script"))
        .collect();
    paths.sort();
    paths
}

fn scripts() -> Vec<PathBuf> {
    scripts_in("tests/data/activator")
}

/// Replays every script of `paths` with `replay`; rewrites them under
/// `RAFTLM_UPDATE_SCRIPTS`, else fails listing those whose actions changed.
fn check_scripts(paths: &[PathBuf], replay: fn(&Path, &str) -> String) {
    let update = std::env::var_os("RAFTLM_UPDATE_SCRIPTS").is_some();
    let mut failed = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap();
        let now = replay(path, &text);
        if now == text {
            continue;
        }
        if update {
            std::fs::write(path, &now).unwrap();
        } else {
            failed.push(format!(
                "--- {} (expected)\n{text}\n--- what the core does now\n{now}",
                path.display()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "scenarios changed (RAFTLM_UPDATE_SCRIPTS=1 rewrites them):\n{}",
        failed.join("\n")
    );
}

// Every single-core scenario still makes the decisions its script records.
#[test]
fn activator_scenarios_match_their_scripts() {
    let paths = scripts();
    assert!(paths.len() >= 6, "scenario scripts missing: {paths:?}");
    check_scripts(&paths, replay);
}

// Two or three cores driven together never serve at the same time (no
// overlapping serving spells), and a script built to break that is caught.
#[test]
fn cluster_scenarios_match_their_scripts_and_never_overlap() {
    let paths = scripts_in("tests/data/activator/cluster");
    assert!(paths.len() >= 4, "cluster scripts missing: {paths:?}");
    check_scripts(&paths, replay_cluster);
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let expected = text.lines().any(|l| l == "expect overlap");
        let found = text.lines().any(|l| l.starts_with("  ! overlap"));
        assert_eq!(
            found,
            expected,
            "{}: {}",
            path.display(),
            if expected {
                "expects an overlap the checker did not find"
            } else {
                "two cores served at the same time"
            }
        );
    }
}

// The overlap checker flags two cores whose spells share a moment, and only
// that: a spell that starts exactly when the other's lease ends is fine.
#[test]
fn the_overlap_checker_flags_a_hand_built_overlap() {
    let mut spells = Spells::default();
    spells.observe("n1", 100, 350, true, false);
    spells.observe("n2", 350, 600, true, false);
    assert!(spells.overlaps().is_empty(), "back to back is no overlap");

    let mut spells = Spells::default();
    spells.observe("n1", 100, 350, true, false);
    spells.observe("n2", 300, 550, true, false);
    assert_eq!(
        spells.overlaps(),
        vec!["! overlap n1 [100, 350) n2 [300, 550)".to_string()]
    );
    assert!(spells.overlaps().is_empty(), "reported once");

    // A core that stopped serving at 200 ends its spell then, before its lease.
    let mut spells = Spells::default();
    spells.observe("n1", 100, 350, true, false);
    spells.observe("n1", 200, 0, false, false);
    spells.observe("n2", 200, 450, true, false);
    assert!(spells.overlaps().is_empty());

    // A core whose services ignore the lapse serves for as long as it says so.
    let mut spells = Spells::default();
    spells.observe("n1", 100, 350, true, true);
    spells.advance(500, &["n1".to_string()]);
    spells.observe("n2", 450, 700, true, false);
    assert_eq!(
        spells.overlaps(),
        vec!["! overlap n1 [100, 500) n2 [450, 700)".to_string()]
    );
}
