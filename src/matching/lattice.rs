//! The online Viterbi lattice of one vehicle's current trace: one column of candidate
//! nodes per probe, back pointers to the best predecessor, and the two ways points leave
//! it: convergence (every surviving path agrees on a prefix) and the forced commit after a
//! fixed lag (the current best path's prefix), which bounds the output delay.

use std::collections::VecDeque;

use crate::graph::Candidate;
use crate::record::Probe;

/// "No predecessor": the first column of a trace.
pub const NO_BACK: u32 = u32::MAX;

/// One candidate state at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub candidate: Candidate,
    /// Log-probability of the best path ending here (normalised per column); −∞ when no
    /// path reaches this node or it was cut by a commit.
    pub score: f64,
    /// Index of the best predecessor in the previous column, or [`NO_BACK`].
    pub back: u32,
    /// Route distance from that predecessor, metres (NaN without one).
    pub route_m: f64,
}

impl Node {
    pub fn is_alive(&self) -> bool {
        self.score.is_finite()
    }
}

/// One probe and its candidate states.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub probe: Probe,
    pub nodes: Vec<Node>,
}

/// A decided point: the probe, its chosen candidate and the route distance from the
/// previous decided point of the same trace (`None` for a trace's first point).
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedPoint {
    pub probe: Probe,
    pub candidate: Candidate,
    pub route_m: Option<f64>,
}

/// The columns of one trace not yet dropped. When `front_committed`, the front column has
/// already been emitted and is kept (with its chosen node only) as the anchor of the next
/// transition.
#[derive(Debug, Default, Clone)]
pub struct Lattice {
    columns: VecDeque<Column>,
    front_committed: bool,
}

impl Lattice {
    pub fn new() -> Self {
        Self::default()
    }

    /// The newest column, if the trace has one.
    pub fn last(&self) -> Option<&Column> {
        self.columns.back()
    }

    /// Columns not yet emitted.
    pub fn pending(&self) -> usize {
        self.columns.len() - usize::from(self.front_committed)
    }

    /// The event time of the oldest column held (the committed anchor, else the oldest
    /// pending probe).
    pub fn oldest_ts_ms(&self) -> Option<i64> {
        self.columns.front().map(|c| c.probe.ts_ms)
    }

    /// Columns held (including the committed anchor).
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Appends a column. Its nodes' `back` indices refer to the current last column.
    pub fn push(&mut self, column: Column) {
        self.columns.push_back(column);
    }

    fn first_pending(&self) -> usize {
        usize::from(self.front_committed)
    }

    /// Emits the prefix all surviving paths share. Returns how many points were emitted.
    pub fn commit_converged(&mut self, out: &mut Vec<CommittedPoint>) -> usize {
        let Some(last) = self.columns.len().checked_sub(1) else {
            return 0;
        };
        let mut set: Vec<u32> = alive_indices(&self.columns[last]);
        let mut i = last;
        loop {
            if set.len() == 1 {
                if i < self.first_pending() {
                    return 0;
                }
                return self.commit_through(i, set[0], out);
            }
            if set.is_empty() || i == 0 {
                return 0;
            }
            let column = &self.columns[i];
            let mut backs: Vec<u32> = set
                .iter()
                .map(|&n| column.nodes[n as usize].back)
                .filter(|&b| b != NO_BACK)
                .collect();
            backs.sort_unstable();
            backs.dedup();
            set = backs;
            i -= 1;
        }
    }

    /// Emits the oldest pending points along the current best path until at most
    /// `lag_points` are pending and the oldest pending one is at most `lag_ms` older than
    /// the newest. Returns how many points were emitted.
    pub fn commit_forced(
        &mut self,
        lag_points: usize,
        lag_ms: i64,
        out: &mut Vec<CommittedPoint>,
    ) -> usize {
        let Some(last) = self.columns.len().checked_sub(1) else {
            return 0;
        };
        let start = self.first_pending();
        let newest_ms = self.columns[last].probe.ts_ms;
        // Commit columns start..=through.
        let by_points = last as isize - lag_points as isize;
        let first_recent = (start..=last)
            .find(|&i| newest_ms.saturating_sub(self.columns[i].probe.ts_ms) <= lag_ms)
            .unwrap_or(last);
        let by_time = first_recent as isize - 1;
        let through = by_points.max(by_time);
        if through < start as isize {
            return 0;
        }
        let Some(best) = best_node(&self.columns[last]) else {
            return 0;
        };
        let through = through as usize;
        let mut node = best;
        for i in (through + 1..=last).rev() {
            node = self.columns[i].nodes[node as usize].back;
        }
        if node == NO_BACK {
            return 0;
        }
        self.commit_through(through, node, out)
    }

    /// Emits every pending point along the best path and empties the lattice (end of a
    /// trace). Returns how many points were emitted.
    pub fn commit_all(&mut self, out: &mut Vec<CommittedPoint>) -> usize {
        let n = match self.columns.len().checked_sub(1) {
            Some(last) => match best_node(&self.columns[last]) {
                Some(best) if last >= self.first_pending() => self.commit_through(last, best, out),
                _ => 0,
            },
            None => 0,
        };
        self.columns.clear();
        self.front_committed = false;
        n
    }

    /// Emits columns `first_pending..=through` along the path ending at node `node` of
    /// column `through`, drops the columns before `through`, keeps `through` as the anchor
    /// with only `node` alive, and kills later nodes that do not descend from it.
    fn commit_through(
        &mut self,
        through: usize,
        node: u32,
        out: &mut Vec<CommittedPoint>,
    ) -> usize {
        let start = self.first_pending();
        let mut chosen = vec![0u32; through + 1 - start];
        let mut n = node;
        for i in (start..=through).rev() {
            chosen[i - start] = n;
            n = self.columns[i].nodes[n as usize].back;
        }
        for (i, &n) in (start..=through).zip(&chosen) {
            let column = &self.columns[i];
            let picked = &column.nodes[n as usize];
            let first_of_trace = picked.back == NO_BACK;
            out.push(CommittedPoint {
                probe: column.probe.clone(),
                candidate: picked.candidate,
                route_m: (!first_of_trace).then_some(picked.route_m),
            });
        }
        self.columns.drain(..through);
        self.front_committed = true;
        for (i, n) in self.columns[0].nodes.iter_mut().enumerate() {
            if i as u32 != node {
                n.score = f64::NEG_INFINITY;
            }
        }
        for i in 1..self.columns.len() {
            let (before, after) = self.columns.make_contiguous().split_at_mut(i);
            let prev = &before[i - 1];
            for n in after[0].nodes.iter_mut() {
                let parent_alive = n.back != NO_BACK
                    && prev
                        .nodes
                        .get(n.back as usize)
                        .is_some_and(|p| p.is_alive());
                if !parent_alive {
                    n.score = f64::NEG_INFINITY;
                }
            }
        }
        chosen.len()
    }
}

fn alive_indices(column: &Column) -> Vec<u32> {
    (0..column.nodes.len() as u32)
        .filter(|&i| column.nodes[i as usize].is_alive())
        .collect()
}

/// The highest-scoring alive node; ties go to the lowest index.
pub fn best_node(column: &Column) -> Option<u32> {
    let mut best: Option<(u32, f64)> = None;
    for (i, n) in column.nodes.iter().enumerate() {
        if n.is_alive() && best.is_none_or(|(_, s)| n.score > s) {
            best = Some((i as u32, n.score));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(segment: u32, score: f64, back: u32) -> Node {
        Node {
            candidate: Candidate {
                segment,
                segment_id: u64::from(segment),
                distance_m: 0.0,
                offset_m: 0.0,
                lat: 0.0,
                lon: 0.0,
            },
            score,
            back,
            route_m: if back == NO_BACK { f64::NAN } else { 1.0 },
        }
    }

    fn column(ts_ms: i64, nodes: Vec<Node>) -> Column {
        Column {
            probe: Probe::new("v", ts_ms, 0.0, 0.0),
            nodes,
        }
    }

    #[test]
    fn converged_prefix_is_emitted_once() {
        let mut lattice = Lattice::new();
        let mut out = Vec::new();
        lattice.push(column(
            0,
            vec![node(1, 0.0, NO_BACK), node(2, -1.0, NO_BACK)],
        ));
        assert_eq!(lattice.commit_converged(&mut out), 0);
        // Both survivors at t = 1 come from node 0 at t = 0: t = 0 is decided.
        lattice.push(column(1, vec![node(3, 0.0, 0), node(4, -0.5, 0)]));
        assert_eq!(lattice.commit_converged(&mut out), 1);
        assert_eq!(out[0].candidate.segment, 1);
        assert_eq!(out[0].route_m, None);
        assert_eq!(lattice.pending(), 1);
        // One survivor at t = 2: t = 1 and t = 2 are decided, along its path.
        lattice.push(column(
            2,
            vec![node(5, f64::NEG_INFINITY, 0), node(6, 0.0, 1)],
        ));
        assert_eq!(lattice.commit_converged(&mut out), 2);
        let segments: Vec<u32> = out.iter().map(|p| p.candidate.segment).collect();
        assert_eq!(segments, vec![1, 4, 6]);
        assert_eq!(out[1].route_m, Some(1.0));
        assert_eq!(lattice.pending(), 0);
        assert_eq!(lattice.commit_all(&mut out), 0);
    }

    #[test]
    fn forced_commit_takes_the_best_path_and_cuts_the_rest() {
        let mut lattice = Lattice::new();
        let mut out = Vec::new();
        // Two paths that never meet: 1-3-5-7 and 2-4-6-8; the second scores higher.
        lattice.push(column(
            0,
            vec![node(1, 0.0, NO_BACK), node(2, 0.0, NO_BACK)],
        ));
        for (t, (a, b)) in [(3, 4), (5, 6), (7, 8)].into_iter().enumerate() {
            lattice.push(column(
                t as i64 + 1,
                vec![node(a, -1.0, 0), node(b, 0.0, 1)],
            ));
            assert_eq!(lattice.commit_converged(&mut out), 0);
        }
        assert_eq!(lattice.commit_forced(2, i64::MAX, &mut out), 2);
        let segments: Vec<u32> = out.iter().map(|p| p.candidate.segment).collect();
        assert_eq!(segments, vec![2, 4]);
        // The other path is cut, so what is left has converged.
        assert_eq!(lattice.commit_converged(&mut out), 2);
        let segments: Vec<u32> = out.iter().map(|p| p.candidate.segment).collect();
        assert_eq!(segments, vec![2, 4, 6, 8]);
    }

    #[test]
    fn forced_commit_by_time() {
        let mut lattice = Lattice::new();
        let mut out = Vec::new();
        lattice.push(column(
            0,
            vec![node(1, 0.0, NO_BACK), node(2, 0.0, NO_BACK)],
        ));
        lattice.push(column(5_000, vec![node(3, 0.0, 0), node(4, 0.0, 1)]));
        lattice.push(column(9_000, vec![node(5, 0.0, 0), node(6, 0.0, 1)]));
        // Older than 6 s behind the newest: only t = 0.
        assert_eq!(lattice.commit_forced(100, 6_000, &mut out), 1);
        assert_eq!(lattice.pending(), 2);
    }
}
