//! Tokens: the names a leased claim takes, and the three moves that decide everything
//! (see docs/lease-protocol.md). A token `.nfslock-<claim>.<epoch>` is the holder's claim
//! inode under a name created at most once, ever; whoever renames it away first (the
//! holder renewing or releasing, or a breaker) wins, and nobody else can.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use nix::errno::Errno;

use crate::fsops::{self, FileId};
use crate::record::{Record, MAX_RECORD_LEN};

const PREFIX: &str = ".nfslock-";

/// The name of `claim`'s token at `epoch`, in `dir`.
pub fn path(dir: &Path, claim: &str, epoch: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{claim}.{epoch}"))
}

/// A fresh name for a token a breaker took: never a token name, never reused.
fn broken_path(dir: &Path, claim: &str, epoch: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{claim}.{epoch}.x{}", crate::random::unpredictable_hex()))
}

/// The epoch in a token's file name for `claim`, if `name` is one.
fn epoch_of(name: &OsStr, claim: &str) -> Option<u64> {
    let rest = name.as_bytes().strip_prefix(PREFIX.as_bytes())?.strip_prefix(claim.as_bytes())?.strip_prefix(b".")?;
    let digits = std::str::from_utf8(rest).ok().filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?;
    digits.parse().ok().filter(|&e| e > 0 && !digits.starts_with('0'))
}

/// Whether `name` is a lease token or a broken token (of any claim): for sweeps.
pub fn is_token_name(name: &OsStr) -> bool {
    let Some(rest) = name.as_bytes().strip_prefix(PREFIX.as_bytes()) else { return false };
    let (hex, rest) = rest.split_at_checked(16).unwrap_or((b"", b""));
    let Some(rest) = rest.strip_prefix(b".") else { return false };
    let (epoch, tail) = match rest.iter().position(|&b| b == b'.') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let tail_ok = tail.is_none_or(|t| t.len() == 17 && t[0] == b'x' && t[1..].iter().all(u8::is_ascii_hexdigit));
    hex.iter().all(u8::is_ascii_hexdigit) && !epoch.is_empty() && epoch.iter().all(u8::is_ascii_digit) && tail_ok
}

/// Where `claim`'s token is, as a listing of its directory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The holder's token at this epoch.
    Live(u64),
    /// Taken by a breaker, under this name (the breaker is removing the lock, or died
    /// before it could).
    Broken(PathBuf),
    /// No token: the lock was released or broken, and its files are gone.
    Nothing,
}

/// Finds `claim`'s token in `dir` by listing it. The listing may be stale; a stale answer
/// only makes a later move fail.
pub fn find(dir: &Path, claim: &str) -> nix::Result<Found> {
    let (mut live, mut broken) = (None, None);
    for name in fsops::list(dir)? {
        if let Some(epoch) = epoch_of(&name, claim) {
            live = live.max(Some(epoch));
        } else if is_token_name(&name) && name.as_bytes().starts_with(format!("{PREFIX}{claim}.").as_bytes()) {
            broken = Some(dir.join(name));
        }
    }
    Ok(match (live, broken) {
        (Some(epoch), _) => Found::Live(epoch),
        (None, Some(path)) => Found::Broken(path),
        (None, None) => Found::Nothing,
    })
}

/// What a rename of a token came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Moved {
    /// Ours: the token now has its new name.
    Done,
    /// Someone else moved it first (nothing of ours changed).
    Lost,
}

/// Renames the token `from` (the inode `file`) to `to`, a name nobody else ever uses.
/// A retransmitted RENAME reports ENOENT although the first one worked: then `to` names
/// our inode.
fn rename_token(from: &Path, to: &Path, file: FileId) -> nix::Result<Moved> {
    Ok(if fsops::rename_checked(from, to, file)? { Moved::Done } else { Moved::Lost })
}

/// The holder's move: token `epoch` becomes `epoch + 1` (a renewal, or the release that
/// parks the claim for its next acquisition). Lost: the lease was broken.
pub fn advance(dir: &Path, claim: &str, epoch: u64, file: FileId) -> nix::Result<Moved> {
    rename_token(&path(dir, claim, epoch), &path(dir, claim, epoch + 1), file)
}

/// A breaker's move: takes the token named `from` (a live token, or one a breaker took
/// and left) away under a fresh name. Done: the caller now owns that name (and must
/// remove it); nobody can renew, release or break that incarnation any more. Lost: it
/// was renewed, released or taken since it was seen.
pub fn take(dir: &Path, from: &Path, claim: &str, epoch: u64, file: FileId) -> nix::Result<(Moved, PathBuf)> {
    let to = broken_path(dir, claim, epoch);
    rename_token(from, &to, file).map(|m| (m, to))
}

/// What breaking one incarnation came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Broke {
    /// Its token is ours and its lock file is gone.
    Removed,
    /// Its token moved before we could take it: renewed, released, or broken by another.
    Lost,
}

/// Breaks the incarnation of `claim` whose token is `from` (at `epoch`), the inode `file`:
/// takes the token, removes the lock file if it is still that inode, removes the token.
/// Once the token is ours nobody inside the protocol can remove or replace the lock
/// file, so the check before the unlink races only with processes outside it.
///
/// A taken token is itself taken over by another breaker once it stayed unmoved for a
/// lease (a breaker that died before its unlink), who then removes the lock file and
/// lets a new holder in. So this breaker sends its unlink only within half a lease of
/// its take, judged after its check of the lock file's inode (as a holder's
/// self-fence); later, it takes its token again under a fresh name first, and leaves
/// everything to the breaker that took it over if that rename is lost. The check comes
/// before every unlink attempt: a lost reply is never retried onto a later lock.
pub fn break_hold(dir: &Path, lock: &Path, from: &Path, claim: &str, epoch: u64, file: FileId) -> nix::Result<Broke> {
    let mut started = crate::clock::now();
    let (moved, mut taken) = take(dir, from, claim, epoch, file)?;
    if moved == Moved::Lost {
        return Ok(Broke::Lost);
    }
    let half = lease_of(&taken) / 2;
    let mut removed = Err(Errno::EIO);
    for _ in 0..=16 {
        // Does the lock file still name the inode? Its link count through a fresh open
        // of our name for it says so; a cached lookup of the lock file's name could show
        // an old version of it (and the unlink by name would remove a newer lock).
        match fsops::still_linked(&taken, file) {
            Ok(true) => {}
            Ok(false) => {
                removed = Ok(());
                break;
            }
            Err(e) => {
                removed = Err(e);
                break;
            }
        }
        if crate::clock::now().saturating_sub(started) >= half {
            let again = crate::clock::now();
            let to = broken_path(dir, claim, epoch);
            match rename_token(&taken, &to, file)? {
                Moved::Done => {
                    taken = to;
                    started = again;
                    continue;
                }
                // Taken over: that breaker removes the lock file, not this one.
                Moved::Lost => return Ok(Broke::Lost),
            }
        }
        match nix::unistd::unlink(lock) {
            Ok(()) | Err(Errno::ENOENT) => {
                removed = Ok(());
                break;
            }
            Err(e) if fsops::is_transient(e) => {}
            Err(e) => {
                removed = Err(e);
                break;
            }
        }
    }
    if removed.is_ok() {
        let _ = fsops::unlink(&taken);
    }
    removed.map(|()| Broke::Removed)
}

/// The lease in the record of a token we took (the claim holds its holder's record);
/// unreadable: the shortest lease there is.
fn lease_of(taken: &Path) -> Duration {
    let ms = fsops::open_existing(taken, false)
        .ok()
        .and_then(|fd| fsops::read_capped(&std::fs::File::from(fd), MAX_RECORD_LEN).ok().flatten())
        .and_then(|bytes| Record::parse(&bytes).ok())
        .and_then(|r| r.lease.map(|l| l.ms))
        .unwrap_or(100);
    Duration::from_millis(ms.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_exactly() {
        let claim = "0123456789abcdef";
        assert_eq!(epoch_of(OsStr::new(".nfslock-0123456789abcdef.17"), claim), Some(17));
        for other in [
            ".nfslock-0123456789abcdef",
            ".nfslock-0123456789abcdef.",
            ".nfslock-0123456789abcdef.017",
            ".nfslock-0123456789abcdef.0",
            ".nfslock-0123456789abcdef.1.x00",
        ] {
            assert_eq!(epoch_of(OsStr::new(other), claim), None, "{other}");
        }
        let broken = broken_path(Path::new("/d"), claim, 3);
        assert!(is_token_name(broken.file_name().unwrap()));
        assert!(is_token_name(OsStr::new(".nfslock-0123456789abcdef.3")));
        for other in
            [".nfslock-0123456789abcdef", ".nfslock-0123456789abcdef.3.y0123456789abcdef", "x.nfs_lock", ".nfslock-0123456789abcde.3"]
        {
            assert!(!is_token_name(OsStr::new(other)), "{other}");
        }
    }
}
