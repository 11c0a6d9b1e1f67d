//! The ID counter: the next ID a repository issues, stored durably so that no ID is ever
//! issued twice.
//!
//! The file holds two checksummed slots, written in turn. An update rewrites only the
//! older slot (one pwrite of one line, then fdatasync), so a crash in the middle of it
//! leaves the newer slot, the value before the interrupted call, intact; IDs of a call
//! that did not return were never handed out, so going back to that value issues
//! nothing twice. A slot whose checksum fails is ignored; a file where neither slot is
//! valid is corrupt and is never read as a value (the operator repairs it).
//!
//! Format, text with fixed widths (124 bytes):
//!
//! ```text
//! nfslock-counter 1
//! A 00000000000000000007 00000000000000001234 3acfbe15
//! B 00000000000000000006 00000000000000001230 bba8d963
//! ```
//!
//! Each slot line: its letter, a sequence number, the next ID, and the CRC-32 (hex) of
//! the line up to that field. The valid slot with the higher sequence is the value.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::stat::FileStat;

use super::layout::Repo;
use crate::error::Error;
use crate::fsops::{self, FileId};

pub(crate) const HEADER: &[u8] = b"nfslock-counter 1\n";
/// "A " + 20 digits + " " + 20 digits + " " + 8 hex + "\n"
pub(crate) const SLOT_LEN: usize = 2 + 20 + 1 + 20 + 1 + 8 + 1;
pub(crate) const FILE_LEN: usize = HEADER.len() + 2 * SLOT_LEN;
pub(crate) const LABELS: [u8; 2] = [b'A', b'B'];

/// The counter as read: its value and where the next update goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The next ID to issue.
    pub next: u64,
    pub(crate) seq: u64,
    /// The slot holding the value (0 = A, 1 = B).
    pub(crate) slot: usize,
}

/// Why the counter could not be read.
#[derive(Debug)]
pub enum ReadError {
    Missing,
    Corrupt(String),
    Sys(Errno, &'static str),
}

impl ReadError {
    /// The error of operation `op` that met this on the counter at `path`: a missing or
    /// corrupt counter is an error until it is repaired (starting again from zero would
    /// issue old IDs twice).
    pub fn error(self, op: &'static str, path: &Path) -> Error {
        match self {
            ReadError::Missing => Error::new(
                Errno::ENOENT,
                op,
                Some(path),
                "the ID counter is missing; it is not recreated from zero (that could issue IDs twice): \
                 call repair_counter with the next ID to issue",
            ),
            ReadError::Corrupt(why) => {
                Error::new(Errno::EBADMSG, op, Some(path), format!("the ID counter is corrupt ({why}); call repair_counter"))
            }
            ReadError::Sys(e, call) => Error::sys(e, op, path, call),
        }
    }
}

/// The counter as a session reads it. Where every user of the filesystem shares this
/// machine's page cache (a local filesystem), the file is kept open between calls and
/// only the name is checked to still refer to it (a repair replaces it); elsewhere
/// (NFS) it is opened afresh every time, which is what revalidates the client's cache.
#[derive(Debug, Default)]
pub struct Cache {
    open: Option<Arc<CounterFile>>,
}

impl Cache {
    /// Reads the counter of `repo` (see [`Cache`]); errors as [`ReadError::error`].
    pub fn read(&mut self, repo: &Repo, local: bool, op: &'static str) -> Result<(Arc<CounterFile>, Counter), Error> {
        let path = &repo.counter;
        if let Some(cf) = self.open.clone() {
            if fsops::id_of(path) == Ok(cf.id) {
                return read(&cf).map(|c| (cf, c)).map_err(|e| e.error(op, path));
            }
            self.open = None;
        }
        let cf = Arc::new(open(repo, local).map_err(|e| e.error(op, path))?);
        let c = read(&cf).map_err(|e| e.error(op, path))?;
        if local {
            self.open = Some(cf.clone());
        }
        Ok((cf, c))
    }
}

pub(crate) fn slot_line(label: u8, seq: u64, next: u64) -> Vec<u8> {
    let mut line = format!("{} {seq:020} {next:020} ", label as char).into_bytes();
    let crc = crc32fast::hash(&line);
    line.extend_from_slice(format!("{crc:08x}\n").as_bytes());
    debug_assert_eq!(line.len(), SLOT_LEN);
    line
}

pub(crate) fn parse_slot(label: u8, line: &[u8]) -> Option<(u64, u64)> {
    let digits = |b: &[u8]| -> Option<u64> {
        if b.len() != 20 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    };
    if line.len() != SLOT_LEN || line[0] != label || line[1] != b' ' || line[22] != b' ' || line[43] != b' ' {
        return None;
    }
    if line[SLOT_LEN - 1] != b'\n' {
        return None;
    }
    let crc_text = std::str::from_utf8(&line[44..52]).ok()?;
    if !crc_text.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
        return None;
    }
    let crc = u32::from_str_radix(crc_text, 16).ok()?;
    if crc != crc32fast::hash(&line[..44]) {
        return None;
    }
    Some((digits(&line[2..22])?, digits(&line[23..43])?))
}

/// Parses the whole file strictly: exact length and header; at least one valid slot.
pub fn parse(bytes: &[u8]) -> Result<Counter, String> {
    if bytes.len() != FILE_LEN {
        return Err(format!("it is {} bytes long, not {FILE_LEN}", bytes.len()));
    }
    if !bytes.starts_with(HEADER) {
        return Err("it does not start with `nfslock-counter 1`".into());
    }
    let slots: Vec<Option<(u64, u64)>> = (0..2)
        .map(|i| {
            let at = HEADER.len() + i * SLOT_LEN;
            parse_slot(LABELS[i], &bytes[at..at + SLOT_LEN])
        })
        .collect();
    let best = (0..2).filter_map(|i| slots[i].map(|(seq, next)| (seq, next, i))).max();
    match best {
        // A sequence that cannot grow would make the next update's slot lose to this
        // one: the counter would stand still and IDs be issued again. Only a crafted or
        // damaged file gets there (2^64 updates); it is corrupt, for repair_counter.
        Some((u64::MAX, _, _)) => Err("its newer slot's sequence is 2^64-1 and cannot be advanced".into()),
        Some((seq, next, slot)) => Ok(Counter { next, seq, slot }),
        None => Err("neither of its two slots has a valid checksum".into()),
    }
}

/// A new counter file's contents, both slots holding `next`.
pub fn initial(next: u64) -> Vec<u8> {
    let mut bytes = HEADER.to_vec();
    bytes.extend(slot_line(b'A', 1, next));
    bytes.extend(slot_line(b'B', 0, next));
    bytes
}

/// The counter file, open for update (by the holder of its token, see token.rs).
#[derive(Debug)]
pub struct CounterFile {
    pub file: File,
    pub id: FileId,
}

/// Opens the counter. On NFS it must be opened afresh for every update: open is what
/// revalidates a client's cached data (close-to-open consistency). Off local
/// filesystems it is opened with O_DIRECT where that is supported, so that reads go to
/// the server: the file's size never changes, so a client that sees two updates within
/// one tick of the server's timestamps would otherwise keep serving the older page.
///
/// Only a file the repository could have made itself is a counter: a regular file with
/// one link, of this process's user, root or the repository's owner. Anything else at
/// the name (a socket, a FIFO, a hard link of someone else's file, another user's file)
/// is refused as corrupt, never read as a value nor written through: a write to a file
/// with another name would change that other file.
pub fn open(repo: &Repo, local: bool) -> Result<CounterFile, ReadError> {
    let path = &repo.counter;
    let opened = match local {
        true => fsops::open_existing(path, true),
        false => match fsops::open_existing_direct(path) {
            Err(Errno::EINVAL) => fsops::open_existing(path, true),
            other => other,
        },
    };
    let fd = match opened {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Err(ReadError::Missing),
        Err(Errno::ELOOP) => return Err(ReadError::Corrupt("it is a symlink".into())),
        // open(2) of a socket.
        Err(Errno::ENXIO) => return Err(ReadError::Corrupt("it is not a regular file (a socket)".into())),
        Err(e) => return Err(ReadError::Sys(e, "open")),
    };
    let st = fsops::fstat(&fd).map_err(|e| ReadError::Sys(e, "fstat"))?;
    untrusted(repo, &st).map_or(Ok(()), |why| Err(ReadError::Corrupt(why)))?;
    Ok(CounterFile { file: File::from(fd), id: FileId::from(&st) })
}

/// Why the file `st` cannot be the repository's counter, if it cannot (see [`open`]).
pub fn untrusted(repo: &Repo, st: &FileStat) -> Option<String> {
    if !fsops::is_regular(st) {
        return Some("it is not a regular file".into());
    }
    if st.st_nlink != 1 {
        return Some(format!(
            "it has {} links: another name refers to the same file (planted by someone else?), which a write would change",
            st.st_nlink
        ));
    }
    if !repo.trusts_owner(st.st_uid) {
        return Some(format!("it belongs to uid {}, not to this user, root or the repository's owner", st.st_uid));
    }
    None
}

/// Reads the counter: one pread of one byte more than the file should hold.
pub fn read(cf: &CounterFile) -> Result<Counter, ReadError> {
    let mut buf = [0u8; FILE_LEN + 1];
    let n = fsops::retry(|| cf.file.read_at(&mut buf, 0).map_err(|e| fsops::io_errno(&e))).map_err(|e| ReadError::Sys(e, "read"))?;
    parse(&buf[..n]).map_err(ReadError::Corrupt)
}

/// Opens and reads the counter.
pub fn load(repo: &Repo, local: bool) -> Result<(CounterFile, Counter), ReadError> {
    let cf = open(repo, local)?;
    let counter = read(&cf)?;
    Ok((cf, counter))
}

/// Sets the next ID to `next` in the page cache: rewrites the older slot. Durable only
/// after [`sync`]. The write is idempotent (same bytes, same place) and is repeated
/// after a transient error.
pub fn write(cf: &CounterFile, current: &Counter, next: u64) -> nix::Result<Counter> {
    let slot = 1 - current.slot;
    // A slot is never given the sequence u64::MAX, which parse() refuses (it could not
    // be advanced): a counter that far along (only a crafted file) is refused as
    // corrupt, for repair_counter, and the file is left as it was.
    let seq = current.seq.checked_add(1).filter(|s| *s < u64::MAX).ok_or(nix::errno::Errno::EBADMSG)?;
    let line = slot_line(LABELS[slot], seq, next);
    let at = (HEADER.len() + slot * SLOT_LEN) as u64;
    fsops::retry(|| cf.file.write_all_at(&line, at).map_err(|e| fsops::io_errno(&e)))?;
    Ok(Counter { next, seq, slot })
}

/// fdatasync. Never repeated: after a failure the kernel may have dropped the dirty
/// page, so a second call could report success for data that never reached the disk.
pub fn sync(cf: &CounterFile) -> nix::Result<()> {
    cf.file.sync_data().map_err(|e| fsops::io_errno(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_file_parses_to_its_value() {
        let bytes = initial(42);
        assert_eq!(bytes.len(), FILE_LEN);
        assert_eq!(parse(&bytes).unwrap().next, 42);
    }

    #[test]
    fn a_sequence_that_cannot_grow_is_corrupt() {
        // Found by fuzzing: seq + 1 wrapped to 0, the update lost to the old slot and the
        // counter stood still (IDs issued again).
        let mut bytes = initial(10);
        let b_at = HEADER.len() + SLOT_LEN;
        bytes[b_at..b_at + SLOT_LEN].copy_from_slice(&slot_line(b'B', u64::MAX, 15));
        assert!(parse(&bytes).is_err());
    }

    #[test]
    fn the_newer_valid_slot_wins_and_a_torn_slot_is_ignored() {
        let mut bytes = initial(10);
        let b_at = HEADER.len() + SLOT_LEN;
        bytes[b_at..b_at + SLOT_LEN].copy_from_slice(&slot_line(b'B', 2, 15));
        assert_eq!(parse(&bytes).unwrap().next, 15);
        // A crash while rewriting B: half of the line is new.
        bytes[b_at + 30] = b'9';
        assert_eq!(parse(&bytes).unwrap().next, 10, "falls back to A");
    }

    #[test]
    fn corrupt_files_are_rejected() {
        let good = initial(7);
        let mut both_bad = good.clone();
        both_bad[HEADER.len() + 5] ^= 1;
        both_bad[HEADER.len() + SLOT_LEN + 5] ^= 1;
        let cases: [(&str, Vec<u8>); 5] = [
            ("empty", Vec::new()),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("header", [b"nfslock-counter 2\n".as_slice(), &good[HEADER.len()..]].concat()),
            ("both slots", both_bad),
            ("garbage", vec![b'x'; FILE_LEN]),
        ];
        for (what, bytes) in cases {
            assert!(parse(&bytes).is_err(), "{what}");
        }
    }
}
