//! raftlm — a floating-license server that runs as a three-node Raft cluster.
//!
//! See `docs/architecture.md` for the layers and how they fit together.

pub mod activator;
pub mod cli;
pub mod client;
pub mod clock;
pub mod codec;
pub mod config;
pub mod fault;
pub mod keys;
pub mod lease;
pub mod license;
pub mod local;
pub mod node;
pub mod proto;
pub mod raft;
pub mod sd_notify;
pub mod server;
pub mod text;
pub mod tls;
pub mod wire;
