//! What the main thread of `nfslock PATH -- COMMAND` waits for: one channel carries
//! the acquisition's outcome, signals, COMMAND's end and a lost lease, in the order
//! they happen.

use std::process::ExitStatus;

use crate::held::Held;

pub enum Event {
    /// The acquiring thread's outcome.
    Acquired(nfslock::Result<Held>),
    /// A forwarded signal (signals.rs); `from_terminal`: sent by the kernel to the
    /// terminal's foreground group, which COMMAND is part of.
    Signal { sig: i32, from_terminal: bool },
    /// COMMAND ended.
    Exited(std::io::Result<ExitStatus>),
    /// The lease is lost or no longer safely held.
    Lost(nfslock::Error),
}
