//! The session's lease on its own locks, and the beat that renews it.
//!
//! The heartbeat thread (heartbeat.rs) rewrites the beat in the session's record every
//! quarter of the timeout; an operation beats too when the last beat is that old.
//! Others call the session dead once they have seen its beat unchanged for the whole
//! timeout, on their own clocks; the session itself stops acting (ESTALE) once it has been silent for half of it, measured
//! on CLOCK_BOOTTIME, which keeps counting through a suspend. That margin covers the
//! time a beat takes to write and clocks that run at slightly different rates. Every
//! operation checks the lease first and again after any wait, so a session that was
//! paused (SIGSTOP, a stalled or suspended VM) finds out before it acts on locks others
//! may have reclaimed.

use std::os::unix::fs::FileExt;
use std::sync::MutexGuard;
use std::time::Duration;

use nix::errno::Errno;
use nix::time::{clock_gettime, ClockId};

use super::record::{beat_bytes, BEAT_OFFSET};
use super::state::{locked, Beat, Ids, Shared};
use crate::error::{Error, Result};
use crate::fsops;

/// The shortest timeout a session may have: it heartbeats every quarter of it and stops
/// acting after half of it without a beat, so a shorter one leaves no time for a beat's
/// write and fdatasync (a shorter one is EINVAL, not silently raised).
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);

/// The heartbeat period: a quarter of the timeout (at least 25 ms: the timeout is at
/// least [`MIN_TIMEOUT`], so the period and the lease stay in proportion).
pub fn period(timeout: Duration) -> Duration {
    timeout / 4
}

/// How long the session may be silent before it stops acting on its locks.
fn lease(timeout: Duration) -> Duration {
    timeout / 2
}

/// Time since boot, suspends included.
pub fn boottime() -> Duration {
    clock_gettime(ClockId::CLOCK_BOOTTIME).map(Duration::from).unwrap_or_default()
}

/// Rewrites the beat (durably: on NFS, fdatasync is what sends it to the server) and
/// checks, before and after, that the record is still ours.
pub fn beat(shared: &Shared, st: &mut Beat) -> std::result::Result<(), String> {
    check_lease(shared, st)?;
    // The lease runs from before the checks: a stall between them and the write must
    // not count as time the session was known to be alive.
    let started = boottime();
    let path = shared.repo.session_path(&shared.sid);
    let ours = |st: &Beat| fsops::id_of(&path).is_ok_and(|id| id == st.record_file);
    if !ours(st) {
        return Err(expire(st, format!("its record {} was removed: another session reaped it", path.display())));
    }
    let next = st.count + 1;
    let written = st.record.write_all_at(&beat_bytes(next), BEAT_OFFSET as u64).and_then(|()| st.record.sync_data());
    match written {
        Ok(()) => {}
        // On NFS a handle turns stale when another client removed the file.
        Err(e) if fsops::vanished(fsops::io_errno(&e)) => {
            return Err(expire(st, format!("its record {} is gone: another session reaped it", path.display())));
        }
        // Not expired yet: the next beat may work; the lease decides.
        Err(e) => return Err(format!("writing the heartbeat to {}: {e}", path.display())),
    }
    if !ours(st) {
        return Err(expire(st, format!("its record {} was removed while it beat: another session reaped it", path.display())));
    }
    st.count = next;
    st.last = started;
    Ok(())
}

/// ESTALE-worthy when the session expired or was silent past its lease.
fn check_lease(shared: &Shared, st: &mut Beat) -> std::result::Result<(), String> {
    if let Some(why) = &st.expired {
        return Err(why.clone());
    }
    let silent = boottime().saturating_sub(st.last);
    if silent > lease(shared.timeout) {
        // Others may be about to judge us dead, or have: beating now would resurrect
        // a session whose locks they may have handed out.
        return Err(expire(
            st,
            format!(
                "the session was silent for {} ms, past its lease of {} ms (timeout {} ms): paused or stalled; \
             other sessions may have reclaimed its locks",
                silent.as_millis(),
                lease(shared.timeout).as_millis(),
                shared.timeout.as_millis()
            ),
        ));
    }
    Ok(())
}

pub fn expire(st: &mut Beat, why: String) -> String {
    st.expired = Some(why.clone());
    why
}

/// ESTALE for `op` once the session expired or was silent past its lease. Cheap (no
/// system call): for the checks after a wait.
pub fn still_live(shared: &Shared, op: &'static str) -> Result<()> {
    check_lease(shared, &mut locked(&shared.beat)).map_err(|why| Error::new(Errno::ESTALE, op, Some(&shared.repo.dir), why))
}

/// The session's IDs, for an operation `op`: EPERM in a forked child, ESTALE once
/// expired; beats first when the last beat is a quarter of the timeout old.
pub fn enter<'a>(shared: &'a Shared, op: &'static str) -> Result<MutexGuard<'a, Ids>> {
    if shared.in_forked_child() {
        return Err(shared.forked(op));
    }
    {
        let mut st = locked(&shared.beat);
        let stale = |why: String| Error::new(Errno::ESTALE, op, Some(&shared.repo.dir), why);
        check_lease(shared, &mut st).map_err(stale)?;
        if boottime().saturating_sub(st.last) > period(shared.timeout) {
            if let Err(why) = beat(shared, &mut st) {
                if st.expired.is_some() {
                    return Err(stale(why));
                }
            }
        }
    }
    Ok(locked(&shared.ids))
}

/// The error for a failed link of an ID lock. ENOENT: our claim's name is gone, which
/// only a reaper does: the session was judged dead, and has expired (ESTALE).
pub fn link_error(shared: &Shared, op: &'static str, e: Errno) -> Error {
    if e == Errno::ENOENT {
        let why = expire(&mut locked(&shared.beat), "its claim file was removed: another session reaped it".into());
        return Error::new(Errno::ESTALE, op, Some(&shared.repo.ids), why);
    }
    shared.sys(op, e, "locking an ID in")
}
