//! The clean stage: drops broken or implausible probes (each with a counted reason),
//! removes exact duplicates, and re-orders each vehicle's probes within a bounded buffer.
//!
//! Time is event time only: the stage watermark is the largest accepted timestamp, so a
//! replay gives the same output whatever the wall clock says. Each vehicle's probes leave
//! in time order. Across vehicles, probes leave when the watermark passes them by the
//! reorder window, in (ts_ms, arrival) order, so the output is nearly time-sorted; a probe
//! that arrives behind the watermark but after its vehicle's last released probe is still
//! accepted and leaves at once. Behind a source with lanes (Kafka, Kinesis), the watermark
//! is capped at the source's event-time frontier for releases, staleness and eviction, so
//! a partition read more slowly than the others is treated as it would be live.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::config::Problems;
use crate::geo::{haversine_m, is_plausible_coordinate};
use crate::record::Probe;
use crate::runtime::{Batch, Frontier, Records, Transform};
use crate::telemetry::ComponentMetrics;
use crate::warn_limited;

fn default_max_speed_mps() -> f64 {
    70.0
}
fn default_reorder_window_ms() -> i64 {
    5_000
}
fn default_max_future_ms() -> i64 {
    300_000
}
fn default_max_past_ms() -> i64 {
    3_600_000
}
fn default_vehicle_ttl_ms() -> i64 {
    600_000
}
fn default_teleport_reanchor_after() -> u32 {
    3
}
fn default_future_confirm_after() -> u32 {
    3
}

/// Settings of the clean stage (`[stages.NAME] type = "clean"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanConfig {
    /// Speed implied by two consecutive probes of a vehicle above which the later one is a
    /// teleport and is dropped.
    #[serde(default = "default_max_speed_mps")]
    pub max_speed_mps: f64,
    /// A probe waits this long (in event time) for earlier probes of its vehicle that arrive
    /// out of order. Probes later than that are dropped as `late`.
    #[serde(default = "default_reorder_window_ms")]
    pub reorder_window_ms: i64,
    /// Probes more than this far ahead of the watermark are dropped (`future_timestamp`).
    #[serde(default = "default_max_future_ms")]
    pub max_future_ms: i64,
    /// Probes more than this far behind the watermark are dropped (`stale_timestamp`).
    #[serde(default = "default_max_past_ms")]
    pub max_past_ms: i64,
    /// A vehicle silent for this long (event time) is forgotten.
    #[serde(default = "default_vehicle_ttl_ms")]
    pub vehicle_ttl_ms: i64,
    /// After this many teleports in a row, the next probe starts a new anchor: the earlier
    /// anchor was more likely the outlier.
    #[serde(default = "default_teleport_reanchor_after")]
    pub teleport_reanchor_after: u32,
    /// Probes ahead of the watermark by more than `max_future_ms` are held back; once this
    /// many consistent ones (each within `max_future_ms` of the previous) arrive in a row,
    /// event time really jumped (a gap in the stream) and they are all admitted. A lone
    /// stamp in 2099 never gathers company and is dropped as `future_timestamp`.
    #[serde(default = "default_future_confirm_after")]
    pub future_confirm_after: u32,
}

impl Default for CleanConfig {
    fn default() -> Self {
        Self {
            max_speed_mps: default_max_speed_mps(),
            reorder_window_ms: default_reorder_window_ms(),
            max_future_ms: default_max_future_ms(),
            max_past_ms: default_max_past_ms(),
            vehicle_ttl_ms: default_vehicle_ttl_ms(),
            teleport_reanchor_after: default_teleport_reanchor_after(),
            future_confirm_after: default_future_confirm_after(),
        }
    }
}

impl CleanConfig {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        problems.check(
            self.max_speed_mps.is_finite() && self.max_speed_mps > 0.0,
            format!("{prefix}.max_speed_mps"),
            "must be a positive number",
        );
        for (name, value) in [
            ("reorder_window_ms", self.reorder_window_ms),
            ("max_future_ms", self.max_future_ms),
            ("max_past_ms", self.max_past_ms),
            ("vehicle_ttl_ms", self.vehicle_ttl_ms),
        ] {
            problems.check(
                value >= 0,
                format!("{prefix}.{name}"),
                "must not be negative",
            );
        }
        problems.check(
            self.future_confirm_after >= 1,
            format!("{prefix}.future_confirm_after"),
            "must be at least 1",
        );
        problems.check(
            self.max_past_ms >= self.reorder_window_ms,
            format!("{prefix}.max_past_ms"),
            "must be at least reorder_window_ms",
        );
    }
}

/// Why the clean stage dropped a probe. The label values of
/// `pipeline_component_dropped_events_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    MissingVehicleId,
    InvalidCoordinate,
    FutureTimestamp,
    StaleTimestamp,
    Duplicate,
    ConflictingTimestamp,
    Late,
    Teleport,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::MissingVehicleId,
        DropReason::InvalidCoordinate,
        DropReason::FutureTimestamp,
        DropReason::StaleTimestamp,
        DropReason::Duplicate,
        DropReason::ConflictingTimestamp,
        DropReason::Late,
        DropReason::Teleport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MissingVehicleId => "missing_vehicle_id",
            DropReason::InvalidCoordinate => "invalid_coordinate",
            DropReason::FutureTimestamp => "future_timestamp",
            DropReason::StaleTimestamp => "stale_timestamp",
            DropReason::Duplicate => "duplicate",
            DropReason::ConflictingTimestamp => "conflicting_timestamp",
            DropReason::Late => "late",
            DropReason::Teleport => "teleport",
        }
    }
}

/// Per-reason drop counts, accumulated per batch and emitted once per batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DropCounts([u64; 8]);

impl DropCounts {
    fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// A probe without its vehicle id (which the state it lives in already implies).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fix {
    ts_ms: i64,
    lat: f64,
    lon: f64,
    speed_mps: Option<f32>,
    heading_deg: Option<f32>,
    accuracy_m: Option<f32>,
}

impl From<&Probe> for Fix {
    fn from(p: &Probe) -> Self {
        Fix {
            ts_ms: p.ts_ms,
            lat: p.lat,
            lon: p.lon,
            speed_mps: p.speed_mps,
            heading_deg: p.heading_deg,
            accuracy_m: p.accuracy_m,
        }
    }
}

#[derive(Debug, Default)]
struct VehicleState {
    /// Probes waiting for the reorder window to pass, by (ts_ms, arrival sequence).
    pending: BTreeMap<(i64, u64), Probe>,
    /// The last probe released downstream: the anchor for duplicate and teleport checks.
    last: Option<Fix>,
    consecutive_teleports: u32,
}

/// The clean stage's state machine, free of channels so it can be driven by plain data.
pub struct Cleaner {
    config: CleanConfig,
    watermark_ms: Option<i64>,
    /// The upstream source's event-time frontier, when it has lanes (see
    /// [`crate::runtime::frontier`]): releases, staleness and eviction are judged against
    /// the watermark capped there, so a lane read more slowly than the others keeps its
    /// reorder window and is not taken for stale.
    frontier_ms: Option<i64>,
    /// Vehicle id → slot in `vehicles`; looked up by `&str`, so a known vehicle costs no
    /// allocation.
    slots: HashMap<Box<str>, u32>,
    vehicles: Vec<VehicleState>,
    /// Slots of evicted vehicles, reused before `vehicles` grows.
    free_slots: Vec<u32>,
    /// Release order over all vehicles: (ts_ms, arrival sequence, vehicle slot).
    release: BinaryHeap<Reverse<(i64, u64, u32)>>,
    next_seq: u64,
    batches_since_eviction: u32,
    /// Probes from the future, held until confirmed (see `future_confirm_after`).
    future_held: Vec<Probe>,
    totals: DropCounts,
}

impl Cleaner {
    pub fn new(config: CleanConfig) -> Self {
        Self {
            config,
            watermark_ms: None,
            frontier_ms: None,
            slots: HashMap::new(),
            vehicles: Vec::new(),
            free_slots: Vec::new(),
            release: BinaryHeap::new(),
            next_seq: 0,
            batches_since_eviction: 0,
            future_held: Vec::new(),
            totals: DropCounts::default(),
        }
    }

    /// Drops counted since the stage started.
    pub fn totals(&self) -> &DropCounts {
        &self.totals
    }

    /// The event time of the oldest probe still buffered (reorder buffers and held future
    /// probes), `None` when nothing is: the low water of what the stage still owes
    /// downstream.
    pub fn oldest_held_ms(&self) -> Option<i64> {
        let buffered = self.release.peek().map(|Reverse((ts_ms, _, _))| *ts_ms);
        let future = self.future_held.iter().map(|p| p.ts_ms).min();
        buffered.into_iter().chain(future).min()
    }

    /// Vehicles currently tracked.
    pub fn vehicle_count(&self) -> usize {
        self.slots.len()
    }

    fn slot_of(&mut self, vehicle_id: &str) -> u32 {
        if let Some(&slot) = self.slots.get(vehicle_id) {
            return slot;
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.vehicles.push(VehicleState::default());
                (self.vehicles.len() - 1) as u32
            }
        };
        self.slots.insert(vehicle_id.into(), slot);
        slot
    }

    /// The watermark capped at the upstream frontier: what releases, staleness and eviction
    /// are judged against. (Future timestamps are judged against the watermark alone: a
    /// lane ahead of the frontier is not in the future.)
    fn clock_ms(&self) -> Option<i64> {
        let w = self.watermark_ms?;
        Some(self.frontier_ms.map_or(w, |f| w.min(f)))
    }

    /// The upstream frontier moved to `frontier_ms`: releases what it now lets go of.
    pub fn set_frontier(&mut self, frontier_ms: i64, out: &mut Vec<Probe>) -> DropCounts {
        self.frontier_ms = Some(self.frontier_ms.map_or(frontier_ms, |f| f.max(frontier_ms)));
        let mut drops = DropCounts::default();
        if let Some(c) = self.clock_ms() {
            self.release_until(
                c.saturating_sub(self.config.reorder_window_ms),
                out,
                &mut drops,
            );
        }
        self.totals.merge(&drops);
        drops
    }

    /// Feeds one batch; appends the probes it releases to `out`. Returns this batch's drops.
    pub fn push(&mut self, probes: Vec<Probe>, out: &mut Vec<Probe>) -> DropCounts {
        let mut drops = DropCounts::default();
        if self.watermark_ms.is_none() {
            self.watermark_ms = initial_watermark(
                &probes,
                self.config.future_confirm_after as usize,
                self.config.max_future_ms,
            );
        }
        // Release after every probe, not once per batch, so the output does not depend on
        // how the input happened to be batched.
        for probe in probes {
            self.admit(probe, &mut drops);
            if let Some(c) = self.clock_ms() {
                self.release_until(
                    c.saturating_sub(self.config.reorder_window_ms),
                    out,
                    &mut drops,
                );
            }
        }
        self.batches_since_eviction += 1;
        if self.batches_since_eviction >= 64 {
            self.batches_since_eviction = 0;
            self.evict_idle();
        }
        self.totals.merge(&drops);
        drops
    }

    /// Releases everything still buffered (end of input).
    pub fn flush(&mut self, out: &mut Vec<Probe>) -> DropCounts {
        let mut drops = DropCounts::default();
        self.drop_held_future(&mut drops);
        self.release_until(i64::MAX, out, &mut drops);
        self.totals.merge(&drops);
        drops
    }

    fn admit(&mut self, probe: Probe, drops: &mut DropCounts) {
        if probe.vehicle_id.is_empty() {
            drops.add(DropReason::MissingVehicleId);
            return;
        }
        if !is_plausible_coordinate(probe.lat, probe.lon) {
            warn_limited!(vehicle_id = %probe.vehicle_id, lat = probe.lat, lon = probe.lon, "dropping probe with invalid coordinate");
            drops.add(DropReason::InvalidCoordinate);
            return;
        }
        let watermark = *self.watermark_ms.get_or_insert(probe.ts_ms);
        if probe.ts_ms > watermark.saturating_add(self.config.max_future_ms) {
            self.hold_future(probe, drops);
            return;
        }
        self.drop_held_future(drops);
        let clock_ms = self.frontier_ms.map_or(watermark, |f| watermark.min(f));
        if probe.ts_ms < clock_ms.saturating_sub(self.config.max_past_ms) {
            drops.add(DropReason::StaleTimestamp);
            return;
        }
        let slot = self.slot_of(&probe.vehicle_id);
        let state = &mut self.vehicles[slot as usize];
        if let Some(last) = &state.last {
            if probe.ts_ms < last.ts_ms {
                drops.add(DropReason::Late);
                return;
            }
            if probe.ts_ms == last.ts_ms {
                drops.add(if Fix::from(&probe) == *last {
                    DropReason::Duplicate
                } else {
                    DropReason::ConflictingTimestamp
                });
                return;
            }
        }
        let same_ts = state
            .pending
            .range((probe.ts_ms, 0)..=(probe.ts_ms, u64::MAX))
            .map(|(_, p)| p);
        let mut conflict = None;
        for other in same_ts {
            conflict = Some(if probe == *other {
                DropReason::Duplicate
            } else {
                DropReason::ConflictingTimestamp
            });
            if conflict == Some(DropReason::Duplicate) {
                break;
            }
        }
        if let Some(reason) = conflict {
            drops.add(reason);
            return;
        }
        self.watermark_ms = Some(watermark.max(probe.ts_ms));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.release.push(Reverse((probe.ts_ms, seq, slot)));
        state.pending.insert((probe.ts_ms, seq), probe);
    }

    /// Holds a probe from the future until enough consistent ones confirm that event time
    /// jumped; then admits them all, in arrival order, from the new watermark.
    fn hold_future(&mut self, probe: Probe, drops: &mut DropCounts) {
        let consistent = self.future_held.last().is_none_or(|held| {
            // Saturating: timestamps come from input and may sit at the ends of i64.
            probe.ts_ms.saturating_sub(held.ts_ms).saturating_abs() <= self.config.max_future_ms
        });
        if !consistent {
            self.drop_held_future(drops);
        }
        self.future_held.push(probe);
        if self.future_held.len() as u32 >= self.config.future_confirm_after.max(1) {
            let confirmed = std::mem::take(&mut self.future_held);
            if let Some(jump_to) = confirmed.iter().map(|p| p.ts_ms).min() {
                self.watermark_ms = Some(self.watermark_ms.unwrap_or(jump_to).max(jump_to));
            }
            for p in confirmed {
                self.admit(p, drops);
            }
        }
    }

    /// Drops the held future probes: what arrived since says event time did not jump.
    fn drop_held_future(&mut self, drops: &mut DropCounts) {
        for p in self.future_held.drain(..) {
            warn_limited!(vehicle_id = %p.vehicle_id, ts_ms = p.ts_ms, "dropping probe from the future");
            drops.add(DropReason::FutureTimestamp);
        }
    }

    fn release_until(&mut self, up_to_ms: i64, out: &mut Vec<Probe>, drops: &mut DropCounts) {
        while let Some(Reverse((ts_ms, _, _))) = self.release.peek() {
            if *ts_ms > up_to_ms {
                break;
            }
            let Some(Reverse((ts_ms, seq, slot))) = self.release.pop() else {
                break;
            };
            let Some(state) = self.vehicles.get_mut(slot as usize) else {
                continue;
            };
            let Some(probe) = state.pending.remove(&(ts_ms, seq)) else {
                continue;
            };
            if let Some(last) = &state.last {
                let dt_s = probe.ts_ms.saturating_sub(last.ts_ms) as f64 / 1000.0;
                let distance_m = haversine_m(last.lat, last.lon, probe.lat, probe.lon);
                let teleport = dt_s <= 0.0 || distance_m / dt_s > self.config.max_speed_mps;
                if teleport && state.consecutive_teleports < self.config.teleport_reanchor_after {
                    state.consecutive_teleports += 1;
                    drops.add(DropReason::Teleport);
                    continue;
                }
            }
            state.consecutive_teleports = 0;
            state.last = Some(Fix::from(&probe));
            out.push(probe);
        }
    }

    fn evict_idle(&mut self) {
        let Some(w) = self.clock_ms() else {
            return;
        };
        let horizon = w.saturating_sub(self.config.vehicle_ttl_ms);
        let (vehicles, free_slots) = (&mut self.vehicles, &mut self.free_slots);
        self.slots.retain(|_, &mut slot| {
            let state = &mut vehicles[slot as usize];
            let keep = !state.pending.is_empty()
                || state.last.as_ref().is_some_and(|p| p.ts_ms >= horizon);
            if !keep {
                *state = VehicleState::default();
                free_slots.push(slot);
            }
            keep
        });
    }
}

/// Where event time starts: the earliest plausible timestamp of the first batch that has
/// company, i.e. with at least `company` probes (all of them in a smaller batch) within
/// `max_future_ms` after it. A lone probe stamped in 1970 or 2099 cannot set the watermark,
/// and a first batch that spans hours (a whole recorded track) keeps its early probes,
/// which a mid-batch start would drop as stale. Without such a probe: the lower median.
fn initial_watermark(probes: &[Probe], company: usize, max_future_ms: i64) -> Option<i64> {
    let mut ts: Vec<i64> = probes
        .iter()
        .filter(|p| is_plausible_coordinate(p.lat, p.lon))
        .map(|p| p.ts_ms)
        .collect();
    if ts.is_empty() {
        return None;
    }
    ts.sort_unstable();
    let company = company.clamp(1, ts.len());
    ts.windows(company)
        .find(|w| w[company - 1].saturating_sub(w[0]) <= max_future_ms)
        .map(|w| w[0])
        .or_else(|| ts.get((ts.len() - 1) / 2).copied())
}

/// The clean stage as a runtime [`Transform`].
pub struct CleanStage {
    cleaner: Cleaner,
    metrics: Arc<ComponentMetrics>,
    vehicles: prometheus::IntGauge,
}

impl CleanStage {
    pub fn new(config: CleanConfig, metrics: Arc<ComponentMetrics>) -> Self {
        let vehicles = vehicles_gauge().with_label_values(&[metrics.component.as_str()]);
        Self {
            cleaner: Cleaner::new(config),
            metrics,
            vehicles,
        }
    }

    fn emit(&self, drops: &DropCounts, released: Vec<Probe>, out: &mut Vec<Batch>) {
        for reason in DropReason::ALL {
            self.metrics.dropped(reason.as_str(), drops.get(reason));
        }
        self.vehicles.set(self.cleaner.vehicle_count() as i64);
        if !released.is_empty() {
            out.push(Batch::new(Records::Probes(released)));
        }
    }
}

fn vehicles_gauge() -> &'static prometheus::IntGaugeVec {
    static GAUGE: std::sync::OnceLock<prometheus::IntGaugeVec> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| {
        crate::telemetry::metrics::register_collector(
            prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "pipeline_clean_active_vehicles",
                    "Vehicles whose state the clean stage holds.",
                ),
                &["component"],
            )
            .expect("valid metric definition"),
        )
    })
}

impl Transform for CleanStage {
    fn process_batch(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        match batch.records {
            Records::Probes(probes) => {
                let mut released = Vec::with_capacity(probes.len());
                let drops = self.cleaner.push(probes, &mut released);
                self.emit(&drops, released, out);
            }
            other => {
                // Validation prevents this edge; count it rather than pass it on.
                self.metrics
                    .dropped("wrong_record_kind", other.len() as u64);
            }
        }
    }

    fn retained_since_ms(&self) -> Option<i64> {
        self.cleaner.oldest_held_ms()
    }

    fn on_frontier(&mut self, frontier: Frontier, out: &mut Vec<Batch>) {
        let mut released = Vec::new();
        let drops = self.cleaner.set_frontier(frontier.event_ms, &mut released);
        self.emit(&drops, released, out);
    }

    fn on_close(&mut self, out: &mut Vec<Batch>) {
        let mut released = Vec::new();
        let drops = self.cleaner.flush(&mut released);
        self.emit(&drops, released, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn p(v: &str, ts_ms: i64, lat: f64, lon: f64) -> Probe {
        Probe::new(v, ts_ms, lat, lon)
    }

    fn run(config: CleanConfig, batches: Vec<Vec<Probe>>) -> (Vec<Probe>, DropCounts) {
        let mut c = Cleaner::new(config);
        let mut out = Vec::new();
        for b in batches {
            c.push(b, &mut out);
        }
        c.flush(&mut out);
        (out, c.totals().clone())
    }

    /// Found by the `clean` fuzz target: timestamps at both ends of i64 in one batch
    /// overflowed `ts − ts` in the watermark seed, the future-hold check and the teleport
    /// speed (a panic in debug builds, a wrong answer in release).
    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let mut cleaner = Cleaner::new(CleanConfig::default());
        let mut out = Vec::new();
        let probes = vec![
            p("a", i64::MIN, 60.0, 24.0),
            p("a", i64::MAX, 60.0, 24.0),
            p("b", i64::MIN + 1, 60.0, 24.0),
            p("b", i64::MAX - 1, 60.0, 24.001),
            p("a", 0, 60.0, 24.0),
        ];
        let n = probes.len() as u64;
        let mut dropped = cleaner.push(probes, &mut out).total();
        dropped += cleaner
            .push(vec![p("c", i64::MAX, 60.0, 24.0)], &mut out)
            .total();
        dropped += cleaner.flush(&mut out).total();
        assert_eq!(out.len() as u64 + dropped, n + 1);
    }

    #[test]
    fn invalid_coordinates_are_dropped_with_reason() {
        let (out, drops) = run(
            CleanConfig::default(),
            vec![vec![
                p("a", T0, 60.0, 24.0),
                p("a", T0 + 1000, f64::NAN, 24.0),
                p("a", T0 + 2000, 0.0, 0.0),
                p("a", T0 + 3000, 95.0, 24.0),
                p("", T0 + 4000, 60.0, 24.0),
            ]],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(drops.get(DropReason::InvalidCoordinate), 3);
        assert_eq!(drops.get(DropReason::MissingVehicleId), 1);
    }

    #[test]
    fn timestamp_in_2099_does_not_poison_the_watermark() {
        let far_future = 4_070_908_800_000; // 2099-01-01
        let (out, drops) = run(
            CleanConfig::default(),
            vec![vec![
                p("a", far_future, 60.0, 24.0),
                p("a", T0, 60.0, 24.0),
                p("a", T0 + 1000, 60.0, 24.0001),
            ]],
        );
        assert_eq!(
            out.iter().map(|p| p.ts_ms).collect::<Vec<_>>(),
            [T0, T0 + 1000]
        );
        assert_eq!(drops.get(DropReason::FutureTimestamp), 1);
    }

    #[test]
    fn long_gap_in_event_time_is_confirmed_not_dropped() {
        // One vehicle, then 20 minutes of silence, then it reports again.
        let gap_ms = 20 * 60_000;
        let mut probes: Vec<Probe> = (0..5)
            .map(|i| p("a", T0 + i * 1000, 60.0, 24.0 + i as f64 * 1e-5))
            .collect();
        probes
            .extend((0..5).map(|i| p("a", T0 + gap_ms + i * 1000, 60.0, 24.001 + i as f64 * 1e-5)));
        let (out, drops) = run(CleanConfig::default(), vec![probes]);
        assert_eq!(out.len(), 10, "{drops:?}");
        assert_eq!(drops.total(), 0);
    }

    #[test]
    fn a_first_batch_spanning_hours_keeps_its_early_probes() {
        // A whole recorded track in one batch: three hours, one probe a minute.
        let probes: Vec<Probe> = (0..180)
            .map(|i| p("a", T0 + i * 60_000, 60.0, 24.0 + i as f64 * 1e-4))
            .collect();
        let (out, drops) = run(CleanConfig::default(), vec![probes]);
        assert_eq!(out.len(), 180, "{drops:?}");
    }

    #[test]
    fn a_lone_probe_from_1970_does_not_start_event_time() {
        let mut probes = vec![p("a", 1_000, 60.0, 24.0)];
        probes.extend((0..5).map(|i| p("b", T0 + i * 1000, 60.0, 24.0)));
        let (out, drops) = run(CleanConfig::default(), vec![probes]);
        assert_eq!(out.len(), 5);
        assert_eq!(drops.get(DropReason::StaleTimestamp), 1);
    }

    #[test]
    fn stale_timestamps_are_dropped() {
        let (out, drops) = run(
            CleanConfig::default(),
            vec![vec![
                p("a", T0, 60.0, 24.0),
                p("a", T0 + 1000, 60.0, 24.0),
                p("b", T0 - 2 * 3_600_000, 60.0, 24.0),
            ]],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(drops.get(DropReason::StaleTimestamp), 1);
    }

    #[test]
    fn exact_duplicates_are_dropped_before_and_after_release() {
        let a = p("a", T0, 60.0, 24.0);
        let (out, drops) = run(
            CleanConfig::default(),
            vec![
                vec![a.clone(), a.clone()],
                vec![p("b", T0 + 60_000, 60.0, 24.0)],
                vec![a.clone()],
            ],
        );
        assert_eq!(out.len(), 2);
        // The third copy arrives after `a` was released: it is late and a duplicate; the
        // duplicate check against the released anchor wins.
        assert_eq!(drops.get(DropReason::Duplicate), 2);
    }

    #[test]
    fn disorder_inside_the_window_is_reordered_and_later_is_dropped_as_late() {
        let config = CleanConfig {
            reorder_window_ms: 5_000,
            ..CleanConfig::default()
        };
        let (out, drops) = run(
            config,
            vec![
                vec![p("a", T0 + 2000, 60.0, 24.0002), p("a", T0, 60.0, 24.0)],
                vec![p("a", T0 + 1000, 60.0, 24.0001)],
                vec![p("a", T0 + 20_000, 60.0, 24.002)],
                // Behind what was already released: it cannot be put in order any more.
                vec![p("a", T0 + 1500, 60.0, 24.00015)],
                // Behind the vehicle's newest probe, but not behind anything released.
                vec![p("a", T0 + 3000, 60.0, 24.0003)],
            ],
        );
        let ts: Vec<i64> = out.iter().map(|p| p.ts_ms - T0).collect();
        assert_eq!(ts, [0, 1000, 2000, 3000, 20_000]);
        assert_eq!(drops.get(DropReason::Late), 1);
    }

    #[test]
    fn teleports_are_dropped_and_a_persistent_jump_reanchors() {
        // 1 s apart, 1 km away: 1000 m/s.
        let far = 24.0 + 1000.0 / 55_597.0;
        let (out, drops) = run(
            CleanConfig::default(),
            vec![vec![
                p("a", T0, 60.0, 24.0),
                p("a", T0 + 1000, 60.0, far),
                p("a", T0 + 2000, 60.0, 24.0001),
            ]],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(drops.get(DropReason::Teleport), 1);

        let jumps: Vec<Probe> = (1..=5)
            .map(|i| p("b", T0 + i * 1000, 60.0, far + i as f64 * 1e-5))
            .collect();
        let mut input = vec![p("b", T0, 60.0, 24.0)];
        input.extend(jumps);
        let (out, drops) = run(CleanConfig::default(), vec![input]);
        assert_eq!(drops.get(DropReason::Teleport), 3);
        assert_eq!(
            out.len(),
            3,
            "anchor, then the re-anchored probe and its successor"
        );
    }

    #[test]
    fn output_does_not_depend_on_batch_boundaries() {
        let probes: Vec<Probe> = (0..200)
            .map(|i| {
                // Every 7th probe arrives 8 s late: beyond the 5 s window.
                let t = if i % 7 == 3 { i - 8 } else { i };
                p(
                    &format!("v{}", i % 3),
                    T0 + t * 1000,
                    60.0,
                    24.0 + t as f64 * 1e-5,
                )
            })
            .collect();
        let (one, drops_one) = run(CleanConfig::default(), vec![probes.clone()]);
        let (many, drops_many) = run(
            CleanConfig::default(),
            probes.chunks(13).map(|c| c.to_vec()).collect(),
        );
        assert_eq!(one, many);
        assert_eq!(drops_one, drops_many);
        assert!(drops_one.get(DropReason::Late) > 0);
    }

    #[test]
    fn output_is_sorted_by_time_across_vehicles() {
        let (out, _) = run(
            CleanConfig::default(),
            vec![vec![
                p("b", T0 + 1000, 60.0, 24.0),
                p("a", T0, 60.0, 24.0),
                p("a", T0 + 2000, 60.0, 24.0001),
            ]],
        );
        let order: Vec<(&str, i64)> = out
            .iter()
            .map(|p| (p.vehicle_id.as_str(), p.ts_ms - T0))
            .collect();
        assert_eq!(order, [("a", 0), ("b", 1000), ("a", 2000)]);
    }
}
