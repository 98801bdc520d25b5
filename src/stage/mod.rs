//! Stages: synchronous batch transforms: clean, assign and aggregate.
//! A stage knows records and its own rules; it knows nothing of where batches come from.

pub mod aggregate;
pub mod assign;
pub mod clean;
