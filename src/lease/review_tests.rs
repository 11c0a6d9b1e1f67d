//! Adversarial review of the exclusive lease protocol: interleavings of a holder and a
//! watcher (a waiter that may break) that the protocol must survive. Each test drives
//! the library's own code (acquire, unlock, Watch, token::break_hold) in the order a
//! real schedule can produce; a watcher that reads late (a paused process, a stale NFS
//! lookup of the lock file) is modelled by handing `Watch::look` the lock file's
//! identity it read a moment earlier, as `judge` does.

use std::fs;
use std::time::{Duration, Instant};

use super::watch::{Verdict, Watch};
use super::*;

fn options(lease: Duration, keepalive: bool) -> Options {
    Options { message: b"review".to_vec(), lease, keepalive, shared: false }
}

/// A holder releases and later re-takes its lease with the parked claim: the token it
/// parked at release is linked again under the same name. A watcher that saw that
/// parked name (just before the release's unlink of the lock file) and the same lock
/// inode again a while later has seen "no renewal" for the whole span, although the
/// second hold began inside it. It must not break the second hold while that hold's
/// holder is told it holds the lock safely (`is_held` Ok): that is two holders.
#[test]
fn a_reacquired_parked_token_is_not_broken_before_its_hold_is_a_lease_old() {
    let lease = Duration::from_millis(1000);
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("res");
    let t = Target::new("test", &p).unwrap();

    // The holder's first hold (renewal by hand: the schedule below is the test's).
    let first = acquire(&p, &options(lease, false), Some(Duration::ZERO)).unwrap();
    let record = crate::lockfile::read_record(&p).unwrap();
    let terms = record.lease.clone().unwrap();
    let file = fsops::id_of(&t.lock).unwrap();

    // The watcher reads the lock file (inode `file`) and starts watching its token.
    let mut w = Watch::start(&t, file, &terms).unwrap();
    assert!(matches!(w.look(&t, Some(file)).unwrap(), Verdict::Live(_)));

    // The holder releases: its token moves to the parked name, the lock file goes.
    first.unlock().unwrap();
    assert!(fs::symlink_metadata(&t.lock).is_err());
    // The watcher's look that read the lock file just before that unlink (still
    // `file`) now finds the token moved on: progress, seen at t0.
    assert!(matches!(w.look(&t, Some(file)).unwrap(), Verdict::Live(_)));
    let t0 = Instant::now();

    // The watcher is paused (or its lookups of the lock file stale) for most of a lease,
    // while the holder re-takes the lock with its parked claim: the same inode, the
    // same token name the watcher last saw.
    std::thread::sleep(lease * 85 / 100);
    let second = acquire(&p, &options(lease, false), Some(Duration::ZERO)).unwrap();
    assert_eq!(fsops::id_of(&t.lock), Ok(file), "the parked claim is linked again");
    second.is_held().expect("a fresh hold is safely held");

    // The watcher goes on watching, and breaks once it judges the lease expired.
    let mut broke_while_held = None;
    while t0.elapsed() < lease * 13 / 10 {
        match w.look(&t, None).unwrap() {
            Verdict::Live(_) => std::thread::sleep(Duration::from_millis(5)),
            Verdict::Ended => break,
            Verdict::Expired { from, epoch } => {
                let broke = token::break_hold(&t.dir, &t.lock, &from, &terms.claim, epoch, file).unwrap();
                let held = second.is_held();
                if broke == token::Broke::Removed {
                    broke_while_held = Some((t0.elapsed(), held));
                }
                break;
            }
        }
    }
    if let Some((at, held)) = &broke_while_held {
        assert!(
            held.is_err(),
            "the watcher removed the second hold's lock file {} ms after t0 (the hold began {} ms after t0), \
             and its holder is still told it holds the lock: two holders",
            at.as_millis(),
            (lease * 85 / 100).as_millis()
        );
    }
    let _ = second.unlock();
}
