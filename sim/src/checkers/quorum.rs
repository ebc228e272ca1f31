//! The controller quorum, judged from the brokers' own facts.
//!
//! - `single-leader` (safety): at most one broker leads each quorum epoch
//!   (`quorum_leader` events), and each broker's leadership epochs only
//!   rise, across its restarts too: Raft's election safety, which rests on
//!   a vote being durable before it is answered; each voter grants one
//!   candidate per quorum epoch (`vote_granted` events), across restarts.
//!   Likewise at most one broker leads each partition in each leader epoch
//!   (`partition_leader`
//!   events), and a broker never leads a partition in an epoch below one it
//!   led it in before: the controller bumps the epoch with every new leader.
//! - `metadata-agreement` (safety): every broker applies the same committed
//!   metadata entry at each offset (`metadata_applied` events agree on epoch
//!   and payload digest), and applies them in order, from offset 0 after
//!   each start, with no gap: Raft's state machine safety. And a quorum
//!   leader counts entries as committed only once an entry of its own
//!   epoch is (`quorum_high_watermark` events name the epoch of the entry
//!   just below the high watermark): Raft's Figure 8, where a leader that
//!   commits an earlier epoch's entry by counting replicas can see it
//!   overwritten.

use std::collections::BTreeMap;

use super::facts::verdict;
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Event, Kind};

pub struct SingleLeader;

impl Checker for SingleLeader {
    fn name(&self) -> &'static str {
        "single-leader"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let mut anomalies = Vec::new();
        // Quorum epoch -> the first broker that led it, and where.
        let mut leaders: BTreeMap<i32, (&str, u64)> = BTreeMap::new();
        // Broker -> its latest leadership epoch, and where.
        let mut latest: BTreeMap<&str, (i32, u64)> = BTreeMap::new();
        // (voter, epoch) -> the candidate it granted, and where.
        let mut votes: BTreeMap<(&str, i32), (i32, u64)> = BTreeMap::new();
        for entry in history {
            if let Kind::Event {
                event:
                    Event::VoteGranted {
                        broker,
                        epoch,
                        candidate,
                    },
            } = &entry.kind
            {
                match votes.get(&(broker.as_str(), *epoch)) {
                    Some(&(first, at)) if first != *candidate => anomalies.push(Anomaly {
                        description: format!(
                            "vote-twice: {broker} voted for {first} and then {candidate} in \
                             quorum epoch {epoch}"
                        ),
                        entries: vec![at, entry.index],
                    }),
                    Some(_) => {}
                    None => {
                        votes.insert((broker.as_str(), *epoch), (*candidate, entry.index));
                    }
                }
                continue;
            }
            let Kind::Event {
                event: Event::QuorumLeader { broker, epoch },
            } = &entry.kind
            else {
                continue;
            };
            let broker = broker.as_str();
            match leaders.get(epoch) {
                Some(&(first, at)) if first != broker => anomalies.push(Anomaly {
                    description: format!(
                        "two-leaders: {first} and {broker} both led quorum epoch {epoch}"
                    ),
                    entries: vec![at, entry.index],
                }),
                Some(_) => {}
                None => {
                    leaders.insert(*epoch, (broker, entry.index));
                }
            }
            if let Some(&(previous, at)) = latest.get(broker) {
                if *epoch <= previous {
                    anomalies.push(Anomaly {
                        description: format!(
                            "epoch-not-rising: {broker} led quorum epoch {epoch} after epoch \
                             {previous}"
                        ),
                        entries: vec![at, entry.index],
                    });
                }
            }
            latest.insert(broker, (*epoch, entry.index));
        }
        let partition_epochs = partition_leaders(history, &mut anomalies);
        let summary = format!(
            "{} quorum epochs with a leader, led by {} brokers, {} votes; {partition_epochs} \
             partition leader epochs",
            leaders.len(),
            latest.len(),
            votes.len()
        );
        verdict(self, anomalies, summary)
    }
}

/// One leader per partition and leader epoch, each broker's epochs never
/// falling. Returns how many (partition, leader epoch) pairs had a leader.
fn partition_leaders(history: &[Entry], anomalies: &mut Vec<Anomaly>) -> usize {
    // (topic, partition, leader epoch) -> the first broker that led it, and where.
    let mut leaders: BTreeMap<(&str, i32, i32), (&str, u64)> = BTreeMap::new();
    // (broker, topic, partition) -> its latest leader epoch, and where. A
    // broker that restarts may take up the same epoch again.
    let mut latest: BTreeMap<(&str, &str, i32), (i32, u64)> = BTreeMap::new();
    for entry in history {
        let Kind::Event {
            event:
                Event::PartitionLeader {
                    broker,
                    topic,
                    partition,
                    leader_epoch,
                    ..
                },
        } = &entry.kind
        else {
            continue;
        };
        let (broker, topic) = (broker.as_str(), topic.as_str());
        match leaders.get(&(topic, *partition, *leader_epoch)) {
            Some(&(first, at)) if first != broker => anomalies.push(Anomaly {
                description: format!(
                    "two-partition-leaders: {first} and {broker} both led {topic}-{partition} \
                     in leader epoch {leader_epoch}"
                ),
                entries: vec![at, entry.index],
            }),
            Some(_) => {}
            None => {
                leaders.insert((topic, *partition, *leader_epoch), (broker, entry.index));
            }
        }
        let key = (broker, topic, *partition);
        if let Some(&(previous, at)) = latest.get(&key) {
            if *leader_epoch < previous {
                anomalies.push(Anomaly {
                    description: format!(
                        "leader-epoch-fell: {broker} led {topic}-{partition} in leader epoch \
                         {leader_epoch} after epoch {previous}"
                    ),
                    entries: vec![at, entry.index],
                });
            }
        }
        latest.insert(key, (*leader_epoch, entry.index));
    }
    leaders.len()
}

pub struct MetadataAgreement;

impl Checker for MetadataAgreement {
    fn name(&self) -> &'static str {
        "metadata-agreement"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let mut anomalies = Vec::new();
        // Offset -> the first (epoch, digest) applied there, by whom, where.
        let mut applied: BTreeMap<u64, (i32, u32, &str, u64)> = BTreeMap::new();
        // Broker -> the offset it applied last, and where.
        let mut position: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut facts = 0usize;
        let mut advances = 0usize;
        for entry in history {
            if let Kind::Event {
                event:
                    Event::QuorumHighWatermark {
                        broker,
                        epoch,
                        high_watermark,
                        committed_epoch,
                    },
            } = &entry.kind
            {
                advances += 1;
                if committed_epoch != epoch {
                    anomalies.push(Anomaly {
                        description: format!(
                            "commit-prior-epoch: {broker}, leading the quorum in epoch {epoch}, \
                             counted entries up to @{high_watermark} as committed, the last \
                             written in epoch {committed_epoch}, before any of its own epoch"
                        ),
                        entries: vec![entry.index],
                    });
                }
                continue;
            }
            let Kind::Event {
                event:
                    Event::MetadataApplied {
                        broker,
                        offset,
                        epoch,
                        digest,
                    },
            } = &entry.kind
            else {
                continue;
            };
            facts += 1;
            let broker = broker.as_str();
            match applied.get(offset) {
                Some(&(first_epoch, first_digest, first, at))
                    if (first_epoch, first_digest) != (*epoch, *digest) =>
                {
                    anomalies.push(Anomaly {
                        description: format!(
                            "metadata-diverged: {broker} applied @{offset} from epoch {epoch} \
                             (digest {digest:08x}) where {first} applied epoch {first_epoch} \
                             (digest {first_digest:08x})"
                        ),
                        entries: vec![at, entry.index],
                    })
                }
                Some(_) => {}
                None => {
                    applied.insert(*offset, (*epoch, *digest, broker, entry.index));
                }
            }
            // A restart replays from 0; otherwise each entry follows the last.
            let in_order = match position.get(broker) {
                Some(&(last, _)) => *offset == last + 1 || *offset == 0,
                None => *offset == 0,
            };
            if !in_order {
                let (last, at) = position
                    .get(broker)
                    .copied()
                    .map_or((None, entry.index), |(l, a)| (Some(l), a));
                anomalies.push(Anomaly {
                    description: format!(
                        "metadata-gap: {broker} applied @{offset} after {}",
                        last.map_or("nothing".to_string(), |l| format!("@{l}"))
                    ),
                    entries: vec![at, entry.index],
                });
            }
            position.insert(broker, (*offset, entry.index));
        }
        let summary = format!(
            "{facts} applied metadata entries, {} offsets, by {} brokers; {advances} quorum \
             high watermark advances checked for an entry of the leader's own epoch",
            applied.len(),
            position.len()
        );
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::facts::build::H;

    fn led(h: &mut H, broker: &str, epoch: i32) -> u64 {
        h.event_by(
            broker,
            Event::QuorumLeader {
                broker: broker.into(),
                epoch,
            },
        )
    }

    fn applied(h: &mut H, broker: &str, offset: u64, epoch: i32, digest: u32) -> u64 {
        h.event_by(
            broker,
            Event::MetadataApplied {
                broker: broker.into(),
                offset,
                epoch,
                digest,
            },
        )
    }

    fn led_partition(h: &mut H, broker: &str, partition: i32, leader_epoch: i32) -> u64 {
        h.event_by(
            broker,
            Event::PartitionLeader {
                broker: broker.into(),
                topic: "t".into(),
                partition,
                leader_epoch,
                isr: vec![0, 1, 2],
                log_end_offset: 0,
            },
        )
    }

    #[test]
    fn one_leader_per_partition_epoch_passes_and_a_restart_may_resume_its_epoch() {
        let mut h = H::new(false, true);
        led_partition(&mut h, "broker-0", 0, 0);
        led_partition(&mut h, "broker-1", 1, 0);
        led_partition(&mut h, "broker-1", 0, 1);
        led_partition(&mut h, "broker-1", 0, 1);
        led_partition(&mut h, "broker-0", 0, 3);
        let verdict = SingleLeader.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.contains("4 partition leader epochs"),
            "{verdict:?}"
        );
    }

    #[test]
    fn two_partition_leaders_in_one_epoch_and_a_falling_leader_epoch_are_reported() {
        let mut h = H::new(false, true);
        let first = led_partition(&mut h, "broker-0", 0, 2);
        let second = led_partition(&mut h, "broker-1", 0, 2);
        let fell = led_partition(&mut h, "broker-0", 0, 1);
        let verdict = SingleLeader.check(&h.build());
        assert_eq!(
            descriptions(&verdict),
            ["two-partition-leaders", "leader-epoch-fell"]
        );
        assert_eq!(verdict.anomalies[0].entries, vec![first, second]);
        assert_eq!(verdict.anomalies[1].entries, vec![first, fell]);
    }

    fn descriptions(verdict: &Verdict) -> Vec<String> {
        verdict
            .anomalies
            .iter()
            .map(|a| {
                a.description
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn one_leader_per_epoch_with_rising_epochs_passes() {
        let mut h = H::new(false, true);
        led(&mut h, "broker-0", 1);
        led(&mut h, "broker-1", 2);
        led(&mut h, "broker-0", 4);
        let verdict = SingleLeader.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn two_leaders_in_one_epoch_and_a_falling_epoch_are_reported() {
        let mut h = H::new(false, true);
        let first = led(&mut h, "broker-0", 3);
        let second = led(&mut h, "broker-2", 3);
        let later = led(&mut h, "broker-0", 2);
        let verdict = SingleLeader.check(&h.build());
        assert_eq!(descriptions(&verdict), ["two-leaders", "epoch-not-rising"]);
        assert_eq!(verdict.anomalies[0].entries, vec![first, second]);
        assert_eq!(verdict.anomalies[1].entries, vec![first, later]);
    }

    fn quorum_high_watermark(h: &mut H, epoch: i32, high_watermark: u64, committed_epoch: i32) {
        h.event_by(
            "broker-0",
            Event::QuorumHighWatermark {
                broker: "broker-0".into(),
                epoch,
                high_watermark,
                committed_epoch,
            },
        );
    }

    #[test]
    fn a_voter_grants_one_candidate_per_epoch() {
        let vote = |h: &mut H, epoch: i32, candidate: i32| {
            h.event_by(
                "broker-2",
                Event::VoteGranted {
                    broker: "broker-2".into(),
                    epoch,
                    candidate,
                },
            );
        };
        let mut h = H::new(false, true);
        vote(&mut h, 1, 0);
        vote(&mut h, 1, 0);
        vote(&mut h, 2, 1);
        let verdict = SingleLeader.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("2 votes"), "{verdict:?}");

        let mut h = H::new(false, true);
        vote(&mut h, 1, 0);
        vote(&mut h, 1, 1);
        let verdict = SingleLeader.check(&h.build());
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("vote-twice: broker-2 voted for 0 and then 1"));
    }

    #[test]
    fn a_leader_commits_only_through_an_entry_of_its_own_epoch() {
        let mut h = H::new(false, true);
        quorum_high_watermark(&mut h, 2, 5, 2);
        quorum_high_watermark(&mut h, 3, 9, 3);
        let verdict = MetadataAgreement.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("2 quorum high watermark advances"));

        // Figure 8: the epoch-3 leader counts epoch 2's entries committed.
        let mut h = H::new(false, true);
        quorum_high_watermark(&mut h, 3, 7, 2);
        let verdict = MetadataAgreement.check(&h.build());
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("commit-prior-epoch: broker-0, leading the quorum in epoch 3"));
    }

    #[test]
    fn brokers_applying_the_same_entries_in_order_agree() {
        let mut h = H::new(false, true);
        for broker in ["broker-0", "broker-1"] {
            applied(&mut h, broker, 0, 1, 7);
            applied(&mut h, broker, 1, 1, 8);
        }
        // A restart replays from the start.
        applied(&mut h, "broker-1", 0, 1, 7);
        let verdict = MetadataAgreement.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_different_entry_at_one_offset_and_a_skipped_one_are_reported() {
        let mut h = H::new(false, true);
        applied(&mut h, "broker-0", 0, 1, 7);
        let first = applied(&mut h, "broker-0", 1, 1, 8);
        applied(&mut h, "broker-1", 0, 1, 7);
        let diverged = applied(&mut h, "broker-1", 1, 2, 9);
        let skipped = applied(&mut h, "broker-0", 3, 2, 5);
        let verdict = MetadataAgreement.check(&h.build());
        assert_eq!(
            descriptions(&verdict),
            ["metadata-diverged", "metadata-gap"]
        );
        assert_eq!(verdict.anomalies[0].entries, vec![first, diverged]);
        assert_eq!(verdict.anomalies[1].entries, vec![first, skipped]);
    }
}
