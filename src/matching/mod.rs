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
