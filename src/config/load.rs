//! Layered loading: built-in defaults, then a TOML file, then `PIPELINE__SECTION__KEY`
//! environment variables. Every problem is reported at once, each with its origin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::model::{PipelineConfig, Sections, SinkConfig, SourceConfig, StageConfig};
use super::problems::{Problem, Problems};
use super::validate::validate;

const DEFAULTS_TOML: &str = include_str!("defaults.toml");
const ENV_PREFIX: &str = "PIPELINE";
const ENV_SEPARATOR: &str = "__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{}", render_problems(.0))]
    Invalid(Vec<Problem>),
}

fn render_problems(problems: &[Problem]) -> String {
    let mut out = format!("invalid configuration ({} problem(s)):", problems.len());
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

/// The `PIPELINE__…` variables of this process, for [`load`].
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
        .collect()
}

/// Loads and validates a configuration. `file` is optional (defaults and environment only);
/// `env` is passed in so that tests stay pure.
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<PipelineConfig, ConfigError> {
    let (config, provenance) = load_layers(file, env)?;
    let mut problems = Problems::new();
    validate(&config, &mut problems);
    provenance.fail_if_any(problems)?;
    Ok(config)
}

/// Loads the layers and decodes them, without the topology checks: for commands such as
/// `replay` that take settings from a config but build their own topology.
pub fn load_unvalidated(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<PipelineConfig, ConfigError> {
    Ok(load_layers(file, env)?.0)
}

/// Validates a configuration built in code.
pub fn check(config: &PipelineConfig) -> Result<(), ConfigError> {
    let mut problems = Problems::new();
    validate(config, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems.into_vec()))
    }
}

fn load_layers(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<(PipelineConfig, Provenance), ConfigError> {
    let file_text = match file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let provenance = Provenance::new(file, file_text.as_deref(), env);
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULTS_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(text) = &file_text {
        builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    let merged = builder
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(env.clone().into_iter().collect())),
        )
        .build()
        .map_err(|e| match file {
            Some(path) => ConfigError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
            None => ConfigError::Invalid(vec![Problem {
                key: "(environment)".into(),
                message: e.to_string(),
                origin: None,
            }]),
        })?;
    let value: serde_json::Value = merged.try_deserialize().map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            key: "(root)".into(),
            message: e.to_string(),
            origin: None,
        }])
    })?;
    let mut problems = Problems::new();
    let config = decode(value, &mut problems);
    provenance.fail_if_any(problems)?;
    match config {
        Some(config) => Ok((config, provenance)),
        None => Err(ConfigError::Invalid(Vec::new())),
    }
}

/// Deserialises `value` into `T`, recording any error under `prefix` with the exact key.
fn decode_at<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
    problems: &mut Problems,
) -> Option<T> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map_err(|e| {
            let path = e.path().to_string();
            let mut key = if path == "." || path.is_empty() {
                prefix.to_string()
            } else if prefix.is_empty() {
                path
            } else {
                format!("{prefix}.{path}")
            };
            let message = e.into_inner().to_string();
            // Make sure an unknown field's name ends the key, whichever way the error put it.
            if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .filter(|field| !key.ends_with(field))
            {
                key = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
            }
            problems.push(key, message);
        })
        .ok()
}

/// Splits `{type = "x", …}` into the type name and the rest.
fn component_type(
    section: &str,
    name: &str,
    mut value: serde_json::Value,
    types: &[&str],
    problems: &mut Problems,
) -> Option<(String, serde_json::Value)> {
    let key = format!("{section}.{name}.type");
    let Some(object) = value.as_object_mut() else {
        problems.push(format!("{section}.{name}"), "expected a table");
        return None;
    };
    match object.remove("type") {
        Some(serde_json::Value::String(t)) if types.contains(&t.as_str()) => Some((t, value)),
        Some(other) => {
            problems.push(
                key,
                format!(
                    "unknown type {other}, expected one of: {}",
                    types.join(", ")
                ),
            );
            None
        }
        None => {
            problems.push(
                key,
                format!("missing; expected one of: {}", types.join(", ")),
            );
            None
        }
    }
}

/// Decodes every `[section.NAME]` table; its `type` picks the variant that `decode_variant`
/// builds from the rest of the table (with `prefix` = `section.NAME` for error keys).
fn decode_section<T>(
    section: &str,
    tables: BTreeMap<String, serde_json::Value>,
    types: &[&str],
    problems: &mut Problems,
    decode_variant: impl Fn(&str, serde_json::Value, &str, &mut Problems) -> Option<T>,
) -> BTreeMap<String, T> {
    let mut decoded = BTreeMap::new();
    for (name, table) in tables {
        let Some((t, rest)) = component_type(section, &name, table, types, problems) else {
            continue;
        };
        if let Some(c) = decode_variant(&t, rest, &format!("{section}.{name}"), problems) {
            decoded.insert(name, c);
        }
    }
    decoded
}

/// A type listed in `TYPES` but not decoded: a programming error, reported rather than
/// silently mapped to another variant.
fn unhandled_type<T>(prefix: &str, t: &str, problems: &mut Problems) -> Option<T> {
    problems.push(
        format!("{prefix}.type"),
        format!("type \"{t}\" has no decoder"),
    );
    None
}

fn decode(value: serde_json::Value, problems: &mut Problems) -> Option<PipelineConfig> {
    let sections: Sections = decode_at(value, "", problems)?;
    let sources = decode_section(
        "sources",
        sections.sources,
        SourceConfig::TYPES,
        problems,
        |t, rest, prefix, p| match t {
            "parquet" => decode_at(rest, prefix, p).map(SourceConfig::Parquet),
            "generator" => decode_at(rest, prefix, p).map(SourceConfig::Generator),
            "kafka" => decode_at(rest, prefix, p).map(SourceConfig::Kafka),
            "kinesis" => decode_at(rest, prefix, p).map(SourceConfig::Kinesis),
            other => unhandled_type(prefix, other, p),
        },
    );
    let stages = decode_section(
        "stages",
        sections.stages,
        StageConfig::TYPES,
        problems,
        |t, rest, prefix, p| match t {
            "clean" => decode_at(rest, prefix, p).map(StageConfig::Clean),
            "assign" => decode_at(rest, prefix, p).map(StageConfig::Assign),
            "aggregate" => decode_at(rest, prefix, p).map(StageConfig::Aggregate),
            other => unhandled_type(prefix, other, p),
        },
    );
    let sinks = decode_section(
        "sinks",
        sections.sinks,
        SinkConfig::TYPES,
        problems,
        |t, rest, prefix, p| match t {
            "parquet" => decode_at(rest, prefix, p).map(SinkConfig::Parquet),
            "ndjson" => decode_at(rest, prefix, p).map(SinkConfig::Ndjson),
            "kafka" => decode_at(rest, prefix, p).map(SinkConfig::Kafka),
            "kinesis" => decode_at(rest, prefix, p).map(SinkConfig::Kinesis),
            other => unhandled_type(prefix, other, p),
        },
    );
    let mut edges = Vec::new();
    for (i, chain) in sections.edges.iter().enumerate() {
        let names: Vec<&str> = chain.split("->").map(str::trim).collect();
        if names.len() < 2 || names.iter().any(|n| n.is_empty()) {
            problems.push(
                format!("edges[{i}]"),
                format!("`{chain}` is not of the form \"a -> b\" (chains \"a -> b -> c\" allowed)"),
            );
            continue;
        }
        for pair in names.windows(2) {
            edges.push((pair[0].to_string(), pair[1].to_string()));
        }
    }
    Some(PipelineConfig {
        runtime: sections.runtime,
        telemetry: sections.telemetry,
        graph: sections.graph,
        sources,
        stages,
        sinks,
        edges,
    })
}

/// Where each key's value came from: an environment variable, the file, or the defaults.
struct Provenance {
    file: Option<(String, toml::Table)>,
    defaults: toml::Table,
    /// dotted lower-case key → variable name
    env: BTreeMap<String, String>,
}

impl Provenance {
    fn new(file: Option<&Path>, text: Option<&str>, env: &BTreeMap<String, String>) -> Self {
        let file = file.zip(text).map(|(path, text)| {
            (
                path.display().to_string(),
                text.parse::<toml::Table>().unwrap_or_default(),
            )
        });
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        let env = env
            .keys()
            .filter_map(|var| {
                let rest = var.strip_prefix(&prefix)?;
                Some((
                    rest.split(ENV_SEPARATOR)
                        .collect::<Vec<_>>()
                        .join(".")
                        .to_lowercase(),
                    var.clone(),
                ))
            })
            .collect();
        Self {
            file,
            defaults: DEFAULTS_TOML.parse().unwrap_or_default(),
            env,
        }
    }

    /// Turns collected problems into an error, each annotated with its value's origin.
    fn fail_if_any(&self, problems: Problems) -> Result<(), ConfigError> {
        if problems.is_empty() {
            return Ok(());
        }
        let mut list = problems.into_vec();
        for p in &mut list {
            if p.origin.is_none() {
                p.origin = self.origin(&p.key);
            }
        }
        Err(ConfigError::Invalid(list))
    }

    fn origin(&self, key: &str) -> Option<String> {
        // `edges[2]` and `paths[0]` are looked up as `edges` and `paths`.
        let key: String = key
            .split('.')
            .map(|part| part.split('[').next().unwrap_or(part))
            .collect::<Vec<_>>()
            .join(".");
        let mut prefix = key.as_str();
        loop {
            if let Some(var) = self.env.get(prefix) {
                return Some(format!("environment variable {var}"));
            }
            if let Some((path, table)) = &self.file {
                if has_key(table, prefix) {
                    return Some(format!("file {path}"));
                }
            }
            if has_key(&self.defaults, prefix) {
                return Some("built-in defaults".to_string());
            }
            match prefix.rfind('.') {
                Some(i) => prefix = &prefix[..i],
                None => return None,
            }
        }
    }
}

fn has_key(table: &toml::Table, dotted: &str) -> bool {
    let mut parts = dotted.split('.');
    let Some(first) = parts.next() else {
        return false;
    };
    let mut current = match table.get(first) {
        Some(v) => v,
        None => return false,
    };
    for part in parts {
        match current.get(part) {
            Some(v) => current = v,
            None => return false,
        }
    }
    true
}
