//! The shared-memory backend: robust, process-shared, error-checking pthread mutexes in
//! a POSIX shared-memory segment (layout: shm_layout.rs), allocation by atomic updates
//! of each group's bitmap.
//!
//! Why these mutex attributes: robust, so that a holder that dies hands the lock on as
//! EOWNERDEAD instead of blocking everyone forever; error-checking, so that an unlock by
//! a thread that does not hold the lock (another thread, a forked child) is EPERM and a
//! second lock by the holder EDEADLK, never undefined behaviour.
//!
//! A segment is made whole in a temporary file of the segment directory and then linked
//! to its name, so an opener never sees one half made, and two creators cannot both win.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use super::shm_layout::{self as layout, Header, HEADER_SIZE, LOCKS_PER_GROUP, SHM_DIR};
use super::{closed, Locked};
use crate::error::{Error, Result};
use crate::fsops::{self, FileId};

const OP_CREATE: &str = "Manager::create_shm";
const OP_OPEN: &str = "Manager::open_shm";
const OP_DESTROY: &str = "Manager::destroy_shm";
const OP_LOCK: &str = "Manager::lock";
const OP_UNLOCK: &str = "Manager::unlock";
const OP_ALLOCATE: &str = "Manager::allocate";
const OP_CLOSE: &str = "Manager::close";
/// The longest name: the segment directory's file names are at most 255 bytes, and a
/// temporary file's name is longer than the segment's.
const NAME_MAX: usize = 200;

/// Where a robust mutex keeps its futex word, which holds the holder's thread ID (the
/// kernel's robust-futex protocol, which the C libraries follow).
#[cfg(target_env = "musl")]
const LOCK_WORD: usize = 4;
#[cfg(not(target_env = "musl"))]
const LOCK_WORD: usize = 0;

extern "C" {
    // glibc 2.30 and later (POSIX 2024); not in the libc crate yet. A deadline on the
    // monotonic clock, which a change of the wall clock does not move.
    fn pthread_mutex_clocklock(m: *mut libc::pthread_mutex_t, clock: libc::clockid_t, abstime: *const libc::timespec) -> libc::c_int;
}

/// An open segment, mapped into this process.
pub struct Segment {
    name: OsString,
    base: NonNull<u8>,
    len: usize,
    num_locks: u32,
    /// The segment file's identity (st_dev, st_ino): two opens of one segment agree.
    file: FileId,
    closed: AtomicBool,
    /// Set by a close that found locks held by other threads of this process: the
    /// mapping then stays until the process ends, so the kernel can still mark those
    /// locks' owners dead (it writes to the mutex when a holder exits).
    keep_mapped: AtomicBool,
}

// SAFETY: the mapping is shared memory meant for concurrent use: it is only accessed
// through atomics and pthread mutex calls, which are thread-safe.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

/// The segment file of `name` ("/name").
fn file_of(op: &'static str, name: &OsStr) -> Result<PathBuf> {
    let invalid = |why: &str| Err(Error::invalid(op, format!("segment name {name:?}: {why}")));
    let bytes = name.as_bytes();
    let Some(rest) = bytes.strip_prefix(b"/") else {
        return invalid("must start with '/'");
    };
    if rest.is_empty() || rest == b"." || rest == b".." {
        return invalid("needs a name after the '/'");
    }
    if rest.contains(&b'/') {
        return invalid("may not contain a '/' after the first");
    }
    if rest.contains(&0) {
        return invalid("contains a NUL byte");
    }
    if bytes.len() > NAME_MAX {
        return invalid(&format!("is longer than {NAME_MAX} bytes"));
    }
    Ok(Path::new(SHM_DIR).join(OsStr::from_bytes(rest)))
}

fn rounded(op: &'static str, num_locks: u32) -> Result<u32> {
    layout::rounded(num_locks)
        .ok_or_else(|| Error::invalid(op, format!("a segment has 1..={} locks, not {num_locks}", layout::MAX_SHM_LOCKS)))
}

fn sys(op: &'static str, path: &Path, call: &str, e: std::io::Error) -> Error {
    Error::sys(fsops::io_errno(&e), op, path, call)
}

fn map(op: &'static str, path: &Path, file: &File, len: usize) -> Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of a file we opened read-write; no Rust reference
    // to its memory is ever made (only raw pointers, atomics and pthread calls).
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(Error::sys(Errno::last(), op, path, "mmap"));
    }
    Ok(NonNull::new(p.cast()).expect("mmap does not return NULL on success"))
}

/// Makes every mutex of a fresh mapping of `num_locks`.
///
/// # Safety
/// `base` maps `layout::total_size(num_locks)` writable bytes nobody else uses yet.
unsafe fn init_mutexes(base: NonNull<u8>, num_locks: u32) -> Result<()> {
    let op = OP_CREATE;
    let check = |rc: libc::c_int, call: &str| match rc {
        0 => Ok(()),
        e => Err(Error::new(Errno::from_raw(e), op, None, format!("{call}: {}", Errno::from_raw(e).desc()))),
    };
    // SAFETY: the attribute object lives on this stack frame, initialised before use and
    // destroyed after; each mutex lies inside the mapping (layout::mutex_offset).
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()), "pthread_mutexattr_init")?;
        let a = attr.as_mut_ptr();
        let set = check(libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED), "pthread_mutexattr_setpshared")
            .and_then(|()| check(libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST), "pthread_mutexattr_setrobust"))
            .and_then(|()| check(libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK), "pthread_mutexattr_settype"));
        let made = set.and_then(|()| {
            (0..num_locks).try_for_each(|id| {
                let m = base.as_ptr().add(layout::mutex_offset(id)).cast::<libc::pthread_mutex_t>();
                check(libc::pthread_mutex_init(m, a), "pthread_mutex_init")
            })
        });
        libc::pthread_mutexattr_destroy(a);
        made
    }
}

fn unmap(base: NonNull<u8>, len: usize) {
    // SAFETY: `base` is a mapping of `len` bytes this module made and nobody uses any more.
    unsafe { libc::munmap(base.as_ptr().cast(), len) };
}

impl Segment {
    pub fn create(name: &OsStr, num_locks: u32) -> Result<Segment> {
        let path = file_of(OP_CREATE, name)?;
        let num_locks = rounded(OP_CREATE, num_locks)?;
        let len = layout::total_size(num_locks);
        let temp = Path::new(SHM_DIR).join(format!(".nfslock-new-{}", crate::random::unpredictable_hex()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(|e| sys(OP_CREATE, &temp, "open", e))?;
        let made = (|| {
            // 0600 whatever the umask: a segment its owner cannot write is no use.
            nix::sys::stat::fchmod(&file, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::sys(e, OP_CREATE, &temp, "fchmod"))?;
            file.set_len(len as u64).map_err(|e| sys(OP_CREATE, &temp, "ftruncate", e))?;
            let base = map(OP_CREATE, &temp, &file, len)?;
            // SAFETY: a fresh mapping of `len` bytes for `num_locks`, ours alone.
            let init = unsafe { init_mutexes(base, num_locks) }
                .and_then(|()| file.write_all_at(&layout::encode(num_locks), 0).map_err(|e| sys(OP_CREATE, &temp, "write", e)));
            let linked = init.and_then(|()| match fsops::link(&temp, &path) {
                Ok(()) => Ok(()),
                Err(Errno::EEXIST) => Err(Error::new(Errno::EEXIST, OP_CREATE, Some(&path), "a segment of that name exists")),
                Err(e) => Err(Error::sys(e, OP_CREATE, &path, "link")),
            });
            match linked {
                Ok(()) => Ok(base),
                Err(e) => {
                    unmap(base, len);
                    Err(e)
                }
            }
        })();
        // The temporary name goes in every case; the segment keeps its own.
        let _ = fsops::unlink(&temp);
        let base = made?;
        let st = fsops::fstat(&file).map_err(|e| Error::sys(e, OP_CREATE, &path, "fstat"))?;
        Ok(Segment::mapped(name, base, len, num_locks, FileId::from(&st)))
    }

    fn mapped(name: &OsStr, base: NonNull<u8>, len: usize, num_locks: u32, file: FileId) -> Segment {
        let (closed, keep_mapped) = (AtomicBool::new(false), AtomicBool::new(false));
        Segment { name: name.to_os_string(), base, len, num_locks, file, closed, keep_mapped }
    }

    /// The segment file this maps (two opens of the same segment agree).
    pub fn file(&self) -> FileId {
        self.file
    }

    /// Opens `path` as a segment and checks its header (None: not one, with why).
    fn open_checked(op: &'static str, path: &Path) -> Result<(File, Header)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match fsops::io_errno(&e) {
                Errno::ENOENT => Error::new(Errno::ENOENT, op, Some(path), "no segment of that name"),
                Errno::ELOOP => Error::new(Errno::ELOOP, op, Some(path), "a symbolic link is there, not a segment: refused"),
                Errno::EISDIR => Error::new(Errno::EBADMSG, op, Some(path), "not a lock manager segment: a directory is there"),
                _ => sys(op, path, "open", e),
            })?;
        let meta = file.metadata().map_err(|e| sys(op, path, "fstat", e))?;
        let bad = |why: String| Error::new(Errno::EBADMSG, op, Some(path), format!("not a lock manager segment: {why}"));
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        if meta.mode() & 0o022 != 0 {
            let why = format!("it is group- or world-writable (mode {:o}): anyone could corrupt it; refused", meta.mode() & 0o777);
            return Err(Error::new(Errno::EACCES, op, Some(path), why));
        }
        let mut head = [0u8; HEADER_SIZE];
        let mut got = 0;
        while got < HEADER_SIZE {
            match file.read_at(&mut head[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(sys(op, path, "read", e)),
            }
        }
        let header = layout::decode(&head[..got], meta.len()).map_err(bad)?;
        Ok((file, header))
    }

    pub fn open(name: &OsStr, num_locks: u32) -> Result<Segment> {
        let path = file_of(OP_OPEN, name)?;
        let wanted = rounded(OP_OPEN, num_locks)?;
        let (file, header) = Segment::open_checked(OP_OPEN, &path)?;
        if header.num_locks != wanted {
            let why = format!("the segment has {} locks; {num_locks} asked for makes {wanted}", header.num_locks);
            return Err(Error::new(Errno::ERANGE, OP_OPEN, Some(&path), why));
        }
        let len = header.total_size as usize;
        let st = fsops::fstat(&file).map_err(|e| Error::sys(e, OP_OPEN, &path, "fstat"))?;
        let base = map(OP_OPEN, &path, &file, len)?;
        Ok(Segment::mapped(name, base, len, header.num_locks, FileId::from(&st)))
    }

    pub fn destroy(name: &OsStr) -> Result<()> {
        let path = file_of(OP_DESTROY, name)?;
        // Only a manager segment is removed (a damaged one too, as long as it carries the
        // magic number): never another program's segment of the same name.
        match Segment::open_checked(OP_DESTROY, &path) {
            Ok(_) => {}
            Err(e) if e.sys_errno() == Errno::EBADMSG && has_magic(&path) => {}
            Err(e) => return Err(e),
        }
        fsops::unlink(&path).map_err(|e| Error::sys(e, OP_DESTROY, &path, "unlink"))
    }

    pub fn name(&self) -> &OsStr {
        &self.name
    }

    pub fn num_locks(&self) -> u32 {
        self.num_locks
    }

    fn mutex(&self, id: u32) -> *mut libc::pthread_mutex_t {
        debug_assert!(id < self.num_locks);
        // SAFETY: ids are checked against num_locks by the caller: the offset is inside the mapping.
        unsafe { self.base.as_ptr().add(layout::mutex_offset(id)).cast() }
    }

    fn word_at(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= self.len && offset % 4 == 0);
        // SAFETY: an aligned u32 inside the mapping, shared with other processes only
        // through atomic operations (AtomicU32 has u32's layout).
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn bitmap(&self, group: usize) -> &AtomicU32 {
        self.word_at(layout::bitmap_offset(group))
    }

    fn groups(&self) -> usize {
        (self.num_locks / LOCKS_PER_GROUP) as usize
    }

    #[inline]
    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed(op));
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn out_of_range(&self, op: &'static str, id: u32) -> Error {
        let why = format!("lock ID {id} is out of range: this manager's IDs are 0..{}", self.num_locks);
        Error::new(Errno::ERANGE, op, None, why)
    }

    /// The hot path: a range check, a flag and the mutex call. 0, or an errno value
    /// (ERANGE, EINVAL closed, or the mutex call's); EOWNERDEAD: the lock is the caller's
    /// and consistent again. [`Segment::lock_error`] words a nonzero one.
    #[inline]
    pub fn lock_code(&self, id: u32, timeout: Option<Duration>) -> libc::c_int {
        if id >= self.num_locks {
            return libc::ERANGE;
        }
        if self.closed.load(Ordering::Relaxed) {
            return libc::EINVAL;
        }
        let m = self.mutex(id);
        // SAFETY: `m` is an initialised process-shared mutex in our mapping.
        let rc = unsafe {
            match timeout {
                None => libc::pthread_mutex_lock(m),
                Some(t) if t.is_zero() => libc::pthread_mutex_trylock(m),
                Some(t) => pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &deadline(t)),
            }
        };
        if rc == libc::EOWNERDEAD {
            // SAFETY: we hold `m` (EOWNERDEAD hands it over); consistent is how a robust
            // mutex is made usable again.
            unsafe { libc::pthread_mutex_consistent(m) };
        } else if rc == libc::ENOTRECOVERABLE {
            self.undo_unrecoverable_claim(id);
        }
        rc
    }

    /// glibc's trylock (2.36 at least) of a mutex left unrecoverable writes the caller's
    /// thread ID into the futex word and then reports ENOTRECOVERABLE: the word would
    /// then say this thread holds it, so that a later lock says EDEADLK and an unlock
    /// (or close's release) crashes inside glibc. The word goes back to naming nobody.
    #[cold]
    #[inline(never)]
    fn undo_unrecoverable_claim(&self, id: u32) {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        let word = self.word_at(layout::mutex_offset(id) + LOCK_WORD);
        let now = word.load(Ordering::Relaxed);
        if now & libc::FUTEX_TID_MASK == me {
            let _ = word.compare_exchange(now, now & !libc::FUTEX_TID_MASK, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// 0, or an errno value: ERANGE, EINVAL closed, EPERM not held by the calling thread.
    #[inline]
    pub fn unlock_code(&self, id: u32) -> libc::c_int {
        if id >= self.num_locks {
            return libc::ERANGE;
        }
        if self.closed.load(Ordering::Relaxed) {
            return libc::EINVAL;
        }
        // SAFETY: an initialised process-shared mutex in our mapping; error-checking, so
        // unlocking one we do not hold is EPERM and changes nothing.
        unsafe { libc::pthread_mutex_unlock(self.mutex(id)) }
    }

    #[inline]
    pub fn lock(&self, id: u32, timeout: Option<Duration>) -> Result<Locked> {
        match self.lock_code(id, timeout) {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => Ok(Locked::PreviousHolderDied),
            rc => Err(self.lock_error(OP_LOCK, id, rc, timeout)),
        }
    }

    #[inline]
    pub fn unlock(&self, id: u32) -> Result<()> {
        match self.unlock_code(id) {
            0 => Ok(()),
            rc => Err(self.unlock_error(OP_UNLOCK, id, rc)),
        }
    }

    /// What a nonzero `lock_code` means, for a person.
    #[cold]
    #[inline(never)]
    pub fn lock_error(&self, op: &'static str, id: u32, rc: libc::c_int, timeout: Option<Duration>) -> Error {
        let fail = |errno: Errno, why: String| Error::new(errno, op, None, format!("lock {id}: {why}"));
        match rc {
            libc::ERANGE => self.out_of_range(op, id),
            libc::EINVAL if self.closed.load(Ordering::Relaxed) => closed(op),
            libc::EOWNERDEAD => fail(
                Errno::EOWNERDEAD,
                "the previous holder died holding the lock: the caller holds it now (what it protects may be half updated; the lock is usable as usual)".into(),
            ),
            libc::EBUSY => fail(Errno::EBUSY, "held by another thread or process".into()),
            libc::ETIMEDOUT => fail(Errno::ETIMEDOUT, format!("still held after {} ms", timeout.unwrap_or_default().as_millis())),
            libc::EDEADLK => fail(Errno::EDEADLK, "the calling thread holds it already".into()),
            libc::ENOTRECOVERABLE => fail(
                Errno::ENOTRECOVERABLE,
                "a holder died and the lock was released before it was made consistent: it cannot be taken until the segment is made again".into(),
            ),
            libc::EINVAL => fail(Errno::EBADMSG, "its mutex is not a valid robust mutex (was the segment overwritten?)".into()),
            e => fail(Errno::from_raw(e), format!("pthread_mutex_lock: {}", Errno::from_raw(e).desc())),
        }
    }

    /// What a nonzero `unlock_code` means, for a person.
    #[cold]
    #[inline(never)]
    pub fn unlock_error(&self, op: &'static str, id: u32, rc: libc::c_int) -> Error {
        match rc {
            libc::ERANGE => self.out_of_range(op, id),
            libc::EINVAL if self.closed.load(Ordering::Relaxed) => closed(op),
            libc::EPERM => Error::new(
                Errno::EPERM,
                op,
                None,
                format!("lock {id} is not held by the calling thread (the thread that took a lock releases it; a forked child holds none of its parent's)"),
            ),
            e => Error::new(Errno::from_raw(e), op, None, format!("lock {id}: {}", Errno::from_raw(e).desc())),
        }
    }

    pub fn allocate(&self) -> Result<u32> {
        self.check_open(OP_ALLOCATE)?;
        for group in 0..self.groups() {
            let bits = self.bitmap(group);
            let mut now = bits.load(Ordering::Acquire);
            while now != u32::MAX {
                let bit = (!now).trailing_zeros();
                match bits.compare_exchange_weak(now, now | 1 << bit, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(group as u32 * LOCKS_PER_GROUP + bit),
                    Err(seen) => now = seen,
                }
            }
        }
        Err(Error::new(Errno::ENOSPC, OP_ALLOCATE, None, format!("all {} locks are allocated", self.num_locks)))
    }

    fn bit_of(&self, id: u32) -> (&AtomicU32, u32) {
        (self.bitmap((id / LOCKS_PER_GROUP) as usize), 1 << (id % LOCKS_PER_GROUP))
    }

    pub fn allocate_id(&self, id: u32) -> Result<()> {
        self.check_open("Manager::allocate_id")?;
        let (bits, bit) = self.bit_of(id);
        if bits.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return Err(Error::new(Errno::EEXIST, "Manager::allocate_id", None, format!("lock {id} is allocated already")));
        }
        Ok(())
    }

    pub fn free(&self, id: u32) -> Result<()> {
        self.check_open("Manager::free")?;
        let (bits, bit) = self.bit_of(id);
        if bits.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
            return Err(Error::new(Errno::ENOENT, "Manager::free", None, format!("lock {id} is not allocated")));
        }
        Ok(())
    }

    pub fn free_all(&self) -> Result<()> {
        self.check_open("Manager::free_all")?;
        (0..self.groups()).for_each(|g| self.bitmap(g).store(0, Ordering::Release));
        Ok(())
    }

    pub fn available(&self) -> u32 {
        (0..self.groups()).map(|g| self.bitmap(g).load(Ordering::Acquire).count_zeros()).sum()
    }

    pub fn allocated(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        for g in 0..self.groups() {
            let bits = self.bitmap(g).load(Ordering::Acquire);
            ids.extend((0..LOCKS_PER_GROUP).filter(|i| bits & 1 << i != 0).map(|i| g as u32 * LOCKS_PER_GROUP + i));
        }
        ids
    }

    /// The thread holding lock `id` (0: none), from its futex word: a robust mutex's
    /// word holds its holder's thread ID, and the kernel clears it when the holder dies.
    fn holder(&self, id: u32) -> u32 {
        self.word_at(layout::mutex_offset(id) + LOCK_WORD).load(Ordering::Relaxed) & libc::FUTEX_TID_MASK
    }

    /// The locks held now, also those whose holder died and that nobody has taken
    /// since (the kernel leaves FUTEX_OWNER_DIED in the word of those).
    pub fn locks_held(&self) -> Vec<u32> {
        let held = |id: u32| {
            self.word_at(layout::mutex_offset(id) + LOCK_WORD).load(Ordering::Relaxed) & (libc::FUTEX_TID_MASK | libc::FUTEX_OWNER_DIED)
                != 0
        };
        (0..self.num_locks).filter(|&id| held(id)).collect()
    }

    /// How many locks of the segment threads of this process hold (any thread's robust
    /// list may point into the segment then: it must stay mapped).
    pub fn held_here(&self) -> usize {
        (0..self.num_locks).filter(|&id| is_our_thread(self.holder(id))).count()
    }

    /// Releases the locks the calling thread holds in the segment; returns how many
    /// other threads of this process hold locks in it.
    pub fn release_mine(&self) -> usize {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        let mut others = 0;
        for id in 0..self.num_locks {
            match self.holder(id) {
                0 => {}
                tid if tid == me => {
                    // SAFETY: as in `unlock_code`; the calling thread holds it.
                    unsafe { libc::pthread_mutex_unlock(self.mutex(id)) };
                }
                tid if is_our_thread(tid) => others += 1,
                _ => {}
            }
        }
        others
    }

    /// Unmaps a segment the C API kept and nobody can reach any more (its handles are
    /// closed and its name names another file or none): calls are refused (EINVAL)
    /// from now on, and its memory goes.
    pub fn retire(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if !self.keep_mapped.swap(true, Ordering::AcqRel) {
            unmap(self.base, self.len);
        }
    }

    /// Marks an unused segment closed, so that dropping it only unmaps it.
    pub fn discard(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::Relaxed) {
            return Err(closed(OP_CLOSE));
        }
        let others = self.release_mine();
        if others > 0 {
            self.keep_mapped.store(true, Ordering::Relaxed);
            let why = format!("{others} locks are still held by other threads of this process: the segment stays mapped until it ends");
            return Err(Error::new(Errno::EBUSY, OP_CLOSE, None, why));
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Relaxed) {
            let _ = self.close();
        }
        if !self.keep_mapped.load(Ordering::Relaxed) {
            unmap(self.base, self.len);
        }
    }
}

/// Whether `tid` is a live thread of this process (thread IDs are unique on the
/// machine: one listed in /proc/self/task is ours).
fn is_our_thread(tid: u32) -> bool {
    tid != 0 && Path::new(&format!("/proc/self/task/{tid}")).exists()
}

fn has_magic(path: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) else {
        return false;
    };
    let mut magic = [0u8; 8];
    file.read_exact_at(&mut magic, 0).is_ok() && magic == layout::MAGIC
}

/// The monotonic clock's time `t` from now, saturating far in the future.
fn deadline(t: Duration) -> libc::timespec {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default();
    let at = now.checked_add(t).unwrap_or(Duration::from_secs(i64::MAX as u64 / 2));
    libc::timespec { tv_sec: at.as_secs().min(i64::MAX as u64 / 2) as libc::time_t, tv_nsec: at.subsec_nanos() as libc::c_long }
}
