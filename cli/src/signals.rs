//! The signals nfslock forwards to COMMAND. They are blocked in every thread (set
//! before any thread starts, so the library's threads inherit the mask) and taken by
//! one thread with sigwaitinfo(2), which turns each into an [`Event`]: nothing runs in
//! a signal handler, and a signal that arrives while nfslock is still waiting for the
//! lock is seen too. COMMAND starts with an empty mask (run.rs clears it between fork and exec).

use std::sync::mpsc::Sender;

use crate::events::Event;

/// Forwarded to COMMAND; any of them ends a wait for the lock.
pub const FORWARDED: [i32; 6] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the forwarded signals in the calling thread; call it before starting any
/// other thread.
pub fn block() {
    let set = set();
    // SAFETY: changes the calling thread's mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Starts the thread that reports each forwarded signal on `events`.
pub fn listen(events: Sender<Event>) {
    let set = set();
    std::thread::spawn(move || loop {
        // SAFETY: a zeroed siginfo_t is a valid buffer for sigwaitinfo to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits on signals blocked in every thread; writes only `info`.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue; // EINTR
        }
        // The kernel sends a terminal's SIGINT, SIGQUIT and SIGHUP to its whole
        // foreground process group, COMMAND included: those are not sent again.
        let from_terminal = info.si_code == libc::SI_KERNEL;
        if events.send(Event::Signal { sig, from_terminal }).is_err() {
            return;
        }
    });
}
