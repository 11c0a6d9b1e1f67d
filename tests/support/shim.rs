//! Builds the LD_PRELOAD fault shim (tests/shims/lost_reply.c) for the tests that run a
//! child of their own binary under it.

use std::path::{Path, PathBuf};

/// Compiles the shim into the target's temporary directory, one copy per test binary.
pub fn build_shim() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("liblost_reply-{}.so", env!("CARGO_CRATE_NAME")));
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let compiler = cc::Build::new()
        .target(&target)
        .host(&target)
        .opt_level(1)
        .cargo_metadata(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(root.join("tests/shims/lost_reply.c"))
        .arg("-ldl")
        .status()
        .expect("runs the C compiler");
    assert!(status.success(), "the shim compiles");
    out
}
