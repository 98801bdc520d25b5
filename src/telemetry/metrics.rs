//! The process-wide metric registry and the handles each component uses.
//!
//! Names follow Prometheus conventions: prefix `pipeline_`, base units, `_total` on counters.
//! Labels are bounded: component names, reasons and error types only, never vehicle or
//! segment ids. Reasons and error types come from the closed sets [`DROP_REASONS`] and
//! [`ERROR_TYPES`]; a value outside them is counted as `other`. Every series a component
//! can produce is created at 0 when the component is built ([`Metrics::preregister`]), so
//! a rate over it is 0 rather than absent before the first drop or error.

use std::collections::BTreeSet;
use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc, Mutex, OnceLock,
};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Every value the `reason` label of `pipeline_component_dropped_events_total` can take.
/// `other` stands for a value outside the set (a programming error, asserted in debug).
pub const DROP_REASONS: &[&str] = &[
    // clean (stage::clean::DropReason); `duplicate` is also the aggregate's
    // (aggregate::Rejection::Duplicate: an observation id delivered again)
    "missing_vehicle_id",
    "invalid_coordinate",
    "future_timestamp",
    "stale_timestamp",
    "duplicate",
    "conflicting_timestamp",
    "late",
    "teleport",
    // aggregate (aggregate::Rejection)
    "invalid_observation",
    "unknown_segment",
    // re-read after a restart: the previous reader had emitted its windows for good
    "already_emitted",
    // the first segment of a trace (flag PARTIAL_START), not counted by design
    "partial_start",
    // Parquet source (connector::parquet::drop_reason)
    "null_field",
    "bad_timestamp",
    // a vehicle id that is not UTF-8 (Parquet source, Binary column)
    "invalid_utf8",
    // any stage or sink handed a batch of a kind it does not take
    "wrong_record_kind",
    // Kafka and Kinesis sources: a payload that does not decode; every decoder (Kafka,
    // Kinesis and Parquet sources) and the Kafka and Kinesis sinks: a record over the size
    // limits
    "undecodable",
    "too_large",
    "other",
];

/// Every value the `error_type` label of `pipeline_component_errors_total` can take.
pub const ERROR_TYPES: &[&str] = &[
    "component_failed",
    "corrupt_file",
    "wrong_record_kind",
    "consume",
    "dead_letter",
    "delivery_failed",
    // Kafka source: the per-partition checkpoint file of finalized windows
    "checkpoint_write",
    // Kinesis source and sink
    "list_shards",
    "get_shard_iterator",
    "get_shard_iterator_throttled",
    "get_records",
    "get_records_throttled",
    "iterator_expired",
    "subscribe_to_shard",
    "subscribe_to_shard_throttled",
    "subscribe_to_shard_stream",
    "put_records",
    "put_records_partial_failure",
    "record_too_large",
    "other",
];

/// Every value the `outcome` label of `pipeline_component_files_total` can take.
pub const FILE_OUTCOMES: &[&str] = &[
    "read",
    "skipped",
    "written",
    "abandoned",
    // Parquet sink, on start: a leftover `.tmp` renamed (valid footer) or removed
    "recovered",
    "discarded",
    // NDJSON sink with `append`, on start: a half-written last line cut
    "repaired",
];

/// A label value from a closed set, or `other`.
fn closed<'a>(set: &[&'a str], value: &'a str) -> &'a str {
    if set.contains(&value) {
        value
    } else {
        debug_assert!(false, "label value `{value}` is not in its closed set");
        "other"
    }
}

/// The series a component can produce beyond the per-component basics: which drop
/// reasons, error types and file outcomes apply to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Series<'a> {
    pub drop_reasons: &'a [&'a str],
    pub error_types: &'a [&'a str],
    pub file_outcomes: &'a [&'a str],
}

/// Every metric the binary exports, registered once per process.
pub struct Metrics {
    pub registry: Registry,
    received_events: IntCounterVec,
    sent_events: IntCounterVec,
    dropped_events: IntCounterVec,
    errors: IntCounterVec,
    batch_duration: HistogramVec,
    channel_depth: IntGaugeVec,
    event_time_lag: GaugeVec,
    event_time: GaugeVec,
    pub files: IntCounterVec,
    kinesis_millis_behind_latest: IntGaugeVec,
    /// (component, reason) pairs seen so far, for run summaries.
    drop_labels: Mutex<BTreeSet<(String, String)>>,
}

/// Registers a collector built from a constant definition: failure is a programming error
/// (an invalid name or a duplicate), never a runtime condition, hence `expect`.
fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric defined and registered once");
    collector
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(registry, v)
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let v = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(registry, v)
}

/// Registers an extra metric family defined outside this module (e.g. by a stage).
pub fn register_collector<C: Collector + Clone + 'static>(collector: C) -> C {
    register(&metrics().registry, collector)
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let channel_depth = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "pipeline_channel_depth_batches",
                    "Batches waiting in a component's input channel.",
                ),
                &["component"],
            )
            .expect("valid metric definition"),
        );
        let batch_duration = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "pipeline_component_batch_duration_seconds",
                    "Time a component spends processing one batch.",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ]),
                &["component"],
            )
            .expect("valid metric definition"),
        );
        let build_info = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "pipeline_build_info",
                    "Always 1; labels carry the build's version.",
                ),
                &["version"],
            )
            .expect("valid metric definition"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric defined and registered once");
        Self {
            received_events: counter_vec(
                r,
                "pipeline_component_received_events_total",
                "Records a component received from its input.",
                &["component"],
            ),
            sent_events: counter_vec(
                r,
                "pipeline_component_sent_events_total",
                "Records a component sent downstream.",
                &["component"],
            ),
            dropped_events: counter_vec(
                r,
                "pipeline_component_dropped_events_total",
                "Records a component dropped, by reason.",
                &["component", "reason"],
            ),
            errors: counter_vec(
                r,
                "pipeline_component_errors_total",
                "Errors a component met and survived, by type.",
                &["component", "error_type"],
            ),
            files: counter_vec(
                r,
                "pipeline_component_files_total",
                "Files a component opened, by outcome (read, skipped, written, abandoned, …).",
                &["component", "outcome"],
            ),
            event_time_lag: gauge_vec(
                r,
                "pipeline_component_event_time_lag_seconds",
                "Wall clock minus the newest event time a component has emitted.",
                &["component"],
            ),
            event_time: gauge_vec(
                r,
                "pipeline_component_event_time_seconds",
                "Newest event time a component has emitted, as a Unix timestamp.",
                &["component"],
            ),
            // Registered here rather than by the Kinesis source so that the family is
            // defined once, whichever connectors a build or a run has.
            kinesis_millis_behind_latest: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "pipeline_kinesis_millis_behind_latest",
                        "Milliseconds the Kinesis source's last read is behind the tip of a \
                         shard (MillisBehindLatest of GetRecords).",
                    ),
                    &["component", "shard"],
                )
                .expect("valid metric definition"),
            ),
            batch_duration,
            channel_depth,
            registry,
            drop_labels: Mutex::new(BTreeSet::new()),
        }
    }

    /// The handles for one component, with its label values bound once.
    pub fn component(&self, name: &str) -> Arc<ComponentMetrics> {
        Arc::new(ComponentMetrics {
            component: name.to_string(),
            received_events: self.received_events.with_label_values(&[name]),
            sent_events: self.sent_events.with_label_values(&[name]),
            batch_duration: self.batch_duration.with_label_values(&[name]),
            channel_depth: self.channel_depth.with_label_values(&[name]),
            event_time_lag: self.event_time_lag.with_label_values(&[name]),
            event_time: self.event_time.with_label_values(&[name]),
            max_event_ts_ms: AtomicI64::new(i64::MIN),
        })
    }

    /// Creates, at 0, every series `component` can produce: the per-component basics and
    /// the drop reasons, error types and file outcomes `series` names (each from its closed
    /// set). Called when the component is built, so every series exists from start-up.
    pub fn preregister(&self, component: &str, series: Series<'_>) {
        drop(self.component(component));
        self.errors
            .with_label_values(&[component, "component_failed"]);
        for reason in series.drop_reasons {
            self.dropped_events
                .with_label_values(&[component, closed(DROP_REASONS, reason)]);
        }
        for error_type in series.error_types {
            self.errors
                .with_label_values(&[component, closed(ERROR_TYPES, error_type)]);
        }
        for outcome in series.file_outcomes {
            self.files
                .with_label_values(&[component, closed(FILE_OUTCOMES, outcome)]);
        }
    }

    /// Counts dropped records; `reason` must come from [`DROP_REASONS`] (else: `other`).
    /// A count of 0 creates the series without counting.
    pub fn dropped(&self, component: &str, reason: &str, count: u64) {
        let reason = closed(DROP_REASONS, reason);
        let counter = self.dropped_events.with_label_values(&[component, reason]);
        if count > 0 {
            if let Ok(mut seen) = self.drop_labels.lock() {
                if !seen.contains(&(component.to_string(), reason.to_string())) {
                    seen.insert((component.to_string(), reason.to_string()));
                }
            }
            counter.inc_by(count);
        }
    }

    /// Counts an error a component survived; `error_type` must come from [`ERROR_TYPES`]
    /// (else: `other`).
    pub fn error(&self, component: &str, error_type: &str) {
        self.errors
            .with_label_values(&[component, closed(ERROR_TYPES, error_type)])
            .inc();
    }

    /// The Kinesis source's lag per shard (`pipeline_kinesis_millis_behind_latest`).
    pub fn kinesis_millis_behind_latest(&self) -> &IntGaugeVec {
        &self.kinesis_millis_behind_latest
    }

    /// Records `component` has sent so far (for run summaries).
    pub fn sent_total(&self, component: &str) -> u64 {
        self.sent_events.with_label_values(&[component]).get()
    }

    /// Records `component` has received so far.
    pub fn received_total(&self, component: &str) -> u64 {
        self.received_events.with_label_values(&[component]).get()
    }

    /// Seconds `component` (a transform) has spent processing batches so far.
    pub fn busy_seconds(&self, component: &str) -> f64 {
        self.batch_duration
            .with_label_values(&[component])
            .get_sample_sum()
    }

    /// Records `component` has dropped so far, per reason, in reason order.
    pub fn dropped_totals(&self, component: &str) -> Vec<(String, u64)> {
        let seen = self
            .drop_labels
            .lock()
            .map(|set| set.clone())
            .unwrap_or_default();
        seen.into_iter()
            .filter(|(c, _)| c == component)
            .map(|(c, reason)| {
                let n = self.dropped_events.with_label_values(&[&c, &reason]).get();
                (reason, n)
            })
            .collect()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// One component's metric handles.
pub struct ComponentMetrics {
    pub component: String,
    pub received_events: IntCounter,
    pub sent_events: IntCounter,
    pub batch_duration: Histogram,
    pub channel_depth: IntGauge,
    event_time_lag: Gauge,
    event_time: Gauge,
    max_event_ts_ms: AtomicI64,
}

impl ComponentMetrics {
    /// Records the newest event time seen. Only telemetry reads the wall clock; processing
    /// never does.
    pub fn observe_event_time(&self, ts_ms: i64) {
        let newest = self
            .max_event_ts_ms
            .fetch_max(ts_ms, Ordering::Relaxed)
            .max(ts_ms);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.event_time.set(newest as f64 / 1000.0);
        self.event_time_lag.set((now_ms - newest) as f64 / 1000.0);
    }

    pub fn dropped(&self, reason: &str, count: u64) {
        metrics().dropped(&self.component, reason, count);
    }

    pub fn error(&self, error_type: &str) {
        metrics().error(&self.component, error_type);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_a_component_uses_is_in_the_closed_set() {
        use crate::aggregate::Rejection;
        use crate::connector::parquet::drop_reason;
        use crate::stage::clean::DropReason;
        let used = DropReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain([
                Rejection::Invalid.as_str(),
                Rejection::UnknownSegment.as_str(),
            ])
            .chain([
                drop_reason::NULL_FIELD,
                drop_reason::BAD_TIMESTAMP,
                drop_reason::WRONG_RECORD_KIND,
            ]);
        for reason in used {
            assert!(DROP_REASONS.contains(&reason), "{reason}");
        }
    }

    #[test]
    fn preregistered_series_exist_at_zero() {
        let m = metrics();
        m.preregister(
            "preregister_test",
            Series {
                drop_reasons: &["teleport", "duplicate"],
                error_types: &["corrupt_file"],
                file_outcomes: &["read"],
            },
        );
        let text = m.render();
        for series in [
            "pipeline_component_dropped_events_total{component=\"preregister_test\",reason=\"teleport\"} 0",
            "pipeline_component_dropped_events_total{component=\"preregister_test\",reason=\"duplicate\"} 0",
            "pipeline_component_errors_total{component=\"preregister_test\",error_type=\"corrupt_file\"} 0",
            "pipeline_component_errors_total{component=\"preregister_test\",error_type=\"component_failed\"} 0",
            "pipeline_component_files_total{component=\"preregister_test\",outcome=\"read\"} 0",
            "pipeline_component_received_events_total{component=\"preregister_test\"} 0",
            "pipeline_channel_depth_batches{component=\"preregister_test\"} 0",
        ] {
            assert!(text.contains(series), "missing `{series}`");
        }
    }
}
