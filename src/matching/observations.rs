//! Segment observations from a vehicle's committed points: walks the path between
//! consecutive matched points, interpolates entry and exit times linearly by distance
//! along it, and emits one `SegmentObservation` per traversed segment, flagging the
//! segments where a trace starts or ends (the vehicle was not seen entering or leaving).
//!
//! `GAP` marks an observation whose entry or exit time was interpolated between two
//! consecutive matched points of the trace more than `MatchConfig::gap_flag_ms` apart: the
//! vehicle crossed a segment boundary somewhere in a stretch without probes (a tunnel,
//! unmatched or missing probes, sparse sampling), so when it entered or left, and hence
//! its speed on the segment, comes from the mean speed over the whole stretch. Every segment
//! crossed with no probe on it in such a stretch is flagged, and so are the segments of the
//! two points (one boundary each). A long stretch that stays on one segment crosses no
//! boundary, so nothing is interpolated there and nothing is flagged. A gap long enough to
//! break the trace (`max_gap_ms`, `max_gap_m`) gives `PARTIAL_END` and `PARTIAL_START`
//! instead: no path is inferred across it.
//!
//! `observation_id` names a traversal: FNV-1a 64 over the vehicle id's UTF-8 bytes, then
//! the segment id and the rounded **exit** time as little-endian 8-byte integers, masked to
//! 63 bits (so it fits a signed 64-bit column). Same input, same id, on any machine. The
//! exit, not the entry, because a re-match after a restart (the stream re-read from a
//! committed offset) starts a trace at a replayed probe: the first observation it emits is
//! a `PARTIAL_START` version of a traversal already emitted in full, with a later entry but
//! the same exit, and so the same id. Consumers keep the first version of an id (the
//! aggregate does).

use super::path::Piece;
use crate::graph::RoadGraph;
use crate::record::{observation_flags, SegmentObservation};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The deterministic observation id (see the module docs).
///
/// ```
/// use pipeline::matching::observations::observation_id;
/// let id = observation_id("veh-1", 42, 1_700_000_000_000);
/// assert_eq!(id, observation_id("veh-1", 42, 1_700_000_000_000));
/// assert!(id < 1 << 63);
/// assert_ne!(id, observation_id("veh-2", 42, 1_700_000_000_000));
/// ```
pub fn observation_id(vehicle_id: &str, segment_id: u64, exit_ts_ms: i64) -> u64 {
    let mut h = FNV_OFFSET;
    let (segment, exit) = (segment_id.to_le_bytes(), exit_ts_ms.to_le_bytes());
    let bytes = vehicle_id.as_bytes().iter().chain(&segment).chain(&exit);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h & (u64::MAX >> 1)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Open {
    segment: u32,
    enter_ms: f64,
    /// Offset where the observed part starts (0 when the vehicle entered the segment).
    start_m: f64,
    /// Farthest offset reached: noise that steps back and forth does not add distance.
    reach_m: f64,
    flags: u32,
}

/// The observation being built for one vehicle: the segment it is on since when.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservationBuilder {
    open: Option<Open>,
    last_ts_ms: i64,
    /// Observations dropped because no time passed on them (e.g. a one-point trace).
    pub degenerate: u64,
}

impl ObservationBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A trace starts at (segment, at time ts_ms): the vehicle was not seen entering it.
    pub fn start(&mut self, segment: u32, offset_m: f64, ts_ms: i64) {
        self.open = Some(Open {
            segment,
            enter_ms: ts_ms as f64,
            start_m: offset_m,
            reach_m: offset_m,
            flags: observation_flags::PARTIAL_START,
        });
        self.last_ts_ms = ts_ms;
    }

    /// The vehicle went along `pieces` (the first on the open segment) from the previous
    /// point's time to `to_ms`. Closes an observation at every segment change, and adds
    /// `crossing_flags` to every observation whose entry or exit falls in this stretch
    /// (the caller passes `GAP` when the stretch is a gap in the probes). True when the
    /// observation open afterwards was entered in this stretch.
    pub fn advance(
        &mut self,
        graph: &RoadGraph,
        vehicle_id: &str,
        pieces: &[Piece],
        to_ms: i64,
        crossing_flags: u32,
        out: &mut Vec<SegmentObservation>,
    ) -> bool {
        let from_ms = self.last_ts_ms as f64;
        let total_m: f64 = pieces.iter().map(|p| p.length_m().max(0.0)).sum();
        let span_ms = to_ms as f64 - from_ms;
        let mut entered = self.open.is_none();
        let mut x_m = 0.0;
        for (i, piece) in pieces.iter().enumerate() {
            x_m += piece.length_m().max(0.0);
            let open = self.open.get_or_insert(Open {
                segment: piece.segment,
                enter_ms: from_ms,
                start_m: piece.start_m,
                reach_m: piece.start_m,
                flags: 0,
            });
            open.reach_m = open.reach_m.max(piece.end_m);
            if let Some(next) = pieces.get(i + 1) {
                let at_ms = if total_m > 0.0 {
                    from_ms + span_ms * (x_m / total_m)
                } else {
                    from_ms
                };
                let next_id = graph.segment(next.segment).segment_id;
                self.close(graph, vehicle_id, at_ms, Some(next_id), crossing_flags, out);
                self.open = Some(Open {
                    segment: next.segment,
                    enter_ms: at_ms,
                    start_m: next.start_m,
                    reach_m: next.start_m,
                    flags: crossing_flags,
                });
                entered = true;
            }
        }
        self.last_ts_ms = to_ms;
        entered
    }

    /// The trace ends at the last point: the vehicle was not seen leaving the segment.
    pub fn end(&mut self, graph: &RoadGraph, vehicle_id: &str, out: &mut Vec<SegmentObservation>) {
        let at_ms = self.last_ts_ms as f64;
        self.close(
            graph,
            vehicle_id,
            at_ms,
            None,
            observation_flags::PARTIAL_END,
            out,
        );
    }

    fn close(
        &mut self,
        graph: &RoadGraph,
        vehicle_id: &str,
        exit_ms: f64,
        next_segment_id: Option<u64>,
        extra_flags: u32,
        out: &mut Vec<SegmentObservation>,
    ) {
        let Some(open) = self.open.take() else {
            return;
        };
        let duration_ms = exit_ms - open.enter_ms;
        if duration_ms.is_nan() || duration_ms <= 0.0 {
            self.degenerate += 1;
            return;
        }
        let segment_id = graph.segment(open.segment).segment_id;
        let traversed_m = (open.reach_m - open.start_m).max(0.0);
        let exit_ts_ms = exit_ms.round() as i64;
        out.push(SegmentObservation {
            observation_id: observation_id(vehicle_id, segment_id, exit_ts_ms),
            segment_id,
            vehicle_id: vehicle_id.to_owned(),
            enter_ts_ms: open.enter_ms.round() as i64,
            exit_ts_ms,
            traversed_m,
            speed_mps: traversed_m / (duration_ms / 1000.0),
            next_segment_id,
            flags: open.flags | extra_flags,
        });
    }
}
