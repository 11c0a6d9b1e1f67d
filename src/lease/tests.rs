//! Leases within one process, against holders planted on disk as another host's or a
//! dead process's files would be (the C tests and the multi-host rig cover real peers).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::lockfile::LOCK_SUFFIX;

const LEASE: Duration = Duration::from_millis(200);

fn options(lease: Duration, keepalive: bool) -> Options {
    Options { message: b"test".to_vec(), lease, keepalive, shared: false }
}

fn lock_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(LOCK_SUFFIX);
    s.into()
}

/// A lease of another holder, planted: its claim under token epoch `epoch`, linked as
/// the lock file. Returns the claim digits.
fn plant(p: &Path, host: &str, pid: i32, epoch: u64) -> String {
    let claim = crate::random::unpredictable_hex();
    let terms = LeaseTerms { ms: LEASE.as_millis() as u32, claim: claim.clone(), shared: false };
    let r = Record { host: host.into(), pid, message: b"planted".to_vec(), start_time: None, lease: Some(terms) };
    let dir = p.parent().unwrap();
    let t = token::path(dir, &claim, epoch);
    fs::write(&t, r.to_bytes()).unwrap();
    fs::hard_link(&t, lock_of(p)).unwrap();
    claim
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn acquire_release_and_reacquire_with_the_parked_token() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let l = acquire(&p, &options(LEASE, true), Some(Duration::ZERO)).unwrap();
    let rec = crate::lockfile::read_record(&p).unwrap();
    let terms = rec.lease.clone().expect("a lease record");
    assert_eq!(terms.ms, 200);
    assert!(fs::symlink_metadata(token::path(d.path(), &terms.claim, 1)).is_ok(), "{:?}", names(d.path()));
    l.unlock().unwrap();
    assert!(fs::symlink_metadata(lock_of(&p)).is_err());
    // Parked under epoch 2; the next acquisition links it as it is.
    assert!(fs::symlink_metadata(token::path(d.path(), &terms.claim, 2)).is_ok(), "{:?}", names(d.path()));
    let l = acquire(&p, &options(LEASE, true), Some(Duration::ZERO)).unwrap();
    assert_eq!(crate::lockfile::read_record(&p).unwrap().lease.unwrap().claim, terms.claim);
    l.unlock().unwrap();
}

#[test]
fn keepalive_renews_and_is_held_stays_ok() {
    // A lease of 1 s: is_held is checked all along, and half a lease minus a third of one
    // (167 ms) is what a late wake-up of the keep-alive thread may cost on a loaded machine.
    let lease = Duration::from_secs(1);
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let l = acquire(&p, &options(lease, true), Some(Duration::ZERO)).unwrap();
    let start = Instant::now();
    while start.elapsed() < lease * 2 {
        l.is_held().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let claim = crate::lockfile::read_record(&p).unwrap().lease.unwrap().claim;
    assert!(fs::symlink_metadata(token::path(d.path(), &claim, 1)).is_err(), "renewed: epoch 1 moved on");
    l.unlock().unwrap();
}

#[test]
fn without_keepalive_is_held_times_out_past_half_the_lease_and_renew_cures_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let l = acquire(&p, &options(LEASE, false), Some(Duration::ZERO)).unwrap();
    l.is_held().unwrap();
    std::thread::sleep(LEASE / 2 + Duration::from_millis(20));
    assert_eq!(l.is_held().unwrap_err().errno(), crate::Errno::ETIMEDOUT);
    l.renew().unwrap();
    l.is_held().unwrap();
    l.unlock().unwrap();
}

#[test]
fn another_hosts_unrenewed_lease_is_broken_after_the_lease_never_before() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let claim = plant(&p, "elsewhere", 4242, 7);
    let start = Instant::now();
    let l = acquire(&p, &options(LEASE, true), Some(LEASE * 10)).unwrap();
    let took = start.elapsed();
    assert!(took >= LEASE, "broken after {took:?}, before the lease of {LEASE:?}");
    // The broken holder's files are gone; a note says who broke it.
    let left = names(d.path());
    assert!(!left.iter().any(|n| n.contains(&claim)), "{left:?}");
    assert!(note::why_broken(&lock_of(&p), &claim).contains("not renewed for"));
    l.unlock().unwrap();
}

#[test]
fn a_lease_renewed_in_time_is_never_broken() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let claim = plant(&p, "elsewhere", 4242, 1);
    let dir = d.path().to_path_buf();
    let file = crate::fsops::id_of(&lock_of(&p)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (stop, claim) = (stop.clone(), claim.clone());
        std::thread::spawn(move || {
            let mut epoch = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(LEASE / 3);
                assert_eq!(token::advance(&dir, &claim, epoch, file).unwrap(), token::Moved::Done);
                epoch += 1;
            }
        })
    };
    let err = acquire(&p, &options(LEASE, true), Some(LEASE * 4)).unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renewer.join().unwrap();
    assert_eq!(err.errno(), crate::Errno::ETIMEDOUT, "{err}");
    assert_eq!(crate::lockfile::read_record(&p).unwrap().lease.unwrap().claim, claim);
}

#[test]
fn a_dead_holder_of_this_host_is_cleared_at_once() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let me = crate::process::this_process();
    plant(&p, &String::from_utf8_lossy(&me.host), pid, 3);
    let start = Instant::now();
    let l = acquire(&p, &options(LEASE, true), Some(LEASE * 10)).unwrap();
    assert!(start.elapsed() < LEASE, "a dead holder waited for: {:?}", start.elapsed());
    l.unlock().unwrap();
}

#[test]
fn a_broken_holder_learns_it_and_removes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let l = acquire(&p, &options(LEASE, false), Some(Duration::ZERO)).unwrap();
    break_lock(&p, "maintenance").unwrap();
    assert_eq!(l.is_held().unwrap_err().errno(), crate::Errno::ENOLCK);
    // A successor takes it; the broken holder's renew and unlock leave it alone.
    let successor = plant(&p, "elsewhere", 99, 1);
    let err = l.renew().unwrap_err();
    assert_eq!(err.errno(), crate::Errno::ENOLCK);
    assert!(err.to_string().contains("maintenance"), "{err}");
    assert_eq!(l.unlock().unwrap_err().errno(), crate::Errno::ENOLCK);
    assert_eq!(crate::lockfile::read_record(&p).unwrap().lease.unwrap().claim, successor);
}

#[test]
fn fencing_tokens_grow_across_acquisitions_and_stay_within_one() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let mut last = 0;
    for _ in 0..3 {
        let l = acquire(&p, &options(LEASE, true), Some(Duration::ZERO)).unwrap();
        let t = l.fencing_token().unwrap();
        assert!(t > last, "{t} after {last}");
        assert_eq!(l.fencing_token().unwrap(), t);
        last = t;
        l.unlock().unwrap();
        let plain = crate::lockfile::create(&p, b"plain").unwrap();
        let t = plain.fencing_token().unwrap();
        assert!(t > last);
        last = t;
        plain.unlock().unwrap();
    }
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().fencing_token, last);
}

#[test]
fn bad_options_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    for lease in [Duration::from_millis(99), MAX_LEASE + Duration::from_millis(1)] {
        assert_eq!(acquire(&p, &options(lease, true), None).unwrap_err().errno(), crate::Errno::EINVAL);
    }
    let shared = Options { shared: true, ..options(Duration::ZERO, true) };
    assert_eq!(acquire(&p, &shared, None).unwrap_err().errno(), crate::Errno::EINVAL);
    assert!(names(d.path()).is_empty());
}

#[test]
fn inspect_tells_free_caller_held_and_expired() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().state, State::Free);
    let l = acquire(&p, &options(LEASE, true), Some(Duration::ZERO)).unwrap();
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().state, State::HeldByCaller);
    l.unlock().unwrap();
    plant(&p, "elsewhere", 7, 1);
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().state, State::Held);
    assert_eq!(inspect(&p, LEASE / 4).unwrap().state, State::Held);
    assert_eq!(inspect(&p, LEASE * 2).unwrap().state, State::Expired);
}

#[test]
fn plain_locks_meet_leases_and_back() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    // A plain lock of another host is waited for, never broken, by a lease acquirer.
    let other = Record { host: b"elsewhere".to_vec(), pid: 5, message: vec![], start_time: None, lease: None };
    fs::write(lock_of(&p), other.to_bytes()).unwrap();
    assert_eq!(acquire(&p, &options(LEASE, true), Some(LEASE * 2)).unwrap_err().errno(), crate::Errno::ETIMEDOUT);
    break_lock(&p, "operator").unwrap();
    // A plain create waits for a lease held here.
    let l = acquire(&p, &options(LEASE, true), Some(Duration::ZERO)).unwrap();
    assert_eq!(crate::lockfile::create(&p, b"plain").unwrap_err().errno(), crate::Errno::EDEADLK);
    l.unlock().unwrap();
}

// ---- shared locks ----------------------------------------------------------------

fn shared_options(lease: Duration) -> Options {
    Options { shared: true, ..options(lease, true) }
}

/// A shared group of another host with one member that never renews: returns (group,
/// member) claim digits.
fn plant_group(p: &Path) -> (String, String) {
    let dir = p.parent().unwrap();
    let record = |claim: &str| {
        let terms = LeaseTerms { ms: LEASE.as_millis() as u32, claim: claim.to_string(), shared: true };
        Record { host: b"elsewhere".to_vec(), pid: 77, message: b"planted".to_vec(), start_time: None, lease: Some(terms) }.to_bytes()
    };
    let (group, member) = (crate::random::unpredictable_hex(), crate::random::unpredictable_hex());
    let g = token::path(dir, &group, 1);
    fs::write(&g, record(&group)).unwrap();
    let m = token::path(dir, &member, 1);
    fs::write(&m, record(&member)).unwrap();
    fs::hard_link(&m, shared::membership(dir, &group, &member)).unwrap();
    fs::hard_link(&g, lock_of(p)).unwrap();
    (group, member)
}

#[test]
fn a_shared_hold_alone_makes_and_ends_its_group() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let l = acquire(&p, &shared_options(LEASE), Some(Duration::ZERO)).unwrap();
    let info = inspect(&p, Duration::ZERO).unwrap();
    assert_eq!((info.state, info.shared_holders), (State::HeldByCaller, 1));
    let group = info.record.unwrap().lease.unwrap();
    assert!(group.shared);
    l.is_held().unwrap();
    l.unlock().unwrap();
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().state, State::Free);
    // Left: the parked tokens of our claim and of the turnstile's; the group's files are gone.
    let left = names(d.path());
    assert!(left.len() == 2 && !left.iter().any(|n| n.contains(&group.claim)), "{left:?}");
}

#[test]
fn a_shared_hold_joins_another_hosts_group_and_leaves_it_standing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let (group, member) = plant_group(&p);
    let l = acquire(&p, &shared_options(Duration::from_secs(10)), Some(Duration::ZERO)).unwrap();
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().shared_holders, 2);
    l.unlock().unwrap();
    let info = inspect(&p, Duration::ZERO).unwrap();
    assert_eq!((info.state, info.shared_holders), (State::Held, 1));
    assert!(fs::symlink_metadata(shared::membership(d.path(), &group, &member)).is_ok());
}

#[test]
fn an_exclusive_acquirer_prunes_a_shared_holder_that_stopped_renewing_after_its_lease() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let (group, member) = plant_group(&p);
    let start = Instant::now();
    let l = acquire(&p, &options(LEASE, true), Some(LEASE * 10)).unwrap();
    assert!(start.elapsed() >= LEASE, "pruned after {:?}", start.elapsed());
    let left = names(d.path());
    assert!(!left.iter().any(|n| n.contains(&group) || n.contains(&member)), "{left:?}");
    // The turnstile was let go with the acquisition.
    assert_eq!(inspect(shared::turnstile_of(&p), Duration::ZERO).unwrap().state, State::Free);
    l.unlock().unwrap();
}

#[test]
fn an_exclusive_acquirer_prunes_a_membership_whose_token_is_gone() {
    // A member whose leave failed half way (a lost reply on NFS) and whose process then
    // exited, removing its token: its membership name is the inode's last name. Before,
    // such a name counted as a live holder forever and every writer timed out.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let (group, member) = plant_group(&p);
    fs::remove_file(token::path(d.path(), &member, 1)).unwrap();
    let l = acquire(&p, &options(LEASE, true), Some(LEASE * 10)).unwrap();
    let left = names(d.path());
    assert!(!left.iter().any(|n| n.contains(&group) || n.contains(&member)), "{left:?}");
    l.unlock().unwrap();
}

#[test]
fn a_membership_with_its_token_is_never_an_orphan() {
    // The same planted member with its token: a writer that does not wait finds the lock
    // shared (the member's lease is watched first), and nothing of the member goes.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let (_, member) = plant_group(&p);
    let err = acquire(&p, &options(LEASE, true), Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.errno(), crate::Errno::EAGAIN, "{err}");
    assert!(fs::symlink_metadata(token::path(d.path(), &member, 1)).is_ok());
}

#[test]
fn a_renewing_shared_holder_keeps_an_exclusive_acquirer_out() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let (_, member) = plant_group(&p);
    let dir = d.path().to_path_buf();
    let file = crate::fsops::id_of(&token::path(&dir, &member, 1)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (stop, member) = (stop.clone(), member.clone());
        std::thread::spawn(move || {
            let mut epoch = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(LEASE / 3);
                assert_eq!(token::advance(&dir, &member, epoch, file).unwrap(), token::Moved::Done);
                epoch += 1;
            }
        })
    };
    let err = acquire(&p, &options(LEASE, true), Some(LEASE * 4)).unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renewer.join().unwrap();
    assert_eq!(err.errno(), crate::Errno::ETIMEDOUT, "{err}");
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().shared_holders, 1);
}

#[test]
fn a_waiting_writer_keeps_new_shared_holders_out() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    plant_group(&p);
    // The writer waits (the planted member has a lease of 200 ms and renews never: it
    // holds the turnstile meanwhile); a reader arriving then waits too.
    let writer = {
        let p = p.clone();
        std::thread::spawn(move || acquire(&p, &options(Duration::from_secs(10), true), Some(Duration::from_secs(5))).map(|l| l.unlock()))
    };
    let start = Instant::now();
    while inspect(shared::turnstile_of(&p), Duration::ZERO).unwrap().state == State::Free {
        assert!(start.elapsed() < Duration::from_secs(5), "the writer never took the turnstile");
        std::thread::sleep(Duration::from_millis(2));
    }
    let reader = acquire(&p, &shared_options(LEASE), Some(Duration::ZERO));
    assert_eq!(reader.unwrap_err().errno(), crate::Errno::EAGAIN);
    writer.join().unwrap().unwrap().unwrap();
}

#[test]
fn shared_locks_refuse_unlock_path_and_break_ends_them() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let l = acquire(&p, &shared_options(LEASE), Some(Duration::ZERO)).unwrap();
    assert_eq!(crate::lockfile::unlock_path(&p).unwrap_err().errno(), crate::Errno::EPERM);
    assert_eq!(crate::lockfile::create(&p, b"plain").unwrap_err().errno(), crate::Errno::EDEADLK);
    break_lock(&p, "maintenance").unwrap();
    assert_eq!(inspect(&p, Duration::ZERO).unwrap().state, State::Free);
    assert_eq!(l.renew().unwrap_err().errno(), crate::Errno::ENOLCK);
    assert_eq!(l.unlock().unwrap_err().errno(), crate::Errno::ENOLCK);
}
