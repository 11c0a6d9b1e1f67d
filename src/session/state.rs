//! What an open session is in memory: the state its handle and its heartbeat thread
//! share. Only data and the errors every operation builds from it; the operations
//! themselves live with their concepts (alloc.rs, token.rs, lease.rs, reaper.rs, ...).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;

use super::counter;
use super::idlock::Claims;
use super::layout::Repo;
use super::liveness::{Life, Observer};
use crate::error::Error;
use crate::fsops::FileId;
use crate::host::Identity;

/// What the handle and its heartbeat thread share.
pub struct Shared {
    pub repo: Repo,
    pub sid: String,
    pub me: Arc<Identity>,
    pub timeout: Duration,
    /// Whether every user of the repository's filesystem shares this machine's page
    /// cache (a local filesystem): counter updates then need no guard (token.rs).
    pub local: bool,
    /// The fork generation the session was opened in: a forked child acts on nothing.
    pub generation: u64,
    /// Separate from `ids`, so that an operation waiting (for the counter's token, say)
    /// never holds up the heartbeat.
    pub beat: Mutex<Beat>,
    pub ids: Mutex<Ids>,
    pub observer: Mutex<Observer>,
    pub stop: Mutex<bool>,
    pub wake: Condvar,
}

impl Shared {
    /// How long an operation waits for a lock another session holds (the guard, the
    /// writer lock, the counter's token): the session's timeout, at least a second.
    pub fn patience(&self) -> Duration {
        self.timeout.max(Duration::from_secs(1))
    }

    /// EPERM for `op` called in a forked child on its parent's session.
    pub fn forked(&self, op: &'static str) -> Error {
        Error::new(Errno::EPERM, op, Some(&self.repo.dir), "the session belongs to the parent of this forked process")
    }

    /// A system call's error, on the repository directory.
    pub fn sys(&self, op: &'static str, e: Errno, call: &str) -> Error {
        Error::sys(e, op, &self.repo.dir, call)
    }

    /// Whether this is a forked child of the process that opened the session (it then
    /// acts on nothing of it).
    pub fn in_forked_child(&self) -> bool {
        crate::process::fork_generation() != self.generation
    }

    /// Whether session `sid` is alive as far as this session's observer can tell (see
    /// `liveness::Observer::judge`).
    pub fn judge(&self, sid: &str) -> Life {
        locked(&self.observer).judge(&self.repo, sid, &self.me.host)
    }

    /// Tells the heartbeat thread to stop, waking it from its sleep.
    pub fn stop_heartbeat(&self) {
        *locked(&self.stop) = true;
        self.wake.notify_all();
    }

    /// Sleeps up to `period` or until told to stop; true when told to stop.
    pub fn sleep_unless_stopped(&self, period: Duration) -> bool {
        let stopped = locked(&self.stop);
        let (stopped, _) = self.wake.wait_timeout_while(stopped, period, |s| !*s).unwrap_or_else(|p| p.into_inner());
        *stopped
    }
}

/// The session's record and heartbeat.
pub struct Beat {
    pub record: File,
    pub record_file: FileId,
    pub count: u64,
    /// When the last beat started, on CLOCK_BOOTTIME (see lease.rs).
    pub last: Duration,
    /// Why the session can no longer act (ESTALE), once it knows.
    pub expired: Option<String>,
}

/// The session's ID locks.
#[derive(Debug, Default)]
pub struct Ids {
    pub claims: Claims,
    /// The IDs this session holds, and the claim each is linked to.
    pub held: HashMap<u64, FileId>,
    /// A lower bound of the counter's next ID (it never decreases).
    pub known_next: u64,
    /// Locks this session took as the counter's token and failed to remove: retried
    /// before its next update and at close (see token.rs).
    pub stale_tokens: Vec<(u64, FileId)>,
    /// The counter, kept open between calls on a local filesystem.
    pub counter: counter::Cache,
}

impl Ids {
    /// Records that the counter is at least at `next` (what this session knows of it
    /// never decreases).
    pub fn learn_next(&mut self, next: u64) {
        self.known_next = self.known_next.max(next);
    }

    /// Whether this session holds the lock on `id`.
    pub fn holds(&self, id: u64) -> bool {
        self.held.contains_key(&id)
    }

    /// Adds ID locks this session took, each with the claim it is linked to.
    pub fn hold(&mut self, taken: impl IntoIterator<Item = (u64, FileId)>) {
        self.held.extend(taken);
    }

    /// Forgets the lock on `id` (about to be released); the claim it was linked to.
    pub fn unhold(&mut self, id: u64) -> Option<FileId> {
        self.held.remove(&id)
    }

    /// Forgets every lock this session holds (close releases them); each with its claim.
    pub fn unhold_all(&mut self) -> HashMap<u64, FileId> {
        std::mem::take(&mut self.held)
    }

    /// Keeps a token's lock this session failed to remove, for the next try (token.rs).
    pub fn keep_stale_token(&mut self, id: u64, file: FileId) {
        self.stale_tokens.push((id, file));
    }
}

/// Locks a mutex, also after a panic elsewhere (the ffi layer catches panics; the data
/// stays consistent because every update is a single assignment or insert).
pub fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
