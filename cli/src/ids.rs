//! `nfslock ids DIR [--name NAME] [-n COUNT]`, `ids check DIR`, `ids repair DIR --next N`:
//! the session API for scripts. Each opens a session of its own for the call and closes
//! it (its ID locks released: the IDs stay unique, the counter never goes back).

use std::io::Write;
use std::path::Path;

use nfslock::session::{self, Session};
use nfslock::Errno;

use crate::args::{IdsAction, IdsArgs};
use crate::exit;

pub fn ids(args: IdsArgs) -> u8 {
    match args.action {
        None => new_ids(&args.dir.expect("clap requires DIR"), &args.name, args.count as usize),
        Some(IdsAction::Check { dir, name }) => check(&dir, &name),
        Some(IdsAction::Repair { dir, name, next }) => repair(&dir, &name, next),
    }
}

fn fail(e: &nfslock::Error) -> u8 {
    exit::report(e);
    exit::of_error(e)
}

fn new_ids(dir: &Path, name: &str, count: usize) -> u8 {
    let s = match Session::open(dir, Some(name), None) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let made = s.make_new_ids(count);
    let closed = s.close();
    let ids = match made {
        Ok(ids) => ids,
        Err(e) => return fail(&e),
    };
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    if std::io::stdout().write_all(text.as_bytes()).and_then(|()| std::io::stdout().flush()).is_err() {
        return exit::ERROR;
    }
    // The IDs were issued (the counter moved past them) even if the close failed.
    match closed {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// Opens a session on an existing repository only: checking or repairing a path that
/// is not one must not make one there.
fn open_existing(dir: &Path, name: &str) -> Result<Session, u8> {
    match session::repository_exists(dir, Some(name)) {
        Ok(true) => Session::open(dir, Some(name), None).map_err(|e| fail(&e)),
        Ok(false) => {
            eprintln!("nfslock: {}: no repository for the namespace {name:?} there", dir.display());
            Err(exit::ERROR)
        }
        Err(e) => Err(fail(&e)),
    }
}

fn check(dir: &Path, name: &str) -> u8 {
    let s = match open_existing(dir, name) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let checked = s.check();
    let closed = s.close();
    match checked {
        Ok(()) => {
            println!("{}: consistent", dir.display());
            closed.map_or_else(|e| fail(&e), |()| 0)
        }
        Err(e) if e.errno() == Errno::EBADMSG => {
            println!("{}: inconsistent: {}", dir.display(), e.cause());
            1
        }
        Err(e) => fail(&e),
    }
}

fn repair(dir: &Path, name: &str, next: u64) -> u8 {
    let s = match open_existing(dir, name) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let repaired = s.repair_counter(next);
    let closed = s.close();
    match repaired.and(closed) {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}
