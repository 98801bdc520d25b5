//! `pipeline render` end to end on a generated city grid and generated speeds: a golden PNG
//! compared by pixel statistics (share of each legend colour, mean brightness), not bytes,
//! so a font or anti-aliasing change does not break it; the SVG's structure (one path per
//! segment, coloured by its speed against its limit, a legend); window selection (by
//! default the latest complete window, not a partial last one); speeds read from a glob or
//! a directory of rolled files; a usage error for an unknown extension; and the picture of
//! `make run`'s demo fleet (its `generate` flags, on a grid city), which congestion must put
//! in orange and red.
//!
//! The golden picture is `testdata/render/grid.png`; `UPDATE_GOLDEN=1 cargo test --test
//! render` rewrites it after an intended change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use parquet::arrow::ArrowWriter;

use pipeline::graph::{osm_writer::synthetic_grid, ImportConfig, RoadGraph};
use pipeline::record::{ArrowRecord, SegmentSpeed};
use pipeline::render::{colour, CLASSES, NO_DATA};

#[path = "common/pixels.rs"]
mod pixels;
use pixels::pixel_stats;

const W1: i64 = 1_700_000_000_000;
const W2: i64 = W1 + 60_000;
/// The last window, partial: the data ends inside it.
const W3: i64 = W2 + 60_000;

fn grid() -> RoadGraph {
    synthetic_grid(5, 5, 200.0, 60.17, 24.94)
        .build_graph(&ImportConfig::default())
        .expect("grid builds")
}

/// Speeds for three windows: in the second, segment k (in index order) runs at a ratio of
/// its limit that cycles through every legend class, and every seventh has no row; in the
/// first every segment runs at its limit; the third, partial, has a few segments at a fifth
/// of their limit.
fn speeds(graph: &RoadGraph) -> Vec<SegmentSpeed> {
    let ratios = [1.0, 0.7, 0.5, 0.2];
    let estimator: std::borrow::Cow<'static, str> = "space_mean".into();
    let mut rows = Vec::new();
    for (k, s) in graph.segments().iter().enumerate() {
        let limit_mps = f64::from(s.speed_limit_kmh) / 3.6;
        let row = |start: i64, speed_mps: f64| SegmentSpeed {
            segment_id: s.segment_id,
            window_start_ms: start,
            window_end_ms: start + 60_000,
            estimator: estimator.clone(),
            samples: 3,
            vehicles: 2,
            speed_mps,
            p15_speed_mps: None,
            p50_speed_mps: None,
            p85_speed_mps: None,
            travel_time_s: s.length_m / speed_mps,
            graph_version: graph.version(),
            revision: 0,
        };
        rows.push(row(W1, limit_mps));
        if k % 7 != 6 {
            rows.push(row(W2, limit_mps * ratios[k % 4]));
        }
        if k % 5 == 0 {
            rows.push(row(W3, limit_mps * 0.2));
        }
    }
    rows
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    graph: RoadGraph,
    rows: Vec<SegmentSpeed>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let graph = grid();
        graph.write(root.join("grid.graph")).expect("graph written");
        let rows = speeds(&graph);
        write_speeds(&root.join("speeds.parquet"), &rows);
        Self {
            _dir: dir,
            root,
            graph,
            rows,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn render(&self, out: &str, extra: &[&str]) -> std::process::Output {
        self.render_speeds(&self.path("speeds.parquet"), out, extra)
    }

    fn render_speeds(&self, speeds: &Path, out: &str, extra: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .arg("render")
            .arg("--graph")
            .arg(self.path("grid.graph"))
            .arg("--speeds")
            .arg(speeds)
            .arg("--out")
            .arg(self.path(out))
            .args(extra)
            .env("PIPELINE_LOG", "warn")
            .output()
            .expect("run pipeline render")
    }
}

fn write_speeds(path: &Path, rows: &[SegmentSpeed]) {
    let batch = SegmentSpeed::to_record_batch(rows).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

#[test]
fn png_matches_the_golden_picture_by_pixel_statistics() {
    let f = Fixture::new();
    let out = f.render("map.png", &["--width-px", "400"]);
    assert!(out.status.success(), "{out:?}");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/render/grid.png");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().expect("parent")).expect("mkdir");
        std::fs::copy(f.path("map.png"), &golden).expect("update golden");
    }
    let (got, got_brightness, got_size) = pixel_stats(&f.path("map.png"));
    let (want, want_brightness, want_size) = pixel_stats(&golden);
    assert_eq!(got_size, want_size, "picture size");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 0.002 + 0.1 * w,
            "colour {k}: {g:.4} of the pixels, golden {w:.4}"
        );
        // Every class is on the map: the fixture cycles through all of them.
        assert!(*g > 0.001, "colour {k} missing: {got:?}");
    }
    // Loose enough for a machine without the legend's fonts (text is a few % of pixels).
    assert!(
        (got_brightness - want_brightness).abs() < 8.0,
        "brightness {got_brightness:.1}, golden {want_brightness:.1}"
    );
}

/// Every `<path class="segment" …>` of an SVG: segment id → stroke colour.
fn segment_strokes(svg: &str) -> BTreeMap<u64, String> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].to_string())
    };
    svg.split("<path ")
        .skip(1)
        .filter(|tag| tag.starts_with("class=\"segment\""))
        .map(|tag| {
            let tag = &tag[..tag.find("/>").unwrap_or(tag.len())];
            let id = attr(tag, "data-segment-id")
                .and_then(|v| v.parse().ok())
                .expect("segment id");
            (id, attr(tag, "stroke").expect("stroke"))
        })
        .collect()
}

#[test]
fn svg_has_one_coloured_path_per_segment_and_a_legend() {
    let f = Fixture::new();
    let out = f.render("map.svg", &["--width-px", "400"]);
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(f.path("map.svg")).expect("svg");
    // Well-formed: usvg parses it.
    resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default()).expect("valid SVG");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\""));

    let strokes = segment_strokes(&svg);
    assert_eq!(strokes.len(), f.graph.len(), "one path per segment");
    let latest: BTreeMap<u64, f64> = f
        .rows
        .iter()
        .filter(|r| r.window_start_ms == W2)
        .map(|r| (r.segment_id, r.speed_mps))
        .collect();
    for s in f.graph.segments() {
        let want = latest
            .get(&s.segment_id)
            .map_or(NO_DATA, |v| colour(*v, f64::from(s.speed_limit_kmh)));
        assert_eq!(strokes[&s.segment_id], want, "segment {}", s.segment_id);
    }

    let legend = &svg[svg.find("<g id=\"legend\"").expect("a legend")..];
    assert_eq!(
        legend.matches("class=\"swatch\"").count(),
        CLASSES.len() + 1
    );
    for (_, c, _) in CLASSES {
        assert!(legend.contains(&format!("fill=\"{c}\"")), "swatch {c}");
    }
    assert!(
        legend.contains("2023-11-14 22:14:20 UTC"),
        "the latest window is named"
    );
    assert!(legend.contains("space_mean"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("of {} segments", f.graph.len())),
        "{stdout}"
    );
}

/// Regression: the demo drew its partial last window (1 746 samples against 6 000–8 000 in a
/// full one). By default the latest complete window is drawn, and the output says which
/// window was left out and how to draw it.
#[test]
fn the_default_window_is_the_latest_complete_one_not_the_partial_last() {
    let f = Fixture::new();
    let out = f.render("default.svg", &["--width-px", "400"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "2023-11-14 22:14:20 UTC to 2023-11-14 22:15:20 UTC, the latest complete one"
        ) && stdout.contains(&format!("--window-start-ms {W3} draws it")),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(f.path("default.svg")).expect("svg");
    let w2 = segment_strokes(&svg);

    // Asked for, the partial window is drawn: a fifth of the limit where it has a row.
    let out = f.render(
        "last.svg",
        &["--width-px", "400", "--window-start-ms", &W3.to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(f.path("last.svg")).expect("svg");
    let w3 = segment_strokes(&svg);
    let red = CLASSES[3].1;
    let partial: Vec<u64> = f
        .rows
        .iter()
        .filter(|r| r.window_start_ms == W3)
        .map(|r| r.segment_id)
        .collect();
    assert!(!partial.is_empty());
    assert!(partial.iter().all(|id| w3[id] == red), "{w3:?}");
    assert!(w3.values().filter(|c| *c != NO_DATA).count() == partial.len());
    assert_ne!(w2, w3);

    // Data shorter than a window: the only window is drawn, and said to be partial.
    let only: Vec<SegmentSpeed> = f
        .rows
        .iter()
        .filter(|r| r.window_start_ms == W3)
        .cloned()
        .collect();
    write_speeds(&f.path("only.parquet"), &only);
    let out = f.render_speeds(&f.path("only.parquet"), "only.svg", &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("the only one, which may be partial"));
}

/// Regression: `render` took one file only and failed on the numbered files a rolling
/// Parquet sink writes (`speeds-00000.parquet`, …). A glob and a directory read them all,
/// as the Parquet source reads its paths.
#[test]
fn speeds_are_read_from_a_glob_or_a_directory_of_rolled_files() {
    let f = Fixture::new();
    let rolled = f.path("rolled");
    std::fs::create_dir(&rolled).expect("mkdir");
    let (first, rest) = f.rows.split_at(f.rows.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    for (k, part) in [first, second, third].into_iter().enumerate() {
        write_speeds(&rolled.join(format!("speeds-{k:05}.parquet")), part);
    }
    let one = f.render("one.svg", &["--width-px", "400"]);
    assert!(one.status.success(), "{one:?}");
    let want = std::fs::read_to_string(f.path("one.svg")).expect("svg");
    for (speeds, out) in [
        (rolled.join("speeds-*.parquet"), "glob.svg"),
        (rolled.clone(), "dir.svg"),
    ] {
        let got = f.render_speeds(&speeds, out, &["--width-px", "400"]);
        assert!(got.status.success(), "{got:?}");
        assert_eq!(
            std::fs::read_to_string(f.path(out)).expect("svg"),
            want,
            "{out}"
        );
    }
    let none = f.render_speeds(&rolled.join("nothing-*.parquet"), "none.svg", &[]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stderr).contains("nothing-*.parquet"));
}

#[test]
fn window_start_picks_an_earlier_window() {
    let f = Fixture::new();
    let t = (W1 + 30_000).to_string();
    let out = f.render("early.svg", &["--width-px", "400", "--window-start-ms", &t]);
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(f.path("early.svg")).expect("svg");
    // In the first window every segment runs at its limit.
    let strokes = segment_strokes(&svg);
    assert!(strokes.values().all(|c| c == CLASSES[0].1), "{strokes:?}");
    assert!(svg.contains("2023-11-14 22:13:20 UTC"));

    let before = f.render("none.svg", &["--window-start-ms", &(W1 - 1).to_string()]);
    assert_eq!(before.status.code(), Some(1), "{before:?}");
    assert!(String::from_utf8_lossy(&before.stderr).contains("no window starts at or before"));
}

#[test]
fn an_unknown_extension_is_a_usage_error() {
    let f = Fixture::new();
    let out = f.render("map.jpg", &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(".png or .svg"));
}

/// The flags `make run` gives `pipeline generate` (the Makefile's `run` recipe), but the
/// files it names.
fn demo_generate_flags() -> Vec<String> {
    let makefile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Makefile"))
        .expect("Makefile");
    let recipe = makefile
        .split("\nrun:")
        .nth(1)
        .expect("a `run` target")
        .replace("\\\n", " ");
    let line = recipe
        .lines()
        .find(|l| l.contains("$(BIN) generate"))
        .expect("`make run` generates probes");
    let words: Vec<&str> = line.split_whitespace().skip(2).collect();
    let mut flags = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let takes_file = ["--graph", "--out", "--truth"].contains(&words[i]);
        if !takes_file {
            flags.push(words[i].to_string());
        }
        i += 1;
        if i < words.len() && !words[i].starts_with("--") {
            if !takes_file {
                flags.push(words[i].to_string());
            }
            i += 1;
        }
    }
    assert!(flags.iter().any(|f| f == "--seed"), "{flags:?}");
    flags
}

/// Share of the orange and red pixels among those of the four speed classes, in the
/// picture `make run` would draw of a grid city: generate with the demo's flags (plus
/// `extra`), replay, render the last window.
fn demo_congested_share(extra: &[&str]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = synthetic_grid(8, 8, 150.0, 60.17, 24.94)
        .build_graph(&ImportConfig::default())
        .expect("grid builds");
    let graph_path = dir.path().join("city.graph");
    graph.write(&graph_path).expect("graph written");
    let run = |cmd: &mut Command| {
        let out = cmd
            .env("PIPELINE_LOG", "warn")
            .output()
            .expect("run pipeline");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    let bin = || Command::new(env!("CARGO_BIN_EXE_pipeline"));
    let probes = dir.path().join("probes.parquet");
    run(bin()
        .arg("generate")
        .arg("--graph")
        .arg(&graph_path)
        .args(demo_generate_flags())
        .args(extra)
        .arg("--out")
        .arg(&probes));
    let out_dir = dir.path().join("replay");
    run(bin()
        .args(["replay", "--graph"])
        .arg(&graph_path)
        .arg("--input")
        .arg(&probes)
        .arg("--out-dir")
        .arg(&out_dir));
    let png = dir.path().join("speeds.png");
    run(bin()
        .args(["render", "--graph"])
        .arg(&graph_path)
        .arg("--speeds")
        .arg(out_dir.join("speeds.parquet"))
        .arg("--out")
        .arg(&png)
        .args(["--width-px", "600"]));
    let (shares, _, _) = pixel_stats(&png);
    let classes: f64 = shares[..CLASSES.len()].iter().sum();
    assert!(classes > 0.01, "segments drawn with speeds: {shares:?}");
    (shares[2] + shares[3]) / classes
}

/// The demo shows traffic: with the generator's congestion (on by default), at least a
/// quarter of the coloured road in `make run`'s picture is orange or red (under 60 % of
/// the limit; 35 % when this was written), three times what is left without it (4 %: GPS
/// noise on short traversals).
#[test]
fn the_demo_picture_shows_congestion_in_orange_and_red() {
    let congested = demo_congested_share(&[]);
    let free = demo_congested_share(&["--no-congestion"]);
    eprintln!("orange and red: {congested:.3} with congestion, {free:.3} without");
    assert!(congested >= 0.25, "{congested:.3} of the coloured pixels");
    assert!(
        congested >= 3.0 * free,
        "{congested:.3} with congestion, {free:.3} without"
    );
}
