//! Whether other sessions are alive: their records, what an observer has seen of their
//! beats, and one listing of a repository's ID locks and claims (reaper.rs removes
//! what the dead left).
//!
//! A session is dead when its beat has not changed for its timeout as measured on the
//! observer's own monotonic clock (no clocks of two hosts are ever compared), or at
//! once when it lives on this host and its process is gone or is another process with
//! the same pid. An observer can only call a session dead after watching it for a full
//! timeout, so a fresh observer is slow to judge, never quick.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::DirEntryExt;
use std::time::{Duration, Instant};

use super::files::{self, Small};
use super::layout::{classify, is_session_id, IdsEntry, Repo};
use super::record::{SessionRecord, MAX_LEN};
use crate::fsops::{self, FileId};
use crate::host::{self, Owner};

/// Ganga's default: a session unheard of for this long is dead.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(45_000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Alive,
    Dead,
    /// No record: the session closed or was reaped; what is left of it is garbage.
    Gone,
}

/// What this process has seen of other sessions' beats.
#[derive(Debug)]
pub struct Observer {
    seen: HashMap<String, (u64, Instant)>,
    /// Unreadable records and `.open-` files: their identity and a checksum of their
    /// bytes, and since when (our clock) they were seen so.
    unreadable: HashMap<std::path::PathBuf, (FileId, u32, Instant)>,
    local: bool,
    /// How long an unreadable file must stay unchanged before it counts as dead: the
    /// longer of our own timeout and the default one (its own is not readable).
    patience: Duration,
}

/// Reads a session's record. None: there is none.
pub fn read_record(repo: &Repo, sid: &str) -> Result<Option<SessionRecord>, String> {
    match files::read_small(&repo.session_path(sid), MAX_LEN) {
        Ok(Small::Bytes(bytes)) => SessionRecord::parse(&bytes).map(Some),
        Ok(Small::Missing) => Ok(None),
        Ok(Small::TooLarge) => Err(format!("larger than {MAX_LEN} bytes")),
        // Removed between open and read (NFS), or a volatile server handle: cannot tell
        // from here; the next look opens it afresh.
        Err(e) => Err(format!("read: {}", e.desc())),
    }
}

impl Observer {
    pub fn new(local: bool, timeout: Duration) -> Observer {
        Observer { seen: HashMap::new(), unreadable: HashMap::new(), local, patience: timeout.max(DEFAULT_TIMEOUT) }
    }

    /// Whether an unreadable record or `.open-` file is a dead process's: on a local
    /// filesystem, when no process holds its flock (every session holds one on its
    /// record for its life, and an opener on its `.open-` file); elsewhere, when its
    /// bytes stayed the same for the observer's patience on its own clock.
    pub fn unreadable_is_dead(&mut self, path: &std::path::Path) -> bool {
        let Ok(fd) = fsops::open_existing(path, false) else { return false };
        let file = File::from(fd);
        if self.local {
            return fsops::try_flock_exclusive(&file).is_ok();
        }
        let (Ok(st), Ok(Some(bytes))) = (fsops::fstat(&file), fsops::read_capped(&file, MAX_LEN + 1)) else { return false };
        let now_seen = (FileId::from(&st), crc32fast::hash(&bytes));
        let now = Instant::now();
        match self.unreadable.get(path) {
            Some(&(id, crc, since)) if (id, crc) == now_seen => now.duration_since(since) >= self.patience,
            _ => {
                self.unreadable.insert(path.to_path_buf(), (now_seen.0, now_seen.1, now));
                false
            }
        }
    }

    /// Forgets what was seen of an unreadable file (removed).
    pub fn forget_unreadable(&mut self, path: &std::path::Path) {
        self.unreadable.remove(path);
    }

    /// Judges session `sid` from its record now and what was seen of it before. A
    /// record that cannot be read or parsed counts as alive unless it is shown to be a
    /// dead process's ([`Observer::unreadable_is_dead`]): never break what you cannot
    /// read (`check` reports it).
    pub fn judge(&mut self, repo: &Repo, sid: &str, this_host: &[u8]) -> Life {
        let record = match read_record(repo, sid) {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.seen.remove(sid);
                return Life::Gone;
            }
            Err(_) if self.unreadable_is_dead(&repo.session_path(sid)) => return Life::Dead,
            Err(_) => return Life::Alive,
        };
        self.unreadable.remove(&repo.session_path(sid));
        if host::owner_of(&record.owner, this_host) == Owner::Dead {
            return Life::Dead;
        }
        let now = Instant::now();
        match self.seen.get(sid) {
            Some(&(beat, since)) if beat == record.beat => {
                if now.duration_since(since) >= record.timeout {
                    Life::Dead
                } else {
                    Life::Alive
                }
            }
            _ => {
                self.seen.insert(sid.to_string(), (record.beat, now));
                Life::Alive
            }
        }
    }
}

/// One readdir of the ids directory: (name, d_ino, what it is).
pub struct Listing(Vec<(OsString, u64, IdsEntry)>);

impl Listing {
    pub fn read(repo: &Repo) -> nix::Result<Listing> {
        let dir = std::fs::read_dir(&repo.ids).map_err(|e| fsops::io_errno(&e))?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| fsops::io_errno(&e))?;
            let name = entry.file_name();
            let kind = classify(&name);
            entries.push((name, entry.ino(), kind));
        }
        Ok(Listing(entries))
    }

    pub fn ids(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().filter_map(|(_, ino, e)| match e {
            IdsEntry::Id(id) => Some((*id, *ino)),
            _ => None,
        })
    }

    pub fn claims(&self) -> impl Iterator<Item = (&str, u32, u64)> + '_ {
        self.0.iter().filter_map(|(_, ino, e)| match e {
            IdsEntry::Claim(sid, n) => Some((sid.as_str(), *n, *ino)),
            _ => None,
        })
    }
}

/// The session ids that have a record or a claim.
pub fn known_sessions(repo: &Repo, listing: &Listing) -> nix::Result<HashSet<String>> {
    let mut sids: HashSet<String> = listing.claims().map(|(sid, _, _)| sid.to_string()).collect();
    for entry in std::fs::read_dir(&repo.sessions).map_err(|e| fsops::io_errno(&e))? {
        let name = entry.map_err(|e| fsops::io_errno(&e))?.file_name();
        if is_session_id(name.as_encoded_bytes()) {
            sids.insert(name.to_string_lossy().into_owned());
        }
    }
    Ok(sids)
}
