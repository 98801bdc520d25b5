//! Event-time windowed speed estimation per road segment: pure code, no I/O, no async.
//!
//! [`Aggregator`] folds each [`SegmentObservation`] once into the fixed-size
//! [`state::WindowState`] of every window it falls in (an observation's event time is the
//! middle of its traversal), and emits [`SegmentSpeed`] rows when the watermark passes a
//! window's end. Nothing is ever rescanned: a window's state is dropped as a whole once the
//! watermark is `allowed_lateness_ms` past its end. In between, a late observation updates
//! the state and the window is emitted again as a revision (consumers upsert on
//! (segment_id, window_start_ms, estimator)). Anything later is counted and handed back to
//! the caller as late.
//!
//! Per window, states live in a chunked arena (no reallocation, so no doubling slack) behind
//! a segment-id → slot map; `state_bytes` counts both.

pub mod config;
pub mod state;
pub mod watermark;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

pub use config::{AggregateConfig, EstimatorConfig, EstimatorKind};
use state::{Sample, Summary, WindowState};
use watermark::Watermark;
use window::WindowSpec;

use crate::graph::RoadGraph;
use crate::record::{SegmentObservation, SegmentSpeed};

/// What the aggregator needs to know of the road graph: segment lengths (for travel times)
/// and the graph version written into every row.
pub trait SegmentCatalog: Send + Sync {
    fn length_m(&self, segment_id: u64) -> Option<f64>;
    fn version(&self) -> u64;
}

impl SegmentCatalog for RoadGraph {
    fn length_m(&self, segment_id: u64) -> Option<f64> {
        self.index_of(segment_id).map(|i| self.segment(i).length_m)
    }
    fn version(&self) -> u64 {
        RoadGraph::version(self)
    }
}

impl<T: SegmentCatalog + ?Sized> SegmentCatalog for std::sync::Arc<T> {
    fn length_m(&self, segment_id: u64) -> Option<f64> {
        (**self).length_m(segment_id)
    }
    fn version(&self) -> u64 {
        (**self).version()
    }
}

/// Why an observation was not folded into any window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A non-finite or negative distance, a non-positive duration, or a speed above
    /// `max_speed_mps`. (A vehicle that stood still on a segment, 0 m in 10 s, is valid: it
    /// is time spent on the segment, and counts in the space mean.)
    Invalid,
    /// The segment is not in the graph this aggregator was given.
    UnknownSegment,
    /// Every window it belongs to is past the allowed lateness.
    Late,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid_observation",
            Rejection::UnknownSegment => "unknown_segment",
            Rejection::Late => "late",
        }
    }
}

/// Running totals, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AggregateStats {
    pub accepted: u64,
    pub invalid: u64,
    pub unknown_segment: u64,
    pub late: u64,
    /// Rows emitted when their window closed.
    pub rows_first: u64,
    /// Rows emitted as late-data revisions.
    pub rows_revised: u64,
    /// Segment-windows closed by the watermark (or by the final flush).
    pub windows_closed: u64,
}

/// Segment ids are already well-mixed stable hashes; one multiply spreads them over the
/// table without SipHash's cost.
#[derive(Default)]
pub struct SegmentIdHasher(u64);

impl Hasher for SegmentIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SegmentMap = HashMap<u64, u32, BuildHasherDefault<SegmentIdHasher>>;

const CHUNK: usize = 1024;

/// The states of one window.
#[derive(Default)]
struct WindowSlot {
    index: SegmentMap,
    chunks: Vec<Vec<WindowState>>,
    /// The watermark has passed the window's end and its rows were emitted.
    closed: bool,
}

impl WindowSlot {
    fn state_mut(&mut self, segment_id: u64) -> (u32, &mut WindowState) {
        let next = self.index.len() as u32;
        let slot = *self.index.entry(segment_id).or_insert(next);
        if slot == next {
            if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            if let Some(chunk) = self.chunks.last_mut() {
                chunk.push(WindowState::default());
            }
        }
        (slot, self.get_mut(slot))
    }

    fn get_mut(&mut self, slot: u32) -> &mut WindowState {
        let slot = slot as usize;
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> usize {
        let states = self.chunks.len() * CHUNK * std::mem::size_of::<WindowState>();
        // hashbrown: 7/8 of the buckets are usable; one (key, value) pair and one control
        // byte per bucket.
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two();
        let map = buckets * (std::mem::size_of::<(u64, u32)>() + 1);
        states + map
    }
}

/// An estimator after config defaults.
#[derive(Debug, Clone)]
struct Estimator {
    name: String,
    kind: EstimatorKind,
    trim_fraction: f64,
    min_samples: u32,
    min_vehicles: u32,
}

/// Turns states into published rows: the estimators, the publication rule, and the graph
/// facts each row carries.
struct Publisher<C> {
    catalog: C,
    spec: WindowSpec,
    estimators: Vec<Estimator>,
}

/// The windowed aggregation of one stage instance.
pub struct Aggregator<C: SegmentCatalog> {
    publisher: Publisher<C>,
    spec: WindowSpec,
    allowed_lateness_ms: i64,
    max_speed_mps: f64,
    windows: BTreeMap<i64, WindowSlot>,
    watermark: Watermark,
    /// States of closed windows updated since their last emission:
    /// (window start, segment id, slot).
    dirty: Vec<(i64, u64, u32)>,
    stats: AggregateStats,
}

impl<C: SegmentCatalog> Aggregator<C> {
    /// Builds an aggregator from a validated config.
    pub fn new(config: &AggregateConfig, catalog: C) -> Self {
        let estimators = config
            .estimators
            .iter()
            .map(|e| Estimator {
                name: e.name().to_string(),
                kind: e.kind,
                trim_fraction: e.trim_fraction(),
                min_samples: e.min_samples.unwrap_or(config.min_samples),
                min_vehicles: e.min_vehicles.unwrap_or(config.min_vehicles),
            })
            .collect();
        let spec = WindowSpec {
            size_ms: config.window_ms,
            slide_ms: config.slide_ms(),
        };
        Self {
            publisher: Publisher {
                catalog,
                spec,
                estimators,
            },
            spec,
            allowed_lateness_ms: config.allowed_lateness_ms,
            max_speed_mps: config.max_speed_mps,
            windows: BTreeMap::new(),
            watermark: Watermark::new(config.max_out_of_orderness_ms, config.idle_timeout_ms),
            dirty: Vec::new(),
            stats: AggregateStats::default(),
        }
    }

    pub fn stats(&self) -> &AggregateStats {
        &self.stats
    }

    pub fn watermark_ms(&self) -> i64 {
        self.watermark.value_ms()
    }

    pub fn max_event_ms(&self) -> Option<i64> {
        self.watermark.max_event_ms()
    }

    /// The start of the oldest window not emitted yet (epoch ms), `None` when every window
    /// held has been emitted. An observation whose event time is before it feeds no window
    /// still to come: this is what an at-least-once source may commit up to (DESIGN §3,
    /// "Recovery of aggregate state").
    pub fn oldest_unemitted_ms(&self) -> Option<i64> {
        self.windows
            .iter()
            .find(|(_, slot)| !slot.closed)
            .map(|(&start, _)| start)
    }

    /// Open segment-windows (states held in memory).
    pub fn open_windows(&self) -> usize {
        self.windows.values().map(WindowSlot::len).sum()
    }

    /// Heap bytes held by window state (arena chunks plus the slot maps).
    pub fn state_bytes(&self) -> usize {
        self.windows.values().map(WindowSlot::bytes).sum()
    }

    /// The event time of an observation: the middle of its traversal.
    pub fn event_ms(o: &SegmentObservation) -> i64 {
        o.enter_ts_ms + (o.exit_ts_ms - o.enter_ts_ms) / 2
    }

    fn sample_of(&self, o: &SegmentObservation) -> Result<Sample, Rejection> {
        let duration_ms = o.exit_ts_ms.checked_sub(o.enter_ts_ms).unwrap_or(-1);
        let valid = duration_ms > 0
            && duration_ms <= i64::from(u32::MAX)
            && o.traversed_m.is_finite()
            && o.traversed_m >= 0.0
            && o.traversed_m < 1.0e6
            && o.speed_mps.is_finite()
            && o.speed_mps >= 0.0
            && o.speed_mps <= self.max_speed_mps
            && o.traversed_m / (duration_ms as f64 / 1000.0) <= self.max_speed_mps;
        if !valid {
            return Err(Rejection::Invalid);
        }
        if self.publisher.catalog.length_m(o.segment_id).is_none() {
            return Err(Rejection::UnknownSegment);
        }
        Ok(Sample {
            traversed_cm: (o.traversed_m * 100.0).round() as u32,
            duration_ms: duration_ms as u32,
            speed_cmps: (o.speed_mps * 100.0).round() as u16,
            vehicle_hash: vehicle_hash(&o.vehicle_id),
        })
    }

    /// Folds one observation from input `input` (a partition; 0 for a single input) received
    /// at processing time `now_ms`. Lateness is judged against the watermark as of the last
    /// [`Aggregator::advance`], so the order of observations between two advances does not
    /// matter.
    pub fn push(
        &mut self,
        o: &SegmentObservation,
        input: u32,
        now_ms: i64,
    ) -> Result<(), Rejection> {
        let sample = self.sample_of(o).inspect_err(|r| match r {
            Rejection::Invalid => self.stats.invalid += 1,
            Rejection::UnknownSegment => self.stats.unknown_segment += 1,
            Rejection::Late => self.stats.late += 1,
        })?;
        let event_ms = Self::event_ms(o);
        let watermark_ms = self.watermark.value_ms();
        let mut folded = false;
        for start_ms in self.spec.starts_containing(event_ms) {
            let expires_ms = self
                .spec
                .end_ms(start_ms)
                .saturating_add(self.allowed_lateness_ms);
            if watermark_ms >= expires_ms {
                continue;
            }
            let slot = self.windows.entry(start_ms).or_default();
            let closed = slot.closed;
            let (index, state) = slot.state_mut(o.segment_id);
            state.add(sample);
            if closed && !state.is_dirty() {
                state.set_dirty(true);
                self.dirty.push((start_ms, o.segment_id, index));
            }
            folded = true;
        }
        self.watermark.observe(input, event_ms, now_ms);
        if folded {
            self.stats.accepted += 1;
            Ok(())
        } else {
            self.stats.late += 1;
            Err(Rejection::Late)
        }
    }

    /// Advances the watermark to processing time `now_ms`: emits the windows it closes and
    /// the revisions of closed windows updated since, and frees windows past the allowed
    /// lateness.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<SegmentSpeed>) {
        self.emit_revisions(out);
        let watermark_ms = self.watermark.advance(now_ms);
        let closing: Vec<i64> = self
            .windows
            .iter()
            .take_while(|(&start, _)| self.spec.end_ms(start) <= watermark_ms)
            .filter(|(_, slot)| !slot.closed)
            .map(|(&start, _)| start)
            .collect();
        for start_ms in closing {
            self.close_window(start_ms, out);
        }
        let lateness_ms = self.allowed_lateness_ms;
        let spec = self.spec;
        self.windows
            .retain(|&start, _| spec.end_ms(start).saturating_add(lateness_ms) > watermark_ms);
    }

    /// End of input: emits every window not yet emitted, and pending revisions, and frees
    /// all state.
    pub fn flush_all(&mut self, out: &mut Vec<SegmentSpeed>) {
        self.emit_revisions(out);
        let open: Vec<i64> = self
            .windows
            .iter()
            .filter(|(_, slot)| !slot.closed)
            .map(|(&start, _)| start)
            .collect();
        for start_ms in open {
            self.close_window(start_ms, out);
        }
        self.windows.clear();
    }

    fn close_window(&mut self, start_ms: i64, out: &mut Vec<SegmentSpeed>) {
        let Some(slot) = self.windows.get_mut(&start_ms) else {
            return;
        };
        let mut segments: Vec<(u64, u32)> = slot.index.iter().map(|(&s, &i)| (s, i)).collect();
        segments.sort_unstable();
        for (segment_id, index) in segments {
            let rows = self
                .publisher
                .rows(segment_id, start_ms, slot.get_mut(index), out);
            self.stats.rows_first += rows;
            self.stats.windows_closed += 1;
        }
        slot.closed = true;
    }

    fn emit_revisions(&mut self, out: &mut Vec<SegmentSpeed>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        // Emit in (window, segment) order, whatever order the late observations came in.
        dirty.sort_unstable();
        for (start_ms, segment_id, index) in dirty.drain(..) {
            let Some(slot) = self.windows.get_mut(&start_ms) else {
                continue;
            };
            let state = slot.get_mut(index);
            state.set_dirty(false);
            self.stats.rows_revised += self.publisher.rows(segment_id, start_ms, state, out);
        }
        self.dirty = dirty;
    }
}

impl<C: SegmentCatalog> Publisher<C> {
    /// Appends the published rows of one state, and counts the emission if any row was
    /// published. Returns the number of rows.
    fn rows(
        &self,
        segment_id: u64,
        start_ms: i64,
        state: &mut WindowState,
        out: &mut Vec<SegmentSpeed>,
    ) -> u64 {
        let summary = state.summary();
        let length_m = self.catalog.length_m(segment_id).unwrap_or(f64::NAN);
        let mut rows = 0;
        for e in &self.estimators {
            if summary.samples < e.min_samples || summary.vehicles_lower_bound < e.min_vehicles {
                continue;
            }
            let Some(speed_mps) = estimate(e, &summary, state) else {
                continue;
            };
            out.push(SegmentSpeed {
                segment_id,
                window_start_ms: start_ms,
                window_end_ms: self.spec.end_ms(start_ms),
                estimator: e.name.clone(),
                samples: summary.samples,
                vehicles: summary.vehicles,
                speed_mps,
                p15_speed_mps: Some(summary.p15_mps),
                p50_speed_mps: Some(summary.p50_mps),
                p85_speed_mps: Some(summary.p85_mps),
                travel_time_s: length_m / speed_mps,
                graph_version: self.catalog.version(),
                revision: u32::from(state.emissions()),
            });
            rows += 1;
        }
        if rows > 0 {
            state.record_emission();
        }
        rows
    }
}

/// An estimator's speed for one state: `None` when it has no positive, finite answer.
fn estimate(e: &Estimator, summary: &Summary, state: &WindowState) -> Option<f64> {
    let speed_mps = match e.kind {
        EstimatorKind::SpaceMean => summary.space_mean_mps,
        EstimatorKind::Median => summary.p50_mps,
        EstimatorKind::TrimmedMean => state.trimmed_mean_mps(e.trim_fraction)?,
    };
    (speed_mps.is_finite() && speed_mps > 0.0).then_some(speed_mps)
}

/// A well-mixed 64-bit hash of a vehicle id (FNV-1a, then a SplitMix64 finaliser), whose top
/// bits pick the vehicle's bit in the distinct-vehicle bitmap.
fn vehicle_hash(vehicle_id: &str) -> u64 {
    let mut z = crate::graph::id::fnv1a64(vehicle_id.as_bytes());
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
