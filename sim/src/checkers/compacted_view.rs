//! `compacted-view` (safety): on a compacted topic, the final read of each
//! partition holds, for every key, its latest acknowledged record or a
//! later one; a key whose latest acknowledged record is a value never
//! disappears, and one whose latest is a tombstone disappears only once
//! the tombstone's `delete.retention.ms` has passed.
//!
//! The log cleaner may remove a record only when a later record of its key
//! exists, and a tombstone only after `delete.retention.ms`. So for each
//! key, the final read's last record of that key must sit at or after the
//! key's latest acknowledged offset. It fails when the cleaner kept an
//! older record instead of the latest (`cleaner-drops-latest`) or dropped a
//! tombstone while a reader could still need it (`tombstone-dropped-early`,
//! the final read finishing within the retention of the tombstone's send).
//!
//! Exemptions, as in `lost-write`: a send acknowledged after the final read
//! began, one below the final log start, and one a power loss may have
//! taken (`flush_on_ack` false). Without a compacted topic (the `Meta`
//! event's `compacted`) the checker has nothing to judge and passes.

use std::collections::BTreeMap;

use super::facts::{show, verdict, AckedSend, Facts, Tp};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::Entry;

pub struct CompactedView;

impl Checker for CompactedView {
    fn name(&self) -> &'static str {
        "compacted-view"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        if !facts.settings.compacted {
            return verdict(
                self,
                Vec::new(),
                "no compacted topic in this run: nothing to judge".to_string(),
            );
        }
        // Per partition and key, the acknowledged send at the highest offset
        // that the final read must reflect.
        let mut latest: BTreeMap<(Tp<'_>, &str), &AckedSend<'_>> = BTreeMap::new();
        let mut exempt = 0usize;
        for send in &facts.acked_sends {
            let Some(key) = send.key else {
                continue;
            };
            let Some(read) = facts.final_reads.get(&send.tp) else {
                continue;
            };
            if send.ok_index > read.invoke_index || send.offset < read.log_start_offset {
                exempt += 1;
                continue;
            }
            let slot = latest.entry((send.tp, key)).or_insert(send);
            if send.offset > slot.offset {
                *slot = send;
            }
        }
        let mut anomalies = Vec::new();
        let mut checked = 0usize;
        let mut expired = 0usize;
        let mut permitted = 0usize;
        for ((tp, key), send) in &latest {
            let read = &facts.final_reads[tp];
            let last_read = read
                .records
                .iter()
                .filter(|record| record.key.as_deref() == Some(*key))
                .map(|record| record.offset)
                .max();
            if last_read.is_some_and(|offset| offset >= send.offset) {
                checked += 1;
                continue;
            }
            if facts.loss_permitted_after(send.invoke_index) {
                permitted += 1;
                continue;
            }
            let tombstone_expired = send.tombstone
                && read.ok_time_ms > send.invoke_time_ms + facts.settings.delete_retention_ms;
            if tombstone_expired && last_read.is_none() {
                expired += 1;
                continue;
            }
            checked += 1;
            let what = if send.tombstone { "tombstone" } else { "value" };
            let found = match last_read {
                Some(offset) => format!("its last record there is the older offset {offset}"),
                None => "the key is gone".to_string(),
            };
            anomalies.push(Anomaly {
                description: format!(
                    "key {key} in {}: its latest acked {what} {} at offset {} (sent at {} ms, \
                     final read done at {} ms, delete.retention.ms {}) is not reflected: {found}",
                    show(*tp),
                    send.value,
                    send.offset,
                    send.invoke_time_ms,
                    read.ok_time_ms,
                    facts.settings.delete_retention_ms,
                ),
                entries: vec![send.invoke_index, send.ok_index, read.index],
            });
        }
        let summary = format!(
            "{} keys judged in final reads; {expired} gone after their tombstone expired, \
             {permitted} permitted losses, {exempt} sends exempt (acked during the final read \
             or below the log start)",
            checked
        );
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::{DELETE_RETENTION_MS, H};
    use crate::history::{Op, Record, TopicPartition};

    const RETENTION_MS: u64 = DELETE_RETENTION_MS;

    fn send(h: &mut H, key: &str, value: &str, offset: i64, tombstone: bool) {
        let op = |at: Option<i64>| Op::Send {
            topic: "t".into(),
            key: Some(key.into()),
            value: value.into(),
            partition: at.map(|_| 0),
            offset: at,
            tombstone,
        };
        let (_, id) = h.invoke("producer-0", op(None));
        h.ok("producer-0", id, op(Some(offset)));
    }

    fn record(offset: i64, key: &str, value: &str, tombstone: bool) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            key: Some(key.into()),
            value: value.into(),
            tombstone,
        }
    }

    fn final_read(h: &mut H, records: Vec<Record>) {
        let target = TopicPartition {
            topic: "t".into(),
            partition: 0,
        };
        let op = |records| Op::FinalRead {
            target: target.clone(),
            log_start_offset: 0,
            records,
        };
        let (_, id) = h.invoke("reader", op(Vec::new()));
        h.ok("reader", id, op(records));
    }

    #[test]
    fn latest_values_and_live_tombstones_kept_pass() {
        let mut h = H::compacted();
        send(&mut h, "a", "p-0", 0, false);
        send(&mut h, "b", "p-1", 1, false);
        send(&mut h, "a", "p-2", 2, false);
        send(&mut h, "b", "p-3", 3, true);
        final_read(
            &mut h,
            vec![record(2, "a", "p-2", false), record(3, "b", "p-3", true)],
        );
        let verdict = CompactedView.check(&h.build());
        assert!(verdict.valid, "{:?}", verdict.anomalies);
    }

    #[test]
    fn an_older_value_in_place_of_the_latest_fails() {
        let mut h = H::compacted();
        send(&mut h, "a", "p-0", 0, false);
        send(&mut h, "a", "p-1", 1, false);
        final_read(&mut h, vec![record(0, "a", "p-0", false)]);
        let verdict = CompactedView.check(&h.build());
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0].description.contains("older offset 0"));
    }

    #[test]
    fn a_tombstone_gone_within_its_retention_fails_and_after_it_passes() {
        let mut h = H::compacted();
        send(&mut h, "a", "p-0", 0, false);
        send(&mut h, "a", "p-1", 1, true);
        final_read(&mut h, Vec::new());
        let verdict = CompactedView.check(&h.build());
        assert!(
            !verdict.valid,
            "read within the retention: the delete must show"
        );
        assert!(verdict.anomalies[0].description.contains("the key is gone"));

        let mut h = H::compacted();
        send(&mut h, "a", "p-0", 0, false);
        send(&mut h, "a", "p-1", 1, true);
        h.advance(RETENTION_MS + 1);
        final_read(&mut h, Vec::new());
        let verdict = CompactedView.check(&h.build());
        assert!(verdict.valid, "{:?}", verdict.anomalies);
    }

    #[test]
    fn an_older_value_resurrected_after_a_tombstone_fails_even_once_it_expired() {
        let mut h = H::compacted();
        send(&mut h, "a", "p-0", 0, false);
        send(&mut h, "a", "p-1", 1, true);
        h.advance(RETENTION_MS + 1);
        final_read(&mut h, vec![record(0, "a", "p-0", false)]);
        let verdict = CompactedView.check(&h.build());
        assert!(!verdict.valid);
    }

    #[test]
    fn an_uncompacted_run_passes_with_nothing_to_judge() {
        let mut h = H::default();
        send(&mut h, "a", "p-0", 0, false);
        send(&mut h, "a", "p-1", 1, false);
        final_read(&mut h, vec![record(0, "a", "p-0", false)]);
        let verdict = CompactedView.check(&h.build());
        assert!(verdict.valid);
    }
}
