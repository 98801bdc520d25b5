//! The process harness of the chain tests (`tests/backlog.rs`, `tests/crash_exact.rs`): a
//! seeded fleet from `pipeline generate` on a grid graph that `pipeline graph build` makes
//! from an OSM fixture the project writes itself, its `pipeline replay` as the reference,
//! the shipped configs of `pipelines/` run as `pipeline run` processes with overrides
//! (environment variables `PIPELINE__SECTION__KEY` for scalars, a copy of the file with one
//! line replaced for the topic lists that environment variables cannot set), their metrics
//! read from `/metrics`, and their speeds read back, upserted on (segment, window,
//! estimator) and compared with replay's. Included with
//! `#[path = "common/chain.rs"] mod chain;`; it brings `kafka_topics.rs`,
//! `kinesis_emulator.rs` and `replay_report.rs` along as its submodules.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pipeline::record::{observation_flags, ArrowRecord, Probe, SegmentObservation, SegmentSpeed};
use pipeline::telemetry::metrics::DROP_REASONS;

#[path = "kafka_topics.rs"]
pub mod kafka;
#[path = "kinesis_emulator.rs"]
pub mod kinesis_emulator;
#[path = "replay_report.rs"]
mod replay_report;

/// Generous limit for one stage to get through its input (a debug build on two shared
/// cores); a hang fails instead of blocking CI.
pub const PATIENCE: Duration = Duration::from_secs(600);
/// The fleet: vehicles, event-time span and sampling interval of `pipeline generate`.
pub const VEHICLES: u32 = 150;
pub const DURATION_S: u32 = 600;
pub const INTERVAL_S: u32 = 5;
/// The consumer-group session timeout of the stages (the shipped configs say 6 s): on two
/// cores shared with other suites, 6 s timed out now and then (librdkafka SESSTMOUT), and the
/// rebalance that follows re-reads records (at-least-once), which is not what most of these
/// tests are about.
pub const SESSION_TIMEOUT_MS: &str = "30000";
/// Windows of the shipped prod aggregate configs (prod.toml, kafka-aggregate.toml,
/// kinesis-aggregate.toml).
pub const WINDOW_MS: i64 = 60_000;

// ---------------------------------------------------------------------------------------
// Services

/// The tests of a file run one at a time: each starts processes that read a whole fleet,
/// and several at once on two cores would starve one another's stages for longer than the
/// aggregate's idle timeout.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// The broker address, or None (after saying so) when none answers outside CI.
pub fn brokers() -> Option<String> {
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

pub fn nonce() -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{ns}", std::process::id())
}

/// A loopback address with a port free right now, for a stage's `/metrics`.
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("a free port")
}

pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The fleet and its replay

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

pub fn run_ok(cmd: &mut Command) -> String {
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
pub type Key = (u64, i64, String);

/// Final speed rows by key.
pub type Speeds = BTreeMap<Key, SegmentSpeed>;

/// A seeded fleet on a grid city, generated and replayed by the binary, in its own
/// directory (the working directory of every stage the test starts).
pub struct Fleet {
    dir: tempfile::TempDir,
    pub graph: PathBuf,
    pub parquet: PathBuf,
    /// The generated probes, in file order (time, then vehicle).
    pub probes: Vec<Probe>,
}

impl Fleet {
    /// The fleet of `seed`, starting at `pipeline generate`'s default event time.
    pub fn new(seed: u64) -> Self {
        Self::starting_at(seed, None)
    }

    /// The fleet of `seed`, its first probe at `start_ms` (epoch ms) when given.
    pub fn starting_at(seed: u64, start_ms: Option<i64>) -> Self {
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
                .args(["--noise-m", "4", "--seed", &seed.to_string()])
                .args(start_ms.map(|ms| format!("--start-ms={ms}")))
                .arg("--out")
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

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The largest event time of the fleet.
    pub fn last_ms(&self) -> i64 {
        self.probes
            .iter()
            .map(|p| p.ts_ms)
            .max()
            .unwrap_or_default()
    }

    /// Where `pipeline replay --config CONFIG` writes its files.
    fn replay_dir(&self, config: &str) -> PathBuf {
        self.path()
            .join(format!("replay-{}", config.trim_end_matches(".toml")))
    }

    /// `pipeline replay --config CONFIG` of the fleet: its final speeds, and the late
    /// observations its report counts.
    pub fn replay(&self, config: &str) -> (Speeds, u64) {
        let out_dir = self.replay_dir(config);
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

    /// The observations of an earlier [`Fleet::replay`] of `config`, as its matcher wrote
    /// them.
    pub fn replayed_observations(&self, config: &str) -> Vec<SegmentObservation> {
        read_parquet(&self.replay_dir(config).join("observations.parquet"))
    }
}

/// A directory laid out like a clone after `make run`, the working directory of commands
/// the README gives: the shipped `pipelines/` and a map at `data/helsinki.graph` (here a grid
/// city: the tests fetch no map).
pub fn checkout_like_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"),
        dir.path().join("pipelines"),
    )
    .expect("pipelines/");
    std::fs::create_dir(dir.path().join("data")).expect("data/");
    pipeline::graph::osm_writer::synthetic_grid(8, 8, 150.0, 60.17, 24.94)
        .build_graph(&pipeline::graph::ImportConfig::default())
        .expect("grid builds")
        .write(dir.path().join("data/helsinki.graph"))
        .expect("graph written");
    dir
}

/// An example config of `pipelines/`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name)
}

/// A copy of the example config `name` in `dir`, with each `(from, to)` line replaced
/// (each must occur exactly once): for what environment variables cannot set (lists).
pub fn config_copy(dir: &Path, name: &str, lines: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(example(name)).expect("example config");
    for (from, to) in lines {
        assert_eq!(text.matches(from).count(), 1, "`{from}` in {name}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config copy");
    path
}

pub fn read_parquet<T: ArrowRecord>(path: &Path) -> Vec<T> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .expect("parquet reader")
        .flat_map(|b| T::from_record_batch(&b.expect("record batch")).expect("rows"))
        .collect()
}

pub fn key_of(s: &SegmentSpeed) -> Key {
    (s.segment_id, s.window_start_ms, s.estimator.to_string())
}

/// Upserts rows in the order written: the last row of a key wins.
pub fn upsert(rows: impl IntoIterator<Item = SegmentSpeed>) -> Speeds {
    rows.into_iter().map(|s| (key_of(&s), s)).collect()
}

/// Whether two speed rows of one key say the same: counts, window end and graph version
/// exactly, speeds and travel time within 1e-9 relative (the revision is bookkeeping and
/// not compared).
pub fn same_speed(got: &SegmentSpeed, want: &SegmentSpeed) -> bool {
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let close_opt = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => close(a, b),
        (a, b) => a.is_none() && b.is_none(),
    };
    got.window_end_ms == want.window_end_ms
        && got.samples == want.samples
        && got.vehicles == want.vehicles
        && got.graph_version == want.graph_version
        && close(got.speed_mps, want.speed_mps)
        && close(got.travel_time_s, want.travel_time_s)
        && close_opt(got.p15_speed_mps, want.p15_speed_mps)
        && close_opt(got.p50_speed_mps, want.p50_speed_mps)
        && close_opt(got.p85_speed_mps, want.p85_speed_mps)
}

/// A speed row in a line: samples, vehicles and the speed fields.
fn brief(s: &SegmentSpeed) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
    format!(
        "samples {} vehicles {} speed {:.9} p15/p50/p85 {}/{}/{} travel {:.6} s (revision {})",
        s.samples,
        s.vehicles,
        s.speed_mps,
        opt(s.p15_speed_mps),
        opt(s.p50_speed_mps),
        opt(s.p85_speed_mps),
        s.travel_time_s,
        s.revision
    )
}

/// Compares a run's final speeds with replay's on the windows ending at or before
/// `until_ms` (all when None; the end of a row compared is its own `window_end_ms`): returns a description of every difference (empty when
/// equal), and prints a summary and the first few in detail (segment, window, estimator,
/// reference against what the run published).
pub fn differences(what: &str, got: &Speeds, want: &Speeds, until_ms: Option<i64>) -> Vec<String> {
    let in_scope = |s: &SegmentSpeed| until_ms.is_none_or(|t| s.window_end_ms <= t);
    let describe = |k: &Key| format!("segment {} window {} {}", k.0, k.1, k.2);
    let mut diffs = Vec::new();
    let mut by_window: BTreeMap<i64, usize> = BTreeMap::new();
    let (mut missing, mut differs, mut extra) = (0, 0, 0);
    for (k, w) in want.iter().filter(|(_, w)| in_scope(w)) {
        match got.get(k) {
            None => {
                missing += 1;
                diffs.push(format!(
                    "missing {}: reference {}, got nothing",
                    describe(k),
                    brief(w)
                ));
            }
            Some(g) if !same_speed(g, w) => {
                differs += 1;
                diffs.push(format!(
                    "differs {}: reference {}, got {}",
                    describe(k),
                    brief(w),
                    brief(g)
                ));
            }
            Some(_) => continue,
        }
        *by_window.entry(k.1).or_default() += 1;
    }
    for (k, g) in got.iter().filter(|(_, g)| in_scope(g)) {
        if !want.contains_key(k) {
            extra += 1;
            *by_window.entry(k.1).or_default() += 1;
            diffs.push(format!(
                "extra {}: reference nothing, got {}",
                describe(k),
                brief(g)
            ));
        }
    }
    if !diffs.is_empty() {
        eprintln!(
            "{what}: {} of {} windows in scope differ from replay ({missing} missing, \
             {differs} with other values, {extra} extra); by window start: {by_window:?}",
            diffs.len(),
            want.values().filter(|w| in_scope(w)).count()
        );
        for d in diffs.iter().take(8) {
            eprintln!("  {d}");
        }
    }
    diffs
}

/// Final speeds on a topic (JSON), the last row written of a key winning (a key, the
/// segment, lives on one partition).
pub fn speeds_on_topic(brokers: &str, topic: &str) -> (usize, Speeds) {
    let rows: Vec<SegmentSpeed> = kafka::read_all(brokers, topic)
        .iter()
        .map(|payload| serde_json::from_slice(payload).expect("a speed row"))
        .collect();
    (rows.len(), upsert(rows))
}

/// The Parquet files of `dir` (not the `.tmp` of one being written) in the order they were
/// completed: by modification time, then name.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            let modified = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            (modified, p)
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Final speeds in the Parquet files of `dir`, read in the order they were completed, the
/// last row written of a key winning.
pub fn speeds_in_parquet(dir: &Path) -> (usize, Speeds) {
    let rows: Vec<SegmentSpeed> = parquet_files(dir)
        .iter()
        .flat_map(|f| read_parquet(f))
        .collect();
    (rows.len(), upsert(rows))
}

/// What a topic or stream of observations holds, against the observations of a reference
/// matcher run, by observation id.
#[derive(Debug)]
pub struct ObservationCheck {
    /// Records read.
    pub records: usize,
    /// Distinct observation ids.
    pub ids: usize,
    /// Ids delivered more than once, and the copies beyond the first.
    pub repeated_ids: usize,
    pub copies: usize,
    /// Each difference: a reference observation missing, the first version of an id not
    /// equal to the reference's (field for field), an id the reference does not have.
    pub diffs: Vec<String>,
    /// `PARTIAL_START` observations the reference does not have: a trace re-matched after a
    /// restart starts at a replayed probe, with no context before it, so its first segment
    /// may be decided otherwise. Not differences: the aggregate does not count
    /// `PARTIAL_START` observations (ARCHITECTURE.md, "Crash-exact").
    pub rematched_starts: usize,
}

/// Reads observations (JSON payloads, in order per partition or shard: an id names a
/// traversal and lives on one partition, so its first version comes first) and compares
/// them with `want`; prints a summary and the first few differences under `what`.
pub fn check_observations(
    what: &str,
    payloads: &[Vec<u8>],
    want: &[SegmentObservation],
) -> ObservationCheck {
    let mut first: BTreeMap<u64, SegmentObservation> = BTreeMap::new();
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    for payload in payloads {
        let o: SegmentObservation = serde_json::from_slice(payload).expect("an observation");
        *copies.entry(o.observation_id).or_default() += 1;
        first.entry(o.observation_id).or_insert(o);
    }
    let want: BTreeMap<u64, &SegmentObservation> =
        want.iter().map(|o| (o.observation_id, o)).collect();
    let mut diffs = Vec::new();
    let mut rematched_starts = 0;
    for (id, w) in &want {
        match first.get(id) {
            None => diffs.push(format!("missing {w:?}")),
            Some(g) if g != *w => diffs.push(format!("differs: reference {w:?}, got {g:?}")),
            Some(_) => {}
        }
    }
    for (id, g) in &first {
        if want.contains_key(id) {
            continue;
        }
        if g.flags & observation_flags::PARTIAL_START != 0 {
            rematched_starts += 1;
        } else {
            diffs.push(format!("not in the reference: {g:?}"));
        }
    }
    let check = ObservationCheck {
        records: payloads.len(),
        ids: first.len(),
        repeated_ids: copies.values().filter(|&&c| c > 1).count(),
        copies: copies.values().map(|&c| c - 1).sum(),
        diffs,
        rematched_starts,
    };
    let count = |kind: &str| check.diffs.iter().filter(|d| d.starts_with(kind)).count();
    eprintln!(
        "{what}: {} records, {} distinct observation ids, {} ids delivered more than once ({} \
         extra copies); against the reference's {} observations: {} missing, {} with other \
         values (first version), {} not in the reference ({} more re-matched trace starts, \
         not counted by the aggregate)",
        check.records,
        check.ids,
        check.repeated_ids,
        check.copies,
        want.len(),
        count("missing"),
        count("differs"),
        count("not in"),
        check.rematched_starts,
    );
    for d in check.diffs.iter().take(5) {
        eprintln!("  {d}");
    }
    check
}

// ---------------------------------------------------------------------------------------
// Processes and their metrics

/// A `pipeline run --config CONFIG` process in `dir`, killed on drop; `stop` ends it with
/// SIGTERM, `kill_9` with SIGKILL.
pub struct Stage {
    pub name: String,
    child: Child,
    listen: String,
}

impl Stage {
    pub fn start(config: &Path, dir: &Path, env: &[(String, String)]) -> Self {
        let args = [
            "run".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
        ];
        Self::command(&args, dir, env)
    }

    /// `pipeline ARGS` in `dir`, as a long-running stage (metrics on a free port).
    pub fn command(args: &[std::ffi::OsString], dir: &Path, env: &[(String, String)]) -> Self {
        let name = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let listen = free_addr();
        let child = bin()
            .current_dir(dir)
            .args(args)
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
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait for pipeline");
        assert!(status.success(), "{} ended with {status}", self.name);
    }

    /// SIGKILL: no shutdown, no flush, no commit.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has ended (successfully; a failure fails the test).
    pub fn ended(&mut self) -> bool {
        match self.child.try_wait().expect("wait for pipeline") {
            None => false,
            Some(status) => {
                assert!(status.success(), "{} ended with {status}", self.name);
                true
            }
        }
    }

    /// Waits (up to `PATIENCE`) for a process that ends by itself, such as a run of a
    /// finite source; it must end cleanly.
    pub fn wait_end(mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.ended() {
            assert!(
                Instant::now() < deadline,
                "{} did not end within {PATIENCE:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The sum of the series of metric `name` whose labels include `component="C"`
    /// (None while the stage does not answer).
    pub fn metric(&self, name: &str, component: &str) -> Option<f64> {
        self.metric_labelled(name, component, "")
    }

    /// The `/metrics` page (None while the stage does not answer).
    fn scrape(&self) -> Option<String> {
        self.get("/metrics").map(|(_, body)| body)
    }

    /// Where the stage serves its HTTP endpoints.
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// `GET PATH` of the stage's HTTP server: status and body (None while it does not
    /// answer).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.listen).ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.listen).as_bytes())
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    /// The lines of the series of metric `name` whose labels include `component="C"`.
    fn series(&self, name: &str, component: &str) -> Option<Vec<String>> {
        let prefix = format!("{name}{{");
        let component_label = format!("component=\"{component}\"");
        Some(
            self.scrape()?
                .lines()
                .filter(|l| l.starts_with(&prefix) && l.contains(&component_label))
                .map(str::to_string)
                .collect(),
        )
    }

    /// As [`Stage::metric`], of the series whose labels also include `label`.
    pub fn metric_labelled(&self, name: &str, component: &str, label: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .series(name, component)?
            .iter()
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// `pipeline_component_dropped_events_total` of `component` by reason, those above 0.
    pub fn drops(&self, component: &str) -> BTreeMap<String, u64> {
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

    pub fn count(&self, name: &str, component: &str) -> u64 {
        self.metric(name, component).unwrap_or(0.0) as u64
    }

    pub fn received(&self, component: &str) -> u64 {
        self.count("pipeline_component_received_events_total", component)
    }

    pub fn sent(&self, component: &str) -> u64 {
        self.count("pipeline_component_sent_events_total", component)
    }

    /// The partitions of Kafka source `component` this process reads now (those it reports
    /// a consumer lag for).
    pub fn partitions(&self, component: &str) -> usize {
        self.series("pipeline_kafka_consumer_lag_records", component)
            .map_or(0, |s| s.len())
    }

    /// What an aggregate stage has said so far: (received, accepted, late, rows emitted,
    /// watermark in ms).
    pub fn aggregate(&self, component: &str) -> AggregateCounts {
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
pub struct AggregateCounts {
    pub received: u64,
    pub accepted: u64,
    pub late: u64,
    pub rows: u64,
    pub watermark_ms: i64,
}

/// Polls `now` every 2 s until `done` holds for two polls in a row that returned the same
/// value; returns it. Fails after `PATIENCE` with the last value.
pub fn settle<T: PartialEq + std::fmt::Debug>(
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

/// Polls `now` every 200 ms until `done` holds for its value, which it returns. Fails after
/// `PATIENCE` with the last value.
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    mut now: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = now();
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}: {value:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until an aggregate stage has received `observations` (when known), no count
/// moves any more, and its watermark has passed `until_ms` (the idle rule moves it on once
/// every input is quiet, so every window that can close has closed); returns its counts.
pub fn settle_aggregate(
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
pub fn window_end(ms: i64) -> i64 {
    ms.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS
}

// ---------------------------------------------------------------------------------------
// The split deployment on Kafka

/// Topic names of one test run.
pub struct Topics {
    pub raw: String,
    pub clean: String,
    pub observations: String,
    pub speeds: String,
    pub late: String,
    pub dlq: String,
}

impl Topics {
    /// Creates the topics (4 partitions each) under names of their own.
    pub async fn create(brokers: &str, prefix: &str) -> Self {
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

/// Starts a stage of the split deployment from a copy of the example config `name` whose
/// source topic list names `topic` (replacing `from`), with `env` on top.
fn split_stage(
    fleet: &Fleet,
    name: &str,
    from: &str,
    topic: &str,
    env_pairs: &[(&str, &str)],
    more: &[(String, String)],
) -> Stage {
    let config = config_copy(
        fleet.path(),
        name,
        &[(
            &format!("topics = [\"{from}\"]"),
            format!("topics = [\"{topic}\"]"),
        )],
    );
    let mut vars = env(env_pairs);
    vars.extend(more.iter().cloned());
    Stage::start(&config, fleet.path(), &vars)
}

/// The stages of the split deployment (kafka-ingest, kafka-assign, kafka-aggregate,
/// kafka-experiment) on one test's topics, each config in its own consumer group (every
/// process started from one config joins that config's group).
pub struct Split<'a> {
    fleet: &'a Fleet,
    brokers: &'a str,
    topics: &'a Topics,
    groups: [String; 4],
    graph: String,
    /// The session timeout of the assign processes (default `SESSION_TIMEOUT_MS`).
    pub assign_session_timeout_ms: String,
    /// More variables for both aggregate processes.
    pub aggregate_env: Vec<(String, String)>,
}

impl<'a> Split<'a> {
    pub fn new(fleet: &'a Fleet, brokers: &'a str, topics: &'a Topics) -> Self {
        let n = nonce();
        Self {
            fleet,
            brokers,
            topics,
            groups: [
                format!("ingest-{n}"),
                format!("assign-{n}"),
                format!("aggregate-{n}"),
                format!("experiment-{n}"),
            ],
            graph: fleet.graph.display().to_string(),
            assign_session_timeout_ms: SESSION_TIMEOUT_MS.to_string(),
            aggregate_env: Vec::new(),
        }
    }

    pub fn ingest(&self) -> Stage {
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
            &[],
        )
    }

    pub fn assign(&self) -> Stage {
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
                    &self.assign_session_timeout_ms,
                ),
            ],
            &[],
        )
    }

    pub fn aggregate(&self) -> Stage {
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
            &self.aggregate_env,
        )
    }

    pub fn experiment(&self) -> Stage {
        let t = self.topics;
        split_stage(
            self.fleet,
            "kafka-experiment.toml",
            "observations",
            &t.observations,
            &[
                ("PIPELINE__GRAPH__PATH", &self.graph),
                ("PIPELINE__SOURCES__OBSERVATIONS__BROKERS", self.brokers),
                ("PIPELINE__SOURCES__OBSERVATIONS__GROUP_ID", &self.groups[3]),
                (
                    "PIPELINE__SOURCES__OBSERVATIONS__SESSION_TIMEOUT_MS",
                    SESSION_TIMEOUT_MS,
                ),
            ],
            &self.aggregate_env,
        )
    }

    /// Waits until `stage` (ingest or assign) has received `want` records in `component`
    /// and sent nothing more for a while, then stops it (SIGTERM flushes what it holds);
    /// returns the records now on `topic`.
    /// (More than `want` when a rebalance made it read records again.)
    pub fn drain(&self, stage: Stage, component: &str, want: u64, topic: &str) -> u64 {
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

// ---------------------------------------------------------------------------------------
// The split deployment on Kinesis

/// Stream names of one test run.
pub struct Streams {
    pub clean: String,
    pub observations: String,
    pub speeds: String,
    pub late: String,
}

impl Streams {
    /// Creates the streams (4 shards each) under names of their own.
    pub async fn create(endpoint: &str, prefix: &str) -> Self {
        let n = nonce();
        let s = Self {
            clean: format!("{prefix}-clean-{n}"),
            observations: format!("{prefix}-obs-{n}"),
            speeds: format!("{prefix}-speeds-{n}"),
            late: format!("{prefix}-late-{n}"),
        };
        for stream in [&s.clean, &s.observations, &s.speeds, &s.late] {
            kinesis_emulator::create_stream(endpoint, stream, 4).await;
        }
        s
    }
}

/// The shipped Kinesis stages (kinesis-assign, kinesis-aggregate, kinesis-experiment) on
/// one test's streams, each config under an application name of its own (every process
/// started from one config resumes from that application's checkpoints).
pub struct KinesisSplit<'a> {
    fleet: &'a Fleet,
    endpoint: &'a str,
    streams: &'a Streams,
    applications: [String; 3],
    graph: String,
    /// More variables for both aggregate processes.
    pub aggregate_env: Vec<(String, String)>,
}

impl<'a> KinesisSplit<'a> {
    pub fn new(fleet: &'a Fleet, endpoint: &'a str, streams: &'a Streams) -> Self {
        let n = nonce();
        Self {
            fleet,
            endpoint,
            streams,
            applications: [
                format!("assign-{n}"),
                format!("aggregate-{n}"),
                format!("experiment-{n}"),
            ],
            graph: fleet.graph.display().to_string(),
            aggregate_env: Vec::new(),
        }
    }

    pub fn assign(&self) -> Stage {
        let s = self.streams;
        Stage::start(
            &example("kinesis-assign.toml"),
            self.fleet.path(),
            &env(&[
                ("PIPELINE__GRAPH__PATH", &self.graph),
                ("PIPELINE__SOURCES__CLEANED__ENDPOINT", self.endpoint),
                ("PIPELINE__SOURCES__CLEANED__STREAM", &s.clean),
                (
                    "PIPELINE__SOURCES__CLEANED__APPLICATION",
                    &self.applications[0],
                ),
                ("PIPELINE__SINKS__OBSERVATIONS__ENDPOINT", self.endpoint),
                ("PIPELINE__SINKS__OBSERVATIONS__STREAM", &s.observations),
            ]),
        )
    }

    pub fn aggregate(&self) -> Stage {
        let s = self.streams;
        let mut vars = env(&[
            ("PIPELINE__GRAPH__PATH", &self.graph),
            ("PIPELINE__SOURCES__OBSERVATIONS__ENDPOINT", self.endpoint),
            ("PIPELINE__SOURCES__OBSERVATIONS__STREAM", &s.observations),
            (
                "PIPELINE__SOURCES__OBSERVATIONS__APPLICATION",
                &self.applications[1],
            ),
            ("PIPELINE__SINKS__SPEEDS__ENDPOINT", self.endpoint),
            ("PIPELINE__SINKS__SPEEDS__STREAM", &s.speeds),
            (
                "PIPELINE__SINKS__LATE_OBSERVATIONS__ENDPOINT",
                self.endpoint,
            ),
            ("PIPELINE__SINKS__LATE_OBSERVATIONS__STREAM", &s.late),
        ]);
        vars.extend(self.aggregate_env.iter().cloned());
        Stage::start(&example("kinesis-aggregate.toml"), self.fleet.path(), &vars)
    }

    pub fn experiment(&self) -> Stage {
        let s = self.streams;
        let mut vars = env(&[
            ("PIPELINE__GRAPH__PATH", &self.graph),
            ("PIPELINE__SOURCES__OBSERVATIONS__ENDPOINT", self.endpoint),
            ("PIPELINE__SOURCES__OBSERVATIONS__STREAM", &s.observations),
            (
                "PIPELINE__SOURCES__OBSERVATIONS__APPLICATION",
                &self.applications[2],
            ),
        ]);
        vars.extend(self.aggregate_env.iter().cloned());
        Stage::start(
            &example("kinesis-experiment.toml"),
            self.fleet.path(),
            &vars,
        )
    }
}
