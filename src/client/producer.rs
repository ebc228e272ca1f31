//! The producer: batching, acks, retries and idempotence, as the Java client.
//!
//! [`Producer::enqueue`] puts a record into the accumulator (waiting up to
//! `max.block.ms` for metadata and for `buffer.memory`) and returns a
//! [`DeliveryFuture`]; [`Producer::send`] does both steps. One background task
//! (the "sender") drains batches that are full, older than `linger.ms`, or
//! flushed, groups them by partition leader, and sends Produce requests, at
//! most `max.in.flight.requests.per.connection` per broker.
//!
//! Ordering: at most one batch per partition is in flight, so a retried batch
//! can never be overtaken by a later one. With idempotence (the default) every
//! batch carries the producer id, epoch and a per-partition sequence number
//! assigned when it is first sent and kept across retries, so the broker drops
//! the duplicates a retry may create. OUT_OF_ORDER_SEQUENCE_NUMBER and
//! UNKNOWN_PRODUCER_ID fail the batch; the sender then stops draining, takes a
//! new producer id once nothing is in flight, and restarts every partition's
//! sequence at 0. Batches waiting for a retry are restamped then, so one whose
//! earlier attempt did reach the log may be written twice: the same window
//! the Java client's epoch bump leaves.
//!
//! Every record's outcome is decided within `delivery.timeout.ms`.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;
// tokio's clock, not the OS's: virtual under the simulation.
use tokio::time::Instant;

use super::connection::ConnectionConfig;
use super::metadata::Cluster;
use super::partitioner::{DefaultPartitioner, KeylessStrategy, Partitioner};
use super::records::{encode_batch, OutgoingRecord, ProducerStamp};
use super::{codes, is_stale_metadata_error, ClientError, Header, TopicPartition};
use crate::clock::SharedClock;
use crate::net::Connector;

/// Completions queued from request tasks to the sender. Bounded by requests in
/// flight (`max.in.flight.requests.per.connection` per broker) plus metadata
/// refreshes; 1024 covers hundreds of brokers.
const OUTCOMES_QUEUED_MAX: usize = 1024;

/// Kafka's `retry.backoff.max.ms` default: the cap of the exponential backoff.
const RETRY_BACKOFF_MAX_MS: u64 = 1_000;

/// Kafka's limit on `max.in.flight.requests.per.connection` with idempotence:
/// the broker remembers the last 5 batches per producer and partition.
const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

/// `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: fire and forget; offsets are reported as -1.
    None,
    /// acks=1: the leader wrote it.
    Leader,
    /// acks=all (-1): every in-sync replica wrote it. Kafka's default.
    All,
}

impl Acks {
    pub fn wire_value(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// Parses Kafka's spellings: "0", "1", "-1", "all".
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "-1" | "all" => Some(Acks::All),
            _ => None,
        }
    }
}

/// Producer settings, named after Kafka's keys, with Kafka 4.0's defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `bootstrap.servers`: comma-separated host:port.
    pub bootstrap_servers: String,
    /// `client.id`.
    pub client_id: String,
    /// `acks` (default all).
    pub acks: Acks,
    /// `linger.ms` (default 5): how long a non-full batch waits for company.
    pub linger_ms: u64,
    /// `batch.size` (default 16384): bytes at which a batch is sent at once.
    pub batch_size: usize,
    /// `buffer.memory` (default 32 MiB): bytes of records waiting to be sent.
    pub buffer_memory: usize,
    /// `max.block.ms` (default 60000): how long `enqueue` waits for metadata
    /// and buffer space.
    pub max_block_ms: u64,
    /// `max.request.size` (default 1048576): largest record and request.
    pub max_request_size: usize,
    /// `retries` (default i32::MAX): retries are really bounded by
    /// `delivery.timeout.ms`.
    pub retries: u32,
    /// `retry.backoff.ms` (default 100): first pause before a retry; doubles
    /// per attempt up to 1000 ms, with +-20% jitter, as Kafka 3.7+.
    pub retry_backoff_ms: u64,
    /// `delivery.timeout.ms` (default 120000): bound on the time from
    /// `enqueue` to the record's outcome.
    pub delivery_timeout_ms: u64,
    /// `request.timeout.ms` (default 30000).
    pub request_timeout_ms: u64,
    /// `enable.idempotence` (default true).
    pub enable_idempotence: bool,
    /// `max.in.flight.requests.per.connection` (default 5; at most 5 with
    /// idempotence).
    pub max_in_flight_requests_per_connection: usize,
    /// `allow.auto.create.topics` (default true).
    pub allow_auto_create_topics: bool,
    /// What keyless records do: sticky (KIP-480, Kafka's default) or round-robin.
    pub keyless_strategy: KeylessStrategy,
    /// Seed for the partitioner and the retry jitter.
    pub seed: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "localhost:9092".to_string(),
            client_id: "sluice-producer".to_string(),
            acks: Acks::All,
            linger_ms: 5,
            batch_size: 16_384,
            buffer_memory: 32 * 1024 * 1024,
            max_block_ms: 60_000,
            max_request_size: 1_048_576,
            retries: i32::MAX as u32,
            retry_backoff_ms: 100,
            delivery_timeout_ms: 120_000,
            request_timeout_ms: super::connection::REQUEST_TIMEOUT_MS_DEFAULT,
            enable_idempotence: true,
            max_in_flight_requests_per_connection: 5,
            allow_auto_create_topics: true,
            keyless_strategy: KeylessStrategy::Sticky,
            seed: 0,
        }
    }
}

impl ProducerConfig {
    /// Sets one setting by its Kafka key (as `--producer-property key=value`).
    /// Returns `Ok(false)` for a key this client does not know.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ClientError> {
        use super::parse_config as parse;
        let value = value.trim();
        match key {
            "bootstrap.servers" => self.bootstrap_servers = value.to_string(),
            "client.id" => self.client_id = value.to_string(),
            "acks" => {
                self.acks = Acks::parse(value)
                    .ok_or_else(|| ClientError::Config(format!("acks: {value:?}")))?
            }
            "linger.ms" => self.linger_ms = parse(key, value)?,
            "batch.size" => self.batch_size = parse(key, value)?,
            "buffer.memory" => self.buffer_memory = parse(key, value)?,
            "max.block.ms" => self.max_block_ms = parse(key, value)?,
            "max.request.size" => self.max_request_size = parse(key, value)?,
            "retries" => self.retries = parse(key, value)?,
            "retry.backoff.ms" => self.retry_backoff_ms = parse(key, value)?,
            "delivery.timeout.ms" => self.delivery_timeout_ms = parse(key, value)?,
            "request.timeout.ms" => self.request_timeout_ms = parse(key, value)?,
            "enable.idempotence" => self.enable_idempotence = parse(key, value)?,
            "max.in.flight.requests.per.connection" => {
                self.max_in_flight_requests_per_connection = parse(key, value)?
            }
            "allow.auto.create.topics" => self.allow_auto_create_topics = parse(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The checks Java's `ProducerConfig` makes.
    pub fn validate(&self) -> Result<(), ClientError> {
        let fail = |m: &str| Err(ClientError::Config(m.to_string()));
        if self.batch_size == 0 || self.buffer_memory == 0 || self.max_request_size == 0 {
            return fail("batch.size, buffer.memory and max.request.size must be positive");
        }
        if u32::try_from(self.buffer_memory).is_err() {
            return fail("buffer.memory must fit in 32 bits");
        }
        let int_max = u64::try_from(i32::MAX).unwrap_or(u64::MAX);
        let times = [
            self.linger_ms,
            self.max_block_ms,
            self.retry_backoff_ms,
            self.delivery_timeout_ms,
            self.request_timeout_ms,
        ];
        if times.iter().any(|&ms| ms > int_max) {
            // Kafka's own settings are 32-bit; larger values would also
            // overflow deadline arithmetic.
            return fail("time settings must fit in 32 bits, as in Kafka");
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return fail("max.in.flight.requests.per.connection must be at least 1");
        }
        if self.delivery_timeout_ms < self.linger_ms.saturating_add(self.request_timeout_ms) {
            return fail("delivery.timeout.ms must be at least linger.ms + request.timeout.ms");
        }
        if self.enable_idempotence {
            if self.acks != Acks::All {
                return fail("enable.idempotence requires acks=all");
            }
            if self.max_in_flight_requests_per_connection > IDEMPOTENT_IN_FLIGHT_MAX {
                return fail(
                    "enable.idempotence requires max.in.flight.requests.per.connection <= 5",
                );
            }
            if self.retries == 0 {
                return fail("enable.idempotence requires retries > 0");
            }
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: the partitioner chooses (murmur2 of the key, or sticky).
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// `None`: the producer's clock at enqueue time.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, key: Option<Bytes>, value: Option<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            key,
            value,
            ..Self::default()
        }
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// -1 with acks=0, where the broker does not answer.
    pub offset: i64,
    /// The create time we sent, or the broker's log-append time if the topic
    /// uses it.
    pub timestamp: i64,
}

/// Why a record was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error("record of {size} bytes exceeds the limit of {limit} bytes (max.request.size / buffer.memory)")]
    RecordTooLarge { size: usize, limit: usize },
    #[error(
        "partition {partition} of topic {topic} does not exist ({partition_count} partitions)"
    )]
    UnknownPartition {
        topic: String,
        partition: i32,
        partition_count: i32,
    },
    /// `max.block.ms` passed waiting for metadata or buffer space.
    #[error("max.block.ms expired waiting for {0}")]
    MaxBlockExpired(String),
    /// `delivery.timeout.ms` passed before the record was acknowledged.
    #[error("delivery.timeout.ms expired; last error: {0}")]
    DeliveryTimeout(String),
    /// A non-retriable error, or retries exhausted.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("producer closed")]
    Closed,
}

impl ProduceError {
    /// Whether the record may have been written despite the error (a
    /// history's "info" rather than "fail"): a timeout or a lost connection
    /// after it may have been sent. `false` means it certainly was not.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ProduceError::RecordTooLarge { .. }
            | ProduceError::UnknownPartition { .. }
            | ProduceError::MaxBlockExpired(_) => false,
            ProduceError::DeliveryTimeout(_) | ProduceError::Closed => true,
            // A definite rejection applies to every attempt of the batch;
            // retriable ones mean retries ran out after attempts that may
            // have timed out.
            ProduceError::Client(ClientError::Broker(e)) => e.is_retriable(),
            ProduceError::Client(ClientError::Invalid(_) | ClientError::Config(_)) => false,
            ProduceError::Client(_) => true,
        }
    }
}

/// Resolves when the record is acknowledged or has failed.
#[derive(Debug)]
pub struct DeliveryFuture {
    receiver: oneshot::Receiver<Result<RecordMetadata, ProduceError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The sender task went away (producer dropped without close).
            Poll::Ready(Err(_)) => Poll::Ready(Err(ProduceError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

type Delivery = oneshot::Sender<Result<RecordMetadata, ProduceError>>;

struct Batch {
    /// Monotonic, for `flush` to know which batches predate it.
    id: u64,
    records: Vec<OutgoingRecord>,
    deliveries: Vec<Delivery>,
    /// Sum of the records' size estimates; also the buffer.memory permits held.
    size_bytes: usize,
    created: Instant,
    /// No more appends: full, or handed to the sender.
    sealed: bool,
    /// Sends so far.
    attempts: u32,
    retry_at: Option<Instant>,
    /// Encoded bytes and the stamp they carry, fixed at the first send so a
    /// retry repeats the same sequence numbers.
    encoded: Option<(Bytes, Option<ProducerStamp>)>,
    last_error: Option<ClientError>,
}

#[derive(Default)]
struct PartitionQueue {
    batches: VecDeque<Batch>,
    /// Whether the front batch is in a request now.
    in_flight: bool,
    /// Sequence number of the next record never sent before.
    next_sequence: i32,
}

struct State {
    partitioner: Box<dyn Partitioner>,
    rng: ChaCha8Rng,
    queues: BTreeMap<TopicPartition, PartitionQueue>,
    next_batch_id: u64,
    /// Flushes waiting; while non-zero every batch is ready regardless of linger.
    flushes_waiting: usize,
    closing: bool,
    /// Producer id and epoch from InitProducerId; -1 before.
    producer_id: i64,
    producer_epoch: i16,
    /// A batch failed with a sequence error or expired after being sent: take
    /// a new producer id once nothing is in flight.
    producer_id_reset: bool,
}

impl State {
    fn oldest_batch_id(&self) -> Option<u64> {
        self.queues
            .values()
            .filter_map(|q| q.batches.front().map(|b| b.id))
            .min()
    }
}

struct Inner {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    clock: SharedClock,
    /// `buffer.memory` in bytes; FIFO, so a large record waiting for space is
    /// not starved by smaller ones behind it.
    memory: Semaphore,
    state: Mutex<State>,
    /// Wakes the sender: new records, flush, close.
    wake: Notify,
    /// Wakes `flush` callers: a batch completed.
    progress: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning means a panic elsewhere; the queues are still well formed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An asynchronous Kafka producer. Create it inside a tokio runtime.
pub struct Producer {
    inner: Arc<Inner>,
    sender: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Without `close`, undelivered records fail with `Closed`.
        if let Ok(mut sender) = self.sender.try_lock() {
            if let Some(task) = sender.take() {
                task.abort();
            }
        }
    }
}

impl Producer {
    pub fn new(
        config: ProducerConfig,
        connector: Arc<dyn Connector>,
        clock: SharedClock,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let cluster = Cluster::new(
            &config.bootstrap_servers,
            connector,
            ConnectionConfig {
                client_id: config.client_id.clone(),
                request_timeout_ms: config.request_timeout_ms,
                ..ConnectionConfig::default()
            },
        );
        // Child seeds drawn in a fixed order: partitioner, then jitter.
        let mut seeder = ChaCha8Rng::seed_from_u64(config.seed);
        let partitioner = DefaultPartitioner::new(config.keyless_strategy, seeder.next_u64());
        let rng = ChaCha8Rng::seed_from_u64(seeder.next_u64());
        let inner = Arc::new(Inner {
            memory: Semaphore::new(config.buffer_memory),
            config,
            cluster,
            clock,
            state: Mutex::new(State {
                partitioner: Box::new(partitioner),
                rng,
                queues: BTreeMap::new(),
                next_batch_id: 0,
                flushes_waiting: 0,
                closing: false,
                producer_id: -1,
                producer_epoch: -1,
                producer_id_reset: false,
            }),
            wake: Notify::new(),
            progress: Notify::new(),
        });
        let task = tokio::spawn(Sender::new(inner.clone()).run());
        Ok(Self {
            inner,
            sender: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// Replaces the partitioner (before the first send).
    pub fn set_partitioner(&self, partitioner: Box<dyn Partitioner>) {
        self.inner.lock().partitioner = partitioner;
    }

    /// The cluster view this producer uses.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.inner.cluster
    }

    /// Sends a record and waits for its acknowledgement.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata, ProduceError> {
        self.enqueue(record).await?.await
    }

    /// Puts a record into the accumulator, waiting up to `max.block.ms` for
    /// topic metadata and buffer space, and returns the future of its outcome.
    /// Records enqueued one after another keep their order per partition.
    pub async fn enqueue(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProduceError> {
        let inner = &self.inner;
        let config = &inner.config;
        if inner.lock().closing {
            return Err(ProduceError::Closed);
        }
        let outgoing = OutgoingRecord {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: record.timestamp.unwrap_or_else(|| inner.clock.now_ms()),
        };
        let size_bytes = outgoing.size_estimate();
        let limit = config.max_request_size.min(config.buffer_memory);
        if size_bytes > limit {
            return Err(ProduceError::RecordTooLarge {
                size: size_bytes,
                limit,
            });
        }
        let max_block = Duration::from_millis(config.max_block_ms);
        let deadline = Instant::now() + max_block;
        let topic = inner
            .cluster
            .topic_info(&record.topic, config.allow_auto_create_topics, max_block)
            .await
            .map_err(|e| match e {
                ClientError::Metadata(m) => ProduceError::MaxBlockExpired(format!("metadata: {m}")),
                other if other.is_retriable() => {
                    ProduceError::MaxBlockExpired(format!("metadata: {other}"))
                }
                other => ProduceError::Client(other),
            })?;
        let partition_count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if let Some(p) = record.partition {
            if !(0..partition_count).contains(&p) {
                return Err(ProduceError::UnknownPartition {
                    topic: record.topic,
                    partition: p,
                    partition_count,
                });
            }
        }
        let permits = u32::try_from(size_bytes).map_err(|_| ProduceError::RecordTooLarge {
            size: size_bytes,
            limit,
        })?;
        let acquired = tokio::time::timeout_at(deadline, inner.memory.acquire_many(permits)).await;
        match acquired {
            Ok(Ok(permit)) => permit.forget(),
            Ok(Err(_closed)) => return Err(ProduceError::Closed),
            Err(_) => return Err(ProduceError::MaxBlockExpired("buffer.memory".to_string())),
        }
        let (delivery, receiver) = oneshot::channel();
        {
            let mut state = inner.lock();
            if state.closing {
                drop(state);
                inner.memory.add_permits(size_bytes);
                return Err(ProduceError::Closed);
            }
            let key = outgoing.key.as_deref();
            let partition = match record.partition {
                Some(p) => p,
                None => {
                    let p = state
                        .partitioner
                        .partition(&record.topic, key, partition_count);
                    let tp = TopicPartition::new(record.topic.clone(), p);
                    let has_room = state
                        .queues
                        .get(&tp)
                        .and_then(|q| q.batches.back())
                        .is_some_and(|b| {
                            !b.sealed && b.size_bytes + size_bytes <= config.batch_size
                        });
                    if key.is_none() && !has_room {
                        // KIP-480: a keyless record that would open a new
                        // batch moves the sticky partition first.
                        state
                            .partitioner
                            .on_new_batch(&record.topic, p, partition_count);
                        state
                            .partitioner
                            .partition(&record.topic, key, partition_count)
                    } else {
                        p
                    }
                }
            };
            let tp = TopicPartition::new(record.topic, partition);
            let batch_size = config.batch_size;
            let next_id = state.next_batch_id;
            let queue = state.queues.entry(tp).or_default();
            let fits = queue
                .batches
                .back()
                .is_some_and(|b| !b.sealed && b.size_bytes + size_bytes <= batch_size);
            let mut created = false;
            if !fits {
                if let Some(last) = queue.batches.back_mut() {
                    last.sealed = true;
                }
                queue.batches.push_back(Batch {
                    id: next_id,
                    records: Vec::new(),
                    deliveries: Vec::new(),
                    size_bytes: 0,
                    created: Instant::now(),
                    sealed: false,
                    attempts: 0,
                    retry_at: None,
                    encoded: None,
                    last_error: None,
                });
                created = true;
            }
            let batch = queue.batches.back_mut().expect("a batch was just ensured");
            batch.records.push(outgoing);
            batch.deliveries.push(delivery);
            batch.size_bytes += size_bytes;
            if batch.size_bytes >= batch_size {
                batch.sealed = true;
            }
            if created {
                state.next_batch_id += 1;
            }
        }
        inner.wake.notify_one();
        Ok(DeliveryFuture { receiver })
    }

    /// Sends every record enqueued before this call at once (ignoring
    /// `linger.ms`) and waits until each has an outcome.
    pub async fn flush(&self) {
        let inner = &self.inner;
        let ticket = {
            let mut state = inner.lock();
            state.flushes_waiting += 1;
            state.next_batch_id
        };
        inner.wake.notify_one();
        loop {
            let progressed = inner.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if !matches!(inner.lock().oldest_batch_id(), Some(id) if id < ticket) {
                break;
            }
            progressed.await;
        }
        inner.lock().flushes_waiting -= 1;
    }

    /// Flushes, then stops the sender. Later sends fail with `Closed`.
    pub async fn close(&self) {
        self.inner.lock().closing = true;
        self.flush().await;
        self.inner.wake.notify_one();
        if let Some(task) = self.sender.lock().await.take() {
            // The sender exits as soon as it sees `closing` with nothing left.
            let _ = task.await;
        }
    }
}

/// What a request task reports back to the sender.
enum Outcome {
    Produced {
        node: i32,
        batches: Vec<TopicPartition>,
        result: Result<Option<ProduceResponse>, ClientError>,
    },
    MetadataRefreshed,
    ProducerId(Result<(i64, i16), ClientError>),
}

/// The background task: drains the accumulator into requests and settles
/// their outcomes. All accumulator mutation happens under `Inner::state`.
struct Sender {
    inner: Arc<Inner>,
    outcomes_tx: mpsc::Sender<Outcome>,
    outcomes: mpsc::Receiver<Outcome>,
    /// Produce requests in flight per broker.
    in_flight: BTreeMap<i32, usize>,
    refreshing: bool,
    refresh_not_before: Instant,
    producer_id_pending: bool,
    producer_id_not_before: Instant,
}

impl Sender {
    fn new(inner: Arc<Inner>) -> Self {
        let (outcomes_tx, outcomes) = mpsc::channel(OUTCOMES_QUEUED_MAX);
        let now = Instant::now();
        Self {
            inner,
            outcomes_tx,
            outcomes,
            in_flight: BTreeMap::new(),
            refreshing: false,
            refresh_not_before: now,
            producer_id_pending: false,
            producer_id_not_before: now,
        }
    }

    async fn run(mut self) {
        loop {
            let next_wake = self.step();
            let done = {
                let state = self.inner.lock();
                state.closing && state.queues.values().all(|q| q.batches.is_empty())
            };
            if done && self.in_flight.values().all(|n| *n == 0) {
                return;
            }
            let sleep = tokio::time::sleep_until(
                next_wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                biased;
                outcome = self.outcomes.recv() => {
                    if let Some(outcome) = outcome {
                        self.settle(outcome);
                    }
                }
                () = self.inner.wake.notified() => {}
                () = sleep => {}
            }
        }
    }

    fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    fn backoff(&self, state: &mut State, attempts: u32) -> Duration {
        let base = self.config().retry_backoff_ms.max(1);
        let exponent = attempts.saturating_sub(1).min(16);
        let capped = base
            .saturating_mul(1u64 << exponent)
            .min(RETRY_BACKOFF_MAX_MS.max(base));
        // +-20% jitter, as Kafka, so retrying producers do not move in lockstep.
        let jitter_range = capped / 5;
        let jitter = if jitter_range == 0 {
            0
        } else {
            state.rng.next_u64() % (2 * jitter_range + 1)
        };
        Duration::from_millis(capped - jitter_range + jitter)
    }

    /// Expires, drains and sends what is ready; returns when to look again.
    fn step(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let config = self.inner.config.clone();
        let linger = Duration::from_millis(config.linger_ms);
        let delivery_timeout = Duration::from_millis(config.delivery_timeout_ms);
        let mut next_wake: Option<Instant> = None;
        let mut wake_at = |t: Instant| {
            next_wake = Some(next_wake.map_or(t, |w| w.min(t)));
        };
        let mut state = self.inner.lock();
        let mut completed = false;

        // 1. Expire batches that are not in a request.
        let mut released = 0usize;
        let mut reset = false;
        for (tp, queue) in state.queues.iter_mut() {
            let skip = usize::from(queue.in_flight);
            let mut kept = VecDeque::new();
            for (index, batch) in queue.batches.drain(..).enumerate() {
                if index >= skip && batch.created + delivery_timeout <= now {
                    if batch
                        .encoded
                        .as_ref()
                        .is_some_and(|(_, stamp)| stamp.is_some())
                    {
                        // Its sequence numbers may have reached the broker.
                        reset = true;
                    }
                    let error = batch
                        .last_error
                        .as_ref()
                        .map_or_else(|| "none".to_string(), ToString::to_string);
                    released += batch.size_bytes;
                    fail_batch(
                        batch,
                        &ProduceError::DeliveryTimeout(format!("{tp}: {error}")),
                    );
                    completed = true;
                } else {
                    if index >= skip {
                        wake_at(batch.created + delivery_timeout);
                    }
                    kept.push_back(batch);
                }
            }
            queue.batches = kept;
        }
        if reset {
            state.producer_id_reset = true;
        }
        self.inner.memory.add_permits(released);

        // 2. Idempotence: a producer id before anything is sent.
        let nothing_in_flight = self.in_flight.values().all(|n| *n == 0);
        if config.enable_idempotence
            && state.producer_id_reset
            && nothing_in_flight
            && !self.producer_id_pending
        {
            state.producer_id = -1;
            state.producer_id_reset = false;
            for queue in state.queues.values_mut() {
                queue.next_sequence = 0;
                for batch in &mut queue.batches {
                    batch.encoded = None;
                }
            }
        }
        if config.enable_idempotence && state.producer_id < 0 {
            let has_work = state.queues.values().any(|q| !q.batches.is_empty());
            if has_work && !self.producer_id_pending {
                if self.producer_id_not_before <= now {
                    self.producer_id_pending = true;
                    let cluster = self.inner.cluster.clone();
                    let tx = self.outcomes_tx.clone();
                    tokio::spawn(async move {
                        let result = init_producer_id(&cluster).await;
                        let _ = tx.send(Outcome::ProducerId(result)).await;
                    });
                } else {
                    wake_at(self.producer_id_not_before);
                }
            }
            drop(state);
            if completed {
                self.inner.progress.notify_waiters();
            }
            return next_wake;
        }
        if config.enable_idempotence && state.producer_id_reset {
            // Drain nothing new until the in-flight requests settle and the
            // producer id is replaced; otherwise steady traffic could keep
            // the reset waiting forever.
            drop(state);
            if completed {
                self.inner.progress.notify_waiters();
            }
            return next_wake;
        }
        let stamp_base = (state.producer_id, state.producer_epoch);

        // 3. Drain ready batches, grouped by leader.
        let flushing = state.flushes_waiting > 0 || state.closing;
        let mut requests: BTreeMap<i32, Vec<(TopicPartition, Bytes)>> = BTreeMap::new();
        let mut request_bytes: BTreeMap<i32, usize> = BTreeMap::new();
        let mut refresh_topics: Vec<String> = Vec::new();
        let mut encode_failures: Vec<(TopicPartition, ClientError)> = Vec::new();
        for (tp, queue) in state.queues.iter_mut() {
            if queue.in_flight {
                continue;
            }
            let queued = queue.batches.len();
            let Some(batch) = queue.batches.front_mut() else {
                continue;
            };
            let ready_at = if batch.sealed || queued > 1 || flushing {
                batch.created
            } else {
                batch.created + linger
            };
            let ready_at = batch.retry_at.map_or(ready_at, |r| r.max(ready_at));
            if ready_at > now {
                wake_at(ready_at);
                continue;
            }
            let Some(leader) = self.inner.cluster.leader(tp) else {
                if !refresh_topics.contains(&tp.topic) {
                    refresh_topics.push(tp.topic.clone());
                }
                continue;
            };
            if self.in_flight.get(&leader).copied().unwrap_or(0)
                >= config.max_in_flight_requests_per_connection
            {
                continue;
            }
            if batch.encoded.is_none() {
                let stamp = config.enable_idempotence.then_some(ProducerStamp {
                    producer_id: stamp_base.0,
                    producer_epoch: stamp_base.1,
                    base_sequence: queue.next_sequence,
                });
                match encode_batch(&batch.records, stamp) {
                    Ok(bytes) => {
                        if stamp.is_some() {
                            let count = i32::try_from(batch.records.len()).unwrap_or(i32::MAX);
                            // Kafka wraps sequences at i32::MAX back to 0.
                            queue.next_sequence =
                                queue.next_sequence.wrapping_add(count) & i32::MAX;
                        }
                        batch.encoded = Some((bytes, stamp));
                    }
                    Err(e) => {
                        encode_failures.push((tp.clone(), ClientError::Invalid(e.to_string())));
                        continue;
                    }
                }
            }
            let Some((bytes, _)) = batch.encoded.as_ref() else {
                continue;
            };
            let used = request_bytes.entry(leader).or_insert(0);
            if *used > 0 && *used + bytes.len() > config.max_request_size {
                // Full request; this batch goes in the next one.
                continue;
            }
            *used += bytes.len();
            batch.sealed = true;
            batch.attempts += 1;
            queue.in_flight = true;
            requests
                .entry(leader)
                .or_default()
                .push((tp.clone(), bytes.clone()));
        }
        for (tp, error) in encode_failures {
            if let Some(queue) = state.queues.get_mut(&tp) {
                if let Some(batch) = queue.batches.pop_front() {
                    self.inner.memory.add_permits(batch.size_bytes);
                    fail_batch(batch, &ProduceError::Client(error));
                    completed = true;
                }
            }
        }
        drop(state);

        // 4. Metadata for partitions without a known leader.
        if !refresh_topics.is_empty() {
            if !self.refreshing && self.refresh_not_before <= now {
                self.refreshing = true;
                self.refresh_not_before = now + Duration::from_millis(config.retry_backoff_ms);
                let cluster = self.inner.cluster.clone();
                let tx = self.outcomes_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = cluster.refresh(Some(&refresh_topics), false).await {
                        tracing::debug!(error = %e, "producer metadata refresh failed");
                    }
                    let _ = tx.send(Outcome::MetadataRefreshed).await;
                });
            } else if !self.refreshing {
                wake_at(self.refresh_not_before);
            }
        }

        // 5. Send.
        for (node, batches) in requests {
            *self.in_flight.entry(node).or_insert(0) += 1;
            let cluster = self.inner.cluster.clone();
            let tx = self.outcomes_tx.clone();
            let acks = config.acks;
            let timeout_ms = i32::try_from(config.request_timeout_ms).unwrap_or(i32::MAX);
            tokio::spawn(async move {
                let tps: Vec<TopicPartition> = batches.iter().map(|(tp, _)| tp.clone()).collect();
                let result = produce(&cluster, node, batches, acks, timeout_ms).await;
                let _ = tx
                    .send(Outcome::Produced {
                        node,
                        batches: tps,
                        result,
                    })
                    .await;
            });
        }
        if completed {
            self.inner.progress.notify_waiters();
        }
        next_wake
    }

    /// Applies one outcome to the accumulator.
    fn settle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::MetadataRefreshed => self.refreshing = false,
            Outcome::ProducerId(result) => {
                self.producer_id_pending = false;
                match result {
                    Ok((id, epoch)) => {
                        let mut state = self.inner.lock();
                        state.producer_id = id;
                        state.producer_epoch = epoch;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "InitProducerId failed; retrying");
                        self.producer_id_not_before =
                            Instant::now() + Duration::from_millis(self.config().retry_backoff_ms);
                    }
                }
            }
            Outcome::Produced {
                node,
                batches,
                result,
            } => {
                if let Some(n) = self.in_flight.get_mut(&node) {
                    *n = n.saturating_sub(1);
                }
                let mut state = self.inner.lock();
                for tp in batches {
                    let answer = match &result {
                        Err(e) => Err(e.clone()),
                        Ok(None) => Ok(None),
                        Ok(Some(response)) => find_partition_response(response, &tp).map(Some),
                    };
                    self.settle_batch(&mut state, &tp, answer);
                }
                drop(state);
                self.inner.progress.notify_waiters();
            }
        }
    }

    /// Settles the in-flight front batch of `tp`. `Ok(None)` is acks=0.
    fn settle_batch(
        &self,
        state: &mut State,
        tp: &TopicPartition,
        answer: Result<Option<(i16, i64, i64)>, ClientError>,
    ) {
        let config = &self.inner.config;
        let Some(queue) = state.queues.get_mut(tp) else {
            return;
        };
        if !queue.in_flight {
            return;
        }
        queue.in_flight = false;
        let error = match answer {
            Ok(None) => {
                if let Some(batch) = queue.batches.pop_front() {
                    self.inner.memory.add_permits(batch.size_bytes);
                    complete_batch(batch, tp, -1, -1);
                }
                return;
            }
            Ok(Some((code, base_offset, log_append_time))) => {
                // DUPLICATE_SEQUENCE_NUMBER: the broker already has this batch.
                if code == 0 || code == codes::DUPLICATE_SEQUENCE_NUMBER {
                    if let Some(batch) = queue.batches.pop_front() {
                        self.inner.memory.add_permits(batch.size_bytes);
                        complete_batch(batch, tp, base_offset, log_append_time);
                    }
                    return;
                }
                ClientError::check(code)
                    .err()
                    .unwrap_or(ClientError::Invalid("impossible".into()))
            }
            Err(e) => e,
        };
        let code = error.code();
        if code.is_some_and(is_stale_metadata_error)
            || matches!(
                error,
                ClientError::Network { .. } | ClientError::Timeout { .. }
            )
        {
            self.inner.cluster.invalidate(&tp.topic);
        }
        let sequence_error = matches!(
            code,
            Some(codes::OUT_OF_ORDER_SEQUENCE_NUMBER | codes::UNKNOWN_PRODUCER_ID)
        );
        let Some(batch) = queue.batches.front_mut() else {
            return;
        };
        let expired =
            batch.created + Duration::from_millis(config.delivery_timeout_ms) <= Instant::now();
        let retriable = error.is_retriable() && !sequence_error && batch.attempts <= config.retries;
        if retriable && !expired {
            let attempts = batch.attempts;
            batch.last_error = Some(error);
            let pause = self.backoff(state, attempts);
            if let Some(batch) = state.queues.get_mut(tp).and_then(|q| q.batches.front_mut()) {
                batch.retry_at = Some(Instant::now() + pause);
            }
            return;
        }
        let Some(batch) = queue.batches.pop_front() else {
            return;
        };
        // A failed idempotent batch used up sequence numbers the broker never
        // accepted (or may have): the next batch would be out of order, so
        // start over with a new producer id.
        let stamped = batch
            .encoded
            .as_ref()
            .is_some_and(|(_, stamp)| stamp.is_some());
        if sequence_error || (config.enable_idempotence && stamped) {
            state.producer_id_reset = true;
        }
        self.inner.memory.add_permits(batch.size_bytes);
        let failure = if expired && retriable {
            ProduceError::DeliveryTimeout(error.to_string())
        } else {
            ProduceError::Client(error)
        };
        fail_batch(batch, &failure);
    }
}

fn complete_batch(batch: Batch, tp: &TopicPartition, base_offset: i64, log_append_time: i64) {
    for (index, (record, delivery)) in batch.records.iter().zip(batch.deliveries).enumerate() {
        let offset = if base_offset < 0 {
            -1
        } else {
            base_offset.saturating_add(i64::try_from(index).unwrap_or(i64::MAX))
        };
        let _ = delivery.send(Ok(RecordMetadata {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            timestamp: if log_append_time >= 0 {
                log_append_time
            } else {
                record.timestamp
            },
        }));
    }
}

fn fail_batch(batch: Batch, error: &ProduceError) {
    for delivery in batch.deliveries {
        let _ = delivery.send(Err(error.clone()));
    }
}

/// `(error_code, base_offset, log_append_time_ms)` for `tp`.
fn find_partition_response(
    response: &ProduceResponse,
    tp: &TopicPartition,
) -> Result<(i16, i64, i64), ClientError> {
    response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == tp.topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == tp.partition)
        .map(|p| (p.error_code, p.base_offset, p.log_append_time_ms))
        .ok_or_else(|| ClientError::Protocol {
            addr: String::new(),
            message: format!("Produce response lacks {tp}"),
        })
}

async fn produce(
    cluster: &Cluster,
    node: i32,
    batches: Vec<(TopicPartition, Bytes)>,
    acks: Acks,
    timeout_ms: i32,
) -> Result<Option<ProduceResponse>, ClientError> {
    let connection = cluster.broker_connection(node)?;
    let mut topics: BTreeMap<String, Vec<PartitionProduceData>> = BTreeMap::new();
    for (tp, bytes) in batches {
        topics.entry(tp.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(tp.partition)
                .with_records(Some(bytes)),
        );
    }
    let req = ProduceRequest::default()
        .with_acks(acks.wire_value())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partition_data(partitions)
                })
                .collect(),
        );
    let version = connection.version::<ProduceRequest>().await?;
    if acks == Acks::None {
        connection.send_no_response(req, version).await?;
        return Ok(None);
    }
    connection.send(req, version).await.map(Some)
}

async fn init_producer_id(cluster: &Cluster) -> Result<(i64, i16), ClientError> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX);
    let response = cluster.call_any(req).await?;
    ClientError::check(response.error_code)?;
    Ok((response.producer_id.0, response.producer_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let config = ProducerConfig::default();
        assert_eq!(config.acks, Acks::All);
        assert_eq!(config.linger_ms, 5);
        assert_eq!(config.batch_size, 16_384);
        assert_eq!(config.buffer_memory, 33_554_432);
        assert_eq!(config.delivery_timeout_ms, 120_000);
        assert!(config.enable_idempotence);
        config.validate().unwrap();
    }

    #[test]
    fn settings_by_kafka_key() {
        let mut config = ProducerConfig::default();
        assert!(config.set("acks", "1").unwrap());
        assert!(config.set("enable.idempotence", "false").unwrap());
        assert!(config.set("linger.ms", "20").unwrap());
        assert_eq!(config.acks, Acks::Leader);
        assert!(!config.enable_idempotence);
        assert_eq!(config.linger_ms, 20);
        assert!(!config.set("compression.type", "lz4").unwrap());
        assert!(config.set("acks", "most").is_err());
        config.validate().unwrap();
    }

    #[test]
    fn idempotence_constraints_are_enforced() {
        let base = ProducerConfig::default();
        let leader_acks = ProducerConfig {
            acks: Acks::Leader,
            ..base.clone()
        };
        assert!(leader_acks.validate().is_err());
        let too_many_in_flight = ProducerConfig {
            max_in_flight_requests_per_connection: 6,
            ..base.clone()
        };
        assert!(too_many_in_flight.validate().is_err());
        let short_delivery = ProducerConfig {
            delivery_timeout_ms: 1_000,
            ..base.clone()
        };
        assert!(short_delivery.validate().is_err());
        let plain = ProducerConfig {
            acks: Acks::Leader,
            enable_idempotence: false,
            max_in_flight_requests_per_connection: 10,
            ..base
        };
        plain.validate().unwrap();
        assert_eq!(Acks::parse("all"), Some(Acks::All));
        assert_eq!(Acks::parse("-1").map(Acks::wire_value), Some(-1));
        assert_eq!(Acks::parse("2"), None);
    }
}
