//! Arrow schemas of the records and conversions between rows and `RecordBatch`es.
//!
//! The schemas here are the Parquet form of every record; `schemas/arrow.json` is their
//! canonical description, and a test keeps the two equal.

use std::sync::Arc;

use arrow_array::{
    builder::{Float32Builder, Float64Builder, UInt64Builder},
    Array, ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::types::{MatchedPoint, Probe, SegmentObservation, SegmentSpeed};

#[derive(Debug, thiserror::Error)]
pub enum ArrowError {
    #[error("column `{column}` is missing")]
    MissingColumn { column: String },
    #[error("column `{column}` has type {found}, expected {expected}")]
    WrongType {
        column: String,
        found: DataType,
        expected: DataType,
    },
    #[error("column `{column}` has a null in row {row}, but it is required")]
    NullInRequired { column: String, row: usize },
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// A record with an Arrow schema: rows to columns and back.
pub trait ArrowRecord: Sized {
    fn schema() -> SchemaRef;
    fn to_record_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError>;
    /// Reads rows back from a batch with this record's own schema (column names and types).
    fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Self>, ArrowError>;
}

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

fn probe_fields() -> Vec<Field> {
    vec![
        field("vehicle_id", DataType::Utf8, false),
        field("ts_ms", DataType::Int64, false),
        field("lat", DataType::Float64, false),
        field("lon", DataType::Float64, false),
        field("speed_mps", DataType::Float32, true),
        field("heading_deg", DataType::Float32, true),
        field("accuracy_m", DataType::Float32, true),
    ]
}

fn probe_columns<'a>(rows: impl Iterator<Item = &'a Probe> + Clone) -> Vec<ArrayRef> {
    let opt_f32 = |get: fn(&Probe) -> Option<f32>| -> ArrayRef {
        let mut b = Float32Builder::new();
        for p in rows.clone() {
            b.append_option(get(p));
        }
        Arc::new(b.finish())
    };
    vec![
        Arc::new(StringArray::from_iter_values(
            rows.clone().map(|p| p.vehicle_id.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.clone().map(|p| p.ts_ms))),
        Arc::new(Float64Array::from_iter_values(rows.clone().map(|p| p.lat))),
        Arc::new(Float64Array::from_iter_values(rows.clone().map(|p| p.lon))),
        opt_f32(|p| p.speed_mps),
        opt_f32(|p| p.heading_deg),
        opt_f32(|p| p.accuracy_m),
    ]
}

/// Typed access to a batch's columns by name, with errors that name the column.
pub(crate) struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Self {
        Self { batch }
    }

    pub(crate) fn get<T: Array + 'static>(
        &self,
        name: &str,
        expected: DataType,
    ) -> Result<&'a T, ArrowError> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::MissingColumn {
                column: name.to_string(),
            })?;
        column
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| ArrowError::WrongType {
                column: name.to_string(),
                found: column.data_type().clone(),
                expected,
            })
    }

    /// A required column: errors on the first null.
    pub(crate) fn required<T: Array + 'static>(
        &self,
        name: &str,
        expected: DataType,
    ) -> Result<&'a T, ArrowError> {
        let array = self.get::<T>(name, expected)?;
        if array.null_count() > 0 {
            let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
            return Err(ArrowError::NullInRequired {
                column: name.to_string(),
                row,
            });
        }
        Ok(array)
    }
}

fn opt<T: Array>(array: &T, row: usize, value: impl FnOnce() -> f32) -> Option<f32> {
    array.is_valid(row).then(value)
}

fn probes_from(cols: &Columns<'_>) -> Result<Vec<Probe>, ArrowError> {
    let vehicle = cols.required::<StringArray>("vehicle_id", DataType::Utf8)?;
    let ts = cols.required::<Int64Array>("ts_ms", DataType::Int64)?;
    let lat = cols.required::<Float64Array>("lat", DataType::Float64)?;
    let lon = cols.required::<Float64Array>("lon", DataType::Float64)?;
    let speed = cols.get::<Float32Array>("speed_mps", DataType::Float32)?;
    let heading = cols.get::<Float32Array>("heading_deg", DataType::Float32)?;
    let accuracy = cols.get::<Float32Array>("accuracy_m", DataType::Float32)?;
    Ok((0..vehicle.len())
        .map(|i| Probe {
            vehicle_id: vehicle.value(i).to_string(),
            ts_ms: ts.value(i),
            lat: lat.value(i),
            lon: lon.value(i),
            speed_mps: opt(speed, i, || speed.value(i)),
            heading_deg: opt(heading, i, || heading.value(i)),
            accuracy_m: opt(accuracy, i, || accuracy.value(i)),
        })
        .collect())
}

impl ArrowRecord for Probe {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(probe_fields()))
    }

    fn to_record_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        Ok(RecordBatch::try_new(
            Self::schema(),
            probe_columns(rows.iter()),
        )?)
    }

    fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Self>, ArrowError> {
        probes_from(&Columns::new(batch))
    }
}

impl ArrowRecord for MatchedPoint {
    fn schema() -> SchemaRef {
        let mut fields = probe_fields();
        fields.extend([
            field("segment_id", DataType::UInt64, false),
            field("offset_m", DataType::Float64, false),
            field("snapped_lat", DataType::Float64, false),
            field("snapped_lon", DataType::Float64, false),
            field("distance_m", DataType::Float64, false),
        ]);
        Arc::new(Schema::new(fields))
    }

    fn to_record_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        let mut columns = probe_columns(rows.iter().map(|m| &m.probe));
        let f64s = |get: fn(&MatchedPoint) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(rows.iter().map(get)))
        };
        columns.extend([
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|m| m.segment_id),
            )) as ArrayRef,
            f64s(|m| m.offset_m),
            f64s(|m| m.snapped_lat),
            f64s(|m| m.snapped_lon),
            f64s(|m| m.distance_m),
        ]);
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }

    fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Self>, ArrowError> {
        let cols = Columns::new(batch);
        let probes = probes_from(&cols)?;
        let segment = cols.required::<UInt64Array>("segment_id", DataType::UInt64)?;
        let f64col = |name| cols.required::<Float64Array>(name, DataType::Float64);
        let (offset, slat, slon, dist) = (
            f64col("offset_m")?,
            f64col("snapped_lat")?,
            f64col("snapped_lon")?,
            f64col("distance_m")?,
        );
        Ok(probes
            .into_iter()
            .enumerate()
            .map(|(i, probe)| MatchedPoint {
                probe,
                segment_id: segment.value(i),
                offset_m: offset.value(i),
                snapped_lat: slat.value(i),
                snapped_lon: slon.value(i),
                distance_m: dist.value(i),
            })
            .collect())
    }
}

impl ArrowRecord for SegmentObservation {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("observation_id", DataType::UInt64, false),
            field("segment_id", DataType::UInt64, false),
            field("vehicle_id", DataType::Utf8, false),
            field("enter_ts_ms", DataType::Int64, false),
            field("exit_ts_ms", DataType::Int64, false),
            field("traversed_m", DataType::Float64, false),
            field("speed_mps", DataType::Float64, false),
            field("next_segment_id", DataType::UInt64, true),
            field("flags", DataType::UInt32, false),
        ]))
    }

    fn to_record_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        let mut next = UInt64Builder::new();
        for o in rows {
            next.append_option(o.next_segment_id);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|o| o.observation_id),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|o| o.segment_id),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|o| o.vehicle_id.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|o| o.enter_ts_ms),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|o| o.exit_ts_ms),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|o| o.traversed_m),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|o| o.speed_mps),
            )),
            Arc::new(next.finish()),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|o| o.flags))),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }

    fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Self>, ArrowError> {
        let cols = Columns::new(batch);
        let u64col = |name| cols.required::<UInt64Array>(name, DataType::UInt64);
        let i64col = |name| cols.required::<Int64Array>(name, DataType::Int64);
        let f64col = |name| cols.required::<Float64Array>(name, DataType::Float64);
        let (id, segment) = (u64col("observation_id")?, u64col("segment_id")?);
        let vehicle = cols.required::<StringArray>("vehicle_id", DataType::Utf8)?;
        let (enter, exit) = (i64col("enter_ts_ms")?, i64col("exit_ts_ms")?);
        let (traversed, speed) = (f64col("traversed_m")?, f64col("speed_mps")?);
        let next = cols.get::<UInt64Array>("next_segment_id", DataType::UInt64)?;
        let flags = cols.required::<UInt32Array>("flags", DataType::UInt32)?;
        Ok((0..batch.num_rows())
            .map(|i| SegmentObservation {
                observation_id: id.value(i),
                segment_id: segment.value(i),
                vehicle_id: vehicle.value(i).to_string(),
                enter_ts_ms: enter.value(i),
                exit_ts_ms: exit.value(i),
                traversed_m: traversed.value(i),
                speed_mps: speed.value(i),
                next_segment_id: next.is_valid(i).then(|| next.value(i)),
                flags: flags.value(i),
            })
            .collect())
    }
}

impl ArrowRecord for SegmentSpeed {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("segment_id", DataType::UInt64, false),
            field("window_start_ms", DataType::Int64, false),
            field("window_end_ms", DataType::Int64, false),
            field("estimator", DataType::Utf8, false),
            field("samples", DataType::UInt32, false),
            field("vehicles", DataType::UInt32, false),
            field("speed_mps", DataType::Float64, false),
            field("p15_speed_mps", DataType::Float64, true),
            field("p50_speed_mps", DataType::Float64, true),
            field("p85_speed_mps", DataType::Float64, true),
            field("travel_time_s", DataType::Float64, false),
            field("graph_version", DataType::UInt64, false),
            field("revision", DataType::UInt32, false),
        ]))
    }

    fn to_record_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        let opt_f64 = |get: fn(&SegmentSpeed) -> Option<f64>| -> ArrayRef {
            let mut b = Float64Builder::new();
            for s in rows {
                b.append_option(get(s));
            }
            Arc::new(b.finish())
        };
        let u32s = |get: fn(&SegmentSpeed) -> u32| -> ArrayRef {
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(get)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|s| s.segment_id),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|s| s.window_start_ms),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|s| s.window_end_ms),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|s| &*s.estimator),
            )),
            u32s(|s| s.samples),
            u32s(|s| s.vehicles),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|s| s.speed_mps),
            )),
            opt_f64(|s| s.p15_speed_mps),
            opt_f64(|s| s.p50_speed_mps),
            opt_f64(|s| s.p85_speed_mps),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|s| s.travel_time_s),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|s| s.graph_version),
            )),
            u32s(|s| s.revision),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }

    fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Self>, ArrowError> {
        let cols = Columns::new(batch);
        let u32col = |name| cols.required::<UInt32Array>(name, DataType::UInt32);
        let i64col = |name| cols.required::<Int64Array>(name, DataType::Int64);
        let f64col = |name| cols.required::<Float64Array>(name, DataType::Float64);
        let u64col = |name| cols.required::<UInt64Array>(name, DataType::UInt64);
        let segment = u64col("segment_id")?;
        let (start, end) = (i64col("window_start_ms")?, i64col("window_end_ms")?);
        let estimator = cols.required::<StringArray>("estimator", DataType::Utf8)?;
        let (samples, vehicles) = (u32col("samples")?, u32col("vehicles")?);
        let speed = f64col("speed_mps")?;
        let p15 = cols.get::<Float64Array>("p15_speed_mps", DataType::Float64)?;
        let p50 = cols.get::<Float64Array>("p50_speed_mps", DataType::Float64)?;
        let p85 = cols.get::<Float64Array>("p85_speed_mps", DataType::Float64)?;
        let travel = f64col("travel_time_s")?;
        let version = u64col("graph_version")?;
        let revision = u32col("revision")?;
        Ok((0..batch.num_rows())
            .map(|i| SegmentSpeed {
                segment_id: segment.value(i),
                window_start_ms: start.value(i),
                window_end_ms: end.value(i),
                estimator: estimator.value(i).to_owned().into(),
                samples: samples.value(i),
                vehicles: vehicles.value(i),
                speed_mps: speed.value(i),
                p15_speed_mps: p15.is_valid(i).then(|| p15.value(i)),
                p50_speed_mps: p50.is_valid(i).then(|| p50.value(i)),
                p85_speed_mps: p85.is_valid(i).then(|| p85.value(i)),
                travel_time_s: travel.value(i),
                graph_version: version.value(i),
                revision: revision.value(i),
            })
            .collect())
    }
}
