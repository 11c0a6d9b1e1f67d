//! Reading who holds a lock, and clearing the lock of a dead holder on this host.
//!
//! Clearing follows Core's protocol so that Core and libnfslock can clean the same file:
//! open the lock file, take flock on it (exclusion between cleaners on one host), check
//! that the name still refers to the inode judged dead, then unlink. A lock taken after
//! the judgement is a different inode and is never removed.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use super::token::{self, Broke, Found};
use crate::fsops::{self, FileId};
use crate::record::{LeaseTerms, Record, MAX_RECORD_LEN};

/// The state of a lock file as read once.
#[derive(Debug)]
pub enum Holder {
    /// No lock file.
    Free,
    /// A lock file whose record parses.
    Held { record: Record, file: FileId },
    /// A lock file that holds no record yet: empty, or sharing its inode with `P` and
    /// not (yet) a whole record. That is a Core holder between its link(2) of `P` and
    /// the write of its record (Core's v1 protocol): held, but by nobody we can name.
    /// It is never cleared.
    Unwritten { file: FileId },
}

/// Why a lock file could not be read as a record.
#[derive(Debug)]
pub enum ReadError {
    /// The lock file exists but is not a record (EBADMSG).
    Bad(String),
    /// A symlink where the lock file should be (ELOOP).
    Symlink,
    /// The system call failed.
    Sys(Errno, &'static str),
}

/// Core's v1 protocol links `P` to `P.nfs_lock` first and writes the record after, so a
/// lock that shares its inode with `P` may briefly show `P`'s old contents. Before such
/// a lock is cleared as dead, it is read again after this pause.
const V1_SETTLE: Duration = Duration::from_millis(50);

pub fn read(lock_path: &Path, copy_path: &Path) -> Result<Holder, ReadError> {
    match read_once(lock_path)? {
        Ok(holder) => Ok(holder),
        Err(NotARecord { file, empty: true, .. }) => Ok(Holder::Unwritten { file }),
        Err(NotARecord { file, .. }) if shares_inode(copy_path, file) => Ok(Holder::Unwritten { file }),
        Err(NotARecord { why, .. }) => Err(ReadError::Bad(why)),
    }
}

/// A lock file that is not a record.
struct NotARecord {
    file: FileId,
    /// A regular file of size 0.
    empty: bool,
    why: String,
}

/// Reads the record once.
fn read_once(lock_path: &Path) -> Result<Result<Holder, NotARecord>, ReadError> {
    let fd = match fsops::open_existing(lock_path, false) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Ok(Holder::Free)),
        Err(Errno::ELOOP) => return Err(ReadError::Symlink),
        // open(2) of a socket: not a regular file, like any other non-file there.
        Err(Errno::ENXIO) => return Err(ReadError::Bad("the lock file is not a regular file (a socket)".into())),
        Err(e) => return Err(ReadError::Sys(e, "open")),
    };
    let st = match fsops::fstat(&fd) {
        Ok(st) => st,
        // Its holder removed it meanwhile (fsops::vanished): the lock is free now, as if
        // the open had come a moment later.
        Err(e) if fsops::vanished(e) => return Ok(Ok(Holder::Free)),
        Err(e) => return Err(ReadError::Sys(e, "fstat")),
    };
    let file = FileId::from(&st);
    if !fsops::is_regular(&st) {
        return Ok(Err(NotARecord { file, empty: false, why: "the lock file is not a regular file".into() }));
    }
    let file_handle = File::from(fd);
    let bytes = match fsops::read_capped(&file_handle, MAX_RECORD_LEN) {
        Ok(Some(b)) => b,
        Ok(None) => {
            let why = format!("the lock file is larger than {MAX_RECORD_LEN} bytes");
            return Ok(Err(NotARecord { file, empty: false, why }));
        }
        Err(e) if fsops::vanished(e) => return Ok(Ok(Holder::Free)),
        Err(e) => return Err(ReadError::Sys(e, "read")),
    };
    Ok(match Record::parse(&bytes) {
        Ok(record) => Ok(Holder::Held { record, file }),
        Err(bad) => Err(NotARecord { file, empty: bytes.is_empty(), why: format!("unreadable lock record: {}", bad.0) }),
    })
}

fn shares_inode(copy_path: &Path, file: FileId) -> bool {
    fsops::id_of(copy_path).is_ok_and(|id| id == file)
}

/// The outcome of trying to clear a dead holder's lock.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleared {
    /// The dead holder's lock file is gone (removed by us or by another cleaner).
    Gone,
    /// Another process is cleaning it, or it changed while we looked: try again later.
    Busy,
}

/// Removes the lock file `lock_path` if it is still the file `dead` whose record
/// `record` names a dead process of this host.
pub fn clear_dead(lock_path: &Path, copy_path: &Path, dead: FileId, record: &Record) -> nix::Result<Cleared> {
    let fd = match flock_dead(lock_path, dead)? {
        Ok(fd) => fd,
        Err(outcome) => return Ok(outcome),
    };
    // Under the flock: is the name still this inode, and does it still say the same?
    if fsops::id_of(lock_path).ok() != Some(dead) {
        return Ok(Cleared::Busy);
    }
    if shares_inode(copy_path, dead) {
        std::thread::sleep(V1_SETTLE);
    }
    let file = File::from(fd);
    if reread(&file).as_ref() != Some(record) {
        return Ok(Cleared::Busy);
    }
    // `P` first, as Core's cleanup does: once the lock file is gone, Core's v1 create
    // links `P` itself as the new lock, and a `P` still holding a record would show
    // that record as the new holder's until Core writes its own.
    remove_stale_copy(copy_path, dead)?;
    // Whether we or someone else removed it, the dead holder's lock is gone.
    fsops::unlink_if_is(lock_path, dead).map(|_| Cleared::Gone)
    // `file` closes here, after the unlink, releasing the flock.
}

/// Opens the lock file and takes the cleaners' flock on it, if it still is the inode
/// `dead` judged dead: Err(Gone) when no lock file is left, Err(Busy) when it is another
/// file now or another cleaner holds the flock (try again later).
fn flock_dead(lock_path: &Path, dead: FileId) -> nix::Result<Result<OwnedFd, Cleared>> {
    let fd = match fsops::open_for_flock(lock_path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Err(Cleared::Gone)),
        Err(e) => return Err(e),
    };
    if FileId::from(&fsops::fstat(&fd)?) != dead {
        return Ok(Err(Cleared::Busy));
    }
    match fsops::try_flock_exclusive(&fd) {
        Ok(()) => Ok(Ok(fd)),
        Err(Errno::EWOULDBLOCK) => Ok(Err(Cleared::Busy)),
        Err(e) => Err(e),
    }
}

/// Breaks the lease of a dead holder of this host (no such process, and its liveness
/// flock free): takes its token first, as every breaker of a lease must (see
/// docs/lease-protocol.md), so that a breaker on another host racing us cannot remove
/// a lock taken after ours. Busy: no token to take (another breaker has it), or it moved.
pub fn clear_dead_leased(lock_path: &Path, dead: FileId, terms: &LeaseTerms) -> nix::Result<Cleared> {
    // A shared group's creator says nothing about its members: the lease's own waiters
    // prune those (lease::shared), nobody clears the group by its record.
    if terms.shared {
        return Ok(Cleared::Busy);
    }
    let _flock = match flock_dead(lock_path, dead)? {
        Ok(fd) => fd,
        Err(outcome) => return Ok(outcome),
    };
    let dir = lock_path.parent().unwrap_or(Path::new("/"));
    let (from, epoch) = match token::find(dir, &terms.claim)? {
        Found::Live(epoch) => (token::path(dir, &terms.claim, epoch), epoch),
        // A breaker took it: the holder is dead, but the breaker may be alive; its
        // token is taken over only after watching it (see lease::watch).
        Found::Broken(_) | Found::Nothing => return Ok(Cleared::Busy),
    };
    match token::break_hold(dir, lock_path, &from, &terms.claim, epoch, dead)? {
        Broke::Removed => Ok(Cleared::Gone),
        Broke::Lost => Ok(Cleared::Busy),
    }
    // `_flock` closes here, releasing the flock.
}

/// Removes `P` when it would show a record to a reader of a lock linked from it: when
/// it is the dead lock itself (Core v1), or a regular file holding a record (a Core v2
/// copy, or one written by libnfslock before 0.2). Anything else at `P` (empty, other
/// contents, a directory, a symlink) is left alone.
pub(crate) fn remove_stale_copy(copy_path: &Path, dead: FileId) -> nix::Result<()> {
    let st = match fsops::lstat(copy_path) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let id = FileId::from(&st);
    if !fsops::is_regular(&st) {
        return Ok(());
    }
    let holds_record = id == dead
        || fsops::open_existing(copy_path, false)
            .ok()
            .and_then(|fd| {
                let f = File::from(fd);
                (fsops::fstat(&f).ok().map(|s| FileId::from(&s)) == Some(id)).then(|| reread(&f)).flatten()
            })
            .is_some();
    if holds_record {
        fsops::unlink_if_is(copy_path, id)?;
    }
    Ok(())
}

fn reread(file: &File) -> Option<Record> {
    // The one capped read: a single read(2) may come back short over NFS.
    let bytes = fsops::read_capped(file, MAX_RECORD_LEN).ok()??;
    Record::parse(&bytes).ok()
}
