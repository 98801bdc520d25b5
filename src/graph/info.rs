//! `GraphInfo`: the summary `pipeline graph info` prints.

use std::fmt;

use super::class::RoadClass;
use super::road_graph::RoadGraph;
use super::segment::BBox;

/// Per-class totals.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassInfo {
    pub class: RoadClass,
    pub segments: u64,
    pub length_km: f64,
}

/// Summary figures of a road graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphInfo {
    pub segments: u64,
    /// Distinct junction / way-end nodes (segment endpoints).
    pub nodes: u64,
    pub geometry_points: u64,
    pub successors: u64,
    pub oneway_segments: u64,
    /// Sum of directed segment lengths (a two-way road counts twice).
    pub total_length_km: f64,
    pub bbox: BBox,
    /// Classes present, in class-code order.
    pub classes: Vec<ClassInfo>,
    pub version: u64,
    /// Size of the graph image, i.e. of the `.graph` file, bytes.
    pub file_size_bytes: u64,
}

impl GraphInfo {
    pub(crate) fn of(graph: &RoadGraph) -> GraphInfo {
        let mut per_class = [(0u64, 0f64); RoadClass::ALL.len()];
        let mut nodes: Vec<i64> = Vec::with_capacity(graph.len() * 2);
        let mut total_m = 0.0;
        let mut oneway = 0;
        for s in graph.segments() {
            let c = &mut per_class[usize::from(s.road_class().code())];
            c.0 += 1;
            c.1 += s.length_m;
            total_m += s.length_m;
            oneway += u64::from(s.is_oneway());
            nodes.push(s.from_node_id);
            nodes.push(s.to_node_id);
        }
        nodes.sort_unstable();
        nodes.dedup();
        GraphInfo {
            segments: graph.len() as u64,
            nodes: nodes.len() as u64,
            geometry_points: graph.all_geometry().len() as u64,
            successors: graph.successor_count() as u64,
            oneway_segments: oneway,
            total_length_km: total_m / 1000.0,
            bbox: graph.bbox(),
            classes: RoadClass::ALL
                .iter()
                .zip(per_class)
                .filter(|(_, (n, _))| *n > 0)
                .map(|(&class, (segments, m))| ClassInfo {
                    class,
                    segments,
                    length_km: m / 1000.0,
                })
                .collect(),
            version: graph.version(),
            file_size_bytes: graph.image_len() as u64,
        }
    }
}

impl fmt::Display for GraphInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph version    {}", self.version)?;
        writeln!(
            f,
            "segments         {} ({} one-way)",
            self.segments, self.oneway_segments
        )?;
        writeln!(f, "nodes            {}", self.nodes)?;
        writeln!(f, "geometry points  {}", self.geometry_points)?;
        writeln!(f, "successors       {}", self.successors)?;
        writeln!(
            f,
            "total length     {:.1} km (directed)",
            self.total_length_km
        )?;
        writeln!(
            f,
            "bbox             lat {:.5}..{:.5}, lon {:.5}..{:.5}",
            self.bbox.min_lat, self.bbox.max_lat, self.bbox.min_lon, self.bbox.max_lon
        )?;
        writeln!(
            f,
            "file size        {} bytes ({:.1} MiB)",
            self.file_size_bytes,
            self.file_size_bytes as f64 / (1024.0 * 1024.0)
        )?;
        writeln!(f, "road classes")?;
        for c in &self.classes {
            writeln!(
                f,
                "  {:<16} {:>9} segments {:>10.1} km",
                c.class.as_str(),
                c.segments,
                c.length_km
            )?;
        }
        Ok(())
    }
}
