//! Overload turns into backpressure, not memory: a churning generator with far more to send
//! than a blocked sink takes can only get a bounded number of probes into the pipeline
//! (the bounded channels plus what each component holds), and once the sink opens every
//! probe arrives. The mechanism behind `make soak SOAK_OVERLOAD=10`, checked without timing.
//!
//! The gate is a watch channel, not a delay; tokio's clock is paused, and the only waiting
//! is polling with a wall-clock guard that fails the test if the pipeline never fills up.
//! The other half of the bound: per-vehicle state in clean and assign follows the vehicles
//! seen within their TTLs, not every vehicle ever seen (the soak's churning fleet).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use pipeline::config::RuntimeConfig;
use pipeline::connector::generator::{generate, GeneratorSource, GeneratorSourceConfig};
use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig, RoadGraph};
use pipeline::matching::{MatchConfig, MatchOutput, Matcher};
use pipeline::runtime::{BoxError, Component, Input, Link, Records, Sink, Topology};
use pipeline::stage::clean::{CleanConfig, CleanStage, Cleaner};
use pipeline::telemetry::metrics;

/// Takes nothing until the gate opens; then counts probes. Records, at every batch, how
/// many probes the source had sent beyond those the sink had finished with.
struct GatedSink {
    gate: watch::Receiver<bool>,
    source: String,
    received_probes: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

#[async_trait]
impl Sink for GatedSink {
    async fn run(mut self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        loop {
            self.gate.wait_for(|open| *open).await?;
            let Some(batch) = input.next().await else {
                break;
            };
            let done = self.received_probes.load(Ordering::SeqCst);
            let sent = metrics().sent_total(&self.source) as usize;
            self.max_in_flight
                .fetch_max(sent.saturating_sub(done), Ordering::SeqCst);
            if let Records::Probes(p) = &batch.records {
                self.received_probes.fetch_add(p.len(), Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

fn grid() -> Arc<RoadGraph> {
    Arc::new(
        synthetic_grid(8, 8, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds"),
    )
}

#[tokio::test(start_paused = true)]
async fn overload_is_backpressure_bounded_by_channel_capacity_and_nothing_is_lost() {
    const VEHICLES: u32 = 50;
    const CAPACITY_BATCHES: usize = 2;
    // Two sampling ticks per batch, so every batch holds exactly this many probes.
    const BATCH_PROBES: usize = 2 * VEHICLES as usize;
    let graph = grid();
    let fleet = GeneratorSourceConfig {
        vehicles: VEHICLES,
        duration_s: 2_000.0,
        interval_s: 1.0,
        seed: 3,
        trip_s: Some(60.0),
        batch_size: BATCH_PROBES,
        rate: None,
        ..GeneratorSourceConfig::default()
    };
    let total_probes = generate(&graph, &fleet).0.len();
    let (src, clean, sink) = ("ovl_src", "ovl_clean", "ovl_sink");
    // In flight at most: a full channel on each of the two edges, the batch the source is
    // blocked sending, and the batch clean holds plus one tick in its reorder buffer.
    let bound_probes = (2 * CAPACITY_BATCHES + 3) * BATCH_PROBES;
    assert!(
        total_probes > 100 * bound_probes,
        "the source has far more to send"
    );

    let (open_gate, gate) = watch::channel(false);
    let received_probes = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let components = vec![
        (
            src.to_string(),
            Component::Source(Box::new(GeneratorSource::new(fleet, graph.clone()))),
        ),
        (
            clean.to_string(),
            Component::Transform(Box::new(CleanStage::new(
                CleanConfig {
                    reorder_window_ms: 0,
                    ..CleanConfig::default()
                },
                metrics().component(clean),
            ))),
        ),
        (
            sink.to_string(),
            Component::Sink(Box::new(GatedSink {
                gate,
                source: src.to_string(),
                received_probes: received_probes.clone(),
                max_in_flight: max_in_flight.clone(),
            })),
        ),
    ];
    let runtime = RuntimeConfig {
        channel_capacity_batches: CAPACITY_BATCHES,
        shutdown_timeout_ms: 60_000,
    };
    let topology = Topology::new(
        components,
        vec![Link::any(src, clean), Link::any(clean, sink)],
        &runtime,
    );
    let run = tokio::spawn(topology.run(CancellationToken::new()));

    // Blocked sink: the source fills both channels, then stops. Poll until it has sent at
    // least what the channels hold, and keep checking the bound a while after that.
    let guard = Instant::now();
    let mut polls_after_full = 0;
    while polls_after_full < 200 {
        assert!(
            guard.elapsed() < Duration::from_secs(120),
            "the pipeline never filled up: {} probes sent",
            metrics().sent_total(src)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        let sent = metrics().sent_total(src) as usize;
        assert!(
            sent <= bound_probes,
            "{sent} probes entered a pipeline that takes {bound_probes} while blocked"
        );
        if sent >= 2 * CAPACITY_BATCHES * BATCH_PROBES {
            polls_after_full += 1;
        }
    }
    assert_eq!(received_probes.load(Ordering::SeqCst), 0);

    // Open the sink: everything arrives, and the bound held at every batch on the way.
    open_gate.send_replace(true);
    let report = run.await.expect("the run task").expect("the run");
    assert!(!report.interrupted);
    assert_eq!(metrics().sent_total(src) as usize, total_probes);
    let dropped: u64 = metrics().dropped_totals(clean).iter().map(|(_, n)| n).sum();
    assert_eq!(
        received_probes.load(Ordering::SeqCst) + dropped as usize,
        total_probes,
        "every probe is delivered or counted as dropped"
    );
    let in_flight = max_in_flight.load(Ordering::SeqCst);
    assert!(
        in_flight <= bound_probes,
        "{in_flight} probes in flight, bound {bound_probes}"
    );
}

#[test]
fn churning_vehicles_are_evicted_so_state_follows_the_ttl_not_the_distinct_ids() {
    const VEHICLES: u32 = 40;
    const TRIP_S: f64 = 30.0;
    let graph = grid();
    let fleet = GeneratorSourceConfig {
        vehicles: VEHICLES,
        duration_s: 3_000.0,
        interval_s: 1.0,
        seed: 5,
        trip_s: Some(TRIP_S),
        ..GeneratorSourceConfig::default()
    };
    let (probes, _) = generate(&graph, &fleet);
    let distinct = probes
        .iter()
        .map(|p| p.vehicle_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let clean_config = CleanConfig {
        vehicle_ttl_ms: 60_000,
        ..CleanConfig::default()
    };
    let match_config = MatchConfig {
        vehicle_ttl_ms: 60_000,
        ..MatchConfig::default()
    };
    let (clean_ttl_s, assign_ttl_s) = (
        clean_config.vehicle_ttl_ms as f64 / 1000.0,
        match_config.vehicle_ttl_ms as f64 / 1000.0,
    );
    let mut cleaner = Cleaner::new(clean_config);
    let mut matcher = Matcher::new(graph.clone(), match_config);
    let mut out = MatchOutput::default();
    let (mut most_clean, mut most_assign) = (0, 0);
    // 100 probes per batch is 2.5 s of event time; clean evicts every 64 batches.
    let batch_s = 100.0 / f64::from(VEHICLES);
    for batch in probes.chunks(100) {
        let mut released = Vec::new();
        cleaner.push(batch.to_vec(), &mut released);
        let watermark_ms = released.iter().map(|p| p.ts_ms).max();
        matcher.push_all(released, &mut out);
        if let Some(w) = watermark_ms {
            matcher.evict_idle(w, &mut out);
        }
        most_clean = most_clean.max(cleaner.vehicle_count());
        most_assign = most_assign.max(matcher.active_vehicles());
    }
    // Trips last at least TRIP_S / 2, so at most VEHICLES new ids start per TRIP_S / 2;
    // state may hold the fleet plus every id started within the TTL and the time between
    // two evictions (plus the reorder window and a batch, for clean).
    let held_bound = |window_s: f64| f64::from(VEHICLES) * (1.0 + window_s / (TRIP_S / 2.0));
    let clean_bound = held_bound(clean_ttl_s + 65.0 * batch_s + 10.0);
    let assign_bound = held_bound(assign_ttl_s + 2.0 * batch_s);
    assert!(
        distinct as f64 > 3.0 * clean_bound.max(assign_bound),
        "{distinct} distinct vehicles are not enough to tell a leak from the bound"
    );
    assert!(
        (most_clean as f64) <= clean_bound,
        "clean held {most_clean} vehicles, bound {clean_bound}, of {distinct} seen"
    );
    assert!(
        (most_assign as f64) <= assign_bound,
        "assign held {most_assign} vehicles, bound {assign_bound}, of {distinct} seen"
    );
}
