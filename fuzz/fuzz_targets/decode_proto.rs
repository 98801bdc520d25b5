//! Fuzz target `decode_proto`: the body is `pipeline::fuzzing::decode_proto` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::decode_proto(data));
