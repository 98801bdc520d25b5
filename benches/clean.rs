//! Clean-stage throughput in probes/s on one core, next to a reference measured in the same
//! run: sorting the same probes by (ts_ms, vehicle_id), the least work any re-ordering
//! stage must do. Input: a seeded synthetic fleet with ~1 % duplicates and 0.5 % disorder.
//!
//! Run: `cargo bench --bench clean` (env `BENCH_PROBES`, default 2 000 000).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use pipeline::record::Probe;
use pipeline::stage::clean::{CleanConfig, Cleaner};

fn fleet(n: usize, vehicles: usize) -> Vec<Probe> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::with_capacity(n + n / 50);
    let mut position: Vec<(f64, f64)> = (0..vehicles)
        .map(|v| {
            (
                60.1 + (v % 100) as f64 * 1e-3,
                24.8 + (v / 100) as f64 * 1e-3,
            )
        })
        .collect();
    for i in 0..n {
        let v = i % vehicles;
        let tick = (i / vehicles) as i64;
        let (lat, lon) = &mut position[v];
        *lat += rng.random_range(-1e-4..1e-4);
        *lon += rng.random_range(-1e-4..1e-4);
        let p = Probe::new(
            format!("veh-{v:06}"),
            1_700_000_000_000 + tick * 1000 + v as i64 % 1000,
            *lat,
            *lon,
        );
        if rng.random_bool(0.01) {
            out.push(p.clone());
        }
        out.push(p);
    }
    // Light disorder: swap neighbours.
    for i in 1..out.len() {
        if rng.random_bool(0.005) {
            out.swap(i - 1, i);
        }
    }
    out
}

fn best_of(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed());
    }
    (best, n)
}

fn main() {
    let n: usize = std::env::var("BENCH_PROBES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let probes = fleet(n, 20_000);
    let batch_size = 8192;

    let (clean_time, kept) = best_of(3, || {
        let mut cleaner = Cleaner::new(CleanConfig::default());
        let mut out = Vec::with_capacity(batch_size * 2);
        let mut kept = 0;
        for chunk in probes.chunks(batch_size) {
            cleaner.push(chunk.to_vec(), &mut out);
            kept += out.len();
            out.clear();
        }
        cleaner.flush(&mut out);
        kept + out.len()
    });
    let (sort_time, _) = best_of(3, || {
        let mut copy: Vec<Probe> = probes.chunks(batch_size).flat_map(|c| c.to_vec()).collect();
        copy.sort_by(|a, b| (a.ts_ms, &a.vehicle_id).cmp(&(b.ts_ms, &b.vehicle_id)));
        copy.len()
    });
    let rate = |d: Duration| probes.len() as f64 / d.as_secs_f64();
    println!(
        "clean stage, {} probes, 20 000 vehicles, batches of {batch_size}",
        probes.len()
    );
    println!(
        "  clean:     {:>10.0} probes/s  ({kept} kept)",
        rate(clean_time)
    );
    println!(
        "  reference: {:>10.0} probes/s  (copy + sort by time)",
        rate(sort_time)
    );
    println!(
        "  ratio clean/reference: {:.2}",
        rate(clean_time) / rate(sort_time)
    );
}
