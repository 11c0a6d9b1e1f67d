//! Claim files and the `P` copy.
//!
//! A claim is a private file `.nfslock-<16 hex>` in the lock's directory, created with
//! O_EXCL under an unpredictable name, holding this process's complete record before it
//! is linked to `P.nfs_lock`: the lock never exists without its record. Claims of a
//! process are removed at its exit; those of a crashed process by the next cleanup of a
//! dead holder in that directory.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;

use crate::fsops::{self, FileId};
use super::registry::Claim;
use crate::host::{self, Owner};
use crate::record::{Record, MAX_RECORD_LEN};

const PREFIX: &str = ".nfslock-";
const NAME_LEN: usize = PREFIX.len() + 16;

fn fresh_name(dir: &Path) -> PathBuf {
    dir.join(format!("{PREFIX}{}", crate::random::unpredictable_hex()))
}

fn is_claim_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() == NAME_LEN && b.starts_with(PREFIX.as_bytes()) && b[PREFIX.len()..].iter().all(u8::is_ascii_hexdigit)
}

/// Creates a file under a fresh unpredictable name in `dir`; retries name collisions.
fn create_private(dir: &Path) -> nix::Result<(PathBuf, OwnedFd)> {
    let mut collisions = 0;
    loop {
        let path = fresh_name(dir);
        match fsops::create_new(&path) {
            Ok(fd) => return Ok((path, fd)),
            // 64 random bits: a collision is a file someone else put there (or our own
            // create whose reply was lost); never adopted, another name is drawn.
            Err(Errno::EEXIST) if collisions < 32 => collisions += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Creates a claim in `dir` holding `record` (durably: see fsops::write_durably), with
/// this process's shared liveness flock on it.
pub fn create(dir: &Path, record: &[u8], message: &[u8]) -> nix::Result<Claim> {
    let (path, fd) = create_private(dir)?;
    let file = File::from(fd);
    let made = fsops::fstat(&file).and_then(|st| {
        fsops::write_durably(&file, record).map_err(|e| fsops::io_errno(&e))?;
        // Where flock is unsupported (EOPNOTSUPP, ENOLCK) liveness falls back to pid and
        // start time alone, as in Core.
        match fsops::try_flock_shared(&file) {
            Ok(()) | Err(Errno::EOPNOTSUPP | Errno::ENOLCK | Errno::EINVAL) => Ok(FileId::from(&st)),
            Err(e) => Err(e),
        }
    });
    match made {
        Ok(id) => {
            let local = fsops::is_local_fs(dir);
            Ok(Claim { path, id, message: message.to_vec(), local, liveness: Arc::new(file.into()) })
        }
        Err(e) => {
            let _ = fsops::unlink(&path);
            Err(e)
        }
    }
}

/// Replaces `copy_path` (the `P` of `P.nfs_lock`) with a new file holding `record`, so
/// that readers of `P`, as Core documents it, see the holder. The file is renamed into
/// place, never written through: a `P` that is a hard link to something else is not
/// modified, and a symlink at `P` is refused (ELOOP) with its target untouched.
pub fn write_copy(dir: &Path, copy_path: &Path, record: &[u8]) -> Result<(), (Errno, &'static str)> {
    match fsops::lstat(copy_path) {
        Ok(st) if fsops::is_symlink(&st) => return Err((Errno::ELOOP, "lstat")),
        Ok(st) if !fsops::is_regular(&st) => return Err((Errno::EISDIR, "lstat")),
        Ok(_) | Err(Errno::ENOENT) => {}
        Err(e) => return Err((e, "lstat")),
    }
    let (tmp, fd) = create_private(dir).map_err(|e| (e, "open"))?;
    let file = File::from(fd);
    let written = (&file).write_all(record).map_err(|e| (fsops::io_errno(&e), "write"));
    let placed = written.and_then(|()| fsops::rename_placing(&file, &tmp, copy_path).map_err(|e| (e, "rename")));
    if placed.is_err() {
        let _ = fsops::unlink(&tmp);
    }
    placed
}

/// Removes the claim files in `dir` left by dead processes of this host.
pub fn sweep_orphans(dir: &Path, this_host: &[u8]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_claim_name(&name) {
            continue;
        }
        let path = dir.join(&name);
        let Some((record, file)) = orphan_record(&path) else { continue };
        // The flock proves no live process keeps this claim, whatever the record says;
        // it is held until after the unlink.
        if host::owner_of(&record, this_host) == Owner::Dead && fsops::try_flock_exclusive(&file).is_ok() {
            let _ = fsops::unlink(&path);
        }
    }
}

fn orphan_record(path: &Path) -> Option<(Record, File)> {
    let fd = fsops::open_existing(path, false).ok()?;
    if !fsops::is_regular(&fsops::fstat(&fd).ok()?) {
        return None;
    }
    let file = File::from(fd);
    let bytes = fsops::read_capped(&file, MAX_RECORD_LEN).ok()??;
    Some((Record::parse(&bytes).ok()?, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_are_recognised_exactly() {
        let dir = Path::new("/d");
        let name = fresh_name(dir);
        assert!(is_claim_name(name.file_name().unwrap()));
        for other in [".nfslock-", ".nfslock-0123456789abcdeg", "x.nfs_lock", ".nfslock-0123456789abcdef0"] {
            assert!(!is_claim_name(OsStr::new(other)), "{other}");
        }
    }
}
