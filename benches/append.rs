//! Append throughput of the partition log, against a plain `write` of the same
//! bytes to a file (the machine's limit), through the page cache and with an
//! fsync per batch.
//!
//! Every case writes into a bounded file: once it holds [`FILE_BYTES_MAX`], it
//! is truncated (raw cases) or the log is reopened in a fresh directory (log
//! cases), outside the timed region. Unbounded files made the numbers depend on
//! how much dirty data earlier cases had left for the kernel to write back, so
//! fsync rows moved by a quarter between runs of the same build.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::log::{LogConfig, PartitionLog};
use sluice::storage::fs::FsStorage;

/// The most one case keeps on disk before starting over: large enough that the
/// reset is rare (one per 4,096 batches), small enough to leave little dirty
/// data behind for the next case.
const FILE_BYTES_MAX: u64 = 64 << 20;

/// A raw file, opened for append, that is emptied when it reaches
/// [`FILE_BYTES_MAX`].
struct RawFile {
    file: File,
    bytes: u64,
}

impl RawFile {
    fn create(path: &Path) -> RawFile {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("raw file");
        RawFile { file, bytes: 0 }
    }

    fn reset_if_full(&mut self) {
        if self.bytes >= FILE_BYTES_MAX {
            // Appends go to the new end, so writing resumes at offset zero.
            self.file.set_len(0).expect("truncate");
            self.file.sync_all().expect("sync truncate");
            self.bytes = 0;
        }
    }
}

/// A partition log that is replaced by an empty one in a fresh directory when
/// it reaches [`FILE_BYTES_MAX`].
struct BoundedLog {
    root: PathBuf,
    generation: u32,
    log: PartitionLog,
}

impl BoundedLog {
    fn open(root: &Path, runtime: &tokio::runtime::Runtime) -> BoundedLog {
        BoundedLog {
            root: root.to_path_buf(),
            generation: 0,
            log: open_log(&root.join("bench-0"), runtime),
        }
    }

    fn reset_if_full(&mut self, runtime: &tokio::runtime::Runtime) {
        if self.log.size_bytes() >= FILE_BYTES_MAX {
            let old = self.root.join(format!("bench-{}", self.generation));
            self.generation += 1;
            self.log = open_log(
                &self.root.join(format!("bench-{}", self.generation)),
                runtime,
            );
            std::fs::remove_dir_all(old).expect("remove old log");
        }
    }
}

fn open_log(dir: &Path, runtime: &tokio::runtime::Runtime) -> PartitionLog {
    let config = LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    };
    runtime
        .block_on(PartitionLog::open(Arc::new(FsStorage), dir, config, 0))
        .expect("open log")
}

/// Times `iterations` calls of `step` on `state`, calling `reset` before each
/// one outside the timed region.
fn timed<S>(
    iterations: u64,
    state: &mut S,
    mut reset: impl FnMut(&mut S),
    mut step: impl FnMut(&mut S),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iterations {
        reset(state);
        // Benchmarks measure the real machine, so they read the real clock.
        #[allow(clippy::disallowed_methods)]
        let start = std::time::Instant::now();
        step(state);
        elapsed += start.elapsed();
    }
    elapsed
}

fn bench_append(c: &mut Criterion) {
    let runtime = common::runtime();
    for (unit, name) in [(true, "append"), (false, "append_records")] {
        let mut group = c.benchmark_group(name);
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(3));
        for record_bytes in common::RECORD_SIZES {
            let (batch, count) = common::batch(record_bytes);
            group.throughput(if unit {
                Throughput::Bytes(batch.len() as u64)
            } else {
                Throughput::Elements(count as u64)
            });
            let scratch = tempfile::tempdir().expect("tempdir");
            sync_machine();
            let mut raw = RawFile::create(&scratch.path().join("raw.log"));
            group.bench_function(BenchmarkId::new("raw_write", record_bytes), |b| {
                b.iter_custom(|iterations| {
                    timed(iterations, &mut raw, RawFile::reset_if_full, |raw| {
                        raw.file.write_all(&batch).expect("write");
                        raw.bytes += batch.len() as u64;
                    })
                })
            });
            let mut log = BoundedLog::open(&scratch.path().join("page-cache"), &runtime);
            group.bench_function(BenchmarkId::new("log_page_cache", record_bytes), |b| {
                b.iter_custom(|iterations| {
                    timed(
                        iterations,
                        &mut log,
                        |log| log.reset_if_full(&runtime),
                        |log| {
                            runtime
                                .block_on(log.log.append(BytesMut::from(&batch[..]), 0, 0))
                                .expect("append");
                        },
                    )
                })
            });
            if unit {
                // What the page-cache cases left dirty would otherwise be
                // written back during the fsync cases and slow them.
                drop(raw);
                drop(log);
                sync_machine();
                let mut raw = RawFile::create(&scratch.path().join("raw-fsync.log"));
                group.bench_function(BenchmarkId::new("raw_write_fsync", record_bytes), |b| {
                    b.iter_custom(|iterations| {
                        timed(iterations, &mut raw, RawFile::reset_if_full, |raw| {
                            raw.file.write_all(&batch).expect("write");
                            raw.file.sync_data().expect("fsync");
                            raw.bytes += batch.len() as u64;
                        })
                    })
                });
                let mut log = BoundedLog::open(&scratch.path().join("fsync"), &runtime);
                group.bench_function(BenchmarkId::new("log_fsync", record_bytes), |b| {
                    b.iter_custom(|iterations| {
                        timed(
                            iterations,
                            &mut log,
                            |log| log.reset_if_full(&runtime),
                            |log| {
                                runtime.block_on(async {
                                    log.log
                                        .append(BytesMut::from(&batch[..]), 0, 0)
                                        .await
                                        .expect("append");
                                    log.log.flush().await.expect("flush");
                                })
                            },
                        )
                    })
                });
            }
        }
        group.finish();
    }
}

/// Flushes every dirty page on the machine to disk, so one case's writeback
/// does not land in the next case's timings.
fn sync_machine() {
    std::process::Command::new("sync")
        .status()
        .expect("run sync");
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
