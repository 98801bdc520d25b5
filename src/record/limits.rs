//! Input size limits shared by every decoder (JSON and protobuf payloads, the Parquet
//! reader): a record past them is counted as `too_large` and skipped, never held or passed
//! on. The defaults are far above any real probe and far below what could hurt memory.

/// A stream payload (one record) larger than this is not decoded: 1 MiB, Kinesis's own
/// record limit and Kafka's default `message.max.bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// A vehicle id longer than this (in bytes) is refused. Real ids are UUIDs (36), VINs (17)
/// or hashes (64); 256 leaves room for prefixes and namespaces.
pub const DEFAULT_MAX_VEHICLE_ID_BYTES: usize = 256;

/// The largest `max_record_bytes` a config may ask for: a source holds up to a batch of
/// records this size, so more would turn a config typo into an out-of-memory.
pub const MAX_MAX_RECORD_BYTES: usize = 256 << 20;

/// The largest `max_vehicle_id_bytes` a config may ask for: every tracked vehicle keeps its
/// id in the clean and assign stages' state.
pub const MAX_MAX_VEHICLE_ID_BYTES: usize = 64 << 10;

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
            (1..=MAX_MAX_RECORD_BYTES).contains(&self.max_record_bytes),
            format!("{prefix}.max_record_bytes"),
            format!("must be between 1 and {MAX_MAX_RECORD_BYTES} (256 MiB)"),
        );
        problems.check(
            (1..=MAX_MAX_VEHICLE_ID_BYTES).contains(&self.max_vehicle_id_bytes),
            format!("{prefix}.max_vehicle_id_bytes"),
            format!("must be between 1 and {MAX_MAX_VEHICLE_ID_BYTES}"),
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
