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
