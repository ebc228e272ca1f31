//! OffsetCommit and OffsetFetch: a group's committed offsets, written to
//! `__consumer_offsets` and answered only once durable.

use std::time::Duration;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};

use crate::group::{CommitRequest, CommittedOffset};

/// How long an OffsetCommit waits for its write to become durable before
/// the broker answers REQUEST_TIMED_OUT (the write may still land; the
/// client treats the outcome as unknown). Kafka's own default
/// `offsets.commit.timeout.ms`.
const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// A topic's partitions with their committed offsets, if any.
type TopicCommits = (String, Vec<(i32, Option<CommittedOffset>)>);

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;

/// 2 through 8; 9 and later belong to the KIP-848 protocol.
pub(super) const OFFSET_COMMIT: Versions = (ApiKey::OffsetCommit, 2, 8);

/// 1 through 8, batched groups included.
pub(super) const OFFSET_FETCH: Versions = (ApiKey::OffsetFetch, 1, 8);

impl Broker {
    pub(super) async fn offset_commit(
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
        let not_coordinator = self.group_coordinator_error(&request.group_id);
        for topic in &request.topics {
            let name = topic.name.to_string();
            let partition_count =
                self.with_metadata(|image| image.topic(&name).map_or(0, |t| t.partitions.len()));
            let mut topic_codes = Vec::new();
            for partition in &topic.partitions {
                let exists = usize::try_from(partition.partition_index)
                    .is_ok_and(|index| index < partition_count);
                if not_coordinator.is_some() {
                    topic_codes.push(not_coordinator);
                } else if exists {
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
    pub(super) fn committed_for(
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
    pub(super) fn committed_topics(
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

    pub(super) async fn offset_fetch(
        &self,
        request: OffsetFetchRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<OffsetFetchResponse> {
        let mut response = OffsetFetchResponse::default();
        if version >= 8 {
            for group in request.groups {
                if let Some(code) = self.group_coordinator_error(&group.group_id) {
                    response.groups.push(
                        OffsetFetchResponseGroup::default()
                            .with_group_id(group.group_id)
                            .with_error_code(code),
                    );
                    continue;
                }
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
        } else if let Some(code) = self.group_coordinator_error(&request.group_id) {
            response.error_code = code;
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
}
