//! The one clock leases are measured on (by holders, watchers and breakers): CLOCK_BOOTTIME, this machine's own monotonic
//! time including time suspended. A suspended holder must count the suspension against
//! its lease (others kept watching meanwhile), and a watcher's wait spans real time.
//! It is never compared with another machine's clock.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// Time since boot, including suspended time.
pub fn now() -> Duration {
    // CLOCK_BOOTTIME exists on every Linux this library supports; CLOCK_MONOTONIC
    // (which stops during suspend) is the fallback should it ever fail.
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().clamp(0, 999_999_999) as u32)
}
