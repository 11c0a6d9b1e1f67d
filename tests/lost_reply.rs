//! Lost NFS replies and other client faults: a retransmitted LINK reports EEXIST (or EIO),
//! a retransmitted REMOVE or RENAME ENOENT and a retransmitted exclusive CREATE EEXIST,
//! although the first request succeeded. The library must count those as success (by the
//! identity of its own file), and must still see a real EEXIST as "held". The faults come
//! from an LD_PRELOAD shim (tests/shims/lost_reply.c) in a child run of this same test
//! binary.
//!
//! Most modes were found by the multi-host rig (tests/multihost) and are kept here as
//! regression tests: the lost CREATE of a claim (it failed the create and left orphaned
//! claims; the lost RENAME of the `P` copy went with the copy itself), a transient EIO from lstat in
//! unlock (left the lock in place), a link refused with ENOENT while the claim exists (a
//! stale cached link count; reported as a missing directory), and ESTALE from fstat of a
//! lock removed by another client between open and fstat (reported as an error instead
//! of a lock that changed hands).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nfslock::lockfile;
use nfslock::session::Session;

#[path = "support/scratch.rs"]
mod scratch;
#[path = "support/shim.rs"]
mod shim;
use shim::build_shim;

const TEST: &str = "lost_replies_count_as_success";
const CHILD_ENV: &str = "NFSLOCK_LOST_REPLY_CHILD_DIR";
const CYCLES: usize = 100;
const SESSION_CALLS: usize = 20;

/// Runs in the child, under the shim.
fn child(dir: &Path) {
    let path = dir.join("p");
    let lock = dir.join("p.nfs_lock");
    let me = std::process::id() as i32;
    // Under FSTAT_ESTALE no lock file can be read (each looks removed once opened): only
    // the foreign lock below is examined.
    let cycles = if std::env::var_os("NFSLOCK_SHIM_FSTAT_ESTALE").is_some() { 0 } else { CYCLES };
    for i in 0..cycles {
        let held = if i % 2 == 0 {
            lockfile::create(&path, b"lost replies").expect("create succeeds despite the lost reply")
        } else {
            lockfile::blocking_create(&path, b"lost replies", Some(Duration::from_secs(5))).expect("blocking_create succeeds")
        };
        assert_eq!(lockfile::read_record(&path).expect("the lock file is ours").pid, me);
        held.unlock().expect("unlock succeeds despite the lost reply");
        assert!(fs::symlink_metadata(&lock).is_err(), "the lock file is gone after unlock");
    }
    // A real EEXIST must still mean "held": another host's lock, linked in place (by a
    // link the shim leaves alone, and an EEXIST that is real).
    let fstat_estale = cycles == 0;
    let modes_set: Vec<&str> = ALL_MODES.iter().copied().filter(|v| std::env::var_os(v).is_some()).collect();
    for var in ALL_MODES {
        if *var != "NFSLOCK_SHIM_FSTAT_ESTALE" {
            std::env::remove_var(var);
        }
    }
    let foreign = dir.join("foreign");
    fs::write(&foreign, b"((host other-host.invalid)(pid 4242)(message theirs))").unwrap();
    fs::hard_link(&foreign, &lock).unwrap();
    let err = lockfile::create(&path, b"").expect_err("another host holds it");
    assert_eq!(err.errno(), nfslock::Errno::EAGAIN, "{err}");
    assert_eq!(fs::read(&lock).unwrap(), fs::read(&foreign).unwrap(), "their lock is untouched");
    if fstat_estale {
        // Every fstat of it said it was gone: it counts as changing hands, never as free.
        assert!(err.to_string().contains("changed hands"), "{err}");
    }
    fs::remove_file(&lock).unwrap();
    fs::remove_file(&foreign).unwrap();
    if !fstat_estale {
        // The same faults again, for the session family.
        for var in &modes_set {
            std::env::set_var(var, "1");
        }
        sessions_work(dir);
    }
}

/// The session family under the same faults: a repository created, IDs issued, locked
/// and released, and nothing left behind by close.
fn sessions_work(dir: &Path) {
    let repo = dir.join("repo");
    let s = Session::open(&repo, Some("jobs"), None).expect("open despite the faults");
    let mut last = None;
    for _ in 0..SESSION_CALLS {
        let ids = s.make_new_ids(2).expect("make_new_ids despite the faults");
        assert!(last.is_none_or(|l| ids[0] > l) && ids[1] == ids[0] + 1, "{last:?} then {ids:?}");
        last = Some(ids[1]);
    }
    assert_eq!(s.lock_ids(&[1000, 1001]).expect("lock_ids"), vec![1000, 1001]);
    assert_eq!(s.release_ids(&[1000, 1001, 999]).expect("release_ids"), vec![1000, 1001], "999 is nobody's");
    s.check().expect("a consistent repository");
    s.close().expect("close despite the faults");
    for sub in ["jobs.ids", "jobs.sessions"] {
        let left: Vec<_> = fs::read_dir(repo.join(sub)).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "{sub} still holds {left:?}");
    }
}

/// Every shim variable; a mode sets some of them.
const ALL_MODES: &[&str] = &[
    "NFSLOCK_SHIM_LOSE_LINK",
    "NFSLOCK_SHIM_LINK_EIO",
    "NFSLOCK_SHIM_LOSE_UNLINK",
    "NFSLOCK_SHIM_LOSE_RENAME",
    "NFSLOCK_SHIM_LOSE_CREATE",
    "NFSLOCK_SHIM_LINK_ENOENT",
    "NFSLOCK_SHIM_LSTAT_EIO",
    "NFSLOCK_SHIM_FSTAT_ESTALE",
    "NFSLOCK_SHIM_WRITE_EIO",
    "NFSLOCK_SHIM_MKDIR_EIO",
];

/// What is left in the test directory that the library made: nothing once the child
/// has exited (claims are removed at exit, the lock at unlock).
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<String>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(".nfslock-") || n.ends_with(".nfs_lock"))
        .collect()
}

#[test]
fn lost_replies_count_as_success() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    let shim = build_shim();
    let scratch = scratch::dir("lost-reply");
    let base = scratch.path();
    // (variables, how many faults the child must at least have met)
    let modes: [(&[&str], u64); 10] = [
        (&["NFSLOCK_SHIM_LOSE_LINK"], CYCLES as u64),
        (&["NFSLOCK_SHIM_LINK_EIO"], CYCLES as u64),
        (&["NFSLOCK_SHIM_LOSE_UNLINK"], CYCLES as u64),
        (&["NFSLOCK_SHIM_LOSE_LINK", "NFSLOCK_SHIM_LOSE_UNLINK"], CYCLES as u64),
        (&["NFSLOCK_SHIM_LOSE_CREATE"], 1),
        (&["NFSLOCK_SHIM_LINK_ENOENT"], CYCLES as u64 / 2),
        (&["NFSLOCK_SHIM_LSTAT_EIO"], CYCLES as u64 / 2),
        (&["NFSLOCK_SHIM_FSTAT_ESTALE"], 1),
        // Found by the rig in the session family: transient errors writing a claim or
        // the counter, and creating the repository's directories.
        (&["NFSLOCK_SHIM_WRITE_EIO"], SESSION_CALLS as u64 / 2),
        (&["NFSLOCK_SHIM_MKDIR_EIO"], 1),
    ];
    let mut failures = Vec::new();
    for (n, (mode, min_faults)) in modes.iter().enumerate() {
        let dir = base.join(n.to_string());
        fs::create_dir_all(&dir).unwrap();
        let counter = base.join(format!("faults-{n}"));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .env("LD_PRELOAD", &shim)
            .env("NFSLOCK_SHIM_COUNT", &counter);
        for var in *mode {
            cmd.env(var, "1");
        }
        let out = cmd.output().expect("runs the child");
        let faults = fs::metadata(&counter).map_or(0, |m| m.len());
        let left = leftovers(&dir);
        if !out.status.success() || faults < *min_faults || !left.is_empty() {
            failures.push(format!(
                "{mode:?}: status {}, {faults} faults injected, left behind {left:?}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
