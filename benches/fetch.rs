//! Fetch throughput from a warm log (in the page cache), against a raw
//! `pread` of the same byte ranges.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::log::{LogConfig, PartitionLog};
use sluice::storage::fs::FsStorage;

/// How much each fetch asks for: a consumer's default `max.partition.fetch.bytes`.
const FETCH_MAX_BYTES: usize = 1 << 20;
/// The warm log's size: large enough that fetches walk many index entries.
const LOG_BYTES: usize = 64 << 20;

fn bench_fetch(c: &mut Criterion) {
    let runtime = common::runtime();
    let mut group = c.benchmark_group("fetch");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(3));
    for record_bytes in common::RECORD_SIZES {
        let (batch, count) = common::batch(record_bytes);
        let scratch = tempfile::tempdir().expect("tempdir");
        let dir = scratch.path().join("warm-0");
        let mut log = runtime
            .block_on(PartitionLog::open(
                Arc::new(FsStorage),
                &dir,
                LogConfig::default(),
                0,
            ))
            .expect("open log");
        let batches = LOG_BYTES / batch.len();
        for _ in 0..batches {
            runtime
                .block_on(log.append(BytesMut::from(&batch[..]), 0, 0))
                .expect("append");
        }
        let end = log.log_end_offset();
        let per_fetch = (FETCH_MAX_BYTES / batch.len()) * count;
        group.throughput(Throughput::Bytes(
            ((FETCH_MAX_BYTES / batch.len()) * batch.len()) as u64,
        ));

        let mut offset = 0i64;
        group.bench_function(BenchmarkId::new("log_fetch", record_bytes), |b| {
            b.iter(|| {
                let bytes = runtime
                    .block_on(log.read(offset, FETCH_MAX_BYTES, end))
                    .expect("read");
                offset = (offset + per_fetch as i64) % (end - per_fetch as i64);
                bytes
            })
        });
        let file = std::fs::File::open(dir.join("00000000000000000000.log")).expect("segment");
        let file_len = file.metadata().expect("metadata").len();
        let chunk = (FETCH_MAX_BYTES / batch.len()) * batch.len();
        let mut position = 0u64;
        // The same work the log's read does at the bottom: allocate, pread.
        group.bench_function(BenchmarkId::new("raw_pread", record_bytes), |b| {
            b.iter(|| {
                let mut buffer = vec![0u8; chunk];
                file.read_exact_at(&mut buffer, position).expect("pread");
                position = (position + chunk as u64) % (file_len - chunk as u64);
                bytes::Bytes::from(buffer)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_fetch);
criterion_main!(benches);
