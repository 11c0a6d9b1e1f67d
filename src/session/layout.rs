//! Where a repository's files are. For the ID namespace NAME in directory DIR:
//!
//! ```text
//! DIR/NAME.counter            the next ID (counter.rs)
//! DIR/NAME.guard[.nfs_lock]   a lock file serialising reapers, check and repair
//! DIR/NAME.writer[.nfs_lock]  a lock file held by a writer on NFS around its counter
//!                             update, with the counter's token (token.rs)
//! DIR/NAME.sessions/<sid>     one record per open session (record.rs)
//! DIR/NAME.sessions/.open-<sid>  a record being written, before it is linked to <sid>
//! DIR/NAME.ids/<id>           one file per locked ID: a hard link of its session's claim
//! DIR/NAME.ids/.claim-<sid>-<n>   the claims: "nfslock-idlock 1 session <sid>\n"
//! ```

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::{Error, Result};

/// The default ID namespace (a NULL name in the C API).
pub const DEFAULT_NAME: &str = "default";
const MAX_NAME: usize = 200;
const CLAIM_PREFIX: &str = ".claim-";
const OPENING_PREFIX: &str = ".open-";

/// Whether a name in the sessions directory is a record being written (`.open-<sid>`).
pub fn is_opening_name(name: &[u8]) -> bool {
    name.strip_prefix(OPENING_PREFIX.as_bytes()).is_some_and(is_session_id)
}

/// The paths of one repository and ID namespace.
#[derive(Debug, Clone)]
pub struct Repo {
    pub dir: PathBuf,
    pub counter: PathBuf,
    pub guard: PathBuf,
    /// The writer lock (token.rs), and the file that exists while it is held.
    pub writer: PathBuf,
    pub writer_held: PathBuf,
    pub sessions: PathBuf,
    pub ids: PathBuf,
    /// The repository directory's owner, once it has been verified (maintenance.rs):
    /// besides this process's user and root, the only user whose counter is trusted.
    pub owner: Option<u32>,
}

impl Repo {
    pub fn new(op: &'static str, dir: &Path, name: &str) -> Result<Repo> {
        let bad = |why: &str| Err(Error::new(Errno::EINVAL, op, Some(dir), format!("namespace {name:?}: {why}")));
        if dir.as_os_str().is_empty() {
            return Err(Error::new(Errno::EINVAL, op, None, "the directory path is empty"));
        }
        if name.is_empty() || name == "." || name == ".." {
            return bad("not a usable name");
        }
        if name.len() > MAX_NAME {
            return bad("longer than 200 bytes");
        }
        if name.bytes().any(|b| b == b'/' || b == 0) {
            return bad("contains '/' or a NUL byte");
        }
        let file = |suffix: &str| dir.join(format!("{name}.{suffix}"));
        let writer = file("writer");
        let mut writer_held = writer.clone().into_os_string();
        writer_held.push(crate::lockfile::LOCK_SUFFIX);
        Ok(Repo {
            dir: dir.to_path_buf(),
            counter: file("counter"),
            guard: file("guard"),
            writer,
            writer_held: writer_held.into(),
            sessions: file("sessions"),
            ids: file("ids"),
            owner: None,
        })
    }

    pub fn id_path(&self, id: u64) -> PathBuf {
        self.ids.join(id.to_string())
    }

    pub fn session_path(&self, sid: &str) -> PathBuf {
        self.sessions.join(sid)
    }

    /// Where session `sid`'s record is written before it is linked to its name.
    pub fn opening_path(&self, sid: &str) -> PathBuf {
        self.sessions.join(format!("{OPENING_PREFIX}{sid}"))
    }

    /// Whether a file of user `uid` may be one of the repository's own: made by this
    /// process's user, root, or the repository directory's owner.
    pub fn trusts_owner(&self, uid: u32) -> bool {
        uid == nix::unistd::geteuid().as_raw() || uid == 0 || self.owner == Some(uid)
    }

    /// A temporary name for a new counter file (`.NAME.counter.<16 hex>`), made only by
    /// the guard's holder and renamed or linked into place.
    pub fn counter_temp_path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!(".{}.{hex}", self.counter_name()))
    }

    /// Whether `name` (in the repository directory) is a counter temporary name.
    pub fn is_counter_temp(&self, name: &[u8]) -> bool {
        let prefix = format!(".{}.", self.counter_name());
        name.strip_prefix(prefix.as_bytes()).is_some_and(is_session_id)
    }

    fn counter_name(&self) -> String {
        self.counter.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    pub fn claim_path(&self, sid: &str, n: u32) -> PathBuf {
        self.ids.join(format!("{CLAIM_PREFIX}{sid}-{n}"))
    }
}

/// A fresh session id: 16 lowercase hex digits nobody can predict.
pub fn new_session_id() -> String {
    crate::random::unpredictable_hex()
}

pub fn is_session_id(name: &[u8]) -> bool {
    name.len() == 16 && name.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// What a name in the ids directory is.
#[derive(Debug, PartialEq, Eq)]
pub enum IdsEntry {
    /// A locked ID.
    Id(u64),
    /// A session's claim: (session id, its number).
    Claim(String, u32),
    Other,
}

pub fn classify(name: &OsStr) -> IdsEntry {
    let b = name.as_bytes();
    if !b.is_empty() && b.len() <= 20 && b.iter().all(u8::is_ascii_digit) && (b == b"0" || b[0] != b'0') {
        if let Some(id) = std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()) {
            return IdsEntry::Id(id);
        }
    }
    if let Some(rest) = b.strip_prefix(CLAIM_PREFIX.as_bytes()) {
        if rest.len() > 17 && is_session_id(&rest[..16]) && rest[16] == b'-' {
            if let Some(n) = std::str::from_utf8(&rest[17..]).ok().and_then(|s| s.parse().ok()) {
                return IdsEntry::Claim(String::from_utf8_lossy(&rest[..16]).into_owned(), n);
            }
        }
    }
    IdsEntry::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_exactly() {
        assert_eq!(classify(OsStr::new("0")), IdsEntry::Id(0));
        assert_eq!(classify(OsStr::new("18446744073709551615")), IdsEntry::Id(u64::MAX));
        assert_eq!(classify(OsStr::new(".claim-0123456789abcdef-3")), IdsEntry::Claim("0123456789abcdef".into(), 3));
        for other in ["007", "18446744073709551616", "1a", "", ".claim-0123456789abcdeF-3", ".claim-0123456789abcdef-", "x.nfs_lock"] {
            assert_eq!(classify(OsStr::new(other)), IdsEntry::Other, "{other}");
        }
    }

    #[test]
    fn bad_names_are_einval() {
        for name in ["", ".", "..", "a/b", "a\0b"] {
            assert_eq!(Repo::new("t", Path::new("/d"), name).unwrap_err().sys_errno(), Errno::EINVAL, "{name:?}");
        }
        assert_eq!(Repo::new("t", Path::new("/d"), "jobs").unwrap().counter, Path::new("/d/jobs.counter"));
    }
}
