//! Road graph: OSM import, stable segment ids, the `.graph` file, the spatial index and
//! the successor adjacency that routing uses.
//!
//! - [`config`]: [`ImportConfig`], which ways are kept and their default speeds.
//! - [`tags`]: per-way OSM tag rules (drivable, oneway, maxspeed).
//! - `import` (private): `.osm.pbf` and `.osm` readers.
//! - [`id`]: the documented, stable segment id hash.
//! - `builder` (private): splitting ways at junctions into directed segments, adjacency.
//! - [`segment`]: the fixed-size `Segment` record.
//! - [`road_graph`]: [`RoadGraph`] and its accessors.
//! - [`file`]: the `.graph` binary format (mmap, zero-copy).
//! - [`spatial`]: R-tree candidate search in metres.
//! - [`info`]: [`GraphInfo`] for `pipeline graph info`.
//! - [`export`]: segment table to Parquet.
//! - [`osm_writer`]: writes small OSM PBF/XML files so tests and demos need no downloaded data.
//!
//! Walking the graph (e.g. a probe generator): segment indices are `0..graph.len()` as
//! `u32`; per index, [`RoadGraph::segment`] gives `segment_id`, `length_m`,
//! `speed_limit_kmh`, [`RoadGraph::geometry`] the `[lat, lon]` polyline in the direction of
//! travel and [`RoadGraph::successors`] the indices one can continue on (U-turns included).
//!
//! ```
//! use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};
//! let graph = synthetic_grid(3, 3, 100.0, 47.0, 9.0).build_graph(&ImportConfig::default())?;
//! let (mut at, mut travelled_m) = (0u32, 0.0);
//! for _ in 0..10 {
//!     travelled_m += graph.segment(at).length_m;
//!     at = graph.successors(at)[0];
//! }
//! assert!(travelled_m > 0.0);
//! # Ok::<(), pipeline::graph::GraphError>(())
//! ```

mod builder;
pub mod class;
pub mod config;
pub mod error;
pub mod export;
pub mod file;
pub mod id;
mod import;
pub mod info;
pub mod osm_writer;
pub mod road_graph;
pub mod segment;
pub mod spatial;
pub mod tags;

pub use builder::ImportStats;
pub use class::RoadClass;
pub use config::ImportConfig;
pub use error::GraphError;
pub use id::segment_id;
pub use info::{ClassInfo, GraphInfo};
pub use road_graph::RoadGraph;
pub use segment::{BBox, Segment};
pub use spatial::{Candidate, SegmentPiece, SpatialIndex};
