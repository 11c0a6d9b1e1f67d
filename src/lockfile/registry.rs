//! What this process knows about its own locks: which thread holds which path and the
//! claim files it keeps ready. The state lives behind one mutex, is forgotten in a
//! forked child (the child owns none of it), and is released at normal process exit.
//!
//! Nothing here is a judgement about another process: whether a holder is alive is
//! decided afresh by every call (see `Judgements` in the parent module).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Once};

use crate::fsops::{self, FileId};
use crate::process::{self, ChildlessFd};

/// A claim file: a private file holding this process's record for one lock path and one
/// message, linked to `P.nfs_lock` to take the lock. Kept across acquisitions so that
/// the steady state is one link(2) per acquisition.
#[derive(Debug, Clone)]
pub struct Claim {
    pub path: PathBuf,
    pub id: FileId,
    pub message: Vec<u8>,
    /// Whether the claim's directory is on a filesystem of this machine only, where a
    /// link(2) that reports EEXIST never linked (no lost replies to allow for).
    pub local: bool,
    /// Kept open with a shared flock for as long as this process keeps the claim: the
    /// kernel drops it when the process dies, so a cleaner that cannot take the flock
    /// exclusively knows the holder is alive, whatever its pid and start time say.
    /// Held, never read: its open file description carries the flock. A forked child
    /// keeps no copy of it (see `process`), so the flock dies with this process.
    #[allow(dead_code)]
    pub liveness: Arc<ChildlessFd>,
}

/// A path this process holds or is acquiring.
#[derive(Debug)]
struct Held {
    thread: u64,
    token: u64,
    /// Identity of the lock file once taken; None while the acquisition is in flight.
    file: Option<FileId>,
    lock_path: PathBuf,
    /// Whether the at-exit hook releases it (not for the library's internal locks).
    release_at_exit: bool,
    /// A thread is removing the lock file (unlock, or unlock_path of it): nobody else
    /// may, and the path stays reserved until the file is gone. Threads of one process
    /// share a path's claim, so a second remover checking the name after a new holder
    /// linked that same claim again would take the new lock for the old one.
    releasing: bool,
}

/// What [`State::begin_release_of_file`] found.
pub enum Release {
    /// This thread now removes it: the key and token to end afterwards.
    Started(PathBuf, u64),
    /// Another thread is removing it at this moment.
    InProgress,
    /// No hold of this process names that file.
    NotHeld,
}

/// How many claim files a process keeps ready (each with one open descriptor, its
/// liveness flock); the least recently used one is removed past this, so a process that
/// locks many paths keeps at most this many descriptors for paths it no longer holds,
/// and does not litter their directories. Claims of held locks are never removed.
pub(crate) const MAX_CLAIMS: usize = 8;

/// How many directories remember that this process swept them.
const MAX_SWEPT: usize = 256;

pub struct State {
    held: HashMap<PathBuf, Held>,
    /// Directories this process swept for orphaned claims.
    swept: std::collections::HashSet<PathBuf>,
    claims: HashMap<PathBuf, (Claim, u64)>,
    claim_clock: u64,
    /// Threads waiting in `wait_for_other_thread`.
    waiters: usize,
    next_token: u64,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| {
    Mutex::new(State { held: HashMap::new(), swept: Default::default(), claims: HashMap::new(), claim_clock: 0, waiters: 0, next_token: 1 })
});

static HOOKS: Once = Once::new();
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// A number unique to the calling thread for the life of the process (pthread ids are
/// reused after a thread exits; these are not).
pub fn this_thread() -> u64 {
    THREAD.with(|t| *t)
}

/// Locks the process state, registering the fork and exit hooks on first use.
pub fn state() -> MutexGuard<'static, State> {
    HOOKS.call_once(|| process::register(&FORK_HOOKS));
    STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a path cannot be taken by this thread right now, as far as this process knows.
pub enum Busy {
    /// The calling thread holds it already.
    ByThisThread,
    /// Another thread of this process holds it or is taking it.
    ByOtherThread,
}

impl State {
    /// Reserves `key` for the calling thread before it touches the disk, so that two
    /// threads of one process never race for the same path with the same claim file.
    pub fn reserve(&mut self, key: &Path, lock_path: &Path, release_at_exit: bool) -> Result<u64, Busy> {
        if let Some(h) = self.held.get(key) {
            return Err(if h.thread == this_thread() { Busy::ByThisThread } else { Busy::ByOtherThread });
        }
        let token = self.next_token;
        self.next_token += 1;
        let held = Held { thread: this_thread(), token, file: None, lock_path: lock_path.to_path_buf(), release_at_exit, releasing: false };
        self.held.insert(key.to_path_buf(), held);
        Ok(token)
    }

    /// Records that the reservation `token` now holds the lock file `file`.
    pub fn confirm(&mut self, key: &Path, token: u64, file: FileId) {
        if let Some(h) = self.held.get_mut(key).filter(|h| h.token == token) {
            h.file = Some(file);
        }
    }

    /// Whether the reservation or hold `token` on `key` is still in force (false once
    /// `nfslock_unlock_path` from this process ended it).
    pub fn holds(&self, key: &Path, token: u64) -> bool {
        self.held.get(key).is_some_and(|h| h.token == token)
    }

    /// Makes the calling thread the one that removes the lock file of hold `token`;
    /// false when the hold is over or another thread is removing it (unlock_path).
    pub fn begin_release(&mut self, key: &Path, token: u64) -> bool {
        match self.held.get_mut(key).filter(|h| h.token == token && !h.releasing) {
            Some(h) => {
                h.releasing = true;
                true
            }
            None => false,
        }
    }

    /// Undoes [`State::begin_release`] / `begin_release_of_file` when the removal did
    /// not happen (a break that lost its race): the hold goes on as it was.
    pub fn cancel_release(&mut self, key: &Path, token: u64) {
        if let Some(h) = self.held.get_mut(key).filter(|h| h.token == token) {
            h.releasing = false;
        }
    }

    /// The same for the hold on lock file `file`, whatever spelling it was taken under.
    pub fn begin_release_of_file(&mut self, file: FileId) -> Release {
        match self.held.iter_mut().find(|(_, h)| h.file == Some(file)) {
            Some((_, h)) if h.releasing => Release::InProgress,
            Some((key, h)) => {
                h.releasing = true;
                Release::Started(key.clone(), h.token)
            }
            None => Release::NotHeld,
        }
    }

    fn held_by_other_thread(&self, key: &Path) -> bool {
        self.held.get(key).is_some_and(|h| h.thread != this_thread())
    }

    /// Who of this process holds the lock file `file` (through any spelling of its
    /// path): the key it was taken under and whether the calling thread is the holder.
    pub fn holder_of_file(&self, file: FileId) -> Option<(PathBuf, Busy)> {
        let (key, h) = self.held.iter().find(|(_, h)| h.file == Some(file))?;
        let busy = if h.thread == this_thread() { Busy::ByThisThread } else { Busy::ByOtherThread };
        Some((key.clone(), busy))
    }

    pub fn claim(&mut self, key: &Path, message: &[u8]) -> Option<Claim> {
        self.claim_clock += 1;
        let clock = self.claim_clock;
        let (claim, used) = self.claims.get_mut(key).filter(|(c, _)| c.message == message)?;
        *used = clock;
        Some(claim.clone())
    }

    /// Keeps `claim` for `key`; returns the claim files that are no longer kept and must be
    /// removed (the one it replaces, or the least recently used one).
    pub fn keep_claim(&mut self, key: &Path, claim: Claim) -> Vec<PathBuf> {
        self.claim_clock += 1;
        let mut dropped = Vec::new();
        if let Some((old, _)) = self.claims.insert(key.to_path_buf(), (claim, self.claim_clock)) {
            dropped.push(old.path);
        }
        while self.claims.len() > MAX_CLAIMS {
            let unheld = self.claims.iter().filter(|(k, _)| !self.held.contains_key(*k));
            let Some(oldest) = unheld.min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) else { break };
            if let Some((old, _)) = self.claims.remove(&oldest) {
                dropped.push(old.path);
            }
        }
        dropped
    }

    /// True the first time this process makes a claim in `dir` (bounded memory: past
    /// MAX_SWEPT directories it starts over, and sweeps some again).
    pub fn first_claim_in(&mut self, dir: &Path) -> bool {
        if self.swept.len() >= MAX_SWEPT {
            self.swept.clear();
        }
        self.swept.insert(dir.to_path_buf())
    }

    /// How many claims are kept for paths this process does not hold.
    #[cfg(test)]
    pub fn unheld_claims(&self) -> usize {
        self.claims.keys().filter(|k| !self.held.contains_key(*k)).count()
    }

    /// Gives up every kept claim of a path this process does not hold (the process ran
    /// out of descriptors); returns the claim files to remove.
    pub fn drop_unheld_claims(&mut self) -> Vec<PathBuf> {
        let unheld: Vec<PathBuf> = self.claims.keys().filter(|k| !self.held.contains_key(*k)).cloned().collect();
        unheld.iter().filter_map(|k| self.claims.remove(k)).map(|(c, _)| c.path).collect()
    }

    /// Forgets a claim file that disappeared from disk.
    pub fn forget_claim(&mut self, key: &Path) {
        self.claims.remove(key);
    }

    /// The child of a fork holds nothing: its pid and start time differ, and every lock
    /// and claim file belongs to the parent. Nothing on disk is touched.
    fn forget_after_fork(&mut self) {
        // The claims' descriptors were closed by the process hooks already; dropping the
        // claims here closes nothing again (see ChildlessFd) and leaves the parent's
        // claim files alone. Freeing memory in a forked child of a threaded parent is
        // safe with glibc and musl, which make malloc usable before the child handlers.
        self.held.clear();
        self.swept.clear();
        self.claims.clear();
        // Threads waiting in the parent do not exist here.
        self.waiters = 0;
    }

    /// Lock files this process holds and claim files it keeps, emptied from the state.
    fn take_for_exit(&mut self) -> (Vec<(PathBuf, FileId)>, Vec<PathBuf>) {
        let held = self.held.drain().filter(|(_, h)| h.release_at_exit).filter_map(|(_, h)| Some((h.lock_path, h.file?))).collect();
        let claims = self.claims.drain().map(|(_, (c, _))| c.path).collect();
        (held, claims)
    }
}

/// Woken whenever a hold ends, for threads waiting on another thread of this process.
static RELEASED: Condvar = Condvar::new();

/// Ends the reservation or hold `token` on `key`, and wakes this process's waiters.
///
/// A hold must end only after its lock file is gone: threads of one process share the
/// claim of a path, so a sibling that linked it while the old link still stood would
/// take the EEXIST for a lost reply of its own link.
pub fn end_hold(key: &Path, token: u64) {
    let mut st = state();
    if st.holds(key, token) {
        st.held.remove(key);
    }
    wake_waiters(&st);
}

/// Wakes the threads in [`wait_for_other_thread`], if any (a wake is a syscall, which
/// an uncontended release need not pay).
fn wake_waiters(st: &State) {
    if st.waiters > 0 {
        RELEASED.notify_all();
    }
}

/// If another thread of this process holds `key`, waits up to `timeout` for it to let
/// go and returns true; returns false at once otherwise (the holder is elsewhere).
pub fn wait_for_other_thread(key: &Path, timeout: std::time::Duration) -> bool {
    let mut st = state();
    if !st.held_by_other_thread(key) {
        return false;
    }
    st.waiters += 1;
    let (mut st, _) = RELEASED.wait_timeout_while(st, timeout, |s| s.held_by_other_thread(key)).unwrap_or_else(|p| p.into_inner());
    st.waiters -= 1;
    true
}

// Fork safety: the state mutex is taken before fork and released on both sides, so a
// child never inherits it locked by a thread that does not exist in the child.
struct ForkGuard(std::cell::UnsafeCell<Option<MutexGuard<'static, State>>>);
// SAFETY: only touched by the forking thread between prepare and parent/child hooks.
unsafe impl Sync for ForkGuard {}
static FORK_GUARD: ForkGuard = ForkGuard(std::cell::UnsafeCell::new(None));

static FORK_HOOKS: process::Hooks =
    process::Hooks { prepare: before_fork, parent: after_fork_in_parent, child: after_fork_in_child, exit: at_exit };

fn before_fork() {
    let guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: see ForkGuard.
    unsafe { *FORK_GUARD.0.get() = Some(guard) };
}

fn after_fork_in_parent() {
    // SAFETY: see ForkGuard.
    drop(unsafe { (*FORK_GUARD.0.get()).take() });
}

fn after_fork_in_child() {
    // SAFETY: see ForkGuard.
    if let Some(mut guard) = unsafe { (*FORK_GUARD.0.get()).take() } {
        guard.forget_after_fork();
    }
}

fn at_exit() {
    // Another thread may be inside the library; never wait for it forever at exit.
    let mut state = None;
    for _ in 0..100 {
        if let Ok(s) = STATE.try_lock() {
            state = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let Some(mut state) = state else { return };
    let (held, claims) = state.take_for_exit();
    drop(state);
    for (lock_path, file) in held {
        let _ = fsops::unlink_if_is(&lock_path, file);
    }
    for claim in claims {
        let _ = fsops::unlink(&claim);
    }
}
