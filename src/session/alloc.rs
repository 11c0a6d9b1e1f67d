//! Allocation: the session operations on IDs: issuing new ones, locking and releasing
//! given ones, asking who holds one, and reaping on request.

use std::collections::HashSet;

use nix::errno::Errno;

use super::counter;
use super::idlock::{self, Take};
use super::lease::{enter, link_error, still_live};
use super::liveness::{self, Life};
use super::reaper::{self, GuardMode};
use super::record::show_time;
use super::state::{Ids, Shared};
use super::token::{self, Token};
use crate::error::{Error, Result};
use crate::fsops::FileId;

/// The most IDs one call may issue.
pub const MAX_IDS_PER_CALL: usize = 1 << 24;

const OP_MAKE: &str = "Session::make_new_ids";
const OP_LOCK: &str = "Session::lock_ids";
const OP_RELEASE: &str = "Session::release_ids";
const OP_HOLDER: &str = "Session::lock_holder";
const OP_REAP: &str = "Session::reap_locks";
/// How many times one allocation moves past IDs found locked above the counter (left by
/// a session that crashed between locking and advancing the counter).
const MAX_SKIPS: usize = 64;

/// Locks every ID of `start..end`, or none: Err(id) names one another session holds.
fn take_range(shared: &Shared, st: &mut Ids, start: u64, end: u64) -> nix::Result<std::result::Result<Vec<(u64, FileId)>, u64>> {
    let mut taken = Vec::with_capacity((end - start) as usize);
    for id in start..end {
        match st.claims.take(&shared.repo, &shared.sid, id) {
            Ok(Take::Ours(file)) => taken.push((id, file)),
            Ok(Take::Held) => {
                idlock::release_each(&shared.repo, &taken);
                return Ok(Err(id));
            }
            Err(e) => {
                idlock::release_each(&shared.repo, &taken);
                return Err(e);
            }
        }
    }
    Ok(Ok(taken))
}

pub fn make_new_ids(shared: &Shared, n: usize) -> Result<Vec<u64>> {
    if n == 0 || n > MAX_IDS_PER_CALL {
        return Err(Error::new(Errno::EINVAL, OP_MAKE, None, format!("n must be 1 to {MAX_IDS_PER_CALL}, not {n}")));
    }
    let mut st = enter(shared, OP_MAKE)?;
    let st = &mut *st;
    let token = token::acquire(shared, st, OP_MAKE, false)?;
    let (start, taken) = match still_live(shared, OP_MAKE).and_then(|()| lock_range(shared, st, &token, n)) {
        Ok(range) => range,
        Err(e) => {
            token::finish(shared, st, token, false);
            return Err(e);
        }
    };
    let end = start + n as u64;
    // The IDs are issued once the counter has passed them on stable storage, and only
    // by a session that still holds its lease: one paused past it may have lost its
    // locks to a reaper meanwhile.
    let committed = still_live(shared, OP_MAKE).and_then(|()| token::commit(shared, &token, end, OP_MAKE));
    let keep_token = start == token.id();
    token::finish(shared, st, token, keep_token);
    if let Err(e) = committed.and_then(|_| still_live(shared, OP_MAKE)) {
        idlock::release_each(&shared.repo, &taken);
        return Err(e);
    }
    st.learn_next(end);
    st.hold(taken.iter().copied());
    Ok((start..end).collect())
}

/// Locks `n` consecutive IDs from the token's on. Nobody else links IDs at or above the
/// counter while we hold the token (lock_ids advances the counter first), so an ID found
/// locked there was left by a session that crashed in the middle of an update: the
/// range starts again past it, and the token is then not part of it.
fn lock_range(shared: &Shared, st: &mut Ids, token: &Token, n: usize) -> Result<(u64, Vec<(u64, FileId)>)> {
    let overflow = || Error::new(Errno::EINVAL, OP_MAKE, Some(&shared.repo.counter), format!("{n} more IDs would pass 2^64"));
    let mut start = token.id();
    let mut skips = 0;
    loop {
        let end = start.checked_add(n as u64).ok_or_else(overflow)?;
        let with_token = start == token.id();
        let from = if with_token { start + 1 } else { start };
        match take_range(shared, st, from, end) {
            Ok(Ok(mut taken)) => {
                // Order does not matter to the callers (held set, undo).
                if with_token {
                    taken.push((start, token.file));
                }
                return Ok((start, taken));
            }
            Ok(Err(held)) if skips < MAX_SKIPS => {
                skips += 1;
                start = held.checked_add(1).ok_or_else(overflow)?;
            }
            Ok(Err(_)) => {
                return Err(Error::new(Errno::EAGAIN, OP_MAKE, Some(&shared.repo.ids), "too many IDs above the counter are locked"));
            }
            Err(e) => return Err(link_error(shared, OP_MAKE, e)),
        }
    }
}

pub fn lock_ids(shared: &Shared, ids: &[u64]) -> Result<Vec<u64>> {
    let mut seen = HashSet::with_capacity(ids.len());
    let ids: Vec<u64> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
    let mut st = enter(shared, OP_LOCK)?;
    let Some(&max) = ids.iter().max() else { return Ok(Vec::new()) };
    if max >= st.known_next {
        raise_counter(shared, &mut st, max)?;
    }
    let mut locked = Vec::with_capacity(ids.len());
    let mut new = Vec::new();
    for id in ids {
        if st.holds(id) {
            locked.push(id);
            continue;
        }
        let mut outcome = st.claims.take(&shared.repo, &shared.sid, id);
        if outcome == Ok(Take::Held) && holder_is_dead(shared, id) {
            outcome = st.claims.take(&shared.repo, &shared.sid, id);
        }
        match outcome {
            Ok(Take::Ours(file)) => {
                new.push((id, file));
                locked.push(id);
            }
            Ok(Take::Held) => {}
            Err(e) => {
                idlock::release_each(&shared.repo, &new);
                return Err(link_error(shared, OP_LOCK, e));
            }
        }
    }
    // A session paused in the middle past its lease may have been reaped meanwhile:
    // what it linked after that is not reported as locked.
    if let Err(e) = still_live(shared, OP_LOCK) {
        idlock::release_each(&shared.repo, &new);
        return Err(e);
    }
    st.hold(new);
    Ok(locked)
}

/// Moves the counter past `max` (with its token) so that no later allocation issues an
/// ID this call is about to lock.
fn raise_counter(shared: &Shared, st: &mut Ids, max: u64) -> Result<()> {
    let end = max.checked_add(1).ok_or_else(|| Error::new(Errno::EINVAL, OP_LOCK, None, "IDs go up to 2^64 - 2"))?;
    // Usually the counter is past them already (a fresh session knows nothing of it).
    // On a local filesystem the value read may not be synced yet (its writer may have
    // died before its fdatasync): it is relied on, so it is synced.
    let (cf, counter) = token::read_counter(shared, st, OP_LOCK)?;
    if counter.next >= end {
        if shared.local {
            counter::sync(&cf).map_err(|e| Error::sys(e, OP_LOCK, &shared.repo.counter, "fdatasync"))?;
        }
        st.learn_next(counter.next);
        return Ok(());
    }
    let token = token::acquire(shared, st, OP_LOCK, false)?;
    let committed = still_live(shared, OP_LOCK).and_then(|()| token::commit(shared, &token, end, OP_LOCK));
    token::finish(shared, st, token, false);
    let next = committed?;
    still_live(shared, OP_LOCK)?;
    st.learn_next(next);
    Ok(())
}

/// Whether the session holding `id` is dead (then its records are reaped at once).
fn holder_is_dead(shared: &Shared, id: u64) -> bool {
    let holder = match idlock::holder_of(&shared.repo.id_path(id)) {
        Ok(Some(sid)) if sid != shared.sid => sid,
        // Released meanwhile: try again.
        Ok(None) => return true,
        _ => return false,
    };
    if shared.judge(&holder) == Life::Alive {
        return false;
    }
    reaper::reap_one(shared, &holder, OP_LOCK, GuardMode::Wait).unwrap_or(false)
}

pub fn release_ids(shared: &Shared, ids: &[u64]) -> Result<Vec<u64>> {
    let mut st = enter(shared, OP_RELEASE)?;
    let mut released = Vec::new();
    for &id in ids {
        let Some(file) = st.unhold(id) else { continue };
        match idlock::release(&shared.repo, id, file) {
            Ok(true) => released.push(id),
            // Someone removed it (a reaper that judged us dead): no longer ours.
            Ok(false) => {}
            Err(e) => {
                st.hold([(id, file)]);
                return Err(shared.sys(OP_RELEASE, e, "releasing an ID in"));
            }
        }
    }
    Ok(released)
}

pub fn lock_holder(shared: &Shared, id: u64) -> Result<String> {
    let _st = enter(shared, OP_HOLDER)?;
    let path = shared.repo.id_path(id);
    let free = |why: String| Error::new(Errno::ENOENT, OP_HOLDER, Some(&path), why);
    let sid = match idlock::holder_of(&path) {
        Ok(Some(sid)) => sid,
        Ok(None) => return Err(free(format!("no session holds ID {id}"))),
        Err(e) => return Err(Error::sys(e, OP_HOLDER, &path, "reading")),
    };
    match liveness::read_record(&shared.repo, &sid) {
        Ok(Some(r)) => Ok(format!("{} (pid {}) since {}", String::from_utf8_lossy(&r.owner.host), r.owner.pid, show_time(r.since))),
        Ok(None) => Err(free(format!("ID {id} is held by session {sid}, which has ended (its lock awaits reaping)"))),
        Err(why) => Err(Error::new(Errno::EBADMSG, OP_HOLDER, Some(&shared.repo.session_path(&sid)), why)),
    }
}

pub fn reap_locks(shared: &Shared) -> Result<usize> {
    let _ids = enter(shared, OP_REAP)?;
    reaper::reap_dead(shared, OP_REAP, None)
}
