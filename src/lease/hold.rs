//! A lease this process holds, and the claims it keeps parked between holds.
//!
//! The hold is shared by the caller's handle and the keep-alive thread; its state lives
//! behind one mutex, taken for each renewal, check and release (never while the
//! keep-alive registry's mutex is wanted: see keepalive.rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;

use crate::clock;
use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::lockfile::token::{self, Moved};
use crate::lockfile::Target;
use crate::process::ChildlessFd;

/// A claim between two holds: its token waits under its next fresh epoch name, so that
/// the next acquisition is one link(2).
#[derive(Debug)]
pub struct Parked {
    pub claim: String,
    pub epoch: u64,
    /// This clock's time just before the rename that gave the token its current name:
    /// a watcher may have seen that name since then (before the release's unlink of the
    /// lock file), so a hold that links it again counts its lease from here.
    pub parked_at: Duration,
    pub file: FileId,
    pub message: Vec<u8>,
    pub lease_ms: u32,
    pub shared: bool,
    /// Whether a link(2) reporting EEXIST is the truth here (no lost replies).
    pub local: bool,
    /// The claim's liveness flock (see lockfile::registry::Claim).
    pub liveness: Arc<ChildlessFd>,
}

impl Parked {
    pub fn token(&self, dir: &Path) -> PathBuf {
        token::path(dir, &self.claim, self.epoch)
    }

    fn matches(&self, message: &[u8], lease_ms: u32, shared: bool) -> bool {
        self.message == message && self.lease_ms == lease_ms && self.shared == shared
    }
}

/// How many parked claims a process keeps (one descriptor each).
const MAX_PARKED: usize = 8;

static PARKED: LazyLock<Mutex<HashMap<PathBuf, Parked>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

pub(super) fn parked() -> MutexGuard<'static, HashMap<PathBuf, Parked>> {
    PARKED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The parked claim for `key` with these terms, if any (taken out while in use).
pub fn unpark(key: &Path, message: &[u8], lease_ms: u32, shared: bool) -> Option<Parked> {
    let mut p = parked();
    if p.get(key).is_some_and(|c| c.matches(message, lease_ms, shared)) {
        return p.remove(key);
    }
    None
}

/// Parks `claim` for `key`; removes the token files of what no longer fits.
pub fn park(dir: &Path, key: &Path, claim: Parked) {
    let mut dropped = Vec::new();
    {
        let mut p = parked();
        if let Some(old) = p.insert(key.to_path_buf(), claim) {
            dropped.push(old.token(dir));
        }
        while p.len() > MAX_PARKED {
            let Some(other) = p.keys().find(|k| k.as_path() != key).cloned() else { break };
            if let Some(old) = p.remove(&other) {
                dropped.push(old.token(other.parent().unwrap_or(Path::new("/"))));
            }
        }
    }
    for path in dropped {
        let _ = fsops::unlink(&path);
    }
}

/// What changes during a hold.
#[derive(Debug)]
pub struct HoldState {
    /// The token's current epoch.
    pub epoch: u64,
    /// This clock's time just before the last successful renewal (or the acquisition)
    /// was sent: the lease runs from there, as far as this holder may assume.
    pub renewed_at: Duration,
    /// When the keep-alive thread renews next.
    pub next_due: Duration,
    /// Why the lease is lost, once this holder learned it.
    pub broken: Option<String>,
    /// Released (or being released): no more renewals.
    pub over: bool,
    /// The fencing token handed out for this hold.
    pub fence: Option<u64>,
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Hold {
    pub target: Target,
    pub claim: String,
    pub file: FileId,
    pub lease: Duration,
    pub keepalive: bool,
    pub message: Vec<u8>,
    pub shared: bool,
    pub local: bool,
    pub liveness: Arc<ChildlessFd>,
    /// For a shared hold: the group (its terms and inode) this claim is a member of.
    pub group: Option<(crate::record::LeaseTerms, FileId)>,
    pub state: Mutex<HoldState>,
}

/// Renewals start after a third of the lease; a failed one is retried this often.
fn retry_after(lease: Duration) -> Duration {
    (lease / 16).clamp(Duration::from_millis(5), Duration::from_millis(250))
}

impl Hold {
    pub fn new(target: Target, parked: Parked, renewed_at: Duration, keepalive: bool) -> Hold {
        let lease = Duration::from_millis(parked.lease_ms.into());
        let state = HoldState { epoch: parked.epoch, renewed_at, next_due: renewed_at + lease / 3, broken: None, over: false, fence: None };
        Hold {
            target,
            claim: parked.claim,
            file: parked.file,
            lease,
            keepalive,
            message: parked.message,
            shared: parked.shared,
            local: parked.local,
            liveness: parked.liveness,
            group: None,
            state: Mutex::new(state),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn broken_error(&self, op: &'static str, why: &str) -> Error {
        self.target.error(Errno::ENOLCK, op, why.to_string())
    }

    /// Moves the token one epoch on. Lost means broken, for good.
    pub fn renew(&self, op: &'static str) -> Result<()> {
        let mut st = self.state();
        self.renew_locked(&mut st, op)
    }

    pub fn renew_locked(&self, st: &mut HoldState, op: &'static str) -> Result<()> {
        if let Some(why) = &st.broken {
            return Err(self.broken_error(op, why));
        }
        if st.over {
            return Err(self.target.error(Errno::ENOLCK, op, "the lease was released"));
        }
        match self.advance(st, op, "") {
            Ok(started) => {
                st.renewed_at = started;
                st.next_due = started + self.lease / 3;
                Ok(())
            }
            Err(e) => {
                if st.broken.is_none() {
                    st.next_due = clock::now() + retry_after(self.lease);
                }
                Err(e)
            }
        }
    }

    /// Moves the token from its current epoch to the next; returns this clock's time
    /// just before the rename was sent. A token that is gone means the lease was broken
    /// (or this shared holder pruned): that is remembered for good, and the error says
    /// why, followed by `context`.
    fn advance(&self, st: &mut HoldState, op: &'static str, context: &str) -> Result<Duration> {
        let t = &self.target;
        let started = clock::now();
        match token::advance(&t.dir, &self.claim, st.epoch, self.file) {
            Ok(Moved::Done) => {
                st.epoch += 1;
                Ok(started)
            }
            Ok(Moved::Lost) => {
                let why = if self.group.is_some() {
                    "this shared holder was pruned (its renewals were overdue past the lease)".to_string()
                } else {
                    super::note::why_broken(&t.lock, &self.claim)
                };
                st.broken = Some(why.clone());
                Err(self.broken_error(op, &format!("{why}{context}")))
            }
            Err(e) => Err(t.sys(e, op, "renaming the lease's token", &token::path(&t.dir, &self.claim, st.epoch))),
        }
    }

    /// 0 while the lease is safely held; ENOLCK once lost; ETIMEDOUT once renewals are
    /// overdue past half the lease (others may break it after a whole lease).
    pub fn check(&self, op: &'static str) -> Result<()> {
        let mut st = self.state();
        // Overdue with keep-alive on (its thread was late, or this process was stopped):
        // one renewal now tells held from broken, instead of a guess.
        let overdue = clock::now().saturating_sub(st.renewed_at) > self.lease / 2;
        if overdue && self.keepalive && st.broken.is_none() && !st.over {
            let _ = self.renew_locked(&mut st, op);
        }
        if let Some(why) = &st.broken {
            return Err(self.broken_error(op, why));
        }
        if st.over {
            return Err(self.target.error(Errno::ENOLCK, op, "the lease was released"));
        }
        let since = clock::now().saturating_sub(st.renewed_at);
        if since > self.lease / 2 {
            let why = format!(
                "the last renewal started {} ms ago, past half the lease of {} ms: others may break it {} ms after it at the earliest",
                since.as_millis(),
                self.lease.as_millis(),
                self.lease.as_millis()
            );
            return Err(self.target.error(Errno::ETIMEDOUT, op, why));
        }
        Ok(())
    }

    /// Ends the hold: the token moves to its next epoch (parked for the next
    /// acquisition), then the lock file goes. Returns the parked claim.
    pub fn release(&self, op: &'static str) -> Result<Parked> {
        if self.group.is_some() {
            return self.release_shared(op);
        }
        let mut st = self.state();
        st.over = true;
        if let Some(why) = &st.broken {
            return Err(self.broken_error(op, why));
        }
        let t = &self.target;
        // On an error the token may or may not have moved: the lock stays, and its lease
        // runs out (the hold is over, nobody renews it). Nothing of anyone else's is touched.
        let mut parked_at = self.advance(&mut st, op, "; nothing was removed")?;
        // The token is parked under a name others may watch: a waiter that sees it stay
        // there for a whole lease, with the lock file still this inode, breaks it (as
        // it may). So the unlink is sent only while less than half a lease has passed
        // since the rename began (as a renewal's self-fence); a release that got there
        // later (paused, a slow server) renews the parked token first, and learns it
        // was broken if it was. A retried unlink checks the name first: a lost reply is
        // never retried onto a lock taken in between. The time check comes last, right
        // before the unlink, so that the gap between them stays as small as it can be.
        let mut sent = false;
        for _ in 0..=16 {
            // After an unlink whose outcome is unknown: the parked token's link count
            // (fresh open) tells whether the lock file still names our inode; a cached
            // lookup of the lock file might not.
            if sent {
                match fsops::still_linked(&token::path(&t.dir, &self.claim, st.epoch), self.file) {
                    Ok(true) => {}
                    Ok(false) => return Ok(self.parked(st.epoch, parked_at)),
                    Err(e) => return Err(t.sys(e, op, "fstat", &t.lock)),
                }
            }
            if clock::now().saturating_sub(parked_at) >= self.lease / 2 {
                parked_at = self.advance(&mut st, op, " (while it was being released); nothing was removed")?;
                continue;
            }
            match nix::unistd::unlink(&t.lock) {
                Ok(()) | Err(Errno::ENOENT) => return Ok(self.parked(st.epoch, parked_at)),
                Err(e) if fsops::is_transient(e) => sent = true,
                Err(e) => return Err(t.sys(e, op, "unlink", &t.lock)),
            }
        }
        Err(t.sys(Errno::EIO, op, "unlink", &t.lock))
    }

    fn parked(&self, epoch: u64, parked_at: Duration) -> Parked {
        Parked {
            claim: self.claim.clone(),
            epoch,
            parked_at,
            file: self.file,
            message: self.message.clone(),
            lease_ms: self.lease.as_millis() as u32,
            shared: self.shared,
            local: self.local,
            liveness: self.liveness.clone(),
        }
    }

    /// Ends a shared hold: the token moves on first (proof this member was not pruned;
    /// after it nobody may prune it for half a lease), then the membership goes under the
    /// group's mutex, and the group with the last member.
    fn release_shared(&self, op: &'static str) -> Result<Parked> {
        let (group, group_file) = self.group.clone().expect("a shared hold");
        let mut st = self.state();
        st.over = true;
        if let Some(why) = &st.broken {
            return Err(self.broken_error(op, why));
        }
        let t = &self.target;
        let parked_at = self.advance(&mut st, op, "; nothing was removed")?;
        super::shared::leave(t, &group, group_file, &self.claim).map_err(|e| t.sys(e, op, "leaving the shared group of", &t.lock))?;
        Ok(self.parked(st.epoch, parked_at))
    }
}
