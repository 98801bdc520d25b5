//! Segment metadata as a Parquet table (zstd), so consumers can join speeds to geometry:
//! segment_id, osm_way_id, from/to node, length_m, highway, speed_limit_kmh, oneway and a
//! WKT `LINESTRING(lon lat, …)` geometry.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, StringBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::error::GraphError;
use super::road_graph::RoadGraph;

/// Rows per record batch (and so the granularity of memory use while exporting).
const BATCH_ROWS: usize = 65_536;

/// The Arrow schema of the exported table.
pub fn segments_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment_id", DataType::UInt64, false),
        Field::new("osm_way_id", DataType::Int64, false),
        Field::new("from_node_id", DataType::Int64, false),
        Field::new("to_node_id", DataType::Int64, false),
        Field::new("length_m", DataType::Float64, false),
        Field::new("highway", DataType::Utf8, false),
        Field::new("speed_limit_kmh", DataType::Float32, false),
        Field::new("oneway", DataType::Boolean, false),
        Field::new("geometry", DataType::Utf8, false),
    ]))
}

/// Writes every segment of `graph` to a Parquet file; returns the number of rows.
pub fn write_segments_parquet(
    graph: &RoadGraph,
    path: impl AsRef<Path>,
) -> Result<u64, GraphError> {
    let path = path.as_ref();
    let parquet_err = |e: parquet::errors::ParquetError| GraphError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let schema = segments_schema();
    let file = File::create(path).map_err(|e| GraphError::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(parquet_err)?;
    let indices: Vec<u32> = graph.indices().collect();
    for chunk in indices.chunks(BATCH_ROWS) {
        let batch = segments_batch(graph, chunk, &schema).map_err(|e| GraphError::Parquet {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        writer.write(&batch).map_err(parquet_err)?;
    }
    writer.close().map_err(parquet_err)?;
    Ok(graph.len() as u64)
}

fn segments_batch(
    graph: &RoadGraph,
    indices: &[u32],
    schema: &SchemaRef,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = indices.len();
    let mut segment_id = UInt64Builder::with_capacity(n);
    let mut osm_way_id = Int64Builder::with_capacity(n);
    let mut from_node_id = Int64Builder::with_capacity(n);
    let mut to_node_id = Int64Builder::with_capacity(n);
    let mut length_m = Float64Builder::with_capacity(n);
    let mut highway = StringBuilder::with_capacity(n, n * 12);
    let mut speed = Float32Builder::with_capacity(n);
    let mut oneway = BooleanBuilder::with_capacity(n);
    let mut geometry = StringBuilder::with_capacity(n, n * 64);
    let mut wkt = String::new();
    for &i in indices {
        let s = graph.segment(i);
        segment_id.append_value(s.segment_id);
        osm_way_id.append_value(s.osm_way_id);
        from_node_id.append_value(s.from_node_id);
        to_node_id.append_value(s.to_node_id);
        length_m.append_value(s.length_m);
        highway.append_value(s.road_class().as_str());
        speed.append_value(s.speed_limit_kmh);
        oneway.append_value(s.is_oneway());
        linestring_wkt(graph.geometry(i), &mut wkt);
        geometry.append_value(&wkt);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(segment_id.finish()),
        Arc::new(osm_way_id.finish()),
        Arc::new(from_node_id.finish()),
        Arc::new(to_node_id.finish()),
        Arc::new(length_m.finish()),
        Arc::new(highway.finish()),
        Arc::new(speed.finish()),
        Arc::new(oneway.finish()),
        Arc::new(geometry.finish()),
    ];
    RecordBatch::try_new(schema.clone(), columns)
}

/// `LINESTRING(lon lat, lon lat, …)` with 7 decimals (OSM's precision), into `out`.
///
/// ```
/// let mut wkt = String::new();
/// pipeline::graph::export::linestring_wkt(&[[43.7, 7.4], [43.71, 7.41]], &mut wkt);
/// assert_eq!(wkt, "LINESTRING(7.4000000 43.7000000, 7.4100000 43.7100000)");
/// ```
pub fn linestring_wkt(points: &[[f64; 2]], out: &mut String) {
    out.clear();
    out.push_str("LINESTRING(");
    for (k, [lat, lon]) in points.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{lon:.7} {lat:.7}");
    }
    out.push(')');
}
