//! Replays the fuzz corpus and every crasher found so far (`testdata/fuzz/<target>/`)
//! through the fuzz target bodies in `pipeline::fuzzing`, on stable, as regression tests.
//! The fuzzers themselves run with `make fuzz` (nightly, cargo-fuzz); a crash they find is
//! added to the target's directory, named after the bug, once fixed.

use std::path::{Path, PathBuf};

use pipeline::fuzzing::{seeds, Target, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fuzz")
        .join(target)
}

/// Runs every file of one target's corpus; returns how many ran.
fn replay(target: &Target) -> usize {
    let dir = corpus_dir(target.name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.sort();
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // A panic names the file, so the failing case is plain in the test output.
        let result = std::panic::catch_unwind(|| (target.run)(&bytes));
        assert!(
            result.is_ok(),
            "{} panicked on {}",
            target.name,
            file.display()
        );
    }
    files.len()
}

fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

#[test]
fn decode_json_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("decode_json")) > 0);
}

#[test]
fn decode_proto_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("decode_proto")) > 0);
}

#[test]
fn parquet_probes_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("parquet_probes")) > 0);
}

#[test]
fn osm_pbf_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("osm_pbf")) > 0);
}

#[test]
fn osm_xml_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("osm_xml")) > 0);
}

#[test]
fn graph_file_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("graph_file")) > 0);
}

#[test]
fn matcher_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("matcher")) > 0);
}

#[test]
fn clean_corpus_and_crashers_do_not_panic() {
    assert!(replay(target("clean")) > 0);
}

/// Every target has a corpus directory, and the seeds as the writers make them today (which
/// may have drifted from the committed `seed-*` files) run through their targets too.
#[test]
fn every_target_has_a_corpus_and_fresh_seeds_do_not_panic() {
    for t in TARGETS {
        assert!(corpus_dir(t.name).is_dir(), "no corpus for {}", t.name);
    }
    let seeds = seeds().unwrap_or_else(|e| panic!("seeds: {e}"));
    for t in TARGETS {
        let mine: Vec<_> = seeds.iter().filter(|s| s.target == t.name).collect();
        assert!(!mine.is_empty(), "no seed for {}", t.name);
        for seed in mine {
            (t.run)(&seed.bytes);
        }
    }
}
