//! Golden files under `testdata/`: small, hand-readable inputs and the exact output they
//! must give. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expectations; review
//! the diff before committing.

use std::path::{Path, PathBuf};

use pipeline::record::Probe;
use pipeline::stage::clean::{CleanConfig, Cleaner, DropReason};

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(path)
}

/// Compares `actual` with the golden file, or rewrites it under UPDATE_GOLDEN.
fn check(golden: &str, actual: &str) {
    let path = testdata(golden);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        actual, expected,
        "{} differs; rerun with UPDATE_GOLDEN=1 and review",
        golden
    );
}

fn read_ndjson(path: &str) -> Vec<Probe> {
    std::fs::read_to_string(testdata(path))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn clean_stage_on_dirty_probes() {
    let input = read_ndjson("clean/dirty.ndjson");
    let config = CleanConfig {
        reorder_window_ms: 1_500,
        ..CleanConfig::default()
    };
    let mut cleaner = Cleaner::new(config);
    let mut out = Vec::new();
    // Two batches, to cross a batch boundary in the middle of the disorder.
    let (first, second) = input.split_at(5);
    cleaner.push(first.to_vec(), &mut out);
    cleaner.push(second.to_vec(), &mut out);
    cleaner.flush(&mut out);

    let mut actual = String::from("# kept, in output order\n");
    for p in &out {
        actual.push_str(&serde_json::to_string(p).unwrap());
        actual.push('\n');
    }
    actual.push_str("# dropped, by reason\n");
    for reason in DropReason::ALL {
        let n = cleaner.totals().get(reason);
        if n > 0 {
            actual.push_str(&format!("{} {n}\n", reason.as_str()));
        }
    }
    check("clean/dirty.expected", &actual);
}
