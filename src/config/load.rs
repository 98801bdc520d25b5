//! Layered loading: built-in defaults, then a TOML file, then `PIPELINE__SECTION__KEY`
//! environment variables. Every problem is reported at once, each with its origin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::model::{PipelineConfig, Sections, SinkConfig, SourceConfig, StageConfig};
use super::problems::{Problem, Problems};
use super::validate::{validate, validate_partial, Undecoded};

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
    load_checked(file, env, |_, _| {})
}

/// [`load`], plus `extra` checks on the decoded configuration (e.g. that the files it names
/// open), whose problems are listed with every other one. The validation and `extra` run
/// on as much as decoded: a component whose table has problems of its own is left out, and
/// edges naming it are not blamed for that.
pub fn load_checked(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    extra: impl FnOnce(&PipelineConfig, &mut Problems),
) -> Result<PipelineConfig, ConfigError> {
    let (decoded, provenance) = load_layers(file, env)?;
    let mut problems = decoded.problems;
    if let Some(config) = &decoded.config {
        validate_partial(config, &decoded.undecoded, &mut problems);
        extra(config, &mut problems);
    }
    provenance.fail_if_any(problems)?;
    decoded
        .config
        .ok_or_else(|| ConfigError::Invalid(Vec::new()))
}

/// Loads the layers and decodes them, without the topology checks: for commands such as
/// `replay` that take settings from a config but build their own topology.
pub fn load_unvalidated(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<PipelineConfig, ConfigError> {
    let (decoded, provenance) = load_layers(file, env)?;
    provenance.fail_if_any(decoded.problems)?;
    decoded
        .config
        .ok_or_else(|| ConfigError::Invalid(Vec::new()))
}

/// What decoding the merged layers gave: the configuration, unless its shared sections
/// failed; the components left out of it because their tables failed; and every problem.
struct Decoded {
    config: Option<PipelineConfig>,
    undecoded: Undecoded,
    problems: Problems,
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
) -> Result<(Decoded, Provenance), ConfigError> {
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
    Ok((decode(value), provenance))
}

/// One step of the path to a value: a table key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Deserialises `value` into `T`, recording every error under `prefix` with its exact key.
///
/// After an unknown key or a badly typed value the key is taken out (or, when `defaults`
/// has it, set to its built-in default) and decoding goes on, so one run lists every such
/// problem of the table, not only the first. It stops at a missing required field (one taken
/// out here is not reported twice) and at an error it cannot take out (a bad list element),
/// since nothing after it can be checked. Returns the value only if the last attempt decoded;
/// the load fails anyway when anything was recorded. The table's problems are recorded in
/// key order: the order serde meets them depends on the merged map's, which is not fixed.
fn decode_at<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
    defaults: Option<&serde_json::Value>,
    problems: &mut Problems,
) -> Option<T> {
    let mut found = Vec::new();
    let decoded = decode_collecting(value, prefix, defaults, &mut found);
    found.sort();
    for (key, message) in found {
        problems.push(key, message);
    }
    decoded
}

fn decode_collecting<T: DeserializeOwned>(
    mut value: serde_json::Value,
    prefix: &str,
    defaults: Option<&serde_json::Value>,
    problems: &mut Vec<(String, String)>,
) -> Option<T> {
    let mut taken_out: Vec<Vec<Step>> = Vec::new();
    // Each pass takes out one key, so a table has fewer passes than keys; the bound is a
    // guard against a deserialiser reporting the same path forever.
    for _ in 0..MAX_DECODE_PASSES {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(decoded) => return Some(decoded),
            Err(e) => e,
        };
        let mut steps = Vec::new();
        let mut exact = true;
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Map { key } => steps.push(Step::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => steps.push(Step::Index(*index)),
                _ => exact = false,
            }
        }
        let message = error.into_inner().to_string();
        let field = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string)
        };
        if let Some(missing) = field("missing field `") {
            steps.push(Step::Key(missing));
            if !taken_out.contains(&steps) {
                problems.push((dotted(prefix, &steps), message));
            }
            return None;
        }
        // Make sure an unknown field's name ends the path, whichever way the error put it.
        if let Some(unknown) = field("unknown field `") {
            if steps.last() != Some(&Step::Key(unknown.clone())) {
                steps.push(Step::Key(unknown));
            }
        }
        problems.push((dotted(prefix, &steps), message));
        let default = defaults.and_then(|d| lookup(d, &steps)).cloned();
        if !exact || taken_out.contains(&steps) || !take_out(&mut value, &steps, default) {
            return None;
        }
        taken_out.push(steps);
    }
    None
}

/// Passes of [`decode_collecting`] over one table at most.
const MAX_DECODE_PASSES: usize = 1000;

/// `prefix.a.b[2].c`
fn dotted(prefix: &str, steps: &[Step]) -> String {
    let mut key = prefix.to_string();
    for step in steps {
        match step {
            Step::Key(k) if key.is_empty() => key.push_str(k),
            Step::Key(k) => {
                key.push('.');
                key.push_str(k);
            }
            Step::Index(i) => key.push_str(&format!("[{i}]")),
        }
    }
    key
}

fn lookup<'a>(value: &'a serde_json::Value, steps: &[Step]) -> Option<&'a serde_json::Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })
}

/// Takes the table key at `steps` out of `value`, or sets it to `default`. A list element
/// is not taken out (the indices after it would shift and the keys reported would be wrong).
fn take_out(
    value: &mut serde_json::Value,
    steps: &[Step],
    default: Option<serde_json::Value>,
) -> bool {
    let Some((Step::Key(last), parents)) = steps.split_last() else {
        return false;
    };
    let mut table = value;
    for step in parents {
        let next = match step {
            Step::Key(k) => table.get_mut(k),
            Step::Index(i) => table.get_mut(i),
        };
        match next {
            Some(v) => table = v,
            None => return false,
        }
    }
    let Some(object) = table.as_object_mut() else {
        return false;
    };
    match default {
        Some(d) => object.insert(last.clone(), d).is_some(),
        None => object.remove(last).is_some(),
    }
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
/// A table that does not decode goes into `undecoded` instead.
fn decode_section<T>(
    section: &'static str,
    tables: BTreeMap<String, serde_json::Value>,
    types: &[&str],
    d: &mut Decoded,
    decode_variant: impl Fn(&str, serde_json::Value, &str, &mut Problems) -> Option<T>,
) -> BTreeMap<String, T> {
    let mut decoded = BTreeMap::new();
    for (name, table) in tables {
        let component =
            component_type(section, &name, table, types, &mut d.problems).and_then(|(t, rest)| {
                decode_variant(&t, rest, &format!("{section}.{name}"), &mut d.problems)
            });
        match component {
            Some(c) => {
                decoded.insert(name, c);
            }
            None => {
                d.undecoded.insert(name, section);
            }
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

fn decode(value: serde_json::Value) -> Decoded {
    let mut d = Decoded {
        config: None,
        undecoded: Undecoded::new(),
        problems: Problems::new(),
    };
    // A badly typed shared setting falls back to its default, so the components are still
    // decoded and checked.
    let defaults = toml::from_str::<serde_json::Value>(DEFAULTS_TOML).ok();
    let Some(sections) = decode_at::<Sections>(value, "", defaults.as_ref(), &mut d.problems)
    else {
        return d;
    };
    let sources = decode_section(
        "sources",
        sections.sources,
        SourceConfig::TYPES,
        &mut d,
        |t, rest, prefix, p| match t {
            "parquet" => decode_at(rest, prefix, None, p).map(SourceConfig::Parquet),
            "generator" => decode_at(rest, prefix, None, p).map(SourceConfig::Generator),
            "kafka" => decode_at(rest, prefix, None, p).map(SourceConfig::Kafka),
            "kinesis" => decode_at(rest, prefix, None, p).map(SourceConfig::Kinesis),
            other => unhandled_type(prefix, other, p),
        },
    );
    let stages = decode_section(
        "stages",
        sections.stages,
        StageConfig::TYPES,
        &mut d,
        |t, rest, prefix, p| match t {
            "clean" => decode_at(rest, prefix, None, p).map(StageConfig::Clean),
            "assign" => decode_at(rest, prefix, None, p).map(StageConfig::Assign),
            "aggregate" => decode_at(rest, prefix, None, p).map(StageConfig::Aggregate),
            other => unhandled_type(prefix, other, p),
        },
    );
    let sinks = decode_section(
        "sinks",
        sections.sinks,
        SinkConfig::TYPES,
        &mut d,
        |t, rest, prefix, p| match t {
            "parquet" => decode_at(rest, prefix, None, p).map(SinkConfig::Parquet),
            "ndjson" => decode_at(rest, prefix, None, p).map(SinkConfig::Ndjson),
            "kafka" => decode_at(rest, prefix, None, p).map(SinkConfig::Kafka),
            "kinesis" => decode_at(rest, prefix, None, p).map(SinkConfig::Kinesis),
            other => unhandled_type(prefix, other, p),
        },
    );
    let mut edges = Vec::new();
    let mut edge_entries = Vec::new();
    for (i, chain) in sections.edges.iter().enumerate() {
        let names: Vec<&str> = chain.split("->").map(str::trim).collect();
        if names.len() < 2 || names.iter().any(|n| n.is_empty()) {
            d.problems.push(
                format!("edges[{i}]"),
                format!("`{chain}` is not of the form \"a -> b\" (chains \"a -> b -> c\" allowed)"),
            );
            continue;
        }
        for pair in names.windows(2) {
            edges.push((pair[0].to_string(), pair[1].to_string()));
            edge_entries.push(i);
        }
    }
    d.config = Some(PipelineConfig {
        runtime: sections.runtime,
        telemetry: sections.telemetry,
        graph: sections.graph,
        sources,
        stages,
        sinks,
        edges,
        edge_entries,
    });
    d
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
