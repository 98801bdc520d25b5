//! Configuration: serde structs with `deny_unknown_fields`, layered loading (defaults, then
//! a TOML file, then `PIPELINE__SECTION__KEY` environment variables) and pure validation
//! that reports every problem at once, each with where its value came from.

mod load;
mod model;
mod problems;
mod secret;
mod validate;

pub use load::{check, load, load_unvalidated, process_env, ConfigError};
pub use model::{
    split_endpoint, GraphConfig, PipelineConfig, Port, RuntimeConfig, SinkConfig, SourceConfig,
    StageConfig, TelemetryConfig,
};
pub use problems::{Problem, Problems};
pub use secret::{is_secret_key, Secret};
