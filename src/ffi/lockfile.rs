//! C API of the lock-file family. Each function converts its arguments, calls the
//! safe core in `crate::lockfile`, and converts the result; no locking logic lives here.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use super::boundary::{check_fits, copy_out, ffi_guard, optional_bytes_arg, out_arg, path_arg};
use super::handles::LOCKS;
use crate::error::Error;
use crate::lease::Lease;
use crate::lockfile::{self, Lock};

// The exports of this file, each bound to NFSLOCK_0 (see `symbol_versions!`).
symbol_versions!(
    nfslock_create,
    nfslock_blocking_create,
    nfslock_unlock,
    nfslock_unlock_path,
    nfslock_get_hostname_and_pid,
    nfslock_get_message,
    nfslock_critical_section,
);

/// One held lock. Opaque: created by `nfslock_create`, `nfslock_blocking_create`;
/// destroyed by `nfslock_unlock` only.
#[allow(non_camel_case_types)]
pub struct nfslock {
    /// Never instantiated: a handle is a number registered in `handles::LOCKS`, never
    /// dereferenced (see handles.rs).
    _opaque: [u8; 0],
}

/// What a lock handle stands for: a plain lock (Core's) or a lease.
#[derive(Debug)]
pub enum Held {
    /// From `nfslock_create`, `nfslock_blocking_create`, or `nfslock_acquire` without a lease.
    Plain(Lock),
    /// From `nfslock_acquire` with a lease.
    Lease(Lease),
}

impl Held {
    fn unlock(self) -> crate::Result<()> {
        match self {
            Held::Plain(l) => l.unlock(),
            Held::Lease(l) => l.unlock(),
        }
    }
}

pub(super) fn timeout_of(timeout_ms: i64) -> Option<Duration> {
    u64::try_from(timeout_ms).ok().map(Duration::from_millis)
}

pub(super) fn hand_out(op: &'static str, held: Held, lock_out: *mut *mut nfslock) -> Result<(), Error> {
    let handle = LOCKS.insert(op, std::sync::Arc::new(held))? as *mut nfslock;
    // SAFETY: the caller checked lock_out for NULL; it points to writable storage.
    unsafe { *lock_out = handle };
    Ok(())
}

/// Tries once to lock `path`: creates the lock file `path.nfs_lock` holding this
/// process's record (host, pid, `message`, start time). `path` itself is never written.
/// `message` may be NULL (empty). On success stores a new handle in `*lock_out`.
///
/// Errors: EAGAIN held by a live process, by another host, by another thread of this
/// process, or by a holder that has not written its record yet (an empty lock file);
/// EDEADLK the calling thread holds it already (under any spelling of the path);
/// EBADMSG the existing lock file is not a record (it is left alone); EMSGSIZE the
/// record would exceed 64 KiB (nothing is written); ELOOP a symlink at `path.nfs_lock`;
/// ENOENT the directory does not exist; EMFILE, EACCES, EPERM, EROFS, ENOSPC,
/// ENAMETOOLONG; EINVAL for a NULL or empty path, a path ending in `/`, `/.` or `/..`,
/// or a NULL `lock_out`.
///
/// A dead holder on this host (no such pid, or the pid now belongs to a process with
/// another start time) is cleared and the lock taken. Thread-safe.
///
/// # Safety
/// `path` and `message` are NULL or NUL-terminated strings; `lock_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_create(path: *const c_char, message: *const c_char, lock_out: *mut *mut nfslock) -> c_int {
    const OP: &str = "nfslock_create";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let (path, message) = unsafe { (path_arg(OP, path)?, optional_bytes_arg(message)) };
        out_arg(OP, lock_out, "lock_out")?;
        hand_out(OP, Held::Plain(lockfile::create(path, message).map_err(|e| e.in_op(OP))?), lock_out)
    })
}

/// Like `nfslock_create`, waiting for the lock: `timeout_ms` < 0 waits forever, 0 makes
/// one attempt (EAGAIN), otherwise ETIMEDOUT once the timeout passes. Waiting backs off
/// from 1 ms to 100 ms with jitter and wakes at once when a process of this machine
/// releases the lock.
///
/// A lock file without a record (a Core holder between its link and its write) is
/// waited for like any held lock; EBADMSG once it stayed so for 5 s of this wait.
///
/// Errors that waiting cannot cure return at once: EACCES, EPERM, EROFS, ENOENT,
/// ENAMETOOLONG, ELOOP, EBADMSG, EMSGSIZE, EDEADLK, EINVAL.
///
/// # Safety
/// As for `nfslock_create`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_blocking_create(
    path: *const c_char,
    message: *const c_char,
    timeout_ms: i64,
    lock_out: *mut *mut nfslock,
) -> c_int {
    const OP: &str = "nfslock_blocking_create";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let (path, message) = unsafe { (path_arg(OP, path)?, optional_bytes_arg(message)) };
        out_arg(OP, lock_out, "lock_out")?;
        let lock = lockfile::blocking_create(path, message, timeout_of(timeout_ms)).map_err(|e| e.in_op(OP))?;
        hand_out(OP, Held::Plain(lock), lock_out)
    })
}

/// Releases the lock (plain or lease) and frees the handle, in every case (the handle is
/// invalid after the call, whatever it returns).
///
/// Returns 0 when released; ENOLCK when the lock file was no longer ours (removed or
/// replaced by someone else, or released with `nfslock_unlock_path`): nothing is
/// removed; EPERM when called in a forked child on a handle of its parent: the parent's
/// lock is left alone; EINVAL for NULL or a handle that is not live.
///
/// # Safety
/// `lock` is NULL or a handle from this library not yet passed to `nfslock_unlock`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_unlock(lock: *mut nfslock) -> c_int {
    const OP: &str = "nfslock_unlock";
    ffi_guard(OP, || {
        if lock.is_null() {
            return Err(Error::invalid(OP, "lock is NULL"));
        }
        // Looked up by its number, never read through: a dead handle is simply not there.
        let held = LOCKS.remove(lock as usize).ok_or_else(|| Error::invalid(OP, "not a live lock handle (unlocked twice?)"))?;
        // Another thread may be inside a call on this handle this very moment (renew,
        // is_held): it keeps its reference, and the release happens when the last one goes.
        match std::sync::Arc::try_unwrap(held) {
            Ok(held) => held.unlock().map_err(|e| e.in_op(OP)),
            Err(_) => Err(Error::new(
                nix::errno::Errno::EBUSY,
                OP,
                None,
                "another thread is using this handle; it is released when that call returns",
            )),
        }
    })
}

/// Removes the lock on `path` if this process holds it (any handle of it then gets
/// ENOLCK from `nfslock_unlock`) or its holder is a dead process of this host (Core's
/// `unlock_exn`).
///
/// Errors: EPERM a live process or another host holds it; ENOENT not locked; EAGAIN
/// another process is clearing it at this moment; EBADMSG, ELOOP, EINVAL as for
/// `nfslock_create`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nfslock_unlock_path(path: *const c_char) -> c_int {
    const OP: &str = "nfslock_unlock_path";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        lockfile::unlock_path(unsafe { path_arg(OP, path)? }).map_err(|e| e.in_op(OP))
    })
}

/// Reads the holder of the lock on `path` (`path` or `path.nfs_lock` itself): copies its
/// host name with a NUL into `hostname` and its pid into `*pid_out`.
///
/// Errors: ENOENT not locked; EBADMSG the record is unreadable; ERANGE `hostname_len`
/// is too small (nothing is written); ELOOP a symlink at the lock file; EINVAL for NULL
/// arguments.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `hostname` is NULL or valid for
/// `hostname_len` bytes; `pid_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_get_hostname_and_pid(
    path: *const c_char,
    hostname: *mut c_char,
    hostname_len: usize,
    pid_out: *mut i32,
) -> c_int {
    const OP: &str = "nfslock_get_hostname_and_pid";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let path = unsafe { path_arg(OP, path)? };
        out_arg(OP, hostname, "hostname")?;
        out_arg(OP, pid_out, "pid_out")?;
        let record = lockfile::read_record(path).map_err(|e| e.in_op(OP))?;
        check_fits(OP, path, hostname_len, &record.host, "host name")?;
        // SAFETY: checked for NULL and size above.
        unsafe {
            copy_out(hostname, &record.host);
            *pid_out = record.pid;
        }
        Ok(())
    })
}

/// Reads the message of the lock on `path` into `message` with a NUL.
///
/// Errors: ENOENT not locked; EBADMSG the record is unreadable or its message contains
/// a NUL byte; ERANGE `message_len` is too small (nothing is written); EINVAL for NULL
/// arguments.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `message` is NULL or valid for
/// `message_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn nfslock_get_message(path: *const c_char, message: *mut c_char, message_len: usize) -> c_int {
    const OP: &str = "nfslock_get_message";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let path = unsafe { path_arg(OP, path)? };
        out_arg(OP, message, "message")?;
        let record = lockfile::read_record(path).map_err(|e| e.in_op(OP))?;
        check_fits(OP, path, message_len, &record.message, "message")?;
        // SAFETY: checked for NULL and size above.
        unsafe { copy_out(message, &record.message) };
        Ok(())
    })
}

/// Takes the lock on `path` as `nfslock_blocking_create` does, runs `f(ctx)`, stores its
/// result in `*f_result`, and releases the lock whatever `f` returned.
///
/// Returns the locking error if the lock could not be taken (`f` is not run, `*f_result`
/// is not written). If `f` ran, `*f_result` is written and the result of the release is
/// returned: 0, or ENOLCK when the lock was taken away while `f` ran. EINVAL for a NULL
/// path, `f` or `f_result`.
///
/// # Safety
/// `path`, `message` as for `nfslock_create`; `f` is NULL or a function safe to call
/// with `ctx`; `f_result` is NULL or writable. `f` must not unwind or longjmp out.
#[no_mangle]
pub unsafe extern "C" fn nfslock_critical_section(
    path: *const c_char,
    message: *const c_char,
    timeout_ms: i64,
    f: Option<unsafe extern "C" fn(ctx: *mut c_void) -> c_int>,
    ctx: *mut c_void,
    f_result: *mut c_int,
) -> c_int {
    const OP: &str = "nfslock_critical_section";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let (path, message) = unsafe { (path_arg(OP, path)?, optional_bytes_arg(message)) };
        let f = f.ok_or_else(|| Error::invalid(OP, "f is NULL"))?;
        out_arg(OP, f_result, "f_result")?;
        // SAFETY: f and f_result are valid per the contract; f_result is written as soon
        // as f returns, so it holds f's result even when the release then fails.
        lockfile::critical_section(path, message, timeout_of(timeout_ms), || unsafe { *f_result = f(ctx) }).map_err(|e| e.in_op(OP))
    })
}
