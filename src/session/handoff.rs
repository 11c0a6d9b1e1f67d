//! A session's side of combining (combine/): posting its request for new IDs in the
//! host's table, and taking back what a combiner did with it.

use std::time::Duration;

use nix::errno::Errno;

use super::combine::{Outcome, Request, Ticket, MAX_COMBINED};
use super::heartbeat::still_live;
use super::idlock::{self, MAX_LINKS_PER_CLAIM};
use super::ops::{claim, take_error};
use super::token::Posted;
use super::{Ids, Shared};
use crate::error::{Error, Result};
use crate::fsops;

const OP_MAKE: &str = "nfslock_session_make_new_ids";
/// How many times make_new_ids posts its request before it allocates on its own. A
/// retry follows only a quick outcome (a combiner that failed or died); waits that run
/// out end the call, so one call waits at most a patience for the token and one for
/// its combiner per try.
pub(super) const TRIES: usize = 3;

/// Posts a request for `n` IDs, linked to a claim with room for them; None when this
/// session does not combine (no table, too many IDs, no free slot).
pub fn post(shared: &Shared, st: &mut Ids, n: usize) -> nix::Result<Option<Ticket>> {
    let Some(table) = shared.table.as_ref() else { return Ok(None) };
    if n > MAX_COMBINED {
        return Ok(None);
    }
    let i = claim(shared, st, n as u64)?;
    let c = &st.claims[i];
    let request = Request { sid: &shared.sid, claim_no: c.number, claim_file: c.file, n };
    Ok(table.post(&shared.me, request, i))
}

/// Waits for a combiner to finish with our request, and takes its IDs: Some(ids) when
/// it issued them, None when this session should try again.
pub fn collect(shared: &Shared, st: &mut Ids, posted: Option<Posted>) -> Result<Option<Vec<u64>>> {
    let Some((table, ticket)) = posted else {
        return Err(Error::new(Errno::EAGAIN, OP_MAKE, Some(&shared.repo.ids), "no request of this call was posted"));
    };
    let n = ticket.n as u64;
    let file = st.claims[ticket.claim].file;
    match table.settle(ticket, shared.patience()) {
        Outcome::Done(first) => {
            st.claims[ticket.claim].links += n;
            let Some(end) = first.checked_add(n) else { return Ok(None) };
            let ids: Vec<u64> = (first..end).collect();
            // Reported only as seen: each ID linked to our claim (n lstats, against the
            // fdatasync the combiner saved us).
            if !ids.iter().all(|&id| fsops::id_of(&shared.repo.id_path(id)) == Ok(file)) {
                idlock::release_many(&shared.repo, ids, file);
                return Ok(None);
            }
            // Our lease, as for IDs we link ourselves: a session paused past it may
            // have been reaped while the combiner worked.
            if let Err(e) = still_live(shared, OP_MAKE) {
                idlock::release_many(&shared.repo, ids, file);
                return Err(e);
            }
            st.known_next = st.known_next.max(end);
            st.held.extend(ids.iter().map(|&id| (id, file)));
            Ok(Some(ids))
        }
        Outcome::Failed(Errno::EMLINK) => {
            st.claims[ticket.claim].links = MAX_LINKS_PER_CLAIM;
            Ok(None)
        }
        // Our claim is gone: a reaper judged this session dead.
        Outcome::Failed(Errno::ENOENT) if fsops::id_of(&st.claims[ticket.claim].path) != Ok(file) => {
            Err(take_error(shared, OP_MAKE, Errno::ENOENT))
        }
        Outcome::Failed(_) => Ok(None),
        Outcome::Orphaned(first) => {
            if let Some(f) = first {
                idlock::release_many(&shared.repo, f..f.saturating_add(n), file);
            }
            Ok(None)
        }
        Outcome::Pending(pid) => {
            st.abandoned.push(Ticket::clone(ticket));
            // The stopped combiner may still link this claim: later IDs go to a new one,
            // so that releasing what it issued can never touch them.
            st.claims[ticket.claim].links = MAX_LINKS_PER_CLAIM;
            Err(Error::new(
                Errno::ETIMEDOUT,
                OP_MAKE,
                Some(&shared.repo.ids),
                format!(
                    "gave up after {} ms waiting for process {pid} of this host, which took this request to serve it \
                     (it is stopped or stalled); IDs it may still issue for this request will be released",
                    shared.patience().as_millis()
                ),
            ))
        }
    }
}

/// Settles requests given up on before: IDs issued for them are released (never
/// reported, they are gaps); those still being served are kept for later.
pub fn settle_abandoned(shared: &Shared, st: &mut Ids) {
    let Some(table) = shared.table.as_ref() else { return };
    for ticket in std::mem::take(&mut st.abandoned) {
        let n = ticket.n as u64;
        let file = st.claims[ticket.claim].file;
        match table.settle(&ticket, Duration::ZERO) {
            Outcome::Done(first) | Outcome::Orphaned(Some(first)) => {
                idlock::release_many(&shared.repo, first..first.saturating_add(n), file);
            }
            Outcome::Pending(_) => st.abandoned.push(ticket),
            Outcome::Failed(_) | Outcome::Orphaned(None) => {}
        }
    }
}
