//! The error codes the library reports, as a type of its own: the public Rust API does
//! not expose the system-call crate it is built on. The C API returns the same values
//! as plain positive `int`s.

use std::fmt;

/// An errno value (always positive). The library's own codes have constants
/// (`Errno::EAGAIN`, ...); any other value the system reports passes through as is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

macro_rules! codes {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*

            /// The symbolic name (`"EAGAIN"`), for the codes that have a constant.
            pub fn name(self) -> Option<&'static str> {
                $(if self.0 == libc::$name { return Some(stringify!($name)); })*
                None
            }
        }
    };
}

codes!(
    EAGAIN,
    EDEADLK,
    ENOLCK,
    EPERM,
    ENOENT,
    EBADMSG,
    EMSGSIZE,
    ELOOP,
    ERANGE,
    EINVAL,
    EACCES,
    EROFS,
    ENAMETOOLONG,
    EISDIR,
    ENOTDIR,
    ENOSPC,
    EIO,
    ESTALE,
    ETIMEDOUT,
    EMFILE,
    ENFILE,
    EEXIST,
    EINTR,
    EBUSY,
    ENXIO,
    EOPNOTSUPP,
    ENOTRECOVERABLE,
);

impl Errno {
    /// The value from a raw errno number.
    pub fn from_code(code: i32) -> Errno {
        Errno(code)
    }

    /// The plain number, as the C API returns it.
    pub fn code(self) -> i32 {
        self.0
    }

    /// The system's description (strerror).
    pub fn desc(self) -> String {
        std::io::Error::from_raw_os_error(self.0).to_string()
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.desc())
    }
}

impl From<nix::errno::Errno> for Errno {
    fn from(e: nix::errno::Errno) -> Errno {
        Errno(e as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_text() {
        assert_eq!(Errno::EAGAIN.code(), libc::EAGAIN);
        assert_eq!(format!("{:?}", Errno::EDEADLK), "EDEADLK");
        assert_eq!(format!("{:?}", Errno::from_code(4095)), "Errno(4095)");
        assert_eq!(Errno::from(nix::errno::Errno::ENOENT), Errno::ENOENT);
        assert!(!Errno::ENOENT.desc().is_empty());
    }
}
