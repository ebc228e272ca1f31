//! ElectLeaders: preferred leader election by request, and unclean election
//! only when asked (and then refused, since sluice never elects outside the
//! ISR).
//!
//! The active controller decides each partition
//! (`controller::elect_leader`) from its image and the brokers' sessions,
//! and writes the leadership changes; another broker forwards the request
//! to it. A single node leads everything it holds, so nothing needs
//! electing there.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;
use crate::controller::Election;

/// 0 through 2 (v1 adds the election type, v2 flexible encoding).
pub(super) const ELECT_LEADERS: Versions = (ApiKey::ElectLeaders, 0, 2);

/// ElectLeaders' election types.
const UNCLEAN: i8 = 1;

impl Broker {
    pub(super) async fn elect_leaders(
        &self,
        request: ElectLeadersRequest,
        version: i16,
        context: &RequestContext,
    ) -> Option<ElectLeadersResponse> {
        if let Some(response) = self.forwarded(&request, version, context).await {
            return Some(response);
        }
        let unclean = version >= 1 && request.election_type == UNCLEAN;
        // Null asks for every partition; then the ones that need nothing
        // are left out of the answer, as Kafka leaves them.
        let named = request.topic_partitions.is_some();
        let wanted: Vec<(String, Vec<i32>)> = match request.topic_partitions {
            Some(topics) => topics
                .into_iter()
                .map(|t| (t.topic.to_string(), t.partitions))
                .collect(),
            None => self.with_metadata(|image| {
                image
                    .all_topic_names()
                    .into_iter()
                    .filter_map(|name| {
                        let count = image.topic(&name)?.partitions.len() as i32;
                        Some((name, (0..count).collect()))
                    })
                    .collect()
            }),
        };
        let mut results = Vec::new();
        for (topic, partitions) in wanted {
            let mut partition_results = Vec::new();
            for index in partitions {
                let (code, message) = self.elect_one(&topic, index, unclean).await;
                if !named && code == ResponseError::ElectionNotNeeded.code() {
                    continue;
                }
                partition_results.push(
                    PartitionResult::default()
                        .with_partition_id(index)
                        .with_error_code(code)
                        .with_error_message(message.map(|m| str_bytes(&m))),
                );
            }
            if !partition_results.is_empty() || named {
                results.push(
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(str_bytes(&topic)))
                        .with_partition_result(partition_results),
                );
            }
        }
        Some(ElectLeadersResponse::default().with_replica_election_results(results))
    }

    /// One partition's election: its error code (0 when a new leader was
    /// recorded) and, for refusals, why.
    async fn elect_one(&self, topic: &str, index: i32, unclean: bool) -> (i16, Option<String>) {
        let decided = match &self.cluster {
            None => {
                let known = self.with_metadata(|image| {
                    image.topic(topic).is_some_and(|t| {
                        usize::try_from(index).is_ok_and(|i| i < t.partitions.len())
                    })
                });
                if known {
                    Election::NotNeeded
                } else {
                    Election::Unknown
                }
            }
            Some(_) => {
                let Some(electable) = self.electable_brokers() else {
                    return (ResponseError::NotController.code(), None);
                };
                self.with_metadata(|image| {
                    crate::controller::elect_leader(image, topic, index, unclean, &electable)
                })
            }
        };
        match decided {
            Election::Change(record) => match self.controller_write(record).await {
                Ok(_) => (0, None),
                Err(code) => (code, None),
            },
            Election::NotNeeded => (ResponseError::ElectionNotNeeded.code(), None),
            Election::PreferredNotAvailable => (
                ResponseError::PreferredLeaderNotAvailable.code(),
                Some("the preferred replica is not in the ISR, or its broker is not live".into()),
            ),
            Election::EligibleNotAvailable => (
                ResponseError::EligibleLeadersNotAvailable.code(),
                Some("sluice does not elect a replica outside the ISR".into()),
            ),
            Election::Unknown => (ResponseError::UnknownTopicOrPartition.code(), None),
        }
    }
}
