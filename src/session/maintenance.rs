//! Creating a repository, checking and repairing it, and closing a session.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use super::counter;
use super::files;
use super::guard;
use super::idlock;
use super::layout::{is_opening_name, is_session_id, Repo};
use super::lease::{enter, still_live};
use super::liveness::{self, Listing};
use super::reaper::take_guard;
use super::state::{locked, Shared};
use super::token::{self, Token};
use crate::error::{Error, Result};
use crate::fsops::{self, FileId};

const OP_CHECK: &str = "Session::check";
const OP_REPAIR: &str = "Session::repair_counter";
/// How many findings `check` spells out in its message.
const FINDINGS_SHOWN: usize = 5;

/// mkdir(2), 0755, retried on transient errors; an existing directory is fine.
fn mkdir(path: &Path, recursive: bool) -> std::io::Result<()> {
    let made = fsops::retry(|| match std::fs::DirBuilder::new().recursive(recursive).mode(0o755).create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map_err(|e| fsops::io_errno(&e)),
    });
    made.map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

/// Checks a directory the session layer works in: the name itself is a directory, not
/// a symlink (ELOOP: never followed) nor anything else (ENOTDIR). The repository
/// directory may be writable by others only with the sticky bit (as /tmp is), so that
/// nobody else can rename `NAME.ids` or `NAME.sessions` away and put their own in
/// place; those two must belong to this process's user, to root or to the repository
/// directory's owner, and be writable by no one else (EPERM): an attacker's directory
/// there would take this session's claims, ID locks and record. Returns the owner.
fn verify_dir(op: &'static str, path: &Path, inside: Option<u32>) -> Result<u32> {
    let bad = |e: Errno, why: String| Err(Error::new(e, op, Some(path), why));
    let st = fsops::lstat(path).map_err(|e| Error::sys(e, op, path, "lstat"))?;
    if fsops::is_symlink(&st) {
        return bad(Errno::ELOOP, "a symlink where a repository directory should be: it is never followed".into());
    }
    if !fsops::is_dir(path) {
        return bad(Errno::ENOTDIR, "not a directory".into());
    }
    let mode = st.st_mode & 0o7777;
    match inside {
        None if mode & 0o002 != 0 && mode & 0o1000 == 0 => bad(
            Errno::EPERM,
            format!("writable by anyone without the sticky bit (mode {mode:04o}): others could replace its session directories"),
        ),
        None => Ok(st.st_uid),
        Some(dir_owner) => {
            let me = nix::unistd::geteuid().as_raw();
            if ![me, 0, dir_owner].contains(&st.st_uid) {
                return bad(Errno::EPERM, format!("owned by uid {}, not by this user ({me}), root or the repository's owner", st.st_uid));
            }
            if mode & 0o002 != 0 {
                return bad(Errno::EPERM, format!("writable by anyone (mode {mode:04o})"));
            }
            Ok(st.st_uid)
        }
    }
}

/// Whether a session directory exists (verified, see [`verify_dir`]).
fn present(op: &'static str, path: &Path, dir_owner: u32) -> Result<bool> {
    match fsops::lstat(path) {
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(Error::sys(e, op, path, "lstat")),
        Ok(_) => verify_dir(op, path, Some(dir_owner)).map(|_| true),
    }
}

/// Creates the directory and, for a new repository, the counter (at 0) and the
/// session and ID directories. The counter is made first: an ID directory without a
/// counter is a repository whose counter was lost, which must not restart from 0.
/// Every directory is verified before anything is made in it ([`verify_dir`]); the
/// repository directory's owner is noted in `repo` (whose counter is trusted).
pub fn prepare_repository(repo: &mut Repo, timeout: Duration, op: &'static str) -> Result<()> {
    let io = |e: std::io::Error, what: &str, path: &Path| Error::sys(fsops::io_errno(&e), op, path, what);
    mkdir(&repo.dir, true).map_err(|e| io(e, "creating the directory", &repo.dir))?;
    let owner = verify_dir(op, &repo.dir, None)?;
    repo.owner = Some(owner);
    if present(op, &repo.ids, owner)? && present(op, &repo.sessions, owner)? {
        return Ok(());
    }
    let guard = guard::take(repo, op, "creating the repository", timeout)?;
    if !present(op, &repo.ids, owner)? {
        write_counter(repo, 0, false, op)?;
        mkdir(&repo.ids, false).map_err(|e| io(e, "creating", &repo.ids))?;
    }
    verify_dir(op, &repo.ids, Some(owner))?;
    mkdir(&repo.sessions, false).map_err(|e| io(e, "creating", &repo.sessions))?;
    verify_dir(op, &repo.sessions, Some(owner))?;
    fsops::sync_dir(&repo.dir).map_err(|e| Error::sys(e, op, &repo.dir, "fsync"))?;
    let _ = guard.unlock();
    Ok(())
}

/// How many temporary names one counter write draws before it gives up (EAGAIN).
const COUNTER_TEMP_TRIES: usize = 16;

/// Writes a counter file holding `next`: created only if missing, or (`replace`) put in
/// place of whatever is there, atomically, by rename. The caller holds the guard.
///
/// Created only if missing: a counter found at the name is kept only if it is one the
/// repository could have made (see `counter::open`: an earlier creator that died
/// before making the ID directory); anything else (a file planted by another user, a
/// hard link of someone's file) is refused (EBADMSG), never adopted.
fn write_counter(repo: &Repo, next: u64, replace: bool, op: &'static str) -> Result<()> {
    let sys = |e: Errno, call: &str| Error::sys(e, op, &repo.counter, call);
    remove_our_counter_temps(repo);
    let (tmp, made) = draw_counter_temp(repo, next).map_err(|e| match e {
        Errno::EEXIST => Error::new(
            Errno::EAGAIN,
            op,
            Some(&repo.dir),
            format!("{COUNTER_TEMP_TRIES} fresh temporary names for the counter in a row were taken (someone is planting files there)"),
        ),
        e => sys(e, "creating a temporary file for"),
    })?;
    let placed = if replace {
        fsops::rename_placing(&made.file, &tmp, &repo.counter).map_err(|e| sys(e, "renaming into place"))
    } else {
        match files::link_checked(&tmp, &repo.counter, made.id()) {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Our own temporary name is a second link of ours, gone first.
                let _ = fsops::unlink(&tmp);
                adopt_existing_counter(repo, op)
            }
            Err(e) => Err(sys(e, "linking into place")),
        }
    };
    let _ = fsops::unlink(&tmp);
    placed?;
    fsops::sync_dir(&repo.dir).map_err(|e| Error::sys(e, op, &repo.dir, "fsync"))
}

/// A counter found where a new repository's would go: kept if the repository could
/// have made it, else refused.
fn adopt_existing_counter(repo: &Repo, op: &'static str) -> Result<()> {
    match counter::open(repo, true) {
        Ok(_) => Ok(()),
        Err(counter::ReadError::Corrupt(why)) => Err(Error::new(
            Errno::EBADMSG,
            op,
            Some(&repo.counter),
            format!("a file is in the way of the new repository's counter and is not one it could have made ({why}); it is left alone: remove it"),
        )),
        Err(counter::ReadError::Missing) => Err(Error::new(Errno::EAGAIN, op, Some(&repo.counter), "the counter in the way of the new one vanished; try again")),
        Err(counter::ReadError::Sys(e, call)) => Err(Error::sys(e, op, &repo.counter, call)),
    }
}

/// A new temporary file for the counter holding `next`, written and synced, at a fresh
/// unpredictable name (a name found taken is never used: another is drawn).
fn draw_counter_temp(repo: &Repo, next: u64) -> nix::Result<(PathBuf, files::Private)> {
    for _ in 0..COUNTER_TEMP_TRIES {
        let tmp = repo.counter_temp_path(&crate::random::unpredictable_hex());
        if let Some(made) = files::create_private(&tmp, &counter::initial(next), |_| {})? {
            return Ok((tmp, made));
        }
    }
    Err(Errno::EEXIST)
}

/// Removes counter temporary files of this user left by a counter write that died (the
/// caller holds the guard, so no such write is under way): one still linked to the
/// counter would give it a second link, and litter must not grow with crashes. Files
/// of other users are never touched.
fn remove_our_counter_temps(repo: &Repo) {
    let Ok(dir) = std::fs::read_dir(&repo.dir) else { return };
    let me = nix::unistd::geteuid().as_raw();
    for entry in dir.map_while(std::result::Result::ok) {
        if !repo.is_counter_temp(entry.file_name().as_encoded_bytes()) {
            continue;
        }
        let path = entry.path();
        if let Ok(st) = fsops::lstat(&path) {
            if fsops::is_regular(&st) && st.st_uid == me {
                let _ = fsops::unlink_if_is(&path, FileId::from(&st));
            }
        }
    }
}

pub fn check(shared: &Shared) -> Result<()> {
    let mut ids = enter(shared, OP_CHECK)?;
    let repo = &shared.repo;
    // Under the guard (no reaper at work) and the counter's token: an allocation links
    // its IDs before it advances the counter, so a check between the two would see IDs
    // above the counter. A counter that cannot be read is itself the finding.
    let guard = take_guard(shared, OP_CHECK)?;
    let token = token::acquire_if_readable(shared, &mut ids, OP_CHECK)?;
    let found = findings(repo, shared.local, token.as_ref().map(Token::id));
    if let Some(token) = token {
        token::finish(shared, &mut ids, token, false);
    }
    let _ = guard.unlock();
    let findings = found?;
    if findings.is_empty() {
        return Ok(());
    }
    let shown = findings.iter().take(FINDINGS_SHOWN).cloned().collect::<Vec<_>>().join("; ");
    let more = findings.len().saturating_sub(FINDINGS_SHOWN);
    let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
    Err(Error::new(Errno::EBADMSG, OP_CHECK, Some(&repo.dir), format!("{} problem(s): {shown}{tail}", findings.len())))
}

/// What is wrong with the repository's files, in words. `token`: the ID this check
/// holds the counter's token on (not a finding).
fn findings(repo: &Repo, local: bool, token: Option<u64>) -> Result<Vec<String>> {
    let mut findings = Vec::new();
    let next = match counter::load(repo, local) {
        Ok((_, c)) => Some(c.next),
        Err(counter::ReadError::Missing) => {
            findings.push(format!("the counter {} is missing", repo.counter.display()));
            None
        }
        Err(counter::ReadError::Corrupt(why)) => {
            findings.push(format!("the counter {} is corrupt: {why}", repo.counter.display()));
            None
        }
        Err(counter::ReadError::Sys(e, call)) => return Err(Error::sys(e, OP_CHECK, &repo.counter, call)),
    };
    let listing = Listing::read(repo).map_err(|e| Error::sys(e, OP_CHECK, &repo.ids, "reading"))?;
    let mut claims: HashMap<u64, String> = HashMap::new();
    for (sid, n, ino) in listing.claims() {
        let path = repo.claim_path(sid, n);
        match idlock::holder_of(&path) {
            Ok(Some(named)) if named == sid => {}
            Ok(_) => findings.push(format!("{} is not a claim of session {sid}", path.display())),
            Err(e) => return Err(Error::sys(e, OP_CHECK, &path, "reading")),
        }
        if let Some(other) = claims.insert(ino, sid.to_string()).filter(|o| o != sid) {
            findings.push(format!("sessions {sid} and {other} share a claim file"));
        }
    }
    for (id, ino) in listing.ids().filter(|(id, _)| Some(*id) != token) {
        if let Some(next) = next.filter(|&n| id >= n) {
            findings.push(format!("ID {id} is locked, but the counter's next ID is {next}"));
        }
        let by_stat = || fsops::lstat(&repo.id_path(id)).is_ok_and(|st| claims.contains_key(&st.st_ino));
        if !claims.contains_key(&ino) && !by_stat() {
            findings.push(format!("ID {id} is locked by no session's claim"));
        }
    }
    let sessions = std::fs::read_dir(&repo.sessions).map_err(|e| Error::sys(fsops::io_errno(&e), OP_CHECK, &repo.sessions, "reading"))?;
    for entry in sessions.flatten() {
        let name = entry.file_name();
        let sid = name.to_string_lossy();
        if is_opening_name(name.as_encoded_bytes()) {
            // A record being written (or an opener's leftover, swept by the reapers).
            continue;
        }
        if !is_session_id(name.as_encoded_bytes()) {
            findings.push(format!("{} is not a session record", entry.path().display()));
        } else if let Err(why) = liveness::read_record(repo, &sid) {
            findings.push(format!("session record {}: {why}", entry.path().display()));
        }
    }
    Ok(findings)
}

pub fn repair_counter(shared: &Shared, next_id: u64) -> Result<()> {
    let mut ids = enter(shared, OP_REPAIR)?;
    let repo = &shared.repo;
    let guard = take_guard(shared, OP_REPAIR)?;
    // A readable counter is raised in place with its token, like any update; one that
    // is missing or corrupt (no writer can hold its token) is replaced whole.
    let token = token::acquire_if_readable(shared, &mut ids, OP_REPAIR)?;
    let listed = Listing::read(repo).map_err(|e| Error::sys(e, OP_REPAIR, &repo.ids, "reading"));
    let known_next = ids.known_next;
    let repaired = listed.and_then(|listing| {
        let token_id = token.as_ref().map(Token::id);
        let locked = listing.ids().filter(|(id, _)| Some(*id) != token_id);
        let above_locked = locked.map(|(id, _)| id.saturating_add(1)).max().unwrap_or(0);
        let floor = next_id.max(known_next).max(above_locked);
        match &token {
            Some(token) => token::commit(shared, token, floor, OP_REPAIR),
            None => write_counter(repo, floor, true, OP_REPAIR).map(|()| floor),
        }
    });
    if let Some(token) = token {
        token::finish(shared, &mut ids, token, false);
    }
    let _ = guard.unlock();
    let next = repaired?;
    ids.learn_next(next);
    Ok(())
}

/// Releases the session's IDs and removes its claims. A session whose lease ran out
/// touches nothing (ESTALE): its locks may belong to others by now. Only IDs linked to
/// a claim that still has its name are released (a claim's name is what keeps its
/// inode number from being reused by someone else's file), and a claim that still has
/// links after that is left for the reapers.
pub fn release_all(shared: &Shared, op: &'static str) -> Result<()> {
    still_live(shared, op)?;
    let mut ids = locked(&shared.ids);
    token::retry_stale_tokens(shared, &mut ids);
    let ours: Vec<FileId> = ids.claims.iter().filter(|c| fsops::id_of(&c.path) == Ok(c.file)).map(|c| c.file).collect();
    let mut first_error: Option<(Errno, PathBuf)> = None;
    let mut note = |r: nix::Result<()>, path: PathBuf| {
        if let Err(e) = r {
            first_error.get_or_insert((e, path));
        }
    };
    for (id, file) in ids.unhold_all() {
        if ours.contains(&file) {
            note(idlock::release(&shared.repo, id, file).map(drop), shared.repo.id_path(id));
        }
    }
    for claim in ids.claims.take_all() {
        let unlinked = fsops::lstat(&claim.path).is_ok_and(|st| FileId::from(&st) == claim.file && st.st_nlink == 1);
        if unlinked {
            note(fsops::unlink(&claim.path), claim.path.clone());
        }
    }
    match first_error {
        None => Ok(()),
        Some((e, path)) => Err(Error::sys(e, op, &path, "removing")),
    }
}

/// Removes the session's record, if it is still ours and the session did not expire.
pub fn remove_record(shared: &Shared, op: &'static str) -> Result<()> {
    let (record_file, expired) = {
        let beat = locked(&shared.beat);
        (beat.record_file, beat.expired.clone())
    };
    if let Some(why) = expired {
        return Err(Error::new(Errno::ESTALE, op, Some(&shared.repo.dir), why));
    }
    let record = shared.repo.session_path(&shared.sid);
    fsops::unlink_if_is(&record, record_file).map(drop).map_err(|e| Error::sys(e, op, &record, "removing"))
}
