//! Partition replicas, judged from the brokers' own facts and from every
//! replica's log as the world read it off the disks at the end of the run.
//!
//! - `replica-agreement` (safety): at the end of a replicated run, every
//!   replica the ISR counts holds the same batch (offsets, leader epoch,
//!   CRC) at every offset two of them both hold, each holds its batches
//!   without gaps, and each reaches the end of what the final read found
//!   committed. A follower that kept a diverging suffix, or an ISR member
//!   missing committed records, shows here even when no client read it.
//!   On a compacted topic (`meta`'s `compacted`) each replica cleans its own
//!   log: gaps are allowed and batches are compared by offsets and epoch.
//! - `leader-completeness` (safety): a broker that becomes a partition's
//!   leader holds every offset below the highest high watermark any leader
//!   advertised before (`partition_leader`'s `log_end_offset` against
//!   earlier `high_watermark` events). Excused only after a power loss that
//!   may lose acknowledged data, as `lost-write` excuses it.
//! - `min-isr` (safety): a leader advances a partition's high watermark
//!   only while the ISR the controller recorded (`partition_leader`, then
//!   `isr_changed`) holds at least `min.insync.replicas` (KIP-966's rule),
//!   and with every producer at acks=all, no send is acknowledged before a
//!   high watermark above its offset was advertised.
//! - `truncation` (safety): no replica cuts (`truncated` events) a record,
//!   by offset and leader epoch, that was committed when it cut it: below
//!   the highest high watermark advertised so far, and held in that same
//!   epoch by the committed log at the end. Divergence truncation only ever
//!   cuts records the leader holds in another epoch, or none at all.

use std::collections::BTreeMap;

use super::facts::{verdict, Facts, MISSING_FACTS};
use super::{Anomaly, Checker, Property, Verdict};
use crate::history::{Entry, Event, Kind, Op, ReplicaBatch};

pub struct ReplicaAgreement;

/// One replica's log as `replica_log` reported it.
struct ReplicaView<'a> {
    broker: &'a str,
    index: u64,
    batches: &'a [ReplicaBatch],
}

impl ReplicaView<'_> {
    /// The batch holding `offset`, if this replica holds that offset.
    fn batch_at(&self, offset: i64) -> Option<&ReplicaBatch> {
        let at = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        self.batches
            .get(at)
            .filter(|batch| batch.base_offset <= offset)
    }

    fn log_end_offset(&self) -> Option<i64> {
        self.batches
            .last()
            .map(|batch| batch.last_offset.saturating_add(1))
    }
}

impl Checker for ReplicaAgreement {
    fn name(&self) -> &'static str {
        "replica-agreement"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let mut anomalies = Vec::new();
        // From the first meta event, as `Facts` reads it.
        let mut replicated: Option<bool> = None;
        // A compacted topic's replicas clean their logs independently.
        let mut compacted = false;
        let mut final_reads = 0usize;
        // (topic, partition) -> the in-sync replicas' logs.
        let mut in_sync: BTreeMap<(&str, i32), Vec<ReplicaView<'_>>> = BTreeMap::new();
        // (topic, partition) -> the end of the final read, and where.
        let mut committed_ends: BTreeMap<(&str, i32), (i64, u64)> = BTreeMap::new();
        let mut replica_logs = 0usize;
        for entry in history {
            match &entry.kind {
                Kind::Event {
                    event:
                        Event::ReplicaLog {
                            broker,
                            topic,
                            partition,
                            in_sync: counted,
                            batches,
                        },
                } => {
                    replica_logs += 1;
                    if *counted {
                        in_sync
                            .entry((topic.as_str(), *partition))
                            .or_default()
                            .push(ReplicaView {
                                broker,
                                index: entry.index,
                                batches,
                            });
                    }
                }
                Kind::Event {
                    event:
                        Event::Meta {
                            replication_factor,
                            compacted: is_compacted,
                            ..
                        },
                } => {
                    if replicated.is_none() {
                        compacted = *is_compacted;
                    }
                    replicated.get_or_insert(*replication_factor > 1);
                }
                Kind::Ok {
                    op:
                        Op::FinalRead {
                            target, records, ..
                        },
                    ..
                } => {
                    final_reads += 1;
                    if let Some(last) = records.last() {
                        committed_ends.insert(
                            (target.topic.as_str(), target.partition),
                            (last.offset.saturating_add(1), entry.index),
                        );
                    }
                }
                _ => {}
            }
        }
        if !replicated.unwrap_or(false) {
            return verdict(
                self,
                anomalies,
                "one replica per partition: nothing to compare".to_string(),
            );
        }
        if replica_logs == 0 && final_reads > 0 {
            anomalies.push(Anomaly {
                description: format!(
                    "{MISSING_FACTS} a replicated run with final reads but no replica_log events"
                ),
                entries: Vec::new(),
            });
        }
        let mut compared = 0usize;
        for (&(topic, partition), replicas) in &in_sync {
            for replica in replicas {
                if !compacted {
                    anomalies.extend(gaps(topic, partition, replica));
                }
                if let (Some(&(end, read_at)), Some(held)) = (
                    committed_ends.get(&(topic, partition)),
                    replica.log_end_offset(),
                ) {
                    if held < end {
                        anomalies.push(Anomaly {
                            description: format!(
                                "replica-short: {} is in the ISR of {topic}-{partition} but its \
                                 log ends at {held}, below the {end} the final read found \
                                 committed",
                                replica.broker
                            ),
                            entries: vec![read_at, replica.index],
                        });
                    }
                }
            }
            for (i, a) in replicas.iter().enumerate() {
                for b in &replicas[i + 1..] {
                    compared += 1;
                    if let Some(anomaly) = first_divergence(topic, partition, a, b, compacted) {
                        anomalies.push(anomaly);
                    }
                }
            }
        }
        let summary = format!(
            "{replica_logs} replica logs read, {compared} pairs of in-sync replicas compared"
        );
        verdict(self, anomalies, summary)
    }
}

/// A replica's batches must follow one another with no offset missing.
fn gaps(topic: &str, partition: i32, replica: &ReplicaView<'_>) -> Option<Anomaly> {
    replica.batches.windows(2).find_map(|pair| {
        (pair[1].base_offset != pair[0].last_offset.saturating_add(1)).then(|| Anomaly {
            description: format!(
                "replica-gap: {}'s log of {topic}-{partition} jumps from {} to {}",
                replica.broker, pair[0].last_offset, pair[1].base_offset
            ),
            entries: vec![replica.index],
        })
    })
}

/// The first offset both replicas hold in different batches. On a compacted
/// topic each replica's cleaner rewrites batches on its own schedule: a batch
/// keeps its offsets and leader epoch but not its records (nor its CRC), and
/// may be gone from one replica, so only offsets and epochs are compared.
fn first_divergence(
    topic: &str,
    partition: i32,
    a: &ReplicaView<'_>,
    b: &ReplicaView<'_>,
    compacted: bool,
) -> Option<Anomaly> {
    a.batches.iter().find_map(|held| {
        let other = b.batch_at(held.base_offset)?;
        let differs = if compacted {
            (other.base_offset, other.last_offset, other.leader_epoch)
                != (held.base_offset, held.last_offset, held.leader_epoch)
        } else {
            other != held
        };
        differs.then(|| Anomaly {
            description: format!(
                "replica-diverged: at offset {} of {topic}-{partition}, {} holds \
                 {}..={} from leader epoch {} (crc {:08x}) but {} holds {}..={} from epoch {} \
                 (crc {:08x}); both are in the ISR",
                held.base_offset,
                a.broker,
                held.base_offset,
                held.last_offset,
                held.leader_epoch,
                held.crc,
                b.broker,
                other.base_offset,
                other.last_offset,
                other.leader_epoch,
                other.crc
            ),
            entries: vec![a.index, b.index],
        })
    })
}

pub struct LeaderCompleteness;

impl Checker for LeaderCompleteness {
    fn name(&self) -> &'static str {
        "leader-completeness"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        // Built only for a leader that falls short: most runs have none.
        let facts = std::cell::OnceCell::new();
        let mut anomalies = Vec::new();
        let mut advertised = Advertised::default();
        let mut elections = 0usize;
        let mut stale_claims = 0usize;
        let mut latest_epochs: BTreeMap<(&str, i32), i32> = BTreeMap::new();
        for entry in history {
            let Kind::Event { event } = &entry.kind else {
                continue;
            };
            advertised.observe(event, entry.index);
            let Event::PartitionLeader {
                broker,
                topic,
                partition,
                leader_epoch,
                log_end_offset,
                ..
            } = event
            else {
                continue;
            };
            // A broker replaying the metadata log from behind briefly takes
            // the roles of an image older than the partition's latest epoch:
            // not an election, and no follower fetches from it.
            let latest = latest_epochs
                .entry((topic.as_str(), *partition))
                .or_insert(-1);
            if *leader_epoch < *latest {
                stale_claims += 1;
                continue;
            }
            *latest = *leader_epoch;
            elections += 1;
            let Some((hw, by, at)) = advertised.first_above(topic, *partition, *log_end_offset)
            else {
                continue;
            };
            let facts = facts.get_or_init(|| Facts::new(history));
            if facts.loss_permitted_between(at, entry.index) {
                continue;
            }
            let highest = advertised.highest(topic, *partition).unwrap_or(hw);
            anomalies.push(Anomaly {
                description: format!(
                    "leader-incomplete: {broker} became leader of {topic}-{partition} in epoch \
                     {leader_epoch} with its log ending at {log_end_offset}, but {by} had \
                     advertised a high watermark of {hw} (highest {highest}), with no power \
                     loss between{}",
                    facts.settings_note()
                ),
                entries: vec![at, entry.index],
            });
        }
        let summary = format!(
            "{elections} partition leader elections checked against {} partitions' high \
             watermarks; {stale_claims} leaderships of an epoch older than one already seen \
             (a broker replaying old metadata) skipped",
            advertised.rises.len()
        );
        verdict(self, anomalies, summary)
    }
}

/// One rise of a partition's advertised high watermark: the new high
/// watermark, the broker that advertised it, and the entry.
pub(super) type Rise<'a> = (i64, &'a str, u64);

/// Each partition's advertised high watermark, as it rises.
#[derive(Default)]
pub(super) struct Advertised<'a> {
    rises: BTreeMap<(&'a str, i32), Vec<Rise<'a>>>,
}

impl<'a> Advertised<'a> {
    pub(super) fn observe(&mut self, event: &'a Event, index: u64) {
        if let Event::HighWatermark {
            broker,
            topic,
            partition,
            high_watermark,
        } = event
        {
            let rises = self.rises.entry((topic.as_str(), *partition)).or_default();
            if rises.last().is_none_or(|&(hw, ..)| *high_watermark > hw) {
                rises.push((*high_watermark, broker, index));
            }
        }
    }

    /// The first advertisement of a high watermark above `offset`: the
    /// record at `offset` was visible from then on.
    pub(super) fn first_above(&self, topic: &str, partition: i32, offset: i64) -> Option<Rise<'a>> {
        self.rises
            .get(&(topic, partition))?
            .iter()
            .find(|&&(hw, ..)| hw > offset)
            .copied()
    }

    pub(super) fn highest(&self, topic: &str, partition: i32) -> Option<i64> {
        self.rises
            .get(&(topic, partition))?
            .last()
            .map(|&(hw, ..)| hw)
    }
}

pub struct MinIsr;

/// A partition's current leader, as its facts say.
struct Leadership<'a> {
    broker: &'a str,
    isr_len: usize,
    /// The high watermark it serves, once it has said (its first
    /// `high_watermark` after `partition_leader` is what it inherited).
    high_watermark: Option<i64>,
}

impl Checker for MinIsr {
    fn name(&self) -> &'static str {
        "min-isr"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let facts = Facts::new(history);
        let min_insync = facts.settings.min_insync_replicas;
        let mut anomalies = Vec::new();
        let mut leaders: BTreeMap<(&str, i32), Leadership<'_>> = BTreeMap::new();
        let mut advances = 0usize;
        for entry in history {
            let Kind::Event { event } = &entry.kind else {
                continue;
            };
            match event {
                Event::PartitionLeader {
                    broker,
                    topic,
                    partition,
                    isr,
                    ..
                } => {
                    let leadership = Leadership {
                        broker,
                        isr_len: isr.len(),
                        high_watermark: None,
                    };
                    leaders.insert((topic.as_str(), *partition), leadership);
                }
                Event::IsrChanged {
                    broker,
                    topic,
                    partition,
                    isr,
                    ..
                } => {
                    if let Some(leader) = leaders.get_mut(&(topic.as_str(), *partition)) {
                        if leader.broker == broker.as_str() {
                            leader.isr_len = isr.len();
                        }
                    }
                }
                Event::HighWatermark {
                    broker,
                    topic,
                    partition,
                    high_watermark,
                } => {
                    let Some(leader) = leaders.get_mut(&(topic.as_str(), *partition)) else {
                        continue;
                    };
                    if leader.broker != broker.as_str() {
                        continue;
                    }
                    let rose = leader
                        .high_watermark
                        .is_some_and(|previous| *high_watermark > previous);
                    leader.high_watermark = Some(*high_watermark);
                    if !rose {
                        continue;
                    }
                    advances += 1;
                    if leader.isr_len < min_insync {
                        anomalies.push(Anomaly {
                            description: format!(
                                "hw-below-min-isr: {broker} advanced {topic}-{partition}'s high \
                                 watermark to {high_watermark} with {} in the ISR, below \
                                 min.insync.replicas {min_insync}",
                                leader.isr_len
                            ),
                            entries: vec![entry.index],
                        });
                    }
                }
                _ => {}
            }
        }
        if facts.settings.acks_all {
            anomalies.extend(early_acknowledgements(history, &facts));
        }
        let summary = format!(
            "{advances} high watermark advances checked against min.insync.replicas \
             {min_insync}; {} acks=all acknowledgements checked{}",
            if facts.settings.acks_all {
                facts.acked_sends.len()
            } else {
                0
            },
            facts.settings_note()
        );
        verdict(self, anomalies, summary)
    }
}

/// Acknowledged sends whose offset no advertised high watermark had passed
/// when the acknowledgement arrived.
fn early_acknowledgements(history: &[Entry], facts: &Facts<'_>) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut advertised = Advertised::default();
    let mut acks = facts.acked_sends.iter().peekable();
    for entry in history {
        if let Kind::Event { event } = &entry.kind {
            advertised.observe(event, entry.index);
        }
        while let Some(ack) = acks.next_if(|ack| ack.ok_index <= entry.index) {
            let highest = advertised.highest(ack.tp.0, ack.tp.1).unwrap_or(0);
            if ack.offset >= highest {
                anomalies.push(Anomaly {
                    description: format!(
                        "ack-above-high-watermark: {} was acknowledged at {}-{}@{} while the \
                         highest high watermark advertised was {highest}",
                        ack.value, ack.tp.0, ack.tp.1, ack.offset
                    ),
                    entries: vec![ack.ok_index],
                });
            }
        }
    }
    anomalies
}

pub struct Truncation;

/// The committed log of each partition: the in-sync replicas' batches (from
/// `replica_log`) between the final read's log start and end.
fn committed_batches(history: &[Entry]) -> BTreeMap<(&str, i32), BTreeMap<i64, ReplicaBatch>> {
    let mut bounds: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
    for entry in history {
        if let Kind::Ok {
            op:
                Op::FinalRead {
                    target,
                    log_start_offset,
                    records,
                },
            ..
        } = &entry.kind
        {
            let end = records
                .last()
                .map_or(*log_start_offset, |r| r.offset.saturating_add(1));
            bounds.insert(
                (target.topic.as_str(), target.partition),
                (*log_start_offset, end),
            );
        }
    }
    let mut committed: BTreeMap<(&str, i32), BTreeMap<i64, ReplicaBatch>> = BTreeMap::new();
    for entry in history {
        let Kind::Event {
            event:
                Event::ReplicaLog {
                    topic,
                    partition,
                    in_sync: true,
                    batches,
                    ..
                },
        } = &entry.kind
        else {
            continue;
        };
        let Some(&(start, end)) = bounds.get(&(topic.as_str(), *partition)) else {
            continue;
        };
        let log = committed.entry((topic.as_str(), *partition)).or_default();
        for batch in batches {
            if batch.base_offset >= start && batch.last_offset < end {
                log.entry(batch.base_offset).or_insert(*batch);
            }
        }
    }
    committed
}

impl Checker for Truncation {
    fn name(&self) -> &'static str {
        "truncation"
    }

    fn property(&self) -> Property {
        Property::Safety
    }

    fn check(&self, history: &[Entry]) -> Verdict {
        let committed = committed_batches(history);
        let mut anomalies = Vec::new();
        let mut advertised = Advertised::default();
        let mut truncations = 0usize;
        for entry in history {
            let Kind::Event { event } = &entry.kind else {
                continue;
            };
            advertised.observe(event, entry.index);
            let Event::Truncated {
                broker,
                topic,
                partition,
                from_offset,
                to_offset,
                cut_epochs,
                reason,
            } = event
            else {
                continue;
            };
            truncations += 1;
            let Some(log) = committed.get(&(topic.as_str(), *partition)) else {
                anomalies.push(Anomaly {
                    description: format!(
                        "{MISSING_FACTS} {broker} truncated {topic}-{partition} but no in-sync \
                         replica_log of it says what was committed"
                    ),
                    entries: vec![entry.index],
                });
                continue;
            };
            // Only what was committed when it was cut: a record above every
            // high watermark so far may still be committed later, by a
            // leader that kept it, while this replica followed one that
            // did not have it.
            let committed_end = advertised.highest(topic, *partition).unwrap_or(0);
            // Each run of one epoch, from its start to the next run's.
            let ends = cut_epochs
                .iter()
                .skip(1)
                .map(|run| run.start_offset)
                .chain([*from_offset])
                .map(|end| end.min(committed_end));
            let kept = cut_epochs.iter().zip(ends).find_map(|(run, run_end)| {
                if run.start_offset >= run_end {
                    return None;
                }
                log.range(..run_end)
                    .rev()
                    .take_while(|(_, batch)| batch.last_offset >= run.start_offset)
                    .find(|(_, batch)| batch.leader_epoch == run.leader_epoch)
                    .map(|(_, batch)| *batch)
            });
            if let Some(batch) = kept {
                anomalies.push(Anomaly {
                    description: format!(
                        "truncated-committed: {broker} cut {topic}-{partition} from {from_offset} \
                         to {to_offset} ({reason:?}), dropping offsets {}..={} of leader epoch \
                         {}, which the committed log holds in that epoch",
                        batch.base_offset, batch.last_offset, batch.leader_epoch
                    ),
                    entries: vec![entry.index],
                });
            }
        }
        let summary = format!(
            "{truncations} truncations checked against the committed logs of {} partitions",
            committed.len()
        );
        verdict(self, anomalies, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::build::{record, H, TOPIC};
    use super::*;
    use crate::history::{FaultKind, History};

    fn replicated(flush_on_ack: bool) -> H {
        H::replicated(flush_on_ack)
    }

    fn batch(base_offset: i64, last_offset: i64, leader_epoch: i32, crc: u32) -> ReplicaBatch {
        ReplicaBatch {
            base_offset,
            last_offset,
            leader_epoch,
            crc,
        }
    }

    fn replica_log(h: &mut H, broker: &str, in_sync: bool, batches: Vec<ReplicaBatch>) {
        h.event_by(
            "final-reader",
            Event::ReplicaLog {
                broker: broker.into(),
                topic: TOPIC.into(),
                partition: 0,
                in_sync,
                batches,
            },
        );
    }

    fn leader(h: &mut H, broker: &str, leader_epoch: i32, log_end_offset: i64) -> u64 {
        h.event_by(
            broker,
            Event::PartitionLeader {
                broker: broker.into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch,
                isr: vec![0, 1, 2],
                log_end_offset,
            },
        )
    }

    /// Three replicas after a final read of offsets 0..=3.
    fn agreement(replicas: [(bool, Vec<ReplicaBatch>); 3]) -> Verdict {
        let mut h = replicated(false);
        h.final_read(0, 0, (0..4).map(|o| record(0, o, None, "v")).collect());
        for (i, (in_sync, batches)) in replicas.into_iter().enumerate() {
            replica_log(&mut h, &format!("broker-{i}"), in_sync, batches);
        }
        ReplicaAgreement.check(&h.build())
    }

    fn log() -> Vec<ReplicaBatch> {
        vec![batch(0, 1, 1, 0xaa), batch(2, 3, 2, 0xbb)]
    }

    #[test]
    fn in_sync_replicas_holding_the_same_batches_agree() {
        let verdict = agreement([(true, log()), (true, log()), (true, log())]);
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("3 pairs"), "{verdict:?}");
    }

    #[test]
    fn a_diverging_batch_in_an_in_sync_replica_is_caught() {
        let diverged = vec![batch(0, 1, 1, 0xaa), batch(2, 3, 1, 0xcc)];
        let verdict = agreement([(true, log()), (true, diverged), (true, log())]);
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("replica-diverged: at offset 2"));
    }

    #[test]
    fn an_out_of_sync_replica_is_not_judged() {
        let diverged = vec![batch(0, 1, 1, 0xaa), batch(2, 2, 1, 0xcc)];
        let verdict = agreement([(true, log()), (false, diverged), (true, log())]);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn an_in_sync_replica_short_of_the_committed_end_or_with_a_gap_is_caught() {
        let short = vec![batch(0, 1, 1, 0xaa)];
        let verdict = agreement([(true, log()), (true, short), (true, log())]);
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("replica-short:"));
        let gap = vec![batch(0, 0, 1, 0xaa), batch(2, 3, 2, 0xbb)];
        let verdict = agreement([(true, log()), (true, gap), (true, log())]);
        assert!(!verdict.valid);
        assert!(verdict
            .anomalies
            .iter()
            .any(|a| a.description.starts_with("replica-gap:")));
    }

    #[test]
    fn compacted_replicas_may_differ_in_records_but_not_in_offsets_or_epochs() {
        let compacted = |batches: [Vec<ReplicaBatch>; 3]| {
            let mut h = H::replicated_compacted();
            h.final_read(0, 0, vec![record(0, 1, None, "v"), record(0, 3, None, "v")]);
            for (i, batches) in batches.into_iter().enumerate() {
                replica_log(&mut h, &format!("broker-{i}"), true, batches);
            }
            ReplicaAgreement.check(&h.build())
        };
        // One replica cleaned a batch (new CRC), another dropped one whole.
        let cleaned = vec![batch(0, 1, 1, 0xa0), batch(2, 3, 2, 0xbb)];
        let dropped = vec![batch(2, 3, 2, 0xbb)];
        let verdict = compacted([log(), cleaned, dropped]);
        assert!(verdict.valid, "{verdict:?}");
        // A batch of another leader epoch at the same offsets still diverges.
        let diverged = vec![batch(0, 1, 1, 0xaa), batch(2, 3, 1, 0xbb)];
        let verdict = compacted([log(), diverged, log()]);
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("replica-diverged: at offset 2"));
    }

    #[test]
    fn a_replicated_run_without_replica_logs_lacks_facts() {
        let mut h = replicated(false);
        h.final_read(0, 0, vec![record(0, 0, None, "v")]);
        let verdict = ReplicaAgreement.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.property, Property::Liveness);
    }

    #[test]
    fn a_single_replica_run_has_nothing_to_compare() {
        let mut h = H::new(false, true);
        h.final_read(0, 0, vec![record(0, 0, None, "v")]);
        let verdict = ReplicaAgreement.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
    }

    fn completeness(h: H) -> Verdict {
        let history: History = h.build();
        LeaderCompleteness.check(&history)
    }

    #[test]
    fn a_new_leader_holding_the_high_watermark_is_complete() {
        let mut h = replicated(false);
        leader(&mut h, "broker-0", 1, 0);
        h.high_watermark(0, 10);
        leader(&mut h, "broker-1", 2, 10);
        let verdict = completeness(h);
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.starts_with("2 partition leader elections"));
    }

    #[test]
    fn a_new_leader_missing_advertised_records_is_caught() {
        let mut h = replicated(false);
        leader(&mut h, "broker-0", 1, 0);
        h.high_watermark(0, 10);
        h.high_watermark(0, 12);
        leader(&mut h, "broker-1", 2, 9);
        let verdict = completeness(h);
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("leader-incomplete: broker-1 became leader of"));
    }

    #[test]
    fn a_leadership_of_an_older_epoch_is_not_an_election() {
        let mut h = replicated(false);
        leader(&mut h, "broker-0", 1, 0);
        h.high_watermark(0, 10);
        // broker-1 replays the metadata log from behind.
        leader(&mut h, "broker-1", 0, 0);
        let verdict = completeness(h);
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.contains("1 leaderships of an epoch older"));
    }

    #[test]
    fn the_last_replica_standing_may_lose_what_it_did_not_sync() {
        // ISR squeezed to broker-1, which lost power and was elected again
        // as its only member (KIP-966; no eligible leader replicas here).
        let mut h = replicated(false);
        h.high_watermark(0, 10);
        h.fault(FaultKind::CrashBroker, "broker-1", true);
        h.event_by(
            "broker-1",
            Event::PartitionLeader {
                broker: "broker-1".into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 2,
                isr: vec![1],
                log_end_offset: 4,
            },
        );
        assert!(completeness(h).valid);
    }

    #[test]
    fn power_losses_after_the_advertisement_excuse_it_only_as_the_durability_model_says() {
        // min.insync.replicas is 2: two brokers must lose power, and only
        // without flush_on_ack.
        for flush_on_ack in [false, true] {
            let mut h = replicated(flush_on_ack);
            h.high_watermark(0, 10);
            h.fault(FaultKind::CrashBroker, "broker-0", true);
            h.fault(FaultKind::CrashBroker, "broker-1", true);
            leader(&mut h, "broker-1", 2, 4);
            let verdict = completeness(h);
            assert_eq!(verdict.valid, !flush_on_ack, "{verdict:?}");
        }
        // One power loss leaves a copy in another in-sync replica's page
        // cache: the new leader must have it.
        let mut h = replicated(false);
        h.high_watermark(0, 10);
        h.fault(FaultKind::CrashBroker, "broker-1", true);
        h.fault(FaultKind::CrashBroker, "broker-1", true);
        leader(&mut h, "broker-1", 2, 4);
        assert!(!completeness(h).valid);
        // A power loss before the records became visible excuses nothing.
        let mut h = replicated(false);
        h.fault(FaultKind::CrashBroker, "broker-1", true);
        h.high_watermark(0, 10);
        leader(&mut h, "broker-1", 2, 4);
        assert!(!completeness(h).valid);
    }

    fn truncated(
        h: &mut H,
        broker: &str,
        from_offset: i64,
        to_offset: i64,
        epochs: &[(i32, i64)],
    ) -> u64 {
        h.event_by(
            broker,
            Event::Truncated {
                broker: broker.into(),
                topic: TOPIC.into(),
                partition: 0,
                from_offset,
                to_offset,
                cut_epochs: epochs
                    .iter()
                    .map(|&(leader_epoch, start_offset)| crate::history::EpochRun {
                        leader_epoch,
                        start_offset,
                    })
                    .collect(),
                reason: crate::history::TruncationReason::DivergingEpoch,
            },
        )
    }

    /// A run in which broker-2 truncated, then the final read found offsets
    /// 0..=3 committed: 0..=1 in epoch 1 and 2..=3 in epoch 2.
    fn truncation(epochs: &[(i32, i64)], to_offset: i64) -> Verdict {
        let mut h = replicated(false);
        h.high_watermark(0, 3);
        truncated(&mut h, "broker-2", 4, to_offset, epochs);
        h.final_read(0, 0, (0..4).map(|o| record(0, o, None, "v")).collect());
        replica_log(&mut h, "broker-0", true, log());
        replica_log(&mut h, "broker-1", true, log());
        Truncation.check(&h.build())
    }

    #[test]
    fn truncating_records_of_an_epoch_the_committed_log_lacks_is_clean() {
        // broker-2 held 2..=3 from epoch 1, which the epoch-2 leader replaced.
        let verdict = truncation(&[(1, 2)], 2);
        assert!(verdict.valid, "{verdict:?}");
        assert!(verdict.summary.starts_with("1 truncations"), "{verdict:?}");
    }

    #[test]
    fn truncating_a_committed_record_is_caught() {
        // broker-2 cut 1..=3: offset 1 of epoch 1 and 2..=3 of epoch 2, all committed.
        let verdict = truncation(&[(1, 1), (2, 2)], 1);
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("truncated-committed: broker-2 cut t-0 from 4 to 1"));
    }

    #[test]
    fn cutting_a_record_not_yet_committed_is_clean_even_if_a_later_leader_commits_it() {
        // broker-2 cut offset 3 of epoch 2 while the high watermark was 3;
        // a later leader that held it committed it.
        let verdict = truncation(&[(2, 3)], 3);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn a_truncation_without_replica_logs_lacks_facts() {
        let mut h = replicated(false);
        truncated(&mut h, "broker-2", 4, 2, &[(1, 2)]);
        let verdict = Truncation.check(&h.build());
        assert!(!verdict.valid);
        assert_eq!(verdict.property, Property::Liveness);
    }

    fn isr_changed(h: &mut H, broker: &str, isr: Vec<i32>) -> u64 {
        h.event_by(
            broker,
            Event::IsrChanged {
                broker: broker.into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 1,
                isr,
            },
        )
    }

    fn leads_with(h: &mut H, broker: &str, isr: Vec<i32>) -> u64 {
        h.event_by(
            broker,
            Event::PartitionLeader {
                broker: broker.into(),
                topic: TOPIC.into(),
                partition: 0,
                leader_epoch: 1,
                isr,
                log_end_offset: 0,
            },
        )
    }

    #[test]
    fn high_watermarks_that_advance_only_with_enough_in_sync_replicas_and_later_acks_pass() {
        let mut h = replicated(false);
        leads_with(&mut h, "broker-0", vec![0, 1, 2]);
        h.high_watermark(0, 0);
        h.high_watermark(0, 2);
        h.send("producer-0", None, "v0", 0, 0);
        h.send("producer-0", None, "v1", 0, 1);
        isr_changed(&mut h, "broker-0", vec![0]);
        // Held, not advanced: the election's report and a repeat.
        h.high_watermark(0, 2);
        let verdict = MinIsr.check(&h.build());
        assert!(verdict.valid, "{verdict:?}");
        assert!(
            verdict.summary.starts_with("1 high watermark advances"),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_high_watermark_advanced_below_min_insync_replicas_is_caught() {
        let mut h = replicated(false);
        leads_with(&mut h, "broker-0", vec![0, 1]);
        h.high_watermark(0, 0);
        isr_changed(&mut h, "broker-0", vec![0]);
        let advanced = h.high_watermark(0, 3);
        let verdict = MinIsr.check(&h.build());
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("hw-below-min-isr: broker-0"));
        assert_eq!(verdict.anomalies[0].entries, vec![advanced]);
    }

    #[test]
    fn an_ack_before_the_high_watermark_passed_it_is_caught() {
        let mut h = replicated(false);
        leads_with(&mut h, "broker-0", vec![0, 1, 2]);
        h.high_watermark(0, 0);
        let (_, early) = h.send("producer-0", None, "v0", 0, 0);
        h.high_watermark(0, 1);
        let verdict = MinIsr.check(&h.build());
        assert!(!verdict.valid);
        assert!(verdict.anomalies[0]
            .description
            .starts_with("ack-above-high-watermark: v0 was acknowledged at t-0@0"));
        assert_eq!(verdict.anomalies[0].entries, vec![early]);
    }
}
