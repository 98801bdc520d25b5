//! Helpers of the aggregate restart tests against a broker and against Kinesis: traffic on
//! a grid graph, its observations matched in the test process, and the speed rows of NDJSON
//! outputs as a consumer upserting on (segment, window, estimator) sees them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pipeline::record::{Probe, SegmentObservation};
use pipeline::runtime::{Batch, Records};

/// Generous limit for a run to settle; a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(120);

/// A 6 × 6 grid graph written to `dir/data/grid.graph`, and generated traffic on it.
pub fn grid_traffic(
    dir: &std::path::Path,
    vehicles: u32,
    duration_s: f64,
) -> (Arc<pipeline::graph::RoadGraph>, Vec<Probe>) {
    use pipeline::connector::generator::{generate, GeneratorSourceConfig};
    use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};

    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    let graph = Arc::new(
        synthetic_grid(6, 6, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds"),
    );
    graph
        .write(dir.join("data/grid.graph"))
        .expect("graph written");
    let (probes, _) = generate(
        &graph,
        &GeneratorSourceConfig {
            vehicles,
            duration_s,
            interval_s: 2.0,
            noise_m: 2.0,
            ..GeneratorSourceConfig::default()
        },
    );
    (graph, probes)
}

/// The observations of the restart tests: 40 vehicles for 20 min on the grid (written to
/// `dir/data/grid.graph`), matched in this process, more than 2 000 of them.
pub fn restart_observations(dir: &std::path::Path) -> Vec<SegmentObservation> {
    let (graph, probes) = grid_traffic(dir, 40, 1_200.0);
    let observations = matched_observations(&graph, &probes);
    assert!(
        observations.len() > 2_000,
        "{} observations",
        observations.len()
    );
    observations
}

/// The observations of `probes`, matched in this process, in event-time order (the
/// aggregate's event time, the middle of a traversal).
pub fn matched_observations(
    graph: &Arc<pipeline::graph::RoadGraph>,
    probes: &[Probe],
) -> Vec<SegmentObservation> {
    use pipeline::runtime::Transform;
    use pipeline::stage::assign::{AssignConfig, AssignStage};

    let metrics = pipeline::telemetry::metrics::metrics().component("reference_assign");
    let mut stage =
        AssignStage::new(AssignConfig::default(), graph.clone(), metrics).expect("assign stage");
    let mut out = Vec::new();
    for chunk in probes.chunks(500) {
        stage.process_batch(Batch::new(Records::Probes(chunk.to_vec())), &mut out);
    }
    stage.on_close(&mut out);
    let mut observations: Vec<SegmentObservation> = out
        .into_iter()
        .filter_map(|b| match b.records {
            Records::Observations(o) => Some(o),
            _ => None,
        })
        .flatten()
        .collect();
    observations.sort_by_key(|o| {
        (
            o.enter_ts_ms + (o.exit_ts_ms - o.enter_ts_ms) / 2,
            o.observation_id,
        )
    });
    observations
}

/// Complete lines of an NDJSON file (none if it does not exist yet). A last line without
/// its newline is being written, or was cut by a kill -9: a reader tailing the file skips
/// it, as this does (polling a running stage's output once parsed half a row).
pub fn ndjson_lines(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete.lines().map(str::to_string).collect()
}

/// Polls `now` every 2 s until it returns the same value twice and `done` holds for it.
pub async fn settle<T: PartialEq + std::fmt::Debug>(
    what: &str,
    mut now: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let value = now();
        if done(&value) && last.as_ref() == Some(&value) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {value:?}");
        last = Some(value);
    }
}

/// A window's key: segment, window start, estimator.
pub type WindowKey = (u64, i64, String);

/// Upserts the speed rows of `files`, in order, as a consumer keyed on (segment, window,
/// estimator) would: the last row of a key wins. Returns the row count and the table of
/// (samples, vehicles, speed bits) per key.
pub fn upsert_speeds(files: &[&std::path::Path]) -> (usize, BTreeMap<WindowKey, (u32, u32, u64)>) {
    let mut rows = 0;
    let mut table = BTreeMap::new();
    for file in files {
        for line in ndjson_lines(file) {
            let s: pipeline::record::SegmentSpeed =
                serde_json::from_str(&line).expect("a speed row");
            rows += 1;
            table.insert(
                (s.segment_id, s.window_start_ms, s.estimator.to_string()),
                (s.samples, s.vehicles, s.speed_mps.to_bits()),
            );
        }
    }
    (rows, table)
}
