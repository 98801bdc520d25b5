//! The Parquet sink: encodes batches on a dedicated thread (encoding and zstd are CPU work),
//! rolls files by rows or bytes, and writes the footer at the end of input and from `Drop`
//! (a panic upstream). Each file is written as `<name>.tmp` and renamed once complete, so a
//! reader never finds a Parquet file without its footer. A file that fails to write (a
//! full disk, say) is abandoned: its `.tmp` is removed and its rows are never acknowledged,
//! so nothing partial is left looking complete and the source will deliver them again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::config::{Compression, ParquetSinkConfig, DEFAULT_ZSTD_LEVEL};
use super::drop_reason;
use super::error::ParquetError;
use super::spawn_thread;
use crate::record::{
    ArrowRecord, MatchedPoint, Probe, RecordKind, SegmentObservation, SegmentSpeed,
};
use crate::runtime::{Acks, BoxError, Input, Records, Sink};
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
        let writer = spawn_thread("parquet-sink", move || {
            write_input(input, &component, &target, &config, kind)
        })?;
        writer.await??;
        Ok(())
    }
}

fn write_input(
    mut input: Input,
    component: &str,
    target: &SinkTarget,
    config: &ParquetSinkConfig,
    kind: Option<RecordKind>,
) -> Result<Vec<PathBuf>, ParquetError> {
    let mut writer = kind
        .map(|k| RollingWriter::new(component, target, config, k))
        .transpose()?;
    // Acknowledgement tokens of rows not yet in a closed file: a row is durable only once
    // its file has its footer and its final name.
    let mut unflushed = Acks::none();
    while let Some(batch) = input.blocking_next() {
        let w = match &mut writer {
            Some(w) => w,
            None => match RollingWriter::new(component, target, config, batch.records.kind()) {
                Ok(w) => writer.insert(w),
                Err(e) => {
                    batch.acks.fail();
                    unflushed.fail();
                    return Err(e);
                }
            },
        };
        if let Err(e) = w.write(&batch.records) {
            batch.acks.fail();
            unflushed.fail();
            return Err(e);
        }
        unflushed.extend(batch.acks);
        if !w.has_open_file() {
            std::mem::take(&mut unflushed).ack();
        }
    }
    match writer {
        Some(w) => {
            let written = w.finish().inspect_err(|_| unflushed.fail())?;
            unflushed.ack();
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
    next_index: u32,
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
    /// Creates the output directory; files are opened on the first write (or at `finish`).
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
        Ok(Self {
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
            current: None,
            written: Vec::new(),
        })
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

    /// Whether a file is open (rows written to it are not durable yet).
    pub fn has_open_file(&self) -> bool {
        self.current.is_some()
    }

    /// Closes the open file (an empty one if nothing was ever written) and returns every
    /// file written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, ParquetError> {
        if self.written.is_empty() {
            self.open_current()?;
        }
        self.close_current()?;
        Ok(std::mem::take(&mut self.written))
    }

    fn pending_path(&self) -> PathBuf {
        match &self.single {
            Some(path) => path.clone(),
            None => self.dir.join(format!(
                "{}-{:05}.{}",
                self.stem, self.next_index, self.extension
            )),
        }
    }

    fn open_current(&mut self) -> Result<&mut OpenFile, ParquetError> {
        if self.current.is_none() {
            let path = self.pending_path();
            self.next_index += 1;
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let file = File::create(&tmp).map_err(|source| ParquetError::Create {
                path: tmp.clone(),
                source,
            })?;
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
