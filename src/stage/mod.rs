//! Stages: synchronous batch transforms: clean and assign (later aggregate).
//! A stage knows records and its own rules; it knows nothing of where batches come from.

pub mod assign;
pub mod clean;
