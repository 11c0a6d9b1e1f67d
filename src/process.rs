//! Process-wide services that both families use: this process's identity, the fork
//! generation, the at-fork and at-exit hooks, descriptors a forked child must not keep,
//! and pinning the library in memory.
//!
//! # What a forked child inherits
//!
//! fork(2) copies the whole address space, so every cache and table of the library is
//! copied too, and every descriptor it has open is shared with the child. The child:
//! - gets a new fork generation ([`fork_generation`]): every lock handle and session of
//!   its parent answers EPERM there, and per-thread caches made before the fork (inotify
//!   instances) are made anew on first use;
//! - gets its own identity (pid, start time) on first use, never its parent's;
//! - holds no lock and no claim of its parent (the lock-file registry forgets them);
//! - keeps none of the descriptors registered as [`ChildlessFd`]: right after fork they
//!   are closed in the child, so a flock that says "this process is alive" on a claim
//!   dies with the parent, whatever the child does. This also covers the copies other
//!   threads of the parent held at fork time (they never run in the child), and a
//!   descriptor being opened at that moment (the open and its registration happen under
//!   the lock the hook takes). Their owners, when dropped in the child, close nothing
//!   (the number may be the child's own file by then), and a later fork does not touch
//!   them either;
//! - has no heartbeat thread: threads are not copied by fork.
//!
//! posix_spawn(3) and vfork(2) run no at-fork handlers; their child only execs or exits,
//! and every descriptor the library opens is O_CLOEXEC, so nothing survives the exec.
//! A raw clone(2) that bypasses the C library's fork skips the handlers too: its child
//! then shares the parent's descriptors until it execs or exits (not supported).
//!
//! # dlclose
//!
//! The hooks are plain functions of this library. So that none of them can point into
//! unmapped code, the library pins itself on first use (dlopen with RTLD_NODELETE): a
//! later dlclose() leaves it mapped until the process exits.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use crate::host::Identity;

/// Bumped in every forked child; read without any lock.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// How many forks separate this process from the first user of the library.
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// This process's identity (host name, pid, start time), read once per fork generation.
pub fn this_process() -> Arc<Identity> {
    install_hooks();
    let generation = fork_generation();
    let mut me = me();
    match &*me {
        Some((g, id)) if *g == generation => id.clone(),
        _ => {
            let id = Arc::new(Identity::of_this_process());
            *me = Some((generation, id.clone()));
            id
        }
    }
}

/// The cached identity and the fork generation it was read in.
static ME: Mutex<Option<(u64, Arc<Identity>)>> = Mutex::new(None);

fn me() -> MutexGuard<'static, Option<(u64, Arc<Identity>)>> {
    ME.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a family does around fork(2) and at exit. `prepare` runs in the forking thread
/// before the fork (take the locks the family's state lives behind), `parent` and
/// `child` right after it on each side (release them; forget in the child what belongs
/// to the parent). `exit` runs from atexit(3).
pub struct Hooks {
    pub prepare: fn(),
    pub parent: fn(),
    pub child: fn(),
    pub exit: fn(),
}

const MAX_HOOKS: usize = 4;
static HOOKS: [std::sync::OnceLock<&'static Hooks>; MAX_HOOKS] = [const { std::sync::OnceLock::new() }; MAX_HOOKS];
static HOOK_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Registers a family's hooks (once per family, from a `Once`).
pub fn register(hooks: &'static Hooks) {
    install_hooks();
    let slot = HOOK_COUNT.fetch_add(1, Ordering::SeqCst);
    assert!(slot < MAX_HOOKS, "more than {MAX_HOOKS} families registered fork hooks");
    let _ = HOOKS[slot].set(hooks);
}

fn registered() -> impl Iterator<Item = &'static Hooks> {
    HOOKS.iter().take(HOOK_COUNT.load(Ordering::SeqCst)).filter_map(|h| h.get().copied())
}

/// A descriptor of this process that a forked child must not keep: its open file
/// description carries something that must die with this process (a flock saying "I am
/// alive"). It is O_CLOEXEC like every descriptor of the library; in a forked child it
/// is pointed at /dev/null by the at-fork hook before the child runs any code.
#[derive(Debug)]
pub struct ChildlessFd(std::mem::ManuallyDrop<OwnedFd>);

/// The raw numbers of every live [`ChildlessFd`].
static CHILDLESS: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

fn childless() -> MutexGuard<'static, Option<HashSet<RawFd>>> {
    CHILDLESS.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChildlessFd {
    /// Opens a descriptor with `open` and registers it, under the lock the at-fork hook
    /// takes: no fork(2) can come between the two, so no child ever gets a copy that
    /// its hook does not close.
    pub fn open(open: impl FnOnce() -> nix::Result<OwnedFd>) -> nix::Result<ChildlessFd> {
        install_hooks();
        let mut set = childless();
        let fd = open()?;
        set.get_or_insert_with(HashSet::new).insert(fd.as_raw_fd());
        Ok(ChildlessFd(std::mem::ManuallyDrop::new(fd)))
    }
}

impl AsFd for ChildlessFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for ChildlessFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Drop for ChildlessFd {
    fn drop(&mut self) {
        // Unregistered and closed under the lock the at-fork hook takes, so the number
        // is never in the set while it may already name another file. One that is not
        // in the set was closed by the hook of a fork (this is the child): its number
        // may be the child's own file by now, and is left alone.
        let mut set = childless();
        if set.as_mut().is_some_and(|set| set.remove(&self.0.as_raw_fd())) {
            // SAFETY: dropped exactly once, here, and never used again.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.0) };
        }
    }
}

/// The locks of this module, held across fork(2) so that the child never inherits one
/// taken by a thread that does not exist there.
type Held = (MutexGuard<'static, Option<(u64, Arc<Identity>)>>, MutexGuard<'static, Option<HashSet<RawFd>>>);
struct ForkGuard(std::cell::UnsafeCell<Option<Held>>);
// SAFETY: only touched by the forking thread between the prepare and parent/child hooks.
unsafe impl Sync for ForkGuard {}
static FORK_GUARD: ForkGuard = ForkGuard(std::cell::UnsafeCell::new(None));

extern "C" fn before_fork() {
    // Families first (their state locks are taken before the descriptor set's, the
    // order every thread uses: a claim dropped under a family's lock unregisters its
    // descriptor).
    for h in registered() {
        (h.prepare)();
    }
    let guards = (me(), childless());
    // SAFETY: see ForkGuard.
    unsafe { *FORK_GUARD.0.get() = Some(guards) };
}

extern "C" fn after_fork_in_parent() {
    // SAFETY: see ForkGuard.
    drop(unsafe { (*FORK_GUARD.0.get()).take() });
    for h in registered() {
        (h.parent)();
    }
}

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // SAFETY: see ForkGuard.
    let mut guards = unsafe { (*FORK_GUARD.0.get()).take() };
    if let Some(set) = guards.as_mut().and_then(|(_, set)| set.as_mut()) {
        close_all(set);
    }
    drop(guards);
    for h in registered() {
        (h.child)();
    }
}

/// Closes each descriptor in `set` and forgets them all: the child's references to
/// their open file descriptions (and flocks) are gone. An owner dropped in the child
/// later finds its number unregistered and closes nothing, so a number the child reuses
/// for its own files is never closed by the library, nor touched by a later fork. Only
/// close(2), which is async-signal-safe, and a clear that frees nothing.
fn close_all(set: &mut HashSet<RawFd>) {
    for &fd in set.iter() {
        // SAFETY: a descriptor number this process owns; nothing uses it after this.
        unsafe { libc::close(fd) };
    }
    set.clear();
}

extern "C" fn at_exit() {
    for h in registered() {
        (h.exit)();
    }
}

/// Installs the at-fork and at-exit hooks and pins the library, once per process.
pub fn install_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        pin_library();
        // SAFETY: the hooks are plain extern "C" functions of this library, which is
        // pinned above and so outlives every call of them.
        unsafe {
            libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child));
            libc::atexit(at_exit);
        }
    });
}

/// Makes dlclose() of this library a no-op: the at-fork and at-exit hooks, and the
/// destructors of its thread-locals, point into its code.
fn pin_library() {
    // SAFETY: dladdr reads the loader's tables for an address of our own code; dlopen
    // with RTLD_NOLOAD only adds a reference to an object that is already loaded.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(install_hooks as *const libc::c_void, &mut info) != 0 && !info.dli_fname.is_null() {
            libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fork_and_report(check: impl FnOnce() -> bool) -> bool {
        // SAFETY: the child only runs `check` and _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::_exit(if check() { 0 } else { 1 });
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        }
    }

    #[test]
    fn a_forked_child_gets_a_new_generation_and_its_own_identity() {
        let parent = this_process();
        let generation = fork_generation();
        assert!(fork_and_report(|| fork_generation() == generation + 1 && this_process().pid != parent.pid));
        assert_eq!(fork_generation(), generation);
    }

    #[test]
    fn a_forked_child_keeps_no_childless_descriptor() {
        let file = tempfile_in_tmp();
        let fd = ChildlessFd::open(|| Ok(OwnedFd::from(file))).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH) }, 0);
        let raw = fd.as_raw_fd();
        let ours = nix::sys::stat::fstat(fd.as_fd()).unwrap();
        let moved = fork_and_report(|| {
            let now = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(raw) });
            now.is_err() || now.is_ok_and(|st| st.st_ino != ours.st_ino)
        });
        assert!(moved, "the child still had the descriptor's file open");
    }

    fn tempfile_in_tmp() -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("nfslock-process-{}", crate::random::unpredictable_hex()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).custom_flags(libc::O_CLOEXEC).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
