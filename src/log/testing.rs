//! Helpers that build real RecordBatch v2 bytes, for tests, benchmarks and the
//! simulation's workloads.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One uncompressed batch holding `values` (no keys), all stamped `timestamp_ms`.
/// Pass `producer_id` -1 for a non-idempotent batch.
pub fn encode_batch(
    values: &[&[u8]],
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(index, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // The encoder starts a new batch whenever `offset - sequence`
            // changes, so even a non-idempotent batch (base sequence -1)
            // numbers its records on from the base.
            sequence: base_sequence.wrapping_add(index as i32),
            timestamp: timestamp_ms,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encoding a batch into memory cannot fail");
    buf.to_vec()
}
