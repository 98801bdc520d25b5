//! Writes small OSM PBF/XML files so tests and demos need no downloaded data: a tiny
//! [`OsmBuilder`] of nodes and tagged ways, a real PBF encoder (OSMHeader blob + one
//! zlib-compressed PrimitiveBlock with DenseNodes and Ways, hand-declared with prost), an
//! XML writer, and [`synthetic_grid`], a small city for tests and benchmarks.

use std::io::Write;
use std::path::Path;

use flate2::write::ZlibEncoder;

use super::config::ImportConfig;
use super::error::GraphError;
use super::import::{to_decimicro, KeptWay, OsmData};
use super::road_graph::RoadGraph;
use super::tags::classify_way;
use crate::geo::LocalProjection;

/// An in-memory OSM extract: nodes and ways, written out as XML or PBF.
///
/// ```
/// use pipeline::graph::{osm_writer::OsmBuilder, ImportConfig};
/// let mut osm = OsmBuilder::new();
/// osm.node(1, 43.73, 7.42).node(2, 43.731, 7.42);
/// osm.way(10, &[1, 2], &[("highway", "residential")]);
/// let graph = osm.build_graph(&ImportConfig::default()).unwrap();
/// assert_eq!(graph.len(), 2); // one two-way piece = two directed segments
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OsmBuilder {
    nodes: Vec<(i64, f64, f64)>,
    ways: Vec<BuilderWay>,
}

/// Way id, node refs, tags.
type BuilderWay = (i64, Vec<i64>, Vec<(String, String)>);

impl OsmBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node at (lat, lon) degrees.
    pub fn node(&mut self, id: i64, lat: f64, lon: f64) -> &mut Self {
        self.nodes.push((id, lat, lon));
        self
    }

    /// Adds a way over `nodes` with `tags`.
    pub fn way(&mut self, id: i64, nodes: &[i64], tags: &[(&str, &str)]) -> &mut Self {
        self.ways.push((
            id,
            nodes.to_vec(),
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        self
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn way_count(&self) -> usize {
        self.ways.len()
    }

    /// Builds the graph directly, as importing the written file would.
    pub fn build_graph(&self, cfg: &ImportConfig) -> Result<RoadGraph, GraphError> {
        let resolved = cfg.resolve()?;
        let mut data = OsmData::default();
        for &(id, lat, lon) in &self.nodes {
            match to_decimicro(lat, lon) {
                Some((la, lo)) => data.nodes.push((id, la, lo)),
                None => data.malformed_elements += 1,
            }
        }
        for (id, refs, tags) in &self.ways {
            let tags: Vec<(&str, &str)> =
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if let Some(attrs) = classify_way(&tags, &resolved) {
                data.ways.push(KeptWay {
                    id: *id,
                    refs: refs.clone(),
                    attrs,
                });
            }
        }
        data.normalise();
        RoadGraph::from_osm_data(data, Path::new("<in-memory OSM>"))
    }

    /// Writes OSM XML (API 0.6 style), coordinates with 7 decimals.
    pub fn write_xml(&self, path: impl AsRef<Path>) -> Result<(), GraphError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_xml()).map_err(|e| GraphError::io(path, e))
    }

    /// The OSM XML text.
    pub fn to_xml(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<osm version=\"0.6\" generator=\"pipeline osm_writer\">\n",
        );
        for &(id, lat, lon) in &self.nodes {
            let _ = writeln!(s, "  <node id=\"{id}\" lat=\"{lat:.7}\" lon=\"{lon:.7}\"/>");
        }
        for (id, refs, tags) in &self.ways {
            let _ = writeln!(s, "  <way id=\"{id}\">");
            for r in refs {
                let _ = writeln!(s, "    <nd ref=\"{r}\"/>");
            }
            for (k, v) in tags {
                let _ = writeln!(
                    s,
                    "    <tag k=\"{}\" v=\"{}\"/>",
                    xml_escape(k),
                    xml_escape(v)
                );
            }
            s.push_str("  </way>\n");
        }
        s.push_str("</osm>\n");
        s
    }

    /// Writes an OSM PBF readable by any PBF reader (osmpbf, osmium, …).
    pub fn write_pbf(&self, path: impl AsRef<Path>) -> Result<(), GraphError> {
        let path = path.as_ref();
        let bytes = self.to_pbf().map_err(|e| GraphError::io(path, e))?;
        std::fs::write(path, bytes).map_err(|e| GraphError::io(path, e))
    }

    /// The PBF bytes.
    pub fn to_pbf(&self) -> std::io::Result<Vec<u8>> {
        use prost::Message;
        let header = pbf::HeaderBlock {
            required_features: vec!["OsmSchema-V0.6".into(), "DenseNodes".into()],
            writingprogram: Some("pipeline osm_writer".into()),
        };

        let mut nodes: Vec<(i64, i64, i64)> = Vec::with_capacity(self.nodes.len());
        for &(id, lat, lon) in &self.nodes {
            // Out-of-range coordinates are written as they are rounded; the reader judges.
            nodes.push((id, (lat * 1e7).round() as i64, (lon * 1e7).round() as i64));
        }
        nodes.sort_by_key(|n| n.0);
        let mut dense = pbf::DenseNodes::default();
        let mut prev = (0, 0, 0);
        for &(id, lat, lon) in &nodes {
            dense.id.push(id - prev.0);
            dense.lat.push(lat - prev.1);
            dense.lon.push(lon - prev.2);
            prev = (id, lat, lon);
        }

        let mut strings = StringTable::default();
        let mut ways: Vec<&BuilderWay> = self.ways.iter().collect();
        ways.sort_by_key(|w| w.0);
        let pbf_ways = ways
            .into_iter()
            .map(|(id, refs, tags)| {
                let mut prev = 0;
                pbf::Way {
                    id: *id,
                    keys: tags.iter().map(|(k, _)| strings.index(k)).collect(),
                    vals: tags.iter().map(|(_, v)| strings.index(v)).collect(),
                    refs: refs
                        .iter()
                        .map(|&r| {
                            let d = r - prev;
                            prev = r;
                            d
                        })
                        .collect(),
                }
            })
            .collect();
        let block = pbf::PrimitiveBlock {
            stringtable: pbf::StringTable { s: strings.strings },
            primitivegroup: vec![
                pbf::PrimitiveGroup {
                    dense: Some(dense),
                    ways: Vec::new(),
                },
                pbf::PrimitiveGroup {
                    dense: None,
                    ways: pbf_ways,
                },
            ],
            granularity: Some(100),
        };

        let mut out = Vec::new();
        write_blob(&mut out, "OSMHeader", &header.encode_to_vec())?;
        write_blob(&mut out, "OSMData", &block.encode_to_vec())?;
        Ok(out)
    }
}

/// Appends one fileblock: big-endian header length, BlobHeader, zlib Blob.
fn write_blob(out: &mut Vec<u8>, kind: &str, payload: &[u8]) -> std::io::Result<()> {
    use prost::Message;
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(payload)?;
    let blob = pbf::Blob {
        raw: None,
        raw_size: Some(i32_len(payload.len())?),
        zlib_data: Some(z.finish()?),
    }
    .encode_to_vec();
    let header = pbf::BlobHeader {
        r#type: kind.to_string(),
        indexdata: None,
        datasize: i32_len(blob.len())?,
    }
    .encode_to_vec();
    out.extend_from_slice(&(i32_len(header.len())? as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&blob);
    Ok(())
}

fn i32_len(n: usize) -> std::io::Result<i32> {
    i32::try_from(n).map_err(|_| std::io::Error::other("PBF block too large"))
}

/// A PBF string table; index 0 is the empty string by convention.
struct StringTable {
    strings: Vec<Vec<u8>>,
}

impl Default for StringTable {
    fn default() -> Self {
        StringTable {
            strings: vec![Vec::new()],
        }
    }
}

impl StringTable {
    fn index(&mut self, s: &str) -> u32 {
        match self.strings.iter().position(|x| x == s.as_bytes()) {
            Some(i) => i as u32,
            None => {
                self.strings.push(s.as_bytes().to_vec());
                (self.strings.len() - 1) as u32
            }
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The subset of the OSM PBF schema (fileformat.proto, osmformat.proto) the writer needs.
mod pbf {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlobHeader {
        #[prost(string, required, tag = "1")]
        pub r#type: String,
        #[prost(bytes = "vec", optional, tag = "2")]
        pub indexdata: Option<Vec<u8>>,
        #[prost(int32, required, tag = "3")]
        pub datasize: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Blob {
        #[prost(bytes = "vec", optional, tag = "1")]
        pub raw: Option<Vec<u8>>,
        #[prost(int32, optional, tag = "2")]
        pub raw_size: Option<i32>,
        #[prost(bytes = "vec", optional, tag = "3")]
        pub zlib_data: Option<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderBlock {
        #[prost(string, repeated, tag = "4")]
        pub required_features: Vec<String>,
        #[prost(string, optional, tag = "16")]
        pub writingprogram: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringTable {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub s: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PrimitiveBlock {
        #[prost(message, required, tag = "1")]
        pub stringtable: StringTable,
        #[prost(message, repeated, tag = "2")]
        pub primitivegroup: Vec<PrimitiveGroup>,
        #[prost(int32, optional, tag = "17")]
        pub granularity: Option<i32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PrimitiveGroup {
        #[prost(message, optional, tag = "2")]
        pub dense: Option<DenseNodes>,
        #[prost(message, repeated, tag = "3")]
        pub ways: Vec<Way>,
    }

    /// Ids and coordinates are delta-coded; no tags, so `keys_vals` stays empty.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DenseNodes {
        #[prost(sint64, repeated, tag = "1")]
        pub id: Vec<i64>,
        #[prost(sint64, repeated, tag = "8")]
        pub lat: Vec<i64>,
        #[prost(sint64, repeated, tag = "9")]
        pub lon: Vec<i64>,
    }

    /// `refs` are delta-coded.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Way {
        #[prost(int64, required, tag = "1")]
        pub id: i64,
        #[prost(uint32, repeated, tag = "2")]
        pub keys: Vec<u32>,
        #[prost(uint32, repeated, tag = "3")]
        pub vals: Vec<u32>,
        #[prost(sint64, repeated, tag = "8")]
        pub refs: Vec<i64>,
    }
}

/// Node id of grid cell (row, col) in [`synthetic_grid`].
pub fn grid_node_id(cols: usize, row: usize, col: usize) -> i64 {
    1 + (row * cols + col) as i64
}

/// A small city: `rows` × `cols` junctions `spacing_m` apart, north-east of the origin.
///
/// - Row streets (way id `1000 + row`) are residential, the middle one primary; rows ≡ 1
///   (mod 4) are `oneway=yes` (eastbound), rows ≡ 3 (mod 4) `oneway=-1` (westbound).
///   `maxspeed` cycles through `50`, `20 mph` and none (class default).
/// - Column streets (way id `2000 + col`) are residential, the middle one secondary; columns
///   ≡ 1 (mod 3) are `oneway=yes` (northbound); even columns have `maxspeed=40 km/h`.
/// - A roundabout (way 3000, 8 nodes, `junction=roundabout`, implied one-way) sits east of
///   the grid, joined to the middle row's east end by way 3001 and with a spoke further
///   east (way 3002, `maxspeed=30`).
///
/// Grid node ids come from [`grid_node_id`]; roundabout nodes are 900 000 + k.
pub fn synthetic_grid(
    rows: usize,
    cols: usize,
    spacing_m: f64,
    origin_lat: f64,
    origin_lon: f64,
) -> OsmBuilder {
    let mut osm = OsmBuilder::new();
    if rows == 0 || cols == 0 {
        return osm;
    }
    let projection = LocalProjection::new(origin_lat, origin_lon);
    for r in 0..rows {
        for c in 0..cols {
            let (lat, lon) = projection.unproject([c as f64 * spacing_m, r as f64 * spacing_m]);
            osm.node(grid_node_id(cols, r, c), lat, lon);
        }
    }
    let mid_row = rows / 2;
    if cols >= 2 {
        for r in 0..rows {
            let refs: Vec<i64> = (0..cols).map(|c| grid_node_id(cols, r, c)).collect();
            let mut tags = vec![(
                "highway",
                if r == mid_row {
                    "primary"
                } else {
                    "residential"
                },
            )];
            match r % 4 {
                1 => tags.push(("oneway", "yes")),
                3 => tags.push(("oneway", "-1")),
                _ => {}
            }
            match r % 3 {
                0 => tags.push(("maxspeed", "50")),
                1 => tags.push(("maxspeed", "20 mph")),
                _ => {}
            }
            osm.way(1000 + r as i64, &refs, &tags);
        }
    }
    if rows >= 2 {
        for c in 0..cols {
            let refs: Vec<i64> = (0..rows).map(|r| grid_node_id(cols, r, c)).collect();
            let mut tags = vec![(
                "highway",
                if c == cols / 2 {
                    "secondary"
                } else {
                    "residential"
                },
            )];
            if c % 3 == 1 {
                tags.push(("oneway", "yes"));
            }
            if c % 2 == 0 {
                tags.push(("maxspeed", "40 km/h"));
            }
            osm.way(2000 + c as i64, &refs, &tags);
        }
    }

    // Roundabout east of the grid, counter-clockwise (right-hand traffic), node 0 due west.
    let centre = [
        (cols - 1) as f64 * spacing_m + 1.5 * spacing_m,
        mid_row as f64 * spacing_m,
    ];
    let radius_m = 0.4 * spacing_m;
    let mut ring: Vec<i64> = Vec::new();
    for k in 0..8 {
        let angle = std::f64::consts::PI + k as f64 * std::f64::consts::FRAC_PI_4;
        // Counter-clockwise seen from above: angle decreases clockwise, so go the other way.
        let a = -angle;
        let (lat, lon) = projection.unproject([
            centre[0] + radius_m * a.cos(),
            centre[1] + radius_m * a.sin(),
        ]);
        let id = 900_000 + k;
        osm.node(id, lat, lon);
        ring.push(id);
    }
    ring.push(ring[0]);
    osm.way(
        3000,
        &ring,
        &[("highway", "tertiary"), ("junction", "roundabout")],
    );
    osm.way(
        3001,
        &[grid_node_id(cols, mid_row, cols - 1), 900_000],
        &[("highway", "tertiary")],
    );
    let (lat, lon) = projection.unproject([centre[0] + 2.0 * spacing_m, centre[1]]);
    osm.node(900_100, lat, lon);
    osm.way(
        3002,
        &[900_004, 900_100],
        &[("highway", "tertiary"), ("maxspeed", "30")],
    );
    osm
}
