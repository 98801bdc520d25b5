//! Stable segment ids: a documented hash of (OSM way id, from node id, to node id), so the
//! same OSM data always gives the same ids and editing one way never renumbers another.
//!
//! # Derivation (reproducible in any language)
//!
//! ```text
//! bytes = le_i64(osm_way_id) ++ le_i64(from_node_id) ++ le_i64(to_node_id)   // 24 bytes
//! if occurrence > 0 { bytes ++= le_u32(occurrence) }                         // 28 bytes
//! h = 0xcbf29ce484222325                                   // FNV-1a 64 offset basis
//! for b in bytes { h = (h XOR b) * 0x100000001b3 mod 2^64 } // FNV-1a 64 prime
//! segment_id = h AND 0x7fff_ffff_ffff_ffff                 // 63 bits: fits a signed int64
//! ```
//!
//! `le_i64` is the two's-complement little-endian encoding. `occurrence` disambiguates the
//! rare way that yields two directed pieces with the same (from, to) node pair (a way that
//! runs over the same two junctions twice, or a closed way with no other junction, whose
//! forward and backward pieces both run from node A to node A): the way's pieces are
//! enumerated in way order, for each piece its forward direction and then its backward one
//! (both counted whether or not traffic may use them, so a `oneway` edit changes no id), and
//! the k-th directed piece (counting from 0) with a given (from, to) gets `occurrence = k`.
//! Nearly every segment has occurrence 0, i.e. the plain 24-byte form. Pieces dropped for
//! missing node coordinates still count, so a clipped extract gives the same ids.
//!
//! The id depends on nothing but these three numbers (and the occurrence, which depends only
//! on the same way), so adding, removing or editing another way never changes it.
//! Collisions between different triples are astronomically unlikely (~n²/2⁶⁴); the importer
//! detects them and fails with `GraphError::IdCollision` rather than silently merging.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The stable id of the directed piece of way `osm_way_id` from `from_node_id` to
/// `to_node_id` (see the module docs).
///
/// ```
/// use pipeline::graph::segment_id;
/// assert_eq!(segment_id(1, 2, 3, 0), 0x5a2b_fb22_5e0d_1f05);
/// assert_ne!(segment_id(1, 2, 3, 0), segment_id(1, 3, 2, 0));
/// ```
pub fn segment_id(osm_way_id: i64, from_node_id: i64, to_node_id: i64, occurrence: u32) -> u64 {
    let mut bytes = [0u8; 28];
    bytes[0..8].copy_from_slice(&osm_way_id.to_le_bytes());
    bytes[8..16].copy_from_slice(&from_node_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&to_node_id.to_le_bytes());
    let len = if occurrence == 0 {
        24
    } else {
        bytes[24..28].copy_from_slice(&occurrence.to_le_bytes());
        28
    };
    fnv1a64(&bytes[..len]) & 0x7fff_ffff_ffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_reference_vectors() {
        // Published FNV test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn occurrence_changes_the_id_and_fits_i64() {
        let a = segment_id(42, 7, 8, 0);
        let b = segment_id(42, 7, 8, 1);
        assert_ne!(a, b);
        assert!(a <= i64::MAX as u64 && b <= i64::MAX as u64);
        assert_ne!(segment_id(-1, 7, 8, 0), segment_id(1, 7, 8, 0));
    }
}
