//! The binary end to end: graph build → generate → replay with row checks, config errors
//! and their exit codes, SIGTERM mid-replay, and every example config in `pipelines/`.
//! Fixtures (a small OSM city) are written by the test itself.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pipeline::graph::osm_writer::synthetic_grid;
use pipeline::record::{ArrowRecord, Probe};

#[path = "common/replay_report.rs"]
mod replay_report;
use replay_report::Replayed;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.env("PIPELINE_LOG", "warn");
    c
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small city: OSM PBF written by the test, then built into a `.graph`.
struct City {
    dir: tempfile::TempDir,
    graph: PathBuf,
}

impl City {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let osm = dir.path().join("city.osm.pbf");
        synthetic_grid(8, 8, 150.0, 60.17, 24.94)
            .write_pbf(&osm)
            .unwrap();
        let graph = dir.path().join("city.graph");
        run_ok(
            bin()
                .args(["graph", "build", "--osm"])
                .arg(&osm)
                .arg("--out")
                .arg(&graph),
        );
        Self { dir, graph }
    }

    /// `pipeline replay` on this city's graph, reading `input` and writing into `out_dir`.
    fn replay(&self, input: impl AsRef<std::ffi::OsStr>, out_dir: &Path) -> Command {
        let mut cmd = bin();
        cmd.args(["replay", "--graph"])
            .arg(&self.graph)
            .arg("--input")
            .arg(input)
            .arg("--out-dir")
            .arg(out_dir)
            .arg("--report");
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn generate(&self, out: &Path, vehicles: u32, duration_s: u32) {
        run_ok(
            bin()
                .args(["generate", "--graph"])
                .arg(&self.graph)
                .args(["--vehicles", &vehicles.to_string()])
                .args(["--duration-s", &duration_s.to_string()])
                .args([
                    "--interval-s",
                    "1",
                    "--noise-m",
                    "4",
                    "--seed",
                    "11",
                    "--out",
                ])
                .arg(out)
                .arg("--truth")
                .arg(self.path("truth.parquet")),
        );
    }
}

/// Reads lines until one contains `needle`; returns it (None at end of stream).
fn read_until(reader: &mut impl std::io::BufRead, needle: &str) -> Option<String> {
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if line.contains(needle) {
            return Some(line);
        }
        line.clear();
    }
    None
}

fn read_probes(path: &Path) -> Vec<Probe> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    reader
        .flat_map(|b| Probe::from_record_batch(&b.unwrap()).unwrap())
        .collect()
}

fn parquet_rows(path: &Path) -> i64 {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows()
}

#[test]
fn generate_then_replay_writes_every_clean_probe() {
    let city = City::new();
    let probes = city.path("probes.parquet");
    city.generate(&probes, 20, 120);
    let generated = read_probes(&probes);
    assert_eq!(
        parquet_rows(&city.path("truth.parquet")),
        generated.len() as i64
    );
    assert!(generated.len() > 20 * 100, "{} probes", generated.len());

    let out_dir = city.path("out");
    let stdout = run_ok(&mut city.replay(&probes, &out_dir));
    assert!(stdout.contains("probes/s"), "{stdout}");
    let report = Replayed::parse(&stdout);
    let (probes_in, dropped) = (report.probes_in, report.dropped.values().sum::<u64>());
    assert_eq!((probes_in, dropped), (generated.len() as u64, 0));
    let cleaned = read_probes(&out_dir.join("probes.parquet"));
    assert_eq!(
        cleaned.len(),
        generated.len(),
        "generated probes are all clean"
    );
    for pair in cleaned.windows(2) {
        assert!(
            pair[0].ts_ms <= pair[1].ts_ms,
            "output is in event-time order"
        );
    }
}

#[test]
fn replay_is_deterministic_and_counts_dirty_probes() {
    let city = City::new();
    let clean_file = city.path("clean.parquet");
    city.generate(&clean_file, 5, 60);
    // Dirty copy: duplicates, a NaN, null island, a timestamp in 2099 and a teleport.
    let mut probes = read_probes(&clean_file);
    let n = probes.len();
    let first = probes[0].clone();
    probes.insert(1, first.clone());
    probes.push(Probe {
        lat: f64::NAN,
        ..first.clone()
    });
    probes.push(Probe {
        lat: 0.0,
        lon: 0.0,
        ts_ms: first.ts_ms + 1,
        ..first.clone()
    });
    probes.push(Probe {
        ts_ms: 4_070_908_800_000,
        ..first.clone()
    });
    let last = probes[n].clone();
    probes.push(Probe {
        ts_ms: last.ts_ms + 500,
        lat: last.lat + 0.5,
        ..last.clone()
    });
    let dirty = city.path("dirty.parquet");
    pipeline::connector::generator::write_probes_parquet(&probes, &dirty).unwrap();

    let replay = |out: &str, decode_threads: usize| {
        let config = city.path(&format!("{out}.toml"));
        std::fs::write(
            &config,
            format!(
                "[sources.recorded]\ntype = \"parquet\"\npaths = [\"unused\"]\n\
                 decode_threads = {decode_threads}\nbatch_size = 37\n"
            ),
        )
        .unwrap();
        run_ok(
            city.replay(&dirty, &city.path(out))
                .arg("--config")
                .arg(&config),
        )
    };
    let stdout = replay("a", 1);
    let report = Replayed::parse(&stdout);
    let (probes_in, dropped) = (report.probes_in, report.dropped.values().sum::<u64>());
    assert_eq!(probes_in, probes.len() as u64);
    assert!(dropped >= 5, "{stdout}");
    for reason in [
        "duplicate=1",
        "invalid_coordinate=2",
        "future_timestamp=1",
        "teleport=1",
    ] {
        assert!(stdout.contains(reason), "{reason} missing from:\n{stdout}");
    }
    replay("b", 4);
    let a = std::fs::read(city.path("a/probes.parquet")).unwrap();
    let b = std::fs::read(city.path("b/probes.parquet")).unwrap();
    assert_eq!(read_probes(&city.path("a/probes.parquet")).len(), n);
    assert_eq!(
        a, b,
        "same input gives byte-identical output whatever the decode thread count"
    );
}

#[test]
fn replay_output_is_identical_with_one_and_two_workers() {
    let city = City::new();
    let probes = city.path("probes.parquet");
    city.generate(&probes, 40, 600);
    let replay = |workers: &str| {
        let out_dir = city.path(&format!("w{workers}"));
        run_ok(city.replay(&probes, &out_dir).args(["--workers", workers]));
        out_dir
    };
    let (one, two) = (replay("1"), replay("2"));
    for file in [
        "matched_points.parquet",
        "observations.parquet",
        "speeds.parquet",
    ] {
        assert!(parquet_rows(&one.join(file)) > 0, "{file} is empty");
        assert_eq!(
            std::fs::read(one.join(file)).unwrap(),
            std::fs::read(two.join(file)).unwrap(),
            "{file} differs between 1 and 2 workers"
        );
    }
}

#[test]
fn replay_with_a_glob_skips_a_truncated_file() {
    let city = City::new();
    let input = city.path("in");
    std::fs::create_dir(&input).unwrap();
    city.generate(&input.join("a.parquet"), 5, 30);
    let bytes = std::fs::read(input.join("a.parquet")).unwrap();
    std::fs::write(input.join("b.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let out = city
        .replay(format!("{}/*.parquet", input.display()), &city.path("out"))
        .env("PIPELINE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("b.parquet"),
        "the bad file is named: {stderr}"
    );
    assert_eq!(
        parquet_rows(&city.path("out/probes.parquet")),
        parquet_rows(&input.join("a.parquet"))
    );
}

fn assert_exit(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "`{n}` missing from: {stderr}");
    }
}

#[test]
fn config_errors_exit_2_and_name_the_key_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "edges = [\"a -> b\"]\n[sources.a]\ntype = \"parquet\"\npaths = [\"x\"]\npathz = 1\n\
         [sinks.b]\ntype = \"ndjson\"\npath = \"-\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_exit(
        &out,
        2,
        &[
            "sources.a.pathz",
            "unknown field",
            &path.display().to_string(),
        ],
    );

    let out = bin()
        .args(["validate", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_exit(&out, 2, &["missing.toml"]);

    std::fs::write(&path, "edges = [\"a -> b\"]\n[sources.a]\ntype = \"parquet\"\npaths = [\"x\"]\n[sinks.b]\ntype = \"ndjson\"\npath = \"-\"\n").unwrap();
    let out = bin()
        .args(["validate", "--config"])
        .arg(&path)
        .env("PIPELINE__RUNTIME__CHANNEL_CAPACITY_BATCHES", "lots")
        .output()
        .unwrap();
    assert_exit(
        &out,
        2,
        &[
            "runtime.channel_capacity_batches",
            "PIPELINE__RUNTIME__CHANNEL_CAPACITY_BATCHES",
        ],
    );
}

/// Regression: a file with seven mistakes took four rounds of `pipeline validate` to show
/// them all. One run lists all seven (golden output in `testdata/validate/`;
/// `UPDATE_GOLDEN=1 cargo test --test cli seven` rewrites it after an intended change).
#[test]
fn seven_mistakes_in_one_config_are_reported_in_one_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/validate");
    let out = bin()
        .current_dir(&dir)
        .args(["validate", "seven_mistakes.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let golden = dir.join("seven_mistakes.stderr");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, stderr.as_bytes()).unwrap();
    }
    assert_eq!(stderr, std::fs::read_to_string(&golden).unwrap());
    assert!(stderr.contains("(7 problem(s))"), "{stderr}");
}

/// Regression: a graph that did not exist was only warned about, with exit status 0, while
/// the README says `validate` checks that the graph opens.
#[test]
fn a_missing_graph_is_a_validation_error() {
    let city = City::new();
    let config = generator_config(city.dir.path(), &city.path("absent.graph"), "");
    let out = bin()
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_exit(&out, 2, &["graph.path", "absent.graph does not exist"]);
    // Relative to the current directory, as `run` reads it.
    let config = generator_config(city.dir.path(), Path::new("city.graph"), "");
    run_ok(
        bin()
            .current_dir(city.dir.path())
            .args(["validate", "--config"])
            .arg(&config),
    );
}

/// Two configs given to one `validate` that bind one metrics port cannot run side by side.
#[test]
fn two_configs_binding_one_metrics_port_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, listen: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "edges = [\"in -> out\"]\n[telemetry]\nlisten = \"{listen}\"\n\
                 [sources.in]\ntype = \"parquet\"\npaths = [\"x.parquet\"]\n\
                 [sinks.out]\ntype = \"ndjson\"\npath = \"-\"\n"
            ),
        )
        .unwrap();
        path
    };
    let a = config("a.toml", "127.0.0.1:9950");
    let b = config("b.toml", "0.0.0.0:9950");
    let c = config("c.toml", "127.0.0.1:9951");
    let out = bin().arg("validate").args([&a, &b, &c]).output().unwrap();
    assert_exit(
        &out,
        2,
        &[
            "b.toml",
            "telemetry.listen",
            "also bound by",
            "a.toml",
            "1 of 3",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a.toml: ok") && stdout.contains("c.toml: ok"),
        "{stdout}"
    );
    // Each alone is fine, and so are two on distinct ports.
    run_ok(bin().arg("validate").args([&a, &c]));
    run_ok(bin().args(["validate", "--config"]).arg(&b));
}

#[test]
fn missing_mapped_column_names_the_file_and_column() {
    let city = City::new();
    let probes = city.path("probes.parquet");
    city.generate(&probes, 2, 10);
    let config = city.path("mapping.toml");
    std::fs::write(
        &config,
        "[sources.recorded]\ntype = \"parquet\"\npaths = [\"unused\"]\n\
         [sources.recorded.columns]\nlat = \"latitude\"\n",
    )
    .unwrap();
    let out = city
        .replay(&probes, &city.path("out"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_exit(&out, 1, &["probes.parquet", "latitude"]);
}

#[test]
fn corrupt_graph_file_is_a_clear_error() {
    let city = City::new();
    let mut bytes = std::fs::read(&city.graph).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let bad = city.path("bad.graph");
    std::fs::write(&bad, bytes).unwrap();
    let out = bin().args(["graph", "info"]).arg(&bad).output().unwrap();
    assert_exit(&out, 1, &["bad.graph"]);
}

/// A config of the generator (on `graph`) to an NDJSON file, with `extra` lines appended
/// to the generator's table.
fn generator_config(dir: &Path, graph: &Path, extra: &str) -> PathBuf {
    let path = dir.join("gen.toml");
    std::fs::write(
        &path,
        format!(
            "edges = [\"gen -> out\"]\n[graph]\npath = \"{}\"\n[sinks.out]\ntype = \"ndjson\"\n\
             path = \"{}\"\n[sources.gen]\ntype = \"generator\"\n{extra}",
            graph.display(),
            dir.join("out.ndjson").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn unreadable_graph_and_oversized_requests_are_refused_at_validation() {
    let city = City::new();
    let validate = |config: &Path| {
        bin()
            .args(["validate", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    // The graph as given validates and runs.
    let good = generator_config(city.dir.path(), &city.graph, "duration_s = 5\n");
    run_ok(bin().args(["validate", "--config"]).arg(&good));

    // A directory, and a corrupt .graph file, in place of the graph.
    let out = validate(&generator_config(city.dir.path(), city.dir.path(), ""));
    assert_exit(&out, 2, &["graph.path", "not a regular file"]);
    let mut bytes = std::fs::read(&city.graph).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let bad = city.path("bad.graph");
    std::fs::write(&bad, bytes).unwrap();
    let out = validate(&generator_config(city.dir.path(), &bad, ""));
    assert_exit(&out, 2, &["graph.path", "bad.graph"]);
    // `run` refuses it too, before anything starts.
    let out = bin()
        .args(["run", "--config"])
        .arg(generator_config(city.dir.path(), &bad, ""))
        .output()
        .unwrap();
    assert_exit(&out, 1, &["loading road graph", "bad.graph"]);

    // Requests sized to exhaust memory are refused by key, with the bound.
    let out = validate(&generator_config(
        city.dir.path(),
        &city.graph,
        "batch_size = 1000000000\nvehicles = 4000000000\n",
    ));
    assert_exit(
        &out,
        2,
        &[
            "sources.gen.batch_size",
            "between 1 and 1000000, got 1000000000",
            "sources.gen.vehicles",
        ],
    );
    let out = bin()
        .args(["validate", "--config"])
        .arg(&good)
        .env("PIPELINE__RUNTIME__CHANNEL_CAPACITY_BATCHES", "1000000000")
        .output()
        .unwrap();
    assert_exit(&out, 2, &["runtime.channel_capacity_batches", "100000"]);
}

#[test]
fn graph_export_writes_one_row_per_segment() {
    let city = City::new();
    let segments = city.path("segments.parquet");
    let stdout = run_ok(
        bin()
            .args(["graph", "export"])
            .arg(&city.graph)
            .arg("--out")
            .arg(&segments),
    );
    let info = run_ok(bin().args(["graph", "info"]).arg(&city.graph));
    // Every command that takes a graph also takes the OSM extract itself.
    let from_osm = run_ok(bin().args(["graph", "info"]).arg(city.path("city.osm.pbf")));
    let segments_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("segments"))
            .map(str::to_string)
    };
    assert_eq!(segments_line(&info), segments_line(&from_osm));
    let count: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("segments"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("graph info prints the segment count");
    assert_eq!(parquet_rows(&segments), count, "{stdout}");
}

#[cfg(unix)]
#[test]
fn sigterm_mid_replay_leaves_valid_parquet() {
    let city = City::new();
    let probes = city.path("probes.parquet");
    city.generate(&probes, 20, 600);
    let total = parquet_rows(&probes);
    // Paced at 20× real time: 600 s of event time would take 30 s.
    let config = city.path("paced.toml");
    std::fs::write(
        &config,
        "[sources.recorded]\ntype = \"parquet\"\npaths = [\"unused\"]\nrate = 20.0\nbatch_size = 200\n",
    )
    .unwrap();
    let out_dir = city.path("out");
    let mut child = city
        .replay(&probes, &out_dir)
        .arg("--config")
        .arg(&config)
        .env("PIPELINE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the topology runs (signal handlers are installed before that), then let
    // it write for a while.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    assert!(
        read_until(&mut stderr, "pipeline running").is_some(),
        "the replay started"
    );
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(1000));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "graceful shutdown exits 0");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "it stopped early"
    );
    let written = read_probes(&out_dir.join("probes.parquet")).len() as i64;
    assert!(
        written > 0 && written < total,
        "{written} of {total} probes written"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("interrupted"));
}

/// Every example config validates; those that need no broker run against fixtures, with
/// paths redirected through PIPELINE__… variables.
#[test]
fn every_example_config_validates_and_the_embedded_ones_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs: Vec<PathBuf> = std::fs::read_dir(root.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 3);

    let city = City::new();
    let data = city.path("data");
    std::fs::create_dir(&data).unwrap();
    // Long enough that windows meet the publication rule without the first segment of
    // each trace (PARTIAL_START, not counted).
    city.generate(&data.join("probes.parquet"), 20, 120);
    std::fs::copy(&city.graph, data.join("helsinki.graph")).unwrap();

    // From a directory holding the graph they name (data/helsinki.graph), as `make run`
    // leaves it.
    for config in &configs {
        let out = bin()
            .current_dir(city.dir.path())
            .arg("validate")
            .arg("--config")
            .arg(config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The Kafka and Kinesis examples run side by side on one host: no two bind one port.
    // Exactly the README's command, from a directory laid out like the clone after
    // `make run`.
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("pipelines"), city.path("pipelines")).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_pipeline")).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let stdout = run_ok(
        Command::new("sh")
            .current_dir(city.dir.path())
            .env("PATH", path)
            .env("PIPELINE_LOG", "warn")
            .args([
                "-c",
                "pipeline validate pipelines/kafka-*.toml pipelines/kinesis-*.toml",
            ]),
    );
    assert!(
        stdout.lines().filter(|l| l.contains(": ok")).count() >= 8,
        "{stdout}"
    );
    let run = |name: &str, extra: &[(&str, &str)]| {
        let mut cmd = bin();
        cmd.current_dir(city.dir.path())
            .arg("run")
            .arg("--config")
            .arg(root.join("pipelines").join(name))
            .env("PIPELINE__TELEMETRY__LISTEN", "");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        run_ok(&mut cmd)
    };
    run("replay.toml", &[]);
    assert_eq!(
        parquet_rows(&city.path("out/run/probes_clean.parquet")),
        parquet_rows(&data.join("probes.parquet"))
    );
    let ndjson = std::fs::read_to_string(city.path("out/run/probes_clean.ndjson")).unwrap();
    assert_eq!(
        ndjson.lines().count() as i64,
        parquet_rows(&data.join("probes.parquet"))
    );

    run("assign.toml", &[]);
    assert!(
        parquet_rows(&city.path("out/assign/matched_points.parquet")) as f64
            > 0.95 * parquet_rows(&data.join("probes.parquet")) as f64
    );
    assert!(parquet_rows(&city.path("out/assign/observations.parquet")) > 0);

    let stdout = run("speeds.toml", &[]);
    assert!(parquet_rows(&city.path("out/speeds/speeds.parquet")) > 0);
    // The summary lists the aggregate's late observations, and where they went.
    let aggregate = stdout
        .lines()
        .find(|l| l.starts_with("stage aggregate: "))
        .unwrap_or_else(|| panic!("no aggregate summary in:\n{stdout}"));
    let late: u64 = aggregate
        .split_once(", late ")
        .and_then(|(_, rest)| rest.split_once(" (sent to aggregate.late)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no late count in `{aggregate}`"));
    let late_lines = std::fs::read_to_string(city.path("out/speeds/late_observations.ndjson"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(late, late_lines as u64, "{aggregate}");

    run(
        "generator.toml",
        &[
            ("PIPELINE__SOURCES__FLEET__RATE", "1000.0"),
            ("PIPELINE__SOURCES__FLEET__DURATION_S", "30.0"),
        ],
    );
    assert!(parquet_rows(&city.path("out/generator/probes.parquet")) > 0);

    // A recorded file with foreign column names and epoch seconds.
    let recorded = city.path("data/recorded");
    std::fs::create_dir(&recorded).unwrap();
    write_foreign_columns(&recorded.join("fleet.parquet"));
    run("recorded-columns.toml", &[]);
    assert_eq!(parquet_rows(&city.path("out/recorded/probes.parquet")), 3);
}

fn write_foreign_columns(path: &Path) {
    use arrow_array::{Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter(vec![
        (
            "device",
            Arc::new(StringArray::from(vec!["d1", "d1", "d1"])) as _,
        ),
        (
            "time_s",
            Arc::new(Int64Array::from(vec![
                1_700_000_000,
                1_700_000_001,
                1_700_000_002,
            ])) as _,
        ),
        (
            "latitude",
            Arc::new(Float64Array::from(vec![60.17, 60.1701, 60.1702])) as _,
        ),
        (
            "longitude",
            Arc::new(Float64Array::from(vec![24.94, 24.94, 24.94])) as _,
        ),
        (
            "gps_speed",
            Arc::new(Float32Array::from(vec![10.0, 11.0, 11.0])) as _,
        ),
        (
            "ignored",
            Arc::new(StringArray::from(vec!["x", "y", "z"])) as _,
        ),
    ])
    .unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// `pipeline run` serves /metrics, /healthz and /readyz while it runs, and stops cleanly on
/// SIGTERM.
#[cfg(unix)]
#[test]
fn run_serves_metrics_while_running_and_stops_on_sigterm() {
    use std::io::{BufReader, Read, Write};
    use std::net::TcpStream;

    let city = City::new();
    let config = city.path("live.toml");
    std::fs::write(
        &config,
        format!(
            "edges = [\"fleet -> clean -> out\"]\n[graph]\npath = \"{}\"\n\
             [telemetry]\nlisten = \"127.0.0.1:0\"\n\
             [sources.fleet]\ntype = \"generator\"\nvehicles = 20\nduration_s = 3600.0\n\
             rate = 60.0\nbatch_size = 20\n\
             [stages.clean]\ntype = \"clean\"\n\
             [sinks.out]\ntype = \"parquet\"\npath = \"{}\"\n",
            city.graph.display(),
            city.path("live.parquet").display()
        ),
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("PIPELINE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bound address is logged: "serving /metrics, /healthz, /readyz bound=127.0.0.1:PORT".
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = read_until(&mut stderr, "bound=")
        .and_then(|line| {
            let rest = line.split("bound=").nth(1)?;
            rest.split_whitespace().next().map(str::to_string)
        })
        .expect("the HTTP address is logged");
    let get = |path: &str| {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let value = |metrics: &str, series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let written = "pipeline_component_received_events_total{component=\"out\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        metrics = get("/metrics");
        if value(&metrics, written) > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        value(&metrics, written) > 0.0,
        "records reach the sink:\n{metrics}"
    );
    assert!(get("/readyz").starts_with("HTTP/1.1 200"));
    assert!(
        value(
            &metrics,
            "pipeline_component_sent_events_total{component=\"fleet\"}"
        ) > 0.0
    );
    assert_eq!(
        value(
            &metrics,
            "pipeline_clean_active_vehicles{component=\"clean\"}"
        ),
        20.0
    );
    assert!(metrics.contains("pipeline_build_info{version="));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0");
    assert!(parquet_rows(&city.path("live.parquet")) > 0);
}
