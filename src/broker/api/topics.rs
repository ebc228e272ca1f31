//! CreateTopics and DeleteTopics.

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

impl Broker {
    pub(super) async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<CreateTopicsResponse> {
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
}
