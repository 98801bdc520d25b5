//! Input size limits shared by every decoder (JSON and protobuf payloads, the Parquet
//! reader): a record past them is counted as `too_large` and skipped, never held or passed
//! on. The defaults are far above any real probe and far below what could hurt memory.

/// A stream payload (one record) larger than this is not decoded: 1 MiB, Kinesis's own
/// record limit and Kafka's default `message.max.bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// A vehicle id longer than this (in bytes) is refused. Real ids are UUIDs (36), VINs (17)
/// or hashes (64); 256 leaves room for prefixes and namespaces.
pub const DEFAULT_MAX_VEHICLE_ID_BYTES: usize = 256;

/// What a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_record_bytes: usize,
    pub max_vehicle_id_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_vehicle_id_bytes: DEFAULT_MAX_VEHICLE_ID_BYTES,
        }
    }
}

impl DecodeLimits {
    /// Pure validation of a source's `max_record_bytes` and `max_vehicle_id_bytes`.
    pub fn validate(&self, prefix: &str, problems: &mut crate::config::Problems) {
        problems.check(
            self.max_record_bytes >= 1,
            format!("{prefix}.max_record_bytes"),
            "must be at least 1",
        );
        problems.check(
            self.max_vehicle_id_bytes >= 1,
            format!("{prefix}.max_vehicle_id_bytes"),
            "must be at least 1",
        );
    }
}

/// The serde default of `max_record_bytes`.
pub fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

/// The serde default of `max_vehicle_id_bytes`.
pub fn default_max_vehicle_id_bytes() -> usize {
    DEFAULT_MAX_VEHICLE_ID_BYTES
}
