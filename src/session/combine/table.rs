//! The table through which the sessions of one host hand their requests for new IDs to
//! whichever of them holds the counter's token (see mod.rs): one page in /dev/shm,
//! mapped shared by the sessions of one user and pid namespace on one ID namespace.
//!
//! The table only ever saves work: a session that cannot open or trust it allocates on
//! its own. It is keyed by the ids directory's device and inode (sessions on the same
//! directory, whatever path they opened it by), the user (no one serves another user's
//! claims) and the pid namespace (pids in it are checked for liveness). Every user
//! holds a shared flock on it; the last one to leave removes the name, and also the
//! tables of the same user that no one holds any more (their last user was killed, and
//! their directory may be gone for good).

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::sys::stat::{self, Mode};

use crate::fsops::{self, FileId};

pub(crate) const SLOTS: usize = 32;
const TABLE_LEN: usize = 4096;
const SHM_DIR: &str = "/dev/shm";
/// The table's layout version, part of its name: tables of other versions are other files.
const LAYOUT: u32 = 1;
/// At most this many of its user's other tables are looked at when a last user leaves.
const SWEEP_MAX: usize = 64;
/// How many times an opener tries again when the name it opened was being removed.
const OPEN_TRIES: u32 = 64;

#[repr(C)]
pub struct Header {
    /// The next ticket: every request gets a fresh one, so a slot reused in between is
    /// never mistaken for the request it held before.
    pub tickets: AtomicU32,
    /// A futex word, bumped whenever a combiner's round ends.
    pub bell: AtomicU32,
    /// How many are waiting on `bell` (the wake is skipped when none are). A process
    /// killed while waiting leaves it counted: wakes then cost a needless futex call.
    pub waiters: AtomicU32,
    /// How many requests the last combiner's round issued IDs for, its own included.
    pub last_round: AtomicU32,
}

/// One request. `word` says whose turn it is (see mod.rs); the other fields are
/// written by the requester before it posts, and `first`, `errno`, `combiner_start` by
/// the combiner that took it.
#[repr(C)]
pub struct Slot {
    pub word: AtomicU64,
    pub owner_start: AtomicU64,
    pub combiner_start: AtomicU64,
    pub sid: [AtomicU64; 2],
    pub claim_dev: AtomicU64,
    pub claim_ino: AtomicU64,
    pub first: AtomicU64,
    pub claim_no: AtomicU32,
    pub n: AtomicU32,
    pub errno: AtomicU32,
    pub owner_pid: AtomicU32,
}

#[repr(C)]
struct Layout {
    header: Header,
    slots: [Slot; SLOTS],
}

const _: () = assert!(std::mem::size_of::<Layout>() <= TABLE_LEN);

/// The mapped table of one ID namespace.
pub struct Table {
    map: NonNull<Layout>,
    path: PathBuf,
    file: File,
    generation: u64,
}

// SAFETY: the mapping is only accessed through atomics, and lives as long as the Table.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

impl Table {
    /// Opens (creating if needed) the table for the ids directory `ids`; None when that
    /// cannot be done safely (no /dev/shm, a file that is not ours): no combining then.
    pub fn open(ids: &Path) -> Option<Table> {
        let dir = fsops::id_of(ids).ok()?;
        let pid_ns = stat::stat("/proc/self/ns/pid").ok()?.st_ino;
        let uid = nix::unistd::geteuid().as_raw();
        let path = PathBuf::from(format!("{SHM_DIR}/{}{pid_ns}-{:x}-{:x}", name_prefix(uid), dir.dev, dir.ino));
        // A leaver (or a sweep) may remove the name between our open and our flock: open
        // it again; after the first few tries, with a short sleep.
        for tries in 0..OPEN_TRIES {
            let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = fsops::retry(|| fcntl::open(&path, flags, Mode::S_IRUSR | Mode::S_IWUSR)).ok()?;
            let st = fsops::fstat(&fd).ok()?;
            if !is_trusted(&st, uid) {
                return None;
            }
            match fsops::try_flock_shared(&fd) {
                Ok(()) => {}
                Err(Errno::EWOULDBLOCK) => {
                    if tries < 8 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    continue;
                }
                Err(_) => return None,
            }
            if fsops::id_of(&path) != Ok(FileId::from(&st)) {
                continue;
            }
            match st.st_size as usize {
                0 => nix::unistd::ftruncate(&fd, TABLE_LEN as i64).ok()?,
                TABLE_LEN => {}
                _ => return None,
            }
            let len = NonZeroUsize::new(TABLE_LEN)?;
            // SAFETY: a fresh shared mapping of a file of TABLE_LEN bytes; zero bytes are a
            // valid Layout (every slot free), and it is only accessed through atomics.
            let map = unsafe { mman::mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd.as_fd(), 0) }.ok()?;
            let generation = crate::lockfile::fork_generation();
            return Some(Table { map: map.cast(), path, file: File::from(fd), generation });
        }
        None
    }

    /// The table's name in /dev/shm.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn layout(&self) -> &Layout {
        // SAFETY: mapped for the Table's lifetime; see `open`.
        unsafe { self.map.as_ref() }
    }

    pub fn header(&self) -> &Header {
        &self.layout().header
    }

    pub fn slots(&self) -> &[Slot; SLOTS] {
        &self.layout().slots
    }

    /// Sleeps until the bell moves from `seen` or `timeout` passes (or a signal).
    pub fn wait(&self, seen: u32, timeout: Duration) {
        let h = self.header();
        h.waiters.fetch_add(1, SeqCst);
        if h.bell.load(SeqCst) == seen {
            let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
            // SAFETY: FUTEX_WAIT on a 4-byte aligned word of a live shared mapping, with a
            // valid relative timeout; it only reads the word.
            unsafe { libc::syscall(libc::SYS_futex, h.bell.as_ptr(), libc::FUTEX_WAIT, seen, &ts as *const libc::timespec, 0usize, 0u32) };
        }
        h.waiters.fetch_sub(1, SeqCst);
    }

    /// Wakes every waiter.
    pub fn ring(&self) {
        let h = self.header();
        h.bell.fetch_add(1, SeqCst);
        if h.waiters.load(SeqCst) > 0 {
            // SAFETY: FUTEX_WAKE on a word of a live shared mapping.
            unsafe { libc::syscall(libc::SYS_futex, h.bell.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32) };
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // In a forked child the flock belongs to the parent's open file as well: leave it.
        let last = self.generation == crate::lockfile::fork_generation() && fsops::try_flock_exclusive(&self.file).is_ok();
        if last {
            if let Ok(st) = fsops::fstat(&self.file) {
                let _ = fsops::unlink_if_is(&self.path, FileId::from(&st));
                sweep_unused(Path::new(SHM_DIR), st.st_uid);
            }
        }
        // SAFETY: the mapping made in `open`, no longer referenced (we are dropped).
        let _ = unsafe { mman::munmap(self.map.cast(), TABLE_LEN) };
    }
}

/// The start of the names of one user's tables.
pub(super) fn name_prefix(uid: u32) -> String {
    format!("nfslock-ids-{LAYOUT}-{uid}-")
}

/// A table file this user may map: a regular file of its own that no one else can
/// write, under one name only.
fn is_trusted(st: &stat::FileStat, uid: u32) -> bool {
    fsops::is_regular(st) && st.st_uid == uid && st.st_mode & 0o077 == 0 && st.st_nlink == 1
}

/// Removes this user's tables that no session holds (none has its shared flock): their
/// last user died without leaving. Each goes under an exclusive flock, the way a last
/// user removes its own, so an opener that meets it opens the name afresh. An empty file
/// is one an opener has just created and not yet locked: it is left alone. Opened
/// without following a symlink and without blocking (anyone may put a FIFO there).
/// `shm` is /dev/shm but in tests.
pub(super) fn sweep_unused(shm: &Path, uid: u32) {
    let Ok(dir) = std::fs::read_dir(shm) else { return };
    let prefix = name_prefix(uid);
    let tables = dir.map_while(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with(&prefix));
    for table in tables.take(SWEEP_MAX) {
        let path = table.path();
        let Ok(fd) = fsops::open_existing(&path, false) else { continue };
        let Ok(st) = fsops::fstat(&fd) else { continue };
        if is_trusted(&st, uid) && st.st_size > 0 && fsops::try_flock_exclusive(&fd).is_ok() {
            let _ = fsops::unlink_if_is(&path, FileId::from(&st));
        }
    }
}
