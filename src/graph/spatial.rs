//! Candidate search for map matching: an R-tree (rstar, bulk-loaded) over every straight
//! piece of every segment, in the graph's local metric projection so distances are metres.

use rstar::primitives::{GeomWithData, Line};
use rstar::RTree;

use super::road_graph::RoadGraph;
use crate::geo::haversine_m;

/// Which straight piece of which segment an R-tree entry is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentPiece {
    /// Segment index in the graph.
    pub segment: u32,
    /// Piece index: the piece runs from geometry point `piece` to `piece + 1`.
    pub piece: u32,
    /// Distance along the segment to the start of the piece, metres (great-circle).
    pub start_offset_m: f64,
    /// Great-circle length of the piece, metres.
    pub length_m: f64,
}

/// One R-tree entry: a piece in projected metres plus where it belongs.
pub type PieceEntry = GeomWithData<Line<[f64; 2]>, SegmentPiece>;

/// A segment near a query point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Segment index in the graph.
    pub segment: u32,
    pub segment_id: u64,
    /// Distance from the query point to the segment, metres (planar, local projection).
    pub distance_m: f64,
    /// Distance along the segment from its start to the snapped point, metres.
    pub offset_m: f64,
    /// The snapped point on the segment.
    pub lat: f64,
    pub lon: f64,
}

/// R-tree over segment pieces. Build it through [`RoadGraph::spatial`].
pub struct SpatialIndex {
    tree: RTree<PieceEntry>,
}

impl SpatialIndex {
    /// Projects every piece of every segment and bulk-loads the tree.
    pub fn build(graph: &RoadGraph) -> SpatialIndex {
        let projection = graph.projection();
        let mut entries = Vec::with_capacity(graph.all_geometry().len());
        for i in graph.indices() {
            let geometry = graph.geometry(i);
            let mut start_offset_m = 0.0;
            let mut prev = projection.project(geometry[0][0], geometry[0][1]);
            for (piece, w) in geometry.windows(2).enumerate() {
                let next = projection.project(w[1][0], w[1][1]);
                let length_m = haversine_m(w[0][0], w[0][1], w[1][0], w[1][1]);
                entries.push(GeomWithData::new(
                    Line::new(prev, next),
                    SegmentPiece {
                        segment: i,
                        piece: piece as u32,
                        start_offset_m,
                        length_m,
                    },
                ));
                start_offset_m += length_m;
                prev = next;
            }
        }
        SpatialIndex {
            tree: RTree::bulk_load(entries),
        }
    }

    /// Number of pieces indexed.
    pub fn len(&self) -> usize {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The underlying tree, for callers that want their own queries (projected metres).
    pub fn tree(&self) -> &RTree<PieceEntry> {
        &self.tree
    }

    /// Fills `out` with up to `k` segments within `radius_m` of (lat, lon): for each segment
    /// its nearest piece only, sorted by distance, then segment id. `out` is cleared first,
    /// so a caller can reuse one buffer across queries.
    pub fn nearest_within(
        &self,
        graph: &RoadGraph,
        lat: f64,
        lon: f64,
        radius_m: f64,
        k: usize,
        out: &mut Vec<Candidate>,
    ) {
        out.clear();
        if k == 0 || radius_m.is_nan() || radius_m < 0.0 {
            return;
        }
        let projection = graph.projection();
        let query = projection.project(lat, lon);
        let max_distance_2 = radius_m * radius_m;
        // The best piece per segment so far.
        let mut best: Vec<(u32, f64, [f64; 2], &PieceEntry)> = Vec::new();
        for entry in self.tree.locate_within_distance(query, max_distance_2) {
            let snapped = entry.geom().nearest_point(&query);
            let distance_2 = distance_2(snapped, query);
            let piece = &entry.data;
            match best.iter_mut().find(|b| b.0 == piece.segment) {
                Some(b)
                    if distance_2 < b.1 || (distance_2 == b.1 && piece.piece < b.3.data.piece) =>
                {
                    *b = (piece.segment, distance_2, snapped, entry)
                }
                Some(_) => {}
                None => best.push((piece.segment, distance_2, snapped, entry)),
            }
        }
        let segments = graph.segments();
        out.extend(
            best.into_iter()
                .map(|(segment, distance_2, snapped, entry)| {
                    let (line, piece) = (entry.geom(), &entry.data);
                    let piece_len_2 = self::distance_2(line.from, line.to);
                    let t = if piece_len_2 > 0.0 {
                        (self::distance_2(snapped, line.from) / piece_len_2)
                            .sqrt()
                            .clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let s = &segments[segment as usize];
                    let (lat, lon) = projection.unproject(snapped);
                    Candidate {
                        segment,
                        segment_id: s.segment_id,
                        distance_m: distance_2.sqrt(),
                        offset_m: (piece.start_offset_m + t * piece.length_m).min(s.length_m),
                        lat,
                        lon,
                    }
                }),
        );
        out.sort_by(|a, b| {
            a.distance_m
                .total_cmp(&b.distance_m)
                .then(a.segment_id.cmp(&b.segment_id))
        });
        out.truncate(k);
    }
}

fn distance_2(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
    dx * dx + dy * dy
}
