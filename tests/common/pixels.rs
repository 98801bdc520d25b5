//! Pixel statistics of a PNG against the legend colours of `pipeline render`: what the
//! picture tests (`tests/render.rs`, `tests/live_map.rs`) compare instead of bytes, so that
//! fonts and anti-aliasing do not break them. Included with
//! `#[path = "common/pixels.rs"] mod pixels;`.
#![allow(dead_code)]

use std::path::Path;

use pipeline::render::{CLASSES, NO_DATA};
use resvg::tiny_skia::Pixmap;

pub fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap_or(0);
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// Share of pixels of each legend colour (the four classes, then no-data), and the mean
/// brightness of the picture.
pub fn pixel_stats(png: &Path) -> (Vec<f64>, f64, (u32, u32)) {
    let pixmap = Pixmap::load_png(png).expect("a PNG");
    let palette: Vec<[u8; 3]> = CLASSES
        .iter()
        .map(|c| hex(c.1))
        .chain(std::iter::once(hex(NO_DATA)))
        .collect();
    let mut counts = vec![0usize; palette.len()];
    let mut brightness = 0.0;
    for p in pixmap.pixels() {
        let rgb = [p.red(), p.green(), p.blue()];
        brightness += rgb.iter().map(|v| f64::from(*v)).sum::<f64>() / 3.0;
        if let Some(k) = palette.iter().position(|c| {
            c.iter()
                .zip(rgb)
                .all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= 6)
        }) {
            counts[k] += 1;
        }
    }
    let n = pixmap.pixels().len() as f64;
    (
        counts.iter().map(|c| *c as f64 / n).collect(),
        brightness / n,
        (pixmap.width(), pixmap.height()),
    )
}
