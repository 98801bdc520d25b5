//! `MatchConfig`: the knobs of the map matcher (candidate search, HMM, streaming decode,
//! trace breaks, eviction, route cache), with named defaults and pure validation.

use serde::Deserialize;

use crate::config::Problems;

fn default_radius_m() -> f64 {
    50.0
}
fn default_k() -> usize {
    16
}
fn default_sigma_m() -> f64 {
    6.0
}
fn default_beta_m() -> f64 {
    10.0
}
fn default_max_speed_mps() -> f64 {
    50.0
}
fn default_lag_points() -> usize {
    30
}
fn default_lag_ms() -> i64 {
    120_000
}
fn default_max_gap_ms() -> i64 {
    600_000
}
fn default_max_gap_m() -> f64 {
    10_000.0
}
fn default_vehicle_ttl_ms() -> i64 {
    600_000
}
fn default_standstill_tolerance_m() -> f64 {
    20.0
}
fn default_max_detour_m() -> f64 {
    1_000.0
}
fn default_route_cache_entries() -> usize {
    100_000
}
fn default_cut_interval_ms() -> i64 {
    60_000
}
fn default_cut_min_part_ms() -> i64 {
    5_000
}
fn default_junction_delay_ms() -> i64 {
    5_000
}
fn default_gap_flag_ms() -> i64 {
    10_000
}
fn default_u_turn_penalty_m() -> f64 {
    50.0
}
fn default_candidate_gap_nats() -> f64 {
    16.0
}

/// Settings of the map matcher. Distances in metres, times in milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Candidate search radius around each probe.
    #[serde(default = "default_radius_m")]
    pub radius_m: f64,
    /// At most this many candidate segments per probe. Each direction of a two-way road is
    /// a segment, so 16 is 8 roads: on the Kubicka tracks k = 8 loses the right road among
    /// twins and parallel ways (RMF 0.0236 against 0.0187 at 1 s; BENCHMARKS.md).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Standard deviation of the Gaussian emission (GPS noise).
    #[serde(default = "default_sigma_m")]
    pub sigma_m: f64,
    /// Scale of the exponential transition in |route − great-circle| distance.
    #[serde(default = "default_beta_m")]
    pub beta_m: f64,
    /// Transitions whose route implies a higher speed for the time gap are dropped.
    #[serde(default = "default_max_speed_mps")]
    pub max_speed_mps: f64,
    /// Forced commit: at most this many probes stay undecided per vehicle. A wrong branch
    /// at a fork often looks right for 10–20 s before the evidence turns (Kubicka track
    /// 00000028); a lag of 10 points cost 0.01 RMF at 1 s there.
    #[serde(default = "default_lag_points")]
    pub lag_points: usize,
    /// Forced commit: an undecided probe is at most this much older than the newest one.
    /// Below the aggregate stage's `allowed_lateness_ms`, so a forced commit is at worst a
    /// revision there, never a late drop.
    #[serde(default = "default_lag_ms")]
    pub lag_ms: i64,
    /// A longer time gap between consecutive probes starts a new trace (so does one longer
    /// than `vehicle_ttl_ms`: see [`MatchConfig::trace_gap_ms`]).
    #[serde(default = "default_max_gap_ms")]
    pub max_gap_ms: i64,
    /// A longer great-circle jump between consecutive probes starts a new trace.
    #[serde(default = "default_max_gap_m")]
    pub max_gap_m: f64,
    /// A vehicle idle (by event time) longer than this is flushed and evicted. As long as
    /// `max_gap_ms` by default, since a shorter one ends traces at it too (see
    /// [`MatchConfig::trace_gap_ms`]): at 120 s the real tracks' gaps of 2–36 min in 6 of 30
    /// were no longer bridged, Kubicka RMF at 15 / 30 s 0.0164 / 0.0229 → 0.0260 / 0.0494.
    /// The price: a vehicle that stops reporting is held, with what it holds back of the
    /// input's commit, this long; lower it to trade gap bridging for a shorter re-read
    /// after a restart and less memory.
    #[serde(default = "default_vehicle_ttl_ms")]
    pub vehicle_ttl_ms: i64,
    /// A step back along the same segment up to this much is read as GPS noise on a slow
    /// or standing vehicle (route distance 0), not as a loop round the block. Two fixes
    /// with independent noise σ differ along the road by σ√2, so about 3σ.
    #[serde(default = "default_standstill_tolerance_m")]
    pub standstill_tolerance_m: f64,
    /// A route may be longer than twice the great-circle distance between the probes by at
    /// most this much; longer ones are not searched. With β = 10 m such a detour scores
    /// e^-100 or less against a direct route, so this bounds the search at sparse sampling
    /// (where `max_speed_mps × Δt` would allow many kilometres) without changing matches
    /// that have any plausible alternative.
    #[serde(default = "default_max_detour_m")]
    pub max_detour_m: f64,
    /// Capacity of the segment-to-segment route distance cache (entries).
    #[serde(default = "default_route_cache_entries")]
    pub route_cache_entries: usize,
    /// An observation gets the `GAP` flag when its entry or exit time is interpolated
    /// between two consecutive matched points of a trace more than this far apart in event
    /// time (see `matching::observations`). Below `max_gap_ms`, which splits the trace.
    #[serde(default = "default_gap_flag_ms")]
    pub gap_flag_ms: i64,
    /// A traversal is cut into parts at every multiple of this of event time (epoch-aligned;
    /// 0: never), each part an observation with the distance the vehicle covered in it (see
    /// `matching::observations`). Windowed speeds need it: a vehicle queued for minutes on a
    /// segment is otherwise one slow observation credited to one window, and the windows it
    /// waited through see none. Make the aggregate's window slide a multiple of it.
    #[serde(default = "default_cut_interval_ms")]
    pub cut_interval_ms: i64,
    /// A cut is not made where it would leave a part shorter than this on either side: the
    /// traversal stays whole across that boundary. A part of a second or two is mostly GPS
    /// noise, and a window with nothing else publishes it (on a congested simulation at 1 s
    /// sampling, MAPE 0.0598 → 0.0545 with 5 s).
    #[serde(default = "default_cut_min_part_ms")]
    pub cut_min_part_ms: i64,
    /// When a vehicle took longer between two points than the speed limits allow, the extra
    /// time is shared by the segments of the path in proportion to their free-flow time plus
    /// this for each segment that ends at a junction crossed (see `matching::observations`):
    /// queues form before junctions. 0 shares it by free-flow time alone.
    #[serde(default = "default_junction_delay_ms")]
    pub junction_delay_ms: i64,
    /// Added to a route's length for each U-turn where the road goes on (see
    /// `Router::with_u_turn_penalty_m`): with β = 10 m, 50 m costs e^-5. On the Kubicka
    /// tracks 25 m and 50 m both beat none (50 m by more at k = 16); 100 m starts to cost
    /// real U-turns.
    #[serde(default = "default_u_turn_penalty_m")]
    pub u_turn_penalty_m: f64,
    /// A candidate whose emission log-probability is more than this below the nearest
    /// candidate's is dropped (with σ = 6 m and the nearest road at 5 m: roads beyond
    /// 34 m). Far candidates rarely win and, at sparse sampling, offer spurious routes
    /// that fit the straight line better than the true one: on the Kubicka tracks 16 beats
    /// no cut at every rate (RMF at 15 s 0.0219 → 0.0165), 12 cuts too deep.
    #[serde(default = "default_candidate_gap_nats")]
    pub candidate_gap_nats: f64,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            radius_m: default_radius_m(),
            k: default_k(),
            sigma_m: default_sigma_m(),
            beta_m: default_beta_m(),
            max_speed_mps: default_max_speed_mps(),
            lag_points: default_lag_points(),
            lag_ms: default_lag_ms(),
            max_gap_ms: default_max_gap_ms(),
            max_gap_m: default_max_gap_m(),
            vehicle_ttl_ms: default_vehicle_ttl_ms(),
            standstill_tolerance_m: default_standstill_tolerance_m(),
            max_detour_m: default_max_detour_m(),
            route_cache_entries: default_route_cache_entries(),
            gap_flag_ms: default_gap_flag_ms(),
            cut_interval_ms: default_cut_interval_ms(),
            cut_min_part_ms: default_cut_min_part_ms(),
            junction_delay_ms: default_junction_delay_ms(),
            u_turn_penalty_m: default_u_turn_penalty_m(),
            candidate_gap_nats: default_candidate_gap_nats(),
        }
    }
}

impl MatchConfig {
    /// Reports every problem at once under `prefix` (e.g. `transforms.assign.matching`).
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        problems.check(
            positive(self.radius_m),
            format!("{prefix}.radius_m"),
            "must be positive",
        );
        problems.check(
            (1..=64).contains(&self.k),
            format!("{prefix}.k"),
            "must be between 1 and 64",
        );
        problems.check(
            positive(self.sigma_m),
            format!("{prefix}.sigma_m"),
            "must be positive",
        );
        problems.check(
            positive(self.beta_m),
            format!("{prefix}.beta_m"),
            "must be positive",
        );
        problems.check(
            positive(self.max_speed_mps),
            format!("{prefix}.max_speed_mps"),
            "must be positive",
        );
        problems.check(
            self.lag_points >= 1,
            format!("{prefix}.lag_points"),
            "must be at least 1",
        );
        problems.check(
            self.cut_interval_ms >= 0,
            format!("{prefix}.cut_interval_ms"),
            "must not be negative (0 never cuts)",
        );
        problems.check(
            self.cut_min_part_ms >= 0
                && (self.cut_interval_ms == 0 || self.cut_min_part_ms * 2 <= self.cut_interval_ms),
            format!("{prefix}.cut_min_part_ms"),
            "must be between 0 and half of cut_interval_ms",
        );
        problems.check(
            self.junction_delay_ms >= 0,
            format!("{prefix}.junction_delay_ms"),
            "must not be negative",
        );
        problems.check(
            self.lag_ms >= 0,
            format!("{prefix}.lag_ms"),
            "must not be negative",
        );
        problems.check(
            self.max_detour_m.is_finite() && self.max_detour_m >= 0.0,
            format!("{prefix}.max_detour_m"),
            "must be zero or positive",
        );
        problems.check(
            self.max_gap_ms > 0,
            format!("{prefix}.max_gap_ms"),
            "must be positive",
        );
        problems.check(
            positive(self.max_gap_m),
            format!("{prefix}.max_gap_m"),
            "must be positive",
        );
        problems.check(
            self.standstill_tolerance_m.is_finite() && self.standstill_tolerance_m >= 0.0,
            format!("{prefix}.standstill_tolerance_m"),
            "must not be negative",
        );
        problems.check(
            self.candidate_gap_nats >= 0.0,
            format!("{prefix}.candidate_gap_nats"),
            "must not be negative (inf keeps every candidate)",
        );
        problems.check(
            self.u_turn_penalty_m.is_finite() && self.u_turn_penalty_m >= 0.0,
            format!("{prefix}.u_turn_penalty_m"),
            "must not be negative",
        );
        problems.check(
            self.gap_flag_ms >= 0,
            format!("{prefix}.gap_flag_ms"),
            "must not be negative",
        );
        problems.check(
            self.vehicle_ttl_ms > 0,
            format!("{prefix}.vehicle_ttl_ms"),
            "must be positive",
        );
    }

    /// The time gap between consecutive probes that ends a trace: `max_gap_ms`, or
    /// `vehicle_ttl_ms` when shorter. A vehicle quiet that long is evicted (its trace
    /// flushed) whenever eviction runs, so its trace ends there whether eviction ran before
    /// its next probe or not: what is emitted does not depend on when eviction runs (which
    /// depends on how the input's lanes interleave), and a re-read after a restart
    /// rebuilds the same traces.
    pub fn trace_gap_ms(&self) -> i64 {
        self.max_gap_ms.min(self.vehicle_ttl_ms)
    }

    /// The longest route searched between two probes `dt_ms` and `great_circle_m` apart:
    /// what the speed limit allows, capped by the detour rule.
    pub fn max_route_m(&self, dt_ms: i64, great_circle_m: f64) -> f64 {
        crate::matching::hmm::max_route_m(dt_ms, self.max_speed_mps, self.route_slack_m())
            .min(self.max_detour_route_m(great_circle_m))
    }

    /// The longest route searched between two probes `great_circle_m` apart whatever the
    /// time between them (the detour rule alone).
    pub fn max_detour_route_m(&self, great_circle_m: f64) -> f64 {
        2.0 * great_circle_m + self.max_detour_m
    }

    /// A route this long or shorter between two probes `great_circle_m` apart is "direct"
    /// (a quarter longer than the straight line, plus the noise slack): taken when the speed
    /// cut leaves no transition at all. On the Kubicka tracks the result does not move
    /// between 1.1× + 24 m and 1.5× + 50 m.
    pub fn max_direct_route_m(&self, great_circle_m: f64) -> f64 {
        (1.25 * great_circle_m + self.route_slack_m()).min(self.max_detour_route_m(great_circle_m))
    }

    /// Extra route length allowed above `max_speed_mps × Δt`, for GPS noise on both ends.
    pub fn route_slack_m(&self) -> f64 {
        4.0 * self.sigma_m
    }

    /// The squared distance beyond which a candidate is dropped, given the nearest one
    /// (see [`MatchConfig::candidate_gap_nats`]): −½(d/σ)² ≥ −½(d₀/σ)² − gap.
    pub fn max_candidate_distance_2(&self, nearest: Option<&crate::graph::Candidate>) -> f64 {
        let d0 = nearest.map_or(0.0, |c| c.distance_m);
        d0 * d0 + 2.0 * self.sigma_m * self.sigma_m * self.candidate_gap_nats
    }

    /// See [`MatchConfig::standstill_tolerance_m`].
    pub fn standstill_m(&self) -> f64 {
        self.standstill_tolerance_m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let mut problems = Problems::new();
        MatchConfig::default().validate("m", &mut problems);
        assert!(problems.is_empty());
    }

    #[test]
    fn candidate_gap_drops_roads_far_behind_the_nearest() {
        let config = MatchConfig::default();
        let nearest = crate::graph::Candidate {
            segment: 0,
            segment_id: 1,
            distance_m: 5.0,
            offset_m: 0.0,
            lat: 0.0,
            lon: 0.0,
        };
        // σ = 6 m, 16 nats: 5² + 2·36·16 = 1177 m², about 34.3 m.
        let limit_2 = config.max_candidate_distance_2(Some(&nearest));
        assert!((limit_2 - 1177.0).abs() < 1e-9);
        assert!(34.0_f64.powi(2) <= limit_2 && 35.0_f64.powi(2) > limit_2);
        let keep_all = MatchConfig {
            candidate_gap_nats: f64::INFINITY,
            ..MatchConfig::default()
        };
        assert!(keep_all
            .max_candidate_distance_2(Some(&nearest))
            .is_infinite());
    }

    #[test]
    fn bad_values_are_all_reported() {
        let cfg = MatchConfig {
            radius_m: f64::NAN,
            k: 0,
            sigma_m: -1.0,
            ..MatchConfig::default()
        };
        let mut problems = Problems::new();
        cfg.validate("m", &mut problems);
        assert_eq!(problems.into_vec().len(), 3);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let parsed: Result<MatchConfig, _> = toml::from_str("radius_m = 30\nbogus = 1\n");
        assert!(parsed.is_err());
        let parsed: MatchConfig = toml::from_str("radius_m = 30\n").unwrap_or_default();
        assert_eq!(parsed.radius_m, 30.0);
    }
}
