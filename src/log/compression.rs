//! Decompression of stored batches' records, bounded: the clients read
//! fetched batches with it, and the log cleaner reads the compressed
//! batches of a compacted log. gzip and snappy go through `kafka-protocol`;
//! lz4 and zstd through pure-Rust decoders (kafka-protocol's own build C
//! libraries).

use bytes::{Buf, Bytes};
use kafka_protocol::records::Compression;

/// What one compressed batch may decompress to. Far above Kafka's default
/// `max.message.bytes` (1 MiB), and a bound, so a hostile batch cannot take
/// a reader's memory.
pub const DECOMPRESSED_BATCH_BYTES_MAX: u64 = 64 << 20;

/// Decompresses one batch's records. gzip and snappy go through
/// `kafka-protocol`; lz4 and zstd through pure-Rust decoders, bounded by
/// [`DECOMPRESSED_BATCH_BYTES_MAX`].
pub fn decompress(data: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    use kafka_protocol::compression::{Decompressor, Gzip, Snappy};
    use std::io::Read;
    let bounded = |mut reader: Box<dyn Read + '_>| -> anyhow::Result<Bytes> {
        let mut out = Vec::new();
        (&mut reader)
            .take(DECOMPRESSED_BATCH_BYTES_MAX + 1)
            .read_to_end(&mut out)?;
        anyhow::ensure!(
            out.len() as u64 <= DECOMPRESSED_BATCH_BYTES_MAX,
            "decompresses to more than {DECOMPRESSED_BATCH_BYTES_MAX} bytes"
        );
        Ok(Bytes::from(out))
    };
    match compression {
        Compression::None => Ok(data.split_off(0)),
        Compression::Gzip => Gzip::decompress(data, |buf| Ok(buf.split_off(0))),
        Compression::Snappy => Snappy::decompress(data, |buf| Ok(buf.split_off(0))),
        Compression::Lz4 => {
            let input = data.split_off(0);
            bounded(Box::new(lz4_flex::frame::FrameDecoder::new(input.reader())))
        }
        Compression::Zstd => {
            let input = data.split_off(0);
            let decoder = ruzstd::decoding::StreamingDecoder::new(input.reader())
                .map_err(|error| anyhow::anyhow!("zstd: {error}"))?;
            bounded(Box::new(decoder))
        }
    }
}
