//! CreateTopics and DeleteTopics.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;

/// 2 through 7, what current admin clients send.
pub(super) const CREATE_TOPICS: Versions = (ApiKey::CreateTopics, 2, 7);

/// 1 through 6, by topic name.
pub(super) const DELETE_TOPICS: Versions = (ApiKey::DeleteTopics, 1, 6);

impl Broker {
    pub(super) async fn create_topics(
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
            let replication_factor = self.replication_factor(topic.replication_factor);
            let mut result = CreatableTopicResult::default()
                .with_name(topic.name.clone())
                .with_num_partitions(partition_count)
                .with_replication_factor(replication_factor);
            let outcome = if !topic.assignments.is_empty() {
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
                self.create_topic(
                    &name,
                    partition_count,
                    replication_factor,
                    request.validate_only,
                )
                .await
                .map_err(|code| {
                    let message = if code == ResponseError::InvalidReplicationFactor.code() {
                        format!(
                            "replication factor {replication_factor} is more than the brokers available"
                        )
                    } else {
                        String::new()
                    };
                    (code, message)
                })
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
