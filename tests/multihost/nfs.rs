//! The rig on a real NFS server: nfs-ganesha (rig/nfs/server) in namespaces of its
//! own, and each simulated host (host.rs, `Backend::Nfs`), in its own network
//! namespace joined to the server by a veth pair (rig/nfs/link), mounting rig/nfsfs,
//! an NFSv3 client over the wire. Faults are on the wire (rig/nfs/lossy): lost
//! replies of chosen procedures (TCP: the connection is reset after the call went
//! out, the client reconnects and sends the same XID again; UDP: the reply datagram
//! is dropped), random packet loss, and ganesha restarted mid-run.
//!
//! Needs root, nfs-ganesha, nfs-ganesha-vfs, rpcbind, nftables, iproute2
//! (`scripts/deps` installs them). Part of `make test` (`cargo test --all-targets`;
//! the faultfs rig's test and this one take turns); alone: `make test-nfs`, or
//! `cargo test --test multihost nfs_scenarios -- --nocapture`.
//!
//! NFSLOCK_NFS_TRACE=DIR keeps, per scenario, every client's RPC log (XIDs, sends,
//! replies with their NFS status, timeouts) and ganesha.log in DIR/SCENARIO/;
//! NFSLOCK_NFS_LOG_COMPONENTS="DUPREQ = DEBUG;" makes ganesha log its duplicate
//! request cache (rig/nfsfs/README.md, the triage of issue 16).
//!
//! The soak (README.md): NFSLOCK_NFS_SOAK_ROUNDS=N runs, instead of the scenarios,
//! one exclusion run of 3 hosts x 2 processes x N rounds with 10% lost replies.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::host::{self, count, field, Backend, Host, NfsSite, Scratch, Site, Wire};
use super::{build, describe, sessions, table, Rig, Row};

const HOSTS: usize = 3;
const PROCS: usize = 2;
const ROUNDS: u32 = 25;
const WORKER_LIMIT: Duration = Duration::from_secs(150);
const START_LIMIT: Duration = Duration::from_secs(30);

/// `cargo build --release` of rig/nfsfs into a target directory of its own.
pub fn nfsfs(root: &Path, tmp: &Path) -> PathBuf {
    let target = tmp.parent().expect("the tmp dir is inside the target dir").join("rig-nfsfs");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--locked", "--quiet", "--manifest-path"])
        .arg(root.join("rig/nfsfs/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building rig/nfsfs failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    target.join("release/nfslock-nfsfs")
}

/// Dies with us: the child gets SIGKILL when the test process goes.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl in the child before exec only sets its parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The first child of `pid` (the namespace's init under `unshare --fork`).
fn child_of(pid: u32) -> i32 {
    let start = Instant::now();
    loop {
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
            return c;
        }
        assert!(start.elapsed() < START_LIMIT, "unshare {pid} did not start its namespace");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// nfs-ganesha and rpcbind in their namespaces, exporting `export`.
pub struct Server {
    child: Option<Child>,
    init: i32,
    state: PathBuf,
    starts: u32,
}

impl Server {
    pub fn start(root: &Path, export: &Path, state: &Path) -> Server {
        fs::create_dir_all(state).unwrap();
        let mut cmd = Command::new(root.join("rig/nfs/server"));
        cmd.arg(export).arg(state).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("rig/nfs/server starts");
        let pid = child.id();
        let mut server = Server { child: Some(child), init: 0, state: state.to_path_buf(), starts: 0 };
        server.wait_up();
        server.init = child_of(pid);
        server
    }

    /// Waits for the next start of ganesha to listen.
    fn wait_up(&mut self) {
        let start = Instant::now();
        let want = self.starts + 1;
        loop {
            let starts = fs::read_to_string(self.state.join("ready")).ok().and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(0);
            if starts >= want {
                self.starts = starts;
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().ok().flatten();
            let log = || fs::read_to_string(self.state.join("ganesha.log")).unwrap_or_default();
            assert!(exited.is_none(), "the NFS server exited ({exited:?}); ganesha.log:\n{}", log());
            assert!(start.elapsed() < START_LIMIT, "the NFS server did not come up; ganesha.log:\n{}", log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops ganesha (SIGTERM) and starts it again, as a server reboot: every
    /// connection and the duplicate request cache are lost. Returns once it listens.
    pub fn restart(&mut self) {
        // SAFETY: signalling the server namespace's init, which we started.
        assert_eq!(unsafe { libc::kill(self.init, libc::SIGUSR1) }, 0, "signalling the server's init");
        self.wait_up();
    }

    fn site(&self, root: &Path, nfsfs: &Path) -> NfsSite {
        NfsSite { root: root.to_path_buf(), nfsfs: nfsfs.to_path_buf(), server_init: self.init }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // unshare ignores SIGTERM while it waits; SIGKILL ends it and, through
            // --kill-child, the PID namespace with ganesha and rpcbind.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One scenario's site and hosts, on faultfs or on a real server of its own (when
/// any host is `Backend::Nfs`). Fields drop in order: hosts (their mounts) first,
/// then the server, then the scratch directory.
pub struct Fleet {
    pub hosts: Vec<Host>,
    pub server: Option<Server>,
    pub site: Site,
    slug: String,
    _scratch: Scratch,
}

impl Fleet {
    /// A fresh site named `slug` and one host per backend (host-a, host-b, ...).
    pub fn boot(rig: &Rig, slug: &str, backends: &[Backend]) -> Fleet {
        Fleet::boot_clocked(rig, slug, backends, &vec![0; backends.len()])
    }

    /// Like `boot`, host i's monotonic and boot-time clocks `clock_offsets_s[i]` seconds
    /// off the machine's (a time namespace of its own; 0: none).
    pub fn boot_clocked(rig: &Rig, slug: &str, backends: &[Backend], clock_offsets_s: &[i64]) -> Fleet {
        let slug = slug.replace([' ', '%', '/', '+', ',', '(', ')'], "-");
        let (mut site, scratch) = rig.site(&slug);
        let server = backends.iter().any(|b| matches!(b, Backend::Nfs(_))).then(|| {
            let server = Server::start(&rig.root, &site.backing, &site.state.join("server"));
            site.nfs = Some(server.site(&rig.root, &rig.nfsfs));
            server
        });
        let hosts = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let name = format!("host-{}", (b'a' + i as u8) as char);
                Host::boot_clocked(&site, &name, b.clone(), 100 + i as u64, i + 1, clock_offsets_s[i])
            })
            .collect();
        Fleet { hosts, server, site, slug, _scratch: scratch }
    }

    /// What the clients counted: retransmissions, replies after them, reconnections,
    /// new source ports, NFS errors other than LOOKUP's NOENT.
    pub fn client_notes(&self) -> String {
        let (mut retrans, mut answered, mut reconnects, mut new_port) = (0, 0, 0, 0);
        let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
        for h in &self.hosts {
            for (k, v) in h.client_stats() {
                match k.as_str() {
                    "rpc_retransmits" => retrans += v,
                    "rpc_connects" => reconnects += v.saturating_sub(1),
                    "rpc_replies_after_retransmit" => answered += v,
                    "rpc_new_source_port" => new_port += v,
                    k if k.starts_with("err_") && !k.starts_with("err_lookup_NFS3ERR_NOENT") => {
                        *errors.entry(k[4..].to_string()).or_default() += v
                    }
                    _ => {}
                }
            }
        }
        let errors: Vec<String> = errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "{retrans} retransmissions ({answered} answered), {reconnects} reconnects ({new_port} from a new port); NFS errors: {}",
            if errors.is_empty() { "none".to_string() } else { errors.join(", ") }
        )
    }

    pub fn wire_counts(&self) -> (u64, u64) {
        self.hosts.iter().map(Host::wire_counts).fold((0, 0), |(a, b), (l, d)| (a + l, b + d))
    }

    /// Ends the hosts and the server; with NFSLOCK_NFS_TRACE, keeps the logs.
    pub fn end(self) {
        let Fleet { hosts, server, site, slug, _scratch } = self;
        drop(hosts);
        drop(server);
        if let Some(dir) = std::env::var_os("NFSLOCK_NFS_TRACE").map(PathBuf::from) {
            let to = dir.join(&slug);
            let _ = fs::create_dir_all(&to);
            for f in fs::read_dir(&site.state).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().ends_with(".rpc") {
                    let _ = fs::copy(f.path(), to.join(f.file_name()));
                }
            }
            let _ = fs::copy(site.state.join("server/ganesha.log"), to.join("ganesha.log"));
        }
    }
}

/// What a scenario does to the server while the workers run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerFault {
    Steady,
    /// Ganesha stopped and started this many times, half a second apart.
    Restarted(u32),
}

/// HOSTS hosts x PROCS workers taking one lock `rounds` times each through their NFS
/// mounts, with `wire` on every host: the marker never collides, the counter ends
/// exact, nothing fails, nothing is left behind.
fn exclusion(rig: &mut Rig, name: &str, wire: Wire, server: ServerFault, rounds: u32) {
    let scenario = format!("real NFS: mutual exclusion, {name}");
    let start = Instant::now();
    let mut fleet = Fleet::boot(rig, &format!("nfs-{name}"), &vec![Backend::Nfs(wire.clone()); HOSTS]);
    let (lock, check) = (fleet.site.mount.join("lock"), fleet.site.backing.join("check"));
    let (lock_s, check_s, rounds_s) = (lock.to_str().unwrap(), check.to_str().unwrap(), rounds.to_string());
    let site = &fleet.site;
    let mut children: Vec<Child> = fleet
        .hosts
        .iter()
        .flat_map(|h| (0..PROCS).map(move |_| h))
        .map(|h| h.spawn(site, &["count", lock_s, check_s, &rounds_s]))
        .collect();
    let mut restarted = 0u32;
    if let ServerFault::Restarted(n) = server {
        for _ in 0..n {
            std::thread::sleep(Duration::from_millis(500));
            let running = children.iter_mut().map(|c| c.try_wait().ok().flatten().is_none()).filter(|r| *r).count();
            rig.check(&scenario, running > 0, format!("the workers were done before restart {}", restarted + 1));
            fleet.server.as_mut().expect("a real-NFS fleet has a server").restart();
            restarted += 1;
        }
    }
    let (mut acq, mut viol, mut errs) = (0, 0, 0);
    let mut messages = Vec::new();
    // A soak's workers run for as long as their rounds take (up to a second each).
    let limit = WORKER_LIMIT.max(Duration::from_secs(u64::from(rounds)));
    for child in children {
        let out: Output = host::finish(child, limit);
        acq += count(&out, "acq");
        viol += count(&out, "viol");
        errs += count(&out, "err");
        messages.extend(String::from_utf8_lossy(&out.stderr).lines().map(str::to_string));
        let clean = count(&out, "err") == 0 && count(&out, "viol") == 0;
        rig.check(&scenario, out.status.success() && clean && field(&out, "acq").is_some(), describe(&out));
    }
    let expected = u64::from(rounds) * (HOSTS * PROCS) as u64;
    let counter: u64 = fs::read_to_string(check.join("counter")).unwrap_or_default().trim().parse().unwrap_or(0);
    rig.check(&scenario, counter == expected && acq == expected, format!("counter {counter}, acquisitions {acq}, expected {expected}"));
    rig.check(&scenario, viol == 0, format!("{viol} violations"));
    let leftovers = leftovers(&fleet.site.backing);
    rig.check(&scenario, leftovers.is_empty(), format!("left behind: {leftovers:?}"));
    let (lost, dropped) = fleet.wire_counts();
    if wire.lost_pct > 0 {
        rig.check(&scenario, lost > 0, "no reply was lost");
    }
    if wire.drop_pct > 0 {
        rig.check(&scenario, dropped > 0, "no packet was dropped");
    }
    let notes = fleet.client_notes();
    fleet.end();
    messages.sort();
    messages.dedup();
    rig.rows.push(Row {
        scenario,
        shape: format!("{HOSTS}x{PROCS}"),
        acquisitions: acq,
        faults: lost + dropped + u64::from(restarted),
        violations: viol,
        recoveries: u64::from(restarted),
        wall: start.elapsed(),
        notes: format!(
            "counter {counter}/{expected}; {errs} errors; {lost} replies lost, {dropped} packets dropped{}; {notes}{}",
            if restarted > 0 { format!(", ganesha restarted {restarted}x") } else { String::new() },
            if messages.is_empty() { String::new() } else { format!("; worker messages: {}", messages.join(" / ")) }
        ),
        ..Row::default()
    });
}

/// Lock files, claims and silly-renamed files in `dir` (none may outlive the workers).
pub fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nfs_lock") || n.starts_with(".nfslock-") || n.starts_with(".nfs"))
        .collect()
}

/// Lost replies of these procedures (NFSv3 numbers, as rig/nfs/lossy takes them).
const NAMESPACE: &str = "8, 12, 14, 15";
const DATA: &str = "2, 7, 21";
/// Every procedure that changes something: SETATTR, WRITE, CREATE, MKDIR, SYMLINK,
/// REMOVE, RMDIR, RENAME, LINK, COMMIT.
const ALL: &str = "2, 7, 8, 9, 10, 12, 13, 14, 15, 21";

#[test]
fn nfs_scenarios() {
    let _serial = super::serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut rig = Rig {
        // Per process: a soak and a scenario run can share the machine.
        base: Scratch::new(tmp, &format!("multihost-nfs-{}", std::process::id())),
        root: root.to_path_buf(),
        faultfs: PathBuf::new(),
        nfsfs: nfsfs(root, tmp),
        worker: build::worker(root, tmp),
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let started = Instant::now();
    if let Some(rounds) = std::env::var("NFSLOCK_NFS_SOAK_ROUNDS").ok().and_then(|r| r.parse::<u32>().ok()) {
        let wire = Wire { lost_pct: 10, procs: ALL, ..Wire::default() };
        exclusion(
            &mut rig,
            &format!("soak, {rounds} rounds, lost replies 10% (every procedure that changes something)"),
            wire,
            ServerFault::Steady,
            rounds,
        );
    } else {
        // NFSLOCK_NFS_ONLY=TEXT: only the scenarios whose title has TEXT (triage, reruns).
        let only = std::env::var("NFSLOCK_NFS_ONLY").ok();
        let want = |title: &str| only.as_deref().is_none_or(|o| title.contains(o));
        let tcp = |lost_pct, drop_pct, procs| Wire { lost_pct, drop_pct, procs, ..Wire::default() };
        let udp = |lost_pct, drop_pct, procs| Wire { udp: true, lost_pct, drop_pct, procs, ..Wire::default() };
        let exclusions = [
            ("TCP, clean", Wire::default(), ServerFault::Steady),
            ("TCP, lost CREATE/REMOVE/RENAME/LINK replies 15% + 2% packets dropped", tcp(15, 2, NAMESPACE), ServerFault::Steady),
            ("TCP, lost REMOVE replies 20%", tcp(20, 0, "12"), ServerFault::Steady),
            ("TCP, lost CREATE/RENAME/LINK replies 20%", tcp(20, 0, "8, 14, 15"), ServerFault::Steady),
            ("UDP, 2% packets dropped", udp(0, 2, ""), ServerFault::Steady),
            ("UDP, lost CREATE/REMOVE/RENAME/LINK replies 15%", udp(15, 0, NAMESPACE), ServerFault::Steady),
            ("TCP, actimeo 3 s, lost replies 10%", Wire { actimeo_ms: 3000, ..tcp(10, 0, NAMESPACE) }, ServerFault::Steady),
            ("TCP, ganesha restarted mid-run (2x)", Wire::default(), ServerFault::Restarted(2)),
            ("UDP, ganesha restarted mid-run (2x)", udp(0, 0, ""), ServerFault::Restarted(2)),
        ];
        for (name, wire, server) in exclusions {
            if want(&format!("mutual exclusion, {name}")) {
                // A restart needs workers still running: longer runs.
                let rounds = if server == ServerFault::Steady { ROUNDS } else { 3 * ROUNDS };
                exclusion(&mut rig, name, wire, server, rounds);
            }
        }
        // Lock files write their record once per claim (per process), so WRITE,
        // SETATTR and COMMIT faults are the session rows' business: heartbeats,
        // records and the counter are written all the time. (Random packet loss is
        // the lock-file rows' business: a session row with 2% over TCP took 35-50 s.)
        let allocations = [
            ("TCP, clean", Wire::default(), 0),
            ("TCP, lost WRITE/SETATTR/COMMIT replies 20%", tcp(20, 0, DATA), 0),
            ("TCP, lost replies 15% (every procedure that changes something)", tcp(15, 0, ALL), 0),
            ("UDP, lost replies 10% (every procedure that changes something)", udp(10, 0, ALL), 0),
            ("clients + processes on the server", Wire::default(), PROCS),
        ];
        for (name, wire, on_server) in allocations {
            if want(&format!("session IDs, {name}")) {
                sessions::allocation(&mut rig, name, Backend::Nfs(wire), on_server);
            }
        }
        if want("session of crashed host A reclaimed by B") {
            sessions::takeover(&mut rig, Backend::Nfs(Wire::default()), Backend::Nfs(Wire::default()));
        }
        // Leases (issue 10), the cheap ones: the rest need faultfs (clock offsets, slow
        // renames) or add little over it.
        if want("lease holder SIGKILLed on host A, taken over by B") {
            super::leases::killed_lease_holder(&mut rig, Backend::Nfs(Wire::default()), 1000, 3);
        }
        if want("waiter on another host sees a release") {
            super::leases::release_latency(&mut rig, Backend::Nfs(Wire::default()), 1000, 15);
        }
        if want("shared holders on every host, one exclusive writer") {
            let lossy = Backend::Nfs(tcp(15, 0, ALL));
            super::leases::shared_readers_and_writer(&mut rig, ", TCP, lost replies 15%", lossy, 1000, 2, 15);
        }
        // Issue 12: the lock manager's directory backend (titles "real NFS: manager: ...").
        super::manager::nfs(&mut rig, &want);
    }
    let table = table(&rig.rows);
    println!("\nreal-NFS rig, {:.0} s in all:\n\n{table}", started.elapsed().as_secs_f64());
    let _ = fs::write(root.join("target/multihost-nfs-table.md"), &table);
    assert!(rig.failures.is_empty(), "rig failures:\n{}", rig.failures.join("\n"));
}
