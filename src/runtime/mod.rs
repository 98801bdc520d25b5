//! The runtime: builds the topology a config describes, connects components with bounded
//! batch channels, runs them, and shuts them down in order (sources, then drain, then sinks).

pub mod ack;
pub mod batch;
pub mod component;
pub mod frontier;
pub mod topology;

pub use ack::{AckChannel, AckTarget, AckToken, AckedPrefix, Acks, Release};
pub use batch::{AssignedLane, Batch, LaneEvent, Records};
pub use component::{
    BoxError, DownstreamClosed, Edge, Input, Next, Output, Sink, Source, Transform, VecSource,
};
pub use frontier::{Frontier, LaneClocks};
pub use topology::{Component, Link, RunError, RunReport, Topology};

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives before the
/// returned future is first polled is not lost to the default action) and returns a future
/// that resolves on the first of them.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    })
}

/// Resolves on Ctrl-C (the only shutdown signal outside Unix).
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("received Ctrl-C");
        }
    })
}
