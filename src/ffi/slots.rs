//! The lock manager's C handles (`nfslock_manager *`): addresses of slots in one arena
//! that is never freed, so that a lock or unlock finds its segment with two comparisons
//! and one load, without a registry's mutex or a reference count, and still tells a dead
//! handle from a live one.
//!
//! - A handle is the address of a slot. Slots are handed out once, in order, and never
//!   reused: a handle that was closed stays a closed slot for the life of the process
//!   (EINVAL), and a value that is not a slot's address (another family's handle, a
//!   stray pointer) is outside the arena or misaligned (EINVAL), found without reading
//!   through it.
//! - A shared-memory segment opened through the C API stays mapped while the process
//!   has a handle on it, and after its last close too (a later open reuses the mapping:
//!   one per segment file), so a call another thread makes while a handle is closed
//!   still works on mapped memory (a lock call blocked in the kernel included). Only a
//!   segment whose name was destroyed (or made again) is unmapped, once its last handle
//!   is closed (ffi/manager.rs).
//! - A directory manager's slot says so; its manager is in `handles::MANAGERS` under
//!   the handle, and goes when it is closed (its calls are syscalls; one more lookup
//!   does not show).

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use nix::errno::Errno;

use crate::error::Error;
use crate::manager::shm::Segment;
use crate::manager::Manager;

// A slot never handed out is all zeroes: state 0, neither live nor closed.
const LIVE: u32 = 1;
const CLOSED: u32 = 2;

#[repr(C, align(16))]
pub struct Slot {
    state: AtomicU32,
    /// A shared-memory manager (never freed); NULL for a directory manager.
    shm: AtomicPtr<Manager>,
}

/// Handles a process can open in its life (16 bytes of address space each, reserved
/// at the first open, touched as used).
const SLOTS: usize = 1 << 20;
const SLOT_SIZE: usize = std::mem::size_of::<Slot>();

/// The arena's address; 0 until the first open.
static ARENA: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn arena(op: &'static str) -> Result<usize, Error> {
    let base = ARENA.load(Ordering::Acquire);
    if base != 0 {
        return Ok(base);
    }
    // SAFETY: a fresh private anonymous mapping; zeroed memory is a slot in state NEVER.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SLOTS * SLOT_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::new(Errno::last(), op, None, "cannot reserve the manager handles' memory"));
    }
    match ARENA.compare_exchange(0, p as usize, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(p as usize),
        Err(winner) => {
            // Another thread reserved it first: this reservation is not needed.
            // SAFETY: our own mapping, never handed out.
            unsafe { libc::munmap(p, SLOTS * SLOT_SIZE) };
            Ok(winner)
        }
    }
}

/// A new live handle for `shm` (a shared-memory manager, kept for the process's life) or
/// for a directory manager (None; the caller registers it under the handle).
pub fn open(op: &'static str, shm: Option<&'static Manager>) -> Result<usize, Error> {
    let base = arena(op)?;
    let index = NEXT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| (i < SLOTS).then_some(i + 1))
        .map_err(|_| Error::new(Errno::ENOMEM, op, None, format!("this process has opened {SLOTS} managers: no handles are left")))?;
    let handle = base + index * SLOT_SIZE;
    // SAFETY: inside the arena, aligned, handed out to nobody else (the index is ours).
    let slot = unsafe { &*(handle as *const Slot) };
    slot.shm.store(shm.map_or(std::ptr::null_mut(), |m| std::ptr::from_ref(m).cast_mut()), Ordering::Relaxed);
    slot.state.store(LIVE, Ordering::Release);
    Ok(handle)
}

/// The slot `handle` names, if it is a slot's address at all.
#[inline]
fn slot(handle: usize) -> Option<&'static Slot> {
    let base = ARENA.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    let offset = handle.wrapping_sub(base);
    if offset >= SLOTS * SLOT_SIZE || offset % SLOT_SIZE != 0 {
        return None;
    }
    // SAFETY: the address of a slot in the arena, which is never unmapped.
    Some(unsafe { &*(handle as *const Slot) })
}

/// What a live handle stands for.
pub enum Open {
    Shm(&'static Manager),
    Dir,
}

/// The manager behind a live handle; None: not a handle, or closed.
#[inline]
pub fn live(handle: usize) -> Option<Open> {
    let slot = slot(handle)?;
    if slot.state.load(Ordering::Acquire) != LIVE {
        return None;
    }
    let shm = slot.shm.load(Ordering::Relaxed);
    // SAFETY: a shared-memory manager in a slot is never freed.
    Some(if shm.is_null() { Open::Dir } else { Open::Shm(unsafe { &*shm }) })
}

/// The segment behind a live shared-memory handle: the lock and unlock fast path.
#[inline]
pub fn segment(handle: usize) -> Option<&'static Segment> {
    match live(handle)? {
        Open::Shm(m) => m.segment(),
        Open::Dir => None,
    }
}

/// Marks a live handle closed (false: it was not live: closed before, or not a handle).
pub fn close(handle: usize) -> bool {
    slot(handle).is_some_and(|s| s.state.compare_exchange(LIVE, CLOSED, Ordering::AcqRel, Ordering::Relaxed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_slot_addresses_are_handles() {
        let h = open("t", None).unwrap();
        assert!(matches!(live(h), Some(Open::Dir)));
        assert!(live(h + 1).is_none(), "misaligned");
        assert!(live(0x1010).is_none(), "another family's handle number");
        assert!(close(h));
        assert!(!close(h), "closed twice");
        assert!(live(h).is_none());
        let next = open("t", None).unwrap();
        assert_ne!(next, h, "slots are never reused");
    }
}
