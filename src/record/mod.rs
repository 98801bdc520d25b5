//! The pipeline's records (ARCHITECTURE.md, "Records"): one Rust type each, one Arrow
//! schema, and two wire encodings (JSON for people, protobuf from `schemas/pipeline.proto`
//! for machines).
//!
//! Times are UTC epoch milliseconds. Segment ids are the graph's stable 63-bit ids.

mod arrow;
mod codec;
pub mod limits;
mod types;

pub use self::arrow::{ArrowError, ArrowRecord};
pub use self::codec::{DecodeError, Encoding, WireRecord};
pub use self::limits::DecodeLimits;
pub use self::types::{
    observation_flags, MatchedPoint, Probe, RecordKind, SegmentObservation, SegmentSpeed,
};

/// Generated protobuf messages (`pipeline.v1`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/pipeline.v1.rs"));
}
