//! The C library under test and how to build C programs against it: shared by the
//! tests that load, inspect or link `libnfslock.so` (included with `#[path]`, so cargo
//! does not build it as a test of its own; each includer uses part of it).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding the freshly built `libnfslock.so`.
///
/// `cargo test` builds the library's cdylib as a dependency of the test into
/// `target/<profile>/deps/` (next to the test executable) but does not copy it up to
/// `target/<profile>/`; only `cargo build` does. The copy in deps/ is the one built from the
/// current sources, so it comes first; `target/<profile>/` is the fallback.
pub fn cdylib_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let deps = exe.parent().ok_or("the test executable has no directory")?.to_path_buf();
    let profile_dir = deps.parent().ok_or("deps/ has no parent")?.to_path_buf();
    for dir in [&deps, &profile_dir] {
        if dir.join("libnfslock.so").is_file() {
            return Ok(dir.clone());
        }
    }
    Err(format!(
        "libnfslock.so is in neither {} nor {}: run `cargo build` first (the crate must keep \
         \"cdylib\" in its crate-type)",
        deps.display(),
        profile_dir.display()
    ))
}

/// The library's SONAME as build.rs sets it: libnfslock.so.0.MINOR for 0.x (cargo-c's
/// scheme), libnfslock.so.MAJOR from 1.0 on.
pub fn soname() -> String {
    match env!("CARGO_PKG_VERSION_MAJOR") {
        "0" => format!("libnfslock.so.0.{}", env!("CARGO_PKG_VERSION_MINOR")),
        major => format!("libnfslock.so.{major}"),
    }
}

/// A directory `work/lib` where the library is found under both the link-time name
/// (`libnfslock.so`, for `-lnfslock`) and its SONAME (`soname()`, which an executable
/// records and the loader looks for at run time; cargo creates no such file).
pub fn link_dir(work: &Path) -> Result<PathBuf, String> {
    let real = cdylib_dir()?.join("libnfslock.so");
    let dir = work.join("lib");
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let soname = soname();
    for name in ["libnfslock.so", soname.as_str()] {
        // symlink + rename: another test process (nextest) may be doing the same.
        let link = dir.join(name);
        let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&real, &tmp)
            .and_then(|()| fs::rename(&tmp, &link))
            .map_err(|e| format!("symlink {} -> {}: {e}", link.display(), real.display()))?;
    }
    Ok(dir)
}

/// Compiles `sources` into the executable `exe`, against `include/nfslock.h` and the
/// cdylib (found at run time through an rpath), with `-Wall -Wextra -Werror -pedantic`
/// and the given extra flags. The compiler is the one the cc crate finds, as for a build
/// script. Built under a private name, then renamed: another test process may be running
/// the previous build.
pub fn build_c_program(sources: &[PathBuf], exe: &Path, extra: &[String]) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = root.join("include/nfslock.h");
    if !header.is_file() {
        return Err(format!("{} is missing: generate the header first", header.display()));
    }
    let work = exe.parent().ok_or("the executable path has no directory")?;
    let libs = link_dir(work)?;
    // Outside a build script nothing sets TARGET/HOST/OPT_LEVEL, so they are given here.
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let compiler = cc::Build::new()
        .target(&triple)
        .host(&triple)
        .opt_level(1)
        .debug(true)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .warnings(false)
        .extra_warnings(false)
        .try_get_compiler()
        .map_err(|e| format!("no C compiler: {e}"))?;
    let tmp = exe.with_extension(format!("{}.tmp", std::process::id()));
    let mut cmd: Command = compiler.to_command();
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-pthread"])
        .arg("-I")
        .arg(root.join("include"))
        .args(extra)
        .args(sources)
        .arg("-o")
        .arg(&tmp)
        .arg(format!("-L{}", libs.display()))
        .arg("-lnfslock")
        .arg(format!("-Wl,-rpath,{}", libs.display()));
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "compiling {} failed ({}):\n{cmd:?}\n{}{}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::rename(&tmp, exe).map_err(|e| format!("rename {} to {}: {e}", tmp.display(), exe.display()))
}
