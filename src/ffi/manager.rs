//! C API of the lock manager family. Each function converts its arguments, calls
//! `crate::manager`, and converts the result.
//!
//! A manager's lock and unlock are a mutex's: a handle is the address of a slot that is
//! never freed (ffi/slots.rs), so they find their segment without a registry.

use std::ffi::{c_char, c_int, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;

use super::boundary::{bytes_arg, code_of, failed, ffi_guard, ffi_guard_code, out_arg, path_arg};
use super::handles::{MANAGERS, SEGMENTS};
use super::lockfile::timeout_of;
use super::slots;
use crate::error::Error;
use crate::manager::shm::Segment;
use crate::manager::{Locked, Manager};

// The exports of this file, each bound to NFSLOCK_0 (see `symbol_versions!`).
symbol_versions!(
    nfslock_manager_create_shm,
    nfslock_manager_open_shm,
    nfslock_manager_destroy_shm,
    nfslock_manager_create_dir,
    nfslock_manager_open_dir,
    nfslock_manager_set_lease_ms,
    nfslock_manager_capacity,
    nfslock_manager_allocate,
    nfslock_manager_allocate_id,
    nfslock_manager_free,
    nfslock_manager_free_all,
    nfslock_manager_available,
    nfslock_manager_allocated,
    nfslock_manager_locks_held,
    nfslock_manager_lock,
    nfslock_manager_timedlock,
    nfslock_manager_unlock,
    nfslock_manager_close,
);

/// An open lock manager. Opaque: created by `nfslock_manager_create_*` or
/// `nfslock_manager_open_*`, destroyed by `nfslock_manager_close` only. Thread-safe.
#[allow(non_camel_case_types)]
pub struct nfslock_manager {
    /// Never instantiated: a handle is a number registered in `handles::MANAGERS`.
    _opaque: [u8; 0],
}

/// What a live handle stands for, for the length of one call.
enum Resolved {
    Shm(&'static Manager),
    Dir(Arc<Manager>),
}

impl std::ops::Deref for Resolved {
    type Target = Manager;
    fn deref(&self) -> &Manager {
        match self {
            Resolved::Shm(m) => m,
            Resolved::Dir(m) => m,
        }
    }
}

/// The manager behind a live handle (EINVAL: NULL, closed, or never a manager handle).
fn resolve(op: &'static str, m: *mut nfslock_manager) -> Result<Resolved, Error> {
    if m.is_null() {
        return Err(Error::invalid(op, "the manager is NULL"));
    }
    let dead = || Error::invalid(op, "not an open manager handle (closed already?)");
    match slots::live(m as usize).ok_or_else(dead)? {
        slots::Open::Shm(manager) => Ok(Resolved::Shm(manager)),
        slots::Open::Dir => MANAGERS.with(m as usize, Arc::clone).map(Resolved::Dir).ok_or_else(dead),
    }
}

/// Runs `f` on the manager behind `m`, its errors labelled with `op`.
fn with_manager<R>(op: &'static str, m: *mut nfslock_manager, f: impl FnOnce(&Manager) -> crate::Result<R>) -> Result<R, Error> {
    let manager = resolve(op, m)?;
    f(&manager).map_err(|e| e.in_op(op))
}

fn name_arg<'a>(op: &'static str, name: *const c_char) -> Result<&'a OsStr, Error> {
    // SAFETY: per the calling function's contract (NULL or a NUL-terminated string).
    Ok(OsStr::from_bytes(unsafe { bytes_arg(op, name, "name")? }))
}

/// The body of the four openers: `make` opens the manager and makes its handle, which
/// goes to `*out`.
///
/// # Safety
/// `out` is NULL or writable.
unsafe fn open_into(
    op: &'static str,
    out: *mut *mut nfslock_manager,
    make: impl FnOnce() -> crate::Result<Manager>,
    handle_of: fn(&'static str, Manager) -> Result<usize, Error>,
) -> Result<(), Error> {
    out_arg(op, out, "out")?;
    let handle = handle_of(op, make().map_err(|e| e.in_op(op))?)?;
    // SAFETY: checked for NULL above; writable per this function's contract.
    unsafe { *out = handle as *mut nfslock_manager };
    Ok(())
}

/// A segment the C API has mapped: one per segment file in the process, shared by all
/// the handles opened on it, and kept mapped while any is open (and afterwards, for a
/// later open, while the segment's name still names it).
pub struct SharedSegment {
    manager: Manager,
    /// Live handles on it.
    handles: AtomicUsize,
}

/// Makes a handle for a shared-memory manager: on the process's mapping of that segment
/// file if it has one (this one's mapping then goes), else on this one, kept.
fn shm_handle(op: &'static str, manager: Manager) -> Result<usize, Error> {
    let file = manager.segment().map(|s| s.file());
    let capacity = manager.capacity();
    // Found and counted under the table's lock, so that a close of its last handle
    // cannot retire it in between.
    let found = SEGMENTS.update(|table| {
        let same = table.values().find(|s| s.manager.segment().map(|g| g.file()) == file && s.manager.capacity() == capacity);
        same.inspect(|existing| {
            existing.handles.fetch_add(1, Ordering::Relaxed);
        })
        .copied()
    });
    let shared: &'static SharedSegment = match found {
        Some(existing) => {
            manager.discard();
            existing
        }
        None => Box::leak(Box::new(SharedSegment { manager, handles: AtomicUsize::new(1) })),
    };
    let handle = match slots::open(op, Some(&shared.manager)) {
        Ok(h) => h,
        Err(e) => {
            release_handle(shared);
            return Err(e);
        }
    };
    SEGMENTS.update(|table| {
        if !table.values().any(|s| std::ptr::eq(*s, shared)) {
            table.insert(handle, shared);
        }
    });
    Ok(handle)
}

/// Whether the segment's name no longer names its file (destroyed, or made again).
fn destroyed(segment: &Segment) -> bool {
    let path = std::path::Path::new(crate::manager::SHM_DIR)
        .join(segment.name().as_bytes().strip_prefix(b"/").map_or(segment.name(), OsStr::from_bytes));
    crate::fsops::id_of(&path).map_or(true, |id| id != segment.file())
}

/// One handle on `shared` is gone. The last one releases this thread's locks in the
/// segment; and when the segment was destroyed meanwhile (nobody can open it again) and
/// no thread of this process holds a lock in it, it is unmapped, so its memory goes (a
/// call another thread makes on the very handle being closed must not be under way then).
fn release_handle(shared: &'static SharedSegment) {
    let Some(segment) = shared.manager.segment() else { return };
    let retire = SEGMENTS.update(|table| {
        if shared.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        // Another thread's robust list may point into a segment it holds a lock of: then
        // it stays mapped, so its next lock call and its exit (when the kernel hands the
        // lock on as EOWNERDEAD) find it there.
        let others = segment.release_mine();
        let gone = others == 0 && destroyed(segment);
        if gone {
            table.retain(|_, s| !std::ptr::eq(*s, shared));
        }
        gone
    });
    if retire {
        segment.retire();
    }
}

/// After a destroy: the process's mappings of segments nobody has open any more and
/// whose name no longer names them are unmapped.
fn retire_destroyed() {
    let retired: Vec<&'static SharedSegment> = SEGMENTS.update(|table| {
        let gone: Vec<usize> = table
            .iter()
            .filter(|(_, s)| {
                s.handles.load(Ordering::Acquire) == 0 && s.manager.segment().is_some_and(|g| g.held_here() == 0 && destroyed(g))
            })
            .map(|(&k, _)| k)
            .collect();
        gone.iter().filter_map(|k| table.remove(k)).collect()
    });
    for shared in retired {
        if let Some(segment) = shared.manager.segment() {
            segment.retire();
        }
    }
}

/// Makes a handle for a directory manager.
fn dir_handle(op: &'static str, manager: Manager) -> Result<usize, Error> {
    let handle = slots::open(op, None)?;
    MANAGERS.insert_at(handle, Arc::new(manager));
    Ok(handle)
}

/// Creates the shared-memory segment `name` ("/name", no further '/', at most 200
/// bytes, not necessarily UTF-8; the file /dev/shm/name, mode 0600 whatever the umask) with `num_locks` locks rounded up to a
/// multiple of 32 (at most 1,048,576), and opens it into `*out`. The segment is made
/// whole before its name appears.
///
/// Errors: EINVAL a bad name or count, NULL arguments; EEXIST it exists; EACCES, ENOSPC,
/// ENOMEM making it.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_create_shm(name: *const c_char, num_locks: u32, out: *mut *mut nfslock_manager) -> c_int {
    const OP: &str = "nfslock_manager_create_shm";
    ffi_guard(OP, || {
        let name = name_arg(OP, name)?;
        // SAFETY: per this function's contract.
        unsafe { open_into(OP, out, || Manager::create_shm(name, num_locks), shm_handle) }
    })
}

/// Opens the existing segment `name`, made with `num_locks` (rounded the same way).
///
/// Errors: ENOENT no such segment; ERANGE made with another lock count; EBADMSG not a
/// manager segment (another program's, another layout version, damaged); ELOOP a
/// symbolic link at the name; EACCES a group- or world-writable segment (refused);
/// EINVAL as for create.
///
/// # Safety
/// As for `nfslock_manager_create_shm`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_open_shm(name: *const c_char, num_locks: u32, out: *mut *mut nfslock_manager) -> c_int {
    const OP: &str = "nfslock_manager_open_shm";
    ffi_guard(OP, || {
        let name = name_arg(OP, name)?;
        // SAFETY: per this function's contract.
        unsafe { open_into(OP, out, || Manager::open_shm(name, num_locks), shm_handle) }
    })
}

/// Removes the segment `name` (only a manager segment: EBADMSG for anything else).
/// Processes that have it open go on using it; a new create makes a new one. This
/// process's mapping of it goes at once when it has no handle on it.
///
/// Errors: ENOENT none; EBADMSG not a manager segment; ELOOP a symbolic link; EINVAL a
/// bad name.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_destroy_shm(name: *const c_char) -> c_int {
    const OP: &str = "nfslock_manager_destroy_shm";
    ffi_guard(OP, || {
        Manager::destroy_shm(name_arg(OP, name)?).map_err(|e| e.in_op(OP))?;
        retire_destroyed();
        Ok(())
    })
}

/// Creates the manager directory `dir` (mode 0755; its parent must exist): any number
/// of hosts may share it over NFS. Opens it into `*out`.
///
/// Errors: EEXIST something exists at `dir`; ENOENT no parent; EACCES, EROFS, ENOSPC;
/// EINVAL NULL arguments.
///
/// # Safety
/// `dir` is NULL or a NUL-terminated path; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_create_dir(dir: *const c_char, out: *mut *mut nfslock_manager) -> c_int {
    const OP: &str = "nfslock_manager_create_dir";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let dir = unsafe { path_arg(OP, dir)? };
        // SAFETY: per this function's contract.
        unsafe { open_into(OP, out, || Manager::create_dir(dir), dir_handle) }
    })
}

/// Opens the manager directory `dir`.
///
/// Errors: ENOENT no such directory; EBADMSG not a manager directory (no header, a
/// header of another layout version, a file); ELOOP a symbolic link; EINVAL NULL.
///
/// # Safety
/// As for `nfslock_manager_create_dir`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_open_dir(dir: *const c_char, out: *mut *mut nfslock_manager) -> c_int {
    const OP: &str = "nfslock_manager_open_dir";
    ffi_guard(OP, || {
        // SAFETY: per this function's contract.
        let dir = unsafe { path_arg(OP, dir)? };
        // SAFETY: per this function's contract.
        unsafe { open_into(OP, out, || Manager::open_dir(dir), dir_handle) }
    })
}

/// Directory backend: the locks this handle takes from now on are leases of `lease_ms`
/// (renewed by a library thread while held), so another host can recover the lock of a
/// crashed holder after watching it unrenewed for the lease; 0: plain lock files.
///
/// Errors: EINVAL a shared-memory manager, a lease outside 100..=86,400,000 ms, NULL.
///
/// # Safety
/// `m` is NULL or an open manager.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_set_lease_ms(m: *mut nfslock_manager, lease_ms: u32) -> c_int {
    const OP: &str = "nfslock_manager_set_lease_ms";
    ffi_guard(OP, || with_manager(OP, m, |m| m.set_lease(Duration::from_millis(u64::from(lease_ms)))))
}

/// Writes a pair of outputs (a count and whether it is unlimited).
///
/// # Safety
/// Both pointers were checked for NULL and are writable.
unsafe fn write_count(count: u32, unlimited: bool, n_out: *mut u32, unlimited_out: *mut c_int) {
    // SAFETY: per this function's contract.
    unsafe {
        *n_out = count;
        *unlimited_out = c_int::from(unlimited);
    }
}

/// The number of locks (a segment's, rounded up) into `*num_locks_out`; `*unlimited_out`
/// 1 for the directory backend (whose IDs are 0..UINT32_MAX - 1; `*num_locks_out` is
/// then UINT32_MAX), else 0.
///
/// Errors: EINVAL NULL arguments or a closed handle.
///
/// # Safety
/// `m` is NULL or an open manager; the outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_capacity(m: *mut nfslock_manager, num_locks_out: *mut u32, unlimited_out: *mut c_int) -> c_int {
    const OP: &str = "nfslock_manager_capacity";
    ffi_guard(OP, || {
        out_arg(OP, num_locks_out, "num_locks_out")?;
        out_arg(OP, unlimited_out, "unlimited_out")?;
        let c = with_manager(OP, m, |m| Ok(m.capacity()))?;
        // SAFETY: checked above.
        unsafe { write_count(c.num_locks, c.unlimited, num_locks_out, unlimited_out) };
        Ok(())
    })
}

/// Allocates the lowest free ID into `*id_out`: no other caller, in any process or (the
/// directory backend) on any host, gets it until it is freed.
///
/// Errors: ENOSPC every ID is allocated; EINVAL NULL; I/O errors (directory backend).
///
/// # Safety
/// `m` is NULL or an open manager; `id_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_allocate(m: *mut nfslock_manager, id_out: *mut u32) -> c_int {
    const OP: &str = "nfslock_manager_allocate";
    ffi_guard(OP, || {
        out_arg(OP, id_out, "id_out")?;
        let id = with_manager(OP, m, Manager::allocate)?;
        // SAFETY: checked above.
        unsafe { *id_out = id };
        Ok(())
    })
}

/// Allocates `id` itself (to mark the IDs stored with objects as in use again).
///
/// Errors: EEXIST allocated already; ERANGE out of range; EINVAL NULL.
///
/// # Safety
/// `m` is NULL or an open manager.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_allocate_id(m: *mut nfslock_manager, id: u32) -> c_int {
    const OP: &str = "nfslock_manager_allocate_id";
    ffi_guard(OP, || with_manager(OP, m, |m| m.allocate_id(id)))
}

/// Frees `id` for allocation. Its lock stays usable and a holder keeps it.
///
/// Errors: ENOENT not allocated; ERANGE out of range; EINVAL NULL.
///
/// # Safety
/// `m` is NULL or an open manager.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_free(m: *mut nfslock_manager, id: u32) -> c_int {
    const OP: &str = "nfslock_manager_free";
    ffi_guard(OP, || with_manager(OP, m, |m| m.free(id)))
}

/// Frees every ID. DANGEROUS (as Podman's FreeAllLocks): every ID stored with an object
/// becomes free for another object, so two objects may share a lock until all are
/// renumbered, and processes allocating or freeing meanwhile race with it. For tests and
/// for renumbering while no other process uses the manager.
///
/// Errors: EINVAL NULL; I/O errors (directory backend).
///
/// # Safety
/// `m` is NULL or an open manager.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_free_all(m: *mut nfslock_manager) -> c_int {
    const OP: &str = "nfslock_manager_free_all";
    ffi_guard(OP, || with_manager(OP, m, Manager::free_all))
}

/// How many IDs are free into `*n_out`; `*unlimited_out` 1 for the directory backend
/// (`*n_out` is then UINT32_MAX minus the allocated IDs).
///
/// Errors: EINVAL NULL arguments; I/O errors (directory backend).
///
/// # Safety
/// `m` is NULL or an open manager; the outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_available(m: *mut nfslock_manager, n_out: *mut u32, unlimited_out: *mut c_int) -> c_int {
    const OP: &str = "nfslock_manager_available";
    ffi_guard(OP, || {
        out_arg(OP, n_out, "n_out")?;
        out_arg(OP, unlimited_out, "unlimited_out")?;
        let c = with_manager(OP, m, Manager::available)?;
        // SAFETY: checked above.
        unsafe { write_count(c.num_locks, c.unlimited, n_out, unlimited_out) };
        Ok(())
    })
}

/// Copies `ids` (ascending) to `ids_out` when they fit in `cap`; `*n_out` is their count
/// in every case (ERANGE: it is the room needed).
///
/// # Safety
/// `ids_out` is NULL (cap 0) or valid for `cap` writes; `n_out` NULL or writable.
unsafe fn copy_ids(op: &'static str, ids: &[u32], ids_out: *mut u32, cap: usize, n_out: *mut usize) -> Result<(), Error> {
    // SAFETY: n_out was checked for NULL by the caller.
    unsafe { *n_out = ids.len() };
    if ids.len() > cap {
        let why = format!("{} IDs do not fit in room for {cap}: *n_out says how many to make room for", ids.len());
        return Err(Error::new(Errno::ERANGE, op, None, why));
    }
    if !ids.is_empty() {
        if ids_out.is_null() {
            return Err(Error::invalid(op, "ids_out is NULL"));
        }
        // SAFETY: room for cap >= len IDs, per this function's contract.
        unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), ids_out, ids.len()) };
    }
    Ok(())
}

/// The allocated IDs, ascending, into `ids_out` (room for `cap`); their count into
/// `*n_out`.
///
/// Errors: ERANGE more than `cap` (`*n_out` is the number needed; nothing is copied);
/// EINVAL NULL arguments; I/O errors (directory backend).
///
/// # Safety
/// `m` is NULL or an open manager; `ids_out` NULL or valid for `cap` writes; `n_out`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_allocated(m: *mut nfslock_manager, ids_out: *mut u32, cap: usize, n_out: *mut usize) -> c_int {
    const OP: &str = "nfslock_manager_allocated";
    ffi_guard(OP, || {
        out_arg(OP, n_out, "n_out")?;
        let ids = with_manager(OP, m, Manager::allocated)?;
        // SAFETY: per this function's contract.
        unsafe { copy_ids(OP, &ids, ids_out, cap, n_out) }
    })
}

/// The IDs whose lock is held at this moment by anyone, ascending (a snapshot that
/// takes no lock). Directory backend: every lock file present, also one whose holder
/// died and that no locker has cleared yet.
///
/// Errors: as for `nfslock_manager_allocated`.
///
/// # Safety
/// As for `nfslock_manager_allocated`.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_locks_held(m: *mut nfslock_manager, ids_out: *mut u32, cap: usize, n_out: *mut usize) -> c_int {
    const OP: &str = "nfslock_manager_locks_held";
    ffi_guard(OP, || {
        out_arg(OP, n_out, "n_out")?;
        let ids = with_manager(OP, m, Manager::locks_held)?;
        // SAFETY: per this function's contract.
        unsafe { copy_ids(OP, &ids, ids_out, cap, n_out) }
    })
}

/// A segment lock call that did not simply succeed, out of the hot path.
#[cold]
#[inline(never)]
fn lock_failed(op: &'static str, segment: &Segment, id: u32, rc: c_int, timeout: Option<Duration>) -> c_int {
    failed(segment.lock_error(op, id, rc, timeout))
}

/// A lock call on a handle that is not a live segment handle: a directory manager, or
/// no manager (EINVAL).
#[cold]
#[inline(never)]
fn lock_slow(op: &'static str, m: *mut nfslock_manager, id: u32, timeout: Option<Duration>) -> c_int {
    code_of(with_manager(op, m, |m| m.timedlock(id, timeout)).and_then(|o| locked(op, o)))
}

fn locked(op: &'static str, outcome: Locked) -> Result<(), Error> {
    match outcome {
        Locked::Clean => Ok(()),
        Locked::PreviousHolderDied => Err(Error::new(
            Errno::EOWNERDEAD,
            op,
            None,
            "the previous holder died holding the lock: the caller holds it now (what it protects may be half updated; the lock is usable as usual)",
        )),
    }
}

/// Takes lock `id` (allocated or not), waiting as long as it takes. Shared memory: the
/// lock belongs to the calling thread. Directory: a dead holder of this host is cleared
/// at once; another host's only when the manager's locks are leases and it ran out.
///
/// Errors: EOWNERDEAD (shared memory) the previous holder died holding it: the caller
/// HOLDS the lock now and must unlock it; what it protects may be half updated (the
/// robust-mutex convention; the lock is already consistent again). EDEADLK the calling
/// thread holds it; ERANGE out of range; ENOTRECOVERABLE the lock was left unusable;
/// EINVAL NULL or closed; I/O errors (directory backend).
///
/// # Safety
/// `m` is NULL or an open manager.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_lock(m: *mut nfslock_manager, id: u32) -> c_int {
    const OP: &str = "nfslock_manager_lock";
    ffi_guard_code(OP, || match slots::segment(m as usize) {
        Some(segment) => match segment.lock_code(id, None) {
            0 => 0,
            rc => lock_failed(OP, segment, id, rc, None),
        },
        None => lock_slow(OP, m, id, None),
    })
}

/// Like `nfslock_manager_lock`, waiting at most `timeout_ms` (0: one try; < 0: forever).
///
/// Errors: as for `nfslock_manager_lock`; EBUSY (timeout 0) held; ETIMEDOUT still held
/// when the time passed.
///
/// # Safety
/// `m` is NULL or an open manager.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_timedlock(m: *mut nfslock_manager, id: u32, timeout_ms: i64) -> c_int {
    const OP: &str = "nfslock_manager_timedlock";
    ffi_guard_code(OP, || {
        let timeout = timeout_of(timeout_ms);
        match slots::segment(m as usize) {
            Some(segment) => match segment.lock_code(id, timeout) {
                0 => 0,
                rc => lock_failed(OP, segment, id, rc, timeout),
            },
            None => lock_slow(OP, m, id, timeout),
        }
    })
}

/// Releases lock `id`.
///
/// Errors: EPERM the calling thread does not hold it (shared memory: another thread or
/// a forked child cannot release it; directory: not taken by this thread through this
/// handle); ENOLCK (directory) someone removed or replaced the lock file meanwhile;
/// ERANGE out of range; EINVAL NULL or closed.
///
/// # Safety
/// `m` is NULL or an open manager.
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_unlock(m: *mut nfslock_manager, id: u32) -> c_int {
    const OP: &str = "nfslock_manager_unlock";
    ffi_guard_code(OP, || match slots::segment(m as usize) {
        Some(segment) => match segment.unlock_code(id) {
            0 => 0,
            rc => failed(segment.unlock_error(OP, id, rc)),
        },
        None => code_of(with_manager(OP, m, |m| m.unlock(id))),
    })
}

/// Closes the manager; the handle is dead afterwards in every case (EINVAL from then on).
/// Directory: releases every lock taken through the handle. Shared memory: closing the
/// process's last handle on the segment releases the calling thread's locks in it (locks
/// other threads hold stay theirs; while another handle on the segment is open nothing is
/// released). The segment stays mapped while the process has a handle on it, and after
/// the last close for a later open, until its name is destroyed: so other threads' calls
/// and locks go on working, and a thread that dies holding a lock still hands it on as
/// EOWNERDEAD. A destroyed segment's mapping goes with its last handle; no other thread
/// may be inside a call on that handle then.
///
/// Errors: EINVAL NULL or not an open handle; ENOLCK (directory) a lock had been
/// removed by someone else.
///
/// # Safety
/// `m` is NULL or a handle from this library (any value is recognised as live or not).
#[no_mangle]
pub unsafe extern "C" fn nfslock_manager_close(m: *mut nfslock_manager) -> c_int {
    const OP: &str = "nfslock_manager_close";
    ffi_guard(OP, || {
        let manager = resolve(OP, m)?;
        if !slots::close(m as usize) {
            return Err(Error::invalid(OP, "not an open manager handle (closed already?)"));
        }
        match manager {
            Resolved::Shm(manager) => {
                let shared = SEGMENTS.find(|s| std::ptr::eq(&s.manager, manager));
                if let Some(shared) = shared {
                    release_handle(shared);
                }
                Ok(())
            }
            Resolved::Dir(_) => match MANAGERS.remove(m as usize) {
                Some(manager) => manager.shut().map_err(|e| e.in_op(OP)),
                None => Err(Error::invalid(OP, "not an open manager handle (closed already?)")),
            },
        }
    })
}
