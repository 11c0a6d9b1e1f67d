//! The handles the C API hands out (`nfslock *`, `nfslock_session *`, `nfslock_manager *`), and how a dead
//! one is told from a live one without touching freed memory.
//!
//! A handle is not the address of anything: it is a number drawn from one process-wide
//! counter that only grows (in steps of 16, so that it looks like an aligned pointer),
//! never dereferenced, and looked up in a registry of the live ones. A handle that was
//! unlocked or closed is gone from the registry and its number is never handed out
//! again, so a stale handle (used twice, or after another handle was created in its
//! place) is EINVAL, whatever happened to the memory since; nothing of the caller's is
//! read through it. Every family uses the same counter, so a lock handle passed as a
//! session (or the reverse) is EINVAL too.
//!
//! The registries are guarded by mutexes that are held only to insert, look up or
//! remove an entry (never across a call into the core). So that a fork in the middle of
//! such an update cannot leave a child with a registry locked forever, the registries
//! are taken before fork(2) and let go after it in both processes (pthread_atfork). A
//! forked child inherits the registries: the parent's handles are found there, and the
//! core answers EPERM for them (nothing of the parent's is touched).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use crate::error::Error;

/// The first handle value, and the step between two (an aligned, non-NULL "pointer").
const FIRST: usize = 0x1000;
const STEP: usize = 16;

static NEXT: AtomicUsize = AtomicUsize::new(FIRST);
static AT_FORK: Once = Once::new();

/// The live handles of one kind, and what each stands for.
pub struct Registry<T> {
    live: Mutex<BTreeMap<usize, T>>,
}

impl<T> Registry<T> {
    pub const fn new() -> Registry<T> {
        Registry { live: Mutex::new(BTreeMap::new()) }
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<usize, T>> {
        // Every update is a single insert or remove: a panic cannot leave it half done.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `value` under a new handle, never handed out before in this process.
    pub fn insert(&self, op: &'static str, value: T) -> Result<usize, Error> {
        AT_FORK.call_once(install_at_fork);
        let handle = NEXT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| h.checked_add(STEP))
            .map_err(|_| Error::new(nix::errno::Errno::ENOMEM, op, None, "this process has used up its handle numbers"))?;
        self.table().insert(handle, value);
        Ok(handle)
    }

    /// Runs `f` on the value of a live handle; None when `handle` is not live.
    pub fn with<R>(&self, handle: usize, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.table().get(&handle).map(f)
    }

    /// Registers `value` under `handle`, a number made elsewhere (ffi/slots.rs) and
    /// never registered before.
    pub fn insert_at(&self, handle: usize, value: T) {
        AT_FORK.call_once(install_at_fork);
        self.table().insert(handle, value);
    }

    /// Runs `f` on the table itself, under its lock (a find and an update that must not
    /// be split).
    pub fn update<R>(&self, f: impl FnOnce(&mut BTreeMap<usize, T>) -> R) -> R {
        AT_FORK.call_once(install_at_fork);
        f(&mut self.table())
    }

    /// The first value that `pred` accepts.
    pub fn find(&self, pred: impl Fn(&T) -> bool) -> Option<T>
    where
        T: Clone,
    {
        self.table().values().find(|v| pred(v)).cloned()
    }

    /// Takes a live handle out of the registry: it is dead from now on.
    pub fn remove(&self, handle: usize) -> Option<T> {
        self.table().remove(&handle)
    }
}

/// The lock handles: `nfslock *` (a plain lock or a lease; see ffi/lockfile.rs).
pub static LOCKS: Registry<std::sync::Arc<super::lockfile::Held>> = Registry::new();
/// The option handles: `nfslock_options *`.
pub static OPTIONS: Registry<std::sync::Arc<std::sync::Mutex<crate::lease::Options>>> = Registry::new();
/// The session handles: `nfslock_session *` (see ffi/session.rs for the entry).
pub static SESSIONS: Registry<std::sync::Arc<super::session::Entry>> = Registry::new();
/// The directory managers behind `nfslock_manager *` handles (see ffi/slots.rs).
pub static MANAGERS: Registry<std::sync::Arc<crate::manager::Manager>> = Registry::new();
/// The shared-memory managers the C API opened, one per segment file, with their count
/// of live handles (see ffi/manager.rs), keyed by the first handle that opened each.
pub static SEGMENTS: Registry<&'static super::manager::SharedSegment> = Registry::new();

type Held = (
    Option<MutexGuard<'static, BTreeMap<usize, std::sync::Arc<super::lockfile::Held>>>>,
    Option<MutexGuard<'static, BTreeMap<usize, std::sync::Arc<super::session::Entry>>>>,
    Option<MutexGuard<'static, BTreeMap<usize, std::sync::Arc<std::sync::Mutex<crate::lease::Options>>>>>,
    Option<MutexGuard<'static, BTreeMap<usize, std::sync::Arc<crate::manager::Manager>>>>,
    Option<MutexGuard<'static, BTreeMap<usize, &'static super::manager::SharedSegment>>>,
);

thread_local! {
    /// The registries' guards, held by the forking thread across fork(2).
    static HELD_ACROSS_FORK: RefCell<Held> = const { RefCell::new((None, None, None, None, None)) };
}

extern "C" fn before_fork() {
    // Always in this order; nothing else ever holds both.
    let held = (Some(LOCKS.table()), Some(SESSIONS.table()), Some(OPTIONS.table()), Some(MANAGERS.table()), Some(SEGMENTS.table()));
    let _ = HELD_ACROSS_FORK.try_with(|h| *h.borrow_mut() = held);
}

extern "C" fn after_fork() {
    let _ = HELD_ACROSS_FORK.try_with(|h| {
        let (locks, sessions, options, managers, segments) = std::mem::take(&mut *h.borrow_mut());
        drop(segments);
        drop(managers);
        drop(options);
        drop(sessions);
        drop(locks);
    });
}

fn install_at_fork() {
    // SAFETY: the handlers are plain functions of this library, which is never unloaded
    // while they are registered (the library's own at-fork hooks need the same).
    let rc = unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    // Without the handlers (ENOMEM) a fork during an update could wedge the child's
    // registry; the registries still work otherwise.
    let _ = rc;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_never_reused_and_dead_ones_are_not_found() {
        let reg: Registry<u32> = Registry::new();
        let a = reg.insert("t", 1).unwrap();
        assert_eq!(reg.with(a, |v| *v), Some(1));
        assert_eq!(reg.remove(a), Some(1));
        let b = reg.insert("t", 2).unwrap();
        assert_ne!(a, b, "a dead handle's number is never handed out again");
        assert_eq!(reg.with(a, |v| *v), None);
        assert_eq!(reg.remove(a), None);
        assert_eq!(reg.with(b, |v| *v), Some(2));
        assert!(a % STEP == 0 && b % STEP == 0 && a >= FIRST);
    }
}
