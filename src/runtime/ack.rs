//! Acknowledgements for at-least-once delivery: a source that can replay (Kafka) attaches an
//! [`AckToken`] to each batch it emits; the token travels with every batch derived from it
//! and reports back to the source once the last copy is gone.
//!
//! The rule every component follows:
//! - a **sink** keeps a batch's [`Acks`] until what it wrote is durable (file flushed and
//!   closed, Kafka delivery report received), then drops them; on a write error it calls
//!   [`Acks::fail`] first;
//! - a **transform** never sees tokens: the runtime's transform loop holds the tokens of
//!   its inputs until the transform says it retains nothing that old
//!   ([`crate::runtime::Transform::retained_since_ms`]) and attaches every held token to
//!   every output batch in between, so a token outlives every batch that may contain
//!   records derived from its input;
//! - an edge that clones a batch (fan-out) clones its tokens, so every downstream must be
//!   done before the source hears of it.
//!
//! A token reports once, when its last clone is dropped: acknowledged, or failed if any
//! holder called [`Acks::fail`]. Sources without replay (Parquet, the generator) attach no
//! tokens, and all of this costs nothing there.
//!
//! On the source side (Kafka, Kinesis), releases reach the source task through an
//! [`AckChannel`], and an [`AckedPrefix`] per lane (partition, shard) says where reading may
//! resume after a restart, and what the windowed stage downstream had finalized by then.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// What a source learns when a token is released.
pub trait AckTarget: Send + Sync + 'static {
    /// `id` is the source's own handle for the batch; `ok` is false when any holder failed.
    fn release(&self, id: u64, ok: bool);

    /// [`AckTarget::release`], with the largest `finalized_before_ms` a holder noted (see
    /// [`AckToken::note_finalized_before_ms`]); a source that can keep it with its commit
    /// overrides this.
    fn release_finalized(&self, id: u64, ok: bool, _finalized_before_ms: Option<i64>) {
        self.release(id, ok);
    }
}

struct TokenInner {
    id: u64,
    failed: AtomicBool,
    /// `i64::MIN` until a holder notes a value.
    finalized_before_ms: AtomicI64,
    target: Arc<dyn AckTarget>,
}

impl Drop for TokenInner {
    fn drop(&mut self) {
        let finalized_before_ms = self.finalized_before_ms.load(Ordering::Acquire);
        self.target.release_finalized(
            self.id,
            !self.failed.load(Ordering::Acquire),
            (finalized_before_ms != i64::MIN).then_some(finalized_before_ms),
        );
    }
}

/// One source batch's acknowledgement handle; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AckToken(Arc<TokenInner>);

impl AckToken {
    pub fn new(id: u64, target: Arc<dyn AckTarget>) -> Self {
        Self(Arc::new(TokenInner {
            id,
            failed: AtomicBool::new(false),
            finalized_before_ms: AtomicI64::new(i64::MIN),
            target,
        }))
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }

    fn fail(&self) {
        self.0.failed.store(true, Ordering::Release);
    }

    /// Notes that everything derived from this batch's records whose event time is before
    /// `ms` has been emitted for good by a windowed stage (its windows are closed and past
    /// their lateness): a consumer restarting from the commit after this batch may skip such
    /// records instead of emitting their windows again from a part of their data. The
    /// largest value noted travels to the source with the acknowledgement.
    pub fn note_finalized_before_ms(&self, ms: i64) {
        self.0.finalized_before_ms.fetch_max(ms, Ordering::AcqRel);
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AckToken({})", self.0.id)
    }
}

/// The tokens a batch carries: empty unless its records came from a replayable source.
#[derive(Clone, Default, Debug)]
pub struct Acks(Vec<AckToken>);

impl Acks {
    pub fn none() -> Self {
        Self(Vec::new())
    }

    pub fn one(token: AckToken) -> Self {
        Self(vec![token])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn tokens(&self) -> &[AckToken] {
        &self.0
    }

    pub fn push(&mut self, token: AckToken) {
        self.0.push(token);
    }

    pub fn extend(&mut self, other: Acks) {
        self.0.extend(other.0);
    }

    pub fn extend_from(&mut self, tokens: &[AckToken]) {
        self.0.extend_from_slice(tokens);
    }

    /// Marks every token as failed: the source will not move past them.
    pub fn fail(&self) {
        for t in &self.0 {
            t.fail();
        }
    }

    /// Acknowledges: drops this holder's copies (the same as letting them go out of scope,
    /// spelled out where a sink declares its records durable).
    pub fn ack(self) {
        drop(self);
    }
}

/// A released token, as a source task hears of it: (batch id, ok, the largest
/// `finalized_before_ms` a holder noted).
pub type Release = (u64, bool, Option<i64>);

/// The [`AckTarget`] of a source task: forwards every release over a channel (tokens are
/// released on any thread).
pub struct AckChannel(pub mpsc::UnboundedSender<Release>);

impl AckTarget for AckChannel {
    fn release(&self, id: u64, ok: bool) {
        let _ = self.0.send((id, ok, None));
    }

    fn release_finalized(&self, id: u64, ok: bool, finalized_before_ms: Option<i64>) {
        let _ = self.0.send((id, ok, finalized_before_ms));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BatchState {
    Pending,
    Acked,
    Failed,
}

/// One lane's batches in flight (a Kafka partition, a Kinesis shard), in read order, each
/// with the position reading resumes at once it is acknowledged (P: an offset, a sequence
/// number). The position to keep moves only past a prefix of acknowledged batches; a
/// failed batch holds it until a restart.
///
/// It also keeps the lane's `finalized_before_ms`, to be kept with the position: the
/// largest of what the lane's previous reader had kept (the floor handed downstream when
/// the lane was assigned) and what the tokens of the batches moved past brought. It never
/// goes down: a windowed stage skips the re-read records of windows before the floor it was
/// handed, so a later restart may skip them too, even if this reader has not finalized that
/// far yet itself.
#[derive(Debug)]
pub struct AckedPrefix<P> {
    batches: VecDeque<(u64, P, BatchState, Option<i64>)>,
    finalized_before_ms: Option<i64>,
}

/// A lane whose previous reader kept no `finalized_before_ms`.
impl<P> Default for AckedPrefix<P> {
    fn default() -> Self {
        Self::new(None)
    }
}

impl<P> AckedPrefix<P> {
    /// A lane whose previous reader had finalized everything before `finalized_before_ms`.
    pub fn new(finalized_before_ms: Option<i64>) -> Self {
        Self {
            batches: VecDeque::new(),
            finalized_before_ms,
        }
    }

    /// Batch `id` was sent; once it and every batch before it are acknowledged, reading
    /// resumes at `resume_at`.
    pub fn open(&mut self, id: u64, resume_at: P) {
        self.batches
            .push_back((id, resume_at, BatchState::Pending, None));
    }

    /// Marks batch `id` (acknowledged when `ok`, else failed) with the
    /// `finalized_before_ms` its token brought; returns the position to keep if it moved.
    pub fn release(&mut self, id: u64, ok: bool, finalized_before_ms: Option<i64>) -> Option<P> {
        if let Some(entry) = self.batches.iter_mut().find(|e| e.0 == id) {
            entry.2 = if ok {
                BatchState::Acked
            } else {
                BatchState::Failed
            };
            entry.3 = finalized_before_ms;
        }
        let mut moved = None;
        while self
            .batches
            .front()
            .is_some_and(|e| e.2 == BatchState::Acked)
        {
            if let Some((_, resume_at, _, finalized)) = self.batches.pop_front() {
                self.finalized_before_ms = self.finalized_before_ms.max(finalized);
                moved = Some(resume_at);
            }
        }
        moved
    }

    /// What to keep with the position (see the type's docs).
    pub fn finalized_before_ms(&self) -> Option<i64> {
        self.finalized_before_ms
    }

    /// No batch in flight.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The ids of the batches in flight.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.batches.iter().map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_lane_moves_past_acknowledged_batches_only_and_its_floor_never_goes_down() {
        let mut lane = AckedPrefix::new(Some(100));
        lane.open(0, 10);
        lane.open(1, 20);
        lane.open(2, 30);
        assert_eq!(
            lane.release(1, true, Some(500)),
            None,
            "batch 0 is still out"
        );
        assert_eq!(lane.finalized_before_ms(), Some(100));
        assert_eq!(lane.release(0, true, Some(50)), Some(20), "past both");
        assert_eq!(lane.finalized_before_ms(), Some(500), "the larger brought");
        assert_eq!(
            lane.release(2, false, Some(900)),
            None,
            "a failed batch holds"
        );
        assert_eq!(lane.finalized_before_ms(), Some(500));
        assert_eq!(lane.ids().collect::<Vec<_>>(), vec![2]);
        let mut fresh = AckedPrefix::new(Some(100));
        fresh.open(0, 1);
        assert_eq!(fresh.release(0, true, None), Some(1));
        assert_eq!(
            fresh.finalized_before_ms(),
            Some(100),
            "what the previous reader had finalized stays"
        );
        assert!(fresh.is_empty());
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<(u64, bool)>>);
    impl AckTarget for Log {
        fn release(&self, id: u64, ok: bool) {
            self.0.lock().unwrap().push((id, ok));
        }
    }

    #[test]
    fn a_token_reports_once_when_its_last_clone_is_dropped() {
        let log = Arc::new(Log::default());
        let token = AckToken::new(7, log.clone());
        let a = Acks::one(token.clone());
        let b = a.clone();
        drop(token);
        a.ack();
        assert!(log.0.lock().unwrap().is_empty());
        b.ack();
        assert_eq!(*log.0.lock().unwrap(), vec![(7, true)]);
    }

    #[test]
    fn one_failed_holder_fails_the_token() {
        let log = Arc::new(Log::default());
        let a = Acks::one(AckToken::new(1, log.clone()));
        let b = a.clone();
        b.fail();
        drop(b);
        a.ack();
        assert_eq!(*log.0.lock().unwrap(), vec![(1, false)]);
    }
}
