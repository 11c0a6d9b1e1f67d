//! libnfslock: locks that stay correct when the processes sharing them run on different
//! machines over NFS or any shared POSIX filesystem.
//!
//! The safe Rust core is usable directly ([`lockfile`], [`lease`], [`session`]); the C ABI over it
//! is declared in `include/nfslock.h`.
//!
//! A lock file, as Core's `Nfs_lock` takes it (`P.nfs_lock` holds the holder's record):
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("queue");
//! use std::time::Duration;
//! use nfslock::{lockfile, Errno};
//!
//! let lock = lockfile::blocking_create(&path, b"nightly import", Some(Duration::from_secs(30)))?;
//! let holder = lockfile::read_record(&path)?;
//! assert_eq!(holder.pid, std::process::id() as i32);
//! // The same thread again, through any spelling of the path: EDEADLK at once.
//! assert_eq!(lockfile::create(&path, b"again").unwrap_err().errno(), Errno::EDEADLK);
//! lock.unlock()?; // ENOLCK had someone removed or replaced our lock meanwhile
//! # Ok::<(), nfslock::Error>(())
//! ```
//!
//! A lease: renewed by a library thread while held, broken by another host only after it
//! watched the lease go unrenewed for a whole lease period on its own clock. Each
//! exclusive holder gets a larger fencing token than the one before:
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("db");
//! use std::time::Duration;
//! use nfslock::lease::{self, Options, State};
//!
//! let opts = Options { message: b"writer".to_vec(), lease: Duration::from_secs(10), ..Options::default() };
//! let first = lease::acquire(&path, &opts, Some(Duration::from_secs(5)))?;
//! let token = first.fencing_token()?;
//! assert_eq!(lease::inspect(&path, Duration::ZERO)?.state, State::HeldByCaller);
//! first.unlock()?;
//! let second = lease::acquire(&path, &opts, None)?;
//! assert!(second.fencing_token()? > token); // storage can refuse the older writer
//! second.unlock()?;
//!
//! // Processes share a reader's lock; a writer waits until the last of them leaves.
//! // (Within one process a lock has one holder at a time: its other threads wait.)
//! let reader = lease::acquire(&path, &Options { shared: true, ..opts }, None)?;
//! assert_eq!(lease::inspect(&path, Duration::ZERO)?.shared_holders, 1);
//! reader.unlock()?;
//! assert_eq!(lease::inspect(&path, Duration::ZERO)?.state, State::Free);
//! # Ok::<(), nfslock::Error>(())
//! ```
//!
//! Unique, increasing IDs shared by every session of a repository, on any host:
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use nfslock::session::Session;
//!
//! let s = Session::open(dir.path().join("repo"), Some("jobs"), None)?;
//! let ids = s.make_new_ids(3)?;
//! assert!(ids[0] < ids[1] && ids[1] < ids[2]);
//! s.close()?; // releases every ID lock of the session
//! # Ok::<(), nfslock::Error>(())
//! ```

#![warn(missing_docs)]

mod backoff;
mod clock;
pub mod errno;
pub mod error;
mod fence;
#[doc(hidden)]
pub mod ffi;
mod fsops;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod lease;
pub mod lockfile;
pub mod manager;
mod process;
mod random;
pub mod record;
pub mod session;
mod sexp;

pub use errno::Errno;
pub use error::{Error, Result};
pub use record::{Record, StartTime};
