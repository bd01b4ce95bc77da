//! `no-unexpected-exit`: no node process ends unless the harness ends it,
//! and no node's log tells of a panic ([`panics_in_log`] finds the lines).
//! See the invariants in the [`super`] docs.

use super::common::{Tally, secs};
use super::model::{CheckInput, EXIT, InvariantResult, LogLine};

/// Longest log text kept for one panic line.
pub const LOG_LINE_CHARS_MAX: usize = 400;

/// The lines of node `node`'s log that tell of a panic: Rust's panic message
/// (`thread '…' panicked at file:line:col:`, the message on the next line)
/// and the node's own `panic: …; stopping the node` (its panic hook aborts
/// the process, `src/cli/server.rs`). Any line with "panic" in it counts: a
/// node logs the word only when something panicked.
pub fn panics_in_log(node: usize, text: &str) -> Vec<LogLine> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.to_ascii_lowercase().contains("panic") {
            continue;
        }
        let mut text = line.trim().to_string();
        if text.ends_with(':')
            && let Some(next) = lines.get(i + 1)
        {
            text.push(' ');
            text.push_str(next.trim());
        }
        if text.len() > LOG_LINE_CHARS_MAX {
            let mut cut = LOG_LINE_CHARS_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        found.push(LogLine {
            node,
            line: i + 1,
            text,
        });
    }
    found
}

/// Node processes end only when the harness ends them, and never panic.
pub(super) fn check_exits(input: &CheckInput) -> InvariantResult {
    let mut tally = Tally::new(EXIT);
    tally.checked = input.node_starts + input.logs_scanned;
    for exit in &input.exits {
        tally.violation(format!(
            "node {} {}: noticed at {}{}",
            exit.node,
            exit.what,
            secs(exit.noticed_us),
            exit.last_running_us.map_or(String::new(), |t| format!(
                ", last seen running at {}",
                secs(t)
            ))
        ));
    }
    for line in &input.log_panics {
        tally.violation(format!(
            "node {}'s log, line {}: {}",
            line.node, line.line, line.text
        ));
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_support::*;

    // Crashes are violations: a node process that ended without the harness
    // ending it, and a panic in a node's log, are each reported with the
    // node, the time and the line; clean logs and no exits pass.
    #[test]
    fn unexpected_exits_and_panics_are_reported() {
        let log = "2026-12-02T06:00:00.000001Z  INFO raftlm::node: serving\n\
                   thread 'tokio-runtime-worker' panicked at src/license/state.rs:812:9:\n\
                   seats in use 6 > licensed 5 for acme cad\n\
                   2026-12-02T06:00:01.000002Z ERROR raftlm::cli::server: panic: boom; stopping the node\n";
        let panics = panics_in_log(2, log);
        assert_eq!(panics.len(), 2, "{panics:?}");
        assert_eq!(panics[0].line, 2);
        assert!(
            panics[0]
                .text
                .ends_with("seats in use 6 > licensed 5 for acme cad"),
            "{panics:?}"
        );
        assert!(panics_in_log(1, "INFO serving\nINFO stopping\n").is_empty());

        let mut input = CheckInput {
            node_starts: 9,
            logs_scanned: 3,
            ..CheckInput::default()
        };
        let verdict = check(&[], &input);
        assert_eq!(failing(&verdict), Vec::<&str>::new());
        assert_eq!(result(&verdict, EXIT).checked, 12);

        input.exits.push(NodeExit {
            node: 3,
            noticed_us: 21_500_000,
            last_running_us: Some(20_000_000),
            what: "exited on its own (signal: 6 (SIGABRT) (core dumped))".into(),
        });
        input.log_panics = panics;
        let verdict = check(&[], &input);
        assert_eq!(failing(&verdict), vec![EXIT]);
        let exit = result(&verdict, EXIT);
        assert_eq!(exit.violations, 3);
        assert!(
            exit.examples[0].contains("node 3 exited on its own (signal: 6")
                && exit.examples[0].contains("noticed at 21.500 s, last seen running at 20.000 s"),
            "{exit:?}"
        );
        assert!(exit.examples[1].starts_with("node 2's log, line 2: thread"));
    }
}
