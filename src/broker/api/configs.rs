//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, for topics
//! and brokers.
//!
//! - A topic's configs are the keys of [`crate::topic_config::TOPIC_KEYS`]:
//!   its overrides, then the broker's settings, then Kafka's defaults, each
//!   reported with its source (and, when asked, its synonyms).
//! - A broker's configs are its `server.properties` settings, read-only:
//!   sluice changes none of them while it runs, so altering one is
//!   INVALID_CONFIG, naming the file to change instead.
//! - AlterConfigs replaces a topic's overrides wholesale (keys it does not
//!   name go back to their defaults), as Kafka's does;
//!   IncrementalAlterConfigs sets, deletes, appends to or subtracts from
//!   single keys (KIP-339).
//! - In a cluster only the active controller changes configs. Another
//!   broker forwards the request to it and relays its answer, as Kafka's
//!   brokers do, so a client may send it anywhere.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;
use crate::topic_config::{self, AlterOp, Described, TopicConfigError, TopicConfigs};

/// 1 through 4: Kafka 4 dropped v0.
pub(super) const DESCRIBE_CONFIGS: Versions = (ApiKey::DescribeConfigs, 1, 4);

/// 0 through 2.
pub(super) const ALTER_CONFIGS: Versions = (ApiKey::AlterConfigs, 0, 2);

/// 0 through 1.
pub(super) const INCREMENTAL_ALTER_CONFIGS: Versions = (ApiKey::IncrementalAlterConfigs, 0, 1);

/// Kafka's `ConfigResource.Type` codes.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// A resource's outcome: Kafka's error code and message, or success.
type Outcome = Result<(), (i16, String)>;

fn refused(error: &TopicConfigError) -> (i16, String) {
    (error.code(), error.to_string())
}

fn code_only(error: ResponseError) -> (i16, String) {
    (error.code(), String::new())
}

impl Broker {
    pub(super) async fn describe_configs(
        &self,
        request: DescribeConfigsRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<DescribeConfigsResponse> {
        let mut results = Vec::new();
        for resource in request.resources {
            let name = resource.resource_name.to_string();
            // Null or empty: every key, as Kafka reads it.
            let only: Option<Vec<String>> = resource
                .configuration_keys
                .as_ref()
                .filter(|keys| !keys.is_empty())
                .map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let described = self.described(resource.resource_type, &name, only.as_deref());
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match described {
                Ok(configs) => {
                    result.configs = configs
                        .iter()
                        .map(|described| {
                            described_entry(
                                described,
                                request.include_synonyms,
                                request.include_documentation && version >= 3,
                            )
                        })
                        .collect();
                }
                Err(error) => {
                    (result.error_code, result.error_message) = error_fields(Err(error));
                }
            }
            results.push(result);
        }
        Some(DescribeConfigsResponse::default().with_results(results))
    }

    /// A resource's configs, or the error its result carries.
    fn described(
        &self,
        resource_type: i8,
        name: &str,
        only: Option<&[String]>,
    ) -> Result<Vec<Described>, (i16, String)> {
        match resource_type {
            RESOURCE_TOPIC => {
                let overrides = self
                    .topic_configs(name)
                    .ok_or_else(|| code_only(ResponseError::UnknownTopicOrPartition))?;
                Ok(topic_config::describe_topic(&self.config, &overrides, only))
            }
            RESOURCE_BROKER => {
                self.check_broker_resource(name)?;
                if name.is_empty() {
                    // The cluster-wide dynamic defaults: sluice has none.
                    return Ok(Vec::new());
                }
                Ok(topic_config::describe_broker(&self.config, only))
            }
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("sluice does not serve configs of resource type {other}"),
            )),
        }
    }

    /// A broker resource names this broker's id, or is empty (the cluster
    /// defaults); any other id belongs to another broker.
    fn check_broker_resource(&self, name: &str) -> Outcome {
        if name.is_empty() || name == self.config.node_id.to_string() {
            return Ok(());
        }
        Err((
            ResponseError::InvalidRequest.code(),
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                self.config.node_id
            ),
        ))
    }

    /// Why a broker's settings cannot be altered: they are read-only here.
    fn broker_alter_refusal(&self, name: &str) -> Outcome {
        self.check_broker_resource(name)?;
        Err((
            ResponseError::InvalidConfig.code(),
            "sluice does not change broker configs while it runs: set them in \
             server.properties and restart the broker"
                .to_string(),
        ))
    }

    pub(super) async fn alter_configs(
        &self,
        request: AlterConfigsRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<AlterConfigsResponse> {
        if let Some(response) = self.forwarded(&request, version, context).await {
            return Some(response);
        }
        let mut responses = Vec::new();
        for resource in &request.resources {
            let name = resource.resource_name.to_string();
            let outcome = match resource.resource_type {
                RESOURCE_TOPIC => {
                    let pairs = resource
                        .configs
                        .iter()
                        .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str())));
                    match topic_config::from_pairs(pairs) {
                        Ok(configs) => {
                            self.alter_topic_configs(&name, configs, request.validate_only)
                                .await
                        }
                        Err(error) => Err(refused(&error)),
                    }
                }
                RESOURCE_BROKER => self.broker_alter_refusal(&name),
                other => Err(unsupported_resource(other)),
            };
            responses.push(alter_response(
                resource.resource_type,
                &resource.resource_name,
                outcome,
            ));
        }
        Some(AlterConfigsResponse::default().with_responses(responses))
    }

    pub(super) async fn incremental_alter_configs(
        &self,
        request: IncrementalAlterConfigsRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<IncrementalAlterConfigsResponse> {
        if let Some(response) = self.forwarded(&request, version, context).await {
            return Some(response);
        }
        let mut responses = Vec::new();
        for resource in &request.resources {
            let name = resource.resource_name.to_string();
            let outcome = match resource.resource_type {
                RESOURCE_TOPIC => {
                    self.incremental_topic(&name, &resource.configs, request.validate_only)
                        .await
                }
                RESOURCE_BROKER => self.broker_alter_refusal(&name),
                other => Err(unsupported_resource(other)),
            };
            responses.push(incremental_response(
                resource.resource_type,
                &resource.resource_name,
                outcome,
            ));
        }
        Some(IncrementalAlterConfigsResponse::default().with_responses(responses))
    }

    async fn incremental_topic(
        &self,
        name: &str,
        configs: &[incremental_alter_configs_request::AlterableConfig],
        validate_only: bool,
    ) -> Outcome {
        let current: TopicConfigs = self
            .topic_configs(name)
            .ok_or_else(|| code_only(ResponseError::UnknownTopicOrPartition))?;
        let mut operations = Vec::new();
        for config in configs {
            let operation = AlterOp::from_code(config.config_operation).ok_or_else(|| {
                (
                    ResponseError::InvalidRequest.code(),
                    format!("unknown config operation {}", config.config_operation),
                )
            })?;
            operations.push((
                config.name.as_str(),
                operation,
                config.value.as_ref().map(|v| v.as_str()),
            ));
        }
        let next = topic_config::incremental(&current, operations, |key| {
            topic_config::broker_default(&self.config, key)
        })
        .map_err(|error| refused(&error))?;
        // Two alterations racing are serialised by the topic lock, but each
        // computed its result from what it read before: the later one wins
        // whole, as Kafka's controller applies them in turn.
        self.alter_topic_configs(name, next, validate_only).await
    }
}

fn unsupported_resource(resource_type: i8) -> (i16, String) {
    (
        ResponseError::InvalidRequest.code(),
        format!("sluice does not alter configs of resource type {resource_type}"),
    )
}

/// An outcome as a response's error code and message.
fn error_fields(outcome: Outcome) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((code, message)) if message.is_empty() => (code, None),
        Err((code, message)) => (code, Some(str_bytes(&message))),
    }
}

fn alter_response(
    resource_type: i8,
    resource_name: &StrBytes,
    outcome: Outcome,
) -> AlterConfigsResourceResponse {
    let (error_code, error_message) = error_fields(outcome);
    AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(resource_name.clone())
        .with_error_code(error_code)
        .with_error_message(error_message)
}

fn incremental_response(
    resource_type: i8,
    resource_name: &StrBytes,
    outcome: Outcome,
) -> incremental_alter_configs_response::AlterConfigsResourceResponse {
    let (error_code, error_message) = error_fields(outcome);
    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(resource_name.clone())
        .with_error_code(error_code)
        .with_error_message(error_message)
}

fn described_entry(
    described: &Described,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(&described.name))
        .with_value(Some(str_bytes(&described.value)))
        .with_read_only(described.read_only)
        .with_config_source(described.source as i8)
        .with_is_sensitive(false)
        .with_config_type(described.config_type as i8);
    if include_synonyms {
        entry.synonyms = described
            .synonyms
            .iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(Some(str_bytes(value)))
                    .with_source(*source as i8)
            })
            .collect();
    }
    if include_documentation && !described.documentation.is_empty() {
        entry.documentation = Some(str_bytes(described.documentation));
    }
    entry
}

/// The `(name, value, read-only, source)` of each of a new topic's configs,
/// for CreateTopics v5+'s result.
pub(super) fn created_topic_configs(
    broker: &Broker,
    configs: &TopicConfigs,
) -> Vec<create_topics_response::CreatableTopicConfigs> {
    topic_config::describe_topic(&broker.config, configs, None)
        .iter()
        .map(|described| {
            create_topics_response::CreatableTopicConfigs::default()
                .with_name(str_bytes(&described.name))
                .with_value(Some(str_bytes(&described.value)))
                .with_read_only(described.read_only)
                .with_config_source(described.source as i8)
                .with_is_sensitive(false)
        })
        .collect()
}
