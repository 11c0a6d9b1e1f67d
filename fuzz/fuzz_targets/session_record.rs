//! Fuzz target: see nfslock::fuzzing::session_record for the checks, fuzz/src/lib.rs for the
//! allocation limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nfslock_fuzz::fuzz("session_record", data));
