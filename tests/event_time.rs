//! Event time across lanes read at uneven speeds, in process: a backlog of four partitions,
//! one holding most vehicles and read far more slowly than the rest, goes through clean →
//! assign → aggregate and must give the speeds of a replay of the same probes in time
//! order, with no late observation. The source here does what the Kafka and Kinesis
//! sources do with their lanes (`LaneClocks`); the broker tests (tests/backlog.rs) run the
//! same with the real services.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use pipeline::aggregate::AggregateConfig;
use pipeline::config::RuntimeConfig;
use pipeline::connector::generator::{generate, GeneratorSourceConfig};
use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig, RoadGraph};
use pipeline::record::{Probe, RecordKind};
use pipeline::runtime::{
    Acks, Batch, BoxError, Component, Input, LaneClocks, Link, Output, Records, Sink, Source,
    Topology, VecSource,
};
use pipeline::stage::aggregate::AggregateStage;
use pipeline::stage::assign::{AssignConfig, AssignStage};
use pipeline::stage::clean::{CleanConfig, CleanStage};
use pipeline::telemetry::metrics::metrics;

const BATCH: usize = 200;

/// Reads lanes as a consumer of a skewed backlog would: each round takes `per_round[lane]`
/// batches of each lane, so lane 0 (most vehicles, one batch a round) falls far behind the
/// others in event time; each lane reaches its end when read out. With `frontier` off it
/// sends the same batches without one (what the sources did before).
struct LaneBacklogSource {
    lanes: Vec<Vec<Probe>>,
    per_round: Vec<usize>,
    frontier: bool,
}

#[async_trait]
impl Source for LaneBacklogSource {
    async fn run(self: Box<Self>, mut out: Output, _: CancellationToken) -> Result<(), BoxError> {
        let mut clocks = LaneClocks::new();
        for lane in 0..self.lanes.len() as u32 {
            clocks.assign(lane);
        }
        let mut cursors = vec![0usize; self.lanes.len()];
        loop {
            let mut any = false;
            for (lane, probes) in self.lanes.iter().enumerate() {
                for _ in 0..self.per_round[lane] {
                    let at = cursors[lane];
                    if at >= probes.len() {
                        break;
                    }
                    any = true;
                    let end = (at + BATCH).min(probes.len());
                    cursors[lane] = end;
                    let records = Records::Probes(probes[at..end].to_vec());
                    if let Some(min_ms) = records.min_event_ts_ms() {
                        clocks.delivered(lane as u32, min_ms);
                    }
                    let mut batch = Batch::tracked(records, lane as u32, Acks::none());
                    if self.frontier {
                        batch.frontier = clocks.frontier();
                    }
                    out.send(batch).await?;
                    if end == probes.len() {
                        clocks.at_end(lane as u32);
                        if let (true, Some(f)) = (self.frontier, clocks.frontier()) {
                            out.send(Batch::frontier_only(Records::empty(RecordKind::Probe), f))
                                .await?;
                        }
                    }
                }
            }
            if !any {
                return Ok(());
            }
        }
    }
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Records>>>);

struct CollectSink(Collected);

#[async_trait]
impl Sink for CollectSink {
    async fn run(self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        while let Some(batch) = input.next().await {
            self.0
                 .0
                .lock()
                .map_err(|_| "poisoned")?
                .push(batch.records);
        }
        Ok(())
    }
}

type Key = (u64, i64, String);
type Value = (u32, u32, u64);

/// The last emission of every (segment, window, estimator): what a consumer upserting gets.
fn final_speeds(c: &Collected) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    for records in c.0.lock().expect("not poisoned").iter() {
        if let Records::Speeds(v) = records {
            for s in v {
                let key = (s.segment_id, s.window_start_ms, s.estimator.to_string());
                let value = (s.samples, s.vehicles, s.speed_mps.to_bits());
                out.insert(key, value);
            }
        }
    }
    out
}

fn late_count(c: &Collected) -> usize {
    c.0.lock()
        .expect("not poisoned")
        .iter()
        .filter(|r| matches!(r, Records::Observations(_)))
        .map(Records::len)
        .sum()
}

/// Runs source → clean → assign → aggregate, speeds and late observations collected.
async fn run_chain(
    name: &str,
    graph: &Arc<RoadGraph>,
    source: Box<dyn Source>,
) -> (BTreeMap<Key, Value>, usize) {
    let aggregate = AggregateConfig {
        // Replay's setting: the output depends on event time only.
        idle_timeout_ms: 0,
        ..AggregateConfig::default()
    };
    let (speeds, late) = (Collected::default(), Collected::default());
    let n = |s: &str| format!("{name}_{s}");
    let components = vec![
        (n("source"), Component::Source(source)),
        (
            n("clean"),
            Component::Transform(Box::new(CleanStage::new(
                CleanConfig::default(),
                metrics().component(&n("clean")),
            ))),
        ),
        (
            n("assign"),
            Component::Transform(Box::new(
                AssignStage::new(
                    AssignConfig::default(),
                    graph.clone(),
                    metrics().component(&n("assign")),
                )
                .expect("assign builds"),
            )),
        ),
        (
            n("aggregate"),
            Component::Transform(Box::new(AggregateStage::new(
                &aggregate,
                graph.clone(),
                metrics().component(&n("aggregate")),
            ))),
        ),
        (
            n("speeds"),
            Component::Sink(Box::new(CollectSink(speeds.clone()))),
        ),
        (
            n("late"),
            Component::Sink(Box::new(CollectSink(late.clone()))),
        ),
    ];
    let link = |from: &str, to: &str, kind: Option<RecordKind>| Link {
        from: n(from),
        to: n(to),
        kind,
    };
    let links = vec![
        link("source", "clean", None),
        link("clean", "assign", None),
        link("assign", "aggregate", Some(RecordKind::SegmentObservation)),
        link("aggregate", "speeds", Some(RecordKind::SegmentSpeed)),
        link("aggregate", "late", Some(RecordKind::SegmentObservation)),
    ];
    let runtime = RuntimeConfig {
        channel_capacity_batches: 4,
        shutdown_timeout_ms: 30_000,
    };
    Topology::new(components, links, &runtime)
        .run(CancellationToken::new())
        .await
        .expect("the chain runs");
    (final_speeds(&speeds), late_count(&late))
}

/// A 600 s fleet on a grid, and its probes split over four lanes by vehicle: lane 0 holds
/// about 70 % of the vehicles.
fn skewed_fleet() -> (Arc<RoadGraph>, Vec<Probe>, Vec<Vec<Probe>>) {
    let graph = Arc::new(
        synthetic_grid(8, 8, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds"),
    );
    let config = GeneratorSourceConfig {
        vehicles: 80,
        duration_s: 600.0,
        interval_s: 5.0,
        seed: 15,
        ..GeneratorSourceConfig::default()
    };
    let (mut probes, _) = generate(&graph, &config);
    probes.sort_by(|a, b| (a.ts_ms, &a.vehicle_id).cmp(&(b.ts_ms, &b.vehicle_id)));
    let mut lanes = vec![Vec::new(); 4];
    for p in &probes {
        let h = p
            .vehicle_id
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let lane = if h % 10 < 7 { 0 } else { 1 + (h % 3) as usize };
        lanes[lane].push(p.clone());
    }
    (graph, probes, lanes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_backlog_read_lane_by_lane_gives_the_speeds_of_a_sorted_replay() {
    let (graph, sorted, lanes) = skewed_fleet();
    assert!(
        lanes[0].len() > sorted.len() / 2,
        "lane 0 holds most probes"
    );
    let batches: Vec<Records> = sorted
        .chunks(BATCH)
        .map(|c| Records::Probes(c.to_vec()))
        .collect();
    let (reference, reference_late) =
        run_chain("et_reference", &graph, Box::new(VecSource(batches))).await;
    assert_eq!(reference_late, 0);
    assert!(reference.len() > 100, "{} speed rows", reference.len());

    // The small lanes are read 8 batches for each one of the big lane.
    let per_round = vec![1, 8, 8, 8];
    let (backlog, backlog_late) = run_chain(
        "et_backlog",
        &graph,
        Box::new(LaneBacklogSource {
            lanes: lanes.clone(),
            per_round: per_round.clone(),
            frontier: true,
        }),
    )
    .await;
    assert_eq!(backlog_late, 0, "no observation is late on a backlog");
    assert_eq!(backlog, reference, "the backlog gives the replay's speeds");

    // The same read order without the frontier loses data: the guard this test exists for.
    let (_, unguarded_late) = run_chain(
        "et_unguarded",
        &graph,
        Box::new(LaneBacklogSource {
            lanes,
            per_round,
            frontier: false,
        }),
    )
    .await;
    assert!(
        unguarded_late > 0,
        "without the frontier the skewed read makes observations late"
    );
}
