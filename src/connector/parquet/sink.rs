//! The Parquet sink: encodes batches on a dedicated thread (encoding and zstd are CPU work),
//! rolls files by rows, bytes or time, and writes the footer at the end of input and from
//! `Drop` (a panic upstream). Each file is written as `<name>.tmp` and renamed once complete,
//! so a reader never finds a Parquet file without its footer. A batch is acknowledged once
//! the file holding its last row is closed. A file that fails to write (a full disk, say) is
//! abandoned: its `.tmp` is removed and its rows are never acknowledged, so nothing partial
//! is left looking complete and the source will deliver them again.
//!
//! A rolling sink continues the numbering after the highest file already in its directory,
//! so a restart never replaces an earlier run's files; a `.tmp` that a crash left behind is
//! renamed on start if its footer is valid and removed otherwise.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::SerializedFileReader;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::config::{Compression, ParquetSinkConfig, DEFAULT_ZSTD_LEVEL};
use super::drop_reason;
use super::error::ParquetError;
use super::spawn_thread;
use crate::record::{
    ArrowRecord, MatchedPoint, Probe, RecordKind, SegmentObservation, SegmentSpeed,
};
use crate::runtime::{Acks, BoxError, Input, Next, Records, Sink};
use crate::telemetry::metrics::{metrics, ComponentMetrics};

/// Where the sink writes: one file, or a directory in which the record kind names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    File(PathBuf),
    Dir(PathBuf),
}

pub struct ParquetSink {
    component: String,
    target: SinkTarget,
    config: ParquetSinkConfig,
    kind: Option<RecordKind>,
}

impl ParquetSink {
    pub(crate) fn new(
        component: String,
        target: SinkTarget,
        config: ParquetSinkConfig,
        kind: Option<RecordKind>,
    ) -> Self {
        Self {
            component,
            target,
            config,
            kind,
        }
    }
}

#[async_trait]
impl Sink for ParquetSink {
    async fn run(self: Box<Self>, input: Input) -> Result<(), BoxError> {
        let ParquetSink {
            component,
            target,
            config,
            kind,
        } = *self;
        let handle = Handle::current();
        let writer = spawn_thread("parquet-sink", move || {
            write_input(input, &handle, &component, &target, &config, kind)
        })?;
        writer.await??;
        Ok(())
    }
}

fn write_input(
    mut input: Input,
    handle: &Handle,
    component: &str,
    target: &SinkTarget,
    config: &ParquetSinkConfig,
    kind: Option<RecordKind>,
) -> Result<Vec<PathBuf>, ParquetError> {
    // `Instant::now()` on this thread follows the runtime's clock (paused in tests).
    let _runtime = handle.enter();
    let roll_interval = config.roll_interval_ms.map(Duration::from_millis);
    let mut writer = kind
        .map(|k| RollingWriter::new(component, target, config, k))
        .transpose()?;
    // Tokens of the batches whose last row is in the open file: a row is durable only once
    // its file has its footer and its final name, and a token covers its whole batch.
    let mut pending = Acks::none();
    loop {
        let due = writer
            .as_ref()
            .and_then(RollingWriter::open_since)
            .zip(roll_interval)
            .map(|(opened, interval)| opened + interval);
        let next = match due {
            Some(due) if due <= Instant::now() => Next::TimedOut,
            Some(due) => {
                input.blocking_next_timeout(handle, due.saturating_duration_since(Instant::now()))
            }
            None => input.blocking_next().map_or(Next::Closed, Next::Batch),
        };
        let batch = match next {
            Next::Batch(batch) => batch,
            Next::Closed => break,
            Next::TimedOut => {
                // Only reached with an open file, so only with a writer.
                if let Some(w) = &mut writer {
                    w.roll().inspect_err(|_| pending.fail())?;
                }
                std::mem::take(&mut pending).ack();
                continue;
            }
        };
        let w = match &mut writer {
            Some(w) => w,
            None => match RollingWriter::new(component, target, config, batch.records.kind()) {
                Ok(w) => writer.insert(w),
                Err(e) => {
                    batch.acks.fail();
                    return Err(e);
                }
            },
        };
        let closed_before = w.written().len();
        if let Err(e) = w.write(&batch.records) {
            batch.acks.fail();
            pending.fail();
            return Err(e);
        }
        if w.written().len() > closed_before {
            // Files close in order: the one that held the pending batches' last rows is done.
            std::mem::take(&mut pending).ack();
        }
        if w.has_open_file() {
            pending.extend(batch.acks);
        } else {
            batch.acks.ack();
        }
    }
    match writer {
        Some(w) => {
            let written = w.finish().inspect_err(|_| pending.fail())?;
            pending.ack();
            Ok(written)
        }
        None => {
            tracing::warn!(
                component,
                "input ended without records and no record kind was given: no Parquet file written"
            );
            Ok(Vec::new())
        }
    }
}

/// Writes all `batches` with `config` to files for `kind`; returns the files written.
/// The synchronous core of the sink, for tools, tests and benchmarks.
pub fn write_records(
    config: &ParquetSinkConfig,
    kind: RecordKind,
    batches: impl IntoIterator<Item = Records>,
) -> Result<Vec<PathBuf>, ParquetError> {
    let mut writer = RollingWriter::new("parquet_write", &config.target(), config, kind)?;
    for records in batches {
        writer.write(&records)?;
    }
    writer.finish()
}

struct OpenFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
    /// When its first row was written.
    opened_at: Instant,
}

/// Writes one record kind to one file, or to numbered files when rolling.
pub struct RollingWriter {
    metrics: Arc<ComponentMetrics>,
    kind: RecordKind,
    schema: SchemaRef,
    props: WriterProperties,
    /// The exact file when not rolling.
    single: Option<PathBuf>,
    dir: PathBuf,
    stem: String,
    extension: String,
    max_rows: Option<u64>,
    max_bytes: Option<u64>,
    next_index: u64,
    /// Whether the directory held numbered files of this stem when the writer started.
    found_earlier_files: bool,
    current: Option<OpenFile>,
    written: Vec<PathBuf>,
}

fn schema_of(kind: RecordKind) -> SchemaRef {
    match kind {
        RecordKind::Probe => Probe::schema(),
        RecordKind::MatchedPoint => MatchedPoint::schema(),
        RecordKind::SegmentObservation => SegmentObservation::schema(),
        RecordKind::SegmentSpeed => SegmentSpeed::schema(),
    }
}

fn to_record_batch(records: &Records) -> Result<RecordBatch, crate::record::ArrowError> {
    match records {
        Records::Probes(v) => Probe::to_record_batch(v),
        Records::MatchedPoints(v) => MatchedPoint::to_record_batch(v),
        Records::Observations(v) => SegmentObservation::to_record_batch(v),
        Records::Speeds(v) => SegmentSpeed::to_record_batch(v),
    }
}

fn writer_properties(config: &ParquetSinkConfig) -> Result<WriterProperties, ParquetError> {
    let compression = match config.compression {
        Compression::Zstd => {
            let level = config.compression_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
            let level = ZstdLevel::try_new(level).map_err(|e| {
                ParquetError::InvalidConfig(format!("compression_level {level}: {e}"))
            })?;
            ParquetCompression::ZSTD(level)
        }
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(config.row_group_rows.max(1)))
        .set_created_by(format!("pipeline {}", env!("CARGO_PKG_VERSION")))
        .build())
}

impl RollingWriter {
    /// Creates the output directory and, when rolling, deals with what an earlier run left
    /// there (see [`RollingWriter::take_stock`]); files are opened on the first write (or at
    /// `finish`).
    pub fn new(
        component: &str,
        target: &SinkTarget,
        config: &ParquetSinkConfig,
        kind: RecordKind,
    ) -> Result<Self, ParquetError> {
        let (dir, stem, extension, exact) = match target {
            SinkTarget::Dir(dir) => (
                dir.clone(),
                kind.file_stem().to_string(),
                "parquet".to_string(),
                dir.join(format!("{}.parquet", kind.file_stem())),
            ),
            SinkTarget::File(path) => (
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(".")),
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| kind.file_stem().to_string()),
                path.extension()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "parquet".to_string()),
                path.clone(),
            ),
        };
        std::fs::create_dir_all(&dir).map_err(|source| ParquetError::Create {
            path: dir.clone(),
            source,
        })?;
        let mut writer = Self {
            metrics: metrics().component(component),
            kind,
            schema: schema_of(kind),
            props: writer_properties(config)?,
            single: (!config.is_rolling()).then_some(exact),
            dir,
            stem,
            extension,
            max_rows: config.max_rows_per_file,
            max_bytes: config.max_bytes_per_file,
            next_index: 0,
            found_earlier_files: false,
            current: None,
            written: Vec::new(),
        };
        if writer.single.is_none() {
            writer.take_stock()?;
        }
        Ok(writer)
    }

    /// Rolling only: numbering continues after the highest `<stem>-<n>.<ext>` (or its
    /// `.tmp`) in the directory, and each leftover `.tmp` (a crash between opening a file and
    /// renaming it) is renamed to its final name if its footer is valid, removed otherwise.
    /// Neither case loses acknowledged rows: a file is acknowledged only after its rename.
    fn take_stock(&mut self) -> Result<(), ParquetError> {
        let open_err = |source| ParquetError::Open {
            path: self.dir.clone(),
            source,
        };
        let mut highest = None;
        let mut complete_found = false;
        let mut leftovers = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(open_err)? {
            let entry = entry.map_err(open_err)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let (complete, is_tmp) = match name.strip_suffix(".tmp") {
                Some(complete) => (complete, true),
                None => (name, false),
            };
            let Some(index) = numbered_index(complete, &self.stem, &self.extension) else {
                continue;
            };
            highest = highest.max(Some(index));
            if is_tmp {
                leftovers.push((index, entry.path()));
            } else {
                complete_found = true;
            }
        }
        leftovers.sort();
        for (index, tmp) in leftovers {
            complete_found |= self.settle_leftover(&tmp, &self.numbered_path(index));
        }
        self.found_earlier_files = complete_found;
        self.next_index = highest.map_or(0, |i| i + 1);
        Ok(())
    }

    /// Renames a leftover `.tmp` with a valid footer to `path`, removes any other; counts and
    /// logs either, and returns whether `path` now exists. A failure is logged, not fatal:
    /// the numbering skips the name anyway.
    fn settle_leftover(&self, tmp: &Path, path: &Path) -> bool {
        let component = self.metrics.component.as_str();
        let complete = !path.exists()
            && File::open(tmp)
                .ok()
                .is_some_and(|f| SerializedFileReader::new(f).is_ok());
        let (outcome, result) = if complete {
            ("recovered", std::fs::rename(tmp, path))
        } else {
            ("discarded", std::fs::remove_file(tmp))
        };
        match result {
            Ok(()) => {
                metrics()
                    .files
                    .with_label_values(&[component, outcome])
                    .inc();
                if complete {
                    tracing::warn!(
                        component,
                        file = %path.display(),
                        "recovered a complete Parquet file an earlier run left unrenamed"
                    );
                } else {
                    tracing::warn!(
                        component,
                        file = %tmp.display(),
                        "removed an incomplete Parquet file an earlier run left behind; its rows \
                         were never acknowledged"
                    );
                }
                complete
            }
            Err(e) => {
                tracing::error!(
                    component,
                    file = %tmp.display(),
                    error = %e,
                    "could not deal with a Parquet file an earlier run left behind"
                );
                false
            }
        }
    }

    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// Files completed so far.
    pub fn written(&self) -> &[PathBuf] {
        &self.written
    }

    /// Writes a batch; a batch of another record kind is counted and dropped.
    pub fn write(&mut self, records: &Records) -> Result<(), ParquetError> {
        if records.kind() != self.kind {
            self.metrics.error("wrong_record_kind");
            self.metrics
                .dropped(drop_reason::WRONG_RECORD_KIND, records.len() as u64);
            crate::warn_limited!(
                component = %self.metrics.component,
                expected = %self.kind,
                found = %records.kind(),
                rows = records.len(),
                "dropped a batch of the wrong record kind"
            );
            return Ok(());
        }
        if records.is_empty() {
            return Ok(());
        }
        let batch = to_record_batch(records).map_err(|e| ParquetError::Write {
            path: self.pending_path(),
            source: Box::new(e),
        })?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let (max_rows, max_bytes) = (self.max_rows, self.max_bytes);
            let file = self.open_current()?;
            let room = max_rows.map_or(u64::MAX, |m| m.saturating_sub(file.rows).max(1));
            let n = (batch.num_rows() - offset).min(usize::try_from(room).unwrap_or(usize::MAX));
            if let Err(e) = file.writer.write(&batch.slice(offset, n)) {
                let path = file.tmp.clone();
                self.abandon_current();
                return Err(ParquetError::Write {
                    path,
                    source: Box::new(e),
                });
            }
            file.rows += n as u64;
            offset += n;
            let bytes = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
            let full =
                max_rows.is_some_and(|m| file.rows >= m) || max_bytes.is_some_and(|m| bytes >= m);
            if full {
                self.close_current()?;
            }
        }
        Ok(())
    }

    /// Whether a file is open (rows written to it are not durable yet). An open file always
    /// holds at least one row.
    pub fn has_open_file(&self) -> bool {
        self.current.is_some()
    }

    /// When the open file got its first row.
    pub fn open_since(&self) -> Option<Instant> {
        self.current.as_ref().map(|f| f.opened_at)
    }

    /// Closes the open file, if any, so that the next row starts a new one.
    pub fn roll(&mut self) -> Result<(), ParquetError> {
        self.close_current()
    }

    /// Closes the open file and returns every file written. When nothing was written, an
    /// empty file with the schema is left, unless a rolling writer found files of an earlier
    /// run (a reader of the directory finds the schema there).
    pub fn finish(mut self) -> Result<Vec<PathBuf>, ParquetError> {
        if self.written.is_empty() && !self.found_earlier_files {
            self.open_current()?;
        }
        self.close_current()?;
        Ok(std::mem::take(&mut self.written))
    }

    fn pending_path(&self) -> PathBuf {
        match &self.single {
            Some(path) => path.clone(),
            None => self.numbered_path(self.next_index),
        }
    }

    fn numbered_path(&self, index: u64) -> PathBuf {
        self.dir
            .join(format!("{}-{index:05}.{}", self.stem, self.extension))
    }

    /// Creates the `.tmp` of the next file. A rolling writer claims a name no other file
    /// has (`create_new`), moving past any taken, so it never writes over a file.
    fn create_next(&mut self) -> Result<(PathBuf, PathBuf, File), ParquetError> {
        loop {
            let path = self.pending_path();
            self.next_index += 1;
            let tmp = tmp_path(&path);
            let created = if self.single.is_some() {
                File::create(&tmp)
            } else if path.exists() {
                continue;
            } else {
                OpenOptions::new().write(true).create_new(true).open(&tmp)
            };
            match created {
                Ok(file) => return Ok((tmp, path, file)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && self.single.is_none() => {}
                Err(source) => return Err(ParquetError::Create { path: tmp, source }),
            }
        }
    }

    fn open_current(&mut self) -> Result<&mut OpenFile, ParquetError> {
        if self.current.is_none() {
            let (tmp, path, file) = self.create_next()?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                .map_err(|e| ParquetError::Write {
                    path: tmp.clone(),
                    source: Box::new(e),
                })?;
            self.current = Some(OpenFile {
                tmp,
                path,
                writer,
                rows: 0,
                opened_at: Instant::now(),
            });
        }
        self.current.as_mut().ok_or_else(|| ParquetError::Write {
            path: self.dir.clone(),
            source: "no open file".into(),
        })
    }

    /// Drops the open file after a failed write: removes its `.tmp`, counts it.
    fn abandon_current(&mut self) {
        let Some(open) = self.current.take() else {
            return;
        };
        drop(open.writer);
        remove_abandoned(&self.metrics.component, &open.tmp);
    }

    fn close_current(&mut self) -> Result<(), ParquetError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let tmp = open.tmp.clone();
        self.close_file(open).inspect_err(|_| {
            remove_abandoned(&self.metrics.component, &tmp);
        })
    }

    fn close_file(&mut self, mut open: OpenFile) -> Result<(), ParquetError> {
        let write_err =
            |path: &Path, e: Box<dyn std::error::Error + Send + Sync>| ParquetError::Write {
                path: path.to_path_buf(),
                source: e,
            };
        open.writer
            .finish()
            .map_err(|e| write_err(&open.tmp, Box::new(e)))?;
        open.writer
            .inner_mut()
            .sync_all()
            .map_err(|e| write_err(&open.tmp, Box::new(e)))?;
        drop(open.writer);
        std::fs::rename(&open.tmp, &open.path).map_err(|source| ParquetError::Rename {
            from: open.tmp.clone(),
            to: open.path.clone(),
            source,
        })?;
        metrics()
            .files
            .with_label_values(&[self.metrics.component.as_str(), "written"])
            .inc();
        tracing::debug!(
            component = %self.metrics.component,
            file = %open.path.display(),
            rows = open.rows,
            "Parquet file written"
        );
        self.written.push(open.path);
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// The `<n>` of a file named `<stem>-<n>.<extension>`.
fn numbered_index(name: &str, stem: &str, extension: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(stem)?
        .strip_prefix('-')?
        .strip_suffix(extension)?
        .strip_suffix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes the `.tmp` of a file that could not be completed, and counts it.
fn remove_abandoned(component: &str, tmp: &Path) {
    metrics()
        .files
        .with_label_values(&[component, "abandoned"])
        .inc();
    match std::fs::remove_file(tmp) {
        Ok(()) => tracing::error!(
            component,
            file = %tmp.display(),
            "abandoned a Parquet file that could not be written; its rows were not acknowledged"
        ),
        Err(e) => tracing::error!(
            component,
            file = %tmp.display(),
            error = %e,
            "could not remove an abandoned Parquet file"
        ),
    }
}

impl Drop for RollingWriter {
    /// An error or a panic must still leave a readable file: write the footer of whatever
    /// is open.
    fn drop(&mut self) {
        if let Err(e) = self.close_current() {
            tracing::error!(
                component = %self.metrics.component,
                error = %e,
                "could not close a Parquet file"
            );
        }
    }
}
