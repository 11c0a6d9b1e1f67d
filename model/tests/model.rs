//! The lease protocol's model check (docs/lease-protocol.md), run by
//! `cargo test --release --manifest-path model/Cargo.toml`. Bounds: README.md.

use nfslock_lease_model::{check, Bounds, Mutation, Outcome, Protocol};

/// Host A runs p0 and p1, host B runs p2; fresh reads; one claim per process, epochs 0..1;
/// one crash; fencing tokens on.
const FRESH: Bounds = Bounds { stale: 0, claims: 1, max_epoch: 1, max_crashes: 1, ..Bounds::STANDARD };
/// The same with stale reads of L (any value of the current tick's), no fencing.
const STALE_L: Bounds = Bounds { stale: 1, stale_tokens: false, fencing: false, ..FRESH };

fn report(o: &Outcome) -> String {
    let mut s = format!("{} states, depth {}\n", o.unique_states, o.depth);
    for (name, trace) in &o.violations {
        s.push_str(&format!("VIOLATED: {name}\n{trace}\n"));
    }
    for name in &o.unreached {
        s.push_str(&format!("UNREACHED (the check would be vacuous): {name}\n"));
    }
    s
}

/// The protocol exactly as docs/lease-protocol.md writes it. Fails today: two counterexamples
/// with fresh reads and no lost reply (an acquisition of a parked token does not restart
/// what breakers see; a releaser paused between its rename and its unlink(L)), see README.md.
#[test]
fn the_documented_protocol_has_no_counterexample() {
    let b = Bounds { max_crashes: 0, fencing: false, ..FRESH };
    let o = check(Protocol::DOC, b, 2, true);
    assert!(o.violations.is_empty(), "docs/lease-protocol.md as written:\n{}", report(&o));
}

/// The protocol with fixes A, B and C (README.md), every reachable state, fresh reads.
#[test]
fn the_fixed_protocol_holds_with_fresh_reads() {
    let o = check(Protocol::FIXED, FRESH, 2, false);
    assert!(o.violations.is_empty() && o.unreached.is_empty(), "{}", report(&o));
}

/// The same with stale reads of L (lstat, the record read), every reachable state.
#[test]
fn the_fixed_protocol_holds_with_stale_reads_of_l() {
    let o = check(Protocol::FIXED, STALE_L, 2, false);
    let unreached: Vec<_> = o.unreached.iter().filter(|n| !n.contains("fencing")).collect();
    assert!(o.violations.is_empty() && unreached.is_empty(), "{}", report(&o));
}

/// Fix B matters only with stale reads: without it a same-host dead-holder clearing removes
/// another process's lock.
#[test]
fn without_fix_b_stale_reads_of_l_give_a_counterexample() {
    let p = Protocol { fix_break_checks_nlink: false, ..Protocol::FIXED };
    let o = check(p, STALE_L, 2, true);
    assert!(!o.violations.is_empty(), "expected a counterexample:\n{}", report(&o));
}

/// Every mutation of the (fixed) protocol must give a counterexample.
#[test]
fn every_mutation_gives_a_counterexample() {
    let mut missed = Vec::new();
    for m in Mutation::ALL {
        let b = match m {
            // Needs a second claim of the same process.
            Mutation::TokenNameReused => Bounds { claims: 2, max_crashes: 0, fencing: false, ..FRESH },
            // Needs a stale view of L (with fresh reads, step 2 is redundant after fix C).
            Mutation::BreakSkipsLCheck => STALE_L,
            _ => FRESH,
        };
        let o = check(Protocol::FIXED.with(m), b, 2, true);
        if o.violations.is_empty() {
            missed.push(format!("{m:?}: {}", report(&o)));
        } else {
            eprintln!("{m:?}: caught: {}", o.violations.iter().map(|v| v.0).collect::<Vec<_>>().join("; "));
        }
    }
    assert!(missed.is_empty(), "mutations with no counterexample:\n{}", missed.join("\n"));
}

/// The doc's first way of recognising a lost link reply, "by L's inode" (lstat), is unsafe
/// when lstat(L) answers from an older version: an old L of our own claim passes for ours.
#[test]
fn link_recovery_by_lstat_of_l_gives_a_counterexample_with_stale_reads() {
    let p = Protocol { link_recovery_by_nlink: false, ..Protocol::FIXED };
    let o = check(p, STALE_L, 2, true);
    assert!(!o.violations.is_empty(), "expected a counterexample:\n{}", report(&o));
}
