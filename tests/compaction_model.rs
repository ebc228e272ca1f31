//! The log cleaner against a reference model: every record ever appended,
//! by offset, with its key, value and timestamp.
//!
//! Random sequences of keyed appends (tombstones among them), idempotent
//! appends, rolls, cleaning passes, cleaning passes stopped at a random
//! storage operation (then a crash), crashes and the passing of time must
//! keep the compacted log a faithful view of the model:
//! - every record served is the model's record at that offset;
//! - a record is missing only if a later record of its key exists, or it is
//!   a tombstone whose `delete.retention.ms` has passed;
//! - the latest record of every key is always there (a tombstone until it
//!   expires);
//! - offsets, the log end and the leader-epoch answers never change;
//! - a retry of an idempotent producer's last batch is still recognised
//!   after its log was cleaned and crashed.

use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sluice::log::batch::{encode_uncompressed, parse_header, KeyValue};
use sluice::log::{CleanupPolicy, LogConfig, LogError, PartitionLog};
use sluice::replica::{ReplicaConfig, ReplicaEffect, ReplicaState};
use sluice::storage::mem::MemStorage;

/// Keys are drawn from a small set so that records supersede each other.
const KEYS: u8 = 6;
const DELETE_RETENTION_MS: i64 = 500;
const PRODUCER_ID: i64 = 7;

#[derive(Debug, Clone)]
enum Op {
    /// Records as (key, value); `None` is a tombstone.
    Append(Vec<(u8, Option<u8>)>),
    /// The same, through an idempotent producer.
    IdempotentAppend(Vec<(u8, Option<u8>)>),
    Roll,
    Clean {
        dedupe_bytes_max: usize,
    },
    /// A pass stopped after `writes` storage writes, then a power loss.
    CleanThenCrash {
        writes: u8,
        seed: u64,
    },
    Crash {
        seed: u64,
    },
    Wait {
        ms: u16,
    },
    RetryLastIdempotent,
}

fn records() -> impl Strategy<Value = Vec<(u8, Option<u8>)>> {
    prop::collection::vec((0..KEYS, prop::option::weighted(0.8, any::<u8>())), 1..5)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => records().prop_map(Op::Append),
        2 => records().prop_map(Op::IdempotentAppend),
        1 => Just(Op::Roll),
        3 => (64usize..2000).prop_map(|dedupe_bytes_max| Op::Clean { dedupe_bytes_max }),
        3 => (any::<u8>(), any::<u64>()).prop_map(|(writes, seed)| Op::CleanThenCrash { writes, seed }),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        2 => (0u16..400).prop_map(|ms| Op::Wait { ms }),
        1 => Just(Op::RetryLastIdempotent),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    key: u8,
    value: Option<u8>,
    timestamp_ms: i64,
}

/// A batch the idempotent producer sent, to retry.
#[derive(Debug, Clone)]
struct Sent {
    bytes: Vec<u8>,
    base_offset: i64,
    last_offset: i64,
}

fn batch_of(records: &[(u8, Option<u8>)], timestamp_ms: i64, sequence: Option<i32>) -> Vec<u8> {
    let keys: Vec<[u8; 1]> = records.iter().map(|(key, _)| [*key]).collect();
    let values: Vec<Option<[u8; 1]>> = records.iter().map(|(_, v)| v.map(|v| [v])).collect();
    let entries: Vec<KeyValue<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| (Some(&key[..]), value.as_ref().map(|v| &v[..])))
        .collect();
    let (producer_id, epoch, sequence) = match sequence {
        Some(sequence) => (PRODUCER_ID, 0, sequence),
        None => (-1, -1, -1),
    };
    encode_uncompressed(&entries, timestamp_ms, producer_id, epoch, sequence).to_vec()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        retention_ms: -1,
        flush_on_ack: true,
        cleanup_policy: CleanupPolicy::COMPACT,
        delete_retention_ms: DELETE_RETENTION_MS,
        min_compaction_lag_ms: 0,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

async fn open(storage: &MemStorage, now_ms: i64) -> PartitionLog {
    PartitionLog::open(
        Arc::new(storage.clone()),
        Path::new("/data/c-0"),
        config(),
        now_ms,
    )
    .await
    .expect("recovery succeeds")
}

/// The replica core of a single broker under `log.flush.on.ack`: what is
/// synced is what consumers see.
fn settle(log: &mut PartitionLog, replica: &mut ReplicaState) {
    for effect in replica.on_log_progress(log.log_end_offset(), log.durable_offset()) {
        match effect {
            ReplicaEffect::HighWatermark(offset) => log.set_high_watermark(offset),
            ReplicaEffect::IsrChanged(isr) => panic!("a single replica's ISR changed: {isr:?}"),
        }
    }
}

fn replica_of(log: &PartitionLog) -> ReplicaState {
    ReplicaState::single_replica(
        ReplicaConfig::single(0, true),
        log.log_end_offset(),
        log.durable_offset(),
        log.high_watermark(),
    )
}

/// Reads everything below the high watermark: (offset, key, value).
async fn read_all(log: &PartitionLog) -> Vec<(i64, u8, Option<u8>)> {
    let mut served = Vec::new();
    let mut offset = log.log_start_offset();
    let high_watermark = log.high_watermark();
    while offset < high_watermark {
        let bytes = log
            .read(offset, 1 << 16, high_watermark)
            .await
            .expect("read below the high watermark");
        assert!(
            !bytes.is_empty(),
            "nothing served at {offset} below {high_watermark}"
        );
        let mut walk = &bytes[..];
        let mut next = offset;
        while let Ok(header) = parse_header(walk) {
            next = next.max(header.next_offset());
            walk = &walk[header.size_bytes..];
        }
        assert!(next > offset, "a read at {offset} did not move past it");
        let mut decoding = Bytes::copy_from_slice(&bytes);
        for set in RecordBatchDecoder::decode_all(&mut decoding).expect("served bytes decode") {
            for record in set.records {
                if record.offset < offset {
                    continue;
                }
                let key = record.key.expect("every record has a key")[0];
                served.push((record.offset, key, record.value.map(|v| v[0])));
            }
        }
        offset = next;
    }
    served
}

async fn check(log: &PartitionLog, model: &[ModelRecord], now_ms: i64) {
    let served = read_all(log).await;
    let high_watermark = log.high_watermark();
    let mut previous = -1;
    for (offset, key, value) in &served {
        assert!(*offset > previous, "offsets go back or repeat at {offset}");
        previous = *offset;
        let expected = &model[*offset as usize];
        assert_eq!(
            (*key, *value),
            (expected.key, expected.value),
            "offset {offset} holds something the model never had there"
        );
    }
    let present: std::collections::BTreeSet<i64> = served.iter().map(|(o, _, _)| *o).collect();
    let visible = &model[..high_watermark as usize];
    for (offset, record) in visible.iter().enumerate() {
        let offset = offset as i64;
        if offset < log.log_start_offset() || present.contains(&offset) {
            continue;
        }
        let superseded = visible[offset as usize + 1..]
            .iter()
            .any(|later| later.key == record.key);
        let expired_tombstone =
            record.value.is_none() && record.timestamp_ms + DELETE_RETENTION_MS < now_ms;
        assert!(
            superseded || expired_tombstone,
            "offset {offset} ({record:?}) vanished though it is its key's latest and not an \
             expired tombstone (now {now_ms})"
        );
    }
}

async fn run(ops: Vec<Op>) {
    let storage = MemStorage::new();
    let mut now_ms = 1_000i64;
    let mut log = open(&storage, now_ms).await;
    let mut replica = replica_of(&log);
    let mut model: Vec<ModelRecord> = Vec::new();
    let mut next_sequence = 0i32;
    let mut last_sent: Option<Sent> = None;
    for op in ops {
        let mut crashed = None;
        match op {
            Op::Append(records) => {
                let bytes = batch_of(&records, now_ms, None);
                let outcome = log
                    .append(BytesMut::from(&bytes[..]), 0, now_ms)
                    .await
                    .expect("append");
                assert_eq!(outcome.base_offset, model.len() as i64);
                model.extend(records.iter().map(|(key, value)| ModelRecord {
                    key: *key,
                    value: *value,
                    timestamp_ms: now_ms,
                }));
                log.flush().await.expect("flush");
            }
            Op::IdempotentAppend(records) => {
                let bytes = batch_of(&records, now_ms, Some(next_sequence));
                let outcome = log
                    .append(BytesMut::from(&bytes[..]), 0, now_ms)
                    .await
                    .expect("idempotent append");
                assert!(!outcome.duplicate);
                next_sequence += records.len() as i32;
                model.extend(records.iter().map(|(key, value)| ModelRecord {
                    key: *key,
                    value: *value,
                    timestamp_ms: now_ms,
                }));
                log.flush().await.expect("flush");
                last_sent = Some(Sent {
                    bytes,
                    base_offset: outcome.base_offset,
                    last_offset: outcome.last_offset,
                });
            }
            Op::RetryLastIdempotent => {
                if let Some(sent) = &last_sent {
                    let outcome = log
                        .append(BytesMut::from(&sent.bytes[..]), 0, now_ms)
                        .await
                        .expect("a retry is answered");
                    assert!(
                        outcome.duplicate,
                        "a retry of the last batch was appended again"
                    );
                    assert_eq!(
                        (outcome.base_offset, outcome.last_offset),
                        (sent.base_offset, sent.last_offset)
                    );
                }
            }
            Op::Roll => log.roll(now_ms).await.expect("roll"),
            Op::Clean { dedupe_bytes_max } => {
                let end = log.log_end_offset();
                log.clean(now_ms, dedupe_bytes_max).await.expect("clean");
                assert_eq!(log.log_end_offset(), end, "cleaning moved the log end");
            }
            Op::CleanThenCrash { writes, seed } => {
                storage.fail_after_writes(Some(u64::from(writes)));
                let outcome = log.clean(now_ms, 1 << 20).await;
                storage.fail_after_writes(None);
                match outcome {
                    Ok(_) | Err(LogError::Io(_)) => crashed = Some(seed),
                    Err(error) => panic!("cleaning failed with {error}"),
                }
            }
            Op::Crash { seed } => crashed = Some(seed),
            Op::Wait { ms } => now_ms += i64::from(ms),
        }
        if let Some(seed) = crashed {
            drop(log);
            storage.crash(&mut ChaCha8Rng::seed_from_u64(seed));
            log = open(&storage, now_ms).await;
            replica = replica_of(&log);
            // Everything appended was flushed, so a crash loses nothing.
            assert_eq!(
                log.log_end_offset(),
                model.len() as i64,
                "a crash lost records"
            );
        }
        settle(&mut log, &mut replica);
        assert_eq!(log.high_watermark(), model.len() as i64);
        assert_eq!(
            log.latest_epoch(),
            (!model.is_empty()).then_some(0),
            "the epoch cache survives cleaning"
        );
        check(&log, &model, now_ms).await;
    }
    // A last full pass with a later clock leaves one record per key at
    // most, and no tombstone at all.
    now_ms += DELETE_RETENTION_MS + 1_000;
    log.roll(now_ms).await.expect("roll");
    settle(&mut log, &mut replica);
    log.clean(now_ms, 1 << 20).await.expect("clean");
    check(&log, &model, now_ms).await;
    let served = read_all(&log).await;
    let mut keys: Vec<u8> = served.iter().map(|(_, key, _)| *key).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(
        before,
        keys.len(),
        "a key appears twice after a full pass: {served:?}"
    );
    assert!(
        served.iter().all(|(_, _, value)| value.is_some()),
        "an expired tombstone survived a full pass: {served:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn compacted_log_matches_model_through_crashes(ops in prop::collection::vec(op(), 1..60)) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(run(ops));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

#[test]
fn a_keyless_record_is_refused_on_a_compacted_log() {
    runtime().block_on(async {
        let storage = MemStorage::new();
        let mut log = open(&storage, 0).await;
        let keyless = encode_uncompressed(&[(None, Some(&b"v"[..]))], 0, -1, -1, -1);
        let error = log.append(keyless, 0, 0).await.expect_err("keyless");
        assert!(
            matches!(error, LogError::KeylessRecordOnCompactedTopic { record: 0 }),
            "{error:?}"
        );
        assert_eq!(log.log_end_offset(), 0);
    });
}

/// A log holding one batch per `(key, value)`, synced and rolled, so all
/// of it is cleanable.
async fn rolled_log(storage: &MemStorage, records: &[(u8, u8)]) -> PartitionLog {
    let mut log = open(storage, 0).await;
    let mut replica = replica_of(&log);
    for (key, value) in records {
        let bytes = batch_of(&[(*key, Some(*value))], 0, None);
        log.append(BytesMut::from(&bytes[..]), 0, 0)
            .await
            .expect("append");
    }
    log.flush().await.expect("flush");
    log.roll(0).await.expect("roll");
    settle(&mut log, &mut replica);
    log
}

#[test]
fn cleaning_keeps_offsets_and_the_latest_value_of_each_key() {
    runtime().block_on(async {
        let storage = MemStorage::new();
        let mut log = rolled_log(
            &storage,
            &[(1, 10), (2, 20), (1, 11), (3, 30), (2, 21), (1, 12)],
        )
        .await;
        let pass = log.clean(0, 1 << 20).await.expect("clean").expect("due");
        assert_eq!(pass.records_removed, 3);
        let served = read_all(&log).await;
        assert_eq!(
            served,
            vec![(3, 3, Some(30)), (4, 2, Some(21)), (5, 1, Some(12))],
            "the latest value per key, at its original offset"
        );
        assert_eq!(log.log_end_offset(), 6);
        // Nothing is due again until new records come.
        assert!(log.cleaning_due(0).is_none());
        // And the cleaned segment survives a restart as it is.
        drop(log);
        let log = open(&storage, 0).await;
        assert_eq!(read_all(&log).await, served);
    });
}

#[test]
fn a_rewrite_is_discarded_when_its_segment_went_meanwhile() {
    runtime().block_on(async {
        let storage = MemStorage::new();
        let mut log = rolled_log(&storage, &[(1, 10), (1, 11), (2, 20)]).await;
        let due = log.cleaning_due(0).expect("due");
        let map = log.build_offset_map(&due, 1 << 20).await.expect("map");
        let job = log.plan_clean(0).expect("the first segment is cleanable");
        // The rewrite runs without the log; meanwhile DeleteRecords takes
        // the whole segment away.
        let rewritten = job.rewrite(&map, 0).await.expect("rewrite");
        log.advance_log_start(3).await.expect("delete records");
        assert!(
            log.install_cleaned(&job, rewritten)
                .await
                .expect("install")
                .is_none(),
            "a rewrite of a segment that is gone is not installed"
        );
        let leftovers: Vec<String> =
            sluice::storage::Storage::list(&storage, Path::new("/data/c-0"))
                .await
                .expect("list")
                .into_iter()
                .filter(|name| name.ends_with(".cleaned"))
                .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(log.log_start_offset(), 3);
        assert_eq!(log.log_end_offset(), 3);
    });
}
