//! Making sled's writes survive a power cut: a real `fdatasync`/`fsync` of
//! every file a write depends on.
//!
//! sled 0.34.7's `flush_async()` makes its log writes stable with
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`: the dirty pages reach
//! the device, but neither the device's write cache nor the file's metadata
//! (its new length) is flushed, and items over sled's blob threshold go to
//! files under `blobs/` that sled never syncs at all. A process kill loses
//! nothing of that (the page cache survives); a power cut can.
//!
//! What sled writes in its directory, and what makes it durable:
//! - `db`, its log of fixed-size segments (reused once their pages moved
//!   on): `fdatasync` after every flush (below). sled also `sync_all`s it on
//!   its own: at recovery, on truncation and every 500 ms in its background
//!   flusher.
//! - `blobs/<lsn>`, large items (a state snapshot, a large log entry): `fsync`
//!   of each new one once its content is whole (its CRC checks; sled may
//!   still be writing it), then of `blobs` — never the name before the
//!   content: sled's recovery stops at the first named blob it cannot read
//!   and discards the rest of its log.
//! - `conf`, its storage parameters, written when it finds none or an empty
//!   one and never synced by sled: `fsync` at open. Without it the file came
//!   back empty after every power cut (sled then warns and rewrites it with
//!   the same defaults, so nothing was lost but the warning was constant).
//! - `snap.<lsn>`, a snapshot of its page table, written at every open and
//!   only then: synced under a temporary name, renamed into place and the
//!   older one removed, without a sync of the directory. `fsync` of the
//!   directory at open, BEFORE the first `fdatasync` of `db`, names it before
//!   the log writes that assume it are durable.
//!
//! What is left: sled's own syncs of `db` at recovery (zeroing its torn tail
//! and the segments the new snapshot leaves out) and in its flusher can make
//! log writes durable before the new snapshot's name. That is harmless: a
//! lost snapshot name brings back the older snapshot (or none), and sled
//! recovers from it by scanning every segment from that snapshot's position
//! on; each segment header carries its log position, so reused segments are
//! read in log order. `chaos/tests/sled_files.rs` cuts the power in exactly
//! that window, over a log whose segments were reused many times, and finds
//! every synced entry. The directory is not synced on every call: sled
//! writes no snapshot after open, and blob names are covered by `blobs`.
//!
//! [`DiskSync::sync`] completes what `flush_async` started, and every store
//! calls it after `flush_async` and before it acknowledges anything to
//! openraft (log appends, votes, purges and truncations, snapshot stores):
//! - `fdatasync` of sled's log file `db` through a handle of our own (one
//!   syscall flushes the file's data, its length and the device cache);
//! - `fsync` of every blob file created since the last call, once whole,
//!   before the log; then of the `blobs` directory, after the log, when its
//!   names changed (see [`DiskSync::sync`]);
//! - at open, `fsync` of `conf`, of the database directory (before `db`)
//!   and of its parent, which name the files and the directory sled created
//!   on a first start and the snapshot it wrote at this open.
//!
//! Calls are serialized by a mutex (openraft issues storage calls one at a
//! time anyway), and they run on tokio's blocking pool. The cost is one
//! `fdatasync` per acknowledged write, which batching keeps to one per batch,
//! plus three `fsync`s at open.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Whether this build skips every sync (the test-only cargo feature
/// `skip-fdatasync`, which leaves only what sled's `flush_async` does: it
/// exists to show that the power-cut fault of `raftlm-chaos` finds the loss).
pub const SKIPPED: bool = cfg!(feature = "skip-fdatasync");

/// sled's log file in its directory.
const DB_FILE: &str = "db";
/// sled's record of its storage parameters, written at creation.
const CONF_FILE: &str = "conf";
/// sled's directory of large items.
const BLOBS_DIR: &str = "blobs";

/// Syncs one sled database's files. See the module docs.
pub struct DiskSync {
    dir: PathBuf,
    db: File,
    // std Mutex: held for the blocking syscalls only, never across `.await`.
    blobs: Mutex<Blobs>,
}

/// What [`DiskSync`] knows of sled's blob files.
#[derive(Default)]
struct Blobs {
    /// Blobs whose whole content (their CRC checks) was synced.
    synced: BTreeSet<String>,
    /// The names the `blobs` directory held when it was last synced.
    named: BTreeSet<String>,
}

/// Longest [`DiskSync::sync`] waits for sled to finish writing a blob file
/// (its CRC does not check yet) before it gives up with an error.
pub const BLOB_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// How often an incomplete blob file is looked at again while waiting for
/// it: sled writes a blob in one go, so it is whole within moments.
pub const BLOB_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether the blob file at `path` holds a whole blob as sled writes it: a
/// little-endian CRC-32 of the rest (a kind byte, then the data). A blob
/// sled is still writing (or one a crash cut short) does not check.
fn blob_complete(path: &Path) -> io::Result<bool> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 5 {
        return Ok(false);
    }
    let expected = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[4..]);
    Ok(hasher.finalize() == expected)
}

impl DiskSync {
    /// Opens a handle on the database in `dir` (which sled has opened) and
    /// syncs everything it holds now: sled's `conf` file, the names in the
    /// directory (the snapshot sled just wrote among them), the log, the
    /// blobs, and the directory's own name in its parent.
    pub fn open(dir: &Path) -> io::Result<DiskSync> {
        let db = File::open(dir.join(DB_FILE))?;
        let sync = DiskSync {
            dir: dir.to_path_buf(),
            db,
            blobs: Mutex::new(Blobs::default()),
        };
        if SKIPPED {
            return Ok(sync);
        }
        // sled writes `conf` once, when it finds none (or an empty one), and
        // never syncs it: without this its content is lost at every cut.
        File::open(dir.join(CONF_FILE))?.sync_all()?;
        // The directory before the log: sled renamed its new snapshot into
        // place (and removed the older one) at open, and the log writes made
        // from now on assume that snapshot; name it first.
        File::open(dir)?.sync_all()?;
        sync.sync()?;
        // The directory (sled creates it on a first start) is named by its
        // parent: without that, a power cut right after the first start could
        // take the whole store, votes included, and the node would come back
        // blank.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(sync)
    }

    /// Makes every write sled has flushed so far survive a power cut. Blocking.
    ///
    /// In order: (1) the content of every blob file, once sled has finished
    /// writing it (its CRC checks; one still being written is waited for);
    /// (2) the log; (3) the `blobs` directory, when its names changed — after
    /// checking again that every blob it names is whole and synced. A name is
    /// therefore never made durable before its content: sled's recovery stops
    /// at the first blob that is named but unreadable and discards the rest of
    /// the log (a blob that is not named at all is skipped). A removed blob's
    /// name goes (3) only after the log that replaced it (2).
    pub fn sync(&self) -> io::Result<()> {
        if SKIPPED {
            return Ok(());
        }
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.dir.join(BLOBS_DIR);
        self.sync_blob_contents(&dir, &mut blobs)?;
        self.db.sync_data()?;
        // Blobs created since step 1 are checked and synced before the
        // directory makes their names durable.
        let present = self.sync_blob_contents(&dir, &mut blobs)?;
        if present != blobs.named {
            File::open(&dir)?.sync_all()?;
            blobs.named = present;
        }
        Ok(())
    }

    /// Syncs the content of every whole blob file in `dir` not synced yet,
    /// waiting (up to [`BLOB_WAIT_MAX`]) for the ones sled is still writing;
    /// returns the names present, and forgets removed ones.
    fn sync_blob_contents(&self, dir: &Path, blobs: &mut Blobs) -> io::Result<BTreeSet<String>> {
        let deadline = std::time::Instant::now() + BLOB_WAIT_MAX;
        loop {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    return Ok(BTreeSet::new());
                }
                Err(error) => return Err(error),
            };
            let mut present = BTreeSet::new();
            let mut unfinished = None;
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !blobs.synced.contains(&name) {
                    match blob_complete(&entry.path()) {
                        Ok(true) => {
                            File::open(entry.path())?.sync_all()?;
                            blobs.synced.insert(name.clone());
                        }
                        Ok(false) => unfinished = Some(name.clone()),
                        // Removed between the listing and the read.
                        Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                        Err(error) => return Err(error),
                    }
                }
                present.insert(name);
            }
            // Forget blobs sled removed, so the set does not grow without bound.
            blobs.synced.retain(|name| present.contains(name));
            let Some(name) = unfinished else {
                return Ok(present);
            };
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "blob file {}/{name} stayed incomplete for {BLOB_WAIT_MAX:?}",
                    dir.display()
                )));
            }
            std::thread::sleep(BLOB_POLL);
        }
    }

    /// [`sync`](DiskSync::sync) on tokio's blocking pool.
    pub async fn sync_async(self: &std::sync::Arc<Self>) -> io::Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.sync())
            .await
            .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob file as sled writes it: CRC-32 (little-endian) of a kind byte
    /// and the data, then the kind byte and the data.
    fn blob(data: &[u8]) -> Vec<u8> {
        let mut body = vec![7u8];
        body.extend_from_slice(data);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&body);
        let mut out = hasher.finalize().to_le_bytes().to_vec();
        out.extend(body);
        out
    }

    // Every whole blob file is synced once, and removed blobs are forgotten,
    // so the set of synced names stays the size of the directory.
    #[test]
    fn new_blobs_are_synced_and_removed_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), b"log").unwrap();
        std::fs::write(dir.path().join(CONF_FILE), b"conf").unwrap();
        let sync = DiskSync::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join(BLOBS_DIR)).unwrap();
        std::fs::write(dir.path().join(BLOBS_DIR).join("17"), blob(b"blob")).unwrap();
        sync.sync().unwrap();
        let names = |s: &DiskSync| s.blobs.lock().unwrap().synced.clone();
        assert_eq!(names(&sync), BTreeSet::from(["17".to_string()]));
        std::fs::remove_file(dir.path().join(BLOBS_DIR).join("17")).unwrap();
        sync.sync().unwrap();
        assert!(names(&sync).is_empty());
        assert!(sync.blobs.lock().unwrap().named.is_empty());
    }

    // A blob sled is still writing (created, not whole yet) is waited for:
    // its name is not made durable before its content, which a power cut
    // would turn into a named, empty blob that ends sled's recovery there.
    #[test]
    fn a_blob_being_written_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), b"log").unwrap();
        std::fs::write(dir.path().join(CONF_FILE), b"conf").unwrap();
        let sync = std::sync::Arc::new(DiskSync::open(dir.path()).unwrap());
        let blobs = dir.path().join(BLOBS_DIR);
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("42"), b"").unwrap();
        let syncing = {
            let sync = sync.clone();
            std::thread::spawn(move || sync.sync())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !syncing.is_finished(),
            "synced while the blob was being written"
        );
        assert!(
            sync.blobs.try_lock().is_err(),
            "the sync holds the lock while it waits"
        );
        std::fs::write(blobs.join("42"), blob(b"snapshot")).unwrap();
        syncing.join().unwrap().unwrap();
        let state = sync.blobs.lock().unwrap();
        assert!(state.synced.contains("42") && state.named.contains("42"));
    }

    // A directory without sled's log file is an error, not a silent no-op.
    #[test]
    fn missing_log_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskSync::open(dir.path()).is_err());
    }
}
