//! The directory backend: a manager any number of hosts share over NFS.
//!
//! ```text
//! DIR/nfslock-manager     header: first line "nfslock-manager 1"
//! DIR/ids/<id>            one file per allocated ID (decimal), holding its allocator's record
//! DIR/locks/<id>.nfs_lock lock <id>: an ordinary lock file (or lease) on the path DIR/locks/<id>
//! ```
//!
//! An ID is allocated by link(2) of a fresh private file (holding this process's record)
//! to `ids/<id>`: link is atomic on every NFS version, so of two hosts only one gets the
//! name. A retransmitted LINK whose first reply was lost reports EEXIST although it
//! worked; it counts as ours only when the name is that very file, which was made for
//! this one call (so neither another thread nor a forked sibling can pass for us).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;

use super::{closed, Locked};
use crate::error::{Error, Result};
use crate::fsops::{self, FileId, LinkProof, Linked};
use crate::lease::{self, Lease};
use crate::lockfile::{self, registry, Lock, LOCK_SUFFIX};
use crate::process;

const HEADER: &str = "nfslock-manager";
const MAGIC_LINE: &str = "nfslock-manager 1";
const HEADER_TEXT: &str = "nfslock-manager 1\n\
# A libnfslock lock manager. ids/ holds one file per allocated lock ID; locks/ holds the\n\
# lock files (locks/<ID>.nfs_lock). Remove a crashed host's lock with `nfslock break`.\n";
const CLAIM_PREFIX: &str = ".claim-";
/// How many times an ID is linked again after a link said EEXIST for a name the server
/// no longer has (a client's stale cache).
const STALE_NAME_RETRIES: u32 = 4;
/// How many times free removes a name its listing still shows (50 ms apart).
const FREE_ROUNDS: u32 = 8;
/// How many times allocate lists the IDs again after losing the candidates it tried.
const ALLOCATE_ROUNDS: u32 = 64;
/// How many candidates of one listing allocate tries before it lists again.
const ALLOCATE_TRIES_PER_LISTING: u32 = 8;

const OP_CREATE: &str = "Manager::create_dir";
const OP_OPEN: &str = "Manager::open_dir";
const OP_ALLOCATE: &str = "Manager::allocate";
const OP_ALLOCATE_ID: &str = "Manager::allocate_id";
const OP_LOCK: &str = "Manager::lock";
const OP_UNLOCK: &str = "Manager::unlock";

/// A lock taken through this manager.
enum Hold {
    Plain(Lock),
    Lease(Lease),
}

struct Held {
    /// The thread that took it (`registry::this_thread`): only it releases it.
    thread: u64,
    /// The fork generation it was taken in: a forked child's copy is its parent's.
    generation: u64,
    hold: Hold,
}

pub struct Directory {
    path: PathBuf,
    ids: PathBuf,
    locks: PathBuf,
    lease_ms: AtomicU64,
    held: Mutex<HashMap<u32, Held>>,
    closed: AtomicBool,
    /// The directory is on a filesystem of this machine only (EEXIST from link(2) is
    /// then the truth: no lost replies).
    local: bool,
}

fn id_name(id: u32) -> String {
    id.to_string()
}

/// The ID a name in ids/ stands for: canonical decimal (no sign, no leading zero) below
/// u32::MAX; anything else (a claim, a stray file) is not an ID.
fn parse_id(name: &OsStr) -> Option<u32> {
    let b = name.as_bytes();
    let canonical = !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b == b"0" || b[0] != b'0');
    canonical.then(|| std::str::from_utf8(b).ok()?.parse::<u32>().ok()).flatten().filter(|&id| id < u32::MAX)
}

fn mkdir(path: &Path) -> nix::Result<()> {
    nix::unistd::mkdir(path, nix::sys::stat::Mode::from_bits_truncate(0o755))
}

impl Directory {
    fn at(path: PathBuf) -> Directory {
        Directory {
            ids: path.join("ids"),
            locks: path.join("locks"),
            path,
            lease_ms: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            local: false,
        }
        .on_its_filesystem()
    }

    fn on_its_filesystem(mut self) -> Directory {
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        self.local = fsops::is_local_fs(if self.path.is_dir() { &self.path } else { parent });
        self
    }

    /// link(2) of our private file `from` (the inode `ours`, linked to nothing else) to
    /// `to`: Ok(true) ours, also when the reply was lost and a retransmission said
    /// EEXIST. Proven by the file's link count through a fresh open (close-to-open
    /// consistency revalidates it), never by a lookup of `to`: a client's name cache
    /// can answer that with an earlier file whose inode number the server gave again.
    fn link_ours(&self, from: &Path, to: &Path, ours: FileId) -> nix::Result<bool> {
        let proof = LinkProof { only_link: true, local: self.local, by_name: false };
        match fsops::link_checked(from, to, ours, proof)? {
            Linked::Ours => Ok(true),
            Linked::Taken { errno: Errno::EEXIST, .. } => Ok(false),
            Linked::Taken { errno, .. } => Err(errno),
        }
    }

    pub fn create(dir: &Path) -> Result<Directory> {
        let d = Directory::at(fsops::absolute(dir));
        let exists = || Error::new(Errno::EEXIST, OP_CREATE, Some(&d.path), "something exists at that name");
        match mkdir(&d.path) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Err(exists()),
            Err(Errno::ENOENT) => return Err(Error::new(Errno::ENOENT, OP_CREATE, Some(&d.path), "its parent directory does not exist")),
            // A transient error, then EEXIST: our own first mkdir may have worked. An
            // empty directory is taken for ours (a concurrent creator of the same name
            // is told apart at the header's link below).
            Err(e) if fsops::is_transient(e) => match fsops::retry(|| mkdir(&d.path)) {
                Ok(()) => {}
                Err(Errno::EEXIST) if fsops::list(&d.path).is_ok_and(|names| names.is_empty()) => {}
                Err(Errno::EEXIST) => return Err(exists()),
                Err(e) => return Err(Error::sys(e, OP_CREATE, &d.path, "mkdir")),
            },
            Err(e) => return Err(Error::sys(e, OP_CREATE, &d.path, "mkdir")),
        }
        let made = d.populate();
        if let Err(e) = made {
            if e.sys_errno() != Errno::EEXIST {
                // Undo what this call made; a directory someone else completed (EEXIST
                // at its header) is theirs and stays.
                let _ = std::fs::remove_dir(&d.ids);
                let _ = std::fs::remove_dir(&d.locks);
                let _ = std::fs::remove_dir(&d.path);
            }
            return Err(e);
        }
        Ok(d)
    }

    /// Makes the subdirectories and, last and whole, the header of a new manager
    /// directory: one that has the header is complete.
    fn populate(&self) -> Result<()> {
        for sub in [&self.ids, &self.locks] {
            match fsops::retry(|| mkdir(sub)) {
                // EEXIST: our own mkdir retransmitted, or a concurrent creator's.
                Ok(()) => {}
                Err(Errno::EEXIST) if fsops::is_dir(sub) => {}
                Err(e) => return Err(Error::sys(e, OP_CREATE, sub, "mkdir")),
            }
        }
        let temp = self.path.join(format!(".{HEADER}-new-{}", crate::random::unpredictable_hex()));
        let (_fd, st) = fsops::create_private(&temp, HEADER_TEXT.as_bytes(), || fsops::create_fresh(&temp), |_| Ok(()))
            .map_err(|e| Error::sys(e, OP_CREATE, &temp, "create"))?;
        let header = self.path.join(HEADER);
        let linked = match self.link_ours(&temp, &header, FileId::from(&st)) {
            Ok(true) => Ok(()),
            Ok(false) => {
                Err(Error::new(Errno::EEXIST, OP_CREATE, Some(&self.path), "another process made this manager directory meanwhile"))
            }
            Err(e) => Err(Error::sys(e, OP_CREATE, &header, "link")),
        };
        let _ = fsops::unlink(&temp);
        linked
    }

    pub fn open(dir: &Path) -> Result<Directory> {
        let d = Directory::at(fsops::absolute(dir));
        let bad = |why: &str| Error::new(Errno::EBADMSG, OP_OPEN, Some(&d.path), format!("not a lock manager directory: {why}"));
        match fsops::lstat(&d.path) {
            Err(Errno::ENOENT) => return Err(Error::new(Errno::ENOENT, OP_OPEN, Some(&d.path), "no such directory")),
            Err(e) => return Err(Error::sys(e, OP_OPEN, &d.path, "lstat")),
            Ok(st) if fsops::is_symlink(&st) => {
                return Err(Error::new(Errno::ELOOP, OP_OPEN, Some(&d.path), "a symbolic link is there: refused"))
            }
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => return Err(bad("not a directory")),
            Ok(_) => {}
        }
        let header = d.path.join(HEADER);
        let text = match fsops::open_existing(&header, false) {
            Ok(fd) => {
                let st = fsops::fstat(&fd).map_err(|e| Error::sys(e, OP_OPEN, &header, "fstat"))?;
                if !fsops::is_regular(&st) {
                    return Err(bad(&format!("its {HEADER} is not a regular file")));
                }
                fsops::read_capped(&std::fs::File::from(fd), 4096).map_err(|e| Error::sys(e, OP_OPEN, &header, "read"))?
            }
            Err(Errno::EISDIR) => return Err(bad(&format!("its {HEADER} is a directory"))),
            Err(Errno::ENOENT) => return Err(bad(&format!("it has no {HEADER} header (or its creation did not finish)"))),
            Err(Errno::ELOOP) => return Err(bad(&format!("its {HEADER} is a symbolic link"))),
            Err(e) => return Err(Error::sys(e, OP_OPEN, &header, "open")),
        };
        let text = text.ok_or_else(|| bad(&format!("its {HEADER} is longer than a header")))?;
        let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
        if first != MAGIC_LINE.as_bytes() {
            return Err(match first.strip_prefix(format!("{HEADER} ").as_bytes()) {
                Some(v) => bad(&format!("layout version {}; this library reads 1", String::from_utf8_lossy(v))),
                None => bad(&format!("its {HEADER} does not start with \"{MAGIC_LINE}\"")),
            });
        }
        for sub in [&d.ids, &d.locks] {
            match fsops::lstat(sub) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                _ => return Err(bad(&format!("{} is missing or not a directory", sub.display()))),
            }
        }
        Ok(d)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed(op));
        }
        Ok(())
    }

    pub fn set_lease(&self, lease: Duration) -> Result<()> {
        let op = "Manager::set_lease";
        self.check_open(op)?;
        if !lease.is_zero() {
            lease::Options { lease, ..lease::Options::default() }.check(op)?;
        }
        self.lease_ms.store(lease.as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u32, Held>> {
        // Every update is one insert or remove: a panic cannot leave it half done.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A private file holding this process's record, made for one allocation call.
    fn claim(&self, op: &'static str) -> Result<(PathBuf, FileId)> {
        let path = self.ids.join(format!("{CLAIM_PREFIX}{}", crate::random::unpredictable_hex()));
        let record = process::this_process().record(b"lock manager ID").to_bytes();
        let (_fd, st) = fsops::create_private(&path, &record, || fsops::create_fresh(&path), |_| Ok(()))
            .map_err(|e| Error::sys(e, op, &path, "create"))?;
        Ok((path, FileId::from(&st)))
    }

    fn listed(&self, op: &'static str, dir: &Path, strip: &[u8]) -> Result<Vec<u32>> {
        let names = fsops::list(dir).map_err(|e| Error::sys(e, op, dir, "readdir"))?;
        let mut ids: Vec<u32> =
            names.iter().filter_map(|n| n.as_bytes().strip_suffix(strip)).filter_map(|n| parse_id(OsStr::from_bytes(n))).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    pub fn allocated(&self) -> Result<Vec<u32>> {
        self.check_open("Manager::allocated")?;
        self.listed("Manager::allocated", &self.ids, b"")
    }

    pub fn locks_held(&self) -> Result<Vec<u32>> {
        self.check_open("Manager::locks_held")?;
        self.listed("Manager::locks_held", &self.locks, LOCK_SUFFIX.as_bytes())
    }

    /// Links the claim to `ids/<id>`: Ok(true) ours, Ok(false) someone else's.
    fn take(&self, op: &'static str, claim: &(PathBuf, FileId), id: u32) -> Result<bool> {
        let name = self.ids.join(id_name(id));
        for _ in 0..STALE_NAME_RETRIES {
            if self.link_ours(&claim.0, &name, claim.1).map_err(|e| Error::sys(e, op, &name, "link"))? {
                return Ok(true);
            }
            // EEXIST, and not ours. A client may answer a link from its cache of a name
            // another host has removed since: a fresh open asks the server (and makes the
            // client drop a stale name), so only an ID really taken is given up.
            match fsops::open_existing(&name, false) {
                Ok(_) => return self.claim_unlinked(op, claim),
                Err(Errno::ENOENT | Errno::ESTALE) => {}
                Err(e) => return Err(Error::sys(e, op, &name, "open")),
            }
        }
        Ok(false)
    }

    /// The claim is tried on the next candidate only while it is linked to nothing else
    /// (its link count, through a fresh open, is 1): the count is what proves a link
    /// ours. A count of 2 says our link to `ids/<id>` landed after all: ours (Ok(true)).
    /// A count that cannot be read ends the allocation (never a guess).
    fn claim_unlinked(&self, op: &'static str, claim: &(PathBuf, FileId)) -> Result<bool> {
        let st = fsops::open_existing(&claim.0, false).and_then(|fd| fsops::fstat(&fd)).map_err(|e| Error::sys(e, op, &claim.0, "open"))?;
        if FileId::from(&st) != claim.1 {
            return Err(Error::new(Errno::EIO, op, Some(&claim.0), "this call's claim was replaced"));
        }
        Ok(st.st_nlink >= 2)
    }

    /// Runs `f` with a fresh claim, which is removed afterwards (the ID's name keeps the file).
    fn with_claim<R>(&self, op: &'static str, f: impl FnOnce(&(PathBuf, FileId)) -> Result<R>) -> Result<R> {
        let claim = self.claim(op)?;
        let result = f(&claim);
        let _ = fsops::unlink(&claim.0);
        result
    }

    pub fn allocate(&self) -> Result<u32> {
        self.check_open(OP_ALLOCATE)?;
        self.with_claim(OP_ALLOCATE, |claim| {
            // IDs this call found taken: skipped in later rounds too, even when a stale
            // listing still shows them free, so every try is a new ID and the loop ends.
            let mut lost = std::collections::BTreeSet::new();
            for _ in 0..ALLOCATE_ROUNDS {
                let mut taken: Vec<u32> = self.listed(OP_ALLOCATE, &self.ids, b"")?;
                taken.extend(&lost);
                taken.sort_unstable();
                // The lowest IDs not taken, in order; one another host took meanwhile is
                // skipped (its link fails), the next one tried.
                let mut skip = taken.iter().copied().peekable();
                let mut tries = 0;
                for candidate in 0..u32::MAX {
                    while skip.next_if(|&t| t < candidate).is_some() {}
                    if skip.next_if_eq(&candidate).is_some() {
                        continue;
                    }
                    if self.take(OP_ALLOCATE, claim, candidate)? {
                        return Ok(candidate);
                    }
                    lost.insert(candidate);
                    tries += 1;
                    if tries == ALLOCATE_TRIES_PER_LISTING {
                        break; // many hosts allocate at once: look again
                    }
                }
            }
            let why = format!("no free ID could be taken: {} were taken first, each just before this call's link", lost.len());
            Err(Error::new(Errno::ENOSPC, OP_ALLOCATE, Some(&self.ids), why))
        })
    }

    pub fn allocate_id(&self, id: u32) -> Result<()> {
        self.check_open(OP_ALLOCATE_ID)?;
        let exists = || Error::new(Errno::EEXIST, OP_ALLOCATE_ID, Some(&self.ids), format!("lock {id} is allocated already"));
        // No lookup first: link(2) on the server decides, and a lookup could answer
        // from a client's stale cache either way.
        match self.with_claim(OP_ALLOCATE_ID, |claim| self.take(OP_ALLOCATE_ID, claim, id))? {
            true => Ok(()),
            false => Err(exists()),
        }
    }

    pub fn free(&self, id: u32) -> Result<()> {
        let op = "Manager::free";
        self.check_open(op)?;
        let name = self.ids.join(id_name(id));
        let listed = |d: &Directory| -> Result<bool> { Ok(d.listed(op, &d.ids, b"")?.binary_search(&id).is_ok()) };
        // A fresh open, not a lookup: close-to-open consistency asks the server about a
        // name the client has cached, so a file another host freed meanwhile is not
        // taken for allocated. Closed before the unlink (NFS would keep an open file's
        // data under a .nfs name).
        let seen = fsops::open_existing(&name, false).and_then(|fd| fsops::fstat(&fd));
        match seen {
            // Removed only while it is the file we saw: a REMOVE whose reply was lost is
            // never repeated onto another host's new allocation of the ID; its ENOENT
            // means ours worked.
            Ok(st) => return fsops::unlink_if_is(&name, FileId::from(&st)).map(drop).map_err(|e| Error::sys(e, op, &name, "unlink")),
            Err(Errno::ENOENT | Errno::ESTALE) => {}
            Err(e) => return Err(Error::sys(e, op, &name, "open")),
        }
        // A lookup can answer from a client's cache of the name's absence (another host
        // may have allocated it since): the listing, read afresh, decides, and says when
        // the name is really gone.
        let mut sent = false;
        for _ in 0..FREE_ROUNDS {
            if !listed(self)? {
                if sent {
                    return Ok(()); // our unlink, whose reply was lost, worked
                }
                return Err(Error::new(Errno::ENOENT, op, Some(&name), format!("lock {id} is not allocated")));
            }
            // Whenever the server can show the file, it goes only while it is that file.
            match fsops::open_existing(&name, false).and_then(|fd| fsops::fstat(&fd)) {
                Ok(st) => return fsops::unlink_if_is(&name, FileId::from(&st)).map(drop).map_err(|e| Error::sys(e, op, &name, "unlink")),
                Err(Errno::ENOENT | Errno::ESTALE) => {}
                Err(e) => return Err(Error::sys(e, op, &name, "open")),
            }
            // One blind unlink(2) at most: once one may have worked, another could remove
            // another host's new allocation of the ID.
            if !sent {
                match nix::unistd::unlink(&name) {
                    Ok(()) => return Ok(()),
                    Err(Errno::ENOENT) => {}
                    Err(e) if fsops::is_transient(e) => sent = true,
                    Err(e) => return Err(Error::sys(e, op, &name, "unlink")),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let why = format!("lock {id} stays listed although this client's unlink finds no such name (a stale cache): try again");
        Err(Error::new(Errno::EAGAIN, op, Some(&name), why))
    }

    pub fn free_all(&self) -> Result<()> {
        let op = "Manager::free_all";
        self.check_open(op)?;
        for id in self.listed(op, &self.ids, b"")? {
            let name = self.ids.join(id_name(id));
            fsops::unlink(&name).map_err(|e| Error::sys(e, op, &name, "unlink"))?;
        }
        Ok(())
    }

    pub fn lock(&self, id: u32, timeout: Option<Duration>) -> Result<Locked> {
        self.check_open(OP_LOCK)?;
        let path = self.locks.join(id_name(id));
        let message = format!("lock manager lock {id}");
        let lease = Duration::from_millis(self.lease_ms.load(Ordering::Relaxed));
        let busy = |e: Error| match e.sys_errno() {
            // One try: the C API's EBUSY, as a mutex's trylock says it.
            Errno::EAGAIN if timeout == Some(Duration::ZERO) => {
                Error::new(Errno::EBUSY, OP_LOCK, Some(&path), format!("lock {id} is held ({})", e.cause()))
            }
            _ => e.in_op(OP_LOCK),
        };
        let hold = if lease.is_zero() {
            Hold::Plain(
                match timeout {
                    Some(t) if t.is_zero() => lockfile::create(&path, message.as_bytes()),
                    _ => lockfile::blocking_create(&path, message.as_bytes(), timeout),
                }
                .map_err(busy)?,
            )
        } else {
            let options = lease::Options { message: message.into_bytes(), lease, keepalive: true, shared: false };
            Hold::Lease(lease::acquire(&path, &options, timeout).map_err(busy)?)
        };
        {
            let mut held = self.held();
            // Closed while this call waited: close released what it found, and a lock
            // kept in a closed manager would be dropped (released) behind the caller's back.
            if !self.closed.load(Ordering::Relaxed) {
                held.insert(id, Held { thread: registry::this_thread(), generation: process::fork_generation(), hold });
                return Ok(Locked::Clean);
            }
        }
        let _ = release(hold);
        Err(closed(OP_LOCK))
    }

    pub fn unlock(&self, id: u32) -> Result<()> {
        self.check_open(OP_UNLOCK)?;
        let me = registry::this_thread();
        let held = {
            let mut held = self.held();
            match held.get(&id) {
                Some(h) if h.thread == me => held.remove(&id),
                Some(_) => {
                    let why = format!("lock {id} is held by another thread of this process, which must release it");
                    return Err(Error::new(Errno::EPERM, OP_UNLOCK, None, why));
                }
                None => None,
            }
        };
        let Some(held) = held else {
            return Err(Error::new(Errno::EPERM, OP_UNLOCK, None, format!("lock {id} is not held through this manager")));
        };
        release(held.hold).map_err(|e| e.in_op(OP_UNLOCK))
    }

    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::Relaxed) {
            return Err(closed("Manager::close"));
        }
        let held: Vec<Held> = self.held().drain().map(|(_, h)| h).collect();
        let mut first = Ok(());
        // A forked child's copies of its parent's locks are the parent's: dropped
        // here without a word (the lock-file layer leaves them alone).
        let generation = process::fork_generation();
        for h in held.into_iter().filter(|h| h.generation == generation) {
            let released = release(h.hold).map_err(|e| e.in_op("Manager::close"));
            first = first.and(released);
        }
        first
    }
}

fn release(hold: Hold) -> Result<()> {
    match hold {
        Hold::Plain(l) => l.unlock(),
        Hold::Lease(l) => l.unlock(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_decimal_names_are_ids() {
        let id = |s: &str| parse_id(OsStr::new(s));
        assert_eq!(id("0"), Some(0));
        assert_eq!(id("17"), Some(17));
        assert_eq!(id("4294967294"), Some(u32::MAX - 1));
        for bad in ["", "01", "+1", "-1", "1a", "4294967295", "99999999999", ".claim-00", "1.nfs_lock"] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
    }
}
