//! Criterion benchmarks of leases (`cargo bench --bench lease`), side by side in one run:
//!
//! - `cycle/{plain,lease}/{tmpfs,ext4}`: an uncontended acquisition and release of one
//!   path: `lockfile::create` + `unlock` against `lease::acquire` (one attempt, keep-alive
//!   on) + `unlock`. The target: a lease's cycle at most 1.5x the plain lock's.
//! - `cycle/link_unlink_floor/{tmpfs,ext4}`: bare link(2) + unlink(2), the floor of both.
//! - `cycle/{plain,lease}_floor/{tmpfs,ext4}`: each cycle's own calls, bare: link(2) +
//!   lstat(2) + unlink(2) for a plain lock, link(2) + rename(2) + unlink(2) for a lease
//!   (the token parked under its next name). `lease_floor / plain_floor` is the part of the
//!   1.5x target the file system itself takes.
//! - `fencing/{first_token,fdatasync_floor}/ext4`: the first `fencing_token` of a hold
//!   (one pwrite, one fdatasync, one rename) against a bare pwrite + fdatasync.
//! - `keepalive/cpu_per_wall_second/1000_leases_{3,10}s`: the CPU time this process
//!   spends per second of wall time while holding 1,000 leases of 3 s (10 s) renewed by
//!   the keep-alive thread (one rename(2) per lease every third of the lease): the target
//!   is at most 20 ms (2% of one core). Renewals per second are printed once per length.

use std::fs;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nfslock::{lease, lockfile};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path, tag: &str) -> Option<Scratch> {
        if !parent.is_dir() {
            return None;
        }
        let dir = parent.join(format!("nfslock-lease-bench-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch directory");
        Some(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch_dirs(tag: &str) -> Vec<(&'static str, Scratch)> {
    let mut v = Vec::new();
    if let Some(s) = Scratch::new(Path::new("/dev/shm"), tag) {
        v.push(("tmpfs", s));
    }
    v.push(("ext4", Scratch::new(Path::new(env!("CARGO_TARGET_TMPDIR")), tag).expect("target tmp dir")));
    v
}

fn lease_options(ms: u64) -> lease::Options {
    lease::Options { message: b"bench".to_vec(), lease: Duration::from_millis(ms), ..lease::Options::default() }
}

fn cycle(c: &mut Criterion) {
    let dirs = scratch_dirs("cycle");
    let mut group = c.benchmark_group("cycle");
    let options = lease_options(10_000);
    for (fs_name, scratch) in &dirs {
        let path = scratch.0.join("resource");
        group.bench_function(BenchmarkId::new("plain", fs_name), |b| {
            b.iter(|| lockfile::create(black_box(&path), b"bench").expect("create").unlock().expect("unlock"))
        });
        group.bench_function(BenchmarkId::new("lease", fs_name), |b| {
            b.iter(|| lease::acquire(black_box(&path), &options, Some(Duration::ZERO)).expect("acquire").unlock().expect("unlock"))
        });
        let (src, dst) = (scratch.0.join("floor-src"), scratch.0.join("floor-dst"));
        fs::write(&src, b"x").unwrap();
        group.bench_function(BenchmarkId::new("link_unlink_floor", fs_name), |b| {
            b.iter(|| {
                fs::hard_link(black_box(&src), &dst).unwrap();
                fs::remove_file(&dst).unwrap();
            })
        });
        // Each lock's own system calls, bare: what the library's ratio is measured against.
        group.bench_function(BenchmarkId::new("plain_floor", fs_name), |b| {
            b.iter(|| {
                fs::hard_link(black_box(&src), &dst).unwrap();
                black_box(fs::symlink_metadata(&dst).unwrap());
                fs::remove_file(&dst).unwrap();
            })
        });
        let parked = [scratch.0.join("floor-t0"), scratch.0.join("floor-t1")];
        fs::write(&parked[0], b"x").unwrap();
        let mut k = 0;
        group.bench_function(BenchmarkId::new("lease_floor", fs_name), |b| {
            b.iter(|| {
                fs::hard_link(black_box(&parked[k]), &dst).unwrap();
                fs::rename(&parked[k], &parked[1 - k]).unwrap();
                fs::remove_file(&dst).unwrap();
                k = 1 - k;
            })
        });
    }
    group.finish();
}

fn fencing(c: &mut Criterion) {
    let scratch = Scratch::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "fencing").unwrap();
    let path = scratch.0.join("resource");
    let options = lease_options(10_000);
    let mut group = c.benchmark_group("fencing");
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("first_token", "ext4"), |b| {
        b.iter_custom(|n| {
            let mut spent = Duration::ZERO;
            for _ in 0..n {
                let l = lease::acquire(&path, &options, Some(Duration::ZERO)).expect("acquire");
                let start = Instant::now();
                black_box(l.fencing_token().expect("token"));
                spent += start.elapsed();
                l.unlock().expect("unlock");
            }
            spent
        })
    });
    let floor = fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(scratch.0.join("floor")).unwrap();
    let mut at = 0u64;
    group.bench_function(BenchmarkId::new("fdatasync_floor", "ext4"), |b| {
        b.iter(|| {
            floor.write_at(b"\n", at).unwrap();
            at += 1;
            floor.sync_data().unwrap();
        })
    });
    group.finish();
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn keepalive(c: &mut Criterion) {
    for secs in [3, 10] {
        keepalive_of(c, secs);
    }
}

fn keepalive_of(c: &mut Criterion, secs: u64) {
    const LEASES: usize = 1000;
    let scratch = scratch_dirs("keepalive").into_iter().last().unwrap().1;
    // One descriptor per held lease's claim: lift the soft limit to the hard one.
    // SAFETY: plain get/setrlimit on a struct of ours.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
    let options = lease_options(secs * 1000);
    let held: Vec<lease::Lease> =
        (0..LEASES).map(|i| lease::acquire(scratch.0.join(format!("r{i}")), &options, Some(Duration::ZERO)).expect("acquire")).collect();
    assert_eq!(lease::renewed_leases(), LEASES);
    // Renewals per second: count the epochs the tokens moved over a few seconds.
    let epochs = |dir: &Path| -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.rsplit_once('.').and_then(|(_, e)| e.parse::<u64>().ok()))
            .sum()
    };
    let (before, start) = (epochs(&scratch.0), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let renewals = (epochs(&scratch.0) - before) as f64 / start.elapsed().as_secs_f64();
    eprintln!(
        "keepalive: {LEASES} leases of {secs} s: {renewals:.0} renewals/s ({:.2} per lease per second, one rename(2) each)",
        renewals / LEASES as f64
    );
    let mut group = c.benchmark_group("keepalive");
    group.sample_size(10).measurement_time(Duration::from_secs(12)).warm_up_time(Duration::from_millis(500));
    group.bench_function(BenchmarkId::new("cpu_per_wall_second", format!("1000_leases_{secs}s")), |b| {
        b.iter_custom(|n| {
            let cpu = cpu_time();
            std::thread::sleep(Duration::from_millis(250) * n as u32);
            // CPU time per quarter second of holding, times four: per wall second.
            (cpu_time() - cpu) * 4
        })
    });
    group.finish();
    for l in held {
        l.is_held().expect("held throughout");
        l.unlock().expect("unlock");
    }
}

criterion_group!(benches, cycle, fencing, keepalive);
criterion_main!(benches);
