//! The C ABI: thin conversions between C and the safe core, one file per family.
//! Every exported function runs inside `boundary::ffi_guard` (a test checks this).

mod boundary;
pub mod errors;
mod handles;
pub mod lease;
pub mod lockfile;
pub mod session;

/// Major version of the library this header belongs to.
pub const NFSLOCK_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const NFSLOCK_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const NFSLOCK_VERSION_PATCH: u32 = 0;

#[cfg(test)]
mod tests {
    #[test]
    fn version_macros_match_the_crate() {
        assert_eq!(super::NFSLOCK_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(super::NFSLOCK_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(super::NFSLOCK_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
    }
}
