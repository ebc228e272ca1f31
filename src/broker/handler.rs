//! Request handling: one size-delimited frame in, one response frame out.
//!
//! Decoding and encoding use the `kafka-protocol` crate. Bad input never
//! panics: an unknown API key, an unsupported version (except ApiVersions,
//! which gets KIP-511's fallback answer) or an undecodable body closes the
//! connection, which is what Kafka does.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::wire::Summarise;
use super::Broker;
use crate::group::{CommitRequest, CommittedOffset, JoinRequest, LeavingMember, NO_CONNECTION};
use crate::observe::{Direction, Fact};

/// The versions this broker implements, and advertises in ApiVersions.
/// Topics are identified by name, so Produce and Fetch stop before the
/// versions that use topic ids (13).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
];

/// Fetch long polls wait at most this long whatever the client asks, so a
/// connection is never parked indefinitely.
const FETCH_MAX_WAIT_MS_LIMIT: i32 = 30_000;

/// JoinGroup and SyncGroup wait for the rebalance; past this margin beyond
/// the rebalance timeout the broker answers rather than hold the connection.
const GROUP_WAIT_MARGIN_MS: u64 = 5_000;

/// A topic's partitions with their committed offsets, if any.
type TopicCommits = (String, Vec<(i32, Option<CommittedOffset>)>);

/// What the connection loop does with a request.
#[derive(Debug)]
pub enum HandleOutcome {
    /// Write this frame (size prefix included).
    Respond(Bytes),
    /// Produce with acks=0: no response at all.
    NoResponse,
    /// Close the connection, logging why.
    Close(String),
}

fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|(_, min, max)| (*min, *max))
}

/// Fences a request that names a leader epoch other than the partition's:
/// an older one is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.
/// -1 means the client did not say.
fn leader_epoch_error(requested: i32, current: i32) -> Option<i16> {
    match requested {
        r if r < 0 || r == current => None,
        r if r < current => Some(ResponseError::FencedLeaderEpoch.code()),
        _ => Some(ResponseError::UnknownLeaderEpoch.code()),
    }
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Per-connection facts a handler may need.
pub struct RequestContext {
    pub client_id: String,
    pub client_host: String,
    /// The connection's number, in accept order ([`NO_CONNECTION`] when
    /// unknown): the group coordinator fences commits from a connection a
    /// member has since replaced.
    pub connection: u64,
}

/// How long an OffsetCommit waits for its write to become durable before
/// the broker answers REQUEST_TIMED_OUT (the write may still land; the
/// client treats the outcome as unknown). Kafka's own default
/// `offsets.commit.timeout.ms`.
const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

fn frame<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Result<Bytes, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|error| format!("encoding {api_key:?} v{version} response header: {error}"))?;
    response
        .encode(&mut buf, version)
        .map_err(|error| format!("encoding {api_key:?} v{version} response: {error}"))?;
    let size = (buf.len() - 4) as i32;
    (&mut buf[..4]).put_i32(size);
    Ok(buf.freeze())
}

fn api_versions_list() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

macro_rules! dispatch {
    ($self:ident, $body:ident, $api_key:ident, $version:ident, $correlation_id:ident, $context:ident,
     $( $key:ident => $request:ty => $method:ident ),* $(,)?) => {
        match $api_key {
            $(
                ApiKey::$key => {
                    let request = match <$request>::decode(&mut $body, $version) {
                        Ok(request) => request,
                        Err(error) => {
                            return HandleOutcome::Close(format!("undecodable {:?} v{} request: {error}", $api_key, $version));
                        }
                    };
                    $self.wire_event(Direction::Request, $api_key, $version, $correlation_id, &$context, &request);
                    match $self.$method(request, $version, &$context).await {
                        Some(response) => match {
                            $self.wire_event(Direction::Response, $api_key, $version, $correlation_id, &$context, &response);
                            frame($api_key, $version, $correlation_id, &response)
                        } {
                            Ok(bytes) => HandleOutcome::Respond(bytes),
                            Err(error) => HandleOutcome::Close(error),
                        },
                        None => HandleOutcome::NoResponse,
                    }
                }
            )*
            other => HandleOutcome::Close(format!("API {other:?} is not implemented")),
        }
    };
}

impl Broker {
    /// Reports a request or response as a [`Fact::Wire`] when the observer
    /// asks for them (the simulation's `--trace`), and as a `sluice::wire`
    /// debug log line when that is enabled. Summarised only then.
    fn wire_event(
        &self,
        direction: Direction,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        context: &RequestContext,
        message: &dyn Summarise,
    ) {
        let observe = self.observed().wants_wire();
        let log = tracing::enabled!(target: "sluice::wire", tracing::Level::DEBUG);
        if !observe && !log {
            return;
        }
        let summary = message.summary();
        if log {
            tracing::debug!(
                target: "sluice::wire",
                node = self.config.node_id,
                ?direction,
                client_id = %context.client_id,
                api = ?api_key,
                version,
                correlation_id,
                summary = %summary.text,
                partitions = %summary.partitions.join(","),
            );
        }
        if observe {
            self.observed().report(|| Fact::Wire {
                direction,
                client_id: context.client_id.clone(),
                api: format!("{api_key:?}"),
                correlation_id,
                summary: summary.text,
                partitions: summary.partitions,
            });
        }
    }

    /// Handles one request frame (without its 4-byte size prefix) from an
    /// unnumbered connection.
    pub async fn handle(&self, frame_bytes: Bytes, client_host: &str) -> HandleOutcome {
        self.handle_on(frame_bytes, client_host, NO_CONNECTION)
            .await
    }

    /// Handles one request frame (without its 4-byte size prefix) that
    /// arrived on connection number `connection`.
    pub async fn handle_on(
        &self,
        frame_bytes: Bytes,
        client_host: &str,
        connection: u64,
    ) -> HandleOutcome {
        if frame_bytes.len() < 8 {
            return HandleOutcome::Close(format!(
                "request of {} bytes has no header",
                frame_bytes.len()
            ));
        }
        let mut peek = &frame_bytes[..8];
        let raw_api_key = peek.get_i16();
        let version = peek.get_i16();
        let correlation_id = peek.get_i32();
        let Ok(api_key) = ApiKey::try_from(raw_api_key) else {
            return HandleOutcome::Close(format!("unknown API key {raw_api_key}"));
        };
        let Some((min_version, max_version)) = supported_range(api_key) else {
            return HandleOutcome::Close(format!("API {api_key:?} is not implemented"));
        };
        if !(min_version..=max_version).contains(&version) {
            if api_key == ApiKey::ApiVersions {
                // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our ranges,
                // so the client can retry with a version we speak.
                let response = ApiVersionsResponse::default()
                    .with_error_code(ResponseError::UnsupportedVersion.code())
                    .with_api_keys(api_versions_list());
                return match frame(api_key, 0, correlation_id, &response) {
                    Ok(bytes) => HandleOutcome::Respond(bytes),
                    Err(error) => HandleOutcome::Close(error),
                };
            }
            return HandleOutcome::Close(format!(
                "{api_key:?} v{version} is not supported (supported: {min_version}..={max_version})"
            ));
        }
        let mut body = frame_bytes;
        let header = match RequestHeader::decode(&mut body, api_key.request_header_version(version))
        {
            Ok(header) => header,
            Err(error) => {
                return HandleOutcome::Close(format!("undecodable request header: {error}"))
            }
        };
        let context = RequestContext {
            client_id: header
                .client_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            client_host: client_host.to_string(),
            connection,
        };
        dispatch!(self, body, api_key, version, correlation_id, context,
            ApiVersions => ApiVersionsRequest => api_versions,
            Metadata => MetadataRequest => metadata,
            Produce => ProduceRequest => produce,
            Fetch => FetchRequest => fetch,
            ListOffsets => ListOffsetsRequest => list_offsets,
            CreateTopics => CreateTopicsRequest => create_topics,
            DeleteTopics => DeleteTopicsRequest => delete_topics,
            InitProducerId => InitProducerIdRequest => init_producer_id,
            FindCoordinator => FindCoordinatorRequest => find_coordinator,
            JoinGroup => JoinGroupRequest => join_group,
            SyncGroup => SyncGroupRequest => sync_group,
            Heartbeat => HeartbeatRequest => heartbeat,
            LeaveGroup => LeaveGroupRequest => leave_group,
            OffsetCommit => OffsetCommitRequest => offset_commit,
            OffsetFetch => OffsetFetchRequest => offset_fetch,
            DescribeGroups => DescribeGroupsRequest => describe_groups,
            ListGroups => ListGroupsRequest => list_groups,
        )
    }

    async fn api_versions(
        &self,
        _: ApiVersionsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<ApiVersionsResponse> {
        Some(ApiVersionsResponse::default().with_api_keys(api_versions_list()))
    }

    async fn metadata(
        &self,
        request: MetadataRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<MetadataResponse> {
        let (host, port) = self.advertised();
        let node_id = self.config.node_id;
        let requested: Option<Vec<String>> = match request.topics {
            None => None,
            // In v0 an empty list means every topic.
            Some(topics) if topics.is_empty() && version == 0 => None,
            Some(topics) => Some(
                topics
                    .into_iter()
                    .filter_map(|t| t.name.map(|n| n.to_string()))
                    .collect(),
            ),
        };
        let may_create = self.config.auto_create_topics_enable
            && (version < 4 || request.allow_auto_topic_creation);
        let names = match requested {
            None => self.topic_names(),
            Some(names) => names,
        };
        let mut topics = Vec::new();
        for name in names {
            let mut error_code = 0;
            if self.topic(&name).is_none() {
                error_code = if !super::valid_topic_name(&name) {
                    ResponseError::InvalidTopicException.code()
                } else if may_create {
                    match self
                        .create_topic(&name, self.config.num_partitions, false)
                        .await
                    {
                        Ok(()) => 0,
                        Err(code) if code == ResponseError::TopicAlreadyExists.code() => 0,
                        Err(code) => code,
                    }
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
            }
            let partitions = match (error_code, self.topic(&name)) {
                (0, Some(topic)) => topic
                    .partitions
                    .iter()
                    .map(|p| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p.index)
                            .with_leader_id(BrokerId(node_id))
                            .with_leader_epoch(p.leader_epoch())
                            .with_replica_nodes(vec![BrokerId(node_id)])
                            .with_isr_nodes(vec![BrokerId(node_id)])
                    })
                    .collect(),
                _ => Vec::new(),
            };
            topics.push(
                MetadataResponseTopic::default()
                    .with_error_code(error_code)
                    .with_name(Some(TopicName(str_bytes(&name))))
                    .with_partitions(partitions),
            );
        }
        Some(
            MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(node_id))
                    .with_host(str_bytes(&host))
                    .with_port(port)])
                .with_cluster_id(Some(StrBytes::from_static_str("sluice")))
                .with_controller_id(BrokerId(node_id))
                .with_topics(topics),
        )
    }

    async fn produce(
        &self,
        request: ProduceRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<ProduceResponse> {
        let acks = request.acks;
        let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
        let mut responses = Vec::new();
        for topic in request.topic_data {
            let name = topic.name.to_string();
            let mut partition_responses = Vec::new();
            for data in topic.partition_data {
                let mut response = PartitionProduceResponse::default()
                    .with_index(data.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let error_code = if !matches!(acks, -1..=1) {
                    ResponseError::InvalidRequiredAcks.code()
                } else if request.transactional_id.is_some() {
                    ResponseError::TransactionalIdAuthorizationFailed.code()
                } else if let Some(partition) = self.partition(&name, data.index) {
                    match data.records {
                        None => ResponseError::CorruptMessage.code(),
                        Some(records) => match self
                            .produce_partition(&partition, records, acks, timeout)
                            .await
                        {
                            Ok((outcome, log_start_offset)) => {
                                response.base_offset = outcome.base_offset;
                                response.log_append_time_ms = outcome.log_append_time_ms;
                                response.log_start_offset = log_start_offset;
                                0
                            }
                            Err(code) => code,
                        },
                    }
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                response.error_code = error_code;
                partition_responses.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partition_responses(partition_responses),
            );
        }
        if acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(responses))
    }

    async fn produce_partition(
        &self,
        partition: &super::Partition,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<(crate::log::AppendOutcome, i64), i16> {
        let outcome = partition.append(records, self.clock.now_ms()).await.map_err(|error| {
            tracing::debug!(topic = %partition.topic, partition = partition.index, %error, "produce rejected");
            error.code()
        })?;
        if crate::planted!(FetchBeyondHighWatermark) {
            // Planted: the log end is what fetches may see, so wake them now.
            self.notify_data_arrived();
        }
        if self.config.log.flush_on_ack && acks != 0 {
            match tokio::time::timeout(timeout, partition.sync_to(outcome.last_offset + 1)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error.code()),
                Err(_) => return Err(ResponseError::RequestTimedOut.code()),
            }
        }
        self.notify_data_arrived();
        let log_start_offset = partition
            .offsets()
            .await
            .map(|o| o.log_start_offset)
            .unwrap_or(-1);
        Ok((outcome, log_start_offset))
    }

    async fn fetch(
        &self,
        request: FetchRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<FetchResponse> {
        let max_wait =
            Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_MAX_WAIT_MS_LIMIT) as u64);
        // tokio's clock (virtual under the simulation), as every wait here.
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut arrivals = self.data_arrived.subscribe();
        loop {
            arrivals.borrow_and_update();
            let (response, total_bytes, any_error) = self.fetch_once(&request).await;
            let satisfied = total_bytes >= request.min_bytes.max(0) as usize;
            if satisfied || any_error || tokio::time::Instant::now() >= deadline {
                return Some(response);
            }
            tokio::select! {
                biased;
                changed = arrivals.changed() => {
                    if changed.is_err() {
                        return Some(response);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn fetch_once(&self, request: &FetchRequest) -> (FetchResponse, usize, bool) {
        let mut remaining = if request.max_bytes <= 0 {
            usize::MAX
        } else {
            request.max_bytes as usize
        };
        let mut total_bytes = 0usize;
        let mut any_error = false;
        let mut topics = Vec::new();
        for topic in &request.topics {
            let name = topic.topic.to_string();
            let mut partitions = Vec::new();
            for wanted in &topic.partitions {
                let mut data = PartitionData::default()
                    .with_partition_index(wanted.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_aborted_transactions(Some(Vec::new()))
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(Bytes::new()));
                match self.partition(&name, wanted.partition) {
                    None => {
                        data.error_code = ResponseError::UnknownTopicOrPartition.code();
                        any_error = true;
                    }
                    Some(partition)
                        if leader_epoch_error(
                            wanted.current_leader_epoch,
                            partition.leader_epoch(),
                        )
                        .is_some() =>
                    {
                        data.error_code = leader_epoch_error(
                            wanted.current_leader_epoch,
                            partition.leader_epoch(),
                        )
                        .expect("checked by the guard");
                        any_error = true;
                    }
                    Some(partition) => {
                        let limit = (wanted.partition_max_bytes.max(0) as usize).min(remaining);
                        match partition.read(wanted.fetch_offset, limit.max(1)).await {
                            Ok((bytes, offsets)) => {
                                data.high_watermark = offsets.high_watermark;
                                data.last_stable_offset = offsets.high_watermark;
                                data.log_start_offset = offsets.log_start_offset;
                                // Only the first non-empty partition may exceed the limits (KIP-74).
                                let fits = total_bytes == 0 || bytes.len() <= limit;
                                if fits && !bytes.is_empty() {
                                    total_bytes += bytes.len();
                                    remaining = remaining.saturating_sub(bytes.len());
                                    data.records = Some(bytes);
                                }
                            }
                            Err(error) => {
                                data.error_code = error.code();
                                any_error = true;
                                if let Ok(offsets) = partition.offsets().await {
                                    data.high_watermark = offsets.high_watermark;
                                    data.last_stable_offset = offsets.high_watermark;
                                    data.log_start_offset = offsets.log_start_offset;
                                }
                            }
                        }
                    }
                }
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(&name)))
                    .with_partitions(partitions),
            );
        }
        (
            FetchResponse::default().with_responses(topics),
            total_bytes,
            any_error,
        )
    }

    async fn list_offsets(
        &self,
        request: ListOffsetsRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<ListOffsetsResponse> {
        /// ListOffsets' special timestamps.
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        let mut topics = Vec::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let mut partitions = Vec::new();
            for wanted in topic.partitions {
                let mut response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(wanted.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                match self.partition(&name, wanted.partition_index) {
                    None => response.error_code = ResponseError::UnknownTopicOrPartition.code(),
                    Some(partition) => {
                        if version >= 4 {
                            response.leader_epoch = partition.leader_epoch();
                        }
                        let timestamp = wanted.timestamp;
                        let found = partition
                            .with_log(async |log| match timestamp {
                                LATEST => Ok(Some((log.high_watermark(), -1))),
                                EARLIEST => Ok(Some((log.log_start_offset(), -1))),
                                t if t >= 0 => log.offset_for_timestamp(t).await,
                                _ => Ok(None),
                            })
                            .await;
                        match found {
                            Ok(Some((offset, found_timestamp))) => {
                                response.offset = offset;
                                response.timestamp = found_timestamp;
                            }
                            Ok(None)
                                if timestamp < 0
                                    && timestamp != LATEST
                                    && timestamp != EARLIEST =>
                            {
                                response.error_code = ResponseError::InvalidRequest.code();
                            }
                            Ok(None) => {}
                            Err(error) => response.error_code = error.code(),
                        }
                    }
                }
                partitions.push(response);
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        Some(ListOffsetsResponse::default().with_topics(topics))
    }

    async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<CreateTopicsResponse> {
        let mut results = Vec::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let partition_count = if topic.num_partitions == -1 {
                self.config.num_partitions
            } else {
                topic.num_partitions
            };
            let mut result = CreatableTopicResult::default()
                .with_name(topic.name.clone())
                .with_num_partitions(partition_count)
                .with_replication_factor(1);
            let outcome = if !matches!(topic.replication_factor, -1 | 1) {
                Err((
                    ResponseError::InvalidReplicationFactor.code(),
                    "a single broker holds one replica".to_string(),
                ))
            } else if !topic.assignments.is_empty() {
                Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    "manual assignment is not supported".to_string(),
                ))
            } else if !topic.configs.is_empty() {
                Err((
                    ResponseError::InvalidConfig.code(),
                    "topic-level configs are not supported yet; set them broker-wide".to_string(),
                ))
            } else {
                self.create_topic(&name, partition_count, request.validate_only)
                    .await
                    .map_err(|code| (code, String::new()))
            };
            if let Err((code, message)) = outcome {
                result.error_code = code;
                result.num_partitions = -1;
                result.replication_factor = -1;
                if !message.is_empty() {
                    result.error_message = Some(str_bytes(&message));
                }
            }
            results.push(result);
        }
        Some(CreateTopicsResponse::default().with_topics(results))
    }

    async fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<DeleteTopicsResponse> {
        let mut names: Vec<String> = request.topic_names.iter().map(|n| n.to_string()).collect();
        names.extend(
            request
                .topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string())),
        );
        let mut responses = Vec::new();
        for name in names {
            let error_code = self.delete_topic(&name).await.err().unwrap_or(0);
            responses.push(
                DeletableTopicResult::default()
                    .with_name(Some(TopicName(str_bytes(&name))))
                    .with_error_code(error_code),
            );
        }
        Some(DeleteTopicsResponse::default().with_responses(responses))
    }

    async fn init_producer_id(
        &self,
        request: InitProducerIdRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<InitProducerIdResponse> {
        let mut response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if request
            .transactional_id
            .as_ref()
            .is_some_and(|id| !id.is_empty())
        {
            // Transactions are not implemented; refuse rather than pretend.
            response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            return Some(response);
        }
        // KIP-360: an idempotent producer may bump its own epoch.
        if request.producer_id.0 >= 0
            && request.producer_epoch >= 0
            && request.producer_epoch < i16::MAX - 1
        {
            response.producer_id = request.producer_id;
            response.producer_epoch = request.producer_epoch + 1;
            return Some(response);
        }
        match self.allocate_producer_id().await {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(error) => {
                tracing::error!(%error, "persisting the producer id block failed");
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
        Some(response)
    }

    async fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<FindCoordinatorResponse> {
        /// FindCoordinator key types: consumer groups, transactions.
        const GROUP_KEY_TYPE: i8 = 0;
        const TRANSACTION_KEY_TYPE: i8 = 1;
        let (host, port) = self.advertised();
        let node_id = BrokerId(self.config.node_id);
        // Transactions are not implemented. A retryable code would have
        // transactional clients wait out their timeouts; this fatal one
        // (the one InitProducerId answers) fails them at once.
        let (error_code, message) = match request.key_type {
            GROUP_KEY_TYPE => (0, None),
            TRANSACTION_KEY_TYPE => (
                ResponseError::TransactionalIdAuthorizationFailed.code(),
                Some("sluice does not implement transactions"),
            ),
            _ => (
                ResponseError::InvalidRequest.code(),
                Some("unknown key type"),
            ),
        };
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            response.coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(node_id)
                        .with_host(str_bytes(&host))
                        .with_port(port)
                        .with_error_code(error_code)
                        .with_error_message(message.map(StrBytes::from_static_str))
                })
                .collect();
        } else {
            response.error_code = error_code;
            response.error_message = message.map(StrBytes::from_static_str);
            response.node_id = node_id;
            response.host = str_bytes(&host);
            response.port = port;
        }
        Some(response)
    }

    /// Parks a caller until the coordinator answers `waiter`, or `wait`
    /// passes (then `timed_out`).
    async fn await_answer<T>(
        &self,
        receiver: tokio::sync::oneshot::Receiver<T>,
        wait: Duration,
        forget: impl FnOnce(&mut super::Waiters),
        timed_out: T,
    ) -> T {
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(result)) => result,
            _ => {
                forget(&mut self.waiters.lock().expect("waiters lock"));
                timed_out
            }
        }
    }

    async fn join_group(
        &self,
        request: JoinGroupRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<JoinGroupResponse> {
        let rebalance_timeout_ms = if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        };
        let join = JoinRequest {
            group_id: request.group_id.to_string(),
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
            client_id: context.client_id.clone(),
            client_host: context.client_host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            connection: context.connection,
            require_known_member_id: version >= 4,
        };
        let waiter = self.new_waiter();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .joins
            .insert(waiter, sender);
        self.coordinate(|coordinator, now_ms| coordinator.join(now_ms, waiter, join));
        // The coordinator answers by the rebalance deadline, which is the
        // largest rebalance timeout of the group's members (maybe longer
        // than this one's); this bound only keeps a connection from being
        // parked for ever if something went wrong.
        let wait = Duration::from_millis(
            (rebalance_timeout_ms.max(request.session_timeout_ms).max(0) as u64).saturating_mul(2)
                + GROUP_WAIT_MARGIN_MS,
        );
        let result = self
            .await_answer(
                receiver,
                wait,
                |waiters| {
                    waiters.joins.remove(&waiter);
                },
                crate::group::JoinResult {
                    error_code: ResponseError::RebalanceInProgress.code(),
                    generation_id: -1,
                    protocol_type: None,
                    protocol_name: None,
                    leader: String::new(),
                    member_id: request.member_id.to_string(),
                    members: Vec::new(),
                },
            )
            .await;
        Some(
            JoinGroupResponse::default()
                .with_error_code(result.error_code)
                .with_generation_id(result.generation_id)
                .with_protocol_type(result.protocol_type.map(|t| str_bytes(&t)))
                .with_protocol_name(Some(str_bytes(&result.protocol_name.unwrap_or_default())))
                .with_leader(str_bytes(&result.leader))
                .with_member_id(str_bytes(&result.member_id))
                .with_members(
                    result
                        .members
                        .into_iter()
                        .map(|(id, instance, metadata)| {
                            JoinGroupResponseMember::default()
                                .with_member_id(str_bytes(&id))
                                .with_group_instance_id(instance.map(|i| str_bytes(&i)))
                                .with_metadata(metadata)
                        })
                        .collect(),
                ),
        )
    }

    async fn sync_group(
        &self,
        request: SyncGroupRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<SyncGroupResponse> {
        let waiter = self.new_waiter();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .syncs
            .insert(waiter, sender);
        let assignments = request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        let instance = request.group_instance_id.as_ref().map(|id| id.to_string());
        self.coordinate(|coordinator, now_ms| {
            coordinator.sync(
                now_ms,
                waiter,
                &request.group_id,
                request.generation_id,
                &request.member_id,
                instance.as_deref(),
                assignments,
            )
        });
        // A follower waits for the leader, which must sync within its session.
        let wait = Duration::from_millis(
            self.config.group_max_session_timeout_ms.max(0) as u64 + GROUP_WAIT_MARGIN_MS,
        );
        let result = self
            .await_answer(
                receiver,
                wait,
                |waiters| {
                    waiters.syncs.remove(&waiter);
                },
                crate::group::SyncResult {
                    error_code: ResponseError::RebalanceInProgress.code(),
                    protocol_type: None,
                    protocol_name: None,
                    assignment: Bytes::new(),
                },
            )
            .await;
        Some(
            SyncGroupResponse::default()
                .with_error_code(result.error_code)
                .with_protocol_type(result.protocol_type.map(|t| str_bytes(&t)))
                .with_protocol_name(result.protocol_name.map(|n| str_bytes(&n)))
                .with_assignment(result.assignment),
        )
    }

    async fn heartbeat(
        &self,
        request: HeartbeatRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<HeartbeatResponse> {
        let instance = request.group_instance_id.as_ref().map(|id| id.to_string());
        let now_ms = self.clock.now_ms();
        let error_code = self
            .coordinator
            .lock()
            .expect("coordinator lock")
            .heartbeat(
                now_ms,
                &request.group_id,
                request.generation_id,
                &request.member_id,
                instance.as_deref(),
            );
        Some(HeartbeatResponse::default().with_error_code(error_code))
    }

    async fn leave_group(
        &self,
        request: LeaveGroupRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<LeaveGroupResponse> {
        let leaving: Vec<LeavingMember> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| LeavingMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(|id| id.to_string()),
                })
                .collect()
        } else {
            vec![LeavingMember {
                member_id: request.member_id.to_string(),
                group_instance_id: None,
            }]
        };
        let mut codes = Vec::new();
        self.coordinate(|coordinator, now_ms| {
            let (answered, effects) = coordinator.leave(now_ms, &request.group_id, &leaving);
            codes = answered;
            effects
        });
        let mut response = LeaveGroupResponse::default();
        if version >= 3 {
            response.members = leaving
                .iter()
                .zip(&codes)
                .map(|(member, code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&member.member_id))
                        .with_group_instance_id(member.group_instance_id.as_deref().map(str_bytes))
                        .with_error_code(*code)
                })
                .collect();
        } else {
            response.error_code = codes.first().copied().unwrap_or(0);
        }
        Some(response)
    }

    async fn offset_commit(
        &self,
        request: OffsetCommitRequest,
        _: i16,
        context: &RequestContext,
    ) -> Option<OffsetCommitResponse> {
        // Partitions of unknown topics are answered here; the rest go to the
        // coordinator together, so they are validated, persisted and applied
        // as one.
        let mut accepted = Vec::new();
        let mut codes: Vec<Vec<Option<i16>>> = Vec::new();
        for topic in &request.topics {
            let name = topic.name.to_string();
            let known = self.topic(&name);
            let mut topic_codes = Vec::new();
            for partition in &topic.partitions {
                let exists = known.as_ref().is_some_and(|t| {
                    usize::try_from(partition.partition_index)
                        .is_ok_and(|index| index < t.partitions.len())
                });
                if exists {
                    accepted.push((
                        name.clone(),
                        partition.partition_index,
                        CommittedOffset {
                            offset: partition.committed_offset,
                            leader_epoch: partition.committed_leader_epoch,
                            metadata: partition
                                .committed_metadata
                                .as_deref()
                                .unwrap_or_default()
                                .to_string(),
                        },
                    ));
                    topic_codes.push(None);
                } else {
                    topic_codes.push(Some(ResponseError::UnknownTopicOrPartition.code()));
                }
            }
            codes.push(topic_codes);
        }
        let commit = CommitRequest {
            group_id: request.group_id.to_string(),
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
            connection: context.connection,
            offsets: accepted,
        };
        let waiter = self.new_waiter();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .commits
            .insert(waiter, sender);
        self.coordinate(|coordinator, _| coordinator.offset_commit(waiter, commit));
        let outcome = self
            .await_answer(
                receiver,
                Duration::from_millis(OFFSET_COMMIT_TIMEOUT_MS),
                |waiters| {
                    waiters.commits.remove(&waiter);
                },
                Err(ResponseError::RequestTimedOut.code()),
            )
            .await;
        let shared_code = outcome.err().unwrap_or(0);
        let topics = request
            .topics
            .iter()
            .zip(codes)
            .map(|(topic, topic_codes)| {
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .zip(topic_codes)
                            .map(|(p, code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code.unwrap_or(shared_code))
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(OffsetCommitResponse::default().with_topics(topics))
    }

    /// Committed offsets of one group for the requested partitions (all
    /// partitions with a commit when `topics` is `None`).
    fn committed_for(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<TopicCommits> {
        let coordinator = self.coordinator.lock().expect("coordinator lock");
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| {
                            (
                                p,
                                coordinator.committed_offset(group_id, &topic, p).cloned(),
                            )
                        })
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut grouped: Vec<TopicCommits> = Vec::new();
                for (topic, partition, committed) in coordinator.committed_offsets(group_id) {
                    match grouped.last_mut() {
                        Some((last, partitions)) if *last == topic => {
                            partitions.push((partition, Some(committed)))
                        }
                        _ => grouped.push((topic, vec![(partition, Some(committed))])),
                    }
                }
                grouped
            }
        }
    }

    /// A group's committed offsets for the wanted partitions (every
    /// committed one when `None`), in the v8+ response shape.
    fn committed_topics(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<OffsetFetchResponseTopics> {
        self.committed_for(group_id, wanted)
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetFetchResponseTopics::default()
                    .with_name(TopicName(str_bytes(&topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, committed)| {
                                let (offset, epoch, metadata) = committed
                                    .map_or((-1, -1, String::new()), |c| {
                                        (c.offset, c.leader_epoch, c.metadata)
                                    });
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(str_bytes(&metadata)))
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    async fn offset_fetch(
        &self,
        request: OffsetFetchRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<OffsetFetchResponse> {
        let mut response = OffsetFetchResponse::default();
        if version >= 8 {
            for group in request.groups {
                let wanted = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect()
                });
                let topics = self.committed_topics(&group.group_id, wanted);
                response.groups.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group.group_id)
                        .with_topics(topics),
                );
            }
        } else {
            // Versions before 8 ask for one group and answer in the older,
            // field-for-field identical shape.
            let wanted = request.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            response.topics = self
                .committed_topics(&request.group_id, wanted)
                .into_iter()
                .map(|topic| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic.name)
                        .with_partitions(
                            topic
                                .partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_committed_offset(p.committed_offset)
                                        .with_committed_leader_epoch(p.committed_leader_epoch)
                                        .with_metadata(p.metadata)
                                })
                                .collect(),
                        )
                })
                .collect();
        }
        Some(response)
    }

    async fn describe_groups(
        &self,
        request: DescribeGroupsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<DescribeGroupsResponse> {
        let coordinator = self.coordinator.lock().expect("coordinator lock");
        let groups = request
            .groups
            .iter()
            .map(|group_id| {
                let description = coordinator.describe(group_id);
                DescribedGroup::default()
                    .with_group_id(group_id.clone())
                    .with_group_state(StrBytes::from_static_str(description.state.name()))
                    .with_protocol_type(str_bytes(&description.protocol_type))
                    .with_protocol_data(str_bytes(&description.protocol_name))
                    .with_members(
                        description
                            .members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_group_instance_id(
                                        m.group_instance_id.as_deref().map(str_bytes),
                                    )
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(DescribeGroupsResponse::default().with_groups(groups))
    }

    async fn list_groups(
        &self,
        request: ListGroupsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<ListGroupsResponse> {
        let states: BTreeSet<String> = request
            .states_filter
            .iter()
            .map(|s| s.to_lowercase())
            .collect();
        let groups = self
            .coordinator
            .lock()
            .expect("coordinator lock")
            .list()
            .into_iter()
            .filter(|(_, _, state)| {
                states.is_empty() || states.contains(&state.name().to_lowercase())
            })
            .map(|(id, protocol_type, state)| {
                ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(&id)))
                    .with_protocol_type(str_bytes(&protocol_type))
                    .with_group_state(StrBytes::from_static_str(state.name()))
            })
            .collect();
        Some(ListGroupsResponse::default().with_groups(groups))
    }
}
