//! Hostile and broken environments (issue 9, "Hostile and broken environments", first
//! half; issue 15 finding 9), driven through the C ABI by `tests/hostile/driver.c`, a
//! line-driven client run as root, as an unprivileged victim or as an unprivileged
//! attacker (users made with useradd here and removed at the end).
//!
//! - An attacker plants symlinks, hard links, FIFOs, sockets, directories and files at
//!   every name the library uses in a sticky world-writable directory (one owned by
//!   root like /tmp, one owned by the attacker, where the kernel's protected_* sysctls do
//!   not apply, and one in /dev/shm); names the library draws at random are made predictable with an
//!   LD_PRELOAD shim (`tests/hostile/predict.c`). The victim (root, and another
//!   unprivileged user) must not hang, must not follow, write or delete anything outside
//!   (contents, inodes and mtimes of the targets are compared), must leave the planted
//!   entries alone, and must fail only with the documented errno.
//! - ENOSPC (a small tmpfs), EROFS (a read-only bind mount), EMFILE (a low
//!   RLIMIT_NOFILE) for create, blocking_create, unlock, session open and make_new_ids:
//!   a clear errno and no partial or corrupt files; descriptors bounded under
//!   `ulimit -n 20` (issue 15 finding 9).
//! - The lock directory removed or renamed while blocking_create waits.
//! - A signal storm (SIGALRM every 100 us, no SA_RESTART) during blocking_create and
//!   make_new_ids: no EINTR, timeouts honoured.
//!
//! Needs root (users, mounts), useradd/userdel (passwd) and mount/umount (util-linux).
//! Every test is bounded: each driver command has a deadline after which the driver is
//! killed and the test fails ("hung"). Users, mounts, /dev/shm entries and directories
//! are removed by guards, also when a test fails.
#![cfg(target_os = "linux")]

#[path = "support/cdylib.rs"]
mod cdylib;
#[path = "support/scratch.rs"]
mod scratch;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");

/// How long one driver command may take before the driver counts as hung. Far above
/// anything the library should take (the longest legitimate wait here is a 1 s session
/// timeout): a hang is what this catches, not slowness.
const COMMAND_LIMIT: Duration = Duration::from_secs(20);
/// Generous bound for a call that must return "at once" or right after its timeout.
const PROMPT_MS: f64 = 5000.0;

/// Timing-sensitive tests (signal storm, waits) and the heavy ones run one at a time:
/// the machine has few cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "tests/hostile.rs needs root (it creates users with useradd and mounts tmpfs and bind \
         mounts); CI runs it as root"
    );
}

// ---------------------------------------------------------------------------------------
// Building the driver and the shim
// ---------------------------------------------------------------------------------------

struct Built {
    driver: PathBuf,
    predict: PathBuf,
    lib: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<Built, String> {
    let root = Path::new(MANIFEST_DIR);
    let work = Path::new(TARGET_TMPDIR).join("hostile");
    fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    let driver = work.join("nfslock-hostile-driver");
    // $ORIGIN/lib first: the copies installed next to the driver in each test's scratch
    // directory (readable by the test users) are the ones loaded there.
    cdylib::build_c_program(&[root.join("tests/hostile/driver.c")], &driver, &["-Wl,-rpath,$ORIGIN/lib".to_string()])?;
    let predict = work.join("libnfslock-predict.so");
    let partial = work.join(format!("libnfslock-predict.so.{}", std::process::id()));
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let compiler = cc::Build::new()
        .target(&triple)
        .host(&triple)
        .opt_level(1)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .map_err(|e| format!("no C compiler: {e}"))?;
    let out = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&partial)
        .arg(root.join("tests/hostile/predict.c"))
        .output()
        .map_err(|e| format!("running the C compiler: {e}"))?;
    if !out.status.success() {
        return Err(format!("compiling predict.c failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    fs::rename(&partial, &predict).map_err(|e| format!("rename {}: {e}", partial.display()))?;
    let lib = cdylib::cdylib_dir()?.join("libnfslock.so");
    Ok(Built { driver, predict, lib })
}

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

/// A user made for one test with useradd; removed (with its group) when dropped.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

static USERADD: Mutex<()> = Mutex::new(());
static USER_SEQ: AtomicUsize = AtomicUsize::new(0);

fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes users left by earlier runs of this test that were killed before their guards
/// ran: names `nfsh<pid><role><n>` whose pid no longer runs.
fn remove_stale_users() {
    let Ok(passwd) = fs::read_to_string("/etc/passwd") else { return };
    for line in passwd.lines() {
        let name = line.split(':').next().unwrap_or("");
        let Some(rest) = name.strip_prefix("nfsh") else { continue };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let role = rest[digits.len()..].chars().next();
        if digits.is_empty() || !matches!(role, Some('a' | 'v')) {
            continue;
        }
        if !Path::new(&format!("/proc/{digits}")).exists() {
            let _ = run_ok(Command::new("userdel").arg(name));
            let _ = run_ok(Command::new("groupdel").arg(name));
        }
    }
}

impl User {
    fn add(role: char) -> User {
        let _serial = USERADD.lock().unwrap_or_else(|p| p.into_inner());
        static STALE: std::sync::Once = std::sync::Once::new();
        STALE.call_once(remove_stale_users);
        let name = format!("nfsh{}{role}{}", std::process::id(), USER_SEQ.fetch_add(1, Ordering::Relaxed));
        let added =
            run_ok(Command::new("useradd").args(["-M", "-U", "-s", "/usr/sbin/nologin", "-c", "libnfslock hostile test"]).arg(&name));
        if let Err(e) = added {
            panic!("useradd failed (install the passwd package, see scripts/deps): {e}");
        }
        let id = |flag: &str| -> u32 {
            run_ok(Command::new("id").arg(flag).arg(&name)).expect("id of the new user").trim().parse().expect("a number")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        User { name, uid, gid }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _serial = USERADD.lock().unwrap_or_else(|p| p.into_inner());
        // Its processes (drivers) are killed and reaped by their guards before this runs.
        for _ in 0..50 {
            match run_ok(Command::new("userdel").arg(&self.name)) {
                Ok(_) => break,
                Err(e) if e.contains("currently used") => sleep(Duration::from_millis(100)),
                Err(_) => break,
            }
        }
        let _ = run_ok(Command::new("groupdel").arg(&self.name));
    }
}

/// Who runs a driver.
#[derive(Clone, Copy)]
enum Who {
    Root,
    User(u32, u32),
}

impl Who {
    fn of(user: &User) -> Who {
        Who::User(user.uid, user.gid)
    }
    fn uid(self) -> u32 {
        match self {
            Who::Root => 0,
            Who::User(uid, _) => uid,
        }
    }
    fn gid(self) -> u32 {
        match self {
            Who::Root => 0,
            Who::User(_, gid) => gid,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::User(..) => "user",
        }
    }
}

// ---------------------------------------------------------------------------------------
// A test's scratch directory, mounts and /dev/shm entries
// ---------------------------------------------------------------------------------------

/// A test's scratch tree under /tmp (readable by the test users; the driver and the
/// library are copied into it), the mounts and /dev/shm entries it made. Dropped, it
/// unmounts, removes the /dev/shm entries and the tree. Declare drivers after it so that
/// they are killed first.
struct Env {
    /// The tree; kept on disk rather than removed while a mount in it would not go away.
    tree: Option<scratch::TempDir>,
    root: PathBuf,
    bin: PathBuf,
    mounts: Mutex<Vec<PathBuf>>,
    shm: Mutex<Vec<PathBuf>>,
}

impl Env {
    fn new(name: &str) -> Env {
        require_root();
        let b = built();
        // /tmp itself, not $TMPDIR: the test users must be able to reach the tree.
        let tree = scratch::dir_in(Path::new("/tmp"), &format!("nfslock-hostile-{name}"));
        let root = tree.path().to_path_buf();
        let bin = root.join("bin");
        let lib = bin.join("lib");
        fs::create_dir_all(&lib).expect("scratch directory");
        for d in [&root, &bin, &lib] {
            chmod(d, 0o755);
        }
        copy(&b.driver, &bin.join("driver"), 0o755);
        copy(&b.predict, &bin.join("libnfslock-predict.so"), 0o755);
        copy(&b.lib, &lib.join("libnfslock.so"), 0o755);
        copy(&b.lib, &lib.join(cdylib::soname()), 0o755);
        Env { tree: Some(tree), root, bin, mounts: Mutex::new(Vec::new()), shm: Mutex::new(Vec::new()) }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A directory of the tree (parents made), with this mode and owner.
    fn dir(&self, rel: &str, mode: u32, owner: Who) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        chown(&p, owner);
        chmod(&p, mode);
        p
    }

    /// A directory in /dev/shm, removed with the Env.
    fn shm_dir(&self, name: &str, mode: u32, owner: Who) -> PathBuf {
        let p = PathBuf::from(format!("/dev/shm/nfslock-hostile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        chown(&p, owner);
        chmod(&p, mode);
        self.shm.lock().unwrap().push(p.clone());
        p
    }

    fn mount(&self, args: &[&str], at: &Path) {
        let mut cmd = Command::new("mount");
        cmd.args(args).arg(at);
        if let Err(e) = run_ok(&mut cmd) {
            panic!("mount failed (util-linux; root needed): {e}");
        }
        self.mounts.lock().unwrap().push(at.to_path_buf());
    }

    /// Unmounts the topmost mount at `at` (one mounted with [`Env::mount`]).
    fn unmount(&self, at: &Path) {
        run_ok(Command::new("umount").arg(at)).unwrap_or_else(|e| panic!("umount: {e}"));
        let mut mounts = self.mounts.lock().unwrap();
        if let Some(i) = mounts.iter().rposition(|m| m == at) {
            mounts.remove(i);
        }
    }

    fn remount(&self, at: &Path, opts: &str) {
        run_ok(Command::new("mount").args(["-o", opts]).arg(at)).unwrap_or_else(|e| panic!("remount: {e}"));
    }

    fn driver(&self, name: &str, who: Who) -> Driver {
        Driver::start(self, name, who, &[])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let mounts = std::mem::take(&mut *self.mounts.lock().unwrap_or_else(|p| p.into_inner()));
        for m in mounts.iter().rev() {
            if run_ok(Command::new("umount").arg(m)).is_err() {
                let _ = run_ok(Command::new("umount").arg("-l").arg(m));
            }
        }
        for p in self.shm.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            match fs::symlink_metadata(&p) {
                Ok(st) if st.is_dir() => {
                    let _ = fs::remove_dir_all(&p);
                }
                Ok(_) => {
                    let _ = fs::remove_file(&p);
                }
                Err(_) => {}
            }
        }
        // Never descend into a mount that would not go away: the tree is then left as
        // it is. Otherwise it goes with the TempDir, dropped after this.
        let still_mounted = fs::read_to_string("/proc/self/mounts").unwrap_or_default().contains(&*self.root.to_string_lossy());
        if still_mounted {
            if let Some(tree) = self.tree.take() {
                let _ = tree.keep();
            }
        }
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown(p: &Path, who: Who) {
    std::os::unix::fs::lchown(p, Some(who.uid()), Some(who.gid())).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn copy(from: &Path, to: &Path, mode: u32) {
    fs::copy(from, to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    chmod(to, mode);
}

/// Writes a file owned by `who` with `mode`.
fn write_file(p: &Path, content: &[u8], mode: u32, who: Who) {
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    chown(p, who);
    chmod(p, mode);
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// One reply line: `= rc=N errno=NAME ms=M KEY=VALUE... err=TEXT`.
#[derive(Debug, Clone)]
struct Reply {
    errno: String,
    ms: f64,
    fields: BTreeMap<String, String>,
    err: String,
    line: String,
}

impl Reply {
    fn parse(line: &str) -> Option<Reply> {
        let body = line.strip_prefix("= ")?;
        let (head, err) = body.split_once(" err=").unwrap_or((body, ""));
        let fields: BTreeMap<String, String> =
            head.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Some(Reply {
            errno: fields.get("errno")?.clone(),
            ms: fields.get("ms")?.parse().ok()?,
            err: err.to_string(),
            line: line.to_string(),
            fields,
        })
    }

    fn ok(&self) -> bool {
        self.errno == "0"
    }

    fn field(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }

    fn num(&self, key: &str) -> i64 {
        self.field(key).parse().unwrap_or_else(|_| panic!("reply has no number {key}: {}", self.line))
    }
}

/// A running driver. Dropped, it is killed (by its pid) and reaped.
struct Driver {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
    transcript: Vec<String>,
}

impl Driver {
    fn start(env: &Env, name: &str, who: Who, envs: &[(&str, String)]) -> Driver {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(80).collect();
        let stderr = env.root.join(format!("driver-{}-{safe}.stderr", SEQ.fetch_add(1, Ordering::Relaxed)));
        let err_file = fs::File::create(&stderr).expect("driver stderr file");
        let mut cmd = Command::new(env.bin.join("driver"));
        cmd.current_dir("/").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err_file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Who::User(uid, gid) = who {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn the driver: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("driver stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver { name: format!("{name} ({})", who.label()), child, stdin, lines, stderr, transcript: Vec::new() }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn send(&mut self, line: &str) {
        self.transcript.push(format!("> {line}"));
        let stdin = self.stdin.as_mut().expect("driver stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("driver {} is gone ({e}); transcript:\n{}", self.name, self.context()));
    }

    /// The next reply, or an error (with the transcript) if none comes within `limit`:
    /// the driver is then killed.
    fn recv(&mut self, limit: Duration) -> Result<Reply, String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => {
                self.transcript.push(format!("< {line}"));
                Reply::parse(&line).ok_or_else(|| format!("driver {}: unparsable reply {line:?}\n{}", self.name, self.context()))
            }
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Err(format!("driver {} HUNG: no reply within {limit:?}\n{}", self.name, self.context()))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!("driver {} died ({status})\n{}", self.name, self.context()))
            }
        }
    }

    fn try_cmd(&mut self, line: &str) -> Result<Reply, String> {
        self.send(line);
        self.recv(COMMAND_LIMIT)
    }

    fn cmd(&mut self, line: &str) -> Reply {
        self.try_cmd(line).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A command that must succeed (setup steps).
    fn must(&mut self, line: &str) -> Reply {
        let r = self.cmd(line);
        assert!(r.ok(), "driver {}: `{line}` failed: {}\n{}", self.name, r.line, self.context());
        r
    }

    /// Ends the driver normally (its at-exit handlers run) and waits for it.
    fn quit(&mut self) -> Result<(), String> {
        if self.stdin.is_some() {
            self.transcript.push("> quit".into());
            let _ = self.stdin.as_mut().map(|s| s.write_all(b"quit\n"));
            self.stdin = None;
        }
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("driver {} exited with {status}\n{}", self.name, self.context())),
                Ok(None) if start.elapsed() > COMMAND_LIMIT => {
                    self.kill();
                    return Err(format!("driver {} HUNG at exit\n{}", self.name, self.context()));
                }
                Ok(None) => sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }

    /// SIGKILL, by pid, and reap.
    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of our own child, which has not been reaped.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }

    fn context(&self) -> String {
        let err = fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&String> = self.transcript.iter().rev().take(40).collect();
        let mut out = String::new();
        for l in tail.into_iter().rev() {
            out.push_str("    ");
            out.push_str(l);
            out.push('\n');
        }
        if !err.trim().is_empty() {
            out.push_str(&format!("    stderr: {}\n", err.trim()));
        }
        out
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots: "nothing outside followed, written or deleted"
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Node {
    kind: char,
    ino: u64,
    uid: u32,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    /// A file's bytes, a symlink's target, a directory's sorted names.
    content: Vec<u8>,
}

fn kind_of(ft: fs::FileType) -> char {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        'l'
    } else if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else {
        'o'
    }
}

fn node(p: &Path) -> Option<Node> {
    let st = fs::symlink_metadata(p).ok()?;
    let kind = kind_of(st.file_type());
    let content = match kind {
        'f' => fs::read(p).unwrap_or_default(),
        'l' => fs::read_link(p).map(|t| t.into_os_string().into_encoded_bytes()).unwrap_or_default(),
        'd' => {
            let mut names: Vec<String> =
                fs::read_dir(p).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
            names.sort();
            names.join("\n").into_bytes()
        }
        _ => Vec::new(),
    };
    // A directory's mtime moves when a name is created or removed in it, also when the
    // name is gone again by the time of the second snapshot.
    let size = if kind == 'd' { 0 } else { st.size() };
    let mtime = (st.mtime(), st.mtime_nsec());
    Some(Node { kind, ino: st.ino(), uid: st.uid(), mode: st.mode(), size, mtime, content })
}

/// Every name under `root` (not following symlinks), with its node.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Some(n) = node(&p) else { continue };
        if n.kind == 'd' {
            if let Ok(d) = fs::read_dir(&p) {
                todo.extend(d.flatten().map(|e| e.path()));
            }
        }
        out.insert(p, n);
    }
    out
}

impl Node {
    fn show(&self) -> String {
        let text = String::from_utf8_lossy(&self.content);
        let text: String = text.chars().take(80).collect();
        format!(
            "{} ino {} uid {} mode {:o} size {} mtime {}.{:09} {text:?}",
            self.kind, self.ino, self.uid, self.mode, self.size, self.mtime.0, self.mtime.1
        )
    }
}

fn show(n: &Option<Node>) -> String {
    n.as_ref().map_or_else(|| "absent".to_string(), Node::show)
}

fn diff(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => out.push(format!("{} was removed", p.display())),
            Some(a) if a != b => out.push(format!("{} changed: {} -> {}", p.display(), b.show(), a.show())),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{} was created", p.display()));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Records and counters, as the README specifies them
// ---------------------------------------------------------------------------------------

/// A lock record of another host (never broken: EAGAIN).
fn other_host_record() -> String {
    "((host nfslock-hostile-elsewhere)(pid 1)(message\"\")(start_time(2020-01-01 00:00:00.000000Z)))".to_string()
}

/// A valid counter file (README "Session repositories") saying `next`.
fn counter_text(next: u64) -> Vec<u8> {
    let slot = |label: char, seq: u64| {
        let mut line = format!("{label} {seq:020} {next:020} ");
        let crc = crc32fast::hash(line.as_bytes());
        line.push_str(&format!("{crc:08x}\n"));
        line
    };
    format!("nfslock-counter 1\n{}{}", slot('A', 1), slot('B', 0)).into_bytes()
}

/// `text` escaped for the driver's `plant file` (\n, \\).
fn escape(text: &[u8]) -> String {
    let mut out = String::new();
    for &b in text {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\\' => out.push_str("\\\\"),
            b' '..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// Errnos the README documents for nfslock_create (its row, and the filesystem's errors
/// of the error table).
const CREATE_DOC: &[&str] = &[
    "EAGAIN",
    "EDEADLK",
    "EBADMSG",
    "EMSGSIZE",
    "ELOOP",
    "ENOENT",
    "EMFILE",
    "ENFILE",
    "EACCES",
    "EPERM",
    "EROFS",
    "ENAMETOOLONG",
    "EISDIR",
    "ENOSPC",
    "EIO",
];
/// nfslock_blocking_create: the same and ETIMEDOUT.
const BLOCKING_DOC: &[&str] = &[
    "ETIMEDOUT",
    "EAGAIN",
    "EDEADLK",
    "EBADMSG",
    "EMSGSIZE",
    "ELOOP",
    "ENOENT",
    "EMFILE",
    "ENFILE",
    "EACCES",
    "EPERM",
    "EROFS",
    "ENAMETOOLONG",
    "EISDIR",
    "ENOSPC",
    "EIO",
];
/// nfslock_session_open: its row, plus ELOOP/EBADMSG/EISDIR of the error table (a
/// symlink or a non-file where the repository's files should be).
const OPEN_DOC: &[&str] = &["0", "ENOTDIR", "EACCES", "EPERM", "EROFS", "ENOSPC", "ETIMEDOUT", "ELOOP", "EBADMSG", "EISDIR", "EIO"];
/// make_new_ids, check and close: their rows plus the same.
const MAKE_DOC: &[&str] =
    &["0", "ENOENT", "EBADMSG", "ESTALE", "ETIMEDOUT", "ELOOP", "ENOTDIR", "EACCES", "EPERM", "EISDIR", "EROFS", "ENOSPC", "EIO"];

fn check_rc(failures: &mut Vec<String>, case: &str, op: &str, r: &Reply, allowed: &[&str]) {
    if !allowed.contains(&r.errno.as_str()) {
        failures.push(format!("{case}: {op} returned {} (expected one of {allowed:?}); err={:?}", r.errno, r.err));
    }
}

fn check_prompt(failures: &mut Vec<String>, case: &str, op: &str, r: &Reply, bound_ms: f64) {
    if r.ms >= bound_ms {
        failures.push(format!("{case}: {op} took {:.0} ms (bound {bound_ms:.0} ms); {}", r.ms, r.line));
    }
}

fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} failure(s):\n  {}", failures.len(), failures.join("\n  "));
}

// ---------------------------------------------------------------------------------------
// 1. An attacker's plants at every name
// ---------------------------------------------------------------------------------------

/// What the attacker puts at a name.
#[derive(Clone, Debug)]
enum Plant {
    /// A symlink to a name in the outside directory (`missing` does not exist).
    Symlink(&'static str),
    /// A hard link of a file in the outside directory.
    Hardlink(&'static str),
    Fifo,
    Socket,
    /// A directory with this mode.
    Dir(u32),
    /// A file with this mode and content.
    File(u32, Vec<u8>),
    /// The attacker's own process holds the lock named by the plant's path (a real
    /// nfslock_create), and stays alive.
    LiveHolder,
    /// The same, then the attacker's process is SIGKILLed: a dead holder's lock of
    /// another user.
    DeadHolder,
}

impl Plant {
    /// Kinds whose entry must survive every victim unchanged (a file or hard link may
    /// legitimately be replaced at `P`, and a dead holder's lock cleared).
    fn must_stay(&self) -> bool {
        matches!(self, Plant::Symlink(_) | Plant::Fifo | Plant::Socket | Plant::Dir(_))
    }
}

/// The victim's files outside the sticky directory that plants point at, and the
/// attacker's baits there. Nothing under it may change.
/// It is made on the variant's filesystem (hard links cannot cross filesystems).
fn make_outside(env: &Env, v: &Variant, rel: &str, victim: Who, attacker: Who) -> PathBuf {
    let dir = if v.base.starts_with("/dev/shm") { env.shm_dir(rel, 0o755, Who::Root) } else { env.dir(rel, 0o755, Who::Root) };
    write_file(&dir.join("secret"), b"the victim's secret\n", 0o600, victim);
    write_file(&dir.join("victim_ww"), b"the victim's world-writable file\n", 0o666, victim);
    write_file(&dir.join("victim_table"), b"", 0o600, victim);
    write_file(&dir.join("victim_counter"), &counter_text(1000), 0o644, victim);
    let vd = dir.join("victim_dir");
    fs::create_dir(&vd).unwrap();
    chown(&vd, victim);
    chmod(&vd, 0o755);
    write_file(&dir.join("bait"), b"the attacker's bait\n", 0o644, attacker);
    write_file(&dir.join("bait_counter"), &counter_text(5), 0o666, attacker);
    let bd = dir.join("bait_dir");
    fs::create_dir(&bd).unwrap();
    chown(&bd, attacker);
    chmod(&bd, 0o777);
    dir
}

/// Plants `plant` at `at` as the attacker. Holders are returned to be kept alive (or
/// already killed) until the case ends.
fn plant(env: &Env, att: &mut Driver, attacker: Who, at: &Path, plant: &Plant, outside: &Path) -> Result<Option<Driver>, String> {
    let at_s = at.display();
    let line = match plant {
        Plant::Symlink(t) => format!("plant symlink {} {at_s}", outside.join(t).display()),
        Plant::Hardlink(t) => format!("plant hardlink {} {at_s}", outside.join(t).display()),
        Plant::Fifo => format!("plant fifo {at_s}"),
        Plant::Socket => format!("plant socket {at_s}"),
        Plant::Dir(mode) => format!("plant dir {at_s} {mode:o}"),
        Plant::File(mode, text) => format!("plant file {at_s} {mode:o} {}", escape(text)),
        Plant::LiveHolder | Plant::DeadHolder => {
            let mut holder = env.driver("attacker-holder", attacker);
            let r = holder.cmd(&format!("create {at_s}"));
            if !r.ok() {
                return Err(format!("the attacker could not take {at_s}: {}", r.line));
            }
            if matches!(plant, Plant::DeadHolder) {
                holder.kill();
            }
            return Ok(Some(holder));
        }
    };
    let r = att.cmd(&line);
    if !r.ok() {
        return Err(format!("the attacker could not plant `{line}`: {}", r.line));
    }
    Ok(None)
}

/// Names and inodes of a directory's entries.
fn listing(dir: &Path) -> HashSet<(String, u64)> {
    fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.ino()))).collect())
        .unwrap_or_default()
}

/// Entries of `dir` the victim created that are still there after it exited, other
/// than the allowed names (regular files only).
fn litter(dir: &Path, before: &HashSet<(String, u64)>, victim: Who, allowed: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ino) in listing(dir) {
        if before.contains(&(name.clone(), ino)) {
            continue;
        }
        let Ok(st) = fs::symlink_metadata(dir.join(&name)) else { continue };
        if st.uid() != victim.uid() {
            continue;
        }
        if allowed.contains(&name.as_str()) && st.is_file() {
            continue;
        }
        out.push(format!("{} ({:?}, uid {})", dir.join(&name).display(), kind_of(st.file_type()), st.uid()));
    }
    out.sort();
    out
}

/// The three sticky world-writable directories every hostile case runs in: one owned
/// by root (like /tmp), one owned by the attacker (the kernel's protected_symlinks,
/// protected_fifos and protected_regular do not apply there, so only the library's
/// own care protects the victim), and one in /dev/shm.
struct Variant {
    name: &'static str,
    base: PathBuf,
    owner: Who,
}

fn variants(env: &Env, attacker: Who) -> Vec<Variant> {
    vec![
        Variant { name: "sticky-root", base: env.dir("sticky-root", 0o1777, Who::Root), owner: Who::Root },
        Variant { name: "sticky-attacker", base: env.dir("sticky-attacker", 0o1777, attacker), owner: attacker },
        Variant { name: "dev-shm", base: env.shm_dir("sticky", 0o1777, Who::Root), owner: Who::Root },
    ]
}

fn case_dir(v: &Variant, n: usize) -> PathBuf {
    let d = v.base.join(format!("c{n}"));
    fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    chown(&d, v.owner);
    chmod(&d, 0o1777);
    d
}

#[derive(Clone, Copy)]
enum At {
    /// `P.nfs_lock`.
    Lock,
    /// `P` itself.
    Copy,
    /// A holder of the lock on `P`.
    Holder,
}

/// Expected results, for a root victim and an unprivileged one.
#[derive(Clone, Copy)]
struct Exp {
    root: &'static [&'static str],
    user: &'static [&'static str],
}

const fn both(x: &'static [&'static str]) -> Exp {
    Exp { root: x, user: x }
}

impl Exp {
    fn for_victim(self, who: Who) -> &'static [&'static str] {
        match who {
            Who::Root => self.root,
            Who::User(..) => self.user,
        }
    }
}

struct LockCase {
    name: &'static str,
    at: At,
    plant: Plant,
    create: Exp,
    /// nfslock_blocking_create with a 300 ms timeout.
    blocking: Exp,
    /// nfslock_get_hostname_and_pid and nfslock_get_message.
    read: Exp,
    unlock_path: Exp,
}

fn lock_cases() -> Vec<LockCase> {
    const LOOP: Exp = both(&["ELOOP"]);
    const BAD: Exp = both(&["EBADMSG"]);
    const NOENT: Exp = both(&["ENOENT"]);
    let garbage = b"this is not a lock record\n".to_vec();
    let mut cases = vec![];
    for (name, target) in [("lock-symlink-secret", "secret"), ("lock-symlink-dir", "victim_dir"), ("lock-symlink-dangling", "missing")] {
        cases.push(LockCase {
            name,
            at: At::Lock,
            plant: Plant::Symlink(target),
            create: LOOP,
            blocking: LOOP,
            read: LOOP,
            unlock_path: LOOP,
        });
    }
    for (name, plant) in [
        ("lock-hardlink-bait", Plant::Hardlink("bait")),
        ("lock-hardlink-victim-file", Plant::Hardlink("victim_ww")),
        ("lock-fifo", Plant::Fifo),
        ("lock-socket", Plant::Socket),
        ("lock-dir", Plant::Dir(0o777)),
        ("lock-garbage-file", Plant::File(0o644, garbage.clone())),
    ] {
        cases.push(LockCase { name, at: At::Lock, plant, create: BAD, blocking: BAD, read: BAD, unlock_path: BAD });
    }
    cases.push(LockCase {
        name: "lock-empty-file",
        at: At::Lock,
        plant: Plant::File(0o644, Vec::new()),
        // A holder between its link and its write (Core v1): held, never cleared.
        create: both(&["EAGAIN"]),
        blocking: both(&["ETIMEDOUT"]),
        read: BAD,
        unlock_path: both(&["EAGAIN"]),
    });
    cases.push(LockCase {
        name: "lock-other-host-record",
        at: At::Lock,
        plant: Plant::File(0o644, other_host_record().into_bytes()),
        create: both(&["EAGAIN"]),
        blocking: both(&["ETIMEDOUT"]),
        read: both(&["0"]),
        unlock_path: both(&["EPERM"]),
    });
    cases.push(LockCase {
        name: "live-attacker-holder",
        at: At::Holder,
        plant: Plant::LiveHolder,
        create: both(&["EAGAIN"]),
        blocking: both(&["ETIMEDOUT"]),
        read: both(&["0"]),
        unlock_path: both(&["EPERM"]),
    });
    // Root clears a dead holder's lock (README "The protocol"); another user cannot
    // remove the attacker's file in a sticky directory: the filesystem's EPERM.
    cases.push(LockCase {
        name: "dead-attacker-holder",
        at: At::Holder,
        plant: Plant::DeadHolder,
        create: Exp { root: &["0"], user: &["EPERM"] },
        blocking: Exp { root: &["0"], user: &["EPERM"] },
        read: Exp { root: &["ENOENT"], user: &["0"] },
        unlock_path: Exp { root: &["ENOENT"], user: &["EPERM"] },
    });
    // P is never written, created or followed by libnfslock (README "On-disk format"):
    // whatever is planted there, the lock works and the entry stays exactly as it was.
    const TAKEN: Exp = both(&["0"]);
    for (name, plant) in [
        ("copy-symlink-secret", Plant::Symlink("secret")),
        ("copy-symlink-dir", Plant::Symlink("victim_dir")),
        ("copy-symlink-dangling", Plant::Symlink("missing")),
        ("copy-fifo", Plant::Fifo),
        ("copy-socket", Plant::Socket),
        ("copy-dir", Plant::Dir(0o777)),
        ("copy-hardlink-bait", Plant::Hardlink("bait")),
        ("copy-hardlink-victim-file", Plant::Hardlink("victim_ww")),
        ("copy-attacker-file", Plant::File(0o644, garbage)),
    ] {
        cases.push(LockCase { name, at: At::Copy, plant, create: TAKEN, blocking: TAKEN, read: NOENT, unlock_path: NOENT });
    }
    cases
}

/// Runs one case: plants, runs the victim, checks. Failures are collected.
#[allow(clippy::too_many_arguments)] // one case is many facts; a struct would only rename them
fn run_lock_case(
    env: &Env,
    att: &mut Driver,
    attacker: Who,
    victim: Who,
    dir: &Path,
    outside: &Path,
    case: &LockCase,
    label: &str,
    failures: &mut Vec<String>,
) {
    let p = dir.join("lockp");
    let lock = dir.join("lockp.nfs_lock");
    let at = match case.at {
        At::Lock => lock.clone(),
        At::Copy | At::Holder => p.clone(),
    };
    let _holder = match plant(env, att, attacker, &at, &case.plant, outside) {
        Ok(h) => h,
        Err(e) => return failures.push(format!("{label}: setup: {e}")),
    };
    let planted = node(&at);
    let outside_before = snapshot(outside);
    let dir_before = listing(dir);
    let mut v = env.driver(label, victim);
    let mut run = || -> Result<(), String> {
        let r = v.try_cmd(&format!("create {}", p.display()))?;
        check_rc(failures, label, "create", &r, case.create.for_victim(victim));
        check_prompt(failures, label, "create", &r, PROMPT_MS);
        if r.ok() {
            let u = v.try_cmd("unlock")?;
            check_rc(failures, label, "unlock after create", &u, &["0"]);
        }
        let r = v.try_cmd(&format!("blocking {} 300", p.display()))?;
        check_rc(failures, label, "blocking_create(300 ms)", &r, case.blocking.for_victim(victim));
        check_prompt(failures, label, "blocking_create(300 ms)", &r, PROMPT_MS);
        if r.errno == "ETIMEDOUT" && r.ms < 250.0 {
            failures.push(format!("{label}: blocking_create(300 ms) gave ETIMEDOUT after only {:.0} ms", r.ms));
        }
        if r.ok() {
            let u = v.try_cmd("unlock")?;
            check_rc(failures, label, "unlock after blocking_create", &u, &["0"]);
        }
        for op in ["read", "message"] {
            let r = v.try_cmd(&format!("{op} {}", p.display()))?;
            check_rc(failures, label, op, &r, case.read.for_victim(victim));
            check_prompt(failures, label, op, &r, PROMPT_MS);
        }
        let r = v.try_cmd(&format!("unlock_path {}", p.display()))?;
        check_rc(failures, label, "unlock_path", &r, case.unlock_path.for_victim(victim));
        check_prompt(failures, label, "unlock_path", &r, PROMPT_MS);
        v.quit()
    };
    if let Err(e) = run() {
        failures.push(format!("{label}: {e}"));
    }
    drop(v);
    for d in diff(&outside_before, &snapshot(outside)) {
        failures.push(format!("{label}: outside the sticky directory: {d}"));
    }
    if (case.plant.must_stay() || matches!(case.at, At::Copy)) && node(&at) != planted {
        failures.push(format!(
            "{label}: the planted {:?} at {} was touched: {} -> {}",
            case.plant,
            at.display(),
            show(&planted),
            show(&node(&at))
        ));
    }
    for l in litter(dir, &dir_before, victim, &["lockp"]) {
        failures.push(format!("{label}: left behind after exit: {l}"));
    }
}

#[test]
fn planted_entries_at_lock_file_names() {
    let _serial = serial();
    let env = Env::new("locknames");
    let attacker_user = User::add('a');
    let victim_user = User::add('v');
    let attacker = Who::of(&attacker_user);
    let mut att = env.driver("attacker", attacker);
    let mut failures = Vec::new();
    let cases = lock_cases();
    for v in variants(&env, attacker) {
        for victim in [Who::Root, Who::of(&victim_user)] {
            let outside = make_outside(&env, &v, &format!("outside-locks-{}-{}", v.name, victim.label()), victim, attacker);
            for (i, case) in cases.iter().enumerate() {
                let dir = case_dir(&v, i + cases.len() * (victim.uid() != 0) as usize);
                let label = format!("{}/{} victim/{}", v.name, victim.label(), case.name);
                run_lock_case(&env, &mut att, attacker, victim, &dir, &outside, case, &label, &mut failures);
            }
        }
    }
    drop(att);
    report(failures);
}

/// Values the getrandom shim hands out in turn: the names the library draws next are
/// then `.nfslock-<v>`, `.NAME.counter.<v>`, ... which the attacker plants first.
const PREDICTED: [&str; 6] =
    ["4141414141414141", "4242424242424242", "0123456789abcdef", "fedcba9876543210", "00000000deadbeef", "7777777777777777"];

/// The environment that preloads the shim into a driver run by `victim`; `count` is
/// made writable for it.
fn predict_env(env: &Env, victim: Who, values: &[&str], forever: bool, count: &Path) -> Vec<(&'static str, String)> {
    write_file(count, b"", 0o644, victim);
    vec![
        ("LD_PRELOAD", env.bin.join("libnfslock-predict.so").display().to_string()),
        ("NFSLOCK_PREDICT", values.join(",")),
        ("NFSLOCK_PREDICT_FOREVER", if forever { "1" } else { "0" }.to_string()),
        ("NFSLOCK_PREDICT_COUNT", count.display().to_string()),
    ]
}

fn predicted_plants() -> Vec<Plant> {
    vec![
        Plant::Symlink("secret"),
        Plant::Fifo,
        Plant::Dir(0o777),
        Plant::Hardlink("victim_ww"),
        Plant::Socket,
        Plant::File(0o644, b"not a claim\n".to_vec()),
    ]
}

#[test]
fn planted_entries_at_predicted_claim_names() {
    let _serial = serial();
    let env = Env::new("claimnames");
    let attacker_user = User::add('a');
    let victim_user = User::add('v');
    let attacker = Who::of(&attacker_user);
    let mut att = env.driver("attacker", attacker);
    let mut failures = Vec::new();
    let mut n = 0;
    for v in variants(&env, attacker) {
        for victim in [Who::Root, Who::of(&victim_user)] {
            let label = format!("{}/{} victim", v.name, victim.label());
            let outside = make_outside(&env, &v, &format!("outside-claims-{}-{}", v.name, victim.label()), victim, attacker);
            let count = env.path(&format!("predict-count-{n}"));
            n += 1;
            // (a) The first six names drawn are planted: the victim draws others, takes
            // the lock with a claim of its own, and leaves every plant alone.
            let dir = case_dir(&v, n * 2);
            let plants = predicted_plants();
            let mut planted = Vec::new();
            for (value, p) in PREDICTED.iter().zip(&plants) {
                let at = dir.join(format!(".nfslock-{value}"));
                if let Err(e) = plant(&env, &mut att, attacker, &at, p, &outside) {
                    failures.push(format!("{label}: setup: {e}"));
                }
                planted.push((at.clone(), p.clone(), node(&at)));
            }
            let outside_before = snapshot(&outside);
            let dir_before = listing(&dir);
            let mut d = Driver::start(&env, &label, victim, &predict_env(&env, victim, &PREDICTED, false, &count));
            let lockp = dir.join("lockp");
            let mut run = || -> Result<(), String> {
                let r = d.try_cmd(&format!("create {}", lockp.display()))?;
                check_rc(&mut failures, &label, "create with six predicted names planted", &r, &["0"]);
                if r.ok() {
                    let lock_ino = fs::symlink_metadata(dir.join("lockp.nfs_lock")).map(|m| m.ino()).unwrap_or(0);
                    let e = d.try_cmd(&format!("entries {}", dir.display()))?;
                    let claims: Vec<&str> = e
                        .field("entries")
                        .split(',')
                        .filter(|x| x.split(':').nth(3) == Some(&lock_ino.to_string()) && !x.starts_with("lockp.nfs_lock:"))
                        .collect();
                    let good = claims.len() == 1 && {
                        let f: Vec<&str> = claims[0].split(':').collect();
                        f[1] == "f" && f[2] == victim.uid().to_string() && !PREDICTED.iter().any(|v| f[0].ends_with(v))
                    };
                    if !good {
                        failures.push(format!("{label}: the lock's claim is not a fresh regular file of the victim's: {claims:?}"));
                    }
                    let u = d.try_cmd("unlock")?;
                    check_rc(&mut failures, &label, "unlock", &u, &["0"]);
                }
                let r = d.try_cmd(&format!("blocking {} 300", lockp.display()))?;
                check_rc(&mut failures, &label, "blocking_create", &r, &["0"]);
                if r.ok() {
                    d.try_cmd("unlock")?;
                }
                d.quit()
            };
            if let Err(e) = run() {
                failures.push(format!("{label}: {e}"));
            }
            drop(d);
            let served = fs::metadata(&count).map(|m| m.len()).unwrap_or(0);
            if served < PREDICTED.len() as u64 {
                failures.push(format!(
                    "{label}: the getrandom shim served {served} predicted names, expected at least {}: the library no \
                     longer draws its names through getrandom(3) with 8-byte requests; update tests/hostile/predict.c",
                    PREDICTED.len()
                ));
            }
            for (at, p, before) in &planted {
                if p.must_stay() && node(at) != *before {
                    failures.push(format!("{label}: the planted {p:?} at {} was touched", at.display()));
                }
            }
            for x in diff(&outside_before, &snapshot(&outside)) {
                failures.push(format!("{label}: outside: {x}"));
            }
            for l in litter(&dir, &dir_before, victim, &["lockp"]) {
                failures.push(format!("{label}: left behind after exit: {l}"));
            }
            // (b) Every name drawn is the planted one (a broken random source): a
            // documented error, never EEXIST, never a hang, nothing followed.
            let dir = case_dir(&v, n * 2 + 1);
            let at = dir.join(format!(".nfslock-{}", PREDICTED[0]));
            let _ = plant(&env, &mut att, attacker, &at, &Plant::Symlink("secret"), &outside);
            let before = node(&at);
            let outside_before = snapshot(&outside);
            let count = env.path(&format!("predict-count-{n}-forever"));
            let mut d = Driver::start(&env, &label, victim, &predict_env(&env, victim, &PREDICTED[..1], true, &count));
            let lockp = dir.join("lockp");
            let mut run = || -> Result<(), String> {
                let r = d.try_cmd(&format!("create {}", lockp.display()))?;
                check_rc(&mut failures, &label, "create when every drawn name is taken", &r, CREATE_DOC);
                check_prompt(&mut failures, &label, "create when every drawn name is taken", &r, PROMPT_MS);
                let r = d.try_cmd(&format!("blocking {} 300", lockp.display()))?;
                check_rc(&mut failures, &label, "blocking_create when every drawn name is taken", &r, BLOCKING_DOC);
                check_prompt(&mut failures, &label, "blocking_create when every drawn name is taken", &r, PROMPT_MS);
                d.quit()
            };
            if let Err(e) = run() {
                failures.push(format!("{label}: {e}"));
            }
            drop(d);
            if node(&at) != before {
                failures.push(format!("{label}: the planted symlink at {} was touched", at.display()));
            }
            for x in diff(&outside_before, &snapshot(&outside)) {
                failures.push(format!("{label}: outside: {x}"));
            }
        }
    }
    drop(att);
    report(failures);
}

struct SessionCase {
    name: &'static str,
    /// The repository name the plant takes, after `jobs.`.
    at: &'static str,
    plant: Plant,
    open: &'static [&'static str],
    make: &'static [&'static str],
}

fn session_cases() -> Vec<SessionCase> {
    let garbage = b"not a repository file\n".to_vec();
    let mut cases = vec![];
    let c = |name, at, plant| SessionCase { name, at, plant, open: OPEN_DOC, make: MAKE_DOC };
    cases.push(c("counter-symlink-victim-counter", "counter", Plant::Symlink("victim_counter")));
    cases.push(c("counter-symlink-dangling", "counter", Plant::Symlink("missing")));
    cases.push(c("counter-hardlink-bait-counter", "counter", Plant::Hardlink("bait_counter")));
    cases.push(c("counter-fifo", "counter", Plant::Fifo));
    cases.push(c("counter-socket", "counter", Plant::Socket));
    cases.push(c("counter-dir", "counter", Plant::Dir(0o777)));
    cases.push(c("counter-garbage", "counter", Plant::File(0o666, garbage.clone())));
    for at in ["ids", "sessions"] {
        let name = |s: &'static str| -> &'static str { Box::leak(format!("{at}-{s}").into_boxed_str()) };
        cases.push(c(name("symlink-victim-dir"), at, Plant::Symlink("victim_dir")));
        cases.push(c(name("symlink-bait-dir"), at, Plant::Symlink("bait_dir")));
        cases.push(c(name("symlink-dangling"), at, Plant::Symlink("missing")));
        cases.push(c(name("attacker-dir-0777"), at, Plant::Dir(0o777)));
        cases.push(c(name("fifo"), at, Plant::Fifo));
        cases.push(c(name("file"), at, Plant::File(0o644, garbage.clone())));
    }
    for at in ["guard", "guard.nfs_lock", "writer", "writer.nfs_lock"] {
        let name = |s: &'static str| -> &'static str { Box::leak(format!("{at}-{s}").into_boxed_str()) };
        cases.push(c(name("symlink-secret"), at, Plant::Symlink("secret")));
        cases.push(c(name("fifo"), at, Plant::Fifo));
        cases.push(c(name("dir"), at, Plant::Dir(0o777)));
        if at.ends_with(".nfs_lock") {
            cases.push(c(name("garbage"), at, Plant::File(0o644, garbage.clone())));
        }
    }
    // The attacker holds the guard of a repository that does not exist yet: opening it
    // waits for the guard (README: "ETIMEDOUT repository guard busy").
    cases.push(SessionCase {
        name: "guard-live-attacker-holder",
        at: "guard",
        plant: Plant::LiveHolder,
        open: &["ETIMEDOUT"],
        make: MAKE_DOC,
    });
    // The attacker holds the writer lock: make_new_ids lines up behind it (README "The
    // counter's token") and gives up after the session's timeout.
    cases.push(SessionCase {
        name: "writer-live-attacker-holder",
        at: "writer",
        plant: Plant::LiveHolder,
        open: &["0"],
        make: &["ETIMEDOUT"],
    });
    cases
}

/// Runs a victim session on `dir` (open, two make_new_ids(1), close) and checks the
/// results; returns the ids it got.
fn run_session_victim(d: &mut Driver, dir: &Path, case: &SessionCase, label: &str, failures: &mut Vec<String>) -> Result<(), String> {
    let r = d.try_cmd(&format!("open {} jobs 1000", dir.display()))?;
    check_rc(failures, label, "session_open", &r, case.open);
    check_prompt(failures, label, "session_open", &r, 1000.0 + PROMPT_MS);
    if r.ok() {
        for i in 0..2 {
            let r = d.try_cmd("make 1")?;
            check_rc(failures, label, &format!("make_new_ids #{i}"), &r, case.make);
            check_prompt(failures, label, "make_new_ids", &r, 1000.0 + PROMPT_MS);
        }
        let r = d.try_cmd("close")?;
        check_rc(failures, label, "session_close", &r, MAKE_DOC);
    }
    d.quit()
}

#[test]
fn planted_entries_at_session_repository_names() {
    let _serial = serial();
    let env = Env::new("sessionnames");
    let attacker_user = User::add('a');
    let victim_user = User::add('v');
    let attacker = Who::of(&attacker_user);
    let mut att = env.driver("attacker", attacker);
    let mut failures = Vec::new();
    let cases = session_cases();
    for v in variants(&env, attacker) {
        for victim in [Who::Root, Who::of(&victim_user)] {
            let outside = make_outside(&env, &v, &format!("outside-sessions-{}-{}", v.name, victim.label()), victim, attacker);
            for (i, case) in cases.iter().enumerate() {
                let dir = case_dir(&v, i + cases.len() * (victim.uid() != 0) as usize);
                let label = format!("{}/{} victim/{}", v.name, victim.label(), case.name);
                let at = dir.join(format!("jobs.{}", case.at));
                let _holder = match plant(&env, &mut att, attacker, &at, &case.plant, &outside) {
                    Ok(h) => h,
                    Err(e) => {
                        failures.push(format!("{label}: setup: {e}"));
                        continue;
                    }
                };
                let planted = node(&at);
                let outside_before = snapshot(&outside);
                let mut d = env.driver(&label, victim);
                if let Err(e) = run_session_victim(&mut d, &dir, case, &label, &mut failures) {
                    failures.push(format!("{label}: {e}"));
                }
                drop(d);
                for x in diff(&outside_before, &snapshot(&outside)) {
                    failures.push(format!("{label}: outside the sticky directory: {x}"));
                }
                if case.plant.must_stay() && node(&at) != planted {
                    failures.push(format!(
                        "{label}: the planted {:?} at {} was touched: {} -> {}",
                        case.plant,
                        at.display(),
                        show(&planted),
                        show(&node(&at))
                    ));
                }
            }
            // Predicted names of the repository's private files: the guard's claim
            // (`.nfslock-<v>`) and the counter's temporary file (`.jobs.counter.<v>`),
            // each planted at every name the shim will hand out: a collision is never
            // adopted nor reported, another name is drawn.
            for (k, pattern) in [".nfslock-{}", ".jobs.counter.{}"].iter().enumerate() {
                let dir = case_dir(&v, 1000 + k + 10 * (victim.uid() != 0) as usize);
                let label = format!("{}/{} victim/predicted {pattern}", v.name, victim.label());
                let mut planted = Vec::new();
                for (value, p) in PREDICTED.iter().zip(predicted_plants()) {
                    let at = dir.join(pattern.replace("{}", value));
                    if let Err(e) = plant(&env, &mut att, attacker, &at, &p, &outside) {
                        failures.push(format!("{label}: setup: {e}"));
                    }
                    planted.push((at.clone(), p.clone(), node(&at)));
                }
                let outside_before = snapshot(&outside);
                let count = env.path(&format!("predict-count-s-{}-{}-{k}", v.name, victim.label()));
                let mut d = Driver::start(&env, &label, victim, &predict_env(&env, victim, &PREDICTED, false, &count));
                let case = SessionCase { name: "predicted", at: "", plant: Plant::Fifo, open: &["0"], make: &["0"] };
                if let Err(e) = run_session_victim(&mut d, &dir, &case, &label, &mut failures) {
                    failures.push(format!("{label}: {e}"));
                }
                drop(d);
                if fs::metadata(&count).map(|m| m.len()).unwrap_or(0) == 0 {
                    failures.push(format!("{label}: the getrandom shim served no predicted name (see tests/hostile/predict.c)"));
                }
                for (at, p, before) in &planted {
                    if p.must_stay() && node(at) != *before {
                        failures.push(format!("{label}: the planted {p:?} at {} was touched", at.display()));
                    }
                }
                for x in diff(&outside_before, &snapshot(&outside)) {
                    failures.push(format!("{label}: outside: {x}"));
                }
            }
        }
    }
    drop(att);
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 2. ENOSPC, EROFS, EMFILE
// ---------------------------------------------------------------------------------------

/// Fills the filesystem of `filler` completely, then frees `pages` pages of it.
fn fill_leaving(filler: &Path, pages: u64) {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(filler).expect("filler");
    let chunk = vec![0x55u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", filler.display()),
        }
    }
    drop(f);
    let len = fs::metadata(filler).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(filler).unwrap();
    f.set_len(len.saturating_sub(pages * 4096) / 4096 * 4096).unwrap();
}

fn empty(filler: &Path) {
    let _ = fs::OpenOptions::new().write(true).open(filler).and_then(|f| f.set_len(0));
}

/// What a process of the library may not leave behind once it has exited: claims,
/// lock files, temporary files; and no file that is half a record or half a counter.
fn leftovers(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in snapshot(root) {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(".nfslock-") || name.ends_with(".nfs_lock") || name.starts_with(".jobs.counter.") {
            out.push(format!("{} is left behind", p.display()));
        }
        if name == "jobs.counter" && (n.content.len() != 124 || !n.content.starts_with(b"nfslock-counter 1\n")) {
            out.push(format!("{} is not a whole counter: {:?}", p.display(), String::from_utf8_lossy(&n.content)));
        }
        if name == "lk" && !(n.content.starts_with(b"((host ") && n.content.ends_with(b"))")) {
            out.push(format!("{} is not a whole record: {:?}", p.display(), String::from_utf8_lossy(&n.content)));
        }
        if p.parent().is_some_and(|d| d.ends_with("jobs.sessions")) {
            out.push(format!("session record {} is left behind", p.display()));
        }
    }
    out
}

/// The repository works and is consistent (a clean `check`), with space back.
fn repository_is_sound(env: &Env, repo: &Path, label: &str, failures: &mut Vec<String>) {
    let mut d = env.driver(&format!("{label}: afterwards"), Who::Root);
    let mut run = || -> Result<(), String> {
        let r = d.try_cmd(&format!("open {} jobs 2000", repo.display()))?;
        check_rc(failures, label, "session_open afterwards", &r, &["0"]);
        if r.ok() {
            check_rc(failures, label, "reap afterwards", &d.try_cmd("reap")?, &["0"]);
            check_rc(failures, label, "make_new_ids afterwards", &d.try_cmd("make 1")?, &["0"]);
            check_rc(failures, label, "check afterwards", &d.try_cmd("check")?, &["0"]);
            check_rc(failures, label, "close afterwards", &d.try_cmd("close")?, &["0"]);
        }
        d.quit()
    };
    if let Err(e) = run() {
        failures.push(format!("{label}: {e}"));
    }
}

fn ids_of(r: &Reply) -> Vec<u64> {
    r.field("ids").split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()
}

#[test]
fn enospc_on_a_small_tmpfs() {
    let _serial = serial();
    let env = Env::new("enospc");
    let mp = env.dir("small", 0o755, Who::Root);
    env.mount(&["-t", "tmpfs", "-o", "size=256k,mode=0755", "nfslock-hostile"], &mp);
    let filler = mp.join("filler");
    let mut failures = Vec::new();
    let lk = mp.join("lk");

    // create and blocking_create with 0..3 pages left.
    for pages in 0..=3u64 {
        let label = format!("locks with {pages} free page(s)");
        let _ = fs::remove_file(&lk);
        fill_leaving(&filler, pages);
        let allowed: &[&str] = if pages == 0 { &["ENOSPC"] } else { &["0", "ENOSPC"] };
        let mut d = env.driver(&label, Who::Root);
        let mut run = || -> Result<(), String> {
            let r = d.try_cmd(&format!("create {}", lk.display()))?;
            check_rc(&mut failures, &label, "create", &r, allowed);
            if r.ok() {
                check_rc(&mut failures, &label, "unlock", &d.try_cmd("unlock")?, &["0"]);
            }
            let r = d.try_cmd(&format!("blocking {} 10000", lk.display()))?;
            check_rc(&mut failures, &label, "blocking_create(10 s)", &r, allowed);
            check_prompt(&mut failures, &label, "blocking_create(10 s)", &r, PROMPT_MS);
            if r.ok() {
                check_rc(&mut failures, &label, "unlock", &d.try_cmd("unlock")?, &["0"]);
            }
            d.quit()
        };
        if let Err(e) = run() {
            failures.push(format!("{label}: {e}"));
        }
        drop(d);
        failures.extend(leftovers(&mp).into_iter().map(|l| format!("{label}: {l}")));
    }

    // unlock on a full filesystem.
    {
        let label = "unlock on a full filesystem";
        empty(&filler);
        let mut d = env.driver(label, Who::Root);
        d.must(&format!("create {}", lk.display()));
        fill_leaving(&filler, 0);
        let r = d.cmd("unlock");
        check_rc(&mut failures, label, "unlock", &r, &["0"]);
        if fs::symlink_metadata(mp.join("lk.nfs_lock")).is_ok() {
            failures.push(format!("{label}: lk.nfs_lock is still there after unlock returned {}", r.errno));
        }
        d.quit().unwrap();
        failures.extend(leftovers(&mp).into_iter().map(|l| format!("{label}: {l}")));
    }

    // session_open of a new repository with 0..5 pages left; then, with space back, the
    // repository must be sound.
    for pages in 0..=5u64 {
        let label = format!("new repository with {pages} free page(s)");
        let repo = mp.join(format!("repo{pages}"));
        fill_leaving(&filler, pages);
        let allowed: &[&str] = if pages == 0 { &["ENOSPC"] } else { &["0", "ENOSPC"] };
        let mut d = env.driver(&label, Who::Root);
        let mut run = || -> Result<(), String> {
            let r = d.try_cmd(&format!("open {} jobs 2000", repo.display()))?;
            check_rc(&mut failures, &label, "session_open", &r, allowed);
            check_prompt(&mut failures, &label, "session_open", &r, PROMPT_MS);
            if r.ok() {
                check_rc(&mut failures, &label, "make_new_ids", &d.try_cmd("make 1")?, &["0", "ENOSPC"]);
                check_rc(&mut failures, &label, "close", &d.try_cmd("close")?, &["0"]);
            }
            d.quit()
        };
        if let Err(e) = run() {
            failures.push(format!("{label}: {e}"));
        }
        drop(d);
        failures.extend(leftovers(&mp).into_iter().map(|l| format!("{label}: {l}")));
        empty(&filler);
        repository_is_sound(&env, &repo, &label, &mut failures);
    }

    // session_open of an existing repository, and make_new_ids, on a full filesystem.
    {
        let label = "existing repository on a full filesystem";
        let repo = mp.join("repo0");
        empty(&filler);
        let mut d = env.driver(label, Who::Root);
        d.must(&format!("open {} jobs 2000", repo.display()));
        let mut last = ids_of(&d.must("make 1"))[0];
        fill_leaving(&filler, 0);
        let mut d2 = env.driver(label, Who::Root);
        let r = d2.cmd(&format!("open {} jobs 2000", repo.display()));
        check_rc(&mut failures, label, "session_open", &r, &["ENOSPC"]);
        d2.quit().unwrap();
        for i in 0..3 {
            let r = d.cmd("make 1");
            check_rc(&mut failures, label, &format!("make_new_ids #{i} on a full filesystem"), &r, &["0", "ENOSPC"]);
            if r.ok() {
                let id = ids_of(&r)[0];
                if id <= last {
                    failures.push(format!("{label}: make_new_ids returned {id} after {last}"));
                }
                last = id;
            }
        }
        empty(&filler);
        let r = d.cmd("make 1");
        check_rc(&mut failures, label, "make_new_ids with space back", &r, &["0"]);
        if r.ok() && ids_of(&r)[0] <= last {
            failures.push(format!("{label}: make_new_ids returned {} after {last}", ids_of(&r)[0]));
        }
        check_rc(&mut failures, label, "check", &d.cmd("check"), &["0"]);
        check_rc(&mut failures, label, "close", &d.cmd("close"), &["0"]);
        d.quit().unwrap();
        failures.extend(leftovers(&mp).into_iter().map(|l| format!("{label}: {l}")));
        repository_is_sound(&env, &repo, label, &mut failures);
    }
    report(failures);
}

#[test]
fn erofs_on_a_read_only_bind_mount() {
    let _serial = serial();
    let env = Env::new("erofs");
    let mut failures = Vec::new();
    let base = env.dir("base", 0o755, Who::Root);
    let mut d = env.driver("setup", Who::Root);
    d.must(&format!("open {} jobs 2000", base.join("repo").display()));
    d.must("make 1");
    d.must("close");
    d.quit().unwrap();
    let ro = env.dir("ro", 0o755, Who::Root);
    env.mount(&["--bind", &base.display().to_string()], &ro);
    env.remount(&ro, "remount,bind,ro");
    let before = snapshot(&base);
    {
        let label = "read-only mount";
        let mut d = env.driver(label, Who::Root);
        let lk = ro.join("lk");
        let r = d.cmd(&format!("create {}", lk.display()));
        check_rc(&mut failures, label, "create", &r, &["EROFS"]);
        let r = d.cmd(&format!("blocking {} 10000", lk.display()));
        check_rc(&mut failures, label, "blocking_create(10 s)", &r, &["EROFS"]);
        check_prompt(&mut failures, label, "blocking_create(10 s)", &r, PROMPT_MS);
        let r = d.cmd(&format!("open {} jobs 2000", ro.join("repo").display()));
        check_rc(&mut failures, label, "session_open of an existing repository", &r, &["EROFS"]);
        let r = d.cmd(&format!("open {} jobs 2000", ro.join("newrepo").display()));
        check_rc(&mut failures, label, "session_open of a new repository", &r, &["EROFS"]);
        d.quit().unwrap();
    }
    for x in diff(&before, &snapshot(&base)) {
        failures.push(format!("read-only mount: {x}"));
    }

    // The filesystem turns read-only while a lock is held and a session is open. A mount
    // with files open for writing cannot be remounted read-only, so a read-only bind
    // mount of the same directory is stacked on the path: every path operation then
    // meets EROFS, as after an emergency remount; unmounting it makes the path
    // writable again.
    let base2 = env.dir("base2", 0o755, Who::Root);
    let flip = env.dir("flip", 0o755, Who::Root);
    let base2_s = base2.display().to_string();
    env.mount(&["--bind", &base2_s], &flip);
    let label = "turned read-only";
    let lk = flip.join("lk");
    let repo = flip.join("repo");
    let mut d = env.driver(label, Who::Root);
    d.must(&format!("create {}", lk.display()));
    d.must(&format!("open {} jobs 2000", repo.display()));
    let first = ids_of(&d.must("make 1"))[0];
    env.mount(&["--bind", &base2_s], &flip);
    env.remount(&flip, "remount,bind,ro");
    let r = d.cmd("unlock");
    check_rc(&mut failures, label, "unlock", &r, &["EROFS"]);
    let r = d.cmd("make 1");
    check_rc(&mut failures, label, "make_new_ids", &r, &["EROFS", "ESTALE"]);
    env.unmount(&flip);
    if r.errno == "EROFS" || fs::symlink_metadata(flip.join("lk.nfs_lock")).is_ok() {
        // Its own lock, which it could not remove: nfslock_unlock_path takes it back.
        let r = d.cmd(&format!("unlock_path {}", lk.display()));
        check_rc(&mut failures, label, "unlock_path of the lock unlock could not remove", &r, &["0"]);
    }
    if fs::symlink_metadata(flip.join("lk.nfs_lock")).is_ok() {
        failures.push(format!("{label}: lk.nfs_lock is still there"));
    }
    let r = d.cmd("make 1");
    check_rc(&mut failures, label, "make_new_ids read-write again", &r, &["0", "ESTALE"]);
    if r.ok() && ids_of(&r)[0] <= first {
        failures.push(format!("{label}: make_new_ids returned {} after {first}", ids_of(&r)[0]));
    }
    check_rc(&mut failures, label, "close", &d.cmd("close"), &["0", "ESTALE"]);
    d.quit().unwrap();
    repository_is_sound(&env, &repo, label, &mut failures);
    report(failures);
}

#[test]
fn emfile_under_a_low_rlimit_nofile() {
    let _serial = serial();
    let env = Env::new("emfile");
    let dir = env.dir("d", 0o755, Who::Root);
    let repo = dir.join("repo");
    let mut failures = Vec::new();
    let label = "EMFILE";
    let mut d = env.driver(label, Who::Root);
    d.must("rlimit 64");
    for leave in 0..=3 {
        let lk = dir.join(format!("lk{leave}"));
        d.must(&format!("exhaust {leave}"));
        let r = d.cmd(&format!("create {}", lk.display()));
        let allowed: &[&str] = if leave == 0 { &["EMFILE"] } else { &["0", "EMFILE"] };
        check_rc(&mut failures, label, &format!("create with {leave} descriptor(s) left"), &r, allowed);
        if r.ok() {
            check_rc(&mut failures, label, "unlock", &d.cmd("unlock"), &["0"]);
        } else if fs::symlink_metadata(dir.join(format!("lk{leave}.nfs_lock"))).is_ok() {
            failures.push(format!("{label}: a failed create left lk{leave}.nfs_lock"));
        }
        d.must("free");
    }
    d.must("exhaust 0");
    let r = d.cmd(&format!("blocking {} 10000", dir.join("lkb").display()));
    // The creates above left claims kept for paths no longer held; the library gives
    // them up for descriptors (README: EMFILE only when even that is not enough).
    check_rc(&mut failures, label, "blocking_create(10 s) with no descriptor left", &r, &["0", "EMFILE"]);
    if r.ok() {
        check_rc(&mut failures, label, "unlock", &d.cmd("unlock"), &["0"]);
    }
    check_prompt(&mut failures, label, "blocking_create(10 s)", &r, PROMPT_MS);
    d.must("free");

    // unlock with no descriptor left.
    let lu = dir.join("lu");
    d.must(&format!("create {}", lu.display()));
    d.must("exhaust 0");
    let r = d.cmd("unlock");
    check_rc(&mut failures, label, "unlock with no descriptor left", &r, &["0", "EMFILE"]);
    d.must("free");
    if !r.ok() {
        check_rc(
            &mut failures,
            label,
            "unlock_path of the lock unlock could not remove",
            &d.cmd(&format!("unlock_path {}", lu.display())),
            &["0"],
        );
    }
    if fs::symlink_metadata(dir.join("lu.nfs_lock")).is_ok() {
        failures.push(format!("{label}: lu.nfs_lock is still there"));
    }

    // Sessions.
    d.must("exhaust 0");
    let r = d.cmd(&format!("open {} jobs 2000", repo.display()));
    check_rc(&mut failures, label, "session_open with no descriptor left", &r, &["EMFILE"]);
    d.must("free");
    for leave in 1..=6 {
        d.must(&format!("exhaust {leave}"));
        let r = d.cmd(&format!("open {} jobs 2000", repo.display()));
        check_rc(&mut failures, label, &format!("session_open with {leave} descriptor(s) left"), &r, &["0", "EMFILE"]);
        d.must("free");
        if r.ok() {
            check_rc(&mut failures, label, "close", &d.cmd("close"), &["0"]);
        }
        let records = fs::read_dir(repo.join("jobs.sessions")).map(|d| d.count()).unwrap_or(0);
        if records != 0 {
            failures.push(format!("{label}: {records} session record(s) left after session_open with {leave} descriptor(s) left"));
        }
    }
    d.must(&format!("open {} jobs 2000", repo.display()));
    let mut last = ids_of(&d.must("make 1"))[0];
    d.must("exhaust 0");
    for i in 0..3 {
        let r = d.cmd("make 1");
        check_rc(&mut failures, label, &format!("make_new_ids #{i} with no descriptor left"), &r, &["0", "EMFILE"]);
        if r.ok() {
            let id = ids_of(&r)[0];
            if id <= last {
                failures.push(format!("{label}: make_new_ids returned {id} after {last}"));
            }
            last = id;
        }
    }
    d.must("free");
    let r = d.cmd("make 1");
    check_rc(&mut failures, label, "make_new_ids with descriptors back", &r, &["0"]);
    if r.ok() && ids_of(&r)[0] <= last {
        failures.push(format!("{label}: make_new_ids returned {} after {last}", ids_of(&r)[0]));
    }
    check_rc(&mut failures, label, "check", &d.cmd("check"), &["0"]);
    check_rc(&mut failures, label, "close", &d.cmd("close"), &["0"]);
    if let Err(e) = d.quit() {
        failures.push(e);
    }
    failures.extend(leftovers(&dir).into_iter().map(|l| format!("{label}: {l}")));
    repository_is_sound(&env, &repo, label, &mut failures);
    report(failures);
}

/// Issue 15 finding 9: after 100 lock/unlock cycles with nothing held, the library held
/// one descriptor per cached claim; under `ulimit -n 20` the 16th distinct path failed
/// with EMFILE, and so did the program's own open(). The library may keep a small
/// constant number of descriptors, never one per path it no longer holds.
#[test]
fn descriptors_stay_bounded_under_ulimit_20() {
    let _serial = serial();
    let env = Env::new("fdbound");
    let a = env.dir("a", 0o755, Who::Root);
    let b = env.dir("b", 0o755, Who::Root);
    let mut d = env.driver("ulimit -n 20", Who::Root);
    d.must("rlimit 20");
    let base = d.must("fds").num("n");
    let mut failures = Vec::new();
    let label = "ulimit -n 20";
    let r = d.cmd(&format!("paths {} 16 100", a.display()));
    check_rc(&mut failures, label, "100 create+unlock cycles over 16 paths", &r, &["0"]);
    // Counting needs a descriptor itself: -1 (EMFILE) is a finding too.
    let after16 = d.cmd("fds").num("n");
    check_rc(&mut failures, label, "the program's own open() afterwards", &d.cmd("openprobe"), &["0"]);
    let r = d.cmd(&format!("paths {} 24 100", b.display()));
    check_rc(&mut failures, label, "100 create+unlock cycles over 24 more paths", &r, &["0"]);
    let after40 = d.cmd("fds").num("n");
    check_rc(&mut failures, label, "the program's own open() afterwards", &d.cmd("openprobe"), &["0"]);
    if after16 < 0 || after40 < 0 {
        failures
            .push(format!("{label}: no descriptor left to count open descriptors with (after 16 paths: {after16}, after 40: {after40})"));
    }
    // README: at most 8 claims (one descriptor each) are kept for paths not held.
    const SMALL: i64 = 8;
    if after16 >= 0 && after40 >= 0 && (after16 - base > SMALL || after40 - base > SMALL) {
        failures.push(format!(
            "{label}: with nothing held the library keeps {} descriptors after 16 paths and {} after 40 \
             (allowed: at most {SMALL}, independent of the number of paths)",
            after16 - base,
            after40 - base
        ));
    }
    if let Err(e) = d.quit() {
        failures.push(e);
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 3. The lock directory removed or renamed during a wait
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Gone {
    Removed,
    Renamed,
}

#[derive(Clone, Copy, Debug)]
enum HeldBy {
    OtherProcess,
    OtherThread,
}

/// blocking_create waits on D/x held by someone; D is removed or renamed: the wait must
/// end within a few seconds with ENOENT ("the lock's directory does not exist"), not
/// at its timeout or never.
fn wait_while_the_directory_goes(gone: Gone, held_by: HeldBy, timeout_ms: i64, failures: &mut Vec<String>) {
    let label = format!("{gone:?} while waiting (held by {held_by:?}, timeout {timeout_ms} ms)");
    let env = Env::new(&format!("dirgone-{gone:?}-{held_by:?}-{timeout_ms}").to_lowercase());
    let dir = env.dir("d", 0o755, Who::Root);
    let x = dir.join("x");
    let mut w = env.driver("waiter", Who::Root);
    let mut holder = None;
    match held_by {
        HeldBy::OtherProcess => {
            let mut h = env.driver("holder", Who::Root);
            h.must(&format!("create {}", x.display()));
            holder = Some(h);
        }
        HeldBy::OtherThread => {
            w.must(&format!("thread_hold {}", x.display()));
        }
    }
    let lock_ino = fs::symlink_metadata(dir.join("x.nfs_lock")).map(|m| m.ino()).unwrap_or(0);
    w.send(&format!("blocking {} {timeout_ms}", x.display()));
    sleep(Duration::from_millis(300));
    if let Ok(line) = w.lines.try_recv() {
        failures.push(format!("{label}: blocking_create did not wait: {line}"));
        return;
    }
    let moved = env.path("d-moved");
    match gone {
        Gone::Removed => fs::remove_dir_all(&dir).expect("remove the lock directory"),
        Gone::Renamed => fs::rename(&dir, &moved).expect("rename the lock directory"),
    }
    let t = Instant::now();
    let mut waiter_alive = true;
    match w.recv(Duration::from_secs(20)) {
        Err(e) => {
            waiter_alive = false;
            failures.push(format!("{label}: {e}"));
        }
        Ok(r) => {
            check_rc(failures, &label, "blocking_create", &r, &["ENOENT"]);
            if t.elapsed() > Duration::from_secs(5) {
                failures.push(format!("{label}: blocking_create returned {:?} after the directory went", t.elapsed()));
            }
        }
    }
    if let Gone::Renamed = gone {
        let now = fs::symlink_metadata(moved.join("x.nfs_lock")).map(|m| m.ino()).unwrap_or(0);
        if now != lock_ino {
            failures.push(format!("{label}: the holder's lock file in the renamed directory was touched"));
        }
    }
    if let (HeldBy::OtherThread, true) = (held_by, waiter_alive) {
        if w.try_cmd("thread_release").is_err() {
            failures.push(format!("{label}: the holder thread's unlock hung"));
        }
    }
    drop(holder);
}

#[test]
fn lock_directory_removed_while_blocking_create_waits() {
    let _serial = serial();
    let mut failures = Vec::new();
    wait_while_the_directory_goes(Gone::Removed, HeldBy::OtherProcess, -1, &mut failures);
    wait_while_the_directory_goes(Gone::Removed, HeldBy::OtherProcess, 60_000, &mut failures);
    report(failures);
}

#[test]
fn lock_directory_renamed_while_blocking_create_waits() {
    let _serial = serial();
    let mut failures = Vec::new();
    wait_while_the_directory_goes(Gone::Renamed, HeldBy::OtherProcess, -1, &mut failures);
    wait_while_the_directory_goes(Gone::Renamed, HeldBy::OtherProcess, 60_000, &mut failures);
    report(failures);
}

#[test]
fn lock_directory_removed_while_waiting_for_another_thread() {
    let _serial = serial();
    let mut failures = Vec::new();
    wait_while_the_directory_goes(Gone::Removed, HeldBy::OtherThread, -1, &mut failures);
    wait_while_the_directory_goes(Gone::Renamed, HeldBy::OtherThread, 60_000, &mut failures);
    report(failures);
}

// ---------------------------------------------------------------------------------------
// 4. A signal storm
// ---------------------------------------------------------------------------------------

/// Enough signals that every blocking system call of the library met some.
const MIN_SIGNALS: i64 = 1000;

#[test]
fn signal_storm_during_blocking_create() {
    let _serial = serial();
    let env = Env::new("storm-locks");
    let dir = env.dir("d", 0o755, Who::Root);
    let x = dir.join("x");
    let mut failures = Vec::new();
    let label = "SIGALRM every 100 us";
    let mut holder = env.driver("holder", Who::Root);
    let mut w = env.driver("waiter", Who::Root);
    holder.must(&format!("create {}", x.display()));
    w.must("storm on");
    // A holder that lets go after about 300 ms: the waiter gets the lock, no EINTR.
    w.send(&format!("blocking {} 20000", x.display()));
    sleep(Duration::from_millis(300));
    holder.must("unlock");
    match w.recv(COMMAND_LIMIT) {
        Ok(r) => {
            check_rc(&mut failures, label, "blocking_create(20 s) against a holder releasing after 300 ms", &r, &["0"]);
            check_prompt(&mut failures, label, "blocking_create", &r, 300.0 + PROMPT_MS);
            if r.ok() {
                check_rc(&mut failures, label, "unlock", &w.cmd("unlock"), &["0"]);
            }
        }
        Err(e) => failures.push(e),
    }
    // A holder that stays: a 500 ms timeout is honoured.
    holder.must(&format!("create {}", x.display()));
    for _ in 0..3 {
        let r = w.cmd(&format!("blocking {} 500", x.display()));
        check_rc(&mut failures, label, "blocking_create(500 ms) against a holder that stays", &r, &["ETIMEDOUT"]);
        if r.ms < 490.0 || r.ms > PROMPT_MS {
            failures.push(format!("{label}: blocking_create(500 ms) returned after {:.0} ms", r.ms));
        }
    }
    holder.must("unlock");
    // Uncontended cycles, and a lock held by a live process (EAGAIN, never EINTR).
    let r = w.cmd(&format!("cycles {} 2000", dir.join("y").display()));
    check_rc(&mut failures, label, "2000 create+unlock cycles", &r, &["0"]);
    holder.must(&format!("create {}", x.display()));
    for _ in 0..50 {
        let r = w.cmd(&format!("create {}", x.display()));
        check_rc(&mut failures, label, "create of a held lock", &r, &["EAGAIN"]);
        check_rc(&mut failures, label, "get_hostname_and_pid", &w.cmd(&format!("read {}", x.display())), &["0"]);
    }
    let signals = w.must("storm off").num("signals");
    if signals < MIN_SIGNALS {
        failures.push(format!("{label}: only {signals} signals were delivered: the storm did not happen"));
    }
    if let Err(e) = w.quit() {
        failures.push(e);
    }
    report(failures);
}

#[test]
fn signal_storm_during_make_new_ids() {
    let _serial = serial();
    let env = Env::new("storm-sessions");
    let repo = env.dir("repo", 0o755, Who::Root);
    let mut failures = Vec::new();
    let label = "SIGALRM every 100 us";
    let mut ws: Vec<Driver> = (0..2).map(|i| env.driver(&format!("allocator {i}"), Who::Root)).collect();
    for (i, w) in ws.iter_mut().enumerate() {
        w.must("storm on");
        w.must(&format!("idlog {}", env.path(&format!("ids-{i}")).display()));
        let r = w.cmd(&format!("open {} jobs 2000", repo.display()));
        check_rc(&mut failures, label, "session_open", &r, &["0"]);
        if !r.ok() {
            report(failures);
            return;
        }
    }
    // Both at once, so that the token, the writer lock and the heartbeat all wait under
    // the storm; enough calls that the storm lasts well past MIN_SIGNALS of 100 us each.
    const CALLS: usize = 1000;
    for w in ws.iter_mut() {
        w.send(&format!("makeloop {CALLS}"));
    }
    let mut firsts = Vec::new();
    for w in ws.iter_mut() {
        match w.recv(Duration::from_secs(120)) {
            Ok(r) => {
                check_rc(&mut failures, label, "make_new_ids(1) in a loop", &r, &["0"]);
                if r.field("done") != CALLS.to_string() || r.field("increasing") != "1" {
                    failures.push(format!("{label}: makeloop: {}", r.line));
                }
                firsts.push(r.num("first"));
            }
            Err(e) => failures.push(e),
        }
    }
    let mut all = Vec::new();
    for i in 0..2 {
        all.extend(fs::read_to_string(env.path(&format!("ids-{i}"))).unwrap_or_default().lines().map(|l| l.parse::<u64>().unwrap()));
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    if all.len() != 2 * CALLS || unique.len() != 2 * CALLS {
        failures.push(format!("{label}: {} ids issued, {} distinct (expected {} of each)", all.len(), unique.len(), 2 * CALLS));
    }
    for (w, first) in ws.iter_mut().zip(firsts) {
        let r = w.cmd(&format!("release_ids {first}"));
        check_rc(&mut failures, label, "release_ids", &r, &["0"]);
        let r = w.cmd(&format!("lock_ids {first}"));
        check_rc(&mut failures, label, "lock_ids", &r, &["0"]);
        if r.field("locked") != first.to_string() {
            failures.push(format!("{label}: lock_ids {first}: {}", r.line));
        }
        check_rc(&mut failures, label, "reap", &w.cmd("reap"), &["0"]);
    }
    check_rc(&mut failures, label, "check", &ws[0].cmd("check"), &["0"]);
    for w in ws.iter_mut() {
        check_rc(&mut failures, label, "close", &w.cmd("close"), &["0"]);
        let signals = w.must("storm off").num("signals");
        if signals < MIN_SIGNALS {
            failures.push(format!("{label}: only {signals} signals were delivered: the storm did not happen"));
        }
        if let Err(e) = w.quit() {
            failures.push(e);
        }
    }
    report(failures);
}
