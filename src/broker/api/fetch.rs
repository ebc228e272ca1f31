//! Fetch: reads from each partition up to the high watermark, long-polling
//! until `min_bytes` arrive or `max_wait_ms` passes (capped by
//! [`FETCH_MAX_WAIT_MS_LIMIT`]).
//!
//! A fetch with a replica id (`replica_id >= 0`) is a follower's: it reads
//! up to the leader's log end, tells the replica core where the follower
//! is, and answers a follower whose last fetched epoch does not match the
//! leader's log with `diverging_epoch` instead of records (KIP-320).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

use super::leader_epoch_error;
use crate::broker::partition::FollowerRead;

/// Fetch long polls wait at most this long whatever the client asks, so a
/// connection is never parked indefinitely.
const FETCH_MAX_WAIT_MS_LIMIT: i32 = 30_000;

use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;

/// From 4 (record batches v2 with isolation level) to 12; 13 names topics by id.
pub(super) const FETCH: Versions = (ApiKey::Fetch, 4, 12);

impl Broker {
    pub(super) async fn fetch(
        &self,
        request: FetchRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<FetchResponse> {
        if crate::cluster::wire::is_quorum_fetch(&request) {
            return Some(self.quorum_fetch(request).await);
        }
        let replica_id = request.replica_id.0;
        let max_wait =
            Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_MAX_WAIT_MS_LIMIT) as u64);
        // tokio's clock (virtual under the simulation), as every wait here.
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut arrivals = self.data_arrived.subscribe();
        let broker_epoch = if replica_id >= 0 {
            crate::broker::replication::fetch_broker_epoch(&request, replica_id)
        } else {
            -1
        };
        loop {
            arrivals.borrow_and_update();
            let (response, total_bytes, any_error) = if replica_id >= 0 {
                self.replica_fetch_once(&request, (replica_id, broker_epoch))
                    .await
            } else {
                self.fetch_once(&request).await
            };
            let satisfied = total_bytes >= request.min_bytes.max(0) as usize;
            if satisfied || any_error || tokio::time::Instant::now() >= deadline {
                return Some(response);
            }
            tokio::select! {
                biased;
                changed = arrivals.changed() => {
                    if changed.is_err() {
                        return Some(response);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    pub(super) async fn fetch_once(&self, request: &FetchRequest) -> (FetchResponse, usize, bool) {
        let mut remaining = if request.max_bytes <= 0 {
            usize::MAX
        } else {
            request.max_bytes as usize
        };
        let mut total_bytes = 0usize;
        let mut any_error = false;
        let mut topics = Vec::new();
        for topic in &request.topics {
            let name = topic.topic.to_string();
            let mut partitions = Vec::new();
            for wanted in &topic.partitions {
                let mut data = PartitionData::default()
                    .with_partition_index(wanted.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_aborted_transactions(Some(Vec::new()))
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(Bytes::new()));
                match self.led_partition(&name, wanted.partition) {
                    None => {
                        data.error_code = self.missing_partition_error(&name, wanted.partition);
                        any_error = true;
                    }
                    Some(partition)
                        if leader_epoch_error(
                            wanted.current_leader_epoch,
                            partition.leader_epoch(),
                        )
                        .is_some() =>
                    {
                        data.error_code = leader_epoch_error(
                            wanted.current_leader_epoch,
                            partition.leader_epoch(),
                        )
                        .expect("checked by the guard");
                        any_error = true;
                    }
                    Some(partition) => {
                        let limit = (wanted.partition_max_bytes.max(0) as usize).min(remaining);
                        match partition.read(wanted.fetch_offset, limit.max(1)).await {
                            Ok((bytes, offsets)) => {
                                data.high_watermark = offsets.high_watermark;
                                data.last_stable_offset = offsets.high_watermark;
                                data.log_start_offset = offsets.log_start_offset;
                                // Only the first non-empty partition may exceed the limits (KIP-74).
                                let fits = total_bytes == 0 || bytes.len() <= limit;
                                if fits && !bytes.is_empty() {
                                    total_bytes += bytes.len();
                                    remaining = remaining.saturating_sub(bytes.len());
                                    data.records = Some(bytes);
                                }
                            }
                            Err(error) => {
                                data.error_code = error.code();
                                any_error = true;
                                if let Ok(offsets) = partition.offsets().await {
                                    data.high_watermark = offsets.high_watermark;
                                    data.last_stable_offset = offsets.high_watermark;
                                    data.log_start_offset = offsets.log_start_offset;
                                }
                            }
                        }
                    }
                }
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(&name)))
                    .with_partitions(partitions),
            );
        }
        (
            FetchResponse::default().with_responses(topics),
            total_bytes,
            any_error,
        )
    }
}

impl Broker {
    /// One pass of a follower's fetch over its partitions.
    async fn replica_fetch_once(
        &self,
        request: &FetchRequest,
        (replica_id, broker_epoch): (i32, i64),
    ) -> (FetchResponse, usize, bool) {
        let mut remaining = usize::try_from(request.max_bytes).unwrap_or(0).max(1);
        let mut total_bytes = 0usize;
        let mut any_error = false;
        let mut topics = Vec::new();
        let now_ms = self.clock.now_ms();
        for topic in &request.topics {
            let name = topic.topic.to_string();
            let mut partitions = Vec::new();
            for wanted in &topic.partitions {
                let mut data = PartitionData::default()
                    .with_partition_index(wanted.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_records(Some(Bytes::new()));
                let partition = self.led_partition(&name, wanted.partition);
                let refused = match &partition {
                    None => Some(self.missing_partition_error(&name, wanted.partition)),
                    Some(partition) => {
                        leader_epoch_error(wanted.current_leader_epoch, partition.leader_epoch())
                    }
                };
                if let (None, Some(partition)) = (refused, partition) {
                    let limit = usize::try_from(wanted.partition_max_bytes)
                        .unwrap_or(0)
                        .min(remaining)
                        .max(1);
                    let high_watermark = partition.high_watermark();
                    partition.note_follower_log_start(replica_id, wanted.log_start_offset);
                    let position = (wanted.fetch_offset, wanted.last_fetched_epoch);
                    match partition
                        .follower_read((replica_id, broker_epoch), position, limit, now_ms)
                        .await
                    {
                        Ok(FollowerRead::Diverging { epoch, end_offset }) => {
                            data.diverging_epoch.epoch = epoch;
                            data.diverging_epoch.end_offset = end_offset;
                            any_error = true;
                        }
                        Ok(FollowerRead::BelowLogStart { log_start_offset }) => {
                            data.error_code =
                                kafka_protocol::error::ResponseError::OffsetOutOfRange.code();
                            data.log_start_offset = log_start_offset;
                            any_error = true;
                        }
                        Ok(FollowerRead::Records { bytes, offsets }) => {
                            data.high_watermark = offsets.high_watermark;
                            data.last_stable_offset = offsets.high_watermark;
                            data.log_start_offset = offsets.log_start_offset;
                            total_bytes += bytes.len();
                            remaining = remaining.saturating_sub(bytes.len());
                            data.records = Some(bytes);
                        }
                        Err(error) => {
                            data.error_code = error.code();
                            any_error = true;
                        }
                    }
                    // The follower's position may have moved the high
                    // watermark: wake consumers' and producers' waits.
                    if partition.high_watermark() != high_watermark {
                        self.notify_data_arrived();
                    }
                } else {
                    data.error_code = refused.expect("refused or led");
                    any_error = true;
                }
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(&name)))
                    .with_partitions(partitions),
            );
        }
        (
            FetchResponse::default().with_responses(topics),
            total_bytes,
            any_error,
        )
    }
}
