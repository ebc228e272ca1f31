//! Metadata: the brokers, and each topic's partitions with their leader,
//! replicas and in-sync replicas, all read from the metadata image. Topics
//! that do not exist are created when the broker and the request allow it.
//! DescribeCluster: the brokers, the cluster id and the controller, from the
//! same image.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;
use crate::metadata::{BrokerEndpoint, TopicImage};

/// All versions through 12, the newest current clients send.
pub(super) const METADATA: Versions = (ApiKey::Metadata, 0, 12);

/// 0 and 1 (v1 names the endpoint type; v2's fenced brokers are not served).
pub(super) const DESCRIBE_CLUSTER: Versions = (ApiKey::DescribeCluster, 0, 1);

/// Version 0, the only one (KIP-966).
pub(super) const DESCRIBE_TOPIC_PARTITIONS: Versions = (ApiKey::DescribeTopicPartitions, 0, 0);

/// The most partitions one DescribeTopicPartitions answer holds, whatever
/// the request asks: Kafka's `max.request.partition.size.limit` default.
const DESCRIBE_TOPIC_PARTITIONS_MAX: usize = 2000;

/// A bitfield of Kafka's ACL operation codes.
const fn operations(codes: &[u8]) -> i32 {
    let mut bits = 0;
    let mut index = 0;
    while index < codes.len() {
        bits |= 1 << codes[index];
        index += 1;
    }
    bits
}

/// What Kafka answers for a topic's authorized operations when a client
/// asks (Metadata v8+) and no authorizer is configured, as in sluice: every
/// operation a topic supports. READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7,
/// DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11.
const TOPIC_AUTHORIZED_OPERATIONS: i32 = operations(&[3, 4, 5, 6, 7, 8, 10, 11]);

/// The cluster's, likewise (Metadata v8 to v10): CREATE 5, ALTER 7,
/// DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11,
/// IDEMPOTENT_WRITE 12.
const CLUSTER_AUTHORIZED_OPERATIONS: i32 = operations(&[5, 7, 8, 9, 10, 11, 12]);

impl Broker {
    pub(super) async fn metadata(
        &self,
        request: MetadataRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<MetadataResponse> {
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
            None => self.with_metadata(|image| image.topic_names()),
            Some(names) => names,
        };
        let mut topics = Vec::new();
        for name in names {
            let mut error_code = 0;
            if self.with_metadata(|image| image.topic(&name).is_none()) {
                error_code = if !crate::broker::valid_topic_name(&name) {
                    ResponseError::InvalidTopicException.code()
                } else if may_create && !self.is_active_controller() {
                    // As a KRaft broker does: ask the controller to create it
                    // and tell the client to look again.
                    self.forward_create_topic(&name, self.config.num_partitions);
                    ResponseError::LeaderNotAvailable.code()
                } else if may_create {
                    match self
                        .create_topic(&name, self.config.num_partitions, -1, false)
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
            let (internal, partitions) = if error_code == 0 {
                self.with_metadata(|image| match image.topic(&name) {
                    Some(topic) => (topic.internal, partitions_of(topic)),
                    None => (false, Vec::new()),
                })
            } else {
                (false, Vec::new())
            };
            let mut topic = MetadataResponseTopic::default()
                .with_error_code(error_code)
                .with_name(Some(TopicName(str_bytes(&name))))
                .with_is_internal(internal)
                .with_partitions(partitions);
            if version >= 8 && request.include_topic_authorized_operations && error_code == 0 {
                topic.topic_authorized_operations = TOPIC_AUTHORIZED_OPERATIONS;
            }
            topics.push(topic);
        }
        let (brokers, cluster_id, controller_id) = self.cluster_description();
        let brokers = brokers
            .into_iter()
            .map(|broker| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(broker.node_id))
                    .with_host(str_bytes(&broker.host))
                    .with_port(broker.port)
            })
            .collect();
        let mut response = MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(cluster_id))
            .with_controller_id(BrokerId(controller_id))
            .with_topics(topics);
        if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
            response.cluster_authorized_operations = CLUSTER_AUTHORIZED_OPERATIONS;
        }
        Some(response)
    }

    /// DescribeCluster: the brokers, the cluster id and the active
    /// controller, as Metadata reports them. Only the brokers' endpoints
    /// are described (endpoint type 1); asking for the controllers' gets
    /// UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers.
    pub(super) async fn describe_cluster(
        &self,
        request: DescribeClusterRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<DescribeClusterResponse> {
        /// DescribeCluster v1's endpoint types: brokers, controllers.
        const BROKER_ENDPOINTS: i8 = 1;
        let mut response = DescribeClusterResponse::default();
        if version >= 1 {
            response.endpoint_type = BROKER_ENDPOINTS;
            if request.endpoint_type != BROKER_ENDPOINTS {
                return Some(
                    response
                        .with_error_code(ResponseError::UnsupportedEndpointType.code())
                        .with_error_message(Some(str_bytes(
                            "this listener describes brokers only (endpoint type 1)",
                        ))),
                );
            }
        }
        let (brokers, cluster_id, controller_id) = self.cluster_description();
        response.brokers = brokers
            .into_iter()
            .map(|broker| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(broker.node_id))
                    .with_host(str_bytes(&broker.host))
                    .with_port(broker.port)
            })
            .collect();
        response.cluster_id = cluster_id;
        response.controller_id = BrokerId(controller_id);
        if request.include_cluster_authorized_operations {
            response.cluster_authorized_operations = CLUSTER_AUTHORIZED_OPERATIONS;
        }
        Some(response)
    }

    /// DescribeTopicPartitions (KIP-966): the requested topics (every
    /// non-internal one when none is named) in name order, their partitions
    /// as Metadata describes them, at most `response_partition_limit` per
    /// answer; a cut answer names the cursor to ask from next. sluice has
    /// no eligible leader replicas, so those lists are empty.
    pub(super) async fn describe_topic_partitions(
        &self,
        request: DescribeTopicPartitionsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<DescribeTopicPartitionsResponse> {
        use kafka_protocol::messages::describe_topic_partitions_response::{
            Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
        };
        let mut names: Vec<String> = if request.topics.is_empty() {
            self.with_metadata(|image| image.topic_names())
        } else {
            request.topics.iter().map(|t| t.name.to_string()).collect()
        };
        names.sort();
        names.dedup();
        let (cursor_topic, cursor_partition) =
            request.cursor.as_ref().map_or((String::new(), 0), |c| {
                (c.topic_name.to_string(), c.partition_index)
            });
        let limit = usize::try_from(request.response_partition_limit)
            .ok()
            .filter(|limit| *limit > 0)
            .map_or(DESCRIBE_TOPIC_PARTITIONS_MAX, |limit| {
                limit.min(DESCRIBE_TOPIC_PARTITIONS_MAX)
            });
        let mut response = DescribeTopicPartitionsResponse::default();
        let mut described = 0usize;
        for name in names.into_iter().filter(|name| *name >= cursor_topic) {
            let first = if name == cursor_topic {
                cursor_partition.max(0)
            } else {
                0
            };
            let image = self.with_metadata(|image| image.topic(&name).cloned());
            let mut topic = DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(&name))))
                .with_topic_authorized_operations(TOPIC_AUTHORIZED_OPERATIONS);
            let Some(image) = image else {
                topic.error_code = ResponseError::UnknownTopicOrPartition.code();
                response.topics.push(topic);
                continue;
            };
            topic.topic_id = crate::metadata::topic_id(&name);
            topic.is_internal = image.internal;
            for partition in partitions_of(&image).into_iter().skip(first as usize) {
                if described == limit {
                    response.next_cursor = Some(
                        Cursor::default()
                            .with_topic_name(TopicName(str_bytes(&name)))
                            .with_partition_index(partition.partition_index),
                    );
                    break;
                }
                described += 1;
                topic.partitions.push(
                    DescribeTopicPartitionsResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_leader_id(partition.leader_id)
                        .with_leader_epoch(partition.leader_epoch)
                        .with_replica_nodes(partition.replica_nodes)
                        .with_isr_nodes(partition.isr_nodes)
                        .with_eligible_leader_replicas(Some(Vec::new()))
                        .with_last_known_elr(Some(Vec::new())),
                );
            }
            let cut = response.next_cursor.is_some();
            response.topics.push(topic);
            if cut {
                break;
            }
        }
        Some(response)
    }

    /// The brokers, the cluster id and the active controller's id, from the
    /// metadata image.
    fn cluster_description(&self) -> (Vec<BrokerEndpoint>, StrBytes, i32) {
        self.with_metadata(|image| {
            (
                image.brokers().cloned().collect(),
                str_bytes(image.cluster_id()),
                image.controller_id(),
            )
        })
    }
}

/// A topic's partitions as the image has them.
fn partitions_of(topic: &TopicImage) -> Vec<MetadataResponsePartition> {
    let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
    topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(partition.leader_id))
                .with_leader_epoch(partition.leader_epoch)
                .with_replica_nodes(ids(&partition.replicas))
                .with_isr_nodes(ids(&partition.isr))
        })
        .collect()
}
