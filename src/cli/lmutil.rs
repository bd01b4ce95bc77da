//! `raftlm lmutil …`, and the binary run through a link named `lmutil` or
//! `lmstat`: FlexNet's `lmutil lmstat`, `lmcksum` and `lmremove` with their
//! arguments and output, so the scripts and scrapers administrators already
//! run against FlexNet (flexlm_exporter, phpLicenseWatcher, cron jobs that
//! grep `lmstat -a`) read a raftlm cluster as they read a triad.
//!
//! The output follows lmstat 11.x: two header lines; `License server status:`
//! with every member as `port@host`; one `host: license server UP (MASTER)
//! vX.Y.Z` line per member (MASTER on the active node) or lmutil's `Cannot
//! connect` line for one that does not answer; the vendor daemons; then per
//! feature `Users of F:  (Total of N licenses issued;  Total of M licenses
//! in use)`, the feature's header and one line per grant. A member's host is
//! its `[[nodes]] name` (default: the host of its address), so a scraper that
//! keys servers by their first DNS label tells them apart. A grant's handle
//! is a decimal number that names its token one to one ([`handle_of`]), which
//! `lmremove -h` takes back.

use std::fmt::Write as _;

use crate::cli::Failure;
use crate::client::ServerList;
use crate::license::ids::{GrantToken, LogIndex, Term};
use crate::proto::v1 as pb;

/// lmutil's usage line, printed (exit 2) for an option it does not know.
pub const USAGE: &str = "usage: lmutil lmstat [-c license_file_list] [-a] [-A] [-f feature] [-i] [-v] [-S vendor]\n       lmutil lmcksum -c license_file_list\n       lmutil lmremove [-c license_file_list] feature user host display\n       lmutil lmremove [-c license_file_list] -h feature host port handle";
/// lmutil's exit status when no license server answers (its error −15).
pub const EXIT_NO_SERVER: u8 = 241;
/// The port a `SERVER` line without one means (FlexNet's default range starts here).
pub const DEFAULT_PORT: u16 = 27000;
/// Bits of a handle that carry the grant's slot in its log entry.
pub const HANDLE_SLOT_BITS: u32 = 16;

/// What lmstat was asked to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lmstat {
    /// `-c`: the servers (port@host list, or a license file's SERVER lines).
    pub servers: Option<String>,
    /// `-a`: everything (servers, vendors, every feature and its users).
    pub all: bool,
    /// `-A`: only features in use.
    pub active_only: bool,
    /// `-f F`: one feature.
    pub feature: Option<String>,
    /// `-i`: the feature table (feature, version, seats, expiry, vendor).
    pub info: bool,
    /// `-v`: lmstat's version.
    pub version: bool,
    /// `-S VENDOR`: one vendor's features.
    pub vendor: Option<String>,
}

/// One lmutil command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// `lmstat`.
    Lmstat(Lmstat),
    /// `lmcksum -c S`: the imported lines.
    Lmcksum {
        /// The servers.
        servers: Option<String>,
    },
    /// `lmremove [-c S] F user host display` or `lmremove [-c S] -h F host port handle`.
    Lmremove {
        /// The servers.
        servers: Option<String>,
        /// The feature.
        feature: String,
        /// Whom: a user and host, or a handle.
        whom: Whom,
    },
}

/// Whose grant `lmremove` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whom {
    /// `F user host display`: the grants of the feature held by the user on the host.
    Holder {
        /// The user.
        user: String,
        /// The host.
        host: String,
    },
    /// `-h F host port handle`: one grant by its handle.
    Handle(u64),
}

fn usage(what: impl std::fmt::Display) -> Failure {
    Failure::usage(format!("{what}\n{USAGE}"))
}

/// Parses lmutil's arguments: the tool's name, then its options.
pub fn parse(args: &[String]) -> Result<Tool, Failure> {
    let Some((tool, rest)) = args.split_first() else {
        return Err(usage("lmutil: name a tool"));
    };
    let mut rest = rest.iter();
    let mut servers = None;
    match tool.as_str() {
        "lmstat" => {
            let mut asked = Lmstat::default();
            while let Some(arg) = rest.next() {
                let mut value = |name: &str| {
                    rest.next()
                        .cloned()
                        .ok_or_else(|| usage(format!("lmstat: {name} needs a value")))
                };
                match arg.as_str() {
                    "-c" => asked.servers = Some(value("-c")?),
                    "-a" => asked.all = true,
                    "-A" => asked.active_only = true,
                    "-f" => asked.feature = Some(value("-f")?),
                    "-i" => asked.info = true,
                    "-v" => asked.version = true,
                    "-S" => asked.vendor = Some(value("-S")?),
                    other => return Err(usage(format!("lmstat: unknown option {other}"))),
                }
            }
            Ok(Tool::Lmstat(asked))
        }
        "lmcksum" => {
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "-c" => {
                        servers = Some(
                            rest.next()
                                .cloned()
                                .ok_or_else(|| usage("lmcksum: -c needs a value"))?,
                        )
                    }
                    other => return Err(usage(format!("lmcksum: unknown option {other}"))),
                }
            }
            Ok(Tool::Lmcksum { servers })
        }
        "lmremove" => {
            let mut by_handle = false;
            let mut words = Vec::new();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "-c" => {
                        servers = Some(
                            rest.next()
                                .cloned()
                                .ok_or_else(|| usage("lmremove: -c needs a value"))?,
                        )
                    }
                    "-h" => by_handle = true,
                    other if other.starts_with('-') => {
                        return Err(usage(format!("lmremove: unknown option {other}")));
                    }
                    word => words.push(word.to_string()),
                }
            }
            match (by_handle, words.as_slice()) {
                (false, [feature, user, host, _display]) => Ok(Tool::Lmremove {
                    servers,
                    feature: feature.clone(),
                    whom: Whom::Holder {
                        user: user.clone(),
                        host: host.clone(),
                    },
                }),
                (true, [feature, _host, _port, handle]) => Ok(Tool::Lmremove {
                    servers,
                    feature: feature.clone(),
                    whom: Whom::Handle(handle.parse().map_err(|_| {
                        usage(format!("lmremove: the handle {handle:?} is not a number"))
                    })?),
                }),
                _ => Err(usage("lmremove: wrong number of arguments")),
            }
        }
        other => Err(usage(format!("lmutil: unknown tool {other}"))),
    }
}

/// The servers `-c` names: `port@host,…` as is, or the `SERVER host id
/// [port]` lines of a license file at that path; without `-c`,
/// `RAFTLM_SERVER` or the default.
pub fn servers_of(asked: Option<&str>) -> Result<ServerList, Failure> {
    let text = match asked {
        None => std::env::var("RAFTLM_SERVER")
            .unwrap_or_else(|_| crate::client::DEFAULT_SERVER.to_string()),
        Some(path) if std::path::Path::new(path).is_file() => {
            let file = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("{path}: {e}")))?;
            let servers: Vec<String> = file
                .lines()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    if !words.next()?.eq_ignore_ascii_case("SERVER") {
                        return None;
                    }
                    let host = words.next()?;
                    let port = words
                        .nth(1)
                        .and_then(|p| p.parse::<u16>().ok())
                        .unwrap_or(DEFAULT_PORT);
                    Some(format!("{port}@{host}"))
                })
                .collect();
            if servers.is_empty() {
                return Err(Failure::usage(format!("{path}: no SERVER line")));
            }
            servers.join(",")
        }
        Some(list) => list.to_string(),
    };
    text.parse()
        .map_err(|e| Failure::usage(format!("lmutil -c {text}: {e}")))
}

/// The handle lmstat shows for a grant: its log index and slot in one
/// decimal number (a log index names one entry for the life of the
/// cluster, so the term is implied).
pub fn handle_of(token: &pb::GrantToken) -> u64 {
    (token.index << HANDLE_SLOT_BITS) | u64::from(token.slot)
}

/// Whether `token` is the grant `handle` names.
pub fn is_handle_of(handle: u64, token: &pb::GrantToken) -> bool {
    handle_of(token) == handle
}

/// The grant token `handle` names among `grants`, as text.
pub fn token_of_handle(handle: u64, grants: &[pb::GrantStatus]) -> Option<String> {
    grants
        .iter()
        .filter_map(|g| g.token.as_ref())
        .find(|t| is_handle_of(handle, t))
        .map(|t| {
            GrantToken {
                term: Term(t.term),
                index: LogIndex(t.index),
                slot: t.slot,
            }
            .to_string()
        })
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// `Www M/D H:MM` as lmstat writes a start time (UTC).
pub fn start_text(ms: u64) -> String {
    lmstat_time(ms, false)
}

/// `Www M/D/YYYY H:MM` as lmstat's header writes now (UTC).
fn header_time(ms: u64) -> String {
    lmstat_time(ms, true)
}

/// A moment as lmstat writes it (UTC): weekday, month/day, the year if
/// `with_year`, hour:minute.
fn lmstat_time(ms: u64, with_year: bool) -> String {
    let days = ms / 86_400_000;
    let (year, month, day) = crate::license::feature::Date::from_unix_ms(ms).ymd();
    let year = if with_year {
        format!("/{year}")
    } else {
        String::new()
    };
    let minutes = (ms / 60_000) % 1440;
    format!(
        "{} {month}/{day}{year} {}:{:02}",
        WEEKDAYS[((days + 4) % 7) as usize],
        minutes / 60,
        minutes % 60
    )
}

/// A member as lmstat names it: its `[[nodes]] name`, else its address's host.
fn host_of(node: &pb::NodeStatus) -> String {
    if !node.name.is_empty() {
        return node.name.clone();
    }
    node.address
        .rsplit_once(':')
        .map_or(node.address.as_str(), |(host, _)| host)
        .trim_matches(['[', ']'])
        .to_string()
}

fn port_of(address: &str) -> &str {
    address.rsplit_once(':').map_or("27000", |(_, port)| port)
}

/// `licenses` or `license` for `n`.
fn plural(n: u32) -> &'static str {
    if n == 1 { "license" } else { "licenses" }
}

/// `lmstat -v`.
pub fn version_text() -> String {
    format!("lmstat v{} build 0 x64_lsb\n", env!("CARGO_PKG_VERSION"))
}

/// lmstat's output for `status`, with `answered(id)` saying whether each
/// member answered on its own, at `now_ms`.
pub fn lmstat_text(
    status: &pb::StatusReply,
    asked: &Lmstat,
    answered: impl Fn(u64) -> bool,
    now_ms: u64,
) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut out = String::new();
    let _ = writeln!(out, "lmutil - Copyright (c) raftlm. All Rights Reserved.");
    let _ = writeln!(
        out,
        "Flexible License Manager status on {}",
        header_time(now_ms)
    );
    out.push('\n');
    let master = status.nodes.iter().find(|n| n.id == status.active_node);
    let servers: Vec<String> = status
        .nodes
        .iter()
        .map(|n| format!("{}@{}", port_of(&n.address), host_of(n)))
        .collect();
    let _ = writeln!(out, "License server status: {}", servers.join(","));
    if let Some(master) = master {
        let _ = writeln!(
            out,
            "    License file(s) on {}: raftlm cluster {}:",
            host_of(master),
            status.cluster_name
        );
    }
    out.push('\n');
    for node in &status.nodes {
        let host = host_of(node);
        if node.id == status.active_node {
            let _ = writeln!(out, "{host}: license server UP (MASTER) v{version}");
        } else if answered(node.id) {
            let _ = writeln!(out, "{host}: license server UP v{version}");
        } else {
            let _ = writeln!(
                out,
                "{host}: Cannot connect to license server system. (-15,570:115 \"Operation now in progress\")"
            );
        }
    }
    out.push('\n');
    let mut vendors: Vec<&str> = status.features.iter().map(|f| f.vendor.as_str()).collect();
    vendors.sort_unstable();
    vendors.dedup();
    if let Some(master) = master {
        let _ = writeln!(out, "Vendor daemon status (on {}):", host_of(master));
        out.push('\n');
        for vendor in &vendors {
            let _ = writeln!(out, "  {vendor}: UP v{version}");
        }
        out.push('\n');
    }
    if !(asked.all || asked.active_only || asked.feature.is_some()) {
        return out;
    }
    let _ = writeln!(out, "Feature usage info:");
    out.push('\n');
    let server = master.map_or_else(
        || ("".to_string(), "27000".to_string()),
        |m| (host_of(m), port_of(&m.address).to_string()),
    );
    for feature in &status.features {
        if asked
            .feature
            .as_ref()
            .is_some_and(|f| *f != feature.feature)
            || asked.vendor.as_ref().is_some_and(|v| *v != feature.vendor)
            || (asked.active_only && feature.in_use == 0)
        {
            continue;
        }
        let _ = writeln!(
            out,
            "Users of {}:  (Total of {} {} issued;  Total of {} {} in use)",
            feature.feature,
            feature.unexpired,
            plural(feature.unexpired),
            feature.in_use,
            plural(feature.in_use)
        );
        out.push('\n');
        let held: Vec<&pb::GrantStatus> = status
            .grants
            .iter()
            .filter(|g| g.feature == feature.feature && g.vendor == feature.vendor)
            .collect();
        if held.is_empty() {
            continue;
        }
        let expiry = expiry_of(feature);
        let _ = writeln!(
            out,
            "  \"{}\" v{}, vendor: {}, expiry: {expiry}",
            feature.feature, feature.version, feature.vendor
        );
        let _ = writeln!(out, "  floating license");
        out.push('\n');
        for grant in held {
            let handle = grant.token.as_ref().map_or(0, handle_of);
            let count = if grant.count > 1 {
                format!(", {} licenses", grant.count)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "    {} {} /dev/tty (v{}) ({}/{} {handle}), start {}{count}",
                word(&grant.user),
                word(&grant.host),
                feature.version,
                server.0,
                server.1,
                start_text(grant.since_ms),
            );
        }
        out.push('\n');
    }
    out
}

/// A user or host name as one printable word (lmstat's columns are split
/// on spaces): spaces and control characters become `_`.
fn word(text: &str) -> String {
    let word: String = text
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if word.is_empty() {
        "unknown".into()
    } else {
        word
    }
}

/// A feature's latest expiry as lmstat writes it.
fn expiry_of(feature: &pb::FeatureStatus) -> &str {
    if feature.expiry.is_empty() {
        "permanent"
    } else {
        feature.expiry.as_str()
    }
}

/// Whether `-f` and `-S` leave `feature` out.
fn left_out(asked: &Lmstat, feature: &pb::FeatureStatus) -> bool {
    asked
        .feature
        .as_ref()
        .is_some_and(|f| *f != feature.feature)
        || asked.vendor.as_ref().is_some_and(|v| *v != feature.vendor)
}

/// `lmstat -i`: the feature table.
pub fn info_text(status: &pb::StatusReply, asked: &Lmstat) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "NOTE: lmstat -i does not give information from the server,\n      but only reads the license file.  For this reason,\n      lmstat -a is recommended instead.\n"
    );
    let _ = writeln!(
        out,
        "Feature                         Version     #licenses    Expires      Vendor"
    );
    let _ = writeln!(
        out,
        "_______                         _________   _________    __________   ______"
    );
    for f in &status.features {
        if left_out(asked, f) {
            continue;
        }
        let expiry = expiry_of(f);
        let _ = writeln!(
            out,
            "{:<31} {:<11} {:<12} {:<12} {}",
            f.feature, f.version, f.licensed, expiry, f.vendor
        );
    }
    out
}

/// `lmcksum -c S`: one line per imported license line,
/// `FEATURE|INCREMENT name vendor version expiry seats`.
pub fn lmcksum_text(status: &pb::StatusReply) -> String {
    let mut out = String::new();
    for line in &status.lines {
        let _ = writeln!(
            out,
            "{} {} {} {} {} {}",
            line.keyword, line.feature, line.vendor, line.version, line.expiry, line.seats
        );
    }
    out
}

/// Runs lmutil with `args` (the tool's name first): `raftlm lmutil ARGS…`,
/// or the binary run as `lmutil ARGS…` (and as `lmstat ARGS…`, with
/// `lmstat` put first).
pub fn run(args: Vec<String>) -> Result<(), Failure> {
    crate::cli::common::init_logging(crate::cli::common::CLIENT_LOG_DEFAULT);
    let tool = parse(&args)?;
    if let Tool::Lmstat(asked) = &tool
        && asked.version
    {
        print!("{}", version_text());
        return Ok(());
    }
    let servers = match &tool {
        Tool::Lmstat(asked) => servers_of(asked.servers.as_deref())?,
        Tool::Lmcksum { servers } | Tool::Lmremove { servers, .. } => {
            servers_of(servers.as_deref())?
        }
    };
    let mut options = crate::client::ClientOptions::from_env().map_err(Failure::usage)?;
    options.call_timeout = crate::cli::status::STATUS_TIMEOUT_DEFAULT;
    let tls = options.tls.clone();
    let addresses = servers.addresses().to_vec();
    let client = crate::client::Client::with_options(servers, options);
    let runtime = crate::cli::common::runtime()?;
    let result = runtime.block_on(async {
        match tool {
            Tool::Lmstat(asked) => {
                let (answer, probed) = crate::cli::status::gather(
                    &client,
                    &addresses,
                    &tls,
                    crate::cli::status::STATUS_TIMEOUT_DEFAULT,
                )
                .await;
                let status = answer.map_err(no_server)?;
                if asked.info {
                    print!("{}", info_text(&status, &asked));
                    return Ok(());
                }
                let members: Vec<(u64, String)> = status
                    .nodes
                    .iter()
                    .map(|n| (n.id, n.address.clone()))
                    .collect();
                let nodes = crate::cli::reach::nodes_view(&members, &probed);
                let answered = |id: u64| {
                    nodes
                        .iter()
                        .any(|n| n.id == Some(id) && n.reach.info().is_some())
                };
                print!(
                    "{}",
                    lmstat_text(&status, &asked, answered, crate::clock::real_wall_ms())
                );
                Ok(())
            }
            Tool::Lmcksum { .. } => {
                let status = client.status().await.map_err(no_server)?;
                print!("{}", lmcksum_text(&status));
                Ok(())
            }
            Tool::Lmremove { feature, whom, .. } => {
                let asked = match whom {
                    Whom::Holder { user, host } => pb::RemoveGrantsRequest {
                        feature,
                        user,
                        host,
                        ..Default::default()
                    },
                    Whom::Handle(handle) => {
                        let status = client.status().await.map_err(no_server)?;
                        let Some(grant) = token_of_handle(handle, &status.grants) else {
                            return Err(Failure::refused(format!(
                                "lmremove: no grant of {feature} has handle {handle}"
                            )));
                        };
                        pb::RemoveGrantsRequest {
                            grant,
                            feature,
                            ..Default::default()
                        }
                    }
                };
                let reply = client
                    .remove_grants(asked)
                    .await
                    .map_err(crate::cli::common::failure)?;
                print!("{}", crate::cli::remove::removed_text(&reply));
                Ok(())
            }
        }
    });
    runtime.shutdown_background();
    result
}

/// lmutil's failure when no server answers: its error −15, exit 241.
fn no_server(error: crate::client::ClientError) -> Failure {
    match error {
        crate::client::ClientError::Unreachable { .. } => Failure {
            code: EXIT_NO_SERVER,
            message: format!(
                "Cannot connect to license server system. (-15,570:115 \"Operation now in progress\"): {error}"
            ),
        },
        other => crate::cli::common::failure(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn lmutils_arguments_parse_as_lmutil_takes_them() {
        assert_eq!(
            parse(&args("lmstat -c 27000@lic1,27000@lic2 -a -S acme")).unwrap(),
            Tool::Lmstat(Lmstat {
                servers: Some("27000@lic1,27000@lic2".into()),
                all: true,
                vendor: Some("acme".into()),
                ..Lmstat::default()
            })
        );
        assert_eq!(
            parse(&args("lmremove -c 27000@lic1 -h cad lic1 27000 4242")).unwrap(),
            Tool::Lmremove {
                servers: Some("27000@lic1".into()),
                feature: "cad".into(),
                whom: Whom::Handle(4242),
            }
        );
        assert!(matches!(
            parse(&args("lmremove cad ada ws1 /dev/tty")).unwrap(),
            Tool::Lmremove {
                whom: Whom::Holder { .. },
                ..
            }
        ));
        for bad in [
            "lmstat -x",
            "lmstat -c",
            "lmdown -c x",
            "",
            "lmremove cad ada",
            "lmremove -h cad h p nan",
        ] {
            let error = parse(&args(bad)).unwrap_err();
            assert_eq!(error.code, crate::cli::EXIT_USAGE, "{bad}");
            assert!(
                error.message.contains("usage: lmutil lmstat"),
                "{bad}: {}",
                error.message
            );
        }
    }

    #[test]
    fn handles_name_grants_one_to_one_and_start_times_read_as_lmstats() {
        let token = |index: u64, slot: u32| pb::GrantToken {
            term: 3,
            index,
            slot,
        };
        assert_eq!(handle_of(&token(1, 0)), 65_536);
        assert_ne!(handle_of(&token(1, 1)), handle_of(&token(2, 0)));
        assert!(is_handle_of(handle_of(&token(7, 3)), &token(7, 3)));
        // 7 December 2026, a Monday, 09:05 UTC.
        assert_eq!(start_text(1_796_634_300_000), "Mon 12/7 9:05");
        assert_eq!(header_time(1_796_634_300_000), "Mon 12/7/2026 9:05");
    }

    #[test]
    fn a_license_files_server_lines_name_the_servers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("license.dat");
        std::fs::write(
            &file,
            "SERVER lic1 0123 27001\nSERVER lic2 4567\nVENDOR acme\n",
        )
        .unwrap();
        let servers = servers_of(Some(file.to_str().unwrap())).unwrap();
        assert_eq!(servers.addresses(), ["lic1:27001", "lic2:27000"]);
    }

    /// A status with two vendors, a multi-seat grant and a node down.
    fn sample() -> (pb::StatusReply, impl Fn(u64) -> bool) {
        let node = |id: u64, name: &str| pb::NodeStatus {
            id,
            name: name.into(),
            address: format!("10.0.0.{id}:27000"),
            ..Default::default()
        };
        let feature = |vendor: &str, feature: &str, seats: u32, in_use: u32| pb::FeatureStatus {
            vendor: vendor.into(),
            feature: feature.into(),
            version: "2.0".into(),
            licensed: seats,
            unexpired: seats,
            in_use,
            expiry: "permanent".into(),
            ..Default::default()
        };
        let grant = |vendor: &str, f: &str, index: u64, count: u32, user: &str| pb::GrantStatus {
            token: Some(pb::GrantToken {
                term: 3,
                index,
                slot: 0,
            }),
            vendor: vendor.into(),
            feature: f.into(),
            count,
            user: user.into(),
            host: "ws1.example.com".into(),
            since_ms: 1_796_634_300_000,
            ..Default::default()
        };
        let status = pb::StatusReply {
            cluster_name: "LICSRV".into(),
            active_node: 2,
            nodes: vec![
                node(1, "lic1.example.com"),
                node(2, "lic2"),
                node(3, "lic3"),
            ],
            features: vec![
                feature("acme", "cad", 10, 4),
                feature("beta", "sim", 1, 1),
                feature("beta", "idle", 5, 0),
            ],
            grants: vec![
                grant("acme", "cad", 40, 3, "ada"),
                grant("acme", "cad", 41, 1, "bob"),
                grant("beta", "sim", 42, 1, "ada"),
            ],
            ..Default::default()
        };
        (status, |id: u64| id != 3)
    }

    // flexlm_exporter's expressions (github.com/mjtrangoni/flexlm_exporter,
    // collector/regexp.go), and its way of keying servers by their first
    // DNS label (collector/lmstat_linux.go), read raftlm's lmstat -a.
    #[test]
    fn flexlm_exporter_reads_lmstat() {
        use regex::Regex;
        let servers = Regex::new(r"^License server status: (?P<servers>[\w,.@\-]+)").unwrap();
        let server = Regex::new(concat!(
            r"(?P<fqdn>[\w\.\-]+): license server (?P<status>\w+)(?P<master>\s",
            r"\(MASTER\))? (?P<version>v[\d\.]+)$"
        ))
        .unwrap();
        let vendor =
            Regex::new(r"^\s+(?P<vendor>\w+): (?P<status>UP|DOWN) (?P<version>v[\d\.]+)$").unwrap();
        let usage = Regex::new(concat!(
            r"^Users of (?P<name>.*):\s+\(Total of (?P<issued>\d+) \w+ issued\;\s+",
            r"Total of (?P<used>\d+) \w+ in use\)$"
        ))
        .unwrap();
        let user = Regex::new(concat!(
            r"^\s+(?P<user>[\w[:print:]]+) [\w\-\.]+ [[:print:]]+ (?P<ver>\(v[\w\.]+\)) \([\w\-\.]+\/\d+ ",
            r"\d+\)\, start (?P<since>\w+ \d+\/\d+ \d+\:\d+)(\,\s(?P<licenses>\d+)\s\w+|)",
            r"(\s+\(linger\:\s\d+\s\/\s\d+\))?",
            r"(\,\s+PID\:\s+\d+\s?)?$"
        ))
        .unwrap();
        let version =
            Regex::new(r"^lmstat (?P<version>v[\d\.]+) build (?P<build>\d+) (?P<arch>[\w]+)")
                .unwrap();
        let (status, answered) = sample();
        let asked = Lmstat {
            all: true,
            ..Lmstat::default()
        };
        let text = lmstat_text(&status, &asked, answered, 1_796_634_400_000);
        assert!(
            !text.lines().any(|l| l.ends_with(' ')),
            "trailing spaces:\n{text}"
        );
        let mut labels = Vec::new();
        let (mut up, mut masters, mut vendors, mut features, mut seats_by_user) = (0, 0, 0, 0, 0);
        for line in text.lines() {
            if let Some(m) = servers.captures(line) {
                for port_server in m["servers"].split(',') {
                    let fqdn = port_server.split('@').nth(1).expect("port@host");
                    labels.push(fqdn.split('.').next().unwrap().to_string());
                }
            } else if let Some(m) = server.captures(line) {
                let label = m["fqdn"].split('.').next().unwrap();
                assert!(
                    labels.iter().any(|l| l == label),
                    "{label} not in the servers line"
                );
                up += usize::from(&m["status"] == "UP");
                masters += usize::from(m.name("master").is_some());
            } else if vendor.is_match(line) {
                vendors += 1;
            } else if usage.is_match(line) {
                features += 1;
            } else if let Some(m) = user.captures(line) {
                seats_by_user += m
                    .name("licenses")
                    .map_or(1, |n| n.as_str().parse::<usize>().unwrap());
            }
        }
        assert_eq!((up, masters, vendors, features), (2, 1, 2, 3), "{text}");
        assert_eq!(seats_by_user, 5, "{text}");
        assert!(
            text.contains("lic3: Cannot connect to license server system."),
            "{text}"
        );
        assert!(version.is_match(&version_text()));
    }

    // phpLicenseWatcher's expressions (github.com/phpLicenseWatcher/phpLicenseWatcher,
    // lmtools_lib.php) read raftlm's lmstat -a, lmstat and lmcksum.
    #[test]
    fn php_license_watcher_reads_lmstat() {
        use regex::Regex;
        let users_counted = Regex::new(
            r"(?i)^Users of (?P<feature>[\w\- ]+):  \(Total of (?P<total_licenses>\d+) licenses? issued;  Total of (?P<used_licenses>\d+)",
        )
        .unwrap();
        let details = Regex::new(
            r"(?i)^ *(?P<user>[^ ]+) (?P<host>[^ ]+) .+, start \w{3} (?P<date>[0-9]{1,2}/[0-9]{1,2}) (?P<time>[0-9]{1,2}:[0-9]{2})(?:, (?P<num_licenses>\d+) licenses)?",
        )
        .unwrap();
        let server_up = Regex::new(
            r"(?im)license server UP (?:\(MASTER\) )?(?P<server_version>v\d+(?:\.\d+)+)$",
        )
        .unwrap();
        let cksum = Regex::new(
            r"(?i)(?:INCREMENT|FEATURE) (?P<name>[^ ]+) (?P<vendor_daemon>[^ ]+) [^ ]+ (?P<expiration_date>[^ ]+) (?P<num_licenses>[^ ]+)",
        )
        .unwrap();
        let (mut status, answered) = sample();
        let text = lmstat_text(
            &status,
            &Lmstat {
                all: true,
                ..Lmstat::default()
            },
            &answered,
            1_796_634_400_000,
        );
        let counted: Vec<_> = text
            .lines()
            .filter_map(|l| users_counted.captures(l))
            .collect();
        assert_eq!(counted.len(), 3);
        assert_eq!(&counted[0]["used_licenses"], "4");
        let held: Vec<_> = text.lines().filter_map(|l| details.captures(l)).collect();
        assert_eq!(held.len(), 3, "{text}");
        assert_eq!(
            (&held[0]["user"], &held[0]["host"], &held[0]["num_licenses"]),
            ("ada", "ws1.example.com", "3")
        );
        let short = lmstat_text(&status, &Lmstat::default(), &answered, 1_796_634_400_000);
        assert!(server_up.is_match(&short), "{short}");
        status.lines = vec![pb::LicenseLine {
            keyword: "INCREMENT".into(),
            feature: "cad".into(),
            vendor: "acme".into(),
            version: "2.0".into(),
            expiry: "permanent".into(),
            seats: 10,
            ..Default::default()
        }];
        let sums = lmcksum_text(&status);
        // phpLicenseWatcher reads line by line and trims what it captured.
        let m = sums.lines().find_map(|l| cksum.captures(l)).expect(&sums);
        assert_eq!((m["name"].trim(), m["num_licenses"].trim()), ("cad", "10"));
    }
}
