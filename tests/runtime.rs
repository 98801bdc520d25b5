//! Runtime: backpressure reaches the source, shutdown drains and flushes, a stuck sink hits
//! the shutdown limit, a failed sink stops the pipeline with an error, and an idle input
//! still gets its windows emitted (transform ticks).
//! Stages run on real OS threads, which tokio's paused clock cannot see, so these tests use
//! the real clock with short delays and generous limits; they assert what happened, never
//! how long it took.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use pipeline::config::RuntimeConfig;
use pipeline::record::Probe;
use pipeline::runtime::{
    Batch, BoxError, Component, Input, Link, Output, Records, RunError, Sink, Source, Topology,
};
use pipeline::stage::clean::{CleanConfig, CleanStage};
use pipeline::telemetry::metrics;

const T0: i64 = 1_700_000_000_000;

/// Emits `batches` batches (or forever when None) of 10 probes each, counting sends.
struct CountingSource {
    batches: Option<usize>,
    sent: Arc<AtomicUsize>,
}

#[async_trait]
impl Source for CountingSource {
    async fn run(
        self: Box<Self>,
        mut out: Output,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let mut i = 0usize;
        while self.batches.is_none_or(|n| i < n) && !shutdown.is_cancelled() {
            let probes = (0..10)
                .map(|k| {
                    let t = (i * 10 + k) as i64;
                    Probe::new(format!("v{k}"), T0 + t * 1000, 60.0, 24.0 + t as f64 * 1e-5)
                })
                .collect::<Vec<_>>();
            out.send(Batch::from(probes)).await?;
            self.sent.fetch_add(1, Ordering::SeqCst);
            i += 1;
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

/// Sleeps per batch; checks how far ahead the source ran; records that it was closed.
struct SlowSink {
    delay: Duration,
    source_sent: Arc<AtomicUsize>,
    received_batches: Arc<AtomicUsize>,
    received_probes: Arc<AtomicUsize>,
    max_ahead: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    fail_after: Option<usize>,
    hang_at_end: bool,
}

#[async_trait]
impl Sink for SlowSink {
    async fn run(self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        while let Some(batch) = input.next().await {
            let got = self.received_batches.fetch_add(1, Ordering::SeqCst) + 1;
            if let Records::Probes(p) = &batch.records {
                self.received_probes.fetch_add(p.len(), Ordering::SeqCst);
            }
            let ahead = self.source_sent.load(Ordering::SeqCst).saturating_sub(got);
            self.max_ahead.fetch_max(ahead, Ordering::SeqCst);
            if self.fail_after.is_some_and(|n| got >= n) {
                return Err("disk full (simulated)".into());
            }
            tokio::time::sleep(self.delay).await;
        }
        if self.hang_at_end {
            std::future::pending::<()>().await;
        }
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

struct Harness {
    sent: Arc<AtomicUsize>,
    received_batches: Arc<AtomicUsize>,
    received_probes: Arc<AtomicUsize>,
    max_ahead: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
}

fn topology(
    prefix: &str,
    batches: Option<usize>,
    capacity: usize,
    fail_after: Option<usize>,
    hang_at_end: bool,
    shutdown_timeout_ms: u64,
) -> (Topology, Harness) {
    let h = Harness {
        sent: Arc::default(),
        received_batches: Arc::default(),
        received_probes: Arc::default(),
        max_ahead: Arc::default(),
        closed: Arc::default(),
    };
    let (src, clean, sink) = (
        format!("{prefix}_src"),
        format!("{prefix}_clean"),
        format!("{prefix}_sink"),
    );
    let components = vec![
        (
            src.clone(),
            Component::Source(Box::new(CountingSource {
                batches,
                sent: h.sent.clone(),
            })),
        ),
        (
            clean.clone(),
            Component::Transform(Box::new(CleanStage::new(
                CleanConfig {
                    reorder_window_ms: 0,
                    ..CleanConfig::default()
                },
                metrics().component(&clean),
            ))),
        ),
        (
            sink.clone(),
            Component::Sink(Box::new(SlowSink {
                delay: Duration::from_millis(2),
                source_sent: h.sent.clone(),
                received_batches: h.received_batches.clone(),
                received_probes: h.received_probes.clone(),
                max_ahead: h.max_ahead.clone(),
                closed: h.closed.clone(),
                fail_after,
                hang_at_end,
            })),
        ),
    ];
    let runtime = RuntimeConfig {
        channel_capacity_batches: capacity,
        shutdown_timeout_ms,
    };
    (
        Topology::new(
            components,
            vec![Link::any(src, clean.clone()), Link::any(clean, sink)],
            &runtime,
        ),
        h,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sink_slows_the_source_and_nothing_is_lost() {
    let (topology, h) = topology("bp", Some(200), 2, None, false, 60_000);
    let report = topology.run(CancellationToken::new()).await.unwrap();
    assert!(!report.interrupted);
    assert_eq!(h.sent.load(Ordering::SeqCst), 200);
    assert_eq!(
        h.received_probes.load(Ordering::SeqCst),
        2000,
        "every probe arrives"
    );
    // Two channels of capacity 2, plus one batch in each component's hands.
    let ahead = h.max_ahead.load(Ordering::SeqCst);
    assert!(
        ahead <= 8,
        "the source ran {ahead} batches ahead of a slow sink"
    );
    assert!(h.closed.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_sources_drains_and_closes_sinks() {
    let (topology, h) = topology("sd", None, 4, None, false, 60_000);
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let report = topology.run(shutdown).await.unwrap();
    assert!(report.interrupted);
    assert!(
        h.closed.load(Ordering::SeqCst),
        "the sink saw the end of its input"
    );
    let sent_probes = h.sent.load(Ordering::SeqCst) * 10;
    assert!(sent_probes > 0);
    assert_eq!(
        h.received_probes.load(Ordering::SeqCst),
        sent_probes,
        "everything the source sent was drained to the sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_sink_hits_the_shutdown_limit() {
    let (topology, _h) = topology("stuck", None, 4, None, true, 500);
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    match topology.run(shutdown).await {
        Err(RunError::ShutdownTimeout { pending, .. }) => {
            assert!(pending.contains(&"stuck_sink".to_string()), "{pending:?}")
        }
        other => panic!("expected a shutdown timeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sink_stops_the_pipeline_with_its_error() {
    let (topology, h) = topology("fail", None, 2, Some(3), false, 60_000);
    match topology.run(CancellationToken::new()).await {
        Err(RunError::Component { component, source }) => {
            assert_eq!(component, "fail_sink");
            assert!(source.to_string().contains("disk full"));
        }
        other => panic!("expected the sink's error, got {other:?}"),
    }
    let sent = h.sent.load(Ordering::SeqCst);
    assert!(
        sent <= 3 + 2 * 2 + 2,
        "the source stopped; it sent {sent} batches"
    );
}

/// Sends one batch of observations, then stays open (idle) until shutdown.
struct IdleObservationSource {
    observations: Vec<pipeline::record::SegmentObservation>,
}

#[async_trait]
impl Source for IdleObservationSource {
    async fn run(
        self: Box<Self>,
        mut out: Output,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        out.send(Batch::new(Records::Observations(self.observations)))
            .await?;
        shutdown.cancelled().await;
        Ok(())
    }
}

/// Signals the first batch of speeds it receives.
struct SpeedsSink {
    got_speeds: tokio::sync::mpsc::Sender<usize>,
}

#[async_trait]
impl Sink for SpeedsSink {
    async fn run(self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        while let Some(batch) = input.next().await {
            if let Records::Speeds(s) = &batch.records {
                let _ = self.got_speeds.send(s.len()).await;
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_input_still_gets_its_windows_emitted() {
    use pipeline::aggregate::AggregateConfig;
    use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};
    use pipeline::stage::aggregate::AggregateStage;

    let graph = Arc::new(
        synthetic_grid(3, 3, 100.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .unwrap(),
    );
    let segment = graph.segment(0).segment_id;
    // Traversals centred 54–56 s into a 60 s window: once the input is idle, the window
    // closes after a few seconds of processing time.
    let window_ms = 60_000;
    let enter_ms = T0 - T0.rem_euclid(window_ms) + 50_000;
    let observations = (0..3)
        .map(|i| pipeline::record::SegmentObservation {
            observation_id: i,
            segment_id: segment,
            vehicle_id: format!("v{i}"),
            enter_ts_ms: enter_ms + i as i64 * 1_000,
            exit_ts_ms: enter_ms + i as i64 * 1_000 + 8_000,
            traversed_m: 100.0,
            speed_mps: 10.0,
            next_segment_id: None,
            flags: 0,
        })
        .collect();
    let config = AggregateConfig {
        window_ms,
        idle_timeout_ms: 200,
        ..AggregateConfig::default()
    };
    let (tx, mut got_speeds) = tokio::sync::mpsc::channel(4);
    let components = vec![
        (
            "idle_src".to_string(),
            Component::Source(Box::new(IdleObservationSource { observations })),
        ),
        (
            "idle_aggregate".to_string(),
            Component::Transform(Box::new(AggregateStage::new(
                &config,
                graph,
                metrics().component("idle_aggregate"),
            ))),
        ),
        (
            "idle_sink".to_string(),
            Component::Sink(Box::new(SpeedsSink { got_speeds: tx })),
        ),
    ];
    let topology = Topology::new(
        components,
        vec![
            Link::any("idle_src", "idle_aggregate"),
            Link::any("idle_aggregate", "idle_sink"),
        ],
        &RuntimeConfig {
            channel_capacity_batches: 4,
            shutdown_timeout_ms: 60_000,
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(topology.run(shutdown.clone()));
    // The source never closes: only the idle rule can close the window. The limit is there
    // so a regression fails instead of hanging; it is not a timing assertion.
    let rows = tokio::time::timeout(Duration::from_secs(120), got_speeds.recv())
        .await
        .expect("speeds emitted while the input stays open and idle");
    assert_eq!(rows, Some(1));
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
