//! Kinesis Data Streams source and sink (`aws-sdk-kinesis`): PutRecords batches that retry
//! exactly their failed entries; a polling consumer with one task per owned shard, parents
//! read before children, and file checkpoints that move only past acknowledged records
//! (see `runtime::ack`). Enhanced fan-out (SubscribeToShard) is an
//! option of the source, tested against a mocked SDK only.

mod checkpoint;
mod client;
mod config;
mod fanout;
mod shards;
mod sink;
mod source;

pub use checkpoint::{Checkpoint, FileCheckpointStore};
pub use config::{KinesisSinkConfig, KinesisSourceConfig, StartPosition};
pub use shards::owns_shard;

/// The SDK client, re-exported so that tests and tools can build one (e.g. mocked) and hand
/// it to `build_with_client`.
pub use aws_sdk_kinesis::Client as KinesisClient;

#[derive(Debug, thiserror::Error)]
pub enum KinesisError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("Kinesis {operation} on stream `{stream}`: {message}")]
    Api {
        operation: &'static str,
        stream: String,
        message: String,
    },
    #[error(
        "PutRecords to stream `{stream}`: {failed} records still failed after {attempts} \
         attempts (last error: {last_error})"
    )]
    PutFailed {
        stream: String,
        failed: usize,
        attempts: u32,
        last_error: String,
    },
    #[error("checkpoint store {path}: {message}")]
    Checkpoint { path: String, message: String },
}
