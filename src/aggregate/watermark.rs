//! The event-time watermark: the largest event time seen minus the out-of-orderness bound,
//! kept per input partition so that one idle partition cannot stall the rest.
//!
//! The watermark is the minimum over the *active* inputs of (max event time − bound). An
//! input that has delivered nothing for `idle_timeout_ms` of processing time stops holding it
//! back. When every input is idle nothing is in flight, so the bound no longer applies: the
//! watermark moves to the largest event time seen and then on with processing time (max
//! event time + idle time past the timeout), so the last windows of a stream that pauses are
//! still emitted, at most one window length after the timeout. The watermark never goes
//! back.
//!
//! Behind a source with lanes (Kafka, Kinesis), the source's event-time frontier (see
//! [`crate::runtime::frontier`]) caps the watermark at frontier − bound, so records of a
//! partition read more slowly than the others are not made late by the others' records,
//! even after stages that mix partitions (clean, assign). While the frontier says some lane
//! upstream still has records to read, the idle rule is off: such a lane is slow, not idle.
//!
//! Processing time is passed in by the caller (`now_ms`, any monotonic millisecond clock):
//! this module reads no clock, so tests drive it with plain numbers. With `idle_timeout_ms`
//! = 0 the idle rule is off and the watermark depends on event time only.

/// One input's clock.
#[derive(Debug, Clone, Copy)]
struct InputClock {
    input: u32,
    max_event_ms: i64,
    last_seen_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Watermark {
    bound_ms: i64,
    idle_timeout_ms: i64,
    inputs: Vec<InputClock>,
    value_ms: i64,
    /// The upstream frontier (event ms, every lane caught up), once one is known.
    frontier: Option<(i64, bool)>,
}

impl Watermark {
    pub fn new(bound_ms: i64, idle_timeout_ms: i64) -> Self {
        Self {
            bound_ms,
            idle_timeout_ms,
            inputs: Vec::new(),
            value_ms: i64::MIN,
            frontier: None,
        }
    }

    /// The current watermark in epoch ms (`i64::MIN` before any input).
    pub fn value_ms(&self) -> i64 {
        self.value_ms
    }

    /// The largest event time seen on any input.
    pub fn max_event_ms(&self) -> Option<i64> {
        self.inputs
            .iter()
            .map(|c| c.max_event_ms)
            .filter(|&ms| ms != i64::MIN)
            .max()
    }

    /// Announces an input before its first event (a partition just assigned): it holds the
    /// watermark back as an input with nothing read yet would, until it delivers or goes
    /// idle, so data already read from other inputs cannot make its first records late.
    pub fn expect_input(&mut self, input: u32, now_ms: i64) {
        if !self.inputs.iter().any(|c| c.input == input) {
            self.inputs.push(InputClock {
                input,
                max_event_ms: i64::MIN,
                last_seen_ms: now_ms,
            });
        }
    }

    /// Notes an event of `input` at `event_ms`, received at processing time `now_ms`.
    pub fn observe(&mut self, input: u32, event_ms: i64, now_ms: i64) {
        match self.inputs.iter_mut().find(|c| c.input == input) {
            Some(c) => {
                c.max_event_ms = c.max_event_ms.max(event_ms);
                c.last_seen_ms = c.last_seen_ms.max(now_ms);
            }
            None => self.inputs.push(InputClock {
                input,
                max_event_ms: event_ms,
                last_seen_ms: now_ms,
            }),
        }
    }

    /// Notes that `input` delivered at processing time `now_ms`, without an event time (a
    /// duplicate of an observation already counted): it is not idle, and its clock stays.
    pub fn heard_from(&mut self, input: u32, now_ms: i64) {
        if let Some(c) = self.inputs.iter_mut().find(|c| c.input == input) {
            c.last_seen_ms = c.last_seen_ms.max(now_ms);
        }
    }

    /// The upstream frontier moved: the watermark stays at or below `frontier_ms` − bound,
    /// and while not `caught_up` no input counts as idle.
    pub fn set_frontier(&mut self, frontier_ms: i64, caught_up: bool) {
        let ms = self
            .frontier
            .map_or(frontier_ms, |(f, _)| f.max(frontier_ms));
        self.frontier = Some((ms, caught_up));
    }

    /// Forgets an input (e.g. a partition revoked from this instance).
    pub fn remove_input(&mut self, input: u32) {
        self.inputs.retain(|c| c.input != input);
    }

    /// Recomputes the watermark at processing time `now_ms` and returns it.
    pub fn advance(&mut self, now_ms: i64) -> i64 {
        let idle_rule =
            self.idle_timeout_ms > 0 && self.frontier.is_none_or(|(_, caught_up)| caught_up);
        let idle = |c: &InputClock| idle_rule && now_ms - c.last_seen_ms >= self.idle_timeout_ms;
        let cap_ms = self
            .frontier
            .map_or(i64::MAX, |(f, _)| f.saturating_sub(self.bound_ms));
        let active_min = self
            .inputs
            .iter()
            .filter(|c| !idle(c))
            .map(|c| c.max_event_ms)
            .min();
        let candidate = match active_min {
            Some(max_event_ms) => Some(max_event_ms.saturating_sub(self.bound_ms).min(cap_ms)),
            // Every input idle, which the idle rule allows only when nothing is in flight
            // upstream either: no cap.
            None => self
                .inputs
                .iter()
                .max_by_key(|c| c.last_seen_ms)
                .map(|last| {
                    let max_event_ms = self.max_event_ms().unwrap_or(last.max_event_ms);
                    let idle_ms = now_ms - last.last_seen_ms - self.idle_timeout_ms;
                    max_event_ms.saturating_add(idle_ms.max(0))
                }),
        };
        if let Some(c) = candidate {
            self.value_ms = self.value_ms.max(c);
        }
        self.value_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_trails_the_max_event_time_by_the_bound() {
        let mut w = Watermark::new(5_000, 0);
        assert_eq!(w.advance(0), i64::MIN);
        w.observe(0, 100_000, 0);
        w.observe(0, 90_000, 0);
        assert_eq!(w.advance(0), 95_000);
        // It never goes back.
        w.remove_input(0);
        w.observe(0, 10_000, 0);
        assert_eq!(w.advance(0), 95_000);
    }

    #[test]
    fn the_slowest_active_input_holds_the_watermark() {
        let mut w = Watermark::new(0, 10_000);
        w.observe(0, 100_000, 0);
        w.observe(1, 50_000, 0);
        assert_eq!(w.advance(1_000), 50_000);
        // Input 1 goes quiet while input 0 keeps delivering: after the timeout it no longer
        // holds the watermark back.
        w.observe(0, 120_000, 12_000);
        assert_eq!(w.advance(12_000), 120_000);
    }

    #[test]
    fn an_expected_input_holds_the_watermark_until_it_delivers_or_idles() {
        let mut w = Watermark::new(0, 10_000);
        w.observe(0, 100_000, 0);
        w.expect_input(1, 0);
        assert_eq!(w.advance(1_000), i64::MIN, "input 1 has read nothing yet");
        assert_eq!(w.max_event_ms(), Some(100_000));
        w.observe(1, 90_000, 2_000);
        assert_eq!(w.advance(2_000), 90_000);
        // An expected input that never delivers stops holding it after the idle timeout.
        w.expect_input(2, 3_000);
        assert_eq!(w.advance(4_000), 90_000);
        w.observe(0, 120_000, 13_000);
        w.observe(1, 120_000, 13_000);
        assert_eq!(w.advance(13_000), 120_000);
    }

    #[test]
    fn the_upstream_frontier_caps_the_watermark_and_holds_the_idle_rule_while_behind() {
        let mut w = Watermark::new(30_000, 10_000);
        w.observe(0, 500_000, 0);
        w.set_frontier(200_000, false);
        assert_eq!(w.advance(0), 170_000, "capped at frontier - bound");
        // Nothing arrives for long, but a lane upstream still has records: not idle.
        assert_eq!(w.advance(60_000), 170_000);
        w.set_frontier(400_000, false);
        assert_eq!(w.advance(61_000), 370_000);
        // Every lane caught up: no cap, and the idle rule applies again.
        w.set_frontier(i64::MAX, true);
        assert_eq!(w.advance(62_000), 500_000 + 62_000 - 10_000);
    }

    #[test]
    fn idle_inputs_do_not_stall_the_watermark() {
        let mut w = Watermark::new(30_000, 10_000);
        w.observe(0, 100_000, 0);
        assert_eq!(w.advance(5_000), 70_000);
        assert_eq!(w.advance(9_999), 70_000);
        // Idle: nothing is in flight, so the bound is dropped, then processing time counts.
        assert_eq!(w.advance(10_001), 100_001);
        assert_eq!(w.advance(70_000), 160_000);
    }
}
