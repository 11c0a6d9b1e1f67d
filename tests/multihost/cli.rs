//! The nfslock command across two simulated hosts (issue 11): a lock held on host A by
//! `nfslock PATH -- COMMAND` is busy for `nfslock -n` on host B, `nfslock status` on B
//! names host A, B's `unlock` refuses another host's lock, and B's waiting nfslock
//! takes the lock once A's command ends. Alone: `cargo test --test multihost cli`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::host::{self, Faults, Host, Scratch, Site};
use super::{build, describe, serial, SHORT};

/// nfslock(1) from cli/, built into a target directory of its own (the `cargo test`
/// running us holds the lock on the main one).
fn nfslock_binary(root: &Path, tmp: &Path) -> PathBuf {
    let target = tmp.parent().expect("the tmp dir is inside the target dir").join("rig-cli");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--locked", "--quiet", "-p", "nfslock-cli", "--bin", "nfslock", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building nfslock failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let exe = target.join("debug/nfslock");
    assert!(exe.is_file(), "{} was not built", exe.display());
    exe
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_lock_held_across_two_hosts() {
    let _serial = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let scratch = Scratch::new(tmp, "multihost-cli");
    // A host's `spawn` runs the site's program: here nfslock itself.
    let site = Site {
        backing: scratch.0.join("backing"),
        mount: scratch.0.join("shared"),
        state: scratch.0.join("state"),
        faultfs: build::faultfs(root, tmp),
        worker: nfslock_binary(root, tmp),
        nfs: None,
    };
    for dir in [&site.backing, &site.mount, &site.state] {
        fs::create_dir_all(dir).unwrap();
    }
    let a = Host::boot(&site, "host-a", Faults::default(), 300);
    let b = Host::boot(&site, "host-b", Faults::default(), 301);
    let lock = site.mount.join("job");
    let lock_s = lock.to_str().unwrap();
    let stop = scratch.0.join("stop");
    let until_stopped = format!("while [ ! -e {} ]; do sleep 0.05; done", stop.display());

    let holder = a.spawn(&site, &["-m", "held on a", lock_s, "--", "sh", "-c", &until_stopped]);
    let start = Instant::now();
    while !site.backing.join("job.nfs_lock").exists() {
        assert!(start.elapsed() < SHORT, "host A's nfslock never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }

    let busy = b.run(&site, &["-n", lock_s, "--", "true"], SHORT);
    assert_eq!(busy.status.code(), Some(75), "B's nfslock -n: {}", describe(&busy));
    assert!(text(&busy.stderr).contains("host-a"), "B is told who holds it: {}", describe(&busy));

    let status = b.run(&site, &["status", "--json", lock_s], SHORT);
    assert_eq!(status.status.code(), Some(1), "B's status: {}", describe(&status));
    let seen = text(&status.stdout);
    for want in ["\"state\":\"held\"", "\"host\":\"host-a\"", "\"message\":\"held on a\"", "\"mode\":\"exclusive\""] {
        assert!(seen.contains(want), "B's status says {want}: {seen}");
    }
    let plain = b.run(&site, &["status", lock_s], SHORT);
    assert!(text(&plain.stdout).contains("holder:   host-a pid "), "{}", describe(&plain));

    // Another host's lock: B may neither unlock it nor get it by waiting a little.
    let unlock = b.run(&site, &["unlock", lock_s], SHORT);
    assert_eq!(unlock.status.code(), Some(75), "B's unlock: {}", describe(&unlock));
    let timed_out = b.run(&site, &["-w", "0.5", lock_s, "--", "true"], SHORT);
    assert_eq!(timed_out.status.code(), Some(124), "B's -w 0.5: {}", describe(&timed_out));

    // B waits; A's command ends and A releases; B takes it and runs its command.
    let show = format!("cat {}.nfs_lock", lock_s);
    let mut waiter = b.spawn(&site, &["-m", "held on b", lock_s, "--", "sh", "-c", &show]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiter.try_wait().unwrap().is_none(), "B waits while A holds");
    fs::write(&stop, b"").unwrap();
    let held = host::finish(holder, SHORT);
    assert_eq!(held.status.code(), Some(0), "A's nfslock exits with its command's status: {}", describe(&held));
    let took = host::finish(waiter, SHORT);
    assert_eq!(took.status.code(), Some(0), "B's nfslock: {}", describe(&took));
    assert!(text(&took.stdout).contains("(host host-b)") && text(&took.stdout).contains("held on b"), "{}", describe(&took));
    assert!(!site.backing.join("job.nfs_lock").exists(), "no lock file left behind");
    let free = a.run(&site, &["status", lock_s], SHORT);
    assert_eq!(free.status.code(), Some(0), "A sees it free: {}", describe(&free));
    drop((a, b));
}
