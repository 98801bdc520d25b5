//! The Newson & Krumm (2009) hidden Markov model: Gaussian emission in the distance from a
//! probe to the road, exponential transition in |route distance − great-circle distance|,
//! and the plausibility cut on the speed a route implies. Log-probabilities, constants
//! dropped (they do not change the argmax).

/// Emission log-probability of a candidate `distance_m` from the probe: −½ (d/σ)².
///
/// ```
/// use pipeline::matching::hmm::emission_log_prob;
/// assert_eq!(emission_log_prob(0.0, 5.0), 0.0);
/// assert_eq!(emission_log_prob(10.0, 5.0), -2.0);
/// ```
pub fn emission_log_prob(distance_m: f64, sigma_m: f64) -> f64 {
    let z = distance_m / sigma_m;
    -0.5 * z * z
}

/// Transition log-probability: −|route − great-circle| / β.
///
/// ```
/// use pipeline::matching::hmm::transition_log_prob;
/// assert_eq!(transition_log_prob(120.0, 100.0, 10.0), -2.0);
/// ```
pub fn transition_log_prob(route_m: f64, great_circle_m: f64, beta_m: f64) -> f64 {
    -(route_m - great_circle_m).abs() / beta_m
}

/// The longest route allowed between two probes `dt_ms` apart: `max_speed × Δt + slack`.
/// Routes longer than this imply an impossible speed and the transition is dropped.
///
/// ```
/// use pipeline::matching::hmm::max_route_m;
/// assert_eq!(max_route_m(2_000, 50.0, 20.0), 120.0);
/// assert_eq!(max_route_m(-5, 50.0, 20.0), 20.0);
/// ```
pub fn max_route_m(dt_ms: i64, max_speed_mps: f64, slack_m: f64) -> f64 {
    max_speed_mps * (dt_ms.max(0) as f64 / 1000.0) + slack_m
}
