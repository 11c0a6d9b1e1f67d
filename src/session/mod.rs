//! Sessions and ID allocation, as Ganga's SessionLockManager offers them, made correct
//! across hosts: unique increasing IDs from a durable counter, per-ID locks owned by a
//! session, and the locks of dead sessions reclaimed.
//!
//! Every operation costs O(k) in the IDs it touches plus a constant: the counter is two
//! fixed slots updated in place (counter.rs), an ID lock is one link(2) (idlock.rs).
//! Who may write the counter is decided by its token (token.rs). The on-disk layout is
//! in layout.rs; liveness and reaping in liveness.rs.
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

mod counter;
mod heartbeat;
mod idlock;
mod layout;
mod liveness;
mod maintenance;
mod ops;
mod record;
mod token;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::host::Identity;
use crate::lockfile;
use idlock::Claim;
use layout::Repo;
use liveness::Observer;
use record::SessionRecord;

pub use layout::DEFAULT_NAME;

/// Ganga's default: a session unheard of for this long is dead.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(45_000);
/// The shortest timeout a session may have: it heartbeats every quarter of it and stops
/// acting after half of it without a beat, so a shorter one leaves no time for a beat's
/// write and fdatasync (a shorter one is EINVAL, not silently raised).
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// The most IDs one call may issue.
pub const MAX_IDS_PER_CALL: usize = 1 << 24;

const OP_OPEN: &str = "nfslock_session_open";

/// An open session: it holds ID locks, and heartbeats until closed. Thread-safe.
/// Dropping it closes it (ignoring errors); [`Session::close`] reports them.
pub struct Session {
    shared: Arc<Shared>,
    heartbeat: Option<JoinHandle<()>>,
    closed: bool,
}

/// What the handle and its heartbeat thread share.
struct Shared {
    repo: Repo,
    sid: String,
    me: Arc<Identity>,
    timeout: Duration,
    /// Whether every user of the repository's filesystem shares this machine's page
    /// cache (a local filesystem): counter updates then need no guard (token.rs).
    local: bool,
    /// The fork generation the session was opened in: a forked child acts on nothing.
    generation: u64,
    /// Separate from `ids`, so that an operation waiting (for the counter's token, say)
    /// never holds up the heartbeat.
    beat: Mutex<Beat>,
    ids: Mutex<Ids>,
    observer: Mutex<Observer>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    /// How long an operation waits for a lock another session holds (the guard, the
    /// writer lock, the counter's token): the session's timeout, at least a second.
    fn patience(&self) -> Duration {
        self.timeout.max(Duration::from_secs(1))
    }
}

/// The session's record and heartbeat.
struct Beat {
    record: File,
    record_file: FileId,
    count: u64,
    /// When the last beat started, on CLOCK_BOOTTIME (see heartbeat.rs).
    last: Duration,
    /// Why the session can no longer act (ESTALE), once it knows.
    expired: Option<String>,
}

/// The session's ID locks.
struct Ids {
    claims: Vec<Claim>,
    next_claim: u32,
    /// The IDs this session holds, and the claim each is linked to.
    held: HashMap<u64, FileId>,
    /// A lower bound of the counter's next ID (it never decreases).
    known_next: u64,
    /// Locks this session took as the counter's token and failed to remove: retried
    /// before its next update and at close (see token.rs).
    stale_tokens: Vec<(u64, FileId)>,
    /// The counter, kept open between calls on a local filesystem.
    counter: Option<Arc<counter::CounterFile>>,
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
        maintenance::prepare_repository(&mut repo, timeout)?;
        let me = lockfile::this_process();
        let rec = SessionRecord { beat: 0, owner: me.record(b""), since: record::now(), timeout };
        let (sid, file, st) = publish_record(&repo, &rec)?;
        let path = repo.session_path(&sid);
        let beat = Beat { record: file, record_file: FileId::from(&st), count: 0, last: heartbeat::boottime(), expired: None };
        let ids = Ids { claims: Vec::new(), next_claim: 0, held: HashMap::new(), known_next: 0, stale_tokens: Vec::new(), counter: None };
        let local = fsops::is_local_fs(dir);
        let shared = Arc::new(Shared {
            repo,
            sid,
            me,
            timeout,
            local,
            generation: lockfile::fork_generation(),
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
        ops::make_new_ids(&self.shared, n)
    }

    /// Locks those of `ids` that no other live session holds; returns them (IDs this
    /// session held already included), in the order given, without duplicates.
    pub fn lock_ids(&self, ids: &[u64]) -> Result<Vec<u64>> {
        ops::lock_ids(&self.shared, ids)
    }

    /// Releases those of `ids` this session holds; returns them.
    pub fn release_ids(&self, ids: &[u64]) -> Result<Vec<u64>> {
        ops::release_ids(&self.shared, ids)
    }

    /// Who holds `id`: "HOST (pid N) since TIME". ENOENT when no session holds it.
    pub fn lock_holder(&self, id: u64) -> Result<String> {
        ops::lock_holder(&self.shared, id)
    }

    /// Removes the records of dead sessions; returns how many sessions.
    pub fn reap_locks(&self) -> Result<usize> {
        ops::reap_locks(&self.shared)
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
        let in_child = lockfile::fork_generation() != self.shared.generation;
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
            return Err(ops::forked(&self.shared, "nfslock_session_close"));
        }
        // The IDs are released while the heartbeat still runs (on NFS, releasing many
        // can outlast the timeout), and the record goes last.
        let released = maintenance::release_all(&self.shared);
        if let Some(thread) = self.heartbeat.take() {
            heartbeat::stop(&self.shared);
            let _ = thread.join();
        }
        let removed = maintenance::remove_record(&self.shared);
        released.and(removed)
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
        let file = match fsops::create_new(&tmp) {
            Ok(fd) => File::from(fd),
            Err(Errno::EEXIST) => {
                liveness::remove_if_empty(&tmp);
                continue;
            }
            Err(e) => return Err(sys(e, "creating the session record")),
        };
        // Not every filesystem has flock (NFS may not): it only speeds up local sweeps.
        let _ = fsops::try_flock_shared(&file);
        let made = fsops::write_durably(&file, &rec.to_bytes()).map_err(|e| fsops::io_errno(&e)).and_then(|()| fsops::fstat(&file));
        let st = match made {
            Ok(st) => st,
            Err(e) => {
                let _ = fsops::unlink(&tmp);
                return Err(sys(e, "writing the session record"));
            }
        };
        let ours = FileId::from(&st);
        let linked = match fsops::link(&tmp, &path) {
            Ok(()) => Ok(true),
            // A retransmitted LINK reports EEXIST (or EIO) although ours worked.
            Err(e @ (Errno::EEXIST | Errno::EIO)) => match fsops::id_of(&path) {
                Ok(id) if id == ours => Ok(true),
                _ if e == Errno::EEXIST => Ok(false),
                _ => Err(e),
            },
            // Our temporary name was swept meanwhile (taken for a dead opener's).
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        };
        let _ = fsops::unlink_if_is(&tmp, ours);
        match linked {
            Ok(true) => return Ok((sid, file, st)),
            Ok(false) => continue,
            Err(e) => return Err(sys(e, "linking the session record")),
        }
    }
    Err(Error::new(Errno::EAGAIN, OP_OPEN, Some(&repo.sessions), format!("{TRIES} fresh session ids in a row were taken")))
}

/// Locks a mutex, also after a panic elsewhere (the ffi layer catches panics; the data
/// stays consistent because every update is a single assignment or insert).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
