//! Sources and sinks. Connectors know nothing of map matching or aggregation: they move
//! batches of records between the outside world and in-process channels.

pub mod congestion;
pub mod dirty;
pub mod generator;
pub mod kafka;
pub mod kinesis;
pub mod ndjson;
pub mod parquet;
