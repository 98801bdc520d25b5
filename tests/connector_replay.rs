//! The Parquet source and sink on the async runtime: paced replay in virtual time,
//! backpressure, shutdown, a closed downstream, and source → sink end to end.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use pipeline::connector::parquet::source::PACE_STEP_WALL_MS;
use pipeline::connector::parquet::{
    read_probes, write_records, ParquetSinkConfig, ParquetSourceConfig, ReplayRate,
};
use pipeline::record::{ArrowRecord, Probe, RecordKind};
use pipeline::runtime::{Batch, Input, Output, Records};
use pipeline::telemetry::metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// `n` probes `step_ms` apart from t = 0, in one file with row groups of 100.
fn write_probes(
    path: &Path,
    n: usize,
    step_ms: i64,
) -> Result<Vec<Probe>, Box<dyn std::error::Error + Send + Sync>> {
    let rows: Vec<Probe> = (0..n)
        .map(|i| Probe::new(format!("v{}", i % 3), i as i64 * step_ms, 45.0, 5.0))
        .collect();
    let batch = Probe::to_record_batch(&rows)?;
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(path)?, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(rows)
}

fn source_config(path: &Path, batch_size: usize) -> ParquetSourceConfig {
    let mut c = ParquetSourceConfig::new([path.display().to_string()]);
    c.batch_size = batch_size;
    c.progress = false;
    c
}

async fn collect(mut rx: mpsc::Receiver<Batch>) -> Vec<Probe> {
    let mut out = Vec::new();
    while let Some(batch) = rx.recv().await {
        if let Records::Probes(p) = batch.records {
            out.extend(p);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn paced_replay_takes_event_time_divided_by_the_factor() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.parquet");
    // 100 probes one second apart; batches of 10 end at 9 s, 19 s, …, 99 s of event time.
    let rows = write_probes(&path, 100, 1000)?;
    let mut config = source_config(&path, 10);
    config.rate = ReplayRate::Factor(10.0);
    let source = config.build("test_paced")?;
    let (tx, rx) = mpsc::channel(4);
    let consumer = tokio::spawn(collect(rx));
    let start = tokio::time::Instant::now();
    source
        .run(
            Output::to_channels(metrics().component("test_paced"), vec![tx]),
            CancellationToken::new(),
        )
        .await?;
    let elapsed = start.elapsed();
    // From the first record (0 s) to the last (99 s) is 99 s of event time: 9.9 s at 10×.
    assert!(
        elapsed >= Duration::from_millis(9_900) && elapsed < Duration::from_millis(9_910),
        "{elapsed:?}"
    );
    assert_eq!(
        consumer.await?,
        rows,
        "pacing never changes content or order"
    );
    Ok(())
}

/// Guards `rate = N` replaying event time at N× real time from the first record: the pacer
/// once started its clock at the newest record of the first 8 192-row batch, so at 10× the
/// first ~400 s of this file left at once and 600 s took 19 s instead of 60.
///
/// Deterministic under the paused clock: the source waits for decoded batches (decoded on
/// OS threads) without a timer, so virtual time only moves when it sleeps until a run is due.
#[tokio::test(start_paused = true)]
async fn replay_rate_paces_from_the_first_record() -> TestResult {
    const VEHICLES: i64 = 20;
    const EVENT_SPAN_S: i64 = 600;
    const T0_MS: i64 = 1_700_000_000_000;
    const RATE: f64 = 10.0;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("probes.parquet");
    // 20 vehicles at 1 Hz over 600 s of event time, time-ordered, in one row group.
    let rows: Vec<Probe> = (0..=EVENT_SPAN_S)
        .flat_map(|s| {
            (0..VEHICLES).map(move |v| Probe::new(format!("v{v}"), T0_MS + s * 1000, 45.0, 5.0))
        })
        .collect();
    let mut sink = ParquetSinkConfig::new(&path);
    sink.row_group_rows = rows.len();
    write_records(&sink, RecordKind::Probe, [Records::Probes(rows.clone())])?;
    let mut config = source_config(&path, 8192);
    config.rate = ReplayRate::Factor(RATE);
    let source = config.build("test_pace_from_first")?;

    let (tx, mut rx) = mpsc::channel::<Batch>(4);
    let start = tokio::time::Instant::now();
    // Per batch: virtual time of arrival, oldest and newest event time; and every probe.
    let consumer = tokio::spawn(async move {
        let mut arrivals: Vec<(Duration, i64, i64)> = Vec::new();
        let mut probes: Vec<Probe> = Vec::new();
        while let Some(batch) = rx.recv().await {
            if let Records::Probes(p) = batch.records {
                let oldest = p.iter().map(|p| p.ts_ms).min().unwrap_or(i64::MAX);
                let newest = p.iter().map(|p| p.ts_ms).max().unwrap_or(i64::MIN);
                arrivals.push((start.elapsed(), oldest, newest));
                probes.extend(p);
            }
        }
        (arrivals, probes)
    });
    source
        .run(
            Output::to_channels(metrics().component("test_pace_from_first"), vec![tx]),
            CancellationToken::new(),
        )
        .await?;
    let total = start.elapsed();
    let (arrivals, probes) = consumer.await?;
    assert_eq!(probes, rows, "pacing never changes content or order");

    // The stated tolerance: a record leaves no earlier than (its time − first time) / rate
    // and at most PACE_STEP_WALL_MS after; 1 ms more for the timer's millisecond ticks.
    let scaled = |ts_ms: i64| Duration::from_secs_f64((ts_ms - T0_MS) as f64 / RATE / 1000.0);
    let tick = Duration::from_millis(1);
    let step = Duration::from_millis(PACE_STEP_WALL_MS);
    for &(at, oldest, newest) in &arrivals {
        assert!(
            at + tick >= scaled(newest),
            "a batch up to {newest} left early, at {at:?}"
        );
        assert!(
            at <= scaled(oldest) + step + tick,
            "a batch from {oldest} left late, at {at:?}"
        );
        assert!(
            scaled(newest) - scaled(oldest) <= step,
            "a batch spans {oldest}..{newest}: one burst"
        );
    }
    let first = arrivals.first().ok_or("no batch")?;
    assert!(
        first.0 <= step + tick,
        "the first record waited {:?}",
        first.0
    );
    let expected = scaled(T0_MS + EVENT_SPAN_S * 1000);
    assert!(
        total >= expected && total <= expected + tick,
        "600 s of event time at 10× took {total:?}"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn unpaced_replay_takes_no_virtual_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.parquet");
    let rows = write_probes(&path, 300, 60_000)?;
    let source = source_config(&path, 50).build("test_unpaced")?;
    let (tx, rx) = mpsc::channel(1);
    let consumer = tokio::spawn(collect(rx));
    let start = tokio::time::Instant::now();
    source
        .run(
            Output::to_channels(metrics().component("test_unpaced"), vec![tx]),
            CancellationToken::new(),
        )
        .await?;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(consumer.await?, rows);
    Ok(())
}

#[tokio::test]
async fn a_full_downstream_blocks_the_source() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.parquet");
    let rows = write_probes(&path, 100, 1000)?;
    let component = "test_backpressure";
    let source = source_config(&path, 10).build(component)?;
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(source.run(
        Output::to_channels(metrics().component(component), vec![tx]),
        CancellationToken::new(),
    ));
    let sent = || metrics().component(component).sent_events.get();
    // One batch fills the channel and the next waits in `send`: 20 rows counted as sent.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sent() < 20 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sent(), 20);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent(), 20, "the source ran ahead of a full channel");
    assert!(!task.is_finished());
    // Reading lets everything through, in order.
    assert_eq!(collect(rx).await, rows);
    task.await?.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_a_paced_replay_promptly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.parquet");
    // A minute of event time between records at 1× (100 minutes in all): only shutdown can
    // end this quickly. The first record is time zero and leaves at once, alone: the next
    // is a minute later, far more than one pacing step.
    write_probes(&path, 100, 60_000)?;
    let mut config = source_config(&path, 10);
    config.rate = ReplayRate::Factor(1.0);
    let source = config.build("test_shutdown")?;
    let (tx, mut rx) = mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(source.run(
        Output::to_channels(metrics().component("test_shutdown"), vec![tx]),
        shutdown.clone(),
    ));
    let first = rx.recv().await.ok_or("no first batch")?;
    assert_eq!(first.len(), 1);
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task).await?;
    result?.map_err(|e| e.to_string())?;
    assert!(rx.recv().await.is_none(), "the output is dropped on return");
    Ok(())
}

#[tokio::test]
async fn a_closed_downstream_stops_the_source_with_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.parquet");
    write_probes(&path, 100, 1000)?;
    let source = source_config(&path, 10).build("test_closed")?;
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let result = source
        .run(
            Output::to_channels(metrics().component("test_closed"), vec![tx]),
            CancellationToken::new(),
        )
        .await;
    let err = result.err().ok_or("expected an error")?;
    assert!(err.to_string().contains("downstream"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_corrupt_file_fails_the_running_source() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.parquet");
    std::fs::write(&path, b"definitely not parquet")?;
    let source = source_config(&path, 10).build("test_corrupt")?;
    let (tx, _rx) = mpsc::channel(1);
    let result = source
        .run(
            Output::to_channels(metrics().component("test_corrupt"), vec![tx]),
            CancellationToken::new(),
        )
        .await;
    let err = result.err().ok_or("expected an error")?;
    assert!(err.to_string().contains("bad.parquet"), "{err}");
    Ok(())
}

#[tokio::test]
async fn source_to_sink_replays_every_probe_into_a_valid_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.parquet");
    let rows = write_probes(&input, 1234, 500)?;
    let out_dir = dir.path().join("out");
    let source = source_config(&input, 100).build("test_e2e_source")?;
    let sink = ParquetSinkConfig::new(format!("{}/", out_dir.display()))
        .build("test_e2e_sink", Some(RecordKind::Probe))?;
    let (tx, rx) = mpsc::channel(2);
    let (source_result, sink_result) = tokio::join!(
        source.run(
            Output::to_channels(metrics().component("test_e2e_source"), vec![tx]),
            CancellationToken::new(),
        ),
        sink.run(Input::new(metrics().component("test_e2e_sink"), rx)),
    );
    source_result.map_err(|e| e.to_string())?;
    sink_result.map_err(|e| e.to_string())?;
    let (read, _) = read_probes(&source_config(&out_dir.join("probes.parquet"), 8192))?;
    assert_eq!(read, rows);
    let text = metrics().render();
    assert!(text.contains(
        "pipeline_component_files_total{component=\"test_e2e_sink\",outcome=\"written\"} 1"
    ));
    Ok(())
}

#[tokio::test]
async fn a_sink_whose_input_ends_empty_writes_an_empty_file_of_its_kind() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sink = ParquetSinkConfig::new(format!("{}/", dir.path().display()))
        .build("test_empty_sink", Some(RecordKind::SegmentObservation))?;
    let (tx, rx) = mpsc::channel(1);
    drop(tx);
    sink.run(Input::new(metrics().component("test_empty_sink"), rx))
        .await
        .map_err(|e| e.to_string())?;
    let file = File::open(dir.path().join("observations.parquet"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?;
    assert_eq!(
        reader.schema().fields(),
        pipeline::record::SegmentObservation::schema().fields()
    );
    assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    Ok(())
}
