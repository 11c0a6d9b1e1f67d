//! `nfslock [OPTIONS] PATH -- COMMAND [ARGS...]`: take the lock, run COMMAND, forward
//! signals to it, release the lock when it ends, exit with its status.
//!
//! The main thread only waits for events (events.rs): the lock is taken on a thread of
//! its own, so that a signal during a long wait ends it at once; COMMAND's end comes
//! from a thread that waits for it; a lease is looked at by a third.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nfslock::Errno;

use crate::args::RunArgs;
use crate::events::Event;
use crate::exit;
use crate::held::{Held, Request};
use crate::signals;
use crate::waiting::{Display, Mode};

/// A default message longer than this (a long command line) is cut, on a character
/// boundary; the record's own limit is 64 KiB.
const MAX_DEFAULT_MESSAGE: usize = 1000;
/// After a signal during the wait: how long a lock the acquiring thread has just taken
/// is waited for, to release it before exiting.
const HANDOVER: Duration = Duration::from_secs(2);

pub fn run(args: RunArgs) -> u8 {
    let path = args.path.clone().expect("clap requires PATH");
    let command = &args.command;
    let req = Request {
        message: args.message.clone().map_or_else(|| default_message(command), String::into_bytes),
        lease: args.lease,
        shared: args.shared,
        timeout: if args.nonblock { Some(Duration::ZERO) } else { args.wait },
    };
    let (tx, rx) = mpsc::channel();
    signals::block();
    signals::listen(tx.clone());
    let mode = Mode::for_stderr(args.verbose);
    let started = Instant::now();
    let held = match acquire(&path, &req, mode, &tx, &rx) {
        Ok(held) => held,
        Err(code) => return report_failure(code, &args),
    };
    if args.verbose {
        eprintln!("nfslock: acquired {} after {:.1} s", path.display(), started.elapsed().as_secs_f64());
    }
    let code = hold_and_run(&path, held, command, &args, tx, &rx);
    if args.verbose {
        eprintln!("nfslock: released {}", path.display());
    }
    code
}

/// Why the lock was not taken.
enum Failed {
    Busy(nfslock::Error),
    TimedOut(nfslock::Error),
    Error(nfslock::Error),
    Signal(i32),
}

fn report_failure(failed: Failed, args: &RunArgs) -> u8 {
    match failed {
        Failed::Busy(e) => {
            eprintln!("nfslock: {}: busy: {}", shown(&e), e.cause());
            args.busy_code()
        }
        Failed::TimedOut(e) => {
            eprintln!("nfslock: {}: timed out: {}", shown(&e), e.cause());
            args.timeout_code()
        }
        Failed::Error(e) => {
            exit::report(&e);
            exit::of_error(&e)
        }
        Failed::Signal(sig) => 128 + sig as u8,
    }
}

fn shown(e: &nfslock::Error) -> String {
    e.path().map(|p| p.display().to_string()).unwrap_or_default()
}

fn acquire(path: &Path, req: &Request, mode: Mode, tx: &Sender<Event>, rx: &Receiver<Event>) -> Result<Held, Failed> {
    {
        let (tx, path, req) = (tx.clone(), path.to_path_buf(), req.clone());
        std::thread::spawn(move || {
            let _ = tx.send(Event::Acquired(Held::acquire(&path, &req)));
        });
    }
    let mut display = Display::start(path, mode);
    loop {
        match rx.recv().expect("the acquiring thread reports") {
            Event::Acquired(Ok(held)) => return Ok(held),
            Event::Acquired(Err(e)) => {
                display.stop();
                return Err(match e.errno() {
                    Errno::EAGAIN => Failed::Busy(e),
                    Errno::ETIMEDOUT => Failed::TimedOut(e),
                    _ => Failed::Error(e),
                });
            }
            Event::Signal { sig, .. } => {
                display.stop();
                abandon(path, rx);
                return Err(Failed::Signal(sig));
            }
            Event::Exited(_) | Event::Lost(_) => {}
        }
    }
}

/// Gives up a wait that a signal ended. The library's wait cannot be interrupted, so
/// the acquiring thread may be taking the lock right now: a lock it has taken is
/// released here (the library's exit hook also releases the ones it has recorded).
/// A link landing in the microseconds between this look and the exit would leave a
/// dead process's lock, which the next process of this host to ask clears.
fn abandon(path: &Path, rx: &Receiver<Event>) {
    let mine = |r: &nfslock::Record| r.pid as u32 == std::process::id() && r.host == nfslock::host::hostname();
    let deadline = Instant::now() + HANDOVER;
    let ours_on_disk = nfslock::lockfile::read_record(path).is_ok_and(|r| mine(&r));
    loop {
        let wait = if ours_on_disk { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
        match rx.recv_timeout(wait) {
            Ok(Event::Acquired(Ok(held))) => {
                if let Err(e) = held.unlock() {
                    exit::report(&e);
                }
                return;
            }
            Ok(Event::Acquired(Err(_))) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Runs COMMAND holding `held`, then releases it.
fn hold_and_run(path: &Path, held: Held, command: &[OsString], args: &RunArgs, tx: Sender<Event>, rx: &Receiver<Event>) -> u8 {
    let held = Arc::new(held);
    let mut child = match spawn(command) {
        Ok(child) => child,
        Err(e) => {
            eprintln!("nfslock: {}: {e}", command[0].to_string_lossy());
            release(path, held, args.verbose);
            return if e.kind() == std::io::ErrorKind::NotFound { exit::NOT_FOUND } else { exit::CANNOT_RUN };
        }
    };
    let pid = child.id() as i32;
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Event::Exited(child.wait()));
        });
    }
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = held.check_every().map(|every| {
        let (held, watching, tx) = (held.clone(), watching.clone(), tx.clone());
        std::thread::spawn(move || watch_lease(&held, every, &watching, &tx))
    });
    let mut lost = false;
    let status = loop {
        match rx.recv().expect("the waiting thread reports") {
            Event::Exited(status) => break status,
            Event::Signal { sig, from_terminal } => {
                if args.verbose {
                    eprintln!(
                        "nfslock: signal {sig}{}",
                        if from_terminal { " (from the terminal, COMMAND has it)" } else { ", forwarded" }
                    );
                }
                if !from_terminal {
                    // SAFETY: kill(2) of our own child, which we have not waited for yet.
                    unsafe { libc::kill(pid, sig) };
                }
            }
            Event::Lost(e) => {
                lost = true;
                eprintln!("nfslock: {}: lost the lock ({}); sending SIGTERM to the command", path.display(), e.cause());
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            Event::Acquired(_) => {}
        }
    };
    watching.store(false, Ordering::SeqCst);
    if let Some(w) = watcher {
        w.thread().unpark();
        let _ = w.join();
    }
    lost |= !release(path, held, args.verbose);
    match status {
        Ok(_) if lost => exit::LOST,
        Ok(status) => status_code(status),
        Err(e) => {
            eprintln!("nfslock: waiting for the command: {e}");
            exit::ERROR
        }
    }
}

/// Releases the lock; false if it was no longer ours (broken, removed by hand).
fn release(path: &Path, held: Arc<Held>, verbose: bool) -> bool {
    let held = Arc::try_unwrap(held).expect("only the main thread holds the lock by now");
    match held.unlock() {
        Ok(()) => true,
        Err(e) => {
            exit::report(&e);
            if verbose {
                eprintln!("nfslock: {} was not released cleanly", path.display());
            }
            e.errno() != Errno::ENOLCK
        }
    }
}

/// Looks at the lease until told to stop; a lease lost, or not renewed for half of it
/// (others may break it after a whole one), is reported once.
fn watch_lease(held: &Held, every: Duration, watching: &AtomicBool, tx: &Sender<Event>) {
    while watching.load(Ordering::SeqCst) {
        match held.check() {
            Ok(()) => {}
            Err(e) if matches!(e.errno(), Errno::ENOLCK | Errno::ETIMEDOUT) => {
                let _ = tx.send(Event::Lost(e));
                return;
            }
            Err(_) => {}
        }
        std::thread::park_timeout(every);
    }
}

fn spawn(command: &[OsString]) -> std::io::Result<std::process::Child> {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // COMMAND starts as from a shell: no signal blocked (ours are, for
            // sigwaitinfo, and a mask survives exec), SIGPIPE at its default.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            // COMMAND must not run on without the lock if nfslock dies (SIGKILL).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() != parent {
                libc::_exit(128 + libc::SIGTERM);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// COMMAND's status as nfslock's: its exit code, or 128+N for signal N.
fn status_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => exit::ERROR,
    }
}

/// The command line, quoted where a shell would need it, cut to MAX_DEFAULT_MESSAGE.
fn default_message(command: &[OsString]) -> Vec<u8> {
    let words: Vec<String> = command.iter().map(|w| quote(&w.to_string_lossy())).collect();
    let mut s = words.join(" ");
    if s.len() > MAX_DEFAULT_MESSAGE {
        let mut cut = MAX_DEFAULT_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s.into_bytes()
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_message_is_the_quoted_command_line() {
        let cmd: Vec<OsString> = ["make", "-j4", "CFLAGS=-O2 -g", "it's"].iter().map(OsString::from).collect();
        assert_eq!(default_message(&cmd), b"make -j4 'CFLAGS=-O2 -g' 'it'\\''s'".to_vec());
        let long: Vec<OsString> = vec!["echo".into(), "\u{e9}".repeat(800).into()];
        let m = String::from_utf8(default_message(&long)).unwrap();
        assert!(m.len() <= MAX_DEFAULT_MESSAGE + 3 && m.ends_with("..."));
    }

    #[test]
    fn statuses() {
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
