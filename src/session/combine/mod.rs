//! Combining: the sessions of one host that want new IDs at the same moment get them
//! from one counter update and one fdatasync.
//!
//! Each update of the counter ends in an fdatasync, and on a journaling filesystem that
//! commits the journal with the ID locks' links in it: with several sessions allocating
//! at once, that sync is what they queue for. So a session about to issue at most
//! MAX_COMBINED IDs on a local filesystem posts a request in its host's table
//! (table.rs: its session, the claim to link to, how many), and then goes for the
//! counter's token as usual. Whoever holds the token to issue IDs (the combiner) takes
//! every posted request, links each requester's claim to the IDs after its own, writes
//! the counter once past them all, syncs it once, and marks each request done with its
//! first ID. A requester that gets the token first withdraws its request and goes on
//! alone (and serves the others).
//!
//! Uniqueness does not rest on the table: IDs are still issued only by the token's
//! holder, under the usual protocol (token.rs), and each is locked with link(2) to the
//! requester's own claim before the counter passes it. The table says who does the
//! work, and a requester reports nothing the table says unless it is marked done.
//!
//! When things go wrong:
//! - the combiner dies: the requester, seeing its pid gone, removes the links to its
//!   claim in the range announced to it (never reported, so at worst a gap) and tries
//!   again. Those links sit above the counter: a session that finds the token held by
//!   one of them (the requester may be gone, stopped or idle) undoes the dead round
//!   itself first ([`Table::undo_dead_rounds`]). If the table itself is gone (its
//!   users all left, and a sweep removed it), the round's record goes with it; the
//!   links then belong to requesters that have closed, and are reaped as theirs;
//! - the combiner is stopped: the requester gives up after its patience (ETIMEDOUT),
//!   keeps the request, and moves on to a new claim (so nothing it links later can be
//!   confused with what the stopped combiner may still link to the old one); once the
//!   request is done or undone, those IDs are released (a gap);
//! - the requester dies: its request may still be served, to a dead session whose
//!   locks are reaped with it (a gap); its slot is reclaimed when a poster needs it;
//! - the requester was reaped: the combiner's link fails (ENOENT: its claim is gone), or
//!   its own lease check afterwards does: ESTALE, as without combining.
//!
//! A slot's word holds the pid whose turn it is (32 bits: the requester's while posted,
//! the combiner's once taken), the request's ticket (28 bits) and its state (4 bits).

mod table;

pub use table::Table;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::idlock::{self, Claim, Take};
use super::layout::{self, Repo};
use crate::fsops::FileId;
use crate::host::{self, Identity};
use crate::record::StartTime;
use table::{Slot, SLOTS};

/// The largest request handed to a combiner; larger ones amortise their own sync.
pub(crate) const MAX_COMBINED: usize = 64;

const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const POSTED: u64 = 2;
const TAKEN: u64 = 3;
const DONE: u64 = 4;
const FAILED: u64 = 5;
const TICKET_MASK: u32 = 0x0fff_ffff;
const NO_FIRST: u64 = u64::MAX;
/// How long a combiner waits for the sessions of its previous round to post again.
/// With four sessions allocating at once it raised rounds from about 1.7 requests to
/// 4 and the aggregate rate by about a tenth on the development machine's disk (50 to
/// 300 µs gave the same within noise); a session allocating alone never waits.
const GATHER_WAIT: Duration = Duration::from_micros(200);
/// How often a requester whose request is taken checks that its combiner still lives.
const LIVENESS_EVERY: Duration = Duration::from_millis(10);

fn word(pid: u32, ticket: u32, state: u64) -> u64 {
    (pid as u64) << 32 | ((ticket & TICKET_MASK) as u64) << 4 | state
}

fn state(w: u64) -> u64 {
    w & 0xf
}

fn ticket(w: u64) -> u32 {
    (w >> 4) as u32 & TICKET_MASK
}

fn pid(w: u64) -> u32 {
    (w >> 32) as u32
}

fn start_field(me: &Identity) -> u64 {
    me.start_time.map_or(0, |t| t.0 as u64)
}

fn start_time(field: &AtomicU64) -> Option<StartTime> {
    let v = field.load(SeqCst);
    (v != 0).then_some(StartTime(v as i64))
}

/// What a requester asks for.
pub struct Request<'a> {
    pub sid: &'a str,
    pub claim_no: u32,
    pub claim_file: FileId,
    pub n: usize,
}

/// A request of ours in the table.
#[derive(Debug, Clone)]
pub struct Ticket {
    slot: usize,
    ticket: u32,
    pid: u32,
    pub n: usize,
    /// The claim the IDs are linked to (its index in the session's claims).
    pub claim: usize,
}

/// How a taken request ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Issued and linked to our claim: the IDs `first..first + n`.
    Done(u64),
    /// Not served (its links undone): the combiner's error.
    Failed(Errno),
    /// Its combiner died; the IDs it may have linked for us start at this one.
    Orphaned(Option<u64>),
    /// Its combiner (this pid) still holds it.
    Pending(u32),
}

/// The requests a combiner took, and the IDs it linked for them.
pub struct Batch {
    /// The end of the IDs issued so far (the combiner's own, then the requests').
    pub end: u64,
    served: Vec<Served>,
}

struct Served {
    slot: usize,
    word: u64,
    ids: Vec<u64>,
    file: FileId,
}

impl Table {
    fn slot(&self, i: usize) -> &Slot {
        &self.slots()[i]
    }

    /// Posts a request; None when it cannot be (no free slot, a request too large).
    pub fn post(&self, me: &Identity, req: Request, claim: usize) -> Option<Ticket> {
        if req.n == 0 || req.n > MAX_COMBINED || !layout::is_session_id(req.sid.as_bytes()) {
            return None;
        }
        let t = self.header().tickets.fetch_add(1, SeqCst) & TICKET_MASK;
        let pid = me.pid as u32;
        for pass in 0..2 {
            if pass == 1 {
                self.reclaim();
            }
            for k in 0..SLOTS {
                let i = (pid as usize + k) % SLOTS;
                let s = self.slot(i);
                if s.word.compare_exchange(FREE, word(pid, t, CLAIMING), SeqCst, SeqCst).is_err() {
                    continue;
                }
                let sid = req.sid.as_bytes();
                s.sid[0].store(u64::from_le_bytes(sid[..8].try_into().ok()?), SeqCst);
                s.sid[1].store(u64::from_le_bytes(sid[8..].try_into().ok()?), SeqCst);
                s.claim_no.store(req.claim_no, SeqCst);
                s.claim_dev.store(req.claim_file.dev, SeqCst);
                s.claim_ino.store(req.claim_file.ino, SeqCst);
                s.n.store(req.n as u32, SeqCst);
                s.owner_pid.store(pid, SeqCst);
                s.owner_start.store(start_field(me), SeqCst);
                s.combiner_start.store(0, SeqCst);
                s.first.store(NO_FIRST, SeqCst);
                s.errno.store(0, SeqCst);
                s.word.store(word(pid, t, POSTED), SeqCst);
                return Some(Ticket { slot: i, ticket: t, pid, n: req.n, claim });
            }
        }
        None
    }

    /// Frees the slots of requesters that are gone (a request being served is left to
    /// its combiner).
    fn reclaim(&self) {
        for s in self.slots() {
            let w = s.word.load(SeqCst);
            let owner = match state(w) {
                CLAIMING | POSTED => (pid(w), None),
                DONE | FAILED => (s.owner_pid.load(SeqCst), start_time(&s.owner_start)),
                _ => continue,
            };
            if host::process_is_gone(owner.0 as i32, owner.1) {
                let _ = s.word.compare_exchange(w, FREE, SeqCst, SeqCst);
            }
        }
    }

    /// Whether our request has left the posted state (a combiner took it).
    pub fn taken(&self, t: &Ticket) -> bool {
        self.slot(t.slot).word.load(SeqCst) != word(t.pid, t.ticket, POSTED)
    }

    /// Takes our request back; false when a combiner took it first.
    pub fn withdraw(&self, t: &Ticket) -> bool {
        self.slot(t.slot).word.compare_exchange(word(t.pid, t.ticket, POSTED), FREE, SeqCst, SeqCst).is_ok()
    }

    /// Sleeps for `d` or until the bell rings; true when our request was taken.
    pub fn doze(&self, t: &Ticket, d: Duration) -> bool {
        let seen = self.header().bell.load(SeqCst);
        if !self.taken(t) {
            self.wait(seen, d);
        }
        self.taken(t)
    }

    /// Waits up to `patience` for a taken request to end. The slot is ours again after
    /// every outcome but Pending.
    pub fn settle(&self, t: &Ticket, patience: Duration) -> Outcome {
        let s = self.slot(t.slot);
        let start = Instant::now();
        let mut checked: Option<Instant> = None;
        loop {
            let seen = self.header().bell.load(SeqCst);
            let w = s.word.load(SeqCst);
            if ticket(w) != t.ticket {
                // Only the requester frees a posted request, so this cannot happen; if
                // it did, nothing the table says about this request can be trusted.
                debug_assert!(false, "a posted request changed hands");
                return Outcome::Orphaned(None);
            }
            match state(w) {
                DONE => {
                    let first = s.first.load(SeqCst);
                    s.word.store(FREE, SeqCst);
                    return Outcome::Done(first);
                }
                FAILED => {
                    let e = Errno::from_raw(s.errno.load(SeqCst) as i32);
                    s.word.store(FREE, SeqCst);
                    return Outcome::Failed(e);
                }
                POSTED => {
                    if self.withdraw(t) {
                        return Outcome::Failed(Errno::EAGAIN);
                    }
                    continue;
                }
                _ => {}
            }
            if checked.is_none_or(|c| c.elapsed() >= LIVENESS_EVERY) {
                checked = Some(Instant::now());
                if host::process_is_gone(pid(w) as i32, start_time(&s.combiner_start)) {
                    let first = s.first.load(SeqCst);
                    if s.word.compare_exchange(w, FREE, SeqCst, SeqCst).is_ok() {
                        return Outcome::Orphaned((first != NO_FIRST).then_some(first));
                    }
                    continue;
                }
            }
            if start.elapsed() >= patience {
                return Outcome::Pending(pid(w));
            }
            self.wait(seen, Duration::from_millis(1));
        }
    }

    /// For a holder of the counter's token whose own IDs end before `end`: takes every
    /// posted request and links its claim to the IDs that follow. Stops at the first
    /// request it cannot serve (an ID found locked, an error), which fails.
    pub fn serve(&self, repo: &Repo, me: &Identity, end: u64) -> Batch {
        let mut batch = Batch { end, served: Vec::new() };
        self.gather();
        for (i, s) in self.slots().iter().enumerate() {
            let w = s.word.load(SeqCst);
            if state(w) != POSTED {
                continue;
            }
            let taken = word(me.pid as u32, ticket(w), TAKEN);
            if s.word.compare_exchange(w, taken, SeqCst, SeqCst).is_err() {
                continue;
            }
            s.combiner_start.store(start_field(me), SeqCst);
            let fail = |e: Errno| {
                s.errno.store(e as i32 as u32, SeqCst);
                s.word.store(word(me.pid as u32, ticket(w), FAILED), SeqCst);
            };
            let n = s.n.load(SeqCst) as u64;
            let claim = requested_claim(repo, s).filter(|_| (1..=MAX_COMBINED as u64).contains(&n));
            let (Some(claim), Some(to)) = (claim, batch.end.checked_add(n)) else {
                fail(Errno::EINVAL);
                continue;
            };
            s.first.store(batch.end, SeqCst);
            match link_all(repo, &claim, batch.end, to) {
                Ok(ids) => {
                    batch.served.push(Served { slot: i, word: taken, ids, file: claim.file });
                    batch.end = to;
                }
                Err(e) => {
                    fail(e);
                    break;
                }
            }
        }
        self.header().last_round.store(batch.served.len() as u32 + 1, SeqCst);
        batch
    }

    /// Gives the sessions that took part in the last round a moment (GATHER_WAIT at
    /// most) to post again: they are usually on their way, and each one that makes it
    /// saves a sync. A session that stopped asking is waited for once.
    fn gather(&self) {
        let expected = self.header().last_round.load(SeqCst).saturating_sub(1) as usize;
        let start = Instant::now();
        while expected > 0 && start.elapsed() < GATHER_WAIT {
            if self.slots().iter().filter(|s| state(s.word.load(SeqCst)) == POSTED).count() >= expected {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Undoes the rounds of combiners that died holding requests: removes the links
    /// they made to each requester's claim, and fails the request (a requester still
    /// waiting tries again; one that gave up has nothing left to release). Such links
    /// sit above the counter, where the next writers need them gone; a session waiting
    /// for a token held by a session that does not write calls this first. True when
    /// something was undone.
    pub fn undo_dead_rounds(&self, repo: &Repo, me: &Identity) -> bool {
        let mut undone = false;
        for s in self.slots() {
            let w = s.word.load(SeqCst);
            if state(w) != TAKEN || !host::process_is_gone(pid(w) as i32, start_time(&s.combiner_start)) {
                continue;
            }
            // Ours to undo from now on (a requester that saw the death too frees the
            // slot instead, and undoes its links itself).
            let mine = word(me.pid as u32, ticket(w), TAKEN);
            if s.word.compare_exchange(w, mine, SeqCst, SeqCst).is_err() {
                continue;
            }
            s.combiner_start.store(start_field(me), SeqCst);
            let first = s.first.load(SeqCst);
            if let (Some(claim), false) = (requested_claim(repo, s), first == NO_FIRST) {
                idlock::release_many(repo, first..first.saturating_add(s.n.load(SeqCst) as u64), claim.file);
            }
            s.errno.store(Errno::EOWNERDEAD as i32 as u32, SeqCst);
            s.word.store(word(me.pid as u32, ticket(w), FAILED), SeqCst);
            undone = true;
        }
        if undone {
            self.ring();
        }
        undone
    }

    /// Ends a combiner's round: its requests done (the counter passed them durably) or
    /// failed with `result`'s error (their links undone).
    pub fn finish(&self, repo: &Repo, batch: Batch, result: Result<(), Errno>) {
        for served in batch.served {
            let s = self.slot(served.slot);
            let end = match result {
                Ok(()) => DONE,
                Err(e) => {
                    idlock::release_many(repo, served.ids.iter().copied(), served.file);
                    s.errno.store(e as i32 as u32, SeqCst);
                    FAILED
                }
            };
            s.word.store(served.word & !0xf | end, SeqCst);
        }
        self.ring();
    }
}

/// The claim a posted request names, if its fields are sound.
fn requested_claim(repo: &Repo, s: &Slot) -> Option<Claim> {
    let mut sid = [0u8; 16];
    sid[..8].copy_from_slice(&s.sid[0].load(SeqCst).to_le_bytes());
    sid[8..].copy_from_slice(&s.sid[1].load(SeqCst).to_le_bytes());
    if !layout::is_session_id(&sid) {
        return None;
    }
    let sid = std::str::from_utf8(&sid).ok()?;
    let file = FileId { dev: s.claim_dev.load(SeqCst), ino: s.claim_ino.load(SeqCst) };
    let number = s.claim_no.load(SeqCst);
    Some(Claim { path: repo.claim_path(sid, number), file, number, links: 0 })
}

/// Links `claim` to every ID of `from..to`, or to none: EAGAIN when one is locked.
fn link_all(repo: &Repo, claim: &Claim, from: u64, to: u64) -> Result<Vec<u64>, Errno> {
    let mut ids = Vec::with_capacity((to - from) as usize);
    for id in from..to {
        let outcome = idlock::take(repo, claim, id);
        if outcome != Ok(Take::Ours) {
            idlock::release_many(repo, ids, claim.file);
            return Err(outcome.err().unwrap_or(Errno::EAGAIN));
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests;
