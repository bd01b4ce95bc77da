//! Generated gRPC types and services (`proto/raftlm/v1/*.proto`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Package `raftlm.v1`.
pub mod v1 {
    tonic::include_proto!("raftlm.v1");
}
