//! Criterion benchmarks of the lock manager (`cargo bench --bench manager`).
//!
//! - `shm_cycle/raw_robust_mutex`: lock+unlock of a robust process-shared pthread mutex
//!   in shared memory: the floor of a segment lock.
//! - `shm_cycle/raw_robust_errorcheck_mutex`: the same, error-checking (the segment's kind).
//! - `shm_cycle/manager_rust`, `shm_cycle/manager_c`: `Manager::lock` + `unlock`, and
//!   the C entry points `nfslock_manager_lock` + `_unlock`, on a segment.
//! - `dir_cycle/{plain_lockfile,manager}/{tmpfs,ext4}`: a plain lock file's create+unlock
//!   and a directory manager's lock+unlock, in the same directory.
//! - `allocate_free/{shm,dir_tmpfs,dir_ext4}`.
//!
//! bench/manager/run measures the same against the C library (the cdylib), with 4
//! processes contending too, and writes the ratios.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nfslock::ffi::manager::{
    nfslock_manager, nfslock_manager_close, nfslock_manager_lock, nfslock_manager_open_shm, nfslock_manager_unlock,
};
use nfslock::lockfile;
use nfslock::manager::Manager;

/// A robust process-shared mutex in a shared anonymous mapping.
struct RawMutex(*mut libc::pthread_mutex_t);

impl RawMutex {
    fn new(errorcheck: bool) -> RawMutex {
        // SAFETY: a fresh shared mapping the size of one mutex, initialised before use.
        unsafe {
            let size = std::mem::size_of::<libc::pthread_mutex_t>();
            let p =
                libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0);
            assert_ne!(p, libc::MAP_FAILED);
            let m = p.cast::<libc::pthread_mutex_t>();
            let mut a = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            libc::pthread_mutexattr_init(a.as_mut_ptr());
            libc::pthread_mutexattr_setpshared(a.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(a.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            if errorcheck {
                libc::pthread_mutexattr_settype(a.as_mut_ptr(), libc::PTHREAD_MUTEX_ERRORCHECK);
            }
            assert_eq!(libc::pthread_mutex_init(m, a.as_ptr()), 0);
            RawMutex(m)
        }
    }

    fn cycle(&self) {
        // SAFETY: an initialised mutex that this thread locks and unlocks in turn.
        unsafe {
            assert_eq!(libc::pthread_mutex_lock(self.0), 0);
            libc::pthread_mutex_unlock(self.0);
        }
    }
}

fn segment_name(tag: &str) -> String {
    format!("/nfslock-criterion-{tag}-{}", std::process::id())
}

fn shm_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("shm_cycle");
    let plain = RawMutex::new(false);
    group.bench_function("raw_robust_mutex", |b| b.iter(|| plain.cycle()));
    let checking = RawMutex::new(true);
    group.bench_function("raw_robust_errorcheck_mutex", |b| b.iter(|| checking.cycle()));

    let name = segment_name("cycle");
    let _ = Manager::destroy_shm(&name);
    let m = Manager::create_shm(&name, 64).expect("create segment");
    group.bench_function("manager_rust", |b| {
        b.iter(|| {
            m.lock(black_box(7)).expect("lock");
            m.unlock(black_box(7)).expect("unlock");
        })
    });
    let cname = std::ffi::CString::new(name.clone()).unwrap();
    let mut h: *mut nfslock_manager = std::ptr::null_mut();
    // SAFETY: valid arguments; the handle is closed below.
    assert_eq!(unsafe { nfslock_manager_open_shm(cname.as_ptr(), 64, &mut h) }, 0);
    group.bench_function("manager_c", |b| {
        b.iter(|| {
            // SAFETY: an open handle.
            unsafe {
                assert_eq!(nfslock_manager_lock(h, black_box(7)), 0);
                nfslock_manager_unlock(h, black_box(7));
            }
        })
    });
    group.finish();
    // SAFETY: the handle is open.
    unsafe { nfslock_manager_close(h) };
    m.close().expect("close");
    Manager::destroy_shm(&name).expect("destroy");
}

fn scratch_dirs() -> Vec<(&'static str, tempfile::TempDir)> {
    let mut v = Vec::new();
    if Path::new("/dev/shm").is_dir() {
        v.push(("tmpfs", tempfile::tempdir_in("/dev/shm").expect("tmpfs scratch")));
    }
    v.push(("ext4", tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("disk scratch")));
    v
}

fn dir_cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("dir_cycle");
    for (fs, dir) in scratch_dirs() {
        let plain = dir.path().join("plain");
        group.bench_function(BenchmarkId::new("plain_lockfile", fs), |b| {
            b.iter(|| lockfile::create(&plain, b"bench").expect("create").unlock().expect("unlock"))
        });
        let m = Manager::create_dir(dir.path().join("manager")).expect("create manager");
        group.bench_function(BenchmarkId::new("manager", fs), |b| {
            b.iter(|| {
                m.lock(black_box(5)).expect("lock");
                m.unlock(black_box(5)).expect("unlock");
            })
        });
        m.close().expect("close");
    }
    group.finish();
}

fn allocate_free(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate_free");
    let name = segment_name("alloc");
    let _ = Manager::destroy_shm(&name);
    let m = Manager::create_shm(&name, 64).expect("create segment");
    group.bench_function("shm", |b| b.iter(|| m.free(m.allocate().expect("allocate")).expect("free")));
    m.close().expect("close");
    Manager::destroy_shm(&name).expect("destroy");
    for (fs, dir) in scratch_dirs() {
        let m = Manager::create_dir(dir.path().join("manager")).expect("create manager");
        group.bench_function(format!("dir_{fs}"), |b| b.iter(|| m.free(m.allocate().expect("allocate")).expect("free")));
        m.close().expect("close");
    }
    group.finish();
}

criterion_group!(benches, shm_cycle, dir_cycle, allocate_free);
criterion_main!(benches);
