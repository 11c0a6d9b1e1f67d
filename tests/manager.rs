//! The lock manager (issue 12) through the C API: `tests/manager/shm.c` and
//! `tests/manager/dir.c`, built against `include/nfslock.h` and the cdylib, one mode per
//! check (each prints a `FAIL file:line: ...` line per failed expectation, and `ok` or
//! `failed`).
//!
//! Podman's libpod/lock/shm/shm_lock_test.go, case by case, and where it is checked here:
//!
//! | Podman's test | Check |
//! |---|---|
//! | TestCreateNewSHMBadSizeRoundsUp, TestCreateNewSHMZeroSize | `shm_create_rounds_odd_counts_up_and_refuses_0_and_too_many` |
//! | TestDeallocateUnallocatedLockErrors, TestAllocateDeallocateCycle | `shm_free_then_allocate_gives_the_lowest_id` |
//! | TestUnlockingUnlockedLockFails, TestDoubleUnlockFails, TestLockLifecycleSingleLock, TestLockAndUnlockTwoSemaphore | `shm_lock_and_unlock_of_unallocated_and_freed_ids_work` |
//! | TestAllocateTwoLocksGetsDifferentLocks, TestAllocateAllLocksSucceeds, TestAllocateTooManyLocksFails | `shm_allocate_until_full_then_enospc` |
//! | TestDeallocateAllSemaphoresDeallocatesAll | `shm_free_all_frees_every_id` |
//! | TestLockSemaphoreActuallyLocks (one process there; processes here) | `shm_locks_exclude_other_processes` |
//! | (its setup: open with the same count) and the manager's own API | `shm_open_with_the_same_count_...`, `shm_open_of_a_missing_segment_is_enoent`, `shm_create_of_an_existing_segment_...`, `shm_allocate_id_...`, `shm_locks_held_...` |
//!
//! Beyond it, SHM: a holder SIGKILLed (EOWNERDEAD), 4 processes x 10,000 cycles on a
//! non-atomic counter, crash loops, fork, threads, signals to waiters, extreme timeouts,
//! close, concurrent allocation (threads and processes), the segment's layout, hostile
//! segments, symlinks, modes, names, NULL and foreign handles, destroy, leaks.
//!
//! Directory backend: create/open and what is not a manager directory, allocation, short
//! buffers, free_all, locks_held, exclusion, 4 processes on a counter, a SIGKILLed holder,
//! leases, close, fork, threads, signals, concurrent allocation, crash loops, plain
//! lock-file interop, removed lock files, hostile contents, file modes, leaks.
//!
//! Every SHM check works under its own segment names, `/nfslock-mt-<pid>-<check>=...`; a
//! guard removes whatever is left under that prefix in /dev/shm, also when the check fails
//! (and the check fails when the program itself left something there).
#![cfg(target_os = "linux")]

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "support/cdylib.rs"]
mod cdylib;
#[path = "support/scratch.rs"]
mod scratch;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");

static SHM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The CPU-heavy runs (the counters, the concurrent allocations) one at a time: the
/// machine may have only 2 cores, and the other checks measure waits.
static HEAVY: Mutex<()> = Mutex::new(());

fn work_dir() -> PathBuf {
    Path::new(TARGET_TMPDIR).join("manager")
}

fn build(cell: &'static OnceLock<Result<PathBuf, String>>, name: &str) -> PathBuf {
    let built = cell.get_or_init(|| {
        fs::create_dir_all(work_dir()).map_err(|e| format!("mkdir {}: {e}", work_dir().display()))?;
        let exe = work_dir().join(name);
        let src = Path::new(MANIFEST_DIR).join(format!("tests/manager/{name}.c"));
        cdylib::build_c_program(&[src], &exe, &[])?;
        Ok(exe)
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Segment names under `/nfslock-mt-<pid>-<tag>=`; dropped, removes every entry of
/// /dev/shm under that prefix (files, symlinks, FIFOs, directories the checks made).
struct ShmNames {
    base: String,
}

impl ShmNames {
    fn new(tag: &str) -> ShmNames {
        // The '=' ends the tag: no check's prefix is another one's ("close" and "close-busy").
        let names = ShmNames { base: format!("/nfslock-mt-{}-{tag}=", std::process::id()) };
        names.remove_all();
        names
    }

    /// The entries of /dev/shm under the prefix.
    fn leftovers(&self) -> Vec<String> {
        let prefix = &self.base[1..];
        let mut names: Vec<String> = fs::read_dir("/dev/shm")
            .map(|d| {
                d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(prefix)).collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn remove_all(&self) {
        for name in self.leftovers() {
            let path = Path::new("/dev/shm").join(&name);
            let is_dir = fs::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
            let _ = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        }
    }
}

impl Drop for ShmNames {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Runs `exe args` to its end (killed after `limit`); its exit status, what it printed
/// (stdout then stderr) and how long it took.
fn run(exe: &Path, args: &[&str], limit: Duration) -> (Option<ExitStatus>, String, Duration) {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", exe.display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let mut e = String::new();
        let _ = stderr.read_to_string(&mut e);
        if e.is_empty() {
            s
        } else {
            format!("{s}--- stderr ---\n{e}")
        }
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    (status, reader.join().unwrap_or_default(), took)
}

fn describe(status: Option<ExitStatus>, limit: Duration) -> String {
    match status {
        None => format!("still running after {limit:?} (killed)"),
        Some(s) => match s.signal() {
            Some(libc::SIGALRM) => "killed by its own alarm: a call waited instead of returning".into(),
            Some(sig) => format!("killed by signal {sig}{}", if s.core_dumped() { " (core dumped)" } else { "" }),
            None => format!("exit status {}", s.code().unwrap_or(-1)),
        },
    }
}

/// Runs `shm MODE NAME SCRATCH` and requires it to pass and to leave nothing in /dev/shm.
fn shm_check(mode: &str, what: &str, limit_s: u64) {
    let exe = build(&SHM, "shm");
    let names = ShmNames::new(mode);
    let scratch = scratch::dir_in(&work_dir(), &format!("shm-{mode}"));
    let limit = Duration::from_secs(limit_s);
    let (status, out, took) = run(&exe, &[mode, &names.base, scratch::path_str(&scratch)], limit);
    println!("shm {mode}: {:.2} s\n{out}", took.as_secs_f64());
    assert!(status.is_some_and(|s| s.success()), "SHM backend, {what}: {}\n{out}", describe(status, limit));
    let left = names.leftovers();
    assert!(left.is_empty(), "SHM backend, {what}: the check passed but left in /dev/shm: {left:?}");
}

/// Runs `dir MODE SCRATCH [extra]` and requires it to pass.
fn dir_check(mode: &str, what: &str, extra: &[&str], limit_s: u64) {
    let exe = build(&DIR, "dir");
    let scratch = scratch::dir_in(&work_dir(), &format!("dir-{mode}"));
    let limit = Duration::from_secs(limit_s);
    let mut args = vec![mode, scratch::path_str(&scratch)];
    args.extend_from_slice(extra);
    let (status, out, took) = run(&exe, &args, limit);
    println!("dir {mode}: {:.2} s\n{out}", took.as_secs_f64());
    assert!(status.is_some_and(|s| s.success()), "directory backend, {what}: {}\n{out}", describe(status, limit));
}

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- SHM: Podman's shm_lock_test.go ---------------------------------------------------

#[test]
fn shm_create_rounds_odd_counts_up_and_refuses_0_and_too_many() {
    shm_check("create-rounding", "create with 1, 7, 31, 32, 33, 64, 100, 1048576 locks (rounded up to 32s), 0 and over 1048576 EINVAL", 60);
}

#[test]
fn shm_open_with_the_same_count_shares_locks_and_another_count_is_erange() {
    shm_check("open-counts", "open with a count that rounds the same (shared allocations and locks) or differently (ERANGE)", 30);
}

#[test]
fn shm_open_of_a_missing_segment_is_enoent() {
    shm_check("open-missing", "open and destroy of a missing segment (ENOENT)", 30);
}

#[test]
fn shm_create_of_an_existing_segment_is_eexist_and_leaves_it_alone() {
    shm_check("create-existing", "create over an existing segment or a plain file (EEXIST, untouched)", 30);
}

#[test]
fn shm_allocate_until_full_then_enospc() {
    shm_check("alloc-full", "allocate all 128 ids (lowest first, unique), then ENOSPC; allocated's short buffer", 30);
}

#[test]
fn shm_free_then_allocate_gives_the_lowest_id() {
    shm_check("free-realloc", "free and reallocate (the lowest free id comes back); free of an unallocated id ENOENT", 30);
}

#[test]
fn shm_allocate_id_of_an_allocated_id_is_eexist_and_out_of_range_erange() {
    shm_check("allocate-id", "allocate_id (EEXIST allocated, ERANGE out of range) with allocate", 30);
}

#[test]
fn shm_every_id_call_is_erange_out_of_range() {
    shm_check("range", "allocate_id, free, lock, timedlock, unlock of ids >= capacity (ERANGE)", 30);
}

#[test]
fn shm_lock_and_unlock_of_unallocated_and_freed_ids_work() {
    shm_check("lock-unallocated", "lock/unlock of unallocated and freed ids; unlocking an unlocked lock (EPERM)", 30);
}

#[test]
fn shm_locks_exclude_other_processes() {
    shm_check("exclusion", "a lock held by another process: EBUSY, ETIMEDOUT, lock waits for its unlock", 30);
}

#[test]
fn shm_locks_held_lists_the_locks_held_by_anyone() {
    shm_check("locks-held", "locks_held (this process's and another's locks, not the allocated ids)", 30);
}

#[test]
fn shm_free_all_frees_every_id() {
    shm_check("free-all", "free_all (everything allocatable again; held locks stay held)", 30);
}

// ---- SHM: beyond Podman's tests ---------------------------------------------------------

#[test]
fn shm_a_sigkilled_holder_hands_the_lock_on_with_eownerdead() {
    shm_check("owner-dead", "a holder SIGKILLed while holding: EOWNERDEAD, the lock held, then normal", 60);
}

#[test]
fn shm_four_processes_times_10000_cycles_count_exactly() {
    let _heavy = heavy();
    shm_check("counter", "4 processes x 10,000 lock/unlock cycles on a non-atomic counter", 180);
}

#[test]
fn shm_a_forked_child_does_not_own_its_parents_lock() {
    shm_check("fork", "fork: the child's unlock of the parent's lock is EPERM, it waits for it, its close keeps it", 60);
}

#[test]
fn shm_ownership_is_per_thread() {
    shm_check("threads", "threads: EPERM unlock from another thread, EDEADLK twice, timedlock 0 EBUSY / > 0 ETIMEDOUT / < 0 forever", 60);
}

#[test]
fn shm_close_releases_the_calling_threads_locks() {
    shm_check("close", "close releases this thread's locks; a lock of a thread that ended is EOWNERDEAD", 30);
}

#[test]
fn shm_close_while_another_thread_holds_keeps_its_lock_and_the_mapping() {
    shm_check("close-busy", "close while another thread holds a lock: 0, that lock stays held, its holder's death hands it on", 30);
}

#[test]
fn shm_concurrent_allocation_never_hands_out_an_id_twice() {
    let _heavy = heavy();
    shm_check("alloc-race", "4 processes allocating 25 ids each at once", 60);
}

#[test]
fn shm_the_segment_has_the_documented_layout_v1() {
    shm_check("layout", "the segment file: header fields, bitmaps of allocated ids, size", 30);
}

#[test]
fn shm_hostile_segments_are_ebadmsg_never_a_crash() {
    shm_check("hostile", "open of segments with each header field corrupted, wrong sizes, random bytes, empty, huge", 120);
}

#[test]
fn shm_a_symlink_or_a_writable_segment_is_refused() {
    shm_check("perms", "a symlink at the name (ELOOP), a dangling one (not followed), a group- or world-writable segment (EACCES)", 30);
}

#[test]
fn shm_invalid_names_are_einval() {
    shm_check("names", "invalid names (EINVAL from create, open, destroy), a 200-byte name works", 30);
}

#[test]
fn shm_null_arguments_are_einval_with_an_error_text() {
    shm_check("nulls", "NULL arguments (EINVAL, the last error says NULL, nothing made)", 30);
}

#[test]
fn shm_destroy_removes_the_segment() {
    shm_check("destroy", "destroy_shm removes the name; open handles keep working; the name can be made again", 30);
}

#[test]
fn shm_four_threads_on_one_handle_count_exactly_and_never_share_an_id() {
    let _heavy = heavy();
    shm_check("thread-counter", "4 threads x 10,000 cycles on one handle; 4 threads allocating and freeing", 60);
}

#[test]
fn shm_huge_and_negative_timeouts_wait_for_the_release() {
    shm_check("timeouts", "timedlock with INT64_MAX, INT64_MAX / 1000 + 1, 2^32, INT64_MIN, -2 waits for the release", 30);
}

#[test]
fn shm_open_and_close_leak_nothing() {
    shm_check("leaks", "300 open/close: descriptors and mappings; set_lease_ms EINVAL", 30);
}

#[test]
fn shm_what_is_not_a_regular_file_at_the_name_is_ebadmsg() {
    shm_check("not-regular", "open and destroy of a directory, a FIFO, a plain file (EBADMSG) and a symlink (ELOOP) at the name", 30);
}

#[test]
fn shm_names_are_bytes_not_utf8() {
    shm_check("bytes-name", "a segment name with a Latin-1 byte (valid: names are bytes, like paths)", 30);
}

#[test]
fn shm_workers_sigkilled_in_and_out_of_the_lock_never_break_it() {
    let _heavy = heavy();
    shm_check("crash-loop", "40 SIGKILLs of 3 workers on one lock: only EOWNERDEAD, no overlap, the lock usable after", 90);
}

#[test]
fn shm_a_segment_is_never_seen_half_made_and_one_racing_create_wins() {
    shm_check("create-race", "open racing create (only ENOENT, then success), 4 racing creates (one 0, three EEXIST), 40 rounds", 60);
}

#[test]
fn shm_a_closed_handle_is_einval_for_every_call() {
    shm_check("stale", "every call on a closed handle, close twice, a handle cached by another thread: EINVAL", 30);
}

#[test]
fn shm_racing_allocate_id_and_free_of_one_id_have_one_winner() {
    shm_check("id-races", "4 threads allocate_id / free of one id at once, 100 rounds: one 0, three EEXIST / ENOENT", 60);
}

#[test]
fn shm_the_segment_is_0600_whatever_the_umask() {
    shm_check("umask", "create_shm under umask 000, 022, 077, 277: mode 0600", 30);
}

#[test]
fn shm_closing_a_handle_releases_the_threads_locks_only_when_it_is_the_last() {
    shm_check(
        "close-other-handle",
        "two handles on one segment, one thread: close(A) keeps the thread's locks while B is open; close(B) releases them",
        30,
    );
}

#[test]
fn shm_destroyed_segments_do_not_stay_mapped() {
    shm_check("destroyed-unmapped", "100 create/close/destroy: the process's mappings do not grow", 30);
}

#[test]
fn shm_signals_to_a_waiter_neither_interrupt_nor_shorten_its_wait() {
    shm_check("signals", "SIGUSR1 every 10 ms (no SA_RESTART) to a thread in timedlock(1000) and in lock", 30);
}

#[test]
fn shm_foreign_handles_are_einval_never_a_crash() {
    shm_check("foreign", "every call on numbers, misaligned and neighbouring handles, buffers, a lock-file handle, closed managers", 30);
}

#[test]
fn shm_processes_allocating_and_freeing_never_share_an_id() {
    let _heavy = heavy();
    shm_check("alloc-loop", "4 processes x 50,000 rounds of allocate 4 / free 4, a shared table of owners", 120);
}

#[test]
fn shm_ids_are_the_mutexes_where_layout_v1_puts_them() {
    shm_check("raw-mutex", "ids 0, 6, 31, 32, 63 taken raw at their layout offsets exclude the library, and the other way round", 30);
}

#[test]
fn shm_a_destroyed_segment_stays_mapped_while_a_thread_holds_one_of_its_locks() {
    shm_check(
        "retire-held",
        "destroy and close the last handle while another thread holds lock 3: its next lock works, its death is EOWNERDEAD to others",
        30,
    );
}

#[test]
fn dir_a_lock_waiting_while_its_handle_is_closed_is_einval_and_holds_nothing() {
    dir_check("close-during-wait", "close while a thread waits in lock: EINVAL, the lock free", &[], 30);
}

#[test]
fn shm_an_unrecoverable_lock_is_enotrecoverable_never_a_crash() {
    shm_check(
        "unrecoverable",
        "a lock left unrecoverable: lock / timedlock ENOTRECOVERABLE, unlock EPERM, close 0, in any order, no crash",
        30,
    );
}

// ---- directory backend ------------------------------------------------------------------

#[test]
fn dir_create_and_open_refuse_what_is_not_a_manager_directory() {
    dir_check("create-open", "create/open: ENOENT, EEXIST, EBADMSG (plain dir, wrong headers, a file)", &[], 30);
}

#[test]
fn dir_allocate_gives_the_lowest_id_and_free_of_an_unallocated_id_is_enoent() {
    dir_check("alloc", "allocate lowest, allocate_id, free, ids/ files, UINT32_MAX ERANGE, UINT32_MAX - 1 valid", &[], 30);
}

#[test]
fn dir_allocated_with_a_short_buffer_is_erange_with_the_count_needed() {
    dir_check("short-buffer", "allocated with a short buffer (ERANGE, *n_out = needed)", &[], 30);
}

#[test]
fn dir_free_all_frees_every_id() {
    dir_check("free-all", "free_all (ids/ empty, allocation from 0 again, held locks stay held)", &[], 30);
}

#[test]
fn dir_locks_held_lists_the_locks_held_by_anyone() {
    dir_check("locks-held", "locks_held (this process's and another's)", &[], 30);
}

#[test]
fn dir_locks_exclude_other_processes() {
    dir_check("exclusion", "a lock held by another process: EBUSY, ETIMEDOUT, lock waits for its unlock", &[], 30);
}

#[test]
fn dir_four_processes_count_exactly() {
    let _heavy = heavy();
    dir_check("counter", "4 processes x 5,000 lock/unlock cycles on a non-atomic counter", &["5000"], 200);
}

#[test]
fn dir_a_sigkilled_holder_is_cleared_at_once_on_this_host() {
    dir_check("killed", "a holder SIGKILLed (plain and 60 s lease): the next lock takes it at once", &[], 60);
}

#[test]
fn dir_locks_taken_as_leases_work() {
    dir_check("lease", "set_lease_ms, then lock, exclusion, unlock; set_lease_ms(0)", &[], 30);
}

#[test]
fn dir_close_releases_the_handles_locks() {
    dir_check("close", "close releases every lock taken through the handle", &[], 30);
}

#[test]
fn dir_concurrent_allocation_never_hands_out_an_id_twice() {
    let _heavy = heavy();
    dir_check("alloc-race", "4 processes allocating 25 ids each at once", &[], 120);
}

#[test]
fn dir_no_file_is_group_or_world_writable() {
    dir_check("file-modes", "with umask 0, the files and directories made (header, ids, locks, leases)", &[], 30);
}

#[test]
fn dir_ownership_is_per_thread_and_threads_count_exactly() {
    dir_check(
        "threads",
        "threads: EDEADLK (also through a second handle), EPERM, EBUSY, ETIMEDOUT; 4 threads on a counter; allocation",
        &[],
        60,
    );
}

#[test]
fn dir_huge_and_negative_timeouts_wait_for_the_release() {
    dir_check("timeouts", "timedlock with INT64_MAX, INT64_MAX / 1000 + 1, 2^32, INT64_MIN, -2 waits for the release", &[], 30);
}

#[test]
fn dir_locks_are_plain_lock_files_on_dir_locks_id() {
    dir_check("interop", "a plain nfslock_create on DIR/locks/<id> excludes the manager's lock and the other way round", &[], 30);
}

#[test]
fn dir_set_lease_ms_takes_the_documented_range_and_renews() {
    dir_check("set-lease", "set_lease_ms outside 100..=86,400,000 EINVAL; a 300 ms lease held 1 s stays exclusive", &[], 30);
}

#[test]
fn dir_open_lock_close_leaks_no_descriptor() {
    dir_check("leaks", "2 x 200 open/lock/close cycles: descriptors", &[], 60);
}

#[test]
fn dir_hostile_contents_are_refused_or_ignored() {
    dir_check("hostile", "a 1 GiB header, a symlink at the directory, junk in ids/ and locks/, a junk lock file", &[], 30);
}

#[test]
fn dir_a_header_ids_or_locks_of_the_wrong_kind_is_ebadmsg() {
    dir_check("bad-parts", "the header a directory, a FIFO, a symlink; ids/ missing or a file; locks/ missing: EBADMSG", &[], 30);
}

#[test]
fn dir_workers_sigkilled_in_and_out_of_the_lock_never_break_it() {
    let _heavy = heavy();
    dir_check("crash-loop", "40 SIGKILLs of 3 workers on one lock: no error, no overlap, the lock usable after", &[], 90);
}

#[test]
fn dir_allocators_sigkilled_leave_no_junk_and_no_id_twice() {
    let _heavy = heavy();
    dir_check("alloc-crash", "20 allocating workers SIGKILLed at random: no id twice, allocated sane, free_all", &[], 90);
}

#[test]
fn dir_a_forked_child_does_not_own_its_parents_locks() {
    dir_check("fork", "fork: the child's unlock EPERM, try EBUSY / ETIMEDOUT; its close and exit(3) keep the parent's locks", &[], 60);
}

#[test]
fn dir_a_forked_childs_close_releases_its_own_locks_and_returns_0() {
    dir_check("fork-close", "a forked child's close of the inherited handle: 0, its own lock released at once, the parent's kept", &[], 30);
}

#[test]
fn dir_racing_allocate_id_and_free_of_one_id_have_one_winner() {
    dir_check(
        "id-races",
        "4 threads allocate_id of one id at once (one 0, three EEXIST), then free (at least one 0, by design), 30 rounds",
        &[],
        60,
    );
}

#[test]
fn dir_a_removed_or_replaced_lock_file_is_enolck_and_a_dead_one_listed() {
    dir_check(
        "lost-lock",
        "unlock and close after the lock file was removed or taken by another: ENOLCK, the other's kept; a dead holder listed",
        &[],
        30,
    );
}

#[test]
fn dir_a_relative_directory_stays_where_it_was_opened() {
    dir_check("relative", "create_dir(\"m\"), chdir(\"/\"), then allocate and lock in the original directory", &[], 30);
}

#[test]
fn dir_signals_to_a_waiter_neither_interrupt_nor_shorten_its_wait() {
    dir_check("signals", "SIGUSR1 every 10 ms (no SA_RESTART) to a thread in timedlock(1000) and in lock", &[], 30);
}

#[test]
fn dir_processes_allocating_and_freeing_never_share_an_id() {
    let _heavy = heavy();
    dir_check("alloc-loop", "4 processes x 500 rounds of allocate 4 / free 4, a shared table of owners", &["500"], 180);
}
