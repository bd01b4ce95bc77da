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
//!   the core holds the access point or serves (so a script shows when).

use std::path::{Path, PathBuf};

use raftlm::activator::core::{Activation, ClockView, Core, Input, Settings};
use raftlm::config::AccessPointMode;

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
        ignore_lapse: false,
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
            term: number(&words, "term", text),
            leader_id: field(&words, "leader").map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("`{text}`: leader=N takes a node id"))
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
            term: number(&words, "term", text),
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
            term: number(&words, "term", text),
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
            from: number(&words, "from", text),
            term: number(&words, "term", text),
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
    for line in text.lines() {
        if line.starts_with("  ") {
            continue; // Actions: written again below.
        }
        out.push_str(line);
        out.push('\n');
        if let Some(rest) = line.strip_prefix("settings ") {
            core = Some(Core::new(settings(rest)));
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
            out.push_str(&format!("  {action}\n"));
        }
        if core.serving() {
            out.push_str("  ! serves\n");
        } else if core.holds() {
            out.push_str("  ! holds\n");
        }
    }
    out
}

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/activator");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "script"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn activator_scenarios_match_their_scripts() {
    let update = std::env::var_os("RAFTLM_UPDATE_SCRIPTS").is_some();
    let paths = scripts();
    assert!(paths.len() >= 6, "scenario scripts missing: {paths:?}");
    let mut failed = Vec::new();
    for path in &paths {
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
