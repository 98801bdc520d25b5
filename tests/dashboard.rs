//! Every metric the Grafana dashboard queries is one the binary really exports.
//! (A scrape by a real Prometheus comes with the operations work; this guards the names.)

use std::collections::BTreeSet;

use pipeline::stage::clean::{CleanConfig, CleanStage};
use pipeline::telemetry::metrics;

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
    // Touch every labelled family once so it appears in the exposition.
    let m = metrics().component("dashboard_check");
    m.received_events.inc();
    m.sent_events.inc();
    m.batch_duration.observe(0.001);
    m.channel_depth.set(0);
    m.observe_event_time(1_700_000_000_000);
    m.dropped("teleport", 1);
    m.error("corrupt_file");
    metrics()
        .files
        .with_label_values(&["dashboard_check", "read"])
        .inc();
    let _stage = CleanStage::new(CleanConfig::default(), m.clone());

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
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = names_in(expr);
            assert!(!names.is_empty(), "no metric in `{expr}`");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "`{name}` (panel {}) is not exported",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10);
}
