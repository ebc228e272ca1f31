//! CreateTopics and DeleteTopics.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::{Broker, Placement};

/// 2 through 7, what current admin clients send.
pub(super) const CREATE_TOPICS: Versions = (ApiKey::CreateTopics, 2, 7);

/// 1 through 6, by topic name.
pub(super) const DELETE_TOPICS: Versions = (ApiKey::DeleteTopics, 1, 6);

/// 0 through 3.
pub(super) const CREATE_PARTITIONS: Versions = (ApiKey::CreatePartitions, 0, 3);

impl Broker {
    pub(super) async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<CreateTopicsResponse> {
        if let Some(response) = self.forwarded(&request, version, context).await {
            return Some(response);
        }
        let mut results = Vec::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let manual: Vec<(i32, Vec<i32>)> = topic
                .assignments
                .iter()
                .map(|a| {
                    let replicas = a.broker_ids.iter().map(|id| id.0).collect();
                    (a.partition_index, replicas)
                })
                .collect();
            let (partition_count, replication_factor) = match manual.first() {
                Some((_, replicas)) => (
                    i32::try_from(manual.len()).unwrap_or(i32::MAX),
                    i16::try_from(replicas.len()).unwrap_or(i16::MAX),
                ),
                None if topic.num_partitions == -1 => (
                    self.config.num_partitions,
                    self.replication_factor(topic.replication_factor),
                ),
                None => (
                    topic.num_partitions,
                    self.replication_factor(topic.replication_factor),
                ),
            };
            let mut result = CreatableTopicResult::default()
                .with_name(topic.name.clone())
                .with_num_partitions(partition_count)
                .with_replication_factor(replication_factor);
            let outcome = if !manual.is_empty()
                && (topic.num_partitions != -1 || topic.replication_factor != -1)
            {
                Err((
                    ResponseError::InvalidRequest.code(),
                    "Both numPartitions or replicationFactor and replicasAssignments were set. \
                     Both cannot be used at the same time."
                        .to_string(),
                ))
            } else {
                let placement = if manual.is_empty() {
                    Placement::Spread {
                        partition_count,
                        replication_factor,
                    }
                } else {
                    Placement::Manual(manual)
                };
                match crate::topic_config::from_pairs(
                    topic
                        .configs
                        .iter()
                        .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
                ) {
                    Ok(configs) => {
                        if version >= 5 {
                            result.configs =
                                Some(super::configs::created_topic_configs(self, &configs));
                        }
                        self.create_topic_placed(&name, placement, configs, request.validate_only)
                            .await
                    }
                    Err(error) => Err((error.code(), error.to_string())),
                }
            };
            if let Err((code, message)) = outcome {
                result.error_code = code;
                result.num_partitions = -1;
                result.replication_factor = -1;
                result.configs = None;
                if !message.is_empty() {
                    result.error_message = Some(str_bytes(&message));
                }
            }
            results.push(result);
        }
        Some(CreateTopicsResponse::default().with_topics(results))
    }

    pub(super) async fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<DeleteTopicsResponse> {
        if let Some(response) = self.forwarded(&request, version, context).await {
            return Some(response);
        }
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

    /// CreatePartitions: each topic grows to its count, placed by the
    /// controller or by the request's assignment. A topic named twice is
    /// INVALID_REQUEST for both, as in Kafka.
    pub(super) async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<CreatePartitionsResponse> {
        if let Some(response) = self.forwarded(&request, version, context).await {
            return Some(response);
        }
        let mut named = std::collections::BTreeMap::<String, usize>::new();
        for topic in &request.topics {
            *named.entry(topic.name.to_string()).or_default() += 1;
        }
        let mut results = Vec::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let outcome = if named[&name] > 1 {
                Err((
                    ResponseError::InvalidRequest.code(),
                    "Duplicate topic in request.".to_string(),
                ))
            } else {
                let assignments = topic.assignments.map(|assignments| {
                    assignments
                        .into_iter()
                        .map(|a| a.broker_ids.iter().map(|id| id.0).collect())
                        .collect()
                });
                self.add_partitions(&name, topic.count, assignments, request.validate_only)
                    .await
            };
            let mut result = CreatePartitionsTopicResult::default().with_name(topic.name);
            if let Err((code, message)) = outcome {
                result.error_code = code;
                if !message.is_empty() {
                    result.error_message = Some(str_bytes(&message));
                }
            }
            results.push(result);
        }
        Some(CreatePartitionsResponse::default().with_results(results))
    }
}
