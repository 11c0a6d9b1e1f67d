//! Telling a person who holds a lock: the holder's host, pid and message (escaped: a
//! record comes from another process and must not drive the terminal), and for how
//! long, from the lock file's modification time (when its holder wrote its record).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nfslock::lease::{Info, State};
use nfslock::{Record, StartTime};

/// `P.nfs_lock` for `P` (or `P.nfs_lock` itself, as the library's readers accept).
pub fn lock_file(path: &Path) -> PathBuf {
    let suffix = nfslock::lockfile::LOCK_SUFFIX;
    if path.as_os_str().as_encoded_bytes().ends_with(suffix.as_bytes()) {
        return path.to_path_buf();
    }
    let mut p = OsString::from(path.as_os_str());
    p.push(suffix);
    p.into()
}

/// When the lock file was written (its holder's record), never following a symlink.
pub fn written_at(path: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(lock_file(path)).ok()?.modified().ok()
}

/// How long ago `t` was on this machine's clock (zero if it is in the future: the
/// file server's clock may be ahead).
pub fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// Text from a record's bytes, with control characters and invalid UTF-8 escaped.
pub fn text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// "12 s", "3 min 4 s", "2 h 5 min", "3 d 4 h".
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// "2026-12-04 18:03:12Z": UTC, to the second.
pub fn utc(t: SystemTime) -> String {
    let micros = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    start_time(StartTime(micros - micros.rem_euclid(1_000_000)))
}

/// A record's start time as the library shows it, without the fraction of a second.
pub fn start_time(t: StartTime) -> String {
    let s = format!("{t:?}");
    match s.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => s,
    }
}

/// "host-a pid 4242 (make -j4)".
pub fn holder(r: &Record) -> String {
    format!("{} pid {} ({})", text(&r.host), r.pid, text(&r.message))
}

/// The state's name in status output and JSON.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Free => "free",
        State::Held => "held",
        State::HeldByCaller => "held-by-caller",
        State::DeadHolder => "dead-holder",
        State::Expired => "expired",
        State::Unreadable => "unreadable",
    }
}

/// One line on who holds the lock, for the waiting line: "held by HOST pid N (MESSAGE)
/// for 12 s".
pub fn waiting_for(info: &Info, since: Option<SystemTime>) -> String {
    let Some(r) = &info.record else {
        return match info.state {
            State::Free => "free, taking it".into(),
            State::Unreadable => "the lock file is not a lock record".into(),
            _ => "its holder has not written its record yet".into(),
        };
    };
    let mut s = format!("held by {}", holder(r));
    if let Some(t) = since {
        s.push_str(&format!(" for {}", duration(age(t))));
    }
    if info.shared_holders > 0 {
        s.push_str(&format!(", shared by {}", info.shared_holders));
    }
    match info.state {
        State::DeadHolder => s.push_str(", a dead process: clearing it"),
        State::Expired => s.push_str(", its lease expired"),
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_drive_a_terminal() {
        assert_eq!(text(b"make -j4"), "make -j4");
        assert_eq!(text(b"a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(text(b"caf\xc3\xa9 \xff"), "caf\u{e9} \\xff");
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(duration(Duration::from_secs(12)), "12 s");
        assert_eq!(duration(Duration::from_secs(184)), "3 min 4 s");
        assert_eq!(duration(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(duration(Duration::from_secs(3 * 86400 + 4 * 3600)), "3 d 4 h");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_871_392_750);
        assert_eq!(utc(t), "2025-12-04 18:03:12Z");
        assert_eq!(age(SystemTime::now() + Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn lock_file_names() {
        assert_eq!(lock_file(Path::new("/s/x")), Path::new("/s/x.nfs_lock"));
        assert_eq!(lock_file(Path::new("/s/x.nfs_lock")), Path::new("/s/x.nfs_lock"));
    }
}
