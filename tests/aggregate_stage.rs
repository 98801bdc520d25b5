//! The aggregate stage in a running topology, checked against what its sinks wrote: the
//! emission counts of `pipeline_aggregate_speeds_emitted_total` equal the speed rows by
//! revision class, and every late observation reaches the sink on the `late` port.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use pipeline::aggregate::{AggregateConfig, EstimatorConfig, EstimatorKind};
use pipeline::config::RuntimeConfig;
use pipeline::connector::ndjson::NdjsonSinkConfig;
use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig, RoadGraph};
use pipeline::record::{RecordKind, SegmentObservation, SegmentSpeed};
use pipeline::runtime::{Component, Link, Records, Topology, VecSource};
use pipeline::stage::aggregate::{emission_totals, observation_totals, AggregateStage, EMISSIONS};
use pipeline::telemetry::metrics;

const T0_MS: i64 = 1_700_000_000_000;

/// Twenty minutes of observations on 60 segments from 8 vehicles, in batches of 50 in
/// arrival order: thin segment-windows (some below the publication rule at close), and 5 %
/// of observations delayed by 10–200 s, so closed windows get late data within the allowed
/// lateness (revisions, and first publications after the close) and past it (late).
fn observations(graph: &RoadGraph, seed: u64) -> Vec<Records> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let segments: Vec<u64> = graph
        .segments()
        .iter()
        .take(60)
        .map(|s| s.segment_id)
        .collect();
    assert_eq!(segments.len(), 60, "the grid has enough segments");
    let mut arrivals: Vec<(i64, SegmentObservation)> = (0..2_400)
        .map(|i| {
            let mid_ms = T0_MS + i * 500;
            let delay_ms = if rng.random_bool(0.05) {
                rng.random_range(10_000..200_000)
            } else {
                rng.random_range(0..5_000)
            };
            let o = SegmentObservation {
                observation_id: i as u64,
                segment_id: segments[rng.random_range(0..segments.len())],
                vehicle_id: format!("v{}", rng.random_range(0..8)),
                enter_ts_ms: mid_ms - 4_000,
                exit_ts_ms: mid_ms + 4_000,
                traversed_m: 80.0,
                speed_mps: 10.0 + rng.random_range(0.0..5.0),
                next_segment_id: None,
                flags: 0,
            };
            (mid_ms + delay_ms, o)
        })
        .collect();
    arrivals.sort_by_key(|(arrival_ms, o)| (*arrival_ms, o.observation_id));
    arrivals
        .chunks(50)
        .map(|c| Records::Observations(c.iter().map(|(_, o)| o.clone()).collect()))
        .collect()
}

fn config() -> AggregateConfig {
    AggregateConfig {
        window_ms: 60_000,
        max_out_of_orderness_ms: 10_000,
        allowed_lateness_ms: 60_000,
        // Event time only: the output does not depend on how fast the run goes.
        idle_timeout_ms: 0,
        min_samples: 2,
        min_vehicles: 2,
        estimators: [EstimatorKind::SpaceMean, EstimatorKind::Median]
            .into_iter()
            .map(EstimatorConfig::from)
            .collect(),
        ..AggregateConfig::default()
    }
}

fn ndjson_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("NDJSON written")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Guards `pipeline_aggregate_speeds_emitted_total{emission}` against the rows consumers
/// see: windows first published after their close (revision 0) were once counted as
/// revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitted_speed_counts_equal_the_written_rows_by_revision_class() {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = Arc::new(
        synthetic_grid(6, 6, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds"),
    );
    let batches = observations(&graph, 17);
    let sent: usize = batches.iter().map(Records::len).sum();
    let (source, stage) = ("acct_source", "acct_aggregate");
    let (speeds_path, late_path) = (
        dir.path().join("speeds.ndjson"),
        dir.path().join("late.ndjson"),
    );
    let sink = |name: &str, path: &std::path::Path, kind: RecordKind| {
        NdjsonSinkConfig::new(path.display().to_string())
            .build(name, Some(kind))
            .expect("NDJSON sink builds")
    };
    let components = vec![
        (
            source.to_string(),
            Component::Source(Box::new(VecSource(batches))),
        ),
        (
            stage.to_string(),
            Component::Transform(Box::new(
                AggregateStage::new(&config(), graph, metrics().component(stage))
                    .with_late_port(true),
            )),
        ),
        (
            "acct_speeds".to_string(),
            Component::Sink(sink("acct_speeds", &speeds_path, RecordKind::SegmentSpeed)),
        ),
        (
            "acct_late".to_string(),
            Component::Sink(sink(
                "acct_late",
                &late_path,
                RecordKind::SegmentObservation,
            )),
        ),
    ];
    let links = vec![
        Link::any(source, stage),
        Link {
            from: stage.to_string(),
            to: "acct_speeds".to_string(),
            kind: Some(RecordKind::SegmentSpeed),
        },
        Link {
            from: stage.to_string(),
            to: "acct_late".to_string(),
            kind: Some(RecordKind::SegmentObservation),
        },
    ];
    let runtime = RuntimeConfig {
        channel_capacity_batches: 4,
        shutdown_timeout_ms: 60_000,
    };
    Topology::new(components, links, &runtime)
        .run(CancellationToken::new())
        .await
        .expect("the topology runs to the end of its input");

    let rows: Vec<SegmentSpeed> = ndjson_lines(&speeds_path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("a speed row"))
        .collect();
    let first_rows = rows.iter().filter(|r| r.revision == 0).count() as u64;
    let revised_rows = rows.iter().filter(|r| r.revision > 0).count() as u64;
    let [first, first_after_close, revision] = emission_totals(stage);
    assert_eq!(EMISSIONS, ["first", "first_after_close", "revision"]);
    // Every class occurs, so the equalities below say something.
    assert!(
        first > 0 && first_after_close > 0 && revision > 0,
        "first {first}, first_after_close {first_after_close}, revision {revision}"
    );
    assert_eq!(
        first + first_after_close,
        first_rows,
        "rows with revision 0"
    );
    assert_eq!(revision, revised_rows, "rows with revision > 0");

    // Every observation is accepted or late; the late ones are all in the late file.
    let (accepted, late) = observation_totals(stage);
    let late_lines = ndjson_lines(&late_path);
    assert!(late > 0, "some observations are past the lateness");
    assert_eq!(late_lines.len() as u64, late);
    assert_eq!(accepted + late, sent as u64);
}
