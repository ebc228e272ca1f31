//! Persistence of the group coordinator's durable facts (committed offsets,
//! their tombstones, group generations) in the internal
//! `__consumer_offsets-0` log, and their replay on start.
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
//! fsync, and reports each write back in that same order, so the log and
//! the coordinator's memory always agree on which write came last.

use std::sync::Weak;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::partition::PartitionError;
use super::Broker;
use crate::group::{CommittedOffset, Durable, GroupCoordinator, PersistId};
use crate::log::{LogError, PartitionLog};

/// Replay reads the log in chunks of this size.
const REPLAY_CHUNK_BYTES: usize = 1 << 20;

/// Writes queued for the offsets log. A coordinator call that finds the
/// queue full fails its write at once (the callers see
/// COORDINATOR_NOT_AVAILABLE and retry) rather than wait under the lock.
pub(super) const PERSIST_QUEUE_MAX: usize = 4096;

/// Writes appended as one batch and one fsync: enough to amortise the fsync
/// under load, small enough to keep a batch far below segment sizes.
const PERSIST_BATCH_MAX: usize = 256;

/// One write the coordinator asked for.
pub(super) struct PersistRequest {
    pub id: PersistId,
    pub durable: Durable,
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
    }
}

fn encode(records: &[(String, Option<String>)], timestamp_ms: i64) -> Bytes {
    let entries: Vec<crate::log::batch::KeyValue<'_>> = records
        .iter()
        .map(|(key, value)| (Some(key.as_bytes()), value.as_ref().map(|v| v.as_bytes())))
        .collect();
    crate::log::batch::encode_uncompressed(&entries, timestamp_ms, -1, -1, -1).freeze()
}

/// Appends the records of `writes` as one batch and waits for its fsync.
async fn append_durably(broker: &Broker, writes: &[PersistRequest]) -> Result<(), PartitionError> {
    let records: Vec<(String, Option<String>)> =
        writes.iter().flat_map(|w| records_of(&w.durable)).collect();
    if records.is_empty() {
        return Ok(());
    }
    let now_ms = broker.clock.now_ms();
    let payload = encode(&records, now_ms);
    let outcome = broker.offsets_log.append(payload, now_ms).await?;
    broker.offsets_log.sync_to(outcome.last_offset + 1).await
}

/// The writer task: drains the queue in order until the broker is gone.
pub(super) async fn persist_loop(
    broker: Weak<Broker>,
    mut queue: tokio::sync::mpsc::Receiver<PersistRequest>,
) {
    while let Some(first) = queue.recv().await {
        let mut writes = vec![first];
        while writes.len() < PERSIST_BATCH_MAX {
            match queue.try_recv() {
                Ok(write) => writes.push(write),
                Err(_) => break,
            }
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let ok = match append_durably(&broker, &writes).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, writes = writes.len(), "persisting group state failed");
                false
            }
        };
        let ids: Vec<PersistId> = writes.iter().map(|w| w.id).collect();
        broker.coordinate(|coordinator, now_ms| {
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
        "generation" => coordinator.restore_generation(key_parts.next()?, value?.parse().ok()?),
        _ => return None,
    }
    Some(())
}

pub(super) async fn replay(
    log: &PartitionLog,
    coordinator: &mut GroupCoordinator,
) -> Result<(), LogError> {
    let mut offset = log.log_start_offset();
    let mut applied = 0usize;
    while offset < log.high_watermark() {
        let mut bytes = log
            .read(offset, REPLAY_CHUNK_BYTES, log.high_watermark())
            .await?;
        if bytes.is_empty() {
            break;
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
    tracing::info!(records = applied, "replayed the offsets log");
    Ok(())
}
