//! The note a breaker leaves: `P.nfs_lock.broken`, who broke which hold and why, so
//! that the holder that learns it lost its lease can say more than "lost".
//!
//! The note names the broken claim; a holder shows it only when it names its own claim
//! (a note left by an earlier break is somebody else's story). It is written to a fresh
//! private file and renamed into place: readers never see half a note.

use std::path::{Path, PathBuf};

use crate::fsops;

/// The suffix of the note, after `P.nfs_lock`.
pub const NOTE_SUFFIX: &str = ".broken";
const MAX_NOTE: usize = 4096;

fn note_path(lock: &Path) -> PathBuf {
    let mut p = lock.as_os_str().to_os_string();
    p.push(NOTE_SUFFIX);
    p.into()
}

/// Leaves the note for the hold of `claim` (best effort: a break stands without it).
pub fn write(lock: &Path, claim: &str, text: &str) {
    let dir = lock.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".nfslock-note-{}", crate::random::unpredictable_hex()));
    let mut body = format!("claim {claim}\n{text}");
    body.truncate(MAX_NOTE);
    let written = fsops::create_new(&tmp).and_then(|fd| fsops::write_durably(&fd, body.as_bytes()).map_err(|e| fsops::io_errno(&e)));
    let placed =
        written.and_then(|()| fsops::retry(|| nix::fcntl::renameat(nix::fcntl::AT_FDCWD, &tmp, nix::fcntl::AT_FDCWD, &note_path(lock))));
    if placed.is_err() {
        let _ = fsops::unlink(&tmp);
    }
}

/// Why the hold of `claim` on `lock` was lost, with the breaker's note if it left one.
pub fn why_broken(lock: &Path, claim: &str) -> String {
    let base = "the lease was broken: its token was taken by another process (renewals were overdue past the lease, \
                or an operator broke it)";
    let Ok(fd) = fsops::open_existing(&note_path(lock), false) else { return base.to_string() };
    let Ok(Some(bytes)) = fsops::read_capped(&std::fs::File::from(fd), MAX_NOTE) else { return base.to_string() };
    let text = String::from_utf8_lossy(&bytes);
    match text.strip_prefix(&format!("claim {claim}\n")) {
        Some(note) => format!("{base}; {}", note.trim_end()),
        None => base.to_string(),
    }
}
