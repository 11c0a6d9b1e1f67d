//! `nfslock status`: its text and JSON, exit codes 0 free / 1 held / 2 error, --watch.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use predicates::prelude::*;
use serde_json::Value;
use support::*;

fn json_of(args: &[&str], code: i32) -> Vec<Value> {
    let out = nfslock().args(args).assert().code(code).get_output().stdout.clone();
    String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn json_tells_holder_host_pid_message_since_lease_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let (x, free) = (dir.path().join("x"), dir.path().join("free"));
    let holder = hold(&x, "nightly import");
    let v = json_of(&["status", "--json", x.to_str().unwrap()], 1).remove(0);
    assert_eq!(v["state"], "held");
    assert_eq!(v["host"], hostname());
    assert_eq!(v["pid"], holder.pid());
    assert_eq!(v["message"], "nightly import");
    assert_eq!(v["mode"], "exclusive");
    assert_eq!(v["lease_ms"], Value::Null);
    assert_eq!(v["fencing_token"], 0);
    assert_eq!(v["shared_holders"], 0);
    assert_eq!(v["lock_file"], lock_file(&x).to_str().unwrap());
    assert!(v["since"].as_str().unwrap().ends_with('Z') && v["holder_started"].as_str().unwrap().ends_with('Z'), "{v}");
    let age = v["held_for_s"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&age), "{v}");
    // Several paths: one line each; any held: 1.
    let both = json_of(&["status", "--json", x.to_str().unwrap(), free.to_str().unwrap()], 1);
    assert_eq!((both.len(), both[1]["state"].as_str(), both[1]["pid"].is_null()), (2, Some("free"), true));
    // The lock file itself names the same lock.
    assert_eq!(json_of(&["status", "--json", lock_file(&x).to_str().unwrap()], 1)[0]["pid"], holder.pid());
}

#[test]
fn exit_codes_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let (x, free, bad) = (dir.path().join("x"), dir.path().join("free"), dir.path().join("bad"));
    nfslock().args(["status", free.to_str().unwrap()]).assert().code(0).stdout(format!("{}: free\n", free.display()));
    let _holder = hold(&x, "make -j4");
    nfslock()
        .args(["status", x.to_str().unwrap()])
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains(format!("{}: held\n  holder:   {} pid", x.display(), hostname()))
                .and(predicate::str::contains("(make -j4)")),
        )
        .stdout(predicate::str::contains("lease:    none (a plain lock)"));
    // Not a record, a missing directory: 2, even beside a held one.
    std::fs::write(lock_file(&bad), b"garbage").unwrap();
    nfslock().args(["status", bad.to_str().unwrap()]).assert().code(2).stdout(predicate::str::contains("unreadable"));
    let missing = dir.path().join("no/such");
    nfslock().args(["status", x.to_str().unwrap(), missing.to_str().unwrap()]).assert().code(2);
    let v = json_of(&["status", "--json", &format!("{}/", dir.path().display())], 2).remove(0);
    assert_eq!((v["state"].as_str(), v["errno"].as_str()), (Some("error"), Some("EINVAL")), "{v}");
    nfslock().args(["status"]).assert().code(64);
}

#[test]
fn watch_prints_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let mut watcher =
        Proc(Command::new(BIN).args(["status", "--json", "--watch", "0.05", x.to_str().unwrap()]).stdout(Stdio::piped()).spawn().unwrap());
    let mut lines = BufReader::new(watcher.0.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["state"], "free");
    let mut holder = hold(&x, "watched");
    let held = next();
    assert_eq!((held["state"].as_str(), held["pid"].as_i64()), (Some("held"), Some(holder.pid() as i64)));
    holder.signal(nix::sys::signal::Signal::SIGTERM);
    holder.wait();
    assert_eq!(next()["state"], "free", "one line per change, not per look");
}
