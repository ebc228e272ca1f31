//! `inconsistent-offsets` (safety): an offset names one record. Send acks,
//! polls and final reads must agree on the value at each (topic, partition,
//! offset).
//!
//! Two values at one offset mean the log was rewritten under its readers (a
//! truncation that should not have happened, an offset assigned twice) or an
//! ack reported the wrong offset. The only legitimate rewrite is after a
//! broker power loss with `flush_on_ack` false: the unsynced tail is lost and
//! its offsets are reused. So a value written before such a power loss and
//! another seen after it is excused, and counted. "Written" is bounded by the
//! send's invoke: an ack can arrive after the crash that erased its write,
//! when the response was already on the wire.

use std::collections::BTreeMap;

use super::facts::{record_tp, show, verdict, Facts, Tp};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Kind, Op};

pub struct InconsistentOffsets;

impl Checker for InconsistentOffsets {
    fn name(&self) -> &'static str {
        "inconsistent-offsets"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        // Each location's distinct values, with the index first showing each.
        let mut values: BTreeMap<(Tp<'_>, i64), Vec<(&str, u64)>> = BTreeMap::new();
        let mut conflicts: BTreeMap<(Tp<'_>, i64), Anomaly> = BTreeMap::new();
        let mut excused = 0usize;
        let mut observations = 0usize;
        // The earliest a value can have been written: its send's invoke.
        let mut written_at: BTreeMap<&str, u64> = BTreeMap::new();
        for entry in history {
            if let Kind::Invoke {
                op: Op::Send { value, .. },
            } = &entry.kind
            {
                written_at.entry(value.as_str()).or_insert(entry.index);
            }
        }

        for entry in history {
            let Kind::Ok { op } = &entry.kind else {
                continue;
            };
            let seen: Vec<(Tp<'_>, i64, &str)> = match op {
                Op::Send {
                    topic,
                    value,
                    partition: Some(partition),
                    offset: Some(offset),
                    ..
                } if *offset >= 0 => vec![((topic.as_str(), *partition), *offset, value.as_str())],
                Op::Poll { records, .. } | Op::FinalRead { records, .. } => records
                    .iter()
                    .map(|record| (record_tp(record), record.offset, record.value.as_str()))
                    .collect(),
                _ => continue,
            };
            for (tp, offset, value) in seen {
                observations += 1;
                let known = values.entry((tp, offset)).or_default();
                if known.iter().any(|&(v, _)| v == value) {
                    continue;
                }
                let unexcused = known.iter().find(|&&(other, first)| {
                    let written = written_at.get(other).copied().unwrap_or(first).min(first);
                    !facts.loss_permitted_between(written, entry.index)
                });
                match unexcused {
                    Some(&(other, first)) => {
                        // One anomaly per offset: later values there add
                        // their entries to it.
                        let anomaly = conflicts.entry((tp, offset)).or_insert_with(|| Anomaly {
                            description: format!("{}@{offset} holds {other} and {value}", show(tp)),
                            entries: vec![first],
                        });
                        anomaly.entries.push(entry.index);
                    }
                    None if !known.is_empty() => excused += 1,
                    None => {}
                }
                known.push((value, entry.index));
            }
        }

        let summary = format!(
            "{observations} observations of {} offsets by acks, polls and final reads{}; {} \
             offsets with conflicting values; {excused} rewrites excused by a power loss \
             (flush_on_ack={})",
            values.len(),
            facts.settings_note(),
            conflicts.len(),
            facts.settings.flush_on_ack,
        );
        verdict(self, conflicts.into_values().collect(), summary)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ack_that_arrives_after_the_crash_that_erased_it_is_excused() {
        use crate::history::{Builder, Event};
        let mut b = Builder::new();
        b.event(
            0,
            "nemesis",
            Event::Meta {
                scenario: "t".into(),
                seed: 0,
                flush_on_ack: false,
                idempotence: true,
                checkers: vec![],
                group_initial_rebalance_delay_ms: 0,
                replication_factor: 1,
                acks_all: true,
                min_insync_replicas: 1,
                replica_lag_time_max_ms: 0,
                compacted: false,
                delete_retention_ms: 0,
            },
        );
        let send = |value: &str, offset: Option<i64>| Op::Send {
            topic: "t".into(),
            key: None,
            value: value.into(),
            partition: offset.map(|_| 0),
            offset,
            tombstone: false,
        };
        let first = b.invoke(1, "producer-0", send("a", None));
        b.event(
            2,
            "nemesis",
            Event::Fault {
                kind: FaultKind::CrashBroker,
                target: "broker-0".into(),
                peer: None,
                power_loss: true,
                healed: false,
            },
        );
        b.ok(3, "producer-0", first, send("a", Some(0)));
        let second = b.invoke(4, "producer-1", send("b", None));
        b.ok(5, "producer-1", second, send("b", Some(0)));
        let verdict = InconsistentOffsets.check(&b.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.contains("1 rewrites excused"),
            "{}",
            verdict.summary
        );
    }

    use super::*;
    use crate::checkers::facts::build::{record, H};
    use crate::history::FaultKind;

    #[test]
    fn an_ack_and_a_poll_disagreeing_on_an_offset_are_inconsistent() {
        let mut h = H::new(true, true);
        let (_, ack) = h.send("producer-0", None, "producer-0-1", 0, 0);
        let poll = h.poll("consumer-0", "g", vec![record(0, 0, None, "producer-1-1")]);
        h.final_read(0, 0, vec![record(0, 0, None, "producer-1-1")]);
        let verdict = InconsistentOffsets.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.anomalies.len(), 1);
        assert_eq!(verdict.anomalies[0].entries, vec![ack, poll]);
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(false, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        h.poll("consumer-0", "g", vec![record(0, 0, None, "producer-0-1")]);
        // Offset 0 is lost to a power loss (flush_on_ack false) and reused.
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        h.send("producer-1", None, "producer-1-1", 0, 0);
        h.send("producer-1", None, "producer-1-2", 0, 1);
        h.final_read(
            0,
            0,
            vec![
                record(0, 0, None, "producer-1-1"),
                record(0, 1, None, "producer-1-2"),
            ],
        );
        let verdict = InconsistentOffsets.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.contains("1 rewrites excused"),
            "{}",
            verdict.summary
        );
    }
}
