//! The manager's core, both backends, within one process (the C tests in tests/manager.rs
//! cover processes, fork, crashes and hostile segments).

use std::time::Duration;

use crate::Errno;

use super::{Capacity, Locked, Manager};

/// A segment name of this test process, removed when dropped.
struct Segment(String);

impl Segment {
    fn new(tag: &str) -> Segment {
        Segment(format!("/nfslock-unit-{}-{tag}", std::process::id()))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("{}{}", super::SHM_DIR, self.0));
    }
}

fn both(tag: &str, check: impl Fn(&Manager)) {
    let seg = Segment::new(tag);
    let m = Manager::create_shm(&seg.0, 40).unwrap();
    check(&m);
    m.close().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::create_dir(dir.path().join("m")).unwrap();
    check(&m);
    m.close().unwrap();
}

#[test]
fn allocation_hands_out_the_lowest_free_id_and_never_one_twice() {
    both("alloc", |m| {
        assert_eq!((m.allocate().unwrap(), m.allocate().unwrap(), m.allocate().unwrap()), (0, 1, 2));
        m.free(1).unwrap();
        assert_eq!(m.free(1).unwrap_err().errno(), Errno::ENOENT);
        assert_eq!(m.allocate().unwrap(), 1);
        assert_eq!(m.allocate_id(2).unwrap_err().errno(), Errno::EEXIST);
        m.allocate_id(7).unwrap();
        assert_eq!(m.allocated().unwrap(), vec![0, 1, 2, 7]);
        m.free_all().unwrap();
        assert!(m.allocated().unwrap().is_empty());
        assert_eq!(m.allocate().unwrap(), 0);
    });
}

#[test]
fn a_segment_has_whole_groups_and_runs_out() {
    let seg = Segment::new("full");
    let m = Manager::create_shm(&seg.0, 33).unwrap();
    assert_eq!(m.capacity(), Capacity { num_locks: 64, unlimited: false });
    assert_eq!(Manager::create_shm(&seg.0, 64).unwrap_err().errno(), Errno::EEXIST);
    assert_eq!(Manager::open_shm(&seg.0, 65).unwrap_err().errno(), Errno::ERANGE);
    let other = Manager::open_shm(&seg.0, 64).unwrap();
    for want in 0..64 {
        assert_eq!(other.allocate().unwrap(), want);
    }
    assert_eq!(m.allocate().unwrap_err().errno(), Errno::ENOSPC);
    assert_eq!(m.available().unwrap().num_locks, 0);
    assert_eq!(m.allocate_id(64).unwrap_err().errno(), Errno::ERANGE);
    assert_eq!(m.lock(64).unwrap_err().errno(), Errno::ERANGE);
    other.close().unwrap();
    m.close().unwrap();
    Manager::destroy_shm(&seg.0).unwrap();
    assert_eq!(Manager::open_shm(&seg.0, 64).unwrap_err().errno(), Errno::ENOENT);
}

#[test]
fn locks_belong_to_a_thread_and_freed_ids_stay_usable() {
    both("threads", |m| {
        let id = m.allocate().unwrap();
        m.free(id).unwrap();
        assert_eq!(m.lock(id).unwrap(), Locked::Clean);
        assert_eq!(m.lock(id).unwrap_err().errno(), Errno::EDEADLK);
        assert_eq!(m.locks_held().unwrap(), vec![id]);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(m.unlock(id).unwrap_err().errno(), Errno::EPERM);
                assert!(matches!(m.timedlock(id, Some(Duration::ZERO)).unwrap_err().errno(), Errno::EBUSY));
                assert_eq!(m.timedlock(id, Some(Duration::from_millis(30))).unwrap_err().errno(), Errno::ETIMEDOUT);
            });
        });
        m.unlock(id).unwrap();
        assert_eq!(m.unlock(id).unwrap_err().errno(), Errno::EPERM);
        assert!(m.locks_held().unwrap().is_empty());
    });
}

#[test]
fn a_thread_that_dies_holding_a_segment_lock_hands_it_on_as_owner_dead() {
    let seg = Segment::new("dead");
    let m = Manager::create_shm(&seg.0, 32).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(m.lock(3).unwrap(), Locked::Clean));
    });
    assert_eq!(m.locks_held().unwrap(), vec![3], "a dead holder's lock counts as held until taken");
    assert_eq!(m.lock(3).unwrap(), Locked::PreviousHolderDied);
    m.unlock(3).unwrap();
    assert!(m.locks_held().unwrap().is_empty());
    assert_eq!(m.lock(3).unwrap(), Locked::Clean);
    m.close().unwrap();
}

#[test]
fn close_releases_the_callers_locks_and_refuses_calls_after() {
    let seg = Segment::new("close");
    let m = Manager::create_shm(&seg.0, 32).unwrap();
    m.lock(5).unwrap();
    m.shut().unwrap();
    assert_eq!(m.lock(5).unwrap_err().errno(), Errno::EINVAL);
    let again = Manager::open_shm(&seg.0, 32).unwrap();
    assert_eq!(again.timedlock(5, Some(Duration::ZERO)).unwrap(), Locked::Clean);
    again.close().unwrap();
}

#[test]
fn a_directory_that_is_not_a_manager_is_ebadmsg() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(Manager::open_dir(dir.path().join("none")).unwrap_err().errno(), Errno::ENOENT);
    assert_eq!(Manager::open_dir(dir.path()).unwrap_err().errno(), Errno::EBADMSG);
    let m = Manager::create_dir(dir.path().join("m")).unwrap();
    assert_eq!(Manager::create_dir(dir.path().join("m")).unwrap_err().errno(), Errno::EEXIST);
    m.close().unwrap();
    std::fs::write(dir.path().join("m/nfslock-manager"), "nfslock-manager 2\n").unwrap();
    let e = Manager::open_dir(dir.path().join("m")).unwrap_err();
    assert_eq!(e.errno(), Errno::EBADMSG);
    assert!(e.to_string().contains("version 2"), "{e}");
}

#[test]
fn directory_locks_can_be_leases() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::create_dir(dir.path().join("m")).unwrap();
    assert_eq!(m.set_lease(Duration::from_millis(5)).unwrap_err().errno(), Errno::EINVAL);
    m.set_lease(Duration::from_secs(5)).unwrap();
    m.lock(9).unwrap();
    let record = crate::lockfile::read_record(dir.path().join("m/locks/9")).unwrap();
    assert!(record.lease.is_some(), "the lock file carries lease terms");
    m.close().unwrap();
    assert!(!dir.path().join("m/locks/9.nfs_lock").exists(), "close released it");
}
