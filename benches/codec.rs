//! Encoding and decoding Produce and Fetch messages with kafka-protocol, at
//! the sizes the other benchmarks use.

mod common;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Produce uses v9 and Fetch v12, the newest versions the broker speaks with
/// flexible encoding.
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

fn bench_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.sample_size(30);
    group.measurement_time(std::time::Duration::from_secs(2));
    for record_bytes in common::RECORD_SIZES {
        let (batch, _) = common::batch(record_bytes);
        let topic = TopicName(StrBytes::from_static_str("bench"));
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch.clone())))])]);
        let mut encoded = BytesMut::new();
        produce
            .encode(&mut encoded, PRODUCE_VERSION)
            .expect("encode");
        let encoded = encoded.freeze();
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::new("produce_encode", record_bytes), |b| {
            b.iter(|| {
                let mut buf = BytesMut::with_capacity(encoded.len());
                produce.encode(&mut buf, PRODUCE_VERSION).expect("encode");
                buf
            })
        });
        group.bench_function(BenchmarkId::new("produce_decode", record_bytes), |b| {
            b.iter(|| {
                ProduceRequest::decode(&mut encoded.clone(), PRODUCE_VERSION).expect("decode")
            })
        });

        let records: Vec<u8> = batch
            .iter()
            .copied()
            .cycle()
            .take(batch.len() * 64)
            .collect();
        let fetch =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(topic)
                .with_partitions(vec![
                    PartitionData::default().with_records(Some(Bytes::from(records)))
                ])]);
        let mut encoded = BytesMut::new();
        fetch.encode(&mut encoded, FETCH_VERSION).expect("encode");
        let encoded = encoded.freeze();
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(
            BenchmarkId::new("fetch_response_encode", record_bytes),
            |b| {
                b.iter(|| {
                    let mut buf = BytesMut::with_capacity(encoded.len());
                    fetch.encode(&mut buf, FETCH_VERSION).expect("encode");
                    buf
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("fetch_response_decode", record_bytes),
            |b| {
                b.iter(|| {
                    FetchResponse::decode(&mut encoded.clone(), FETCH_VERSION).expect("decode")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
