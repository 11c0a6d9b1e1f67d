//! nfslock-faultfs: a pass-through FUSE filesystem that injects the faults
//! which break naive lock files on NFS (lost replies, transient errors,
//! attribute caching, clock skew), one mount per simulated host.
//!
//! Threads: the FUSE session loop (main thread, one request at a time, so
//! `--seed` gives repeatable choices), the control-file watcher, the stats
//! writer, and a signal thread that unmounts on SIGTERM/SIGINT/SIGHUP.

mod control;
mod faults;
mod fs;
mod inodes;
mod options;
mod stats;

use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;

use crate::control::ControlFile;
use crate::faults::Faults;
use crate::options::{Config, USAGE};
use crate::stats::{write_atomically, Stats};

/// How often the stats file is rewritten while running.
const STATS_INTERVAL: Duration = Duration::from_millis(100);
/// How long the signal thread waits for the session to end after
/// unmounting before it exits anyway (a lazily detached mount with open
/// files keeps the session alive).
const EXIT_GRACE: Duration = Duration::from_secs(2);

fn main() {
    let config = match options::parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(msg) if msg.is_empty() => {
            print!("{USAGE}");
            exit(0);
        }
        Err(msg) => {
            eprintln!("nfslock-faultfs: {msg}\n\n{USAGE}");
            exit(2);
        }
    };
    if let Err(msg) = run(config) {
        eprintln!("nfslock-faultfs: {msg}");
        exit(1);
    }
}

/// Writes the stats file: a header with the live settings, then counters.
struct Reporter {
    path: Option<PathBuf>,
    stats: Arc<Stats>,
    faults: Arc<Faults>,
    seed: u64,
    started: Instant,
}

impl Reporter {
    fn write(&self) {
        let Some(path) = &self.path else { return };
        let s = self.faults.settings();
        let header = [
            ("pid", std::process::id().to_string()),
            ("seed", self.seed.to_string()),
            ("uptime_ms", self.started.elapsed().as_millis().to_string()),
            ("cfg_lose_replies", s.lose_replies.to_string()),
            ("cfg_lose_ops", s.lose_ops.to_string()),
            ("cfg_transient", s.transient.to_string()),
            ("cfg_transient_ops", s.transient_ops.to_string()),
            ("cfg_attr_cache_ms", s.attr_cache_ms.to_string()),
            ("cfg_clock_offset_ms", s.clock_offset_ms.to_string()),
            ("cfg_rename_delay_ms", s.rename_delay_ms.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        if let Err(e) = write_atomically(path, &self.stats.render(&header)) {
            eprintln!("nfslock-faultfs: writing {}: {e}", path.display());
        }
    }
}

fn default_seed() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
}

fn existing_dir(path: &Path, what: &str) -> Result<PathBuf, String> {
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if !canonical.is_dir() {
        return Err(format!("{what} {} is not a directory", path.display()));
    }
    Ok(canonical)
}

fn run(config: Config) -> Result<(), String> {
    // Block the termination signals before any thread exists, so every
    // thread inherits the mask and only the signal thread receives them.
    let mut signals = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(sig);
    }
    signals.thread_block().map_err(|e| format!("blocking signals: {e}"))?;
    // Modes of created files are computed from the caller's mode and umask;
    // our own umask must not mask them again.
    nix::sys::stat::umask(Mode::empty());

    let backing = existing_dir(&config.backing, "backing directory")?;
    let mountpoint = existing_dir(&config.mountpoint, "mount point")?;
    if let Some(ready) = &config.ready_file {
        // A ready file left by an earlier run must not announce this one.
        let _ = std::fs::remove_file(ready);
    }

    let seed = config.seed.unwrap_or_else(default_seed);
    let stats = Arc::new(Stats::new());
    let mut settings = config.settings;
    let mut control = config
        .control
        .clone()
        .map(|path| ControlFile::new(path, config.settings));
    if let Some(initial) = control.as_mut().and_then(|c| c.check(&stats)) {
        settings = initial;
    }
    let faults = Arc::new(Faults::new(settings, seed, config.verbose));
    let reporter = Arc::new(Reporter {
        path: config.stats.clone(),
        stats: stats.clone(),
        faults: faults.clone(),
        seed,
        started: Instant::now(),
    });

    let filesystem = fs::FaultFs::new(backing, faults.clone(), stats.clone());
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = vec![
        MountOption::FSName(config.fsname.clone()),
        MountOption::Subtype("nfslock-faultfs".into()),
        // The kernel checks modes against our (backing) attributes, so
        // callers dropped to another uid get EACCES as on a real mount.
        MountOption::DefaultPermissions,
    ];
    // allow_other: processes of other uids and namespaces use the mount.
    fuse_config.acl = SessionACL::All;
    fuse_config.n_threads = Some(1);
    let mut session = Session::new(filesystem, &mountpoint, &fuse_config)
        .map_err(|e| format!("mounting on {}: {e}", mountpoint.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    if let Some(control) = control {
        control::spawn_watcher(control, faults.clone(), stats.clone(), stop.clone());
    }
    {
        let reporter = reporter.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("stats".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    reporter.write();
                    thread::sleep(STATS_INTERVAL);
                }
            })
            .map_err(|e| e.to_string())?;
    }
    {
        let mut unmounter = session.unmount_callable();
        let reporter = reporter.clone();
        let mountpoint = mountpoint.clone();
        let ready = config.ready_file.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let Ok(sig) = signals.wait() else { return };
                eprintln!("nfslock-faultfs: {sig}: unmounting {}", mountpoint.display());
                if let Err(e) = unmounter.unmount() {
                    // Busy (a process has its cwd or a file open in it):
                    // detach it so the rig's mount point is free at once.
                    eprintln!("nfslock-faultfs: unmount: {e}; detaching lazily");
                    let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
                }
                let deadline = Instant::now() + EXIT_GRACE;
                while Instant::now() < deadline {
                    if stop.load(Ordering::Relaxed) {
                        return; // the main thread finishes the exit
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                reporter.write();
                if let Some(ready) = ready {
                    let _ = std::fs::remove_file(ready);
                }
                exit(0);
            })
            .map_err(|e| e.to_string())?;
    }

    if let Some(ready) = &config.ready_file {
        let text = format!("pid={}\nmountpoint={}\n", std::process::id(), mountpoint.display());
        write_atomically(ready, &text).map_err(|e| format!("writing {}: {e}", ready.display()))?;
    }

    let result = session.run();
    stop.store(true, Ordering::Relaxed);
    reporter.write();
    if let Some(ready) = &config.ready_file {
        let _ = std::fs::remove_file(ready);
    }
    result.map_err(|e| format!("session: {e}"))
}
