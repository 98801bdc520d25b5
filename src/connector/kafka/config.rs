//! Kafka source and sink settings: the typed, validated side of the TOML, and the
//! librdkafka properties they turn into. Validation is pure (no network).

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::config::limits::MAX_BATCH_RECORDS;
use crate::config::Problems;
use crate::record::{Encoding, RecordKind};

use super::security::{KafkaSecurity, Properties, OWNED_SECURITY_KEYS};

/// librdkafka properties that the typed settings own; setting them through the
/// pass-through table would silently undo a guarantee, so validation rejects them.
const OWNED_SINK_KEYS: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "partitioner",
    "acks",
];
const OWNED_SOURCE_KEYS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "partition.assignment.strategy",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

fn default_linger_ms() -> u64 {
    5
}
fn default_batch_size_bytes() -> u64 {
    1_000_000
}
fn default_batch_num_messages() -> u64 {
    10_000
}
fn default_message_timeout_ms() -> u64 {
    300_000
}
fn default_compression() -> String {
    "lz4".to_string()
}
fn default_flush_timeout_ms() -> u64 {
    30_000
}

/// A topic as a sink: records keyed by vehicle (probes, matched points) or segment
/// (observations, speeds), placed with the Java-compatible `murmur2_random` partitioner by
/// an idempotent producer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// librdkafka `linger.ms`: how long a partition's batch waits for more records.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// librdkafka `batch.size`: the most bytes in one partition batch.
    #[serde(default = "default_batch_size_bytes")]
    pub batch_size_bytes: u64,
    /// librdkafka `batch.num.messages`.
    #[serde(default = "default_batch_num_messages")]
    pub batch_num_messages: u64,
    /// librdkafka `compression.type`: none, gzip, snappy, lz4 or zstd.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// librdkafka `message.timeout.ms`: how long a record may wait for delivery, retries
    /// included, before it counts as failed.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// How long the end of input waits for outstanding deliveries.
    #[serde(default = "default_flush_timeout_ms")]
    pub flush_timeout_ms: u64,
    /// TLS and SASL (plaintext unless set).
    #[serde(default)]
    pub security: KafkaSecurity,
    /// Any other librdkafka producer property, passed through as is.
    #[serde(default)]
    pub librdkafka: Properties,
}

fn default_batch_max_records() -> usize {
    2_000
}
fn default_batch_max_wait_ms() -> u64 {
    100
}
fn default_commit_interval_ms() -> u64 {
    1_000
}
fn default_session_timeout_ms() -> u64 {
    10_000
}
fn default_auto_offset_reset() -> String {
    "earliest".to_string()
}
fn default_lag_interval_ms() -> u64 {
    5_000
}

/// Topics as a source: a consumer group (cooperative-sticky) that decodes records of one
/// kind and moves its committed offsets only past records every sink has acknowledged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    /// A list, or one string of comma-separated names, so that an environment variable
    /// (`PIPELINE__SOURCES__NAME__TOPICS=mine.raw`) can set it too.
    #[serde(deserialize_with = "topic_list")]
    pub topics: Vec<String>,
    pub group_id: String,
    /// The record kind on the topics.
    pub record: RecordKind,
    #[serde(default)]
    pub encoding: Encoding,
    /// A batch leaves when it has this many records of one partition…
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// …or when its oldest record has waited this long.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// How often acknowledged offsets are committed (also on revoke and on shutdown).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// librdkafka `session.timeout.ms`.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Where a new group starts: earliest or latest.
    #[serde(default = "default_auto_offset_reset")]
    pub auto_offset_reset: String,
    /// How often consumer lag is exported (librdkafka statistics interval).
    #[serde(default = "default_lag_interval_ms")]
    pub lag_interval_ms: u64,
    /// Watermark alignment, off unless set: a partition whose event time runs more than
    /// this ahead of the slowest partition still being read is paused until the others
    /// catch up, so a skewed backlog cannot pile up in the stages' buffers (see
    /// `runtime::frontier`). Off by default because a run of the at-least-once broker test
    /// with it re-read records already committed after a pause and resume (librdkafka's
    /// resume position), which is not understood yet; correctness does not depend on it.
    #[serde(default)]
    pub max_lane_drift_ms: Option<i64>,
    /// Records that cannot be decoded are also written here, as they came, when set.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// A directory (shared by the group's members) where, besides the metadata of its
    /// committed offsets, the source keeps per partition what a windowed stage downstream
    /// had finalized, for brokers that do not keep commit metadata (tansu drops it; Apache
    /// Kafka keeps it). See `Transform::finalized_before_ms`.
    #[serde(default)]
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// TLS and SASL (plaintext unless set); also used by the dead-letter producer.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// A record (payload) larger than this is not decoded: it is dropped as `too_large`
    /// (and dead-lettered where a dead-letter topic is set).
    #[serde(default = "crate::record::limits::default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// A record whose vehicle id is longer than this (bytes) is dropped as `too_large`.
    #[serde(default = "crate::record::limits::default_max_vehicle_id_bytes")]
    pub max_vehicle_id_bytes: usize,
    /// Any other librdkafka consumer property, passed through as is.
    #[serde(default)]
    pub librdkafka: Properties,
}

fn check_common(
    prefix: &str,
    brokers: &str,
    security: &KafkaSecurity,
    librdkafka: &Properties,
    owned: &[&str],
    problems: &mut Problems,
) {
    security.validate(prefix, problems);
    problems.check(
        !brokers.trim().is_empty()
            && brokers.split(',').all(|b| {
                b.trim()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            }),
        format!("{prefix}.brokers"),
        format!("`{brokers}` is not a list of host:port"),
    );
    for key in librdkafka.keys() {
        problems.check(
            !owned.contains(&key.as_str()) && !OWNED_SECURITY_KEYS.contains(&key.as_str()),
            format!("{prefix}.librdkafka.{key}"),
            "is set by the typed settings of this connector (or its `security` table); \
             remove it here",
        );
    }
}

fn check_topic(prefix: &str, key: &str, topic: &str, problems: &mut Problems) {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    problems.check(
        ok,
        format!("{prefix}.{key}"),
        format!("`{topic}` is not a valid topic name (letters, digits, . _ -)"),
    );
}

impl KafkaSinkConfig {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        check_common(
            prefix,
            &self.brokers,
            &self.security,
            &self.librdkafka,
            OWNED_SINK_KEYS,
            problems,
        );
        check_topic(prefix, "topic", &self.topic, problems);
        problems.check(
            ["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()),
            format!("{prefix}.compression"),
            "must be one of none, gzip, snappy, lz4, zstd",
        );
        // librdkafka's own limits for batch.size and batch.num.messages.
        problems.check(
            (1..=i32::MAX as u64).contains(&self.batch_size_bytes),
            format!("{prefix}.batch_size_bytes"),
            format!("must be between 1 and {}", i32::MAX),
        );
        problems.check(
            (1..=MAX_BATCH_RECORDS as u64).contains(&self.batch_num_messages),
            format!("{prefix}.batch_num_messages"),
            format!("must be between 1 and {MAX_BATCH_RECORDS}"),
        );
        problems.check(
            self.message_timeout_ms >= 1 && self.flush_timeout_ms >= 1,
            format!("{prefix}.message_timeout_ms"),
            "message_timeout_ms and flush_timeout_ms must be at least 1",
        );
    }

    /// The producer's librdkafka properties: typed settings first, then the pass-through.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size_bytes.to_string())
            .set("batch.num.messages", self.batch_num_messages.to_string())
            .set("compression.type", &self.compression)
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        self.security.apply(&mut c);
        self.librdkafka.apply(&mut c);
        c
    }
}

/// `topics = ["a", "b"]` or `topics = "a,b"` (Kafka topic names hold no comma).
fn topic_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Topics;
    impl<'de> serde::de::Visitor<'de> for Topics {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of topic names, or one string of comma-separated names")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.split(',').map(|t| t.trim().to_string()).collect())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut topics = Vec::new();
            while let Some(t) = seq.next_element::<String>()? {
                topics.push(t);
            }
            Ok(topics)
        }
    }
    d.deserialize_any(Topics)
}

impl KafkaSourceConfig {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        check_common(
            prefix,
            &self.brokers,
            &self.security,
            &self.librdkafka,
            OWNED_SOURCE_KEYS,
            problems,
        );
        problems.check(
            !self.topics.is_empty(),
            format!("{prefix}.topics"),
            "at least one topic is required",
        );
        for (i, t) in self.topics.iter().enumerate() {
            check_topic(prefix, &format!("topics[{i}]"), t, problems);
        }
        if let Some(t) = &self.dead_letter_topic {
            check_topic(prefix, "dead_letter_topic", t, problems);
        }
        problems.check(
            !self.group_id.trim().is_empty(),
            format!("{prefix}.group_id"),
            "a consumer group id is required",
        );
        problems.check_count(
            self.batch_max_records,
            1..=MAX_BATCH_RECORDS,
            format!("{prefix}.batch_max_records"),
        );
        problems.check(
            self.batch_max_wait_ms >= 1
                && self.commit_interval_ms >= 1
                && self.lag_interval_ms >= 1,
            format!("{prefix}.batch_max_wait_ms"),
            "batch_max_wait_ms, commit_interval_ms and lag_interval_ms must be at least 1",
        );
        problems.check(
            self.max_lane_drift_ms.is_none_or(|ms| ms >= 1_000),
            format!("{prefix}.max_lane_drift_ms"),
            "must be at least 1000 (one second of event time)",
        );
        problems.check(
            ["earliest", "latest"].contains(&self.auto_offset_reset.as_str()),
            format!("{prefix}.auto_offset_reset"),
            "must be earliest or latest",
        );
        self.decode_limits().validate(prefix, problems);
    }

    /// The size limits records are decoded within.
    pub fn decode_limits(&self) -> crate::record::DecodeLimits {
        crate::record::DecodeLimits {
            max_record_bytes: self.max_record_bytes,
            max_vehicle_id_bytes: self.max_vehicle_id_bytes,
        }
    }

    /// The consumer's librdkafka properties. Offsets are stored by the source when
    /// acknowledged (`enable.auto.offset.store=false`) and committed by librdkafka's
    /// auto-commit every `commit_interval_ms`, plus explicitly on revoke and shutdown.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval_ms.to_string(),
            )
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("statistics.interval.ms", self.lag_interval_ms.to_string())
            // A partition read to its end is announced, so it stops holding the event-time
            // frontier and its lag reads 0.
            .set("enable.partition.eof", "true");
        self.security.apply(&mut c);
        self.librdkafka.apply(&mut c);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> KafkaSinkConfig {
        toml::from_str("brokers = \"127.0.0.1:9092\"\ntopic = \"speeds\"").unwrap()
    }

    #[test]
    fn sink_defaults_are_valid_and_idempotent_with_murmur2() {
        let c = sink();
        let mut p = Problems::new();
        c.validate("sinks.k", &mut p);
        assert!(p.is_empty(), "{:?}", p.into_vec());
        let cc = c.client_config();
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn owned_keys_cannot_be_passed_through_and_bad_values_are_reported_together() {
        let mut c = sink();
        c.librdkafka.insert("enable.idempotence", "false");
        c.brokers = "nohost".into();
        c.topic = "bad topic".into();
        let mut p = Problems::new();
        c.validate("sinks.k", &mut p);
        let keys: Vec<String> = p.into_vec().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"sinks.k.librdkafka.enable.idempotence".to_string()));
        assert!(keys.contains(&"sinks.k.brokers".to_string()));
        assert!(keys.contains(&"sinks.k.topic".to_string()));
    }

    #[test]
    fn source_uses_cooperative_sticky_and_manual_offset_store() {
        let c: KafkaSourceConfig = toml::from_str(
            "brokers = \"127.0.0.1:9092\"\ntopics = [\"observations\"]\n\
             group_id = \"g\"\nrecord = \"segment_observation\"",
        )
        .unwrap();
        let mut p = Problems::new();
        c.validate("sources.k", &mut p);
        assert!(p.is_empty());
        let cc = c.client_config();
        assert_eq!(
            cc.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn topics_from_one_comma_separated_string_as_an_environment_variable_gives_it() {
        let source = |topics: &str| -> KafkaSourceConfig {
            toml::from_str(&format!(
                "brokers = \"b:9092\"\ntopics = {topics}\ngroup_id = \"g\"\nrecord = \"probe\""
            ))
            .expect("a source")
        };
        assert_eq!(source("\"mine.raw\"").topics, ["mine.raw"]);
        assert_eq!(source("\"a, b\"").topics, ["a", "b"]);
        assert_eq!(source("[\"a\", \"b\"]").topics, ["a", "b"]);
        let empty = source("\"\"");
        let mut p = Problems::new();
        empty.validate("sources.k", &mut p);
        assert!(!p.is_empty(), "an empty name is reported");
    }
}
