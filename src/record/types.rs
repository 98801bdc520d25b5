//! Plain Rust types of the records; field names carry their units.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// One GPS fix from one vehicle. Keyed by `vehicle_id` on streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub vehicle_id: String,
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    #[serde(
        default,
        deserialize_with = "f32_in_range",
        skip_serializing_if = "Option::is_none"
    )]
    pub speed_mps: Option<f32>,
    #[serde(
        default,
        deserialize_with = "f32_in_range",
        skip_serializing_if = "Option::is_none"
    )]
    pub heading_deg: Option<f32>,
    #[serde(
        default,
        deserialize_with = "f32_in_range",
        skip_serializing_if = "Option::is_none"
    )]
    pub accuracy_m: Option<f32>,
}

/// An optional 32-bit float that must fit one. Without this check a JSON number beyond
/// `f32::MAX` became infinity inside a `MatchedPoint` (whose probe is flattened), which
/// JSON then wrote back as `null`: a record that changed on the way through a sink. Found
/// by the `decode_json` fuzz target (`testdata/fuzz/decode_json/crash-f32-overflow-*`).
fn f32_in_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(v) if v.is_finite() && v.abs() <= f64::from(f32::MAX) => Ok(Some(v as f32)),
        Some(v) => Err(serde::de::Error::custom(format!(
            "{v} is out of range for a 32-bit float"
        ))),
    }
}

impl Probe {
    /// A probe with only the required fields set.
    pub fn new(vehicle_id: impl Into<String>, ts_ms: i64, lat: f64, lon: f64) -> Self {
        Self {
            vehicle_id: vehicle_id.into(),
            ts_ms,
            lat,
            lon,
            speed_mps: None,
            heading_deg: None,
            accuracy_m: None,
        }
    }
}

/// A probe snapped onto a road segment. Keyed by `vehicle_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedPoint {
    #[serde(flatten)]
    pub probe: Probe,
    pub segment_id: u64,
    /// Distance from the segment's start to the snapped point, along the segment.
    pub offset_m: f64,
    pub snapped_lat: f64,
    pub snapped_lon: f64,
    /// Distance from the raw probe to the road.
    pub distance_m: f64,
}

/// Bits of [`SegmentObservation::flags`].
pub mod observation_flags {
    /// The trace started inside this segment (the vehicle was not seen entering it), or
    /// entered it before the trace's second point (its times depend on where the first
    /// point was put; see `matching::observations`).
    pub const PARTIAL_START: u32 = 1;
    /// The trace ended inside this segment: the vehicle was not seen leaving it.
    pub const PARTIAL_END: u32 = 2;
    /// The path through this segment was inferred across a gap in the probes: its entry or
    /// exit time was interpolated between two consecutive matched points more than
    /// `MatchConfig::gap_flag_ms` apart (see `matching::observations`).
    pub const GAP: u32 = 4;
    /// The vehicle is still on the segment at the exit: the traversal was cut at a time
    /// boundary (`MatchConfig::cut_interval_ms`), and goes on in an observation flagged
    /// `CONTINUED`.
    pub const CONTINUES: u32 = 8;
    /// The entry is a time boundary where the previous part of the same traversal was cut
    /// (see `CONTINUES`), not the segment's start.
    pub const CONTINUED: u32 = 16;
}

/// What one vehicle did on one segment. Keyed by `segment_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentObservation {
    /// Deterministic id for de-duplication by consumers.
    pub observation_id: u64,
    pub segment_id: u64,
    pub vehicle_id: String,
    pub enter_ts_ms: i64,
    pub exit_ts_ms: i64,
    pub traversed_m: f64,
    pub speed_mps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_segment_id: Option<u64>,
    /// See [`observation_flags`].
    pub flags: u32,
}

/// A published speed estimate for one segment, window and estimator. Keyed by `segment_id`;
/// consumers upsert on (segment_id, window_start_ms, estimator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSpeed {
    pub segment_id: u64,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// Borrowed when an aggregator emits it (the few configured names, interned for the
    /// process by [`crate::aggregate::intern_name`]), owned when decoded: a `String` per row,
    /// or even an `Arc` (two atomic operations per row), was a measurable share of emission.
    pub estimator: Cow<'static, str>,
    pub samples: u32,
    pub vehicles: u32,
    pub speed_mps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p15_speed_mps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_speed_mps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p85_speed_mps: Option<f64>,
    pub travel_time_s: f64,
    pub graph_version: u64,
    /// 0 for the first emission of a window; incremented by each late-data revision.
    pub revision: u32,
}

/// The record types, as a closed set (for config validation and file naming).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Probe,
    MatchedPoint,
    SegmentObservation,
    SegmentSpeed,
}

impl RecordKind {
    pub const ALL: [RecordKind; 4] = [
        RecordKind::Probe,
        RecordKind::MatchedPoint,
        RecordKind::SegmentObservation,
        RecordKind::SegmentSpeed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Probe => "probe",
            RecordKind::MatchedPoint => "matched_point",
            RecordKind::SegmentObservation => "segment_observation",
            RecordKind::SegmentSpeed => "segment_speed",
        }
    }

    /// The file name `pipeline replay` gives this record type's output.
    pub fn file_stem(self) -> &'static str {
        match self {
            RecordKind::Probe => "probes",
            RecordKind::MatchedPoint => "matched_points",
            RecordKind::SegmentObservation => "observations",
            RecordKind::SegmentSpeed => "speeds",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
