//! The partition log against a reference model: a `Vec` of record values.
//!
//! Random sequences of appends, reads, rolls, flushes, truncations, retention
//! and crashes (through a storage that drops or tears unsynced bytes) must keep
//! the log equal to the model, with every synced record surviving a crash.

use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sluice::log::testing::encode_batch;
use sluice::log::{LogConfig, LogError, PartitionLog};
use sluice::replica::{ReplicaConfig, ReplicaEffect, ReplicaState};
use sluice::storage::mem::MemStorage;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Read { offset_pick: u16, max_bytes: usize },
    Roll,
    Flush,
    Truncate { offset_pick: u16 },
    Retention,
    DeleteRecords { offset_pick: u16 },
    Crash { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6).prop_map(Op::Append),
        4 => (any::<u16>(), 1usize..400).prop_map(|(offset_pick, max_bytes)| Op::Read { offset_pick, max_bytes }),
        1 => Just(Op::Roll),
        2 => Just(Op::Flush),
        1 => any::<u16>().prop_map(|offset_pick| Op::Truncate { offset_pick }),
        1 => Just(Op::Retention),
        1 => any::<u16>().prop_map(|offset_pick| Op::DeleteRecords { offset_pick }),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

fn decode_values(mut bytes: Bytes) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut bytes).expect("served bytes decode") {
        for record in set.records {
            out.push((
                record.offset,
                record.value.map(|v| v.to_vec()).unwrap_or_default(),
            ));
        }
    }
    out
}

struct Model {
    /// Values by offset; entries below `log_start` are gone.
    values: Vec<Vec<u8>>,
    /// The leader epoch each offset was written in.
    epochs: Vec<i32>,
    log_start: i64,
    /// Appends so far: the epoch rises every third one, as if leaders
    /// changed.
    appends: i32,
}

impl Model {
    /// OffsetForLeaderEpoch over the records that remain.
    fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let kept = &self.epochs[self.log_start as usize..];

        let Some(found) = kept.iter().copied().filter(|e| *e <= epoch).max() else {
            return (-1, -1);
        };
        let end = kept
            .iter()
            .position(|e| *e > found)
            .map_or(self.epochs.len() as i64, |i| self.log_start + i as i64);
        (found, end)
    }
}

async fn open(storage: &MemStorage, config: &LogConfig) -> PartitionLog {
    PartitionLog::open(
        Arc::new(storage.clone()),
        Path::new("/data/t-0"),
        config.clone(),
        0,
    )
    .await
    .expect("recovery succeeds")
}

/// What the broker's partition shell does after every log operation: the
/// replica core decides the high watermark and the log is told.
fn settle(log: &mut PartitionLog, replica: &mut ReplicaState) {
    for effect in replica.on_log_progress(log.log_end_offset(), log.durable_offset()) {
        match effect {
            ReplicaEffect::HighWatermark(offset) => log.set_high_watermark(offset),
            ReplicaEffect::IsrChanged(isr) => panic!("a single replica's ISR changed: {isr:?}"),
        }
    }
}

fn replica_of(log: &PartitionLog, flush_on_ack: bool) -> ReplicaState {
    ReplicaState::single_replica(
        ReplicaConfig::single(0, flush_on_ack),
        log.log_end_offset(),
        log.durable_offset(),
        log.high_watermark(),
    )
}

async fn run(ops: Vec<Op>, flush_on_ack: bool) {
    let storage = MemStorage::new();
    let config = LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        retention_bytes: 600,
        retention_ms: -1,
        flush_on_ack,
        ..LogConfig::default()
    };
    let mut log = open(&storage, &config).await;
    let mut replica = replica_of(&log, flush_on_ack);
    let mut model = Model {
        values: Vec::new(),
        epochs: Vec::new(),
        log_start: 0,
        appends: 0,
    };
    for op in ops {
        match op {
            Op::Append(values) => {
                let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                let batch = encode_batch(&slices, 1_000, -1, -1, -1);
                let epoch = model.appends / 3;
                model.appends += 1;
                let outcome = log
                    .append(BytesMut::from(&batch[..]), epoch, 1_000)
                    .await
                    .expect("append");
                model
                    .epochs
                    .extend(std::iter::repeat_n(epoch, values.len()));
                assert_eq!(outcome.base_offset, model.values.len() as i64);
                assert_eq!(
                    outcome.last_offset,
                    (model.values.len() + values.len() - 1) as i64
                );
                model.values.extend(values);
                assert_eq!(log.log_end_offset(), model.values.len() as i64);
            }
            Op::Read {
                offset_pick,
                max_bytes,
            } => {
                let span = (log.log_end_offset() - log.log_start_offset() + 1) as u64;
                let offset = log.log_start_offset() + (u64::from(offset_pick) % span) as i64;
                let hw = log.high_watermark();
                let served = decode_values(
                    log.read(offset, max_bytes, hw)
                        .await
                        .expect("read in range"),
                );
                if offset < hw {
                    assert!(
                        !served.is_empty(),
                        "read at {offset} below hw {hw} returned nothing"
                    );
                    assert!(served[0].0 <= offset, "first batch must contain the offset");
                }
                for (served_offset, value) in &served {
                    assert!(
                        *served_offset < hw,
                        "served {served_offset} at or past hw {hw}"
                    );
                    // A batch that straddles the log start is served whole;
                    // what lies below the asked offset the client skips.
                    assert!(*served_offset >= model.log_start || *served_offset < offset);
                    assert_eq!(&model.values[*served_offset as usize], value);
                }
                let offsets: Vec<i64> = served.iter().map(|(o, _)| *o).collect();
                assert!(
                    offsets.windows(2).all(|w| w[1] == w[0] + 1),
                    "gap in served offsets"
                );
            }
            Op::Roll => log.roll(1_000).await.expect("roll"),
            Op::Flush => log.flush().await.expect("flush"),
            Op::Truncate { offset_pick } => {
                let span = (log.log_end_offset() - log.log_start_offset() + 1) as u64;
                let wanted = log.log_start_offset() + (u64::from(offset_pick) % span) as i64;
                log.truncate_to(wanted).await.expect("truncate");
                // Truncation lands on a batch boundary at or below the request.
                let end = log.log_end_offset();
                assert!(
                    end <= wanted.max(log.log_start_offset()) || end == model.values.len() as i64
                );
                model.values.truncate(end as usize);
                model.epochs.truncate(end as usize);
                // A cut below a log start inside a batch empties the log.
                assert!(log.log_start_offset() <= model.log_start);
                model.log_start = log.log_start_offset();
            }
            Op::Retention => {
                log.apply_retention(1_000).await.expect("retention");
                assert!(log.log_start_offset() >= model.log_start);
                model.log_start = log.log_start_offset();
            }
            Op::DeleteRecords { offset_pick } => {
                // Anywhere from the log start to the high watermark, as a
                // leader allows; the start is durable at once.
                let span = (log.high_watermark() - log.log_start_offset() + 1) as u64;
                let target = log.log_start_offset() + (u64::from(offset_pick) % span) as i64;
                log.advance_log_start(target).await.expect("delete records");
                assert_eq!(log.log_start_offset(), target.max(model.log_start));
                model.log_start = log.log_start_offset();
                assert!(
                    matches!(
                        log.read(target - 1, 100, log.high_watermark()).await,
                        Err(LogError::OffsetOutOfRange { .. })
                    ) || target == 0
                );
            }
            Op::Crash { seed } => {
                let durable = log.durable_offset();
                let visible = log.high_watermark();
                drop(log);
                storage.crash(&mut ChaCha8Rng::seed_from_u64(seed));
                log = open(&storage, &config).await;
                replica = replica_of(&log, flush_on_ack);
                let end = log.log_end_offset();
                assert!(
                    end >= durable,
                    "crash lost synced records: end {end} < durable {durable}"
                );
                if flush_on_ack {
                    assert!(
                        end >= visible,
                        "crash lost records consumers saw under flush-on-ack"
                    );
                }
                assert!(
                    end <= model.values.len() as i64,
                    "recovery invented records"
                );
                model.values.truncate(end as usize);
                model.epochs.truncate(end as usize);
                // A moved log start is durable (DeleteRecords' checkpoint, or
                // retention's deleted segments): never back below it.
                assert!(
                    log.log_start_offset() >= model.log_start.min(end),
                    "log start {} fell below {} after a crash",
                    log.log_start_offset(),
                    model.log_start.min(end)
                );
                model.log_start = log.log_start_offset();
                // Everything left must read back exactly.
                let mut offset = log.log_start_offset();
                while offset < log.high_watermark() {
                    let served = decode_values(
                        log.read(offset, 1 << 16, log.high_watermark())
                            .await
                            .expect("read"),
                    );
                    for (served_offset, value) in &served {
                        assert_eq!(&model.values[*served_offset as usize], value);
                    }
                    offset = served.last().expect("non-empty").0 + 1;
                }
            }
        }
        settle(&mut log, &mut replica);
        // The leader-epoch cache, rebuilt from headers on every open, answers
        // as the per-record model does. A log with nothing left above its
        // start (DeleteRecords up to the end) keeps or drops the epoch that
        // covered the start depending on its history, as Kafka's cache
        // does; the model does not say which.
        let emptied = log.log_start_offset() > 0 && log.log_start_offset() == log.log_end_offset();
        for epoch in (-1..=model.appends / 3 + 1).filter(|_| !emptied) {
            assert_eq!(
                log.end_offset_for_epoch(epoch),
                model.end_offset_for_epoch(epoch),
                "epoch {epoch}"
            );
        }
        if flush_on_ack {
            assert!(log.high_watermark() <= log.durable_offset());
        } else {
            assert_eq!(log.high_watermark(), log.log_end_offset());
        }
        assert!(log.log_start_offset() <= log.high_watermark());
        assert!(log.high_watermark() <= log.log_end_offset());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn log_matches_model_under_interval_flush(ops in prop::collection::vec(op(), 1..60)) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run(ops, false));
    }

    #[test]
    fn log_matches_model_under_flush_on_ack(ops in prop::collection::vec(op(), 1..60)) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run(ops, true));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn a_corrupt_byte_in_the_tail_is_cut_and_never_served() {
    runtime().block_on(async {
        let storage = MemStorage::new();
        let config = LogConfig::default();
        let mut log = open(&storage, &config).await;
        for n in 0..3u8 {
            let batch = encode_batch(&[&[n; 10][..]], 1, -1, -1, -1);
            log.append(BytesMut::from(&batch[..]), 0, 1).await.unwrap();
        }
        log.flush().await.unwrap();
        drop(log);
        let path = Path::new("/data/t-0/00000000000000000000.log");
        let mut bytes = storage.file_bytes(path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        storage.set_file_bytes(path, bytes);
        let log = open(&storage, &config).await;
        assert_eq!(log.log_end_offset(), 2, "the corrupt third batch is cut");
        let served = decode_values(log.read(0, 1 << 20, log.high_watermark()).await.unwrap());
        assert_eq!(served.len(), 2);
    });
}

#[test]
fn out_of_range_and_oversized_are_errors_not_panics() {
    runtime().block_on(async {
        let storage = MemStorage::new();
        let config = LogConfig {
            message_max_bytes: 100,
            ..LogConfig::default()
        };
        let mut log = open(&storage, &config).await;
        assert!(matches!(
            log.read(1, 10, 10).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let big = encode_batch(&[&[0u8; 200][..]], 1, -1, -1, -1);
        assert!(matches!(
            log.append(BytesMut::from(&big[..]), 0, 1).await,
            Err(LogError::MessageTooLarge { .. })
        ));
        assert!(matches!(
            log.append(BytesMut::from(&b"garbage"[..]), 0, 1).await,
            Err(LogError::Corrupt(_))
        ));
        assert_eq!(log.log_end_offset(), 0);
    });
}

#[test]
fn idempotent_retries_get_their_original_offsets_and_gaps_are_refused() {
    runtime().block_on(async {
        let storage = MemStorage::new();
        let config = LogConfig::default();
        let mut log = open(&storage, &config).await;
        let first = encode_batch(&[b"a".as_slice(), b"b"], 1, 7, 0, 0);
        let second = encode_batch(&[b"c".as_slice()], 1, 7, 0, 2);
        let gap = encode_batch(&[b"d".as_slice()], 1, 7, 0, 9);
        assert_eq!(
            log.append(BytesMut::from(&first[..]), 0, 1)
                .await
                .unwrap()
                .base_offset,
            0
        );
        assert_eq!(
            log.append(BytesMut::from(&second[..]), 0, 1)
                .await
                .unwrap()
                .base_offset,
            2
        );
        let retry = log.append(BytesMut::from(&first[..]), 0, 1).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!((retry.base_offset, retry.last_offset), (0, 1));
        assert!(matches!(
            log.append(BytesMut::from(&gap[..]), 0, 1).await,
            Err(LogError::Sequence(_))
        ));
        assert_eq!(log.log_end_offset(), 3);
        // The state is rebuilt from the log on restart.
        drop(log);
        let mut log = open(&storage, &config).await;
        let retry = log.append(BytesMut::from(&second[..]), 0, 1).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, 2);
    });
}

#[test]
fn segments_roll_on_size_and_time_and_retention_by_time_deletes_them() {
    runtime().block_on(async {
        let storage = MemStorage::new();
        let config = LogConfig {
            segment_bytes: 200,
            roll_ms: 10_000,
            retention_ms: 60_000,
            ..LogConfig::default()
        };
        let mut log = open(&storage, &config).await;
        for n in 0..10u8 {
            let batch = encode_batch(&[&[n; 50][..]], 1_000, -1, -1, -1);
            log.append(BytesMut::from(&batch[..]), 0, 1_000)
                .await
                .unwrap();
        }
        let by_size = log.segment_count();
        assert!(by_size >= 5, "expected size rolls, got {by_size} segments");
        let batch = encode_batch(&[b"late".as_slice()], 20_000, -1, -1, -1);
        log.append(BytesMut::from(&batch[..]), 0, 20_000)
            .await
            .unwrap();
        let batch = encode_batch(&[b"later".as_slice()], 40_000, -1, -1, -1);
        log.append(BytesMut::from(&batch[..]), 0, 40_000)
            .await
            .unwrap();
        assert!(log.segment_count() > by_size, "time roll");
        // Retention deletes only what consumers may see: let the replica core
        // expose everything, as the broker does after each append.
        let mut replica = replica_of(&log, false);
        settle(&mut log, &mut replica);
        let deleted = log.apply_retention(62_000).await.unwrap();
        assert!(
            deleted >= by_size - 1,
            "old segments deleted, got {deleted}"
        );
        assert_eq!(log.log_start_offset(), 10);
        assert!(matches!(
            log.read(0, 10, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let found = log.offset_for_timestamp(30_000).await.unwrap();
        assert_eq!(found, Some((11, 40_000)));
    });
}

/// A follower appends what it fetched from the leader as it is: it ends up
/// with the same offsets, bytes, leader epochs and idempotent-producer
/// state, keeps them across a restart, and refuses a payload that does not
/// continue its log.
#[tokio::test]
async fn a_follower_copy_matches_the_leader_and_refuses_gaps() {
    let config = LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let leader_storage = MemStorage::new();
    let mut leader = open(&leader_storage, &config).await;
    let producer_id = 7;
    for (sequence, epoch) in [(0, 0), (2, 0), (4, 3), (6, 5)] {
        let batch = encode_batch(&[b"x".as_slice(), b"y"], 1_000, producer_id, 0, sequence);
        leader
            .append(BytesMut::from(&batch[..]), epoch, 1_000)
            .await
            .expect("leader append");
    }
    let end = leader.log_end_offset();
    assert_eq!(end, 8);

    let follower_storage = MemStorage::new();
    let mut follower = open(&follower_storage, &config).await;
    let mut offset = 0;
    while offset < end {
        // One batch at a time, as fetches of a small max_bytes bring them.
        let bytes = leader.read(offset, 1, end).await.expect("leader read");
        assert!(!bytes.is_empty());
        offset = follower
            .append_replicated(bytes, 2_000)
            .await
            .expect("replicated append");
    }
    assert_eq!(follower.log_end_offset(), end);
    follower.set_high_watermark(end);
    let copy = follower.read(0, 1 << 16, end).await.expect("follower read");
    let original = leader.read(0, 1 << 16, end).await.expect("leader read");
    assert_eq!(decode_values(copy), decode_values(original));
    for epoch in -1..=6 {
        assert_eq!(
            follower.end_offset_for_epoch(epoch),
            leader.end_offset_for_epoch(epoch),
            "epoch {epoch}"
        );
    }

    // A gap, a batch that goes back, and a corrupt batch are refused.
    let again = leader.read(0, 1, end).await.expect("read");
    assert!(matches!(
        follower.append_replicated(again, 2_000).await,
        Err(LogError::NotContiguous {
            expected: 8,
            base_offset: 0
        })
    ));
    let mut corrupt = leader.read(6, 1, end).await.expect("read").to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    follower.truncate_to(6).await.expect("truncate");
    assert!(follower
        .append_replicated(Bytes::from(corrupt), 2_000)
        .await
        .is_err());
    let intact = leader.read(6, 1, end).await.expect("read");
    follower
        .append_replicated(intact, 2_000)
        .await
        .expect("the intact batch");

    // After a restart the copy is the same, and as a new leader it answers
    // a producer's retry with the original offsets.
    follower.flush().await.expect("flush");
    drop(follower);
    let mut follower = open(&follower_storage, &config).await;
    assert_eq!(follower.log_end_offset(), end);
    assert_eq!(follower.end_offset_for_epoch(4), (3, 6));
    let retry = encode_batch(&[b"x".as_slice(), b"y"], 1_000, producer_id, 0, 6);
    let outcome = follower
        .append(BytesMut::from(&retry[..]), 9, 3_000)
        .await
        .expect("retry");
    assert!(outcome.duplicate);
    assert_eq!(outcome.base_offset, 6);
}

/// A follower that fell below the leader's log start empties its log and
/// starts over there; it then copies the leader from that offset, and a
/// restart recovers the new start.
#[tokio::test]
async fn a_follower_below_the_leaders_log_start_starts_over_there() {
    let config = LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let storage = MemStorage::new();
    let mut follower = open(&storage, &config).await;
    for sequence in [0, 2] {
        let batch = encode_batch(&[b"old".as_slice(), b"old"], 1_000, 3, 0, sequence);
        follower
            .append(BytesMut::from(&batch[..]), 0, 1_000)
            .await
            .expect("append");
    }
    assert_eq!(follower.log_end_offset(), 4);
    follower
        .truncate_fully_and_start_at(40, 2_000)
        .await
        .expect("reset");
    assert_eq!(follower.log_start_offset(), 40);
    assert_eq!(follower.log_end_offset(), 40);
    assert_eq!(follower.high_watermark(), 40);
    assert_eq!(follower.end_offset_for_epoch(0), (-1, -1));
    assert!(matches!(
        follower.read(0, 1 << 16, 40).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));

    // The leader's batch at 40 continues it.
    let leader_storage = MemStorage::new();
    let mut leader = open(&leader_storage, &config).await;
    leader
        .truncate_fully_and_start_at(40, 1_000)
        .await
        .expect("leader starts at 40");
    let batch = encode_batch(&[b"new".as_slice()], 1_500, -1, -1, -1);
    leader
        .append(BytesMut::from(&batch[..]), 2, 1_500)
        .await
        .expect("leader append");
    let bytes = leader.read(40, 1 << 16, 41).await.expect("leader read");
    assert_eq!(
        follower
            .append_replicated(bytes, 2_000)
            .await
            .expect("copy"),
        41
    );
    follower.flush().await.expect("flush");
    drop(follower);
    let reopened = open(&storage, &config).await;
    assert_eq!(reopened.log_start_offset(), 40);
    assert_eq!(reopened.log_end_offset(), 41);
}
