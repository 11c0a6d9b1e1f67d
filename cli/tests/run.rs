//! `nfslock [OPTIONS] PATH -- COMMAND`: exit codes of every path, the lock held while
//! COMMAND runs and released after, signals forwarded, the lock released when nfslock
//! is told to stop or dies, leases.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use predicates::prelude::*;
use support::*;

#[test]
fn runs_the_command_holding_the_lock_and_exits_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let x_s = x.to_str().unwrap();
    // COMMAND sees the lock file, with the command line as the message.
    let script = format!("cat {}.nfs_lock; exit 3", x_s);
    nfslock().args([x_s, "--", "sh", "-c", &script]).assert().code(3).stdout(predicate::str::contains("(message\"sh -c 'cat"));
    assert!(!lock_file(&x).exists(), "released after the command");
    // No "--" needed; the command's own options are its own.
    nfslock().args([x_s, "sh", "-c", "exit 0", "-n"]).assert().code(0);
    nfslock()
        .args(["-m", "my message", x_s, "--", "cat", &format!("{x_s}.nfs_lock")])
        .assert()
        .success()
        .stdout(predicate::str::contains("my message"));
    // Killed by a signal: 128+N.
    nfslock().args([x_s, "--", "sh", "-c", "kill -USR1 $$"]).assert().code(128 + 10);
}

#[test]
fn busy_and_timeout_codes() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let x_s = x.to_str().unwrap();
    let _holder = hold(&x, "the holder");
    nfslock()
        .args(["-n", x_s, "--", "true"])
        .assert()
        .code(75)
        .stderr(predicate::str::contains("busy").and(predicate::str::contains("the holder")));
    nfslock().args(["-n", "-E", "9", x_s, "--", "true"]).assert().code(9);
    let start = Instant::now();
    nfslock().args(["-w", "0.3", x_s, "--", "true"]).assert().code(124).stderr(predicate::str::contains("timed out"));
    assert!(start.elapsed() >= Duration::from_millis(300));
    nfslock().args(["-w", "0.1", "-E", "9", x_s, "--", "true"]).assert().code(9);
    nfslock().args(["-w", "0.1", "-E", "9", "--timeout-exit-code", "8", x_s, "--", "true"]).assert().code(8);
    // Nothing on a non-terminal while waiting, unless -v.
    nfslock().args(["-w", "0.4", x_s, "--", "true"]).assert().code(124).stderr(predicate::str::contains("waiting for").not());
    nfslock().args(["-v", "-w", "0.6", x_s, "--", "true"]).assert().code(124).stderr(
        predicate::str::contains(format!("waiting for {x_s}: held by {} pid", hostname())).and(predicate::str::contains("(the holder)")),
    );
}

#[test]
fn usage_and_command_errors() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let x_s = x.to_str().unwrap();
    nfslock().args([x_s]).assert().code(64);
    nfslock().args(["-w", "soon", x_s, "--", "true"]).assert().code(64);
    nfslock().args(["-n", "-w", "1", x_s, "--", "true"]).assert().code(64);
    nfslock().args(["-E", "300", x_s, "--", "true"]).assert().code(64);
    nfslock().args(["--lease", "0.01", x_s, "--", "true"]).assert().code(64);
    nfslock().args([&format!("{}/", dir.path().display()), "--", "true"]).assert().code(64);
    nfslock().arg("--help").assert().code(0).stdout(predicate::str::contains("Exit status"));
    nfslock().args([x_s, "--", "/no/such/command"]).assert().code(127);
    nfslock().args([x_s, "--", dir.path().to_str().unwrap()]).assert().code(126);
    assert!(!lock_file(&x).exists(), "released after a command that could not run");
    // Other errors: a missing directory, a symlink where the lock file should be.
    nfslock().args([dir.path().join("no/x").to_str().unwrap(), "--", "true"]).assert().code(70);
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("s.nfs_lock")).unwrap();
    nfslock().args([dir.path().join("s").to_str().unwrap(), "--", "true"]).assert().code(70);
}

/// COMMAND that records the signals it gets in `log`, then exits 0 on SIGTERM.
fn trapping_command(log: &std::path::Path, ready: &std::path::Path) -> String {
    format!(
        "trap 'echo USR1 >>{l}' USR1; trap 'echo HUP >>{l}' HUP; trap 'echo TERM >>{l}; exit 0' TERM; touch {r}; while :; do sleep 0.05; done",
        l = log.display(),
        r = ready.display()
    )
}

#[test]
fn signals_are_forwarded_and_the_lock_released_after() {
    let dir = tempfile::tempdir().unwrap();
    let (x, log, ready) = (dir.path().join("x"), dir.path().join("log"), dir.path().join("ready"));
    let script = trapping_command(&log, &ready);
    let mut cli = start(&[x.to_str().unwrap(), "--", "sh", "-c", &script]);
    wait_until("the command runs", || ready.exists());
    cli.signal(Signal::SIGUSR1);
    wait_until("the command saw SIGUSR1", || fs::read_to_string(&log).unwrap_or_default().contains("USR1"));
    assert!(lock_file(&x).exists(), "still held while the command runs");
    cli.signal(Signal::SIGHUP);
    wait_until("the command saw SIGHUP", || fs::read_to_string(&log).unwrap_or_default().contains("HUP"));
    cli.signal(Signal::SIGTERM);
    let status = cli.wait();
    assert_eq!(status.code(), Some(0), "the command's own status after it handled SIGTERM");
    assert_eq!(fs::read_to_string(&log).unwrap(), "USR1\nHUP\nTERM\n");
    assert!(!lock_file(&x).exists(), "released after the command ended");
}

#[test]
fn lock_released_when_the_cli_is_killed() {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let (x, ready) = (dir.path().join("x"), dir.path().join("ready"));
        let script = format!("touch {}; exec sleep 60", ready.display());
        let mut cli = start(&[x.to_str().unwrap(), "--", "sh", "-c", &script]);
        // Until the shell has become sleep: a shell waiting for `touch` when SIGINT
        // comes lets its child finish and then goes on (and would sleep 60 s).
        wait_until("the command runs", || ready.exists() && children_named(cli.pid(), "sleep"));
        cli.signal(sig);
        let status = cli.wait();
        assert_eq!(status.code(), Some(128 + sig as i32), "{sig}: the command died of it, and so says nfslock");
        assert!(!lock_file(&x).exists(), "{sig}: released");
        nfslock().args(["-n", x.to_str().unwrap(), "--", "true"]).assert().success();
    }
}

#[test]
fn a_signal_during_the_wait_ends_it_and_leaves_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (x, ran) = (dir.path().join("x"), dir.path().join("ran"));
    let mut holder = hold(&x, "first");
    let waiter = start(&[x.to_str().unwrap(), "--", "touch", ran.to_str().unwrap()]);
    let mut waiter = waiter;
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiter.0.try_wait().unwrap().is_none(), "waits");
    waiter.signal(Signal::SIGTERM);
    assert_eq!(waiter.wait().code(), Some(128 + 15));
    holder.signal(Signal::SIGTERM);
    holder.wait();
    assert!(!ran.exists(), "the command never ran");
    assert!(!lock_file(&x).exists(), "no lock left by either");
}

#[test]
fn the_command_ends_when_nfslock_is_killed_outright() {
    let dir = tempfile::tempdir().unwrap();
    let (x, pidfile) = (dir.path().join("x"), dir.path().join("pid"));
    let script = format!("echo $$ >{}; exec sleep 60", pidfile.display());
    let mut cli = start(&[x.to_str().unwrap(), "--", "sh", "-c", &script]);
    wait_until("the command runs", || fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')));
    let pid: i32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    cli.signal(Signal::SIGKILL);
    cli.wait();
    // PR_SET_PDEATHSIG: the command does not run on without the lock.
    wait_until("the command is gone", || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
    });
    // The dead holder's lock is cleared by the next taker on this host.
    nfslock().args(["-n", x.to_str().unwrap(), "--", "true"]).assert().success();
}

#[test]
fn a_broken_lease_sends_sigterm_and_exits_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (x, log, ready) = (dir.path().join("x"), dir.path().join("log"), dir.path().join("ready"));
    let script = trapping_command(&log, &ready);
    let mut cli = start(&["--lease", "2", x.to_str().unwrap(), "--", "sh", "-c", &script]);
    wait_until("the command runs", || ready.exists());
    nfslock().args(["status", "--json", x.to_str().unwrap()]).assert().code(1).stdout(predicate::str::contains("\"lease_ms\":2000"));
    nfslock().args(["break", "--yes", "--reason", "test", x.to_str().unwrap()]).assert().success();
    assert_eq!(cli.wait().code(), Some(76), "lost");
    assert!(fs::read_to_string(&log).unwrap().contains("TERM"), "the command got SIGTERM");
}

#[test]
fn a_lease_is_kept_alive_past_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let x_s = x.to_str().unwrap();
    // A 0.5 s lease, a command of 2.5 s: renewed all along, so a waiter watching it for
    // three leases never breaks it.
    let mut holder = start(&["--lease", "0.5", x_s, "--", "sleep", "2.5"]);
    wait_until("the holder has the lock", || lock_file(&x).exists());
    nfslock().args(["--lease", "0.5", "-w", "1.5", x_s, "--", "true"]).assert().code(124);
    assert_eq!(holder.wait().code(), Some(0));
}

#[test]
fn shared_holders_exclude_an_exclusive_one() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let x_s = x.to_str().unwrap();
    let _a = hold_with(&x, &["-s", "--lease", "5", "-m", "reader a"]);
    // A second reader joins at once.
    nfslock().args(["-s", "--lease", "5", "-n", x_s, "--", "true"]).assert().success();
    let _b = start(&["-s", "-m", "reader b", x_s, "--", "sleep", "60"]);
    let status = || {
        let out = nfslock().args(["status", "--json", x_s]).assert().code(1).get_output().stdout.clone();
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    wait_until("both readers hold it", || status()["shared_holders"] == 2);
    let v = status();
    assert_eq!((v["mode"].as_str(), v["lease_ms"].as_u64()), (Some("shared"), Some(5000)), "{v}");
    nfslock().args(["-n", x_s, "--", "true"]).assert().code(75);
}

/// Whether a child of process `pid` (of any of its threads) runs the program `name`.
fn children_named(pid: i32, name: &str) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.split_whitespace().any(|child| fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|comm| comm.trim() == name))
    })
}
