//! Route distances and paths on a small grid: same segment, via successors, one-way streets,
//! U-turns, standing still, and the cache answering exactly what a search would.

use pipeline::graph::osm_writer::{grid_node_id, synthetic_grid};
use pipeline::graph::{ImportConfig, RoadGraph};
use pipeline::matching::path::{pieces_between, PathBuffers};
use pipeline::matching::{Position, Router};

const COLS: usize = 4;

fn grid() -> RoadGraph {
    synthetic_grid(4, COLS, 100.0, 47.0, 9.0)
        .build_graph(&ImportConfig::default())
        .unwrap_or_else(|e| panic!("grid graph: {e}"))
}

/// The segment from grid cell `a` to grid cell `b` (row, col), if the graph has it.
fn seg(graph: &RoadGraph, a: (usize, usize), b: (usize, usize)) -> Option<u32> {
    let (from, to) = (grid_node_id(COLS, a.0, a.1), grid_node_id(COLS, b.0, b.1));
    graph.indices().find(|&i| {
        let s = graph.segment(i);
        s.from_node_id == from && s.to_node_id == to
    })
}

fn must(graph: &RoadGraph, a: (usize, usize), b: (usize, usize)) -> u32 {
    seg(graph, a, b).unwrap_or_else(|| panic!("no segment {a:?} -> {b:?}"))
}

fn at(segment: u32, offset_m: f64) -> Position {
    Position { segment, offset_m }
}

fn route(
    router: &mut Router,
    graph: &RoadGraph,
    from: Position,
    to: Position,
    max_m: f64,
) -> Option<f64> {
    let mut out = Vec::new();
    // Aimed at the target's segment start; any point gives the same distances.
    let toward = graph.geometry(to.segment)[0];
    router.distances(graph, from, &[to], toward, max_m, 10.0, &mut out);
    out[0]
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn matching_route_same_segment_forward() {
    let graph = grid();
    let mut router = Router::new(&graph, 100);
    let a = must(&graph, (0, 0), (0, 1));
    assert!(close(
        route(&mut router, &graph, at(a, 10.0), at(a, 60.0), 1000.0),
        50.0
    ));
    // Too far for the bound.
    assert_eq!(
        route(&mut router, &graph, at(a, 10.0), at(a, 60.0), 40.0),
        None
    );
}

#[test]
fn matching_route_via_successors() {
    let graph = grid();
    let mut router = Router::new(&graph, 100);
    let a = must(&graph, (0, 0), (0, 1));
    let b = must(&graph, (0, 1), (0, 2));
    let c = must(&graph, (0, 2), (0, 3));
    let (la, lb) = (graph.segment(a).length_m, graph.segment(b).length_m);
    assert!(close(
        route(&mut router, &graph, at(a, 90.0), at(b, 20.0), 1000.0),
        la - 90.0 + 20.0
    ));
    assert!(close(
        route(&mut router, &graph, at(a, 90.0), at(c, 20.0), 1000.0),
        la - 90.0 + lb + 20.0
    ));
    let mut buffers = PathBuffers::default();
    let route_m = la - 90.0 + lb + 20.0;
    assert!(pieces_between(
        &graph,
        &mut router,
        at(a, 90.0),
        at(c, 20.0),
        route_m,
        10.0,
        &mut buffers
    ));
    let pieces = &buffers.pieces;
    let segments: Vec<u32> = pieces.iter().map(|p| p.segment).collect();
    assert_eq!(segments, vec![a, b, c]);
    let total: f64 = pieces.iter().map(|p| p.length_m()).sum();
    assert!((total - route_m).abs() < 1e-6);
}

#[test]
fn matching_route_respects_oneway() {
    let graph = grid();
    let mut router = Router::new(&graph, 100);
    // Row 1 is one-way eastbound: no westbound segment, no U-turn.
    let east = must(&graph, (1, 1), (1, 2));
    assert_eq!(seg(&graph, (1, 2), (1, 1)), None);
    let before = must(&graph, (1, 0), (1, 1));
    // Going back 20 m against the one-way needs a detour round a block.
    assert_eq!(
        route(&mut router, &graph, at(east, 10.0), at(before, 90.0), 150.0),
        None
    );
    let detour = route(
        &mut router,
        &graph,
        at(east, 10.0),
        at(before, 90.0),
        5000.0,
    );
    assert!(detour.is_some_and(|d| d > 300.0), "{detour:?}");
}

#[test]
fn matching_route_u_turn_onto_reverse_twin() {
    let graph = grid();
    let mut router = Router::new(&graph, 100);
    let a = must(&graph, (0, 0), (0, 1));
    let twin = must(&graph, (0, 1), (0, 0));
    let la = graph.segment(a).length_m;
    assert!(graph.successors(a).contains(&twin));
    assert!(close(
        route(&mut router, &graph, at(a, 80.0), at(twin, 30.0), 1000.0),
        la - 80.0 + 30.0
    ));
}

#[test]
fn matching_route_standing_still_and_loop_back() {
    let graph = grid();
    let mut router = Router::new(&graph, 100);
    let a = must(&graph, (0, 0), (0, 1));
    let la = graph.segment(a).length_m;
    // 5 m back within the 10 m standstill tolerance: no movement.
    assert!(close(
        route(&mut router, &graph, at(a, 50.0), at(a, 45.0), 100.0),
        0.0
    ));
    // 30 m back: to the end, U-turn, back along the twin, U-turn, 20 m on.
    let twin_len = graph.segment(must(&graph, (0, 1), (0, 0))).length_m;
    assert!(close(
        route(&mut router, &graph, at(a, 50.0), at(a, 20.0), 1000.0),
        la - 50.0 + twin_len + 20.0
    ));
}

#[test]
fn matching_route_cache_answers_like_a_search() {
    let graph = grid();
    let mut cached = Router::new(&graph, 1000);
    let a = must(&graph, (0, 0), (0, 1));
    let far = must(&graph, (3, 3), (3, 2));
    let first = route(&mut cached, &graph, at(a, 10.0), at(far, 5.0), 2000.0);
    let searches = cached.stats().searches;
    let again = route(&mut cached, &graph, at(a, 10.0), at(far, 5.0), 2000.0);
    assert_eq!(first, again);
    assert_eq!(cached.stats().searches, searches);
    assert!(cached.stats().cache_hits >= 1);
    // A cached "farther than" is not reused for a larger bound.
    let mut fresh = Router::new(&graph, 0);
    assert_eq!(
        route(&mut cached, &graph, at(a, 10.0), at(far, 5.0), 100.0),
        None
    );
    assert_eq!(
        route(&mut cached, &graph, at(a, 10.0), at(far, 5.0), 3000.0),
        route(&mut fresh, &graph, at(a, 10.0), at(far, 5.0), 3000.0)
    );
    assert!(first.is_some());
}

#[test]
fn matching_route_u_turn_penalty_where_the_road_goes_on() {
    let graph = grid();
    let mut router = Router::new(&graph, 100).with_u_turn_penalty_m(40.0);
    let a = must(&graph, (0, 0), (0, 1));
    let twin = must(&graph, (0, 1), (0, 0));
    let la = graph.segment(a).length_m;
    assert!(graph.successors(a).len() > 1, "the road goes on at (0, 1)");
    assert!(close(
        route(&mut router, &graph, at(a, 80.0), at(twin, 30.0), 1000.0),
        la - 80.0 + 40.0 + 30.0
    ));
    // The bound counts the penalty.
    assert_eq!(
        route(&mut router, &graph, at(a, 80.0), at(twin, 30.0), 60.0),
        None
    );
    // The path's pieces keep their true lengths.
    let mut buffers = PathBuffers::default();
    assert!(pieces_between(
        &graph,
        &mut router,
        at(a, 80.0),
        at(twin, 30.0),
        la - 80.0 + 40.0 + 30.0,
        10.0,
        &mut buffers,
    ));
    let travelled_m: f64 = buffers.pieces.iter().map(|p| p.length_m()).sum();
    assert!((travelled_m - (la - 80.0 + 30.0)).abs() < 1e-6);
    // Turning ahead costs nothing extra: the search prefers it over a U-turn and back.
    let ahead = must(&graph, (0, 1), (0, 2));
    assert!(close(
        route(&mut router, &graph, at(a, 80.0), at(ahead, 10.0), 1000.0),
        la - 80.0 + 10.0
    ));
}

#[test]
fn matching_route_u_turn_at_a_dead_end_is_free() {
    use pipeline::graph::osm_writer::OsmBuilder;
    // A two-way street 1 -> 2 -> 3 ending at 3.
    let mut osm = OsmBuilder::new();
    osm.node(1, 47.0, 9.0)
        .node(2, 47.0, 9.001)
        .node(3, 47.0, 9.002)
        .way(10, &[1, 2], &[("highway", "residential")])
        .way(11, &[2, 3], &[("highway", "residential")]);
    let graph = osm
        .build_graph(&ImportConfig::default())
        .unwrap_or_else(|e| panic!("graph: {e}"));
    let find = |from: i64, to: i64| {
        graph
            .indices()
            .find(|&i| graph.segment(i).from_node_id == from && graph.segment(i).to_node_id == to)
            .unwrap_or_else(|| panic!("no segment {from} -> {to}"))
    };
    let (end, back) = (find(2, 3), find(3, 2));
    let len = graph.segment(end).length_m;
    let mut router = Router::new(&graph, 100).with_u_turn_penalty_m(40.0);
    assert_eq!(graph.successors(end), &[back]);
    assert!(close(
        route(
            &mut router,
            &graph,
            at(end, len - 10.0),
            at(back, 10.0),
            1000.0
        ),
        20.0
    ));
}
