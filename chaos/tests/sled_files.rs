//! sled's own files across power cuts: its `conf` file and the snapshots of
//! its page table (`snap.<lsn>`), which sled 0.34.7 writes at every open and
//! renames into place without syncing the directory.
//!
//! A lost snapshot name costs nothing that was synced: sled recovers from
//! the older snapshot (or from none) by scanning every log segment from that
//! snapshot's position on, and every live page is in a segment it finds.
//! `conf` lost its content at every cut until `DiskSync::open` synced it.
//!
//! Like tests/power_fs.rs, these mount FUSE filesystems and need root and
//! `/dev/fuse`; without them the test says why on stderr and passes.

use std::fs::{self, File};
use std::path::Path;

use raftlm::raft::disk_sync::DiskSync;
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

/// The snapshot files in sled's directory.
fn snapshots(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap."))
        .collect();
    names.sort();
    names
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// A log entry of about the size of a license checkout.
fn value(index: u64) -> Vec<u8> {
    let mut value = format!("entry {index} ").into_bytes();
    value.resize(300, b'.');
    value
}

/// sled opened as `raftlm::raft::store::open` does: default configuration
/// (512 KiB segments, the background flusher's `sync_all` every 500 ms).
fn open_sled(path: &Path) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new().path(path).open().unwrap();
    let log = db.open_tree("log").unwrap();
    (db, log)
}

/// Every entry in `range` is there, with its own value.
fn check(log: &sled::Tree, range: std::ops::Range<u64>, round: u32) {
    let missing: Vec<u64> = range
        .clone()
        .filter(|&i| log.get(key(i)).unwrap().as_deref() != Some(&value(i)[..]))
        .collect();
    assert!(
        missing.is_empty(),
        "round {round}: {} synced entries of {range:?} lost after a power cut, from {:?} to {:?}",
        missing.len(),
        missing.first(),
        missing.last()
    );
}

// A log written, purged and cut like a busy node's, 30 times over: sled
// reuses its segments many times and writes a snapshot at every open. Every
// other cut falls right after sled's open, once the log is synced but before
// the directory is, so sled's new snapshot name (and the removal of the
// older one) is lost while the writes it made to `db` at recovery are kept.
// Every entry synced before a cut is there after it, and `conf` keeps its
// content.
#[test]
fn power_cuts_lose_sleds_snapshot_names_but_no_synced_entry() {
    let work = tempfile::tempdir().unwrap();
    let Some(mut disk) = mounted(work.path()) else {
        return;
    };
    let path = disk.mountpoint().join("sled");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The entries synced and not purged: `first..next`.
    let (mut first, mut next) = (0u64, 0u64);
    let mut written = 0u64;
    let mut names_lost = 0;
    for round in 0..30 {
        let (db, log) = open_sled(&path);
        check(&log, first..next, round);
        if round % 2 == 1 {
            // sled's recovery already `sync_all`ed `db` when it zeroed the
            // torn tail and the segments the new snapshot leaves out; its
            // background flusher does it again within 500 ms. The power
            // fails before the directory is synced.
            File::open(path.join("db")).unwrap().sync_data().unwrap();
            disk.cut();
            std::mem::forget(log);
            std::mem::forget(db);
            let loss = disk.restore().unwrap();
            names_lost += loss.names;
            continue;
        }
        let sync = DiskSync::open(&path).unwrap();
        // 2,000 entries in batches, each flushed and synced as
        // `LogStore::append` does, then a purge of all but the last 300.
        for _ in 0..40 {
            let mut batch = sled::Batch::default();
            for _ in 0..50 {
                batch.insert(&key(next)[..], value(next));
                written += value(next).len() as u64;
                next += 1;
            }
            log.apply_batch(batch).unwrap();
            runtime.block_on(log.flush_async()).unwrap();
            sync.sync().unwrap();
        }
        let mut batch = sled::Batch::default();
        for old in log.range(..key(next - 300)).keys() {
            batch.remove(old.unwrap());
        }
        log.apply_batch(batch).unwrap();
        runtime.block_on(log.flush_async()).unwrap();
        sync.sync().unwrap();
        first = next - 300;
        // Writes in flight when the power fails.
        for i in 0..10 {
            log.insert(key(u64::MAX - i), value(0)).unwrap();
        }
        disk.cut();
        std::mem::forget(log);
        std::mem::forget(db);
        drop(sync);
        disk.restore().unwrap();
        let conf = fs::metadata(path.join("conf")).unwrap().len();
        assert!(
            conf > 8,
            "round {round}: sled's conf file holds {conf} bytes after the cut \
             (sled logs `empty/corrupt configuration file found`)"
        );
    }
    // The cuts did what they are meant to: sled's segments were reused
    // (the file stays far smaller than what was written to it), and
    // snapshot names were lost.
    let len = fs::metadata(path.join("db")).unwrap().len();
    assert!(len * 2 < written, "db is {len} bytes for {written} written");
    assert!(names_lost >= 15, "{names_lost} names lost");
    let (_db, log) = open_sled(&path);
    check(&log, first..next, 30);
    assert_eq!(snapshots(&path).len(), 1, "{:?}", snapshots(&path));
}
