//! The counter's token: the right to write the ID counter.
//!
//! A session that is about to write the counter first locks the ID the counter names
//! (its next ID, C) with an ordinary ID lock, then reads the counter again. If it still
//! says C, this session is the only one that may write it until it does: every writer
//! needs the lock on C, and the counter cannot move without a writer. A reader that
//! raced with a writer (C issued and already released between the read and the link)
//! sees the counter moved, drops the lock and starts again. For make_new_ids the token
//! is also the first issued ID's lock, so issuing one ID costs one link(2), two
//! preads, a pwrite and an fdatasync, with no separate guard to take and release.
//!
//! A token is never taken from a holder whose process may still run: it could be paused
//! between its check and its write, and a write it makes after waking would move the
//! counter back. Waiters take it over only when the holder's process is gone from this
//! host or its session has no record (it can then never pass its lease check, so it
//! never writes). Reapers leave a session that holds the token alone until then.
//!
//! On NFS the writer also holds the repository's guard from before it takes the token
//! until its write is synced: a write that reached the server but not its disk must not
//! be read and built upon by another client, because a server reboot followed by the
//! client's retransmission could then move the counter back. On a local filesystem all
//! writers share one page cache and die together, so the token alone suffices and the
//! fdatasyncs of concurrent sessions overlap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::counter::{self, Counter, CounterFile};
use super::layout::Repo;
use super::liveness;
use super::ops::{counter_error, read_counter, take, take_error};
use super::{idlock, locked, Ids, Shared};
use crate::error::{Error, Result};
use crate::fsops::FileId;
use crate::host::{self, Owner};

/// Re-reads without sleeping before a waiter starts sleeping: a live holder writes the
/// counter within microseconds of taking the token.
const QUICK_LOOKS: u32 = 32;
const FIRST_SLEEP: Duration = Duration::from_micros(50);
const MAX_SLEEP_LOCAL: Duration = Duration::from_millis(5);
const MAX_SLEEP_REMOTE: Duration = Duration::from_millis(100);

/// The right to write the counter, held by this session until released.
pub struct Token {
    pub cf: Arc<CounterFile>,
    /// The counter as read under the token; its next ID is the token's ID.
    pub counter: Counter,
    /// The claim the token's ID lock is linked to.
    pub file: FileId,
}

impl Token {
    pub fn id(&self) -> u64 {
        self.counter.next
    }
}

/// Takes the token, waiting up to the session's timeout (at least a second) for a live
/// holder and taking it over from a dead one. `guarded`: the caller holds the
/// repository's guard (reaping a dead holder then needs no second take of it).
pub fn acquire(shared: &Shared, st: &mut Ids, op: &'static str, guarded: bool) -> Result<Token> {
    let wait = shared.timeout.max(Duration::from_secs(1));
    let max_sleep = if shared.local { MAX_SLEEP_LOCAL } else { MAX_SLEEP_REMOTE };
    let start = Instant::now();
    let mut looks = 0u32;
    let mut sleep = FIRST_SLEEP;
    loop {
        let (cf, c) = read_counter(shared, st, op)?;
        match take(shared, st, c.next) {
            Ok(Some(file)) => match counter::read(&cf) {
                Ok(now) if now == c => return Ok(Token { cf, counter: c, file }),
                // Moved on between the read and the link: that ID may be issued.
                Ok(_) => {
                    let _ = idlock::release(&shared.repo, c.next, file);
                    continue;
                }
                Err(e) => {
                    let _ = idlock::release(&shared.repo, c.next, file);
                    return Err(counter_error(shared, op, e));
                }
            },
            Ok(None) => {}
            Err(e) => return Err(take_error(shared, op, e)),
        }
        // Another writer holds it: watch the counter (reads only: a failed link costs a
        // journal entry) until it moves, and take the token over if the holder died.
        // Off local filesystems the counter is opened afresh after every sleep, in case
        // the file could not be opened with O_DIRECT and its reads come from a cache.
        loop {
            match counter::read(&cf) {
                Ok(now) if now != c => break,
                Ok(_) => {}
                // Replaced (a repair) or unreadable: start again from the name.
                Err(_) => break,
            }
            if start.elapsed() >= wait {
                return Err(busy(shared, op, c.next, wait));
            }
            looks += 1;
            if looks <= QUICK_LOOKS {
                std::thread::yield_now();
                continue;
            }
            if (looks - QUICK_LOOKS) % 4 == 1 && take_over(shared, c.next, op, guarded)? {
                break;
            }
            std::thread::sleep(sleep.min(wait.saturating_sub(start.elapsed())));
            sleep = (sleep * 2).min(max_sleep);
            if !shared.local {
                break;
            }
        }
    }
}

/// Drops the token's ID lock (when the token is not also an issued ID).
pub fn release(shared: &Shared, token: &Token) {
    let _ = idlock::release(&shared.repo, token.id(), token.file);
}

/// Writes `next` to the counter if it is ahead of it, and syncs (also a value only read:
/// on a local filesystem its writer may not have synced it yet). Returns the counter's
/// next ID.
pub fn commit(shared: &Shared, token: &Token, next: u64, op: &'static str) -> Result<u64> {
    let sys = |e: Errno, call: &str| Error::sys(e, op, &shared.repo.counter, call);
    if next > token.counter.next {
        counter::write(&token.cf, &token.counter, next).map_err(|e| sys(e, "writing"))?;
    }
    counter::sync(&token.cf).map_err(|e| sys(e, "fdatasync"))?;
    Ok(next.max(token.counter.next))
}

/// Whether session `sid` may be holding the token for a write it has not made yet: it
/// holds the lock on the counter's next ID and its process is not known to be gone.
/// Reapers leave such a session alone (see the module comment).
pub fn pins(repo: &Repo, local: bool, sid: &str, this_host: &[u8]) -> bool {
    let Ok((_, c)) = counter::load(&repo.counter, local) else { return false };
    match idlock::holder_of(&repo.id_path(c.next)) {
        Ok(Some(holder)) if holder == sid => !may_take_over(repo, sid, this_host),
        _ => false,
    }
}

/// Whether a token held by `sid` may be taken: its process is gone from this host, or
/// the session has no record (reaped or closed: it cannot pass its lease check again).
fn may_take_over(repo: &Repo, sid: &str, this_host: &[u8]) -> bool {
    match liveness::read_record(repo, sid) {
        Ok(Some(r)) => host::owner_of(&r.owner, this_host) == Owner::Dead,
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Reaps the holder of the lock on `id` if it may be taken over; true when it was.
fn take_over(shared: &Shared, id: u64, op: &'static str, guarded: bool) -> Result<bool> {
    let Ok(Some(sid)) = idlock::holder_of(&shared.repo.id_path(id)) else { return Ok(false) };
    if sid == shared.sid || !may_take_over(&shared.repo, &sid, &shared.me.host) {
        return Ok(false);
    }
    liveness::reap_one(shared, &mut locked(&shared.observer), &sid, op, guarded)?;
    Ok(true)
}

fn busy(shared: &Shared, op: &'static str, id: u64, wait: Duration) -> Error {
    let path = shared.repo.id_path(id);
    let holder = match idlock::holder_of(&path) {
        Ok(Some(sid)) => format!("session {sid}"),
        _ => "an unreadable file".into(),
    };
    Error::new(
        Errno::ETIMEDOUT,
        op,
        Some(&path),
        format!(
            "gave up after {} ms waiting for the counter's token, the lock on ID {id}, held by {holder} \
             (a writer paused or stopped on this host, or one on another host that crashed)",
            wait.as_millis()
        ),
    )
}

