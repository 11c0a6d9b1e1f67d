//! The pass-through filesystem: every operation is done on the backing
//! directory, with the faults of `faults.rs` and the caching and clock skew
//! of the current settings applied on the way.
//!
//! Deliberately absent: getlk/setlk/flock. Without them the kernel keeps
//! POSIX and flock locks local to this mount's inodes, so two mounts (two
//! simulated hosts) never see each other's locks, as on NFS without a lock
//! manager. Also absent: tmpfile (the kernel turns the ENOSYS into
//! EOPNOTSUPP for O_TMPFILE) and readdirplus (plain readdir is enough).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::faults::Faults;
use crate::inodes::{estale, InodeMap, ROOT};
use crate::options::Op;
use crate::stats::Stats;

/// Open flags passed on to the backing file. Others (O_LARGEFILE, the
/// kernel's internal exec bit, O_DIRECT which tmpfs refuses, O_NOATIME) are
/// dropped; O_NOFOLLOW is always added so a name swapped for a symlink behind
/// our back cannot lead outside the backing directory.
const PASSED_OPEN_FLAGS: i32 = libc::O_APPEND
    | libc::O_TRUNC
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_NONBLOCK
    | libc::O_CREAT
    | libc::O_EXCL;

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn nix_errno(e: nix::Error) -> Errno {
    Errno::from_i32(e as i32)
}

/// Nanoseconds since the epoch, signed so times before 1970 and negative
/// clock offsets need no special cases.
fn ns_of(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn time_of(ns: i128) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs() as u64)
    }
}

fn stat_time(secs: i64, nsec: i64) -> SystemTime {
    time_of(secs as i128 * 1_000_000_000 + nsec as i128)
}

fn timespec_of(ns: i128) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000) as i64, ns.rem_euclid(1_000_000_000) as i64)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The backing store's attributes as they are, before any clock offset.
fn attr_of(meta: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(meta.ino()),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: stat_time(meta.atime(), meta.atime_nsec()),
        mtime: stat_time(meta.mtime(), meta.mtime_nsec()),
        ctime: stat_time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(meta.mode()),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// The attributes as this mount reports them: times moved to its view of
/// the server clock.
fn skewed(attr: &FileAttr, offset_ms: i64) -> FileAttr {
    let shift = |t: SystemTime| time_of(ns_of(t) + offset_ms as i128 * 1_000_000);
    FileAttr {
        atime: shift(attr.atime),
        mtime: shift(attr.mtime),
        ctime: shift(attr.ctime),
        ..*attr
    }
}

/// A client-supplied time as the backing store should keep it: explicit
/// times are in the skewed clock and are moved back; "now" is the backing
/// store's (the server's) now.
fn backing_time(t: Option<TimeOrNow>, offset_ms: i64) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => timespec_of(ns_of(t) - offset_ms as i128 * 1_000_000),
    }
}

/// Opens a backing file the way the client asked for (access mode, append,
/// truncate, create/exclusive) and nothing more.
fn open_backing(path: &Path, flags: i32, mode: u32) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => opts.read(true),
        libc::O_WRONLY => opts.write(true),
        _ => opts.read(true).write(true),
    };
    // Through custom_flags rather than OpenOptions::create_new because the
    // latter refuses O_RDONLY|O_CREAT, which open(2) allows.
    opts.custom_flags((flags & PASSED_OPEN_FLAGS) | libc::O_NOFOLLOW);
    opts.mode(mode);
    opts.open(path)
}

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

struct OpenFile {
    ino: u64,
    file: Arc<File>,
}

/// Open files and directory listings, by the handle given to the kernel.
#[derive(Default)]
struct Handles {
    next: u64,
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, Arc<Vec<DirEntry>>>,
}

impl Handles {
    fn new_handle(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

pub struct FaultFs {
    inodes: Mutex<InodeMap>,
    handles: Mutex<Handles>,
    /// This mount's own cache of getattr answers (unskewed), by node id.
    attr_cache: Mutex<HashMap<u64, (FileAttr, Instant)>>,
    faults: Arc<Faults>,
    stats: Arc<Stats>,
}

impl FaultFs {
    pub fn new(backing: PathBuf, faults: Arc<Faults>, stats: Arc<Stats>) -> FaultFs {
        FaultFs {
            inodes: Mutex::new(InodeMap::new(backing)),
            handles: Mutex::new(Handles::default()),
            attr_cache: Mutex::new(HashMap::new()),
            faults,
            stats,
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.faults.settings().attr_cache_ms)
    }

    fn offset_ms(&self) -> i64 {
        self.faults.settings().clock_offset_ms
    }

    fn transient(&self, op: Op) -> Option<Errno> {
        self.faults.transient(op, &self.stats)
    }

    fn lose_reply(&self, op: Op) -> bool {
        self.faults.lose_reply(op, &self.stats)
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let result = self.inodes.lock().unwrap().path(ino.0);
        if result.is_err() {
            self.stats.bump("stale_handles");
        }
        result
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        let result = self.inodes.lock().unwrap().child(parent.0, name);
        if result.is_err() {
            self.stats.bump("stale_handles");
        }
        result
    }

    fn open_file(&self, fh: u64) -> Option<Arc<File>> {
        self.handles.lock().unwrap().files.get(&fh).map(|f| f.file.clone())
    }

    /// Any open file of this node: lets fstat/ftruncate keep working on a
    /// file whose last name was removed while it was open (what an NFS
    /// client's silly rename achieves).
    fn any_open_file(&self, ino: u64) -> Option<Arc<File>> {
        let handles = self.handles.lock().unwrap();
        handles.files.values().find(|f| f.ino == ino).map(|f| f.file.clone())
    }

    fn cache_put(&self, ino: u64, attr: FileAttr) {
        if self.faults.settings().attr_cache_ms > 0 {
            self.attr_cache.lock().unwrap().insert(ino, (attr, Instant::now()));
        }
    }

    fn cache_get(&self, ino: u64) -> Option<FileAttr> {
        let ttl = self.ttl();
        if ttl.is_zero() {
            return None;
        }
        let cache = self.attr_cache.lock().unwrap();
        let (attr, at) = cache.get(&ino)?;
        (at.elapsed() < ttl).then_some(*attr)
    }

    /// Changes made through this mount are known to it at once, like an NFS
    /// client updating its cache from its own requests' replies.
    fn invalidate(&self, inos: &[u64]) {
        let mut cache = self.attr_cache.lock().unwrap();
        for ino in inos {
            cache.remove(ino);
        }
    }

    /// Where a new object's owner comes from: the caller, with the group of
    /// a set-group-ID parent directory as the kernel would choose.
    fn new_owner(req: &Request, path: &Path) -> (u32, u32) {
        let parent_gid = path
            .parent()
            .and_then(|p| fs::metadata(p).ok())
            .filter(|m| m.mode() & libc::S_ISGID != 0)
            .map(|m| m.gid());
        (req.uid(), parent_gid.unwrap_or(req.gid()))
    }

    /// Gives a just-created path to the caller; removes it again if that
    /// fails so no root-owned object is left behind.
    fn chown_new(req: &Request, path: &Path, is_dir: bool) -> Result<(), Errno> {
        let (uid, gid) = Self::new_owner(req, path);
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
            let _ = if is_dir { fs::remove_dir(path) } else { fs::remove_file(path) };
            io_errno(&e)
        })
    }

    /// Replies with a positive entry and records the kernel's new reference.
    fn reply_entry(&self, reply: ReplyEntry, parent: INodeNo, name: &OsStr, meta: &Metadata) {
        if meta.ino() == ROOT {
            // Node id 1 is the FUSE root; a backing file with inode number 1
            // (only the root of some file systems has it) cannot be shown.
            return reply.error(Errno::EIO);
        }
        let attr = attr_of(meta);
        self.inodes.lock().unwrap().looked_up(meta.ino(), parent.0, name);
        self.cache_put(meta.ino(), attr);
        reply.entry(&self.ttl(), &skewed(&attr, self.offset_ms()), Generation(0));
    }

    /// "No such file": with caching on, a node id 0 entry lets the kernel
    /// keep the negative answer for the TTL, like an NFS client's negative
    /// dentry cache.
    fn reply_negative(&self, reply: ReplyEntry) {
        let ttl = self.ttl();
        if ttl.is_zero() {
            return reply.error(Errno::ENOENT);
        }
        self.stats.bump("negative_entries");
        let attr = FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        reply.entry(&ttl, &attr, Generation(0));
    }

    /// Fresh attributes of a node: from the given open file if any, else by
    /// name, else from any open file of the node.
    fn fresh_meta(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<Metadata, Errno> {
        if let Some(file) = fh.and_then(|fh| self.open_file(fh.0)) {
            return file.metadata().map_err(|e| io_errno(&e));
        }
        let by_name = self.inodes.lock().unwrap().path(ino.0);
        match by_name {
            // The name may go between resolving and stat: then it is like a missing one.
            Ok(path) => match fs::symlink_metadata(path) {
                Ok(meta) if meta.ino() == ino.0 || ino.0 == ROOT => return Ok(meta),
                Ok(_) | Err(_) if self.any_open_file(ino.0).is_some() => {}
                Ok(_) => return Err(estale()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(estale()),
                Err(e) => return Err(io_errno(&e)),
            },
            Err(_) if self.any_open_file(ino.0).is_some() => {}
            Err(e) => {
                self.stats.bump("stale_handles");
                return Err(e);
            }
        }
        let file = self.any_open_file(ino.0).ok_or_else(estale)?;
        file.metadata().map_err(|e| io_errno(&e))
    }

    fn do_setattr(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<Metadata, Errno> {
        // Prefer the caller's open file (works even if unlinked), then the
        // name, then any open file of the node.
        let file = fh.and_then(|fh| self.open_file(fh.0));
        let path = match &file {
            Some(_) => None,
            None => match self.path(ino) {
                Ok(p) => Some(p),
                Err(e) => {
                    let _ = self.any_open_file(ino.0).ok_or(e)?;
                    None
                }
            },
        };
        let file = file.or_else(|| path.is_none().then(|| self.any_open_file(ino.0)).flatten());
        let io = |e: io::Error| io_errno(&e);

        if let Some(mode) = mode {
            let perm = Permissions::from_mode(mode & 0o7777);
            match (&file, &path) {
                (Some(f), _) => f.set_permissions(perm).map_err(io)?,
                (None, Some(p)) => {
                    if fs::symlink_metadata(p).map_err(io)?.file_type().is_symlink() {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    fs::set_permissions(p, perm).map_err(io)?
                }
                (None, None) => return Err(estale()),
            }
        }
        if uid.is_some() || gid.is_some() {
            match (&file, &path) {
                (Some(f), _) => std::os::unix::fs::fchown(f.as_ref(), uid, gid).map_err(io)?,
                (None, Some(p)) => std::os::unix::fs::lchown(p, uid, gid).map_err(io)?,
                (None, None) => return Err(estale()),
            }
        }
        if let Some(size) = size {
            let by_fd = file.as_ref().map(|f| f.set_len(size));
            match (by_fd, &path) {
                (Some(Ok(())), _) => {}
                // A read-only descriptor cannot be truncated; the name can.
                (_, Some(p)) => nix::unistd::truncate(p, size as i64).map_err(nix_errno)?,
                (Some(Err(e)), None) => return Err(io_errno(&e)),
                (None, None) => return Err(estale()),
            }
        }
        if atime.is_some() || mtime.is_some() {
            let offset = self.offset_ms();
            let a = backing_time(atime, offset);
            let m = backing_time(mtime, offset);
            match (&file, &path) {
                (Some(f), _) => nix::sys::stat::futimens(f.as_fd(), &a, &m).map_err(nix_errno)?,
                (None, Some(p)) => nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    p,
                    &a,
                    &m,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(nix_errno)?,
                (None, None) => return Err(estale()),
            }
        }
        match (&file, &path) {
            (Some(f), _) => f.metadata().map_err(io),
            (None, Some(p)) => fs::symlink_metadata(p).map_err(io),
            (None, None) => Err(estale()),
        }
    }

    fn read_dir_entries(&self, ino: INodeNo) -> Result<Vec<DirEntry>, Errno> {
        let path = self.path(ino)?;
        let io = |e: io::Error| io_errno(&e);
        let own = fs::symlink_metadata(&path).map_err(io)?.ino();
        // The root's ".." lies outside the backing directory; show itself.
        let up = if ino.0 == ROOT {
            own
        } else {
            path.parent().and_then(|p| fs::symlink_metadata(p).ok()).map_or(own, |m| m.ino())
        };
        let mut entries = vec![
            DirEntry { ino: own, kind: FileType::Directory, name: ".".into() },
            DirEntry { ino: up, kind: FileType::Directory, name: "..".into() },
        ];
        for entry in fs::read_dir(&path).map_err(io)? {
            // Entries vanishing during the listing (other hosts at work) are
            // simply left out.
            let Ok(entry) = entry else { continue };
            let Ok(ft) = entry.file_type() else { continue };
            let kind = if ft.is_dir() {
                FileType::Directory
            } else if ft.is_symlink() {
                FileType::Symlink
            } else if ft.is_file() {
                FileType::RegularFile
            } else {
                use std::os::unix::fs::FileTypeExt;
                if ft.is_fifo() {
                    FileType::NamedPipe
                } else if ft.is_socket() {
                    FileType::Socket
                } else if ft.is_char_device() {
                    FileType::CharDevice
                } else {
                    FileType::BlockDevice
                }
            };
            entries.push(DirEntry { ino: entry.ino(), kind, name: entry.file_name() });
        }
        Ok(entries)
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.stats.bump("op_lookup");
        if let Some(e) = self.transient(Op::Lookup) {
            return reply.error(e);
        }
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match fs::symlink_metadata(&path) {
            Ok(meta) => self.reply_entry(reply, parent, name, &meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.reply_negative(reply),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.stats.bump("op_forget");
        self.inodes.lock().unwrap().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.stats.bump("op_getattr");
        // The root is exempt so the rig's "is it mounted" checks stay
        // reliable whatever the fault settings.
        if ino.0 != ROOT {
            if let Some(e) = self.transient(Op::Getattr) {
                return reply.error(e);
            }
        }
        let ttl = self.ttl();
        if !ttl.is_zero() {
            if let Some(attr) = self.cache_get(ino.0) {
                self.stats.bump("attr_cache_hits");
                return reply.attr(&ttl, &skewed(&attr, self.offset_ms()));
            }
            self.stats.bump("attr_cache_misses");
        }
        match self.fresh_meta(ino, fh) {
            Ok(meta) => {
                let attr = attr_of(&meta);
                self.cache_put(ino.0, attr);
                reply.attr(&ttl, &skewed(&attr, self.offset_ms()));
            }
            Err(e) => reply.error(e),
        }
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
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.stats.bump("op_setattr");
        self.invalidate(&[ino.0]);
        match self.do_setattr(ino, fh, mode, uid, gid, size, atime, mtime) {
            Ok(meta) => {
                let attr = attr_of(&meta);
                self.cache_put(ino.0, attr);
                reply.attr(&self.ttl(), &skewed(&attr, self.offset_ms()));
            }
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.stats.bump("op_readlink");
        match self.path(ino).and_then(|p| fs::read_link(p).map_err(|e| io_errno(&e))) {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.stats.bump("op_mknod");
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let kind = match mode & libc::S_IFMT {
            0 => libc::S_IFREG,
            k => k,
        };
        let perm = Mode::from_bits_truncate(mode & 0o7777 & !umask);
        let made = nix::sys::stat::mknod(&path, SFlag::from_bits_truncate(kind), perm, rdev as libc::dev_t)
            .map_err(nix_errno)
            .and_then(|()| Self::chown_new(req, &path, false))
            .and_then(|()| fs::symlink_metadata(&path).map_err(|e| io_errno(&e)));
        self.invalidate(&[parent.0]);
        match made {
            Ok(meta) => self.reply_entry(reply, parent, name, &meta),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.stats.bump("op_mkdir");
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let made = fs::DirBuilder::new()
            .mode(mode & 0o7777 & !umask)
            .create(&path)
            .map_err(|e| io_errno(&e))
            .and_then(|()| Self::chown_new(req, &path, true))
            .and_then(|()| fs::symlink_metadata(&path).map_err(|e| io_errno(&e)));
        self.invalidate(&[parent.0]);
        match made {
            Ok(meta) => self.reply_entry(reply, parent, name, &meta),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.bump("op_unlink");
        if let Some(e) = self.transient(Op::Unlink) {
            return reply.error(e);
        }
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let removed = fs::symlink_metadata(&path)
            .and_then(|meta| fs::remove_file(&path).map(|()| meta.ino()));
        match removed {
            Ok(ino) => {
                self.inodes.lock().unwrap().remove_name(ino, parent.0, name);
                self.invalidate(&[ino, parent.0]);
                if self.lose_reply(Op::Unlink) {
                    // The retransmitted REMOVE finds the name already gone.
                    return reply.error(Errno::ENOENT);
                }
                reply.ok();
            }
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.bump("op_rmdir");
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let removed = fs::symlink_metadata(&path)
            .and_then(|meta| fs::remove_dir(&path).map(|()| meta.ino()));
        match removed {
            Ok(ino) => {
                self.inodes.lock().unwrap().remove_name(ino, parent.0, name);
                self.invalidate(&[ino, parent.0]);
                reply.ok();
            }
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.stats.bump("op_symlink");
        let path = match self.child(parent, link_name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let made = std::os::unix::fs::symlink(target, &path)
            .map_err(|e| io_errno(&e))
            .and_then(|()| Self::chown_new(req, &path, false))
            .and_then(|()| fs::symlink_metadata(&path).map_err(|e| io_errno(&e)));
        self.invalidate(&[parent.0]);
        match made {
            Ok(meta) => self.reply_entry(reply, parent, link_name, &meta),
            Err(e) => reply.error(e),
        }
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
        self.stats.bump("op_rename");
        if let Some(e) = self.transient(Op::Rename) {
            return reply.error(e);
        }
        let (from, to) = match self.child(parent, name).and_then(|f| Ok((f, self.child(newparent, newname)?))) {
            Ok(paths) => paths,
            Err(e) => return reply.error(e),
        };
        let delay = self.faults.settings().rename_delay_ms;
        if delay > 0 {
            // The FUSE session is single-threaded: this mount's other calls wait too,
            // as behind a slow call on one NFS client's connection.
            self.stats.bump("rename_delays");
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        let src = match fs::symlink_metadata(&from) {
            Ok(m) => m.ino(),
            Err(e) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    // Someone else renamed or removed it first (a lost race for the name).
                    self.stats.bump("rename_source_gone");
                }
                return reply.error(io_errno(&e));
            }
        };
        let dst = fs::symlink_metadata(&to).ok().map(|m| m.ino());
        let done = if flags.is_empty() {
            fs::rename(&from, &to).map_err(|e| io_errno(&e))
        } else {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &from,
                nix::fcntl::AT_FDCWD,
                &to,
                nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
            )
            .map_err(nix_errno)
        };
        if let Err(e) = done {
            return reply.error(e);
        }
        {
            let mut inodes = self.inodes.lock().unwrap();
            // Renaming a name onto another link of the same file changes nothing.
            if dst != Some(src) {
                if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                    if let Some(dst) = dst {
                        inodes.renamed(dst, (newparent.0, newname), (parent.0, name));
                    }
                } else if let Some(dst) = dst {
                    inodes.remove_name(dst, newparent.0, newname);
                }
                inodes.renamed(src, (parent.0, name), (newparent.0, newname));
            }
        }
        self.invalidate(&[src, dst.unwrap_or(src), parent.0, newparent.0]);
        if self.lose_reply(Op::Rename) {
            // The retransmitted RENAME finds the source name already gone.
            return reply.error(Errno::ENOENT);
        }
        reply.ok();
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.stats.bump("op_link");
        if let Some(e) = self.transient(Op::Link) {
            return reply.error(e);
        }
        let (src, dst) = match self.path(ino).and_then(|s| Ok((s, self.child(newparent, newname)?))) {
            Ok(paths) => paths,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = fs::hard_link(&src, &dst) {
            return reply.error(io_errno(&e));
        }
        self.invalidate(&[ino.0, newparent.0]);
        if self.lose_reply(Op::Link) {
            // The retransmitted LINK finds the new name already there.
            self.inodes.lock().unwrap().add_name(ino.0, newparent.0, newname);
            return reply.error(Errno::EEXIST);
        }
        match fs::symlink_metadata(&dst) {
            Ok(meta) => self.reply_entry(reply, newparent, newname, &meta),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.stats.bump("op_open");
        if let Some(e) = self.transient(Op::Open) {
            return reply.error(e);
        }
        let path = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let file = match open_backing(&path, flags.0 & !(libc::O_CREAT | libc::O_EXCL), 0) {
            Ok(f) => f,
            Err(e) => return reply.error(io_errno(&e)),
        };
        // The name may have been replaced between the check and the open.
        match file.metadata() {
            Ok(meta) if meta.ino() == ino.0 || ino.0 == ROOT => {}
            Ok(_) => {
                self.stats.bump("stale_handles");
                return reply.error(estale());
            }
            Err(e) => return reply.error(io_errno(&e)),
        }
        if flags.0 & libc::O_TRUNC != 0 {
            self.invalidate(&[ino.0]);
        }
        let mut handles = self.handles.lock().unwrap();
        let fh = handles.new_handle();
        handles.files.insert(fh, OpenFile { ino: ino.0, file: Arc::new(file) });
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.stats.bump("op_read");
        if let Some(e) = self.transient(Op::Read) {
            return reply.error(e);
        }
        let Some(file) = self.open_file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(io_errno(&e)),
            }
        }
        reply.data(&buf[..done]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.stats.bump("op_write");
        if let Some(e) = self.transient(Op::Write) {
            return reply.error(e);
        }
        let Some(file) = self.open_file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // With O_APPEND on the backing descriptor, Linux's pwrite appends at
        // the backing store's end of file, whatever size this mount cached.
        let mut done = 0;
        while done < data.len() {
            match file.write_at(&data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if done > 0 => {
                    let _ = e;
                    break;
                }
                Err(e) => return reply.error(io_errno(&e)),
            }
        }
        self.invalidate(&[ino.0]);
        reply.written(done as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Writes go straight to the backing store; nothing is buffered here.
        self.stats.bump("op_flush");
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.bump("op_release");
        self.handles.lock().unwrap().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.stats.bump("op_fsync");
        let Some(file) = self.open_file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let done = if datasync { file.sync_data() } else { file.sync_all() };
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.stats.bump("op_opendir");
        // One snapshot per open directory stream, so offsets stay meaningful
        // while other hosts add and remove entries.
        match self.read_dir_entries(ino) {
            Ok(entries) => {
                let mut handles = self.handles.lock().unwrap();
                let fh = handles.new_handle();
                handles.dirs.insert(fh, Arc::new(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.stats.bump("op_readdir");
        let Some(entries) = self.handles.lock().unwrap().dirs.get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
            // The offset given with an entry is where the next call resumes.
            if reply.add(INodeNo(entry.ino), i as u64 + 1, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.stats.bump("op_releasedir");
        self.handles.lock().unwrap().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.stats.bump("op_fsyncdir");
        let synced = self
            .path(ino)
            .and_then(|p| File::open(p).and_then(|d| d.sync_all()).map_err(|e| io_errno(&e)));
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.stats.bump("op_statfs");
        let root = self.inodes.lock().unwrap().root().to_path_buf();
        match nix::sys::statvfs::statvfs(&root) {
            Ok(st) => reply.statfs(
                st.blocks() as u64,
                st.blocks_free() as u64,
                st.blocks_available() as u64,
                st.files() as u64,
                st.files_free() as u64,
                st.block_size() as u32,
                st.name_max() as u32,
                st.fragment_size() as u32,
            ),
            Err(e) => reply.error(nix_errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        // ENOSYS makes the kernel stop asking and answer EOPNOTSUPP itself.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks modes itself and does
        // not call this; answer for existence only.
        self.stats.bump("op_access");
        match self.fresh_meta(ino, None) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.stats.bump("op_create");
        if let Some(e) = self.transient(Op::Create) {
            return reply.error(e);
        }
        let path = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let exclusive = flags & libc::O_EXCL != 0;
        let perm = mode & 0o7777 & !umask;
        // Always try an exclusive create first, so we know whether this call
        // made the file (and must give it to the caller) or opened one that
        // another host created since the kernel's lookup.
        let (file, created) = match open_backing(&path, flags | libc::O_CREAT | libc::O_EXCL, perm) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !exclusive => {
                match open_backing(&path, flags & !(libc::O_CREAT | libc::O_EXCL), 0) {
                    Ok(f) => (f, false),
                    Err(e) => return reply.error(io_errno(&e)),
                }
            }
            Err(e) => return reply.error(io_errno(&e)),
        };
        if created {
            let (uid, gid) = Self::new_owner(req, &path);
            if let Err(e) = std::os::unix::fs::fchown(&file, Some(uid), Some(gid)) {
                let _ = fs::remove_file(&path);
                return reply.error(io_errno(&e));
            }
        }
        self.invalidate(&[parent.0]);
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return reply.error(io_errno(&e)),
        };
        if created && exclusive && self.lose_reply(Op::Create) {
            // The retransmitted exclusive CREATE finds the file it made.
            self.inodes.lock().unwrap().add_name(meta.ino(), parent.0, name);
            return reply.error(Errno::EEXIST);
        }
        if meta.ino() == ROOT {
            return reply.error(Errno::EIO);
        }
        let attr = attr_of(&meta);
        self.inodes.lock().unwrap().looked_up(meta.ino(), parent.0, name);
        self.cache_put(meta.ino(), attr);
        let fh = {
            let mut handles = self.handles.lock().unwrap();
            let fh = handles.new_handle();
            handles.files.insert(fh, OpenFile { ino: meta.ino(), file: Arc::new(file) });
            fh
        };
        reply.created(
            &self.ttl(),
            &skewed(&attr, self.offset_ms()),
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_conversions_round_trip_with_offsets() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(time_of(ns_of(t)), t);
        let before = UNIX_EPOCH - Duration::new(5, 250_000_000);
        assert_eq!(time_of(ns_of(before)), before);
        let ts = timespec_of(ns_of(before));
        assert_eq!((ts.tv_sec(), ts.tv_nsec()), (-6, 750_000_000));
        let stored = backing_time(Some(TimeOrNow::SpecificTime(t)), 3_600_000);
        assert_eq!(stored.tv_sec(), 1_700_000_000 - 3600);
        assert_eq!(backing_time(Some(TimeOrNow::Now), 5).tv_nsec(), libc::UTIME_NOW);
    }
}
