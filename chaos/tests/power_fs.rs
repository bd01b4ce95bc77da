//! The power-cut filesystem through the kernel: what survives a cut is what
//! was synced, no more and no less; sled's own `flush_async` does not make a
//! write survive, and raftlm's `DiskSync` does.
//!
//! These tests mount FUSE filesystems with mount(2), which needs root and
//! `/dev/fuse` (CI runs as root). Without them each test says why on stderr
//! and passes without checking anything.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

use raftlm_chaos::powerfs::{self, PowerDisk};

fn mounted(dir: &Path) -> Option<PowerDisk> {
    if let Err(why) = powerfs::available() {
        eprintln!("skipped: {why}");
        return None;
    }
    let point = dir.join("disk");
    fs::create_dir(&point).unwrap();
    Some(PowerDisk::mount(&point).expect("mount the power-cut filesystem"))
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

// Data and names survive exactly as far as they were synced; while the
// power is off nothing answers.
#[test]
fn a_power_cut_keeps_only_synced_data_and_names() {
    let work = tempfile::tempdir().unwrap();
    let Some(mut disk) = mounted(work.path()) else {
        return;
    };
    let root = disk.mountpoint().to_path_buf();

    let kept = root.join("kept");
    let mut file = File::create(&kept).unwrap();
    file.write_all(b"synced").unwrap();
    file.sync_data().unwrap();
    sync_dir(&root);
    file.write_all(b" and more, never synced").unwrap();
    assert_eq!(fs::read(&kept).unwrap(), b"synced and more, never synced");

    // A rename made durable, and one that is not.
    fs::create_dir(root.join("sub")).unwrap();
    sync_dir(&root);
    fs::write(root.join("sub/tmp1"), b"one").unwrap();
    File::open(root.join("sub/tmp1"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::rename(root.join("sub/tmp1"), root.join("sub/final1")).unwrap();
    sync_dir(&root.join("sub"));
    fs::write(root.join("sub/tmp2"), b"two").unwrap();
    File::open(root.join("sub/tmp2"))
        .unwrap()
        .sync_all()
        .unwrap();
    sync_dir(&root.join("sub"));
    fs::rename(root.join("sub/tmp2"), root.join("sub/final2")).unwrap();
    fs::remove_file(root.join("sub/final1")).unwrap();

    // Synced data under a name whose directory was never synced again.
    let unnamed = root.join("unnamed");
    let mut other = File::create(&unnamed).unwrap();
    other.write_all(b"data").unwrap();
    other.sync_all().unwrap();

    disk.cut();
    let error = fs::read(&kept).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    drop(file);
    drop(other);
    let loss = disk.restore().unwrap();
    assert!(loss.bytes > 0 && loss.names > 0, "{loss:?}");

    assert_eq!(fs::read(&kept).unwrap(), b"synced");
    assert_eq!(
        fs::metadata(&unnamed).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let mut names: Vec<String> = fs::read_dir(root.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["final1", "tmp2"]);
    assert_eq!(fs::read(root.join("sub/final1")).unwrap(), b"one");
    assert_eq!(fs::read(root.join("sub/tmp2")).unwrap(), b"two");

    // The restored filesystem works as a new one does.
    let mut again = OpenOptions::new().append(true).open(&kept).unwrap();
    again.write_all(b"!").unwrap();
    again.sync_data().unwrap();
    disk.cut();
    drop(again);
    disk.restore().unwrap();
    assert_eq!(fs::read(&kept).unwrap(), b"synced!");
    assert_eq!(disk.cuts(), 2);
}

fn open_sled(path: &Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        // No background flusher: its `sync_all` every 500 ms would make the
        // outcome depend on timing. What remains is what a caller's
        // `flush_async` does.
        .flush_every_ms(None)
        .open()
        .unwrap()
}

// sled 0.34.7's `flush_async` returns once `sync_file_range` did, which
// makes nothing durable here; `DiskSync` after it (what every raftlm store
// does before acknowledging) keeps the write.
#[test]
fn sled_flush_async_alone_loses_a_write_and_disk_sync_keeps_it() {
    let work = tempfile::tempdir().unwrap();
    let Some(mut disk) = mounted(work.path()) else {
        return;
    };
    let path = disk.mountpoint().join("sled");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let db = open_sled(&path);
    let sync = raftlm::raft::disk_sync::DiskSync::open(&path).unwrap();
    db.insert("first", "fully synced").unwrap();
    db.flush().unwrap();
    sync.sync().unwrap();
    db.insert("second", "flush_async only").unwrap();
    runtime.block_on(db.flush_async()).unwrap();
    disk.cut();
    // The process "dies" here: nothing of sled runs again on this mount.
    std::mem::forget(db);
    drop(sync);
    let loss = disk.restore().unwrap();
    assert!(loss.bytes > 0, "{loss:?}");

    let db = open_sled(&path);
    assert_eq!(
        db.get("first").unwrap().as_deref(),
        Some(&b"fully synced"[..])
    );
    assert_eq!(
        db.get("second").unwrap(),
        None,
        "sled's flush_async alone made the write durable"
    );
    let sync = raftlm::raft::disk_sync::DiskSync::open(&path).unwrap();
    db.insert("third", "flush_async then DiskSync").unwrap();
    runtime.block_on(db.flush_async()).unwrap();
    sync.sync().unwrap();
    disk.cut();
    std::mem::forget(db);
    drop(sync);
    disk.restore().unwrap();

    let db = open_sled(&path);
    assert_eq!(
        db.get("third").unwrap().as_deref(),
        Some(&b"flush_async then DiskSync"[..])
    );
}
