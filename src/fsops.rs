//! The few filesystem operations the protocol is built from, never following a symlink
//! at the final path component.
//!
//! Most are retried a bounded number of times on EINTR, ESTALE (an NFS handle invalidated
//! by another client) and EIO (a soft-mounted NFS request that timed out). That is safe
//! for the reads, and for the changes whose repetition the caller recognises: a repeated
//! link(2) or O_EXCL create reports EEXIST and a repeated rename(2) ENOENT, which the
//! callers check against the identity of their own file. Removing the lock file is the
//! exception: a blind second unlink(2) could remove a lock someone took in between, so
//! [`unlink_if_is`] checks the name again before every attempt.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd;

/// How often a call is repeated after a transient error before the error is reported.
/// One call can be several NFS requests (a lookup per path component, a permission
/// check, the operation), any of which may fail transiently; 16 repeats make a spurious
/// failure of the call as a whole negligible even when each request fails often (the
/// multi-host rig injects 5% per request, where 8 repeats still let one through in a
/// few thousand calls). A persistent error costs 16 fast failures before it is reported.
const TRANSIENT_RETRIES: u32 = 16;

/// Identity of a file: what a lock holder compares to know the lock file is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl From<&stat::FileStat> for FileId {
    fn from(st: &stat::FileStat) -> Self {
        FileId { dev: st.st_dev, ino: st.st_ino }
    }
}

pub fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    let mut left = TRANSIENT_RETRIES;
    loop {
        match call() {
            Err(e) if is_transient(e) && left > 0 => left -= 1,
            result => return result,
        }
    }
}

/// Errors after which the same request may work, and may or may not have taken effect.
pub fn is_transient(e: Errno) -> bool {
    matches!(e, Errno::EINTR | Errno::ESTALE | Errno::EIO)
}

/// Errors on a file we have open, or read by name, that mean it was removed meanwhile:
/// on NFS the server forgets a file once another client removes its last name, and our
/// handle to it turns stale (ESTALE); locally the name is gone (ENOENT).
pub fn vanished(e: Errno) -> bool {
    matches!(e, Errno::ESTALE | Errno::ENOENT)
}

pub fn link(from: &Path, to: &Path) -> nix::Result<()> {
    // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
    retry(|| unistd::linkat(fcntl::AT_FDCWD, from, fcntl::AT_FDCWD, to, AtFlags::empty()))
}

/// link(2) of our file `ours` (named `from`) to `to`, a name nobody else ever gives a
/// file (a shared lock's membership name). A retransmitted LINK whose first reply was
/// lost reports EEXIST although it worked: that counts as done when `to` names `ours`.
pub fn link_private(from: &Path, to: &Path, ours: FileId) -> nix::Result<()> {
    match link(from, to) {
        Err(Errno::EEXIST) if id_of(to) == Ok(ours) => Ok(()),
        other => other,
    }
}

/// The names in `dir`. A listing that fails with ENOENT while `dir` itself is still
/// there is tried again: through an NFS client a READDIR(PLUS) can fail that way when an
/// entry goes while the server builds the reply (seen with nfs-ganesha), and a caller
/// would otherwise report the directory missing.
pub fn list(dir: &Path) -> nix::Result<Vec<std::ffi::OsString>> {
    let once = || -> nix::Result<Vec<std::ffi::OsString>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_errno(&e))? {
            names.push(entry.map_err(|e| io_errno(&e))?.file_name());
        }
        Ok(names)
    };
    let mut left = TRANSIENT_RETRIES;
    loop {
        match once() {
            Err(e) if left > 0 && (is_transient(e) || (e == Errno::ENOENT && lstat(dir).is_ok())) => left -= 1,
            result => return result,
        }
    }
}

/// What [`link_checked`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Linked {
    /// `to` names our file: our link worked (also when its reply was lost).
    Ours,
    /// The link failed with `errno` (EEXIST, or EIO) and `to` is not shown to be ours:
    /// `seen` is what the name held when looked at.
    Taken { errno: Errno, seen: nix::Result<FileId> },
}

/// How [`link_checked`] may prove a link ours after a failure report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProof {
    /// `from` is linked to nothing but `to`: a link count of 2 or more, read through a
    /// fresh open of `from` (close-to-open consistency revalidates it; a stale cached
    /// lookup of `to` cannot fool it), proves our link (the test the open(2) manual gives
    /// for NFS).
    pub only_link: bool,
    /// `to`'s directory is on a filesystem of this machine only: EEXIST is the truth
    /// there (no lost replies).
    pub local: bool,
    /// `to` naming our inode (lstat) proves it ours. Not for a file linked to `to` over
    /// and over (a lease's parked claim): a stale cached lookup of `to` can show our
    /// own earlier link; then only the link count may prove it.
    pub by_name: bool,
}

/// link(2) of our file `from` (the inode `ours`) to `to`, telling a retransmitted LINK
/// that reported EEXIST or EIO although the first one worked from a name someone else
/// holds. Other errors as they are. The one lost-reply check after link(2) of every family.
pub fn link_checked(from: &Path, to: &Path, ours: FileId, proof: LinkProof) -> nix::Result<Linked> {
    match link(from, to) {
        Ok(()) => Ok(Linked::Ours),
        Err(errno @ (Errno::EEXIST | Errno::EIO)) => {
            let seen = id_of(to);
            let authoritative = proof.local && errno == Errno::EEXIST;
            let counted =
                || open_existing(from, false).and_then(|fd| fstat(&fd)).is_ok_and(|st| FileId::from(&st) == ours && st.st_nlink >= 2);
            if (proof.by_name && seen == Ok(ours)) || (proof.only_link && !authoritative && counted()) {
                return Ok(Linked::Ours);
            }
            Ok(Linked::Taken { errno, seen })
        }
        Err(e) => Err(e),
    }
}

/// Whether our file `ours`, named `name`, has another name too (its link count, read
/// through a fresh open, which close-to-open consistency revalidates over NFS, unlike a
/// cached lookup of the other name). For a file with one other possible name (a lease's
/// token, whose other name can only be the lock file) this tells that the lock file
/// still names it.
pub fn still_linked(name: &Path, ours: FileId) -> nix::Result<bool> {
    match open_existing(name, false).and_then(|fd| fstat(&fd)) {
        Ok(st) => Ok(FileId::from(&st) == ours && st.st_nlink >= 2),
        Err(Errno::ENOENT | Errno::ESTALE) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes one of our private names (a claim or a temporary file): nobody else ever
/// gives a file that name, so a repeated unlink can only find it gone.
pub fn unlink(path: &Path) -> nix::Result<()> {
    match retry(|| unistd::unlink(path)) {
        Err(Errno::ENOENT) => Ok(()),
        other => other,
    }
}

/// Removes `path` if it is (still) the file `id`. Returns whether it did: false when the
/// name was already gone or named another file before our first unlink(2).
///
/// The name is checked before every attempt, so an unlink(2) whose reply was lost (EIO,
/// or ENOENT from a retransmission) is never repeated blindly onto a lock someone took in
/// between: once we have sent one, a name that is gone or changed means ours worked.
/// The window between the check and the unlink is the one every unlink-based lock has
/// (Core's included): a lock file is removed only by its holder or a cleaner holding
/// the dead holder's flock.
pub fn unlink_if_is(path: &Path, id: FileId) -> nix::Result<bool> {
    let mut sent = false;
    for _ in 0..=TRANSIENT_RETRIES {
        match id_of(path) {
            Ok(now) if now == id => {}
            Ok(_) | Err(Errno::ENOENT) => return Ok(sent),
            Err(e) => return Err(e),
        }
        match unistd::unlink(path) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(true),
            Err(e) if is_transient(e) => sent = true,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EIO)
}

/// rename(2) of our file `ours` from `from` to `to`. A retransmitted RENAME finds its
/// source gone and reports ENOENT although the first one worked: that counts as done when
/// `to` now names our file. False: `from` was gone and `to` is not ours (someone else
/// moved or removed the file first).
pub fn rename_checked(from: &Path, to: &Path, ours: FileId) -> nix::Result<bool> {
    match retry(|| fcntl::renameat(fcntl::AT_FDCWD, from, fcntl::AT_FDCWD, to)) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => match id_of(to) {
            Ok(id) => Ok(id == ours),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// [`rename_checked`] of the file `file` is open on; ENOENT when it was not ours to move.
pub fn rename_placing(file: &File, from: &Path, to: &Path) -> nix::Result<()> {
    let ours = FileId::from(&fstat(file)?);
    match rename_checked(from, to, ours)? {
        true => Ok(()),
        false => Err(Errno::ENOENT),
    }
}

/// lstat(2): the identity and type of the name itself.
/// `path` made absolute against the current directory once (so that a later chdir
/// cannot make a handle name another file), without `.` components or doubled slashes.
/// If the current directory is gone, the path is used as given.
pub fn absolute(path: &Path) -> PathBuf {
    match path.is_relative().then(std::env::current_dir) {
        Some(Ok(cwd)) => cwd.join(path).components().collect(),
        _ => path.components().collect(),
    }
}

pub fn lstat(path: &Path) -> nix::Result<stat::FileStat> {
    retry(|| stat::lstat(path))
}

pub fn id_of(path: &Path) -> nix::Result<FileId> {
    lstat(path).map(|st| FileId::from(&st))
}

pub fn is_symlink(st: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

pub fn is_regular(st: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// Whether `path` is a directory (not a symlink to one).
pub fn is_dir(path: &Path) -> bool {
    lstat(path).is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// Whether the directory `dir` is certainly gone (removed, renamed away, or replaced by
/// a non-directory). A transient error (EIO, ESTALE: the rig's faults, a soft mount)
/// after the retries says nothing either way and counts as not gone.
pub fn dir_is_gone(dir: &Path) -> bool {
    match retry(|| stat::stat(dir)) {
        Ok(st) => SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR,
        Err(e) => matches!(e, Errno::ENOENT | Errno::ENOTDIR),
    }
}

/// Opens an existing file without following a symlink and without blocking on a FIFO.
pub fn open_existing(path: &Path, write: bool) -> nix::Result<OwnedFd> {
    open_nofollow(path, if write { OFlag::O_RDWR } else { OFlag::O_RDONLY })
}

/// Opens an existing file to flock it: read-write where allowed, as Core does, because
/// NFS clients emulate flock with byte-range locks, which want a descriptor open for
/// reading (shared) and for writing (exclusive); read-only where writing is refused.
pub fn open_for_flock(path: &Path) -> nix::Result<OwnedFd> {
    match open_existing(path, true) {
        Err(Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::ETXTBSY) => open_existing(path, false),
        other => other,
    }
}

/// Opens an existing file for reading and writing with O_DIRECT (no client page cache),
/// without following a symlink. EINVAL where the filesystem has no O_DIRECT.
pub fn open_existing_direct(path: &Path) -> nix::Result<OwnedFd> {
    open_nofollow(path, OFlag::O_RDWR | OFlag::O_DIRECT)
}

fn open_nofollow(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    retry(|| fcntl::open(path, flags, Mode::empty()))
}

/// Creates a new file that did not exist (O_EXCL), mode 0644 at most. EEXIST is
/// reported as is (see [`create_fresh`] for names drawn for the call).
pub fn create_new(path: &Path) -> nix::Result<OwnedFd> {
    // Read and write: NFSv4 clients emulate flock with byte-range locks, which need a
    // descriptor open for reading (shared) or writing (exclusive).
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::S_IRUSR | Mode::S_IWUSR | Mode::S_IRGRP | Mode::S_IROTH;
    retry(|| fcntl::open(path, flags, mode))
}

/// Creates a new file (O_EXCL) under `path`, whose last component carries 64 bits this
/// very call drew from getrandom(2) (see `random`). An NFS server that sees the create
/// retransmitted after a lost reply answers EEXIST for our own new file; such a file is
/// taken over only with proof that it is ours: nobody could have known the name before
/// our request made it, and it is exactly what that request made (a regular file of our
/// user, empty, one link, not group- or world-writable). Anything else at the name is a
/// collision (EEXIST): the caller draws another name.
///
/// The proof rests on the name being unpredictable and fresh: a stream of names that a
/// forked child inherits, or a name reused across calls, would let a sibling's file pass
/// for our own (two processes sharing one claim, both "holding" the lock).
pub fn create_fresh(path: &Path) -> nix::Result<OwnedFd> {
    match create_new(path) {
        Err(Errno::EEXIST) => made_by_our_request(path).ok_or(Errno::EEXIST),
        other => other,
    }
}

fn made_by_our_request(path: &Path) -> Option<OwnedFd> {
    let fd = open_existing(path, true).ok()?;
    let st = fstat(&fd).ok()?;
    let ours =
        is_regular(&st) && st.st_uid == nix::unistd::geteuid().as_raw() && st.st_size == 0 && st.st_nlink == 1 && st.st_mode & 0o022 == 0;
    ours.then_some(fd)
}

/// The one way the library makes a private file (a claim, a session record, an ID
/// claim, a counter's temporary): `create` makes it at `path`, a name nobody else uses
/// (an O_EXCL create, [`create_new`] or [`create_fresh`], possibly wrapped: a claim's
/// descriptor is opened and registered as one a forked child must not keep in one step);
/// `before_write` runs on it next (a flock; its error ends the making); then `data` is
/// written at its start durably ([`write_durably`]) and its status read. Once `create`
/// has made the file, any later failure removes it again, so it is there whole or not
/// at all. Errors of `create` (EEXIST: the caller draws another name or decides what a
/// file in the way is) are returned as they are.
pub fn create_private<F: AsFd>(
    path: &Path,
    data: &[u8],
    create: impl FnOnce() -> nix::Result<F>,
    before_write: impl FnOnce(&F) -> nix::Result<()>,
) -> nix::Result<(F, stat::FileStat)> {
    let fd = create()?;
    let made = before_write(&fd).and_then(|()| write_durably(&fd, data).map_err(|e| io_errno(&e))).and_then(|()| fstat(&fd));
    match made {
        Ok(st) => Ok((fd, st)),
        Err(e) => {
            // Our own fresh name: a blind unlink can only find it gone.
            let _ = unlink(path);
            Err(e)
        }
    }
}

pub fn fstat(fd: &impl AsFd) -> nix::Result<stat::FileStat> {
    retry(|| stat::fstat(fd.as_fd()))
}

/// Writes all of `data` at offset 0 and makes it durable, so that a lock linked to this
/// file can never be seen, even after a crash, without its record.
///
/// The write is repeated after a transient error (same bytes, same place); the sync is
/// not: after a failed fsync the kernel may have dropped the dirty pages, and a second
/// one could report success for data that never reached the disk.
pub fn write_durably(fd: &impl AsFd, data: &[u8]) -> std::io::Result<()> {
    let write_all = || {
        let mut done = 0;
        while done < data.len() {
            match nix::sys::uio::pwrite(fd.as_fd(), &data[done..], done as i64) {
                Ok(0) => return Err(Errno::EIO),
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    retry(write_all).map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    unistd::fdatasync(fd.as_fd()).map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

/// Reads the file from its start, at most `limit` bytes; `Ok(None)` when it holds more.
/// A transient error starts the read over.
pub fn read_capped(file: &File, limit: usize) -> nix::Result<Option<Vec<u8>>> {
    retry(|| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match file.read_at(&mut chunk, buf.len() as u64) {
                Ok(0) => return Ok(Some(buf)),
                Ok(n) if buf.len() + n > limit => return Ok(None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_errno(&e)),
            }
        }
    })
}

/// flock(LOCK_EX|LOCK_NB): exclusion between cleaners on one host, and proof that no
/// live process holds its shared liveness flock on the file.
pub fn try_flock_exclusive(fd: &impl AsRawFd) -> nix::Result<()> {
    flock(fd, libc::LOCK_EX | libc::LOCK_NB)
}

/// flock(LOCK_SH|LOCK_NB): a holder's "I am alive" mark on its own claim.
pub fn try_flock_shared(fd: &impl AsRawFd) -> nix::Result<()> {
    flock(fd, libc::LOCK_SH | libc::LOCK_NB)
}

fn flock(fd: &impl AsRawFd, op: libc::c_int) -> nix::Result<()> {
    // SAFETY: the fd is valid for the duration of the call.
    retry(|| Errno::result(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop))
}

/// Whether `path` is on a filesystem of this machine only (ext4, xfs, btrfs, tmpfs),
/// where every process sees one page cache. Anything else (NFS, FUSE, unknown) is not.
pub fn is_local_fs(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
    statfs(path).is_ok_and(|fs| [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, TMPFS_MAGIC].contains(&fs.filesystem_type()))
}

/// fsync(2) of a directory: makes the names created or removed in it durable.
pub fn sync_dir(dir: &Path) -> nix::Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = retry(|| fcntl::open(dir, flags, Mode::empty()))?;
    match unistd::fsync(&fd) {
        // Some filesystems cannot sync a directory; their names are durable anyway
        // (NFS: the server commits namespace changes before it replies).
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(()),
        other => other,
    }
}

pub fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_names_every_entry_and_a_missing_directory_is_enoent_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        std::fs::write(dir.path().join("b"), b"").unwrap();
        let mut names = list(dir.path()).unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        // The ENOENT retry is only for a directory that is still there.
        assert_eq!(list(&dir.path().join("gone")), Err(Errno::ENOENT));
    }

    #[test]
    fn a_repeated_link_of_a_private_name_counts_once_it_names_our_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs, name) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("m"));
        std::fs::write(&ours, b"a").unwrap();
        std::fs::write(&theirs, b"b").unwrap();
        let (id, other) = (id_of(&ours).unwrap(), id_of(&theirs).unwrap());
        link_private(&ours, &name, id).unwrap();
        // As a retransmitted LINK whose first reply was lost: EEXIST, and the name is ours.
        link_private(&ours, &name, id).unwrap();
        // The name holding another file stays an error, and that file stays.
        assert_eq!(link_private(&theirs, &name, other), Err(Errno::EEXIST));
        assert_eq!(id_of(&name).unwrap(), id);
    }

    #[test]
    fn a_private_file_is_there_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (fd, st) = create_private(&path, b"record", || create_new(&path), |_| Ok(())).unwrap();
        assert_eq!(st.st_size, 6);
        assert_eq!(id_of(&path).unwrap(), FileId::from(&fstat(&fd).unwrap()));
        assert_eq!(std::fs::read(&path).unwrap(), b"record");
        assert_eq!(st.st_mode & 0o022, 0, "never group- or world-writable");
        // The create's own error as it is, and the name left alone.
        assert_eq!(create_private(&path, b"x", || create_new(&path), |_| Ok(())).err(), Some(Errno::EEXIST));
        assert_eq!(std::fs::read(&path).unwrap(), b"record");
        // A failure after the create removes the new file.
        let other = dir.path().join("g");
        let failed = create_private(&other, b"x", || create_new(&other), |_| Err(Errno::EWOULDBLOCK));
        assert_eq!(failed.err(), Some(Errno::EWOULDBLOCK));
        assert_eq!(lstat(&other).err(), Some(Errno::ENOENT));
        // A write that fails (a read-only descriptor) too.
        let ro = || create_new(&other).and_then(|_| open_existing(&other, false));
        assert_eq!(create_private(&other, b"x", ro, |_| Ok(())).err(), Some(Errno::EBADF));
        assert_eq!(lstat(&other).err(), Some(Errno::ENOENT));
    }
}
