//! The event-time frontier: how far a source has read in event time, taken over its lanes
//! (Kafka partitions, Kinesis shards) so that a lane read faster than the others cannot
//! make the others' records late downstream.
//!
//! Each lane has a *clock*: the largest minimum event time of the batches it delivered (the
//! minimum, not the maximum, so one probe stamped 2099 cannot move it; the largest over
//! batches, so one stamped 1970 cannot hold it). A lane is *at its end* when the source has
//! read everything its partition or shard holds for now (Kafka's partition EOF, Kinesis'
//! `MillisBehindLatest` = 0): nothing more of it is in flight, so it stops holding the
//! frontier, whatever its clock. The frontier is then
//!
//! - the smallest clock among the lanes not at their end, when there are any: a lane that is
//!   merely slow (it still has records to read) holds it, however long it takes;
//! - the largest clock, when every lane is at its end (`caught_up`): nothing is in flight.
//!
//! A lane assigned but not yet heard from (no batch, no end) holds the frontier at its
//! start. The frontier never goes back. Stages downstream use it as a cap on their own
//! event-time clocks (see ARCHITECTURE.md, "Event time"); the source uses [`LaneClocks::ahead`]
//! to pause lanes running too far ahead of it (watermark alignment), which bounds the state
//! the stages hold while a skewed backlog is read.
//!
//! Pure bookkeeping: no clock, no I/O.

use std::collections::BTreeMap;

/// A source's event-time frontier, as batches carry it downstream ([`crate::runtime::Batch::frontier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frontier {
    /// Epoch ms (`i64::MIN` while some lane has not been heard from).
    pub event_ms: i64,
    /// Every lane the source reads is at its end: nothing is in flight from it, so a stage
    /// may apply a processing-time idle rule. While false, some lane still has records to
    /// read, and no idle rule may close what they feed.
    pub caught_up: bool,
}

impl Frontier {
    /// The frontier of several upstreams: the smallest event time, caught up only if all are.
    pub fn min(self, other: Frontier) -> Frontier {
        Frontier {
            event_ms: self.event_ms.min(other.event_ms),
            caught_up: self.caught_up && other.caught_up,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LaneClock {
    /// Largest batch-minimum event time delivered (`i64::MIN`: none yet).
    clock_ms: i64,
    at_end: bool,
}

/// The clocks of the lanes one source reads.
#[derive(Debug, Clone, Default)]
pub struct LaneClocks {
    lanes: BTreeMap<u32, LaneClock>,
    /// The frontier as last computed (monotone).
    value_ms: Option<i64>,
}

impl LaneClocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// A lane now read here: it holds the frontier until it delivers or reaches its end.
    pub fn assign(&mut self, lane: u32) {
        self.lanes.entry(lane).or_insert(LaneClock {
            clock_ms: i64::MIN,
            at_end: false,
        });
    }

    /// A lane no longer read here.
    pub fn revoke(&mut self, lane: u32) {
        self.lanes.remove(&lane);
    }

    /// A batch of `lane` whose earliest event time is `min_event_ms` left the source.
    pub fn delivered(&mut self, lane: u32, min_event_ms: i64) {
        let c = self.lanes.entry(lane).or_insert(LaneClock {
            clock_ms: i64::MIN,
            at_end: false,
        });
        c.clock_ms = c.clock_ms.max(min_event_ms);
        c.at_end = false;
    }

    /// `lane` has more to read (records arrived for it that have not left yet).
    pub fn reading(&mut self, lane: u32) {
        if let Some(c) = self.lanes.get_mut(&lane) {
            c.at_end = false;
        }
    }

    /// Everything `lane` holds for now has been read and has left the source.
    pub fn at_end(&mut self, lane: u32) {
        self.lanes
            .entry(lane)
            .or_insert(LaneClock {
                clock_ms: i64::MIN,
                at_end: true,
            })
            .at_end = true;
    }

    /// Whether every lane is at its end.
    pub fn caught_up(&self) -> bool {
        self.lanes.values().all(|c| c.at_end)
    }

    /// The frontier now (`None` before any lane is known).
    pub fn frontier(&mut self) -> Option<Frontier> {
        if self.lanes.is_empty() {
            return None;
        }
        let behind = self
            .lanes
            .values()
            .filter(|c| !c.at_end)
            .map(|c| c.clock_ms)
            .min();
        let candidate = match behind {
            Some(ms) => ms,
            None => self
                .lanes
                .values()
                .map(|c| c.clock_ms)
                .max()
                .unwrap_or(i64::MIN),
        };
        let value_ms = self.value_ms.map_or(candidate, |v| v.max(candidate));
        self.value_ms = Some(value_ms);
        Some(Frontier {
            event_ms: value_ms,
            caught_up: behind.is_none(),
        })
    }

    /// Whether `lane` runs more than `max_drift_ms` ahead of the frontier in event time (a
    /// source pauses it until the others catch up). Never true while the frontier is
    /// unknown, nor for a lane at its end.
    pub fn ahead(&self, lane: u32, max_drift_ms: i64) -> bool {
        let Some(frontier_ms) = self.value_ms.filter(|&v| v != i64::MIN) else {
            return false;
        };
        self.lanes
            .get(&lane)
            .is_some_and(|c| !c.at_end && c.clock_ms > frontier_ms.saturating_add(max_drift_ms))
    }

    /// The lanes known here, in order.
    pub fn lanes(&self) -> impl Iterator<Item = u32> + '_ {
        self.lanes.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_lane_holds_the_frontier_until_it_reaches_its_end() {
        let mut c = LaneClocks::new();
        c.assign(0);
        c.assign(1);
        assert_eq!(c.frontier().map(|f| f.event_ms), Some(i64::MIN));
        c.delivered(0, 500_000);
        assert_eq!(
            c.frontier().map(|f| f.event_ms),
            Some(i64::MIN),
            "lane 1 unheard"
        );
        c.delivered(1, 100_000);
        assert_eq!(
            c.frontier(),
            Some(Frontier {
                event_ms: 100_000,
                caught_up: false
            })
        );
        // Lane 0 has read everything it holds; lane 1, still reading, holds the frontier.
        c.at_end(0);
        assert_eq!(c.frontier().map(|f| f.event_ms), Some(100_000));
        assert!(!c.ahead(0, 60_000), "a lane at its end is never paused");
        c.delivered(1, 200_000);
        assert_eq!(c.frontier().map(|f| f.event_ms), Some(200_000));
        c.at_end(1);
        assert_eq!(
            c.frontier(),
            Some(Frontier {
                event_ms: 500_000,
                caught_up: true
            })
        );
    }

    #[test]
    fn the_frontier_never_goes_back() {
        let mut c = LaneClocks::new();
        c.delivered(0, 100_000);
        c.at_end(0);
        assert_eq!(c.frontier().map(|f| f.event_ms), Some(100_000));
        c.delivered(1, 50_000);
        assert_eq!(c.frontier().map(|f| f.event_ms), Some(100_000));
    }

    #[test]
    fn a_lane_far_ahead_is_flagged_for_pausing() {
        let mut c = LaneClocks::new();
        c.delivered(0, 100_000);
        c.delivered(1, 400_000);
        c.frontier();
        assert!(c.ahead(1, 60_000));
        assert!(!c.ahead(0, 60_000));
        assert!(!c.ahead(1, 600_000));
    }

    #[test]
    fn min_of_two_frontiers() {
        let a = Frontier {
            event_ms: 5,
            caught_up: true,
        };
        let b = Frontier {
            event_ms: 7,
            caught_up: false,
        };
        assert_eq!(
            a.min(b),
            Frontier {
                event_ms: 5,
                caught_up: false
            }
        );
    }
}
