//! Shared locks (docs/lease-protocol.md, "Shared locks"): the lock file names a group
//! inode; each shared holder is a membership name linking its own claim, whose token it
//! renews like any lease; membership changes happen under the group's mutex (its token,
//! taken by rename); a turnstile (an exclusive lease beside the lock) keeps new readers
//! out while a writer waits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use super::hold::Parked;
use super::watch::{Verdict, Watch};
use super::{Lease, Options};
use crate::error::Result;
use crate::fsops::{self, FileId, LinkProof, Linked};
use crate::host::{self, Identity, Owner};
use crate::lockfile::holder::{self, Holder};
use crate::lockfile::token::{self, Found, Moved};
use crate::lockfile::{self, claim, Target};
use crate::record::{LeaseTerms, Record};

const OP: &str = "lease::acquire";

/// The membership name of `member` in `group`.
pub fn membership(dir: &Path, group: &str, member: &str) -> PathBuf {
    dir.join(format!(".nfslock-{group}.m{member}"))
}

/// The members of `group`: their claim digits and membership names.
pub fn members(dir: &Path, group: &str) -> nix::Result<Vec<(String, PathBuf)>> {
    let prefix = format!(".nfslock-{group}.m");
    let mut found = Vec::new();
    for name in fsops::list(dir)? {
        let Some(hex) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            found.push((hex.to_string(), dir.join(&name)));
        }
    }
    Ok(found)
}

/// The path whose exclusive lease is the turnstile of `key`'s shared lock.
pub fn turnstile_of(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_os_string();
    p.push(".nfs_lock.turnstile");
    p.into()
}

/// The group's mutex, held: its token under our name for it.
pub struct Guard {
    taken: PathBuf,
    epoch: u64,
    group: String,
    file: FileId,
    /// This clock's time before the rename that took it, and the group's lease: a
    /// mutex held past half a lease may have been taken over (see `fresh`).
    taken_at: Duration,
    lease: Duration,
}

/// Takes the mutex of `group` (its inode `file`, named by the lock file). None: the group
/// is gone. A mutex left taken by a process that stopped is taken over once it stayed so
/// for the group's lease, as this process watched it.
pub fn lock_group(t: &Target, group: &LeaseTerms, file: FileId) -> nix::Result<Option<Guard>> {
    let mut watch: Option<Watch> = None;
    let mut backoff = crate::backoff::Backoff::jittered(Duration::from_micros(200), Duration::from_millis(20));
    loop {
        if fsops::id_of(&t.lock).ok() != Some(file) {
            return Ok(None);
        }
        let (from, epoch) = match token::find(&t.dir, &group.claim)? {
            Found::Live(epoch) => (token::path(&t.dir, &group.claim, epoch), epoch),
            Found::Nothing => return Ok(None),
            Found::Broken(path) => {
                let w = match watch.as_mut() {
                    Some(w) => w,
                    None => watch.insert(Watch::start(t, file, group)?),
                };
                match w.look(t, None)? {
                    Verdict::Ended => return Ok(None),
                    Verdict::Live(_) => {
                        std::thread::sleep(backoff.next_delay());
                        continue;
                    }
                    Verdict::Expired { .. } => (path, 0),
                }
            }
        };
        let taken_at = crate::clock::now();
        match token::take(&t.dir, &from, &group.claim, epoch, file)? {
            (Moved::Done, taken) => {
                let lease = Duration::from_millis(group.ms.into());
                return Ok(Some(Guard { taken, epoch, group: group.claim.clone(), file, taken_at, lease }));
            }
            (Moved::Lost, _) => std::thread::sleep(backoff.next_delay()),
        }
    }
}

impl Guard {
    /// Gives the mutex back under the group's next epoch.
    pub fn unlock(self, dir: &Path) -> nix::Result<()> {
        let next = token::path(dir, &self.group, self.epoch + 1);
        fsops::rename_checked(&self.taken, &next, self.file).map(|_| ())
    }

    /// Whether the mutex is surely still ours: taken less than half a lease ago, or taken
    /// again now under a fresh name (false: another process took it over).
    fn fresh(&mut self, dir: &Path) -> nix::Result<bool> {
        if crate::clock::now().saturating_sub(self.taken_at) < self.lease / 2 {
            return Ok(true);
        }
        let again = crate::clock::now();
        match token::take(dir, &self.taken, &self.group, self.epoch, self.file)? {
            (Moved::Done, taken) => {
                self.taken = taken;
                self.taken_at = again;
                Ok(true)
            }
            (Moved::Lost, _) => Ok(false),
        }
    }

    /// Ends the group (no member left): removes the lock file, then the mutex. The lock
    /// file's unlink is sent only while the mutex is surely ours (as a release's is).
    pub fn dissolve(mut self, t: &Target) -> nix::Result<()> {
        if !self.fresh(&t.dir)? {
            return Ok(());
        }
        if fsops::still_linked(&self.taken, self.file)? {
            match nix::unistd::unlink(&t.lock) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        fsops::unlink(&self.taken)
    }

    /// Removes `member`'s membership and, if it was the last, the group; else gives the
    /// mutex back.
    pub fn leave(self, t: &Target, member: &str) -> nix::Result<()> {
        fsops::unlink(&membership(&t.dir, &self.group, member))?;
        if members(&t.dir, &self.group)?.is_empty() {
            self.dissolve(t)
        } else {
            self.unlock(&t.dir)
        }
    }
}

/// Leaves the group `group` (inode `file`) as `member`: under its mutex, the membership
/// goes, and the group with its last member.
pub fn leave(t: &Target, group: &LeaseTerms, file: FileId, member: &str) -> nix::Result<()> {
    match lock_group(t, group, file)? {
        Some(guard) => guard.leave(t, member),
        // The group is gone (broken by an operator): so is our membership.
        None => fsops::unlink(&membership(&t.dir, &group.claim, member)),
    }
}

/// Joins the shared group on `t` with our parked claim `p`, or makes one. Called with
/// the turnstile held. Err(EAGAIN): held exclusively (the caller waits).
pub fn join(t: &Target, o: &Options, me: &Identity, p: &Parked) -> Result<(String, FileId)> {
    let token = p.token(&t.dir);
    let sys = |e, call| t.sys(e, OP, call, &t.lock);
    for _ in 0..4 {
        match lockfile::read_holder(t, OP)? {
            Holder::Free => {
                let (group, file) = new_group(t, o, me)?;
                let mine = membership(&t.dir, &group, &p.claim);
                fsops::link_private(&token, &mine, p.file).map_err(|e| sys(e, "joining"))?;
                let first = token::path(&t.dir, &group, 1);
                match fsops::link_checked(&first, &t.lock, file, LinkProof { only_link: true, local: p.local, by_name: false }) {
                    Ok(Linked::Ours) => return Ok((group, file)),
                    other => {
                        let _ = fsops::unlink(&mine);
                        let _ = fsops::unlink(&first);
                        if let Err(e) = other {
                            return Err(sys(e, "link"));
                        }
                    }
                }
            }
            Holder::Held { record, file } if record.lease.as_ref().is_some_and(|l| l.shared) => {
                let group = record.lease.expect("checked above");
                let Some(guard) = lock_group(t, &group, file).map_err(|e| sys(e, "taking the group's mutex of"))? else { continue };
                let mine = membership(&t.dir, &group.claim, &p.claim);
                let joined = fsops::link_private(&token, &mine, p.file);
                guard.unlock(&t.dir).map_err(|e| sys(e, "giving back the group's mutex of"))?;
                joined.map_err(|e| sys(e, "joining"))?;
                return Ok((group.claim, file));
            }
            Holder::Held { record, .. } => {
                return Err(t.error(Errno::EAGAIN, OP, format!("{} (exclusively)", lockfile::describe(&record))))
            }
            Holder::Unwritten { .. } => return Err(t.error(Errno::EAGAIN, OP, "the lock file holds no record yet")),
        }
    }
    Err(t.error(Errno::EAGAIN, OP, "the lock changed hands repeatedly while it was being joined"))
}

/// Makes a group inode: a claim whose record says shared, under its epoch-1 token name
/// (its mutex, free).
fn new_group(t: &Target, o: &Options, me: &Identity) -> Result<(String, FileId)> {
    let ms = o.lease.as_millis() as u32;
    let record_for =
        |claim: &str| Record { lease: Some(LeaseTerms { ms, claim: claim.to_string(), shared: true }), ..me.record(&o.message) }.to_bytes();
    let c = claim::create_with(&t.dir, &record_for, &o.message).map_err(|e| t.sys(e, OP, "creating a group file in", &t.dir))?;
    let hex = claim::hex_of(&c.path).to_string();
    match fsops::rename_checked(&c.path, &token::path(&t.dir, &hex, 1), c.id) {
        Ok(true) => Ok((hex, c.id)),
        Ok(false) => Err(t.error(Errno::EAGAIN, OP, "the new group file was removed meanwhile")),
        Err(e) => {
            let _ = fsops::unlink(&c.path);
            Err(t.sys(e, OP, "rename", &c.path))
        }
    }
}

/// What an exclusive acquirer keeps while a shared group holds the lock.
#[derive(Default)]
pub struct Waiting {
    /// The turnstile, held until this acquirer has the lock (new readers wait).
    pub turnstile: Option<Lease>,
    /// The members being watched, by claim digits.
    watches: HashMap<String, Watch>,
}

/// An exclusive acquirer's look at the shared group `group` (inode `file`) holding `t`
/// (the caller takes the turnstile first): prunes members that are dead or let their lease expire, and
/// removes a group left without members. EAGAIN while live members remain.
pub fn wait_for_group(t: &Target, me: &Identity, group: &LeaseTerms, file: FileId, w: &mut Waiting) -> Result<()> {
    let sys = |e, call| t.sys(e, OP, call, &t.lock);
    let present = members(&t.dir, &group.claim).map_err(|e| sys(e, "listing the members of"))?;
    w.watches.retain(|hex, _| present.iter().any(|(h, _)| h == hex));
    let mut live = 0;
    for (hex, name) in &present {
        match judge_member(t, me, hex, name, w).map_err(|e| sys(e, "watching a shared holder of"))? {
            Judged::Expired { from, epoch, member_file } => {
                prune(t, group, file, hex, &from, epoch, member_file).map_err(|e| sys(e, "pruning a shared holder of"))?
            }
            Judged::Orphan { member_file } => {
                prune_orphan(t, group, file, hex, member_file).map_err(|e| sys(e, "pruning a shared holder of"))?
            }
            Judged::Live => live += 1,
        }
    }
    if live == 0 && members(&t.dir, &group.claim).map_err(|e| sys(e, "listing the members of"))?.is_empty() {
        // A group without members (its last holder died while leaving): end it.
        if let Some(guard) = lock_group(t, group, file).map_err(|e| sys(e, "taking the group's mutex of"))? {
            if members(&t.dir, &group.claim).map_err(|e| sys(e, "listing the members of"))?.is_empty() {
                guard.dissolve(t).map_err(|e| sys(e, "removing the empty group of"))?;
            } else {
                guard.unlock(&t.dir).map_err(|e| sys(e, "giving back the group's mutex of"))?;
            }
        }
    }
    Err(t.error(Errno::EAGAIN, OP, format!("shared by {live} holders")))
}

/// What an exclusive acquirer makes of one member of a shared group.
enum Judged {
    /// Renewing (or not judged yet): the acquirer waits.
    Live,
    /// Its lease expired or its process died: prune it through its token.
    Expired { from: PathBuf, epoch: u64, member_file: FileId },
    /// A membership name whose token is gone: a member that left (or was pruned, or its
    /// process exited) without its membership name going too, say because an error ended
    /// its leave half way. A live member always has a token (it joins with a parked
    /// claim's token and leaves before it drops it), so this one holds nothing.
    Orphan { member_file: FileId },
}

/// Whether member `hex` (named `name`) may be pruned.
fn judge_member(t: &Target, me: &Identity, hex: &str, name: &Path, w: &mut Waiting) -> nix::Result<Judged> {
    let (record, member_file) = match holder::read(name, name) {
        Ok(Holder::Held { record, file }) => (record, file),
        _ => return Ok(Judged::Live),
    };
    let Some(terms) = record.lease.clone().filter(|l| l.claim == hex) else { return Ok(Judged::Live) };
    let found = token::find(&t.dir, hex)?;
    if found == Found::Nothing && orphaned(name, member_file)? {
        return Ok(Judged::Orphan { member_file });
    }
    if host::owner_of(&record, &me.host) == Owner::Dead {
        if let Found::Live(epoch) = found {
            // Its liveness flock must be free too: a live process of this host keeps it.
            let fd = fsops::open_for_flock(name)?;
            if fsops::try_flock_exclusive(&fd).is_ok() {
                return Ok(Judged::Expired { from: token::path(&t.dir, hex, epoch), epoch, member_file });
            }
        }
        return Ok(Judged::Live);
    }
    if w.watches.get(hex).is_none_or(|watch| watch.file != member_file) {
        let watch = Watch::start_at(t, name.to_path_buf(), member_file, &terms)?;
        w.watches.insert(hex.to_string(), watch);
    }
    let watch = w.watches.get_mut(hex).expect("inserted above");
    Ok(match watch.look(t, None)? {
        Verdict::Expired { from, epoch } => Judged::Expired { from, epoch, member_file },
        Verdict::Live(_) | Verdict::Ended => Judged::Live,
    })
}

/// Whether the membership name `name` is the last name of the member's inode
/// `member_file`: its token, a second link of the same inode, is gone. The link count
/// comes from a fresh open, so it does not rest on the directory listing alone.
fn orphaned(name: &Path, member_file: FileId) -> nix::Result<bool> {
    Ok(!fsops::still_linked(name, member_file)? && fsops::id_of(name).ok() == Some(member_file))
}

/// Removes the orphaned membership `hex` (the inode `member_file`) under the group's
/// mutex, once that mutex shows its token still gone; the last member ends the group.
fn prune_orphan(t: &Target, group: &LeaseTerms, file: FileId, hex: &str, member_file: FileId) -> nix::Result<()> {
    let Some(guard) = lock_group(t, group, file)? else { return Ok(()) };
    let name = membership(&t.dir, &group.claim, hex);
    let still = token::find(&t.dir, hex)? == Found::Nothing && orphaned(&name, member_file)?;
    if still {
        guard.leave(t, hex)
    } else {
        guard.unlock(&t.dir)
    }
}

/// Removes member `hex` under the group's mutex, taking its token first (its next
/// renewal then fails: ENOLCK); the last member's removal ends the group.
fn prune(t: &Target, group: &LeaseTerms, file: FileId, hex: &str, from: &Path, epoch: u64, member_file: FileId) -> nix::Result<()> {
    let Some(guard) = lock_group(t, group, file)? else { return Ok(()) };
    match token::take(&t.dir, from, hex, epoch, member_file)? {
        (Moved::Done, taken) => {
            let _ = fsops::unlink(&taken);
            guard.leave(t, hex)
        }
        (Moved::Lost, _) => guard.unlock(&t.dir),
    }
}

/// Removes every member and the group (an operator's break).
pub fn break_group(t: &Target, group: &LeaseTerms, file: FileId) -> Result<()> {
    let sys = |e, call| t.sys(e, "lease::break_lock", call, &t.lock);
    let Some(guard) = lock_group(t, group, file).map_err(|e| sys(e, "taking the group's mutex of"))? else { return Ok(()) };
    for (hex, name) in members(&t.dir, &group.claim).map_err(|e| sys(e, "listing the members of"))? {
        if let (Ok(member_file), Ok(Found::Live(epoch))) = (fsops::id_of(&name), token::find(&t.dir, &hex)) {
            if let Ok((Moved::Done, taken)) = token::take(&t.dir, &token::path(&t.dir, &hex, epoch), &hex, epoch, member_file) {
                let _ = fsops::unlink(&taken);
            }
        }
        let _ = fsops::unlink(&name);
    }
    guard.dissolve(t).map_err(|e| sys(e, "removing the group of"))
}

/// How many members the group `group` has (for inspect).
pub fn count(dir: &Path, group: &str) -> u32 {
    members(dir, group).map_or(0, |m| m.len() as u32)
}
