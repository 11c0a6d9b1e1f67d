//! Claim files.
//!
//! A claim is a private file `.nfslock-<16 hex>` in the lock's directory, created with
//! O_EXCL under an unpredictable name, holding this process's complete record before it
//! is linked to `P.nfs_lock`: the lock never exists without its record. Claims of a
//! process are removed at its exit; those of a crashed process by the next cleanup of a
//! dead holder in that directory.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;

use super::registry::Claim;
use crate::fsops::{self, FileId};
use crate::host::{self, Owner};
use crate::process::ChildlessFd;
use crate::record::{Record, MAX_RECORD_LEN};

const PREFIX: &str = ".nfslock-";
const NAME_LEN: usize = PREFIX.len() + 16;

fn fresh_name(dir: &Path) -> PathBuf {
    dir.join(format!("{PREFIX}{}", crate::random::unpredictable_hex()))
}

/// The 16 hex digits of a claim's name.
pub fn hex_of(path: &Path) -> &str {
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
    name.get(PREFIX.len()..).unwrap_or_default()
}

fn is_claim_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() == NAME_LEN && b.starts_with(PREFIX.as_bytes()) && b[PREFIX.len()..].iter().all(u8::is_ascii_hexdigit)
}

/// Creates a claim in `dir` holding `record` (durably: see fsops::create_private), with
/// this process's shared liveness flock on it, under a fresh unpredictable name.
///
/// Its descriptor is opened and registered as one a forked child must not keep in one
/// step that no fork(2) can split (see `ChildlessFd::open`): a child forked meanwhile by
/// another thread would otherwise keep the flock that says this process is alive. The
/// flock comes before the write, so a sweep on this host does not take a claim being
/// written for an orphan.
pub fn create(dir: &Path, record: &[u8], message: &[u8]) -> nix::Result<Claim> {
    create_with(dir, &|_| record.to_vec(), message)
}

/// [`create`] with a record that names the claim (a lease's record carries its claim's
/// 16 hex digits): `record_for` gets them.
pub fn create_with(dir: &Path, record_for: &dyn Fn(&str) -> Vec<u8>, message: &[u8]) -> nix::Result<Claim> {
    let (mut collisions, mut swept) = (0, 0);
    loop {
        let path = fresh_name(dir);
        let record = record_for(hex_of(&path));
        // The name was drawn for this call: a lost reply's EEXIST is recognised as ours.
        let open = || ChildlessFd::open(|| fsops::create_fresh(&path));
        match fsops::create_private(&path, &record, open, liveness_flock) {
            Ok((fd, st)) => {
                let local = fsops::is_local_fs(dir);
                return Ok(Claim { path, id: FileId::from(&st), message: message.to_vec(), local, liveness: Arc::new(fd) });
            }
            // A file someone else put under 64 random bits: draw another name.
            Err(Errno::EEXIST) if collisions < 32 => collisions += 1,
            // A sweep of another process took the empty file between our create and our
            // flock (its exclusive flock is held until it unlinks): a fresh name.
            Err(Errno::EWOULDBLOCK) if swept < 7 => swept += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The shared flock that says the claim's process is alive. Where flock is unsupported
/// (EOPNOTSUPP, ENOLCK) liveness falls back to pid and start time alone, as in Core.
fn liveness_flock(fd: &ChildlessFd) -> nix::Result<()> {
    match fsops::try_flock_shared(fd) {
        Ok(()) | Err(Errno::EOPNOTSUPP | Errno::ENOLCK | Errno::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the claim files (and lease tokens) in `dir` that no live process keeps: those whose record
/// names a dead process of this host, and those of our own user without a whole record
/// (a process killed between the create and the write, or our own create whose reply
/// was lost). A claim is removed only under an exclusive flock (no live process of this
/// host holds its liveness flock) and only while its name still names the file read.
///
/// Removing a claim another host is still writing is safe: its link(2) by name then
/// fails with ENOENT, and it starts over with a fresh claim.
pub fn sweep_orphans(dir: &Path, this_host: &[u8]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        // Lease tokens are claims too, under the names their epochs give them.
        if !is_claim_name(&name) && !super::token::is_token_name(&name) {
            continue;
        }
        let path = dir.join(&name);
        let Some(orphan) = read_orphan(&path) else { continue };
        let dead = match &orphan.record {
            Some(record) => host::owner_of(record, this_host) == Owner::Dead,
            None => orphan.uid == me,
        };
        // The flock proves no live process of this host keeps this claim, whatever the
        // record says; it is held until after the unlink.
        if dead && fsops::try_flock_exclusive(&orphan.file).is_ok() {
            let _ = fsops::unlink_if_is(&path, orphan.id);
        }
    }
}

struct Orphan {
    file: File,
    id: FileId,
    uid: u32,
    /// None: the file holds no whole record.
    record: Option<Record>,
}

fn read_orphan(path: &Path) -> Option<Orphan> {
    let fd = fsops::open_for_flock(path).ok()?;
    let st = fsops::fstat(&fd).ok()?;
    if !fsops::is_regular(&st) || st.st_nlink != 1 {
        // Not a file, or linked elsewhere too (a lock file, or a name someone else made).
        return None;
    }
    let file = File::from(fd);
    let bytes = fsops::read_capped(&file, MAX_RECORD_LEN).ok()??;
    Some(Orphan { id: FileId::from(&st), uid: st.st_uid, record: Record::parse(&bytes).ok(), file })
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
