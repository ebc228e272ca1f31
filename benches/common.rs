//! Shared setup for the benchmarks: batches of a given record size, close to
//! 16 KiB each, as a producer with `batch.size=16384` would send.

#![allow(dead_code)]

use sluice::log::testing::encode_batch;

pub const BATCH_BYTES: usize = 16 * 1024;
pub const RECORD_SIZES: [usize; 2] = [100, 1024];

/// One batch of `record_bytes`-sized records, about [`BATCH_BYTES`] long.
/// Returns the batch and its record count.
pub fn batch(record_bytes: usize) -> (Vec<u8>, usize) {
    // Record framing costs about 10 bytes per record and the header 61.
    let count = ((BATCH_BYTES - 61) / (record_bytes + 10)).max(1);
    let value = vec![0xabu8; record_bytes];
    let values: Vec<&[u8]> = (0..count).map(|_| value.as_slice()).collect();
    (encode_batch(&values, 1_700_000_000_000, -1, -1, -1), count)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
