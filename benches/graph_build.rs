//! Graph build/load benchmark: import time, file size, load time, memory per segment and
//! candidate-search rate, for OSM files given as arguments (or `GRAPH_BENCH_FILES`,
//! colon-separated) plus a synthetic grid (`GRAPH_BENCH_GRID=rows`, default 160, 0 = off).
//!
//! `cargo bench --bench graph_build -- /path/a.osm.pbf /path/b.osm.pbf`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pipeline::graph::osm_writer::synthetic_grid;
use pipeline::graph::{ImportConfig, RoadGraph};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        last = Some(v);
    }
    (best, last.expect("runs > 0"))
}

struct Row {
    name: String,
    segments: usize,
    build: Duration,
    file_bytes: u64,
    load: Duration,
    rtree_build: Duration,
    rtree_kib: u64,
    rtree_entries: usize,
    queries_per_s: f64,
}

fn measure(name: &str, build: impl FnMut() -> RoadGraph, dir: &Path) -> Row {
    let (build_time, graph) = best_of(3, build);
    let path = dir.join(format!("{name}.graph"));
    graph.write(&path).expect("write graph");
    let file_bytes = std::fs::metadata(&path).expect("stat").len();
    drop(graph);
    let (load, graph) = best_of(20, || RoadGraph::load(&path).expect("load"));
    let before = rss_kib();
    let t = Instant::now();
    graph.build_spatial_index();
    let rtree_build = t.elapsed();
    let rtree_kib = rss_kib().saturating_sub(before);
    let rtree_entries = graph.spatial().len();

    // Queries near geometry points, displaced by up to ±20 m (deterministic LCG).
    let points = graph.all_geometry();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let n_queries = 200_000;
    let mut found = 0usize;
    let mut out = Vec::new();
    let spatial = graph.spatial();
    let t = Instant::now();
    for _ in 0..n_queries {
        let [lat, lon] = points[(next() * points.len() as f64) as usize % points.len()];
        let (dlat, dlon) = ((next() - 0.5) * 0.00036, (next() - 0.5) * 0.0005);
        spatial.nearest_within(&graph, lat + dlat, lon + dlon, 50.0, 8, &mut out);
        found += out.len();
    }
    let queries_per_s = n_queries as f64 / t.elapsed().as_secs_f64();
    assert!(found > 0);
    Row {
        name: name.to_string(),
        segments: graph.len(),
        build: build_time,
        file_bytes,
        load,
        rtree_build,
        rtree_kib,
        rtree_entries,
        queries_per_s,
    }
}

fn main() {
    let mut files: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    if let Ok(list) = std::env::var("GRAPH_BENCH_FILES") {
        files.extend(list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    let grid_rows: usize = std::env::var("GRAPH_BENCH_GRID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ImportConfig::default();
    let mut rows = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".osm.pbf").to_string())
            .unwrap_or_default();
        rows.push(measure(
            &name,
            || RoadGraph::from_osm(file, &cfg).expect("import"),
            dir.path(),
        ));
    }
    if grid_rows > 0 {
        let osm = synthetic_grid(grid_rows, grid_rows, 100.0, 47.0, 9.0);
        rows.push(measure(
            &format!("grid{grid_rows}x{grid_rows}"),
            || osm.build_graph(&cfg).expect("grid"),
            dir.path(),
        ));
    }

    println!(
        "| input | segments | build (import) ms | file bytes | bytes/segment | load ms | load ms per 100k seg | R-tree build ms | R-tree entries | R-tree KiB (RSS delta) | queries/s (k=8, r=50 m) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {:.1} | {} | {:.0} | {:.3} | {:.2} | {:.1} | {} | {} | {:.0} |",
            r.name,
            r.segments,
            ms(r.build),
            r.file_bytes,
            r.file_bytes as f64 / r.segments as f64,
            ms(r.load),
            ms(r.load) * 100_000.0 / r.segments as f64,
            ms(r.rtree_build),
            r.rtree_entries,
            r.rtree_kib,
            r.queries_per_s,
        );
    }
}
