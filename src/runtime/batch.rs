//! What travels on an in-process edge: a batch of records of one kind, never single events.

use super::ack::Acks;
use super::frontier::Frontier;
use crate::record::{
    DecodeError, DecodeLimits, Encoding, MatchedPoint, Probe, RecordKind, SegmentObservation,
    SegmentSpeed, WireRecord,
};

/// The rows of one batch. A closed enum: every edge carries exactly one record kind, which
/// config validation checks before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    Probes(Vec<Probe>),
    MatchedPoints(Vec<MatchedPoint>),
    Observations(Vec<SegmentObservation>),
    Speeds(Vec<SegmentSpeed>),
}

impl Records {
    /// No records, of `kind`.
    pub fn empty(kind: RecordKind) -> Self {
        match kind {
            RecordKind::Probe => Records::Probes(Vec::new()),
            RecordKind::MatchedPoint => Records::MatchedPoints(Vec::new()),
            RecordKind::SegmentObservation => Records::Observations(Vec::new()),
            RecordKind::SegmentSpeed => Records::Speeds(Vec::new()),
        }
    }

    /// Decodes one message payload (a Kafka or Kinesis record) onto the end, within the
    /// default [`DecodeLimits`]; the error says why it does not decode.
    pub fn push_decoded(&mut self, payload: &[u8], encoding: Encoding) -> Result<(), DecodeError> {
        self.push_decoded_limited(payload, encoding, &DecodeLimits::default())
    }

    /// [`Records::push_decoded`] within `limits`; a record over them is refused with an error
    /// whose [`DecodeError::drop_reason`] is `too_large`.
    pub fn push_decoded_limited(
        &mut self,
        payload: &[u8],
        encoding: Encoding,
        limits: &DecodeLimits,
    ) -> Result<(), DecodeError> {
        fn push<T: WireRecord>(
            v: &mut Vec<T>,
            payload: &[u8],
            encoding: Encoding,
            limits: &DecodeLimits,
        ) -> Result<(), DecodeError> {
            v.push(T::decode_limited(payload, encoding, limits)?);
            Ok(())
        }
        match self {
            Records::Probes(v) => push(v, payload, encoding, limits),
            Records::MatchedPoints(v) => push(v, payload, encoding, limits),
            Records::Observations(v) => push(v, payload, encoding, limits),
            Records::Speeds(v) => push(v, payload, encoding, limits),
        }
    }

    pub fn kind(&self) -> RecordKind {
        match self {
            Records::Probes(_) => RecordKind::Probe,
            Records::MatchedPoints(_) => RecordKind::MatchedPoint,
            Records::Observations(_) => RecordKind::SegmentObservation,
            Records::Speeds(_) => RecordKind::SegmentSpeed,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Records::Probes(v) => v.len(),
            Records::MatchedPoints(v) => v.len(),
            Records::Observations(v) => v.len(),
            Records::Speeds(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The smallest event time in the batch, in epoch ms (None when empty).
    pub fn min_event_ts_ms(&self) -> Option<i64> {
        match self {
            Records::Probes(v) => v.iter().map(|p| p.ts_ms).min(),
            Records::MatchedPoints(v) => v.iter().map(|m| m.probe.ts_ms).min(),
            Records::Observations(v) => v.iter().map(|o| o.exit_ts_ms).min(),
            Records::Speeds(v) => v.iter().map(|s| s.window_end_ms).min(),
        }
    }

    /// The largest event time in the batch, in epoch ms (None when empty).
    pub fn max_event_ts_ms(&self) -> Option<i64> {
        match self {
            Records::Probes(v) => v.iter().map(|p| p.ts_ms).max(),
            Records::MatchedPoints(v) => v.iter().map(|m| m.probe.ts_ms).max(),
            Records::Observations(v) => v.iter().map(|o| o.exit_ts_ms).max(),
            Records::Speeds(v) => v.iter().map(|s| s.window_end_ms).max(),
        }
    }
}

/// A change in the lanes (Kafka partitions) a source reads, announced downstream in an
/// otherwise empty batch behind every batch of the lanes it concerns: a stage with state
/// per lane waits for assigned lanes and drops the state of revoked ones. It reaches the
/// transforms directly downstream of the source; sinks and later stages never see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneEvent {
    Assigned(Vec<AssignedLane>),
    Revoked(Vec<u32>),
}

/// A lane now read here, from where its previous reader committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedLane {
    pub lane: u32,
    /// What the previous reader's windowed stage had finalized, kept with its commit (see
    /// [`crate::runtime::Transform::finalized_before_ms`]); `None` when nothing was kept.
    pub finalized_before_ms: Option<i64>,
}

/// One message on an edge. Besides its records it carries `input`, the lane it came in on
/// (a Kafka partition; 0 otherwise), so a stage can keep per-partition state such as the
/// aggregate's watermark, `acks`, the acknowledgement tokens of the source batches it
/// derives from (see [`super::ack`]; empty unless the source can replay), `lanes`, a
/// lane event (then the records are empty), and `frontier`, the event-time frontier of the
/// source upstream as of this batch (see [`super::frontier`]; `None` from sources without
/// lanes). A batch with no records, no lane event and a frontier only moves the frontier.
#[derive(Debug, Clone)]
pub struct Batch {
    pub records: Records,
    pub input: u32,
    pub acks: Acks,
    pub lanes: Option<LaneEvent>,
    pub frontier: Option<Frontier>,
    /// The component that sent it (set by [`super::Output`]), so a stage with several
    /// upstreams takes the minimum of their frontiers.
    pub origin: u32,
}

/// Two batches are equal when their records and lane are; tokens are bookkeeping.
impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records && self.input == other.input
    }
}

impl Batch {
    pub fn new(records: Records) -> Self {
        Self::tracked(records, 0, Acks::none())
    }

    /// A batch from lane `input`, acknowledged through `acks`.
    pub fn tracked(records: Records, input: u32, acks: Acks) -> Self {
        Self {
            records,
            input,
            acks,
            lanes: None,
            frontier: None,
            origin: 0,
        }
    }

    /// A batch that only moves the frontier (no records; `empty`: the empty records of the
    /// sender's kind).
    pub fn frontier_only(empty: Records, frontier: Frontier) -> Self {
        Self {
            frontier: Some(frontier),
            ..Self::new(empty)
        }
    }

    /// Nothing but bookkeeping: no records and no lane event (a frontier, at most).
    pub fn carries_no_event(&self) -> bool {
        self.records.is_empty() && self.lanes.is_none()
    }

    /// A lane event, with no records (`empty`: the empty records of the source's kind, so
    /// the batch is routed like the source's data).
    pub fn lane_event(empty: Records, event: LaneEvent) -> Self {
        Self {
            lanes: Some(event),
            ..Self::new(empty)
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl From<Vec<Probe>> for Batch {
    fn from(v: Vec<Probe>) -> Self {
        Batch::new(Records::Probes(v))
    }
}
