//! A session's record file, `NAME.sessions/<session id>`: who the session is, and its
//! heartbeat.
//!
//! ```text
//! nfslock-session 1 beat 00000000000000000042
//! owner ((host build-7)(pid 4242)(message"")(start_time(2026-11-23 04:10:00.120000Z)))
//! since 2026-11-23 04:10:02.500000Z
//! timeout_ms 45000
//! ```
//!
//! The owner is a lock record in Core's format (host, pid, process start time), so the
//! same rules judge a session's process alive or dead on its own host. The beat is a
//! counter rewritten in place (fixed width, at a fixed offset) by the session's
//! heartbeat; other sessions only ever compare it with what they read before, on their
//! own monotonic clock, so no two hosts' clocks are compared. `since` (the wall clock
//! of the opening host) is only shown to people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::record::{format_utc, Record, StartTime};

const FIRST: &[u8] = b"nfslock-session 1 beat ";
/// Where the beat's 20 digits start.
pub const BEAT_OFFSET: usize = FIRST.len();
/// Session records larger than this are not records.
pub const MAX_LEN: usize = 4096;

/// What a session record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub beat: u64,
    pub owner: Record,
    /// When the session was opened, in microseconds since the epoch (the opener's clock).
    pub since: StartTime,
    pub timeout: Duration,
}

/// The beat field's bytes.
pub fn beat_bytes(beat: u64) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(format!("{beat:020}").as_bytes());
    out
}

/// The wall clock now, as the record stores it.
pub fn now() -> StartTime {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    StartTime(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DD HH:MM:SS.ffffffZ`.
pub fn show_time(t: StartTime) -> String {
    let (date, time) = format_utc(t);
    format!("{date} {time}")
}

impl SessionRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = FIRST.to_vec();
        out.extend_from_slice(&beat_bytes(self.beat));
        out.extend_from_slice(b"\nowner ");
        out.extend_from_slice(&self.owner.to_bytes());
        out.extend_from_slice(format!("\nsince {}\ntimeout_ms {}\n", show_time(self.since), self.timeout.as_millis()).as_bytes());
        out
    }

    /// Parses a record strictly: every line present, in order, nothing else.
    pub fn parse(bytes: &[u8]) -> Result<SessionRecord, String> {
        if bytes.len() > MAX_LEN {
            return Err(format!("it is larger than {MAX_LEN} bytes"));
        }
        let rest = bytes.strip_prefix(FIRST).ok_or("it does not start with `nfslock-session 1 beat `")?;
        let (beat, rest) = split_line(rest).ok_or("the beat line is not terminated")?;
        let beat = digits(beat, 20).ok_or("the beat is not 20 digits")?;
        let (owner, rest) = split_line(rest).ok_or("the owner line is missing")?;
        let owner = owner.strip_prefix(b"owner ").ok_or("the second line is not `owner ...`")?;
        let owner = Record::parse(owner).map_err(|e| format!("the owner is not a record: {}", e.0))?;
        let (since, rest) = split_line(rest).ok_or("the since line is missing")?;
        let since = since.strip_prefix(b"since ").ok_or("the third line is not `since ...`")?;
        let since = parse_time(since).ok_or("the since time is not YYYY-MM-DD HH:MM:SS.ffffffZ")?;
        let (timeout, rest) = split_line(rest).ok_or("the timeout line is missing")?;
        let timeout = timeout.strip_prefix(b"timeout_ms ").ok_or("the fourth line is not `timeout_ms N`")?;
        let timeout = std::str::from_utf8(timeout).ok().and_then(|t| t.parse::<u64>().ok()).ok_or("timeout_ms is not a number")?;
        if !rest.is_empty() {
            return Err("there is text after the timeout line".into());
        }
        Ok(SessionRecord { beat, owner, since, timeout: Duration::from_millis(timeout) })
    }
}

fn split_line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == b'\n')?;
    Some((&b[..end], &b[end + 1..]))
}

fn digits(b: &[u8], len: usize) -> Option<u64> {
    if b.len() != len || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses `show_time`'s format by reading it as a record's start_time.
fn parse_time(b: &[u8]) -> Option<StartTime> {
    let text = std::str::from_utf8(b).ok()?;
    let (date, time) = text.split_once(' ')?;
    let probe = format!("((host h)(pid 1)(message\"\")(start_time({date} {time})))");
    Record::parse(probe.as_bytes()).ok()?.start_time
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionRecord {
        SessionRecord {
            beat: 42,
            owner: Record {
                host: b"build 7".to_vec(),
                pid: 4242,
                message: Vec::new(),
                start_time: Some(StartTime(1_700_000_000_120_000)),
                lease: None,
            },
            since: StartTime(1_700_000_002_500_000),
            timeout: Duration::from_millis(45_000),
        }
    }

    #[test]
    fn round_trips_and_keeps_the_beat_at_its_offset() {
        let bytes = sample().to_bytes();
        assert_eq!(SessionRecord::parse(&bytes).unwrap(), sample());
        assert_eq!(&bytes[BEAT_OFFSET..BEAT_OFFSET + 20], b"00000000000000000042");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\nsince 2023-11-14 22:13:22.500000Z\n"), "{text}");
    }

    #[test]
    fn rejects_anything_else() {
        let good = sample().to_bytes();
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"extra\n");
        let mut bad_beat = good.clone();
        bad_beat[BEAT_OFFSET] = b'x';
        for (what, bytes) in
            [("empty", Vec::new()), ("truncated", good[..good.len() - 1].to_vec()), ("trailing", trailing), ("beat", bad_beat)]
        {
            assert!(SessionRecord::parse(&bytes).is_err(), "{what}");
        }
    }
}
