//! `ImportConfig`: which OSM ways become road segments and which speeds they get when
//! `maxspeed` is missing. Validation is pure and reports every problem at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::class::RoadClass;
use super::error::GraphError;

/// How OSM data becomes a road graph.
///
/// ```
/// let cfg: pipeline::graph::ImportConfig =
///     toml::from_str("highway_classes = [\"primary\", \"residential\"]").unwrap();
/// assert_eq!(cfg.highway_classes.len(), 2);
/// assert!(cfg.respect_access);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// OSM `highway=*` values to keep (see [`RoadClass`] for the ones understood).
    pub highway_classes: Vec<String>,
    /// Per-class speed in km/h used when a way has no usable `maxspeed`, overriding the
    /// built-in table ([`RoadClass::default_speed_kmh`]). Keys are `highway` values.
    pub default_speed_kmh: BTreeMap<String, f32>,
    /// Drop ways closed to motor vehicles (`motorcar`, `motor_vehicle`, `vehicle` or `access`
    /// = `no`/`private`, the most specific tag present wins).
    pub respect_access: bool,
}

fn default_highway_classes() -> Vec<String> {
    [
        "motorway",
        "motorway_link",
        "trunk",
        "trunk_link",
        "primary",
        "primary_link",
        "secondary",
        "secondary_link",
        "tertiary",
        "tertiary_link",
        "unclassified",
        "residential",
        "living_street",
        "service",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            highway_classes: default_highway_classes(),
            default_speed_kmh: BTreeMap::new(),
            respect_access: true,
        }
    }
}

/// An [`ImportConfig`] checked and turned into lookup tables indexed by [`RoadClass`] code.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedConfig {
    pub keep: [bool; RoadClass::ALL.len()],
    pub speed_kmh: [f32; RoadClass::ALL.len()],
    pub respect_access: bool,
}

impl ImportConfig {
    /// Checks the config without touching any file; lists every problem found.
    pub fn validate(&self) -> Result<(), GraphError> {
        self.resolve().map(|_| ())
    }

    pub(crate) fn resolve(&self) -> Result<ResolvedConfig, GraphError> {
        let mut problems = Vec::new();
        let mut keep = [false; RoadClass::ALL.len()];
        for name in &self.highway_classes {
            match RoadClass::from_tag(name) {
                Some(c) => keep[usize::from(c.code())] = true,
                None => problems.push(format!(
                    "highway_classes: unknown class {name:?} (known: {})",
                    known_classes()
                )),
            }
        }
        if self.highway_classes.is_empty() {
            problems.push("highway_classes: must name at least one class".to_string());
        }
        let mut speed_kmh = RoadClass::ALL.map(RoadClass::default_speed_kmh);
        for (name, &kmh) in &self.default_speed_kmh {
            match RoadClass::from_tag(name) {
                Some(c) if kmh.is_finite() && kmh > 0.0 && kmh <= 300.0 => {
                    speed_kmh[usize::from(c.code())] = kmh
                }
                Some(_) => problems.push(format!(
                    "default_speed_kmh.{name}: {kmh} is not a speed in (0, 300] km/h"
                )),
                None => problems.push(format!(
                    "default_speed_kmh: unknown class {name:?} (known: {})",
                    known_classes()
                )),
            }
        }
        if problems.is_empty() {
            Ok(ResolvedConfig {
                keep,
                speed_kmh,
                respect_access: self.respect_access,
            })
        } else {
            Err(GraphError::Config { problems })
        }
    }
}

fn known_classes() -> String {
    RoadClass::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let r = ImportConfig::default().resolve().unwrap();
        assert!(r.keep[usize::from(RoadClass::Residential.code())]);
        assert!(!r.keep[usize::from(RoadClass::Track.code())]);
    }

    #[test]
    fn every_problem_is_reported() {
        let cfg = ImportConfig {
            highway_classes: vec!["footway".into(), "primary".into(), "cycleway".into()],
            default_speed_kmh: [("primary".to_string(), -5.0)].into_iter().collect(),
            respect_access: true,
        };
        match cfg.validate() {
            Err(GraphError::Config { problems }) => assert_eq!(problems.len(), 3, "{problems:?}"),
            other => panic!("expected config error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<ImportConfig>("highway_class = []").is_err());
    }
}
