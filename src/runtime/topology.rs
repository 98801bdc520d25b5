//! Builds the components a config names, connects them with bounded batch channels, runs
//! them, and shuts them down in order: stop the sources, let the channels drain through
//! the stages, then let the sinks flush and close their files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ack::Acks;
use super::batch::{Batch, Records};
use super::component::{
    BoxError, DownstreamClosed, Edge, Input, Next, Output, Sink, Source, Transform,
};
use super::frontier::Frontier;
use crate::aggregate::Rejection;
use crate::config::{
    split_endpoint, PipelineConfig, RuntimeConfig, SinkConfig, SourceConfig, StageConfig,
};
use crate::connector::generator::GeneratorSource;
use crate::connector::parquet;
use crate::graph::RoadGraph;
use crate::record::RecordKind;
use crate::stage::aggregate::AggregateStage;
use crate::stage::assign::AssignStage;
use crate::stage::clean::CleanStage;
use crate::stage::clean::DropReason as CleanDropReason;
use crate::telemetry::live::LiveSpeeds;
use crate::telemetry::metrics::Series;
use crate::telemetry::tap::Tap;
use crate::telemetry::{metrics, ComponentMetrics};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("building component `{component}`: {source}")]
    Build {
        component: String,
        #[source]
        source: BoxError,
    },
    #[error("component `{component}` failed: {source}")]
    Component {
        component: String,
        #[source]
        source: BoxError,
    },
    #[error("shutdown did not finish within {timeout_ms} ms; still running: {pending:?}")]
    ShutdownTimeout {
        timeout_ms: u64,
        pending: Vec<String>,
    },
}

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub elapsed: Duration,
    /// Whether a shutdown signal stopped the sources before their input ended.
    pub interrupted: bool,
}

/// A built component, ready to be wired.
pub enum Component {
    Source(Box<dyn Source>),
    Transform(Box<dyn Transform>),
    Sink(Box<dyn Sink>),
}

/// An edge between two components: batches of `kind` (or any kind, when `None`) from
/// component `from` go to component `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub from: String,
    pub to: String,
    pub kind: Option<RecordKind>,
}

impl Link {
    /// A link that carries whatever `from` emits.
    pub fn any(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            kind: None,
        }
    }
}

/// A topology ready to run: every component built, nothing started.
pub struct Topology {
    components: Vec<(String, Component)>,
    links: Vec<Link>,
    channel_capacity: usize,
    shutdown_timeout: Duration,
    tap: Option<Arc<Tap>>,
    live: Option<Arc<LiveSpeeds>>,
}

impl Topology {
    /// Builds every component. `graph` must be present when the config needs one.
    pub fn build(config: &PipelineConfig, graph: Option<Arc<RoadGraph>>) -> Result<Self, RunError> {
        let mut components = Vec::new();
        let build_err = |component: &str| {
            let component = component.to_string();
            move |source: BoxError| RunError::Build {
                component: component.clone(),
                source,
            }
        };
        for (name, source) in &config.sources {
            let built: Box<dyn Source> = match source {
                SourceConfig::Parquet(c) => c.build(name).map_err(|e| build_err(name)(e.into()))?,
                SourceConfig::Generator(c) => {
                    let graph = graph.clone().ok_or_else(|| {
                        build_err(name)("the generator needs a road graph (graph.path)".into())
                    })?;
                    Box::new(GeneratorSource::new(c.clone(), graph))
                }
                SourceConfig::Kafka(c) => c.build(name).map_err(|e| build_err(name)(e.into()))?,
                SourceConfig::Kinesis(c) => c.build(name).map_err(|e| build_err(name)(e.into()))?,
            };
            metrics().preregister(name, source_series(source));
            components.push((name.clone(), Component::Source(built)));
        }
        for (name, stage) in &config.stages {
            let built: Box<dyn Transform> = match stage {
                StageConfig::Clean(c) => {
                    Box::new(CleanStage::new(c.clone(), metrics().component(name)))
                }
                StageConfig::Aggregate(c) => {
                    let graph = graph.clone().ok_or_else(|| {
                        build_err(name)(
                            "the aggregate stage needs a road graph (graph.path)".into(),
                        )
                    })?;
                    Box::new(
                        AggregateStage::new(c, graph, metrics().component(name))
                            .with_late_port(config.reads_port(name, "late")),
                    )
                }
                StageConfig::Assign(c) => {
                    let graph = graph.clone().ok_or_else(|| {
                        build_err(name)("the assign stage needs a road graph (graph.path)".into())
                    })?;
                    Box::new(
                        AssignStage::new(c.clone(), graph, metrics().component(name))
                            .map_err(|e| build_err(name)(e.into()))?,
                    )
                }
            };
            preregister_stage(name, stage);
            components.push((name.clone(), Component::Transform(built)));
        }
        for (name, sink) in &config.sinks {
            // The record kind the sink will see, so an empty input still yields a valid,
            // typed file.
            let kind = config
                .inputs_of(name)
                .find_map(|from| config.output_kind(from));
            let built: Box<dyn Sink> = match sink {
                SinkConfig::Parquet(c) => {
                    c.build(name, kind).map_err(|e| build_err(name)(e.into()))?
                }
                SinkConfig::Ndjson(c) => {
                    c.build(name, kind).map_err(|e| build_err(name)(e.into()))?
                }
                SinkConfig::Kafka(c) => c.build(name).map_err(|e| build_err(name)(e.into()))?,
                SinkConfig::Kinesis(c) => c.build(name).map_err(|e| build_err(name)(e.into()))?,
            };
            metrics().preregister(name, sink_series(sink));
            components.push((name.clone(), Component::Sink(built)));
        }
        // An edge from `name.port` carries that port's kind; from `name`, the default port's.
        let links = config
            .edges
            .iter()
            .map(|(from, to)| Link {
                from: split_endpoint(from).0.to_string(),
                to: to.clone(),
                kind: config.output_kind(from),
            })
            .collect();
        let mut topology = Self::new(components, links, &config.runtime);
        topology.tap = Tap::for_config(config);
        topology.live = graph
            .filter(|_| config.telemetry.live_map)
            .map(|g| Arc::new(LiveSpeeds::new(g)));
        Ok(topology)
    }

    /// The live view's store, when `telemetry.live_map` is on; the HTTP server serves it as
    /// `/speeds`, `/segments` and `/map`.
    pub fn live(&self) -> Option<Arc<LiveSpeeds>> {
        self.live.clone()
    }

    /// The record tap of this topology's edges, when `telemetry.tap` is on; the HTTP
    /// server serves it as `/tap`.
    pub fn tap(&self) -> Option<Arc<Tap>> {
        self.tap.clone()
    }

    /// Wires components built elsewhere.
    pub fn new(
        components: Vec<(String, Component)>,
        links: Vec<Link>,
        runtime: &RuntimeConfig,
    ) -> Self {
        Self {
            components,
            links,
            channel_capacity: runtime.channel_capacity_batches.max(1),
            shutdown_timeout: Duration::from_millis(runtime.shutdown_timeout_ms),
            tap: None,
            live: None,
        }
    }

    /// Runs until every component has finished. When `shutdown` fires, the sources stop and
    /// the rest drains; if that takes longer than the configured limit, the run fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunReport, RunError> {
        let started = Instant::now();
        // One input channel per stage and sink, shared by all of its upstreams.
        let mut senders: BTreeMap<String, mpsc::Sender<Batch>> = BTreeMap::new();
        let mut receivers: BTreeMap<String, mpsc::Receiver<Batch>> = BTreeMap::new();
        for (name, built) in &self.components {
            if !matches!(built, Component::Source(_)) {
                let (tx, rx) = mpsc::channel(self.channel_capacity);
                senders.insert(name.clone(), tx);
                receivers.insert(name.clone(), rx);
            }
        }
        // Each component's number, stamped on what it sends (`Batch::origin`).
        let origins: BTreeMap<String, u32> = self
            .components
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), i as u32))
            .collect();
        let output_of = |component: &Arc<ComponentMetrics>| {
            let downstream = self
                .links
                .iter()
                .filter(|link| link.from == component.component)
                .filter_map(|link| {
                    senders.get(&link.to).map(|tx| Edge {
                        kind: link.kind,
                        tx: tx.clone(),
                    })
                })
                .collect();
            let taps = self
                .tap
                .as_ref()
                .map(|t| t.points_of(&component.component))
                .unwrap_or_default();
            let origin = origins.get(&component.component).copied().unwrap_or(0);
            Output::new(component.clone(), downstream)
                .with_taps(taps)
                .with_live(self.live.clone())
                .with_origin(origin)
        };

        let sources_stop = shutdown.child_token();
        let failed = CancellationToken::new();
        let mut tasks: Vec<(String, JoinHandle<ComponentResult>)> = Vec::new();
        for (name, built) in self.components {
            let component = metrics().component(&name);
            let input = receivers
                .remove(&name)
                .map(|rx| Input::new(component.clone(), rx));
            let handle = match (built, input) {
                (Component::Source(source), _) => {
                    let out = output_of(&component);
                    let stop = sources_stop.clone();
                    tokio::spawn(async move { source.run(out, stop).await })
                }
                (Component::Transform(transform), input) => {
                    let out = output_of(&component);
                    let handle = tokio::runtime::Handle::current();
                    spawn_stage_thread(&name, move || {
                        run_transform(transform, input, out, component, Some(handle))
                    })
                }
                (Component::Sink(sink), Some(input)) => {
                    tokio::spawn(async move { sink.run(input.for_sink()).await })
                }
                (Component::Sink(_), None) => continue,
            };
            tasks.push((name, handle));
        }
        // Only the outputs hold senders now: a channel closes when its last upstream ends.
        drop(senders);
        tracing::info!(components = tasks.len(), "pipeline running");

        let mut first_error = None;
        let mut first_is_consequence = false;
        let mut interrupted = false;
        let mut pending: BTreeSet<String> = tasks.iter().map(|(n, _)| n.clone()).collect();
        let mut joins = futures_join(tasks);
        let deadline = async {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = failed.cancelled() => {}
            }
            tokio::time::sleep(self.shutdown_timeout).await;
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = joins.recv() => {
                    let Some((name, result)) = next else { break };
                    pending.remove(&name);
                    if let Err(source) = result {
                        tracing::error!(component = %name, error = %source, "component failed; shutting down");
                        metrics().error(&name, "component_failed");
                        sources_stop.cancel();
                        failed.cancel();
                        // A component stopped because its downstream went away is a
                        // consequence; the error that caused it is the one to report,
                        // whichever task's end is seen first.
                        let consequence = source.downcast_ref::<DownstreamClosed>().is_some();
                        if first_error.is_none() || (first_is_consequence && !consequence) {
                            first_error = Some(RunError::Component { component: name, source });
                            first_is_consequence = consequence;
                        }
                    }
                }
                _ = shutdown.cancelled(), if !interrupted => {
                    interrupted = true;
                    tracing::info!(timeout_ms = self.shutdown_timeout.as_millis() as u64, "shutdown requested: stopping sources, draining");
                }
                _ = &mut deadline => {
                    return Err(RunError::ShutdownTimeout {
                        timeout_ms: self.shutdown_timeout.as_millis() as u64,
                        pending: pending.into_iter().collect(),
                    });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(RunReport {
                elapsed: started.elapsed(),
                interrupted,
            }),
        }
    }
}

/// The drop reasons, error types and file outcomes a source can produce, so that their
/// series exist at 0 from start-up.
fn source_series(source: &SourceConfig) -> Series<'static> {
    match source {
        SourceConfig::Parquet(_) => Series {
            drop_reasons: &[
                parquet::drop_reason::NULL_FIELD,
                parquet::drop_reason::BAD_TIMESTAMP,
                parquet::drop_reason::TOO_LARGE,
                parquet::drop_reason::INVALID_UTF8,
            ],
            error_types: &["corrupt_file"],
            file_outcomes: &["read", "skipped"],
        },
        SourceConfig::Generator(_) => Series::default(),
        SourceConfig::Kafka(_) => Series {
            drop_reasons: &["undecodable", "too_large"],
            error_types: &["consume", "dead_letter", "checkpoint_write"],
            file_outcomes: &[],
        },
        SourceConfig::Kinesis(_) => Series {
            drop_reasons: &["undecodable", "too_large"],
            error_types: &[
                "list_shards",
                "get_shard_iterator",
                "get_shard_iterator_throttled",
                "get_records",
                "get_records_throttled",
                "iterator_expired",
                "subscribe_to_shard",
                "subscribe_to_shard_throttled",
                "subscribe_to_shard_stream",
            ],
            file_outcomes: &[],
        },
    }
}

/// [`source_series`] for a stage: its drop reasons.
fn preregister_stage(name: &str, stage: &StageConfig) {
    let mut drop_reasons = vec!["wrong_record_kind"];
    match stage {
        StageConfig::Clean(_) => drop_reasons.extend(CleanDropReason::ALL.map(|r| r.as_str())),
        StageConfig::Assign(_) => {}
        StageConfig::Aggregate(_) => drop_reasons.extend([
            Rejection::Invalid.as_str(),
            Rejection::UnknownSegment.as_str(),
            Rejection::AlreadyEmitted.as_str(),
            Rejection::Duplicate.as_str(),
            Rejection::PartialStart.as_str(),
        ]),
    }
    metrics().preregister(
        name,
        Series {
            drop_reasons: &drop_reasons,
            ..Series::default()
        },
    );
}

fn sink_series(sink: &SinkConfig) -> Series<'static> {
    match sink {
        SinkConfig::Parquet(_) => Series {
            drop_reasons: &["wrong_record_kind"],
            error_types: &["wrong_record_kind"],
            file_outcomes: &["written", "abandoned", "recovered", "discarded"],
        },
        SinkConfig::Ndjson(_) => Series {
            drop_reasons: &["wrong_record_kind"],
            error_types: &["wrong_record_kind"],
            file_outcomes: &["repaired"],
        },
        SinkConfig::Kafka(_) => Series {
            drop_reasons: &["too_large"],
            error_types: &["delivery_failed"],
            file_outcomes: &[],
        },
        SinkConfig::Kinesis(_) => Series {
            drop_reasons: &["too_large"],
            error_types: &[
                "put_records",
                "put_records_partial_failure",
                "record_too_large",
            ],
            file_outcomes: &[],
        },
    }
}

type ComponentResult = Result<(), BoxError>;

/// Turns join handles into a channel of (name, result) in completion order; a panicked
/// task becomes an error result.
fn futures_join(
    tasks: Vec<(String, JoinHandle<ComponentResult>)>,
) -> mpsc::UnboundedReceiver<(String, ComponentResult)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (name, handle) in tasks {
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = handle.await.unwrap_or_else(|join_error| {
                Err(format!("task panicked or was cancelled: {join_error}").into())
            });
            let _ = tx.send((name, result));
        });
    }
    rx
}

/// Runs `work` on a dedicated, named OS thread and returns a task that resolves with its
/// result. A dedicated thread (rather than `spawn_blocking`) keeps CPU work off the runtime
/// and lets tokio's paused test clock advance while a stage is idle.
fn spawn_stage_thread(
    name: &str,
    work: impl FnOnce() -> Result<(), BoxError> + Send + 'static,
) -> JoinHandle<ComponentResult> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("stage-{name}"))
        .spawn(move || {
            let _ = tx.send(work());
        });
    tokio::spawn(async move {
        spawned.map_err(|e| -> BoxError { format!("starting the stage thread: {e}").into() })?;
        rx.await
            .unwrap_or_else(|_| Err("the stage thread panicked".into()))
    })
}

/// The acknowledgement tokens a transform's loop holds for it (see [`super::ack`]): input
/// batches' tokens, each with the newest event time of its batch, in arrival order.
#[derive(Default)]
struct HeldAcks {
    held: std::collections::VecDeque<(i64, Acks)>,
    /// Some input batch carried tokens: the input can be read again after a restart.
    replayable: bool,
}

impl HeldAcks {
    fn take_from(&mut self, batch: &mut Batch) {
        if batch.acks.is_empty() {
            return;
        }
        self.replayable = true;
        let newest_ms = batch.records.max_event_ts_ms().unwrap_or(i64::MIN);
        self.held
            .push_back((newest_ms, std::mem::take(&mut batch.acks)));
    }

    /// Gives every output batch a copy of every held token, then lets go of the tokens of
    /// inputs the transform no longer retains (`retained_since_ms`; `None`: all). A token
    /// let go of here lives on in the outputs that carry it, and is acknowledged when they
    /// are.
    /// `retained` is false at the end of a finite input, when the transform has flushed
    /// everything. Tokens let go of carry the transform's `finalized_before_ms`, if any.
    fn settle(&mut self, produced: &mut [Batch], transform: &dyn Transform, retained: bool) {
        // Asked only while tokens are held: it may cost a scan of the transform's state.
        if self.held.is_empty() {
            return;
        }
        for b in produced.iter_mut() {
            for (_, acks) in &self.held {
                b.acks.extend_from(acks.tokens());
            }
        }
        let since_ms = if retained {
            transform.retained_since_ms()
        } else {
            None
        };
        let keep = |newest_ms: i64| since_ms.is_some_and(|since_ms| newest_ms >= since_ms);
        if let Some(finalized_ms) = transform.finalized_before_ms() {
            for (_, acks) in self.held.iter().filter(|(newest_ms, _)| !keep(*newest_ms)) {
                for token in acks.tokens() {
                    token.note_finalized_before_ms(finalized_ms);
                }
            }
        }
        self.held.retain(|(newest_ms, _)| keep(*newest_ms));
    }
}

/// Tokens still held when the loop ends early (an error) belong to records nobody emitted.
impl Drop for HeldAcks {
    fn drop(&mut self) {
        for (_, acks) in &self.held {
            acks.fail();
        }
    }
}

/// The frontiers of a transform's upstreams (see [`Frontier`]): the latest of each sender,
/// their minimum, and what was last passed on downstream.
#[derive(Default)]
struct UpstreamFrontiers {
    by_origin: BTreeMap<u32, Frontier>,
    forwarded: Option<Frontier>,
}

impl UpstreamFrontiers {
    /// Notes the batch's frontier; returns the combined one when it changed.
    fn note(&mut self, batch: &Batch) -> Option<Frontier> {
        let f = batch.frontier?;
        let before = self.combined();
        self.by_origin.insert(batch.origin, f);
        let now = self.combined();
        (now != before).then_some(now).flatten()
    }

    fn combined(&self) -> Option<Frontier> {
        self.by_origin.values().copied().reduce(Frontier::min)
    }

    /// Stamps the combined frontier on every output batch; when there is none to carry a
    /// change of it, adds a batch that carries only the frontier.
    fn stamp(&mut self, produced: &mut Vec<Batch>, kind: RecordKind) {
        let Some(f) = self.combined() else {
            return;
        };
        for b in produced.iter_mut() {
            b.frontier = Some(f);
        }
        if produced.is_empty() && self.forwarded != Some(f) {
            produced.push(Batch::frontier_only(Records::empty(kind), f));
        }
        self.forwarded = Some(f);
    }
}

/// The loop of a transform on its own thread: batch in, batches out, ticks while idle (with
/// the runtime's timer, through `handle`), flush at the end. Acknowledgement tokens of the
/// input are carried over to the output ([`HeldAcks`]); the upstream frontier is handed to
/// the transform and passed on downstream ([`UpstreamFrontiers`]).
fn run_transform(
    mut transform: Box<dyn Transform>,
    input: Option<Input>,
    mut out: Output,
    metrics: Arc<ComponentMetrics>,
    handle: Option<tokio::runtime::Handle>,
) -> Result<(), BoxError> {
    let mut produced = Vec::new();
    let mut held = HeldAcks::default();
    let mut frontiers = UpstreamFrontiers::default();
    // The kind a batch that carries only the frontier is labelled with (routing ignores it).
    let mut kind = RecordKind::Probe;
    if let Some(mut input) = input {
        loop {
            let batch = match (transform.tick_interval(), &handle) {
                (Some(interval), Some(handle)) => {
                    match input.blocking_next_timeout(handle, interval) {
                        Next::Batch(b) => Some(b),
                        Next::Closed => None,
                        Next::TimedOut => {
                            transform.on_tick(&mut produced);
                            held.settle(&mut produced, &*transform, true);
                            frontiers.stamp(&mut produced, kind);
                            for b in produced.drain(..) {
                                out.blocking_send(b)?;
                            }
                            continue;
                        }
                    }
                }
                _ => input.blocking_next(),
            };
            let Some(mut batch) = batch else { break };
            kind = batch.records.kind();
            // Before the batch: a stage must never process records under a clock the
            // frontier that came with them does not allow (the first batch of a backlog
            // would otherwise be cleaned, matched and aggregated with no cap at all).
            if let Some(f) = frontiers.note(&batch) {
                transform.on_frontier(f, &mut produced);
            }
            if let Some(event) = batch.lanes.take() {
                transform.on_lanes(&event, &mut produced);
            } else if !batch.carries_no_event() {
                held.take_from(&mut batch);
                let timer = metrics.batch_duration.start_timer();
                transform.process_batch(batch, &mut produced);
                timer.observe_duration();
            }
            held.settle(&mut produced, &*transform, true);
            frontiers.stamp(&mut produced, kind);
            for b in produced.drain(..) {
                out.blocking_send(b)?;
            }
        }
    }
    if held.replayable {
        // Tokens still retained after this are failed when `held` drops: their records are
        // read again after a restart.
        transform.on_close_replayable(&mut produced);
        held.settle(&mut produced, &*transform, true);
    } else {
        transform.on_close(&mut produced);
        held.settle(&mut produced, &*transform, false);
    }
    for b in produced.drain(..) {
        out.blocking_send(b)?;
    }
    Ok(())
}
