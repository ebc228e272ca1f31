//! `unclean-exclusion` (safety, KIP-903): a follower joins an ISR only on
//! the strength of a fetch from the incarnation the cluster has registered
//! for it, made once it held everything committed.
//!
//! A broker that lost power and restarted may have lost records it had
//! fetched. A fetch it sent before the power loss can still reach the
//! leader afterwards (the network held it); if the leader readmits the
//! follower on that fetch, the ISR counts a replica without the records the
//! fetch claimed, and electing it loses them. So for every member a leader's
//! recorded ISR change adds (`isr_changed` against the leader's previous
//! view in that leader epoch), the fetch that justified it (the leader's
//! latest `follower_caught_up` for that follower in that epoch) must:
//!
//! - name the broker epoch the leader had applied as the follower's
//!   registered incarnation when the change was recorded
//!   (`stale-broker-epoch`): the controller refuses a proposal naming an
//!   older one, and the registration of a new incarnation first removes the
//!   broker from every ISR;
//! - have fetched from at least the highest high watermark any leader had
//!   advertised by then (`behind-high-watermark`), unless power losses
//!   since that high watermark was first advertised may have lost what it
//!   covered (`Facts::loss_permitted_between`, the durability model).
//!
//! An addition with no such fetch on record is not judged: the facts are
//! the leader's own, and a leader that never reported one has nothing to be
//! held to here (the summary counts them).

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{verdict, Facts};
use super::replicas::Advertised;
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Event, Kind};

pub struct UncleanExclusion;

/// The fetch a leader proposed a follower on.
#[derive(Clone, Copy)]
struct CaughtUp {
    index: u64,
    broker_epoch: i64,
    fetch_offset: i64,
    /// The highest high watermark advertised when the leader reported it,
    /// and when one above `fetch_offset` was first advertised, if one was.
    highest_advertised: i64,
    first_above: Option<u64>,
}

/// (leader broker, topic, partition).
type Led<'a> = (&'a str, &'a str, i32);

impl Checker for UncleanExclusion {
    fn name(&self) -> &'static str {
        "unclean-exclusion"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let mut anomalies = Vec::new();
        let facts = std::cell::OnceCell::new();
        let mut advertised = Advertised::default();
        // (viewing broker, node id) -> the incarnation it last applied.
        let mut registered: BTreeMap<(&str, i32), u64> = BTreeMap::new();
        // (leader, topic, partition) -> (leader epoch, the ISR it knows).
        let mut views: BTreeMap<Led<'_>, (i32, BTreeSet<i32>)> = BTreeMap::new();
        // (leader, topic, partition, leader epoch, follower) -> its fetch.
        let mut caught_up: BTreeMap<(Led<'_>, i32, i32), CaughtUp> = BTreeMap::new();
        let (mut judged, mut unjudged) = (0usize, 0usize);
        for entry in history {
            let Kind::Event { event } = &entry.kind else {
                continue;
            };
            advertised.observe(event, entry.index);
            match event {
                Event::BrokerRegistered {
                    broker,
                    node_id,
                    incarnation,
                } => {
                    registered.insert((broker.as_str(), *node_id), *incarnation);
                }
                Event::PartitionLeader {
                    broker,
                    topic,
                    partition,
                    leader_epoch,
                    isr,
                    ..
                } => {
                    let led = (broker.as_str(), topic.as_str(), *partition);
                    views.insert(led, (*leader_epoch, isr.iter().copied().collect()));
                }
                Event::FollowerCaughtUp {
                    broker,
                    topic,
                    partition,
                    leader_epoch,
                    follower_id,
                    broker_epoch,
                    fetch_offset,
                } => {
                    let led = (broker.as_str(), topic.as_str(), *partition);
                    let fetch = CaughtUp {
                        index: entry.index,
                        broker_epoch: *broker_epoch,
                        fetch_offset: *fetch_offset,
                        highest_advertised: advertised.highest(topic, *partition).unwrap_or(0),
                        first_above: advertised
                            .first_above(topic, *partition, *fetch_offset)
                            .map(|(_, _, at)| at),
                    };
                    caught_up.insert((led, *leader_epoch, *follower_id), fetch);
                }
                Event::IsrChanged {
                    broker,
                    topic,
                    partition,
                    leader_epoch,
                    isr,
                } => {
                    let led = (broker.as_str(), topic.as_str(), *partition);
                    let isr: BTreeSet<i32> = isr.iter().copied().collect();
                    let previous = match views.insert(led, (*leader_epoch, isr.clone())) {
                        Some((epoch, previous)) if epoch == *leader_epoch => previous,
                        // A change in an epoch this leader's facts never
                        // opened: nothing to compare with.
                        _ => continue,
                    };
                    for follower in isr.difference(&previous) {
                        let Some(fetch) = caught_up.get(&(led, *leader_epoch, *follower)) else {
                            unjudged += 1;
                            continue;
                        };
                        judged += 1;
                        let show = |what: String| Anomaly {
                            description: format!(
                                "{what}: {broker} added broker {follower} to {topic}-{partition}'s \
                                 ISR in leader epoch {leader_epoch} on its fetch from offset {} \
                                 naming broker epoch {}",
                                fetch.fetch_offset, fetch.broker_epoch
                            ),
                            entries: vec![fetch.index, entry.index],
                        };
                        let current = registered.get(&(broker.as_str(), *follower));
                        if let Some(&current) = current {
                            if fetch.broker_epoch < current as i64 {
                                anomalies.push(show(format!(
                                    "stale-broker-epoch (registered incarnation {current})"
                                )));
                            }
                        }
                        let lost_since = |at: u64| {
                            facts
                                .get_or_init(|| Facts::new(history))
                                .loss_permitted_between(at, fetch.index)
                        };
                        if fetch.first_above.is_some_and(|at| !lost_since(at)) {
                            anomalies.push(show(format!(
                                "behind-high-watermark (the highest advertised was {})",
                                fetch.highest_advertised
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        let summary = format!(
            "{judged} ISR admissions checked against the fetch that justified them \
             ({unjudged} with none on record)"
        );
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::build::{H, TOPIC};
    use super::*;
    use crate::history::FaultKind;

    const LEADER: &str = "broker-0";

    fn registered(h: &mut H, node_id: i32, incarnation: u64) {
        h.event_by(
            LEADER,
            Event::BrokerRegistered {
                broker: LEADER.into(),
                node_id,
                incarnation,
            },
        );
    }

    fn leads(h: &mut H, isr: Vec<i32>) {
        h.event_by(
            LEADER,
            Event::PartitionLeader {
                broker: LEADER.into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 3,
                isr,
                log_end_offset: 20,
            },
        );
    }

    fn caught_up(h: &mut H, follower_id: i32, broker_epoch: i64, fetch_offset: i64) -> u64 {
        h.event_by(
            LEADER,
            Event::FollowerCaughtUp {
                broker: LEADER.into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 3,
                follower_id,
                broker_epoch,
                fetch_offset,
            },
        )
    }

    fn isr_changed(h: &mut H, isr: Vec<i32>) -> u64 {
        h.event_by(
            LEADER,
            Event::IsrChanged {
                broker: LEADER.into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 3,
                isr,
            },
        )
    }

    fn check(h: H) -> Verdict {
        UncleanExclusion.check(&h.build())
    }

    #[test]
    fn a_fetch_from_before_a_restart_readmits_a_follower() {
        let mut h = H::replicated(false);
        registered(&mut h, 2, 1);
        leads(&mut h, vec![0, 1]);
        h.high_watermark(0, 20);
        // Broker 2's fetch in incarnation 1 reaches the leader only after
        // broker 2 restarted and registered incarnation 2.
        registered(&mut h, 2, 2);
        let stale = caught_up(&mut h, 2, 1, 20);
        let added = isr_changed(&mut h, vec![0, 1, 2]);
        let verdict = check(h);
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.anomalies.len(), 1, "{verdict:?}");
        assert!(verdict.anomalies[0]
            .description
            .starts_with("stale-broker-epoch"));
        assert_eq!(verdict.anomalies[0].entries, vec![stale, added]);
    }

    #[test]
    fn a_follower_admitted_below_the_high_watermark_is_caught() {
        let mut h = H::replicated(false);
        registered(&mut h, 2, 1);
        leads(&mut h, vec![0, 1]);
        h.high_watermark(0, 20);
        caught_up(&mut h, 2, 1, 15);
        isr_changed(&mut h, vec![0, 1, 2]);
        let verdict = check(h);
        assert!(!verdict.valid, "{verdict:?}");
        assert!(verdict.anomalies[0]
            .description
            .starts_with("behind-high-watermark"));
    }

    #[test]
    fn a_follower_behind_what_power_losses_may_have_lost_passes() {
        let mut h = H::replicated(false);
        registered(&mut h, 2, 1);
        h.high_watermark(0, 20);
        // Every replica loses power: records below 20 may be gone from all.
        for broker in ["broker-0", "broker-1", "broker-2"] {
            h.fault(FaultKind::CrashBroker, broker, true);
        }
        leads(&mut h, vec![0, 1]);
        caught_up(&mut h, 2, 1, 15);
        isr_changed(&mut h, vec![0, 1, 2]);
        let verdict = check(h);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_restarted_follower_that_fetches_again_in_its_new_incarnation_passes() {
        let mut h = H::replicated(false);
        registered(&mut h, 2, 1);
        leads(&mut h, vec![0, 1, 2]);
        h.high_watermark(0, 20);
        // Broker 2 restarts: its registration takes it out of the ISR, and
        // a fetch from its old incarnation was proposed, then refused.
        isr_changed(&mut h, vec![0, 1]);
        caught_up(&mut h, 2, 1, 20);
        registered(&mut h, 2, 2);
        caught_up(&mut h, 2, 2, 24);
        h.high_watermark(0, 24);
        isr_changed(&mut h, vec![0, 1, 2]);
        let verdict = check(h);
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.starts_with("1 ISR admissions"),
            "{verdict:?}"
        );
    }
}
