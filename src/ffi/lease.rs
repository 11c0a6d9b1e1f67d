//! C API of leases: options, acquire, renew, is_held, fencing tokens, break, inspect.
//! Each function converts its arguments, calls `crate::lease` (or `crate::lockfile` for
//! a plain lock), and converts the result; no locking logic lives here.

use std::ffi::{c_char, c_int};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::boundary::{ffi_guard, ffi_guard_void, optional_bytes_arg, out_arg, path_arg};
use super::handles::{LOCKS, OPTIONS};
use super::lockfile::{hand_out, nfslock, timeout_of, Held};
use crate::error::Error;
use crate::lease::{self, Options};
use crate::lockfile;

// The exports of this file, each bound to NFSLOCK_0 (see `symbol_versions!`).
symbol_versions!(
    nfslock_options_new,
    nfslock_options_free,
    nfslock_options_set_message,
    nfslock_options_set_lease_ms,
    nfslock_options_set_keepalive,
    nfslock_options_set_shared,
    nfslock_acquire,
    nfslock_renew,
    nfslock_is_held,
    nfslock_fencing_token,
    nfslock_break,
    nfslock_inspect,
);

/// Options for `nfslock_acquire`. Opaque: created by `nfslock_options_new`, destroyed by
/// `nfslock_options_free`; owned by the caller, read (never kept) by `nfslock_acquire`.
#[allow(non_camel_case_types)]
pub struct nfslock_options {
    /// Never instantiated: a handle is a number registered in `handles::OPTIONS`.
    _opaque: [u8; 0],
}

/// The lock is not held.
pub const NFSLOCK_STATE_FREE: i32 = 0;
/// Held by a live process, by another host, or under a lease renewed in time.
pub const NFSLOCK_STATE_HELD: i32 = 1;
/// Held by the calling process.
pub const NFSLOCK_STATE_HELD_BY_CALLER: i32 = 2;
/// Held by a process of this host that is gone (the next acquirer clears it).
pub const NFSLOCK_STATE_DEAD_HOLDER: i32 = 3;
/// A lease its holder did not renew for the whole lease, as watched by this call.
pub const NFSLOCK_STATE_EXPIRED: i32 = 4;
/// The lock file is not a record (left alone by everyone).
pub const NFSLOCK_STATE_UNREADABLE: i32 = 5;

/// The shortest lease `nfslock_options_set_lease_ms` accepts (besides 0).
pub const NFSLOCK_LEASE_MIN_MS: u32 = 100;
/// The longest lease `nfslock_options_set_lease_ms` accepts: a day.
pub const NFSLOCK_LEASE_MAX_MS: u32 = 86_400_000;

/// A lock's state and holder, filled by `nfslock_inspect`.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nfslock_info {
    /// One of NFSLOCK_STATE_*.
    pub state: i32,
    /// The holder's pid (0 when free, unreadable, or not written yet).
    pub pid: i32,
    /// The holder's lease; 0 for a plain lock.
    pub lease_ms: u32,
    /// Shared holders (0: exclusive or free).
    pub shared_holders: u32,
    /// The last fencing token handed out on this path (the current holder's, if it
    /// took one); 0 if none ever was.
    pub fencing_token: u64,
    /// The holder's host name, NUL-terminated (truncated to 255 bytes); empty if none.
    pub host: [c_char; 256],
}

fn with_options<R>(
    op: &'static str,
    options: *const nfslock_options,
    f: impl FnOnce(&mut Options) -> Result<R, Error>,
) -> Result<R, Error> {
    if options.is_null() {
        return Err(Error::invalid(op, "options is NULL"));
    }
    let entry = OPTIONS.with(options as usize, Arc::clone).ok_or_else(|| Error::invalid(op, "not a live options handle (freed?)"))?;
    let mut o = entry.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut o)
}

fn with_lock<R>(op: &'static str, lock: *const nfslock, f: impl FnOnce(&Held) -> crate::Result<R>) -> Result<R, Error> {
    if lock.is_null() {
        return Err(Error::invalid(op, "lock is NULL"));
    }
    let held = LOCKS.with(lock as usize, Arc::clone).ok_or_else(|| Error::invalid(op, "not a live lock handle (unlocked?)"))?;
    f(&held).map_err(|e| e.in_op(op))
}

/// Makes a set of options with the defaults: empty message, no lease (a plain lock),
/// keep-alive on, exclusive. Stores the new handle in `*options_out`.
///
/// Errors: EINVAL `options_out` is NULL; ENOMEM.
///
/// # Safety
/// `options_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_options_new(options_out: *mut *mut nfslock_options) -> c_int {
    const OP: &str = "nfslock_options_new";
    ffi_guard(OP, || {
        out_arg(OP, options_out, "options_out")?;
        let handle = OPTIONS.insert(OP, Arc::new(Mutex::new(Options::default())))?;
        // SAFETY: checked for NULL above; writable per the contract.
        unsafe { *options_out = handle as *mut nfslock_options };
        Ok(())
    })
}

/// Frees options made by `nfslock_options_new`. NULL, or a handle already freed, is a
/// no-op (a freed handle is never dereferenced: it is a number no longer registered).
///
/// # Safety
/// `options` is NULL or a handle from `nfslock_options_new`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_options_free(options: *mut nfslock_options) {
    const OP: &str = "nfslock_options_free";
    ffi_guard_void(OP, || {
        if !options.is_null() {
            OPTIONS.remove(options as usize);
        }
        Ok(())
    })
}

/// Sets the message written into the lock's record (NULL: empty).
///
/// Errors: EINVAL `options` is NULL or not a live handle; EMSGSIZE over 60 KiB.
///
/// # Safety
/// `options` as for `nfslock_options_free`; `message` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nfslock_options_set_message(options: *mut nfslock_options, message: *const c_char) -> c_int {
    const OP: &str = "nfslock_options_set_message";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let message = unsafe { optional_bytes_arg(message) };
        if message.len() > 60 * 1024 {
            return Err(Error::new(nix::errno::Errno::EMSGSIZE, OP, None, format!("a message of {} bytes is over 60 KiB", message.len())));
        }
        with_options(OP, options, |o| {
            o.message = message.to_vec();
            Ok(())
        })
    })
}

/// Sets the lease in milliseconds: 0 (the default) is a plain lock that never expires;
/// otherwise NFSLOCK_LEASE_MIN_MS (100) to NFSLOCK_LEASE_MAX_MS (a day).
///
/// Errors: EINVAL outside those bounds (the options are left as they were), or
/// `options` NULL or not a live handle.
///
/// # Safety
/// `options` as for `nfslock_options_free`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_options_set_lease_ms(options: *mut nfslock_options, lease_ms: u32) -> c_int {
    const OP: &str = "nfslock_options_set_lease_ms";
    ffi_guard(OP, || {
        let candidate = Options { lease: Duration::from_millis(lease_ms.into()), ..Options::default() };
        candidate.check(OP)?;
        with_options(OP, options, |o| {
            o.lease = candidate.lease;
            Ok(())
        })
    })
}

/// Keep-alive (default 1): a library thread renews the lease every third of it. 0: the
/// holder renews it with `nfslock_renew`, more often than every half lease.
///
/// Errors: EINVAL `options` NULL or not a live handle.
///
/// # Safety
/// `options` as for `nfslock_options_free`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_options_set_keepalive(options: *mut nfslock_options, enabled: c_int) -> c_int {
    const OP: &str = "nfslock_options_set_keepalive";
    ffi_guard(OP, || {
        with_options(OP, options, |o| {
            o.keepalive = enabled != 0;
            Ok(())
        })
    })
}

/// Shared (1) or exclusive (0, the default): any number of shared holders, or one
/// exclusive holder. A waiting exclusive acquirer holds the lock's turnstile
/// (`path.nfs_lock.turnstile.nfs_lock`), so new shared holders wait behind it; shared
/// holders renew their own leases and dead ones are pruned (this host's at once, another
/// host's after their lease). A shared lock needs a lease (`nfslock_acquire` answers
/// EINVAL for a shared lock of lease 0).
///
/// Errors: EINVAL `options` NULL or not a live handle.
///
/// # Safety
/// `options` as for `nfslock_options_free`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_options_set_shared(options: *mut nfslock_options, shared: c_int) -> c_int {
    const OP: &str = "nfslock_options_set_shared";
    ffi_guard(OP, || {
        with_options(OP, options, |o| {
            o.shared = shared != 0;
            Ok(())
        })
    })
}

/// Takes the lock on `path` as `options` say (NULL: a plain exclusive lock, as
/// `nfslock_blocking_create` with an empty message), waiting up to `timeout_ms` (< 0
/// forever, 0 one attempt). A lease is renewed by a library thread unless keep-alive is
/// off; a lease whose holder stopped renewing is broken once this call has watched it
/// unrenewed for the lease plus lease/64 + 1 ms on this machine's clock (never by
/// comparing clocks), a dead holder of this host at once. Release with `nfslock_unlock`.
///
/// Errors: as `nfslock_blocking_create`; EINVAL `options` not a live handle, or a
/// shared lock without a lease; EAGAIN the keep-alive thread could not be started.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `options` NULL or a live handle;
/// `lock_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_acquire(
    path: *const c_char,
    options: *const nfslock_options,
    timeout_ms: i64,
    lock_out: *mut *mut nfslock,
) -> c_int {
    const OP: &str = "nfslock_acquire";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let path = unsafe { path_arg(OP, path)? };
        out_arg(OP, lock_out, "lock_out")?;
        let o = if options.is_null() { Options::default() } else { with_options(OP, options, |o| Ok(o.clone()))? };
        o.check(OP)?;
        let timeout = timeout_of(timeout_ms);
        if o.shared && o.lease.is_zero() {
            return Err(Error::invalid(OP, "a shared lock needs a lease (nfslock_options_set_lease_ms)"));
        }
        let held = if o.lease.is_zero() {
            Held::Plain(lockfile::blocking_create(path, &o.message, timeout).map_err(|e| e.in_op(OP))?)
        } else {
            Held::Lease(lease::acquire(path, &o, timeout).map_err(|e| e.in_op(OP))?)
        };
        hand_out(OP, held, lock_out)
    })
}

/// Renews a lease now (with keep-alive off, call it more often than every half lease).
///
/// Errors: ENOLCK the lease was broken (final: stop using what it protects); EINVAL a
/// plain lock (nothing to renew) or not a live handle; EPERM a handle inherited through
/// fork; I/O errors (EIO, ESTALE, ...) leave the lease to be renewed again.
///
/// # Safety
/// `lock` is NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn nfslock_renew(lock: *mut nfslock) -> c_int {
    const OP: &str = "nfslock_renew";
    ffi_guard(OP, || {
        with_lock(OP, lock, |held| match held {
            Held::Lease(l) => l.renew(),
            Held::Plain(_) => Err(Error::invalid(OP, "a plain lock has no lease to renew")),
        })
    })
}

/// Whether the lock is still safely held: 0 held; ETIMEDOUT this process's renewals are
/// overdue past half the lease (others may break it a whole lease after the last
/// renewal: stop writing, renew, check again); ENOLCK lost for good (broken, or removed
/// with `nfslock_unlock_path` or `nfslock_break`); EPERM a handle inherited through fork;
/// EINVAL not a live handle. For a plain lock: 0 while the lock file is still ours.
///
/// # Safety
/// `lock` is NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn nfslock_is_held(lock: *const nfslock) -> c_int {
    const OP: &str = "nfslock_is_held";
    ffi_guard(OP, || {
        with_lock(OP, lock, |held| match held {
            Held::Lease(l) => l.is_held(),
            Held::Plain(l) => l.is_held(),
        })
    })
}

/// Stores this hold's fencing token in `*token_out`: greater than the token of every
/// earlier acquisition of this path (across hosts, breaks, crashes and reboots; gaps
/// allowed). The first call of a hold takes one write and one fdatasync on
/// `path.nfs_lock.fence`, then proves the lock still held; later calls return the same
/// number. Hand the token to the storage you write, which must refuse any token smaller
/// than one it has seen: a paused holder's late writes are then refused.
///
/// Errors: ENOLCK the lock was lost before the token was proven; EPERM a handle
/// inherited through fork; EINVAL NULL arguments or not a live handle; ELOOP a symlink
/// at the counter's name; I/O errors.
///
/// # Safety
/// `lock` is NULL or a handle from this library; `token_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_fencing_token(lock: *const nfslock, token_out: *mut u64) -> c_int {
    const OP: &str = "nfslock_fencing_token";
    ffi_guard(OP, || {
        out_arg(OP, token_out, "token_out")?;
        let token = with_lock(OP, lock, |held| match held {
            Held::Lease(l) => l.fencing_token(),
            Held::Plain(l) => l.fencing_token(),
        })?;
        // SAFETY: checked for NULL above; writable per the contract.
        unsafe { *token_out = token };
        Ok(())
    })
}

/// Operator's tool: removes the lock on `path` whoever holds it, never a lock taken
/// after the one it saw. A lease's token is taken first (its holder gets ENOLCK from
/// `nfslock_is_held`, `nfslock_renew` and `nfslock_unlock`, quoting `reason`, which is
/// left in `path.nfs_lock.broken`); a plain lock is renamed aside and checked.
///
/// Errors: ENOENT not locked; EAGAIN it changed hands meanwhile (look again); EIO a
/// lock taken in between could not be put back (the message says where it is); ELOOP,
/// EINVAL as for `nfslock_create`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `reason` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nfslock_break(path: *const c_char, reason: *const c_char) -> c_int {
    const OP: &str = "nfslock_break";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let (path, reason) = unsafe { (path_arg(OP, path)?, optional_bytes_arg(reason)) };
        lease::break_lock(path, &String::from_utf8_lossy(reason)).map_err(|e| e.in_op(OP))
    })
}

/// Fills `*info_out` with the state of the lock on `path` (`path` or `path.nfs_lock`),
/// watching a lease for up to `watch_ms` to tell NFSLOCK_STATE_HELD (renewed in time)
/// from NFSLOCK_STATE_EXPIRED (not renewed for the whole lease while watched). 0: no
/// watching. Nothing is changed on disk.
///
/// Errors: EINVAL NULL arguments; ELOOP a symlink at the lock file; ENOENT the directory
/// does not exist; I/O errors.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `info_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_inspect(path: *const c_char, watch_ms: u32, info_out: *mut nfslock_info) -> c_int {
    const OP: &str = "nfslock_inspect";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let path = unsafe { path_arg(OP, path)? };
        out_arg(OP, info_out, "info_out")?;
        let info = lease::inspect(path, Duration::from_millis(watch_ms.into())).map_err(|e| e.in_op(OP))?;
        let state = match info.state {
            lease::State::Free => NFSLOCK_STATE_FREE,
            lease::State::Held => NFSLOCK_STATE_HELD,
            lease::State::HeldByCaller => NFSLOCK_STATE_HELD_BY_CALLER,
            lease::State::DeadHolder => NFSLOCK_STATE_DEAD_HOLDER,
            lease::State::Expired => NFSLOCK_STATE_EXPIRED,
            lease::State::Unreadable => NFSLOCK_STATE_UNREADABLE,
        };
        let shared_holders = info.shared_holders;
        let mut out = nfslock_info { state, pid: 0, lease_ms: 0, shared_holders, fencing_token: info.fencing_token, host: [0; 256] };
        if let Some(r) = &info.record {
            out.pid = r.pid;
            out.lease_ms = r.lease.as_ref().map_or(0, |l| l.ms);
            for (dst, &b) in out.host.iter_mut().zip(r.host.iter().take(255)) {
                *dst = b as c_char;
            }
        }
        // SAFETY: checked for NULL above; writable per the contract.
        unsafe { info_out.write(out) };
        Ok(())
    })
}
