//! The Parquet connectors' error type: every variant names the file, and the column or row
//! group where that applies, so a user can find the bad input without a debugger.

use std::path::PathBuf;

use arrow_schema::DataType;

/// A boxed underlying cause (Parquet, Arrow or I/O).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    #[error("path pattern `{pattern}` is not a valid glob: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },

    #[error("no file matches `{pattern}`")]
    NoMatch { pattern: String },

    #[error("while expanding `{pattern}`: {source}")]
    Glob {
        pattern: String,
        #[source]
        source: glob::GlobError,
    },

    #[error("{}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a valid Parquet file: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("{}: row group {row_group} failed to decode: {source}", path.display())]
    Decode {
        path: PathBuf,
        row_group: usize,
        #[source]
        source: Cause,
    },

    #[error("{}: mapped column \"{column}\" (for {role}) is missing; the file has: {available}", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        role: &'static str,
        available: String,
    },

    #[error("{}: column \"{column}\" has type {found}, expected {expected}", path.display())]
    WrongType {
        path: PathBuf,
        column: String,
        found: DataType,
        expected: &'static str,
    },

    #[error("{}: row group {row_group} holds {bytes} bytes uncompressed in the mapped columns, over the limit of {limit} (max_row_group_bytes)", path.display())]
    TooLarge {
        path: PathBuf,
        row_group: usize,
        bytes: u64,
        limit: u64,
    },

    #[error("all {count} input files failed; the first: {first}")]
    AllFilesFailed { count: usize, first: String },

    #[error("{}: cannot create: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: write failed: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("{}: cannot rename to {}: {source}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the {what} thread panicked")]
    ThreadPanicked { what: String },
}
