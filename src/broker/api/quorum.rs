//! The controller quorum's APIs: Vote, BeginQuorumEpoch, EndQuorumEpoch and
//! the voters' Fetch of `__cluster_metadata` (KIP-595), DescribeQuorum (what
//! `kafka-metadata-quorum describe --status` asks), and BrokerRegistration
//! (KIP-631), served by the active controller.
//!
//! On a one-node broker there is no quorum to step: Vote, BeginQuorumEpoch
//! and EndQuorumEpoch answer INCONSISTENT_VOTER_SET, and DescribeQuorum shows
//! this broker as the only voter and leader.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    PartitionData as DescribePartition, ReplicaState, TopicData as DescribeTopic,
};
use kafka_protocol::messages::*;

use super::{str_bytes, RequestContext, Versions};
use crate::broker::Broker;
use crate::cluster::{store::METADATA_TOPIC, wire};
use crate::metadata::BrokerEndpoint;
use crate::quorum::Message;

pub(super) const VOTE: Versions = (ApiKey::Vote, 0, wire::VOTE_VERSION);
pub(super) const BEGIN_QUORUM_EPOCH: Versions = (
    ApiKey::BeginQuorumEpoch,
    0,
    wire::BEGIN_QUORUM_EPOCH_VERSION,
);
pub(super) const END_QUORUM_EPOCH: Versions =
    (ApiKey::EndQuorumEpoch, 0, wire::END_QUORUM_EPOCH_VERSION);
/// v1 adds the voters' fetch times.
pub(super) const DESCRIBE_QUORUM: Versions = (ApiKey::DescribeQuorum, 0, 1);
/// Versions 0 to 4 differ only in fields sluice does not read.
pub(super) const BROKER_REGISTRATION: Versions = (ApiKey::BrokerRegistration, 0, 4);
/// The version brokers register with.
pub const BROKER_REGISTRATION_VERSION: i16 = 0;

impl Broker {
    /// Whether `node_id` is one of this cluster's voters.
    fn is_voter(&self, node_id: i32) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|cluster| cluster.quorum.voters().contains_key(&node_id))
    }

    pub(super) async fn vote(
        &self,
        request: VoteRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<VoteResponse> {
        let refused = || {
            Some(
                VoteResponse::default().with_error_code(ResponseError::InconsistentVoterSet.code()),
            )
        };
        let Some((from, message)) = wire::vote_from_request(&request) else {
            return refused();
        };
        let Some(cluster) = self.cluster.as_ref().filter(|_| self.is_voter(from)) else {
            return refused();
        };
        match cluster.quorum.step(from, message).await {
            Some(answer) => wire::vote_response(&answer),
            None => Some(
                VoteResponse::default().with_error_code(ResponseError::KafkaStorageError.code()),
            ),
        }
    }

    pub(super) async fn begin_quorum_epoch(
        &self,
        request: BeginQuorumEpochRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<BeginQuorumEpochResponse> {
        let parsed = wire::begin_quorum_epoch_from_request(&request);
        let Some(((from, message), cluster)) = parsed
            .filter(|(from, _)| self.is_voter(*from))
            .zip(self.cluster.as_ref())
        else {
            return Some(
                BeginQuorumEpochResponse::default()
                    .with_error_code(ResponseError::InconsistentVoterSet.code()),
            );
        };
        cluster.quorum.step(from, message).await;
        let status = cluster.quorum.current_status();
        Some(wire::begin_quorum_epoch_response(
            status.epoch,
            status.leader_id,
        ))
    }

    pub(super) async fn end_quorum_epoch(
        &self,
        request: EndQuorumEpochRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<EndQuorumEpochResponse> {
        let parsed = wire::end_quorum_epoch_from_request(&request);
        let Some(((from, message), cluster)) = parsed
            .filter(|(from, _)| self.is_voter(*from))
            .zip(self.cluster.as_ref())
        else {
            return Some(
                EndQuorumEpochResponse::default()
                    .with_error_code(ResponseError::InconsistentVoterSet.code()),
            );
        };
        cluster.quorum.step(from, message).await;
        Some(EndQuorumEpochResponse::default())
    }

    /// A voter's fetch of the metadata log.
    pub(super) async fn quorum_fetch(&self, request: FetchRequest) -> FetchResponse {
        let refused =
            || FetchResponse::default().with_error_code(ResponseError::InconsistentVoterSet.code());
        let Some((from, fetch)) = wire::fetch_from_request(&request) else {
            return refused();
        };
        let Some(cluster) = self.cluster.as_ref().filter(|_| self.is_voter(from)) else {
            return refused();
        };
        let max_wait_ms = request.max_wait_ms.max(0) as u64;
        match cluster.quorum.fetch(from, fetch, max_wait_ms).await {
            Some(Message::FetchResponse(answer)) => wire::fetch_response(&answer),
            _ => FetchResponse::default().with_error_code(ResponseError::KafkaStorageError.code()),
        }
    }

    pub(super) async fn describe_quorum(
        &self,
        _: DescribeQuorumRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<DescribeQuorumResponse> {
        let node_id = self.config.node_id;
        let partition = match &self.cluster {
            None => DescribePartition::default()
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(0)
                .with_high_watermark(0)
                .with_current_voters(vec![ReplicaState::default()
                    .with_replica_id(BrokerId(node_id))
                    .with_log_end_offset(0)
                    .with_last_fetch_timestamp(self.clock.now_ms())
                    .with_last_caught_up_timestamp(self.clock.now_ms())]),
            Some(cluster) => {
                let description = cluster.quorum.describe().await;
                if description.status.leader_id != Some(node_id) {
                    DescribePartition::default()
                        .with_error_code(ResponseError::NotLeaderOrFollower.code())
                        .with_leader_id(BrokerId(description.status.leader_id.unwrap_or(-1)))
                        .with_leader_epoch(description.status.epoch)
                } else {
                    let voters = description
                        .voters
                        .iter()
                        .map(|voter| {
                            ReplicaState::default()
                                .with_replica_id(BrokerId(voter.node_id))
                                .with_log_end_offset(voter.log_end_offset)
                                .with_last_fetch_timestamp(voter.last_fetch_ms)
                                .with_last_caught_up_timestamp(voter.last_fetch_ms)
                        })
                        .collect();
                    DescribePartition::default()
                        .with_leader_id(BrokerId(node_id))
                        .with_leader_epoch(description.status.epoch)
                        .with_high_watermark(description.status.high_watermark as i64)
                        .with_current_voters(voters)
                }
            }
        };
        Some(
            DescribeQuorumResponse::default().with_topics(vec![DescribeTopic::default()
                .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
                .with_partitions(vec![partition])]),
        )
    }

    pub(super) async fn broker_registration(
        &self,
        request: BrokerRegistrationRequest,
        _: i16,
        _: &RequestContext,
    ) -> Option<BrokerRegistrationResponse> {
        let response = BrokerRegistrationResponse::default();
        if self.cluster.is_none() {
            return Some(response.with_error_code(ResponseError::NotController.code()));
        }
        let listener = request
            .listeners
            .iter()
            .find(|l| l.name.as_str() == "PLAINTEXT")
            .or(request.listeners.first());
        let Some(listener) = listener else {
            return Some(response.with_error_code(ResponseError::InvalidRequest.code()));
        };
        let endpoint = BrokerEndpoint {
            node_id: request.broker_id.0,
            host: listener.host.to_string(),
            port: i32::from(listener.port),
        };
        let incarnation = crate::broker::cluster::incarnation_of(request.incarnation_id);
        // A broker that reports nothing of its logs (another broker than
        // sluice) is taken to hold nothing.
        let report = crate::broker::cluster::decode_log_report(&request.unknown_tagged_fields)
            .unwrap_or_default();
        Some(
            match self.register_broker(endpoint, incarnation, report).await {
                Ok(broker_epoch) => response.with_broker_epoch(broker_epoch),
                Err(code) => response.with_error_code(code),
            },
        )
    }
}
