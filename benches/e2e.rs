//! End to end: the Rust producer sends records to a real broker (files on
//! disk, loopback TCP) and the Rust consumer reads them back, against the
//! same bytes pushed through a plain loopback socket pair (the machine's
//! limit for moving them once). Cases: acks 1 and all, 100 B and 1 KiB
//! records, 1 and 3 partitions.
//!
//! Criterion reports bytes per second; an iteration moves
//! `RECORDS_PER_ITERATION` records, so records per second are that over the
//! iteration time. The produce-to-acknowledgement latency percentiles of every
//! case are printed after the group, from an hdrhistogram of every record
//! sent while measuring.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use sluice::broker::Broker;
use sluice::client::{
    Acks, Admin, AutoOffsetReset, ConnectionConfig, Consumer, ConsumerConfig, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use sluice::clock::SystemClock;
use sluice::config::BrokerConfig;
use sluice::net::{Connector, TcpConnector, TcpListener};
use sluice::storage::fs::FsStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Records moved per iteration: enough batches (at `batch.size` 16 KiB) that
/// connection and poll overheads are amortised.
const RECORDS_PER_ITERATION: usize = 4_000;

struct Running {
    address: String,
    _broker: Arc<Broker>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
    _data: tempfile::TempDir,
}

async fn start_broker() -> Running {
    let data = tempfile::tempdir().expect("tempdir");
    let config = BrokerConfig {
        listener: "127.0.0.1:0".into(),
        log_dirs: data.path().to_path_buf(),
        group_initial_rebalance_delay_ms: 0,
        ..BrokerConfig::default()
    };
    let listener = TcpListener::bind(&config.listener).await.expect("bind");
    let address = sluice::net::Listener::local_addr(&listener).expect("address");
    let broker = Broker::open(config, Arc::new(FsStorage), Arc::new(SystemClock))
        .await
        .expect("open broker");
    let mut tasks = broker.spawn_background();
    let serving = Arc::clone(&broker);
    tasks.push(tokio::spawn(async move {
        let _ = sluice::server::serve(serving, Box::new(listener)).await;
    }));
    Running {
        address,
        _broker: broker,
        _tasks: tasks,
        _data: data,
    }
}

fn connector() -> Arc<dyn Connector> {
    Arc::new(TcpConnector)
}

/// One case's clients, kept across iterations.
struct Pipeline {
    producer: Producer,
    consumer: Consumer,
    topic: String,
    value: Bytes,
    latencies: Arc<Mutex<Histogram<u64>>>,
}

impl Pipeline {
    async fn new(address: &str, acks: Acks, record_bytes: usize, partitions: i32) -> Self {
        let topic = format!("e2e-{acks:?}-{record_bytes}-{partitions}").to_lowercase();
        Admin::new(address, connector(), ConnectionConfig::default())
            .create_topic(&topic, partitions, 1, &[])
            .await
            .expect("create topic");
        let producer = Producer::new(
            ProducerConfig {
                bootstrap_servers: address.to_string(),
                acks,
                enable_idempotence: acks == Acks::All,
                linger_ms: 5,
                seed: 1,
                ..ProducerConfig::default()
            },
            connector(),
            Arc::new(SystemClock),
        )
        .expect("producer");
        let mut consumer = Consumer::new(
            ConsumerConfig {
                bootstrap_servers: address.to_string(),
                auto_offset_reset: AutoOffsetReset::Earliest,
                fetch_max_wait_ms: 50,
                max_poll_records: 100_000,
                ..ConsumerConfig::default()
            },
            connector(),
            Arc::new(SystemClock),
        )
        .expect("consumer");
        consumer
            .assign(
                (0..partitions)
                    .map(|p| TopicPartition::new(topic.clone(), p))
                    .collect(),
            )
            .expect("assign");
        Self {
            producer,
            consumer,
            topic,
            value: Bytes::from(vec![0x5au8; record_bytes]),
            latencies: Arc::new(Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            )),
        }
    }

    /// Produces `RECORDS_PER_ITERATION` records while the consumer reads
    /// them back; returns once every one was acknowledged and consumed.
    async fn iteration(&mut self) {
        let producing = async {
            let mut deliveries = Vec::with_capacity(RECORDS_PER_ITERATION);
            for _ in 0..RECORDS_PER_ITERATION {
                let record =
                    ProducerRecord::new(self.topic.clone(), None, Some(self.value.clone()));
                let sent_at = tokio::time::Instant::now();
                let delivery = self.producer.enqueue(record).await.expect("enqueue");
                deliveries.push((sent_at, delivery));
            }
            for (sent_at, delivery) in deliveries {
                delivery.await.expect("acknowledged");
                let micros = sent_at.elapsed().as_micros() as u64;
                let _ = self
                    .latencies
                    .lock()
                    .expect("latencies")
                    .record(micros.max(1));
            }
        };
        let consuming = async {
            let mut received = 0;
            while received < RECORDS_PER_ITERATION {
                received += self
                    .consumer
                    .poll(Duration::from_millis(100))
                    .await
                    .expect("poll")
                    .len();
            }
        };
        tokio::join!(producing, consuming);
    }
}

/// Moves `bytes` through a loopback socket pair, written and read in 16 KiB
/// chunks, as the baseline for moving the records once.
async fn socket_pair(bytes: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; common::BATCH_BYTES];
        let mut read = 0;
        while read < bytes {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the writer closed early");
            read += n;
        }
    });
    let mut writer = tokio::net::TcpStream::connect(address).await.unwrap();
    let chunk = vec![0x5au8; common::BATCH_BYTES];
    let mut written = 0;
    while written < bytes {
        let n = chunk.len().min(bytes - written);
        writer.write_all(&chunk[..n]).await.unwrap();
        written += n;
    }
    reader.await.unwrap();
}

fn bench_e2e(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = runtime.block_on(start_broker());
    let mut latencies: BTreeMap<String, Arc<Mutex<Histogram<u64>>>> = BTreeMap::new();
    let mut group = c.benchmark_group("e2e");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    for record_bytes in common::RECORD_SIZES {
        let bytes = RECORDS_PER_ITERATION * record_bytes;
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("socket_pair", record_bytes), |b| {
            b.iter(|| runtime.block_on(socket_pair(bytes)))
        });
        for acks in [Acks::Leader, Acks::All] {
            for partitions in [1, 3] {
                let mut pipeline = runtime.block_on(Pipeline::new(
                    &broker.address,
                    acks,
                    record_bytes,
                    partitions,
                ));
                let name = format!(
                    "acks={}/partitions={partitions}",
                    if acks == Acks::All { "all" } else { "1" }
                );
                group.bench_function(BenchmarkId::new(&name, record_bytes), |b| {
                    b.iter(|| runtime.block_on(pipeline.iteration()))
                });
                latencies.insert(
                    format!("{name}/{record_bytes}B"),
                    Arc::clone(&pipeline.latencies),
                );
                runtime.block_on(pipeline.producer.close());
            }
        }
    }
    group.finish();
    println!("\nproduce->ack latency over every record sent while measuring (microseconds):");
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8}",
        "case", "p50", "p99", "p99.9", "max"
    );
    for (case, histogram) in latencies {
        let histogram = histogram.lock().expect("latencies");
        println!(
            "{case:<28} {:>8} {:>8} {:>8} {:>8}",
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max()
        );
    }
}

criterion_group!(benches, bench_e2e);
criterion_main!(benches);
