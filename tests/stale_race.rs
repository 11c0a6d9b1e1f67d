//! Concurrent cleaners of dead locks never let two processes hold the lock at once.
//!
//! Several processes contend for one lock while the lock is repeatedly left behind by a
//! "dead" holder (a record naming an exited pid of this host), so every release is
//! followed by a race of cleaners. A marker file created with O_EXCL inside the critical
//! section detects any overlap. This file holds one test: it forks, and a forked child
//! of a multi-threaded test harness must not share the process with other tests.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nfslock::host::Identity;
use nfslock::lockfile;

const WORKERS: usize = 6;
const ROUNDS: usize = 60;

#[path = "support/scratch.rs"]
mod scratch;

fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true").spawn().expect("spawns true");
    let pid = child.id() as i32;
    child.wait().expect("waits");
    pid
}

/// Leaves a lock whose holder is dead, as a crash would: the record is complete (link of
/// a fully written file), so only its owner's death makes it stale.
fn plant_dead_lock(dir: &Path, lock: &Path, pid: i32) {
    let me = Identity::of_this_process();
    let record = nfslock::Record { pid, start_time: None, ..me.record(b"crashed") };
    let tmp = dir.join(format!("plant-{}", std::process::id()));
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp).expect("temp file");
    f.write_all(&record.to_bytes()).expect("writes record");
    drop(f);
    let _ = fs::hard_link(&tmp, lock); // EEXIST: someone holds it; fine.
    fs::remove_file(&tmp).expect("removes temp");
}

fn worker(dir: &Path, path: &Path, lock: &Path, pid: i32, start: i32) -> i32 {
    // Wait for the start signal so that all workers race from the first round.
    let mut byte = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    if unsafe { libc::read(start, byte.as_mut_ptr().cast(), 1) } != 1 {
        return 3;
    }
    let marker = dir.join("inside");
    for round in 0..ROUNDS {
        let held = match lockfile::blocking_create(path, b"worker", Some(Duration::from_secs(30))) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("worker {}: {e}", std::process::id());
                return 1;
            }
        };
        if fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_err() {
            eprintln!("worker {}: marker exists: two holders at once", std::process::id());
            return 2;
        }
        std::thread::sleep(Duration::from_micros(200));
        fs::remove_file(&marker).expect("removes marker");
        if held.unlock().is_err() {
            return 4;
        }
        if round % 2 == 0 {
            plant_dead_lock(dir, lock, pid);
        }
    }
    0
}

#[test]
fn racing_cleaners_never_double_hold() {
    let dir = scratch::dir("stale-race");
    let path = dir.path().join("shared");
    let lock = dir.path().join("shared.nfs_lock");
    let pid = dead_pid();
    plant_dead_lock(dir.path(), &lock, pid);

    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut children = Vec::new();
    for _ in 0..WORKERS {
        // SAFETY: the child only runs worker() and _exit()s; it never returns into the harness.
        match unsafe { libc::fork() } {
            0 => {
                let code = worker(dir.path(), &path, &lock, pid, fds[0]);
                // A normal exit, so that the library's at-exit release runs.
                // SAFETY: ends the child process; nothing of the harness runs after it.
                unsafe { libc::exit(code) }
            }
            child if child > 0 => children.push(child),
            _ => panic!("fork failed"),
        }
    }
    // SAFETY: writing to our pipe; one byte per worker releases them together.
    unsafe { libc::write(fds[1], [0u8; WORKERS].as_ptr().cast(), WORKERS) };
    let mut failures = Vec::new();
    for child in children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failures.push(status);
        }
    }
    assert!(failures.is_empty(), "workers failed with statuses {failures:?}");
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".nfslock-"))
        .collect();
    assert!(leftovers.is_empty(), "claim files left behind by exited workers: {leftovers:?}");
}
