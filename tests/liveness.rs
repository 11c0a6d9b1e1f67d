//! A live holder is never cleared, even when its record's start time no longer matches
//! its process (as after the realtime clock was stepped: start times are computed from
//! /proc/stat's btime, which moves with the clock). Its claim's flock proves it alive.
//! Once it is killed, the same lock is cleared at once, by the very next call.

use std::fs;
use std::io::{Read, Write};

use nfslock::Errno;
use nfslock::{lockfile, Record, StartTime};

#[path = "support/scratch.rs"]
mod scratch;

#[test]
fn live_holder_with_shifted_start_time_is_not_cleared() {
    let dir = scratch::dir("liveness");
    let path = dir.path().join("p");
    let lock = dir.path().join("p.nfs_lock");

    let killed = holder_child(&path, b"long job").expect("the child took the lock");

    // Shift the recorded start time by an hour, in place (same inode, as a clock step
    // would make every reader compute it): by pid and start time the holder looks dead.
    let mut record = Record::parse(&fs::read(&lock).unwrap()).unwrap();
    record.start_time = record.start_time.map(|t| StartTime(t.0 - 3_600_000_000));
    fs::OpenOptions::new().write(true).truncate(true).open(&lock).unwrap().write_all(&record.to_bytes()).unwrap();
    let inode = fs::symlink_metadata(&lock).unwrap();

    let err = lockfile::create(&path, b"thief").expect_err("a live holder keeps its lock");
    assert_eq!(err.errno(), Errno::EAGAIN, "{err}");
    let err = lockfile::unlock_path(&path).expect_err("and unlock_path does not clear it");
    assert_eq!(err.errno(), Errno::EAGAIN, "{err}");
    let now = fs::symlink_metadata(&lock).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&now), std::os::unix::fs::MetadataExt::ino(&inode));

    drop(killed);
    let taken = lockfile::create(&path, b"after the holder died").expect("a dead holder is cleared");
    taken.unlock().unwrap();
}

/// One call never answers from another call's judgement: a holder judged alive by one
/// create, then SIGKILLed and reaped, is cleared by the very next create (the old 50 ms
/// process-wide "judged alive" cache answered EAGAIN, "alive 12 ms ago").
#[test]
fn a_holder_killed_a_moment_ago_is_cleared_by_the_next_call() {
    let dir = scratch::dir("killed");
    let path = dir.path().join("p");
    for round in 0..20 {
        let killed = holder_child(&path, b"about to be killed").unwrap_or_else(|| panic!("round {round}: the child took the lock"));
        let err = lockfile::create(&path, b"taker").expect_err("a live holder keeps its lock");
        assert_eq!(err.errno(), Errno::EAGAIN, "{err}");
        drop(killed);
        let taken = lockfile::create(&path, b"taker").unwrap_or_else(|e| panic!("round {round}: {e}"));
        taken.unlock().unwrap();
    }
}

/// A message that cannot fit a record is refused before anything is written: no claim,
/// no lock file, and the path stays free for everyone.
#[test]
fn an_oversized_message_is_emsgsize_and_writes_nothing() {
    let dir = scratch::dir("msgsize");
    let path = dir.path().join("p");
    let message = vec![b'm'; 70_000];
    let err = lockfile::create(&path, &message).expect_err("70 KB does not fit 64 KiB");
    assert_eq!(err.errno(), Errno::EMSGSIZE, "{err}");
    let err = lockfile::blocking_create(&path, &message, None).expect_err("nor when waiting");
    assert_eq!(err.errno(), Errno::EMSGSIZE, "{err}");
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files were written: {left:?}");
    lockfile::create(&path, b"small").expect("the path is free").unlock().unwrap();
}

/// Forks a child that takes the lock on `path` and then sleeps until it is killed;
/// returns the guard that kills and reaps it, or None when the child could not lock.
fn holder_child(path: &std::path::Path, message: &[u8]) -> Option<impl Drop> {
    let (r, w) = nix::unistd::pipe().unwrap();
    let (mut ready_r, mut ready_w) = (fs::File::from(r), fs::File::from(w));
    // SAFETY: the child only takes the lock, reports, and sleeps until it is killed.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        drop(ready_r);
        let held = lockfile::create(path, message);
        let _ = ready_w.write_all(if held.is_ok() { b"1" } else { b"0" });
        std::mem::forget(held);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    drop(ready_w);
    let mut ok = [0u8; 1];
    ready_r.read_exact(&mut ok).unwrap();
    let killed = scopeguard_kill(child);
    (&ok == b"1").then_some(killed)
}

/// Kills and reaps the child when dropped, also when an assertion fails first.
fn scopeguard_kill(pid: libc::pid_t) -> impl Drop {
    struct Kill(libc::pid_t);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
    Kill(pid)
}
