//! NDJSON sink: one JSON object per line that parses back to the record; a matched point
//! flattens its probe; with `append`, a restart keeps earlier lines and cuts a torn one.

use pipeline::connector::ndjson::{self, NdjsonSinkConfig};
use pipeline::record::{MatchedPoint, Probe, RecordKind};
use pipeline::runtime::{Batch, Input, Records};
use pipeline::telemetry::metrics;
use tokio::sync::mpsc;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn probe(i: i64) -> Probe {
    let mut p = Probe::new(format!("v{i}"), 1_700_000_000_000 + i, 48.1, 2.3);
    p.speed_mps = (i % 2 == 0).then_some(12.5);
    p
}

#[tokio::test]
async fn ndjson_lines_parse_back_to_the_probes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sub/probes.ndjson");
    let sink = NdjsonSinkConfig::new(path.display().to_string())
        .build("test_ndjson", Some(RecordKind::Probe))?;
    let (tx, rx) = mpsc::channel(4);
    let batches: Vec<Vec<Probe>> = vec![(0..3).map(probe).collect(), (3..5).map(probe).collect()];
    for b in &batches {
        tx.send(Batch::from(b.clone())).await?;
    }
    drop(tx);
    sink.run(Input::new(metrics().component("test_ndjson"), rx))
        .await
        .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&path)?;
    let parsed: Vec<Probe> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(parsed, batches.concat());
    assert!(text.ends_with('\n'));
    Ok(())
}

#[test]
fn matched_points_flatten_their_probe() -> TestResult {
    let m = MatchedPoint {
        probe: probe(1),
        segment_id: 99,
        offset_m: 3.5,
        snapped_lat: 48.10001,
        snapped_lon: 2.3,
        distance_m: 1.25,
    };
    let mut out = Vec::new();
    let lines = ndjson::write_records(&mut out, &Records::MatchedPoints(vec![m.clone()]))?;
    assert_eq!(lines, 1);
    let text = String::from_utf8(out)?;
    let value: serde_json::Value = serde_json::from_str(text.trim_end())?;
    assert_eq!(value["vehicle_id"], "v1");
    assert_eq!(value["segment_id"], 99);
    assert!(value.get("probe").is_none());
    let back: MatchedPoint = serde_json::from_str(text.trim_end())?;
    assert_eq!(back, m);
    Ok(())
}

#[test]
fn validation_rejects_an_empty_path() {
    let mut problems = pipeline::config::Problems::new();
    NdjsonSinkConfig::new(" ").validate("sinks.look", &mut problems);
    let list = problems.into_vec();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].key, "sinks.look.path");
}

#[tokio::test]
async fn an_appending_ndjson_sink_keeps_earlier_runs_and_cuts_a_torn_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("late.ndjson");
    let earlier: Vec<Probe> = (0..2).map(probe).collect();
    let mut text = String::new();
    for p in &earlier {
        text.push_str(&serde_json::to_string(p)?);
        text.push('\n');
    }
    // A crash mid-line: these bytes were never acknowledged.
    text.push_str("{\"vehicle_id\":\"v9\",\"ts");
    std::fs::write(&path, text)?;
    let component = "test_ndjson_append";
    let mut config = NdjsonSinkConfig::new(path.display().to_string());
    config.append = true;
    let sink = config.build(component, Some(RecordKind::Probe))?;
    let (tx, rx) = mpsc::channel(4);
    let later: Vec<Probe> = (2..5).map(probe).collect();
    tx.send(Batch::from(later.clone())).await?;
    drop(tx);
    sink.run(Input::new(metrics().component(component), rx))
        .await
        .map_err(|e| e.to_string())?;
    let parsed: Vec<Probe> = std::fs::read_to_string(&path)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(parsed, [earlier, later].concat());
    let series = format!(
        "pipeline_component_files_total{{component=\"{component}\",outcome=\"repaired\"}} 1"
    );
    assert!(metrics().render().contains(&series), "{series}");
    Ok(())
}

#[test]
fn validation_rejects_appending_to_stdout() {
    let mut problems = pipeline::config::Problems::new();
    let mut config = NdjsonSinkConfig::new("-");
    config.append = true;
    config.validate("sinks.look", &mut problems);
    let keys: Vec<String> = problems.into_vec().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["sinks.look.append"]);
}
