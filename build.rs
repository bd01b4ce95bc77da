//! Generates the gRPC code from `proto/` with protox (a pure-Rust protobuf
//! compiler), so building raftlm needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/raftlm/v1/license.proto",
        "proto/raftlm/v1/admin.proto",
        "proto/raftlm/v1/raft.proto",
        "proto/raftlm/v1/restore.proto",
        // etcd's Put and Status, for `raftlm bench --compare-etcd` only.
        "proto/etcd/rpc.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
