//! Streaming decode: `VehicleMatcher` (one vehicle's online Viterbi, trace breaks and
//! unmatched probes) and `Matcher` (many vehicles, shared candidate buffer and router,
//! matched points and segment observations out, idle eviction by TTL).
//!
//! Output delay is bounded: a probe is emitted when every surviving path agrees on it, at
//! the latest once `lag_points` newer probes (or `lag_ms` of event time) follow it, and at
//! the latest at the end of the trace (gap, flush, eviction). Unmatched probes are reported
//! at once, so they may come out before earlier matched probes of the same vehicle.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use super::candidates::CandidateSearch;
use super::config::MatchConfig;
use super::hmm::{emission_log_prob, transition_log_prob};
use super::lattice::{Column, CommittedPoint, Lattice, Node, NO_BACK};
use super::observations::ObservationBuilder;
use super::path::{pieces_between, PathBuffers};
use super::route::{Position, RouteStats, Router};
use crate::geo::{haversine_m, is_plausible_coordinate};
use crate::graph::RoadGraph;
use crate::record::{observation_flags, MatchedPoint, Probe, SegmentObservation};

/// A min-heap of (last seen, vehicle): see [`Matcher`].
type IdleQueue = BinaryHeap<Reverse<(i64, Arc<str>)>>;

/// Why a probe was not matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnmatchedReason {
    /// NaN, out of WGS84 range, or (0, 0).
    InvalidCoordinate,
    /// No road within `radius_m`.
    NoCandidate,
    /// Older than the vehicle's previous probe.
    OutOfOrder,
}

impl UnmatchedReason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UnmatchedReason::InvalidCoordinate => "invalid_coordinate",
            UnmatchedReason::NoCandidate => "no_candidate",
            UnmatchedReason::OutOfOrder => "out_of_order",
        }
    }
}

/// Why a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BreakReason {
    TimeGap,
    DistanceGap,
    NoTransition,
    /// A probe with no road within `radius_m`: the vehicle left the road graph (a car park,
    /// private ground) or the fix is far off. Routing across it would invent a path.
    OffRoad,
}

/// What one vehicle's matcher hands out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// A decided point (the first of a trace has `route_m == None`).
    Point(CommittedPoint),
    /// The current trace ended after the points before this event.
    TraceEnd,
    Unmatched {
        probe: Probe,
        reason: UnmatchedReason,
    },
}

/// Counters, as plain numbers for the stage to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchStats {
    pub probes: u64,
    pub matched: u64,
    pub unmatched_invalid_coordinate: u64,
    pub unmatched_no_candidate: u64,
    pub unmatched_out_of_order: u64,
    pub breaks_time_gap: u64,
    pub breaks_distance_gap: u64,
    pub breaks_no_transition: u64,
    pub breaks_off_road: u64,
    /// Steps linked only once the speed cut was lifted (see `MatchConfig::max_speed_mps`).
    pub transitions_speed_relaxed: u64,
    /// Points emitted on convergence, by the lag, and at trace ends.
    pub commits_converged: u64,
    pub commits_forced: u64,
    pub commits_flushed: u64,
    pub observations: u64,
    /// Observations dropped because no time passed on them (e.g. one-point traces).
    pub observations_degenerate: u64,
    /// Consecutive points whose path could not be rebuilt (the trace was split there).
    pub path_failures: u64,
    pub vehicles_evicted: u64,
    /// `candidates_per_probe[n]`: probes with n candidates (n ≤ 64).
    pub candidates_per_probe: Vec<u64>,
}

impl Default for MatchStats {
    fn default() -> Self {
        Self {
            probes: 0,
            matched: 0,
            unmatched_invalid_coordinate: 0,
            unmatched_no_candidate: 0,
            unmatched_out_of_order: 0,
            breaks_time_gap: 0,
            breaks_distance_gap: 0,
            breaks_no_transition: 0,
            breaks_off_road: 0,
            transitions_speed_relaxed: 0,
            commits_converged: 0,
            commits_forced: 0,
            commits_flushed: 0,
            observations: 0,
            observations_degenerate: 0,
            path_failures: 0,
            vehicles_evicted: 0,
            candidates_per_probe: vec![0; 65],
        }
    }
}

/// What a vehicle matcher needs from its owner: the graph, the settings and the shared
/// scratch (candidate buffer, router with its cache) and counters.
pub struct MatchContext<'a> {
    pub graph: &'a RoadGraph,
    pub config: &'a MatchConfig,
    pub search: &'a mut CandidateSearch,
    pub router: &'a mut Router,
    pub stats: &'a mut MatchStats,
    pub scratch: &'a mut Scratch,
}

/// One vehicle's online Viterbi decoder.
#[derive(Debug, Default, Clone)]
pub struct VehicleMatcher {
    lattice: Lattice,
    last_ts_ms: Option<i64>,
}

/// Per-step buffers shared by all vehicles of a matcher, so an idle vehicle holds none.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    points: Vec<CommittedPoint>,
    targets: Vec<Position>,
    routes: Vec<Option<f64>>,
    /// Live nodes of the previous column, best first.
    order: Vec<u32>,
    /// Per node: its emission log-probability, and the longest route still worth asking.
    emissions: Vec<f64>,
    bounds_m: Vec<f64>,
}

impl VehicleMatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Probes held undecided.
    pub fn pending(&self) -> usize {
        self.lattice.pending()
    }

    /// Event time of the newest probe accepted.
    pub fn last_ts_ms(&self) -> Option<i64> {
        self.last_ts_ms
    }

    /// Feeds one probe; appends what got decided to `out`.
    pub fn push(&mut self, cx: &mut MatchContext<'_>, probe: Probe, out: &mut Vec<Committed>) {
        cx.stats.probes += 1;
        if !is_plausible_coordinate(probe.lat, probe.lon) {
            cx.stats.unmatched_invalid_coordinate += 1;
            out.push(Committed::Unmatched {
                probe,
                reason: UnmatchedReason::InvalidCoordinate,
            });
            return;
        }
        if self.last_ts_ms.is_some_and(|t| probe.ts_ms < t) {
            cx.stats.unmatched_out_of_order += 1;
            out.push(Committed::Unmatched {
                probe,
                reason: UnmatchedReason::OutOfOrder,
            });
            return;
        }
        self.last_ts_ms = Some(probe.ts_ms);
        let config = cx.config;
        let candidates = cx
            .search
            .find(cx.graph, probe.lat, probe.lon, config.radius_m, config.k);
        // Nearest first: keep those whose emission is within the gap of the nearest one's.
        let max_distance_2 = config.max_candidate_distance_2(candidates.first());
        let kept = candidates
            .iter()
            .take_while(|c| c.distance_m * c.distance_m <= max_distance_2)
            .count();
        let candidates = &candidates[..kept];
        let n = candidates.len().min(64);
        cx.stats.candidates_per_probe[n] += 1;
        if candidates.is_empty() {
            if !self.lattice.is_empty() {
                cx.stats.breaks_off_road += 1;
                self.end_trace(cx.stats, out);
            }
            cx.stats.unmatched_no_candidate += 1;
            out.push(Committed::Unmatched {
                probe,
                reason: UnmatchedReason::NoCandidate,
            });
            return;
        }
        let mut nodes: Vec<Node> = candidates
            .iter()
            .map(|c| Node {
                candidate: *c,
                score: f64::NEG_INFINITY,
                back: NO_BACK,
                route_m: f64::NAN,
            })
            .collect();

        let mut broke = None;
        if let Some(prev) = self.lattice.last() {
            let dt_ms = probe.ts_ms.saturating_sub(prev.probe.ts_ms);
            let great_circle_m = haversine_m(prev.probe.lat, prev.probe.lon, probe.lat, probe.lon);
            if dt_ms > config.trace_gap_ms() {
                broke = Some(BreakReason::TimeGap);
            } else if great_circle_m > config.max_gap_m {
                broke = Some(BreakReason::DistanceGap);
            } else {
                let speed_max_m = config.max_route_m(dt_ms, great_circle_m);
                let toward = [probe.lat, probe.lon];
                let mut linked = link(
                    cx,
                    &prev.nodes,
                    &mut nodes,
                    toward,
                    speed_max_m,
                    great_circle_m,
                );
                // No route is plausible at `max_speed_mps`. When a route about as long as
                // the straight line exists, the clock is off (fixes logged late or lost in
                // between) rather than the car flying: bridge with it instead of cutting
                // the path. A long detour (a loop round the block from a jump) still breaks.
                let direct_max_m = config.max_direct_route_m(great_circle_m);
                if !linked && direct_max_m > speed_max_m {
                    linked = link(
                        cx,
                        &prev.nodes,
                        &mut nodes,
                        toward,
                        direct_max_m,
                        great_circle_m,
                    );
                    cx.stats.transitions_speed_relaxed += u64::from(linked);
                }
                if !linked {
                    broke = Some(BreakReason::NoTransition);
                }
            }
        }
        if let Some(reason) = broke {
            match reason {
                BreakReason::TimeGap => cx.stats.breaks_time_gap += 1,
                BreakReason::DistanceGap => cx.stats.breaks_distance_gap += 1,
                BreakReason::NoTransition => cx.stats.breaks_no_transition += 1,
                BreakReason::OffRoad => cx.stats.breaks_off_road += 1,
            }
            self.end_trace(cx.stats, out);
        }
        if self.lattice.is_empty() {
            for node in &mut nodes {
                node.score = emission_log_prob(node.candidate.distance_m, config.sigma_m);
                node.back = NO_BACK;
                node.route_m = f64::NAN;
            }
        }
        let max_score = nodes
            .iter()
            .map(|n| n.score)
            .fold(f64::NEG_INFINITY, f64::max);
        if max_score.is_finite() {
            for node in &mut nodes {
                node.score -= max_score;
            }
        }
        self.lattice.push(Column { probe, nodes });

        let points = &mut cx.scratch.points;
        points.clear();
        let converged = self.lattice.commit_converged(points);
        cx.stats.commits_converged += converged as u64;
        let forced = self
            .lattice
            .commit_forced(config.lag_points, config.lag_ms, points);
        cx.stats.commits_forced += forced as u64;
        out.extend(points.drain(..).map(Committed::Point));
    }

    /// Ends the current trace: emits every pending point along the best path, then
    /// `TraceEnd`. Nothing when no trace is open.
    pub fn flush(&mut self, stats: &mut MatchStats, out: &mut Vec<Committed>) {
        self.end_trace(stats, out);
    }

    fn end_trace(&mut self, stats: &mut MatchStats, out: &mut Vec<Committed>) {
        if self.lattice.is_empty() {
            return;
        }
        let mut points = Vec::new();
        let n = self.lattice.commit_all(&mut points);
        stats.commits_flushed += n as u64;
        out.extend(points.into_iter().map(Committed::Point));
        out.push(Committed::TraceEnd);
    }
}

/// Scores every transition from the live nodes of the previous column to `nodes` whose
/// route is at most `max_m`, keeping the best predecessor of each node (ties: the lowest
/// index). False when none is. `toward` is the new probe (lat, lon), which the route
/// searches aim at.
///
/// Predecessors are taken best first, and a route is only asked for where it could still
/// win: from predecessor score s to a node with emission e and best score so far S, a
/// route r scores s + e − |r − g|/β, which reaches S only if r ≤ g + β (s + e − S). So
/// each node gets that bound (with a slack far above rounding), and a predecessor that
/// can win nowhere is not searched from. The choice is exactly the one that asking every
/// route gives; only the searches shrink.
fn link(
    cx: &mut MatchContext<'_>,
    prev: &[Node],
    nodes: &mut [Node],
    toward: [f64; 2],
    max_m: f64,
    great_circle_m: f64,
) -> bool {
    let config = cx.config;
    let Scratch {
        targets,
        routes,
        order,
        emissions,
        bounds_m,
        ..
    } = &mut *cx.scratch;
    targets.clear();
    targets.extend(nodes.iter().map(|n| Position {
        segment: n.candidate.segment,
        offset_m: n.candidate.offset_m,
    }));
    emissions.clear();
    emissions.extend(
        nodes
            .iter()
            .map(|n| emission_log_prob(n.candidate.distance_m, config.sigma_m)),
    );
    order.clear();
    order.extend((0..prev.len() as u32).filter(|&i| prev[i as usize].is_alive()));
    // Keys are unique (index last), so the unstable sort is deterministic.
    order.sort_unstable_by(|&a, &b| {
        prev[b as usize]
            .score
            .total_cmp(&prev[a as usize].score)
            .then(a.cmp(&b))
    });
    let mut any = false;
    for &i in order.iter() {
        let p = &prev[i as usize];
        bounds_m.clear();
        bounds_m.extend(nodes.iter().zip(emissions.iter()).map(|(node, &em)| {
            if !node.score.is_finite() {
                return max_m;
            }
            // Exact in sign: when negative, no route (|r − g| ≥ 0) can reach S.
            let slack = p.score + em - node.score;
            if slack < 0.0 {
                return -1.0;
            }
            let bound_m = great_circle_m + config.beta_m * slack;
            max_m.min(bound_m + 1e-6 + 1e-9 * bound_m)
        }));
        if bounds_m.iter().all(|&b| b < 0.0) {
            continue;
        }
        let from = Position {
            segment: p.candidate.segment,
            offset_m: p.candidate.offset_m,
        };
        cx.router.distances_within(
            cx.graph,
            from,
            targets,
            toward,
            bounds_m,
            config.standstill_m(),
            routes,
        );
        for ((node, route), &em) in nodes.iter_mut().zip(routes.iter()).zip(emissions.iter()) {
            let Some(route_m) = *route else { continue };
            let score = p.score + transition_log_prob(route_m, great_circle_m, config.beta_m) + em;
            if score > node.score || (score == node.score && i < node.back) {
                node.score = score;
                node.back = i;
                node.route_m = route_m;
                any = true;
            }
        }
    }
    any
}

/// An unmatched probe and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmatched {
    pub probe: Probe,
    pub reason: UnmatchedReason,
}

/// What a batch of probes produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchOutput {
    pub matched: Vec<MatchedPoint>,
    pub unmatched: Vec<Unmatched>,
    pub observations: Vec<SegmentObservation>,
}

impl MatchOutput {
    pub fn clear(&mut self) {
        self.matched.clear();
        self.unmatched.clear();
        self.observations.clear();
    }
}

#[derive(Debug)]
struct VehicleState {
    /// The vehicle's id, shared with its key in `Matcher::vehicles` and its idle-queue
    /// entries.
    id: Arc<str>,
    matcher: VehicleMatcher,
    builder: ObservationBuilder,
    /// The previous committed point of the current trace and its event time.
    last: Option<(Position, i64)>,
    /// Where a re-match must start to rebuild the open observation.
    context: TraceContext,
    last_seen_ms: i64,
    /// The input lane (Kafka partition, Kinesis shard) its newest probe came on: it is idle
    /// against that lane's event time.
    lane: u32,
}

/// How far before the point a segment's entry was interpolated from a re-match must start
/// for its decisions there to match the first run's. One point is not enough: at 1 s
/// sampling the point before is a few metres back, within the GPS noise, and the replayed
/// trace then puts the segment boundary a point earlier or later about one crash in ten
/// (`matching_restart_from_oldest_held_rebuilds_every_unemitted_observation`).
const CONTEXT_M: f64 = 50.0;
/// Points are kept at least this far apart, at most [`CONTEXT_POINTS`] of them: a vehicle
/// standing at a light for minutes keeps the points from before it stopped.
const CONTEXT_STEP_M: f64 = 20.0;
const CONTEXT_POINTS: usize = 4;

/// Where a re-match must start to rebuild a vehicle's open observation, and a few committed
/// points of the current trace, thinned by distance, to choose it from when a segment is
/// entered. Bounded: at most [`CONTEXT_POINTS`] points of 24 bytes.
#[derive(Debug, Clone, Default)]
struct TraceContext {
    kept: std::collections::VecDeque<(i64, f64, f64)>,
    /// The newest committed point, kept or not.
    newest: Option<(i64, f64, f64)>,
    /// `None` when no observation is open.
    open_held_ms: Option<i64>,
}

impl TraceContext {
    /// A trace starts at this point, and its first observation with it.
    fn restart(&mut self, ts_ms: i64, lat: f64, lon: f64) {
        self.kept.clear();
        self.kept.push_back((ts_ms, lat, lon));
        self.newest = Some((ts_ms, lat, lon));
        self.open_held_ms = Some(ts_ms);
    }

    fn push(&mut self, ts_ms: i64, lat: f64, lon: f64) {
        let far = self
            .kept
            .back()
            .is_none_or(|&(_, a, b)| haversine_m(a, b, lat, lon) >= CONTEXT_STEP_M);
        if far {
            self.kept.push_back((ts_ms, lat, lon));
            if self.kept.len() > CONTEXT_POINTS {
                self.kept.pop_front();
            }
        }
        self.newest = Some((ts_ms, lat, lon));
    }

    /// For a segment entered after the newest point: the newest kept point at least
    /// [`CONTEXT_M`] from it, else the oldest kept (the trace's start, or as far back as
    /// is kept).
    fn rebuild_from_ms(&self) -> i64 {
        let Some((newest_ms, lat, lon)) = self.newest else {
            return i64::MIN;
        };
        self.kept
            .iter()
            .rev()
            .find(|&&(_, a, b)| haversine_m(a, b, lat, lon) >= CONTEXT_M)
            .or(self.kept.front())
            .map_or(newest_ms, |&(ts_ms, _, _)| ts_ms)
    }
}

/// Many vehicles' matchers, sharing one candidate buffer and one router (with its cache).
/// Not `Sync` by design: the stage shards vehicles over workers, one `Matcher` each.
///
/// Idle eviction is per input lane: a vehicle is idle when the event time of the lane it
/// arrives on has moved `vehicle_ttl_ms` past its newest probe, so a lane read ahead of the
/// others (a partition with a backlog, a producer sending in bursts) does not evict the
/// vehicles of the lanes behind it. It costs O(expired · log vehicles), not a scan of every
/// vehicle: `idle_queues` holds a min-heap of (last seen, vehicle) per lane, with at least
/// one entry at or before each held vehicle's `last_seen_ms` in its lane's heap. An entry is
/// pushed when a vehicle appears or changes lane (and in the rare case that its
/// `last_seen_ms` moves back); an entry that comes due for a vehicle seen since is pushed
/// back with its current time, so a vehicle seen without pause costs one heap operation per
/// TTL, and none per probe. Entries of a vehicle that left the lane are dropped when due.
pub struct Matcher {
    core: Core,
    vehicles: HashMap<Arc<str>, VehicleState>,
    idle_queues: BTreeMap<u32, IdleQueue>,
    /// Sum of `VehicleMatcher::pending` over `vehicles`, kept up to date so that reading it
    /// costs nothing per batch.
    pending: usize,
}

/// Everything of a [`Matcher`] but its vehicles, so that a vehicle's state can be borrowed
/// from the map while the rest is in use.
struct Core {
    graph: Arc<RoadGraph>,
    config: MatchConfig,
    search: CandidateSearch,
    router: Router,
    stats: MatchStats,
    events: Vec<Committed>,
    path: PathBuffers,
    scratch: Scratch,
}

impl Matcher {
    /// A matcher for `graph` (builds its spatial index now if not built yet).
    pub fn new(graph: Arc<RoadGraph>, config: MatchConfig) -> Self {
        graph.build_spatial_index();
        let router = Router::new(&graph, config.route_cache_entries)
            .with_u_turn_penalty_m(config.u_turn_penalty_m);
        Self {
            core: Core {
                graph,
                config,
                search: CandidateSearch::new(),
                router,
                stats: MatchStats::default(),
                events: Vec::new(),
                path: PathBuffers::default(),
                scratch: Scratch::default(),
            },
            vehicles: HashMap::new(),
            idle_queues: BTreeMap::new(),
            pending: 0,
        }
    }

    pub fn config(&self) -> &MatchConfig {
        &self.core.config
    }

    pub fn stats(&self) -> &MatchStats {
        &self.core.stats
    }

    pub fn route_stats(&self) -> RouteStats {
        self.core.router.stats()
    }

    /// Heap bytes of the router's search state (see [`Router::search_bytes`]).
    pub fn route_search_bytes(&self) -> usize {
        self.core.router.search_bytes()
    }

    /// Vehicles currently held.
    pub fn active_vehicles(&self) -> usize {
        self.vehicles.len()
    }

    /// The event time from which re-matching a vehicle's probes rebuilds everything it has
    /// not emitted yet, over all vehicles; `None` when no vehicle holds anything. Per
    /// vehicle: its oldest undecided probe, where the last decided point (it anchors the
    /// next transition) is decided again from, and where its open observation is rebuilt
    /// from (see [`TraceContext`]: some way before the point its entry was interpolated
    /// from, or before the anchor). An input may be
    /// acknowledged (its offset committed) only once it is older than this. A scan of every
    /// vehicle: called only when acknowledgements are tracked (a replayable source
    /// upstream).
    pub fn oldest_held_ms(&self) -> Option<i64> {
        self.vehicles
            .values()
            .filter_map(|v| {
                // The anchor too must be decided again as it was: from some way before it,
                // not as the first point of a trace (found at 30 s sampling in queues: a
                // traversal between the anchor and the next point came out 15–200 ms apart).
                let anchor = v
                    .last
                    .map(|(_, ts_ms)| ts_ms.min(v.context.rebuild_from_ms()));
                v.matcher
                    .lattice
                    .oldest_ts_ms()
                    .into_iter()
                    .chain(anchor)
                    .chain(v.context.open_held_ms)
                    .min()
            })
            .min()
    }

    /// Probes held undecided over all vehicles (kept as a running sum: O(1)).
    pub fn pending_probes(&self) -> usize {
        self.pending
    }

    /// Matches one probe of lane 0; appends what got decided to `out`.
    pub fn push(&mut self, probe: Probe, out: &mut MatchOutput) {
        self.push_in_lane(0, probe, out);
    }

    /// Matches one probe that arrived on input lane `lane`; appends what got decided to
    /// `out`.
    pub fn push_in_lane(&mut self, lane: u32, probe: Probe, out: &mut MatchOutput) {
        let state = match self.vehicles.get_mut(probe.vehicle_id.as_str()) {
            Some(state) => state,
            None => {
                let id: Arc<str> = Arc::from(probe.vehicle_id.as_str());
                let queue = self.idle_queues.entry(lane).or_default();
                queue.push(Reverse((probe.ts_ms, id.clone())));
                self.vehicles.entry(id.clone()).or_insert(VehicleState {
                    id,
                    matcher: VehicleMatcher::new(),
                    builder: ObservationBuilder::with_timing(
                        self.core.config.cut_interval_ms,
                        self.core.config.cut_min_part_ms,
                        self.core.config.junction_delay_ms as f64,
                    ),
                    last: None,
                    context: TraceContext::default(),
                    last_seen_ms: probe.ts_ms,
                    lane,
                })
            }
        };
        // Until the vehicle has an accepted probe, the newest probe defines when it was seen.
        let seen_ms = if state.matcher.last_ts_ms().is_none() {
            probe.ts_ms
        } else {
            state.last_seen_ms.max(probe.ts_ms)
        };
        if seen_ms < state.last_seen_ms || state.lane != lane {
            state.lane = lane;
            let queue = self.idle_queues.entry(lane).or_default();
            queue.push(Reverse((seen_ms, state.id.clone())));
        }
        state.last_seen_ms = seen_ms;
        let pending_before = state.matcher.pending();
        self.core.push(state, probe, out);
        self.pending = self.pending - pending_before + state.matcher.pending();
    }

    /// Matches probes of lane 0 in order.
    pub fn push_all(&mut self, probes: impl IntoIterator<Item = Probe>, out: &mut MatchOutput) {
        self.push_all_in_lane(0, probes, out);
    }

    /// Matches probes of input lane `lane` in order.
    pub fn push_all_in_lane(
        &mut self,
        lane: u32,
        probes: impl IntoIterator<Item = Probe>,
        out: &mut MatchOutput,
    ) {
        for probe in probes {
            self.push_in_lane(lane, probe, out);
        }
    }

    /// Flushes and drops every vehicle, of any lane, whose newest probe is older than
    /// `watermark_ms − vehicle_ttl_ms`, in vehicle id order. Returns how many. Costs
    /// O(log n) per vehicle that expired or came due in the queue, not O(vehicles).
    pub fn evict_idle(&mut self, watermark_ms: i64, out: &mut MatchOutput) -> usize {
        let cutoff_ms = watermark_ms.saturating_sub(self.core.config.vehicle_ttl_ms);
        let lanes: Vec<u32> = self.idle_queues.keys().copied().collect();
        let mut idle: Vec<Arc<str>> = Vec::new();
        for lane in lanes {
            self.collect_idle(lane, cutoff_ms, &mut idle);
        }
        self.evict_sorted(idle, out)
    }

    /// [`Matcher::evict_idle`] for the vehicles of one lane, against that lane's event time.
    pub fn evict_idle_in_lane(
        &mut self,
        lane: u32,
        watermark_ms: i64,
        out: &mut MatchOutput,
    ) -> usize {
        let cutoff_ms = watermark_ms.saturating_sub(self.core.config.vehicle_ttl_ms);
        let mut idle: Vec<Arc<str>> = Vec::new();
        self.collect_idle(lane, cutoff_ms, &mut idle);
        self.evict_sorted(idle, out)
    }

    /// Pops `lane`'s due entries; adds the vehicles of that lane unseen since `cutoff_ms`.
    fn collect_idle(&mut self, lane: u32, cutoff_ms: i64, idle: &mut Vec<Arc<str>>) {
        let Some(queue) = self.idle_queues.get_mut(&lane) else {
            return;
        };
        while queue
            .peek()
            .is_some_and(|Reverse((seen_ms, _))| *seen_ms < cutoff_ms)
        {
            let Some(Reverse((_, id))) = queue.pop() else {
                break;
            };
            match self.vehicles.get(&id) {
                // Left already (evicted, flushed and gone, or moved to another lane, whose
                // queue has an entry for it): a stale entry.
                None => {}
                Some(v) if v.lane != lane => {}
                Some(v) if v.last_seen_ms < cutoff_ms => idle.push(id),
                Some(v) => queue.push(Reverse((v.last_seen_ms, id))),
            }
        }
    }

    fn evict_sorted(&mut self, mut idle: Vec<Arc<str>>, out: &mut MatchOutput) -> usize {
        idle.sort_unstable();
        idle.dedup();
        self.evict(&idle, out)
    }

    /// Drops the vehicles whose newest probe came on `lane`, emitting nothing: the lane is
    /// read elsewhere now (a rebalance), and its new reader re-matches them from the
    /// committed offset, which [`Matcher::oldest_held_ms`] held back for them. Returns how
    /// many. A scan of every vehicle (rebalances are rare).
    pub fn drop_lane(&mut self, lane: u32) -> usize {
        let before = self.vehicles.len();
        let pending = &mut self.pending;
        self.vehicles.retain(|_, v| {
            let keep = v.lane != lane;
            if !keep {
                *pending -= v.matcher.pending();
            }
            keep
        });
        self.idle_queues.remove(&lane);
        before - self.vehicles.len()
    }

    /// Flushes and drops every vehicle (end of input), in vehicle id order.
    pub fn flush_all(&mut self, out: &mut MatchOutput) -> usize {
        let mut all: Vec<Arc<str>> = self.vehicles.keys().cloned().collect();
        all.sort_unstable();
        let n = self.evict(&all, out);
        self.idle_queues.clear();
        n
    }

    fn evict(&mut self, ids: &[Arc<str>], out: &mut MatchOutput) -> usize {
        for id in ids {
            if let Some(mut state) = self.vehicles.remove(id) {
                self.pending -= state.matcher.pending();
                self.core.flush(&mut state, out);
            }
        }
        ids.len()
    }
}

impl Core {
    fn push(&mut self, state: &mut VehicleState, probe: Probe, out: &mut MatchOutput) {
        let mut cx = MatchContext {
            graph: &self.graph,
            config: &self.config,
            search: &mut self.search,
            router: &mut self.router,
            stats: &mut self.stats,
            scratch: &mut self.scratch,
        };
        state.matcher.push(&mut cx, probe, &mut self.events);
        self.drain_events(state, out);
    }

    fn flush(&mut self, state: &mut VehicleState, out: &mut MatchOutput) {
        state.matcher.flush(&mut self.stats, &mut self.events);
        self.drain_events(state, out);
        self.stats.vehicles_evicted += 1;
    }

    fn drain_events(&mut self, state: &mut VehicleState, out: &mut MatchOutput) {
        let graph: &RoadGraph = &self.graph;
        let vehicle_id: &str = &state.id;
        let observations_before = out.observations.len();
        for event in self.events.drain(..) {
            match event {
                Committed::Unmatched { probe, reason } => {
                    out.unmatched.push(Unmatched { probe, reason });
                }
                Committed::TraceEnd => {
                    state.builder.end(graph, vehicle_id, &mut out.observations);
                    state.last = None;
                    state.context.open_held_ms = None;
                }
                Committed::Point(point) => {
                    let here = Position {
                        segment: point.candidate.segment,
                        offset_m: point.candidate.offset_m,
                    };
                    let ts_ms = point.probe.ts_ms;
                    let (lat, lon) = (point.probe.lat, point.probe.lon);
                    match (state.last, point.route_m) {
                        (Some((from, from_ms)), Some(route_m)) => {
                            let ok = pieces_between(
                                graph,
                                &mut self.router,
                                from,
                                here,
                                route_m,
                                self.config.standstill_m(),
                                &mut self.path,
                            );
                            if ok {
                                let crossing_flags =
                                    if ts_ms.saturating_sub(from_ms) > self.config.gap_flag_ms {
                                        observation_flags::GAP
                                    } else {
                                        0
                                    };
                                let held_ms = state.context.rebuild_from_ms();
                                let entered = state.builder.advance(
                                    graph,
                                    vehicle_id,
                                    &self.path.pieces,
                                    ts_ms,
                                    crossing_flags,
                                    &mut out.observations,
                                );
                                if entered {
                                    state.context.open_held_ms = Some(held_ms);
                                }
                                state.context.push(ts_ms, lat, lon);
                            } else {
                                self.stats.path_failures += 1;
                                state.builder.end(graph, vehicle_id, &mut out.observations);
                                state.builder.start(here.segment, here.offset_m, ts_ms);
                                state.context.restart(ts_ms, lat, lon);
                            }
                        }
                        _ => {
                            state.builder.end(graph, vehicle_id, &mut out.observations);
                            state.builder.start(here.segment, here.offset_m, ts_ms);
                            state.context.restart(ts_ms, lat, lon);
                        }
                    }
                    state.last = Some((here, ts_ms));
                    self.stats.matched += 1;
                    let c = point.candidate;
                    out.matched.push(MatchedPoint {
                        probe: point.probe,
                        segment_id: c.segment_id,
                        offset_m: c.offset_m,
                        snapped_lat: c.lat,
                        snapped_lon: c.lon,
                        distance_m: c.distance_m,
                    });
                }
            }
        }
        self.stats.observations += (out.observations.len() - observations_before) as u64;
        self.stats.observations_degenerate += std::mem::take(&mut state.builder.degenerate);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::geo::LocalProjection;
    use crate::graph::osm_writer::synthetic_grid;
    use crate::graph::{GraphError, ImportConfig};

    /// `link` as it was before routes were bounded by score: every live predecessor in
    /// index order, every route up to `max_m`, the first of equal scores kept.
    fn link_asking_every_route(
        cx: &mut MatchContext<'_>,
        prev: &[Node],
        nodes: &mut [Node],
        toward: [f64; 2],
        max_m: f64,
        great_circle_m: f64,
    ) -> bool {
        let config = cx.config;
        let targets: Vec<Position> = nodes
            .iter()
            .map(|n| Position {
                segment: n.candidate.segment,
                offset_m: n.candidate.offset_m,
            })
            .collect();
        let mut routes = Vec::new();
        let mut any = false;
        for (i, p) in prev.iter().enumerate() {
            if !p.is_alive() {
                continue;
            }
            let from = Position {
                segment: p.candidate.segment,
                offset_m: p.candidate.offset_m,
            };
            cx.router.distances(
                cx.graph,
                from,
                &targets,
                toward,
                max_m,
                config.standstill_m(),
                &mut routes,
            );
            for (node, route) in nodes.iter_mut().zip(routes.iter()) {
                let Some(route_m) = *route else { continue };
                let score = p.score
                    + transition_log_prob(route_m, great_circle_m, config.beta_m)
                    + emission_log_prob(node.candidate.distance_m, config.sigma_m);
                if score > node.score {
                    node.score = score;
                    node.back = i as u32;
                    node.route_m = route_m;
                    any = true;
                }
            }
        }
        any
    }

    fn fresh(candidates: &[crate::graph::Candidate]) -> Vec<Node> {
        candidates
            .iter()
            .map(|c| Node {
                candidate: *c,
                score: f64::NEG_INFINITY,
                back: NO_BACK,
                route_m: f64::NAN,
            })
            .collect()
    }

    fn outcome(nodes: &[Node]) -> Vec<(u64, u32, u64)> {
        nodes
            .iter()
            .map(|n| (n.score.to_bits(), n.back, n.route_m.to_bits()))
            .collect()
    }

    #[test]
    fn link_bounded_by_score_chooses_what_asking_every_route_chooses() -> Result<(), GraphError> {
        let graph = synthetic_grid(8, 8, 120.0, 47.0, 9.0).build_graph(&ImportConfig::default())?;
        let projection = LocalProjection::new(47.0, 9.0);
        let config = MatchConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        let mut search = CandidateSearch::new();
        let mut stats = MatchStats::default();
        let (mut scratch_a, mut scratch_b) = (Scratch::default(), Scratch::default());
        let mut router_a =
            Router::new(&graph, 1_000).with_u_turn_penalty_m(config.u_turn_penalty_m);
        let mut router_b =
            Router::new(&graph, 1_000).with_u_turn_penalty_m(config.u_turn_penalty_m);
        let mut linked = 0;
        for _ in 0..400 {
            let mut point = || {
                projection.unproject([rng.random_range(0.0..840.0), rng.random_range(0.0..840.0)])
            };
            let (p1, p2) = (point(), point());
            let dt_ms = rng.random_range(1..=60) * 1_000;
            let great_circle_m = crate::geo::haversine_m(p1.0, p1.1, p2.0, p2.1);
            let max_m = config.max_route_m(dt_ms, great_circle_m);
            let mut prev = fresh(search.find(&graph, p1.0, p1.1, 60.0, config.k));
            // Few distinct scores, so that ties between predecessors are common.
            for n in &mut prev {
                n.score = [0.0, 0.0, -1.0, -2.5, -30.0, f64::NEG_INFINITY][rng.random_range(0..6)];
            }
            let next = search.find(&graph, p2.0, p2.1, 60.0, config.k).to_vec();
            let (mut a, mut b) = (fresh(&next), fresh(&next));
            let toward = [p2.0, p2.1];
            let mut cx = MatchContext {
                graph: &graph,
                config: &config,
                search: &mut search,
                router: &mut router_a,
                stats: &mut stats,
                scratch: &mut scratch_a,
            };
            let any_a = link(&mut cx, &prev, &mut a, toward, max_m, great_circle_m);
            cx.router = &mut router_b;
            cx.scratch = &mut scratch_b;
            let any_b =
                link_asking_every_route(&mut cx, &prev, &mut b, toward, max_m, great_circle_m);
            assert_eq!(any_a, any_b);
            assert_eq!(outcome(&a), outcome(&b), "{p1:?} → {p2:?} in {dt_ms} ms");
            linked += usize::from(any_a);
        }
        assert!(linked > 100, "only {linked} steps linked");
        assert!(router_a.stats().searches < router_b.stats().searches);
        Ok(())
    }
}
