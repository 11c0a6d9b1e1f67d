//! Lease scenarios (issue 10): leased locks taken over across hosts, through the C API
//! (rig/worker_lease.c). Each scenario checks the protocol's promises (no takeover
//! before the lease, a broken holder learns ENOLCK and removes nothing, one winner per
//! break, fencing tokens in acquisition order) and that its fault really happened (the
//! holder was killed, the host frozen, the clocks skewed, replies lost, the breakers'
//! renames overlapped). Times: the takeover and the release latency are measured, not
//! asserted (speed targets are benchmarks); a takeover before the lease is a violation.
//!
//! Clocks: every host shares the machine's clocks except in the skew scenario, whose
//! hosts have time namespaces; a worker's `mono` is converted to the machine's by its
//! host's offset.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::host::{self, count, field, line_field, Backend, Faults, Host, Site};
use super::nfs::Fleet;
use super::{describe, Rig, Row, SHORT};

/// A worker's longest run in these scenarios.
const LIMIT: Duration = Duration::from_secs(60);

/// The figures of a scenario's takeovers, in ms.
#[derive(Default)]
struct Times(Vec<f64>);

impl Times {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    fn summary(&self) -> String {
        format!("min {:.0} / median {:.0} / max {:.0} ms", self.min(), self.median(), self.max())
    }
}

fn ms(line: &str, key: &str) -> Option<f64> {
    line_field(line, key)?.parse().ok()
}

fn ms_out(out: &std::process::Output, key: &str) -> Option<f64> {
    field(out, key)?.parse().ok()
}

/// The takeover target of issue 10: lease + 10% + 100 ms.
fn target(lease: u64) -> f64 {
    lease as f64 * 1.1 + 100.0
}

fn lock_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nfs_lock") || n.starts_with(".nfslock-"))
        .collect();
    names.sort();
    names
}

fn stat(h: &Host, key: &str) -> u64 {
    h.client_stats().iter().filter(|(k, _)| k == key).map(|(_, v)| *v).sum()
}

/// Waits for the next stats file of every host (written every 100 ms).
fn settle_stats() {
    std::thread::sleep(Duration::from_millis(250));
}

/// What one takeover trial measured.
struct Trial {
    /// B's wait on its own clock, from the start of its acquire (a fresh waiter).
    waited: f64,
    /// From A's death (its last clock reading before SIGKILL) to B holding it.
    since_kill: f64,
    /// Lost replies on B's client while it acquired (the break).
    faults: u64,
}

/// Scenario 1, and the body of 3 and 4: `trials` times, a lease holder on host A (hosts[0])
/// SIGKILLs itself; a fresh waiter on host B (hosts[1]) takes the lock. In the first
/// trial B first waits three leases while A lives and renews: it must time out. A
/// takeover before the lease (B's wait on its own clock shorter than the lease) is a
/// violation; B must hold it (its record, the O_EXCL marker, is_held, unlock).
#[allow(clippy::too_many_arguments)]
fn takeover_trials(
    rig: &mut Rig,
    scenario: &str,
    fleet: &Fleet,
    offsets_s: [i64; 2],
    lease: u64,
    trials: usize,
    violations: &mut u64,
) -> Vec<Trial> {
    let (site, a, b) = (&fleet.site, &fleet.hosts[0], &fleet.hosts[1]);
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let (lock_s, check_s, lease_s) = (lock.to_str().unwrap(), check.to_str().unwrap(), lease.to_string());
    let mut out = Vec::new();
    for trial in 0..trials {
        let alive_phase = trial == 0;
        let hold = if alive_phase { 3 * lease + 1500 } else { 200 };
        let mut holder = a.spawn_lines(site, &["lcrash", lock_s, &lease_s, &hold.to_string()]);
        let held = holder.next_line(SHORT).unwrap_or_default();
        if !held.starts_with("held") {
            rig.check(scenario, false, format!("trial {trial}: A did not take the lease: {held}"));
            let _ = holder.finish(SHORT);
            break;
        }
        if alive_phase {
            // B watches three leases while A renews: never broken.
            let early = b.run(site, &["ltake", lock_s, &lease_s, &(3 * lease).to_string(), check_s, "0"], LIMIT);
            let rc = field(&early, "rc").unwrap_or_default();
            if rc == "OK" {
                *violations += 1;
            }
            rig.check(scenario, rc == "ETIMEDOUT", format!("B while A lives and renews: want ETIMEDOUT, got {}", describe(&early)));
        }
        let died = holder.finish(LIMIT);
        let text = String::from_utf8_lossy(&died.stdout).into_owned();
        let last = text.lines().last().unwrap_or_default().to_string();
        let killed = std::os::unix::process::ExitStatusExt::signal(&died.status) == Some(libc::SIGKILL);
        rig.check(
            scenario,
            killed && line_field(&last, "is_held").as_deref() == Some("OK"),
            format!("trial {trial}: A: {}", describe(&died)),
        );
        let Some(kill_mono) = ms(&last, "mono") else { continue };
        let kill = kill_mono - offsets_s[0] as f64 * 1000.0;
        rig.check(scenario, site.backing.join("lock.nfs_lock").exists(), format!("trial {trial}: the killed holder's lock file is gone"));
        let lost_before = lost_replies(b);
        let mut taker = b.spawn_lines(site, &["ltake", lock_s, &lease_s, "20000", check_s, "300"]);
        let got = taker.next_line(LIMIT).unwrap_or_default();
        settle_stats();
        let faults = lost_replies(b) - lost_before;
        let done = taker.finish(LIMIT);
        let ok = field(&done, "rc").as_deref() == Some("OK")
            && field(&done, "mine").as_deref() == Some("1")
            && field(&done, "viol").as_deref() == Some("0")
            && field(&done, "held").as_deref() == Some("OK")
            && field(&done, "unlock").as_deref() == Some("OK");
        rig.check(scenario, got.starts_with("acquired") && ok, format!("trial {trial}: B: {}", describe(&done)));
        let (Some(waited), Some(acq)) = (ms(&got, "waited"), ms(&got, "mono")) else { continue };
        let since_kill = acq - offsets_s[1] as f64 * 1000.0 - kill;
        // The protocol's promise: a fresh waiter watches a whole lease first.
        if waited < lease as f64 || since_kill < lease as f64 {
            *violations += 1;
            rig.check(
                scenario,
                false,
                format!(
                    "trial {trial}: taken over {waited:.0} ms into B's wait, {since_kill:.0} ms after A died: before the {lease} ms lease"
                ),
            );
        }
        // An hour-skewed clock would make it an hour late.
        rig.check(scenario, waited < lease as f64 + 5000.0, format!("trial {trial}: B waited {waited:.0} ms for a {lease} ms lease"));
        out.push(Trial { waited, since_kill, faults });
    }
    out
}

fn lost_replies(h: &Host) -> u64 {
    ["lost_reply_link", "lost_reply_rename", "lost_reply_unlink", "lost_reply_create"].iter().map(|k| stat(h, k)).sum()
}

fn leftovers_check(rig: &mut Rig, scenario: &str, site: &Site) -> String {
    let left = lock_names(&site.backing);
    let locks: Vec<_> = left.iter().filter(|n| n.ends_with(".nfs_lock") || n.contains(".x")).collect();
    rig.check(scenario, locks.is_empty(), format!("left behind: {locks:?}"));
    let marker = site.backing.join("check/inside").exists();
    rig.check(scenario, !marker, "the critical section's marker was left behind");
    let tokens = left.iter().filter(|n| n.starts_with(".nfslock-")).count();
    format!("{tokens} parked tokens of exited workers left")
}

/// 1: a holder SIGKILLed on host A, taken over from host B (both `backend`).
pub fn killed_lease_holder(rig: &mut Rig, backend: Backend, lease: u64, trials: usize) {
    let scenario = super::sessions::titled(&backend, "lease holder SIGKILLed on host A, taken over by B".into());
    let start = Instant::now();
    let fleet = Fleet::boot(rig, &format!("lease-killed-{}", scenario.len()), &[backend.clone(), backend]);
    let mut viol = 0;
    let trials_done = takeover_trials(rig, &scenario, &fleet, [0, 0], lease, trials, &mut viol);
    rig.check(&scenario, trials_done.len() == trials, format!("{} of {trials} trials measured", trials_done.len()));
    let left = leftovers_check(rig, &scenario, &fleet.site);
    fleet.end();
    let since = Times(trials_done.iter().map(|t| t.since_kill).collect());
    let waited = Times(trials_done.iter().map(|t| t.waited).collect());
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 2 * trials_done.len() as u64,
        faults: trials_done.len() as u64,
        violations: viol,
        recoveries: trials_done.len() as u64,
        wall: start.elapsed(),
        notes: format!(
            "lease {lease} ms, {} trials: takeover after the kill {} (target {:.0}); B's own wait {}; B timed out after 3 leases while A renewed; {left}",
            trials_done.len(),
            since.summary(),
            target(lease),
            waited.summary()
        ),
        ..Row::default()
    });
}

/// 3: the takeover of 1 with host A's clocks an hour ahead and host B's an hour behind:
/// faultfs timestamps (mtimes) and the hosts' own CLOCK_MONOTONIC and CLOCK_BOOTTIME
/// (time namespaces), which the lease protocol reads.
pub fn skewed_clocks(rig: &mut Rig, lease: u64, trials: usize) {
    let scenario = "lease takeover, host clocks +1 h (A) / -1 h (B)".to_string();
    let start = Instant::now();
    let offsets = [3600i64, -3600];
    let backends = offsets.map(|s| Backend::Faultfs(Faults { clock_offset_ms: s * 1000, ..Faults::default() }));
    let fleet = Fleet::boot_clocked(rig, "lease-skew", &backends, &offsets);
    // The skew is real: each host's clocks and the mtimes its client shows.
    let mut seen = Vec::new();
    for (h, off) in fleet.hosts.iter().zip(offsets) {
        let file = fleet.site.mount.join(format!("clock-{}", h.name));
        let machine = now_ms(libc::CLOCK_MONOTONIC);
        let out = h.run(&fleet.site, &["clocks", file.to_str().unwrap()], SHORT);
        let (mono, boot, real, mtime) = (
            ms_out(&out, "mono").unwrap_or(0.0),
            ms_out(&out, "boot").unwrap_or(0.0),
            ms_out(&out, "real").unwrap_or(0.0),
            ms_out(&out, "mtime").unwrap_or(0.0),
        );
        let near = |x: f64| (x - off as f64 * 1000.0).abs() < 5000.0;
        let boot_machine = now_ms(libc::CLOCK_BOOTTIME);
        let ok = near(mono - machine) && near(boot - boot_machine) && near(mtime - real);
        rig.check(
            &scenario,
            ok,
            format!("{}: clocks not skewed by {off} s: {} (machine mono {machine:.0}, boot {boot_machine:.0})", h.name, describe(&out)),
        );
        seen.push(format!("{} mono {:+.0} s, mtime {:+.0} s", h.name, (mono - machine) / 1000.0, (mtime - real) / 1000.0));
        let _ = fs::remove_file(fleet.site.backing.join(format!("clock-{}", h.name)));
    }
    let mut viol = 0;
    let done = takeover_trials(rig, &scenario, &fleet, offsets, lease, trials, &mut viol);
    rig.check(&scenario, done.len() == trials, format!("{} of {trials} trials measured", done.len()));
    let left = leftovers_check(rig, &scenario, &fleet.site);
    fleet.end();
    let since = Times(done.iter().map(|t| t.since_kill).collect());
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 2 * done.len() as u64,
        faults: 2,
        violations: viol,
        recoveries: done.len() as u64,
        wall: start.elapsed(),
        notes: format!(
            "{}; lease {lease} ms, {} trials: takeover after the kill {} (no early break: B timed out after 3 leases while A renewed; none late); {left}",
            seen.join(", "),
            done.len(),
            since.summary()
        ),
        ..Row::default()
    });
}

fn now_ms(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// 4: the takeover of 1 with half of B's link, rename and unlink replies lost (the
/// operations of a break: taking the token, removing the lock file and the taken token,
/// linking B's claim).
pub fn lost_replies_during_break(rig: &mut Rig, lease: u64, trials: usize) {
    let scenario = "lease broken under lost replies (B: link/rename/unlink 50%)".to_string();
    let start = Instant::now();
    let lossy = Faults { lose_replies: 0.5, lose_ops: "link,rename,unlink", ..Faults::default() };
    let fleet = Fleet::boot(rig, "lease-lost-replies", &[Backend::Faultfs(Faults::default()), Backend::Faultfs(lossy)]);
    let mut viol = 0;
    let done = takeover_trials(rig, &scenario, &fleet, [0, 0], lease, trials, &mut viol);
    rig.check(&scenario, done.len() == trials, format!("{} of {trials} trials measured", done.len()));
    let during: u64 = done.iter().map(|t| t.faults).sum();
    rig.check(&scenario, during > 0, "no reply was lost while B broke the lease");
    let renames = stat(&fleet.hosts[1], "lost_reply_rename");
    let total = lost_replies(&fleet.hosts[1]);
    let left = leftovers_check(rig, &scenario, &fleet.site);
    fleet.end();
    let since = Times(done.iter().map(|t| t.since_kill).collect());
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 2 * done.len() as u64,
        faults: total,
        violations: viol,
        recoveries: done.len() as u64,
        wall: start.elapsed(),
        notes: format!(
            "lease {lease} ms, {} trials; {during} replies lost while B broke the lease and took it ({renames} RENAME replies lost in all), {total} in all; takeover after the kill {}; {left}",
            done.len(),
            since.summary()
        ),
        ..Row::default()
    });
}

/// 2: host A frozen (every process of its namespace stopped, its client included) while
/// holding; B takes over after the lease; A resumed: is_held, renew and unlock answer
/// ENOLCK and B's lock stands.
pub fn frozen_host(rig: &mut Rig, backend: Backend, lease: u64) {
    let scenario = super::sessions::titled(&backend, "host A frozen (SIGSTOP) while holding a lease, resumed".into());
    let start = Instant::now();
    let fleet = Fleet::boot(rig, &format!("lease-frozen-{}", scenario.len()), &[backend.clone(), backend]);
    let (site, a, b) = (&fleet.site, &fleet.hosts[0], &fleet.hosts[1]);
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let (lock_s, check_s, lease_s) = (lock.to_str().unwrap(), check.to_str().unwrap(), lease.to_string());
    let mut viol = 0u64;
    let mut holder = a.spawn_lines(site, &["lfreeze", lock_s, &lease_s]);
    let held = holder.next_line(SHORT).unwrap_or_default();
    rig.check(&scenario, held.starts_with("held") && line_field(&held, "is_held").as_deref() == Some("OK"), format!("A: {held}"));
    // Let A renew a few times, then freeze the whole host.
    std::thread::sleep(Duration::from_millis(lease));
    let stopped = a.signal_all(libc::SIGSTOP);
    let frozen_at = Instant::now();
    // init, the filesystem client and the worker at least.
    rig.check(&scenario, stopped >= 3, format!("only {stopped} processes of host A stopped"));
    let mut taker = b.spawn_lines(site, &["ltake", lock_s, &lease_s, "20000", check_s, "1500"]);
    let got = taker.next_line(LIMIT).unwrap_or_default();
    let waited = ms(&got, "waited").unwrap_or(0.0);
    let after_freeze = frozen_at.elapsed().as_secs_f64() * 1000.0;
    rig.check(&scenario, got.starts_with("acquired") && line_field(&got, "mine").as_deref() == Some("1"), format!("B: {got}"));
    if waited < lease as f64 {
        viol += 1;
        rig.check(&scenario, false, format!("B took over {waited:.0} ms into its wait: before the {lease} ms lease"));
    }
    // A's stopped state is real: its worker did not run while B waited.
    let resumed = a.signal_all(libc::SIGCONT);
    rig.check(&scenario, resumed == stopped, format!("{resumed} processes resumed, {stopped} stopped"));
    let a_out = holder.finish(LIMIT);
    let frozen = ms_out(&a_out, "frozen").unwrap_or(0.0);
    rig.check(&scenario, frozen >= lease as f64, format!("A did not notice a freeze longer than the lease: {}", describe(&a_out)));
    let first = field(&a_out, "first").unwrap_or_default();
    let answers = ["renew", "is_held", "unlock"].map(|k| field(&a_out, k).unwrap_or_default());
    // At once after resuming A may not know yet (ETIMEDOUT: its renewals are overdue);
    // 0 would tell a broken holder it holds the lock.
    if first == "OK" || answers.iter().any(|a| a != "ENOLCK") {
        viol += 1;
    }
    rig.check(&scenario, first == "ETIMEDOUT" || first == "ENOLCK", format!("A's first is_held after resuming: {}", describe(&a_out)));
    rig.check(&scenario, answers.iter().all(|a| a == "ENOLCK"), format!("A's renew, is_held, unlock: want ENOLCK: {}", describe(&a_out)));
    // B's lock stands: its lock file (B's record) is still there while B holds.
    let record = fs::read_to_string(site.backing.join("lock.nfs_lock")).unwrap_or_default();
    let stands = record.contains("(host host-b)");
    if !stands {
        viol += 1;
    }
    rig.check(&scenario, stands, format!("B's lock file after A resumed: {record:?}"));
    let done = taker.finish(LIMIT);
    let b_ok = field(&done, "held").as_deref() == Some("OK")
        && field(&done, "unlock").as_deref() == Some("OK")
        && field(&done, "viol").as_deref() == Some("0");
    if !b_ok {
        viol += 1;
    }
    rig.check(&scenario, b_ok, format!("B after A resumed: {}", describe(&done)));
    let left = leftovers_check(rig, &scenario, site);
    fleet.end();
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 2,
        faults: 1,
        violations: viol,
        recoveries: 1,
        wall: start.elapsed(),
        notes: format!(
            "lease {lease} ms; {stopped} processes of A stopped; B took over {after_freeze:.0} ms after the freeze ({waited:.0} ms of its own wait); A frozen {frozen:.0} ms, then is_held {first}, renew/is_held/unlock {}; B's lock stood; {left}",
            answers[0]
        ),
        ..Row::default()
    });
}

/// 5: hosts B and C break the same expired lease at once (every rename on their clients
/// is slow, so both breakers' renames of the token are in flight together): exactly one
/// wins, the other takes the lock only after the winner released it.
pub fn racing_breakers(rig: &mut Rig, lease: u64, trials: usize) {
    let scenario = "two hosts break one expired lease at once".to_string();
    let start = Instant::now();
    // Longer than a waiter's poll (50 ms): two breakers' deadlines fall in one window.
    let slow = Faults { rename_delay_ms: 120, ..Faults::default() };
    let backends = [Faults::default(), slow.clone(), slow].map(Backend::Faultfs);
    let fleet = Fleet::boot(rig, "lease-race", &backends);
    let (site, hosts) = (&fleet.site, &fleet.hosts);
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let (lock_s, check_s, lease_s) = (lock.to_str().unwrap(), check.to_str().unwrap(), lease.to_string());
    let (mut viol, mut races, mut measured) = (0u64, 0u64, 0usize);
    let mut wins = [0u32; 2];
    for trial in 0..trials {
        let died = hosts[0].run(site, &["lcrash", lock_s, &lease_s, "200"], LIMIT);
        let killed = std::os::unix::process::ExitStatusExt::signal(&died.status) == Some(libc::SIGKILL);
        rig.check(&scenario, killed, format!("trial {trial}: A: {}", describe(&died)));
        settle_stats();
        let gone_before: Vec<u64> = hosts[1..].iter().map(|h| stat(h, "rename_source_gone")).collect();
        let takers: Vec<_> =
            hosts[1..].iter().map(|h| h.spawn_lines(site, &["ltake", lock_s, &lease_s, "20000", check_s, "400"])).collect();
        let outs: Vec<_> = takers.into_iter().map(|t| t.finish(LIMIT)).collect();
        settle_stats();
        let gone: Vec<u64> = hosts[1..].iter().zip(&gone_before).map(|(h, b)| stat(h, "rename_source_gone") - b).collect();
        if std::env::var_os("NFSLOCK_RIG_DEBUG").is_some() {
            eprintln!("race trial {trial}: source gone {gone:?}; {}", outs.iter().map(describe).collect::<Vec<_>>().join(" | "));
        }
        let mut got = Vec::new();
        for (i, out) in outs.iter().enumerate() {
            let ok = field(out, "rc").as_deref() == Some("OK")
                && field(out, "mine").as_deref() == Some("1")
                && field(out, "viol").as_deref() == Some("0")
                && field(out, "held").as_deref() == Some("OK")
                && field(out, "unlock").as_deref() == Some("OK");
            rig.check(&scenario, ok, format!("trial {trial}: {}: {}", hosts[i + 1].name, describe(out)));
            viol += count(out, "viol");
            if let (Some(acq), Some(rel), Some(waited)) = (ms_out(out, "acq"), ms_out(out, "rel"), ms_out(out, "waited")) {
                got.push((acq, rel, waited, i));
            }
        }
        if got.len() != 2 {
            continue;
        }
        measured += 1;
        got.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (winner, loser) = (got[0], got[1]);
        wins[winner.3] += 1;
        // No overlap: the loser held it only after the winner's unlock began.
        if loser.0 < winner.1 || winner.2 < lease as f64 {
            viol += 1;
            rig.check(&scenario, false, format!("trial {trial}: winner {winner:?}, other {loser:?}: overlap or an early break"));
        }
        // The race was real: both breakers' renames of the token were in flight at once,
        // one host's found it already taken (that host may still hold the lock first: the
        // rename's winner has more slow renames to make before it links its own claim).
        match gone.iter().filter(|g| **g > 0).count() {
            1 => races += 1,
            0 => {}
            _ => rig.check(&scenario, false, format!("trial {trial}: both breakers' renames found the token gone: {gone:?}")),
        }
    }
    rig.check(&scenario, races > 0, format!("in no trial did both breakers' renames overlap ({measured} trials)"));
    let left = leftovers_check(rig, &scenario, site);
    fleet.end();
    rig.rows.push(Row {
        scenario,
        shape: "3x1".into(),
        acquisitions: 3 * measured as u64,
        faults: races,
        violations: viol,
        recoveries: measured as u64,
        wall: start.elapsed(),
        notes: format!(
            "lease {lease} ms, renames on B and C delayed 120 ms; {measured} trials, in {races} both breakers' renames of the token were in flight together and exactly one took it (the other's found it gone); first holder B {} times, C {}, the other only after its release; {left}",
            wins[0], wins[1]
        ),
        ..Row::default()
    });
}

/// 6: fencing tokens strictly increasing in acquisition order: 3 hosts x 4 processes x
/// `rounds` acquisitions (one process each), `kill_pct`% of the holders SIGKILLed while
/// holding (their leases broken by the next acquirer: at once on their host, after the
/// lease on another).
pub fn fencing_tokens(rig: &mut Rig, backend: Backend, lease: u64, rounds: u32, kill_pct: u32) {
    let scenario = super::sessions::titled(&backend, "fencing tokens, holders killed at random".into());
    let start = Instant::now();
    let (hosts_n, procs) = (super::HOSTS, super::PROCS);
    let fleet = Fleet::boot(rig, &format!("lease-fencing-{}", scenario.len()), &vec![backend; hosts_n]);
    let site = &fleet.site;
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let (lock_s, check_s, lease_s, rounds_s, pct_s) =
        (lock.to_str().unwrap(), check.to_str().unwrap(), lease.to_string(), rounds.to_string(), kill_pct.to_string());
    let children: Vec<_> = fleet
        .hosts
        .iter()
        .flat_map(|h| (0..procs).map(move |p| (h, p)))
        .enumerate()
        .map(|(i, (h, _))| h.spawn(site, &["lfence", lock_s, &lease_s, check_s, &rounds_s, &pct_s, &(7 + i).to_string()]))
        .collect();
    let (mut acq, mut killed, mut viol, mut lost, mut err) = (0, 0, 0, 0, 0);
    for child in children {
        let out = host::finish(child, Duration::from_secs(150));
        acq += count(&out, "acq");
        killed += count(&out, "killed");
        viol += count(&out, "viol");
        lost += count(&out, "lost");
        err += count(&out, "err");
        rig.check(&scenario, out.status.success() && field(&out, "acq").is_some() && count(&out, "err") == 0, describe(&out));
    }
    if std::env::var_os("NFSLOCK_RIG_DEBUG").is_some() {
        for h in &fleet.hosts {
            eprintln!(
                "fencing {}: {:?}",
                h.name,
                h.client_stats().iter().filter(|(k, v)| *v > 0 && !k.starts_with("op_")).collect::<Vec<_>>()
            );
        }
    }
    // Every acquisition logged (order, token, host, pid, killed) inside its critical section.
    let log = fs::read_to_string(check.join("fence.log")).unwrap_or_default();
    let mut entries: Vec<(u64, u64, String, bool)> = log
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?, f.get(2)?.to_string(), *f.get(4)? == "1"))
        })
        .collect();
    entries.sort();
    let expected = u64::from(rounds) * (hosts_n * procs) as u64;
    let orders: Vec<u64> = entries.iter().map(|e| e.0).collect();
    rig.check(
        &scenario,
        orders == (1..=expected).collect::<Vec<_>>(),
        format!("acquisition orders are not 1..={expected}: {} entries", entries.len()),
    );
    let disorder = entries.windows(2).filter(|w| w[1].1 <= w[0].1).count() as u64;
    rig.check(&scenario, disorder == 0, format!("{disorder} tokens not greater than the previous acquisition's"));
    // Breaks: a killed holder's successor; across hosts it waited out the lease.
    let breaks = entries.windows(2).filter(|w| w[0].3).count();
    let cross = entries.windows(2).filter(|w| w[0].3 && w[0].2 != w[1].2).count();
    rig.check(&scenario, killed > 0, "no holder was killed");
    rig.check(
        &scenario,
        viol == 0 && lost == 0 && err == 0,
        format!("{viol} marker collisions, {lost} live holders lost their lease, {err} errors"),
    );
    let left = leftovers_check(rig, &scenario, site);
    let gaps = entries.last().map(|e| e.1).unwrap_or(0).saturating_sub(entries.len() as u64);
    fleet.end();
    rig.rows.push(Row {
        scenario,
        shape: format!("{hosts_n}x{procs}"),
        acquisitions: acq,
        faults: killed,
        violations: viol + disorder,
        recoveries: breaks as u64,
        wall: start.elapsed(),
        notes: format!(
            "lease {lease} ms, {rounds} acquisitions per process, {killed} holders killed while holding, each lease cleared through its token by the next acquirer ({cross} of those on another host); {} (order, token) pairs, tokens strictly increasing, {gaps} gaps; {left}",
            entries.len()
        ),
        ..Row::default()
    });
}

/// 7: a waiter on host B sees a release on host A: two hosts taking turns, each waiting
/// in nfslock_acquire while the other holds; the latency from the start of the holder's
/// unlock to the waiter holding it (median reported; the target is 50 ms).
pub fn release_latency(rig: &mut Rig, backend: Backend, lease: u64, rounds: u32) {
    let scenario = super::sessions::titled(&backend, "waiter on another host sees a release".into());
    let start = Instant::now();
    let fleet = Fleet::boot(rig, &format!("lease-release-{}", scenario.len()), &[backend.clone(), backend]);
    let site = &fleet.site;
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let (lock_s, check_s, lease_s, rounds_s) = (lock.to_str().unwrap(), check.to_str().unwrap(), lease.to_string(), rounds.to_string());
    // The pause between turns is shorter than a hold: the other host is always waiting.
    let (hold, gap) = (120u64, 40u64);
    let children: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| h.spawn(site, &["lping", lock_s, &lease_s, check_s, &rounds_s, &hold.to_string(), &gap.to_string()]))
        .collect();
    let (mut acq, mut viol) = (0, 0);
    for child in children {
        let out = host::finish(child, LIMIT);
        acq += count(&out, "acq");
        viol += count(&out, "viol");
        rig.check(&scenario, out.status.success() && count(&out, "err") == 0 && count(&out, "viol") == 0, describe(&out));
    }
    // Events in time order: (time, kind, host, time after the unlock).
    let log = fs::read_to_string(check.join("ping.log")).unwrap_or_default();
    let mut events: Vec<(f64, String, String, f64)> = log
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let t: f64 = f.get(2)?.parse().ok()?;
            let after = f.get(3).and_then(|x| x.parse().ok()).unwrap_or(t);
            Some((t, f.first()?.to_string(), f.get(1)?.to_string(), after))
        })
        .collect();
    events.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut last_rel: HashMap<String, f64> = HashMap::new();
    let (mut from_start, mut from_end) = (Times::default(), Times::default());
    let mut prev: Option<&(f64, String, String, f64)> = None;
    for e in &events {
        if e.1 == "acq" {
            if let Some(p) = prev.filter(|p| p.1 == "rel" && p.2 != e.2) {
                // The acquirer was waiting: its own last release (plus its pause) came
                // before this release began.
                let waiting = last_rel.get(&e.2).is_none_or(|own| own + gap as f64 + 5.0 < p.0);
                if waiting {
                    from_start.0.push(e.0 - p.0);
                    from_end.0.push(e.0 - p.3);
                }
            }
        } else {
            last_rel.insert(e.2.clone(), e.3);
        }
        prev = Some(e);
    }
    rig.check(&scenario, from_start.0.len() >= rounds as usize / 2, format!("only {} handoffs to a waiting host", from_start.0.len()));
    let left = leftovers_check(rig, &scenario, site);
    let client = if fleet.server.is_some() { format!("; {}", fleet.client_notes()) } else { String::new() };
    fleet.end();
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: acq,
        violations: viol,
        wall: start.elapsed(),
        notes: format!(
            "lease {lease} ms, {} handoffs to a waiting host: from the start of the holder's unlock {} (median target 50 ms), from its return {}; {left}{client}",
            from_start.0.len(),
            from_start.summary(),
            from_end.summary()
        ),
        ..Row::default()
    });
}

/// 8: shared holders on every host with an exclusive writer: `readers` reader processes
/// on each of the hosts take the shared lock `rounds` times each, one writer process on
/// host A takes it exclusively `rounds` times and rewrites a counter in two steps inside.
/// No reader may see the writer's placeholder, a changed counter or the writer's marker;
/// the writer never sees a registered reader; the counter ends at exactly the writer's
/// acquisitions; and readers of different hosts really held the lock at the same time.
pub fn shared_readers_and_writer(rig: &mut Rig, faults: &str, backend: Backend, lease: u64, readers: usize, rounds: u32) {
    let scenario = super::sessions::titled(&backend, format!("shared holders on every host, one exclusive writer{faults}"));
    let start = Instant::now();
    let hosts_n = super::HOSTS;
    let fleet = Fleet::boot(rig, &format!("lease-shared-{}", scenario.len()), &vec![backend; hosts_n]);
    let site = &fleet.site;
    let lock = site.mount.join("lock");
    let check = site.backing.join("check");
    let _ = fs::create_dir_all(&check);
    let (lock_s, check_s, lease_s, rounds_s) = (lock.to_str().unwrap(), check.to_str().unwrap(), lease.to_string(), rounds.to_string());
    let (reader_hold, writer_hold) = ("40", "30");
    let mut children: Vec<_> = fleet
        .hosts
        .iter()
        .flat_map(|h| (0..readers).map(move |_| h))
        .map(|h| (false, h.spawn(site, &["lshared", lock_s, &lease_s, check_s, &rounds_s, reader_hold, "0"])))
        .collect();
    children.push((true, fleet.hosts[0].spawn(site, &["lshared", lock_s, &lease_s, check_s, &rounds_s, writer_hold, "1"])));
    let (mut acq, mut viol, mut writes, mut overlap, mut cross) = (0, 0, 0, 0, 0);
    for (writer, child) in children {
        let out = host::finish(child, Duration::from_secs(150));
        acq += count(&out, "acq");
        viol += count(&out, "viol");
        if writer {
            writes = count(&out, "acq");
        } else {
            overlap = overlap.max(count(&out, "overlap"));
            cross += count(&out, "cross");
        }
        let clean = out.status.success() && count(&out, "err") == 0 && count(&out, "lost") == 0 && count(&out, "viol") == 0;
        rig.check(&scenario, clean && count(&out, "acq") == u64::from(rounds), describe(&out));
    }
    let counter = fs::read_to_string(check.join("counter")).unwrap_or_default();
    let exact = counter.trim().parse::<u64>().ok() == Some(writes) && writes == u64::from(rounds);
    if !exact {
        viol += 1;
    }
    rig.check(&scenario, exact, format!("counter {counter:?} after {writes} writes"));
    // Shared means shared: readers were in together, also readers of different hosts.
    rig.check(
        &scenario,
        overlap >= 2 && cross > 0,
        format!("readers never overlapped (most at once {overlap}, {cross} holds saw another host's)"),
    );
    settle_stats();
    let faults: u64 = fleet.hosts.iter().map(|h| lost_replies(h) + h.wire_counts().0).sum();
    let left = leftovers_check(rig, &scenario, site);
    fleet.end();
    rig.rows.push(Row {
        scenario,
        shape: format!("{hosts_n}x{readers}+1"),
        acquisitions: acq,
        faults,
        violations: viol,
        wall: start.elapsed(),
        notes: format!(
            "lease {lease} ms; {} shared acquisitions ({readers} readers per host), {writes} exclusive ones on host A; {}; up to {overlap} readers in at once, {cross} reader holds overlapped another host's reader; {left}",
            acq - writes,
            if viol == 0 {
                format!("counter exact ({writes}), no reader saw a write in progress, the writer never saw a reader")
            } else {
                format!("{viol} violations (counter {:?})", counter.trim())
            }
        ),
        ..Row::default()
    });
}
