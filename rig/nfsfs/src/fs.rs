//! The FUSE side: every operation becomes NFSv3 calls, with the Linux client's
//! semantics where lock files depend on them (see README.md for every difference).
//!
//! - One inode per file handle (hard links share it), numbered with the server's
//!   fileid as Linux does; an inode the kernel names but this mount does not know is
//!   ESTALE, and so is a handle the server no longer knows.
//! - The kernel is told to cache nothing (TTL 0): this daemon keeps the attribute and
//!   name cache itself, valid for `actimeo` (0: none), so it can apply the NFS rules:
//!   open always refetches attributes (close-to-open), operations that change a file
//!   or directory drop what they invalidate, replies' post-op attributes refresh it.
//! - O_EXCL creates are CREATE EXCLUSIVE with a fresh verifier, then SETATTR of the
//!   mode (and times, which held the verifier), as Linux does.
//! - Writes are UNSTABLE and kept until a COMMIT on flush (close), fsync or release
//!   returns; a changed write verifier (server restart) sends them again FILE_SYNC.
//! - Unlinking a file this mount has open renames it to `.nfs…` instead and removes
//!   that at the last close (silly rename).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nfs3_types::nfs3::{
    createhow3, createverf3, fattr3, ftype3, nfs_fh3, nfstime3, sattr3, set_atime, set_mtime, stable_how, writeverf3, Nfs3Option,
};

use crate::client::{Client, Res, Who};
use crate::stats::Stats;

const ROOT: u64 = 1;
/// Tell the kernel to cache nothing: the daemon's cache decides.
const TTL0: Duration = Duration::ZERO;
/// Largest READ/WRITE (ganesha's default maximum is 1 MiB).
const IO_MAX: u32 = 65536;
/// Uncommitted data kept per open file before a COMMIT is forced.
const UNSTABLE_MAX: usize = 1 << 20;

struct Node {
    fh: nfs_fh3,
    attr: Option<(fattr3, Instant)>,
    /// Lookup count the kernel holds (forget decrements it).
    lookups: u64,
    /// Open files of this mount on the inode.
    opens: u64,
    /// Bumped when the server's fileid is reused by another handle.
    generation: u64,
    /// Names it was silly-renamed to: (directory inode, name), removed at last close.
    silly: Vec<(u64, Vec<u8>)>,
}

struct OpenFile {
    ino: u64,
    who: Who,
    /// Written UNSTABLE and not yet committed: (offset, data, verifier of the reply).
    unstable: Vec<(u64, Vec<u8>, writeverf3)>,
    unstable_bytes: usize,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Node>,
    by_fh: HashMap<Vec<u8>, u64>,
    files: HashMap<u64, OpenFile>,
    next_fh: u64,
    dirs: HashMap<u64, Vec<(u64, Vec<u8>, FileType)>>,
    /// Positive name cache: (directory, name) -> (inode, when looked up).
    names: HashMap<(u64, Vec<u8>), (u64, Instant)>,
    silly_counter: u64,
}

pub struct NfsFs {
    client: Client,
    actimeo: Duration,
    state: Mutex<State>,
    stats: Arc<Stats>,
}

fn who(req: &Request) -> Who {
    Who { uid: req.uid(), gid: req.gid() }
}

fn err(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn time_of(t: nfstime3) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(t.seconds), t.nseconds.min(999_999_999))
}

fn nfstime_of(t: SystemTime) -> nfstime3 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    nfstime3 { seconds: d.as_secs() as u32, nseconds: d.subsec_nanos() }
}

fn kind_of(t: ftype3) -> FileType {
    match t {
        ftype3::NF3REG => FileType::RegularFile,
        ftype3::NF3DIR => FileType::Directory,
        ftype3::NF3BLK => FileType::BlockDevice,
        ftype3::NF3CHR => FileType::CharDevice,
        ftype3::NF3LNK => FileType::Symlink,
        ftype3::NF3SOCK => FileType::Socket,
        ftype3::NF3FIFO => FileType::NamedPipe,
    }
}

fn attr_of(ino: u64, a: &fattr3) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.used.div_ceil(512),
        atime: time_of(a.atime),
        mtime: time_of(a.mtime),
        ctime: time_of(a.ctime),
        crtime: UNIX_EPOCH,
        kind: kind_of(a.type_),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: (a.rdev.specdata1 << 8) | (a.rdev.specdata2 & 0xff),
        blksize: 4096,
        flags: 0,
    }
}

fn time_arg_a(t: Option<TimeOrNow>) -> set_atime {
    match t {
        None => set_atime::DONT_CHANGE,
        Some(TimeOrNow::Now) => set_atime::SET_TO_SERVER_TIME,
        Some(TimeOrNow::SpecificTime(t)) => set_atime::SET_TO_CLIENT_TIME(nfstime_of(t)),
    }
}

fn time_arg_m(t: Option<TimeOrNow>) -> set_mtime {
    match t {
        None => set_mtime::DONT_CHANGE,
        Some(TimeOrNow::Now) => set_mtime::SET_TO_SERVER_TIME,
        Some(TimeOrNow::SpecificTime(t)) => set_mtime::SET_TO_CLIENT_TIME(nfstime_of(t)),
    }
}

fn mode_only(mode: u32) -> sattr3 {
    sattr3 { mode: Nfs3Option::Some(mode & 0o7777), ..sattr3::default() }
}

/// A create verifier nobody else uses: random bytes from the kernel.
fn verifier() -> createverf3 {
    let mut v = [0u8; 8];
    // SAFETY: getrandom writes at most v.len() bytes into v.
    let n = unsafe { libc::getrandom(v.as_mut_ptr().cast(), v.len(), 0) };
    if n != v.len() as isize {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        v = (t ^ (u64::from(std::process::id()) << 40)).to_be_bytes();
    }
    createverf3(v)
}

impl NfsFs {
    pub fn new(client: Client, actimeo: Duration, stats: Arc<Stats>) -> NfsFs {
        let mut state = State { next_fh: 1, ..State::default() };
        let root = client.root.clone();
        state.by_fh.insert(root.data.to_vec(), ROOT);
        state.nodes.insert(ROOT, Node { fh: root, attr: None, lookups: 1, opens: 0, silly: Vec::new(), generation: 0 });
        NfsFs { client, actimeo, state: Mutex::new(state), stats }
    }

    fn fh(&self, ino: INodeNo) -> Result<nfs_fh3, Errno> {
        match self.state.lock().unwrap().nodes.get(&ino.0) {
            Some(n) => Ok(n.fh.clone()),
            None => {
                self.stats.bump("estale_unknown_inode");
                Err(Errno::ESTALE)
            }
        }
    }

    /// The inode of a file handle, with fresh attributes. The inode number is the
    /// server's fileid, as Linux reports it: stable for the file's life however often
    /// the kernel forgets and finds it again (the library compares st_dev/st_ino of a
    /// lock file across its whole hold). A fileid the server reuses for a new file
    /// (another handle) gets a new generation, which makes the kernel drop the old
    /// inode.
    fn intern(&self, fh: nfs_fh3, attr: &fattr3, lookup: bool) -> (u64, u64) {
        let mut st = self.state.lock().unwrap();
        let ino = match st.by_fh.get(fh.data.as_ref()) {
            Some(&ino) => ino,
            None => {
                let ino = if attr.fileid <= ROOT { attr.fileid | (1 << 63) } else { attr.fileid };
                let generation = match st.nodes.get(&ino) {
                    Some(old) if ino != ROOT => {
                        self.stats.bump("fileid_reused");
                        let (old_fh, g) = (old.fh.data.to_vec(), old.generation);
                        st.by_fh.remove(&old_fh);
                        // Names cached for the old file are not the new file's: Linux
                        // keys inodes by handle, so its dentries of the old file go
                        // stale (ESTALE, then dropped) instead of naming the new one.
                        st.names.retain(|_, (named, _)| *named != ino);
                        g + 1
                    }
                    _ => 0,
                };
                st.by_fh.insert(fh.data.to_vec(), ino);
                st.nodes.insert(ino, Node { fh, attr: None, lookups: 0, opens: 0, silly: Vec::new(), generation });
                ino
            }
        };
        let node = st.nodes.get_mut(&ino).expect("interned");
        node.attr = Some((attr.clone(), Instant::now()));
        if lookup {
            node.lookups += 1;
        }
        (ino, node.generation)
    }

    fn cache_attr(&self, ino: u64, attr: Option<fattr3>) {
        if let Some(node) = self.state.lock().unwrap().nodes.get_mut(&ino) {
            node.attr = attr.map(|a| (a, Instant::now()));
        }
    }

    fn cached_attr(&self, ino: u64) -> Option<fattr3> {
        if self.actimeo.is_zero() {
            return None;
        }
        let st = self.state.lock().unwrap();
        let (a, at) = st.nodes.get(&ino)?.attr.as_ref()?;
        (at.elapsed() < self.actimeo).then(|| a.clone())
    }

    /// Attributes from the cache when still valid, else GETATTR.
    fn attr(&self, who: Who, ino: INodeNo, fresh: bool) -> Result<fattr3, Errno> {
        if !fresh {
            if let Some(a) = self.cached_attr(ino.0) {
                self.stats.bump("attr_cache_hits");
                return Ok(a);
            }
        }
        let fh = self.fh(ino)?;
        match self.client.getattr(who, &fh) {
            Ok(a) => {
                self.cache_attr(ino.0, Some(a.clone()));
                Ok(a)
            }
            Err(e) => {
                if e == libc::ESTALE {
                    self.cache_attr(ino.0, None);
                }
                Err(err(e))
            }
        }
    }

    fn forget_name(&self, dir: u64, name: &[u8]) -> Option<u64> {
        let mut st = self.state.lock().unwrap();
        if let Some(node) = st.nodes.get_mut(&dir) {
            node.attr = None; // its mtime and size changed
        }
        let child = st.names.remove(&(dir, name.to_vec())).map(|(ino, _)| ino);
        if let Some(node) = child.and_then(|c| st.nodes.get_mut(&c)) {
            node.attr = None; // nlink, ctime changed
        }
        child
    }

    /// Replies with an entry for a handle just made or found under `parent`/`name`.
    fn entry(&self, w: Who, parent: u64, name: &[u8], fh: Option<nfs_fh3>, attr: Option<fattr3>, reply: ReplyEntry) {
        match self.resolve(w, parent, name, fh, attr) {
            Ok((ino, generation, a)) => reply.entry(&TTL0, &attr_of(ino, &a), Generation(generation)),
            Err(e) => reply.error(err(e)),
        }
    }

    /// A created or looked-up object's inode and attributes (LOOKUP and GETATTR for
    /// what the reply left out), counted as one kernel lookup.
    fn resolve(&self, w: Who, parent: u64, name: &[u8], fh: Option<nfs_fh3>, attr: Option<fattr3>) -> Res<(u64, u64, fattr3)> {
        let (fh, attr) = match fh {
            Some(fh) => (fh, attr),
            None => {
                let dir = self.fh(INodeNo(parent)).map_err(|_| libc::ESTALE)?;
                self.client.lookup(w, &dir, name)?
            }
        };
        let attr = match attr {
            Some(a) => a,
            None => self.client.getattr(w, &fh)?,
        };
        let (ino, generation) = self.intern(fh, &attr, true);
        self.state.lock().unwrap().names.insert((parent, name.to_vec()), (ino, Instant::now()));
        Ok((ino, generation, attr))
    }

    fn new_open(&self, ino: u64, w: Who) -> u64 {
        let mut st = self.state.lock().unwrap();
        let fh = st.next_fh;
        st.next_fh += 1;
        st.files.insert(fh, OpenFile { ino, who: w, unstable: Vec::new(), unstable_bytes: 0 });
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.opens += 1;
        }
        fh
    }

    /// COMMIT what `fh` wrote UNSTABLE; if the server's verifier changed since
    /// (it restarted and may have lost the data), write it again FILE_SYNC.
    fn commit(&self, fh: u64) -> Result<(), Errno> {
        let (ino, w, writes) = {
            let mut st = self.state.lock().unwrap();
            let Some(of) = st.files.get_mut(&fh) else { return Err(Errno::EBADF) };
            if of.unstable.is_empty() {
                return Ok(());
            }
            of.unstable_bytes = 0;
            (of.ino, of.who, std::mem::take(&mut of.unstable))
        };
        let file = self.fh(INodeNo(ino))?;
        let verf = self.client.commit(w, &file).map_err(err)?;
        if writes.iter().any(|(_, _, v)| *v != verf) {
            self.stats.bump("commit_verifier_changed");
            for (off, data, _) in &writes {
                let mut done = 0usize;
                while done < data.len() {
                    let (n, _, _, _) = self.client.write(w, &file, off + done as u64, &data[done..], stable_how::FILE_SYNC).map_err(err)?;
                    if n == 0 {
                        return Err(Errno::EIO);
                    }
                    done += n as usize;
                }
            }
        }
        self.cache_attr(ino, None);
        Ok(())
    }

    /// After the last close of a silly-renamed file, remove its hidden names.
    fn close_node(&self, ino: u64, w: Who) {
        let silly = {
            let mut st = self.state.lock().unwrap();
            let Some(n) = st.nodes.get_mut(&ino) else { return };
            n.opens = n.opens.saturating_sub(1);
            if n.opens > 0 {
                return;
            }
            std::mem::take(&mut n.silly)
        };
        for (dir, name) in silly {
            if let Ok(dfh) = self.fh(INodeNo(dir)) {
                self.stats.bump("silly_removes");
                let _ = self.client.remove(w, &dfh, &name);
            }
        }
    }
}

impl Filesystem for NfsFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let w = who(req);
        let name = name.as_bytes();
        if !self.actimeo.is_zero() {
            let hit = {
                let st = self.state.lock().unwrap();
                st.names.get(&(parent.0, name.to_vec())).filter(|(_, at)| at.elapsed() < self.actimeo).map(|(ino, _)| *ino)
            };
            if let Some(ino) = hit {
                if let Ok(a) = self.attr(w, INodeNo(ino), false) {
                    self.stats.bump("name_cache_hits");
                    let generation = self.state.lock().unwrap().nodes.get_mut(&ino).map_or(0, |n| {
                        n.lookups += 1;
                        n.generation
                    });
                    return reply.entry(&TTL0, &attr_of(ino, &a), Generation(generation));
                }
            }
        }
        let dir = match self.fh(parent) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match self.client.lookup(w, &dir, name) {
            Ok((fh, attr)) => self.entry(w, parent.0, name, Some(fh), attr, reply),
            Err(e) => {
                if e == libc::ENOENT {
                    self.state.lock().unwrap().names.remove(&(parent.0, name.to_vec()));
                }
                reply.error(err(e))
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // The count is kept for the record only: a node stays known for the mount's
        // life (its inode number is the fileid, which the kernel may name again after
        // a forget of an older generation), so an inode is never wrongly ESTALE.
        if let Some(n) = self.state.lock().unwrap().nodes.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(who(req), ino, false) {
            Ok(a) => reply.attr(&TTL0, &attr_of(ino.0, &a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
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
        let w = who(req);
        // Data written before a truncate must reach the server first.
        if let (Some(_), Some(fh)) = (size, fh) {
            if let Err(e) = self.commit(fh.0) {
                return reply.error(e);
            }
        }
        let file = match self.fh(ino) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let s = sattr3 {
            mode: mode.map_or(Nfs3Option::None, |m| Nfs3Option::Some(m & 0o7777)),
            uid: uid.map_or(Nfs3Option::None, Nfs3Option::Some),
            gid: gid.map_or(Nfs3Option::None, Nfs3Option::Some),
            size: size.map_or(Nfs3Option::None, Nfs3Option::Some),
            atime: time_arg_a(atime),
            mtime: time_arg_m(mtime),
        };
        match self.client.setattr(w, &file, s) {
            Ok(after) => {
                self.cache_attr(ino.0, after);
                match self.attr(w, ino, false) {
                    Ok(a) => reply.attr(&TTL0, &attr_of(ino.0, &a)),
                    Err(e) => reply.error(e),
                }
            }
            Err(e) => {
                self.cache_attr(ino.0, None);
                reply.error(err(e))
            }
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fh(ino).and_then(|fh| self.client.readlink(who(req), &fh).map_err(err)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        // Regular files only (what open(O_CREAT) without the create op would need).
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let w = who(req);
        let dir = match self.fh(parent) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let name = name.as_bytes();
        self.forget_name(parent.0, name);
        match self.client.create(w, &dir, name, createhow3::GUARDED(mode_only(mode & !umask))) {
            Ok((fh, attr)) => self.entry(w, parent.0, name, fh, attr, reply),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let w = who(req);
        let dir = match self.fh(parent) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let name = name.as_bytes();
        self.forget_name(parent.0, name);
        match self.client.mkdir(w, &dir, name, mode_only(mode & !umask)) {
            Ok((fh, attr)) => self.entry(w, parent.0, name, fh, attr, reply),
            Err(e) => reply.error(err(e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let w = who(req);
        let dir = match self.fh(parent) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let name = name.as_bytes();
        let child = self.forget_name(parent.0, name);
        // Silly rename: a file this mount still has open, and of which this is the
        // last name, keeps existing under a hidden name until its last close, as on
        // Linux. (Linux decides by the dentry: it renames only when this name is the
        // one in use; we cannot tell names apart, so we rename only when the file
        // would otherwise be gone: a file with another name survives its unlink.)
        let open = {
            let mut st = self.state.lock().unwrap();
            st.silly_counter += 1;
            let counter = st.silly_counter;
            child.filter(|c| st.nodes.get(c).is_some_and(|n| n.opens > 0)).map(|c| (c, counter))
        };
        let open = open.and_then(|(ino, counter)| match self.attr(w, INodeNo(ino), true) {
            Ok(a) if a.nlink <= 1 => Some((ino, a.fileid, counter)),
            _ => None,
        });
        if let Some((ino, fileid, counter)) = open {
            let hidden = format!(".nfs{fileid:016x}{counter:08x}").into_bytes();
            self.stats.bump("silly_renames");
            return match self.client.rename(w, &dir, name, &dir, &hidden) {
                Ok(()) => {
                    if let Some(n) = self.state.lock().unwrap().nodes.get_mut(&ino) {
                        n.silly.push((parent.0, hidden));
                    }
                    reply.ok()
                }
                Err(e) => reply.error(err(e)),
            };
        }
        match self.client.remove(w, &dir, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let dir = match self.fh(parent) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        self.forget_name(parent.0, name.as_bytes());
        match self.client.rmdir(who(req), &dir, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let w = who(req);
        let dir = match self.fh(parent) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let name = link_name.as_bytes();
        self.forget_name(parent.0, name);
        match self.client.symlink(w, &dir, name, target.as_os_str().as_bytes(), mode_only(0o777)) {
            Ok((fh, attr)) => self.entry(w, parent.0, name, fh, attr, reply),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // NFSv3 has no RENAME_NOREPLACE or RENAME_EXCHANGE (Linux: EINVAL).
        if flags.bits() != 0 {
            return reply.error(Errno::EINVAL);
        }
        let (from, to) = match (self.fh(parent), self.fh(newparent)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let moved = self.forget_name(parent.0, name.as_bytes());
        self.forget_name(newparent.0, newname.as_bytes());
        let _ = moved;
        match self.client.rename(who(req), &from, name.as_bytes(), &to, newname.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let w = who(req);
        let (file, dir) = match (self.fh(ino), self.fh(newparent)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let name = newname.as_bytes();
        self.forget_name(newparent.0, name);
        match self.client.link(w, &file, &dir, name) {
            Ok(attr) => self.entry(w, newparent.0, name, Some(file), attr, reply),
            Err(e) => {
                self.cache_attr(ino.0, None);
                reply.error(err(e))
            }
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Close-to-open: every open asks the server (never the cache). No
        // FOPEN_KEEP_CACHE, so the kernel drops this inode's cached pages.
        self.stats.bump("cto_getattr");
        match self.attr(who(req), ino, true) {
            Ok(_) => reply.opened(FileHandle(self.new_open(ino.0, who(req))), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let w = who(req);
        let file = match self.fh(ino) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let mut out = Vec::with_capacity(size as usize);
        while out.len() < size as usize {
            let want = (size - out.len() as u32).min(IO_MAX);
            match self.client.read(w, &file, offset + out.len() as u64, want) {
                Ok((data, eof, attr)) => {
                    if attr.is_some() {
                        self.cache_attr(ino.0, attr);
                    }
                    let n = data.len();
                    out.extend_from_slice(&data);
                    if eof || n == 0 {
                        break;
                    }
                }
                Err(e) => return reply.error(err(e)),
            }
        }
        reply.data(&out);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let w = who(req);
        let file = match self.fh(ino) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let mut done = 0usize;
        while done < data.len() {
            let end = (done + IO_MAX as usize).min(data.len());
            match self.client.write(w, &file, offset + done as u64, &data[done..end], stable_how::UNSTABLE) {
                Ok((n, committed, verf, attr)) => {
                    if n == 0 {
                        return reply.error(Errno::EIO);
                    }
                    self.cache_attr(ino.0, attr);
                    if committed == stable_how::UNSTABLE {
                        let mut st = self.state.lock().unwrap();
                        if let Some(of) = st.files.get_mut(&fh.0) {
                            of.unstable.push((offset + done as u64, data[done..done + n as usize].to_vec(), verf));
                            of.unstable_bytes += n as usize;
                        }
                    }
                    done += n as usize;
                }
                Err(e) => return reply.error(err(e)),
            }
        }
        let big = self.state.lock().unwrap().files.get(&fh.0).is_some_and(|of| of.unstable_bytes > UNSTABLE_MAX);
        if big {
            if let Err(e) = self.commit(fh.0) {
                return reply.error(e);
            }
        }
        reply.written(done as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        // close(2) flushes and commits, so the next opener on any host sees the data.
        match self.commit(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.commit(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _ = self.commit(fh.0);
        let w = self.state.lock().unwrap().files.remove(&fh.0).map(|of| of.who);
        if let Some(w) = w {
            self.close_node(ino.0, w);
        }
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let w = who(req);
        let dir = match self.fh(ino) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match self.client.readdir(w, &dir) {
            Ok(entries) => {
                let list = entries.into_iter().map(|(id, name)| (id, name, FileType::RegularFile)).collect();
                let mut st = self.state.lock().unwrap();
                let fh = st.next_fh;
                st.next_fh += 1;
                st.dirs.insert(fh, list);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = self.state.lock().unwrap();
        let Some(list) = st.dirs.get(&fh.0) else { return reply.error(Errno::EBADF) };
        for (i, (id, name, kind)) in list.iter().enumerate().skip(offset as usize) {
            // d_type unknown from READDIR: report regular files except . and ..
            let kind = if name == b"." || name == b".." { FileType::Directory } else { *kind };
            if reply.add(INodeNo(*id), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.state.lock().unwrap().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // NFSv3 directory operations are synchronous on the server.
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.client.fsstat(who(req)) {
            Ok(s) => reply.statfs(s.tbytes / 4096, s.fbytes / 4096, s.abytes / 4096, s.tfiles, s.afiles, 4096, 255, 4096),
            Err(e) => reply.error(err(e)),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let w = who(req);
        let dir = match self.fh(parent) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let name = name.as_bytes();
        self.forget_name(parent.0, name);
        let perm = mode & 0o7777 & !umask;
        let exclusive = flags & libc::O_EXCL != 0;
        let made = if exclusive {
            // The server keeps the verifier with the file: a retransmitted CREATE
            // with it succeeds, anyone else's gets NFS3ERR_EXIST.
            self.stats.bump("create_exclusive");
            self.client.create(w, &dir, name, createhow3::EXCLUSIVE(verifier())).and_then(|(fh, _)| {
                let (ino, generation, _) = self.resolve(w, parent.0, name, fh, None)?;
                let file = self.fh(INodeNo(ino)).map_err(|_| libc::ESTALE)?;
                // The verifier sat in atime/mtime: set them, and the mode.
                let s = sattr3 { atime: set_atime::SET_TO_SERVER_TIME, mtime: set_mtime::SET_TO_SERVER_TIME, ..mode_only(perm) };
                let after = self.client.setattr(w, &file, s)?;
                let a = match after {
                    Some(a) => a,
                    None => self.client.getattr(w, &file)?,
                };
                self.cache_attr(ino, Some(a.clone()));
                Ok((ino, generation, a))
            })
        } else {
            let mut s = mode_only(perm);
            if flags & libc::O_TRUNC != 0 {
                s.size = Nfs3Option::Some(0);
            }
            self.client.create(w, &dir, name, createhow3::UNCHECKED(s)).and_then(|(fh, attr)| self.resolve(w, parent.0, name, fh, attr))
        };
        match made {
            Ok((ino, generation, a)) => {
                let fh = self.new_open(ino, w);
                reply.created(&TTL0, &attr_of(ino, &a), Generation(generation), FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_differ() {
        assert_ne!(verifier(), verifier());
    }

    #[test]
    fn times_round_trip() {
        let t = nfstime3 { seconds: 1_700_000_000, nseconds: 123_456_789 };
        assert_eq!(nfstime_of(time_of(t)), t);
    }
}
