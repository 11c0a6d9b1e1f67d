//! A simulated host: a process tree in its own UTS namespace (its own host name), PID
//! namespace (PIDs collide across hosts, as on a real cluster; /proc mounted for it) and
//! mount namespace, where its own instance of the fault-injecting filesystem is mounted
//! over the shared backing directory: one NFS client per host, each with its own caches.
//!
//! Two backends: `Backend::Faultfs`, the fault-injecting passthrough filesystem over the
//! shared backing directory, and `Backend::Nfs`, where the host also has a network
//! namespace of its own, joined to a real NFS server (rig/nfs/server, exporting the
//! backing directory) by a veth pair (rig/nfs/link), with faults on its wire
//! (rig/nfs/lossy), and mounts rig/nfsfs, an NFSv3 client.
//!
//! Everything a host starts lives inside its PID namespace, so killing the namespace's
//! init ends it all, and the mount goes away with the mount namespace. The `unshare`
//! process dies with the test process (PR_SET_PDEATHSIG), so nothing outlives a crash.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What one host's filesystem client does wrong.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub lose_replies: f64,
    pub transient: f64,
    pub attr_cache_ms: u64,
    pub clock_offset_ms: i64,
    /// Every rename waits this long before it is done (renames from several hosts overlap).
    pub rename_delay_ms: u64,
    /// Which of link,rename,unlink,create lose replies (empty: all four).
    pub lose_ops: &'static str,
}

impl Faults {
    fn args(&self, seed: u64) -> Vec<String> {
        vec![
            format!("--lose-replies={}", self.lose_replies),
            format!("--transient={}", self.transient),
            format!("--attr-cache-ms={}", self.attr_cache_ms),
            format!("--clock-offset-ms={}", self.clock_offset_ms),
            format!("--rename-delay-ms={}", self.rename_delay_ms),
            format!("--lose-ops={}", if self.lose_ops.is_empty() { "link,rename,unlink,create" } else { self.lose_ops }),
            format!("--seed={seed}"),
        ]
    }
}

/// What one host's NFS client and wire look like (the real-NFS backend).
#[derive(Clone, Debug, Default)]
pub struct Wire {
    pub udp: bool,
    pub actimeo_ms: u64,
    /// Replies lost of calls of `procs` (TCP: the connection is reset after the call
    /// went out; UDP: the next reply datagram is dropped).
    pub lost_pct: u32,
    pub drop_pct: u32,
    /// NFSv3 procedure numbers whose replies are lost (empty: CREATE, REMOVE, RENAME, LINK).
    pub procs: &'static str,
}

/// The client a host mounts.
#[derive(Clone, Debug)]
pub enum Backend {
    /// rig/faultfs over the backing directory, with its imitated faults.
    Faultfs(Faults),
    /// rig/nfsfs, an NFSv3 client of the site's server, with faults on the wire.
    Nfs(Wire),
}

/// The real NFS server of a site and the client program (Backend::Nfs).
pub struct NfsSite {
    pub root: PathBuf,
    pub nfsfs: PathBuf,
    /// The server's namespace init (rig/nfs/server), where the veth pairs start.
    pub server_init: i32,
}

/// Paths shared by all hosts of one scenario.
pub struct Site {
    /// The backing directory: the "server's" disk.
    pub backing: PathBuf,
    /// Where each host mounts its client, the same path on every host.
    pub mount: PathBuf,
    /// Per-host control and statistics files of the filesystem instances.
    pub state: PathBuf,
    pub faultfs: PathBuf,
    pub worker: PathBuf,
    /// Set for a site whose hosts use Backend::Nfs.
    pub nfs: Option<NfsSite>,
}

pub struct Host {
    pub name: String,
    backend: Backend,
    /// The host's number on the site (1...): its veth pair and addresses (10.99.N.0/30).
    n: usize,
    unshare: Option<Child>,
    /// nsenter, parent of the filesystem daemon; it ends when the namespace does.
    filesystem: Option<Child>,
    init: i32,
    boots: u64,
    stats: PathBuf,
    seed: u64,
    /// The host's own CLOCK_MONOTONIC and CLOCK_BOOTTIME run this many seconds ahead of
    /// (or behind) the machine's: a time namespace (0: the machine's clocks).
    clock_offset_s: i64,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(20);

impl Host {
    pub fn boot(site: &Site, name: &str, faults: Faults, seed: u64) -> Host {
        Host::boot_on(site, name, Backend::Faultfs(faults), seed, 1)
    }

    /// A host with `backend`, number `n` of its site (1 to 250).
    pub fn boot_on(site: &Site, name: &str, backend: Backend, seed: u64, n: usize) -> Host {
        Host::boot_clocked(site, name, backend, seed, n, 0)
    }

    /// A host whose monotonic and boot-time clocks are `clock_offset_s` seconds off the
    /// machine's (its own time namespace), as a machine booted at another time.
    pub fn boot_clocked(site: &Site, name: &str, backend: Backend, seed: u64, n: usize, clock_offset_s: i64) -> Host {
        let stats = site.state.join(format!("{name}.stats"));
        let mut host =
            Host { name: name.into(), backend, n, unshare: None, filesystem: None, init: 0, boots: 0, stats, seed, clock_offset_s };
        host.start(site);
        host
    }

    fn net(&self) -> bool {
        matches!(self.backend, Backend::Nfs(_))
    }

    fn timed(&self) -> bool {
        self.clock_offset_s != 0
    }

    /// Sends `sig` to every process of this host (its PID namespace: the init, the
    /// filesystem client, every worker and all their threads): SIGSTOP freezes the whole
    /// host, SIGCONT resumes it. Returns how many processes were signalled.
    pub fn signal_all(&self, sig: i32) -> usize {
        let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let Some(ours) = ns(&self.init.to_string()) else { return 0 };
        let mut signalled = 0;
        let mut parents = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(pid) = name.parse::<i32>() else { continue };
            if ns(&name).as_ref() == Some(&ours) {
                // SAFETY: signalling a process of this host's PID namespace, which we started.
                if unsafe { libc::kill(pid, sig) } == 0 {
                    signalled += 1;
                }
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok());
                parents.extend(ppid.filter(|p| *p > 0 && ns(&p.to_string()).as_ref() != Some(&ours)));
            }
        }
        if sig == libc::SIGCONT {
            // nsenter (outside the namespace) stops itself when its child stops, as a
            // shell's job would, and waits for a SIGCONT of its own.
            for p in parents {
                // SAFETY: the nsenter or unshare we started for this host.
                unsafe { libc::kill(p, libc::SIGCONT) };
            }
        }
        signalled
    }

    /// Like `spawn`, with stdout read line by line as it comes (`next_line`).
    pub fn spawn_lines(&self, site: &Site, args: &[&str]) -> Lines {
        let mut child = self.spawn(site, args);
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx, seen: Vec::new() }
    }

    fn start(&mut self, site: &Site) {
        self.boots += 1;
        let mut cmd = Command::new("unshare");
        cmd.args(["--uts", "--pid", "--mount"])
            .args(self.net().then_some("--net"))
            .args(
                self.timed()
                    .then(|| {
                        let s = self.clock_offset_s.to_string();
                        ["--time".to_string(), "--monotonic".into(), s.clone(), "--boottime".into(), s]
                    })
                    .into_iter()
                    .flatten(),
            )
            .args(["--fork", "--mount-proc", "--propagation", "private", "--kill-child"])
            .args(["--", "sh", "-c", "hostname \"$0\" && exec sleep 1000000", &self.name])
            .stdin(Stdio::null());
        // SAFETY: prctl in the child before exec only sets its parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let unshare = cmd.spawn().expect("unshare starts (util-linux)");
        self.init = wait_for_init(unshare.id() as i32);
        self.unshare = Some(unshare);
        let ready = site.state.join(format!("{}.ready.{}", self.name, self.boots));
        let _ = fs::remove_file(&ready);
        let mut fs = self.enter();
        match &self.backend {
            Backend::Faultfs(faults) => {
                fs.arg(&site.faultfs).args(faults.args(self.seed + self.boots)).arg(format!("--stats={}", self.stats.display()));
                fs.arg(format!("--ready-file={}", ready.display())).arg(&site.backing).arg(&site.mount);
            }
            Backend::Nfs(wire) => {
                let nfs = site.nfs.as_ref().expect("a site with NFS hosts has a server");
                let (init, n) = (self.init.to_string(), self.n.to_string());
                run_ok(Command::new(nfs.root.join("rig/nfs/link")).args([&nfs.server_init.to_string(), &init, &n]), "rig/nfs/link");
                if wire.lost_pct > 0 || wire.drop_pct > 0 {
                    let mut lossy = Command::new(nfs.root.join("rig/nfs/lossy"));
                    lossy.args([init, wire.lost_pct.to_string(), wire.drop_pct.to_string()]).arg(if wire.procs.is_empty() {
                        "8, 12, 14, 15"
                    } else {
                        wire.procs
                    });
                    run_ok(&mut lossy, "rig/nfs/lossy");
                }
                fs.arg(&nfs.nfsfs)
                    .arg(format!("--proto={}", if wire.udp { "udp" } else { "tcp" }))
                    .arg(format!("--actimeo-ms={}", wire.actimeo_ms))
                    .arg("--timeo-ms=200")
                    .arg(format!("--stats={}", self.stats.display()))
                    .arg(format!("--ready-file={}", ready.display()))
                    .args(
                        std::env::var_os("NFSLOCK_NFS_TRACE")
                            .map(|_| format!("--rpc-log={}", site.state.join(format!("{}.rpc", self.name)).display())),
                    )
                    .arg(format!("10.99.{}.1:{}", self.n, site.backing.display()))
                    .arg(&site.mount);
            }
        }
        fs.stdout(Stdio::null()).stderr(Stdio::inherit());
        // The filesystem runs inside the namespace and dies with it.
        self.filesystem = Some(fs.spawn().expect("nsenter starts the filesystem"));
        let start = Instant::now();
        while !ready.exists() {
            let exited = self.filesystem.as_mut().unwrap().try_wait().ok().flatten();
            assert!(exited.is_none(), "host {}: the filesystem exited: {exited:?}", self.name);
            assert!(start.elapsed() < BOOT_TIMEOUT, "host {}: the filesystem did not come up", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A command that runs inside this host's namespaces.
    fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "--uts", "--pid", "--mount"])
            .args(self.net().then_some("--net"))
            .args(self.timed().then_some("--time"))
            .arg("--");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Starts the worker with `args` on this host.
    pub fn spawn(&self, site: &Site, args: &[&str]) -> Child {
        let mut cmd = self.enter();
        cmd.arg(&site.worker).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("nsenter starts the worker")
    }

    /// Runs the worker with `args` to its end (killed past `limit`).
    pub fn run(&self, site: &Site, args: &[&str], limit: Duration) -> Output {
        finish(self.spawn(site, args), limit)
    }

    /// Starts live processes on this host until one has PID `pid` in the host's
    /// namespace and returns it (None if the namespace has already gone past it). The
    /// ones started on the way are ended.
    pub fn occupy_pid(&self, pid: i32) -> Option<Child> {
        let mut others = Vec::new();
        let found = loop {
            let mut cmd = self.enter();
            cmd.args(["sh", "-c", "echo $$; exec sleep 1000"]).stdout(Stdio::piped());
            let mut child = cmd.spawn().expect("nsenter starts sh");
            let mut line = [0u8; 16];
            let n = child.stdout.as_mut().and_then(|o| o.read(&mut line).ok()).unwrap_or(0);
            let got: i32 = String::from_utf8_lossy(&line[..n]).trim().parse().unwrap_or(i32::MAX);
            if got == pid {
                break Some(child);
            }
            others.push(child);
            if got > pid || others.len() > 64 {
                break None;
            }
        };
        for mut c in others {
            let _ = c.kill();
            let _ = c.wait();
        }
        found
    }

    /// Crash and come back: every process of the host dies, a new namespace with the same
    /// host name starts, with a new filesystem client (empty caches).
    pub fn reboot(&mut self, site: &Site) {
        self.halt();
        self.start(site);
    }

    fn halt(&mut self) {
        if let Some(mut unshare) = self.unshare.take() {
            // SAFETY: signalling the namespace's init, which we started.
            unsafe { libc::kill(self.init, libc::SIGKILL) };
            let _ = unshare.kill();
            let _ = unshare.wait();
        }
        if let Some(mut nsenter) = self.filesystem.take() {
            let _ = nsenter.wait();
        }
    }

    /// Faults this host's filesystem injected: lost replies, transient errors and
    /// answers from its attribute cache.
    pub fn faults_injected(&self) -> u64 {
        if self.net() {
            let (lost, dropped) = self.wire_counts();
            return lost + dropped;
        }
        let text = fs::read_to_string(&self.stats).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| {
                // Answers served from the cache count: each may have been out of date.
                ["lost_reply_", "transient_", "attr_cache_hits", "negative_entries"].iter().any(|p| k.starts_with(p))
            })
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }
}

impl Host {
    /// The client's counters (`key=value` lines of its stats file).
    pub fn client_stats(&self) -> Vec<(String, u64)> {
        fs::read_to_string(&self.stats)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect()
    }

    /// Packets the wire rules of an NFS host hit: (replies lost, packets dropped).
    pub fn wire_counts(&self) -> (u64, u64) {
        let Backend::Nfs(wire) = &self.backend else { return (0, 0) };
        if wire.lost_pct == 0 && wire.drop_pct == 0 {
            return (0, 0);
        }
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("rig/nfs/lossy"))
            .args([self.init.to_string(), "stats".into()])
            .output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let packets =
            |l: &str| l.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        let lost = text.lines().filter(|l| l.contains("lost reply")).map(packets).sum();
        let dropped = text.lines().filter(|l| l.contains("random drop")).map(packets).sum();
        (lost, dropped)
    }
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

impl Drop for Host {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The pid (in our namespace) of the child `unshare --fork` made: the new namespace's
/// init, once it has become `sleep` (after setting the host name).
fn wait_for_init(unshare: i32) -> i32 {
    let start = Instant::now();
    loop {
        let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
            if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
                return pid;
            }
        }
        assert!(start.elapsed() < BOOT_TIMEOUT, "unshare did not start its namespace");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child`, killing it past `limit`; the output says what happened.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let status = child.wait().expect("waits for the worker");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut stderr);
    }
    Output { status, stdout, stderr }
}

/// A worker whose stdout lines are read as they come.
pub struct Lines {
    child: Child,
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// The next line, or None at its end or past `limit`.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        let line = self.rx.recv_timeout(limit).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Waits for the worker to end (killed past `limit`); its output holds every line,
    /// those already read included.
    pub fn finish(mut self, limit: Duration) -> Output {
        let mut out = finish(self.child, limit);
        while let Ok(line) = self.rx.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        let mut text = self.seen.join("\n");
        text.push('\n');
        out.stdout = text.into_bytes();
        out
    }
}

/// `key=value` from one line.
pub fn line_field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// Reads `key=value` from a worker's result line.
pub fn field(out: &Output, key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last()?;
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

pub fn count(out: &Output, key: &str) -> u64 {
    field(out, key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A fresh directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(base: &Path, name: &str) -> Scratch {
        let dir = base.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creates the scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
