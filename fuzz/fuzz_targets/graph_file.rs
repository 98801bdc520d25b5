//! Fuzz target `graph_file`: the body is `pipeline::fuzzing::graph_file` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::graph_file(data));
