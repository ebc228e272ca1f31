//! Persistence of the group coordinator's durable facts (committed offsets,
//! their tombstones, group generations) in the internal
//! `__consumer_offsets-0` partition, and the coordinator's load and
//! resignation as that partition's leadership moves.
//!
//! The broker that leads `__consumer_offsets-0` coordinates every group (as
//! in Kafka, where a group's coordinator is the leader of its offsets
//! partition). On becoming leader it replays its replica of the log into a
//! fresh coordinator, then serves once everything replayed is below the
//! high watermark, so it never answers from a write that a later leader
//! could lose. On losing leadership it resigns: every parked caller hears
//! NOT_COORDINATOR and looks the coordinator up again.
//!
//! Each fact is one record: key `offset\0<group>\0<topic>\0<partition>` with
//! value `<offset>\0<leader epoch>\0<metadata>` (a null value is a tombstone:
//! the offset was deleted), or key `generation\0<group>` with value
//! `<generation>`. Replay applies them in log order, so the last write wins.
//! The log is never compacted yet: it grows with every commit.
//!
//! One task, [`persist_loop`], writes them: it takes the coordinator's
//! [`Effect::Persist`](crate::group::Effect::Persist) writes in the order the
//! coordinator emitted them, appends whatever is queued as one batch with one
//! fsync, waits for the high watermark to pass it (every in-sync replica
//! holds it, as for an acks=all produce), and reports each write back in
//! that same order, so the log and the coordinator's memory always agree on
//! which write came last. Writes are tagged with the load they belong to;
//! a write of a coordinator that has since resigned is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::partition::{AckWait, Partition};
use super::{Broker, OFFSETS_TOPIC};
use crate::group::{CommittedOffset, Durable, GroupConfig, GroupCoordinator, PersistId};
use crate::log::{CleanupPolicy, LogConfig, LogError, PartitionLog};

/// Replay reads the log in chunks of this size.
const REPLAY_CHUNK_BYTES: usize = 1 << 20;

/// Writes queued for the offsets log. A coordinator call that finds the
/// queue full fails its write at once (the callers see
/// COORDINATOR_NOT_AVAILABLE and retry) rather than wait under the lock.
pub(super) const PERSIST_QUEUE_MAX: usize = 4096;

/// Writes appended as one batch and one fsync: enough to amortise the fsync
/// under load, small enough to keep a batch far below segment sizes.
const PERSIST_BATCH_MAX: usize = 256;

/// How long a group write may wait, from when the coordinator asked, for
/// the high watermark before it fails (its callers hear COORDINATOR_NOT_AVAILABLE and retry; the write
/// may still land). Kafka's default `offsets.commit.timeout.ms`.
const OFFSETS_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// How often a loaded but not yet committed coordinator looks at the high
/// watermark again while the ISR is below `min.insync.replicas`.
const LOAD_RECHECK_MS: u64 = 200;

/// One write the coordinator asked for.
pub(super) struct PersistRequest {
    pub id: PersistId,
    pub durable: Durable,
    /// The load of the coordinator that asked ([`CoordinatorLoad::term`]).
    pub term: u64,
    /// When the coordinator asked: the write fails once it has waited
    /// [`OFFSETS_COMMIT_TIMEOUT_MS`] since, however long the writes queued
    /// ahead of it took.
    pub queued_at: tokio::time::Instant,
}

/// This broker's part in coordinating groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum CoordinatorRole {
    /// It does not lead the offsets partition: groups are another broker's.
    #[default]
    Unloaded,
    /// It leads the offsets partition in `leader_epoch` and has replayed its
    /// log, but not all of the replayed log is below the high watermark yet.
    Loading { leader_epoch: i32 },
    /// It serves groups, as leader in `leader_epoch`.
    Loaded { leader_epoch: i32 },
}

impl CoordinatorRole {
    fn leader_epoch(self) -> Option<i32> {
        match self {
            CoordinatorRole::Unloaded => None,
            CoordinatorRole::Loading { leader_epoch }
            | CoordinatorRole::Loaded { leader_epoch } => Some(leader_epoch),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct CoordinatorLoad {
    pub role: CoordinatorRole,
    /// Bumped on every load and resignation. A write queued under one term
    /// and finished under another belongs to a coordinator that is gone.
    pub term: u64,
}

/// The offsets log's settings: the broker's, except that every write is
/// fsynced before it counts (a committed offset must never move back after
/// a crash), nothing is deleted by retention, and the log is compacted, so
/// a load replays about one record per group, topic and partition plus
/// what was written since the last cleaning.
pub(super) fn log_config(broker_log: &LogConfig) -> LogConfig {
    LogConfig {
        flush_on_ack: true,
        retention_ms: -1,
        retention_bytes: -1,
        cleanup_policy: CleanupPolicy::COMPACT,
        ..broker_log.clone()
    }
}

/// The records of one durable fact: `(key, value)`, a `None` value being a
/// tombstone.
fn records_of(durable: &Durable) -> Vec<(String, Option<String>)> {
    match durable {
        Durable::Generation {
            group_id,
            generation_id,
        } => vec![(
            format!("generation\0{group_id}"),
            Some(generation_id.to_string()),
        )],
        Durable::Offsets { group_id, offsets } => offsets
            .iter()
            .map(|(topic, partition, committed)| {
                (
                    format!("offset\0{group_id}\0{topic}\0{partition}"),
                    Some(format!(
                        "{}\0{}\0{}",
                        committed.offset, committed.leader_epoch, committed.metadata
                    )),
                )
            })
            .collect(),
        Durable::OffsetTombstones {
            group_id,
            partitions,
        } => partitions
            .iter()
            .map(|(topic, partition)| (format!("offset\0{group_id}\0{topic}\0{partition}"), None))
            .collect(),
        Durable::GroupTombstone {
            group_id,
            partitions,
        } => partitions
            .iter()
            .map(|(topic, partition)| (format!("offset\0{group_id}\0{topic}\0{partition}"), None))
            .chain(std::iter::once((format!("generation\0{group_id}"), None)))
            .collect(),
    }
}

fn encode(records: &[(String, Option<String>)], timestamp_ms: i64) -> Bytes {
    let entries: Vec<crate::log::batch::KeyValue<'_>> = records
        .iter()
        .map(|(key, value)| (Some(key.as_bytes()), value.as_ref().map(|v| v.as_bytes())))
        .collect();
    crate::log::batch::encode_uncompressed(&entries, timestamp_ms, -1, -1, -1).freeze()
}

/// Appends the records of `writes` as one batch, as leader in
/// `leader_epoch`, and waits for its fsync and then for the high watermark
/// to pass it.
async fn append_durably(
    broker: &Broker,
    writes: &[PersistRequest],
    leader_epoch: i32,
) -> Result<(), String> {
    let records: Vec<(String, Option<String>)> =
        writes.iter().flat_map(|w| records_of(&w.durable)).collect();
    if records.is_empty() {
        return Ok(());
    }
    let partition = broker
        .offsets_partition()
        .ok_or("the offsets partition is not hosted here")?;
    if !partition.is_leader() || partition.leader_epoch() != leader_epoch {
        return Err("no longer the offsets partition's leader".to_string());
    }
    if !partition.has_min_insync_replicas() {
        return Err("the offsets partition's ISR is below min.insync.replicas".to_string());
    }
    let now_ms = broker.clock.now_ms();
    let payload = encode(&records, now_ms);
    let outcome = partition
        .append(payload, now_ms)
        .await
        .map_err(|e| e.to_string())?;
    let end_offset = outcome.last_offset + 1;
    // Wakes followers' held fetches.
    broker.notify_data_arrived();
    partition
        .sync_to(end_offset)
        .await
        .map_err(|e| e.to_string())?;
    let replicated = partition.wait_replicated(end_offset, leader_epoch);
    let oldest = writes
        .iter()
        .map(|w| w.queued_at)
        .min()
        .expect("a batch holds a write");
    let deadline = oldest + Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS);
    match tokio::time::timeout_at(deadline, replicated).await {
        Ok(AckWait::Replicated) => Ok(()),
        Ok(AckWait::NotLeader) => Err("leadership moved before the write replicated".to_string()),
        Ok(AckWait::BelowMinInsync) => {
            Err("the ISR fell below min.insync.replicas before the write replicated".to_string())
        }
        Err(_) => Err("the write did not replicate within offsets.commit.timeout.ms".to_string()),
    }
}

/// The writer task: drains the queue in order until the broker is gone.
pub(super) async fn persist_loop(
    broker: Weak<Broker>,
    mut queue: tokio::sync::mpsc::Receiver<PersistRequest>,
) {
    let mut next: Option<PersistRequest> = None;
    loop {
        let first = match next.take() {
            Some(write) => write,
            None => match queue.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        // One batch holds writes of one load only.
        let mut writes = vec![first];
        while writes.len() < PERSIST_BATCH_MAX {
            match queue.try_recv() {
                Ok(write) if write.term == writes[0].term => writes.push(write),
                Ok(write) => {
                    next = Some(write);
                    break;
                }
                Err(_) => break,
            }
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let term = writes[0].term;
        let Some(leader_epoch) = broker.coordinator_epoch_in(term) else {
            // Its coordinator resigned and answered every caller.
            continue;
        };
        let ok = match append_durably(&broker, &writes, leader_epoch).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, writes = writes.len(), "persisting group state failed");
                false
            }
        };
        let ids: Vec<PersistId> = writes.iter().map(|w| w.id).collect();
        broker.coordinate_in(term, |coordinator, now_ms| {
            ids.iter()
                .flat_map(|&id| coordinator.on_persisted(now_ms, id, ok))
                .collect()
        });
    }
}

fn apply(coordinator: &mut GroupCoordinator, key: &str, value: Option<&str>) -> Option<()> {
    let mut key_parts = key.split('\0');
    match key_parts.next()? {
        "offset" => {
            let group_id = key_parts.next()?;
            let topic = key_parts.next()?;
            let partition: i32 = key_parts.next()?.parse().ok()?;
            let Some(value) = value else {
                coordinator.apply_offset_tombstone(group_id, topic, partition);
                return Some(());
            };
            let mut value_parts = value.splitn(3, '\0');
            let offset = value_parts.next()?.parse().ok()?;
            let leader_epoch = value_parts.next()?.parse().ok()?;
            let metadata = value_parts.next().unwrap_or_default().to_string();
            coordinator.apply_offset_commit(
                group_id,
                vec![(
                    topic.to_string(),
                    partition,
                    CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                    },
                )],
            );
        }
        "generation" => match value {
            Some(value) => coordinator.restore_generation(key_parts.next()?, value.parse().ok()?),
            // DeleteGroups wrote it after the group's offsets' tombstones.
            None => coordinator.forget_group(key_parts.next()?),
        },
        _ => return None,
    }
    Some(())
}

/// Applies the whole of `log`, to its end (the leader's log is the truth
/// it serves from), to `coordinator`; returns the end offset replayed.
async fn replay(log: &PartitionLog, coordinator: &mut GroupCoordinator) -> Result<i64, LogError> {
    let mut offset = log.log_start_offset();
    let end_offset = log.log_end_offset();
    let mut applied = 0usize;
    while offset < end_offset {
        let mut bytes = log.read(offset, REPLAY_CHUNK_BYTES, end_offset).await?;
        if bytes.is_empty() {
            break;
        }
        // Each batch moves the replay past its whole offset range: a
        // compacted batch may hold fewer records than offsets, or none.
        let mut walk = &bytes[..];
        while let Ok(header) = crate::log::batch::parse_header(walk) {
            offset = offset.max(header.next_offset());
            walk = &walk[header.size_bytes..];
        }
        let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|error| {
            LogError::Io(std::io::Error::other(format!(
                "undecodable offsets batch: {error}"
            )))
        })?;
        for set in sets {
            for record in set.records {
                offset = offset.max(record.offset + 1);
                let key = record
                    .key
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let value = record.value.as_deref().map(String::from_utf8_lossy);
                if apply(coordinator, &key, value.as_deref()).is_some() {
                    applied += 1;
                } else {
                    tracing::warn!(
                        offset = record.offset,
                        "skipping an unreadable offsets record"
                    );
                }
            }
        }
    }
    tracing::info!(records = applied, end_offset, "replayed the offsets log");
    Ok(end_offset)
}

impl Broker {
    /// This broker's replica of the offsets partition, if it hosts one.
    pub(super) fn offsets_partition(&self) -> Option<Arc<Partition>> {
        self.topic(OFFSETS_TOPIC)?.partitions.get(&0).cloned()
    }

    /// Whether the coordinator serves groups now.
    pub(super) fn coordinator_loaded(&self) -> bool {
        matches!(
            self.coordinator_load
                .lock()
                .expect("coordinator load lock")
                .role,
            CoordinatorRole::Loaded { .. }
        )
    }

    /// The leader epoch of the coordinator loaded under `term`, if it is
    /// still the one serving.
    fn coordinator_epoch_in(&self, term: u64) -> Option<i32> {
        let load = self.coordinator_load.lock().expect("coordinator load lock");
        match load.role {
            CoordinatorRole::Loaded { leader_epoch } if load.term == term => Some(leader_epoch),
            _ => None,
        }
    }

    /// [`Broker::coordinate`], if the coordinator loaded under `term` is
    /// still the one serving; a later one's persist ids mean other writes.
    fn coordinate_in(
        &self,
        term: u64,
        f: impl FnOnce(&mut GroupCoordinator, i64) -> Vec<crate::group::Effect>,
    ) {
        let load = self.coordinator_load.lock().expect("coordinator load lock");
        if load.term == term {
            self.coordinate_locked(&load, f);
        }
    }

    fn group_config(&self, member_id_scope: String) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: self.config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: self.config.group_min_session_timeout_ms,
            max_session_timeout_ms: self.config.group_max_session_timeout_ms,
            member_id_scope,
        }
    }

    /// Brings the coordinator in line with this broker's role on the
    /// offsets partition: loads it on becoming the partition's leader (in a
    /// new leader epoch), resigns on ceasing to be. Called whenever
    /// leadership may have moved.
    pub(super) async fn sync_coordinator(self: &Arc<Self>) {
        let partition = self.offsets_partition();
        let wanted = partition
            .as_ref()
            .filter(|p| p.is_leader())
            .map(|p| p.leader_epoch());
        let term = {
            let mut load = self.coordinator_load.lock().expect("coordinator load lock");
            if load.role.leader_epoch() == wanted {
                return;
            }
            if let Some(leader_epoch) = load.role.leader_epoch() {
                self.observed
                    .report(|| crate::observe::Fact::CoordinatorResigned { leader_epoch });
            }
            load.term += 1;
            load.role = match wanted {
                Some(leader_epoch) => CoordinatorRole::Loading { leader_epoch },
                None => CoordinatorRole::Unloaded,
            };
            // Whatever was loaded hands its groups over, in the same
            // critical section, so no caller slips in between.
            self.coordinate_locked(&load, |coordinator, _| coordinator.resign());
            load.term
        };
        let (Some(partition), Some(leader_epoch)) = (partition, wanted) else {
            tracing::info!("not coordinating groups: the offsets partition is led elsewhere");
            return;
        };
        let scope = if self.cluster.is_some() {
            format!(
                "{}.{}.{leader_epoch}",
                self.config.node_id, self.incarnation
            )
        } else {
            self.incarnation.to_string()
        };
        let mut coordinator = GroupCoordinator::new(self.group_config(scope));
        let replayed = partition
            .with_log(async |log| replay(log, &mut coordinator).await)
            .await;
        let end_offset = match replayed {
            Ok(end_offset) => end_offset,
            Err(error) => {
                tracing::error!(%error, "replaying the offsets log failed; groups stay unavailable here");
                return;
            }
        };
        {
            let mut load = self.coordinator_load.lock().expect("coordinator load lock");
            if load.term != term {
                return;
            }
            // The coordinator that stood in while loading resigns too: it
            // knew no group, and its callers look the coordinator up again.
            load.term += 1;
            self.coordinate_locked(&load, |current, _| {
                std::mem::replace(current, coordinator).resign()
            });
        }
        let term = term + 1;
        if partition.high_watermark() >= end_offset {
            self.finish_load(term, leader_epoch);
        } else {
            let broker = Arc::downgrade(self);
            tokio::spawn(await_load_committed(
                broker,
                partition,
                (term, leader_epoch),
                end_offset,
            ));
        }
    }

    /// Serves groups from the coordinator loaded under `term`.
    fn finish_load(&self, term: u64, leader_epoch: i32) {
        let mut load = self.coordinator_load.lock().expect("coordinator load lock");
        if load.term == term {
            load.role = CoordinatorRole::Loaded { leader_epoch };
            tracing::info!(leader_epoch, "coordinating groups");
            self.observed
                .report(|| crate::observe::Fact::CoordinatorLoaded { leader_epoch });
        }
    }
}

/// Waits until the high watermark passes everything a new coordinator
/// replayed, then lets it serve; gives up when its load is superseded.
async fn await_load_committed(
    broker: Weak<Broker>,
    partition: Arc<Partition>,
    (term, leader_epoch): (u64, i32),
    end_offset: i64,
) {
    loop {
        let Some(current) = broker.upgrade() else {
            return;
        };
        if current
            .coordinator_load
            .lock()
            .expect("coordinator load lock")
            .term
            != term
        {
            return;
        }
        drop(current);
        let replicated = partition.wait_replicated(end_offset, leader_epoch);
        match tokio::time::timeout(Duration::from_millis(LOAD_RECHECK_MS), replicated).await {
            Ok(AckWait::Replicated) => {
                if let Some(broker) = broker.upgrade() {
                    broker.finish_load(term, leader_epoch);
                }
                return;
            }
            Ok(AckWait::NotLeader) => return,
            Ok(AckWait::BelowMinInsync) => {
                tokio::time::sleep(Duration::from_millis(LOAD_RECHECK_MS)).await
            }
            Err(_) => {}
        }
    }
}
