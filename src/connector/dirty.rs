//! Dirty data for robustness tests (`pipeline generate --dirty FRACTION`): corrupts a share of
//! generated probes with faults seen in real feeds, each kind switchable, from one seed, and
//! writes them so that every fault reaches the decoders and stages as itself (an invalid
//! UTF-8 id as bytes in a Binary column or a payload, a millisecond value in a seconds
//! column, …). It counts what it injected, so tests can find each kind again among the
//! drop reasons.
//!
//! Where each kind is expected to end up (with the default clean settings):
//!
//! | kind | reaches | counted as |
//! |---|---|---|
//! | `nan` | clean | `invalid_coordinate` (exact) |
//! | `swapped` | clean, assign | `teleport`, or unmatched `no_candidate` if it became an anchor |
//! | `ms_as_s` | Parquet reader (`timestamp_unit = "s"`, column `ts_s`) | `bad_timestamp` (exact) |
//! | `year_1970` | clean | `stale_timestamp` (exact) |
//! | `year_2099` | clean | `future_timestamp` (exact) |
//! | `duplicate` | clean | `duplicate` (exact: the extra copy) |
//! | `out_of_order` | clean | `late` (delayed past the reorder window) |
//! | `teleport` | clean, assign | `teleport`, or unmatched `no_candidate` |
//! | `oversized` | every decoder | `too_large` (exact) |
//! | `invalid_utf8` | Parquet reader (Binary column), JSON/protobuf payloads | `invalid_utf8` (Parquet), `undecodable` (payloads) |

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::generator::WriteError;
use crate::record::{proto, ArrowRecord, Encoding, Probe};

/// One kind of corruption. The set is closed; `--dirty-kinds` and `dirty_kinds` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirtyKind {
    /// lat, lon or both NaN.
    Nan,
    /// lat and lon swapped.
    Swapped,
    /// Milliseconds written where the file holds seconds (column `ts_s`).
    MsAsS,
    /// A timestamp somewhere in 1970.
    Year1970,
    /// A timestamp somewhere in 2099.
    Year2099,
    /// An exact second copy of the probe, right after it.
    Duplicate,
    /// A burst of 3 to 6 consecutive probes of one vehicle delivered well after later ones.
    OutOfOrder,
    /// The position moved 2 to 20 km away.
    Teleport,
    /// A record of 1 MiB: the vehicle id padded to [`OVERSIZED_BYTES`].
    Oversized,
    /// A vehicle id that is not valid UTF-8.
    InvalidUtf8,
}

/// Size of an `oversized` record's vehicle id: 1 MiB.
pub const OVERSIZED_BYTES: usize = 1 << 20;

/// At most this many `oversized` records per run: each holds 1 MiB in memory until written,
/// so a large run at a high fraction would otherwise need gigabytes. Past the budget the
/// probe gets another enabled kind (or stays clean if `oversized` is the only one).
pub const OVERSIZED_BUDGET: u64 = 64;

impl DirtyKind {
    pub const ALL: [DirtyKind; 10] = [
        DirtyKind::Nan,
        DirtyKind::Swapped,
        DirtyKind::MsAsS,
        DirtyKind::Year1970,
        DirtyKind::Year2099,
        DirtyKind::Duplicate,
        DirtyKind::OutOfOrder,
        DirtyKind::Teleport,
        DirtyKind::Oversized,
        DirtyKind::InvalidUtf8,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DirtyKind::Nan => "nan",
            DirtyKind::Swapped => "swapped",
            DirtyKind::MsAsS => "ms_as_s",
            DirtyKind::Year1970 => "year_1970",
            DirtyKind::Year2099 => "year_2099",
            DirtyKind::Duplicate => "duplicate",
            DirtyKind::OutOfOrder => "out_of_order",
            DirtyKind::Teleport => "teleport",
            DirtyKind::Oversized => "oversized",
            DirtyKind::InvalidUtf8 => "invalid_utf8",
        }
    }

    /// Whether the kind means something for an in-process source (the generator source),
    /// whose probes reach the clean stage without a decoder: `ms_as_s` and `invalid_utf8`
    /// cannot exist in a [`Probe`], and `oversized` is a decoder's limit to enforce.
    pub fn in_process(self) -> bool {
        !matches!(
            self,
            DirtyKind::MsAsS | DirtyKind::InvalidUtf8 | DirtyKind::Oversized
        )
    }
}

impl fmt::Display for DirtyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dirty kind `{0}` (known: nan, swapped, ms_as_s, year_1970, year_2099, duplicate, out_of_order, teleport, oversized, invalid_utf8)")]
pub struct UnknownKind(pub String);

impl FromStr for DirtyKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DirtyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// What to corrupt and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DirtyConfig {
    /// Share of the generated probes that get a fault, in [0, 1].
    pub fraction: f64,
    /// Enabled kinds; a corrupted probe gets one of them, uniformly.
    pub kinds: Vec<DirtyKind>,
    pub seed: u64,
    /// The sampling interval, which sets how far a burst must be delayed to be late.
    pub interval_ms: i64,
    /// Event time after which the input ends: no burst starts that could not be overtaken
    /// by later probes of its vehicle before then.
    pub end_ms: Option<i64>,
}

/// How many probes got each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyCounts([u64; DirtyKind::ALL.len()]);

impl DirtyCounts {
    pub fn get(&self, kind: DirtyKind) -> u64 {
        self.0[kind as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    fn add(&mut self, kind: DirtyKind) {
        self.0[kind as usize] += 1;
    }
}

impl fmt::Display for DirtyCounts {
    /// `nan=3 swapped=1 …`, every kind in [`DirtyKind::ALL`] order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = DirtyKind::ALL
            .iter()
            .map(|k| format!("{k}={}", self.get(*k)))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// A probe as it will be written: possibly with an id that is not UTF-8, or a timestamp in
/// the wrong unit, neither of which a [`Probe`] can hold.
#[derive(Debug, Clone, PartialEq)]
pub struct DirtyRow {
    pub probe: Probe,
    /// The vehicle id's bytes when they are not valid UTF-8 (`probe.vehicle_id` is then the
    /// id the bytes were made from).
    pub raw_vehicle_id: Option<Vec<u8>>,
    /// The seconds column of this row holds milliseconds.
    pub ts_in_ms: bool,
}

impl From<Probe> for DirtyRow {
    fn from(probe: Probe) -> Self {
        DirtyRow::clean(probe)
    }
}

impl DirtyRow {
    fn clean(probe: Probe) -> Self {
        Self {
            probe,
            raw_vehicle_id: None,
            ts_in_ms: false,
        }
    }

    /// The vehicle id as written.
    pub fn vehicle_id_bytes(&self) -> &[u8] {
        self.raw_vehicle_id
            .as_deref()
            .unwrap_or(self.probe.vehicle_id.as_bytes())
    }

    /// The timestamp as the seconds column holds it.
    pub fn ts_s(&self) -> f64 {
        if self.ts_in_ms {
            self.probe.ts_ms as f64
        } else {
            self.probe.ts_ms as f64 / 1000.0
        }
    }

    /// The row as a stream payload. An invalid UTF-8 id is written as raw bytes inside the
    /// JSON string or the protobuf string field, exactly as a broken producer would.
    pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
        let Some(raw) = &self.raw_vehicle_id else {
            return crate::record::WireRecord::encode(&self.probe, encoding);
        };
        let without_id = Probe {
            vehicle_id: String::new(),
            ..self.probe.clone()
        };
        match encoding {
            Encoding::Json => {
                let json = serde_json::to_vec(&without_id).unwrap_or_default();
                let marker = br#""vehicle_id":""#;
                match json.windows(marker.len()).position(|w| w == marker) {
                    Some(at) => {
                        let cut = at + marker.len();
                        let mut out = Vec::with_capacity(json.len() + raw.len());
                        out.extend_from_slice(&json[..cut]);
                        out.extend_from_slice(raw);
                        out.extend_from_slice(&json[cut..]);
                        out
                    }
                    None => json,
                }
            }
            Encoding::Protobuf => {
                // proto3 leaves the empty id out; field 1 goes first, as bytes.
                let mut out = Vec::with_capacity(raw.len() + 48);
                prost::encoding::encode_key(
                    1,
                    prost::encoding::WireType::LengthDelimited,
                    &mut out,
                );
                prost::encoding::encode_varint(raw.len() as u64, &mut out);
                out.extend_from_slice(raw);
                proto::Probe::from(without_id).encode(&mut out).ok();
                out
            }
        }
    }
}

/// Probes per out-of-order burst, and their mean.
const BURST_LEN: std::ops::RangeInclusive<u32> = 3..=6;
const MEAN_BURST_LEN: f64 = 4.5;

/// 2099-01-01T00:00:00Z in epoch ms.
const YEAR_2099_MS: i64 = 4_070_908_800_000;
const YEAR_MS: i64 = 365 * 86_400_000;

/// Corrupts a time-ordered stream of probes, batch by batch, so it works for a whole file
/// and for a source alike. Delayed bursts are delivered once the stream passes their due
/// time, or at [`Corruptor::finish`].
pub struct Corruptor {
    config: DirtyConfig,
    rng: ChaCha8Rng,
    counts: DirtyCounts,
    /// Delayed rows by (due ts_ms, sequence).
    delayed: BTreeMap<(i64, u64), DirtyRow>,
    next_seq: u64,
    /// Vehicles in a burst: (probes still to delay, due ts_ms of the burst).
    bursts: HashMap<String, (u32, i64)>,
}

impl Corruptor {
    pub fn new(config: DirtyConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        // A stream of its own, so the clean probes do not change with the dirt.
        rng.set_stream(u64::MAX - 1);
        Self {
            config,
            rng,
            counts: DirtyCounts::default(),
            delayed: BTreeMap::new(),
            next_seq: 0,
            bursts: HashMap::new(),
        }
    }

    pub fn counts(&self) -> &DirtyCounts {
        &self.counts
    }

    /// Corrupts `probes` (in time order) into `out`, with the delayed rows that fall due.
    pub fn push(&mut self, probes: Vec<Probe>, out: &mut Vec<DirtyRow>) {
        for probe in probes {
            self.deliver_due(probe.ts_ms, out);
            self.corrupt(probe, out);
        }
    }

    /// Delivers every delayed row (end of input).
    pub fn finish(&mut self, out: &mut Vec<DirtyRow>) {
        self.deliver_due(i64::MAX, out);
    }

    fn deliver_due(&mut self, now_ms: i64, out: &mut Vec<DirtyRow>) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            out.push(entry.remove());
        }
    }

    fn delay(&mut self, due_ms: i64, row: DirtyRow) {
        self.delayed.insert((due_ms, self.next_seq), row);
        self.next_seq += 1;
    }

    fn corrupt(&mut self, probe: Probe, out: &mut Vec<DirtyRow>) {
        if let Some((left, due_ms)) = self.bursts.get_mut(&probe.vehicle_id) {
            let due_ms = *due_ms;
            *left -= 1;
            if *left == 0 {
                self.bursts.remove(&probe.vehicle_id);
            }
            self.counts.add(DirtyKind::OutOfOrder);
            self.delay(due_ms, DirtyRow::clean(probe));
            return;
        }
        if self.config.kinds.is_empty() || !self.rng.random_bool(self.selection_probability()) {
            out.push(DirtyRow::clean(probe));
            return;
        }
        let burst = self.burst_plan(probe.ts_ms);
        let available: Vec<DirtyKind> = self
            .config
            .kinds
            .iter()
            .copied()
            .filter(|k| match k {
                DirtyKind::Oversized => self.counts.get(DirtyKind::Oversized) < OVERSIZED_BUDGET,
                DirtyKind::OutOfOrder => burst.is_some(),
                _ => true,
            })
            .collect();
        if available.is_empty() {
            out.push(DirtyRow::clean(probe));
            return;
        }
        let kind = available[self.rng.random_range(0..available.len())];
        self.counts.add(kind);
        let mut row = DirtyRow::clean(probe);
        let p = &mut row.probe;
        match kind {
            DirtyKind::Nan => match self.rng.random_range(0..3u8) {
                0 => p.lat = f64::NAN,
                1 => p.lon = f64::NAN,
                _ => (p.lat, p.lon) = (f64::NAN, f64::NAN),
            },
            DirtyKind::Swapped => (p.lat, p.lon) = (p.lon, p.lat),
            DirtyKind::MsAsS => row.ts_in_ms = true,
            DirtyKind::Year1970 => p.ts_ms = self.rng.random_range(0..YEAR_MS),
            DirtyKind::Year2099 => p.ts_ms = YEAR_2099_MS + self.rng.random_range(0..YEAR_MS),
            DirtyKind::Duplicate => out.push(row.clone()),
            DirtyKind::OutOfOrder => {
                if let Some((len, due_ms)) = burst {
                    if len > 1 {
                        self.bursts.insert(p.vehicle_id.clone(), (len - 1, due_ms));
                    }
                    self.delay(due_ms, row);
                    return;
                }
            }
            DirtyKind::Teleport => {
                let distance_m = self.rng.random_range(2_000.0..20_000.0);
                let bearing = self.rng.random_range(0.0..std::f64::consts::TAU);
                let deg_per_m = 1.0 / crate::geo::EARTH_RADIUS_M.to_radians();
                p.lat += distance_m * bearing.cos() * deg_per_m;
                p.lon +=
                    distance_m * bearing.sin() * deg_per_m / p.lat.to_radians().cos().max(0.01);
            }
            DirtyKind::Oversized => {
                let mut id = std::mem::take(&mut p.vehicle_id);
                id.push('-');
                let pad = OVERSIZED_BYTES.saturating_sub(id.len());
                id.extend(std::iter::repeat_n('x', pad));
                p.vehicle_id = id;
            }
            DirtyKind::InvalidUtf8 => {
                let mut raw = p.vehicle_id.as_bytes().to_vec();
                // A stray byte, a truncated sequence, an overlong encoding, a lone surrogate.
                let bad: &[u8] = match self.rng.random_range(0..4u8) {
                    0 => b"\xff",
                    1 => b"\xc3",
                    2 => b"\xc0\xaf",
                    _ => b"\xed\xa0\x80",
                };
                raw.extend_from_slice(bad);
                row.raw_vehicle_id = Some(raw);
            }
        }
        out.push(row);
    }

    /// The chance that a probe starts a fault: `fraction`, scaled down when bursts are on
    /// (one draw delays [`MEAN_BURST_LEN`] probes), so that about `fraction` of all probes
    /// end up touched whatever the kinds.
    fn selection_probability(&self) -> f64 {
        let kinds = self.config.kinds.len() as f64;
        let touched_per_draw = if self.config.kinds.contains(&DirtyKind::OutOfOrder) {
            (kinds - 1.0 + MEAN_BURST_LEN) / kinds
        } else {
            1.0
        };
        (self.config.fraction / touched_per_draw).clamp(0.0, 1.0)
    }

    /// A burst starting at `ts_ms`: its length and due time, or `None` if the input ends
    /// before later probes of the vehicle could overtake it (then it would not be late).
    fn burst_plan(&mut self, ts_ms: i64) -> Option<(u32, i64)> {
        let interval_ms = self.config.interval_ms.max(1);
        let len: u32 = self.rng.random_range(BURST_LEN);
        // Past the burst, three more intervals and 10 s: beyond any sane reorder window.
        let delay_ms =
            i64::from(len + 3) * interval_ms + 10_000 + self.rng.random_range(0..30_000i64);
        let due_ms = ts_ms.saturating_add(delay_ms);
        match self.config.end_ms {
            Some(end_ms) if due_ms.saturating_add(2 * interval_ms) > end_ms => None,
            _ => Some((len, due_ms)),
        }
    }
}

/// Corrupts a whole generated run (probes in time order).
pub fn corrupt_all(probes: Vec<Probe>, config: DirtyConfig) -> (Vec<DirtyRow>, DirtyCounts) {
    let mut corruptor = Corruptor::new(config);
    let mut rows = Vec::with_capacity(probes.len());
    corruptor.push(probes, &mut rows);
    corruptor.finish(&mut rows);
    (rows, corruptor.counts)
}

/// How dirty rows are laid out in Parquet so each fault survives the file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirtyLayout {
    /// `vehicle_id` as Binary, so ids that are not UTF-8 can be stored at all.
    pub binary_vehicle_id: bool,
    /// An extra Float64 column `ts_s` of epoch seconds, where `ms_as_s` rows hold ms.
    pub seconds_column: bool,
}

impl DirtyLayout {
    /// The layout the enabled kinds need.
    pub fn for_kinds(kinds: &[DirtyKind]) -> Self {
        Self {
            binary_vehicle_id: kinds.contains(&DirtyKind::InvalidUtf8),
            seconds_column: kinds.contains(&DirtyKind::MsAsS),
        }
    }
}

/// The name of the seconds column (see [`DirtyLayout::seconds_column`]).
pub const SECONDS_COLUMN: &str = "ts_s";

/// Dirty rows as one Arrow batch: the `Probe` schema, changed as `layout` says.
pub fn to_record_batch(rows: &[DirtyRow], layout: DirtyLayout) -> Result<RecordBatch, WriteError> {
    let probes: Vec<Probe> = rows
        .iter()
        .map(|r| Probe {
            // The id is replaced below when the column is Binary; don't copy 1 MiB twice.
            vehicle_id: if layout.binary_vehicle_id {
                String::new()
            } else {
                r.probe.vehicle_id.clone()
            },
            ..r.probe.clone()
        })
        .collect();
    let base = Probe::to_record_batch(&probes)?;
    let schema = base.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = base.columns().to_vec();
    if layout.binary_vehicle_id {
        if let Some(i) = fields.iter().position(|f| f.name() == "vehicle_id") {
            fields[i] = Field::new("vehicle_id", DataType::Binary, false);
            columns[i] = Arc::new(BinaryArray::from_iter_values(
                rows.iter().map(|r| r.vehicle_id_bytes()),
            ));
        }
    }
    if layout.seconds_column {
        fields.push(Field::new(SECONDS_COLUMN, DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.ts_s()),
        )));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Writes dirty rows to one zstd Parquet file.
pub fn write_parquet(
    rows: &[DirtyRow],
    layout: DirtyLayout,
    path: &Path,
) -> Result<(), WriteError> {
    let batch = to_record_batch(rows, layout)?;
    let file = std::fs::File::create(path)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// Writes dirty rows as NDJSON: one JSON payload per line ([`DirtyRow::encode`]), raw bytes
/// and all, as a stream source would receive them. `ms_as_s` does not exist in JSON (it
/// carries `ts_ms` only); such rows are written with their true timestamp.
pub fn write_ndjson(rows: &[DirtyRow], path: &Path) -> Result<(), WriteError> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for row in rows {
        out.write_all(&row.encode(Encoding::Json))?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(vehicles: u32, ticks: i64) -> Vec<Probe> {
        let mut out = Vec::new();
        for t in 0..ticks {
            for v in 0..vehicles {
                let ts_ms = 1_700_000_000_000 + t * 1000 + i64::from(v);
                let lat = 60.17 + f64::from(v) * 1e-4 + t as f64 * 1e-5;
                out.push(Probe::new(format!("veh-{v:03}"), ts_ms, lat, 24.94));
            }
        }
        out
    }

    fn config(kinds: &[DirtyKind]) -> DirtyConfig {
        DirtyConfig {
            fraction: 0.2,
            kinds: kinds.to_vec(),
            seed: 7,
            interval_ms: 1000,
            end_ms: Some(1_700_000_000_000 + 600_000),
        }
    }

    #[test]
    fn same_seed_gives_the_same_dirt() {
        let all = DirtyKind::ALL;
        let (a, ca) = corrupt_all(probes(10, 600), config(&all));
        let (b, cb) = corrupt_all(probes(10, 600), config(&all));
        assert_eq!(ca, cb);
        assert_eq!(a.len(), b.len());
        // NaN != NaN, so compare the written bytes of each row instead.
        let key = |r: &DirtyRow| (r.encode(Encoding::Protobuf), r.ts_in_ms);
        assert!(a.iter().map(key).eq(b.iter().map(key)));
        for kind in all {
            assert!(ca.get(kind) > 0, "{kind} never injected: {ca}");
        }
    }

    #[test]
    fn each_kind_alone_corrupts_about_the_fraction_and_nothing_else() {
        let clean = probes(10, 600);
        for kind in DirtyKind::ALL {
            let (rows, counts) = corrupt_all(clean.clone(), config(&[kind]));
            assert_eq!(counts.total(), counts.get(kind), "{kind}: {counts}");
            let n = counts.get(kind) as f64 / clean.len() as f64;
            let expected = match kind {
                DirtyKind::Oversized => OVERSIZED_BUDGET as f64 / clean.len() as f64,
                // Probes inside a burst are not drawn for another one.
                DirtyKind::OutOfOrder => 0.2 / (1.0 + 0.2 * 3.5 / 4.5),
                _ => 0.2,
            };
            assert!(
                (n - expected).abs() < 0.05,
                "{kind}: {n} of the probes, expected about {expected}"
            );
            let extra = if kind == DirtyKind::Duplicate {
                counts.get(kind) as usize
            } else {
                0
            };
            assert_eq!(rows.len(), clean.len() + extra, "{kind}");
        }
    }

    #[test]
    fn out_of_order_bursts_arrive_after_later_probes_of_their_vehicle() {
        let cfg = DirtyConfig {
            end_ms: Some(1_700_000_000_000 + 300_000),
            ..config(&[DirtyKind::OutOfOrder])
        };
        let (rows, counts) = corrupt_all(probes(5, 300), cfg);
        let mut last: HashMap<&str, i64> = HashMap::new();
        let mut behind = 0;
        for r in &rows {
            let newest = last
                .entry(r.probe.vehicle_id.as_str())
                .or_insert(r.probe.ts_ms);
            if r.probe.ts_ms < *newest - 10_000 {
                behind += 1;
            }
            *newest = (*newest).max(r.probe.ts_ms);
        }
        assert_eq!(behind, counts.get(DirtyKind::OutOfOrder));
    }

    #[test]
    fn invalid_utf8_rows_are_invalid_in_every_encoding() {
        let (rows, counts) = corrupt_all(probes(5, 100), config(&[DirtyKind::InvalidUtf8]));
        let bad: Vec<&DirtyRow> = rows.iter().filter(|r| r.raw_vehicle_id.is_some()).collect();
        assert_eq!(bad.len() as u64, counts.get(DirtyKind::InvalidUtf8));
        for r in bad {
            assert!(std::str::from_utf8(r.vehicle_id_bytes()).is_err());
            for encoding in [Encoding::Json, Encoding::Protobuf] {
                let payload = r.encode(encoding);
                assert!(
                    <Probe as crate::record::WireRecord>::decode(&payload, encoding).is_err(),
                    "{encoding:?} decoded an invalid id"
                );
            }
        }
    }

    #[test]
    fn kind_names_round_trip_and_unknown_ones_are_refused() {
        for kind in DirtyKind::ALL {
            assert_eq!(kind.as_str().parse::<DirtyKind>(), Ok(kind));
        }
        assert!("nans".parse::<DirtyKind>().is_err());
    }
}
