//! Candidate search per probe: up to k segments within radius r from the graph's R-tree,
//! into one reused buffer, with bad coordinates turned away before the index sees them.

use crate::geo::is_plausible_coordinate;
use crate::graph::{Candidate, RoadGraph};

/// A reusable candidate buffer (one per matcher, not per vehicle).
#[derive(Debug, Default)]
pub struct CandidateSearch {
    buf: Vec<Candidate>,
}

impl CandidateSearch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Up to `k` candidates within `radius_m` of (lat, lon), nearest first, then by segment
    /// id. Empty for a NaN or out-of-range coordinate.
    pub fn find(
        &mut self,
        graph: &RoadGraph,
        lat: f64,
        lon: f64,
        radius_m: f64,
        k: usize,
    ) -> &[Candidate] {
        self.buf.clear();
        if is_plausible_coordinate(lat, lon) {
            graph
                .spatial()
                .nearest_within(graph, lat, lon, radius_m, k, &mut self.buf);
        }
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::osm_writer::synthetic_grid;
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
}
