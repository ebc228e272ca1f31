//! `ordering` (safety): a partition is an ordered log, and clients see it in
//! order. Three sub-checks, named by the description's prefix:
//!
//! - `nonmonotonic-send`: with idempotence, a producer's acked sends to one
//!   partition get strictly increasing offsets in the order it invoked them.
//!   Idempotence is what lets a producer keep several batches in flight
//!   without a retry overtaking a later batch; without it Kafka makes no such
//!   promise, so the sub-check is skipped.
//! - `nonmonotonic-poll` / `poll-skip`: a consumer reads each partition
//!   densely (no compaction, no transactions), so within a poll offsets rise
//!   by exactly 1 (on a compacted topic, past offsets the final read lacks
//!   too), and its next poll continues at last + 1, unless its position
//!   was legitimately moved in between: a Seek of that partition, an Assign or
//!   Revoke for the consumer, or a crash or restart of the consumer process.
//!   Going back (or repeating) is `nonmonotonic-poll`, jumping ahead is
//!   `poll-skip`. With `flush_on_ack` false a broker power loss may cut the
//!   log under every consumer, so it resets all positions too.
//! - `per-key-order`: in the final reads, one producer's records with one key
//!   appear in the order the producer invoked the sends. The invoke order comes
//!   from the history, not from parsing values.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{record_tp, show, verdict, Facts, Tp};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Event, FaultKind, Kind, Op};

pub struct Ordering;

impl Checker for Ordering {
    fn name(&self) -> &'static str {
        "ordering"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        let mut anomalies = Vec::new();
        let sends = check_sends(&facts, &mut anomalies);
        let polls = check_polls(history, &facts, &mut anomalies);
        let keys = check_keys(&facts, &mut anomalies);
        let summary = format!("{sends}; {polls}; {keys}{}", facts.settings_note());
        verdict(self, anomalies, summary)
    }
}

fn check_sends(facts: &Facts<'_>, anomalies: &mut Vec<Anomaly>) -> String {
    if !facts.settings.idempotence {
        return "send order not checked (idempotence=false)".to_string();
    }
    let mut by_producer: BTreeMap<(&str, Tp<'_>), Vec<_>> = BTreeMap::new();
    for send in &facts.acked_sends {
        by_producer
            .entry((send.process, send.tp))
            .or_default()
            .push(send);
    }
    for sends in by_producer.values_mut() {
        sends.sort_by_key(|send| send.invoke_index);
        for pair in sends.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            // A power loss may lose the earlier ack's record and hand its
            // offset out again.
            if later.offset <= earlier.offset
                && !facts.loss_permitted_between(earlier.invoke_index, later.ok_index)
            {
                anomalies.push(Anomaly {
                    description: format!(
                        "nonmonotonic-send: {} invoked {} before {} but they were acked at {}@{} \
                         and @{}",
                        earlier.process,
                        earlier.value,
                        later.value,
                        show(earlier.tp),
                        earlier.offset,
                        later.offset
                    ),
                    entries: vec![earlier.ok_index, later.ok_index],
                });
            }
        }
    }
    format!(
        "{} acked sends by {} producer-partitions",
        facts.acked_sends.len(),
        by_producer.len()
    )
}

fn check_polls(history: &[Entry], facts: &Facts<'_>, anomalies: &mut Vec<Anomaly>) -> String {
    // Each consumer's position per partition: the last offset it polled and
    // the poll's index. Removed when the position may legitimately move.
    let mut last: BTreeMap<(&str, Tp<'_>), (i64, u64)> = BTreeMap::new();
    let mut polls = 0usize;
    let mut records_checked = 0usize;
    for entry in history {
        let process = entry.process.as_str();
        match &entry.kind {
            Kind::Ok {
                op: Op::Seek { target, .. },
            } => {
                last.remove(&(process, (target.topic.as_str(), target.partition)));
            }
            Kind::Ok {
                op: Op::Assign { .. } | Op::Revoke { .. },
            } => last.retain(|key, _| key.0 != process),
            Kind::Event {
                event: Event::Fault { kind, target, .. },
            } => {
                if matches!(
                    kind,
                    FaultKind::CrashClient | FaultKind::CrashBroker | FaultKind::RestartBroker
                ) {
                    last.retain(|key, _| key.0 != target.as_str());
                }
                if facts.is_permitted_power_loss(entry.index) {
                    last.clear();
                }
            }
            Kind::Ok {
                op: Op::Poll { records, .. },
            } => {
                polls += 1;
                for record in records {
                    records_checked += 1;
                    let tp = record_tp(record);
                    let offset = record.offset;
                    if let Some(&(previous, previous_poll)) = last.get(&(process, tp)) {
                        let within = previous_poll == entry.index;
                        let reset = !within
                            && offset <= previous
                            && facts.reset_permitted(tp, entry.index, previous, offset);
                        let problem = if reset {
                            None
                        } else if offset <= previous {
                            Some("nonmonotonic-poll")
                        } else if offset > previous.saturating_add(1)
                            && !facts.compacted_gap(tp, previous + 1, offset)
                        {
                            Some("poll-skip")
                        } else {
                            None
                        };
                        if let Some(problem) = problem {
                            let (description, entries) = if within {
                                (
                                    format!(
                                        "{problem}: {process} read {}@{offset} after @{previous} \
                                         in one poll",
                                        show(tp)
                                    ),
                                    vec![entry.index],
                                )
                            } else {
                                (
                                    format!(
                                        "{problem}: {process}'s poll read {}@{offset} after its \
                                         previous poll ended at @{previous}",
                                        show(tp)
                                    ),
                                    vec![previous_poll, entry.index],
                                )
                            };
                            anomalies.push(Anomaly {
                                description,
                                entries,
                            });
                        }
                    }
                    last.insert((process, tp), (offset, entry.index));
                }
            }
            _ => {}
        }
    }
    format!("{polls} polls with {records_checked} records")
}

fn check_keys(facts: &Facts<'_>, anomalies: &mut Vec<Anomaly>) -> String {
    let mut keyed = 0usize;
    let mut unknown = 0usize;
    for (&tp, read) in &facts.final_reads {
        // Per (key, producer): the latest invoke so far, with its value and
        // offset for the description.
        let mut latest: BTreeMap<(&str, &str), (u64, &str, i64)> = BTreeMap::new();
        // A value stored twice is `duplicate`'s business; order by its first
        // copy.
        let mut seen = BTreeSet::new();
        for record in read.records {
            let Some(key) = record.key.as_deref() else {
                continue;
            };
            if !seen.insert(record.value.as_str()) {
                continue;
            }
            let Some(&(invoke, producer)) = facts.send_invokes.get(record.value.as_str()) else {
                unknown += 1;
                continue;
            };
            keyed += 1;
            match latest.get(&(key, producer)) {
                Some(&(previous_invoke, previous_value, previous_offset))
                    if invoke < previous_invoke =>
                {
                    anomalies.push(Anomaly {
                        description: format!(
                            "per-key-order: key {key} from {producer}: {} (invoked earlier) is at \
                             {}@{} after {previous_value} at @{previous_offset}",
                            record.value,
                            show(tp),
                            record.offset
                        ),
                        entries: vec![invoke, previous_invoke, read.index],
                    });
                }
                _ => {
                    latest.insert(
                        (key, producer),
                        (invoke, record.value.as_str(), record.offset),
                    );
                }
            }
        }
    }
    format!("{keyed} keyed records in final reads ({unknown} with values never sent)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::{record, H};
    use crate::history::{FaultKind, Record};

    fn descriptions(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.description.split(':').next().unwrap())
            .collect()
    }

    #[test]
    fn sends_acked_out_of_invoke_order_are_nonmonotonic() {
        let mut h = H::new(true, true);
        // Two sends in flight at once; the later one gets the lower offset.
        let op = |value: &str, offset: Option<i64>| Op::Send {
            topic: "t".into(),
            key: None,
            value: value.into(),
            partition: offset.map(|_| 0),
            offset,
            tombstone: false,
        };
        let (_, first) = h.invoke("producer-0", op("producer-0-1", None));
        let (_, second) = h.invoke("producer-0", op("producer-0-2", None));
        let second_ok = h.ok("producer-0", second, op("producer-0-2", Some(0)));
        let first_ok = h.ok("producer-0", first, op("producer-0-1", Some(1)));
        let verdict = Ordering.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(descriptions(&verdict), vec!["nonmonotonic-send"]);
        assert_eq!(verdict.anomalies[0].entries, vec![second_ok, first_ok]);
    }

    #[test]
    fn on_a_compacted_topic_a_poll_may_step_over_only_what_a_cleaner_may_drop() {
        let history = |final_read: Vec<Record>| {
            let mut h = H::compacted();
            h.send("producer-0", Some("a"), "v0", 0, 0);
            h.send("producer-0", Some("b"), "v1", 0, 1);
            h.send("producer-0", Some("a"), "v2", 0, 2);
            h.poll(
                "consumer-0",
                "g",
                vec![record(0, 0, Some("a"), "v0"), record(0, 2, Some("a"), "v2")],
            );
            h.final_read(0, 0, final_read);
            Ordering.check(&h.build())
        };
        // @1 is gone from the final read: cleaned before the poll, perhaps.
        let verdict = history(vec![record(0, 2, Some("a"), "v2")]);
        assert!(verdict.valid, "{verdict:?}");
        // @1 is b's only record: no cleaner may drop it, so the poll skipped it.
        let verdict = history(vec![
            record(0, 1, Some("b"), "v1"),
            record(0, 2, Some("a"), "v2"),
        ]);
        assert_eq!(descriptions(&verdict), vec!["poll-skip"]);
    }

    #[test]
    fn a_gap_within_a_poll_is_a_skip_and_going_back_is_nonmonotonic() {
        let mut h = H::new(true, true);
        let skip = h.poll(
            "consumer-0",
            "g",
            vec![record(0, 0, None, "a"), record(0, 2, None, "c")],
        );
        let back = h.poll(
            "consumer-1",
            "g",
            vec![record(0, 1, None, "b"), record(0, 1, None, "b")],
        );
        let verdict = Ordering.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(
            descriptions(&verdict),
            vec!["poll-skip", "nonmonotonic-poll"]
        );
        assert_eq!(verdict.anomalies[0].entries, vec![skip]);
        assert_eq!(verdict.anomalies[1].entries, vec![back]);
    }

    /// With several brokers, a consumer may read a partition past what its
    /// power-lost broker kept, and is reset when that log comes back
    /// shorter. Reading again from an offset that survived is excused; the
    /// same step back with no such recovery, under `flush_on_ack`, or to
    /// an offset above what survived is not.
    #[test]
    fn a_reset_after_a_shown_loss_is_excused_and_nothing_else() {
        let history = |flush_on_ack: bool, recovered_end: Option<i64>, reset_to: i64| {
            let mut h = H::new(flush_on_ack, true);
            let records = |range: std::ops::Range<i64>| -> Vec<_> {
                range.map(|o| record(0, o, None, "v")).collect()
            };
            h.poll("consumer-0", "g", records(0..3));
            // The loss shows at the recovery; without one there is no
            // power loss at all here. Meanwhile the consumer polls what it
            // had fetched before the broker went down.
            if recovered_end.is_some() {
                h.fault(FaultKind::CrashBroker, "broker-1", true);
            }
            h.poll("consumer-0", "g", records(3..5));
            if let Some(end) = recovered_end {
                h.recovered("broker-1", 0, end);
            }
            h.poll("consumer-0", "g", vec![record(0, reset_to, None, "w")]);
            Ordering.check(&h.build())
        };
        assert!(history(false, Some(2), 0).valid);
        assert!(history(false, Some(2), 2).valid);
        for (flush_on_ack, end, reset_to) in
            [(false, None, 0), (true, Some(2), 0), (false, Some(2), 3)]
        {
            let verdict = history(flush_on_ack, end, reset_to);
            assert_eq!(
                descriptions(&verdict),
                vec!["nonmonotonic-poll"],
                "{flush_on_ack} {end:?} {reset_to}"
            );
        }
    }

    #[test]
    fn a_poll_not_continuing_the_previous_one_is_reported() {
        let mut h = H::new(true, true);
        let first = h.poll("consumer-0", "g", vec![record(0, 0, None, "a")]);
        let skip = h.poll("consumer-0", "g", vec![record(0, 2, None, "c")]);
        let back = h.poll("consumer-0", "g", vec![record(0, 1, None, "b")]);
        let verdict = Ordering.check(&h.build());
        assert_eq!(
            descriptions(&verdict),
            vec!["poll-skip", "nonmonotonic-poll"]
        );
        assert_eq!(verdict.anomalies[0].entries, vec![first, skip]);
        assert_eq!(verdict.anomalies[1].entries, vec![skip, back]);
    }

    #[test]
    fn a_producers_keyed_records_out_of_invoke_order_break_per_key_order() {
        // Without idempotence, so only per-key-order can see it.
        let mut h = H::new(true, false);
        let (first, _) = h.send("producer-0", Some("k"), "producer-0-1", 0, 1);
        let (second, _) = h.send("producer-0", Some("k"), "producer-0-2", 0, 0);
        let read = h.final_read(
            0,
            0,
            vec![
                record(0, 0, Some("k"), "producer-0-2"),
                record(0, 1, Some("k"), "producer-0-1"),
            ],
        );
        let verdict = Ordering.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(descriptions(&verdict), vec!["per-key-order"]);
        assert_eq!(verdict.anomalies[0].entries, vec![first, second, read]);
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(true, true);
        h.send("producer-0", Some("k"), "producer-0-1", 0, 0);
        h.send("producer-1", Some("k"), "producer-1-1", 0, 1);
        h.send("producer-0", Some("k"), "producer-0-2", 0, 2);
        h.send("producer-0", Some("j"), "producer-0-3", 0, 3);
        h.poll(
            "consumer-0",
            "g",
            vec![
                record(0, 0, Some("k"), "producer-0-1"),
                record(0, 1, Some("k"), "producer-1-1"),
            ],
        );
        h.poll(
            "consumer-0",
            "g",
            vec![record(0, 2, Some("k"), "producer-0-2")],
        );
        // Each of these may move the position.
        h.seek("consumer-0", "g", 0, 0);
        h.poll(
            "consumer-0",
            "g",
            vec![record(0, 0, Some("k"), "producer-0-1")],
        );
        h.assign("consumer-0", "g", 2, &[0]);
        h.poll(
            "consumer-0",
            "g",
            vec![record(0, 3, Some("j"), "producer-0-3")],
        );
        h.fault(FaultKind::CrashClient, "consumer-0", false);
        h.poll(
            "consumer-0",
            "g",
            vec![record(0, 1, Some("k"), "producer-1-1")],
        );
        h.final_read(
            0,
            0,
            vec![
                record(0, 0, Some("k"), "producer-0-1"),
                record(0, 1, Some("k"), "producer-1-1"),
                record(0, 2, Some("k"), "producer-0-2"),
                record(0, 3, Some("j"), "producer-0-3"),
            ],
        );
        let verdict = Ordering.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }
}
