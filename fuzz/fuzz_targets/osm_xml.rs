//! Fuzz target `osm_xml`: the body is `pipeline::fuzzing::osm_xml` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::osm_xml(data));
