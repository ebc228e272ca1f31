//! `lost-write` (safety): an acknowledged send must survive in the final read
//! of its partition.
//!
//! An ack is the broker's promise that the record is in the log. The heal
//! phase's final read holds the whole partition, so an acked offset that the
//! final read skips over (it holds a higher offset) or fills with another
//! value is a write the broker lost. A completed final read reads up to the
//! log's end, so an acked offset beyond its last offset is a lost tail: the
//! crash case the issue names ("acknowledged and synced, missing after a
//! crash, under fsync-on-ack").
//!
//! Exceptions: with `flush_on_ack` false an ack only means "in the page
//! cache", so a broker power loss after the send's invoke may legitimately
//! lose it (counted as a permitted loss), unless the final read skips its
//! offset: a power loss truncates the log, so it never leaves a hole; and
//! offsets below the final `log_start_offset` were removed by retention. On a
//! compacted topic, an offset the final read lacks is no loss when a later
//! record of the same key was acknowledged or read, or the send was a
//! tombstone past `delete.retention.ms` (`Facts::compacted_away`).
//!
//! A permitted loss must not be silent, though (`silent-gap`): with
//! idempotent producers, the broker tracks each producer's sequence numbers,
//! so after losing a producer's acked batches it must refuse that producer's
//! next batch (OUT_OF_ORDER_SEQUENCE_NUMBER) rather than append it over the
//! gap. So when an acked send was lost, no later acked send of the same
//! producer to the same partition may survive unless the producer may have
//! started a new session in between (one of its sends failed or timed out, or
//! it crashed).

use super::facts::{show, verdict, AckedSend, Facts};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::Entry;

pub struct LostWrite;

impl Checker for LostWrite {
    fn name(&self) -> &'static str {
        "lost-write"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        let mut anomalies = Vec::new();
        let mut checked = 0usize;
        let mut permitted = 0usize;
        let mut retained = 0usize;
        let mut compacted = 0usize;
        let mut beyond_end = 0usize;
        let mut without_final_read = 0usize;
        let mut acked_during_final_read = 0usize;
        // Per (producer, partition): the earliest permitted loss.
        let mut first_permitted_loss: std::collections::BTreeMap<_, &AckedSend<'_>> =
            std::collections::BTreeMap::new();
        let mut survivors: Vec<&AckedSend<'_>> = Vec::new();

        let mut unread_partitions = std::collections::BTreeSet::new();
        for send in &facts.acked_sends {
            let Some(read) = facts.final_reads.get(&send.tp) else {
                without_final_read += 1;
                if unread_partitions.insert(send.tp) {
                    // The final read is the fact this checker judges by;
                    // without it an ack can be neither kept nor lost.
                    anomalies.push(Anomaly {
                        description: format!(
                            "missing-facts: {} has acked sends but no final_read, so their \
                             survival cannot be checked",
                            show(send.tp)
                        ),
                        entries: vec![send.ok_index],
                    });
                }
                continue;
            };
            if send.offset < read.log_start_offset {
                retained += 1;
                continue;
            }
            if !read.values.contains_key(&send.offset) && facts.compacted_away(send) {
                compacted += 1;
                continue;
            }
            // A power loss truncates the log and later writes reuse the
            // offsets, so a permitted loss shows as another value or a
            // shorter log, never as a hole: offsets are dense.
            let mut hole = false;
            let loss = match read.values.get(&send.offset) {
                Some(&value) if value == send.value => None,
                Some(&value) => Some(format!("the final read holds {value} there")),
                None => match read.last_offset() {
                    Some(last) if last > send.offset => {
                        hole = true;
                        Some(format!("the final read skips it but reaches offset {last}"))
                    }
                    _ if send.ok_index > read.invoke_index => {
                        // Acknowledged after the final read fixed the end
                        // it reads to: it cannot be expected there.
                        acked_during_final_read += 1;
                        continue;
                    }
                    last => {
                        beyond_end += 1;
                        Some(format!(
                            "the log ends before it (the final read's last offset is {})",
                            last.map_or_else(|| "none".to_string(), |l| l.to_string())
                        ))
                    }
                },
            };
            checked += 1;
            let Some(loss) = loss else {
                survivors.push(send);
                continue;
            };
            // On a compacted topic a hole proves nothing: the record that
            // reused a power-lost offset may itself have been cleaned.
            if (!hole || facts.settings.compacted) && facts.loss_permitted_after(send.invoke_index)
            {
                permitted += 1;
                first_permitted_loss
                    .entry((send.process, send.tp))
                    .or_insert(send);
                continue;
            }
            anomalies.push(Anomaly {
                description: format!(
                    "{} acked at {}@{} was lost: {loss}",
                    send.value,
                    show(send.tp),
                    send.offset
                ),
                entries: vec![send.invoke_index, send.ok_index, read.index],
            });
        }

        if facts.settings.idempotence {
            for later in survivors {
                let Some(lost) = first_permitted_loss.get(&(later.process, later.tp)) else {
                    continue;
                };
                // A new session (producer id) that began after the lost
                // send was invoked may have written the later one, even if
                // the lost one's ack arrived after the break: the producer
                // restamps what it has not yet sent.
                if later.invoke_index <= lost.invoke_index
                    || facts.session_break_between(later.process, lost.invoke_index, later.ok_index)
                {
                    continue;
                }
                anomalies.push(Anomaly {
                    description: format!(
                        "silent-gap: {} acked at {}@{} was lost, yet the broker accepted {}'s \
                         later {} at @{} without a sequence error",
                        lost.value,
                        show(lost.tp),
                        lost.offset,
                        later.process,
                        later.value,
                        later.offset
                    ),
                    entries: vec![lost.invoke_index, lost.ok_index, later.ok_index],
                });
                // One finding per producer and partition is enough.
                first_permitted_loss.remove(&(later.process, later.tp));
            }
        }

        let summary = format!(
            "checked {checked} acked sends against {} final reads{}; {permitted} permitted losses \
             (power loss, flush_on_ack={}); {retained} below log start; {compacted} compacted away; {beyond_end} beyond the \
             final read's end; {acked_during_final_read} acked after the final read began, beyond \
             its end; {without_final_read} without a final read; {} acks without offset",
            facts.final_reads.len(),
            facts.settings_note(),
            facts.settings.flush_on_ack,
            facts.acked_sends_without_offset,
        );
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::{record, H};
    use crate::history::FaultKind;

    #[test]
    fn on_a_compacted_topic_only_a_superseded_send_may_be_missing() {
        let history = |read: Vec<i64>| {
            let mut h = H::compacted();
            h.send("producer-0", Some("a"), "producer-0-1", 0, 0);
            h.send("producer-0", Some("b"), "producer-0-2", 0, 1);
            h.send("producer-0", Some("a"), "producer-0-3", 0, 2);
            let values = ["producer-0-1", "producer-0-2", "producer-0-3"];
            let keys = ["a", "b", "a"];
            let records = read
                .iter()
                .map(|&o| record(0, o, Some(keys[o as usize]), values[o as usize]))
                .collect();
            h.final_read(0, 0, records);
            LostWrite.check(&h.build())
        };
        // a@0 was superseded by a@2: the cleaner may drop it.
        let verdict = history(vec![1, 2]);
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("1 compacted away"), "{verdict:?}");
        // b@1 is b's latest: it may not go.
        let verdict = history(vec![0, 2]);
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0].description.contains("producer-0-2"));
    }

    #[test]
    fn a_skipped_acked_offset_is_lost() {
        let mut h = H::new(true, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        let lost = h.send("producer-0", None, "producer-0-2", 0, 1);
        h.send("producer-0", None, "producer-0-3", 0, 2);
        let read = h.final_read(
            0,
            0,
            vec![
                record(0, 0, None, "producer-0-1"),
                record(0, 2, None, "producer-0-3"),
            ],
        );
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.anomalies.len(), 1);
        assert_eq!(verdict.anomalies[0].entries, vec![lost.0, lost.1, read]);
    }

    #[test]
    fn an_ack_after_the_final_read_began_may_lie_beyond_its_end() {
        let mut h = H::new(true, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        h.final_read_around(0, vec![record(0, 0, None, "producer-0-1")], |h| {
            h.send("producer-0", None, "producer-0-2", 0, 1);
        });
        let verdict = LostWrite.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict
                .summary
                .contains("1 acked after the final read began"),
            "{}",
            verdict.summary
        );

        // Acknowledged before the final read began, it must be there.
        let mut h = H::new(true, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        let lost = h.send("producer-0", None, "producer-0-2", 0, 1);
        let read = h.final_read_around(0, vec![record(0, 0, None, "producer-0-1")], |_| {});
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.anomalies[0].entries, vec![lost.0, lost.1, read]);
    }

    #[test]
    fn an_acked_offset_holding_another_value_is_lost() {
        let mut h = H::new(true, true);
        let lost = h.send("producer-0", None, "producer-0-1", 0, 0);
        let read = h.final_read(0, 0, vec![record(0, 0, None, "producer-1-1")]);
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.anomalies[0].entries, vec![lost.0, lost.1, read]);
    }

    #[test]
    fn a_power_loss_permits_losing_unflushed_acks_only() {
        for flush_on_ack in [false, true] {
            let mut h = H::new(flush_on_ack, true);
            h.send("producer-0", None, "producer-0-1", 0, 0);
            h.fault(FaultKind::CrashBroker, "broker-0", true);
            h.send("producer-1", None, "producer-1-1", 0, 0);
            h.final_read(0, 0, vec![record(0, 0, None, "producer-1-1")]);
            let verdict = LostWrite.check(&h.build());
            assert_eq!(verdict.valid, !flush_on_ack, "{verdict:?}");
            if !flush_on_ack {
                assert!(
                    verdict.summary.contains("1 permitted losses"),
                    "{}",
                    verdict.summary
                );
            }
        }
    }

    #[test]
    fn on_replicas_a_loss_needs_min_insync_replicas_brokers_to_lose_power() {
        // acks=all, three replicas, min.insync.replicas 2, acks from the
        // page cache: the durability model in ARCHITECTURE.md.
        let history = |crashed: &[&str]| {
            let mut h = H::replicated(false);
            h.send("producer-0", None, "producer-0-1", 0, 0);
            for broker in crashed {
                h.fault(FaultKind::CrashBroker, broker, true);
            }
            h.send("producer-1", None, "producer-1-1", 0, 0);
            h.final_read(0, 0, vec![record(0, 0, None, "producer-1-1")]);
            LostWrite.check(&h.build())
        };
        assert!(!history(&["broker-0"]).valid);
        assert!(!history(&["broker-0", "broker-0"]).valid);
        let verdict = history(&["broker-0", "broker-2"]);
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("1 permitted losses"));
    }

    #[test]
    fn a_session_break_before_the_lost_ack_still_excuses_a_later_write() {
        // The producer failed a send elsewhere (and so takes a new producer
        // id) while the lost send's ack was on its way.
        let mut h = H::new(false, true);
        let op = |value: &str| crate::history::Op::Send {
            topic: crate::checkers::facts::build::TOPIC.into(),
            key: None,
            value: value.into(),
            partition: None,
            offset: None,
            tombstone: false,
        };
        let (_, lost_id) = h.invoke("producer-0", op("producer-0-1"));
        let (_, failed_id) = h.invoke("producer-0", op("producer-0-2"));
        h.fail("producer-0", failed_id, op("producer-0-2"));
        h.ok(
            "producer-0",
            lost_id,
            crate::history::Op::Send {
                topic: crate::checkers::facts::build::TOPIC.into(),
                key: None,
                value: "producer-0-1".into(),
                partition: Some(0),
                offset: Some(0),
                tombstone: false,
            },
        );
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        h.send("producer-0", None, "producer-0-3", 0, 0);
        h.final_read(0, 0, vec![record(0, 0, None, "producer-0-3")]);
        let verdict = LostWrite.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_write_accepted_over_a_permitted_loss_is_a_silent_gap() {
        let mut h = H::new(false, true);
        let lost = h.send("producer-0", None, "producer-0-1", 0, 0);
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        // The broker lost offset 0, then took the producer's next batch.
        let later = h.send("producer-0", None, "producer-0-2", 0, 0);
        h.final_read(0, 0, vec![record(0, 0, None, "producer-0-2")]);
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.anomalies.len(), 1);
        assert!(verdict.anomalies[0].description.starts_with("silent-gap"));
        assert_eq!(verdict.anomalies[0].entries, vec![lost.0, lost.1, later.1]);

        // The same history with a failed send in between is a new session.
        let mut h = H::new(false, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        let op = crate::history::Op::Send {
            topic: crate::checkers::facts::build::TOPIC.into(),
            key: None,
            value: "producer-0-2".into(),
            partition: None,
            offset: None,
            tombstone: false,
        };
        let (_, id) = h.invoke("producer-0", op.clone());
        h.fail("producer-0", id, op);
        h.send("producer-0", None, "producer-0-3", 0, 0);
        h.final_read(0, 0, vec![record(0, 0, None, "producer-0-3")]);
        let verdict = LostWrite.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_power_loss_does_not_excuse_a_hole() {
        let mut h = H::new(false, true);
        let lost = h.send("producer-0", None, "producer-0-1", 0, 0);
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        h.send("producer-1", None, "producer-1-1", 0, 1);
        let read = h.final_read(0, 0, vec![record(0, 1, None, "producer-1-1")]);
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.anomalies[0].entries, vec![lost.0, lost.1, read]);
        assert!(verdict.anomalies[0].description.contains("skips it"));
    }

    #[test]
    fn a_power_loss_before_the_send_excuses_nothing() {
        let mut h = H::new(false, true);
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        let lost = h.send("producer-0", None, "producer-0-1", 0, 0);
        h.send("producer-0", None, "producer-0-2", 0, 1);
        let read = h.final_read(0, 0, vec![record(0, 1, None, "producer-0-2")]);
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.anomalies[0].entries, vec![lost.0, lost.1, read]);
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(true, true);
        // Offset 0 fell to retention.
        h.send("producer-0", None, "producer-0-1", 0, 0);
        h.send("producer-0", None, "producer-0-2", 0, 1);
        h.final_read(0, 1, vec![record(0, 1, None, "producer-0-2")]);
        let verdict = LostWrite.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.starts_with("checked 1 acked sends"),
            "{}",
            verdict.summary
        );
    }

    #[test]
    fn a_lost_acked_tail_is_a_lost_write() {
        let mut h = H::new(true, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        let lost = h.send("producer-0", None, "producer-0-2", 0, 1);
        let read = h.final_read(0, 0, vec![record(0, 0, None, "producer-0-1")]);
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.anomalies[0].entries, vec![lost.0, lost.1, read]);
        assert!(verdict.anomalies[0]
            .description
            .contains("log ends before it"));
    }
}

#[cfg(test)]
mod missing_facts {
    use super::*;
    use crate::checkers::facts::build::H;

    #[test]
    fn acked_sends_without_a_final_read_fail_loudly() {
        let mut h = H::new(true, true);
        let (_, ok) = h.send("producer-0", None, "producer-0-1", 2, 0);
        let verdict = LostWrite.check(&h.build());
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("missing-facts: t-2 has acked sends but no final_read"));
        assert_eq!(verdict.anomalies[0].entries, vec![ok]);
    }
}
