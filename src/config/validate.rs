//! Pure validation of a decoded configuration: no files, no network. Reports every problem.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{split_endpoint, PipelineConfig, SinkConfig, SourceConfig, StageConfig};
use super::problems::Problems;

/// Components whose tables did not decode, name → section: their own problems are already
/// reported, so edges that name them are not checked against them.
pub(crate) type Undecoded = BTreeMap<String, &'static str>;

pub fn validate(config: &PipelineConfig, problems: &mut Problems) {
    validate_partial(config, &Undecoded::new(), problems);
}

/// [`validate`] of a configuration some of whose components did not decode (`undecoded`).
pub(crate) fn validate_partial(
    config: &PipelineConfig,
    undecoded: &Undecoded,
    problems: &mut Problems,
) {
    problems.check_count(
        config.runtime.channel_capacity_batches,
        1..=super::limits::MAX_CHANNEL_CAPACITY_BATCHES,
        "runtime.channel_capacity_batches",
    );
    problems.check(
        config.runtime.shutdown_timeout_ms >= 1,
        "runtime.shutdown_timeout_ms",
        "must be at least 1",
    );
    let listen = &config.telemetry.listen;
    problems.check(
        listen.is_empty() || listen.parse::<std::net::SocketAddr>().is_ok(),
        "telemetry.listen",
        format!("`{listen}` is not an address like 127.0.0.1:9898 (or \"\" to disable)"),
    );
    problems.check(
        !config.telemetry.tap || !listen.is_empty(),
        "telemetry.tap",
        "needs the HTTP server: set telemetry.listen",
    );
    problems.check(
        !config.telemetry.live_map || !listen.is_empty(),
        "telemetry.live_map",
        "needs the HTTP server: set telemetry.listen",
    );
    problems.check(
        !config.telemetry.live_map || config.graph.path.is_some(),
        "telemetry.live_map",
        "needs the road graph the map draws: set graph.path",
    );
    if config.needs_graph() && config.graph.path.is_none() {
        problems.push(
            "graph.path",
            "missing: a generator source or a map-matching stage needs a road graph",
        );
    }

    for (name, source) in &config.sources {
        let prefix = format!("sources.{name}");
        match source {
            SourceConfig::Parquet(c) => c.validate(&prefix, problems),
            SourceConfig::Generator(c) => c.validate(&prefix, problems),
            SourceConfig::Kafka(c) => c.validate(&prefix, problems),
            SourceConfig::Kinesis(c) => c.validate(&prefix, problems),
        }
    }
    for (name, stage) in &config.stages {
        let prefix = format!("stages.{name}");
        match stage {
            StageConfig::Clean(c) => c.validate(&prefix, problems),
            StageConfig::Assign(c) => c.validate(&prefix, problems),
            StageConfig::Aggregate(c) => c.validate(&prefix, problems),
        }
    }
    for (name, sink) in &config.sinks {
        let prefix = format!("sinks.{name}");
        match sink {
            SinkConfig::Parquet(c) => c.validate(&prefix, problems),
            SinkConfig::Ndjson(c) => c.validate(&prefix, problems),
            SinkConfig::Kafka(c) => c.validate(&prefix, problems),
            SinkConfig::Kinesis(c) => c.validate(&prefix, problems),
        }
    }
    validate_topology(config, undecoded, problems);
}

/// The key of edge `i`: the `edges` entry it was written in, and, for a chain of several
/// hops, which hop it is (as a prefix for the message).
fn edge_key(config: &PipelineConfig, i: usize) -> (String, String) {
    let Some(&entry) = config.edge_entries.get(i) else {
        return (format!("edges[{i}]"), String::new());
    };
    let hops = config.edge_entries.iter().filter(|e| **e == entry).count();
    let hop = if hops > 1 {
        let first = config.edge_entries.iter().position(|e| *e == entry);
        let (from, to) = &config.edges[i];
        format!(
            "hop {} of {hops} of the chain (`{from} -> {to}`): ",
            i + 1 - first.unwrap_or(i)
        )
    } else {
        String::new()
    };
    (format!("edges[{entry}]"), hop)
}

fn validate_topology(config: &PipelineConfig, undecoded: &Undecoded, problems: &mut Problems) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let sections = [
        ("sources", config.sources.keys().collect::<Vec<_>>()),
        ("stages", config.stages.keys().collect()),
        ("sinks", config.sinks.keys().collect()),
    ];
    for (section, names) in &sections {
        for name in names {
            if let Some(first) = seen.insert(name.as_str(), section) {
                problems.push(
                    format!("{section}.{name}"),
                    format!("the name is also used in [{first}]; component names must be unique"),
                );
            }
        }
    }
    let any_undecoded = |section: &str| undecoded.values().any(|s| *s == section);
    if config.sources.is_empty() && !any_undecoded("sources") {
        problems.push("sources", "no source: a pipeline needs at least one");
    }
    if config.sinks.is_empty() && !any_undecoded("sinks") {
        problems.push("sinks", "no sink: a pipeline needs at least one");
    }

    let mut unique = BTreeSet::new();
    for (i, (from, to)) in config.edges.iter().enumerate() {
        let (key, hop) = edge_key(config, i);
        let mut problem = |message: String| problems.push(&key, format!("{hop}{message}"));
        if !unique.insert((from, to)) {
            problem(format!("edge {from} -> {to} is listed twice"));
        }
        let (from_name, from_port) = split_endpoint(from);
        // A component that did not decode has its problems reported already, and what it
        // emits or takes is unknown: edges naming it are not checked against it.
        if !undecoded.contains_key(from_name) {
            if config.sinks.contains_key(from_name) {
                problem(format!("`{from}` is a sink: sinks have no outputs"));
            } else if !config.sources.contains_key(from_name)
                && !config.stages.contains_key(from_name)
            {
                problem(format!("`{from}` is not a source or stage"));
            } else if config.output_kind(from).is_none() {
                problem(format!(
                    "`{from_name}` has no output port `{}`",
                    from_port.unwrap_or_default()
                ));
            }
        }
        if !undecoded.contains_key(to.as_str()) {
            if config.sources.contains_key(to) {
                problem(format!("`{to}` is a source: sources have no inputs"));
            } else if !config.stages.contains_key(to) && !config.sinks.contains_key(to) {
                problem(format!("`{to}` is not a stage or sink"));
            }
        }
        if let (Some(kind), Some(stage)) = (config.output_kind(from), config.stages.get(to)) {
            if kind != stage.input_kind() {
                problem(format!(
                    "`{from}` emits {kind} records but `{to}` takes {}",
                    stage.input_kind()
                ));
            }
        }
    }

    for name in config.stages.keys().chain(config.sinks.keys()) {
        let kinds: BTreeSet<_> = config
            .inputs_of(name)
            .filter_map(|from| config.output_kind(from))
            .collect();
        let section = if config.stages.contains_key(name) {
            "stages"
        } else {
            "sinks"
        };
        if config.inputs_of(name).next().is_none() {
            problems.push(
                format!("{section}.{name}"),
                format!("has no input: add an edge \"<upstream> -> {name}\""),
            );
        } else if kinds.len() > 1 {
            let kinds: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
            problems.push(
                format!("{section}.{name}"),
                format!(
                    "its inputs emit different record kinds ({}); one kind per component",
                    kinds.join(", ")
                ),
            );
        }
    }
    for name in config.sources.keys().chain(config.stages.keys()) {
        if !config.has_outputs(name) {
            let section = if config.sources.contains_key(name) {
                "sources"
            } else {
                "stages"
            };
            problems.push(
                format!("{section}.{name}"),
                format!("feeds nothing: add an edge \"{name} -> <downstream>\""),
            );
        }
    }
    if let Some(cycle_at) = find_cycle(config) {
        problems.push(
            format!("stages.{cycle_at}"),
            "is part of a cycle; edges must form a DAG",
        );
    }
}

/// Returns a stage on a cycle, if any (Kahn's algorithm over stages only).
fn find_cycle(config: &PipelineConfig) -> Option<String> {
    let mut indegree: BTreeMap<&str, usize> =
        config.stages.keys().map(|k| (k.as_str(), 0)).collect();
    let stage_edges: Vec<(&str, &str)> = config
        .edges
        .iter()
        .map(|(f, t)| (split_endpoint(f).0, t.as_str()))
        .filter(|(f, t)| config.stages.contains_key(*f) && config.stages.contains_key(*t))
        .collect();
    for (_, to) in &stage_edges {
        if let Some(d) = indegree.get_mut(to) {
            *d += 1;
        }
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, &d)| d == 0)
        .map(|(k, _)| *k)
        .collect();
    while let Some(n) = ready.pop() {
        indegree.remove(n);
        for (from, to) in &stage_edges {
            if *from == n {
                if let Some(d) = indegree.get_mut(to) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(to);
                    }
                }
            }
        }
    }
    indegree.keys().next().map(|s| s.to_string())
}
