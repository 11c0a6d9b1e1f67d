//! Builds the LD_PRELOAD fault shim (tests/shims/lost_reply.c) for the tests that run a
//! child of their own binary under it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Compiles the shim into the target's temporary directory, once per test binary (its
/// tests run in parallel and share the copy): it is written under a name of its own and
/// renamed into place, so no child ever preloads a half-written file.
pub fn build_shim() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(compile).clone()
}

fn compile() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join(format!("liblost_reply-{}.so", env!("CARGO_CRATE_NAME")));
    let partial = dir.join(format!("liblost_reply-{}.so.{}", env!("CARGO_CRATE_NAME"), std::process::id()));
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let compiler = cc::Build::new().target(&target).host(&target).opt_level(1).cargo_metadata(false).get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&partial)
        .arg(root.join("tests/shims/lost_reply.c"))
        .arg("-ldl")
        .status()
        .expect("runs the C compiler");
    assert!(status.success(), "the shim compiles");
    std::fs::rename(&partial, &out).expect("the shim is put in place");
    out
}
