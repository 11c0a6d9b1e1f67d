//! Crash loops through the C API: 200 lock holders and 200 session allocators, two at a
//! time, each SIGKILLed at a random moment shortly after it starts working (so that kills
//! land inside create, between a claim's create and its write, inside session open and
//! inside make_new_ids). Afterwards, and already after the first 50 crashes:
//!
//! - every lock path can be taken again on this host within a second
//!   (`nfslock_blocking_create` with a 1000 ms timeout succeeds);
//! - no ID was issued twice across all allocators (each reports an ID only after
//!   make_new_ids returned it), and a new session's next ID is above all of them;
//! - `nfslock_session_check` is clean once `nfslock_session_reap_locks` reaped the dead;
//! - the litter the crashes leave (claims, empty files, temporary files, session records,
//!   ID claims and locks, combining tables) does not grow with the number of crashes: after
//!   200 crashes there is at most a small constant more than after 50.
//!
//! The processes are `tests/hardening/crash_worker.c`, built against `include/nfslock.h`
//! and the cdylib. The random kill delays come from a seed printed by the test;
//! `NFSLOCK_CRASH_SEED=<seed>` replays a run.
#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "support/cdylib.rs"]
mod cdylib;
#[path = "support/scratch.rs"]
mod scratch;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");

/// Crashes per test, two processes at a time, and the point where litter is first counted.
const CRASHES: usize = 200;
const FIRST_COUNT: usize = 50;
/// Lock paths the holders share.
const NPATHS: usize = 4;
/// Litter allowed after 200 crashes beyond what there was after 50. Litter is counted
/// after a cleanup: for lock holders, after the checker cleared a holder killed while it
/// held a lock (README: a crashed process's claims are removed by the next cleanup of a
/// dead holder in the directory); for sessions, after the checker's reap_locks and close.
const LITTER_SLACK: usize = 2;
/// Kill delays after a worker says it starts: at most this (see `Rng::delay`).
const HOLDER_DELAY_US: u64 = 6_000;
const ALLOC_DELAY_US: u64 = 20_000;
const NAME: &str = "crash";

/// The two tests run one after the other: each keeps both cores busy.
static SERIAL: Mutex<()> = Mutex::new(());
static WORKER: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn work_dir() -> PathBuf {
    Path::new(TARGET_TMPDIR).join("crash-loops")
}

fn worker() -> PathBuf {
    let built = WORKER.get_or_init(|| {
        fs::create_dir_all(work_dir()).map_err(|e| format!("mkdir {}: {e}", work_dir().display()))?;
        let exe = work_dir().join("crash_worker");
        let src = Path::new(MANIFEST_DIR).join("tests/hardening/crash_worker.c");
        cdylib::build_c_program(&[src], &exe, &[])?;
        Ok(exe)
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// xorshift64*, seeded from the kernel (or NFSLOCK_CRASH_SEED), printed for replays.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("NFSLOCK_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let mut b = [0u8; 8];
            fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("read /dev/urandom");
            u64::from_ne_bytes(b) | 1
        });
        println!("seed: NFSLOCK_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    /// A kill delay: half of them uniform in [0, 1 ms), where a worker's first claim or
    /// session record is being created, the others uniform in [0, `max_us`).
    fn delay(&mut self, max_us: u64) -> Duration {
        let max = if self.below(2) == 0 { 1_000 } else { max_us };
        Duration::from_micros(self.below(max))
    }
}

/// A worker process, killed and reaped when dropped.
struct Worker {
    child: Child,
    out: BufReader<ChildStdout>,
    ready: Instant,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Worker {
    let mut child = Command::new(worker())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the crash worker {args:?}: {e}"));
    let out = BufReader::new(child.stdout.take().expect("worker stdout"));
    let mut w = Worker { child, out, ready: Instant::now() };
    let mut first = String::new();
    w.out.read_line(&mut first).expect("read the worker's first line");
    assert_eq!(first, "R\n", "the worker {args:?} did not start working (its first line)");
    w.ready = Instant::now();
    w
}

/// What one killed worker wrote.
#[derive(Default)]
struct Report {
    /// It said `F` (its first lock attempt returned, or its session was open).
    past_first: bool,
    ids: Vec<u64>,
    errors: Vec<String>,
}

/// Kills each worker at its deadline (after its `R`), reaps it and reads what it wrote.
/// A worker that ended before it was killed is a failure of its own.
fn kill_at(mut workers: Vec<(Worker, Duration)>, failures: &mut Vec<String>) -> Vec<Report> {
    workers.sort_by_key(|(w, d)| w.ready + *d);
    let mut reports = Vec::new();
    for (mut w, delay) in workers {
        let deadline = w.ready + delay;
        let now = Instant::now();
        if deadline > now {
            sleep(deadline - now);
        }
        let pid = w.child.id();
        // SAFETY: kill(2) on the pid of our own unreaped child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let status = w.child.wait().expect("wait for a worker");
        if status.signal() != Some(libc::SIGKILL) {
            failures.push(format!("worker pid {pid} ended on its own before it was killed: {status}"));
        }
        let mut report = Report::default();
        let mut rest = String::new();
        let _ = w.out.read_to_string(&mut rest);
        for line in rest.lines() {
            if line == "F" {
                report.past_first = true;
            } else if let Some(ids) = line.strip_prefix("I ") {
                report.ids.extend(ids.split(' ').map(|i| i.parse::<u64>().expect("an id")));
            } else {
                report.errors.push(format!("pid {pid}: {line}"));
            }
        }
        reports.push(report);
    }
    reports
}

/// Runs a checker (`check-locks` or `check-session`) to its end, within 60 s.
fn run_checker(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(worker())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the checker {args:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the checker") {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    match status {
        Some(s) => (s.success(), format!("{out}[{s}]")),
        None => (false, format!("{out}[still running after 60 s: killed]")),
    }
}

/// The names in `dir` (one level) with their sizes, except those `keep` accepts.
fn listing(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<String> = entries
        .map_while(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep(&name) {
                return None;
            }
            let what = match fs::symlink_metadata(e.path()) {
                Ok(m) if m.is_dir() => "dir".to_string(),
                Ok(m) => format!("{} bytes", m.len()),
                Err(e) => e.to_string(),
            };
            Some(format!("{}/{name} ({what})", dir.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    out.sort();
    out
}

fn lock_litter(dir: &Path) -> Vec<String> {
    let paths: Vec<String> = (0..NPATHS).map(|i| format!("lock{i}")).collect();
    listing(dir, |name| paths.iter().any(|p| p == name))
}

/// Everything in the repository but its counter, its two directories and the `P` files of
/// its guard and writer locks; everything in the directories; the repository's
/// combining tables in /dev/shm.
fn repo_litter(dir: &Path) -> Vec<String> {
    let keep =
        [format!("{NAME}.counter"), format!("{NAME}.ids"), format!("{NAME}.sessions"), format!("{NAME}.guard"), format!("{NAME}.writer")];
    let mut out = listing(dir, |name| keep.iter().any(|k| k == name));
    out.extend(listing(&dir.join(format!("{NAME}.ids")), |_| false));
    out.extend(listing(&dir.join(format!("{NAME}.sessions")), |_| false));
    if let Ok(st) = fs::symlink_metadata(dir.join(format!("{NAME}.ids"))) {
        let suffix = format!("-{:x}-{:x}", st.dev(), st.ino());
        out.extend(listing(Path::new("/dev/shm"), |name| !(name.starts_with("nfslock-ids-") && name.ends_with(&suffix))));
    }
    out
}

fn summary(litter: &[String]) -> String {
    if litter.is_empty() {
        return "none".into();
    }
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for l in litter {
        let kind = if l.contains("/.nfslock-") {
            if l.ends_with("(0 bytes)") {
                "empty .nfslock-* file"
            } else {
                ".nfslock-* file"
            }
        } else if l.contains(".sessions/") {
            if l.ends_with("(0 bytes)") {
                "empty session record"
            } else {
                "session record"
            }
        } else if l.contains(".ids/.claim-") {
            "ID claim"
        } else if l.contains(".ids/") {
            "ID lock"
        } else if l.contains(&format!("/.{NAME}.counter.")) {
            "counter temporary file"
        } else if l.contains("nfslock-ids-") {
            "combining table"
        } else {
            "other"
        };
        *by_kind.entry(kind.to_string()).or_default() += 1;
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} ({}):\n    {}", litter.len(), kinds.join(", "), litter.join("\n    "))
}

fn finish(what: &str, failures: Vec<String>) {
    assert!(failures.is_empty(), "{what}: {} failure(s):\n- {}", failures.len(), failures.join("\n- "));
}

#[test]
fn lock_holders_killed_at_random_points() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = scratch::dir_in(&work_dir(), "holders");
    let dir = scratch::path_str(&scratch).to_string();
    let npaths = NPATHS.to_string();
    let mut rng = Rng::new();
    let mut failures = Vec::new();
    let mut litter_at = Vec::new();
    let (mut early, mut late) = (0, 0);
    let started = Instant::now();
    for round in 1..=CRASHES / 2 {
        let pair: Vec<(Worker, Duration)> = (0..2).map(|_| (start(&["holder", &dir, &npaths]), rng.delay(HOLDER_DELAY_US))).collect();
        for r in kill_at(pair, &mut failures) {
            if r.past_first {
                late += 1
            } else {
                early += 1
            }
            failures.extend(r.errors.into_iter().map(|e| format!("after {} crashes, a holder: {e}", round * 2)));
        }
        if round * 2 == FIRST_COUNT || round * 2 == CRASHES {
            // One more holder, killed while it holds lock0 for sure: the checker clears
            // it, and with it the claims of every dead process in the directory.
            let mut last = start(&["hold", &dir]);
            let mut held = String::new();
            let _ = last.out.read_line(&mut held);
            if held != "H\n" {
                failures.push(format!("after {} crashes, a holder could not take lock0 within 10 s: {held}", round * 2));
            }
            drop(last);
            let (ok, out) = run_checker(&["check-locks", &dir, &npaths]);
            if !ok {
                failures.push(format!("after {} crashes, a lock path could not be taken within 1 s:\n{out}", round * 2));
            }
            let litter = lock_litter(scratch.path());
            println!("litter after {} crashes: {}", round * 2, summary(&litter));
            litter_at.push(litter);
        }
    }
    println!(
        "{CRASHES} holders killed in {:.1} s: {early} before their first lock attempt returned, {late} after",
        started.elapsed().as_secs_f64()
    );
    let (first, last) = (&litter_at[0], &litter_at[1]);
    if last.len() > first.len() + LITTER_SLACK {
        failures.push(format!(
            "litter grows with the number of crashes: {} entries after {FIRST_COUNT} crashes, {} after {CRASHES} \
             (allowed: {} + {LITTER_SLACK}); after {CRASHES}: {}",
            first.len(),
            last.len(),
            first.len(),
            summary(last)
        ));
    }
    finish("lock holders killed at random points", failures);
}

#[test]
fn session_allocators_killed_at_random_points() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = scratch::dir_in(&work_dir(), "allocators");
    let dir = scratch.path().join("repo");
    let dir_s = dir.to_str().unwrap().to_string();
    let mut rng = Rng::new();
    let mut failures = Vec::new();
    let mut litter_at = Vec::new();
    // Which worker (crash number) reported each ID.
    let mut issued: HashMap<u64, usize> = HashMap::new();
    let mut max_id = None;
    let (mut early, mut late) = (0, 0);
    let started = Instant::now();
    for round in 1..=CRASHES / 2 {
        let pair: Vec<(Worker, Duration)> = (0..2).map(|_| (start(&["alloc", &dir_s, NAME]), rng.delay(ALLOC_DELAY_US))).collect();
        for (k, r) in kill_at(pair, &mut failures).into_iter().enumerate() {
            let crash = round * 2 - 1 + k;
            if r.past_first {
                late += 1
            } else {
                early += 1
            }
            failures.extend(r.errors.into_iter().map(|e| format!("crash {crash}, an allocator: {e}")));
            for id in r.ids {
                max_id = max_id.max(Some(id));
                if let Some(other) = issued.insert(id, crash) {
                    failures.push(format!("ID {id} was issued twice: to the allocators of crashes {other} and {crash}"));
                }
            }
        }
        if round * 2 == FIRST_COUNT || round * 2 == CRASHES {
            let (ok, out) = run_checker(&["check-session", &dir_s, NAME]);
            println!("checker after {} crashes: {}", round * 2, out.trim_end());
            if !ok {
                failures.push(format!("after {} crashes, reap_locks + check + make_new_ids + close failed:\n{out}", round * 2));
            }
            let next = out.lines().find_map(|l| l.strip_prefix("NEXT ")).and_then(|n| n.parse::<u64>().ok());
            if let (Some(next), Some(max)) = (next, max_id) {
                if next <= max {
                    failures.push(format!("after {} crashes, a new session got ID {next}, not above the {max} issued before", round * 2));
                }
            }
            let litter = repo_litter(&dir);
            println!("litter after {} crashes: {}", round * 2, summary(&litter));
            litter_at.push(litter);
        }
    }
    println!(
        "{CRASHES} allocators killed in {:.1} s: {early} before their session was open, {late} after; {} IDs reported",
        started.elapsed().as_secs_f64(),
        issued.len()
    );
    if issued.is_empty() {
        failures.push("no allocator reported any ID: the kills never landed after make_new_ids".into());
    }
    let (first, last) = (&litter_at[0], &litter_at[1]);
    if last.len() > first.len() + LITTER_SLACK {
        failures.push(format!(
            "litter grows with the number of crashes: {} entries after {FIRST_COUNT} crashes, {} after {CRASHES} \
             (allowed: {} + {LITTER_SLACK}); after {CRASHES}: {}",
            first.len(),
            last.len(),
            first.len(),
            summary(last)
        ));
    }
    finish("session allocators killed at random points", failures);
}
