//! Adversarial review of leases with real peer processes: a holder or breaker that
//! stops (SIGSTOP: a paused process, a frozen host, a request stuck on a server) at
//! one chosen system call of the protocol, and a lost reply of unlink(2). The stop and
//! the fault come from this test binary's own `unlink` (it interposes libc's for the
//! library linked into it), armed only in a child run of this binary by its role.
//!
//! Each test checks the protocol's promise that a process never removes a lock file
//! taken after the one it judged: a released or broken holder, or a breaker, that
//! resumes late must leave its successor's lock alone.
#![cfg(target_os = "linux")]

use std::ffi::{c_char, c_int, CStr};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use nfslock::lease::{self, Options};

const ROLE_ENV: &str = "NFSLOCK_REVIEW_ROLE";
const PATH_ENV: &str = "NFSLOCK_REVIEW_PATH";
const LEASE: Duration = Duration::from_millis(300);

/// What this process's next unlink(2) of a `*.nfs_lock` does (then it is disarmed).
static UNLINK_MODE: AtomicU8 = AtomicU8::new(0);
/// Stop (SIGSTOP) before the unlink; carry it out when continued.
const STOP_BEFORE: u8 = 1;
/// Carry the unlink out, stop, and report EIO when continued (a reply lost on a soft
/// mount: the request took effect, the client was told it failed).
const DONE_THEN_STOP_EIO: u8 = 2;

/// Stop right after a successful rename(2) of a lease token to its next epoch's name
/// (a renewal's, or the release's that parks it).
const STOP_AFTER_TOKEN_RENAME: u8 = 3;
/// After a successful rename(2) of a token to a breaker's name (`.x<R>`), stop right
/// after the next fstat(2) (the check, through a fresh open of the taken token, that the
/// lock file still names the expired inode): a breaker paused between that check and
/// its unlink. (A stop inside the unlink call itself, after every check, is the gap no
/// client can close: docs/lease-protocol.md.)
const STOP_AFTER_TAKE_AND_CHECK: u8 = 4;

/// Armed by a rename in STOP_AFTER_TAKE_AND_CHECK: the next fstat stops after it.
static LSTAT_STOP: AtomicU8 = AtomicU8::new(0);

fn base_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

thread_local! {
    /// This thread's next rename of a token to a breaker's name is preceded by the
    /// renewal the keep-alive thread could make at that moment (the token moves on one
    /// epoch), so that the break loses the race to it.
    static RENEW_BEFORE_TAKE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Renames the token `old` (`.nfslock-<claim>.<k>`) to epoch k + 1, as a renewal does.
unsafe fn renew_token(olddirfd: c_int, old: *const c_char) {
    let old_s = CStr::from_ptr(old).to_bytes();
    let Some(dot) = old_s.iter().rposition(|&b| b == b'.') else { return };
    let Some(k) = std::str::from_utf8(&old_s[dot + 1..]).ok().and_then(|d| d.parse::<u64>().ok()) else { return };
    let mut next = old_s[..=dot].to_vec();
    next.extend_from_slice((k + 1).to_string().as_bytes());
    next.push(0);
    libc::syscall(libc::SYS_renameat2, olddirfd, old, olddirfd, next.as_ptr(), 0);
}

/// libc's renameat, interposed for this test binary.
///
/// # Safety
/// As for renameat(2).
#[no_mangle]
pub unsafe extern "C" fn renameat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char) -> c_int {
    if base_name(CStr::from_ptr(new).to_bytes()).windows(2).any(|w| w == b".x") && RENEW_BEFORE_TAKE.with(|c| c.replace(false)) {
        renew_token(olddirfd, old);
    }
    let r = libc::syscall(libc::SYS_renameat2, olddirfd, old, newdirfd, new, 0) as c_int;
    if r != 0 {
        return r;
    }
    let name = base_name(CStr::from_ptr(new).to_bytes());
    if name.starts_with(b".nfslock-") {
        let breakers = name.windows(2).any(|w| w == b".x");
        let mode = UNLINK_MODE.load(Ordering::SeqCst);
        if mode == STOP_AFTER_TOKEN_RENAME && !breakers && UNLINK_MODE.swap(0, Ordering::SeqCst) == mode {
            libc::raise(libc::SIGSTOP);
        }
        if mode == STOP_AFTER_TAKE_AND_CHECK && breakers && UNLINK_MODE.swap(0, Ordering::SeqCst) == mode {
            LSTAT_STOP.store(1, Ordering::SeqCst);
        }
    }
    r
}

/// libc's fstat, interposed for this test binary (both of glibc's names for it).
///
/// # Safety
/// As for fstat(2).
#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, st: *mut libc::stat) -> c_int {
    let r = libc::syscall(libc::SYS_fstat, fd, st) as c_int;
    if LSTAT_STOP.swap(0, Ordering::SeqCst) == 1 {
        libc::raise(libc::SIGSTOP);
    }
    r
}

/// # Safety
/// As for fstat(2).
#[no_mangle]
pub unsafe extern "C" fn fstat64(fd: c_int, st: *mut libc::stat) -> c_int {
    fstat(fd, st)
}

/// libc's lstat, interposed for this test binary.
///
/// # Safety
/// As for lstat(2).
#[no_mangle]
pub unsafe extern "C" fn lstat(path: *const c_char, st: *mut libc::stat) -> c_int {
    libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, path, st, libc::AT_SYMLINK_NOFOLLOW) as c_int
}

/// libc's unlink, interposed for this test binary (the library's calls included).
///
/// # Safety
/// `path` is a NUL-terminated string, as for unlink(2).
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    let is_lock = CStr::from_ptr(path).to_bytes().ends_with(b".nfs_lock");
    let mode = if is_lock { UNLINK_MODE.swap(0, Ordering::SeqCst) } else { 0 };
    if mode == STOP_BEFORE {
        libc::raise(libc::SIGSTOP);
    }
    let r = libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, path, 0) as c_int;
    if mode == DONE_THEN_STOP_EIO && r == 0 {
        libc::raise(libc::SIGSTOP);
        *libc::__errno_location() = libc::EIO;
        return -1;
    }
    r
}

fn options(keepalive: bool) -> Options {
    Options { message: b"review".to_vec(), lease: LEASE, keepalive, shared: false }
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ROLE: {line}");
    let _ = out.flush();
}

fn wait_for_stdin_eof() {
    let mut buf = [0u8; 64];
    while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
}

fn outcome(r: nfslock::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("{:?}: {e}", e.errno()),
    }
}

/// Runs this process's part in a test when it is a child, then exits.
fn run_role_if_child() {
    let Some(role) = std::env::var_os(ROLE_ENV) else { return };
    let path = PathBuf::from(std::env::var_os(PATH_ENV).expect("the path"));
    match role.to_str().unwrap() {
        // Holds a lease it never renews (keep-alive off), until told to go.
        "idle_holder" => {
            let held = lease::acquire(&path, &options(false), Some(Duration::ZERO)).expect("the idle holder takes the lease");
            say("held");
            wait_for_stdin_eof();
            let _ = held.unlock();
        }
        // Takes the lease, then releases it with the next unlink of the lock file armed.
        "releaser" => {
            // Keep-alive off: no renewal of its own may meet the armed stop.
            let held = lease::acquire(&path, &options(false), Some(Duration::ZERO)).expect("the releaser takes the lease");
            let mode = std::env::var("NFSLOCK_REVIEW_UNLINK_MODE").unwrap().parse().unwrap();
            say("held");
            UNLINK_MODE.store(mode, Ordering::SeqCst);
            say(&format!("unlock {}", outcome(held.unlock())));
        }
        // Waits for the lease with its first unlink of the lock file (its break) armed;
        // reports whether it took the lease, and holds it until told to go.
        "breaker" => {
            UNLINK_MODE.store(STOP_AFTER_TAKE_AND_CHECK, Ordering::SeqCst);
            match lease::acquire(&path, &options(true), Some(Duration::from_secs(10))) {
                Ok(held) => {
                    say("acquired");
                    wait_for_stdin_eof();
                    let _ = held.unlock();
                }
                Err(e) => say(&format!("error {:?}: {e}", e.errno())),
            }
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// A child in a role, killed (and reaped) if the test ends before it does.
struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(test: &str, role: &str, path: &Path, env: &[(&str, String)]) -> Peer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(PATH_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn a peer");
        let out = BufReader::new(child.stdout.take().unwrap());
        Peer { child, out }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The peer's next protocol line (libtest's own lines are skipped).
    fn line(&mut self) -> String {
        let mut l = String::new();
        loop {
            l.clear();
            if self.out.read_line(&mut l).unwrap() == 0 {
                panic!("the peer ended before its next line");
            }
            // libtest's "test NAME ... " may come first on the same line.
            if let Some(at) = l.find("ROLE: ") {
                return l[at + "ROLE: ".len()..].trim_end().to_string();
            }
        }
    }

    /// Waits (bounded) until the peer stopped itself.
    fn wait_stopped(&self) {
        let start = Instant::now();
        loop {
            match waitpid(self.pid(), Some(WaitPidFlag::WUNTRACED | WaitPidFlag::WNOHANG)).unwrap() {
                WaitStatus::Stopped(..) => return,
                WaitStatus::StillAlive => {}
                other => panic!("the peer did not stop but {other:?}"),
            }
            assert!(start.elapsed() < Duration::from_secs(15), "the peer never reached its stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn resume(&self) {
        kill(self.pid(), Signal::SIGCONT).unwrap();
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(15), "the peer did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn lock_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".nfs_lock");
    s.into()
}

/// The lock file is still the one this process's lease linked (same inode, our pid).
fn assert_still_ours(p: &Path, ino: u64, what: &str) {
    let now = std::fs::symlink_metadata(lock_of(p)).map(|m| m.ino());
    assert_eq!(now.ok(), Some(ino), "{what}: our lease's lock file was removed or replaced");
    assert_eq!(nfslock::lockfile::read_record(p).unwrap().pid, std::process::id() as i32);
}

/// A holder releasing its lease renames its token to the parked name, then stops
/// (before its unlink of the lock file) for longer than a lease. A waiter on it sees the
/// parked token stay unrenewed for a whole lease and breaks it (as it may), and takes
/// the lock. The holder then resumes: its unlink must not remove its successor's lock.
#[test]
fn a_release_stopped_after_its_token_rename_leaves_the_successors_lock() {
    run_role_if_child();
    const TEST: &str = "a_release_stopped_after_its_token_rename_leaves_the_successors_lock";
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let mut holder = Peer::spawn(TEST, "releaser", &p, &[("NFSLOCK_REVIEW_UNLINK_MODE", STOP_AFTER_TOKEN_RENAME.to_string())]);
    assert_eq!(holder.line(), "held");
    holder.wait_stopped();
    let start = Instant::now();
    let mine = lease::acquire(&p, &options(true), Some(Duration::from_secs(5))).expect("the waiter breaks the parked lease");
    assert!(start.elapsed() >= LEASE, "broken after {} ms, before the lease", start.elapsed().as_millis());
    let ino = std::fs::symlink_metadata(lock_of(&p)).unwrap().ino();
    holder.resume();
    let said = holder.line();
    holder.finish();
    assert_still_ours(&p, ino, &format!("after the stopped holder resumed (its unlock: {said})"));
    assert!(said.starts_with("unlock ENOLCK"), "the broken holder's unlock: {said}");
    mine.unlock().expect("our lease is released");
}

/// A holder's unlink of its lock file takes effect but its reply is lost (EIO, as a soft
/// NFS mount reports a timed-out request), and the holder is slow to retry. The lock is
/// free meanwhile and taken by another process; the holder's retry must not remove it.
#[test]
fn a_lost_unlink_reply_at_release_is_not_retried_onto_the_successors_lock() {
    run_role_if_child();
    const TEST: &str = "a_lost_unlink_reply_at_release_is_not_retried_onto_the_successors_lock";
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let mut holder = Peer::spawn(TEST, "releaser", &p, &[("NFSLOCK_REVIEW_UNLINK_MODE", DONE_THEN_STOP_EIO.to_string())]);
    assert_eq!(holder.line(), "held");
    holder.wait_stopped();
    assert!(std::fs::symlink_metadata(lock_of(&p)).is_err(), "the holder's unlink took effect");
    let mine = lease::acquire(&p, &options(true), Some(Duration::from_secs(2))).expect("the free lock is taken");
    let ino = std::fs::symlink_metadata(lock_of(&p)).unwrap().ino();
    holder.resume();
    let said = holder.line();
    holder.finish();
    assert_still_ours(&p, ino, &format!("after the holder retried its unlink (its unlock: {said})"));
    mine.unlock().expect("our lease is released");
}

/// A breaker takes an expired lease's token, checks the lock file is still the expired
/// one (lstat), and stops there, before its unlink, for longer than a lease. A second breaker sees the
/// taken token unmoved for a lease, takes it over (as the protocol lets it, for a
/// breaker that died), removes the lock file and takes the lock. The first breaker
/// then resumes: it must remove nothing of the second's, and must not take the lock
/// while the second holds it.
#[test]
fn a_breaker_stopped_before_its_unlink_leaves_the_next_holders_lock() {
    run_role_if_child();
    const TEST: &str = "a_breaker_stopped_before_its_unlink_leaves_the_next_holders_lock";
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let mut idle = Peer::spawn(TEST, "idle_holder", &p, &[]);
    assert_eq!(idle.line(), "held");
    let breaker = Peer::spawn(TEST, "breaker", &p, &[]);
    breaker.wait_stopped();
    let mine = lease::acquire(&p, &options(true), Some(Duration::from_secs(5))).expect("the second breaker takes the lease");
    let ino = std::fs::symlink_metadata(lock_of(&p)).unwrap().ino();
    breaker.resume();
    // The first breaker either waits (and times out) or takes the lock: give it a lease
    // and a half, then look.
    std::thread::sleep(LEASE * 3 / 2);
    let lock_now = std::fs::symlink_metadata(lock_of(&p)).map(|m| m.ino()).ok();
    mine.is_held().expect("our lease is held");
    assert_eq!(lock_now, Some(ino), "the resumed breaker removed or replaced our lease's lock file");
    assert_still_ours(&p, ino, "after the stopped breaker resumed");
    mine.unlock().expect("our lease is released");
    drop(breaker);
    idle.finish();
}

/// unlock_path on a lease of this process whose token its own keep-alive renews at
/// that moment: the break loses the race to the renewal (its take finds the token
/// moved) and reports EAGAIN. The hold must then stay as it was (held, released by its
/// handle); ending it in the registry while the lock file stays (and is renewed) on
/// disk leaves a lock that its handle calls lost, that unlock leaves in place, and that
/// no thread of this process can take again (it is "held by this process").
#[test]
fn unlock_path_losing_to_a_renewal_leaves_the_hold_whole() {
    run_role_if_child();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let held = lease::acquire(&p, &options(true), Some(Duration::ZERO)).unwrap();
    RENEW_BEFORE_TAKE.with(|c| c.set(true));
    let r = nfslock::lockfile::unlock_path(&p);
    RENEW_BEFORE_TAKE.with(|c| c.set(false));
    let lock_left = std::fs::symlink_metadata(lock_of(&p)).is_ok();
    if r.is_ok() {
        assert!(!lock_left, "unlock_path succeeded and left the lock file");
        return;
    }
    assert_eq!(r.as_ref().unwrap_err().errno(), nfslock::Errno::EAGAIN, "{r:?}");
    assert!(lock_left, "EAGAIN, and the lock file is gone");
    let is_held = held.is_held();
    let unlocked = held.unlock();
    let still_there = std::fs::symlink_metadata(lock_of(&p)).is_ok();
    let retake = lease::acquire(&p, &options(true), Some(LEASE * 3));
    assert!(
        is_held.is_ok() && unlocked.is_ok() && !still_there && retake.is_ok(),
        "after unlock_path's EAGAIN: is_held {is_held:?}, unlock {unlocked:?}, lock file left after unlock: {still_there}, \
         taking it again: {:?}",
        retake.as_ref().map(|_| ())
    );
}
