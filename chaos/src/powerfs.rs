//! A filesystem that can lose power: FUSE, in memory, keeping every write
//! since a file's last sync apart so that a power cut can drop it.
//!
//! A `kill -9` loses nothing a process wrote: the kernel's page cache
//! outlives the process. A power cut loses everything that was not made
//! stable with `fsync`/`fdatasync`. To test that, each node's data directory
//! is a mount of this filesystem (the harness is the FUSE server, one thread
//! per mount). It keeps, for every file, the *durable* content (as of its
//! last `fsync`/`fdatasync`) and the writes since then, and, for every
//! directory, the durable entries (as of its last `fsync`) and the current
//! ones. Reads see the current state. [`PowerDisk::cut`] is the power
//! failing: from that instant every request fails with `EIO`; then the
//! harness kills the node, and [`PowerDisk::restore`] drops the connection,
//! throws away everything not durable and mounts the durable state again, as
//! a machine coming back finds its disk.
//!
//! The model is POSIX's promise and no more: a file's data and length are
//! durable after `fsync` or `fdatasync` of that file; a name (created,
//! renamed, removed) is durable after `fsync` of its directory. Nothing is
//! written back on its own: without a sync a write is lost, however old.
//! `sync_file_range` is not a FUSE request at all (writes reach this server
//! as they are made), so data it alone "made stable" is lost too, which is
//! how sled 0.34.7's `flush_async` looks without raftlm's `fdatasync`
//! (`src/raft/disk_sync.rs`).
//!
//! Mounting needs root (the harness mounts with `mount(2)`, not the setuid
//! `fusermount3`, and never asks for auto-unmount) and `/dev/fuse`;
//! [`available`] says why not. A mount whose server stops answering is
//! aborted through `/sys/fs/fuse/connections/<id>/abort` and detached.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// Bytes per page of file data held in memory.
const PAGE: u64 = 4096;
/// Largest file this filesystem holds (a node's sled log stays far below).
pub const FILE_MAX: u64 = 1 << 36;
/// Longest name in a directory.
const NAME_MAX: usize = 255;

type Page = Box<[u8; PAGE as usize]>;

fn zero_page() -> Page {
    Box::new([0; PAGE as usize])
}

/// One file's bytes: the durable pages and, over them, the writes since the last sync.
#[derive(Default)]
struct Data {
    durable: BTreeMap<u64, Page>,
    durable_len: u64,
    dirty: BTreeMap<u64, Page>,
    len: u64,
    /// The file was cut to this length since the last sync: durable bytes
    /// from here on read as zeros (until a write replaces their page).
    cut: Option<u64>,
}

impl Data {
    /// The current content of page `index`, `None` if it is all zeros.
    fn page(&self, index: u64) -> Option<Page> {
        if let Some(page) = self.dirty.get(&index) {
            return Some(page.clone());
        }
        let page = self.durable.get(&index)?;
        let mut page = page.clone();
        if let Some(cut) = self.cut {
            let start = index * PAGE;
            if cut <= start {
                return None;
            }
            if cut < start + PAGE {
                page[(cut - start) as usize..].fill(0);
            }
        }
        Some(page)
    }

    fn read(&self, offset: u64, size: u64) -> Vec<u8> {
        let end = (offset.saturating_add(size)).min(self.len);
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0; (end - offset) as usize];
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = ((PAGE as usize - within) as u64).min(end - at) as usize;
            let dst = &mut out[(at - offset) as usize..(at - offset) as usize + n];
            if let Some(page) = self.dirty.get(&index) {
                dst.copy_from_slice(&page[within..within + n]);
            } else if let Some(page) = self.page(index) {
                dst.copy_from_slice(&page[within..within + n]);
            }
            at += n as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = (PAGE as usize - within).min(rest.len());
            if !self.dirty.contains_key(&index) {
                let page = self.page(index).unwrap_or_else(zero_page);
                self.dirty.insert(index, page);
            }
            let page = self.dirty.get_mut(&index).expect("inserted above");
            page[within..within + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            at += n as u64;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            let first_gone = len.div_ceil(PAGE);
            self.dirty.retain(|&index, _| index < first_gone);
            if !len.is_multiple_of(PAGE)
                && let Some(page) = self.dirty.get_mut(&(len / PAGE))
            {
                page[(len % PAGE) as usize..].fill(0);
            }
            self.cut = Some(self.cut.map_or(len, |cut| cut.min(len)));
        }
        self.len = len;
    }

    /// `fsync`/`fdatasync`: the current content becomes durable.
    fn sync(&mut self) {
        if let Some(cut) = self.cut.take() {
            let first_gone = cut.div_ceil(PAGE);
            self.durable.retain(|&index, _| index < first_gone);
            if !cut.is_multiple_of(PAGE)
                && let Some(page) = self.durable.get_mut(&(cut / PAGE))
            {
                page[(cut % PAGE) as usize..].fill(0);
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.durable.extend(dirty);
        self.durable_len = self.len;
    }

    /// The power fails: what was not synced is gone.
    fn lose_unsynced(&mut self) {
        self.dirty.clear();
        self.cut = None;
        self.len = self.durable_len;
    }
}

enum Body {
    File(Data),
    Dir {
        /// What `readdir` and `lookup` see.
        entries: BTreeMap<OsString, u64>,
        /// What a power cut keeps: the entries as of the last `fsync` of the directory.
        durable: BTreeMap<OsString, u64>,
        parent: u64,
    },
}

struct Inode {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Open handles: an unlinked file lives until they are closed.
    open: u32,
}

impl Inode {
    fn new(body: Body, perm: u16, request: &Request) -> Inode {
        let now = SystemTime::now();
        Inode {
            body,
            perm,
            uid: request.uid(),
            gid: request.gid(),
            atime: now,
            mtime: now,
            ctime: now,
            open: 0,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, nlink) = match &self.body {
            Body::File(data) => (FileType::RegularFile, data.len, 1),
            Body::Dir { entries, .. } => (FileType::Directory, 0, 2 + entries.len() as u32),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind,
            perm: self.perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: PAGE as u32,
        }
    }
}

const ROOT: u64 = 1;

/// What a power cut dropped, for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// Bytes of file data written but never synced (pages, rounded up).
    pub bytes: u64,
    /// Files whose content went back to an older state.
    pub files: u64,
    /// Directory entries created, renamed or removed but never synced.
    pub names: u64,
}

/// The whole filesystem: every inode, current and durable.
struct Disk {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// The power is off: every request fails.
    off: bool,
    /// Syncs are answered but do nothing (see [`PowerDisk::hold_syncs`]).
    syncs_held: bool,
}

impl Disk {
    fn new() -> Disk {
        let root = Inode {
            body: Body::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent: ROOT,
            },
            perm: 0o755,
            uid: 0,
            gid: 0,
            atime: SystemTime::now(),
            mtime: SystemTime::now(),
            ctime: SystemTime::now(),
            open: 0,
        };
        Disk {
            inodes: BTreeMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            off: false,
            syncs_held: false,
        }
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get(&dir).map(|i| &i.body) {
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(Body::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get_mut(&dir).map(|i| &mut i.body) {
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(Body::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn data_mut(&mut self, ino: u64) -> Result<&mut Data, Errno> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.body) {
            Some(Body::File(data)) => Ok(data),
            Some(Body::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn touch(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            inode.mtime = now;
            inode.ctime = now;
        }
    }

    /// A new inode named `name` in `parent` (the name is not durable until the directory is synced).
    fn add(&mut self, parent: u64, name: &OsStr, inode: Inode) -> Result<u64, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    /// Whether any directory names `ino`, now or durably.
    fn named(&self, ino: u64) -> bool {
        ino == ROOT
            || self.inodes.values().any(|i| match &i.body {
                Body::Dir {
                    entries, durable, ..
                } => entries.values().any(|&e| e == ino) || durable.values().any(|&e| e == ino),
                Body::File(_) => false,
            })
    }

    /// Frees `ino` if nothing names it (now or durably) and nobody has it open.
    fn collect(&mut self, ino: u64) {
        let open = self.inodes.get(&ino).is_some_and(|i| i.open > 0);
        if !open
            && !self.named(ino)
            && let Some(Inode {
                body: Body::Dir {
                    entries, durable, ..
                },
                ..
            }) = self.inodes.remove(&ino)
        {
            for child in entries.values().chain(durable.values()) {
                self.collect(*child);
            }
        }
    }

    /// The power comes back: only durable names and bytes remain.
    fn lose_unsynced(&mut self) -> Loss {
        let mut loss = Loss::default();
        for inode in self.inodes.values_mut() {
            inode.open = 0;
            match &mut inode.body {
                Body::File(data) => {
                    let changed = !data.dirty.is_empty()
                        || data.cut.is_some()
                        || data.len != data.durable_len;
                    loss.bytes += data.dirty.len() as u64 * PAGE;
                    data.lose_unsynced();
                    loss.files += u64::from(changed);
                }
                Body::Dir {
                    entries, durable, ..
                } => {
                    let differ = entries
                        .iter()
                        .filter(|(name, ino)| durable.get(*name) != Some(ino))
                        .count()
                        + durable.keys().filter(|n| !entries.contains_key(*n)).count();
                    loss.names += differ as u64;
                    *entries = durable.clone();
                }
            }
        }
        // Keep what the root reaches; fix up `..` of directories that moved.
        let mut reachable = BTreeMap::new();
        let mut stack = vec![(ROOT, ROOT)];
        while let Some((ino, parent)) = stack.pop() {
            if reachable.insert(ino, parent).is_some() {
                continue;
            }
            if let Some(Inode {
                body: Body::Dir { entries, .. },
                ..
            }) = self.inodes.get(&ino)
            {
                stack.extend(entries.values().map(|&child| (child, ino)));
            }
        }
        self.inodes.retain(|ino, _| reachable.contains_key(ino));
        for (ino, inode) in &mut self.inodes {
            if let Body::Dir { parent, .. } = &mut inode.body {
                *parent = reachable[ino];
            }
        }
        loss
    }
}

/// The FUSE server of one mount.
struct PowerFs {
    disk: Arc<Mutex<Disk>>,
}

/// Attributes and names are not cached by the kernel: this server is the only truth.
const TTL: Duration = Duration::ZERO;

impl PowerFs {
    fn disk(&self) -> Result<MutexGuard<'_, Disk>, Errno> {
        let disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if disk.off { Err(Errno::EIO) } else { Ok(disk) }
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

macro_rules! attempt {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(errno) => return $reply.error(errno),
        }
    };
}

impl Filesystem for PowerFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> io::Result<()> {
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let disk = attempt!(reply, self.disk());
        let entries = attempt!(reply, disk.entries(parent.0));
        let ino = attempt!(reply, entries.get(name).copied().ok_or(Errno::ENOENT));
        reply.entry(&TTL, &disk.inodes[&ino].attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let disk = attempt!(reply, self.disk());
        let inode = attempt!(reply, disk.inodes.get(&ino.0).ok_or(Errno::ENOENT));
        reply.attr(&TTL, &inode.attr(ino.0));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = attempt!(reply, self.disk());
        if let Some(size) = size {
            if size > FILE_MAX {
                return reply.error(Errno::EFBIG);
            }
            attempt!(reply, disk.data_mut(ino.0)).set_len(size);
            disk.touch(ino.0);
        }
        let inode = attempt!(reply, disk.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT));
        if let Some(mode) = mode {
            inode.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            inode.uid = uid;
        }
        if let Some(gid) = gid {
            inode.gid = gid;
        }
        if let Some(t) = atime {
            inode.atime = time(t);
        }
        if let Some(t) = mtime {
            inode.mtime = time(t);
        }
        inode.ctime = SystemTime::now();
        reply.attr(&TTL, &inode.attr(ino.0));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut disk = attempt!(reply, self.disk());
        let perm = (mode & !umask & 0o7777) as u16;
        let inode = Inode::new(Body::File(Data::default()), perm, req);
        let ino = attempt!(reply, disk.add(parent.0, name, inode));
        reply.entry(&TTL, &disk.inodes[&ino].attr(ino), Generation(0));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut disk = attempt!(reply, self.disk());
        let body = Body::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
            parent: parent.0,
        };
        let inode = Inode::new(body, (mode & !umask & 0o7777) as u16, req);
        let ino = attempt!(reply, disk.add(parent.0, name, inode));
        reply.entry(&TTL, &disk.inodes[&ino].attr(ino), Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = attempt!(reply, self.disk());
        let ino = attempt!(reply, disk.child(parent.0, name));
        if matches!(
            disk.inodes.get(&ino).map(|i| &i.body),
            Some(Body::Dir { .. })
        ) {
            return reply.error(Errno::EISDIR);
        }
        attempt!(reply, disk.entries_mut(parent.0)).remove(name);
        disk.touch(parent.0);
        disk.collect(ino);
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = attempt!(reply, self.disk());
        let ino = attempt!(reply, disk.child(parent.0, name));
        match disk.entries(ino) {
            Ok(entries) if !entries.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Ok(_) => {}
            Err(errno) => return reply.error(errno),
        }
        attempt!(reply, disk.entries_mut(parent.0)).remove(name);
        disk.touch(parent.0);
        disk.collect(ino);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        if newname.len() > NAME_MAX {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let mut disk = attempt!(reply, self.disk());
        let ino = attempt!(reply, disk.child(parent.0, name));
        let replaced = attempt!(reply, disk.entries(newparent.0))
            .get(newname)
            .copied();
        if let Some(old) = replaced {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            if old == ino {
                return reply.ok();
            }
            let old_is_dir = disk.entries(old).is_ok();
            let new_is_dir = disk.entries(ino).is_ok();
            match (new_is_dir, old_is_dir) {
                (false, true) => return reply.error(Errno::EISDIR),
                (true, false) => return reply.error(Errno::ENOTDIR),
                (true, true) if !disk.entries(old).is_ok_and(|e| e.is_empty()) => {
                    return reply.error(Errno::ENOTEMPTY);
                }
                _ => {}
            }
        }
        attempt!(reply, disk.entries_mut(parent.0)).remove(name);
        attempt!(reply, disk.entries_mut(newparent.0)).insert(newname.to_owned(), ino);
        if let Some(Inode {
            body: Body::Dir { parent: up, .. },
            ..
        }) = disk.inodes.get_mut(&ino)
        {
            *up = newparent.0;
        }
        disk.touch(parent.0);
        disk.touch(newparent.0);
        if let Some(old) = replaced {
            disk.collect(old);
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut disk = attempt!(reply, self.disk());
        if flags.0 & libc::O_TRUNC != 0 {
            attempt!(reply, disk.data_mut(ino.0)).set_len(0);
        }
        let inode = attempt!(reply, disk.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT));
        inode.open += 1;
        reply.opened(FileHandle(ino.0), FopenFlags::empty());
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = attempt!(reply, self.disk());
        let perm = (mode & !umask & 0o7777) as u16;
        let mut inode = Inode::new(Body::File(Data::default()), perm, req);
        inode.open = 1;
        let ino = attempt!(reply, disk.add(parent.0, name, inode));
        let attr = disk.inodes[&ino].attr(ino);
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(ino),
            FopenFlags::empty(),
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut disk = attempt!(reply, self.disk());
        let data = attempt!(reply, disk.data_mut(ino.0));
        reply.data(&data.read(offset, u64::from(size)));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if offset.saturating_add(data.len() as u64) > FILE_MAX {
            return reply.error(Errno::EFBIG);
        }
        let mut disk = attempt!(reply, self.disk());
        attempt!(reply, disk.data_mut(ino.0)).write(offset, data);
        disk.touch(ino.0);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing a file makes nothing durable.
        let _disk = attempt!(reply, self.disk());
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut disk = attempt!(reply, self.disk());
        if let Some(inode) = disk.inodes.get_mut(&ino.0) {
            inode.open = inode.open.saturating_sub(1);
        }
        disk.collect(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync and fsync both make the data and the length durable;
        // timestamps are not modelled.
        let mut disk = attempt!(reply, self.disk());
        let held = disk.syncs_held;
        let data = attempt!(reply, disk.data_mut(ino.0));
        if !held {
            data.sync();
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let disk = attempt!(reply, self.disk());
        attempt!(reply, disk.entries(ino.0));
        reply.opened(FileHandle(ino.0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let disk = attempt!(reply, self.disk());
        let Some(Inode {
            body: Body::Dir {
                entries, parent, ..
            },
            ..
        }) = disk.inodes.get(&ino.0)
        else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (*parent, FileType::Directory, OsStr::new("..")),
        ];
        let listed = entries.iter().map(|(name, &child)| {
            let kind = match disk.inodes.get(&child).map(|i| &i.body) {
                Some(Body::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (child, kind, name.as_os_str())
        });
        for (index, (child, kind, name)) in dots.into_iter().chain(listed).enumerate() {
            if (index as u64) < offset {
                continue;
            }
            if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut disk = attempt!(reply, self.disk());
        if disk.syncs_held {
            return match disk.entries(ino.0) {
                Ok(_) => reply.ok(),
                Err(errno) => reply.error(errno),
            };
        }
        let dropped: Vec<u64> = match disk.inodes.get_mut(&ino.0).map(|i| &mut i.body) {
            Some(Body::Dir {
                entries, durable, ..
            }) => {
                let old = std::mem::replace(durable, entries.clone());
                old.into_values().collect()
            }
            Some(Body::File(_)) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        };
        for child in dropped {
            disk.collect(child);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _disk = attempt!(reply, self.disk());
        let blocks = FILE_MAX / PAGE;
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let disk = attempt!(reply, self.disk());
        attempt!(reply, disk.inodes.get(&ino.0).ok_or(Errno::ENOENT));
        reply.ok();
    }
}

/// Whether this process can mount the filesystem; `Err` says why not.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the power-cut filesystem mounts with mount(2), which needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    control_mounted()
}

/// Where the kernel lists FUSE connections (the `fusectl` filesystem).
const CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// Mounts `fusectl` on [`CONNECTIONS`] unless it is mounted: aborting a
/// connection is the only way out of a mount whose server no longer answers
/// (a process closing a file on it would wait for ever).
fn control_mounted() -> Result<(), String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(CONNECTIONS))
    {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (source, target, kind) = (c("fusectl"), c(CONNECTIONS), c("fusectl"));
    // SAFETY: mount(2) with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot mount fusectl on {CONNECTIONS}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// One mounted power-cut filesystem. Unmounted on drop.
pub struct PowerDisk {
    mountpoint: PathBuf,
    disk: Arc<Mutex<Disk>>,
    session: Option<fuser::BackgroundSession>,
    /// The mount's FUSE connection (the minor number of its device).
    connection: Option<u64>,
    cuts: u64,
}

impl PowerDisk {
    /// Mounts an empty filesystem on `mountpoint` (an existing empty directory).
    pub fn mount(mountpoint: &Path) -> io::Result<PowerDisk> {
        available().map_err(io::Error::other)?;
        let mut disk = PowerDisk {
            mountpoint: mountpoint.to_path_buf(),
            disk: Arc::new(Mutex::new(Disk::new())),
            session: None,
            connection: None,
            cuts: 0,
        };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&mut self) -> io::Result<()> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("raftlm-powerfs".into()),
            MountOption::Subtype("powerfs".into()),
            MountOption::NoExec,
            MountOption::NoSuid,
            MountOption::NoDev,
        ];
        let fs = PowerFs {
            disk: self.disk.clone(),
        };
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot mount the power-cut filesystem on {}: {e}",
                    self.mountpoint.display()
                ),
            )
        })?;
        self.session = Some(session);
        self.connection = connection_of(&self.mountpoint);
        Ok(())
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// How many power cuts it has seen.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// The power fails: from now on every request fails with `EIO`, so
    /// nothing more reaches the durable state. Kill the processes using the
    /// mount, then call [`restore`](PowerDisk::restore).
    pub fn cut(&mut self) {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).off = true;
        self.cuts += 1;
    }

    /// Holds back (`true`) or lets through this disk's syncs. While held,
    /// `fsync`, `fdatasync` and a directory's `fsync` succeed but make
    /// nothing durable — a disk whose write cache ignores flushes, or a
    /// process whose flush has not reached the disk yet — so a power cut
    /// takes everything written since. Another node's disk syncs as usual:
    /// this is how a test makes a leader lose a log tail its followers hold.
    /// A power cut's [`restore`](PowerDisk::restore) lets syncs through again.
    pub fn hold_syncs(&self, held: bool) {
        self.disk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .syncs_held = held;
    }

    /// The power returns: the mount is dropped, everything not durable is
    /// thrown away and the durable state is mounted again.
    pub fn restore(&mut self) -> io::Result<Loss> {
        self.detach();
        let loss = {
            let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
            let loss = disk.lose_unsynced();
            disk.off = false;
            disk.syncs_held = false;
            loss
        };
        self.attach()?;
        Ok(loss)
    }

    /// Aborts the FUSE connection (pending and future requests fail at once,
    /// however stuck), detaches the mount and joins the server thread.
    fn detach(&mut self) {
        if let Some(id) = self.connection.take() {
            let abort = format!("{CONNECTIONS}/{id}/abort");
            let _ = std::fs::write(abort, "1");
        }
        if let Ok(path) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) {
            // SAFETY: umount2 with a valid C string; a failure (already unmounted) is harmless.
            unsafe {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
        }
        if let Some(session) = self.session.take() {
            // The server thread ends when its connection does; the session's
            // own unmount finds nothing mounted.
            let _ = session.join();
        }
    }
}

impl Drop for PowerDisk {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The FUSE connection id of the filesystem mounted at `path`: the minor
/// number of its device, as named under `/sys/fs/fuse/connections/`.
fn connection_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    Some(libc::minor(dev) as u64 | ((libc::major(dev) as u64) << 20))
}

/// Detaches every mount at or under `dir` (after a harness that was killed
/// left them behind, served by nobody). Returns how many.
pub fn detach_all_under(dir: &Path) -> usize {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut detached = 0;
    for point in points {
        if let Some(id) = connection_of_unanswered(&point) {
            let _ = std::fs::write(format!("{CONNECTIONS}/{id}/abort"), "1");
        }
        if let Ok(path) = std::ffi::CString::new(point.as_os_str().as_bytes()) {
            // SAFETY: umount2 with a valid C string.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
                detached += 1;
            }
        }
    }
    detached
}

/// The connection id from mountinfo's device field, which needs no request to the server.
fn connection_of_unanswered(point: &Path) -> Option<u64> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = point.to_string_lossy();
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4).map(|p| p.replace("\\040", " ")) != Some(wanted.to_string()) {
            return None;
        }
        let (major, minor) = fields.get(2)?.split_once(':')?;
        let major: u64 = major.parse().ok()?;
        let minor: u64 = minor.parse().ok()?;
        Some(minor | (major << 20))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize, byte: u8) -> Vec<u8> {
        vec![byte; len]
    }

    // Unsynced writes are lost; synced ones are kept; a cut length comes back.
    #[test]
    fn data_keeps_only_what_was_synced() {
        let mut data = Data::default();
        data.write(0, &filled(10_000, 1));
        data.sync();
        data.write(5_000, &filled(10_000, 2));
        assert_eq!(data.len, 15_000);
        assert_eq!(data.read(4_999, 2), vec![1, 2]);
        data.lose_unsynced();
        assert_eq!(data.len, 10_000);
        assert_eq!(data.read(0, 20_000), filled(10_000, 1));
    }

    // Truncating then growing reads zeros, and a power cut brings the old bytes back.
    #[test]
    fn truncation_is_durable_only_after_sync() {
        let mut data = Data::default();
        data.write(0, &filled(9_000, 7));
        data.sync();
        data.set_len(100);
        data.set_len(9_000);
        assert_eq!(data.read(0, 9_000)[..100], filled(100, 7)[..]);
        assert!(data.read(100, 8_900).iter().all(|&b| b == 0));
        data.write(8_999, &[3]);
        assert_eq!(data.read(8_998, 2), vec![0, 3]);
        data.lose_unsynced();
        assert_eq!(data.read(0, 9_000), filled(9_000, 7));
        data.set_len(100);
        data.sync();
        data.lose_unsynced();
        assert_eq!(data.len, 100);
        data.set_len(9_000);
        assert!(data.read(100, 8_900).iter().all(|&b| b == 0));
    }
}
