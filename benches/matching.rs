//! Map-matching throughput in probes/s on one core (the default `MatchConfig`), on generated
//! traffic at 1 s and 5 s sampling: on the synthetic grid, plus any OSM extracts or `.graph` files
//! given as arguments. Also prints accuracy against the generator's truth, route searches
//! and cache hit rate, live heap bytes per active vehicle (counting allocator), and the size an FMM-style
//! precomputed table (δ = 3 km) would have on the same graph, which is what the choice of
//! bounded Dijkstra in `matching::route` rests on.
//!
//! Run: `cargo bench --bench matching -- /work/shared/data/osm/monaco.osm.pbf
//! /work/shared/data/osm/liechtenstein.osm.pbf` (env `BENCH_VEHICLES`, default 200;
//! `BENCH_PROBES` per run, default 120 000; `BENCH_NOISE_M`, the generator's GPS noise σ
//! in metres, a comma-separated list, default `5`, e.g. `0,5,10,20` for accuracy against
//! the generator's truth at several noise levels).
//!
//! Kubicka mode, to compare with a peer's match call on the same real tracks: with
//! `BENCH_KUBICKA=DIR` (e.g. `../shared/data/kubicka`), each `DIR/<id>/` track's
//! `map.osm.pbf` is imported and its `probes.csv` (vehicle_id,ts_ms,lat,lon; 1 Hz) read,
//! every n-th fix kept for each n in `BENCH_KUBICKA_EVERY` (default `1,5,15,30`), and only
//! `Matcher::push` and `flush_all` are timed (fresh matcher per track, so a cold route cache;
//! graph import and the R-tree outside the timing; best of `BENCH_REPEAT`, default 3, per
//! track). `BENCH_RADIUS_M` and `BENCH_K` override r and k.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline::connector::generator::{
    generate, segment_accuracy, GeneratorSourceConfig, TruthPoint,
};
use pipeline::graph::osm_writer::synthetic_grid;
use pipeline::graph::{ImportConfig, RoadGraph};
use pipeline::matching::{MatchConfig, MatchOutput, Matcher};
use pipeline::record::Probe;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live_bytes, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live heap bytes per active vehicle after matching `probes` without flushing, the route
/// cache and outputs excluded (the cache is shared and bounded; outputs leave at once).
fn bytes_per_vehicle(graph: &Arc<RoadGraph>, probes: &[Probe]) -> (f64, usize) {
    let config = MatchConfig {
        route_cache_entries: 0,
        ..MatchConfig::default()
    };
    let mut matcher = Matcher::new(graph.clone(), config);
    let mut out = MatchOutput::default();
    // Measured before the input copy: the loop consumes all of it.
    let before = live_bytes();
    let input = probes.to_vec();
    for probe in input {
        matcher.push(probe, &mut out);
        out.clear();
    }
    drop(out);
    let after = live_bytes();
    let vehicles = matcher.active_vehicles();
    (
        after.saturating_sub(before) as f64 / vehicles.max(1) as f64,
        vehicles,
    )
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    elapsed: Duration,
    out: MatchOutput,
    searches: u64,
    hits: u64,
    misses: u64,
    pending_per_vehicle: f64,
    mean_candidates: f64,
}

fn match_once(graph: &Arc<RoadGraph>, probes: &[Probe]) -> Run {
    let mut matcher = Matcher::new(graph.clone(), MatchConfig::default());
    let mut out = MatchOutput::default();
    let input = probes.to_vec();
    let start = Instant::now();
    matcher.push_all(input, &mut out);
    let pending_per_vehicle =
        matcher.pending_probes() as f64 / matcher.active_vehicles().max(1) as f64;
    matcher.flush_all(&mut out);
    let elapsed = start.elapsed();
    let route = matcher.route_stats();
    let hist = &matcher.stats().candidates_per_probe;
    let total: u64 = hist.iter().sum();
    let weighted: u64 = hist.iter().enumerate().map(|(k, n)| k as u64 * n).sum();
    Run {
        elapsed,
        out,
        searches: route.searches,
        hits: route.cache_hits,
        misses: route.cache_misses,
        pending_per_vehicle,
        mean_candidates: weighted as f64 / total.max(1) as f64,
    }
}

/// Mean relative error of full-traversal observation speeds against the generator's speed
/// on that segment, and how many were compared, over observations at least `min_m` long.
fn speed_error(out: &MatchOutput, truth: &[TruthPoint], min_m: f64) -> (f64, usize) {
    let mut true_speed: HashMap<(&str, u64), f64> = HashMap::new();
    for t in truth {
        true_speed
            .entry((t.vehicle_id.as_str(), t.segment_id))
            .or_insert(t.speed_mps);
    }
    let errors: Vec<f64> = out
        .observations
        .iter()
        .filter(|o| o.flags == 0 && o.traversed_m >= min_m)
        .filter_map(|o| {
            let truth = true_speed.get(&(o.vehicle_id.as_str(), o.segment_id))?;
            Some((o.speed_mps - truth).abs() / truth)
        })
        .collect();
    (
        errors.iter().sum::<f64>() / errors.len().max(1) as f64,
        errors.len(),
    )
}

/// Mean number of segments within `delta_m` of a segment's end over a sample of sources:
/// the rows per source an FMM upper-bounded table would hold.
fn table_rows_per_source(graph: &RoadGraph, delta_m: f64, sample: usize) -> f64 {
    let n = graph.len();
    if n == 0 {
        return 0.0;
    }
    let step = (n / sample.max(1)).max(1);
    let mut dist: HashMap<u32, f64> = HashMap::new();
    let mut total = 0usize;
    let mut sources = 0usize;
    for a in (0..n as u32).step_by(step) {
        dist.clear();
        let mut heap = BinaryHeap::new();
        for &s in graph.successors(a) {
            dist.insert(s, 0.0);
            heap.push(Reverse((0u64, s)));
        }
        while let Some(Reverse((bits, s))) = heap.pop() {
            let d = f64::from_bits(bits);
            if dist.get(&s).is_some_and(|&x| d > x) {
                continue;
            }
            let nd = d + graph.segment(s).length_m;
            if nd > delta_m {
                continue;
            }
            for &t in graph.successors(s) {
                if dist.get(&t).is_none_or(|&x| nd < x) {
                    dist.insert(t, nd);
                    heap.push(Reverse((nd.to_bits(), t)));
                }
            }
        }
        total += dist.len();
        sources += 1;
    }
    total as f64 / sources as f64
}

fn bench_graph(
    name: &str,
    graph: Arc<RoadGraph>,
    vehicles: u32,
    probes_per_run: usize,
    noise_levels_m: &[f64],
) {
    graph.build_spatial_index();
    for (noise_m, interval_s) in noise_levels_m
        .iter()
        .flat_map(|&noise_m| [(noise_m, 1.0), (noise_m, 5.0)])
    {
        let duration_s = (probes_per_run as f64 / f64::from(vehicles) * interval_s).max(interval_s);
        let config = GeneratorSourceConfig {
            vehicles,
            duration_s,
            interval_s,
            noise_m,
            seed: 42,
            ..GeneratorSourceConfig::default()
        };
        let (probes, truth) = generate(&graph, &config);
        // Warm-up, then the best of three.
        let _ = match_once(&graph, &probes);
        let mut best: Option<Run> = None;
        for _ in 0..3 {
            let run = match_once(&graph, &probes);
            if best.as_ref().is_none_or(|b| run.elapsed < b.elapsed) {
                best = Some(run);
            }
        }
        let Some(run) = best else { continue };
        let n = probes.len();
        let rate = n as f64 / run.elapsed.as_secs_f64();
        let looked_up = run.hits + run.misses;
        let hit_rate = run.hits as f64 / looked_up.max(1) as f64;
        let (per_vehicle_b, _) = bytes_per_vehicle(&graph, &probes);
        let (speed_err, speed_n) = speed_error(&run.out, &truth, 0.0);
        let (long_err, long_n) = speed_error(&run.out, &truth, 100.0);
        println!(
            "{name:<22} σ {noise_m:>2.0} m {interval_s:>4.0} s {n:>9} probes {rate:>11.0} probes/s  accuracy {:.4}  \
             speed error {:.3} over {} obs ({:.3} over {} of ≥ 100 m)  \
             unmatched {:>5}  searches/probe {:.3}  cache hit {:.3}  candidates {:.2}  \
             pending/vehicle {:.2}  {:.0} B/vehicle",
            segment_accuracy(&truth, &run.out.matched),
            speed_err,
            speed_n,
            long_err,
            long_n,
            run.out.unmatched.len(),
            run.searches as f64 / n as f64,
            hit_rate,
            run.mean_candidates,
            run.pending_per_vehicle,
            per_vehicle_b,
        );
    }
    let rows = table_rows_per_source(&graph, 3000.0, 500);
    println!(
        "{name:<22} segments {:>7}  FMM table at δ = 3 km: {rows:.0} rows/source ≈ {:.1} MB (40 B/row)",
        graph.len(),
        graph.len() as f64 * rows * 40.0 / 1e6
    );
}

/// A track's probes from `probes.csv` (header, then vehicle_id,ts_ms,lat,lon); lines that do
/// not parse are counted and skipped.
fn read_probes_csv(path: &std::path::Path) -> Result<(Vec<Probe>, usize), std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    let mut probes = Vec::new();
    let mut bad = 0;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split(',');
        let parsed = (|| {
            let vehicle_id = fields.next()?.trim();
            let ts_ms = fields.next()?.trim().parse().ok()?;
            let lat = fields.next()?.trim().parse().ok()?;
            let lon = fields.next()?.trim().parse().ok()?;
            Some(Probe::new(vehicle_id, ts_ms, lat, lon))
        })();
        match parsed {
            Some(p) => probes.push(p),
            None => bad += 1,
        }
    }
    Ok((probes, bad))
}

/// Kubicka mode (see the module docs): matching alone, per sampling step, over all tracks.
fn kubicka(dir: &str) {
    let steps: Vec<usize> = std::env::var("BENCH_KUBICKA_EVERY")
        .unwrap_or_else(|_| "1,5,15,30".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let repeat = env_usize("BENCH_REPEAT", 3).max(1);
    let defaults = MatchConfig::default();
    let config = MatchConfig {
        radius_m: std::env::var("BENCH_RADIUS_M")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.radius_m),
        k: env_usize("BENCH_K", defaults.k),
        ..defaults
    };
    let mut tracks: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("probes.csv").is_file() && p.join("map.osm.pbf").is_file())
            .collect(),
        Err(e) => {
            eprintln!("{dir}: {e}");
            return;
        }
    };
    tracks.sort();
    println!(
        "map matching alone on {} Kubicka tracks, one thread, k = {}, r = {} m, fresh matcher \
         per track, best of {repeat} per track",
        tracks.len(),
        config.k,
        config.radius_m
    );
    // (graph, all fixes) per track, loaded once.
    let mut loaded = Vec::new();
    for track in &tracks {
        let name = track.display().to_string();
        let graph = match RoadGraph::open(track.join("map.osm.pbf"), &ImportConfig::default()) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                eprintln!("{name}: {e}");
                continue;
            }
        };
        graph.build_spatial_index();
        match read_probes_csv(&track.join("probes.csv")) {
            Ok((probes, bad)) => {
                if bad > 0 {
                    eprintln!("{name}: {bad} unreadable lines skipped");
                }
                loaded.push((graph, probes));
            }
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
    for step in steps {
        let mut total_probes = 0usize;
        let mut total_time = Duration::ZERO;
        let mut matched = 0usize;
        let mut slowest = (0.0f64, 0usize);
        let (mut searches, mut settled, mut search_bytes) = (0u64, 0u64, 0usize);
        for (i, (graph, all)) in loaded.iter().enumerate() {
            let probes: Vec<Probe> = all.iter().step_by(step).cloned().collect();
            let mut best: Option<Duration> = None;
            let mut last_matched = 0;
            let mut last_route = (0, 0, 0);
            for _ in 0..repeat {
                let mut matcher = Matcher::new(graph.clone(), config.clone());
                let mut out = MatchOutput::default();
                let input = probes.clone();
                let start = Instant::now();
                matcher.push_all(input, &mut out);
                matcher.flush_all(&mut out);
                let elapsed = start.elapsed();
                if best.is_none_or(|b| elapsed < b) {
                    best = Some(elapsed);
                }
                // Same input, same output: any run's counts will do.
                last_matched = out.matched.len();
                last_route = (
                    matcher.route_stats().searches,
                    matcher.route_stats().settled,
                    matcher.route_search_bytes(),
                );
            }
            searches += last_route.0;
            settled += last_route.1;
            search_bytes = search_bytes.max(last_route.2);
            let Some(best) = best else { continue };
            matched += last_matched;
            let rate = probes.len() as f64 / best.as_secs_f64();
            if slowest.1 == 0 || rate < slowest.0 {
                slowest = (rate, i);
            }
            total_probes += probes.len();
            total_time += best;
        }
        println!(
            "every {step:>2} s: {total_probes:>6} probes ({matched} matched) in {:>8.2} ms  \
             {:>9.0} probes/s overall  (slowest track {:.0} probes/s)  searches/probe {:.2}  \
             segments settled/probe {:.0}  router search state ≤ {search_bytes} B",
            total_time.as_secs_f64() * 1e3,
            total_probes as f64 / total_time.as_secs_f64().max(1e-12),
            slowest.0,
            searches as f64 / total_probes.max(1) as f64,
            settled as f64 / total_probes.max(1) as f64,
        );
    }
}

fn main() {
    if let Ok(dir) = std::env::var("BENCH_KUBICKA") {
        kubicka(&dir);
        return;
    }
    let vehicles = env_usize("BENCH_VEHICLES", 200) as u32;
    let probes_per_run = env_usize("BENCH_PROBES", 120_000);
    let noise_levels_m: Vec<f64> = std::env::var("BENCH_NOISE_M")
        .unwrap_or_else(|_| "5".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .collect();
    let defaults = MatchConfig::default();
    println!(
        "map matching, one core, k = {}, r = {} m (the defaults), best of 3",
        defaults.k, defaults.radius_m
    );
    match synthetic_grid(20, 20, 150.0, 47.0, 9.0).build_graph(&ImportConfig::default()) {
        Ok(graph) => bench_graph(
            "grid 20x20 @150 m",
            Arc::new(graph),
            vehicles,
            probes_per_run,
            &noise_levels_m,
        ),
        Err(e) => eprintln!("grid: {e}"),
    }
    for path in std::env::args().skip(1).filter(|a| !a.starts_with("--")) {
        let name = std::path::Path::new(&path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.clone());
        let t = Instant::now();
        match RoadGraph::open(&path, &ImportConfig::default()) {
            Ok(graph) => {
                eprintln!("{name}: loaded in {:.2} s", t.elapsed().as_secs_f64());
                bench_graph(
                    &name,
                    Arc::new(graph),
                    vehicles,
                    probes_per_run,
                    &noise_levels_m,
                );
            }
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}
