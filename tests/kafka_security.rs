//! Kafka security against real services: a round trip over TLS to a broker that speaks TLS
//! only (`scripts/services/kafka.sh` starts one on 127.0.0.1:9093, with its own test CA),
//! run through the example config `pipelines/kafka-tls-ingest.toml`; and secrets (SASL and
//! key passwords, from the file or the environment) never appearing in `pipeline validate`
//! output or in the logs of a run whose authentication fails.
//!
//! The TLS broker comes from `PIPELINE_KAFKA_TLS_BROKERS` (default 127.0.0.1:9093) and its
//! CA from `PIPELINE_KAFKA_TLS_CA` (default `$SVC_DIR/kafka-tls/ca.pem`). When none
//! answers, the TLS test fails if `CI` is set and is skipped (loudly) otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use pipeline::config::RuntimeConfig;
use pipeline::connector::kafka::{KafkaSinkConfig, KafkaSourceConfig};
use pipeline::record::Probe;
use pipeline::runtime::Topology;
use pipeline::runtime::{BoxError, Component, Input, Link, Records, Sink, VecSource};

const PATIENCE: Duration = Duration::from_secs(120);

/// The TLS broker and the CA file that signed its certificate, or None (after saying so)
/// when none answers outside CI.
fn tls_broker() -> Option<(String, PathBuf)> {
    let brokers =
        std::env::var("PIPELINE_KAFKA_TLS_BROKERS").unwrap_or_else(|_| "127.0.0.1:9093".into());
    let ca = std::env::var_os("PIPELINE_KAFKA_TLS_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let svc = std::env::var_os("SVC_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/pipeline-services")
                });
            svc.join("kafka-tls/ca.pem")
        });
    let reachable = brokers
        .parse::<std::net::SocketAddr>()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    if reachable && ca.is_file() {
        return Some((brokers, ca));
    }
    let why = format!("no TLS Kafka broker at {brokers} with CA {}", ca.display());
    if std::env::var_os("CI").is_some() {
        panic!("{why} and CI is set: run `scripts/test-services.sh start`");
    }
    eprintln!("\n*** SKIPPED: {why}. Start one with `scripts/test-services.sh start`. ***\n");
    None
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        channel_capacity_batches: 4,
        shutdown_timeout_ms: 60_000,
    }
}

fn tls_table(ca: &Path) -> String {
    format!(
        "[security]\nprotocol = \"ssl\"\nca_file = \"{}\"\n",
        ca.display()
    )
}

/// Keeps the probes whose vehicle id starts with `prefix`; stops once `want` are in.
struct CollectSink {
    prefix: String,
    got: Arc<Mutex<Vec<Probe>>>,
    want: usize,
    stop: CancellationToken,
}

#[async_trait]
impl Sink for CollectSink {
    async fn run(self: Box<Self>, mut input: Input) -> Result<(), BoxError> {
        while let Some(batch) = input.next().await {
            if let Records::Probes(p) = &batch.records {
                let mut got = self.got.lock().map_err(|_| "poisoned")?;
                got.extend(
                    p.iter()
                        .filter(|p| p.vehicle_id.starts_with(&self.prefix))
                        .cloned(),
                );
                if got.len() >= self.want {
                    self.stop.cancel();
                }
            }
            batch.acks.ack();
        }
        Ok(())
    }
}

/// A `pipeline` process, killed on drop.
struct Process(std::process::Child);

impl Process {
    /// SIGTERM, then waits: the run must end cleanly (outputs flushed).
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.0.wait().expect("wait for pipeline");
        assert!(status.success(), "the TLS stage ended with {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_tls_example_config_cleans_probes_end_to_end_over_tls() {
    let Some((brokers, ca)) = tls_broker() else {
        return;
    };
    let nonce = format!("tls-{}-{}", std::process::id(), now_ms());
    // Recent, plausible tracks: 20 vehicles, one probe every 5 s, about 10 m apart.
    let t0 = now_ms() - 600_000;
    let sent: Vec<Probe> = (0..400)
        .map(|i| {
            let (v, k) = (i % 20, (i / 20) as i64);
            Probe::new(
                format!("{nonce}-{v}"),
                t0 + k * 5_000,
                60.17 + v as f64 * 1e-3 + k as f64 * 1e-4,
                24.94,
            )
        })
        .collect();

    // Both topics exist before anyone subscribes (a subscription to a missing topic waits
    // for librdkafka's next metadata refresh).
    let mut admin_config = rdkafka::ClientConfig::new();
    admin_config
        .set("bootstrap.servers", &brokers)
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca.display().to_string());
    let admin: AdminClient<DefaultClientContext> = admin_config.create().expect("admin client");
    let topics =
        ["probes.raw", "probes.clean"].map(|t| NewTopic::new(t, 4, TopicReplication::Fixed(1)));
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topics over TLS")
    {
        if let Err((t, e)) = r {
            assert_eq!(e, RDKafkaErrorCode::TopicAlreadyExists, "creating {t}");
        }
    }

    // The example stage, in a directory holding the CA where its config expects it.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("certs")).expect("certs dir");
    std::fs::copy(&ca, dir.path().join("certs/ca.pem")).expect("copy the CA");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/kafka-tls-ingest.toml");
    let mut stage = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    stage
        .current_dir(dir.path())
        .args(["run", "--config"])
        .arg(&example)
        .env("PIPELINE__TELEMETRY__LISTEN", "")
        .env("PIPELINE__SOURCES__RAW__BROKERS", &brokers)
        .env("PIPELINE__SINKS__CLEANED__BROKERS", &brokers)
        .env("PIPELINE_LOG", "warn")
        .stdout(Stdio::null());
    let stage = Process(stage.spawn().expect("start the example stage"));

    // Our sink over TLS produces the raw probes.
    let sink: KafkaSinkConfig = toml::from_str(&format!(
        "brokers = \"{brokers}\"\ntopic = \"probes.raw\"\nlinger_ms = 1\n{}",
        tls_table(&ca)
    ))
    .expect("sink config");
    Topology::new(
        vec![
            (
                "src".to_string(),
                Component::Source(Box::new(VecSource(vec![Records::Probes(sent.clone())]))),
            ),
            (
                "raw".to_string(),
                Component::Sink(sink.build("raw").expect("sink")),
            ),
        ],
        vec![Link::any("src", "raw")],
        &runtime_config(),
    )
    .run(CancellationToken::new())
    .await
    .expect("producing over TLS");

    // Our source over TLS reads the cleaned probes back.
    let source: KafkaSourceConfig = toml::from_str(&format!(
        "brokers = \"{brokers}\"\ntopics = [\"probes.clean\"]\ngroup_id = \"{nonce}\"\n\
         record = \"probe\"\nsession_timeout_ms = 6000\nbatch_max_wait_ms = 50\n{}",
        tls_table(&ca)
    ))
    .expect("source config");
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let collect = CollectSink {
        prefix: nonce.clone(),
        got: got.clone(),
        want: sent.len(),
        stop: stop.clone(),
    };
    let topology = Topology::new(
        vec![
            (
                "cleaned".to_string(),
                Component::Source(source.build("cleaned").expect("source")),
            ),
            ("collect".to_string(), Component::Sink(Box::new(collect))),
        ],
        vec![Link::any("cleaned", "collect")],
        &runtime_config(),
    );
    let consumer = tokio::spawn(tokio::time::timeout(PATIENCE, topology.run(stop)));
    // Clean holds each vehicle's newest probes for its reorder window until newer ones come;
    // once half the probes are through, SIGTERM makes the stage flush the rest and stop.
    let deadline = Instant::now() + PATIENCE;
    while got.lock().expect("lock").len() < sent.len() / 2 {
        assert!(
            Instant::now() < deadline,
            "no cleaned probes came back over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stage.stop();
    consumer
        .await
        .expect("consumer task")
        .expect("every cleaned probe within the patience limit")
        .expect("consuming over TLS");

    let key = |p: &Probe| (p.vehicle_id.clone(), p.ts_ms);
    let got: BTreeSet<_> = got.lock().expect("lock").iter().map(key).collect();
    let want: BTreeSet<_> = sent.iter().map(key).collect();
    assert_eq!(got, want, "every probe went through the TLS stage and back");
}

/// A config whose Kafka source and sink carry a SASL password and a TLS key password, the
/// sink's password given in the environment.
fn secret_config(dir: &Path, brokers: &str, extra_sink: &str) -> PathBuf {
    let path = dir.join("secret.toml");
    let security = |password: Option<&str>| {
        format!(
            "protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-256\"\n\
             sasl_username = \"svc\"\ncert_file = \"client.pem\"\nkey_file = \"client.key\"\n\
             key_password = \"KEY-PW-in-file-4711\"\n{}",
            password
                .map(|p| format!("sasl_password = \"{p}\"\n"))
                .unwrap_or_default()
        )
    };
    std::fs::write(
        &path,
        format!(
            "edges = [\"raw -> clean -> out\"]\n\
             [sources.raw]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"probes.raw\"]\n\
             group_id = \"secret-test\"\nrecord = \"probe\"\n\
             [sources.raw.librdkafka]\n\"sasl.oauthbearer.client.secret\" = \"OAUTH-SECRET-0815\"\n\
             [sources.raw.security]\n{}\
             [stages.clean]\ntype = \"clean\"\n\
             [sinks.out]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"secret-out\"\n{extra_sink}\
             [sinks.out.security]\n{}",
            security(Some("SASL-PW-in-file-1234")),
            security(None),
        ),
    )
    .expect("write config");
    path
}

const SECRETS: [&str; 4] = [
    "SASL-PW-in-file-1234",
    "SASL-PW-from-env-9876",
    "KEY-PW-in-file-4711",
    "OAUTH-SECRET-0815",
];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

fn pipeline(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.current_dir(dir)
        .env("PIPELINE__SINKS__OUT__SECURITY__SASL_PASSWORD", SECRETS[1])
        .env("PIPELINE__TELEMETRY__LISTEN", "");
    c
}

#[test]
fn secrets_never_appear_in_validate_output_or_in_the_logs_of_a_failing_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // A valid config: `validate` says ok.
    let config = secret_config(dir.path(), "127.0.0.1:9", "");
    let out = pipeline(dir.path())
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .expect("run validate");
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("validate", &text(&out));

    // An invalid one: every problem is listed, with no value of a secret among them.
    let bad = secret_config(dir.path(), "127.0.0.1:9", "compression = \"brotli\"\n");
    let out = pipeline(dir.path())
        .args(["validate", "--config"])
        .arg(&bad)
        .env("PIPELINE__SINKS__OUT__SECURITY__PROTOCOL", "sasl_plaintext")
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("compression"), "{}", text(&out));
    assert_no_secret("validate with problems", &text(&out));

    // A run at debug level whose broker is not there: it logs its connection failures,
    // never the secrets, and ends cleanly on SIGTERM.
    let config = secret_config(dir.path(), "127.0.0.1:9", "");
    let child = pipeline(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .env("PIPELINE_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a run");
    let pid = child.id().to_string();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let out = child.wait_with_output().expect("wait for the run");
    assert!(started.elapsed() < PATIENCE);
    let logs = text(&out);
    assert!(
        !logs.trim().is_empty(),
        "the run logged nothing at debug level"
    );
    assert_no_secret("the run's logs", &logs);
}
