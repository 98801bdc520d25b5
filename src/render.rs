//! Map pictures of segment speeds (`pipeline render`): each segment of the road graph drawn
//! in its direction of travel, coloured by the speed of one window relative to the
//! segment's limit, with a legend. The picture is an SVG document we write ourselves; PNG is
//! that SVG rasterised by resvg (system fonts for the text), so both formats show the same.
//!
//! Two-way roads are drawn as two strokes, each shifted to the right of its direction of
//! travel, so both directions stay visible. Segments without a speed in the window are thin
//! and grey.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::connector::parquet::{expand_paths, ParquetError};
use crate::graph::RoadGraph;
use crate::record::{ArrowRecord, SegmentSpeed};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Paths(#[from] ParquetError),
    #[error("{0} holds no speed rows")]
    NoSpeeds(String),
    #[error("no window starts at or before {requested_ms} ms; windows start from {first_ms} to {last_ms} ms")]
    NoWindow {
        requested_ms: i64,
        first_ms: i64,
        last_ms: i64,
    },
    #[error("no rows of estimator `{requested}`; the file has: {available}")]
    NoEstimator {
        requested: String,
        available: String,
    },
    #[error("the output must end in .png or .svg: {0}")]
    Format(PathBuf),
    #[error("the picture size {width_px}x{height_px} px is out of range")]
    Size { width_px: u32, height_px: u32 },
    #[error("rasterising the SVG: {0}")]
    Raster(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The picture format, from the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn from_path(path: &Path) -> Result<Format, RenderError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(RenderError::Format(path.to_path_buf())),
        }
    }
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Picture width; the height follows the map's aspect ratio (within limits).
    pub width_px: u32,
    /// Draw the latest window starting at or before this time; `None`: the latest complete
    /// window (see [`select`]).
    pub window_start_ms: Option<i64>,
    /// Which estimator's rows; `None`: the first name in sort order.
    pub estimator: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            width_px: 1000,
            window_start_ms: None,
            estimator: None,
        }
    }
}

/// The colour classes of the legend: speed over limit at least `min_ratio`.
pub const CLASSES: [(f64, &str, &str); 4] = [
    (0.8, "#1a9641", "≥ 80 % of the limit"),
    (0.6, "#a6d96a", "60–80 %"),
    (0.4, "#fdae61", "40–60 %"),
    (0.0, "#d7191c", "< 40 %"),
];
/// Colour of segments without a speed in the window.
pub const NO_DATA: &str = "#bdbdbd";

/// The colour of a speed relative to a limit.
pub fn colour(speed_mps: f64, limit_kmh: f64) -> &'static str {
    let limit_mps = limit_kmh / 3.6;
    if limit_mps.is_nan() || limit_mps <= 0.0 || !speed_mps.is_finite() {
        return NO_DATA;
    }
    let ratio = speed_mps / limit_mps;
    CLASSES
        .iter()
        .find(|(min, _, _)| ratio >= *min)
        .map_or(CLASSES[CLASSES.len() - 1].1, |c| c.1)
}

/// Reads every row of speeds Parquet files (our own schema): files, directories (every
/// `*.parquet` inside) or globs, expanded as the Parquet source expands them, so the numbered
/// files of a rolling sink (`speeds-*.parquet`) are read together.
pub fn read_speeds(patterns: &[String]) -> Result<Vec<SegmentSpeed>, RenderError> {
    let mut rows = Vec::new();
    for input in expand_paths(patterns)? {
        read_speeds_file(&input.path, &mut rows)?;
    }
    if rows.is_empty() {
        return Err(RenderError::NoSpeeds(patterns.join(", ")));
    }
    Ok(rows)
}

fn read_speeds_file(path: &Path, rows: &mut Vec<SegmentSpeed>) -> Result<(), RenderError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| RenderError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| err(e.into()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| err(e.into()))?;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.into()))?;
        rows.extend(SegmentSpeed::from_record_batch(&batch).map_err(|e| err(e.into()))?);
    }
    Ok(())
}

/// How the window drawn was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowChoice {
    /// The latest window starting at or before the time asked for.
    Requested,
    /// The latest complete window; the last window present, starting at `skipped_start_ms`,
    /// may be partial and was left out.
    LatestComplete { skipped_start_ms: i64 },
    /// No window is known to be complete (the data spans less than one window): the last
    /// one, which may be partial.
    OnlyPartial,
}

/// The rows drawn: one window and one estimator, the latest revision of each segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub choice: WindowChoice,
    pub estimator: String,
    /// segment_id → speed, m/s.
    pub speeds: BTreeMap<u64, f64>,
}

/// Picks the window and the estimator, and keeps the latest revision per segment.
///
/// The window is the latest one starting at or before `options.window_start_ms`, or by
/// default the latest *complete* one. The records carry no completeness flag, and the last
/// window present is often partial: `replay` flushes its open windows when the input ends,
/// and a live aggregate's output can be read while data for it still arrives. A window is
/// taken as complete when the data goes on past its end, i.e. when the last window present
/// starts at or after its end (with tumbling windows: every window but the last).
pub fn select(rows: &[SegmentSpeed], options: &RenderOptions) -> Result<Selection, RenderError> {
    let mut names: Vec<&str> = rows.iter().map(|r| &*r.estimator).collect();
    names.sort_unstable();
    names.dedup();
    let estimator = match &options.estimator {
        Some(e) if names.contains(&e.as_str()) => e.clone(),
        Some(e) => {
            return Err(RenderError::NoEstimator {
                requested: e.clone(),
                available: names.join(", "),
            })
        }
        None => names.first().map(|s| s.to_string()).unwrap_or_default(),
    };
    let of_estimator = || rows.iter().filter(|r| *r.estimator == *estimator);
    let starts = || of_estimator().map(|r| r.window_start_ms);
    let (first_ms, last_ms) = (
        starts().min().unwrap_or_default(),
        starts().max().unwrap_or_default(),
    );
    let (window_start_ms, choice) = match options.window_start_ms {
        Some(t) => (
            starts()
                .filter(|s| *s <= t)
                .max()
                .ok_or(RenderError::NoWindow {
                    requested_ms: t,
                    first_ms,
                    last_ms,
                })?,
            WindowChoice::Requested,
        ),
        None => of_estimator()
            .filter(|r| r.window_end_ms <= last_ms)
            .map(|r| r.window_start_ms)
            .max()
            .map_or((last_ms, WindowChoice::OnlyPartial), |start| {
                (
                    start,
                    WindowChoice::LatestComplete {
                        skipped_start_ms: last_ms,
                    },
                )
            }),
    };
    let mut latest: BTreeMap<u64, &SegmentSpeed> = BTreeMap::new();
    for r in of_estimator().filter(|r| r.window_start_ms == window_start_ms) {
        let slot = latest.entry(r.segment_id).or_insert(r);
        if r.revision > slot.revision {
            *slot = r;
        }
    }
    let window_end_ms = latest
        .values()
        .map(|r| r.window_end_ms)
        .max()
        .unwrap_or(window_start_ms);
    Ok(Selection {
        window_start_ms,
        window_end_ms,
        choice,
        estimator,
        speeds: latest
            .into_iter()
            .map(|(id, r)| (id, r.speed_mps))
            .collect(),
    })
}

/// `YYYY-MM-DD HH:MM:SS UTC` for an epoch-ms time (proleptic Gregorian calendar).
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What a drawing holds, for the command's summary line and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub width_px: u32,
    pub height_px: u32,
    pub segments: usize,
    pub with_speed: usize,
    /// Segments per legend class, in [`CLASSES`] order.
    pub per_class: [usize; 4],
}

/// Maps projected metres to pixels: the graph's extent fitted into the picture, north up.
struct Frame {
    min: [f64; 2],
    scale: f64,
    margin_px: f64,
    height_px: f64,
}

impl Frame {
    fn px(&self, xy: [f64; 2]) -> [f64; 2] {
        [
            self.margin_px + (xy[0] - self.min[0]) * self.scale,
            self.height_px - self.margin_px - (xy[1] - self.min[1]) * self.scale,
        ]
    }
}

/// Shifts a polyline `d` pixels to the right of its direction (y down), vertex by vertex.
fn offset_right(points: &[[f64; 2]], d: f64) -> Vec<[f64; 2]> {
    let normal = |a: [f64; 2], b: [f64; 2]| {
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len > 0.0 {
            // Right of travel on a y-down canvas is (-dy, dx).
            [-dy / len, dx / len]
        } else {
            [0.0, 0.0]
        }
    };
    (0..points.len())
        .map(|i| {
            let before = (i > 0).then(|| normal(points[i - 1], points[i]));
            let after = (i + 1 < points.len()).then(|| normal(points[i], points[i + 1]));
            let n = match (before, after) {
                (Some(a), Some(b)) => {
                    let s = [a[0] + b[0], a[1] + b[1]];
                    let len = (s[0] * s[0] + s[1] * s[1]).sqrt();
                    if len > 1e-9 {
                        [s[0] / len, s[1] / len]
                    } else {
                        a
                    }
                }
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => [0.0, 0.0],
            };
            [points[i][0] + n[0] * d, points[i][1] + n[1] * d]
        })
        .collect()
}

/// The SVG document of `selection` over `graph`.
pub fn svg(
    graph: &RoadGraph,
    selection: &Selection,
    width_px: u32,
) -> Result<(String, Drawn), RenderError> {
    if !(200..=16_384).contains(&width_px) {
        return Err(RenderError::Size {
            width_px,
            height_px: 0,
        });
    }
    let projection = graph.projection();
    let projected: Vec<Vec<[f64; 2]>> = graph
        .indices()
        .map(|i| {
            graph
                .geometry(i)
                .iter()
                .map(|p| projection.project(p[0], p[1]))
                .collect()
        })
        .collect();
    let mut min = [f64::INFINITY; 2];
    let mut max = [f64::NEG_INFINITY; 2];
    for p in projected.iter().flatten() {
        for k in 0..2 {
            min[k] = min[k].min(p[k]);
            max[k] = max[k].max(p[k]);
        }
    }
    if !min[0].is_finite() {
        min = [0.0; 2];
        max = [1.0; 2];
    }
    let extent = [(max[0] - min[0]).max(1.0), (max[1] - min[1]).max(1.0)];
    let margin_px = 20.0;
    // Room for three text lines and up to three rows of swatches.
    let legend_h = 150.0;
    let inner_w = f64::from(width_px) - 2.0 * margin_px;
    let scale = inner_w / extent[0];
    // Tall maps get a narrower scale so the picture stays at most twice as high as wide.
    let max_inner_h = 2.0 * f64::from(width_px) - 2.0 * margin_px - legend_h;
    let scale = scale.min(max_inner_h / extent[1]);
    let height_px = (extent[1] * scale + 2.0 * margin_px + legend_h).ceil() as u32;
    let frame = Frame {
        min,
        scale,
        margin_px,
        height_px: f64::from(height_px) - legend_h,
    };

    let mut drawn = Drawn {
        width_px,
        height_px,
        segments: graph.len(),
        with_speed: 0,
        per_class: [0; 4],
    };
    let mut doc = String::new();
    let w = |doc: &mut String, s: std::fmt::Arguments| {
        let _ = doc.write_fmt(s);
    };
    w(
        &mut doc,
        format_args!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width_px}\" height=\"{height_px}\" \
             viewBox=\"0 0 {width_px} {height_px}\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n\
             <rect id=\"background\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
        ),
    );
    // No-data segments first (underneath), then by class from fast to slow, so congestion
    // is drawn on top.
    let mut layers: Vec<Vec<String>> = vec![Vec::new(); CLASSES.len() + 1];
    let stroke_px = (f64::from(width_px) / 250.0).clamp(1.5, 6.0);
    for (i, points) in graph.indices().zip(&projected) {
        let segment = graph.segment(i);
        let px: Vec<[f64; 2]> = points.iter().map(|p| frame.px(*p)).collect();
        let shifted = if segment.is_oneway() {
            px
        } else {
            offset_right(&px, stroke_px * 0.6)
        };
        let mut path = String::new();
        for (k, p) in shifted.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if k == 0 { "M" } else { " L" },
                p[0],
                p[1]
            );
        }
        let (layer, fill, width) = match selection.speeds.get(&segment.segment_id) {
            Some(speed) => {
                let c = colour(*speed, f64::from(segment.speed_limit_kmh));
                let class = CLASSES
                    .iter()
                    .position(|k| k.1 == c)
                    .unwrap_or(CLASSES.len() - 1);
                drawn.with_speed += 1;
                drawn.per_class[class] += 1;
                (class + 1, c, stroke_px)
            }
            None => (0, NO_DATA, stroke_px * 0.4),
        };
        layers[layer].push(format!(
            "<path class=\"segment\" data-segment-id=\"{}\" d=\"{path}\" stroke=\"{fill}\" \
             stroke-width=\"{width:.1}\"/>",
            segment.segment_id
        ));
    }
    w(
        &mut doc,
        format_args!(
            "<g id=\"segments\" fill=\"none\" stroke-linecap=\"round\" stroke-linejoin=\"round\">\n"
        ),
    );
    for layer in [0, 4, 3, 2, 1] {
        for p in &layers[layer] {
            w(&mut doc, format_args!("{p}\n"));
        }
    }
    w(&mut doc, format_args!("</g>\n"));

    // The legend, below the map: title, window, estimator, then one swatch per class.
    let top = f64::from(height_px) - legend_h + 10.0;
    w(
        &mut doc,
        format_args!(
            "<g id=\"legend\" font-size=\"13\" fill=\"#222222\">\n\
             <text x=\"{margin_px}\" y=\"{:.0}\" font-size=\"15\" font-weight=\"bold\">Speed relative to the limit</text>\n\
             <text x=\"{margin_px}\" y=\"{:.0}\">{} to {}</text>\n\
             <text x=\"{margin_px}\" y=\"{:.0}\">estimator {}, {} of {} segments with a speed</text>\n",
            top + 14.0,
            top + 34.0,
            format_utc(selection.window_start_ms),
            format_utc(selection.window_end_ms),
            top + 52.0,
            xml_escape(&selection.estimator),
            drawn.with_speed,
            drawn.segments
        ),
    );
    let entries = CLASSES
        .iter()
        .map(|(_, c, label)| (*c, *label))
        .chain(std::iter::once((NO_DATA, "no data")));
    let inner_w = f64::from(width_px) - 2.0 * margin_px;
    let columns = ((inner_w / 180.0).floor() as usize).clamp(1, 5);
    let column_w = inner_w / columns as f64;
    for (k, (c, label)) in entries.enumerate() {
        let x = margin_px + (k % columns) as f64 * column_w;
        let y = top + 64.0 + (k / columns) as f64 * 24.0;
        w(
            &mut doc,
            format_args!(
                "<rect class=\"swatch\" x=\"{x:.0}\" y=\"{y:.0}\" width=\"24\" height=\"14\" fill=\"{c}\"/>\
                 <text x=\"{:.0}\" y=\"{:.0}\">{}</text>\n",
                x + 30.0,
                y + 12.0,
                xml_escape(label)
            ),
        );
    }
    w(&mut doc, format_args!("</g>\n</svg>\n"));
    Ok((doc, drawn))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rasterises an SVG document to PNG bytes (text with the system fonts, when any).
pub fn png(svg: &str) -> Result<Vec<u8>, RenderError> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree =
        usvg::Tree::from_str(svg, &options).map_err(|e| RenderError::Raster(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        tiny_skia::Pixmap::new(size.width(), size.height()).ok_or(RenderError::Size {
            width_px: size.width(),
            height_px: size.height(),
        })?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|e| RenderError::Raster(e.to_string()))
}

/// Draws `speeds` over `graph` into `out` (PNG or SVG by its extension).
pub fn render_file(
    graph: &RoadGraph,
    speeds: &[SegmentSpeed],
    options: &RenderOptions,
    out: &Path,
) -> Result<(Selection, Drawn), RenderError> {
    let format = Format::from_path(out)?;
    let selection = select(speeds, options)?;
    let (doc, drawn) = svg(graph, &selection, options.width_px)?;
    let bytes = match format {
        Format::Svg => doc.into_bytes(),
        Format::Png => png(&doc)?,
    };
    std::fs::write(out, bytes).map_err(|source| RenderError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok((selection, drawn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_classes_follow_the_ratio_to_the_limit() {
        assert_eq!(colour(50.0 / 3.6, 50.0), "#1a9641");
        assert_eq!(colour(35.0 / 3.6, 50.0), "#a6d96a");
        assert_eq!(colour(25.0 / 3.6, 50.0), "#fdae61");
        assert_eq!(colour(5.0 / 3.6, 50.0), "#d7191c");
        assert_eq!(colour(5.0, 0.0), NO_DATA);
        assert_eq!(colour(f64::NAN, 50.0), NO_DATA);
    }

    #[test]
    fn utc_formatting_matches_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn a_right_offset_moves_an_eastbound_line_down_the_canvas() {
        let shifted = offset_right(&[[0.0, 0.0], [10.0, 0.0]], 2.0);
        assert_eq!(shifted, vec![[0.0, 2.0], [10.0, 2.0]]);
    }
}
