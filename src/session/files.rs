//! The building blocks of a repository's own small files: each exists once here.
//!
//! - [`create_private`]: the repository's use of `fsops::create_private` (create a file
//!   at a name nobody else uses, write it durably, remove it again if that fails): a
//!   name found taken is never adopted, and empty litter there is removed.
//! - [`link_checked`]: link(2) a file of ours to a name, telling a retransmitted LINK
//!   that worked (EEXIST or EIO, but the name is our file) from a name someone else has.
//! - [`read_small`]: open without following a symlink, read with a cap.
//!
//! They speak `nix::Result`: the callers know the operation and path an error belongs to.

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat::FileStat;

use crate::fsops::{self, FileId};

/// A file [`create_private`] made: open, written and synced.
pub struct Private {
    pub file: File,
    pub stat: FileStat,
}

impl Private {
    pub fn id(&self) -> FileId {
        FileId::from(&self.stat)
    }
}

/// Creates `path` (O_EXCL, 0644), writes `data` at its start and makes it durable
/// (`fsops::create_private`: a file that could not be written is removed).
/// `Ok(None)`: the name is taken (the caller draws another); an empty regular file
/// with one link found there is removed first (litter: a create whose reply was lost,
/// or a creator killed before its write; someone's live file only makes their own link
/// fail, and they draw another name). `before_write` runs on the new file first (a
/// flock, say); its failure is ignored.
pub fn create_private(path: &Path, data: &[u8], before_write: impl FnOnce(&File)) -> nix::Result<Option<Private>> {
    let create = || fsops::create_new(path).map(File::from);
    let before_write = |file: &File| {
        before_write(file);
        Ok(())
    };
    match fsops::create_private(path, data, create, before_write) {
        Ok((file, stat)) => Ok(Some(Private { file, stat })),
        Err(Errno::EEXIST) => {
            remove_if_empty(path);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Removes the file at `path` if it is an empty regular file with one link (see
/// [`create_private`]).
pub fn remove_if_empty(path: &Path) {
    if let Ok(st) = fsops::lstat(path) {
        if fsops::is_regular(&st) && st.st_size == 0 && st.st_nlink == 1 {
            let _ = fsops::unlink_if_is(path, FileId::from(&st));
        }
    }
}

/// link(2) of our file `ours` at `from` to the name `to`. True: `to` is now our file
/// (also after a retransmitted LINK reported EEXIST or EIO although ours worked).
/// False: the name was taken (EEXIST) by another file, or by one that cannot be shown
/// to be ours. Other errors as they are.
pub fn link_checked(from: &Path, to: &Path, ours: FileId) -> nix::Result<bool> {
    // A session's files may be linked to more than one name (a claim to several ID
    // locks): only the name itself proves a link ours.
    let proof = fsops::LinkProof { only_link: false, local: false, by_name: true };
    match fsops::link_checked(from, to, ours, proof)? {
        fsops::Linked::Ours => Ok(true),
        // Someone else's, gone again already, or not to be told: never taken for ours.
        fsops::Linked::Taken { errno: Errno::EEXIST, .. } => Ok(false),
        fsops::Linked::Taken { errno, .. } => Err(errno),
    }
}

/// What [`read_small`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Small {
    /// No file at the name.
    Missing,
    /// More than the cap.
    TooLarge,
    Bytes(Vec<u8>),
}

/// Opens `path` (never following a symlink, never blocking on a FIFO) and reads at most
/// `cap` bytes of it.
pub fn read_small(path: &Path, cap: usize) -> nix::Result<Small> {
    let fd = match fsops::open_existing(path, false) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Small::Missing),
        Err(e) => return Err(e),
    };
    Ok(match fsops::read_capped(&File::from(fd), cap)? {
        Some(bytes) => Small::Bytes(bytes),
        None => Small::TooLarge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_is_made_whole_or_not_at_all_and_a_taken_name_is_never_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let made = create_private(&path, b"hello\n", |_| {}).unwrap().expect("made");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        assert_eq!(fsops::id_of(&path).unwrap(), made.id());
        // Taken by a file with content: left alone, not adopted.
        assert!(create_private(&path, b"other", |_| {}).unwrap().is_none());
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        // Taken by empty litter: removed, still not adopted (the caller draws again).
        let litter = dir.path().join("litter");
        std::fs::write(&litter, b"").unwrap();
        assert!(create_private(&litter, b"x", |_| {}).unwrap().is_none());
        assert!(!litter.exists());
        // An empty file with a second link is someone's: left alone.
        let linked = dir.path().join("linked");
        std::fs::write(&linked, b"").unwrap();
        std::fs::hard_link(&linked, dir.path().join("other-name")).unwrap();
        assert!(create_private(&linked, b"x", |_| {}).unwrap().is_none());
        assert!(linked.exists());
        assert_eq!(create_private(&dir.path().join("no/such/dir"), b"x", |_| {}).err(), Some(Errno::ENOENT));
    }

    #[test]
    fn link_checked_tells_our_name_from_someone_elses() {
        let dir = tempfile::tempdir().unwrap();
        let ours = create_private(&dir.path().join("a"), b"a", |_| {}).unwrap().unwrap();
        let theirs = dir.path().join("b");
        std::fs::write(&theirs, b"b").unwrap();
        let to = dir.path().join("to");
        assert!(link_checked(&dir.path().join("a"), &to, ours.id()).unwrap());
        // Linking again (a retransmission) finds our own file there.
        assert!(link_checked(&dir.path().join("a"), &to, ours.id()).unwrap());
        assert!(!link_checked(&dir.path().join("a"), &theirs, ours.id()).unwrap());
        assert_eq!(link_checked(&dir.path().join("none"), &dir.path().join("x"), ours.id()), Err(Errno::ENOENT));
    }

    #[test]
    fn read_small_caps_and_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_small(&f, 5).unwrap(), Small::Bytes(b"12345".to_vec()));
        assert_eq!(read_small(&f, 4).unwrap(), Small::TooLarge);
        assert_eq!(read_small(&dir.path().join("none"), 4).unwrap(), Small::Missing);
        std::os::unix::fs::symlink(&f, dir.path().join("l")).unwrap();
        assert_eq!(read_small(&dir.path().join("l"), 9), Err(Errno::ELOOP));
    }
}
