//! `pipeline`: real-time road speeds from vehicle GPS probes.
//!
//! Layout map (one line per module; ARCHITECTURE.md has the full code map and invariants):
//! - [`config`]: serde structs (`deny_unknown_fields`), layered loading, pure validation.
//! - [`record`]: `Probe`, `MatchedPoint`, `SegmentObservation`, `SegmentSpeed`; Arrow, JSON, protobuf.
//! - [`geo`]: small geodesy helpers (haversine, local metric projection).
//! - [`graph`]: OSM import, stable segment ids, spatial index, routing data, the `.graph` file.
//! - [`matching`]: online HMM map matching: candidates, routes, Viterbi, segment observations.
//! - [`aggregate`]: event-time windows, watermark and speed estimators (pure code).
//! - [`stage`]: synchronous batch transforms: clean, assign, aggregate.
//! - [`connector`]: sources and sinks (Parquet, NDJSON, generator).
//! - [`runtime`]: topology from config, bounded batch channels, shutdown.
//! - [`telemetry`]: Prometheus metrics, HTTP endpoints (with the record tap), logging.
//! - [`render`]: map pictures (SVG, PNG) of segment speeds over the road graph.
//! - [`fuzzing`]: fuzz target bodies and seeds, shared by `fuzz/` (cargo-fuzz) and `tests/fuzz_corpus.rs`.

pub mod aggregate;
pub mod config;
pub mod connector;
#[doc(hidden)]
pub mod fuzzing;
pub mod geo;
pub mod graph;
pub mod matching;
pub mod record;
pub mod render;
pub mod runtime;
pub mod stage;
pub mod telemetry;
