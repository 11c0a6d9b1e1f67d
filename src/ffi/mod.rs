//! The C ABI: thin conversions between C and the safe core, one file per family.
//! Every exported function runs inside `boundary::ffi_guard` (a test checks this).

/// Binds each exported function to the `NFSLOCK_0` version node of `exports.map`, as
/// `.symver` does in C. The export map alone cannot do it: rustc hands the linker its own
/// (unversioned) export list first, and lld keeps the first version a name is given, so
/// the names must carry their version themselves. `remove` leaves only the versioned name
/// in the object (a plain alias beside it would clash in a static link). A `.symver` must
/// sit in the object that defines the function, hence one call per file, in the same
/// module as its functions (a test checks that each file lists exactly its exports).
///
/// Only when build.rs found a linker that can apply it (`cfg(nfslock_symver)`, lld);
/// GNU ld refuses a named version beside rustc's anonymous one, so there the library is
/// built without versions.
macro_rules! symbol_versions {
    ($($name:ident),+ $(,)?) => {
        #[cfg(nfslock_symver)]
        core::arch::global_asm!($(concat!(".symver ", stringify!($name), ", ", stringify!($name), "@@NFSLOCK_0, remove")),+);
    };
}

mod boundary;
pub mod errors;
mod handles;
pub mod lease;
pub mod lockfile;
pub mod manager;
pub mod session;
mod slots;

/// Major version of the library this header belongs to.
pub const NFSLOCK_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const NFSLOCK_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const NFSLOCK_VERSION_PATCH: u32 = 0;
/// The header's version as one number, MAJOR * 10000 + MINOR * 100 + PATCH (0.1.0 is
/// 100), for `#if NFSLOCK_VERSION >= ...`; see also NFSLOCK_VERSION_AT_LEAST.
pub const NFSLOCK_VERSION: u32 = 100;

// Minor and patch must stay below 100 for the combined NFSLOCK_VERSION to be
// unambiguous: checked when the crate compiles.
const _: () = assert!(NFSLOCK_VERSION_MINOR < 100 && NFSLOCK_VERSION_PATCH < 100);

#[cfg(test)]
mod tests {
    #[test]
    fn version_macros_match_the_crate() {
        assert_eq!(super::NFSLOCK_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(super::NFSLOCK_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(super::NFSLOCK_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
        let combined = super::NFSLOCK_VERSION_MAJOR * 10000 + super::NFSLOCK_VERSION_MINOR * 100 + super::NFSLOCK_VERSION_PATCH;
        assert_eq!(super::NFSLOCK_VERSION, combined);
    }
}
