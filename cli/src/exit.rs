//! Exit statuses (documented in the help text, nfslock(1) and cli/README.md), and how a
//! library error maps to one.

use nfslock::{Errno, Error};

/// Bad arguments (sysexits' EX_USAGE).
pub const USAGE: u8 = 64;
/// unlock, break: nothing to remove (EX_NOINPUT).
pub const NOT_LOCKED: u8 = 66;
/// Any other failure of nfslock itself.
pub const ERROR: u8 = 70;
/// The lock is held (EX_TEMPFAIL: try again later).
pub const BUSY: u8 = 75;
/// The lease was lost while COMMAND ran.
pub const LOST: u8 = 76;
/// --wait ran out (as timeout(1)).
pub const TIMED_OUT: u8 = 124;
/// COMMAND exists but could not be run / was not found (as the shell).
pub const CANNOT_RUN: u8 = 126;
pub const NOT_FOUND: u8 = 127;

/// break: the operator answered no.
pub const DECLINED: u8 = 1;

/// status: the lock(s) free / some held / an error.
pub const STATUS_FREE: u8 = 0;
pub const STATUS_HELD: u8 = 1;
pub const STATUS_ERROR: u8 = 2;

/// Errors that say the arguments were wrong rather than the world.
pub fn is_usage(e: &Error) -> bool {
    matches!(e.errno(), Errno::EINVAL | Errno::ENAMETOOLONG | Errno::EMSGSIZE)
}

/// The exit status of a failed library call outside of waiting for a lock.
pub fn of_error(e: &Error) -> u8 {
    if is_usage(e) {
        USAGE
    } else {
        ERROR
    }
}

/// "nfslock: PATH: CAUSE" on standard error.
pub fn report(e: &Error) {
    match e.path() {
        Some(p) => eprintln!("nfslock: {}: {}", p.display(), e.cause()),
        None => eprintln!("nfslock: {}", e.cause()),
    }
}
