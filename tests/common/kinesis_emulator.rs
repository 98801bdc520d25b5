//! The Kinesis emulator for tests: its endpoint (required in CI, as the Kafka broker is), and
//! a client for the tests' own stream management. Included by the tests that need it with
//! `#[path = "common/kinesis_emulator.rs"] mod kinesis_emulator;`.
#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::types::StreamStatus;
use pipeline::connector::kinesis::KinesisClient;

/// Generous limit for a stream to become active.
const PATIENCE: Duration = Duration::from_secs(120);

/// The emulator's endpoint, or None (after saying so) when nothing answers outside CI.
/// Sets dummy credentials for the standard AWS chain when none are set.
pub fn emulator() -> Option<String> {
    static CREDENTIALS: std::sync::Once = std::sync::Once::new();
    CREDENTIALS.call_once(|| {
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            std::env::set_var("AWS_ACCESS_KEY_ID", "test");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        }
    });
    let endpoint = std::env::var("PIPELINE_KINESIS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4567".into());
    let addr = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let reachable = addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    if reachable {
        return Some(endpoint);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "no Kinesis emulator at {endpoint} and CI is set: run `scripts/test-services.sh start`"
        );
    }
    eprintln!(
        "\n*** SKIPPED: no Kinesis emulator at {endpoint}. Start one with \
         `scripts/services/kinesis.sh start` (or run `make test`). ***\n"
    );
    None
}

/// A client for the test's own stream management, with static dummy credentials.
pub fn admin(endpoint: &str) -> KinesisClient {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .http_client(http)
        .build();
    KinesisClient::from_conf(config)
}

pub async fn wait_active(client: &KinesisClient, stream: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .ok()
            .and_then(|o| {
                o.stream_description_summary()
                    .map(|s| s.stream_status().clone())
            });
        if status == Some(StreamStatus::Active) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream {stream} never became active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn create_stream(endpoint: &str, stream: &str, shards: i32) {
    let client = admin(endpoint);
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating stream {stream}: {e:?}"));
    wait_active(&client, stream).await;
}

/// Every record of `stream` from TRIM_HORIZON to its end now, payloads shard by shard (in
/// shard-id order), each shard in sequence order. The end of a shard is the first empty
/// GetRecords answer: call it once nothing writes to the stream any more.
pub async fn read_stream(endpoint: &str, stream: &str) -> Vec<Vec<u8>> {
    use aws_sdk_kinesis::types::ShardIteratorType;

    let client = admin(endpoint);
    let listed = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap_or_else(|e| panic!("listing the shards of {stream}: {e:?}"));
    let mut shards: Vec<String> = listed
        .shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect();
    shards.sort();
    let mut payloads = Vec::new();
    for shard in shards {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{stream} {shard}: shard iterator: {e:?}"))
            .shard_iterator()
            .map(str::to_string);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while let Some(it) = iterator {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stream} {shard}: no end in sight"
            );
            let out = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{stream} {shard}: get records: {e:?}"));
            if out.records().is_empty() {
                break;
            }
            payloads.extend(out.records().iter().map(|r| r.data().as_ref().to_vec()));
            iterator = out.next_shard_iterator().map(str::to_string);
        }
    }
    payloads
}
