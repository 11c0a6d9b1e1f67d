//! Hardening checks through the C API (`tests/hardening/*.c`, built against
//! `include/nfslock.h` and the cdylib), each a contract of the README or the header:
//!
//! - the lock on `D/A` reached through another spelling of its path (`D/sub/../A`,
//!   `D/link/A` with `link -> D`, a relative `../A`) by the thread that holds it: EDEADLK
//!   at once from create and blocking_create, never EAGAIN and never a wait forever;
//! - a program that dlopen()s the library, uses it, dlclose()s it, then forks and exits
//!   does not crash (parent and child);
//! - with nothing held, the library keeps at most 8 descriptors after 100 lock/unlock
//!   cycles over 20 paths, and under RLIMIT_NOFILE 20 every distinct path still locks and
//!   the program's own open() still works;
//! - a socket at `P.nfs_lock` is EBADMSG ("not a regular file") and left alone; the readers
//!   take `P.nfs_lock` itself as well as `P`; a path ending in `/.` names a directory:
//!   EINVAL from every call, nothing created;
//! - a message whose record exceeds the 64 KiB cap is refused (EINVAL or EMSGSIZE) before
//!   anything is written, and the lock stays takeable.
#![cfg(target_os = "linux")]

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "support/cdylib.rs"]
mod cdylib;
#[path = "support/scratch.rs"]
mod scratch;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");

static CHECKS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static DLOPEN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn work_dir() -> PathBuf {
    Path::new(TARGET_TMPDIR).join("hardening")
}

fn build(cell: &'static OnceLock<Result<PathBuf, String>>, name: &str, extra: &[&str]) -> PathBuf {
    let built = cell.get_or_init(|| {
        fs::create_dir_all(work_dir()).map_err(|e| format!("mkdir {}: {e}", work_dir().display()))?;
        let exe = work_dir().join(name);
        let src = Path::new(MANIFEST_DIR).join(format!("tests/hardening/{name}.c"));
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        cdylib::build_c_program(&[src], &exe, &extra)?;
        Ok(exe)
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn checks() -> PathBuf {
    build(&CHECKS, "checks", &[])
}

/// Runs `exe args` to its end (killed after 60 s); its exit status and what it printed.
fn run(exe: &Path, args: &[&str]) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", exe.display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let mut e = String::new();
        let _ = stderr.read_to_string(&mut e);
        s + &e
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap_or_default())
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "still running after 60 s (killed)".into(),
        Some(s) => match s.signal() {
            Some(libc::SIGALRM) => "killed by SIGALRM: it waited instead of returning".into(),
            Some(sig) => format!("killed by signal {sig}{}", if s.core_dumped() { " (core dumped)" } else { "" }),
            None => format!("exit status {}", s.code().unwrap_or(-1)),
        },
    }
}

/// Runs a mode of `checks` in a fresh directory and requires it to pass.
fn check_mode(mode: &str, extra: &[&str]) -> String {
    let scratch = scratch::dir_in(&work_dir(), &format!("{mode}{}", extra.join("-")));
    let mut args = vec![mode, scratch::path_str(&scratch)];
    args.extend_from_slice(extra);
    let (status, out) = run(&checks(), &args);
    println!("{out}");
    assert!(status.is_some_and(|s| s.success()), "checks {mode} {}: {}\n{out}", extra.join(" "), describe(status));
    out
}

#[test]
fn another_spelling_of_a_held_path_is_edeadlk_for_create() {
    check_mode("spelling", &[]);
}

#[test]
fn another_spelling_of_a_held_path_is_edeadlk_for_blocking_create_forever() {
    // One process per spelling, all at once: a wait forever is ended by an alarm (5 s)
    // in that process.
    let spellings = ["D/sub/../A", "D/link/A (link -> D)", "../A from D/sub"];
    let results: Vec<(Option<ExitStatus>, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..spellings.len())
            .map(|n| {
                scope.spawn(move || {
                    let scratch = scratch::dir_in(&work_dir(), &format!("spelling-wait-{n}"));
                    run(&checks(), &["spelling-wait", scratch::path_str(&scratch), &n.to_string()])
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("a spelling run")).collect()
    });
    let mut failed = Vec::new();
    for (spelling, (status, out)) in spellings.iter().zip(results) {
        println!("{spelling}: {}\n{out}", describe(status));
        if !status.is_some_and(|s| s.success()) {
            failed.push(format!("{spelling}: {}\n{out}", describe(status)));
        }
    }
    assert!(
        failed.is_empty(),
        "holding D/A, nfslock_blocking_create(<other spelling>, -1) must return EDEADLK at once:\n{}",
        failed.join("\n")
    );
}

#[test]
fn dlopen_use_dlclose_then_fork_and_exit_does_not_crash() {
    // --as-needed: the program uses no symbol of the library directly, so the linker
    // leaves it out and only dlopen() maps it (the program checks that).
    let exe = build(&DLOPEN, "dlopen", &["-Wl,--as-needed"]);
    let lib = cdylib::cdylib_dir().unwrap_or_else(|e| panic!("{e}")).join("libnfslock.so");
    let mut failed = Vec::new();
    // "main": the library is used from the main thread; "thread": only from threads that
    // ended before each dlclose (nothing of the library is left registered for a live
    // thread, so the loader may really unmap it).
    for mode in ["main", "thread"] {
        let scratch = scratch::dir_in(&work_dir(), &format!("dlopen-{mode}"));
        let (status, out) = run(&exe, &[lib.to_str().unwrap(), scratch::path_str(&scratch), mode]);
        println!("{mode}: {}\n{out}", describe(status));
        if !status.is_some_and(|s| s.success()) {
            failed.push(format!("used from the {mode} thread: {}\n{out}", describe(status)));
        }
        // The lock still held at the second dlclose was released at exit (or at dlclose).
        let held = scratch.path().join("blocking1.nfs_lock");
        if held.exists() {
            failed.push(format!("used from the {mode} thread: {} survived the exit of its holder", held.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "a program that dlopen()ed, used and dlclose()d the library, then forked and exited:\n{}",
        failed.join("\n")
    );
}

/// Stronger than the brief's "uses it, dlclose()s it": a session still open at dlclose
/// (its heartbeat thread running), opened from a thread that ended before. "Pin the library or refuse
/// dlclose" makes this harmless; a library really unmapped under its own thread is not.
#[test]
fn dlclose_with_a_session_still_open_does_not_crash() {
    let exe = build(&DLOPEN, "dlopen", &["-Wl,--as-needed"]);
    let lib = cdylib::cdylib_dir().unwrap_or_else(|e| panic!("{e}")).join("libnfslock.so");
    // Whether the loader really unmaps the library depends on a race between dlclose and
    // the heartbeat thread's start (a thread-local destructor it registers keeps the
    // library mapped): five runs, each must pass.
    for run_no in 1..=5 {
        let scratch = scratch::dir_in(&work_dir(), &format!("dlopen-session-open-{run_no}"));
        let (status, out) = run(&exe, &[lib.to_str().unwrap(), scratch::path_str(&scratch), "session-open"]);
        println!("run {run_no}: {}\n{out}", describe(status));
        assert!(
            status.is_some_and(|s| s.success()),
            "run {run_no}: a program that dlclose()d the library with a session open, then forked and exited: {}\n{out}",
            describe(status)
        );
    }
}

#[test]
fn unlocked_paths_keep_at_most_8_descriptors() {
    check_mode("fds", &[]);
}

#[test]
fn distinct_paths_lock_under_rlimit_nofile_20() {
    check_mode("rlimit", &[]);
}

#[test]
fn a_socket_at_the_lock_file_is_ebadmsg_and_left_alone() {
    let scratch = scratch::dir_in(&work_dir(), "socket");
    let (status, out) = run(&checks(), &["socket", scratch::path_str(&scratch)]);
    println!("{out}");
    assert!(status.is_some_and(|s| s.success()), "checks socket: {}\n{out}", describe(status));
    // After the process is gone (its claims removed at exit), only the socket is left.
    let names: Vec<String> = fs::read_dir(scratch.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["P.nfs_lock".to_string()], "the directory after the calls on a socket lock file");
}

#[test]
fn readers_take_the_lock_file_itself() {
    check_mode("readers", &[]);
}

#[test]
fn paths_ending_in_dot_name_directories_and_are_einval() {
    check_mode("dot", &[]);
}

#[test]
fn a_message_over_the_record_cap_is_refused_before_anything_is_written() {
    check_mode("bigmsg", &[]);
}
