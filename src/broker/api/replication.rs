//! The APIs brokers send each other for replication: AlterPartition (a
//! leader asks the active controller to record an ISR change) and
//! BrokerHeartbeat (a broker keeps its session with the controller alive).
//! Both are answered only by the active controller; elsewhere they get
//! NOT_CONTROLLER. Followers' fetches are Fetch requests with a replica id,
//! served in `fetch.rs`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
use kafka_protocol::messages::*;

use super::{RequestContext, Versions};
use crate::broker::Broker;

/// From 2 (topics by id), what KRaft brokers send; 3 adds broker epochs
/// in the new ISR, which sluice does not read.
pub(super) const ALTER_PARTITION: Versions = (ApiKey::AlterPartition, 2, 3);

/// Versions 0 and 1 differ only in a field sluice does not read.
pub(super) const BROKER_HEARTBEAT: Versions = (ApiKey::BrokerHeartbeat, 0, 1);

impl Broker {
    pub(super) async fn alter_partition(
        &self,
        request: AlterPartitionRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<AlterPartitionResponse> {
        if !self.is_active_controller() || self.cluster.is_none() {
            return Some(
                AlterPartitionResponse::default()
                    .with_error_code(ResponseError::NotController.code()),
            );
        }
        let leader_id = request.broker_id.0;
        let mut topics = Vec::new();
        for topic in request.topics {
            let name = self.with_metadata(|image| {
                image
                    .topic_by_id(topic.topic_id)
                    .map(|found| found.name.clone())
            });
            let mut partitions = Vec::new();
            for wanted in topic.partitions {
                // v2 names members alone; v3 adds the broker epoch each
                // member's fetch carried (KIP-903), -1 where it is unknown.
                let isr: Vec<(i32, i64)> = if wanted.new_isr_with_epochs.is_empty() {
                    wanted.new_isr.iter().map(|id| (id.0, -1)).collect()
                } else {
                    wanted
                        .new_isr_with_epochs
                        .iter()
                        .map(|state| (state.broker_id.0, state.broker_epoch))
                        .collect()
                };
                let outcome = match &name {
                    None => Err(ResponseError::UnknownTopicId.code()),
                    Some(name) => {
                        self.alter_partition_here(
                            (name, wanted.partition_index),
                            (leader_id, wanted.leader_epoch, wanted.partition_epoch),
                            &isr,
                        )
                        .await
                    }
                };
                let mut answer = PartitionData::default()
                    .with_partition_index(wanted.partition_index)
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1);
                match outcome {
                    Ok(()) => {
                        let recorded = self.with_metadata(|image| {
                            let topic = image.topic(name.as_deref()?)?;
                            topic
                                .partitions
                                .get(usize::try_from(wanted.partition_index).ok()?)
                                .cloned()
                        });
                        if let Some(recorded) = recorded {
                            answer.leader_id = BrokerId(recorded.leader_id);
                            answer.leader_epoch = recorded.leader_epoch;
                            answer.partition_epoch = self.with_metadata(|image| {
                                image.partition_epoch(
                                    name.as_deref().unwrap_or_default(),
                                    wanted.partition_index,
                                )
                            });
                            answer.isr = recorded.isr.iter().map(|id| BrokerId(*id)).collect();
                        }
                    }
                    Err(code) => answer.error_code = code,
                }
                partitions.push(answer);
            }
            topics.push(
                TopicData::default()
                    .with_topic_id(topic.topic_id)
                    .with_partitions(partitions),
            );
        }
        Some(AlterPartitionResponse::default().with_topics(topics))
    }

    pub(super) async fn broker_heartbeat(
        &self,
        request: BrokerHeartbeatRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<BrokerHeartbeatResponse> {
        let response = BrokerHeartbeatResponse::default();
        let incarnation = u64::try_from(request.broker_epoch).unwrap_or(u64::MAX);
        if self.cluster.is_none() || !self.heartbeat_received(request.broker_id.0, incarnation) {
            return Some(response.with_error_code(ResponseError::NotController.code()));
        }
        Some(response.with_is_caught_up(true))
    }
}
