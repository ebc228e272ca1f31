//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends in a
//! partition's log. Consumers ask after a leader change, to find out whether
//! the records they read were truncated away; followers will ask it to find
//! where to truncate. A consumer is never told of an offset past the high
//! watermark.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use super::{leader_epoch_error, RequestContext, Versions};
use crate::broker::Broker;

/// 2 (current leader epoch fencing) through 4, which is what the protocol
/// crate and current clients speak.
pub(super) const OFFSET_FOR_LEADER_EPOCH: Versions = (ApiKey::OffsetForLeaderEpoch, 2, 4);

impl Broker {
    pub(super) async fn offset_for_leader_epoch(
        &self,
        request: OffsetForLeaderEpochRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<OffsetForLeaderEpochResponse> {
        let from_consumer = request.replica_id.0 < 0;
        let mut topics = Vec::new();
        for topic in request.topics {
            let name = topic.topic.to_string();
            let mut partitions = Vec::new();
            for wanted in topic.partitions {
                let mut answer = EpochEndOffset::default()
                    .with_partition(wanted.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                match self.led_partition(&name, wanted.partition) {
                    None => {
                        answer.error_code = self.missing_partition_error(&name, wanted.partition)
                    }
                    Some(partition) => {
                        if let Some(code) = leader_epoch_error(
                            wanted.current_leader_epoch,
                            partition.leader_epoch(),
                        ) {
                            answer.error_code = code;
                        } else {
                            let asked = wanted.leader_epoch;
                            let found = partition
                                .with_log(async |log| {
                                    let (epoch, end) = log.end_offset_for_epoch(asked);
                                    let end = if from_consumer && end >= 0 {
                                        end.min(log.high_watermark())
                                    } else {
                                        end
                                    };
                                    Ok((epoch, end))
                                })
                                .await;
                            match found {
                                Ok((epoch, end)) => {
                                    answer.leader_epoch = epoch;
                                    answer.end_offset = end;
                                }
                                Err(error) => answer.error_code = error.code(),
                            }
                        }
                    }
                }
                partitions.push(answer);
            }
            topics.push(
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic)
                    .with_partitions(partitions),
            );
        }
        Some(OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
}
