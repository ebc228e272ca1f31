//! Instruction counts, for the CI gate: the same work as the criterion
//! benches (append, warm fetch, request decode and encode) plus one short
//! simulation run, each executed once under callgrind by gungraun.
//!
//! Wall time on shared VMs drifts by tens of percent; the number of
//! instructions a fixed piece of work executes does not, so `.ci/run` compares
//! these counts against `benches/instructions.toml` (`cargo xtask
//! instructions`). Setup (opening logs, filling them, building scenarios) runs
//! outside the counted region.
//!
//! The workloads are pinned here, not read from `scenarios/` or
//! `benches/common.rs`, so that editing a scenario never moves the gate.

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use gungraun::{library_benchmark, library_benchmark_group, main};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice::log::testing::encode_batch;
use sluice::log::{LogConfig, PartitionLog};
use sluice::storage::fs::FsStorage;
use sluice_sim::scenario::Scenario;

/// Batches per append or fetch case: enough that per-call work dominates the
/// one-off costs, few enough that callgrind finishes in seconds.
const BATCHES: usize = 64;
/// Close to a producer's default `batch.size`.
const BATCH_BYTES: usize = 16 * 1024;
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

fn batch(record_bytes: usize) -> Vec<u8> {
    let count = ((BATCH_BYTES - 61) / (record_bytes + 10)).max(1);
    let value = vec![0xabu8; record_bytes];
    let values: Vec<&[u8]> = (0..count).map(|_| value.as_slice()).collect();
    encode_batch(&values, 1_700_000_000_000, -1, -1, -1)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A log in a fresh temporary directory, and what keeps that directory alive.
struct OpenLog {
    runtime: tokio::runtime::Runtime,
    log: PartitionLog,
    batch: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn open_log(record_bytes: usize) -> OpenLog {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime();
    let config = LogConfig {
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    };
    let log = runtime
        .block_on(PartitionLog::open(
            Arc::new(FsStorage),
            &dir.path().join("bench-0"),
            config,
            0,
        ))
        .expect("open log");
    OpenLog {
        runtime,
        log,
        batch: batch(record_bytes),
        _dir: dir,
    }
}

fn filled_log(record_bytes: usize) -> OpenLog {
    let mut open = open_log(record_bytes);
    for _ in 0..BATCHES {
        open.runtime
            .block_on(open.log.append(BytesMut::from(&open.batch[..]), 0, 0))
            .expect("append");
    }
    open
}

#[library_benchmark]
#[bench::records_100b(args = (100), setup = open_log)]
#[bench::records_1kib(args = (1024), setup = open_log)]
fn append(mut open: OpenLog) -> OpenLog {
    for _ in 0..BATCHES {
        let appended = open
            .runtime
            .block_on(open.log.append(BytesMut::from(&open.batch[..]), 0, 0))
            .expect("append");
        black_box(appended);
    }
    open
}

#[library_benchmark]
#[bench::records_100b(args = (100), setup = filled_log)]
#[bench::records_1kib(args = (1024), setup = filled_log)]
fn fetch(open: OpenLog) -> OpenLog {
    let end = open.log.log_end_offset();
    let mut offset = 0;
    while offset < end {
        let bytes = open
            .runtime
            .block_on(open.log.read(offset, 256 << 10, end))
            .expect("read");
        assert!(!bytes.is_empty(), "a fetch below the end returns records");
        offset = last_offset_after(&bytes);
        black_box(bytes);
    }
    open
}

/// The offset after the last batch in `bytes` (base offset + last offset
/// delta + 1), read from the batch headers the log returned.
fn last_offset_after(bytes: &Bytes) -> i64 {
    let mut position = 0;
    let mut next = 0;
    while position + 12 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[position..position + 8].try_into().unwrap());
        let length =
            i32::from_be_bytes(bytes[position + 8..position + 12].try_into().unwrap()) as usize;
        let delta =
            i32::from_be_bytes(bytes[position + 23..position + 27].try_into().unwrap()) as i64;
        next = base + delta + 1;
        position += 12 + length;
    }
    next
}

/// A Produce request frame (header and body) as a client sends it.
fn produce_frame() -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut frame = BytesMut::new();
    header
        .encode(
            &mut frame,
            ApiKey::Produce.request_header_version(PRODUCE_VERSION),
        )
        .expect("encode header");
    produce_request(100)
        .encode(&mut frame, PRODUCE_VERSION)
        .expect("encode");
    frame.freeze()
}

fn produce_request(record_bytes: usize) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch(record_bytes))))])])
}

fn fetch_response() -> FetchResponse {
    let records: Vec<u8> = batch(100).repeat(BATCHES);
    FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions(vec![
            PartitionData::default().with_records(Some(Bytes::from(records)))
        ])])
}

#[library_benchmark]
#[bench::produce_request(setup = produce_frame)]
fn request_decode(frame: Bytes) -> (RequestHeader, ProduceRequest) {
    let mut body = frame.clone();
    let header = RequestHeader::decode(
        &mut body,
        ApiKey::Produce.request_header_version(PRODUCE_VERSION),
    )
    .expect("decode header");
    let request = ProduceRequest::decode(&mut body, header.request_api_version).expect("decode");
    (header, request)
}

#[library_benchmark]
#[bench::produce_request(args = (100), setup = produce_request)]
fn request_encode(request: ProduceRequest) -> BytesMut {
    let mut buffer = BytesMut::new();
    request
        .encode(&mut buffer, PRODUCE_VERSION)
        .expect("encode");
    buffer
}

#[library_benchmark]
#[bench::fetch_response(setup = fetch_response)]
fn response_encode(response: FetchResponse) -> BytesMut {
    let mut buffer = BytesMut::new();
    response.encode(&mut buffer, FETCH_VERSION).expect("encode");
    buffer
}

/// A small, fault-free scenario: two producers, one group of two consumers,
/// a broker restart in the middle; about ten simulated seconds.
const SHORT_SCENARIO: &str = r#"
name = "instructions"
checkers = []

[topology]
partitions = 3
topic = "events"

[[producers]]
count = 2
messages = 60
rate_per_sec = 20
keys = 10
idempotence = true

[[consumers]]
group = "readers"
count = 2
processing_ms = [1, 5]
commit = "auto"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000

[faults]
schedule = [{ at_ms = 2000, kind = "restart-broker", duration_ms = 500 }]

[phases]
fault_ms = 4000
heal_ms = 8000
"#;

fn short_scenario() -> Scenario {
    sluice_sim::runner::setup();
    Scenario::parse(SHORT_SCENARIO).expect("the pinned scenario parses")
}

#[library_benchmark]
#[bench::seed_1(setup = short_scenario)]
fn simulation(scenario: Scenario) -> String {
    let outcome = sluice_sim::runner::run_seed(&scenario, 1);
    assert!(
        outcome.failed_checkers().is_empty() && outcome.panic.is_none(),
        "the pinned scenario passes: {:?} {:?}",
        outcome.failed_checkers(),
        outcome.panic
    );
    outcome.trace_hash
}

library_benchmark_group!(name = log; benchmarks = append, fetch);
library_benchmark_group!(name = codec; benchmarks = request_decode, request_encode, response_encode);
library_benchmark_group!(name = sim; benchmarks = simulation);

main!(library_benchmark_groups = log, codec, sim);
