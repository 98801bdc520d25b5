//! The Parquet replay source: a dedicated thread runs the [`ProbeReader`] (decoding is CPU
//! work, kept off the async runtime) and feeds a small bounded channel; the async side paces
//! batches by event time when asked, and forwards them with backpressure.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{ParquetSourceConfig, ReplayRate};
use super::error::ParquetError;
use super::reader::{InputFile, ProbeReader, ReadSummary};
use super::spawn_thread;
use crate::record::Probe;
use crate::runtime::{Batch, BoxError, Output, Source};
use crate::telemetry::metrics::metrics;

/// Decoded batches waiting for the async side: enough to hide decode latency, small enough
/// that a blocked downstream stops the reader quickly.
const DECODED_BATCHES_BUFFERED: usize = 2;

pub struct ParquetSource {
    component: String,
    files: Vec<InputFile>,
    config: ParquetSourceConfig,
}

impl ParquetSource {
    pub fn new(component: String, files: Vec<InputFile>, config: ParquetSourceConfig) -> Self {
        Self {
            component,
            files,
            config,
        }
    }
}

/// Releases a batch once its newest event time, scaled by the replay factor, has come on
/// the (tokio) clock, counting from the first batch. Pacing only ever delays.
struct Pacer {
    factor: Option<f64>,
    anchor: Option<(Instant, i64)>,
}

impl Pacer {
    fn new(rate: ReplayRate) -> Self {
        let factor = match rate {
            ReplayRate::Max => None,
            ReplayRate::Factor(f) if f.is_finite() && f > 0.0 => Some(f),
            ReplayRate::Factor(_) => None,
        };
        Self {
            factor,
            anchor: None,
        }
    }

    fn deadline(&mut self, batch: &Batch) -> Option<Instant> {
        let factor = self.factor?;
        let ts_ms = batch.records.max_event_ts_ms()?;
        let Some((start, anchor_ms)) = self.anchor else {
            self.anchor = Some((Instant::now(), ts_ms));
            return None;
        };
        let wall_ms = (ts_ms - anchor_ms) as f64 / factor;
        (wall_ms > 0.0).then(|| start + Duration::from_secs_f64(wall_ms / 1000.0))
    }
}

enum Ended {
    Input,
    Shutdown,
}

#[async_trait]
impl Source for ParquetSource {
    async fn run(
        self: Box<Self>,
        mut out: Output,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let ParquetSource {
            component,
            files,
            config,
        } = *self;
        let (tx, mut rx) = mpsc::channel::<Vec<Probe>>(DECODED_BATCHES_BUFFERED);
        let stop = StopFlag::default();
        let reader_stop = stop.clone();
        let reader_config = config.clone();
        let reader_metrics = metrics().component(&component);
        let producer = spawn_thread("parquet-replay", move || {
            produce(files, &reader_config, reader_metrics, tx, reader_stop)
        })?;
        let mut pacer = Pacer::new(config.rate);
        let ended = loop {
            let probes = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ended::Shutdown,
                probes = rx.recv() => probes,
            };
            let Some(probes) = probes else {
                break Ended::Input;
            };
            let batch = Batch::from(probes);
            if let Some(deadline) = pacer.deadline(&batch) {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break Ended::Shutdown,
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            let sent = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ended::Shutdown,
                sent = out.send(batch) => sent,
            };
            if let Err(closed) = sent {
                stop.store(true, Ordering::Relaxed);
                drop(rx);
                return Err(Box::new(closed));
            }
        };
        stop.store(true, Ordering::Relaxed);
        // Closing the channel unblocks a reader waiting to hand over a batch.
        drop(rx);
        let result = producer.await;
        finish(&component, result, matches!(ended, Ended::Shutdown))
    }
}

type StopFlag = std::sync::Arc<std::sync::atomic::AtomicBool>;

fn produce(
    files: Vec<InputFile>,
    config: &ParquetSourceConfig,
    metrics: std::sync::Arc<crate::telemetry::metrics::ComponentMetrics>,
    tx: mpsc::Sender<Vec<Probe>>,
    stop: StopFlag,
) -> Result<ReadSummary, ParquetError> {
    let mut reader = ProbeReader::open(files, config, metrics)?;
    reader.set_stop_flag(stop);
    while let Some(batch) = reader.next_batch()? {
        if tx.blocking_send(batch).is_err() {
            // The async side stopped (shutdown or downstream gone); it reports why.
            break;
        }
    }
    Ok(reader.summary().clone())
}

fn finish(
    component: &str,
    result: Result<Result<ReadSummary, ParquetError>, ParquetError>,
    shutdown: bool,
) -> Result<(), BoxError> {
    match result.and_then(|r| r) {
        Ok(summary) => {
            tracing::info!(
                component,
                shutdown,
                files_read = summary.files_read,
                files_skipped = summary.files_skipped.len(),
                row_groups_read = summary.row_groups_read,
                row_groups_pruned = summary.row_groups_pruned,
                rows_read = summary.rows_read,
                rows_emitted = summary.rows_emitted,
                rows_null_field = summary.rows_null_field,
                rows_bad_timestamp = summary.rows_bad_timestamp,
                rows_too_large = summary.rows_too_large,
                rows_invalid_utf8 = summary.rows_invalid_utf8,
                rows_outside_range = summary.rows_outside_range,
                "Parquet replay finished"
            );
            Ok(())
        }
        Err(e) => Err(Box::new(e)),
    }
}
