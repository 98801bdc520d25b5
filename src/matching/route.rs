//! Route distances between candidate positions for the HMM transitions, and the segment
//! path between two matched points: bounded one-to-many Dijkstra over the successor
//! adjacency, with a bounded segment-to-segment distance cache.
//!
//! A position is (segment, offset_m along it). The route from (a, oa) to (b, ob) honours
//! the direction of travel: on the same segment with `ob ≥ oa − standstill_m` it is
//! `max(0, ob − oa)` (a small step back is GPS noise on a standing vehicle); otherwise it is
//! `(length(a) − oa) + d(a → b) + ob`, where `d(a → b)` is the shortest distance from the
//! end of `a` to the start of `b` over successors (0 when `b` follows `a` directly). One-way
//! streets are honoured because the adjacency only has the legal successors. A U-turn onto
//! the reverse twin is a successor too, but costs `u_turn_penalty_m` unless it is a dead
//! end's only way on; distances (and the bounds searched) include that penalty.
//!
//! **Dijkstra, not a precomputed table (measured).** An FMM-style upper-bounded
//! origin-destination table holds every pair within δ (3 km in the FMM paper). On the
//! Monaco extract (4 314 segments) that is ~860 rows per source, ~150 MB at 40 B/row; on
//! Liechtenstein (7 613 segments) ~1 000 rows per source, ~300 MB, all built before the
//! first probe, per graph version. The bounded search here only explores what
//! `max_speed_mps × Δt` allows; same-segment and direct-successor steps skip it; the cache
//! answers 80–91 % of the rest. With generated traffic (k = 8, r = 50 m) that leaves
//! 0.26–0.38 searches per probe at 1 s sampling and 0.57–1.26 at 5 s, and matching runs
//! at 190–300 k probes/s on one core with a cache of 100 k pairs (a few MB). A table would
//! remove at most the search share of that time, at ~100× the memory. Figures from
//! `cargo bench --bench matching -- monaco.osm.pbf liechtenstein.osm.pbf`.
//!
//! **Cache.** Keyed by (from segment, to segment), valued by either the exact distance or
//! "farther than X". An exact distance is valid for any bound and "farther than X" for any
//! bound ≤ X, so a hit answers exactly what a fresh search would: results do not depend on
//! the cache's contents (nor on how vehicles are sharded). Eviction is two-generational:
//! when the young map holds half the capacity it becomes the old map and the previous old
//! map is dropped; a hit in the old map is promoted. Deterministic, bounded, O(1).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::graph::RoadGraph;

/// A position on the graph: segment index and distance from its start, metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub segment: u32,
    pub offset_m: f64,
}

/// True when (a, oa) → (a, ob) is travelled directly on segment a (forward, or standing
/// still within `standstill_m`), rather than by leaving it and coming back.
pub fn same_segment_direct(oa_m: f64, ob_m: f64, standstill_m: f64) -> bool {
    ob_m >= oa_m - standstill_m
}

#[derive(Debug, Clone, Copy)]
enum Cached {
    Exact(f64),
    FartherThan(f64),
}

/// A multiplicative hasher for the (u32, u32) keys; the map is never iterated.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

type PairMap = HashMap<u64, Cached, BuildHasherDefault<PairHasher>>;

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// Counters of the router; the stage exports them as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Dijkstra runs (distance and path searches).
    pub searches: u64,
    /// Segment pairs answered from the cache.
    pub cache_hits: u64,
    /// Segment pairs that needed a search.
    pub cache_misses: u64,
    /// Segment pairs answered without search or cache (same segment, direct successor).
    pub trivial: u64,
}

/// Route distances and paths. Owns its search buffers (sized to the graph) and cache; one
/// per matcher, shared by all its vehicles.
#[derive(Debug)]
pub struct Router {
    dist_m: Vec<f64>,
    pred: Vec<u32>,
    touched: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    young: PairMap,
    old: PairMap,
    capacity: usize,
    misses: Vec<(usize, u32, f64)>,
    stats: RouteStats,
    u_turn_penalty_m: f64,
}

/// True when `b` runs back along `a` (from `a`'s end to its start): a U-turn.
fn is_u_turn(graph: &RoadGraph, a: u32, b: u32) -> bool {
    let (sa, sb) = (graph.segment(a), graph.segment(b));
    sb.from_node_id == sa.to_node_id && sb.to_node_id == sa.from_node_id
}

const NONE: u32 = u32::MAX;

impl Router {
    /// A router for `graph` with a cache of at most `cache_entries` segment pairs.
    pub fn new(graph: &RoadGraph, cache_entries: usize) -> Self {
        Self {
            dist_m: vec![f64::INFINITY; graph.len()],
            pred: vec![NONE; graph.len()],
            touched: Vec::new(),
            heap: BinaryHeap::new(),
            young: PairMap::default(),
            old: PairMap::default(),
            capacity: cache_entries,
            misses: Vec::new(),
            stats: RouteStats::default(),
            u_turn_penalty_m: 0.0,
        }
    }

    /// Charges `penalty_m` for a U-turn (stepping from a segment onto its reverse twin)
    /// where the road goes on, as routing engines do: a car rarely turns round mid-road,
    /// while GPS jitter at a stop often looks like a hop into a side street and back. A
    /// dead end (the twin is the only way on) stays free. Distances and paths then
    /// include the penalty; the pieces of a path keep their true lengths.
    pub fn with_u_turn_penalty_m(mut self, penalty_m: f64) -> Self {
        self.u_turn_penalty_m = penalty_m;
        self
    }

    /// The cost of stepping from the end of `a` onto `b`, one of its successors.
    fn turn_cost_m(&self, graph: &RoadGraph, a: u32, b: u32) -> f64 {
        if self.u_turn_penalty_m > 0.0 && graph.successors(a).len() > 1 && is_u_turn(graph, a, b) {
            self.u_turn_penalty_m
        } else {
            0.0
        }
    }

    pub fn stats(&self) -> RouteStats {
        self.stats
    }

    /// Entries currently cached.
    pub fn cache_len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    fn cache_get(&mut self, key: u64) -> Option<Cached> {
        if let Some(v) = self.young.get(&key) {
            return Some(*v);
        }
        let v = self.old.get(&key).copied()?;
        self.cache_put(key, v);
        Some(v)
    }

    fn cache_put(&mut self, key: u64, value: Cached) {
        if self.capacity == 0 {
            return;
        }
        if self.young.len() >= self.capacity.div_ceil(2) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    /// Route distances from `from` to each of `targets`, written to `out` (same order):
    /// `Some(metres)` when the route is at most `max_m`, else `None`.
    pub fn distances(
        &mut self,
        graph: &RoadGraph,
        from: Position,
        targets: &[Position],
        max_m: f64,
        standstill_m: f64,
        out: &mut Vec<Option<f64>>,
    ) {
        out.clear();
        out.resize(targets.len(), None);
        self.misses.clear();
        let a = from.segment;
        let exit_m = (graph.segment(a).length_m - from.offset_m).max(0.0);
        let successors = graph.successors(a);
        for (j, t) in targets.iter().enumerate() {
            if t.segment == a && same_segment_direct(from.offset_m, t.offset_m, standstill_m) {
                self.stats.trivial += 1;
                let d = (t.offset_m - from.offset_m).max(0.0);
                out[j] = (d <= max_m).then_some(d);
                continue;
            }
            let seg_bound_m = max_m - exit_m - t.offset_m;
            if seg_bound_m < 0.0 {
                continue;
            }
            if successors.binary_search(&t.segment).is_ok() {
                self.stats.trivial += 1;
                let d = exit_m + self.turn_cost_m(graph, a, t.segment) + t.offset_m;
                out[j] = (d <= max_m).then_some(d);
                continue;
            }
            match self.cache_get(pair_key(a, t.segment)) {
                Some(Cached::Exact(d)) => {
                    self.stats.cache_hits += 1;
                    out[j] = (d <= seg_bound_m).then_some(exit_m + d + t.offset_m);
                }
                Some(Cached::FartherThan(x)) if seg_bound_m <= x => {
                    self.stats.cache_hits += 1;
                }
                _ => {
                    self.stats.cache_misses += 1;
                    self.misses.push((j, t.segment, seg_bound_m));
                }
            }
        }
        if self.misses.is_empty() {
            return;
        }
        let bound_m = self
            .misses
            .iter()
            .map(|m| m.2)
            .fold(0.0_f64, |acc, b| acc.max(b));
        let mut misses = std::mem::take(&mut self.misses);
        self.search(graph, a, bound_m, &misses);
        for &(j, b, seg_bound_m) in &misses {
            let d = self.dist_m[b as usize];
            if d.is_finite() {
                self.cache_put(pair_key(a, b), Cached::Exact(d));
                if d <= seg_bound_m {
                    out[j] = Some(exit_m + d + targets[j].offset_m);
                }
            } else {
                self.cache_put(pair_key(a, b), Cached::FartherThan(bound_m));
            }
        }
        self.reset();
        misses.clear();
        self.misses = misses;
    }

    /// The segments strictly between `a` and `b` on a shortest route from the end of `a`
    /// to the start of `b` no longer than `max_m`, into `out` (cleared). False when there
    /// is none.
    pub fn path(
        &mut self,
        graph: &RoadGraph,
        a: u32,
        b: u32,
        max_m: f64,
        out: &mut Vec<u32>,
    ) -> bool {
        out.clear();
        if graph.successors(a).binary_search(&b).is_ok() {
            return self.turn_cost_m(graph, a, b) <= max_m;
        }
        let targets = [(0, b, max_m)];
        self.search(graph, a, max_m, &targets);
        let found = self.dist_m[b as usize].is_finite();
        if found {
            let mut at = self.pred[b as usize];
            // The walk is bounded by the number of settled segments.
            let mut steps = self.touched.len();
            while at != NONE && steps > 0 {
                out.push(at);
                at = self.pred[at as usize];
                steps -= 1;
            }
            out.reverse();
        }
        self.reset();
        found
    }

    /// Dijkstra over segments: `dist_m[s]` is the distance from the end of `a` to the start
    /// of `s`. Stops when every target is settled or the frontier passes `bound_m`. Ties
    /// are broken by segment index, so paths are deterministic.
    fn search(&mut self, graph: &RoadGraph, a: u32, bound_m: f64, targets: &[(usize, u32, f64)]) {
        self.stats.searches += 1;
        self.heap.clear();
        for &s in graph.successors(a) {
            let d = self.turn_cost_m(graph, a, s);
            if d < self.dist_m[s as usize] && d <= bound_m {
                if self.dist_m[s as usize].is_infinite() {
                    self.touched.push(s);
                }
                self.dist_m[s as usize] = d;
                self.pred[s as usize] = NONE;
                self.heap.push(Reverse((d.to_bits(), s)));
            }
        }
        let mut remaining = targets.len();
        while let Some(Reverse((bits, s))) = self.heap.pop() {
            let d = f64::from_bits(bits);
            if d > self.dist_m[s as usize] {
                continue;
            }
            let hits = targets.iter().filter(|t| t.1 == s).count();
            if hits > 0 {
                remaining -= hits;
                if remaining == 0 {
                    break;
                }
            }
            let nd = d + graph.segment(s).length_m;
            if nd > bound_m {
                continue;
            }
            for &t in graph.successors(s) {
                let nd = nd + self.turn_cost_m(graph, s, t);
                if nd < self.dist_m[t as usize] && nd <= bound_m {
                    if self.dist_m[t as usize].is_infinite() {
                        self.touched.push(t);
                    }
                    self.dist_m[t as usize] = nd;
                    self.pred[t as usize] = s;
                    self.heap.push(Reverse((nd.to_bits(), t)));
                }
            }
        }
    }

    fn reset(&mut self) {
        for &s in &self.touched {
            self.dist_m[s as usize] = f64::INFINITY;
            self.pred[s as usize] = NONE;
        }
        self.touched.clear();
        self.heap.clear();
    }
}
