//! Every metric the Grafana dashboard queries is one the binary really exports, and the
//! dashboard's shape (stable uid, templated datasource on every panel). A fast guard on
//! names; `tests/prometheus.rs` runs every query against a real Prometheus.

use std::collections::BTreeSet;

use std::sync::Arc;

use pipeline::config::{self, PipelineConfig};
use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};
use pipeline::runtime::Topology;
use pipeline::telemetry::metrics;

/// Families whose series carry labels only their connector knows (topic and partition),
/// so they appear once that connector runs: each must be defined in the connector's code.
const CONNECTOR_FAMILIES: &[(&str, &str)] = &[(
    "pipeline_kafka_consumer_lag_records",
    include_str!("../src/connector/kafka/source.rs"),
)];

/// Metric names (`pipeline_…`, `process_…`) that appear in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..].iter().collect();
        if rest.starts_with("pipeline_") || rest.starts_with("process_") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            i += name.len();
            names.push(name);
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    // Build (not run) a topology with every stage and the Parquet connectors: building
    // registers every series its components can produce, at 0.
    let dir = tempfile::tempdir().unwrap();
    let graph = Arc::new(
        synthetic_grid(4, 4, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .unwrap(),
    );
    std::fs::create_dir(dir.path().join("in")).unwrap();
    pipeline::connector::generator::write_probes_parquet(&[], &dir.path().join("in/p.parquet"))
        .unwrap();
    let toml = format!(
        r#"
edges = ["fleet -> clean -> assign -> aggregate -> speeds", "recorded -> clean"]
[sources.fleet]
type = "generator"
[sources.recorded]
type = "parquet"
paths = ["{dir}/in/*.parquet"]
[stages.clean]
type = "clean"
[stages.assign]
type = "assign"
workers = 1
[stages.aggregate]
type = "aggregate"
[sinks.speeds]
type = "parquet"
path = "{dir}/speeds.parquet"
"#,
        dir = dir.path().display()
    );
    let path = dir.path().join("p.toml");
    std::fs::write(&path, toml).unwrap();
    let config: PipelineConfig =
        config::load_unvalidated(Some(&path), &Default::default()).unwrap();
    let _topology = Topology::build(&config, Some(graph)).unwrap();
    metrics()
        .component("dashboard_check")
        .batch_duration
        .observe(0.001);
    metrics()
        .kinesis_millis_behind_latest()
        .with_label_values(&["kinesis_check", "shardId-000000000000"])
        .set(0);

    let exposition = metrics().render();
    let mut exported = BTreeSet::new();
    for line in exposition.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        exported.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/pipeline.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "pipeline-overview", "the uid is stable");
    let templating = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        templating.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "the Prometheus datasource is a template variable"
    );
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} uses the templated datasource",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert!(
                target["expr"].as_str().unwrap().contains("job=~\"$job\""),
                "panel {} filters on $job",
                panel["title"]
            );
            let expr = target["expr"].as_str().unwrap();
            let names = names_in(expr);
            assert!(!names.is_empty(), "no metric in `{expr}`");
            for name in names {
                let in_connector = CONNECTOR_FAMILIES
                    .iter()
                    .any(|(family, code)| name == *family && code.contains(&format!("\"{name}\"")));
                assert!(
                    exported.contains(&name) || in_connector,
                    "`{name}` (panel {}) is not exported",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10);
}
