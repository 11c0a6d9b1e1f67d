//! ID locks. The lock on ID `n` is the file `NAME.ids/n`, a hard link of a claim file
//! of the holding session, made with link(2): atomic on every NFS version, and it fails
//! with EEXIST when any other session holds `n`. Which session holds an ID is therefore
//! a matter of inode identity (checkable from the name alone, and robust against a
//! retransmitted LINK that reports EEXIST for our own link), and the claim's text
//! names the session for everyone else.
//!
//! Locking or releasing k IDs costs k link(2) or k lstat(2)+unlink(2), whatever else the
//! session holds. A claim carries at most MAX_LINKS_PER_CLAIM IDs (ext4 allows 65,000
//! links per inode); the session then starts another.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::layout::Repo;
use crate::fsops::{self, FileId};

pub const MAX_LINKS_PER_CLAIM: u64 = 10_000;
const CLAIM_HEAD: &str = "nfslock-idlock 1 session ";

/// One of this session's claim files.
#[derive(Debug)]
pub struct Claim {
    pub path: PathBuf,
    pub file: FileId,
    /// IDs linked to it so far (some may have been released since: a claim is not reused
    /// past the limit, so this only grows).
    pub links: u64,
}

pub(crate) fn claim_text(sid: &str) -> Vec<u8> {
    format!("{CLAIM_HEAD}{sid}\n").into_bytes()
}

/// The session a claim's text names.
pub fn parse_claim(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let sid = text.strip_prefix(CLAIM_HEAD)?.strip_suffix('\n')?;
    super::layout::is_session_id(sid.as_bytes()).then(|| sid.to_string())
}

/// Creates claim number `n` (or the next free number) of session `sid`, durably.
pub fn create_claim(repo: &Repo, sid: &str, mut n: u32) -> nix::Result<(Claim, u32)> {
    loop {
        let path = repo.claim_path(sid, n);
        match fsops::create_new(&path) {
            Ok(fd) => {
                let file = File::from(fd);
                let made = fsops::write_durably(&file, &claim_text(sid))
                    .map_err(|e| fsops::io_errno(&e))
                    .and_then(|()| fsops::fstat(&file));
                return match made {
                    Ok(st) => Ok((Claim { path, file: FileId::from(&st), links: 0 }, n)),
                    Err(e) => {
                        let _ = fsops::unlink(&path);
                        Err(e)
                    }
                };
            }
            // A number used before, or our own create whose reply was lost: never
            // adopted (nothing proves it is ours), so move on to the next one. An empty
            // one (a lost reply, or a create killed before its write) holds no ID: it
            // is litter under our own session's name, removed so it cannot pile up.
            Err(Errno::EEXIST) if n < u32::MAX => {
                if let Ok(st) = fsops::lstat(&path) {
                    if fsops::is_regular(&st) && st.st_size == 0 && st.st_nlink == 1 {
                        let _ = fsops::unlink_if_is(&path, FileId::from(&st));
                    }
                }
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The outcome of trying to lock one ID.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Ours,
    /// Another session holds it (or held it a moment ago).
    Held,
}

pub fn take(repo: &Repo, claim: &Claim, id: u64) -> nix::Result<Take> {
    let path = repo.id_path(id);
    match fsops::link(&claim.path, &path) {
        Ok(()) => Ok(Take::Ours),
        // A retransmitted LINK reports EEXIST (or EIO) although ours worked.
        Err(e @ (Errno::EEXIST | Errno::EIO)) => match fsops::id_of(&path) {
            Ok(file) if file == claim.file => Ok(Take::Ours),
            Ok(_) if e == Errno::EEXIST => Ok(Take::Held),
            Err(Errno::ENOENT) if e == Errno::EEXIST => Ok(Take::Held),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Removes our lock on an ID if it is still ours. False: someone removed it (a reaper).
pub fn release(repo: &Repo, id: u64, file: FileId) -> nix::Result<bool> {
    fsops::unlink_if_is(&repo.id_path(id), file)
}

/// The session holding `path` (an ID lock or a claim), read from the file.
pub fn holder_of(path: &Path) -> nix::Result<Option<String>> {
    let fd = match fsops::open_existing(path, false) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = File::from(fd);
    match fsops::read_capped(&file, 256) {
        Ok(Some(bytes)) => Ok(parse_claim(&bytes)),
        Ok(None) => Ok(None),
        Err(Errno::ESTALE | Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_text_round_trips() {
        let sid = "0123456789abcdef";
        assert_eq!(parse_claim(&claim_text(sid)).as_deref(), Some(sid));
        assert_eq!(parse_claim(b"nfslock-idlock 1 session 0123\n"), None);
        assert_eq!(parse_claim(b"nfslock-idlock 1 session 0123456789abcdef"), None);
    }
}
