//! `nfslock unlock`, `break` (confirmation refused without a terminal), `wait`.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use support::*;

/// A lock file left by a process of this host that is gone (Core's record format).
fn dead_holders_lock(path: &std::path::Path) {
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    fs::write(lock_file(path), format!("((host {})(pid {pid})(message crashed))", hostname())).unwrap();
}

#[test]
fn unlock_follows_unlock_exn() {
    let dir = tempfile::tempdir().unwrap();
    let (x, dead) = (dir.path().join("x"), dir.path().join("dead"));
    nfslock().args(["unlock", x.to_str().unwrap()]).assert().code(66).stderr(predicate::str::contains("not locked"));
    let _holder = hold(&x, "alive");
    nfslock().args(["unlock", x.to_str().unwrap()]).assert().code(75);
    assert!(lock_file(&x).exists(), "a live holder's lock is left alone");
    // Another host's lock: never removed by unlock.
    let other = dir.path().join("other");
    fs::write(lock_file(&other), b"((host elsewhere-host)(pid 1)(message theirs))").unwrap();
    nfslock().args(["unlock", other.to_str().unwrap()]).assert().code(75);
    assert!(lock_file(&other).exists());
    dead_holders_lock(&dead);
    nfslock().args(["unlock", dead.to_str().unwrap()]).assert().code(0);
    assert!(!lock_file(&dead).exists());
}

#[test]
fn break_asks_and_refuses_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (x, free) = (dir.path().join("x"), dir.path().join("free"));
    nfslock().args(["break", free.to_str().unwrap(), "--reason", "r", "--yes"]).assert().code(66);
    nfslock().args(["break", x.to_str().unwrap()]).assert().code(64); // no --reason
    fs::write(lock_file(&x), b"((host elsewhere-host)(pid 1)(message theirs))").unwrap();
    nfslock()
        .args(["break", x.to_str().unwrap(), "--reason", "gone"])
        .write_stdin("y\n")
        .assert()
        .code(64)
        .stderr(predicate::str::contains("--yes"));
    assert!(lock_file(&x).exists(), "not broken without confirmation");
    nfslock().args(["break", x.to_str().unwrap(), "--reason", "host is gone", "--yes"]).assert().code(0);
    assert!(!lock_file(&x).exists());
}

#[test]
fn wait_until_free() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    nfslock().args(["wait", x.to_str().unwrap()]).assert().code(0);
    let holder = hold(&x, "busy");
    let start = Instant::now();
    nfslock().args(["wait", "-w", "0.3", x.to_str().unwrap()]).assert().code(124).stderr(predicate::str::contains("busy"));
    assert!(start.elapsed() >= Duration::from_millis(300));
    let waiter = std::process::Command::new(BIN).args(["wait", x.to_str().unwrap()]).spawn().unwrap();
    let mut waiter = Proc(waiter);
    std::thread::sleep(Duration::from_millis(200));
    assert!(waiter.0.try_wait().unwrap().is_none(), "waits while held");
    holder.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(waiter.wait().code(), Some(0));
    // A dead holder's lock counts as free (the next taker clears it).
    dead_holders_lock(&x);
    nfslock().args(["wait", "-w", "1", x.to_str().unwrap()]).assert().code(0);
}
