//! Whether other sessions are alive, and removing the records of dead ones.
//!
//! A session is dead when its beat has not changed for its timeout as measured on the
//! observer's own monotonic clock (no clocks of two hosts are ever compared), or at
//! once when it lives on this host and its process is gone or is another process with
//! the same pid. An observer can only call a session dead after watching it for a full
//! timeout, so a fresh observer is slow to judge, never quick.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::DirEntryExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::idlock;
use super::layout::{classify, is_opening_name, is_session_id, IdsEntry, Repo};
use super::ops::{guard, guard_within};
use super::record::{SessionRecord, MAX_LEN};
use super::token;
use super::{locked, Shared};
use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::host::{self, Owner};

const OP_REAP: &str = "nfslock_session_reap_locks";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Alive,
    Dead,
    /// No record: the session closed or was reaped; what is left of it is garbage.
    Gone,
}

/// What this process has seen of other sessions' beats.
#[derive(Debug)]
pub struct Observer {
    seen: HashMap<String, (u64, Instant)>,
    /// Unreadable records and `.open-` files: their identity and a checksum of their
    /// bytes, and since when (our clock) they were seen so.
    unreadable: HashMap<std::path::PathBuf, (FileId, u32, Instant)>,
    local: bool,
    /// How long an unreadable file must stay unchanged before it counts as dead: the
    /// longer of our own timeout and the default one (its own is not readable).
    patience: Duration,
}

/// Removes a file at one of our own fresh names that an O_EXCL create found taken, if
/// it is an empty regular file (a create of ours whose reply was lost, or an opener
/// killed before it wrote): litter, whoever made it. One that is someone's live file
/// only makes their link fail, and they draw another name.
pub fn remove_if_empty(path: &std::path::Path) {
    if let Ok(st) = fsops::lstat(path) {
        if fsops::is_regular(&st) && st.st_size == 0 && st.st_nlink == 1 {
            let _ = fsops::unlink_if_is(path, FileId::from(&st));
        }
    }
}

/// Reads a session's record. None: there is none.
pub fn read_record(repo: &Repo, sid: &str) -> Result<Option<SessionRecord>, String> {
    let fd = match fsops::open_existing(&repo.session_path(sid), false) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(format!("open: {}", e.desc())),
    };
    match fsops::read_capped(&File::from(fd), MAX_LEN) {
        Ok(Some(bytes)) => SessionRecord::parse(&bytes).map(Some),
        Ok(None) => Err(format!("larger than {MAX_LEN} bytes")),
        // Removed between open and read (NFS), or a volatile server handle: cannot tell
        // from here; the next look opens it afresh.
        Err(e) => Err(format!("read: {}", e.desc())),
    }
}

impl Observer {
    pub fn new(local: bool, timeout: Duration) -> Observer {
        Observer { seen: HashMap::new(), unreadable: HashMap::new(), local, patience: timeout.max(super::DEFAULT_TIMEOUT) }
    }

    /// Whether an unreadable record or `.open-` file is a dead process's: on a local
    /// filesystem, when no process holds its flock (every session holds one on its
    /// record for its life, and an opener on its `.open-` file); elsewhere, when its
    /// bytes stayed the same for the observer's patience on its own clock.
    pub fn unreadable_is_dead(&mut self, path: &std::path::Path) -> bool {
        let Ok(fd) = fsops::open_existing(path, false) else { return false };
        let file = File::from(fd);
        if self.local {
            return fsops::try_flock_exclusive(&file).is_ok();
        }
        let (Ok(st), Ok(Some(bytes))) = (fsops::fstat(&file), fsops::read_capped(&file, MAX_LEN + 1)) else { return false };
        let now_seen = (FileId::from(&st), crc32fast::hash(&bytes));
        let now = Instant::now();
        match self.unreadable.get(path) {
            Some(&(id, crc, since)) if (id, crc) == now_seen => now.duration_since(since) >= self.patience,
            _ => {
                self.unreadable.insert(path.to_path_buf(), (now_seen.0, now_seen.1, now));
                false
            }
        }
    }

    /// Judges session `sid` from its record now and what was seen of it before. A
    /// record that cannot be read or parsed counts as alive unless it is shown to be a
    /// dead process's ([`Observer::unreadable_is_dead`]): never break what you cannot
    /// read (`check` reports it).
    pub fn judge(&mut self, repo: &Repo, sid: &str, this_host: &[u8]) -> Life {
        let record = match read_record(repo, sid) {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.seen.remove(sid);
                return Life::Gone;
            }
            Err(_) if self.unreadable_is_dead(&repo.session_path(sid)) => return Life::Dead,
            Err(_) => return Life::Alive,
        };
        self.unreadable.remove(&repo.session_path(sid));
        if host::owner_of(&record.owner, this_host) == Owner::Dead {
            return Life::Dead;
        }
        let now = Instant::now();
        match self.seen.get(sid) {
            Some(&(beat, since)) if beat == record.beat => {
                if now.duration_since(since) >= record.timeout {
                    Life::Dead
                } else {
                    Life::Alive
                }
            }
            _ => {
                self.seen.insert(sid.to_string(), (record.beat, now));
                Life::Alive
            }
        }
    }
}

/// One readdir of the ids directory: (name, d_ino, what it is).
pub struct Listing(Vec<(OsString, u64, IdsEntry)>);

impl Listing {
    pub fn read(repo: &Repo) -> nix::Result<Listing> {
        let dir = std::fs::read_dir(&repo.ids).map_err(|e| fsops::io_errno(&e))?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| fsops::io_errno(&e))?;
            let name = entry.file_name();
            let kind = classify(&name);
            entries.push((name, entry.ino(), kind));
        }
        Ok(Listing(entries))
    }

    pub fn ids(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().filter_map(|(_, ino, e)| match e {
            IdsEntry::Id(id) => Some((*id, *ino)),
            _ => None,
        })
    }

    pub fn claims(&self) -> impl Iterator<Item = (&str, u32, u64)> + '_ {
        self.0.iter().filter_map(|(_, ino, e)| match e {
            IdsEntry::Claim(sid, n) => Some((sid.as_str(), *n, *ino)),
            _ => None,
        })
    }
}

/// The session ids that have a record or a claim.
pub fn known_sessions(repo: &Repo, listing: &Listing) -> nix::Result<HashSet<String>> {
    let mut sids: HashSet<String> = listing.claims().map(|(sid, _, _)| sid.to_string()).collect();
    for entry in std::fs::read_dir(&repo.sessions).map_err(|e| fsops::io_errno(&e))? {
        let name = entry.map_err(|e| fsops::io_errno(&e))?.file_name();
        if is_session_id(name.as_encoded_bytes()) {
            sids.insert(name.to_string_lossy().into_owned());
        }
    }
    Ok(sids)
}

/// Removes what session `sid` left: its record first (so that the session itself, if
/// it was only paused, finds out on its next operation), then every ID lock linked to
/// its claims, then the claims (last: while a claim has its name its inode number
/// cannot be reused by a new file, so matching ID locks by inode stays sound). The
/// caller holds the repository's guard, so reapers never work from each other's stale
/// listings. Stops early, leaving the rest for the next round, at `deadline`.
/// Returns whether it finished.
fn reap(repo: &Repo, sid: &str, listing: &Listing, deadline: Option<Instant>) -> nix::Result<bool> {
    fsops::unlink(&repo.session_path(sid))?;
    let mut claims = Vec::new();
    for (claim_sid, n, _) in listing.claims().filter(|(s, _, _)| *s == sid) {
        let path = repo.claim_path(claim_sid, n);
        match fsops::lstat(&path) {
            Ok(st) => claims.push((path, FileId::from(&st))),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    let inos: HashSet<u64> = claims.iter().map(|(_, f)| f.ino).collect();
    let past = || deadline.is_some_and(|d| Instant::now() >= d);
    for (id, ino) in listing.ids() {
        if inos.contains(&ino) {
            remove_if_claimed(repo, id, &claims)?;
            if past() {
                return Ok(false);
            }
        }
    }
    for (path, file) in &claims {
        // Directory entries' inode numbers differ from st_ino on a few filesystems
        // (overlayfs): a claim still linked elsewhere is then found by lstat of each ID.
        if fsops::lstat(path).is_ok_and(|st| st.st_nlink > 1 && FileId::from(&st) == *file) {
            for (id, _) in listing.ids() {
                remove_if_claimed(repo, id, &claims)?;
                if past() {
                    return Ok(false);
                }
            }
            break;
        }
    }
    for (path, _) in &claims {
        fsops::unlink(path)?;
    }
    Ok(true)
}

fn remove_if_claimed(repo: &Repo, id: u64, claims: &[(std::path::PathBuf, FileId)]) -> nix::Result<()> {
    let path = repo.id_path(id);
    let file = match fsops::id_of(&path) {
        Ok(f) => f,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if claims.iter().any(|(_, c)| *c == file) {
        idlock::release(repo, id, file)?;
    }
    Ok(())
}

/// Reaps every dead or vanished session other than this one, under the repository's
/// guard. With a `deadline` (the heartbeat) it does not wait for a busy guard and stops
/// at the deadline. Returns how many sessions were reaped completely. The observer is
/// locked only once the guard is ours: the heartbeat needs it too.
pub fn reap_dead(shared: &Shared, deadline: Option<Instant>) -> Result<usize> {
    let repo = &shared.repo;
    let sys = |e: Errno| Error::sys(e, OP_REAP, &repo.dir, "reaping dead sessions in");
    let guard = match deadline {
        Some(_) => guard_within(shared, OP_REAP, Duration::ZERO)?,
        None => guard(shared, OP_REAP)?,
    };
    let mut observer = locked(&shared.observer);
    let listing = Listing::read(repo).map_err(sys)?;
    let sessions = known_sessions(repo, &listing).map_err(sys)?;
    let mut reaped = 0;
    let mut finished = true;
    for sid in &sessions {
        if *sid == shared.sid || observer.judge(repo, sid, &shared.me.host) == Life::Alive {
            continue;
        }
        if token::pins(repo, shared.local, sid, &shared.me.host) {
            continue;
        }
        if !reap(repo, sid, &listing, deadline).map_err(sys)? {
            finished = false;
            break;
        }
        reaped += 1;
    }
    if finished {
        remove_orphans(repo, &listing, &sessions).map_err(sys)?;
        sweep_openings(repo, &mut observer);
    }
    drop(observer);
    let _ = guard.unlock();
    Ok(reaped)
}

/// Removes the `.open-` files of openers that died before linking their record.
fn sweep_openings(repo: &Repo, observer: &mut Observer) {
    let Ok(dir) = std::fs::read_dir(&repo.sessions) else { return };
    for entry in dir.map_while(std::result::Result::ok) {
        if is_opening_name(entry.file_name().as_encoded_bytes()) {
            let path = entry.path();
            if let Ok(st) = fsops::lstat(&path) {
                if fsops::is_regular(&st) && observer.unreadable_is_dead(&path) {
                    let _ = fsops::unlink_if_is(&path, FileId::from(&st));
                    observer.unreadable.remove(&path);
                }
            }
        }
    }
}

/// Removes ID locks whose claim's name is gone (an I/O error during a close or an undo
/// can leave one) and whose session has neither a record nor a claim left: nothing
/// else would ever release them. An ID lock whose inode matches a listed claim is not
/// looked at, so this reads files only in that rare case.
fn remove_orphans(repo: &Repo, listing: &Listing, sessions: &HashSet<String>) -> nix::Result<()> {
    let claimed: HashSet<u64> = listing.claims().map(|(_, _, ino)| ino).collect();
    for (id, ino) in listing.ids() {
        if claimed.contains(&ino) {
            continue;
        }
        let path = repo.id_path(id);
        let Ok(file) = fsops::id_of(&path) else { continue };
        if claimed.contains(&file.ino) {
            continue;
        }
        match idlock::holder_of(&path) {
            Ok(Some(sid)) if !sessions.contains(&sid) => {
                idlock::release(repo, id, file)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// How a reap gets the repository's guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// The caller holds it.
    Held,
    /// One attempt; nothing is done when it is busy.
    Try,
    /// Waits for it (up to the session's timeout).
    Wait,
}

/// Reaps one session judged dead, under the guard (judged again there). True when it
/// was reaped.
pub fn reap_one(shared: &Shared, sid: &str, op: &'static str, mode: GuardMode) -> Result<bool> {
    let repo = &shared.repo;
    let guard = match mode {
        GuardMode::Held => None,
        GuardMode::Try => match guard_within(shared, op, Duration::ZERO) {
            Ok(guard) => Some(guard),
            Err(e) if matches!(e.sys_errno(), Errno::EAGAIN | Errno::EIO | Errno::ESTALE | Errno::EINTR) => return Ok(false),
            Err(e) => return Err(e),
        },
        GuardMode::Wait => Some(guard(shared, op)?),
    };
    let dead = locked(&shared.observer).judge(repo, sid, &shared.me.host) != Life::Alive;
    let reaped = dead && !token::pins(repo, shared.local, sid, &shared.me.host);
    if reaped {
        let sys = |e: Errno| Error::sys(e, op, &repo.dir, "reaping a dead session in");
        let listing = Listing::read(repo).map_err(sys)?;
        reap(repo, sid, &listing, None).map_err(sys)?;
        let sessions = known_sessions(repo, &listing).map_err(sys)?;
        remove_orphans(repo, &listing, &sessions).map_err(sys)?;
    }
    if let Some(guard) = guard {
        let _ = guard.unlock();
    }
    Ok(reaped)
}
