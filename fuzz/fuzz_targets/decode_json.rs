//! Fuzz target `decode_json`: the body is `pipeline::fuzzing::decode_json` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::decode_json(data));
