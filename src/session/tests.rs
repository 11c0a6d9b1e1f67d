//! Unit tests of the session layer's modules that need a whole session: allocation,
//! the counter's token, the lease, the heartbeat, liveness and maintenance. Each test
//! works in a temporary directory of its own (tempfile), removed when it ends; the
//! format modules (counter, record, layout, idlock, files) test themselves.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::idlock::{self, Take};
use super::layout::Repo;
use super::liveness::{Life, Observer};
use super::record::{self, SessionRecord};
use super::state::locked;
use super::{lease, token, Session};
use crate::record::Record;

const NAME: &str = "jobs";

fn open(dir: &Path) -> Session {
    Session::open(dir, Some(NAME), Some(Duration::from_secs(10))).expect("open")
}

fn repo(dir: &Path) -> Repo {
    let mut repo = Repo::new("test", dir, NAME).unwrap();
    repo.owner = Some(nix::unistd::geteuid().as_raw());
    repo
}

fn counter_next(dir: &Path) -> u64 {
    let (_, c) = super::counter::load(&repo(dir), true).expect("counter");
    c.next
}

fn ids_dir(dir: &Path) -> PathBuf {
    dir.join(format!("{NAME}.ids"))
}

/// Plants what a session `sid` that has no record would leave: a claim and the locks
/// on `ids` linked to it.
fn plant_recordless_locks(dir: &Path, sid: &str, ids: &[u64]) {
    let claim = ids_dir(dir).join(format!(".claim-{sid}-0"));
    fs::write(&claim, format!("nfslock-idlock 1 session {sid}\n")).unwrap();
    for id in ids {
        fs::hard_link(&claim, ids_dir(dir).join(id.to_string())).unwrap();
    }
}

/// A record of session `sid` with the given owner and timeout.
fn plant_record(dir: &Path, sid: &str, owner: Record, timeout: Duration) {
    let rec = SessionRecord { beat: 7, owner, since: record::now(), timeout };
    fs::write(dir.join(format!("{NAME}.sessions")).join(sid), rec.to_bytes()).unwrap();
}

/// The pid of a process that has exited.
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    pid
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------
// alloc.rs
// ---------------------------------------------------------------------------------

#[test]
fn alloc_issues_consecutive_increasing_ids_linked_to_the_sessions_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    assert_eq!(s.make_new_ids(3).unwrap(), [0, 1, 2]);
    assert_eq!(s.make_new_ids(2).unwrap(), [3, 4]);
    assert_eq!(counter_next(tmp.path()), 5);
    let ids = locked(&s.shared.ids);
    let claim = ids.claims.last().expect("a claim");
    for id in 0..5 {
        let st = fs::symlink_metadata(ids_dir(tmp.path()).join(id.to_string())).unwrap();
        assert_eq!(st.ino(), claim.file.ino, "ID {id} is a link of the claim");
        assert_eq!(ids.held.get(&id), Some(&claim.file));
    }
}

#[test]
fn alloc_moves_past_ids_locked_above_the_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    // A session that crashed between locking and advancing the counter left ID 1.
    plant_recordless_locks(tmp.path(), "00000000000000aa", &[1]);
    assert_eq!(s.make_new_ids(2).unwrap(), [2, 3]);
    assert!(!ids_dir(tmp.path()).join("0").exists(), "the token's ID 0 was not issued, so not kept");
    assert_eq!(counter_next(tmp.path()), 4);
}

#[test]
fn alloc_lock_ids_skips_held_ids_reports_ours_once_and_moves_the_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (open(tmp.path()), open(tmp.path()));
    assert_eq!(a.lock_ids(&[5, 5, 6]).unwrap(), [5, 6]);
    assert_eq!(a.lock_ids(&[6]).unwrap(), [6], "already ours: reported");
    assert_eq!(b.lock_ids(&[6, 7]).unwrap(), [7], "6 is a's: skipped, no error");
    assert_eq!(counter_next(tmp.path()), 8, "the counter moved past every locked ID");
    assert_eq!(b.make_new_ids(1).unwrap(), [8]);
    assert_eq!(b.release_ids(&[5, 6, 7, 7]).unwrap(), [7], "only what b held");
    assert_eq!(a.release_ids(&[5, 6]).unwrap(), [5, 6]);
    assert_eq!(a.lock_ids(&[]).unwrap(), Vec::<u64>::new());
    assert_eq!(a.lock_ids(&[u64::MAX]).unwrap_err().errno(), crate::Errno::EINVAL);
}

#[test]
fn alloc_lock_ids_reclaims_the_ids_of_a_dead_session() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let sid = "00000000000000bb";
    let mut owner = crate::process::this_process().record(b"");
    owner.pid = dead_pid();
    plant_record(tmp.path(), sid, owner, Duration::from_secs(45));
    plant_recordless_locks(tmp.path(), sid, &[3]);
    assert_eq!(s.lock_ids(&[3]).unwrap(), [3]);
    assert!(!tmp.path().join(format!("{NAME}.sessions/{sid}")).exists(), "the dead session was reaped");
}

#[test]
fn alloc_lock_holder_describes_the_holder_and_errors_name_rust_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let id = s.make_new_ids(1).unwrap()[0];
    let text = s.lock_holder(id).unwrap();
    let me = crate::process::this_process();
    let want = format!("{} (pid {}) since ", String::from_utf8_lossy(&me.host), me.pid);
    assert!(text.starts_with(&want) && text.ends_with('Z'), "{text}");
    let free = s.lock_holder(id + 1).unwrap_err();
    assert_eq!((free.errno(), free.op()), (crate::Errno::ENOENT, "Session::lock_holder"));
    let zero = s.make_new_ids(0).unwrap_err();
    assert_eq!((zero.errno(), zero.op()), (crate::Errno::EINVAL, "Session::make_new_ids"));
    fs::remove_file(tmp.path().join(format!("{NAME}.counter"))).unwrap();
    let missing = s.make_new_ids(1).unwrap_err();
    assert_eq!((missing.errno(), missing.op()), (crate::Errno::ENOENT, "Session::make_new_ids"));
    assert!(missing.cause().contains("call repair_counter") && !missing.cause().contains("nfslock_"), "{missing}");
    assert_eq!(s.lock_ids(&[1000]).unwrap_err().op(), "Session::lock_ids");
}

// ---------------------------------------------------------------------------------
// token.rs
// ---------------------------------------------------------------------------------

#[test]
fn token_is_the_lock_on_the_counters_next_id_and_commit_never_moves_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let shared = &s.shared;
    let mut ids = locked(&shared.ids);
    let t = token::acquire(shared, &mut ids, "test", false).unwrap();
    assert_eq!(t.id(), 0);
    let lock = ids_dir(tmp.path()).join("0");
    assert!(lock.exists(), "the token is the lock on ID 0");
    assert_eq!(token::commit(shared, &t, 10, "test").unwrap(), 10);
    token::finish(shared, &mut ids, t, false);
    assert!(!lock.exists(), "finish without keeping drops the token's lock");
    assert_eq!(counter_next(tmp.path()), 10);
    let t = token::acquire(shared, &mut ids, "test", false).unwrap();
    assert_eq!(t.id(), 10);
    assert_eq!(token::commit(shared, &t, 5, "test").unwrap(), 10, "never lowered");
    token::finish(shared, &mut ids, t, false);
    assert_eq!(counter_next(tmp.path()), 10);
}

#[test]
fn token_of_a_session_without_a_record_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    // It holds the token (the lock on the counter's next ID, 0) and can never write:
    // it has no record, so it can never pass its lease check again.
    plant_recordless_locks(tmp.path(), "00000000000000cc", &[0]);
    assert_eq!(s.make_new_ids(1).unwrap(), [0]);
    assert!(!ids_dir(tmp.path()).join(".claim-00000000000000cc-0").exists(), "reaped");
}

#[test]
fn token_held_by_a_live_session_is_waited_for_then_etimedout_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (open(tmp.path()), Session::open(tmp.path(), Some(NAME), Some(Duration::from_millis(400))).unwrap());
    let mut ids = locked(&a.shared.ids);
    let t = token::acquire(&a.shared, &mut ids, "test", false).unwrap();
    let e = b.make_new_ids(1).unwrap_err();
    assert_eq!((e.errno(), e.op()), (crate::Errno::ETIMEDOUT, "Session::make_new_ids"), "{e}");
    assert!(e.cause().contains(a.id()), "names the holder: {e}");
    token::finish(&a.shared, &mut ids, t, false);
    drop(ids);
    assert_eq!(b.make_new_ids(1).unwrap(), [0]);
}

// ---------------------------------------------------------------------------------
// lease.rs
// ---------------------------------------------------------------------------------

#[test]
fn lease_a_session_silent_past_its_lease_is_estale_from_then_on() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let shared = &s.shared;
    assert!(lease::still_live(shared, "test").is_ok());
    locked(&shared.beat).last = lease::boottime().saturating_sub(shared.timeout);
    let e = lease::still_live(shared, "test").unwrap_err();
    assert_eq!(e.errno(), crate::Errno::ESTALE);
    assert!(e.cause().contains("past its lease"), "{e}");
    // Expired for good: a fresh beat time does not bring it back.
    locked(&shared.beat).last = lease::boottime();
    assert_eq!(s.make_new_ids(1).unwrap_err().errno(), crate::Errno::ESTALE);
    assert_eq!(s.close().unwrap_err().errno(), crate::Errno::ESTALE, "an expired session removes nothing");
}

#[test]
fn lease_an_operation_beats_when_the_last_beat_is_a_period_old() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let shared = &s.shared;
    let before = {
        let mut beat = locked(&shared.beat);
        beat.last = lease::boottime().saturating_sub(lease::period(shared.timeout) + Duration::from_millis(1));
        beat.count
    };
    drop(lease::enter(shared, "test").unwrap());
    let after = locked(&shared.beat).count;
    assert_eq!(after, before + 1);
    let bytes = fs::read(shared.repo.session_path(&shared.sid)).unwrap();
    assert_eq!(SessionRecord::parse(&bytes).unwrap().beat, after, "the record carries the new beat");
}

#[test]
fn lease_a_removed_record_or_claim_expires_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let shared = &s.shared;
    fs::remove_file(shared.repo.session_path(&shared.sid)).unwrap();
    let why = lease::beat(shared, &mut locked(&shared.beat)).unwrap_err();
    assert!(why.contains("another session reaped it"), "{why}");
    assert_eq!(lease::still_live(shared, "test").unwrap_err().errno(), crate::Errno::ESTALE);

    let s = open(tmp.path());
    let e = lease::link_error(&s.shared, "test", Errno::ENOENT);
    assert_eq!(e.errno(), crate::Errno::ESTALE);
    assert!(locked(&s.shared.beat).expired.is_some());
    let other = lease::link_error(&s.shared, "test", Errno::EACCES);
    assert_eq!((other.errno(), other.op()), (crate::Errno::EACCES, "test"));
}

// ---------------------------------------------------------------------------------
// heartbeat.rs
// ---------------------------------------------------------------------------------

// A timeout of 1 s (beats every 250 ms): the 100 ms minimum leaves a 50 ms margin that a
// loaded 2-core machine running the other unit tests beside it overshoots now and then.
#[test]
fn heartbeat_beats_on_its_own_reaps_the_dead_and_stops_at_close() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Session::open(tmp.path(), Some(NAME), Some(Duration::from_secs(1))).unwrap();
    let record = s.shared.repo.session_path(&s.shared.sid);
    let beat_of = |p: &Path| SessionRecord::parse(&fs::read(p).unwrap()).unwrap().beat;
    wait_until("two beats", || beat_of(&record) >= 2);
    // A dead process's session, with an ID lock: the heartbeat reaps it.
    let sid = "00000000000000dd";
    let mut owner = crate::process::this_process().record(b"");
    owner.pid = dead_pid();
    plant_record(tmp.path(), sid, owner, Duration::from_secs(45));
    plant_recordless_locks(tmp.path(), sid, &[40]);
    wait_until("the dead session reaped", || !ids_dir(tmp.path()).join("40").exists());
    assert!(!tmp.path().join(format!("{NAME}.sessions/{sid}")).exists());
    let shared = s.shared.clone();
    s.close().unwrap();
    assert!(*locked(&shared.stop), "the thread was told to stop");
    assert_eq!(std::sync::Arc::strong_count(&shared), 1, "and was joined: it let its reference go");
    assert!(!record.exists());
}

// ---------------------------------------------------------------------------------
// liveness.rs
// ---------------------------------------------------------------------------------

#[test]
fn liveness_judges_by_the_observers_clock_the_owners_pid_and_readability() {
    let tmp = tempfile::tempdir().unwrap();
    let _s = open(tmp.path());
    let repo = repo(tmp.path());
    let me = crate::process::this_process();
    let mut observer = Observer::new(true, Duration::from_secs(10));
    // Another host's session: dead only once its beat stayed the same for its timeout,
    // on our clock.
    let remote = Record { host: b"elsewhere".to_vec(), pid: 1, message: Vec::new(), start_time: None, lease: None };
    plant_record(tmp.path(), "00000000000000e1", remote, Duration::from_millis(30));
    assert_eq!(observer.judge(&repo, "00000000000000e1", &me.host), Life::Alive, "first seen");
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(observer.judge(&repo, "00000000000000e1", &me.host), Life::Dead);
    // This host, a process that is gone: dead at once.
    let mut gone = me.record(b"");
    gone.pid = dead_pid();
    plant_record(tmp.path(), "00000000000000e2", gone, Duration::from_secs(45));
    assert_eq!(Observer::new(true, Duration::from_secs(10)).judge(&repo, "00000000000000e2", &me.host), Life::Dead);
    // No record: gone.
    assert_eq!(observer.judge(&repo, "00000000000000e3", &me.host), Life::Gone);
    // An unreadable record: alive while a process holds its flock, dead after.
    let garbage = tmp.path().join(format!("{NAME}.sessions/00000000000000e4"));
    fs::write(&garbage, b"not a record").unwrap();
    let holder = fs::File::open(&garbage).unwrap();
    crate::fsops::try_flock_shared(&holder).unwrap();
    assert_eq!(observer.judge(&repo, "00000000000000e4", &me.host), Life::Alive);
    drop(holder);
    assert_eq!(observer.judge(&repo, "00000000000000e4", &me.host), Life::Dead);
}

// ---------------------------------------------------------------------------------
// maintenance.rs
// ---------------------------------------------------------------------------------

#[test]
fn maintenance_open_makes_the_repository_and_close_leaves_nothing_of_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b");
    let s = open(&dir);
    assert_eq!(counter_next(&dir), 0);
    for (sub, mode) in [("jobs.ids", 0o755), ("jobs.sessions", 0o755), ("jobs.counter", 0o644)] {
        let st = fs::symlink_metadata(dir.join(sub)).unwrap();
        assert_eq!(st.mode() & 0o777, mode & !current_umask(), "{sub}");
    }
    s.make_new_ids(3).unwrap();
    s.lock_ids(&[10]).unwrap();
    s.close().unwrap();
    assert_eq!(fs::read_dir(ids_dir(&dir)).unwrap().count(), 0, "IDs and claims removed");
    assert_eq!(fs::read_dir(dir.join("jobs.sessions")).unwrap().count(), 0, "record removed");
    assert_eq!(counter_next(&dir), 11);
}

fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

#[test]
fn maintenance_check_finds_problems_and_repair_raises_never_lowers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    s.check().unwrap();
    fs::write(tmp.path().join("jobs.sessions/not-a-record"), b"x").unwrap();
    let e = s.check().unwrap_err();
    assert_eq!((e.errno(), e.op()), (crate::Errno::EBADMSG, "Session::check"));
    assert!(e.cause().contains("is not a session record"), "{e}");
    fs::remove_file(tmp.path().join("jobs.sessions/not-a-record")).unwrap();
    s.repair_counter(1000).unwrap();
    assert_eq!(s.make_new_ids(1).unwrap(), [1000]);
    s.repair_counter(10).unwrap();
    assert_eq!(s.make_new_ids(1).unwrap(), [1001], "never lowered");
    // A missing counter is ENOENT until repaired, never recreated from zero; repair
    // never goes below what this session saw issued.
    fs::remove_file(tmp.path().join("jobs.counter")).unwrap();
    assert!(s.check().unwrap_err().cause().contains("is missing"));
    s.repair_counter(0).unwrap();
    assert_eq!(s.make_new_ids(1).unwrap(), [1002]);
    s.check().unwrap();
}

#[test]
fn maintenance_a_counter_that_the_repository_could_not_have_made_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let counter = tmp.path().join("jobs.counter");
    // A hard link of another file at the counter's name: never written through.
    let outside = tmp.path().join("outside");
    fs::copy(&counter, &outside).unwrap();
    fs::remove_file(&counter).unwrap();
    fs::hard_link(&outside, &counter).unwrap();
    let before = fs::read(&outside).unwrap();
    let e = s.make_new_ids(1).unwrap_err();
    assert_eq!(e.errno(), crate::Errno::EBADMSG, "{e}");
    assert!(e.cause().contains("2 links"), "{e}");
    // repair replaces the name by rename: the other file stays as it was.
    s.repair_counter(0).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), before);
    assert_eq!(fs::symlink_metadata(&counter).unwrap().nlink(), 1);
    s.make_new_ids(1).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), before);
    // A socket: EBADMSG, not ENXIO.
    fs::remove_file(&counter).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&counter).unwrap();
    let e = s.make_new_ids(1).unwrap_err();
    assert_eq!(e.errno(), crate::Errno::EBADMSG, "{e}");
}

#[test]
fn maintenance_a_new_repository_adopts_only_a_counter_it_could_have_made() {
    let tmp = tempfile::tempdir().unwrap();
    // Planted before the repository exists: a hard link of someone's file.
    let planted = tmp.path().join("planted");
    let outside = tmp.path().join("outside");
    fs::create_dir(&planted).unwrap();
    fs::write(&outside, super::counter::initial(5)).unwrap();
    fs::hard_link(&outside, planted.join("jobs.counter")).unwrap();
    let e = Session::open(&planted, Some(NAME), None).expect_err("refused");
    assert_eq!((e.errno(), e.op()), (crate::Errno::EBADMSG, "Session::open"), "{e}");
    assert_eq!(fs::read(&outside).unwrap(), super::counter::initial(5), "left alone");
    assert!(!planted.join("jobs.ids").exists());
    // A crash of an earlier opener between linking the counter and removing its
    // temporary name: the leftover is removed, the counter kept.
    let crashed = tmp.path().join("crashed");
    fs::create_dir(&crashed).unwrap();
    let temp = crashed.join(".jobs.counter.0123456789abcdef");
    fs::write(&temp, super::counter::initial(0)).unwrap();
    fs::hard_link(&temp, crashed.join("jobs.counter")).unwrap();
    let s = open(&crashed);
    assert!(!temp.exists(), "the leftover was removed");
    assert_eq!(fs::symlink_metadata(crashed.join("jobs.counter")).unwrap().nlink(), 1);
    assert_eq!(s.make_new_ids(1).unwrap(), [0]);
}

#[test]
fn idlock_claims_take_ours_skip_held_and_never_adopt_a_used_claim_number() {
    let tmp = tempfile::tempdir().unwrap();
    let _s = open(tmp.path());
    let repo = repo(tmp.path());
    let sid = "00000000000000f1";
    let mut claims = idlock::Claims::default();
    let Take::Ours(first) = claims.take(&repo, sid, 1).unwrap() else { panic!("held") };
    assert_eq!(claims.take(&repo, sid, 1).unwrap(), Take::Ours(first), "linking our own lock again is ours");
    plant_recordless_locks(tmp.path(), "00000000000000f2", &[2]);
    assert_eq!(claims.take(&repo, sid, 2).unwrap(), Take::Held);
    // A used claim number is never adopted: the next one is made.
    fs::write(repo.claim_path("00000000000000f3", 0), b"").unwrap();
    fs::write(repo.claim_path("00000000000000f3", 1), b"someone's").unwrap();
    let (claim, n) = idlock::create_claim(&repo, "00000000000000f3", 0).unwrap();
    assert_eq!(n, 2);
    assert!(!repo.claim_path("00000000000000f3", 0).exists(), "empty litter under its own name removed");
    assert_eq!(idlock::holder_of(&claim.path).unwrap().as_deref(), Some("00000000000000f3"));
}

#[test]
fn repository_exists_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    assert_eq!(super::repository_exists(&repo, Some(NAME)), Ok(false));
    assert!(!repo.exists(), "asking made nothing");
    open(&repo).close().unwrap();
    assert_eq!(super::repository_exists(&repo, Some(NAME)), Ok(true));
    assert_eq!(super::repository_exists(&repo, None), Ok(false), "another namespace");
    // A symlink where the ID directory should be is not a repository.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(ids_dir(&repo), other.join(format!("{NAME}.ids"))).unwrap();
    assert_eq!(super::repository_exists(&other, Some(NAME)), Ok(false));
    assert_eq!(super::repository_exists(&repo, Some("a/b")).unwrap_err().errno(), crate::Errno::EINVAL);
}
