//! The fixed-size records of a road graph (`Segment`, `BBox`), laid out exactly as they are
//! stored in the `.graph` file (little-endian, `#[repr(C)]`, no padding), so a loaded file
//! is used in place.

use bytemuck::{Pod, Zeroable};

use super::class::RoadClass;

/// One directed road segment: a piece of one OSM way between two junctions (or way ends),
/// travelled in one direction. 48 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct Segment {
    /// Stable id, see [`crate::graph::id`]. Always < 2^63.
    pub segment_id: u64,
    pub osm_way_id: i64,
    pub from_node_id: i64,
    pub to_node_id: i64,
    /// Great-circle length along the polyline, metres.
    pub length_m: f64,
    /// Legal (or class-default) speed in the direction of travel, km/h.
    pub speed_limit_kmh: f32,
    /// [`RoadClass`] code; use [`Segment::road_class`].
    pub road_class_code: u8,
    /// 1 when the way is open in one direction only, else 0; use [`Segment::is_oneway`].
    pub oneway: u8,
    pub _reserved: [u8; 2],
}

impl Segment {
    /// The road class. Codes are validated when a graph is built or loaded.
    pub fn road_class(&self) -> RoadClass {
        RoadClass::from_code(self.road_class_code).unwrap_or(RoadClass::Road)
    }

    pub fn is_oneway(&self) -> bool {
        self.oneway != 0
    }

    pub fn speed_limit_mps(&self) -> f64 {
        f64::from(self.speed_limit_kmh) / 3.6
    }

    /// Free-flow travel time at the speed limit, seconds.
    pub fn free_flow_time_s(&self) -> f64 {
        self.length_m / self.speed_limit_mps()
    }
}

/// A latitude/longitude bounding box in degrees.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct BBox {
    pub min_lat: f64,
    pub min_lon: f64,
    pub max_lat: f64,
    pub max_lon: f64,
}

impl BBox {
    pub fn centre(&self) -> (f64, f64) {
        (
            (self.min_lat + self.max_lat) / 2.0,
            (self.min_lon + self.max_lon) / 2.0,
        )
    }

    pub(crate) fn empty() -> Self {
        BBox {
            min_lat: f64::INFINITY,
            min_lon: f64::INFINITY,
            max_lat: f64::NEG_INFINITY,
            max_lon: f64::NEG_INFINITY,
        }
    }

    pub(crate) fn extend(&mut self, [lat, lon]: [f64; 2]) {
        self.min_lat = self.min_lat.min(lat);
        self.min_lon = self.min_lon.min(lon);
        self.max_lat = self.max_lat.max(lat);
        self.max_lon = self.max_lon.max(lon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_are_fixed() {
        assert_eq!(std::mem::size_of::<Segment>(), 48);
        assert_eq!(std::mem::size_of::<BBox>(), 32);
    }
}
