//! The Parquet replay source: a dedicated thread runs the [`ProbeReader`] (decoding is CPU
//! work, kept off the async runtime) and feeds a small bounded channel; the async side paces
//! by event time when asked (cutting each decoded batch into runs of at most
//! [`PACE_STEP_WALL_MS`] of scaled time, each sent when due), and forwards them with
//! backpressure.

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
use crate::runtime::{Batch, BoxError, DownstreamClosed, Output, Source};
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

/// Longest stretch of scaled (wall-clock) time one paced batch may cover: a decoded batch
/// is cut into runs whose records' pace times lie within `rate × PACE_STEP_WALL_MS` of
/// event time of each other, and each run leaves when the pace time of its last record
/// comes. So a record leaves no earlier than its own time and at most this much after it,
/// and a large batch (or row group) spanning minutes of event time trickles out over those
/// minutes instead of in one burst. 100 ms adds at most 10 batches per second of replay.
pub const PACE_STEP_WALL_MS: u64 = 100;

/// A forward step of event time larger than this between consecutive records (1 h) is
/// followed only once [`PACE_JUMP_CONFIRM_RECORDS`] records within this much of each other
/// confirm it, so one probe stamped 2099 cannot stall a paced replay for decades.
pub const PACE_JUMP_MS: i64 = 3_600_000;

/// Records that must agree on a large forward jump of event time (see [`PACE_JUMP_MS`]),
/// and the company the earliest record of the first batch needs to become time zero.
pub const PACE_JUMP_CONFIRM_RECORDS: usize = 8;

/// Paces a replay at `rate`× real time by event time, from the first record: time zero is
/// the earliest event time of the first batch, taken at the instant that batch arrives,
/// and a record is due when the real time elapsed since reaches (its pace time − time
/// zero) / rate. Its pace time is the newest event time seen up to and including it (so an
/// out-of-order record leaves with its neighbours, never holds the stream back), see
/// [`PaceClock`]. Pacing only ever delays: it changes neither content nor order.
struct Pacer {
    factor: Option<f64>,
    started: Option<(Instant, PaceClock)>,
}

/// A run of a decoded batch: its first `len` records, due at the pace time `pace_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    len: usize,
    pace_ms: i64,
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
            started: None,
        }
    }

    /// Cuts `probes` into the batches to send, each with the instant it is due (none:
    /// at once). Unpaced, the batch goes whole.
    fn pace(&mut self, probes: Vec<Probe>) -> Vec<(Vec<Probe>, Option<Instant>)> {
        let Some(factor) = self.factor else {
            return vec![(probes, None)];
        };
        if probes.is_empty() {
            return vec![(probes, None)];
        }
        let ts_ms: Vec<i64> = probes.iter().map(|p| p.ts_ms).collect();
        let (start, clock) = self
            .started
            .get_or_insert_with(|| (Instant::now(), PaceClock::new(time_zero_ms(&ts_ms))));
        let step_ms = (factor * PACE_STEP_WALL_MS as f64).max(0.0) as i64;
        let runs = clock.runs(&ts_ms, step_ms);
        let zero_ms = clock.zero_ms;
        let start = *start;
        let due = |pace_ms: i64| {
            let wall_s = (pace_ms.saturating_sub(zero_ms)) as f64 / factor / 1000.0;
            (wall_s > 0.0).then(|| start + Duration::from_secs_f64(wall_s))
        };
        if let [run] = runs.as_slice() {
            return vec![(probes, due(run.pace_ms))];
        }
        let mut rest = probes.into_iter();
        runs.iter()
            .map(|run| (rest.by_ref().take(run.len).collect(), due(run.pace_ms)))
            .collect()
    }
}

/// Time zero of a paced replay: the earliest event time of the first batch that has
/// company, i.e. with at least [`PACE_JUMP_CONFIRM_RECORDS`] − 1 other records of the
/// batch within [`PACE_JUMP_MS`] after it; so one probe stamped 1970 in the first batch
/// does not make the replay wait decades. When no record has company (a batch of sparse
/// records), the earliest one.
fn time_zero_ms(ts_ms: &[i64]) -> i64 {
    let mut sorted = ts_ms.to_vec();
    sorted.sort_unstable();
    let company = PACE_JUMP_CONFIRM_RECORDS
        .min(sorted.len())
        .saturating_sub(1);
    sorted
        .iter()
        .zip(sorted.iter().skip(company))
        .find(|(first, last)| last.saturating_sub(**first) <= PACE_JUMP_MS)
        .or_else(|| sorted.first().map(|t| (t, t)))
        .map_or(0, |(first, _)| *first)
}

/// The event time a paced replay has reached (its pace time), moved forward by records in
/// order: to a record's time when that is later but at most [`PACE_JUMP_MS`] ahead; a
/// record further ahead starts a pending jump, which [`PACE_JUMP_CONFIRM_RECORDS`]
/// consecutive records within [`PACE_JUMP_MS`] of its first confirm (the clock then moves
/// to the newest of them) and any record back within reach refutes (it was an outlier, and
/// leaves at the current pace). Pure: no clock is read here.
#[derive(Debug)]
struct PaceClock {
    zero_ms: i64,
    now_ms: i64,
    jump: Option<Jump>,
}

#[derive(Debug, Clone, Copy)]
struct Jump {
    first_ms: i64,
    newest_ms: i64,
    count: usize,
    /// Index of its first record in the batch being cut; 0 when it began in an earlier
    /// batch (the records of it there already left at the pace before the jump).
    first_index: usize,
}

enum Step {
    Moved,
    JumpConfirmed { first_index: usize },
}

impl PaceClock {
    fn new(zero_ms: i64) -> Self {
        Self {
            zero_ms,
            now_ms: zero_ms,
            jump: None,
        }
    }

    fn advance(&mut self, ts_ms: i64, index: usize) -> Step {
        if ts_ms.saturating_sub(self.now_ms) <= PACE_JUMP_MS {
            self.jump = None;
            self.now_ms = self.now_ms.max(ts_ms);
            return Step::Moved;
        }
        match &mut self.jump {
            Some(jump) if ts_ms.abs_diff(jump.first_ms) <= PACE_JUMP_MS.unsigned_abs() => {
                jump.count += 1;
                jump.newest_ms = jump.newest_ms.max(ts_ms);
                if jump.count >= PACE_JUMP_CONFIRM_RECORDS {
                    let first_index = jump.first_index;
                    self.now_ms = jump.newest_ms;
                    self.jump = None;
                    return Step::JumpConfirmed { first_index };
                }
            }
            _ => {
                self.jump = Some(Jump {
                    first_ms: ts_ms,
                    newest_ms: ts_ms,
                    count: 1,
                    first_index: index,
                });
            }
        }
        Step::Moved
    }

    /// Cuts a batch (its event times, in order) into runs: a new run starts where a
    /// record's pace time is more than `step_ms` past that of the run's first record, and
    /// at the first record of a confirmed jump. Each run is due at the pace time of its
    /// last record.
    fn runs(&mut self, ts_ms: &[i64], step_ms: i64) -> Vec<Run> {
        if let Some(jump) = &mut self.jump {
            jump.first_index = 0;
        }
        let mut runs = Vec::new();
        let mut run_start = 0;
        let mut run_first_ms: Option<i64> = None;
        for (index, &ts) in ts_ms.iter().enumerate() {
            let before_ms = self.now_ms;
            let cut = match self.advance(ts, index) {
                Step::JumpConfirmed { first_index } => Some(first_index),
                Step::Moved => run_first_ms
                    .filter(|first_ms| self.now_ms.saturating_sub(*first_ms) > step_ms)
                    .map(|_| index),
            };
            if let Some(cut) = cut {
                let cut = cut.max(run_start);
                if cut > run_start {
                    runs.push(Run {
                        len: cut - run_start,
                        pace_ms: before_ms,
                    });
                    run_start = cut;
                }
                run_first_ms = Some(self.now_ms);
            } else if run_first_ms.is_none() {
                run_first_ms = Some(self.now_ms);
            }
        }
        if run_start < ts_ms.len() {
            runs.push(Run {
                len: ts_ms.len() - run_start,
                pace_ms: self.now_ms,
            });
        }
        runs
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
            match send_paced(&mut out, pacer.pace(probes), &shutdown).await {
                Ok(true) => {}
                Ok(false) => break Ended::Shutdown,
                Err(closed) => {
                    stop.store(true, Ordering::Relaxed);
                    drop(rx);
                    return Err(Box::new(closed));
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        // Closing the channel unblocks a reader waiting to hand over a batch.
        drop(rx);
        let result = producer.await;
        finish(&component, result, matches!(ended, Ended::Shutdown))
    }
}

/// Sends each run when it is due. False when shutdown came first.
async fn send_paced(
    out: &mut Output,
    runs: Vec<(Vec<Probe>, Option<Instant>)>,
    shutdown: &CancellationToken,
) -> Result<bool, DownstreamClosed> {
    for (probes, due) in runs {
        if let Some(due) = due.filter(|due| *due > Instant::now()) {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(false),
            sent = out.send(Batch::from(probes)) => sent?,
        }
    }
    Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0_MS: i64 = 1_700_000_000_000;

    /// (len, pace offset from `T0_MS`) of each run.
    fn cut(clock: &mut PaceClock, ts_ms: &[i64], step_ms: i64) -> Vec<(usize, i64)> {
        clock
            .runs(ts_ms, step_ms)
            .iter()
            .map(|r| (r.len, r.pace_ms - T0_MS))
            .collect()
    }

    #[test]
    fn time_zero_is_the_earliest_record_with_company() {
        let mut batch: Vec<i64> = (0..20).map(|i| T0_MS + 500 + i * 1000).collect();
        batch.push(T0_MS);
        assert_eq!(time_zero_ms(&batch), T0_MS, "the earliest, wherever it is");
        // One probe stamped 1970 in the first batch does not become time zero.
        batch.insert(3, 86_400_000);
        assert_eq!(time_zero_ms(&batch), T0_MS);
        // Too sparse for company anywhere: the earliest record.
        let sparse = [T0_MS + 7_200_000, T0_MS, T0_MS + 3 * 7_200_000];
        assert_eq!(time_zero_ms(&sparse), T0_MS);
        assert_eq!(time_zero_ms(&[T0_MS]), T0_MS);
    }

    #[test]
    fn a_batch_is_cut_into_runs_of_at_most_one_step() {
        let mut clock = PaceClock::new(T0_MS);
        // 0, 1, …, 9 s; runs span at most 3 s of pace time and are due at their last record.
        let ts: Vec<i64> = (0..10).map(|i| T0_MS + i * 1000).collect();
        assert_eq!(
            cut(&mut clock, &ts, 3000),
            vec![(4, 3000), (4, 7000), (2, 9000)]
        );
        // The next batch starts a new run: nothing of it is due before its own time.
        assert_eq!(cut(&mut clock, &[T0_MS + 9500], 3000), vec![(1, 9500)]);
    }

    #[test]
    fn an_out_of_order_record_never_moves_the_pace_back() {
        let mut clock = PaceClock::new(T0_MS);
        let ts = [T0_MS, T0_MS + 5000, T0_MS + 1000, T0_MS + 6000];
        assert_eq!(cut(&mut clock, &ts, 1000), vec![(1, 0), (3, 6000)]);
    }

    #[test]
    fn a_lone_probe_far_ahead_does_not_stall_the_replay() {
        let mut clock = PaceClock::new(T0_MS);
        let year_2099_ms = 4_070_908_800_000;
        let ts = [
            T0_MS,
            T0_MS + 1000,
            year_2099_ms,
            T0_MS + 2000,
            T0_MS + 3000,
        ];
        // It leaves with its neighbours, at the pace they set.
        assert_eq!(cut(&mut clock, &ts, 10_000), vec![(5, 3000)]);
        assert_eq!(clock.now_ms, T0_MS + 3000);
    }

    #[test]
    fn a_real_gap_in_event_time_is_followed_once_confirmed() {
        let mut clock = PaceClock::new(T0_MS);
        let gap_ms = 2 * PACE_JUMP_MS;
        let mut ts = vec![T0_MS, T0_MS + 1000];
        ts.extend((0..10).map(|i| T0_MS + gap_ms + i * 1000));
        // The records after the gap leave together at the pace of the one that confirms it
        // (the eighth), then as usual.
        assert_eq!(
            cut(&mut clock, &ts, 10_000),
            vec![(2, 1000), (10, gap_ms + 9000)]
        );
        // Split across batches, the records of the jump before the cut already left.
        let mut clock = PaceClock::new(T0_MS);
        assert_eq!(cut(&mut clock, &ts[..5], 10_000), vec![(5, 1000)]);
        assert_eq!(cut(&mut clock, &ts[5..], 10_000), vec![(7, gap_ms + 9000)]);
    }

    #[test]
    fn unpaced_batches_go_whole_and_at_once() {
        let probes: Vec<Probe> = (0..5)
            .map(|i| Probe::new("v", T0_MS + i * 60_000, 45.0, 5.0))
            .collect();
        let runs = Pacer::new(ReplayRate::Max).pace(probes.clone());
        assert_eq!(runs, vec![(probes, None)]);
    }
}
