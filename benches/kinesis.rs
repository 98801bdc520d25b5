//! Kinesis sink and source throughput against the emulator (kinesalite on
//! `PIPELINE_KINESIS_ENDPOINT`, default http://127.0.0.1:4567): records/s and MiB/s, with
//! the mean record size, for probes and observations in JSON and protobuf over a 4-shard
//! stream. The sink writes `BENCH_KINESIS_RECORDS` records (default 20 000) through the
//! runtime from an in-memory source; the source then reads them all back from TRIM_HORIZON
//! into a counting sink (its time includes ListShards and the first iterators). Reference,
//! same run: the same records, pre-encoded, as sequential PutRecords calls of 500 straight
//! through the SDK.
//!
//! Run: `scripts/services/kinesis.sh start; cargo bench --bench kinesis`. Without an
//! emulator it says so and exits. The emulator (Node, one thread) is part of what is
//! measured: these are figures for this connector against kinesalite, not for AWS.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::types::StreamStatus;
use tokio_util::sync::CancellationToken;

use pipeline::config::RuntimeConfig;
use pipeline::connector::kinesis::{KinesisClient, KinesisSinkConfig, KinesisSourceConfig};
use pipeline::record::{Encoding, Probe, RecordKind, SegmentObservation, WireRecord};
use pipeline::runtime::{BoxError, Component, Input, Link, Records, Sink, Topology, VecSource};

const T0: i64 = 1_700_000_000_000;

/// Counts records; stops the run once `want` have arrived.
struct CountSink {
    seen: Arc<Mutex<usize>>,
    want: usize,
    stop: CancellationToken,
}

#[async_trait]
impl Sink for CountSink {
    async fn run(self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        while let Some(batch) = input.next().await {
            let n = batch.len();
            batch.acks.ack();
            let mut seen = self.seen.lock().map_err(|_| "poisoned")?;
            *seen += n;
            if *seen >= self.want {
                self.stop.cancel();
            }
        }
        Ok(())
    }
}

fn runtime() -> RuntimeConfig {
    RuntimeConfig {
        channel_capacity_batches: 8,
        shutdown_timeout_ms: 60_000,
    }
}

fn admin(endpoint: &str) -> KinesisClient {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    KinesisClient::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
            .http_client(http)
            .build(),
    )
}

async fn create_stream(client: &KinesisClient, stream: &str) -> Result<(), String> {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(4)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    for _ in 0..600 {
        let status = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .ok()
            .and_then(|o| {
                o.stream_description_summary()
                    .map(|s| s.stream_status().clone())
            });
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{stream} never became active"))
}

fn probes(n: usize) -> Vec<Probe> {
    (0..n)
        .map(|i| {
            let mut p = Probe::new(
                format!("veh-{}", i % 997),
                T0 + i as i64 * 100,
                60.17 + (i % 1000) as f64 * 1e-5,
                24.94 + (i % 777) as f64 * 1e-5,
            );
            p.speed_mps = Some(12.5);
            p.heading_deg = Some(90.0);
            p.accuracy_m = Some(4.0);
            p
        })
        .collect()
}

fn observations(n: usize) -> Vec<SegmentObservation> {
    (0..n)
        .map(|i| SegmentObservation {
            observation_id: 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1),
            segment_id: 0x1234_5678_9abc + (i % 5003) as u64,
            vehicle_id: format!("veh-{}", i % 997),
            enter_ts_ms: T0 + i as i64 * 100,
            exit_ts_ms: T0 + i as i64 * 100 + 4_000,
            traversed_m: 50.0,
            speed_mps: 12.5,
            next_segment_id: Some(0x1234_5678_9abc + ((i + 1) % 5003) as u64),
            flags: (i % 3) as u32,
        })
        .collect()
}

/// Each record as (payload, partition key), encoded as the sink does.
fn entries<T: WireRecord + Clone>(rows: &[T], encoding: Encoding) -> Vec<(Vec<u8>, String)> {
    rows.iter()
        .map(|r| {
            let payload = match encoding {
                Encoding::Json => serde_json::to_vec(r).unwrap_or_default(),
                Encoding::Protobuf => r.encode(Encoding::Protobuf),
            };
            (
                payload,
                String::from_utf8_lossy(&r.key())
                    .chars()
                    .take(256)
                    .collect(),
            )
        })
        .collect()
}

/// Mean size (payload plus partition key) of `entries`.
fn mean_bytes(entries: &[(Vec<u8>, String)]) -> f64 {
    let total: usize = entries.iter().map(|(d, k)| d.len() + k.len()).sum();
    total as f64 / entries.len().max(1) as f64
}

struct Case {
    name: &'static str,
    /// The records as PutRecords entries (payload, partition key), for the reference.
    entries: Vec<(Vec<u8>, String)>,
    kind: RecordKind,
    encoding: Encoding,
    batches: Vec<Records>,
    mean_bytes: f64,
}

impl Case {
    fn count(&self) -> usize {
        self.entries.len()
    }
}

async fn run_case(endpoint: &str, case: Case, checkpoints: &std::path::Path) -> Result<(), String> {
    let n = case.count();
    let client = admin(endpoint);
    let stream = format!("bench-{}-{}", case.name, std::process::id());
    create_stream(&client, &stream).await?;
    let mib = n as f64 * case.mean_bytes / (1024.0 * 1024.0);

    // Reference: the same records, encoded beforehand, as sequential PutRecords calls of 500
    // straight through the SDK, to a stream of their own: what the emulator takes from one
    // writer that waits for each answer, with no pipeline around it.
    let reference_stream = format!("{stream}-ref");
    create_stream(&client, &reference_stream).await?;
    let started = Instant::now();
    for chunk in case.entries.chunks(500) {
        let entries = chunk
            .iter()
            .map(|(data, key)| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
                    .partition_key(key)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        let out = client
            .put_records()
            .stream_name(&reference_stream)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        if out.failed_record_count().unwrap_or(0) > 0 {
            return Err("the reference writer saw failed entries".into());
        }
    }
    let reference_s = started.elapsed().as_secs_f64();
    let _ = client
        .delete_stream()
        .stream_name(&reference_stream)
        .send()
        .await;

    let mut sink: KinesisSinkConfig =
        toml::from_str(&format!("stream = \"{stream}\"\nendpoint = \"{endpoint}\""))
            .map_err(|e| e.to_string())?;
    sink.encoding = case.encoding;
    let topology = Topology::new(
        vec![
            (
                "src".into(),
                Component::Source(Box::new(VecSource(case.batches))),
            ),
            (
                "kinesis_out".into(),
                Component::Sink(sink.build("kinesis_out").map_err(|e| e.to_string())?),
            ),
        ],
        vec![Link::any("src", "kinesis_out")],
        &runtime(),
    );
    let started = Instant::now();
    topology
        .run(CancellationToken::new())
        .await
        .map_err(|e| e.to_string())?;
    let sink_s = started.elapsed().as_secs_f64();

    let mut source: KinesisSourceConfig = toml::from_str(&format!(
        "stream = \"{stream}\"\nendpoint = \"{endpoint}\"\napplication = \"bench\"\n\
         record = \"probe\"\ncheckpoint_dir = \"{}\"",
        checkpoints.display()
    ))
    .map_err(|e| e.to_string())?;
    source.record = case.kind;
    source.encoding = case.encoding;
    let seen = Arc::new(Mutex::new(0));
    let stop = CancellationToken::new();
    let topology = Topology::new(
        vec![
            (
                "kinesis_in".into(),
                Component::Source(source.build("kinesis_in").map_err(|e| e.to_string())?),
            ),
            (
                "count".into(),
                Component::Sink(Box::new(CountSink {
                    seen: seen.clone(),
                    want: n,
                    stop: stop.clone(),
                })),
            ),
        ],
        vec![Link::any("kinesis_in", "count")],
        &runtime(),
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(600), topology.run(stop))
        .await
        .map_err(|_| "the source did not read everything within 600 s".to_string())?
        .map_err(|e| e.to_string())?;
    let source_s = started.elapsed().as_secs_f64();
    let got = seen.lock().map(|s| *s).unwrap_or(0);
    let _ = client.delete_stream().stream_name(&stream).send().await;
    println!(
        "{:<18} {:>7} records of {:>6.1} B | reference {:>8.0} rec/s | sink {:>8.0} rec/s {:>6.2} MiB/s ({:.2}x ref.) | source {:>8.0} rec/s {:>6.2} MiB/s ({} read)",
        case.name,
        n,
        case.mean_bytes,
        n as f64 / reference_s,
        n as f64 / sink_s,
        mib / sink_s,
        reference_s / sink_s,
        n as f64 / source_s,
        mib / source_s,
        got
    );
    Ok(())
}

fn main() {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    }
    let endpoint = std::env::var("PIPELINE_KINESIS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4567".into());
    let addr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let up = addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    if !up {
        println!("kinesis bench: no emulator at {endpoint}; start one with scripts/services/kinesis.sh start");
        return;
    }
    let n: usize = std::env::var("BENCH_KINESIS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kinesis bench: no temp dir: {e}");
            std::process::exit(1);
        }
    };
    let p = probes(n);
    let o = observations(n);
    // Large records: probes whose vehicle id is padded to 4 KiB (the partition key is cut
    // to 256 characters), a quarter as many.
    let big: Vec<Probe> = probes(n / 4)
        .into_iter()
        .map(|mut p| {
            p.vehicle_id = format!("{:-<4096}", p.vehicle_id);
            p
        })
        .collect();
    let chunk = 1_000;
    let cases = vec![
        Case {
            name: "probe-json",
            kind: RecordKind::Probe,
            encoding: Encoding::Json,
            mean_bytes: mean_bytes(&entries(&p, Encoding::Json)),
            entries: entries(&p, Encoding::Json),
            batches: p
                .chunks(chunk)
                .map(|c| Records::Probes(c.to_vec()))
                .collect(),
        },
        Case {
            name: "probe-protobuf",
            kind: RecordKind::Probe,
            encoding: Encoding::Protobuf,
            mean_bytes: mean_bytes(&entries(&p, Encoding::Protobuf)),
            entries: entries(&p, Encoding::Protobuf),
            batches: p
                .chunks(chunk)
                .map(|c| Records::Probes(c.to_vec()))
                .collect(),
        },
        Case {
            name: "observation-json",
            kind: RecordKind::SegmentObservation,
            encoding: Encoding::Json,
            mean_bytes: mean_bytes(&entries(&o, Encoding::Json)),
            entries: entries(&o, Encoding::Json),
            batches: o
                .chunks(chunk)
                .map(|c| Records::Observations(c.to_vec()))
                .collect(),
        },
        Case {
            name: "probe-json-4k",
            kind: RecordKind::Probe,
            encoding: Encoding::Json,
            mean_bytes: mean_bytes(&entries(&big, Encoding::Json)),
            entries: entries(&big, Encoding::Json),
            batches: big
                .chunks(chunk)
                .map(|c| Records::Probes(c.to_vec()))
                .collect(),
        },
    ];
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kinesis bench: no runtime: {e}");
            std::process::exit(1);
        }
    };
    println!("Kinesis connector vs kinesalite at {endpoint}, 4 shards");
    for case in cases {
        let name = case.name;
        if let Err(e) = rt.block_on(run_case(&endpoint, case, dir.path())) {
            eprintln!("kinesis bench {name}: {e}");
            std::process::exit(1);
        }
    }
}
