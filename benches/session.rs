//! Criterion benchmarks of the session API (`cargo bench --bench session`).
//!
//! - `make_new_ids/1/fresh`: one ID per call, in a session holding few IDs.
//! - `make_new_ids/1/holding_100k`: the same once the session holds 100,000 IDs: the
//!   cost must not grow with what the session holds (the target: within 20%).
//! - `lock_release/10`: locking and releasing 10 IDs in one call each.
//!
//! Every call makes the counter durable (fdatasync), as Ganga does; the directory is
//! under target/ (the disk). The side-by-side comparison with Ganga is bench/ganga/run.

use std::fs;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use nfslock::session::Session;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/criterion-session-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn make_new_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("make_new_ids/1");
    let fresh = Scratch::new("fresh");
    let s = Session::open(&fresh.0, Some("bench"), None).expect("open");
    group.bench_function("fresh", |b| b.iter(|| s.make_new_ids(1).expect("make_new_ids")));
    s.close().expect("close");

    let held = Scratch::new("held");
    let s = Session::open(&held.0, Some("bench"), None).expect("open");
    s.make_new_ids(100_000).expect("take 100,000 IDs");
    group.bench_function("holding_100k", |b| b.iter(|| s.make_new_ids(1).expect("make_new_ids")));
    s.close().expect("close");
    group.finish();
}

fn lock_release(c: &mut Criterion) {
    let scratch = Scratch::new("lock");
    let s = Session::open(&scratch.0, Some("bench"), None).expect("open");
    let ids: Vec<u64> = (1_000..1_010).collect();
    c.bench_function("lock_release/10", |b| {
        b.iter(|| {
            assert_eq!(s.lock_ids(&ids).expect("lock").len(), 10);
            assert_eq!(s.release_ids(&ids).expect("release").len(), 10);
        })
    });
    s.close().expect("close");
}

criterion_group!(benches, make_new_ids, lock_release);
criterion_main!(benches);
