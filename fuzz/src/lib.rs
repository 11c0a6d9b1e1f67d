//! What the fuzz targets share: running a target's checks (in `nfslock::fuzzing`) under a
//! counting global allocator that aborts the process (a crash, for libFuzzer, which then
//! saves the input) when, during one run of the checks, a single allocation or the
//! memory allocated and not yet freed exceeds the target's limit
//! (`nfslock::fuzzing::alloc_limit`: four times the 64 KiB record cap).
//!
//! Only allocations made through Rust's global allocator are counted: those of the
//! parsers and the checks, not libFuzzer's own (C++, through malloc directly).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes allocated and not yet freed, since the process started.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// `LIVE` when the current run of the checks started.
static BASE: AtomicUsize = AtomicUsize::new(0);
/// The limit in force, 0 outside the checks (libFuzzer's own Rust glue is not counted).
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// The global allocator of every fuzz target.
pub struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

impl Counting {
    /// Checks an allocation of `size` bytes that will leave `live_after` bytes live.
    fn check(size: usize, live_after: usize) {
        let limit = LIMIT.load(Relaxed);
        if limit == 0 {
            return;
        }
        if size > limit {
            over_limit(b"one allocation of ", size, limit);
        }
        let live = live_after.saturating_sub(BASE.load(Relaxed));
        if live > limit {
            over_limit(b"live allocations of ", live, limit);
        }
    }
}

// SAFETY: every call is passed on to System unchanged; the counters are only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size(), LIVE.load(Relaxed) + layout.size());
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size(), LIVE.load(Relaxed) + layout.size());
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The old block may live on beside the new one while it is copied: count both.
        Self::check(new_size, LIVE.load(Relaxed) + new_size);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

/// Reports the allocation over the limit on stderr and aborts. Allocates nothing (it
/// runs inside the allocator): the message is formatted into a buffer on the stack.
fn over_limit(what: &[u8], size: usize, limit: usize) -> ! {
    let mut buf = [0u8; 256];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let k = bytes.len().min(buf.len() - n);
        buf[n..n + k].copy_from_slice(&bytes[..k]);
        n += k;
    };
    put(b"==nfslock-fuzz== allocation limit exceeded: ");
    put(what);
    put(decimal(size, &mut [0u8; 20]));
    put(b" bytes, limit ");
    put(decimal(limit, &mut [0u8; 20]));
    put(b" bytes (fuzz/src/lib.rs)\n");
    // SAFETY: writes bytes from a live buffer to stderr, then aborts.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::abort()
    }
}

fn decimal(mut v: usize, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &out[i..];
        }
    }
}

/// Runs `target`'s checks on `data` with its allocation limit armed.
pub fn fuzz(target: &str, data: &[u8]) {
    // A panic is the crash to report: disarm the limit before the panic hook (libFuzzer's,
    // which prints the message and aborts) formats it, so that it is not reported as an
    // allocation over the limit instead.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            LIMIT.store(0, Relaxed);
            report(info)
        }));
    });
    let limit = nfslock::fuzzing::alloc_limit(target);
    BASE.store(LIVE.load(Relaxed), Relaxed);
    LIMIT.store(limit, Relaxed);
    nfslock::fuzzing::run(target, data);
    LIMIT.store(0, Relaxed);
}
