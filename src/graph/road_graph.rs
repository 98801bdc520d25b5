//! `RoadGraph`: directed segments, their geometry and successor adjacency, held as one
//! validated byte image (built in memory or mmap'd from a `.graph` file) and read in place.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use super::builder::{build_parts, ImportStats};
use super::config::ImportConfig;
use super::error::GraphError;
use super::file::{self, Image, Sections, Toc};
use super::import::{self, OsmData};
use super::info::GraphInfo;
use super::segment::{BBox, Segment};
use super::spatial::{Candidate, SpatialIndex};
use crate::geo::LocalProjection;

/// A directed road graph. Segment indices (`u32`) run over `0..len()` in `segment_id` order.
pub struct RoadGraph {
    image: Image,
    toc: Toc,
    sections: Sections,
    projection: LocalProjection,
    spatial: OnceLock<SpatialIndex>,
    import_stats: Option<ImportStats>,
}

/// Input kinds `RoadGraph::open` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    Graph,
    Pbf,
    Xml,
}

impl RoadGraph {
    /// Imports an OSM file: `.osm` is read as XML, anything else is sniffed (XML text or PBF).
    pub fn from_osm(path: impl AsRef<Path>, cfg: &ImportConfig) -> Result<RoadGraph, GraphError> {
        let path = path.as_ref();
        let resolved = cfg.resolve()?;
        let data = match sniff(path)? {
            InputKind::Xml => import::read_xml(path, &resolved)?,
            InputKind::Pbf => import::read_pbf(path, &resolved)?,
            InputKind::Graph => {
                return Err(GraphError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        Self::from_osm_data(data, path)
    }

    pub(crate) fn from_osm_data(data: OsmData, source: &Path) -> Result<RoadGraph, GraphError> {
        let (parts, stats) = build_parts(data, source)?;
        if stats.pieces_missing_nodes > 0 {
            // An extract clipped to a box keeps the ways that cross its edge but not their
            // nodes outside it: only the pieces of road beyond the edge are lost.
            tracing::warn!(
                source = %source.display(),
                pieces_missing_nodes = stats.pieces_missing_nodes,
                pieces = stats.pieces,
                "left out road pieces (between two junctions) that use nodes the extract does \
                 not contain: usually ways cut at the edge of a clipped extract"
            );
        }
        if stats.malformed_elements > 0 {
            tracing::warn!(
                source = %source.display(),
                malformed_elements = stats.malformed_elements,
                "skipped OSM elements that do not parse or exceed graph.import's size limits"
            );
        }
        let words = file::encode(&parts);
        drop(parts);
        let mut graph = Self::from_image(Image::Heap(words), source)?;
        graph.import_stats = Some(stats);
        Ok(graph)
    }

    /// Loads a `.graph` file (mmap, zero-copy; the spatial index is built on first query).
    pub fn load(path: impl AsRef<Path>) -> Result<RoadGraph, GraphError> {
        let path = path.as_ref();
        Self::from_image(file::map_file(path)?, path)
    }

    /// Opens whatever the user gave: a `.graph` file, or an OSM `.osm.pbf`/`.osm` file that
    /// is imported on the fly. The kind is decided by the first bytes, not the name.
    pub fn open(path: impl AsRef<Path>, cfg: &ImportConfig) -> Result<RoadGraph, GraphError> {
        let path = path.as_ref();
        match sniff(path)? {
            InputKind::Graph => Self::load(path),
            InputKind::Pbf | InputKind::Xml => Self::from_osm(path, cfg),
        }
    }

    /// Writes the graph file (atomically: temporary file, then rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), GraphError> {
        file::write_image(self.image.bytes(), path.as_ref())
    }

    fn from_image(image: Image, path: &Path) -> Result<RoadGraph, GraphError> {
        let (toc, sections) = file::validate(image.bytes(), path)?;
        let (lat, lon) = toc.bbox.centre();
        Ok(RoadGraph {
            image,
            toc,
            sections,
            projection: LocalProjection::new(lat, lon),
            spatial: OnceLock::new(),
            import_stats: None,
        })
    }

    /// Number of directed segments.
    pub fn len(&self) -> usize {
        self.toc.segment_count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All segment indices.
    pub fn indices(&self) -> std::ops::Range<u32> {
        0..self.len() as u32
    }

    /// All segments, in index (= `segment_id`) order.
    pub fn segments(&self) -> &[Segment] {
        bytemuck::cast_slice(&self.image.bytes()[self.sections.segments.clone()])
    }

    /// The segment at index `i`. Panics if `i >= len()`.
    pub fn segment(&self, i: u32) -> &Segment {
        &self.segments()[i as usize]
    }

    /// The index of a segment id (binary search), if the graph has it.
    pub fn index_of(&self, segment_id: u64) -> Option<u32> {
        self.segments()
            .binary_search_by_key(&segment_id, |s| s.segment_id)
            .ok()
            .map(|i| i as u32)
    }

    fn offsets(&self, range: &std::ops::Range<usize>) -> &[u64] {
        bytemuck::cast_slice(&self.image.bytes()[range.clone()])
    }

    /// Polyline of segment `i` as `[lat, lon]` degrees, in the direction of travel (at least
    /// two points).
    pub fn geometry(&self, i: u32) -> &[[f64; 2]] {
        let offsets = self.offsets(&self.sections.geom_offsets);
        let (a, b) = (
            offsets[i as usize] as usize,
            offsets[i as usize + 1] as usize,
        );
        &self.all_geometry()[a..b]
    }

    /// Every geometry point of every segment, concatenated in index order.
    pub fn all_geometry(&self) -> &[[f64; 2]] {
        bytemuck::cast_slice(&self.image.bytes()[self.sections.geometry.clone()])
    }

    /// Indices of the segments that start where segment `i` ends (including its reverse
    /// twin, i.e. a U-turn, when the road is two-way), ascending.
    pub fn successors(&self, i: u32) -> &[u32] {
        let offsets = self.offsets(&self.sections.succ_offsets);
        let (a, b) = (
            offsets[i as usize] as usize,
            offsets[i as usize + 1] as usize,
        );
        let all: &[u32] =
            bytemuck::cast_slice(&self.image.bytes()[self.sections.successors.clone()]);
        &all[a..b]
    }

    /// Total number of successor entries (adjacency size).
    pub fn successor_count(&self) -> usize {
        self.toc.successor_count as usize
    }

    pub fn bbox(&self) -> BBox {
        self.toc.bbox
    }

    /// The local metric projection (centred on the bbox) used by the spatial index.
    pub fn projection(&self) -> &LocalProjection {
        &self.projection
    }

    /// Content checksum of the graph (63 bits); records carry it as `graph_version`.
    pub fn version(&self) -> u64 {
        self.toc.graph_version
    }

    /// Size of the graph image in bytes (the `.graph` file size).
    pub fn image_len(&self) -> usize {
        self.image.bytes().len()
    }

    /// True when the graph is memory-mapped from a file (as opposed to built in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.image, Image::Mapped(_))
    }

    /// What the import kept and skipped; `None` for graphs loaded from a `.graph` file.
    pub fn import_stats(&self) -> Option<&ImportStats> {
        self.import_stats.as_ref()
    }

    /// The spatial index, built on first use.
    pub fn spatial(&self) -> &SpatialIndex {
        self.spatial.get_or_init(|| SpatialIndex::build(self))
    }

    /// Builds the spatial index now rather than on the first query.
    pub fn build_spatial_index(&self) {
        self.spatial();
    }

    /// Up to `k` segments within `radius_m` of a point, nearest first (one candidate per
    /// segment). See [`SpatialIndex::nearest_within`].
    pub fn nearest_within(&self, lat: f64, lon: f64, radius_m: f64, k: usize) -> Vec<Candidate> {
        let mut out = Vec::new();
        self.spatial()
            .nearest_within(self, lat, lon, radius_m, k, &mut out);
        out
    }

    /// Summary figures for `pipeline graph info`.
    pub fn info(&self) -> GraphInfo {
        GraphInfo::of(self)
    }
}

/// Two graphs are equal when their images are byte-identical.
impl PartialEq for RoadGraph {
    fn eq(&self, other: &Self) -> bool {
        self.image.bytes() == other.image.bytes()
    }
}

impl fmt::Debug for RoadGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoadGraph")
            .field("segments", &self.len())
            .field("version", &self.version())
            .field("mapped", &self.is_mapped())
            .finish_non_exhaustive()
    }
}

/// Decides the input kind from the first bytes.
fn sniff(path: &Path) -> Result<InputKind, GraphError> {
    use std::io::Read;
    let mut head = [0u8; 64];
    let mut file = std::fs::File::open(path).map_err(|e| GraphError::io(path, e))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(GraphError::io(path, e)),
        }
    }
    let head = &head[..n];
    if head.starts_with(&file::MAGIC) {
        return Ok(InputKind::Graph);
    }
    let text = head
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(head)
        .trim_ascii_start();
    if text.starts_with(b"<?xml") || text.starts_with(b"<osm") {
        return Ok(InputKind::Xml);
    }
    // An OSM PBF starts with a 4-byte big-endian header length and a BlobHeader whose
    // first field is the string "OSMHeader".
    if head.len() >= 8 && head[4..].windows(9).any(|w| w == b"OSMHeader") {
        return Ok(InputKind::Pbf);
    }
    let name = path.to_string_lossy();
    if name.ends_with(".pbf") {
        return Ok(InputKind::Pbf);
    }
    if name.ends_with(".osm") {
        return Ok(InputKind::Xml);
    }
    if name.ends_with(".graph") {
        // Loading reports exactly what is wrong with it (bad magic, truncation).
        return Ok(InputKind::Graph);
    }
    Err(GraphError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RoadGraph>();
    }
}
