//! The stretch of road between two consecutive matched points of a trace, as pieces of
//! segments in travel order, including the segments crossed with no probe on them.

use super::route::{same_segment_direct, Position, Router};
use crate::graph::RoadGraph;

/// A part of one segment travelled between two matched points: from `start_m` to `end_m`
/// along the segment. `end_m < start_m` only for a step back on one segment within the
/// standstill tolerance (GPS noise on a standing vehicle): no distance is travelled
/// ([`Piece::length_m`] is 0), but the point is where it was seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Piece {
    pub segment: u32,
    pub start_m: f64,
    pub end_m: f64,
}

impl Piece {
    /// The distance travelled on the piece (0 for a step back).
    pub fn length_m(&self) -> f64 {
        (self.end_m - self.start_m).max(0.0)
    }
}

/// Scratch for [`pieces_between`]; the pieces end up in `pieces`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathBuffers {
    pub between: Vec<u32>,
    pub pieces: Vec<Piece>,
}

/// Fills `buffers.pieces` with the pieces from `from` to `to` along a shortest route no longer than
/// `route_m` (the distance the lattice chose, plus a small tolerance). False when no such
/// route exists (the caller then ends the trace).
pub fn pieces_between(
    graph: &RoadGraph,
    router: &mut Router,
    from: Position,
    to: Position,
    route_m: f64,
    standstill_m: f64,
    buffers: &mut PathBuffers,
) -> bool {
    let PathBuffers {
        between,
        pieces: out,
    } = buffers;
    out.clear();
    if from.segment == to.segment && same_segment_direct(from.offset_m, to.offset_m, standstill_m) {
        out.push(Piece {
            segment: from.segment,
            start_m: from.offset_m,
            end_m: to.offset_m,
        });
        return true;
    }
    let from_len_m = graph.segment(from.segment).length_m;
    let exit_m = (from_len_m - from.offset_m).max(0.0);
    let tolerance_m = 1e-6 * route_m.abs() + 1e-6;
    let bound_m = route_m - exit_m - to.offset_m + tolerance_m;
    if !router.path(graph, from.segment, to.segment, bound_m.max(0.0), between) {
        return false;
    }
    out.push(Piece {
        segment: from.segment,
        start_m: from.offset_m.min(from_len_m),
        end_m: from_len_m,
    });
    out.extend(between.iter().map(|&s| Piece {
        segment: s,
        start_m: 0.0,
        end_m: graph.segment(s).length_m,
    }));
    out.push(Piece {
        segment: to.segment,
        start_m: 0.0,
        end_m: to.offset_m.max(0.0),
    });
    true
}
