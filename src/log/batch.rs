//! RecordBatch v2 headers: validation and the two in-place rewrites the broker
//! makes (base offset and partition leader epoch).
//!
//! The log stores batches exactly as producers encoded them. The broker never
//! decodes records on the hot path; it checks the fixed 61-byte header, the
//! CRC32C over everything after the CRC field, and, for uncompressed batches,
//! that the record framing matches the record count.

use bytes::{Buf, BufMut};

/// Bytes before the batch-length field counts: base offset (8) + length (4).
pub const LOG_OVERHEAD: usize = 12;
/// The fixed header of a v2 batch.
pub const HEADER_LEN: usize = 61;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Why a batch was rejected. All of these map to Kafka's CORRUPT_MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch shorter than its {HEADER_LEN}-byte header: {0} bytes")]
    TooShort(usize),
    #[error("batch length field {length} does not match the {available} bytes available")]
    LengthMismatch { length: i64, available: usize },
    #[error("unsupported magic {0}; only RecordBatch v2 is accepted")]
    Magic(i8),
    #[error("CRC32C mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record count {record_count} does not match last offset delta {last_offset_delta}")]
    CountMismatch {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("record framing is malformed: {0}")]
    Records(&'static str),
}

/// A read-only view of a validated batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size in bytes, including the 12-byte log overhead.
    pub size_bytes: usize,
    pub partition_leader_epoch: i32,
    /// CRC32C of everything from the attributes on, as stored.
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// The sequence number of the last record, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    (&bytes[at..at + 8]).get_i64()
}
fn read_i32(bytes: &[u8], at: usize) -> i32 {
    (&bytes[at..at + 4]).get_i32()
}
fn read_i16(bytes: &[u8], at: usize) -> i16 {
    (&bytes[at..at + 2]).get_i16()
}

/// Reads the base offset and total size of the batch at the start of `bytes`,
/// if its first 12 bytes are there. Used to walk a log without validating.
pub fn peek_offset_and_size(bytes: &[u8]) -> Option<(i64, usize)> {
    if bytes.len() < LOG_OVERHEAD {
        return None;
    }
    let length = read_i32(bytes, BATCH_LENGTH);
    if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    Some((read_i64(bytes, BASE_OFFSET), LOG_OVERHEAD + length as usize))
}

/// Parses the header of the batch at the start of `bytes`, which must hold the
/// whole batch, without checking the CRC.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header_prefix(bytes)?;
    if header.size_bytes > bytes.len() {
        return Err(BatchError::LengthMismatch {
            length: (header.size_bytes - LOG_OVERHEAD) as i64,
            available: bytes.len(),
        });
    }
    Ok(header)
}

/// Parses a batch header from its first [`HEADER_LEN`] bytes alone.
pub fn parse_header_prefix(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_LEN {
        return Err(BatchError::TooShort(bytes.len()));
    }
    let length = i64::from(read_i32(bytes, BATCH_LENGTH));
    let size_bytes = length + LOG_OVERHEAD as i64;
    if length < (HEADER_LEN - LOG_OVERHEAD) as i64 {
        return Err(BatchError::LengthMismatch {
            length,
            available: bytes.len(),
        });
    }
    let magic = bytes[MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    Ok(BatchHeader {
        base_offset: read_i64(bytes, BASE_OFFSET),
        size_bytes: size_bytes as usize,
        partition_leader_epoch: read_i32(bytes, LEADER_EPOCH),
        crc: (&bytes[CRC..CRC + 4]).get_u32(),
        attributes: read_i16(bytes, ATTRIBUTES),
        last_offset_delta: read_i32(bytes, LAST_OFFSET_DELTA),
        base_timestamp: read_i64(bytes, BASE_TIMESTAMP),
        max_timestamp: read_i64(bytes, MAX_TIMESTAMP),
        producer_id: read_i64(bytes, PRODUCER_ID),
        producer_epoch: read_i16(bytes, PRODUCER_EPOCH),
        base_sequence: read_i32(bytes, BASE_SEQUENCE),
        record_count: read_i32(bytes, RECORD_COUNT),
    })
}

/// Fully validates the batch at the start of `bytes` as a producer must
/// write it: header, CRC32C, one record per offset of its range and, for
/// uncompressed batches, the record framing.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(bytes, true)
}

/// Validates a batch as a log may store it: as [`validate`], except that a
/// cleaned batch may hold fewer records than its offset range (compaction
/// keeps each batch's base offset and last offset delta, and may keep a
/// batch with no records at all). Followers and recovery use this.
pub fn validate_stored(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(bytes, false)
}

fn validate_with(bytes: &[u8], dense: bool) -> Result<BatchHeader, BatchError> {
    let header = parse_header(bytes)?;
    let batch = &bytes[..header.size_bytes];
    let stored = (&batch[CRC..CRC + 4]).get_u32();
    let computed = crc32c::crc32c(&batch[ATTRIBUTES..]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    if header.record_count < 0 || header.last_offset_delta < 0 {
        return Err(BatchError::CountMismatch {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    // Producers always write dense batches; the log cleaner is the only
    // thing that leaves gaps, and it keeps lastOffsetDelta.
    let count_fits = if dense {
        i64::from(header.record_count) == i64::from(header.last_offset_delta) + 1
    } else {
        i64::from(header.record_count) <= i64::from(header.last_offset_delta) + 1
    };
    if !count_fits {
        return Err(BatchError::CountMismatch {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.compression() == 0 {
        check_record_framing(&batch[HEADER_LEN..], header.record_count)?;
    }
    Ok(header)
}

/// One record of a batch's (uncompressed) records section, as the log
/// cleaner needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The whole record, its length prefix included, to copy as it is.
    pub bytes: &'a [u8],
    pub offset_delta: i64,
    /// `None` for a record without a key.
    pub key: Option<&'a [u8]>,
    /// A record with a null value: a delete marker for its key.
    pub tombstone: bool,
}

/// Splits an uncompressed records section into its `record_count` records.
pub fn records(mut section: &[u8], record_count: i32) -> Result<Vec<RecordView<'_>>, BatchError> {
    let bad = BatchError::Records;
    let mut views = Vec::with_capacity(record_count.clamp(0, 4096) as usize);
    for _ in 0..record_count {
        let whole = section;
        let length = read_varint(&mut section).ok_or(bad("bad record length"))?;
        let prefix = whole.len() - section.len();
        let length = usize::try_from(length).map_err(|_| bad("negative record length"))?;
        if length > section.len() {
            return Err(bad("record overruns the batch"));
        }
        let (mut body, rest) = section.split_at(length);
        section = rest;
        let (_attributes, after) = body.split_first().ok_or(bad("record without attributes"))?;
        body = after;
        read_varint(&mut body).ok_or(bad("bad timestamp delta"))?;
        let offset_delta = read_varint(&mut body).ok_or(bad("bad offset delta"))?;
        let key_length = read_varint(&mut body).ok_or(bad("bad key length"))?;
        let key = if key_length < 0 {
            None
        } else {
            let key_length = key_length as usize;
            if key_length > body.len() {
                return Err(bad("key overruns the record"));
            }
            let (key, after) = body.split_at(key_length);
            body = after;
            Some(key)
        };
        let value_length = read_varint(&mut body).ok_or(bad("bad value length"))?;
        views.push(RecordView {
            bytes: &whole[..prefix + length],
            offset_delta,
            key,
            tombstone: value_length < 0,
        });
    }
    if section.is_empty() {
        Ok(views)
    } else {
        Err(bad("bytes after the last record"))
    }
}

/// Builds a batch from `header_bytes` (a stored batch's 61-byte header)
/// with `records` (whole, length-prefixed, uncompressed records) in place
/// of its own: base offset, last offset delta, timestamps and producer
/// fields stay, the compression codec becomes none, and the length, count
/// and CRC are recomputed. The log cleaner writes what it keeps this way.
pub fn with_records(header_bytes: &[u8], records: &[&[u8]]) -> bytes::BytesMut {
    let records_len: usize = records.iter().map(|record| record.len()).sum();
    let mut batch = bytes::BytesMut::with_capacity(HEADER_LEN + records_len);
    batch.extend_from_slice(&header_bytes[..HEADER_LEN]);
    for record in records {
        batch.extend_from_slice(record);
    }
    let length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + records_len)
        .expect("a cleaned batch holds at most one stored batch's records");
    (&mut batch[BATCH_LENGTH..BATCH_LENGTH + 4]).put_i32(length);
    let attributes = (&batch[ATTRIBUTES..ATTRIBUTES + 2]).get_i16() & !COMPRESSION_MASK;
    (&mut batch[ATTRIBUTES..ATTRIBUTES + 2]).put_i16(attributes);
    let count = i32::try_from(records.len()).expect("record count fits");
    (&mut batch[RECORD_COUNT..RECORD_COUNT + 4]).put_i32(count);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    (&mut batch[CRC..CRC + 4]).put_u32(crc);
    batch
}

/// Walks the length-prefixed records of an uncompressed batch.
fn check_record_framing(records: &[u8], record_count: i32) -> Result<(), BatchError> {
    let mut position = 0usize;
    for _ in 0..record_count {
        // Record lengths under 64 bytes take one varint byte and under 8 KiB
        // two; read those inline, as this walk runs once per appended record.
        let length = match records.get(position..position + 2) {
            Some(&[first, _]) if first & 0x80 == 0 => {
                position += 1;
                zigzag(u64::from(first))
            }
            Some(&[first, second]) if second & 0x80 == 0 => {
                position += 2;
                zigzag(u64::from(first & 0x7f) | (u64::from(second) << 7))
            }
            _ => {
                let mut rest = &records[position..];
                let value =
                    read_varint(&mut rest).ok_or(BatchError::Records("bad record length"))?;
                position = records.len() - rest.len();
                value
            }
        };
        if length < 0 || length as usize > records.len() - position {
            return Err(BatchError::Records("record overruns the batch"));
        }
        position += length as usize;
    }
    if position == records.len() {
        Ok(())
    } else {
        Err(BatchError::Records("bytes after the last record"))
    }
}

fn zigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Zig-zag varint, as records use.
fn read_varint(bytes: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(zigzag(value));
        }
    }
    None
}

/// Rewrites the base offset and partition leader epoch in place. Neither is
/// covered by the CRC, so the batch stays valid.
pub fn assign_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(
        batch.len() >= HEADER_LEN,
        "assigning offsets to a short batch"
    );
    (&mut batch[BASE_OFFSET..BASE_OFFSET + 8]).put_i64(base_offset);
    (&mut batch[LEADER_EPOCH..LEADER_EPOCH + 4]).put_i32(leader_epoch);
}

/// Sets the max timestamp and the LogAppendTime flag (`message.timestamp.type`
/// = LogAppendTime). These are covered by the CRC, so it is recomputed.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    assert!(
        batch.len() >= HEADER_LEN,
        "setting the time of a short batch"
    );
    let attributes = read_i16(batch, ATTRIBUTES) | 0x08;
    (&mut batch[ATTRIBUTES..ATTRIBUTES + 2]).put_i16(attributes);
    (&mut batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8]).put_i64(timestamp_ms);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    (&mut batch[CRC..CRC + 4]).put_u32(crc);
}

/// Splits a produce payload (a concatenation of batches) into validated batches.
pub fn split_batches(bytes: &[u8]) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = validate(&bytes[position..])?;
        batches.push((position, header));
        position += header.size_bytes;
    }
    Ok(batches)
}

/// A record to encode: key and value, either absent (a `None` value is a
/// tombstone).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes one uncompressed v2 batch of `(key, value)` records, all stamped
/// `timestamp_ms`; a `None` value is a tombstone. `producer_id` -1 makes a non-idempotent batch. Used by the
/// broker's internal offsets log, tests, benchmarks and simulated workloads.
pub fn encode_uncompressed(
    entries: &[KeyValue<'_>],
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> bytes::BytesMut {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(index, (key, value))| Record {
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
            key: key.map(bytes::Bytes::copy_from_slice),
            value: value.map(bytes::Bytes::copy_from_slice),
            headers: indexmap::IndexMap::new(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encoding a batch into memory cannot fail");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing::encode_batch;
    use proptest::prelude::*;

    /// The framing walk written plainly, one varint byte at a time: the
    /// inline fast paths must agree with it on every input.
    fn framing_reference(mut records: &[u8], record_count: i32) -> Result<(), BatchError> {
        for _ in 0..record_count {
            let length =
                read_varint(&mut records).ok_or(BatchError::Records("bad record length"))?;
            if length < 0 || length as usize > records.len() {
                return Err(BatchError::Records("record overruns the batch"));
            }
            records = &records[length as usize..];
        }
        if records.is_empty() {
            Ok(())
        } else {
            Err(BatchError::Records("bytes after the last record"))
        }
    }

    proptest! {
        #[test]
        fn the_framing_walk_agrees_with_the_plain_one(
            records in proptest::collection::vec(any::<u8>(), 0..600),
            record_count in 0i32..40,
        ) {
            prop_assert_eq!(
                format!("{:?}", check_record_framing(&records, record_count)),
                format!("{:?}", framing_reference(&records, record_count))
            );
        }

        #[test]
        fn well_framed_records_of_any_length_pass(lengths in proptest::collection::vec(0usize..20_000, 0..6)) {
            let mut records = Vec::new();
            for length in &lengths {
                let mut zigzagged = (*length as u64) << 1;
                loop {
                    let byte = (zigzagged & 0x7f) as u8;
                    zigzagged >>= 7;
                    if zigzagged == 0 {
                        records.push(byte);
                        break;
                    }
                    records.push(byte | 0x80);
                }
                records.extend(std::iter::repeat_n(0u8, *length));
            }
            prop_assert!(check_record_framing(&records, lengths.len() as i32).is_ok());
        }
    }

    #[test]
    fn a_valid_batch_validates_and_survives_offset_assignment() {
        let mut batch = encode_batch(&[b"a".as_slice(), b"bb", b"ccc"], 1_000, -1, -1, -1);
        let header = validate(&batch).expect("valid");
        assert_eq!(header.record_count, 3);
        assert_eq!(header.size_bytes, batch.len());
        assign_offset_and_epoch(&mut batch, 42, 7);
        let header = validate(&batch).expect("still valid");
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.last_offset(), 44);
        assert_eq!(header.partition_leader_epoch, 7);
    }

    #[test]
    fn every_single_byte_flip_after_the_crc_field_is_caught() {
        let batch = encode_batch(&[b"hello".as_slice(), b"world"], 5, -1, -1, -1);
        for at in ATTRIBUTES..batch.len() {
            let mut corrupt = batch.clone();
            corrupt[at] ^= 0x01;
            assert!(
                validate(&corrupt).is_err(),
                "flip at byte {at} was accepted"
            );
        }
    }

    #[test]
    fn truncated_batches_are_rejected() {
        let batch = encode_batch(&[b"hello".as_slice()], 5, -1, -1, -1);
        for len in 0..batch.len() {
            assert!(
                validate(&batch[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn log_append_time_keeps_the_batch_valid() {
        let mut batch = encode_batch(&[b"x".as_slice()], 5, -1, -1, -1);
        set_log_append_time(&mut batch, 99);
        let header = validate(&batch).expect("valid");
        assert_eq!(header.max_timestamp, 99);
    }
}
