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
use super::liveness::Observer;
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

/// Locks a mutex, also after a panic elsewhere (the ffi layer catches panics; the data
/// stays consistent because every update is a single assignment or insert).
pub fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
