//! Wire encodings of the records: JSON (for people and any Kafka client) and protobuf (compact).

use prost::Message;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::limits::DecodeLimits;
use super::proto;
use super::types::{MatchedPoint, Probe, SegmentObservation, SegmentSpeed};

/// How a record is written on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Json,
    Protobuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("protobuf message lacks required field `{0}`")]
    MissingField(&'static str),
    #[error("record of {bytes} bytes is over the limit of {limit} (max_record_bytes)")]
    TooLarge { bytes: usize, limit: usize },
    #[error("vehicle id of {bytes} bytes is over the limit of {limit} (max_vehicle_id_bytes)")]
    VehicleIdTooLong { bytes: usize, limit: usize },
}

impl DecodeError {
    /// The drop reason a source counts this error under: `too_large` for a record over a
    /// size limit, `undecodable` for anything else.
    pub fn drop_reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } | DecodeError::VehicleIdTooLong { .. } => "too_large",
            _ => "undecodable",
        }
    }
}

/// A record that travels on a stream: it has a key and two encodings.
pub trait WireRecord: Serialize + DeserializeOwned + Sized {
    type Proto: Message + Default + From<Self>;

    /// The stream key: vehicle_id for probes and matched points, segment_id otherwise.
    fn key(&self) -> Vec<u8>;

    fn from_proto(message: Self::Proto) -> Result<Self, DecodeError>;

    fn encode(&self, encoding: Encoding) -> Vec<u8>
    where
        Self: Clone,
    {
        match encoding {
            // Serialising these plain structs cannot fail: no maps with non-string keys.
            Encoding::Json => serde_json::to_vec(self).unwrap_or_default(),
            Encoding::Protobuf => Self::Proto::from(self.clone()).encode_to_vec(),
        }
    }

    fn decode(bytes: &[u8], encoding: Encoding) -> Result<Self, DecodeError> {
        match encoding {
            Encoding::Json => Ok(serde_json::from_slice(bytes)?),
            Encoding::Protobuf => Self::from_proto(Self::Proto::decode(bytes)?),
        }
    }

    /// The length in bytes of the record's vehicle id, for records that carry one.
    fn vehicle_id_bytes(&self) -> Option<usize> {
        None
    }

    /// [`WireRecord::decode`] within size limits: a payload over `max_record_bytes` is
    /// refused before it is parsed, a vehicle id over `max_vehicle_id_bytes` after.
    fn decode_limited(
        bytes: &[u8],
        encoding: Encoding,
        limits: &DecodeLimits,
    ) -> Result<Self, DecodeError> {
        if bytes.len() > limits.max_record_bytes {
            return Err(DecodeError::TooLarge {
                bytes: bytes.len(),
                limit: limits.max_record_bytes,
            });
        }
        let record = Self::decode(bytes, encoding)?;
        match record.vehicle_id_bytes() {
            Some(n) if n > limits.max_vehicle_id_bytes => Err(DecodeError::VehicleIdTooLong {
                bytes: n,
                limit: limits.max_vehicle_id_bytes,
            }),
            _ => Ok(record),
        }
    }
}

impl From<Probe> for proto::Probe {
    fn from(p: Probe) -> Self {
        proto::Probe {
            vehicle_id: p.vehicle_id,
            ts_ms: p.ts_ms,
            lat: p.lat,
            lon: p.lon,
            speed_mps: p.speed_mps,
            heading_deg: p.heading_deg,
            accuracy_m: p.accuracy_m,
        }
    }
}

impl From<proto::Probe> for Probe {
    fn from(p: proto::Probe) -> Self {
        Probe {
            vehicle_id: p.vehicle_id,
            ts_ms: p.ts_ms,
            lat: p.lat,
            lon: p.lon,
            speed_mps: p.speed_mps,
            heading_deg: p.heading_deg,
            accuracy_m: p.accuracy_m,
        }
    }
}

impl WireRecord for Probe {
    type Proto = proto::Probe;
    fn key(&self) -> Vec<u8> {
        self.vehicle_id.as_bytes().to_vec()
    }
    fn vehicle_id_bytes(&self) -> Option<usize> {
        Some(self.vehicle_id.len())
    }
    fn from_proto(message: proto::Probe) -> Result<Self, DecodeError> {
        Ok(message.into())
    }
}

impl From<MatchedPoint> for proto::MatchedPoint {
    fn from(m: MatchedPoint) -> Self {
        proto::MatchedPoint {
            probe: Some(m.probe.into()),
            segment_id: m.segment_id,
            offset_m: m.offset_m,
            snapped_lat: m.snapped_lat,
            snapped_lon: m.snapped_lon,
            distance_m: m.distance_m,
        }
    }
}

impl WireRecord for MatchedPoint {
    type Proto = proto::MatchedPoint;
    fn key(&self) -> Vec<u8> {
        self.probe.vehicle_id.as_bytes().to_vec()
    }
    fn vehicle_id_bytes(&self) -> Option<usize> {
        Some(self.probe.vehicle_id.len())
    }
    fn from_proto(m: proto::MatchedPoint) -> Result<Self, DecodeError> {
        Ok(MatchedPoint {
            probe: m.probe.ok_or(DecodeError::MissingField("probe"))?.into(),
            segment_id: m.segment_id,
            offset_m: m.offset_m,
            snapped_lat: m.snapped_lat,
            snapped_lon: m.snapped_lon,
            distance_m: m.distance_m,
        })
    }
}

impl From<SegmentObservation> for proto::SegmentObservation {
    fn from(o: SegmentObservation) -> Self {
        proto::SegmentObservation {
            observation_id: o.observation_id,
            segment_id: o.segment_id,
            vehicle_id: o.vehicle_id,
            enter_ts_ms: o.enter_ts_ms,
            exit_ts_ms: o.exit_ts_ms,
            traversed_m: o.traversed_m,
            speed_mps: o.speed_mps,
            next_segment_id: o.next_segment_id,
            flags: o.flags,
        }
    }
}

impl WireRecord for SegmentObservation {
    type Proto = proto::SegmentObservation;
    fn key(&self) -> Vec<u8> {
        self.segment_id.to_string().into_bytes()
    }
    fn vehicle_id_bytes(&self) -> Option<usize> {
        Some(self.vehicle_id.len())
    }
    fn from_proto(o: proto::SegmentObservation) -> Result<Self, DecodeError> {
        Ok(SegmentObservation {
            observation_id: o.observation_id,
            segment_id: o.segment_id,
            vehicle_id: o.vehicle_id,
            enter_ts_ms: o.enter_ts_ms,
            exit_ts_ms: o.exit_ts_ms,
            traversed_m: o.traversed_m,
            speed_mps: o.speed_mps,
            next_segment_id: o.next_segment_id,
            flags: o.flags,
        })
    }
}

impl From<SegmentSpeed> for proto::SegmentSpeed {
    fn from(s: SegmentSpeed) -> Self {
        proto::SegmentSpeed {
            segment_id: s.segment_id,
            window_start_ms: s.window_start_ms,
            window_end_ms: s.window_end_ms,
            estimator: s.estimator.to_string(),
            samples: s.samples,
            vehicles: s.vehicles,
            speed_mps: s.speed_mps,
            p15_speed_mps: s.p15_speed_mps,
            p50_speed_mps: s.p50_speed_mps,
            p85_speed_mps: s.p85_speed_mps,
            travel_time_s: s.travel_time_s,
            graph_version: s.graph_version,
            revision: s.revision,
        }
    }
}

impl WireRecord for SegmentSpeed {
    type Proto = proto::SegmentSpeed;
    fn key(&self) -> Vec<u8> {
        self.segment_id.to_string().into_bytes()
    }
    fn from_proto(s: proto::SegmentSpeed) -> Result<Self, DecodeError> {
        Ok(SegmentSpeed {
            segment_id: s.segment_id,
            window_start_ms: s.window_start_ms,
            window_end_ms: s.window_end_ms,
            estimator: s.estimator.into(),
            samples: s.samples,
            vehicles: s.vehicles,
            speed_mps: s.speed_mps,
            p15_speed_mps: s.p15_speed_mps,
            p50_speed_mps: s.p50_speed_mps,
            p85_speed_mps: s.p85_speed_mps,
            travel_time_s: s.travel_time_s,
            graph_version: s.graph_version,
            revision: s.revision,
        })
    }
}
