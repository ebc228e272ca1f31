//! The broker through its wire protocol: every advertised API and version,
//! Kafka's error codes, long polls, restarts, and bad input that must never
//! panic or hurt other connections.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;
use sluice::broker::{Broker, HandleOutcome};
use sluice::log::testing::encode_batch;
use sluice::testing::{start_broker, start_broker_on, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// As in the `sluice` binary: a malformed frame must not abort the process.
#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

/// The shape of input the fuzzer found: a request whose array claims more
/// elements than memory holds. It must be refused, not abort the broker.
#[tokio::test]
async fn a_frame_claiming_a_huge_array_is_refused_not_fatal() {
    let test = start_broker(test_config()).await;
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::Metadata as i16);
    raw.put_i16(0);
    raw.put_i32(1);
    raw.put_i16(-1);
    raw.put_i32(i32::MAX);
    raw.put_u8(0);
    let outcome = test.broker.handle(raw.freeze(), "/x").await;
    assert!(matches!(outcome, HandleOutcome::Close(_)), "{outcome:?}");
}

fn frame<R: Encodable>(api_key: ApiKey, version: i16, request: &R) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    request.encode(&mut buf, version).unwrap();
    buf.freeze()
}

async fn call<Req: Encodable, Resp: Decodable>(
    broker: &Broker,
    api_key: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    match broker
        .handle(frame(api_key, version, request), "/127.0.0.1")
        .await
    {
        HandleOutcome::Respond(mut bytes) => {
            let size = bytes.get_i32() as usize;
            assert_eq!(size, bytes.len());
            let header =
                ResponseHeader::decode(&mut bytes, api_key.response_header_version(version))
                    .unwrap();
            assert_eq!(header.correlation_id, 7);
            Resp::decode(&mut bytes, version).unwrap()
        }
        other => panic!("{api_key:?} v{version}: expected a response, got {other:?}"),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce_request(topic: &str, partition: i32, records: Vec<u8>, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records.into()))])])
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn list_offsets_request(topic: &str, timestamp: i64) -> ListOffsetsRequest {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])])
}

fn commit_request(topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])])
}

fn offset_fetch_request(topic: &str) -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(vec![0, 1])]))
}

async fn produce_one(broker: &Broker, topic: &str, batch: Vec<u8>) -> (i16, i64) {
    let response: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        9,
        &produce_request(topic, 0, batch, -1),
    )
    .await;
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[tokio::test]
async fn every_advertised_api_answers_at_every_advertised_version() {
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 1, -1, false).await.unwrap();
    produce_one(
        &test.broker,
        "t",
        encode_batch(&[b"x".as_slice()], 1, -1, -1, -1),
    )
    .await;
    let versions: ApiVersionsResponse = call(
        &test.broker,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .await;
    assert_eq!(versions.error_code, 0);
    assert!(versions.api_keys.len() >= 17);
    for api in &versions.api_keys {
        let key = ApiKey::try_from(api.api_key).unwrap();
        for version in api.min_version..=api.max_version {
            let request = match key {
                ApiKey::Produce => {
                    let batch = encode_batch(&[b"v".as_slice()], 1, -1, -1, -1);
                    frame(key, version, &produce_request("t", 0, batch, 1))
                }
                ApiKey::Fetch => frame(key, version, &fetch_request("t", 0, 0)),
                ApiKey::ListOffsets => frame(key, version, &list_offsets_request("t", -1)),
                ApiKey::Metadata => {
                    frame(key, version, &MetadataRequest::default().with_topics(None))
                }
                ApiKey::OffsetCommit => frame(key, version, &commit_request("t", 0, 1)),
                ApiKey::OffsetFetch if version < 8 => {
                    frame(key, version, &offset_fetch_request("t"))
                }
                ApiKey::OffsetFetch => frame(key, version, &OffsetFetchRequest::default()),
                ApiKey::FindCoordinator => frame(key, version, &FindCoordinatorRequest::default()),
                ApiKey::JoinGroup => frame(key, version, &JoinGroupRequest::default()),
                ApiKey::Heartbeat => frame(key, version, &HeartbeatRequest::default()),
                ApiKey::LeaveGroup => frame(key, version, &LeaveGroupRequest::default()),
                ApiKey::SyncGroup => frame(key, version, &SyncGroupRequest::default()),
                ApiKey::DescribeGroups => frame(key, version, &DescribeGroupsRequest::default()),
                ApiKey::ListGroups => frame(key, version, &ListGroupsRequest::default()),
                ApiKey::ApiVersions => frame(key, version, &ApiVersionsRequest::default()),
                ApiKey::CreateTopics => frame(key, version, &CreateTopicsRequest::default()),
                ApiKey::DeleteTopics => frame(key, version, &DeleteTopicsRequest::default()),
                ApiKey::InitProducerId => frame(key, version, &InitProducerIdRequest::default()),
                // A one-node broker has no quorum to step: these answer
                // with an error code, never a hang or a closed connection.
                ApiKey::OffsetForLeaderEpoch => {
                    frame(key, version, &OffsetForLeaderEpochRequest::default())
                }
                ApiKey::Vote => frame(key, version, &VoteRequest::default()),
                ApiKey::BeginQuorumEpoch => {
                    frame(key, version, &BeginQuorumEpochRequest::default())
                }
                ApiKey::EndQuorumEpoch => frame(key, version, &EndQuorumEpochRequest::default()),
                ApiKey::DescribeQuorum => frame(key, version, &DescribeQuorumRequest::default()),
                ApiKey::BrokerRegistration => {
                    frame(key, version, &BrokerRegistrationRequest::default())
                }
                ApiKey::AlterPartition => frame(key, version, &AlterPartitionRequest::default()),
                ApiKey::BrokerHeartbeat => frame(key, version, &BrokerHeartbeatRequest::default()),
                ApiKey::DescribeCluster => frame(key, version, &DescribeClusterRequest::default()),
                ApiKey::DescribeConfigs => frame(key, version, &describe_topic_configs("t")),
                ApiKey::AlterConfigs => frame(key, version, &AlterConfigsRequest::default()),
                ApiKey::IncrementalAlterConfigs => {
                    frame(key, version, &IncrementalAlterConfigsRequest::default())
                }
                ApiKey::CreatePartitions => {
                    frame(key, version, &CreatePartitionsRequest::default())
                }
                ApiKey::DeleteGroups => frame(key, version, &DeleteGroupsRequest::default()),
                ApiKey::OffsetDelete => frame(key, version, &OffsetDeleteRequest::default()),
                ApiKey::DeleteRecords => frame(key, version, &delete_records("t", &[(0, 0)])),
                ApiKey::DescribeTopicPartitions => {
                    frame(key, version, &DescribeTopicPartitionsRequest::default())
                }
                ApiKey::ElectLeaders => frame(key, version, &ElectLeadersRequest::default()),
                other => panic!("advertised but untested: {other:?}"),
            };
            match test.broker.handle(request, "/127.0.0.1").await {
                HandleOutcome::Respond(_) => {}
                other => panic!("{key:?} v{version}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn api_versions_beyond_our_range_gets_the_kip_511_fallback() {
    let test = start_broker(test_config()).await;
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::ApiVersions as i16);
    raw.put_i16(99);
    raw.put_i32(7);
    raw.put_i16(-1);
    let HandleOutcome::Respond(mut bytes) = test.broker.handle(raw.freeze(), "/x").await else {
        panic!("expected the fallback response");
    };
    bytes.advance(4);
    let header = ResponseHeader::decode(&mut bytes, 0).unwrap();
    assert_eq!(header.correlation_id, 7);
    let response = ApiVersionsResponse::decode(&mut bytes, 0).unwrap();
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedVersion.code()
    );
    assert!(!response.api_keys.is_empty());
}

#[tokio::test]
async fn produce_errors_carry_the_right_kafka_codes() {
    let test = start_broker(test_config()).await;
    let broker = &test.broker;
    broker.create_topic("t", 1, -1, false).await.unwrap();
    let batch = encode_batch(&[b"ok".as_slice()], 1, -1, -1, -1);
    assert_eq!(produce_one(broker, "t", batch.clone()).await, (0, 0));
    let mut corrupt = batch.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert_eq!(
        produce_one(broker, "t", corrupt).await.0,
        ResponseError::CorruptMessage.code()
    );
    assert_eq!(
        produce_one(broker, "missing", batch.clone()).await.0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let huge = encode_batch(&[vec![0u8; 2 << 20].as_slice()], 1, -1, -1, -1);
    assert_eq!(
        produce_one(broker, "t", huge).await.0,
        ResponseError::MessageTooLarge.code()
    );
    let response: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        9,
        &produce_request("t", 0, batch.clone(), 2),
    )
    .await;
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidRequiredAcks.code()
    );
    // Nothing but the first batch was appended.
    let offsets = broker.partition("t", 0).unwrap().offsets().await.unwrap();
    assert_eq!(offsets.log_end_offset, 1);
    // acks=0 gets no response at all.
    let silent = broker
        .handle(
            frame(ApiKey::Produce, 9, &produce_request("t", 0, batch, 0)),
            "/x",
        )
        .await;
    assert!(matches!(silent, HandleOutcome::NoResponse));
}

#[tokio::test]
async fn idempotent_retries_return_the_original_offset_and_gaps_are_refused() {
    let test = start_broker(test_config()).await;
    let broker = &test.broker;
    broker.create_topic("t", 1, -1, false).await.unwrap();
    let init: InitProducerIdResponse = call(
        broker,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let first = encode_batch(&[b"a".as_slice(), b"b"], 1, pid, 0, 0);
    assert_eq!(produce_one(broker, "t", first.clone()).await, (0, 0));
    assert_eq!(
        produce_one(broker, "t", first).await,
        (0, 0),
        "a retry gets its original offset"
    );
    let gap = encode_batch(&[b"c".as_slice()], 1, pid, 0, 5);
    assert_eq!(
        produce_one(broker, "t", gap).await.0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    let next = encode_batch(&[b"c".as_slice()], 1, pid, 0, 2);
    assert_eq!(produce_one(broker, "t", next).await, (0, 2));
}

#[tokio::test]
async fn fetch_long_polls_until_data_arrives_and_reports_out_of_range() {
    let test = start_broker(test_config()).await;
    let broker = test.broker.clone();
    broker.create_topic("t", 1, -1, false).await.unwrap();
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let response: FetchResponse =
                call(&broker, ApiKey::Fetch, 11, &fetch_request("t", 0, 10_000)).await;
            response
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "an empty partition parks the fetch");
    produce_one(
        &broker,
        "t",
        encode_batch(&[b"wake".as_slice()], 1, -1, -1, -1),
    )
    .await;
    let response = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken")
        .unwrap();
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, 1);
    assert!(!partition.records.as_ref().unwrap().is_empty());
    let response: FetchResponse = call(&broker, ApiKey::Fetch, 11, &fetch_request("t", 5, 0)).await;
    assert_eq!(
        response.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
}

#[tokio::test]
async fn data_and_committed_offsets_survive_a_restart() {
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 2, -1, false).await.unwrap();
    produce_one(
        &test.broker,
        "t",
        encode_batch(&[b"kept".as_slice()], 1, -1, -1, -1),
    )
    .await;
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let response: OffsetCommitResponse = call(&test.broker, ApiKey::OffsetCommit, 8, &commit).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    test.broker.flush_all().await;
    let storage = test.storage.clone();
    drop(test);
    let restarted = start_broker_on(test_config(), storage).await;
    assert_eq!(restarted.broker.topic("t").unwrap().partitions.len(), 2);
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name("t"))
            .with_partition_indexes(vec![0, 1])]));
    let response: OffsetFetchResponse =
        call(&restarted.broker, ApiKey::OffsetFetch, 7, &fetch).await;
    let partitions = &response.topics[0].partitions;
    assert_eq!(
        (
            partitions[0].committed_offset,
            partitions[1].committed_offset
        ),
        (1, -1)
    );
    let offsets = restarted
        .broker
        .partition("t", 0)
        .unwrap()
        .offsets()
        .await
        .unwrap();
    assert_eq!(offsets.log_end_offset, 1);
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_own_connection() {
    let config = sluice::config::BrokerConfig {
        socket_request_max_bytes: 1024,
        ..test_config()
    };
    let test = start_broker(config).await;
    let mut bad = tokio::net::TcpStream::connect(&test.address).await.unwrap();
    let mut good = tokio::net::TcpStream::connect(&test.address).await.unwrap();
    bad.write_all(&(1_000_000i32).to_be_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "the oversized connection is closed"
    );
    let request = frame(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    good.write_all(&(request.len() as i32).to_be_bytes())
        .await
        .unwrap();
    good.write_all(&request).await.unwrap();
    let mut size = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), good.read_exact(&mut size))
        .await
        .unwrap()
        .unwrap();
    assert!(
        i32::from_be_bytes(size) > 0,
        "the other connection still works"
    );
}

fn valid_frames() -> Vec<Bytes> {
    let batch = encode_batch(&[b"v".as_slice()], 1, -1, -1, -1);
    vec![
        frame(ApiKey::Produce, 9, &produce_request("t", 0, batch, -1)),
        frame(ApiKey::Fetch, 11, &fetch_request("t", 0, 0)),
        frame(ApiKey::Metadata, 9, &MetadataRequest::default()),
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        frame(ApiKey::JoinGroup, 5, &JoinGroupRequest::default()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_and_mutated_frames_never_panic(
        pick in 0usize..5,
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        truncate in any::<prop::sample::Index>(),
        random in prop::collection::vec(any::<u8>(), 0..64),
        use_random in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let test = start_broker(test_config()).await;
            test.broker.create_topic("t", 1, -1, false).await.unwrap();
            let input = if use_random {
                Bytes::from(random)
            } else {
                let mut bytes = valid_frames()[pick].to_vec();
                for (at, value) in &mutations {
                    let at = at.index(bytes.len());
                    bytes[at] = *value;
                }
                bytes.truncate(truncate.index(bytes.len() + 1));
                Bytes::from(bytes)
            };
            // Any outcome but a panic is acceptable; a long-poll fetch must still end.
            let outcome = tokio::time::timeout(Duration::from_secs(40), test.broker.handle(input, "/x")).await;
            assert!(outcome.is_ok(), "a request never finished");
        });
    }
}

/// A new generation is durable before any member hears of it: with a full
/// disk the rebalance is refused (retriable), never answered with a
/// generation that a restart could hand out again.
#[tokio::test]
async fn a_generation_that_cannot_be_persisted_is_never_handed_out() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    let test = start_broker(test_config()).await;
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"m"))]);
    // KIP-394: a new member first gets its id, then joins with it.
    let first: JoinGroupResponse = call(&test.broker, ApiKey::JoinGroup, 5, &join).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let join = join.with_member_id(first.member_id);
    test.storage.set_capacity_bytes(Some(0));
    let refused: JoinGroupResponse = call(&test.broker, ApiKey::JoinGroup, 5, &join).await;
    assert_eq!(
        refused.error_code,
        ResponseError::CoordinatorNotAvailable.code()
    );
    assert_eq!(refused.generation_id, -1);
    // Once the disk has room again and the broker restarted (a storage
    // error takes the offsets log offline until then), joining works, and
    // with a generation no member has seen.
    test.storage.set_capacity_bytes(None);
    let storage = test.storage.clone();
    drop(test);
    let restarted = start_broker_on(test_config(), storage).await;
    let join = join.with_member_id(StrBytes::from_static_str(""));
    let first: JoinGroupResponse = call(&restarted.broker, ApiKey::JoinGroup, 5, &join).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let join = join.with_member_id(first.member_id);
    let joined: JoinGroupResponse = call(&restarted.broker, ApiKey::JoinGroup, 5, &join).await;
    assert_eq!(joined.error_code, 0);
    assert!(joined.generation_id >= 1);
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_where_an_epoch_ends() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let test = start_broker(test_config()).await;
    let broker = &test.broker;
    broker.create_topic("t", 1, -1, false).await.unwrap();
    for value in [b"a".as_slice(), b"b", b"c"] {
        assert_eq!(
            produce_one(broker, "t", encode_batch(&[value], 1, -1, -1, -1))
                .await
                .0,
            0
        );
    }
    let ask = |topic: &str, current_leader_epoch: i32, leader_epoch: i32| {
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_leader_epoch(leader_epoch)])])
    };
    let answer = |response: OffsetForLeaderEpochResponse| {
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    for version in 2..=4 {
        // One broker has led every batch in epoch 0: it ends at the log end.
        let response: OffsetForLeaderEpochResponse = call(
            broker,
            ApiKey::OffsetForLeaderEpoch,
            version,
            &ask("t", -1, 0),
        )
        .await;
        assert_eq!(answer(response), (0, 0, 3));
        // A later epoch than any in the log answers the latest one.
        let response = call(
            broker,
            ApiKey::OffsetForLeaderEpoch,
            version,
            &ask("t", 0, 7),
        )
        .await;
        assert_eq!(answer(response), (0, 0, 3));
        // A stale current leader epoch is fenced, a future one unknown.
        let response = call(
            broker,
            ApiKey::OffsetForLeaderEpoch,
            version,
            &ask("t", 5, 0),
        )
        .await;
        assert_eq!(answer(response).0, ResponseError::UnknownLeaderEpoch.code());
        let response = call(
            broker,
            ApiKey::OffsetForLeaderEpoch,
            version,
            &ask("missing", -1, 0),
        )
        .await;
        assert_eq!(
            answer(response).0,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
}

#[tokio::test]
async fn list_groups_v5_filters_by_group_type_and_every_group_is_classic() {
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 1, -1, false).await.unwrap();
    let committed: OffsetCommitResponse = call(
        &test.broker,
        ApiKey::OffsetCommit,
        2,
        &commit_request("t", 0, 1),
    )
    .await;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let list = |types: &[&'static str]| {
        ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|t| StrBytes::from_static_str(t)).collect())
    };
    let all: ListGroupsResponse = call(&test.broker, ApiKey::ListGroups, 5, &list(&[])).await;
    assert_eq!(all.groups.len(), 1);
    assert_eq!(all.groups[0].group_id.0.as_str(), "g");
    assert_eq!(all.groups[0].group_type.as_str(), "classic");
    // Kafka matches group types case-insensitively.
    let classic: ListGroupsResponse =
        call(&test.broker, ApiKey::ListGroups, 5, &list(&["Classic"])).await;
    assert_eq!(classic.groups.len(), 1);
    // The new consumer protocol's groups (KIP-848): sluice has none.
    let consumer: ListGroupsResponse =
        call(&test.broker, ApiKey::ListGroups, 5, &list(&["consumer"])).await;
    assert!(consumer.groups.is_empty(), "{consumer:?}");
}

#[tokio::test]
async fn metadata_reports_every_operation_as_authorized_when_asked_as_kafka_without_an_authorizer()
{
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 1, -1, false).await.unwrap();
    let topic = || {
        vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic_name("t"))),
        ]
    };
    let asked = MetadataRequest::default()
        .with_topics(Some(topic()))
        .with_include_cluster_authorized_operations(true)
        .with_include_topic_authorized_operations(true);
    let answer: MetadataResponse = call(&test.broker, ApiKey::Metadata, 10, &asked).await;
    // READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS and
    // ALTER_CONFIGS: bits 3 to 8, 10 and 11 of the AclOperation codes.
    assert_eq!(answer.topics[0].topic_authorized_operations, 3576);
    // CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
    // ALTER_CONFIGS and IDEMPOTENT_WRITE.
    assert_eq!(answer.cluster_authorized_operations, 8096);
    // Not asked: Kafka's "not requested" value.
    let unasked = MetadataRequest::default().with_topics(Some(topic()));
    let answer: MetadataResponse = call(&test.broker, ApiKey::Metadata, 10, &unasked).await;
    assert_eq!(answer.topics[0].topic_authorized_operations, i32::MIN);
    assert_eq!(answer.cluster_authorized_operations, i32::MIN);
}

#[tokio::test]
async fn describe_cluster_names_the_brokers_the_cluster_and_its_controller() {
    let test = start_broker(test_config()).await;
    let node = test_config().node_id;
    for version in [0, 1] {
        // Endpoint type 1 (brokers) is the default, and v0's only one.
        let request =
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
        let answer: DescribeClusterResponse =
            call(&test.broker, ApiKey::DescribeCluster, version, &request).await;
        assert_eq!(answer.error_code, 0, "v{version}");
        assert_eq!(answer.controller_id.0, node);
        assert_eq!(answer.brokers.len(), 1);
        assert_eq!(answer.brokers[0].broker_id.0, node);
        assert!(!answer.cluster_id.is_empty());
        assert_eq!(answer.cluster_authorized_operations, 8096);
    }
    // The controllers' endpoints (type 2) are not described here.
    let controllers = DescribeClusterRequest::default().with_endpoint_type(2);
    let answer: DescribeClusterResponse =
        call(&test.broker, ApiKey::DescribeCluster, 1, &controllers).await;
    assert_eq!(
        answer.error_code,
        kafka_protocol::error::ResponseError::UnsupportedEndpointType.code()
    );
}

fn describe_topic_configs(topic: &str) -> DescribeConfigsRequest {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)])
}

/// `(value, source)` of each of a topic's configs, by name.
async fn topic_configs(
    broker: &Broker,
    topic: &str,
) -> std::collections::BTreeMap<String, (String, i8)> {
    let response: DescribeConfigsResponse = call(
        broker,
        ApiKey::DescribeConfigs,
        4,
        &describe_topic_configs(topic),
    )
    .await;
    assert_eq!(response.results[0].error_code, 0, "{response:?}");
    response.results[0]
        .configs
        .iter()
        .map(|c| {
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            (c.name.to_string(), (value, c.config_source))
        })
        .collect()
}

fn create_with_configs(topic: &str, configs: &[(&str, &str)]) -> CreateTopicsRequest {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(1)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )])
}

fn incremental_alter(
    topic: &str,
    operations: &[(&str, i8, Option<&str>)],
) -> IncrementalAlterConfigsRequest {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_string(topic.to_string()))
        .with_configs(
            operations
                .iter()
                .map(|(name, operation, value)| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(name.to_string()))
                        .with_config_operation(*operation)
                        .with_value(value.map(|v| StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )])
}

/// Topic configs: created with the topic, refused when Kafka would refuse
/// them (or sluice cannot honour them), described with their sources,
/// altered in effect on the running partition, and kept across a restart.
#[tokio::test]
async fn topic_configs_are_validated_described_altered_live_and_survive_a_restart() {
    const DYNAMIC_TOPIC: i8 = 1;
    const DEFAULT: i8 = 5;
    let test = start_broker(test_config()).await;
    for (bad, code) in [
        (("retention.mss", "1"), ResponseError::InvalidConfig),
        (("retention.ms", "-7"), ResponseError::InvalidConfig),
        (("cleanup.policy", "archive"), ResponseError::InvalidConfig),
        (("segment.bytes", "1024"), ResponseError::InvalidConfig),
    ] {
        let response: CreateTopicsResponse = call(
            &test.broker,
            ApiKey::CreateTopics,
            7,
            &create_with_configs("bad", &[bad]),
        )
        .await;
        assert_eq!(response.topics[0].error_code, code.code(), "{bad:?}");
        assert!(
            response.topics[0].error_message.is_some(),
            "{bad:?} says why"
        );
    }
    assert!(test.broker.topic("bad").is_none());

    let create = create_with_configs(
        "t",
        &[("retention.ms", "60000"), ("max.message.bytes", "200")],
    );
    let response: CreateTopicsResponse = call(&test.broker, ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(response.topics[0].error_code, 0);
    let created = response.topics[0]
        .configs
        .as_ref()
        .expect("v5+ reports configs");
    assert!(created.iter().any(|c| c.name.as_str() == "retention.ms"
        && c.value.as_ref().map(|v| v.to_string()).as_deref() == Some("60000")
        && c.config_source == DYNAMIC_TOPIC));

    let configs = topic_configs(&test.broker, "t").await;
    assert_eq!(
        configs["retention.ms"],
        ("60000".to_string(), DYNAMIC_TOPIC)
    );
    assert_eq!(
        configs["segment.bytes"],
        ("1073741824".to_string(), DEFAULT)
    );
    assert_eq!(configs["cleanup.policy"], ("delete".to_string(), DEFAULT));

    // max.message.bytes=200 holds on the running partition...
    let big = encode_batch(&[vec![b'x'; 400].as_slice()], 1, -1, -1, -1);
    let (code, _) = produce_one(&test.broker, "t", big.clone()).await;
    assert_eq!(code, ResponseError::MessageTooLarge.code());
    // ...until it is raised, with no restart.
    let raise = incremental_alter("t", &[("max.message.bytes", 0, Some("100000"))]);
    let response: IncrementalAlterConfigsResponse =
        call(&test.broker, ApiKey::IncrementalAlterConfigs, 1, &raise).await;
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(produce_one(&test.broker, "t", big).await.0, 0);

    // Bad alterations change nothing.
    for (operations, code) in [
        (
            vec![("retention.ms", 2, Some("1"))],
            ResponseError::InvalidRequest,
        ),
        (
            vec![("no.such.key", 0, Some("1"))],
            ResponseError::InvalidConfig,
        ),
        (
            vec![("cleanup.policy", 2, Some("archive"))],
            ResponseError::InvalidConfig,
        ),
        (
            vec![("min.insync.replicas", 0, Some("0"))],
            ResponseError::InvalidConfig,
        ),
    ] {
        let response: IncrementalAlterConfigsResponse = call(
            &test.broker,
            ApiKey::IncrementalAlterConfigs,
            1,
            &incremental_alter("t", &operations),
        )
        .await;
        assert_eq!(
            response.responses[0].error_code,
            code.code(),
            "{operations:?}"
        );
    }
    let missing: IncrementalAlterConfigsResponse = call(
        &test.broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental_alter("nope", &[("retention.ms", 0, Some("1"))]),
    )
    .await;
    assert_eq!(
        missing.responses[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    // AlterConfigs replaces the overrides wholesale.
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let replace =
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("segment.ms"))
                .with_value(Some(StrBytes::from_static_str("3600000")))])]);
    let response: AlterConfigsResponse =
        call(&test.broker, ApiKey::AlterConfigs, 2, &replace).await;
    assert_eq!(response.responses[0].error_code, 0);
    let configs = topic_configs(&test.broker, "t").await;
    assert_eq!(
        configs["segment.ms"],
        ("3600000".to_string(), DYNAMIC_TOPIC)
    );
    assert_eq!(configs["retention.ms"].1, DEFAULT);
    assert_eq!(configs["max.message.bytes"].1, DEFAULT);

    // A broker's settings are described, read-only.
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let node_id = StrBytes::from_string(test.broker.config().node_id.to_string());
    let broker_request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(node_id.clone())]);
    let response: DescribeConfigsResponse =
        call(&test.broker, ApiKey::DescribeConfigs, 4, &broker_request).await;
    let node = response.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "node.id")
        .expect("node.id described");
    assert!(node.read_only);
    let broker_alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default(
        )
        .with_resource_type(4)
        .with_resource_name(node_id),
    ]);
    let response: IncrementalAlterConfigsResponse = call(
        &test.broker,
        ApiKey::IncrementalAlterConfigs,
        1,
        &broker_alter,
    )
    .await;
    assert_eq!(
        response.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );

    // The overrides survive a restart, and the partition runs with them.
    test.broker.flush_all().await;
    let storage = test.storage.clone();
    drop(test);
    let restarted = start_broker_on(test_config(), storage).await;
    let configs = topic_configs(&restarted.broker, "t").await;
    assert_eq!(
        configs["segment.ms"],
        ("3600000".to_string(), DYNAMIC_TOPIC)
    );
    let roll_ms = restarted
        .broker
        .partition("t", 0)
        .unwrap()
        .with_log(async |log| Ok(log.config().roll_ms))
        .await
        .unwrap();
    assert_eq!(roll_ms, 3_600_000);
}

/// A CreatePartitions topic: name, new count, and replica lists if placed
/// by hand.
type Growth<'a> = (&'a str, i32, Option<Vec<Vec<i32>>>);

fn grow(topics: &[Growth<'_>]) -> CreatePartitionsRequest {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    CreatePartitionsRequest::default().with_topics(
        topics
            .iter()
            .map(|(name, count, assignments)| {
                CreatePartitionsTopic::default()
                    .with_name(topic_name(name))
                    .with_count(*count)
                    .with_assignments(assignments.as_ref().map(|assignments| {
                        assignments
                            .iter()
                            .map(|ids| {
                                CreatePartitionsAssignment::default()
                                    .with_broker_ids(ids.iter().map(|id| BrokerId(*id)).collect())
                            })
                            .collect()
                    }))
            })
            .collect(),
    )
}

/// CreatePartitions on one node: the topic grows, the new partitions take
/// records and survive a restart; Kafka's errors for everything else.
#[tokio::test]
async fn create_partitions_grows_a_topic_and_refuses_what_kafka_refuses() {
    let test = start_broker(test_config()).await;
    let node = test.broker.config().node_id;
    test.broker.create_topic("t", 1, -1, false).await.unwrap();
    let codes = |response: CreatePartitionsResponse| -> Vec<i16> {
        response.results.iter().map(|r| r.error_code).collect()
    };
    let response: CreatePartitionsResponse = call(
        &test.broker,
        ApiKey::CreatePartitions,
        3,
        &grow(&[("t", 3, None)]),
    )
    .await;
    assert_eq!(codes(response), [0]);
    assert_eq!(test.broker.topic("t").unwrap().partitions.len(), 3);
    let batch = encode_batch(&[b"new".as_slice()], 1, -1, -1, -1);
    let request = produce_request("t", 2, batch, 1);
    let produced: ProduceResponse = call(&test.broker, ApiKey::Produce, 9, &request).await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);

    for (request, expected) in [
        (grow(&[("t", 3, None)]), ResponseError::InvalidPartitions),
        (grow(&[("t", 2, None)]), ResponseError::InvalidPartitions),
        (
            grow(&[("nope", 5, None)]),
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            grow(&[("t", 5, Some(vec![vec![node]]))]),
            ResponseError::InvalidReplicaAssignment,
        ),
        (
            grow(&[("t", 4, Some(vec![vec![node + 1]]))]),
            ResponseError::InvalidReplicaAssignment,
        ),
        (
            grow(&[("t", 10_001, None)]),
            ResponseError::InvalidPartitions,
        ),
        (
            grow(&[("__consumer_offsets", 2, None)]),
            ResponseError::InvalidPartitions,
        ),
    ] {
        let response: CreatePartitionsResponse =
            call(&test.broker, ApiKey::CreatePartitions, 3, &request).await;
        assert_eq!(codes(response), [expected.code()], "{request:?}");
    }
    let twice: CreatePartitionsResponse = call(
        &test.broker,
        ApiKey::CreatePartitions,
        3,
        &grow(&[("t", 4, None), ("t", 5, None)]),
    )
    .await;
    assert_eq!(codes(twice), [ResponseError::InvalidRequest.code(); 2]);
    let validated: CreatePartitionsResponse = call(
        &test.broker,
        ApiKey::CreatePartitions,
        3,
        &grow(&[("t", 4, Some(vec![vec![node]]))]).with_validate_only(true),
    )
    .await;
    assert_eq!(codes(validated), [0]);
    assert_eq!(
        test.broker.topic("t").unwrap().partitions.len(),
        3,
        "validate_only changes nothing"
    );

    test.broker.flush_all().await;
    let storage = test.storage.clone();
    drop(test);
    let restarted = start_broker_on(test_config(), storage).await;
    assert_eq!(restarted.broker.topic("t").unwrap().partitions.len(), 3);
    let offsets = restarted
        .broker
        .partition("t", 2)
        .unwrap()
        .offsets()
        .await
        .unwrap();
    assert_eq!(offsets.log_end_offset, 1);
}

fn simple_commit(group: &str, topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])])
}

async fn committed(broker: &Broker, group: &str, topic: &str, partitions: Vec<i32>) -> Vec<i64> {
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(partitions)]));
    let response: OffsetFetchResponse = call(broker, ApiKey::OffsetFetch, 7, &fetch).await;
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

/// DeleteGroups and OffsetDelete: what they remove stays removed across a
/// restart; a group with members is not deleted; unknown groups are
/// GROUP_ID_NOT_FOUND.
#[tokio::test]
async fn deleted_groups_and_offsets_stay_deleted_across_a_restart() {
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 2, -1, false).await.unwrap();
    for (group, partition, offset) in [("gone", 0, 3), ("kept", 0, 4), ("kept", 1, 5)] {
        let response: OffsetCommitResponse = call(
            &test.broker,
            ApiKey::OffsetCommit,
            8,
            &simple_commit(group, "t", partition, offset),
        )
        .await;
        assert_eq!(response.topics[0].partitions[0].error_code, 0);
    }
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![
        GroupId(StrBytes::from_static_str("gone")),
        GroupId(StrBytes::from_static_str("never")),
    ]);
    let response: DeleteGroupsResponse = call(&test.broker, ApiKey::DeleteGroups, 2, &delete).await;
    let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [0, ResponseError::GroupIdNotFound.code()]);

    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let offset_delete = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("kept")))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(1)
            ])]);
    let response: OffsetDeleteResponse =
        call(&test.broker, ApiKey::OffsetDelete, 0, &offset_delete).await;
    assert_eq!(response.error_code, 0);
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        committed(&test.broker, "kept", "t", vec![0, 1]).await,
        [4, -1]
    );

    let storage = test.storage.clone();
    drop(test);
    let restarted = start_broker_on(test_config(), storage).await;
    assert_eq!(
        committed(&restarted.broker, "gone", "t", vec![0]).await,
        [-1]
    );
    assert_eq!(
        committed(&restarted.broker, "kept", "t", vec![0, 1]).await,
        [4, -1]
    );
    let listed: ListGroupsResponse = call(
        &restarted.broker,
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default(),
    )
    .await;
    let ids: Vec<String> = listed
        .groups
        .iter()
        .map(|g| g.group_id.to_string())
        .collect();
    assert_eq!(ids, ["kept"]);
}

fn delete_records(topic: &str, partitions: &[(i32, i64)]) -> DeleteRecordsRequest {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|(index, offset)| {
                        DeleteRecordsPartition::default()
                            .with_partition_index(*index)
                            .with_offset(*offset)
                    })
                    .collect(),
            )])
}

/// DeleteRecords: the log start moves up to the asked offset (the high
/// watermark for -1), reads below it are out of range, and it holds across
/// a restart; an offset past the high watermark is OFFSET_OUT_OF_RANGE.
#[tokio::test]
async fn delete_records_moves_the_log_start_durably() {
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 2, -1, false).await.unwrap();
    for value in [b"a", b"b", b"c", b"d", b"e"] {
        produce_one(
            &test.broker,
            "t",
            encode_batch(&[value.as_slice()], 1, -1, -1, -1),
        )
        .await;
    }
    let results = |response: DeleteRecordsResponse| -> Vec<(i64, i16)> {
        response.topics[0]
            .partitions
            .iter()
            .map(|p| (p.low_watermark, p.error_code))
            .collect()
    };
    let response: DeleteRecordsResponse = call(
        &test.broker,
        ApiKey::DeleteRecords,
        2,
        &delete_records("t", &[(0, 3), (1, 9), (7, 0)]),
    )
    .await;
    assert_eq!(
        results(response),
        [
            (3, 0),
            (-1, ResponseError::OffsetOutOfRange.code()),
            (-1, ResponseError::UnknownTopicOrPartition.code())
        ]
    );
    let earliest: ListOffsetsResponse = call(
        &test.broker,
        ApiKey::ListOffsets,
        6,
        &list_offsets_request("t", -2),
    )
    .await;
    assert_eq!(earliest.topics[0].partitions[0].offset, 3);
    let below: FetchResponse =
        call(&test.broker, ApiKey::Fetch, 12, &fetch_request("t", 2, 0)).await;
    assert_eq!(
        below.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );

    let storage = test.storage.clone();
    drop(test);
    let restarted = start_broker_on(test_config(), storage).await;
    let offsets = restarted
        .broker
        .partition("t", 0)
        .unwrap()
        .offsets()
        .await
        .unwrap();
    assert_eq!((offsets.log_start_offset, offsets.log_end_offset), (3, 5));
    let everything: DeleteRecordsResponse = call(
        &restarted.broker,
        ApiKey::DeleteRecords,
        2,
        &delete_records("t", &[(0, -1)]),
    )
    .await;
    assert_eq!(results(everything), [(5, 0)]);
}

/// DescribeTopicPartitions: topics in name order, at most the asked number
/// of partitions per answer, and a cursor that resumes where it stopped.
#[tokio::test]
async fn describe_topic_partitions_pages_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let test = start_broker(test_config()).await;
    test.broker.create_topic("b", 3, -1, false).await.unwrap();
    test.broker.create_topic("a", 2, -1, false).await.unwrap();
    let ask = |cursor: Option<(&str, i32)>| {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                ["b", "a", "missing"]
                    .iter()
                    .map(|name| TopicRequest::default().with_name(topic_name(name)))
                    .collect(),
            )
            .with_response_partition_limit(3)
            .with_cursor(cursor.map(|(topic, partition)| {
                Cursor::default()
                    .with_topic_name(topic_name(topic))
                    .with_partition_index(partition)
            }))
    };
    let listed = |response: &DescribeTopicPartitionsResponse| -> Vec<(String, i16, Vec<i32>)> {
        response
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    t.error_code,
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect()
    };
    let first: DescribeTopicPartitionsResponse =
        call(&test.broker, ApiKey::DescribeTopicPartitions, 0, &ask(None)).await;
    assert_eq!(
        listed(&first),
        [
            ("a".to_string(), 0, vec![0, 1]),
            ("b".to_string(), 0, vec![0])
        ]
    );
    let cursor = first.next_cursor.as_ref().expect("cut at the limit");
    assert_eq!(
        (cursor.topic_name.as_str(), cursor.partition_index),
        ("b", 1)
    );
    let rest: DescribeTopicPartitionsResponse = call(
        &test.broker,
        ApiKey::DescribeTopicPartitions,
        0,
        &ask(Some(("b", 1))),
    )
    .await;
    assert_eq!(
        listed(&rest),
        [
            ("b".to_string(), 0, vec![1, 2]),
            (
                "missing".to_string(),
                ResponseError::UnknownTopicOrPartition.code(),
                vec![]
            )
        ]
    );
    assert!(rest.next_cursor.is_none());
    let node = test.broker.config().node_id;
    let partition = &rest.topics[0].partitions[0];
    assert_eq!(
        (partition.leader_id.0, partition.isr_nodes.len()),
        (node, 1)
    );
}

/// ListOffsets v7's MAX_TIMESTAMP (KIP-734): the offset of the record with
/// the largest timestamp, the lowest such offset on a tie; nothing on an
/// empty partition; INVALID_REQUEST before v7.
#[tokio::test]
async fn list_offsets_v7_finds_the_largest_timestamp() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 2, -1, false).await.unwrap();
    for timestamp in [1_000, 5_000, 3_000, 5_000, 2_000] {
        produce_one(
            &test.broker,
            "t",
            encode_batch(&[b"x".as_slice()], timestamp, -1, -1, -1),
        )
        .await;
    }
    let ask = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-3),
                ListOffsetsPartition::default()
                    .with_partition_index(1)
                    .with_timestamp(-3),
            ])]);
    let response: ListOffsetsResponse = call(&test.broker, ApiKey::ListOffsets, 7, &ask).await;
    let found: Vec<(i16, i64, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.offset, p.timestamp))
        .collect();
    assert_eq!(found, [(0, 1, 5_000), (0, -1, -1)]);
    let old: ListOffsetsResponse = call(&test.broker, ApiKey::ListOffsets, 6, &ask).await;
    assert_eq!(
        old.topics[0].partitions[0].error_code,
        ResponseError::InvalidRequest.code()
    );
}

/// ElectLeaders on one node: its leaders are always the preferred ones.
#[tokio::test]
async fn elect_leaders_on_one_node_finds_nothing_to_elect() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let test = start_broker(test_config()).await;
    test.broker.create_topic("t", 2, -1, false).await.unwrap();
    let ask = |topic: &str, election_type: i8| {
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![0, 1])]))
    };
    for (topic, election_type, expected) in [
        ("t", 0, ResponseError::ElectionNotNeeded),
        ("t", 1, ResponseError::ElectionNotNeeded),
        ("nope", 0, ResponseError::UnknownTopicOrPartition),
    ] {
        let response: ElectLeadersResponse = call(
            &test.broker,
            ApiKey::ElectLeaders,
            2,
            &ask(topic, election_type),
        )
        .await;
        let codes: Vec<i16> = response.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, [expected.code(); 2], "{topic} {election_type}");
    }
    let all: ElectLeadersResponse = call(
        &test.broker,
        ApiKey::ElectLeaders,
        2,
        &ElectLeadersRequest::default().with_topic_partitions(None),
    )
    .await;
    assert!(all.replica_election_results.is_empty(), "{all:?}");
}
