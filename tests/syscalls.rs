//! The lock's hot path, counted: a steady-state create+unlock cycle of a path this
//! process locked before is exactly link(2), lstat(2) and unlink(2), and nothing else of
//! any kind (README "The protocol"); a lease's acquire+unlock is link(2), rename(2) and
//! unlink(2) (docs/lease-protocol.md), the keep-alive thread asleep meanwhile. strace counts what a C program using the installed
//! header asks of the kernel over 200 cycles.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/cdylib.rs"]
mod cdylib;

const CYCLES: usize = 200;

/// Runs tests/syscalls/cycle.c under strace; the calls per cycle, by name.
fn traced_cycles(extra: &[&str]) -> BTreeMap<String, usize> {
    let work = tempfile::Builder::new().prefix("nfslock-syscalls-").tempdir().unwrap();
    let exe = work.path().join("cycle");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/syscalls/cycle.c");
    cdylib::build_c_program(&[src], &exe, &[]).unwrap_or_else(|e| panic!("{e}"));
    let trace = work.path().join("trace");
    let lock = work.path().join("p");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(&exe)
        .arg(&lock)
        .arg(CYCLES.to_string())
        .args(extra)
        .output()
        .expect("strace runs (scripts/deps installs it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    between_markers(&trace)
}

fn count(counts: &BTreeMap<String, usize>, names: &[&str]) -> usize {
    names.iter().filter_map(|n| counts.get(*n)).sum()
}

fn assert_cycle(counts: &BTreeMap<String, usize>, expected: &[(&str, &[&str])]) {
    let per_cycle: BTreeMap<&str, f64> = counts.iter().map(|(k, v)| (k.as_str(), *v as f64 / CYCLES as f64)).collect();
    let total: usize = counts.values().sum();
    let each_once = expected.iter().all(|(_, names)| count(counts, names) == CYCLES);
    let what: Vec<&str> = expected.iter().map(|(what, _)| *what).collect();
    assert!(each_once && total == CYCLES * expected.len(), "a cycle must be {}; per cycle: {per_cycle:?}", what.join(" + "));
}

#[test]
fn a_steady_state_cycle_is_link_lstat_unlink() {
    let counts = traced_cycles(&[]);
    assert_cycle(&counts, &[("link", &["link", "linkat"]), ("lstat", &["lstat", "newfstatat"]), ("unlink", &["unlink", "unlinkat"])]);
}

#[test]
fn a_steady_state_lease_cycle_is_link_rename_unlink() {
    let counts = traced_cycles(&["10000"]);
    assert_cycle(
        &counts,
        &[("link", &["link", "linkat"]), ("rename", &["rename", "renameat", "renameat2"]), ("unlink", &["unlink", "unlinkat"])],
    );
}

/// Counts the system calls by name between close(-42) and close(-43).
fn between_markers(trace: &Path) -> BTreeMap<String, usize> {
    let text = fs::read_to_string(trace).unwrap();
    let mut counts = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        // "PID name(args) = result" with -f.
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest).trim_start();
        if call.starts_with("close(-42)") {
            inside = true;
            continue;
        }
        if call.starts_with("close(-43)") {
            return counts;
        }
        if inside {
            let name = call.split('(').next().unwrap_or("").to_string();
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    panic!("the markers were not both found in {}:\n{text}", trace.display());
}
