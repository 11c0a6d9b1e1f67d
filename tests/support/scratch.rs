//! Cleaning up after tests that run sessions: their directories and their children.

#![allow(dead_code)] // each test binary uses its own part

use std::fs;
use std::path::PathBuf;
use std::process::Child;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A test's directory and the children working in it. Dropped (also when the test
/// fails), it kills and waits for the children, then removes the directory.
pub struct Cleanup(pub PathBuf, pub Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.1 {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}
