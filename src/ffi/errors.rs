//! Error text and version: `nfslock_strerror`, `nfslock_last_error`, `nfslock_version`,
//! `nfslock_version_check`.

use std::ffi::{c_char, c_int, CStr};

use nix::errno::Errno;

use super::boundary::{ffi_guard, ffi_guard_ptr, last_error_ptr};
use crate::error::Error;

// The exports of this file, each bound to NFSLOCK_0 (see `symbol_versions!`).
symbol_versions!(nfslock_strerror, nfslock_last_error, nfslock_version, nfslock_version_check,);

/// Static text for every code the library returns, in the sense it has here.
fn describe(code: c_int) -> &'static CStr {
    match code {
        0 => c"success",
        libc::EAGAIN => c"the lock is held by another process, host or thread",
        libc::ETIMEDOUT => c"timed out waiting for the lock",
        libc::EDEADLK => c"the calling thread already holds this lock",
        libc::ENOLCK => c"the lock was no longer ours: removed or replaced by someone else",
        libc::EPERM => c"not permitted: held by a live process or another host, or a handle inherited through fork",
        libc::EACCES => c"permission denied",
        libc::EROFS => c"read-only file system",
        libc::ENOENT => c"not locked (no such lock or ID lock), or the directory or the ID counter does not exist",
        libc::ENAMETOOLONG => c"file name too long",
        libc::ELOOP => c"a symlink is where a lock file should be; it is never followed",
        libc::EBADMSG => c"not a valid record: a lock file, an ID counter or a session record (or a failed check)",
        libc::ERANGE => c"the buffer is too small",
        libc::EINVAL => c"invalid argument",
        libc::EISDIR => c"the locked path is a directory",
        libc::ENOSPC => c"no space left on device",
        libc::EIO => c"input/output error",
        libc::ESTALE => c"stale: an NFS file handle, or a session that expired (paused past its timeout or reaped)",
        libc::ENOTDIR => c"a component of the path is not a directory",
        libc::ENOTRECOVERABLE => c"internal error in libnfslock (a caught panic)",
        libc::ENOTSUP => c"this libnfslock is older than, or incompatible with, the header the program was built with",
        _ => c"unknown error code",
    }
}

/// Static, NUL-terminated text describing `code` (0, any errno the library returns, or
/// anything else: "unknown error code"). Never NULL; never freed.
#[no_mangle]
pub extern "C" fn nfslock_strerror(code: c_int) -> *const c_char {
    ffi_guard_ptr(|| describe(code).as_ptr(), c"unknown error code")
}

/// The calling thread's last failure: the operation, the path and the cause, e.g.
/// `nfslock_create /d/x: held by pid 12 on host a (message "backup")`. "" before any
/// failure; successes do not clear it. Never NULL. The pointer stays valid until the
/// next libnfslock call on the same thread that fails; copy the text to keep it.
#[no_mangle]
pub extern "C" fn nfslock_last_error() -> *const c_char {
    ffi_guard_ptr(last_error_ptr, c"")
}

/// The library's version, "MAJOR.MINOR.PATCH", matching the NFSLOCK_VERSION_* macros
/// of the header it was built with. Static; never NULL.
#[no_mangle]
pub extern "C" fn nfslock_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the version has no NUL"),
    };
    ffi_guard_ptr(|| VERSION.as_ptr(), c"")
}

/// Whether this library can serve a program compiled with the header of version
/// `major`.`minor`.`patch` (pass NFSLOCK_VERSION_MAJOR, _MINOR, _PATCH, or use the
/// NFSLOCK_VERSION_CHECK() macro). It can when it has the same major version (for 0.x,
/// the same minor too, as the SONAME libnfslock.so.0.MINOR says) and is at least that
/// version.
///
/// Errors: ENOTSUP the library is older or of another series (both versions are in
/// `nfslock_last_error()`); EINVAL a negative number.
#[no_mangle]
pub extern "C" fn nfslock_version_check(major: c_int, minor: c_int, patch: c_int) -> c_int {
    ffi_guard("nfslock_version_check", || {
        let op = "nfslock_version_check";
        let wanted = match (u32::try_from(major), u32::try_from(minor), u32::try_from(patch)) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => return Err(Error::invalid(op, format!("a version has no negative part: {major}.{minor}.{patch}"))),
        };
        let ours = (super::NFSLOCK_VERSION_MAJOR, super::NFSLOCK_VERSION_MINOR, super::NFSLOCK_VERSION_PATCH);
        if serves(ours, wanted) {
            return Ok(());
        }
        let (a, b, c) = wanted;
        let (x, y, z) = ours;
        Err(Error::new(
            Errno::ENOTSUP,
            op,
            None,
            format!("the program was built against libnfslock {a}.{b}.{c}, this library is {x}.{y}.{z}"),
        ))
    })
}

/// Semver compatibility of a library of version `ours` for a header of version `wanted`.
fn serves(ours: (u32, u32, u32), wanted: (u32, u32, u32)) -> bool {
    let same_series = ours.0 == wanted.0 && (ours.0 != 0 || ours.1 == wanted.1);
    same_series && ours >= wanted
}

#[cfg(test)]
mod tests {
    use super::serves;

    #[test]
    fn compatibility_follows_semver_and_the_soname() {
        assert!(serves((0, 1, 0), (0, 1, 0)));
        assert!(serves((0, 1, 3), (0, 1, 2)));
        assert!(!serves((0, 1, 2), (0, 1, 3)), "an older patch may lack a fix the program needs");
        assert!(!serves((0, 2, 0), (0, 1, 0)), "0.x minors are separate series");
        assert!(!serves((0, 1, 0), (1, 0, 0)));
        assert!(serves((1, 4, 0), (1, 2, 7)));
        assert!(!serves((1, 2, 0), (1, 4, 0)));
        assert!(!serves((2, 0, 0), (1, 9, 9)));
    }
}
