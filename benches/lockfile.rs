//! Criterion benchmarks of the Rust lock-file API (`cargo bench --bench lockfile`).
//!
//! - `uncontended/create_unlock/{tmpfs,ext4}`: `lockfile::create` + `Lock::unlock` of one
//!   path, over and over, with nobody else around.
//! - `uncontended/link_unlink_floor/{tmpfs,ext4}`: a bare link(2) + unlink(2) on the same
//!   path. No link-based lock can do better, so `create_unlock / floor` is the library's
//!   overhead over what the kernel costs.
//! - `handoff/blocking_create`: the time from a holder starting `unlock` to a waiter
//!   blocked in `blocking_create` (another thread) getting the lock.
//!
//! tmpfs is /dev/shm; "ext4" is a directory under target/ (whatever filesystem that is on:
//! the id keeps the name the harness in bench/compare uses for it). The peer comparison
//! with liblockfile, flufl.lock and File::NFSLock is bench/compare/run, not this file.

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nfslock::lockfile;

const MESSAGE: &[u8] = b"bench";

/// A scratch directory, removed when dropped, holding the protected file `resource`.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(parent: &Path, tag: &str) -> Option<Scratch> {
        if !parent.is_dir() {
            return None;
        }
        let dir = parent.join(format!("nfslock-criterion-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch directory");
        fs::write(dir.join("resource"), b"").expect("create the protected file");
        Some(Scratch { dir })
    }

    fn resource(&self) -> PathBuf {
        self.dir.join("resource")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The two filesystems: tmpfs (/dev/shm, skipped if absent) and a disk directory under
/// target/ (cargo's per-bench temp dir).
fn scratch_dirs(tag: &str) -> Vec<(&'static str, Scratch)> {
    let mut v = Vec::new();
    if let Some(s) = Scratch::new(Path::new("/dev/shm"), tag) {
        v.push(("tmpfs", s));
    } else {
        eprintln!("/dev/shm is missing: no tmpfs benchmark");
    }
    let disk = Scratch::new(Path::new(env!("CARGO_TARGET_TMPDIR")), tag).expect("target tmp dir");
    v.push(("ext4", disk));
    v
}

fn uncontended(c: &mut Criterion) {
    let dirs = scratch_dirs("uncontended");
    let mut group = c.benchmark_group("uncontended");
    for (fs_name, scratch) in &dirs {
        let path = scratch.resource();
        group.bench_function(BenchmarkId::new("create_unlock", fs_name), |b| {
            b.iter(|| {
                let lock = lockfile::create(black_box(&path), MESSAGE).expect("uncontended create");
                lock.unlock().expect("unlock");
            })
        });

        // The floor: the one link(2) that takes a link-based lock and the one unlink(2)
        // that drops it, from a claim file prepared once, on the same lock file name.
        let claim = scratch.dir.join("resource.claim");
        let lock_file = scratch.dir.join("resource.nfs_lock");
        fs::write(&claim, MESSAGE).expect("claim file");
        group.bench_function(BenchmarkId::new("link_unlink_floor", fs_name), |b| {
            b.iter(|| {
                fs::hard_link(black_box(&claim), &lock_file).expect("link");
                fs::remove_file(&lock_file).expect("unlink");
            })
        });
        fs::remove_file(&claim).expect("remove claim file");
    }
    group.finish();
}

/// One handoff per iteration: the main thread holds the lock, a second thread is parked
/// in `blocking_create`; the measured time runs from just before the main thread calls
/// `unlock` to the moment the waiter's `blocking_create` returns.
fn handoff(c: &mut Criterion) {
    let dirs = scratch_dirs("handoff");
    let (_, scratch) = &dirs[0]; // tmpfs when there is one: no disk latency in the way
    let path = scratch.resource();

    // The waiter thread: on each request, block for the lock, note when it came, give it
    // back, and report the time.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Instant>();
    let waiter_path = path.clone();
    let waiter = thread::spawn(move || {
        for () in go_rx {
            let lock = lockfile::blocking_create(&waiter_path, MESSAGE, Some(Duration::from_secs(10))).expect("waiter blocking_create");
            let got = Instant::now();
            lock.unlock().expect("waiter unlock");
            done_tx.send(got).expect("report");
        }
    });

    let mut group = c.benchmark_group("handoff");
    // Each iteration also spends a fixed pause letting the waiter park (not measured),
    // so keep the sample small.
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("blocking_create", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let lock = lockfile::create(&path, MESSAGE).expect("holder create");
                go_tx.send(()).expect("wake waiter");
                // Let the waiter fail its first attempt and park in its wait.
                thread::sleep(Duration::from_micros(500));
                let released = Instant::now();
                lock.unlock().expect("holder unlock");
                let got = done_rx.recv().expect("waiter result");
                total += got.saturating_duration_since(released);
            }
            total
        })
    });
    group.finish();

    drop(go_tx);
    waiter.join().expect("waiter thread");
}

criterion_group!(benches, uncontended, handoff);
criterion_main!(benches);
