//! Fuzz target `osm_pbf`: the body is `pipeline::fuzzing::osm_pbf` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::osm_pbf(data));
