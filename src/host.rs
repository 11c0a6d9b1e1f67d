//! Host identity: this machine's name, a process's start time, and whether the process
//! a record names is still the one that wrote it.
//!
//! Start times are Core's: boot time (`btime` in /proc/stat) plus the process's start
//! ticks (field 22 of /proc/PID/stat) over CLK_TCK. They tell a live owner from a dead one
//! whose pid was reused, and survive reboots, without comparing clocks between machines.

use std::fs;
use std::io::Read;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::record::{Record, StartTime};

/// Who this process is, as its lock records say.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// This machine's host name (gethostname), as records carry it.
    pub host: Vec<u8>,
    /// The process id.
    pub pid: i32,
    /// When the process started (None when /proc could not tell).
    pub start_time: Option<StartTime>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("host", &String::from_utf8_lossy(&self.host))
            .field("pid", &self.pid)
            .field("start_time", &self.start_time)
            .finish()
    }
}

impl Identity {
    /// Reads the identity of the calling process (a few syscalls; callers cache it).
    pub fn of_this_process() -> Identity {
        let pid = std::process::id() as i32;
        Identity { host: hostname(), pid, start_time: process_start_time(pid) }
    }

    /// The record this process writes when it takes a lock.
    pub fn record(&self, message: &[u8]) -> Record {
        Record { host: self.host.clone(), pid: self.pid, message: message.to_vec(), start_time: self.start_time, lease: None }
    }

    /// True when `r` was written by this very process (same host, pid and start time).
    pub fn wrote(&self, r: &Record) -> bool {
        r.host == self.host && r.pid == self.pid && starts_match(r.start_time, self.start_time)
    }
}

fn starts_match(a: Option<StartTime>, b: Option<StartTime>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same_process(b),
        // Without both times, fall back to pid alone, as Core does.
        _ => true,
    }
}

/// What a record's owner is, seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The process is running (or runs under another user: EPERM from kill is alive).
    Alive,
    /// On this host and gone: no such pid, a zombie, or a pid reused by a newer process.
    Dead,
    /// Written on another host: its liveness cannot be judged from here.
    OtherHost,
}

/// Judges the owner of `r` from `host`'s point of view.
pub fn owner_of(r: &Record, host: &[u8]) -> Owner {
    if r.host != host {
        return Owner::OtherHost;
    }
    if process_is_gone(r.pid, r.start_time) {
        Owner::Dead
    } else {
        Owner::Alive
    }
}

/// Whether process `pid` of this host (and pid namespace), started at `start_time` if
/// known, is gone: no such pid, a zombie, or the pid reused by a newer process.
pub fn process_is_gone(pid: i32, start_time: Option<StartTime>) -> bool {
    if pid <= 0 {
        return true;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return true,
    }
    match read_proc_stat(pid) {
        // The pid vanished between kill and the read.
        None => true,
        Some(stat) => stat.zombie || !starts_match(start_time, stat.start_time),
    }
}

/// The machine's host name as gethostname(2) reports it (the UTS namespace's name).
pub fn hostname() -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    nix::unistd::gethostname().map(|h| h.into_vec()).unwrap_or_else(|_| b"localhost".to_vec())
}

/// When process `pid` started, or None when /proc does not say.
pub fn process_start_time(pid: i32) -> Option<StartTime> {
    read_proc_stat(pid)?.start_time
}

struct ProcStat {
    zombie: bool,
    start_time: Option<StartTime>,
}

fn read_proc_stat(pid: i32) -> Option<ProcStat> {
    let mut buf = Vec::with_capacity(512);
    fs::File::open(format!("/proc/{pid}/stat")).ok()?.read_to_end(&mut buf).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let after = &buf[buf.iter().rposition(|&b| b == b')')? + 1..];
    let fields: Vec<&[u8]> = after.split(|&b| b == b' ').filter(|f| !f.is_empty()).collect();
    let zombie = fields.first()? == b"Z";
    // Field 22 overall is the 20th after the name (state is field 3).
    let ticks: i64 = std::str::from_utf8(fields.get(19)?).ok()?.parse().ok()?;
    let start_time = boot_time_secs().and_then(|boot| {
        let hz = clock_ticks_per_sec()?;
        Some(StartTime(boot * 1_000_000 + ticks * 1_000_000 / hz))
    });
    Some(ProcStat { zombie, start_time })
}

fn boot_time_secs() -> Option<i64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

fn clock_ticks_per_sec() -> Option<i64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some(hz as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_its_own_writer() {
        let me = Identity::of_this_process();
        assert!(me.start_time.is_some(), "/proc gives a start time");
        let r = me.record(b"m");
        assert!(me.wrote(&r));
        assert_eq!(owner_of(&r, &me.host), Owner::Alive);
    }

    #[test]
    fn reused_pid_other_host_and_gone_pid() {
        let me = Identity::of_this_process();
        let mut r = me.record(b"");
        r.start_time = r.start_time.map(|t| StartTime(t.0 - 3_600_000_000));
        assert_eq!(owner_of(&r, &me.host), Owner::Dead, "same pid, older start: reused pid");
        assert!(!me.wrote(&r));
        let mut other = me.record(b"");
        other.host = b"elsewhere.invalid".to_vec();
        assert_eq!(owner_of(&other, &me.host), Owner::OtherHost);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let gone = Record { pid, start_time: None, ..me.record(b"") };
        assert_eq!(owner_of(&gone, &me.host), Owner::Dead);
    }
}
