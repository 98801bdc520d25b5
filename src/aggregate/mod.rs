//! Event-time windowed speed estimation per road segment: pure code, no I/O, no async.
//!
//! [`Aggregator`] folds each [`SegmentObservation`] once into the fixed-size
//! [`state::WindowState`] of every window it falls in (an observation's event time is the
//! middle of its traversal), and emits [`SegmentSpeed`] rows when the watermark passes a
//! window's end. Nothing is ever rescanned: a window's state is dropped as a whole once the
//! watermark is `allowed_lateness_ms` past its end. In between, a late observation updates
//! the state and the window is emitted again as a revision (consumers upsert on
//! (segment_id, window_start_ms, estimator)), or, if the state did not meet the publication
//! rule when its window closed and now does, emitted for the first time (revision 0;
//! [`AggregateStats`] counts the three kinds of emission apart). Anything later is counted
//! and handed back to the caller as late.
//!
//! `push` decides at once whether an observation is valid and which windows take it (lateness
//! is judged against the watermark of the last advance), but folds it later, in batches
//! ([`table`] explains why): when a few thousand are pending and at the start of every
//! `advance` and `flush_all`, so everything observable through the outputs is as if each
//! observation had been folded in `push`. Per window, states live in a chunked arena (no
//! reallocation, so no doubling slack) behind an open-addressing segment-id → slot index;
//! `state_bytes` counts both, the pending buffer, and the remembered observation ids.
//!
//! **Effectively-once counts.** Upstream stages deliver at least once: after a crash they
//! emit observations again. `push` remembers the `observation_id` of every observation it
//! takes ([`dedupe`] says for how long, and what it costs) and drops a later one with the
//! same id and exit time as [`Rejection::Duplicate`], even when it falls in other windows
//! (a `PARTIAL_START` re-version, re-matched from a replayed probe, enters later): the first
//! version seen is the one folded. So every window's samples and vehicles count each
//! traversal once, the publication rule (`min_samples`, `min_vehicles`) is never met
//! because of duplicates, and rows re-emitted after a duplicate arrives carry the values
//! of the first emission.

pub mod config;
mod dedupe;
pub mod state;
mod table;
pub mod watermark;
pub mod window;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

pub use config::{AggregateConfig, EstimatorConfig, EstimatorKind};
use dedupe::SeenIds;
use state::{Sample, Summary, WindowState};
use table::{hash_of, SegmentTable, Spare};
use watermark::Watermark;
use window::WindowSpec;

use crate::graph::RoadGraph;
use crate::record::{observation_flags, SegmentObservation, SegmentSpeed};

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
    /// Re-read after a restart or rebalance: every window it belongs to had been emitted for
    /// good by the input's previous reader (see [`Aggregator::expect_input`]).
    AlreadyEmitted,
    /// Flagged `PARTIAL_START`: the first segment of a trace, whose entry nobody saw. Not
    /// counted, because it is not reproducible: after a restart, assign re-matches each
    /// vehicle from a replayed probe, with no context before it, and the first segment it
    /// emits may be a version of a traversal already taken or one the first run never had
    /// (see ARCHITECTURE.md, "Crash-exact"). Speeds come from traversals seen entered.
    PartialStart,
    /// Delivered again: an observation with the same `observation_id` and exit time was
    /// taken before (by this aggregator, from the same input, while a duplicate could still
    /// be accepted), whatever windows this one falls in.
    Duplicate,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid_observation",
            Rejection::UnknownSegment => "unknown_segment",
            Rejection::Late => "late",
            Rejection::AlreadyEmitted => "already_emitted",
            Rejection::Duplicate => "duplicate",
            Rejection::PartialStart => "partial_start",
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
    /// Observations re-read after a restart whose windows were already finalized.
    pub already_emitted: u64,
    /// Observations delivered again (same id as one taken before), dropped.
    pub duplicate: u64,
    /// `PARTIAL_START` observations, not counted (see [`Rejection::PartialStart`]).
    pub partial_start: u64,
    /// Rows emitted when their window closed (`revision` 0).
    pub rows_first: u64,
    /// Rows of a state published for the first time after its window closed, because late
    /// data made it meet the publication rule (`revision` 0, like `rows_first`).
    pub rows_first_after_close: u64,
    /// Rows re-publishing a state already published, after late data (`revision` > 0).
    pub rows_revised: u64,
    /// Segment-windows closed by the watermark (or by the final flush).
    pub windows_closed: u64,
}

/// Observations accepted into all windows but not folded yet, beyond which `push` folds them
/// (so the pending buffer stays in cache); `advance` and `flush_all` fold them all first.
const FOLD_BATCH: usize = 4096;

/// How far ahead of the fold the index line (first) and the arena entry (then) of an
/// observation are prefetched.
const INDEX_AHEAD: usize = 16;
const ENTRY_AHEAD: usize = 8;
const RING: usize = 16;

/// An accepted observation waiting to be folded into one window.
#[derive(Debug, Clone, Copy)]
struct Pending {
    start_ms: i64,
    segment_id: u64,
    sample: Sample,
}

/// The states of one window.
#[derive(Default)]
struct WindowSlot {
    table: SegmentTable,
    /// The watermark has passed the window's end and its rows were emitted.
    closed: bool,
}

impl WindowSlot {
    /// Folds pending observations of this window in arrival order (the state is the same as
    /// folding each in `push`), noting the states of a closed window that become dirty. Lookups are
    /// pipelined: the index line of observation i + [`INDEX_AHEAD`] and the arena entry of
    /// observation i + [`ENTRY_AHEAD`] are prefetched while observation i is folded, so the
    /// cache misses of a window that does not fit in cache overlap.
    fn fold(&mut self, pending: &[Pending], dirty: &mut Vec<(i64, u64, u32)>, spare: &mut Spare) {
        const NONE: u32 = u32::MAX;
        let table = &mut self.table;
        let mut guesses = [NONE; RING];
        for (i, p) in pending.iter().enumerate() {
            if let Some(ahead) = pending.get(i + INDEX_AHEAD) {
                table.prefetch_bucket(hash_of(ahead.segment_id));
            }
            if let Some(ahead) = pending.get(i + ENTRY_AHEAD) {
                let guess = table.candidate(hash_of(ahead.segment_id)).unwrap_or(NONE);
                if guess != NONE {
                    table.prefetch_entry(guess);
                }
                guesses[(i + ENTRY_AHEAD) % RING] = guess;
            }
            let guess = std::mem::replace(&mut guesses[i % RING], NONE);
            let slot = if guess != NONE && table.entry(guess).segment_id == p.segment_id {
                guess
            } else {
                table.find_or_insert(p.segment_id, hash_of(p.segment_id), spare)
            };
            let state = &mut table.entry_mut(slot).state;
            state.add(p.sample);
            if self.closed && !state.is_dirty() {
                state.set_dirty(true);
                dirty.push((p.start_ms, p.segment_id, slot));
            }
        }
    }
}

/// An estimator after config defaults.
#[derive(Debug, Clone)]
struct Estimator {
    name: &'static str,
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
    /// Accepted observations not folded yet, in arrival order.
    pending: Vec<Pending>,
    /// Whether `pending` holds more than one window.
    pending_mixed: bool,
    /// The pending observations of one window, when `pending` holds a few.
    fold_scratch: Vec<Pending>,
    /// The window `push` last queued for, known to exist (reset when windows are dropped).
    last_start_ms: Option<i64>,
    /// The slide-aligned bucket of the last event time pushed, [start, start + slide): in-order
    /// input stays in it, so `push` divides only when it leaves (two 64-bit divisions per
    /// observation were a measurable share of `push`).
    last_bucket_ms: Option<i64>,
    /// Windows each instant belongs to: size / slide.
    windows_per_instant: i64,
    /// Allocations of dropped windows, for the next ones.
    spare: Spare,
    /// Emission scratch: the (segment id, slot) order of a closing window, and its sort.
    emit_order: Vec<(u64, u32)>,
    sort_scratch: table::SortScratch,
    /// `pending` at which `push` folds (tests set 1 to fold each observation at once).
    fold_batch: usize,
    /// Per input, the window start before which its previous reader finalized everything
    /// (see [`Aggregator::expect_input`]); empty unless a source announced one.
    input_floors: Vec<(u32, i64)>,
    /// The ids of the observations taken, until a duplicate of them would be late.
    seen: SeenIds,
    stats: AggregateStats,
}

impl<C: SegmentCatalog> Aggregator<C> {
    /// Builds an aggregator from a validated config.
    pub fn new(config: &AggregateConfig, catalog: C) -> Self {
        let estimators = config
            .estimators
            .iter()
            .map(|e| Estimator {
                name: intern_name(e.name()),
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
            pending: Vec::new(),
            pending_mixed: false,
            fold_scratch: Vec::new(),
            last_start_ms: None,
            last_bucket_ms: None,
            windows_per_instant: spec.windows_per_instant(),
            spare: Spare::default(),
            emit_order: Vec::new(),
            sort_scratch: table::SortScratch::default(),
            fold_batch: FOLD_BATCH,
            input_floors: Vec::new(),
            seen: SeenIds::default(),
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

    /// The start of the oldest window held (epoch ms): open, or closed but still taking
    /// late data within the allowed lateness; `None` when none is held. An observation whose
    /// event time is before it feeds no window that can still be emitted or revised: this is
    /// what an at-least-once source may commit up to (ARCHITECTURE.md, "Delivery, recovery,
    /// determinism"). Closed windows count, because a revision must hold all of the window's
    /// data: after a restart from the committed offset, every window held here is rebuilt
    /// whole (and re-emitted with the same values), never from its tail alone.
    pub fn oldest_window_start_ms(&self) -> Option<i64> {
        self.windows.keys().next().copied()
    }

    /// Announces input `input` (a partition assigned to this instance) before its first
    /// observation, so the watermark waits for it (see [`Watermark::expect_input`]).
    /// `finalized_before_ms` is what the input's previous reader had emitted for good (see
    /// [`Aggregator::finalized_before_ms`], kept with its commit): observations of this
    /// input whose windows all start before it are skipped (counted as already emitted), so
    /// re-read records cannot publish a finalized window again from a part of its data.
    pub fn expect_input(&mut self, input: u32, now_ms: i64, finalized_before_ms: Option<i64>) {
        self.watermark.expect_input(input, now_ms);
        self.input_floors.retain(|&(i, _)| i != input);
        if let Some(floor_ms) = finalized_before_ms {
            self.input_floors.push((input, floor_ms));
        }
    }

    /// The start before which every window is finalized: closed and past its allowed
    /// lateness, so no observation can change it again here (`i64::MIN` before any input).
    pub fn finalized_before_ms(&self) -> i64 {
        let watermark_ms = self.watermark.value_ms();
        if watermark_ms == i64::MIN {
            return i64::MIN;
        }
        // A window expires once the watermark reaches start + size + lateness.
        watermark_ms
            .saturating_sub(self.spec.size_ms)
            .saturating_sub(self.allowed_lateness_ms)
            .saturating_add(1)
    }

    /// The event-time frontier of the sources upstream moved (see [`Watermark::set_frontier`]).
    pub fn set_frontier(&mut self, frontier_ms: i64, caught_up: bool) {
        self.watermark.set_frontier(frontier_ms, caught_up);
    }

    /// Forgets input `input` (a partition revoked from this instance) and the state of every
    /// segment `of_input` picks, in every window: the partition's new owner rebuilds those
    /// windows from the stream, and rows from both owners would conflict. Returns the
    /// segment-windows dropped. The input's remembered observation ids go too: should it
    /// come back, what is read again from it is folded again.
    pub fn remove_input(&mut self, input: u32, of_input: impl Fn(u64) -> bool) -> usize {
        self.fold_all();
        self.watermark.remove_input(input);
        self.input_floors.retain(|&(i, _)| i != input);
        self.seen.remove_input(input);
        let mut dropped = 0;
        for slot in self.windows.values_mut() {
            let before = slot.table.len();
            let kept = slot.table.without(&of_input, &mut self.spare);
            dropped += before - kept.len();
            self.spare.recycle(std::mem::replace(&mut slot.table, kept));
        }
        // Dirty marks point at old slots: keep those of surviving segments, at their new slots.
        let windows = &self.windows;
        self.dirty.retain_mut(|(start_ms, segment_id, slot)| {
            let found = windows
                .get(start_ms)
                .and_then(|w| w.table.find(*segment_id, hash_of(*segment_id)));
            if let Some(new_slot) = found {
                *slot = new_slot;
            }
            found.is_some()
        });
        dropped
    }

    /// Open segment-windows (states held in memory).
    pub fn open_windows(&self) -> usize {
        let folded: usize = self.windows.values().map(|w| w.table.len()).sum();
        // Pending observations of segments without a state yet, once per (window, segment).
        let mut new: Vec<(i64, u64)> = self
            .pending
            .iter()
            .filter(|p| {
                self.windows
                    .get(&p.start_ms)
                    .is_some_and(|w| w.table.find(p.segment_id, hash_of(p.segment_id)).is_none())
            })
            .map(|p| (p.start_ms, p.segment_id))
            .collect();
        new.sort_unstable();
        new.dedup();
        folded + new.len()
    }

    /// Observation ids remembered for de-duplication (see [`dedupe`]).
    pub fn remembered_ids(&self) -> usize {
        self.seen.len()
    }

    /// The part of [`Aggregator::state_bytes`] that holds the remembered ids.
    pub fn remembered_ids_bytes(&self) -> usize {
        self.seen.bytes()
    }

    /// Heap bytes held by window state (arena chunks, indexes, pending observations, the
    /// allocations kept from dropped windows, and the remembered observation ids).
    pub fn state_bytes(&self) -> usize {
        self.windows
            .values()
            .map(|w| w.table.bytes())
            .sum::<usize>()
            + (self.pending.capacity() + self.fold_scratch.capacity())
                * std::mem::size_of::<Pending>()
            + self.spare.bytes()
            + self.emit_order.capacity() * std::mem::size_of::<(u64, u32)>()
            + self.sort_scratch.bytes()
            + self.seen.bytes()
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
            && within_speed(o.traversed_m, duration_ms, self.max_speed_mps);
        if !valid {
            return Err(Rejection::Invalid);
        }
        if o.flags & observation_flags::PARTIAL_START != 0 {
            return Err(Rejection::PartialStart);
        }
        if self.publisher.catalog.length_m(o.segment_id).is_none() {
            return Err(Rejection::UnknownSegment);
        }
        Ok(Sample {
            traversed_cm: round_non_negative(o.traversed_m * 100.0) as u32,
            duration_ms: duration_ms as u32,
            speed_cmps: round_non_negative(o.speed_mps * 100.0) as u16,
            vehicle_hash: vehicle_hash(&o.vehicle_id),
        })
    }

    /// Folds one observation from input `input` (a partition; 0 for a single input) received
    /// at processing time `now_ms`. Lateness is judged against the watermark as of the last
    /// [`Aggregator::advance`], so the order of observations between two advances does not
    /// matter.
    ///
    /// An observation that some window can still take is checked against the remembered
    /// ids first: a duplicate of one taken before is dropped. Its id is remembered when it
    /// is folded, and also when it is skipped as [`Rejection::AlreadyEmitted`]: its previous
    /// reader most likely folded it before finalizing its windows, and then dropped its
    /// re-versions (later entry, later windows) as duplicates, which this reader must do too.
    /// A late observation is not remembered: nothing took it, so a re-version that some
    /// window can still take is the first version taken.
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
            Rejection::AlreadyEmitted => self.stats.already_emitted += 1,
            Rejection::Duplicate => self.stats.duplicate += 1,
            Rejection::PartialStart => self.stats.partial_start += 1,
        })?;
        let event_ms = Self::event_ms(o);
        let watermark_ms = self.watermark.value_ms();
        let floor_ms = if self.input_floors.is_empty() {
            i64::MIN
        } else {
            self.input_floors
                .iter()
                .find(|&&(i, _)| i == input)
                .map_or(i64::MIN, |&(_, floor_ms)| floor_ms)
        };
        let slide_ms = self.spec.slide_ms.max(1);
        let bucket_ms = match self.last_bucket_ms {
            Some(b)
                if event_ms
                    .checked_sub(b)
                    .is_some_and(|d| (0..slide_ms).contains(&d)) =>
            {
                b
            }
            _ => {
                let b = self.spec.bucket_ms(event_ms);
                self.last_bucket_ms = Some(b);
                b
            }
        };
        // The windows that take it are the latest ones (those expired and those finalized
        // by a previous reader are the earliest): from the `first` of them on, in the order
        // of `WindowSpec::starts_containing`.
        let mut first = None;
        let mut finalized = false;
        for k in (0..self.windows_per_instant).rev() {
            let start_ms = bucket_ms - k * slide_ms;
            let expires_ms = self
                .spec
                .end_ms(start_ms)
                .saturating_add(self.allowed_lateness_ms);
            if watermark_ms >= expires_ms {
                continue;
            }
            if start_ms < floor_ms {
                finalized = true;
                continue;
            }
            first = Some(k);
            break;
        }
        if (first.is_some() || finalized)
            && !self.seen.insert(input, o.exit_ts_ms, o.observation_id)
        {
            // The input is alive, but a duplicate moves no event-time clock: its first
            // version did.
            self.watermark.heard_from(input, now_ms);
            self.stats.duplicate += 1;
            return Err(Rejection::Duplicate);
        }
        if let Some(first) = first {
            for k in (0..=first).rev() {
                let start_ms = bucket_ms - k * slide_ms;
                if self.last_start_ms != Some(start_ms) {
                    self.windows.entry(start_ms).or_default();
                    self.last_start_ms = Some(start_ms);
                }
                if self.pending.first().is_some_and(|p| p.start_ms != start_ms) {
                    self.pending_mixed = true;
                }
                self.pending.push(Pending {
                    start_ms,
                    segment_id: o.segment_id,
                    sample,
                });
            }
        }
        self.watermark.observe(input, event_ms, now_ms);
        if self.pending.len() >= self.fold_batch {
            self.fold_all();
        }
        if first.is_some() {
            self.stats.accepted += 1;
            Ok(())
        } else if finalized {
            self.stats.already_emitted += 1;
            Err(Rejection::AlreadyEmitted)
        } else {
            self.stats.late += 1;
            Err(Rejection::Late)
        }
    }

    /// Advances the watermark to processing time `now_ms`: emits the windows it closes and
    /// the revisions of closed windows updated since, and frees windows past the allowed
    /// lateness.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<SegmentSpeed>) {
        self.fold_all();
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
        while let Some(entry) = self.windows.first_entry() {
            if spec.end_ms(*entry.key()).saturating_add(lateness_ms) > watermark_ms {
                break;
            }
            self.spare.recycle(entry.remove().table);
            self.last_start_ms = None;
        }
        // Ids whose duplicates would be late now: those of exit times whose latest window is
        // gone (or would be, had anything fallen in it).
        self.seen.expire(|exit_ms| {
            spec.end_ms(spec.bucket_ms(exit_ms))
                .saturating_add(lateness_ms)
                <= watermark_ms
        });
    }

    /// End of input: emits every window not yet emitted, and pending revisions, and frees
    /// all state.
    pub fn flush_all(&mut self, out: &mut Vec<SegmentSpeed>) {
        self.fold_all();
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
        self.last_start_ms = None;
        self.seen.clear();
    }

    /// Folds every pending observation into its window, keeping arrival order within each:
    /// in one pass when they all belong to one window; window by window through a scratch
    /// copy when they span a few (e.g. around a window boundary, where event times
    /// interleave); after a stable sort by window when they span many.
    fn fold_all(&mut self) {
        const FEW_WINDOWS: usize = 8;
        let mut pending = std::mem::take(&mut self.pending);
        let mut starts: Vec<i64> = Vec::new();
        if self.pending_mixed {
            for p in &pending {
                if !starts.contains(&p.start_ms) {
                    starts.push(p.start_ms);
                    if starts.len() > FEW_WINDOWS {
                        break;
                    }
                }
            }
        }
        if starts.len() > FEW_WINDOWS {
            pending.sort_by_key(|p| p.start_ms);
        }
        if starts.len() < 2 || starts.len() > FEW_WINDOWS {
            for run in pending.chunk_by(|a, b| a.start_ms == b.start_ms) {
                if let Some(slot) = self.windows.get_mut(&run[0].start_ms) {
                    slot.fold(run, &mut self.dirty, &mut self.spare);
                }
            }
        } else {
            let mut one_window = std::mem::take(&mut self.fold_scratch);
            for start_ms in starts {
                one_window.clear();
                one_window.extend(pending.iter().filter(|p| p.start_ms == start_ms));
                if let Some(slot) = self.windows.get_mut(&start_ms) {
                    slot.fold(&one_window, &mut self.dirty, &mut self.spare);
                }
            }
            one_window.clear();
            self.fold_scratch = one_window;
        }
        pending.clear();
        self.pending = pending;
        self.pending_mixed = false;
    }

    fn close_window(&mut self, start_ms: i64, out: &mut Vec<SegmentSpeed>) {
        let Some(slot) = self.windows.get_mut(&start_ms) else {
            return;
        };
        let mut segments = std::mem::take(&mut self.emit_order);
        segments.clear();
        segments.extend(slot.table.iter());
        self.sort_scratch.sort(&mut segments);
        for (i, &(segment_id, index)) in segments.iter().enumerate() {
            // States are read in segment order, all over the arena: fetch ahead.
            if let Some(&(_, ahead)) = segments.get(i + ENTRY_AHEAD) {
                slot.table.prefetch_entry(ahead);
            }
            let state = &mut slot.table.entry_mut(index).state;
            let rows = self.publisher.rows(segment_id, start_ms, state, out);
            self.stats.rows_first += rows;
            self.stats.windows_closed += 1;
        }
        slot.closed = true;
        self.emit_order = segments;
    }

    fn emit_revisions(&mut self, out: &mut Vec<SegmentSpeed>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        // Emit in (window, segment) order, whatever order the late observations came in.
        dirty.sort_unstable();
        for (start_ms, segment_id, index) in dirty.drain(..) {
            let Some(slot) = self.windows.get_mut(&start_ms) else {
                continue;
            };
            let state = &mut slot.table.entry_mut(index).state;
            state.set_dirty(false);
            // A state that met the publication rule only now is published for the first time
            // (its rows carry revision 0); one published before is revised.
            let published_before = state.emissions() > 0;
            let rows = self.publisher.rows(segment_id, start_ms, state, out);
            if published_before {
                self.stats.rows_revised += rows;
            } else {
                self.stats.rows_first_after_close += rows;
            }
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
                estimator: Cow::Borrowed(e.name),
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

/// The process-wide copy of an estimator name, so rows can borrow it. Names come from
/// config, so the set is small and bounded: each distinct name is allocated once and kept
/// for the life of the process, however many aggregators are built.
pub fn intern_name(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
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

/// `traversed_m / (duration_ms as f64 / 1000.0) <= max_speed_mps`, exactly as that
/// expression evaluates, for a finite `traversed_m >= 0` and `duration_ms > 0`, but with its
/// two dependent divisions only within 1e-9 of the limit. Elsewhere the products decide: their
/// rounding errors (a few 2^-53) cannot move a ratio that far across the limit, for any
/// `max_speed_mps` in the normal range 1e-100..1e100 (outside it, always the divisions).
fn within_speed(traversed_m: f64, duration_ms: i64, max_speed_mps: f64) -> bool {
    let exact = || traversed_m / (duration_ms as f64 / 1000.0) <= max_speed_mps;
    if !(1e-100..=1e100).contains(&max_speed_mps) {
        return exact();
    }
    let distance_mm = traversed_m * 1000.0;
    let limit_mm = max_speed_mps * duration_ms as f64;
    if distance_mm <= limit_mm * (1.0 - 1e-9) {
        true
    } else if distance_mm >= limit_mm * (1.0 + 1e-9) {
        false
    } else {
        exact()
    }
}

/// `x.round()` for a finite `x >= 0`, without a libm call. Below 2^52 the fraction
/// `x - trunc(x)` is exact, so comparing it with 0.5 rounds half away from zero as
/// `f64::round` does; from 2^52 on `x` is whole and comes back unchanged (above 2^64 it comes
/// back as at least 2^64, the same once cast to an integer type).
fn round_non_negative(x: f64) -> f64 {
    let truncated = x as u64 as f64;
    if x - truncated >= 0.5 {
        truncated + 1.0
    } else {
        truncated
    }
}

/// A well-mixed 64-bit hash of a vehicle id (FNV-1a, then a SplitMix64 finaliser), whose top
/// bits pick the vehicle's bit in the distinct-vehicle bitmap.
fn vehicle_hash(vehicle_id: &str) -> u64 {
    let mut z = crate::graph::id::fnv1a64(vehicle_id.as_bytes());
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Every segment below 1 << 40 is known, 100 m long.
    struct Known;

    impl SegmentCatalog for Known {
        fn length_m(&self, segment_id: u64) -> Option<f64> {
            (segment_id < 1 << 40).then_some(100.0)
        }
        fn version(&self) -> u64 {
            3
        }
    }

    /// A stream with thousands of segments (so window tables grow and are recycled), one hot
    /// segment, clustered ids, out-of-order and late observations, and invalid ones.
    fn stream(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<SegmentObservation> {
        (0..n)
            .map(|i| {
                let segment_id = match rng.random_range(0..10) {
                    0 => 42,
                    1 => rng.random_range(0..50),
                    2 => 1 << 41,
                    _ => rng.random_range(0..6_000u64).wrapping_mul(0x9E37_79B9) % (1 << 40),
                };
                let jitter_ms = if rng.random_bool(0.02) {
                    rng.random_range(0..400_000)
                } else {
                    rng.random_range(0..20_000)
                };
                let mid_ms = 1_000_000 + i as i64 * 40 - jitter_ms;
                let speed_mps = if rng.random_bool(0.01) {
                    -1.0
                } else {
                    rng.random_range(0.5..45.0)
                };
                let duration_ms = rng.random_range(1_000..30_000);
                SegmentObservation {
                    observation_id: i as u64,
                    segment_id,
                    vehicle_id: format!("v{}", rng.random_range(0..500)),
                    enter_ts_ms: mid_ms - duration_ms / 2,
                    exit_ts_ms: mid_ms - duration_ms / 2 + duration_ms,
                    traversed_m: 100.0,
                    speed_mps,
                    next_segment_id: None,
                    flags: 0,
                }
            })
            .collect()
    }

    fn config(slide_ms: Option<i64>) -> AggregateConfig {
        AggregateConfig {
            window_ms: 60_000,
            slide_ms,
            max_out_of_orderness_ms: 10_000,
            allowed_lateness_ms: 120_000,
            idle_timeout_ms: 0,
            estimators: [
                EstimatorKind::SpaceMean,
                EstimatorKind::Median,
                EstimatorKind::TrimmedMean,
            ]
            .into_iter()
            .map(|kind| EstimatorConfig {
                kind,
                name: None,
                trim_fraction: None,
                min_samples: None,
                min_vehicles: Some(2),
            })
            .collect(),
            ..AggregateConfig::default()
        }
    }

    type Observed = (
        Vec<SegmentSpeed>,
        Vec<Result<(), Rejection>>,
        Vec<(AggregateStats, usize)>,
    );

    /// Everything observable: rows, push results, stats and open windows after each batch.
    fn run(
        observations: &[SegmentObservation],
        batches: &[usize],
        config: &AggregateConfig,
        fold_batch: usize,
    ) -> Observed {
        let mut agg = Aggregator::new(config, Known);
        agg.fold_batch = fold_batch;
        let (mut out, mut results, mut checkpoints) = (Vec::new(), Vec::new(), Vec::new());
        let mut rest = observations;
        for &size in batches.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            for o in batch {
                results.push(agg.push(o, 0, 0));
            }
            let open_before_fold = agg.open_windows();
            agg.advance(0, &mut out);
            checkpoints.push((*agg.stats(), open_before_fold));
            assert!(agg.pending.is_empty());
        }
        agg.flush_all(&mut out);
        checkpoints.push((*agg.stats(), agg.open_windows()));
        (out, results, checkpoints)
    }

    /// A 10 s traversal of 100 m of `segment_id` centred on `mid_ms`, with the id of that
    /// traversal (vehicle, segment, exit time).
    fn obs(segment_id: u64, mid_ms: i64, vehicle: &str) -> SegmentObservation {
        let exit_ts_ms = mid_ms + 5_000;
        SegmentObservation {
            observation_id: crate::matching::observations::observation_id(
                vehicle, segment_id, exit_ts_ms,
            ),
            segment_id,
            vehicle_id: vehicle.to_string(),
            enter_ts_ms: mid_ms - 5_000,
            exit_ts_ms,
            traversed_m: 100.0,
            speed_mps: 10.0,
            next_segment_id: None,
            flags: 0,
        }
    }

    /// `o` re-matched from a replayed probe: the same traversal (id, exit time), entered
    /// `later_ms` later, so over less distance and at another speed.
    fn partial_start(o: &SegmentObservation, later_ms: i64) -> SegmentObservation {
        let enter_ts_ms = o.enter_ts_ms + later_ms;
        let traversed_m = o.traversed_m / 3.0;
        SegmentObservation {
            enter_ts_ms,
            traversed_m,
            speed_mps: traversed_m / ((o.exit_ts_ms - enter_ts_ms) as f64 / 1000.0),
            flags: crate::record::observation_flags::PARTIAL_START,
            ..o.clone()
        }
    }

    #[test]
    fn an_observation_delivered_twice_gives_the_rows_of_delivering_it_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        for slide_ms in [None, Some(20_000)] {
            let config = config(slide_ms);
            let observations = stream(&mut rng, 30_000);
            let deliver = |again: bool| {
                let mut agg = Aggregator::new(&config, Known);
                let mut out = Vec::new();
                let mut previous: &[SegmentObservation] = &[];
                for batch in observations.chunks(1_000) {
                    for o in batch {
                        let _ = agg.push(o, 0, 0);
                    }
                    if again {
                        // Within the batch, and the whole previous batch after an advance,
                        // as an upstream stage replaying after a restart.
                        for o in batch.iter().step_by(3).chain(previous) {
                            let _ = agg.push(o, 0, 0);
                        }
                    }
                    agg.advance(0, &mut out);
                    previous = batch;
                }
                agg.flush_all(&mut out);
                (out, *agg.stats())
            };
            let (once, once_stats) = deliver(false);
            let (twice, twice_stats) = deliver(true);
            assert_eq!(twice, once);
            assert_eq!(twice_stats.accepted, once_stats.accepted);
            assert_eq!(once_stats.duplicate, 0);
            assert!(twice_stats.duplicate > 20_000, "{twice_stats:?}");
            assert!(once.len() > 5_000, "{}", once.len());
        }
    }

    #[test]
    fn a_partial_start_re_version_in_another_window_after_the_full_one_changes_nothing() {
        let full = SegmentObservation {
            enter_ts_ms: 40_000,
            exit_ts_ms: 70_000,
            traversed_m: 100.0,
            speed_mps: 100.0 / 30.0,
            ..obs(1, 0, "a")
        };
        let again = partial_start(&full, 22_000);
        assert_eq!(Aggregator::<Known>::event_ms(&full) / 60_000, 0);
        assert_eq!(Aggregator::<Known>::event_ms(&again) / 60_000, 1);
        assert_ne!(again.speed_mps, full.speed_mps);
        let others = [
            obs(1, 30_000, "b"),
            obs(1, 70_000, "c"),
            obs(1, 80_000, "d"),
        ];
        let run = |re_versions: &[SegmentObservation]| {
            let mut agg = Aggregator::new(&config(None), Known);
            let mut out = Vec::new();
            for o in others.iter().chain([&full]) {
                assert_eq!(agg.push(o, 0, 0), Ok(()));
            }
            agg.advance(0, &mut out);
            for o in re_versions {
                let rejected = agg.push(o, 0, 0);
                assert!(
                    matches!(
                        rejected,
                        Err(Rejection::Duplicate | Rejection::PartialStart)
                    ),
                    "{rejected:?}"
                );
            }
            agg.advance(0, &mut out);
            agg.flush_all(&mut out);
            (out, agg.stats().duplicate + agg.stats().partial_start)
        };
        let (want, _) = run(&[]);
        assert_eq!(want.len(), 6, "both windows published: {want:?}");
        // The re-version twice, and the full one again.
        let (got, duplicates) = run(&[again.clone(), again, full.clone()]);
        assert_eq!(got, want);
        assert_eq!(duplicates, 3);
    }

    #[test]
    fn two_vehicles_and_a_duplicate_do_not_meet_min_samples_3() {
        let mut config = config(None);
        for e in &mut config.estimators {
            e.min_samples = Some(3);
        }
        let rows = |observations: &[SegmentObservation]| {
            let mut agg = Aggregator::new(&config, Known);
            let mut out = Vec::new();
            for o in observations {
                let _ = agg.push(o, 0, 0);
            }
            agg.flush_all(&mut out);
            out
        };
        let (a, b) = (obs(5, 20_000, "a"), obs(5, 30_000, "b"));
        assert_eq!(rows(&[a.clone(), b.clone(), a.clone()]), vec![]);
        assert_eq!(
            rows(&[a.clone(), b.clone(), partial_start(&a, 3_000)]),
            vec![]
        );
        let published = rows(&[a, b, obs(5, 40_000, "c")]);
        assert!(published.iter().all(|r| r.samples == 3 && r.vehicles == 3));
        assert_eq!(published.len(), 3);
    }

    #[test]
    fn remembered_ids_stay_bounded_on_a_long_stream_and_expire_with_the_watermark() {
        let config = AggregateConfig {
            idle_timeout_ms: 1_000,
            ..config(Some(20_000))
        };
        let mut agg = Aggregator::new(&config, Known);
        let mut out = Vec::new();
        // 20 observations per second of event time for 3 hours, each delivered twice.
        let per_s = 20;
        // Window 60 s + lateness 120 s + bound 10 s + a slide of 20 s, and a batch.
        let bound = per_s * (60 + 120 + 10 + 20) + 2_000;
        let mut most = 0;
        for second in 0..3 * 3_600 {
            for k in 0..per_s {
                let o = obs(k as u64, second * 1_000 + k * 50, &format!("v{k}"));
                assert_eq!(agg.push(&o, 0, 0), Ok(()));
                assert_eq!(agg.push(&o, 0, 0), Err(Rejection::Duplicate));
            }
            if second % 100 == 0 {
                agg.advance(0, &mut out);
                out.clear();
                most = most.max(agg.remembered_ids());
            }
        }
        assert!(most > per_s as usize * 180, "{most}");
        assert!(
            most <= bound as usize,
            "{most} ids remembered, bound {bound}"
        );
        let with_ids = agg.state_bytes();
        // Every input idle: the watermark moves on with processing time.
        agg.advance(1_000_000_000, &mut out);
        assert_eq!(agg.remembered_ids(), 0);
        assert_eq!(agg.open_windows(), 0);
        assert!(agg.state_bytes() < with_ids);
    }

    #[test]
    fn a_revoked_input_that_comes_back_folds_what_is_read_again() {
        let mut agg = Aggregator::new(&config(None), Known);
        let (a, b) = (obs(1, 10_000, "a"), obs(1, 20_000, "b"));
        for o in [&a, &b] {
            assert_eq!(agg.push(o, 3, 0), Ok(()));
        }
        assert_eq!(agg.remembered_ids(), 2);
        agg.remove_input(3, |_| true);
        assert_eq!(agg.remembered_ids(), 0);
        agg.expect_input(3, 0, None);
        for o in [&a, &b] {
            assert_eq!(agg.push(o, 3, 0), Ok(()));
        }
        let mut out = Vec::new();
        agg.flush_all(&mut out);
        assert!(
            !out.is_empty() && out.iter().all(|r| r.samples == 2),
            "{out:?}"
        );
    }

    /// Guards the restart path: an observation skipped as already emitted is remembered, and
    /// its re-version in a window after the floor is not counted either (a re-match's
    /// re-version is always a `PARTIAL_START`).
    #[test]
    fn a_re_version_of_an_already_emitted_observation_is_not_counted() {
        let mut agg = Aggregator::new(&config(None), Known);
        agg.expect_input(0, 0, Some(60_000));
        let full = SegmentObservation {
            enter_ts_ms: 40_000,
            exit_ts_ms: 70_000,
            ..obs(1, 0, "a")
        };
        assert_eq!(agg.push(&full, 0, 0), Err(Rejection::AlreadyEmitted));
        assert_eq!(
            agg.push(&partial_start(&full, 22_000), 0, 0),
            Err(Rejection::PartialStart)
        );
        assert_eq!(
            agg.push(
                &SegmentObservation {
                    flags: 0,
                    ..partial_start(&full, 22_000)
                },
                0,
                0
            ),
            Err(Rejection::Duplicate)
        );
        assert_eq!(agg.push(&obs(2, 400_000, "b"), 0, 0), Ok(()));
        assert_eq!(agg.remembered_ids(), 2);
        // The watermark passes the exit bucket of the first: forgotten. A late observation
        // is not remembered: nothing took it.
        agg.advance(0, &mut Vec::new());
        assert_eq!(agg.push(&obs(3, 130_000, "c"), 0, 0), Err(Rejection::Late));
        assert_eq!(agg.remembered_ids(), 1);
        let stats = agg.stats();
        assert_eq!(
            (stats.already_emitted, stats.duplicate, stats.late),
            (1, 1, 1)
        );
    }

    #[test]
    fn removing_an_input_drops_its_segments_windows_and_pending_revisions_only() {
        let mut agg = Aggregator::new(&config(None), Known);
        let mut out = Vec::new();
        for (segment_id, input) in [(1, 0), (2, 1)] {
            for v in ["a", "b"] {
                assert_eq!(agg.push(&obs(segment_id, 10_000, v), input, 0), Ok(()));
            }
        }
        // Close the first window on both inputs; then a late pair for each segment (pending
        // revisions) and a pair in the next, open window.
        for input in [0, 1] {
            assert_eq!(agg.push(&obs(1, 75_000, "c"), input, 0), Ok(()));
        }
        agg.advance(0, &mut out);
        assert_eq!(out.iter().filter(|r| r.window_start_ms == 0).count(), 6);
        out.clear();
        for (segment_id, input) in [(1, 0), (2, 1)] {
            for v in ["d", "e"] {
                assert_eq!(agg.push(&obs(segment_id, 20_000, v), input, 0), Ok(()));
                assert_eq!(agg.push(&obs(segment_id, 70_000, v), input, 0), Ok(()));
            }
        }
        let held = agg.open_windows();
        assert_eq!(agg.remove_input(1, |segment_id| segment_id == 2), 2);
        assert_eq!(agg.open_windows(), held - 2);
        agg.flush_all(&mut out);
        assert!(out.iter().all(|r| r.segment_id == 1), "{out:?}");
        assert_eq!(
            out.len(),
            6,
            "the revision of window 0 and window 60 s: {out:?}"
        );
    }

    /// Guards the emission counts against rows: a state published for the first time after
    /// its window closed carries revision 0 and must not be counted as a revision.
    #[test]
    fn a_window_first_published_after_its_close_counts_as_first_after_close_not_revision() {
        // Publication rule: 2 samples (from any vehicles), for each of the 3 estimators.
        let mut config = AggregateConfig {
            min_samples: 2,
            ..config(None)
        };
        for e in &mut config.estimators {
            e.min_vehicles = None;
        }
        let mut agg = Aggregator::new(&config, Known);
        let mut out = Vec::new();
        // Window [0, 60 s): segment 1 has 2 samples, segment 2 only 1.
        for (segment_id, vehicle) in [(1, "a"), (1, "b"), (2, "a")] {
            assert_eq!(agg.push(&obs(segment_id, 20_000, vehicle), 0, 0), Ok(()));
        }
        // Event time 75 s, bound 10 s: the watermark reaches 65 s and closes the window.
        assert_eq!(agg.push(&obs(3, 75_000, "a"), 0, 0), Ok(()));
        agg.advance(0, &mut out);
        assert_eq!(out.len(), 3, "segment 1 only: {out:?}");
        assert!(out.iter().all(|r| r.segment_id == 1 && r.revision == 0));
        let stats = *agg.stats();
        assert_eq!(
            (
                stats.rows_first,
                stats.rows_first_after_close,
                stats.rows_revised
            ),
            (3, 0, 0)
        );

        // Late data within the lateness: segment 2 reaches 2 samples and is published for
        // the first time; segment 1 is revised.
        out.clear();
        for segment_id in [1, 2] {
            assert_eq!(agg.push(&obs(segment_id, 30_000, "c"), 0, 0), Ok(()));
        }
        agg.advance(0, &mut out);
        let rows_of = |out: &[SegmentSpeed], segment_id: u64| -> Vec<u32> {
            out.iter()
                .filter(|r| r.segment_id == segment_id && r.window_start_ms == 0)
                .map(|r| r.revision)
                .collect()
        };
        assert_eq!(rows_of(&out, 1), vec![1; 3]);
        assert_eq!(rows_of(&out, 2), vec![0; 3]);
        let stats = *agg.stats();
        assert_eq!(
            (
                stats.rows_first,
                stats.rows_first_after_close,
                stats.rows_revised
            ),
            (3, 3, 3)
        );

        // More late data for segment 2: now it is a revision.
        out.clear();
        assert_eq!(agg.push(&obs(2, 40_000, "d"), 0, 0), Ok(()));
        agg.advance(0, &mut out);
        assert_eq!(rows_of(&out, 2), vec![1; 3]);
        let stats = *agg.stats();
        assert_eq!(
            (
                stats.rows_first,
                stats.rows_first_after_close,
                stats.rows_revised
            ),
            (3, 3, 6)
        );
    }

    #[test]
    fn speed_limit_without_divisions_matches_the_divisions() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let exact = |t: f64, d: i64, m: f64| t / (d as f64 / 1000.0) <= m;
        for _ in 0..200_000 {
            let m = match rng.random_range(0..4) {
                0 => rng.random_range(1e-3..600.0),
                1 => 70.0,
                2 => 10f64.powi(rng.random_range(-120..120)),
                _ => [0.0, -1.0, f64::INFINITY, f64::NAN, f64::MIN_POSITIVE / 8.0]
                    [rng.random_range(0..5)],
            };
            let d = match rng.random_range(0..3) {
                0 => rng.random_range(1..100),
                1 => rng.random_range(1..100_000),
                _ => rng.random_range(1..=i64::from(u32::MAX)),
            };
            // At the limit, a few ulps either side, or anywhere.
            let at_limit = m * (d as f64 / 1000.0);
            let t = match rng.random_range(0..3) {
                0 if at_limit.is_finite() && at_limit >= 0.0 => {
                    let bits = at_limit.to_bits() as i64 + rng.random_range(-4..=4);
                    f64::from_bits(bits.max(0) as u64)
                }
                1 => rng.random_range(0.0..1.0e6),
                _ => rng.random_range(0.0..2.0) * at_limit.abs().min(1.0e6),
            };
            if !(t.is_finite() && t >= 0.0) {
                continue;
            }
            assert_eq!(
                within_speed(t, d, m),
                exact(t, d, m),
                "{t} m in {d} ms, max {m}"
            );
        }
    }

    #[test]
    fn rounding_without_libm_matches_f64_round() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let edges = [
            0.0,
            0.5,
            1.5,
            2.5,
            0.499_999_999_999_999_94,
            4_503_599_627_370_495.5,
        ];
        let random = (0..100_000).map(|_| rng.random_range(0.0..1.0e7));
        for x in edges.into_iter().chain(random) {
            assert_eq!(round_non_negative(x), x.round(), "{x}");
            assert_eq!(round_non_negative(x) as u16, x.round() as u16, "{x}");
        }
    }

    #[test]
    fn batched_folding_emits_exactly_what_folding_each_observation_at_once_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
        for slide_ms in [None, Some(20_000)] {
            let config = config(slide_ms);
            let observations = stream(&mut rng, 60_000);
            let batches: Vec<usize> = (0..50).map(|_| rng.random_range(1..9_000)).collect();
            let one_by_one = run(&observations, &batches, &config, 1);
            for fold_batch in [7, FOLD_BATCH] {
                let batched = run(&observations, &batches, &config, fold_batch);
                assert_eq!(batched.1, one_by_one.1);
                assert_eq!(batched.2, one_by_one.2);
                assert_eq!(batched.0, one_by_one.0);
            }
            let (rows, _, checkpoints) = one_by_one;
            let last = checkpoints.last().map(|c| c.0).unwrap_or_default();
            assert!(rows.len() > 10_000, "{}", rows.len());
            assert!(last.rows_revised > 100, "{last:?}");
            assert!(last.late > 100 && last.invalid > 100, "{last:?}");
            assert!(rows.windows(2).all(|w| {
                (w[0].window_start_ms, w[0].revision) != (w[1].window_start_ms, w[1].revision)
                    || w[0].segment_id <= w[1].segment_id
            }));
        }
    }
}
