//! The record tap (`pipeline tap`, like `vector tap`): samples of the records flowing
//! through a named edge of a running pipeline, served as NDJSON by `/tap` on the HTTP
//! server. Off unless `telemetry.tap = true`.
//!
//! An edge is named by its upstream endpoint, as in the config's `edges`: `clean`,
//! `assign` (its default port, observations) or `assign.matched_points`. The runtime gives
//! each component's [`Output`](crate::runtime::Output) the [`TapPoint`]s of its edges.
//! Cost: none when the tap is off (the output has no points); one relaxed atomic load per
//! batch while it is on but nobody listens. A listener gets copies of records, serialised
//! on the sending component's thread, through a bounded channel that never blocks the
//! pipeline: records that do not fit are not sampled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::{split_endpoint, PipelineConfig};
use crate::record::RecordKind;
use crate::runtime::Records;

/// Most records one request may ask for.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TapError {
    #[error("no edge `{edge}`; tappable edges: {known}")]
    UnknownEdge { edge: String, known: String },
    #[error("limit must be 1 to {MAX_LIMIT}, got {0}")]
    Limit(usize),
}

struct Listener {
    remaining: usize,
    tx: mpsc::Sender<String>,
}

/// One tappable edge: the records of kind `kind` (any, when `None`) that a component sends.
pub struct TapPoint {
    edge: String,
    kind: Option<RecordKind>,
    listening: AtomicUsize,
    listeners: Mutex<Vec<Listener>>,
}

impl TapPoint {
    fn new(edge: String, kind: Option<RecordKind>) -> Self {
        Self {
            edge,
            kind,
            listening: AtomicUsize::new(0),
            listeners: Mutex::new(Vec::new()),
        }
    }

    pub fn edge(&self) -> &str {
        &self.edge
    }

    /// Whether anyone listens: the only cost on the hot path while nobody does.
    #[inline]
    pub fn is_listened(&self) -> bool {
        self.listening.load(Ordering::Relaxed) > 0
    }

    /// Copies records of `records` to the listeners (call only when [`Self::is_listened`]).
    pub fn offer(&self, records: &Records) {
        if self.kind.is_some_and(|k| k != records.kind()) {
            return;
        }
        let Ok(mut listeners) = self.listeners.lock() else {
            return;
        };
        let wanted = listeners.iter().map(|l| l.remaining).max().unwrap_or(0);
        let lines = json_lines(records, wanted);
        for listener in listeners.iter_mut() {
            for line in lines.iter().take(listener.remaining) {
                match listener.tx.try_send(line.clone()) {
                    Ok(()) => listener.remaining -= 1,
                    Err(_) => break,
                }
            }
        }
        listeners.retain(|l| l.remaining > 0 && !l.tx.is_closed());
        self.listening.store(listeners.len(), Ordering::Relaxed);
    }

    fn listen(&self, limit: usize) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel(limit);
        if let Ok(mut listeners) = self.listeners.lock() {
            // Listeners whose request ended (timed out) go now rather than at the next batch.
            listeners.retain(|l| !l.tx.is_closed());
            listeners.push(Listener {
                remaining: limit,
                tx,
            });
            self.listening.store(listeners.len(), Ordering::Relaxed);
        }
        rx
    }
}

/// Up to `max` records of a batch, one JSON object each.
fn json_lines(records: &Records, max: usize) -> Vec<String> {
    fn lines<T: serde::Serialize>(rows: &[T], max: usize) -> Vec<String> {
        rows.iter()
            .take(max)
            .filter_map(|r| serde_json::to_string(r).ok())
            .collect()
    }
    match records {
        Records::Probes(v) => lines(v, max),
        Records::MatchedPoints(v) => lines(v, max),
        Records::Observations(v) => lines(v, max),
        Records::Speeds(v) => lines(v, max),
    }
}

/// Every tappable edge of a pipeline.
pub struct Tap {
    points: BTreeMap<String, Arc<TapPoint>>,
}

impl Tap {
    /// The tap of `config`'s edges, or `None` when `telemetry.tap` is off.
    pub fn for_config(config: &PipelineConfig) -> Option<Arc<Tap>> {
        if !config.telemetry.tap {
            return None;
        }
        let points = config
            .edges
            .iter()
            .map(|(from, _)| {
                (
                    from.clone(),
                    Arc::new(TapPoint::new(from.clone(), config.output_kind(from))),
                )
            })
            .collect();
        Some(Arc::new(Tap { points }))
    }

    /// The tap points of `component`'s outgoing edges.
    pub fn points_of(&self, component: &str) -> Vec<Arc<TapPoint>> {
        self.points
            .values()
            .filter(|p| split_endpoint(&p.edge).0 == component)
            .cloned()
            .collect()
    }

    pub fn edges(&self) -> impl Iterator<Item = &str> {
        self.points.keys().map(String::as_str)
    }

    /// Starts listening to `edge` for up to `limit` records.
    pub fn listen(&self, edge: &str, limit: usize) -> Result<mpsc::Receiver<String>, TapError> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(TapError::Limit(limit));
        }
        let point = self.points.get(edge).ok_or_else(|| TapError::UnknownEdge {
            edge: edge.to_string(),
            known: self.edges().collect::<Vec<_>>().join(", "),
        })?;
        Ok(point.listen(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Probe;

    fn probes(n: usize) -> Records {
        Records::Probes(
            (0..n)
                .map(|i| Probe {
                    vehicle_id: format!("v{i}"),
                    ts_ms: i as i64,
                    lat: 60.0,
                    lon: 24.0,
                    speed_mps: None,
                    heading_deg: None,
                    accuracy_m: None,
                })
                .collect(),
        )
    }

    #[test]
    fn a_listener_gets_at_most_its_limit_then_goes() {
        let point = TapPoint::new("clean".into(), Some(RecordKind::Probe));
        assert!(!point.is_listened());
        let mut rx = point.listen(3);
        assert!(point.is_listened());
        point.offer(&probes(2));
        point.offer(&probes(5));
        assert!(!point.is_listened(), "done after 3 records");
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].contains("\"vehicle_id\":\"v0\""), "{got:?}");
        assert!(
            got[2].contains("\"vehicle_id\":\"v0\""),
            "second batch starts again"
        );
    }

    #[test]
    fn records_of_another_port_are_not_offered() {
        let point = TapPoint::new("assign".into(), Some(RecordKind::SegmentObservation));
        let mut rx = point.listen(3);
        point.offer(&probes(2));
        assert!(rx.try_recv().is_err());
        assert!(point.is_listened());
    }

    #[test]
    fn unknown_edges_and_limits_are_refused() {
        let tap = Tap {
            points: BTreeMap::from([(
                "clean".to_string(),
                Arc::new(TapPoint::new("clean".into(), None)),
            )]),
        };
        assert!(matches!(
            tap.listen("nope", 1),
            Err(TapError::UnknownEdge { known, .. }) if known == "clean"
        ));
        assert_eq!(tap.listen("clean", 0).err(), Some(TapError::Limit(0)));
        assert!(tap.listen("clean", 1).is_ok());
        assert_eq!(tap.points_of("clean").len(), 1);
        assert!(tap.points_of("assign").is_empty());
    }
}
