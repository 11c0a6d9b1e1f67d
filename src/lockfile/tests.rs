//! Unit tests of the acquire and release path, the registry and the holder reader.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Errno;

use super::holder::{self, Cleared, Holder, ReadError};
use super::registry::{self, state, MAX_CLAIMS};
use super::*;
use crate::record::Record;

/// The registry is process-wide: tests that count or evict kept claims run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("nfslock-unit-").tempdir().unwrap()
}

fn claims_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".nfslock-"))
        .collect();
    v.sort();
    v
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

/// A record of a process of this host that is certainly gone.
fn dead_record(message: &str) -> Vec<u8> {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let me = process::this_process();
    Record { host: me.host.clone(), pid, message: message.as_bytes().to_vec(), start_time: me.start_time, lease: None }.to_bytes()
}

#[test]
fn the_steady_state_relinks_the_same_claim_and_never_writes_p() {
    let d = scratch();
    let p = d.path().join("a");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let first = create(&p, b"m").unwrap();
    let claim = ino(first.lock_file());
    first.unlock().unwrap();
    let second = create(&p, b"m").unwrap();
    assert_eq!(ino(second.lock_file()), claim, "the kept claim is linked again");
    assert!(!p.exists(), "P is never written");
    second.unlock().unwrap();
    assert_eq!(claims_in(d.path()).len(), 1);
}

#[test]
fn the_same_thread_gets_edeadlk_under_every_spelling() {
    let d = scratch();
    fs::create_dir(d.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
    let held = create(d.path().join("a"), b"m").unwrap();
    for spelling in ["a", "sub/../a", "link/a", "./a"] {
        let err = create(d.path().join(spelling), b"m").unwrap_err();
        assert_eq!(err.errno(), Errno::EDEADLK, "{spelling}: {err}");
        let err = blocking_create(d.path().join(spelling), b"m", None).unwrap_err();
        assert_eq!(err.errno(), Errno::EDEADLK, "{spelling}: {err}");
    }
    // Another thread is told EAGAIN, whatever the spelling.
    let other = d.path().join("link/a");
    let err = std::thread::spawn(move || create(other, b"m").unwrap_err()).join().unwrap();
    assert_eq!(err.errno(), Errno::EAGAIN, "{err}");
    held.unlock().unwrap();
    create(d.path().join("sub/../a"), b"m").unwrap().unlock().unwrap();
}

#[test]
fn paths_naming_a_directory_are_einval() {
    let d = scratch();
    for bad in ["a/", "a/.", "a/..", "."] {
        let err = create(d.path().join(bad), b"m").unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL, "{bad}: {err}");
    }
}

#[test]
fn an_empty_lock_file_is_held_and_never_cleared() {
    let d = scratch();
    let p = d.path().join("a");
    let lock = d.path().join("a.nfs_lock");
    fs::write(&lock, b"").unwrap();
    assert_eq!(create(&p, b"m").unwrap_err().errno(), Errno::EAGAIN);
    assert_eq!(unlock_path(&p).unwrap_err().errno(), Errno::EAGAIN);
    assert_eq!(read_record(&p).unwrap_err().errno(), Errno::EBADMSG);
    let err = blocking_create(&p, b"m", Some(Duration::from_millis(300))).unwrap_err();
    assert_eq!(err.errno(), Errno::ETIMEDOUT, "{err}");
    assert_eq!(fs::read(&lock).unwrap(), b"");
}

#[test]
fn holder_read_tells_free_held_unwritten_and_bad_apart() {
    let d = scratch();
    let p = d.path().join("a");
    let lock = d.path().join("a.nfs_lock");
    assert!(matches!(holder::read(&lock, &p), Ok(Holder::Free)));
    fs::write(&lock, dead_record("x")).unwrap();
    assert!(matches!(holder::read(&lock, &p), Ok(Holder::Held { .. })));
    fs::write(&lock, b"").unwrap();
    assert!(matches!(holder::read(&lock, &p), Ok(Holder::Unwritten { .. })));
    fs::write(&lock, b"((host h)(pid").unwrap();
    assert!(matches!(holder::read(&lock, &p), Err(ReadError::Bad(_))));
    // The same half-written bytes through P's inode: Core's v1 between link and write.
    fs::remove_file(&lock).unwrap();
    fs::write(&p, b"((host h)(pid").unwrap();
    fs::hard_link(&p, &lock).unwrap();
    assert!(matches!(holder::read(&lock, &p), Ok(Holder::Unwritten { .. })));
    fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &lock).unwrap();
    assert!(matches!(holder::read(&lock, &p), Err(ReadError::Symlink)));
    fs::remove_file(&lock).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(&lock).unwrap();
    assert!(matches!(holder::read(&lock, &p), Err(ReadError::Bad(_))));
}

#[test]
fn clearing_a_dead_holder_removes_a_p_with_a_record_and_leaves_other_p_alone() {
    let d = scratch();
    let p = d.path().join("a");
    let lock = d.path().join("a.nfs_lock");
    let dead = dead_record("dead");
    let record = Record::parse(&dead).unwrap();

    // Core v2: P holds a copy of the dead holder's record.
    fs::write(&lock, &dead).unwrap();
    fs::write(&p, &dead).unwrap();
    let file = fsops::id_of(&lock).unwrap();
    assert_eq!(holder::clear_dead(&lock, &p, file, &record), Ok(Cleared::Gone));
    assert!(!lock.exists() && !p.exists());

    // Core v1: P is the dead lock itself.
    fs::write(&p, &dead).unwrap();
    fs::hard_link(&p, &lock).unwrap();
    let file = fsops::id_of(&lock).unwrap();
    assert_eq!(holder::clear_dead(&lock, &p, file, &record), Ok(Cleared::Gone));
    assert!(!lock.exists() && !p.exists());

    // The caller's own file at P is not a record: left alone.
    fs::write(&lock, &dead).unwrap();
    fs::write(&p, b"the caller's data").unwrap();
    let file = fsops::id_of(&lock).unwrap();
    assert_eq!(holder::clear_dead(&lock, &p, file, &record), Ok(Cleared::Gone));
    assert!(!lock.exists());
    assert_eq!(fs::read(&p).unwrap(), b"the caller's data");
}

#[test]
fn a_lock_taken_after_the_judgement_is_never_cleared() {
    let d = scratch();
    let p = d.path().join("a");
    let lock = d.path().join("a.nfs_lock");
    let dead = dead_record("dead");
    fs::write(&lock, &dead).unwrap();
    let judged = fsops::id_of(&lock).unwrap();
    // Someone clears it and takes the lock before our clear runs.
    fs::remove_file(&lock).unwrap();
    let live = create(&p, b"live").unwrap();
    assert_eq!(holder::clear_dead(&lock, &p, judged, &Record::parse(&dead).unwrap()), Ok(Cleared::Busy));
    assert!(lock.exists());
    live.unlock().unwrap();
}

#[test]
fn the_sweep_removes_dead_and_unwritten_claims_only() {
    let d = scratch();
    let dead_claim = d.path().join(".nfslock-00000000000000aa");
    let empty_claim = d.path().join(".nfslock-00000000000000bb");
    let linked_claim = d.path().join(".nfslock-00000000000000cc");
    let not_a_claim = d.path().join(".nfslock-zz");
    fs::write(&dead_claim, dead_record("dead")).unwrap();
    fs::write(&empty_claim, b"").unwrap();
    fs::write(&linked_claim, b"").unwrap();
    fs::hard_link(&linked_claim, d.path().join("x.nfs_lock")).unwrap();
    fs::write(&not_a_claim, b"").unwrap();
    let live = create(d.path().join("a"), b"live").unwrap();
    claim::sweep_orphans(d.path(), &process::this_process().host);
    assert!(!dead_claim.exists() && !empty_claim.exists());
    assert!(linked_claim.exists(), "a claim linked elsewhere is not an orphan");
    assert!(not_a_claim.exists());
    assert_eq!(claims_in(d.path()).len(), 3, "the linked one, ours and the misnamed one stay: {:?}", claims_in(d.path()));
    live.unlock().unwrap();
}

#[test]
fn claims_of_paths_not_held_are_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = scratch();
    let held: Vec<Lock> = (0..3).map(|i| create(d.path().join(format!("held{i}")), b"m").unwrap()).collect();
    for i in 0..40 {
        create(d.path().join(format!("p{i}")), b"m").unwrap().unlock().unwrap();
        let unheld = state().unheld_claims();
        assert!(unheld <= MAX_CLAIMS, "{unheld} claims kept for paths not held");
    }
    // The claims of held locks were never given up: their lock files still name them.
    for lock in &held {
        assert_eq!(fs::symlink_metadata(lock.lock_file()).unwrap().nlink(), 2);
    }
    assert!(claims_in(d.path()).len() <= MAX_CLAIMS + held.len());
    for lock in held {
        lock.unlock().unwrap();
    }
}

#[test]
fn a_lock_file_that_gets_its_record_is_waited_for_as_held_past_the_patience() {
    // Seen empty once (Core v1 between link and write), then written in place: the wait
    // goes on as for any holder and ends in ETIMEDOUT, never EBADMSG.
    let d = scratch();
    let p = d.path().join("a");
    let lock = d.path().join("a.nfs_lock");
    fs::write(&lock, b"").unwrap();
    let waiter = {
        let p = p.clone();
        std::thread::spawn(move || blocking_create(&p, b"waiter", Some(UNWRITTEN_PATIENCE + Duration::from_millis(1500))).unwrap_err())
    };
    std::thread::sleep(Duration::from_millis(300));
    let record = process::this_process().record(b"core v1 holder").to_bytes();
    fs::OpenOptions::new().write(true).open(&lock).and_then(|mut f| std::io::Write::write_all(&mut f, &record)).unwrap();
    let err = waiter.join().unwrap();
    assert_eq!(err.errno(), Errno::ETIMEDOUT, "{err}");
}

#[test]
fn one_lock_is_removed_by_one_thread_at_a_time() {
    // Review finding: unlock in one thread and unlock_path in another could both pass
    // their checks; a third thread relinking the path's shared claim in between then
    // had its new lock removed by the slower remover. While one removes, the other is
    // told so and removes nothing.
    let d = scratch();
    let p = d.path().join("a");
    let lock = create(&p, b"m").unwrap();
    assert!(state().begin_release(&lock.target.key, lock.token), "the unlock starts");
    let err = std::thread::spawn({
        let p = p.clone();
        move || unlock_path(&p).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(err.errno(), Errno::EAGAIN, "{err}");
    assert!(lock.lock_file().exists(), "unlock_path removed nothing");
    // Finish that release as unlock would, then the other way round: a hold that
    // unlock_path is removing cannot be unlocked.
    fs::remove_file(lock.lock_file()).unwrap();
    registry::end_hold(&lock.target.key, lock.token);
    std::mem::forget(lock);
    let fresh = create(&p, b"m").unwrap();
    let file = fsops::id_of(fresh.lock_file()).unwrap();
    assert!(matches!(state().begin_release_of_file(file), registry::Release::Started(..)));
    let err = fresh.unlock().unwrap_err();
    assert_eq!(err.errno(), Errno::ENOLCK, "{err}");
}

#[test]
fn errors_name_the_rust_function_and_the_path() {
    // A Rust caller reads the function it called, not the C name the FFI layer shows.
    let d = scratch();
    let p = d.path().join("missing-dir").join("a");
    let err = create(&p, b"m").unwrap_err();
    assert_eq!(err.errno(), Errno::ENOENT, "{err}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("lockfile::create {}", p.display())), "{text}");
    let err = unlock_path(d.path().join("b")).unwrap_err();
    assert!(err.to_string().starts_with("lockfile::unlock_path "), "{err}");
}
