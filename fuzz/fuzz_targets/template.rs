//! Arbitrary bytes as template and condition text, rendered and evaluated against a fixed context.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    runbook_engine::fuzzing::template_bytes(data);
});
