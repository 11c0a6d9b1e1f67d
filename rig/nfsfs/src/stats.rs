//! Counters written to the `--stats` file as `key=value` lines (replaced atomically).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Default)]
pub struct Stats(Mutex<BTreeMap<String, u64>>);

impl Stats {
    pub fn bump(&self, key: &str) {
        *self.0.lock().unwrap().entry(key.to_string()).or_default() += 1;
    }

    pub fn render(&self, header: &[(&str, String)]) -> String {
        let mut out = String::new();
        for (k, v) in header {
            out.push_str(&format!("{k}={v}\n"));
        }
        for (k, v) in self.0.lock().unwrap().iter() {
            out.push_str(&format!("{k}={v}\n"));
        }
        out
    }
}

/// Writes `text` to a temporary file beside `path` and renames it there. The
/// temporary name is the whole file name plus the pid and a counter: two files with
/// one stem (`host.stats`, `host.ready`) written from two threads must not share it
/// (with_extension gave both `host.tmpPID`, and one rename failed with ENOENT).
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}.{n}", std::process::id()));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
