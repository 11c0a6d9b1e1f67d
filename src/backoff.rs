//! The back-off every waiter of the library sleeps by: delays that double from a first
//! step up to a cap. A lock-file waiter draws each delay from the upper half of its
//! step (jitter, so that waiters do not retry in lockstep); the counter's token waiter
//! sleeps each step exactly (it re-reads the counter between sleeps, and a holder
//! writes it within microseconds).

use std::time::Duration;

/// Delays that double from a first step up to a cap.
#[derive(Debug)]
pub struct Backoff {
    step: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// Each delay drawn uniformly from the upper half of its step, from getrandom(2)
    /// (see `random`: a forked child never draws its parent's delays).
    pub fn jittered(first: Duration, max: Duration) -> Backoff {
        Backoff { step: first, max, jitter: true }
    }

    /// Each delay its step exactly.
    pub fn exact(first: Duration, max: Duration) -> Backoff {
        Backoff { step: first, max, jitter: false }
    }

    /// The next delay; the step after it is twice this one's, at most the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = if self.jitter {
            let half = self.step / 2;
            half + Duration::from_nanos(crate::random::unpredictable_u64() % (half.as_nanos() as u64 + 1))
        } else {
            self.step
        };
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Sleeps the next delay, but not past `left` (what is left of the caller's wait).
    pub fn sleep_at_most(&mut self, left: Duration) {
        std::thread::sleep(self.next_delay().min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_millis(100);

    #[test]
    fn jittered_delays_fall_in_the_upper_half_of_each_doubling_step() {
        let mut b = Backoff::jittered(FIRST, MAX);
        let mut step = FIRST;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= step / 2 && d <= step, "{d:?} outside the upper half of {step:?}");
            step = (step * 2).min(MAX);
        }
    }

    #[test]
    fn exact_delays_double_up_to_the_cap() {
        let mut b = Backoff::exact(Duration::from_micros(50), Duration::from_millis(5));
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay().as_micros()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn a_sleep_never_passes_what_is_left() {
        let mut b = Backoff::exact(Duration::from_secs(5), Duration::from_secs(5));
        let start = std::time::Instant::now();
        b.sleep_at_most(Duration::from_millis(10));
        assert!(start.elapsed() < Duration::from_secs(4));
    }
}
