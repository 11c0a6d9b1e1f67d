//! libnfslock: locks that stay correct when the processes sharing them run on different
//! machines over NFS or any shared POSIX filesystem.
//!
//! The safe Rust core is usable directly ([`lockfile`], [`session`]); [`ffi`] is the C ABI over it,
//! declared in `include/nfslock.h`.

pub mod errno;
pub mod error;
#[doc(hidden)]
pub mod ffi;
#[doc(hidden)] pub mod fuzzing;
mod fsops;
mod process;
mod random;
pub mod host;
pub mod lockfile;
pub mod record;
pub mod session;
mod sexp;

pub use errno::Errno;
pub use error::{Error, Result};
pub use record::{Record, StartTime};
