//! The one error type of the graph module; every variant names the file it is about.

use std::path::PathBuf;

/// Everything that can go wrong while importing, writing, loading or exporting a road graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot read OSM PBF: {reason}", path.display())]
    Pbf { path: PathBuf, reason: String },
    #[error("{}: cannot parse OSM XML near byte {position}: {reason}", path.display())]
    Xml {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{}: no drivable road found (no way tagged with one of the configured highway classes, or all of them lack node coordinates)", path.display())]
    NoDrivableRoads { path: PathBuf },
    #[error("{}: not a pipeline graph file (magic bytes do not match; build one with `pipeline graph build`)", path.display())]
    NotAGraphFile { path: PathBuf },
    #[error("{}: graph file format version {found} is not supported (this build reads version {expected}); rebuild it with `pipeline graph build`", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{}: corrupt graph file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: cannot tell the input format; expected a .graph file, an .osm.pbf/.pbf file or an .osm XML file", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("invalid graph import config: {}", problems.join("; "))]
    Config { problems: Vec<String> },
    #[error("{}: segment id collision: {segment_id} is the id of both (way {}, {} -> {}) and (way {}, {} -> {}); please report this", path.display(), first.0, first.1, first.2, second.0, second.1, second.2)]
    IdCollision {
        path: PathBuf,
        segment_id: u64,
        first: (i64, i64, i64),
        second: (i64, i64, i64),
    },
    #[error("{}: too large for the graph format: {reason}", path.display())]
    TooLarge { path: PathBuf, reason: String },
    #[error("{}: cannot write Parquet: {reason}", path.display())]
    Parquet { path: PathBuf, reason: String },
}

impl GraphError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GraphError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        GraphError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
