//! The process-wide metric registry and the handles each component uses.
//!
//! Names follow Prometheus conventions: prefix `pipeline_`, base units, `_total` on counters.
//! Labels are bounded: component names, reasons and error types only, never vehicle or
//! segment ids.

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
                "Files a component opened, by outcome (read, skipped, written).",
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

    /// Counts dropped records; `reason` must come from a closed set.
    pub fn dropped(&self, component: &str, reason: &str, count: u64) {
        if count > 0 {
            if let Ok(mut seen) = self.drop_labels.lock() {
                if !seen.contains(&(component.to_string(), reason.to_string())) {
                    seen.insert((component.to_string(), reason.to_string()));
                }
            }
            self.dropped_events
                .with_label_values(&[component, reason])
                .inc_by(count);
        }
    }

    /// Counts an error a component survived; `error_type` must come from a closed set.
    pub fn error(&self, component: &str, error_type: &str) {
        self.errors
            .with_label_values(&[component, error_type])
            .inc();
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
