//! `unseen` (liveness): every acknowledged send is eventually read by someone,
//! a consumer's poll or the heal phase's final read.
//!
//! `lost-write` can only prove a loss where the final read reaches past the
//! acked offset; this checker catches the rest, such as a truncated tail or a
//! partition nobody could read. It is liveness rather than safety because a
//! record nobody read yet may still be in the log.
//!
//! The same exceptions as `lost-write` apply: a power loss after the send's
//! invoke with `flush_on_ack` false may lose it, and an offset below the final
//! `log_start_offset` may have been removed by retention before anyone read it.
//! On a compacted topic, a send a later record of its key supersedes, or a
//! tombstone past `delete.retention.ms`, may be cleaned before anyone reads
//! it (`compacted-view` judges the end state).

use std::collections::BTreeSet;

use super::facts::{show, verdict, Facts};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Kind, Op};

pub struct Unseen;

impl Checker for Unseen {
    fn name(&self) -> &'static str {
        "unseen"
    }

    fn property(&self) -> Property {
        Property::Liveness
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        let mut seen = BTreeSet::new();
        for entry in history {
            if let Kind::Ok {
                op: Op::Poll { records, .. } | Op::FinalRead { records, .. },
            } = &entry.kind
            {
                seen.extend(records.iter().map(|record| record.value.as_str()));
            }
        }

        let mut anomalies = Vec::new();
        let mut read = 0usize;
        let mut permitted = 0usize;
        let mut retained = 0usize;
        let mut compacted = 0usize;
        for send in &facts.acked_sends {
            if seen.contains(send.value) {
                read += 1;
            } else if send.offset < facts.log_start_offset(send.tp) {
                retained += 1;
            } else if facts.compacted_away(send) {
                compacted += 1;
            } else if facts.loss_permitted_after(send.invoke_index) {
                permitted += 1;
            } else {
                anomalies.push(Anomaly {
                    description: format!(
                        "{} acked at {}@{} was never read",
                        send.value,
                        show(send.tp),
                        send.offset
                    ),
                    entries: vec![send.invoke_index, send.ok_index],
                });
            }
        }

        let summary = format!(
            "{} acked sends{}, {read} read by a poll or final read; {permitted} permitted losses \
             (power loss, flush_on_ack={}); {retained} below log start; {compacted} compacted away",
            facts.acked_sends.len(),
            facts.settings_note(),
            facts.settings.flush_on_ack,
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
    fn an_ack_nobody_read_is_unseen() {
        let mut h = H::new(true, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        let unseen = h.send("producer-0", None, "producer-0-2", 0, 1);
        h.poll("consumer-0", "g", vec![record(0, 0, None, "producer-0-1")]);
        h.final_read(0, 0, vec![record(0, 0, None, "producer-0-1")]);
        let verdict = Unseen.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.property, Property::Liveness);
        assert_eq!(verdict.anomalies.len(), 1);
        assert_eq!(verdict.anomalies[0].entries, vec![unseen.0, unseen.1]);
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(false, true);
        h.send("producer-0", None, "producer-0-1", 0, 0);
        h.send("producer-0", None, "producer-0-2", 0, 1);
        h.send("producer-0", None, "producer-0-3", 0, 2);
        // Lost to a power loss with flush_on_ack false: permitted.
        h.send("producer-0", None, "producer-0-4", 0, 3);
        h.fault(FaultKind::CrashBroker, "broker-0", true);
        h.poll("consumer-0", "g", vec![record(0, 1, None, "producer-0-2")]);
        // Offset 0 fell to retention before anyone read it.
        h.final_read(0, 1, vec![record(0, 2, None, "producer-0-3")]);
        let verdict = Unseen.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.contains("1 permitted losses"),
            "{}",
            verdict.summary
        );
        assert!(
            verdict.summary.contains("1 below log start"),
            "{}",
            verdict.summary
        );
    }
}
