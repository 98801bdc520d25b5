//! Kafka sink throughput against a plain librdkafka producer (the one inside the PyPI wheel
//! `confluent-kafka`), the same records, keys and producer settings, on the same broker, in
//! alternating rounds; reports records/s, MiB/s and the ratio ours / reference.
//!
//! Run: `scripts/bench_kafka.sh` (starts the broker, prepares a venv with confluent-kafka and
//! runs this). Env: `PIPELINE_KAFKA_BROKERS` (default 127.0.0.1:9092), `BENCH_KAFKA_PYTHON`
//! (a python with `confluent_kafka`; without it only our sink is measured),
//! `BENCH_KAFKA_RECORDS` (default 300 000), `BENCH_KAFKA_ROUNDS` (default 3).

use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tokio_util::sync::CancellationToken;

use pipeline::config::RuntimeConfig;
use pipeline::connector::kafka::KafkaSinkConfig;
use pipeline::record::{Encoding, Probe, WireRecord};
use pipeline::runtime::{Component, Link, Records, Topology, VecSource};

const BATCH: usize = 1_000;

/// The producer's settings, passed to both producers as they are.
const SHARED_KEYS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "partitioner",
    "linger.ms",
    "batch.size",
    "batch.num.messages",
    "compression.type",
    "message.timeout.ms",
];

fn probes(n: usize) -> Vec<Probe> {
    (0..n)
        .map(|i| Probe {
            vehicle_id: format!("veh-{:05}", i % 20_000),
            ts_ms: 1_700_000_000_000 + i as i64 * 50,
            lat: 60.17 + (i % 1000) as f64 * 1e-5,
            lon: 24.94 + (i % 777) as f64 * 1e-5,
            speed_mps: Some(12.5),
            heading_deg: Some(90.0),
            accuracy_m: Some(5.0),
        })
        .collect()
}

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    admin
        .create_topics(
            &[NewTopic::new(topic, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
}

/// Our sink: from the first batch sent to the last delivery report.
async fn ours(sink: &KafkaSinkConfig, records: &[Probe]) -> Duration {
    let batches = records
        .chunks(BATCH)
        .map(|c| Records::Probes(c.to_vec()))
        .collect();
    let topology = Topology::new(
        vec![
            (
                "src".into(),
                Component::Source(Box::new(VecSource(batches))),
            ),
            (
                "kafka".into(),
                Component::Sink(sink.build("kafka").expect("sink")),
            ),
        ],
        vec![Link::any("src", "kafka")],
        &RuntimeConfig {
            channel_capacity_batches: 8,
            shutdown_timeout_ms: 120_000,
        },
    );
    let started = Instant::now();
    topology
        .run(CancellationToken::new())
        .await
        .expect("our sink run");
    started.elapsed()
}

const REFERENCE: &str = r#"
import sys, time, struct
from confluent_kafka import Producer
path, topic = sys.argv[1], sys.argv[2]
conf = dict(a.split("=", 1) for a in sys.argv[3:])
data = open(path, "rb").read()
records, i = [], 0
while i < len(data):
    (kl,) = struct.unpack_from("<I", data, i); i += 4
    key = data[i:i + kl]; i += kl
    (vl,) = struct.unpack_from("<I", data, i); i += 4
    records.append((key, data[i:i + vl])); i += vl
p = Producer(conf)
failed = []
def report(err, msg):
    if err is not None:
        failed.append(err)
start = time.perf_counter()
for key, value in records:
    while True:
        try:
            p.produce(topic, value, key, on_delivery=report)
            break
        except BufferError:
            p.poll(0.001)
    p.poll(0)
left = p.flush(120)
elapsed = time.perf_counter() - start
assert left == 0 and not failed, (left, failed[:3])
print(elapsed)
"#;

/// The reference producer over the same keys and payloads, timed inside the script (the
/// file is read before the clock starts).
fn reference(
    python: &str,
    brokers: &str,
    topic: &str,
    file: &std::path::Path,
    script: &std::path::Path,
    sink: &KafkaSinkConfig,
) -> Duration {
    let config = sink.client_config();
    let mut args = vec![format!("bootstrap.servers={brokers}")];
    for key in SHARED_KEYS {
        if let Some(value) = config.get(key) {
            args.push(format!("{key}={value}"));
        }
    }
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(file)
        .arg(topic)
        .args(&args)
        .output()
        .expect("run the reference producer");
    assert!(
        out.status.success(),
        "reference producer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seconds: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("seconds");
    Duration::from_secs_f64(seconds)
}

fn main() {
    let brokers =
        std::env::var("PIPELINE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let n: usize = std::env::var("BENCH_KAFKA_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let rounds: usize = std::env::var("BENCH_KAFKA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let python = std::env::var("BENCH_KAFKA_PYTHON").ok();
    let records = probes(n);
    let encoding = Encoding::Json;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("records.bin");
    let mut bytes = 0usize;
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).expect("records file"));
        for p in &records {
            let (key, value) = (p.key(), p.encode(encoding));
            bytes += value.len();
            for part in [&key[..], &value[..]] {
                w.write_all(&(part.len() as u32).to_le_bytes())
                    .expect("write");
                w.write_all(part).expect("write");
            }
        }
    }
    let script = dir.path().join("reference.py");
    std::fs::write(&script, REFERENCE).expect("script");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nonce = std::process::id();
    let mut sink: KafkaSinkConfig =
        toml::from_str(&format!("brokers = \"{brokers}\"\ntopic = \"unused\""))
            .expect("sink config");
    sink.encoding = encoding;
    println!(
        "kafka sink: {n} probes, JSON, mean value {:.0} B (keys: vehicle ids), 4 partitions, \
         batches of {BATCH}; producer settings: {}",
        bytes as f64 / n as f64,
        SHARED_KEYS
            .iter()
            .filter_map(|k| sink.client_config().get(k).map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let rate = |d: Duration| {
        (
            n as f64 / d.as_secs_f64(),
            bytes as f64 / d.as_secs_f64() / (1 << 20) as f64,
        )
    };
    let (mut our_rates, mut reference_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let topic = format!("bench-ours-{nonce}-{round}");
        runtime.block_on(create_topic(&brokers, &topic));
        sink.topic = topic;
        let ours = runtime.block_on(ours(&sink, &records));
        let (r, mib) = rate(ours);
        println!("round {round}: ours      {r:>10.0} records/s {mib:>6.1} MiB/s");
        our_rates.push(r);
        if let Some(python) = &python {
            let topic = format!("bench-reference-{nonce}-{round}");
            runtime.block_on(create_topic(&brokers, &topic));
            let reference = reference(python, &brokers, &topic, &file, &script, &sink);
            let (r, mib) = rate(reference);
            println!("round {round}: reference {r:>10.0} records/s {mib:>6.1} MiB/s");
            reference_rates.push(r);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ours = median(&mut our_rates);
    if reference_rates.is_empty() {
        println!("median: ours {ours:.0} records/s (no reference: set BENCH_KAFKA_PYTHON)");
    } else {
        let reference = median(&mut reference_rates);
        println!(
            "median: ours {ours:.0} records/s, reference {reference:.0} records/s, ratio {:.2}",
            ours / reference
        );
    }
}
