//! ListOffsets: the earliest, latest, by-timestamp or (v7+, KIP-734)
//! largest-timestamp offset of each partition.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::{RequestContext, Versions};
use crate::broker::Broker;

/// 1 through 7 (v7 adds the max-timestamp lookup). v8's tiered-storage
/// lookups are not served.
pub(super) const LIST_OFFSETS: Versions = (ApiKey::ListOffsets, 1, 7);

impl Broker {
    pub(super) async fn list_offsets(
        &self,
        request: ListOffsetsRequest,
        version: i16,
        _: &RequestContext,
    ) -> Option<ListOffsetsResponse> {
        /// ListOffsets' special timestamps.
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        const MAX_TIMESTAMP: i64 = -3;
        let mut topics = Vec::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let mut partitions = Vec::new();
            for wanted in topic.partitions {
                let mut response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(wanted.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                match self.led_partition(&name, wanted.partition_index) {
                    None => {
                        response.error_code =
                            self.missing_partition_error(&name, wanted.partition_index)
                    }
                    Some(partition) => {
                        if version >= 4 {
                            response.leader_epoch = partition.leader_epoch();
                        }
                        let timestamp = wanted.timestamp;
                        let found = partition
                            .with_log(async |log| match timestamp {
                                LATEST => Ok(Some((log.high_watermark(), -1))),
                                EARLIEST => Ok(Some((log.log_start_offset(), -1))),
                                MAX_TIMESTAMP if version >= 7 => {
                                    log.offset_of_max_timestamp().await
                                }
                                t if t >= 0 => log.offset_for_timestamp(t).await,
                                _ => Ok(None),
                            })
                            .await;
                        match found {
                            Ok(Some((offset, found_timestamp))) => {
                                response.offset = offset;
                                response.timestamp = found_timestamp;
                            }
                            Ok(None)
                                if timestamp < 0
                                    && timestamp != LATEST
                                    && timestamp != EARLIEST
                                    && !(timestamp == MAX_TIMESTAMP && version >= 7) =>
                            {
                                response.error_code = ResponseError::InvalidRequest.code();
                            }
                            Ok(None) => {}
                            Err(error) => response.error_code = error.code(),
                        }
                    }
                }
                partitions.push(response);
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        Some(ListOffsetsResponse::default().with_topics(topics))
    }
}
