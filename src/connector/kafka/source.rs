//! The Kafka source: a consumer group member (cooperative-sticky) that decodes records of
//! one kind into batches of one partition each, and stores a partition's offset only once
//! every batch before it has been acknowledged by every sink downstream (at-least-once).
//!
//! Offsets are committed by librdkafka's auto-commit (of stored offsets only) every
//! `commit_interval_ms`, explicitly when partitions are revoked, and at shutdown, after the
//! pipeline has drained and the last acknowledgements are in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use prometheus::{IntGaugeVec, Opts};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Statistics};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::checkpoint::FinalizedFiles;
use super::config::KafkaSourceConfig;
use super::security::create_client;
use super::KafkaError as Error;
use crate::runtime::{
    AckChannel, AckTarget, AckToken, AckedPrefix, Acks, AssignedLane, Batch, BoxError, Frontier,
    LaneClocks, LaneEvent, Output, Records, Source,
};
use crate::telemetry::metrics::{metrics, register_collector, ComponentMetrics};

fn lag_gauge() -> &'static IntGaugeVec {
    static GAUGE: OnceLock<IntGaugeVec> = OnceLock::new();
    GAUGE.get_or_init(|| {
        register_collector(
            IntGaugeVec::new(
                Opts::new(
                    "pipeline_kafka_consumer_lag_records",
                    "Records between a partition's high watermark and the consumer's position.",
                ),
                &["component", "topic", "partition"],
            )
            .expect("valid metric definition"),
        )
    })
}

/// What the consumer's callbacks tell the source task.
enum Event {
    /// Partitions, each with what the previous reader's windowed stage had finalized.
    Assigned(Vec<((String, i32), Option<i64>)>),
    Revoked(Vec<(String, i32)>),
    /// Partitions whose statistics say nothing is left to read (lag 0): an empty partition
    /// may never signal EOF, and must not hold the frontier.
    CaughtUp(Vec<i32>),
}

/// The key of `finalized_before_ms` in the metadata of a committed offset.
const FINALIZED_KEY: &str = "finalized_before_ms=";

fn commit_metadata(finalized_before_ms: Option<i64>) -> String {
    finalized_before_ms.map_or_else(String::new, |ms| format!("{FINALIZED_KEY}{ms}"))
}

fn finalized_in_metadata(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(FINALIZED_KEY)?.parse().ok()
}

/// Offsets stored for commit, each with its `finalized_before_ms`: the source task writes
/// them, and explicit commits (on revoke, at shutdown) send them with their metadata.
type Stored = Arc<std::sync::Mutex<HashMap<(String, i32), (i64, Option<i64>)>>>;

/// Commits the stored offsets of `which` (all when `None`) with their metadata.
fn commit_stored(
    consumer: &impl Consumer<SourceContext>,
    stored: &Stored,
    which: Option<&[(String, i32)]>,
) -> rdkafka::error::KafkaResult<()> {
    let mut list = TopicPartitionList::new();
    if let Ok(stored) = stored.lock() {
        for ((topic, partition), (offset, finalized)) in stored.iter() {
            if which.is_some_and(|w| !w.iter().any(|(t, p)| t == topic && p == partition)) {
                continue;
            }
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            if let Some(mut e) = list.find_partition(topic, *partition) {
                e.set_metadata(commit_metadata(*finalized));
            }
        }
    }
    if list.count() == 0 {
        return Ok(());
    }
    consumer.commit(&list, CommitMode::Sync)
}

fn partitions_of(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

struct SourceContext {
    component: String,
    /// Whether a partition with nothing consumed or committed starts at its beginning.
    from_earliest: bool,
    events: mpsc::UnboundedSender<Event>,
    stored: Stored,
    finalized_files: Option<Arc<FinalizedFiles>>,
}

impl ClientContext for SourceContext {
    /// librdkafka's errors, logged as its default context does, except a partition's end:
    /// with `enable.partition.eof` that is news, not an error (the source acts on it).
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        tracing::error!(component = %self.component, "librdkafka: {error}: {reason}");
    }

    fn stats(&self, statistics: Statistics) {
        let gauge = lag_gauge();
        let mut caught_up = Vec::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal UA partition; only partitions read here.
                if *partition < 0 || !p.desired {
                    continue;
                }
                if let Some(lag) = position_lag(p, self.from_earliest) {
                    gauge
                        .with_label_values(&[&self.component, topic, &partition.to_string()])
                        .set(lag);
                    if lag == 0 {
                        caught_up.push(*partition);
                    }
                }
            }
        }
        if !caught_up.is_empty() {
            let _ = self.events.send(Event::CaughtUp(caught_up));
        }
    }
}

/// Records between a partition's high watermark and what the consumer has read (not what
/// it has committed: librdkafka's own `consumer_lag` counts from the commit, which trails
/// by the acknowledgements in flight and is unknown before the first commit). Before the
/// first record is read, from the commit, or from where a new group starts.
fn position_lag(p: &rdkafka::statistics::Partition, from_earliest: bool) -> Option<i64> {
    if p.hi_offset < 0 {
        return None;
    }
    let from = if p.app_offset >= 0 {
        p.app_offset
    } else if p.committed_offset >= 0 {
        p.committed_offset
    } else if from_earliest {
        p.lo_offset.max(0)
    } else {
        p.hi_offset
    };
    Some((p.hi_offset - from).max(0))
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            // Commit what is acknowledged so far, while the partitions are still ours.
            let revoked = partitions_of(list);
            if let Err(e) = commit_stored(consumer, &self.stored, Some(&revoked)) {
                tracing::debug!(component = %self.component, error = %e, "commit on revoke");
            }
            if let Ok(mut stored) = self.stored.lock() {
                stored.retain(|k, _| !revoked.contains(k));
            }
            let _ = self.events.send(Event::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            // What the previous reader finalized, from the metadata of its commit.
            let mut query = TopicPartitionList::new();
            for (topic, partition) in partitions_of(list) {
                query.add_partition(&topic, partition);
            }
            let committed = consumer
                .committed_offsets(query, Duration::from_secs(10))
                .inspect_err(|e| {
                    crate::warn_limited!(component = %self.component, error = %e, "reading the committed offsets of assigned partitions");
                })
                .ok();
            let assigned = partitions_of(list)
                .into_iter()
                .map(|(topic, partition)| {
                    let finalized = committed
                        .as_ref()
                        .and_then(|c| c.find_partition(&topic, partition))
                        .and_then(|e| finalized_in_metadata(e.metadata()))
                        .or_else(|| {
                            let files = self.finalized_files.as_ref()?;
                            files.read(&topic, partition)
                        });
                    ((topic, partition), finalized)
                })
                .collect();
            let _ = self.events.send(Event::Assigned(assigned));
        }
    }
}

/// Batches in flight per partition; the offset to store is the one after the last batch of
/// the acknowledged prefix, with the partition's `finalized_before_ms` (see [`AckedPrefix`]).
#[derive(Default)]
struct Tracker {
    /// batch id → (topic, partition)
    where_: HashMap<u64, (String, i32)>,
    partitions: HashMap<(String, i32), AckedPrefix<i64>>,
}

impl Tracker {
    /// A partition assigned, whose previous reader had finalized everything before
    /// `finalized_before_ms`.
    fn assign(&mut self, topic: &str, partition: i32, finalized_before_ms: Option<i64>) {
        self.partitions.insert(
            (topic.to_string(), partition),
            AckedPrefix::new(finalized_before_ms),
        );
    }

    fn open(&mut self, id: u64, topic: &str, partition: i32, next_offset: i64) {
        let key = (topic.to_string(), partition);
        self.where_.insert(id, key.clone());
        self.partitions
            .entry(key)
            .or_default()
            .open(id, next_offset);
    }

    /// Marks a batch; returns the offset now safe to store for its partition, if it moved,
    /// with the partition's `finalized_before_ms`.
    fn release(
        &mut self,
        id: u64,
        ok: bool,
        finalized_before_ms: Option<i64>,
    ) -> Option<(String, i32, i64, Option<i64>)> {
        let key = self.where_.remove(&id)?;
        let lane = self.partitions.get_mut(&key)?;
        let offset = lane.release(id, ok, finalized_before_ms)?;
        Some((key.0, key.1, offset, lane.finalized_before_ms()))
    }

    fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(lane) = self.partitions.remove(&(topic.to_string(), partition)) {
            for id in lane.ids() {
                self.where_.remove(&id);
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.where_.len()
    }
}

/// Records of one partition waiting to leave as a batch.
struct Pending {
    records: Records,
    next_offset: i64,
    since: tokio::time::Instant,
}

pub(super) struct KafkaSource {
    component: String,
    config: KafkaSourceConfig,
}

impl KafkaSourceConfig {
    /// Builds the source; the consumer connects when it runs.
    pub fn build(&self, component: &str) -> Result<Box<dyn Source>, Error> {
        let mut problems = crate::config::Problems::new();
        self.validate("source", &mut problems);
        if !problems.is_empty() {
            let text: Vec<String> = problems.into_vec().iter().map(|p| p.to_string()).collect();
            return Err(Error::InvalidConfig(text.join("; ")));
        }
        Ok(Box::new(KafkaSource {
            component: component.to_string(),
            config: self.clone(),
        }))
    }
}

/// The lane of a partition, as batches carry it (`Batch::input`).
fn lane_of(partition: i32) -> u32 {
    u32::try_from(partition).unwrap_or(0)
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(
        self: Box<Self>,
        out: Output,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let KafkaSource { component, config } = *self;
        let m = metrics().component(&component);
        m.dropped("undecodable", 0);
        m.dropped("too_large", 0);
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let stored = Stored::default();
        let finalized_files = config
            .checkpoint_dir
            .as_deref()
            .map(|dir| Arc::new(FinalizedFiles::new(dir, &config.group_id)));
        let context = SourceContext {
            component: component.clone(),
            from_earliest: config.auto_offset_reset == "earliest",
            events: events_tx,
            stored: stored.clone(),
            finalized_files: finalized_files.clone(),
        };
        let consumer: StreamConsumer<SourceContext> =
            create_client(&config.client_config(), "creating the consumer", |c| {
                c.create_with_context(context)
            })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| Error::Client {
            what: "subscribing",
            source: e,
        })?;
        let dead_letters: Option<ThreadedProducer<DefaultProducerContext>> =
            match &config.dead_letter_topic {
                Some(_) => {
                    let mut c = rdkafka::ClientConfig::new();
                    c.set("bootstrap.servers", &config.brokers)
                        .set("enable.idempotence", "true");
                    config.security.apply(&mut c);
                    Some(create_client(
                        &c,
                        "creating the dead-letter producer",
                        |c| c.create(),
                    )?)
                }
                None => None,
            };
        let (ack_tx, mut acks) = mpsc::unbounded_channel();
        let target: Arc<dyn AckTarget> = Arc::new(AckChannel(ack_tx));
        let mut run = Run {
            component,
            config,
            metrics: m,
            consumer,
            dead_letters,
            tracker: Tracker::default(),
            stored,
            finalized_files,
            pending: BTreeMap::new(),
            next_id: 0,
            out: Some(out),
            assigned: BTreeSet::new(),
            clocks: LaneClocks::new(),
            sent_frontier: None,
            paused: BTreeSet::new(),
            read_to: HashMap::new(),
        };
        let max_wait = Duration::from_millis(run.config.batch_max_wait_ms);
        let mut flush_tick = tokio::time::interval(max_wait);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((id, ok, finalized)) = acks.recv() => run.release(id, ok, finalized),
                Some(event) = events.recv() => match event {
                    Event::Assigned(list) => run.assigned(&list).await?,
                    Event::Revoked(list) => run.revoke(&list).await?,
                    Event::CaughtUp(partitions) => {
                        for partition in partitions {
                            if run.assigned.iter().any(|(_, p)| *p == partition) {
                                run.at_end(partition, &target).await?;
                            }
                        }
                    }
                },
                message = run.consumer.recv() => match message {
                    Ok(msg) => {
                        let topic = msg.topic().to_string();
                        let partition = msg.partition();
                        let offset = msg.offset();
                        let payload = msg.payload().unwrap_or_default().to_vec();
                        let key = msg.key().map(<[u8]>::to_vec);
                        drop(msg);
                        run.accept(&topic, partition, offset, &payload, key.as_deref(), &target).await?;
                    }
                    Err(KafkaError::PartitionEOF(partition)) => run.at_end(partition, &target).await?,
                    Err(e) => {
                        run.metrics.error("consume");
                        crate::warn_limited!(component = %run.component, error = %e, "Kafka consumer error");
                    }
                },
                _ = flush_tick.tick() => run.flush_due(max_wait, &target).await?,
            }
        }
        // Shutdown: batches not yet sent are dropped (their records are read again after a
        // restart); the output closes so the pipeline drains; then the last acknowledgements
        // come in, and the stored offsets are committed.
        run.pending.clear();
        run.out = None;
        drop(target);
        tracing::info!(component = %run.component, in_flight = run.tracker.in_flight(), "Kafka source draining acknowledgements");
        while run.tracker.in_flight() > 0 {
            match acks.recv().await {
                Some((id, ok, finalized)) => run.release(id, ok, finalized),
                None => break,
            }
        }
        // Explicitly, with each offset's metadata (a commit of "the current state" would
        // send the offsets without it).
        if let Err(e) = commit_stored(&run.consumer, &run.stored, None) {
            tracing::debug!(component = %run.component, error = %e, "final commit");
        }
        Ok(())
    }
}

struct Run {
    component: String,
    config: KafkaSourceConfig,
    metrics: Arc<ComponentMetrics>,
    consumer: StreamConsumer<SourceContext>,
    dead_letters: Option<ThreadedProducer<DefaultProducerContext>>,
    tracker: Tracker,
    stored: Stored,
    finalized_files: Option<Arc<FinalizedFiles>>,
    pending: BTreeMap<(String, i32), Pending>,
    next_id: u64,
    out: Option<Output>,
    /// The partitions read here.
    assigned: BTreeSet<(String, i32)>,
    /// Event time per lane, for the frontier batches carry and for alignment.
    clocks: LaneClocks,
    /// The frontier last sent downstream.
    sent_frontier: Option<Frontier>,
    /// Partitions paused for running ahead of the frontier (watermark alignment).
    paused: BTreeSet<(String, i32)>,
    /// Per partition, the offset after its last batch sent: with what `pending` holds,
    /// where a resumed partition continues (librdkafka's own resume position was seen to
    /// re-read records a run had already written).
    read_to: HashMap<(String, i32), i64>,
}

impl Run {
    fn release(&mut self, id: u64, ok: bool, finalized_before_ms: Option<i64>) {
        if !ok {
            tracing::debug!(component = %self.component, id, "a batch failed downstream; its offset stays");
        }
        if let Some((topic, partition, next_offset, finalized)) =
            self.tracker.release(id, ok, finalized_before_ms)
        {
            // `store_offsets` stores the offset as given: the next record to read. (The
            // single-partition `store_offset` adds one, as librdkafka's
            // `rd_kafka_offset_store` expects the last record processed; handing it the next
            // offset skipped one record at every restart.)
            // The metadata goes with the offset into the auto-commit.
            let mut list = TopicPartitionList::new();
            let stored = list
                .add_partition_offset(&topic, partition, Offset::Offset(next_offset))
                .and_then(|()| {
                    if let Some(mut e) = list.find_partition(&topic, partition) {
                        e.set_metadata(commit_metadata(finalized));
                    }
                    self.consumer.store_offsets(&list)
                });
            match stored {
                Ok(()) => {
                    let mut grew = false;
                    if let Ok(mut s) = self.stored.lock() {
                        let before = s.insert((topic.clone(), partition), (next_offset, finalized));
                        grew = finalized > before.and_then(|(_, f)| f);
                    }
                    // Before the auto-commit can send the offset: the file may run ahead of
                    // the commit, never behind it.
                    if let (true, Some(files), Some(ms)) = (grew, &self.finalized_files, finalized)
                    {
                        if let Err(e) = files.write(&topic, partition, ms) {
                            self.metrics.error("checkpoint_write");
                            crate::warn_limited!(component = %self.component, topic, partition, error = %e, "writing the finalized-windows checkpoint");
                        }
                    }
                }
                Err(e) => {
                    // A partition revoked meanwhile: its new owner re-reads from the commit.
                    tracing::debug!(component = %self.component, topic, partition, error = %e, "storing an offset");
                }
            }
        }
    }

    /// Tells the stages downstream which lanes (partitions) are now read here, so a stage
    /// with state per lane can wait for them.
    async fn assigned(&mut self, list: &[((String, i32), Option<i64>)]) -> Result<(), BoxError> {
        tracing::info!(component = %self.component, assigned = ?list, "partitions assigned");
        for ((topic, partition), finalized_before_ms) in list {
            self.tracker.assign(topic, *partition, *finalized_before_ms);
            self.assigned.insert((topic.clone(), *partition));
            self.clocks.assign(lane_of(*partition));
        }
        let lanes = list
            .iter()
            .map(|&((_, partition), finalized_before_ms)| AssignedLane {
                lane: lane_of(partition),
                finalized_before_ms,
            })
            .collect();
        self.announce(LaneEvent::Assigned(lanes)).await
    }

    /// Forgets the revoked partitions' unsent records and batches in flight (their new owner
    /// reads them again from the last commit) and tells the stages downstream, behind every
    /// batch already sent from those partitions, to drop what they hold for them.
    async fn revoke(&mut self, list: &[(String, i32)]) -> Result<(), BoxError> {
        for (topic, partition) in list {
            let key = (topic.clone(), *partition);
            self.pending.remove(&key);
            self.tracker.revoke(topic, *partition);
            self.assigned.remove(&key);
            self.paused.remove(&key);
            self.read_to.remove(&key);
            if !self.assigned.iter().any(|(_, p)| p == partition) {
                self.clocks.revoke(lane_of(*partition));
            }
        }
        tracing::info!(component = %self.component, revoked = list.len(), "partitions revoked");
        let lanes = list.iter().map(|&(_, partition)| lane_of(partition));
        self.announce(LaneEvent::Revoked(lanes.collect())).await?;
        self.frontier_moved().await
    }

    /// The consumer read `partition` to its end: what is pending of it leaves now, its
    /// lag reads 0, and it stops holding the frontier.
    async fn at_end(
        &mut self,
        partition: i32,
        target: &Arc<dyn AckTarget>,
    ) -> Result<(), BoxError> {
        let keys: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|(_, p)| *p == partition)
            .cloned()
            .collect();
        for (topic, partition) in keys {
            self.send(topic.clone(), partition, target).await?;
            lag_gauge()
                .with_label_values(&[&self.component, &topic, &partition.to_string()])
                .set(0);
        }
        self.clocks.at_end(lane_of(partition));
        self.frontier_moved().await
    }

    /// Sends the frontier downstream alone when it changed, and resumes the partitions it
    /// no longer runs far behind.
    async fn frontier_moved(&mut self) -> Result<(), BoxError> {
        let frontier = self.clocks.frontier();
        self.align();
        let Some(f) = frontier.filter(|_| frontier != self.sent_frontier) else {
            return Ok(());
        };
        self.sent_frontier = frontier;
        tracing::debug!(component = %self.component, frontier = ?f, "event-time frontier moved");
        let batch = Batch::frontier_only(Records::empty(self.config.record), f);
        self.forward(batch).await
    }

    /// Watermark alignment: pauses partitions whose event time runs more than
    /// `max_lane_drift_ms` ahead of the frontier, resumes those back within it.
    fn align(&mut self) {
        let Some(drift_ms) = self.config.max_lane_drift_ms else {
            return;
        };
        let (mut pause, mut resume, mut seek) = (
            TopicPartitionList::new(),
            TopicPartitionList::new(),
            TopicPartitionList::new(),
        );
        for (topic, partition) in &self.assigned {
            let key = (topic.clone(), *partition);
            let ahead = self.clocks.ahead(lane_of(*partition), drift_ms);
            if ahead && !self.paused.contains(&key) {
                pause.add_partition(topic, *partition);
                self.paused.insert(key);
            } else if !ahead && self.paused.remove(&key) {
                resume.add_partition(topic, *partition);
                // Where this source stopped reading: past what it holds unsent, or past
                // its last batch.
                let next = self.pending.get(&key).map(|p| p.next_offset);
                if let Some(next) = next.or_else(|| self.read_to.get(&key).copied()) {
                    let _ = seek.add_partition_offset(topic, *partition, Offset::Offset(next));
                }
            }
        }
        if pause.count() > 0 {
            tracing::debug!(component = %self.component, partitions = ?partitions_of(&pause), "pausing partitions ahead of the event-time frontier");
            if let Err(e) = self.consumer.pause(&pause) {
                crate::warn_limited!(component = %self.component, error = %e, "pausing partitions");
            }
        }
        if resume.count() > 0 {
            tracing::debug!(component = %self.component, partitions = ?partitions_of(&resume), "resuming partitions");
            if let Err(e) = self.consumer.resume(&resume) {
                crate::warn_limited!(component = %self.component, error = %e, "resuming partitions");
            }
            // From exactly where this source stopped reading; asynchronous (errors arrive
            // through the consumer).
            if seek.count() > 0 {
                if let Err(e) = self.consumer.seek_partitions(seek, Duration::ZERO) {
                    crate::warn_limited!(component = %self.component, error = %e, "positioning resumed partitions");
                }
            }
        }
    }

    async fn announce(&mut self, event: LaneEvent) -> Result<(), BoxError> {
        let batch = Batch::lane_event(Records::empty(self.config.record), event);
        self.forward(batch).await
    }

    /// Sends `batch` downstream; after shutdown began (the output closed), drops it.
    async fn forward(&mut self, batch: Batch) -> Result<(), BoxError> {
        match &mut self.out {
            Some(out) => out.send(batch).await?,
            None => drop(batch),
        }
        Ok(())
    }

    async fn accept(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        target: &Arc<dyn AckTarget>,
    ) -> Result<(), BoxError> {
        let kind = self.config.record;
        let clocks = &mut self.clocks;
        let entry = self
            .pending
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                // Records of this lane are waiting: it is not at its end.
                clocks.reading(lane_of(partition));
                Pending {
                    records: Records::empty(kind),
                    next_offset: offset + 1,
                    since: tokio::time::Instant::now(),
                }
            });
        entry.next_offset = offset + 1;
        let limits = self.config.decode_limits();
        if let Err(e) = entry
            .records
            .push_decoded_limited(payload, self.config.encoding, &limits)
        {
            self.metrics.dropped(e.drop_reason(), 1);
            crate::warn_limited!(component = %self.component, topic, partition, offset, error = %e, "dropped an undecodable record");
            if let (Some(p), Some(dlq)) = (&self.dead_letters, &self.config.dead_letter_topic) {
                let mut r = BaseRecord::to(dlq).payload(payload);
                if let Some(k) = key {
                    r = r.key(k);
                }
                if p.send(r).is_err() {
                    self.metrics.error("dead_letter");
                }
            }
        }
        if entry.records.len() >= self.config.batch_max_records {
            self.send(topic.to_string(), partition, target).await?;
        }
        Ok(())
    }

    async fn flush_due(
        &mut self,
        max_wait: Duration,
        target: &Arc<dyn AckTarget>,
    ) -> Result<(), BoxError> {
        let due: Vec<(String, i32)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= max_wait)
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, partition) in due {
            self.send(topic, partition, target).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        topic: String,
        partition: i32,
        target: &Arc<dyn AckTarget>,
    ) -> Result<(), BoxError> {
        let Some(p) = self.pending.remove(&(topic.clone(), partition)) else {
            return Ok(());
        };
        let id = self.next_id;
        self.next_id += 1;
        self.tracker.open(id, &topic, partition, p.next_offset);
        if self.config.max_lane_drift_ms.is_some() {
            self.read_to
                .insert((topic.clone(), partition), p.next_offset);
        }
        let token = AckToken::new(id, target.clone());
        let lane = lane_of(partition);
        if let Some(min_ms) = p.records.min_event_ts_ms() {
            self.clocks.delivered(lane, min_ms);
        }
        let mut batch = Batch::tracked(p.records, lane, Acks::one(token));
        batch.frontier = self.clocks.frontier();
        self.sent_frontier = batch.frontier;
        self.forward(batch).await?;
        self.align();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Encoding, RecordKind};

    #[test]
    fn offsets_move_only_past_an_acknowledged_prefix() {
        let mut t = Tracker::default();
        t.open(0, "t", 0, 10);
        t.open(1, "t", 0, 20);
        t.open(2, "t", 1, 5);
        assert_eq!(t.release(1, true, Some(5)), None, "batch 0 is still out");
        assert_eq!(
            t.release(0, true, Some(3)),
            Some(("t".into(), 0, 20, Some(5))),
            "past both batches, with the larger finalized_before_ms"
        );
        assert_eq!(
            t.release(2, false, None),
            None,
            "a failed batch never moves the offset"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let mut t = Tracker::default();
        t.open(0, "t", 3, 10);
        t.revoke("t", 3);
        assert_eq!(t.release(0, true, None), None);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_poison_record_is_an_error_not_a_panic() {
        let mut r = Records::empty(RecordKind::Probe);
        assert!(r.push_decoded(b"{not json", Encoding::Json).is_err());
        assert!(r.push_decoded(b"\xff\xff", Encoding::Protobuf).is_err());
        let ok = br#"{"vehicle_id":"v","ts_ms":1,"lat":60.1,"lon":24.9}"#;
        r.push_decoded(ok, Encoding::Json)
            .expect("a JSON probe decodes");
        assert_eq!(r.len(), 1);
    }
}
