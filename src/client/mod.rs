//! The Kafka clients: a producer, a consumer and an admin helper.
//!
//! They speak the Kafka wire protocol (encoded by the `kafka-protocol` crate)
//! to sluice or to any Kafka broker, and dial only through the
//! [`Connector`](crate::net::Connector) seam so the simulation can run them over
//! turmoil's TCP. Layering, bottom up:
//!
//! - [`connection`]: one broker connection (framing, correlation ids, version
//!   negotiation, timeouts, reconnect).
//! - [`metadata`]: the cluster view (brokers, topic -> partition -> leader) and
//!   the admin helper for topics and groups.
//! - [`partitioner`], [`producer`]: batching, acks, retries, idempotence.
//! - [`assignor`], [`group`], [`consumer`]: consumer groups, fetching, offsets.
//!
//! Invariants: no client code reads the OS clock or an unseeded random source,
//! every network wait is bounded by a timeout, and every queue has a named limit.

pub mod assignor;
pub mod connection;
pub mod consumer;
pub mod group;
pub mod metadata;
pub mod partitioner;
pub mod producer;
mod records;

use std::fmt;

use kafka_protocol::error::ResponseError;

pub use assignor::AssignmentStrategy;
pub use connection::{Connection, ConnectionConfig};
pub use consumer::{
    AutoOffsetReset, CommitOutcome, Consumer, ConsumerConfig, ConsumerRecord, GroupEvent,
    GroupObserver, RebalanceListener,
};
pub use metadata::{
    Admin, Cluster, ConfigEntry, ConfigResource, GroupDescription, GroupListing, GroupMember,
    PartitionInfo, TopicInfo,
};
pub use partitioner::{DefaultPartitioner, KeylessStrategy, Partitioner};
pub use producer::{
    Acks, DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};

/// A topic and a partition index: the unit of ordering, leadership and offsets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A record header: Kafka allows repeated keys, so headers are an ordered list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<bytes::Bytes>,
}

/// Errors from the client layers below the producer's delivery semantics.
///
/// It is `Clone` because one failed request fails many records (every record
/// of a batch gets the same error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The connection failed: refused, reset, closed, or a frame could not be
    /// read. The connection is dropped and re-established on next use.
    #[error("network error talking to {addr}: {message}")]
    Network { addr: String, message: String },
    /// No response within the request timeout. The connection is dropped,
    /// because the broker may still answer later and break the ordering.
    #[error("request to {addr} timed out after {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    /// The broker sent bytes we could not decode, or an answer that breaks the
    /// protocol (wrong correlation id, oversized frame).
    #[error("protocol error from {addr}: {message}")]
    Protocol { addr: String, message: String },
    /// A fetched record batch failed validation (CRC, framing): the broker
    /// served corrupt data. Like Java's `CorruptRecordException` with
    /// `check.crcs`, this is not retried; the position stays put.
    #[error("corrupt records in {topic}-{partition}: {message}")]
    CorruptRecords {
        topic: String,
        partition: i32,
        message: String,
    },
    /// A fetched batch is valid but this client cannot read it (an unknown
    /// compression codec or record format). Not retried; the position stays
    /// put. Never reported as corruption: the data may be fine.
    #[error("cannot read {topic}-{partition}: {message}")]
    UnreadableRecords {
        topic: String,
        partition: i32,
        message: String,
    },
    /// The broker supports no version of an API in the range this client speaks.
    #[error("broker {addr} supports no version of api key {api_key} in {min}..={max}")]
    UnsupportedVersion {
        addr: String,
        api_key: i16,
        min: i16,
        max: i16,
    },
    /// The broker answered with a Kafka error code.
    #[error("broker error {0:?} (code {code})", code = .0.code())]
    Broker(ResponseError),
    /// The request could not be built, e.g. a record too large.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The cluster view has no answer: no broker reachable, topic unknown,
    /// leader unknown, after the allowed retries.
    #[error("metadata unavailable: {0}")]
    Metadata(String),
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// Errors after which the request may succeed if retried.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Network { .. }
            | ClientError::Timeout { .. }
            | ClientError::Metadata(_) => true,
            ClientError::Broker(e) => e.is_retriable() || is_coordinator_error(e.code()),
            ClientError::Protocol { .. }
            | ClientError::CorruptRecords { .. }
            | ClientError::UnreadableRecords { .. }
            | ClientError::UnsupportedVersion { .. }
            | ClientError::Invalid(_)
            | ClientError::Config(_)
            | ClientError::Closed => false,
        }
    }

    /// Turns a Kafka error code into `Ok(())` or `Err(Broker)`.
    pub fn check(code: i16) -> Result<(), ClientError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(e) => Err(ClientError::Broker(e)),
        }
    }

    /// The Kafka error code, if this is a broker error.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Broker(e) => Some(e.code()),
            _ => None,
        }
    }
}

/// Kafka error codes used by name in the clients. The `ResponseError` enum has
/// them too; plain constants read better in `match` arms.
pub(crate) mod codes {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// Whether the error means "find the group coordinator again".
pub(crate) fn is_coordinator_error(code: i16) -> bool {
    matches!(
        code,
        codes::COORDINATOR_NOT_AVAILABLE
            | codes::NOT_COORDINATOR
            | codes::COORDINATOR_LOAD_IN_PROGRESS
    )
}

/// Whether the error means "the partition's leader moved; refresh metadata".
pub(crate) fn is_stale_metadata_error(code: i16) -> bool {
    matches!(
        code,
        codes::NOT_LEADER_OR_FOLLOWER
            | codes::UNKNOWN_TOPIC_OR_PARTITION
            | codes::LEADER_NOT_AVAILABLE
            | codes::FENCED_LEADER_EPOCH
            | codes::UNKNOWN_LEADER_EPOCH
    )
}

/// Parses one Kafka-style config value for `key`.
pub(crate) fn parse_config<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ClientError> {
    value
        .trim()
        .parse()
        .map_err(|_| ClientError::Config(format!("{key}: cannot parse {value:?}")))
}
