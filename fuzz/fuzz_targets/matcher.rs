//! Fuzz target `matcher`: the body is `pipeline::fuzzing::matcher` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::matcher(data));
