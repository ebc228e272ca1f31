//! Checkers: pure functions from a recorded history to a verdict.
//!
//! Each checker lives in its own module with two kinds of unit test: a
//! hand-built history containing exactly its anomaly (the checker must fail
//! it) and a clean one (it must pass). A checker that cannot fail is a defect.

use serde::Serialize;

use crate::history::Entry;

mod at_least_once;
mod duplicate;
mod facts;
mod inconsistent_offsets;
mod lost_write;
mod offset_commits;
mod ordering;
mod unseen;

pub use at_least_once::AtLeastOnce;
pub use duplicate::Duplicate;
pub use inconsistent_offsets::InconsistentOffsets;
pub use lost_write::LostWrite;
pub use offset_commits::OffsetCommits;
pub use ordering::Ordering;
pub use unseen::Unseen;

/// Whether a violation breaks safety (something bad happened) or liveness
/// (something good never happened). The CLI exits differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Property {
    Safety,
    Liveness,
}

/// One offending finding, naming the history entries that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub description: String,
    /// `Entry::index` values of the operations involved.
    pub entries: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub checker: &'static str,
    pub property: Property,
    pub valid: bool,
    /// The first offending findings, in history order (capped by the checker).
    pub anomalies: Vec<Anomaly>,
    /// A one-line summary (what was checked, how much).
    pub summary: String,
}

pub trait Checker {
    /// Stable kebab-case name, as scenarios and `--checkers` spell it.
    fn name(&self) -> &'static str;
    fn property(&self) -> Property;
    fn check(&self, history: &[Entry]) -> Verdict;
}

/// Report at most this many anomalies per checker: enough to debug, small
/// enough to print.
pub const MAX_ANOMALIES: usize = 20;

/// Every checker, in report order.
pub fn all() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(LostWrite),
        Box::new(Unseen),
        Box::new(Duplicate),
        Box::new(InconsistentOffsets),
        Box::new(Ordering),
        Box::new(OffsetCommits),
        Box::new(AtLeastOnce),
    ]
}

/// Runs the named checkers (all when `names` is empty).
pub fn run(history: &[Entry], names: &[String]) -> Vec<Verdict> {
    all()
        .into_iter()
        .filter(|checker| names.is_empty() || names.iter().any(|n| n == checker.name()))
        .map(|checker| checker.check(history))
        .collect()
}
