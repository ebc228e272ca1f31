//! `isr-shrink` (liveness): a follower cut off from its partition leader
//! leaves the leader's ISR within `replica.lag.time.max.ms` (plus slack for
//! the leader's tick and the controller's write), so acks=all produce to
//! the partition stalls no longer than that (Kafka's promise behind the lag
//! limit).
//!
//! Judged only where the facts leave no other explanation for a stall: a
//! `partition-pair` fault cuts two brokers from each other, neither of them
//! the active controller, while no other fault is active. For every
//! partition one of them leads with the other in its ISR (as the leader's
//! `partition_leader` and `isr_changed` facts say), the leader must report
//! an `isr_changed` without the cut follower, or the partition a new
//! leader, within the lag limit plus [`SHRINK_SLACK_MS`] of the cut. The
//! obligation lapses if the cut heals first, another fault starts, the
//! quorum changes leader, or the history ends before the deadline.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::verdict;
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Event, FaultKind, Kind};

/// What the shrink may take beyond the lag limit: the leader's ISR tick
/// (200 ms), a follower fetch that was caught up just before the cut (up to
/// `replica.fetch.wait.max.ms`, 500 ms by default), the AlterPartition round
/// trip and the metadata write, committed and applied back at the leader.
const SHRINK_SLACK_MS: u64 = 2_000;

pub struct IsrShrink;

/// A leader that must drop `follower` from a partition's ISR by `deadline_ms`.
struct Obligation<'a> {
    topic: &'a str,
    partition: i32,
    leader: &'a str,
    follower: i32,
    deadline_ms: u64,
    cut_index: u64,
    /// The cut: (target, peer).
    cut: (&'a str, &'a str),
}

/// `broker-N` -> N.
fn node_id(broker: &str) -> Option<i32> {
    broker.strip_prefix("broker-")?.parse().ok()
}

impl Checker for IsrShrink {
    fn name(&self) -> &'static str {
        "isr-shrink"
    }

    fn property(&self) -> Property {
        Property::Liveness
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let lag_max_ms = history.iter().find_map(|entry| match &entry.kind {
            Kind::Event {
                event:
                    Event::Meta {
                        replica_lag_time_max_ms,
                        ..
                    },
            } => Some(*replica_lag_time_max_ms),
            _ => None,
        });
        let Some(lag_max_ms) = lag_max_ms.filter(|lag| *lag > 0) else {
            return verdict(
                self,
                Vec::new(),
                "no replica.lag.time.max.ms in the history's meta: nothing judged".into(),
            );
        };
        let mut anomalies = Vec::new();
        // (topic, partition) -> (leader, its epoch, the ISR it reported).
        let mut leaders: BTreeMap<(&str, i32), (&str, i32, BTreeSet<i32>)> = BTreeMap::new();
        let mut controller: Option<&str> = None;
        // Faults in progress: (kind, target, peer).
        let mut active: Vec<(FaultKind, &str, Option<&str>)> = Vec::new();
        let mut open: Vec<Obligation<'_>> = Vec::new();
        let (mut judged, mut kept) = (0usize, 0usize);
        for entry in history {
            // Deadlines first: an entry past one shows the leader missed it.
            open.retain(|due| {
                if entry.time_ms <= due.deadline_ms {
                    return true;
                }
                judged += 1;
                anomalies.push(Anomaly {
                    description: format!(
                        "isr-not-shrunk: {} was cut from broker-{} at entry {}, yet still \
                         counted it in {}-{}'s ISR {} ms later (replica.lag.time.max.ms \
                         {lag_max_ms} plus {SHRINK_SLACK_MS} ms)",
                        due.leader,
                        due.follower,
                        due.cut_index,
                        due.topic,
                        due.partition,
                        lag_max_ms + SHRINK_SLACK_MS
                    ),
                    entries: vec![due.cut_index, entry.index],
                });
                false
            });
            let Kind::Event { event } = &entry.kind else {
                continue;
            };
            match event {
                Event::QuorumLeader { broker, .. } => {
                    controller = Some(broker);
                    open.clear();
                }
                Event::PartitionLeader {
                    broker,
                    topic,
                    partition,
                    leader_epoch,
                    isr,
                    ..
                } => {
                    let key = (topic.as_str(), *partition);
                    // A broker replaying old metadata briefly takes up an
                    // older epoch's leadership: not the partition's leader.
                    if leaders
                        .get(&key)
                        .is_some_and(|(_, epoch, _)| leader_epoch < epoch)
                    {
                        continue;
                    }
                    leaders.insert(key, (broker, *leader_epoch, isr.iter().copied().collect()));
                    kept += open
                        .iter()
                        .filter(|due| (due.topic, due.partition) == key)
                        .count();
                    open.retain(|due| (due.topic, due.partition) != key);
                }
                Event::IsrChanged {
                    broker,
                    topic,
                    partition,
                    isr,
                    ..
                } => {
                    let key = (topic.as_str(), *partition);
                    if let Some((leader, _, view)) = leaders.get_mut(&key) {
                        if *leader == broker.as_str() {
                            *view = isr.iter().copied().collect();
                        }
                    }
                    let shrunk = |due: &Obligation<'_>| {
                        (due.topic, due.partition) == key
                            && due.leader == broker.as_str()
                            && !isr.contains(&due.follower)
                    };
                    kept += open.iter().filter(|due| shrunk(due)).count();
                    open.retain(|due| !shrunk(due));
                }
                Event::Fault {
                    kind,
                    target,
                    peer,
                    healed,
                    ..
                } => {
                    let fault = (*kind, target.as_str(), peer.as_deref());
                    if *healed {
                        if let Some(at) = active.iter().position(|f| *f == fault) {
                            active.remove(at);
                        }
                        open.retain(|due| {
                            due.cut != (target.as_str(), peer.as_deref().unwrap_or(""))
                        });
                        continue;
                    }
                    // Any other fault may explain a stall: stop judging.
                    open.clear();
                    let alone = active.is_empty();
                    active.push(fault);
                    let (FaultKind::PartitionPair, Some(peer)) = (*kind, peer.as_deref()) else {
                        continue;
                    };
                    if !alone || controller == Some(target.as_str()) || controller == Some(peer) {
                        continue;
                    }
                    for ((topic, partition), (leader, _, isr)) in &leaders {
                        let follower = if *leader == target.as_str() {
                            peer
                        } else if *leader == peer {
                            target.as_str()
                        } else {
                            continue;
                        };
                        let Some(follower) = node_id(follower).filter(|id| isr.contains(id)) else {
                            continue;
                        };
                        open.push(Obligation {
                            topic,
                            partition: *partition,
                            leader,
                            follower,
                            deadline_ms: entry.time_ms + lag_max_ms + SHRINK_SLACK_MS,
                            cut_index: entry.index,
                            cut: (target.as_str(), peer),
                        });
                    }
                }
                Event::PartitionFollower {
                    broker,
                    topic,
                    partition,
                    ..
                } => {
                    // The leader stepped down: it owes this partition nothing.
                    let key = (topic.as_str(), *partition);
                    open.retain(|due| (due.topic, due.partition) != key || due.leader != broker);
                }
                Event::Heal => open.clear(),
                _ => {}
            }
        }
        let summary = format!(
            "{} cut followers checked against replica.lag.time.max.ms {lag_max_ms} \
             (+{SHRINK_SLACK_MS} ms): {kept} left the ISR or lost their leader in time",
            judged + kept
        );
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::build::{H, TOPIC};
    use super::*;

    /// broker-0 controls the quorum; broker-1 leads partition 0 with every
    /// broker in its ISR; at 1000 ms broker-1 and broker-2 are cut apart.
    fn cut_follower(h: &mut H) -> u64 {
        h.event_at(
            0,
            "broker-0",
            Event::QuorumLeader {
                broker: "broker-0".into(),
                epoch: 1,
            },
        );
        h.event_at(
            0,
            "broker-1",
            Event::PartitionLeader {
                broker: "broker-1".into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 1,
                isr: vec![0, 1, 2],
                log_end_offset: 0,
            },
        );
        h.event_at(
            1_000,
            "nemesis",
            Event::Fault {
                kind: FaultKind::PartitionPair,
                target: "broker-1".into(),
                peer: Some("broker-2".into()),
                power_loss: false,
                healed: false,
            },
        )
    }

    fn isr_changed(h: &mut H, time_ms: u64, isr: Vec<i32>) -> u64 {
        h.event_at(
            time_ms,
            "broker-1",
            Event::IsrChanged {
                broker: "broker-1".into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 1,
                isr,
            },
        )
    }

    fn later(h: &mut H, time_ms: u64) -> u64 {
        h.event_at(
            time_ms,
            "broker-1",
            Event::HighWatermark {
                broker: "broker-1".into(),
                topic: TOPIC.into(),
                partition: 0,
                high_watermark: 5,
            },
        )
    }

    #[test]
    fn a_cut_follower_kept_in_the_isr_past_the_lag_limit_is_caught() {
        let mut h = H::replicated(false);
        let cut = cut_follower(&mut h);
        let past = later(&mut h, 1_000 + 3_000 + SHRINK_SLACK_MS + 1);
        let verdict = IsrShrink.check(&h.build());
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.property, Property::Liveness);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("isr-not-shrunk"));
        assert_eq!(verdict.anomalies[0].entries, vec![cut, past]);
    }

    #[test]
    fn a_cut_follower_dropped_in_time_passes() {
        let mut h = H::replicated(false);
        cut_follower(&mut h);
        isr_changed(&mut h, 4_300, vec![0, 1]);
        later(&mut h, 20_000);
        let verdict = IsrShrink.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.starts_with("1 cut followers"),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_cut_that_heals_or_meets_another_fault_is_not_judged() {
        let mut h = H::replicated(false);
        cut_follower(&mut h);
        h.event_at(
            2_000,
            "nemesis",
            Event::Fault {
                kind: FaultKind::CrashBroker,
                target: "broker-0".into(),
                peer: None,
                power_loss: true,
                healed: false,
            },
        );
        later(&mut h, 20_000);
        let verdict = IsrShrink.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }
}
