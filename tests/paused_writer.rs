//! A session stopped between taking the counter's token and writing the counter (the
//! LD_PRELOAD shim stops it just before its pwrite) must be left alone however long it is
//! silent: when it runs again it writes, and a writer that had taken the token from it
//! meanwhile would then see the counter move back and hand out IDs twice. While it is
//! stopped, other writers time out; once continued, it finds its lease gone (ESTALE) and
//! returns nothing, and the counter only ever moved forward.
//!
//! The child is this test binary run again under the shim.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nfslock::session::Session;
use nfslock::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[path = "support/scratch.rs"]
mod scratch;
#[path = "support/shim.rs"]
mod shim;
use scratch::Cleanup;

const TEST: &str = "a_writer_stopped_before_its_counter_write_is_left_alone";
const CHILD_ENV: &str = "NFSLOCK_PAUSED_WRITER_DIR";
/// The child stops before its third counter write (its third make_new_ids).
const STOP_AT: u64 = 3;
const TIMEOUT: Duration = Duration::from_millis(1000);

/// In the child: allocates one ID per call, printing each outcome.
fn child(dir: &Path) {
    let s = Session::open(dir, Some("jobs"), Some(TIMEOUT)).unwrap();
    for _ in 0..STOP_AT + 1 {
        match s.make_new_ids(1) {
            Ok(ids) => println!("id={}", ids[0]),
            Err(e) => println!("err={:?}", e.errno()),
        }
    }
    println!("close={:?}", s.close().map_err(|e| e.errno()));
}

fn stopped(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('T'))
}

#[test]
fn a_writer_stopped_before_its_counter_write_is_left_alone() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let mut cleanup = Cleanup(scratch::dir("paused-writer"), Vec::new());
    let dir = cleanup.0.path().to_path_buf();
    let shim = shim::build_shim();
    let kid = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, &dir)
        .env("LD_PRELOAD", &shim)
        .env("NFSLOCK_SHIM_STOP_COUNTER_WRITE", STOP_AT.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = kid.id();
    cleanup.1.push(kid);
    let out = cleanup.1[0].stdout.take().unwrap();
    // The child's own lines (the test harness prints some too).
    let ours = |l: &String| ["id=", "err=", "close="].iter().any(|p| l.starts_with(p));
    let mut lines = BufReader::new(out).lines().map_while(Result::ok).filter(ours);
    let mut child_ids = Vec::new();
    for _ in 0..STOP_AT - 1 {
        let line = lines.next().expect("the child's first IDs");
        child_ids.push(line.strip_prefix("id=").unwrap_or_else(|| panic!("{line}")).parse::<u64>().unwrap());
    }
    let start = Instant::now();
    while !stopped(pid) {
        assert!(start.elapsed() < Duration::from_secs(10), "the child never stopped at its counter write");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Stopped while it holds the token: silent for twice its timeout, yet not reaped.
    let me = Session::open(&dir, Some("jobs"), Some(TIMEOUT)).unwrap();
    let start = Instant::now();
    while start.elapsed() < TIMEOUT * 2 {
        assert_eq!(me.reap_locks().unwrap(), 0, "the stopped writer was reaped");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(me.make_new_ids(1).unwrap_err().errno(), Errno::ETIMEDOUT);

    // Continued: its write lands, its lease is gone, it hands out nothing more.
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    // The rest of its calls and its close, up to its exit.
    let rest: Vec<String> = lines.by_ref().collect();
    assert_eq!(rest.first().map(String::as_str), Some("err=ESTALE"), "{rest:?}");
    assert!(rest.iter().all(|l| !l.starts_with("id=")), "{rest:?}");
    let status = cleanup.1.pop().unwrap().wait().unwrap();
    assert!(status.success(), "child: {status}");

    let mine = me.make_new_ids(3).unwrap();
    let max_child = *child_ids.iter().max().unwrap();
    assert!(mine.iter().all(|id| *id > max_child), "{mine:?} after {child_ids:?}");
    // The stopped writer's write moved the counter past the ID it never returned.
    assert_eq!(mine[0], max_child + 2, "{mine:?} after {child_ids:?}");
    let all: HashSet<u64> = child_ids.iter().chain(&mine).copied().collect();
    assert_eq!(all.len(), child_ids.len() + mine.len(), "an ID was handed out twice");
    me.reap_locks().unwrap();
    me.check().unwrap();
    me.close().unwrap();
}
