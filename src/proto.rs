//! Generated gRPC types and services (`proto/raftlm/v1/*.proto`).
// The generated items' docs are the .proto files' comments, written for
// protobuf readers (`sha256:<hex>`, `[nodes]`), not as rustdoc Markdown.
#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links
)]

/// Package `raftlm.v1`.
pub mod v1 {
    tonic::include_proto!("raftlm.v1");
}

/// etcd's `etcdserverpb` (the part in `proto/etcd/rpc.proto`): what
/// `raftlm bench --compare-etcd` calls on an etcd cluster it starts.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
