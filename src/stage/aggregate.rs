//! The aggregate stage: folds segment observations into event-time windows with
//! [`crate::aggregate::Aggregator`] and emits segment speeds (the default port); observations
//! past the allowed lateness go to the `late` port. When no edge reads that port
//! ([`AggregateStage::with_late_port`]), they are not even batched: they are counted (as
//! late, like the others) and a rate-limited warning says how many were discarded.
//!
//! Processing time, which only the idle rule of the watermark uses, is read here (a
//! monotonic clock since the stage started) and handed to the pure aggregator.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use crate::aggregate::{AggregateConfig, AggregateStats, Aggregator, Rejection};
use crate::graph::RoadGraph;
use crate::record::SegmentObservation;
use crate::runtime::{Batch, Frontier, LaneEvent, Records, Transform};
use crate::telemetry::metrics::register_collector;
use crate::telemetry::ComponentMetrics;

/// The stage's own metric families, registered once per process.
struct AggregateMetricFamilies {
    open_windows: IntGaugeVec,
    state_bytes: IntGaugeVec,
    rows: IntCounterVec,
    accepted: IntCounterVec,
    windows_closed: IntCounterVec,
    late: IntCounterVec,
    watermark: GaugeVec,
}

fn families() -> &'static AggregateMetricFamilies {
    static FAMILIES: OnceLock<AggregateMetricFamilies> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let gauge = |name: &str, help: &str| {
            register_collector(
                IntGaugeVec::new(Opts::new(name, help), &["component"])
                    .expect("valid metric definition"),
            )
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register_collector(
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
            )
        };
        AggregateMetricFamilies {
            open_windows: gauge(
                "pipeline_aggregate_open_windows",
                "Segment-windows held in memory (open, or closed but within the allowed lateness).",
            ),
            state_bytes: gauge(
                "pipeline_aggregate_state_bytes",
                "Heap bytes of window state (arena chunks and slot maps).",
            ),
            rows: counter(
                "pipeline_aggregate_speeds_emitted_total",
                "Segment speed rows emitted: `first` when the window closed and \
                 `first_after_close` when late data first made a closed window's state \
                 publishable (both revision 0), `revision` when late data revised a published \
                 one (revision > 0).",
                &["component", "emission"],
            ),
            accepted: counter(
                "pipeline_aggregate_observations_accepted_total",
                "Observations folded into at least one window (the rest are late or dropped by \
                 reason).",
                &["component"],
            ),
            windows_closed: counter(
                "pipeline_aggregate_windows_closed_total",
                "Segment-windows closed by the watermark or the final flush.",
                &["component"],
            ),
            late: counter(
                "pipeline_aggregate_late_observations_total",
                "Observations that arrived after every window they belong to had expired.",
                &["component"],
            ),
            watermark: register_collector(
                GaugeVec::new(
                    Opts::new(
                        "pipeline_aggregate_watermark_seconds",
                        "The event-time watermark, in seconds since the epoch.",
                    ),
                    &["component"],
                )
                .expect("valid metric definition"),
            ),
        }
    })
}

/// Observations aggregate component `c` has accepted and found late so far (what its
/// metrics say), for run reports; the rest of what it received is in its drop counters.
pub fn observation_totals(c: &str) -> (u64, u64) {
    let f = families();
    (
        f.accepted.with_label_values(&[c]).get(),
        f.late.with_label_values(&[c]).get(),
    )
}

/// The values of the `emission` label of `pipeline_aggregate_speeds_emitted_total`.
pub const EMISSIONS: [&str; 3] = ["first", "first_after_close", "revision"];

/// Speed rows aggregate component `c` has emitted so far, per [`EMISSIONS`] value, in that
/// order (what its metrics say). Rows with revision 0 are the first two; the sinks' rows
/// with revision > 0, the third.
pub fn emission_totals(c: &str) -> [u64; 3] {
    let f = families();
    EMISSIONS.map(|emission| f.rows.with_label_values(&[c, emission]).get())
}

/// The aggregate stage as a runtime [`Transform`].
pub struct AggregateStage {
    aggregator: Aggregator<Arc<RoadGraph>>,
    started: Instant,
    idle_timeout: Option<Duration>,
    metrics: Arc<ComponentMetrics>,
    exported: AggregateStats,
    /// The lane (partition) each segment's observations came in on, kept once the source
    /// announces lanes (Kafka), so a revoked lane's segments can be dropped. Observations
    /// are keyed by segment, so a segment has one lane.
    lane_of_segment: Option<HashMap<u64, u32>>,
    /// Whether an edge reads the `late` port; when not, late observations are counted and
    /// discarded without being batched.
    late_port: bool,
    /// Late observations discarded because nothing reads the `late` port.
    late_discarded: u64,
}

impl AggregateStage {
    pub fn new(
        config: &AggregateConfig,
        graph: Arc<RoadGraph>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        let f = families();
        let c = metrics.component.as_str();
        // The stage's own series exist from start-up (drop reasons appear on first use).
        f.open_windows.with_label_values(&[c]).set(0);
        f.state_bytes.with_label_values(&[c]).set(0);
        for emission in EMISSIONS {
            f.rows.with_label_values(&[c, emission]);
        }
        f.accepted.with_label_values(&[c]);
        f.windows_closed.with_label_values(&[c]);
        f.late.with_label_values(&[c]);
        f.watermark.with_label_values(&[c]).set(0.0);
        Self {
            aggregator: Aggregator::new(config, graph),
            started: Instant::now(),
            idle_timeout: (config.idle_timeout_ms > 0)
                .then(|| Duration::from_millis(config.idle_timeout_ms as u64)),
            metrics,
            exported: AggregateStats::default(),
            lane_of_segment: None,
            late_port: true,
            late_discarded: 0,
        }
    }

    /// Whether an edge reads this stage's `late` port. `Topology::build` tells it from the
    /// config's edges; a stage built in code emits late batches unless told otherwise.
    pub fn with_late_port(mut self, connected: bool) -> Self {
        self.late_port = connected;
        self
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    fn emit(&mut self, speeds: Vec<crate::record::SegmentSpeed>, out: &mut Vec<Batch>) {
        if !speeds.is_empty() {
            out.push(Batch::new(Records::Speeds(speeds)));
        }
        self.export_metrics();
    }

    fn export_metrics(&mut self) {
        let f = families();
        let c = self.metrics.component.as_str();
        let now = *self.aggregator.stats();
        let then = self.exported;
        f.rows
            .with_label_values(&[c, "first"])
            .inc_by(now.rows_first - then.rows_first);
        f.rows
            .with_label_values(&[c, "first_after_close"])
            .inc_by(now.rows_first_after_close - then.rows_first_after_close);
        f.rows
            .with_label_values(&[c, "revision"])
            .inc_by(now.rows_revised - then.rows_revised);
        f.accepted
            .with_label_values(&[c])
            .inc_by(now.accepted - then.accepted);
        f.windows_closed
            .with_label_values(&[c])
            .inc_by(now.windows_closed - then.windows_closed);
        f.late.with_label_values(&[c]).inc_by(now.late - then.late);
        self.metrics
            .dropped(Rejection::Invalid.as_str(), now.invalid - then.invalid);
        self.metrics.dropped(
            Rejection::UnknownSegment.as_str(),
            now.unknown_segment - then.unknown_segment,
        );
        self.metrics.dropped(
            Rejection::AlreadyEmitted.as_str(),
            now.already_emitted - then.already_emitted,
        );
        self.metrics.dropped(
            Rejection::Duplicate.as_str(),
            now.duplicate - then.duplicate,
        );
        self.metrics.dropped(
            Rejection::PartialStart.as_str(),
            now.partial_start - then.partial_start,
        );
        f.open_windows
            .with_label_values(&[c])
            .set(self.aggregator.open_windows() as i64);
        f.state_bytes
            .with_label_values(&[c])
            .set(self.aggregator.state_bytes() as i64);
        let watermark_ms = self.aggregator.watermark_ms();
        if watermark_ms != i64::MIN {
            f.watermark
                .with_label_values(&[c])
                .set(watermark_ms as f64 / 1000.0);
        }
        self.exported = now;
    }
}

impl Transform for AggregateStage {
    fn process_batch(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let input = batch.input;
        let observations = match batch.records {
            Records::Observations(o) => o,
            other => {
                // Validation prevents this edge; count it rather than pass it on.
                self.metrics
                    .dropped("wrong_record_kind", other.len() as u64);
                return;
            }
        };
        let now_ms = self.now_ms();
        if let Some(lanes) = &mut self.lane_of_segment {
            lanes.extend(observations.iter().map(|o| (o.segment_id, input)));
        }
        let mut late: Vec<SegmentObservation> = Vec::new();
        let mut discarded = 0u64;
        for o in observations {
            match self.aggregator.push(&o, input, now_ms) {
                Err(Rejection::Late) if self.late_port => late.push(o),
                Err(Rejection::Late) => discarded += 1,
                // Re-read after a restart: emitted before, by the previous reader; or
                // delivered again by an upstream stage that restarted: counted before.
                // PARTIAL_START: not counted by design (a trace's first segment).
                Err(Rejection::AlreadyEmitted | Rejection::Duplicate | Rejection::PartialStart) => {
                }
                Err(reason) => crate::warn_limited!(
                    "aggregate: dropping observation of segment {} ({})",
                    o.segment_id,
                    reason.as_str()
                ),
                Ok(()) => {}
            }
        }
        let mut speeds = Vec::new();
        self.aggregator.advance(now_ms, &mut speeds);
        self.emit(speeds, out);
        if !late.is_empty() {
            out.push(Batch::new(Records::Observations(late)));
        }
        if discarded > 0 {
            self.late_discarded += discarded;
            crate::warn_limited!(
                component = %self.metrics.component,
                discarded,
                discarded_total = self.late_discarded,
                "aggregate: discarding late observations: no edge reads its `late` port"
            );
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        // Often enough that an idle input is noticed within a tenth of its timeout.
        self.idle_timeout
            .map(|t| (t / 10).max(Duration::from_millis(100)))
    }

    fn on_tick(&mut self, out: &mut Vec<Batch>) {
        let mut speeds = Vec::new();
        let now_ms = self.now_ms();
        self.aggregator.advance(now_ms, &mut speeds);
        self.emit(speeds, out);
    }

    fn retained_since_ms(&self) -> Option<i64> {
        self.aggregator.oldest_window_start_ms()
    }

    fn finalized_before_ms(&self) -> Option<i64> {
        Some(self.aggregator.finalized_before_ms()).filter(|&ms| ms != i64::MIN)
    }

    /// Assigned lanes hold the watermark back until they deliver (or idle out), so records
    /// read first from other partitions cannot make theirs late. A revoked lane's segments
    /// are dropped from every window, unemitted: the partition's new owner re-reads them
    /// from the commit and emits those windows whole.
    fn on_lanes(&mut self, event: &LaneEvent, out: &mut Vec<Batch>) {
        let lanes = self.lane_of_segment.get_or_insert_with(HashMap::new);
        let now_ms = self.started.elapsed().as_millis() as i64;
        match event {
            LaneEvent::Assigned(assigned) => {
                for a in assigned {
                    self.aggregator
                        .expect_input(a.lane, now_ms, a.finalized_before_ms);
                }
            }
            LaneEvent::Revoked(revoked) => {
                for &lane in revoked {
                    let dropped = self
                        .aggregator
                        .remove_input(lane, |segment| lanes.get(&segment) == Some(&lane));
                    lanes.retain(|_, l| *l != lane);
                    tracing::info!(
                        component = %self.metrics.component,
                        lane,
                        dropped_segment_windows = dropped,
                        "partition revoked: its windows are left to the new owner"
                    );
                }
            }
        }
        self.emit(Vec::new(), out);
    }

    /// The sources' frontier caps the watermark (and holds the idle rule while a lane
    /// upstream is still behind); windows it now closes are emitted.
    fn on_frontier(&mut self, frontier: Frontier, out: &mut Vec<Batch>) {
        self.aggregator
            .set_frontier(frontier.event_ms, frontier.caught_up);
        let mut speeds = Vec::new();
        let now_ms = self.now_ms();
        self.aggregator.advance(now_ms, &mut speeds);
        self.emit(speeds, out);
    }

    fn on_close(&mut self, out: &mut Vec<Batch>) {
        let mut speeds = Vec::new();
        self.aggregator.flush_all(&mut speeds);
        self.emit(speeds, out);
    }

    /// A replayable input (Kafka) that stops: emitting the open windows now would publish
    /// them without the rest of their data, and the restarted stage (reading again from the
    /// oldest offset that feeds a window held here) would then publish the rest alone, which
    /// consumers upserting on (segment, window, estimator) would take as the whole. Nothing is
    /// emitted; the restart rebuilds every window held here and emits it complete.
    fn on_close_replayable(&mut self, _out: &mut Vec<Batch>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{osm_writer::synthetic_grid, ImportConfig};
    use crate::telemetry::metrics::metrics;

    fn observation(segment_id: u64, vehicle: &str, mid_ms: i64) -> SegmentObservation {
        let exit_ts_ms = mid_ms + 5_000;
        SegmentObservation {
            observation_id: crate::matching::observations::observation_id(
                vehicle, segment_id, exit_ts_ms,
            ),
            segment_id,
            vehicle_id: vehicle.to_string(),
            enter_ts_ms: mid_ms - 5_000,
            exit_ts_ms,
            traversed_m: 10.0,
            speed_mps: 1.0,
            next_segment_id: None,
            flags: 0,
        }
    }

    /// Two batches whose second holds one observation past the allowed lateness; what the
    /// stage emitted, as (speeds, late observations) per kind of batch.
    fn run_with_late_port(component: &str, connected: bool) -> (usize, usize, AggregateStage) {
        let graph = Arc::new(
            synthetic_grid(3, 3, 100.0, 60.17, 24.94)
                .build_graph(&ImportConfig::default())
                .expect("grid builds"),
        );
        let segment = graph.segment(0).segment_id;
        let config = AggregateConfig {
            window_ms: 60_000,
            max_out_of_orderness_ms: 10_000,
            allowed_lateness_ms: 60_000,
            idle_timeout_ms: 0,
            ..AggregateConfig::default()
        };
        let mut stage = AggregateStage::new(&config, graph, metrics().component(component))
            .with_late_port(connected);
        let mut out = Vec::new();
        // The watermark reaches 190 s: window [0, 60 s) expires at 120 s.
        let first = vec![
            observation(segment, "a", 10_000),
            observation(segment, "a", 200_000),
        ];
        stage.process_batch(Batch::new(Records::Observations(first)), &mut out);
        let late = vec![
            observation(segment, "b", 20_000),
            observation(segment, "b", 195_000),
        ];
        stage.process_batch(Batch::new(Records::Observations(late)), &mut out);
        stage.on_close(&mut out);
        let count = |kind: crate::record::RecordKind| {
            out.iter()
                .filter(|b| b.records.kind() == kind)
                .map(|b| b.records.len())
                .sum::<usize>()
        };
        (
            count(crate::record::RecordKind::SegmentSpeed),
            count(crate::record::RecordKind::SegmentObservation),
            stage,
        )
    }

    #[test]
    fn late_observations_go_to_a_connected_late_port() {
        let (speeds, late, stage) = run_with_late_port("late_port_connected", true);
        assert!(speeds > 0);
        assert_eq!(late, 1);
        assert_eq!(stage.late_discarded, 0);
        assert_eq!(observation_totals("late_port_connected"), (3, 1));
    }

    #[test]
    fn late_observations_nobody_reads_are_counted_not_batched() {
        let (speeds, late, stage) = run_with_late_port("late_port_unread", false);
        assert!(speeds > 0);
        assert_eq!(late, 0, "no late batch is built");
        assert_eq!(stage.late_discarded, 1);
        assert_eq!(observation_totals("late_port_unread"), (3, 1));
    }
}
