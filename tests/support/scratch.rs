//! Cleaning up after tests that run sessions: their directories, their children, and
//! the combining tables sessions leave in /dev/shm (one per ids directory; see the
//! README's "Combining"). The last session to close removes its table, so a test that
//! kills sessions, or fails before closing them, removes the tables of its repositories
//! together with its directory.

#![allow(dead_code)] // each test binary uses its own part

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Child;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A test's directory and the children working in it. Dropped (also when the test
/// fails), it kills and waits for the children, then removes the tables of the
/// directory's repositories and the directory.
pub struct Cleanup(pub PathBuf, pub Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.1 {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        remove_tables_of(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Removes the tables of every ids directory (`<name>.ids`) under `root`; call it after
/// the sessions there are closed or their processes killed, before removing `root`.
pub fn remove_tables_of(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.map_while(Result::ok) {
        // Not followed through symlinks: only what the test made is looked at.
        let Ok(st) = fs::symlink_metadata(entry.path()) else { continue };
        if !st.is_dir() {
            continue;
        }
        if entry.file_name().to_string_lossy().ends_with(".ids") {
            remove_tables_named(&format!("-{:x}-{:x}", st.dev(), st.ino()));
        } else {
            remove_tables_of(&entry.path());
        }
    }
}

/// Table names end in their ids directory's device and inode, in hex.
fn remove_tables_named(suffix: &str) {
    let Ok(shm) = fs::read_dir("/dev/shm") else { return };
    for table in shm.map_while(Result::ok) {
        let name = table.file_name().to_string_lossy().into_owned();
        if name.starts_with("nfslock-ids-") && name.ends_with(suffix) {
            let _ = fs::remove_file(table.path());
        }
    }
}
