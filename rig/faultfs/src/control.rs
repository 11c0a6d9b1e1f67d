//! The control file: `key=value` lines that change the fault settings of a
//! live mount.
//!
//! Each time the file changes, its lines are applied on top of the settings
//! given on the command line, so the file always says the whole difference
//! from the start-up state (deleting a line reverts that setting). A missing
//! or unreadable file keeps the current settings.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::faults::Faults;
use crate::options::Settings;
use crate::stats::Stats;

/// The file is checked at most this often.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What identifies one version of the file. Besides the mtime, the inode
/// (a file replaced by rename), size and ctime catch rewrites that land in
/// the same mtime tick on coarse-grained file systems.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

pub struct ControlFile {
    path: PathBuf,
    base: Settings,
    last: Option<Stamp>,
}

impl ControlFile {
    pub fn new(path: PathBuf, base: Settings) -> ControlFile {
        ControlFile { path, base, last: None }
    }

    /// Re-reads the file if it changed since the last look. Returns the new
    /// settings when it was (re)applied.
    pub fn check(&mut self, stats: &Stats) -> Option<Settings> {
        let meta = fs::metadata(&self.path).ok()?;
        let stamp = Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        };
        if self.last == Some(stamp) {
            return None;
        }
        let text = fs::read_to_string(&self.path).ok()?;
        self.last = Some(stamp);
        let mut settings = self.base;
        let errors = settings.apply_control_text(&text);
        for e in &errors {
            eprintln!("nfslock-faultfs: {}: {e}", self.path.display());
            stats.bump("control_errors");
        }
        stats.bump("control_reloads");
        Some(settings)
    }
}

/// Watches the control file until `stop` is set.
pub fn spawn_watcher(
    mut control: ControlFile,
    faults: Arc<Faults>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(settings) = control.check(&stats) {
                    faults.set(settings);
                }
                thread::sleep(POLL_INTERVAL);
            }
        })
        .expect("spawn control-file watcher")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_changes_on_top_of_the_base_and_ignores_a_missing_file() {
        let dir = std::env::temp_dir().join(format!("faultfs-control-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control");
        let base = Settings { attr_cache_ms: 7, ..Settings::default() };
        let stats = Stats::new();
        let mut control = ControlFile::new(path.clone(), base);

        assert!(control.check(&stats).is_none(), "missing file keeps settings");
        fs::write(&path, "lose-replies=1\n").unwrap();
        let s = control.check(&stats).unwrap();
        assert_eq!((s.lose_replies, s.attr_cache_ms), (1.0, 7));
        assert!(control.check(&stats).is_none(), "unchanged file is not re-applied");

        fs::write(dir.join("next"), "transient=0.5\n").unwrap();
        fs::rename(dir.join("next"), &path).unwrap();
        let s = control.check(&stats).unwrap();
        assert_eq!((s.lose_replies, s.transient), (0.0, 0.5), "lines apply to the base, not the last state");
        fs::remove_dir_all(&dir).unwrap();
    }
}
