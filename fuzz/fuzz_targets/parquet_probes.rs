//! Fuzz target `parquet_probes`: the body is `pipeline::fuzzing::parquet_probes` (shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::fuzzing::parquet_probes(data));
