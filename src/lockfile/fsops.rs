//! The few filesystem operations the protocol is built from, each retried a bounded
//! number of times on EINTR and ESTALE (an NFS handle invalidated by another client),
//! and never following a symlink at the final path component.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd;

/// How often a call is repeated after EINTR or ESTALE before the error is reported.
const TRANSIENT_RETRIES: u32 = 8;

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
            Err(Errno::EINTR | Errno::ESTALE) if left > 0 => left -= 1,
            result => return result,
        }
    }
}

pub fn link(from: &Path, to: &Path) -> nix::Result<()> {
    // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
    retry(|| unistd::linkat(fcntl::AT_FDCWD, from, fcntl::AT_FDCWD, to, AtFlags::empty()))
}

pub fn unlink(path: &Path) -> nix::Result<()> {
    retry(|| unistd::unlink(path))
}

pub fn rename(from: &Path, to: &Path) -> nix::Result<()> {
    retry(|| fcntl::renameat(fcntl::AT_FDCWD, from, fcntl::AT_FDCWD, to))
}

/// lstat(2): the identity and type of the name itself.
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

/// Opens an existing file without following a symlink and without blocking on a FIFO.
pub fn open_existing(path: &Path, write: bool) -> nix::Result<OwnedFd> {
    let access = if write { OFlag::O_RDWR } else { OFlag::O_RDONLY };
    let flags = access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    retry(|| fcntl::open(path, flags, Mode::empty()))
}

/// Creates a new file that did not exist (O_EXCL), mode 0644 at most.
pub fn create_new(path: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::S_IRUSR | Mode::S_IWUSR | Mode::S_IRGRP | Mode::S_IROTH;
    retry(|| fcntl::open(path, flags, mode))
}

pub fn fstat(fd: &impl AsFd) -> nix::Result<stat::FileStat> {
    retry(|| stat::fstat(fd.as_fd()))
}

/// Writes all of `data` at offset 0 and makes it durable, so that a lock linked to this
/// file can never be seen, even after a crash, without its record.
pub fn write_durably(file: &File, data: &[u8]) -> std::io::Result<()> {
    file.write_all_at(data, 0)?;
    file.sync_data()
}

/// Reads at most `limit` bytes; `Ok(None)` when the file holds more than that.
pub fn read_capped(file: &File, limit: usize) -> nix::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(256);
    match file.take(limit as u64 + 1).read_to_end(&mut buf) {
        Ok(n) if n > limit => Ok(None),
        Ok(_) => Ok(Some(buf)),
        Err(e) => Err(io_errno(&e)),
    }
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

pub fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}
