//! `progress` (liveness): a run in which producers tried to send and nothing
//! was ever acknowledged did not test what the other checkers judge, so it
//! must not pass. Every other checker is satisfied by an empty history: with
//! no acknowledged write there is nothing to lose, reorder or leave unread.
//! This catches a cluster that never became available (no controller, no
//! topic) as a failure instead of a quiet pass.

use super::facts::{verdict, Facts};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Kind, Op};

pub struct Progress;

impl Checker for Progress {
    fn name(&self) -> &'static str {
        "progress"
    }

    fn property(&self) -> Property {
        Property::Liveness
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        let invoked: Vec<u64> = history
            .iter()
            .filter(|entry| {
                matches!(
                    entry.kind,
                    Kind::Invoke {
                        op: Op::Send { .. }
                    }
                )
            })
            .map(|entry| entry.index)
            .collect();
        let acked = facts.acked_sends.len() + facts.acked_sends_without_offset;
        let mut anomalies = Vec::new();
        if let (Some(&first), 0) = (invoked.first(), acked) {
            anomalies.push(Anomaly {
                description: format!(
                    "no-acked-sends: {} sends invoked and none acknowledged",
                    invoked.len()
                ),
                entries: vec![first],
            });
        }
        let summary = format!("{} sends invoked, {acked} acknowledged", invoked.len());
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::{H, TOPIC};

    fn send_op(value: &str) -> Op {
        Op::Send {
            topic: TOPIC.into(),
            key: None,
            value: value.into(),
            partition: None,
            offset: None,
            tombstone: false,
        }
    }

    #[test]
    fn sends_that_were_never_acknowledged_fail() {
        let mut h = H::new(false, true);
        let (first, id) = h.invoke("producer-0", send_op("producer-0-1"));
        h.fail("producer-0", id, send_op("producer-0-1"));
        h.invoke("producer-0", send_op("producer-0-2"));
        let verdict = Progress.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.anomalies[0].entries, vec![first]);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("no-acked-sends: 2 sends"));
    }

    #[test]
    fn one_acknowledged_send_is_progress() {
        let mut h = H::new(false, true);
        h.invoke("producer-0", send_op("producer-0-0"));
        h.send("producer-0", None, "producer-0-1", 0, 0);
        let verdict = Progress.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }
}
