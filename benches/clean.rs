//! The log cleaner's throughput: one full pass over an 8 MiB compacted log
//! of keyed 100-byte records in 16 KiB batches, against a baseline that
//! reads the same log back from its start and walks every record of every
//! batch (the least a pass must do, since it judges records by key).
//!
//! Both run on in-memory storage, so the ratio is the cleaner's own work
//! (reading each segment twice, the key map, rebuilding batches, the swap),
//! not the disk's. Two key spaces over the log's ~76,000 records: 1,000
//! keys (almost every record superseded: the log shrinks to about one
//! record per key) and 40,000 keys (about half the records stay).

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sluice::log::batch::{encode_uncompressed, KeyValue};
use sluice::log::{CleanupPolicy, LogConfig, PartitionLog};
use sluice::storage::mem::MemStorage;

const LOG_BYTES: usize = 8 << 20;
const RECORD_BYTES: usize = 100;
const RECORDS_PER_BATCH: usize = 140;
/// The cleaner's map budget: Kafka's default `log.cleaner.dedupe.buffer.size`.
const DEDUPE_BYTES: usize = 128 << 20;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

/// A log of about [`LOG_BYTES`] whose records cycle through `keys` keys,
/// rolled so that everything but the last segment is cleanable.
fn build(runtime: &tokio::runtime::Runtime, keys: usize) -> (MemStorage, u64) {
    let storage = MemStorage::new();
    let mut log = runtime
        .block_on(PartitionLog::open(
            Arc::new(storage.clone()),
            Path::new("/bench/clean-0"),
            config(),
            0,
        ))
        .expect("open");
    let value = vec![0xabu8; RECORD_BYTES];
    let mut record = 0usize;
    while log.size_bytes() < LOG_BYTES as u64 {
        let names: Vec<String> = (0..RECORDS_PER_BATCH)
            .map(|i| format!("key-{:08}", (record + i) % keys))
            .collect();
        let entries: Vec<KeyValue<'_>> = names
            .iter()
            .map(|key| (Some(key.as_bytes()), Some(value.as_slice())))
            .collect();
        record += RECORDS_PER_BATCH;
        let batch = encode_uncompressed(&entries, 1_000, -1, -1, -1);
        runtime
            .block_on(log.append(BytesMut::from(&batch[..]), 0, 1_000))
            .expect("append");
    }
    runtime.block_on(log.roll(1_000)).expect("roll");
    runtime.block_on(log.flush()).expect("flush");
    (storage, log.size_bytes())
}

async fn open(storage: &MemStorage) -> PartitionLog {
    PartitionLog::open(
        Arc::new(storage.clone()),
        Path::new("/bench/clean-0"),
        config(),
        1_000,
    )
    .await
    .expect("reopen")
}

fn bench_clean(c: &mut Criterion) {
    let runtime = common::runtime();
    let mut group = c.benchmark_group("clean");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(5));
    for keys in [1_000usize, 40_000] {
        let (storage, bytes) = build(&runtime, keys);
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(BenchmarkId::new("log_clean", keys), |b| {
            b.iter_batched(
                || {
                    // A fresh copy of the dirty log for every pass.
                    let copy = MemStorage::new();
                    copy.copy_from(&storage);
                    let log = runtime.block_on(open(&copy));
                    (copy, log)
                },
                |(copy, mut log)| {
                    let pass = runtime
                        .block_on(log.clean(1_000, DEDUPE_BYTES))
                        .expect("clean")
                        .expect("due");
                    assert!(pass.records_removed > 0);
                    (copy, log)
                },
                BatchSize::PerIteration,
            )
        });
        let log = runtime.block_on(open(&storage));
        group.bench_function(BenchmarkId::new("read_records_baseline", keys), |b| {
            b.iter(|| {
                let mut offset = log.log_start_offset();
                let end = log.log_end_offset();
                let mut read = 0usize;
                while offset < end {
                    let bytes = runtime
                        .block_on(log.read(offset, 1 << 20, end))
                        .expect("read");
                    let mut walk = &bytes[..];
                    while let Ok(header) = sluice::log::batch::parse_header(walk) {
                        let section = &walk[sluice::log::batch::HEADER_LEN..header.size_bytes];
                        read += sluice::log::batch::records(section, header.record_count)
                            .expect("records")
                            .len();
                        offset = header.next_offset();
                        walk = &walk[header.size_bytes..];
                    }
                }
                read
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_clean);
criterion_main!(benches);
