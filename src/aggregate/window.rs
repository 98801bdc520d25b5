//! Event-time windows: which tumbling or sliding windows an instant belongs to.
//!
//! Windows are aligned to the epoch: a window of `size_ms` starts at every multiple of
//! `slide_ms`, and `size_ms` is a whole number of slides (validated in config), so an instant
//! lies in exactly `size_ms / slide_ms` windows. Tumbling windows are the case
//! `slide_ms == size_ms`.

/// The shape of the windows: their length and the step between consecutive starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub slide_ms: i64,
}

impl WindowSpec {
    pub fn tumbling(size_ms: i64) -> Self {
        Self {
            size_ms,
            slide_ms: size_ms,
        }
    }

    /// The start of every window containing `ts_ms` (start ≤ ts < start + size), earliest
    /// first.
    pub fn starts_containing(&self, ts_ms: i64) -> impl Iterator<Item = i64> {
        let slide_ms = self.slide_ms.max(1);
        let last = self.bucket_ms(ts_ms);
        let count = self.windows_per_instant();
        (0..count).rev().map(move |k| last - k * slide_ms)
    }

    /// The start of the latest window containing `ts_ms`: `ts_ms` rounded down to the slide.
    pub fn bucket_ms(&self, ts_ms: i64) -> i64 {
        let slide_ms = self.slide_ms.max(1);
        ts_ms.div_euclid(slide_ms) * slide_ms
    }

    /// How many windows hold each instant (size / slide, at least 1).
    pub fn windows_per_instant(&self) -> i64 {
        (self.size_ms / self.slide_ms.max(1)).max(1)
    }

    pub fn end_ms(&self, start_ms: i64) -> i64 {
        start_ms.saturating_add(self.size_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_windows_hold_each_instant_once() {
        let w = WindowSpec::tumbling(60_000);
        assert_eq!(w.starts_containing(0).collect::<Vec<_>>(), vec![0]);
        assert_eq!(w.starts_containing(59_999).collect::<Vec<_>>(), vec![0]);
        assert_eq!(
            w.starts_containing(60_000).collect::<Vec<_>>(),
            vec![60_000]
        );
        assert_eq!(w.starts_containing(-1).collect::<Vec<_>>(), vec![-60_000]);
    }

    #[test]
    fn sliding_windows_hold_each_instant_size_over_slide_times() {
        let w = WindowSpec {
            size_ms: 300_000,
            slide_ms: 60_000,
        };
        let starts: Vec<_> = w.starts_containing(250_000).collect();
        assert_eq!(starts, vec![0, 60_000, 120_000, 180_000, 240_000]);
        for s in starts {
            assert!(s <= 250_000 && 250_000 < w.end_ms(s));
        }
    }
}
