//! Produce: appends each partition's batches, answering per partition; acks=0
//! gets no response at all.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::partition::{AckWait, Partition};
use crate::broker::Broker;

/// From 3 (record batches v2) to 12; 13 names topics by id, which sluice does not.
pub(super) const PRODUCE: Versions = (ApiKey::Produce, 3, 12);

impl Broker {
    pub(super) async fn produce(
        &self,
        request: ProduceRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<ProduceResponse> {
        let acks = request.acks;
        let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
        let mut responses = Vec::new();
        for topic in request.topic_data {
            let name = topic.name.to_string();
            let mut partition_responses = Vec::new();
            for data in topic.partition_data {
                let mut response = PartitionProduceResponse::default()
                    .with_index(data.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let error_code = if !matches!(acks, -1..=1) {
                    ResponseError::InvalidRequiredAcks.code()
                } else if request.transactional_id.is_some() {
                    ResponseError::TransactionalIdAuthorizationFailed.code()
                } else if name == crate::broker::OFFSETS_TOPIC {
                    // Only the group coordinator writes the offsets log, as
                    // in Kafka, which refuses appends to internal topics.
                    ResponseError::InvalidTopicException.code()
                } else if let Some(partition) = self.led_partition(&name, data.index) {
                    match data.records {
                        None => ResponseError::CorruptMessage.code(),
                        Some(records) => match self
                            .produce_partition(&partition, records, acks, timeout)
                            .await
                        {
                            Ok((outcome, log_start_offset)) => {
                                response.base_offset = outcome.base_offset;
                                response.log_append_time_ms = outcome.log_append_time_ms;
                                response.log_start_offset = log_start_offset;
                                0
                            }
                            Err(code) => code,
                        },
                    }
                } else {
                    self.missing_partition_error(&name, data.index)
                };
                response.error_code = error_code;
                partition_responses.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partition_responses(partition_responses),
            );
        }
        if acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(responses))
    }

    /// Appends one partition's batches and waits for what `acks` asks:
    /// nothing more for acks=1 (or, under `log.flush.on.ack`, the fsync),
    /// and for acks=all the high watermark passing the batch, which in a
    /// cluster means every in-sync replica holds it.
    pub(super) async fn produce_partition(
        &self,
        partition: &Partition,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<(crate::log::AppendOutcome, i64), i16> {
        if acks == -1 && !partition.has_min_insync_replicas() {
            return Err(ResponseError::NotEnoughReplicas.code());
        }
        let leader_epoch = partition.leader_epoch();
        let outcome = partition.append(records, self.clock.now_ms()).await.map_err(|error| {
            tracing::debug!(topic = %partition.topic, partition = partition.index, %error, "produce rejected");
            error.code()
        })?;
        // Wakes followers' held fetches, and consumers' if the high
        // watermark moved.
        self.notify_data_arrived();
        // tokio's clock (virtual under the simulation), as every wait here.
        let deadline = tokio::time::Instant::now() + timeout;
        // Planted: the write reached the page cache, call it durable (and
        // replicated) at once.
        let skip_waits = crate::planted!(AckBeforeFsync);
        if self.config.log.flush_on_ack && acks != 0 && !skip_waits {
            match tokio::time::timeout_at(deadline, partition.sync_to(outcome.last_offset + 1))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error.code()),
                Err(_) => return Err(ResponseError::RequestTimedOut.code()),
            }
            self.notify_data_arrived();
        }
        if acks == -1 && !skip_waits && !crate::planted!(AckBeforeReplication) {
            let replicated = partition.wait_replicated(outcome.last_offset + 1, leader_epoch);
            match tokio::time::timeout_at(deadline, replicated).await {
                Ok(AckWait::Replicated) => {}
                Ok(AckWait::NotLeader) => return Err(ResponseError::NotLeaderOrFollower.code()),
                Ok(AckWait::BelowMinInsync) => {
                    return Err(ResponseError::NotEnoughReplicasAfterAppend.code())
                }
                Err(_) => return Err(ResponseError::RequestTimedOut.code()),
            }
        }
        let log_start_offset = partition
            .offsets()
            .await
            .map(|o| o.log_start_offset)
            .unwrap_or(-1);
        Ok((outcome, log_start_offset))
    }
}
