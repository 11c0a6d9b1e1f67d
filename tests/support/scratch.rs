//! The integration tests' one temporary-directory helper, built on `tempfile`: a fresh
//! directory under an unpredictable name, removed when dropped (also when the test
//! fails); and cleaning up after tests whose children work in such a directory.

#![allow(dead_code)] // each test binary uses its own part

use std::fs;
use std::path::Path;
use std::process::Child;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
pub use tempfile::TempDir;

/// A fresh directory `nfslock-<tag>-<random>` in the system's temporary directory
/// (mode 0700), removed with everything in it when dropped.
pub fn dir(tag: &str) -> TempDir {
    dir_in(&std::env::temp_dir(), &format!("nfslock-{tag}"))
}

/// A fresh directory `<tag>-<random>` under `parent` (a test's own directory, made first
/// if missing), removed with everything in it when dropped.
pub fn dir_in(parent: &Path, tag: &str) -> TempDir {
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("a temporary directory in {}: {e}", parent.display()))
}

/// The directory's path as a string, for a child's command line.
pub fn path_str(dir: &TempDir) -> &str {
    dir.path().to_str().expect("a UTF-8 temporary path")
}

/// A test's directory and the children working in it. Dropped (also when the test
/// fails), it kills and waits for the children, then removes the directory.
pub struct Cleanup(pub TempDir, pub Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.1 {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        // The directory goes with the TempDir, dropped after this.
    }
}
