//! Records: every type round-trips through JSON, protobuf and Arrow, and the canonical
//! schema description in `schemas/arrow.json` matches the code.

use pipeline::record::{
    observation_flags, ArrowRecord, Encoding, MatchedPoint, Probe, RecordKind, SegmentObservation,
    SegmentSpeed, WireRecord,
};

fn probe() -> Probe {
    Probe {
        vehicle_id: "veh-1".into(),
        ts_ms: 1_700_000_000_123,
        lat: 60.170_1,
        lon: 24.938_2,
        speed_mps: Some(12.5),
        heading_deg: Some(270.0),
        accuracy_m: None,
    }
}

fn matched() -> MatchedPoint {
    MatchedPoint {
        probe: probe(),
        segment_id: 0x1234_5678_9abc_def0,
        offset_m: 12.25,
        snapped_lat: 60.17,
        snapped_lon: 24.938,
        distance_m: 3.5,
    }
}

fn observation() -> SegmentObservation {
    SegmentObservation {
        observation_id: 99,
        segment_id: 0x7fff_ffff_ffff_fffe,
        vehicle_id: "veh-1".into(),
        enter_ts_ms: 1_700_000_000_000,
        exit_ts_ms: 1_700_000_009_000,
        traversed_m: 120.0,
        speed_mps: 13.33,
        next_segment_id: Some(7),
        flags: observation_flags::PARTIAL_START | observation_flags::GAP,
    }
}

fn speed() -> SegmentSpeed {
    SegmentSpeed {
        segment_id: 42,
        window_start_ms: 1_700_000_000_000,
        window_end_ms: 1_700_000_060_000,
        estimator: "space_mean".into(),
        samples: 17,
        vehicles: 9,
        speed_mps: 11.1,
        p50_speed_mps: Some(11.0),
        p15_speed_mps: None,
        p85_speed_mps: None,
        travel_time_s: 9.9,
        graph_version: 0xdead_beef,
        revision: 1,
    }
}

fn round_trips<T: WireRecord + Clone + PartialEq + std::fmt::Debug + ArrowRecord>(record: T) {
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let bytes = record.encode(encoding);
        let back = T::decode(&bytes, encoding).expect("decodes");
        assert_eq!(back, record, "{encoding:?}");
    }
    let batch = T::to_record_batch(std::slice::from_ref(&record)).expect("to arrow");
    assert_eq!(
        T::from_record_batch(&batch).expect("from arrow"),
        vec![record]
    );
}

#[test]
fn probe_round_trips_every_encoding() {
    round_trips(probe());
    round_trips(Probe::new("v", 1, 2.0, 3.0));
}

#[test]
fn matched_point_round_trips_every_encoding() {
    round_trips(matched());
}

#[test]
fn segment_observation_round_trips_every_encoding() {
    round_trips(observation());
    round_trips(SegmentObservation {
        next_segment_id: None,
        flags: 0,
        ..observation()
    });
}

#[test]
fn segment_speed_round_trips_every_encoding() {
    round_trips(speed());
}

#[test]
fn json_probe_uses_the_documented_field_names() {
    let json: serde_json::Value = serde_json::from_slice(&probe().encode(Encoding::Json)).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "heading_deg",
            "lat",
            "lon",
            "speed_mps",
            "ts_ms",
            "vehicle_id"
        ]
    );
    let minimal: Probe =
        serde_json::from_str(r#"{"vehicle_id":"a","ts_ms":5,"lat":1.5,"lon":2.5}"#).unwrap();
    assert_eq!(minimal, Probe::new("a", 5, 1.5, 2.5));
}

#[test]
fn malformed_wire_bytes_are_errors_not_panics() {
    assert!(Probe::decode(b"{not json", Encoding::Json).is_err());
    assert!(Probe::decode(&[0xff, 0xff, 0xff], Encoding::Protobuf).is_err());
    assert!(
        MatchedPoint::decode(&[], Encoding::Protobuf).is_err(),
        "probe is required"
    );
}

#[test]
fn keys_follow_the_partitioning_contract() {
    assert_eq!(probe().key(), b"veh-1");
    assert_eq!(matched().key(), b"veh-1");
    assert_eq!(speed().key(), b"42");
}

/// The canonical description, with keys sorted whatever serde_json's features (another
/// dependency may turn on `preserve_order`, which keeps insertion order).
fn describe_schemas() -> String {
    use std::collections::BTreeMap;
    let mut out: BTreeMap<String, Vec<BTreeMap<&str, serde_json::Value>>> = BTreeMap::new();
    let schemas = [
        (RecordKind::Probe, Probe::schema()),
        (RecordKind::MatchedPoint, MatchedPoint::schema()),
        (RecordKind::SegmentObservation, SegmentObservation::schema()),
        (RecordKind::SegmentSpeed, SegmentSpeed::schema()),
    ];
    for (kind, schema) in schemas {
        let fields: Vec<BTreeMap<&str, serde_json::Value>> = schema
            .fields()
            .iter()
            .map(|f| {
                BTreeMap::from([
                    ("name", f.name().as_str().into()),
                    ("type", f.data_type().to_string().into()),
                    ("nullable", f.is_nullable().into()),
                ])
            })
            .collect();
        out.insert(kind.as_str().to_string(), fields);
    }
    serde_json::to_string_pretty(&out).unwrap() + "\n"
}

#[test]
fn arrow_schemas_match_the_canonical_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/arrow.json");
    let actual = describe_schemas();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(path).expect("schemas/arrow.json exists");
    assert_eq!(
        actual, expected,
        "schemas/arrow.json is out of date: rerun with UPDATE_GOLDEN=1 and review the diff"
    );
}

/// Found by the `decode_json` fuzz target: in a matched point (whose probe is flattened) a
/// speed beyond `f32::MAX` decoded as infinity and was written back as `null`.
#[test]
fn json_f32_beyond_range_is_rejected_not_made_infinite() {
    let probe = br#"{"vehicle_id":"a","ts_ms":1,"lat":60.0,"lon":24.0,"speed_mps":1e39}"#;
    assert!(Probe::decode(probe, Encoding::Json).is_err());
    let matched = br#"{"vehicle_id":"a","ts_ms":1,"lat":60.0,"lon":24.0,"speed_mps":1e39,
        "segment_id":1,"offset_m":0.0,"snapped_lat":60.0,"snapped_lon":24.0,"distance_m":1.0}"#;
    assert!(MatchedPoint::decode(matched, Encoding::Json).is_err());
    let fits = br#"{"vehicle_id":"a","ts_ms":1,"lat":60.0,"lon":24.0,"speed_mps":3e38}"#;
    let decoded = Probe::decode(fits, Encoding::Json).map(|p| p.speed_mps);
    assert_eq!(decoded.ok().flatten(), Some(3e38_f32));
}
