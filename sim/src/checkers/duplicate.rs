//! `duplicate` (safety): with the idempotent producer, each value is stored
//! once: never at two offsets.
//!
//! Idempotence exists so that a producer's retry of a batch that did reach the
//! log is dropped by the broker; a value at two offsets means the broker
//! appended a retry it should have recognised. Without idempotence retries may
//! legitimately duplicate, so duplicates are then only counted in the summary.
//!
//! Locations come from polls and final reads: a final read shows what is
//! stored now, a poll what was stored when it ran. A value read at one offset
//! before a broker power loss (with `flush_on_ack` false) and at another after
//! it is not a duplicate: the first copy may have been lost and the retry
//! written anew. Two copies in one final read are excused only in the
//! producer's documented restamp window: the producer starting a new
//! session (a failed or unknown send, which makes it take a new producer id
//! and restamp its waiting batches) between the send's invoke and its ack.
//! A batch whose answer was lost (a broker crash or restart, a cut link) may
//! have reached the log and then be written again under the new id; no
//! power loss is needed for that.

use std::collections::BTreeMap;

use super::facts::{record_tp, show, verdict, Facts, Tp};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Kind, Op};

pub struct Duplicate;

impl Checker for Duplicate {
    fn name(&self) -> &'static str {
        "duplicate"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        // Each acknowledged value's send, for the restamp window.
        let sends: BTreeMap<&str, &super::facts::AckedSend<'_>> = facts
            .acked_sends
            .iter()
            .map(|send| (send.value, send))
            .collect();
        let restamped = |value: &str| {
            sends.get(value).is_some_and(|send| {
                facts.session_break_between(send.process, send.invoke_index, send.ok_index)
            })
        };
        // Each value's distinct locations, with the index first showing each.
        let mut locations: BTreeMap<&str, Vec<(Tp<'_>, i64, u64)>> = BTreeMap::new();
        let mut found = Vec::new();
        let mut permitted = 0usize;
        for entry in history {
            let Kind::Ok {
                op: Op::Poll { records, .. } | Op::FinalRead { records, .. },
            } = &entry.kind
            else {
                continue;
            };
            for record in records {
                let tp = record_tp(record);
                let known = locations.entry(record.value.as_str()).or_default();
                if known.iter().any(|&(t, o, _)| t == tp && o == record.offset) {
                    continue;
                }
                // Compare with every earlier location; report the first
                // unexcused pair, once per new location.
                let unexcused = known
                    .iter()
                    .find(|&&(_, _, first)| !facts.loss_permitted_between(first, entry.index))
                    .filter(|_| !restamped(record.value.as_str()));
                match unexcused {
                    Some(&(other_tp, other_offset, first)) => found.push(Anomaly {
                        description: format!(
                            "{} stored at {}@{other_offset} and {}@{}",
                            record.value,
                            show(other_tp),
                            show(tp),
                            record.offset
                        ),
                        entries: vec![first, entry.index],
                    }),
                    None if !known.is_empty() => permitted += 1,
                    None => {}
                }
                known.push((tp, record.offset, entry.index));
            }
        }

        let duplicated = found.len();
        let anomalies = if facts.settings.idempotence {
            found
        } else {
            Vec::new()
        };
        let summary = format!(
            "{} values read by polls and final reads (idempotence={}{}); {duplicated} extra \
             locations{}; {permitted} excused by a power loss or the producer's restamp window",
            locations.len(),
            facts.settings.idempotence,
            facts.settings_note(),
            if facts.settings.idempotence {
                ""
            } else {
                " (not anomalies without idempotence)"
            },
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
    fn a_restamped_retry_is_excused_and_only_then() {
        for (power_loss, new_session) in
            [(true, true), (true, false), (false, true), (false, false)]
        {
            let mut h = H::new(false, true);
            let (_, id) = h.invoke("producer-0", H::send_op(None, "producer-0-1", None, None));
            if power_loss {
                h.fault(FaultKind::CrashBroker, "broker-0", true);
            }
            if new_session {
                // Another send fails: the producer takes a new producer id
                // and restamps the waiting batch.
                h.fail_send("producer-0", "producer-0-2");
            }
            h.ok(
                "producer-0",
                id,
                H::send_op(None, "producer-0-1", Some(0), Some(1)),
            );
            h.final_read(
                0,
                0,
                vec![
                    record(0, 0, None, "producer-0-1"),
                    record(0, 1, None, "producer-0-1"),
                ],
            );
            let verdict = Duplicate.check(&h.build());
            // A power loss alone excuses nothing here (both copies are in
            // one final read); a new session does, with or without one.
            assert_eq!(
                verdict.valid, new_session,
                "power loss {power_loss}, new session {new_session}: {verdict:?}"
            );
        }
    }

    #[test]
    fn a_value_at_two_offsets_is_a_duplicate_with_idempotence() {
        for idempotence in [true, false] {
            let mut h = H::new(true, idempotence);
            h.send("producer-0", None, "producer-0-1", 0, 0);
            let poll = h.poll("consumer-0", "g", vec![record(0, 0, None, "producer-0-1")]);
            let read = h.final_read(
                0,
                0,
                vec![
                    record(0, 0, None, "producer-0-1"),
                    record(0, 1, None, "producer-0-1"),
                ],
            );
            let verdict = Duplicate.check(&h.build());
            assert!(
                verdict.summary.contains("1 extra locations"),
                "{}",
                verdict.summary
            );
            assert_eq!(verdict.valid, !idempotence);
            if idempotence {
                assert_eq!(verdict.anomalies.len(), 1);
                assert_eq!(verdict.anomalies[0].entries, vec![poll, read]);
            }
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(false, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        h.poll("consumer-0", "g", vec![record(0, 0, None, "producer-0-1")]);
        // Read twice at the same offset: not a duplicate.
        h.poll("consumer-1", "g", vec![record(0, 0, None, "producer-0-1")]);
        // The copy at offset 0 is lost to a power loss (flush_on_ack false);
        // the retry lands at offset 1, after another producer's record.
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        h.final_read(
            0,
            0,
            vec![
                record(0, 0, None, "producer-1-1"),
                record(0, 1, None, "producer-0-1"),
            ],
        );
        let verdict = Duplicate.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("1 excused"), "{}", verdict.summary);
    }
}
