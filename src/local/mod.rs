//! A cluster on this machine, as `raftlm demo`, `raftlm bench`, the tests and
//! the chaos harness set one up: its certificates ([`tls`]) and how to ask a
//! node for its status ([`probe`]). The launcher of `raftlm demo` and
//! `raftlm bench` is `cli/local_cluster.rs`.

pub mod probe;
pub mod tls;
