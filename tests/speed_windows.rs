//! Window speeds in queues, end to end through the matcher and the aggregate on hand-made
//! traces along one street of a synthetic grid: a wait at the end of a segment, a queue
//! crawling through a window boundary, a stop seen at 1 s with 5 m noise, and the same trip
//! sampled at 1 s and at 5 s. Each publishes the speed the window must hold, computed from the
//! trace itself (distance on the segment in the window over time on it in the window).

use std::collections::BTreeMap;
use std::sync::Arc;

use pipeline::aggregate::{AggregateConfig, Aggregator};
use pipeline::graph::osm_writer::{grid_node_id, synthetic_grid};
use pipeline::graph::{ImportConfig, RoadGraph};
use pipeline::matching::{MatchConfig, MatchOutput, Matcher};
use pipeline::record::{observation_flags, Probe};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const COLS: usize = 8;
const BLOCK_M: f64 = 150.0;
/// Minute-aligned, so windows start at T0 + k·60 s.
const T0_MS: i64 = 1_700_000_040_000;
const WINDOW_MS: i64 = 60_000;

fn grid() -> Arc<RoadGraph> {
    let graph = synthetic_grid(4, COLS, BLOCK_M, 47.0, 9.0)
        .build_graph(&ImportConfig::default())
        .unwrap_or_else(|e| panic!("grid graph: {e}"));
    Arc::new(graph)
}

/// The eastbound segment of row 0 from column `block` to `block + 1`.
fn east(graph: &RoadGraph, block: usize) -> u32 {
    let (from, to) = (
        grid_node_id(COLS, 0, block),
        grid_node_id(COLS, 0, block + 1),
    );
    graph
        .indices()
        .find(|&i| {
            let s = graph.segment(i);
            s.from_node_id == from && s.to_node_id == to
        })
        .unwrap_or_else(|| panic!("no segment of block {block}"))
}

/// The point `x_m` east of column 0 on row 0, moved `(along_m, left_m)` by noise.
fn point_at(graph: &RoadGraph, x_m: f64, along_m: f64, left_m: f64) -> (f64, f64) {
    let s = east(graph, 0);
    let geometry = graph.geometry(s);
    let p = graph.projection();
    let (a, b) = (geometry[0], geometry[geometry.len() - 1]);
    let (pa, pb) = (p.project(a[0], a[1]), p.project(b[0], b[1]));
    let (dx, dy) = (pb[0] - pa[0], pb[1] - pa[1]);
    let len = (dx * dx + dy * dy).sqrt();
    let (ux, uy) = (dx / len, dy / len);
    let x = x_m + along_m;
    p.unproject([pa[0] + ux * x - uy * left_m, pa[1] + uy * x + ux * left_m])
}

/// A trip along row 0: position east of column 0 at time t (seconds after T0), piecewise
/// linear through `(t_s, x_m)` knots.
struct Trip(Vec<(f64, f64)>);

impl Trip {
    fn x_m(&self, t_s: f64) -> f64 {
        let k = &self.0;
        if t_s <= k[0].0 {
            return k[0].1;
        }
        for w in k.windows(2) {
            let ((t0, x0), (t1, x1)) = (w[0], w[1]);
            if t_s <= t1 {
                return x0 + (x1 - x0) * (t_s - t0) / (t1 - t0);
            }
        }
        k[k.len() - 1].1
    }

    fn end_s(&self) -> f64 {
        self.0[self.0.len() - 1].0
    }

    /// Probes every `interval_s` from `start_s`, with Gaussian noise σ = `noise_m` per axis.
    fn probes(
        &self,
        graph: &RoadGraph,
        vehicle: &str,
        start_s: f64,
        interval_s: f64,
        noise_m: f64,
        seed: u64,
    ) -> Vec<Probe> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut gauss = move || {
            // Box–Muller.
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let mut out = Vec::new();
        let mut t_s = start_s;
        while t_s <= self.end_s() + 1e-9 {
            let (along, left) = (noise_m * gauss(), noise_m * gauss());
            let ts_ms = T0_MS + (t_s * 1000.0).round() as i64;
            let (lat, lon) = point_at(graph, self.x_m(t_s), along, left);
            out.push(Probe::new(vehicle, ts_ms, lat, lon));
            t_s += interval_s;
        }
        out
    }

    /// The true space-mean speed on `block` in each window: distance over time, both on the
    /// segment and in the window, summed over `offsets_s` (one vehicle per offset).
    fn truth(&self, block: usize, offsets_s: &[f64]) -> BTreeMap<i64, f64> {
        let mut sums: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
        let step_s = 0.01;
        for &offset_s in offsets_s {
            let mut t_s = 0.0;
            while t_s < self.end_s() {
                let (x0, x1) = (self.x_m(t_s), self.x_m(t_s + step_s));
                let on = (x0 / BLOCK_M).floor() as usize == block;
                if on {
                    let window = (T0_MS + ((t_s + offset_s) * 1000.0) as i64).div_euclid(WINDOW_MS)
                        * WINDOW_MS;
                    let e = sums.entry(window).or_default();
                    e.0 += x1 - x0;
                    e.1 += step_s;
                }
                t_s += step_s;
            }
        }
        sums.into_iter()
            .filter(|(_, (_, time_s))| *time_s >= 5.0)
            .map(|(w, (d, t))| (w, d / t))
            .collect()
    }
}

/// The `space_mean` speed per window on `block`: matcher (default config) → observations
/// (without the first of each trace, which the aggregate does not count) → aggregate
/// (default config: 60 s tumbling windows).
fn published(graph: &Arc<RoadGraph>, probes: Vec<Probe>, block: usize) -> BTreeMap<i64, f64> {
    let mut matcher = Matcher::new(graph.clone(), MatchConfig::default());
    let mut out = MatchOutput::default();
    let mut probes = probes;
    probes.sort_by_key(|p| p.ts_ms);
    matcher.push_all(probes, &mut out);
    matcher.flush_all(&mut out);
    let mut agg = Aggregator::new(&AggregateConfig::default(), graph.clone());
    for o in &out.observations {
        if o.flags & observation_flags::PARTIAL_START == 0 {
            let _ = agg.push(o, 0, 0);
        }
    }
    let mut rows = Vec::new();
    agg.flush_all(&mut rows);
    let segment_id = graph.segment(east(graph, block)).segment_id;
    rows.iter()
        .filter(|r| r.segment_id == segment_id && r.estimator == "space_mean")
        .map(|r| (r.window_start_ms, r.speed_mps))
        .collect()
}

/// Every window with truth is published, within `tolerance_mps` of the truth.
fn assert_windows(published: &BTreeMap<i64, f64>, truth: &BTreeMap<i64, f64>, tolerance_mps: f64) {
    assert!(!truth.is_empty());
    for (w, want) in truth {
        let got = published.get(w).copied().unwrap_or(f64::NAN);
        assert!(
            (got - want).abs() <= tolerance_mps,
            "window +{} s: published {got:.2} m/s, true {want:.2} m/s (all: {published:?}, truth {truth:?})",
            (w - T0_MS) / 1000
        );
    }
}

#[test]
fn a_vehicle_waiting_40_s_at_the_end_of_a_segment_publishes_the_wait_in_its_window() {
    let graph = grid();
    // 10 m/s from x = 20 m to 5 m before the end of block 1 (x = 295 m), 40 s there, on at
    // 10 m/s. Block 1 is entered at 13 s; the wait runs 27.5 s – 67.5 s, across the window
    // boundary at 60 s.
    let trip = Trip(vec![
        (0.0, 20.0),
        (27.5, 295.0),
        (67.5, 295.0),
        (110.0, 720.0),
    ]);
    let truth = trip.truth(1, &[0.0]);
    let got = published(&graph, trip.probes(&graph, "v", 0.0, 1.0, 5.0, 1), 1);
    assert_windows(&got, &truth, 0.6);
    // The block after the wait sees no part of it: 10 m/s.
    let after = published(&graph, trip.probes(&graph, "v", 0.0, 1.0, 5.0, 1), 2);
    assert!(after.values().all(|&v| (v - 10.0).abs() < 2.0), "{after:?}");
}

#[test]
fn a_queue_crawling_at_1_mps_through_a_window_boundary_publishes_the_crawl_in_both_windows() {
    let graph = grid();
    // Vehicles 10 s apart drive at 10 m/s to block 2 and crawl through it at 1 m/s (150 s),
    // across the window boundaries at 60 s, 120 s and 180 s, then go on.
    let trip = Trip(vec![
        (0.0, 20.0),
        (28.0, 300.0),
        (178.0, 450.0),
        (200.0, 670.0),
    ]);
    let offsets_s = [0.0, 10.0, 20.0];
    let mut probes = Vec::new();
    for (i, &offset_s) in offsets_s.iter().enumerate() {
        let mut p = trip.probes(&graph, &format!("v{i}"), 0.0, 1.0, 5.0, 10 + i as u64);
        for probe in &mut p {
            probe.ts_ms += (offset_s * 1000.0) as i64;
        }
        probes.extend(p);
    }
    let truth = trip.truth(2, &offsets_s);
    let got = published(&graph, probes, 2);
    assert!(truth.values().all(|&v| v < 1.5), "{truth:?}");
    assert_windows(&got, &truth, 0.35);
}

#[test]
fn a_stop_observed_at_1_s_with_5_m_noise_publishes_a_near_zero_speed() {
    let graph = grid();
    // 10 m/s to the middle of block 2, stopped there from 30 s to 210 s (three whole
    // windows), then on.
    let trip = Trip(vec![
        (0.0, 20.0),
        (30.0, 320.0),
        (210.0, 320.0),
        (240.0, 620.0),
    ]);
    let got = published(&graph, trip.probes(&graph, "v", 0.0, 1.0, 5.0, 3), 2);
    for k in [1, 2] {
        let w = T0_MS + k * WINDOW_MS;
        let v = got.get(&w).copied().unwrap_or(f64::NAN);
        assert!(v <= 0.3, "window +{} s: {v:.2} m/s ({got:?})", k * 60);
    }
    assert_windows(&got, &trip.truth(2, &[0.0]), 0.6);
}

#[test]
fn sampling_at_1_s_and_5_s_of_the_same_trip_publishes_speeds_within_a_tolerance() {
    let graph = grid();
    // Free flow, a queue of stop-and-go on block 2 across two windows, free flow again.
    let trip = Trip(vec![
        (0.0, 20.0),
        (25.0, 300.0),
        (55.0, 310.0),
        (65.0, 340.0),
        (100.0, 345.0),
        (110.0, 390.0),
        (140.0, 400.0),
        (150.0, 450.0),
        (180.0, 900.0),
    ]);
    let fast = published(&graph, trip.probes(&graph, "v", 0.0, 1.0, 5.0, 4), 2);
    let slow = published(&graph, trip.probes(&graph, "v", 0.0, 5.0, 5.0, 4), 2);
    let truth = trip.truth(2, &[0.0]);
    assert_windows(&fast, &truth, 0.5);
    assert_windows(&slow, &truth, 0.5);
    for (w, v) in &fast {
        let other = slow.get(w).copied().unwrap_or(f64::NAN);
        assert!((v - other).abs() <= 0.5, "window {w}: {v:.2} vs {other:.2}");
    }
}

#[test]
fn a_traversal_entered_two_seconds_before_a_window_boundary_is_not_cut_into_a_two_second_part() {
    let graph = grid();
    // Along row 0, then at 10 m/s through block 3 (450–600 m) from 58 s to 73 s, across the
    // boundary at 60 s.
    let trip = Trip(vec![(0.0, 30.0), (58.0, 450.0), (103.0, 900.0)]);
    let probes = trip.probes(&graph, "v0", 0.0, 1.0, 5.0, 3);
    let mut matcher = Matcher::new(graph.clone(), MatchConfig::default());
    let mut out = MatchOutput::default();
    matcher.push_all(probes.clone(), &mut out);
    matcher.flush_all(&mut out);
    let segment_id = graph.segment(east(&graph, 3)).segment_id;
    let on_block: Vec<_> = out
        .observations
        .iter()
        .filter(|o| o.segment_id == segment_id)
        .collect();
    // A 2 s part would be a few metres of noise over 2 s, alone in its window.
    assert_eq!(on_block.len(), 1, "{on_block:?}");
    assert_eq!(
        on_block[0].flags & (observation_flags::CONTINUES | observation_flags::CONTINUED),
        0
    );
    let got = published(&graph, probes, 3);
    assert_eq!(got.len(), 1, "{got:?}");
    let (window, speed_mps) = got.iter().next().map(|(w, s)| (*w, *s)).unwrap_or_default();
    assert_eq!(
        window,
        T0_MS + WINDOW_MS,
        "credited to the window of its midpoint"
    );
    assert!((speed_mps - 10.0).abs() <= 1.0, "{speed_mps}");
}
