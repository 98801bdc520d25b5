//! From OSM ways to directed segments: split ways at junctions, assign stable ids, compute
//! lengths, sort by id and build the successor adjacency (CSR).

use std::path::Path;

use super::error::GraphError;
use super::id::segment_id;
use super::import::{decimicro_to_deg, OsmData};
use super::segment::{BBox, Segment};
use super::tags::Directions;
use crate::geo::haversine_m;

/// What the importer kept and skipped, for logs and `graph info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Drivable ways found.
    pub ways_kept: u64,
    /// Drivable ways with fewer than two distinct nodes, skipped.
    pub ways_degenerate: u64,
    /// Way pieces between split points.
    pub pieces: u64,
    /// Pieces skipped because a node reference had no (plausible) coordinates.
    pub pieces_missing_nodes: u64,
    /// Elements the reader could not parse, or over the size limits of `import`, skipped.
    pub malformed_elements: u64,
}

/// The arrays of a graph before they are laid out into the file image.
pub(crate) struct GraphParts {
    pub segments: Vec<Segment>,
    /// `segments.len() + 1` offsets into `geometry`.
    pub geom_offsets: Vec<u64>,
    /// `[lat, lon]` degrees.
    pub geometry: Vec<[f64; 2]>,
    /// `segments.len() + 1` offsets into `successors`.
    pub succ_offsets: Vec<u64>,
    pub successors: Vec<u32>,
    pub bbox: BBox,
}

struct Draft {
    segment: Segment,
    geom_start: usize,
    geom_len: usize,
    reversed: bool,
}

/// Splits ways into directed segments. `source` only names the input in errors.
pub(crate) fn build_parts(
    mut data: OsmData,
    source: &Path,
) -> Result<(GraphParts, ImportStats), GraphError> {
    let mut stats = ImportStats {
        ways_kept: data.ways.len() as u64,
        malformed_elements: data.malformed_elements,
        ..ImportStats::default()
    };
    for way in &mut data.ways {
        way.refs.dedup();
    }

    // A node is a split point when it is referenced twice or more among all kept ways
    // (by two ways, or twice by one way), or when it ends a way.
    let mut refs: Vec<i64> = data
        .ways
        .iter()
        .filter(|w| w.refs.len() >= 2)
        .flat_map(|w| w.refs.iter().copied())
        .collect();
    refs.sort_unstable();
    let is_shared = |id: i64| {
        let first = refs.partition_point(|&r| r < id);
        refs.get(first + 1) == Some(&id)
    };

    // Piece geometry, forward order; drafts point into it.
    let mut points: Vec<[f64; 2]> = Vec::new();
    let mut drafts: Vec<Draft> = Vec::new();
    let mut occurrences: Vec<((i64, i64), u32)> = Vec::new();
    for way in &data.ways {
        let refs = &way.refs;
        if refs.len() < 2 {
            stats.ways_degenerate += 1;
            continue;
        }
        occurrences.clear();
        let mut next_occurrence = |from: i64, to: i64| -> u32 {
            match occurrences.iter_mut().find(|(k, _)| *k == (from, to)) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    occurrences.push(((from, to), 0));
                    0
                }
            }
        };
        let last = refs.len() - 1;
        let mut start = 0;
        for end in 1..=last {
            if end != last && !is_shared(refs[end]) {
                continue;
            }
            let piece = &refs[start..=end];
            start = end;
            stats.pieces += 1;
            let (from, to) = (piece[0], piece[piece.len() - 1]);
            let forward_occurrence = next_occurrence(from, to);
            let backward_occurrence = next_occurrence(to, from);

            let geom_start = points.len();
            let mut complete = true;
            for &node in piece {
                match data.node(node) {
                    Some((lat, lon)) => points.push([decimicro_to_deg(lat), decimicro_to_deg(lon)]),
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete {
                points.truncate(geom_start);
                stats.pieces_missing_nodes += 1;
                continue;
            }
            let geom = &points[geom_start..];
            let length_m: f64 = geom
                .windows(2)
                .map(|w| haversine_m(w[0][0], w[0][1], w[1][0], w[1][1]))
                .sum();
            let attrs = way.attrs;
            let oneway = u8::from(attrs.directions != Directions::Both);
            let template = Segment {
                segment_id: 0,
                osm_way_id: way.id,
                from_node_id: from,
                to_node_id: to,
                length_m,
                speed_limit_kmh: attrs.speed_forward_kmh,
                road_class_code: attrs.class.code(),
                oneway,
                _reserved: [0; 2],
            };
            if attrs.directions != Directions::Backward {
                drafts.push(Draft {
                    segment: Segment {
                        segment_id: segment_id(way.id, from, to, forward_occurrence),
                        ..template
                    },
                    geom_start,
                    geom_len: piece.len(),
                    reversed: false,
                });
            }
            if attrs.directions != Directions::Forward {
                drafts.push(Draft {
                    segment: Segment {
                        segment_id: segment_id(way.id, to, from, backward_occurrence),
                        from_node_id: to,
                        to_node_id: from,
                        speed_limit_kmh: attrs.speed_backward_kmh,
                        ..template
                    },
                    geom_start,
                    geom_len: piece.len(),
                    reversed: true,
                });
            }
        }
    }
    drop(refs);

    if drafts.is_empty() {
        return Err(GraphError::NoDrivableRoads {
            path: source.to_path_buf(),
        });
    }
    if u32::try_from(drafts.len()).is_err() {
        return Err(GraphError::TooLarge {
            path: source.to_path_buf(),
            reason: format!("{} segments (at most 2^32 - 1)", drafts.len()),
        });
    }

    drafts.sort_unstable_by_key(|d| d.segment.segment_id);
    if let Some(pair) = drafts
        .windows(2)
        .find(|p| p[0].segment.segment_id == p[1].segment.segment_id)
    {
        let key = |s: &Segment| (s.osm_way_id, s.from_node_id, s.to_node_id);
        return Err(GraphError::IdCollision {
            path: source.to_path_buf(),
            segment_id: pair[0].segment.segment_id,
            first: key(&pair[0].segment),
            second: key(&pair[1].segment),
        });
    }

    let mut bbox = BBox::empty();
    let mut segments = Vec::with_capacity(drafts.len());
    let mut geom_offsets = Vec::with_capacity(drafts.len() + 1);
    let mut geometry = Vec::with_capacity(drafts.iter().map(|d| d.geom_len).sum::<usize>());
    geom_offsets.push(0);
    for d in &drafts {
        segments.push(d.segment);
        let piece = &points[d.geom_start..d.geom_start + d.geom_len];
        if d.reversed {
            geometry.extend(piece.iter().rev());
        } else {
            geometry.extend_from_slice(piece);
        }
        geom_offsets.push(geometry.len() as u64);
    }
    drop(points);
    for &p in &geometry {
        bbox.extend(p);
    }

    let (succ_offsets, successors) = successors_csr(&segments);
    Ok((
        GraphParts {
            segments,
            geom_offsets,
            geometry,
            succ_offsets,
            successors,
            bbox,
        },
        stats,
    ))
}

/// For each segment, the indices of the segments leaving its end node, ascending. U-turns
/// onto the reverse twin are included: whether to allow them is the router's choice.
fn successors_csr(segments: &[Segment]) -> (Vec<u64>, Vec<u32>) {
    let mut by_from: Vec<(i64, u32)> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.from_node_id, i as u32))
        .collect();
    by_from.sort_unstable();
    let mut offsets = Vec::with_capacity(segments.len() + 1);
    let mut successors = Vec::with_capacity(segments.len() * 3);
    offsets.push(0);
    for s in segments {
        let first = by_from.partition_point(|&(node, _)| node < s.to_node_id);
        successors.extend(
            by_from[first..]
                .iter()
                .take_while(|&&(node, _)| node == s.to_node_id)
                .map(|&(_, i)| i),
        );
        offsets.push(successors.len() as u64);
    }
    (offsets, successors)
}
