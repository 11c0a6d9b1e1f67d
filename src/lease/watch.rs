//! Watching a lease: has its holder renewed it within the lease, as this process's own
//! clock measures? The watch notes when it first saw the token (after the read that
//! showed it) and restarts on every sign of progress; only a token that stayed in place
//! for the lease plus a margin may be taken. Stale reads only delay the verdict: the
//! token's rename decides (docs/lease-protocol.md).

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;

use crate::clock;
use crate::fsops::{self, FileId};
use crate::lockfile::token::{self, Found};
use crate::lockfile::Target;
use crate::record::LeaseTerms;

/// How far past the lease a watcher waits: clocks of two machines may run at rates up
/// to 1.5% apart (NTP slews by at most 0.05%), plus a millisecond of rounding.
pub fn margin(lease: Duration) -> Duration {
    lease / 64 + Duration::from_millis(1)
}

/// How often a watcher looks: often enough to see each renewal (every lease/3).
pub fn poll_interval(lease: Duration) -> Duration {
    (lease / 8).clamp(Duration::from_millis(2), Duration::from_millis(50))
}

/// One lease seen on one lock file (or one shared holder seen under its membership name).
#[derive(Debug)]
pub struct Watch {
    /// The name that must keep naming `file` for the lease to go on: the lock file, or a
    /// shared holder's membership name.
    anchor: PathBuf,
    /// The lock file's (holder's) inode when the watch began.
    pub file: FileId,
    claim: String,
    pub lease: Duration,
    token: Found,
    /// This clock's time just after the read that last showed progress.
    since: Duration,
}

/// What a look at a watched lease found.
#[derive(Debug)]
pub enum Verdict {
    /// No renewal missed yet: the lease may expire in this long at the earliest.
    Live(Duration),
    /// Not renewed for a whole lease: the token named `from` (at `epoch`) may be taken.
    Expired { from: PathBuf, epoch: u64 },
    /// The lock file is gone or is another file: this lease is over.
    Ended,
}

impl Watch {
    /// Starts watching the lease `terms` on lock file `file` (lists the directory once).
    pub fn start(t: &Target, file: FileId, terms: &LeaseTerms) -> nix::Result<Watch> {
        Watch::start_at(t, t.lock.clone(), file, terms)
    }

    /// Watches the lease `terms` of the holder whose inode `file` is named by `anchor`.
    pub fn start_at(t: &Target, anchor: PathBuf, file: FileId, terms: &LeaseTerms) -> nix::Result<Watch> {
        let token = token::find(&t.dir, &terms.claim)?;
        let since = clock::now();
        Ok(Watch { anchor, file, claim: terms.claim.clone(), lease: Duration::from_millis(terms.ms.into()), token, since })
    }

    /// How long this watch has seen no progress.
    pub fn unchanged_for(&self) -> Duration {
        clock::now().saturating_sub(self.since)
    }

    fn token_is_there(&self, path: &std::path::Path) -> nix::Result<bool> {
        match fsops::id_of(path) {
            Ok(id) => Ok(id == self.file),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn progress(&mut self, token: Found) {
        self.token = token;
        self.since = clock::now();
    }

    /// Looks again. `seen`: the anchor's identity if the caller just read it.
    pub fn look(&mut self, t: &Target, seen: Option<FileId>) -> nix::Result<Verdict> {
        let now_id = match seen {
            Some(id) => Ok(id),
            None => fsops::id_of(&self.anchor),
        };
        match now_id {
            Ok(id) if id == self.file => {}
            Ok(_) | Err(Errno::ENOENT) => return Ok(Verdict::Ended),
            Err(e) => return Err(e),
        }
        match self.token.clone() {
            Found::Live(epoch) => {
                if !self.token_is_there(&token::path(&t.dir, &self.claim, epoch))? {
                    // Renewed (or released, or taken): follow it a few steps, else list.
                    let mut next = None;
                    for step in 1..=3 {
                        if self.token_is_there(&token::path(&t.dir, &self.claim, epoch + step))? {
                            next = Some(Found::Live(epoch + step));
                            break;
                        }
                    }
                    let next = match next {
                        Some(n) => n,
                        None => token::find(&t.dir, &self.claim)?,
                    };
                    self.progress(next);
                }
            }
            Found::Broken(path) => {
                if !self.token_is_there(&path)? {
                    let next = token::find(&t.dir, &self.claim)?;
                    self.progress(next);
                }
            }
            // No token in sight (a stale listing, or files removed by hand): look again,
            // and never count this as a lease gone unrenewed.
            Found::Nothing => {
                let next = token::find(&t.dir, &self.claim)?;
                self.progress(next);
            }
        }
        let waited = self.unchanged_for();
        let needed = self.lease + margin(self.lease);
        if waited < needed {
            return Ok(Verdict::Live(needed - waited));
        }
        Ok(match &self.token {
            Found::Live(epoch) => Verdict::Expired { from: token::path(&t.dir, &self.claim, *epoch), epoch: *epoch },
            Found::Broken(path) => Verdict::Expired { from: path.clone(), epoch: 0 },
            Found::Nothing => Verdict::Live(needed),
        })
    }
}
