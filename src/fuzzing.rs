//! Entry points for the fuzz targets in `fuzz/` (not part of the API; hidden from the
//! docs). Each one runs one parser of bytes read from disk on arbitrary input and checks
//! what must hold whatever the input is: no panic, and the round trips of its format
//! (what is parsed, written again by this library, parses to the same value). A broken
//! property panics, which the fuzzer reports as a crash with the input that caused it.
//!
//! Hangs and memory are the fuzz targets' part: libFuzzer's `-timeout`, and a counting
//! global allocator that aborts on any allocation beyond [`alloc_limit`].
//!
//! The parsers:
//! - [`lock_record`]: a lock file (`P.nfs_lock`, `P`, a claim), Core's S-expression
//!   record ([`Record::parse`], over `sexp::parse`);
//! - [`session_record`]: a session's record file (`NAME.sessions/<sid>`);
//! - `counter`: the ID counter file (`NAME.counter`) and its in-place update;
//! - [`claim`]: the text of an ID lock or claim (`NAME.ids/*`).
//!
//! The unit test at the end replays the seed corpus (`fuzz/seeds/<target>/`) through the
//! same checks, so the ordinary test suite covers it without a fuzzer. The reproducers of
//! bugs found (`fuzz/regressions/<target>/`) are replayed by `scripts/fuzz` only, under
//! the fuzz targets' time and allocation limits: one of a hang would otherwise take a
//! test process's memory without bound.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use crate::fsops::{self, FileId};
use crate::record::{Record, MAX_RECORD_LEN};
use crate::session::{counter, idlock, record as srecord};
use crate::sexp;

/// The fuzz targets, by name (their seed directories are `fuzz/seeds/<name>/`).
pub const TARGETS: [&str; 4] = ["lock_record", "session_record", "counter", "claim"];

/// The most input worth generating for `target`: a little past the largest input its
/// parser accepts, so that the size checks are exercised too.
pub fn max_input_len(target: &str) -> usize {
    match target {
        "lock_record" => MAX_RECORD_LEN + 64,
        "session_record" => srecord::MAX_LEN + 64,
        "counter" => counter::FILE_LEN + 16,
        "claim" => CLAIM_READ_CAP + 16,
        _ => panic!("no fuzz target {target:?}"),
    }
}

/// The most memory one run of a target's checks may allocate: four times the record cap
/// (64 KiB), the largest input any of these readers hands its parser. The fuzz targets
/// abort when one allocation, or everything allocated and not yet freed, exceeds it: a
/// parser's memory must be bounded by the cap, never by what the input says.
pub fn alloc_limit(target: &str) -> usize {
    assert!(TARGETS.contains(&target), "no fuzz target {target:?}");
    4 * MAX_RECORD_LEN
}

/// Runs `target`'s checks on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "lock_record" => lock_record(data),
        "session_record" => session_record(data),
        "counter" => counter(data),
        "claim" => claim(data),
        _ => panic!("no fuzz target {target:?}"),
    }
}

/// A lock record: [`Record::parse`] and, under it, the S-expression reader.
///
/// - The S-expression reader: whatever it reads, its machine form (what this library
///   writes) reads back as the same expression.
/// - A record read, written again ([`Record::to_bytes`]), reads back as the same record.
///   Skipped when the written form is over the record cap: escapes can make a record
///   read from disk longer when written (a raw byte >= 127 becomes `\DDD`), and such a
///   record is refused when read, which is the cap doing its work.
/// - A record is a list: bytes that are not an S-expression are never a record.
pub fn lock_record(data: &[u8]) {
    let parsed = Record::parse(data);
    if data.len() <= MAX_RECORD_LEN && !data.contains(&0) {
        match sexp::parse(data) {
            Ok(s) => {
                let machine = s.to_machine();
                let again = sexp::parse(&machine);
                assert_eq!(
                    again.as_ref(),
                    Ok(&s),
                    "the machine form {:?} of an S-expression does not read back as it",
                    String::from_utf8_lossy(&machine)
                );
            }
            Err(e) => assert!(parsed.is_err(), "not an S-expression ({}), yet read as a record", e.0),
        }
    }
    let Ok(rec) = parsed else { return };
    assert!(rec.pid > 0, "a record with pid {}", rec.pid);
    let bytes = rec.to_bytes();
    if bytes.len() > MAX_RECORD_LEN {
        return;
    }
    let again = Record::parse(&bytes);
    assert_eq!(
        again.as_ref(),
        Ok(&rec),
        "the record, written again as {:?}, does not read back as the same record",
        String::from_utf8_lossy(&bytes)
    );
}

/// A session record: `srecord::SessionRecord::parse`.
///
/// - Written again, it reads back as the same record (skipped over the cap, as above).
/// - The heartbeat's in-place rewrite: the 20 beat digits at `BEAT_OFFSET`, in the bytes
///   read and in the bytes written, replaced by another beat, read back as the same record
///   with that beat.
pub fn session_record(data: &[u8]) {
    let Ok(rec) = srecord::SessionRecord::parse(data) else { return };
    let bytes = rec.to_bytes();
    if bytes.len() <= srecord::MAX_LEN {
        let again = srecord::SessionRecord::parse(&bytes);
        assert_eq!(
            again.as_ref(),
            Ok(&rec),
            "the session record, written again as {:?}, does not read back as the same record",
            String::from_utf8_lossy(&bytes)
        );
        check_beat_rewrite(&bytes, &rec);
    }
    check_beat_rewrite(data, &rec);
}

fn check_beat_rewrite(bytes: &[u8], rec: &srecord::SessionRecord) {
    for beat in [rec.beat.wrapping_add(1), u64::MAX, 0] {
        let mut beaten = bytes.to_vec();
        beaten[srecord::BEAT_OFFSET..srecord::BEAT_OFFSET + 20].copy_from_slice(&srecord::beat_bytes(beat));
        let want = srecord::SessionRecord { beat, ..rec.clone() };
        assert_eq!(srecord::SessionRecord::parse(&beaten).as_ref(), Ok(&want), "the beat rewritten in place to {beat} does not read back");
    }
}

/// The counter file: `counter::parse`, on the input as it is and on the input with
/// both slots' checksums recomputed (so that the fuzzer reaches what lies behind the
/// CRC: the digits, the labels, the choice between slots).
///
/// - The value read is the slot it names, exactly as this library writes that slot, and
///   no other valid slot has a higher sequence.
/// - The update: the counter read from a file, updated twice in place
///   (`counter::write`), reads back each time as the value written, with a sequence
///   higher than before (a sequence that did not grow would let the older slot win: the
///   counter would go back and issue IDs again).
/// - A new counter file (`counter::initial`) reads as its value.
pub fn counter(data: &[u8]) {
    check_counter(data);
    if data.len() == counter::FILE_LEN {
        let mut fixed = data.to_vec();
        for i in 0..2 {
            let at = counter::HEADER.len() + i * counter::SLOT_LEN;
            let crc = crc32fast::hash(&fixed[at..at + 44]);
            fixed[at + 44..at + 52].copy_from_slice(format!("{crc:08x}").as_bytes());
        }
        check_counter(&fixed);
    }
}

fn check_counter(data: &[u8]) {
    let Ok(c) = counter::parse(data) else { return };
    let slot_at = |i: usize| counter::HEADER.len() + i * counter::SLOT_LEN;
    let at = slot_at(c.slot);
    assert_eq!(
        &data[at..at + counter::SLOT_LEN],
        counter::slot_line(counter::LABELS[c.slot], c.seq, c.next).as_slice(),
        "the value read is not the slot it names"
    );
    let other = 1 - c.slot;
    if let Some((seq, _)) = counter::parse_slot(counter::LABELS[other], &data[slot_at(other)..slot_at(other) + counter::SLOT_LEN]) {
        assert!(seq <= c.seq, "slot {other} has the higher sequence {seq} > {}, yet lost", c.seq);
    }
    assert_eq!(counter::parse(&counter::initial(c.next)).map(|c| c.next), Ok(c.next), "a new counter file");

    let cf = memory_file(data);
    assert_eq!(counter::read(&cf).ok(), Some(c), "the file reads differently from its bytes");
    let mut current = c;
    for next in [c.next.wrapping_add(1), c.next.wrapping_add(1000)] {
        match counter::write(&cf, &current, next) {
            Ok(written) => {
                let read = counter::read(&cf).ok();
                assert_eq!(read, Some(written), "the counter updated to {next} does not read back as written");
                assert!(written.seq > current.seq, "an update did not raise the sequence ({} after {})", written.seq, current.seq);
                current = written;
            }
            // Refusing an update (a sequence that cannot grow) is fine if nothing changed.
            Err(e) => {
                assert_eq!(counter::read(&cf).ok(), Some(current), "a refused update ({e}) changed the counter");
                break;
            }
        }
    }
}

/// A counter file in memory (memfd), holding `data`.
fn memory_file(data: &[u8]) -> counter::CounterFile {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor it returns is new
    // and owned by nothing else.
    let fd = unsafe { libc::memfd_create(c"nfslock-fuzz-counter".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all_at(data, 0).expect("writing a memfd");
    let st = fsops::fstat(&file).expect("fstat of a memfd");
    counter::CounterFile { file, id: FileId::from(&st) }
}

/// What [`idlock::holder_of`] reads of an ID lock or claim.
const CLAIM_READ_CAP: usize = 256;

/// The text of a claim: `idlock::parse_claim`. A text it accepts is exactly the text
/// this library writes for that session, and the session id is one this library draws.
pub fn claim(data: &[u8]) {
    let Some(sid) = idlock::parse_claim(data) else { return };
    assert!(
        sid.len() == 16 && sid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "claim text names {sid:?}, not a session id"
    );
    assert_eq!(idlock::claim_text(&sid), data, "a claim text accepted that this library would not write");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every seed input of every target passes its checks.
    #[test]
    fn seed_corpus_passes_the_checks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("seeds");
        let mut failures = Vec::new();
        for target in TARGETS {
            let dir = root.join(target);
            let mut paths: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("no seed corpus at {}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            paths.sort();
            assert!(!paths.is_empty(), "empty seed corpus {}", dir.display());
            for path in paths {
                let data = std::fs::read(&path).unwrap();
                assert!(data.len() <= max_input_len(target), "{} is longer than the fuzzer's inputs", path.display());
                if let Err(e) = std::panic::catch_unwind(|| run(target, &data)) {
                    let why = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                    failures.push(format!("{}: {}", path.display(), why.unwrap_or_default()));
                }
            }
        }
        assert!(failures.is_empty(), "{} seed inputs fail:\n{}", failures.len(), failures.join("\n"));
    }

    /// The seeds reach what they are there for: each target has seeds its parser accepts
    /// (with a valid checksum, for the counter) and seeds it refuses.
    #[test]
    fn seed_corpus_has_valid_and_invalid_inputs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("seeds");
        for target in TARGETS {
            let (mut ok, mut bad) = (0, 0);
            for entry in std::fs::read_dir(root.join(target)).unwrap() {
                let data = std::fs::read(entry.unwrap().path()).unwrap();
                let accepted = match target {
                    "lock_record" => Record::parse(&data).is_ok(),
                    "session_record" => srecord::SessionRecord::parse(&data).is_ok(),
                    "counter" => counter::parse(&data).is_ok(),
                    "claim" => idlock::parse_claim(&data).is_some(),
                    _ => unreachable!(),
                };
                if accepted {
                    ok += 1
                } else {
                    bad += 1
                }
            }
            assert!(ok >= 2 && bad >= 2, "{target}: {ok} accepted and {bad} refused seeds");
        }
    }
}
