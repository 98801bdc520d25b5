//! NDJSON sink, for looking at data: one JSON object per line (the records' serde form;
//! a matched point flattens its probe), to a file or to stdout. A closed stdout (`| head`)
//! ends the sink quietly: a broken pipe is success. Acknowledgements follow a flush, made
//! whenever the input goes quiet and at least every [`MAX_UNFLUSHED`] under a steady stream.
//! With `append`, a restart keeps what earlier runs wrote and cuts a line a crash left half
//! written.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use crate::config::Problems;
use crate::record::RecordKind;
use crate::runtime::{Acks, BoxError, Input, Records, Sink};
use crate::telemetry::metrics::metrics;

#[derive(Debug, thiserror::Error)]
pub enum NdjsonError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("{}: cannot create: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{where_}: write failed: {source}")]
    Write {
        where_: String,
        #[source]
        source: io::Error,
    },
    #[error("the NDJSON writer task failed: {0}")]
    Task(String),
}

/// The longest a steady stream holds written lines unflushed, and so unacknowledged.
pub const MAX_UNFLUSHED: Duration = Duration::from_secs(1);

/// The NDJSON sink. `path` is a file, or `-` / `stdout`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonSinkConfig {
    pub path: String,
    /// Keep what the file holds and write after it, instead of truncating it: what a sink
    /// fed by Kafka or Kinesis wants, since a restart resumes after the records earlier runs
    /// wrote. A last line without its newline (a crash mid-write; its records were never
    /// acknowledged) is cut first.
    #[serde(default)]
    pub append: bool,
}

impl NdjsonSinkConfig {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            append: false,
        }
    }

    fn is_stdout(&self) -> bool {
        self.path == "-" || self.path == "stdout"
    }

    /// Pure validation: no file access.
    pub fn validate(&self, key_prefix: &str, problems: &mut Problems) {
        problems.check(
            !self.path.trim().is_empty(),
            format!("{key_prefix}.path"),
            "a file path, or \"-\" for stdout, is required",
        );
        problems.check(
            !(self.append && self.is_stdout()),
            format!("{key_prefix}.append"),
            "only a file can be appended to, not stdout",
        );
    }

    /// Opens the output (the only I/O). With `kind`, batches of another kind are counted and
    /// dropped; without it, the first batch decides.
    pub fn build(
        &self,
        component: &str,
        kind: Option<RecordKind>,
    ) -> Result<Box<dyn Sink>, NdjsonError> {
        let mut problems = Problems::new();
        self.validate("sink", &mut problems);
        if !problems.is_empty() {
            let text: Vec<String> = problems.into_vec().iter().map(|p| p.to_string()).collect();
            return Err(NdjsonError::InvalidConfig(text.join("; ")));
        }
        let output = if self.is_stdout() {
            Output::Stdout
        } else {
            let path = PathBuf::from(&self.path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| NdjsonError::Create {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let opened = if self.append {
                open_for_append(&path, component)
            } else {
                File::create(&path)
            };
            let file = opened.map_err(|source| NdjsonError::Create {
                path: path.clone(),
                source,
            })?;
            Output::File(path, file)
        };
        Ok(Box::new(NdjsonSink {
            component: component.to_string(),
            output,
            kind,
        }))
    }
}

/// Opens `path` to write after its last complete line, cutting a torn one (counted as a
/// `repaired` file and logged).
fn open_for_append(path: &Path, component: &str) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let complete = complete_lines_len(&mut file, len)?;
    if complete < len {
        file.set_len(complete)?;
        metrics()
            .files
            .with_label_values(&[component, "repaired"])
            .inc();
        tracing::warn!(
            component,
            file = %path.display(),
            cut_bytes = len - complete,
            "cut a line an earlier run left half written; its records were never acknowledged"
        );
    }
    Ok(file)
}

/// The length of `file` up to and including its last newline (0 if it has none).
fn complete_lines_len(file: &mut File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        buf.clear();
        file.seek(SeekFrom::Start(start))?;
        (&mut *file).take(end - start).read_to_end(&mut buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

enum Output {
    Stdout,
    File(PathBuf, File),
}

struct NdjsonSink {
    component: String,
    output: Output,
    kind: Option<RecordKind>,
}

#[async_trait]
impl Sink for NdjsonSink {
    async fn run(self: Box<Self>, input: Input) -> Result<(), BoxError> {
        let NdjsonSink {
            component,
            output,
            kind,
        } = *self;
        let task = tokio::task::spawn_blocking(move || match output {
            Output::Stdout => {
                let stdout = io::stdout();
                write_all(input, &component, kind, stdout.lock(), "stdout", true)
            }
            Output::File(path, file) => {
                let where_ = path.display().to_string();
                write_all(input, &component, kind, file, &where_, false)
            }
        });
        task.await
            .map_err(|e| Box::new(NdjsonError::Task(e.to_string())) as BoxError)??;
        Ok(())
    }
}

/// Writes each record as one JSON line; returns the number of lines.
pub fn write_records<W: Write>(out: &mut W, records: &Records) -> io::Result<usize> {
    fn lines<W: Write, T: serde::Serialize>(out: &mut W, rows: &[T]) -> io::Result<usize> {
        for row in rows {
            serde_json::to_writer(&mut *out, row)?;
            out.write_all(b"\n")?;
        }
        Ok(rows.len())
    }
    match records {
        Records::Probes(v) => lines(out, v),
        Records::MatchedPoints(v) => lines(out, v),
        Records::Observations(v) => lines(out, v),
        Records::Speeds(v) => lines(out, v),
    }
}

fn write_all<W: Write>(
    mut input: Input,
    component: &str,
    mut kind: Option<RecordKind>,
    out: W,
    where_: &str,
    broken_pipe_ok: bool,
) -> Result<(), NdjsonError> {
    let component_metrics = metrics().component(component);
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut unflushed = Acks::none();
    let mut flushed_at = Instant::now();
    let quiet = |e: &io::Error| broken_pipe_ok && e.kind() == io::ErrorKind::BrokenPipe;
    while let Some(batch) = input.blocking_next() {
        let expected = *kind.get_or_insert(batch.records.kind());
        if batch.records.kind() != expected {
            component_metrics.error("wrong_record_kind");
            component_metrics.dropped("wrong_record_kind", batch.len() as u64);
            crate::warn_limited!(
                component,
                expected = %expected,
                found = %batch.records.kind(),
                "dropped a batch of the wrong record kind"
            );
            continue;
        }
        if let Err(e) = write_records(&mut out, &batch.records) {
            batch.acks.fail();
            unflushed.fail();
            if quiet(&e) {
                tracing::debug!(component, "stdout closed; NDJSON sink stops");
                return Ok(());
            }
            return Err(NdjsonError::Write {
                where_: where_.to_string(),
                source: e,
            });
        }
        unflushed.extend(batch.acks);
        // Flush when the input has nothing more for now, or a steady stream has kept lines
        // unflushed for long enough, so acknowledgements (and lines for a reader of the
        // file) do not wait for the end of a long-running stream.
        let due = input.is_idle() || flushed_at.elapsed() >= MAX_UNFLUSHED;
        if !unflushed.is_empty() && due {
            if let Err(e) = out.flush() {
                unflushed.fail();
                if quiet(&e) {
                    return Ok(());
                }
                return Err(NdjsonError::Write {
                    where_: where_.to_string(),
                    source: e,
                });
            }
            std::mem::take(&mut unflushed).ack();
            flushed_at = Instant::now();
        }
    }
    match out.flush() {
        Err(e) if quiet(&e) => {
            unflushed.fail();
            Ok(())
        }
        Err(source) => {
            unflushed.fail();
            Err(NdjsonError::Write {
                where_: where_.to_string(),
                source,
            })
        }
        Ok(()) => {
            unflushed.ack();
            Ok(())
        }
    }
}
