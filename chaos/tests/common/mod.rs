//! What the chaos crate's integration tests share.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `raftlm` binary built with the feature fault-injection, in
/// `fault-injection/` under the harness's target directory, with the
/// harness's profile; built if needed (once per test process).
pub fn raftlm_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_raftlm_binary).clone()
}

fn build_raftlm_binary() -> PathBuf {
    let harness = Path::new(env!("CARGO_BIN_EXE_raftlm-chaos"));
    let profile_dir = harness.parent().expect("the harness lives in a directory");
    let profile = profile_dir.file_name().expect("a profile directory");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent")
        .join("fault-injection");
    let binary = target_dir.join(profile).join("raftlm");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("chaos/ sits in the workspace");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args([
            "build",
            "-p",
            "raftlm",
            "--bin",
            "raftlm",
            "--features",
            "fault-injection",
            "--target-dir",
        ])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status();
    match status {
        Ok(s) if s.success() => {}
        other => assert!(
            binary.is_file(),
            "cannot build the raftlm binary ({other:?}) and {} does not exist: run `cargo build -p raftlm --features fault-injection --target-dir target/fault-injection` first",
            binary.display()
        ),
    }
    binary
}

pub mod netns;
