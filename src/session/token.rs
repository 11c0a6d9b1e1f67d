//! The counter's token: the right to write the ID counter.
//!
//! A session that is about to write the counter first locks the ID the counter names
//! (its next ID, C) with an ordinary ID lock, then reads the counter again. If it still
//! says C, this session is the only one that may write it until it does: every writer
//! needs the lock on C, and the counter cannot move without a writer. A reader that
//! raced with a writer (C issued and already released between the read and the link)
//! sees the counter moved, drops the lock and starts again. For make_new_ids the token
//! is also the first issued ID's lock, so issuing one ID costs one link(2), two
//! preads, two lstats (the counter's name, the writer lock below), a pwrite and an
//! fdatasync, with no lock file to take and release.
//!
//! A token is never taken from a holder whose process may still run: it could be paused
//! between its check and its write, and a write it makes after waking would move the
//! counter back. Waiters take it over only when the holder's process is gone from this
//! host or its session has no record (it can then never pass its lease check, so it
//! never writes). Reapers leave a session that holds the token alone until then.
//!
//! Off local filesystems (NFS) a writer also holds the repository's writer lock, a lock
//! file, from before it takes the token until its write is synced: a write that reached
//! the server but not its disk must not be built upon, because after a server reboot
//! (or a lost reply the server does not remember) the client sends it again, and it
//! would then overwrite a newer slot and move the counter back. A writer on a local
//! filesystem shares one page cache with every other local writer (they die together)
//! and needs no such lock, so the fdatasyncs of concurrent sessions overlap; but the
//! directory may be exported, so after taking the token it checks that no remote writer
//! holds the writer lock, and if one does it lines up behind it like a remote writer.
//!
//! Waiting inside a take never waits for the guard (reapers, check, repair hold it and
//! may wait for the writer lock): a dead holder is reaped here only when the guard is
//! free or already ours.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::counter::{self, Counter, CounterFile};
use super::idlock::{self, Take};
use super::lease::link_error;
use super::reaper::{self, GuardMode};
use super::state::{Ids, Shared};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::lockfile::{self, Lock};

/// Re-reads without sleeping before a waiter starts sleeping: a live holder writes the
/// counter within microseconds of taking the token.
const QUICK_LOOKS: u32 = 32;
const FIRST_SLEEP: Duration = Duration::from_micros(50);
const MAX_SLEEP_LOCAL: Duration = Duration::from_millis(5);
const MAX_SLEEP_REMOTE: Duration = Duration::from_millis(100);

/// The right to write the counter, held by this session until [`finish`]ed.
pub struct Token {
    pub cf: Arc<CounterFile>,
    /// The counter as read under the token; its next ID is the token's ID.
    pub counter: Counter,
    /// The claim the token's ID lock is linked to.
    pub file: FileId,
    /// The writer lock, where this writer holds it (see the module comment).
    writer: Option<Lock>,
}

impl Token {
    pub fn id(&self) -> u64 {
        self.counter.next
    }
}

/// Takes the token (and the writer lock where needed), waiting up to the session's
/// timeout (at least a second) for a live holder and taking it over from a dead one.
/// `guarded`: the caller holds the repository's guard.
pub fn acquire(shared: &Shared, st: &mut Ids, op: &'static str, guarded: bool) -> Result<Token> {
    if !shared.local {
        let writer = writer_lock(shared, op)?;
        return take_token(shared, st, op, guarded).map(|t| Token { writer: Some(writer), ..t });
    }
    let token = take_token(shared, st, op, guarded)?;
    match fsops::lstat(&shared.repo.writer_held) {
        Err(nix::errno::Errno::ENOENT) => Ok(token),
        // A remote writer holds the writer lock (or we cannot tell): let go and line up
        // behind it. Never wait for the lock with the token held: its holder may be
        // waiting for the token.
        _ => {
            finish(shared, st, token, false);
            let writer = writer_lock(shared, op)?;
            take_token(shared, st, op, guarded).map(|t| Token { writer: Some(writer), ..t })
        }
    }
}

/// The token for `check` and `repair_counter`, which hold the guard: None when the
/// counter is missing or corrupt (nobody can hold its token then; the caller deals
/// with the counter itself).
pub fn acquire_if_readable(shared: &Shared, st: &mut Ids, op: &'static str) -> Result<Option<Token>> {
    match acquire(shared, st, op, true) {
        Ok(token) => Ok(Some(token)),
        Err(e) if matches!(e.sys_errno(), Errno::ENOENT | Errno::EBADMSG) => Ok(None),
        Err(e) => Err(e),
    }
}

fn writer_lock(shared: &Shared, op: &'static str) -> Result<Lock> {
    let wait = shared.patience();
    lockfile::blocking_create_internal(&shared.repo.writer, b"nfslock session: counter update", Some(wait)).map_err(|e| e.in_op(op))
}

/// The token, waiting for a live holder and taking it over from a dead one.
fn take_token(shared: &Shared, st: &mut Ids, op: &'static str, guarded: bool) -> Result<Token> {
    retry_stale_tokens(shared, st);
    let wait = shared.patience();
    let max_sleep = if shared.local { MAX_SLEEP_LOCAL } else { MAX_SLEEP_REMOTE };
    let start = Instant::now();
    let mut looks = 0u32;
    let mut backoff = Backoff::exact(FIRST_SLEEP, max_sleep);
    let (mut cf, mut c) = read_counter(shared, st, op)?;
    'attempt: loop {
        match st.claims.take(&shared.repo, &shared.sid, c.next) {
            Ok(Take::Ours(file)) => match counter::read(&cf) {
                Ok(now) if now == c => return Ok(Token { cf, counter: c, file, writer: None }),
                // Moved on between the read and the link: that ID may be issued.
                Ok(now) => {
                    drop_lock(shared, st, c.next, file);
                    c = now;
                    continue;
                }
                Err(e) => {
                    drop_lock(shared, st, c.next, file);
                    return Err(e.error(op, &shared.repo.counter));
                }
            },
            Ok(Take::Held) => {}
            Err(e) => {
                // The link may have been made (an error reported after it worked).
                if let Some(claim) = st.claims.last() {
                    st.keep_stale_token(c.next, claim.file);
                }
                return Err(link_error(shared, op, e));
            }
        }
        // Another writer holds it: watch the counter (reads only) until it moves, and
        // take the token over if the holder died.
        // The counter is opened afresh (by its name) after an error or a take-over, and
        // off local filesystems after every sleep, in case the file could not be opened
        // with O_DIRECT and its reads come from a cache.
        loop {
            match counter::read(&cf) {
                Ok(now) if now != c => {
                    c = now;
                    continue 'attempt;
                }
                Ok(_) => {}
                Err(_) => {
                    (cf, c) = read_counter(shared, st, op)?;
                    continue 'attempt;
                }
            }
            if start.elapsed() >= wait {
                return Err(busy(shared, op, c.next, wait));
            }
            looks += 1;
            if looks <= QUICK_LOOKS {
                std::thread::yield_now();
                continue;
            }
            if (looks - QUICK_LOOKS) % 4 == 1 && take_over(shared, st, c.next, op, guarded)? {
                (cf, c) = read_counter(shared, st, op)?;
                continue 'attempt;
            }
            backoff.sleep_at_most(wait.saturating_sub(start.elapsed()));
            if !shared.local {
                (cf, c) = read_counter(shared, st, op)?;
            }
            // Link again after every sleep: a holder may let the token go without writing
            // (it met the writer lock, an error, or its lease ran out).
            continue 'attempt;
        }
    }
}

/// Ends a counter update: drops the token's ID lock unless it is one of the IDs issued
/// (`keep_id`), then the writer lock. A writer lock someone else broke meanwhile changes
/// nothing written, so its release error is not the caller's failure.
pub fn finish(shared: &Shared, st: &mut Ids, token: Token, keep_id: bool) {
    if !keep_id {
        drop_lock(shared, st, token.id(), token.file);
    }
    if let Some(writer) = token.writer {
        let _ = writer.unlock();
    }
}

/// Removes our lock on `id`; one that cannot be removed now is kept for the next try:
/// while the counter names it, it holds up every writer.
fn drop_lock(shared: &Shared, st: &mut Ids, id: u64, file: FileId) {
    if idlock::release(&shared.repo, id, file).is_err() {
        st.keep_stale_token(id, file);
    }
}

/// Tries again to remove the token locks earlier removals failed on.
pub fn retry_stale_tokens(shared: &Shared, st: &mut Ids) {
    st.stale_tokens.retain(|&(id, file)| idlock::release(&shared.repo, id, file).is_err());
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

/// Clears the lock on `id` if its holder may be taken over from (reaping it), or if it
/// is a leftover of this very session (a claim it has since moved on from); true when
/// something was done.
fn take_over(shared: &Shared, st: &mut Ids, id: u64, op: &'static str, guarded: bool) -> Result<bool> {
    let Ok(Some(sid)) = idlock::holder_of(&shared.repo.id_path(id)) else { return Ok(false) };
    if sid == shared.sid {
        let path = shared.repo.id_path(id);
        return Ok(st.claims.files().into_iter().any(|f| fsops::unlink_if_is(&path, f) == Ok(true)));
    }
    if !reaper::may_take_over(&shared.repo, &sid, &shared.me.host) {
        return Ok(false);
    }
    let mode = if guarded { GuardMode::Held } else { GuardMode::Try };
    reaper::reap_one(shared, &sid, op, mode)
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

/// Reads the counter through the session's cache (see `counter::Cache`).
pub fn read_counter(shared: &Shared, st: &mut Ids, op: &'static str) -> Result<(Arc<CounterFile>, Counter)> {
    st.counter.read(&shared.repo, shared.local, op)
}
