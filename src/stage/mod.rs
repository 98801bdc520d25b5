//! Stages: synchronous batch transforms (the clean stage; later assign and aggregate).
//! A stage knows records and its own rules; it knows nothing of where batches come from.

pub mod clean;
