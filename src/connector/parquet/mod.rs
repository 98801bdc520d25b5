//! Parquet connectors: a replay source (files or globs, column mapping, time range, paced or
//! as fast as possible, parallel row-group decode) and a sink (zstd, rolling files, footer
//! always written).
//!
//! Layout: [`config`] holds the serde structs and their pure validation; [`mapping`] turns a
//! file's columns into [`Probe`](crate::record::Probe)s; [`reader`] is the synchronous,
//! tokio-free reader the source is built on; [`source`] and [`sink`] adapt the reader and the
//! writer to the runtime's `Source` and `Sink` traits.

pub mod config;
mod error;
pub mod mapping;
pub mod reader;
pub mod sink;
pub mod source;

pub use config::{
    ColumnMapping, Compression, ParquetSinkConfig, ParquetSourceConfig, ReplayRate, TimestampUnit,
};
pub use error::ParquetError;
pub use reader::{expand_paths, read_probes, InputFile, ProbeReader, ReadSummary, SkippedFile};
pub use sink::{write_records, RollingWriter};

/// Reasons for records dropped by the Parquet source: a closed set, used as metric labels.
pub mod drop_reason {
    /// A required column (vehicle id, timestamp, lat, lon) was null.
    pub const NULL_FIELD: &str = "null_field";
    /// The timestamp could not be represented as epoch milliseconds (overflow, NaN), or
    /// falls outside the years 1 to 9999 (milliseconds read as seconds land near year 55 000).
    pub const BAD_TIMESTAMP: &str = "bad_timestamp";
    /// The vehicle id is longer than `max_vehicle_id_bytes`.
    pub const TOO_LARGE: &str = "too_large";
    /// The vehicle id (from a Binary column) is not valid UTF-8.
    pub const INVALID_UTF8: &str = "invalid_utf8";
    /// A sink received a batch of another record kind than the one it writes.
    pub const WRONG_RECORD_KIND: &str = "wrong_record_kind";
}

/// Starts blocking work on a dedicated OS thread now and returns a future of its result, so
/// that waiting does not occupy a runtime worker. A plain thread rather than `spawn_blocking`:
/// tokio's paused test clock refuses to auto-advance while a `spawn_blocking` task is alive,
/// which would deadlock a paced replay under `start_paused`.
pub(crate) fn spawn_thread<T, F>(
    name: &str,
    work: F,
) -> Result<impl std::future::Future<Output = Result<T, ParquetError>>, ParquetError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|source| ParquetError::Thread {
            what: name.to_string(),
            source,
        })?;
    let what = name.to_string();
    Ok(async move { rx.await.map_err(|_| ParquetError::ThreadPanicked { what }) })
}
