//! The rig on a real NFS server: nfs-ganesha (rig/nfs/server) in namespaces of its
//! own, and each simulated host, in its own network namespace joined to the server
//! by a veth pair (rig/nfs/link), mounting rig/nfsfs, an NFSv3 client over the wire.
//! Faults are on the wire (rig/nfs/lossy): lost replies of chosen procedures (the
//! connection is reset after the call went out, the client reconnects and sends the
//! same XID again) and random packet loss.
//!
//! Needs root, nfs-ganesha, nfs-ganesha-vfs, rpcbind, nftables, iproute2
//! (`scripts/deps` installs them). Not yet part of `make test`:
//! `cargo test --test multihost nfs -- --ignored --nocapture`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::host::{self, count, field, Scratch};
use super::{build, describe, table, Rig, Row};

const HOSTS: usize = 3;
const PROCS: usize = 2;
const ROUNDS: u32 = 25;
const WORKER_LIMIT: Duration = Duration::from_secs(150);
const START_LIMIT: Duration = Duration::from_secs(30);

/// `cargo build --release` of rig/nfsfs into a target directory of its own.
fn nfsfs(root: &Path, tmp: &Path) -> PathBuf {
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
fn child_of(pid: u32, comm: Option<&str>) -> i32 {
    let start = Instant::now();
    loop {
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
            if comm.is_none_or(|want| fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|got| got.trim() == want)) {
                return c;
            }
        }
        assert!(start.elapsed() < START_LIMIT, "unshare {pid} did not start its namespace");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", describe(&out));
}

/// nfs-ganesha and rpcbind in their namespaces, exporting `export`.
struct Server {
    child: Option<Child>,
    init: i32,
    state: PathBuf,
}

impl Server {
    fn start(root: &Path, export: &Path, state: &Path) -> Server {
        fs::create_dir_all(state).unwrap();
        let mut cmd = Command::new(root.join("rig/nfs/server"));
        cmd.arg(export).arg(state).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("rig/nfs/server starts");
        let pid = child.id();
        let mut server = Server { child: Some(child), init: 0, state: state.to_path_buf() };
        let start = Instant::now();
        while !state.join("ready").exists() {
            let exited = server.child.as_mut().unwrap().try_wait().ok().flatten();
            let log = fs::read_to_string(state.join("ganesha.log")).unwrap_or_default();
            assert!(exited.is_none(), "the NFS server exited ({exited:?}); ganesha.log:\n{log}");
            assert!(start.elapsed() < START_LIMIT, "the NFS server did not come up; ganesha.log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server.init = child_of(pid, None);
        server
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
        let _ = &self.state;
    }
}

/// What one host's client and wire look like.
#[derive(Clone, Debug, Default)]
struct Wire {
    udp: bool,
    actimeo_ms: u64,
    lost_pct: u32,
    drop_pct: u32,
    /// NFSv3 procedure numbers whose replies are lost (empty: CREATE, REMOVE, RENAME, LINK).
    procs: &'static str,
}

/// A simulated host with a network namespace of its own and an NFS client mount.
struct NfsHost {
    unshare: Option<Child>,
    fs: Option<Child>,
    init: i32,
    stats: PathBuf,
    lossy: bool,
    root: PathBuf,
}

impl NfsHost {
    #[allow(clippy::too_many_arguments)]
    fn boot(
        root: &Path,
        nfsfs: &Path,
        server: &Server,
        n: usize,
        name: &str,
        export: &Path,
        mount: &Path,
        state: &Path,
        wire: &Wire,
    ) -> NfsHost {
        let mut cmd = Command::new("unshare");
        cmd.args(["--uts", "--pid", "--mount", "--net", "--fork", "--mount-proc", "--propagation", "private", "--kill-child"])
            .args(["--", "sh", "-c", "hostname \"$0\" && exec sleep 1000000", name])
            .stdin(Stdio::null());
        die_with_parent(&mut cmd);
        let unshare = cmd.spawn().expect("unshare starts");
        let init = child_of(unshare.id(), Some("sleep"));
        let mut host = NfsHost {
            unshare: Some(unshare),
            fs: None,
            init,
            stats: state.join(format!("{name}.stats")),
            lossy: false,
            root: root.to_path_buf(),
        };
        run_ok(Command::new(root.join("rig/nfs/link")).args([server.init.to_string(), init.to_string(), n.to_string()]), "rig/nfs/link");
        if wire.lost_pct > 0 || wire.drop_pct > 0 {
            let mut lossy = Command::new(root.join("rig/nfs/lossy"));
            lossy.args([init.to_string(), wire.lost_pct.to_string(), wire.drop_pct.to_string()]);
            if !wire.procs.is_empty() {
                lossy.arg(wire.procs);
            }
            run_ok(&mut lossy, "rig/nfs/lossy");
            host.lossy = true;
        }
        let ready = state.join(format!("{name}.ready"));
        let _ = fs::remove_file(&ready);
        let mut fsc = host.enter();
        fsc.arg(nfsfs)
            .arg(format!("--proto={}", if wire.udp { "udp" } else { "tcp" }))
            .arg(format!("--actimeo-ms={}", wire.actimeo_ms))
            .arg("--timeo-ms=200")
            .arg(format!("--stats={}", host.stats.display()))
            .arg(format!("--ready-file={}", ready.display()))
            .args(trace_dir().map(|_| format!("--rpc-log={}", state.join(format!("{name}.rpc")).display())))
            .arg(format!("10.99.{n}.1:{}", export.display()))
            .arg(mount)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        host.fs = Some(fsc.spawn().expect("nsenter starts nfsfs"));
        let start = Instant::now();
        while !ready.exists() {
            let exited = host.fs.as_mut().unwrap().try_wait().ok().flatten();
            assert!(exited.is_none(), "{name}: the NFS client exited: {exited:?}");
            assert!(start.elapsed() < START_LIMIT, "{name}: the NFS client did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }

    fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "--uts", "--pid", "--mount", "--net", "--"]).stdin(Stdio::null());
        cmd
    }

    fn spawn(&self, worker: &Path, args: &[&str]) -> Child {
        let mut cmd = self.enter();
        cmd.arg(worker).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("nsenter starts the worker")
    }

    fn stats(&self) -> Vec<(String, u64)> {
        fs::read_to_string(&self.stats)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect()
    }

    /// Packets the wire rules hit: lost replies (calls marked) and dropped packets.
    fn wire_counts(&self) -> (u64, u64) {
        if !self.lossy {
            return (0, 0);
        }
        let out = Command::new(self.root.join("rig/nfs/lossy")).args([self.init.to_string(), "stats".into()]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let packets =
            |l: &str| l.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        let lost = text.lines().filter(|l| l.contains("ct mark set")).map(packets).sum();
        let dropped = text.lines().filter(|l| l.contains(" drop")).map(packets).sum();
        (lost, dropped)
    }
}

impl Drop for NfsHost {
    fn drop(&mut self) {
        // SAFETY: signalling the namespace's init, which we started.
        unsafe { libc::kill(self.init, libc::SIGKILL) };
        if let Some(mut u) = self.unshare.take() {
            let _ = u.kill();
            let _ = u.wait();
        }
        if let Some(mut f) = self.fs.take() {
            let _ = f.wait();
        }
    }
}

/// NFSLOCK_NFS_TRACE=DIR: every client writes its RPC log (XIDs, sends, replies with
/// their NFS status, timeouts) to DIR/HOST.rpc, and each scenario's ganesha.log is
/// kept in DIR/SCENARIO.ganesha.log, for triage.
fn trace_dir() -> Option<PathBuf> {
    std::env::var_os("NFSLOCK_NFS_TRACE").map(PathBuf::from)
}

/// Copies a scenario's RPC logs and ganesha.log into `to`.
fn keep_trace(to: &Path, state: &Path) {
    let _ = fs::create_dir_all(to);
    for f in fs::read_dir(state).into_iter().flatten().flatten() {
        if f.file_name().to_string_lossy().ends_with(".rpc") {
            let _ = fs::copy(f.path(), to.join(f.file_name()));
        }
    }
    let _ = fs::copy(state.join("server/ganesha.log"), to.join("ganesha.log"));
}

struct Bins {
    root: PathBuf,
    nfsfs: PathBuf,
    worker: PathBuf,
}

/// HOSTS hosts x PROCS workers taking one lock ROUNDS times each through their NFS
/// mounts, with `wire` on every host: the marker never collides, the counter ends
/// exact, nothing fails, nothing is left behind.
fn exclusion(rig: &mut Rig, bins: &Bins, name: &str, wire: Wire) {
    let scenario = format!("real NFS: mutual exclusion, {name}");
    let start = Instant::now();
    let scratch = Scratch::new(&rig.base.0, &format!("nfs-{}", name.replace([' ', '%', '/', '+', ','], "-")));
    let (export, mount, state) = (scratch.0.join("export"), scratch.0.join("shared"), scratch.0.join("state"));
    let check = export.join("check");
    for d in [&export, &mount, &state, &check] {
        fs::create_dir_all(d).unwrap();
    }
    let server = Server::start(&bins.root, &export, &state.join("server"));
    let hosts: Vec<NfsHost> = (0..HOSTS)
        .map(|i| {
            let name = format!("host-{}", (b'a' + i as u8) as char);
            NfsHost::boot(&bins.root, &bins.nfsfs, &server, i + 1, &name, &export, &mount, &state, &wire)
        })
        .collect();
    let lock = mount.join("lock");
    let (lock_s, check_s, rounds) = (lock.to_str().unwrap(), check.to_str().unwrap(), ROUNDS.to_string());
    let children: Vec<Child> = hosts
        .iter()
        .flat_map(|h| (0..PROCS).map(move |_| h))
        .map(|h| h.spawn(&bins.worker, &["count", lock_s, check_s, &rounds]))
        .collect();
    let (mut acq, mut viol, mut errs) = (0, 0, 0);
    let mut messages = Vec::new();
    for child in children {
        let out: Output = host::finish(child, WORKER_LIMIT);
        acq += count(&out, "acq");
        viol += count(&out, "viol");
        errs += count(&out, "err");
        for l in String::from_utf8_lossy(&out.stderr).lines() {
            messages.push(l.to_string());
        }
        let clean = count(&out, "err") == 0 && count(&out, "viol") == 0;
        rig.check(&scenario, out.status.success() && clean && field(&out, "acq").is_some(), describe(&out));
    }
    let expected = u64::from(ROUNDS) * (HOSTS * PROCS) as u64;
    let counter: u64 = fs::read_to_string(check.join("counter")).unwrap_or_default().trim().parse().unwrap_or(0);
    rig.check(&scenario, counter == expected && acq == expected, format!("counter {counter}, acquisitions {acq}, expected {expected}"));
    rig.check(&scenario, viol == 0, format!("{viol} violations"));
    let leftovers: Vec<String> = fs::read_dir(&export)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nfs_lock") || n.starts_with(".nfslock-") || n.starts_with(".nfs"))
        .collect();
    rig.check(&scenario, leftovers.is_empty(), format!("left behind: {leftovers:?}"));
    let (mut lost, mut dropped, mut retrans, mut reconnects, mut drc, mut new_port) = (0, 0, 0, 0, 0, 0);
    let mut nfs_errors: std::collections::BTreeMap<String, u64> = Default::default();
    for h in &hosts {
        let (l, d) = h.wire_counts();
        lost += l;
        dropped += d;
        for (k, v) in h.stats() {
            match k.as_str() {
                "rpc_retransmits" => retrans += v,
                "rpc_connects" => reconnects += v.saturating_sub(1),
                "rpc_replies_after_retransmit" => drc += v,
                "rpc_new_source_port" => new_port += v,
                k if k.starts_with("err_") && !k.starts_with("err_lookup_NFS3ERR_NOENT") => {
                    *nfs_errors.entry(k[4..].to_string()).or_default() += v
                }
                _ => {}
            }
        }
    }
    if wire.lost_pct > 0 || wire.drop_pct > 0 {
        rig.check(&scenario, lost + dropped > 0, "no fault was injected");
    }
    messages.sort();
    messages.dedup();
    drop(hosts);
    drop(server);
    if let Some(dir) = trace_dir() {
        keep_trace(&dir.join(scratch.0.file_name().unwrap()), &state);
    }
    let errors: Vec<String> = nfs_errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
    rig.rows.push(Row {
        scenario,
        shape: format!("{HOSTS}x{PROCS}"),
        acquisitions: acq,
        faults: lost + dropped,
        violations: viol,
        wall: start.elapsed(),
        notes: format!(
            "counter {counter}/{expected}; {errs} errors; {lost} replies lost, {dropped} packets dropped; {retrans} retransmissions ({drc} answered), {reconnects} reconnects ({new_port} from a new port); NFS errors seen: {}{}",
            if errors.is_empty() { "none".to_string() } else { errors.join(", ") },
            if messages.is_empty() { String::new() } else { format!("; worker messages: {}", messages.join(" / ")) }
        ),
        ..Row::default()
    });
}

#[test]
#[ignore = "issue 16, work in progress: in 2 of 5 runs 1-2 unlocks get ENOLCK under 15% lost replies + 2% drops (cause not yet known); run with cargo test --test multihost nfs -- --ignored"]
fn nfs_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let bins = Bins { root: root.to_path_buf(), nfsfs: nfsfs(root, tmp), worker: build::worker(root, tmp) };
    let mut rig = Rig {
        base: Scratch::new(tmp, "multihost-nfs"),
        faultfs: PathBuf::new(),
        worker: bins.worker.clone(),
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let started = Instant::now();
    exclusion(&mut rig, &bins, "TCP, clean", Wire::default());
    exclusion(
        &mut rig,
        &bins,
        "TCP, lost CREATE/REMOVE/RENAME/LINK replies 15% + 2% packets dropped",
        Wire { lost_pct: 15, drop_pct: 2, ..Wire::default() },
    );
    exclusion(&mut rig, &bins, "TCP, lost REMOVE replies 20%", Wire { lost_pct: 20, procs: "12", ..Wire::default() });
    exclusion(&mut rig, &bins, "TCP, lost CREATE/RENAME/LINK replies 20%", Wire { lost_pct: 20, procs: "8, 14, 15", ..Wire::default() });
    exclusion(&mut rig, &bins, "UDP, 2% packets dropped", Wire { udp: true, drop_pct: 2, ..Wire::default() });
    exclusion(&mut rig, &bins, "TCP, actimeo 3 s, lost replies 10%", Wire { actimeo_ms: 3000, lost_pct: 10, ..Wire::default() });
    let table = table(&rig.rows);
    println!("\nreal-NFS rig, {:.0} s in all:\n\n{table}", started.elapsed().as_secs_f64());
    let _ = fs::write(root.join("target/multihost-nfs-table.md"), &table);
    assert!(rig.failures.is_empty(), "rig failures:\n{}", rig.failures.join("\n"));
}
