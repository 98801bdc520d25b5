//! End-to-end latency on Kafka: probes produced in real time to a raw topic, through clean →
//! (a topic) → assign → an observations topic, as the example configs `kafka-ingest.toml` and
//! `kafka-assign.toml` run them (here in one process), and read back. An observation's
//! latency is the time it is read minus its exit time, the moment the vehicle left the
//! segment, on the producer's clock (probe timestamps are the times they are sent). So it
//! includes waiting for the next probe (up to its interval), clean's reorder bound and the
//! matcher's decision lag, not only the two Kafka hops.
//!
//! First the maximum rate of the chain is measured (a backlog of probes, timed until assign
//! has taken them all), then a paced run at half of it gives the latency percentiles.
//!
//! Run: `scripts/bench_kafka.sh` (or, with a broker on 127.0.0.1:9092, `cargo bench --bench
//! kafka_latency`). Env: `PIPELINE_KAFKA_BROKERS`, `BENCH_LATENCY_SECONDS` (paced run, default
//! 40), `BENCH_LATENCY_BACKLOG` (probes for the maximum, default 200 000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use pipeline::connector::generator::{generate, GeneratorSourceConfig};
use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig, RoadGraph};
use pipeline::record::{Encoding, Probe, SegmentObservation, WireRecord};
use pipeline::runtime::Topology;
use pipeline::telemetry::metrics::metrics;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn create_topics(brokers: &str, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 4, TopicReplication::Fixed(1)))
        .collect();
    admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
}

/// The chain's topology (clean and assign with their default settings, the example
/// configs' Kafka settings), on topics named after `run`.
fn chain(brokers: &str, run: &str, graph: &std::path::Path) -> pipeline::config::PipelineConfig {
    let text = format!(
        "edges = [\"raw -> clean -> cleaned\", \"clean_in -> assign -> observations\"]\n\
         [graph]\npath = \"{graph}\"\n\
         [sources.raw]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"{run}-raw\"]\n\
         group_id = \"{run}-ingest\"\nrecord = \"probe\"\nencoding = \"json\"\n\
         session_timeout_ms = 6000\n\
         [stages.clean]\ntype = \"clean\"\n\
         [sinks.cleaned]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{run}-clean\"\n\
         encoding = \"json\"\n\
         [sources.clean_in]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\n\
         topics = [\"{run}-clean\"]\ngroup_id = \"{run}-assign\"\nrecord = \"probe\"\n\
         encoding = \"json\"\nsession_timeout_ms = 6000\n\
         [stages.assign]\ntype = \"assign\"\n\
         [sinks.observations]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\n\
         topic = \"{run}-observations\"\nencoding = \"json\"\n",
        graph = graph.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.toml");
    std::fs::write(&path, text).expect("config");
    pipeline::config::load(Some(&path), &BTreeMap::new()).expect("a valid chain config")
}

fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, probe: &Probe) {
    let (key, value) = (probe.key(), probe.encode(Encoding::Json));
    let mut record = BaseRecord::to(topic).key(&key[..]).payload(&value[..]);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Traffic on the grid, one probe per vehicle and second, timestamps from `start_ms`.
fn traffic(graph: &Arc<RoadGraph>, vehicles: u32, duration_s: f64, start_ms: i64) -> Vec<Probe> {
    let (mut probes, _) = generate(
        graph,
        &GeneratorSourceConfig {
            vehicles,
            duration_s,
            interval_s: 1.0,
            noise_m: 4.0,
            start_ms,
            ..GeneratorSourceConfig::default()
        },
    );
    probes.sort_by_key(|p| p.ts_ms);
    probes
}

fn main() {
    let brokers =
        std::env::var("PIPELINE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let env_num = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let paced_s = env_num("BENCH_LATENCY_SECONDS", 40.0);
    let backlog = env_num("BENCH_LATENCY_BACKLOG", 200_000.0) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = Arc::new(
        synthetic_grid(12, 12, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds"),
    );
    let graph_path = dir.path().join("grid.graph");
    graph.write(&graph_path).expect("graph written");
    let nonce = std::process::id();

    // 1. The maximum: a backlog, timed until assign has taken every probe clean let through.
    let run = format!("latency-max-{nonce}");
    runtime.block_on(create_topics(
        &brokers,
        &[
            &format!("{run}-raw"),
            &format!("{run}-clean"),
            &format!("{run}-observations"),
        ],
    ));
    let vehicles = (backlog / 60).max(1) as u32;
    let probes = traffic(&graph, vehicles, 60.0, now_ms());
    let p = producer(&brokers);
    for probe in &probes {
        send(&p, &format!("{run}-raw"), probe);
    }
    let _ = p.flush(Duration::from_secs(60));
    let topology =
        Topology::build(&chain(&brokers, &run, &graph_path), Some(graph.clone())).expect("chain");
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let handle = runtime.spawn(topology.run(cancel.clone()));
    let (clean, assign) = (metrics().component("clean"), metrics().component("assign"));
    let mut done_at = started;
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let got = assign.received_events.get();
        if got != last {
            last = got;
            done_at = Instant::now();
        }
        let all_in = clean.received_events.get() as usize == probes.len();
        if all_in && got == clean.sent_events.get() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the backlog never drained"
        );
    }
    cancel.cancel();
    let _ = runtime.block_on(handle);
    let max_rate = probes.len() as f64 / (done_at - started).as_secs_f64();
    println!(
        "maximum: {} probes ({vehicles} vehicles, 1 s apart) through raw → clean → topic → \
         assign in {:.2} s: {max_rate:.0} probes/s",
        probes.len(),
        (done_at - started).as_secs_f64()
    );

    // 2. Paced at half the maximum, one probe per vehicle and second, timestamps = send times.
    let rate = max_rate / 2.0;
    let run = format!("latency-paced-{nonce}");
    let (raw, observations) = (format!("{run}-raw"), format!("{run}-observations"));
    runtime.block_on(create_topics(
        &brokers,
        &[&raw, &format!("{run}-clean"), &observations],
    ));
    let topology =
        Topology::build(&chain(&brokers, &run, &graph_path), Some(graph.clone())).expect("chain");
    let cancel = CancellationToken::new();
    let handle = runtime.spawn(topology.run(cancel.clone()));
    let _context = runtime.enter();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{run}-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&observations]).expect("subscribe");
    // Let both groups settle before the clock starts.
    std::thread::sleep(Duration::from_secs(8));
    let start_ms = now_ms() + 1_000;
    let vehicles = rate.round().max(1.0) as u32;
    let probes = traffic(&graph, vehicles, paced_s, start_ms);
    let end_ms = start_ms + (paced_s * 1000.0) as i64;
    let warm_ms = start_ms + 10_000;
    let reader = runtime.spawn(async move {
        let mut latencies_ms = Vec::new();
        let stop_at = end_ms + 30_000;
        while now_ms() < stop_at {
            let Ok(Ok(msg)) =
                tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
            else {
                continue;
            };
            let received_ms = now_ms();
            let Some(payload) = msg.payload() else {
                continue;
            };
            let Ok(o) = SegmentObservation::decode(payload, Encoding::Json) else {
                continue;
            };
            if (warm_ms..end_ms).contains(&o.exit_ts_ms) {
                latencies_ms.push(received_ms - o.exit_ts_ms);
            }
        }
        latencies_ms
    });
    let p = producer(&brokers);
    let mut next = 0;
    while next < probes.len() {
        let now = now_ms();
        while next < probes.len() && probes[next].ts_ms <= now {
            send(&p, &raw, &probes[next]);
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = p.flush(Duration::from_secs(30));
    let mut latencies_ms = runtime.block_on(reader).expect("reader");
    cancel.cancel();
    let _ = runtime.block_on(handle);
    latencies_ms.sort_unstable();
    let pct = |q: f64| {
        latencies_ms
            .get(((latencies_ms.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "paced: {vehicles} vehicles × 1 probe/s = {rate:.0} probes/s for {paced_s:.0} s; \
         {} observations exiting after the first 10 s: latency p50 {} ms, p90 {} ms, \
         p99 {} ms, max {} ms",
        latencies_ms.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies_ms.last().copied().unwrap_or(-1)
    );
}
