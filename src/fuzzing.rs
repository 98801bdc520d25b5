//! Fuzz target bodies: one `fn(&[u8])` per untrusted input the pipeline reads, plus the seed
//! inputs they start from. The cargo-fuzz crate (`fuzz/`, nightly) calls them under
//! libFuzzer and `tests/fuzz_corpus.rs` (stable) replays the committed corpus and crashers
//! (`testdata/fuzz/<target>/`) through the very same functions, so a fixed crash stays fixed.
//!
//! The bodies live in the library rather than in the fuzz crate because (1) the stable test
//! and the nightly fuzzer then share one copy without path tricks, (2) `make lint` compiles
//! and lints them on every change, so they cannot rot while CI never runs the fuzzer, and
//! (3) they call the same public entry points production uses (`RoadGraph::load`,
//! `RoadGraph::from_osm`, `ProbeReader`, `Records::push_decoded`, `Cleaner`, `Matcher`).
//!
//! A body returns quietly on inputs that are rejected with an error; it panics (a fuzz
//! crash) only when the code under test panics or breaks a stated invariant, checked by an
//! `assert!` naming it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;

use crate::connector::parquet::{
    ColumnMapping, InputFile, ParquetSourceConfig, ProbeReader, TimestampUnit,
};
use crate::graph::osm_writer::{synthetic_grid, OsmBuilder};
use crate::graph::{ImportConfig, RoadGraph};
use crate::matching::{MatchConfig, MatchOutput, Matcher};
use crate::record::RecordKind;
use crate::record::{Encoding, MatchedPoint, Probe, SegmentObservation, SegmentSpeed, WireRecord};
use crate::runtime::Records;
use crate::stage::clean::{CleanConfig, Cleaner};
use crate::telemetry::metrics::{metrics, ComponentMetrics};

/// A fuzz target: its name (the `fuzz/fuzz_targets/<name>.rs` binary and the
/// `testdata/fuzz/<name>/` corpus directory) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "decode_json",
        run: decode_json,
    },
    Target {
        name: "decode_proto",
        run: decode_proto,
    },
    Target {
        name: "parquet_probes",
        run: parquet_probes,
    },
    Target {
        name: "osm_pbf",
        run: osm_pbf,
    },
    Target {
        name: "osm_xml",
        run: osm_xml,
    },
    Target {
        name: "graph_file",
        run: graph_file,
    },
    Target {
        name: "matcher",
        run: matcher,
    },
    Target {
        name: "clean",
        run: clean,
    },
];

/// Most probes a structured target builds from one input, so one input stays fast.
const MAX_PROBES: usize = 2048;

/// Message payloads as the Kafka and Kinesis sources decode them, in JSON.
pub fn decode_json(data: &[u8]) {
    decode_all_kinds(data, Encoding::Json);
}

/// Message payloads as the Kafka and Kinesis sources decode them, in protobuf.
pub fn decode_proto(data: &[u8]) {
    decode_all_kinds(data, Encoding::Protobuf);
}

/// Decodes `data` as each record kind, the way sources do (`Records::push_decoded`); what
/// decodes must encode and decode again to the same record (sinks re-encode what sources
/// read, so a record we accept must survive the trip).
fn decode_all_kinds(data: &[u8], encoding: Encoding) {
    for kind in RecordKind::ALL {
        let mut records = Records::empty(kind);
        if records.push_decoded(data, encoding).is_err() {
            continue;
        }
        match &records {
            Records::Probes(v) => check_round_trip(v, encoding),
            Records::MatchedPoints(v) => check_round_trip(v, encoding),
            Records::Observations(v) => check_round_trip(v, encoding),
            Records::Speeds(v) => check_round_trip(v, encoding),
        }
    }
}

fn check_round_trip<T: WireRecord + Clone + std::fmt::Debug>(records: &[T], encoding: Encoding) {
    for record in records {
        let bytes = record.encode(encoding);
        let again = T::decode(&bytes, encoding);
        assert!(
            again.is_ok(),
            "a decoded record must decode again after encoding: {record:?} -> {:?}: {again:?}",
            String::from_utf8_lossy(&bytes)
        );
        if let Ok(again) = again {
            // Bytes, not `==`: NaN is a legal protobuf float and never equals itself.
            assert_eq!(
                again.encode(encoding),
                bytes,
                "encoding is not stable across a decode"
            );
        }
    }
}

/// The two column mappings the Parquet target reads with; the first input byte picks one.
fn parquet_config(selector: u8, path: &Path) -> ParquetSourceConfig {
    let mut config = ParquetSourceConfig::new([path.display().to_string()]);
    config.progress = false;
    config.decode_threads = Some(1);
    config.batch_size = 64;
    config.columns = ColumnMapping {
        vehicle_id: "vid".to_string(),
        timestamp: "t".to_string(),
        lat: "y".to_string(),
        lon: "x".to_string(),
        speed_mps: Some("v".to_string()),
        heading_deg: Some("hdg".to_string()),
        accuracy_m: Some("acc".to_string()),
    };
    if selector.is_multiple_of(2) {
        config.timestamp_unit = TimestampUnit::S;
    } else {
        config.timestamp_unit = TimestampUnit::Arrow;
        config.start_ms = Some(PARQUET_START_MS);
        config.end_ms = Some(PARQUET_END_MS);
    }
    config
}

const PARQUET_START_MS: i64 = 1_700_000_002_000;
const PARQUET_END_MS: i64 = 1_700_000_008_000;

/// A Parquet file replayed through [`ProbeReader`] with a renamed, typed column mapping
/// (first byte: which mapping, see [`parquet_config`]; the rest: the file). Probes outside
/// the configured time range must never come out.
pub fn parquet_probes(data: &[u8]) {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let scratch = ScratchFile::new("probes.parquet");
    if std::fs::write(&scratch.path, file).is_err() {
        return;
    }
    let config = parquet_config(selector, &scratch.path);
    let files = vec![InputFile {
        path: scratch.path.clone(),
        explicit: true,
    }];
    let Ok(mut reader) = ProbeReader::open(files, &config, component_metrics()) else {
        return;
    };
    let mut read = 0usize;
    while let Ok(Some(batch)) = reader.next_batch() {
        for probe in &batch {
            assert!(
                config.start_ms.is_none_or(|s| probe.ts_ms >= s)
                    && config.end_ms.is_none_or(|e| probe.ts_ms < e),
                "probe at {} outside the configured time range",
                probe.ts_ms
            );
        }
        read += batch.len();
        if read > 1 << 20 {
            break;
        }
    }
}

/// An `.osm.pbf` file imported into a road graph (the kind is sniffed from the bytes).
pub fn osm_pbf(data: &[u8]) {
    import_osm(data, "map.osm.pbf");
}

/// An `.osm` XML file imported into a road graph.
pub fn osm_xml(data: &[u8]) {
    import_osm(data, "map.osm");
}

fn import_osm(data: &[u8], name: &str) {
    let scratch = ScratchFile::new(name);
    if std::fs::write(&scratch.path, data).is_err() {
        return;
    }
    if let Ok(graph) = RoadGraph::from_osm(&scratch.path, &ImportConfig::default()) {
        walk_graph(&graph);
    }
}

/// A `.graph` file loaded the way `pipeline` loads one (mmap and validation). Whatever it
/// accepts must be safe to walk: every segment, geometry, successor and spatial query.
///
/// First byte odd: the rest is resealed first (its length and CRC-32 written into the
/// header, as a buggy or malicious writer would), so mutations reach the checks behind the
/// checksum (section bounds, counts, offsets, indices); even: loaded as it is.
pub fn graph_file(data: &[u8]) {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if selector % 2 == 1 && file.len() >= 32 {
        let len = file.len() as u64;
        file[16..24].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&file[16..]);
        file[12..16].copy_from_slice(&crc.to_le_bytes());
    }
    let scratch = ScratchFile::new("fuzz.graph");
    if std::fs::write(&scratch.path, &file).is_err() {
        return;
    }
    if let Ok(graph) = RoadGraph::load(&scratch.path) {
        walk_graph(&graph);
    }
}

/// Touches everything a loaded graph promises to answer without panicking.
fn walk_graph(graph: &RoadGraph) {
    for i in graph.indices() {
        let segment = *graph.segment(i);
        assert_eq!(
            graph.index_of(segment.segment_id),
            Some(i),
            "index_of must find every segment"
        );
        let _ = graph.geometry(i).len();
        for &j in graph.successors(i) {
            let _ = graph.segment(j);
        }
    }
    let _ = graph.info();
    let (lat, lon) = graph.bbox().centre();
    let _ = graph.nearest_within(lat, lon, 500.0, 4);
    if let Some(&[lat, lon]) = graph.all_geometry().first() {
        let _ = graph.nearest_within(lat, lon, 50.0, 4);
    }
}

/// The small graph the matcher target runs on: a 6 × 6 grid, 150 m apart, built once.
fn matcher_graph() -> Arc<RoadGraph> {
    static GRAPH: OnceLock<Arc<RoadGraph>> = OnceLock::new();
    GRAPH
        .get_or_init(|| {
            let graph = synthetic_grid(6, 6, 150.0, 60.17, 24.94)
                .build_graph(&ImportConfig::default())
                // A fixed, valid grid: failing here is a bug in the writer, not an input.
                .unwrap_or_else(|e| panic!("the fixed fuzz grid must build: {e}"));
            Arc::new(graph)
        })
        .clone()
}

/// Random traces (several vehicles, times mostly forward with jumps back and gaps,
/// positions mostly near the grid with wild values mixed in) through a [`Matcher`], with idle
/// eviction on the way and a flush at the end. Every probe must come out once, matched or
/// unmatched, and every matched segment must exist.
pub fn matcher(data: &[u8]) {
    let graph = matcher_graph();
    let mut u = Unstructured::new(data);
    let mut config = MatchConfig::default();
    if u.arbitrary::<bool>().unwrap_or(false) {
        config.lag_points = u.int_in_range(1..=8).unwrap_or(1);
        config.vehicle_ttl_ms = u.int_in_range(1_000..=120_000).unwrap_or(60_000);
    }
    let mut matcher = Matcher::new(graph.clone(), config);
    let bbox = graph.bbox();
    let mut out = MatchOutput::default();
    let mut clock_ms: i64 = 1_700_000_000_000;
    let mut pushed = 0usize;
    while !u.is_empty() && pushed < MAX_PROBES {
        let Ok(probe) = arbitrary_probe(&mut u, &mut clock_ms, bbox) else {
            break;
        };
        matcher.push(probe, &mut out);
        pushed += 1;
        if u.ratio(1, 16).unwrap_or(false) {
            matcher.evict_idle(clock_ms, &mut out);
        }
    }
    matcher.flush_all(&mut out);
    assert_eq!(
        out.matched.len() + out.unmatched.len(),
        pushed,
        "every probe must come out once, matched or unmatched"
    );
    assert_eq!(
        matcher.pending_probes(),
        0,
        "nothing pending after flush_all"
    );
    for point in &out.matched {
        assert!(
            graph.index_of(point.segment_id).is_some(),
            "matched to an unknown segment"
        );
    }
    for obs in &out.observations {
        assert!(
            graph.index_of(obs.segment_id).is_some(),
            "observation of an unknown segment"
        );
    }
}

/// One probe of a random trace: mostly plausible, sometimes hostile.
fn arbitrary_probe(
    u: &mut Unstructured<'_>,
    clock_ms: &mut i64,
    bbox: crate::graph::BBox,
) -> arbitrary::Result<Probe> {
    let vehicle: u8 = u.int_in_range(0..=3)?;
    let time_kind = u.arbitrary::<u8>()? % 16;
    let ts_ms = match time_kind {
        0 => u.arbitrary::<i64>()?,
        1 => clock_ms.saturating_sub(u.int_in_range(0..=120_000)?),
        2 => clock_ms.saturating_add(u.int_in_range(0..=3_600_000)?),
        _ => clock_ms.saturating_add(u.int_in_range(0..=10_000)?),
    };
    if time_kind != 0 {
        *clock_ms = ts_ms.max(*clock_ms);
    }
    let (lat, lon) = if u.ratio(1, 16)? {
        (u.arbitrary::<f64>()?, u.arbitrary::<f64>()?)
    } else {
        // Over the grid's box with a 20 % margin on each side.
        let frac = |x: u16| -0.2 + 1.4 * f64::from(x) / f64::from(u16::MAX);
        let lat = bbox.min_lat + (bbox.max_lat - bbox.min_lat) * frac(u.arbitrary()?);
        let lon = bbox.min_lon + (bbox.max_lon - bbox.min_lon) * frac(u.arbitrary()?);
        (lat, lon)
    };
    Ok(Probe {
        vehicle_id: format!("v{vehicle}"),
        ts_ms,
        lat,
        lon,
        speed_mps: u.arbitrary()?,
        heading_deg: u.arbitrary()?,
        accuracy_m: u.arbitrary()?,
    })
}

/// Random probes in random batches through the clean stage's [`Cleaner`], with a config
/// that passes validation. Every probe must come out once: released, or dropped with a
/// counted reason.
pub fn clean(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = arbitrary_clean_config(&mut u);
    let mut cleaner = Cleaner::new(config);
    let mut out = Vec::new();
    let mut clock_ms: i64 = 1_700_000_000_000;
    let bbox = crate::graph::BBox {
        min_lat: 60.16,
        min_lon: 24.93,
        max_lat: 60.18,
        max_lon: 24.96,
    };
    let mut pushed = 0usize;
    let mut dropped = 0u64;
    'input: while !u.is_empty() && pushed < MAX_PROBES {
        let len: usize = u.int_in_range(0..=32).unwrap_or(0);
        let mut batch = Vec::with_capacity(len);
        for _ in 0..len {
            match arbitrary_probe(&mut u, &mut clock_ms, bbox) {
                Ok(mut probe) => {
                    if u.ratio(1, 64).unwrap_or(false) {
                        probe.vehicle_id.clear();
                    }
                    batch.push(probe);
                }
                Err(_) => {
                    pushed += batch.len();
                    dropped += cleaner.push(batch, &mut out).total();
                    break 'input;
                }
            }
        }
        pushed += batch.len();
        dropped += cleaner.push(batch, &mut out).total();
    }
    dropped += cleaner.flush(&mut out).total();
    assert_eq!(
        out.len() as u64 + dropped,
        pushed as u64,
        "every probe must be released or dropped with a reason"
    );
    assert_eq!(cleaner.oldest_held_ms(), None, "nothing held after flush");
}

/// The default clean config, or (half the time) one drawn from the input that passes
/// [`CleanConfig::validate`].
fn arbitrary_clean_config(u: &mut Unstructured<'_>) -> CleanConfig {
    let default = CleanConfig::default();
    if !u.arbitrary::<bool>().unwrap_or(false) {
        return default;
    }
    let mut draw = || -> arbitrary::Result<CleanConfig> {
        let reorder_window_ms = u.int_in_range(0..=600_000)?;
        Ok(CleanConfig {
            max_speed_mps: f64::from(u.int_in_range(1u16..=500)?),
            reorder_window_ms,
            max_future_ms: u.int_in_range(0..=3_600_000)?,
            max_past_ms: reorder_window_ms + u.int_in_range(0..=3_600_000)?,
            vehicle_ttl_ms: u.int_in_range(0..=3_600_000)?,
            teleport_reanchor_after: u.int_in_range(0..=5)?,
            future_confirm_after: u.int_in_range(1..=5)?,
        })
    };
    let config = draw().unwrap_or(default);
    let mut problems = crate::config::Problems::default();
    config.validate("fuzz", &mut problems);
    if problems.is_empty() {
        config
    } else {
        CleanConfig::default()
    }
}

fn component_metrics() -> Arc<ComponentMetrics> {
    static METRICS: OnceLock<Arc<ComponentMetrics>> = OnceLock::new();
    METRICS.get_or_init(|| metrics().component("fuzz")).clone()
}

/// A file in the temporary directory, private to this process and thread, removed on drop.
struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    fn new(name: &str) -> Self {
        let thread = format!("{:?}", std::thread::current().id());
        let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
        let path = std::env::temp_dir().join(format!(
            "pipeline-fuzz-{}-{thread}-{name}",
            std::process::id()
        ));
        Self { path }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A seed input: target name, file name, bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Valid inputs made by the project's own writers, the fuzzers' starting corpus
/// (`cargo run --example fuzz_seeds` writes them under `testdata/fuzz/`).
pub fn seeds() -> Result<Vec<Seed>, Box<dyn std::error::Error>> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name: format!("seed-{name}"),
            bytes,
        })
    };

    let probe = Probe {
        vehicle_id: "car-1".to_string(),
        ts_ms: 1_700_000_000_000,
        lat: 60.17,
        lon: 24.94,
        speed_mps: Some(12.5),
        heading_deg: Some(90.0),
        accuracy_m: Some(4.0),
    };
    let matched = MatchedPoint {
        probe: Probe::new("car-2", 1_700_000_001_000, 60.171, 24.941),
        segment_id: 42,
        offset_m: 12.0,
        snapped_lat: 60.171,
        snapped_lon: 24.9411,
        distance_m: 3.5,
    };
    let observation = SegmentObservation {
        observation_id: 7,
        segment_id: 42,
        vehicle_id: "car-2".to_string(),
        enter_ts_ms: 1_700_000_000_000,
        exit_ts_ms: 1_700_000_009_000,
        traversed_m: 120.0,
        speed_mps: 13.3,
        next_segment_id: Some(43),
        flags: 5,
    };
    let speed = SegmentSpeed {
        segment_id: 42,
        window_start_ms: 1_700_000_000_000,
        window_end_ms: 1_700_000_060_000,
        estimator: "space_mean".into(),
        samples: 3,
        vehicles: 2,
        speed_mps: 12.0,
        p15_speed_mps: Some(9.0),
        p50_speed_mps: Some(12.0),
        p85_speed_mps: None,
        travel_time_s: 10.0,
        graph_version: 99,
        revision: 1,
    };
    for (target, encoding) in [
        ("decode_json", Encoding::Json),
        ("decode_proto", Encoding::Protobuf),
    ] {
        add(target, "probe", probe.encode(encoding));
        add(target, "matched_point", matched.encode(encoding));
        add(target, "observation", observation.encode(encoding));
        add(target, "speed", speed.encode(encoding));
    }

    for (selector, name) in [(0u8, "seconds"), (1u8, "arrow_ts")] {
        let mut bytes = vec![selector];
        bytes.extend(parquet_seed(selector)?);
        add("parquet_probes", name, bytes);
    }

    let grid = synthetic_grid(3, 3, 100.0, 60.17, 24.94);
    let tagged = tagged_map();
    add("osm_pbf", "grid", grid.to_pbf()?);
    add("osm_pbf", "tagged", tagged.to_pbf()?);
    add("osm_xml", "grid", grid.to_xml().into_bytes());
    add("osm_xml", "tagged", tagged.to_xml().into_bytes());

    let scratch = ScratchFile::new("seed.graph");
    for (name, osm) in [("grid", &grid), ("tagged", &tagged)] {
        osm.build_graph(&ImportConfig::default())?
            .write(&scratch.path)?;
        let bytes = std::fs::read(&scratch.path)?;
        for (selector, how) in [(0u8, "as-is"), (1u8, "resealed")] {
            let mut input = vec![selector];
            input.extend_from_slice(&bytes);
            add("graph_file", &format!("{name}-{how}"), input);
        }
    }

    // The structured targets read any bytes; seed them with a few fixed random strings.
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    for target in ["matcher", "clean"] {
        for len in [64usize, 512, 2048] {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            add(target, &format!("random-{len}"), bytes);
        }
    }
    Ok(seeds)
}

/// A small map with one-ways, speed limits, several classes and a way that is not a road.
fn tagged_map() -> OsmBuilder {
    let mut osm = OsmBuilder::new();
    for (id, lat, lon) in [
        (1, 60.170, 24.940),
        (2, 60.171, 24.940),
        (3, 60.172, 24.941),
        (4, 60.171, 24.942),
        (5, 60.170, 24.942),
    ] {
        osm.node(id, lat, lon);
    }
    osm.way(
        10,
        &[1, 2, 3],
        &[("highway", "primary"), ("maxspeed", "50"), ("name", "Iso")],
    )
    .way(
        11,
        &[3, 4],
        &[("highway", "residential"), ("oneway", "yes")],
    )
    .way(12, &[4, 5, 1], &[("highway", "service"), ("oneway", "-1")])
    .way(13, &[2, 4], &[("highway", "footway")])
    .way(
        14,
        &[5, 2],
        &[("highway", "motorway"), ("maxspeed", "30 mph")],
    );
    osm
}

/// A ten-row Parquet file in the column layout of [`parquet_config`]'s mapping.
fn parquet_seed(selector: u8) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use arrow_array::{
        ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
        TimestampMillisecondArray,
    };
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    let rows = 10usize;
    let base_ms = 1_700_000_000_000i64;
    let ts_ms: Vec<i64> = (0..rows as i64).map(|i| base_ms + i * 1_000).collect();
    let vid: ArrayRef = if selector.is_multiple_of(2) {
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("car-{}", i % 3)),
        ))
    } else {
        Arc::new(Int64Array::from_iter_values(
            (0..rows as i64).map(|i| i % 3),
        ))
    };
    let t: ArrayRef = if selector.is_multiple_of(2) {
        Arc::new(Float64Array::from_iter_values(
            ts_ms.iter().map(|&ms| ms as f64 / 1_000.0),
        ))
    } else {
        Arc::new(TimestampMillisecondArray::from(ts_ms.clone()).with_timezone("UTC"))
    };
    let batch = RecordBatch::try_from_iter([
        ("vid", vid),
        ("t", t),
        (
            "y",
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| 60.17 + i as f64 * 1e-4),
            )) as ArrayRef,
        ),
        (
            "x",
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| 24.94 + i as f64 * 1e-4),
            )) as ArrayRef,
        ),
        (
            "v",
            Arc::new(Float32Array::from_iter(
                (0..rows).map(|i| (i % 4 != 0).then_some(i as f32)),
            )) as ArrayRef,
        ),
        (
            "hdg",
            Arc::new(Float32Array::from_iter_values(
                (0..rows).map(|i| i as f32 * 30.0),
            )) as ArrayRef,
        ),
        (
            "acc",
            Arc::new(Int32Array::from_iter_values(
                (0..rows as i32).map(|i| i + 3),
            )) as ArrayRef,
        ),
    ])?;
    let compression = if selector.is_multiple_of(2) {
        Compression::ZSTD(ZstdLevel::try_new(3)?)
    } else {
        Compression::SNAPPY
    };
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(4))
        .set_compression(compression)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(bytes)
}
