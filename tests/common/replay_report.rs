//! Parsing of `pipeline replay --report` output for the CLI and dirty-data tests: the
//! balance lines, each checked to add up (and to say where late observations went), and
//! the counts per reason.

use std::collections::BTreeMap;

/// `name=N` words of a line.
pub fn counts_in(line: &str) -> BTreeMap<String, u64> {
    line.split(|c: char| c.is_whitespace() || c == ';')
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// What a replay reported: the accounting (checked to balance, probes and observations),
/// the drops by reason and the unmatched probes by reason.
pub struct Replayed {
    pub probes_in: u64,
    pub dropped: BTreeMap<String, u64>,
    pub unmatched: BTreeMap<String, u64>,
}

impl Replayed {
    pub fn parse(stdout: &str) -> Self {
        let line = |prefix: &str| {
            stdout
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
        };
        let observations = line("observations: ");
        let o = counts_in(observations);
        assert!(o["accepted"] > 0, "{observations}");
        assert_eq!(
            o["in"],
            o["dropped"] + o["accepted"] + o["late"],
            "`{observations}` does not add up"
        );
        assert!(observations.contains("balanced=true"), "{observations}");
        // Late observations are listed next to the drops, with where they went: replay
        // connects nothing to the aggregate's `late` port.
        assert!(
            observations.ends_with("; late discarded: no edge reads aggregate.late)"),
            "{observations}"
        );
        let accounting = stdout
            .lines()
            .last()
            .filter(|l| l.starts_with("accounting: "))
            .unwrap_or_else(|| panic!("the report does not end in an accounting line:\n{stdout}"));
        assert!(accounting.ends_with("balanced=true"), "{accounting}");
        let a = counts_in(accounting);
        assert_eq!(
            a["in"],
            a["dropped"] + a["matched"] + a["unmatched"],
            "`{accounting}` does not add up"
        );
        let drops = line("probes dropped: ");
        let (dropped, unmatched) = drops
            .trim_start_matches("probes dropped: ")
            .split_once("; unmatched: ")
            .unwrap_or_else(|| panic!("unexpected `{drops}`"));
        let dropped = counts_in(dropped);
        assert_eq!(dropped.values().sum::<u64>(), a["dropped"], "{drops}");
        let unmatched = counts_in(unmatched);
        assert_eq!(unmatched.values().sum::<u64>(), a["unmatched"], "{drops}");
        Self {
            probes_in: a["in"],
            dropped,
            unmatched,
        }
    }

    #[allow(dead_code)] // used by some of the tests that include this file
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }

    #[allow(dead_code)]
    pub fn unmatched(&self, reason: &str) -> u64 {
        self.unmatched.get(reason).copied().unwrap_or(0)
    }
}
