//! Fuzz target `parquet_probes`: the body is `pipeline::fuzzing::parquet_probes` (shared with
//! tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys aborts on every panic, even one the code under test catches. The reader
    // contains panics of the parquet crate on purpose (they become errors), so restore the
    // default hook; a panic that escapes the body still aborts (libfuzzer-sys catches it).
    init: drop(std::panic::take_hook()),
    |data: &[u8]| pipeline::fuzzing::parquet_probes(data)
);
