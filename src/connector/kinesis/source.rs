//! The Kinesis source, polling: ListShards finds the shards this instance owns; one task per
//! shard reads it with GetRecords from its checkpoint (AFTER_SEQUENCE_NUMBER) or from the
//! configured start, backs off on throttling and refreshes expired iterators. A child shard
//! starts only once its parents' checkpoints say SHARD_END. Each GetRecords response
//! becomes one batch (its shard's lane) with an acknowledgement token; a shard's checkpoint
//! moves only past a prefix of acknowledged batches and is written to the file store every
//! `checkpoint_interval_ms`, when a shard ends, and at shutdown (at-least-once).
//!
//! Before a shard's first batch, the stages downstream hear that its lane is assigned
//! (`LaneEvent::Assigned`), with the `finalized_before_ms` its checkpoint kept: what a
//! windowed stage had emitted for good when the checkpoint was written. An aggregate skips
//! re-read observations of those windows (`already_emitted`), as after a Kafka restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use prometheus::IntGaugeVec;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Checkpoint, FileCheckpointStore};
use super::client::{backoff, build_client, error_code, is_throttling};
use super::config::{validated, KinesisSourceConfig, StartPosition};
use super::shards::{owns_shard, parents_done, shard_number, ShardInfo};
use super::KinesisError;
use crate::record::{DecodeLimits, Encoding, RecordKind};
use crate::runtime::{
    AckChannel, AckTarget, AckToken, AckedPrefix, Acks, AssignedLane, Batch, BoxError, Frontier,
    LaneClocks, LaneEvent, Output, Records, Release, Source,
};
use crate::telemetry::metrics::{metrics, ComponentMetrics};

/// `pipeline_kinesis_millis_behind_latest` (component, shard), defined in telemetry so that
/// the family exists whichever connectors a run has.
pub(super) fn behind_gauge() -> &'static IntGaugeVec {
    metrics().kinesis_millis_behind_latest()
}

/// What a shard reader tells the source task.
pub(super) enum ReaderMsg {
    /// One response's records, and the sequence number of its last record; `at_end`: the
    /// response said the shard has nothing newer (`MillisBehindLatest` = 0) and these are
    /// its last records.
    Records {
        shard: String,
        lane: u32,
        records: Records,
        last_sequence: String,
        at_end: bool,
    },
    /// A response with no records said the shard has nothing newer.
    AtEnd { lane: u32 },
    /// The shard is closed and read to its end.
    End { shard: String },
}

#[derive(Default)]
struct ShardTrack {
    batches: AckedPrefix<String>,
    ended: bool,
}

/// Batches in flight per shard; a shard's checkpoint is the last sequence number of its
/// acknowledged prefix, with the shard's `finalized_before_ms` (see [`AckedPrefix`]), and
/// SHARD_END once it ended with nothing in flight.
#[derive(Default)]
pub(super) struct Tracker {
    where_: HashMap<u64, String>,
    shards: HashMap<String, ShardTrack>,
}

impl Tracker {
    /// A shard is read from its checkpoint, which kept `finalized_before_ms`.
    pub(super) fn start(&mut self, shard: &str, finalized_before_ms: Option<i64>) {
        self.shards.insert(
            shard.to_string(),
            ShardTrack {
                batches: AckedPrefix::new(finalized_before_ms),
                ended: false,
            },
        );
    }

    pub(super) fn open(&mut self, id: u64, shard: &str, last_sequence: String) {
        self.where_.insert(id, shard.to_string());
        self.shards
            .entry(shard.to_string())
            .or_default()
            .batches
            .open(id, last_sequence);
    }

    /// Marks a batch, with the `finalized_before_ms` its token brought; returns the shard's
    /// new checkpoint, if it moved.
    pub(super) fn release(
        &mut self,
        id: u64,
        ok: bool,
        finalized_before_ms: Option<i64>,
    ) -> Option<(String, Checkpoint)> {
        let shard = self.where_.remove(&id)?;
        let track = self.shards.get_mut(&shard)?;
        let moved = track.batches.release(id, ok, finalized_before_ms);
        if track.ended && track.batches.is_empty() {
            return Some((shard, Checkpoint::ShardEnd));
        }
        let finalized_before_ms = track.batches.finalized_before_ms();
        moved.map(|sequence_number| {
            (
                shard,
                Checkpoint::SequenceNumber {
                    sequence_number,
                    finalized_before_ms,
                },
            )
        })
    }

    /// The shard was read to its end; returns SHARD_END when nothing of it is in flight.
    pub(super) fn end(&mut self, shard: &str) -> Option<(String, Checkpoint)> {
        let track = self.shards.entry(shard.to_string()).or_default();
        track.ended = true;
        track
            .batches
            .is_empty()
            .then(|| (shard.to_string(), Checkpoint::ShardEnd))
    }

    pub(super) fn in_flight(&self) -> usize {
        self.where_.len()
    }
}

pub(super) struct KinesisSource {
    component: String,
    config: KinesisSourceConfig,
    client: Option<Client>,
}

impl KinesisSourceConfig {
    /// Builds the source; the client is created and the shards listed when it runs.
    pub fn build(&self, component: &str) -> Result<Box<dyn Source>, KinesisError> {
        self.build_around(component, None)
    }

    /// Builds the source around a given client (a mocked one in tests).
    pub fn build_with_client(
        &self,
        component: &str,
        client: Client,
    ) -> Result<Box<dyn Source>, KinesisError> {
        self.build_around(component, Some(client))
    }

    fn build_around(
        &self,
        component: &str,
        client: Option<Client>,
    ) -> Result<Box<dyn Source>, KinesisError> {
        validated(|p| self.validate("source", p))?;
        Ok(Box::new(KinesisSource {
            component: component.to_string(),
            config: self.clone(),
            client,
        }))
    }
}

/// Decodes a response's records; undecodable ones and those over the size limits are
/// counted (`undecodable`, `too_large`) and logged, never fatal.
pub(super) fn decode_all(
    records: &[aws_sdk_kinesis::types::Record],
    kind: RecordKind,
    encoding: Encoding,
    limits: &DecodeLimits,
    m: &ComponentMetrics,
    shard: &str,
) -> Records {
    let mut out = Records::empty(kind);
    let (mut undecodable, mut too_large) = (0, 0);
    for r in records {
        if let Err(e) = out.push_decoded_limited(r.data().as_ref(), encoding, limits) {
            match e.drop_reason() {
                "too_large" => too_large += 1,
                _ => undecodable += 1,
            }
            crate::warn_limited!(component = %m.component, shard, sequence_number = r.sequence_number(), error = %e, "dropped an undecodable record");
        }
    }
    if undecodable > 0 {
        m.dropped("undecodable", undecodable);
    }
    if too_large > 0 {
        m.dropped("too_large", too_large);
    }
    out
}

/// What a shard reader needs.
#[derive(Clone)]
pub(super) struct ReaderCtx {
    pub client: Client,
    pub config: Arc<KinesisSourceConfig>,
    pub metrics: Arc<ComponentMetrics>,
    pub tx: mpsc::Sender<ReaderMsg>,
    pub cancel: CancellationToken,
    /// With enhanced fan-out: the registered consumer's ARN.
    pub consumer_arn: Option<String>,
    /// Lanes running too far ahead of the frontier (watermark alignment): their readers
    /// wait before asking for more.
    pub paused: watch::Receiver<BTreeSet<u32>>,
}

impl ReaderCtx {
    /// Sleeps unless cancelled first; false when cancelled.
    pub(super) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Waits while `lane` is paused for running ahead; false when cancelled.
    pub(super) async fn wait_unpaused(&self, lane: u32) -> bool {
        let mut paused = self.paused.clone();
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            r = paused.wait_for(|p| !p.contains(&lane)) => r.is_ok(),
        }
    }

    pub(super) async fn send(&self, msg: ReaderMsg) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            r = self.tx.send(msg) => r.is_ok(),
        }
    }

    pub(super) fn retry_wait(&self, failures: u32) -> Duration {
        backoff(
            failures,
            self.config.retry_base_ms,
            self.config.retry_max_ms,
        )
    }
}

/// Reads one shard with GetRecords until it ends or the reader is cancelled. `after` is the
/// checkpointed sequence number, if any.
async fn read_shard(ctx: ReaderCtx, shard: String, mut after: Option<String>) {
    let lane = shard_number(&shard)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let gauge = behind_gauge().with_label_values(&[&ctx.metrics.component, &shard]);
    let stream = ctx.config.stream.clone();
    let mut iterator: Option<String> = None;
    let mut failures = 0u32;
    loop {
        if ctx.cancel.is_cancelled() || !ctx.wait_unpaused(lane).await {
            return;
        }
        let Some(it) = iterator.clone() else {
            let mut req = ctx
                .client
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard);
            req = match (&after, ctx.config.start_position) {
                (Some(seq), _) => req
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(seq),
                (None, StartPosition::TrimHorizon) => {
                    req.shard_iterator_type(ShardIteratorType::TrimHorizon)
                }
                (None, StartPosition::Latest) => req.shard_iterator_type(ShardIteratorType::Latest),
                (None, StartPosition::AtTimestamp) => req
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_millis(
                        ctx.config.start_timestamp_ms.unwrap_or(0),
                    )),
            };
            match req.send().await {
                Ok(out) => {
                    iterator = out.shard_iterator().map(str::to_string);
                    if iterator.is_none() {
                        // No iterator: nothing left to read in a closed shard.
                        let _ = ctx.send(ReaderMsg::End { shard }).await;
                        return;
                    }
                }
                Err(e) => {
                    let code = error_code(&e);
                    ctx.metrics.error(if is_throttling(&code) {
                        "get_shard_iterator_throttled"
                    } else {
                        "get_shard_iterator"
                    });
                    crate::warn_limited!(component = %ctx.metrics.component, shard, error = %code, "GetShardIterator failed; backing off");
                    if !ctx.pause(ctx.retry_wait(failures)).await {
                        return;
                    }
                    failures = failures.saturating_add(1);
                }
            }
            continue;
        };
        let got = ctx
            .client
            .get_records()
            .shard_iterator(it)
            .limit(ctx.config.get_records_limit)
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) => {
                let code = error_code(&e);
                if code == "ExpiredIteratorException" {
                    ctx.metrics.error("iterator_expired");
                    iterator = None;
                    continue;
                }
                let throttled = is_throttling(&code);
                ctx.metrics.error(if throttled {
                    "get_records_throttled"
                } else {
                    "get_records"
                });
                if !throttled {
                    crate::warn_limited!(component = %ctx.metrics.component, shard, error = %code, "GetRecords failed; backing off");
                }
                if !ctx.pause(ctx.retry_wait(failures)).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        failures = 0;
        if let Some(ms) = out.millis_behind_latest() {
            gauge.set(ms);
        }
        let records = out.records();
        let full = records.len() >= usize::try_from(ctx.config.get_records_limit).unwrap_or(0);
        // Read to its end for now: nothing newer, and a response that was not full (an
        // emulator such as kinesalite says 0 even while a backlog remains).
        let caught_up = out.millis_behind_latest() == Some(0) && !full;
        if records.is_empty() && caught_up && !ctx.send(ReaderMsg::AtEnd { lane }).await {
            return;
        }
        let chunks = records.chunks(ctx.config.batch_max_records.max(1)).count();
        for (i, chunk) in records
            .chunks(ctx.config.batch_max_records.max(1))
            .enumerate()
        {
            let Some(last) = chunk.last() else { continue };
            let last_sequence = last.sequence_number().to_string();
            let decoded = decode_all(
                chunk,
                ctx.config.record,
                ctx.config.encoding,
                &ctx.config.decode_limits(),
                &ctx.metrics,
                &shard,
            );
            after = Some(last_sequence.clone());
            let msg = ReaderMsg::Records {
                shard: shard.clone(),
                lane,
                records: decoded,
                last_sequence,
                at_end: caught_up && i + 1 == chunks,
            };
            if !ctx.send(msg).await {
                return;
            }
        }
        match out.next_shard_iterator() {
            Some(next) => iterator = Some(next.to_string()),
            None => {
                let _ = ctx.send(ReaderMsg::End { shard }).await;
                return;
            }
        }
        if !full
            && !ctx
                .pause(Duration::from_millis(ctx.config.poll_interval_ms))
                .await
        {
            return;
        }
    }
}

/// Every shard of the stream, through ListShards (all pages).
async fn list_shards(
    client: &Client,
    stream: &str,
) -> Result<BTreeMap<String, ShardInfo>, KinesisError> {
    let mut listed = BTreeMap::new();
    let mut next: Option<String> = None;
    loop {
        // With a NextToken, the stream name must not be repeated.
        let req = match &next {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let out = req.send().await.map_err(|e| KinesisError::Api {
            operation: "ListShards",
            stream: stream.to_string(),
            message: error_code(&e),
        })?;
        for s in out.shards() {
            let parents = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .map(str::to_string)
                .collect();
            listed.insert(
                s.shard_id().to_string(),
                ShardInfo {
                    shard_id: s.shard_id().to_string(),
                    parents,
                },
            );
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => return Ok(listed),
        }
    }
}

/// Starts the reader of an owned, ready shard: enhanced fan-out when the source registered
/// a consumer, polling otherwise.
fn start_reader(
    ctx: ReaderCtx,
    shard: String,
    after: Option<String>,
) -> tokio::task::JoinHandle<()> {
    match ctx.consumer_arn.clone() {
        Some(arn) => tokio::spawn(super::fanout::read_shard_fan_out(ctx, arn, shard, after)),
        None => tokio::spawn(read_shard(ctx, shard, after)),
    }
}

#[async_trait]
impl Source for KinesisSource {
    async fn run(
        self: Box<Self>,
        out: Output,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let KinesisSource {
            component,
            config,
            client,
        } = *self;
        let client = match client {
            Some(c) => c,
            None => build_client(&config.region, config.endpoint.as_deref()).await,
        };
        let m = metrics().component(&component);
        m.dropped("undecodable", 0);
        m.dropped("too_large", 0);
        let config = Arc::new(config);
        let store =
            FileCheckpointStore::new(&config.checkpoint_dir, &config.application, &config.stream);
        let (tx, rx) = mpsc::channel(8);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (paused, paused_rx) = watch::channel(BTreeSet::new());
        let mut run = Run {
            ctx: ReaderCtx {
                client,
                config: config.clone(),
                metrics: m,
                tx,
                cancel: CancellationToken::new(),
                consumer_arn: None,
                paused: paused_rx,
            },
            component,
            store,
            tracker: Tracker::default(),
            dirty: BTreeMap::new(),
            started: BTreeSet::new(),
            readers: Vec::new(),
            next_id: 0,
            target: Arc::new(AckChannel(ack_tx)),
            out: Some(out),
            clocks: LaneClocks::new(),
            sent_frontier: None,
            paused,
        };
        if config.enhanced_fan_out {
            let arn = super::fanout::register_consumer(&run.ctx).await?;
            tracing::info!(component = %run.component, consumer_arn = %arn, "reading through enhanced fan-out");
            run.ctx.consumer_arn = Some(arn);
        }
        run.consume(rx, acks, shutdown).await
    }
}

struct Run {
    ctx: ReaderCtx,
    component: String,
    store: FileCheckpointStore,
    tracker: Tracker,
    /// Checkpoints that moved since they were last written.
    dirty: BTreeMap<String, Checkpoint>,
    /// Shards whose reader this run started (or found ended).
    started: BTreeSet<String>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    next_id: u64,
    target: Arc<dyn AckTarget>,
    out: Option<Output>,
    /// Event time per shard lane, for the frontier batches carry and for alignment.
    clocks: LaneClocks,
    sent_frontier: Option<Frontier>,
    paused: watch::Sender<BTreeSet<u32>>,
}

impl Run {
    async fn consume(
        &mut self,
        mut rx: mpsc::Receiver<ReaderMsg>,
        mut acks: mpsc::UnboundedReceiver<Release>,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let config = self.ctx.config.clone();
        let mut checkpoint_tick =
            tokio::time::interval(Duration::from_millis(config.checkpoint_interval_ms));
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh_tick =
            tokio::time::interval(Duration::from_millis(config.shard_refresh_interval_ms));
        refresh_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh_failures = 0u32;
        let result: Result<(), BoxError> = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some((id, ok, finalized)) = acks.recv() => {
                    if let Err(e) = self.release(id, ok, finalized).await { break Err(e) }
                }
                Some(msg) = rx.recv() => {
                    if let Err(e) = self.accept(msg).await { break Err(e) }
                }
                _ = checkpoint_tick.tick() => {
                    if let Err(e) = self.save_dirty() { break Err(e.into()) }
                }
                _ = refresh_tick.tick() => match self.refresh().await {
                    Ok(started) => {
                        refresh_failures = 0;
                        if let Err(e) = self.announce(started).await { break Err(e) }
                    }
                    Err(e) => {
                        self.ctx.metrics.error("list_shards");
                        crate::warn_limited!(component = %self.component, error = %e, "listing shards failed; trying again later");
                        refresh_failures += 1;
                        if self.started.is_empty() && refresh_failures >= 5 {
                            break Err(e.into());
                        }
                    }
                },
            }
        };
        // Shutdown (or failure): readers stop; what they had not handed over is read again
        // after a restart. The output closes so the pipeline drains, the last
        // acknowledgements come in, and the checkpoints they move are written.
        self.ctx.cancel.cancel();
        drop(rx);
        self.out = None;
        self.target = Arc::new(AckChannel(mpsc::unbounded_channel().0));
        tracing::info!(component = %self.component, in_flight = self.tracker.in_flight(), "Kinesis source draining acknowledgements");
        while self.tracker.in_flight() > 0 {
            match acks.recv().await {
                Some((id, ok, finalized)) => {
                    if let Some((shard, c)) = self.tracker.release(id, ok, finalized) {
                        self.dirty.insert(shard, c);
                    }
                }
                None => break,
            }
        }
        let saved = self.save_dirty();
        for r in self.readers.drain(..) {
            r.abort();
        }
        result?;
        saved?;
        Ok(())
    }

    async fn release(
        &mut self,
        id: u64,
        ok: bool,
        finalized_before_ms: Option<i64>,
    ) -> Result<(), BoxError> {
        if !ok {
            tracing::debug!(component = %self.component, id, "a batch failed downstream; its checkpoint stays");
        }
        if let Some((shard, c)) = self.tracker.release(id, ok, finalized_before_ms) {
            self.moved(shard, c).await?;
        }
        Ok(())
    }

    /// A checkpoint moved: SHARD_END is written at once (children may be waiting for it),
    /// anything else at the next checkpoint tick.
    async fn moved(&mut self, shard: String, c: Checkpoint) -> Result<(), BoxError> {
        if c == Checkpoint::ShardEnd {
            self.dirty.remove(&shard);
            self.store.save(&shard, &c)?;
            behind_gauge()
                .remove_label_values(&[&self.component, &shard])
                .ok();
            tracing::info!(component = %self.component, shard, "shard read to its end");
            match self.refresh().await {
                Ok(started) => self.announce(started).await?,
                Err(e) => {
                    crate::warn_limited!(component = %self.component, error = %e, "listing shards after a shard end failed; trying again later");
                }
            }
        } else {
            self.dirty.insert(shard, c);
        }
        Ok(())
    }

    fn save_dirty(&mut self) -> Result<(), KinesisError> {
        while let Some((shard, c)) = self.dirty.pop_first() {
            if let Err(e) = self.store.save(&shard, &c) {
                self.dirty.insert(shard, c);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn accept(&mut self, msg: ReaderMsg) -> Result<(), BoxError> {
        match msg {
            ReaderMsg::Records {
                shard,
                lane,
                records,
                last_sequence,
                at_end,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                self.tracker.open(id, &shard, last_sequence);
                let token = AckToken::new(id, self.target.clone());
                match records.min_event_ts_ms() {
                    Some(min_ms) => self.clocks.delivered(lane, min_ms),
                    None => self.clocks.reading(lane),
                }
                let mut batch = Batch::tracked(records, lane, Acks::one(token));
                batch.frontier = self.clocks.frontier();
                self.sent_frontier = batch.frontier;
                // An empty batch (every record undecodable) is released at once by `send`
                // dropping it, which acknowledges the token: the checkpoint moves past it.
                if let Some(out) = &mut self.out {
                    out.send(batch).await?;
                }
                if at_end {
                    self.clocks.at_end(lane);
                }
                self.frontier_moved().await?;
            }
            ReaderMsg::AtEnd { lane } => {
                self.clocks.at_end(lane);
                self.frontier_moved().await?;
            }
            ReaderMsg::End { shard } => {
                // A closed shard read to its end holds nothing back any more.
                if let Some(lane) = shard_number(&shard).and_then(|n| u32::try_from(n).ok()) {
                    self.clocks.at_end(lane);
                }
                if let Some((shard, c)) = self.tracker.end(&shard) {
                    self.moved(shard, c).await?;
                }
                self.frontier_moved().await?;
            }
        }
        Ok(())
    }

    /// Sends the frontier downstream alone when it changed, and pauses or resumes the
    /// readers of shards by how far they run ahead of it (watermark alignment).
    async fn frontier_moved(&mut self) -> Result<(), BoxError> {
        let frontier = self.clocks.frontier();
        let drift_ms = self.ctx.config.max_lane_drift_ms;
        let ahead: BTreeSet<u32> = self
            .clocks
            .lanes()
            .filter(|&lane| self.clocks.ahead(lane, drift_ms))
            .collect();
        self.paused.send_if_modified(|paused| {
            let changed = *paused != ahead;
            if changed {
                tracing::debug!(component = %self.component, ahead = ?ahead, "shards paused for running ahead of the event-time frontier");
                *paused = ahead;
            }
            changed
        });
        if frontier.is_none() || frontier == self.sent_frontier {
            return Ok(());
        }
        self.sent_frontier = frontier;
        if let (Some(out), Some(f)) = (&mut self.out, frontier) {
            out.send(Batch::frontier_only(
                Records::empty(self.ctx.config.record),
                f,
            ))
            .await?;
        }
        Ok(())
    }

    /// Tells the stages downstream which lanes (shards) are now read here, each with what
    /// its checkpoint says was finalized, before any batch of theirs (their readers' batches
    /// pass through this task, after this).
    async fn announce(&mut self, started: Vec<AssignedLane>) -> Result<(), BoxError> {
        if let (false, Some(out)) = (started.is_empty(), &mut self.out) {
            let event = LaneEvent::Assigned(started);
            out.send(Batch::lane_event(
                Records::empty(self.ctx.config.record),
                event,
            ))
            .await?;
        }
        Ok(())
    }

    /// Lists the shards and starts a reader for every owned shard that is not started,
    /// not ended, and whose parents have ended; returns their lanes, to be announced.
    async fn refresh(&mut self) -> Result<Vec<AssignedLane>, KinesisError> {
        let config = self.ctx.config.clone();
        let listed = list_shards(&self.ctx.client, &config.stream).await?;
        let mut started = Vec::new();
        for shard in listed.values() {
            let id = &shard.shard_id;
            if self.started.contains(id)
                || !owns_shard(id, config.instance_index, config.instance_count)
            {
                continue;
            }
            let checkpoint = self.store.load(id)?;
            if checkpoint == Some(Checkpoint::ShardEnd) {
                self.started.insert(id.clone());
                continue;
            }
            let store = &self.store;
            let mut checkpoint_of = |p: &str| store.load(p).ok().flatten();
            if !parents_done(shard, &listed, &mut checkpoint_of) {
                tracing::debug!(component = %self.component, shard = %id, "waiting for parent shards to end");
                continue;
            }
            let (after, finalized_before_ms) = match checkpoint {
                Some(Checkpoint::SequenceNumber {
                    sequence_number,
                    finalized_before_ms,
                }) => (Some(sequence_number), finalized_before_ms),
                _ => (None, None),
            };
            tracing::info!(component = %self.component, shard = %id, resume_after = ?after, finalized_before_ms, "reading shard");
            if let Some(lane) = shard_number(id).and_then(|n| u32::try_from(n).ok()) {
                self.clocks.assign(lane);
                started.push(AssignedLane {
                    lane,
                    finalized_before_ms,
                });
            }
            self.tracker.start(id, finalized_before_ms);
            self.started.insert(id.clone());
            self.readers
                .push(start_reader(self.ctx.clone(), id.clone(), after));
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_checkpoints_move_only_past_an_acknowledged_prefix() {
        let mut t = Tracker::default();
        t.open(0, "a", "10".into());
        t.open(1, "a", "20".into());
        t.open(2, "b", "5".into());
        assert_eq!(
            t.release(1, true, Some(60_000)),
            None,
            "batch 0 is still out"
        );
        assert_eq!(
            t.release(0, true, None),
            Some((
                "a".into(),
                Checkpoint::SequenceNumber {
                    sequence_number: "20".into(),
                    finalized_before_ms: Some(60_000)
                }
            ))
        );
        assert_eq!(
            t.release(2, false, None),
            None,
            "a failed batch never moves it"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn kinesis_a_shard_keeps_the_floor_its_checkpoint_had() {
        let mut t = Tracker::default();
        t.start("a", Some(120_000));
        t.open(0, "a", "10".into());
        assert_eq!(
            t.release(0, true, Some(60_000)),
            Some((
                "a".into(),
                Checkpoint::SequenceNumber {
                    sequence_number: "10".into(),
                    finalized_before_ms: Some(120_000)
                }
            )),
            "a restarted reader has not finalized as far as its predecessor yet"
        );
    }

    #[test]
    fn kinesis_shard_end_waits_for_the_last_acknowledgement() {
        let mut t = Tracker::default();
        t.open(0, "a", "10".into());
        assert_eq!(t.end("a"), None);
        assert_eq!(
            t.release(0, true, None),
            Some(("a".into(), Checkpoint::ShardEnd))
        );
        assert_eq!(t.end("empty"), Some(("empty".into(), Checkpoint::ShardEnd)));
        t.open(1, "c", "1".into());
        t.end("c");
        assert_eq!(
            t.release(1, false, None),
            None,
            "a failed batch blocks the end"
        );
    }
}
