//! Criterion bench of map-matching throughput on one core (the published figure):
//! probes/s of `Matcher::push` then `flush_all` over pre-generated traffic (r = 50 m,
//! σ_noise = 5 m, sampled every 1 s and 5 s), a fresh matcher (cold route cache) per
//! iteration, at k = 8 (the target's setting) and k = 16 (the default). Generation and the matcher's construction are outside the timing.
//!
//! Graphs: the paths in `BENCH_GRAPHS` (`.osm.pbf` or `.graph`, separated by `:`), e.g.
//! `BENCH_GRAPHS=../shared/data/osm/monaco.osm.pbf:../shared/data/osm/liechtenstein.osm.pbf
//! cargo bench --bench matching_criterion`; without it, the synthetic 20×20 grid, so the
//! bench runs anywhere. `BENCH_VEHICLES` (default 200) and `BENCH_PROBES` (per iteration,
//! default 20 000) size the traffic. Accuracy, memory per vehicle and the FMM table size
//! are in `benches/matching.rs`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use pipeline::connector::generator::{generate, GeneratorSourceConfig};
use pipeline::graph::osm_writer::synthetic_grid;
use pipeline::graph::{ImportConfig, RoadGraph};
use pipeline::matching::{MatchConfig, MatchOutput, Matcher};
use pipeline::record::Probe;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (name, graph) for every graph in `BENCH_GRAPHS`, or the synthetic grid.
fn graphs() -> Vec<(String, Arc<RoadGraph>)> {
    let listed = std::env::var("BENCH_GRAPHS").unwrap_or_default();
    let paths: Vec<&str> = listed.split(':').filter(|p| !p.is_empty()).collect();
    if paths.is_empty() {
        return match synthetic_grid(20, 20, 150.0, 47.0, 9.0).build_graph(&ImportConfig::default())
        {
            Ok(graph) => vec![("grid20x20".to_string(), Arc::new(graph))],
            Err(e) => {
                eprintln!("grid: {e}");
                Vec::new()
            }
        };
    }
    paths
        .into_iter()
        .filter_map(|path| {
            let name = std::path::Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.to_string());
            let name = name.split('.').next().unwrap_or(&name).to_string();
            match RoadGraph::open(path, &ImportConfig::default()) {
                Ok(graph) => Some((name, Arc::new(graph))),
                Err(e) => {
                    eprintln!("{path}: {e}");
                    None
                }
            }
        })
        .collect()
}

fn traffic(graph: &Arc<RoadGraph>, interval_s: f64) -> Vec<Probe> {
    let vehicles = env_usize("BENCH_VEHICLES", 200) as u32;
    let probes = env_usize("BENCH_PROBES", 20_000);
    let config = GeneratorSourceConfig {
        vehicles,
        duration_s: (probes as f64 / f64::from(vehicles) * interval_s).max(interval_s),
        interval_s,
        noise_m: 5.0,
        seed: 42,
        ..GeneratorSourceConfig::default()
    };
    generate(graph, &config).0
}

fn matching_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    // One iteration takes ~0.1 s: flat sampling, 10 samples, a few seconds per case.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, graph) in graphs() {
        graph.build_spatial_index();
        for (interval_s, k) in [(1.0, 8), (5.0, 8), (1.0, 16), (5.0, 16)] {
            let probes = traffic(&graph, interval_s);
            let config = MatchConfig {
                k,
                radius_m: 50.0,
                ..MatchConfig::default()
            };
            group.throughput(Throughput::Elements(probes.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(name.as_str(), format!("{interval_s}s/k{k}")),
                &probes,
                |b, probes| {
                    b.iter_batched(
                        || (Matcher::new(graph.clone(), config.clone()), probes.clone()),
                        |(mut matcher, input)| {
                            let mut out = MatchOutput::default();
                            matcher.push_all(input, &mut out);
                            matcher.flush_all(&mut out);
                            out
                        },
                        BatchSize::PerIteration,
                    );
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, matching_throughput);
criterion_main!(benches);
