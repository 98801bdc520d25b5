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

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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
