//! Crash-exact: one `kill -9` in the middle of a live stream must not change a single
//! published window. The shipped split deployment of `pipelines/` runs as processes, each
//! stage its own `pipeline run`, against the real broker (`PIPELINE_KAFKA_BROKERS`, default
//! 127.0.0.1:9092) or Kinesis emulator (`PIPELINE_KINESIS_ENDPOINT`, default
//! http://127.0.0.1:4567):
//!
//! - Kafka: a feeder (`pipeline run` of a Parquet source paced with `rate`, 15× real time,
//!   into a Kafka sink) puts the probes on the raw topic in time order → kafka-ingest →
//!   kafka-assign → kafka-aggregate (prod: the `speeds` topic and Parquet) and
//!   kafka-experiment (its own group, Parquet).
//! - Kinesis: the feeder puts the probes on the cleaned stream → kinesis-assign →
//!   kinesis-aggregate (the `speeds` stream and Parquet) and kinesis-experiment (Parquet).
//!
//! The fleet is seeded (`pipeline generate` on a grid graph that `pipeline graph build`
//! makes from an OSM fixture the project writes itself: 150 vehicles, 600 s at 5 s), and the
//! harness is `tests/common/chain.rs`, shared with `tests/backlog.rs`. Once a fixed number of
//! observations has been produced (so vehicles are mid-segment and windows are open), one
//! process is killed with SIGKILL: one of two assign instances of a group (not restarted:
//! the survivor takes its partitions over), or the prod aggregate (restarted at once in its
//! group, or on its Kinesis checkpoints, with the same output directory). The feed goes on;
//! at its end the stages are drained front to back and stopped with SIGTERM, after the
//! aggregates' counters stop moving and their watermarks pass the last window.
//!
//! What is compared, and why:
//! - The reference is `pipeline replay` of the same probes with the same stage settings
//!   (kafka-aggregate.toml / kafka-experiment.toml and their Kinesis twins), which a run
//!   without a crash equals. Every output of a run (the speeds topic or stream, read in
//!   order, and each aggregate's Parquet files, read in the order they were completed) is
//!   upserted on (segment_id, window_start_ms, estimator), the last row winning, as a
//!   consumer would, and every window of the reference must be there with the same samples,
//!   vehicles and values (speeds within 1e-9 relative), with no extra window: a crash may
//!   repeat rows, never change what the final rows say. The windows compared are those
//!   ending by the end of the last probe's 60-s window (the experiment's 5-min windows that
//!   end later would only close a few minutes of processing time after the data ends).
//! - Parquet files completed before the crash (name, size and a hash of their contents,
//!   recorded just before the kill) must all still be there unchanged at the end, and no
//!   `.tmp` may be left: a restarted sink must neither lose nor overwrite what is done.
//!   The aggregates roll files every `PARQUET_ROWS_PER_FILE` rows (the shipped 10 000 would
//!   not complete one file before the crash with this fleet, so there would be nothing to
//!   check).
//! - Observations delivered again after the crash (one observation_id on the observations
//!   topic or stream more than once) are counted and printed; they are allowed
//!   (at-least-once), as long as they do not change a window. The first version of each id
//!   is also compared with replay's observation of that id, and the differences printed, to
//!   say where a difference in the windows comes from.
//!
//! Every problem of a run is printed before the test fails, so one run shows them all. When
//! no broker or emulator answers, the tests fail if `CI` is set and are skipped (loudly)
//! otherwise. They wait on counters, never on durations, except for generous limits that
//! turn a hang into a failure. They run one at a time.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pipeline::record::{SegmentObservation, SegmentSpeed};

#[path = "common/chain.rs"]
mod chain;

use chain::{
    brokers, check_observations, differences, kafka, kinesis_emulator, one_at_a_time,
    parquet_files, settle, settle_aggregate, speeds_in_parquet, speeds_on_topic, upsert, wait_for,
    window_end, AggregateCounts, Fleet, KinesisSplit, Speeds, Split, Stage, Streams, Topics,
};

/// The seed of the fleet.
const SEED: u64 = 23;
/// The first probe's event time: on a minute, so that the last probe (at 595 s) is just
/// before the end of a window, and the aggregates' idle rule (which moves the watermark on
/// at the speed of processing time once the input is quiet) closes it soon after the end.
const START_MS: i64 = 1_700_000_040_000;
/// The feed plays event time at this many times real time.
const RATE: u32 = 15;
/// The crash comes once this share of the observations replay makes has been produced.
const CRASH_AT_SHARE: f64 = 0.4;
/// Rows per Parquet file of both aggregates (overriding the shipped 10 000).
const PARQUET_ROWS_PER_FILE: &str = "500";
/// The session timeout of the two assign instances, the shipped 6 s: the survivor takes the
/// killed one's partitions over only once the broker has given up on it, and what it then
/// re-reads must still come within the aggregates' allowed lateness (180 s of event time,
/// 12 s at the feed's rate). The other stages keep the harness's longer timeout.
const ASSIGN_SESSION_TIMEOUT_MS: &str = "6000";

// ---------------------------------------------------------------------------------------
// The reference, the feed and the checks

/// What replay of the fleet gives with the prod and the experiment settings.
struct Reference {
    prod: Speeds,
    experiment: Speeds,
    observations: Vec<SegmentObservation>,
    /// The end of the last window compared: that of the last probe's 60-s window.
    until_ms: i64,
}

impl Reference {
    fn of(fleet: &Fleet, prod: &str, experiment: &str) -> Self {
        let (prod_speeds, prod_late) = fleet.replay(prod);
        let (experiment_speeds, experiment_late) = fleet.replay(experiment);
        assert_eq!(
            (prod_late, experiment_late),
            (0, 0),
            "replay itself counted late observations (prod, experiment)"
        );
        Self {
            prod: prod_speeds,
            experiment: experiment_speeds,
            observations: fleet.replayed_observations(prod),
            until_ms: window_end(fleet.last_ms()),
        }
    }

    /// The observation count at which the crash comes.
    fn crash_at(&self) -> u64 {
        (self.observations.len() as f64 * CRASH_AT_SHARE) as u64
    }
}

/// A `pipeline run` that plays the fleet's Parquet file at `RATE`× real time into `sink`
/// (the TOML of a sink named `raw`), and ends when the file does.
fn feed(fleet: &Fleet, sink: &str) -> Stage {
    let config = fleet.path().join("feed.toml");
    std::fs::write(
        &config,
        format!(
            "edges = [\"recorded -> raw\"]\n\n[sources.recorded]\ntype = \"parquet\"\n\
             paths = [\"{}\"]\nrate = {RATE}\nprogress = false\n\n{sink}",
            fleet.parquet.display()
        ),
    )
    .expect("feed config");
    Stage::start(&config, fleet.path(), &[])
}

/// Environment for both aggregates: Parquet files rolled every `PARQUET_ROWS_PER_FILE`.
fn rolling_parquet() -> Vec<(String, String)> {
    vec![(
        "PIPELINE__SINKS__SPEEDS_PARQUET__MAX_ROWS_PER_FILE".to_string(),
        PARQUET_ROWS_PER_FILE.to_string(),
    )]
}

/// Waits until `prod` (an aggregate) has received the observations to crash at while the
/// feed still runs, notes the completed Parquet files, kills it with `kill -9` and starts
/// it again with `restart`; returns the restarted one and the files found before.
fn kill_9_and_restart(
    what: &str,
    prod: Stage,
    restart: impl FnOnce() -> Stage,
    feeder: &mut Stage,
    reference: &Reference,
    dirs: &[PathBuf],
) -> (Stage, Files) {
    let at_crash = wait_for(
        &format!("{what} has received the observations to crash at"),
        || prod.aggregate("aggregate"),
        |c| c.received >= reference.crash_at(),
    );
    assert!(!feeder.ended(), "the feed ended before the crash");
    let before = completed_files(dirs);
    prod.kill_9();
    let prod = restart();
    eprintln!(
        "kill -9 of {what} at {at_crash:?} (replay: {} observations); restarted; {} Parquet          files completed",
        reference.observations.len(),
        before.len()
    );
    (prod, before)
}

/// When each phase of a run ended, from its start.
struct Timeline {
    prepared: Duration,
    crashed: Duration,
    fed: Duration,
    drained: Duration,
}

impl Timeline {
    /// Prints the run's line: what was killed, the times, and the observations delivered
    /// more than once.
    fn report(&self, what: &str, probes: usize, repeats: usize) {
        eprintln!(
            "{what}: {probes} probes at {RATE}x real time; set up in {:.0} s, crash at {:.0} s, \
             feed done at {:.0} s, stages drained at {:.0} s; {repeats} observations \
             re-delivered",
            self.prepared.as_secs_f64(),
            self.crashed.as_secs_f64(),
            self.fed.as_secs_f64(),
            self.drained.as_secs_f64()
        );
    }
}

/// A completed Parquet file as found: its size, a hash of its contents, and its inode and
/// modification time (a file written again under the same name, even with the same
/// contents, is another inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    size: u64,
    hash: u64,
    inode: u64,
    modified_ns: i128,
}

/// Completed Parquet files by path.
type Files = BTreeMap<PathBuf, FileState>;

fn completed_files(dirs: &[PathBuf]) -> Files {
    use std::os::unix::fs::MetadataExt;
    dirs.iter()
        .filter(|d| d.exists())
        .flat_map(|d| parquet_files(d))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let meta = std::fs::metadata(&path).expect("file metadata");
            let mut hash = std::hash::DefaultHasher::new();
            hash.write(&bytes);
            let state = FileState {
                size: bytes.len() as u64,
                hash: hash.finish(),
                inode: meta.ino(),
                modified_ns: i128::from(meta.mtime()) * 1_000_000_000
                    + i128::from(meta.mtime_nsec()),
            };
            (path, state)
        })
        .collect()
}

/// Problems with the files of `dirs` at the end: a file completed before the crash
/// (`before`) missing or changed, a `.tmp` left.
fn file_problems(before: &Files, dirs: &[PathBuf]) -> Vec<String> {
    let after = completed_files(dirs);
    let mut problems = Vec::new();
    for (path, was) in before {
        match after.get(path) {
            None => problems.push(format!("lost {}", path.display())),
            Some(now) if (now.size, now.hash) != (was.size, was.hash) => problems.push(format!(
                "overwritten {}: {} bytes before the crash, {} bytes of other contents after",
                path.display(),
                was.size,
                now.size
            )),
            Some(now) if now != was => problems.push(format!(
                "overwritten {} (with the same contents: another inode or modification time)",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|x| x == "tmp") {
                problems.push(format!("left {}", entry.path().display()));
            }
        }
    }
    if !problems.is_empty() {
        eprintln!(
            "Parquet files: {} completed before the crash, {} at the end; {} problems:",
            before.len(),
            after.len(),
            problems.len()
        );
        for p in &problems {
            eprintln!("  {p}");
        }
    }
    problems
}

/// Everything a run got wrong, printed as it is found, asserted at the end.
#[derive(Default)]
struct Verdict {
    problems: Vec<String>,
}

impl Verdict {
    /// Compares the final speeds of one output with the reference's.
    fn windows(&mut self, what: &str, got: &Speeds, want: &Speeds, until_ms: i64) {
        let diffs = differences(what, got, want, Some(until_ms));
        let compared = want
            .values()
            .filter(|w| w.window_end_ms <= until_ms)
            .count();
        if diffs.is_empty() {
            eprintln!("{what}: all {compared} windows equal replay's");
        } else {
            let count = |kind: &str| diffs.iter().filter(|d| d.starts_with(kind)).count();
            self.problems.push(format!(
                "{what}: {} of {compared} windows differ ({} missing, {} other values, {} \
                 extra); first: {}",
                diffs.len(),
                count("missing"),
                count("differs"),
                count("extra"),
                diffs[0]
            ));
        }
    }

    fn files(&mut self, before: &Files, dirs: &[PathBuf]) {
        let problems = file_problems(before, dirs);
        if !problems.is_empty() {
            self.problems.push(format!(
                "{} problems with the Parquet files completed before the crash ({}): {}",
                problems.len(),
                before.len(),
                problems.join("; ")
            ));
        }
    }

    fn assert_none(self, what: &str, started: Instant) {
        eprintln!(
            "{what}: {:.0} s in all, {} problems",
            started.elapsed().as_secs_f64(),
            self.problems.len()
        );
        assert!(
            self.problems.is_empty(),
            "{what}:\n  {}",
            self.problems.join("\n  ")
        );
    }
}

fn output_dirs(fleet: &Fleet, names: [&str; 2]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| fleet.path().join("out").join(n))
        .collect()
}

/// Final speeds of a Parquet output directory.
fn parquet_speeds(dir: &Path) -> Speeds {
    speeds_in_parquet(dir).1
}

// ---------------------------------------------------------------------------------------
// Kafka

/// The running Kafka stages: ingest, the assign instance that is left, both aggregates.
struct KafkaStages {
    ingest: Stage,
    assign: Stage,
    prod: Stage,
    experiment: Stage,
}

impl KafkaStages {
    /// Drains the chain once the feed has ended: the raw topic read to its end by ingest,
    /// the cleaned topic by assign (which must own all four partitions), then both
    /// aggregates settled past the last window compared; each stopped with SIGTERM in
    /// turn. Returns the aggregates' counts.
    fn drain(
        self,
        split: &Split,
        fleet: &Fleet,
        topics: &Topics,
        until_ms: i64,
    ) -> [AggregateCounts; 2] {
        let Self {
            ingest,
            assign,
            prod,
            experiment,
        } = self;
        split.drain(ingest, "clean", fleet.probes.len() as u64, &topics.clean);
        settle(
            &format!("{}: partitions owned and probes received", assign.name),
            || (assign.partitions("cleaned"), assign.received("assign")),
            |&(partitions, _)| partitions == 4,
        );
        assign.stop();
        let counts = [
            settle_aggregate(&prod, "aggregate", None, until_ms),
            settle_aggregate(&experiment, "aggregate", None, until_ms),
        ];
        prod.stop();
        experiment.stop();
        counts
    }
}

/// The Kafka outputs against the reference: the speeds topic and both Parquet directories;
/// the observations topic's re-deliveries printed.
fn check_kafka(
    verdict: &mut Verdict,
    brokers: &str,
    topics: &Topics,
    dirs: &[PathBuf],
    reference: &Reference,
) -> usize {
    let (rows, on_topic) = speeds_on_topic(brokers, &topics.speeds);
    eprintln!("speeds topic: {rows} rows, {} windows", on_topic.len());
    let until = reference.until_ms;
    verdict.windows("prod, speeds topic", &on_topic, &reference.prod, until);
    verdict.windows(
        "prod, Parquet",
        &parquet_speeds(&dirs[0]),
        &reference.prod,
        until,
    );
    verdict.windows(
        "experiment, Parquet",
        &parquet_speeds(&dirs[1]),
        &reference.experiment,
        until,
    );
    // Re-delivered observations are allowed; how the first versions compare with replay's
    // is printed, to say where a difference in the windows comes from.
    check_observations(
        "observations topic",
        &kafka::read_all(brokers, &topics.observations),
        &reference.observations,
    )
    .copies
}

/// Kafka, the assign stage scaled to two processes in one group (4 partitions): once the
/// fixed number of observations is out and both have work, one is killed with `kill -9`
/// and not restarted; the survivor takes its partitions over after the session timeout and
/// re-reads from the killed one's commits. Every window of both aggregates equals replay's,
/// no Parquet file is lost or overwritten; re-delivered observations are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_kill_9_of_one_of_two_assign_instances_changes_no_window() {
    let Some(brokers) = brokers() else { return };
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let fleet = Fleet::starting_at(SEED, Some(START_MS));
    let reference = Reference::of(&fleet, "kafka-aggregate.toml", "kafka-experiment.toml");
    let topics = Topics::create(&brokers, "crash-assign").await;
    let mut split = Split::new(&fleet, &brokers, &topics);
    split.assign_session_timeout_ms = ASSIGN_SESSION_TIMEOUT_MS.to_string();
    split.aggregate_env = rolling_parquet();
    let dirs = output_dirs(&fleet, ["kafka-aggregate", "kafka-experiment"]);
    let prepared = started.elapsed();

    let (prod, experiment) = (split.aggregate(), split.experiment());
    let (survivor, victim) = (split.assign(), split.assign());
    let ingest = split.ingest();
    let mut feeder = feed(
        &fleet,
        &format!(
            "[sinks.raw]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{}\"\n\
             encoding = \"json\"\nlinger_ms = 5\n",
            topics.raw
        ),
    );
    let crash_at = reference.crash_at();
    let at_crash = wait_for(
        "both assign instances have work and the observations to crash at are out",
        || {
            (
                survivor.received("assign"),
                victim.received("assign"),
                survivor.received("observations") + victim.received("observations"),
            )
        },
        |&(a, b, sent)| a > 0 && b > 0 && sent >= crash_at,
    );
    assert!(!feeder.ended(), "the feed ended before the crash");
    let before = completed_files(&dirs);
    victim.kill_9();
    let crashed = started.elapsed();
    eprintln!(
        "kill -9 of one assign instance after {} of replay's {} observations (probes received \
         by survivor, victim; observations written: {at_crash:?}); {} Parquet files completed",
        at_crash.2,
        reference.observations.len(),
        before.len()
    );
    feeder.wait_end();
    let fed = started.elapsed();
    let stages = KafkaStages {
        ingest,
        assign: survivor,
        prod,
        experiment,
    };
    let counts = stages.drain(&split, &fleet, &topics, reference.until_ms);
    let timeline = Timeline {
        prepared,
        crashed,
        fed,
        drained: started.elapsed(),
    };
    eprintln!("aggregates (prod, experiment): {counts:?}");

    let mut verdict = Verdict::default();
    let repeats = check_kafka(&mut verdict, &brokers, &topics, &dirs, &reference);
    verdict.files(&before, &dirs);
    timeline.report("assign killed", fleet.probes.len(), repeats);
    verdict.assert_none("kill -9 of one of two assign instances", started);
}

/// Kafka, the prod aggregate killed with `kill -9` once it has received the fixed number of
/// observations, and restarted at once in its group with the same output directory (the
/// experiment aggregate runs on untouched): the restarted one re-reads from the killed
/// one's commits. Every window equals replay's, in the speeds topic and in the Parquet
/// files, and no Parquet file completed before the crash is lost or overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_kill_9_and_restart_of_the_prod_aggregate_changes_no_window() {
    let Some(brokers) = brokers() else { return };
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let fleet = Fleet::starting_at(SEED, Some(START_MS));
    let reference = Reference::of(&fleet, "kafka-aggregate.toml", "kafka-experiment.toml");
    let topics = Topics::create(&brokers, "crash-aggregate").await;
    let mut split = Split::new(&fleet, &brokers, &topics);
    split.aggregate_env = rolling_parquet();
    let dirs = output_dirs(&fleet, ["kafka-aggregate", "kafka-experiment"]);
    let prepared = started.elapsed();

    let (prod, experiment) = (split.aggregate(), split.experiment());
    let assign = split.assign();
    let ingest = split.ingest();
    let mut feeder = feed(
        &fleet,
        &format!(
            "[sinks.raw]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{}\"\n\
             encoding = \"json\"\nlinger_ms = 5\n",
            topics.raw
        ),
    );
    let (prod, before) = kill_9_and_restart(
        "the prod aggregate",
        prod,
        || split.aggregate(),
        &mut feeder,
        &reference,
        &dirs,
    );
    let crashed = started.elapsed();
    feeder.wait_end();
    let fed = started.elapsed();
    let stages = KafkaStages {
        ingest,
        assign,
        prod,
        experiment,
    };
    let counts = stages.drain(&split, &fleet, &topics, reference.until_ms);
    let timeline = Timeline {
        prepared,
        crashed,
        fed,
        drained: started.elapsed(),
    };
    eprintln!("aggregates (restarted prod, experiment): {counts:?}");

    let mut verdict = Verdict::default();
    let repeats = check_kafka(&mut verdict, &brokers, &topics, &dirs, &reference);
    verdict.files(&before, &dirs);
    timeline.report(
        "prod aggregate killed and restarted",
        fleet.probes.len(),
        repeats,
    );
    verdict.assert_none("kill -9 and restart of the prod aggregate", started);
}

// ---------------------------------------------------------------------------------------
// Kinesis

/// Kinesis, the shipped kinesis-* configs against the emulator: the kinesis-aggregate
/// process killed with `kill -9` once it has received the fixed number of observations,
/// and restarted at once on its checkpoints with the same output directory. Every window
/// equals replay's, on the speeds stream and in the Parquet files of both aggregates, and no
/// Parquet file completed before the crash is lost or overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_kill_9_and_restart_of_the_prod_aggregate_changes_no_window() {
    let Some(endpoint) = kinesis_emulator::emulator() else {
        return;
    };
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let fleet = Fleet::starting_at(SEED, Some(START_MS));
    let reference = Reference::of(&fleet, "kinesis-aggregate.toml", "kinesis-experiment.toml");
    let streams = Streams::create(&endpoint, "crash").await;
    let mut split = KinesisSplit::new(&fleet, &endpoint, &streams);
    split.aggregate_env = rolling_parquet();
    let dirs = output_dirs(&fleet, ["kinesis-aggregate", "kinesis-experiment"]);
    let prepared = started.elapsed();

    let (prod, experiment) = (split.aggregate(), split.experiment());
    let assign = split.assign();
    let mut feeder = feed(
        &fleet,
        &format!(
            "[sinks.raw]\ntype = \"kinesis\"\nstream = \"{}\"\nregion = \"us-east-1\"\n\
             endpoint = \"{endpoint}\"\nencoding = \"json\"\n",
            streams.clean
        ),
    );
    let (prod, before) = kill_9_and_restart(
        "the Kinesis prod aggregate",
        prod,
        || split.aggregate(),
        &mut feeder,
        &reference,
        &dirs,
    );
    let crashed = started.elapsed();
    feeder.wait_end();
    let fed = started.elapsed();
    let total = fleet.probes.len() as u64;
    settle(
        "kinesis-assign: probes received",
        || assign.received("assign"),
        |&received| received == total,
    );
    assign.stop();
    let counts = [
        settle_aggregate(&prod, "aggregate", None, reference.until_ms),
        settle_aggregate(&experiment, "aggregate", None, reference.until_ms),
    ];
    prod.stop();
    experiment.stop();
    let timeline = Timeline {
        prepared,
        crashed,
        fed,
        drained: started.elapsed(),
    };
    eprintln!("aggregates (restarted prod, experiment): {counts:?}");

    let mut verdict = Verdict::default();
    let speeds: Vec<SegmentSpeed> = kinesis_emulator::read_stream(&endpoint, &streams.speeds)
        .await
        .iter()
        .map(|payload| serde_json::from_slice(payload).expect("a speed row"))
        .collect();
    eprintln!("speeds stream: {} rows", speeds.len());
    let until = reference.until_ms;
    verdict.windows(
        "prod, speeds stream",
        &upsert(speeds),
        &reference.prod,
        until,
    );
    verdict.windows(
        "prod, Parquet",
        &parquet_speeds(&dirs[0]),
        &reference.prod,
        until,
    );
    verdict.windows(
        "experiment, Parquet",
        &parquet_speeds(&dirs[1]),
        &reference.experiment,
        until,
    );
    let repeats = check_observations(
        "observations stream",
        &kinesis_emulator::read_stream(&endpoint, &streams.observations).await,
        &reference.observations,
    )
    .copies;
    verdict.files(&before, &dirs);
    timeline.report(
        "Kinesis prod aggregate killed and restarted",
        fleet.probes.len(),
        repeats,
    );
    verdict.assert_none("kill -9 and restart of the Kinesis prod aggregate", started);
}
