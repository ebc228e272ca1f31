//! Persistence of committed offsets and group generations in the internal
//! `__consumer_offsets-0` log, and their replay on start.
//!
//! Each fact is one record: key `offset\0<group>\0<topic>\0<partition>` with
//! value `<offset>\0<leader epoch>\0<metadata>`, or key `generation\0<group>`
//! with value `<generation>`. Replay applies them in log order, so the last
//! write wins. The log is never compacted yet: it grows with every commit.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::partition::PartitionError;
use super::Broker;
use crate::group::{CommittedOffset, GroupCoordinator};
use crate::log::{LogError, PartitionLog};

/// Replay reads the log in chunks of this size.
const REPLAY_CHUNK_BYTES: usize = 1 << 20;

fn encode(entries: Vec<(String, String)>, timestamp_ms: i64) -> Bytes {
    let records: Vec<(Option<&[u8]>, &[u8])> = entries
        .iter()
        .map(|(key, value)| (Some(key.as_bytes()), value.as_bytes()))
        .collect();
    crate::log::batch::encode_uncompressed(&records, timestamp_ms, -1, -1, -1).freeze()
}

async fn append_durably(
    broker: &Broker,
    entries: Vec<(String, String)>,
) -> Result<(), PartitionError> {
    let payload = encode(entries, broker.clock.now_ms());
    let outcome = broker
        .offsets_log
        .append(payload, broker.clock.now_ms())
        .await?;
    broker.offsets_log.sync_to(outcome.last_offset + 1).await
}

pub(super) async fn persist_commits(
    broker: &Broker,
    group_id: &str,
    offsets: &[(String, i32, CommittedOffset)],
) -> Result<(), PartitionError> {
    let entries = offsets
        .iter()
        .map(|(topic, partition, committed)| {
            (
                format!("offset\0{group_id}\0{topic}\0{partition}"),
                format!(
                    "{}\0{}\0{}",
                    committed.offset, committed.leader_epoch, committed.metadata
                ),
            )
        })
        .collect();
    append_durably(broker, entries).await
}

pub(super) async fn persist_generation(
    broker: &Broker,
    group_id: &str,
    generation_id: i32,
) -> Result<(), PartitionError> {
    append_durably(
        broker,
        vec![(format!("generation\0{group_id}"), generation_id.to_string())],
    )
    .await
}

fn apply(coordinator: &mut GroupCoordinator, key: &str, value: &str) -> Option<()> {
    let mut key_parts = key.split('\0');
    match key_parts.next()? {
        "offset" => {
            let group_id = key_parts.next()?;
            let topic = key_parts.next()?;
            let partition: i32 = key_parts.next()?.parse().ok()?;
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
        "generation" => coordinator.restore_generation(key_parts.next()?, value.parse().ok()?),
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
                let value = record
                    .value
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                if apply(coordinator, &key, &value).is_some() {
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
