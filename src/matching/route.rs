//! Route distances between candidate positions for the HMM transitions, and the segment
//! path between two matched points: a bounded one-to-many search over the successor
//! adjacency, aimed at the new probe (A* with a flat-metric lower bound), with sparse
//! per-search state and a bounded segment-to-segment distance cache.
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
//! **Aimed, not a ball (measured).** At sparse sampling `max_speed_mps × Δt` is kilometres,
//! and a plain Dijkstra from each candidate settled the whole ball of that radius whenever
//! one target was out of reach (perf at 30 s on the Kubicka tracks: ~99 % of matching time
//! in the search). Keyed by distance plus a lower bound to the probe, a search settles the
//! ellipse between source and targets instead, and stops at the largest target's bound
//! plus its lower bound; the matcher also asks each route only up to where it could still
//! win (`session::link`). Settled segments per probe on the Kubicka tracks: 7 / 41 / 113 /
//! 243 / 529 at 1 / 5 / 15 / 30 / 60 s; throughput 0.93 / 1.57 / 2.42 / 2.86 / 3.52× the
//! plain Dijkstra's, with identical outputs (BENCHMARKS.md, "Route search aimed at the
//! probe"). At 1 s, where searches settle a handful of segments, the hashed state costs
//! what aiming saves or a little more (0.91× on generated traffic).
//! Contraction hierarchies would cut the sparse-rate searches further but need a
//! preprocessing per graph version and a shortcut graph in memory; not needed for now.
//! **Cache.** Keyed by (from segment, to segment), valued by either the exact distance or
//! "farther than X". An exact distance is valid for any bound and "farther than X" for any
//! bound ≤ X, so a hit answers exactly what a fresh search would: results do not depend on
//! the cache's contents (nor on how vehicles are sharded). Eviction is two-generational:
//! when the young map holds half the capacity it becomes the old map and the previous old
//! map is dropped; a hit in the old map is promoted. Deterministic, bounded, O(1).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::geo::EARTH_RADIUS_M;
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
    /// Segments expanded by the searches (the work they did).
    pub settled: u64,
}

/// Route distances and paths. Owns its search state and cache; one per matcher, shared by
/// all its vehicles. The search state is sparse (a map from the segments one search
/// touched to their labels), so it grows with the largest area searched, not with the
/// graph.
#[derive(Debug)]
pub struct Router {
    search: SearchState,
    young: PairMap,
    old: PairMap,
    capacity: usize,
    misses: Vec<Miss>,
    stats: RouteStats,
    u_turn_penalty_m: f64,
    /// Scratch for [`Router::distances`]' uniform bounds.
    uniform_m: Vec<f64>,
    /// See [`min_cos_lat`].
    cos_lat: f64,
}

/// A target of one search: `out` index, segment, the longest distance (end of the source
/// to the start of `segment`) that is of use, and the great-circle distance from the start
/// of `segment` to the goal point.
#[derive(Debug, Clone, Copy)]
struct Miss {
    j: usize,
    segment: u32,
    bound_m: f64,
    to_goal_m: f64,
}

/// What one search knows of one segment: the best distance found from the end of the
/// source to its start, the great-circle lower bound from its start to the goal point, the
/// predecessor on that route, and how many targets sit on it.
#[derive(Debug, Clone, Copy)]
struct Label {
    dist_m: f64,
    to_goal_m: f64,
    pred: u32,
    targets: u16,
    /// Popped with its final key since it was last improved.
    settled: bool,
    /// Its targets were counted as found (once per search, even if reopened).
    counted: bool,
}

/// A multiplicative hasher for `u32` segment keys; the map is never iterated.
#[derive(Default)]
struct SegmentHasher(u64);

impl Hasher for SegmentHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        let x = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

type SlotMap = HashMap<u32, u32, BuildHasherDefault<SegmentHasher>>;

/// The per-search state, sparse: the segments touched (`keys`) and their labels, in
/// touch order, and a map from segment to position. All are cleared (capacity kept) after
/// each search, so they grow with the largest area one search touched.
#[derive(Debug, Default)]
struct SearchState {
    keys: Vec<u32>,
    labels: Vec<Label>,
    slots: SlotMap,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl SearchState {
    fn slot(&self, s: u32) -> Option<usize> {
        self.slots.get(&s).map(|&i| i as usize)
    }

    /// The label of `s`, created unreached (with its lower bound to the goal) on first touch.
    fn touch(&mut self, graph: &RoadGraph, s: u32, goal: &Goal) -> usize {
        let next = self.keys.len() as u32;
        let slot = *self.slots.entry(s).or_insert(next);
        if slot == next {
            self.keys.push(s);
            self.labels.push(Label {
                dist_m: f64::INFINITY,
                to_goal_m: to_goal_m(graph, s, goal),
                pred: NONE,
                targets: 0,
                settled: false,
                counted: false,
            });
        }
        slot as usize
    }

    fn dist_m(&self, s: u32) -> f64 {
        self.slot(s)
            .map_or(f64::INFINITY, |i| self.labels[i].dist_m)
    }

    fn clear(&mut self) {
        // Clearing a map writes all its control bytes, even when it holds nothing.
        if !self.slots.is_empty() {
            self.slots.clear();
        }
        self.keys.clear();
        self.labels.clear();
        self.heap.clear();
    }

    fn bytes(&self) -> usize {
        // hashbrown: one control byte and one (key, value) per bucket, about 8/7 buckets per
        // entry of capacity.
        self.slots.capacity() * 8 / 7 * (1 + std::mem::size_of::<(u32, u32)>())
            + self.labels.capacity() * std::mem::size_of::<Label>()
            + self.keys.capacity() * std::mem::size_of::<u32>()
            + self.heap.capacity() * std::mem::size_of::<Reverse<(u64, u32)>>()
    }
}

/// The point a search aims at, with the scale of its lower bound.
#[derive(Debug, Clone, Copy)]
struct Goal {
    lat_rad: f64,
    lon_rad: f64,
    /// The cosine of the largest |latitude| of the graph (see [`min_cos_lat`]).
    cos_lat: f64,
}

impl Goal {
    fn new(lat_lon: [f64; 2], cos_lat: f64) -> Self {
        Self {
            lat_rad: lat_lon[0].to_radians(),
            lon_rad: lat_lon[1].to_radians(),
            cos_lat,
        }
    }

    /// A lower bound on the length of any route from `p` (lat, lon) to the goal, or rather
    /// a consistent one: for two points of the graph it never exceeds their great-circle
    /// distance. It is the distance in the flat metric R²(dφ² + c²dλ²) with c the smallest
    /// cos φ on the graph, which the sphere's metric R²(dφ² + cos²φ dλ²) dominates there;
    /// being a metric, it keeps the triangle inequality. Five flops, no trigonometry.
    fn lower_bound_m(&self, p: [f64; 2]) -> f64 {
        let dlat = p[0].to_radians() - self.lat_rad;
        // Longitudes are within ±180°, so |Δλ| ≤ 2π: wrap it without a division.
        let mut dlon = (p[1].to_radians() - self.lon_rad)
            .abs()
            .min(std::f64::consts::TAU);
        if dlon > std::f64::consts::PI {
            dlon = std::f64::consts::TAU - dlon;
        }
        let x = self.cos_lat * dlon;
        EARTH_RADIUS_M * (dlat * dlat + x * x).sqrt()
    }
}

/// The cosine of the largest |latitude| of any point of `graph`, a little poleward of it
/// (a geodesic between two points bulges toward the pole by less than 1e-3 rad for any
/// segment shorter than hundreds of kilometres).
fn min_cos_lat(graph: &RoadGraph) -> f64 {
    let max_abs_lat = graph
        .all_geometry()
        .iter()
        .map(|p| p[0].abs())
        .fold(0.0_f64, f64::max);
    (max_abs_lat.to_radians() + 1e-3)
        .min(std::f64::consts::FRAC_PI_2)
        .cos()
        .max(0.0)
}

/// The lower bound from the start of segment `s` to the goal: since a segment is never
/// shorter than the great-circle distance between its ends (its length is the haversine
/// sum over its polyline), `to_goal_m(s) ≤ length(s) + to_goal_m(t)` for a successor `t`.
fn to_goal_m(graph: &RoadGraph, s: u32, goal: &Goal) -> f64 {
    match graph.geometry(s).first() {
        Some(p) => goal.lower_bound_m(*p),
        None => 0.0,
    }
}

/// Slack on every comparison with a lower-bound key, far above the rounding of a sum of
/// haversines (~1e-9 m) and far below anything that changes a route: it keeps the search
/// exact although the bound's triangle inequality only holds up to rounding.
fn key_slack_m(key_m: f64) -> f64 {
    1e-6 + 1e-9 * key_m.abs()
}

/// True when `b` runs back along `a` (from `a`'s end to its start): a U-turn.
fn is_u_turn(graph: &RoadGraph, a: u32, b: u32) -> bool {
    let (sa, sb) = (graph.segment(a), graph.segment(b));
    sb.from_node_id == sa.to_node_id && sb.to_node_id == sa.from_node_id
}

/// The cost of stepping from the end of `a` onto `b`, one of its successors.
fn turn_cost_m(graph: &RoadGraph, u_turn_penalty_m: f64, a: u32, b: u32) -> f64 {
    if u_turn_penalty_m > 0.0 && graph.successors(a).len() > 1 && is_u_turn(graph, a, b) {
        u_turn_penalty_m
    } else {
        0.0
    }
}

const NONE: u32 = u32::MAX;

impl Router {
    /// A router for `graph` (and no other) with a cache of at most `cache_entries`
    /// segment pairs. Reads every point of the graph once, for the scale of the search's
    /// lower bound.
    pub fn new(graph: &RoadGraph, cache_entries: usize) -> Self {
        Self {
            cos_lat: min_cos_lat(graph),
            search: SearchState::default(),
            young: PairMap::default(),
            old: PairMap::default(),
            capacity: cache_entries,
            misses: Vec::new(),
            stats: RouteStats::default(),
            u_turn_penalty_m: 0.0,
            uniform_m: Vec::new(),
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

    fn turn_cost_m(&self, graph: &RoadGraph, a: u32, b: u32) -> f64 {
        turn_cost_m(graph, self.u_turn_penalty_m, a, b)
    }

    pub fn stats(&self) -> RouteStats {
        self.stats
    }

    /// Entries currently cached.
    pub fn cache_len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Heap bytes held by the search state (not the cache): it grows with the largest
    /// area one search touched, never with the graph.
    pub fn search_bytes(&self) -> usize {
        self.search.bytes() + self.misses.capacity() * std::mem::size_of::<Miss>()
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
    /// `Some(metres)` when the route is at most `max_m`, else `None`. `toward` (lat, lon)
    /// is a point near the targets (the probe they are candidates of): the search is
    /// directed at it. The distances do not depend on it, only the work done does.
    #[allow(clippy::too_many_arguments)]
    pub fn distances(
        &mut self,
        graph: &RoadGraph,
        from: Position,
        targets: &[Position],
        toward: [f64; 2],
        max_m: f64,
        standstill_m: f64,
        out: &mut Vec<Option<f64>>,
    ) {
        let mut uniform = std::mem::take(&mut self.uniform_m);
        uniform.clear();
        uniform.resize(targets.len(), max_m);
        self.distances_within(graph, from, targets, toward, &uniform, standstill_m, out);
        self.uniform_m = uniform;
    }

    /// [`Router::distances`] with a bound per target: `out[j]` is `Some(metres)` when the
    /// route to `targets[j]` is at most `max_m[j]` (a negative bound asks nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn distances_within(
        &mut self,
        graph: &RoadGraph,
        from: Position,
        targets: &[Position],
        toward: [f64; 2],
        max_m: &[f64],
        standstill_m: f64,
        out: &mut Vec<Option<f64>>,
    ) {
        out.clear();
        out.resize(targets.len(), None);
        self.misses.clear();
        let a = from.segment;
        let exit_m = (graph.segment(a).length_m - from.offset_m).max(0.0);
        let successors = graph.successors(a);
        let goal = Goal::new(toward, self.cos_lat);
        for ((j, t), &max_m) in targets.iter().enumerate().zip(max_m) {
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
                    self.misses.push(Miss {
                        j,
                        segment: t.segment,
                        bound_m: seg_bound_m,
                        to_goal_m: to_goal_m(graph, t.segment, &goal),
                    });
                }
            }
        }
        if self.misses.is_empty() {
            return;
        }
        let misses = std::mem::take(&mut self.misses);
        let key_limit_m = self.search(graph, a, &goal, &misses);
        for m in &misses {
            let settled = self
                .search
                .slot(m.segment)
                .map(|i| self.search.labels[i])
                .filter(|l| l.settled);
            match settled {
                Some(label) => {
                    let d = label.dist_m;
                    self.cache_put(pair_key(a, m.segment), Cached::Exact(d));
                    if d <= m.bound_m {
                        out[m.j] = Some(exit_m + d + targets[m.j].offset_m);
                    }
                }
                None => {
                    // Every route of length d has a key ≤ d + to_goal_m: one no longer
                    // than this would have been found.
                    let farther_than_m = (key_limit_m - m.to_goal_m).max(m.bound_m);
                    self.cache_put(pair_key(a, m.segment), Cached::FartherThan(farther_than_m));
                }
            }
        }
        self.search.clear();
        self.misses = misses;
        self.misses.clear();
    }

    /// The segments strictly between `a` and `b` on a shortest route from the end of `a`
    /// to the start of `b` no longer than `max_m`, into `out` (cleared). False when there
    /// is none. Among routes of equal length, the one plain Dijkstra with ties broken by
    /// segment index would give.
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
        let goal = match graph.geometry(b).first() {
            Some(p) => Goal::new(*p, self.cos_lat),
            None => return false,
        };
        let targets = [Miss {
            j: 0,
            segment: b,
            bound_m: max_m,
            to_goal_m: to_goal_m(graph, b, &goal),
        }];
        self.search(graph, a, &goal, &targets);
        let found = self.search.slot(b).is_some_and(|i| {
            self.search.labels[i].settled && self.search.labels[i].dist_m <= max_m
        });
        if found {
            let mut at = self
                .search
                .slot(b)
                .map_or(NONE, |i| self.search.labels[i].pred);
            // The walk is bounded by the number of labelled segments.
            let mut steps = self.search.labels.len();
            while at != NONE && steps > 0 {
                out.push(at);
                at = self
                    .search
                    .slot(at)
                    .map_or(NONE, |i| self.search.labels[i].pred);
                steps -= 1;
            }
            out.reverse();
        }
        self.search.clear();
        found
    }

    /// A* over segments toward `goal`: a label's distance is from the end of `a` to the
    /// start of the segment, its key that distance plus [`to_goal_m`] (a consistent lower
    /// bound, so a target popped is final). A segment whose key passes the largest `bound_m + to_goal_m` of the targets
    /// cannot lie on a route to any target within its bound and is not expanded. Stops
    /// once every target is popped and the keys pass theirs by the rounding slack. Labels
    /// are reopened if improved, and among equal distances the predecessor is the one with
    /// the smallest (distance, index), so distances and paths are those of plain Dijkstra
    /// with ties broken by index. Returns the key limit used.
    fn search(&mut self, graph: &RoadGraph, a: u32, goal: &Goal, targets: &[Miss]) -> f64 {
        self.stats.searches += 1;
        let penalty_m = self.u_turn_penalty_m;
        // Empty: every caller clears it after reading its labels.
        let state = &mut self.search;
        let key_limit_m = targets
            .iter()
            .map(|t| t.bound_m + t.to_goal_m)
            .fold(0.0_f64, f64::max);
        let limit_m = key_limit_m + key_slack_m(key_limit_m);
        for t in targets {
            let i = state.touch(graph, t.segment, goal);
            state.labels[i].targets += 1;
        }
        for &s in graph.successors(a) {
            let d = turn_cost_m(graph, penalty_m, a, s);
            let i = state.touch(graph, s, goal);
            let label = &mut state.labels[i];
            let key = d + label.to_goal_m;
            if d < label.dist_m && key <= limit_m {
                label.dist_m = d;
                label.pred = NONE;
                state.heap.push(Reverse((key.to_bits(), i as u32)));
            }
        }
        let mut remaining = targets.len();
        let mut stop_m = f64::INFINITY;
        let mut settled = 0u64;
        // The heap holds (key, label position): positions follow touch order, so pops
        // are deterministic, and a pop needs no lookup.
        while let Some(Reverse((bits, i))) = state.heap.pop() {
            let key = f64::from_bits(bits);
            if key > stop_m {
                break;
            }
            let i = i as usize;
            let s = state.keys[i];
            let label = state.labels[i];
            if key > label.dist_m + label.to_goal_m {
                continue;
            }
            settled += 1;
            state.labels[i].settled = true;
            if label.targets > 0 && !label.counted {
                state.labels[i].counted = true;
                remaining = remaining.saturating_sub(usize::from(label.targets));
                if remaining == 0 {
                    stop_m = key + key_slack_m(key);
                }
            }
            let d = label.dist_m;
            let nd = d + graph.segment(s).length_m;
            for &t in graph.successors(s) {
                let nd = nd + turn_cost_m(graph, penalty_m, s, t);
                // The key is at least the distance: past the limit, leave `t` unlabelled.
                if nd > limit_m {
                    continue;
                }
                let j = state.touch(graph, t, goal);
                let next = state.labels[j];
                let key = nd + next.to_goal_m;
                if key > limit_m {
                    continue;
                }
                if nd < next.dist_m {
                    let next = &mut state.labels[j];
                    next.dist_m = nd;
                    next.pred = s;
                    next.settled = false;
                    state.heap.push(Reverse((key.to_bits(), j as u32)));
                } else if nd == next.dist_m && next.pred != NONE {
                    // Dijkstra relaxes in (distance, index) order and keeps the first of
                    // equal distances: keep the smallest (distance, index) predecessor.
                    let p = next.pred;
                    let pd = state.dist_m(p);
                    if (d, s) < (pd, p) {
                        state.labels[j].pred = s;
                    }
                }
            }
        }
        self.stats.settled += settled;
        key_limit_m
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::geo::LocalProjection;
    use crate::graph::osm_writer::{grid_node_id, OsmBuilder};
    use crate::graph::{GraphError, ImportConfig};

    const PENALTY_M: f64 = 50.0;

    /// A seeded random town: a `n` × `n` grid of junctions about 80 m apart (jittered, or
    /// exactly regular so that many routes tie), streets dropped or made one-way at
    /// random, and some diagonals.
    fn random_town(seed: u64, n: usize, jitter_m: f64) -> Result<RoadGraph, GraphError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let p = LocalProjection::new(47.0, 9.0);
        let mut osm = OsmBuilder::new();
        for r in 0..n {
            for c in 0..n {
                let x = c as f64 * 80.0 + rng.random_range(-jitter_m..=jitter_m);
                let y = r as f64 * 80.0 + rng.random_range(-jitter_m..=jitter_m);
                let (lat, lon) = p.unproject([x, y]);
                osm.node(grid_node_id(n, r, c), lat, lon);
            }
        }
        let mut way = 1;
        let mut add = |osm: &mut OsmBuilder, rng: &mut ChaCha8Rng, a: i64, b: i64| {
            let roll: f64 = rng.random();
            if roll < 0.1 {
                return;
            }
            let mut tags = vec![("highway", "residential")];
            if roll < 0.3 {
                tags.push(("oneway", "yes"));
            } else if roll < 0.4 {
                tags.push(("oneway", "-1"));
            }
            osm.way(way, &[a, b], &tags);
            way += 1;
        };
        for r in 0..n {
            for c in 0..n {
                let here = grid_node_id(n, r, c);
                if c + 1 < n {
                    add(&mut osm, &mut rng, here, grid_node_id(n, r, c + 1));
                }
                if r + 1 < n {
                    add(&mut osm, &mut rng, here, grid_node_id(n, r + 1, c));
                }
                if r + 1 < n && c + 1 < n && rng.random_bool(0.15) {
                    add(&mut osm, &mut rng, here, grid_node_id(n, r + 1, c + 1));
                }
            }
        }
        osm.build_graph(&ImportConfig::default())
    }

    /// The search this router replaced: plain Dijkstra over dense arrays, ties by index,
    /// run to exhaustion within `bound_m`. (distance from the end of `a`, predecessor).
    fn reference_dijkstra(graph: &RoadGraph, a: u32, bound_m: f64) -> (Vec<f64>, Vec<u32>) {
        let mut dist_m = vec![f64::INFINITY; graph.len()];
        let mut pred = vec![NONE; graph.len()];
        let mut heap = BinaryHeap::new();
        for &s in graph.successors(a) {
            let d = turn_cost_m(graph, PENALTY_M, a, s);
            if d < dist_m[s as usize] && d <= bound_m {
                dist_m[s as usize] = d;
                pred[s as usize] = NONE;
                heap.push(Reverse((d.to_bits(), s)));
            }
        }
        while let Some(Reverse((bits, s))) = heap.pop() {
            let d = f64::from_bits(bits);
            if d > dist_m[s as usize] {
                continue;
            }
            let nd = d + graph.segment(s).length_m;
            if nd > bound_m {
                continue;
            }
            for &t in graph.successors(s) {
                let nd = nd + turn_cost_m(graph, PENALTY_M, s, t);
                if nd < dist_m[t as usize] && nd <= bound_m {
                    dist_m[t as usize] = nd;
                    pred[t as usize] = s;
                    heap.push(Reverse((nd.to_bits(), t)));
                }
            }
        }
        (dist_m, pred)
    }

    /// What `Router::distances` answered before the change, from the reference search.
    fn reference_distances(
        graph: &RoadGraph,
        from: Position,
        targets: &[Position],
        max_m: f64,
        standstill_m: f64,
    ) -> Vec<Option<f64>> {
        let a = from.segment;
        let exit_m = (graph.segment(a).length_m - from.offset_m).max(0.0);
        let (dist_m, _) = reference_dijkstra(graph, a, max_m);
        targets
            .iter()
            .map(|t| {
                if t.segment == a && same_segment_direct(from.offset_m, t.offset_m, standstill_m) {
                    let d = (t.offset_m - from.offset_m).max(0.0);
                    return (d <= max_m).then_some(d);
                }
                let seg_bound_m = max_m - exit_m - t.offset_m;
                if seg_bound_m < 0.0 {
                    return None;
                }
                if graph.successors(a).binary_search(&t.segment).is_ok() {
                    let d = exit_m + turn_cost_m(graph, PENALTY_M, a, t.segment) + t.offset_m;
                    return (d <= max_m).then_some(d);
                }
                let d = dist_m[t.segment as usize];
                (d <= seg_bound_m).then_some(exit_m + d + t.offset_m)
            })
            .collect()
    }

    fn random_position(graph: &RoadGraph, rng: &mut ChaCha8Rng) -> Position {
        let segment = rng.random_range(0..graph.len() as u32);
        let length_m = graph.segment(segment).length_m;
        Position {
            segment,
            offset_m: rng.random_range(0.0..=length_m),
        }
    }

    /// A point near a position (its segment's start moved by up to 60 m).
    fn near(graph: &RoadGraph, at: Position, rng: &mut ChaCha8Rng) -> [f64; 2] {
        let p = graph.geometry(at.segment)[0];
        [
            p[0] + rng.random_range(-5e-4..=5e-4),
            p[1] + rng.random_range(-5e-4..=5e-4),
        ]
    }

    #[test]
    fn distances_equal_the_replaced_dijkstra_on_random_queries() -> Result<(), GraphError> {
        for seed in 0..6 {
            let graph = random_town(seed, 12, if seed % 2 == 0 { 0.0 } else { 25.0 })?;
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            // A small cache, so that evictions and "farther than" answers are exercised.
            let mut router = Router::new(&graph, 64).with_u_turn_penalty_m(PENALTY_M);
            let mut out = Vec::new();
            for _ in 0..300 {
                let from = random_position(&graph, &mut rng);
                let centre = random_position(&graph, &mut rng);
                // Candidates cluster round one point, as a probe's do; a few anywhere.
                let mut targets: Vec<Position> = (0..rng.random_range(1..=16))
                    .map(|_| {
                        if rng.random_bool(0.8) {
                            let s = graph.successors(centre.segment);
                            let segment = match rng.random_range(0..3) {
                                0 if !s.is_empty() => s[rng.random_range(0..s.len())],
                                _ => centre.segment,
                            };
                            let length_m = graph.segment(segment).length_m;
                            Position {
                                segment,
                                offset_m: rng.random_range(0.0..=length_m),
                            }
                        } else {
                            random_position(&graph, &mut rng)
                        }
                    })
                    .collect();
                if rng.random_bool(0.1) {
                    targets.push(Position {
                        segment: from.segment,
                        offset_m: rng.random_range(0.0..=graph.segment(from.segment).length_m),
                    });
                }
                let toward = if rng.random_bool(0.8) {
                    near(&graph, centre, &mut rng)
                } else {
                    // Anywhere: only the work may change, never the answer.
                    near(&graph, random_position(&graph, &mut rng), &mut rng)
                };
                // Again with other bounds: cache hits, exact and "farther than".
                for _ in 0..3 {
                    let max_m = rng.random_range(0.0..1_500.0);
                    router.distances(&graph, from, &targets, toward, max_m, 20.0, &mut out);
                    let expected = reference_distances(&graph, from, &targets, max_m, 20.0);
                    assert_eq!(out, expected, "seed {seed}, from {from:?}, max {max_m}");
                }
            }
            assert!(router.stats().cache_hits > 0 && router.stats().searches > 0);
        }
        Ok(())
    }

    #[test]
    fn paths_equal_the_replaced_dijkstra_on_random_queries() -> Result<(), GraphError> {
        for seed in 0..6 {
            // Exactly regular grids have many routes of equal length: the tie-breaking
            // must pick the same one.
            let graph = random_town(seed, 12, if seed % 2 == 0 { 0.0 } else { 25.0 })?;
            let mut rng = ChaCha8Rng::seed_from_u64(2000 + seed);
            let mut router = Router::new(&graph, 0).with_u_turn_penalty_m(PENALTY_M);
            let mut found = 0;
            let mut path = Vec::new();
            for _ in 0..300 {
                let a = rng.random_range(0..graph.len() as u32);
                let b = rng.random_range(0..graph.len() as u32);
                let max_m = rng.random_range(0.0..1_200.0);
                let ok = router.path(&graph, a, b, max_m, &mut path);
                if graph.successors(a).binary_search(&b).is_ok() {
                    assert_eq!(ok, turn_cost_m(&graph, PENALTY_M, a, b) <= max_m);
                    assert!(path.is_empty());
                    continue;
                }
                let (dist_m, pred) = reference_dijkstra(&graph, a, max_m);
                assert_eq!(ok, dist_m[b as usize].is_finite(), "seed {seed}, {a} → {b}");
                let mut expected = Vec::new();
                if ok {
                    found += 1;
                    let mut at = pred[b as usize];
                    while at != NONE {
                        expected.push(at);
                        at = pred[at as usize];
                    }
                    expected.reverse();
                }
                assert_eq!(path, expected, "seed {seed}, {a} → {b} within {max_m}");
            }
            assert!(found > 20, "seed {seed}: only {found} paths found");
        }
        Ok(())
    }

    #[test]
    fn search_state_grows_with_the_area_searched_not_with_the_graph() -> Result<(), GraphError> {
        // 60 × 60 junctions: over 11 000 segments, 130 kB at the 12 B per segment the
        // dense search arrays took. A 300 m search touches a few hundred.
        let graph = random_town(7, 60, 10.0)?;
        assert!(graph.len() > 11_000, "{}", graph.len());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut router = Router::new(&graph, 0).with_u_turn_penalty_m(PENALTY_M);
        let mut out = Vec::new();
        for _ in 0..50 {
            let from = random_position(&graph, &mut rng);
            let targets = [random_position(&graph, &mut rng)];
            let toward = near(&graph, targets[0], &mut rng);
            router.distances(&graph, from, &targets, toward, 300.0, 20.0, &mut out);
        }
        assert!(router.stats().searches > 0);
        let bytes = router.search_bytes();
        assert!(
            bytes < graph.len() * 12 / 4,
            "{bytes} B for {} segments",
            graph.len()
        );
        Ok(())
    }
}
