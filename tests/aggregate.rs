//! The aggregator on plain data: windows, watermark, late data and revisions, the
//! publication rule, invalid input, order independence, and that state is freed.

use std::collections::HashMap;

use pipeline::aggregate::{
    AggregateConfig, Aggregator, EstimatorConfig, EstimatorKind, Rejection, SegmentCatalog,
};
use pipeline::matching::observations::observation_id;
use pipeline::record::{SegmentObservation, SegmentSpeed};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

struct Lengths(HashMap<u64, f64>);

impl SegmentCatalog for Lengths {
    fn length_m(&self, segment_id: u64) -> Option<f64> {
        self.0.get(&segment_id).copied()
    }
    fn version(&self) -> u64 {
        7
    }
}

fn catalog() -> Lengths {
    Lengths((1..=100).map(|s| (s, 100.0)).collect())
}

/// A full traversal of 100 m at `speed_mps`, centred on `mid_ms`.
fn obs(segment_id: u64, vehicle: &str, mid_ms: i64, speed_mps: f64) -> SegmentObservation {
    let duration_ms = (100_000.0 / speed_mps) as i64;
    let exit_ts_ms = mid_ms - duration_ms / 2 + duration_ms;
    SegmentObservation {
        observation_id: observation_id(vehicle, segment_id, exit_ts_ms),
        segment_id,
        vehicle_id: vehicle.to_string(),
        enter_ts_ms: mid_ms - duration_ms / 2,
        exit_ts_ms,
        traversed_m: 100.0,
        speed_mps,
        next_segment_id: None,
        flags: 0,
    }
}

fn config() -> AggregateConfig {
    AggregateConfig {
        window_ms: 60_000,
        max_out_of_orderness_ms: 10_000,
        allowed_lateness_ms: 60_000,
        idle_timeout_ms: 0,
        estimators: [
            EstimatorKind::SpaceMean,
            EstimatorKind::Median,
            EstimatorKind::TrimmedMean,
        ]
        .into_iter()
        .map(EstimatorConfig::from)
        .collect(),
        ..AggregateConfig::default()
    }
}

fn push_all(
    agg: &mut Aggregator<Lengths>,
    observations: &[SegmentObservation],
    out: &mut Vec<SegmentSpeed>,
) {
    for o in observations {
        let _ = agg.push(o, 0, 0);
    }
    agg.advance(0, out);
}

#[test]
fn a_window_is_emitted_once_the_watermark_passes_its_end() {
    let mut agg = Aggregator::new(&config(), catalog());
    let mut out = Vec::new();
    push_all(
        &mut agg,
        &[
            obs(1, "a", 10_000, 10.0),
            obs(1, "b", 20_000, 20.0),
            obs(1, "c", 30_000, 30.0),
        ],
        &mut out,
    );
    assert!(out.is_empty(), "window [0, 60 s) still open: {out:?}");
    // Max event 69 s, bound 10 s: the watermark is 59 s, not yet 60 s.
    push_all(&mut agg, &[obs(2, "a", 69_000, 10.0)], &mut out);
    assert!(out.is_empty());
    push_all(&mut agg, &[obs(2, "a", 70_000, 10.0)], &mut out);
    assert_eq!(out.len(), 3, "one row per estimator: {out:?}");
    let by_name: HashMap<&str, &SegmentSpeed> = out.iter().map(|s| (&*s.estimator, s)).collect();
    let space_mean = by_name["space_mean"];
    // 300 m over 10 + 5 + 3.33 s: the harmonic mean, not the arithmetic one.
    assert!((space_mean.speed_mps - 300.0 / (10.0 + 5.0 + 100.0 / 30.0)).abs() < 0.01);
    assert_eq!(space_mean.samples, 3);
    assert_eq!(space_mean.vehicles, 3);
    assert_eq!(
        (space_mean.window_start_ms, space_mean.window_end_ms),
        (0, 60_000)
    );
    assert!((space_mean.travel_time_s - 100.0 / space_mean.speed_mps).abs() < 1e-9);
    assert_eq!(space_mean.graph_version, 7);
    assert_eq!(space_mean.revision, 0);
    assert_eq!(by_name["median"].speed_mps, 20.0);
    assert_eq!(by_name["median"].p85_speed_mps, Some(27.0));
    assert_eq!(by_name["trimmed_mean"].speed_mps, 20.0);
}

#[test]
fn late_data_within_the_lateness_revises_and_later_data_is_counted_late() {
    let mut agg = Aggregator::new(&config(), catalog());
    let mut out = Vec::new();
    push_all(
        &mut agg,
        &[obs(1, "a", 10_000, 10.0), obs(2, "a", 75_000, 10.0)],
        &mut out,
    );
    let first: Vec<_> = out.drain(..).filter(|s| s.segment_id == 1).collect();
    assert_eq!(first.len(), 3);
    // Watermark 65 s; window [0, 60 s) expires at 120 s: an observation for it revises it.
    push_all(&mut agg, &[obs(1, "b", 20_000, 30.0)], &mut out);
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out.iter().all(|s| s.revision == 1 && s.samples == 2));
    out.clear();
    // Move the watermark past 120 s: the window is freed, and its data is now late.
    push_all(&mut agg, &[obs(3, "a", 131_000, 10.0)], &mut out);
    out.clear();
    assert_eq!(
        agg.push(&obs(1, "c", 30_000, 10.0), 0, 0),
        Err(Rejection::Late)
    );
    assert_eq!(agg.stats().late, 1);
    agg.advance(0, &mut out);
    assert!(out.iter().all(|s| s.segment_id != 1), "{out:?}");
}

#[test]
fn publication_rule_withholds_thin_windows() {
    let mut cfg = config();
    cfg.min_samples = 2;
    cfg.min_vehicles = 2;
    cfg.estimators[1].min_vehicles = Some(1);
    let mut agg = Aggregator::new(&cfg, catalog());
    let mut out = Vec::new();
    push_all(
        &mut agg,
        &[
            obs(1, "a", 10_000, 10.0),
            obs(1, "a", 20_000, 12.0),
            obs(2, "a", 10_000, 10.0),
            obs(2, "b", 20_000, 12.0),
            obs(3, "b", 20_000, 12.0),
        ],
        &mut out,
    );
    agg.flush_all(&mut out);
    let rows: Vec<(u64, &str)> = out.iter().map(|s| (s.segment_id, &*s.estimator)).collect();
    assert_eq!(
        rows,
        vec![
            (1, "median"),
            (2, "space_mean"),
            (2, "median"),
            (2, "trimmed_mean")
        ]
    );
}

#[test]
fn invalid_and_unknown_observations_are_rejected_with_their_reason() {
    let mut agg = Aggregator::new(&config(), catalog());
    let nan = SegmentObservation {
        traversed_m: f64::NAN,
        ..obs(1, "a", 10_000, 10.0)
    };
    let instant = SegmentObservation {
        exit_ts_ms: 10_000,
        enter_ts_ms: 10_000,
        ..obs(1, "a", 10_000, 10.0)
    };
    let rocket = obs(1, "a", 10_000, 300.0);
    for o in [&nan, &instant, &rocket] {
        assert_eq!(agg.push(o, 0, 0), Err(Rejection::Invalid));
    }
    assert_eq!(
        agg.push(&obs(999, "a", 10_000, 10.0), 0, 0),
        Err(Rejection::UnknownSegment)
    );
    assert_eq!(agg.stats().invalid, 3);
    assert_eq!(agg.stats().unknown_segment, 1);
    assert_eq!(agg.open_windows(), 0);
}

#[test]
fn out_of_order_input_within_the_bound_gives_the_windows_of_sorted_input() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut sorted: Vec<SegmentObservation> = (0..5_000)
        .map(|i| {
            obs(
                rng.random_range(1..=100),
                &format!("v{}", rng.random_range(0..300)),
                i * 100,
                rng.random_range(2.0..40.0),
            )
        })
        .collect();
    sorted.sort_by_key(|o| o.enter_ts_ms + (o.exit_ts_ms - o.enter_ts_ms) / 2);
    // Shuffle within blocks of 5 s of event time: less than the 10 s bound.
    let mut shuffled = sorted.clone();
    for block in shuffled.chunks_mut(50) {
        block.shuffle(&mut rng);
    }
    let run = |input: &[SegmentObservation]| {
        let mut agg = Aggregator::new(&config(), catalog());
        let mut out = Vec::new();
        for batch in input.chunks(97) {
            push_all(&mut agg, batch, &mut out);
        }
        agg.flush_all(&mut out);
        assert_eq!(agg.stats().late, 0);
        assert_eq!(agg.stats().rows_revised, 0);
        assert_eq!(agg.stats().rows_first_after_close, 0);
        out
    };
    let a = run(&sorted);
    assert!(a.len() > 1_000, "{}", a.len());
    assert_eq!(a, run(&shuffled));
}

#[test]
fn sliding_windows_count_each_observation_in_every_window_it_falls_in() {
    let cfg = AggregateConfig {
        window_ms: 300_000,
        slide_ms: Some(60_000),
        ..config()
    };
    let mut agg = Aggregator::new(&cfg, catalog());
    let mut out = Vec::new();
    push_all(&mut agg, &[obs(1, "a", 130_000, 10.0)], &mut out);
    agg.flush_all(&mut out);
    let starts: Vec<i64> = out
        .iter()
        .filter(|s| &*s.estimator == "space_mean")
        .map(|s| s.window_start_ms)
        .collect();
    assert_eq!(starts, vec![-120_000, -60_000, 0, 60_000, 120_000]);
}

#[test]
fn window_state_is_freed_once_the_watermark_passes_the_lateness() {
    let mut agg = Aggregator::new(&config(), catalog());
    let mut out = Vec::new();
    let observations: Vec<_> = (1..=100).map(|s| obs(s, "a", 30_000, 10.0)).collect();
    push_all(&mut agg, &observations, &mut out);
    assert_eq!(agg.open_windows(), 100);
    let bytes = agg.state_bytes();
    assert!(bytes > 100 * 88, "{bytes}");
    push_all(&mut agg, &[obs(1, "a", 200_000, 10.0)], &mut out);
    assert_eq!(agg.open_windows(), 1, "only the new window remains");
}

#[test]
fn idle_input_lets_the_watermark_close_windows_by_processing_time() {
    let cfg = AggregateConfig {
        idle_timeout_ms: 5_000,
        ..config()
    };
    let mut agg = Aggregator::new(&cfg, catalog());
    let mut out = Vec::new();
    let _ = agg.push(&obs(1, "a", 30_000, 10.0), 0, 0);
    agg.advance(1_000, &mut out);
    assert!(out.is_empty());
    // Idle from 5 s on: the watermark jumps to the max event time (30 s), then moves on
    // with processing time.
    agg.advance(34_000, &mut out);
    assert!(out.is_empty(), "watermark 59 s");
    agg.advance(35_000, &mut out);
    assert_eq!(out.len(), 3);
}
