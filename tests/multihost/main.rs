//! The multi-host rig: simulated hosts (namespaces) sharing one directory through their
//! own instances of a fault-injecting FUSE filesystem, each running workers that use
//! libnfslock through its C API. Every scenario checks the lock's promises under one
//! kind of NFS misbehaviour and adds a row to the table printed at the end (also written
//! to target/multihost-table.md).
//!
//! Needs root, unshare/nsenter (util-linux) and /dev/fuse; `scripts/deps` installs them.
//! One test: scenarios run one after another, bounded in time and count.

mod build;
mod cli;
mod host;
mod leases;
mod manager;
mod nfs;
mod sessions;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use host::{count, field, Backend, Faults, Host, Scratch, Site};

/// Acquisitions per worker in the mutual-exclusion scenarios.
const ROUNDS: u32 = 50;
const HOSTS: usize = 3;
const PROCS: usize = 4;
const WORKER_LIMIT: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(20);
/// Start times closer than this are the same process's (src/host.rs).
const START_TIME_TOLERANCE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Row {
    scenario: String,
    shape: String,
    acquisitions: u64,
    faults: u64,
    violations: u64,
    /// The control row: its violations are the point.
    expected_violations: bool,
    recoveries: u64,
    wall: Duration,
    notes: String,
}

struct Rig {
    base: Scratch,
    /// The repository (rig/nfs's scripts).
    root: PathBuf,
    faultfs: PathBuf,
    /// rig/nfsfs's binary (empty for the faultfs rig).
    nfsfs: PathBuf,
    worker: PathBuf,
    rows: Vec<Row>,
    failures: Vec<String>,
}

impl Rig {
    /// A site for one scenario: a fresh backing directory and mountpoint.
    fn site(&self, name: &str) -> (Site, Scratch) {
        let scratch = Scratch::new(&self.base.0, name);
        let site = Site {
            backing: scratch.0.join("backing"),
            mount: scratch.0.join("shared"),
            state: scratch.0.join("state"),
            faultfs: self.faultfs.clone(),
            worker: self.worker.clone(),
            nfs: None,
        };
        for dir in [&site.backing, &site.mount, &site.state, &site.backing.join("check")] {
            fs::create_dir_all(dir).unwrap();
        }
        (site, scratch)
    }

    fn check(&mut self, scenario: &str, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(format!("{scenario}: {}", what.into()));
        }
    }
}

fn hosts(site: &Site, faults: &[Faults]) -> Vec<Host> {
    faults
        .iter()
        .enumerate()
        .map(|(i, f)| Host::boot(site, &format!("host-{}", (b'a' + i as u8) as char), f.clone(), 100 + i as u64))
        .collect()
}

fn describe(out: &Output) -> String {
    format!("{}: {}{}", out.status, String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim())
}

/// 3 hosts x 4 processes, all taking one lock ROUNDS times, under `faults` on every host:
/// the marker never collides and the shared counter ends exact.
fn exclusion(rig: &mut Rig, name: &str, faults: Vec<Faults>) {
    let scenario = format!("mutual exclusion, {name}");
    let start = Instant::now();
    let (site, _scratch) = rig.site(&format!("exclusion-{}", name.replace(' ', "-")));
    let hosts = hosts(&site, &faults);
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let (lock_s, check_s, rounds) = (lock.to_str().unwrap(), check.to_str().unwrap(), ROUNDS.to_string());
    let children: Vec<_> =
        hosts.iter().flat_map(|h| (0..PROCS).map(move |_| h)).map(|h| h.spawn(&site, &["count", lock_s, check_s, &rounds])).collect();
    let (mut acq, mut viol) = (0, 0);
    let mut pids = Vec::new();
    for child in children {
        let out = host::finish(child, WORKER_LIMIT);
        acq += count(&out, "acq");
        viol += count(&out, "viol");
        pids.extend(field(&out, "pid"));
        let clean = count(&out, "err") == 0 && count(&out, "viol") == 0;
        rig.check(&scenario, out.status.success() && clean && field(&out, "acq").is_some(), describe(&out));
    }
    // Each host's PID namespace numbers its workers from the same start.
    let distinct = pids.iter().collect::<std::collections::HashSet<_>>().len();
    rig.check(&scenario, distinct < pids.len(), format!("no PID was shared between hosts: {pids:?}"));
    let expected = u64::from(ROUNDS) * (HOSTS * PROCS) as u64;
    let counter: u64 = fs::read_to_string(check.join("counter")).unwrap_or_default().trim().parse().unwrap_or(0);
    rig.check(&scenario, counter == expected && acq == expected, format!("counter {counter}, acquisitions {acq}, expected {expected}"));
    rig.check(&scenario, viol == 0, format!("{viol} violations"));
    rig.check(&scenario, !site.backing.join("lock.nfs_lock").exists(), "a lock file was left behind");
    let faults = hosts.iter().map(Host::faults_injected).sum();
    drop(hosts);
    rig.rows.push(Row {
        scenario,
        shape: format!("{HOSTS}x{PROCS}"),
        acquisitions: acq,
        faults,
        violations: viol,
        wall: start.elapsed(),
        notes: format!("counter {counter}/{expected}; {} workers, {distinct} distinct PIDs", pids.len()),
        ..Row::default()
    });
}

/// Single attempts under lost replies: a 0 always holds the lock, an EAGAIN never does,
/// and nothing is left behind once the workers exit.
fn lost_replies(rig: &mut Rig) {
    let scenario = "lost replies, single attempts".to_string();
    let start = Instant::now();
    let (site, _scratch) = rig.site("lost-replies");
    let faults = Faults { lose_replies: 0.3, ..Faults::default() };
    let hosts = hosts(&site, &vec![faults; HOSTS]);
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let (lock_s, check_s) = (lock.to_str().unwrap(), check.to_str().unwrap());
    let attempts = (ROUNDS * 4).to_string();
    let children: Vec<_> =
        hosts.iter().flat_map(|h| (0..PROCS).map(move |_| h)).map(|h| h.spawn(&site, &["lost", lock_s, check_s, &attempts])).collect();
    let (mut acq, mut viol) = (0, 0);
    for child in children {
        let out = host::finish(child, WORKER_LIMIT);
        acq += count(&out, "acq");
        viol += count(&out, "viol");
        let clean = count(&out, "err") == 0 && count(&out, "viol") == 0;
        rig.check(&scenario, out.status.success() && clean && field(&out, "acq").is_some(), describe(&out));
    }
    rig.check(&scenario, viol == 0, format!("{viol} violations"));
    rig.check(&scenario, acq > 0, "no attempt succeeded");
    let leftovers: Vec<String> = fs::read_dir(&site.backing)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nfs_lock") || n.starts_with(".nfslock-"))
        .collect();
    rig.check(&scenario, leftovers.is_empty(), format!("left behind: {leftovers:?}"));
    let faults = hosts.iter().map(Host::faults_injected).sum();
    rig.check(&scenario, faults > 0, "no fault was injected");
    drop(hosts);
    rig.rows.push(Row {
        scenario,
        shape: format!("{HOSTS}x{PROCS}"),
        acquisitions: acq,
        faults,
        violations: viol,
        wall: start.elapsed(),
        notes: "no orphaned lock".into(),
        ..Row::default()
    });
}

/// A holder SIGKILLed on host A: A's next process takes over at once; host B never
/// breaks it and may not unlock it.
fn killed_holder(rig: &mut Rig) {
    let scenario = "holder SIGKILLed on host A".to_string();
    let start = Instant::now();
    let (site, _scratch) = rig.site("killed-holder");
    let hosts = hosts(&site, &[Faults::default(), Faults::default()]);
    let (a, b) = (&hosts[0], &hosts[1]);
    let lock = site.mount.join("lock");
    let lock_s = lock.to_str().unwrap();
    let crash = a.run(&site, &["crash", lock_s], SHORT);
    rig.check(&scenario, field(&crash, "held").is_some() || String::from_utf8_lossy(&crash.stdout).contains("held"), describe(&crash));
    let mut expect = |h: &Host, args: &[&str], want: &str| {
        let out = h.run(&site, args, SHORT);
        let got = field(&out, "rc").unwrap_or_default();
        rig.check(&scenario, got == want, format!("{} {args:?}: want {want}, got {}", h.name, describe(&out)));
    };
    expect(b, &["try", lock_s], "EAGAIN");
    expect(b, &["blocking", lock_s, "200"], "ETIMEDOUT");
    expect(b, &["unlock_path", lock_s], "EPERM");
    expect(a, &["try", lock_s], "OK");
    expect(b, &["try", lock_s], "OK");
    drop(hosts);
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 3,
        recoveries: 1,
        wall: start.elapsed(),
        notes: "B: EAGAIN, ETIMEDOUT, EPERM; A recovers".into(),
        ..Row::default()
    });
}

/// Host A rebooted while holding: a new PID namespace with the same host name, where
/// the old holder's pid may be reused; its lock is stale by start time and cleared.
fn rebooted_host(rig: &mut Rig) {
    let scenario = "host A rebooted while holding".to_string();
    let start = Instant::now();
    let (site, _scratch) = rig.site("reboot");
    let mut hosts = hosts(&site, &[Faults::default(), Faults { attr_cache_ms: 100, ..Faults::default() }]);
    let lock = site.mount.join("lock");
    let lock_s = lock.to_str().unwrap();
    let mut holder = hosts[0].spawn(&site, &["hold", lock_s]);
    let mut line = [0u8; 64];
    let n = std::io::Read::read(holder.stdout.as_mut().unwrap(), &mut line).unwrap_or(0);
    let held = String::from_utf8_lossy(&line[..n]).to_string();
    rig.check(&scenario, held.starts_with("held"), format!("holder: {held}"));
    let busy = hosts[1].run(&site, &["try", lock_s], SHORT);
    rig.check(&scenario, field(&busy, "rc").as_deref() == Some("EAGAIN"), describe(&busy));
    let old_pid = held.trim().strip_prefix("held pid=").unwrap_or_default().to_string();
    // Start times within 1 s count as equal (Core's rule, for boot-time rounding), so a
    // PID reused within a second of the holder's start would look like the holder. A
    // real reboot is far longer; here the holder has run for a while before the crash.
    std::thread::sleep(START_TIME_TOLERANCE + Duration::from_millis(200));
    hosts[0].reboot(&site);
    let _ = holder.wait();
    // The old holder's PID belongs to a live process again, as after a real reboot: only
    // its start time shows that the lock's holder is gone.
    let reused = old_pid.parse().ok().and_then(|pid| hosts[0].occupy_pid(pid));
    rig.check(&scenario, reused.is_some(), format!("pid {old_pid} could not be reused in the new namespace"));
    let after = hosts[0].run(&site, &["read", lock_s], SHORT);
    rig.check(&scenario, field(&after, "pid") == Some(old_pid.clone()), format!("the record names pid {old_pid}: {}", describe(&after)));
    let taken = hosts[0].run(&site, &["try", lock_s], SHORT);
    rig.check(&scenario, field(&taken, "rc").as_deref() == Some("OK"), format!("after reboot: {}", describe(&taken)));
    if let Some(mut sleeper) = reused {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    drop(hosts);
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 2,
        recoveries: 1,
        wall: start.elapsed(),
        notes: format!("old holder's pid {old_pid} alive again in the new namespace"),
        ..Row::default()
    });
}

/// Records in Core's formats, written by a host that is not in the rig, read through
/// every host's client.
fn core_records(rig: &mut Rig) {
    let scenario = "Core records from a foreign host".to_string();
    let start = Instant::now();
    let (site, _scratch) = rig.site("core-records");
    let hosts = hosts(&site, &[Faults::default(), Faults { attr_cache_ms: 200, ..Faults::default() }]);
    let cases: [(&str, &[u8], &str, &[u8]); 3] = [
        (
            "human",
            b"((host core-host) (pid 77) (message \"with spaces\")\n (start_time (2024-01-15 10:30:00.120000Z)))\n",
            "core-host",
            b"with spaces",
        ),
        (
            "machine",
            b"((host core-host)(pid 78)(message\"q\\\"uote\\nline caf\\195\\169\"))",
            "core-host",
            "q\"uote\nline caf\u{e9}".as_bytes(),
        ),
        ("old", b"((host old-core-host) (pid 79) (message job))\n", "old-core-host", b"job"),
    ];
    for (name, bytes, want_host, want_message) in cases {
        fs::write(site.backing.join(format!("{name}.nfs_lock")), bytes).unwrap();
        let path = site.mount.join(name);
        for h in &hosts {
            let out = h.run(&site, &["read", path.to_str().unwrap()], SHORT);
            let ok = field(&out, "rc").as_deref() == Some("OK")
                && field(&out, "host") == Some(hex(want_host.as_bytes()))
                && field(&out, "message") == Some(hex(want_message));
            rig.check(&scenario, ok, format!("{name} via {}: {}", h.name, describe(&out)));
            let busy = h.run(&site, &["try", path.to_str().unwrap()], SHORT);
            rig.check(&scenario, field(&busy, "rc").as_deref() == Some("EAGAIN"), format!("{name}: {}", describe(&busy)));
        }
        rig.check(&scenario, fs::read(site.backing.join(format!("{name}.nfs_lock"))).unwrap() == bytes, "a foreign record was modified");
    }
    drop(hosts);
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 0,
        wall: start.elapsed(),
        notes: "3 record forms read, left untouched".into(),
        ..Row::default()
    });
}

/// The rig bites: a naive link(2) lock, which takes EEXIST at face value, loses its own
/// lock to a lost LINK reply and leaves it behind; the same lock works without faults.
fn naive_lock_bites(rig: &mut Rig) {
    let scenario = "naive lock (control)".to_string();
    let start = Instant::now();
    let (site, _scratch) = rig.site("naive");
    let hosts = hosts(&site, &[Faults::default(), Faults { lose_replies: 1.0, ..Faults::default() }]);
    let lock = site.mount.join("naive");
    let dir = site.mount.to_str().unwrap();
    let clean = hosts[0].run(&site, &["naive", lock.to_str().unwrap(), dir, "20", "500"], SHORT);
    rig.check(&scenario, count(&clean, "stuck") == 0 && count(&clean, "acq") == 20, format!("without faults: {}", describe(&clean)));
    let lossy = hosts[1].run(&site, &["naive", lock.to_str().unwrap(), dir, "20", "500"], SHORT);
    let bitten = count(&lossy, "stuck") == 1 && site.backing.join("naive.nfs_lock").exists();
    rig.check(&scenario, bitten, format!("the naive lock survived lost replies: {}", describe(&lossy)));
    let faults = hosts.iter().map(Host::faults_injected).sum();
    drop(hosts);
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: count(&clean, "acq") + count(&lossy, "acq"),
        faults,
        violations: u64::from(bitten),
        expected_violations: true,
        wall: start.elapsed(),
        notes: "a naive link(2) lock, not libnfslock: stuck on its own orphaned lock".into(),
        ..Row::default()
    });
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| scenario | hosts x procs | acquisitions | faults injected | violations | recoveries | wall time | notes |\n|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {}{} | {} | {:.1} s | {} |",
            r.scenario,
            r.shape,
            r.acquisitions,
            r.faults,
            r.violations,
            if r.expected_violations { " (expected)" } else { "" },
            r.recoveries,
            r.wall.as_secs_f64(),
            r.notes
        );
    }
    t
}

/// The two rig tests (faultfs, real NFS) run one after the other, never side by side
/// on a machine of 2 cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static RIG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RIG.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn multihost_scenarios() {
    let _serial = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut rig = Rig {
        base: Scratch::new(tmp, "multihost"),
        root: root.to_path_buf(),
        nfsfs: PathBuf::new(),
        faultfs: build::faultfs(root, tmp),
        worker: build::worker(root, tmp),
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let started = Instant::now();
    // NFSLOCK_RIG_ONLY=locks|sessions|leases: only that group of scenarios (triage, reruns).
    let only = std::env::var("NFSLOCK_RIG_ONLY").ok();
    let want = |group: &str| only.as_deref().is_none_or(|o| o == group);
    if want("locks") {
        lock_scenarios(&mut rig);
    }
    let ff = Backend::Faultfs;
    if want("sessions") {
        sessions::allocation(&mut rig, "clean", ff(Faults::default()), 0);
        sessions::allocation(&mut rig, "lost replies 20%", ff(Faults { lose_replies: 0.2, ..Faults::default() }), 0);
        sessions::allocation(&mut rig, "transient errors 5%", ff(Faults { transient: 0.05, ..Faults::default() }), 0);
        sessions::allocation(&mut rig, "attribute cache 300 ms", ff(Faults { attr_cache_ms: 300, ..Faults::default() }), 0);
        sessions::allocation(&mut rig, "clients + processes on the server", ff(Faults::default()), PROCS);
        sessions::takeover(&mut rig, ff(Faults::default()), ff(Faults { clock_offset_ms: 7_000, ..Faults::default() }));
    }
    // Issue 10.
    // NFSLOCK_RIG_ONLY=leases:NAME runs one of them.
    let lease = |name: &str| want("leases") || only.as_deref() == Some(&format!("leases:{name}"));
    if lease("killed") {
        leases::killed_lease_holder(&mut rig, ff(Faults::default()), 1000, 5);
    }
    if lease("frozen") {
        leases::frozen_host(&mut rig, ff(Faults::default()), 1000);
    }
    if lease("skew") {
        leases::skewed_clocks(&mut rig, 1000, 3);
    }
    if lease("lost") {
        leases::lost_replies_during_break(&mut rig, 500, 6);
    }
    if lease("race") {
        leases::racing_breakers(&mut rig, 500, 4);
    }
    if lease("fencing") {
        leases::fencing_tokens(&mut rig, ff(Faults::default()), 1000, 20, 12);
    }
    if lease("release") {
        leases::release_latency(&mut rig, ff(Faults::default()), 1000, 15);
    }
    if lease("shared") {
        leases::shared_readers_and_writer(&mut rig, "", ff(Faults::default()), 1000, 2, 40);
        let lossy = Faults { lose_replies: 0.2, ..Faults::default() };
        leases::shared_readers_and_writer(&mut rig, ", lost replies 20%", ff(lossy), 1000, 2, 40);
    }
    // Issue 12: NFSLOCK_RIG_ONLY=manager, or manager:ids|locks|lease.
    if want("manager") || only.as_deref().is_some_and(|o| o.starts_with("manager:")) {
        manager::faultfs(&mut rig, only.as_deref());
    }
    let table = table(&rig.rows);
    println!("\nmulti-host rig, {:.0} s in all:\n\n{table}", started.elapsed().as_secs_f64());
    let _ = fs::write(root.join("target/multihost-table.md"), &table);
    assert!(rig.failures.is_empty(), "rig failures:\n{}", rig.failures.join("\n"));
}

/// The lock-file scenarios.
fn lock_scenarios(rig: &mut Rig) {
    exclusion(rig, "clean", vec![Faults::default(); HOSTS]);
    exclusion(rig, "lost replies 20%", vec![Faults { lose_replies: 0.2, ..Faults::default() }; HOSTS]);
    exclusion(rig, "transient errors 5%", vec![Faults { transient: 0.05, ..Faults::default() }; HOSTS]);
    exclusion(rig, "attribute cache 300 ms", vec![Faults { attr_cache_ms: 300, ..Faults::default() }; HOSTS]);
    let skewed = [-5_000, 0, 7_000].map(|ms| Faults { clock_offset_ms: ms, ..Faults::default() });
    exclusion(rig, "clock skew -5 s/0/+7 s", skewed.to_vec());
    lost_replies(rig);
    killed_holder(rig);
    rebooted_host(rig);
    core_records(rig);
    naive_lock_bites(rig);
}
