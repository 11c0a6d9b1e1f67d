//! Waiting for a lock: exponential back-off with jitter from about a millisecond to
//! 100 ms (`crate::backoff`), cut short the moment a process on this machine removes the lock file.
//!
//! inotify on the lock's directory sees removals made through this kernel, also on an
//! NFS mount; releases on other machines are noticed by the back-off polls.

use std::cell::RefCell;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::fsops;
use crate::lockfile::{registry, Target};
use nix::errno::Errno;

const FIRST_DELAY: Duration = Duration::from_millis(1);
const MAX_DELAY: Duration = Duration::from_millis(100);

/// A lock waiter's delays: they double from FIRST_DELAY up to MAX_DELAY, each drawn
/// uniformly from the upper half of its step so that waiters do not retry in lockstep.
pub fn backoff() -> Backoff {
    Backoff::jittered(FIRST_DELAY, MAX_DELAY)
}

/// The waiting between a blocking call's attempts (lock files and leases alike): what
/// ends the wait, and the sleep, cut short by a release on this machine.
pub struct Waiter<'a> {
    target: &'a Target,
    op: &'static str,
    timeout: Option<Duration>,
    start: Instant,
    backoff: Backoff,
    /// None until the first failed attempt; then the directory's watch, if inotify works.
    watch: Option<Option<Watch>>,
}

impl<'a> Waiter<'a> {
    /// A wait of up to `timeout` (None: forever; zero: a single attempt).
    pub fn new(target: &'a Target, op: &'static str, timeout: Option<Duration>) -> Waiter<'a> {
        Waiter { target, op, timeout, start: Instant::now(), backoff: backoff(), watch: None }
    }

    /// The failed attempt's error back if waiting goes on after it: the lock was held,
    /// or the error is transient (the same list every retry uses). Anything else, or any
    /// error of a single attempt, ends the call with that error.
    pub fn retryable(&self, err: Error) -> Result<Error> {
        let errno = err.sys_errno();
        if (errno != Errno::EAGAIN && !fsops::is_transient(errno)) || self.timeout == Some(Duration::ZERO) {
            return Err(err);
        }
        Ok(err)
    }

    /// Waits before the next attempt, at most `cap`. Ends the call with ETIMEDOUT (naming
    /// `last`, the last attempt's error) once the timeout has passed, and with ENOENT once
    /// the lock's directory is gone.
    pub fn wait(&mut self, last: &Error, cap: Duration) -> Result<()> {
        let t = self.target;
        // A lock held by another thread of this process is waited for in memory, where
        // a removed or renamed directory would go unnoticed: check it on every round.
        if fsops::dir_is_gone(&t.dir) {
            let why = format!("the directory {} was removed or renamed while waiting", t.dir.display());
            return Err(t.error(Errno::ENOENT, self.op, why));
        }
        let left = self.timeout.map_or(Duration::MAX, |t| t.saturating_sub(self.start.elapsed()));
        if left.is_zero() {
            let waited = self.timeout.unwrap_or_default().as_millis();
            let cause = format!("gave up after {waited} ms; last attempt: {}", last.cause());
            return Err(t.error(Errno::ETIMEDOUT, self.op, cause));
        }
        let delay = self.backoff.next_delay().min(left).min(cap);
        match &self.watch {
            // Arm the watch, then try again at once: a release between the failed
            // attempt and the watch would otherwise go unnoticed until the next poll.
            None => self.watch = Some(Watch::new(&t.dir, &t.lock_name)),
            Some(Some(w)) => {
                if !registry::wait_for_other_thread(&t.key, delay) {
                    w.wait(delay);
                }
            }
            Some(None) => std::thread::sleep(delay),
        }
        Ok(())
    }
}

thread_local! {
    /// One inotify instance per thread, kept for the thread's life: closing an inotify fd
    /// waits for a kernel grace period (milliseconds), which a waiter that just won the
    /// lock must not pay. Watches are added and removed per wait, which is cheap. The
    /// fork generation it was made in tells a forked child to make its own.
    static INOTIFY: RefCell<Option<(u64, Inotify)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's inotify instance; None when inotify is unavailable.
fn with_inotify<T>(f: impl FnOnce(&Inotify) -> Option<T>) -> Option<T> {
    INOTIFY.with(|cell| {
        let mut slot = cell.borrow_mut();
        let generation = crate::process::fork_generation();
        if slot.as_ref().is_none_or(|(g, _)| *g != generation) {
            // A forked child must not read events off the instance it shares with its
            // parent; dropping its copy of the fd leaves the parent's instance intact.
            drop(slot.take());
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
            *slot = Some((generation, inotify));
        }
        f(&slot.as_ref()?.1)
    })
}

/// Wakes a waiter when a name in one directory is removed or renamed away.
pub struct Watch {
    wd: WatchDescriptor,
    name: OsString,
}

impl Watch {
    /// Watches `dir` for the removal of `name`; None when inotify is unavailable (the
    /// waiter then relies on back-off alone).
    pub fn new(dir: &Path, name: &std::ffi::OsStr) -> Option<Watch> {
        let mask = AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_ONLYDIR;
        let wd = with_inotify(|inotify| {
            // Events left from an earlier wait of this thread are stale.
            while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
            inotify.add_watch(dir, mask).ok()
        })?;
        Some(Watch { wd, name: name.to_os_string() })
    }

    /// Sleeps up to `timeout`; returns early once the watched name is removed.
    pub fn wait(&self, timeout: Duration) {
        let woken = with_inotify(|inotify| {
            self.wait_on(inotify, timeout);
            Some(())
        });
        if woken.is_none() {
            std::thread::sleep(timeout);
        }
    }

    fn wait_on(&self, inotify: &Inotify, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let ms = PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) => return,
                Ok(_) => {
                    let events = inotify.read_events().unwrap_or_default();
                    if events.iter().any(|e| e.wd == self.wd && e.name.as_deref() == Some(self.name.as_os_str())) {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return std::thread::sleep(left),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        with_inotify(|inotify| inotify.rm_watch(self.wd).ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_waiters_backoff_grows_to_the_cap_with_jitter() {
        let mut b = backoff();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_micros(500) && delays[0] <= FIRST_DELAY);
        assert!(delays.iter().all(|d| *d <= MAX_DELAY));
        assert!(delays[11] >= MAX_DELAY / 2);
    }

    #[test]
    fn watch_wakes_on_removal_of_its_name_only() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        std::fs::write(dir.join("other"), b"").unwrap();
        std::fs::write(dir.join("x.nfs_lock"), b"").unwrap();
        let w = Watch::new(dir, "x.nfs_lock".as_ref()).unwrap();
        std::fs::remove_file(dir.join("other")).unwrap();
        let start = Instant::now();
        w.wait(Duration::from_millis(50));
        assert!(start.elapsed() >= Duration::from_millis(45), "another name must not wake it");
        std::fs::remove_file(dir.join("x.nfs_lock")).unwrap();
        let start = Instant::now();
        w.wait(Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(4));
    }
}
