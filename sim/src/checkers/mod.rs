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
mod intact_reads;
mod lost_write;
mod offset_commits;
mod ordering;
mod unseen;

pub use at_least_once::AtLeastOnce;
pub use duplicate::Duplicate;
pub use inconsistent_offsets::InconsistentOffsets;
pub use intact_reads::IntactReads;
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
        Box::new(IntactReads),
        Box::new(Ordering),
        Box::new(OffsetCommits),
        Box::new(AtLeastOnce),
    ]
}

/// Every checker's name, in report order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|checker| checker.name()).collect()
}

/// Runs the named checkers (all when `names` is empty).
pub fn run(history: &[Entry], names: &[String]) -> Vec<Verdict> {
    all()
        .into_iter()
        .filter(|checker| names.is_empty() || names.iter().any(|n| n == checker.name()))
        .map(|checker| checker.check(history))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::facts::build::{record, H};
    use super::*;
    use crate::history::{read_jsonl, write_jsonl, Event, History, Record};

    const G: &str = "g";

    /// Polls `records` as one batch, processes each and commits the next
    /// offset, as the harness's consumers do.
    fn consume(h: &mut H, process: &str, generation: i32, records: &[Record]) {
        h.poll(process, G, records.to_vec());
        for record in records {
            h.process(process, G, record.clone());
        }
        let last = records.last().expect("a non-empty batch");
        h.commit(process, G, generation, &[(last.partition, last.offset + 1)]);
    }

    /// A small fault-free run as the harness records it: two producers, two
    /// partitions, a group of two consumers that rebalances once, then the
    /// final reads. Every checker must pass it.
    fn clean_run() -> History {
        let mut h = H::new(true, true);
        let mut log: [Vec<Record>; 2] = Default::default();
        for sequence in 0..6 {
            for producer in ["producer-0", "producer-1"] {
                let key = format!("k{}", sequence % 3);
                let partition = sequence % 2;
                let value = format!("{producer}-{sequence}");
                let records = &mut log[partition as usize];
                let offset = records.len() as i64;
                h.send(producer, Some(&key), &value, partition, offset);
                records.push(record(partition, offset, Some(&key), &value));
                h.high_watermark(partition, offset + 1);
            }
        }
        h.generation(G, 1);
        h.assign("consumer-0", G, 1, &[0, 1]);
        consume(&mut h, "consumer-0", 1, &log[0][..3]);
        consume(&mut h, "consumer-0", 1, &log[1][..3]);
        h.revoke("consumer-0", G, 1, &[0, 1]);
        h.generation(G, 2);
        h.assign("consumer-0", G, 2, &[0]);
        h.assign("consumer-1", G, 2, &[1]);
        consume(&mut h, "consumer-0", 2, &log[0][3..]);
        consume(&mut h, "consumer-1", 2, &log[1][3..]);
        h.event(Event::Heal);
        for (partition, records) in log.into_iter().enumerate() {
            h.final_read(partition as i32, 0, records);
        }
        h.build()
    }

    #[test]
    fn all_checkers_pass_a_clean_run_read_back_from_json_lines() {
        let mut text = Vec::new();
        write_jsonl(&clean_run(), &mut text).unwrap();
        let history = read_jsonl(&mut text.as_slice()).unwrap();
        let verdicts = run(&history, &[]);
        let names: Vec<_> = verdicts.iter().map(|verdict| verdict.checker).collect();
        assert_eq!(
            names,
            vec![
                "lost-write",
                "unseen",
                "duplicate",
                "inconsistent-offsets",
                "intact-reads",
                "ordering",
                "offset-commits",
                "at-least-once"
            ]
        );
        for verdict in &verdicts {
            assert!(verdict.valid, "{verdict:?}");
            assert!(verdict.summary.ends_with("; 0 anomalies"), "{verdict:?}");
        }
    }

    #[test]
    fn run_selects_checkers_by_name() {
        let verdicts = run(
            &clean_run(),
            &["ordering".to_string(), "unseen".to_string()],
        );
        let names: Vec<_> = verdicts.iter().map(|verdict| verdict.checker).collect();
        assert_eq!(names, vec!["unseen", "ordering"]);
    }
}
