//! The `.graph` file: a compact little-endian image of a [`RoadGraph`] that loads by mmap
//! with zero copies (memmap2 + bytemuck casts in place).
//!
//! # Layout (format version 1)
//!
//! All integers and floats little-endian; every section starts at a multiple of 8 bytes and
//! is zero-padded to one, so mapped sections can be cast to `u64`/`f64` arrays in place.
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `b"PIPEGRPH"` |
//! | 8 | 4 | format version (u32) |
//! | 12 | 4 | CRC-32 (ISO-HDLC, as `crc32fast`) of bytes `16..file_len` |
//! | 16 | 136 | rest of the table of contents: file_len, graph_version, counts (segments, geometry points, successors), bbox (4 × f64: min_lat, min_lon, max_lat, max_lon), byte offsets of the five sections, 4 reserved u64 |
//! | … | 48 × n | segments ([`Segment`](super::Segment)), sorted by `segment_id` |
//! | … | 8 × (n+1) | geometry offsets (u64): segment i's points are `geom_offsets[i]..geom_offsets[i+1]` |
//! | … | 16 × points | geometry points `[lat, lon]` (f64 degrees), in the direction of travel |
//! | … | 8 × (n+1) | successor offsets (u64), same CSR scheme |
//! | … | 4 × successors | successor segment indices (u32) |
//!
//! `graph_version` is a 63-bit content hash of every byte after the table of contents,
//! taken as little-endian u64 words `w`: `h = 0xcbf29ce484222325; h = (h ^ w) *
//! 0x100000001b3` for each word, then the SplitMix64 finaliser, masked to 63 bits. It changes
//! whenever any segment, geometry or adjacency changes, and records carry it as
//! `graph_version`.
//!
//! Loading checks magic, version, length, checksum and every offset and index, so a loaded
//! graph never panics on access, whatever the file held.

use std::fs::File;
use std::io::Write;
use std::mem::size_of;
use std::ops::Range;
use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::builder::GraphParts;
use super::class::RoadClass;
use super::error::GraphError;
use super::segment::{BBox, Segment};

pub const MAGIC: [u8; 8] = *b"PIPEGRPH";
/// The graph file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The table of contents at the start of the file.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct Toc {
    pub magic: [u8; 8],
    pub format_version: u32,
    pub body_crc32: u32,
    pub file_len: u64,
    pub graph_version: u64,
    pub segment_count: u64,
    pub point_count: u64,
    pub successor_count: u64,
    pub bbox: BBox,
    pub segments_offset: u64,
    pub geom_offsets_offset: u64,
    pub geometry_offset: u64,
    pub succ_offsets_offset: u64,
    pub successors_offset: u64,
    pub reserved: [u64; 4],
}

pub(crate) const TOC_LEN: usize = size_of::<Toc>();

/// Byte ranges of the sections inside the image, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sections {
    pub segments: Range<usize>,
    pub geom_offsets: Range<usize>,
    pub geometry: Range<usize>,
    pub succ_offsets: Range<usize>,
    pub successors: Range<usize>,
}

/// The bytes of a graph: built in memory (a `Vec<u64>` keeps them 8-aligned) or mapped.
pub(crate) enum Image {
    Heap(Vec<u64>),
    Mapped(memmap2::Mmap),
}

impl Image {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Image::Heap(words) => bytemuck::cast_slice(words),
            Image::Mapped(map) => map,
        }
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Lays the parts out into a file image (header, sections, version, checksum).
pub(crate) fn encode(parts: &GraphParts) -> Vec<u64> {
    let n = parts.segments.len();
    let mut end = TOC_LEN;
    let mut place = |len: usize| {
        let at = end;
        end += pad8(len);
        at
    };
    let segments_offset = place(n * size_of::<Segment>());
    let geom_offsets_offset = place((n + 1) * 8);
    let geometry_offset = place(parts.geometry.len() * 16);
    let succ_offsets_offset = place((n + 1) * 8);
    let successors_offset = place(parts.successors.len() * 4);

    let mut words = vec![0u64; end / 8];
    {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        let mut put = |at: usize, src: &[u8]| bytes[at..at + src.len()].copy_from_slice(src);
        put(segments_offset, bytemuck::cast_slice(&parts.segments));
        put(
            geom_offsets_offset,
            bytemuck::cast_slice(&parts.geom_offsets),
        );
        put(geometry_offset, bytemuck::cast_slice(&parts.geometry));
        put(
            succ_offsets_offset,
            bytemuck::cast_slice(&parts.succ_offsets),
        );
        put(successors_offset, bytemuck::cast_slice(&parts.successors));
    }
    let toc = Toc {
        magic: MAGIC,
        format_version: FORMAT_VERSION,
        body_crc32: 0,
        file_len: end as u64,
        graph_version: content_hash(&words[TOC_LEN / 8..]),
        segment_count: n as u64,
        point_count: parts.geometry.len() as u64,
        successor_count: parts.successors.len() as u64,
        bbox: parts.bbox,
        segments_offset: segments_offset as u64,
        geom_offsets_offset: geom_offsets_offset as u64,
        geometry_offset: geometry_offset as u64,
        succ_offsets_offset: succ_offsets_offset as u64,
        successors_offset: successors_offset as u64,
        reserved: [0; 4],
    };
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    bytes[..TOC_LEN].copy_from_slice(bytemuck::bytes_of(&toc));
    let crc = crc32fast::hash(&bytes[16..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    words
}

/// The content hash behind `graph_version` (see the module docs).
fn content_hash(words: &[u64]) -> u64 {
    let mut h = words.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &w| {
        (h ^ u64::from_le(w)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // SplitMix64 finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h & 0x7fff_ffff_ffff_ffff
}

/// Checks an image and returns its table of contents and section ranges.
pub(crate) fn validate(bytes: &[u8], path: &Path) -> Result<(Toc, Sections), GraphError> {
    let corrupt = |reason: String| GraphError::corrupt(path, reason);
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(GraphError::NotAGraphFile {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() < 12 {
        return Err(corrupt(format!("truncated: {} bytes", bytes.len())));
    }
    let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if found != FORMAT_VERSION {
        return Err(GraphError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
        });
    }
    if bytes.len() < TOC_LEN {
        return Err(corrupt(format!(
            "truncated: {} bytes, the header alone is {TOC_LEN}",
            bytes.len()
        )));
    }
    let toc: Toc = bytemuck::pod_read_unaligned(&bytes[..TOC_LEN]);
    if toc.file_len != bytes.len() as u64 {
        return Err(corrupt(format!(
            "truncated or padded: the header says {} bytes, the file has {}",
            toc.file_len,
            bytes.len()
        )));
    }
    let computed = crc32fast::hash(&bytes[16..]);
    if computed != toc.body_crc32 {
        return Err(corrupt(format!(
            "checksum mismatch: stored {:08x}, computed {computed:08x}",
            toc.body_crc32
        )));
    }

    let section =
        |name: &str, offset: u64, count: u64, size: u64| -> Result<Range<usize>, GraphError> {
            let bad = || corrupt(format!("section {name} out of bounds"));
            let start = usize::try_from(offset).map_err(|_| bad())?;
            let len = count
                .checked_mul(size)
                .and_then(|l| usize::try_from(l).ok())
                .ok_or_else(bad)?;
            let end = start.checked_add(len).ok_or_else(bad)?;
            if start % 8 != 0 || start < TOC_LEN || end > bytes.len() {
                return Err(bad());
            }
            Ok(start..end)
        };
    let n = toc.segment_count;
    let sections = Sections {
        segments: section(
            "segments",
            toc.segments_offset,
            n,
            size_of::<Segment>() as u64,
        )?,
        geom_offsets: section(
            "geom_offsets",
            toc.geom_offsets_offset,
            n.saturating_add(1),
            8,
        )?,
        geometry: section("geometry", toc.geometry_offset, toc.point_count, 16)?,
        succ_offsets: section(
            "succ_offsets",
            toc.succ_offsets_offset,
            n.saturating_add(1),
            8,
        )?,
        successors: section("successors", toc.successors_offset, toc.successor_count, 4)?,
    };
    if n > u64::from(u32::MAX) {
        return Err(corrupt(format!("{n} segments exceed the u32 index space")));
    }

    let cast = |r: &Range<usize>| bytes.get(r.clone()).unwrap_or_default();
    let segments: &[Segment] =
        bytemuck::try_cast_slice(cast(&sections.segments)).map_err(|e| corrupt(e.to_string()))?;
    let geom_offsets: &[u64] = bytemuck::try_cast_slice(cast(&sections.geom_offsets))
        .map_err(|e| corrupt(e.to_string()))?;
    let succ_offsets: &[u64] = bytemuck::try_cast_slice(cast(&sections.succ_offsets))
        .map_err(|e| corrupt(e.to_string()))?;
    let successors: &[u32] =
        bytemuck::try_cast_slice(cast(&sections.successors)).map_err(|e| corrupt(e.to_string()))?;

    for (i, pair) in segments.windows(2).enumerate() {
        if pair[0].segment_id >= pair[1].segment_id {
            return Err(corrupt(format!(
                "segments not sorted by id at index {}",
                i + 1
            )));
        }
    }
    if let Some(i) = segments
        .iter()
        .position(|s| RoadClass::from_code(s.road_class_code).is_none())
    {
        return Err(corrupt(format!(
            "segment {i} has an unknown road class code"
        )));
    }
    check_csr("geometry", geom_offsets, toc.point_count, 2, path)?;
    check_csr("successor", succ_offsets, toc.successor_count, 0, path)?;
    if successors.iter().any(|&s| u64::from(s) >= n) {
        return Err(corrupt("successor index out of range".to_string()));
    }
    // NaN or out-of-range coordinates made the spatial index panic (rstar compares with
    // `partial_cmp().unwrap()`); found by the `graph_file` fuzz target. The importer only
    // writes plausible points, and the bbox (the projection's centre) must be finite.
    let geometry: &[[f64; 2]] =
        bytemuck::try_cast_slice(cast(&sections.geometry)).map_err(|e| corrupt(e.to_string()))?;
    if let Some(i) = geometry
        .iter()
        .position(|&[lat, lon]| !crate::geo::is_plausible_coordinate(lat, lon))
    {
        return Err(corrupt(format!(
            "geometry point {i} is not a valid coordinate"
        )));
    }
    let b = toc.bbox;
    let in_range =
        |lat: f64, lon: f64| (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    let bbox_ok = in_range(b.min_lat, b.min_lon)
        && in_range(b.max_lat, b.max_lon)
        && b.min_lat <= b.max_lat
        && b.min_lon <= b.max_lon;
    if !geometry.is_empty() && !bbox_ok {
        return Err(corrupt(
            "bounding box is not a valid coordinate range".to_string(),
        ));
    }
    Ok((toc, sections))
}

/// CSR offsets: start at 0, never decrease, span at least `min_len` each, end at `total`.
fn check_csr(
    what: &str,
    offsets: &[u64],
    total: u64,
    min_len: u64,
    path: &Path,
) -> Result<(), GraphError> {
    let ok = offsets.first() == Some(&0)
        && offsets.last() == Some(&total)
        && offsets
            .windows(2)
            .all(|w| w[1] >= w[0] && w[1] - w[0] >= min_len);
    if ok {
        Ok(())
    } else {
        Err(GraphError::corrupt(
            path,
            format!("{what} offsets are inconsistent"),
        ))
    }
}

/// Writes an image atomically: a temporary file beside `path`, then a rename.
pub(crate) fn write_image(bytes: &[u8], path: &Path) -> Result<(), GraphError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        GraphError::io(path, e)
    })
}

/// Maps a graph file read-only. Short files are read instead (mmap of an empty file fails),
/// which still gives the right error from [`validate`].
pub(crate) fn map_file(path: &Path) -> Result<Image, GraphError> {
    let file = File::open(path).map_err(|e| GraphError::io(path, e))?;
    let len = file.metadata().map_err(|e| GraphError::io(path, e))?.len();
    if len < TOC_LEN as u64 {
        let bytes = std::fs::read(path).map_err(|e| GraphError::io(path, e))?;
        return Err(validate(&bytes, path)
            .err()
            .unwrap_or_else(|| GraphError::corrupt(path, "truncated")));
    }
    // SAFETY: the map is read-only and every byte is validated before use. Like every
    // mmap-based reader, we rely on nobody truncating or rewriting the file while it is
    // mapped; `RoadGraph::write` replaces files by rename, which never touches a mapping.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GraphError::io(path, e))?;
    Ok(Image::Mapped(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::osm_writer::synthetic_grid;
    use crate::graph::ImportConfig;

    /// Re-seals an image after tampering, as a malicious or buggy writer would.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    fn image() -> Vec<u8> {
        let g = synthetic_grid(3, 3, 100.0, 47.0, 9.0)
            .build_graph(&ImportConfig::default())
            .unwrap();
        let path = std::env::temp_dir().join(format!("graph-unit-{}.graph", std::process::id()));
        g.write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        bytes
    }

    fn toc_of(bytes: &[u8]) -> Toc {
        bytemuck::pod_read_unaligned(&bytes[..TOC_LEN])
    }

    fn put_toc(bytes: &mut [u8], toc: &Toc) {
        bytes[..TOC_LEN].copy_from_slice(bytemuck::bytes_of(toc));
        reseal(bytes);
    }

    fn expect_corrupt(bytes: &[u8]) -> String {
        // Copy into an 8-aligned buffer, as a mapped file would be.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let aligned = &bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()];
        match validate(aligned, Path::new("x.graph")) {
            Err(GraphError::Corrupt { reason, .. }) => reason,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn sealed_but_inconsistent_files_are_rejected_not_panicking() {
        let good = image();

        let mut bytes = good.clone();
        let mut toc = toc_of(&bytes);
        toc.segments_offset = u64::MAX - 3;
        put_toc(&mut bytes, &toc);
        assert!(expect_corrupt(&bytes).contains("out of bounds"));

        let mut bytes = good.clone();
        let mut toc = toc_of(&bytes);
        toc.geometry_offset += 4;
        put_toc(&mut bytes, &toc);
        assert!(expect_corrupt(&bytes).contains("out of bounds"));

        // A successor index pointing past the end.
        let mut bytes = good.clone();
        let toc = toc_of(&bytes);
        let at = toc.successors_offset as usize;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bytes);
        assert!(expect_corrupt(&bytes).contains("successor index"));

        // Geometry offsets that run backwards.
        let mut bytes = good.clone();
        let at = toc.geom_offsets_offset as usize + 8;
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal(&mut bytes);
        assert!(expect_corrupt(&bytes).contains("geometry offsets"));

        // Segments out of id order.
        let mut bytes = good.clone();
        let at = toc.segments_offset as usize;
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal(&mut bytes);
        assert!(expect_corrupt(&bytes).contains("not sorted"));

        // A NaN geometry point (it made the spatial index panic).
        let mut bytes = good.clone();
        let point_at = toc.geometry_offset as usize;
        bytes[point_at..point_at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
        reseal(&mut bytes);
        assert!(expect_corrupt(&bytes).contains("geometry point 0"));

        // A bounding box (the projection's centre) that is not finite.
        let mut bytes = good.clone();
        let mut bad_bbox = toc;
        bad_bbox.bbox.max_lon = f64::INFINITY;
        put_toc(&mut bytes, &bad_bbox);
        assert!(expect_corrupt(&bytes).contains("bounding box"));

        // An unknown road class code (offset 44 inside the first segment record).
        let mut bytes = good;
        bytes[at + 44] = 200;
        reseal(&mut bytes);
        assert!(expect_corrupt(&bytes).contains("road class"));
    }
}
