//! Candidate search per probe: up to k positions within radius r, from the graph's R-tree
//! of segment pieces, into one reused buffer, with bad coordinates turned away first.
//!
//! Unlike [`crate::graph::SpatialIndex::nearest_within`], which keeps one candidate per
//! segment, a segment may give several: a winding segment (a hairpin, a spiral ramp) can
//! pass near a probe twice, and keeping only the nearer leg snaps the probe tens of metres
//! away along the road, which breaks the route distances of the HMM. A hit is a separate
//! candidate when its offset along the segment differs from every kept hit of that segment
//! by more than the two distances to the probe together (so neighbouring pieces of one
//! pass collapse to their nearest point).

use rstar::PointDistance;

use crate::geo::is_plausible_coordinate;
use crate::graph::{Candidate, RoadGraph};

/// One piece near the probe, before selection.
#[derive(Debug, Clone, Copy)]
struct Hit {
    distance_2: f64,
    segment: u32,
    offset_m: f64,
    xy: [f64; 2],
}

/// A reusable candidate buffer (one per matcher, not per vehicle).
#[derive(Debug, Default)]
pub struct CandidateSearch {
    hits: Vec<Hit>,
    buf: Vec<Candidate>,
}

impl CandidateSearch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Up to `k` candidates within `radius_m` of (lat, lon), nearest first, then by segment
    /// id and offset. Empty for a NaN or out-of-range coordinate.
    pub fn find(
        &mut self,
        graph: &RoadGraph,
        lat: f64,
        lon: f64,
        radius_m: f64,
        k: usize,
    ) -> &[Candidate] {
        self.buf.clear();
        self.hits.clear();
        if !is_plausible_coordinate(lat, lon) || k == 0 || radius_m.is_nan() || radius_m < 0.0 {
            return &self.buf;
        }
        let projection = graph.projection();
        let query = projection.project(lat, lon);
        let max_distance_2 = radius_m * radius_m;
        for entry in graph
            .spatial()
            .tree()
            .locate_within_distance(query, max_distance_2)
        {
            let line = entry.geom();
            let snapped = line.nearest_point(&query);
            let piece_len_2 = distance_2(line.from, line.to);
            let t = if piece_len_2 > 0.0 {
                (distance_2(snapped, line.from) / piece_len_2)
                    .sqrt()
                    .clamp(0.0, 1.0)
            } else {
                0.0
            };
            let piece = &entry.data;
            let length_m = graph.segment(piece.segment).length_m;
            self.hits.push(Hit {
                distance_2: snapped.distance_2(&query),
                segment: piece.segment,
                offset_m: (piece.start_offset_m + t * piece.length_m).min(length_m),
                xy: snapped,
            });
        }
        self.hits.sort_by(|a, b| {
            a.distance_2
                .total_cmp(&b.distance_2)
                .then(a.segment.cmp(&b.segment))
                .then(a.offset_m.total_cmp(&b.offset_m))
        });
        for hit in &self.hits {
            if self.buf.len() == k {
                break;
            }
            let distance_m = hit.distance_2.sqrt();
            let same_pass = self.buf.iter().any(|c| {
                c.segment == hit.segment
                    && (c.offset_m - hit.offset_m).abs() <= c.distance_m + distance_m + 1.0
            });
            if same_pass {
                continue;
            }
            let (lat, lon) = projection.unproject(hit.xy);
            self.buf.push(Candidate {
                segment: hit.segment,
                segment_id: graph.segment(hit.segment).segment_id,
                distance_m,
                offset_m: hit.offset_m,
                lat,
                lon,
            });
        }
        &self.buf
    }
}

fn distance_2(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
    dx * dx + dy * dy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::osm_writer::{synthetic_grid, OsmBuilder};
    use crate::graph::ImportConfig;

    #[test]
    fn finds_nearby_segments_and_none_for_nan() -> Result<(), crate::graph::GraphError> {
        let graph = synthetic_grid(3, 3, 100.0, 47.0, 9.0).build_graph(&ImportConfig::default())?;
        let mut search = CandidateSearch::new();
        let found = search.find(&graph, 47.0, 9.0005, 50.0, 8).len();
        assert!((1..=8).contains(&found));
        assert!(search.find(&graph, f64::NAN, 9.0, 50.0, 8).is_empty());
        assert!(search.find(&graph, 10.0, 9.0, 50.0, 8).is_empty());
        Ok(())
    }

    #[test]
    fn a_hairpin_gives_one_candidate_per_pass() -> Result<(), crate::graph::GraphError> {
        // A one-way hairpin: 300 m east, a tight turn 20 m north, 300 m back west.
        let p = crate::geo::LocalProjection::new(47.0, 9.0);
        let mut osm = OsmBuilder::new();
        for (id, xy) in [
            (1, [0.0, 0.0]),
            (2, [300.0, 0.0]),
            (3, [300.0, 20.0]),
            (4, [0.0, 20.0]),
        ] {
            let (lat, lon) = p.unproject(xy);
            osm.node(id, lat, lon);
        }
        osm.way(
            1,
            &[1, 2, 3, 4],
            &[("highway", "residential"), ("oneway", "yes")],
        );
        let graph = osm.build_graph(&ImportConfig::default())?;
        let mut search = CandidateSearch::new();
        // 8 m north of the outbound leg, 12 m south of the return leg.
        let (lat, lon) = p.unproject([150.0, 8.0]);
        let found = search.find(&graph, lat, lon, 50.0, 8).to_vec();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].segment, found[1].segment);
        assert!((found[0].offset_m - 150.0).abs() < 1.0, "{found:?}");
        assert!((found[1].offset_m - 470.0).abs() < 1.0, "{found:?}");
        Ok(())
    }
}
