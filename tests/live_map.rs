//! The live view (`telemetry.live_map`) as the README has a user run it: the command
//! `pipeline run --config pipelines/live-map.toml`, read from the README, runs as a process
//! in a directory laid out like a clone after `make run` (a grid city as its map), with its
//! HTTP server on a free port (`PIPELINE__TELEMETRY__LISTEN`, since other suites share the
//! host). While its fleet drives: `/speeds` is GeoJSON of the latest windows, each feature
//! as `pipeline render` would colour it, and `?bbox=` cuts it; `/segments` is the whole
//! network; and `/map`, drawn by a real headless Chromium, shows the classes the data holds
//! (a screenshot compared by pixel statistics, like `tests/render.rs`). Without Chromium
//! the browser part is skipped loudly, and fails when `CI` is set
//! (`scripts/test-services.sh start` installs it).

#[path = "common/chain.rs"]
mod chain;
#[path = "common/pixels.rs"]
mod pixels;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use pipeline::render::{colour, CLASSES};
use serde_json::Value;

use chain::Stage;

/// The README's command for the live view.
fn readme_command() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let line = readme
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("pipeline run --config pipelines/live-map.toml"))
        .expect("the README runs pipelines/live-map.toml");
    let command = line.split(" #").next().unwrap_or_default();
    command.split_whitespace().map(str::to_string).collect()
}

fn features(v: &Value) -> &[Value] {
    v["features"].as_array().map_or(&[], Vec::as_slice)
}

/// `/speeds` (with `query`) as JSON, once it answers 200.
fn speeds(stage: &Stage, query: &str) -> Option<Value> {
    match stage.get(&format!("/speeds{query}"))? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Whether a headless Chromium is here (None, after saying so, outside CI).
fn chromium() -> Option<&'static str> {
    let found = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("chromium");
    }
    if std::env::var_os("CI").is_some() {
        panic!("no chromium and CI is set: run `scripts/test-services.sh start`");
    }
    eprintln!("\n*** SKIPPED the browser part: no chromium (scripts/test-services.sh start) ***\n");
    None
}

#[test]
fn live_map_serves_the_latest_windows_as_geojson_and_a_page_a_browser_draws() {
    let command = readme_command();
    let dir = chain::checkout_like_dir();
    let args: Vec<OsString> = command[1..].iter().map(OsString::from).collect();
    let stage = Stage::command(&args, dir.path(), &[]);

    // Speeds come as windows close (every 6 s of wall time at the config's 10×).
    let all = chain::wait_for(
        "features on /speeds",
        || speeds(&stage, ""),
        |v| v.as_ref().is_some_and(|v| features(v).len() >= 50),
    )
    .expect("GeoJSON");
    assert_eq!(all["type"], "FeatureCollection");
    assert_eq!(all["estimator"], "space_mean");
    for f in features(&all) {
        let p = &f["properties"];
        let coords = f["geometry"]["coordinates"].as_array().expect("a line");
        assert_eq!(f["geometry"]["type"], "LineString");
        assert!(coords.len() >= 2);
        let speed_mps = p["speed_mps"].as_f64().expect("speed");
        let limit_kmh = p["speed_limit_kmh"].as_f64().expect("limit");
        let ratio = p["ratio"].as_f64().expect("ratio");
        assert!(speed_mps > 0.0 && p["samples"].as_u64() >= Some(2));
        assert!((ratio - speed_mps / (limit_kmh / 3.6)).abs() < 1e-9);
        assert_eq!(p["colour"], colour(speed_mps, limit_kmh), "{p}");
        assert!(p["window_end_ms"].as_i64() > p["window_start_ms"].as_i64());
    }

    // `?bbox=`: the western half of the network holds some segments, not all, and nothing
    // outside it; a box elsewhere holds none; a malformed one is a 400.
    let lons: Vec<f64> = features(&all)
        .iter()
        .flat_map(|f| {
            f["geometry"]["coordinates"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c[0].as_f64())
        .collect();
    let (west, east) = lons
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    let middle = (west + east) / 2.0;
    let half = speeds(&stage, &format!("?bbox={},59,{middle},61", west - 1.0)).expect("GeoJSON");
    let in_half = features(&half).len();
    assert!(in_half > 0, "none in the western half");
    for f in features(&half) {
        let reaches_in = f["geometry"]["coordinates"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c[0].as_f64().is_some_and(|lon| lon <= middle));
        assert!(reaches_in, "{f}");
    }
    let whole = speeds(&stage, "").expect("GeoJSON");
    assert!(
        in_half < features(&whole).len(),
        "{in_half} of {}",
        features(&whole).len()
    );
    assert_eq!(
        features(&speeds(&stage, "?bbox=0,0,1,1").expect("GeoJSON")).len(),
        0
    );
    assert_eq!(stage.get("/speeds?bbox=1,2,3").map(|r| r.0), Some(400));

    let segments: Value =
        serde_json::from_str(&stage.get("/segments").expect("answers").1).expect("GeoJSON");
    let graph =
        pipeline::graph::RoadGraph::load(dir.path().join("data/helsinki.graph")).expect("the map");
    assert_eq!(features(&segments).len(), graph.len());
    let (status, page) = stage.get("/map").expect("answers");
    assert_eq!(status, 200);
    assert!(page.contains("<canvas") && page.contains("fetch(\"speeds\""));

    if let Some(browser) = chromium() {
        // The classes the data holds right now; the page draws what it fetches a moment later.
        let now = speeds(&stage, "").expect("GeoJSON");
        let mut per_class: BTreeMap<usize, usize> = BTreeMap::new();
        for f in features(&now) {
            let c = f["properties"]["colour"].as_str().unwrap_or_default();
            if let Some(k) = CLASSES.iter().position(|k| k.1 == c) {
                *per_class.entry(k).or_default() += 1;
            }
        }
        let png = dir.path().join("map.png");
        let out = std::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=800,600",
                "--virtual-time-budget=10000",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("chromium").display()
            ))
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!("http://{}/map", stage.listen()))
            .output()
            .expect("run chromium");
        assert!(png.exists(), "no screenshot: {out:?}");
        let (mut shares, _, _) = pixels::pixel_stats(&png);
        shares.truncate(CLASSES.len());
        eprintln!("classes in the data {per_class:?}, pixel shares {shares:?}");
        // Roads cover a few % of the picture: the coloured classes are drawn, each class
        // that holds a fifth of the segments visibly.
        assert!(shares.iter().sum::<f64>() > 0.01, "{shares:?}");
        let n = features(&now).len();
        for (k, count) in per_class {
            if count * 5 >= n {
                assert!(
                    shares[k] > 0.001,
                    "class {k}: {count} of {n} segments, {shares:?}"
                );
            }
        }
    }
    stage.stop();
}

/// Off by default: the endpoints say how to turn the view on.
#[test]
fn the_live_view_is_off_unless_the_config_asks() {
    let dir = chain::checkout_like_dir();
    let args: Vec<OsString> = ["run", "--config", "pipelines/live-map.toml"]
        .iter()
        .map(OsString::from)
        .collect();
    let stage = Stage::command(
        &args,
        dir.path(),
        &chain::env(&[("PIPELINE__TELEMETRY__LIVE_MAP", "false")]),
    );
    let (status, body) = chain::wait_for(
        "an answer from /speeds",
        || stage.get("/speeds"),
        |r| r.is_some(),
    )
    .expect("answers");
    assert_eq!(status, 404);
    assert!(body.contains("live_map = true"), "{body}");
    assert_eq!(stage.get("/map").map(|r| r.0), Some(404));
    stage.stop();
}
