//! The Grafana dashboard against a real Prometheus: a running `pipeline` replays generated
//! probes (generator → clean → assign → aggregate, plus a Kafka and a Kinesis round trip
//! when a broker and an emulator answer), a `prometheus` started by the test scrapes it, and every PromQL expression of
//! `dashboards/pipeline.json` (template variables filled in) must parse and return at least
//! one series. `promtool check metrics` must accept the pipeline's `/metrics` output.
//!
//! `prometheus` and `promtool` come from the Debian package (`scripts/services/prometheus.sh
//! install`, which `make test` runs). When they are missing the tests fail if `CI` is set
//! and are skipped (loudly) otherwise. The Kafka leg follows `tests/kafka.rs`: broker from
//! `PIPELINE_KAFKA_BROKERS`, required in CI; the Kinesis leg `tests/kinesis.rs`: emulator
//! from `PIPELINE_KINESIS_ENDPOINT`, required in CI. Ports are free ports picked at start; every
//! wait polls with a generous limit, nothing asserts on timing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig};

/// Generous limit for anything to happen; a hang fails instead of blocking CI.
const PATIENCE: Duration = Duration::from_secs(120);
const JOB: &str = "pipeline";

/// Paths of `prometheus` and `promtool`, or None (after saying so) outside CI.
fn prometheus_tools() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| -> Option<PathBuf> {
        let dirs = std::env::var_os("PATH")?;
        std::env::split_paths(&dirs)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    match (find("prometheus"), find("promtool")) {
        (Some(server), Some(tool)) => Some((server, tool)),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "prometheus/promtool not on PATH and CI is set: run \
                     `scripts/services/prometheus.sh install`"
                );
            }
            eprintln!(
                "\n*** SKIPPED: prometheus/promtool not on PATH. Install them with \
                 `scripts/services/prometheus.sh install` (or run `make test`). ***\n"
            );
            None
        }
    }
}

/// The Kafka broker, when one answers; required in CI (as in tests/kafka.rs).
fn kafka_brokers() -> Option<String> {
    let brokers =
        std::env::var("PIPELINE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let reachable = first
        .parse::<SocketAddr>()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    if reachable {
        return Some(brokers);
    }
    if std::env::var_os("CI").is_some() {
        panic!("no Kafka broker at {brokers} and CI is set: run `scripts/test-services.sh start`");
    }
    eprintln!(
        "\n*** no Kafka broker at {brokers}: running without the Kafka leg; the Kafka lag \
         panel is checked for parsing only. ***\n"
    );
    None
}

#[path = "common/kinesis_emulator.rs"]
mod kinesis_emulator;

/// Creates `topic` (2 partitions) so the pipeline's Kafka source and sink find it.
fn create_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, 2, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics request");
        for r in results {
            if let Err((t, e)) = r {
                assert_eq!(
                    e,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "creating {t}"
                );
            }
        }
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.0 GET (no chunked encoding): (status, body), or None if nothing answers.
fn http_get(addr: &str, path_and_query: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `check` until it returns Some, or panics with `what` after [`PATIENCE`].
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Instant query through the HTTP API: Ok(number of series) or Err(the error text).
fn query(prom: &str, expr: &str) -> Result<usize, String> {
    let (status, body) = http_get(
        prom,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
    .ok_or("Prometheus did not answer")?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "{}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or(&body)
        ));
    }
    Ok(v["data"]["result"].as_array().map_or(0, |r| r.len()))
}

/// The dashboard's template variables, filled in as Grafana would for this job.
fn fill_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("${job}", JOB)
        .replace("$job", JOB)
}

/// Every (panel title, expression) of the dashboard.
fn dashboard_expressions() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/pipeline.json");
    let text = std::fs::read_to_string(&path).expect("dashboard readable");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            out.push((
                panel["title"].as_str().unwrap_or("?").to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

/// The pipeline config: a paced generator through every stage, and, with a broker, clean
/// probes through a Kafka topic and back (so consumer lag is exported).
fn pipeline_config(
    dir: &Path,
    listen: &str,
    kafka: Option<(&str, &str)>,
    kinesis: Option<(&str, &str)>,
) -> String {
    let mut edges = vec![
        "\"fleet -> clean -> assign -> aggregate -> speeds\"".to_string(),
        "\"aggregate -> speeds_parquet\"".to_string(),
    ];
    let mut kafka_part = String::new();
    if let Some((brokers, topic)) = kafka {
        edges.push("\"clean -> to_kafka\"".into());
        edges.push("\"from_kafka -> probes_back\"".into());
        kafka_part = format!(
            r#"
[sinks.to_kafka]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"

[sources.from_kafka]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{topic}"
record = "probe"
lag_interval_ms = 1000

[sinks.probes_back]
type = "ndjson"
path = "{}"
"#,
            dir.join("probes_back.ndjson").display()
        );
    }
    let mut kinesis_part = String::new();
    if let Some((endpoint, stream)) = kinesis {
        edges.push("\"clean -> to_kinesis\"".into());
        edges.push("\"from_kinesis -> probes_back_kinesis\"".into());
        kinesis_part = format!(
            r#"
[sinks.to_kinesis]
type = "kinesis"
stream = "{stream}"
region = "us-east-1"
endpoint = "{endpoint}"

[sources.from_kinesis]
type = "kinesis"
stream = "{stream}"
region = "us-east-1"
endpoint = "{endpoint}"
application = "{stream}"
record = "probe"
start_position = "trim_horizon"
checkpoint_dir = "{checkpoints}"

[sinks.probes_back_kinesis]
type = "ndjson"
path = "{back}"
"#,
            checkpoints = dir.join("kinesis-checkpoints").display(),
            back = dir.join("probes_back_kinesis.ndjson").display()
        );
    }
    format!(
        r#"edges = [{edges}]

[graph]
path = "{graph}"

[telemetry]
listen = "{listen}"

# An hour of event time played 30x faster than the wall clock: two minutes of traffic.
[sources.fleet]
type = "generator"
vehicles = 30
duration_s = 3600.0
interval_s = 2.0
seed = 7
fault_rate = 0.05
rate = 30.0

[stages.clean]
type = "clean"

[stages.assign]
type = "assign"
workers = 1

[stages.aggregate]
type = "aggregate"

[sinks.speeds]
type = "ndjson"
path = "{speeds}"

[sinks.speeds_parquet]
type = "parquet"
path = "{speeds_parquet}"
{kafka_part}{kinesis_part}"#,
        edges = edges.join(", "),
        graph = dir.join("grid.graph").display(),
        speeds = dir.join("speeds.ndjson").display(),
        speeds_parquet = dir.join("speeds.parquet").display(),
    )
}

#[test]
fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    let Some((prometheus, promtool)) = prometheus_tools() else {
        return;
    };
    let brokers = kafka_brokers();
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = synthetic_grid(8, 8, 150.0, 60.17, 24.94)
        .build_graph(&ImportConfig::default())
        .expect("grid builds");
    graph
        .write(dir.path().join("grid.graph"))
        .expect("graph written");

    let pipeline_addr = format!("127.0.0.1:{}", free_port());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let topic = format!("prometheus-test-{}-{nanos}", std::process::id());
    if let Some(b) = &brokers {
        create_topic(b, &topic);
    }
    // The Kinesis leg, so the millis-behind-latest panel has a series: required in CI.
    let kinesis = kinesis_emulator::emulator();
    if let Some(endpoint) = &kinesis {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(kinesis_emulator::create_stream(endpoint, &topic, 1));
    }
    let config = pipeline_config(
        dir.path(),
        &pipeline_addr,
        brokers.as_deref().map(|b| (b, topic.as_str())),
        kinesis.as_deref().map(|e| (e, topic.as_str())),
    );
    let config_path = dir.path().join("pipeline.toml");
    std::fs::write(&config_path, config).expect("config written");
    let _pipeline = Running(
        Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["run", "--config"])
            .arg(&config_path)
            .env("PIPELINE_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("start pipeline"),
    );

    let prom_addr = format!("127.0.0.1:{}", free_port());
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs: [{{targets: ['{pipeline_addr}']}}]\n"
        ),
    )
    .expect("prometheus config written");
    let checked = Command::new(&promtool)
        .args(["check", "config"])
        .arg(&prom_config)
        .output()
        .expect("run promtool");
    assert!(checked.status.success(), "{checked:?}");
    let _prometheus = Running(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prom-data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    wait_for("Prometheus ready", || {
        http_get(&prom_addr, "/-/ready").filter(|(status, _)| *status == 200)
    });

    // Our exposition, as the pipeline serves it mid-run, passes promtool's lint.
    let exposition = wait_for("the pipeline's /metrics", || {
        http_get(&pipeline_addr, "/metrics").filter(|(status, _)| *status == 200)
    })
    .1;
    promtool_check_metrics(&promtool, &exposition);

    // Wait until data flowed end to end and Prometheus holds enough samples for rates.
    let mut wanted = vec![
        format!("up{{job=\"{JOB}\"}} == 1"),
        "pipeline_aggregate_speeds_emitted_total{emission=\"first\"} > 0".to_string(),
        "count_over_time(pipeline_assign_matched_probes_total[1m]) >= 5".to_string(),
    ];
    if brokers.is_some() {
        wanted.push("pipeline_kafka_consumer_lag_records".into());
    }
    if kinesis.is_some() {
        wanted.push("pipeline_kinesis_millis_behind_latest".into());
    }
    for expr in &wanted {
        wait_for(expr, || query(&prom_addr, expr).ok().filter(|n| *n > 0));
    }

    let expressions = dashboard_expressions();
    assert!(expressions.len() >= 20, "the dashboard has its panels");
    let mut failures = Vec::new();
    for (title, expr) in &expressions {
        let filled = fill_variables(expr);
        assert!(
            !filled.contains('$'),
            "unfilled template variable in `{expr}` (panel {title})"
        );
        // Only a series the test topology cannot produce may be absent: Kafka or Kinesis lag
        // without a broker or emulator (outside CI). They must still parse.
        let exempt = (kinesis.is_none() && filled.contains("pipeline_kinesis_"))
            || (brokers.is_none() && filled.contains("pipeline_kafka_"));
        let result = if exempt {
            query(&prom_addr, &filled).map(|_| 1)
        } else {
            // A series may appear a scrape late: retry briefly before failing.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match query(&prom_addr, &filled) {
                    Ok(0) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(500))
                    }
                    other => break other,
                }
            }
        };
        match result {
            Ok(0) => failures.push(format!("panel `{title}`: no series for `{filled}`")),
            Ok(_) => {}
            Err(e) => failures.push(format!("panel `{title}`: `{filled}` failed: {e}")),
        }
        if exempt {
            eprintln!("note: panel `{title}` checked for parsing only (`{filled}`)");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The scraped exposition at the end of the run passes promtool too.
    let (_, exposition) = http_get(&pipeline_addr, "/metrics").expect("/metrics");
    promtool_check_metrics(&promtool, &exposition);
}

fn promtool_check_metrics(promtool: &Path, exposition: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool ends");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_exposition_of_every_preregistered_series() {
    let Some((_, promtool)) = prometheus_tools() else {
        return;
    };
    use pipeline::telemetry::metrics::{metrics, Series, DROP_REASONS, ERROR_TYPES, FILE_OUTCOMES};
    metrics().preregister(
        "promtool_check",
        Series {
            drop_reasons: DROP_REASONS,
            error_types: ERROR_TYPES,
            file_outcomes: FILE_OUTCOMES,
        },
    );
    metrics()
        .kinesis_millis_behind_latest()
        .with_label_values(&["kinesis_check", "shardId-000000000000"])
        .set(0);
    let exposition = metrics().render();
    assert!(exposition.contains(
        "pipeline_component_dropped_events_total{component=\"promtool_check\",reason=\"teleport\"} 0"
    ));
    promtool_check_metrics(&promtool, &exposition);
}
