//! Through a pseudo-terminal: the live waiting line, and break's confirmation.

mod support;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::pty::{openpty, Winsize};
use support::*;

/// A pty whose master side is read into `seen` by a thread.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn new() -> Pty {
        let size = Winsize { ws_row: 24, ws_col: 250, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = openpty(Some(&size), None).unwrap();
        let master = std::fs::File::from(pty.master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every slave descriptor is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty { master, slave: pty.slave, seen }
    }

    fn slave(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, want: &str) {
        wait_until(&format!("the terminal shows {want:?}; it shows {:?}", self.text()), || self.text().contains(want));
    }
}

#[test]
fn waiting_line_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    let holder = hold(&x, "pty holder");
    let pty = Pty::new();
    let start = Instant::now();
    let mut waiter = Proc(
        Command::new(BIN)
            .args(["-w", "2.5", x.to_str().unwrap(), "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(pty.slave())
            .spawn()
            .unwrap(),
    );
    let line = format!("waiting for {}: held by {} pid {} (pty holder) for ", x.display(), hostname(), holder.pid());
    pty.wait_for(&line);
    // The seconds count up while it waits.
    pty.wait_for(&format!("{line}2 s"));
    assert_eq!(waiter.wait().code(), Some(124));
    assert!(start.elapsed().as_secs_f64() >= 2.5);
    pty.wait_for("timed out");
    // One line, redrawn in place: no newline before the error message.
    let text = pty.text();
    let before_error = &text[..text.find("nfslock:").unwrap()];
    assert!(!before_error.contains('\n'), "{text:?}");
}

#[test]
fn break_asks_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x");
    std::fs::write(lock_file(&x), b"((host elsewhere-host)(pid 7)(message theirs))").unwrap();
    for (answer, code, broken) in [("n\n", 1, false), ("yes\n", 0, true)] {
        let mut pty = Pty::new();
        let mut cli = Proc(
            Command::new(BIN)
                .args(["break", x.to_str().unwrap(), "--reason", "host retired"])
                .stdin(pty.slave())
                .stdout(Stdio::null())
                .stderr(pty.slave())
                .spawn()
                .unwrap(),
        );
        pty.wait_for("held by elsewhere-host pid 7 (theirs)");
        pty.wait_for("[y/N]");
        pty.master.write_all(answer.as_bytes()).unwrap();
        assert_eq!(cli.wait().code(), Some(code), "answer {answer:?}: {}", pty.text());
        assert_eq!(!lock_file(&x).exists(), broken, "answer {answer:?}");
    }
}
