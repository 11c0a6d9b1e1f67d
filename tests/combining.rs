//! Combining (sessions of one host handing their make_new_ids requests to the holder of
//! the counter's token): a combiner killed after it linked other sessions' IDs but
//! before it wrote the counter must cost them nothing but a retry. Either a requester
//! sees its pid gone and undoes its links to its own claim, or the session that next
//! meets the token (a link the dead round made) undoes the whole round; each way they
//! go on, no ID is handed out twice and the repository checks clean. (The test fails
//! only with both ways disabled; the unit tests in combine/ check each alone.)
//!
//! And a requester that gave up (ETIMEDOUT) on a combiner stopped with its request in
//! hand, and then sits idle, must not block anyone once that combiner is killed: the
//! links made for it sit above the counter, and the next writer undoes the dead round.
//! Later the requester itself goes on, and nothing it reported is ever released.
//!
//! The combiner is this test binary run again under the LD_PRELOAD shim. The shim stops
//! it first just after it takes the counter's token (its Nth ID link); the test then
//! starts the other sessions, which post their requests and wait for that token, and
//! continues the combiner. It serves them, and the shim stops it again just before the
//! counter write of that round (the first round in which it linked IDs to another
//! session's claim). The other sessions are children without the shim.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nfslock::session::Session;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[path = "support/shim.rs"]
mod shim;
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Cleanup;

const TEST: &str = "a_combiner_killed_in_the_middle_of_a_round_costs_its_requesters_a_retry";
const TEST_IDLE: &str = "a_requester_that_gave_up_on_a_stopped_combiner_blocks_nobody_once_it_is_killed";
const CHILD_ENV: &str = "NFSLOCK_COMBINING_DIR";
const CALLS: usize = 300;
/// The combiner stops first just after this ID link of its own (the token of its call).
const HOLD_AT: u64 = 3;
/// How long the other sessions get to post their requests while the combiner is held.
const POST_TIME: Duration = Duration::from_millis(200);
const REQUESTERS: usize = 3;
/// Long enough that no requester gives up on the stopped combiner before it is killed.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Scenarios tried before the test gives up on catching the combiner serving a request
/// (a scenario misses only when no request was posted by the time the combiner went on,
/// and it never served one later either).
const SCENARIOS: usize = 5;

/// In a child: its session id, then CALLS IDs (one per call), then how close went.
fn child(dir: &Path) {
    let s = Session::open(dir, Some("jobs"), Some(TIMEOUT)).unwrap();
    println!("sid={}", s.id());
    for _ in 0..CALLS {
        match s.make_new_ids(1) {
            Ok(ids) => println!("id={}", ids[0]),
            Err(e) => println!("err={:?} {e}", e.errno()),
        }
    }
    println!("close={:?}", s.close().map_err(|e| e.errno()));
}

fn spawn(dir: &Path, shim: Option<&Path>) -> Child {
    spawn_as(TEST, dir, shim)
}

/// A child running `test` (whose child branch is [`child`]); under the shim, its stops
/// are counted in [`stops_file`].
fn spawn_as(test: &str, dir: &Path, shim: Option<&Path>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "-q"]).env(CHILD_ENV, dir).stdout(Stdio::piped());
    if let Some(shim) = shim {
        cmd.env("LD_PRELOAD", shim)
            .env("NFSLOCK_SHIM_STOP_AFTER_ID_LINK", HOLD_AT.to_string())
            .env("NFSLOCK_SHIM_STOP_COMBINED_WRITE", "1")
            .env("NFSLOCK_SHIM_COUNT", stops_file(dir));
    }
    cmd.spawn().unwrap()
}

/// Where the shim notes each stop of the combiner (a byte each).
fn stops_file(dir: &Path) -> PathBuf {
    dir.join("combiner-stops")
}

/// Reads a child's lines (its own, not the test harness's) on a thread, and counts it in
/// `opened` once it has opened its session.
fn reader(child: &mut Child, opened: Option<Arc<AtomicUsize>>) -> JoinHandle<Vec<String>> {
    let out = child.stdout.take().unwrap();
    let ours = |l: &String| ["sid=", "id=", "err=", "close="].iter().any(|p| l.starts_with(p));
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(out).lines().map_while(Result::ok).filter(ours) {
            if line.starts_with("sid=") {
                opened.iter().for_each(|n| _ = n.fetch_add(1, Ordering::SeqCst));
            }
            lines.push(line);
        }
        lines
    })
}

/// The state letter of a child in /proc (T: stopped, Z: exited and not yet waited for).
fn state(pid: u32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(") ").next().and_then(|rest| rest.chars().next()).unwrap_or('Z')
}

/// Waits until the combiner has stopped for the `nth` time (true) or has exited (false);
/// None when it did neither within a minute.
fn combiner_stops(pid: u32, dir: &Path, nth: u64) -> Option<bool> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let stops = fs::metadata(stops_file(dir)).map_or(0, |m| m.len());
        match state(pid) {
            'T' if stops >= nth => return Some(true),
            'Z' => return Some(false),
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    None
}

/// Kills every child and fails with what each had done: the combiner neither stopped
/// nor finished in time.
fn hung(cleanup: &Cleanup, combiner: impl Iterator<Item = String>, requesters: Vec<JoinHandle<Vec<String>>>) -> ! {
    let pid = cleanup.1[0].id();
    let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let state = state(pid);
    for child in &cleanup.1 {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    }
    let combiner: Vec<String> = combiner.collect();
    let requesters: Vec<Vec<String>> = requesters.into_iter().map(|h| h.join().unwrap()).collect();
    let errors: Vec<&String> = requesters.iter().flatten().chain(&combiner).filter(|l| l.starts_with("err=")).collect();
    panic!(
        "the combiner neither stopped nor finished in 60 s (state {state}, waiting in {wchan}): it reported {} IDs, the requesters {:?}; errors: {errors:?}",
        ids_of(&combiner).len(),
        requesters.iter().map(|l| ids_of(l).len()).collect::<Vec<_>>()
    );
}

/// The next ID the counter file names: the valid slot with the higher sequence number
/// (see the README's on-disk format; each slot: letter, sequence, next ID, CRC).
fn counter_next(dir: &Path) -> u64 {
    let text = fs::read_to_string(dir.join("jobs.counter")).unwrap();
    let slots = text.lines().skip(1).map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f[1].parse::<u64>().unwrap(), f[2].parse::<u64>().unwrap())
    });
    slots.max().unwrap().1
}

/// The locks at or above the counter that hold a session other than `sid`: IDs the
/// stopped combiner linked for its requesters.
fn linked_for_others(dir: &Path, sid: &str) -> usize {
    let next = counter_next(dir);
    let mut n = 0;
    for entry in fs::read_dir(dir.join("jobs.ids")).unwrap().map_while(Result::ok) {
        let Ok(id) = entry.file_name().to_string_lossy().parse::<u64>() else { continue };
        let holder = fs::read_to_string(entry.path()).unwrap_or_default();
        if id > next && !holder.contains(sid) {
            n += 1;
        }
    }
    n
}

fn ids_of(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| l.strip_prefix("id=")).map(|v| v.parse().unwrap()).collect()
}

/// One scenario; false when the combiner finished without serving any request.
fn scenario(shim: &Path, tag: usize) -> bool {
    let dir = std::env::temp_dir().join(format!("nfslock-combining-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup(dir.clone(), Vec::new());
    // The repository exists before the children race to create it.
    Session::open(&dir, Some("jobs"), Some(TIMEOUT)).unwrap().close().unwrap();

    let mut combiner = spawn(&dir, Some(shim));
    let combiner_pid = combiner.id();
    let mut combiner_lines = BufReader::new(combiner.stdout.take().unwrap()).lines().map_while(Result::ok);
    cleanup.1.push(combiner);
    let sid = combiner_lines.find_map(|l| l.strip_prefix("sid=").map(str::to_string)).expect("the combiner's session id");
    // Alone, it takes the token on every call, and is held with the token in hand.
    match combiner_stops(combiner_pid, &dir, 1) {
        Some(true) => {}
        Some(false) => panic!("the combiner finished without taking the token {HOLD_AT} times"),
        None => hung(&cleanup, combiner_lines, Vec::new()),
    }
    let opened = Arc::new(AtomicUsize::new(0));
    let mut requesters = Vec::new();
    for _ in 0..REQUESTERS {
        let mut kid = spawn(&dir, None);
        requesters.push(reader(&mut kid, Some(opened.clone())));
        cleanup.1.push(kid);
    }
    let start = Instant::now();
    while opened.load(Ordering::SeqCst) < REQUESTERS {
        assert!(start.elapsed() < Duration::from_secs(60), "the requesters never opened their sessions");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(POST_TIME);
    kill(Pid::from_raw(combiner_pid as i32), Signal::SIGCONT).unwrap();
    let Some(caught) = combiner_stops(combiner_pid, &dir, 2) else { hung(&cleanup, combiner_lines, requesters) };
    if caught {
        let linked = linked_for_others(&dir, &sid);
        assert!(linked > 0, "the combiner stopped in a combined round, with no ID linked for others above the counter");
        kill(Pid::from_raw(combiner_pid as i32), Signal::SIGKILL).unwrap();
    }
    let combiner_ids: Vec<u64> = ids_of(&combiner_lines.collect::<Vec<_>>());
    let mut all: Vec<u64> = combiner_ids.clone();
    for (i, handle) in requesters.into_iter().enumerate() {
        let lines = handle.join().unwrap();
        assert!(lines.iter().all(|l| !l.starts_with("err=")), "requester {i}: {lines:?}");
        assert_eq!(lines.last().map(String::as_str), Some("close=Ok(())"), "requester {i}");
        let ids = ids_of(&lines);
        assert_eq!(ids.len(), CALLS, "requester {i}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "requester {i}: its IDs increase");
        all.extend(ids);
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an ID was handed out twice");

    let me = Session::open(&dir, Some("jobs"), Some(TIMEOUT)).unwrap();
    me.reap_locks().unwrap();
    me.check().unwrap();
    let next = me.make_new_ids(1).unwrap()[0];
    assert!(unique.iter().all(|&id| id < next), "{next} is above every ID handed out");
    me.close().unwrap();
    caught
}

/// In a child, the child's part; in the test, `scenario` until the combiner is caught
/// serving a request (at most SCENARIOS times).
fn run(what: &str, scenario: fn(&Path, usize) -> bool) {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let shim = shim::build_shim();
    let caught = (0..SCENARIOS).any(|tag| {
        let caught = scenario(&shim, tag);
        eprintln!("{what} scenario {tag}: the combiner {}", if caught { "was stopped serving a request" } else { "served none" });
        caught
    });
    assert!(caught, "{what}: in {SCENARIOS} tries the combiner never served a request");
}

#[test]
fn a_combiner_killed_in_the_middle_of_a_round_costs_its_requesters_a_retry() {
    run("killed combiner", scenario);
}

/// The requester's side of the idle scenario, in this process; false when the combiner
/// finished without serving this session.
fn idle_scenario(shim: &Path, tag: usize) -> bool {
    // The requester waits this long for the token the held combiner has, and then for
    // the combiner that took its request: far more than POST_TIME.
    const SHORT: Duration = Duration::from_millis(3000);
    let dir = std::env::temp_dir().join(format!("nfslock-combining-idle-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup(dir.clone(), Vec::new());
    Session::open(&dir, Some("jobs"), Some(TIMEOUT)).unwrap().close().unwrap();
    let requester = Session::open(&dir, Some("jobs"), Some(SHORT)).unwrap();
    let mut reported = Vec::new();
    for _ in 0..3 {
        reported.extend(requester.make_new_ids(1).unwrap());
    }
    let mut combiner = spawn_as(TEST_IDLE, &dir, Some(shim));
    let combiner_pid = combiner.id();
    let combiner_lines = reader(&mut combiner, None);
    cleanup.1.push(combiner);
    match combiner_stops(combiner_pid, &dir, 1) {
        Some(true) => {}
        Some(false) => panic!("the combiner finished without taking the token {HOLD_AT} times"),
        None => hung(&cleanup, std::iter::empty(), Vec::new()),
    }
    // The requester posts and waits for the token the combiner holds; the combiner goes
    // on, serves it, and stops before its counter write.
    let go_on = std::thread::spawn(move || {
        std::thread::sleep(POST_TIME);
        kill(Pid::from_raw(combiner_pid as i32), Signal::SIGCONT).unwrap();
    });
    let start = Instant::now();
    let gave_up = loop {
        assert!(start.elapsed() < Duration::from_secs(30), "the requester never met the stopped combiner");
        if state(combiner_pid) == 'Z' {
            return false;
        }
        match requester.make_new_ids(1) {
            Ok(ids) => reported.extend(ids),
            Err(e) => break e,
        }
    };
    go_on.join().unwrap();
    assert_eq!(combiner_stops(combiner_pid, &dir, 2), Some(true), "{gave_up}");
    // The combiner stops only in a round in which it served this session.
    assert!(gave_up.to_string().contains("took this request"), "{gave_up}");
    kill(Pid::from_raw(combiner_pid as i32), Signal::SIGKILL).unwrap();
    let mut all = ids_of(&combiner_lines.join().unwrap());
    let _ = cleanup.1.pop().unwrap().wait();

    // The requester stays idle; another session allocates as usual.
    let other = Session::open(&dir, Some("jobs"), Some(SHORT)).unwrap();
    for _ in 0..3 {
        all.extend(other.make_new_ids(1).unwrap_or_else(|e| panic!("{e} (the requester gave up with: {gave_up})")));
    }
    // The requester goes on, and keeps what it reported.
    reported.extend(requester.make_new_ids(2).unwrap());
    for id in &reported {
        let lock = fs::read_to_string(dir.join("jobs.ids").join(id.to_string())).unwrap_or_default();
        assert!(lock.contains(requester.id()), "ID {id}, reported to the requester, is no longer its lock: {lock:?}");
    }
    all.extend(&reported);
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an ID was handed out twice");
    other.reap_locks().unwrap();
    other.check().unwrap();
    other.close().unwrap();
    requester.close().unwrap();
    true
}

#[test]
fn a_requester_that_gave_up_on_a_stopped_combiner_blocks_nobody_once_it_is_killed() {
    run("idle requester", idle_scenario);
}
