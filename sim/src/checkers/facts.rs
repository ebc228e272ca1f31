//! Facts about a history that several checkers need, computed once per check:
//! the run's settings from `Meta`, the pairing of invokes with completions,
//! the acknowledged sends, the final reads and the power losses.
//!
//! Not a checker itself. Keeping these derivations in one place means every
//! checker reads the schema the same way (for instance, which crash counts as
//! a power loss), so two checkers can never disagree about what happened.

use std::collections::{BTreeMap, BTreeSet};

use super::{Anomaly, Checker, Verdict, MAX_ANOMALIES};
use crate::history::{Entry, Event, FaultKind, Kind, Op, Record};
use crate::topology::Topology;

/// A partition, borrowed from the history: `(topic, partition)`.
pub(crate) type Tp<'a> = (&'a str, i32);

/// A power-lost broker reopened a partition's log: its `Recovered` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossShown<'a> {
    pub index: u64,
    /// The broker that reopened it.
    pub broker: &'a str,
    pub tp: Tp<'a>,
    /// Where the reopened log ends: what survived.
    pub log_end_offset: i64,
}

/// How anomalies and summaries print a partition: Kafka's `topic-partition`.
pub(crate) fn show(tp: Tp<'_>) -> String {
    format!("{}-{}", tp.0, tp.1)
}

pub(crate) fn record_tp(record: &Record) -> Tp<'_> {
    (record.topic.as_str(), record.partition)
}

/// The settings that change what the checkers may expect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub flush_on_ack: bool,
    pub idempotence: bool,
    /// More than one replica per partition.
    pub replicated: bool,
    /// Every producer uses acks=all.
    pub acks_all: bool,
    /// The brokers' `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// The topic is compacted: superseded records and old tombstones may
    /// vanish from the log.
    pub compacted: bool,
    /// Its `delete.retention.ms`.
    pub delete_retention_ms: u64,
    /// False when the history has no `Meta` event. The checkers then assume the
    /// strict settings (every ack durable, idempotent producers): a missing
    /// Meta is a recorder bug, and a false alarm is easier to notice than a
    /// silently weakened check.
    pub from_meta: bool,
}

/// A send the broker acknowledged with a partition and an offset.
#[derive(Debug, Clone)]
pub(crate) struct AckedSend<'a> {
    pub process: &'a str,
    /// The invoke's index, or the ok's when the invoke is missing.
    pub invoke_index: u64,
    pub ok_index: u64,
    pub tp: Tp<'a>,
    pub offset: i64,
    pub value: &'a str,
    pub key: Option<&'a str>,
    /// Sent with a null value.
    pub tombstone: bool,
    /// When it was invoked: a tombstone's timestamp is no earlier.
    pub invoke_time_ms: u64,
}

/// The latest `FinalRead` ok of one partition.
#[derive(Debug, Clone)]
pub(crate) struct FinalRead<'a> {
    pub index: u64,
    /// Where the final read began: a send acknowledged after this may lie
    /// beyond the end the read fixed when it started.
    pub invoke_index: u64,
    /// When it completed: nothing it holds was cleaned later than this.
    pub ok_time_ms: u64,
    pub log_start_offset: i64,
    pub records: &'a [Record],
    /// Offset to value, for lookups.
    pub values: BTreeMap<i64, &'a str>,
}

impl FinalRead<'_> {
    /// The highest offset the final read holds.
    pub fn last_offset(&self) -> Option<i64> {
        self.values.keys().next_back().copied()
    }
}

pub(crate) struct Facts<'a> {
    pub settings: Settings,
    /// `(process, id)` of every invoke, to its index.
    pub invokes: BTreeMap<(&'a str, u64), u64>,
    /// Ok sends that carry a partition and an offset, in ok order.
    pub acked_sends: Vec<AckedSend<'a>>,
    /// Ok sends without a partition or offset (a recorder bug, or acks=0).
    pub acked_sends_without_offset: usize,
    /// Every send's value to the index of its first invoke and its process.
    pub send_invokes: BTreeMap<&'a str, (u64, &'a str)>,
    pub final_reads: BTreeMap<Tp<'a>, FinalRead<'a>>,
    /// Indices of power losses of brokers (`crash-broker` faults), ascending.
    pub power_losses: Vec<u64>,
    /// The broker each of `power_losses` hit, in the same order.
    pub power_lost_brokers: Vec<&'a str>,
    /// Partition leaders elected as their ISR's only member: `(entry,
    /// broker)`. If that broker lost power since the records were
    /// acknowledged, it was the last replica standing (KIP-966) and what it
    /// lost is gone, followers' copies notwithstanding.
    pub sole_isr_leaders: Vec<(u64, &'a str)>,
    /// Where a power-lost broker reopened a log (its `Recovered` events up
    /// to its next clean crash): the loss becomes visible there.
    pub losses_shown: Vec<LossShown<'a>>,
    /// Per producer process, the entries after which it may be a new
    /// idempotent session (a new producer id): a send that failed or whose
    /// outcome is unknown, or a crash or restart of the process. Ascending.
    pub session_breaks: BTreeMap<&'a str, Vec<u64>>,
    /// On a compacted topic, per partition and key, the highest offset at
    /// which the history shows a record of that key (acknowledged, or in
    /// the final read): a record of the key below it may be cleaned.
    pub latest_by_key: BTreeMap<(Tp<'a>, &'a str), i64>,
}

impl<'a> Facts<'a> {
    pub fn new(history: &'a [Entry]) -> Self {
        let mut settings = Settings {
            flush_on_ack: true,
            idempotence: true,
            replicated: false,
            acks_all: true,
            min_insync_replicas: 1,
            compacted: false,
            delete_retention_ms: 0,
            from_meta: false,
        };
        let mut invokes = BTreeMap::new();
        let mut send_invokes = BTreeMap::new();
        let mut final_reads = BTreeMap::new();
        let mut power_losses = Vec::new();
        let mut power_lost_brokers = Vec::new();
        let mut sole_isr_leaders = Vec::new();
        let mut losses_shown = Vec::new();
        let mut lossy_brokers: BTreeSet<&str> = BTreeSet::new();
        let mut acked = Vec::new();
        let mut acked_sends_without_offset = 0;
        let mut session_breaks: BTreeMap<&str, Vec<u64>> = BTreeMap::new();

        for entry in history {
            match &entry.kind {
                Kind::Event { event } => match event {
                    Event::Meta {
                        flush_on_ack,
                        idempotence,
                        replication_factor,
                        acks_all,
                        min_insync_replicas,
                        compacted,
                        delete_retention_ms,
                        ..
                    } if !settings.from_meta => {
                        settings = Settings {
                            flush_on_ack: *flush_on_ack,
                            idempotence: *idempotence,
                            replicated: *replication_factor > 1,
                            acks_all: *acks_all,
                            min_insync_replicas: usize::try_from(*min_insync_replicas).unwrap_or(1),
                            compacted: *compacted,
                            delete_retention_ms: *delete_retention_ms,
                            from_meta: true,
                        };
                    }
                    // The data is lost when the machine goes down, so only the
                    // beginning of the fault counts, not its repair.
                    Event::Fault {
                        kind: FaultKind::CrashBroker,
                        power_loss,
                        healed: false,
                        target,
                        ..
                    } => {
                        if *power_loss {
                            power_losses.push(entry.index);
                            power_lost_brokers.push(target.as_str());
                            lossy_brokers.insert(target.as_str());
                        } else {
                            lossy_brokers.remove(target.as_str());
                        }
                    }
                    // The loss shows when the power-lost broker reopens its
                    // logs; with several brokers, the others went on
                    // answering (commits, acks) in between.
                    Event::Recovered {
                        topic,
                        partition,
                        log_end_offset,
                        ..
                    } if lossy_brokers.contains(entry.process.as_str()) => {
                        losses_shown.push(LossShown {
                            index: entry.index,
                            broker: entry.process.as_str(),
                            tp: (topic.as_str(), *partition),
                            log_end_offset: *log_end_offset,
                        })
                    }
                    Event::PartitionLeader { broker, isr, .. }
                        if isr.len() == 1
                            && Topology::broker_name(u32::try_from(isr[0]).unwrap_or(u32::MAX))
                                == *broker =>
                    {
                        sole_isr_leaders.push((entry.index, broker.as_str()));
                    }
                    // A restarted producer is a new idempotent session.
                    Event::Fault {
                        kind: FaultKind::CrashClient,
                        target,
                        healed: false,
                        ..
                    } => {
                        session_breaks
                            .entry(target.as_str())
                            .or_default()
                            .push(entry.index);
                    }
                    _ => {}
                },
                Kind::Invoke { op } => {
                    invokes.insert((entry.process.as_str(), entry.id), entry.index);
                    if let Op::Send { value, .. } = op {
                        send_invokes
                            .entry(value.as_str())
                            .or_insert((entry.index, entry.process.as_str()));
                    }
                }
                Kind::Ok { op } => {
                    match op {
                        Op::Send {
                            topic,
                            value,
                            partition,
                            offset,
                            key,
                            tombstone,
                        } => match (partition, offset) {
                            (Some(partition), Some(offset)) if *offset >= 0 => acked.push((
                                entry,
                                (topic.as_str(), *partition, *offset),
                                value,
                                key.as_deref(),
                                *tombstone,
                            )),
                            _ => acked_sends_without_offset += 1,
                        },
                        Op::FinalRead {
                            target,
                            log_start_offset,
                            records,
                        } => {
                            let values = records
                                .iter()
                                .map(|record| (record.offset, record.value.as_str()))
                                .collect();
                            // A retried final read supersedes the earlier one.
                            final_reads.insert(
                                (target.topic.as_str(), target.partition),
                                FinalRead {
                                    index: entry.index,
                                    invoke_index: invokes
                                        .get(&(entry.process.as_str(), entry.id))
                                        .copied()
                                        .unwrap_or(entry.index),
                                    ok_time_ms: entry.time_ms,
                                    log_start_offset: *log_start_offset,
                                    records,
                                    values,
                                },
                            );
                        }
                        _ => {}
                    }
                }
                Kind::Fail { op, .. } | Kind::Info { op, .. } => {
                    if matches!(op, Op::Send { .. }) {
                        session_breaks
                            .entry(entry.process.as_str())
                            .or_default()
                            .push(entry.index);
                    }
                }
            }
        }

        let acked_sends: Vec<AckedSend<'a>> = acked
            .into_iter()
            .map(
                |(entry, (topic, partition, offset), value, key, tombstone)| {
                    let invoke_index = invokes
                        .get(&(entry.process.as_str(), entry.id))
                        .copied()
                        .unwrap_or(entry.index);
                    AckedSend {
                        process: entry.process.as_str(),
                        invoke_index,
                        ok_index: entry.index,
                        tp: (topic, partition),
                        offset,
                        value: value.as_str(),
                        key,
                        tombstone,
                        invoke_time_ms: history
                            .get(invoke_index as usize)
                            .filter(|invoke| invoke.index == invoke_index)
                            .map_or(entry.time_ms, |invoke| invoke.time_ms),
                    }
                },
            )
            .collect();

        let mut latest_by_key: BTreeMap<(Tp<'a>, &'a str), i64> = BTreeMap::new();
        if settings.compacted {
            let mut note = |tp: Tp<'a>, key: Option<&'a str>, offset: i64| {
                if let Some(key) = key {
                    let latest = latest_by_key.entry((tp, key)).or_insert(offset);
                    *latest = (*latest).max(offset);
                }
            };
            for send in &acked_sends {
                note(send.tp, send.key, send.offset);
            }
            for (tp, read) in &final_reads {
                for record in read.records {
                    note(*tp, record.key.as_deref(), record.offset);
                }
            }
        }

        Self {
            latest_by_key,
            settings,
            invokes,
            acked_sends,
            acked_sends_without_offset,
            send_invokes,
            final_reads,
            power_losses,
            power_lost_brokers,
            sole_isr_leaders,
            losses_shown,
            session_breaks,
        }
    }

    /// Whether `process` may have started a new idempotent session strictly
    /// between two entries.
    pub fn session_break_between(&self, process: &str, after: u64, before: u64) -> bool {
        self.session_breaks
            .get(process)
            .is_some_and(|breaks| breaks.iter().any(|&at| after < at && at < before))
    }

    /// The invoke paired with a completion, or the completion itself when the
    /// invoke is missing (Assign and Revoke may be logged without one).
    pub fn invoke_of(&self, entry: &Entry) -> u64 {
        self.invokes
            .get(&(entry.process.as_str(), entry.id))
            .copied()
            .unwrap_or(entry.index)
    }

    /// Whether unsynced data may legitimately have been lost by power losses
    /// strictly between two entries, under the durability model in
    /// ARCHITECTURE.md. Never under `flush_on_ack`: then an ack promises the
    /// data is on disk. With one replica, or acks below all, one power loss
    /// may lose it. With acks=all on replicated partitions an acknowledged
    /// record is in the page cache of at least `min.insync.replicas` brokers,
    /// so at least that many distinct brokers must lose power (or reopen a
    /// power-lost log) in between.
    pub fn loss_permitted_between(&self, after: u64, before: u64) -> bool {
        if self.settings.flush_on_ack {
            return false;
        }
        let within = |index: u64| after < index && index < before;
        let lossy: BTreeSet<&str> = self
            .power_losses
            .iter()
            .zip(&self.power_lost_brokers)
            .filter(|(index, _)| within(**index))
            .map(|(_, broker)| *broker)
            .chain(
                self.losses_shown
                    .iter()
                    .filter(|shown| within(shown.index))
                    .map(|shown| shown.broker),
            )
            .collect();
        let needed = if self.settings.replicated && self.settings.acks_all {
            self.settings.min_insync_replicas.max(1)
        } else {
            1
        };
        lossy.len() >= needed || self.last_replica_standing_between(after, before)
    }

    /// Whether a broker that lost power after `after` was then elected, at
    /// or before `before` (the election itself may be what is judged), as
    /// the only member of a partition's ISR: the one loss the durability
    /// model lets a single power loss cause (no KIP-966 eligible leader
    /// replicas here).
    fn last_replica_standing_between(&self, after: u64, before: u64) -> bool {
        self.sole_isr_leaders
            .iter()
            .filter(|(elected, _)| after < *elected && *elected <= before)
            .any(|(elected, broker)| {
                self.power_losses
                    .iter()
                    .zip(&self.power_lost_brokers)
                    .any(|(index, lost)| lost == broker && after < *index && index < elected)
            })
    }

    /// Whether a consumer that had read `tp` up to `previous` may read it
    /// again from `offset` at entry `index` without a seek: a power-lost
    /// log of `tp` reopened ending at or below `previous`, so the consumer's
    /// position was out of range and reset, as Kafka's consumers reset, to
    /// an offset that survived.
    pub fn reset_permitted(&self, tp: Tp<'_>, index: u64, previous: i64, offset: i64) -> bool {
        !self.settings.flush_on_ack
            && self.losses_shown.iter().any(|shown| {
                shown.tp == tp
                    && shown.index < index
                    && previous >= shown.log_end_offset
                    && offset <= shown.log_end_offset
            })
    }

    /// Whether the entry at `index` is a power loss that may legitimately lose
    /// acknowledged data.
    pub fn is_permitted_power_loss(&self, index: u64) -> bool {
        !self.settings.flush_on_ack && self.power_losses.binary_search(&index).is_ok()
    }

    /// Whether data written after `after` may legitimately have been lost.
    pub fn loss_permitted_after(&self, after: u64) -> bool {
        self.loss_permitted_between(after, u64::MAX)
    }

    /// Whether the log cleaner may have removed `send` from its compacted
    /// partition: a record of the same key at a higher offset was
    /// acknowledged or is in the final read, or it is a tombstone whose
    /// `delete.retention.ms` had passed when the final read finished.
    pub fn compacted_away(&self, send: &AckedSend<'_>) -> bool {
        let Some(key) = send.key.filter(|_| self.settings.compacted) else {
            return false;
        };
        let superseded = self
            .latest_by_key
            .get(&(send.tp, key))
            .is_some_and(|latest| *latest > send.offset);
        let expired = send.tombstone
            && self.final_reads.get(&send.tp).is_some_and(|read| {
                read.ok_time_ms > send.invoke_time_ms + self.settings.delete_retention_ms
            });
        superseded || expired
    }

    /// Whether offsets `from..to` of `tp` may all have been removed by a
    /// log cleaner before a consumer read past them: the topic is compacted
    /// and every one of them the final read holds is superseded by a later
    /// record of its key. One the final read lacks may have been cleaned
    /// (`compacted-view` judges whether it could be). One it holds may still
    /// have been cleaned on another replica, which led when the consumer
    /// read: replicas clean on their own, and a superseded record is what
    /// any of them may drop.
    pub fn compacted_gap(&self, tp: Tp<'_>, from: i64, to: i64) -> bool {
        if !self.settings.compacted {
            return false;
        }
        let Some(read) = self.final_reads.get(&tp) else {
            return false;
        };
        read.records
            .iter()
            .skip_while(|record| record.offset < from)
            .take_while(|record| record.offset < to)
            .all(|record| {
                record.key.as_deref().is_some_and(|key| {
                    self.latest_by_key
                        .get(&(tp, key))
                        .is_some_and(|latest| *latest > record.offset)
                })
            })
    }

    /// The final `log_start_offset` of a partition; 0 without a final read.
    pub fn log_start_offset(&self, tp: Tp<'_>) -> i64 {
        self.final_reads
            .get(&tp)
            .map_or(0, |read| read.log_start_offset)
    }

    /// A note for summaries when the settings were assumed.
    pub fn settings_note(&self) -> &'static str {
        if self.settings.from_meta {
            ""
        } else {
            " (no meta event: assumed flush_on_ack and idempotence)"
        }
    }
}

/// The prefix of an anomaly that says the history lacks a fact the checker
/// needs.
pub(crate) const MISSING_FACTS: &str = "missing-facts:";

/// The group-progress facts (rebalances and generations, by entry index)
/// reported by a broker while another had loaded as group coordinator after
/// it, in the same or a later offsets epoch: a stale coordinator's view.
/// Such a broker (one cut off from the cluster, say) may go on believing it
/// coordinates, but no generation it starts becomes durable, and its
/// members move to the new coordinator.
pub(crate) fn stale_coordinator_facts(history: &[Entry]) -> std::collections::BTreeSet<u64> {
    let mut stale = std::collections::BTreeSet::new();
    // The broker that loaded latest, with its epoch; none before any load
    // (single-broker histories of old) or after it resigned.
    let mut current: Option<(&str, i32)> = None;
    let mut highest_epoch = i32::MIN;
    for entry in history {
        let Kind::Event { event } = &entry.kind else {
            continue;
        };
        match event {
            Event::CoordinatorLoaded {
                broker,
                leader_epoch,
            } if *leader_epoch >= highest_epoch => {
                highest_epoch = *leader_epoch;
                current = Some((broker.as_str(), *leader_epoch));
            }
            Event::CoordinatorResigned {
                broker,
                leader_epoch,
            } if current == Some((broker.as_str(), *leader_epoch)) => current = None,
            // Only the group's progress is set aside. What the stale broker
            // told members (a join, a static member's replacement, a
            // removal) did reach them, and explains what they did next.
            Event::RebalanceStarted { broker, .. } | Event::Generation { broker, .. }
                if current.is_some_and(|(coordinator, _)| coordinator != broker) =>
            {
                stale.insert(entry.index);
            }
            _ => {}
        }
    }
    stale
}

/// Builds a verdict: anomalies in history order (by their entries), at most
/// `MAX_ANOMALIES` of them, and the total count in the summary.
pub(crate) fn verdict(
    checker: &dyn Checker,
    mut anomalies: Vec<Anomaly>,
    summary: String,
) -> Verdict {
    for anomaly in &mut anomalies {
        anomaly.entries.sort_unstable();
        anomaly.entries.dedup();
    }
    anomalies.sort_by(|a, b| a.entries.cmp(&b.entries));
    let total = anomalies.len();
    // A check that could not run for want of facts found no violation: the
    // run failed to produce what it needs, which is a liveness failure.
    let only_missing_facts = total > 0
        && anomalies
            .iter()
            .all(|anomaly| anomaly.description.starts_with(MISSING_FACTS));
    anomalies.truncate(MAX_ANOMALIES);
    let shown = if total > MAX_ANOMALIES {
        format!("; {total} anomalies, first {MAX_ANOMALIES} shown")
    } else {
        format!("; {total} anomalies")
    };
    Verdict {
        checker: checker.name(),
        property: if only_missing_facts {
            super::Property::Liveness
        } else {
            checker.property()
        },
        valid: total == 0,
        anomalies,
        summary: format!("{summary}{shown}"),
    }
}

/// A hand-built history for tests: the history `Builder` plus the index of
/// each logged entry, so each test reads as the scenario it describes and can
/// name the entries it expects in anomalies.
#[cfg(test)]
pub(crate) mod build {
    use crate::history::{
        Builder, Event, FaultKind, History, Op, PartitionOffset, Record, TopicPartition,
    };

    pub const TOPIC: &str = "t";
    /// `delete.retention.ms` in the histories of compacted topics.
    pub const DELETE_RETENTION_MS: u64 = 60_000;

    pub fn record(partition: i32, offset: i64, key: Option<&str>, value: &str) -> Record {
        Record {
            topic: TOPIC.into(),
            partition,
            offset,
            key: key.map(str::to_string),
            value: value.into(),
            tombstone: false,
        }
    }

    pub fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: TOPIC.into(),
            partition,
        }
    }

    /// Tests name a consumer's member id after its process.
    pub fn member_of(process: &str) -> String {
        format!("{process}-member")
    }

    pub fn commit_op(process: &str, group: &str, generation: i32, offsets: &[(i32, i64)]) -> Op {
        Op::Commit {
            group: group.into(),
            generation,
            member: member_of(process),
            offsets: offsets
                .iter()
                .map(|&(partition, offset)| PartitionOffset {
                    topic: TOPIC.into(),
                    partition,
                    offset,
                })
                .collect(),
        }
    }

    #[derive(Default)]
    pub struct H {
        builder: Builder,
        /// Entries logged so far: the builder numbers them densely from 0.
        len: u64,
        /// The simulated time invokes and completions are logged at.
        now_ms: u64,
    }

    impl H {
        /// A history opening with a Meta event: `replicated` is three
        /// replicas, acks=all, `min.insync.replicas` 2 and a 3 s lag limit
        /// (one replica otherwise); `compacted` a compacted topic with
        /// [`DELETE_RETENTION_MS`].
        fn opening(
            flush_on_ack: bool,
            idempotence: bool,
            replicated: bool,
            compacted: bool,
        ) -> Self {
            let mut h = Self::default();
            h.event(Event::Meta {
                scenario: "test".into(),
                seed: 1,
                flush_on_ack,
                idempotence,
                checkers: Vec::new(),
                group_initial_rebalance_delay_ms: 0,
                replication_factor: if replicated { 3 } else { 1 },
                acks_all: true,
                min_insync_replicas: if replicated { 2 } else { 1 },
                replica_lag_time_max_ms: if replicated { 3_000 } else { 0 },
                compacted,
                delete_retention_ms: if compacted { DELETE_RETENTION_MS } else { 0 },
            });
            h
        }

        /// A single-replica run.
        pub fn new(flush_on_ack: bool, idempotence: bool) -> Self {
            Self::opening(flush_on_ack, idempotence, false, false)
        }

        /// A replicated run, with idempotent producers.
        pub fn replicated(flush_on_ack: bool) -> Self {
            Self::opening(flush_on_ack, true, true, false)
        }

        /// A single-replica run of a compacted topic, under `flush_on_ack`.
        pub fn compacted() -> Self {
            Self::opening(true, true, false, true)
        }

        /// A replicated run of a compacted topic, acks from the page cache.
        pub fn replicated_compacted() -> Self {
            Self::opening(false, true, true, true)
        }

        pub fn build(self) -> History {
            self.builder.build()
        }

        /// Logs an invoke; returns `(index, id)`.
        /// Moves the clock the next entries are logged at.
        pub fn advance(&mut self, ms: u64) {
            self.now_ms += ms;
        }

        pub fn invoke(&mut self, process: &str, op: Op) -> (u64, u64) {
            let id = self.builder.invoke(self.now_ms, process, op);
            (self.bump(), id)
        }

        pub fn ok(&mut self, process: &str, id: u64, op: Op) -> u64 {
            self.builder.ok(self.now_ms, process, id, op);
            self.bump()
        }

        pub fn fail(&mut self, process: &str, id: u64, op: Op) -> u64 {
            self.builder.fail(self.now_ms, process, id, op, "error");
            self.bump()
        }

        pub fn event(&mut self, event: Event) -> u64 {
            self.event_by("broker-0", event)
        }

        /// Logs an event as `process` saw it.
        pub fn event_by(&mut self, process: &str, event: Event) -> u64 {
            self.event_at(0, process, event)
        }

        /// Logs an event as `process` saw it at `time_ms` (not before the
        /// entry logged last).
        pub fn event_at(&mut self, time_ms: u64, process: &str, event: Event) -> u64 {
            self.builder.event(time_ms, process, event);
            self.bump()
        }

        fn bump(&mut self) -> u64 {
            self.len += 1;
            self.len - 1
        }

        /// A send of `value` to partition `partition` of the test topic,
        /// answered at `offset` once acknowledged.
        pub fn send_op(
            key: Option<&str>,
            value: &str,
            partition: Option<i32>,
            offset: Option<i64>,
        ) -> Op {
            Op::Send {
                topic: TOPIC.into(),
                key: key.map(str::to_string),
                value: value.into(),
                partition,
                offset,
                tombstone: false,
            }
        }

        /// Logs a send of `value` that fails; returns the fail's index.
        pub fn fail_send(&mut self, process: &str, value: &str) -> u64 {
            let op = Self::send_op(None, value, None, None);
            let (_, id) = self.invoke(process, op.clone());
            self.fail(process, id, op)
        }

        /// Logs a send's invoke and ok; returns their indices.
        pub fn send(
            &mut self,
            process: &str,
            key: Option<&str>,
            value: &str,
            partition: i32,
            offset: i64,
        ) -> (u64, u64) {
            let op = |partition, offset| Op::Send {
                topic: TOPIC.into(),
                key: key.map(str::to_string),
                value: value.into(),
                partition,
                offset,
                tombstone: false,
            };
            let (invoke, id) = self.invoke(process, op(None, None));
            let ok = self.ok(process, id, op(Some(partition), Some(offset)));
            (invoke, ok)
        }

        /// Logs a poll's invoke and ok; returns the ok's index.
        pub fn poll(&mut self, process: &str, group: &str, records: Vec<Record>) -> u64 {
            let group = Some(group.to_string());
            let (_, id) = self.invoke(
                process,
                Op::Poll {
                    group: group.clone(),
                    records: Vec::new(),
                },
            );
            self.ok(process, id, Op::Poll { group, records })
        }

        /// Logs the processing of a record; returns the ok's index.
        pub fn process(&mut self, process: &str, group: &str, record: Record) -> u64 {
            let op = Op::Process {
                group: Some(group.to_string()),
                record,
            };
            let (_, id) = self.invoke(process, op.clone());
            self.ok(process, id, op)
        }

        /// Logs an offset commit's invoke and ok; returns their indices.
        pub fn commit(
            &mut self,
            process: &str,
            group: &str,
            generation: i32,
            offsets: &[(i32, i64)],
        ) -> (u64, u64) {
            let op = commit_op(process, group, generation, offsets);
            let (invoke, id) = self.invoke(process, op.clone());
            (invoke, self.ok(process, id, op))
        }

        /// Logs an Assign ok without an invoke; returns its index.
        pub fn assign(
            &mut self,
            process: &str,
            group: &str,
            generation: i32,
            partitions: &[i32],
        ) -> u64 {
            let op = Op::Assign {
                group: group.into(),
                generation,
                member: member_of(process),
                partitions: partitions.iter().map(|&p| tp(p)).collect(),
            };
            self.ok(process, 0, op)
        }

        /// Logs a Revoke ok without an invoke; returns its index.
        pub fn revoke(
            &mut self,
            process: &str,
            group: &str,
            generation: i32,
            partitions: &[i32],
        ) -> u64 {
            let op = Op::Revoke {
                group: group.into(),
                generation,
                member: member_of(process),
                partitions: partitions.iter().map(|&p| tp(p)).collect(),
            };
            self.ok(process, 0, op)
        }

        /// Logs a Seek ok; returns its index.
        pub fn seek(&mut self, process: &str, group: &str, partition: i32, offset: i64) -> u64 {
            let op = Op::Seek {
                group: Some(group.into()),
                target: PartitionOffset {
                    topic: TOPIC.into(),
                    partition,
                    offset,
                },
            };
            self.ok(process, 0, op)
        }

        /// Logs the heal phase's final read of a partition; returns the ok's index.
        pub fn final_read(
            &mut self,
            partition: i32,
            log_start_offset: i64,
            records: Vec<Record>,
        ) -> u64 {
            let op = |records| Op::FinalRead {
                target: tp(partition),
                log_start_offset,
                records,
            };
            let (_, id) = self.invoke("final-reader", op(Vec::new()));
            self.ok("final-reader", id, op(records))
        }

        /// A final read of `partition` during which `meanwhile` happens.
        pub fn final_read_around(
            &mut self,
            partition: i32,
            records: Vec<Record>,
            meanwhile: impl FnOnce(&mut Self),
        ) -> u64 {
            let op = |records| Op::FinalRead {
                target: tp(partition),
                log_start_offset: 0,
                records,
            };
            let (_, id) = self.invoke("final-reader", op(Vec::new()));
            meanwhile(self);
            self.ok("final-reader", id, op(records))
        }

        /// Logs a fault's beginning; returns its index.
        /// `broker` reopened partition `partition`'s log, ending at
        /// `log_end_offset`.
        pub fn recovered(&mut self, broker: &str, partition: i32, log_end_offset: i64) -> u64 {
            self.event_by(
                broker,
                Event::Recovered {
                    broker: broker.into(),
                    topic: TOPIC.into(),
                    partition,
                    log_end_offset,
                    high_watermark: log_end_offset,
                },
            )
        }

        pub fn fault(&mut self, kind: FaultKind, target: &str, power_loss: bool) -> u64 {
            self.event(Event::Fault {
                kind,
                target: target.into(),
                peer: None,
                power_loss,
                healed: false,
            })
        }

        pub fn high_watermark(&mut self, partition: i32, high_watermark: i64) -> u64 {
            self.event(Event::HighWatermark {
                broker: "broker-0".into(),
                topic: TOPIC.into(),
                partition,
                high_watermark,
            })
        }

        /// Logs the coordinator's start of a rebalance.
        pub fn rebalance_started(&mut self, group: &str, generation: i32) -> u64 {
            self.event(Event::RebalanceStarted {
                broker: "broker-0".into(),
                group: group.into(),
                generation,
                rebalance_timeout_ms: 5_000,
            })
        }

        /// Logs the coordinator's record of `process`'s member joining.
        pub fn member_joined(&mut self, group: &str, process: &str) -> u64 {
            self.event(Event::MemberJoined {
                broker: "broker-0".into(),
                group: group.into(),
                member: member_of(process),
                instance: None,
                session_timeout_ms: 6_000,
                rebalance_timeout_ms: 5_000,
            })
        }

        pub fn generation(&mut self, group: &str, generation: i32) -> u64 {
            self.event(Event::Generation {
                broker: "broker-0".into(),
                group: group.into(),
                generation,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::{H, TOPIC};
    use super::Facts;
    use crate::history::{Event, FaultKind};

    fn recovered(broker: &str) -> Event {
        Event::Recovered {
            broker: broker.into(),
            topic: TOPIC.into(),
            partition: 0,
            log_end_offset: 0,
            high_watermark: 0,
        }
    }

    /// With several brokers a loss may show long after the power loss: when
    /// the power-lost broker reopens its logs, while the others answered in
    /// between. A clean restart of that broker shows no loss.
    #[test]
    fn a_power_lost_brokers_recovery_shows_the_loss_and_a_clean_ones_does_not() {
        let mut h = H::new(false, true);
        h.fault(FaultKind::CrashBroker, "broker-1", true);
        let between = h.send("producer-0", None, "producer-0-1", 0, 0);
        let other = h.event_by("broker-0", recovered("broker-0"));
        let shown = h.event_by("broker-1", recovered("broker-1"));
        h.fault(FaultKind::CrashBroker, "broker-1", false);
        let after_clean = h.send("producer-0", None, "producer-0-2", 0, 1);
        let clean = h.event_by("broker-1", recovered("broker-1"));
        let history = h.build();
        let facts = Facts::new(&history);
        let shown_at: Vec<u64> = facts.losses_shown.iter().map(|l| l.index).collect();
        assert_eq!(shown_at, vec![shown]);
        assert!(facts.loss_permitted_between(between.1, shown + 1));
        assert!(!facts.loss_permitted_between(between.1, other + 1));
        assert!(!facts.loss_permitted_between(after_clean.1, clean + 1));
    }
}
