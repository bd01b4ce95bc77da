//! One local cluster of N nodes on this machine, the only launcher `raftlm
//! demo`, `raftlm bench`, the tests and the chaos harness use:
//!
//! - [`files`]: the cluster's files from values — vendor key, signed
//!   licenses, certificates ([`tls`]) and each node's config, built as a
//!   [`Config`](crate::config::Config) and written as TOML;
//! - [`process`]: the nodes as `raftlm server` processes (start, signal,
//!   kill, reap, logs; killed with their launcher);
//! - [`in_process`]: the nodes as [`Node`](crate::node::Node)s in this
//!   process, stopped and restarted on their addresses;
//! - [`probe`] and [`wait`]: a node's status, and waiting for a condition,
//!   an active node or a licensed cluster.

pub mod files;
pub mod in_process;
pub mod probe;
pub mod process;
pub mod tls;
pub mod wait;
