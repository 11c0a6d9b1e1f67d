//! Reaping: removing what dead sessions left (their record, the ID locks linked to
//! their claims, the claims), ID locks nobody can release any more, and the `.open-`
//! files of openers that died. Always under the repository's guard (guard.rs), so
//! reapers never work from each other's stale listings.
//!
//! A dead session that may hold the counter's token for a write it has not made yet is
//! left alone (token.rs explains why): [`pins`] and [`may_take_over`] are the token's
//! rule as the reaper applies it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::counter;
use super::guard;
use super::idlock;
use super::layout::{is_opening_name, Repo};
use super::liveness::{self, known_sessions, Life, Listing, Observer};
use super::state::{locked, Shared};
use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::host::{self, Owner};

const GUARD_WHY: &str = "reaping or checking";

/// Takes the repository's guard for a session's operation `op`, waiting up to the
/// session's patience.
pub fn take_guard(shared: &Shared, op: &'static str) -> Result<crate::lockfile::Lock> {
    guard::take(&shared.repo, op, GUARD_WHY, shared.patience())
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

fn remove_if_claimed(repo: &Repo, id: u64, claims: &[(PathBuf, FileId)]) -> nix::Result<()> {
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
pub fn reap_dead(shared: &Shared, op: &'static str, deadline: Option<Instant>) -> Result<usize> {
    let repo = &shared.repo;
    let sys = |e: Errno| Error::sys(e, op, &repo.dir, "reaping dead sessions in");
    let guard = match deadline {
        Some(_) => guard::take(repo, op, GUARD_WHY, Duration::ZERO)?,
        None => take_guard(shared, op)?,
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
        if pins(repo, shared.local, sid, &shared.me.host) {
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
                    observer.forget_unreadable(&path);
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
        GuardMode::Try => match guard::take(repo, op, GUARD_WHY, Duration::ZERO) {
            Ok(guard) => Some(guard),
            // Busy, or a transient error: the caller tries again later.
            Err(e) if e.sys_errno() == Errno::EAGAIN || fsops::is_transient(e.sys_errno()) => return Ok(false),
            Err(e) => return Err(e),
        },
        GuardMode::Wait => Some(take_guard(shared, op)?),
    };
    let dead = shared.judge(sid) != Life::Alive;
    let reaped = dead && !pins(repo, shared.local, sid, &shared.me.host);
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

/// Whether session `sid` may be holding the counter's token for a write it has not made
/// yet: it holds the lock on the counter's next ID and its process is not known to be
/// gone. Reapers leave such a session alone (see token.rs). When in doubt (an error),
/// it may.
pub fn pins(repo: &Repo, local: bool, sid: &str, this_host: &[u8]) -> bool {
    let c = match counter::load(repo, local) {
        Ok((_, c)) => c,
        // No writer can take a token on a missing or corrupt counter.
        Err(counter::ReadError::Missing | counter::ReadError::Corrupt(_)) => return false,
        Err(counter::ReadError::Sys(..)) => return true,
    };
    match idlock::holder_of(&repo.id_path(c.next)) {
        Ok(Some(holder)) if holder == sid => !may_take_over(repo, sid, this_host),
        Ok(_) => false,
        Err(_) => true,
    }
}

/// Whether a token held by `sid` may be taken: its process is gone from this host, or
/// the session has no record (reaped or closed: it cannot pass its lease check again).
pub fn may_take_over(repo: &Repo, sid: &str, this_host: &[u8]) -> bool {
    match liveness::read_record(repo, sid) {
        Ok(Some(r)) => host::owner_of(&r.owner, this_host) == Owner::Dead,
        Ok(None) => true,
        Err(_) => false,
    }
}
