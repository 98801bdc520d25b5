//! Configuration: layering, unknown keys, wrong types, topology checks, and that every
//! problem is reported at once with where its value came from. Pure: no network.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pipeline::config::{load, ConfigError, Problem};

const VALID: &str = r#"
edges = ["fleet -> clean -> out"]

[graph]
path = "city.graph"

[sources.fleet]
type = "generator"
vehicles = 10

[stages.clean]
type = "clean"

[sinks.out]
type = "ndjson"
path = "out.ndjson"
"#;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn problems(text: &str, vars: &[(&str, &str)]) -> (PathBuf, Vec<Problem>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, text);
    match load(Some(&path), &env(vars)) {
        Err(ConfigError::Invalid(list)) => (path, list),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn valid_config_loads_with_defaults_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(Some(&write(&dir, VALID)), &BTreeMap::new()).unwrap();
    assert_eq!(c.runtime.channel_capacity_batches, 8);
    // The HTTP endpoints bind to loopback unless told otherwise.
    assert_eq!(c.telemetry.listen, "127.0.0.1:9898");
    assert!(!c.telemetry.tap, "record samples are off by default");
    assert_eq!(
        c.edges,
        [
            ("fleet".to_string(), "clean".to_string()),
            ("clean".to_string(), "out".to_string())
        ]
    );
}

#[test]
fn environment_overrides_file_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(
        Some(&write(&dir, VALID)),
        &env(&[
            ("PIPELINE__RUNTIME__CHANNEL_CAPACITY_BATCHES", "3"),
            ("PIPELINE__TELEMETRY__LISTEN", "127.0.0.1:0"),
            ("PIPELINE__GRAPH__PATH", "other.graph"),
        ]),
    )
    .unwrap();
    assert_eq!(c.runtime.channel_capacity_batches, 3);
    assert_eq!(c.telemetry.listen, "127.0.0.1:0");
    assert_eq!(c.graph.path.as_deref(), Some("other.graph"));
}

#[test]
fn unknown_key_in_file_names_the_key_and_the_file() {
    let (path, list) = problems(
        &VALID.replace("vehicles = 10", "vehicles = 10\nvehicels = 3"),
        &[],
    );
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].key, "sources.fleet.vehicels");
    assert!(
        list[0].message.contains("unknown field"),
        "{}",
        list[0].message
    );
    assert_eq!(
        list[0].origin.as_deref(),
        Some(format!("file {}", path.display()).as_str())
    );
}

#[test]
fn unknown_key_from_environment_names_the_variable() {
    let (_, list) = problems(VALID, &[("PIPELINE__RUNTIME__CHANNEL_CAPACITY", "4")]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].key, "runtime.channel_capacity");
    assert_eq!(
        list[0].origin.as_deref(),
        Some("environment variable PIPELINE__RUNTIME__CHANNEL_CAPACITY")
    );
}

#[test]
fn wrong_type_names_the_exact_key() {
    let (_, list) = problems(&VALID.replace("vehicles = 10", "vehicles = \"ten\""), &[]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].key, "sources.fleet.vehicles");
    assert!(
        list[0].message.contains("invalid type"),
        "{}",
        list[0].message
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = VALID
        .replace("vehicles = 10", "vehicles = 0")
        .replace("type = \"clean\"", "type = \"clean\"\nmax_speed_mps = -1.0")
        .replace("path = \"out.ndjson\"", "path = \"out.ndjson\"\nbogus = 1")
        .replace(
            "[sinks.out]",
            "[sinks.spare]\ntype = \"teleporter\"\n\n[sinks.out]",
        );
    let (_, list) = problems(&text, &[]);
    let keys: Vec<&str> = list.iter().map(|p| p.key.as_str()).collect();
    // Decode errors (unknown field, unknown type) and the semantic ones of the components
    // that decoded, in one run.
    assert_eq!(
        keys,
        [
            "sinks.out.bogus",
            "sinks.spare.type",
            "sources.fleet.vehicles",
            "stages.clean.max_speed_mps"
        ]
    );
    let (_, list) = problems(
        &VALID
            .replace("vehicles = 10", "vehicles = 0")
            .replace("type = \"clean\"", "type = \"clean\"\nmax_speed_mps = -1.0"),
        &[("PIPELINE__RUNTIME__CHANNEL_CAPACITY_BATCHES", "0")],
    );
    let keys: Vec<&str> = list.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "runtime.channel_capacity_batches",
            "sources.fleet.vehicles",
            "stages.clean.max_speed_mps"
        ]
    );
    assert_eq!(
        list[0].origin.as_deref(),
        Some("environment variable PIPELINE__RUNTIME__CHANNEL_CAPACITY_BATCHES")
    );
}

/// Regression: serde stops at a table's first error, so a file with several mistakes in one
/// table took one `validate` round per mistake.
#[test]
fn every_unknown_key_and_bad_value_of_one_table_is_reported() {
    let text = VALID
        .replace(
            "vehicles = 10",
            "vehicles = \"ten\"\nvehicules = 10\nseed = -1\nspeed = 3",
        )
        .replace("edges =", "colour = \"blue\"\nedges =");
    let (_, list) = problems(&text, &[]);
    let keys: Vec<&str> = list.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "colour",
            "sources.fleet.seed",
            "sources.fleet.speed",
            "sources.fleet.vehicles",
            "sources.fleet.vehicules",
        ],
        "{list:?}"
    );
}

/// Regression: a badly typed shared setting made the whole file undecodable, hiding every
/// problem of the components.
#[test]
fn a_badly_typed_shared_setting_does_not_hide_the_components_problems() {
    let (_, list) = problems(
        &VALID.replace("type = \"clean\"", "type = \"clean\"\nmax_speed_mps = -1.0"),
        &[("PIPELINE__RUNTIME__SHUTDOWN_TIMEOUT_MS", "soon")],
    );
    let keys: Vec<&str> = list.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["runtime.shutdown_timeout_ms", "stages.clean.max_speed_mps"]
    );
}

/// Regression: a problem in a chain ("a -> b -> c") was keyed by its hop's index after the
/// chains were expanded (`edges[2]` in a file with two entries).
#[test]
fn a_problem_in_a_chain_names_the_entry_written_and_the_hop() {
    let text = VALID
        .replace(
            "edges = [\"fleet -> clean -> out\"]",
            "edges = [\"fleet -> clean\", \"clean -> spare -> out\"]",
        )
        .replace(
            "[sinks.out]",
            "[sinks.spare]\ntype = \"ndjson\"\npath = \"spare.ndjson\"\n\n[sinks.out]",
        );
    let (_, list) = problems(&text, &[]);
    let rendered: Vec<String> = list.iter().map(|p| p.to_string()).collect();
    assert_eq!(list.len(), 1, "{rendered:?}");
    assert!(
        rendered[0]
            .starts_with("edges[1]: hop 2 of 2 of the chain (`spare -> out`): `spare` is a sink"),
        "{rendered:?}"
    );
}

#[test]
fn topology_mistakes_are_reported() {
    let text = VALID.replace(
        "edges = [\"fleet -> clean -> out\"]",
        "edges = [\"fleet -> clean\", \"clean -> nowhere\", \"out -> clean\"]",
    );
    let (_, list) = problems(&text, &[]);
    let rendered: Vec<String> = list.iter().map(|p| p.to_string()).collect();
    let all = rendered.join("\n");
    assert!(all.contains("`nowhere` is not a stage or sink"), "{all}");
    assert!(all.contains("`out` is a sink"), "{all}");
}

#[test]
fn malformed_edge_names_its_index() {
    let text = VALID.replace(
        "\"fleet -> clean -> out\"",
        "\"fleet -> clean -> out\", \"bad edge\"",
    );
    let (_, list) = problems(&text, &[]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].key, "edges[1]");
}

#[test]
fn generator_without_graph_path_is_an_error() {
    let (_, list) = problems(&VALID.replace("path = \"city.graph\"", ""), &[]);
    assert_eq!(list[0].key, "graph.path", "{list:?}");
}

#[test]
fn cycles_between_stages_are_rejected() {
    let text = VALID
        .replace(
            "edges = [\"fleet -> clean -> out\"]",
            "edges = [\"fleet -> clean -> again -> clean\", \"again -> out\"]",
        )
        .replace(
            "[sinks.out]",
            "[stages.again]\ntype = \"clean\"\n\n[sinks.out]",
        );
    let (_, list) = problems(&text, &[]);
    assert!(list.iter().any(|p| p.message.contains("cycle")), "{list:?}");
}

#[test]
fn missing_file_is_an_error_naming_the_file() {
    let missing = PathBuf::from("/nonexistent/pipeline.toml");
    match load(Some(&missing), &BTreeMap::new()) {
        Err(ConfigError::File { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn malformed_toml_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "edges = [\n");
    let err = load(Some(&path), &BTreeMap::new()).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn live_map_needs_the_http_server_and_unknown_telemetry_keys_are_still_rejected() {
    let (_, list) = problems(
        VALID,
        &[
            ("PIPELINE__TELEMETRY__LIVE_MAP", "true"),
            ("PIPELINE__TELEMETRY__LISTEN", ""),
        ],
    );
    let keys: Vec<&str> = list.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["telemetry.live_map"], "{list:?}");
    let (_, list) = problems(
        &format!("{VALID}\n[telemetry]\nlive_map = true\nlive_mop = true\n"),
        &[],
    );
    let keys: Vec<&str> = list.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["telemetry.live_mop"], "{list:?}");
    let dir = tempfile::tempdir().unwrap();
    let on = load(
        Some(&write(&dir, VALID)),
        &env(&[("PIPELINE__TELEMETRY__LIVE_MAP", "true")]),
    )
    .unwrap();
    assert!(on.telemetry.live_map);
}
