//! Sessions and ID allocation through the Rust API: uniqueness across processes, crashes
//! in the middle of allocation, reaping of dead sessions, a paused session finding out
//! it expired, a missing or corrupt counter, bad input, fork.
//!
//! Child processes are this test binary run again with NFSLOCK_SESSION_CHILD set to a
//! role (see `child_main`); each test bounds its children's lifetime.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nfslock::session::Session;
use nfslock::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[path = "support/scratch.rs"]
mod scratch;

const CHILD: &str = "NFSLOCK_SESSION_CHILD";
const CHILD_DIR: &str = "NFSLOCK_SESSION_DIR";
const CHILD_TEST: &str = "child_main";
/// A short heartbeat timeout (its lease is half of it: long enough for a loaded CI disk).
const SHORT: Duration = Duration::from_millis(1000);

/// A child process that is killed when the test ends, whatever happens.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, dir: &Path) -> Kid {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD, role)
        .env(CHILD_DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Kid(child)
}

/// Reads the child's next line that starts with `key=`. One byte at a time, so that
/// nothing after that line is read ahead and lost (a BufReader made per call would
/// swallow a second line that arrived with the first).
fn expect_line(kid: &mut Kid, key: &str) -> String {
    let out = kid.0.stdout.as_mut().unwrap();
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match out.read(&mut byte).unwrap() {
                0 => panic!("the child ended before printing {key}="),
                _ if byte[0] == b'\n' => break,
                _ => line.push(byte[0]),
            }
        }
        let line = String::from_utf8_lossy(&line);
        if let Some(v) = line.trim().strip_prefix(&format!("{key}=")) {
            return v.to_string();
        }
    }
}

/// The roles children play.
#[test]
fn child_main() {
    let Ok(role) = std::env::var(CHILD) else { return };
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).unwrap());
    let mut stdout = std::io::stdout();
    match role.as_str() {
        // Allocates forever, printing each ID after the call returned.
        "allocate" => {
            let s = Session::open(&dir, Some("jobs"), None).unwrap();
            loop {
                let ids = s.make_new_ids(1 + (std::process::id() as usize % 3)).unwrap();
                for id in ids {
                    writeln!(stdout, "id={id}").unwrap();
                }
                stdout.flush().unwrap();
            }
        }
        // Allocates 200 IDs one call at a time, then exits (closing).
        "allocate200" => {
            let s = Session::open(&dir, Some("jobs"), None).unwrap();
            for _ in 0..200 {
                writeln!(stdout, "id={}", s.make_new_ids(1).unwrap()[0]).unwrap();
            }
            s.close().unwrap();
            writeln!(stdout, "done=1").unwrap();
        }
        // Locks ID 7, reports, then waits for a line on stdin and tries an operation.
        "hold7" => {
            let s = Session::open(&dir, Some("jobs"), Some(SHORT)).unwrap();
            assert_eq!(s.lock_ids(&[7]).unwrap(), vec![7]);
            writeln!(stdout, "held=7").unwrap();
            stdout.flush().unwrap();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let outcome = s.lock_ids(&[8]).map_err(|e| e.errno());
            writeln!(stdout, "after={outcome:?}").unwrap();
            let closed = s.close().map_err(|e| e.errno());
            writeln!(stdout, "close={closed:?}").unwrap();
        }
        // Like hold7, but closes at once when told to go on (no operation first).
        "hold7close" => {
            let s = Session::open(&dir, Some("jobs"), Some(SHORT)).unwrap();
            assert_eq!(s.lock_ids(&[7, 17]).unwrap(), vec![7, 17]);
            writeln!(stdout, "held=7").unwrap();
            stdout.flush().unwrap();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let closed = s.close().map_err(|e| e.errno());
            writeln!(stdout, "close={closed:?}").unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn ids_are_unique_and_increasing_across_processes() {
    let scratch = scratch::dir("session-unique");
    let mut kids: Vec<Kid> = (0..4).map(|_| spawn("allocate200", scratch.path())).collect();
    let mut all = HashSet::new();
    for kid in &mut kids {
        let out = kid.0.stdout.take().unwrap();
        let mut last = None;
        for line in BufReader::new(out).lines() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("id=") {
                let id: u64 = id.parse().unwrap();
                assert!(last.is_none_or(|l| id > l), "IDs of one session increase: {last:?} then {id}");
                assert!(all.insert(id), "ID {id} issued twice");
                last = Some(id);
            }
        }
        assert!(kid.0.wait().unwrap().success());
    }
    assert_eq!(all.len(), 800);
    // Everything the sessions held was released at close.
    let s = Session::open(scratch.path(), Some("jobs"), None).unwrap();
    assert!(fs::read_dir(scratch.path().join("jobs.ids")).unwrap().next().is_none(), "no ID lock is left");
    let next = s.make_new_ids(1).unwrap()[0];
    assert!(next > *all.iter().max().unwrap());
    s.check().unwrap();
    s.close().unwrap();
}

#[test]
fn sigkill_during_allocation_never_reissues() {
    let scratch = scratch::dir("session-sigkill");
    let mut seen = HashSet::new();
    for round in 0..5 {
        let mut kid = spawn("allocate", scratch.path());
        let first: u64 = expect_line(&mut kid, "id").parse().unwrap();
        assert!(seen.insert(first), "round {round}: ID {first} issued twice");
        std::thread::sleep(Duration::from_millis(20 + 17 * round));
        kill(Pid::from_raw(kid.0.id() as i32), Signal::SIGKILL).unwrap();
        let _ = kid.0.wait();
        let out = kid.0.stdout.take().unwrap();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("id=") {
                let id: u64 = id.parse().unwrap();
                assert!(seen.insert(id), "round {round}: ID {id} issued twice");
            }
        }
    }
    let s = Session::open(scratch.path(), Some("jobs"), None).unwrap();
    let next = s.make_new_ids(3).unwrap();
    assert!(next.iter().all(|id| !seen.contains(id) && id > seen.iter().max().unwrap()));
    // The killed sessions are on this host: they are dead at once, and reaped (those
    // killed while they held the counter's token by the next allocation already).
    let reaped = s.reap_locks().unwrap();
    assert!(reaped <= 5, "reaped {reaped}");
    let records: Vec<_> = fs::read_dir(scratch.path().join("jobs.sessions")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(records, vec![std::ffi::OsString::from(s.id())], "only our record is left");
    let left: Vec<_> = fs::read_dir(scratch.path().join("jobs.ids")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 3 + 1, "our 3 IDs and our claim: {left:?}");
    s.check().unwrap();
    s.close().unwrap();
}

#[test]
fn dead_sessions_are_reaped_and_their_ids_lockable() {
    let scratch = scratch::dir("session-reap");
    let mut kid = spawn("hold7", scratch.path());
    assert_eq!(expect_line(&mut kid, "held"), "7");
    let me = Session::open(scratch.path(), Some("jobs"), None).unwrap();
    assert_eq!(me.lock_ids(&[7, 9]).unwrap(), vec![9], "7 is held by a live session: skipped");
    let holder = me.lock_holder(7).unwrap();
    assert!(holder.contains(&format!("(pid {})", kid.0.id())), "{holder}");
    assert!(holder.contains(" since "), "{holder}");
    assert_eq!(me.release_ids(&[7]).unwrap(), Vec::<u64>::new(), "another session's ID is not released");
    kill(Pid::from_raw(kid.0.id() as i32), Signal::SIGKILL).unwrap();
    let _ = kid.0.wait();
    assert_eq!(me.lock_ids(&[7]).unwrap(), vec![7], "a dead holder's ID is reclaimed");
    assert_eq!(me.release_ids(&[7, 9, 11]).unwrap(), vec![7, 9]);
    assert_eq!(me.lock_holder(7).unwrap_err().errno(), Errno::ENOENT);
    me.check().unwrap();
    me.close().unwrap();
}

#[test]
fn a_paused_session_expires_and_gets_estale() {
    let scratch = scratch::dir("session-pause");
    let mut kid = spawn("hold7", scratch.path());
    assert_eq!(expect_line(&mut kid, "held"), "7");
    let pid = Pid::from_raw(kid.0.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let me = Session::open(scratch.path(), Some("jobs"), Some(SHORT)).unwrap();
    // A live but silent session is dead after its timeout, as this observer sees it.
    let start = Instant::now();
    while me.lock_ids(&[7]).unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "the paused session was never reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(start.elapsed() >= SHORT, "reaped before its timeout: {:?}", start.elapsed());
    kill(pid, Signal::SIGCONT).unwrap();
    kid.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(expect_line(&mut kid, "after"), format!("Err({:?})", Errno::ESTALE));
    assert_eq!(expect_line(&mut kid, "close"), format!("Err({:?})", Errno::ESTALE));
    assert_eq!(me.lock_holder(7).unwrap().split(" (pid ").nth(1).map(|p| p.starts_with(&std::process::id().to_string())), Some(true));
    me.close().unwrap();
}

/// Found in review: a session paused past its timeout and reaped, whose first call on
/// resuming is close, must not release IDs that others hold by now (its claim's inode
/// number may even have been reused by theirs).
#[test]
fn closing_a_reaped_session_releases_nothing() {
    let scratch = scratch::dir("session-close-reaped");
    let mut kid = spawn("hold7close", scratch.path());
    assert_eq!(expect_line(&mut kid, "held"), "7");
    let pid = Pid::from_raw(kid.0.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let me = Session::open(scratch.path(), Some("jobs"), Some(SHORT)).unwrap();
    let start = Instant::now();
    while me.lock_ids(&[7, 17]).unwrap().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "the paused session was never reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(pid, Signal::SIGCONT).unwrap();
    kid.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(expect_line(&mut kid, "close"), format!("Err({:?})", Errno::ESTALE));
    for id in [7, 17] {
        let holder = me.lock_holder(id).unwrap();
        assert!(holder.contains(&format!("(pid {})", std::process::id())), "ID {id}: {holder}");
    }
    me.check().unwrap();
    me.close().unwrap();
}

/// A session stopped while it holds the counter's token (the lock on the counter's next
/// ID, taken before it writes the counter) may still write once it runs again: nobody
/// takes the token from it or reaps it, however long it is silent, until its process
/// is gone. Made here by linking the child's claim to the counter's next ID by hand.
#[test]
fn a_session_stopped_holding_the_counter_token_is_left_alone() {
    let scratch = scratch::dir("session-token-stopped");
    let mut kid = spawn("hold7", scratch.path());
    assert_eq!(expect_line(&mut kid, "held"), "7");
    let ids = scratch.path().join("jobs.ids");
    let claim = fs::read_dir(&ids).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with(".claim-")).unwrap().path();
    // Locking 7 moved the counter to 8: the token is the lock on 8.
    fs::hard_link(&claim, ids.join("8")).unwrap();
    let pid = Pid::from_raw(kid.0.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let me = Session::open(scratch.path(), Some("jobs"), Some(SHORT)).unwrap();
    let start = Instant::now();
    while start.elapsed() < SHORT * 2 {
        assert_eq!(me.reap_locks().unwrap(), 0, "a session holding the token was reaped");
        assert_eq!(me.lock_ids(&[7]).unwrap(), Vec::<u64>::new(), "its IDs were taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = me.make_new_ids(1).unwrap_err();
    assert_eq!(err.errno(), Errno::ETIMEDOUT, "{err}");
    assert!(claim.exists());
    // Once its process is gone, the next writer takes the token over at once.
    kill(pid, Signal::SIGKILL).unwrap();
    let _ = kid.0.wait();
    let start = Instant::now();
    assert_eq!(me.make_new_ids(1).unwrap(), vec![8]);
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!(me.lock_ids(&[7]).unwrap(), vec![7]);
    assert!(!claim.exists(), "the dead session was reaped");
    me.check().unwrap();
    me.close().unwrap();
}

/// Found in review: an ID lock whose claim's name is gone and whose session left no
/// record (an I/O error during close can leave one) was never released.
#[test]
fn orphaned_id_locks_are_reaped() {
    let scratch = scratch::dir("session-orphans");
    let me = Session::open(scratch.path(), Some("jobs"), None).unwrap();
    let ids = scratch.path().join("jobs.ids");
    fs::write(ids.join("555"), b"nfslock-idlock 1 session 0123456789abcdef\n").unwrap();
    // One naming this very session is not an orphan: its record exists.
    fs::write(ids.join("556"), format!("nfslock-idlock 1 session {}\n", me.id())).unwrap();
    fs::write(ids.join("557"), b"nfslock-idlock 1 session 0123456789abcdef\n").unwrap();
    me.reap_locks().unwrap();
    assert!(!ids.join("555").exists() && !ids.join("557").exists(), "the orphans were removed");
    assert!(ids.join("556").exists(), "a live session's file is left alone");
    // lock_ids meeting one reclaims it on the way.
    fs::write(ids.join("558"), b"nfslock-idlock 1 session 0123456789abcdef\n").unwrap();
    assert_eq!(me.lock_ids(&[555, 558]).unwrap(), vec![555, 558]);
    fs::remove_file(ids.join("556")).unwrap();
    me.close().unwrap();
}

#[test]
fn a_missing_or_corrupt_counter_is_never_reset() {
    let scratch = scratch::dir("session-counter");
    let s = Session::open(scratch.path(), None, None).unwrap();
    let first = s.make_new_ids(5).unwrap();
    let counter = scratch.path().join("default.counter");
    fs::remove_file(&counter).unwrap();
    let err = s.make_new_ids(1).unwrap_err();
    assert_eq!(err.errno(), Errno::ENOENT, "{err}");
    assert!(err.to_string().contains("default.counter") && err.to_string().contains("repair"), "{err}");
    assert_eq!(s.check().unwrap_err().errno(), Errno::EBADMSG);
    // Repair to 0: never below what is known (the 5 IDs this session holds).
    s.repair_counter(0).unwrap();
    let next = s.make_new_ids(1).unwrap()[0];
    assert!(next > *first.iter().max().unwrap(), "{next} after {first:?}");
    s.check().unwrap();

    fs::write(&counter, b"nfslock-counter 1\ngarbage\n").unwrap();
    let err = s.make_new_ids(1).unwrap_err();
    assert_eq!(err.errno(), Errno::EBADMSG, "{err}");
    let check = s.check().unwrap_err();
    assert!(check.to_string().contains("corrupt"), "{check}");
    s.repair_counter(1000).unwrap();
    assert_eq!(s.make_new_ids(1).unwrap(), vec![1000]);
    // A valid counter is never lowered.
    s.repair_counter(10).unwrap();
    assert_eq!(s.make_new_ids(1).unwrap(), vec![1001]);
    s.close().unwrap();
}

#[test]
fn bad_input_is_einval_or_the_system_error() {
    let scratch = scratch::dir("session-bad");
    let s = Session::open(scratch.path(), Some("x"), None).unwrap();
    assert_eq!(s.make_new_ids(0).unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(s.make_new_ids(usize::MAX).unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(s.lock_ids(&[u64::MAX]).unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(s.lock_ids(&[]).unwrap(), Vec::<u64>::new());
    s.repair_counter(u64::MAX - 2).unwrap();
    assert_eq!(s.make_new_ids(1).unwrap(), vec![u64::MAX - 2]);
    assert_eq!(s.make_new_ids(2).unwrap_err().errno(), Errno::EINVAL, "would pass 2^64");
    s.close().unwrap();
    for name in ["", ".", "..", "a/b"] {
        assert_eq!(Session::open(scratch.path(), Some(name), None).err().map(|e| e.errno()), Some(Errno::EINVAL), "{name:?}");
    }
    let file = scratch.path().join("plain-file");
    fs::write(&file, b"").unwrap();
    assert_eq!(Session::open(file.join("repo"), None, None).err().map(|e| e.errno()), Some(Errno::ENOTDIR));
}

#[test]
fn a_forked_child_acts_on_nothing_of_its_parent() {
    let scratch = scratch::dir("session-fork");
    let s = Session::open(scratch.path(), None, None).unwrap();
    let ids = s.make_new_ids(2).unwrap();
    // SAFETY: the child only calls the library (async-signal-unsafe calls are fine: the
    // test process has no other threads holding locks the child needs, besides the
    // session's heartbeat, whose mutexes the library does not share with the child's calls).
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = match (s.make_new_ids(1).map_err(|e| e.errno()), s.release_ids(&ids).map_err(|e| e.errno())) {
                (Err(Errno::EPERM), Err(Errno::EPERM)) => match s.close() {
                    Err(e) if e.errno() == Errno::EPERM => 0,
                    _ => 3,
                },
                _ => 2,
            };
            unsafe { libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    assert_eq!(s.release_ids(&ids).unwrap(), ids, "the parent still holds its IDs");
    s.close().unwrap();
}

/// Issue 15 #6: timeouts the heartbeat cannot keep up with are refused (they used to be
/// accepted, and a session with 1-19 ms got ESTALE without ever being paused); the
/// shortest allowed one works: IDs for several leases, and a clean close.
#[test]
fn timeouts_below_the_minimum_are_einval_and_the_minimum_works() {
    use nfslock::session::MIN_TIMEOUT;
    let scratch = scratch::dir("session-min-timeout");
    for ms in [1, 10, 19, MIN_TIMEOUT.as_millis() as u64 - 1] {
        let err = Session::open(scratch.path(), Some("jobs"), Some(Duration::from_millis(ms))).err();
        assert_eq!(err.map(|e| e.errno()), Some(Errno::EINVAL), "{ms} ms");
    }
    let s = Session::open(scratch.path(), Some("jobs"), Some(MIN_TIMEOUT)).unwrap();
    for _ in 0..8 {
        s.make_new_ids(1).expect("a session that is not paused stays live");
        std::thread::sleep(MIN_TIMEOUT / 2 + Duration::from_millis(10));
    }
    s.close().expect("a clean close");
    assert!(fs::read_dir(scratch.path().join("jobs.sessions")).unwrap().next().is_none(), "the record is removed");
}

/// Issue 15 #3: in a sticky, world-writable repository directory, `NAME.ids` and
/// `NAME.sessions` planted as symlinks (ELOOP) or as directories of another user
/// (EPERM) are refused, and nothing is written through them; the repository directory
/// itself as a symlink is ELOOP. (mkdir used to take the existing entry as success and
/// write the claim, ID locks and record where the symlinks pointed.)
#[test]
fn planted_session_directories_are_refused_and_nothing_is_written_through_them() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let scratch = scratch::dir("session-planted");
    let repo = scratch.path().join("repo");
    let elsewhere = scratch.path().join("elsewhere");
    fs::create_dir_all(&repo).unwrap();
    fs::create_dir_all(elsewhere.join("ids")).unwrap();
    fs::create_dir_all(elsewhere.join("sessions")).unwrap();
    fs::set_permissions(&repo, fs::Permissions::from_mode(0o1777)).unwrap();
    let nothing_elsewhere = || {
        for sub in ["ids", "sessions"] {
            let left: Vec<_> = fs::read_dir(elsewhere.join(sub)).unwrap().flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "written through the planted {sub}: {left:?}");
        }
    };
    // Symlinks at both names (a fresh repository: no counter yet).
    symlink(elsewhere.join("ids"), repo.join("jobs.ids")).unwrap();
    symlink(elsewhere.join("sessions"), repo.join("jobs.sessions")).unwrap();
    let err = Session::open(&repo, Some("jobs"), None).err().map(|e| e.errno());
    assert_eq!(err, Some(Errno::ELOOP));
    nothing_elsewhere();
    // Only the sessions directory planted, the ids directory real.
    fs::remove_file(repo.join("jobs.ids")).unwrap();
    let err = Session::open(&repo, Some("jobs"), None).err().map(|e| e.errno());
    assert_eq!(err, Some(Errno::ELOOP));
    nothing_elsewhere();
    // A real directory of another user (nobody): EPERM, and nothing made in it.
    fs::remove_file(repo.join("jobs.sessions")).unwrap();
    let theirs = repo.join("jobs.sessions");
    fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).expect("the test runs as root (chown)");
    let err = Session::open(&repo, Some("jobs"), None).err().map(|e| e.errno());
    assert_eq!(err, Some(Errno::EPERM));
    assert!(fs::read_dir(&theirs).unwrap().next().is_none(), "nothing written into another user's directory");
    // A world-writable one without the sticky bit: EPERM.
    fs::remove_dir(&theirs).unwrap();
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Session::open(&repo, Some("jobs"), None).err().map(|e| e.errno());
    assert_eq!(err, Some(Errno::EPERM));
    fs::remove_dir(&theirs).unwrap();
    // The repository directory itself as a symlink.
    let link = scratch.path().join("repo-link");
    symlink(&repo, &link).unwrap();
    assert_eq!(Session::open(&link, Some("jobs"), None).err().map(|e| e.errno()), Some(Errno::ELOOP));
    // And with nothing planted, it works.
    let s = Session::open(&repo, Some("jobs"), None).unwrap();
    s.make_new_ids(3).unwrap();
    s.close().unwrap();
    nothing_elsewhere();
}

/// Issue 15 #4: a crash in the middle of an open used to leave an empty record that was
/// judged alive forever (`check`: EBADMSG). Records are now complete before they appear;
/// an unreadable record of a dead process, and an opener's leftover `.open-` file, are
/// reaped, and `check` is clean afterwards.
#[test]
fn an_empty_record_of_a_dead_opener_is_reaped() {
    let scratch = scratch::dir("session-empty-record");
    let s = Session::open(scratch.path(), Some("jobs"), None).unwrap();
    let sessions = scratch.path().join("jobs.sessions");
    let names: Vec<_> = fs::read_dir(&sessions).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert!(names.len() == 1 && !names[0].starts_with('.'), "only the record under its own name: {names:?}");
    // What a killed opener leaves: an empty record (the old way) and an unlinked temp.
    fs::write(sessions.join("0123456789abcdef"), b"").unwrap();
    fs::write(sessions.join(".open-fedcba9876543210"), b"nfslock-session 1 beat 000").unwrap();
    s.reap_locks().expect("reap");
    s.check().expect("check is clean once the dead opener's files are reaped");
    let left: Vec<_> = fs::read_dir(&sessions).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only our record is left: {left:?}");
    s.close().unwrap();
}
