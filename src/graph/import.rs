//! Reading OSM files: `.osm.pbf` (osmpbf, two parallel passes: drivable ways, then only the
//! nodes they use) and `.osm` XML (quick-xml, one streaming pass). Both produce the same
//! [`OsmData`], with coordinates rounded to OSM's native 1e-7 degree grid so that the XML and
//! PBF encodings of one map give bit-identical graphs.
//!
//! Input size limits: osmpbf refuses blobs over 32 MiB (its own limit), the XML reader
//! refuses a file in which one event (a tag with its attributes, a text run, a comment)
//! spans more than [`MAX_XML_EVENT_BYTES`], and both skip (and count as malformed) a way
//! with more than [`MAX_WAY_NODES`] node references or [`MAX_WAY_TAGS`] tags, or a tag
//! key or value over [`MAX_TAG_BYTES`].

use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use osmpbf::{Element, ElementReader};
use quick_xml::events::{BytesStart, Event};

use super::config::ResolvedConfig;
use super::error::GraphError;
use super::tags::{classify_way, WayAttrs};

/// Node references one way may have: OSM's API allows 2 000; room for merged ways.
pub const MAX_WAY_NODES: usize = 65_536;
/// Tags one way may have.
pub const MAX_WAY_TAGS: usize = 1_024;
/// Bytes of one tag key or value: OSM allows 255 characters (at most 1 020 bytes).
pub const MAX_TAG_BYTES: usize = 4_096;
/// Bytes one XML event may span (read ahead included) before the file is refused.
pub const MAX_XML_EVENT_BYTES: u64 = 1 << 20;

/// Whether a way is within the size limits.
fn way_within_limits<'a>(
    refs: usize,
    tags: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> bool {
    refs <= MAX_WAY_NODES
        && tags.len() <= MAX_WAY_TAGS
        && tags
            .into_iter()
            .all(|(k, v)| k.len() <= MAX_TAG_BYTES && v.len() <= MAX_TAG_BYTES)
}

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

    // Pass 1: drivable ways (and how many were over the size limits).
    let (mut ways, oversized) = open()?
        .par_map_reduce(
            |element| match element {
                Element::Way(way) => {
                    let tags: Vec<(&str, &str)> = way.tags().collect();
                    if !way_within_limits(way.refs().len(), tags.iter().copied()) {
                        return (Vec::new(), 1);
                    }
                    match classify_way(&tags, cfg) {
                        Some(attrs) => (
                            vec![KeptWay {
                                id: way.id(),
                                refs: way.refs().collect(),
                                attrs,
                            }],
                            0,
                        ),
                        None => (Vec::new(), 0),
                    }
                }
                _ => (Vec::new(), 0),
            },
            || (Vec::new(), 0u64),
            |(a, m), (b, n)| (concat(a, b), m + n),
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
        malformed_elements: oversized,
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

/// A reader that fails once more than `limit` bytes were read since the counter was last
/// reset (after each XML event), so one endless element cannot take all memory.
struct EventBudget<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for EventBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read.get() > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("one element spans more than {} bytes", self.limit),
            ));
        }
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Reads an `.osm` XML file in one streaming pass.
pub(crate) fn read_xml(path: &Path, cfg: &ResolvedConfig) -> Result<OsmData, GraphError> {
    let file = std::fs::File::open(path).map_err(|e| xml_err(path, 0, e.to_string()))?;
    let read = Rc::new(Cell::new(0));
    let budget = EventBudget {
        inner: file,
        read: read.clone(),
        limit: MAX_XML_EVENT_BYTES,
    };
    let mut reader = quick_xml::Reader::from_reader(std::io::BufReader::new(budget));
    let mut data = OsmData::default();
    let mut buf = Vec::new();
    let mut way: Option<XmlWay> = None;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| xml_err(path, reader.error_position(), e.to_string()))?;
        read.set(0);
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
        // Past the limits one more is kept, so `finish_way` sees the way is over them.
        b"nd" => {
            if let Some(w) = way.as_mut() {
                match attr_i64(e, b"ref") {
                    Some(r) if w.1.len() <= MAX_WAY_NODES => w.1.push(r),
                    Some(_) => {}
                    None => data.malformed_elements += 1,
                }
            }
        }
        b"tag" => {
            if let Some(w) = way.as_mut() {
                match (attr_string(e, b"k"), attr_string(e, b"v")) {
                    (Some(k), Some(v)) if w.2.len() <= MAX_WAY_TAGS => w.2.push((k, v)),
                    (Some(_), Some(_)) => {}
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
        if !way_within_limits(refs.len(), tag_refs.iter().copied()) {
            data.malformed_elements += 1;
            return;
        }
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
