//! Configuration of the Parquet source and sink: serde structs with named defaults, pure
//! validation that reports every problem at once, and `build`, the only place that does I/O.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::ParquetError;
use super::reader::expand_paths;
use super::sink::{ParquetSink, SinkTarget};
use super::source::ParquetSource;
use crate::config::limits::{MAX_BATCH_RECORDS, MAX_ROW_GROUP_ROWS};
use crate::config::Problems;
use crate::record::RecordKind;
use crate::runtime::{Sink, Source};

fn default_vehicle_id() -> String {
    "vehicle_id".to_string()
}
fn default_timestamp() -> String {
    "ts_ms".to_string()
}
fn default_lat() -> String {
    "lat".to_string()
}
fn default_lon() -> String {
    "lon".to_string()
}
fn default_batch_size() -> usize {
    8192
}
fn default_true() -> bool {
    true
}
fn default_row_group_rows() -> usize {
    65_536
}
/// The shortest `roll_interval_ms`: below it a busy sink would write a file per batch or two.
pub const MIN_ROLL_INTERVAL_MS: u64 = 100;
/// zstd level 3: zstd's own default, a good ratio at a few hundred MB/s per core.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Which input column feeds which [`Probe`](crate::record::Probe) field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    #[serde(default = "default_vehicle_id")]
    pub vehicle_id: String,
    #[serde(default = "default_timestamp")]
    pub timestamp: String,
    #[serde(default = "default_lat")]
    pub lat: String,
    #[serde(default = "default_lon")]
    pub lon: String,
    /// Absent by default: the probes get no speed.
    #[serde(default)]
    pub speed_mps: Option<String>,
    #[serde(default)]
    pub heading_deg: Option<String>,
    #[serde(default)]
    pub accuracy_m: Option<String>,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            vehicle_id: default_vehicle_id(),
            timestamp: default_timestamp(),
            lat: default_lat(),
            lon: default_lon(),
            speed_mps: None,
            heading_deg: None,
            accuracy_m: None,
        }
    }
}

impl ColumnMapping {
    /// (role, column) pairs of every mapped column, required ones first.
    pub fn mapped(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("vehicle_id", self.vehicle_id.as_str()),
            ("timestamp", self.timestamp.as_str()),
            ("lat", self.lat.as_str()),
            ("lon", self.lon.as_str()),
        ];
        for (role, column) in [
            ("speed_mps", &self.speed_mps),
            ("heading_deg", &self.heading_deg),
            ("accuracy_m", &self.accuracy_m),
        ] {
            if let Some(c) = column {
                out.push((role, c.as_str()));
            }
        }
        out
    }
}

/// How the timestamp column encodes time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    /// Integer epoch milliseconds (Int64, Int32, UInt64).
    #[default]
    Ms,
    /// Epoch seconds: integers, or Float64 with a fraction (rounded to the nearest ms).
    S,
    /// An Arrow `Timestamp` column of any unit and time zone.
    Arrow,
}

/// Replay speed: as fast as possible (`"max"`, the default: no waiting at all), or N× real
/// time by event time.
///
/// With a factor N, time zero is the earliest event time of the first batch read (ignoring
/// a lone outlier: the earliest record with 7 others within the hour after it), taken at
/// the instant that batch arrives from the decoder, and a record is due once the real time
/// elapsed since reaches (its event time − time zero) / N.
///
/// Tolerance: a record never leaves before it is due, and at most [`PACE_STEP_WALL_MS`]
/// (100 ms) after, plus scheduling delay and any time downstream backpressure holds the
/// source. To keep to that, each decoded batch is cut into runs spanning at most
/// N × 100 ms of event time, each sent when its newest record is due, so a large row group
/// trickles out instead of leaving in one burst (at most about ten extra batches per
/// second of replay).
///
/// Pacing follows the newest event time seen so far. A record older than that (out of
/// order) leaves with its neighbours. A jump more than an hour ahead is followed only once
/// 8 consecutive records within the hour of each other confirm it (a real gap in the
/// data, then waited out at N×); those 8 leave together when the last of them is due (any
/// of them decoded in an earlier batch already left at the pace before the jump). An
/// unconfirmed record that far ahead is an outlier, such as a probe stamped 2099: it
/// leaves with its neighbours instead of stalling the replay for decades. Pacing delays
/// only; content and order are the same as unpaced.
///
/// [`PACE_STEP_WALL_MS`]: super::source::PACE_STEP_WALL_MS
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReplayRate {
    #[default]
    Max,
    /// Event time advances this many times faster than wall time.
    Factor(f64),
}

impl<'de> Deserialize<'de> for ReplayRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = ReplayRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"max\" or a positive replay speed factor such as 10")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReplayRate, E> {
                match v {
                    "max" => Ok(ReplayRate::Max),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ReplayRate, E> {
                Ok(ReplayRate::Factor(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ReplayRate, E> {
                Ok(ReplayRate::Factor(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ReplayRate, E> {
                Ok(ReplayRate::Factor(v as f64))
            }
        }
        deserializer.deserialize_any(RateVisitor)
    }
}

/// The Parquet replay source.
///
/// Files named literally in `paths` are required: if one is unreadable or corrupt the source
/// fails. Files found by a glob (or in a directory given as a path) are best effort: a corrupt
/// one is logged, counted as skipped and the others are replayed; only if every file fails
/// does the source fail. A file whose columns do not fit the mapping is always an error,
/// since that is a configuration mistake rather than a damaged file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// Files, directories (all `*.parquet` inside) or glob patterns. Expanded, sorted and
    /// de-duplicated; files are replayed in path order.
    pub paths: Vec<String>,
    #[serde(default)]
    pub columns: ColumnMapping,
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// Keep probes with `start_ms <= ts_ms` (inclusive).
    #[serde(default)]
    pub start_ms: Option<i64>,
    /// Keep probes with `ts_ms < end_ms` (exclusive).
    #[serde(default)]
    pub end_ms: Option<i64>,
    /// `"max"` or a factor N: replay event time at N× real time from the first record, see
    /// [`ReplayRate`] for the rule and its tolerance.
    #[serde(default)]
    pub rate: ReplayRate,
    /// Threads decoding row groups; default: the available cores.
    #[serde(default)]
    pub decode_threads: Option<usize>,
    /// Rows per emitted batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Show a progress bar (only ever drawn when stderr is a terminal).
    #[serde(default = "default_true")]
    pub progress: bool,
    /// Rows whose vehicle id is longer than this (bytes) are dropped as `too_large`.
    #[serde(default = "crate::record::limits::default_max_vehicle_id_bytes")]
    pub max_vehicle_id_bytes: usize,
    /// A file with a row group whose mapped columns take more than this many bytes
    /// uncompressed is refused whole (an error naming the file and row group), since the
    /// reader holds a decoded row group in memory.
    #[serde(default = "default_max_row_group_bytes")]
    pub max_row_group_bytes: u64,
}

fn default_max_row_group_bytes() -> u64 {
    DEFAULT_MAX_ROW_GROUP_BYTES
}

/// 1 GiB: several times the usual 128 to 512 MiB row groups, and what a 2-core machine can
/// decode a few of at once.
pub const DEFAULT_MAX_ROW_GROUP_BYTES: u64 = 1 << 30;

impl ParquetSourceConfig {
    /// A config with every default, reading `paths`.
    pub fn new(paths: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            paths: paths.into_iter().map(Into::into).collect(),
            columns: ColumnMapping::default(),
            timestamp_unit: TimestampUnit::default(),
            start_ms: None,
            end_ms: None,
            rate: ReplayRate::default(),
            decode_threads: None,
            batch_size: default_batch_size(),
            progress: true,
            max_vehicle_id_bytes: crate::record::limits::DEFAULT_MAX_VEHICLE_ID_BYTES,
            max_row_group_bytes: DEFAULT_MAX_ROW_GROUP_BYTES,
        }
    }

    /// The decode thread count after defaults.
    pub fn decode_threads(&self) -> usize {
        self.decode_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// Pure validation: no file access.
    pub fn validate(&self, key_prefix: &str, problems: &mut Problems) {
        let key = |k: &str| format!("{key_prefix}.{k}");
        problems.check(
            !self.paths.is_empty(),
            key("paths"),
            "at least one file or glob is required",
        );
        for (i, pattern) in self.paths.iter().enumerate() {
            if pattern.trim().is_empty() {
                problems.push(key(&format!("paths[{i}]")), "empty path");
            } else if let Err(e) = glob::Pattern::new(pattern) {
                problems.push(
                    key(&format!("paths[{i}]")),
                    format!("`{pattern}` is not a valid glob: {e}"),
                );
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for (role, column) in self.columns.mapped() {
            if column.is_empty() {
                problems.push(key(&format!("columns.{role}")), "empty column name");
            } else if seen.contains(&column) {
                problems.push(
                    key(&format!("columns.{role}")),
                    format!("column \"{column}\" is mapped to more than one field"),
                );
            }
            seen.push(column);
        }
        if let (Some(start), Some(end)) = (self.start_ms, self.end_ms) {
            problems.check(
                start < end,
                key("end_ms"),
                format!("end_ms ({end}) must be greater than start_ms ({start})"),
            );
        }
        if let ReplayRate::Factor(f) = self.rate {
            problems.check(
                f.is_finite() && f > 0.0,
                key("rate"),
                format!("replay speed factor must be a positive number, got {f}"),
            );
        }
        problems.check(
            self.decode_threads != Some(0),
            key("decode_threads"),
            "must be at least 1",
        );
        problems.check_count(self.batch_size, 1..=MAX_BATCH_RECORDS, key("batch_size"));
        problems.check(
            (1..=crate::record::limits::MAX_MAX_VEHICLE_ID_BYTES)
                .contains(&self.max_vehicle_id_bytes),
            key("max_vehicle_id_bytes"),
            format!(
                "must be between 1 and {}",
                crate::record::limits::MAX_MAX_VEHICLE_ID_BYTES
            ),
        );
        problems.check(
            self.max_row_group_bytes >= 1,
            key("max_row_group_bytes"),
            "must be at least 1",
        );
    }

    /// Expands the paths (the only I/O) and returns the source.
    pub fn build(&self, component: &str) -> Result<Box<dyn Source>, ParquetError> {
        check(|p| self.validate("source", p))?;
        let files = expand_paths(&self.paths)?;
        Ok(Box::new(ParquetSource::new(
            component.to_string(),
            files,
            self.clone(),
        )))
    }
}

fn check(validate: impl FnOnce(&mut Problems)) -> Result<(), ParquetError> {
    let mut problems = Problems::new();
    validate(&mut problems);
    if problems.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = problems.into_vec().iter().map(|p| p.to_string()).collect();
    Err(ParquetError::InvalidConfig(text.join("; ")))
}

/// Parquet page compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Zstd,
    Snappy,
    None,
}

/// The Parquet sink.
///
/// `path` is a file (written exactly there) or a directory (an existing one, or a path ending
/// in `/`), in which case the file is `<dir>/<record file stem>.parquet`, e.g.
/// `out/probes.parquet`, replaced by each run. With `max_rows_per_file`,
/// `max_bytes_per_file` or `roll_interval_ms` set the sink rolls: files are
/// `<stem>-00000.parquet`, `<stem>-00001.parquet`, … next to where the single file would be,
/// and a restarted sink continues after the highest number already in the directory, so
/// names sort in write order across runs (up to `-99999`; a sixth digit sorts out of order)
/// and no run replaces another's files. Each file is written as `<name>.tmp` and renamed
/// when its footer is written, so a reader never sees a file without a footer; a `.tmp` left
/// by a crash is renamed on start if its footer is valid, removed otherwise. A rolling sink
/// acknowledges a batch once the file holding its last row is closed. One sink per directory
/// and file stem: two writing the same numbered files at once would remove each other's
/// `.tmp` on start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub compression: Compression,
    /// zstd level (1..=22); default 3. Only meaningful with zstd.
    #[serde(default)]
    pub compression_level: Option<i32>,
    #[serde(default)]
    pub max_rows_per_file: Option<u64>,
    /// Roll once a file's written plus buffered bytes reach this; files may exceed it by up
    /// to one batch.
    #[serde(default)]
    pub max_bytes_per_file: Option<u64>,
    /// Close a file this long after its first row, even if no further batch arrives, so that
    /// a slow stream still has its rows acknowledged. Absent by default; a file never holds
    /// zero rows.
    #[serde(default)]
    pub roll_interval_ms: Option<u64>,
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
}

impl ParquetSinkConfig {
    /// A config with every default, writing to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            compression: Compression::default(),
            compression_level: None,
            max_rows_per_file: None,
            max_bytes_per_file: None,
            roll_interval_ms: None,
            row_group_rows: default_row_group_rows(),
        }
    }

    /// True when the sink writes numbered files.
    pub fn is_rolling(&self) -> bool {
        self.max_rows_per_file.is_some()
            || self.max_bytes_per_file.is_some()
            || self.roll_interval_ms.is_some()
    }

    /// Pure validation: no file access.
    pub fn validate(&self, key_prefix: &str, problems: &mut Problems) {
        let key = |k: &str| format!("{key_prefix}.{k}");
        problems.check(
            !self.path.as_os_str().is_empty(),
            key("path"),
            "a file or directory path is required",
        );
        match (self.compression, self.compression_level) {
            (Compression::Zstd, Some(level)) => problems.check(
                (1..=22).contains(&level),
                key("compression_level"),
                format!("zstd level must be within 1..=22, got {level}"),
            ),
            (other, Some(_)) if other != Compression::Zstd => problems.push(
                key("compression_level"),
                format!("only zstd takes a level, compression is {other:?}"),
            ),
            _ => {}
        }
        problems.check(
            self.max_rows_per_file != Some(0),
            key("max_rows_per_file"),
            "must be at least 1",
        );
        problems.check(
            self.max_bytes_per_file != Some(0),
            key("max_bytes_per_file"),
            "must be at least 1",
        );
        if let Some(ms) = self.roll_interval_ms {
            problems.check(
                ms >= MIN_ROLL_INTERVAL_MS,
                key("roll_interval_ms"),
                format!("must be at least {MIN_ROLL_INTERVAL_MS} (milliseconds), got {ms}"),
            );
        }
        problems.check_count(
            self.row_group_rows,
            1..=MAX_ROW_GROUP_ROWS,
            key("row_group_rows"),
        );
    }

    /// Decides file or directory (the only I/O: a metadata lookup) and returns the sink.
    /// `kind` is the record kind the runtime expects on the sink's input: with it, an input
    /// that ends without a single record still leaves a valid, empty file with that schema.
    pub fn build(
        &self,
        component: &str,
        kind: Option<RecordKind>,
    ) -> Result<Box<dyn Sink>, ParquetError> {
        check(|p| self.validate("sink", p))?;
        Ok(Box::new(ParquetSink::new(
            component.to_string(),
            self.target(),
            self.clone(),
            kind,
        )))
    }

    pub(crate) fn target(&self) -> SinkTarget {
        let is_dir = ends_with_separator(&self.path) || self.path.is_dir();
        if is_dir {
            SinkTarget::Dir(self.path.clone())
        } else {
            SinkTarget::File(self.path.clone())
        }
    }
}

fn ends_with_separator(path: &Path) -> bool {
    path.as_os_str()
        .to_string_lossy()
        .ends_with(std::path::MAIN_SEPARATOR)
        || path.as_os_str().to_string_lossy().ends_with('/')
}
