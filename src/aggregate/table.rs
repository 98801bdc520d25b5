//! The states of one window: an arena of (segment id, state) entries in insertion order,
//! behind an open-addressing index from segment id to arena slot.
//!
//! The index is a power-of-two table of 8-byte words, linear probing, at most 3/4 full. A
//! word holds 32 bits of the segment id's hash (a tag) and the arena slot + 1 (0 marks an
//! empty bucket), so a probe reads one cache line of the table and compares keys only in the
//! arena entry whose tag matches: the entry the caller is about to update anyway. Entries
//! never move (chunks of [`CHUNK`] entries, no reallocation), so a slot stays valid while
//! the index grows, and [`SegmentTable::candidate`] lets a caller prefetch the entry of a
//! later lookup before it is needed.
//!
//! Memory per entry: 96 B of arena plus 10.7–21.3 B of index (8 B per bucket at 3/8–3/4
//! load).

use super::state::WindowState;

/// Arena entries per chunk.
pub const CHUNK: usize = 1024;

/// Buckets of the first index allocation.
const MIN_BUCKETS: usize = 16;

/// One segment-window: the segment id (for emission order and key checks) and its state.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub segment_id: u64,
    pub state: WindowState,
}

/// The index hash of a segment id: the SplitMix64 finaliser, so that ids that are not well
/// mixed (small integers in tests, ids sharing low bits) still spread over the table.
pub fn hash_of(segment_id: u64) -> u64 {
    let mut z = segment_id;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn tag_of(hash: u64) -> u64 {
    hash >> 32
}

/// A cache-line prefetch hint for the line holding `p`: a no-op where the target has no
/// prefetch instruction.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and never changes memory, whatever
    // the address (here always inside a live allocation).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Allocations of dropped windows kept for the next ones, at most one window's worth, so
/// that a steady stream of windows neither faults fresh pages in for every window nor
/// regrows each index from 16 buckets.
#[derive(Default)]
pub struct Spare {
    chunks: Vec<Vec<Entry>>,
    buckets: Vec<u64>,
}

impl Spare {
    /// Takes over the allocations of a dropped window's table, keeping no more than that
    /// one window's worth in all.
    pub fn recycle(&mut self, table: SegmentTable) {
        let SegmentTable {
            mut buckets,
            chunks,
            ..
        } = table;
        let keep = chunks.len();
        for mut chunk in chunks {
            chunk.clear();
            self.chunks.push(chunk);
        }
        self.chunks.truncate(keep);
        if buckets.len() > self.buckets.len() {
            buckets.fill(0);
            self.buckets = buckets;
        }
    }

    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Entry>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Entry>>()
            + self.buckets.capacity() * std::mem::size_of::<u64>()
    }
}

/// The arena and index of one window.
#[derive(Default)]
pub struct SegmentTable {
    /// 0 = empty, else `tag << 32 | (slot + 1)`.
    buckets: Vec<u64>,
    chunks: Vec<Vec<Entry>>,
    len: usize,
}

impl SegmentTable {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// Prefetches the index line a lookup of `hash` starts at.
    #[inline(always)]
    pub fn prefetch_bucket(&self, hash: u64) {
        if let Some(word) = self.buckets.get(hash as usize & self.mask()) {
            prefetch(word);
        }
    }

    /// Prefetches both cache lines an entry may span.
    #[inline(always)]
    pub fn prefetch_entry(&self, slot: u32) {
        let slot = slot as usize;
        if let Some(entry) = self
            .chunks
            .get(slot / CHUNK)
            .and_then(|c| c.get(slot % CHUNK))
        {
            let p: *const Entry = entry;
            prefetch(p);
            prefetch(
                p.cast::<u8>()
                    .wrapping_add(std::mem::size_of::<Entry>() - 1),
            );
        }
    }

    /// The slots whose tag matches `hash`, in probe order, up to the first empty bucket.
    #[inline]
    fn tagged_slots(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let mask = self.mask();
        let tag = tag_of(hash);
        let mut i = hash as usize & mask;
        std::iter::from_fn(move || loop {
            let word = *self.buckets.get(i)?;
            if word == 0 {
                return None;
            }
            i = (i + 1) & mask;
            if word >> 32 == tag {
                return Some((word as u32).wrapping_sub(1));
            }
        })
    }

    /// The slot of the first entry whose tag matches `hash`, without checking its key: a
    /// guess to prefetch, to be confirmed with [`SegmentTable::entry_mut`] (whose segment
    /// id must match) or replaced by [`SegmentTable::find_or_insert`].
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.tagged_slots(hash).next()
    }

    /// The slot of `segment_id` (whose hash is `hash`), if it has an entry.
    pub fn find(&self, segment_id: u64, hash: u64) -> Option<u32> {
        self.tagged_slots(hash)
            .find(|&slot| self.entry(slot).segment_id == segment_id)
    }

    /// The slot of `segment_id` (whose hash is `hash`), adding an empty entry if it has none.
    /// New allocations come from `spare` first.
    pub fn find_or_insert(&mut self, segment_id: u64, hash: u64, spare: &mut Spare) -> u32 {
        if let Some(slot) = self.find(segment_id, hash) {
            return slot;
        }
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow(spare);
        }
        assert!(
            self.len < (u32::MAX - 1) as usize,
            "more than 2^32 - 2 segments in one window"
        );
        let slot = self.len as u32;
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            let chunk = spare
                .chunks
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(CHUNK));
            self.chunks.push(chunk);
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(Entry {
                segment_id,
                state: WindowState::default(),
            });
        }
        self.len += 1;
        self.place(hash, slot);
        slot
    }

    /// Writes `slot` into the first empty bucket of `hash`'s probe sequence.
    fn place(&mut self, hash: u64, slot: u32) {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = tag_of(hash) << 32 | (u64::from(slot) + 1);
    }

    fn grow(&mut self, spare: &mut Spare) {
        let buckets = (self.buckets.len() * 2).max(MIN_BUCKETS);
        if spare.buckets.len() >= buckets {
            // Zeroed when recycled; the old (smaller) index is dropped below.
            self.buckets = std::mem::take(&mut spare.buckets);
        } else {
            self.buckets = vec![0; buckets];
        }
        let hashes: Vec<u64> = self.iter().map(|(s, _)| hash_of(s)).collect();
        for (slot, hash) in hashes.into_iter().enumerate() {
            self.place(hash, slot as u32);
        }
    }

    /// A copy without the entries whose segment `forget` picks (slots are renumbered).
    pub fn without(&self, forget: impl Fn(u64) -> bool, spare: &mut Spare) -> SegmentTable {
        let mut kept = SegmentTable::default();
        for (segment_id, slot) in self.iter().filter(|&(s, _)| !forget(s)) {
            let new_slot = kept.find_or_insert(segment_id, hash_of(segment_id), spare);
            kept.entry_mut(new_slot).state = self.entry(slot).state.clone();
        }
        kept
    }

    pub fn entry(&self, slot: u32) -> &Entry {
        let slot = slot as usize;
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    pub fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        let slot = slot as usize;
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// (segment id, slot) of every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .map(|(slot, e)| (e.segment_id, slot as u32))
    }

    /// Heap bytes: arena chunks (whole chunks, as allocated) and index.
    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Entry>()
            + self.buckets.capacity() * std::mem::size_of::<u64>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Entry>>()
    }
}

/// Sorts (segment id, slot) pairs by segment id (ids are distinct): a counting pass on the
/// top bits of each id's offset in the range of ids, about one bucket per two pairs, then a
/// sort of each (small, for well-mixed ids) bucket. The result is that of `sort_unstable`
/// for any ids; only the speed depends on how the ids spread. Its buffers are kept between
/// windows.
#[derive(Default)]
pub struct SortScratch {
    starts: Vec<u32>,
    sorted: Vec<(u64, u32)>,
}

impl SortScratch {
    pub fn sort(&mut self, keys: &mut Vec<(u64, u32)>) {
        let n = keys.len();
        if n < 256 || n > u32::MAX as usize {
            keys.sort_unstable();
            return;
        }
        let (min, max) = keys
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &(s, _)| (lo.min(s), hi.max(s)));
        let span_bits = u64::BITS - (max - min).leading_zeros();
        let bucket_bits = (usize::BITS - 1 - n.leading_zeros()).min(20);
        let shift = span_bits.saturating_sub(bucket_bits);
        let bucket = |s: u64| ((s - min) >> shift) as usize;
        let starts = &mut self.starts;
        starts.clear();
        starts.resize((1 << bucket_bits) + 1, 0);
        for &(s, _) in keys.iter() {
            starts[bucket(s) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let sorted = &mut self.sorted;
        sorted.clear();
        sorted.resize(n, (0, 0));
        // Scatter, using each bucket's start as its cursor; the cursors end where the next
        // bucket starts, so bucket b is then [starts[b - 1], starts[b]) (b = 0 from 0).
        for &(s, slot) in keys.iter() {
            let cursor = &mut starts[bucket(s)];
            sorted[*cursor as usize] = (s, slot);
            *cursor += 1;
        }
        let mut from = 0;
        for &to in &starts[..starts.len() - 1] {
            let to = to as usize;
            if to - from > 1 {
                sorted[from..to].sort_unstable();
            }
            from = to;
        }
        std::mem::swap(keys, sorted);
    }

    pub fn bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<u32>()
            + self.sorted.capacity() * std::mem::size_of::<(u64, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};

    use super::*;

    type Spread = Box<dyn Fn(&mut rand::rngs::StdRng, u64) -> u64>;

    #[test]
    fn sorts_by_segment_like_sort_unstable_however_ids_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut scratch = SortScratch::default();
        for n in [0usize, 1, 255, 256, 3_000, 70_000] {
            let spreads: [Spread; 4] = [
                Box::new(|r, _| r.random()),
                Box::new(|_, i| i),
                Box::new(|_, i| u64::MAX - i * 3),
                Box::new(|r, i| {
                    if i % 2 == 0 {
                        r.random_range(0..1 << 20)
                    } else {
                        r.random()
                    }
                }),
            ];
            for spread in &spreads {
                let mut ids: Vec<u64> = (0..n as u64).map(|i| spread(&mut rng, i)).collect();
                ids.sort_unstable();
                ids.dedup();
                let keys: Vec<(u64, u32)> = ids
                    .iter()
                    .rev()
                    .enumerate()
                    .map(|(i, &s)| (s, i as u32))
                    .collect();
                let mut expected = keys.clone();
                expected.sort_unstable();
                let mut sorted = keys;
                scratch.sort(&mut sorted);
                assert_eq!(sorted, expected);
            }
        }
    }

    #[test]
    fn entries_stay_within_the_memory_budget() {
        assert_eq!(std::mem::size_of::<Entry>(), 96);
    }

    #[test]
    fn finds_what_a_hash_map_finds_for_mixed_and_clustered_ids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for ids in [
            (0..5_000u64)
                .map(|_| rng.random_range(0..3_000))
                .collect::<Vec<_>>(),
            (0..5_000u64).map(|i| i << 40).collect(),
            (0..5_000u64).map(|_| rng.random::<u64>()).collect(),
        ] {
            let mut table = SegmentTable::default();
            let mut spare = Spare::default();
            let mut reference: HashMap<u64, u32> = HashMap::new();
            for &id in &ids {
                let next = reference.len() as u32;
                let expected = *reference.entry(id).or_insert(next);
                assert_eq!(table.find_or_insert(id, hash_of(id), &mut spare), expected);
            }
            assert_eq!(table.len(), reference.len());
            for (&id, &slot) in &reference {
                assert_eq!(table.find(id, hash_of(id)), Some(slot));
                assert_eq!(table.entry(slot).segment_id, id);
                let guess = table.candidate(hash_of(id));
                assert!(guess.is_some());
            }
            assert_eq!(table.find(u64::MAX, hash_of(u64::MAX)), None);
            let in_order: Vec<u32> = table.iter().map(|(_, slot)| slot).collect();
            assert_eq!(in_order, (0..reference.len() as u32).collect::<Vec<_>>());
            // A table built on recycled allocations starts empty and gives the same slots.
            spare.recycle(table);
            let mut again = SegmentTable::default();
            for &id in &ids {
                again.find_or_insert(id, hash_of(id), &mut spare);
            }
            for (&id, &slot) in &reference {
                assert_eq!(again.find(id, hash_of(id)), Some(slot));
            }
            assert_eq!(again.len(), reference.len());
        }
    }
}
