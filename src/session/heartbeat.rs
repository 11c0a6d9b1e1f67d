//! The heartbeat thread: one per session, it renews the session's lease (lease.rs)
//! every quarter of the timeout, then reaps dead sessions for at most another quarter.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::lease;
use super::reaper;
use super::state::{locked, Shared};

/// What the heartbeat's reaping is called in errors (which it drops: they are met again
/// in the next round).
const OP: &str = "session heartbeat";

pub fn start(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("nfslock-session".into()).spawn(move || run(&shared))
}

pub fn stop(shared: &Shared) {
    shared.stop_heartbeat();
}

fn run(shared: &Shared) {
    let period = lease::period(shared.timeout);
    loop {
        if shared.sleep_unless_stopped(period) {
            return;
        }
        let beaten = lease::beat(shared, &mut locked(&shared.beat));
        if beaten.is_err() && locked(&shared.beat).expired.is_some() {
            return;
        }
        // Bounded, so that reaping a large dead session never delays the next beat; what
        // is left is reaped in the next rounds. Errors are met again then too.
        let deadline = Instant::now() + period;
        let _ = reaper::reap_dead(shared, OP, Some(deadline));
    }
}
