//! NDJSON sink, for looking at data: one JSON object per line (the records' serde form;
//! a matched point flattens its probe), to a file or to stdout. A closed stdout (`| head`)
//! ends the sink quietly: a broken pipe is success.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

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

/// The NDJSON sink. `path` is a file (created or truncated), or `-` / `stdout`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonSinkConfig {
    pub path: String,
}

impl NdjsonSinkConfig {
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into() }
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
            let file = File::create(&path).map_err(|source| NdjsonError::Create {
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
        // Flush when the input has nothing more for now, so acknowledgements (and lines
        // for a reader of the file) do not wait for the end of a long-running stream.
        if !unflushed.is_empty() && input.is_idle() {
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
