//! The quorum's messages in Kafka's wire form: Vote, BeginQuorumEpoch and
//! Fetch on `__cluster_metadata` partition 0, as KIP-595 carries them. Each
//! conversion goes both ways; anything that does not name the metadata
//! partition converts to `None` and is refused by the caller.

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData as FetchPartitionData,
};
use kafka_protocol::messages::{
    begin_quorum_epoch_request, begin_quorum_epoch_response, end_quorum_epoch_request,
    vote_request, vote_response, BeginQuorumEpochRequest, BeginQuorumEpochResponse, BrokerId,
    EndQuorumEpochRequest, FetchRequest, FetchResponse, TopicName, VoteRequest, VoteResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::store::{decode_entries, encode_entries, METADATA_TOPIC};
use crate::quorum::{self, Message, NodeId};

/// The versions the quorum speaks to its peers, and serves.
pub const VOTE_VERSION: i16 = 0;
pub const BEGIN_QUORUM_EPOCH_VERSION: i16 = 0;
pub const END_QUORUM_EPOCH_VERSION: i16 = 0;
/// Fetch v12: topics by name, the follower's id in `replica_id`.
pub const QUORUM_FETCH_VERSION: i16 = 12;

/// How long the leader may hold a follower's fetch that has nothing new.
pub const QUORUM_FETCH_MAX_WAIT_MS: i32 = 500;

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(METADATA_TOPIC))
}

fn is_metadata_topic(name: &TopicName) -> bool {
    name.0.as_str() == METADATA_TOPIC
}

fn id_or_none(id: BrokerId) -> Option<NodeId> {
    (id.0 >= 0).then_some(id.0)
}

/// A candidate's Vote, for `voter`.
pub fn vote_request(message: &Message) -> Option<VoteRequest> {
    let Message::Vote {
        epoch,
        candidate_id,
        last_epoch,
        log_end_offset,
    } = message
    else {
        return None;
    };
    let partition = vote_request::PartitionData::default()
        .with_partition_index(0)
        .with_replica_epoch(*epoch)
        .with_replica_id(BrokerId(*candidate_id))
        .with_last_offset_epoch(*last_epoch)
        .with_last_offset(*log_end_offset as i64);
    Some(
        VoteRequest::default().with_topics(vec![vote_request::TopicData::default()
            .with_topic_name(topic_name())
            .with_partitions(vec![partition])]),
    )
}

/// The candidate and its Vote.
pub fn vote_from_request(request: &VoteRequest) -> Option<(NodeId, Message)> {
    let topic = request
        .topics
        .iter()
        .find(|t| is_metadata_topic(&t.topic_name))?;
    let partition = topic.partitions.iter().find(|p| p.partition_index == 0)?;
    let candidate_id = partition.replica_id.0;
    Some((
        candidate_id,
        Message::Vote {
            epoch: partition.replica_epoch,
            candidate_id,
            last_epoch: partition.last_offset_epoch,
            log_end_offset: u64::try_from(partition.last_offset).ok()?,
        },
    ))
}

pub fn vote_response(message: &Message) -> Option<VoteResponse> {
    let Message::VoteResponse {
        epoch,
        granted,
        leader_id,
    } = message
    else {
        return None;
    };
    let partition = vote_response::PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(leader_id.unwrap_or(-1)))
        .with_leader_epoch(*epoch)
        .with_vote_granted(*granted);
    Some(
        VoteResponse::default().with_topics(vec![vote_response::TopicData::default()
            .with_topic_name(topic_name())
            .with_partitions(vec![partition])]),
    )
}

pub fn vote_from_response(response: &VoteResponse) -> Option<Message> {
    let topic = response
        .topics
        .iter()
        .find(|t| is_metadata_topic(&t.topic_name))?;
    let partition = topic.partitions.iter().find(|p| p.partition_index == 0)?;
    if partition.error_code != 0 {
        return None;
    }
    Some(Message::VoteResponse {
        epoch: partition.leader_epoch,
        granted: partition.vote_granted,
        leader_id: id_or_none(partition.leader_id),
    })
}

pub fn begin_quorum_epoch_request(message: &Message) -> Option<BeginQuorumEpochRequest> {
    let Message::BeginQuorumEpoch { epoch, leader_id } = message else {
        return None;
    };
    let partition = begin_quorum_epoch_request::PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(*leader_id))
        .with_leader_epoch(*epoch);
    Some(BeginQuorumEpochRequest::default().with_topics(vec![
            begin_quorum_epoch_request::TopicData::default()
                .with_topic_name(topic_name())
                .with_partitions(vec![partition]),
        ]))
}

/// The new leader and its BeginQuorumEpoch.
pub fn begin_quorum_epoch_from_request(
    request: &BeginQuorumEpochRequest,
) -> Option<(NodeId, Message)> {
    let topic = request
        .topics
        .iter()
        .find(|t| is_metadata_topic(&t.topic_name))?;
    let partition = topic.partitions.iter().find(|p| p.partition_index == 0)?;
    Some((
        partition.leader_id.0,
        Message::BeginQuorumEpoch {
            epoch: partition.leader_epoch,
            leader_id: partition.leader_id.0,
        },
    ))
}

/// The acknowledgement of a BeginQuorumEpoch: the receiver's own view.
pub fn begin_quorum_epoch_response(
    epoch: i32,
    leader_id: Option<NodeId>,
) -> BeginQuorumEpochResponse {
    let partition = begin_quorum_epoch_response::PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(leader_id.unwrap_or(-1)))
        .with_leader_epoch(epoch);
    BeginQuorumEpochResponse::default().with_topics(vec![
        begin_quorum_epoch_response::TopicData::default()
            .with_topic_name(topic_name())
            .with_partitions(vec![partition]),
    ])
}

pub fn end_quorum_epoch_request(message: &Message) -> Option<EndQuorumEpochRequest> {
    let Message::EndQuorumEpoch {
        epoch,
        leader_id,
        preferred_successors,
    } = message
    else {
        return None;
    };
    let partition = end_quorum_epoch_request::PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(*leader_id))
        .with_leader_epoch(*epoch)
        .with_preferred_successors(preferred_successors.clone());
    Some(EndQuorumEpochRequest::default().with_topics(vec![
            end_quorum_epoch_request::TopicData::default()
                .with_topic_name(topic_name())
                .with_partitions(vec![partition]),
        ]))
}

/// The resigning leader and its EndQuorumEpoch.
pub fn end_quorum_epoch_from_request(request: &EndQuorumEpochRequest) -> Option<(NodeId, Message)> {
    let topic = request
        .topics
        .iter()
        .find(|t| is_metadata_topic(&t.topic_name))?;
    let partition = topic.partitions.iter().find(|p| p.partition_index == 0)?;
    Some((
        partition.leader_id.0,
        Message::EndQuorumEpoch {
            epoch: partition.leader_epoch,
            leader_id: partition.leader_id.0,
            preferred_successors: partition.preferred_successors.clone(),
        },
    ))
}

pub fn fetch_request(fetch: &quorum::FetchRequest) -> FetchRequest {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(fetch.epoch)
        .with_fetch_offset(fetch.fetch_offset as i64)
        .with_last_fetched_epoch(fetch.last_fetched_epoch)
        .with_partition_max_bytes(1 << 20);
    FetchRequest::default()
        .with_replica_id(BrokerId(fetch.replica_id))
        .with_max_wait_ms(QUORUM_FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name())
            .with_partitions(vec![partition])])
}

/// Whether a Fetch is a voter's fetch of the metadata log.
pub fn is_quorum_fetch(request: &FetchRequest) -> bool {
    request
        .topics
        .iter()
        .any(|topic| is_metadata_topic(&topic.topic))
}

/// The follower and its fetch. The wire's correlation id stands in for the
/// core's fetch id, so it is 0 here and restored by the sender.
pub fn fetch_from_request(request: &FetchRequest) -> Option<(NodeId, quorum::FetchRequest)> {
    let topic = request
        .topics
        .iter()
        .find(|t| is_metadata_topic(&t.topic))?;
    let partition = topic.partitions.iter().find(|p| p.partition == 0)?;
    let replica_id = request.replica_id.0;
    Some((
        replica_id,
        quorum::FetchRequest {
            epoch: partition.current_leader_epoch,
            replica_id,
            fetch_offset: u64::try_from(partition.fetch_offset).ok()?,
            last_fetched_epoch: partition.last_fetched_epoch,
            fetch_id: 0,
        },
    ))
}

pub fn fetch_response(answer: &quorum::FetchResponse) -> FetchResponse {
    let mut partition = FetchPartitionData::default()
        .with_partition_index(0)
        .with_high_watermark(answer.high_watermark.map_or(-1, |hw| hw as i64))
        .with_current_leader(
            LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(answer.leader_id.unwrap_or(-1)))
                .with_leader_epoch(answer.epoch),
        )
        .with_records(Some(encode_entries(&answer.entries, answer.base_offset)));
    if let Some((epoch, end_offset)) = answer.diverging {
        partition = partition.with_diverging_epoch(
            EpochEndOffset::default()
                .with_epoch(epoch)
                .with_end_offset(end_offset as i64),
        );
    }
    FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(topic_name())
        .with_partitions(vec![partition])])
}

/// The leader's answer to `fetch`, as the core takes it.
pub fn fetch_from_response(
    response: FetchResponse,
    fetch: &quorum::FetchRequest,
) -> Option<quorum::FetchResponse> {
    let topic = response
        .responses
        .into_iter()
        .find(|t| is_metadata_topic(&t.topic))?;
    let partition = topic
        .partitions
        .into_iter()
        .find(|p| p.partition_index == 0)?;
    if partition.error_code != 0 {
        return None;
    }
    let entries = decode_entries(partition.records.unwrap_or_default(), fetch.fetch_offset)?;
    let diverging = (partition.diverging_epoch.epoch >= 0).then(|| {
        (
            partition.diverging_epoch.epoch,
            partition.diverging_epoch.end_offset.max(0) as u64,
        )
    });
    Some(quorum::FetchResponse {
        fetch_id: fetch.fetch_id,
        epoch: partition.current_leader.leader_epoch,
        leader_id: id_or_none(partition.current_leader.leader_id),
        high_watermark: u64::try_from(partition.high_watermark).ok(),
        diverging,
        base_offset: fetch.fetch_offset,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn every_message_survives_its_wire_form() {
        let vote = Message::Vote {
            epoch: 4,
            candidate_id: 2,
            last_epoch: 3,
            log_end_offset: 17,
        };
        let request = vote_request(&vote).expect("a vote");
        assert_eq!(vote_from_request(&request), Some((2, vote)));

        for leader_id in [None, Some(1)] {
            let answer = Message::VoteResponse {
                epoch: 4,
                granted: leader_id.is_none(),
                leader_id,
            };
            let response = vote_response(&answer).expect("a vote response");
            assert_eq!(vote_from_response(&response), Some(answer));
        }

        let begin = Message::BeginQuorumEpoch {
            epoch: 5,
            leader_id: 3,
        };
        let request = begin_quorum_epoch_request(&begin).expect("begin");
        assert_eq!(begin_quorum_epoch_from_request(&request), Some((3, begin)));

        let end = Message::EndQuorumEpoch {
            epoch: 5,
            leader_id: 3,
            preferred_successors: vec![2, 1],
        };
        let request = end_quorum_epoch_request(&end).expect("end");
        assert_eq!(end_quorum_epoch_from_request(&request), Some((3, end)));

        let fetch = quorum::FetchRequest {
            epoch: 5,
            replica_id: 1,
            fetch_offset: 9,
            last_fetched_epoch: 4,
            fetch_id: 0,
        };
        let request = fetch_request(&fetch);
        assert!(is_quorum_fetch(&request));
        assert_eq!(fetch_from_request(&request), Some((1, fetch.clone())));

        let answers = [
            quorum::FetchResponse {
                fetch_id: 0,
                epoch: 5,
                leader_id: Some(3),
                high_watermark: Some(8),
                diverging: None,
                base_offset: 9,
                entries: vec![quorum::Entry {
                    epoch: 5,
                    payload: Bytes::from_static(b"x"),
                }],
            },
            quorum::FetchResponse {
                fetch_id: 0,
                epoch: 5,
                leader_id: None,
                high_watermark: None,
                diverging: Some((3, 7)),
                base_offset: 9,
                entries: Vec::new(),
            },
        ];
        for answer in answers {
            let response = fetch_response(&answer);
            assert_eq!(fetch_from_response(response, &fetch), Some(answer));
        }
    }
}
