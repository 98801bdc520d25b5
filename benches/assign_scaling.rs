//! The assign stage alone (`AssignStage`: shard, match on the rayon pool, merge, sort,
//! evict), fed the same batches with 1 and 2 workers, and the ratio, which the
//! map-matching performance work wants ≥ 1.8×. Also the ceiling: the same shards matched
//! by bare `Matcher`s on scoped threads with no merge, sort or eviction, so the stage's own
//! overhead shows apart from what the machine allows. No decode, clean or sinks are involved, unlike `pipeline replay`.
//!
//! The machine this runs on may be shared, and then wall-clock ratios say more about the
//! other load than about the code. So each run also reads the CPU time of every thread
//! (`/proc/thread-self/schedstat`, Linux) and reports a model of 2 free cores: per batch,
//! the calling thread's CPU time (split, merge) plus the busiest worker's, summed over
//! batches; the ratio of those sums for 1 and 2 workers is the scaling the code allows.
//!
//! Run: `cargo bench --bench assign_scaling -- [GRAPH.osm.pbf|.graph ...]` (the synthetic
//! grid without arguments). Env: `BENCH_VEHICLES` (default 1000), `BENCH_DURATION_S`
//! (default 240), `BENCH_INTERVAL_S` (default 1), `BENCH_BATCH` probes per batch (default
//! 8192, the replay source's default), `BENCH_REPEAT` (default 5, best and median shown).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::connector::generator::{generate, GeneratorSourceConfig};
use pipeline::graph::osm_writer::synthetic_grid;
use pipeline::graph::{ImportConfig, RoadGraph};
use pipeline::matching::{MatchConfig, MatchOutput, Matcher};
use pipeline::record::Probe;
use pipeline::runtime::{Batch, Transform};
use pipeline::stage::assign::{shard_of, AssignConfig, AssignStage};
use pipeline::telemetry::metrics;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds a thread has run on a CPU, from its `schedstat` file (None off Linux).
fn cpu_ns(schedstat: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(schedstat).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn own_cpu_ns() -> Option<u64> {
    cpu_ns(std::path::Path::new("/proc/thread-self/schedstat"))
}

/// The `schedstat` files of this process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<PathBuf> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim_end().starts_with(prefix))
        })
        .map(|t| t.path().join("schedstat"))
        .collect()
}

/// Wall time and the 2-free-cores model time (CPU ns, see the module docs) of one run.
struct Timing {
    wall: Duration,
    model_ns: Option<u64>,
    /// The stage's model split: calling thread, busiest worker, all workers (CPU ns).
    parts_ns: [u64; 3],
}

/// One pass of the stage over `batches` (the copies are made before the clock starts).
fn stage_once(graph: &Arc<RoadGraph>, workers: usize, batches: &[Vec<Probe>]) -> Timing {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let component = format!("ab{}", RUNS.fetch_add(1, Ordering::Relaxed));
    let config = AssignConfig {
        workers: Some(workers),
        matching: MatchConfig::default(),
    };
    let mut stage = match AssignStage::new(config, graph.clone(), metrics().component(&component)) {
        Ok(stage) => stage,
        Err(e) => panic!("assign stage: {e}"),
    };
    // Pool threads name themselves once started.
    let prefix = format!("assign-{component}-");
    let mut pool = threads_named(&prefix);
    for _ in 0..1000 {
        if pool.len() == workers {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        pool = threads_named(&prefix);
    }
    let mut model_ns = (pool.len() == workers).then_some(0u64);
    let mut parts_ns = [0u64; 3];
    let mut measure = |stage: &mut AssignStage, step: &mut dyn FnMut(&mut AssignStage)| {
        let main_before = own_cpu_ns();
        let pool_before: Vec<Option<u64>> = pool.iter().map(|p| cpu_ns(p)).collect();
        step(stage);
        let main = own_cpu_ns()
            .zip(main_before)
            .map(|(a, b)| a.saturating_sub(b));
        let used: Option<Vec<u64>> = pool
            .iter()
            .zip(&pool_before)
            .map(|(p, before)| cpu_ns(p).zip(*before).map(|(a, b)| a.saturating_sub(b)))
            .collect();
        let busiest = used.as_ref().map(|u| u.iter().copied().max().unwrap_or(0));
        model_ns = match (model_ns, main, busiest) {
            (Some(t), Some(main), Some(busiest)) => {
                parts_ns[0] += main;
                parts_ns[1] += busiest;
                parts_ns[2] += used.map_or(0, |u| u.iter().sum());
                Some(t + main + busiest)
            }
            _ => None,
        };
    };
    let input: Vec<Batch> = batches.iter().map(|b| Batch::from(b.clone())).collect();
    let mut out = Vec::new();
    let start = Instant::now();
    for batch in input {
        let mut batch = Some(batch);
        measure(&mut stage, &mut |stage| {
            if let Some(batch) = batch.take() {
                stage.process_batch(batch, &mut out);
            }
        });
        // Dropping the output is the sink's work, not the stage's.
        out.clear();
    }
    measure(&mut stage, &mut |stage| stage.on_close(&mut out));
    let wall = start.elapsed();
    drop(out);
    Timing {
        wall,
        model_ns,
        parts_ns,
    }
}

/// The ceiling: each shard's probes matched by its own `Matcher` on its own thread, in one
/// go, outputs dropped unmerged. The model time is the busiest thread's CPU time.
fn bare_once(graph: &Arc<RoadGraph>, workers: usize, probes: &[Probe]) -> Timing {
    let mut parts: Vec<Vec<Probe>> = vec![Vec::new(); workers];
    for p in probes {
        parts[shard_of(&p.vehicle_id, workers)].push(p.clone());
    }
    let mut matchers: Vec<Matcher> = (0..workers)
        .map(|_| Matcher::new(graph.clone(), MatchConfig::default()))
        .collect();
    let start = Instant::now();
    let cpu: Vec<Option<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = matchers
            .iter_mut()
            .zip(parts)
            .map(|(matcher, part)| {
                s.spawn(move || {
                    let before = own_cpu_ns();
                    let mut out = MatchOutput::default();
                    for probe in part {
                        matcher.push(probe, &mut out);
                        if out.matched.len() > 4096 {
                            out.clear();
                        }
                    }
                    matcher.flush_all(&mut out);
                    own_cpu_ns().zip(before).map(|(a, b)| a.saturating_sub(b))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let wall = start.elapsed();
    let model_ns = cpu.iter().try_fold(0u64, |m, c| c.map(|c| m.max(c)));
    let all_ns = cpu.iter().flatten().sum();
    Timing {
        wall,
        model_ns,
        parts_ns: [0, model_ns.unwrap_or(0), all_ns],
    }
}

/// Best and median of `times`.
fn best_median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

/// Median of the model times, if every run had one.
fn model_median(runs: &[Timing]) -> Option<Duration> {
    let mut ns: Vec<u64> = runs.iter().map(|r| r.model_ns).collect::<Option<_>>()?;
    ns.sort_unstable();
    ns.get(ns.len() / 2).map(|&n| Duration::from_nanos(n))
}

fn bench_graph(name: &str, graph: Arc<RoadGraph>) {
    graph.build_spatial_index();
    let config = GeneratorSourceConfig {
        vehicles: env_usize("BENCH_VEHICLES", 1000) as u32,
        duration_s: env_f64("BENCH_DURATION_S", 240.0),
        interval_s: env_f64("BENCH_INTERVAL_S", 1.0),
        noise_m: 5.0,
        seed: 1,
        ..GeneratorSourceConfig::default()
    };
    let (probes, _) = generate(&graph, &config);
    let batch = env_usize("BENCH_BATCH", 8192).max(1);
    let repeat = env_usize("BENCH_REPEAT", 5).max(1);
    let batches: Vec<Vec<Probe>> = probes.chunks(batch).map(<[Probe]>::to_vec).collect();
    let n = probes.len() as f64;
    println!(
        "{name}: {} probes, {} vehicles at {} s, batches of {batch}, {repeat} runs each",
        probes.len(),
        config.vehicles,
        config.interval_s
    );
    // Interleaved, so that noise from another tenant of the machine hits both counts.
    let mut stage_runs: [Vec<Timing>; 2] = [Vec::new(), Vec::new()];
    let mut bare_runs: [Vec<Timing>; 2] = [Vec::new(), Vec::new()];
    let _ = stage_once(&graph, 1, &batches);
    for _ in 0..repeat {
        for (i, workers) in [1, 2].into_iter().enumerate() {
            stage_runs[i].push(stage_once(&graph, workers, &batches));
            bare_runs[i].push(bare_once(&graph, workers, &probes));
        }
    }
    let rate = |d: Duration| n / d.as_secs_f64();
    for (what, runs) in [("stage", &stage_runs), ("bare matchers", &bare_runs)] {
        let mut best_rate = [0.0; 2];
        let mut model: [Option<Duration>; 2] = [None; 2];
        for (i, timings) in runs.iter().enumerate() {
            let (best, median) = best_median(timings.iter().map(|t| t.wall).collect());
            best_rate[i] = rate(best);
            model[i] = model_median(timings);
            // CPU split of the median-model run: serial µs per batch and worker balance.
            let mut by_model: Vec<&Timing> = timings.iter().collect();
            by_model.sort_by_key(|t| t.model_ns);
            let [main, busiest, all] = by_model[by_model.len() / 2].parts_ns;
            let mean_worker = all as f64 / (i + 1) as f64;
            println!(
                "  {what:<14} workers {}  wall best {:>8.0} probes/s  median {:>8.0} probes/s  \
                 model {}  (calling thread {:.0} µs/batch, busiest worker / mean {:.3}, \
                 worker CPU {:.2} µs/probe)",
                i + 1,
                rate(best),
                rate(median),
                model[i].map_or("n/a".into(), |m| format!("{:.0} probes/s", rate(m))),
                main as f64 / 1e3 / (batches.len() + 1) as f64,
                busiest as f64 / mean_worker.max(1.0),
                all as f64 / 1e3 / n,
            );
        }
        let model_ratio = match model {
            [Some(one), Some(two)] => format!("{:.2}×", one.as_secs_f64() / two.as_secs_f64()),
            _ => "n/a".into(),
        };
        println!(
            "  {what:<14} 2 vs 1: wall (best) {:.2}×, model of 2 free cores (median) {model_ratio}",
            best_rate[1] / best_rate[0]
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let defaults = MatchConfig::default();
    println!(
        "assign stage alone, k = {}, r = {} m (the defaults), σ_noise = 5 m, 1 and 2 workers",
        defaults.k, defaults.radius_m
    );
    if args.is_empty() {
        match synthetic_grid(20, 20, 150.0, 47.0, 9.0).build_graph(&ImportConfig::default()) {
            Ok(graph) => bench_graph("grid 20x20 @150 m", Arc::new(graph)),
            Err(e) => eprintln!("grid: {e}"),
        }
    }
    for path in args {
        let name = std::path::Path::new(&path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.clone());
        match RoadGraph::open(&path, &ImportConfig::default()) {
            Ok(graph) => bench_graph(&name, Arc::new(graph)),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}
