//! Column mapping: checks a file's schema against the configured [`ColumnMapping`] (naming
//! the file and column on a mismatch) and turns decoded Arrow batches into [`Probe`]s,
//! dropping and counting rows whose required fields are null.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema, TimeUnit};

use super::config::{ColumnMapping, TimestampUnit};
use super::error::ParquetError;
use crate::record::Probe;

/// A half-open event-time range `[start_ms, end_ms)`; `None` bounds are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl TimeRange {
    pub fn contains(&self, ts_ms: i64) -> bool {
        self.start_ms.is_none_or(|s| ts_ms >= s) && self.end_ms.is_none_or(|e| ts_ms < e)
    }

    /// Whether a row group with timestamps within `[min_ms, max_ms]` may hold rows in range.
    pub fn overlaps(&self, min_ms: i64, max_ms: i64) -> bool {
        self.start_ms.is_none_or(|s| max_ms >= s) && self.end_ms.is_none_or(|e| min_ms < e)
    }

    pub fn is_unbounded(&self) -> bool {
        self.start_ms.is_none() && self.end_ms.is_none()
    }
}

/// Probes decoded from some rows, with what was dropped or filtered on the way.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Converted {
    pub probes: Vec<Probe>,
    /// Rows read from the file.
    pub rows: u64,
    /// Rows with a null vehicle id, timestamp, lat or lon.
    pub null_field: u64,
    /// Rows whose timestamp does not fit epoch milliseconds or years 1 to 9999.
    pub bad_timestamp: u64,
    /// Rows whose vehicle id is longer than the limit.
    pub too_large: u64,
    /// Rows whose vehicle id (from a Binary column) is not UTF-8.
    pub invalid_utf8: u64,
    /// Rows outside the configured time range (filtered, not an error).
    pub outside_range: u64,
}

impl Converted {
    pub fn append(&mut self, mut other: Converted) {
        self.probes.append(&mut other.probes);
        self.rows += other.rows;
        self.null_field += other.null_field;
        self.bad_timestamp += other.bad_timestamp;
        self.too_large += other.too_large;
        self.invalid_utf8 += other.invalid_utf8;
        self.outside_range += other.outside_range;
    }
}

/// A [`ColumnMapping`] checked against one file's schema.
#[derive(Debug, Clone)]
pub struct ResolvedMapping {
    columns: ColumnMapping,
    unit: TimestampUnit,
    /// Indices of the mapped columns among the file's top-level fields (for projection).
    pub root_indices: Vec<usize>,
    /// Rows with a longer vehicle id are dropped as `too_large`.
    max_vehicle_id_bytes: usize,
}

/// The earliest timestamp a row may carry: 0001-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = -62_135_596_800_000;
/// The latest timestamp a row may carry: 9999-12-31T23:59:59.999Z. Milliseconds read as
/// seconds (about 1.7e15 ms, year 55 000) fall beyond it.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

const INTEGER_TYPES: [DataType; 8] = [
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::UInt8,
    DataType::UInt16,
    DataType::UInt32,
    DataType::UInt64,
];

fn is_integer(t: &DataType) -> bool {
    INTEGER_TYPES.contains(t)
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float32 | DataType::Float64)
}

/// What a role accepts, as a predicate and the phrase an error shows.
fn accepts(role: &str, unit: TimestampUnit) -> (fn(&DataType) -> bool, &'static str) {
    match role {
        "vehicle_id" => (
            |t| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                    || is_binary(t)
                    || is_integer(t)
            },
            "a string, a binary or an integer",
        ),
        "timestamp" => match unit {
            TimestampUnit::Ms => (
                |t| {
                    matches!(
                        t,
                        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
                    )
                },
                "an integer (timestamp_unit = \"ms\")",
            ),
            TimestampUnit::S => (
                |t| {
                    matches!(
                        t,
                        DataType::Int32
                            | DataType::Int64
                            | DataType::UInt32
                            | DataType::UInt64
                            | DataType::Float64
                    )
                },
                "an integer or Float64 (timestamp_unit = \"s\")",
            ),
            TimestampUnit::Arrow => (
                |t| matches!(t, DataType::Timestamp(_, _)),
                "an Arrow timestamp (timestamp_unit = \"arrow\")",
            ),
        },
        "lat" | "lon" => (is_float, "a float"),
        _ => (|t| is_float(t) || is_integer(t), "a number"),
    }
}

impl ResolvedMapping {
    /// Checks that every mapped column exists with an accepted type.
    pub fn resolve(
        path: &Path,
        schema: &Schema,
        columns: &ColumnMapping,
        unit: TimestampUnit,
    ) -> Result<Self, ParquetError> {
        let mut root_indices = Vec::new();
        for (role, column) in columns.mapped() {
            let Some((index, field)) = schema.column_with_name(column) else {
                let available: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(ParquetError::MissingColumn {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                    role,
                    available: available.join(", "),
                });
            };
            let (ok, expected) = accepts(role, unit);
            if !ok(field.data_type()) {
                return Err(ParquetError::WrongType {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                    found: field.data_type().clone(),
                    expected,
                });
            }
            root_indices.push(index);
        }
        root_indices.sort_unstable();
        Ok(Self {
            columns: columns.clone(),
            unit,
            root_indices,
            max_vehicle_id_bytes: crate::record::limits::DEFAULT_MAX_VEHICLE_ID_BYTES,
        })
    }

    /// Drops rows whose vehicle id is longer than `bytes` as `too_large` (default
    /// [`DEFAULT_MAX_VEHICLE_ID_BYTES`](crate::record::limits::DEFAULT_MAX_VEHICLE_ID_BYTES)).
    pub fn with_max_vehicle_id_bytes(mut self, bytes: usize) -> Self {
        self.max_vehicle_id_bytes = bytes;
        self
    }

    pub fn timestamp_column(&self) -> &str {
        &self.columns.timestamp
    }

    /// Converts one decoded batch (holding at least the mapped columns) into probes.
    pub fn convert(&self, batch: &RecordBatch, range: TimeRange) -> Result<Converted, ArrowError> {
        let c = &self.columns;
        let vehicle = VehicleIds::new(column(batch, &c.vehicle_id)?, &c.vehicle_id)?;
        let ts_raw = column(batch, &c.timestamp)?;
        let ts_ms = timestamps_ms(ts_raw, self.unit)?;
        let lat = floats(column(batch, &c.lat)?, &c.lat)?;
        let lon = floats(column(batch, &c.lon)?, &c.lon)?;
        let optional = |name: &Option<String>| -> Result<Option<ArrayRef>, ArrowError> {
            name.as_ref()
                .map(|n| cast_to(column(batch, n)?, &DataType::Float32))
                .transpose()
        };
        let speed = optional(&c.speed_mps)?;
        let heading = optional(&c.heading_deg)?;
        let accuracy = optional(&c.accuracy_m)?;
        let f32_at = |a: &Option<ArrayRef>, i: usize| -> Option<f32> {
            let a = a.as_ref()?.as_primitive_opt::<Float32Type>()?;
            a.is_valid(i).then(|| a.value(i))
        };

        let mut out = Converted {
            rows: batch.num_rows() as u64,
            probes: Vec::with_capacity(batch.num_rows()),
            ..Converted::default()
        };
        for (i, ts) in ts_ms.iter().enumerate() {
            if vehicle.is_null(i) || ts_raw.is_null(i) || lat.is_null(i) || lon.is_null(i) {
                out.null_field += 1;
                continue;
            }
            let id = vehicle.bytes(i);
            if id.len() > self.max_vehicle_id_bytes {
                out.too_large += 1;
                continue;
            }
            let Ok(id) = std::str::from_utf8(id) else {
                out.invalid_utf8 += 1;
                continue;
            };
            let Some(ts) = ts.filter(|t| (MIN_TS_MS..=MAX_TS_MS).contains(t)) else {
                out.bad_timestamp += 1;
                continue;
            };
            if !range.contains(ts) {
                out.outside_range += 1;
                continue;
            }
            out.probes.push(Probe {
                vehicle_id: id.to_string(),
                ts_ms: ts,
                lat: lat.value(i),
                lon: lon.value(i),
                speed_mps: f32_at(&speed, i),
                heading_deg: f32_at(&heading, i),
                accuracy_m: f32_at(&accuracy, i),
            });
        }
        Ok(out)
    }
}

/// The vehicle-id column as strings or, for a Binary column, as bytes that may not be UTF-8.
enum VehicleIds {
    Utf8(arrow_array::StringArray),
    Binary(arrow_array::BinaryArray),
}

impl VehicleIds {
    fn new(array: &ArrayRef, name: &str) -> Result<Self, ArrowError> {
        if is_binary(array.data_type()) {
            let bytes = cast_to(array, &DataType::Binary)?;
            return bytes
                .as_binary_opt::<i32>()
                .cloned()
                .map(VehicleIds::Binary)
                .ok_or_else(|| cast_failed(name));
        }
        let strings = cast_to(array, &DataType::Utf8)?;
        strings
            .as_string_opt::<i32>()
            .cloned()
            .map(VehicleIds::Utf8)
            .ok_or_else(|| cast_failed(name))
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            VehicleIds::Utf8(a) => a.is_null(i),
            VehicleIds::Binary(a) => a.is_null(i),
        }
    }

    fn bytes(&self, i: usize) -> &[u8] {
        match self {
            VehicleIds::Utf8(a) => a.value(i).as_bytes(),
            VehicleIds::Binary(a) => a.value(i),
        }
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("column \"{name}\" was not decoded")))
}

fn cast_failed(name: &str) -> ArrowError {
    ArrowError::CastError(format!("column \"{name}\" could not be converted"))
}

fn cast_to(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == to {
        Ok(array.clone())
    } else {
        arrow_cast::cast(array, to)
    }
}

fn floats<'a>(
    array: &'a ArrayRef,
    name: &str,
) -> Result<std::borrow::Cow<'a, arrow_array::Float64Array>, ArrowError> {
    if let Some(a) = array.as_primitive_opt::<Float64Type>() {
        return Ok(std::borrow::Cow::Borrowed(a));
    }
    let cast = cast_to(array, &DataType::Float64)?;
    cast.as_primitive_opt::<Float64Type>()
        .cloned()
        .map(std::borrow::Cow::Owned)
        .ok_or_else(|| cast_failed(name))
}

/// Epoch milliseconds of every row: `None` for nulls and for values that do not fit.
/// Also used on row-group min/max statistics, so it must be monotonic in its input.
pub fn timestamps_ms(
    array: &ArrayRef,
    unit: TimestampUnit,
) -> Result<Vec<Option<i64>>, ArrowError> {
    let per_row = |f: &dyn Fn(usize) -> Option<i64>| -> Vec<Option<i64>> {
        (0..array.len())
            .map(|i| if array.is_null(i) { None } else { f(i) })
            .collect()
    };
    Ok(match (unit, array.data_type()) {
        (TimestampUnit::Arrow, DataType::Timestamp(time_unit, _)) => {
            // Casting a timestamp to Int64 yields its raw count of `time_unit`s.
            let raw = cast_to(array, &DataType::Int64)?;
            let values = raw
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| cast_failed("timestamp"))?;
            let to_ms: fn(i64) -> Option<i64> = match time_unit {
                TimeUnit::Second => |v| v.checked_mul(1000),
                TimeUnit::Millisecond => Some,
                TimeUnit::Microsecond => |v| Some(v.div_euclid(1000)),
                TimeUnit::Nanosecond => |v| Some(v.div_euclid(1_000_000)),
            };
            per_row(&|i| to_ms(values.value(i)))
        }
        (TimestampUnit::S, DataType::Float64 | DataType::Float32) => {
            let cast = cast_to(array, &DataType::Float64)?;
            let a = cast
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| cast_failed("timestamp"))?;
            per_row(&|i| seconds_f64_to_ms(a.value(i)))
        }
        (TimestampUnit::Ms | TimestampUnit::S, t) if is_integer(t) => {
            // A safe cast turns values that do not fit i64 (UInt64 above i64::MAX) into nulls.
            let cast = cast_to(array, &DataType::Int64)?;
            let a = cast
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| cast_failed("timestamp"))?;
            let scale = if unit == TimestampUnit::S { 1000 } else { 1 };
            per_row(&|i| {
                if a.is_null(i) {
                    None
                } else {
                    a.value(i).checked_mul(scale)
                }
            })
        }
        (_, other) => {
            return Err(ArrowError::CastError(format!(
                "timestamp column of type {other} does not fit timestamp_unit {unit:?}"
            )))
        }
    })
}

fn seconds_f64_to_ms(s: f64) -> Option<i64> {
    let ms = (s * 1000.0).round();
    // i64::MAX as f64 rounds up to 2^63, so compare with a strict bound.
    (ms.is_finite() && ms >= -(2f64.powi(63)) && ms < 2f64.powi(63)).then_some(ms as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, TimestampMicrosecondArray, UInt64Array};

    use super::*;

    #[test]
    fn microsecond_timestamps_floor_to_ms_even_before_1970() {
        let a: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_500), Some(-1), None])
                .with_timezone("Europe/Paris"),
        );
        assert_eq!(
            timestamps_ms(&a, TimestampUnit::Arrow).ok(),
            Some(vec![Some(1), Some(-1), None])
        );
    }

    #[test]
    fn seconds_scale_and_overflow_becomes_none() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![2, i64::MAX]));
        assert_eq!(
            timestamps_ms(&a, TimestampUnit::S).ok(),
            Some(vec![Some(2000), None])
        );
        let f: ArrayRef = Arc::new(Float64Array::from(vec![1.2345, f64::NAN]));
        assert_eq!(
            timestamps_ms(&f, TimestampUnit::S).ok(),
            Some(vec![Some(1235), None])
        );
    }

    #[test]
    fn uint64_above_i64_max_is_none_not_wrapped() {
        let a: ArrayRef = Arc::new(UInt64Array::from(vec![5, u64::MAX]));
        assert_eq!(
            timestamps_ms(&a, TimestampUnit::Ms).ok(),
            Some(vec![Some(5), None])
        );
    }

    #[test]
    fn time_range_is_half_open() {
        let r = TimeRange {
            start_ms: Some(10),
            end_ms: Some(20),
        };
        assert!(!r.contains(9) && r.contains(10) && r.contains(19) && !r.contains(20));
        assert!(r.overlaps(0, 10) && !r.overlaps(0, 9) && !r.overlaps(20, 30));
    }
}
