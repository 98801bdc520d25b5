//! Parquet replay reader and sink, synchronously: column mapping and timestamp types, errors
//! that name the file and column, time range and projection, bad files, determinism across
//! thread counts, rolling files, and every record kind round-tripping through Arrow. Then the
//! rolling sink on the runtime: acknowledgements as each file closes, the time-based roll,
//! and what a restart finds in the directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    ArrayRef, BinaryArray, Float32Array, Float64Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use pipeline::connector::parquet::expand_paths;
use pipeline::connector::parquet::{
    read_probes, write_records, ParquetError, ParquetSinkConfig, ParquetSourceConfig, ProbeReader,
    TimestampUnit,
};
use pipeline::record::{
    ArrowRecord, MatchedPoint, Probe, RecordKind, SegmentObservation, SegmentSpeed,
};
use pipeline::runtime::{AckTarget, AckToken, Acks, Batch, Input, Records};
use pipeline::telemetry::metrics;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn probes(n: usize, start_ms: i64) -> Vec<Probe> {
    (0..n)
        .map(|i| Probe {
            vehicle_id: format!("v{}", i % 7),
            ts_ms: start_ms + i as i64 * 1000,
            lat: 48.0 + i as f64 * 1e-5,
            lon: 2.0 - i as f64 * 1e-5,
            speed_mps: (i % 2 == 0).then_some(i as f32 * 0.5),
            heading_deg: (i % 3 == 0).then_some(90.0),
            accuracy_m: Some(4.5),
        })
        .collect()
}

/// The probes without their optional fields, as read with the default mapping.
fn bare(rows: Vec<Probe>) -> Vec<Probe> {
    rows.into_iter()
        .map(|p| Probe::new(p.vehicle_id, p.ts_ms, p.lat, p.lon))
        .collect()
}

/// Writes `batch` as a Parquet file with row groups of `row_group_rows`.
fn write_file(path: &Path, batch: &RecordBatch, row_group_rows: usize) -> TestResult {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(path)?, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

fn write_probe_file(path: &Path, rows: &[Probe], row_group_rows: usize) -> TestResult {
    write_file(path, &Probe::to_record_batch(rows)?, row_group_rows)
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, arrow_schema::ArrowError> {
    RecordBatch::try_from_iter(columns)
}

fn config(paths: &[&Path]) -> ParquetSourceConfig {
    let mut c = ParquetSourceConfig::new(paths.iter().map(|p| p.display().to_string()));
    c.progress = false;
    c
}

fn read_back<T: ArrowRecord>(path: &Path) -> Result<Vec<T>, Box<dyn std::error::Error>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        out.extend(T::from_record_batch(&batch?)?);
    }
    Ok(out)
}

#[test]
fn probes_round_trip_through_sink_and_source() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("probes.parquet");
    let rows = probes(1000, 1_700_000_000_000);
    let mut sink = ParquetSinkConfig::new(&path);
    sink.row_group_rows = 128;
    let written = write_records(
        &sink,
        RecordKind::Probe,
        rows.chunks(300).map(|c| Records::Probes(c.to_vec())),
    )?;
    assert_eq!(written, vec![path.clone()]);
    let mut source = config(&[&path]);
    source.columns.speed_mps = Some("speed_mps".into());
    source.columns.heading_deg = Some("heading_deg".into());
    source.columns.accuracy_m = Some("accuracy_m".into());
    let (read, summary) = read_probes(&source)?;
    assert_eq!(read, rows);
    assert_eq!(summary.row_groups_read, 8);
    assert_eq!(summary.files_read, 1);
    Ok(())
}

#[test]
fn optional_fields_are_absent_unless_mapped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.parquet");
    let rows = probes(10, 0);
    write_probe_file(&path, &rows, 100)?;
    let (read, _) = read_probes(&config(&[&path]))?;
    assert_eq!(read, bare(rows));
    Ok(())
}

#[test]
fn every_record_kind_writes_and_reads_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let probe = probes(3, 1000);
    let matched: Vec<MatchedPoint> = probe
        .iter()
        .enumerate()
        .map(|(i, p)| MatchedPoint {
            probe: p.clone(),
            segment_id: 10 + i as u64,
            offset_m: 1.5,
            snapped_lat: p.lat + 1e-6,
            snapped_lon: p.lon,
            distance_m: 2.0,
        })
        .collect();
    let observations = vec![SegmentObservation {
        observation_id: 7,
        segment_id: 42,
        vehicle_id: "v1".into(),
        enter_ts_ms: 1000,
        exit_ts_ms: 5000,
        traversed_m: 80.0,
        speed_mps: 20.0,
        next_segment_id: None,
        flags: 1,
    }];
    let speeds = vec![SegmentSpeed {
        segment_id: 42,
        window_start_ms: 0,
        window_end_ms: 60_000,
        estimator: "space_mean".into(),
        samples: 5,
        vehicles: 3,
        speed_mps: 13.5,
        p50_speed_mps: Some(13.0),
        p15_speed_mps: None,
        p85_speed_mps: None,
        travel_time_s: 6.1,
        graph_version: 9,
        revision: 0,
    }];
    // A directory target names each file after its record kind.
    let sink = ParquetSinkConfig::new(format!("{}/", dir.path().display()));
    let f = write_records(&sink, RecordKind::Probe, [Records::Probes(probe.clone())])?;
    assert_eq!(f, vec![dir.path().join("probes.parquet")]);
    assert_eq!(read_back::<Probe>(&f[0])?, probe);
    let f = write_records(
        &sink,
        RecordKind::MatchedPoint,
        [Records::MatchedPoints(matched.clone())],
    )?;
    assert_eq!(f, vec![dir.path().join("matched_points.parquet")]);
    assert_eq!(read_back::<MatchedPoint>(&f[0])?, matched);
    let f = write_records(
        &sink,
        RecordKind::SegmentObservation,
        [Records::Observations(observations.clone())],
    )?;
    assert_eq!(read_back::<SegmentObservation>(&f[0])?, observations);
    let f = write_records(
        &sink,
        RecordKind::SegmentSpeed,
        [Records::Speeds(speeds.clone())],
    )?;
    assert_eq!(f, vec![dir.path().join("speeds.parquet")]);
    assert_eq!(read_back::<SegmentSpeed>(&f[0])?, speeds);
    Ok(())
}

#[test]
fn column_mapping_with_seconds_float32_and_integer_vehicle_ids() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("fleet.parquet");
    let b = batch(vec![
        ("unit", Arc::new(Int64Array::from(vec![17, 42])) as ArrayRef),
        (
            "time_s",
            Arc::new(Int64Array::from(vec![1_700_000_000, 1_700_000_005])),
        ),
        (
            "latitude",
            Arc::new(Float32Array::from(vec![48.5f32, 48.25])),
        ),
        (
            "longitude",
            Arc::new(Float32Array::from(vec![2.5f32, 2.75])),
        ),
        ("kmh", Arc::new(Float64Array::from(vec![Some(10.0), None]))),
    ])?;
    write_file(&path, &b, 100)?;
    let mut c = config(&[&path]);
    c.columns.vehicle_id = "unit".into();
    c.columns.timestamp = "time_s".into();
    c.columns.lat = "latitude".into();
    c.columns.lon = "longitude".into();
    c.columns.speed_mps = Some("kmh".into());
    c.timestamp_unit = TimestampUnit::S;
    let (read, _) = read_probes(&c)?;
    let mut first = Probe::new("17", 1_700_000_000_000, 48.5, 2.5);
    first.speed_mps = Some(10.0);
    assert_eq!(
        read,
        vec![first, Probe::new("42", 1_700_000_005_000, 48.25, 2.75)]
    );
    Ok(())
}

#[test]
fn float_seconds_round_to_the_nearest_millisecond() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("f.parquet");
    let b = batch(vec![
        (
            "vehicle_id",
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
        ),
        ("t", Arc::new(Float64Array::from(vec![1_700_000_000.123_6]))),
        ("lat", Arc::new(Float64Array::from(vec![1.0]))),
        ("lon", Arc::new(Float64Array::from(vec![2.0]))),
    ])?;
    write_file(&path, &b, 100)?;
    let mut c = config(&[&path]);
    c.columns.timestamp = "t".into();
    c.timestamp_unit = TimestampUnit::S;
    let (read, _) = read_probes(&c)?;
    assert_eq!(read[0].ts_ms, 1_700_000_000_124);
    Ok(())
}

#[test]
fn arrow_microsecond_timestamp_with_time_zone_and_large_utf8_ids() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ts.parquet");
    let ts = TimestampMicrosecondArray::from(vec![1_700_000_000_123_456, 1_700_000_001_000_999])
        .with_timezone("+02:00");
    let b = batch(vec![
        (
            "vid",
            Arc::new(LargeStringArray::from(vec!["car-1", "car-2"])) as ArrayRef,
        ),
        ("event_time", Arc::new(ts)),
        ("lat", Arc::new(Float64Array::from(vec![10.0, 11.0]))),
        ("lon", Arc::new(Float64Array::from(vec![20.0, 21.0]))),
    ])?;
    write_file(&path, &b, 100)?;
    let mut c = config(&[&path]);
    c.columns.vehicle_id = "vid".into();
    c.columns.timestamp = "event_time".into();
    c.timestamp_unit = TimestampUnit::Arrow;
    let (read, _) = read_probes(&c)?;
    assert_eq!(
        read,
        vec![
            Probe::new("car-1", 1_700_000_000_123, 10.0, 20.0),
            Probe::new("car-2", 1_700_000_001_000, 11.0, 21.0),
        ]
    );
    Ok(())
}

#[test]
fn missing_mapped_column_names_file_and_column() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("probes.parquet");
    write_probe_file(&path, &probes(5, 0), 100)?;
    let mut c = config(&[&path]);
    c.columns.timestamp = "time".into();
    let err = read_probes(&c).err().ok_or("expected an error")?;
    let text = err.to_string();
    assert!(matches!(err, ParquetError::MissingColumn { .. }), "{text}");
    assert!(
        text.contains("probes.parquet") && text.contains("\"time\""),
        "{text}"
    );
    Ok(())
}

#[test]
fn wrong_column_type_names_file_and_column() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("probes.parquet");
    let b = batch(vec![
        (
            "vehicle_id",
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
        ),
        ("ts_ms", Arc::new(Int64Array::from(vec![1]))),
        ("lat", Arc::new(StringArray::from(vec!["48.1"]))),
        ("lon", Arc::new(Float64Array::from(vec![2.0]))),
    ])?;
    write_file(&path, &b, 100)?;
    let err = read_probes(&config(&[&path]))
        .err()
        .ok_or("expected an error")?;
    let text = err.to_string();
    assert!(
        text.contains("probes.parquet: column \"lat\" has type Utf8, expected a float"),
        "{text}"
    );
    // The Arrow unit wants a timestamp column, not an integer.
    let mut c = config(&[&path]);
    c.timestamp_unit = TimestampUnit::Arrow;
    c.columns.lat = "lon".into();
    c.columns.lon = "ts_ms".into();
    let text = read_probes(&c)
        .err()
        .ok_or("expected an error")?
        .to_string();
    assert!(text.contains("column \"ts_ms\" has type Int64"), "{text}");
    Ok(())
}

#[test]
fn time_range_is_half_open_and_prunes_row_groups_by_statistics() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.parquet");
    // 1000 probes one second apart, in row groups of 100 (100 s each).
    write_probe_file(&path, &probes(1000, 0), 100)?;
    let mut c = config(&[&path]);
    c.start_ms = Some(250_000);
    c.end_ms = Some(480_000);
    let (read, summary) = read_probes(&c)?;
    assert_eq!(read.len(), 230);
    assert_eq!(read.first().map(|p| p.ts_ms), Some(250_000));
    assert_eq!(read.last().map(|p| p.ts_ms), Some(479_000));
    // Row groups 2, 3 and 4 overlap the range; the 7 others are skipped unread.
    assert_eq!(summary.row_groups_pruned, 7);
    assert_eq!(summary.row_groups_read, 3);
    assert_eq!(summary.rows_outside_range, 70);
    Ok(())
}

#[test]
fn projection_never_reads_unmapped_columns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wide.parquet");
    let blob: Vec<&[u8]> = vec![&[0xAB; 4096]; 50];
    let b = batch(vec![
        (
            "vehicle_id",
            Arc::new(StringArray::from(vec!["a"; 50])) as ArrayRef,
        ),
        ("ts_ms", Arc::new(Int64Array::from_iter_values(0..50))),
        ("lat", Arc::new(Float64Array::from(vec![1.0; 50]))),
        ("lon", Arc::new(Float64Array::from(vec![2.0; 50]))),
        ("payload", Arc::new(BinaryArray::from(blob))),
    ])?;
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .build();
    let mut writer = ArrowWriter::try_new(File::create(&path)?, b.schema(), Some(props))?;
    writer.write(&b)?;
    let meta = writer.close()?;
    // Overwrite the unmapped column's data with garbage: a reader that touched it would fail.
    let (start, len) = meta.row_group(0).column(4).byte_range();
    let mut bytes = fs::read(&path)?;
    let (start, len) = (usize::try_from(start)?, usize::try_from(len)?);
    bytes[start..start + len].fill(0xFF);
    fs::write(&path, &bytes)?;
    let full = ParquetRecordBatchReaderBuilder::try_new(File::open(&path)?)?.build()?;
    assert!(
        full.into_iter().any(|b| b.is_err()),
        "the garbage must be detectable"
    );
    let (read, _) = read_probes(&config(&[&path]))?;
    assert_eq!(read.len(), 50);
    Ok(())
}

fn truncate(path: &Path) -> TestResult {
    let bytes = fs::read(path)?;
    fs::write(path, &bytes[..bytes.len() / 2])?;
    Ok(())
}

#[test]
fn truncated_file_alone_is_an_error_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cut.parquet");
    write_probe_file(&path, &probes(500, 0), 100)?;
    truncate(&path)?;
    let err = read_probes(&config(&[&path]))
        .err()
        .ok_or("expected an error")?;
    assert!(matches!(err, ParquetError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("cut.parquet"), "{err}");
    Ok(())
}

#[test]
fn glob_skips_a_truncated_file_and_replays_the_others() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (a, b, c) = (
        dir.path().join("a.parquet"),
        dir.path().join("b.parquet"),
        dir.path().join("c.parquet"),
    );
    write_probe_file(&a, &probes(10, 0), 100)?;
    write_probe_file(&b, &probes(10, 100_000), 100)?;
    write_probe_file(&c, &probes(10, 200_000), 100)?;
    truncate(&b)?;
    fs::write(dir.path().join("d.parquet"), b"not parquet at all")?;
    let pattern = format!("{}/*.parquet", dir.path().display());
    let mut cfg = ParquetSourceConfig::new([pattern]);
    cfg.progress = false;
    let files = expand_paths(&cfg.paths)?;
    let component = "test_glob_skip";
    let mut reader = ProbeReader::open(files, &cfg, metrics().component(component))?;
    let mut read = Vec::new();
    while let Some(batch) = reader.next_batch()? {
        read.extend(batch);
    }
    let mut expected = bare(probes(10, 0));
    expected.extend(bare(probes(10, 200_000)));
    assert_eq!(read, expected);
    let summary = reader.summary();
    assert_eq!(summary.files_read, 2);
    let skipped: Vec<&Path> = summary
        .files_skipped
        .iter()
        .map(|s| s.path.as_path())
        .collect();
    assert_eq!(
        skipped,
        vec![b.as_path(), dir.path().join("d.parquet").as_path()]
    );
    let text = metrics().render();
    assert!(
        text.contains(&format!(
            "pipeline_component_files_total{{component=\"{component}\",outcome=\"skipped\"}} 2"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "pipeline_component_files_total{{component=\"{component}\",outcome=\"read\"}} 2"
    )));
    Ok(())
}

#[test]
fn glob_where_every_file_is_bad_fails() -> TestResult {
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join("x.parquet"), b"junk")?;
    fs::write(dir.path().join("y.parquet"), b"PAR1 junk")?;
    let mut cfg = ParquetSourceConfig::new([format!("{}/*.parquet", dir.path().display())]);
    cfg.progress = false;
    let err = read_probes(&cfg).err().ok_or("expected an error")?;
    assert!(
        matches!(err, ParquetError::AllFilesFailed { count: 2, .. }),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_pattern_matching_nothing_is_an_error_naming_the_pattern() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pattern = format!("{}/*.parquet", dir.path().display());
    let err = read_probes(&ParquetSourceConfig::new([pattern.clone()]))
        .err()
        .ok_or("expected an error")?;
    assert!(err.to_string().contains(&pattern), "{err}");
    Ok(())
}

#[test]
fn globs_and_literal_paths_are_sorted_and_deduplicated() -> TestResult {
    let dir = tempfile::tempdir()?;
    for name in ["b.parquet", "a.parquet", "c.txt"] {
        fs::write(dir.path().join(name), b"x")?;
    }
    let literal = dir.path().join("b.parquet");
    let files = expand_paths(&[
        format!("{}/*.parquet", dir.path().display()),
        literal.display().to_string(),
    ])?;
    let got: Vec<(PathBuf, bool)> = files.into_iter().map(|f| (f.path, f.explicit)).collect();
    assert_eq!(
        got,
        vec![(dir.path().join("a.parquet"), false), (literal, true)]
    );
    Ok(())
}

#[test]
fn output_is_identical_with_one_or_four_decode_threads() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (i, name) in ["1.parquet", "2.parquet", "3.parquet"].iter().enumerate() {
        write_probe_file(
            &dir.path().join(name),
            &probes(2000 + i * 37, i as i64 * 1_000),
            97,
        )?;
    }
    let run = |threads: usize| -> Result<Vec<Vec<Probe>>, ParquetError> {
        let mut cfg = ParquetSourceConfig::new([format!("{}/*.parquet", dir.path().display())]);
        cfg.progress = false;
        cfg.decode_threads = Some(threads);
        cfg.batch_size = 500;
        cfg.start_ms = Some(5_000);
        let files = expand_paths(&cfg.paths)?;
        ProbeReader::open(files, &cfg, metrics().component("test_threads"))?.collect()
    };
    let one = run(1)?;
    let four = run(4)?;
    assert_eq!(one, four);
    assert!(one.len() > 10);
    assert!(one[..one.len() - 1].iter().all(|b| b.len() == 500));
    Ok(())
}

#[test]
fn rows_with_null_required_fields_are_dropped_and_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nulls.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("vehicle_id", DataType::Utf8, true),
        Field::new("ts_ms", DataType::Int64, true),
        Field::new("lat", DataType::Float64, true),
        Field::new("lon", DataType::Float64, true),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("c"),
                Some("d"),
            ])),
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)])),
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                Some(1.0),
                Some(1.0),
                None,
            ])),
            Arc::new(Float64Array::from(vec![Some(2.0); 4])),
        ],
    )?;
    write_file(&path, &b, 100)?;
    let cfg = config(&[&path]);
    let component = "test_nulls";
    let mut reader = ProbeReader::open(
        expand_paths(&cfg.paths)?,
        &cfg,
        metrics().component(component),
    )?;
    let read: Vec<Probe> = reader.by_ref().collect::<Result<Vec<_>, _>>()?.concat();
    assert_eq!(read, vec![Probe::new("a", 1, 1.0, 2.0)]);
    assert_eq!(reader.summary().rows_null_field, 3);
    let text = metrics().render();
    assert!(
        text.contains(&format!(
            "pipeline_component_dropped_events_total{{component=\"{component}\",reason=\"null_field\"}} 3"
        )),
        "{text}"
    );
    Ok(())
}

#[test]
fn rolling_by_rows_writes_numbered_files_that_sum_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sink = ParquetSinkConfig::new(dir.path().join("out.parquet"));
    sink.max_rows_per_file = Some(300);
    let rows = probes(1000, 0);
    let files = write_records(
        &sink,
        RecordKind::Probe,
        rows.chunks(128).map(|c| Records::Probes(c.to_vec())),
    )?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        names,
        [
            "out-00000.parquet",
            "out-00001.parquet",
            "out-00002.parquet",
            "out-00003.parquet"
        ]
    );
    let mut all = Vec::new();
    for f in &files {
        all.push(read_back::<Probe>(f)?);
    }
    let sizes: Vec<usize> = all.iter().map(Vec::len).collect();
    assert_eq!(sizes, [300, 300, 300, 100]);
    assert_eq!(all.concat(), rows);
    // No temporary file is left behind.
    assert!(fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));
    Ok(())
}

#[test]
fn rolling_by_bytes_splits_large_output() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sink = ParquetSinkConfig::new(dir.path().join("big.parquet"));
    sink.max_bytes_per_file = Some(20_000);
    sink.row_group_rows = 1000;
    let rows = probes(20_000, 0);
    let files = write_records(
        &sink,
        RecordKind::Probe,
        rows.chunks(1000).map(|c| Records::Probes(c.to_vec())),
    )?;
    assert!(files.len() > 1, "{files:?}");
    let mut all = Vec::new();
    for f in &files {
        all.extend(read_back::<Probe>(f)?);
    }
    assert_eq!(all, rows);
    Ok(())
}

#[test]
fn empty_input_still_writes_a_valid_file_with_the_schema() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sink = ParquetSinkConfig::new(dir.path().join("speeds.parquet"));
    let files = write_records(&sink, RecordKind::SegmentSpeed, [])?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&files[0])?)?;
    assert_eq!(reader.schema().fields(), SegmentSpeed::schema().fields());
    assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    Ok(())
}

#[test]
fn a_batch_of_another_kind_is_dropped_and_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sink = ParquetSinkConfig::new(dir.path().join("p.parquet"));
    let speeds = Records::Speeds(vec![]);
    let files = write_records(
        &sink,
        RecordKind::Probe,
        [
            Records::Probes(probes(2, 0)),
            Records::Observations(vec![SegmentObservation {
                observation_id: 1,
                segment_id: 1,
                vehicle_id: "x".into(),
                enter_ts_ms: 0,
                exit_ts_ms: 1,
                traversed_m: 1.0,
                speed_mps: 1.0,
                next_segment_id: Some(2),
                flags: 0,
            }]),
            speeds,
        ],
    )?;
    assert_eq!(read_back::<Probe>(&files[0])?, probes(2, 0));
    Ok(())
}

#[test]
fn unsigned_vehicle_ids_become_decimal_strings() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("u.parquet");
    let b = batch(vec![
        (
            "vehicle_id",
            Arc::new(UInt32Array::from(vec![7u32])) as ArrayRef,
        ),
        ("ts_ms", Arc::new(Int64Array::from(vec![5]))),
        ("lat", Arc::new(Float64Array::from(vec![1.0]))),
        ("lon", Arc::new(Float64Array::from(vec![2.0]))),
    ])?;
    write_file(&path, &b, 10)?;
    let (read, _) = read_probes(&config(&[&path]))?;
    assert_eq!(read, vec![Probe::new("7", 5, 1.0, 2.0)]);
    Ok(())
}

#[test]
fn dropping_a_writer_mid_file_still_leaves_a_valid_file() -> TestResult {
    use pipeline::connector::parquet::sink::SinkTarget;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("interrupted.parquet");
    let mut writer = pipeline::connector::parquet::RollingWriter::new(
        "test_drop",
        &SinkTarget::File(path.clone()),
        &ParquetSinkConfig::new(&path),
        RecordKind::Probe,
    )?;
    writer.write(&Records::Probes(probes(10, 0)))?;
    assert!(!path.exists(), "the file appears only once complete");
    drop(writer);
    assert_eq!(read_back::<Probe>(&path)?, probes(10, 0));
    Ok(())
}

#[test]
fn a_row_group_failing_to_decode_skips_the_rest_of_that_file_in_a_glob() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (bad, good) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write_probe_file(&good, &probes(10, 0), 100)?;
    // Three row groups of 100; garble the second one's vehicle ids.
    let b = Probe::to_record_batch(&probes(300, 0))?;
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(&bad)?, b.schema(), Some(props))?;
    writer.write(&b)?;
    let meta = writer.close()?;
    let (start, len) = meta.row_group(1).column(0).byte_range();
    let (start, len) = (usize::try_from(start)?, usize::try_from(len)?);
    let mut bytes = fs::read(&bad)?;
    bytes[start..start + len].fill(0xFF);
    fs::write(&bad, &bytes)?;

    let mut cfg = ParquetSourceConfig::new([format!("{}/*.parquet", dir.path().display())]);
    cfg.progress = false;
    cfg.decode_threads = Some(1);
    let (read, summary) = read_probes(&cfg)?;
    // Row group 0 of the bad file was emitted before the failure; then the good file.
    let mut expected = bare(probes(100, 0));
    expected.extend(bare(probes(10, 0)));
    assert_eq!(read, expected);
    assert_eq!(summary.files_read, 1);
    assert_eq!(summary.files_skipped.len(), 1);
    assert!(
        summary.files_skipped[0]
            .error
            .contains("a.parquet: row group 1"),
        "{:?}",
        summary.files_skipped
    );
    // Named alone, the same file is an error.
    let err = read_probes(&config(&[&bad]))
        .err()
        .ok_or("expected an error")?;
    assert!(
        matches!(err, ParquetError::Decode { row_group: 1, .. }),
        "{err}"
    );
    Ok(())
}

/// How long a test waits for something the sink does on its own thread; a bound against a
/// hang, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// The names of the complete (renamed) Parquet files in `dir`, sorted.
fn complete_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".parquet"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Reports each released token as (id, ok, complete files in `dir` at that moment), so a
/// test can tell which file had closed when a batch was acknowledged.
struct FileAckLog {
    dir: PathBuf,
    tx: tokio::sync::mpsc::UnboundedSender<(u64, bool, usize)>,
}

impl AckTarget for FileAckLog {
    fn release(&self, id: u64, ok: bool) {
        let _ = self.tx.send((id, ok, complete_files(&self.dir).len()));
    }
}

/// A rolling sink writing probes to `dir/out-NNNNN.parquet` on the runtime.
struct RunningSink {
    /// Feeds the sink; dropping it ends the input.
    tx: tokio::sync::mpsc::Sender<Batch>,
    /// The target of the tokens the test attaches.
    log: Arc<dyn AckTarget>,
    /// What the tokens reported.
    acks: tokio::sync::mpsc::UnboundedReceiver<(u64, bool, usize)>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

fn spawn_sink(
    dir: &Path,
    component: &str,
    configure: impl FnOnce(&mut ParquetSinkConfig),
) -> Result<RunningSink, Box<dyn std::error::Error>> {
    let mut config = ParquetSinkConfig::new(dir.join("out.parquet"));
    configure(&mut config);
    let sink = config.build(component, Some(RecordKind::Probe))?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let input = Input::new(metrics().component(component), rx).for_sink();
    let task = tokio::spawn(async move { sink.run(input).await.map_err(|e| e.to_string()) });
    let (ack_tx, acks) = tokio::sync::mpsc::unbounded_channel();
    let log: Arc<dyn AckTarget> = Arc::new(FileAckLog {
        dir: dir.to_path_buf(),
        tx: ack_tx,
    });
    Ok(RunningSink {
        tx,
        log,
        acks,
        task,
    })
}

fn tracked(rows: Vec<Probe>, id: u64, log: &Arc<dyn AckTarget>) -> Batch {
    Batch::tracked(
        Records::Probes(rows),
        0,
        Acks::one(AckToken::new(id, log.clone())),
    )
}

/// The next `n` acknowledgements, in the order they came.
async fn next_acks(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, bool, usize)>,
    n: usize,
) -> Result<Vec<(u64, bool, usize)>, Box<dyn std::error::Error>> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(PATIENCE, rx.recv()).await {
            Ok(Some(ack)) => got.push(ack),
            Ok(None) => return Err(format!("the sink went away after {got:?}").into()),
            Err(_) => {
                return Err(format!("no acknowledgement in {PATIENCE:?} after {got:?}").into())
            }
        }
    }
    Ok(got)
}

#[tokio::test]
async fn a_rolling_sink_acknowledges_each_batch_once_the_file_with_its_last_row_is_closed(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let RunningSink {
        tx,
        log,
        mut acks,
        task,
    } = spawn_sink(dir.path(), "test_ack_per_file", |c| {
        c.max_rows_per_file = Some(10);
    })?;
    // Batches of 4 rows against files of 10: batch 2 spans files 0 and 1, batch 4 ends
    // exactly where file 1 does, batch 5 starts file 2.
    let rows = probes(24, 0);
    for (id, chunk) in rows.chunks(4).enumerate().take(5) {
        tx.send(tracked(chunk.to_vec(), id as u64, &log)).await?;
    }
    // The input is still open: these come as files close, not at the end of the run.
    let mut during = next_acks(&mut acks, 5).await?;
    during.sort();
    assert_eq!(
        during,
        [
            (0, true, 1),
            (1, true, 1),
            (2, true, 2),
            (3, true, 2),
            (4, true, 2)
        ],
        "(batch, ok, files closed when it was acknowledged)"
    );
    tx.send(tracked(rows[20..].to_vec(), 5, &log)).await?;
    drop((tx, log));
    task.await??;
    assert_eq!(next_acks(&mut acks, 1).await?, [(5, true, 3)]);
    assert_eq!(
        complete_files(dir.path()),
        [
            "out-00000.parquet",
            "out-00001.parquet",
            "out-00002.parquet"
        ]
    );
    let mut all = Vec::new();
    for name in complete_files(dir.path()) {
        all.extend(read_back::<Probe>(&dir.path().join(name))?);
    }
    assert_eq!(all, rows);
    Ok(())
}

#[tokio::test]
async fn roll_interval_closes_and_acknowledges_a_file_on_a_quiet_stream() -> TestResult {
    let dir = tempfile::tempdir()?;
    let RunningSink {
        tx,
        log,
        mut acks,
        task,
    } = spawn_sink(dir.path(), "test_roll_interval", |c| {
        c.roll_interval_ms = Some(100);
    })?;
    let rows = probes(6, 0);
    // One batch, then nothing while the input stays open: only the clock can close the file.
    tx.send(tracked(rows[..3].to_vec(), 1, &log)).await?;
    assert_eq!(next_acks(&mut acks, 1).await?, [(1, true, 1)]);
    assert_eq!(
        read_back::<Probe>(&dir.path().join("out-00000.parquet"))?,
        rows[..3]
    );
    // The next row starts the next file, closed by the clock again.
    tx.send(tracked(rows[3..].to_vec(), 2, &log)).await?;
    assert_eq!(next_acks(&mut acks, 1).await?, [(2, true, 2)]);
    drop((tx, log));
    task.await??;
    // Quiet time with no file open, and the end of input, write no file without rows.
    assert_eq!(
        complete_files(dir.path()),
        ["out-00000.parquet", "out-00001.parquet"]
    );
    assert_eq!(
        read_back::<Probe>(&dir.path().join("out-00001.parquet"))?,
        rows[3..]
    );
    Ok(())
}

#[test]
fn a_restarted_rolling_sink_keeps_earlier_files_and_continues_the_numbering() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sink = ParquetSinkConfig::new(dir.path().join("out.parquet"));
    sink.max_rows_per_file = Some(10);
    let (first, second) = (probes(25, 0), probes(15, 100_000));
    write_records(&sink, RecordKind::Probe, [Records::Probes(first.clone())])?;
    let earlier: Vec<Vec<u8>> = complete_files(dir.path())
        .iter()
        .map(|n| fs::read(dir.path().join(n)))
        .collect::<Result<_, _>>()?;
    let files = write_records(&sink, RecordKind::Probe, [Records::Probes(second.clone())])?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, ["out-00003.parquet", "out-00004.parquet"]);
    // A run that gets no rows adds no empty file once the directory has files.
    assert!(write_records(&sink, RecordKind::Probe, [])?.is_empty());
    let all = complete_files(dir.path());
    assert_eq!(all.len(), 5, "{all:?}");
    for (name, bytes) in all.iter().zip(&earlier) {
        assert_eq!(&fs::read(dir.path().join(name))?, bytes, "{name} unchanged");
    }
    // A reader of the directory sees both runs, in write order.
    let (read, _) = read_probes(&config_glob(dir.path()))?;
    assert_eq!(read, bare([first, second].concat()));
    Ok(())
}

fn config_glob(dir: &Path) -> ParquetSourceConfig {
    let mut c = ParquetSourceConfig::new([format!("{}/*.parquet", dir.display())]);
    c.progress = false;
    c
}

#[test]
fn a_leftover_tmp_is_recovered_if_its_footer_is_valid_and_removed_otherwise() -> TestResult {
    use pipeline::connector::parquet::sink::SinkTarget;
    let dir = tempfile::tempdir()?;
    let component = "test_leftover_tmp";
    let path = dir.path().join("out.parquet");
    let mut sink = ParquetSinkConfig::new(&path);
    sink.max_rows_per_file = Some(10);
    write_records(&sink, RecordKind::Probe, [Records::Probes(probes(5, 0))])?;
    // Killed after the footer but before the rename, and killed mid-file.
    write_probe_file(
        &dir.path().join("out-00001.parquet.tmp"),
        &probes(3, 10_000),
        10,
    )?;
    fs::write(
        dir.path().join("out-00002.parquet.tmp"),
        b"PAR1 half a row group",
    )?;
    let mut writer = pipeline::connector::parquet::RollingWriter::new(
        component,
        &SinkTarget::File(path),
        &sink,
        RecordKind::Probe,
    )?;
    assert_eq!(
        complete_files(dir.path()),
        ["out-00000.parquet", "out-00001.parquet"],
        "the complete one renamed, the torn one gone"
    );
    assert_eq!(
        read_back::<Probe>(&dir.path().join("out-00001.parquet"))?,
        probes(3, 10_000)
    );
    writer.write(&Records::Probes(probes(2, 20_000)))?;
    let written = writer.finish()?;
    assert_eq!(written, [dir.path().join("out-00003.parquet")]);
    assert!(fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));
    let text = metrics().render();
    for outcome in ["recovered", "discarded"] {
        let series = format!(
            "pipeline_component_files_total{{component=\"{component}\",outcome=\"{outcome}\"}} 1"
        );
        assert!(text.contains(&series), "{series} in {text}");
    }
    Ok(())
}
