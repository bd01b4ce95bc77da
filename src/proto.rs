//! Generated gRPC types and services (`proto/raftlm/v1/*.proto`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Package `raftlm.v1`.
pub mod v1 {
    tonic::include_proto!("raftlm.v1");
}

/// etcd's `etcdserverpb` (the part in `proto/etcd/rpc.proto`): what
/// `raftlm bench --compare-etcd` calls on an etcd cluster it starts.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
