//! `ServerList`: where a client looks for the cluster.
//!
//! The syntax is the one `--server` and `RAFTLM_SERVER` take (`README.md`, "Commands"): one
//! address, or a comma-separated list, each entry either `host:port` or
//! FlexNet's `port@host`, e.g. `27000@h1,27000@h2,127.0.0.1:27003`. IPv6
//! literals are written `[::1]:27000` or `27000@::1`. Entries are normalized to
//! `host:port` (IPv6 in brackets) and kept in the order given, duplicates
//! dropped; the client tries them in that order.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The environment variable that holds the default server list.
pub const SERVER_ENV: &str = "RAFTLM_SERVER";

/// The default access point, used when neither `--server` nor `RAFTLM_SERVER` is set.
pub const DEFAULT_SERVER: &str = "127.0.0.100:27000";

/// Most addresses one server list may hold.
pub const SERVERS_MAX: usize = 64;

/// Longest host name accepted, in bytes (the DNS limit).
pub const HOST_BYTES_MAX: usize = 253;

/// A server list that cannot be used, with the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerListError {
    /// Nothing was given.
    #[error("no server given: write host:port or port@host, several separated by commas")]
    Empty,
    /// An entry between two commas (or before the first, after the last) is empty.
    #[error("entry {position} of the server list \"{list}\" is empty")]
    EmptyEntry {
        /// The entry's position, from 1.
        position: usize,
        /// The whole list.
        list: String,
    },
    /// An entry has no port.
    #[error("\"{entry}\" has no port: write host:port or port@host, e.g. 27000@{entry}")]
    MissingPort {
        /// The entry.
        entry: String,
    },
    /// An entry is written as a URL.
    #[error("\"{entry}\": leave out the scheme and write host:port or port@host")]
    Scheme {
        /// The entry.
        entry: String,
    },
    /// An entry's port is not a number from 1 to 65535.
    #[error("\"{entry}\": port \"{port}\" is not a number from 1 to 65535")]
    BadPort {
        /// The entry.
        entry: String,
        /// The port as written.
        port: String,
    },
    /// An entry's host is not a host name or IP address.
    #[error("\"{entry}\": \"{host}\" is not a host name or IP address")]
    BadHost {
        /// The entry.
        entry: String,
        /// The host as written.
        host: String,
    },
    /// More than [`SERVERS_MAX`] addresses.
    #[error("{count} servers given; at most {SERVERS_MAX} are allowed")]
    TooMany {
        /// How many were given.
        count: usize,
    },
}

/// The addresses a client tries, in order: the access point, or the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList {
    addresses: Vec<String>,
}

impl ServerList {
    /// Parses the `--server` syntax (see the module docs).
    pub fn parse(text: &str) -> Result<ServerList, ServerListError> {
        if text.trim().is_empty() {
            return Err(ServerListError::Empty);
        }
        let mut addresses: Vec<String> = Vec::new();
        for (i, entry) in text.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(ServerListError::EmptyEntry {
                    position: i + 1,
                    list: text.to_string(),
                });
            }
            let address = parse_entry(entry)?;
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        if addresses.len() > SERVERS_MAX {
            return Err(ServerListError::TooMany {
                count: addresses.len(),
            });
        }
        Ok(ServerList { addresses })
    }

    /// The list from `RAFTLM_SERVER` when it is set and not empty, else the
    /// default access point [`DEFAULT_SERVER`].
    pub fn from_env() -> Result<ServerList, ServerListError> {
        match std::env::var(SERVER_ENV) {
            Ok(value) if !value.trim().is_empty() => ServerList::parse(&value),
            _ => ServerList::parse(DEFAULT_SERVER),
        }
    }

    /// A list of already known `host:port` addresses (for example node
    /// addresses a test bound); each is checked like a parsed entry.
    pub fn from_addresses<I, S>(addresses: I) -> Result<ServerList, ServerListError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined: Vec<String> = addresses
            .into_iter()
            .map(|a| a.as_ref().to_string())
            .collect();
        ServerList::parse(&joined.join(","))
    }

    /// The addresses, normalized to `host:port`, in the order given.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// How many addresses the list holds (at least one).
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Always false: a parsed list holds at least one address.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}

impl FromStr for ServerList {
    type Err = ServerListError;
    fn from_str(s: &str) -> Result<ServerList, ServerListError> {
        ServerList::parse(s)
    }
}

impl fmt::Display for ServerList {
    /// The normalized addresses, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addresses.join(","))
    }
}

/// Parses one entry to a normalized `host:port`.
pub(crate) fn parse_entry(entry: &str) -> Result<String, ServerListError> {
    if entry.contains("://") {
        return Err(ServerListError::Scheme {
            entry: entry.to_string(),
        });
    }
    let (host, port) = if let Some((port, host)) = entry.split_once('@') {
        (host, port)
    } else if let Some(rest) = entry.strip_prefix('[') {
        // [v6]:port; the host keeps its brackets.
        match rest.split_once("]:") {
            Some((inner, port)) => (&entry[..inner.len() + 2], port),
            None if rest.ends_with(']') => {
                return Err(ServerListError::MissingPort {
                    entry: entry.to_string(),
                });
            }
            None => {
                return Err(ServerListError::BadHost {
                    entry: entry.to_string(),
                    host: entry.to_string(),
                });
            }
        }
    } else {
        match entry.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                // An IPv6 literal without brackets: ambiguous with its port.
                return Err(ServerListError::BadHost {
                    entry: entry.to_string(),
                    host: host.to_string(),
                });
            }
            Some((host, port)) => (host, port),
            None => {
                return Err(ServerListError::MissingPort {
                    entry: entry.to_string(),
                });
            }
        }
    };
    let port_number = parse_port(port).ok_or_else(|| ServerListError::BadPort {
        entry: entry.to_string(),
        port: port.to_string(),
    })?;
    let host = normalize_host(host).ok_or_else(|| ServerListError::BadHost {
        entry: entry.to_string(),
        host: host.to_string(),
    })?;
    Ok(format!("{host}:{port_number}"))
}

fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A host name, IPv4 address, or IPv6 address (bracketed in the result).
fn normalize_host(host: &str) -> Option<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        return Some(format!("[{v6}]"));
    }
    if bare != host {
        return None; // brackets around something that is not IPv6
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Some(v4.to_string());
    }
    let valid_name = !host.is_empty()
        && host.len() <= HOST_BYTES_MAX
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid_name.then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Vec<String> {
        ServerList::parse(text).unwrap().addresses().to_vec()
    }

    // Both FlexNet's port@host and host:port are accepted, mixed, in order, normalized.
    #[test]
    fn good_lists() {
        assert_eq!(list("127.0.0.100:27000"), ["127.0.0.100:27000"]);
        assert_eq!(
            list("27000@h1,27000@h2,127.0.0.1:27003"),
            ["h1:27000", "h2:27000", "127.0.0.1:27003"]
        );
        assert_eq!(list(" 27000@h1 , h2:27001 "), ["h1:27000", "h2:27001"]);
        assert_eq!(
            list("[::1]:27000,27001@::1,27002@[::1]"),
            ["[::1]:27000", "[::1]:27001", "[::1]:27002"]
        );
        assert_eq!(list("lic-srv.example.com:1"), ["lic-srv.example.com:1"]);
        assert_eq!(
            list("h1:27000,27000@h1"),
            ["h1:27000"],
            "duplicates are dropped"
        );
        assert_eq!(
            ServerList::parse("27000@h1,h2:1").unwrap().to_string(),
            "h1:27000,h2:1"
        );
    }

    // Malformed entries are refused with an error that names the entry and what is wrong.
    #[test]
    fn bad_lists() {
        let err = |text: &str| ServerList::parse(text).unwrap_err().to_string();
        assert_eq!(
            err(""),
            "no server given: write host:port or port@host, several separated by commas"
        );
        assert_eq!(err(" "), err(""));
        assert_eq!(
            err("h1:1,,h2:2"),
            "entry 2 of the server list \"h1:1,,h2:2\" is empty"
        );
        assert_eq!(
            err("h1:1,"),
            "entry 2 of the server list \"h1:1,\" is empty"
        );
        assert_eq!(
            err("h1"),
            "\"h1\" has no port: write host:port or port@host, e.g. 27000@h1"
        );
        assert_eq!(
            err("[::1]"),
            "\"[::1]\" has no port: write host:port or port@host, e.g. 27000@[::1]"
        );
        assert_eq!(
            err("h1:0"),
            "\"h1:0\": port \"0\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("h1:65536"),
            "\"h1:65536\": port \"65536\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("h1:"),
            "\"h1:\": port \"\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("abc@h1"),
            "\"abc@h1\": port \"abc\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("+1@h1"),
            "\"+1@h1\": port \"+1\" is not a number from 1 to 65535"
        );
        assert_eq!(
            err("27000@"),
            "\"27000@\": \"\" is not a host name or IP address"
        );
        assert_eq!(
            err(":27000"),
            "\":27000\": \"\" is not a host name or IP address"
        );
        assert_eq!(
            err("::1:27000"),
            "\"::1:27000\": \"::1\" is not a host name or IP address"
        );
        assert_eq!(
            err("http://h1:27000"),
            "\"http://h1:27000\": leave out the scheme and write host:port or port@host"
        );
        assert_eq!(
            err("h_1..x:1"),
            "\"h_1..x:1\": \"h_1..x\" is not a host name or IP address"
        );
        assert_eq!(
            err("[h1]:1"),
            "\"[h1]:1\": \"[h1]\" is not a host name or IP address"
        );
        let many: Vec<String> = (1..=65).map(|p| format!("h:{p}")).collect();
        assert_eq!(
            err(&many.join(",")),
            "65 servers given; at most 64 are allowed"
        );
    }
}
