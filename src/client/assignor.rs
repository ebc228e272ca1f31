//! Partition assignment for consumer groups, and the consumer protocol bytes.
//!
//! The group leader (a consumer, not the broker) computes who reads what. It
//! must agree bit for bit with Java and kafka-python members of the same group,
//! so the subscription and assignment metadata use Kafka's ConsumerProtocol
//! encoding (a 2-byte version, then the `ConsumerProtocolSubscription` or
//! `ConsumerProtocolAssignment` struct) and the assignors follow Java's
//! `RangeAssignor` and `RoundRobinAssignor`. Both are pure functions of sorted
//! inputs, so every run assigns the same way.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::TopicPartition;

/// The protocol type every Kafka consumer joins a group with.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Highest ConsumerProtocol version the crate decodes; newer versions only
/// append fields, so Kafka decodes them with the newest version it knows.
const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;

/// The subscription version we send: v0 is understood by every client
/// (kafka-python decodes only v0); the v1+ fields serve cooperative rebalancing,
/// which this client does not do.
const SUBSCRIPTION_VERSION: i16 = 0;

/// The assignment version we send, for the same reason.
const ASSIGNMENT_VERSION: i16 = 0;

/// `partition.assignment.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AssignmentStrategy {
    /// Java's `RangeAssignor`, protocol name "range": contiguous ranges per topic.
    Range,
    /// Java's `RoundRobinAssignor`, protocol name "roundrobin".
    RoundRobin,
}

impl AssignmentStrategy {
    /// The protocol name in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "range" => Some(AssignmentStrategy::Range),
            "roundrobin" => Some(AssignmentStrategy::RoundRobin),
            _ => None,
        }
    }

    /// Assigns partitions to members. `subscriptions` maps member id to the
    /// topics it subscribes to; `partition_counts` maps topic to its partition
    /// count (topics missing from it are not assigned). Every member appears
    /// in the result, possibly with nothing.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, Vec<String>>,
        partition_counts: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        match self {
            AssignmentStrategy::Range => assign_range(subscriptions, partition_counts),
            AssignmentStrategy::RoundRobin => assign_round_robin(subscriptions, partition_counts),
        }
    }
}

fn empty_assignment(
    subscriptions: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect()
}

/// Per topic, members subscribed to it in member-id order get contiguous
/// ranges; the first `partitions % members` get one extra.
fn assign_range(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment = empty_assignment(subscriptions);
    for (topic, &count) in partition_counts {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(member, _)| member)
            .collect();
        if members.is_empty() || count <= 0 {
            continue;
        }
        let member_count = i32::try_from(members.len()).unwrap_or(i32::MAX);
        let per_member = count / member_count;
        let with_extra = count % member_count;
        for (i, member) in members.into_iter().enumerate() {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            let start = per_member * i + i.min(with_extra);
            let length = per_member + i32::from(i < with_extra);
            let partitions = assignment.entry(member.clone()).or_default();
            partitions
                .extend((start..start + length).map(|p| TopicPartition::new(topic.clone(), p)));
        }
    }
    assignment
}

/// All partitions sorted by (topic, partition) dealt to members in id order,
/// skipping members not subscribed to the partition's topic.
fn assign_round_robin(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment = empty_assignment(subscriptions);
    let members: Vec<(&String, &Vec<String>)> = subscriptions.iter().collect();
    if members.is_empty() {
        return assignment;
    }
    let mut next = 0usize;
    for (topic, &count) in partition_counts {
        if !members.iter().any(|(_, topics)| topics.contains(topic)) {
            continue;
        }
        for partition in 0..count.max(0) {
            // At most one full turn: some member is subscribed (checked above).
            while !members[next % members.len()].1.contains(topic) {
                next += 1;
            }
            let member = members[next % members.len()].0;
            next += 1;
            if let Some(partitions) = assignment.get_mut(member) {
                partitions.push(TopicPartition::new(topic.clone(), partition));
            }
        }
    }
    assignment
}

/// A decoded member subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub owned_partitions: Vec<TopicPartition>,
}

/// JoinGroup metadata for a consumer subscribing to `topics`.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    encode_versioned(&subscription, SUBSCRIPTION_VERSION)
}

/// Decodes another member's JoinGroup metadata (any ConsumerProtocol version).
pub fn decode_subscription(bytes: &[u8]) -> Result<Subscription, String> {
    let (version, mut body) = split_version(bytes)?;
    let decoded = ConsumerProtocolSubscription::decode(&mut body, version)
        .map_err(|e| format!("subscription: {e}"))?;
    Ok(Subscription {
        topics: decoded.topics.iter().map(|t| t.to_string()).collect(),
        owned_partitions: decoded
            .owned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
            })
            .collect(),
    })
}

/// SyncGroup assignment bytes for one member.
pub fn encode_assignment(partitions: &[TopicPartition]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    encode_versioned(&assignment, ASSIGNMENT_VERSION)
}

/// Decodes SyncGroup assignment bytes, sorted. Empty bytes (a member the
/// leader left out) mean no partitions.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (version, mut body) = split_version(bytes)?;
    let decoded = ConsumerProtocolAssignment::decode(&mut body, version)
        .map_err(|e| format!("assignment: {e}"))?;
    let mut partitions: Vec<TopicPartition> = decoded
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    Ok(partitions)
}

fn encode_versioned<T: Encodable>(message: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Encoding our own well-formed struct at a version the crate supports
    // cannot fail; an error here is a programming error.
    message
        .encode(&mut buf, version)
        .expect("consumer protocol structs encode at versions 0..=3");
    buf.freeze()
}

fn split_version(bytes: &[u8]) -> Result<(i16, Bytes), String> {
    if bytes.len() < 2 {
        return Err(format!(
            "consumer protocol metadata of {} bytes",
            bytes.len()
        ));
    }
    let mut body = Bytes::copy_from_slice(bytes);
    let version = body.get_i16();
    if version < 0 {
        return Err(format!("consumer protocol version {version}"));
    }
    Ok((version.min(CONSUMER_PROTOCOL_VERSION_MAX), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(m, topics)| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn counts(entries: &[(&str, i32)]) -> BTreeMap<String, i32> {
        entries.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn tps(entries: &[(&str, i32)]) -> Vec<TopicPartition> {
        entries
            .iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn range_matches_java_example() {
        // The RangeAssignor javadoc: C0, C1 on t0, t1 with 3 partitions each.
        let a = AssignmentStrategy::Range.assign(
            &subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]),
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(a["C0"], tps(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]));
        assert_eq!(a["C1"], tps(&[("t0", 2), ("t1", 2)]));
    }

    #[test]
    fn round_robin_matches_java_example() {
        // The RoundRobinAssignor javadoc: same inputs as above.
        let a = AssignmentStrategy::RoundRobin.assign(
            &subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]),
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(a["C0"], tps(&[("t0", 0), ("t0", 2), ("t1", 1)]));
        assert_eq!(a["C1"], tps(&[("t0", 1), ("t1", 0), ("t1", 2)]));
    }

    #[test]
    fn round_robin_skips_unsubscribed_members() {
        // Javadoc's second example: C0 on t0; C1 on t0, t1; C2 on t0, t1, t2;
        // t0 has 1 partition, t1 2, t2 3.
        let a = AssignmentStrategy::RoundRobin.assign(
            &subs(&[
                ("C0", &["t0"]),
                ("C1", &["t0", "t1"]),
                ("C2", &["t0", "t1", "t2"]),
            ]),
            &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]),
        );
        assert_eq!(a["C0"], tps(&[("t0", 0)]));
        assert_eq!(a["C1"], tps(&[("t1", 0)]));
        assert_eq!(a["C2"], tps(&[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]));
    }

    #[test]
    fn assignors_cover_every_partition_once_and_are_deterministic() {
        let members = subs(&[
            ("m3", &["a", "b"]),
            ("m1", &["a"]),
            ("m2", &["a", "b", "zzz"]),
        ]);
        let topics = counts(&[("a", 7), ("b", 5)]);
        for strategy in [AssignmentStrategy::Range, AssignmentStrategy::RoundRobin] {
            let first = strategy.assign(&members, &topics);
            assert_eq!(first, strategy.assign(&members, &topics));
            let mut all: Vec<TopicPartition> = first.values().flatten().cloned().collect();
            all.sort();
            let mut expected: Vec<TopicPartition> =
                (0..7).map(|p| TopicPartition::new("a", p)).collect();
            expected.extend((0..5).map(|p| TopicPartition::new("b", p)));
            assert_eq!(all, expected, "{strategy:?}");
            assert!(first["m1"].iter().all(|tp| tp.topic == "a"), "{strategy:?}");
        }
        let range = AssignmentStrategy::Range.assign(&members, &topics);
        assert_eq!(range["m1"], tps(&[("a", 0), ("a", 1), ("a", 2)]));
    }

    #[test]
    fn subscription_round_trip_and_java_wire_bytes() {
        let bytes = encode_subscription(&["orders".to_string(), "t".to_string()]);
        // version 0, array of 2 strings, null user data.
        let mut expected = vec![0, 0, 0, 0, 0, 2, 0, 6];
        expected.extend_from_slice(b"orders");
        expected.extend_from_slice(&[0, 1, b't', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&bytes[..], &expected[..]);
        let decoded = decode_subscription(&bytes).unwrap();
        assert_eq!(decoded.topics, vec!["orders".to_string(), "t".to_string()]);
        assert!(decoded.owned_partitions.is_empty());
    }

    #[test]
    fn newer_subscription_versions_decode() {
        let v1 = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_owned_partitions(vec![
                kafka_protocol::messages::consumer_protocol_subscription::TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![2]),
            ]);
        let decoded = decode_subscription(&encode_versioned(&v1, 1)).unwrap();
        assert_eq!(decoded.owned_partitions, tps(&[("t", 2)]));
        assert!(decode_subscription(&[0]).is_err());
        assert!(decode_subscription(&[0xff, 0xff, 0]).is_err());
    }

    #[test]
    fn assignment_round_trip() {
        let partitions = tps(&[("b", 1), ("a", 0), ("a", 3)]);
        let bytes = encode_assignment(&partitions);
        assert_eq!(&bytes[0..2], &[0, 0]);
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            tps(&[("a", 0), ("a", 3), ("b", 1)])
        );
        assert_eq!(decode_assignment(&[]).unwrap(), Vec::new());
        assert!(decode_assignment(&bytes[..bytes.len() - 2]).is_err());
    }
}
