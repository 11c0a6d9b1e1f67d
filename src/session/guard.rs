//! The repository's guard: the lock file `NAME.guard` (this library's own lock-file
//! protocol) that serialises creating a repository, reaping, `check` and
//! `repair_counter`.

use std::time::Duration;

use super::layout::Repo;
use crate::error::Result;
use crate::lockfile::{self, Lock};

/// Takes the guard of `repo` for operation `op`, waiting up to `wait` (zero: one
/// attempt, EAGAIN when busy; ETIMEDOUT naming the holder after `wait`). `why` is the
/// lock's message, for people who look.
pub fn take(repo: &Repo, op: &'static str, why: &str, wait: Duration) -> Result<Lock> {
    let message = format!("nfslock session: {why}");
    lockfile::blocking_create_internal(&repo.guard, message.as_bytes(), Some(wait)).map_err(|e| e.in_op(op))
}
