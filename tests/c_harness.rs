//! Builds the C test harness (`c-tests/*.c`) against the generated `include/nfslock.h`
//! and the cdylib, then runs it: once natively (all tests), once under valgrind (`--quick`,
//! without the multi-process stress test).
//!
//! The C harness prints one line per test and closes with `N passed, N failed`; these tests
//! show its whole output and fail unless it passed every test it lists.
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "support/cdylib.rs"]
mod cdylib;
use cdylib::build_c_program;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");

/// The two tests run one after the other: the stress test and valgrind each keep the
/// machine's cores busy, and the C tests check timings (a 200 ms timeout must not take 2 s).
static SERIAL: Mutex<()> = Mutex::new(());

/// The harness executable, compiled once per test binary run.
static HARNESS: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn work_dir() -> PathBuf {
    Path::new(TARGET_TMPDIR).join("c-harness")
}

fn build_harness() -> Result<PathBuf, String> {
    let root = Path::new(MANIFEST_DIR);
    let mut sources: Vec<PathBuf> = fs::read_dir(root.join("c-tests"))
        .map_err(|e| format!("read c-tests/: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        return Err("no C sources in c-tests/".into());
    }
    fs::create_dir_all(work_dir()).map_err(|e| format!("mkdir {}: {e}", work_dir().display()))?;
    let exe = work_dir().join("nfslock-c-harness");
    // t_version also compares nfslock_version() with Cargo.toml's version.
    let version = format!("-DNFSLOCK_EXPECTED_VERSION=\"{}\"", env!("CARGO_PKG_VERSION"));
    build_c_program(&sources, &exe, &[version])?;
    Ok(exe)
}

fn harness() -> PathBuf {
    match HARNESS.get_or_init(build_harness) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Runs `cmd` with stdout and stderr into one file (keeps their order), killing it after
/// `limit`. Returns whether it succeeded and what it printed.
///
/// On a timeout only the runner process is killed: each C test runs under its own alarm(),
/// and its helpers exit when their parent's pipe closes, so nothing outlives that alarm.
fn run_bounded(mut cmd: Command, limit: Duration, log_name: &str) -> (bool, String) {
    let log = work_dir().join(log_name);
    let file = fs::File::create(&log).expect("create log file");
    cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("dup log file")).stderr(file);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for harness") {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(100));
    };
    let mut output = fs::read_to_string(&log).unwrap_or_default();
    output.push_str(&format!("[{:?} after {:.1} s]\n", status, start.elapsed().as_secs_f64()));
    match status {
        Some(s) => (s.success(), output),
        None => (false, format!("{output}KILLED: still running after {limit:?}\n")),
    }
}

/// How many tests `--list` names with these extra arguments.
fn listed(extra: &[&str]) -> usize {
    let out = Command::new(harness()).arg("--list").args(extra).output().expect("--list");
    assert!(out.status.success(), "--list failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
}

/// Checks the closing `N passed, N failed` line: every listed test passed.
fn assert_all_passed(ok: bool, output: &str, expected: usize) {
    println!("{output}");
    let last = output.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("");
    let summary = format!("{expected} passed, 0 failed");
    assert!(
        ok && last == summary,
        "the C harness did not pass: expected exit status 0 and a closing `{summary}`; got \
         `{last}` (exit status and output above)"
    );
}

fn run_dir() -> PathBuf {
    let dir = work_dir().join("runs");
    fs::create_dir_all(&dir).expect("create run dir");
    dir
}

#[test]
fn c_harness_passes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = harness();
    let expected = listed(&[]);
    let mut cmd = Command::new(&exe);
    cmd.arg("--tmpdir").arg(run_dir());
    let (ok, output) = run_bounded(cmd, Duration::from_secs(600), "native.log");
    assert_all_passed(ok, &output, expected);
}

#[test]
fn c_harness_passes_under_valgrind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // No silent skip: CI must install valgrind (Debian package `valgrind`).
    let probe = Command::new("valgrind").arg("--version").output();
    assert!(matches!(&probe, Ok(o) if o.status.success()), "valgrind is not installed (apt-get install valgrind): {probe:?}");
    let exe = harness();
    let expected = listed(&["--quick"]);
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "-q",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite,indirect",
        "--show-leak-kinds=definite,indirect",
        "--num-callers=40",
    ])
    // Only the memory of a session's heartbeat thread in a forked child (see the file).
    .arg(format!("--suppressions={MANIFEST_DIR}/c-tests/valgrind.supp"))
    .arg(&exe)
    // Everything is ~20x slower under valgrind: stretch the alarms and time bounds.
    .args(["--quick", "--timeout-scale", "10", "--tmpdir"])
    .arg(run_dir());
    let (ok, output) = run_bounded(cmd, Duration::from_secs(1200), "valgrind.log");
    assert_all_passed(ok, &output, expected);
}
