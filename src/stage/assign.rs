//! The assign stage: map-matches cleaned probes with [`crate::matching::Matcher`], vehicles
//! sharded by a stable hash of their id over `workers` threads, and emits segment
//! observations (the default port) and matched points (port `matched_points`).
//!
//! Each shard owns its vehicles' state, so no lock is taken. The output of a batch is sorted
//! before it leaves (matched points by time then vehicle, observations by exit time, vehicle,
//! segment), and idle vehicles are evicted against one watermark for all shards, so the
//! output is the same whatever the worker count.

use std::sync::{Arc, OnceLock};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use rayon::prelude::*;
use serde::Deserialize;

use crate::config::Problems;
use crate::graph::RoadGraph;
use crate::matching::{MatchConfig, MatchOutput, MatchStats, Matcher, RouteStats};
use crate::record::{MatchedPoint, Probe, SegmentObservation};
use crate::runtime::{Batch, Records, Transform};
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

/// The assign stage as a runtime [`Transform`].
pub struct AssignStage {
    shards: Vec<Matcher>,
    outputs: Vec<MatchOutput>,
    pool: rayon::ThreadPool,
    metrics: Arc<ComponentMetrics>,
    watermark_ms: i64,
    exported: Exported,
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
        // The R-tree is built once here rather than on the first probe of a worker.
        graph.build_spatial_index();
        let shards = (0..workers)
            .map(|_| Matcher::new(graph.clone(), config.matching.clone()))
            .collect();
        Ok(Self {
            shards,
            outputs: (0..workers).map(|_| MatchOutput::default()).collect(),
            pool,
            metrics,
            watermark_ms: i64::MIN,
            exported: Exported::default(),
        })
    }

    /// Runs `work` on every shard in parallel, then merges, sorts and emits the outputs.
    fn run_shards(
        &mut self,
        parts: Vec<Vec<Probe>>,
        work: impl Fn(&mut Matcher, Vec<Probe>, &mut MatchOutput) + Sync,
        out: &mut Vec<Batch>,
    ) {
        let shards = &mut self.shards;
        let outputs = &mut self.outputs;
        self.pool.install(|| {
            shards
                .par_iter_mut()
                .zip(outputs.par_iter_mut())
                .zip(parts.into_par_iter())
                .for_each(|((matcher, output), part)| work(matcher, part, output));
        });
        let mut matched: Vec<MatchedPoint> = Vec::new();
        let mut observations: Vec<SegmentObservation> = Vec::new();
        for output in &mut self.outputs {
            matched.append(&mut output.matched);
            observations.append(&mut output.observations);
            output.clear();
        }
        // Stable sorts: equal keys come from one vehicle, hence one shard, in its order.
        matched.sort_by(|a, b| {
            (a.probe.ts_ms, &a.probe.vehicle_id).cmp(&(b.probe.ts_ms, &b.probe.vehicle_id))
        });
        observations.sort_by(|a, b| {
            (a.exit_ts_ms, &a.vehicle_id, a.segment_id, a.enter_ts_ms).cmp(&(
                b.exit_ts_ms,
                &b.vehicle_id,
                b.segment_id,
                b.enter_ts_ms,
            ))
        });
        self.export_metrics();
        if !observations.is_empty() {
            out.push(Batch::new(Records::Observations(observations)));
        }
        if !matched.is_empty() {
            out.push(Batch::new(Records::MatchedPoints(matched)));
        }
    }

    fn export_metrics(&mut self) {
        let f = families();
        let c = self.metrics.component.as_str();
        let mut stats = MatchStats::default();
        let mut route = RouteStats::default();
        for m in &self.shards {
            add_stats(&mut stats, m.stats());
            let r = m.route_stats();
            route.searches += r.searches;
            route.cache_hits += r.cache_hits;
            route.cache_misses += r.cache_misses;
            route.trivial += r.trivial;
        }
        let before = self.exported.stats.take().unwrap_or_default();
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        f.matched
            .with_label_values(&[c])
            .inc_by(delta(stats.matched, before.matched));
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
        ] {
            if now > then {
                f.trace_breaks
                    .with_label_values(&[c, reason])
                    .inc_by(now - then);
            }
        }
        let histogram = f.candidates.with_label_values(&[c]);
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
        let then = &self.exported.route;
        f.route_searches
            .with_label_values(&[c])
            .inc_by(delta(route.searches, then.searches));
        f.route_cache_hits
            .with_label_values(&[c])
            .inc_by(delta(route.cache_hits, then.cache_hits));
        f.route_cache_lookups.with_label_values(&[c]).inc_by(delta(
            route.cache_hits + route.cache_misses,
            then.cache_hits + then.cache_misses,
        ));
        f.active_vehicles.with_label_values(&[c]).set(
            self.shards
                .iter()
                .map(Matcher::active_vehicles)
                .sum::<usize>() as i64,
        );
        f.pending_probes.with_label_values(&[c]).set(
            self.shards
                .iter()
                .map(Matcher::pending_probes)
                .sum::<usize>() as i64,
        );
        self.exported = Exported {
            stats: Some(stats),
            route,
        };
    }
}

fn add_stats(total: &mut MatchStats, s: &MatchStats) {
    total.probes += s.probes;
    total.matched += s.matched;
    total.unmatched_invalid_coordinate += s.unmatched_invalid_coordinate;
    total.unmatched_no_candidate += s.unmatched_no_candidate;
    total.unmatched_out_of_order += s.unmatched_out_of_order;
    total.breaks_time_gap += s.breaks_time_gap;
    total.breaks_distance_gap += s.breaks_distance_gap;
    total.breaks_no_transition += s.breaks_no_transition;
    for (t, v) in total
        .candidates_per_probe
        .iter_mut()
        .zip(&s.candidates_per_probe)
    {
        *t += v;
    }
}

impl Transform for AssignStage {
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
        if let Some(max_ts_ms) = probes.iter().map(|p| p.ts_ms).max() {
            self.watermark_ms = self.watermark_ms.max(max_ts_ms);
        }
        let n = self.shards.len();
        let mut parts: Vec<Vec<Probe>> = (0..n).map(|_| Vec::new()).collect();
        for probe in probes {
            parts[shard_of(&probe.vehicle_id, n)].push(probe);
        }
        let watermark_ms = self.watermark_ms;
        self.run_shards(
            parts,
            |matcher, part, output| {
                matcher.push_all(part, output);
                if watermark_ms != i64::MIN {
                    matcher.evict_idle(watermark_ms, output);
                }
            },
            out,
        );
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
    use crate::telemetry::metrics;

    fn run(workers: usize, probes: &[Probe]) -> Vec<Batch> {
        let graph = Arc::new(
            synthetic_grid(6, 6, 150.0, 60.17, 24.94)
                .build_graph(&ImportConfig::default())
                .expect("grid builds"),
        );
        let config = AssignConfig {
            workers: Some(workers),
            ..AssignConfig::default()
        };
        let mut stage =
            AssignStage::new(config, graph, metrics().component("assign_unit")).expect("builds");
        let mut out = Vec::new();
        for chunk in probes.chunks(500) {
            stage.process_batch(Batch::from(chunk.to_vec()), &mut out);
        }
        stage.on_close(&mut out);
        out
    }

    #[test]
    fn output_is_identical_whatever_the_worker_count() {
        let graph = Arc::new(
            synthetic_grid(6, 6, 150.0, 60.17, 24.94)
                .build_graph(&ImportConfig::default())
                .expect("grid builds"),
        );
        let (probes, _) = generate(
            &graph,
            &GeneratorSourceConfig {
                vehicles: 40,
                duration_s: 300.0,
                interval_s: 2.0,
                ..GeneratorSourceConfig::default()
            },
        );
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
