//! Configuration: serde structs with `deny_unknown_fields`, layered loading (defaults, then
//! a TOML file, then `PIPELINE__SECTION__KEY` environment variables) and pure validation
//! that reports every problem at once, each with where its value came from.

mod load;
mod model;
mod problems;
mod secret;
mod validate;

pub use load::{check, load, load_checked, load_unvalidated, process_env, ConfigError};
pub use model::{
    split_endpoint, GraphConfig, PipelineConfig, Port, RuntimeConfig, SinkConfig, SourceConfig,
    StageConfig, TelemetryConfig,
};
pub use problems::{Problem, Problems};

/// Upper bounds on sizes a config can ask for, each far above any sensible value and far
/// below what would exhaust memory. Validation refuses anything beyond them.
pub mod limits {
    /// Records in one batch, which is held in memory whole (a probe is about 100 bytes).
    pub const MAX_BATCH_RECORDS: usize = 1_000_000;
    /// Batches queued on one edge.
    pub const MAX_CHANNEL_CAPACITY_BATCHES: usize = 100_000;
    /// Rows in one Parquet row group, buffered before it is written.
    pub const MAX_ROW_GROUP_ROWS: usize = 10_000_000;
    /// Vehicles the synthetic generator simulates at once.
    pub const MAX_GENERATED_VEHICLES: usize = 10_000_000;
}
pub use secret::{is_secret_key, Secret};
