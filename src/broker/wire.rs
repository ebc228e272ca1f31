//! One-line summaries of requests and responses for the `sluice::wire`
//! debug events the broker emits around every request: what a reader of a
//! trace needs (partitions, offsets, generations, error codes), never the
//! record bytes. The simulation turns these events into trace lines.

use kafka_protocol::messages::*;

use crate::log::batch;

/// A request or response, summarised.
#[derive(Debug, Default)]
pub struct Summary {
    pub text: String,
    /// `topic-partition` of every partition it names, for trace filters.
    pub partitions: Vec<String>,
}

impl Summary {
    fn partition(&mut self, topic: &str, partition: i32, detail: std::fmt::Arguments<'_>) {
        let name = format!("{topic}-{partition}");
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(&format!("{name}{detail}"));
        self.partitions.push(name);
    }

    fn field(&mut self, detail: std::fmt::Arguments<'_>) {
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(&detail.to_string());
    }

    /// `err=N` for a non-zero error code; nothing for success.
    fn error(&mut self, code: i16) {
        if code != 0 {
            self.field(format_args!("err={code}"));
        }
    }
}

/// What the broker says about a message in its `sluice::wire` events.
pub trait Summarise {
    fn summary(&self) -> Summary {
        Summary::default()
    }
}

/// Records in a produce payload and the first batch's producer id and
/// sequence: enough to follow idempotence in a trace.
fn describe_records(records: Option<&bytes::Bytes>) -> String {
    let Some(bytes) = records else {
        return String::new();
    };
    match batch::parse_header_prefix(bytes) {
        Ok(header) if header.producer_id >= 0 => format!(
            " {} bytes pid={} seq={}",
            bytes.len(),
            header.producer_id,
            header.base_sequence
        ),
        _ => format!(" {} bytes", bytes.len()),
    }
}

impl Summarise for ProduceRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!("acks={}", self.acks));
        for topic in &self.topic_data {
            for data in &topic.partition_data {
                s.partition(
                    &topic.name,
                    data.index,
                    format_args!("{}", describe_records(data.records.as_ref())),
                );
            }
        }
        s
    }
}

impl Summarise for ProduceResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for topic in &self.responses {
            for p in &topic.partition_responses {
                s.partition(&topic.name, p.index, format_args!("@{}", p.base_offset));
                s.error(p.error_code);
            }
        }
        s
    }
}

impl Summarise for FetchRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for topic in &self.topics {
            for p in &topic.partitions {
                s.partition(
                    &topic.topic,
                    p.partition,
                    format_args!(" from {}", p.fetch_offset),
                );
            }
        }
        s
    }
}

impl Summarise for FetchResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for topic in &self.responses {
            for p in &topic.partitions {
                let bytes = p.records.as_ref().map_or(0, |r| r.len());
                s.partition(
                    &topic.topic,
                    p.partition_index,
                    format_args!(" hw={} {bytes} bytes", p.high_watermark),
                );
                s.error(p.error_code);
            }
        }
        s.error(self.error_code);
        s
    }
}

impl Summarise for ListOffsetsRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for topic in &self.topics {
            for p in &topic.partitions {
                s.partition(
                    &topic.name,
                    p.partition_index,
                    format_args!(" at {}", p.timestamp),
                );
            }
        }
        s
    }
}

impl Summarise for ListOffsetsResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for topic in &self.topics {
            for p in &topic.partitions {
                s.partition(
                    &topic.name,
                    p.partition_index,
                    format_args!(" = {}", p.offset),
                );
                s.error(p.error_code);
            }
        }
        s
    }
}

impl Summarise for OffsetCommitRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!(
            "group={} gen={} member={}",
            self.group_id.as_str(),
            self.generation_id_or_member_epoch,
            self.member_id.as_str()
        ));
        for topic in &self.topics {
            for p in &topic.partitions {
                s.partition(
                    &topic.name,
                    p.partition_index,
                    format_args!("@{}", p.committed_offset),
                );
            }
        }
        s
    }
}

impl Summarise for OffsetCommitResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for topic in &self.topics {
            for p in &topic.partitions {
                s.partition(&topic.name, p.partition_index, format_args!(""));
                s.error(p.error_code);
            }
        }
        s
    }
}

impl Summarise for JoinGroupRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!(
            "group={} member={}",
            self.group_id.as_str(),
            self.member_id.as_str()
        ));
        s
    }
}

impl Summarise for JoinGroupResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!(
            "gen={} member={} leader={}",
            self.generation_id,
            self.member_id.as_str(),
            self.leader.as_str()
        ));
        s.error(self.error_code);
        s
    }
}

impl Summarise for SyncGroupRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!(
            "group={} gen={} member={}",
            self.group_id.as_str(),
            self.generation_id,
            self.member_id.as_str()
        ));
        s
    }
}

impl Summarise for SyncGroupResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!(
            "{} bytes of assignment",
            self.assignment.len()
        ));
        s.error(self.error_code);
        s
    }
}

impl Summarise for HeartbeatRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!(
            "group={} gen={} member={}",
            self.group_id.as_str(),
            self.generation_id,
            self.member_id.as_str()
        ));
        s
    }
}

impl Summarise for HeartbeatResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.error(self.error_code);
        s
    }
}

impl Summarise for LeaveGroupRequest {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!("group={}", self.group_id.as_str()));
        s
    }
}

impl Summarise for LeaveGroupResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.error(self.error_code);
        s
    }
}

impl Summarise for InitProducerIdResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.field(format_args!(
            "pid={} epoch={}",
            self.producer_id.0, self.producer_epoch
        ));
        s.error(self.error_code);
        s
    }
}

impl Summarise for FindCoordinatorResponse {
    fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.error(self.error_code);
        for coordinator in &self.coordinators {
            s.field(format_args!("node={}", coordinator.node_id.0));
            s.error(coordinator.error_code);
        }
        s
    }
}

impl Summarise for ApiVersionsRequest {}
impl Summarise for ApiVersionsResponse {}
impl Summarise for MetadataRequest {}
impl Summarise for MetadataResponse {}
impl Summarise for CreateTopicsRequest {}
impl Summarise for CreateTopicsResponse {}
impl Summarise for DeleteTopicsRequest {}
impl Summarise for DeleteTopicsResponse {}
impl Summarise for InitProducerIdRequest {}
impl Summarise for FindCoordinatorRequest {}
impl Summarise for OffsetFetchRequest {}
impl Summarise for OffsetFetchResponse {}
impl Summarise for OffsetForLeaderEpochRequest {}
impl Summarise for OffsetForLeaderEpochResponse {}
impl Summarise for EndQuorumEpochRequest {}
impl Summarise for EndQuorumEpochResponse {}
impl Summarise for VoteRequest {}
impl Summarise for VoteResponse {}
impl Summarise for BeginQuorumEpochRequest {}
impl Summarise for BeginQuorumEpochResponse {}
impl Summarise for DescribeQuorumRequest {}
impl Summarise for DescribeQuorumResponse {}
impl Summarise for DescribeConfigsRequest {}
impl Summarise for DescribeConfigsResponse {}
impl Summarise for AlterConfigsRequest {}
impl Summarise for AlterConfigsResponse {}
impl Summarise for IncrementalAlterConfigsRequest {}
impl Summarise for IncrementalAlterConfigsResponse {}
impl Summarise for CreatePartitionsRequest {}
impl Summarise for CreatePartitionsResponse {}
impl Summarise for DeleteGroupsRequest {}
impl Summarise for DeleteGroupsResponse {}
impl Summarise for OffsetDeleteRequest {}
impl Summarise for OffsetDeleteResponse {}
impl Summarise for DeleteRecordsRequest {}
impl Summarise for DeleteRecordsResponse {}
impl Summarise for DescribeTopicPartitionsRequest {}
impl Summarise for DescribeTopicPartitionsResponse {}
impl Summarise for ElectLeadersRequest {}
impl Summarise for ElectLeadersResponse {}
impl Summarise for BrokerRegistrationRequest {}
impl Summarise for BrokerRegistrationResponse {}
impl Summarise for AlterPartitionRequest {}
impl Summarise for AlterPartitionResponse {}
impl Summarise for BrokerHeartbeatRequest {}
impl Summarise for BrokerHeartbeatResponse {}
impl Summarise for DescribeClusterRequest {}
impl Summarise for DescribeClusterResponse {}
impl Summarise for DescribeGroupsRequest {}
impl Summarise for DescribeGroupsResponse {}
impl Summarise for ListGroupsRequest {}
impl Summarise for ListGroupsResponse {}
