//! The fixed-size state of one segment-window (88 bytes): sums for the space-mean speed, a
//! distinct-vehicle bitmap and a speed sketch that is exact up to 32 samples. Every speed it
//! reports is at least [`STANDSTILL_SPEED_MPS`] (a window of standing vehicles is published).
//!
//! Every field is an order-independent fold of the observations (integer sums, a bitmap, a
//! multiset of speeds, or bucket counts of that multiset), so the same observations give
//! the same state in any arrival order. That is what makes out-of-order input within the
//! bound produce exactly the windows of sorted input.
//!
//! **Speed sketch.** Up to [`EXACT_SPEEDS`] samples the speeds are kept exactly (as cm/s),
//! so quantiles and trimmed means are exact. The next sample turns the same 64 bytes into
//! 32 bucket counts: bucket 0 holds speeds below 1 m/s, buckets 1–30 are log-spaced from
//! 1 m/s to 60 m/s (ratio r = 60^(1/30) ≈ 1.146 between edges) and bucket 31 holds 60 m/s and
//! above. A quantile is interpolated linearly inside its bucket, so its error is at most one
//! bucket width: 14.6 % of the speed above 1 m/s, 1 m/s below. Counts saturate at 65 535 per
//! bucket and segment-window (a segment would need more than a thousand vehicles a second in
//! a 60 s window to get there).
//!
//! **Distinct vehicles.** Linear counting over a 64-bit bitmap of a hash of the vehicle id:
//! the estimate −64·ln(zero bits / 64), capped at the sample count, is within about 10 % up
//! to 40 vehicles and saturates near 266. The number of set bits is a lower bound on the true
//! count, and it is what the publication rule `min_vehicles` uses, so a hash collision can only
//! withhold a window, never publish one on too few vehicles.

use std::sync::LazyLock;

/// The least speed a state reports (m/s): a window in which every vehicle stood still has a
/// space mean of 0, which would publish no row (a travel time is length / speed), and a jam
/// reported as no data is the costliest error. So speeds below this are reported as this
/// ("standing"), and travel times stay finite.
pub const STANDSTILL_SPEED_MPS: f64 = 0.1;

fn at_least_standstill(speed_mps: f64) -> f64 {
    if speed_mps.is_nan() {
        speed_mps
    } else {
        speed_mps.max(STANDSTILL_SPEED_MPS)
    }
}

/// Speeds kept exactly before the sketch switches to buckets.
pub const EXACT_SPEEDS: usize = 32;
const BUCKETS: usize = 32;
/// Upper edge assumed for the open last bucket when interpolating.
const TOP_EDGE_CMPS: f64 = 8_000.0;

/// Lower edge of each bucket, in cm/s.
static BUCKET_LOWER_CMPS: LazyLock<[u16; BUCKETS]> = LazyLock::new(|| {
    let ratio = 60f64.powf(1.0 / 30.0);
    let mut edges = [0u16; BUCKETS];
    for (i, edge) in edges.iter_mut().enumerate().skip(1) {
        *edge = (100.0 * ratio.powi(i as i32 - 1)).round() as u16;
    }
    edges
});

fn bucket_of(speed_cmps: u16) -> usize {
    BUCKET_LOWER_CMPS.partition_point(|&lower| lower <= speed_cmps) - 1
}

fn bucket_bounds_cmps(b: usize) -> (f64, f64) {
    let lower = f64::from(BUCKET_LOWER_CMPS[b]);
    let upper = BUCKET_LOWER_CMPS
        .get(b + 1)
        .map_or(TOP_EDGE_CMPS, |&u| f64::from(u));
    (lower, upper)
}

/// The linear-counting estimate of distinct vehicles, rounded, by number of zero bits
/// (1..=64; entry 0 is unused: a full bitmap estimates the sample count).
static LINEAR_COUNTING: LazyLock<[u32; 65]> = LazyLock::new(|| {
    let mut estimates = [0u32; 65];
    for (zero_bits, estimate) in estimates.iter_mut().enumerate().skip(1) {
        *estimate = (-64.0 * (zero_bits as f64 / 64.0).ln()).round() as u32;
    }
    estimates
});

/// Bit flags of a [`WindowState`].
const DIRTY: u8 = 1;

/// The state of one (segment, window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowState {
    samples: u32,
    /// Sum of traversed distances, in centimetres (saturating).
    traversed_cm: u32,
    /// Sum of traversal durations, in milliseconds (saturating).
    duration_ms: u32,
    /// How many times rows of this state have been emitted (the next row's revision).
    emissions: u16,
    flags: u8,
    vehicles: u64,
    /// Exact speeds in cm/s while `samples <= EXACT_SPEEDS`, then bucket counts.
    speeds: [u16; EXACT_SPEEDS],
}

impl Default for WindowState {
    fn default() -> Self {
        Self {
            samples: 0,
            traversed_cm: 0,
            duration_ms: 0,
            emissions: 0,
            flags: 0,
            vehicles: 0,
            speeds: [0; EXACT_SPEEDS],
        }
    }
}

/// One observation, reduced to what the state folds.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub traversed_cm: u32,
    pub duration_ms: u32,
    pub speed_cmps: u16,
    pub vehicle_hash: u64,
}

/// The figures the estimators choose from, computed once per emitted state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub samples: u32,
    /// Linear-counting estimate of distinct vehicles.
    pub vehicles: u32,
    /// A lower bound on distinct vehicles (set bits), used by the publication rule.
    pub vehicles_lower_bound: u32,
    pub space_mean_mps: f64,
    pub p15_mps: f64,
    pub p50_mps: f64,
    pub p85_mps: f64,
}

impl WindowState {
    pub fn add(&mut self, s: Sample) {
        let n = self.samples as usize;
        if n < EXACT_SPEEDS {
            self.speeds[n] = s.speed_cmps;
        } else {
            if n == EXACT_SPEEDS {
                self.switch_to_buckets();
            }
            let b = bucket_of(s.speed_cmps);
            self.speeds[b] = self.speeds[b].saturating_add(1);
        }
        self.samples = self.samples.saturating_add(1);
        self.traversed_cm = self.traversed_cm.saturating_add(s.traversed_cm);
        self.duration_ms = self.duration_ms.saturating_add(s.duration_ms);
        self.vehicles |= 1u64 << (s.vehicle_hash >> 58);
    }

    fn switch_to_buckets(&mut self) {
        let mut counts = [0u16; BUCKETS];
        for &v in &self.speeds {
            counts[bucket_of(v)] += 1;
        }
        self.speeds = counts;
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }

    pub fn emissions(&self) -> u16 {
        self.emissions
    }

    pub fn record_emission(&mut self) {
        self.emissions = self.emissions.saturating_add(1);
    }

    pub fn is_dirty(&self) -> bool {
        self.flags & DIRTY != 0
    }

    pub fn set_dirty(&mut self, dirty: bool) {
        if dirty {
            self.flags |= DIRTY;
        } else {
            self.flags &= !DIRTY;
        }
    }

    /// The speeds, sorted when exact; computed once per emission, without allocating.
    fn view(&self) -> SpeedView<'_> {
        let n = self.samples as usize;
        if n <= EXACT_SPEEDS {
            let mut sorted = self.speeds;
            sorted[..n].sort_unstable();
            SpeedView::Exact { sorted, n }
        } else {
            SpeedView::Buckets(&self.speeds)
        }
    }

    /// The q-quantile of the speeds (0 ≤ q ≤ 1), in m/s; `None` without samples.
    pub fn quantile_mps(&self, q: f64) -> Option<f64> {
        self.view().quantile_mps(q).map(at_least_standstill)
    }

    /// The mean speed after dropping `trim_fraction` of the samples at each end, in m/s.
    pub fn trimmed_mean_mps(&self, trim_fraction: f64) -> Option<f64> {
        self.view()
            .trimmed_mean_mps(trim_fraction)
            .map(at_least_standstill)
    }

    pub fn summary(&self) -> Summary {
        let view = self.view();
        let [p15_mps, p50_mps, p85_mps] = view.summary_quantiles_mps().map(at_least_standstill);
        let set_bits = self.vehicles.count_ones();
        let zero_bits = 64 - set_bits;
        let estimate = if zero_bits == 0 {
            self.samples
        } else {
            LINEAR_COUNTING[zero_bits as usize]
        };
        let vehicles = estimate.clamp(set_bits, self.samples.max(set_bits));
        Summary {
            samples: self.samples,
            vehicles,
            vehicles_lower_bound: set_bits,
            space_mean_mps: if self.duration_ms > 0 {
                at_least_standstill(
                    f64::from(self.traversed_cm) / 100.0 / (f64::from(self.duration_ms) / 1000.0),
                )
            } else {
                f64::NAN
            },
            p15_mps,
            p50_mps,
            p85_mps,
        }
    }
}

/// The quantiles every row carries.
const SUMMARY_QUANTILES: [f64; 3] = [0.15, 0.50, 0.85];

/// Where the [`SUMMARY_QUANTILES`] fall among `n` sorted exact speeds (`n` = 1..=32; entry 0
/// is unused): the ranks below and above and the weight of the one above, exactly as
/// [`SpeedView::quantile_mps`] computes them, so the table only saves recomputing them for
/// every row.
static EXACT_QUANTILE_RANKS: LazyLock<[[(usize, usize, f64); 3]; EXACT_SPEEDS + 1]> =
    LazyLock::new(|| {
        let mut ranks = [[(0, 0, 0.0); 3]; EXACT_SPEEDS + 1];
        for (n, at) in ranks.iter_mut().enumerate().skip(1) {
            for (rank, q) in at.iter_mut().zip(SUMMARY_QUANTILES) {
                *rank = interpolation_ranks(q, n);
            }
        }
        ranks
    });

/// The ranks either side of quantile `q` (clamped to 0..=1) among `n >= 1` sorted values, and
/// the weight of the upper one.
fn interpolation_ranks(q: f64, n: usize) -> (usize, usize, f64) {
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    // floor and ceil of 0 <= pos < 32 by truncation (no libm calls).
    let lo = pos as usize;
    let hi = if (lo as f64) < pos { lo + 1 } else { lo };
    (lo, hi, pos - lo as f64)
}

/// The speed multiset of a state, read-only: exact and sorted, or bucket counts.
enum SpeedView<'a> {
    Exact {
        sorted: [u16; EXACT_SPEEDS],
        n: usize,
    },
    Buckets(&'a [u16; BUCKETS]),
}

/// The value at `(lo, hi, weight of hi)` among sorted speeds, in cm/s.
fn interpolate(sorted: &[u16; EXACT_SPEEDS], (lo, hi, frac): (usize, usize, f64)) -> f64 {
    f64::from(sorted[lo]) * (1.0 - frac) + f64::from(sorted[hi]) * frac
}

impl SpeedView<'_> {
    /// The [`SUMMARY_QUANTILES`] in m/s (NaN without samples): what `quantile_mps` gives
    /// for each, with the exact case's ranks from a table.
    fn summary_quantiles_mps(&self) -> [f64; 3] {
        match self {
            SpeedView::Exact { n: 0, .. } => [f64::NAN; 3],
            SpeedView::Exact { sorted, n } => {
                EXACT_QUANTILE_RANKS[*n].map(|ranks| interpolate(sorted, ranks) / 100.0)
            }
            SpeedView::Buckets(_) => {
                SUMMARY_QUANTILES.map(|q| self.quantile_mps(q).unwrap_or(f64::NAN))
            }
        }
    }

    fn quantile_mps(&self, q: f64) -> Option<f64> {
        let q = q.clamp(0.0, 1.0);
        let cmps = match self {
            SpeedView::Exact { n: 0, .. } => return None,
            SpeedView::Exact { sorted, n } => interpolate(sorted, interpolation_ranks(q, *n)),
            SpeedView::Buckets(counts) => {
                let total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
                let target = q * total;
                let mut below = 0.0;
                let mut value = TOP_EDGE_CMPS;
                for (b, &count) in counts.iter().enumerate() {
                    let count = f64::from(count);
                    if count > 0.0 && below + count >= target {
                        let (lower, upper) = bucket_bounds_cmps(b);
                        value = lower + (upper - lower) * ((target - below) / count);
                        break;
                    }
                    below += count;
                }
                value
            }
        };
        Some(cmps / 100.0)
    }

    fn trimmed_mean_mps(&self, trim_fraction: f64) -> Option<f64> {
        let trim = trim_fraction.clamp(0.0, 0.49);
        let mean_cmps = match self {
            SpeedView::Exact { n: 0, .. } => return None,
            SpeedView::Exact { sorted, n } => {
                // The floor, by truncation: trim * n is not negative.
                let cut = (trim * *n as f64) as usize;
                let kept = &sorted[cut..n - cut];
                kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64
            }
            SpeedView::Buckets(counts) => {
                // Weight each bucket by the part of it inside the kept rank range, at the
                // bucket's geometric middle (its arithmetic middle for bucket 0).
                let total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
                let (keep_from, keep_to) = (trim * total, (1.0 - trim) * total);
                let (mut below, mut weight, mut sum) = (0.0, 0.0, 0.0);
                for (b, &count) in counts.iter().enumerate() {
                    let count = f64::from(count);
                    let kept = (below + count).min(keep_to) - below.max(keep_from);
                    if kept > 0.0 {
                        let (lower, upper) = bucket_bounds_cmps(b);
                        let middle = if b == 0 {
                            upper / 2.0
                        } else {
                            (lower * upper).sqrt()
                        };
                        weight += kept;
                        sum += kept * middle;
                    }
                    below += count;
                }
                sum / weight.max(f64::MIN_POSITIVE)
            }
        };
        Some(mean_cmps / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(speed_mps: f64, vehicle: u64) -> Sample {
        Sample {
            traversed_cm: 10_000,
            duration_ms: (100_000.0 / speed_mps) as u32,
            speed_cmps: (speed_mps * 100.0).round() as u16,
            vehicle_hash: vehicle.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    #[test]
    fn state_stays_within_its_budget() {
        assert_eq!(std::mem::size_of::<WindowState>(), 88);
    }

    #[test]
    fn exact_quantiles_below_the_switch() {
        let mut s = WindowState::default();
        for (i, v) in [10.0, 20.0, 30.0, 40.0, 50.0].into_iter().enumerate() {
            s.add(sample(v, i as u64));
        }
        assert_eq!(s.quantile_mps(0.5), Some(30.0));
        assert_eq!(s.quantile_mps(0.0), Some(10.0));
        assert_eq!(s.quantile_mps(1.0), Some(50.0));
        assert!((s.quantile_mps(0.85).unwrap_or(0.0) - 44.0).abs() < 1e-9);
        assert_eq!(s.trimmed_mean_mps(0.2), Some(30.0));
        let sum = s.summary();
        assert_eq!(sum.samples, 5);
        assert_eq!(sum.vehicles, 5);
        // 5 × 100 m over 10 + 5 + 3.333 + 2.5 + 2 s.
        assert!((sum.space_mean_mps - 500.0 / 22.833).abs() < 1e-3);
    }

    #[test]
    fn summary_quantiles_equal_quantile_mps_bit_for_bit() {
        let mut s = WindowState::default();
        for i in 0..40u64 {
            let summary = s.summary();
            let got = [summary.p15_mps, summary.p50_mps, summary.p85_mps];
            for (got, q) in got.into_iter().zip(SUMMARY_QUANTILES) {
                let want = s.quantile_mps(q).unwrap_or(f64::NAN);
                assert_eq!(got.to_bits(), want.to_bits(), "n {i}, q {q}");
            }
            // Speeds from 0.3 to 45 m/s in a scrambled order.
            s.add(sample(0.3 + (i * 37 % 41) as f64 * 1.1, i));
        }
    }

    #[test]
    fn bucketed_quantiles_stay_within_one_bucket_width() {
        let mut s = WindowState::default();
        let speeds: Vec<f64> = (0..1000)
            .map(|i| 5.0 + 20.0 * f64::from(i) / 999.0)
            .collect();
        for (i, &v) in speeds.iter().enumerate() {
            s.add(sample(v, i as u64));
        }
        let ratio = 60f64.powf(1.0 / 30.0);
        for q in [0.15, 0.5, 0.85] {
            let truth = speeds[(q * 999.0) as usize];
            let got = s.quantile_mps(q).unwrap_or(0.0);
            assert!(
                (got / truth - 1.0).abs() < ratio - 1.0,
                "q{q}: {got} vs {truth}"
            );
        }
        let trimmed = s.trimmed_mean_mps(0.1).unwrap_or(0.0);
        assert!((trimmed / 15.0 - 1.0).abs() < 0.05, "{trimmed}");
    }

    #[test]
    fn state_is_independent_of_arrival_order() {
        let speeds: Vec<f64> = (0..50).map(|i| 3.0 + f64::from(i % 17)).collect();
        let mut forward = WindowState::default();
        let mut backward = WindowState::default();
        for (i, &v) in speeds.iter().enumerate() {
            forward.add(sample(v, i as u64 % 7));
        }
        for (i, &v) in speeds.iter().enumerate().rev() {
            backward.add(sample(v, i as u64 % 7));
        }
        assert_eq!(forward, backward);
        let mut few_forward = WindowState::default();
        let mut few_backward = WindowState::default();
        for (i, &v) in speeds[..9].iter().enumerate() {
            few_forward.add(sample(v, i as u64));
        }
        for (i, &v) in speeds[..9].iter().enumerate().rev() {
            few_backward.add(sample(v, i as u64));
        }
        assert_eq!(few_forward.summary(), few_backward.summary());
    }

    #[test]
    fn distinct_vehicles_never_exceed_the_set_bits_lower_bound_rule() {
        let mut s = WindowState::default();
        for i in 0..20 {
            s.add(sample(10.0, i % 3));
        }
        let sum = s.summary();
        assert!(sum.vehicles_lower_bound <= 3);
        assert!(sum.vehicles <= 4, "{sum:?}");
    }
}
