//! Backlogs: a stage that starts on a backlog (after an outage) must publish the same speeds
//! as `pipeline replay` of the same probes with the same stage settings, and count nothing
//! as late.
//!
//! Every test runs the built `pipeline` binary as processes against the real broker
//! (`PIPELINE_KAFKA_BROKERS`, default 127.0.0.1:9092) or Kinesis emulator
//! (`PIPELINE_KINESIS_ENDPOINT`, default http://127.0.0.1:4567): a seeded fleet from
//! `pipeline generate` on a grid graph built by `pipeline graph build` from an OSM fixture
//! the project writes itself, put on a 4-partition topic (4-shard stream) skewed on purpose
//! (one partition holds 70 % of the vehicles, each partition in time order), so a process
//! that reads all four at once reads them at very different event-time speeds. The shipped
//! configs of `pipelines/` are used with overrides: environment variables
//! (`PIPELINE__SECTION__KEY`) for scalars, and for the topic lists (which environment
//! variables cannot set) a copy of the file with that one line replaced. Speeds are read
//! back and upserted on (segment, window, estimator), the last row written winning, and
//! compared with replay's exactly.
//!
//! When no broker or emulator answers, the tests fail if `CI` is set and are skipped
//! (loudly) otherwise. They wait on counters and records, never on durations, except for
//! generous limits that turn a hang into a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pipeline::record::{ArrowRecord, Probe, SegmentSpeed};
use pipeline::telemetry::metrics::DROP_REASONS;

#[path = "common/kinesis_emulator.rs"]
mod kinesis_emulator;
#[path = "common/replay_report.rs"]
mod replay_report;

/// Generous limit for one stage to get through its backlog (a debug build on two shared
/// cores); a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(600);
/// The fleet: vehicles, event-time span and sampling interval of `pipeline generate`.
const VEHICLES: u32 = 150;
const DURATION_S: u32 = 600;
const INTERVAL_S: u32 = 5;
/// Share of the vehicles whose probes go to partition (shard) 0; the rest are spread over
/// the other three.
const HOT_SHARE: f64 = 0.7;
/// The consumer-group session timeout of every stage (the shipped configs say 6 s): on two
/// cores shared with other suites, 6 s timed out now and then (librdkafka SESSTMOUT), and the
/// rebalance that follows re-reads records (at-least-once), which is not what these tests
/// are about.
const SESSION_TIMEOUT_MS: &str = "30000";
/// Windows of the shipped aggregate configs (prod.toml, kafka-aggregate.toml,
/// kinesis-aggregate.toml).
const WINDOW_MS: i64 = 60_000;

// ---------------------------------------------------------------------------------------
// Services

/// The tests of this file run one at a time: each starts processes that read a whole
/// backlog, and several at once on two cores would starve one another's stages for longer
/// than the aggregate's idle timeout.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// The broker address, or None (after saying so) when none answers outside CI.
fn brokers() -> Option<String> {
    let brokers =
        std::env::var("PIPELINE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let reachable = first
        .parse::<std::net::SocketAddr>()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    if reachable {
        return Some(brokers);
    }
    if std::env::var_os("CI").is_some() {
        panic!("no Kafka broker at {brokers} and CI is set: run `scripts/test-services.sh start`");
    }
    eprintln!(
        "\n*** SKIPPED: no Kafka broker at {brokers}. Start one with \
         `scripts/test-services.sh start` (or run `make test`). ***\n"
    );
    None
}

fn nonce() -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{ns}", std::process::id())
}

/// A loopback address with a port free right now, for a stage's `/metrics`.
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("a free port")
}

// ---------------------------------------------------------------------------------------
// The fleet and its replay

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run pipeline");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A window's key: segment, window start, estimator.
type Key = (u64, i64, String);

/// Final speed rows by key.
type Speeds = BTreeMap<Key, SegmentSpeed>;

/// A seeded fleet on a grid city, generated and replayed by the binary, in its own
/// directory (the working directory of every stage the test starts).
struct Fleet {
    dir: tempfile::TempDir,
    graph: PathBuf,
    parquet: PathBuf,
    /// The generated probes, in file order (time, then vehicle).
    probes: Vec<Probe>,
}

impl Fleet {
    fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let osm = dir.path().join("city.osm.pbf");
        pipeline::graph::osm_writer::synthetic_grid(8, 8, 150.0, 60.17, 24.94)
            .write_pbf(&osm)
            .expect("OSM fixture");
        let graph = dir.path().join("city.graph");
        run_ok(
            bin()
                .args(["graph", "build", "--osm"])
                .arg(&osm)
                .arg("--out")
                .arg(&graph),
        );
        let parquet = dir.path().join("probes.parquet");
        run_ok(
            bin()
                .args(["generate", "--graph"])
                .arg(&graph)
                .args(["--vehicles", &VEHICLES.to_string()])
                .args(["--duration-s", &DURATION_S.to_string()])
                .args(["--interval-s", &INTERVAL_S.to_string()])
                .args(["--noise-m", "4", "--seed", &seed.to_string(), "--out"])
                .arg(&parquet),
        );
        let probes = read_parquet::<Probe>(&parquet);
        assert!(probes.len() > 10_000, "{} probes", probes.len());
        Self {
            dir,
            graph,
            parquet,
            probes,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The largest event time of the fleet.
    fn last_ms(&self) -> i64 {
        self.probes
            .iter()
            .map(|p| p.ts_ms)
            .max()
            .unwrap_or_default()
    }

    /// `pipeline replay --config CONFIG` of the fleet: its final speeds, and the late
    /// observations its report counts.
    fn replay(&self, config: &str) -> (Speeds, u64) {
        let out_dir = self.path().join("replay");
        let stdout = run_ok(
            bin()
                .args(["replay", "--graph"])
                .arg(&self.graph)
                .arg("--input")
                .arg(&self.parquet)
                .arg("--out-dir")
                .arg(&out_dir)
                .arg("--config")
                .arg(example(config))
                .arg("--report")
                .env("PIPELINE_LOG", "warn"),
        );
        let replayed = replay_report::Replayed::parse(&stdout);
        assert_eq!(
            replayed.probes_in,
            self.probes.len() as u64,
            "probes replayed"
        );
        assert_eq!(
            replayed.dropped.values().sum::<u64>(),
            0,
            "clean drops nothing of a fault-free fleet: {:?}",
            replayed.dropped
        );
        let observations = stdout
            .lines()
            .find(|l| l.starts_with("observations: "))
            .map(replay_report::counts_in)
            .unwrap_or_default();
        let late = observations.get("late").copied().unwrap_or(0);
        let rows = read_parquet::<SegmentSpeed>(&out_dir.join("speeds.parquet"));
        (upsert(rows), late)
    }
}

/// An example config of `pipelines/`.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name)
}

/// A copy of the example config `name` in `dir`, with each `(from, to)` line replaced
/// (each must occur exactly once): for what environment variables cannot set (lists).
fn config_copy(dir: &Path, name: &str, lines: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(example(name)).expect("example config");
    for (from, to) in lines {
        assert_eq!(text.matches(from).count(), 1, "`{from}` in {name}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config copy");
    path
}

fn read_parquet<T: ArrowRecord>(path: &Path) -> Vec<T> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .expect("parquet reader")
        .flat_map(|b| T::from_record_batch(&b.expect("record batch")).expect("rows"))
        .collect()
}

fn key_of(s: &SegmentSpeed) -> Key {
    (s.segment_id, s.window_start_ms, s.estimator.to_string())
}

/// Upserts rows in the order written: the last row of a key wins.
fn upsert(rows: impl IntoIterator<Item = SegmentSpeed>) -> Speeds {
    rows.into_iter().map(|s| (key_of(&s), s)).collect()
}

/// Vehicle → partition (shard): a seeded shuffle of the vehicle ids, the first
/// `HOT_SHARE` of them on 0, the others round-robin over 1..=3.
fn skewed_lanes(probes: &[Probe], seed: u64) -> BTreeMap<String, usize> {
    use rand::{seq::SliceRandom, SeedableRng};
    let mut ids: Vec<String> = probes
        .iter()
        .map(|p| p.vehicle_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    ids.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let hot = (ids.len() as f64 * HOT_SHARE).round() as usize;
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| (id, if i < hot { 0 } else { 1 + (i - hot) % 3 }))
        .collect()
}

/// Probes per lane, for the report.
fn lane_counts(probes: &[Probe], lanes: &BTreeMap<String, usize>) -> [usize; 4] {
    let mut counts = [0; 4];
    for p in probes {
        counts[lanes[&p.vehicle_id]] += 1;
    }
    counts
}

/// Compares a run's final speeds with replay's on the windows ending at or before
/// `until_ms` (all when None): returns a description of every difference (empty when
/// equal), and prints the first few in detail. The revision is bookkeeping and not compared.
fn differences(what: &str, got: &Speeds, want: &Speeds, until_ms: Option<i64>) -> Vec<String> {
    let in_scope = |k: &Key| until_ms.is_none_or(|t| k.1 + WINDOW_MS <= t);
    let strip = |s: &SegmentSpeed| SegmentSpeed {
        revision: 0,
        ..s.clone()
    };
    let mut diffs = Vec::new();
    for (k, w) in want.iter().filter(|(k, _)| in_scope(k)) {
        match got.get(k) {
            None => diffs.push(format!("missing {k:?}: replay {w:?}")),
            Some(g) if strip(g) != strip(w) => {
                diffs.push(format!("differs {k:?}: got {g:?}, replay {w:?}"))
            }
            Some(_) => {}
        }
    }
    for (k, g) in got.iter().filter(|(k, _)| in_scope(k)) {
        if !want.contains_key(k) {
            diffs.push(format!("extra {k:?}: got {g:?}"));
        }
    }
    if !diffs.is_empty() {
        let (mut missing, mut differs, mut extra) = (0, 0, 0);
        let mut by_window: BTreeMap<i64, usize> = BTreeMap::new();
        for d in &diffs {
            match d.split(' ').next() {
                Some("missing") => missing += 1,
                Some("differs") => differs += 1,
                _ => extra += 1,
            }
        }
        for k in want.keys().chain(got.keys()).filter(|k| in_scope(k)) {
            if want.get(k).map(strip) != got.get(k).map(strip) {
                *by_window.entry(k.1).or_default() += 1;
            }
        }
        eprintln!(
            "{what}: {} of {} windows in scope differ from replay ({missing} missing, \
             {differs} with other values, {extra} extra); by window start: {by_window:?}",
            diffs.len(),
            want.keys().filter(|k| in_scope(k)).count()
        );
        for d in diffs.iter().take(5) {
            eprintln!("  {d}");
        }
    }
    diffs
}

// ---------------------------------------------------------------------------------------
// Processes and their metrics

/// A `pipeline run --config CONFIG` process in `dir`, killed on drop; `stop` ends it with
/// SIGTERM.
struct Stage {
    name: String,
    child: Child,
    listen: String,
}

impl Stage {
    fn start(config: &Path, dir: &Path, env: &[(String, String)]) -> Self {
        let name = config.display().to_string();
        let listen = free_addr();
        let child = bin()
            .current_dir(dir)
            .args(["run", "--config"])
            .arg(config)
            .env("PIPELINE__TELEMETRY__LISTEN", &listen)
            .env("PIPELINE_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .spawn()
            .expect("start pipeline");
        Self {
            name,
            child,
            listen,
        }
    }

    /// SIGTERM, then waits: the run must end cleanly (outputs flushed, offsets committed).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait for pipeline");
        assert!(status.success(), "{} ended with {status}", self.name);
    }

    /// The sum of the series of metric `name` whose labels include `component="C"`
    /// (None while the stage does not answer).
    fn metric(&self, name: &str, component: &str) -> Option<f64> {
        self.metric_labelled(name, component, "")
    }

    /// As [`Stage::metric`], of the series whose labels also include `label`.
    fn metric_labelled(&self, name: &str, component: &str, label: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.listen).ok()?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.listen).as_bytes())
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        let component_label = format!("component=\"{component}\"");
        let values: Vec<f64> = body
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&component_label)
                    && l.contains(label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// `pipeline_component_dropped_events_total` of `component` by reason, those above 0.
    fn drops(&self, component: &str) -> BTreeMap<String, u64> {
        DROP_REASONS
            .iter()
            .filter_map(|&reason| {
                let n = self.metric_labelled(
                    "pipeline_component_dropped_events_total",
                    component,
                    &format!("reason=\"{reason}\""),
                )? as u64;
                (n > 0).then(|| (reason.to_string(), n))
            })
            .collect()
    }

    fn count(&self, name: &str, component: &str) -> u64 {
        self.metric(name, component).unwrap_or(0.0) as u64
    }

    fn received(&self, component: &str) -> u64 {
        self.count("pipeline_component_received_events_total", component)
    }

    fn sent(&self, component: &str) -> u64 {
        self.count("pipeline_component_sent_events_total", component)
    }

    /// What an aggregate stage has said so far: (received, accepted, late, rows emitted,
    /// watermark in ms).
    fn aggregate(&self, component: &str) -> AggregateCounts {
        AggregateCounts {
            received: self.received(component),
            accepted: self.count("pipeline_aggregate_observations_accepted_total", component),
            late: self.count("pipeline_aggregate_late_observations_total", component),
            rows: self.count("pipeline_aggregate_speeds_emitted_total", component),
            watermark_ms: self
                .metric("pipeline_aggregate_watermark_seconds", component)
                .map(|s| (s * 1000.0) as i64)
                .unwrap_or(i64::MIN),
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AggregateCounts {
    received: u64,
    accepted: u64,
    late: u64,
    rows: u64,
    watermark_ms: i64,
}

/// Polls `now` every 2 s until `done` holds for two polls in a row that returned the same
/// value; returns it. Fails after `PATIENCE` with the last value.
fn settle<T: PartialEq + std::fmt::Debug>(
    what: &str,
    mut now: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let value = now();
        if done(&value) && last.as_ref() == Some(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not settled within {PATIENCE:?}: {value:?}"
        );
        last = Some(value);
    }
}

/// Waits until an aggregate stage has received `observations` (when known), no count
/// moves any more, and its watermark has passed `until_ms` (the idle rule moves it on once
/// every input is quiet, so every window that can close has closed); returns its counts.
fn settle_aggregate(
    stage: &Stage,
    component: &str,
    observations: Option<u64>,
    until_ms: i64,
) -> AggregateCounts {
    let (counts, _) = settle(
        &format!("{}: the aggregate's counts", stage.name),
        || {
            let c = stage.aggregate(component);
            // The watermark moves with processing time once idle: compare whether it is
            // past the goal, not its value.
            let past = c.watermark_ms >= until_ms;
            (
                AggregateCounts {
                    watermark_ms: 0,
                    ..c
                },
                past,
            )
        },
        |(c, past)| *past && observations.is_none_or(|n| c.received == n),
    );
    counts
}

/// The end of the window holding `ms`.
fn window_end(ms: i64) -> i64 {
    ms.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS
}

// ---------------------------------------------------------------------------------------
// Kafka

mod kafka {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    use super::PATIENCE;

    pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics request");
        for r in results {
            if let Err((t, e)) = r {
                panic!("creating {t}: {e}");
            }
        }
    }

    /// Produces `(partition, key, payload)` in the order given (so each partition gets its
    /// records in that order), idempotently, and waits until all are delivered.
    pub fn produce(brokers: &str, topic: &str, records: &[(i32, Vec<u8>, Vec<u8>)]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        for (partition, key, payload) in records {
            let mut record = BaseRecord::to(topic)
                .partition(*partition)
                .key(key)
                .payload(payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        assert_eq!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                            "producing to {topic}: {e}"
                        );
                        record = r;
                        producer.poll(Duration::from_millis(50));
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("flushing to {topic}: {e}"));
        assert_eq!(
            producer.in_flight_count(),
            0,
            "undelivered records on {topic}"
        );
    }

    /// Every record of `topic`, from the beginning to the end it has now: payloads in
    /// partition order, partition by partition. The end is where each partition reports
    /// EOF and nothing more comes for 3 s (the high watermark that ListOffsets gives right
    /// after a producer's last writes was seen to lag behind them on tansu, which lost the
    /// last records of a topic).
    pub fn read_all(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("backlog-reader-{}", super::nonce()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .expect("topic metadata");
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        assert!(!partitions.is_empty(), "{topic} has no partitions");
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&list).expect("assign");
        let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
        let mut at_eof: BTreeMap<i32, bool> = partitions.iter().map(|&p| (p, false)).collect();
        let deadline = Instant::now() + PATIENCE;
        let mut quiet_since = Instant::now();
        loop {
            assert!(
                Instant::now() < deadline,
                "{topic}: no end in sight: {at_eof:?}"
            );
            if at_eof.values().all(|&e| e) && quiet_since.elapsed() >= Duration::from_secs(3) {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    at_eof.insert(p, true);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                Some(Ok(message)) => {
                    quiet_since = Instant::now();
                    at_eof.insert(message.partition(), false);
                    by_partition
                        .entry(message.partition())
                        .or_default()
                        .push(message.payload().unwrap_or_default().to_vec());
                }
            }
        }
        by_partition.into_values().flatten().collect()
    }
}

/// A record to produce: partition, key, payload.
type KafkaRecord = (i32, Vec<u8>, Vec<u8>);

/// The probes as (partition, key, JSON payload), in time order, on skewed partitions.
fn skewed_records(probes: &[Probe], lanes: &BTreeMap<String, usize>) -> Vec<KafkaRecord> {
    probes
        .iter()
        .map(|p| {
            (
                lanes[&p.vehicle_id] as i32,
                p.vehicle_id.as_bytes().to_vec(),
                serde_json::to_vec(p).expect("json"),
            )
        })
        .collect()
}

/// Final speeds on a topic (JSON), the last row written of a key winning (a key, the
/// segment, lives on one partition).
fn speeds_on_topic(brokers: &str, topic: &str) -> (usize, Speeds) {
    let rows: Vec<SegmentSpeed> = kafka::read_all(brokers, topic)
        .iter()
        .map(|payload| serde_json::from_slice(payload).expect("a speed row"))
        .collect();
    (rows.len(), upsert(rows))
}

/// Topic names of one test run.
struct Topics {
    raw: String,
    clean: String,
    observations: String,
    speeds: String,
    late: String,
    dlq: String,
}

impl Topics {
    async fn create(brokers: &str, prefix: &str) -> Self {
        let n = nonce();
        let t = Self {
            raw: format!("{prefix}-raw-{n}"),
            clean: format!("{prefix}-clean-{n}"),
            observations: format!("{prefix}-obs-{n}"),
            speeds: format!("{prefix}-speeds-{n}"),
            late: format!("{prefix}-late-{n}"),
            dlq: format!("{prefix}-dlq-{n}"),
        };
        for topic in [&t.raw, &t.clean, &t.observations, &t.speeds, &t.late] {
            kafka::create_topic(brokers, topic, 4).await;
        }
        t
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Issue: `pipeline run --config pipelines/prod.toml` started on a skewed 4-partition
/// backlog of raw probes reads the partitions at uneven speeds; the speeds it publishes
/// must equal replay's, with nothing late. The run cannot publish the last windows of the
/// data without more data (assign holds each vehicle's last probes until later ones commit
/// them; the aggregate publishes no open window on SIGTERM), so the comparison covers the
/// windows that end `TAIL_MS` before the last probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_prod_on_a_skewed_backlog_equals_replay() {
    /// assign's `lag_ms` (120 s, the longest a match stays pending while its vehicle
    /// reports) plus the aggregate's out-of-orderness bound (30 s), rounded up to a window:
    /// windows ending this long before the end of the last probe's window are compared.
    const TAIL_MS: i64 = 180_000;
    let Some(brokers) = brokers() else { return };
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let fleet = Fleet::new(7);
    let (want, replay_late) = fleet.replay("prod.toml");
    let replayed_at = started.elapsed();
    let topics = Topics::create(&brokers, "backlog-prod").await;
    let lanes = skewed_lanes(&fleet.probes, 7);
    kafka::produce(
        &brokers,
        &topics.raw,
        &skewed_records(&fleet.probes, &lanes),
    );

    let config = config_copy(
        fleet.path(),
        "prod.toml",
        &[(
            "topics = [\"probes.raw\"]",
            format!("topics = [\"{}\"]", topics.raw),
        )],
    );
    let graph = fleet.graph.display().to_string();
    let group = format!("prod-{}", nonce());
    let prod = Stage::start(
        &config,
        fleet.path(),
        &env(&[
            ("PIPELINE__GRAPH__PATH", &graph),
            ("PIPELINE__SOURCES__RAW__BROKERS", &brokers),
            ("PIPELINE__SOURCES__RAW__GROUP_ID", &group),
            ("PIPELINE__SOURCES__RAW__DEAD_LETTER_TOPIC", &topics.dlq),
            ("PIPELINE__SINKS__PROBES_CLEAN__BROKERS", &brokers),
            ("PIPELINE__SINKS__PROBES_CLEAN__TOPIC", &topics.clean),
            ("PIPELINE__SINKS__OBSERVATIONS__BROKERS", &brokers),
            ("PIPELINE__SINKS__OBSERVATIONS__TOPIC", &topics.observations),
            ("PIPELINE__SINKS__SPEEDS__BROKERS", &brokers),
            ("PIPELINE__SINKS__SPEEDS__TOPIC", &topics.speeds),
            ("PIPELINE__SINKS__LATE_OBSERVATIONS__BROKERS", &brokers),
            ("PIPELINE__SINKS__LATE_OBSERVATIONS__TOPIC", &topics.late),
            (
                "PIPELINE__SOURCES__RAW__SESSION_TIMEOUT_MS",
                SESSION_TIMEOUT_MS,
            ),
        ]),
    );
    // Every probe read, and the aggregate done with what it got: nothing moves and its
    // watermark is past the last probe.
    let total = fleet.probes.len() as u64;
    settle(
        "prod: raw probes read by clean",
        || prod.received("clean"),
        |&n| n == total,
    );
    let counts = settle_aggregate(&prod, "aggregate", None, fleet.last_ms());
    let assigned = prod.sent("assign");
    prod.stop();
    let processed_at = started.elapsed();

    let (rows, got) = speeds_on_topic(&brokers, &topics.speeds);
    let until_ms = window_end(fleet.last_ms()) - TAIL_MS;
    let diffs = differences("prod on a skewed backlog", &got, &want, Some(until_ms));
    let tail =
        differences("prod, tail windows (not asserted)", &got, &want, None).len() - diffs.len();
    eprintln!(
        "prod on a skewed backlog: {total} probes of {VEHICLES} vehicles over {DURATION_S} s \
         on partitions {:?}; aggregate {counts:?} (assign sent {assigned}); replay late \
         {replay_late}; {rows} speed rows, {} windows, {} of replay's {} in scope (end <= \
         last probe - {} s), {} differ; {tail} more differ in the tail; replay {:.0} s, prod \
         run {:.0} s",
        lane_counts(&fleet.probes, &lanes),
        got.len(),
        want.keys().filter(|k| k.1 + WINDOW_MS <= until_ms).count(),
        want.len(),
        (fleet.last_ms() - until_ms) / 1000,
        diffs.len(),
        replayed_at.as_secs_f64(),
        (processed_at - replayed_at).as_secs_f64(),
    );
    assert_eq!(replay_late, 0, "replay itself counted late observations");
    assert_eq!(
        counts.late, 0,
        "the prod run counted {} of {} observations late",
        counts.late, counts.received
    );
    assert!(
        diffs.is_empty(),
        "{} windows differ from replay, first: {}",
        diffs.len(),
        diffs[0]
    );
}

/// Starts a stage of the split deployment from a copy of the example config `name` whose
/// source topic list names `topic` (replacing `from`), with `env` on top.
fn split_stage(
    fleet: &Fleet,
    name: &str,
    from: &str,
    topic: &str,
    env_pairs: &[(&str, &str)],
) -> Stage {
    let config = config_copy(
        fleet.path(),
        name,
        &[(
            &format!("topics = [\"{from}\"]"),
            format!("topics = [\"{topic}\"]"),
        )],
    );
    Stage::start(&config, fleet.path(), &env(env_pairs))
}

/// The three stages of the split deployment (kafka-ingest, kafka-assign, kafka-aggregate)
/// on one test's topics, each in its own consumer group.
struct Split<'a> {
    fleet: &'a Fleet,
    brokers: &'a str,
    topics: &'a Topics,
    groups: [String; 3],
    graph: String,
}

impl<'a> Split<'a> {
    fn new(fleet: &'a Fleet, brokers: &'a str, topics: &'a Topics) -> Self {
        let n = nonce();
        Self {
            fleet,
            brokers,
            topics,
            groups: [
                format!("ingest-{n}"),
                format!("assign-{n}"),
                format!("aggregate-{n}"),
            ],
            graph: fleet.graph.display().to_string(),
        }
    }

    fn ingest(&self) -> Stage {
        let t = self.topics;
        split_stage(
            self.fleet,
            "kafka-ingest.toml",
            "probes.raw",
            &t.raw,
            &[
                ("PIPELINE__SOURCES__RAW__BROKERS", self.brokers),
                ("PIPELINE__SOURCES__RAW__GROUP_ID", &self.groups[0]),
                ("PIPELINE__SOURCES__RAW__DEAD_LETTER_TOPIC", &t.dlq),
                ("PIPELINE__SINKS__CLEANED__BROKERS", self.brokers),
                ("PIPELINE__SINKS__CLEANED__TOPIC", &t.clean),
                (
                    "PIPELINE__SOURCES__RAW__SESSION_TIMEOUT_MS",
                    SESSION_TIMEOUT_MS,
                ),
            ],
        )
    }

    fn assign(&self) -> Stage {
        let t = self.topics;
        split_stage(
            self.fleet,
            "kafka-assign.toml",
            "probes.clean",
            &t.clean,
            &[
                ("PIPELINE__GRAPH__PATH", &self.graph),
                ("PIPELINE__SOURCES__CLEANED__BROKERS", self.brokers),
                ("PIPELINE__SOURCES__CLEANED__GROUP_ID", &self.groups[1]),
                ("PIPELINE__SINKS__OBSERVATIONS__BROKERS", self.brokers),
                ("PIPELINE__SINKS__OBSERVATIONS__TOPIC", &t.observations),
                (
                    "PIPELINE__SOURCES__CLEANED__SESSION_TIMEOUT_MS",
                    SESSION_TIMEOUT_MS,
                ),
            ],
        )
    }

    fn aggregate(&self) -> Stage {
        let t = self.topics;
        split_stage(
            self.fleet,
            "kafka-aggregate.toml",
            "observations",
            &t.observations,
            &[
                ("PIPELINE__GRAPH__PATH", &self.graph),
                ("PIPELINE__SOURCES__OBSERVATIONS__BROKERS", self.brokers),
                ("PIPELINE__SOURCES__OBSERVATIONS__GROUP_ID", &self.groups[2]),
                ("PIPELINE__SINKS__SPEEDS__BROKERS", self.brokers),
                ("PIPELINE__SINKS__SPEEDS__TOPIC", &t.speeds),
                ("PIPELINE__SINKS__LATE_OBSERVATIONS__BROKERS", self.brokers),
                ("PIPELINE__SINKS__LATE_OBSERVATIONS__TOPIC", &t.late),
                (
                    "PIPELINE__SOURCES__OBSERVATIONS__SESSION_TIMEOUT_MS",
                    SESSION_TIMEOUT_MS,
                ),
            ],
        )
    }

    /// Waits until `stage` (ingest or assign) has received `want` records in `component`
    /// and sent nothing more for a while, then stops it (SIGTERM flushes what it holds);
    /// returns the records now on `topic`.
    /// (More than `want` when a rebalance made it read records again.)
    fn drain(&self, stage: Stage, component: &str, want: u64, topic: &str) -> u64 {
        let (received, sent) = settle(
            &format!("{}: records received and sent", stage.name),
            || (stage.received(component), stage.sent(component)),
            |&(received, _)| received >= want,
        );
        let drops = stage.drops(component);
        eprintln!("{}: {component} received {received} (of {want} on its input), sent {sent}, dropped {drops:?}", stage.name);
        stage.stop();
        kafka::read_all(self.brokers, topic).len() as u64
    }
}

/// The split deployment, one hop at a time, each stage alone on the whole backlog its
/// upstream left: kafka-ingest on the skewed raw topic until it has read everything (then
/// SIGTERM, which flushes clean), kafka-assign on the cleaned topic (SIGTERM flushes every
/// pending match), kafka-aggregate on the observations. Every window equals replay's
/// (assign flushed everything, and the aggregate's idle rule closes the last windows), and
/// nothing is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_split_deployment_on_a_backlog_at_each_hop_equals_replay() {
    let Some(brokers) = brokers() else { return };
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let fleet = Fleet::new(11);
    let (want, replay_late) = fleet.replay("kafka-aggregate.toml");
    let topics = Topics::create(&brokers, "backlog-split").await;
    let lanes = skewed_lanes(&fleet.probes, 11);
    kafka::produce(
        &brokers,
        &topics.raw,
        &skewed_records(&fleet.probes, &lanes),
    );
    let split = Split::new(&fleet, &brokers, &topics);
    let total = fleet.probes.len() as u64;

    let cleaned = split.drain(split.ingest(), "clean", total, &topics.clean);
    let distinct: std::collections::BTreeSet<(String, i64)> =
        kafka::read_all(&brokers, &topics.clean)
            .iter()
            .map(|payload| {
                let p: Probe = serde_json::from_slice(payload).expect("a probe");
                (p.vehicle_id, p.ts_ms)
            })
            .collect();
    let mut missing: BTreeMap<(usize, i64), usize> = BTreeMap::new();
    for p in &fleet.probes {
        if !distinct.contains(&(p.vehicle_id.clone(), p.ts_ms)) {
            let minute = (p.ts_ms - fleet.probes[0].ts_ms) / 60_000;
            *missing.entry((lanes[&p.vehicle_id], minute)).or_default() += 1;
        }
    }
    assert_eq!(
        distinct.len() as u64,
        total,
        "distinct probes on the cleaned topic ({cleaned} records); missing by (partition, \
         minute of event time): {missing:?}"
    );
    let ingested_at = started.elapsed();
    let observations = split.drain(split.assign(), "assign", cleaned, &topics.observations);
    let assigned_at = started.elapsed();
    let aggregate = split.aggregate();
    let counts = settle_aggregate(
        &aggregate,
        "aggregate",
        Some(observations),
        window_end(fleet.last_ms()),
    );
    aggregate.stop();
    let aggregated_at = started.elapsed();

    let (rows, got) = speeds_on_topic(&brokers, &topics.speeds);
    let diffs = differences("split deployment on backlogs", &got, &want, None);
    eprintln!(
        "split deployment on backlogs: {total} probes on partitions {:?}, {cleaned} cleaned, \
         {observations} observations; aggregate {counts:?}; replay late {replay_late}; \
         {rows} speed rows, {} windows, replay {}, {} differ; ingest done at {:.0} s, \
         assign at {:.0} s, aggregate at {:.0} s",
        lane_counts(&fleet.probes, &lanes),
        got.len(),
        want.len(),
        diffs.len(),
        ingested_at.as_secs_f64(),
        assigned_at.as_secs_f64(),
        aggregated_at.as_secs_f64(),
    );
    assert_eq!(replay_late, 0, "replay itself counted late observations");
    assert_eq!(
        counts.late, 0,
        "the aggregate counted {} of {} observations late",
        counts.late, counts.received
    );
    assert!(
        diffs.is_empty(),
        "{} windows differ from replay, first: {}",
        diffs.len(),
        diffs[0]
    );
}

/// The split deployment fed live-ish (30-s slices of event time, one a second, on the
/// skewed partitions) while kafka-ingest and kafka-assign keep running; kafka-aggregate is
/// stopped (SIGTERM) after the first 150 s of event time and restarted in its group once
/// 300 s more have been produced, so it starts on a backlog of five minutes of observations
/// over four partitions. Once the feed ends, ingest and assign are drained and stopped (they
/// flush what they hold) and the aggregate closes its last windows by its idle rule. The
/// final speeds (both runs' rows on the topic, the last of a key winning) equal replay's,
/// and neither run counted anything late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_aggregate_catches_up_after_a_stop() {
    const SLICE_MS: i64 = 30_000;
    let Some(brokers) = brokers() else { return };
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let fleet = Fleet::new(13);
    let (want, replay_late) = fleet.replay("kafka-aggregate.toml");
    let topics = Topics::create(&brokers, "backlog-restart").await;
    let lanes = skewed_lanes(&fleet.probes, 13);
    let records = skewed_records(&fleet.probes, &lanes);
    let split = Split::new(&fleet, &brokers, &topics);
    let total = fleet.probes.len() as u64;

    let first_ms = fleet
        .probes
        .iter()
        .map(|p| p.ts_ms)
        .min()
        .unwrap_or_default();
    let slice_of = |i: usize| (fleet.probes[i].ts_ms - first_ms) / SLICE_MS;
    let mut slices: Vec<(i64, Vec<KafkaRecord>)> = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        match slices.last_mut() {
            Some((s, v)) if *s == slice_of(i) => v.push(r),
            _ => slices.push((slice_of(i), vec![r])),
        }
    }
    // Stopped after slice 4 (event time 0–150 s), restarted after slice 14 (150–450 s).
    let (stop_after, restart_after) = (150_000 / SLICE_MS - 1, 450_000 / SLICE_MS - 1);
    let ingest = split.ingest();
    let assign = split.assign();
    let mut aggregate = Some(split.aggregate());
    let mut late = 0;
    let mut first_run = None;
    for (slice, rows) in &slices {
        kafka::produce(&brokers, &topics.raw, rows);
        std::thread::sleep(Duration::from_secs(1));
        if *slice == stop_after {
            let stage = aggregate.take().expect("the aggregate runs");
            // It has read what came so far (and published the windows that closed).
            let counts = settle(
                "the first aggregate run: observations received",
                || stage.aggregate("aggregate"),
                |c| c.received > 0 && c.rows > 0,
            );
            late += counts.late;
            first_run = Some(counts);
            stage.stop();
        }
        if *slice == restart_after {
            aggregate = Some(split.aggregate());
        }
    }
    let produced_at = started.elapsed();
    let cleaned = split.drain(ingest, "clean", total, &topics.clean);
    let observations = split.drain(assign, "assign", cleaned, &topics.observations);
    let aggregate = aggregate.expect("the restarted aggregate");
    let counts = settle_aggregate(&aggregate, "aggregate", None, window_end(fleet.last_ms()));
    late += counts.late;
    aggregate.stop();

    let (rows, got) = speeds_on_topic(&brokers, &topics.speeds);
    let (parquet_rows, in_parquet) = speeds_in_parquet(&fleet.path().join("out/kafka-aggregate"));
    eprintln!(
        "the aggregate's Parquet sink: {parquet_rows} rows, {} windows, {} of them in the \
         last window",
        in_parquet.len(),
        in_parquet
            .keys()
            .filter(|k| k.1 + WINDOW_MS == window_end(fleet.last_ms()))
            .count()
    );
    let diffs = differences("aggregate restarted on a backlog", &got, &want, None);
    eprintln!(
        "aggregate stopped for 300 s of event time: {total} probes on partitions {:?} in {} \
         slices of {} s, fed in {:.0} s; {cleaned} cleaned, {observations} observations; \
         first run {first_run:?}; restarted run {counts:?}; replay late {replay_late}; {rows} \
         speed rows, {} windows, replay {}, {} differ; {:.0} s in all",
        lane_counts(&fleet.probes, &lanes),
        slices.len(),
        SLICE_MS / 1000,
        produced_at.as_secs_f64(),
        got.len(),
        want.len(),
        diffs.len(),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(replay_late, 0, "replay itself counted late observations");
    assert_eq!(
        late, 0,
        "the aggregate runs counted {late} observations late"
    );
    assert!(
        diffs.is_empty(),
        "{} windows differ from replay, first: {}",
        diffs.len(),
        diffs[0]
    );
}

// ---------------------------------------------------------------------------------------
// Kinesis

/// Puts `probes` (JSON, in the order given) on `stream`, each on the shard its vehicle's
/// lane names (by explicit hash key: the start of that shard's range), 500 at a time.
async fn put_skewed(
    endpoint: &str,
    stream: &str,
    probes: &[Probe],
    lanes: &BTreeMap<String, usize>,
) {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;

    let client = kinesis_emulator::admin(endpoint);
    let listed = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut shards: Vec<(String, String)> = listed
        .shards()
        .iter()
        .map(|s| {
            (
                s.shard_id().to_string(),
                s.hash_key_range()
                    .map(|r| r.starting_hash_key().to_string())
                    .expect("hash key range"),
            )
        })
        .collect();
    shards.sort();
    assert_eq!(shards.len(), 4, "{stream}: {shards:?}");
    for chunk in probes.chunks(500) {
        let entries = chunk
            .iter()
            .map(|p| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(serde_json::to_vec(p).expect("json")))
                    .partition_key(&p.vehicle_id)
                    .explicit_hash_key(&shards[lanes[&p.vehicle_id]].1)
                    .build()
                    .expect("entry")
            })
            .collect::<Vec<_>>();
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        assert_eq!(out.failed_record_count(), Some(0), "{stream}: failed puts");
        for (p, r) in chunk.iter().zip(out.records()) {
            assert_eq!(
                r.shard_id(),
                Some(shards[lanes[&p.vehicle_id]].0.as_str()),
                "explicit hash key"
            );
        }
    }
}

/// Final speeds in the Parquet files of `dir` (one run: the highest revision of a key
/// wins).
fn speeds_in_parquet(dir: &Path) -> (usize, Speeds) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    let mut rows: Vec<SegmentSpeed> = files.iter().flat_map(|f| read_parquet(f)).collect();
    let count = rows.len();
    rows.sort_by_key(|s| s.revision);
    (count, upsert(rows))
}

/// Issue, on Kinesis: the skewed backlog on a 4-shard `probes-clean` stream (70 % of the
/// vehicles on one shard). There is no single-process Kinesis config, so the shipped split
/// chain runs one hop at a time: kinesis-assign alone on the whole backlog (SIGTERM flushes
/// every pending match), then kinesis-aggregate alone on the 4-shard observation backlog
/// it left. Replay (whose clean drops nothing of this fleet) gives the same windows, and
/// nothing is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_prod_on_a_skewed_4_shard_backlog_equals_replay() {
    let Some(endpoint) = kinesis_emulator::emulator() else {
        return;
    };
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let fleet = Fleet::new(17);
    let (want, replay_late) = fleet.replay("kinesis-aggregate.toml");
    let n = nonce();
    let (probes_stream, observations_stream, speeds_stream, late_stream) = (
        format!("backlog-clean-{n}"),
        format!("backlog-obs-{n}"),
        format!("backlog-speeds-{n}"),
        format!("backlog-late-{n}"),
    );
    for stream in [
        &probes_stream,
        &observations_stream,
        &speeds_stream,
        &late_stream,
    ] {
        kinesis_emulator::create_stream(&endpoint, stream, 4).await;
    }
    let lanes = skewed_lanes(&fleet.probes, 17);
    put_skewed(&endpoint, &probes_stream, &fleet.probes, &lanes).await;
    let total = fleet.probes.len() as u64;
    let graph = fleet.graph.display().to_string();

    let assign = Stage::start(
        &example("kinesis-assign.toml"),
        fleet.path(),
        &env(&[
            ("PIPELINE__GRAPH__PATH", &graph),
            ("PIPELINE__SOURCES__CLEANED__ENDPOINT", &endpoint),
            ("PIPELINE__SOURCES__CLEANED__STREAM", &probes_stream),
            (
                "PIPELINE__SOURCES__CLEANED__APPLICATION",
                &format!("assign-{n}"),
            ),
            ("PIPELINE__SINKS__OBSERVATIONS__ENDPOINT", &endpoint),
            (
                "PIPELINE__SINKS__OBSERVATIONS__STREAM",
                &observations_stream,
            ),
        ]),
    );
    settle(
        "kinesis-assign: probes received and observations written",
        || (assign.received("assign"), assign.received("observations")),
        |&(received, _)| received == total,
    );
    assign.stop();
    let assigned_at = started.elapsed();
    // The observations the sink got, flush included: counted by the next stage's source.
    let aggregate = Stage::start(
        &example("kinesis-aggregate.toml"),
        fleet.path(),
        &env(&[
            ("PIPELINE__GRAPH__PATH", &graph),
            ("PIPELINE__SOURCES__OBSERVATIONS__ENDPOINT", &endpoint),
            (
                "PIPELINE__SOURCES__OBSERVATIONS__STREAM",
                &observations_stream,
            ),
            (
                "PIPELINE__SOURCES__OBSERVATIONS__APPLICATION",
                &format!("aggregate-{n}"),
            ),
            ("PIPELINE__SINKS__SPEEDS__ENDPOINT", &endpoint),
            ("PIPELINE__SINKS__SPEEDS__STREAM", &speeds_stream),
            ("PIPELINE__SINKS__LATE_OBSERVATIONS__ENDPOINT", &endpoint),
            ("PIPELINE__SINKS__LATE_OBSERVATIONS__STREAM", &late_stream),
        ]),
    );
    let counts = settle_aggregate(&aggregate, "aggregate", None, window_end(fleet.last_ms()));
    aggregate.stop();

    let (rows, got) = speeds_in_parquet(&fleet.path().join("out/kinesis-aggregate"));
    let diffs = differences("kinesis split chain on backlogs", &got, &want, None);
    eprintln!(
        "kinesis on a skewed 4-shard backlog: {total} probes on shards {:?}; aggregate \
         {counts:?}; replay late {replay_late}; {rows} speed rows, {} windows, replay {}, {} \
         differ; assign done at {:.0} s, all at {:.0} s",
        lane_counts(&fleet.probes, &lanes),
        got.len(),
        want.len(),
        diffs.len(),
        assigned_at.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(replay_late, 0, "replay itself counted late observations");
    assert_eq!(
        counts.late, 0,
        "the aggregate counted {} of {} observations late",
        counts.late, counts.received
    );
    assert!(
        diffs.is_empty(),
        "{} windows differ from replay, first: {}",
        diffs.len(),
        diffs[0]
    );
}
