//! A collector of configuration problems, so validation reports every problem at once.

use std::fmt;

/// One problem: the dotted key it concerns (e.g. `sources.replay.paths`) and what is wrong.
/// The loader adds where the value came from (default, file or environment variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub origin: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

/// Problems found so far, keyed by a prefix such as `sinks.out`.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with `key` (a full dotted key).
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            key: key.into(),
            message: message.into(),
            origin: None,
        });
    }

    /// Records a problem unless `ok` holds.
    pub fn check(&mut self, ok: bool, key: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.push(key, message);
        }
    }

    /// Records a problem unless `value` is within `range`. The upper bounds keep a typo such
    /// as a 10^9-record batch from becoming an allocation that takes the process down: it is
    /// refused here, before anything runs.
    pub fn check_count(
        &mut self,
        value: usize,
        range: std::ops::RangeInclusive<usize>,
        key: impl Into<String>,
    ) {
        self.check(
            range.contains(&value),
            key,
            format!(
                "must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Problem> {
        self.list.iter_mut()
    }
}
