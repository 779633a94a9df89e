//! Arbitrary bytes as a runbook file: load, validate, render the diagnostics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    runbook_engine::fuzzing::validate_bytes(data);
});
