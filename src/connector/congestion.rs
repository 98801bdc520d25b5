//! The generator's congestion model, so that synthetic traffic is not all free flow: some
//! links are slow (a bottleneck's speed is a fraction of what its drivers would choose),
//! vehicles queue at junctions (the last metres before a junction are driven at a crawl),
//! and both follow a rush-hour wave over the run (a level between `off_peak_level` and 1,
//! peaking at `rush_peak_fraction` of the duration).
//!
//! Which links are slow and how long each junction's queue is at the peak come from a hash
//! of the seed and the segment id, not from the vehicles' random streams, so the model is
//! deterministic and turning it off gives exactly the fleet of a generator without it.

use serde::Deserialize;

use crate::config::Problems;
use crate::graph::RoadGraph;

pub const DEFAULT_SLOW_LINK_SHARE: f64 = 0.2;
pub const DEFAULT_SLOW_LINK_FACTOR: f64 = 0.5;
pub const DEFAULT_JUNCTION_QUEUE_M: f64 = 40.0;
pub const DEFAULT_QUEUE_SPEED_MPS: f64 = 3.0;
pub const DEFAULT_RUSH_PEAK_FRACTION: f64 = 0.75;
pub const DEFAULT_OFF_PEAK_LEVEL: f64 = 0.3;

/// A queue never fills more than this share of its segment.
const MAX_QUEUE_SHARE: f64 = 0.8;

fn default_enabled() -> bool {
    true
}
fn default_slow_link_share() -> f64 {
    DEFAULT_SLOW_LINK_SHARE
}
fn default_slow_link_factor() -> f64 {
    DEFAULT_SLOW_LINK_FACTOR
}
fn default_junction_queue_m() -> f64 {
    DEFAULT_JUNCTION_QUEUE_M
}
fn default_queue_speed_mps() -> f64 {
    DEFAULT_QUEUE_SPEED_MPS
}
fn default_rush_peak_fraction() -> f64 {
    DEFAULT_RUSH_PEAK_FRACTION
}
fn default_off_peak_level() -> f64 {
    DEFAULT_OFF_PEAK_LEVEL
}

/// `[sources.NAME.congestion]` of a generator, and the congestion flags of `pipeline
/// generate`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CongestionConfig {
    /// Off: every vehicle drives its own speed (limit × its factor) everywhere.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Share of segments that are bottlenecks.
    #[serde(default = "default_slow_link_share")]
    pub slow_link_share: f64,
    /// A bottleneck's speed at the rush-hour peak, as a fraction of the driver's own.
    #[serde(default = "default_slow_link_factor")]
    pub slow_link_factor: f64,
    /// Longest queue before a junction at the peak, metres (each junction's is a seeded
    /// share of it, at most 80 % of its segment).
    #[serde(default = "default_junction_queue_m")]
    pub junction_queue_m: f64,
    /// Speed in a queue, m/s.
    #[serde(default = "default_queue_speed_mps")]
    pub queue_speed_mps: f64,
    /// When the rush hour peaks, as a fraction of the run's duration (it lasts half the run).
    #[serde(default = "default_rush_peak_fraction")]
    pub rush_peak_fraction: f64,
    /// Congestion outside the rush hour, as a fraction of the peak's.
    #[serde(default = "default_off_peak_level")]
    pub off_peak_level: f64,
}

impl Default for CongestionConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            slow_link_share: DEFAULT_SLOW_LINK_SHARE,
            slow_link_factor: DEFAULT_SLOW_LINK_FACTOR,
            junction_queue_m: DEFAULT_JUNCTION_QUEUE_M,
            queue_speed_mps: DEFAULT_QUEUE_SPEED_MPS,
            rush_peak_fraction: DEFAULT_RUSH_PEAK_FRACTION,
            off_peak_level: DEFAULT_OFF_PEAK_LEVEL,
        }
    }
}

impl CongestionConfig {
    /// No congestion at all.
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        for (key, value) in [
            ("slow_link_share", self.slow_link_share),
            ("rush_peak_fraction", self.rush_peak_fraction),
            ("off_peak_level", self.off_peak_level),
        ] {
            problems.check(
                fraction(value),
                format!("{prefix}.{key}"),
                "must be between 0 and 1",
            );
        }
        problems.check(
            self.slow_link_factor > 0.0 && self.slow_link_factor <= 1.0,
            format!("{prefix}.slow_link_factor"),
            "must be above 0 and at most 1",
        );
        problems.check(
            self.junction_queue_m.is_finite() && self.junction_queue_m >= 0.0,
            format!("{prefix}.junction_queue_m"),
            "must not be negative",
        );
        problems.check(
            self.queue_speed_mps.is_finite() && self.queue_speed_mps > 0.0,
            format!("{prefix}.queue_speed_mps"),
            "must be positive",
        );
    }
}

/// One segment's share of the model: its speed factor at the peak and its queue at the
/// peak, metres.
#[derive(Debug, Clone, Copy)]
struct Link {
    peak_factor: f64,
    peak_queue_m: f64,
}

/// The model over one graph, for one seed.
pub struct Congestion {
    config: CongestionConfig,
    links: Vec<Link>,
}

/// A vehicle's speed where it is, and up to which offset along its segment that speed holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub speed_mps: f64,
    pub until_m: f64,
}

impl Congestion {
    pub fn new(graph: &RoadGraph, config: &CongestionConfig, seed: u64) -> Self {
        if !config.enabled {
            return Self {
                config: config.clone(),
                links: Vec::new(),
            };
        }
        let links = graph
            .indices()
            .map(|i| {
                let segment = graph.segment(i);
                let [u_slow, u_queue] = uniforms(seed, segment.segment_id);
                let peak_factor = if u_slow < config.slow_link_share {
                    config.slow_link_factor
                } else {
                    1.0
                };
                let peak_queue_m = if is_junction(graph, i) {
                    (config.junction_queue_m * u_queue).min(MAX_QUEUE_SHARE * segment.length_m)
                } else {
                    0.0
                };
                Link {
                    peak_factor,
                    peak_queue_m,
                }
            })
            .collect();
        Self {
            config: config.clone(),
            links,
        }
    }

    /// The congestion level, 0 (none) to 1 (the peak), at `fraction` of the run: the
    /// off-peak level, plus a raised cosine half a run wide around the peak.
    pub fn level(&self, fraction: f64) -> f64 {
        if !self.config.enabled {
            return 0.0;
        }
        let off = self.config.off_peak_level;
        let wave = (std::f64::consts::PI * (fraction - self.config.rush_peak_fraction))
            .cos()
            .max(0.0);
        off + (1.0 - off) * wave
    }

    /// The speed of a vehicle whose own speed on this segment is `own_speed_mps`, at
    /// `offset_m` along segment `index` of `length_m`, at congestion `level`.
    pub fn stretch(
        &self,
        index: u32,
        length_m: f64,
        offset_m: f64,
        own_speed_mps: f64,
        level: f64,
    ) -> Stretch {
        let Some(link) = self.links.get(index as usize).filter(|_| level > 0.0) else {
            return Stretch {
                speed_mps: own_speed_mps,
                until_m: length_m,
            };
        };
        let cruise_mps = own_speed_mps * (1.0 - level * (1.0 - link.peak_factor));
        let queue_from_m = length_m - link.peak_queue_m * level;
        if offset_m < queue_from_m {
            Stretch {
                speed_mps: cruise_mps,
                until_m: queue_from_m,
            }
        } else {
            Stretch {
                speed_mps: cruise_mps.min(self.config.queue_speed_mps),
                until_m: length_m,
            }
        }
    }
}

/// A junction: the segment's end offers more than one way on (U-turns aside).
fn is_junction(graph: &RoadGraph, index: u32) -> bool {
    super::generator::onward_successors(graph, index).count() > 1
}

/// Two uniforms in [0, 1) from (seed, segment id): splitmix64 twice.
fn uniforms(seed: u64, segment_id: u64) -> [f64; 2] {
    fn splitmix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let a = splitmix64(seed ^ segment_id.rotate_left(17));
    let b = splitmix64(a);
    let unit = |v: u64| (v >> 11) as f64 / (1u64 << 53) as f64;
    [unit(a), unit(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wave_peaks_where_asked_and_never_falls_below_the_off_peak_level() {
        let graph = crate::graph::osm_writer::synthetic_grid(3, 3, 100.0, 60.17, 24.94)
            .build_graph(&crate::graph::ImportConfig::default())
            .expect("grid builds");
        let c = Congestion::new(&graph, &CongestionConfig::default(), 1);
        assert!((c.level(DEFAULT_RUSH_PEAK_FRACTION) - 1.0).abs() < 1e-12);
        assert!((c.level(0.0) - DEFAULT_OFF_PEAK_LEVEL).abs() < 1e-12);
        assert!(c.level(1.0) > 0.75, "the run ends in the rush hour");
        let off = Congestion::new(&graph, &CongestionConfig::off(), 1);
        assert_eq!(off.level(DEFAULT_RUSH_PEAK_FRACTION), 0.0);
    }

    #[test]
    fn uniforms_are_spread_over_the_unit_interval() {
        let draws: Vec<f64> = (0..10_000u64).map(|id| uniforms(7, id)[0]).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let below_fifth = draws.iter().filter(|u| **u < 0.2).count();
        assert!((1_800..2_200).contains(&below_fifth), "{below_fifth}");
    }
}
