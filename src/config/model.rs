//! The typed configuration: what a valid config file means once loaded.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::aggregate::AggregateConfig;
use crate::connector::generator::GeneratorSourceConfig;
use crate::connector::kafka::{KafkaSinkConfig, KafkaSourceConfig};
use crate::connector::kinesis::{KinesisSinkConfig, KinesisSourceConfig};
use crate::connector::ndjson::NdjsonSinkConfig;
use crate::connector::parquet::{ParquetSinkConfig, ParquetSourceConfig};
use crate::graph::ImportConfig;
use crate::record::RecordKind;
use crate::stage::assign::AssignConfig;
use crate::stage::clean::CleanConfig;

/// The whole pipeline: shared sections plus named components and the edges between them.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub runtime: RuntimeConfig,
    pub telemetry: TelemetryConfig,
    pub graph: GraphConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub stages: BTreeMap<String, StageConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Directed edges `(from, to)`, parsed from `edges = ["a -> b -> c", …]`. `from` may
    /// name an output port: `assign.matched_points`.
    pub edges: Vec<(String, String)>,
    /// For each of `edges`, the index of the `edges = [...]` entry it was written in (a chain
    /// "a -> b -> c" gives two edges of one entry), so problems name the entry the user
    /// wrote. Empty for a topology built in code.
    pub edge_entries: Vec<usize>,
}

/// The sections that are not components; deserialised straight from the merged layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sections {
    pub runtime: RuntimeConfig,
    pub telemetry: TelemetryConfig,
    pub graph: GraphConfig,
    pub edges: Vec<String>,
    // Components are decoded one by one (see `load`), so that every bad component is
    // reported, each with its exact key.
    #[serde(default)]
    pub sources: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub stages: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub sinks: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub channel_capacity_batches: usize,
    pub shutdown_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `host:port` for the HTTP endpoints; empty disables them.
    pub listen: String,
    /// Serve `/tap` (what `pipeline tap` reads): samples of the records on the pipeline's
    /// edges. Off by default; costs one relaxed atomic load per batch while no one taps.
    #[serde(default)]
    pub tap: bool,
    /// Serve the live view: `/speeds` (the latest window per segment as GeoJSON), `/map` (a
    /// page drawing it) and `/segments` (the graph as GeoJSON). Off by default; while off
    /// it costs nothing, while on one map update per batch of speeds sent.
    #[serde(default)]
    pub live_map: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// A prebuilt `.graph` file, or an `.osm.pbf`/`.osm` extract imported at start.
    #[serde(default)]
    pub path: Option<String>,
    /// Import rules, used when `path` is an OSM extract.
    #[serde(default)]
    pub import: ImportConfig,
}

/// Where records come from. A closed set: a new connector adds one variant.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Parquet(ParquetSourceConfig),
    Generator(GeneratorSourceConfig),
    Kafka(KafkaSourceConfig),
    Kinesis(KinesisSourceConfig),
}

/// Synchronous transforms between sources and sinks.
#[derive(Debug, Clone)]
pub enum StageConfig {
    Clean(CleanConfig),
    Assign(AssignConfig),
    Aggregate(AggregateConfig),
}

/// Where records go.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Parquet(ParquetSinkConfig),
    Ndjson(NdjsonSinkConfig),
    Kafka(KafkaSinkConfig),
    Kinesis(KinesisSinkConfig),
}

/// One output of a component: its port name (`None` for the default output) and the
/// record kind it carries. A component's ports carry distinct kinds, so the runtime routes a
/// batch to a port by its kind.
pub type Port = (Option<&'static str>, RecordKind);

/// Splits an edge endpoint `name.port` into (name, port).
pub fn split_endpoint(endpoint: &str) -> (&str, Option<&str>) {
    match endpoint.split_once('.') {
        Some((name, port)) => (name, Some(port)),
        None => (endpoint, None),
    }
}

impl SourceConfig {
    pub const TYPES: &'static [&'static str] = &["parquet", "generator", "kafka", "kinesis"];

    pub fn ports(&self) -> Vec<Port> {
        match self {
            SourceConfig::Parquet(_) | SourceConfig::Generator(_) => {
                vec![(None, RecordKind::Probe)]
            }
            SourceConfig::Kafka(c) => vec![(None, c.record)],
            SourceConfig::Kinesis(c) => vec![(None, c.record)],
        }
    }

    pub fn needs_graph(&self) -> bool {
        matches!(self, SourceConfig::Generator(_))
    }
}

impl StageConfig {
    pub const TYPES: &'static [&'static str] = &["clean", "assign", "aggregate"];

    pub fn input_kind(&self) -> RecordKind {
        match self {
            StageConfig::Clean(_) | StageConfig::Assign(_) => RecordKind::Probe,
            StageConfig::Aggregate(_) => RecordKind::SegmentObservation,
        }
    }

    pub fn ports(&self) -> Vec<Port> {
        match self {
            StageConfig::Clean(_) => vec![(None, RecordKind::Probe)],
            StageConfig::Assign(_) => vec![
                (None, RecordKind::SegmentObservation),
                (Some("matched_points"), RecordKind::MatchedPoint),
            ],
            StageConfig::Aggregate(_) => vec![
                (None, RecordKind::SegmentSpeed),
                (Some("late"), RecordKind::SegmentObservation),
            ],
        }
    }

    pub fn needs_graph(&self) -> bool {
        match self {
            StageConfig::Clean(_) => false,
            StageConfig::Assign(_) | StageConfig::Aggregate(_) => true,
        }
    }
}

impl SinkConfig {
    pub const TYPES: &'static [&'static str] = &["parquet", "ndjson", "kafka", "kinesis"];
}

impl PipelineConfig {
    /// The record kind an edge endpoint (`name` or `name.port`) emits, if it exists.
    pub fn output_kind(&self, endpoint: &str) -> Option<RecordKind> {
        let (name, port) = split_endpoint(endpoint);
        let ports = match (self.sources.get(name), self.stages.get(name)) {
            (Some(source), _) => source.ports(),
            (None, Some(stage)) => stage.ports(),
            (None, None) => return None,
        };
        ports
            .into_iter()
            .find(|(p, _)| *p == port)
            .map(|(_, kind)| kind)
    }

    /// The names of the components feeding `name`, in config order.
    pub fn inputs_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.edges
            .iter()
            .filter(move |(_, to)| to == name)
            .map(|(from, _)| from.as_str())
    }

    /// Whether any edge leaves component `name` (from any of its ports).
    pub fn has_outputs(&self, name: &str) -> bool {
        self.edges
            .iter()
            .any(|(from, _)| split_endpoint(from).0 == name)
    }

    /// Whether an edge reads port `port` of component `name` (an edge from `name.port`).
    pub fn reads_port(&self, name: &str, port: &str) -> bool {
        self.edges
            .iter()
            .any(|(from, _)| split_endpoint(from) == (name, Some(port)))
    }

    pub fn needs_graph(&self) -> bool {
        self.sources.values().any(SourceConfig::needs_graph)
            || self.stages.values().any(StageConfig::needs_graph)
    }
}
