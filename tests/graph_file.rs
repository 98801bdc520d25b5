//! The `.graph` file: round trip, checksums and clear errors on bad files; `open` dispatch.

// Wrapped in a module so that `cargo test graph` selects every test of this file.
mod graph_file {
    use std::path::Path;

    use pipeline::graph::file::FORMAT_VERSION;
    use pipeline::graph::osm_writer::synthetic_grid;
    use pipeline::graph::{GraphError, ImportConfig, RoadGraph};

    fn grid_graph() -> RoadGraph {
        synthetic_grid(6, 7, 120.0, 47.14, 9.52)
            .build_graph(&ImportConfig::default())
            .unwrap()
    }

    fn written(dir: &Path) -> (RoadGraph, std::path::PathBuf) {
        let g = grid_graph();
        let path = dir.join("city.graph");
        g.write(&path).unwrap();
        (g, path)
    }

    #[test]
    fn write_then_load_gives_an_equal_graph() {
        let dir = tempfile::tempdir().unwrap();
        let (built, path) = written(dir.path());
        let loaded = RoadGraph::load(&path).unwrap();
        assert!(loaded.is_mapped() && !built.is_mapped());
        assert_eq!(loaded, built);
        assert_eq!(loaded.version(), built.version());
        assert_eq!(loaded.segments(), built.segments());
        assert_eq!(loaded.info(), built.info());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            built.info().file_size_bytes
        );
        for i in built.indices() {
            assert_eq!(loaded.geometry(i), built.geometry(i));
            assert_eq!(loaded.successors(i), built.successors(i));
            assert_eq!(loaded.index_of(built.segment(i).segment_id), Some(i));
        }
        assert_eq!(loaded.index_of(u64::MAX), None);
        assert!(loaded.import_stats().is_none());
    }

    #[test]
    fn open_accepts_graph_pbf_and_xml() {
        let dir = tempfile::tempdir().unwrap();
        let (built, path) = written(dir.path());
        let osm = synthetic_grid(6, 7, 120.0, 47.14, 9.52);
        let pbf = dir.path().join("city.osm.pbf");
        let xml = dir.path().join("city.osm");
        osm.write_pbf(&pbf).unwrap();
        osm.write_xml(&xml).unwrap();
        let cfg = ImportConfig::default();
        assert!(RoadGraph::open(&path, &cfg).unwrap().is_mapped());
        assert_eq!(RoadGraph::open(&path, &cfg).unwrap(), built);
        assert_eq!(RoadGraph::open(&pbf, &cfg).unwrap(), built);
        assert_eq!(RoadGraph::open(&xml, &cfg).unwrap(), built);
    }

    #[test]
    fn a_corrupted_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = written(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let k = bytes.len() / 2;
        bytes[k] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        match RoadGraph::load(&path) {
            Err(e @ GraphError::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("checksum") && msg.contains("city.graph"),
                    "{msg}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_truncated_file_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = written(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        for len in [bytes.len() - 1, bytes.len() / 2, 100, 12] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            match RoadGraph::load(&path) {
                Err(e @ GraphError::Corrupt { .. }) => {
                    assert!(e.to_string().contains("truncated"), "{len}: {e}")
                }
                other => panic!("{len} bytes: expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_non_graph_file_is_not_a_graph_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.graph");
        for content in [&b"hello, this is not a graph"[..], b"", b"PIPE"] {
            std::fs::write(&path, content).unwrap();
            assert!(
                matches!(
                    RoadGraph::load(&path),
                    Err(GraphError::NotAGraphFile { .. })
                ),
                "{content:?}"
            );
            assert!(matches!(
                RoadGraph::open(&path, &ImportConfig::default()),
                Err(GraphError::NotAGraphFile { .. })
            ));
        }
        let odd = dir.path().join("notes.txt");
        std::fs::write(&odd, b"hello").unwrap();
        assert!(matches!(
            RoadGraph::open(&odd, &ImportConfig::default()),
            Err(GraphError::UnknownFormat { .. })
        ));
        assert!(matches!(
            RoadGraph::load(dir.path().join("missing.graph")),
            Err(GraphError::Io { .. })
        ));
    }

    #[test]
    fn another_format_version_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = written(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        match RoadGraph::load(&path) {
            Err(GraphError::UnsupportedVersion {
                found, expected, ..
            }) => assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION)),
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn a_garbage_pbf_is_a_pbf_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.osm.pbf");
        let mut bytes = synthetic_grid(3, 3, 100.0, 47.0, 9.0).to_pbf().unwrap();
        bytes.truncate(bytes.len() - 20);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            RoadGraph::from_osm(&path, &ImportConfig::default()),
            Err(GraphError::Pbf { .. })
        ));
        let xml = dir.path().join("broken.osm");
        std::fs::write(&xml, "<osm><node id=\"1\" lat=\"1\" lon=\"2\"></way></osm>").unwrap();
        assert!(matches!(
            RoadGraph::from_osm(&xml, &ImportConfig::default()),
            Err(GraphError::Xml { .. })
        ));
    }
}
