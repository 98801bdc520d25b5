//! The assign stage: map-matches cleaned probes with [`crate::matching::Matcher`], vehicles
//! sharded by a stable hash of their id over `workers` threads, and emits segment
//! observations (the default port) and matched points (port `matched_points`).
//!
//! Each shard owns its vehicles' state, so no lock is taken. The output of a batch is sorted
//! before it leaves (matched points by time then vehicle, observations by exit time, vehicle,
//! segment), and idle vehicles are evicted against the event time of the input lane they
//! arrive on (a Kafka partition, a Kinesis shard: the batch's `input`), kept by the stage for
//! all shards and capped at the upstream event-time frontier (see
//! [`crate::runtime::frontier`]), so the output is the same whatever the worker count, and
//! a lane read ahead of the others does not evict the vehicles of the lanes behind it. Each shard sorts its own output on the
//! pool; the calling thread only splits the batch by shard and merges the sorted runs, so
//! the serial part of a batch stays small next to the matching (see
//! `benches/assign_scaling.rs`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use rayon::prelude::*;
use serde::Deserialize;

use crate::config::Problems;
use crate::graph::RoadGraph;
use crate::matching::{MatchConfig, MatchOutput, MatchStats, Matcher, RouteStats};
use crate::record::{MatchedPoint, Probe, SegmentObservation};
use crate::runtime::{Batch, Frontier, LaneEvent, Records, Transform};
use crate::telemetry::metrics::register_collector;
use crate::telemetry::ComponentMetrics;

/// Settings of the assign stage (`[stages.NAME] type = "assign"`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignConfig {
    /// Matching threads (shards of the vehicle set). Default: the available cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// The map-matching model (`[stages.NAME.matching]`).
    #[serde(default)]
    pub matching: MatchConfig,
}

impl AssignConfig {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        if let Some(w) = self.workers {
            problems.check(
                (1..=256).contains(&w),
                format!("{prefix}.workers"),
                "must be between 1 and 256",
            );
        }
        self.matching
            .validate(&format!("{prefix}.matching"), problems);
    }

    /// The worker count after defaults.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("starting {workers} matching threads: {source}")]
pub struct AssignBuildError {
    workers: usize,
    #[source]
    source: rayon::ThreadPoolBuildError,
}

/// The shard of a vehicle: FNV-1a 64 of its id, modulo the shard count. Stable across
/// runs and platforms, unlike `std`'s randomly seeded hasher.
pub fn shard_of(vehicle_id: &str, shards: usize) -> usize {
    let h = crate::graph::id::fnv1a64(vehicle_id.as_bytes());
    (h % shards.max(1) as u64) as usize
}

/// The stage's own metric families, registered once per process.
struct AssignMetricFamilies {
    matched: IntCounterVec,
    unmatched: IntCounterVec,
    trace_breaks: IntCounterVec,
    speed_cut_relaxed: IntCounterVec,
    candidates: HistogramVec,
    route_searches: IntCounterVec,
    route_cache_hits: IntCounterVec,
    route_cache_lookups: IntCounterVec,
    active_vehicles: IntGaugeVec,
    pending_probes: IntGaugeVec,
}

fn families() -> &'static AssignMetricFamilies {
    static FAMILIES: OnceLock<AssignMetricFamilies> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register_collector(
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register_collector(
                IntGaugeVec::new(Opts::new(name, help), &["component"])
                    .expect("valid metric definition"),
            )
        };
        AssignMetricFamilies {
            matched: counter(
                "pipeline_assign_matched_probes_total",
                "Probes placed on the road graph.",
                &["component"],
            ),
            unmatched: counter(
                "pipeline_assign_unmatched_probes_total",
                "Probes that could not be matched, by reason.",
                &["component", "reason"],
            ),
            trace_breaks: counter(
                "pipeline_assign_trace_breaks_total",
                "Traces split, by reason.",
                &["component", "reason"],
            ),
            speed_cut_relaxed: counter(
                "pipeline_assign_speed_cut_relaxed_total",
                "Steps linked by a direct route after the speed cut left no transition (clock off).",
                &["component"],
            ),
            candidates: register_collector(
                HistogramVec::new(
                    HistogramOpts::new(
                        "pipeline_assign_candidates_per_probe",
                        "Road candidates found within the search radius, per probe.",
                    )
                    .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]),
                    &["component"],
                )
                .expect("valid metric definition"),
            ),
            route_searches: counter(
                "pipeline_assign_route_searches_total",
                "Bounded Dijkstra searches run.",
                &["component"],
            ),
            route_cache_hits: counter(
                "pipeline_assign_route_cache_hits_total",
                "Segment-pair route distances answered from the cache.",
                &["component"],
            ),
            route_cache_lookups: counter(
                "pipeline_assign_route_cache_lookups_total",
                "Segment-pair route distances looked up in the cache (hits and misses).",
                &["component"],
            ),
            active_vehicles: gauge(
                "pipeline_assign_active_vehicles",
                "Vehicles with matching state.",
            ),
            pending_probes: gauge(
                "pipeline_assign_pending_probes",
                "Probes received but not yet committed (the decode lag, in probes).",
            ),
        }
    })
}

/// Totals already exported, so each batch adds only the difference.
#[derive(Default)]
struct Exported {
    stats: Option<MatchStats>,
    route: RouteStats,
}

/// One worker's share: its vehicles' matcher, the output of the current batch and what of
/// its counters has been exported.
struct Shard {
    matcher: Matcher,
    output: MatchOutput,
    exported: Exported,
}

/// The assign stage as a runtime [`Transform`].
///
/// Per batch, only the split by shard and the merge of the shards' outputs run on one
/// thread; matching, eviction, sorting each shard's output and exporting its counters run
/// on the pool, so that the stage scales with its workers.
pub struct AssignStage {
    shards: Vec<Shard>,
    pool: rayon::ThreadPool,
    metrics: Arc<ComponentMetrics>,
    /// Per input lane, the newest event time seen on it: a vehicle is idle against the
    /// watermark of its lane.
    lane_watermarks_ms: BTreeMap<u32, i64>,
    /// The upstream source's event-time frontier (`i64::MAX` without one): each lane's
    /// watermark is capped there too (in one process, clean's output comes on one lane).
    frontier_ms: i64,
}

/// Matched points leave in (time, vehicle) order.
fn matched_order(a: &MatchedPoint, b: &MatchedPoint) -> Ordering {
    (a.probe.ts_ms, &a.probe.vehicle_id).cmp(&(b.probe.ts_ms, &b.probe.vehicle_id))
}

/// Observations leave in (exit time, vehicle, segment, entry time) order.
fn observation_order(a: &SegmentObservation, b: &SegmentObservation) -> Ordering {
    (a.exit_ts_ms, &a.vehicle_id, a.segment_id, a.enter_ts_ms).cmp(&(
        b.exit_ts_ms,
        &b.vehicle_id,
        b.segment_id,
        b.enter_ts_ms,
    ))
}

/// Merges runs each sorted by `order` into one, taking from the earlier run on ties: the
/// result equals a stable sort of the runs' concatenation. Pairwise, O(n log runs).
fn merge_runs<T>(mut runs: Vec<Vec<T>>, order: fn(&T, &T) -> Ordering) -> Vec<T> {
    while runs.len() > 1 {
        let mut merged = Vec::with_capacity(runs.len().div_ceil(2));
        let mut pairs = runs.into_iter();
        while let Some(a) = pairs.next() {
            match pairs.next() {
                Some(b) => merged.push(merge_two(a, b, order)),
                None => merged.push(a),
            }
        }
        runs = merged;
    }
    runs.pop().unwrap_or_default()
}

fn merge_two<T>(a: Vec<T>, b: Vec<T>, order: fn(&T, &T) -> Ordering) -> Vec<T> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let from_b = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => order(y, x) == Ordering::Less,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        out.extend(if from_b { b.next() } else { a.next() });
    }
    out
}

/// Takes `v`'s contents, leaving it with as much room for the next batch.
fn take_keeping_capacity<T>(v: &mut Vec<T>) -> Vec<T> {
    let room = v.len();
    std::mem::replace(v, Vec::with_capacity(room))
}

impl AssignStage {
    pub fn new(
        config: AssignConfig,
        graph: Arc<RoadGraph>,
        metrics: Arc<ComponentMetrics>,
    ) -> Result<Self, AssignBuildError> {
        let workers = config.workers();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name({
                let component = metrics.component.clone();
                move |i| format!("assign-{component}-{i}")
            })
            .build()
            .map_err(|source| AssignBuildError { workers, source })?;
        preregister_series(metrics.component.as_str());
        // The R-tree is built once here rather than on the first probe of a worker.
        graph.build_spatial_index();
        let shards = (0..workers)
            .map(|_| Shard {
                matcher: Matcher::new(graph.clone(), config.matching.clone()),
                output: MatchOutput::default(),
                exported: Exported::default(),
            })
            .collect();
        Ok(Self {
            shards,
            pool,
            metrics,
            lane_watermarks_ms: BTreeMap::new(),
            frontier_ms: i64::MAX,
        })
    }

    /// Runs `work` on every shard in parallel, each sorting its output and exporting its
    /// counters there too; then merges the sorted outputs and emits them.
    fn run_shards(
        &mut self,
        parts: Vec<Vec<Probe>>,
        work: impl Fn(&mut Matcher, Vec<Probe>, &mut MatchOutput) + Sync,
        out: &mut Vec<Batch>,
    ) {
        let component = self.metrics.component.as_str();
        let shards = &mut self.shards;
        self.pool.install(|| {
            shards
                .par_iter_mut()
                .zip(parts.into_par_iter())
                .for_each(|(shard, part)| {
                    work(&mut shard.matcher, part, &mut shard.output);
                    // Stable sorts: equal keys come from one vehicle, hence one shard,
                    // in its order; the merge below keeps that.
                    shard.output.matched.sort_by(matched_order);
                    shard.output.observations.sort_by(observation_order);
                    shard.output.unmatched.clear();
                    export_shard_metrics(component, shard);
                });
        });
        let (mut matched, mut observations) = (Vec::new(), Vec::new());
        for shard in &mut self.shards {
            matched.push(take_keeping_capacity(&mut shard.output.matched));
            observations.push(take_keeping_capacity(&mut shard.output.observations));
        }
        let matched = merge_runs(matched, matched_order);
        let observations = merge_runs(observations, observation_order);
        self.export_gauges();
        if !observations.is_empty() {
            out.push(Batch::new(Records::Observations(observations)));
        }
        if !matched.is_empty() {
            out.push(Batch::new(Records::MatchedPoints(matched)));
        }
    }

    /// The gauges, summed over shards (each shard keeps its own running totals: O(shards)).
    fn export_gauges(&self) {
        let f = families();
        let c = self.metrics.component.as_str();
        let (mut active, mut pending) = (0, 0);
        for shard in &self.shards {
            active += shard.matcher.active_vehicles();
            pending += shard.matcher.pending_probes();
        }
        f.active_vehicles.with_label_values(&[c]).set(active as i64);
        f.pending_probes.with_label_values(&[c]).set(pending as i64);
    }
}

/// Adds what one shard counted since its last export to the stage's counters (the
/// counters are atomic, so shards export concurrently and the sums do not depend on the
/// worker count).
/// Why a probe that reached assign was not matched: the label values of
/// `pipeline_assign_unmatched_probes_total`.
pub const UNMATCHED_REASONS: [&str; 3] = ["invalid_coordinate", "no_candidate", "out_of_order"];

/// Probes assign component `c` has matched, and not matched by reason, so far (what its
/// metrics say; exact once the stage has flushed), for run reports.
pub fn probe_totals(c: &str) -> (u64, Vec<(&'static str, u64)>) {
    let f = families();
    let unmatched = UNMATCHED_REASONS
        .iter()
        .map(|&reason| (reason, f.unmatched.with_label_values(&[c, reason]).get()))
        .collect();
    (f.matched.with_label_values(&[c]).get(), unmatched)
}

/// Creates every series of the stage at 0, so that they exist from start-up.
fn preregister_series(c: &str) {
    let f = families();
    for counter in [
        &f.matched,
        &f.speed_cut_relaxed,
        &f.route_searches,
        &f.route_cache_hits,
        &f.route_cache_lookups,
    ] {
        counter.with_label_values(&[c]);
    }
    for reason in UNMATCHED_REASONS {
        f.unmatched.with_label_values(&[c, reason]);
    }
    for reason in ["time_gap", "distance_gap", "no_transition", "off_road"] {
        f.trace_breaks.with_label_values(&[c, reason]);
    }
    f.candidates.with_label_values(&[c]);
    f.active_vehicles.with_label_values(&[c]).set(0);
    f.pending_probes.with_label_values(&[c]).set(0);
}

fn export_shard_metrics(c: &str, shard: &mut Shard) {
    let f = families();
    let stats = shard.matcher.stats();
    let route = shard.matcher.route_stats();
    let before = shard.exported.stats.take().unwrap_or_default();
    let delta = |now: u64, then: u64| now.saturating_sub(then);
    let matched = delta(stats.matched, before.matched);
    if matched > 0 {
        f.matched.with_label_values(&[c]).inc_by(matched);
    }
    for (reason, now, then) in [
        (
            "invalid_coordinate",
            stats.unmatched_invalid_coordinate,
            before.unmatched_invalid_coordinate,
        ),
        (
            "no_candidate",
            stats.unmatched_no_candidate,
            before.unmatched_no_candidate,
        ),
        (
            "out_of_order",
            stats.unmatched_out_of_order,
            before.unmatched_out_of_order,
        ),
    ] {
        if now > then {
            f.unmatched
                .with_label_values(&[c, reason])
                .inc_by(now - then);
        }
    }
    for (reason, now, then) in [
        ("time_gap", stats.breaks_time_gap, before.breaks_time_gap),
        (
            "distance_gap",
            stats.breaks_distance_gap,
            before.breaks_distance_gap,
        ),
        (
            "no_transition",
            stats.breaks_no_transition,
            before.breaks_no_transition,
        ),
        ("off_road", stats.breaks_off_road, before.breaks_off_road),
    ] {
        if now > then {
            f.trace_breaks
                .with_label_values(&[c, reason])
                .inc_by(now - then);
        }
    }
    let relaxed = delta(
        stats.transitions_speed_relaxed,
        before.transitions_speed_relaxed,
    );
    if relaxed > 0 {
        f.speed_cut_relaxed.with_label_values(&[c]).inc_by(relaxed);
    }
    // Observed into a thread-local copy, flushed once: no atomic per probe.
    let histogram = f.candidates.with_label_values(&[c]).local();
    for (n, (&now, &then)) in stats
        .candidates_per_probe
        .iter()
        .zip(before.candidates_per_probe.iter())
        .enumerate()
    {
        for _ in 0..now.saturating_sub(then) {
            histogram.observe(n as f64);
        }
    }
    histogram.flush();
    let then = &shard.exported.route;
    let lookups = |r: &RouteStats| r.cache_hits + r.cache_misses;
    for (counter, now, then) in [
        (&f.route_searches, route.searches, then.searches),
        (&f.route_cache_hits, route.cache_hits, then.cache_hits),
        (&f.route_cache_lookups, lookups(&route), lookups(then)),
    ] {
        if now > then {
            counter.with_label_values(&[c]).inc_by(now - then);
        }
    }
    shard.exported = Exported {
        stats: Some(stats.clone()),
        route,
    };
}

impl Transform for AssignStage {
    fn retained_since_ms(&self) -> Option<i64> {
        self.shards
            .iter()
            .filter_map(|s| s.matcher.oldest_held_ms())
            .min()
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let probes = match batch.records {
            Records::Probes(p) => p,
            other => {
                // Validation prevents this edge; count it rather than pass it on.
                self.metrics
                    .dropped("wrong_record_kind", other.len() as u64);
                return;
            }
        };
        let lane = batch.input;
        if let Some(max_ts_ms) = probes.iter().map(|p| p.ts_ms).max() {
            let watermark_ms = self.lane_watermarks_ms.entry(lane).or_insert(i64::MIN);
            *watermark_ms = (*watermark_ms).max(max_ts_ms);
        }
        let n = self.shards.len();
        let parts: Vec<Vec<Probe>> = if n == 1 {
            vec![probes]
        } else {
            // Room for a fair share and some skew, so most parts never reallocate.
            let room = probes.len() / n + probes.len() / (4 * n) + 16;
            let mut parts: Vec<Vec<Probe>> = (0..n).map(|_| Vec::with_capacity(room)).collect();
            for probe in probes {
                parts[shard_of(&probe.vehicle_id, n)].push(probe);
            }
            parts
        };
        // Every lane, not only this batch's: a frontier that moved lets lanes capped by it
        // evict. A peek per lane and shard when nothing is due.
        let frontier_ms = self.frontier_ms;
        let lane_watermarks_ms: Vec<(u32, i64)> = self
            .lane_watermarks_ms
            .iter()
            .map(|(&lane, &watermark_ms)| (lane, watermark_ms.min(frontier_ms)))
            .collect();
        self.run_shards(
            parts,
            |matcher, part, output| {
                matcher.push_all_in_lane(lane, part, output);
                for &(lane, watermark_ms) in &lane_watermarks_ms {
                    matcher.evict_idle_in_lane(lane, watermark_ms, output);
                }
            },
            out,
        );
    }

    /// A revoked lane's vehicles are dropped unemitted, as the aggregate drops its windows:
    /// the lane's new reader re-matches them from the commit, which their open observations
    /// held back (see [`Matcher::oldest_held_ms`]). Flushing them here would publish
    /// truncated (`PARTIAL_END`) observations of traversals the new reader emits whole.
    fn on_lanes(&mut self, event: &LaneEvent, _out: &mut Vec<Batch>) {
        let LaneEvent::Revoked(revoked) = event else {
            return;
        };
        for &lane in revoked {
            self.lane_watermarks_ms.remove(&lane);
            let dropped: usize = self
                .shards
                .iter_mut()
                .map(|s| s.matcher.drop_lane(lane))
                .sum();
            tracing::info!(
                component = %self.metrics.component,
                lane,
                dropped_vehicles = dropped,
                "partition revoked: its vehicles are left to the new reader"
            );
        }
    }

    fn on_frontier(&mut self, frontier: Frontier, _out: &mut Vec<Batch>) {
        self.frontier_ms = frontier.event_ms;
    }

    fn on_close(&mut self, out: &mut Vec<Batch>) {
        let parts = (0..self.shards.len()).map(|_| Vec::new()).collect();
        self.run_shards(
            parts,
            |matcher, _, output| {
                matcher.flush_all(output);
            },
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::generator::{generate, GeneratorSourceConfig};
    use crate::graph::{osm_writer::synthetic_grid, ImportConfig};
    use crate::runtime::Acks;
    use crate::telemetry::metrics;

    fn grid() -> Arc<RoadGraph> {
        Arc::new(
            synthetic_grid(6, 6, 150.0, 60.17, 24.94)
                .build_graph(&ImportConfig::default())
                .expect("grid builds"),
        )
    }

    fn stage(workers: usize, graph: Arc<RoadGraph>) -> AssignStage {
        let config = AssignConfig {
            workers: Some(workers),
            ..AssignConfig::default()
        };
        AssignStage::new(config, graph, metrics().component("assign_unit")).expect("builds")
    }

    /// Fleet probes on the grid: `vehicles` for `duration_s`, one probe per `interval_s`.
    fn fleet(
        graph: &Arc<RoadGraph>,
        vehicles: u32,
        duration_s: f64,
        interval_s: f64,
    ) -> Vec<Probe> {
        let config = GeneratorSourceConfig {
            vehicles,
            duration_s,
            interval_s,
            ..GeneratorSourceConfig::default()
        };
        generate(graph, &config).0
    }

    fn run(workers: usize, probes: &[Probe]) -> Vec<Batch> {
        let mut stage = stage(workers, grid());
        let mut out = Vec::new();
        for chunk in probes.chunks(500) {
            stage.process_batch(Batch::from(chunk.to_vec()), &mut out);
        }
        stage.on_close(&mut out);
        out
    }

    #[test]
    fn output_is_identical_whatever_the_worker_count() {
        let probes = fleet(&grid(), 40, 300.0, 2.0);
        let one = run(1, &probes);
        let three = run(3, &probes);
        assert_eq!(one, three);
        let matched: usize = one
            .iter()
            .filter(|b| matches!(b.records, Records::MatchedPoints(_)))
            .map(Batch::len)
            .sum();
        assert!(matched as f64 > 0.95 * probes.len() as f64, "{matched}");
        assert!(one
            .iter()
            .any(|b| matches!(b.records, Records::Observations(_))));
    }

    /// The observations of a run, sorted, as a set to compare runs fed in other orders.
    fn observations(batches: &[Batch]) -> Vec<SegmentObservation> {
        let mut all: Vec<SegmentObservation> = batches
            .iter()
            .filter_map(|b| match &b.records {
                Records::Observations(o) => Some(o.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        all.sort_by(observation_order);
        all
    }

    #[test]
    fn assign_evicts_a_vehicle_against_its_own_lane_not_the_fastest() {
        let graph = grid();
        let probes = fleet(&graph, 20, 600.0, 5.0);
        let config = AssignConfig {
            workers: Some(1),
            matching: MatchConfig {
                vehicle_ttl_ms: 120_000,
                ..MatchConfig::default()
            },
        };
        let new_stage = || {
            AssignStage::new(
                config.clone(),
                graph.clone(),
                metrics().component("assign_unit"),
            )
            .expect("builds")
        };
        // Reference: every probe on one lane, in time order.
        let mut in_order = Vec::new();
        let mut reference = new_stage();
        for chunk in probes.chunks(500) {
            reference.process_batch(Batch::from(chunk.to_vec()), &mut in_order);
        }
        reference.on_close(&mut in_order);
        // Two lanes; lane 1 is read to its end before lane 0 starts, 600 s ahead, which is
        // five times `vehicle_ttl_ms`.
        let (lane_0, lane_1): (Vec<Probe>, Vec<Probe>) = probes
            .iter()
            .cloned()
            .partition(|p| shard_of(&p.vehicle_id, 2) == 0);
        assert!(!lane_0.is_empty() && !lane_1.is_empty());
        let mut assign = new_stage();
        let mut out = Vec::new();
        for (lane, part) in [(1, &lane_1), (0, &lane_0)] {
            for chunk in part.chunks(100) {
                let batch = Batch::tracked(Records::Probes(chunk.to_vec()), lane, Acks::none());
                assign.process_batch(batch, &mut out);
            }
        }
        assign.on_close(&mut out);
        assert_eq!(observations(&out), observations(&in_order));
    }

    #[test]
    fn merge_runs_equals_a_stable_sort_of_the_concatenation() {
        fn by_key(a: &(u8, usize), b: &(u8, usize)) -> Ordering {
            a.0.cmp(&b.0)
        }
        let mut rng = 7u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 59) as u8
        };
        for runs in 1..6 {
            let mut all = Vec::new();
            let sorted_runs: Vec<Vec<(u8, usize)>> = (0..runs)
                .map(|r| {
                    let mut run: Vec<(u8, usize)> =
                        (0..r * 7 + 3).map(|i| (next(), r * 1000 + i)).collect();
                    run.sort_by(by_key);
                    all.extend(run.iter().copied());
                    run
                })
                .collect();
            all.sort_by(by_key);
            assert_eq!(merge_runs(sorted_runs, by_key), all);
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("veh-000001", 4), shard_of("veh-000001", 4));
        let mut counts = [0usize; 4];
        for i in 0..1000 {
            counts[shard_of(&format!("veh-{i:06}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    }
}
