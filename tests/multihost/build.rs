//! Builds the rig's two programs: the fault-injecting filesystem (its own cargo
//! project under rig/faultfs) and the C worker (rig/worker.c against the library).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../support/cdylib.rs"]
mod cdylib;

/// `cargo build --release` of rig/faultfs, into a target directory of its own: the
/// `cargo test` running us holds the lock on the main one.
pub fn faultfs(root: &Path, tmp: &Path) -> PathBuf {
    let manifest = root.join("rig/faultfs/Cargo.toml");
    let target = tmp.parent().expect("the tmp dir is inside the target dir").join("rig-faultfs");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building the rig's filesystem failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let exe = target.join("release/nfslock-faultfs");
    assert!(exe.is_file(), "{} was not built", exe.display());
    exe
}

/// rig/worker.c, rig/worker_session.c and rig/worker_lease.c compiled against the header and the freshly built library.
pub fn worker(root: &Path, tmp: &Path) -> PathBuf {
    let work = tmp.join("multihost-bin");
    std::fs::create_dir_all(&work).expect("creates the rig's bin dir");
    let exe = work.join("nfslock-rig-worker");
    let sources = [root.join("rig/worker.c"), root.join("rig/worker_session.c"), root.join("rig/worker_lease.c")];
    cdylib::build_c_program(&sources, &exe, &[]).unwrap_or_else(|e| panic!("{e}"));
    exe
}

/// rig/worker_manager.c, the lock manager's worker: a program of its own.
pub fn manager_worker(root: &Path, tmp: &Path) -> PathBuf {
    let work = tmp.join("multihost-bin");
    std::fs::create_dir_all(&work).expect("creates the rig's bin dir");
    let exe = work.join("nfslock-rig-manager");
    cdylib::build_c_program(&[root.join("rig/worker_manager.c")], &exe, &[]).unwrap_or_else(|e| panic!("{e}"));
    exe
}
