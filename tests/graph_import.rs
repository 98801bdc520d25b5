//! OSM import rules: oneway, maxspeed, splitting at junctions, stable ids, XML = PBF.

// Wrapped in a module so that `cargo test graph` selects every test of this file.
mod graph_import {
    use std::collections::BTreeMap;

    use pipeline::geo::haversine_m;
    use pipeline::graph::osm_writer::{synthetic_grid, OsmBuilder};
    use pipeline::graph::{segment_id, GraphError, ImportConfig, RoadClass, RoadGraph, Segment};

    const LAT: f64 = 43.73;
    const LON: f64 = 7.42;
    /// About 100 m of latitude / longitude at LAT.
    const DLAT: f64 = 0.0009;
    const DLON: f64 = 0.00124;

    fn cfg() -> ImportConfig {
        ImportConfig::default()
    }

    /// Two nodes 100 m apart and one way over them with `tags`.
    fn single_way(tags: &[(&str, &str)]) -> RoadGraph {
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON).node(2, LAT, LON + DLON);
        osm.way(10, &[1, 2], tags);
        osm.build_graph(&cfg()).unwrap()
    }

    fn ends(s: &Segment) -> (i64, i64) {
        (s.from_node_id, s.to_node_id)
    }

    #[test]
    fn oneway_yes_gives_one_forward_segment() {
        let g = single_way(&[("highway", "residential"), ("oneway", "yes")]);
        assert_eq!(g.len(), 1);
        assert_eq!(ends(g.segment(0)), (1, 2));
        assert!(g.segment(0).is_oneway());
        assert_eq!(g.segment(0).segment_id, segment_id(10, 1, 2, 0));
    }

    #[test]
    fn oneway_minus_one_gives_one_backward_segment_with_reversed_geometry() {
        let g = single_way(&[("highway", "residential"), ("oneway", "-1")]);
        assert_eq!(g.len(), 1);
        assert_eq!(ends(g.segment(0)), (2, 1));
        let geom = g.geometry(0);
        assert!(
            (geom[0][1] - (LON + DLON)).abs() < 1e-9,
            "starts at node 2: {geom:?}"
        );
        assert!((geom[1][1] - LON).abs() < 1e-9);
    }

    #[test]
    fn two_way_gives_two_segments_that_succeed_each_other() {
        let g = single_way(&[("highway", "residential")]);
        assert_eq!(g.len(), 2);
        let mut pairs: Vec<_> = g.segments().iter().map(ends).collect();
        pairs.sort();
        assert_eq!(pairs, vec![(1, 2), (2, 1)]);
        assert!(g.segments().iter().all(|s| !s.is_oneway()));
        // The only way on from either end is the U-turn onto the twin.
        assert_eq!(g.successors(0), &[1]);
        assert_eq!(g.successors(1), &[0]);
    }

    #[test]
    fn motorway_is_implied_oneway_unless_tagged_otherwise() {
        assert_eq!(single_way(&[("highway", "motorway")]).len(), 1);
        assert_eq!(single_way(&[("highway", "motorway_link")]).len(), 1);
        assert_eq!(
            single_way(&[("highway", "motorway"), ("oneway", "no")]).len(),
            2
        );
    }

    #[test]
    fn roundabout_is_implied_oneway() {
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON)
            .node(2, LAT + DLAT, LON + DLON)
            .node(3, LAT, LON + 2.0 * DLON)
            .node(4, LAT - DLAT, LON + DLON)
            .node(5, LAT + 2.0 * DLAT, LON + DLON);
        osm.way(
            20,
            &[1, 4, 3, 2, 1],
            &[("highway", "primary"), ("junction", "roundabout")],
        );
        osm.way(21, &[2, 5], &[("highway", "residential")]);
        let g = osm.build_graph(&cfg()).unwrap();
        let ring: Vec<&Segment> = g.segments().iter().filter(|s| s.osm_way_id == 20).collect();
        // Split at node 2 (the entry road) and at node 1 (closing node): 1→…→2 and 2→1.
        assert_eq!(ring.len(), 2);
        assert!(ring.iter().all(|s| s.is_oneway()));
        let mut pairs: Vec<_> = ring.iter().map(|s| ends(s)).collect();
        pairs.sort();
        assert_eq!(pairs, vec![(1, 2), (2, 1)]);
        assert_eq!(
            g.segments().iter().filter(|s| s.osm_way_id == 21).count(),
            2
        );
    }

    #[test]
    fn closed_way_without_junctions_is_one_loop_segment_per_direction() {
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON)
            .node(2, LAT + DLAT, LON)
            .node(3, LAT, LON + DLON);
        osm.way(30, &[1, 2, 3, 1], &[("highway", "service")]);
        let g = osm.build_graph(&cfg()).unwrap();
        assert_eq!(g.len(), 2);
        assert!(g.segments().iter().all(|s| ends(s) == (1, 1)));
        let mut ids: Vec<u64> = g.segments().iter().map(|s| s.segment_id).collect();
        ids.sort();
        let mut expected = vec![segment_id(30, 1, 1, 0), segment_id(30, 1, 1, 1)];
        expected.sort();
        assert_eq!(ids, expected);
    }

    #[test]
    fn ways_are_split_at_junctions_with_right_lengths() {
        // Way 40 runs west→east over 1-6-2-3 (6 is a shape node), way 41 south→north over
        // 4-2-5, crossing at node 2.
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON)
            .node(6, LAT + 0.0001, LON + DLON / 2.0)
            .node(2, LAT, LON + DLON)
            .node(3, LAT, LON + 2.0 * DLON)
            .node(4, LAT - DLAT, LON + DLON)
            .node(5, LAT + DLAT, LON + DLON);
        osm.way(40, &[1, 6, 2, 3], &[("highway", "residential")]);
        osm.way(41, &[4, 2, 5], &[("highway", "tertiary")]);
        let g = osm.build_graph(&cfg()).unwrap();
        assert_eq!(g.len(), 8, "4 pieces × 2 directions");

        let by_ends: BTreeMap<(i64, i64), u32> =
            g.indices().map(|i| (ends(g.segment(i)), i)).collect();
        let i12 = by_ends[&(1, 2)];
        assert_eq!(g.geometry(i12).len(), 3, "shape node kept in geometry");
        let expected = haversine_m(LAT, LON, LAT + 0.0001, LON + DLON / 2.0)
            + haversine_m(LAT + 0.0001, LON + DLON / 2.0, LAT, LON + DLON);
        assert!((g.segment(i12).length_m - expected).abs() < 0.01);
        let i23 = by_ends[&(2, 3)];
        assert!(
            (g.segment(i23).length_m - haversine_m(LAT, LON + DLON, LAT, LON + 2.0 * DLON)).abs()
                < 0.01
        );
        assert_eq!(
            g.segment(by_ends[&(4, 2)]).road_class(),
            RoadClass::Tertiary
        );

        // From 1→2 one can go on to 2→3, 2→4, 2→5 and U-turn 2→1.
        let mut next: Vec<_> = g
            .successors(i12)
            .iter()
            .map(|&j| ends(g.segment(j)))
            .collect();
        next.sort();
        assert_eq!(next, vec![(2, 1), (2, 3), (2, 4), (2, 5)]);
        let info = g.info();
        assert_eq!(info.nodes, 5);
        assert_eq!(info.geometry_points, 2 * (3 + 2 + 2 + 2));
    }

    #[test]
    fn way_passing_the_same_node_pair_twice_gets_distinct_ids() {
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON)
            .node(2, LAT, LON + DLON)
            .node(3, LAT + DLAT, LON + DLON);
        osm.way(50, &[1, 2, 3, 1, 2], &[("highway", "residential")]);
        let g = osm.build_graph(&cfg()).unwrap();
        assert_eq!(g.len(), 6);
        for (from, to, occ) in [(1, 2, 0), (1, 2, 1), (2, 1, 0), (2, 1, 1)] {
            assert!(
                g.index_of(segment_id(50, from, to, occ)).is_some(),
                "{from}->{to} #{occ}"
            );
        }
    }

    #[test]
    fn segment_ids_survive_an_unrelated_way_added_elsewhere() {
        let before = synthetic_grid(4, 5, 120.0, LAT, LON);
        let g1 = before.build_graph(&cfg()).unwrap();
        let mut after = before.clone();
        after
            .node(777_001, LAT - 0.01, LON - 0.01)
            .node(777_002, LAT - 0.01, LON - 0.009);
        after.way(777, &[777_001, 777_002], &[("highway", "primary")]);
        let g2 = after.build_graph(&cfg()).unwrap();
        assert_eq!(g2.len(), g1.len() + 2);
        for s in g1.segments() {
            let j = g2.index_of(s.segment_id).expect("id kept");
            assert_eq!(g2.segment(j), s);
            // The documented formula; the roundabout's second piece runs over the same node
            // pair as the (closed) backward direction of its first, hence occurrence 1.
            let occurrence = u32::from(s.osm_way_id == 3000 && s.from_node_id == 900_004);
            assert_eq!(
                s.segment_id,
                segment_id(s.osm_way_id, s.from_node_id, s.to_node_id, occurrence)
            );
        }
        assert_ne!(g1.version(), g2.version());
    }

    #[test]
    fn maxspeed_tags_become_speed_limits() {
        let kmh = |tags: &[(&str, &str)]| single_way(tags).segment(0).speed_limit_kmh;
        assert_eq!(
            kmh(&[("highway", "primary"), ("maxspeed", "50 km/h")]),
            50.0
        );
        assert_eq!(kmh(&[("highway", "primary"), ("maxspeed", "80")]), 80.0);
        assert!((kmh(&[("highway", "primary"), ("maxspeed", "30 mph")]) - 48.28).abs() < 0.01);
        assert_eq!(kmh(&[("highway", "residential")]), 30.0);
        assert_eq!(
            kmh(&[("highway", "primary"), ("maxspeed", "signals")]),
            70.0
        );

        let g = single_way(&[
            ("highway", "secondary"),
            ("maxspeed:forward", "50"),
            ("maxspeed:backward", "30"),
        ]);
        for s in g.segments() {
            let expected = if s.from_node_id == 1 { 50.0 } else { 30.0 };
            assert_eq!(s.speed_limit_kmh, expected);
        }

        let mut config = cfg();
        config.default_speed_kmh.insert("residential".into(), 25.0);
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON).node(2, LAT, LON + DLON);
        osm.way(10, &[1, 2], &[("highway", "residential")]);
        assert_eq!(
            osm.build_graph(&config).unwrap().segment(0).speed_limit_kmh,
            25.0
        );
    }

    #[test]
    fn configured_classes_and_access_filter_ways() {
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON)
            .node(2, LAT, LON + DLON)
            .node(3, LAT, LON + 2.0 * DLON);
        osm.way(60, &[1, 2], &[("highway", "primary")]);
        osm.way(
            61,
            &[2, 3],
            &[("highway", "service"), ("access", "private")],
        );
        osm.way(62, &[1, 3], &[("highway", "footway")]);
        let g = osm.build_graph(&cfg()).unwrap();
        assert!(g.segments().iter().all(|s| s.osm_way_id == 60));

        let only_service = ImportConfig {
            highway_classes: vec!["service".into()],
            respect_access: false,
            ..ImportConfig::default()
        };
        let g = osm.build_graph(&only_service).unwrap();
        assert!(g.segments().iter().all(|s| s.osm_way_id == 61));
    }

    #[test]
    fn missing_node_skips_the_piece_and_counts_it() {
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON)
            .node(2, LAT, LON + DLON)
            .node(4, LAT + DLAT, LON + DLON);
        // Node 3 does not exist; node 2 is a junction, so only piece 2-3 is lost.
        osm.way(70, &[1, 2, 3], &[("highway", "residential")]);
        osm.way(71, &[2, 4], &[("highway", "residential")]);
        let g = osm.build_graph(&cfg()).unwrap();
        assert_eq!(g.len(), 4);
        let stats = g.import_stats().unwrap();
        assert_eq!(stats.pieces_missing_nodes, 1);
        assert_eq!(stats.pieces, 3);
    }

    #[test]
    fn bad_input_never_panics() {
        let mut osm = OsmBuilder::new();
        osm.node(1, f64::NAN, LON)
            .node(2, LAT, LON + DLON)
            .node(3, 95.0, 0.0)
            .node(5, LAT, LON + 2.0 * DLON);
        osm.way(80, &[1, 2], &[("highway", "residential")]);
        osm.way(81, &[2], &[("highway", "residential")]);
        osm.way(82, &[2, 2, 2], &[("highway", "residential")]);
        osm.way(83, &[], &[("highway", "residential")]);
        osm.way(
            84,
            &[2, 3],
            &[("highway", "residential"), ("maxspeed", "fast")],
        );
        osm.way(
            85,
            &[2, 5],
            &[("highway", "residential"), ("maxspeed", "1e40")],
        );
        let g = osm.build_graph(&cfg()).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.segment(0).speed_limit_kmh, 30.0);
        let stats = g.import_stats().unwrap();
        assert_eq!(stats.ways_degenerate, 3);
        assert_eq!(stats.pieces_missing_nodes, 2);
    }

    #[test]
    fn no_drivable_road_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paths.osm");
        let mut osm = OsmBuilder::new();
        osm.node(1, LAT, LON).node(2, LAT, LON + DLON);
        osm.way(90, &[1, 2], &[("highway", "footway")]);
        osm.write_xml(&path).unwrap();
        match RoadGraph::from_osm(&path, &cfg()) {
            Err(e @ GraphError::NoDrivableRoads { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("paths.osm") && msg.contains("no drivable road"),
                    "{msg}"
                );
            }
            other => panic!("expected NoDrivableRoads, got {other:?}"),
        }
        let pbf = dir.path().join("paths.osm.pbf");
        osm.write_pbf(&pbf).unwrap();
        assert!(matches!(
            RoadGraph::from_osm(&pbf, &cfg()),
            Err(GraphError::NoDrivableRoads { .. })
        ));
    }

    #[test]
    fn xml_and_pbf_of_the_same_map_give_the_same_graph() {
        let dir = tempfile::tempdir().unwrap();
        let osm = synthetic_grid(5, 6, 150.0, LAT, LON);
        let (xml, pbf) = (dir.path().join("grid.osm"), dir.path().join("grid.osm.pbf"));
        osm.write_xml(&xml).unwrap();
        osm.write_pbf(&pbf).unwrap();
        let from_xml = RoadGraph::from_osm(&xml, &cfg()).unwrap();
        let from_pbf = RoadGraph::from_osm(&pbf, &cfg()).unwrap();
        let in_memory = osm.build_graph(&cfg()).unwrap();
        assert_eq!(from_xml, from_pbf);
        assert_eq!(from_pbf, in_memory);
        assert_eq!(RoadGraph::open(&pbf, &cfg()).unwrap(), in_memory);
        assert_eq!(RoadGraph::open(&xml, &cfg()).unwrap(), in_memory);
    }

    #[test]
    fn synthetic_grid_has_oneways_roundabout_and_speeds() {
        let g = synthetic_grid(5, 6, 150.0, LAT, LON)
            .build_graph(&cfg())
            .unwrap();
        let info = g.info();
        assert!(info.oneway_segments > 0 && info.oneway_segments < info.segments);
        let ring: Vec<&Segment> = g
            .segments()
            .iter()
            .filter(|s| s.osm_way_id == 3000)
            .collect();
        assert_eq!(ring.len(), 2, "ring split at its two junctions, one-way");
        assert!(ring.iter().all(|s| s.is_oneway()));
        let speeds: std::collections::BTreeSet<u32> = g
            .segments()
            .iter()
            .map(|s| s.speed_limit_kmh.round() as u32)
            .collect();
        assert!(
            speeds.contains(&32) && speeds.contains(&50) && speeds.contains(&40),
            "{speeds:?}"
        );
        // Every segment can be left (the grid is strongly connected enough for a random walk).
        assert!(g.indices().all(|i| !g.successors(i).is_empty()));
        assert!(info.to_string().contains("residential"));
    }

    #[test]
    fn building_twice_gives_byte_identical_graphs() {
        let osm = synthetic_grid(6, 6, 100.0, LAT, LON);
        let a = osm.build_graph(&cfg()).unwrap();
        let b = osm.build_graph(&cfg()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.version(), b.version());
        // Ways listed in another order give the same graph too.
        let mut reordered = OsmBuilder::new();
        let xml = osm.to_xml();
        assert!(xml.contains("<way id=\"3000\">"));
        reordered.node(2, LAT, LON + DLON).node(1, LAT, LON);
        reordered.way(11, &[1, 2], &[("highway", "primary")]);
        reordered.way(10, &[2, 1], &[("highway", "primary")]);
        let mut sorted = OsmBuilder::new();
        sorted.node(1, LAT, LON).node(2, LAT, LON + DLON);
        sorted.way(10, &[2, 1], &[("highway", "primary")]);
        sorted.way(11, &[1, 2], &[("highway", "primary")]);
        assert_eq!(
            reordered.build_graph(&cfg()).unwrap(),
            sorted.build_graph(&cfg()).unwrap()
        );
    }
}
