//! Request handling: one size-delimited frame in, one response frame out.
//! This module decodes the header, checks the version against what each API
//! serves and dispatches; each API (or family) lives in its own module,
//! beside the versions it serves.
//!
//! Decoding and encoding use the `kafka-protocol` crate. Bad input never
//! panics: an unknown API key, an unsupported version (except ApiVersions,
//! which gets KIP-511's fallback answer) or an undecodable body closes the
//! connection, which is what Kafka does.

mod configs;
mod delete_records;
mod elect_leaders;
mod fetch;
mod group;
mod group_admin;
mod group_offsets;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
mod quorum;
mod replication;
mod topics;

pub use quorum::BROKER_REGISTRATION_VERSION;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::wire::Summarise;
use super::Broker;
use crate::group::NO_CONNECTION;
use crate::observe::{Direction, Fact};

/// An API and the lowest and highest version of it this broker serves.
type Versions = (ApiKey, i16, i16);

/// ApiVersions: every version; a request in a version we do not speak gets
/// KIP-511's fallback answer.
const API_VERSIONS: Versions = (ApiKey::ApiVersions, 0, 3);

/// The versions this broker implements, and advertises in ApiVersions, in
/// API key order; each comes from the module that serves it.
pub const SUPPORTED_APIS: &[Versions] = &[
    produce::PRODUCE,
    fetch::FETCH,
    list_offsets::LIST_OFFSETS,
    metadata::METADATA,
    group_offsets::OFFSET_COMMIT,
    group_offsets::OFFSET_FETCH,
    group::FIND_COORDINATOR,
    group::JOIN_GROUP,
    group::HEARTBEAT,
    group::LEAVE_GROUP,
    group::SYNC_GROUP,
    group::DESCRIBE_GROUPS,
    group::LIST_GROUPS,
    API_VERSIONS,
    topics::CREATE_TOPICS,
    topics::DELETE_TOPICS,
    init_producer_id::INIT_PRODUCER_ID,
    delete_records::DELETE_RECORDS,
    offset_for_leader_epoch::OFFSET_FOR_LEADER_EPOCH,
    configs::DESCRIBE_CONFIGS,
    configs::ALTER_CONFIGS,
    topics::CREATE_PARTITIONS,
    group_admin::DELETE_GROUPS,
    elect_leaders::ELECT_LEADERS,
    configs::INCREMENTAL_ALTER_CONFIGS,
    group_admin::OFFSET_DELETE,
    quorum::VOTE,
    quorum::BEGIN_QUORUM_EPOCH,
    quorum::END_QUORUM_EPOCH,
    quorum::DESCRIBE_QUORUM,
    replication::ALTER_PARTITION,
    metadata::DESCRIBE_CLUSTER,
    quorum::BROKER_REGISTRATION,
    replication::BROKER_HEARTBEAT,
    metadata::DESCRIBE_TOPIC_PARTITIONS,
];

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

impl Broker {
    /// The partition as clients may use it here: only where this broker
    /// leads it. A follower's replica answers NOT_LEADER_OR_FOLLOWER, as a
    /// missing one answers [`Broker::missing_partition_error`].
    fn led_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Option<std::sync::Arc<crate::broker::partition::Partition>> {
        self.partition(topic, partition)
            .filter(|partition| partition.is_leader())
    }

    /// The error for a partition this broker holds no replica of: another
    /// broker leads it (NOT_LEADER_OR_FOLLOWER, so the client refreshes its
    /// metadata), or it does not exist.
    fn missing_partition_error(&self, topic: &str, partition: i32) -> i16 {
        let known = self.with_metadata(|image| {
            image.topic(topic).is_some_and(|t| {
                usize::try_from(partition).is_ok_and(|index| index < t.partitions.len())
            })
        });
        if known {
            ResponseError::NotLeaderOrFollower.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        }
    }

    /// In a cluster, a broker that is not the active controller forwards an
    /// admin request only the controller carries out (config alterations,
    /// topic and partition creation and deletion) to it, and relays its
    /// answer. None: handle it here. A request another broker forwarded is
    /// never forwarded again, so two brokers with stale views of the
    /// quorum cannot pass one back and forth.
    pub(super) async fn forwarded<R>(
        &self,
        request: &R,
        version: i16,
        context: &RequestContext,
    ) -> Option<R::Response>
    where
        R: kafka_protocol::protocol::Request + Clone,
    {
        if self.cluster.is_none()
            || self.is_active_controller()
            || context
                .client_id
                .starts_with(crate::broker::BROKER_CLIENT_ID_PREFIX)
        {
            return None;
        }
        match self.forward_to_controller(request.clone(), version).await {
            Ok(response) => Some(response),
            Err(error) => {
                tracing::debug!(%error, "forwarding to the controller failed");
                // Answer here: the handler finds it is not the controller
                // and says NOT_CONTROLLER, which clients retry.
                None
            }
        }
    }

    /// NOT_COORDINATOR when another broker coordinates `group_id`: in a
    /// cluster only the offsets partition's leader serves groups.
    fn group_coordinator_error(&self, group_id: &str) -> Option<i16> {
        let node_id = self.config.node_id;
        let coordinator = self.with_metadata(|image| {
            image
                .group_coordinator(group_id)
                .map(|broker| broker.node_id)
        });
        match coordinator {
            Some(id) if id == node_id && self.coordinator_loaded() => None,
            // Leading the offsets partition, but its log is still being
            // replayed or not yet committed.
            Some(id) if id == node_id => Some(ResponseError::CoordinatorLoadInProgress.code()),
            Some(_) => Some(ResponseError::NotCoordinator.code()),
            None => Some(ResponseError::CoordinatorNotAvailable.code()),
        }
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
            OffsetForLeaderEpoch => OffsetForLeaderEpochRequest => offset_for_leader_epoch,
            Vote => VoteRequest => vote,
            BeginQuorumEpoch => BeginQuorumEpochRequest => begin_quorum_epoch,
            EndQuorumEpoch => EndQuorumEpochRequest => end_quorum_epoch,
            DescribeQuorum => DescribeQuorumRequest => describe_quorum,
            BrokerRegistration => BrokerRegistrationRequest => broker_registration,
            AlterPartition => AlterPartitionRequest => alter_partition,
            BrokerHeartbeat => BrokerHeartbeatRequest => broker_heartbeat,
            DescribeCluster => DescribeClusterRequest => describe_cluster,
            DescribeConfigs => DescribeConfigsRequest => describe_configs,
            AlterConfigs => AlterConfigsRequest => alter_configs,
            IncrementalAlterConfigs => IncrementalAlterConfigsRequest => incremental_alter_configs,
            CreatePartitions => CreatePartitionsRequest => create_partitions,
            DeleteGroups => DeleteGroupsRequest => delete_groups,
            OffsetDelete => OffsetDeleteRequest => offset_delete,
            DeleteRecords => DeleteRecordsRequest => delete_records,
            DescribeTopicPartitions => DescribeTopicPartitionsRequest => describe_topic_partitions,
            ElectLeaders => ElectLeadersRequest => elect_leaders,
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
}
