//! The runtime: builds the topology a config describes, connects components with bounded
//! batch channels, runs them, and shuts them down in order (sources, then drain, then sinks).

pub mod batch;
pub mod component;
pub mod topology;

pub use batch::{Batch, Records};
pub use component::{BoxError, DownstreamClosed, Input, Output, Sink, Source, Transform};
pub use topology::{Component, RunError, RunReport, Topology};

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
