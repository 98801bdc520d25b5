//! Telemetry endpoints over real TCP: /metrics in Prometheus text format with the
//! documented names, /healthz, and /readyz following the readiness flag.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use pipeline::telemetry::{http, metrics};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn endpoints_serve_metrics_health_and_readiness() {
    let component = metrics().component("telemetry_test_stage");
    component.received_events.inc_by(5);
    component.dropped("teleport", 2);
    component.observe_event_time(1_700_000_000_000);

    let readiness = http::Readiness::default();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let (addr, serve) = http::bind(
        "127.0.0.1:0".parse().unwrap(),
        readiness.clone(),
        async move { stopped.cancelled().await },
    )
    .await
    .unwrap();
    let server = tokio::spawn(serve);

    let (status, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(addr, "/readyz").await.0, 503);
    readiness.set_ready(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "pipeline_build_info{version=",
        "pipeline_component_received_events_total{component=\"telemetry_test_stage\"} 5",
        "pipeline_component_dropped_events_total{component=\"telemetry_test_stage\",reason=\"teleport\"} 2",
        "pipeline_component_event_time_seconds{component=\"telemetry_test_stage\"} 1700000000",
        "# TYPE pipeline_component_batch_duration_seconds histogram",
        "# TYPE pipeline_channel_depth_batches gauge",
    ] {
        assert!(body.contains(needle), "`{needle}` missing from /metrics:\n{body}");
    }
    // Counters end in _total and every metric carries the prefix.
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        if name.starts_with("process_") {
            continue;
        }
        assert!(name.starts_with("pipeline_"), "{name}");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops on shutdown")
        .unwrap()
        .unwrap();
}
