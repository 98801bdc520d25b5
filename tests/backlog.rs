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
use std::time::{Duration, Instant};

use pipeline::record::Probe;

#[path = "common/chain.rs"]
mod chain;

use chain::{
    brokers, config_copy, differences, env, kafka, kinesis_emulator, nonce, one_at_a_time, settle,
    settle_aggregate, speeds_in_parquet, speeds_on_topic, window_end, Fleet, KinesisSplit, Split,
    Stage, Streams, Topics, DURATION_S, SESSION_TIMEOUT_MS, VEHICLES, WINDOW_MS,
};

/// Share of the vehicles whose probes go to partition (shard) 0; the rest are spread over
/// the other three.
const HOT_SHARE: f64 = 0.7;

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
    let streams = Streams::create(&endpoint, "backlog").await;
    let lanes = skewed_lanes(&fleet.probes, 17);
    put_skewed(&endpoint, &streams.clean, &fleet.probes, &lanes).await;
    let total = fleet.probes.len() as u64;
    let split = KinesisSplit::new(&fleet, &endpoint, &streams);

    let assign = split.assign();
    settle(
        "kinesis-assign: probes received and observations written",
        || (assign.received("assign"), assign.received("observations")),
        |&(received, _)| received == total,
    );
    assign.stop();
    let assigned_at = started.elapsed();
    let aggregate = split.aggregate();
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
