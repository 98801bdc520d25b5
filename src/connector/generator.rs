//! The generator source: synthetic probes from vehicles driving random routes on the road
//! graph, with GPS noise, at a fixed sampling interval, all from one seed. It also yields
//! the ground truth (true position, segment and speed of every probe) for accuracy checks.
//!
//! Vehicles pick a random successor at each junction (avoiding an immediate U-turn when
//! there is another way), and would drive each segment at its speed limit times a factor
//! drawn from N(speed_factor_mean, speed_factor_sd), clamped to [0.2, 1.5]; the congestion
//! model (`connector::congestion`, on by default) slows them on bottlenecks, in queues
//! before junctions and in a rush hour. The truth holds the speed each vehicle drove at
//! each probe's moment, congestion included.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::congestion::{Congestion, CongestionConfig};
use super::dirty::{Corruptor, DirtyConfig, DirtyKind};
use crate::config::limits::{MAX_BATCH_RECORDS, MAX_GENERATED_VEHICLES};
use crate::config::Problems;
use crate::geo::haversine_m;
use crate::graph::RoadGraph;
use crate::record::{ArrowRecord, MatchedPoint, Probe};
use crate::runtime::{Batch, BoxError, Output, Records, Source};

/// 2023-11-14T22:13:20Z: a fixed default so generated files are reproducible.
pub const DEFAULT_START_MS: i64 = 1_700_000_000_000;

fn default_vehicles() -> u32 {
    100
}
fn default_duration_s() -> f64 {
    600.0
}
fn default_interval_s() -> f64 {
    1.0
}
fn default_noise_m() -> f64 {
    5.0
}
fn default_seed() -> u64 {
    42
}
fn default_start_ms() -> i64 {
    DEFAULT_START_MS
}
fn default_speed_factor_mean() -> f64 {
    0.85
}
fn default_speed_factor_sd() -> f64 {
    0.1
}
fn default_batch_size() -> usize {
    8192
}

/// Settings of the generator (`[sources.NAME] type = "generator"`, and `pipeline generate`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSourceConfig {
    #[serde(default = "default_vehicles")]
    pub vehicles: u32,
    #[serde(default = "default_duration_s")]
    pub duration_s: f64,
    #[serde(default = "default_interval_s")]
    pub interval_s: f64,
    /// GPS noise: standard deviation per axis, metres.
    #[serde(default = "default_noise_m")]
    pub noise_m: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Event time of the first sample, epoch ms.
    #[serde(default = "default_start_ms")]
    pub start_ms: i64,
    #[serde(default = "default_speed_factor_mean")]
    pub speed_factor_mean: f64,
    #[serde(default = "default_speed_factor_sd")]
    pub speed_factor_sd: f64,
    /// Probes per emitted batch (at least one sampling tick per batch).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Emit at N× real time by event time; absent means as fast as possible.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Fraction of probes given a real-world fault, for demos of the clean stage: an exact
    /// duplicate, a (0, 0) fix, a 2 km outlier, or a late delivery (two intervals late).
    /// Faulty copies have no ground truth row.
    #[serde(default)]
    pub fault_rate: f64,
    /// Fraction of probes corrupted with the faults of `dirty_kinds` (see
    /// `connector::dirty`), for robustness runs of the whole pipeline.
    #[serde(default)]
    pub dirty: f64,
    /// Faults `dirty` injects; default: every kind that exists in process (nan, swapped,
    /// year_1970, year_2099, duplicate, out_of_order, teleport).
    #[serde(default)]
    pub dirty_kinds: Vec<DirtyKind>,
    /// Vehicle churn: each vehicle drives one trip of U(0.5, 1.5)·`trip_s` seconds (event
    /// time), then leaves and a vehicle with a new id enters at a random place, so the fleet
    /// size stays `vehicles` while the number of distinct ids grows with the run (soak
    /// tests). Absent: every vehicle drives the whole run.
    #[serde(default)]
    pub trip_s: Option<f64>,
    /// Bottlenecks, queues at junctions and a rush hour (`[sources.NAME.congestion]`).
    #[serde(default)]
    pub congestion: CongestionConfig,
}

impl Default for GeneratorSourceConfig {
    fn default() -> Self {
        Self {
            vehicles: default_vehicles(),
            duration_s: default_duration_s(),
            interval_s: default_interval_s(),
            noise_m: default_noise_m(),
            seed: default_seed(),
            start_ms: default_start_ms(),
            speed_factor_mean: default_speed_factor_mean(),
            speed_factor_sd: default_speed_factor_sd(),
            batch_size: default_batch_size(),
            rate: None,
            fault_rate: 0.0,
            dirty: 0.0,
            dirty_kinds: Vec::new(),
            trip_s: None,
            congestion: CongestionConfig::default(),
        }
    }
}

impl GeneratorSourceConfig {
    pub fn validate(&self, prefix: &str, problems: &mut Problems) {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        problems.check_count(
            self.vehicles as usize,
            1..=MAX_GENERATED_VEHICLES,
            format!("{prefix}.vehicles"),
        );
        problems.check(
            positive(self.duration_s),
            format!("{prefix}.duration_s"),
            "must be positive",
        );
        problems.check(
            positive(self.interval_s) && self.interval_s >= 0.001,
            format!("{prefix}.interval_s"),
            "must be at least 0.001",
        );
        problems.check(
            self.noise_m.is_finite() && self.noise_m >= 0.0,
            format!("{prefix}.noise_m"),
            "must not be negative",
        );
        problems.check(
            positive(self.speed_factor_mean),
            format!("{prefix}.speed_factor_mean"),
            "must be positive",
        );
        problems.check(
            self.speed_factor_sd.is_finite() && self.speed_factor_sd >= 0.0,
            format!("{prefix}.speed_factor_sd"),
            "must not be negative",
        );
        problems.check_count(
            self.batch_size,
            1..=MAX_BATCH_RECORDS,
            format!("{prefix}.batch_size"),
        );
        problems.check(
            (0.0..=1.0).contains(&self.fault_rate),
            format!("{prefix}.fault_rate"),
            "must be between 0 and 1",
        );
        if let Some(rate) = self.rate {
            problems.check(positive(rate), format!("{prefix}.rate"), "must be positive");
        }
        problems.check(
            (0.0..=1.0).contains(&self.dirty),
            format!("{prefix}.dirty"),
            "must be between 0 and 1",
        );
        for (i, kind) in self.dirty_kinds.iter().enumerate() {
            problems.check(
                kind.in_process(),
                format!("{prefix}.dirty_kinds[{i}]"),
                format!(
                    "`{kind}` only exists in files and payloads; use `pipeline generate --dirty`"
                ),
            );
        }
        if let Some(trip_s) = self.trip_s {
            problems.check(
                trip_s.is_finite() && trip_s >= self.interval_s,
                format!("{prefix}.trip_s"),
                "must be at least interval_s",
            );
        }
        self.congestion
            .validate(&format!("{prefix}.congestion"), problems);
    }

    /// The corruption `dirty` and `dirty_kinds` ask for, if any.
    pub fn dirty_config(&self) -> Option<DirtyConfig> {
        if self.dirty <= 0.0 {
            return None;
        }
        let kinds = if self.dirty_kinds.is_empty() {
            DirtyKind::ALL
                .into_iter()
                .filter(|k| k.in_process())
                .collect()
        } else {
            self.dirty_kinds.clone()
        };
        Some(DirtyConfig {
            fraction: self.dirty,
            kinds,
            seed: self.seed,
            interval_ms: (self.interval_s * 1000.0).round().max(1.0) as i64,
            end_ms: Some(
                self.start_ms
                    .saturating_add((self.duration_s * 1000.0) as i64),
            ),
        })
    }
}

/// Where a probe truly was.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthPoint {
    pub vehicle_id: String,
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub segment_id: u64,
    pub offset_m: f64,
    /// The speed driven at `ts_ms`, congestion included.
    pub speed_mps: f64,
}

struct Vehicle {
    id: String,
    rng: ChaCha8Rng,
    segment: u32,
    offset_m: f64,
    /// The speed this driver chose for the segment (limit × factor), before congestion.
    own_speed_mps: f64,
    phase_ms: i64,
    /// Index of the fleet slot, and how often it left the map and came back as a new vehicle.
    slot: u32,
    respawns: u32,
    /// Event time left in this vehicle's trip (`trip_s` churn); `i64::MAX` without churn.
    trip_left_ms: i64,
}

/// A fleet advancing tick by tick; every tick yields one probe per vehicle.
pub struct Fleet {
    graph: Arc<RoadGraph>,
    config: GeneratorSourceConfig,
    vehicles: Vec<Vehicle>,
    tick: u64,
    ticks: u64,
    speed_factor: Normal<f64>,
    congestion: Congestion,
    fault_rng: ChaCha8Rng,
    /// Late deliveries: (tick at which to deliver, probe).
    delayed: Vec<(u64, Probe)>,
}

impl Fleet {
    pub fn new(graph: Arc<RoadGraph>, config: GeneratorSourceConfig) -> Self {
        let interval_ms = (config.interval_s * 1000.0).round().max(1.0) as i64;
        let ticks = (config.duration_s * 1000.0 / interval_ms as f64)
            .ceil()
            .max(0.0) as u64;
        let speed_factor = Normal::new(config.speed_factor_mean, config.speed_factor_sd)
            .unwrap_or_else(|_| Normal::new(0.85, 0.0).expect("constant normal is valid"));
        let segments = graph.len() as u32;
        let vehicles = (0..config.vehicles)
            .map(|v| {
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
                rng.set_stream(u64::from(v));
                let segment = if segments > 0 {
                    rng.random_range(0..segments)
                } else {
                    0
                };
                let length_m = if segments > 0 {
                    graph.segment(segment).length_m
                } else {
                    0.0
                };
                let offset_m = rng.random::<f64>() * length_m;
                let phase_ms = rng.random_range(0..interval_ms);
                let mut vehicle = Vehicle {
                    id: format!("veh-{v:06}"),
                    slot: v,
                    respawns: 0,
                    rng,
                    segment,
                    offset_m,
                    own_speed_mps: 0.0,
                    phase_ms,
                    trip_left_ms: i64::MAX,
                };
                vehicle.own_speed_mps = draw_speed(&graph, &mut vehicle, &speed_factor);
                churn::start_first_trip(&mut vehicle, config.trip_s);
                vehicle
            })
            .collect();
        let mut fault_rng = ChaCha8Rng::seed_from_u64(config.seed);
        fault_rng.set_stream(u64::MAX);
        let congestion = Congestion::new(&graph, &config.congestion, config.seed);
        Self {
            graph,
            config,
            vehicles,
            tick: 0,
            ticks,
            speed_factor,
            congestion,
            fault_rng,
            delayed: Vec::new(),
        }
    }

    fn interval_ms(&self) -> i64 {
        (self.config.interval_s * 1000.0).round().max(1.0) as i64
    }

    /// The next sampling tick's probes and truth, sorted by time; `None` when done.
    pub fn next_tick(&mut self) -> Option<(Vec<Probe>, Vec<TruthPoint>)> {
        if self.tick >= self.ticks || self.graph.is_empty() {
            if self.delayed.is_empty() {
                return None;
            }
            let late = self.delayed.drain(..).map(|(_, p)| p).collect();
            return Some((late, Vec::new()));
        }
        let interval_ms = self.interval_ms();
        let base_ms = self.config.start_ms + self.tick as i64 * interval_ms;
        let projection = *self.graph.projection();
        let noise = Normal::new(0.0, self.config.noise_m.max(0.0))
            .unwrap_or_else(|_| Normal::new(0.0, 0.0).expect("constant normal is valid"));
        let mut rows: Vec<(Probe, TruthPoint)> = Vec::with_capacity(self.vehicles.len());
        let level = self
            .congestion
            .level(self.tick as f64 / self.ticks.max(1) as f64);
        for vehicle in &mut self.vehicles {
            if self.tick > 0
                && !churn::end_trip_if_due(
                    &self.graph,
                    vehicle,
                    interval_ms,
                    self.config.trip_s,
                    &self.speed_factor,
                )
            {
                advance(
                    &self.graph,
                    vehicle,
                    interval_ms as f64 / 1000.0,
                    &self.speed_factor,
                    (&self.congestion, level),
                );
            }
            let speed_mps = stretch_here(&self.graph, vehicle, &self.congestion, level).speed_mps;
            let (lat, lon) = position_at(&self.graph, vehicle.segment, vehicle.offset_m);
            let [x, y] = projection.project(lat, lon);
            let (noisy_lat, noisy_lon) = projection.unproject([
                x + noise.sample(&mut vehicle.rng),
                y + noise.sample(&mut vehicle.rng),
            ]);
            let ts_ms = base_ms + vehicle.phase_ms;
            rows.push((
                Probe::new(vehicle.id.clone(), ts_ms, noisy_lat, noisy_lon),
                TruthPoint {
                    vehicle_id: vehicle.id.clone(),
                    ts_ms,
                    lat,
                    lon,
                    segment_id: self.graph.segment(vehicle.segment).segment_id,
                    offset_m: vehicle.offset_m,
                    speed_mps,
                },
            ));
        }
        rows.sort_by(|a, b| (a.0.ts_ms, &a.0.vehicle_id).cmp(&(b.0.ts_ms, &b.0.vehicle_id)));
        let (probes, truth): (Vec<Probe>, Vec<TruthPoint>) = rows.into_iter().unzip();
        let probes = self.inject_faults(probes);
        self.tick += 1;
        Some((probes, truth))
    }

    /// Applies `fault_rate` (see [`GeneratorSourceConfig::fault_rate`]) and delivers the
    /// late probes that are due.
    fn inject_faults(&mut self, probes: Vec<Probe>) -> Vec<Probe> {
        let mut out = Vec::with_capacity(probes.len());
        let (tick, due) = (self.tick, &mut self.delayed);
        out.extend(
            due.extract_if(.., |(deliver_at, _)| *deliver_at <= tick)
                .map(|(_, p)| p),
        );
        if self.config.fault_rate <= 0.0 {
            out.extend(probes);
            return out;
        }
        let outlier_deg = 2000.0 / crate::geo::EARTH_RADIUS_M.to_radians();
        for probe in probes {
            if !self.fault_rng.random_bool(self.config.fault_rate) {
                out.push(probe);
                continue;
            }
            match self.fault_rng.random_range(0..4u8) {
                0 => {
                    out.push(probe.clone());
                    out.push(probe);
                }
                1 => out.push(Probe {
                    lat: 0.0,
                    lon: 0.0,
                    ..probe
                }),
                2 => out.push(Probe {
                    lat: probe.lat + outlier_deg,
                    ..probe
                }),
                _ => self.delayed.push((tick + 2, probe)),
            }
        }
        out
    }
}

fn draw_speed(graph: &RoadGraph, vehicle: &mut Vehicle, factor: &Normal<f64>) -> f64 {
    let limit_mps = f64::from(graph.segment(vehicle.segment).speed_limit_kmh) / 3.6;
    let f = factor.sample(&mut vehicle.rng).clamp(0.2, 1.5);
    (limit_mps * f).max(1.0)
}

/// The speed a vehicle drives where it is, at congestion `level`, and how far it holds.
fn stretch_here(
    graph: &RoadGraph,
    vehicle: &Vehicle,
    congestion: &Congestion,
    level: f64,
) -> super::congestion::Stretch {
    congestion.stretch(
        vehicle.segment,
        graph.segment(vehicle.segment).length_m,
        vehicle.offset_m,
        vehicle.own_speed_mps,
        level,
    )
}

/// Moves a vehicle along its route for `dt_s` seconds at the speeds congestion (at the
/// given level) leaves it, choosing successors at junctions.
fn advance(
    graph: &RoadGraph,
    vehicle: &mut Vehicle,
    mut dt_s: f64,
    factor: &Normal<f64>,
    (congestion, level): (&Congestion, f64),
) {
    // Bounded: a vehicle cannot cross more than this many stretches in one interval.
    for _ in 0..10_000 {
        let length_m = graph.segment(vehicle.segment).length_m;
        let stretch = stretch_here(graph, vehicle, congestion, level);
        let to_end_s = (stretch.until_m - vehicle.offset_m).max(0.0) / stretch.speed_mps;
        if to_end_s > dt_s {
            vehicle.offset_m += stretch.speed_mps * dt_s;
            return;
        }
        dt_s -= to_end_s;
        if stretch.until_m < length_m {
            // Into the queue before the junction.
            vehicle.offset_m = stretch.until_m;
            continue;
        }
        let Some(next) = choose_successor(graph, vehicle) else {
            // A dead end (a one-way road leaving the extract): this vehicle leaves the map
            // and a new one enters at a random place, so the fleet size stays constant.
            respawn(graph, vehicle, factor);
            return;
        };
        vehicle.segment = next;
        vehicle.offset_m = 0.0;
        vehicle.own_speed_mps = draw_speed(graph, vehicle, factor);
    }
}

fn respawn(graph: &RoadGraph, vehicle: &mut Vehicle, factor: &Normal<f64>) {
    vehicle.respawns += 1;
    vehicle.id = format!("veh-{:06}-{}", vehicle.slot, vehicle.respawns);
    vehicle.segment = vehicle.rng.random_range(0..graph.len() as u32);
    vehicle.offset_m = vehicle.rng.random::<f64>() * graph.segment(vehicle.segment).length_m;
    vehicle.own_speed_mps = draw_speed(graph, vehicle, factor);
}

/// Vehicle churn (`trip_s`): trips of bounded length, each under a new vehicle id.
mod churn {
    use super::*;

    fn draw_trip_ms(rng: &mut ChaCha8Rng, trip_s: f64) -> i64 {
        (trip_s * 1000.0 * (0.5 + rng.random::<f64>()))
            .round()
            .max(1.0) as i64
    }

    /// The fleet's first trips are already under way, at a uniform point of their course,
    /// so vehicles do not all leave together and churn is steady from the start.
    pub(super) fn start_first_trip(vehicle: &mut Vehicle, trip_s: Option<f64>) {
        if let Some(trip_s) = trip_s {
            let trip_ms = draw_trip_ms(&mut vehicle.rng, trip_s);
            vehicle.trip_left_ms = (trip_ms as f64 * vehicle.rng.random::<f64>()).ceil() as i64;
        }
    }

    /// Counts one interval off the trip; when the trip is over, the vehicle leaves and a new
    /// one (new id, random place, new trip) takes its slot. Returns whether that happened.
    pub(super) fn end_trip_if_due(
        graph: &RoadGraph,
        vehicle: &mut Vehicle,
        interval_ms: i64,
        trip_s: Option<f64>,
        factor: &Normal<f64>,
    ) -> bool {
        let Some(trip_s) = trip_s else {
            return false;
        };
        vehicle.trip_left_ms = vehicle.trip_left_ms.saturating_sub(interval_ms);
        if vehicle.trip_left_ms > 0 {
            return false;
        }
        respawn(graph, vehicle, factor);
        vehicle.trip_left_ms = draw_trip_ms(&mut vehicle.rng, trip_s);
        true
    }

    impl Fleet {
        /// Distinct vehicle ids so far: each slot's first vehicle plus every replacement.
        pub fn vehicle_ids(&self) -> u64 {
            self.vehicles
                .iter()
                .map(|v| 1 + u64::from(v.respawns))
                .sum()
        }
    }

    /// `pipeline_generator_vehicles_total{component}`: what [`Fleet::vehicle_ids`] counts,
    /// so a soak run can report how many distinct vehicles went through.
    pub(super) fn vehicles_counter(component: &str) -> prometheus::IntCounter {
        static COUNTER: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
        COUNTER
            .get_or_init(|| {
                crate::telemetry::metrics::register_collector(
                    prometheus::IntCounterVec::new(
                        prometheus::Opts::new(
                            "pipeline_generator_vehicles_total",
                            "Distinct vehicle ids the generator has started (fleet slots plus \
                             vehicles that replaced one).",
                        ),
                        &["component"],
                    )
                    .expect("valid metric definition"),
                )
            })
            .with_label_values(&[component])
    }
}

/// The successors of segment `index` but an immediate U-turn (back along the same way).
pub(super) fn onward_successors(graph: &RoadGraph, index: u32) -> impl Iterator<Item = u32> + '_ {
    let current = graph.segment(index);
    graph.successors(index).iter().copied().filter(move |s| {
        let next = graph.segment(*s);
        !(next.osm_way_id == current.osm_way_id
            && next.from_node_id == current.to_node_id
            && next.to_node_id == current.from_node_id)
    })
}

fn choose_successor(graph: &RoadGraph, vehicle: &mut Vehicle) -> Option<u32> {
    let successors = graph.successors(vehicle.segment);
    let onward: Vec<u32> = onward_successors(graph, vehicle.segment).collect();
    let options: &[u32] = if onward.is_empty() {
        successors
    } else {
        &onward
    };
    if options.is_empty() {
        return None;
    }
    Some(options[vehicle.rng.random_range(0..options.len())])
}

/// The point `offset_m` along a segment's polyline, in (lat, lon).
fn position_at(graph: &RoadGraph, segment: u32, offset_m: f64) -> (f64, f64) {
    let points = graph.geometry(segment);
    let mut remaining_m = offset_m.max(0.0);
    for pair in points.windows(2) {
        let ([lat1, lon1], [lat2, lon2]) = (pair[0], pair[1]);
        let piece_m = haversine_m(lat1, lon1, lat2, lon2);
        if remaining_m <= piece_m && piece_m > 0.0 {
            let f = remaining_m / piece_m;
            return (lat1 + (lat2 - lat1) * f, lon1 + (lon2 - lon1) * f);
        }
        remaining_m -= piece_m;
    }
    let [lat, lon] = points.last().copied().unwrap_or([0.0, 0.0]);
    (lat, lon)
}

/// Fraction of truth points whose probe was matched to the true segment (a probe that was
/// not matched counts as wrong): the accuracy figure of tests and benchmarks.
pub fn segment_accuracy(truth: &[TruthPoint], matched: &[MatchedPoint]) -> f64 {
    let by_probe: std::collections::HashMap<(&str, i64), u64> = matched
        .iter()
        .map(|m| ((m.probe.vehicle_id.as_str(), m.probe.ts_ms), m.segment_id))
        .collect();
    let right = truth
        .iter()
        .filter(|t| by_probe.get(&(t.vehicle_id.as_str(), t.ts_ms)) == Some(&t.segment_id))
        .count();
    right as f64 / truth.len().max(1) as f64
}

/// Generates the whole run in memory: probes and truth, each sorted by (ts_ms, vehicle).
pub fn generate(
    graph: &Arc<RoadGraph>,
    config: &GeneratorSourceConfig,
) -> (Vec<Probe>, Vec<TruthPoint>) {
    let mut fleet = Fleet::new(graph.clone(), config.clone());
    let (mut probes, mut truth) = (Vec::new(), Vec::new());
    while let Some((p, t)) = fleet.next_tick() {
        probes.extend(p);
        truth.extend(t);
    }
    (probes, truth)
}

/// Writing a generated file failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error(transparent)]
    Record(#[from] crate::record::ArrowError),
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

fn write_batch(path: &Path, batch: &RecordBatch) -> Result<(), WriteError> {
    let file = std::fs::File::create(path)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

/// Writes probes to one zstd Parquet file with the `Probe` schema.
pub fn write_probes_parquet(probes: &[Probe], path: &Path) -> Result<(), WriteError> {
    write_batch(path, &Probe::to_record_batch(probes)?)
}

/// The Arrow schema of the ground truth file.
pub fn truth_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("vehicle_id", DataType::Utf8, false),
        Field::new("ts_ms", DataType::Int64, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("segment_id", DataType::UInt64, false),
        Field::new("offset_m", DataType::Float64, false),
        Field::new("speed_mps", DataType::Float64, false),
    ]))
}

/// Writes the ground truth to one zstd Parquet file.
pub fn write_truth_parquet(truth: &[TruthPoint], path: &Path) -> Result<(), WriteError> {
    let f64s = |get: fn(&TruthPoint) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(truth.iter().map(get)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            truth.iter().map(|t| t.vehicle_id.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(truth.iter().map(|t| t.ts_ms))),
        f64s(|t| t.lat),
        f64s(|t| t.lon),
        Arc::new(UInt64Array::from_iter_values(
            truth.iter().map(|t| t.segment_id),
        )),
        f64s(|t| t.offset_m),
        f64s(|t| t.speed_mps),
    ];
    write_batch(path, &RecordBatch::try_new(truth_schema(), columns)?)
}

/// The generator as a runtime source.
pub struct GeneratorSource {
    fleet: Fleet,
}

impl GeneratorSource {
    pub fn new(config: GeneratorSourceConfig, graph: Arc<RoadGraph>) -> Self {
        Self {
            fleet: Fleet::new(graph, config),
        }
    }
}

#[async_trait]
impl Source for GeneratorSource {
    async fn run(
        self: Box<Self>,
        mut out: Output,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let mut fleet = self.fleet;
        let mut dirt = fleet.config.dirty_config().map(Corruptor::new);
        let batch_size = fleet.config.batch_size.max(1);
        let (rate, start_ms) = (fleet.config.rate, fleet.config.start_ms);
        let started = tokio::time::Instant::now();
        let vehicles_total = churn::vehicles_counter(out.component());
        while !shutdown.is_cancelled() {
            // Simulating the fleet is CPU work: it runs on the blocking pool, never on the
            // I/O threads.
            let (returned, returned_dirt, batch) = tokio::task::spawn_blocking(move || {
                let mut batch: Vec<Probe> = Vec::with_capacity(batch_size);
                while batch.len() < batch_size {
                    match fleet.next_tick() {
                        Some((probes, _truth)) => batch.extend(probes),
                        None => break,
                    }
                }
                let batch = match dirt.as_mut() {
                    Some(dirt) => dirty_batch(dirt, batch),
                    None => batch,
                };
                (fleet, dirt, batch)
            })
            .await?;
            (fleet, dirt) = (returned, returned_dirt);
            vehicles_total.inc_by(fleet.vehicle_ids().saturating_sub(vehicles_total.get()));
            let Some(last_ts_ms) = batch.iter().map(|p| p.ts_ms).max() else {
                break;
            };
            if let Some(rate) = rate {
                let due_s = ((last_ts_ms - start_ms).max(0) as f64 / 1000.0) / rate;
                tokio::select! {
                    _ = tokio::time::sleep_until(started + Duration::from_secs_f64(due_s)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            out.send(Batch::new(Records::Probes(batch))).await?;
        }
        Ok(())
    }
}

/// Corrupts one batch (at the end of input, an empty one: the delayed bursts). Validation
/// keeps the kinds to those a [`Probe`] can carry, so every row is a plain probe.
fn dirty_batch(dirt: &mut Corruptor, batch: Vec<Probe>) -> Vec<Probe> {
    let mut rows = Vec::with_capacity(batch.len());
    if batch.is_empty() {
        dirt.finish(&mut rows);
    } else {
        dirt.push(batch, &mut rows);
    }
    rows.into_iter().map(|r| r.probe).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{osm_writer::synthetic_grid, ImportConfig};
    use std::collections::HashMap;

    fn graph() -> Arc<RoadGraph> {
        let g = synthetic_grid(6, 6, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds");
        Arc::new(g)
    }

    fn config() -> GeneratorSourceConfig {
        GeneratorSourceConfig {
            vehicles: 30,
            duration_s: 120.0,
            interval_s: 2.0,
            noise_m: 5.0,
            seed: 9,
            ..GeneratorSourceConfig::default()
        }
    }

    #[test]
    fn same_seed_gives_the_same_probes_and_another_seed_does_not() {
        let g = graph();
        let (a, _) = generate(&g, &config());
        let (b, _) = generate(&g, &config());
        assert_eq!(a, b);
        let (c, _) = generate(
            &g,
            &GeneratorSourceConfig {
                seed: 10,
                ..config()
            },
        );
        assert_ne!(a, c);
    }

    #[test]
    fn every_vehicle_reports_every_interval_in_time_order() {
        let (probes, truth) = generate(&graph(), &config());
        assert_eq!(probes.len(), 30 * 60);
        assert_eq!(truth.len(), probes.len());
        assert!(probes.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
        let first = probes.iter().map(|p| p.ts_ms).min().unwrap_or(0);
        assert!((DEFAULT_START_MS..DEFAULT_START_MS + 2000).contains(&first));
    }

    #[test]
    fn noise_has_the_configured_spread_and_speeds_follow_limits_without_congestion() {
        let g = graph();
        let (probes, truth) = generate(
            &g,
            &GeneratorSourceConfig {
                congestion: CongestionConfig::off(),
                ..config()
            },
        );
        let mean_error_m = probes
            .iter()
            .zip(&truth)
            .map(|(p, t)| haversine_m(p.lat, p.lon, t.lat, t.lon))
            .sum::<f64>()
            / probes.len() as f64;
        // Two independent N(0, 5 m) axes: the error is Rayleigh, mean 5·sqrt(pi/2) ≈ 6.27 m.
        assert!(
            (5.5..7.0).contains(&mean_error_m),
            "mean error {mean_error_m}"
        );
        for t in &truth {
            let index = g
                .index_of(t.segment_id)
                .expect("truth names a real segment");
            let limit_mps = g.segment(index).speed_limit_mps();
            assert!(t.speed_mps >= (0.2 * limit_mps).min(1.0) && t.speed_mps <= 1.5 * limit_mps);
            assert!(t.offset_m >= 0.0 && t.offset_m <= g.segment(index).length_m + 1e-6);
        }
    }

    /// Traversals (a vehicle's consecutive truth points on one segment) whose mean true
    /// speed is under 60 % of the limit, and all traversals.
    fn slow_traversals(g: &RoadGraph, truth: &[TruthPoint]) -> (usize, usize) {
        let mut by_vehicle: HashMap<&str, Vec<&TruthPoint>> = HashMap::new();
        for t in truth {
            by_vehicle.entry(&t.vehicle_id).or_default().push(t);
        }
        let (mut slow, mut all) = (0, 0);
        for points in by_vehicle.values() {
            for run in points.chunk_by(|a, b| a.segment_id == b.segment_id) {
                let limit_mps = g
                    .index_of(run[0].segment_id)
                    .map(|i| g.segment(i).speed_limit_mps())
                    .expect("truth names a real segment");
                let mean_mps = run.iter().map(|t| t.speed_mps).sum::<f64>() / run.len() as f64;
                all += 1;
                slow += usize::from(mean_mps < 0.6 * limit_mps);
            }
        }
        (slow, all)
    }

    /// A longer, busier run than `config()`, so that the rush hour has time to build.
    fn rush_config() -> GeneratorSourceConfig {
        GeneratorSourceConfig {
            vehicles: 60,
            duration_s: 600.0,
            ..config()
        }
    }

    #[test]
    fn congestion_is_deterministic_with_a_seed_and_off_gives_the_fleet_without_it() {
        let g = graph();
        let (a, truth_a) = generate(&g, &rush_config());
        let (b, truth_b) = generate(&g, &rush_config());
        assert_eq!(a, b);
        assert_eq!(truth_a, truth_b);
        let other_seed = GeneratorSourceConfig {
            seed: 10,
            ..rush_config()
        };
        assert_ne!(generate(&g, &other_seed).1, truth_a);
        // Off, the vehicles start where they would with it (the model draws nothing from
        // their random streams) and then drive faster.
        let off = GeneratorSourceConfig {
            congestion: CongestionConfig::off(),
            ..rush_config()
        };
        let (_, truth_off) = generate(&g, &off);
        assert_eq!(truth_off[0].segment_id, truth_a[0].segment_id);
        assert_eq!(truth_off[0].offset_m, truth_a[0].offset_m);
        let mean = |t: &[TruthPoint]| t.iter().map(|p| p.speed_mps).sum::<f64>() / t.len() as f64;
        assert!(mean(&truth_off) > 1.2 * mean(&truth_a));
    }

    #[test]
    fn congestion_slows_a_measurable_share_of_traversals() {
        let g = graph();
        let (_, congested) = generate(&g, &rush_config());
        let (slow, all) = slow_traversals(&g, &congested);
        let share = slow as f64 / all as f64;
        // Defaults: a fifth of the links are bottlenecks and every junction has a queue,
        // both growing into the rush hour of the run's last half.
        assert!(
            share >= 0.25,
            "{slow} of {all} traversals slow with congestion"
        );
        let off = GeneratorSourceConfig {
            congestion: CongestionConfig::off(),
            ..rush_config()
        };
        let (_, free) = generate(&g, &off);
        let (slow_free, all_free) = slow_traversals(&g, &free);
        // N(0.85, 0.1) drivers alone are under 60 % of the limit once in a hundred or so.
        assert!(
            (slow_free as f64) < 0.03 * all_free as f64,
            "{slow_free} of {all_free} slow without congestion"
        );
        // The rush hour: the run's last third is slower than its first.
        let third_ms = (rush_config().duration_s * 1000.0 / 3.0) as i64;
        let early: Vec<TruthPoint> = congested
            .iter()
            .filter(|t| t.ts_ms < DEFAULT_START_MS + third_ms)
            .cloned()
            .collect();
        let late: Vec<TruthPoint> = congested
            .iter()
            .filter(|t| t.ts_ms >= DEFAULT_START_MS + 2 * third_ms)
            .cloned()
            .collect();
        let (slow_early, all_early) = slow_traversals(&g, &early);
        let (slow_late, all_late) = slow_traversals(&g, &late);
        assert!(
            slow_late as f64 / all_late as f64 > 1.5 * slow_early as f64 / all_early as f64,
            "early {slow_early}/{all_early}, late {slow_late}/{all_late}"
        );
    }

    #[test]
    fn truth_speeds_are_the_speeds_driven() {
        let g = graph();
        let (_, truth) = generate(
            &g,
            &GeneratorSourceConfig {
                // At the peak throughout, so that the speeds do not move between samples.
                congestion: CongestionConfig {
                    off_peak_level: 1.0,
                    ..CongestionConfig::default()
                },
                ..rush_config()
            },
        );
        let mut by_vehicle: HashMap<&str, Vec<&TruthPoint>> = HashMap::new();
        for t in &truth {
            by_vehicle.entry(&t.vehicle_id).or_default().push(t);
        }
        let mut checked = 0;
        for points in by_vehicle.values() {
            for w in points.windows(2) {
                let (a, b) = (w[0], w[1]);
                if a.segment_id != b.segment_id {
                    continue;
                }
                // Within a segment a vehicle slows down at most once (into the queue), so
                // the distance it covers lies between what its speeds at both ends give.
                let dt_s = (b.ts_ms - a.ts_ms) as f64 / 1000.0;
                let (lo, hi) = (a.speed_mps.min(b.speed_mps), a.speed_mps.max(b.speed_mps));
                let moved_m = b.offset_m - a.offset_m;
                assert!(
                    moved_m >= lo * dt_s - 1e-6 && moved_m <= hi * dt_s + 1e-6,
                    "{} moved {moved_m:.2} m in {dt_s} s at {:.2}..{:.2} m/s",
                    a.vehicle_id,
                    a.speed_mps,
                    b.speed_mps
                );
                checked += 1;
            }
        }
        assert!(checked > 1_000, "{checked} pairs checked");
    }

    #[test]
    fn zero_noise_puts_probes_on_the_road() {
        let (probes, truth) = generate(
            &graph(),
            &GeneratorSourceConfig {
                noise_m: 0.0,
                ..config()
            },
        );
        for (p, t) in probes.iter().zip(&truth) {
            assert!(haversine_m(p.lat, p.lon, t.lat, t.lon) < 0.01);
        }
    }

    #[test]
    fn trip_churn_replaces_vehicles_with_new_ids_and_keeps_the_fleet_size() {
        let churning = GeneratorSourceConfig {
            trip_s: Some(20.0),
            ..config()
        };
        let g = graph();
        let (a, _) = generate(&g, &churning);
        let (b, _) = generate(&g, &churning);
        assert_eq!(a, b);
        // Every tick still reports one probe per fleet slot.
        assert_eq!(a.len(), 30 * 60);
        let mut span_ms: HashMap<&str, (i64, i64)> = HashMap::new();
        for p in &a {
            let span = span_ms.entry(&p.vehicle_id).or_insert((p.ts_ms, p.ts_ms));
            span.0 = span.0.min(p.ts_ms);
            span.1 = span.1.max(p.ts_ms);
        }
        // 120 s of trips of 10..30 s over 30 slots: each slot sees several vehicles.
        assert!(span_ms.len() >= 30 * 4, "{} distinct ids", span_ms.len());
        let per_tick: std::collections::HashSet<&str> = a
            .iter()
            .filter(|p| p.ts_ms < DEFAULT_START_MS + 2_000)
            .map(|p| p.vehicle_id.as_str())
            .collect();
        assert_eq!(per_tick.len(), 30, "one vehicle per slot at any moment");
        // The fleet's count of ids (the `pipeline_generator_vehicles_total` metric) is exact.
        let mut fleet = Fleet::new(g.clone(), churning.clone());
        while fleet.next_tick().is_some() {}
        assert_eq!(fleet.vehicle_ids(), span_ms.len() as u64);
        // No trip outlasts 1.5 × trip_s (plus the interval that ends it).
        let longest_ms = span_ms.values().map(|(lo, hi)| hi - lo).max().unwrap_or(0);
        assert!(longest_ms <= 30_000 + 2_000, "longest trip {longest_ms} ms");
        // Without churn the fleet is the same 30 vehicles throughout.
        let (steady, _) = generate(&g, &config());
        let ids: std::collections::HashSet<&str> =
            steady.iter().map(|p| p.vehicle_id.as_str()).collect();
        assert!(
            span_ms.len() >= 4 * ids.len(),
            "{} ids with churn, {} without",
            span_ms.len(),
            ids.len()
        );
    }

    #[test]
    fn faults_are_injected_deterministically_and_late_probes_are_delivered() {
        let faulty = GeneratorSourceConfig {
            fault_rate: 0.2,
            ..config()
        };
        let (clean, truth) = generate(&graph(), &config());
        let (a, _) = generate(&graph(), &faulty);
        let (b, _) = generate(&graph(), &faulty);
        assert_eq!(a, b);
        assert_eq!(truth.len(), clean.len());
        let null_island = a.iter().filter(|p| p.lat == 0.0 && p.lon == 0.0).count();
        let out_of_order = a.windows(2).filter(|w| w[1].ts_ms < w[0].ts_ms).count();
        assert!(null_island > 0 && out_of_order > 0);
        // Duplicates add probes, (0,0) and outliers replace them, late ones arrive later:
        // nothing genuine is lost.
        assert!(a.len() > clean.len());
    }
}
