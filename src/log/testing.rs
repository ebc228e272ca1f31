//! Helpers that build real RecordBatch v2 bytes, for tests, benchmarks and the
//! simulation's workloads.

/// One uncompressed batch holding `values` (no keys), all stamped `timestamp_ms`.
/// Pass `producer_id` -1 for a non-idempotent batch.
pub fn encode_batch(
    values: &[&[u8]],
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let entries: Vec<crate::log::batch::KeyValue<'_>> =
        values.iter().map(|value| (None, Some(*value))).collect();
    super::batch::encode_uncompressed(
        &entries,
        timestamp_ms,
        producer_id,
        producer_epoch,
        base_sequence,
    )
    .to_vec()
}
