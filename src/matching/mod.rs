//! Map matching: probes to positions on the road graph (Newson & Krumm HMM, online
//! Viterbi per vehicle) and on to per-segment observations. Pure code: no I/O, no async,
//! nothing of Kafka or channels; the assign stage adapts it.
//!
//! - [`config`]: the settings, [`MatchConfig`].
//! - [`candidates`]: up to k segments within r of a probe.
//! - [`route`]: route distances and paths (bounded Dijkstra, segment-pair cache).
//! - [`hmm`]: emission, transition and plausibility.
//! - [`lattice`]: one trace's Viterbi columns, convergence and forced commits.
//! - [`session`]: [`VehicleMatcher`] and the many-vehicle [`Matcher`].
//! - [`path`]: the segment pieces between two matched points.
//! - [`observations`]: `SegmentObservation`s along the matched path.
//!
//! A stage owns one [`Matcher`] per worker (vehicles sharded by id; the output per vehicle
//! does not depend on the sharding), feeds probes in event-time order per vehicle, calls
//! [`Matcher::evict_idle`] on each watermark and [`Matcher::flush_all`] at the end:
//!
//! ```
//! use std::sync::Arc;
//! use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};
//! use pipeline::matching::{MatchConfig, MatchOutput, Matcher};
//! use pipeline::record::Probe;
//!
//! let graph = synthetic_grid(3, 3, 100.0, 47.0, 9.0).build_graph(&ImportConfig::default())?;
//! let mut matcher = Matcher::new(Arc::new(graph), MatchConfig::default());
//! let mut out = MatchOutput::default();
//! for i in 0..10 {
//!     let probe = Probe::new("v1", 1_700_000_000_000 + i * 1000, 47.00002, 9.0001 + i as f64 * 1e-4);
//!     matcher.push(probe, &mut out);
//! }
//! matcher.flush_all(&mut out);
//! assert_eq!(out.matched.len(), 10);
//! assert!(out.observations.iter().all(|o| o.speed_mps > 5.0 && o.speed_mps < 10.0));
//! # Ok::<(), pipeline::graph::GraphError>(())
//! ```

pub mod candidates;
pub mod config;
pub mod hmm;
pub mod lattice;
pub mod observations;
pub mod path;
pub mod route;
pub mod session;

pub use config::MatchConfig;
pub use route::{Position, RouteStats, Router};
pub use session::{
    BreakReason, Committed, MatchContext, MatchOutput, MatchStats, Matcher, Scratch, Unmatched,
    UnmatchedReason, VehicleMatcher,
};
