//! The synchronous Parquet reader the replay source is built on: expands paths, checks every
//! file's columns against the mapping, skips row groups outside the time range by their
//! statistics, decodes row groups in parallel and yields probes in a deterministic order
//! (file, then row group, then row), whatever the thread count. No tokio here.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use super::config::ParquetSourceConfig;
use super::drop_reason;
use super::error::ParquetError;
use super::mapping::{timestamps_ms, Converted, ResolvedMapping, TimeRange};
use crate::record::Probe;
use crate::telemetry::metrics::{metrics, ComponentMetrics};

/// One input file and whether it was named literally (a failure is fatal) or found by a
/// glob or in a directory (a corrupt file is skipped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputFile {
    pub path: PathBuf,
    pub explicit: bool,
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Expands files, directories (`*.parquet` inside) and globs; sorted by path, de-duplicated
/// (a file named literally stays literal even if a glob matches it too). A pattern that
/// matches nothing is an error naming the pattern.
pub fn expand_paths(patterns: &[String]) -> Result<Vec<InputFile>, ParquetError> {
    let mut files: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        let (glob_pattern, explicit) = if is_glob(pattern) {
            (pattern.clone(), false)
        } else if path.is_dir() {
            let escaped = glob::Pattern::escape(pattern);
            (
                format!("{}/*.parquet", escaped.trim_end_matches('/')),
                false,
            )
        } else if path.is_file() {
            *files.entry(path.to_path_buf()).or_insert(true) = true;
            continue;
        } else {
            return Err(ParquetError::NoMatch {
                pattern: pattern.clone(),
            });
        };
        let matches = glob::glob(&glob_pattern).map_err(|source| ParquetError::BadPattern {
            pattern: pattern.clone(),
            source,
        })?;
        let mut any = false;
        for entry in matches {
            let path = entry.map_err(|source| ParquetError::Glob {
                pattern: pattern.clone(),
                source,
            })?;
            if path.is_file() {
                any = true;
                files.entry(path).or_insert(explicit);
            }
        }
        if !any {
            return Err(ParquetError::NoMatch {
                pattern: pattern.clone(),
            });
        }
    }
    Ok(files
        .into_iter()
        .map(|(path, explicit)| InputFile { path, explicit })
        .collect())
}

/// A file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub error: String,
}

/// What a read did, for tests, logs and the end-of-replay report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub files_read: usize,
    pub files_skipped: Vec<SkippedFile>,
    pub row_groups_read: usize,
    /// Row groups skipped by their statistics, wholly outside the time range.
    pub row_groups_pruned: usize,
    /// Rows decoded from the files.
    pub rows_read: u64,
    pub rows_emitted: u64,
    pub rows_null_field: u64,
    pub rows_bad_timestamp: u64,
    pub rows_too_large: u64,
    pub rows_invalid_utf8: u64,
    pub rows_outside_range: u64,
}

/// A file whose footer was read and whose columns fit the mapping.
struct FilePlan {
    path: PathBuf,
    explicit: bool,
    metadata: ArrowReaderMetadata,
    mapping: ResolvedMapping,
    mask: ProjectionMask,
    row_groups: Vec<usize>,
    pruned: usize,
}

enum Planned {
    Ready(Box<FilePlan>),
    /// A non-explicit file that could not be opened; reported when its turn comes.
    Failed(InputFile, ParquetError),
}

struct Cursor {
    plan: Box<FilePlan>,
    next: usize,
}

/// Reads probes from Parquet files in batches of `batch_size` rows (the last may be short).
pub struct ProbeReader {
    planned: VecDeque<Planned>,
    file_count: usize,
    current: Option<Cursor>,
    ready: VecDeque<Probe>,
    batch_size: usize,
    decode_batch_rows: usize,
    window: usize,
    range: TimeRange,
    pool: Option<rayon::ThreadPool>,
    metrics: Arc<ComponentMetrics>,
    summary: ReadSummary,
    progress: ProgressBar,
    stop: Arc<AtomicBool>,
    done: bool,
}

impl ProbeReader {
    /// Reads every file's footer and checks its columns. A missing or mistyped column is an
    /// error in any file; an unreadable footer is an error only in a file named literally.
    pub fn open(
        files: Vec<InputFile>,
        config: &ParquetSourceConfig,
        metrics: Arc<ComponentMetrics>,
    ) -> Result<Self, ParquetError> {
        let range = TimeRange {
            start_ms: config.start_ms,
            end_ms: config.end_ms,
        };
        let file_count = files.len();
        let mut planned = VecDeque::with_capacity(file_count);
        let mut total_rows: u64 = 0;
        for file in files {
            match contain_panic(&file.path, None, || plan_file(&file, config, range)) {
                Ok(plan) => {
                    let meta = plan.metadata.metadata();
                    total_rows += plan
                        .row_groups
                        .iter()
                        .map(|&rg| meta.row_group(rg).num_rows().max(0) as u64)
                        .sum::<u64>();
                    planned.push_back(Planned::Ready(Box::new(plan)));
                }
                Err(e) if file.explicit || is_schema_error(&e) => return Err(e),
                Err(e) => planned.push_back(Planned::Failed(file, e)),
            }
        }
        let threads = config.decode_threads().max(1);
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("parquet-decode-{i}"))
                    .build()
                    .map_err(|e| ParquetError::Thread {
                        what: "parquet decode".to_string(),
                        source: std::io::Error::other(e),
                    })?,
            )
        } else {
            None
        };
        let progress = if config.progress && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total_rows), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} replay {bar:40} {human_pos}/{human_len} rows {per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(Self {
            planned,
            file_count,
            current: None,
            ready: VecDeque::new(),
            batch_size: config.batch_size.max(1),
            decode_batch_rows: config.batch_size.max(1),
            window: threads,
            range,
            pool,
            metrics,
            summary: ReadSummary::default(),
            progress,
            stop: Arc::new(AtomicBool::new(false)),
            done: false,
        })
    }

    /// A flag that makes [`ProbeReader::next_batch`] stop at the next row-group window.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Shares a caller's stop flag instead of the reader's own.
    pub fn set_stop_flag(&mut self, stop: Arc<AtomicBool>) {
        self.stop = stop;
    }

    pub fn summary(&self) -> &ReadSummary {
        &self.summary
    }

    /// The next batch of probes, `None` at the end (or once stopped).
    pub fn next_batch(&mut self) -> Result<Option<Vec<Probe>>, ParquetError> {
        loop {
            if self.ready.len() >= self.batch_size {
                return Ok(Some(self.take(self.batch_size)));
            }
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if !self.fill()? {
                if self.ready.is_empty() {
                    return Ok(None);
                }
                let n = self.ready.len();
                return Ok(Some(self.take(n)));
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<Probe> {
        self.summary.rows_emitted += n as u64;
        self.ready.drain(..n).collect()
    }

    /// Decodes the next window of row groups into `ready`; false once every file is done.
    fn fill(&mut self) -> Result<bool, ParquetError> {
        if self.done {
            return Ok(false);
        }
        let Some(mut cursor) = self.current.take() else {
            match self.planned.pop_front() {
                Some(Planned::Ready(plan)) => {
                    self.current = Some(Cursor { plan, next: 0 });
                    return Ok(true);
                }
                Some(Planned::Failed(file, error)) => {
                    self.skip_file(&file.path, &error);
                    return Ok(true);
                }
                None => return self.finish(),
            }
        };
        let plan = &cursor.plan;
        if cursor.next >= plan.row_groups.len() {
            self.summary.files_read += 1;
            self.summary.row_groups_pruned += plan.pruned;
            metrics()
                .files
                .with_label_values(&[self.metrics.component.as_str(), "read"])
                .inc();
            return Ok(true);
        }
        let end = (cursor.next + self.window).min(plan.row_groups.len());
        let row_groups = &plan.row_groups[cursor.next..end];
        let (rows, range) = (self.decode_batch_rows, self.range);
        let decode = |&rg: &usize| {
            contain_panic(&plan.path, Some(rg), || {
                decode_row_group(plan, rg, rows, range)
            })
        };
        let results: Vec<Result<Converted, ParquetError>> = match &self.pool {
            Some(pool) => pool.install(|| row_groups.par_iter().map(decode).collect()),
            None => row_groups.iter().map(decode).collect(),
        };
        cursor.next = end;
        for result in results {
            match result {
                Ok(converted) => self.accept(converted),
                Err(error) if cursor.plan.explicit => return Err(error),
                Err(error) => {
                    // Rows of this file's earlier row groups were already queued; they stay,
                    // so what is emitted still depends only on the input.
                    self.skip_file(&cursor.plan.path, &error);
                    return Ok(true);
                }
            }
        }
        self.current = Some(cursor);
        Ok(true)
    }

    fn accept(&mut self, converted: Converted) {
        let s = &mut self.summary;
        s.row_groups_read += 1;
        s.rows_read += converted.rows;
        s.rows_null_field += converted.null_field;
        s.rows_bad_timestamp += converted.bad_timestamp;
        s.rows_too_large += converted.too_large;
        s.rows_invalid_utf8 += converted.invalid_utf8;
        s.rows_outside_range += converted.outside_range;
        self.progress.inc(converted.rows);
        if converted.null_field > 0 {
            self.metrics
                .dropped(drop_reason::NULL_FIELD, converted.null_field);
            crate::warn_limited!(
                component = %self.metrics.component,
                rows = converted.null_field,
                "dropped Parquet rows with a null vehicle id, timestamp, lat or lon"
            );
        }
        if converted.bad_timestamp > 0 {
            self.metrics
                .dropped(drop_reason::BAD_TIMESTAMP, converted.bad_timestamp);
            crate::warn_limited!(
                component = %self.metrics.component,
                rows = converted.bad_timestamp,
                "dropped Parquet rows whose timestamp does not fit epoch milliseconds"
            );
        }
        if converted.too_large > 0 {
            self.metrics
                .dropped(drop_reason::TOO_LARGE, converted.too_large);
            crate::warn_limited!(
                component = %self.metrics.component,
                rows = converted.too_large,
                "dropped Parquet rows whose vehicle id is over max_vehicle_id_bytes"
            );
        }
        if converted.invalid_utf8 > 0 {
            self.metrics
                .dropped(drop_reason::INVALID_UTF8, converted.invalid_utf8);
            crate::warn_limited!(
                component = %self.metrics.component,
                rows = converted.invalid_utf8,
                "dropped Parquet rows whose vehicle id is not UTF-8"
            );
        }
        self.ready.extend(converted.probes);
    }

    fn skip_file(&mut self, path: &Path, error: &ParquetError) {
        tracing::warn!(
            component = %self.metrics.component,
            file = %path.display(),
            error = %error,
            "skipping unreadable Parquet file"
        );
        metrics()
            .files
            .with_label_values(&[self.metrics.component.as_str(), "skipped"])
            .inc();
        self.metrics.error("corrupt_file");
        self.summary.files_skipped.push(SkippedFile {
            path: path.to_path_buf(),
            error: error.to_string(),
        });
    }

    fn finish(&mut self) -> Result<bool, ParquetError> {
        self.done = true;
        self.progress.finish_and_clear();
        if self.file_count > 0 && self.summary.files_read == 0 {
            let first = self
                .summary
                .files_skipped
                .first()
                .map(|s| s.error.clone())
                .unwrap_or_default();
            return Err(ParquetError::AllFilesFailed {
                count: self.file_count,
                first,
            });
        }
        Ok(false)
    }
}

impl Iterator for ProbeReader {
    type Item = Result<Vec<Probe>, ParquetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

fn is_schema_error(e: &ParquetError) -> bool {
    matches!(
        e,
        ParquetError::MissingColumn { .. } | ParquetError::WrongType { .. }
    )
}

/// Runs a step that calls into the parquet crate and turns a panic there into an error
/// (`Decode` for a row group, `Corrupt` otherwise). arrow-rs still panics on some malformed
/// files (the `parquet_probes` fuzz target found a dictionary-encoded page with no
/// dictionary page); a corrupt file must be an error, fatal when named and skipped when
/// found by a glob, never a dead decode thread.
fn contain_panic<T>(
    path: &Path,
    row_group: Option<usize>,
    step: impl FnOnce() -> Result<T, ParquetError>,
) -> Result<T, ParquetError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        let source: super::error::Cause = format!("the Parquet decoder panicked: {message}").into();
        let path = path.to_path_buf();
        Err(match row_group {
            Some(row_group) => ParquetError::Decode {
                path,
                row_group,
                source,
            },
            None => ParquetError::Corrupt { path, source },
        })
    })
}

fn plan_file(
    file: &InputFile,
    config: &ParquetSourceConfig,
    range: TimeRange,
) -> Result<FilePlan, ParquetError> {
    let path = &file.path;
    let handle = File::open(path).map_err(|source| ParquetError::Open {
        path: path.clone(),
        source,
    })?;
    let metadata = ArrowReaderMetadata::load(&handle, Default::default()).map_err(|e| {
        ParquetError::Corrupt {
            path: path.clone(),
            source: Box::new(e),
        }
    })?;
    let mapping = ResolvedMapping::resolve(
        path,
        metadata.schema(),
        &config.columns,
        config.timestamp_unit,
    )?
    .with_max_vehicle_id_bytes(config.max_vehicle_id_bytes);
    let mask = ProjectionMask::roots(
        metadata.metadata().file_metadata().schema_descr(),
        mapping.root_indices.iter().copied(),
    );
    check_row_group_sizes(path, &metadata, &mask, config.max_row_group_bytes)?;
    let all: Vec<usize> = (0..metadata.metadata().num_row_groups()).collect();
    let row_groups = if range.is_unbounded() {
        all.clone()
    } else {
        prune_row_groups(&metadata, &mapping, config, range).unwrap_or_else(|| all.clone())
    };
    Ok(FilePlan {
        path: path.clone(),
        explicit: file.explicit,
        pruned: all.len() - row_groups.len(),
        metadata,
        mapping,
        mask,
        row_groups,
    })
}

/// Refuses a file whose row groups would take more than `limit` bytes in the projected
/// columns once decoded (by the sizes its footer declares), before any of it is read.
fn check_row_group_sizes(
    path: &Path,
    metadata: &ArrowReaderMetadata,
    mask: &ProjectionMask,
    limit: u64,
) -> Result<(), ParquetError> {
    for (row_group, rg) in metadata.metadata().row_groups().iter().enumerate() {
        let bytes: u64 = rg
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| mask.leaf_included(*leaf))
            .map(|(_, c)| {
                let declared = c.uncompressed_size().max(c.compressed_size()).max(0);
                u64::try_from(declared).unwrap_or(0)
            })
            .fold(0u64, u64::saturating_add);
        if bytes > limit {
            return Err(ParquetError::TooLarge {
                path: path.to_path_buf(),
                row_group,
                bytes,
                limit,
            });
        }
    }
    Ok(())
}

/// Row groups whose timestamp statistics may overlap the range; `None` when statistics cannot
/// be used (then every row group is read and rows are filtered one by one).
fn prune_row_groups(
    metadata: &ArrowReaderMetadata,
    mapping: &ResolvedMapping,
    config: &ParquetSourceConfig,
    range: TimeRange,
) -> Option<Vec<usize>> {
    let meta = metadata.metadata();
    let converter = StatisticsConverter::try_new(
        mapping.timestamp_column(),
        metadata.schema(),
        meta.file_metadata().schema_descr(),
    )
    .ok()?;
    let mins = converter.row_group_mins(meta.row_groups().iter()).ok()?;
    let maxes = converter.row_group_maxes(meta.row_groups().iter()).ok()?;
    let mins = timestamps_ms(&mins, config.timestamp_unit).ok()?;
    let maxes = timestamps_ms(&maxes, config.timestamp_unit).ok()?;
    Some(
        (0..meta.num_row_groups())
            .filter(|&rg| {
                match (
                    mins.get(rg).copied().flatten(),
                    maxes.get(rg).copied().flatten(),
                ) {
                    (Some(min), Some(max)) => range.overlaps(min, max),
                    _ => true,
                }
            })
            .collect(),
    )
}

/// Decodes one row group. Opens its own file handle: cloned handles share one file offset,
/// which parallel readers would race on.
fn decode_row_group(
    plan: &FilePlan,
    row_group: usize,
    batch_rows: usize,
    range: TimeRange,
) -> Result<Converted, ParquetError> {
    let path = &plan.path;
    let decode_err = |source: Box<dyn std::error::Error + Send + Sync>| ParquetError::Decode {
        path: path.clone(),
        row_group,
        source,
    };
    let handle = File::open(path).map_err(|source| ParquetError::Open {
        path: path.clone(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, plan.metadata.clone())
        .with_projection(plan.mask.clone())
        .with_row_groups(vec![row_group])
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| decode_err(Box::new(e)))?;
    let mut out = Converted::default();
    for batch in reader {
        let batch = batch.map_err(|e| decode_err(Box::new(e)))?;
        let converted = plan
            .mapping
            .convert(&batch, range)
            .map_err(|e| decode_err(Box::new(e)))?;
        out.append(converted);
    }
    Ok(out)
}

/// Reads every probe of the configured files into memory (tests, small replays, tools).
pub fn read_probes(
    config: &ParquetSourceConfig,
) -> Result<(Vec<Probe>, ReadSummary), ParquetError> {
    let files = expand_paths(&config.paths)?;
    let mut reader = ProbeReader::open(files, config, metrics().component("parquet_read"))?;
    let mut probes = Vec::new();
    while let Some(batch) = reader.next_batch()? {
        probes.extend(batch);
    }
    Ok((probes, reader.summary().clone()))
}
