//! Kinesis connectors against a real emulator (kinesalite, `scripts/services/kinesis.sh
//! start`, which `make test` runs): round trips of every record type over a 4-shard stream,
//! restarts from checkpoints without loss, two instances splitting the shards, a
//! MergeShards during consumption (parents before the child), and an aggregate killed with
//! `kill -9` that skips, after its restart, what it had finalized before. Faults the
//! emulator never produces (partial PutRecords failures, throttling, expired iterators) are
//! injected with a mocked SDK client (`aws-smithy-mocks`).
//!
//! The endpoint comes from `PIPELINE_KINESIS_ENDPOINT` (default http://127.0.0.1:4567).
//! When nothing answers there, these tests fail if `CI` is set and are skipped (loudly)
//! otherwise. Every test uses its own streams and checkpoint directory. They wait on
//! records, never on durations, except for generous limits that turn a hang into a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use pipeline::config::RuntimeConfig;
use pipeline::connector::kinesis::{KinesisClient, KinesisSinkConfig, KinesisSourceConfig};
use pipeline::record::{
    Encoding, MatchedPoint, Probe, RecordKind, SegmentObservation, SegmentSpeed,
};
use pipeline::runtime::{
    Batch, BoxError, Component, Input, Link, Output, Records, Sink, Source, Topology, VecSource,
};

#[path = "common/kinesis_emulator.rs"]
mod kinesis_emulator;
use kinesis_emulator::{admin, create_stream, emulator, wait_active};
#[path = "common/restart.rs"]
mod restart;
use restart::{ndjson_lines, restart_observations, settle, upsert_speeds, WindowKey};

const T0: i64 = 1_700_000_000_000;
/// Generous limit for a test to see its records; a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(120);

fn nonce() -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{ns}", std::process::id())
}

fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        channel_capacity_batches: 4,
        shutdown_timeout_ms: 60_000,
    }
}

/// What a collecting sink saw: (lane = shard number, records) in arrival order.
type Seen = Arc<Mutex<Vec<(u32, Records)>>>;

/// Collects what arrives; acknowledges the first `ack_batches` batches (all when None) and
/// then fails; cancels `stop` once `want` records have arrived in `total`.
struct CollectSink {
    got: Seen,
    ack_batches: Option<usize>,
    total: Arc<Mutex<usize>>,
    want: usize,
    stop: CancellationToken,
}

#[async_trait]
impl Sink for CollectSink {
    async fn run(self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        let mut batches = 0;
        while let Some(batch) = input.next().await {
            if self.ack_batches.is_some_and(|n| batches >= n) {
                batch.acks.fail();
                return Err("sink failed before writing (simulated)".into());
            }
            batches += 1;
            let n = batch.len();
            self.got
                .lock()
                .map_err(|_| "poisoned")?
                .push((batch.input, batch.records.clone()));
            batch.acks.ack();
            let mut total = self.total.lock().map_err(|_| "poisoned")?;
            *total += n;
            if *total >= self.want {
                self.stop.cancel();
            }
        }
        Ok(())
    }
}

fn sink_config(endpoint: &str, stream: &str, encoding: Encoding) -> KinesisSinkConfig {
    let mut c: KinesisSinkConfig = toml::from_str(&format!(
        "stream = \"{stream}\"\nendpoint = \"{endpoint}\"\nflush_interval_ms = 20"
    ))
    .expect("sink config");
    c.encoding = encoding;
    c
}

async fn produce(endpoint: &str, stream: &str, encoding: Encoding, batches: Vec<Records>) {
    let sink = sink_config(endpoint, stream, encoding);
    let topology = Topology::new(
        vec![
            (
                "src".to_string(),
                Component::Source(Box::new(VecSource(batches))),
            ),
            (
                "kinesis_out".to_string(),
                Component::Sink(sink.build("kinesis_out").expect("sink")),
            ),
        ],
        vec![Link::any("src", "kinesis_out")],
        &runtime_config(),
    );
    tokio::time::timeout(PATIENCE, topology.run(CancellationToken::new()))
        .await
        .expect("producing within the limit")
        .expect("producing to Kinesis");
}

fn source_config(
    endpoint: &str,
    stream: &str,
    application: &str,
    kind: RecordKind,
    encoding: Encoding,
    checkpoints: &std::path::Path,
) -> KinesisSourceConfig {
    let mut c: KinesisSourceConfig = toml::from_str(&format!(
        "stream = \"{stream}\"\nendpoint = \"{endpoint}\"\napplication = \"{application}\"\n\
         record = \"probe\"\nget_records_limit = 50\npoll_interval_ms = 20\n\
         checkpoint_interval_ms = 50\nshard_refresh_interval_ms = 100\nretry_base_ms = 10\n\
         retry_max_ms = 200\ncheckpoint_dir = \"{}\"",
        checkpoints.display()
    ))
    .expect("source config");
    c.record = kind;
    c.encoding = encoding;
    c
}

/// Consumes until `want` records arrived in `total` (shared between concurrent consumers)
/// or the sink fails; returns what this consumer saw and the run's result.
async fn consume_shared(
    source: KinesisSourceConfig,
    want: usize,
    ack_batches: Option<usize>,
    total: Arc<Mutex<usize>>,
    stop: CancellationToken,
) -> (Vec<(u32, Records)>, Result<(), String>) {
    let got: Seen = Arc::new(Mutex::new(Vec::new()));
    let sink = CollectSink {
        got: got.clone(),
        ack_batches,
        total,
        want,
        stop: stop.clone(),
    };
    let topology = Topology::new(
        vec![
            (
                "kinesis_in".to_string(),
                Component::Source(source.build("kinesis_in").expect("source")),
            ),
            ("collect".to_string(), Component::Sink(Box::new(sink))),
        ],
        vec![Link::any("kinesis_in", "collect")],
        &runtime_config(),
    );
    let result = tokio::time::timeout(PATIENCE, topology.run(stop))
        .await
        .map_err(|_| format!("no {want} records within {PATIENCE:?}"))
        .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()));
    let records = got.lock().map(|g| g.clone()).unwrap_or_default();
    (records, result)
}

async fn consume(
    source: KinesisSourceConfig,
    want: usize,
    ack_batches: Option<usize>,
) -> (Vec<(u32, Records)>, Result<(), String>) {
    consume_shared(
        source,
        want,
        ack_batches,
        Arc::default(),
        CancellationToken::new(),
    )
    .await
}

fn probes(n: usize) -> Vec<Probe> {
    (0..n)
        .map(|i| {
            Probe::new(
                format!("veh-{}", i % 37),
                T0 + i as i64 * 1000,
                60.17 + i as f64 * 1e-5,
                24.94,
            )
        })
        .collect()
}

fn observations(n: usize) -> Vec<SegmentObservation> {
    (0..n)
        .map(|i| SegmentObservation {
            observation_id: i as u64,
            segment_id: 1000 + (i % 13) as u64,
            vehicle_id: format!("veh-{}", i % 7),
            enter_ts_ms: T0 + i as i64 * 1000,
            exit_ts_ms: T0 + i as i64 * 1000 + 4000,
            traversed_m: 50.0,
            speed_mps: 12.5,
            next_segment_id: (i % 2 == 0).then_some(7),
            flags: (i % 3) as u32,
        })
        .collect()
}

fn matched_points(n: usize) -> Vec<MatchedPoint> {
    probes(n)
        .into_iter()
        .enumerate()
        .map(|(i, probe)| MatchedPoint {
            segment_id: 500 + (i % 11) as u64,
            offset_m: i as f64 * 0.5,
            snapped_lat: probe.lat + 1e-6,
            snapped_lon: probe.lon - 1e-6,
            distance_m: (i % 7) as f64,
            probe,
        })
        .collect()
}

fn speeds(n: usize) -> Vec<SegmentSpeed> {
    (0..n)
        .map(|i| SegmentSpeed {
            segment_id: 900 + (i % 13) as u64,
            window_start_ms: T0 + (i / 13) as i64 * 60_000,
            window_end_ms: T0 + (i / 13 + 1) as i64 * 60_000,
            estimator: if i % 2 == 0 { "space_mean" } else { "median" }.into(),
            samples: 3 + i as u32,
            vehicles: 2,
            speed_mps: 9.5 + i as f64 * 0.01,
            p15_speed_mps: Some(7.25),
            p50_speed_mps: (i % 3 == 0).then_some(9.0),
            p85_speed_mps: Some(11.5),
            travel_time_s: 12.0,
            graph_version: 42,
            revision: (i % 2) as u32,
        })
        .collect()
}

fn all_probes(batches: &[(u32, Records)]) -> Vec<Probe> {
    let mut v: Vec<Probe> = batches
        .iter()
        .flat_map(|(_, r)| match r {
            Records::Probes(p) => p.clone(),
            _ => Vec::new(),
        })
        .collect();
    v.sort_by(|a, b| (a.ts_ms, &a.vehicle_id).cmp(&(b.ts_ms, &b.vehicle_id)));
    v
}

/// How one record type goes into and comes out of `Records`.
type Variant<T> = (fn(Vec<T>) -> Records, fn(Records) -> Option<Vec<T>>);

/// Sends `sent` through a fresh 4-shard stream in `encoding`, reads it back from
/// TRIM_HORIZON and checks that the same records arrive (a multiset, compared in `key`
/// order) and that all four shards carried some.
#[allow(clippy::too_many_arguments)]
async fn round_trip<T: Clone + PartialEq + std::fmt::Debug, K: Ord>(
    endpoint: &str,
    name: &str,
    encoding: Encoding,
    kind: RecordKind,
    sent: &[T],
    (wrap, unwrap): Variant<T>,
    key: fn(&T) -> K,
) {
    let stream = format!("rt-{name}-{encoding:?}-{}", nonce());
    create_stream(endpoint, &stream, 4).await;
    produce(endpoint, &stream, encoding, vec![wrap(sent.to_vec())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = source_config(endpoint, &stream, "rt", kind, encoding, dir.path());
    let (got, result) = consume(source, sent.len(), None).await;
    result.unwrap_or_else(|e| panic!("{name} round trip in {encoding:?}: {e}"));
    let lanes: BTreeSet<u32> = got.iter().map(|(lane, _)| *lane).collect();
    assert_eq!(lanes.len(), 4, "{name}: records came from shards {lanes:?}");
    let mut got: Vec<T> = got
        .into_iter()
        .filter_map(|(_, r)| unwrap(r))
        .flatten()
        .collect();
    got.sort_by_key(key);
    let mut want = sent.to_vec();
    want.sort_by_key(key);
    assert_eq!(got.len(), want.len(), "{name} in {encoding:?}: count");
    assert_eq!(got, want, "{name} in {encoding:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_round_trip_every_record_type_over_four_shards() {
    let Some(endpoint) = emulator() else { return };
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        round_trip(
            &endpoint,
            "probes",
            encoding,
            RecordKind::Probe,
            &probes(400),
            (Records::Probes, |r| match r {
                Records::Probes(v) => Some(v),
                _ => None,
            }),
            |p| (p.ts_ms, p.vehicle_id.clone()),
        )
        .await;
        round_trip(
            &endpoint,
            "matched",
            encoding,
            RecordKind::MatchedPoint,
            &matched_points(200),
            (Records::MatchedPoints, |r| match r {
                Records::MatchedPoints(v) => Some(v),
                _ => None,
            }),
            |m| m.probe.ts_ms,
        )
        .await;
        round_trip(
            &endpoint,
            "observations",
            encoding,
            RecordKind::SegmentObservation,
            &observations(300),
            (Records::Observations, |r| match r {
                Records::Observations(v) => Some(v),
                _ => None,
            }),
            |o| o.observation_id,
        )
        .await;
        round_trip(
            &endpoint,
            "speeds",
            encoding,
            RecordKind::SegmentSpeed,
            &speeds(200),
            (Records::Speeds, |r| match r {
                Records::Speeds(v) => Some(v),
                _ => None,
            }),
            |s| (s.window_start_ms, s.segment_id, s.samples),
        )
        .await;
    }
}

type Key = (String, i64);

/// The type and starting sequence number of a GetShardIterator or SubscribeToShard request.
type IteratorRequest = (aws_sdk_kinesis::types::ShardIteratorType, Option<String>);

fn key(p: &Probe) -> Key {
    (p.vehicle_id.clone(), p.ts_ms)
}

/// Stop a consumer mid-stream (a clean shutdown), then fail its sink mid-stream, and
/// restart each time from the checkpoints: nothing is lost; duplicates are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_restart_from_checkpoint_loses_nothing() {
    let Some(endpoint) = emulator() else { return };
    let stream = format!("restart-{}", nonce());
    create_stream(&endpoint, &stream, 4).await;
    let sent = probes(2_000);
    let batches = sent
        .chunks(250)
        .map(|c| Records::Probes(c.to_vec()))
        .collect();
    produce(&endpoint, &stream, Encoding::Json, batches).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = source_config(
        &endpoint,
        &stream,
        "app",
        RecordKind::Probe,
        Encoding::Json,
        dir.path(),
    );

    // First run: a clean stop once 500 records have arrived.
    let (first, result) = consume(source.clone(), 500, None).await;
    result.expect("the first run stops cleanly");
    let first = all_probes(&first);
    assert!(
        first.len() >= 500 && first.len() < sent.len(),
        "first run: {}",
        first.len()
    );

    // Second run: the sink writes 6 batches of at most 50, then fails with more in hand.
    let (second, result) = consume(source.clone(), sent.len(), Some(6)).await;
    assert!(
        result.is_err(),
        "the second run must stop with the sink's error"
    );
    let second = all_probes(&second);

    // Third run: reads the rest, from the checkpoints the failure left.
    let written: BTreeSet<Key> = first.iter().chain(&second).map(key).collect();
    let missing = sent.iter().filter(|p| !written.contains(&key(p))).count();
    assert!(missing > 0, "the failing run must leave records unread");
    let (third, result) = consume(source, missing, None).await;
    let third = all_probes(&third);
    let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
    for p in first.iter().chain(&second).chain(&third) {
        *seen.entry(key(p)).or_default() += 1;
    }
    let lost: Vec<_> = sent
        .iter()
        .filter(|p| !seen.contains_key(&key(p)))
        .collect();
    assert!(
        lost.is_empty() && result.is_ok(),
        "{} records lost (e.g. {:?}); third run: {result:?}",
        lost.len(),
        lost.first()
    );
    let duplicates: usize = seen.values().map(|&c| c - 1).sum();
    eprintln!(
        "kinesis at-least-once: {} sent; runs got {}, {} (then failed), {}; {duplicates} duplicates",
        sent.len(),
        first.len(),
        second.len(),
        third.len()
    );
}

/// Two instances (index 0 and 1 of 2) share the stream: each reads two of the four
/// shards, none twice, and together they read everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_two_instances_split_the_shards() {
    let Some(endpoint) = emulator() else { return };
    let stream = format!("split-{}", nonce());
    create_stream(&endpoint, &stream, 4).await;
    let sent = probes(1_000);
    produce(
        &endpoint,
        &stream,
        Encoding::Json,
        vec![Records::Probes(sent.clone())],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let total = Arc::new(Mutex::new(0));
    let stop = CancellationToken::new();
    let instance = |index: u32| {
        let mut c = source_config(
            &endpoint,
            &stream,
            "app",
            RecordKind::Probe,
            Encoding::Json,
            dir.path(),
        );
        c.instance_index = index;
        c.instance_count = 2;
        consume_shared(c, sent.len(), None, total.clone(), stop.clone())
    };
    let ((a, ra), (b, rb)) = tokio::join!(instance(0), instance(1));
    ra.expect("instance 0");
    rb.expect("instance 1");
    let lanes = |got: &[(u32, Records)]| got.iter().map(|(l, _)| *l).collect::<BTreeSet<u32>>();
    let (la, lb) = (lanes(&a), lanes(&b));
    assert_eq!(la.len(), 2, "instance 0 read shards {la:?}");
    assert_eq!(lb.len(), 2, "instance 1 read shards {lb:?}");
    assert!(la.is_disjoint(&lb), "{la:?} and {lb:?} overlap");
    let mut all = all_probes(&a);
    all.extend(all_probes(&b));
    all.sort_by(|x, y| (x.ts_ms, &x.vehicle_id).cmp(&(y.ts_ms, &y.vehicle_id)));
    let mut want = sent.clone();
    want.sort_by(|x, y| (x.ts_ms, &x.vehicle_id).cmp(&(y.ts_ms, &y.vehicle_id)));
    assert_eq!(all, want, "together, once each");
}

/// MergeShards while a consumer reads: records written before go to the two parents,
/// records written after to the child. Every parent batch arrives before the first child
/// batch, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_merge_shards_reads_parents_before_the_child() {
    let Some(endpoint) = emulator() else { return };
    let stream = format!("merge-{}", nonce());
    create_stream(&endpoint, &stream, 2).await;
    let before = probes(600);
    produce(
        &endpoint,
        &stream,
        Encoding::Json,
        vec![Records::Probes(before.clone())],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = source_config(
        &endpoint,
        &stream,
        "app",
        RecordKind::Probe,
        Encoding::Json,
        dir.path(),
    );
    let after: Vec<Probe> = probes(1_000).split_off(600);
    let total = Arc::new(Mutex::new(0));
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(consume_shared(
        source,
        1_000,
        None,
        total.clone(),
        stop.clone(),
    ));

    // Merge once the consumer is under way, then write the rest (to the child).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while total.lock().map(|t| *t).unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = admin(&endpoint);
    let shards = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("list shards");
    let ids: Vec<String> = shards
        .shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    client
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge(&ids[0])
        .adjacent_shard_to_merge(&ids[1])
        .send()
        .await
        .expect("merge shards");
    wait_active(&client, &stream).await;
    produce(
        &endpoint,
        &stream,
        Encoding::Json,
        vec![Records::Probes(after.clone())],
    )
    .await;

    let (got, result) = consumer.await.expect("consumer task");
    result.expect("consuming across the merge");
    let child_lane = 2;
    let first_child = got.iter().position(|(lane, _)| *lane == child_lane);
    let last_parent = got.iter().rposition(|(lane, _)| *lane != child_lane);
    let (Some(first_child), Some(last_parent)) = (first_child, last_parent) else {
        panic!(
            "expected batches from the parents and the child: {:?}",
            got.iter().map(|(l, r)| (*l, r.len())).collect::<Vec<_>>()
        );
    };
    assert!(
        last_parent < first_child,
        "a parent batch (#{last_parent}) came after the first child batch (#{first_child})"
    );
    let child: BTreeSet<Key> = got
        .iter()
        .filter(|(lane, _)| *lane == child_lane)
        .flat_map(|(_, r)| all_probes(&[(0, r.clone())]))
        .map(|p| key(&p))
        .collect();
    let after_keys: BTreeSet<Key> = after.iter().map(key).collect();
    assert_eq!(
        child, after_keys,
        "the child holds exactly what was written after the merge"
    );
    let mut all = all_probes(&got);
    all.dedup();
    let mut want = before;
    want.extend(after);
    want.sort_by(|x, y| (x.ts_ms, &x.vehicle_id).cmp(&(y.ts_ms, &y.vehicle_id)));
    assert_eq!(all, want, "nothing lost");
}

// ---- Faults the emulator never produces, injected through a mocked SDK client ----

mod faults {
    use super::*;
    use aws_sdk_kinesis::config::retry::RetryConfig;
    use aws_sdk_kinesis::error::ErrorMetadata;
    use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
    use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput;
    use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
    use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::error::{
        ExpiredIteratorException, ProvisionedThroughputExceededException,
    };
    use aws_sdk_kinesis::types::{
        HashKeyRange, PutRecordsResultEntry, Record, SequenceNumberRange, Shard, ShardIteratorType,
    };
    use aws_smithy_mocks::{mock, mock_client, MockResponse, Rule, RuleMode};
    use pipeline::connector::kinesis::{Checkpoint, FileCheckpointStore};

    const THROTTLED: &str = "ProvisionedThroughputExceededException";

    fn throttled() -> ProvisionedThroughputExceededException {
        ProvisionedThroughputExceededException::builder()
            .message("Rate exceeded for shard")
            .meta(ErrorMetadata::builder().code(THROTTLED).build())
            .build()
    }

    /// A client whose every call is answered by `rules`; the SDK's own retries are off, so
    /// each fault reaches the connector.
    fn mocked(rules: &[&Rule]) -> KinesisClient {
        mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, rules, |c| c
            .retry_config(RetryConfig::disabled()))
    }

    fn payloads(req: &aws_sdk_kinesis::operation::put_records::PutRecordsInput) -> Vec<String> {
        req.records()
            .iter()
            .map(|e| String::from_utf8_lossy(e.data().as_ref()).into_owned())
            .collect()
    }

    fn fast_sink() -> KinesisSinkConfig {
        toml::from_str(
            "stream = \"s\"\nflush_interval_ms = 5\nretry_base_ms = 1\nretry_max_ms = 5\n\
             max_attempts = 4",
        )
        .expect("sink config")
    }

    async fn run_sink(
        client: KinesisClient,
        config: &KinesisSinkConfig,
        name: &str,
        rows: Vec<Probe>,
    ) -> Result<(), String> {
        let topology = Topology::new(
            vec![
                (
                    "src".to_string(),
                    Component::Source(Box::new(VecSource(vec![Records::Probes(rows)]))),
                ),
                (
                    name.to_string(),
                    Component::Sink(config.build_with_client(name, client).expect("sink")),
                ),
            ],
            vec![Link::any("src", name)],
            &runtime_config(),
        );
        tokio::time::timeout(PATIENCE, topology.run(CancellationToken::new()))
            .await
            .map_err(|_| "timed out".to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A whole request throttled, then a response that is a success with failed entries
    /// inside: the sink sends the whole request again, then exactly the failed entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kinesis_sink_retries_exactly_the_failed_entries() {
        let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let log = calls.clone();
        let rule = mock!(KinesisClient::put_records).then_compute_response(move |req| {
            let data = payloads(req);
            let n = log.lock().map(|mut c| {
                c.push(data.clone());
                c.len()
            });
            match n.unwrap_or(0) {
                1 => MockResponse::Error(PutRecordsError::ProvisionedThroughputExceededException(
                    throttled(),
                )),
                2 => {
                    let mut out = PutRecordsOutput::builder().failed_record_count(
                        data.iter().enumerate().filter(|(i, _)| i % 3 == 1).count() as i32,
                    );
                    for i in 0..data.len() {
                        let entry = if i % 3 == 1 {
                            PutRecordsResultEntry::builder()
                                .error_code(if i % 2 == 0 {
                                    THROTTLED
                                } else {
                                    "InternalFailure"
                                })
                                .error_message("injected")
                                .build()
                        } else {
                            PutRecordsResultEntry::builder()
                                .sequence_number(format!("{i}"))
                                .shard_id("shardId-000000000000")
                                .build()
                        };
                        out = out.records(entry);
                    }
                    MockResponse::Output(out.build().expect("output"))
                }
                _ => {
                    let mut out = PutRecordsOutput::builder().failed_record_count(0);
                    for i in 0..data.len() {
                        out = out.records(
                            PutRecordsResultEntry::builder()
                                .sequence_number(format!("{i}"))
                                .shard_id("shardId-000000000000")
                                .build(),
                        );
                    }
                    MockResponse::Output(out.build().expect("output"))
                }
            }
        });
        let client = mocked(&[&rule]);
        run_sink(client, &fast_sink(), "retry_sink", probes(10))
            .await
            .expect("the sink recovers");
        let calls = calls.lock().expect("calls").clone();
        assert_eq!(
            calls.len(),
            3,
            "one throttled request, one partial failure, one retry"
        );
        assert_eq!(calls[0].len(), 10);
        assert_eq!(
            calls[1], calls[0],
            "a throttled request is sent again whole"
        );
        let failed: Vec<String> = calls[1]
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 1)
            .map(|(_, d)| d.clone())
            .collect();
        assert_eq!(calls[2], failed, "exactly the failed entries, in order");
    }

    /// Entries that keep failing: the sink gives up after `max_attempts` with an error
    /// naming how many are left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kinesis_sink_gives_up_past_max_attempts() {
        let rule = mock!(KinesisClient::put_records).then_compute_response(|req| {
            let mut out =
                PutRecordsOutput::builder().failed_record_count(req.records().len() as i32);
            for _ in req.records() {
                out = out.records(
                    PutRecordsResultEntry::builder()
                        .error_code(THROTTLED)
                        .build(),
                );
            }
            MockResponse::Output(out.build().expect("output"))
        });
        let client = mocked(&[&rule]);
        let err = run_sink(client, &fast_sink(), "give_up_sink", probes(3))
            .await
            .expect_err("gives up");
        assert!(
            err.contains("3 records still failed after 4 attempts"),
            "{err}"
        );
        assert_eq!(rule.num_calls(), 4);
    }

    /// Records what each acknowledgement token reported.
    #[derive(Default)]
    struct AckLog(Mutex<Vec<(u64, bool)>>);

    impl pipeline::runtime::AckTarget for AckLog {
        fn release(&self, id: u64, ok: bool) {
            if let Ok(mut l) = self.0.lock() {
                l.push((id, ok));
            }
        }
    }

    /// Emits one tracked batch (token 7) and ends.
    struct TrackedSource(Vec<Probe>, Arc<AckLog>);

    #[async_trait]
    impl Source for TrackedSource {
        async fn run(
            self: Box<Self>,
            mut out: Output,
            _: CancellationToken,
        ) -> Result<(), BoxError> {
            let target: Arc<dyn pipeline::runtime::AckTarget> = self.1.clone();
            let token = pipeline::runtime::AckToken::new(7, target);
            out.send(Batch::tracked(
                Records::Probes(self.0),
                0,
                pipeline::runtime::Acks::one(token),
            ))
            .await?;
            Ok(())
        }
    }

    /// The sink acknowledges a batch once PutRecords has written all of it, and fails its
    /// token when it gives up, so a source never checkpoints past unwritten records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kinesis_sink_acknowledges_only_written_batches() {
        for (always_fail, want) in [(false, true), (true, false)] {
            let rule = mock!(KinesisClient::put_records).then_compute_response(move |req| {
                let mut out = PutRecordsOutput::builder().failed_record_count(if always_fail {
                    req.records().len() as i32
                } else {
                    0
                });
                for i in 0..req.records().len() {
                    let entry = if always_fail {
                        PutRecordsResultEntry::builder()
                            .error_code("InternalFailure")
                            .build()
                    } else {
                        PutRecordsResultEntry::builder()
                            .sequence_number(format!("{i}"))
                            .build()
                    };
                    out = out.records(entry);
                }
                MockResponse::Output(out.build().expect("output"))
            });
            let log = Arc::new(AckLog::default());
            let name = format!("ack_sink_{always_fail}");
            let topology = Topology::new(
                vec![
                    (
                        "src".to_string(),
                        Component::Source(Box::new(TrackedSource(probes(5), log.clone()))),
                    ),
                    (
                        name.clone(),
                        Component::Sink(
                            fast_sink()
                                .build_with_client(&name, mocked(&[&rule]))
                                .expect("sink"),
                        ),
                    ),
                ],
                vec![Link::any("src", name.as_str())],
                &runtime_config(),
            );
            let result = tokio::time::timeout(PATIENCE, topology.run(CancellationToken::new()))
                .await
                .expect("within the limit");
            assert_eq!(result.is_ok(), want, "{result:?}");
            assert_eq!(*log.0.lock().expect("log"), vec![(7, want)]);
        }
    }

    /// A record over 1 MiB is rejected, counted, and the others are written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kinesis_sink_rejects_a_record_over_one_mebibyte() {
        let written: Arc<Mutex<usize>> = Arc::default();
        let count = written.clone();
        let rule = mock!(KinesisClient::put_records).then_compute_response(move |req| {
            if let Ok(mut c) = count.lock() {
                *c += req.records().len();
            }
            let mut out = PutRecordsOutput::builder().failed_record_count(0);
            for i in 0..req.records().len() {
                out = out.records(
                    PutRecordsResultEntry::builder()
                        .sequence_number(format!("{i}"))
                        .build(),
                );
            }
            MockResponse::Output(out.build().expect("output"))
        });
        let mut rows = probes(3);
        rows[1].vehicle_id = "x".repeat(1024 * 1024 + 1);
        run_sink(mocked(&[&rule]), &fast_sink(), "big_sink", rows)
            .await
            .expect("not fatal");
        assert_eq!(*written.lock().expect("count"), 2);
        let dropped = pipeline::telemetry::metrics::metrics().dropped_totals("big_sink");
        assert!(
            dropped.contains(&("too_large".to_string(), 1)),
            "{dropped:?}"
        );
    }

    fn record(seq: &str, p: &Probe) -> Record {
        Record::builder()
            .sequence_number(seq)
            .partition_key(&p.vehicle_id)
            .data(Blob::new(serde_json::to_vec(p).expect("json")))
            .build()
            .expect("record")
    }

    /// GetRecords is throttled twice and its iterator expires once: the source backs off,
    /// gets a new iterator after the last record it read, and reads on to the shard's end,
    /// whose checkpoint it writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kinesis_source_backs_off_on_throttling_and_refreshes_expired_iterators() {
        let rows = probes(3);
        let list = mock!(KinesisClient::list_shards).then_output(|| {
            ListShardsOutput::builder()
                .shards(
                    Shard::builder()
                        .shard_id("shardId-000000000000")
                        .hash_key_range(
                            HashKeyRange::builder()
                                .starting_hash_key("0")
                                .ending_hash_key("340282366920938463463374607431768211455")
                                .build()
                                .expect("range"),
                        )
                        .sequence_number_range(
                            SequenceNumberRange::builder()
                                .starting_sequence_number("1")
                                .build()
                                .expect("range"),
                        )
                        .build()
                        .expect("shard"),
                )
                .build()
        });
        let iterators: Arc<Mutex<Vec<IteratorRequest>>> = Arc::default();
        let log = iterators.clone();
        let iterator = mock!(KinesisClient::get_shard_iterator).then_compute_output(move |req| {
            if let (Ok(mut l), Some(t)) = (log.lock(), req.shard_iterator_type()) {
                l.push((
                    t.clone(),
                    req.starting_sequence_number().map(str::to_string),
                ));
            }
            GetShardIteratorOutput::builder()
                .shard_iterator("iterator")
                .build()
        });
        let calls = Arc::new(Mutex::new(0usize));
        let (r0, r1, r2) = (
            record("100", &rows[0]),
            record("200", &rows[1]),
            record("300", &rows[2]),
        );
        let get = mock!(KinesisClient::get_records).then_compute_response(move |_| {
            let n = calls.lock().map(|mut c| {
                *c += 1;
                *c
            });
            match n.unwrap_or(0) {
                1 => MockResponse::Error(GetRecordsError::ProvisionedThroughputExceededException(
                    throttled(),
                )),
                2 => MockResponse::Output(
                    GetRecordsOutput::builder()
                        .records(r0.clone())
                        .records(r1.clone())
                        .next_shard_iterator("next")
                        .millis_behind_latest(1_000)
                        .build()
                        .expect("output"),
                ),
                3 => MockResponse::Error(GetRecordsError::ProvisionedThroughputExceededException(
                    throttled(),
                )),
                4 => MockResponse::Error(GetRecordsError::ExpiredIteratorException(
                    ExpiredIteratorException::builder()
                        .message("Iterator expired")
                        .meta(
                            ErrorMetadata::builder()
                                .code("ExpiredIteratorException")
                                .build(),
                        )
                        .build(),
                )),
                // The last record, and no next iterator: the shard is closed.
                _ => MockResponse::Output(
                    GetRecordsOutput::builder()
                        .records(r2.clone())
                        .millis_behind_latest(0)
                        .build()
                        .expect("output"),
                ),
            }
        });
        let client = mocked(&[&list, &iterator, &get]);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = source_config(
            "http://unused:1",
            "s",
            "app",
            RecordKind::Probe,
            Encoding::Json,
            dir.path(),
        );
        config.endpoint = None;
        let got: Seen = Arc::default();
        let stop = CancellationToken::new();
        let sink = CollectSink {
            got: got.clone(),
            ack_batches: None,
            total: Arc::default(),
            want: usize::MAX,
            stop: stop.clone(),
        };
        let topology = Topology::new(
            vec![
                (
                    "mocked_in".to_string(),
                    Component::Source(
                        config
                            .build_with_client("mocked_in", client)
                            .expect("source"),
                    ),
                ),
                ("collect".to_string(), Component::Sink(Box::new(sink))),
            ],
            vec![Link::any("mocked_in", "collect")],
            &runtime_config(),
        );
        let run = tokio::spawn(topology.run(stop.clone()));
        let store = FileCheckpointStore::new(dir.path(), "app", "s");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while store.load("shardId-000000000000").ok().flatten() != Some(Checkpoint::ShardEnd) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the shard's end was never checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        run.await
            .expect("task")
            .expect("the source runs to its end");
        assert_eq!(all_probes(&got.lock().expect("got")), rows);
        let iterators = iterators.lock().expect("iterators").clone();
        assert_eq!(
            iterators,
            vec![
                (ShardIteratorType::TrimHorizon, None),
                (
                    ShardIteratorType::AfterSequenceNumber,
                    Some("200".to_string())
                ),
            ],
            "a fresh iterator after the expired one resumes after the last record read"
        );
        assert_eq!(get.num_calls(), 5);
    }
}

/// A `pipeline run --config CONFIG` process in `dir`, killed on drop; `stop` ends it with
/// SIGTERM.
struct Stage {
    name: String,
    child: std::process::Child,
}

impl Stage {
    fn start(config: &std::path::Path, dir: &std::path::Path, listen: &str) -> Self {
        let name = config.display().to_string();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .current_dir(dir)
            .args(["run", "--config"])
            .arg(config)
            .env("PIPELINE__TELEMETRY__LISTEN", listen)
            .env("PIPELINE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start pipeline");
        Self { name, child }
    }

    /// SIGKILL: no shutdown, no flush, no checkpoint.
    fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits: the run must end cleanly (outputs flushed, checkpoints written).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = self.child.wait().expect("wait for pipeline");
        assert!(status.success(), "{} ended with {status}", self.name);
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port free right now (other test suites on this machine bind
/// fixed ports, so none is hard-coded here).
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("a free port")
}

/// The `/metrics` page of a running stage (None while it does not answer).
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// `pipeline_component_received_events_total` of `component`, scraped from `/metrics`.
fn received(addr: &str, component: &str) -> Option<u64> {
    let series = format!("pipeline_component_received_events_total{{component=\"{component}\"}} ");
    scrape(addr)?
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// `pipeline_component_dropped_events_total` of `component` for `reason`.
fn dropped(addr: &str, component: &str, reason: &str) -> Option<u64> {
    let (component, reason) = (
        format!("component=\"{component}\""),
        format!("reason=\"{reason}\""),
    );
    scrape(addr)?
        .lines()
        .filter(|l| l.starts_with("pipeline_component_dropped_events_total{"))
        .find(|l| l.contains(&component) && l.contains(&reason))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The `finalized_before_ms` of every shard checkpoint in `dir` (None for a shard without
/// one).
fn checkpoint_floors(dir: &std::path::Path) -> BTreeMap<String, Option<i64>> {
    use pipeline::connector::kinesis::{Checkpoint, FileCheckpointStore};
    let Ok(files) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    let store = FileCheckpointStore::new(dir, "", "");
    files
        .flatten()
        .filter_map(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            let shard = name.strip_suffix(".json")?.to_string();
            let floor = match store.load(&shard).ok().flatten()? {
                Checkpoint::SequenceNumber {
                    finalized_before_ms,
                    ..
                } => finalized_before_ms,
                Checkpoint::ShardEnd => None,
            };
            Some((shard, floor))
        })
        .collect()
}

/// An aggregate reading Kinesis, killed with `kill -9` once every shard's checkpoint says
/// which windows it had finalized, and restarted from those checkpoints: the observations
/// it reads again of finalized windows are counted as `already_emitted` and none of those
/// windows is published again (from part of its data); every window of an uninterrupted
/// run (another application on the same stream) ends with the same values, as a consumer
/// upserting on (segment, window, estimator) sees them. The Kinesis twin of
/// `kafka_aggregator_restart_emits_every_window`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_aggregator_restart_skips_finalized_windows_and_emits_every_window() {
    let Some(endpoint) = emulator() else { return };
    let n = nonce();
    let stream = format!("agg-restart-{n}");
    create_stream(&endpoint, &stream, 4).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let observations = restart_observations(dir.path());
    // 10 s windows, closing soon after the data stops (once every shard is read to its end
    // and idle for 10 s); small GetRecords responses, so that batches mix windows.
    let config = |application: &str, out: &str| {
        let path = dir.path().join(format!("{out}.toml"));
        std::fs::write(
            &path,
            format!(
                "edges = [\"observations -> aggregate -> out\"]\n\
                 [graph]\npath = \"data/grid.graph\"\n\
                 [sources.observations]\ntype = \"kinesis\"\nstream = \"{stream}\"\n\
                 endpoint = \"{endpoint}\"\napplication = \"{application}\"\n\
                 record = \"segment_observation\"\nencoding = \"json\"\n\
                 get_records_limit = 100\npoll_interval_ms = 20\n\
                 checkpoint_interval_ms = 100\nshard_refresh_interval_ms = 500\n\
                 [stages.aggregate]\ntype = \"aggregate\"\nwindow_ms = 10000\n\
                 max_out_of_orderness_ms = 5000\nallowed_lateness_ms = 60000\n\
                 idle_timeout_ms = 10000\n\
                 [sinks.out]\ntype = \"ndjson\"\npath = \"{out}.ndjson\"\n"
            ),
        )
        .expect("config");
        path
    };
    let (first_half, second_half) = observations.split_at(observations.len() * 2 / 5);
    let chunks = |o: &[SegmentObservation]| {
        o.chunks(200)
            .map(|c| Records::Observations(c.to_vec()))
            .collect::<Vec<_>>()
    };
    let reference = Stage::start(
        &config(&format!("reference-{n}"), "r"),
        dir.path(),
        &free_addr(),
    );
    let application = format!("crashing-{n}");
    let crashing = Stage::start(&config(&application, "c1"), dir.path(), &free_addr());
    produce(&endpoint, &stream, Encoding::Json, chunks(first_half)).await;

    // Kill it once it has emitted rows and every shard's checkpoint carries a floor.
    let c1 = dir.path().join("c1.ndjson");
    let checkpoints = dir
        .path()
        .join("checkpoints/kinesis")
        .join(&application)
        .join(&stream);
    settle(
        "rows and a finalized floor in every shard checkpoint of the first run",
        || (ndjson_lines(&c1).len(), checkpoint_floors(&checkpoints)),
        |(rows, floors)| *rows > 0 && floors.len() == 4 && floors.values().all(Option::is_some),
    )
    .await;
    crashing.kill_9();
    let floors = checkpoint_floors(&checkpoints);
    let lowest_floor_ms = floors.values().flatten().min().copied().unwrap_or(i64::MIN);
    produce(&endpoint, &stream, Encoding::Json, chunks(second_half)).await;
    let c2_addr = free_addr();
    let restarted = Stage::start(&config(&application, "c2"), dir.path(), &c2_addr);

    let (r_out, c2_out) = (dir.path().join("r.ndjson"), dir.path().join("c2.ndjson"));
    let last_start_ms = observations
        .iter()
        .map(|o| (o.enter_ts_ms + (o.exit_ts_ms - o.enter_ts_ms) / 2) / 10_000 * 10_000)
        .max()
        .unwrap_or_default();
    let has_last = |path: &std::path::Path| {
        let key = format!("\"window_start_ms\":{last_start_ms},");
        ndjson_lines(path).iter().any(|l| l.contains(&key))
    };
    settle(
        "the last window in the outputs of the reference and the restarted run",
        || {
            (
                has_last(&r_out),
                has_last(&c2_out),
                ndjson_lines(&r_out).len(),
                ndjson_lines(&c2_out).len(),
            )
        },
        |&(r_done, c2_done, _, _)| r_done && c2_done,
    )
    .await;
    let already_emitted = dropped(&c2_addr, "aggregate", "already_emitted").unwrap_or(0);
    reference.stop();
    restarted.stop();

    assert!(
        already_emitted > 0,
        "the restarted run skipped no re-read observation of a finalized window (floors \
         {floors:?})"
    );
    let republished: Vec<String> = ndjson_lines(&c2_out)
        .into_iter()
        .filter(|l| {
            serde_json::from_str::<SegmentSpeed>(l)
                .is_ok_and(|s| s.window_start_ms < lowest_floor_ms)
        })
        .collect();
    assert!(
        republished.is_empty(),
        "{} rows of windows finalized before the kill (before {lowest_floor_ms}) published \
         again, e.g. {:?}",
        republished.len(),
        republished.first()
    );
    let (r_rows, want) = upsert_speeds(&[&r_out]);
    let (c_rows, got) = upsert_speeds(&[&c1, &c2_out]);
    let missing: Vec<&WindowKey> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} windows missing after the crash, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let differing: Vec<&WindowKey> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} windows end with other values after the crash, e.g. {:?}: {:?} vs {:?}",
        differing.len(),
        want.len(),
        differing.first(),
        differing.first().and_then(|k| want.get(*k)),
        differing.first().and_then(|k| got.get(*k))
    );
    let extra: Vec<&WindowKey> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "{} windows only the restarted run emitted, e.g. {:?}",
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    eprintln!(
        "kinesis aggregator restart: {} observations, {} windows, floors {floors:?}; \
         {already_emitted} observations re-read of finalized windows skipped; rows: \
         uninterrupted {r_rows}, killed and restarted {c_rows}",
        observations.len(),
        want.len(),
    );
}

/// The example configs, unchanged, as separate processes against the emulator: probes into
/// `probes-clean` → kinesis-assign → `observations`, read under two application names:
/// kinesis-aggregate (prod, speeds to the `speeds` stream and Parquet) and
/// kinesis-experiment (its own estimators, Parquet). Matching runs once; both read the whole
/// observation stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_example_configs_chain_assign_and_two_aggregates() {
    use pipeline::connector::generator::{generate, GeneratorSourceConfig};
    use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};

    let Some(endpoint) = emulator() else { return };
    if endpoint.trim_end_matches('/') != "http://127.0.0.1:4567" {
        eprintln!("skipping the example-config chain: the configs name http://127.0.0.1:4567");
        return;
    }
    let client = admin(&endpoint);
    for stream in [
        "probes-clean",
        "observations",
        "speeds",
        "observations-late",
    ] {
        // The configs name these streams, so they outlive a run: start them empty (what
        // earlier runs left would be read again from TRIM_HORIZON, all of it late).
        if client
            .delete_stream()
            .stream_name(stream)
            .send()
            .await
            .is_ok()
        {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while client
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .is_ok()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{stream} never went away"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = client
            .create_stream()
            .stream_name(stream)
            .shard_count(4)
            .send()
            .await;
        wait_active(&client, stream).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("data")).expect("data dir");
    let graph = Arc::new(
        synthetic_grid(6, 6, 150.0, 60.17, 24.94)
            .build_graph(&ImportConfig::default())
            .expect("grid builds"),
    );
    graph
        .write(dir.path().join("data/helsinki.graph"))
        .expect("graph written");
    // Twenty minutes of traffic: windows close while the stream runs, and the experiment's
    // 5-minute windows get past their 3 minutes of lateness, so that its checkpoints move
    // (an aggregate checkpoints only past observations of windows it no longer holds).
    let (sent, _) = generate(
        &graph,
        &GeneratorSourceConfig {
            vehicles: 30,
            duration_s: 1_200.0,
            interval_s: 2.0,
            ..GeneratorSourceConfig::default()
        },
    );
    let example = |name: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines")
            .join(name)
    };
    let (prod, experiment) = (free_addr(), free_addr());
    let (prod, experiment) = (prod.as_str(), experiment.as_str());
    let stages = [
        Stage::start(&example("kinesis-assign.toml"), dir.path(), ""),
        Stage::start(&example("kinesis-aggregate.toml"), dir.path(), prod),
        Stage::start(&example("kinesis-experiment.toml"), dir.path(), experiment),
    ];
    let batches = sent
        .chunks(500)
        .map(|c| Records::Probes(c.to_vec()))
        .collect();
    produce(&endpoint, "probes-clean", Encoding::Json, batches).await;

    // Speeds reach the `speeds` stream while every stage keeps running.
    let readers = tempfile::tempdir().expect("tempdir");
    let speeds = source_config(
        &endpoint,
        "speeds",
        &format!("speeds-reader-{}", nonce()),
        RecordKind::SegmentSpeed,
        Encoding::Json,
        readers.path(),
    );
    let (got, result) = consume(speeds, 1, None).await;
    assert!(result.is_ok(), "no speeds on the stream: {result:?}");
    assert!(got
        .iter()
        .any(|(_, r)| matches!(r, Records::Speeds(s) if !s.is_empty())));

    // Both aggregates read the whole observation stream: wait until they have received the
    // same, no longer growing, number of observations; then stop everything (open windows
    // are left for a restart to rebuild from the checkpoints).
    let mut last = (0, 0);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = (
            received(prod, "aggregate").unwrap_or(0),
            received(experiment, "aggregate").unwrap_or(0),
        );
        if now.0 > 0 && now.0 == now.1 && now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "observations received by prod / experiment: {now:?}"
        );
        last = now;
    }
    for stage in stages.into_iter().rev() {
        stage.stop();
    }
    for out in ["out/kinesis-aggregate", "out/kinesis-experiment"] {
        let rows: i64 = std::fs::read_dir(dir.path().join(out))
            .expect("output directory")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .map(|e| {
                parquet::file::reader::SerializedFileReader::new(
                    std::fs::File::open(e.path()).expect("open parquet"),
                )
                .map(|r| {
                    use parquet::file::reader::FileReader;
                    r.metadata().file_metadata().num_rows()
                })
                .unwrap_or(0)
            })
            .sum();
        assert!(rows > 0, "{out} wrote no speeds");
    }
    // Each source left checkpoints for the shards it read.
    for app in ["assign", "aggregate-prod", "aggregate-experiment-a"] {
        let stream = if app == "assign" {
            "probes-clean"
        } else {
            "observations"
        };
        let files = std::fs::read_dir(
            dir.path()
                .join("checkpoints/kinesis")
                .join(app)
                .join(stream),
        )
        .map(|d| d.count())
        .unwrap_or(0);
        assert!(files > 0, "{app} wrote no checkpoints");
    }
}

// ---- Enhanced fan-out, against a mocked SDK only (the emulator does not implement it) ----

mod fan_out {
    use super::*;
    use aws_sdk_kinesis::config::retry::RetryConfig;
    use aws_sdk_kinesis::error::ErrorMetadata;
    use aws_sdk_kinesis::operation::describe_stream_consumer::DescribeStreamConsumerOutput;
    use aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryOutput;
    use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
    use aws_sdk_kinesis::operation::register_stream_consumer::RegisterStreamConsumerError;
    use aws_sdk_kinesis::primitives::DateTime;
    use aws_sdk_kinesis::types::error::ResourceInUseException;
    use aws_sdk_kinesis::types::{
        ConsumerDescription, ConsumerStatus, EnhancedMetrics, HashKeyRange, SequenceNumberRange,
        Shard, ShardIteratorType, StreamDescriptionSummary,
    };
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    use pipeline::connector::kinesis::{Checkpoint, FileCheckpointStore};

    const SHARD: &str = "shardId-000000000000";
    const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/s";
    const CONSUMER_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/app:1";

    fn base64(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// One `SubscribeToShardEvent` frame of the event stream, as the service sends it.
    fn event(records: &[(&str, &Probe)], continuation: Option<&str>, children: bool) -> Vec<u8> {
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|(seq, p)| {
                serde_json::json!({
                    "SequenceNumber": seq,
                    "PartitionKey": p.vehicle_id,
                    "Data": base64(&serde_json::to_vec(p).expect("json")),
                    "ApproximateArrivalTimestamp": 1.7e9,
                })
            })
            .collect();
        let mut body = serde_json::json!({ "Records": records, "MillisBehindLatest": 0 });
        if let Some(c) = continuation {
            body["ContinuationSequenceNumber"] = c.into();
        }
        if children {
            body["ChildShards"] = serde_json::json!([{
                "ShardId": "shardId-000000000001",
                "ParentShards": [SHARD],
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
            }]);
        }
        let message = Message::new(serde_json::to_vec(&body).expect("json"))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("SubscribeToShardEvent".into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut frame = Vec::new();
        write_message_to(&message, &mut frame).expect("frame");
        frame
    }

    /// The source registers its consumer (already there: ResourceInUse, then
    /// DescribeStreamConsumer), subscribes from TRIM_HORIZON, subscribes again after the
    /// continuation sequence number when a subscription ends, and checkpoints the shard's
    /// end when an event carries its children.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kinesis_fan_out_subscribes_resubscribes_and_ends_with_the_shard() {
        let rows = probes(3);
        let summary = mock!(KinesisClient::describe_stream_summary).then_output(|| {
            DescribeStreamSummaryOutput::builder()
                .stream_description_summary(
                    StreamDescriptionSummary::builder()
                        .stream_name("s")
                        .stream_arn(STREAM_ARN)
                        .stream_status(aws_sdk_kinesis::types::StreamStatus::Active)
                        .retention_period_hours(24)
                        .stream_creation_timestamp(DateTime::from_secs(0))
                        .enhanced_monitoring(EnhancedMetrics::builder().build())
                        .open_shard_count(1)
                        .build()
                        .expect("summary"),
                )
                .build()
        });
        let register = mock!(KinesisClient::register_stream_consumer).then_error(|| {
            RegisterStreamConsumerError::ResourceInUseException(
                ResourceInUseException::builder()
                    .message("exists")
                    .meta(
                        ErrorMetadata::builder()
                            .code("ResourceInUseException")
                            .build(),
                    )
                    .build(),
            )
        });
        let describe = mock!(KinesisClient::describe_stream_consumer).then_output(|| {
            DescribeStreamConsumerOutput::builder()
                .consumer_description(
                    ConsumerDescription::builder()
                        .consumer_name("app")
                        .consumer_arn(CONSUMER_ARN)
                        .consumer_status(ConsumerStatus::Active)
                        .consumer_creation_timestamp(DateTime::from_secs(0))
                        .stream_arn(STREAM_ARN)
                        .build()
                        .expect("consumer"),
                )
                .build()
        });
        let list = mock!(KinesisClient::list_shards).then_output(|| {
            ListShardsOutput::builder()
                .shards(
                    Shard::builder()
                        .shard_id(SHARD)
                        .hash_key_range(
                            HashKeyRange::builder()
                                .starting_hash_key("0")
                                .ending_hash_key("1")
                                .build()
                                .expect("range"),
                        )
                        .sequence_number_range(
                            SequenceNumberRange::builder()
                                .starting_sequence_number("1")
                                .build()
                                .expect("range"),
                        )
                        .build()
                        .expect("shard"),
                )
                .build()
        });
        let positions: Arc<Mutex<Vec<IteratorRequest>>> = Arc::default();
        let log = positions.clone();
        let (first, second) = (
            event(&[("100", &rows[0]), ("200", &rows[1])], Some("200"), false),
            event(&[("300", &rows[2])], None, true),
        );
        let subscribe =
            mock!(KinesisClient::subscribe_to_shard).then_compute_response(move |req| {
                assert_eq!(req.consumer_arn(), Some(CONSUMER_ARN));
                let n = log.lock().map(|mut l| {
                    if let Some(p) = req.starting_position() {
                        l.push((p.r#type().clone(), p.sequence_number().map(str::to_string)));
                    }
                    l.len()
                });
                // The first subscription delivers one event and ends (as after five minutes);
                // the second delivers the shard's last records and its children.
                let body = if n.unwrap_or(0) == 1 {
                    first.clone()
                } else {
                    second.clone()
                };
                MockResponse::Http(Response::new(
                    StatusCode::try_from(200).expect("status"),
                    SdkBody::from(body),
                ))
            });
        let client = mock_client!(
            aws_sdk_kinesis,
            RuleMode::MatchAny,
            [&summary, &register, &describe, &list, &subscribe],
            |c| c.retry_config(RetryConfig::disabled())
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = source_config(
            "http://unused:1",
            "s",
            "app",
            RecordKind::Probe,
            Encoding::Json,
            dir.path(),
        );
        config.endpoint = None;
        config.enhanced_fan_out = true;
        let got: Seen = Arc::default();
        let stop = CancellationToken::new();
        let sink = CollectSink {
            got: got.clone(),
            ack_batches: None,
            total: Arc::default(),
            want: usize::MAX,
            stop: stop.clone(),
        };
        let topology = Topology::new(
            vec![
                (
                    "fan_out_in".to_string(),
                    Component::Source(
                        config
                            .build_with_client("fan_out_in", client)
                            .expect("source"),
                    ),
                ),
                ("collect".to_string(), Component::Sink(Box::new(sink))),
            ],
            vec![Link::any("fan_out_in", "collect")],
            &runtime_config(),
        );
        let run = tokio::spawn(topology.run(stop.clone()));
        let store = FileCheckpointStore::new(dir.path(), "app", "s");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while store.load(SHARD).ok().flatten() != Some(Checkpoint::ShardEnd) {
            assert!(
                tokio::time::Instant::now() < deadline && !run.is_finished(),
                "the shard's end was never checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        run.await.expect("task").expect("the fan-out source runs");
        assert_eq!(all_probes(&got.lock().expect("got")), rows);
        assert_eq!(
            positions.lock().expect("positions").clone(),
            vec![
                (ShardIteratorType::TrimHorizon, None),
                (
                    ShardIteratorType::AfterSequenceNumber,
                    Some("200".to_string())
                ),
            ]
        );
        assert_eq!(register.num_calls(), 1);
    }
}

/// SIGTERM while a standalone Kinesis → Kinesis pipeline is busy: it writes the checkpoints
/// of what its sink has written and exits cleanly; a restart resumes from them, so every
/// input record reaches the output stream (duplicates allowed, counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_sigterm_under_load_checkpoints_and_a_restart_resumes_without_a_gap() {
    let Some(endpoint) = emulator() else { return };
    let n = nonce();
    let (stream_in, stream_out) = (format!("resume-in-{n}"), format!("resume-out-{n}"));
    create_stream(&endpoint, &stream_in, 4).await;
    create_stream(&endpoint, &stream_out, 4).await;
    let sent = probes(30_000);
    let batches = sent
        .chunks(5_000)
        .map(|c| Records::Probes(c.to_vec()))
        .collect();
    produce(&endpoint, &stream_in, Encoding::Json, batches).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "edges = [\"input -> output\"]\n\
         [sources.input]\ntype = \"kinesis\"\nstream = \"{stream_in}\"\nendpoint = \"{endpoint}\"\n\
         application = \"resume\"\nrecord = \"probe\"\nget_records_limit = 500\n\
         poll_interval_ms = 20\ncheckpoint_interval_ms = 100\n\
         [sinks.output]\ntype = \"kinesis\"\nstream = \"{stream_out}\"\nendpoint = \"{endpoint}\"\n\
         flush_interval_ms = 20\n"
    );
    let path = dir.path().join("resume.toml");
    std::fs::write(&path, config).expect("config");

    // First run: SIGTERM as soon as records flow.
    let addr = free_addr();
    let first = Stage::start(&path, dir.path(), &addr);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut at_sigterm = 0;
    while at_sigterm == 0 {
        at_sigterm = received(&addr, "output").unwrap_or(0);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first run never got records"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop();
    let checkpoints = dir
        .path()
        .join("checkpoints/kinesis/resume")
        .join(&stream_in);
    assert!(
        std::fs::read_dir(&checkpoints)
            .map(|d| d.count())
            .unwrap_or(0)
            > 0,
        "the first run wrote no checkpoint at SIGTERM"
    );

    // Second run: resumes at the checkpoints; stop it once it is idle.
    let addr = free_addr();
    let second = Stage::start(&path, dir.path(), &addr);
    let mut last = u64::MAX;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = received(&addr, "output").unwrap_or(0);
        if now > 0 && now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second run never settled"
        );
        last = now;
    }
    second.stop();

    // Everything sent is on the output stream at least once.
    let readers = tempfile::tempdir().expect("tempdir");
    let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
    let source = source_config(
        &endpoint,
        &stream_out,
        "reader",
        RecordKind::Probe,
        Encoding::Json,
        readers.path(),
    );
    let mut want = sent.len();
    while want > 0 {
        let (got, result) = consume(source.clone(), want, None).await;
        for p in all_probes(&got) {
            *seen.entry(key(&p)).or_default() += 1;
        }
        let missing = sent.iter().filter(|p| !seen.contains_key(&key(p))).count();
        assert!(
            result.is_ok() || missing == 0,
            "{missing} of {} records never reached the output: {result:?}",
            sent.len()
        );
        want = missing;
    }
    let duplicates: usize = seen.values().map(|&c| c - 1).sum();
    eprintln!(
        "kinesis sigterm and resume: {} records, SIGTERM after {at_sigterm} had reached the \
         sink, {duplicates} duplicates on the output",
        sent.len()
    );
}
