//! Rate limiting for per-record log lines: a bad record is always counted, but logged at
//! most once per interval per call site, with the number of lines suppressed since.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// One call site's limiter; see [`warn_limited!`](crate::warn_limited).
pub struct RateLimiter {
    interval_ms: u64,
    /// Milliseconds since process start of the last emitted line, plus one (0 = never).
    last_ms_plus_one: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimiter {
    pub const fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            last_ms_plus_one: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed_since_last)` when a line may be written now, else `None`.
    pub fn check(&self) -> Option<u64> {
        let now_ms = process_start().elapsed().as_millis() as u64 + 1;
        let last = self.last_ms_plus_one.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self.last_ms_plus_one.compare_exchange(
            last,
            now_ms,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// `tracing::warn!`, at most once per 10 s per call site; reports how many were suppressed.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::telemetry::ratelimit::RateLimiter =
            $crate::telemetry::ratelimit::RateLimiter::new(10_000);
        if let Some(suppressed) = LIMITER.check() {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_line_within_interval_is_suppressed_and_counted() {
        let limiter = RateLimiter::new(60_000);
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn zero_interval_never_suppresses() {
        let limiter = RateLimiter::new(0);
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), Some(0));
    }
}
