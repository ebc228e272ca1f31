//! DeleteRecords: moving partitions' log start offsets up, durably.
//!
//! The leader checkpoints the new start before anything else (recovery
//! reads it back) and deletes the segments wholly below it; records below
//! the start are never served again. Followers adopt the leader's start
//! from their fetch responses and report their own in their fetches; the
//! answer waits until every in-sync replica has it (Kafka's low
//! watermark), so a new leader cannot serve what was deleted.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::*;

use super::{RequestContext, Versions};
use crate::broker::Broker;

/// 0 through 2.
pub(super) const DELETE_RECORDS: Versions = (ApiKey::DeleteRecords, 0, 2);

/// The longest a DeleteRecords waits for the in-sync replicas, whatever
/// its `timeout_ms` asks: as long as a controller write may take.
const DELETE_RECORDS_WAIT_MS_MAX: u64 = 30_000;

impl Broker {
    pub(super) async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<DeleteRecordsResponse> {
        let wait = Duration::from_millis(
            u64::try_from(request.timeout_ms)
                .unwrap_or(0)
                .min(DELETE_RECORDS_WAIT_MS_MAX),
        );
        let mut topics = Vec::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let mut partitions = Vec::new();
            for wanted in topic.partitions {
                let index = wanted.partition_index;
                let outcome = match self.led_partition(&name, index) {
                    None => Err(self.missing_partition_error(&name, index)),
                    Some(partition) => match partition.delete_records(wanted.offset).await {
                        Err(code) => Err(code),
                        Ok(low_watermark) => {
                            let replicated = tokio::time::timeout(
                                wait,
                                partition.wait_log_start_replicated(low_watermark),
                            )
                            .await;
                            match replicated {
                                Ok(true) => Ok(low_watermark),
                                Ok(false) => Err(ResponseError::NotLeaderOrFollower.code()),
                                Err(_) => Err(ResponseError::RequestTimedOut.code()),
                            }
                        }
                    },
                };
                let (low_watermark, error_code) = match outcome {
                    Ok(low_watermark) => (low_watermark, 0),
                    Err(code) => (-1, code),
                };
                partitions.push(
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(index)
                        .with_low_watermark(low_watermark)
                        .with_error_code(error_code),
                );
            }
            topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        Some(DeleteRecordsResponse::default().with_topics(topics))
    }
}
