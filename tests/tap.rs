//! `pipeline tap` against a running pipeline: records of a named edge (a stage's default
//! port, and a named port), an unknown edge listed with the known ones, a pipeline whose
//! config leaves the tap off, and the config rule that the tap needs the HTTP server.
//! Waits poll with generous limits; nothing asserts on timing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("127.0.0.1:{port}")
}

/// A paced generator through clean and assign, serving HTTP on `addr`.
fn start(dir: &Path, addr: &str, tap: bool) -> Running {
    let graph = synthetic_grid(6, 6, 150.0, 60.17, 24.94)
        .build_graph(&ImportConfig::default())
        .expect("grid builds");
    graph.write(dir.join("grid.graph")).expect("graph written");
    let config = format!(
        r#"edges = ["fleet -> clean -> assign -> observations", "assign.matched_points -> matched"]

[graph]
path = "{dir}/grid.graph"

[telemetry]
listen = "{addr}"
tap = {tap}

[sources.fleet]
type = "generator"
vehicles = 20
duration_s = 3600.0
interval_s = 2.0
seed = 3
rate = 60.0

[stages.clean]
type = "clean"

[stages.assign]
type = "assign"
workers = 1

[sinks.observations]
type = "ndjson"
path = "{dir}/observations.ndjson"

[sinks.matched]
type = "ndjson"
path = "{dir}/matched.ndjson"
"#,
        dir = dir.display()
    );
    std::fs::write(dir.join("p.toml"), config).expect("config written");
    let child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["run", "--config"])
        .arg(dir.join("p.toml"))
        .env("PIPELINE_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start pipeline");
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the pipeline's HTTP server never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    running
}

fn tap(addr: &str, edge: &str, limit: usize) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args([
            "tap",
            "--addr",
            addr,
            "--edge",
            edge,
            "--timeout-ms",
            "60000",
        ])
        .args(["--limit", &limit.to_string()])
        .output()
        .expect("run pipeline tap")
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn tap_prints_records_of_a_named_edge_of_a_running_pipeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let _pipeline = start(dir.path(), &addr, true);

    let out = tap(&addr, "clean", 5);
    assert!(out.status.success(), "{out:?}");
    let probes = json_lines(&out);
    assert_eq!(probes.len(), 5, "{out:?}");
    for p in &probes {
        assert!(
            p["vehicle_id"].is_string() && p["ts_ms"].is_i64(),
            "a probe: {p}"
        );
    }

    // A named port: matched points, not observations.
    let out = tap(&addr, "assign.matched_points", 3);
    assert!(out.status.success(), "{out:?}");
    let matched = json_lines(&out);
    assert_eq!(matched.len(), 3, "{out:?}");
    assert!(matched.iter().all(|m| m["segment_id"].is_u64()
        && m["vehicle_id"].is_string()
        && m["snapped_lat"].is_f64()));

    // The default port of assign: observations.
    let out = tap(&addr, "assign", 2);
    assert!(out.status.success(), "{out:?}");
    assert!(json_lines(&out)
        .iter()
        .all(|o| o["enter_ts_ms"].is_i64() && o["exit_ts_ms"].is_i64()));

    let out = tap(&addr, "nowhere", 1);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no edge `nowhere`") && stderr.contains("assign.matched_points"),
        "{stderr}"
    );
}

#[test]
fn tap_is_refused_when_the_config_leaves_it_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let _pipeline = start(dir.path(), &addr, false);
    let out = tap(&addr, "clean", 1);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("telemetry.tap = true"));
}

#[test]
fn tap_without_the_http_server_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "edges = [\"in -> out\"]\n[telemetry]\nlisten = \"\"\ntap = true\n\
         [sources.in]\ntype = \"parquet\"\npaths = [\"x.parquet\"]\n\
         [sinks.out]\ntype = \"ndjson\"\npath = \"-\"\n",
    )
    .expect("config written");
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run pipeline validate");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("telemetry.tap"));
}
