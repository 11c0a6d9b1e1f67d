//! The holder record stored in a lock file, in Core Nfs_lock's format:
//! `((host H)(pid N)(message M)(start_time(YYYY-MM-DD HH:MM:SS.ffffffZ)))`.

use crate::sexp::{self, Sexp};

/// Lock files larger than this are not records (Core's are well under 1 KiB).
pub const MAX_RECORD_LEN: usize = 64 * 1024;

/// Who holds a lock: host name, pid, free-form message and the holder's process start
/// time (absent in files written before 2018).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The holder's host name.
    pub host: Vec<u8>,
    /// The holder's process id on that host.
    pub pid: i32,
    /// Free-form text the holder gave when it took the lock.
    pub message: Vec<u8>,
    /// When the holder's process started; absent in records written before 2018.
    pub start_time: Option<StartTime>,
    /// The lease the holder promised to renew; None for a plain lock (Core's record).
    pub lease: Option<LeaseTerms>,
}

/// The field a leased lock adds to Core's record:
/// `(lease(ms 10000)(claim 0123456789abcdef)(mode exclusive))`. Core's reader rejects
/// records with unknown fields, so Core never takes or clears a leased lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTerms {
    /// The lease: others may break the lock after watching it unrenewed for this long.
    pub ms: u32,
    /// The 16 hex digits naming the holder's claim, and with it its tokens
    /// (`.nfslock-<claim>.<epoch>`; see docs/lease-protocol.md).
    pub claim: String,
    /// A shared (reader) hold rather than an exclusive one.
    pub shared: bool,
}

/// A process start time: microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StartTime(pub i64);

/// Text, not byte arrays: `Record { host: "build-07", pid: 4242, message: "nightly",
/// start_time: Some(2026-11-22 04:30:00.120000Z) }`.
impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("host", &String::from_utf8_lossy(&self.host))
            .field("pid", &self.pid)
            .field("message", &String::from_utf8_lossy(&self.message))
            .field("start_time", &self.start_time)
            .field("lease", &self.lease)
            .finish()
    }
}

impl std::fmt::Debug for StartTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (date, time) = format_utc(*self);
        write!(f, "{date} {time}")
    }
}

impl StartTime {
    /// Two start times within a second are the same process (Core's rule, made
    /// inclusive): `btime` in /proc/stat, from which both are computed, moves by whole
    /// seconds when the realtime clock is stepped, so an exact 1 s difference is common.
    pub fn same_process(self, other: StartTime) -> bool {
        (self.0 - other.0).abs() <= 1_000_000
    }
}

/// Why bytes read from a lock file are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord(pub String);

impl Record {
    /// The exact bytes Core writes: the machine form, no trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut fields = vec![
            field("host", Sexp::atom(self.host.clone())),
            field("pid", Sexp::atom(self.pid.to_string())),
            field("message", Sexp::atom(self.message.clone())),
        ];
        if let Some(t) = self.start_time {
            let (date, time) = format_utc(t);
            fields.push(field("start_time", Sexp::list([Sexp::atom(date), Sexp::atom(time)])));
        }
        if let Some(l) = &self.lease {
            let mode = if l.shared { "shared" } else { "exclusive" };
            let terms =
                [field("ms", Sexp::atom(l.ms.to_string())), field("claim", Sexp::atom(l.claim.clone())), field("mode", Sexp::atom(mode))];
            fields.push(field("lease", Sexp::list(terms)));
        }
        Sexp::List(fields).to_machine()
    }

    /// Reads either Core form; unknown fields are ignored, missing start_time is allowed.
    pub fn parse(bytes: &[u8]) -> Result<Record, BadRecord> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(BadRecord(format!("record is larger than {MAX_RECORD_LEN} bytes")));
        }
        if bytes.contains(&0) {
            return Err(BadRecord("record contains a NUL byte".into()));
        }
        let Sexp::List(fields) = sexp::parse(bytes).map_err(|e| BadRecord(format!("not an S-expression: {}", e.0)))? else {
            return Err(BadRecord("record is an atom, not a list of fields".into()));
        };
        let (mut host, mut pid, mut message, mut start_time, mut lease) = (None, None, None, None, None);
        for f in &fields {
            let (name, value) = match f {
                Sexp::List(kv) if kv.len() == 2 => match &kv[0] {
                    Sexp::Atom(name) => (name.as_slice(), &kv[1]),
                    Sexp::List(_) => return Err(BadRecord("field name is a list".into())),
                },
                _ => return Err(BadRecord("field is not a (name value) pair".into())),
            };
            let slot_filled = match name {
                b"host" => host.replace(atom(value, "host")?.to_vec()).is_some(),
                b"pid" => pid.replace(parse_pid(atom(value, "pid")?)?).is_some(),
                b"message" => message.replace(atom(value, "message")?.to_vec()).is_some(),
                b"start_time" => start_time.replace(parse_time(value)?).is_some(),
                b"lease" => lease.replace(parse_lease(value)?).is_some(),
                _ => false,
            };
            if slot_filled {
                return Err(BadRecord(format!("field {} appears twice", String::from_utf8_lossy(name))));
            }
        }
        Ok(Record {
            host: host.ok_or_else(|| BadRecord("no host field".into()))?,
            pid: pid.ok_or_else(|| BadRecord("no pid field".into()))?,
            message: message.ok_or_else(|| BadRecord("no message field".into()))?,
            start_time,
            lease,
        })
    }
}

/// `((ms N)(claim HEX16)(mode exclusive|shared))`, every part required, nothing else.
fn parse_lease(value: &Sexp) -> Result<LeaseTerms, BadRecord> {
    let bad = |why: &str| BadRecord(format!("lease: {why}"));
    let Sexp::List(parts) = value else { return Err(bad("not a list of terms")) };
    let (mut ms, mut claim, mut shared) = (None, None, None);
    for p in parts {
        let Sexp::List(kv) = p else { return Err(bad("a term is not a (name value) pair")) };
        let [Sexp::Atom(name), value] = kv.as_slice() else { return Err(bad("a term is not a (name value) pair")) };
        let v = atom(value, "lease term")?;
        let filled = match name.as_slice() {
            b"ms" => {
                let n = std::str::from_utf8(v).ok().filter(|s| s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse::<u32>().ok());
                ms.replace(n.filter(|&n| n > 0).ok_or_else(|| bad("ms is not a positive number"))?).is_some()
            }
            b"claim" => {
                let ok = v.len() == 16 && v.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
                claim
                    .replace(ok.then(|| String::from_utf8_lossy(v).into_owned()).ok_or_else(|| bad("claim is not 16 hex digits"))?)
                    .is_some()
            }
            b"mode" => shared
                .replace(match v {
                    b"exclusive" => false,
                    b"shared" => true,
                    _ => return Err(bad("mode is neither exclusive nor shared")),
                })
                .is_some(),
            _ => return Err(bad("unknown term")),
        };
        if filled {
            return Err(bad("a term appears twice"));
        }
    }
    Ok(LeaseTerms {
        ms: ms.ok_or_else(|| bad("no ms"))?,
        claim: claim.ok_or_else(|| bad("no claim"))?,
        shared: shared.ok_or_else(|| bad("no mode"))?,
    })
}

fn field(name: &str, value: Sexp) -> Sexp {
    Sexp::list([Sexp::atom(name), value])
}

fn atom<'a>(value: &'a Sexp, name: &str) -> Result<&'a [u8], BadRecord> {
    match value {
        Sexp::Atom(a) => Ok(a),
        Sexp::List(_) => Err(BadRecord(format!("{name} is a list, not an atom"))),
    }
}

fn parse_pid(a: &[u8]) -> Result<i32, BadRecord> {
    std::str::from_utf8(a)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| BadRecord(format!("pid {:?} is not a positive number", String::from_utf8_lossy(a))))
}

/// Core writes `(DATE TIME)`; a single `DATE TIME` atom or a `T` separator is accepted
/// too. The zone is `Z` (Core's choice) or a numeric offset.
fn parse_time(value: &Sexp) -> Result<StartTime, BadRecord> {
    let text = match value {
        Sexp::List(parts) if parts.len() == 2 => {
            let mut t = atom(&parts[0], "start_time")?.to_vec();
            t.push(b' ');
            t.extend_from_slice(atom(&parts[1], "start_time")?);
            t
        }
        Sexp::Atom(a) => a.clone(),
        Sexp::List(_) => return Err(BadRecord("start_time is not (DATE TIME)".into())),
    };
    std::str::from_utf8(&text)
        .ok()
        .and_then(parse_utc)
        .map(StartTime)
        .ok_or_else(|| BadRecord(format!("start_time {:?} is not a UTC time", String::from_utf8_lossy(&text))))
}

/// `YYYY-MM-DD HH:MM:SS[.fraction](Z|±HH:MM|±HH)` to microseconds since the epoch.
fn parse_utc(s: &str) -> Option<i64> {
    let (date, rest) = s.split_at_checked(10)?;
    let rest = rest.strip_prefix([' ', 'T'])?;
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let zone_at = rest.find(['Z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (h, mi, sec) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    // Digits only: a multi-byte character would also make the padding below slice
    // inside it.
    if t.next().is_some() || h > 23 || mi > 59 || sec > 60 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if frac.is_empty() { 0 } else { num(&format!("{frac:0<6}")[..6], 6)? };
    let offset = match zone {
        "Z" => 0,
        _ => {
            let (sign, hhmm) = zone.split_at(1);
            let (oh, om) = hhmm.split_once(':').unwrap_or((hhmm, "00"));
            let off = num(oh, 2)? * 3600 + num(om, 2)? * 60;
            if sign == "-" {
                -off
            } else {
                off
            }
        }
    };
    let secs = days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    // A zone offset can carry a time past 9999 or before 0000 in UTC, which no record
    // could hold once written again (Core's form has four-digit years).
    let (utc_year, _, _) = civil_from_days(secs.div_euclid(86_400));
    (0..=9999).contains(&utc_year).then_some(secs * 1_000_000 + micros)
}

fn num(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// Core's rendering: date `YYYY-MM-DD`, time `HH:MM:SS.ffffffZ`.
pub(crate) fn format_utc(t: StartTime) -> (String, String) {
    let secs = t.0.div_euclid(1_000_000);
    let micros = t.0.rem_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, sod / 60 % 60, sod % 60))
}

// Proleptic Gregorian calendar <-> days since 1970-01-01 (Howard Hinnant's algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: StartTime = StartTime(1_705_314_600_120_000); // 2024-01-15 10:30:00.120000Z

    #[test]
    fn start_times_that_could_not_be_written_back_are_refused() {
        // Found by fuzzing: a multi-byte character in the fraction panicked; a zone
        // offset past year 9999 (or before 0000) read, but wrote a five-digit year.
        for bad in
            ["2024-01-15 10:30:00.aaaaa\u{20ac}Z", "2024-01-15 10:30:00.12x456Z", "9999-12-31 23:59:59-01:00", "0000-01-01 00:00:00+01:00"]
        {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
        assert!(parse_utc("9999-12-31 23:59:59Z").is_some());
        assert!(parse_utc("0000-01-01 00:00:00Z").is_some());
    }

    #[test]
    fn debug_prints_text() {
        let r = Record { host: b"build-07".to_vec(), pid: 4242, message: b"nightly".to_vec(), start_time: Some(T), lease: None };
        assert_eq!(
            format!("{r:?}"),
            r#"Record { host: "build-07", pid: 4242, message: "nightly", start_time: Some(2024-01-15 10:30:00.120000Z), lease: None }"#
        );
    }

    fn rec(host: &str, pid: i32, message: &[u8], start_time: Option<StartTime>) -> Record {
        Record { host: host.into(), pid, message: message.to_vec(), start_time, lease: None }
    }

    #[test]
    fn writes_cores_machine_form_byte_for_byte() {
        let cases: [(Record, &str); 5] = [
            (rec("myhost", 12345, b"", Some(T)), r#"((host myhost)(pid 12345)(message"")(start_time(2024-01-15 10:30:00.120000Z)))"#),
            (rec("h", 1, b"hi", None), "((host h)(pid 1)(message hi))"),
            (
                rec("h.example.com", 7, b"a \"quoted\" word", Some(StartTime(0))),
                r#"((host h.example.com)(pid 7)(message"a \"quoted\" word")(start_time(1970-01-01 00:00:00.000000Z)))"#,
            ),
            (rec("h", 2, b"two\nlines\tand\\", None), r#"((host h)(pid 2)(message"two\nlines\tand\\"))"#),
            (rec("h", 3, "caf\u{e9}".as_bytes(), None), r#"((host h)(pid 3)(message"caf\195\169"))"#),
        ];
        for (r, want) in cases {
            assert_eq!(String::from_utf8(r.to_bytes()).unwrap(), want);
            assert_eq!(Record::parse(want.as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn reads_cores_human_form_and_old_records() {
        let human = b"((host myhost) (pid 12345) (message \"\")\n (start_time (2024-01-15 10:30:00.120000Z)))\n";
        assert_eq!(Record::parse(human).unwrap(), rec("myhost", 12345, b"", Some(T)));
        let pre_2018 = b"((host old) (pid 99) (message \"long job\"))\n";
        assert_eq!(Record::parse(pre_2018).unwrap(), rec("old", 99, b"long job", None));
        let extra = b"((host h)(pid 5)(message m)(lease_ms 100)(future(a b)))";
        assert_eq!(Record::parse(extra).unwrap(), rec("h", 5, b"m", None));
    }

    #[test]
    fn rejects_what_is_not_a_record() {
        let bad: [&[u8]; 12] = [
            b"",
            b"garbage",
            b"((host h)(pid 5)(message",
            b"((host h)(pid x)(message m))",
            b"((host h)(pid -4)(message m))",
            b"((host h)(pid 0)(message m))",
            b"((host h)(message m))",
            b"((host h)(host g)(pid 1)(message m))",
            b"((host h)(pid 1)(message m)(start_time(yesterday noon)))",
            b"((host (h))(pid 1)(message m))",
            b"((host h)\0(pid 1)(message m))",
            b"((host h)(pid 99999999999)(message m))",
        ];
        for b in bad {
            assert!(Record::parse(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let big = [b' '; MAX_RECORD_LEN + 1];
        assert!(Record::parse(&big).is_err());
    }

    #[test]
    fn time_conversions_agree() {
        for t in [0, 951_782_400_000_000, T.0, 4_102_444_799_999_999, -86_400_000_000] {
            let (d, h) = format_utc(StartTime(t));
            assert_eq!(parse_utc(&format!("{d} {h}")), Some(t), "{d} {h}");
        }
        assert_eq!(parse_utc("2024-01-15T10:30:00Z"), Some(T.0 - 120_000));
        assert_eq!(parse_utc("2024-01-15 11:30:00.12+01:00"), Some(T.0));
        assert!(StartTime(10).same_process(StartTime(999_999)));
        assert!(StartTime(0).same_process(StartTime(1_000_000)));
        assert!(!StartTime(0).same_process(StartTime(1_000_001)));
    }
}
