//! Aggregation throughput (criterion, observations/s on one core, window emission included)
//! with uniform traffic over 50 k and 5 k segments and with one hot segment taking 10 % of
//! all observations, each through a fresh aggregator per pass of 1 M observations, and the
//! uniform 50 k case once more through one long-lived aggregator (steady state); plus the
//! heap held per open
//! segment-window at 1 M and 10 M open windows (counting allocator), and per observation id
//! remembered for de-duplication (one per observation there).
//!
//! Run: `cargo bench --bench aggregate` (env `BENCH_MEMORY_WINDOWS`, default "1000000
//! 10000000"; set it empty to skip the memory report).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use pipeline::aggregate::{AggregateConfig, Aggregator, SegmentCatalog};
use pipeline::record::SegmentObservation;
use rand::{Rng, SeedableRng};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live_bytes, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Every segment id is known and 100 m long.
struct AnySegment;

impl SegmentCatalog for AnySegment {
    fn length_m(&self, _segment_id: u64) -> Option<f64> {
        Some(100.0)
    }
    fn version(&self) -> u64 {
        1
    }
}

const OBSERVATIONS: usize = 1_000_000;
const BATCH: usize = 10_000;

/// A stream of observations in event-time order over `segments` segments, 2 000 per second
/// of event time (so a 60 s window holds 120 k of them), with `hot_share` of them on one
/// segment.
fn stream(segments: u64, hot_share: f64) -> Vec<SegmentObservation> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..OBSERVATIONS)
        .map(|i| {
            let segment_id = if rng.random_bool(hot_share) {
                0x5EED
            } else {
                rng.random_range(0..segments)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    >> 1
            };
            let speed_mps: f64 = rng.random_range(2.0..35.0);
            let exit_ts_ms = 1_700_000_000_000 + i as i64 / 2;
            let duration_ms = (100_000.0 / speed_mps) as i64;
            SegmentObservation {
                observation_id: i as u64,
                segment_id,
                vehicle_id: format!("veh-{}", rng.random_range(0..20_000)),
                enter_ts_ms: exit_ts_ms - duration_ms,
                exit_ts_ms,
                traversed_m: 100.0,
                speed_mps,
                next_segment_id: None,
                flags: 0,
            }
        })
        .collect()
}

fn run(observations: &[SegmentObservation], config: &AggregateConfig) -> usize {
    let mut agg = Aggregator::new(config, AnySegment);
    let mut out = Vec::new();
    let mut rows = 0;
    for batch in observations.chunks(BATCH) {
        for o in batch {
            let _ = agg.push(o, 0, 0);
        }
        agg.advance(0, &mut out);
        rows += out.len();
        out.clear();
    }
    agg.flush_all(&mut out);
    rows + out.len()
}

/// Event time one pass of [`stream`] spans: 2 000 observations per second.
const PASS_MS: i64 = OBSERVATIONS as i64 / 2;

/// One pass through a long-lived aggregator (a stage runs for hours): windows close and are
/// freed as the watermark moves, and the next pass continues in event time, so the
/// allocations of its first windows (page faults on fresh memory) are not counted.
fn run_steady(
    agg: &mut Aggregator<AnySegment>,
    observations: &[SegmentObservation],
    out: &mut Vec<pipeline::record::SegmentSpeed>,
) -> usize {
    let mut rows = 0;
    for batch in observations.chunks(BATCH) {
        for o in batch {
            let _ = agg.push(o, 0, 0);
        }
        agg.advance(0, out);
        rows += out.len();
        out.clear();
    }
    rows
}

fn shift(observations: &mut [SegmentObservation], by_ms: i64) {
    for o in observations {
        o.enter_ts_ms += by_ms;
        o.exit_ts_ms += by_ms;
    }
}

fn throughput(c: &mut Criterion) {
    let config = AggregateConfig {
        idle_timeout_ms: 0,
        ..AggregateConfig::default()
    };
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(OBSERVATIONS as u64));
    group.sample_size(10);
    // 50 k segments: a window's state (about 6 MB) overflows the L2 cache, so every update
    // is a cache miss; 5 k segments: a city centre, whose state stays in cache.
    for (name, segments, hot_share) in [
        ("uniform_50k_segments", 50_000, 0.0),
        ("hot_segment_10pct_50k_segments", 50_000, 0.1),
        ("uniform_5k_segments", 5_000, 0.0),
    ] {
        let observations = stream(segments, hot_share);
        group.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| black_box(run(&observations, &config)),
                BatchSize::PerIteration,
            )
        });
    }
    // The uniform 50 k case again, in steady state: warm up over three passes, then time
    // passes only (each one continues the last in event time; the shift is not timed).
    let mut observations = stream(50_000, 0.0);
    let mut agg = Aggregator::new(&config, AnySegment);
    let mut out = Vec::new();
    for _ in 0..3 {
        run_steady(&mut agg, &observations, &mut out);
        shift(&mut observations, PASS_MS);
    }
    group.bench_function("uniform_50k_segments_steady_state", |b| {
        b.iter_custom(|passes| {
            let mut timed = Duration::ZERO;
            for _ in 0..passes {
                let started = Instant::now();
                black_box(run_steady(&mut agg, &observations, &mut out));
                timed += started.elapsed();
                shift(&mut observations, PASS_MS);
            }
            timed
        })
    });
    group.finish();
}

/// Heap bytes per open segment-window, with every window still open (no watermark moves:
/// one window, `n` distinct segments).
fn memory_report() {
    let counts =
        std::env::var("BENCH_MEMORY_WINDOWS").unwrap_or_else(|_| "1000000 10000000".to_string());
    let config = AggregateConfig::default();
    for n in counts
        .split_whitespace()
        .filter_map(|s| s.parse::<u64>().ok())
    {
        let observation = |s: u64| SegmentObservation {
            observation_id: s,
            segment_id: s.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1,
            vehicle_id: String::new(),
            enter_ts_ms: 1_700_000_000_000,
            exit_ts_ms: 1_700_000_010_000,
            traversed_m: 100.0,
            speed_mps: 10.0,
            next_segment_id: None,
            flags: 0,
        };
        let before = live_bytes();
        let mut agg = Aggregator::new(&config, AnySegment);
        for s in 0..n {
            let _ = agg.push(&observation(s), 0, 0);
        }
        let live = live_bytes() - before;
        // One observation per segment-window here, so one remembered id each; a real
        // window holds many observations, and the ids expire with the windows.
        let ids_bytes = agg.remembered_ids_bytes();
        println!(
            "memory: {} open segment-windows: {:.1} B each on the heap ({:.1} B by the \
             aggregator's own count; WindowState is {} B), of which {:.1} B per remembered \
             observation id ({} ids)",
            agg.open_windows(),
            live as f64 / agg.open_windows() as f64,
            agg.state_bytes() as f64 / agg.open_windows() as f64,
            std::mem::size_of::<pipeline::aggregate::state::WindowState>(),
            ids_bytes as f64 / agg.remembered_ids() as f64,
            agg.remembered_ids()
        );
        drop(agg);
    }
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    c.final_summary();
}
