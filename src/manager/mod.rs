//! A manager of numbered locks, as Podman's libpod/lock has them: a program allocates a
//! lock ID per object it manages, stores the ID with the object, and any process that
//! opens the same manager gets the same lock for that ID.
//!
//! Two backends:
//! - a POSIX shared-memory segment of robust, process-shared pthread mutexes (one
//!   machine; the fastest; a holder that dies is reported to the next locker; layout in
//!   shm_layout.rs and the README's on-disk formats);
//! - a directory of lock files (any number of hosts over NFS): allocation by link(2),
//!   each lock an ordinary libnfslock lock file (or lease), so it is Core-compatible and
//!   recovered across hosts when it is a lease.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use nfslock::manager::{Locked, Manager};
//!
//! let m = Manager::create_dir(dir.path().join("locks"))?;
//! let id = m.allocate()?;               // lowest free ID, never handed out twice
//! assert_eq!(m.lock(id)?, Locked::Clean); // excludes every process that opened it
//! assert_eq!(m.locks_held()?, vec![id]);
//! m.unlock(id)?;
//! m.free(id)?;                          // the lock itself stays usable
//! m.close()?;
//! # Ok::<(), nfslock::Error>(())
//! ```

mod dir;
pub(crate) mod shm;
mod shm_layout;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};

pub use shm_layout::{MAX_SHM_LOCKS, SHM_DIR};

/// How many locks a manager has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The number of lock IDs (0..num_locks); `u32::MAX` for an unlimited manager.
    pub num_locks: u32,
    /// No fixed number (the directory backend).
    pub unlimited: bool,
}

/// How a lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// The lock was free, or released by its holder.
    Clean,
    /// Its previous holder (a thread or process of this machine) died holding it (the
    /// robust-mutex EOWNERDEAD). The caller holds the lock; what it protects may be half
    /// updated. The lock itself is already marked consistent: unlock works as usual.
    PreviousHolderDied,
}

enum Backend {
    Shm(shm::Segment),
    Dir(dir::Directory),
}

/// An open manager: the shared-memory segment or the directory, as this process sees it.
/// Thread-safe: any thread may use it (shared-memory locks are owned by the thread that
/// took them, as pthread mutexes are).
pub struct Manager {
    backend: Backend,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Shm(s) => f.debug_struct("Manager").field("shm", &s.name()).finish(),
            Backend::Dir(d) => f.debug_struct("Manager").field("dir", &d.path()).finish(),
        }
    }
}

impl Manager {
    /// Creates the shared-memory segment `name` ("/name", as shm_open(3) takes it; bytes,
    /// not necessarily UTF-8) with
    /// `num_locks` locks, rounded up to a multiple of 32. EEXIST when it exists.
    pub fn create_shm(name: impl AsRef<OsStr>, num_locks: u32) -> Result<Manager> {
        Ok(Manager { backend: Backend::Shm(shm::Segment::create(name.as_ref(), num_locks)?) })
    }

    /// Opens the existing segment `name`. ENOENT: none; ERANGE: made with another lock
    /// count; EBADMSG: not a manager segment (or of another layout version).
    pub fn open_shm(name: impl AsRef<OsStr>, num_locks: u32) -> Result<Manager> {
        Ok(Manager { backend: Backend::Shm(shm::Segment::open(name.as_ref(), num_locks)?) })
    }

    /// Removes the segment's name; processes that have it open go on using it.
    pub fn destroy_shm(name: impl AsRef<OsStr>) -> Result<()> {
        shm::Segment::destroy(name.as_ref())
    }

    /// Creates the manager directory `dir` (its parent must exist). EEXIST when it exists.
    pub fn create_dir(dir: impl AsRef<Path>) -> Result<Manager> {
        Ok(Manager { backend: Backend::Dir(dir::Directory::create(dir.as_ref())?) })
    }

    /// Opens the manager directory `dir`. ENOENT: none; EBADMSG: not a manager directory.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Manager> {
        Ok(Manager { backend: Backend::Dir(dir::Directory::open(dir.as_ref())?) })
    }

    /// Directory backend: locks taken from now on are leases of `lease` (renewed by a
    /// library thread), so that another host recovers a crashed holder's lock; zero:
    /// plain lock files (the default). EINVAL on the shared-memory backend, or a lease
    /// outside [`crate::lease::MIN_LEASE`]..=[`crate::lease::MAX_LEASE`].
    pub fn set_lease(&self, lease: Duration) -> Result<()> {
        match &self.backend {
            Backend::Dir(d) => d.set_lease(lease),
            Backend::Shm(_) => Err(Error::invalid("Manager::set_lease", "leases are for the directory backend")),
        }
    }

    /// The number of locks (rounded up) or unlimited.
    pub fn capacity(&self) -> Capacity {
        match &self.backend {
            Backend::Shm(s) => Capacity { num_locks: s.num_locks(), unlimited: false },
            Backend::Dir(_) => Capacity { num_locks: u32::MAX, unlimited: true },
        }
    }

    fn check_id(&self, op: &'static str, id: u32) -> Result<()> {
        let Capacity { num_locks, .. } = self.capacity();
        if id >= num_locks {
            let why = format!("lock ID {id} is out of range: this manager's IDs are 0..{num_locks}");
            return Err(Error::new(Errno::ERANGE, op, None, why));
        }
        Ok(())
    }

    /// Allocates the lowest free ID. ENOSPC when every ID is allocated.
    pub fn allocate(&self) -> Result<u32> {
        match &self.backend {
            Backend::Shm(s) => s.allocate(),
            Backend::Dir(d) => d.allocate(),
        }
    }

    /// Allocates `id` (after a restart, to mark the IDs stored with objects as in use).
    /// EEXIST: already allocated; ERANGE: out of range.
    pub fn allocate_id(&self, id: u32) -> Result<()> {
        self.check_id("Manager::allocate_id", id)?;
        match &self.backend {
            Backend::Shm(s) => s.allocate_id(id),
            Backend::Dir(d) => d.allocate_id(id),
        }
    }

    /// Frees `id` for allocation; its lock stays usable (a holder keeps it). ENOENT: not
    /// allocated.
    pub fn free(&self, id: u32) -> Result<()> {
        self.check_id("Manager::free", id)?;
        match &self.backend {
            Backend::Shm(s) => s.free(id),
            Backend::Dir(d) => d.free(id),
        }
    }

    /// Frees every ID. DANGEROUS, as in Podman: every ID stored with an object is then
    /// free for another object, so two objects can end up sharing a lock until they are
    /// all renumbered; and a process allocating or freeing meanwhile races with it. Only
    /// for tests and for renumbering while no other process uses the manager.
    pub fn free_all(&self) -> Result<()> {
        match &self.backend {
            Backend::Shm(s) => s.free_all(),
            Backend::Dir(d) => d.free_all(),
        }
    }

    /// How many IDs are free: a count, or unlimited (`num_locks` is then `u32::MAX`
    /// minus the allocated ones).
    pub fn available(&self) -> Result<Capacity> {
        match &self.backend {
            Backend::Shm(s) => Ok(Capacity { num_locks: s.available(), unlimited: false }),
            Backend::Dir(d) => Ok(Capacity { num_locks: u32::MAX - d.allocated()?.len() as u32, unlimited: true }),
        }
    }

    /// The allocated IDs, ascending (a snapshot).
    pub fn allocated(&self) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Shm(s) => Ok(s.allocated()),
            Backend::Dir(d) => d.allocated(),
        }
    }

    /// The IDs whose lock is held at this moment, by anyone, ascending (a snapshot; the
    /// locks are not touched). Directory backend: every lock file present, also one whose
    /// holder died and that nobody has cleared yet.
    pub fn locks_held(&self) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Shm(s) => Ok(s.locks_held()),
            Backend::Dir(d) => d.locks_held(),
        }
    }

    /// Takes lock `id`, waiting as long as it takes. EDEADLK: this thread holds it.
    #[inline]
    pub fn lock(&self, id: u32) -> Result<Locked> {
        self.timedlock(id, None)
    }

    /// Takes lock `id`, waiting up to `timeout` (None: forever; zero: one try, EBUSY when
    /// held). ETIMEDOUT when the time passed.
    #[inline]
    pub fn timedlock(&self, id: u32, timeout: Option<Duration>) -> Result<Locked> {
        match &self.backend {
            // The segment checks the ID itself, on its hot path.
            Backend::Shm(s) => s.lock(id, timeout),
            Backend::Dir(d) => {
                self.check_id("Manager::lock", id)?;
                d.lock(id, timeout)
            }
        }
    }

    /// Releases lock `id`. EPERM: the calling thread does not hold it (shared memory: the
    /// locking thread must unlock; directory: the thread that locked it through this
    /// manager).
    #[inline]
    pub fn unlock(&self, id: u32) -> Result<()> {
        match &self.backend {
            Backend::Shm(s) => s.unlock(id),
            Backend::Dir(d) => {
                self.check_id("Manager::unlock", id)?;
                d.unlock(id)
            }
        }
    }

    /// Closes the manager: releases the locks the calling thread holds through it (the
    /// directory backend: every lock taken through it). EBUSY (shared memory): other
    /// threads of this process still hold locks; the segment then stays mapped, so that
    /// the kernel can still hand their locks on as EOWNERDEAD if those threads die.
    pub fn close(self) -> Result<()> {
        self.shut()
    }

    /// The segment of a shared-memory manager (the C API's lock and unlock go to it
    /// directly).
    pub(crate) fn segment(&self) -> Option<&shm::Segment> {
        match &self.backend {
            Backend::Shm(s) => Some(s),
            Backend::Dir(_) => None,
        }
    }

    /// Lets go of a manager nobody has used (a second mapping of a segment the C API
    /// has mapped already): nothing is released, the mapping goes.
    pub(crate) fn discard(self) {
        if let Backend::Shm(s) = &self.backend {
            s.discard();
        }
    }

    /// [`close`](Self::close) for a manager other threads may still reach (the C API's
    /// handles): calls made after it fail with EINVAL; the memory goes with the last
    /// reference.
    pub(crate) fn shut(&self) -> Result<()> {
        match &self.backend {
            Backend::Shm(s) => s.close(),
            Backend::Dir(d) => d.close(),
        }
    }
}

/// The error every call on a closed manager gets.
fn closed(op: &'static str) -> Error {
    Error::invalid(op, "the manager is closed")
}
