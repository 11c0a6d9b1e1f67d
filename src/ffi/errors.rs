//! Error text and version: `nfslock_strerror`, `nfslock_last_error`, `nfslock_version`.

use std::ffi::{c_char, c_int, CStr};

use super::boundary::{ffi_guard_ptr, last_error_ptr};

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
