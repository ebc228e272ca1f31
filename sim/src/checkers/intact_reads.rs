//! `intact-reads` (safety): every batch a broker serves passes validation.
//! The broker validates batches on the way in, so a consumer that fetches a
//! batch with a bad CRC or broken framing (a `CorruptRead` event) was served
//! bytes the log should never have kept, such as a tail torn by a power loss
//! that recovery failed to cut.

use std::collections::BTreeSet;

use super::facts::{show, verdict};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Event, Kind};

pub struct IntactReads;

impl Checker for IntactReads {
    fn name(&self) -> &'static str {
        "intact-reads"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let mut anomalies = Vec::new();
        let mut reported = BTreeSet::new();
        let mut corrupt_reads = 0usize;
        for entry in history {
            let Kind::Event {
                event:
                    Event::CorruptRead {
                        topic,
                        partition,
                        detail,
                    },
            } = &entry.kind
            else {
                continue;
            };
            corrupt_reads += 1;
            // One finding per partition: a corrupt batch stays put, and every
            // reader of the partition trips over it.
            if reported.insert((topic.as_str(), *partition)) {
                anomalies.push(Anomaly {
                    description: format!(
                        "{} fetched a corrupt batch from {}: {detail}",
                        entry.process,
                        show((topic.as_str(), *partition))
                    ),
                    entries: vec![entry.index],
                });
            }
        }
        let summary = format!(
            "{corrupt_reads} corrupt fetches in {} partitions",
            reported.len()
        );
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::{record, H, TOPIC};

    #[test]
    fn a_corrupt_fetch_is_reported_once_per_partition() {
        let mut h = H::new(true, true);
        h.poll("consumer-0", "g", vec![record(0, 0, None, "a")]);
        let corrupt = |detail: &str| Event::CorruptRead {
            topic: TOPIC.into(),
            partition: 0,
            detail: detail.into(),
        };
        let first = h.event_by("consumer-0", corrupt("crc mismatch"));
        h.event_by("final-reader", corrupt("crc mismatch"));
        let verdict = IntactReads.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.anomalies.len(), 1);
        assert_eq!(verdict.anomalies[0].entries, vec![first]);
        assert!(verdict
            .summary
            .starts_with("2 corrupt fetches in 1 partitions"));
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = H::new(true, true);
        h.poll("consumer-0", "g", vec![record(0, 0, None, "a")]);
        h.final_read(0, 0, vec![record(0, 0, None, "a")]);
        let verdict = IntactReads.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }
}
