//! Helpers for the end-to-end tests: the built binary, a lock held by another nfslock
//! process, bounded waits. Every process a test starts is killed when its handle drops
//! (also on a failed assertion); every file lives in a tempdir removed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nfslock");
/// Long enough for any step of a test on a loaded machine; short enough to bound it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn nfslock() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(BIN);
    c.timeout(LIMIT);
    c
}

pub fn lock_file(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".nfs_lock");
    s.into()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

/// Polls `f` until true, failing the test after LIMIT.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the exit, failing after LIMIT.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < LIMIT, "process {} did not exit", self.pid());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nfslock ARGS...` with its output discarded.
/// nfslock started with the signals it forwards at their default actions: a test run
/// from a background job of a non-interactive shell inherits SIGINT and SIGQUIT ignored
/// (or SIGHUP, under nohup), and COMMAND, inheriting that too as it should, would not
/// die of what these tests send.
pub fn start(args: &[&str]) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(BIN);
    c.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: between fork and exec only sigaction(2), which is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            use nix::sys::signal::{signal, SigHandler, Signal};
            for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGHUP, Signal::SIGTERM, Signal::SIGUSR1, Signal::SIGUSR2] {
                signal(sig, SigHandler::SigDfl).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    Proc(c.spawn().unwrap())
}

/// Another nfslock holding the lock on `path` (message `message`) while `sleep 60`
/// runs; returns once the lock file is there.
pub fn hold(path: &Path, message: &str) -> Proc {
    hold_with(path, &["-m", message])
}

pub fn hold_with(path: &Path, opts: &[&str]) -> Proc {
    let mut args: Vec<&str> = opts.to_vec();
    let p = path.to_str().unwrap();
    args.extend([p, "--", "sleep", "60"]);
    let holder = start(&args);
    wait_until("the holder has the lock", || lock_file(path).exists());
    holder
}
