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

use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::files::{self, Small};
use super::layout::{self, Repo};
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
    layout::is_session_id(sid.as_bytes()).then(|| sid.to_string())
}

/// Creates claim number `n` (or the next free number) of session `sid`, durably.
pub fn create_claim(repo: &Repo, sid: &str, mut n: u32) -> nix::Result<(Claim, u32)> {
    loop {
        let path = repo.claim_path(sid, n);
        // A number taken (used before, or our own create whose reply was lost) is never
        // adopted (nothing proves it is ours): the next one is tried. Empty litter under
        // our own session's name is removed on the way, so it cannot pile up.
        match files::create_private(&path, &claim_text(sid), |_| {})? {
            Some(made) => return Ok((Claim { file: made.id(), path, links: 0 }, n)),
            None if n < u32::MAX => n += 1,
            None => return Err(Errno::EEXIST),
        }
    }
}

/// The outcome of trying to lock one ID.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// Ours, linked to the claim whose identity this is.
    Ours(FileId),
    /// Another session holds it (or held it a moment ago).
    Held,
}

/// Links the lock on `id` to `claim`.
pub fn take(repo: &Repo, claim: &Claim, id: u64) -> nix::Result<Take> {
    match files::link_checked(&claim.path, &repo.id_path(id), claim.file)? {
        true => Ok(Take::Ours(claim.file)),
        false => Ok(Take::Held),
    }
}

/// A session's claims: the one new ID locks link to, and the earlier ones.
#[derive(Debug, Default)]
pub struct Claims {
    list: Vec<Claim>,
    next_number: u32,
}

impl Claims {
    /// Locks `id` for session `sid`, linked to its current claim: a new claim when the
    /// current one is full or the filesystem allows it no more links (EMLINK).
    pub fn take(&mut self, repo: &Repo, sid: &str, id: u64) -> nix::Result<Take> {
        let mut fresh = false;
        loop {
            let claim = self.current(repo, sid, 1)?;
            match take(repo, claim, id) {
                Ok(Take::Ours(file)) => {
                    claim.links += 1;
                    return Ok(Take::Ours(file));
                }
                Err(Errno::EMLINK) if !fresh => {
                    claim.links = MAX_LINKS_PER_CLAIM;
                    fresh = true;
                }
                other => return other,
            }
        }
    }

    /// The claim new ID locks link to, starting a new one when the current one has no
    /// room for `room` more links.
    fn current(&mut self, repo: &Repo, sid: &str, room: u64) -> nix::Result<&mut Claim> {
        if self.list.last().is_none_or(|c| c.links + room > MAX_LINKS_PER_CLAIM) {
            let (claim, n) = create_claim(repo, sid, self.next_number)?;
            self.list.push(claim);
            self.next_number = n + 1;
        }
        Ok(self.list.last_mut().expect("a claim was just made"))
    }

    /// The claim new locks link to now, if there is one.
    pub fn last(&self) -> Option<&Claim> {
        self.list.last()
    }

    /// The identities of every claim of the session.
    pub fn files(&self) -> Vec<FileId> {
        self.list.iter().map(|c| c.file).collect()
    }

    /// Every claim, leaving none.
    pub fn take_all(&mut self) -> Vec<Claim> {
        std::mem::take(&mut self.list)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Claim> {
        self.list.iter()
    }
}

/// Removes our lock on an ID if it is still ours. False: someone removed it (a reaper).
pub fn release(repo: &Repo, id: u64, file: FileId) -> nix::Result<bool> {
    fsops::unlink_if_is(&repo.id_path(id), file)
}

/// Releases each of `taken` (an undo; errors leave the lock for the reapers).
pub fn release_each(repo: &Repo, taken: &[(u64, FileId)]) {
    for &(id, file) in taken {
        let _ = release(repo, id, file);
    }
}

/// The session holding `path` (an ID lock or a claim), read from the file.
pub fn holder_of(path: &Path) -> nix::Result<Option<String>> {
    match files::read_small(path, 256) {
        Ok(Small::Bytes(bytes)) => Ok(parse_claim(&bytes)),
        Ok(Small::Missing | Small::TooLarge) => Ok(None),
        // Removed between open and read.
        Err(e) if fsops::vanished(e) => Ok(None),
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
