//! The holds of this process, and the one thread that renews them.
//!
//! Every hold is registered here (the exit hook releases them all); those with
//! keep-alive on are renewed by one library thread, started with the first of them, each
//! a third of its lease after its last renewal (sooner after a failed one). One rename(2)
//! per renewal; between renewals the thread sleeps on a condition variable.
//!
//! Fork: threads are not copied, and a child holds nothing: the child's registry is
//! emptied (nothing is renewed, released or closed there) and a later lease of the
//! child starts its own thread. Exit: the thread is told to stop and every hold still
//! registered is released (its token parked, its lock file removed), then the parked
//! claims are removed.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Once, Weak};
use std::time::Duration;

use super::hold::{self, Hold};
use crate::clock;
use crate::fsops;
use crate::process;

const OP_KEEPALIVE: &str = "lease keep-alive";

struct Registry {
    /// By the address of the hold: exact removal at release, without a scan.
    holds: HashMap<usize, Weak<Hold>>,
    /// The fork generation the renewing thread runs in, if it runs.
    thread: Option<u64>,
    /// Until when the thread sleeps: a new hold due earlier wakes it, others do not
    /// (an acquisition pays no wake-up of the thread in the common case).
    sleeping_until: Duration,
    stopping: bool,
}

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry { holds: HashMap::new(), thread: None, sleeping_until: Duration::ZERO, stopping: false }));

/// A renewal due within this much of another is done in the same wake-up (early): the
/// thread wakes a few times per lease, not once per held lease.
fn slack(lease: Duration) -> Duration {
    lease / 12
}
static WAKE: Condvar = Condvar::new();
static HOOKS: Once = Once::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a new hold; starts the renewing thread if it needs one and none runs.
pub fn register(hold: &Arc<Hold>) -> std::io::Result<()> {
    HOOKS.call_once(|| process::register(&FORK_HOOKS));
    let due = hold.state().next_due;
    let mut r = registry();
    r.holds.insert(Arc::as_ptr(hold) as usize, Arc::downgrade(hold));
    if !hold.keepalive {
        return Ok(());
    }
    let generation = process::fork_generation();
    if r.thread != Some(generation) {
        std::thread::Builder::new().name("nfslock-keepalive".into()).spawn(renew_forever)?;
        r.thread = Some(generation);
        r.sleeping_until = Duration::ZERO;
    } else if due < r.sleeping_until {
        r.sleeping_until = due;
        WAKE.notify_all();
    }
    Ok(())
}

/// Forgets a hold (released by its owner).
pub fn deregister(hold: &Arc<Hold>) {
    let mut r = registry();
    r.holds.remove(&(Arc::as_ptr(hold) as usize));
}

/// How many holds the thread renews: for tests and benchmarks.
pub fn renewed_holds() -> usize {
    registry().holds.values().filter_map(Weak::upgrade).filter(|h| h.keepalive).count()
}

fn renew_forever() {
    let mut r = registry();
    loop {
        if r.stopping {
            return;
        }
        let now = clock::now();
        let mut due = Vec::new();
        let mut next = now + Duration::from_secs(3600);
        r.holds.retain(|_, w| w.strong_count() > 0);
        for hold in r.holds.values().filter_map(Weak::upgrade).filter(|h| h.keepalive) {
            let st = hold.state();
            if st.over || st.broken.is_some() {
                continue;
            }
            if st.next_due <= now + slack(hold.lease) {
                due.push(hold.clone());
            } else {
                next = next.min(st.next_due);
            }
        }
        if due.is_empty() {
            r.sleeping_until = next;
            r = WAKE.wait_timeout(r, next - now).unwrap_or_else(|p| p.into_inner()).0;
            continue;
        }
        // Renew with the registry free: a hold's own mutex is never taken while a
        // caller holding it waits for the registry.
        drop(r);
        for hold in due {
            // Errors are kept in the hold: broken is final, others are retried soon.
            let _ = hold.renew(OP_KEEPALIVE);
        }
        r = registry();
    }
}

static FORK_HOOKS: process::Hooks =
    process::Hooks { prepare: before_fork, parent: after_fork_in_parent, child: after_fork_in_child, exit: at_exit };

type Guards = (MutexGuard<'static, Registry>, MutexGuard<'static, std::collections::HashMap<std::path::PathBuf, hold::Parked>>);
struct ForkGuard(std::cell::UnsafeCell<Option<Guards>>);
// SAFETY: only touched by the forking thread between prepare and parent/child hooks.
unsafe impl Sync for ForkGuard {}
static FORK_GUARD: ForkGuard = ForkGuard(std::cell::UnsafeCell::new(None));

// Both mutexes are taken before fork(2) (always registry first; nothing else holds both)
// and let go after it on both sides: a fork in the middle of an update cannot leave
// either locked in the child.
fn before_fork() {
    let guards = (registry(), hold::parked());
    // SAFETY: see ForkGuard.
    unsafe { *FORK_GUARD.0.get() = Some(guards) };
}

fn after_fork_in_parent() {
    // SAFETY: see ForkGuard.
    drop(unsafe { (*FORK_GUARD.0.get()).take() });
}

fn after_fork_in_child() {
    // SAFETY: see ForkGuard.
    if let Some((mut r, mut parked)) = unsafe { (*FORK_GUARD.0.get()).take() } {
        // The parent's holds and parked claims are the parent's: the child renews,
        // releases and removes none of them (their descriptors were closed in the
        // child by process's hook; dropping them here closes nothing).
        r.holds.clear();
        r.thread = None;
        r.stopping = false;
        parked.clear();
    }
}

fn at_exit() {
    let holds: Vec<Arc<Hold>> = {
        let mut r = registry();
        r.stopping = true;
        WAKE.notify_all();
        r.holds.drain().filter_map(|(_, w)| w.upgrade()).collect()
    };
    for h in holds {
        // A hold another thread is renewing or releasing this very moment is left to
        // it; its lease then runs out if the process dies before it lets go.
        let busy = h.state.try_lock().is_err();
        if !busy {
            if let Ok(parked) = h.release(OP_KEEPALIVE) {
                let _ = fsops::unlink(&parked.token(&h.target.dir));
            }
        }
    }
    for (key, claim) in hold::parked().drain() {
        let _ = fsops::unlink(&claim.token(key.parent().unwrap_or(std::path::Path::new("/"))));
    }
}
