//! The runtime: builds the topology a config describes, connects components with bounded
//! batch channels, runs them, and shuts them down in order (sources, then drain, then sinks).

pub mod batch;
pub mod component;

pub use batch::{Batch, Records};
pub use component::{BoxError, DownstreamClosed, Input, Output, Sink, Source, Transform};
