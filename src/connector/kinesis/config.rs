//! Kinesis source and sink settings: the typed, validated side of the TOML. Validation is
//! pure (no network, no files).

use serde::Deserialize;

use crate::config::Problems;
use crate::record::{Encoding, RecordKind};

/// PutRecords accepts at most this many entries…
pub const MAX_PUT_RECORDS: usize = 500;
/// …and at most this many bytes (data plus partition keys) in one request.
pub const MAX_PUT_BYTES: usize = 5 * 1024 * 1024;
/// One record (data plus partition key) may not exceed this.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// GetRecords returns at most this many records per call.
pub const MAX_GET_RECORDS: i32 = 10_000;

fn default_region() -> String {
    "us-east-1".to_string()
}
fn default_batch_max_records() -> usize {
    MAX_PUT_RECORDS
}
fn default_batch_max_bytes() -> usize {
    MAX_PUT_BYTES
}
fn default_flush_interval_ms() -> u64 {
    100
}
fn default_max_attempts() -> u32 {
    10
}
fn default_retry_base_ms() -> u64 {
    100
}
fn default_retry_max_ms() -> u64 {
    5_000
}

/// A stream as a sink: records keyed (partition key) by vehicle or segment id, written with
/// PutRecords; entries the service reports as failed inside a successful response are
/// retried, alone, with exponential backoff and jitter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSinkConfig {
    pub stream: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// An endpoint override (`http://127.0.0.1:4567` for a local emulator); the regional
    /// AWS endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
    /// Records in one PutRecords request (at most 500).
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// Bytes (data plus partition keys) in one PutRecords request (at most 5 MiB).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// A partly filled request leaves after this long, or as soon as the input is idle.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// PutRecords attempts for one request, the first included, before the sink gives up.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each retry, capped at `retry_max_ms`, with
    /// full jitter.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

/// Where a shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The oldest record still in the stream.
    #[default]
    TrimHorizon,
    /// Only records written after the reader starts. A shard gets its first checkpoint
    /// with its first acknowledged record, so a restart before that starts at LATEST again
    /// (what was written in between is not read).
    Latest,
    /// The first record at or after `start_timestamp_ms`.
    AtTimestamp,
}

fn default_poll_interval_ms() -> u64 {
    200
}
fn default_get_records_limit() -> i32 {
    MAX_GET_RECORDS
}
fn default_source_batch_max_records() -> usize {
    500
}
fn default_checkpoint_interval_ms() -> u64 {
    1_000
}
fn default_shard_refresh_interval_ms() -> u64 {
    10_000
}
fn default_max_lane_drift_ms() -> i64 {
    60_000
}
fn default_instance_count() -> u32 {
    1
}
fn default_checkpoint_dir() -> String {
    "checkpoints/kinesis".to_string()
}

/// A stream as a source: one polling task per owned shard, checkpoints per shard in a file
/// store, moved only past records every sink downstream has acknowledged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    pub stream: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The consumer's name (the Kinesis counterpart of a Kafka group id): checkpoints live
    /// under `checkpoint_dir/application/stream/`, and enhanced fan-out registers under it.
    pub application: String,
    /// The record kind on the stream.
    pub record: RecordKind,
    #[serde(default)]
    pub encoding: Encoding,
    /// Where a shard without a checkpoint starts.
    #[serde(default)]
    pub start_position: StartPosition,
    /// With `start_position = "at_timestamp"`: epoch milliseconds.
    #[serde(default)]
    pub start_timestamp_ms: Option<i64>,
    /// The file checkpoint store. Instances that split a stream must share it (same host
    /// or a shared file system): a child shard waits for its parents' end there.
    #[serde(default = "default_checkpoint_dir")]
    pub checkpoint_dir: String,
    /// How often acknowledged checkpoints are written (also when a shard ends, and at
    /// shutdown).
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// The wait before the next GetRecords of a shard that had nothing new (the service
    /// allows 5 calls per second per shard).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Records per GetRecords call (at most 10 000).
    #[serde(default = "default_get_records_limit")]
    pub get_records_limit: i32,
    /// A response is split into batches of at most this many records, each acknowledged
    /// and checkpointed on its own, so a stage that holds some records for a while (an
    /// aggregate holds what feeds its open windows) does not hold back the checkpoint of a
    /// whole response.
    #[serde(default = "default_source_batch_max_records")]
    pub batch_max_records: usize,
    /// How often ListShards runs to find new shards (after a reshard) and to start children
    /// whose parents have ended.
    #[serde(default = "default_shard_refresh_interval_ms")]
    pub shard_refresh_interval_ms: u64,
    /// Watermark alignment: a shard whose event time runs more than this ahead of the
    /// slowest shard still being read waits until the others catch up (see
    /// `runtime::frontier`).
    #[serde(default = "default_max_lane_drift_ms")]
    pub max_lane_drift_ms: i64,
    /// This instance's index among `instance_count` instances that split the shards.
    #[serde(default)]
    pub instance_index: u32,
    #[serde(default = "default_instance_count")]
    pub instance_count: u32,
    /// Backoff after throttling or a failed call; doubles per failure, capped, with jitter.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Read through enhanced fan-out (a stream consumer named `application`, registered
    /// when missing; SubscribeToShard) instead of polling with GetRecords. Covered by tests
    /// against a mocked SDK only: the emulator does not implement it, and it has not been
    /// run against the live service.
    #[serde(default)]
    pub enhanced_fan_out: bool,
    /// A record (payload) larger than this is not decoded: it is dropped as `too_large`
    /// (and dead-lettered where a dead-letter topic is set).
    #[serde(default = "crate::record::limits::default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// A record whose vehicle id is longer than this (bytes) is dropped as `too_large`.
    #[serde(default = "crate::record::limits::default_max_vehicle_id_bytes")]
    pub max_vehicle_id_bytes: usize,
}

fn check_stream(prefix: &str, stream: &str, problems: &mut Problems) {
    let ok = !stream.is_empty()
        && stream.len() <= 128
        && stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    problems.check(
        ok,
        format!("{prefix}.stream"),
        format!("`{stream}` is not a valid stream name (1-128 of letters, digits, . _ -)"),
    );
}

fn check_client(prefix: &str, region: &str, endpoint: Option<&str>, problems: &mut Problems) {
    problems.check(
        !region.trim().is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'),
        format!("{prefix}.region"),
        format!("`{region}` is not a region name such as eu-west-1"),
    );
    if let Some(e) = endpoint {
        let ok = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
        problems.check(
            ok,
            format!("{prefix}.endpoint"),
            format!("`{e}` is not an http:// or https:// URL"),
        );
    }
}

fn check_backoff(prefix: &str, base_ms: u64, max_ms: u64, problems: &mut Problems) {
    problems.check(
        base_ms >= 1 && max_ms >= base_ms,
        format!("{prefix}.retry_base_ms"),
        "retry_base_ms must be at least 1 and at most retry_max_ms",
    );
}

impl KinesisSinkConfig {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        check_stream(prefix, &self.stream, problems);
        check_client(prefix, &self.region, self.endpoint.as_deref(), problems);
        problems.check(
            (1..=MAX_PUT_RECORDS).contains(&self.batch_max_records),
            format!("{prefix}.batch_max_records"),
            format!("must be between 1 and {MAX_PUT_RECORDS} (the PutRecords limit)"),
        );
        problems.check(
            (MAX_RECORD_BYTES..=MAX_PUT_BYTES).contains(&self.batch_max_bytes),
            format!("{prefix}.batch_max_bytes"),
            format!(
                "must be between {MAX_RECORD_BYTES} (one record) and {MAX_PUT_BYTES} \
                 (the PutRecords limit)"
            ),
        );
        problems.check(
            self.flush_interval_ms >= 1,
            format!("{prefix}.flush_interval_ms"),
            "must be at least 1",
        );
        problems.check(
            self.max_attempts >= 1,
            format!("{prefix}.max_attempts"),
            "must be at least 1",
        );
        check_backoff(prefix, self.retry_base_ms, self.retry_max_ms, problems);
    }
}

impl KinesisSourceConfig {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        check_stream(prefix, &self.stream, problems);
        check_client(prefix, &self.region, self.endpoint.as_deref(), problems);
        let app_ok = !self.application.is_empty()
            && self.application.len() <= 128
            && self
                .application
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        problems.check(
            app_ok,
            format!("{prefix}.application"),
            format!(
                "`{}` is not a valid application name (1-128 of letters, digits, . _ -; it \
                 names a checkpoint directory)",
                self.application
            ),
        );
        problems.check(
            !self.checkpoint_dir.trim().is_empty(),
            format!("{prefix}.checkpoint_dir"),
            "must name a directory",
        );
        match (self.start_position, self.start_timestamp_ms) {
            (StartPosition::AtTimestamp, None) => problems.push(
                format!("{prefix}.start_timestamp_ms"),
                "required with start_position = \"at_timestamp\"",
            ),
            (StartPosition::AtTimestamp, Some(ts)) => problems.check(
                ts >= 0,
                format!("{prefix}.start_timestamp_ms"),
                "must be epoch milliseconds (not negative)",
            ),
            (_, Some(_)) => problems.push(
                format!("{prefix}.start_timestamp_ms"),
                "only used with start_position = \"at_timestamp\"; remove it",
            ),
            (_, None) => {}
        }
        problems.check(
            (1..=MAX_GET_RECORDS as usize).contains(&self.batch_max_records),
            format!("{prefix}.batch_max_records"),
            format!("must be between 1 and {MAX_GET_RECORDS}"),
        );
        problems.check(
            (1..=MAX_GET_RECORDS).contains(&self.get_records_limit),
            format!("{prefix}.get_records_limit"),
            format!("must be between 1 and {MAX_GET_RECORDS}"),
        );
        problems.check(
            self.max_lane_drift_ms >= 1_000,
            format!("{prefix}.max_lane_drift_ms"),
            "must be at least 1000 (one second of event time)",
        );
        problems.check(
            self.poll_interval_ms >= 1
                && self.checkpoint_interval_ms >= 1
                && self.shard_refresh_interval_ms >= 1,
            format!("{prefix}.poll_interval_ms"),
            "poll_interval_ms, checkpoint_interval_ms and shard_refresh_interval_ms must be \
             at least 1",
        );
        problems.check(
            self.instance_count >= 1 && self.instance_index < self.instance_count,
            format!("{prefix}.instance_index"),
            format!(
                "instance_index ({}) must be below instance_count ({}), which must be at least 1",
                self.instance_index, self.instance_count
            ),
        );
        check_backoff(prefix, self.retry_base_ms, self.retry_max_ms, problems);
        self.decode_limits().validate(prefix, problems);
    }

    /// The size limits records are decoded within.
    pub fn decode_limits(&self) -> crate::record::DecodeLimits {
        crate::record::DecodeLimits {
            max_record_bytes: self.max_record_bytes,
            max_vehicle_id_bytes: self.max_vehicle_id_bytes,
        }
    }
}

/// Validates and turns problems into one error, for `build`.
pub(super) fn validated(validate: impl FnOnce(&mut Problems)) -> Result<(), super::KinesisError> {
    let mut problems = Problems::new();
    validate(&mut problems);
    if problems.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = problems.into_vec().iter().map(|p| p.to_string()).collect();
    Err(super::KinesisError::InvalidConfig(text.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: Problems) -> Vec<String> {
        p.into_vec().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn kinesis_sink_defaults_are_the_put_records_limits() {
        let c: KinesisSinkConfig = toml::from_str("stream = \"speeds\"").unwrap();
        let mut p = Problems::new();
        c.validate("sinks.k", &mut p);
        assert!(p.is_empty(), "{:?}", p.into_vec());
        assert_eq!(c.batch_max_records, 500);
        assert_eq!(c.batch_max_bytes, 5 * 1024 * 1024);
    }

    #[test]
    fn kinesis_bad_values_are_reported_together() {
        let c: KinesisSinkConfig = toml::from_str(
            "stream = \"bad stream\"\nendpoint = \"127.0.0.1:4567\"\nbatch_max_records = 501\n\
             max_attempts = 0",
        )
        .unwrap();
        let mut p = Problems::new();
        c.validate("sinks.k", &mut p);
        let keys = keys(p);
        for k in ["stream", "endpoint", "batch_max_records", "max_attempts"] {
            assert!(keys.contains(&format!("sinks.k.{k}")), "{k} in {keys:?}");
        }
    }

    #[test]
    fn kinesis_source_checks_instances_and_timestamps() {
        let c: KinesisSourceConfig = toml::from_str(
            "stream = \"observations\"\napplication = \"agg\"\nrecord = \"segment_observation\"\n\
             instance_index = 2\ninstance_count = 2\nstart_position = \"at_timestamp\"",
        )
        .unwrap();
        let mut p = Problems::new();
        c.validate("sources.k", &mut p);
        let keys = keys(p);
        assert!(keys.contains(&"sources.k.instance_index".to_string()));
        assert!(keys.contains(&"sources.k.start_timestamp_ms".to_string()));
    }

    #[test]
    fn kinesis_unknown_keys_are_errors() {
        let r: Result<KinesisSourceConfig, _> = toml::from_str(
            "stream = \"s\"\napplication = \"a\"\nrecord = \"probe\"\ngroup_id = \"g\"",
        );
        assert!(r.is_err());
    }
}
