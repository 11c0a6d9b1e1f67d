//! C API of the session family (ID allocation and ID locks). Each function converts its
//! arguments, calls `crate::session`, and converts the result.

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nix::errno::Errno;

use super::boundary::{check_fits, copy_out, ffi_guard, out_arg, path_arg};
use super::handles::SESSIONS;
use crate::error::Error;
use crate::session::{Session, MAX_IDS_PER_CALL};

// The exports of this file, each bound to NFSLOCK_0 (see `symbol_versions!`).
symbol_versions!(
    nfslock_session_open,
    nfslock_session_make_new_ids,
    nfslock_session_lock_ids,
    nfslock_session_release_ids,
    nfslock_session_get_lock_session,
    nfslock_session_reap_locks,
    nfslock_session_check,
    nfslock_session_repair_counter,
    nfslock_session_close,
);

/// An open session. Opaque: created by `nfslock_session_open`, destroyed by
/// `nfslock_session_close` only. Thread-safe: any thread may use it.
#[allow(non_camel_case_types)]
pub struct nfslock_session {
    /// Never instantiated: a handle is a number registered in `handles::SESSIONS`,
    /// never dereferenced (see handles.rs).
    _opaque: [u8; 0],
}

/// What a session handle stands for. Calls on the session hold the read side of the
/// lock; close takes the handle out of the registry and then the write side, so it
/// waits for the calls other threads are making on it.
pub struct Entry {
    /// The fork generation the handle was made in (see `close`).
    generation: u64,
    session: RwLock<Option<Session>>,
}

/// Runs `f` on the session behind a live handle, its errors labelled with `op` (the C
/// function's name); EINVAL for NULL or a dead handle (closed, or never one), found
/// without reading through the pointer.
fn with_session<R>(op: &'static str, s: *mut nfslock_session, f: impl FnOnce(&Session) -> crate::Result<R>) -> Result<R, Error> {
    if s.is_null() {
        return Err(Error::invalid(op, "the session is NULL"));
    }
    let dead = || Error::invalid(op, "not an open session handle (closed twice?)");
    let entry = SESSIONS.with(s as usize, Arc::clone).ok_or_else(dead)?;
    let session = entry.session.read().unwrap_or_else(|p| p.into_inner());
    match session.as_ref() {
        // The core names its Rust operations; the C caller reads this function's name.
        Some(session) => f(session).map_err(|e| e.in_op(op)),
        None => Err(dead()),
    }
}

/// A C array of `n` IDs; NULL only when n is 0.
///
/// # Safety
/// `ids` is NULL or valid for `n` reads.
unsafe fn ids_arg<'a>(op: &'static str, ids: *const u64, n: usize) -> Result<&'a [u64], Error> {
    if n == 0 {
        return Ok(&[]);
    }
    if ids.is_null() {
        return Err(Error::invalid(op, "ids is NULL"));
    }
    if n > MAX_IDS_PER_CALL {
        return Err(Error::invalid(op, format!("n must be at most {MAX_IDS_PER_CALL}, not {n}")));
    }
    // SAFETY: the caller promises n readable IDs.
    Ok(unsafe { std::slice::from_raw_parts(ids, n) })
}

/// Copies `ids` to `out` (which has room for at least as many) and their count to
/// `*count`.
///
/// # Safety
/// `out` is valid for `ids.len()` writes, `count` for one.
unsafe fn write_ids(ids: &[u64], out: *mut u64, count: *mut usize) {
    // SAFETY: per this function's contract.
    unsafe {
        std::ptr::copy_nonoverlapping(ids.as_ptr(), out, ids.len());
        *count = ids.len();
    }
}

/// The body of lock_ids and release_ids: `f` takes a set of IDs and returns a subset, which goes to
/// `out` and its size to `*count`.
///
/// # Safety
/// As for `nfslock_session_lock_ids`.
#[allow(clippy::too_many_arguments)]
unsafe fn id_set_call(
    op: &'static str,
    s: *mut nfslock_session,
    ids: *const u64,
    n: usize,
    out: *mut u64,
    count: *mut usize,
    f: fn(&Session, &[u64]) -> crate::Result<Vec<u64>>,
) -> Result<(), Error> {
    // SAFETY: per this function's contract.
    let ids = unsafe { ids_arg(op, ids, n)? };
    out_arg(op, count, "the count")?;
    if n > 0 {
        out_arg(op, out, "the output array")?;
    }
    let subset = with_session(op, s, |session| f(session, ids))?;
    // SAFETY: subset.len() <= n, the room in `out`.
    unsafe { write_ids(&subset, out, count) };
    Ok(())
}

/// Opens a session on the repository directory `dir` (created, with missing parents,
/// if it does not exist) for the ID namespace `name` (NULL: "default"). `timeout_ms` is
/// how long the session may go without a heartbeat before other sessions treat it as
/// dead (0: 45000; at least 100). Starts the session's heartbeat thread. Stores the
/// handle in `*session_out`.
///
/// Errors: EINVAL NULL or empty `dir`, NULL `session_out`, a `name` that is empty, ".",
/// "..", or contains '/', a `timeout_ms` of 1 to 99; ENOTDIR, EACCES, EPERM, EROFS, ENOSPC creating the repository;
/// ETIMEDOUT another process held the repository's guard lock past the timeout.
///
/// # Safety
/// `dir`, `name` are NULL or NUL-terminated strings; `session_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_open(
    dir: *const c_char,
    name: *const c_char,
    timeout_ms: u32,
    session_out: *mut *mut nfslock_session,
) -> c_int {
    const OP: &str = "nfslock_session_open";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let dir: &Path = unsafe { path_arg(OP, dir)? };
        out_arg(OP, session_out, "session_out")?;
        let name = if name.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated per the contract.
            let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
            Some(std::str::from_utf8(bytes).map_err(|_| Error::invalid(OP, format!("name {:?} is not UTF-8", OsStr::from_bytes(bytes))))?)
        };
        let session = Session::open(dir, name, Some(Duration::from_millis(u64::from(timeout_ms)))).map_err(|e| e.in_op(OP))?;
        let entry = Entry { generation: crate::process::fork_generation(), session: RwLock::new(Some(session)) };
        let handle = SESSIONS.insert(OP, Arc::new(entry))? as *mut nfslock_session;
        // SAFETY: checked for NULL above; writable per the contract.
        unsafe { *session_out = handle };
        Ok(())
    })
}

/// Issues `n` consecutive new IDs into `ids_out` (room for `n`): each greater than
/// every ID ever issued to any session of this repository and namespace and than every
/// locked ID, all locked by this session. The counter is on stable storage before the
/// call returns: a crash can leave gaps, never duplicates.
///
/// Errors: EINVAL `n` is 0 or above 2^24, or would pass 2^64, NULL arguments; ENOENT
/// the counter file is missing (see `nfslock_session_repair_counter`); EBADMSG it is
/// corrupt; ESTALE the session expired (paused past its timeout, or reaped by others);
/// EPERM called in a forked child; ETIMEDOUT another writer held the counter past the
/// session's timeout (a stopped process, or a host that crashed in the middle of an
/// update; the message names the lock); I/O errors. Nothing is issued when the call
/// fails.
///
/// # Safety
/// `s` is NULL or an open session; `ids_out` is NULL or valid for `n` writes.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_make_new_ids(s: *mut nfslock_session, n: usize, ids_out: *mut u64) -> c_int {
    const OP: &str = "nfslock_session_make_new_ids";
    ffi_guard(OP, || {
        out_arg(OP, ids_out, "ids_out")?;
        let ids = with_session(OP, s, |session| session.make_new_ids(n))?;
        // SAFETY: ids_out has room for n = ids.len() IDs per the contract.
        unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), ids_out, ids.len()) };
        Ok(())
    })
}

/// Locks those of the `n` IDs in `ids` that no other live session holds (locks of dead
/// sessions are reclaimed on the way), and writes the IDs this session now holds of
/// them (including ones it held already), in the given order without duplicates, to
/// `locked_out` (room for `n`) and their count to `*n_locked`. IDs held by live
/// sessions are skipped, not an error (Ganga's semantics).
///
/// Errors: EINVAL NULL arguments (`ids`, `locked_out` may be NULL when `n` is 0), `n`
/// above 2^24, an ID of 2^64 - 1; ESTALE, EPERM, ENOENT, EBADMSG, ETIMEDOUT as for make_new_ids (locking an
/// ID above the counter advances it). Nothing is newly locked when the call fails.
///
/// # Safety
/// `s` is NULL or an open session; `ids` is valid for `n` reads and `locked_out` for `n`
/// writes (or NULL with `n` 0); `n_locked` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_lock_ids(
    s: *mut nfslock_session,
    ids: *const u64,
    n: usize,
    locked_out: *mut u64,
    n_locked: *mut usize,
) -> c_int {
    const OP: &str = "nfslock_session_lock_ids";
    // SAFETY: per this function's contract.
    ffi_guard(OP, || unsafe { id_set_call(OP, s, ids, n, locked_out, n_locked, Session::lock_ids) })
}

/// Releases those of the `n` IDs in `ids` this session holds; writes them to
/// `released_out` (room for `n`) and their count to `*n_released`. IDs held by other
/// sessions, or by none, are left alone.
///
/// Errors: EINVAL NULL arguments, `n` above 2^24; ESTALE, EPERM as for make_new_ids;
/// I/O errors (IDs released before the failure stay released).
///
/// # Safety
/// As for `nfslock_session_lock_ids`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_release_ids(
    s: *mut nfslock_session,
    ids: *const u64,
    n: usize,
    released_out: *mut u64,
    n_released: *mut usize,
) -> c_int {
    const OP: &str = "nfslock_session_release_ids";
    // SAFETY: per this function's contract.
    ffi_guard(OP, || unsafe { id_set_call(OP, s, ids, n, released_out, n_released, Session::release_ids) })
}

/// Describes the session holding `id` as "HOST (pid N) since YYYY-MM-DD
/// HH:MM:SS.ffffffZ" (the time the session opened, on its host's clock) into `info`.
///
/// Errors: ENOENT no live session holds `id`; ERANGE `info_len` is too small (nothing
/// written); EBADMSG the holder's record is unreadable; EINVAL NULL arguments; ESTALE,
/// EPERM as for make_new_ids.
///
/// # Safety
/// `s` is NULL or an open session; `info` is NULL or valid for `info_len` writes.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_get_lock_session(s: *mut nfslock_session, id: u64, info: *mut c_char, info_len: usize) -> c_int {
    const OP: &str = "nfslock_session_get_lock_session";
    ffi_guard(OP, || {
        out_arg(OP, info, "info")?;
        let (text, dir) = with_session(OP, s, |session| Ok((session.lock_holder(id)?, session.dir().to_path_buf())))?;
        check_fits(OP, &dir, info_len, text.as_bytes(), "description")?;
        // SAFETY: checked for NULL and size above.
        unsafe { copy_out(info, text.as_bytes()) };
        Ok(())
    })
}

/// Removes the records and ID locks of dead sessions (also done by the heartbeat, and
/// by lock_ids when it meets a dead holder); stores how many sessions in `*n_reaped`
/// (NULL: not stored). A session on another host is dead once this process has seen its
/// heartbeat unchanged for that session's timeout; one on this host as soon as its
/// process is gone.
///
/// Errors: EINVAL NULL session; ESTALE, EPERM as for make_new_ids; I/O errors.
///
/// # Safety
/// `s` is NULL or an open session; `n_reaped` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_reap_locks(s: *mut nfslock_session, n_reaped: *mut usize) -> c_int {
    const OP: &str = "nfslock_session_reap_locks";
    ffi_guard(OP, || {
        let reaped = with_session(OP, s, Session::reap_locks)?;
        if !n_reaped.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { *n_reaped = reaped };
        }
        Ok(())
    })
}

/// Verifies the repository on disk: a valid counter above every locked ID, every ID
/// lock belonging to one session's claim, every record readable. 0, or EBADMSG with
/// the findings in `nfslock_last_error()`. Also ESTALE, EPERM as for make_new_ids,
/// ETIMEDOUT when the repository's guard or the counter stayed busy, I/O errors.
///
/// # Safety
/// `s` is NULL or an open session.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_check(s: *mut nfslock_session) -> c_int {
    const OP: &str = "nfslock_session_check";
    ffi_guard(OP, || with_session(OP, s, Session::check))
}

/// For an operator, after the counter was lost or damaged: sets the next ID to at least
/// `next_id`, and never below any locked ID or any ID this session has seen issued.
/// Recreates a missing or corrupt counter; never lowers a valid one.
///
/// Errors: EINVAL NULL session; ESTALE, EPERM, ETIMEDOUT as for make_new_ids or when
/// the repository's guard stayed busy; I/O errors.
///
/// # Safety
/// `s` is NULL or an open session.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_repair_counter(s: *mut nfslock_session, next_id: u64) -> c_int {
    const OP: &str = "nfslock_session_repair_counter";
    ffi_guard(OP, || with_session(OP, s, |session| session.repair_counter(next_id)))
}

/// Releases every ID the session holds, stops its heartbeat, removes its records, and
/// frees the handle, in every case (the handle is invalid after the call).
///
/// Errors: EINVAL NULL or not an open handle; EPERM called in a forked child on its
/// parent's session (nothing on disk is touched); ESTALE the session had expired (its
/// locks may belong to others now: nothing is removed); I/O errors removing files.
///
/// # Safety
/// `s` is NULL or a handle from `nfslock_session_open` not yet closed.
#[no_mangle]
pub unsafe extern "C" fn nfslock_session_close(s: *mut nfslock_session) -> c_int {
    const OP: &str = "nfslock_session_close";
    ffi_guard(OP, || {
        if s.is_null() {
            return Err(Error::invalid(OP, "the session is NULL"));
        }
        // Dead from here on for every thread: later calls get EINVAL.
        let entry = SESSIONS.remove(s as usize).ok_or_else(|| Error::invalid(OP, "not an open session handle (closed twice?)"))?;
        if entry.generation != crate::process::fork_generation() {
            // A forked child, on its parent's session: a thread of the parent may have
            // been inside a call at fork time (its read lock was copied and will never
            // be let go), so the lock is only tried. What cannot be had is left: the
            // parent's session is the parent's, and nothing of it is touched here.
            if let Ok(mut session) = entry.session.try_write() {
                if let Some(session) = session.take() {
                    return session.close().map_err(|e| e.in_op(OP));
                }
            }
            std::mem::forget(entry);
            return Err(Error::new(Errno::EPERM, OP, None, "the session belongs to the parent of this forked process"));
        }
        let session = entry.session.write().unwrap_or_else(|p| p.into_inner()).take();
        match session {
            Some(session) => session.close().map_err(|e| e.in_op(OP)),
            None => Err(Error::invalid(OP, "not an open session handle (closed twice?)")),
        }
    })
}
