//! Map matching against the generator's ground truth on the synthetic grid: matched segment
//! accuracy at 1 s and 5 s sampling, and observation speeds against the true speeds.

use std::collections::HashMap;
use std::sync::Arc;

use pipeline::connector::congestion::CongestionConfig;
use pipeline::connector::generator::{
    generate, segment_accuracy, GeneratorSourceConfig, TruthPoint,
};
use pipeline::graph::osm_writer::synthetic_grid;
use pipeline::graph::{ImportConfig, RoadGraph};
use pipeline::matching::{MatchConfig, MatchOutput, Matcher};
use pipeline::record::{observation_flags, Probe};

fn grid() -> Arc<RoadGraph> {
    let graph = synthetic_grid(8, 8, 150.0, 47.0, 9.0)
        .build_graph(&ImportConfig::default())
        .unwrap_or_else(|e| panic!("grid graph: {e}"));
    Arc::new(graph)
}

fn traffic(graph: &Arc<RoadGraph>, interval_s: f64, seed: u64) -> (Vec<Probe>, Vec<TruthPoint>) {
    let config = GeneratorSourceConfig {
        vehicles: 40,
        duration_s: 300.0,
        interval_s,
        noise_m: 5.0,
        seed,
        // One speed per traversal, which `speed_error` compares observations with; queues
        // and bottlenecks change a vehicle's speed within a segment.
        congestion: CongestionConfig::off(),
        ..GeneratorSourceConfig::default()
    };
    generate(graph, &config)
}

fn run(graph: &Arc<RoadGraph>, probes: &[Probe]) -> MatchOutput {
    let mut matcher = Matcher::new(graph.clone(), MatchConfig::default());
    let mut out = MatchOutput::default();
    matcher.push_all(probes.iter().cloned(), &mut out);
    matcher.flush_all(&mut out);
    out
}

/// Mean absolute relative error of full-traversal observation speeds against the speed the
/// generator drove on that segment.
fn speed_error(out: &MatchOutput, truth: &[TruthPoint]) -> (f64, usize) {
    let mut true_speed: HashMap<(&str, u64), f64> = HashMap::new();
    for t in truth {
        true_speed
            .entry((t.vehicle_id.as_str(), t.segment_id))
            .or_insert(t.speed_mps);
    }
    // Full traversals only: not the parts of one cut at a time boundary either.
    let partial = observation_flags::PARTIAL_START
        | observation_flags::PARTIAL_END
        | observation_flags::CONTINUES
        | observation_flags::CONTINUED;
    let errors: Vec<f64> = out
        .observations
        .iter()
        .filter(|o| o.flags & partial == 0)
        .filter_map(|o| {
            let truth = true_speed.get(&(o.vehicle_id.as_str(), o.segment_id))?;
            Some((o.speed_mps - truth).abs() / truth)
        })
        .collect();
    let n = errors.len();
    (errors.iter().sum::<f64>() / n.max(1) as f64, n)
}

#[test]
fn matching_accuracy_on_generated_traffic_at_1s() {
    let graph = grid();
    let (probes, truth) = traffic(&graph, 1.0, 7);
    let out = run(&graph, &probes);
    let acc = segment_accuracy(&truth, &out.matched);
    let (err, n) = speed_error(&out, &truth);
    eprintln!(
        "1 s: {} probes, accuracy {:.4}, {} full observations, mean speed error {:.4}",
        probes.len(),
        acc,
        n,
        err
    );
    assert_eq!(out.matched.len() + out.unmatched.len(), probes.len());
    assert!(acc >= 0.95, "accuracy {acc}");
    assert!(n > 100 && err < 0.07, "speed error {err} over {n}");
}

#[test]
fn matching_accuracy_on_generated_traffic_at_5s() {
    let graph = grid();
    let (probes, truth) = traffic(&graph, 5.0, 11);
    let out = run(&graph, &probes);
    let acc = segment_accuracy(&truth, &out.matched);
    let (err, n) = speed_error(&out, &truth);
    eprintln!(
        "5 s: {} probes, accuracy {:.4}, {} full observations, mean speed error {:.4}",
        probes.len(),
        acc,
        n,
        err
    );
    assert_eq!(out.matched.len() + out.unmatched.len(), probes.len());
    assert!(acc >= 0.93, "accuracy {acc}");
    assert!(n > 50 && err < 0.08, "speed error {err} over {n}");
}

/// Queues and bottlenecks (the generator's default) put slow vehicles' probes close
/// together, which must not cost segment accuracy.
#[test]
fn matching_accuracy_on_congested_traffic_at_5s() {
    let graph = grid();
    let config = GeneratorSourceConfig {
        vehicles: 40,
        duration_s: 300.0,
        interval_s: 5.0,
        noise_m: 5.0,
        seed: 11,
        ..GeneratorSourceConfig::default()
    };
    assert!(config.congestion.enabled);
    let (probes, truth) = generate(&graph, &config);
    let out = run(&graph, &probes);
    let acc = segment_accuracy(&truth, &out.matched);
    eprintln!("5 s, congested: {} probes, accuracy {acc:.4}", probes.len());
    assert!(acc >= 0.93, "accuracy {acc}");
}

#[test]
fn matching_output_is_deterministic() {
    let graph = grid();
    let (probes, _) = traffic(&graph, 2.0, 3);
    let a = run(&graph, &probes);
    let b = run(&graph, &probes);
    assert_eq!(a, b);
    assert!(!a.observations.is_empty());
}

#[test]
fn matching_output_per_vehicle_does_not_depend_on_sharding() {
    let graph = grid();
    let (probes, _) = traffic(&graph, 1.0, 5);
    let whole = run(&graph, &probes);
    // Three matchers, vehicles split by a hash of their id, as the stage will shard them.
    let shard_of = |id: &str| {
        id.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b))
            % 3
    };
    let mut merged = MatchOutput::default();
    for shard in 0..3 {
        let part: Vec<Probe> = probes
            .iter()
            .filter(|p| shard_of(&p.vehicle_id) == shard)
            .cloned()
            .collect();
        let out = run(&graph, &part);
        merged.matched.extend(out.matched);
        merged.unmatched.extend(out.unmatched);
        merged.observations.extend(out.observations);
    }
    let sort = |out: &mut MatchOutput| {
        out.matched.sort_by(|a, b| {
            (&a.probe.vehicle_id, a.probe.ts_ms).cmp(&(&b.probe.vehicle_id, b.probe.ts_ms))
        });
        out.observations.sort_by_key(|o| o.observation_id);
    };
    let mut whole = whole;
    sort(&mut whole);
    sort(&mut merged);
    assert_eq!(whole, merged);
}
