//! Lock files on shared directories, compatible on disk with Core's Nfs_lock.
//!
//! The lock on `P` is the file `P.nfs_lock`. It is taken by link(2) of a claim file that
//! already holds the complete record (link is atomic on every NFS version), and released
//! by unlinking it after checking it is still the file we linked.
//!
//! `P` itself is never written: Core's v1 create links `P` as its lock file and writes
//! its record only after the link, so any record left in `P` would name a stale holder
//! in that window (and a cleaner would remove Core's fresh lock). Clearing a dead
//! holder removes a `P` that holds a record before the lock file, as Core does.
//!
//! Steady state, for a path this process locked before with the same message: create is
//! one link(2), unlock one lstat(2) and one unlink(2).

pub(crate) mod claim;
pub(crate) mod holder;
pub(crate) mod registry;
#[cfg(test)]
mod tests;
pub(crate) mod token;
pub(crate) mod wait;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::host::{self, Identity, Owner};
use crate::process;
use crate::record::{Record, MAX_RECORD_LEN};
use holder::{Cleared, Holder, ReadError};
use registry::{state, Busy, Claim, Release};

// Kept for the session layer's callers until they name `process` directly.

/// The suffix Core's Nfs_lock appends to a path to name its lock file.
pub const LOCK_SUFFIX: &str = ".nfs_lock";

const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;
/// Why a holder that looks dead is not cleared.
const BUSY: &str = "its holder looks dead, but a live process still holds the lock file's flock \
                    (the holder itself, or another process clearing it)";
/// How many times one attempt re-examines a lock that changed hands under it.
const ROUNDS_PER_ATTEMPT: u32 = 4;
/// How long `blocking_create` waits on a lock file that holds no record (a Core holder
/// between its link and its write) before it reports EBADMSG, on this process's own
/// monotonic clock, from the moment it first saw that same file without a record.
pub const UNWRITTEN_PATIENCE: Duration = Duration::from_secs(5);
/// Within one blocking wait, a lock file whose holder was judged alive is not read and
/// judged again for this long (a contended lock is not re-read on every wake-up).
const ALIVE_FOR: Duration = Duration::from_millis(50);

// Errors name the Rust operation; the C API relabels them with its function's name.
const OP_CREATE: &str = "lockfile::create";
const OP_BLOCKING: &str = "lockfile::blocking_create";
const OP_UNLOCK: &str = "Lock::unlock";
const OP_UNLOCK_PATH: &str = "lockfile::unlock_path";
const OP_READ: &str = "lockfile::read_record";
const OP_CRITICAL: &str = "lockfile::critical_section";

/// The names one lock involves.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `P`, absolute and without `.` components or doubled slashes: the process-wide key.
    pub(crate) key: PathBuf,
    /// `P.nfs_lock`.
    pub(crate) lock: PathBuf,
    pub(crate) lock_name: OsString,
    pub(crate) dir: PathBuf,
    /// A lock the library takes for itself (a session repository's guard or writer
    /// lock): the at-exit hook leaves it alone (another thread may be in the middle of the update it protects; once the process
    /// is gone it is a dead holder's lock, cleared as such).
    pub(crate) internal: bool,
}

impl Target {
    pub(crate) fn new(op: &'static str, path: &Path) -> Result<Target> {
        let bytes = path.as_os_str().as_bytes();
        let invalid = |why: &str| Err(Error::new(Errno::EINVAL, op, Some(path), why));
        if bytes.is_empty() {
            return invalid("the path is empty");
        }
        if bytes.contains(&0) {
            return invalid("the path contains a NUL byte");
        }
        let last = bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let Some(name) = path.file_name().filter(|_| !matches!(last, b"" | b"." | b"..")) else {
            return invalid("the path names a directory, not a file");
        };
        if name.len() + LOCK_SUFFIX.len() > NAME_MAX {
            let why = format!("the lock file name would be longer than {NAME_MAX} bytes");
            return Err(Error::new(Errno::ENAMETOOLONG, op, Some(path), why));
        }
        // A relative path is made absolute once, so that a later chdir cannot make a
        // handle release another file. If the cwd is gone, the path is used as given.
        let key = fsops::absolute(path);
        let mut lock = key.clone().into_os_string();
        lock.push(LOCK_SUFFIX);
        if lock.len() >= PATH_MAX {
            let why = format!("the lock file path would be longer than {PATH_MAX} bytes");
            return Err(Error::new(Errno::ENAMETOOLONG, op, Some(path), why));
        }
        let mut lock_name = name.to_os_string();
        lock_name.push(LOCK_SUFFIX);
        let dir = key.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        Ok(Target { key, lock: lock.into(), lock_name, dir, internal: false })
    }

    /// The target a reader means: `P`, or `P.nfs_lock` itself (as Core's readers accept).
    pub(crate) fn for_reader(op: &'static str, path: &Path) -> Result<Target> {
        let bytes = path.as_os_str().as_bytes();
        match bytes.strip_suffix(LOCK_SUFFIX.as_bytes()) {
            Some(p) if !p.is_empty() && !p.ends_with(b"/") => Target::new(op, Path::new(std::ffi::OsStr::from_bytes(p))),
            _ => Target::new(op, path),
        }
    }

    pub(crate) fn error(&self, errno: Errno, op: &'static str, cause: impl Into<String>) -> Error {
        Error::new(errno, op, Some(&self.key), cause)
    }

    pub(crate) fn sys(&self, errno: Errno, op: &'static str, call: &str, on: &Path) -> Error {
        let cause = match errno {
            Errno::ENOENT => format!("{call} {}: the directory {} does not exist", on.display(), self.dir.display()),
            _ => format!("{call} {}: {}", on.display(), errno.desc()),
        };
        self.error(errno, op, cause)
    }
}

/// A lock this process holds. Dropping it releases the lock (ignoring errors); call
/// [`Lock::unlock`] to learn whether the release went as expected.
pub struct Lock {
    target: Target,
    token: u64,
    file: FileId,
    generation: u64,
    held: bool,
    /// The fencing token handed out for this hold (0: none yet).
    fence: std::sync::atomic::AtomicU64,
}

/// `Lock { path: "/shared/queue", lock_file: "/shared/queue.nfs_lock" }`.
impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock").field("path", &self.target.key).field("lock_file", &self.target.lock).finish()
    }
}

impl Lock {
    /// The locked path `P` (absolute).
    pub fn path(&self) -> &Path {
        &self.target.key
    }

    /// The lock file `P.nfs_lock`.
    pub fn lock_file(&self) -> &Path {
        &self.target.lock
    }

    /// Releases the lock. ENOLCK: the lock file was removed or replaced by someone else
    /// (nothing is removed). EPERM: this handle was inherited through fork (the parent's
    /// lock is left alone).
    pub fn unlock(mut self) -> Result<()> {
        self.held = false;
        self.release(OP_UNLOCK)
    }

    /// Ok while the lock file is still this hold's. ENOLCK: removed or replaced (by
    /// `unlock_path`, an operator's break, or by hand); EPERM: inherited through fork.
    pub fn is_held(&self) -> Result<()> {
        const OP: &str = "Lock::is_held";
        let t = &self.target;
        if process::fork_generation() != self.generation {
            return Err(t.error(Errno::EPERM, OP, "the handle was inherited through fork; a child holds nothing"));
        }
        if !state().holds(&t.key, self.token) {
            return Err(t.error(Errno::ENOLCK, OP, "the lock was released with unlock_path or broken"));
        }
        match fsops::id_of(&t.lock) {
            Ok(id) if id == self.file => Ok(()),
            Ok(_) | Err(Errno::ENOENT) => Err(t.error(Errno::ENOLCK, OP, format!("{} was removed or replaced", t.lock.display()))),
            Err(e) => Err(t.sys(e, OP, "lstat", &t.lock)),
        }
    }

    /// This hold's fencing token: greater than every token handed out for any earlier
    /// acquisition of this path (see [`crate::lease::Lease::fencing_token`]). The first
    /// call of a hold grows the path's counter durably, then checks the lock file is
    /// still ours; ENOLCK if it is not.
    pub fn fencing_token(&self) -> Result<u64> {
        use std::sync::atomic::Ordering;
        const OP: &str = "Lock::fencing_token";
        let t = &self.target;
        if process::fork_generation() != self.generation {
            return Err(t.error(Errno::EPERM, OP, "the handle was inherited through fork; a child holds nothing"));
        }
        let known = self.fence.load(Ordering::Relaxed);
        if known != 0 {
            return Ok(known);
        }
        let counter = crate::fence::counter_path(&t.lock);
        let token = crate::fence::grow(&t.lock).map_err(|e| t.sys(e, OP, "growing the fencing counter", &counter))?;
        // A plain lock is never broken while its holder lives; only unlock_path or an
        // operator's break can have removed it.
        if !state().holds(&t.key, self.token) || fsops::id_of(&t.lock) != Ok(self.file) {
            return Err(t.error(Errno::ENOLCK, OP, format!("{} was removed or replaced; no token", t.lock.display())));
        }
        self.fence.store(token, Ordering::Relaxed);
        Ok(token)
    }

    fn release(&self, op: &'static str) -> Result<()> {
        let t = &self.target;
        {
            let mut st = state();
            if process::fork_generation() != self.generation {
                return Err(t.error(Errno::EPERM, op, "the handle was inherited through fork; only its owner releases it"));
            }
            if !st.begin_release(&t.key, self.token) {
                return Err(t.error(Errno::ENOLCK, op, "the lock was released (or is being released) with unlock_path"));
            }
        }
        let removed = fsops::unlink_if_is(&t.lock, self.file);
        registry::end_hold(&t.key, self.token);
        match removed {
            Ok(true) => Ok(()),
            Ok(false) => Err(t.error(
                Errno::ENOLCK,
                op,
                format!("{} was removed or replaced by someone else; nothing was removed", t.lock.display()),
            )),
            Err(e) => Err(t.sys(e, op, "unlink", &t.lock)),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.held {
            let _ = self.release(OP_UNLOCK);
        }
    }
}

/// Tries once to take the lock on `path`. EAGAIN: a live process (or another host) holds
/// it; EDEADLK: the calling thread holds it already.
pub fn create(path: impl AsRef<Path>, message: &[u8]) -> Result<Lock> {
    attempt(&Target::new(OP_CREATE, path.as_ref())?, message, OP_CREATE, &mut Judgements::default())
}

/// Takes the lock on `path`, waiting up to `timeout` (None: forever; zero: one attempt,
/// EAGAIN). ETIMEDOUT when the timeout passes. Errors that waiting cannot cure
/// (permissions, a missing directory, a symlink, an unreadable record, EDEADLK) return
/// at once.
pub fn blocking_create(path: impl AsRef<Path>, message: &[u8], timeout: Option<Duration>) -> Result<Lock> {
    blocking(Target::new(OP_BLOCKING, path.as_ref())?, message, timeout)
}

/// [`blocking_create`] for a lock the library takes for itself (a session repository's
/// guard): see `Target::internal`.
pub(crate) fn blocking_create_internal(path: &Path, message: &[u8], timeout: Option<Duration>) -> Result<Lock> {
    blocking(Target { internal: true, ..Target::new(OP_BLOCKING, path)? }, message, timeout)
}

fn blocking(t: Target, message: &[u8], timeout: Option<Duration>) -> Result<Lock> {
    let mut waiter = wait::Waiter::new(&t, OP_BLOCKING, timeout);
    let mut judged = Judgements::default();
    loop {
        judged.unwritten_this_round = false;
        let err = match attempt(&t, message, OP_BLOCKING, &mut judged) {
            Ok(lock) => return Ok(lock),
            Err(e) => waiter.retryable(e)?,
        };
        // A round that saw the lock held with a record, free, or another file, ends the
        // wait on an unwritten one: the patience counts one file staying without a record.
        if !judged.unwritten_this_round {
            judged.unwritten = None;
        }
        if let Some((_, since)) = judged.unwritten.filter(|(_, since)| since.elapsed() >= UNWRITTEN_PATIENCE) {
            let why = format!(
                "{} has held no record for {} ms (a holder that died between its link and its write?); it is left alone",
                t.lock.display(),
                since.elapsed().as_millis()
            );
            return Err(t.error(Errno::EBADMSG, OP_BLOCKING, why));
        }
        waiter.wait(&err, Duration::MAX)?;
    }
}

/// Removes the lock on `path` if this process holds it or its holder is a dead process
/// of this host (Core's unlock_exn). EPERM: a live process or another host holds it;
/// ENOENT: not locked; EAGAIN: another process is clearing it at this moment.
pub fn unlock_path(path: impl AsRef<Path>) -> Result<()> {
    let op = OP_UNLOCK_PATH;
    let t = Target::new(op, path.as_ref())?;
    let me = process::this_process();
    let (record, file) = match read_holder(&t, op)? {
        Holder::Free => return Err(t.error(Errno::ENOENT, op, "not locked")),
        Holder::Unwritten { .. } => return Err(t.error(Errno::EAGAIN, op, UNWRITTEN)),
        Holder::Held { record, file } => (record, file),
    };
    if record.lease.as_ref().is_some_and(|l| l.shared) {
        let why = "a shared lock is released by each holder's unlock (an operator removes it with break)";
        return Err(t.error(Errno::EPERM, op, why));
    }
    if let Some(terms) = record.lease.as_ref().filter(|_| me.wrote(&record)) {
        // One of our own leases: its token goes first, as for any break; its handle
        // then learns ENOLCK.
        return break_leased(&t, op, file, terms);
    }
    if me.wrote(&record) {
        // Bound first: the state's guard must be gone before end_hold takes it again.
        let release = state().begin_release_of_file(file);
        let removed = match release {
            Release::Started(key, token) => {
                let removed = fsops::unlink_if_is(&t.lock, file);
                registry::end_hold(&key, token);
                removed
            }
            Release::InProgress => return Err(t.error(Errno::EAGAIN, op, "another thread of this process is releasing it")),
            // Ours by its record, with no hold in this process's registry.
            Release::NotHeld => fsops::unlink_if_is(&t.lock, file),
        };
        return match removed {
            Ok(true) => Ok(()),
            Ok(false) => Err(t.error(Errno::EAGAIN, op, "the lock changed hands while it was being removed")),
            Err(e) => Err(t.sys(e, op, "unlink", &t.lock)),
        };
    }
    match host::owner_of(&record, &me.host) {
        Owner::Alive => Err(t.error(Errno::EPERM, op, format!("{}; it is alive", describe(&record)))),
        Owner::OtherHost => Err(t.error(Errno::EPERM, op, format!("{}; another host's lock is never broken", describe(&record)))),
        Owner::Dead => match clear_dead(&t, file, &record) {
            Ok(Cleared::Gone) => {
                claim::sweep_orphans(&t.dir, &me.host);
                Ok(())
            }
            Ok(Cleared::Busy) => Err(t.error(Errno::EAGAIN, op, format!("{}; {BUSY}", describe(&record)))),
            Err(e) => Err(t.sys(e, op, "clearing the dead holder's lock", &t.lock)),
        },
    }
}

/// Breaks the lease on `t` whose lock file is `file`: finds its token, takes it, removes
/// the lock file. EAGAIN: its token moved meanwhile (renewed, released, or taken by
/// another breaker), or a breaker has it.
pub(crate) fn break_leased(t: &Target, op: &'static str, file: FileId, terms: &crate::record::LeaseTerms) -> Result<()> {
    // A hold of this process on it ends with the break (its handle learns ENOLCK).
    let hold = match state().begin_release_of_file(file) {
        Release::Started(key, token) => Some((key, token)),
        Release::InProgress => return Err(t.error(Errno::EAGAIN, op, "a thread of this process is releasing it")),
        Release::NotHeld => None,
    };
    // Our own hold's token may move under us (our keep-alive renewing it): look again a
    // few times while the lock file is still ours.
    let tries = if hold.is_some() { 4 } else { 1 };
    let mut broke = break_leased_token(t, op, file, terms);
    for _ in 1..tries {
        if broke.is_ok() || fsops::id_of(&t.lock) != Ok(file) {
            break;
        }
        broke = break_leased_token(t, op, file, terms);
    }
    if let Some((key, token)) = hold {
        match &broke {
            Ok(()) => registry::end_hold(&key, token),
            // Nothing was removed: the hold goes on, its handle still answers for it.
            Err(_) => state().cancel_release(&key, token),
        }
    }
    broke
}

fn break_leased_token(t: &Target, op: &'static str, file: FileId, terms: &crate::record::LeaseTerms) -> Result<()> {
    let sys = |e, call| t.sys(e, op, call, &t.lock);
    let found = token::find(&t.dir, &terms.claim).map_err(|e| sys(e, "listing the directory of"))?;
    let (from, epoch) = match found {
        token::Found::Live(epoch) => (token::path(&t.dir, &terms.claim, epoch), epoch),
        token::Found::Broken(_) => return Err(t.error(Errno::EAGAIN, op, "another process is breaking this lease")),
        token::Found::Nothing => return Err(t.error(Errno::EAGAIN, op, "the lease's token is gone (released or broken meanwhile)")),
    };
    match token::break_hold(&t.dir, &t.lock, &from, &terms.claim, epoch, file).map_err(|e| sys(e, "breaking"))? {
        token::Broke::Removed => Ok(()),
        token::Broke::Lost => Err(t.error(Errno::EAGAIN, op, "the lease was renewed, released or broken while it was being broken")),
    }
}

/// Removes the plain lock file `file` on `t`, whoever holds it (an operator's break):
/// renames it aside and checks it is the file seen; a lock taken in between is put back.
pub(crate) fn break_plain(t: &Target, op: &'static str, file: FileId) -> Result<()> {
    let aside = t.dir.join(format!(".nfslock-{}.1.x{}", crate::random::unpredictable_hex(), crate::random::unpredictable_hex()));
    let hold = match state().begin_release_of_file(file) {
        Release::Started(key, token) => Some((key, token)),
        Release::InProgress => return Err(t.error(Errno::EAGAIN, op, "a thread of this process is releasing it")),
        Release::NotHeld => None,
    };
    let result = (|| {
        match fsops::retry(|| nix::fcntl::renameat(nix::fcntl::AT_FDCWD, &t.lock, nix::fcntl::AT_FDCWD, &aside)) {
            Ok(()) => {}
            Err(Errno::ENOENT) if fsops::id_of(&aside).is_err() => return Err(t.error(Errno::ENOENT, op, "released meanwhile")),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(t.sys(e, op, "rename", &t.lock)),
        }
        if fsops::id_of(&aside) == Ok(file) {
            let _ = holder::remove_stale_copy(&t.key, file);
            let _ = fsops::unlink(&aside);
            return Ok(());
        }
        // Someone took the lock between our read and our rename: give it back.
        match fsops::link(&aside, &t.lock) {
            Ok(()) => {
                let _ = fsops::unlink(&aside);
                Err(t.error(Errno::EAGAIN, op, "the lock changed hands while it was being broken; it was left as it is"))
            }
            Err(e) => Err(t.error(
                Errno::EIO,
                op,
                format!(
                    "the lock changed hands while it was being broken, and could not be put back ({}): it is at {}",
                    e.desc(),
                    aside.display()
                ),
            )),
        }
    })();
    if let Some((key, token)) = hold {
        registry::end_hold(&key, token);
    }
    result
}

/// Clears the lock of a dead holder of this host: a lease by taking its token first.
pub(crate) fn clear_dead(t: &Target, file: FileId, record: &Record) -> nix::Result<Cleared> {
    match &record.lease {
        Some(terms) => holder::clear_dead_leased(&t.lock, file, terms),
        None => holder::clear_dead(&t.lock, &t.key, file, record),
    }
}

/// Reads the record of the lock on `path` (`P`, or `P.nfs_lock` itself). ENOENT: not
/// locked; EBADMSG: unreadable, or no record written yet.
pub fn read_record(path: impl AsRef<Path>) -> Result<Record> {
    let t = Target::for_reader(OP_READ, path.as_ref())?;
    match read_holder(&t, OP_READ)? {
        Holder::Free => Err(t.error(Errno::ENOENT, OP_READ, "not locked")),
        Holder::Unwritten { .. } => Err(t.error(Errno::EBADMSG, OP_READ, UNWRITTEN)),
        Holder::Held { record, .. } => Ok(record),
    }
}

/// Why a lock file without a record is held, not broken.
const UNWRITTEN: &str = "the lock file holds no record yet: its holder is between its link(2) and its write \
                         (Core's protocol), or died there";

/// What one call (one attempt, or one blocking wait) learned about other holders. It is
/// never kept past the call: a holder judged alive may die a moment later, and the next
/// call must see that.
#[derive(Default)]
struct Judgements {
    /// Lock files whose holders were judged alive, when, and who they are.
    alive: HashMap<FileId, (Instant, String)>,
    /// The lock file seen without a record, and since when (this process's clock): set
    /// by the round that first sees it so, kept while every later round sees the same
    /// file without a record, and forgotten by any round that sees anything else.
    unwritten: Option<(FileId, Instant)>,
    /// Whether the current round saw a lock file without a record.
    unwritten_this_round: bool,
}

impl Judgements {
    fn recently_alive(&self, file: FileId) -> Option<String> {
        let (at, who) = self.alive.get(&file)?;
        (at.elapsed() < ALIVE_FOR).then(|| format!("{who} (judged alive {} ms ago in this wait)", at.elapsed().as_millis()))
    }

    fn saw_unwritten(&mut self, file: FileId) {
        self.unwritten_this_round = true;
        if self.unwritten.is_none_or(|(f, _)| f != file) {
            self.unwritten = Some((file, Instant::now()));
        }
    }
}

/// Runs `f` holding the lock on `path` (taken as [`blocking_create`] does) and releases
/// it afterwards, also when `f` panics. An error from the release is returned after `f`
/// has run.
pub fn critical_section<R>(path: impl AsRef<Path>, message: &[u8], timeout: Option<Duration>, f: impl FnOnce() -> R) -> Result<R> {
    let lock = blocking_create(path, message, timeout).map_err(|e| e.in_op(OP_CRITICAL))?;
    let out = f();
    lock.unlock().map_err(|e| e.in_op(OP_CRITICAL))?;
    Ok(out)
}

pub(crate) fn read_holder(t: &Target, op: &'static str) -> Result<Holder> {
    holder::read(&t.lock, &t.key).map_err(|e| match e {
        ReadError::Bad(why) => t.error(Errno::EBADMSG, op, format!("{}: {why}", t.lock.display())),
        ReadError::Symlink => t.error(Errno::ELOOP, op, format!("{} is a symlink; it is never followed", t.lock.display())),
        ReadError::Sys(errno, call) => t.sys(errno, op, call, &t.lock),
    })
}

pub(crate) fn describe(r: &Record) -> String {
    format!("held by pid {} on host {} (message {:?})", r.pid, String::from_utf8_lossy(&r.host), String::from_utf8_lossy(&r.message))
}

pub(crate) fn busy_error(t: &Target, op: &'static str, busy: Busy, spelling: Option<&Path>) -> Error {
    let other = spelling.filter(|k| *k != t.key).map(|k| format!(" (taken as {})", k.display())).unwrap_or_default();
    match busy {
        Busy::ByThisThread => t.error(Errno::EDEADLK, op, format!("the calling thread already holds this lock{other}")),
        Busy::ByOtherThread => t.error(Errno::EAGAIN, op, format!("another thread of this process holds this lock{other}")),
    }
}

/// One attempt: reserve the path in this process, then take it on disk.
fn attempt(t: &Target, message: &[u8], op: &'static str, judged: &mut Judgements) -> Result<Lock> {
    let me = process::this_process();
    let generation = process::fork_generation();
    let (token, claim) = {
        let mut st = state();
        let token = st.reserve(&t.key, &t.lock, !t.internal).map_err(|busy| busy_error(t, op, busy, None))?;
        (token, st.claim(&t.key, message))
    };
    match take(t, message, &me, claim, op, judged) {
        Ok(file) => {
            state().confirm(&t.key, token, file);
            Ok(Lock { target: t.clone(), token, file, generation, held: true, fence: Default::default() })
        }
        Err(e) => {
            registry::end_hold(&t.key, token);
            Err(e)
        }
    }
}

/// Links a claim to `P.nfs_lock`, clearing a dead holder of this host on the way.
fn take(t: &Target, message: &[u8], me: &Identity, cached: Option<Claim>, op: &'static str, judged: &mut Judgements) -> Result<FileId> {
    let mut claim = cached;
    let mut busy = None;
    for _ in 0..ROUNDS_PER_ATTEMPT {
        let c = match claim.take() {
            Some(c) => c,
            None => new_claim(t, message, me, op)?,
        };
        // Our claim is linked nowhere but to the lock file.
        let proof = fsops::LinkProof { only_link: true, local: c.local, by_name: true };
        match fsops::link_checked(&c.path, &t.lock, c.id, proof) {
            Ok(fsops::Linked::Ours) => return Ok(c.id),
            Err(Errno::ENOENT) if !t.dir.exists() => return Err(t.sys(Errno::ENOENT, op, "link", &t.lock)),
            // Our claim was removed by someone, or this client's cached view of it is out
            // of date (the kernel refuses to link an inode whose cached link count fell
            // to 0, which a racing attribute refresh can leave behind): start over with
            // a fresh claim.
            Err(Errno::ENOENT) => {
                state().forget_claim(&t.key);
                let _ = fsops::unlink(&c.path);
                continue;
            }
            Ok(fsops::Linked::Taken { seen, .. }) => {
                if let Ok(seen) = seen {
                    // Taken by this process under another spelling of its path
                    // (`D/x/../A`, a symlinked directory): the lock file's identity says so.
                    if let Some((key, busy)) = state().holder_of_file(seen) {
                        return Err(busy_error(t, op, busy, Some(&key)));
                    }
                    // The same lock file whose holder this wait judged alive a moment
                    // ago: not worth reading and judging again on every wake-up.
                    if let Some(holder) = judged.recently_alive(seen) {
                        return Err(t.error(Errno::EAGAIN, op, holder));
                    }
                }
            }
            Err(e) => return Err(t.sys(e, op, "link", &t.lock)),
        }
        let holder = read_holder(t, op)?;
        if let Holder::Unwritten { file } = holder {
            judged.saw_unwritten(file);
            return Err(t.error(Errno::EAGAIN, op, UNWRITTEN));
        }
        if let Holder::Held { record, file } = holder {
            if me.wrote(&record) {
                return Err(t.error(Errno::EAGAIN, op, "held by this process through another handle"));
            }
            match host::owner_of(&record, &me.host) {
                Owner::Alive => {
                    let holder = describe(&record);
                    judged.alive.insert(file, (Instant::now(), holder.clone()));
                    return Err(t.error(Errno::EAGAIN, op, holder));
                }
                Owner::OtherHost => {
                    let why = format!("{}; another host's lock is never broken", describe(&record));
                    return Err(t.error(Errno::EAGAIN, op, why));
                }
                Owner::Dead => match clear_dead(t, file, &record) {
                    Ok(Cleared::Gone) => claim::sweep_orphans(&t.dir, &me.host),
                    Ok(Cleared::Busy) => busy = Some(record),
                    Err(e) => return Err(t.sys(e, op, "clearing the dead holder's lock", &t.lock)),
                },
            }
        }
        claim = Some(c);
    }
    Err(match busy {
        Some(record) => t.error(Errno::EAGAIN, op, format!("{}; {BUSY}", describe(&record))),
        None => t.error(Errno::EAGAIN, op, "the lock changed hands repeatedly while it was being examined"),
    })
}

fn new_claim(t: &Target, message: &[u8], me: &Identity, op: &'static str) -> Result<Claim> {
    let record = me.record(message).to_bytes();
    // Checked before anything is written: a lock file no reader can parse would wedge
    // the path for everyone.
    if record.len() > MAX_RECORD_LEN {
        let why = format!(
            "the record would be {} bytes (message {} bytes); a record is at most {MAX_RECORD_LEN} bytes",
            record.len(),
            message.len()
        );
        return Err(t.error(Errno::EMSGSIZE, op, why));
    }
    // Once per directory and process: remove what crashed processes left there (claims
    // without a record are never a dead holder's lock, so nothing else would).
    if state().first_claim_in(&t.dir) {
        claim::sweep_orphans(&t.dir, &me.host);
    }
    let created = match claim::create(&t.dir, &record, message) {
        // Out of descriptors: give up the claims kept for paths not held (each keeps
        // one open) and try once more.
        Err(Errno::EMFILE | Errno::ENFILE) => {
            let dropped = state().drop_unheld_claims();
            for path in dropped {
                let _ = fsops::unlink(&path);
            }
            claim::create(&t.dir, &record, message)
        }
        other => other,
    };
    let c = created.map_err(|e| match e {
        // Every one of the fresh random names was taken: nothing a retry of the same
        // names could cure, but a later attempt draws new ones.
        Errno::EEXIST => t.error(
            Errno::EAGAIN,
            op,
            format!("every fresh claim name drawn in {} was taken (is someone planting files there?)", t.dir.display()),
        ),
        e => t.sys(e, op, "creating a claim file in", &t.dir),
    })?;
    let dropped = state().keep_claim(&t.key, c.clone());
    for path in dropped {
        let _ = fsops::unlink(&path);
    }
    Ok(c)
}
