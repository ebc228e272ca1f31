//! `at-least-once` (safety): a consumer group's committed offset claims that
//! every record before it was handled by the group. So for each group and
//! partition, every offset from the log start up to the group's final ok
//! commit must have been processed (an ok `Process`) by a member of that
//! group. A poll alone is not enough: a member that crashes between a poll and
//! processing has delivered nothing, and a commit covering those records
//! loses them.
//!
//! This is the end-to-end form of the `offset-commits` sub-checks: whatever
//! went wrong (a commit running ahead, a commit before processing, a new owner
//! skipping forward, a reset to the log end), a record the group skipped shows
//! up here as an offset no member ever processed. Offsets below the final `log_start_offset` are exempt:
//! retention may remove them before anyone reads them. On a compacted topic
//! only offsets the final read still holds are demanded: the cleaner may
//! remove the others before the group reaches them.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{record_tp, show, verdict, Facts, Tp};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Kind, Op};

/// At most this many missing ranges are spelled out per anomaly; the rest
/// are only counted, so one badly broken partition does not flood the report.
const MISSING_RANGES_SHOWN_MAX: usize = 5;

pub struct AtLeastOnce;

impl Checker for AtLeastOnce {
    fn name(&self) -> &'static str {
        "at-least-once"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        let mut delivered: BTreeMap<(&str, Tp<'_>), BTreeSet<i64>> = BTreeMap::new();
        let mut final_commits: BTreeMap<(&str, Tp<'_>), (i64, u64)> = BTreeMap::new();
        // Each process's group, from its latest Assign, for polls that do not
        // name their group.
        let mut group_of: BTreeMap<&str, &str> = BTreeMap::new();
        let mut processed_without_group = 0usize;

        for entry in history {
            let Kind::Ok { op } = &entry.kind else {
                continue;
            };
            let process = entry.process.as_str();
            match op {
                Op::Assign { group, .. } => {
                    group_of.insert(process, group.as_str());
                }
                Op::Process { group, record } => {
                    let Some(group) = group.as_deref().or(group_of.get(process).copied()) else {
                        processed_without_group += 1;
                        continue;
                    };
                    delivered
                        .entry((group, record_tp(record)))
                        .or_default()
                        .insert(record.offset);
                }
                Op::Commit { group, offsets, .. } => {
                    for commit in offsets.iter().filter(|commit| commit.offset >= 0) {
                        final_commits.insert(
                            (group.as_str(), (commit.topic.as_str(), commit.partition)),
                            (commit.offset, entry.index),
                        );
                    }
                }
                _ => {}
            }
        }

        let mut anomalies = Vec::new();
        let mut offsets_checked = 0i64;
        let empty = BTreeSet::new();
        for (&(group, tp), &(committed, commit_index)) in &final_commits {
            let log_start_offset = facts.log_start_offset(tp);
            offsets_checked =
                offsets_checked.saturating_add(committed.saturating_sub(log_start_offset).max(0));
            let seen = delivered.get(&(group, tp)).unwrap_or(&empty);
            let mut missing = gaps(seen, log_start_offset, committed);
            if facts.settings.compacted {
                // Only a record no later record of its key supersedes was
                // surely there when the group read past it; a cleaner (on
                // whichever replica led) may have taken the others first.
                missing = not_compactable(&facts, tp, &missing);
            }
            if missing.is_empty() {
                continue;
            }
            let count: i64 = missing
                .iter()
                .map(|(from, to)| to.saturating_sub(*from))
                .fold(0, i64::saturating_add);
            let mut shown: Vec<String> = missing
                .iter()
                .take(MISSING_RANGES_SHOWN_MAX)
                .map(|&(from, to)| {
                    if to.saturating_sub(from) == 1 {
                        format!("@{from}")
                    } else {
                        format!("@{from}..@{}", to.saturating_sub(1))
                    }
                })
                .collect();
            if missing.len() > MISSING_RANGES_SHOWN_MAX {
                shown.push("...".to_string());
            }
            anomalies.push(Anomaly {
                description: format!(
                    "{group} committed {}@{committed} but {count} offsets below it were never \
                     processed by the group: {}",
                    show(tp),
                    shown.join(", ")
                ),
                entries: vec![commit_index],
            });
        }

        let summary = format!(
            "{} group-partitions with commits, {offsets_checked} offsets between log start and \
             final commit; {processed_without_group} records processed without a known group",
            final_commits.len()
        );
        verdict(self, anomalies, summary)
    }
}

/// The offsets in `missing` that no cleaner could have removed (see
/// `Facts::compacted_gap`), as half-open ranges.
fn not_compactable(facts: &Facts<'_>, tp: Tp<'_>, missing: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let Some(read) = facts.final_reads.get(&tp) else {
        return missing.to_vec();
    };
    let mut present: Vec<(i64, i64)> = Vec::new();
    for &(from, to) in missing {
        for &offset in read
            .values
            .range(from..to)
            .map(|(offset, _)| offset)
            .filter(|offset| !facts.compacted_gap(tp, **offset, **offset + 1))
        {
            match present.last_mut() {
                Some(last) if last.1 == offset => last.1 = offset + 1,
                _ => present.push((offset, offset + 1)),
            }
        }
    }
    present
}

/// The half-open ranges of `[from, to)` missing from `seen`; none when the
/// range is empty (retention may have moved the log start past a lagging
/// group's commit).
fn gaps(seen: &BTreeSet<i64>, from: i64, to: i64) -> Vec<(i64, i64)> {
    let mut gaps = Vec::new();
    if from >= to {
        return gaps;
    }
    let mut next = from;
    for &offset in seen.range(from..to) {
        if offset > next {
            gaps.push((next, offset));
        }
        next = offset.saturating_add(1);
    }
    if next < to {
        gaps.push((next, to));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_a_compacted_topic_only_records_no_cleaner_may_drop_are_demanded() {
        use crate::checkers::facts::build::{record, H};
        let history = |key_at_1: &str| {
            let mut h = H::compacted();
            h.send("producer-0", Some("a"), "v0", 0, 0);
            h.send("producer-0", Some(key_at_1), "v1", 0, 1);
            h.send("producer-0", Some("a"), "v2", 0, 2);
            let polled = vec![record(0, 0, Some("a"), "v0"), record(0, 2, Some("a"), "v2")];
            h.poll("consumer-0", "g", polled.clone());
            for r in polled {
                h.process("consumer-0", "g", r);
            }
            h.commit("consumer-0", "g", 1, &[(0, 3)]);
            // The final read still holds @1 (another replica kept it).
            h.final_read(
                0,
                0,
                vec![
                    record(0, 1, Some(key_at_1), "v1"),
                    record(0, 2, Some("a"), "v2"),
                ],
            );
            AtLeastOnce.check(&h.build())
        };
        // a@1 is superseded by a@2: any replica's cleaner may have dropped it.
        assert!(history("a").valid);
        // b@1 is b's latest: the group skipped a record it had to process.
        let verdict = history("b");
        assert!(!verdict.valid);
        assert!(
            verdict.anomalies[0].description.contains("@1"),
            "{verdict:?}"
        );
    }

    #[test]
    fn retention_past_a_lagging_groups_commit_is_no_gap_and_no_panic() {
        use crate::checkers::facts::build::{record, H};
        let mut h = H::new(true, true);
        h.assign("consumer-0", "g", 1, &[0]);
        h.poll("consumer-0", "g", vec![record(0, 0, None, "a")]);
        h.process("consumer-0", "g", record(0, 0, None, "a"));
        h.commit("consumer-0", "g", 1, &[(0, 1)]);
        // Retention removed everything below 5 before the final read.
        h.final_read(0, 5, vec![record(0, 5, None, "f")]);
        let verdict = AtLeastOnce.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }
    use crate::checkers::facts::build::{record, H};

    #[test]
    fn a_committed_offset_the_group_never_processed_is_reported() {
        let mut h = H::new(true, true);
        h.assign("consumer-0", "g", 1, &[0]);
        h.poll("consumer-0", "g", vec![record(0, 0, None, "a")]);
        h.process("consumer-0", "g", record(0, 0, None, "a"));
        // Processed by another group: does not count for g.
        h.process("consumer-9", "other", record(0, 1, None, "b"));
        // Polled but never processed (the member crashed in between).
        h.poll("consumer-0", "g", vec![record(0, 1, None, "b")]);
        h.process("consumer-0", "g", record(0, 2, None, "c"));
        let (_, commit) = h.commit("consumer-0", "g", 1, &[(0, 3)]);
        let verdict = AtLeastOnce.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.anomalies.len(), 1);
        assert_eq!(verdict.anomalies[0].entries, vec![commit]);
        assert!(verdict.anomalies[0]
            .description
            .ends_with("processed by the group: @1"));
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(true, true);
        h.assign("consumer-0", "g", 1, &[0]);
        // Offset 0 fell to retention; 1 and 2 were polled by two members.
        h.poll("consumer-0", "g", vec![record(0, 1, None, "b")]);
        h.process("consumer-0", "g", record(0, 1, None, "b"));
        h.commit("consumer-0", "g", 1, &[(0, 2)]);
        h.assign("consumer-1", "g", 2, &[0]);
        h.poll("consumer-1", "g", vec![record(0, 2, None, "c")]);
        h.process("consumer-1", "g", record(0, 2, None, "c"));
        h.commit("consumer-1", "g", 2, &[(0, 3)]);
        h.final_read(0, 1, vec![record(0, 1, None, "b"), record(0, 2, None, "c")]);
        let verdict = AtLeastOnce.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("2 offsets"), "{}", verdict.summary);
    }
}
