//! Append throughput of the partition log, against a plain `write` of the same
//! bytes to a file (the machine's limit), through the page cache and with an
//! fsync per batch.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::log::{LogConfig, PartitionLog};
use sluice::storage::fs::FsStorage;

fn open_log(dir: &std::path::Path, runtime: &tokio::runtime::Runtime) -> PartitionLog {
    let config = LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    };
    runtime
        .block_on(PartitionLog::open(Arc::new(FsStorage), dir, config, 0))
        .expect("open log")
}

fn bench_append(c: &mut Criterion) {
    let runtime = common::runtime();
    for (unit, name) in [(true, "append"), (false, "append_records")] {
        let mut group = c.benchmark_group(name);
        group.sample_size(20);
        group.measurement_time(std::time::Duration::from_secs(3));
        for record_bytes in common::RECORD_SIZES {
            let (batch, count) = common::batch(record_bytes);
            group.throughput(if unit {
                Throughput::Bytes(batch.len() as u64)
            } else {
                Throughput::Elements(count as u64)
            });
            let scratch = tempfile::tempdir().expect("tempdir");

            let raw_path = scratch.path().join("raw.log");
            let mut raw = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&raw_path)
                .expect("raw file");
            group.bench_function(BenchmarkId::new("raw_write", record_bytes), |b| {
                b.iter(|| raw.write_all(&batch).expect("write"))
            });
            let mut log = open_log(&scratch.path().join("page-cache-0"), &runtime);
            group.bench_function(BenchmarkId::new("log_page_cache", record_bytes), |b| {
                b.iter(|| {
                    runtime
                        .block_on(log.append(BytesMut::from(&batch[..]), 0, 0))
                        .expect("append")
                })
            });
            if unit {
                let mut raw_synced = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(scratch.path().join("raw-fsync.log"))
                    .expect("raw file");
                group.bench_function(BenchmarkId::new("raw_write_fsync", record_bytes), |b| {
                    b.iter(|| {
                        raw_synced.write_all(&batch).expect("write");
                        raw_synced.sync_data().expect("fsync");
                    })
                });
                let mut log = open_log(&scratch.path().join("fsync-0"), &runtime);
                group.bench_function(BenchmarkId::new("log_fsync", record_bytes), |b| {
                    b.iter(|| {
                        runtime.block_on(async {
                            log.append(BytesMut::from(&batch[..]), 0, 0)
                                .await
                                .expect("append");
                            log.flush().await.expect("flush");
                        })
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
