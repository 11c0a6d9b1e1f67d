//! Fault decisions: whether this operation's reply is lost, or whether it
//! fails transiently instead of being done.
//!
//! All randomness comes from one seeded generator so a run with `--seed S`
//! makes the same choices for the same sequence of operations (the FUSE
//! session is single-threaded, so the sequence is the kernel's).

use std::sync::{Mutex, RwLock};

use fuser::Errno;

use crate::options::{Op, Settings};
use crate::stats::Stats;

/// The kinds of transient failure an NFS client sees from a flaky server:
/// a file handle gone stale, an I/O error, an interrupted (soft/intr) call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transient {
    Estale,
    Eio,
    Eintr,
}

impl Transient {
    pub fn errno(self) -> Errno {
        match self {
            Transient::Estale => Errno::from_i32(libc::ESTALE),
            Transient::Eio => Errno::EIO,
            Transient::Eintr => Errno::EINTR,
        }
    }

    pub fn stat_key(self) -> &'static str {
        match self {
            Transient::Estale => "transient_estale",
            Transient::Eio => "transient_eio",
            Transient::Eintr => "transient_eintr",
        }
    }
}

/// splitmix64: tiny, good enough for fault dice, and needs no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Faults {
    settings: RwLock<Settings>,
    rng: Mutex<Rng>,
    verbose: bool,
}

impl Faults {
    pub fn new(settings: Settings, seed: u64, verbose: bool) -> Faults {
        Faults {
            settings: RwLock::new(settings),
            rng: Mutex::new(Rng(seed)),
            verbose,
        }
    }

    pub fn settings(&self) -> Settings {
        *self.settings.read().unwrap()
    }

    pub fn set(&self, settings: Settings) {
        *self.settings.write().unwrap() = settings;
    }

    /// Rolls the dice with probability `p`. Probabilities 0 and 1 do not
    /// consume randomness, so switching a fault fully on or off does not
    /// shift the sequence seen by the other faults.
    fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.rng.lock().unwrap().next_f64() < p
        }
    }

    /// Should the reply of this (already performed) operation be lost?
    /// Counts the injection in `stats` when it says yes.
    pub fn lose_reply(&self, op: Op, stats: &Stats) -> bool {
        let s = self.settings();
        if !s.lose_ops.contains(op) || !self.chance(s.lose_replies) {
            return false;
        }
        stats.bump(match op {
            Op::Link => "lost_reply_link",
            Op::Rename => "lost_reply_rename",
            Op::Unlink => "lost_reply_unlink",
            _ => "lost_reply_create",
        });
        if self.verbose {
            eprintln!("nfslock-faultfs: lost reply for {}", op.name());
        }
        true
    }

    /// Should this operation fail transiently instead of being done?
    /// Counts the injection in `stats` when it says yes.
    pub fn transient(&self, op: Op, stats: &Stats) -> Option<Errno> {
        let s = self.settings();
        if !s.transient_ops.contains(op) || !self.chance(s.transient) {
            return None;
        }
        let kind = match self.rng.lock().unwrap().next_u64() % 3 {
            0 => Transient::Estale,
            1 => Transient::Eio,
            _ => Transient::Eintr,
        };
        stats.bump(kind.stat_key());
        if self.verbose {
            eprintln!("nfslock-faultfs: transient {:?} on {}", kind, op.name());
        }
        Some(kind.errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_choices() {
        let s = Settings { lose_replies: 0.5, ..Settings::default() };
        let stats = Stats::new();
        let a = Faults::new(s, 42, false);
        let b = Faults::new(s, 42, false);
        let da: Vec<bool> = (0..64).map(|_| a.lose_reply(Op::Link, &stats)).collect();
        let db: Vec<bool> = (0..64).map(|_| b.lose_reply(Op::Link, &stats)).collect();
        assert_eq!(da, db);
        assert!(da.iter().any(|x| *x) && da.iter().any(|x| !*x));
    }

    #[test]
    fn probability_bounds_and_op_sets() {
        let stats = Stats::new();
        let f = Faults::new(Settings { transient: 1.0, ..Settings::default() }, 1, false);
        assert!(f.transient(Op::Open, &stats).is_some());
        assert!(f.transient(Op::Unlink, &stats).is_none(), "unlink is not a default transient op");
        assert!(!f.lose_reply(Op::Link, &stats), "lose-replies defaults to 0");
    }
}
