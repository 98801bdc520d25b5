//! Settings of the aggregate stage (`[stages.NAME] type = "aggregate"`): windows, watermark,
//! lateness, the publication rule and the estimators.

use serde::Deserialize;

use crate::config::Problems;

fn default_window_ms() -> i64 {
    60_000
}
fn default_max_out_of_orderness_ms() -> i64 {
    30_000
}
fn default_allowed_lateness_ms() -> i64 {
    180_000
}
fn default_idle_timeout_ms() -> i64 {
    30_000
}
fn default_max_speed_mps() -> f64 {
    70.0
}
fn default_min_samples() -> u32 {
    1
}
fn default_min_vehicles() -> u32 {
    1
}
fn default_trim_fraction() -> f64 {
    0.1
}
fn default_estimators() -> Vec<EstimatorConfig> {
    vec![EstimatorKind::SpaceMean.into()]
}

/// The estimators, as a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimatorKind {
    /// Total distance over total time: the length-weighted harmonic mean of the speeds.
    SpaceMean,
    /// The median speed (p50), from the window's speed sketch.
    Median,
    /// The mean speed after dropping `trim_fraction` of the samples at each end.
    TrimmedMean,
}

impl EstimatorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EstimatorKind::SpaceMean => "space_mean",
            EstimatorKind::Median => "median",
            EstimatorKind::TrimmedMean => "trimmed_mean",
        }
    }
}

/// One estimator (`[[stages.NAME.estimators]]`). Several run side by side; each row of
/// output carries the estimator's name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimatorConfig {
    pub kind: EstimatorKind,
    /// The name written to `SegmentSpeed::estimator` (default: the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// `trimmed_mean` only: the share of samples dropped at each end (default 0.1).
    #[serde(default)]
    pub trim_fraction: Option<f64>,
    /// Overrides the stage's `min_samples` for this estimator.
    #[serde(default)]
    pub min_samples: Option<u32>,
    /// Overrides the stage's `min_vehicles` for this estimator.
    #[serde(default)]
    pub min_vehicles: Option<u32>,
}

/// An estimator of `kind` with every option at its default.
impl From<EstimatorKind> for EstimatorConfig {
    fn from(kind: EstimatorKind) -> Self {
        Self {
            kind,
            name: None,
            trim_fraction: None,
            min_samples: None,
            min_vehicles: None,
        }
    }
}

impl EstimatorConfig {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    pub fn trim_fraction(&self) -> f64 {
        self.trim_fraction.unwrap_or_else(default_trim_fraction)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Window length.
    #[serde(default = "default_window_ms")]
    pub window_ms: i64,
    /// Step between window starts (default: `window_ms`, i.e. tumbling windows). Must
    /// divide `window_ms`.
    #[serde(default)]
    pub slide_ms: Option<i64>,
    /// The watermark trails the largest event time seen by this much.
    #[serde(default = "default_max_out_of_orderness_ms")]
    pub max_out_of_orderness_ms: i64,
    /// A window's state is kept this long past its end (by the watermark); observations that
    /// arrive in that time revise it. Later ones are counted as late.
    #[serde(default = "default_allowed_lateness_ms")]
    pub allowed_lateness_ms: i64,
    /// An input silent this long (processing time) no longer holds the watermark back.
    /// 0 turns the idle rule off.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: i64,
    /// Observations faster than this are dropped as invalid.
    #[serde(default = "default_max_speed_mps")]
    pub max_speed_mps: f64,
    /// Publication rule: a window is published with at least this many samples…
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// …and at least this many distinct vehicles (a lower-bound count; see `state`).
    #[serde(default = "default_min_vehicles")]
    pub min_vehicles: u32,
    #[serde(default = "default_estimators")]
    pub estimators: Vec<EstimatorConfig>,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            window_ms: default_window_ms(),
            slide_ms: None,
            max_out_of_orderness_ms: default_max_out_of_orderness_ms(),
            allowed_lateness_ms: default_allowed_lateness_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_speed_mps: default_max_speed_mps(),
            min_samples: default_min_samples(),
            min_vehicles: default_min_vehicles(),
            estimators: default_estimators(),
        }
    }
}

impl AggregateConfig {
    pub fn slide_ms(&self) -> i64 {
        self.slide_ms.unwrap_or(self.window_ms)
    }

    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        const DAY_MS: i64 = 86_400_000;
        problems.check(
            (1_000..=DAY_MS).contains(&self.window_ms),
            format!("{prefix}.window_ms"),
            "must be between 1000 (1 s) and 86400000 (1 day)",
        );
        let slide_ms = self.slide_ms();
        problems.check(
            slide_ms >= 1_000 && slide_ms <= self.window_ms && self.window_ms % slide_ms == 0,
            format!("{prefix}.slide_ms"),
            "must be at least 1000 and divide window_ms",
        );
        problems.check(
            self.window_ms / slide_ms.max(1) <= 60,
            format!("{prefix}.slide_ms"),
            "a window may overlap at most 60 others (window_ms / slide_ms <= 60)",
        );
        for (key, value) in [
            ("max_out_of_orderness_ms", self.max_out_of_orderness_ms),
            ("allowed_lateness_ms", self.allowed_lateness_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            problems.check(
                (0..=DAY_MS).contains(&value),
                format!("{prefix}.{key}"),
                "must be between 0 and 86400000 (1 day)",
            );
        }
        problems.check(
            self.max_speed_mps.is_finite()
                && self.max_speed_mps > 0.0
                && self.max_speed_mps < 600.0,
            format!("{prefix}.max_speed_mps"),
            "must be a speed above 0 and below 600 m/s",
        );
        problems.check(
            !self.estimators.is_empty(),
            format!("{prefix}.estimators"),
            "needs at least one estimator",
        );
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.estimators.iter().enumerate() {
            let key = format!("{prefix}.estimators[{i}]");
            problems.check(
                names.insert(e.name().to_string()),
                format!("{key}.name"),
                format!("estimator name `{}` is used twice", e.name()),
            );
            problems.check(
                !e.name().is_empty() && e.name().len() <= 64,
                format!("{key}.name"),
                "must be 1 to 64 characters",
            );
            if let Some(t) = e.trim_fraction {
                problems.check(
                    e.kind == EstimatorKind::TrimmedMean,
                    format!("{key}.trim_fraction"),
                    "only applies to kind = \"trimmed_mean\"",
                );
                problems.check(
                    (0.0..0.5).contains(&t),
                    format!("{key}.trim_fraction"),
                    "must be at least 0 and below 0.5",
                );
            }
        }
    }
}
