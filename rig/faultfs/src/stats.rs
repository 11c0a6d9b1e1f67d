//! Operation and fault counters, and the atomically replaced stats file the
//! rig reads to check what was injected.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Mutex;

/// Counters that always appear in the stats file, even at zero, so the rig
/// can tell "nothing injected" from "wrong key".
const ALWAYS_SHOWN: &[&str] = &[
    "lost_reply_link",
    "lost_reply_unlink",
    "lost_reply_rename",
    "lost_reply_create",
    "rename_delays",
    "rename_source_gone",
    "transient_estale",
    "transient_eio",
    "transient_eintr",
    "attr_cache_hits",
    "attr_cache_misses",
    "negative_entries",
    "stale_handles",
    "control_reloads",
    "control_errors",
];

pub struct Stats {
    counters: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    pub fn new() -> Stats {
        let counters = ALWAYS_SHOWN.iter().map(|k| (*k, 0)).collect();
        Stats {
            counters: Mutex::new(counters),
        }
    }

    pub fn bump(&self, key: &'static str) {
        *self.counters.lock().unwrap().entry(key).or_insert(0) += 1;
    }

    #[cfg(test)]
    pub fn get(&self, key: &str) -> u64 {
        self.counters.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// `key=value` lines: first the caller's header lines (settings, pid...),
    /// then every counter in name order.
    pub fn render(&self, header: &[(String, String)]) -> String {
        let mut out = String::new();
        for (k, v) in header {
            let _ = writeln!(out, "{k}={v}");
        }
        for (k, v) in self.counters.lock().unwrap().iter() {
            let _ = writeln!(out, "{k}={v}");
        }
        out
    }
}

/// Replaces `path` with `contents` so a reader never sees a half-written
/// file: write a temporary file next to it, then rename over it.
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(contents.as_bytes())?;
    drop(file);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_header_then_sorted_counters() {
        let s = Stats::new();
        s.bump("op_link");
        s.bump("op_link");
        s.bump("lost_reply_link");
        let text = s.render(&[("pid".into(), "1".into())]);
        assert!(text.starts_with("pid=1\n"));
        assert!(text.contains("\nop_link=2\n"));
        assert!(text.contains("\nlost_reply_link=1\n"));
        assert!(text.contains("\ntransient_eio=0\n"));
        assert_eq!(s.get("op_link"), 2);
    }
}
