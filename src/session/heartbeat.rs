//! The heartbeat: a thread per session that rewrites the beat in its record every
//! quarter of the timeout and reaps dead sessions, and the check every operation makes
//! first, so that a session paused past its timeout (SIGSTOP, a stalled VM) finds out
//! before it acts on locks that others may have reclaimed.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::liveness;
use super::record::{beat_bytes, BEAT_OFFSET};
use super::{locked, Beat, Ids, Shared};
use crate::error::{Error, Result};
use crate::fsops;

/// Shortest heartbeat period, whatever the timeout.
const MIN_PERIOD: Duration = Duration::from_millis(10);

fn period(timeout: Duration) -> Duration {
    (timeout / 4).max(MIN_PERIOD)
}

pub fn start(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("nfslock-session".into()).spawn(move || run(&shared))
}

pub fn stop(shared: &Shared) {
    *shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
    shared.wake.notify_all();
}

fn run(shared: &Shared) {
    let period = period(shared.timeout);
    loop {
        {
            let stopped = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stopped, _) = shared.wake.wait_timeout_while(stopped, period, |s| !*s).unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
        }
        if beat(shared, &mut locked(&shared.beat)).is_err() && locked(&shared.beat).expired.is_some() {
            return;
        }
        // Errors here are met again by the next round or the next operation.
        let _ = liveness::reap_dead(&shared.repo, &mut locked(&shared.observer), &shared.sid, &shared.me.host);
    }
}

/// Rewrites the beat (durably: on NFS, fdatasync is what sends it to the server) and
/// checks that the record is still ours. ESTALE once the session has expired.
pub fn beat(shared: &Shared, st: &mut Beat) -> std::result::Result<(), String> {
    if let Some(why) = &st.expired {
        return Err(why.clone());
    }
    let silent = st.last.elapsed();
    if silent > shared.timeout {
        // Others may have judged us dead and reaped us meanwhile: beating now would
        // resurrect a session whose locks they may have handed out.
        return Err(expire(st, format!(
            "the session was silent for {} ms, longer than its timeout of {} ms (paused or stalled); \
             other sessions may have reclaimed its locks",
            silent.as_millis(),
            shared.timeout.as_millis()
        )));
    }
    let path = shared.repo.session_path(&shared.sid);
    match fsops::id_of(&path) {
        Ok(id) if id == st.record_file => {}
        _ => return Err(expire(st, format!("its record {} was removed: another session reaped it", path.display()))),
    }
    let next = st.count + 1;
    let written = st
        .record
        .write_all_at(&beat_bytes(next), BEAT_OFFSET as u64)
        .and_then(|()| st.record.sync_data());
    if let Err(e) = written {
        // Not expired yet: the next beat may work; the timeout decides.
        return Err(format!("writing the heartbeat to {}: {e}", path.display()));
    }
    st.count = next;
    st.last = Instant::now();
    Ok(())
}

fn expire(st: &mut Beat, why: String) -> String {
    st.expired = Some(why.clone());
    why
}

/// The state, for an operation `op`: EPERM in a forked child, ESTALE once expired; beats
/// first when the last beat is a third of the timeout old.
pub fn enter<'a>(shared: &'a Shared, op: &'static str) -> Result<MutexGuard<'a, Ids>> {
    if crate::lockfile::fork_generation() != shared.generation {
        return Err(super::ops::forked(shared, op));
    }
    {
        let mut st = locked(&shared.beat);
        let stale = |why: String| Error::new(Errno::ESTALE, op, Some(&shared.repo.dir), why);
        if let Some(why) = &st.expired {
            return Err(stale(why.clone()));
        }
        if st.last.elapsed() > shared.timeout / 3 {
            if let Err(why) = beat(shared, &mut st) {
                if st.expired.is_some() {
                    return Err(stale(why));
                }
            }
        }
    }
    Ok(locked(&shared.ids))
}
