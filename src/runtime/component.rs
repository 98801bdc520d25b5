//! The three component shapes (sources, transforms, sinks) and the edges between them.
//!
//! Every component reads one [`Input`] (all its upstreams share one bounded channel) and
//! writes one [`Output`] (fanned out to every downstream). A full channel blocks the sender,
//! so backpressure reaches the source; nothing is dropped on an edge.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, LaneEvent, Records};
use super::frontier::Frontier;
use crate::record::RecordKind;
use crate::telemetry::live::LiveSpeeds;
use crate::telemetry::metrics::ComponentMetrics;
use crate::telemetry::tap::TapPoint;

/// The error a component returns when it stops abnormally.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every downstream of an [`Output`] has gone away (a sink failed): the producer should stop.
#[derive(Debug, thiserror::Error)]
#[error("all downstream components of `{component}` have stopped")]
pub struct DownstreamClosed {
    pub component: String,
}

/// One outgoing edge: the downstream channel, and the record kind it takes (`None`: any).
/// A component with several output ports (e.g. assign: observations and matched points)
/// emits batches of several kinds; each goes to the edges of its kind.
pub struct Edge {
    pub kind: Option<RecordKind>,
    pub tx: mpsc::Sender<Batch>,
}

/// The sending end of a component: fans each batch out to every downstream edge of its kind.
pub struct Output {
    metrics: Arc<ComponentMetrics>,
    edges: Vec<Edge>,
    /// Stamped on every batch sent ([`Batch::origin`]).
    origin: u32,
    /// The record tap's points on this component's edges; empty unless `telemetry.tap`.
    taps: Vec<Arc<TapPoint>>,
    /// The live view's store, fed the speeds this output sends; `None` unless
    /// `telemetry.live_map`.
    live: Option<Arc<LiveSpeeds>>,
}

impl Output {
    pub fn new(metrics: Arc<ComponentMetrics>, edges: Vec<Edge>) -> Self {
        Self {
            metrics,
            edges,
            origin: 0,
            taps: Vec::new(),
            live: None,
        }
    }

    /// Lets the live view show the speeds this output sends (see [`crate::telemetry::live`]).
    pub fn with_live(mut self, live: Option<Arc<LiveSpeeds>>) -> Self {
        self.live = live;
        self
    }

    /// Names this output's component in the batches it sends (distinct per component of a
    /// topology), so a stage with several upstreams can tell their frontiers apart.
    pub fn with_origin(mut self, origin: u32) -> Self {
        self.origin = origin;
        self
    }

    /// Lets the record tap sample what this output sends (see [`crate::telemetry::tap`]).
    pub fn with_taps(mut self, taps: Vec<Arc<TapPoint>>) -> Self {
        self.taps = taps;
        self
    }

    /// An output whose every edge takes any kind.
    pub fn to_channels(metrics: Arc<ComponentMetrics>, senders: Vec<mpsc::Sender<Batch>>) -> Self {
        let edges = senders
            .into_iter()
            .map(|tx| Edge { kind: None, tx })
            .collect();
        Self::new(metrics, edges)
    }

    pub fn is_connected(&self) -> bool {
        !self.edges.is_empty()
    }

    pub fn component(&self) -> &str {
        &self.metrics.component
    }

    /// The senders this batch goes to. A port nobody reads is legal: its batches are
    /// counted as sent and released. A batch that only moves the frontier goes to every
    /// edge, whatever its kind.
    fn route(&self, batch: &Batch) -> Vec<&mpsc::Sender<Batch>> {
        let kind = batch.records.kind();
        let any_kind = batch.carries_no_event();
        self.edges
            .iter()
            .filter(|e| any_kind || e.kind.is_none_or(|k| k == kind))
            .map(|e| &e.tx)
            .collect()
    }

    fn account(&self, batch: &Batch) {
        self.metrics.sent_events.inc_by(batch.len() as u64);
        if let Some(ts_ms) = batch.records.max_event_ts_ms() {
            self.metrics.observe_event_time(ts_ms);
        }
        for tap in &self.taps {
            if tap.is_listened() {
                tap.offer(&batch.records);
            }
        }
        if let (Some(live), Records::Speeds(rows)) = (&self.live, &batch.records) {
            live.record(rows);
        }
    }

    /// Sends a batch to every downstream of its kind, waiting while a channel is full.
    pub async fn send(&mut self, mut batch: Batch) -> Result<(), DownstreamClosed> {
        if batch.carries_no_event() && batch.frontier.is_none() {
            return Ok(());
        }
        batch.origin = self.origin;
        self.account(&batch);
        let targets = self.route(&batch);
        let Some((last, rest)) = targets.split_last() else {
            return Ok(());
        };
        let mut delivered = false;
        for tx in rest {
            delivered |= settle(tx.send(batch.clone()).await);
        }
        delivered |= settle(last.send(batch).await);
        self.closed_unless(delivered)
    }

    /// [`Output::send`] for components that run on their own OS thread, off the runtime.
    pub fn blocking_send(&mut self, mut batch: Batch) -> Result<(), DownstreamClosed> {
        if batch.carries_no_event() && batch.frontier.is_none() {
            return Ok(());
        }
        batch.origin = self.origin;
        self.account(&batch);
        let targets = self.route(&batch);
        let Some((last, rest)) = targets.split_last() else {
            return Ok(());
        };
        let mut delivered = false;
        for tx in rest {
            delivered |= settle(tx.blocking_send(batch.clone()));
        }
        delivered |= settle(last.blocking_send(batch));
        self.closed_unless(delivered)
    }

    fn closed_unless(&self, delivered: bool) -> Result<(), DownstreamClosed> {
        if delivered {
            Ok(())
        } else {
            Err(DownstreamClosed {
                component: self.metrics.component.clone(),
            })
        }
    }
}

/// Whether a send got through; a batch that did not (its downstream is gone) fails its
/// acknowledgement tokens, so the source does not move past records nobody wrote.
fn settle(result: Result<(), mpsc::error::SendError<Batch>>) -> bool {
    match result {
        Ok(()) => true,
        Err(mpsc::error::SendError(batch)) => {
            batch.acks.fail();
            false
        }
    }
}

/// What [`Input::blocking_next_timeout`] got.
pub enum Next {
    Batch(Batch),
    /// Every upstream has finished.
    Closed,
    TimedOut,
}

/// The receiving end of a component. Yields `None` once every upstream has finished.
pub struct Input {
    metrics: Arc<ComponentMetrics>,
    rx: mpsc::Receiver<Batch>,
    /// A sink's input: batches that carry only bookkeeping for stages (lane events, the
    /// frontier) are skipped.
    sink: bool,
}

impl Input {
    pub fn new(metrics: Arc<ComponentMetrics>, rx: mpsc::Receiver<Batch>) -> Self {
        Self {
            metrics,
            rx,
            sink: false,
        }
    }

    /// The input of a sink: [`Input::next`], [`Input::blocking_next`] and
    /// [`Input::blocking_next_timeout`] skip lane events and batches that only move the
    /// frontier.
    pub fn for_sink(mut self) -> Self {
        self.sink = true;
        self
    }

    /// Whether a sink has nothing to do with `batch`.
    fn skipped(&self, batch: &Batch) -> bool {
        self.sink && (batch.lanes.is_some() || batch.carries_no_event())
    }

    pub fn component(&self) -> &str {
        &self.metrics.component
    }

    fn account(&self, batch: Option<Batch>) -> Option<Batch> {
        self.metrics.channel_depth.set(self.rx.len() as i64);
        if let Some(b) = &batch {
            self.metrics.received_events.inc_by(b.len() as u64);
        }
        batch
    }

    /// Whether no batch is waiting right now (a sink flushes then).
    pub fn is_idle(&self) -> bool {
        self.rx.is_empty()
    }

    /// The next batch (for a sink, the next one with records).
    pub async fn next(&mut self) -> Option<Batch> {
        loop {
            let received = self.rx.recv().await;
            let batch = self.account(received);
            if !batch.as_ref().is_some_and(|b| self.skipped(b)) {
                return batch;
            }
        }
    }

    /// [`Input::next`] for components that run on their own OS thread.
    pub fn blocking_next(&mut self) -> Option<Batch> {
        loop {
            let received = self.rx.blocking_recv();
            let batch = self.account(received);
            if !batch.as_ref().is_some_and(|b| self.skipped(b)) {
                return batch;
            }
        }
    }

    /// [`Input::blocking_next`] that gives up after `timeout`, using the timer of the
    /// runtime behind `handle`. A batch that is already waiting is returned even when
    /// `timeout` is zero.
    pub fn blocking_next_timeout(
        &mut self,
        handle: &tokio::runtime::Handle,
        timeout: std::time::Duration,
    ) -> Next {
        // The timer is created inside `block_on`, where the runtime's context is entered.
        let next = async {
            loop {
                let received = self.rx.recv().await;
                let batch = self.account(received);
                if !batch.as_ref().is_some_and(|b| self.skipped(b)) {
                    return batch;
                }
            }
        };
        match handle.block_on(async { tokio::time::timeout(timeout, next).await }) {
            Ok(Some(b)) => Next::Batch(b),
            Ok(None) => Next::Closed,
            Err(_) => Next::TimedOut,
        }
    }
}

/// A component that stops early (it failed, or its downstream went away) leaves batches in
/// its channel that nobody will write: their acknowledgement tokens fail, so the source
/// does not commit past them.
impl Drop for Input {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(batch) = self.rx.try_recv() {
            batch.acks.fail();
        }
    }
}

/// A source produces batches until its input ends or `shutdown` fires, then returns.
/// Returning drops its [`Output`], which lets everything downstream drain and finish.
#[async_trait]
pub trait Source: Send + 'static {
    async fn run(self: Box<Self>, out: Output, shutdown: CancellationToken)
        -> Result<(), BoxError>;
}

/// A source that emits the given batches in order, then ends: records built in code fed
/// through a topology (tests, benchmarks, tools).
pub struct VecSource(pub Vec<super::batch::Records>);

#[async_trait]
impl Source for VecSource {
    async fn run(self: Box<Self>, mut out: Output, _: CancellationToken) -> Result<(), BoxError> {
        for records in self.0 {
            out.send(Batch::new(records)).await?;
        }
        Ok(())
    }
}

/// A synchronous batch-in, batches-out operator. The runtime runs each transform on its own
/// OS thread, so CPU work never blocks the async runtime.
pub trait Transform: Send + 'static {
    fn process_batch(&mut self, batch: Batch, out: &mut Vec<Batch>);

    /// Called once when every upstream has finished: flush buffered state.
    fn on_close(&mut self, _out: &mut Vec<Batch>) {}

    /// Called instead of [`Transform::on_close`] when the input was replayable (its batches
    /// carried acknowledgement tokens, e.g. a Kafka source that is shutting down): the
    /// tokens of what [`Transform::retained_since_ms`] still reports afterwards are failed,
    /// so a restart reads those records again and rebuilds the state from them. A transform
    /// whose early flush would publish something wrong (a window missing the rest of its
    /// data) emits nothing here; the default flushes like `on_close`.
    fn on_close_replayable(&mut self, out: &mut Vec<Batch>) {
        self.on_close(out)
    }

    /// How often [`Transform::on_tick`] runs while no batch arrives (`None`: never). For
    /// work driven by processing time, such as advancing the watermark of an idle input.
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }

    fn on_tick(&mut self, _out: &mut Vec<Batch>) {}

    /// A source upstream got or lost lanes (Kafka partitions); see [`LaneEvent`]. Only a
    /// transform fed by such a source directly sees these; the default ignores them.
    fn on_lanes(&mut self, _event: &LaneEvent, _out: &mut Vec<Batch>) {}

    /// The event-time frontier of the sources upstream (the minimum over this transform's
    /// upstreams; see [`Frontier`]) moved. Called before the batch that carried it is
    /// processed (the frontier already counts that batch), and for batches that carry
    /// nothing else. A stage whose clock is event time
    /// caps that clock at the frontier, so records of a lane read more slowly than others
    /// are not taken for late; the runtime forwards the frontier downstream itself. The
    /// default ignores it.
    fn on_frontier(&mut self, _frontier: Frontier, _out: &mut Vec<Batch>) {}

    /// The smallest event time (epoch ms, as [`crate::runtime::Records::max_event_ts_ms`]
    /// measures it) among input records this transform still holds without having emitted
    /// everything derived from them; `None` when it holds nothing. The runtime keeps the
    /// acknowledgement tokens of every input batch whose newest record is not older than
    /// this, so a stateful transform must override it: the default says "stateless".
    fn retained_since_ms(&self) -> Option<i64> {
        None
    }

    /// For a windowed transform: the event time before which every window is emitted for
    /// good (closed and past its lateness, so no input can change it again). The runtime
    /// notes it on the tokens it lets go of ([`crate::runtime::AckToken::note_finalized_before_ms`]),
    /// and a Kafka source keeps it with its commit, so that after a restart the same
    /// transform skips re-read records of those windows (see [`LaneEvent::Assigned`]).
    fn finalized_before_ms(&self) -> Option<i64> {
        None
    }
}

/// A sink consumes its input until it ends, then flushes and closes what it writes.
#[async_trait]
pub trait Sink: Send + 'static {
    async fn run(self: Box<Self>, input: Input) -> Result<(), BoxError>;
}
