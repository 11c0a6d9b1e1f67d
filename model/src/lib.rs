//! An exhaustive model of the lease protocol's file operations (docs/lease-protocol.md).
//!
//! One directory `D` holds the lock file `L` (`P.nfs_lock`), the claims' token names
//! `T(n, k)` (`.nfslock-<N>.<k>`), breakers' names `B(n, k, p)` (`.nfslock-<N>.<k>.x<R>`)
//! and the fencing counter (`P.nfs_lock.fence`, modelled by its size). Each inode is one
//! claim; its link count is the number of names that point at it.
//!
//! The deciders (link, rename, unlink, O_EXCL create, the fence's pwrite) act on the current
//! state atomically. Their replies may be lost: the operation takes effect and the caller gets
//! the retransmission's answer (EEXIST for link, ENOENT for rename and unlink). Reads by
//! name (lstat, reading L's record, the listing) may answer from an older version of the
//! name: any value the name had at some moment of the last `stale` ticks (see README.md).
//! A fresh open (fstat of an opened file: link count, the fence's size) reads the current
//! state.
//!
//! Time is a global tick. Each process measures ages on its own clock (ticks since a clock
//! read); ages are capped where the protocol stops caring, so the state space is finite
//! without bounding time. Any process may take no step for any number of ticks (a pause),
//! and may crash (at most `max_crashes` crashes in a run).
//!
//! See README.md for the bounds and why they suffice, and `Mutation` for the protocol
//! mutations the test suite proves are caught.

use std::collections::BTreeMap;
use std::fmt;

use stateright::{Model, Property};

/// A protocol variant: the protocol as the doc writes it, with optional fixes, and at most one
/// deliberate mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// Fix A: a holder's `renewed_at` is the clock read before the operation that created its
    /// current token name (claim creation, renewal's or release's rename), also across an
    /// acquisition: `link(T_k, L)` does not restart the lease. The doc restarts it at the link
    /// (false).
    pub fix_acquire_keeps_renewed_at: bool,
    /// Fix B: break step 2 asks "does L still link the taken claim" by the taken name's link
    /// count through a fresh open (`open(B)`, `fstat`, `st_nlink == 2`) instead of `lstat(L)`
    /// (which may answer from an older version of L).
    pub fix_break_checks_nlink: bool,
    /// How an acquirer recognises its own link after EEXIST (a lost reply): the doc names
    /// "L's inode" (lstat, may be stale) first, "or T_k's link count through a fresh open".
    /// true: the fresh link count.
    pub link_recovery_by_nlink: bool,
    /// Fix C: release takes its own token the way a breaker does, `rename(T_k, B)` with its
    /// own breaker name B, then `unlink(L)`, then parks the claim with `rename(B, T_{k+1})`.
    /// The doc parks first (`rename(T_k, T_{k+1})`) and then unlinks L: a breaker can take
    /// the parked T_{k+1} while L still links the claim, and the releaser's unlink(L) and
    /// the breaker's then remove two different locks.
    pub fix_release_takes_own_token: bool,
    /// The release and the breaker send their unlink(L) only within half a lease of the move
    /// that gave them the right (the park's rename, the take), judged in the same atomic step
    /// as the unlink (the gap between them is the one no client can close, see the doc);
    /// later, they rename their name once more first (release: T_{k+1} -> T_{k+2}, Lost:
    /// ENOLCK; breaker: B -> a fresh `.x` name, Lost: give up). Before a retried unlink (a
    /// transient reply), the link count of their name through a fresh open.
    pub unlink_within_half_lease: bool,
    /// Watchers take over a `.x` name seen unchanged for lease + margin (a dead breaker's)
    /// exactly like a live token.
    pub take_over_x: bool,
    /// An acquisition of a claim parked for more than lease/6 renames it to T_{k+1} first
    /// (its lease then runs from that rename).
    pub rename_stale_parked: bool,
    pub mutation: Option<Mutation>,
}

impl Protocol {
    /// The protocol as implemented (src/lease, src/lockfile/token.rs) and as
    /// docs/lease-protocol.md now describes it: renewed_at from the parking, a claim parked
    /// for more than lease/6 renamed before its link, lost-link recovery by the token's link
    /// count, the release parks first and unlinks L only within half a lease of its rename,
    /// the breaker checks its taken name's link count and unlinks only within half a lease of
    /// its take, and watchers take over `.x` names.
    pub const DOC: Protocol = Protocol {
        fix_acquire_keeps_renewed_at: true,
        fix_break_checks_nlink: true,
        link_recovery_by_nlink: true,
        fix_release_takes_own_token: false,
        unlink_within_half_lease: true,
        take_over_x: true,
        rename_stale_parked: true,
        mutation: None,
    };
    /// The doc as it was first written (lost-link recovery: by L's inode via lstat): the
    /// counterexamples of counterexamples.md.
    pub const ORIGINAL: Protocol = Protocol {
        fix_acquire_keeps_renewed_at: false,
        fix_break_checks_nlink: false,
        link_recovery_by_nlink: false,
        fix_release_takes_own_token: false,
        unlink_within_half_lease: false,
        take_over_x: false,
        rename_stale_parked: false,
        mutation: None,
    };
    /// The first doc with the model's fixes A, B, C and the fresh link-count recovery (safe,
    /// but a dead breaker's `.x` name is never taken over: the lock stays).
    pub const FIXED: Protocol = Protocol {
        fix_acquire_keeps_renewed_at: true,
        fix_break_checks_nlink: true,
        link_recovery_by_nlink: true,
        fix_release_takes_own_token: true,
        unlink_within_half_lease: false,
        take_over_x: false,
        rename_stale_parked: false,
        mutation: None,
    };
    pub fn with(self, m: Mutation) -> Protocol {
        Protocol { mutation: Some(m), ..self }
    }
    fn m(&self, m: Mutation) -> bool {
        self.mutation == Some(m)
    }
}

/// Deliberate protocol bugs; each must produce a counterexample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// The breaker unlinks L (after its wait and `L is inode I` check) without taking the
    /// token first.
    BreakWithoutToken,
    /// The breaker reads t0 when it reads L's record, before its listing, instead of after the
    /// listing returned.
    T0BeforeListing,
    /// Release unlinks L first and then moves the token.
    ReleaseUnlinksFirst,
    /// Renewal by `unlink(T_k)` then creating `T_{k+1}`, instead of one rename (the unlink's
    /// ENOENT is taken for a lost reply, as the doc does for its other unlinks).
    RenewByUnlinkCreate,
    /// A new claim of the same process (after it was broken) reuses the claim name N and
    /// starts again at epoch 0.
    TokenNameReused,
    /// After losing track and listing again, the breaker keeps its old t0 instead of waiting a
    /// whole lease from the new listing.
    NoWaitAfterRelisting,
    /// Break step 2 is skipped: the breaker that took the token unlinks L without checking
    /// that L is the claim it took.
    BreakSkipsLCheck,
    /// The fencing token is s + 1 right after the pwrite, without the renewal that proves the
    /// lock was still held.
    FenceWithoutRenewal,
    /// The release's unlink(L) is sent however long ago its park's rename was.
    ReleaseUnlinksLate,
    /// The breaker's unlink(L) is sent however long ago its take was.
    BreakerUnlinksLate,
    /// An acquisition links a parked claim however long it was parked (no rename first).
    AcquireSkipsRename,
    /// A retried unlink(L) (after a transient reply) is sent without the link-count check.
    RetryWithoutCheck,
}

impl Mutation {
    pub const ALL: [Mutation; 12] = [
        Mutation::BreakWithoutToken,
        Mutation::T0BeforeListing,
        Mutation::ReleaseUnlinksFirst,
        Mutation::RenewByUnlinkCreate,
        Mutation::TokenNameReused,
        Mutation::NoWaitAfterRelisting,
        Mutation::BreakSkipsLCheck,
        Mutation::FenceWithoutRenewal,
        Mutation::ReleaseUnlinksLate,
        Mutation::BreakerUnlinksLate,
        Mutation::AcquireSkipsRename,
        Mutation::RetryWithoutCheck,
    ];
}

/// The bounds of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Host of each process (process i runs on host hosts[i]).
    pub hosts: &'static [u8],
    /// Lease in ticks (even). The self-fence starts at lease/2 ticks after renewed_at.
    pub lease: u8,
    /// Breakers wait lease + margin ticks after t0.
    pub margin: u8,
    /// A read by name may return any value the name had during the last `stale` ticks
    /// (0: reads are fresh).
    pub stale: u8,
    /// Whether token and breaker names (T, B) are read stale too; L always is when stale > 0.
    pub stale_tokens: bool,
    /// Claims (incarnations) per process.
    pub claims: u8,
    /// Highest epoch k of a claim: renewals and releases past it are not taken (the
    /// process pauses for ever there).
    pub max_epoch: u8,
    /// Process 0's highest epoch, if higher (a late release needs two renames of one claim;
    /// allowing them to one process only keeps the state space small).
    pub max_epoch_p0: u8,
    /// How many names past T_k an observer looks at before listing again.
    pub lookahead: u8,
    /// Crashes in one run.
    pub max_crashes: u8,
    /// Whether holders ask for fencing tokens.
    pub fencing: bool,
    /// `.x` names per claim (takes, takeovers, a late breaker's renames); a rename past it
    /// is not taken (the process pauses for ever there).
    pub max_x: u8,
}

impl Bounds {
    /// The bounds the test suite checks: host A runs p0 and p1, host B runs p2.
    pub const STANDARD: Bounds = Bounds {
        hosts: &[0, 0, 1],
        lease: 2,
        margin: 1,
        stale: 2,
        stale_tokens: true,
        claims: 2,
        max_epoch: 2,
        max_epoch_p0: 0,
        lookahead: 2,
        max_crashes: 1,
        fencing: true,
        max_x: 2,
    };
    fn fence_at(&self) -> u8 {
        self.lease / 2
    }
    fn break_at(&self) -> u8 {
        self.lease + self.margin
    }
}

pub type Ino = u8;

/// Where a claim's inode is, besides possibly L.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Loc {
    /// At its token name T(n, k).
    T(u8),
    /// Token T(n, k) taken, now at the `.x` name X(n, j, p) of process p (a breaker, or a
    /// releaser under fix C): B(k, j, p).
    B(u8, u8, u8),
    /// The breaker unlinked B: only L (if anything) links it; the claim is dead.
    Taken(u8),
    /// Mutation RenewByUnlinkCreate: between the unlink of T_k and the create of T_{k+1}.
    Unnamed(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Name {
    T(u8, u8),
    /// `.nfslock-<N>.<k>.x<R>`: X(n, j, p), the j-th `.x` name made for claim N, by process p
    /// (R is fresh: a name nobody else makes, never made again).
    X(u8, u8, u8),
}

/// One name's current value and the values it had during the staleness window.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ver {
    pub cur: Option<Ino>,
    /// (earlier value, ticks since it was replaced), ages < stale.
    pub hist: Vec<(Option<Ino>, u8)>,
}

impl Ver {
    fn readable(&self) -> Vec<Option<Ino>> {
        let mut v = vec![self.cur];
        for (x, _) in &self.hist {
            if !v.contains(x) {
                v.push(*x);
            }
        }
        v
    }
    fn set(&mut self, x: Option<Ino>, stale: u8) {
        if self.cur == x {
            return;
        }
        if stale > 0 {
            let old = self.cur;
            self.hist.retain(|(v, _)| *v != old);
            self.hist.push((old, 0));
            self.hist.sort();
        }
        self.cur = x;
    }
    fn tick(&mut self, stale: u8) {
        for (_, a) in self.hist.iter_mut() {
            *a += 1;
        }
        self.hist.retain(|(_, a)| *a < stale);
    }
    fn is_empty(&self) -> bool {
        self.cur.is_none() && self.hist.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fence {
    None,
    /// fstat gave size s.
    Read(u8),
    /// pwrite of one byte at offset s done (and fdatasync).
    Written(u8),
    /// The renewal after the write succeeded: the token.
    Token(u8),
}

/// A process's program counter. `x` is the claim (inode) an observer read from L's record,
/// `k` the epoch of its token it tracks, `age` ticks since its t0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pc {
    /// No claim: create one (O_EXCL at T(n, 0)).
    NoClaim,
    /// Claim parked at T(n, k): try link(T_k, L).
    Parked,
    /// link answered EEXIST: recognise a lost reply of our own link, or observe.
    LinkEexist,
    /// Holding.
    Held,
    /// Renewal's rename answered ENOENT: is T_{k+1} ours (lost reply) or are we broken?
    RenewEnoent,
    /// Mutation RenewByUnlinkCreate: T_k unlinked, create T_{k+1}.
    RenewCreate,
    /// Release's rename answered ENOENT.
    ReleaseEnoent,
    /// Release's rename done: unlink(L) (within half a lease of the park's rename, else
    /// rename the parked token again first).
    ReleaseUnlink,
    /// The release's unlink got a transient reply (it may or may not have worked): the
    /// parked token's link count through a fresh open decides whether to send it again.
    ReleaseRetry,
    /// The acquisition's rename of a long-parked claim answered ENOENT: T_{k+1} ours?
    AcqRenameEnoent,
    /// Fix C: L unlinked; park the claim: rename(B, T_{k+1}).
    ReleasePark,
    /// Fix C: the parking rename answered ENOENT.
    ReleaseParkEnoent,
    /// Mutation ReleaseUnlinksFirst: L unlinked, rename the token.
    ReleaseRename,
    /// Observe: read L's record.
    Obs0,
    /// List D for `.nfslock-<N>.`; `carried`: t0's age kept from before (mutations only).
    Obs1 {
        x: Ino,
        dead: bool,
        carried: Option<u8>,
    },
    PollL {
        x: Ino,
        src: Name,
        age: u8,
    },
    /// Polling the token's name `src` (a T name, or a `.x` name under take_over_x).
    PollT {
        x: Ino,
        src: Name,
        age: u8,
    },
    Look {
        x: Ino,
        k: u8,
        m: u8,
        age: u8,
    },
    /// Break step 1: rename(src, X(n, j)), src a T name or (take-over) a `.x` name.
    Brk1 {
        x: Ino,
        src: Name,
        dead: bool,
    },
    /// Step 1 (or a late breaker's rename to a fresh name) answered ENOENT: is X(n, j, p)
    /// ours (lost reply)? `age`: ticks since the clock read before that rename.
    Brk1Enoent {
        x: Ino,
        j: u8,
        dead: bool,
        age: u8,
    },
    /// Step 2: does L still link the claim we took (now at X(n, j, p))? `age`: ticks since
    /// the clock read before the take (or the late rename).
    Brk2 {
        x: Ino,
        j: u8,
        dead: bool,
        age: u8,
    },
    /// Step 2 said yes: within half a lease of the take, unlink(L) (one atomic step with the
    /// time check); later, rename X(n, j) to a fresh `.x` name first.
    Brk3 {
        x: Ino,
        j: u8,
        dead: bool,
        age: u8,
    },
    /// Step 3: unlink(X(n, j)).
    Brk4 {
        x: Ino,
        j: u8,
    },
    Dead,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pc: Pc,
    /// Claims created so far; the current claim is inode `self_index * claims + inc - 1`.
    pub inc: u8,
    /// Whether the process has a claim (it drops it when it learns it was taken).
    pub has_claim: bool,
    /// The epoch of its claim's token, as the process knows it.
    pub k: u8,
    /// Ticks since renewed_at, capped at lease/2 (then is_held() is ETIMEDOUT).
    pub age_r: u8,
    pub fence: Fence,
    /// Whether this hold has renewed at least once (for a reachability check).
    pub renewed: bool,
    /// Fix C: the `.x` name index of the releaser's own take.
    pub xj: u8,
    /// Reachability: what this process has done (bit flags R_*).
    pub did: u8,
}

/// A break without a `.x` name (mutation BreakWithoutToken).
pub const NO_X: u8 = u8::MAX;

/// Reachability flags in `Proc::did`.
pub const R_LATE_RELEASE: u8 = 1; // a late release renamed its parked token again
pub const R_RELEASE_RETRY: u8 = 2; // a release retried its unlink after a link-count check
pub const R_LATE_BREAK: u8 = 4; // a late breaker renamed its taken token to a fresh `.x` name
pub const R_TAKE_OVER: u8 = 8; // a watcher took over a `.x` name
pub const R_ACQ_RENAME: u8 = 16; // an acquisition renamed a long-parked claim first

/// Violations found on a transition (bit flags). A state with any is terminal.
pub const BAD_UNLINK_L: u8 = 1; // unlink(L) of a lock that is not ours / not taken by us
pub const BAD_TOKEN_TWICE: u8 = 2; // a token name taken by two breaks
pub const BAD_BROKEN_ACTED: u8 = 4; // a broken holder's renewal/release succeeded or removed L
pub const BAD_BREAK_LIVE: u8 = 8; // a token taken from a live holder whose is_held() is 0
pub const BAD_FENCE_ORDER: u8 = 16; // a fencing token not greater than an earlier one

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub l: Ver,
    pub names: BTreeMap<Name, Ver>,
    /// Per inode (claim): where it is; None: not created yet.
    pub inodes: Vec<Option<Loc>>,
    pub procs: Vec<Proc>,
    pub fence_size: u8,
    pub max_token: u8,
    pub crashes: u8,
    pub bad: u8,
    /// Per claim name: the next `.x` name index.
    pub xnext: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Tick,
    Crash,
    CreateClaim,
    Link {
        lost: bool,
    },
    /// A read by name; `seen` is the answer (current or stale).
    Read {
        seen: Option<Ino>,
    },
    /// A fresh open/fstat (link count check, fence size).
    Fresh,
    /// The listing's answer: the token name found (a T name, else a `.x` name), if any.
    List {
        found: Option<Name>,
    },
    Renew {
        lost: bool,
    },
    Release {
        lost: bool,
    },
    Rename {
        lost: bool,
    },
    Unlink,
    /// An unlink whose reply was transient (EIO, a timeout): it took effect or not.
    UnlinkTransient {
        done: bool,
    },
    FenceRead,
    FenceWrite,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    pub p: u8,
    pub op: Op,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Op::Tick {
            write!(f, "tick")
        } else {
            write!(f, "p{} {:?}", self.p, self.op)
        }
    }
}

#[derive(Clone, Debug)]
pub struct LeaseModel {
    pub proto: Protocol,
    pub b: Bounds,
    /// Which transition checks (BAD_* bits) are recorded; all by default. Clearing some lets
    /// the checker look past them for a counterexample to the state properties (exclusion).
    pub bad_mask: u8,
}

impl LeaseModel {
    pub fn new(proto: Protocol, b: Bounds) -> Self {
        LeaseModel { proto, b, bad_mask: 0xff }
    }

    fn max_epoch(&self, p: usize) -> u8 {
        if p == 0 {
            self.b.max_epoch.max(self.b.max_epoch_p0)
        } else {
            self.b.max_epoch
        }
    }
    fn nprocs(&self) -> usize {
        self.b.hosts.len()
    }
    pub fn owner(&self, ino: Ino) -> usize {
        (ino / self.b.claims) as usize
    }
    /// The claim name N of an inode: fresh per claim, except under TokenNameReused.
    pub fn name_of(&self, ino: Ino) -> u8 {
        if self.proto.m(Mutation::TokenNameReused) {
            ino / self.b.claims * self.b.claims
        } else {
            ino
        }
    }
    fn own_ino(&self, s: &State, p: usize) -> Ino {
        p as u8 * self.b.claims + s.procs[p].inc - 1
    }
    fn ver<'a>(&self, s: &'a State, n: Name) -> Option<&'a Ver> {
        s.names.get(&n)
    }
    fn readable(&self, s: &State, n: Name) -> Vec<Option<Ino>> {
        self.ver(s, n).map(|v| v.readable()).unwrap_or_else(|| vec![None])
    }
    fn cur(&self, s: &State, n: Name) -> Option<Ino> {
        self.ver(s, n).and_then(|v| v.cur)
    }
    fn set(&self, s: &mut State, n: Name, x: Option<Ino>) {
        let stale = if self.b.stale_tokens { self.b.stale } else { 0 };
        let v = s.names.entry(n).or_default();
        v.set(x, stale);
        if v.is_empty() {
            s.names.remove(&n);
        }
    }
    fn set_l(&self, s: &mut State, x: Option<Ino>) {
        s.l.set(x, self.b.stale);
    }
    /// Names linking an inode (its st_nlink).
    fn nlink(&self, s: &State, ino: Ino) -> u8 {
        let mut n = (s.l.cur == Some(ino)) as u8;
        n += s.names.values().filter(|v| v.cur == Some(ino)).count() as u8;
        n
    }
    fn taken(loc: Option<Loc>) -> bool {
        matches!(loc, Some(Loc::B(..)) | Some(Loc::Taken(_)))
    }

    /// The process believes it holds the lock (it is in its critical section).
    pub fn believes_held(&self, s: &State, p: usize) -> bool {
        matches!(s.procs[p].pc, Pc::Held | Pc::RenewEnoent | Pc::RenewCreate)
    }
    /// nlfslock_is_held() == 0: holds, and renewals not overdue by lease/2.
    pub fn is_held_zero(&self, s: &State, p: usize) -> bool {
        self.believes_held(s, p) && s.procs[p].age_r < self.b.fence_at()
    }

    /// The model's successor function: every (action, state) pair.
    pub fn successors(&self, s: &State) -> Vec<(Action, State)> {
        let mut out = Vec::new();
        if s.bad != 0 {
            return out;
        }
        // Time.
        let mut t = s.clone();
        self.tick(&mut t);
        if t != *s {
            out.push((Action { p: 0, op: Op::Tick }, t));
        }
        for p in 0..self.nprocs() {
            self.proc_steps(s, p, &mut out);
        }
        out
    }

    fn tick(&self, s: &mut State) {
        let stale = self.b.stale;
        s.l.tick(stale);
        for v in s.names.values_mut() {
            v.tick(stale);
        }
        s.names.retain(|_, v| !v.is_empty());
        let fence_at = self.b.fence_at();
        let break_at = self.b.break_at();
        let keep_parked_age = self.proto.fix_acquire_keeps_renewed_at;
        for pr in s.procs.iter_mut() {
            pr.did = 0;
            let relevant = match pr.pc {
                Pc::Held | Pc::RenewEnoent | Pc::RenewCreate | Pc::LinkEexist => true,
                Pc::Dead | Pc::NoClaim => false,
                _ => keep_parked_age && pr.has_claim,
            };
            if relevant {
                pr.age_r = (pr.age_r + 1).min(fence_at);
            } else {
                pr.age_r = 0;
            }
            let cap = |a: u8| (a + 1).min(break_at);
            let capf = |a: u8| (a + 1).min(fence_at);
            pr.pc = match pr.pc {
                Pc::Obs1 { x, dead, carried } => Pc::Obs1 { x, dead, carried: carried.map(cap) },
                Pc::PollL { x, src, age } => Pc::PollL { x, src, age: cap(age) },
                Pc::PollT { x, src, age } => Pc::PollT { x, src, age: cap(age) },
                Pc::Look { x, k, m, age } => Pc::Look { x, k, m, age: cap(age) },
                Pc::Brk1Enoent { x, j, dead, age } => Pc::Brk1Enoent { x, j, dead, age: capf(age) },
                Pc::Brk2 { x, j, dead, age } => Pc::Brk2 { x, j, dead, age: capf(age) },
                Pc::Brk3 { x, j, dead, age } => Pc::Brk3 { x, j, dead, age: capf(age) },
                other => other,
            };
        }
    }

    /// The epoch of the token an inode's claim was taken from (it is at a `.x` name).
    fn taken_epoch(loc: Option<Loc>) -> u8 {
        match loc {
            Some(Loc::B(k, _, _)) | Some(Loc::Taken(k)) | Some(Loc::T(k)) | Some(Loc::Unnamed(k)) => k,
            None => 0,
        }
    }

    /// unlink(L) by process p: records a violation unless L is p's own untaken lock or a
    /// lock whose token p took.
    fn unlink_l(&self, t: &mut State, p: usize, own: Option<Ino>) {
        if let Some(z) = t.l.cur {
            let took_it = matches!(t.inodes[z as usize], Some(Loc::B(_, _, by)) if by == p as u8);
            let ours = own == Some(z) && !Self::taken(t.inodes[z as usize]);
            if !(took_it || ours) {
                t.bad |= BAD_UNLINK_L;
            }
        }
        self.set_l(t, None);
    }

    fn proc_steps(&self, s: &State, p: usize, out: &mut Vec<(Action, State)>) {
        if s.procs[p].pc == Pc::Dead {
            return;
        }
        // `did` says what the process's last step did: cleared by its next step.
        let s0 = {
            let mut c = s.clone();
            c.procs[p].did = 0;
            c
        };
        let s = &s0;
        let pr = &s.procs[p];
        let pu = p as u8;
        let mask = self.bad_mask;
        let mut push = |op: Op, mut st: State| {
            st.bad &= mask;
            out.push((Action { p: pu, op }, st))
        };
        // A crash, anywhere.
        if s.crashes < self.b.max_crashes {
            let mut t = s.clone();
            t.crashes += 1;
            t.procs[p].pc = Pc::Dead;
            t.procs[p].fence = Fence::None;
            t.procs[p].renewed = false;
            t.procs[p].age_r = 0;
            push(Op::Crash, t);
        }
        let claims = self.b.claims;
        let fence_at = self.b.fence_at();
        let half = self.proto.unlink_within_half_lease;
        match pr.pc {
            Pc::Dead => {}
            Pc::NoClaim => {
                if pr.inc < claims {
                    let mut t = s.clone();
                    let ino = pu * claims + pr.inc;
                    let n = Name::T(self.name_of(ino), 0);
                    if self.cur(&t, n).is_none() {
                        self.set(&mut t, n, Some(ino));
                        t.inodes[ino as usize] = Some(Loc::T(0));
                        let q = &mut t.procs[p];
                        q.inc += 1;
                        q.has_claim = true;
                        q.k = 0;
                        q.age_r = 0;
                        q.pc = Pc::Parked;
                        push(Op::CreateClaim, t);
                    }
                }
            }
            Pc::Parked => {
                let ino = self.own_ino(s, p);
                let n = self.name_of(ino);
                let tk = Name::T(n, pr.k);
                let next = Name::T(n, pr.k + 1);
                // Parked for more than lease/6 (less than a tick: at age 0 it may or may not
                // be; at 1 it is): rename first.
                let renames = self.proto.rename_stale_parked && !self.proto.m(Mutation::AcquireSkipsRename);
                let must_rename = renames && pr.age_r >= 1;
                if renames && pr.k < self.max_epoch(p) {
                    for lost in [false, true] {
                        let mut t = s.clone();
                        if self.cur(&t, tk).is_some() {
                            self.set(&mut t, tk, None);
                            self.set(&mut t, next, Some(ino));
                            t.inodes[ino as usize] = Some(Loc::T(pr.k + 1));
                            let q = &mut t.procs[p];
                            q.age_r = 0; // the clock read before the rename
                            q.did |= R_ACQ_RENAME;
                            if lost {
                                q.pc = Pc::AcqRenameEnoent;
                            } else {
                                q.k += 1;
                            }
                        } else {
                            if lost {
                                continue;
                            }
                            t.procs[p].pc = Pc::AcqRenameEnoent;
                        }
                        push(Op::Rename { lost }, t);
                    }
                }
                if !must_rename {
                    for lost in [false, true] {
                        let mut t = s.clone();
                        let src = self.cur(&t, tk);
                        if src.is_none() {
                            if lost {
                                continue;
                            }
                            // ENOENT: the parked claim was taken.
                            let q = &mut t.procs[p];
                            q.has_claim = false;
                            q.pc = Pc::NoClaim;
                            q.age_r = 0;
                        } else if t.l.cur.is_some() {
                            if lost {
                                continue;
                            }
                            // EEXIST: the caller cannot tell it from a lost reply's; it checks.
                            t.procs[p].pc = Pc::LinkEexist;
                        } else {
                            self.set_l(&mut t, src);
                            let q = &mut t.procs[p];
                            if !self.proto.fix_acquire_keeps_renewed_at {
                                q.age_r = 0; // renewed_at read before the link
                            }
                            q.fence = Fence::None;
                            q.renewed = false;
                            q.pc = if lost { Pc::LinkEexist } else { Pc::Held };
                        }
                        push(Op::Link { lost }, t);
                    }
                }
            }
            Pc::AcqRenameEnoent => {
                let ino = self.own_ino(s, p);
                let next = Name::T(self.name_of(ino), pr.k + 1);
                for seen in self.readable(s, next) {
                    let mut t = s.clone();
                    let q = &mut t.procs[p];
                    if seen == Some(ino) {
                        q.k += 1;
                        q.pc = Pc::Parked;
                    } else {
                        // Taken: a fresh claim.
                        q.has_claim = false;
                        q.pc = Pc::NoClaim;
                        q.age_r = 0;
                    }
                    push(Op::Read { seen }, t);
                }
            }
            Pc::LinkEexist => {
                let ino = self.own_ino(s, p);
                let tk = Name::T(self.name_of(ino), pr.k);
                if self.proto.link_recovery_by_nlink {
                    let mut t = s.clone();
                    if self.cur(&t, tk) != Some(ino) {
                        // The open of T_k fails: the claim was taken.
                        let q = &mut t.procs[p];
                        q.has_claim = false;
                        q.pc = Pc::NoClaim;
                    } else if self.nlink(&t, ino) >= 2 {
                        t.procs[p].pc = Pc::Held;
                    } else {
                        t.procs[p].pc = Pc::Obs0;
                    }
                    push(Op::Fresh, t);
                } else {
                    for seen in s.l.readable() {
                        let mut t = s.clone();
                        t.procs[p].pc = if seen == Some(ino) { Pc::Held } else { Pc::Obs0 };
                        push(Op::Read { seen }, t);
                    }
                }
            }
            Pc::Held => self.held_steps(s, p, &mut push),
            Pc::RenewEnoent | Pc::ReleaseEnoent | Pc::ReleaseParkEnoent => {
                let ino = self.own_ino(s, p);
                let fix_c_release = pr.pc == Pc::ReleaseEnoent && self.proto.fix_release_takes_own_token;
                let next = if fix_c_release { Name::X(self.name_of(ino), pr.xj, pu) } else { Name::T(self.name_of(ino), pr.k + 1) };
                for seen in self.readable(s, next) {
                    let mut t = s.clone();
                    if seen == Some(ino) {
                        // Lost reply: the rename worked.
                        if pr.pc == Pc::RenewEnoent {
                            self.renewed(&mut t, p);
                        } else if pr.pc == Pc::ReleaseParkEnoent {
                            let q = &mut t.procs[p];
                            q.k += 1;
                            q.pc = Pc::Parked;
                        } else if fix_c_release {
                            t.procs[p].pc = Pc::ReleaseUnlink;
                        } else {
                            let q = &mut t.procs[p];
                            q.k += 1;
                            q.pc = Pc::ReleaseUnlink;
                        }
                    } else {
                        // Broken: ENOLCK, nothing removed.
                        let q = &mut t.procs[p];
                        q.has_claim = false;
                        q.pc = Pc::NoClaim;
                        q.fence = Fence::None;
                        q.age_r = 0;
                    }
                    push(Op::Read { seen }, t);
                }
            }
            Pc::RenewCreate => {
                let ino = self.own_ino(s, p);
                let next = Name::T(self.name_of(ino), pr.k + 1);
                let mut t = s.clone();
                if self.cur(&t, next).is_none() {
                    if Self::taken(t.inodes[ino as usize]) {
                        t.bad |= BAD_BROKEN_ACTED;
                    }
                    self.set(&mut t, next, Some(ino));
                    t.inodes[ino as usize] = Some(Loc::T(pr.k + 1));
                    t.procs[p].age_r = 0;
                    self.renewed(&mut t, p);
                    push(Op::CreateClaim, t);
                }
            }
            Pc::ReleaseUnlink => {
                let ino = self.own_ino(s, p);
                let n = self.name_of(ino);
                let late = half && !self.proto.fix_release_takes_own_token && !self.proto.m(Mutation::ReleaseUnlinksLate) && pr.age_r >= fence_at;
                if late {
                    // Half a lease since the park's rename: rename the parked token again.
                    if pr.k < self.max_epoch(p) {
                        let tk = Name::T(n, pr.k);
                        let next = Name::T(n, pr.k + 1);
                        for lost in [false, true] {
                            let mut t = s.clone();
                            if self.cur(&t, tk).is_some() {
                                self.set(&mut t, tk, None);
                                self.set(&mut t, next, Some(ino));
                                t.inodes[ino as usize] = Some(Loc::T(pr.k + 1));
                                let q = &mut t.procs[p];
                                q.age_r = 0;
                                q.did |= R_LATE_RELEASE;
                                if lost {
                                    q.pc = Pc::ReleaseEnoent;
                                } else {
                                    q.k += 1;
                                }
                            } else {
                                if lost {
                                    continue;
                                }
                                t.procs[p].pc = Pc::ReleaseEnoent;
                            }
                            push(Op::Rename { lost }, t);
                        }
                    }
                } else {
                    // unlink(L), one atomic step with the time check; its reply may be
                    // transient (the unlink took effect or not).
                    let done_pc = if self.proto.fix_release_takes_own_token { Pc::ReleasePark } else { Pc::Parked };
                    let outcomes: &[(bool, bool)] = if half { &[(true, false), (true, true), (false, true)] } else { &[(true, false)] };
                    for &(effect, transient) in outcomes {
                        let mut t = s.clone();
                        if effect {
                            self.unlink_l(&mut t, p, Some(ino));
                        }
                        t.procs[p].pc = if transient { Pc::ReleaseRetry } else { done_pc };
                        t.procs[p].fence = Fence::None;
                        push(if transient { Op::UnlinkTransient { done: effect } } else { Op::Unlink }, t);
                    }
                }
            }
            Pc::ReleaseRetry => {
                let ino = self.own_ino(s, p);
                let tk = Name::T(self.name_of(ino), pr.k);
                let mut t = s.clone();
                let linked = self.proto.m(Mutation::RetryWithoutCheck) || (self.cur(&t, tk) == Some(ino) && self.nlink(&t, ino) >= 2);
                if linked {
                    t.procs[p].pc = Pc::ReleaseUnlink;
                    t.procs[p].did |= R_RELEASE_RETRY;
                } else {
                    t.procs[p].pc = Pc::Parked;
                }
                push(Op::Fresh, t);
            }
            Pc::ReleasePark => {
                let ino = self.own_ino(s, p);
                let n = self.name_of(ino);
                let bn = Name::X(n, pr.xj, pu);
                let next = Name::T(n, pr.k + 1);
                for lost in [false, true] {
                    let mut t = s.clone();
                    if self.cur(&t, bn) == Some(ino) {
                        self.set(&mut t, bn, None);
                        self.set(&mut t, next, Some(ino));
                        t.inodes[ino as usize] = Some(Loc::T(pr.k + 1));
                        let q = &mut t.procs[p];
                        q.age_r = 0;
                        if lost {
                            q.pc = Pc::ReleaseParkEnoent;
                        } else {
                            q.k += 1;
                            q.pc = Pc::Parked;
                        }
                    } else {
                        if lost {
                            continue;
                        }
                        t.procs[p].pc = Pc::ReleaseParkEnoent;
                    }
                    push(Op::Rename { lost }, t);
                }
            }
            Pc::ReleaseRename => {
                let ino = self.own_ino(s, p);
                let tk = Name::T(self.name_of(ino), pr.k);
                let next = Name::T(self.name_of(ino), pr.k + 1);
                let mut t = s.clone();
                if self.cur(&t, tk).is_some() {
                    self.set(&mut t, tk, None);
                    self.set(&mut t, next, Some(ino));
                    t.inodes[ino as usize] = Some(Loc::T(pr.k + 1));
                    let q = &mut t.procs[p];
                    q.k += 1;
                    q.pc = Pc::Parked;
                    if self.proto.fix_acquire_keeps_renewed_at {
                        q.age_r = 0;
                    }
                } else {
                    let q = &mut t.procs[p];
                    q.has_claim = false;
                    q.pc = Pc::NoClaim;
                }
                push(Op::Rename { lost: false }, t);
            }
            Pc::Obs0 => {
                let ino = self.own_ino(s, p);
                for seen in s.l.readable() {
                    let mut t = s.clone();
                    t.procs[p].pc = match seen {
                        None => Pc::Parked,
                        Some(x) if x == ino => Pc::Parked,
                        Some(x) => {
                            let o = self.owner(x);
                            let dead = self.b.hosts[o] == self.b.hosts[p] && s.procs[o].pc == Pc::Dead;
                            let carried = if self.proto.m(Mutation::T0BeforeListing) && !dead { Some(0) } else { None };
                            Pc::Obs1 { x, dead, carried }
                        }
                    };
                    push(Op::Read { seen }, t);
                }
            }
            Pc::Obs1 { x, dead, carried } => {
                let n = self.name_of(x);
                let mut found: Vec<Option<Name>> = Vec::new();
                let mut all_absent = true;
                for (name, v) in s.names.range(Name::T(n, 0)..=Name::T(n, u8::MAX)) {
                    let r = v.readable();
                    if r.iter().any(|y| y.is_some()) {
                        found.push(Some(*name));
                    }
                    if !r.contains(&None) {
                        all_absent = false;
                    }
                }
                if all_absent && self.proto.take_over_x {
                    // No live token listed: a `.x` name (a breaker's), if any.
                    for (name, v) in s.names.range(Name::X(n, 0, 0)..=Name::X(n, u8::MAX, u8::MAX)) {
                        let r = v.readable();
                        if r.iter().any(|y| y.is_some()) {
                            found.push(Some(*name));
                        }
                        if !r.contains(&None) {
                            all_absent = false;
                        }
                    }
                }
                if all_absent {
                    found.push(None);
                }
                for f in found {
                    let mut t = s.clone();
                    t.procs[p].pc = match f {
                        None => Pc::Parked,
                        // Same host, holder dead: a live token is broken at once; a `.x`
                        // name (a breaker has it) is watched like any lease.
                        Some(src @ Name::T(..)) if dead => Pc::Brk1 { x, src, dead: true },
                        Some(src) => Pc::PollL { x, src, age: carried.unwrap_or(0) },
                    };
                    push(Op::List { found: f }, t);
                }
            }
            Pc::PollL { x, src, age } => {
                for seen in s.l.readable() {
                    let mut t = s.clone();
                    t.procs[p].pc = if seen == Some(x) { Pc::PollT { x, src, age } } else { Pc::Parked };
                    push(Op::Read { seen }, t);
                }
            }
            Pc::PollT { x, src, age } => {
                for seen in self.readable(s, src) {
                    let mut t = s.clone();
                    t.procs[p].pc = if seen.is_some() {
                        if age >= self.b.break_at() {
                            if self.proto.m(Mutation::BreakWithoutToken) {
                                Pc::Brk3 { x, j: NO_X, dead: false, age: 0 }
                            } else {
                                Pc::Brk1 { x, src, dead: false }
                            }
                        } else {
                            Pc::PollL { x, src, age }
                        }
                    } else {
                        match src {
                            Name::T(_, k) => Pc::Look { x, k, m: k + 1, age },
                            // A `.x` name gone: list again.
                            Name::X(..) => {
                                let carried = if self.proto.m(Mutation::NoWaitAfterRelisting) { Some(age) } else { None };
                                Pc::Obs1 { x, dead: false, carried }
                            }
                        }
                    };
                    push(Op::Read { seen }, t);
                }
            }
            Pc::Look { x, k, m, age } => {
                let n = Name::T(self.name_of(x), m);
                for seen in self.readable(s, n) {
                    let mut t = s.clone();
                    t.procs[p].pc = if seen.is_some() {
                        Pc::PollL { x, src: Name::T(self.name_of(x), m), age: 0 }
                    } else if m < k + self.b.lookahead {
                        Pc::Look { x, k, m: m + 1, age }
                    } else {
                        let carried = if self.proto.m(Mutation::NoWaitAfterRelisting) { Some(age) } else { None };
                        Pc::Obs1 { x, dead: false, carried }
                    };
                    push(Op::Read { seen }, t);
                }
            }
            Pc::Brk1 { x, src, dead } => {
                let n = self.name_of(x);
                let j = s.xnext[n as usize];
                if j >= self.b.max_x {
                    return; // past the bound: the process pauses for ever
                }
                let to = Name::X(n, j, pu);
                for lost in [false, true] {
                    let mut t = s.clone();
                    match self.cur(&t, src) {
                        Some(y) => {
                            let k = match src {
                                Name::T(_, k) => {
                                    // The breaker takes the token of whatever inode is there.
                                    let o = self.owner(y);
                                    let holds_y = t.procs[o].inc > 0 && self.own_ino(&t, o) == y;
                                    if t.l.cur == Some(y) && holds_y && self.is_held_zero(&t, o) {
                                        t.bad |= BAD_BREAK_LIVE;
                                    }
                                    for (jj, loc) in t.inodes.iter().enumerate() {
                                        if jj as u8 != y
                                            && self.name_of(jj as u8) == n
                                            && matches!(loc, Some(Loc::B(kk, _, _)) | Some(Loc::Taken(kk)) if *kk == k)
                                        {
                                            t.bad |= BAD_TOKEN_TWICE;
                                        }
                                    }
                                    k
                                }
                                Name::X(..) => {
                                    t.procs[p].did |= R_TAKE_OVER;
                                    Self::taken_epoch(t.inodes[y as usize])
                                }
                            };
                            self.set(&mut t, src, None);
                            self.set(&mut t, to, Some(y));
                            t.xnext[n as usize] += 1;
                            t.inodes[y as usize] = Some(Loc::B(k, j, pu));
                            t.procs[p].pc = if lost { Pc::Brk1Enoent { x, j, dead, age: 0 } } else { Pc::Brk2 { x, j, dead, age: 0 } };
                        }
                        None => {
                            if lost {
                                continue;
                            }
                            t.procs[p].pc = Pc::Brk1Enoent { x, j, dead, age: 0 };
                        }
                    }
                    push(Op::Rename { lost }, t);
                }
            }
            Pc::Brk1Enoent { x, j, dead, age } => {
                let bn = Name::X(self.name_of(x), j, pu);
                for seen in self.readable(s, bn) {
                    let mut t = s.clone();
                    t.procs[p].pc = if seen == Some(x) { Pc::Brk2 { x, j, dead, age } } else { Pc::Obs0 };
                    push(Op::Read { seen }, t);
                }
            }
            Pc::Brk2 { x, j, dead, age } => {
                let bn = Name::X(self.name_of(x), j, pu);
                if self.proto.m(Mutation::BreakSkipsLCheck) {
                    let mut t = s.clone();
                    t.procs[p].pc = Pc::Brk3 { x, j, dead, age };
                    push(Op::Fresh, t);
                } else if self.proto.fix_break_checks_nlink {
                    let mut t = s.clone();
                    let linked = match self.cur(&t, bn) {
                        Some(y) => self.nlink(&t, y) >= 2,
                        None => false,
                    };
                    t.procs[p].pc = if linked { Pc::Brk3 { x, j, dead, age } } else { Pc::Brk4 { x, j } };
                    push(Op::Fresh, t);
                } else {
                    for seen in s.l.readable() {
                        let mut t = s.clone();
                        t.procs[p].pc = if seen == Some(x) { Pc::Brk3 { x, j, dead, age } } else { Pc::Brk4 { x, j } };
                        push(Op::Read { seen }, t);
                    }
                }
            }
            Pc::Brk3 { x, j, dead, age } => {
                let n = self.name_of(x);
                let late = half && j != NO_X && !self.proto.m(Mutation::BreakerUnlinksLate) && age >= fence_at;
                if late {
                    // Half a lease since the take: take our token again under a fresh name.
                    let j2 = s.xnext[n as usize];
                    if j2 >= self.b.max_x {
                        return;
                    }
                    let bn = Name::X(n, j, pu);
                    let to = Name::X(n, j2, pu);
                    for lost in [false, true] {
                        let mut t = s.clone();
                        match self.cur(&t, bn) {
                            Some(y) => {
                                let k = Self::taken_epoch(t.inodes[y as usize]);
                                self.set(&mut t, bn, None);
                                self.set(&mut t, to, Some(y));
                                t.xnext[n as usize] += 1;
                                t.inodes[y as usize] = Some(Loc::B(k, j2, pu));
                                t.procs[p].did |= R_LATE_BREAK;
                                t.procs[p].pc =
                                    if lost { Pc::Brk1Enoent { x, j: j2, dead, age: 0 } } else { Pc::Brk2 { x, j: j2, dead, age: 0 } };
                            }
                            None => {
                                if lost {
                                    continue;
                                }
                                // Taken over: leave L to that breaker.
                                t.procs[p].pc = Pc::Brk1Enoent { x, j: j2, dead, age: 0 };
                            }
                        }
                        push(Op::Rename { lost }, t);
                    }
                } else {
                    let outcomes: &[(bool, bool)] =
                        if half && j != NO_X { &[(true, false), (true, true), (false, true)] } else { &[(true, false)] };
                    for &(effect, transient) in outcomes {
                        let mut t = s.clone();
                        if effect {
                            self.unlink_l(&mut t, p, None);
                        }
                        t.procs[p].pc = if j == NO_X {
                            Pc::Parked
                        } else if transient {
                            Pc::Brk2 { x, j, dead, age }
                        } else {
                            Pc::Brk4 { x, j }
                        };
                        push(if transient { Op::UnlinkTransient { done: effect } } else { Op::Unlink }, t);
                    }
                }
            }
            Pc::Brk4 { x, j } => {
                let bn = Name::X(self.name_of(x), j, pu);
                let mut t = s.clone();
                if let Some(y) = self.cur(&t, bn) {
                    t.inodes[y as usize] = Some(Loc::Taken(Self::taken_epoch(t.inodes[y as usize])));
                }
                self.set(&mut t, bn, None);
                t.procs[p].pc = Pc::Parked;
                push(Op::Unlink, t);
            }
        }
    }

    /// A successful renewal (the rename took effect and we know it).
    fn renewed(&self, t: &mut State, p: usize) {
        let q = &mut t.procs[p];
        q.k += 1;
        q.pc = Pc::Held;
        q.renewed = true;
        if let Fence::Written(sz) = q.fence {
            let tok = sz + 1;
            q.fence = Fence::Token(tok);
            if tok <= t.max_token {
                t.bad |= BAD_FENCE_ORDER;
            }
            t.max_token = t.max_token.max(tok);
        }
    }

    fn held_steps(&self, s: &State, p: usize, push: &mut impl FnMut(Op, State)) {
        let pr = &s.procs[p];
        let ino = self.own_ino(s, p);
        let n = self.name_of(ino);
        let tk = Name::T(n, pr.k);
        let next = Name::T(n, pr.k + 1);
        let can_rename = pr.k < self.max_epoch(p);
        let broken = Self::taken(s.inodes[ino as usize]);
        // Renew.
        if can_rename {
            if self.proto.m(Mutation::RenewByUnlinkCreate) {
                let mut t = s.clone();
                if self.cur(&t, tk).is_some() {
                    self.set(&mut t, tk, None);
                    t.inodes[ino as usize] = Some(Loc::Unnamed(pr.k));
                }
                // ENOENT is taken for a lost reply.
                t.procs[p].pc = Pc::RenewCreate;
                t.procs[p].age_r = 0;
                push(Op::Unlink, t);
            } else {
                for lost in [false, true] {
                    let mut t = s.clone();
                    if self.cur(&t, tk).is_some() {
                        if broken {
                            t.bad |= BAD_BROKEN_ACTED;
                        }
                        self.set(&mut t, tk, None);
                        self.set(&mut t, next, Some(ino));
                        t.inodes[ino as usize] = Some(Loc::T(pr.k + 1));
                        t.procs[p].age_r = 0; // renewed_at read before the rename
                        if lost {
                            t.procs[p].pc = Pc::RenewEnoent;
                        } else {
                            self.renewed(&mut t, p);
                        }
                    } else {
                        if lost {
                            continue;
                        }
                        t.procs[p].pc = Pc::RenewEnoent;
                    }
                    push(Op::Renew { lost }, t);
                }
            }
        }
        // Release.
        if can_rename {
            if self.proto.m(Mutation::ReleaseUnlinksFirst) {
                let mut t = s.clone();
                if let Some(z) = t.l.cur {
                    if z != ino || broken {
                        t.bad |= BAD_UNLINK_L;
                    }
                }
                self.set_l(&mut t, None);
                t.procs[p].pc = Pc::ReleaseRename;
                t.procs[p].fence = Fence::None;
                push(Op::Unlink, t);
            } else {
                for lost in [false, true] {
                    let mut t = s.clone();
                    if self.cur(&t, tk).is_some() && self.proto.fix_release_takes_own_token {
                        // Take our own token: only we may now remove L.
                        let j = t.xnext[n as usize];
                        if j >= self.b.max_x {
                            continue;
                        }
                        let bn = Name::X(n, j, p as u8);
                        self.set(&mut t, tk, None);
                        self.set(&mut t, bn, Some(ino));
                        t.xnext[n as usize] += 1;
                        t.procs[p].xj = j;
                        t.inodes[ino as usize] = Some(Loc::B(pr.k, j, p as u8));
                        t.procs[p].pc = if lost { Pc::ReleaseEnoent } else { Pc::ReleaseUnlink };
                    } else if self.cur(&t, tk).is_some() {
                        if broken {
                            t.bad |= BAD_BROKEN_ACTED;
                        }
                        self.set(&mut t, tk, None);
                        self.set(&mut t, next, Some(ino));
                        t.inodes[ino as usize] = Some(Loc::T(pr.k + 1));
                        if self.proto.fix_acquire_keeps_renewed_at {
                            t.procs[p].age_r = 0;
                        }
                        if lost {
                            t.procs[p].pc = Pc::ReleaseEnoent;
                        } else {
                            t.procs[p].k += 1;
                            t.procs[p].pc = Pc::ReleaseUnlink;
                        }
                    } else {
                        if lost {
                            continue;
                        }
                        t.procs[p].pc = Pc::ReleaseEnoent;
                    }
                    t.procs[p].fence = Fence::None;
                    t.procs[p].renewed = false;
                    push(Op::Release { lost }, t);
                }
            }
        }
        // Fencing token, step 1.
        if self.b.fencing {
            match pr.fence {
                Fence::None => {
                    let mut t = s.clone();
                    t.procs[p].fence = Fence::Read(s.fence_size);
                    push(Op::FenceRead, t);
                }
                Fence::Read(sz) => {
                    let mut t = s.clone();
                    t.fence_size = t.fence_size.max(sz + 1);
                    if self.proto.m(Mutation::FenceWithoutRenewal) {
                        let tok = sz + 1;
                        t.procs[p].fence = Fence::Token(tok);
                        if tok <= t.max_token {
                            t.bad |= BAD_FENCE_ORDER;
                        }
                        t.max_token = t.max_token.max(tok);
                    } else {
                        t.procs[p].fence = Fence::Written(sz);
                    }
                    push(Op::FenceWrite, t);
                }
                _ => {}
            }
        }
    }

    /// A readable account of a path: each action and what it changed.
    pub fn explain(&self, path: &[(State, Option<Action>)]) -> String {
        let mut out = String::new();
        let mut tick = 0u32;
        for (i, (st, act)) in path.iter().enumerate() {
            if let Some(a) = act {
                if a.op == Op::Tick {
                    tick += 1;
                    out.push_str(&format!("  --- tick {tick} ---\n"));
                } else {
                    let next = &path[i + 1].0;
                    out.push_str(&format!("  t={tick} {a:?}: {}\n", self.describe(st, next, a.p as usize)));
                }
            }
        }
        let last = &path[path.len() - 1].0;
        out.push_str(&format!("  final: L={:?} names={:?} inodes={:?} bad={:#x}\n", last.l.cur, cur_names(last), last.inodes, last.bad));
        for (p, pr) in last.procs.iter().enumerate() {
            out.push_str(&format!(
                "    p{p} (host {}): {:?} k={} age_r={} fence={:?} is_held()==0: {}\n",
                self.b.hosts[p],
                pr.pc,
                pr.k,
                pr.age_r,
                pr.fence,
                self.is_held_zero(last, p)
            ));
        }
        out
    }

    fn describe(&self, before: &State, after: &State, p: usize) -> String {
        let a = &after.procs[p];
        let mut d = format!("{:?} -> {:?}", before.procs[p].pc, a.pc);
        if before.l.cur != after.l.cur {
            d.push_str(&format!("; L {:?} -> {:?}", before.l.cur, after.l.cur));
        }
        let bn = cur_names(before);
        let an = cur_names(after);
        if bn != an {
            d.push_str(&format!("; names {bn:?} -> {an:?}"));
        }
        if before.fence_size != after.fence_size {
            d.push_str(&format!("; fence size {}", after.fence_size));
        }
        if after.bad != 0 {
            d.push_str(&format!("; VIOLATION {:#x}", after.bad));
        }
        d
    }
}

fn cur_names(s: &State) -> Vec<String> {
    s.names
        .iter()
        .filter_map(|(n, v)| {
            v.cur.map(|x| match n {
                Name::T(n, k) => format!("T({n},{k})=i{x}"),
                Name::X(n, j, p) => format!("X({n},{j},p{p})=i{x}"),
            })
        })
        .collect()
}

thread_local! {
    static CACHE: std::cell::RefCell<Option<(State, Vec<(Action, State)>)>> = const { std::cell::RefCell::new(None) };
}

impl Model for LeaseModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let n = self.nprocs();
        vec![State {
            l: Ver::default(),
            names: BTreeMap::new(),
            inodes: vec![None; n * self.b.claims as usize],
            procs: vec![
                Proc { pc: Pc::NoClaim, inc: 0, has_claim: false, k: 0, age_r: 0, fence: Fence::None, renewed: false, xj: 0, did: 0 };
                n
            ],
            fence_size: 0,
            max_token: 0,
            crashes: 0,
            bad: 0,
            xnext: vec![0; n * self.b.claims as usize],
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        let succ = self.successors(s);
        actions.extend(succ.iter().map(|(a, _)| *a));
        // The checker asks next_state for each of these actions right after, on this thread.
        CACHE.with(|c| *c.borrow_mut() = Some((s.clone(), succ)));
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        let hit = CACHE.with(|c| {
            let c = c.borrow();
            match &*c {
                Some((st, succ)) if st == s => Some(succ.iter().find(|(a, _)| *a == action).map(|(_, t)| t.clone())),
                _ => None,
            }
        });
        if let Some(r) = hit {
            return r;
        }
        if action.op == Op::Tick {
            let mut t = s.clone();
            self.tick(&mut t);
            return Some(t);
        }
        let mut out = Vec::new();
        self.proc_steps(s, action.p as usize, &mut out);
        out.into_iter().find(|(a, _)| *a == action).map(|(_, t)| t)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut props = vec![
            Property::always("exclusion: two holders with is_held()==0", |m: &LeaseModel, s: &State| {
                (0..m.nprocs()).filter(|&p| m.is_held_zero(s, p)).count() <= 1
            }),
            Property::always("unlink of L only by its holder or the taker of its token", |_, s: &State| s.bad & BAD_UNLINK_L == 0),
            Property::always("a token taken by one breaker only", |_, s: &State| s.bad & BAD_TOKEN_TWICE == 0),
            Property::always("a broken holder's renew/release fails and removes nothing", |_, s: &State| s.bad & BAD_BROKEN_ACTED == 0),
            Property::always("no break of a holder whose is_held() is 0", |_, s: &State| s.bad & BAD_BREAK_LIVE == 0),
            Property::always("fencing tokens strictly increase", |_, s: &State| s.bad & BAD_FENCE_ORDER == 0),
            Property::always("at most one critical section unfenced (holding the newest token)", |m: &LeaseModel, s: &State| {
                s.max_token == 0
                    || (0..m.nprocs()).filter(|&p| m.believes_held(s, p) && s.procs[p].fence == Fence::Token(s.max_token)).count() <= 1
            }),
            // Reachability: the model must be able to do these, or the checks above are vacuous.
            Property::sometimes("a held lease is broken (token taken while L links it)", |_, s: &State| {
                s.inodes.iter().enumerate().any(|(i, l)| matches!(l, Some(Loc::B(..))) && s.l.cur == Some(i as u8))
            }),
            Property::sometimes("a lease is taken over after a break", |m: &LeaseModel, s: &State| {
                s.inodes.iter().any(|l| matches!(l, Some(Loc::Taken(_))))
                    && (0..m.nprocs()).any(|p| s.procs[p].pc == Pc::Held && !LeaseModel::taken(s.inodes[m.own_ino(s, p) as usize]))
            }),
            Property::sometimes("a holder renews", |m: &LeaseModel, s: &State| {
                (0..m.nprocs()).any(|p| s.procs[p].pc == Pc::Held && s.procs[p].renewed)
            }),
            Property::sometimes("a broken holder's renewal or release meets ENOENT", |m: &LeaseModel, s: &State| {
                (0..m.nprocs()).any(|p| {
                    matches!(s.procs[p].pc, Pc::RenewEnoent | Pc::ReleaseEnoent) && LeaseModel::taken(s.inodes[m.own_ino(s, p) as usize])
                })
            }),
            Property::sometimes("a same-host dead holder is cleared", |_, s: &State| {
                s.procs.iter().any(|q| matches!(q.pc, Pc::Brk3 { dead: true, .. }))
            }),
            Property::sometimes("a lost link reply is recognised", |m: &LeaseModel, s: &State| {
                (0..m.nprocs()).any(|p| s.procs[p].pc == Pc::LinkEexist && s.l.cur == Some(m.own_ino(s, p)))
            }),
            Property::sometimes("an observer polls on a stale view of L", |_, s: &State| {
                s.procs.iter().any(|q| matches!(q.pc, Pc::PollT { x, .. } if s.l.cur != Some(x)))
            }),
            Property::sometimes("two fencing tokens handed out", |_, s: &State| s.max_token >= 2),
        ];
        if self.proto.unlink_within_half_lease {
            props.push(Property::sometimes("a late release renames its parked token again", |_, s: &State| s.procs.iter().any(|q| q.did & R_LATE_RELEASE != 0)));
            props.push(Property::sometimes("a release retries its unlink after a link-count check", |_, s: &State| s.procs.iter().any(|q| q.did & R_RELEASE_RETRY != 0)));
            props.push(Property::sometimes("a late breaker renames its taken token to a fresh .x name", |_, s: &State| s.procs.iter().any(|q| q.did & R_LATE_BREAK != 0)));
        }
        if self.proto.take_over_x {
            props.push(Property::sometimes("a watcher takes over a .x name", |_, s: &State| s.procs.iter().any(|q| q.did & R_TAKE_OVER != 0)));
        }
        if self.proto.rename_stale_parked {
            props.push(Property::sometimes("an acquisition renames a long-parked claim first", |_, s: &State| s.procs.iter().any(|q| q.did & R_ACQ_RENAME != 0)));
        }
        props
    }
}

/// The result of one check.
#[derive(Debug)]
pub struct Outcome {
    pub unique_states: usize,
    pub depth: usize,
    /// Violated `always` properties with a readable counterexample (shortest: BFS).
    pub violations: Vec<(&'static str, String)>,
    /// `sometimes` properties with no example in the whole state space.
    pub unreached: Vec<&'static str>,
}

/// Explores the model breadth-first on `threads` threads; with `stop_at_first`, stops at the
/// first violation (the mutation check), else explores every reachable state.
pub fn check(proto: Protocol, b: Bounds, threads: usize, stop_at_first: bool) -> Outcome {
    check_model(LeaseModel::new(proto, b), threads, stop_at_first)
}

pub fn check_model(model: LeaseModel, threads: usize, stop_at_first: bool) -> Outcome {
    use stateright::{Checker, Expectation, HasDiscoveries};
    let props = model.properties();
    let mut builder = model.clone().checker().threads(threads);
    if stop_at_first {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    let checker = builder.spawn_bfs().join();
    let discoveries = checker.discoveries();
    let mut violations = Vec::new();
    let mut unreached = Vec::new();
    for prop in &props {
        match (prop.expectation.clone(), discoveries.get(prop.name)) {
            (Expectation::Always, Some(path)) => {
                let v = path.clone().into_vec();
                violations.push((prop.name, model.explain(&v)));
            }
            (Expectation::Sometimes, None) => unreached.push(prop.name),
            _ => {}
        }
    }
    Outcome { unique_states: checker.unique_state_count(), depth: checker.max_depth(), violations, unreached }
}
