//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (the
//! topology is built and running) and `/tap?edge=NAME&limit=N&timeout_ms=T` (samples of
//! the records on an edge as NDJSON, when `telemetry.tap` is on; see [`super::tap`]), and
//! with `telemetry.live_map` the live view: `/speeds?bbox=…&estimator=…` (GeoJSON),
//! `/segments` (GeoJSON) and `/map` (a page drawing them; see [`super::live`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::http::Uri;
use axum::{extract::State, http::StatusCode, routing::get, Router};
use tokio::net::TcpListener;

use super::live::{Bbox, LiveSpeeds, MAP_HTML};
use super::metrics::metrics;
use super::tap::Tap;

/// Shared readiness flag: set once every component has started.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A response: status, content type, body.
type Answer = (StatusCode, [(HeaderName, &'static str); 1], String);

/// The `key=value` pairs of a request's query string.
fn query_params(uri: &Uri) -> Vec<(&str, &str)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// Default and largest wait of one `/tap` request.
const TAP_TIMEOUT_MS: (u64, u64) = (10_000, 60_000);

/// `/tap`: waits until `limit` records (default 10) passed the edge or `timeout_ms`
/// elapsed, then answers with what it got, one JSON object per line.
async fn tap(tap: Option<Arc<Tap>>, uri: Uri) -> Answer {
    let text = |status, body: String| (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body);
    let Some(tap) = tap else {
        return text(
            StatusCode::NOT_FOUND,
            "the record tap is off: set `telemetry.tap = true` in the config\n".into(),
        );
    };
    let params = query_params(&uri);
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let Some(edge) = param("edge") else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "missing `edge`; tappable edges: {}\n",
                tap.edges().collect::<Vec<_>>().join(", ")
            ),
        );
    };
    let number = |name: &str, default: u64| match param(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("`{name}` must be a whole number, got `{v}`\n")),
    };
    let (limit, timeout_ms) = match (number("limit", 10), number("timeout_ms", TAP_TIMEOUT_MS.0)) {
        (Ok(l), Ok(t)) => (l, t.min(TAP_TIMEOUT_MS.1)),
        (Err(e), _) | (_, Err(e)) => return text(StatusCode::BAD_REQUEST, e),
    };
    let mut rx = match tap.listen(edge, usize::try_from(limit).unwrap_or(usize::MAX)) {
        Ok(rx) => rx,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let mut body = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        body.push_str(&line);
        body.push('\n');
    }
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
}

/// `/speeds`, `/segments` and `/map`: what `live` holds, or 404 when the live view is off.
fn live_view(live: Option<&LiveSpeeds>, path: &str, uri: &Uri) -> Answer {
    let answer = |status, kind, body| (status, [(CONTENT_TYPE, kind)], body);
    let Some(live) = live else {
        return answer(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "the live view is off: set `telemetry.live_map = true` in the config\n".into(),
        );
    };
    let geojson = "application/geo+json";
    match path {
        "/segments" => answer(StatusCode::OK, geojson, live.segments_geojson().to_string()),
        "/map" => answer(StatusCode::OK, "text/html; charset=utf-8", MAP_HTML.into()),
        _ => {
            let params = query_params(uri);
            let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            let bbox = match param("bbox").map(|b| b.replace("%2C", ",").parse::<Bbox>()) {
                None => None,
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        "text/plain; charset=utf-8",
                        format!("{e}\n"),
                    )
                }
            };
            answer(
                StatusCode::OK,
                geojson,
                live.speeds_geojson(param("estimator"), bbox),
            )
        }
    }
}

fn router_with_tap(
    readiness: Readiness,
    tap_points: Option<Arc<Tap>>,
    live: Option<Arc<LiveSpeeds>>,
) -> Router {
    let view = |path: &'static str| {
        let live = live.clone();
        get(move |uri: Uri| async move { live_view(live.as_deref(), path, &uri) })
    };
    Router::new()
        .route("/speeds", view("/speeds"))
        .route("/segments", view("/segments"))
        .route("/map", view("/map"))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics().render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/tap", get(move |uri: Uri| tap(tap_points.clone(), uri)))
        .route(
            "/readyz",
            get(|State(r): State<Readiness>| async move {
                if r.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                }
            }),
        )
        .with_state(readiness)
}

/// [`bind_with_tap`] without the record tap.
pub async fn bind(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    bind_with_tap(addr, readiness, None, None, shutdown).await
}

/// Binds `addr` and returns the bound address (useful with port 0) and the serving future,
/// which ends when `shutdown` completes. `/tap` serves `tap` when given, and the live view
/// serves `live`.
pub async fn bind_with_tap(
    addr: SocketAddr,
    readiness: Readiness,
    tap: Option<Arc<Tap>>,
    live: Option<Arc<LiveSpeeds>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    if !addr.ip().is_loopback() {
        // The default is 127.0.0.1; another address was asked for explicitly.
        tracing::warn!(
            %addr,
            tap = tap.is_some(),
            live_map = live.is_some(),
            "the HTTP endpoints (metrics, health{}{}) are reachable from other hosts",
            if tap.is_some() { ", record samples" } else { "" },
            if live.is_some() { ", live speeds" } else { "" }
        );
    }
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let serve = axum::serve(listener, router_with_tap(readiness, tap, live))
        .with_graceful_shutdown(shutdown);
    Ok((local, async move { serve.await }))
}
