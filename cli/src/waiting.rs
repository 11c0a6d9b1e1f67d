//! What a person sees while nfslock waits for a lock. On a terminal: one live line,
//! "waiting for PATH: held by HOST pid N (MESSAGE) for 12 s", redrawn in place and
//! erased once the wait ends. Elsewhere: nothing, or with -v one line each time the
//! holder changes. The holder is read by a thread of its own (one read of the lock
//! file twice a second): the library's wait itself is left alone.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::describe;

/// No line for a lock taken at once: the first draw waits this long.
const QUIET_START: Duration = Duration::from_millis(150);
const REREAD: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// A live line (standard error is a terminal).
    Live,
    /// A line per change of holder (-v, standard error is not a terminal).
    Lines,
    Quiet,
}

impl Mode {
    pub fn for_stderr(verbose: bool) -> Mode {
        match (std::io::stderr().is_terminal(), verbose) {
            (true, _) => Mode::Live,
            (false, true) => Mode::Lines,
            (false, false) => Mode::Quiet,
        }
    }
}

/// The display of one wait; ends (and erases its line) when stopped or dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Display {
    pub fn start(path: &Path, mode: Mode) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (mode != Mode::Quiet).then(|| {
            let (stop, path) = (stop.clone(), path.to_path_buf());
            std::thread::spawn(move || show(&path, mode, &stop))
        });
        Display { stop, thread }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps up to `d`, returning early (true) once asked to stop.
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::park_timeout(left);
    }
    true
}

fn show(path: &PathBuf, mode: Mode, stop: &AtomicBool) {
    if pause(stop, QUIET_START) {
        return;
    }
    let shown = path.display().to_string();
    let bar = (mode == Mode::Live).then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} {wide_msg}").expect("a valid template"));
        bar
    });
    let mut last_holder = String::new();
    let mut read_at: Option<Instant> = None;
    let mut line = String::new();
    let mut info = None;
    loop {
        if read_at.is_none_or(|t| t.elapsed() >= REREAD) {
            info = Some(nfslock::lease::inspect(path, Duration::ZERO).map(|i| (describe::written_at(path), i)));
            read_at = Some(Instant::now());
        }
        match &info {
            Some(Ok((since, i))) => {
                line = format!("waiting for {shown}: {}", describe::waiting_for(i, *since));
                let holder = i.record.as_ref().map(describe::holder).unwrap_or_default();
                if mode == Mode::Lines && holder != last_holder {
                    eprintln!("nfslock: {line}");
                }
                last_holder = holder;
            }
            Some(Err(e)) => line = format!("waiting for {shown}: {}", e.cause()),
            None => {}
        }
        if let Some(bar) = &bar {
            bar.set_message(line.clone());
            bar.tick();
        }
        if pause(stop, TICK) {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
