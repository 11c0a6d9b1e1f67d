//! Fuzz target: see nfslock::fuzzing::counter for the checks, fuzz/src/lib.rs for the
//! allocation limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nfslock_fuzz::fuzz("counter", data));
