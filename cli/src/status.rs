//! `nfslock status PATH... [--json] [--watch SECONDS]`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nfslock::lease::{self, Info, State};
use serde_json::{json, Value};

use crate::args::StatusArgs;
use crate::describe;
use crate::exit;

/// What one look found for one path.
struct Report {
    path: PathBuf,
    found: Result<(Info, Option<SystemTime>), Problem>,
}

/// Why a path's state could not be told: its cause, and the errno's name.
struct Problem {
    cause: String,
    errno: &'static str,
}

impl Report {
    fn look(path: &Path, watch_for: Duration) -> Report {
        let found = match lease::inspect(path, watch_for) {
            // No lock file because there is no directory: a mistyped path, not a free lock.
            Ok(info) if info.state == State::Free && !directory_of(path).is_dir() => {
                Err(Problem { cause: "the directory does not exist".into(), errno: "ENOENT" })
            }
            Ok(info) => {
                let since = info.record.as_ref().and(describe::written_at(path));
                Ok((info, since))
            }
            Err(e) => Err(Problem { cause: e.cause().to_string(), errno: e.errno().name().unwrap_or("EIO") }),
        };
        Report { path: path.to_path_buf(), found }
    }

    fn code(&self) -> u8 {
        match &self.found {
            Ok((info, _)) if info.state == State::Free => exit::STATUS_FREE,
            Ok((info, _)) if info.state == State::Unreadable => exit::STATUS_ERROR,
            Ok(_) => exit::STATUS_HELD,
            Err(_) => exit::STATUS_ERROR,
        }
    }

    fn json(&self) -> Value {
        let path = self.path.to_string_lossy();
        let (info, since) = match &self.found {
            Ok(found) => found,
            Err(e) => return json!({ "path": path, "state": "error", "error": e.cause, "errno": e.errno }),
        };
        let record = info.record.as_ref();
        let lease = record.and_then(|r| r.lease.as_ref());
        json!({
            "path": path,
            "lock_file": describe::lock_file(&self.path).to_string_lossy(),
            "state": describe::state_name(info.state),
            "host": record.map(|r| describe::text(&r.host)),
            "pid": record.map(|r| r.pid),
            "message": record.map(|r| describe::text(&r.message)),
            "since": since.map(describe::utc),
            "held_for_s": since.map(|t| describe::age(t).as_secs_f64()),
            "holder_started": record.and_then(|r| r.start_time).map(describe::start_time),
            "lease_ms": lease.map(|l| l.ms),
            "mode": record.map(|_| if lease.is_some_and(|l| l.shared) { "shared" } else { "exclusive" }),
            "fencing_token": info.fencing_token,
            "shared_holders": info.shared_holders,
        })
    }

    fn text(&self) -> String {
        let shown = self.path.display();
        let (info, since) = match &self.found {
            Ok(found) => found,
            Err(e) => return format!("{shown}: error: {}\n", e.cause),
        };
        let mut out = format!("{shown}: {}\n", describe::state_name(info.state));
        if let Some(r) = &info.record {
            out += &format!("  holder:   {}\n", describe::holder(r));
            if let Some(t) = since {
                out += &format!("  since:    {} ({} ago)\n", describe::utc(*t), describe::duration(describe::age(*t)));
            }
            if let Some(t) = r.start_time {
                out += &format!("  started:  {} (the holder's process)\n", describe::start_time(t));
            }
            out += &match &r.lease {
                Some(l) => format!("  lease:    {} ms, {}\n", l.ms, if l.shared { "shared" } else { "exclusive" }),
                None => "  lease:    none (a plain lock)\n".to_string(),
            };
        }
        if info.shared_holders > 0 {
            out += &format!("  shared holders: {}\n", info.shared_holders);
        }
        if info.fencing_token > 0 {
            out += &format!("  fencing token: {} (the last one handed out)\n", info.fencing_token);
        }
        out
    }
}

fn directory_of(path: &Path) -> PathBuf {
    let lock = describe::lock_file(path);
    match lock.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn look_all(paths: &[PathBuf], watch_for: Duration) -> Vec<Report> {
    if watch_for.is_zero() || paths.len() == 1 {
        return paths.iter().map(|p| Report::look(p, watch_for)).collect();
    }
    // Watching leases takes up to `watch_for` each: side by side.
    std::thread::scope(|s| {
        let looks: Vec<_> = paths.iter().map(|p| s.spawn(move || Report::look(p, watch_for))).collect();
        looks.into_iter().map(|h| h.join().expect("a look does not panic")).collect()
    })
}

fn render(reports: &[Report], json: bool) -> (String, u8) {
    let code = reports.iter().map(Report::code).max_by_key(|c| match *c {
        exit::STATUS_ERROR => 2,
        exit::STATUS_HELD => 1,
        _ => 0,
    });
    let text = reports.iter().map(|r| if json { format!("{}\n", r.json()) } else { r.text() }).collect();
    (text, code.unwrap_or(exit::STATUS_FREE))
}

/// What changes between looks without the lock changing: the ages.
fn without_ages(reports: &[Report], json: bool) -> String {
    reports
        .iter()
        .map(|r| {
            if json {
                let mut v = r.json();
                if let Some(o) = v.as_object_mut() {
                    o.remove("held_for_s");
                }
                v.to_string()
            } else {
                r.text().lines().filter(|l| !l.starts_with("  since:")).collect::<Vec<_>>().join("\n")
            }
        })
        .collect()
}

pub fn status(args: StatusArgs) -> u8 {
    let Some(every) = args.watch else {
        let (text, code) = render(&look_all(&args.paths, Duration::ZERO), args.json);
        print!("{text}");
        return code;
    };
    let every = every.max(Duration::from_millis(10));
    let mut last = None;
    loop {
        let start = Instant::now();
        let reports = look_all(&args.paths, every);
        let key = without_ages(&reports, args.json);
        if last.as_ref() != Some(&key) {
            let (mut text, code) = render(&reports, args.json);
            if !args.json {
                text = format!("--- {}\n{text}", describe::utc(SystemTime::now()));
            }
            // Whoever reads us has gone (a closed pipe): so has the point of watching.
            let mut out = std::io::stdout().lock();
            if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
                return code;
            }
            last = Some(key);
        }
        std::thread::sleep(every.saturating_sub(start.elapsed()));
    }
}
