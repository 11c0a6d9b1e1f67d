//! The lock `nfslock PATH -- COMMAND` holds: a plain lock file, or a lease (exclusive
//! or shared), taken through the library's Rust API.

use std::path::Path;
use std::time::Duration;

use nfslock::lease::{self, Lease};
use nfslock::lockfile::{self, Lock};

/// The lease a shared lock gets when --lease is not given (shared locks are leases).
pub const DEFAULT_SHARED_LEASE: Duration = Duration::from_secs(60);

/// How to take the lock.
#[derive(Debug, Clone)]
pub struct Request {
    pub message: Vec<u8>,
    /// None: a plain lock (never broken across hosts while its holder lives).
    pub lease: Option<Duration>,
    pub shared: bool,
    /// None: forever; zero: one attempt.
    pub timeout: Option<Duration>,
}

impl Request {
    pub fn lease(&self) -> Option<Duration> {
        self.lease.or(self.shared.then_some(DEFAULT_SHARED_LEASE))
    }
}

#[derive(Debug)]
pub enum Held {
    Plain(Lock),
    Lease(Lease),
}

impl Held {
    /// Takes the lock on `path` as `req` says, waiting as the library does.
    pub fn acquire(path: &Path, req: &Request) -> nfslock::Result<Held> {
        match req.lease() {
            None => lockfile::blocking_create(path, &req.message, req.timeout).map(Held::Plain),
            Some(lease) => {
                let options = lease::Options { message: req.message.clone(), lease, keepalive: true, shared: req.shared };
                lease::acquire(path, &options, req.timeout).map(Held::Lease)
            }
        }
    }

    /// Ok while the lock is still ours (a lease: renewed in time).
    pub fn check(&self) -> nfslock::Result<()> {
        match self {
            Held::Plain(l) => l.is_held(),
            Held::Lease(l) => l.is_held(),
        }
    }

    /// How often a lease is looked at while COMMAND runs: well within the half lease
    /// after which an unrenewed one stops being safe.
    pub fn check_every(&self) -> Option<Duration> {
        match self {
            Held::Plain(_) => None,
            Held::Lease(l) => Some((l.lease() / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))),
        }
    }

    pub fn unlock(self) -> nfslock::Result<()> {
        match self {
            Held::Plain(l) => l.unlock(),
            Held::Lease(l) => l.unlock(),
        }
    }
}
