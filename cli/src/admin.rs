//! The operator's subcommands: `unlock`, `break`, `wait`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nfslock::lease::{self, State};
use nfslock::{lockfile, Errno};

use crate::describe;
use crate::exit;

/// `nfslock unlock PATH`: the library's unlock by path (Core's unlock_exn rules).
pub fn unlock(path: &Path) -> u8 {
    match lockfile::unlock_path(path) {
        Ok(()) => 0,
        Err(e) => {
            exit::report(&e);
            match e.errno() {
                Errno::ENOENT => exit::NOT_LOCKED,
                Errno::EPERM | Errno::EAGAIN => exit::BUSY,
                _ => exit::of_error(&e),
            }
        }
    }
}

/// `nfslock break PATH --reason TEXT [--yes]`.
pub fn break_lock(path: &Path, reason: &str, yes: bool) -> u8 {
    let info = match lease::inspect(path, Duration::ZERO) {
        Ok(info) => info,
        Err(e) => {
            exit::report(&e);
            return exit::of_error(&e);
        }
    };
    if info.state == State::Free {
        eprintln!("nfslock: {}: not locked", path.display());
        return exit::NOT_LOCKED;
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("nfslock: {}: not broken: standard input is not a terminal to confirm on (pass --yes)", path.display());
            return exit::USAGE;
        }
        let who = describe::waiting_for(&info, describe::written_at(path));
        eprint!("Break the lock on {} ({who})? [y/N] ", path.display());
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("nfslock: {}: not broken", path.display());
            return exit::DECLINED;
        }
    }
    match lease::break_lock(path, reason) {
        Ok(()) => 0,
        Err(e) => {
            exit::report(&e);
            match e.errno() {
                Errno::ENOENT => exit::NOT_LOCKED,
                Errno::EAGAIN => exit::BUSY,
                _ => exit::of_error(&e),
            }
        }
    }
}

/// How long one look at a lease may watch it (a look ends early when it is released).
const LEASE_LOOK: Duration = Duration::from_secs(3600);
/// Between looks at a plain lock.
const POLL: Duration = Duration::from_millis(100);

/// `nfslock wait PATH [-w SECONDS]`: until the lock is free, its holder a dead process
/// of this host, or its lease expired (the next taker clears either).
pub fn wait(path: &Path, timeout: Option<Duration>) -> u8 {
    let start = Instant::now();
    loop {
        let left = timeout.map_or(LEASE_LOOK, |t| t.saturating_sub(start.elapsed()).min(LEASE_LOOK));
        match lease::inspect(path, left) {
            Ok(info) if matches!(info.state, State::Free | State::DeadHolder | State::Expired) => return 0,
            Ok(info) if info.state == State::Unreadable => {
                eprintln!("nfslock: {}: the lock file is not a lock record", path.display());
                return exit::ERROR;
            }
            Ok(info) => {
                if timeout.is_some_and(|t| start.elapsed() >= t) {
                    eprintln!("nfslock: {}: timed out: {}", path.display(), describe::waiting_for(&info, describe::written_at(path)));
                    return exit::TIMED_OUT;
                }
            }
            Err(e) => {
                exit::report(&e);
                return exit::of_error(&e);
            }
        }
        let left = timeout.map_or(POLL, |t| t.saturating_sub(start.elapsed()).min(POLL));
        std::thread::sleep(left);
    }
}
