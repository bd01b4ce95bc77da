//! `raftlm status [--server S] [--json]`: the cluster, its nodes, the active
//! node and term, the features and who holds their seats (`lmstat -a`).
//!
//! The text form reads like FlexNet's `lmstat -a`: a header about the
//! cluster, then per feature a `Users of FEATURE:  (Total of N licenses
//! issued;  Total of M licenses in use)` line followed by one line per grant.
//! `--json` prints one JSON object instead (written here by hand: the crate
//! has no JSON dependency, and the object is flat and small).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::Failure;
use crate::cli::checkout::{failure, init_logging, runtime};
use crate::client::{Client, DEFAULT_SERVER, GrantToken, ServerList, SessionId};
use crate::license::feature::Date;
use crate::proto::v1 as pb;

/// `raftlm status`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The access point or node list: host:port or port@host, comma-separated.
    #[arg(long, env = "RAFTLM_SERVER", default_value = DEFAULT_SERVER, value_name = "S")]
    pub server: ServerList,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `raftlm status`.
pub fn run(args: Args) -> Result<(), Failure> {
    init_logging();
    let status = runtime()?
        .block_on(async { Client::new(args.server).status().await })
        .map_err(failure)?;
    if args.json {
        println!("{}", to_json(&status));
    } else {
        print!("{}", to_text(&status));
    }
    Ok(())
}

/// Formats a time as `22-nov-2026 10:00:00 UTC`.
pub fn format_time(time: SystemTime) -> String {
    format_time_ms(
        time.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// Formats milliseconds since the epoch as `22-nov-2026 10:00:00 UTC`.
pub fn format_time_ms(ms: u64) -> String {
    let seconds_of_day = (ms / 1000) % 86_400;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        Date::from_unix_ms(ms),
        seconds_of_day / 3600,
        (seconds_of_day / 60) % 60,
        seconds_of_day % 60
    )
}

fn token_text(token: Option<&pb::GrantToken>) -> String {
    token.map_or_else(
        || "-".to_string(),
        |t| {
            GrantToken {
                term: t.term,
                index: t.index,
                slot: t.slot,
            }
            .to_string()
        },
    )
}

/// The `lmstat -a`-like text form.
pub fn to_text(status: &pb::StatusReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "License server status: {} (cluster of {} nodes)",
        status.cluster_name,
        status.nodes.len()
    );
    if status.active_node == 0 {
        let _ = writeln!(
            out,
            "    Active node: none (election in progress), term {}",
            status.term
        );
    } else {
        let _ = writeln!(
            out,
            "    Active node: {} at {}, term {}",
            status.active_node, status.active_address, status.term
        );
    }
    if status.last_activation_ms == 0 {
        let _ = writeln!(out, "    Last failover: none");
    } else {
        let _ = writeln!(
            out,
            "    Last failover: {} ({} activation{})",
            format_time_ms(status.last_activation_ms),
            status.activations,
            if status.activations == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(out, "\nNodes:");
    for node in &status.nodes {
        let _ = writeln!(out, "    node {}  {}  {}", node.id, node.address, node.role);
    }
    let _ = writeln!(out, "\nFeature usage info:");
    let mut grants: BTreeMap<&str, Vec<&pb::GrantStatus>> = BTreeMap::new();
    for grant in &status.grants {
        grants
            .entry(grant.feature.as_str())
            .or_default()
            .push(grant);
    }
    for feature in &status.features {
        let _ = writeln!(
            out,
            "\nUsers of {}:  (Total of {} license{} issued;  Total of {} license{} in use)",
            feature.feature,
            feature.licensed,
            if feature.licensed == 1 { "" } else { "s" },
            feature.in_use,
            if feature.in_use == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "  (vendor {}, version {}, expiry {}, {} unexpired)",
            feature.vendor, feature.version, feature.expiry, feature.unexpired
        );
        write_grants(
            &mut out,
            grants.remove(feature.feature.as_str()).unwrap_or_default(),
        );
    }
    // Grants of a feature no imported license names any more.
    for (feature, held) in grants {
        let in_use: u32 = held.iter().map(|g| g.count).sum();
        let _ = writeln!(
            out,
            "\nUsers of {feature}:  (Total of 0 licenses issued;  Total of {in_use} license{} in use)",
            if in_use == 1 { "" } else { "s" }
        );
        write_grants(&mut out, held);
    }
    out
}

fn write_grants(out: &mut String, mut grants: Vec<&pb::GrantStatus>) {
    if grants.is_empty() {
        return;
    }
    grants.sort_by_key(|g| (g.since_ms, g.token.map(|t| (t.term, t.index, t.slot))));
    let _ = writeln!(out);
    for grant in grants {
        let _ = write!(
            out,
            "    {} {} (session {}) (grant {}), start {}",
            grant.user,
            grant.host,
            SessionId(grant.session),
            token_text(grant.token.as_ref()),
            format_time_ms(grant.since_ms)
        );
        if grant.count > 1 {
            let _ = write!(out, ", {} licenses", grant.count);
        }
        let _ = writeln!(out);
    }
}

/// A JSON string literal for `text`, with `"`, `\` and control characters escaped.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `--json` form: one object, on one line.
pub fn to_json(status: &pb::StatusReply) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"cluster\":{},\"term\":{},\"active_node\":{},\"active_address\":{},",
        json_string(&status.cluster_name),
        status.term,
        status.active_node,
        json_string(&status.active_address)
    );
    let last = if status.last_activation_ms == 0 {
        "null".to_string()
    } else {
        json_string(&format_time_ms(status.last_activation_ms))
    };
    let _ = write!(
        out,
        "\"last_failover_ms\":{},\"last_failover\":{},\"activations\":{},\"applied_index\":{},",
        status.last_activation_ms, last, status.activations, status.applied_index
    );
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{{\"id\":{},\"address\":{},\"role\":{}}}",
                n.id,
                json_string(&n.address),
                json_string(&n.role)
            )
        })
        .collect();
    let features: Vec<String> = status
        .features
        .iter()
        .map(|f| {
            format!(
                "{{\"feature\":{},\"vendor\":{},\"version\":{},\"licensed\":{},\"unexpired\":{},\"in_use\":{},\"expiry\":{}}}",
                json_string(&f.feature),
                json_string(&f.vendor),
                json_string(&f.version),
                f.licensed,
                f.unexpired,
                f.in_use,
                json_string(&f.expiry)
            )
        })
        .collect();
    let grants: Vec<String> = status
        .grants
        .iter()
        .map(|g| {
            format!(
                "{{\"token\":{},\"feature\":{},\"count\":{},\"session\":{},\"user\":{},\"host\":{},\"since_ms\":{},\"since\":{}}}",
                json_string(&token_text(g.token.as_ref())),
                json_string(&g.feature),
                g.count,
                json_string(&SessionId(g.session).to_string()),
                json_string(&g.user),
                json_string(&g.host),
                g.since_ms,
                json_string(&format_time_ms(g.since_ms))
            )
        })
        .collect();
    let _ = write!(
        out,
        "\"nodes\":[{}],\"features\":[{}],\"grants\":[{}]}}",
        nodes.join(","),
        features.join(","),
        grants.join(",")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::StatusReply {
        pb::StatusReply {
            term: 5,
            cluster_name: "LICSRV".into(),
            active_node: 2,
            active_address: "127.0.0.1:27002".into(),
            nodes: vec![
                pb::NodeStatus {
                    id: 1,
                    address: "127.0.0.1:27001".into(),
                    role: "standby".into(),
                },
                pb::NodeStatus {
                    id: 2,
                    address: "127.0.0.1:27002".into(),
                    role: "active".into(),
                },
            ],
            features: vec![pb::FeatureStatus {
                feature: "cad".into(),
                vendor: "acme".into(),
                version: "2.0".into(),
                licensed: 25,
                unexpired: 25,
                in_use: 2,
                expiry: "permanent".into(),
            }],
            grants: vec![pb::GrantStatus {
                token: Some(pb::GrantToken {
                    term: 3,
                    index: 17,
                    slot: 0,
                }),
                feature: "cad".into(),
                count: 2,
                session: 0xdead_beef,
                user: "ada \"the\" admin".into(),
                host: "ws1".into(),
                since_ms: 1_795_341_600_000,
            }],
            last_activation_ms: 1_795_341_600_000,
            activations: 3,
            applied_index: 42,
        }
    }

    // The text form has lmstat's "Users of" line with totals and one line per grant.
    #[test]
    fn text_reads_like_lmstat() {
        let text = to_text(&sample());
        assert!(
            text.contains(
                "Users of cad:  (Total of 25 licenses issued;  Total of 2 licenses in use)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    ada \"the\" admin ws1 (session 00000000deadbeef) (grant 3.17.0), start 22-nov-2026 10:00:00 UTC, 2 licenses"
            ),
            "{text}"
        );
        assert!(
            text.contains("Active node: 2 at 127.0.0.1:27002, term 5"),
            "{text}"
        );
        assert!(
            text.contains("Last failover: 22-nov-2026 10:00:00 UTC (3 activations)"),
            "{text}"
        );
    }

    // JSON strings escape quotes, backslashes and control characters.
    #[test]
    fn json_escaping() {
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}é"),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
        let json = to_json(&sample());
        assert!(
            json.starts_with("{\"cluster\":\"LICSRV\",\"term\":5,"),
            "{json}"
        );
        assert!(
            json.contains("\"user\":\"ada \\\"the\\\" admin\""),
            "{json}"
        );
        assert!(json.contains("\"token\":\"3.17.0\""), "{json}");
        assert!(json.ends_with("}]}"), "{json}");
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }
}
