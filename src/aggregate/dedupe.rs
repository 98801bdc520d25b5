//! The observation ids an aggregator remembers, so that an observation delivered again (an
//! upstream stage re-emits after a crash: at-least-once) is folded once.
//!
//! `observation_id` identifies a traversal: a hash of (vehicle, segment, exit time). A
//! re-emitted observation has the id and exit time of the first version, but after a
//! restart of the matcher it may be a `PARTIAL_START` re-version with a later entry, so a
//! later midpoint (the aggregator's event time), another speed, and other windows. So the
//! ids are not kept per window of the event time but by the **exit time**: per input and per
//! *exit bucket* ([`BUCKET_MS`] of exit time), a set of ids. A duplicate has the same exit
//! time, so it is looked up in the one set its first version went to. Buckets are short so
//! that the sets in use stay in cache: exit times arrive roughly in order, and one second
//! of a busy stream is a few thousand ids (a set per window's worth of exit time, 120 000
//! ids at 2 000 a second, made every insert a cache miss and the aggregator 1.4–2.4 times
//! slower in its benchmark).
//!
//! **Lifetime.** An id is remembered from when its observation is taken (accepted, or
//! skipped as already emitted: see [`super::Aggregator::push`]) until no observation with
//! it could be accepted any more: a duplicate's midpoint is at or before its exit time, so
//! every window it belongs to starts at or before the latest window holding that exit time,
//! and once the watermark has passed that window by the allowed lateness (the moment the
//! aggregator drops that window's state), a duplicate would be late anyway. The aggregator
//! then drops the sets of every bucket whose latest exit time is that far behind, whole
//! ([`SeenIds::expire`]): the cost of expiry is that of the sets expired, nothing is
//! scanned.
//!
//! **Per input.** A revoked input's sets are dropped with its windows
//! ([`SeenIds::remove_input`]), so if it comes back, the records read again are folded
//! again. An observation re-delivered on another input than its first version (a Kinesis
//! stream resharded in between) is not recognised.
//!
//! **Memory.** A set is a power-of-two table of 8-byte words (the id; id 0 is kept apart),
//! linear probing, at most 3/4 full: 10.7–21.3 B per remembered id (8 B / load 3/8–3/4; the
//! aggregate benchmark measures 16.4–16.8 B), but at least [`MIN_SLOTS`] words per input
//! and bucket, so a quiet input costs up to 64 B per second of exit time held. Up to
//! [`SPARE_SETS`] emptied sets are kept for reuse. [`SeenIds::bytes`] counts all of it, and
//! the aggregator adds it to its `state_bytes`. At a steady rate of r observations per
//! second, about r × (window + allowed lateness + out-of-orderness bound + one slide) ids
//! are held.

/// Exit time covered by one bucket.
pub const BUCKET_MS: i64 = 1_000;

/// Buckets of a set's first allocation.
const MIN_SLOTS: usize = 8;

/// Emptied sets kept for the next buckets (their tables would otherwise regrow from
/// [`MIN_SLOTS`]).
const SPARE_SETS: usize = 16;

/// One input's ids of one exit bucket.
#[derive(Debug, Default)]
struct IdSet {
    /// 0 = empty, else an id (id 0 is `has_zero`).
    slots: Vec<u64>,
    /// Ids in `slots`.
    len: usize,
    has_zero: bool,
}

impl IdSet {
    fn len(&self) -> usize {
        self.len + usize::from(self.has_zero)
    }

    fn index(&self, id: u64) -> usize {
        // Fibonacci hashing: the top bits of the product, so that ids that are not well
        // mixed (sequential ids in tests) still spread.
        let bits = self.slots.len().trailing_zeros();
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// Adds `id`; false when it was there already.
    fn insert(&mut self, id: u64) -> bool {
        if id == 0 {
            return !std::mem::replace(&mut self.has_zero, true);
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.index(id);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = id;
                    self.len += 1;
                    return true;
                }
                seen if seen == id => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![0; slots]);
        let mask = slots - 1;
        for id in old.into_iter().filter(|&id| id != 0) {
            let mut i = self.index(id);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = id;
        }
    }

    /// Empties the set, keeping its allocation.
    fn clear(&mut self) {
        self.slots.fill(0);
        self.len = 0;
        self.has_zero = false;
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

/// One input's set of one exit bucket.
#[derive(Debug)]
struct Bucket {
    start_ms: i64,
    input: u32,
    ids: IdSet,
}

/// The ids remembered by one aggregator (see the module docs).
#[derive(Debug, Default)]
pub(super) struct SeenIds {
    /// Sorted by (exit bucket start, input); few entries (the buckets of the windows held,
    /// times the inputs).
    buckets: Vec<Bucket>,
    /// The entry of the last insert: in-order input stays in it, so the insert neither
    /// divides nor searches.
    last: usize,
    /// Emptied sets of expired buckets, for the next ones: at most [`SPARE_SETS`].
    spare: Vec<IdSet>,
    /// Ids remembered in all.
    len: usize,
}

impl SeenIds {
    /// Remembers `id`, of an observation of `input` that left its segment at `exit_ts_ms`;
    /// false when it is remembered already (a duplicate).
    pub(super) fn insert(&mut self, input: u32, exit_ts_ms: i64, id: u64) -> bool {
        let cached = self.buckets.get(self.last).is_some_and(|b| {
            b.input == input
                && exit_ts_ms
                    .checked_sub(b.start_ms)
                    .is_some_and(|d| (0..BUCKET_MS).contains(&d))
        });
        if !cached {
            let start_ms = exit_ts_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
            let at = self
                .buckets
                .partition_point(|b| (b.start_ms, b.input) < (start_ms, input));
            if self
                .buckets
                .get(at)
                .is_none_or(|b| (b.start_ms, b.input) != (start_ms, input))
            {
                let ids = self.spare.pop().unwrap_or_default();
                self.buckets.insert(
                    at,
                    Bucket {
                        start_ms,
                        input,
                        ids,
                    },
                );
            }
            self.last = at;
        }
        let new = self.buckets[self.last].ids.insert(id);
        self.len += usize::from(new);
        new
    }

    /// Forgets the ids of every bucket whose latest exit time `expired` says no duplicate
    /// can be accepted at any more (it must hold for the earliest ones only), keeping a few
    /// emptied sets for reuse.
    pub(super) fn expire(&mut self, expired: impl Fn(i64) -> bool) {
        let n = self
            .buckets
            .partition_point(|b| expired(b.start_ms.saturating_add(BUCKET_MS - 1)));
        if n == 0 {
            return;
        }
        for mut b in self.buckets.drain(..n) {
            self.len -= b.ids.len();
            if self.spare.len() < SPARE_SETS {
                b.ids.clear();
                self.spare.push(b.ids);
            }
        }
        self.last = 0;
    }

    /// Forgets input `input`'s ids (a revoked partition: its windows are dropped too).
    pub(super) fn remove_input(&mut self, input: u32) {
        let len = &mut self.len;
        self.buckets.retain(|b| {
            let keep = b.input != input;
            if !keep {
                *len -= b.ids.len();
            }
            keep
        });
        self.last = 0;
    }

    /// Forgets everything, allocations included.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Ids remembered.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes: the sets, the spare ones, and the bucket list.
    pub(super) fn bytes(&self) -> usize {
        self.buckets.iter().map(|b| b.ids.bytes()).sum::<usize>()
            + self.spare.iter().map(IdSet::bytes).sum::<usize>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.spare.capacity() * std::mem::size_of::<IdSet>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn id_sets_answer_like_a_hash_set_through_growth_and_reuse() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut set = IdSet::default();
        for round in 0..3 {
            let mut truth = std::collections::HashSet::new();
            for _ in 0..20_000 {
                // Small ids (zero included) repeat often; large ones rarely.
                let id = if rng.random_bool(0.5) {
                    rng.random_range(0..2_000)
                } else {
                    rng.random()
                };
                assert_eq!(set.insert(id), truth.insert(id), "round {round}, id {id}");
            }
            assert_eq!(set.len(), truth.len());
            assert!(set.len() * 4 <= set.slots.len() * 3);
            set.clear();
        }
    }

    #[test]
    fn ids_are_kept_per_input_and_exit_bucket_and_expire_by_bucket() {
        let mut seen = SeenIds::default();
        assert!(seen.insert(0, 5_000, 7));
        assert!(!seen.insert(0, 5_999, 7), "same bucket [5 s, 6 s)");
        assert!(seen.insert(0, 20_000, 7), "another bucket");
        assert!(seen.insert(1, 5_000, 7), "another input");
        assert!(seen.insert(0, -1, 7), "before the epoch");
        assert_eq!(seen.len(), 4);
        seen.expire(|latest_exit_ms| latest_exit_ms < 20_000);
        assert_eq!(seen.len(), 1);
        assert!(!seen.insert(0, 20_500, 7));
        seen.remove_input(0);
        assert_eq!(seen.len(), 0);
        assert!(seen.bytes() > 0, "emptied sets are kept for reuse");
        seen.clear();
        assert_eq!(seen.bytes(), 0);
    }
}
