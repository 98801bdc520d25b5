//! Telemetry: the Prometheus registry and per-component metrics, the HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`, `/tap`, and the live view's `/speeds`, `/segments`,
//! `/map`), the record tap, the live view's store, logging setup and rate-limited
//! per-record warnings.

pub mod http;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod tap;

pub use metrics::{metrics, ComponentMetrics, Metrics};
