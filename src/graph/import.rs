//! Reading OSM files: `.osm.pbf` (osmpbf, two parallel passes: drivable ways, then only the
//! nodes they use) and `.osm` XML (quick-xml, one streaming pass). Both produce the same
//! [`OsmData`], with coordinates rounded to OSM's native 1e-7 degree grid so that the XML and
//! PBF encodings of one map give bit-identical graphs.

use std::path::Path;

use osmpbf::{Element, ElementReader};
use quick_xml::events::{BytesStart, Event};

use super::config::ResolvedConfig;
use super::error::GraphError;
use super::tags::{classify_way, WayAttrs};

/// A drivable way as kept by the importer.
#[derive(Debug, Clone)]
pub(crate) struct KeptWay {
    pub id: i64,
    pub refs: Vec<i64>,
    pub attrs: WayAttrs,
}

/// The part of an OSM file the graph builder needs.
#[derive(Debug, Default)]
pub(crate) struct OsmData {
    /// Kept ways, sorted by id, ids unique.
    pub ways: Vec<KeptWay>,
    /// `(node id, lat, lon)` in 1e-7 degrees, sorted by id, ids unique.
    pub nodes: Vec<(i64, i32, i32)>,
    /// Elements that could not be parsed (XML only; bad numbers), skipped.
    pub malformed_elements: u64,
}

impl OsmData {
    pub fn node(&self, id: i64) -> Option<(i32, i32)> {
        self.nodes
            .binary_search_by_key(&id, |n| n.0)
            .ok()
            .map(|i| (self.nodes[i].1, self.nodes[i].2))
    }

    /// Sorts and deduplicates (last definition of an id wins, as in OSM change files).
    pub fn normalise(&mut self) {
        self.ways.sort_by_key(|w| w.id);
        dedup_keep_last(&mut self.ways, |w| w.id);
        self.nodes.sort_by_key(|n| n.0);
        dedup_keep_last(&mut self.nodes, |n| n.0);
    }
}

fn dedup_keep_last<T, K: PartialEq>(v: &mut Vec<T>, key: impl Fn(&T) -> K) {
    // Stable sort keeps input order among equal keys; reverse so `dedup_by` keeps the last.
    v.reverse();
    v.dedup_by(|a, b| key(a) == key(b));
    v.reverse();
}

/// Converts degrees to OSM's 1e-7 degree integers; `None` for implausible coordinates.
pub(crate) fn to_decimicro(lat: f64, lon: f64) -> Option<(i32, i32)> {
    if !crate::geo::is_plausible_coordinate(lat, lon) {
        return None;
    }
    Some(((lat * 1e7).round() as i32, (lon * 1e7).round() as i32))
}

pub(crate) fn decimicro_to_deg(v: i32) -> f64 {
    f64::from(v) / 1e7
}

/// Reads an `.osm.pbf` file.
pub(crate) fn read_pbf(path: &Path, cfg: &ResolvedConfig) -> Result<OsmData, GraphError> {
    let pbf_err = |e: osmpbf::Error| GraphError::Pbf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let open = || -> Result<_, GraphError> {
        std::fs::metadata(path).map_err(|e| GraphError::io(path, e))?;
        ElementReader::from_path(path).map_err(pbf_err)
    };

    // Pass 1: drivable ways.
    let mut ways = open()?
        .par_map_reduce(
            |element| match element {
                Element::Way(way) => {
                    let tags: Vec<(&str, &str)> = way.tags().collect();
                    match classify_way(&tags, cfg) {
                        Some(attrs) => vec![KeptWay {
                            id: way.id(),
                            refs: way.refs().collect(),
                            attrs,
                        }],
                        None => Vec::new(),
                    }
                }
                _ => Vec::new(),
            },
            Vec::new,
            concat,
        )
        .map_err(pbf_err)?;
    ways.sort_by_key(|w| w.id);

    // Pass 2: only the nodes those ways reference.
    let mut wanted: Vec<i64> = ways.iter().flat_map(|w| w.refs.iter().copied()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let wanted = &wanted;
    let keep = move |id: i64, lat: i32, lon: i32| {
        if wanted.binary_search(&id).is_ok() {
            to_decimicro(decimicro_to_deg(lat), decimicro_to_deg(lon))
                .map(|(la, lo)| vec![(id, la, lo)])
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    let nodes = if wanted.is_empty() {
        Vec::new()
    } else {
        open()?
            .par_map_reduce(
                |element| match element {
                    Element::DenseNode(n) => keep(n.id(), n.decimicro_lat(), n.decimicro_lon()),
                    Element::Node(n) => keep(n.id(), n.decimicro_lat(), n.decimicro_lon()),
                    _ => Vec::new(),
                },
                Vec::new,
                concat,
            )
            .map_err(pbf_err)?
    };
    let mut data = OsmData {
        ways,
        nodes,
        malformed_elements: 0,
    };
    data.normalise();
    Ok(data)
}

fn concat<T>(mut a: Vec<T>, mut b: Vec<T>) -> Vec<T> {
    if a.len() < b.len() {
        std::mem::swap(&mut a, &mut b);
    }
    a.append(&mut b);
    a
}

/// A way being read from XML: id, node refs, tags.
type XmlWay = (i64, Vec<i64>, Vec<(String, String)>);

/// Reads an `.osm` XML file in one streaming pass.
pub(crate) fn read_xml(path: &Path, cfg: &ResolvedConfig) -> Result<OsmData, GraphError> {
    let mut reader =
        quick_xml::Reader::from_file(path).map_err(|e| xml_err(path, 0, e.to_string()))?;
    let mut data = OsmData::default();
    let mut buf = Vec::new();
    let mut way: Option<XmlWay> = None;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| xml_err(path, reader.error_position(), e.to_string()))?;
        match event {
            Event::Start(e) => on_element(&e, false, &mut way, &mut data, cfg),
            Event::Empty(e) => on_element(&e, true, &mut way, &mut data, cfg),
            Event::End(e) if e.name().as_ref() == b"way" => finish_way(&mut way, &mut data, cfg),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    data.normalise();
    Ok(data)
}

/// Handles an opening (`self_closing == false`) or self-closing element.
fn on_element(
    e: &BytesStart<'_>,
    self_closing: bool,
    way: &mut Option<XmlWay>,
    data: &mut OsmData,
    cfg: &ResolvedConfig,
) {
    match e.name().as_ref() {
        b"node" => match (attr_i64(e, b"id"), attr_f64(e, b"lat"), attr_f64(e, b"lon")) {
            (Some(id), Some(lat), Some(lon)) => match to_decimicro(lat, lon) {
                Some((la, lo)) => data.nodes.push((id, la, lo)),
                None => data.malformed_elements += 1,
            },
            _ => data.malformed_elements += 1,
        },
        b"way" => {
            // Ways never nest; in a file broken that way, close the open one first.
            finish_way(way, data, cfg);
            match attr_i64(e, b"id") {
                Some(id) => *way = Some((id, Vec::new(), Vec::new())),
                None => data.malformed_elements += 1,
            }
            if self_closing {
                finish_way(way, data, cfg);
            }
        }
        b"nd" => {
            if let Some(w) = way.as_mut() {
                match attr_i64(e, b"ref") {
                    Some(r) => w.1.push(r),
                    None => data.malformed_elements += 1,
                }
            }
        }
        b"tag" => {
            if let Some(w) = way.as_mut() {
                match (attr_string(e, b"k"), attr_string(e, b"v")) {
                    (Some(k), Some(v)) => w.2.push((k, v)),
                    _ => data.malformed_elements += 1,
                }
            }
        }
        _ => {}
    }
}

fn finish_way(way: &mut Option<XmlWay>, data: &mut OsmData, cfg: &ResolvedConfig) {
    if let Some((id, refs, tags)) = way.take() {
        let tag_refs: Vec<(&str, &str)> =
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Some(attrs) = classify_way(&tag_refs, cfg) {
            data.ways.push(KeptWay { id, refs, attrs });
        }
    }
}

fn xml_err(path: &Path, position: u64, reason: String) -> GraphError {
    GraphError::Xml {
        path: path.to_path_buf(),
        position,
        reason,
    }
}

fn attr_raw<'a>(e: &'a BytesStart<'_>, key: &[u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .map(|a| a.value)
}

fn attr_i64(e: &BytesStart<'_>, key: &[u8]) -> Option<i64> {
    std::str::from_utf8(&attr_raw(e, key)?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn attr_f64(e: &BytesStart<'_>, key: &[u8]) -> Option<f64> {
    std::str::from_utf8(&attr_raw(e, key)?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn attr_string(e: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}
