//! Kafka source and sink (librdkafka through `rdkafka`, bundled and built from source):
//! keyed, idempotent, murmur2-partitioned production; consumer groups with cooperative-sticky
//! assignment; at-least-once through acknowledgement tokens (see `runtime::ack`).

mod checkpoint;
mod config;
mod security;
mod sink;
mod source;

pub use config::{KafkaSinkConfig, KafkaSourceConfig};
pub use security::{KafkaSecurity, Properties, SaslMechanism, SecurityProtocol};

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("Kafka client: {what}: {source}")]
    Client {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Creating a client failed; librdkafka's message, with the values of secret
    /// properties masked (it can quote the value of a property it refuses).
    #[error("Kafka client: {what}: {message}")]
    Create { what: &'static str, message: String },
    #[error("delivery to topic `{topic}` failed: {message}")]
    Delivery { topic: String, message: String },
    #[error("the Kafka connector thread: {0}")]
    Thread(String),
}
