//! One error type for the whole library: an errno value that C callers branch on, plus
//! the operation, the path and a cause for a person to read.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// A failed operation. `errno()` is the code the C API returns; `Display` is the text
/// `nfslock_last_error()` shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}{}: {cause}", PathSuffix(.path.as_deref()))]
pub struct Error {
    errno: Errno,
    op: &'static str,
    path: Option<PathBuf>,
    cause: String,
}

struct PathSuffix<'a>(Option<&'a Path>);

impl fmt::Display for PathSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " {}", p.display()),
            None => Ok(()),
        }
    }
}

/// The result of every fallible operation of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(errno: Errno, op: &'static str, path: Option<&Path>, cause: impl Into<String>) -> Self {
        Error { errno, op, path: path.map(Path::to_path_buf), cause: cause.into() }
    }

    /// An error from a system call on `path`, described by the syscall's own name.
    pub(crate) fn sys(errno: Errno, op: &'static str, path: &Path, call: &str) -> Self {
        Error::new(errno, op, Some(path), format!("{call}: {}", errno.desc()))
    }

    pub(crate) fn invalid(op: &'static str, cause: impl Into<String>) -> Self {
        Error::new(Errno::EINVAL, op, None, cause)
    }

    /// The errno value (always positive) the C API returns for this error.
    pub fn errno(&self) -> crate::Errno {
        self.errno.into()
    }

    /// The same value as the system-call layer's type, for the library's own matches.
    pub(crate) fn sys_errno(&self) -> Errno {
        self.errno
    }

    /// The errno value as a plain integer.
    pub fn code(&self) -> i32 {
        self.errno as i32
    }

    /// The operation that failed (`create`, `nfslock_create` through the C API).
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The path the operation was given, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What went wrong, for a person to read.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// Re-labels an error with the operation that ran it (the C API's function name, or
    /// a public operation that used a building block).
    pub(crate) fn in_op(mut self, op: &'static str) -> Self {
        self.op = op;
        self
    }
}

/// For code that speaks `std::io`: the kind follows the errno, and the inner error is
/// this one (`get_ref()` and `downcast_ref::<Error>()` give back its code, operation,
/// path and cause).
impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::new(std::io::Error::from_raw_os_error(e.code()).kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_path_and_cause() {
        let e = Error::sys(Errno::ENOENT, "nfslock_create", Path::new("/d/x"), "link");
        assert_eq!(e.to_string(), "nfslock_create /d/x: link: No such file or directory");
        assert_eq!(e.code(), libc::ENOENT);
        let e = Error::invalid("nfslock_unlock", "handle is NULL");
        assert_eq!(e.to_string(), "nfslock_unlock: handle is NULL");
        assert_eq!(e.errno(), crate::Errno::EINVAL);
        let io = std::io::Error::from(e.clone());
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(io.get_ref().and_then(|r| r.downcast_ref::<Error>()), Some(&e));
    }
}
