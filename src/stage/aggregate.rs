//! The aggregate stage: folds segment observations into event-time windows with
//! [`crate::aggregate::Aggregator`] and emits segment speeds (the default port); observations
//! past the allowed lateness go to the `late` port, if anything reads it.
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
                "Segment speed rows emitted, as first emissions or late-data revisions.",
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
        for emission in ["first", "revision"] {
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
        }
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
        for o in observations {
            match self.aggregator.push(&o, input, now_ms) {
                Err(Rejection::Late) => late.push(o),
                // Re-read after a restart: emitted before, by the previous reader.
                Err(Rejection::AlreadyEmitted) => {}
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
