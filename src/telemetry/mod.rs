//! Telemetry: the Prometheus registry and per-component metrics, the HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`, `/tap`), the record tap, logging setup and
//! rate-limited per-record warnings.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod tap;

pub use metrics::{metrics, ComponentMetrics, Metrics};
