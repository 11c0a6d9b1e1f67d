//! Link settings for the C library: a SONAME (cargo sets none), an export list that keeps
//! everything but the `nfslock_*` API out of the dynamic symbol table, and the symbol
//! version NFSLOCK_0 where the linker can apply it.
//!
//! SONAME: libnfslock.so.MAJOR.MINOR while the major version is 0, libnfslock.so.MAJOR
//! from 1.0 on: the scheme cargo-c uses (`cargo cinstall`), so both ways of installing
//! give programs the same dependency. Under Cargo's semver rules a 0.x minor release may
//! break the API, so it must get a new SONAME.
//!
//! Symbol versions: rustc hands the linker its own anonymous version script (the list of
//! exports) before ours. lld keeps the first version a name is given, so the names carry
//! their version themselves (`.symver`, see `symbol_versions!` in src/ffi/mod.rs) and our
//! script only defines the NFSLOCK_0 node and hides the rest. GNU ld refuses a named
//! version next to rustc's anonymous one ("anonymous version tag cannot be combined with
//! other version tags"), so with it the library is built unversioned (rustc's own list
//! still exports only `nfslock_*`). lld is rustc's default linker on
//! x86_64-unknown-linux-gnu from Rust 1.90; NFSLOCK_SYMVER=1 or =0 overrides the guess.

use std::env;
use std::process::Command;

fn main() {
    let major: u64 = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version").parse().expect("numeric major");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets the version");
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets the manifest dir");
    let soname = if major == 0 { format!("libnfslock.so.0.{minor}") } else { format!("libnfslock.so.{major}") };
    println!("cargo:rustc-check-cfg=cfg(nfslock_symver)");
    println!("cargo:rerun-if-changed=src/ffi/exports.map");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NFSLOCK_SYMVER");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    let symver = match env::var("NFSLOCK_SYMVER").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        Ok(other) => panic!("NFSLOCK_SYMVER must be 1 or 0, not {other:?}"),
        Err(_) => linker_is_lld(),
    };
    if symver {
        println!("cargo:rustc-cfg=nfslock_symver");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/src/ffi/exports.map");
    } else {
        println!(
            "cargo:warning=libnfslock.so is built without symbol versions (GNU ld cannot add them \
             beside rustc's export list; lld can: NFSLOCK_SYMVER=1 if lld links)"
        );
    }
}

/// Whether the cdylib is linked by lld: rustc's own (x86_64 Linux GNU, Rust 1.90 and
/// later, unless turned off in RUSTFLAGS), or one asked for with -fuse-ld=lld.
fn linker_is_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("-fuse-ld=") {
        return flags.contains("-fuse-ld=lld");
    }
    if flags.contains("linker-features=-lld") || flags.contains("link-self-contained=-linker") {
        return false;
    }
    let default_lld_target = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    default_lld_target && rustc_minor().is_some_and(|m| m >= 90)
}

/// The minor version of the rustc cargo runs (1.MINOR.x).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok()
}
