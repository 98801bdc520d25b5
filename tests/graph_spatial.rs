//! Candidate search (R-tree in metres) and the Parquet export of segment metadata.

// Wrapped in a module so that `cargo test graph` selects every test of this file.
mod graph_spatial {
    use std::fs::File;

    use arrow_array::{Array, BooleanArray, Float64Array, StringArray, UInt64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use pipeline::geo::LocalProjection;
    use pipeline::graph::export::write_segments_parquet;
    use pipeline::graph::osm_writer::{synthetic_grid, OsmBuilder};
    use pipeline::graph::{ImportConfig, RoadGraph};

    const LAT: f64 = 60.17;
    const LON: f64 = 24.94;

    /// One straight two-way road, 200 m due east from (LAT, LON), plus a parallel one-way road
    /// 100 m north.
    fn two_roads() -> (RoadGraph, LocalProjection) {
        let p = LocalProjection::new(LAT, LON);
        let mut osm = OsmBuilder::new();
        for (id, xy) in [
            (1, [0.0, 0.0]),
            (2, [200.0, 0.0]),
            (3, [0.0, 100.0]),
            (4, [200.0, 100.0]),
        ] {
            let (lat, lon) = p.unproject(xy);
            osm.node(id, lat, lon);
        }
        osm.way(1, &[1, 2], &[("highway", "residential")]);
        osm.way(2, &[3, 4], &[("highway", "residential"), ("oneway", "yes")]);
        (osm.build_graph(&ImportConfig::default()).unwrap(), p)
    }

    #[test]
    fn nearest_segment_has_the_right_distance_and_offset() {
        let (g, p) = two_roads();
        let (lat, lon) = p.unproject([30.0, 20.0]);
        let found = g.nearest_within(lat, lon, 50.0, 8);
        assert_eq!(
            found.len(),
            2,
            "both directions of road 1, road 2 is 80 m away"
        );
        for c in &found {
            let s = g.segment(c.segment);
            assert_eq!(s.osm_way_id, 1);
            assert_eq!(c.segment_id, s.segment_id);
            assert!((c.distance_m - 20.0).abs() < 0.1, "{c:?}");
            let expected_offset = if s.from_node_id == 1 { 30.0 } else { 170.0 };
            assert!((c.offset_m - expected_offset).abs() < 0.5, "{c:?}");
            let [x, y] = p.project(c.lat, c.lon);
            assert!(
                (x - 30.0).abs() < 0.1 && y.abs() < 0.1,
                "snapped to the road: {x} {y}"
            );
        }
        assert!(
            found[0].segment_id < found[1].segment_id,
            "ties broken by id"
        );

        let wide = g.nearest_within(lat, lon, 500.0, 8);
        assert_eq!(wide.len(), 3);
        assert_eq!(g.segment(wide[2].segment).osm_way_id, 2);
        assert!((wide[2].distance_m - 80.0).abs() < 0.1);
        assert_eq!(g.nearest_within(lat, lon, 500.0, 1).len(), 1);
        assert!(g.nearest_within(lat, lon, 10.0, 8).is_empty());
        assert!(g.nearest_within(lat, lon, f64::NAN, 8).is_empty());
    }

    #[test]
    fn query_beyond_the_end_snaps_to_the_end() {
        let (g, p) = two_roads();
        let (lat, lon) = p.unproject([230.0, 0.0]);
        let found = g.nearest_within(lat, lon, 50.0, 8);
        let forward = found
            .iter()
            .find(|c| g.segment(c.segment).from_node_id == 1)
            .unwrap();
        assert!((forward.distance_m - 30.0).abs() < 0.1);
        assert!((forward.offset_m - g.segment(forward.segment).length_m).abs() < 1e-6);
    }

    #[test]
    fn spatial_index_is_lazy_and_works_on_a_loaded_graph() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.graph");
        let built = synthetic_grid(5, 5, 100.0, LAT, LON)
            .build_graph(&ImportConfig::default())
            .unwrap();
        built.write(&path).unwrap();
        let loaded = RoadGraph::load(&path).unwrap();
        loaded.build_spatial_index();
        assert_eq!(
            loaded.spatial().len(),
            built.all_geometry().len() - built.len()
        );
        let [lat, lon] = built.geometry(3)[0];
        let a = built.nearest_within(lat, lon, 30.0, 4);
        let b = loaded.nearest_within(lat, lon, 30.0, 4);
        assert_eq!(a, b);
        assert!(a.iter().all(|c| c.distance_m < 1e-6));
        assert!(a.len() >= 2);
    }

    #[test]
    fn export_writes_a_readable_parquet_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segments.parquet");
        let g = synthetic_grid(4, 4, 100.0, LAT, LON)
            .build_graph(&ImportConfig::default())
            .unwrap();
        let rows = write_segments_parquet(&g, &path).unwrap();
        assert_eq!(rows, g.len() as u64);

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        let schema = batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "segment_id",
                "osm_way_id",
                "from_node_id",
                "to_node_id",
                "length_m",
                "highway",
                "speed_limit_kmh",
                "oneway",
                "geometry"
            ]
        );
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), g.len());
        let b = &batches[0];
        let col = |name: &str| b.column(schema.index_of(name).unwrap()).clone();
        let ids = col("segment_id");
        let ids = ids.as_any().downcast_ref::<UInt64Array>().unwrap();
        let lengths = col("length_m");
        let lengths = lengths.as_any().downcast_ref::<Float64Array>().unwrap();
        let highway = col("highway");
        let highway = highway.as_any().downcast_ref::<StringArray>().unwrap();
        let oneway = col("oneway");
        let oneway = oneway.as_any().downcast_ref::<BooleanArray>().unwrap();
        let geometry = col("geometry");
        let geometry = geometry.as_any().downcast_ref::<StringArray>().unwrap();
        let s = g.segment(0);
        assert_eq!(ids.value(0), s.segment_id);
        assert_eq!(lengths.value(0), s.length_m);
        assert_eq!(highway.value(0), s.road_class().as_str());
        assert_eq!(oneway.value(0), s.is_oneway());
        let wkt = geometry.value(0);
        assert!(
            wkt.starts_with("LINESTRING(") && wkt.ends_with(')'),
            "{wkt}"
        );
        assert_eq!(wkt.matches(',').count() + 1, g.geometry(0).len());
        assert_eq!(geometry.null_count(), 0);
    }
}
