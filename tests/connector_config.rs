//! Parquet connector configs: TOML forms, defaults, unknown keys, and pure validation that
//! reports every problem at once.

use pipeline::config::Problems;
use pipeline::connector::parquet::{
    Compression, ParquetSinkConfig, ParquetSourceConfig, ReplayRate, TimestampUnit,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn source_config_from_toml_with_mapping_and_rate() -> TestResult {
    let c: ParquetSourceConfig = toml::from_str(
        r#"
        paths = ["data/*.parquet"]
        timestamp_unit = "s"
        rate = 10
        start_ms = 5
        [columns]
        vehicle_id = "unit"
        speed_mps = "speed"
        "#,
    )?;
    assert_eq!(c.rate, ReplayRate::Factor(10.0));
    assert_eq!(c.timestamp_unit, TimestampUnit::S);
    assert_eq!(c.columns.vehicle_id, "unit");
    assert_eq!(c.columns.timestamp, "ts_ms");
    assert_eq!(c.columns.speed_mps.as_deref(), Some("speed"));
    assert_eq!(c.batch_size, 8192);
    let max: ParquetSourceConfig = toml::from_str("paths = [\"a\"]\nrate = \"max\"")?;
    assert_eq!(max.rate, ReplayRate::Max);
    assert!(toml::from_str::<ParquetSourceConfig>("paths = [\"a\"]\nrate = \"fast\"").is_err());
    Ok(())
}

#[test]
fn unknown_keys_are_errors() {
    assert!(toml::from_str::<ParquetSourceConfig>("paths = [\"a\"]\npath = \"b\"").is_err());
    assert!(
        toml::from_str::<ParquetSourceConfig>("paths = [\"a\"]\n[columns]\nlatitude = \"x\"")
            .is_err()
    );
    assert!(toml::from_str::<ParquetSinkConfig>("path = \"a\"\nrolling = true").is_err());
}

#[test]
fn source_validation_reports_every_problem_at_once() {
    let mut c = ParquetSourceConfig::new(["[unclosed"]);
    c.start_ms = Some(10);
    c.end_ms = Some(10);
    c.rate = ReplayRate::Factor(0.0);
    c.batch_size = 0;
    c.decode_threads = Some(0);
    c.columns.lon = "lat".into();
    let mut problems = Problems::new();
    c.validate("sources.replay", &mut problems);
    let keys: Vec<String> = problems.into_vec().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "sources.replay.paths[0]",
            "sources.replay.columns.lon",
            "sources.replay.end_ms",
            "sources.replay.rate",
            "sources.replay.decode_threads",
            "sources.replay.batch_size",
        ]
    );
}

#[test]
fn sink_config_defaults_and_validation() -> TestResult {
    let c: ParquetSinkConfig = toml::from_str("path = \"out/\"")?;
    assert_eq!(c.compression, Compression::Zstd);
    assert_eq!(c.row_group_rows, 65_536);
    assert!(!c.is_rolling());
    let mut bad = ParquetSinkConfig::new("x.parquet");
    bad.compression = Compression::Snappy;
    bad.compression_level = Some(3);
    bad.max_rows_per_file = Some(0);
    bad.roll_interval_ms = Some(10);
    let mut problems = Problems::new();
    bad.validate("sinks.out", &mut problems);
    let keys: Vec<String> = problems.into_vec().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "sinks.out.compression_level",
            "sinks.out.max_rows_per_file",
            "sinks.out.roll_interval_ms"
        ]
    );
    let timed: ParquetSinkConfig = toml::from_str("path = \"out/\"\nroll_interval_ms = 60000")?;
    assert!(timed.is_rolling(), "a time-based roll alone rolls");
    Ok(())
}

#[test]
fn build_rejects_an_invalid_config_without_touching_files() {
    let mut c = ParquetSourceConfig::new(["/nonexistent/*.parquet"]);
    c.batch_size = 0;
    let err = c
        .build("x")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("batch_size"), "{err}");
}
