//! Sessions and ID allocation, as Ganga's SessionLockManager offers them, made correct
//! across hosts: unique increasing IDs from a durable counter, per-ID locks owned by a
//! session, and the locks of dead sessions reclaimed.
//!
//! Every operation costs O(k) in the IDs it touches plus a constant: the counter is two
//! fixed slots updated in place (counter.rs), an ID lock is one link(2) (idlock.rs).
//!
//! The files, each using only those below it (tests/module_graph.rs checks this):
//!
//! - this file: [`Session`], the facade: open (the session's record), close, and one
//!   call per operation;
//! - heartbeat.rs: the thread that renews the lease and reaps;
//!   alloc.rs: make_new_ids, lock_ids, release_ids, lock_holder, reap_locks;
//!   maintenance.rs: creating a repository, check, repair_counter, close's release;
//! - token.rs: the counter's token, the right to write the counter;
//! - lease.rs: the session's lease on its own locks, and its beat;
//!   reaper.rs: removing what dead sessions left;
//! - state.rs: the session's state in memory (shared by the handle and the heartbeat);
//! - counter.rs: the counter file; idlock.rs: claims and ID locks; liveness.rs: who is
//!   alive; guard.rs: the repository's guard lock;
//! - record.rs: the session record's format; files.rs: creating, linking and reading
//!   the repository's small files;
//! - layout.rs: where a repository's files are.
//!
//! Errors name the Rust operation (`open`, `make_new_ids`, ...); the C API relabels
//! them with its function's name.
//!
//! Fork: a forked child inherits its parent's open sessions as memory only. It does not
//! inherit their heartbeat threads (fork(2) copies only the calling thread), and every
//! call on them in the child answers EPERM and touches nothing on disk; close in the
//! child frees what it can and answers EPERM too. The child can open sessions of its
//! own (their ids come from getrandom(2), never from a state it shares with its
//! parent). Every descriptor the session layer opens (records, counter, claims,
//! directory listings) is O_CLOEXEC, so a program the child execs keeps none; a child
//! that does not exec keeps copies of the parent's record descriptor, and with it the
//! shared flock each session holds on its record: that flock only ever decides whether
//! an *unreadable* record or `.open-` file belongs to a dead process (liveness.rs), and
//! a session's own record is never unreadable, so the copy keeps nothing of the
//! parent's alive (liveness of readable records is the heartbeat and the owner's pid).

mod alloc;
pub(crate) mod counter;
mod files;
mod guard;
mod heartbeat;
pub(crate) mod idlock;
mod layout;
mod lease;
mod liveness;
mod maintenance;
mod reaper;
pub(crate) mod record;
mod state;
#[cfg(test)]
mod tests;
mod token;

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::process;
use layout::Repo;
use liveness::Observer;
use record::SessionRecord;
use state::{Beat, Ids, Shared};

pub use alloc::MAX_IDS_PER_CALL;
pub use layout::DEFAULT_NAME;
pub use lease::MIN_TIMEOUT;
pub use liveness::DEFAULT_TIMEOUT;

const OP_OPEN: &str = "Session::open";
const OP_CLOSE: &str = "Session::close";

/// An open session: it holds ID locks, and heartbeats until closed. Thread-safe.
/// Dropping it closes it (ignoring errors); [`Session::close`] reports them.
pub struct Session {
    shared: Arc<Shared>,
    heartbeat: Option<JoinHandle<()>>,
    closed: bool,
}

/// `Session { dir: "/shared/repo", id: "host-4242-…" }`.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("dir", &self.dir()).field("id", &self.id()).finish()
    }
}

impl Session {
    /// Opens a session on repository `dir` (created if missing) for the ID namespace
    /// `name` (None: "default"). `timeout` (None or zero: 45 s) is how long the session
    /// may go without a heartbeat before others treat it as dead; EINVAL below
    /// [`MIN_TIMEOUT`].
    pub fn open(dir: impl AsRef<Path>, name: Option<&str>, timeout: Option<Duration>) -> Result<Session> {
        let dir = dir.as_ref();
        let mut repo = Repo::new(OP_OPEN, dir, name.unwrap_or(DEFAULT_NAME))?;
        let timeout = timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_TIMEOUT);
        if timeout < MIN_TIMEOUT {
            return Err(Error::new(
                Errno::EINVAL,
                OP_OPEN,
                Some(dir),
                format!(
                    "a timeout of {} ms is too short: at least {} ms (the session beats every quarter of it and \
                     stops acting after half of it without a beat)",
                    timeout.as_millis(),
                    MIN_TIMEOUT.as_millis()
                ),
            ));
        }
        maintenance::prepare_repository(&mut repo, timeout, OP_OPEN)?;
        let me = process::this_process();
        let rec = SessionRecord { beat: 0, owner: me.record(b""), since: record::now(), timeout };
        let (sid, file, st) = publish_record(&repo, &rec)?;
        let path = repo.session_path(&sid);
        let beat = Beat { record: file, record_file: FileId::from(&st), count: 0, last: lease::boottime(), expired: None };
        let ids = Ids::default();
        let local = fsops::is_local_fs(dir);
        let shared = Arc::new(Shared {
            repo,
            sid,
            me,
            timeout,
            local,
            generation: process::fork_generation(),
            beat: Mutex::new(beat),
            ids: Mutex::new(ids),
            observer: Mutex::new(Observer::new(local, timeout)),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let heartbeat = heartbeat::start(shared.clone()).map_err(|e| {
            let _ = fsops::unlink(&path);
            Error::new(Errno::EAGAIN, OP_OPEN, Some(dir), format!("starting the heartbeat thread: {e}"))
        })?;
        Ok(Session { shared, heartbeat: Some(heartbeat), closed: false })
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.shared.repo.dir
    }

    /// This session's id (the name of its record file).
    pub fn id(&self) -> &str {
        &self.shared.sid
    }

    /// Issues `n` consecutive new IDs, each greater than every ID issued before in this
    /// repository and namespace and than every locked ID, locked by this session.
    pub fn make_new_ids(&self, n: usize) -> Result<Vec<u64>> {
        alloc::make_new_ids(&self.shared, n)
    }

    /// Locks those of `ids` that no other live session holds; returns them (IDs this
    /// session held already included), in the order given, without duplicates.
    pub fn lock_ids(&self, ids: &[u64]) -> Result<Vec<u64>> {
        alloc::lock_ids(&self.shared, ids)
    }

    /// Releases those of `ids` this session holds; returns them.
    pub fn release_ids(&self, ids: &[u64]) -> Result<Vec<u64>> {
        alloc::release_ids(&self.shared, ids)
    }

    /// Who holds `id`: "HOST (pid N) since TIME". ENOENT when no session holds it.
    pub fn lock_holder(&self, id: u64) -> Result<String> {
        alloc::lock_holder(&self.shared, id)
    }

    /// Removes the records of dead sessions; returns how many sessions.
    pub fn reap_locks(&self) -> Result<usize> {
        alloc::reap_locks(&self.shared)
    }

    /// Checks the repository's on-disk state: EBADMSG with the findings if it is not
    /// consistent.
    pub fn check(&self) -> Result<()> {
        maintenance::check(&self.shared)
    }

    /// Sets the counter's next ID to at least `next_id` (and never below any ID known to
    /// be issued or locked). Also recreates a missing or corrupt counter.
    pub fn repair_counter(&self, next_id: u64) -> Result<()> {
        maintenance::repair_counter(&self.shared, next_id)
    }

    /// Releases every ID this session holds, stops the heartbeat and removes the
    /// session's records. EPERM in a forked child (nothing is touched).
    pub fn close(mut self) -> Result<()> {
        self.shut()
    }

    fn shut(&mut self) -> Result<()> {
        self.closed = true;
        let in_child = self.shared.in_forked_child();
        if in_child {
            if let Some(thread) = self.heartbeat.take() {
                // The thread does not exist in a forked child: nothing to stop or join,
                // and the clone of the shared state it held will never be dropped by it.
                drop(thread);
                if Arc::strong_count(&self.shared) > 1 {
                    // SAFETY: the only other reference is the vanished thread's, which no
                    // code of this process can reach; dropping ours then frees the state.
                    unsafe { Arc::decrement_strong_count(Arc::as_ptr(&self.shared)) };
                }
            }
        }
        if in_child {
            return Err(self.shared.forked(OP_CLOSE));
        }
        // The IDs are released while the heartbeat still runs (on NFS, releasing many
        // can outlast the timeout), and the record goes last.
        let released = maintenance::release_all(&self.shared, OP_CLOSE);
        if let Some(thread) = self.heartbeat.take() {
            heartbeat::stop(&self.shared);
            let _ = thread.join();
        }
        let removed = maintenance::remove_record(&self.shared, OP_CLOSE);
        released.and(removed)
    }
}

/// Whether `dir` holds a repository for the ID namespace `name` (None: "default"): its
/// ID directory is there (a directory, not a symlink). Creates nothing, unlike
/// [`Session::open`], so a tool that checks or repairs a repository can refuse a path
/// that is not one. EINVAL for an unusable name or an empty path.
pub fn repository_exists(dir: impl AsRef<Path>, name: Option<&str>) -> Result<bool> {
    const OP: &str = "session::repository_exists";
    let dir = dir.as_ref();
    let repo = Repo::new(OP, dir, name.unwrap_or(DEFAULT_NAME))?;
    match fsops::lstat(&repo.ids) {
        Ok(_) => Ok(fsops::is_dir(&repo.ids)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(false),
        Err(e) => Err(Error::sys(e, OP, &repo.ids, "lstat")),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.shut();
        }
    }
}

/// Creates a new session's record, complete before it appears under its name: written
/// and synced under `.open-<sid>`, then linked to `<sid>` (so a crash can never leave a
/// record that cannot be read). The file keeps a shared flock for the session's life:
/// on a local filesystem that is how a leftover `.open-` file (or any unreadable record)
/// is known to be a dead process's (liveness.rs). A name already taken is never adopted:
/// another one is drawn.
fn publish_record(repo: &Repo, rec: &SessionRecord) -> Result<(String, File, nix::sys::stat::FileStat)> {
    const TRIES: usize = 16;
    for _ in 0..TRIES {
        let sid = layout::new_session_id();
        let (tmp, path) = (repo.opening_path(&sid), repo.session_path(&sid));
        let sys = |e: Errno, call: &str| Error::sys(e, OP_OPEN, &path, call);
        // Not every filesystem has flock (NFS may not): it only speeds up local sweeps.
        let flock = |f: &File| {
            let _ = fsops::try_flock_shared(f);
        };
        let made = match files::create_private(&tmp, &rec.to_bytes(), flock) {
            Ok(Some(made)) => made,
            Ok(None) => continue,
            Err(e) => return Err(sys(e, "creating the session record")),
        };
        let linked = match files::link_checked(&tmp, &path, made.id()) {
            // Our temporary name was swept meanwhile (taken for a dead opener's).
            Err(Errno::ENOENT) => Ok(false),
            other => other,
        };
        let _ = fsops::unlink_if_is(&tmp, made.id());
        match linked {
            Ok(true) => return Ok((sid, made.file, made.stat)),
            Ok(false) => continue,
            Err(e) => return Err(sys(e, "linking the session record")),
        }
    }
    Err(Error::new(Errno::EAGAIN, OP_OPEN, Some(&repo.sessions), format!("{TRIES} fresh session ids in a row were taken")))
}
