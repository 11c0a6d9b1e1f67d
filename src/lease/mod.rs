//! Leases on lock files: a lock whose holder renews it, so that a crashed holder's lock is
//! recovered by others, on any host, without comparing clocks. The protocol, its files
//! and why it is safe: docs/lease-protocol.md.
//!
//! A lease is `P.nfs_lock` like any lock, holding the holder's record plus its terms;
//! its holder keeps the token `.nfslock-<claim>.<epoch>` moving (one rename(2) every
//! third of the lease, from a library thread unless keep-alive is off). A waiter that
//! sees the token stay in place for the whole lease, on its own clock, takes the token
//! (one rename(2) that only one process can win) and removes the lock. Plain locks are
//! untouched by all of this.

mod hold;
mod keepalive;
mod note;
mod shared;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::clock;
use crate::error::{Error, Result};
use crate::fsops::{self, FileId};
use crate::host::{self, Identity, Owner};
use crate::lockfile::holder::{Cleared, Holder};
use crate::lockfile::registry::{self, state};
use crate::lockfile::{self, claim, token, wait, Target};
use crate::process;
use crate::record::{LeaseTerms, Record, MAX_RECORD_LEN};
use hold::{Hold, Parked};
use watch::{Verdict, Watch};

pub use watch::margin;

/// The shortest lease: renewals every third of it must fit in the scheduling and I/O
/// delays of a loaded machine.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// The longest lease (a day): a crashed holder's lock is recovered within this.
pub const MAX_LEASE: Duration = Duration::from_secs(86_400);

const OP_ACQUIRE: &str = "lease::acquire";
const OP_RENEW: &str = "Lease::renew";
const OP_IS_HELD: &str = "Lease::is_held";
const OP_FENCE: &str = "Lease::fencing_token";
const OP_UNLOCK: &str = "Lease::unlock";
const OP_BREAK: &str = "lease::break_lock";
const OP_INSPECT: &str = "lease::inspect";

/// How a lock is taken.
///
/// ```
/// use std::time::Duration;
/// use nfslock::lease::Options;
///
/// let o = Options { message: b"nightly".to_vec(), lease: Duration::from_secs(10), ..Options::default() };
/// assert!(o.keepalive && !o.shared);
/// assert_eq!(format!("{o:?}"), r#"Options { message: "nightly", lease: 10s, keepalive: true, shared: false }"#);
/// assert_eq!(Options { lease: Duration::from_millis(5), ..o }.check("example").unwrap_err().errno(), nfslock::Errno::EINVAL);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Options {
    /// The message in the lock's record.
    pub message: Vec<u8>,
    /// The lease; zero: a plain lock, never broken across hosts.
    pub lease: Duration,
    /// Renewed from a library thread (default); off: the holder calls [`Lease::renew`].
    pub keepalive: bool,
    /// A shared (reader) lock instead of an exclusive one: shared by processes (on any
    /// host); within one process a lock has one holder at a time, as a plain lock does,
    /// so a second thread asking waits (share the one [`Lease`] between threads instead).
    pub shared: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { message: Vec::new(), lease: Duration::ZERO, keepalive: true, shared: false }
    }
}

/// The message as text, not bytes.
impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("message", &String::from_utf8_lossy(&self.message))
            .field("lease", &self.lease)
            .field("keepalive", &self.keepalive)
            .field("shared", &self.shared)
            .finish()
    }
}

impl Options {
    /// EINVAL unless the lease is zero or within [`MIN_LEASE`]..=[`MAX_LEASE`].
    pub fn check(&self, op: &'static str) -> Result<()> {
        if !self.lease.is_zero() && !(MIN_LEASE..=MAX_LEASE).contains(&self.lease) {
            let why = format!(
                "a lease of {} ms is outside {}..={} ms (0: a plain lock)",
                self.lease.as_millis(),
                MIN_LEASE.as_millis(),
                MAX_LEASE.as_millis()
            );
            return Err(Error::new(Errno::EINVAL, op, None, why));
        }
        Ok(())
    }
}

/// A lease this process holds. Dropping it releases it (ignoring errors).
pub struct Lease {
    hold: Arc<Hold>,
    /// The path's reservation in the lock-file registry (threads, EDEADLK).
    reservation: u64,
    generation: u64,
    held: bool,
}

/// What a person needs: `Lease { path: "/shared/queue", lease: 10s, shared: false, keepalive: true }`.
impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("path", &self.hold.target.key)
            .field("lease", &self.hold.lease)
            .field("shared", &self.hold.shared)
            .field("keepalive", &self.hold.keepalive)
            .finish()
    }
}

impl Lease {
    /// The locked path `P` (absolute).
    pub fn path(&self) -> &Path {
        &self.hold.target.key
    }

    /// The lease's length.
    pub fn lease(&self) -> Duration {
        self.hold.lease
    }

    fn own(&self, op: &'static str) -> Result<()> {
        if process::fork_generation() != self.generation {
            return Err(self.hold.target.error(Errno::EPERM, op, "the handle was inherited through fork; a child holds nothing"));
        }
        Ok(())
    }

    /// Renews the lease now (what the keep-alive thread does every third of the lease).
    /// ENOLCK: it was broken (final); other errors leave it to be retried.
    pub fn renew(&self) -> Result<()> {
        self.own(OP_RENEW)?;
        self.hold.renew(OP_RENEW)
    }

    /// Ok while safely held. ETIMEDOUT: renewals are overdue past half the lease (stop
    /// writing: others may break it after a whole lease); ENOLCK: lost, for good.
    pub fn is_held(&self) -> Result<()> {
        self.own(OP_IS_HELD)?;
        if !state().holds(&self.hold.target.key, self.reservation) {
            return Err(self.hold.target.error(Errno::ENOLCK, OP_IS_HELD, "the lock was removed with unlock_path or break"));
        }
        self.hold.check(OP_IS_HELD)
    }

    /// This hold's fencing token: greater than every token handed out for any earlier
    /// acquisition of this path. Allocated durably on the first call of a hold (one
    /// write and fdatasync), then proven still held by a renewal; ENOLCK if it was not.
    pub fn fencing_token(&self) -> Result<u64> {
        self.own(OP_FENCE)?;
        let h = &self.hold;
        let mut st = h.state();
        if let Some(token) = st.fence {
            return Ok(token);
        }
        let token = crate::fence::grow(&h.target.lock)
            .map_err(|e| h.target.sys(e, OP_FENCE, "growing the fencing counter", &crate::fence::counter_path(&h.target.lock)))?;
        h.renew_locked(&mut st, OP_FENCE)?;
        st.fence = Some(token);
        Ok(token)
    }

    /// Releases the lease. ENOLCK: it was broken or removed meanwhile (nothing is
    /// removed); EPERM: the handle was inherited through fork.
    pub fn unlock(mut self) -> Result<()> {
        self.held = false;
        self.release(OP_UNLOCK)
    }

    fn release(&self, op: &'static str) -> Result<()> {
        self.own(op)?;
        let t = &self.hold.target;
        if !state().begin_release(&t.key, self.reservation) {
            keepalive::deregister(&self.hold);
            return Err(t.error(Errno::ENOLCK, op, "the lock was removed with unlock_path or break, or is being released"));
        }
        keepalive::deregister(&self.hold);
        let released = self.hold.release(op);
        registry::end_hold(&t.key, self.reservation);
        let parked = released?;
        hold::park(&t.dir, &t.key, parked);
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.held && process::fork_generation() == self.generation {
            let _ = self.release(OP_UNLOCK);
        }
    }
}

/// Takes a lease on `path`, waiting up to `timeout` (None: forever; zero: one attempt,
/// EAGAIN). A lease whose holder stopped renewing is broken once this call has watched
/// it unrenewed for the lease plus [`margin`]; a dead holder of this host at once.
pub fn acquire(path: impl AsRef<Path>, options: &Options, timeout: Option<Duration>) -> Result<Lease> {
    options.check(OP_ACQUIRE)?;
    if options.lease.is_zero() {
        return Err(Error::new(
            Errno::EINVAL,
            OP_ACQUIRE,
            Some(path.as_ref()),
            "a lease of 0 ms is a plain lock: use lockfile::blocking_create",
        ));
    }
    let t = Target::new(OP_ACQUIRE, path.as_ref())?;
    let mut waiter = wait::Waiter::new(&t, OP_ACQUIRE, timeout);
    let mut seen = Seen::default();
    loop {
        let err = match attempt(&t, options, &mut seen) {
            Ok(lease) => return Ok(lease),
            Err(e) => waiter.retryable(e)?,
        };
        // Watching a lease: look often enough to see every renewal.
        let cap = seen.watch.as_ref().map_or(Duration::MAX, |w| watch::poll_interval(w.lease));
        waiter.wait(&err, cap)?;
    }
}

/// What one acquire call has seen of the current holder, across its attempts.
#[derive(Default)]
struct Seen {
    watch: Option<Watch>,
    /// An exclusive acquirer waiting for a shared group: its turnstile and member watches.
    waiting: shared::Waiting,
    /// What this call has seen of the turnstile's holder (a writer waiting, or a reader
    /// passing through), across its attempts: an expired one is broken like any lease.
    turnstile: Option<Box<Seen>>,
}

/// One attempt at the turnstile of `t`'s shared lock (an exclusive lease of its own):
/// None while someone else holds it.
fn try_turnstile(t: &Target, lease: Duration, seen: &mut Seen) -> Result<Option<Lease>> {
    let tt = Target::new(OP_ACQUIRE, &shared::turnstile_of(&t.key))?;
    let options = Options { message: b"turnstile".to_vec(), lease, keepalive: true, shared: false };
    match attempt(&tt, &options, seen.turnstile.get_or_insert_with(Default::default)) {
        Ok(l) => {
            seen.turnstile = None;
            Ok(Some(l))
        }
        Err(e) if e.sys_errno() == Errno::EAGAIN => Ok(None),
        Err(e) => Err(e),
    }
}

/// A shared hold: through the turnstile, joins the group holding the lock or makes one.
fn take_shared(t: &Target, o: &Options, me: &Identity, seen: &mut Seen) -> Result<Hold> {
    let Some(turnstile) = try_turnstile(t, o.lease, seen)? else {
        return Err(t.error(Errno::EAGAIN, OP_ACQUIRE, "a writer is waiting for the lock (the turnstile is held)"));
    };
    let lease_ms = o.lease.as_millis() as u32;
    let p = match hold::unpark(&t.key, &o.message, lease_ms, true) {
        Some(p) => p,
        None => new_claim(t, o, me)?,
    };
    // A parked token's name may have been seen by a watcher of an earlier membership:
    // the hold counts its lease from the parking (see `take`), renewed now if that was long ago.
    let mut p = p;
    if clock::now().saturating_sub(p.parked_at) > o.lease / 6 {
        let started = clock::now();
        match token::advance(&t.dir, &p.claim, p.epoch, p.file) {
            Ok(token::Moved::Done) => {
                p.epoch += 1;
                p.parked_at = started;
            }
            Ok(token::Moved::Lost) => {
                let _ = turnstile.unlock();
                return Err(t.error(Errno::EAGAIN, OP_ACQUIRE, "the parked claim was taken; a fresh one next time"));
            }
            Err(e) => {
                let _ = turnstile.unlock();
                return Err(t.sys(e, OP_ACQUIRE, "renaming the parked token", &p.token(&t.dir)));
            }
        }
    }
    let renewed_at = p.parked_at;
    let joined = shared::join(t, o, me, &p);
    let _ = turnstile.unlock();
    match joined {
        Ok((group, group_file)) => {
            let terms = LeaseTerms { ms: lease_ms, claim: group, shared: true };
            let mut h = Hold::new(t.clone(), p, renewed_at, o.keepalive);
            h.group = Some((terms, group_file));
            Ok(h)
        }
        Err(e) => {
            hold::park(&t.dir, &t.key, p);
            if e.sys_errno() != Errno::EAGAIN {
                return Err(e);
            }
            // Held exclusively: judge its holder (a dead or expired one is broken).
            match judge(t, me, fsops::id_of(&t.lock).ok(), seen)? {
                Next::Again => Err(t.error(Errno::EAGAIN, OP_ACQUIRE, "the exclusive holder was cleared; trying again")),
                Next::Wait(e) => Err(e),
            }
        }
    }
}

fn attempt(t: &Target, options: &Options, seen: &mut Seen) -> Result<Lease> {
    let me = process::this_process();
    let generation = process::fork_generation();
    let reservation = state().reserve(&t.key, &t.lock, false).map_err(|b| lockfile::busy_error(t, OP_ACQUIRE, b, None))?;
    let taken = if options.shared { take_shared(t, options, &me, seen) } else { take(t, options, &me, seen) };
    match taken {
        Ok(hold) => {
            // The lock file's inode: the group's for a shared hold (EDEADLK by any spelling).
            state().confirm(&t.key, reservation, hold.group.as_ref().map_or(hold.file, |(_, g)| *g));
            let hold = Arc::new(hold);
            if let Err(e) = keepalive::register(&hold) {
                let lease = Lease { hold, reservation, generation, held: false };
                let _ = lease.release(OP_ACQUIRE);
                return Err(t.error(Errno::EAGAIN, OP_ACQUIRE, format!("could not start the keep-alive thread: {e}")));
            }
            Ok(Lease { hold, reservation, generation, held: true })
        }
        Err(e) => {
            registry::end_hold(&t.key, reservation);
            Err(e)
        }
    }
}

/// Links a parked claim's token to `P.nfs_lock`, breaking a dead or expired lease on the way.
fn take(t: &Target, o: &Options, me: &Identity, seen_by_call: &mut Seen) -> Result<Hold> {
    let lease_ms = o.lease.as_millis() as u32;
    let mut parked = hold::unpark(&t.key, &o.message, lease_ms, o.shared);
    for _ in 0..4 {
        let mut p = match parked.take() {
            Some(p) => p,
            None => new_claim(t, o, me)?,
        };
        // A watcher may have seen the parked name while the lock file still named this
        // inode (between the release's rename and its unlink), and would count a lease
        // from then: the hold's lease runs from the parking, and a claim parked for a
        // while is moved to a fresh name first (one rename), so that such a watcher sees
        // progress before the hold begins.
        if clock::now().saturating_sub(p.parked_at) > o.lease / 6 {
            let started = clock::now();
            match token::advance(&t.dir, &p.claim, p.epoch, p.file) {
                Ok(token::Moved::Done) => {
                    p.epoch += 1;
                    p.parked_at = started;
                }
                // Taken (a sweep, a breaker of an earlier hold): a fresh claim.
                Ok(token::Moved::Lost) => continue,
                Err(e) => {
                    let at = p.token(&t.dir);
                    hold::park(&t.dir, &t.key, p);
                    return Err(t.sys(e, OP_ACQUIRE, "renaming the parked token", &at));
                }
            }
        }
        let token_path = p.token(&t.dir);
        let renewed_at = p.parked_at;
        // The token is linked nowhere but to the lock file.
        let proof = fsops::LinkProof { only_link: true, local: p.local, by_name: false };
        match fsops::link_checked(&token_path, &t.lock, p.file, proof) {
            Ok(fsops::Linked::Ours) => return Ok(Hold::new(t.clone(), p, renewed_at, o.keepalive)),
            Err(Errno::ENOENT) if !t.dir.exists() => return Err(t.sys(Errno::ENOENT, OP_ACQUIRE, "link", &t.lock)),
            // Our parked token was removed (a sweep, a breaker of an earlier hold):
            // start over with a fresh claim.
            Err(Errno::ENOENT) => continue,
            Ok(fsops::Linked::Taken { seen, .. }) => {
                hold::park(&t.dir, &t.key, p);
                match judge(t, me, seen.ok(), seen_by_call)? {
                    Next::Again => parked = hold::unpark(&t.key, &o.message, lease_ms, o.shared),
                    Next::Wait(e) => return Err(e),
                }
            }
            Err(e) => {
                hold::park(&t.dir, &t.key, p);
                return Err(t.sys(e, OP_ACQUIRE, "link", &t.lock));
            }
        }
    }
    Err(t.error(Errno::EAGAIN, OP_ACQUIRE, "the lock changed hands repeatedly while it was being examined"))
}

enum Next {
    /// The lock changed (freed, cleared, broken): try to take it now.
    Again,
    /// Held: wait (the error says by whom).
    Wait(Error),
}

/// Judges the holder of a lock we could not take.
fn judge(t: &Target, me: &Identity, now: Option<FileId>, seen: &mut Seen) -> Result<Next> {
    if let Some(file) = now {
        if let Some((key, busy)) = state().holder_of_file(file) {
            return Err(lockfile::busy_error(t, OP_ACQUIRE, busy, Some(&key)));
        }
        // The lease this call is watching: look at its token, not its record again.
        if let Some(w) = seen.watch.as_mut().filter(|w| w.file == file) {
            let verdict = w.look(t, Some(file)).map_err(|e| t.sys(e, OP_ACQUIRE, "watching", &t.lock))?;
            return act(t, verdict, seen);
        }
    }
    seen.watch = None;
    let (record, file) = match lockfile::read_holder(t, OP_ACQUIRE)? {
        Holder::Free => return Ok(Next::Again),
        Holder::Unwritten { .. } => return Ok(Next::Wait(t.error(Errno::EAGAIN, OP_ACQUIRE, "the lock file holds no record yet"))),
        Holder::Held { record, file } => (record, file),
    };
    // A shared group's record names its creator, who may have left it long ago.
    if me.wrote(&record) && !record.lease.as_ref().is_some_and(|l| l.shared) {
        return Ok(Next::Wait(t.error(Errno::EAGAIN, OP_ACQUIRE, "held by this process through another handle")));
    }
    let owner = host::owner_of(&record, &me.host);
    let Some(terms) = record.lease.clone() else {
        // A plain lock: as lockfile does (a dead holder of this host is cleared; others wait).
        return match owner {
            Owner::Dead => match lockfile::clear_dead(t, file, &record) {
                Ok(Cleared::Gone) => Ok(Next::Again),
                Ok(Cleared::Busy) => {
                    Ok(Next::Wait(t.error(Errno::EAGAIN, OP_ACQUIRE, format!("{}; being cleared", lockfile::describe(&record)))))
                }
                Err(e) => Err(t.sys(e, OP_ACQUIRE, "clearing the dead holder's lock", &t.lock)),
            },
            Owner::Alive | Owner::OtherHost => Ok(Next::Wait(t.error(Errno::EAGAIN, OP_ACQUIRE, lockfile::describe(&record)))),
        };
    };
    if terms.shared {
        // A shared group: wait for its members to leave (pruning dead ones), keeping new
        // readers out with the turnstile meanwhile.
        if seen.waiting.turnstile.is_none() {
            seen.waiting.turnstile = try_turnstile(t, Duration::from_millis(terms.ms.into()), seen)?;
        }
        return match shared::wait_for_group(t, me, &terms, file, &mut seen.waiting) {
            Ok(()) => Ok(Next::Again),
            Err(e) if e.sys_errno() == Errno::EAGAIN => Ok(Next::Wait(e)),
            Err(e) => Err(e),
        };
    }
    if owner == Owner::Dead {
        match lockfile::clear_dead(t, file, &record) {
            Ok(Cleared::Gone) => {
                claim::sweep_orphans(&t.dir, &me.host);
                return Ok(Next::Again);
            }
            // Its token is elsewhere (another breaker has it): watch like any lease.
            Ok(Cleared::Busy) => {}
            Err(e) => return Err(t.sys(e, OP_ACQUIRE, "clearing the dead holder's lease", &t.lock)),
        }
    }
    let mut w = Watch::start(t, file, &terms).map_err(|e| t.sys(e, OP_ACQUIRE, "listing the directory of", &t.lock))?;
    let verdict = w.look(t, Some(file)).map_err(|e| t.sys(e, OP_ACQUIRE, "watching", &t.lock))?;
    seen.watch = Some(w);
    act(t, verdict, seen)
}

fn act(t: &Target, verdict: Verdict, seen: &mut Seen) -> Result<Next> {
    match verdict {
        Verdict::Ended => {
            seen.watch = None;
            Ok(Next::Again)
        }
        Verdict::Live(left) => {
            let why = format!("held under a lease, renewed in time so far (it may expire in {} ms at the earliest)", left.as_millis());
            Ok(Next::Wait(t.error(Errno::EAGAIN, OP_ACQUIRE, why)))
        }
        Verdict::Expired { from, epoch } => {
            let w = seen.watch.take().expect("a verdict comes from a watch");
            let claim = claim_of(&from);
            match token::break_hold(&t.dir, &t.lock, &from, &claim, epoch, w.file) {
                Ok(token::Broke::Removed) => {
                    let waited = w.unchanged_for().as_millis();
                    note::write(
                        &t.lock,
                        &claim,
                        &format!("broken by pid {} on {}: not renewed for {waited} ms", std::process::id(), host_name()),
                    );
                    Ok(Next::Again)
                }
                Ok(token::Broke::Lost) => {
                    Ok(Next::Wait(t.error(Errno::EAGAIN, OP_ACQUIRE, "the lease moved just before it could be broken")))
                }
                Err(e) => Err(t.sys(e, OP_ACQUIRE, "breaking the expired lease of", &t.lock)),
            }
        }
    }
}

/// The claim digits in a token's name (`.nfslock-<claim>.<epoch>[.x<random>]`).
fn claim_of(token: &Path) -> String {
    let name = token.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_prefix(".nfslock-").and_then(|r| r.get(..16)).unwrap_or_default().to_string()
}

fn host_name() -> String {
    String::from_utf8_lossy(&process::this_process().host).into_owned()
}

fn new_claim(t: &Target, o: &Options, me: &Identity) -> Result<Parked> {
    let lease_ms = o.lease.as_millis() as u32;
    let record_for = |claim: &str| {
        let terms = LeaseTerms { ms: lease_ms, claim: claim.to_string(), shared: o.shared };
        Record { lease: Some(terms), ..me.record(&o.message) }.to_bytes()
    };
    let size = record_for("0000000000000000").len();
    if size > MAX_RECORD_LEN {
        let why =
            format!("the record would be {size} bytes (message {} bytes); a record is at most {MAX_RECORD_LEN} bytes", o.message.len());
        return Err(t.error(Errno::EMSGSIZE, OP_ACQUIRE, why));
    }
    if state().first_claim_in(&t.dir) {
        claim::sweep_orphans(&t.dir, &me.host);
    }
    let c = claim::create_with(&t.dir, &record_for, &o.message).map_err(|e| t.sys(e, OP_ACQUIRE, "creating a claim file in", &t.dir))?;
    let hex = claim::hex_of(&c.path).to_string();
    let first = token::path(&t.dir, &hex, 1);
    let parked_at = clock::now();
    // The claim becomes its first token; a lost reply of this rename shows our inode there.
    match fsops::rename_checked(&c.path, &first, c.id) {
        Ok(true) => {}
        // A sweep took the fresh claim (it had no token name yet): the caller tries again.
        Ok(false) => return Err(t.error(Errno::EAGAIN, OP_ACQUIRE, format!("{} was removed while it became a token", c.path.display()))),
        Err(e) => {
            let _ = fsops::unlink(&c.path);
            return Err(t.sys(e, OP_ACQUIRE, "rename", &c.path));
        }
    }
    Ok(Parked {
        claim: hex,
        epoch: 1,
        parked_at,
        file: c.id,
        message: o.message.clone(),
        lease_ms,
        shared: o.shared,
        local: c.local,
        liveness: c.liveness,
    })
}

/// Removes the lock on `path`, whoever holds it, without ever removing a lock taken
/// after the one it saw: a lease by taking its token (its holder learns ENOLCK), a plain
/// lock by renaming it away and checking it is the file seen. `reason` is left in a note
/// (`P.nfs_lock.broken`) that the broken holder's error quotes. ENOENT: not locked;
/// EAGAIN: it changed hands meanwhile (look again).
pub fn break_lock(path: impl AsRef<Path>, reason: &str) -> Result<()> {
    let t = Target::new(OP_BREAK, path.as_ref())?;
    let (record, file) = match lockfile::read_holder(&t, OP_BREAK)? {
        Holder::Free => return Err(t.error(Errno::ENOENT, OP_BREAK, "not locked")),
        Holder::Unwritten { file } => (None, file),
        Holder::Held { record, file } => (Some(record), file),
    };
    let by = format!("broken by an operator (pid {} on {}): {reason}", std::process::id(), host_name());
    match record.as_ref().and_then(|r| r.lease.as_ref()) {
        Some(terms) if terms.shared => shared::break_group(&t, terms, file),
        Some(terms) => {
            lockfile::break_leased(&t, OP_BREAK, file, terms)?;
            note::write(&t.lock, &terms.claim, &by);
            Ok(())
        }
        None => lockfile::break_plain(&t, OP_BREAK, file),
    }
}

/// What [`inspect`] tells of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not locked.
    Free,
    /// Held by a live process, another host, or a lease renewed in time.
    Held,
    /// Held by the calling process.
    HeldByCaller,
    /// Held by a process of this host that is gone (it will be cleared).
    DeadHolder,
    /// A lease not renewed for its whole lease, as watched by this call.
    Expired,
    /// The lock file is not a record.
    Unreadable,
}

/// A lock's state and holder, as [`inspect`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The lock's state.
    pub state: State,
    /// The holder's record (None when free, unreadable or not written yet).
    pub record: Option<Record>,
    /// The last fencing token handed out on the path (0: none).
    pub fencing_token: u64,
    /// How many shared holders the lock has (0: exclusive or free).
    pub shared_holders: u32,
}

/// Tells the state of the lock on `path` (`P` or `P.nfs_lock`), watching a lease for up
/// to `watch` to tell a renewed one from an expired one (zero: no watching, a lease is
/// Held unless its holder is a dead process of this host).
pub fn inspect(path: impl AsRef<Path>, watch_for: Duration) -> Result<Info> {
    let t = Target::for_reader(OP_INSPECT, path.as_ref())?;
    let me = process::this_process();
    let start = Instant::now();
    loop {
        let fencing_token = crate::fence::last(&t.lock).unwrap_or(0);
        let (record, file) = match lockfile::read_holder(&t, OP_INSPECT) {
            Ok(Holder::Free) => return Ok(Info { state: State::Free, record: None, fencing_token, shared_holders: 0 }),
            Ok(Holder::Unwritten { .. }) => return Ok(Info { state: State::Held, record: None, fencing_token, shared_holders: 0 }),
            Ok(Holder::Held { record, file }) => (record, file),
            Err(e) if e.sys_errno() == Errno::EBADMSG => {
                return Ok(Info { state: State::Unreadable, record: None, fencing_token, shared_holders: 0 })
            }
            Err(e) => return Err(e),
        };
        let group = record.lease.as_ref().filter(|l| l.shared);
        let shared_holders = group.map_or(0, |g| shared::count(&t.dir, &g.claim));
        let info = |state| Ok(Info { state, record: Some(record.clone()), fencing_token, shared_holders });
        if state().holder_of_file(file).is_some() || (me.wrote(&record) && group.is_none()) {
            return info(State::HeldByCaller);
        }
        if group.is_some() {
            // Its creator's fate says nothing of its members; watching it is per member.
            return info(if shared_holders == 0 { State::DeadHolder } else { State::Held });
        }
        if host::owner_of(&record, &me.host) == Owner::Dead {
            return info(State::DeadHolder);
        }
        let Some(terms) = record.lease.as_ref().filter(|_| !watch_for.is_zero()) else { return info(State::Held) };
        let mut w = Watch::start(&t, file, terms).map_err(|e| t.sys(e, OP_INSPECT, "listing the directory of", &t.lock))?;
        loop {
            match w.look(&t, None).map_err(|e| t.sys(e, OP_INSPECT, "watching", &t.lock))? {
                Verdict::Expired { .. } => return info(State::Expired),
                Verdict::Ended => break,
                Verdict::Live(_) if start.elapsed() >= watch_for => return info(State::Held),
                Verdict::Live(_) => std::thread::sleep(watch::poll_interval(w.lease).min(watch_for.saturating_sub(start.elapsed()))),
            }
        }
        // The lease ended while watched: tell what is there now.
        if start.elapsed() >= watch_for {
            return inspect(path, Duration::ZERO);
        }
    }
}

/// How many leases the keep-alive thread renews in this process.
pub fn renewed_leases() -> usize {
    keepalive::renewed_holds()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod review_tests;
