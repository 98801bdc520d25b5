//! Fuzz target `clean`: the body is `pipeline::fuzzing::clean` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::clean(data));
