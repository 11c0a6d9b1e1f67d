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

pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
