//! Link settings for the C library: a SONAME (cargo sets none) and an export list
//! that keeps everything but the `nfslock_*` API out of the dynamic symbol table.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets the manifest dir");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnfslock.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/src/ffi/exports.map");
    println!("cargo:rerun-if-changed=src/ffi/exports.map");
    println!("cargo:rerun-if-changed=build.rs");
}
