//! Record batches as the clients write and read them.
//!
//! Encoding and decoding are `kafka-protocol`'s `RecordBatchEncoder` and
//! `RecordBatchDecoder`. This module adds what they leave to the caller:
//! stamping producer id, epoch and sequence numbers (the encoder derives the
//! batch's base sequence from the records), and splitting a fetched byte range
//! into whole batches, since a fetch may end with a truncated batch and the
//! decoder would read its counts from the network without a sanity check.

use bytes::{Buf, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use super::Header;

/// Bytes of the v2 batch header, from the base offset to the record count.
pub(crate) const BATCH_HEADER_BYTES: usize = 61;

/// Base offset (8) and batch length (4): enough to find the batch's end.
const BATCH_LOG_OVERHEAD: usize = 12;

/// Records in one compressed batch. The decoder reserves room for the
/// record count before reading records; an uncompressed batch's count is
/// bounded by its size, a compressed one's by this. A full 1 MiB batch of
/// the smallest (7-byte) records holds about 150 000.
const COMPRESSED_RECORDS_PER_BATCH_MAX: usize = 1 << 20;

/// Why fetched bytes could not be turned into records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchDecodeError {
    /// The bytes are not a valid batch: a CRC mismatch, broken framing, a
    /// compressed payload that does not decompress.
    Corrupt(String),
    /// A valid batch this client cannot read (an unknown codec or record
    /// format); the data may be fine.
    Unsupported(String),
}

/// One record as the producer hands it to the encoder.
#[derive(Debug, Clone)]
pub(crate) struct OutgoingRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp: i64,
}

impl OutgoingRecord {
    /// An upper bound on the encoded size, for `batch.size` and
    /// `buffer.memory` accounting: the record plus its varint overheads.
    pub fn size_estimate(&self) -> usize {
        const VARINT_MAX: usize = 5;
        const VARLONG_MAX: usize = 10;
        let mut size = VARINT_MAX + 1 + VARLONG_MAX + VARINT_MAX; // length, attributes, timestamp delta, offset delta
        size += VARINT_MAX + self.key.as_ref().map_or(0, Bytes::len);
        size += VARINT_MAX + self.value.as_ref().map_or(0, Bytes::len);
        size += VARINT_MAX;
        for header in &self.headers {
            size += 2 * VARINT_MAX + header.key.len() + header.value.as_ref().map_or(0, Bytes::len);
        }
        size
    }
}

/// Producer identity for an idempotent batch; `None` fields mean "not idempotent".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Encodes `records` as one v2 batch, uncompressed, base offset 0.
pub(crate) fn encode_batch(
    records: &[OutgoingRecord],
    stamp: Option<ProducerStamp>,
) -> anyhow::Result<Bytes> {
    anyhow::ensure!(!records.is_empty(), "a batch holds at least one record");
    let (producer_id, producer_epoch, base_sequence) = match stamp {
        Some(s) => (s.producer_id, s.producer_epoch, s.base_sequence),
        // Non-idempotent batches carry base sequence -1; the encoder takes it
        // from the first record and requires offset - sequence to be constant.
        None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, -1),
    };
    let mut encoded = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let index = i32::try_from(index)?;
        let mut headers = IndexMap::new();
        for header in &record.headers {
            // The crate models headers as a map; a repeated key keeps its last value.
            headers.insert(
                StrBytes::from_string(header.key.clone()),
                header.value.clone(),
            );
        }
        encoded.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(index),
            sequence: base_sequence.wrapping_add(index),
            timestamp: record.timestamp,
            key: record.key.clone(),
            value: record.value.clone(),
            headers,
        });
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        encoded.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}

/// A decoded batch from a fetch.
#[derive(Debug, Clone)]
pub(crate) struct FetchedBatch {
    /// base offset + last offset delta: the position after this batch is
    /// `last_offset + 1` even when compaction removed its last records.
    pub last_offset: i64,
    pub control: bool,
    pub records: Vec<Record>,
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    (&bytes[at..at + 2]).get_i16()
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    (&bytes[at..at + 4]).get_i32()
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    (&bytes[at..at + 8]).get_i64()
}

/// Splits and decodes the record bytes of one partition of a fetch response.
/// A truncated last batch is dropped (the next fetch returns it whole).
pub(crate) fn decode_fetched(mut bytes: Bytes) -> Result<Vec<FetchedBatch>, FetchDecodeError> {
    use FetchDecodeError::{Corrupt, Unsupported};
    let mut batches = Vec::new();
    while bytes.len() >= BATCH_LOG_OVERHEAD {
        let batch_length = read_i32(&bytes, 8);
        let batch_length = usize::try_from(batch_length)
            .map_err(|_| Corrupt(format!("negative batch length {batch_length}")))?;
        let total = BATCH_LOG_OVERHEAD
            .checked_add(batch_length)
            .ok_or_else(|| Corrupt("batch length overflow".to_string()))?;
        if bytes.len() < total {
            break;
        }
        if total < BATCH_HEADER_BYTES {
            return Err(Corrupt(format!(
                "batch of {total} bytes is shorter than its header"
            )));
        }
        let magic = bytes[16];
        if magic != 2 {
            return Err(Unsupported(format!(
                "record format v{magic} (this client reads v2 batches)"
            )));
        }
        let base_offset = read_i64(&bytes, 0);
        let attributes = read_i16(&bytes, 21);
        let last_offset_delta = read_i32(&bytes, 23);
        let record_count = read_i32(&bytes, 57);
        let record_count = usize::try_from(record_count)
            .map_err(|_| Corrupt(format!("negative record count {record_count}")))?;
        let codec = attributes & 0x7;
        if codec > 4 {
            return Err(Unsupported(format!(
                "compression codec {codec} in the batch at offset {base_offset} (known: \
                 none, gzip, snappy, lz4, zstd)"
            )));
        }
        let compressed = codec != 0;
        let count_max = if compressed {
            COMPRESSED_RECORDS_PER_BATCH_MAX
        } else {
            total - BATCH_HEADER_BYTES
        };
        if record_count > count_max {
            return Err(Corrupt(format!(
                "record count {record_count} cannot fit a batch of {total} bytes"
            )));
        }
        let mut batch = bytes.split_to(total);
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut batch,
            Some(crate::log::compression::decompress),
        )
        .map_err(|e| Corrupt(format!("record batch at offset {base_offset}: {e:#}")))?;
        batches.push(FetchedBatch {
            last_offset: base_offset.saturating_add(i64::from(last_offset_delta)),
            control: attributes & (1 << 5) != 0,
            records: set.records,
        });
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> OutgoingRecord {
        OutgoingRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![Header {
                key: "h".into(),
                value: Some(Bytes::from_static(b"v")),
            }],
            timestamp: 1_000,
        }
    }

    #[test]
    fn idempotent_batch_header_carries_producer_id_epoch_and_sequence() {
        let records = vec![record("a"), record("b"), record("c")];
        let stamp = ProducerStamp {
            producer_id: 4242,
            producer_epoch: 3,
            base_sequence: 17,
        };
        let bytes = encode_batch(&records, Some(stamp)).unwrap();
        assert_eq!(read_i64(&bytes, 43), 4242, "producer id");
        assert_eq!(read_i16(&bytes, 51), 3, "producer epoch");
        assert_eq!(read_i32(&bytes, 53), 17, "base sequence");
        assert_eq!(read_i32(&bytes, 57), 3, "record count");
        assert_eq!(read_i32(&bytes, 23), 2, "last offset delta");
        let batches = decode_fetched(bytes).unwrap();
        assert_eq!(batches.len(), 1);
        let decoded = &batches[0].records;
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[2].sequence, 19);
        assert_eq!(decoded[1].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(
            decoded[0].headers.get(&StrBytes::from_static_str("h")),
            Some(&Some(Bytes::from_static(b"v")))
        );
    }

    #[test]
    fn plain_batch_has_no_producer_and_one_batch() {
        let records = vec![record("a"), record("b")];
        let bytes = encode_batch(&records, None).unwrap();
        assert_eq!(read_i64(&bytes, 43), -1);
        assert_eq!(read_i32(&bytes, 53), -1);
        let batches = decode_fetched(bytes).unwrap();
        assert_eq!(batches.len(), 1, "the encoder must not split the batch");
        assert_eq!(batches[0].records.len(), 2);
    }

    #[test]
    fn truncated_tail_is_dropped_and_garbage_is_an_error() {
        let one = encode_batch(&[record("a")], None).unwrap();
        let mut two = BytesMut::new();
        two.extend_from_slice(&one);
        two.extend_from_slice(&one[..one.len() - 3]);
        let batches = decode_fetched(two.freeze()).unwrap();
        assert_eq!(batches.len(), 1);

        let mut bad = BytesMut::from(&one[..]);
        bad[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_fetched(bad.freeze()).is_err());
        let mut negative = BytesMut::from(&one[..]);
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decode_fetched(negative.freeze()).is_err());
    }

    /// A v2 batch of `values` whose records the given codec compressed, as
    /// another client (kcat, the Python clients) would send them.
    fn compressed_batch(values: &[&str], compression: Compression) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(offset, value)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: offset as i64,
                sequence: offset as i32,
                timestamp: 1_000,
                key: None,
                value: Some(Bytes::copy_from_slice(value.as_bytes())),
                headers: IndexMap::new(),
            })
            .collect();
        let compress = |plain: &mut BytesMut, out: &mut BytesMut, codec: Compression| {
            use std::io::Write;
            let packed = match codec {
                Compression::Lz4 => {
                    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                    encoder.write_all(plain)?;
                    encoder.finish()?
                }
                Compression::Zstd => ruzstd::encoding::compress_to_vec(
                    &plain[..],
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
                other => anyhow::bail!("not a codec of this test: {other:?}"),
            };
            out.extend_from_slice(&packed);
            Ok(())
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
            Some(compress),
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn lz4_and_zstd_batches_are_read() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let batches = decode_fetched(compressed_batch(&["a", "bb", "ccc"], codec))
                .unwrap_or_else(|error| panic!("{codec:?}: {error:?}"));
            let values: Vec<_> = batches[0]
                .records
                .iter()
                .map(|record| record.value.clone().unwrap())
                .collect();
            assert_eq!(values, vec!["a", "bb", "ccc"], "{codec:?}");
        }
    }

    #[test]
    fn an_unknown_codec_is_unsupported_not_corrupt_and_bad_payloads_are_corrupt() {
        let good = compressed_batch(&["a"], Compression::Lz4);
        let mut unknown = BytesMut::from(&good[..]);
        // Codec 6 is no codec Kafka defines. (The CRC covers the attributes;
        // the codec is checked before the CRC is.)
        unknown[22] = (unknown[22] & !0x7) | 6;
        assert!(matches!(
            decode_fetched(unknown.freeze()),
            Err(FetchDecodeError::Unsupported(message)) if message.contains("codec 6")
        ));
        let mut mangled = BytesMut::from(&good[..]);
        let last = mangled.len() - 1;
        mangled[last] ^= 0xff;
        assert!(matches!(
            decode_fetched(mangled.freeze()),
            Err(FetchDecodeError::Corrupt(_))
        ));
    }
}
