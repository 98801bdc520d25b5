//! Parquet connector throughput: encode (sink, zstd) and decode (replay reader) in rows/s,
//! each next to a reference measured in the same run: the bare `parquet` crate writing and
//! reading the same Arrow data, so the ratio shows what mapping and record conversion cost.
//!
//! Run: `cargo bench --bench parquet_io` (env `BENCH_ROWS`, default 2 000 000).

use std::fs::File;
use std::time::Instant;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use pipeline::connector::parquet::{
    expand_paths, write_records, ParquetSinkConfig, ParquetSourceConfig, ProbeReader,
};
use pipeline::record::{ArrowRecord, Probe, RecordKind};
use pipeline::runtime::Records;
use pipeline::telemetry::metrics;

type BenchResult = Result<(), Box<dyn std::error::Error>>;

fn probes(n: usize) -> Vec<Probe> {
    (0..n)
        .map(|i| {
            let mut p = Probe::new(
                format!("vehicle-{:06}", i % 50_000),
                1_700_000_000_000 + (i as i64) * 20,
                48.85 + ((i * 7919) % 10_000) as f64 * 1e-5,
                2.35 + ((i * 104_729) % 10_000) as f64 * 1e-5,
            );
            p.speed_mps = Some((i % 40) as f32);
            p
        })
        .collect()
}

fn rate(rows: usize, seconds: f64) -> String {
    format!("{:>8.2} M rows/s", rows as f64 / seconds / 1e6)
}

fn main() -> BenchResult {
    let n: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let dir = tempfile::tempdir()?;
    let rows = probes(n);
    let chunks: Vec<Records> = rows
        .chunks(8192)
        .map(|c| Records::Probes(c.to_vec()))
        .collect();
    println!("parquet_io: {n} probes, zstd level 3, row groups of 65536");

    // Reference encode: the parquet crate on ready-made Arrow batches.
    let batches: Vec<_> = rows
        .chunks(8192)
        .map(Probe::to_record_batch)
        .collect::<Result<_, _>>()?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(65_536))
        .build();
    let reference_path = dir.path().join("reference.parquet");
    let t = Instant::now();
    let mut writer =
        ArrowWriter::try_new(File::create(&reference_path)?, Probe::schema(), Some(props))?;
    for b in &batches {
        writer.write(b)?;
    }
    writer.close()?;
    let reference_encode = t.elapsed().as_secs_f64();

    // Sink encode: rows → Arrow → Parquet, with tmp file, fsync and rename.
    let path = dir.path().join("probes.parquet");
    let t = Instant::now();
    write_records(&ParquetSinkConfig::new(&path), RecordKind::Probe, chunks)?;
    let sink_encode = t.elapsed().as_secs_f64();
    println!(
        "encode  sink {}   reference (arrow batches → parquet) {}   ratio {:.2}",
        rate(n, sink_encode),
        rate(n, reference_encode),
        reference_encode / sink_encode
    );

    // Reference decode: Arrow batches only, one thread.
    let t = Instant::now();
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path)?)?
        .with_batch_size(8192)
        .build()?;
    let mut decoded = 0;
    for b in reader {
        decoded += b?.num_rows();
    }
    let reference_decode = t.elapsed().as_secs_f64();
    assert_eq!(decoded, n);

    for threads in [1, 2] {
        let mut config = ParquetSourceConfig::new([path.display().to_string()]);
        config.decode_threads = Some(threads);
        config.progress = false;
        config.columns.speed_mps = Some("speed_mps".into());
        let t = Instant::now();
        let reader = ProbeReader::open(
            expand_paths(&config.paths)?,
            &config,
            metrics().component("bench"),
        )?;
        let mut count = 0;
        for batch in reader {
            count += batch?.len();
        }
        let seconds = t.elapsed().as_secs_f64();
        assert_eq!(count, n);
        println!(
            "decode  replay reader, {threads} thread(s) {}   reference (parquet → arrow, 1 thread) {}   ratio {:.2}",
            rate(n, seconds),
            rate(n, reference_decode),
            reference_decode / seconds
        );
    }
    Ok(())
}
