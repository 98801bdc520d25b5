//! The live view (`telemetry.live_map = true`): the latest complete window of every segment
//! that a running pipeline's aggregate published, served by the HTTP server as GeoJSON
//! (`GET /speeds`, filterable with `?bbox=minlon,minlat,maxlon,maxlat`) and drawn by a page
//! (`GET /map`: inline JavaScript on a canvas, no tile server) coloured like `pipeline
//! render`.
//!
//! Cost: none when off (no component holds a [`LiveSpeeds`]); while on, each batch of speeds
//! a component sends updates one row per (segment, estimator) under a mutex. GeoJSON is
//! built only when someone asks for it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use crate::graph::RoadGraph;
use crate::record::SegmentSpeed;
use crate::render::{colour, CLASSES, NO_DATA};

/// The page at `/map`.
pub const MAP_HTML: &str = include_str!("live_map.html");

/// `?bbox=` that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bbox must be minlon,minlat,maxlon,maxlat in degrees, got `{0}`")]
pub struct BboxError(String);

/// A box in degrees: min lon, min lat, max lon, max lat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bbox([f64; 4]);

impl std::str::FromStr for Bbox {
    type Err = BboxError;
    fn from_str(s: &str) -> Result<Self, BboxError> {
        let err = || BboxError(s.to_string());
        let v: Vec<f64> = s
            .split(',')
            .map(|x| x.trim().parse::<f64>().map_err(|_| err()))
            .collect::<Result<_, _>>()?;
        match v[..] {
            [a, b, c, d] if v.iter().all(|x| x.is_finite()) && a <= c && b <= d => {
                Ok(Self([a, b, c, d]))
            }
            _ => Err(err()),
        }
    }
}

impl Bbox {
    /// Whether a polyline of (lat, lon) points has a point in the box or crosses it (its
    /// bounding box overlaps the box: a generous test, fine for a map view).
    fn overlaps(&self, points: &[[f64; 2]]) -> bool {
        let [min_lon, min_lat, max_lon, max_lat] = self.0;
        let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
        for [lat, lon] in points {
            lo = [lo[0].min(*lat), lo[1].min(*lon)];
            hi = [hi[0].max(*lat), hi[1].max(*lon)];
        }
        lo[0] <= max_lat && hi[0] >= min_lat && lo[1] <= max_lon && hi[1] >= min_lon
    }
}

/// The latest published window per (segment, estimator), over one road graph.
pub struct LiveSpeeds {
    graph: Arc<RoadGraph>,
    latest: Mutex<BTreeMap<(u64, String), SegmentSpeed>>,
    /// `/segments`, built at its first request.
    segments: OnceLock<String>,
}

impl LiveSpeeds {
    pub fn new(graph: Arc<RoadGraph>) -> Self {
        Self {
            graph,
            latest: Mutex::new(BTreeMap::new()),
            segments: OnceLock::new(),
        }
    }

    /// Takes published speeds: a later window, or a later revision of the same window,
    /// replaces what a segment had.
    pub fn record(&self, rows: &[SegmentSpeed]) {
        let Ok(mut latest) = self.latest.lock() else {
            return;
        };
        for row in rows {
            let key = (row.segment_id, row.estimator.to_string());
            let newer = latest.get(&key).is_none_or(|held| {
                (row.window_start_ms, row.revision) >= (held.window_start_ms, held.revision)
            });
            if newer {
                latest.insert(key, row.clone());
            }
        }
    }

    /// The estimators held, in sort order.
    fn estimators(latest: &BTreeMap<(u64, String), SegmentSpeed>) -> Vec<&str> {
        let mut names: Vec<&str> = latest.keys().map(|(_, e)| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// `/speeds`: a GeoJSON FeatureCollection of one estimator's latest windows (`estimator`,
    /// or else `space_mean` when held, else the first name), inside `bbox` when given.
    pub fn speeds_geojson(&self, estimator: Option<&str>, bbox: Option<Bbox>) -> String {
        let latest = match self.latest.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let names = Self::estimators(&latest);
        let chosen = estimator
            .map(str::to_string)
            .or_else(|| {
                names
                    .iter()
                    .find(|n| **n == "space_mean")
                    .or(names.first())
                    .map(|n| n.to_string())
            })
            .unwrap_or_default();
        let mut features = Vec::new();
        for ((segment_id, _), row) in latest.iter().filter(|((_, e), _)| *e == chosen) {
            let Some(index) = self.graph.index_of(*segment_id) else {
                continue;
            };
            let points = self.graph.geometry(index);
            if bbox.is_some_and(|b| !b.overlaps(points)) {
                continue;
            }
            let limit_kmh = f64::from(self.graph.segment(index).speed_limit_kmh);
            let limit_mps = limit_kmh / 3.6;
            let ratio = if limit_mps > 0.0 {
                row.speed_mps / limit_mps
            } else {
                f64::NAN
            };
            features.push(format!(
                "{{\"type\":\"Feature\",\"geometry\":{},\"properties\":{{\"segment_id\":\"{}\",\
                 \"estimator\":{},\"window_start_ms\":{},\"window_end_ms\":{},\"speed_mps\":{},\
                 \"samples\":{},\"vehicles\":{},\"speed_limit_kmh\":{},\"ratio\":{},\
                 \"colour\":\"{}\"}}}}",
                line_string(points),
                segment_id,
                json_string(&chosen),
                row.window_start_ms,
                row.window_end_ms,
                json_number(row.speed_mps),
                row.samples,
                row.vehicles,
                json_number(limit_kmh),
                json_number(ratio),
                colour(row.speed_mps, limit_kmh),
            ));
        }
        let estimators: Vec<String> = names.iter().map(|n| json_string(n)).collect();
        format!(
            "{{\"type\":\"FeatureCollection\",\"estimator\":{},\"estimators\":[{}],\"features\":[{}]}}",
            json_string(&chosen),
            estimators.join(","),
            features.join(",")
        )
    }

    /// `/segments`: every segment's geometry as GeoJSON (the map's background), built once.
    pub fn segments_geojson(&self) -> &str {
        self.segments.get_or_init(|| {
            let mut out = String::from("{\"type\":\"FeatureCollection\",\"features\":[");
            for (k, index) in self.graph.indices().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{{\"type\":\"Feature\",\"geometry\":{},\"properties\":{{\"segment_id\":\"{}\"}}}}",
                    line_string(self.graph.geometry(index)),
                    self.graph.segment(index).segment_id
                );
            }
            let legend: Vec<String> = CLASSES
                .iter()
                .map(|(min, c, label)| {
                    format!(
                        "{{\"min_ratio\":{min},\"colour\":\"{c}\",\"label\":{}}}",
                        json_string(label)
                    )
                })
                .collect();
            let _ = write!(
                out,
                "],\"legend\":[{}],\"no_data\":\"{NO_DATA}\"}}",
                legend.join(",")
            );
            out
        })
    }
}

fn line_string(points: &[[f64; 2]]) -> String {
    let coords: Vec<String> = points
        .iter()
        .map(|[lat, lon]| format!("[{},{}]", json_number(*lon), json_number(*lat)))
        .collect();
    format!(
        "{{\"type\":\"LineString\",\"coordinates\":[{}]}}",
        coords.join(",")
    )
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{osm_writer::synthetic_grid, ImportConfig};

    fn row(segment_id: u64, start: i64, speed_mps: f64, revision: u32) -> SegmentSpeed {
        SegmentSpeed {
            segment_id,
            window_start_ms: start,
            window_end_ms: start + 60_000,
            estimator: "space_mean".into(),
            samples: 3,
            vehicles: 2,
            speed_mps,
            p15_speed_mps: None,
            p50_speed_mps: None,
            p85_speed_mps: None,
            travel_time_s: 10.0,
            graph_version: 0,
            revision,
        }
    }

    #[test]
    fn the_latest_window_and_revision_win_and_bbox_filters() {
        let graph = Arc::new(
            synthetic_grid(4, 4, 200.0, 60.17, 24.94)
                .build_graph(&ImportConfig::default())
                .expect("grid builds"),
        );
        let live = LiveSpeeds::new(graph.clone());
        let ids: Vec<u64> = graph.segments().iter().map(|s| s.segment_id).collect();
        live.record(&[row(ids[0], 60_000, 5.0, 0), row(ids[1], 60_000, 5.0, 0)]);
        live.record(&[row(ids[0], 0, 1.0, 3), row(ids[0], 60_000, 7.0, 1)]);
        let all: serde_json::Value =
            serde_json::from_str(&live.speeds_geojson(None, None)).expect("GeoJSON");
        let features = all["features"].as_array().expect("features");
        assert_eq!(features.len(), 2);
        let id0 = ids[0].to_string();
        let first = &features
            .iter()
            .find(|f| f["properties"]["segment_id"] == id0.as_str())
            .expect("segment 0")["properties"];
        assert_eq!(first["speed_mps"], 7.0);
        assert_eq!(first["window_start_ms"], 60_000);
        // A box far away holds nothing; one around the grid holds both.
        let away: Bbox = "0,0,1,1".parse().expect("bbox");
        let here: Bbox = "24.9,60.1,25.0,60.2".parse().expect("bbox");
        let count = |b| {
            let v: serde_json::Value =
                serde_json::from_str(&live.speeds_geojson(None, Some(b))).expect("GeoJSON");
            v["features"].as_array().map_or(0, Vec::len)
        };
        assert_eq!(count(away), 0);
        assert_eq!(count(here), 2);
        assert!("1,2,3".parse::<Bbox>().is_err());
        assert!("3,0,1,1".parse::<Bbox>().is_err());
        let segments: serde_json::Value =
            serde_json::from_str(live.segments_geojson()).expect("GeoJSON");
        assert_eq!(
            segments["features"].as_array().map(Vec::len),
            Some(graph.len())
        );
    }
}
