//! Fencing tokens: a number per locked path, strictly greater for every later
//! acquisition that asks for one, surviving crashes and reboots.
//!
//! The counter is the size of `P.nfs_lock.fence`. Taking a token writes one byte at the
//! current end and syncs it: a write never makes a file shorter, so a slow or stale
//! writer can never move the counter back, whatever it read. The caller then proves it
//! still held the lock after the write (see docs/lease-protocol.md); only then is the
//! new size its token. The file grows by one byte per token handed out.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::Mode;

use crate::fsops;

/// The suffix of the counter file, after `P.nfs_lock`.
pub const FENCE_SUFFIX: &str = ".fence";

/// The counter file of the lock file `lock` (`P.nfs_lock.fence`).
pub fn counter_path(lock: &Path) -> PathBuf {
    let mut p = lock.as_os_str().to_os_string();
    p.push(FENCE_SUFFIX);
    p.into()
}

fn open_counter(path: &Path, create: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    if create {
        flags |= OFlag::O_CREAT;
    }
    let fd = fsops::retry(|| fcntl::open(path, flags, Mode::S_IRUSR | Mode::S_IWUSR))?;
    let st = fsops::fstat(&fd)?;
    if !fsops::is_regular(&st) {
        return Err(Errno::EINVAL);
    }
    Ok(fd)
}

/// The last token handed out on the lock file `lock` (0: none yet, or no counter file).
pub fn last(lock: &Path) -> nix::Result<u64> {
    match open_counter(&counter_path(lock), false) {
        Ok(fd) => Ok(fsops::fstat(&fd)?.st_size as u64),
        Err(Errno::ENOENT) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Grows the counter of `lock` by one and returns the new size: the token, valid only
/// if the caller then proves it still held the lock. ELOOP: a symlink at the counter's
/// name (never followed); EINVAL: not a regular file.
pub fn grow(lock: &Path) -> nix::Result<u64> {
    let path = counter_path(lock);
    let fd = match open_counter(&path, false) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            let fd = open_counter(&path, true)?;
            // The file's name must survive a crash too, or the counter restarts at 0.
            if let Some(dir) = path.parent() {
                fsops::sync_dir(dir)?;
            }
            fd
        }
        Err(e) => return Err(e),
    };
    // A fresh open revalidates the size over NFS (close-to-open consistency).
    let size = fsops::fstat(&fd)?.st_size;
    let written = fsops::retry(|| nix::sys::uio::pwrite(&fd, b"\n", size));
    if written? != 1 {
        return Err(Errno::EIO);
    }
    fsops::retry(|| nix::unistd::fdatasync(&fd))?;
    Ok(size as u64 + 1)
}
