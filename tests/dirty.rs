//! The dirty-data suite: `pipeline generate --dirty` with every kind of fault, and with each
//! kind alone, replayed end to end. The binary must exit 0 (no panic), the accounting must
//! balance, and each kind whose fate is exact must show up, count for count, under its drop
//! reason. Also the stream decoders (JSON, protobuf) fed the same dirty rows as payloads,
//! and the Parquet reader's limits on files written here. Fixtures come from the project's
//! own OSM writer and generator; nothing is read from outside the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use pipeline::connector::dirty::{self, DirtyConfig, DirtyKind, OVERSIZED_BYTES};
use pipeline::connector::generator::{self, GeneratorSourceConfig};
use pipeline::connector::parquet::{read_probes, ParquetError, ParquetSourceConfig, TimestampUnit};
use pipeline::graph::error::GraphError;
use pipeline::graph::osm_writer::{synthetic_grid, OsmBuilder};
use pipeline::graph::{ImportConfig, RoadGraph};
use pipeline::record::{DecodeLimits, Encoding, Probe, RecordKind, WireRecord};
use pipeline::runtime::Records;

#[path = "common/replay_report.rs"]
mod replay_report;
use replay_report::{counts_in, Replayed};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SEED: u64 = 23;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.env("PIPELINE_LOG", "error");
    c
}

/// Runs a command that must succeed (exit 0: a panic would exit 101); returns its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small grid city (two-way streets, no dead ends, so no vehicle leaves the map and
/// comes back under a new id), written as a `.graph` by the library itself.
struct City {
    dir: tempfile::TempDir,
    graph: PathBuf,
}

impl City {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let graph = dir.path().join("city.graph");
        synthetic_grid(8, 8, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds")
            .write(&graph)
            .expect("graph written");
        Self { dir, graph }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `pipeline generate --dirty FRACTION [--dirty-kinds …]`; returns the injected counts.
    fn generate(&self, out: &Path, fraction: f64, kinds: &[DirtyKind]) -> BTreeMap<String, u64> {
        let mut cmd = bin();
        cmd.args(["generate", "--graph"])
            .arg(&self.graph)
            .args([
                "--vehicles",
                "12",
                "--duration-s",
                "240",
                "--interval-s",
                "1",
            ])
            .args([
                "--seed",
                &SEED.to_string(),
                "--dirty",
                &fraction.to_string(),
            ]);
        if !kinds.is_empty() {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            cmd.args(["--dirty-kinds", &names.join(",")]);
        }
        let stdout = run_ok(cmd.arg("--out").arg(out));
        let line = stdout
            .lines()
            .find(|l| l.starts_with("dirty: nan="))
            .unwrap_or_else(|| panic!("no per-kind counts in:\n{stdout}"));
        counts_in(line.trim_start_matches("dirty: "))
    }

    /// `pipeline replay`. With `seconds`, the timestamp is read from the seconds column (so
    /// `ms_as_s` rows reach the reader as milliseconds where seconds are expected).
    fn replay(&self, input: &Path, out_dir: &str, seconds: bool) -> String {
        let mut cmd = bin();
        cmd.args(["replay", "--graph"])
            .arg(&self.graph)
            .arg("--input")
            .arg(input)
            .arg("--out-dir")
            .arg(self.path(out_dir))
            .arg("--report");
        if seconds {
            let config = self.path("seconds.toml");
            std::fs::write(
                &config,
                "[sources.replay]\ntype = \"parquet\"\npaths = [\"unused\"]\n\
                 timestamp_unit = \"s\"\ncolumns.timestamp = \"ts_s\"\n",
            )
            .expect("config written");
            cmd.arg("--config").arg(config);
        }
        run_ok(&mut cmd)
    }
}

/// The drop reason each kind lands under exactly, when it does.
fn exact_reason(kind: DirtyKind) -> Option<&'static str> {
    match kind {
        DirtyKind::Nan => Some("invalid_coordinate"),
        DirtyKind::MsAsS => Some("bad_timestamp"),
        DirtyKind::Year1970 => Some("stale_timestamp"),
        DirtyKind::Year2099 => Some("future_timestamp"),
        DirtyKind::Duplicate => Some("duplicate"),
        // Exact on a map without dead ends: a delayed burst is always overtaken by later
        // probes of the same vehicle id.
        DirtyKind::OutOfOrder => Some("late"),
        DirtyKind::Oversized => Some("too_large"),
        DirtyKind::InvalidUtf8 => Some("invalid_utf8"),
        // A displaced probe is a teleport, unless it became an anchor (a vehicle's first
        // probe, or after `teleport_reanchor_after` in a row); then assign finds no road.
        DirtyKind::Swapped | DirtyKind::Teleport => None,
    }
}

fn check_run(kinds: &[DirtyKind], fraction: f64) {
    let city = City::new();
    let input = city.path("dirty.parquet");
    let injected = city.generate(&input, fraction, kinds);
    let enabled: Vec<DirtyKind> = if kinds.is_empty() {
        DirtyKind::ALL.to_vec()
    } else {
        kinds.to_vec()
    };
    let seconds = enabled.contains(&DirtyKind::MsAsS);
    let replayed = Replayed::parse(&city.replay(&input, "out", seconds));
    let injected_total: u64 = injected.values().sum();
    assert!(injected_total > 0, "nothing injected: {injected:?}");
    for kind in DirtyKind::ALL {
        let n = injected[kind.as_str()];
        assert_eq!(
            n > 0,
            enabled.contains(&kind),
            "{kind}: {n} injected with kinds {enabled:?}"
        );
    }
    // The file holds every generated probe plus one extra copy per duplicate.
    let generated = 12 * 240;
    assert_eq!(
        replayed.probes_in,
        generated + injected["duplicate"],
        "{injected:?}"
    );
    for kind in &enabled {
        let n = injected[kind.as_str()];
        match exact_reason(*kind) {
            Some(reason) => assert_eq!(
                replayed.dropped(reason),
                n,
                "{kind}: {n} injected, {reason} = {:?}",
                replayed.dropped
            ),
            None => {
                let displaced = injected["swapped"] + injected["teleport"];
                let caught = replayed.dropped("teleport") + replayed.unmatched("no_candidate");
                assert!(
                    caught >= displaced,
                    "{displaced} displaced probes, only {caught} dropped as teleport or \
                     unmatched: {:?} {:?}",
                    replayed.dropped,
                    replayed.unmatched
                );
            }
        }
    }
}

#[test]
fn every_kind_at_once_balances_and_lands_under_its_reason() {
    check_run(&[], 0.2);
}

#[test]
fn nan_alone_is_invalid_coordinate() {
    check_run(&[DirtyKind::Nan], 0.2);
}

#[test]
fn swapped_alone_is_teleport_or_unmatched() {
    check_run(&[DirtyKind::Swapped], 0.2);
}

#[test]
fn ms_as_s_alone_is_bad_timestamp() {
    check_run(&[DirtyKind::MsAsS], 0.2);
}

#[test]
fn year_1970_alone_is_stale() {
    check_run(&[DirtyKind::Year1970], 0.2);
}

#[test]
fn year_2099_alone_is_future() {
    check_run(&[DirtyKind::Year2099], 0.2);
}

#[test]
fn duplicate_alone_is_duplicate() {
    check_run(&[DirtyKind::Duplicate], 0.2);
}

#[test]
fn out_of_order_alone_is_late() {
    check_run(&[DirtyKind::OutOfOrder], 0.2);
}

#[test]
fn teleport_alone_is_teleport_or_unmatched() {
    check_run(&[DirtyKind::Teleport], 0.2);
}

#[test]
fn oversized_alone_is_too_large() {
    check_run(&[DirtyKind::Oversized], 0.2);
}

#[test]
fn invalid_utf8_alone_is_invalid_utf8() {
    check_run(&[DirtyKind::InvalidUtf8], 0.2);
}

/// Dirty rows of a small generated run, every kind on.
fn dirty_rows() -> Vec<dirty::DirtyRow> {
    let graph: Arc<RoadGraph> = Arc::new(
        synthetic_grid(5, 5, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds"),
    );
    let config = GeneratorSourceConfig {
        vehicles: 10,
        duration_s: 200.0,
        seed: SEED,
        ..GeneratorSourceConfig::default()
    };
    let (probes, _) = generator::generate(&graph, &config);
    let (rows, counts) = dirty::corrupt_all(
        probes,
        DirtyConfig {
            fraction: 0.3,
            kinds: DirtyKind::ALL.to_vec(),
            seed: SEED,
            interval_ms: 1000,
            end_ms: Some(config.start_ms + 200_000),
        },
    );
    assert!(counts.get(DirtyKind::Oversized) > 0 && counts.get(DirtyKind::InvalidUtf8) > 0);
    rows
}

#[test]
fn stream_decoders_drop_dirty_payloads_by_reason_and_keep_the_rest() {
    let rows = dirty_rows();
    let expected_too_large = rows
        .iter()
        .filter(|r| r.probe.vehicle_id.len() >= OVERSIZED_BYTES)
        .count() as u64;
    let invalid_utf8 = rows.iter().filter(|r| r.raw_vehicle_id.is_some()).count() as u64;
    // JSON has no NaN: serde writes null, which does not decode as a coordinate.
    let nan = |r: &dirty::DirtyRow| r.probe.lat.is_nan() || r.probe.lon.is_nan();
    let nans = rows.iter().filter(|r| nan(r)).count() as u64;
    assert!(nans > 0);
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let expected_undecodable = match encoding {
            Encoding::Json => invalid_utf8 + nans,
            Encoding::Protobuf => invalid_utf8,
        };
        let mut records = Records::empty(RecordKind::Probe);
        let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
        for row in &rows {
            let payload = row.encode(encoding);
            if let Err(e) = records.push_decoded(&payload, encoding) {
                *by_reason.entry(e.drop_reason()).or_default() += 1;
            }
        }
        let dropped: u64 = by_reason.values().sum();
        assert_eq!(records.len() as u64 + dropped, rows.len() as u64);
        assert_eq!(
            by_reason.get("too_large").copied().unwrap_or(0),
            expected_too_large,
            "{encoding:?}: {by_reason:?}"
        );
        assert_eq!(
            by_reason.get("undecodable").copied().unwrap_or(0),
            expected_undecodable,
            "{encoding:?}: {by_reason:?}"
        );
        // What decodes is what was sent: NaN, swapped, 1970 … are the clean stage's job.
        let Records::Probes(decoded) = records else {
            panic!("probes expected")
        };
        let sent: Vec<&Probe> = rows
            .iter()
            .filter(|r| r.raw_vehicle_id.is_none() && r.probe.vehicle_id.len() < OVERSIZED_BYTES)
            .filter(|r| encoding == Encoding::Protobuf || !nan(r))
            .map(|r| &r.probe)
            .collect();
        assert_eq!(decoded.len(), sent.len());
        for (got, want) in decoded.iter().zip(sent) {
            assert_eq!(got.vehicle_id, want.vehicle_id);
            assert_eq!(got.ts_ms, want.ts_ms);
            assert_eq!(got.lat.to_bits(), want.lat.to_bits(), "{encoding:?}");
        }
    }
}

#[test]
fn payload_over_max_record_bytes_is_too_large_before_it_is_parsed() {
    let limits = DecodeLimits {
        max_record_bytes: 100,
        max_vehicle_id_bytes: 8,
    };
    let probe = Probe::new("veh-1", 1_700_000_000_000, 60.17, 24.94);
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let ok = probe.encode(encoding);
        assert!(Probe::decode_limited(&ok, encoding, &limits).is_ok());
        // Not even valid: the size alone decides.
        let garbage = vec![b'{'; 101];
        let err = Probe::decode_limited(&garbage, encoding, &limits).expect_err("too large");
        assert_eq!(err.drop_reason(), "too_large", "{err}");
        let long_id = Probe::new("veh-123456789", 1, 60.0, 24.0).encode(encoding);
        let err = Probe::decode_limited(&long_id, encoding, &limits).expect_err("long id");
        assert_eq!(err.drop_reason(), "too_large", "{err}");
        let err = Probe::decode_limited(b"\xff\xfe", encoding, &limits).expect_err("bad");
        assert_eq!(err.drop_reason(), "undecodable", "{err}");
    }
}

fn write_batch(path: &Path, batch: &RecordBatch) -> TestResult {
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

fn reader_config(path: &Path) -> ParquetSourceConfig {
    let mut c = ParquetSourceConfig::new([path.display().to_string()]);
    c.progress = false;
    c.decode_threads = Some(1);
    c
}

#[test]
fn parquet_reader_takes_binary_vehicle_ids_and_drops_invalid_utf8_and_long_ones() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("binary.parquet");
    let long = vec![b'x'; 300];
    let ids: Vec<&[u8]> = vec![b"veh-1", b"veh-\xff", &long, b"veh-\xc3\xa9"];
    let batch = RecordBatch::try_from_iter([
        ("vehicle_id", Arc::new(BinaryArray::from(ids)) as ArrayRef),
        (
            "ts_ms",
            Arc::new(Int64Array::from(vec![1_700_000_000_000; 4])) as ArrayRef,
        ),
        (
            "lat",
            Arc::new(Float64Array::from(vec![60.17; 4])) as ArrayRef,
        ),
        (
            "lon",
            Arc::new(Float64Array::from(vec![24.94; 4])) as ArrayRef,
        ),
    ])?;
    write_batch(&path, &batch)?;
    let (probes, summary) = read_probes(&reader_config(&path))?;
    let ids: Vec<&str> = probes.iter().map(|p| p.vehicle_id.as_str()).collect();
    assert_eq!(ids, ["veh-1", "veh-é"]);
    assert_eq!((summary.rows_invalid_utf8, summary.rows_too_large), (1, 1));
    // The limit is configurable: with room for 300 bytes the long id is kept.
    let mut config = reader_config(&path);
    config.max_vehicle_id_bytes = 300;
    let (probes, summary) = read_probes(&config)?;
    assert_eq!((probes.len(), summary.rows_too_large), (3, 0));
    Ok(())
}

#[test]
fn milliseconds_in_a_seconds_column_are_bad_timestamps_not_year_55000() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("seconds.parquet");
    let batch = RecordBatch::try_from_iter([
        (
            "vehicle_id",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
        ),
        (
            "ts_s",
            Arc::new(Float64Array::from(vec![
                1_700_000_000.5,
                1_700_000_000_500.0,
                -1.0,
            ])) as ArrayRef,
        ),
        (
            "lat",
            Arc::new(Float64Array::from(vec![60.17; 3])) as ArrayRef,
        ),
        (
            "lon",
            Arc::new(Float64Array::from(vec![24.94; 3])) as ArrayRef,
        ),
    ])?;
    write_batch(&path, &batch)?;
    let mut config = reader_config(&path);
    config.timestamp_unit = TimestampUnit::S;
    config.columns.timestamp = "ts_s".to_string();
    let (probes, summary) = read_probes(&config)?;
    let ts: Vec<i64> = probes.iter().map(|p| p.ts_ms).collect();
    assert_eq!(ts, [1_700_000_000_500, -1000]);
    assert_eq!(summary.rows_bad_timestamp, 1);
    Ok(())
}

#[test]
fn row_group_over_max_row_group_bytes_refuses_the_file_before_decoding() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("big.parquet");
    let n = 10_000;
    let batch = RecordBatch::try_from_iter([
        (
            "vehicle_id",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("veh-{i}")),
            )) as ArrayRef,
        ),
        (
            "ts_ms",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        (
            "lat",
            Arc::new(Float64Array::from(vec![60.17; n])) as ArrayRef,
        ),
        (
            "lon",
            Arc::new(Float64Array::from(vec![24.94; n])) as ArrayRef,
        ),
    ])?;
    write_batch(&path, &batch)?;
    let mut config = reader_config(&path);
    config.max_row_group_bytes = 4096;
    match read_probes(&config) {
        Err(ParquetError::TooLarge {
            row_group, limit, ..
        }) => assert_eq!((row_group, limit), (0, 4096)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Under the default limit the same file reads whole.
    let (probes, _) = read_probes(&reader_config(&path))?;
    assert_eq!(probes.len(), n);
    Ok(())
}

#[test]
fn osm_ways_over_the_size_limits_are_skipped_and_counted_in_pbf_and_xml() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut osm = OsmBuilder::new();
    osm.node(1, 60.17, 24.94).node(2, 60.171, 24.94);
    osm.way(10, &[1, 2], &[("highway", "residential")]);
    let refs: Vec<i64> = (0..70_000).map(|i| 1 + i % 2).collect();
    osm.way(11, &refs, &[("highway", "residential")]);
    let long_name = "x".repeat(5_000);
    osm.way(
        12,
        &[2, 1],
        &[("highway", "residential"), ("name", long_name.as_str())],
    );
    for name in ["limits.osm.pbf", "limits.osm"] {
        let path = dir.path().join(name);
        if name.ends_with(".pbf") {
            osm.write_pbf(&path)?;
        } else {
            osm.write_xml(&path)?;
        }
        let graph = RoadGraph::from_osm(&path, &ImportConfig::default())?;
        // Way 10 alone: one two-way piece, two directed segments.
        assert_eq!(graph.len(), 2, "{name}");
        let malformed = graph.import_stats().map(|s| s.malformed_elements);
        assert_eq!(malformed, Some(2), "{name}");
    }
    Ok(())
}

#[test]
fn osm_xml_element_of_two_mib_is_refused_not_buffered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("huge.osm");
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<osm version=\"0.6\">\n");
    xml.push_str("<node id=\"1\" lat=\"60.17\" lon=\"24.94\" user=\"");
    xml.push_str(&"x".repeat(2 << 20));
    xml.push_str("\"/>\n</osm>\n");
    std::fs::write(&path, xml)?;
    match RoadGraph::from_osm(&path, &ImportConfig::default()) {
        Err(GraphError::Xml { reason, .. }) => {
            assert!(reason.contains("spans more than"), "{reason}")
        }
        other => panic!("expected an XML error, got {:?}", other.map(|g| g.len())),
    }
    Ok(())
}

#[test]
fn graph_file_whose_counts_exceed_its_length_is_refused_before_allocating() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("city.graph");
    synthetic_grid(3, 3, 100.0, 60.17, 24.94)
        .build_graph(&ImportConfig::default())?
        .write(&path)?;
    let good = std::fs::read(&path)?;
    // Table of contents: segment_count at byte 32, point_count at 40, successor_count at 48.
    for (at, count) in [(32, u64::MAX / 48), (40, 1u64 << 40), (48, u64::MAX)] {
        let mut bytes = good.clone();
        bytes[at..at + 8].copy_from_slice(&count.to_le_bytes());
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        let tampered = dir.path().join(format!("tampered-{at}.graph"));
        std::fs::write(&tampered, &bytes)?;
        match RoadGraph::load(&tampered) {
            Err(GraphError::Corrupt { reason, .. }) => {
                assert!(reason.contains("out of bounds"), "count at {at}: {reason}")
            }
            other => panic!(
                "count at {at}: expected Corrupt, got {:?}",
                other.map(|g| g.len())
            ),
        }
    }
    Ok(())
}

#[test]
fn generator_source_with_dirt_runs_and_clean_drops_each_kind_by_its_reason() -> TestResult {
    let city = City::new();
    let config = city.path("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "edges = [\"fleet -> clean -> out\"]\n[graph]\npath = \"{}\"\n\
             [sources.fleet]\ntype = \"generator\"\nvehicles = 12\nduration_s = 240.0\n\
             seed = {SEED}\nbatch_size = 50\ndirty = 0.2\n\
             [stages.clean]\ntype = \"clean\"\n\
             [sinks.out]\ntype = \"parquet\"\npath = \"{}\"\n",
            city.graph.display(),
            city.path("clean.parquet").display()
        ),
    )?;
    let stdout = run_ok(bin().arg("run").arg("--config").arg(&config));
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{stdout}"))
            .to_string()
    };
    let sent = counts_in(&line("source fleet: ").replace(": ", ":sent="))["fleet:sent"];
    let clean = line("stage clean: ");
    let (flow, drops) = clean.split_once(", dropped ").unwrap_or((&clean, ""));
    let flow = counts_in(&flow.replace("in ", "in=").replace("out ", "out="));
    let dropped = counts_in(drops);
    assert_eq!(flow["in"], sent, "{clean}");
    assert_eq!(
        flow["in"],
        flow["out"] + dropped.values().sum::<u64>(),
        "{clean}"
    );

    // The source corrupts the fleet's stream exactly as `corrupt_all` does the whole run.
    let graph = Arc::new(RoadGraph::load(&city.graph)?);
    let cfg = GeneratorSourceConfig {
        vehicles: 12,
        duration_s: 240.0,
        seed: SEED,
        dirty: 0.2,
        ..GeneratorSourceConfig::default()
    };
    let dirt = cfg.dirty_config().ok_or("dirt configured")?;
    let (rows, injected) = dirty::corrupt_all(generator::generate(&graph, &cfg).0, dirt);
    assert_eq!(rows.len() as u64, sent);
    for kind in DirtyKind::ALL.into_iter().filter(|k| k.in_process()) {
        assert!(injected.get(kind) > 0, "{kind} not injected: {injected}");
        if let Some(reason) = exact_reason(kind) {
            let got = dropped.get(reason).copied().unwrap_or(0);
            assert_eq!(got, injected.get(kind), "{kind} → {reason}: {clean}");
        }
    }
    Ok(())
}

#[test]
fn generator_source_refuses_kinds_that_only_exist_in_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "edges = [\"fleet -> clean -> out\"]\n[graph]\npath = \"city.graph\"\n\
         [sources.fleet]\ntype = \"generator\"\ndirty = 0.1\n\
         dirty_kinds = [\"nan\", \"invalid_utf8\", \"oversized\"]\n\
         [stages.clean]\ntype = \"clean\"\n\
         [sinks.out]\ntype = \"ndjson\"\npath = \"out.ndjson\"\n",
    )?;
    let out = bin()
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["dirty_kinds[1]", "dirty_kinds[2]"] {
        assert!(stderr.contains(key), "{key} not reported: {stderr}");
    }
    assert!(!stderr.contains("dirty_kinds[0]"), "{stderr}");
    Ok(())
}

#[test]
fn size_limits_out_of_range_are_config_errors_at_validation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("limits.toml");
    std::fs::write(
        &config,
        "edges = [\"in -> clean -> out\"]\n\
         [sources.in]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopics = [\"probes\"]\n\
         group_id = \"g\"\nrecord = \"probe\"\nmax_record_bytes = 1000000000000\n\
         max_vehicle_id_bytes = 0\n\
         [stages.clean]\ntype = \"clean\"\n\
         [sinks.out]\ntype = \"ndjson\"\npath = \"out.ndjson\"\n",
    )?;
    let out = bin()
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["in.max_record_bytes", "in.max_vehicle_id_bytes"] {
        assert!(stderr.contains(key), "{key} not reported: {stderr}");
    }
    Ok(())
}

#[test]
fn ndjson_output_carries_dirty_payloads_that_decode_or_drop_by_reason() -> TestResult {
    let city = City::new();
    let out = city.path("dirty.ndjson");
    let stdout = run_ok(
        bin()
            .args(["generate", "--graph"])
            .arg(&city.graph)
            .args(["--vehicles", "10", "--duration-s", "120", "--seed", "5"])
            .args(["--dirty", "0.2", "--format", "ndjson", "--out"])
            .arg(&out),
    );
    let injected = counts_in(
        stdout
            .lines()
            .find(|l| l.starts_with("dirty: nan="))
            .ok_or("no counts")?,
    );
    assert_eq!(injected["ms_as_s"], 0, "JSON has no seconds column");
    let bytes = std::fs::read(&out)?;
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len() as u64, 10 * 120 + injected["duplicate"]);
    let mut records = Records::empty(RecordKind::Probe);
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for line in &lines {
        if let Err(e) = records.push_decoded(line, Encoding::Json) {
            *by_reason.entry(e.drop_reason()).or_default() += 1;
        }
    }
    assert_eq!(
        by_reason.get("too_large").copied(),
        Some(injected["oversized"])
    );
    // JSON has no NaN: such rows hold null coordinates and do not decode either.
    assert_eq!(
        by_reason.get("undecodable").copied(),
        Some(injected["invalid_utf8"] + injected["nan"])
    );
    assert_eq!(
        records.len() as u64 + by_reason.values().sum::<u64>(),
        lines.len() as u64
    );

    let refused = bin()
        .args(["generate", "--graph"])
        .arg(&city.graph)
        .args([
            "--dirty",
            "0.2",
            "--dirty-kinds",
            "ms_as_s",
            "--format",
            "ndjson",
        ])
        .arg("--out")
        .arg(city.path("refused.ndjson"))
        .output()?;
    assert_eq!(refused.status.code(), Some(2));
    Ok(())
}
