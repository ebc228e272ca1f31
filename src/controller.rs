//! The active controller's decisions, as a pure core: where a new topic's
//! replicas go, which brokers' sessions have lapsed, what leadership moves
//! when a broker is fenced, and whether a leader's ISR change is accepted.
//! Each takes the metadata image (and the time) and returns the
//! [`MetadataRecord`]s to write; `broker/cluster.rs` writes them through
//! the quorum.
//!
//! Broker sessions live only in the active controller's memory, as in
//! Kafka: a newly elected controller gives every registered broker a fresh
//! session, so a broker is fenced only after the controller that fences it
//! has itself waited a whole `broker.session.timeout.ms` without hearing
//! from it.
//!
//! Invariants: nothing here reads a clock or does I/O; a new leader is
//! always taken from the ISR (no unclean election); an ISR never loses its
//! last member.

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::{MetadataImage, MetadataRecord, PartitionImage};

/// Places `partition_count` partitions of `replication_factor` replicas
/// over `brokers` round-robin, starting at `start`: partition `p`'s replicas
/// are the `replication_factor` brokers from `start + p` on, and the first
/// is its leader, so leaderships spread as evenly as the replicas.
pub fn assign_replicas(
    brokers: &[i32],
    partition_count: usize,
    replication_factor: usize,
    start: usize,
) -> Vec<PartitionImage> {
    assert!(
        (1..=brokers.len()).contains(&replication_factor),
        "replication factor {replication_factor} over {} brokers",
        brokers.len()
    );
    (0..partition_count)
        .map(|partition| {
            let replicas: Vec<i32> = (0..replication_factor)
                .map(|replica| brokers[(start + partition + replica) % brokers.len()])
                .collect();
            PartitionImage {
                leader_id: replicas[0],
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            }
        })
        .collect()
}

/// A topic's partitions as CreateTopics assigns them by hand: `(partition
/// index, replica node ids)`, checked as Kafka checks them, every replica a
/// `registered` broker. As with [`assign_replicas`], each partition's first
/// replica leads and the ISR is every replica. The error is Kafka's
/// INVALID_REPLICA_ASSIGNMENT message.
pub fn manual_assignment(
    assignments: &[(i32, Vec<i32>)],
    registered: &BTreeSet<i32>,
) -> Result<Vec<PartitionImage>, String> {
    let mut sorted: Vec<&(i32, Vec<i32>)> = assignments.iter().collect();
    sorted.sort_by_key(|(index, _)| *index);
    let mut partitions = Vec::with_capacity(sorted.len());
    for (expected, (index, replicas)) in sorted.into_iter().enumerate() {
        if i64::from(*index) != expected as i64 {
            return Err("partitions should be a consecutive 0-based integer sequence".to_string());
        }
        if replicas.is_empty() {
            return Err(format!(
                "The manual partition assignment of partition {index} is an empty replica list."
            ));
        }
        let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() {
            return Err(format!(
                "The manual partition assignment of partition {index} names a broker more than once."
            ));
        }
        if let Some(first) = partitions
            .first()
            .map(|p: &PartitionImage| p.replicas.len())
        {
            if replicas.len() != first {
                return Err(format!(
                    "The manual partition assignment includes a partition with {} replica(s), \
                     but this is not consistent with previous partitions, which have {first} \
                     replica(s).",
                    replicas.len()
                ));
            }
        }
        if let Some(unknown) = replicas.iter().find(|id| !registered.contains(id)) {
            return Err(format!(
                "The manual partition assignment includes broker {unknown}, but no such broker \
                 is registered."
            ));
        }
        partitions.push(PartitionImage {
            leader_id: replicas[0],
            leader_epoch: 0,
            replicas: replicas.clone(),
            isr: replicas.clone(),
        });
    }
    Ok(partitions)
}

/// What ElectLeaders does for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// Write this leadership change.
    Change(MetadataRecord),
    /// The partition already has the leader asked for (ELECTION_NOT_NEEDED).
    NotNeeded,
    /// The preferred replica is not in the ISR or not electable
    /// (PREFERRED_LEADER_NOT_AVAILABLE).
    PreferredNotAvailable,
    /// An unclean election was asked for a partition without a live
    /// leader: sluice elects only from the ISR, which the controller
    /// already does when it can (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    EligibleNotAvailable,
    /// No such topic or partition.
    Unknown,
}

/// ElectLeaders for one partition: a preferred election hands it to its
/// first replica when that one is in the ISR and electable; an unclean one
/// is only needed when the partition has no live leader, and sluice never
/// elects outside the ISR.
pub fn elect_leader(
    image: &MetadataImage,
    topic: &str,
    index: i32,
    unclean: bool,
    electable: &BTreeSet<i32>,
) -> Election {
    let Some(partition) = image
        .topic(topic)
        .and_then(|t| t.partitions.get(usize::try_from(index).ok()?))
    else {
        return Election::Unknown;
    };
    if unclean {
        return if electable.contains(&partition.leader_id) {
            Election::NotNeeded
        } else {
            Election::EligibleNotAvailable
        };
    }
    let Some(&preferred) = partition.replicas.first() else {
        return Election::Unknown;
    };
    if partition.leader_id == preferred {
        Election::NotNeeded
    } else if partition.isr.contains(&preferred) && electable.contains(&preferred) {
        Election::Change(MetadataRecord::PartitionChange {
            topic: topic.to_string(),
            partition: index,
            leader_id: preferred,
            isr: partition.isr.clone(),
        })
    } else {
        Election::PreferredNotAvailable
    }
}

/// Why CreatePartitions is refused for a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddPartitionsError {
    /// The count is not above the topic's, or past the per-topic limit
    /// (INVALID_PARTITIONS).
    Count(String),
    /// A replica assignment does not fit (INVALID_REPLICA_ASSIGNMENT).
    Assignment(String),
}

/// CreatePartitions: the partitions that take a topic from its `current`
/// ones to `count`, each with as many replicas as the topic's first
/// partition, placed round-robin over `brokers` (continuing where the
/// topic's own placement left off) or as `assignments` says, one replica
/// list per new partition, checked as CreateTopics checks them.
pub fn added_partitions(
    current: &[PartitionImage],
    count: i32,
    count_max: i32,
    assignments: Option<&[Vec<i32>]>,
    brokers: &[i32],
) -> Result<Vec<PartitionImage>, AddPartitionsError> {
    let existing = i32::try_from(current.len()).unwrap_or(i32::MAX);
    if count == existing {
        return Err(AddPartitionsError::Count(format!(
            "Topic already has {existing} partitions."
        )));
    }
    if count < existing {
        return Err(AddPartitionsError::Count(format!(
            "Topic currently has {existing} partitions, which is higher than the requested {count}."
        )));
    }
    if count > count_max {
        return Err(AddPartitionsError::Count(format!(
            "sluice allows at most {count_max} partitions per topic, not {count}."
        )));
    }
    let added = (count - existing) as usize;
    let replication_factor = current.first().map_or(1, |p| p.replicas.len());
    let Some(assignments) = assignments else {
        if replication_factor > brokers.len() {
            return Err(AddPartitionsError::Assignment(format!(
                "Unable to replicate the partition {replication_factor} time(s): The target \
                 replication factor of {replication_factor} cannot be reached because only {} \
                 broker(s) are registered.",
                brokers.len()
            )));
        }
        let placed = assign_replicas(brokers, count as usize, replication_factor, 0);
        return Ok(placed[existing as usize..].to_vec());
    };
    if assignments.len() != added {
        return Err(AddPartitionsError::Assignment(format!(
            "Attempted to add {added} additional partition(s), but only {} assignment(s) were \
             specified.",
            assignments.len()
        )));
    }
    let indexed: Vec<(i32, Vec<i32>)> = assignments
        .iter()
        .enumerate()
        .map(|(index, replicas)| (index as i32, replicas.clone()))
        .collect();
    let registered: BTreeSet<i32> = brokers.iter().copied().collect();
    let placed =
        manual_assignment(&indexed, &registered).map_err(AddPartitionsError::Assignment)?;
    if let Some(other) = placed
        .iter()
        .find(|p| p.replicas.len() != replication_factor)
    {
        return Err(AddPartitionsError::Assignment(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this \
             is not consistent with previous partitions, which have {replication_factor} \
             replica(s).",
            other.replicas.len()
        )));
    }
    Ok(placed)
}

/// The brokers' sessions, as the active controller sees them: when each
/// last heartbeated, which are fenced, and which this controller has heard
/// from in the incarnation they registered.
///
/// Only a confirmed broker may be elected a new leader. A new controller
/// starts every registered broker's session afresh, so a broker that
/// restarted just before (and lost what it had not synced) still looks
/// alive until its session lapses; until it registers its new incarnation
/// and heartbeats, it must not be handed a leadership (KIP-903).
#[derive(Debug, Clone, Default)]
pub struct BrokerSessions {
    last_heartbeat_ms: BTreeMap<i32, i64>,
    fenced: BTreeSet<i32>,
    /// Heard from by this controller in the incarnation they registered.
    confirmed: BTreeSet<i32>,
    /// Heard from by this controller at all.
    heard: BTreeSet<i32>,
    /// When a restarted broker's registration, in the incarnation it names,
    /// first reached this controller: how long it has waited for its
    /// in-sync peers (see [`restart_must_wait`]). A later restart waits
    /// afresh; a recorded registration forgets it.
    restart_waits_ms: BTreeMap<i32, (u64, i64)>,
    /// What each restarted broker's latest registration, in the incarnation
    /// it names, said its recovered logs hold: so two restarted brokers that
    /// share a partition need not wait for each other to decide which of
    /// them holds more of it. A recorded registration forgets it.
    reports: BTreeMap<i32, (u64, LogReport)>,
}

/// A replica's log as a restarted broker reports it when it registers:
/// `(topic, partition)` to the leader epoch of its last batch (-1 when
/// empty) and its log end offset. Compared in that order, the larger holds
/// every committed record the smaller does (a log is a prefix of its last
/// epoch's leader's log, which holds everything committed before that
/// epoch).
pub type LogReport = BTreeMap<(String, i32), (i32, i64)>;

impl BrokerSessions {
    /// Starts every registered broker's session at `now_ms`: what a newly
    /// elected controller does.
    pub fn starting(brokers: impl IntoIterator<Item = i32>, now_ms: i64) -> BrokerSessions {
        BrokerSessions {
            last_heartbeat_ms: brokers.into_iter().map(|id| (id, now_ms)).collect(),
            fenced: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            heard: BTreeSet::new(),
            restart_waits_ms: BTreeMap::new(),
            reports: BTreeMap::new(),
        }
    }

    /// Forgets what `broker` reported in an incarnation other than
    /// `incarnation`, the one it was just heard from in: it restarted
    /// since, and may hold less now.
    pub fn forget_stale_report(&mut self, broker: i32, incarnation: u64) {
        if self
            .reports
            .get(&broker)
            .is_some_and(|(reported_in, _)| *reported_in != incarnation)
        {
            self.reports.remove(&broker);
        }
    }

    /// Keeps what `broker`'s registration in `incarnation` reported of its
    /// logs.
    pub fn record_report(&mut self, broker: i32, incarnation: u64, report: LogReport) {
        self.reports.insert(broker, (incarnation, report));
    }

    /// What a restarting broker last reported of `(topic, partition)`, if
    /// it is still restarting and reported that partition.
    pub fn reported(&self, broker: i32, topic: &str, partition: i32) -> Option<(i32, i64)> {
        if !self.restarting().contains(&broker) {
            return None;
        }
        let (_, report) = self.reports.get(&broker)?;
        report.get(&(topic.to_string(), partition)).copied()
    }

    /// How long `broker`'s registration in `incarnation` has been waiting
    /// for its in-sync peers, counting from now when it starts waiting.
    pub fn restart_waited_ms(&mut self, broker: i32, incarnation: u64, now_ms: i64) -> i64 {
        let wait = self
            .restart_waits_ms
            .entry(broker)
            .or_insert((incarnation, now_ms));
        if wait.0 != incarnation {
            *wait = (incarnation, now_ms);
        }
        now_ms - wait.1
    }

    /// A heartbeat (or registration) from `broker`: its session is alive,
    /// and it is unfenced. `current` says it came from the incarnation the
    /// image has registered, which makes the broker electable. Returns
    /// whether it was fenced until now.
    pub fn heartbeat(&mut self, broker: i32, current: bool, now_ms: i64) -> bool {
        self.last_heartbeat_ms.insert(broker, now_ms);
        let was_fenced = self.fenced.remove(&broker);
        self.heard.insert(broker);
        if current {
            self.confirmed.insert(broker);
            self.restart_waits_ms.remove(&broker);
            self.reports.remove(&broker);
        } else {
            self.confirmed.remove(&broker);
        }
        was_fenced
    }

    /// Fences the brokers whose sessions lapsed; returns the newly fenced.
    pub fn expire(&mut self, now_ms: i64, session_timeout_ms: i64) -> Vec<i32> {
        let lapsed: Vec<i32> = self
            .last_heartbeat_ms
            .iter()
            .filter(|(id, last)| {
                !self.fenced.contains(*id) && now_ms.saturating_sub(**last) > session_timeout_ms
            })
            .map(|(id, _)| *id)
            .collect();
        self.fenced.extend(lapsed.iter().copied());
        for broker in &lapsed {
            self.confirmed.remove(broker);
        }
        lapsed
    }

    pub fn is_fenced(&self, broker: i32) -> bool {
        self.fenced.contains(&broker)
    }

    /// The brokers this controller is still waiting to hear from: a fresh
    /// session not yet lapsed and no heartbeat yet. They may turn out
    /// electable within a heartbeat interval.
    pub fn unheard(&self) -> BTreeSet<i32> {
        self.last_heartbeat_ms
            .keys()
            .filter(|id| !self.fenced.contains(id) && !self.heard.contains(id))
            .copied()
            .collect()
    }

    /// The brokers heard from in an incarnation the image has not recorded:
    /// restarted and not yet registered.
    pub fn restarting(&self) -> BTreeSet<i32> {
        self.heard
            .iter()
            .filter(|id| !self.fenced.contains(id) && !self.confirmed.contains(id))
            .copied()
            .collect()
    }

    /// The brokers that may be elected: a live session, confirmed by a
    /// heartbeat to this controller from their registered incarnation.
    pub fn electable(&self) -> BTreeSet<i32> {
        self.last_heartbeat_ms
            .keys()
            .filter(|id| !self.fenced.contains(id) && self.confirmed.contains(id))
            .copied()
            .collect()
    }
}

/// What fencing `fenced` changes: every partition it leads gets a new leader
/// from the rest of its ISR that is `electable` (the first in replica order),
/// and it leaves every other ISR it is in. A partition whose ISR has no
/// other live member keeps its leader and goes offline until that leader
/// returns: electing outside the ISR could lose acknowledged records.
pub fn fence_changes(
    image: &MetadataImage,
    fenced: i32,
    electable: &BTreeSet<i32>,
) -> Vec<MetadataRecord> {
    let mut changes = Vec::new();
    for name in image.all_topic_names() {
        let topic = image.topic(&name).expect("listed topic");
        for (index, partition) in topic.partitions.iter().enumerate() {
            if !partition.isr.contains(&fenced) {
                continue;
            }
            let rest: Vec<i32> = partition
                .isr
                .iter()
                .copied()
                .filter(|id| *id != fenced)
                .collect();
            let leader_id = if partition.leader_id == fenced {
                let successor = partition
                    .replicas
                    .iter()
                    .copied()
                    .find(|id| rest.contains(id) && electable.contains(id));
                match successor {
                    Some(successor) => successor,
                    None if crate::planted!(UncleanElection) => {
                        let outside = partition
                            .replicas
                            .iter()
                            .copied()
                            .find(|id| *id != fenced && electable.contains(id));
                        if let Some(outside) = outside {
                            changes.push(MetadataRecord::PartitionChange {
                                topic: name.clone(),
                                partition: index as i32,
                                leader_id: outside,
                                isr: vec![outside],
                            });
                        }
                        continue;
                    }
                    None => continue,
                }
            } else {
                partition.leader_id
            };
            if rest.is_empty() {
                continue;
            }
            changes.push(MetadataRecord::PartitionChange {
                topic: name.clone(),
                partition: index as i32,
                leader_id,
                isr: rest,
            });
        }
    }
    changes
}

/// Preferred-leader election (Kafka's `auto.leader.rebalance.enable`): each
/// partition whose preferred leader, its first replica, is in the ISR and
/// electable but does not lead gets it back as leader, in a new leader
/// epoch, with the ISR as recorded; the old leader follows. Every ISR
/// member holds everything below the high watermark, so nothing
/// acknowledged with acks=all moves out of reach. Unlike Kafka, which
/// waits until more than `leader.imbalance.per.broker.percentage` of a
/// broker's partitions are misplaced, every misplaced partition moves.
pub fn preferred_leader_changes(
    image: &MetadataImage,
    electable: &BTreeSet<i32>,
) -> Vec<MetadataRecord> {
    let mut changes = Vec::new();
    for name in image.all_topic_names() {
        let topic = image.topic(&name).expect("listed topic");
        for (index, partition) in topic.partitions.iter().enumerate() {
            let Some(&preferred) = partition.replicas.first() else {
                continue;
            };
            if partition.leader_id != preferred
                && partition.isr.contains(&preferred)
                && electable.contains(&preferred)
            {
                changes.push(MetadataRecord::PartitionChange {
                    topic: name.clone(),
                    partition: index as i32,
                    leader_id: preferred,
                    isr: partition.isr.clone(),
                });
            }
        }
    }
    changes
}

/// Whether a broker that restarted must wait before its new incarnation is
/// recorded: it leads a partition whose ISR holds other replicas, none of
/// them electable yet, and one of them may soon be: not yet heard from by
/// this controller (a new controller starts every session fresh), or
/// restarting too (heard from in an unregistered incarnation; it may have
/// restarted cleanly and hold records this broker lost to a power loss)
/// without having reported that partition's log. A restarting replica that
/// has reported it is not waited for: [`restart_handovers`] compares the
/// reports. Two restarted brokers that never report may each wait for the
/// other; once `tie_break` (the wait has lasted a broker session), only
/// lower node ids are waited for, which ends that. Fenced replicas are not
/// waited for. `reported(broker, topic, partition)` is what a restarting
/// broker reported of that partition.
pub fn restart_must_wait(
    image: &MetadataImage,
    restarted: i32,
    (electable, unheard, restarting): (&BTreeSet<i32>, &BTreeSet<i32>, &BTreeSet<i32>),
    tie_break: bool,
    reported: impl Fn(i32, &str, i32) -> Option<(i32, i64)>,
) -> bool {
    image.all_topic_names().iter().any(|name| {
        let topic = image.topic(name).expect("listed topic");
        topic
            .partitions
            .iter()
            .enumerate()
            .any(|(index, partition)| {
                let others = || partition.isr.iter().filter(|id| **id != restarted);
                partition.leader_id == restarted
                    && !others().any(|id| electable.contains(id))
                    && others().any(|id| {
                        let unreported = || reported(*id, name, index as i32).is_none();
                        unheard.contains(id)
                            || (restarting.contains(id)
                                && unreported()
                                && (!tie_break || *id < restarted))
                    })
            })
    })
}

/// Leadership a restarted broker's registration hands over where no other
/// replica in a partition's ISR is electable, at least one restarted too
/// and reported its log of the partition, and the rest are fenced (down):
/// among the restarted broker (its own `report`) and the reporting ones,
/// the one whose log reports the
/// highest (last epoch, log end) holds every committed record any of them
/// still holds, so it leads, alone in the ISR (the others rejoin once they
/// have caught up from it; the one that lost more to a power loss then
/// truncates what it has that was never committed). The current leader
/// keeps the lead on a tie. A fenced replica may hold more than all of
/// them only if they all lost power since, a loss the durability model
/// permits. Any other partition is left to [`restart_must_wait`] and
/// [`fence_changes`]: an electable replica holds everything committed, and
/// one not heard from, or restarting without a report, may yet turn out to.
pub fn restart_handovers(
    image: &MetadataImage,
    restarted: i32,
    report: &LogReport,
    (electable, fenced): (&BTreeSet<i32>, &BTreeSet<i32>),
    reported: impl Fn(i32, &str, i32) -> Option<(i32, i64)>,
) -> Vec<MetadataRecord> {
    let mut changes = Vec::new();
    for name in image.all_topic_names() {
        let topic = image.topic(&name).expect("listed topic");
        for (index, partition) in topic.partitions.iter().enumerate() {
            let index = index as i32;
            if !partition.isr.contains(&restarted)
                || partition.isr.iter().any(|id| electable.contains(id))
            {
                continue;
            }
            let mut others: Vec<((i32, i64), i32)> = Vec::new();
            let mut undecided = false;
            for id in partition.isr.iter().filter(|id| **id != restarted) {
                match reported(*id, &name, index) {
                    Some(log) => others.push((log, *id)),
                    None => undecided |= !fenced.contains(id),
                }
            }
            if others.is_empty() || undecided {
                continue;
            }
            let own = report
                .get(&(name.clone(), index))
                .copied()
                .unwrap_or((-1, 0));
            let mut candidates = vec![(own, restarted)];
            candidates.extend(others);
            let best = candidates.iter().map(|(log, _)| *log).max().expect("one");
            let holders: Vec<i32> = candidates
                .iter()
                .filter(|(log, _)| *log == best)
                .map(|(_, id)| *id)
                .collect();
            if holders.contains(&partition.leader_id) {
                continue;
            }
            let winner = *holders.iter().min().expect("one holds the best");
            changes.push(MetadataRecord::PartitionChange {
                topic: name.clone(),
                partition: index,
                leader_id: winner,
                isr: vec![winner],
            });
        }
    }
    changes
}

/// A partition's leadership becomes available again: a partition whose
/// leader is fenced and whose ISR holds no one else alive stays offline in
/// [`fence_changes`]; once an ISR member is back, it leads.
pub fn offline_recoveries(image: &MetadataImage, sessions: &BrokerSessions) -> Vec<MetadataRecord> {
    let electable = sessions.electable();
    let mut changes = Vec::new();
    for name in image.all_topic_names() {
        let topic = image.topic(&name).expect("listed topic");
        for (index, partition) in topic.partitions.iter().enumerate() {
            if !sessions.is_fenced(partition.leader_id) {
                continue;
            }
            let successor = partition.replicas.iter().copied().find(|id| {
                *id != partition.leader_id && partition.isr.contains(id) && electable.contains(id)
            });
            if let Some(successor) = successor {
                changes.push(MetadataRecord::PartitionChange {
                    topic: name.clone(),
                    partition: index as i32,
                    leader_id: successor,
                    isr: partition
                        .isr
                        .iter()
                        .copied()
                        .filter(|id| *id != partition.leader_id)
                        .collect(),
                });
            }
        }
    }
    changes
}

/// Why the controller refused an ISR change (AlterPartition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterIsrError {
    /// No such topic or partition.
    UnknownPartition,
    /// The sender does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// The sender leads at an older epoch (FENCED_LEADER_EPOCH).
    FencedLeaderEpoch,
    /// The change was computed against an older partition epoch: the ISR
    /// changed since (INVALID_UPDATE_VERSION).
    StalePartitionEpoch,
    /// The ISR would drop the leader or hold a non-replica (INVALID_REQUEST).
    Invalid,
    /// The ISR would add a fenced broker (INELIGIBLE_REPLICA, KIP-841), or
    /// one in a broker epoch other than the incarnation it registered (the
    /// fetch that found it caught up came from before a restart, KIP-903):
    /// it may join once it is unfenced and fetches again, so the leader
    /// proposes it again later.
    IneligibleReplica,
}

/// Checks a leader's ISR change: it must come from the partition's current
/// leader at its current leader epoch, computed against the current
/// partition epoch (a change queued behind another is stale), keep the
/// leader, stay among the replicas, and add no fenced broker and none whose
/// broker epoch, where the leader names one, is not the incarnation it
/// registered. `new_isr` is `(node id, broker epoch or -1)`. Returns the
/// record to write, or None when the ISR is already that.
pub fn alter_isr(
    image: &MetadataImage,
    (topic, partition): (&str, i32),
    (leader_id, leader_epoch, partition_epoch): (i32, i32, i32),
    new_isr: &[(i32, i64)],
    sessions: &BrokerSessions,
) -> Result<Option<MetadataRecord>, AlterIsrError> {
    let current = image
        .topic(topic)
        .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
        .ok_or(AlterIsrError::UnknownPartition)?;
    if current.leader_id != leader_id {
        return Err(AlterIsrError::NotLeader);
    }
    if leader_epoch < current.leader_epoch {
        return Err(AlterIsrError::FencedLeaderEpoch);
    }
    if leader_epoch > current.leader_epoch {
        return Err(AlterIsrError::NotLeader);
    }
    if partition_epoch != image.partition_epoch(topic, partition) {
        return Err(AlterIsrError::StalePartitionEpoch);
    }
    let mut isr: Vec<i32> = new_isr.iter().map(|(id, _)| *id).collect();
    isr.sort_unstable();
    isr.dedup();
    let keeps_leader = isr.contains(&leader_id);
    let among_replicas = isr.iter().all(|id| current.replicas.contains(id));
    let added = || new_isr.iter().filter(|(id, _)| !current.isr.contains(id));
    let adds_fenced = added().any(|(id, _)| sessions.is_fenced(*id));
    let adds_stale_incarnation = added().any(|(id, broker_epoch)| {
        *broker_epoch >= 0
            && image.incarnation(*id).map(|registered| registered as i64) != Some(*broker_epoch)
    });
    if !keeps_leader || !among_replicas {
        return Err(AlterIsrError::Invalid);
    }
    if adds_fenced || adds_stale_incarnation {
        return Err(AlterIsrError::IneligibleReplica);
    }
    let mut recorded = current.isr.clone();
    recorded.sort_unstable();
    if recorded == isr {
        return Ok(None);
    }
    Ok(Some(MetadataRecord::PartitionChange {
        topic: topic.to_string(),
        partition,
        leader_id,
        isr,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::BrokerEndpoint;

    #[test]
    fn elections_go_to_the_preferred_replica_only_from_the_isr() {
        let partition = |leader_id, isr: &[i32]| PartitionImage {
            leader_id,
            leader_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        };
        let image = image_with(vec![
            partition(1, &[1, 2, 3]),
            partition(2, &[2, 1]),
            partition(2, &[2, 3]),
        ]);
        let all: BTreeSet<i32> = [1, 2, 3].into();
        assert_eq!(
            elect_leader(&image, "t", 0, false, &all),
            Election::NotNeeded
        );
        assert!(matches!(
            elect_leader(&image, "t", 1, false, &all),
            Election::Change(MetadataRecord::PartitionChange { leader_id: 1, .. })
        ));
        assert_eq!(
            elect_leader(&image, "t", 1, false, &[2, 3].into()),
            Election::PreferredNotAvailable
        );
        assert_eq!(
            elect_leader(&image, "t", 2, false, &all),
            Election::PreferredNotAvailable
        );
        assert_eq!(
            elect_leader(&image, "t", 2, true, &all),
            Election::NotNeeded
        );
        assert_eq!(
            elect_leader(&image, "t", 2, true, &[1, 3].into()),
            Election::EligibleNotAvailable
        );
        assert_eq!(elect_leader(&image, "t", 9, false, &all), Election::Unknown);
        assert_eq!(elect_leader(&image, "u", 0, false, &all), Election::Unknown);
    }

    #[test]
    fn added_partitions_continue_the_placement_or_follow_an_assignment() {
        let brokers = [1, 2, 3];
        let current = assign_replicas(&brokers, 2, 2, 0);
        let added = added_partitions(&current, 4, 100, None, &brokers).expect("added");
        assert_eq!(added, assign_replicas(&brokers, 4, 2, 0)[2..].to_vec());
        let by_hand = [vec![3, 1], vec![2, 3]];
        let added = added_partitions(&current, 4, 100, Some(&by_hand), &brokers).expect("added");
        assert_eq!(
            added
                .iter()
                .map(|p| (p.leader_id, p.replicas.clone()))
                .collect::<Vec<_>>(),
            [(3, vec![3, 1]), (2, vec![2, 3])]
        );
        let count = |result| matches!(result, Err(AddPartitionsError::Count(_)));
        let assignment = |result| matches!(result, Err(AddPartitionsError::Assignment(_)));
        assert!(count(added_partitions(&current, 2, 100, None, &brokers)));
        assert!(count(added_partitions(&current, 1, 100, None, &brokers)));
        assert!(count(added_partitions(&current, 101, 100, None, &brokers)));
        assert!(assignment(added_partitions(
            &current,
            3,
            100,
            Some(&by_hand),
            &brokers
        )));
        assert!(assignment(added_partitions(
            &current,
            3,
            100,
            Some(&[vec![1]]),
            &brokers
        )));
        assert!(assignment(added_partitions(
            &current,
            3,
            100,
            Some(&[vec![1, 9]]),
            &brokers
        )));
        assert!(assignment(added_partitions(&current, 3, 100, None, &[1])));
    }

    /// ISR members as a v2 AlterPartition names them: without broker epochs.
    fn unknown_epochs(ids: &[i32]) -> Vec<(i32, i64)> {
        ids.iter().map(|id| (*id, -1)).collect()
    }

    fn image_with(partitions: Vec<PartitionImage>) -> MetadataImage {
        let mut image = MetadataImage::empty("sluice");
        for node_id in 1..=3 {
            image.set_endpoint(BrokerEndpoint {
                node_id,
                host: format!("broker-{node_id}"),
                port: 9092,
            });
        }
        image.add_topic("t", false, partitions).expect("topic");
        image
    }

    #[test]
    fn a_manual_assignment_is_taken_as_given_and_checked_as_kafka_checks_it() {
        let registered = BTreeSet::from([1, 2, 3]);
        let partitions =
            manual_assignment(&[(1, vec![3, 1]), (0, vec![2, 3])], &registered).expect("valid");
        assert_eq!(partitions.len(), 2);
        assert_eq!(
            (
                partitions[0].leader_id,
                &partitions[0].replicas,
                &partitions[0].isr
            ),
            (2, &vec![2, 3], &vec![2, 3])
        );
        assert_eq!(partitions[1].leader_id, 3);
        let refused = |assignments: &[(i32, Vec<i32>)]| {
            manual_assignment(assignments, &registered).expect_err("refused")
        };
        assert!(refused(&[(0, vec![1]), (2, vec![2])]).contains("consecutive"));
        assert!(refused(&[(0, vec![])]).contains("empty"));
        assert!(refused(&[(0, vec![1, 1])]).contains("more than once"));
        assert!(refused(&[(0, vec![1, 2]), (1, vec![3])]).contains("not consistent"));
        assert!(refused(&[(0, vec![4])]).contains("broker 4"));
    }

    #[test]
    fn replicas_spread_round_robin_with_the_first_leading() {
        let partitions = assign_replicas(&[1, 2, 3], 4, 3, 1);
        let replicas: Vec<Vec<i32>> = partitions.iter().map(|p| p.replicas.clone()).collect();
        assert_eq!(
            replicas,
            [vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3], vec![2, 3, 1]]
        );
        assert!(partitions
            .iter()
            .all(|p| p.leader_id == p.replicas[0] && p.isr == p.replicas));
        let single = assign_replicas(&[1, 2, 3], 3, 1, 0);
        let leaders: Vec<i32> = single.iter().map(|p| p.leader_id).collect();
        assert_eq!(leaders, [1, 2, 3]);
    }

    #[test]
    fn a_lapsed_session_is_fenced_once_and_a_heartbeat_unfences_it() {
        let mut sessions = BrokerSessions::starting([1, 2, 3], 0);
        // A fresh session is alive but not yet electable.
        assert_eq!(sessions.electable(), BTreeSet::new());
        sessions.heartbeat(1, true, 5_000);
        sessions.heartbeat(2, true, 5_000);
        assert_eq!(sessions.electable(), BTreeSet::from([1, 2]));
        assert_eq!(sessions.expire(9_000, 9_000), Vec::<i32>::new());
        assert_eq!(sessions.expire(9_001, 9_000), [3]);
        assert_eq!(sessions.expire(20_000, 9_000), [1, 2]);
        assert!(sessions.is_fenced(3));
        sessions.heartbeat(3, true, 20_000);
        assert_eq!(sessions.electable(), BTreeSet::from([3]));
        // A heartbeat from an incarnation the image has not registered
        // keeps the session but makes the broker unelectable.
        sessions.heartbeat(3, false, 21_000);
        assert_eq!(sessions.electable(), BTreeSet::new());
        assert!(!sessions.is_fenced(3));
    }

    #[test]
    fn fencing_a_leader_elects_from_the_live_isr_and_never_outside_it() {
        let led_by_1 = PartitionImage {
            leader_id: 1,
            leader_epoch: 4,
            replicas: vec![1, 2, 3],
            isr: vec![1, 3],
        };
        let followed_by_1 = PartitionImage {
            leader_id: 2,
            leader_epoch: 0,
            replicas: vec![2, 1, 3],
            isr: vec![1, 2, 3],
        };
        let only_1 = PartitionImage {
            leader_id: 1,
            leader_epoch: 0,
            replicas: vec![1, 2],
            isr: vec![1],
        };
        let image = image_with(vec![led_by_1, followed_by_1, only_1]);
        let changes = fence_changes(&image, 1, &BTreeSet::from([2, 3]));
        assert_eq!(
            changes,
            [
                MetadataRecord::PartitionChange {
                    topic: "t".into(),
                    partition: 0,
                    leader_id: 3,
                    isr: vec![3],
                },
                MetadataRecord::PartitionChange {
                    topic: "t".into(),
                    partition: 1,
                    leader_id: 2,
                    isr: vec![2, 3],
                },
            ]
        );
        // Broker 2 is not in partition 0's ISR: with 3 dead too, nobody
        // may lead it, and it stays with its fenced leader.
        let changes = fence_changes(&image, 1, &BTreeSet::from([2]));
        assert_eq!(changes.len(), 1, "{changes:?}");
    }

    #[test]
    fn the_preferred_leader_takes_back_only_a_partition_whose_isr_holds_it() {
        let moved_away = PartitionImage {
            leader_id: 2,
            leader_epoch: 3,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        };
        let preferred_out_of_sync = PartitionImage {
            leader_id: 3,
            leader_epoch: 2,
            replicas: vec![1, 3, 2],
            isr: vec![2, 3],
        };
        let already_home = PartitionImage {
            leader_id: 2,
            leader_epoch: 0,
            replicas: vec![2, 3, 1],
            isr: vec![2, 3],
        };
        let image = image_with(vec![moved_away, preferred_out_of_sync, already_home]);
        assert_eq!(
            preferred_leader_changes(&image, &BTreeSet::from([1, 2, 3])),
            [MetadataRecord::PartitionChange {
                topic: "t".into(),
                partition: 0,
                leader_id: 1,
                isr: vec![1, 2, 3],
            }]
        );
        // A preferred leader the controller cannot elect yet waits.
        assert!(preferred_leader_changes(&image, &BTreeSet::from([2, 3])).is_empty());
    }

    #[test]
    fn a_restarted_leader_waits_until_another_in_sync_replica_can_lead() {
        let image = image_with(vec![
            PartitionImage {
                leader_id: 1,
                leader_epoch: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
            },
            PartitionImage {
                leader_id: 2,
                leader_epoch: 0,
                replicas: vec![2, 1, 3],
                isr: vec![2, 1],
            },
        ]);
        let none = BTreeSet::new();
        let unreported = |_: i32, _: &str, _: i32| None;
        let only_1 = BTreeSet::from([1]);
        let only_2 = BTreeSet::from([2]);
        let only_3 = BTreeSet::from([3]);
        // Broker 2 may yet heartbeat: wait for it.
        assert!(restart_must_wait(
            &image,
            1,
            (&only_3, &only_2, &none),
            false,
            unreported
        ));
        // Broker 2 can lead: no wait, leadership moves.
        assert!(!restart_must_wait(
            &image,
            1,
            (&only_2, &none, &none),
            false,
            unreported
        ));
        // Broker 2 is fenced: nobody to wait for.
        assert!(!restart_must_wait(
            &image,
            1,
            (&none, &none, &none),
            false,
            unreported
        ));
        // Both restarted: each waits for the other (either may hold what
        // the other lost), for a broker session at most.
        assert!(restart_must_wait(
            &image,
            2,
            (&none, &none, &only_1),
            false,
            unreported
        ));
        assert!(restart_must_wait(
            &image,
            1,
            (&none, &none, &only_2),
            false,
            unreported
        ));
        // Then broker 2 waits for broker 1 (the lower id), which no longer
        // waits for broker 2, so neither waits forever.
        assert!(restart_must_wait(
            &image,
            2,
            (&none, &none, &only_1),
            true,
            unreported
        ));
        assert!(!restart_must_wait(
            &image,
            1,
            (&none, &none, &only_2),
            true,
            unreported
        ));
        // Broker 3 leads nothing.
        assert!(!restart_must_wait(
            &image,
            3,
            (&none, &only_2, &none),
            false,
            unreported
        ));
        let alone = image_with(vec![PartitionImage {
            leader_id: 1,
            leader_epoch: 0,
            replicas: vec![1, 2],
            isr: vec![1],
        }]);
        assert!(!restart_must_wait(
            &alone,
            1,
            (&none, &only_2, &none),
            false,
            unreported
        ));
    }

    #[test]
    fn two_restarted_brokers_hand_each_partition_to_the_one_that_holds_more() {
        // Broker 1 leads t-0 and broker 2 leads t-1; both restarted, and
        // each holds more of the partition the other leads.
        let image = image_with(vec![
            PartitionImage {
                leader_id: 1,
                leader_epoch: 3,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
            },
            PartitionImage {
                leader_id: 2,
                leader_epoch: 3,
                replicas: vec![2, 1, 3],
                isr: vec![2, 1],
            },
        ]);
        let report = |entries: [(i32, i32, i64); 2]| -> LogReport {
            entries
                .into_iter()
                .map(|(partition, epoch, end)| (("t".to_string(), partition), (epoch, end)))
                .collect()
        };
        let report_1 = report([(0, 3, 80), (1, 3, 120)]);
        let report_2 = report([(0, 3, 100), (1, 2, 200)]);
        let none = BTreeSet::new();
        let only_2 = BTreeSet::from([2]);
        let from_2 = |broker: i32, _: &str, partition: i32| {
            (broker == 2).then(|| report_2[&("t".to_string(), partition)])
        };
        // Broker 2 has reported: broker 1 need not wait for it...
        assert!(!restart_must_wait(
            &image,
            1,
            (&none, &none, &only_2),
            false,
            from_2
        ));
        // ...and hands t-0 to broker 2, which holds more of it, while it
        // takes t-1, whose last epoch it holds and broker 2 does not.
        assert_eq!(
            restart_handovers(&image, 1, &report_1, (&none, &none), from_2),
            [
                MetadataRecord::PartitionChange {
                    topic: "t".into(),
                    partition: 0,
                    leader_id: 2,
                    isr: vec![2],
                },
                MetadataRecord::PartitionChange {
                    topic: "t".into(),
                    partition: 1,
                    leader_id: 1,
                    isr: vec![1],
                },
            ]
        );
        // An electable in-sync replica holds everything: nothing is handed
        // over by reports (fencing moves the lead to it).
        assert!(restart_handovers(
            &image,
            1,
            &report_1,
            (&BTreeSet::from([3, 2]), &none),
            from_2
        )
        .is_empty());
        // A replica not heard from, perhaps alive with everything, is no
        // candidate to pass over: nothing is handed over.
        let three = image_with(vec![PartitionImage {
            leader_id: 1,
            leader_epoch: 3,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        }]);
        assert!(restart_handovers(&three, 1, &report_1, (&none, &none), from_2).is_empty());
        // Down (fenced), it is passed over: broker 2 holds more of t-0.
        assert_eq!(
            restart_handovers(&three, 1, &report_1, (&none, &BTreeSet::from([3])), from_2),
            [MetadataRecord::PartitionChange {
                topic: "t".into(),
                partition: 0,
                leader_id: 2,
                isr: vec![2],
            }]
        );
        // On a tie the leader keeps the lead.
        let same = |_: i32, _: &str, partition: i32| Some(report_1[&("t".to_string(), partition)]);
        assert!(restart_handovers(&image, 1, &report_1, (&none, &none), same).is_empty());
    }

    #[test]
    fn an_isr_change_must_come_from_the_current_leader_and_keep_it() {
        let image = image_with(vec![PartitionImage {
            leader_id: 1,
            leader_epoch: 2,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        }]);
        let mut sessions = BrokerSessions::starting([1, 2, 3], 0);
        let shrink = alter_isr(
            &image,
            ("t", 0),
            (1, 2, 0),
            &unknown_epochs(&[1, 2]),
            &sessions,
        );
        assert!(matches!(
            shrink,
            Ok(Some(MetadataRecord::PartitionChange { ref isr, .. })) if isr == &[1, 2]
        ));
        assert_eq!(
            alter_isr(
                &image,
                ("t", 0),
                (1, 2, 0),
                &unknown_epochs(&[3, 2, 1]),
                &sessions
            ),
            Ok(None)
        );
        assert_eq!(
            alter_isr(
                &image,
                ("t", 0),
                (1, 1, 0),
                &unknown_epochs(&[1, 2]),
                &sessions
            ),
            Err(AlterIsrError::FencedLeaderEpoch)
        );
        assert_eq!(
            alter_isr(
                &image,
                ("t", 0),
                (2, 2, 0),
                &unknown_epochs(&[1, 2]),
                &sessions
            ),
            Err(AlterIsrError::NotLeader)
        );
        assert_eq!(
            alter_isr(
                &image,
                ("t", 0),
                (1, 2, 0),
                &unknown_epochs(&[2, 3]),
                &sessions
            ),
            Err(AlterIsrError::Invalid)
        );
        assert_eq!(
            alter_isr(
                &image,
                ("t", 1),
                (1, 2, 0),
                &unknown_epochs(&[1]),
                &sessions
            ),
            Err(AlterIsrError::UnknownPartition)
        );
        // Computed against an older partition epoch: refused.
        let mut changed = image.clone();
        changed
            .apply(&MetadataRecord::PartitionChange {
                topic: "t".into(),
                partition: 0,
                leader_id: 1,
                isr: vec![1, 2],
            })
            .expect("an ISR change");
        assert_eq!(
            alter_isr(
                &changed,
                ("t", 0),
                (1, 2, 0),
                &unknown_epochs(&[1, 2, 3]),
                &sessions
            ),
            Err(AlterIsrError::StalePartitionEpoch)
        );
        assert!(alter_isr(
            &changed,
            ("t", 0),
            (1, 2, 1),
            &unknown_epochs(&[1, 2, 3]),
            &sessions
        )
        .is_ok());
        let shrunk = image_with(vec![PartitionImage {
            leader_id: 1,
            leader_epoch: 2,
            replicas: vec![1, 2, 3],
            isr: vec![1],
        }]);
        sessions.expire(100_000, 9_000);
        sessions.heartbeat(1, true, 100_000);
        assert_eq!(
            alter_isr(
                &shrunk,
                ("t", 0),
                (1, 2, 0),
                &unknown_epochs(&[1, 3]),
                &sessions
            ),
            Err(AlterIsrError::IneligibleReplica)
        );
    }

    #[test]
    fn a_follower_joins_the_isr_only_in_the_incarnation_it_registered() {
        let mut image = image_with(vec![PartitionImage {
            leader_id: 1,
            leader_epoch: 2,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
        }]);
        for incarnation in [1, 2] {
            image
                .apply(&MetadataRecord::BrokerIncarnation {
                    node_id: 3,
                    incarnation,
                })
                .expect("a registration");
        }
        let sessions = BrokerSessions::starting([1, 2, 3], 0);
        // Broker 3's fetch from before its restart found it caught up.
        assert_eq!(
            alter_isr(
                &image,
                ("t", 0),
                (1, 2, 0),
                &[(1, 7), (2, 4), (3, 1)],
                &sessions
            ),
            Err(AlterIsrError::IneligibleReplica)
        );
        // Members already in the ISR are not judged by their epoch.
        assert!(matches!(
            alter_isr(&image, ("t", 0), (1, 2, 0), &[(1, 7), (2, 4), (3, 2)], &sessions),
            Ok(Some(MetadataRecord::PartitionChange { ref isr, .. })) if isr == &[1, 2, 3]
        ));
    }
}
