//! The committed header must be exactly what cbindgen generates from the sources.

use std::path::Path;

const REGENERATE: &str = "NFSLOCK_UPDATE_HEADER=1 cargo test --test header";

#[test]
fn committed_header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new().with_crate(root).with_config(config).generate().expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = root.join("include/nfslock.h");
    if std::env::var_os("NFSLOCK_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("writes include/nfslock.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/nfslock.h is stale (or missing): it differs from what the sources generate.\n\
         Regenerate it with:\n    {REGENERATE}"
    );
}
