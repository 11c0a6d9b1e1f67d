//! Core interop, for real: Jane Street Core's Nfs_lock and libnfslock on one lock never
//! both hold it.
//!
//! `tests/core/core_peer.c` replays Core's system call sequences (core_unix,
//! `lock_file_blocking/src/nfs_lock.ml`): v1 create (`create_exn`, which Core's
//! `blocking_create` and `critical_section` use), v2 create (`create_v2_internal_exn`),
//! unlock (`unlock_self_exn`) and the stale cleanup inside both creates
//! (`prepare_to_lock_exn`), with a pause point before every call that touches the lock's
//! files. `tests/core/our_peer.c` drives libnfslock through `include/nfslock.h` and the
//! cdylib. Every peer is a process of its own; each, once it believes it holds the lock,
//! creates a marker file with O_EXCL, so a second believer's O_EXCL fails: an overlap.
//!
//! For every pause point K of a Core sequence (K = 1, 2, ... until the sequence ends
//! before reaching K, which is then the point "after Core finished"), from each start
//! state, one of our operations runs while Core waits before its K-th call:
//!
//! - start states: a fresh directory; `P` as our `nfslock_unlock` left it, its process
//!   gone; a dead Core v1 holder (`P` and `P.nfs_lock` one inode); a dead Core v2 holder;
//!   a dead libnfslock holder; a dead Core v1 holder cleared by our
//!   `nfslock_unlock_path` (so `P` may still be the dead lock's inode); a live
//!   libnfslock holder;
//! - our operations: `nfslock_create` (on a lock of a dead holder this is our stale
//!   cleanup), `nfslock_blocking_create`, `nfslock_unlock_path`, a whole
//!   `nfslock_create` + `nfslock_unlock` cycle, `nfslock_unlock` by the live holder; and,
//!   for the windows our files open, a second Core v1 create (Core's own cleaner).
//!
//! Then Core resumes and finishes; the peers that do not hold exit (their records are
//! now a dead process's); a fresh libnfslock process and a fresh Core v1 process each
//! try once more (probes: a lock file that shows a dead record while someone believes
//! they hold it is taken here); finally every holder releases. A run fails on an
//! overlap, on a holder whose release finds its lock file gone or someone else's
//! (`nfslock_unlock` ENOLCK, Core's "stolen?"), and, for `nfslock_blocking_create`, when
//! it does not end up holding the lock once Core has let go, or returns an error while
//! Core is paused inside its create (a Core v1 lock file is empty between Core's link
//! and its write: it must be waited on like a held one).
//!
//! Timed cases replay Core v1 with a real gap of 60-150 ms between its link and its
//! write (the reproduction) against our create, blocking_create and a second
//! Core; `NFSLOCK_CORE_INTEROP_LOOPS` (default 1) repeats them. Two cases check
//! `nfslock_blocking_create` against an empty Core lock: it waits while Core is between
//! link and write, and reports EBADMSG for a lock file that stays empty (its Core holder
//! crashed there) only after [`EMPTY_PATIENCE_MIN`] at the earliest.
//!
//! Host names: Core built with OCaml 4 reads the host name into a 64-byte buffer and
//! sets its last byte to NUL (OCaml 4's `unix_gethostname`), so on a machine whose host
//! name is 64 bytes long (the Linux maximum) Core's records name a 63-byte host while
//! libnfslock's name all 64 bytes. Each then sees the other as another host: mutual
//! exclusion holds (another host's lock is never broken, by either side), but stale
//! cleanup between them does not happen (a dead Core holder is never cleared by
//! libnfslock, nor a dead libnfslock holder by Core; each still clears its own). Core on
//! OCaml 5 reads the name whole (the control case). The hostname tests set a 64-byte
//! host name inside a UTS namespace of their own (`unshare --uts`, which needs root, as
//! CI runs) and show both halves.

#![cfg(target_os = "linux")]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "support/cdylib.rs"]
mod cdylib;
#[path = "support/scratch.rs"]
mod scratch;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");

/// Repeats of the timed (real-gap) cases.
const LOOPS_VAR: &str = "NFSLOCK_CORE_INTEROP_LOOPS";
/// The shortest time a lock file may stay empty before `nfslock_blocking_create` calls it
/// unreadable (EBADMSG): the README documents it, `UNWRITTEN_PATIENCE`, as 5 s.
const EMPTY_PATIENCE_MIN: Duration = Duration::from_secs(5);
/// How long any one answer of a peer may take (far above every expected answer).
const ANSWER: Duration = Duration::from_secs(10);
/// The timeout our blocking_create gets in the interleaving runs.
const BLOCKING_MS: u64 = 4000;
/// Scenario runs in parallel (their time is mostly waiting).
const WORKERS: usize = 3;

/// Tests run one at a time: each keeps several processes busy.
static SERIAL: Mutex<()> = Mutex::new(());
static PEERS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn work_dir() -> PathBuf {
    Path::new(TARGET_TMPDIR).join("core-interop")
}

fn build_peers() -> Result<(PathBuf, PathBuf), String> {
    let src = Path::new(MANIFEST_DIR).join("tests/core");
    let bin = work_dir().join("bin");
    fs::create_dir_all(&bin).map_err(|e| format!("mkdir {}: {e}", bin.display()))?;
    let core = bin.join("core_peer");
    cdylib::build_c_program(&[src.join("core_peer.c"), src.join("peer_common.c")], &core, &[])?;
    let ours = bin.join("our_peer");
    cdylib::build_c_program(&[src.join("our_peer.c"), src.join("peer_common.c")], &ours, &[])?;
    Ok((core, ours))
}

fn peer_exe(kind: Kind) -> PathBuf {
    match PEERS.get_or_init(build_peers) {
        Ok((core, ours)) => match kind {
            Kind::Core => core.clone(),
            Kind::Ours => ours.clone(),
        },
        Err(e) => panic!("{e}"),
    }
}

fn loops() -> usize {
    std::env::var(LOOPS_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

/// Everything the peers of one run said and were told, in order of arrival.
#[derive(Clone)]
struct Log(Arc<Mutex<Vec<String>>>, Instant);

impl Log {
    fn new() -> Log {
        Log(Arc::new(Mutex::new(Vec::new())), Instant::now())
    }
    fn push(&self, line: String) {
        let ms = self.1.elapsed().as_secs_f64() * 1000.0;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{ms:8.1} ms  {line}"));
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Core,
    Ours,
}

/// One peer process and its line protocol (tests/core/peer.h).
struct Peer {
    label: String,
    kind: Kind,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    log: Log,
    holds: bool,
    gone: bool,
}

impl Peer {
    fn send(&mut self, cmd: &str) {
        self.log.push(format!("{} <- {cmd}", self.label));
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{cmd}").and_then(|()| stdin.flush());
        }
    }

    /// The next line starting with one of `prefixes` (others are skipped: they are in
    /// the log), or None after `timeout`.
    fn wait_for(&mut self, prefixes: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if prefixes.iter().any(|p| line.starts_with(p)) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn ok(&self, done: &str) -> bool {
        let word = done.split_whitespace().nth(2).unwrap_or("");
        match self.kind {
            Kind::Core => word == "ok",
            Kind::Ours => word == "OK",
        }
    }
}

/// One scenario's processes and directory; dropped (also on panic) it kills its
/// children by pid and removes the directory.
struct Run {
    name: String,
    dir: scratch::TempDir,
    log: Log,
    peers: Vec<Peer>,
    violations: Vec<String>,
    notes: Vec<String>,
}

impl Drop for Run {
    fn drop(&mut self) {
        for p in &mut self.peers {
            if !p.gone {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        // The directory goes with the TempDir, dropped after this.
    }
}

impl Run {
    fn new(name: String) -> Run {
        let dir = scratch::dir_in(&work_dir().join("runs"), "run");
        Run { name, dir, log: Log::new(), peers: Vec::new(), violations: Vec::new(), notes: Vec::new() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("P")
    }
    fn lock_file(&self) -> PathBuf {
        self.dir.path().join("P.nfs_lock")
    }
    fn marker(&self) -> PathBuf {
        self.dir.path().join("inside.marker")
    }

    fn violation(&mut self, what: String) {
        self.log.push(format!("VIOLATION: {what}"));
        self.violations.push(what);
    }

    fn spawn(&mut self, kind: Kind, label: &str, extra: &[&str]) -> usize {
        let mut cmd = Command::new(peer_exe(kind));
        cmd.arg(self.path()).arg(self.marker()).args(extra);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let (log, name) = (self.log.clone(), label.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                log.push(format!("{name}: {line}"));
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut peer = Peer { label: label.into(), kind, child, stdin, rx, log: self.log.clone(), holds: false, gone: false };
        assert!(peer.wait_for(&["ready"], ANSWER).is_some(), "{label} did not start");
        self.peers.push(peer);
        self.peers.len() - 1
    }

    /// Sends `cmd` and waits up to `timeout` for its `done` line; a successful create
    /// also waits for `held` / `overlap`. None (and a violation) when no answer came.
    fn command_within(&mut self, i: usize, cmd: &str, timeout: Duration) -> Option<String> {
        let op = cmd.split_whitespace().next().unwrap_or("").to_string();
        self.peers[i].send(cmd);
        self.finish(i, &op, timeout)
    }

    fn command(&mut self, i: usize, cmd: &str) -> Option<String> {
        self.command_within(i, cmd, ANSWER)
    }

    /// Waits for the end of operation `op` already sent to peer `i`.
    fn finish(&mut self, i: usize, op: &str, timeout: Duration) -> Option<String> {
        let Some(done) = self.peers[i].wait_for(&[&format!("done {op}")], timeout) else {
            let label = self.peers[i].label.clone();
            self.violation(format!("{label}: no answer to `{op}` within {timeout:?} (hung?)"));
            return None;
        };
        self.after_done(i, op, &done);
        Some(done)
    }

    fn after_done(&mut self, i: usize, op: &str, done: &str) {
        let taking = matches!(op, "create" | "blocking" | "v1" | "v2");
        if taking && self.peers[i].ok(done) && self.peers[i].wait_for(&["held", "overlap"], ANSWER).is_some() {
            self.peers[i].holds = true;
        }
        if op == "unlock" {
            self.peers[i].holds = false;
        }
    }

    fn exit(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if p.gone {
            return;
        }
        p.send("exit");
        p.stdin = None;
        let deadline = Instant::now() + ANSWER;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                p.gone = true;
                return;
            }
            sleep(Duration::from_millis(2));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        p.gone = true;
    }

    /// SIGKILLs peer `i` and reaps it: a crashed holder. Its marker goes with it.
    fn kill(&mut self, i: usize) {
        let marker = self.marker();
        let p = &mut self.peers[i];
        let _ = p.child.kill();
        let _ = p.child.wait();
        p.gone = true;
        p.log.push(format!("{}: SIGKILLed and reaped", p.label));
        if p.holds {
            let _ = fs::remove_file(marker);
        }
        p.holds = false;
    }

    /// Every holder releases; a release that finds the lock file gone or someone else's
    /// means the lock was taken from under a live holder.
    fn release_all(&mut self) {
        for i in 0..self.peers.len() {
            if !self.peers[i].holds || self.peers[i].gone {
                continue;
            }
            let label = self.peers[i].label.clone();
            if let Some(done) = self.command(i, "unlock") {
                if !self.peers[i].ok(&done) {
                    self.violation(format!("{label} believed it held the lock, but its release found otherwise: {done}"));
                }
            }
        }
    }

    fn check_overlaps(&mut self) {
        let overlaps: Vec<String> = self.log.lines().into_iter().filter(|l| l.contains(": overlap")).collect();
        for o in overlaps {
            self.violation(format!("two holders at once: {}", o.trim()));
        }
    }

    /// The fresh-process probes, then the releases and the overlap check.
    fn probe_release_check(&mut self) {
        let probe = self.spawn(Kind::Ours, "probe-ours", &[]);
        self.command(probe, "create probe");
        if !self.peers[probe].holds {
            self.exit(probe);
        }
        let cprobe = self.spawn(Kind::Core, "probe-core", &[]);
        self.command(cprobe, "v1 probe");
        if !self.peers[cprobe].holds {
            self.exit(cprobe);
        }
        self.release_all();
        self.check_overlaps();
        if fs::symlink_metadata(self.lock_file()).is_ok() {
            let content = fs::read(self.lock_file()).unwrap_or_default();
            self.notes.push(format!("after every holder released, P.nfs_lock is still there: {:?}", String::from_utf8_lossy(&content)));
        }
    }

    fn outcome(&self) -> Outcome {
        Outcome { name: self.name.clone(), violations: self.violations.clone(), notes: self.notes.clone(), log: self.log.lines() }
    }
}

struct Outcome {
    name: String,
    violations: Vec<String>,
    notes: Vec<String>,
    log: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Fresh,
    OursUnlocked,
    DeadCoreV1,
    DeadCoreV2,
    DeadOurs,
    DeadCoreV1ClearedByUnlockPath,
    LiveOurs,
}

impl Start {
    fn name(self) -> &'static str {
        match self {
            Start::Fresh => "fresh",
            Start::OursUnlocked => "P-after-our-unlock",
            Start::DeadCoreV1 => "dead-core-v1-holder",
            Start::DeadCoreV2 => "dead-core-v2-holder",
            Start::DeadOurs => "dead-libnfslock-holder",
            Start::DeadCoreV1ClearedByUnlockPath => "dead-core-v1-cleared-by-our-unlock_path",
            Start::LiveOurs => "live-libnfslock-holder",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seq {
    CreateV1,
    CreateV2,
    UnlockV1,
    UnlockV2,
}

impl Seq {
    fn name(self) -> &'static str {
        match self {
            Seq::CreateV1 => "core-v1-create",
            Seq::CreateV2 => "core-v2-create",
            Seq::UnlockV1 => "core-unlock-of-v1",
            Seq::UnlockV2 => "core-unlock-of-v2",
        }
    }
    fn command(self) -> &'static str {
        match self {
            Seq::CreateV1 => "v1 core",
            Seq::CreateV2 => "v2 core",
            Seq::UnlockV1 | Seq::UnlockV2 => "unlock",
        }
    }
    fn op(self) -> &'static str {
        self.command().split_whitespace().next().unwrap_or("")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Create,
    Blocking,
    UnlockPath,
    Cycle,
    CoreCleaner,
    ReleaseHolder,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Create => "our-create",
            Action::Blocking => "our-blocking_create",
            Action::UnlockPath => "our-unlock_path",
            Action::Cycle => "our-create+unlock",
            Action::CoreCleaner => "second-core-v1-create",
            Action::ReleaseHolder => "our-holder-unlocks-and-exits",
        }
    }
}

/// Where Core waits: before its K-th call (until told to go on), or a real gap of MS
/// milliseconds before the named step.
#[derive(Clone, Copy, Debug)]
enum Pause {
    At(u32),
    Gap(&'static str, u64),
}

/// Brings a run's directory to `start`; returns the live holder of `LiveOurs`.
fn setup(r: &mut Run, start: Start) -> Result<Option<usize>, String> {
    let expect_ok = |r: &mut Run, i: usize, cmd: &str| -> Result<(), String> {
        match r.command(i, cmd) {
            Some(done) if r.peers[i].ok(&done) => Ok(()),
            other => Err(format!("setup {}: `{cmd}` answered {other:?}", start.name())),
        }
    };
    match start {
        Start::Fresh => Ok(None),
        Start::OursUnlocked => {
            let i = r.spawn(Kind::Ours, "setup-ours", &[]);
            expect_ok(r, i, "create setup")?;
            expect_ok(r, i, "unlock")?;
            r.exit(i);
            Ok(None)
        }
        Start::DeadCoreV1 | Start::DeadCoreV2 | Start::DeadCoreV1ClearedByUnlockPath => {
            let i = r.spawn(Kind::Core, "setup-core", &[]);
            expect_ok(r, i, if start == Start::DeadCoreV2 { "v2 setup" } else { "v1 setup" })?;
            r.kill(i);
            if start == Start::DeadCoreV1ClearedByUnlockPath {
                let j = r.spawn(Kind::Ours, "setup-ours", &[]);
                expect_ok(r, j, "unlock_path")?;
                r.exit(j);
            }
            Ok(None)
        }
        Start::DeadOurs => {
            let i = r.spawn(Kind::Ours, "setup-ours", &[]);
            expect_ok(r, i, "create setup")?;
            r.kill(i);
            Ok(None)
        }
        Start::LiveOurs => {
            let i = r.spawn(Kind::Ours, "holder-ours", &[]);
            expect_ok(r, i, "create holder")?;
            Ok(Some(i))
        }
    }
}

/// One run: `start`, Core's `seq` paused at `pause`, our `action` in the pause, then
/// Core finishes, the probes, the releases. Returns the outcome and whether Core
/// reached the pause (false: its sequence is shorter than K).
fn run_one(start: Start, seq: Seq, pause: Pause, action: Action) -> (Outcome, bool) {
    let pause_text = match pause {
        Pause::At(k) => format!("{k}"),
        Pause::Gap(step, ms) => format!("{step} {ms}"),
    };
    let mut r = Run::new(format!("{} / {} / pause {} / {}", start.name(), seq.name(), pause_text, action.name()));
    let holder = match setup(&mut r, start) {
        Ok(h) => h,
        Err(e) => {
            r.violation(e);
            return (r.outcome(), false);
        }
    };
    let core = r.spawn(Kind::Core, "core", &[]);
    if matches!(seq, Seq::UnlockV1 | Seq::UnlockV2) {
        let cmd = if seq == Seq::UnlockV1 { "v1 core" } else { "v2 core" };
        match r.command(core, cmd) {
            Some(done) if r.peers[core].ok(&done) => {}
            other => {
                r.violation(format!("Core could not take the lock to release it: {other:?}"));
                return (r.outcome(), false);
            }
        }
    }
    let actor = match action {
        Action::CoreCleaner => Some(r.spawn(Kind::Core, "core2", &[])),
        Action::ReleaseHolder => None,
        _ => Some(r.spawn(Kind::Ours, "ours", &[])),
    };
    r.peers[core].send(&format!("pause {pause_text}"));
    r.peers[core].wait_for(&["ok pause"], ANSWER);
    r.peers[core].send(seq.command());
    let core_done_prefix = format!("done {}", seq.op());
    let Some(first) = r.peers[core].wait_for(&["paused", &core_done_prefix], ANSWER) else {
        r.violation("Core neither paused nor finished".into());
        return (r.outcome(), false);
    };
    let paused = first.starts_with("paused");
    if paused {
        let at: Vec<&str> = first.split_whitespace().skip(1).take(2).collect();
        r.name = format!("{} / {} / before call {} / {}", start.name(), seq.name(), at.join(" "), action.name());
    } else {
        r.name = format!("{} / {} / after Core finished / {}", start.name(), seq.name(), action.name());
        r.after_done(core, seq.op(), &first);
    }
    let wait_for_go = paused && matches!(pause, Pause::At(_));

    // Our action, while Core waits (or during Core's real gap).
    let mut blocking_pending = false;
    match action {
        Action::Create => {
            r.command(actor.unwrap(), "create ours");
        }
        Action::UnlockPath => {
            r.command(actor.unwrap(), "unlock_path");
        }
        Action::Cycle => {
            r.command(actor.unwrap(), "cycle ours");
        }
        Action::CoreCleaner => {
            r.command(actor.unwrap(), "v1 core2");
        }
        Action::ReleaseHolder => {
            let h = holder.expect("a live holder");
            if let Some(done) = r.command(h, "unlock") {
                if !r.peers[h].ok(&done) {
                    r.violation(format!("our live holder's nfslock_unlock failed: {done}"));
                }
            }
            r.exit(h);
        }
        Action::Blocking => {
            let a = actor.unwrap();
            r.peers[a].send(&format!("blocking {BLOCKING_MS} ours"));
            blocking_pending = true;
            if wait_for_go {
                if let Some(done) = r.peers[a].wait_for(&["done blocking"], Duration::from_millis(150)) {
                    blocking_pending = false;
                    r.after_done(a, "blocking", &done);
                    if !r.peers[a].ok(&done) {
                        r.violation(format!(
                            "nfslock_blocking_create returned while Core was paused in its sequence instead \
                             of waiting: {done}"
                        ));
                    }
                }
            }
        }
    }

    // Core goes on and finishes.
    if paused {
        if wait_for_go {
            r.peers[core].send("go");
        }
        if let Some(done) = r.finish(core, seq.op(), ANSWER) {
            if seq.op() == "unlock" && !r.peers[core].ok(&done) {
                r.violation(format!("Core's release of its own lock failed: {done}"));
            }
        }
    }
    if blocking_pending {
        let a = actor.unwrap();
        if r.peers[core].holds {
            sleep(Duration::from_millis(50));
            if let Some(done) = r.command(core, "unlock") {
                if !r.peers[core].ok(&done) {
                    r.violation(format!("Core believed it held the lock, but its release found otherwise: {done}"));
                }
            }
        }
        if let Some(done) = r.finish(a, "blocking", Duration::from_millis(BLOCKING_MS + 5000)) {
            if !r.peers[a].ok(&done) {
                r.violation(format!("nfslock_blocking_create did not get the lock Core let go of: {done}"));
            }
        }
    }
    if let Some(a) = actor {
        if !r.peers[a].holds {
            r.exit(a);
        }
    }
    r.probe_release_check();
    (r.outcome(), paused)
}

/// Runs `start`/`seq`/`action` at every pause point K = 1, 2, ... up to the first run in
/// which Core's sequence ended before K (the point after Core finished).
fn every_point(start: Start, seq: Seq, action: Action) -> Vec<Outcome> {
    let mut out = Vec::new();
    for k in 1..=64 {
        let (outcome, paused) = run_one(start, seq, Pause::At(k), action);
        let setup_failed = outcome.violations.iter().any(|v| v.starts_with("setup") || v.starts_with("Core could not"));
        out.push(outcome);
        if !paused || setup_failed {
            return out;
        }
    }
    panic!("{} / {} has more than 64 pause points", start.name(), seq.name());
}

/// Runs jobs on WORKERS threads; returns all outcomes in job order.
fn run_jobs<J: Send + Sync + 'static>(jobs: Vec<J>, f: fn(&J) -> Vec<Outcome>) -> Vec<Outcome> {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (jobs, next, results) = (jobs.clone(), next.clone(), results.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return };
                let outcomes = f(job);
                results.lock().unwrap_or_else(|e| e.into_inner()).push((i, outcomes));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a scenario thread panicked");
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().flat_map(|(_, o)| o).collect()
}

/// Prints a summary and fails listing every failing run (with the transcripts of the
/// first few).
fn assert_clean(what: &str, outcomes: &[Outcome], started: Instant) {
    let failing: Vec<&Outcome> = outcomes.iter().filter(|o| !o.violations.is_empty()).collect();
    println!("{what}: {} runs, {} with violations, {:.1} s", outcomes.len(), failing.len(), started.elapsed().as_secs_f64());
    for o in outcomes.iter().filter(|o| !o.notes.is_empty()) {
        for n in &o.notes {
            println!("  note: {}: {n}", o.name);
        }
    }
    if failing.is_empty() {
        return;
    }
    let mut report = String::new();
    for o in &failing {
        report.push_str(&format!("FAIL {}\n", o.name));
        for v in &o.violations {
            report.push_str(&format!("    {v}\n"));
        }
    }
    for o in failing.iter().take(3) {
        report.push_str(&format!("\n--- transcript of {} ---\n", o.name));
        for l in &o.log {
            report.push_str(&format!("{l}\n"));
        }
    }
    panic!("{what}: {} of {} runs broke mutual exclusion or its contract:\n{report}", failing.len(), outcomes.len());
}

const CREATE_STARTS: [Start; 6] =
    [Start::Fresh, Start::OursUnlocked, Start::DeadCoreV1, Start::DeadCoreV2, Start::DeadOurs, Start::DeadCoreV1ClearedByUnlockPath];

/// Core's v1 and v2 create (with their stale cleanup), from every start state, against
/// our create (our stale cleanup where the holder is dead), unlock_path, a whole
/// create+unlock cycle, a second Core, and a live holder of ours releasing.
#[test]
fn core_create_against_ours_at_every_call() {
    let _serial = serial();
    let started = Instant::now();
    let mut jobs = Vec::new();
    for start in CREATE_STARTS {
        for seq in [Seq::CreateV1, Seq::CreateV2] {
            for action in [Action::Create, Action::UnlockPath, Action::Cycle, Action::CoreCleaner] {
                jobs.push((start, seq, action));
            }
        }
    }
    for seq in [Seq::CreateV1, Seq::CreateV2] {
        jobs.push((Start::LiveOurs, seq, Action::ReleaseHolder));
    }
    let outcomes = run_jobs(jobs, |&(start, seq, action)| every_point(start, seq, action));
    assert_clean("Core create vs libnfslock", &outcomes, started);
}

/// Our blocking_create at every call of Core's v1 and v2 create: it must wait while Core
/// is inside its create (also between link and write), and end up holding the lock.
#[test]
fn our_blocking_create_at_every_call_of_core_create() {
    let _serial = serial();
    let started = Instant::now();
    let mut jobs = Vec::new();
    for start in CREATE_STARTS {
        for seq in [Seq::CreateV1, Seq::CreateV2] {
            jobs.push((start, seq));
        }
    }
    let outcomes = run_jobs(jobs, |&(start, seq)| every_point(start, seq, Action::Blocking));
    assert_clean("libnfslock blocking_create vs Core create", &outcomes, started);
}

/// Core's unlock of a v1 and of a v2 lock, at every call, against each of ours.
#[test]
fn core_unlock_against_ours_at_every_call() {
    let _serial = serial();
    let started = Instant::now();
    let mut jobs = Vec::new();
    for seq in [Seq::UnlockV1, Seq::UnlockV2] {
        for action in [Action::Create, Action::Blocking, Action::UnlockPath, Action::Cycle, Action::CoreCleaner] {
            jobs.push((seq, action));
        }
    }
    let outcomes = run_jobs(jobs, |&(seq, action)| every_point(Start::Fresh, seq, action));
    assert_clean("Core unlock vs libnfslock", &outcomes, started);
}

/// The reproduction with real time: Core v1 with a gap of 60-150 ms between its
/// link and its write (before its ftruncate, while the lock file still shows what `P`
/// held; and after it, while the file is empty), against our create, our
/// blocking_create and a second Core, started the moment the gap begins.
#[test]
fn core_v1_gap_of_60_to_150_ms_between_link_and_write() {
    let _serial = serial();
    let started = Instant::now();
    let mut jobs = Vec::new();
    for _ in 0..loops() {
        for start in [Start::Fresh, Start::OursUnlocked, Start::DeadCoreV1ClearedByUnlockPath] {
            for step in ["ftruncate", "write-record"] {
                for ms in [60, 100, 150] {
                    for action in [Action::Create, Action::Blocking, Action::CoreCleaner] {
                        jobs.push((start, step, ms, action));
                    }
                }
            }
        }
    }
    let outcomes = run_jobs(jobs, |&(start, step, ms, action)| vec![run_one(start, Seq::CreateV1, Pause::Gap(step, ms), action).0]);
    assert_clean("Core v1 with a real link-write gap", &outcomes, started);
}

/// A Core v1 holder stopped between its link and its write (an empty lock file) for a
/// whole second: our blocking_create waits for it (no EBADMSG), and takes the lock once
/// Core has written its record, held it and let it go.
#[test]
fn blocking_create_waits_for_a_core_v1_holder_between_link_and_write() {
    let _serial = serial();
    let mut outcomes = Vec::new();
    for step in ["ftruncate", "write-record"] {
        let mut r = Run::new(format!("fresh / core-v1-create paused before {step} for 1 s / our-blocking_create"));
        let core = r.spawn(Kind::Core, "core", &[]);
        let ours = r.spawn(Kind::Ours, "ours", &[]);
        r.peers[core].send(&format!("pause {step}"));
        r.peers[core].send("v1 core");
        assert!(r.peers[core].wait_for(&["paused"], ANSWER).is_some(), "Core did not pause");
        let len = fs::metadata(r.lock_file()).map(|m| m.len());
        assert_eq!(len.ok(), Some(0), "Core's lock file is empty between its link and its write");
        r.peers[ours].send("blocking 10000 ours");
        if let Some(done) = r.peers[ours].wait_for(&["done blocking"], Duration::from_secs(1)) {
            r.violation(format!(
                "nfslock_blocking_create returned within 1 s on an empty lock file whose Core holder is \
                 between link and write (it must wait as on a held lock): {done}"
            ));
            r.after_done(ours, "blocking", &done);
        } else {
            r.peers[core].send("go");
            r.finish(core, "v1", ANSWER);
            sleep(Duration::from_millis(200));
            let still_waiting = r.peers[ours].rx.try_recv().err();
            assert!(still_waiting.is_some(), "our blocking_create returned while Core held the lock");
            r.command(core, "unlock");
            if let Some(done) = r.finish(ours, "blocking", Duration::from_secs(15)) {
                if !r.peers[ours].ok(&done) {
                    r.violation(format!("nfslock_blocking_create did not get the lock Core let go of: {done}"));
                }
            }
        }
        r.release_all();
        r.check_overlaps();
        outcomes.push(r.outcome());
    }
    assert_clean("blocking_create on a Core lock between link and write", &outcomes, Instant::now());
}

/// A Core v1 holder killed between its link and its write leaves an empty lock file for
/// good. Our blocking_create reports EBADMSG for it only after it stayed empty for a
/// while (at least EMPTY_PATIENCE_MIN), never deletes it, and our create and
/// unlock_path never take or remove it.
#[test]
fn empty_lock_of_a_crashed_core_is_ebadmsg_only_after_a_while() {
    let _serial = serial();
    let mut r = Run::new("core-v1 killed between link and write / our-blocking_create".into());
    let core = r.spawn(Kind::Core, "core", &[]);
    r.peers[core].send("pause write-record");
    r.peers[core].send("v1 core");
    assert!(r.peers[core].wait_for(&["paused"], ANSWER).is_some(), "Core did not pause");
    r.kill(core);
    let ours = r.spawn(Kind::Ours, "ours", &[]);
    let done = r.command_within(ours, "blocking 20000 ours", Duration::from_secs(30));
    let ms: Option<u64> =
        done.as_deref().and_then(|d| d.split_whitespace().find_map(|w| w.strip_prefix("ms="))).and_then(|m| m.parse().ok());
    match (&done, ms) {
        (Some(d), Some(ms)) if d.starts_with("done blocking EBADMSG") => {
            if Duration::from_millis(ms) < EMPTY_PATIENCE_MIN {
                r.violation(format!(
                    "nfslock_blocking_create called the empty lock file unreadable after {ms} ms; it must \
                     wait at least {EMPTY_PATIENCE_MIN:?} (a Core holder may be between link and write): {d}"
                ));
            }
        }
        other => r.violation(format!(
            "nfslock_blocking_create on a lock file that stays empty must report EBADMSG (after a \
             while, within its 20 s timeout); got {other:?}"
        )),
    }
    for cmd in ["create ours", "unlock_path"] {
        if let Some(d) = r.command(ours, cmd) {
            if r.peers[ours].ok(&d) {
                r.violation(format!("`{cmd}` took or removed an empty lock file: {d}"));
            }
        }
    }
    match fs::metadata(r.lock_file()) {
        Ok(m) if m.len() == 0 => {}
        other => r.violation(format!("the empty lock file was touched: {other:?}")),
    }
    r.release_all();
    r.check_overlaps();
    let o = r.outcome();
    drop(r);
    assert_clean("empty lock of a crashed Core", &[o], Instant::now());
}

/// The plain cases, as a check of the replay itself: each side reads the other's record
/// and neither takes a lock the other holds.
#[test]
fn core_replay_and_libnfslock_read_and_respect_each_other() {
    let _serial = serial();
    for v in ["v1", "v2"] {
        let mut r = Run::new(format!("plain {v}"));
        let core = r.spawn(Kind::Core, "core", &[]);
        let ours = r.spawn(Kind::Ours, "ours", &[]);
        let core_pid = r.peers[core].child.id();
        assert!(r.command(core, &format!("{v} hello")).is_some_and(|d| d.contains(" ok ")));
        let read = r.command(ours, "read").unwrap_or_default();
        let host = String::from_utf8(nix::unistd::gethostname().unwrap().into_encoded_bytes()).unwrap();
        assert_eq!(read, format!("done read OK 0 {host} {core_pid}"), "our reader parses Core's {v} record");
        let created = r.command(ours, "create ours").unwrap_or_default();
        assert!(created.starts_with("done create EAGAIN"), "a live Core holder: {created}");
        assert!(r.command(core, "unlock").is_some_and(|d| d.contains(" ok ")));
        assert!(r.command(ours, "create ours").is_some_and(|d| d.starts_with("done create OK")));
        let refused = r.command(core, &format!("{v} again")).unwrap_or_default();
        assert!(refused.contains("still running"), "Core's replay reads our record and sees us alive: {refused}");
        r.release_all();
        r.check_overlaps();
        let o = r.outcome();
        drop(r);
        assert_clean("plain interop", &[o], Instant::now());
    }
}

/// A lease carries a field Core's reader rejects: Core never takes it (nor clears it,
/// even once its holder is gone); libnfslock reads a Core holder as a plain lock.
#[test]
fn core_never_takes_or_clears_a_lease() {
    let _serial = serial();
    let mut r = Run::new("lease".to_string());
    let core = r.spawn(Kind::Core, "core", &[]);
    let ours = r.spawn(Kind::Ours, "ours", &[]);
    assert!(r.command(ours, "lease 500").is_some_and(|d| d.starts_with("done lease OK")));
    for v in ["v1", "v2"] {
        let refused = r.command(core, &format!("{v} core")).unwrap_or_default();
        assert!(refused.contains("failed to parse"), "Core's {v} create on a lease: {refused}");
    }
    let refused = r.command(core, "unlock").unwrap_or_default();
    assert!(!refused.contains(" ok "), "Core's unlock of our lease: {refused}");
    // The lease's holder dies: Core still cannot read it, so it still refuses.
    let pid = r.peers[ours].child.id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = r.peers[ours].child.wait();
    // A dead process believes nothing: its marker goes with it.
    let _ = std::fs::remove_file(r.marker());
    let refused = r.command(core, "v1 core").unwrap_or_default();
    assert!(refused.contains("failed to parse"), "Core's create on a dead holder's lease: {refused}");
    // libnfslock clears the dead holder of this host at once; then Core holds a plain
    // lock, and a lease waits for it like for any live holder.
    let second = r.spawn(Kind::Ours, "ours2", &[]);
    assert!(r.command(second, "lease 500").is_some_and(|d| d.starts_with("done lease OK")), "dead lease holder not cleared");
    assert!(r.command(second, "unlock").is_some_and(|d| d.starts_with("done unlock OK")));
    assert!(r.command(core, "v2 core").is_some_and(|d| d.contains(" ok ")));
    assert!(r.command(second, "lease 500").is_some_and(|d| d.starts_with("done lease EAGAIN")));
    r.release_all();
    r.check_overlaps();
    let o = r.outcome();
    drop(r);
    assert_clean("lease interop", &[o], Instant::now());
}

const HOST_64: &str = "core-interop-64-byte-host-name-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const UTS_VAR: &str = "NFSLOCK_CORE_INTEROP_OUTER_UTS";

/// Core on OCaml 4 keeps 63 bytes of a 64-byte host name: run inside a UTS namespace of
/// its own (unshare --uts) with such a name, exclusion holds both ways, and stale
/// cleanup between Core and libnfslock does not happen (see the module docs).
#[test]
fn host_name_of_64_bytes_core_on_ocaml4_is_another_host() {
    let _serial = serial();
    assert_eq!(HOST_64.len(), 64);
    peer_exe(Kind::Core); // built here, outside the namespace
    let outer = fs::read_link("/proc/self/ns/uts").expect("read /proc/self/ns/uts");
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new("unshare");
    cmd.arg("--uts")
        .arg("--")
        .arg(&exe)
        .args(["host_name_inside_uts_namespace", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(UTS_VAR, &outer)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?} (util-linux unshare): {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(
        status.is_some_and(|s| s.success()) && text.contains("test result: ok. 1 passed"),
        "the host-name test inside `unshare --uts` (needs root) did not pass: {status:?}\n{text}"
    );
}

#[test]
#[ignore = "run by host_name_of_64_bytes_core_on_ocaml4_is_another_host inside a UTS namespace"]
fn host_name_inside_uts_namespace() {
    let outer = std::env::var_os(UTS_VAR).expect("run by host_name_of_64_bytes_core_on_ocaml4_is_another_host");
    let mine = fs::read_link("/proc/self/ns/uts").expect("read /proc/self/ns/uts");
    assert_ne!(mine.as_os_str(), outer.as_os_str(), "refusing to set the host name outside a UTS namespace of its own");
    nix::unistd::sethostname(HOST_64).expect("sethostname (64 bytes)");

    let mut r = Run::new("64-byte host name".into());
    let check = |r: &mut Run, i: usize, cmd: &str, want: &str, why: &str| {
        let got = r.command(i, cmd).unwrap_or_default();
        if !got.starts_with(want) {
            r.violation(format!("{why}: `{cmd}` answered {got:?}, expected `{want}...`"));
        }
    };
    let core = r.spawn(Kind::Core, "core-ocaml4", &["--host-63"]);
    let ours = r.spawn(Kind::Ours, "ours", &[]);

    // Exclusion holds: Core's lock names a 63-byte host, which we never break.
    for v in ["v1", "v2"] {
        check(&mut r, core, &format!("{v} core"), &format!("done {v} ok"), "Core takes the free lock");
        check(&mut r, ours, "create ours", "done create EAGAIN", "Core's lock is another host's to us");
        check(&mut r, ours, "unlock_path", "done unlock_path EPERM", "another host's lock is never removed");
        check(&mut r, core, "unlock", "done unlock ok", "Core releases");
    }
    // ... and ours names 64 bytes, which Core's replay reads as another host's.
    check(&mut r, ours, "create ours", "done create OK", "we take the free lock");
    for v in ["v1", "v2"] {
        check(&mut r, core, &format!("{v} core"), &format!("done {v} fail"), "Core sees another host's lock");
    }
    let refused = r.command(core, "v1 core").unwrap_or_default();
    if !refused.contains(&format!("lock already held on {HOST_64}, unlock attempted from {}", &HOST_64[..63])) {
        r.violation(format!("Core's refusal should name both host names: {refused}"));
    }
    check(&mut r, ours, "unlock", "done unlock OK", "we release");

    // Stale cleanup between the two does not happen: a dead Core holder stays for us...
    check(&mut r, core, "v1 core", "done v1 ok", "Core takes the lock");
    r.kill(core);
    check(&mut r, ours, "create ours", "done create EAGAIN", "a dead Core holder is another host's to us");
    check(&mut r, ours, "unlock_path", "done unlock_path EPERM", "and unlock_path leaves it");
    if fs::symlink_metadata(r.lock_file()).is_err() {
        r.violation("the dead Core holder's lock file was removed".into());
    }
    // ... while Core clears its own.
    let core = r.spawn(Kind::Core, "core-ocaml4-b", &["--host-63"]);
    check(&mut r, core, "v1 core", "done v1 ok", "Core clears its own dead holder");
    check(&mut r, core, "unlock", "done unlock ok", "Core releases");
    // A dead holder of ours stays for Core, and we clear it.
    check(&mut r, ours, "create ours", "done create OK", "we take the lock");
    r.kill(ours);
    check(&mut r, core, "v1 core", "done v1 fail", "a dead holder of ours is another host's to Core");
    let ours = r.spawn(Kind::Ours, "ours-b", &[]);
    check(&mut r, ours, "create ours", "done create OK", "we clear our own dead holder");
    check(&mut r, ours, "unlock", "done unlock OK", "we release");

    // Control: Core reading the whole name (OCaml 5) and we clear each other's dead.
    let full = r.spawn(Kind::Core, "core-ocaml5", &[]);
    check(&mut r, full, "v1 core", "done v1 ok", "Core (whole host name) takes the lock");
    r.kill(full);
    check(&mut r, ours, "create ours", "done create OK", "we clear a dead Core holder of our host");
    r.kill(ours);
    let full = r.spawn(Kind::Core, "core-ocaml5-b", &[]);
    check(&mut r, full, "v1 core", "done v1 ok", "Core clears a dead holder of ours");
    check(&mut r, full, "unlock", "done unlock ok", "Core releases");

    r.release_all();
    r.check_overlaps();
    let o = r.outcome();
    drop(r);
    assert_clean("64-byte host name", &[o], Instant::now());
}
