//! The consumer: fetching, positions, offset commits and consumer groups.
//!
//! Like the Java client it is driven by `poll`: each call (re)joins the group
//! if needed, commits automatically when `auto.commit.interval.ms` has passed,
//! resolves missing positions (committed offset, else `auto.offset.reset`),
//! and long-polls Fetch until records arrive or the timeout passes. A
//! background task only heartbeats, and leaves the group when `poll` has not
//! been called within `max.poll.interval.ms`; the group decisions themselves
//! live in the [`Membership`] state machine.
//!
//! Positions are "the next offset to return"; a committed offset is the same
//! thing (last processed + 1). Fetched batches are buffered per partition and
//! positions advance only as records are handed to the caller.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
// tokio's clock, not the OS's: virtual under the simulation.
use tokio::time::Instant;

use super::assignor::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
    AssignmentStrategy, CONSUMER_PROTOCOL_TYPE,
};
use super::connection::{Connection, ConnectionConfig};
use super::group::{
    recovery_for, recovery_for_error, GroupTimers, HeartbeatAction, MemberState, Membership,
    Recovery,
};
use super::metadata::{fetch_committed_offsets, Cluster, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::records::{decode_fetched, FetchDecodeError};
use super::{codes, is_stale_metadata_error, ClientError, Header, TopicPartition};

/// The first Fetch version that carries `current_leader_epoch` (KIP-320).
const FETCH_CURRENT_LEADER_EPOCH_VERSION: i16 = 9;
use crate::clock::SharedClock;
use crate::net::Connector;

/// JoinGroup attempts within one rebalance before it gives up for this
/// `poll` (which reports the last error only if it is not retriable; the
/// next poll tries again). Each attempt is bounded by its own timeout, and
/// a retriable error backs off first; real rebalances take a handful.
const JOIN_ATTEMPTS_MAX: usize = 50;

/// Java's margin over `max.poll.interval.ms` (the rebalance timeout) for the
/// JoinGroup request timeout: the coordinator may hold it that long.
const JOIN_TIMEOUT_MARGIN: Duration = Duration::from_millis(5_000);

/// Topics in one subscription. Far above any real consumer; it bounds the
/// JoinGroup metadata and the leader's metadata request.
const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// How soon the group leader looks again for a subscribed topic that does
/// not exist yet. Java asks for metadata on every poll in that case; once a
/// second bounds the load on the brokers while still noticing a new topic soon.
const MISSING_TOPIC_RECHECK: Duration = Duration::from_millis(1_000);

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    /// Start at the log start offset.
    Earliest,
    /// Start at the log end offset (Kafka's default).
    Latest,
    /// Fail `poll` with an error.
    None,
}

impl AutoOffsetReset {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "earliest" => Some(AutoOffsetReset::Earliest),
            "latest" => Some(AutoOffsetReset::Latest),
            "none" => Some(AutoOffsetReset::None),
            _ => None,
        }
    }
}

/// Consumer settings, named after Kafka's keys, with Kafka's defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `client.id`.
    pub client_id: String,
    /// `group.id`: needed for `subscribe` and for offset commits.
    pub group_id: Option<String>,
    /// `group.instance.id`: makes this a static member (KIP-345). A restart
    /// that rejoins within `session.timeout.ms` takes its partitions back
    /// without a rebalance, and closing does not leave the group.
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms` (default 45000).
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms` (default 3000).
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms` (default 300000); also the rebalance timeout.
    pub max_poll_interval_ms: u64,
    /// `max.poll.records` (default 500).
    pub max_poll_records: usize,
    /// `enable.auto.commit` (default true).
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms` (default 5000).
    pub auto_commit_interval_ms: u64,
    /// `auto.offset.reset` (default latest).
    pub auto_offset_reset: AutoOffsetReset,
    /// `fetch.max.wait.ms` (default 500): how long the broker may hold a Fetch.
    pub fetch_max_wait_ms: u64,
    /// `fetch.min.bytes` (default 1).
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes` (default 52428800).
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes` (default 1048576).
    pub max_partition_fetch_bytes: i32,
    /// `partition.assignment.strategy` in preference order (default range).
    pub partition_assignment_strategy: Vec<AssignmentStrategy>,
    /// `request.timeout.ms` (default 30000).
    pub request_timeout_ms: u64,
    /// `retry.backoff.ms` (default 100).
    pub retry_backoff_ms: u64,
    /// `default.api.timeout.ms` (default 60000): bound for `committed`,
    /// `commit_sync`, `offsets_for_times`, seeks and positions.
    pub default_api_timeout_ms: u64,
    /// `metadata.max.age.ms` (default 300000): how often the group leader
    /// rechecks subscribed topics for partition changes.
    pub metadata_max_age_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "localhost:9092".to_string(),
            client_id: "sluice-consumer".to_string(),
            group_id: None,
            group_instance_id: None,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            max_poll_records: 500,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            auto_offset_reset: AutoOffsetReset::Latest,
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            partition_assignment_strategy: vec![AssignmentStrategy::Range],
            request_timeout_ms: super::connection::REQUEST_TIMEOUT_MS_DEFAULT,
            retry_backoff_ms: 100,
            default_api_timeout_ms: 60_000,
            metadata_max_age_ms: 300_000,
        }
    }
}

impl ConsumerConfig {
    /// Sets one setting by its Kafka key (as `--consumer-property key=value`).
    /// Returns `Ok(false)` for a key this client does not know.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ClientError> {
        use super::parse_config as parse;
        let value = value.trim();
        match key {
            "bootstrap.servers" => self.bootstrap_servers = value.to_string(),
            "client.id" => self.client_id = value.to_string(),
            "group.id" => self.group_id = (!value.is_empty()).then(|| value.to_string()),
            "group.instance.id" => {
                self.group_instance_id = (!value.is_empty()).then(|| value.to_string())
            }
            "session.timeout.ms" => self.session_timeout_ms = parse(key, value)?,
            "heartbeat.interval.ms" => self.heartbeat_interval_ms = parse(key, value)?,
            "max.poll.interval.ms" => self.max_poll_interval_ms = parse(key, value)?,
            "max.poll.records" => self.max_poll_records = parse(key, value)?,
            "enable.auto.commit" => self.enable_auto_commit = parse(key, value)?,
            "auto.commit.interval.ms" => self.auto_commit_interval_ms = parse(key, value)?,
            "auto.offset.reset" => {
                self.auto_offset_reset = AutoOffsetReset::parse(value)
                    .ok_or_else(|| ClientError::Config(format!("auto.offset.reset: {value:?}")))?
            }
            "fetch.max.wait.ms" => self.fetch_max_wait_ms = parse(key, value)?,
            "fetch.min.bytes" => self.fetch_min_bytes = parse(key, value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = parse(key, value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = parse(key, value)?,
            "partition.assignment.strategy" => {
                // Java class names or the protocol names, comma-separated.
                let mut strategies = Vec::new();
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let short = name.rsplit('.').next().unwrap_or(name);
                    let strategy = match short {
                        "RangeAssignor" => Some(AssignmentStrategy::Range),
                        "RoundRobinAssignor" => Some(AssignmentStrategy::RoundRobin),
                        other => AssignmentStrategy::from_name(other),
                    };
                    strategies.push(strategy.ok_or_else(|| {
                        ClientError::Config(format!(
                            "partition.assignment.strategy: unsupported {name:?}"
                        ))
                    })?);
                }
                self.partition_assignment_strategy = strategies;
            }
            "request.timeout.ms" => self.request_timeout_ms = parse(key, value)?,
            "retry.backoff.ms" => self.retry_backoff_ms = parse(key, value)?,
            "default.api.timeout.ms" => self.default_api_timeout_ms = parse(key, value)?,
            "metadata.max.age.ms" => self.metadata_max_age_ms = parse(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn validate(&self) -> Result<(), ClientError> {
        let fail = |m: &str| Err(ClientError::Config(m.to_string()));
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms
        {
            return fail("heartbeat.interval.ms must be positive and below session.timeout.ms");
        }
        if self.max_poll_records == 0 {
            return fail("max.poll.records must be at least 1");
        }
        if self.partition_assignment_strategy.is_empty() {
            return fail("partition.assignment.strategy must name at least one assignor");
        }
        if self.fetch_max_bytes <= 0
            || self.max_partition_fetch_bytes <= 0
            || self.fetch_min_bytes < 0
        {
            return fail("fetch sizes must be positive");
        }
        let times = [
            self.session_timeout_ms,
            self.heartbeat_interval_ms,
            self.max_poll_interval_ms,
            self.auto_commit_interval_ms,
            self.fetch_max_wait_ms,
            self.request_timeout_ms,
            self.retry_backoff_ms,
            self.default_api_timeout_ms,
            self.metadata_max_age_ms,
        ];
        if times.iter().any(|&ms| i32::try_from(ms).is_err()) {
            // Kafka's own settings are 32-bit; larger values would also
            // overflow deadline arithmetic.
            return fail("time settings must fit in 32 bits, as in Kafka");
        }
        if self.group_id.as_deref() == Some("") {
            return fail("group.id must not be empty");
        }
        if self.group_instance_id.is_some() && self.group_id.is_none() {
            return fail("group.instance.id needs group.id");
        }
        Ok(())
    }
}

/// A record returned by `poll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp: i64,
}

/// Group events kept for [`Consumer::drain_group_events`]. A caller that never
/// drains must not grow memory, so the oldest are dropped beyond this; a
/// caller that drains after every poll never sees more than a few.
const GROUP_EVENTS_MAX: usize = 4_096;

/// What happened to this member's group membership, with the generation it
/// happened in: for histories and checkers (the simulation records them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// A completed rebalance gave these partitions.
    Assigned {
        group_id: String,
        generation_id: i32,
        member_id: String,
        partitions: Vec<TopicPartition>,
    },
    /// These partitions were given up before a rejoin, unsubscribe or close.
    /// Generation -1 means the membership was already lost.
    Revoked {
        group_id: String,
        generation_id: i32,
        member_id: String,
        partitions: Vec<TopicPartition>,
    },
    /// An OffsetCommit request is being sent (explicit, automatic, before a
    /// revocation or on close; each retry is a new attempt). Offsets are the
    /// next offsets to read; generation -1 for a consumer using `assign`.
    /// Its outcome follows as [`GroupEvent::CommitDone`] with the same
    /// `attempt`, unless the consumer dies first.
    CommitSent {
        attempt: u64,
        group_id: String,
        generation_id: i32,
        member_id: String,
        offsets: BTreeMap<TopicPartition, i64>,
    },
    /// What became of a commit attempt.
    CommitDone {
        attempt: u64,
        outcome: CommitOutcome,
    },
}

/// What the consumer knows of a commit attempt's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The coordinator applied it.
    Applied,
    /// The coordinator refused it: it was not applied.
    Rejected(String),
    /// It may or may not have been applied: no answer (a timeout, a lost
    /// connection) or an error the coordinator gives when its write failed
    /// part way.
    Unknown(String),
}

impl CommitOutcome {
    fn of(result: &Result<(), ClientError>) -> Self {
        match result {
            Ok(()) => CommitOutcome::Applied,
            Err(error @ ClientError::Broker(e))
                if !matches!(
                    e.code(),
                    codes::REQUEST_TIMED_OUT
                        | codes::COORDINATOR_NOT_AVAILABLE
                        | codes::NOT_COORDINATOR
                        | codes::COORDINATOR_LOAD_IN_PROGRESS
                        | codes::UNKNOWN_SERVER_ERROR
                ) =>
            {
                CommitOutcome::Rejected(error.to_string())
            }
            Err(error) => CommitOutcome::Unknown(error.to_string()),
        }
    }
}

/// A callback told of every [`GroupEvent`] when it happens.
pub type GroupObserver = Box<dyn Fn(&GroupEvent) + Send>;

/// Callbacks around a rebalance, as Java's `ConsumerRebalanceListener`.
pub trait RebalanceListener: Send {
    /// Before rejoining: these partitions are no longer ours. With auto
    /// commit on, their positions were committed just before.
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]);
    /// After SyncGroup: the new assignment.
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]);
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Next offset to return; `None` until resolved.
    position: Option<i64>,
    /// The position must come from `auto.offset.reset` (after
    /// OFFSET_OUT_OF_RANGE), not from the committed offset.
    reset_needed: bool,
    /// From the last fetch response, for `lag`.
    high_watermark: Option<i64>,
    /// Fetched records not yet returned, in offset order. Bounded by one
    /// fetch response (`max.partition.fetch.bytes`, `fetch.max.bytes`): a
    /// partition is not fetched again until its buffer is drained.
    buffer: VecDeque<ConsumerRecord>,
    /// Position once `buffer` is drained: past the last fetched batch, which
    /// may end in control records or compacted-away offsets.
    buffer_end: Option<i64>,
}

/// Group state shared between the consumer and its heartbeat task.
struct GroupShared {
    group_id: String,
    /// `group.instance.id` of a static member.
    instance_id: Option<String>,
    /// Numbers commit attempts for [`GroupEvent::CommitSent`].
    next_commit_attempt: std::sync::atomic::AtomicU64,
    cluster: Arc<Cluster>,
    timers: GroupTimers,
    retry_backoff: Duration,
    membership: Mutex<Membership>,
    coordinator: Mutex<Option<Arc<Connection>>>,
    /// Wakes the heartbeat task when membership changes.
    wake: Notify,
    /// Bounded by `GROUP_EVENTS_MAX`, oldest dropped.
    /// Told of each event as it happens (the simulation records them into
    /// its history at the true time; draining only shows them after poll).
    observer: Mutex<Option<GroupObserver>>,
    events: Mutex<VecDeque<GroupEvent>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning means a panic elsewhere; the state is still well formed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GroupShared {
    fn membership(&self) -> MutexGuard<'_, Membership> {
        lock(&self.membership)
    }

    fn group_id(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.group_id.clone()))
    }

    fn instance_id(&self) -> Option<StrBytes> {
        self.instance_id.clone().map(StrBytes::from_string)
    }

    /// Fails unless `version` of an API can carry `group.instance.id`.
    fn check_static_support(&self, api: &str, version: i16, min: i16) -> Result<(), ClientError> {
        if self.instance_id.is_some() && version < min {
            return Err(ClientError::Config(format!(
                "group.instance.id needs {api} v{min}+, the broker speaks v{version}"
            )));
        }
        Ok(())
    }

    /// The coordinator connection, looked up again if it was lost, retrying
    /// until `deadline`.
    async fn coordinator(&self, deadline: Instant) -> Result<Arc<Connection>, ClientError> {
        loop {
            if !self.membership().coordinator_unknown {
                if let Some(connection) = lock(&self.coordinator).clone() {
                    return Ok(connection);
                }
            }
            match self.cluster.find_coordinator(&self.group_id).await {
                Ok((_, connection)) => {
                    *lock(&self.coordinator) = Some(connection.clone());
                    self.membership().coordinator_unknown = false;
                    return Ok(connection);
                }
                Err(e) if e.is_retriable() && Instant::now() + self.retry_backoff < deadline => {
                    tracing::debug!(group = %self.group_id, error = %e, "coordinator lookup failed; retrying");
                    tokio::time::sleep(self.retry_backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn record(&self, event: GroupEvent) {
        if let Some(observer) = lock(&self.observer).as_ref() {
            observer(&event);
        }
        let mut events = lock(&self.events);
        if events.len() >= GROUP_EVENTS_MAX {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Records the revocation of `partitions` in the current generation.
    fn record_revoked(&self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        let (generation_id, member_id) = {
            let m = self.membership();
            (m.generation_id, m.member_id.clone())
        };
        self.record(GroupEvent::Revoked {
            group_id: self.group_id.clone(),
            generation_id,
            member_id,
            partitions: partitions.to_vec(),
        });
    }

    fn coordinator_lost(&self) {
        self.membership().coordinator_unknown = true;
    }

    async fn leave(&self, connection: &Connection, member_id: &str) -> Result<(), ClientError> {
        let version = connection.version::<LeaveGroupRequest>().await?;
        let mut req = LeaveGroupRequest::default().with_group_id(self.group_id());
        if version >= 3 {
            req.members = vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(member_id.to_string()))
                .with_group_instance_id(self.instance_id())];
        } else {
            req.member_id = StrBytes::from_string(member_id.to_string());
        }
        let response = connection.send(req, version).await?;
        ClientError::check(response.error_code)
    }
}

/// The heartbeat task: a thin shell that asks [`Membership`] what to do.
async fn heartbeat_loop(shared: Arc<GroupShared>) {
    loop {
        let action = shared
            .membership()
            .heartbeat_action(Instant::now(), &shared.timers);
        match action {
            HeartbeatAction::WaitUntil(at) => {
                tokio::select! {
                    biased;
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            HeartbeatAction::Send {
                generation_id,
                member_id,
            } => {
                let now = Instant::now();
                shared.membership().on_heartbeat_sent(now);
                let connection = lock(&shared.coordinator).clone();
                let result = match connection {
                    None => Err(ClientError::Metadata("coordinator unknown".to_string())),
                    Some(connection) => {
                        let mut req = HeartbeatRequest::default()
                            .with_group_id(shared.group_id())
                            .with_generation_id(generation_id)
                            .with_member_id(StrBytes::from_string(member_id));
                        match connection.version::<HeartbeatRequest>().await {
                            Ok(version) => {
                                if version >= 3 {
                                    req.group_instance_id = shared.instance_id();
                                }
                                match connection.send(req, version).await {
                                    Ok(response) => ClientError::check(response.error_code),
                                    Err(e) => Err(e),
                                }
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                if let Err(e) = &result {
                    tracing::debug!(group = %shared.group_id, error = %e, "heartbeat failed");
                }
                shared.membership().on_heartbeat_result(
                    generation_id,
                    result,
                    Instant::now(),
                    &shared.timers,
                );
            }
            HeartbeatAction::Leave { member_id } => {
                tracing::warn!(
                    group = %shared.group_id,
                    "poll not called within max.poll.interval.ms; leaving the group"
                );
                // A static member does not send LeaveGroup (as Java's): its
                // session times out on the coordinator instead.
                let connection = lock(&shared.coordinator)
                    .clone()
                    .filter(|_| shared.instance_id.is_none());
                if let Some(connection) = connection {
                    if let Err(e) = shared.leave(&connection, &member_id).await {
                        tracing::debug!(error = %e, "LeaveGroup failed");
                    }
                }
                shared.membership().on_left_for_poll_timeout();
            }
        }
    }
}

/// A Kafka consumer. Create it inside a tokio runtime.
pub struct Consumer {
    config: ConsumerConfig,
    cluster: Arc<Cluster>,
    /// Record timestamps come from the broker; the clock is kept so the
    /// consumer takes the same seams as the producer.
    _clock: SharedClock,
    group: Option<Arc<GroupShared>>,
    heartbeat: Option<JoinHandle<()>>,
    /// Topics of `subscribe`; `None` with manual `assign`.
    subscription: Option<Vec<String>>,
    /// In a mutex only so that `Consumer` is `Sync` (its `&self` futures can
    /// then be sent across tasks) without asking listeners to be `Sync`.
    listener: Option<Mutex<Box<dyn RebalanceListener>>>,
    /// Current partitions, sorted.
    assignment: Vec<TopicPartition>,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// Where the next poll starts handing out buffered records: just after
    /// the partition the previous poll took from last, so a partition with
    /// a deep buffer cannot starve the others (the Java consumer rotates its
    /// completed fetches the same way).
    drain_from: usize,
    /// When a poll that has buffered records to return may first fetch,
    /// without waiting, for the partitions whose buffers are empty. Without
    /// it a partition whose fetch failed would starve until every other
    /// buffer drained, which for a slow processor can take a long time (the
    /// Java consumer fetches for empty partitions while it returns others'
    /// records).
    next_refill_fetch: Instant,
    last_auto_commit: Instant,
    /// Set while this member leads the group: what the assignment was based on.
    leader_view: Option<LeaderView>,
    closed: bool,
}

/// What the group leader assigned from, to notice topic changes.
#[derive(Debug)]
struct LeaderView {
    /// Every topic any member subscribes to.
    topics: Vec<String>,
    /// Partition counts of the ones that existed.
    partition_counts: BTreeMap<String, i32>,
    next_check: Instant,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

impl Consumer {
    pub fn new(
        config: ConsumerConfig,
        connector: Arc<dyn Connector>,
        clock: SharedClock,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let cluster = Cluster::new(
            &config.bootstrap_servers,
            connector,
            ConnectionConfig {
                client_id: config.client_id.clone(),
                request_timeout_ms: config.request_timeout_ms,
                ..ConnectionConfig::default()
            },
        );
        let now = Instant::now();
        let (group, heartbeat) = match &config.group_id {
            None => (None, None),
            Some(group_id) => {
                let shared = Arc::new(GroupShared {
                    group_id: group_id.clone(),
                    instance_id: config.group_instance_id.clone(),
                    next_commit_attempt: std::sync::atomic::AtomicU64::new(1),
                    cluster: cluster.clone(),
                    timers: GroupTimers {
                        heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
                        session_timeout: Duration::from_millis(config.session_timeout_ms),
                        max_poll_interval: Duration::from_millis(config.max_poll_interval_ms),
                    },
                    retry_backoff: Duration::from_millis(config.retry_backoff_ms),
                    membership: Mutex::new(Membership::new(now)),
                    coordinator: Mutex::new(None),
                    wake: Notify::new(),
                    events: Mutex::new(VecDeque::new()),
                    observer: Mutex::new(None),
                });
                let task = tokio::spawn(heartbeat_loop(shared.clone()));
                (Some(shared), Some(task))
            }
        };
        Ok(Self {
            config,
            cluster,
            _clock: clock,
            group,
            heartbeat,
            subscription: None,
            listener: None,
            assignment: Vec::new(),
            partitions: BTreeMap::new(),
            drain_from: 0,
            next_refill_fetch: Instant::now(),
            last_auto_commit: now,
            leader_view: None,
            closed: false,
        })
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    fn api_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.config.default_api_timeout_ms)
    }

    fn backoff(&self) -> Duration {
        Duration::from_millis(self.config.retry_backoff_ms)
    }

    /// Reads exactly `partitions`, without group management. Positions of
    /// partitions kept from the previous assignment are kept.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<(), ClientError> {
        if self.subscription.is_some() {
            return Err(ClientError::Invalid("assign after subscribe".to_string()));
        }
        let mut partitions = partitions;
        partitions.sort();
        partitions.dedup();
        self.set_assignment(partitions);
        Ok(())
    }

    /// Joins the group `group.id` reading `topics`; partitions come from the
    /// group's assignor. The join happens in the next `poll`.
    pub fn subscribe(
        &mut self,
        topics: Vec<String>,
        listener: Option<Box<dyn RebalanceListener>>,
    ) -> Result<(), ClientError> {
        let Some(group) = &self.group else {
            return Err(ClientError::Config("subscribe needs group.id".to_string()));
        };
        if topics.is_empty() || topics.len() > SUBSCRIBED_TOPICS_MAX {
            return Err(ClientError::Invalid(format!(
                "subscribe to 1..={SUBSCRIBED_TOPICS_MAX} topics"
            )));
        }
        if self.subscription.is_none() && !self.assignment.is_empty() {
            return Err(ClientError::Invalid("subscribe after assign".to_string()));
        }
        let mut topics = topics;
        topics.sort();
        topics.dedup();
        self.subscription = Some(topics);
        self.listener = listener.map(Mutex::new);
        group.membership().rejoin_needed = true;
        Ok(())
    }

    /// Current partitions, sorted.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// Assignments, revocations and offset commits since the last call, in
    /// the order they happened (the oldest are dropped beyond 4096).
    pub fn drain_group_events(&mut self) -> Vec<GroupEvent> {
        match &self.group {
            Some(group) => lock(&group.events).drain(..).collect(),
            None => Vec::new(),
        }
    }

    /// Calls `observer` with each group event as it happens, in addition to
    /// queueing it for [`Consumer::drain_group_events`].
    pub fn set_group_observer(&self, observer: GroupObserver) {
        if let Some(group) = &self.group {
            *lock(&group.observer) = Some(observer);
        }
    }

    /// `(member_id, generation_id)` while in a group generation.
    pub fn group_generation(&self) -> Option<(String, i32)> {
        let group = self.group.as_ref()?;
        let membership = group.membership();
        (membership.generation_id >= 0)
            .then(|| (membership.member_id.clone(), membership.generation_id))
    }

    fn set_assignment(&mut self, partitions: Vec<TopicPartition>) {
        let mut kept = BTreeMap::new();
        for tp in &partitions {
            let state = self.partitions.remove(tp).unwrap_or_default();
            kept.insert(tp.clone(), state);
        }
        self.partitions = kept;
        self.assignment = partitions;
    }

    /// Returns fetched records, waiting up to `timeout` for some. A rebalance
    /// that starts (JoinGroup) runs to completion even past `timeout`, since
    /// abandoning it would stall the whole group.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.closed {
            return Err(ClientError::Closed);
        }
        let deadline = Instant::now() + timeout;
        if let Some(group) = &self.group {
            group.membership().on_poll(Instant::now());
        }
        loop {
            if self.subscription.is_some() {
                match self.ensure_group(deadline).await {
                    // A coordinator that is moving or loading: keep trying
                    // until the poll's time is up, as the Java consumer does.
                    Err(e) if e.is_retriable() => {
                        tracing::debug!(error = %e, "group not joined yet");
                    }
                    other => other?,
                }
                self.maybe_check_leader_metadata().await;
            }
            self.maybe_auto_commit().await;
            let positions_known = match self.resolve_positions(deadline).await {
                Ok(()) => true,
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "positions not resolved yet");
                    false
                }
                Err(e) => return Err(e),
            };
            if positions_known && self.refill_due() {
                // Not a long poll: buffered records are ready to hand out.
                self.fetch_round(Duration::ZERO).await?;
            }
            let records = self.drain_buffers();
            if !records.is_empty() {
                if crate::planted!(CommitBeforeProcess) && self.group.is_some() {
                    // Planted: the records are "consumed" once returned.
                    if let Err(e) = self.commit_sync(None).await {
                        tracing::debug!(error = %e, "offset commit in poll failed");
                    }
                }
                return Ok(records);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let max_wait = Duration::from_millis(self.config.fetch_max_wait_ms).min(deadline - now);
            let fetched = if positions_known {
                self.fetch_round(max_wait).await?
            } else {
                false
            };
            if !fetched {
                // Nothing to fetch from (no assignment, leaders unknown):
                // pause rather than spin, but no longer than the poll allows.
                let pause = self
                    .backoff()
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Joins or rejoins if the group asks for it.
    async fn ensure_group(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        let (needs_join, coordinator_unknown) = {
            let m = group.membership();
            (m.needs_join(), m.coordinator_unknown)
        };
        if coordinator_unknown && !needs_join {
            if let Err(e) = group.coordinator(deadline).await {
                if !e.is_retriable() {
                    return Err(e);
                }
            }
            return Ok(());
        }
        if needs_join {
            self.rebalance(&group, deadline).await?;
        }
        Ok(())
    }

    /// Revokes the current assignment, then JoinGroup and SyncGroup until a
    /// new assignment arrives (or `deadline` passes between attempts).
    async fn rebalance(
        &mut self,
        group: &Arc<GroupShared>,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        // Only filled by the planted bug KeepRevokedPartitions.
        let mut revoked_states = BTreeMap::new();
        if !self.assignment.is_empty() {
            if self.config.enable_auto_commit {
                if let Err(e) = self.commit_sync(None).await {
                    tracing::warn!(error = %e, "offset commit before rebalance failed");
                }
            }
            let revoked = std::mem::take(&mut self.assignment);
            group.record_revoked(&revoked);
            if let Some(listener) = &self.listener {
                lock(listener).on_partitions_revoked(&revoked);
            }
            if crate::planted!(KeepRevokedPartitions) {
                revoked_states = std::mem::take(&mut self.partitions);
            }
            self.partitions.clear();
        }
        group.membership().on_rebalance_started();
        let subscription = self.subscription.clone().unwrap_or_default();
        let metadata = encode_subscription(&subscription);
        let join_timeout =
            Duration::from_millis(self.config.max_poll_interval_ms) + JOIN_TIMEOUT_MARGIN;
        let mut last_error = None;
        for attempt in 0..JOIN_ATTEMPTS_MAX {
            if attempt > 0 && Instant::now() >= deadline {
                // Try again in the next poll; the member id is kept.
                group.membership().rejoin_needed = true;
                return Ok(());
            }
            let connection = match group
                .coordinator(deadline.max(Instant::now() + self.backoff()))
                .await
            {
                Ok(c) => c,
                Err(e) if e.is_retriable() => {
                    last_error = Some(e);
                    tokio::time::sleep(self.backoff()).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let member_id = group.membership().member_id.clone();
            let join = JoinGroupRequest::default()
                .with_group_id(group.group_id())
                .with_session_timeout_ms(
                    i32::try_from(self.config.session_timeout_ms).unwrap_or(i32::MAX),
                )
                .with_rebalance_timeout_ms(
                    i32::try_from(self.config.max_poll_interval_ms).unwrap_or(i32::MAX),
                )
                .with_member_id(StrBytes::from_string(member_id))
                .with_protocol_type(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE))
                .with_protocols(
                    self.config
                        .partition_assignment_strategy
                        .iter()
                        .map(|s| {
                            JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str(s.name()))
                                .with_metadata(metadata.clone())
                        })
                        .collect(),
                );
            let joined = match connection.version::<JoinGroupRequest>().await {
                Ok(version) => {
                    group.check_static_support("JoinGroup", version, 5)?;
                    let join = if version >= 5 {
                        join.with_group_instance_id(group.instance_id())
                    } else {
                        join
                    };
                    connection
                        .send_with_timeout(join, version, join_timeout)
                        .await
                }
                Err(e) => Err(e),
            };
            let response = match joined {
                Ok(r) => r,
                Err(e) => {
                    if self.recover_async(group, &e).await? {
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            };
            if response.error_code == codes::MEMBER_ID_REQUIRED {
                // KIP-394: the coordinator hands out the id; join again with it.
                group
                    .membership()
                    .on_member_id(response.member_id.to_string());
                continue;
            }
            if response.error_code != 0 {
                let e = ClientError::check(response.error_code)
                    .err()
                    .unwrap_or(ClientError::Closed);
                if self.recover_async(group, &e).await? {
                    last_error = Some(e);
                    continue;
                }
                return Err(e);
            }
            group
                .membership()
                .on_member_id(response.member_id.to_string());
            let generation_id = response.generation_id;
            let protocol_name = response.protocol_name.as_ref().map(|p| p.to_string());
            let mut leader_view = None;
            let assignments = if response.leader == response.member_id {
                match self.assign_as_leader(&response).await {
                    Ok((assignments, view)) => {
                        leader_view = Some(view);
                        assignments
                    }
                    // Metadata for the assignment was unavailable: join
                    // again; the coordinator waits for the rejoin.
                    Err(e) if e.is_retriable() => {
                        last_error = Some(e);
                        tokio::time::sleep(self.backoff()).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                Vec::new()
            };
            let synced = match connection.version::<SyncGroupRequest>().await {
                Ok(version) => {
                    let mut sync = SyncGroupRequest::default()
                        .with_group_id(group.group_id())
                        .with_generation_id(generation_id)
                        .with_member_id(response.member_id.clone())
                        .with_assignments(assignments);
                    if version >= 3 {
                        sync.group_instance_id = group.instance_id();
                    }
                    if version >= 5 {
                        sync.protocol_type =
                            Some(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE));
                        sync.protocol_name = response.protocol_name.clone();
                    }
                    connection.send(sync, version).await
                }
                Err(e) => Err(e),
            };
            let assignment_bytes = match synced
                .and_then(|r| ClientError::check(r.error_code).map(|()| r.assignment))
            {
                Ok(bytes) => bytes,
                Err(e) => {
                    if self.recover_async(group, &e).await? {
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            };
            let assigned =
                decode_assignment(&assignment_bytes).map_err(|message| ClientError::Protocol {
                    addr: connection.addr().to_string(),
                    message,
                })?;
            group
                .membership()
                .on_joined(generation_id, protocol_name, Instant::now());
            group.wake.notify_one();
            tracing::debug!(group = %group.group_id, generation_id, partitions = assigned.len(), "joined");
            self.leader_view = leader_view;
            group.record(GroupEvent::Assigned {
                group_id: group.group_id.clone(),
                generation_id,
                member_id: response.member_id.to_string(),
                partitions: assigned.clone(),
            });
            self.set_assignment(assigned.clone());
            if crate::planted!(KeepRevokedPartitions) {
                // Planted: partitions the group took away keep being fetched.
                for (tp, state) in std::mem::take(&mut revoked_states) {
                    self.partitions.entry(tp).or_insert(state);
                }
            }
            if let Some(listener) = &self.listener {
                lock(listener).on_partitions_assigned(&assigned);
            }
            return Ok(());
        }
        group.membership().rejoin_needed = true;
        Err(last_error
            .unwrap_or_else(|| ClientError::Metadata("rebalance did not complete".to_string())))
    }

    /// Applies the recovery for a group error; `Ok(true)` means try again.
    async fn recover_async(
        &self,
        group: &GroupShared,
        error: &ClientError,
    ) -> Result<bool, ClientError> {
        let retry = self.recover(group, error)?;
        if retry {
            tokio::time::sleep(self.backoff()).await;
        }
        Ok(retry)
    }

    /// The synchronous part of [`recover_async`]: updates membership.
    fn recover(&self, group: &GroupShared, error: &ClientError) -> Result<bool, ClientError> {
        let recovery = recovery_for_error(error);
        tracing::debug!(group = %group.group_id, %error, ?recovery, "group request failed");
        group.membership().apply(recovery);
        match recovery {
            Recovery::Fatal => Err(error.clone()),
            Recovery::FindCoordinator
            | Recovery::Retry
            | Recovery::Rejoin
            | Recovery::ResetMemberAndRejoin => Ok(true),
        }
    }

    /// The leader's job: decode every member's subscription, look the topics
    /// up, run the assignor the coordinator chose.
    async fn assign_as_leader(
        &self,
        response: &JoinGroupResponse,
    ) -> Result<(Vec<SyncGroupRequestAssignment>, LeaderView), ClientError> {
        let mut subscriptions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for member in &response.members {
            let topics = match decode_subscription(&member.metadata) {
                Ok(s) => s.topics,
                Err(e) => {
                    // A member we cannot read gets nothing rather than
                    // failing the whole group.
                    tracing::warn!(member = %member.member_id, error = %e, "undecodable subscription");
                    Vec::new()
                }
            };
            subscriptions.insert(
                member.member_id.to_string(),
                topics.into_iter().take(SUBSCRIBED_TOPICS_MAX).collect(),
            );
        }
        let mut topics: Vec<String> = subscriptions.values().flatten().cloned().collect();
        topics.sort();
        topics.dedup();
        let partition_counts = self.partition_counts(&topics).await?;
        let strategy = response
            .protocol_name
            .as_deref()
            .and_then(AssignmentStrategy::from_name)
            .or_else(|| self.config.partition_assignment_strategy.first().copied())
            .unwrap_or(AssignmentStrategy::Range);
        let assignment = strategy.assign(&subscriptions, &partition_counts);
        let assignments = assignment
            .into_iter()
            .map(|(member_id, partitions)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_assignment(encode_assignment(&partitions))
            })
            .collect();
        Ok((
            assignments,
            LeaderView {
                topics,
                partition_counts,
                next_check: Instant::now(),
            },
        ))
    }

    /// Partition counts of the existing topics among `topics`, fresh from
    /// the cluster.
    async fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, i32>, ClientError> {
        self.cluster.refresh(Some(topics), false).await?;
        let mut partition_counts = BTreeMap::new();
        for topic in topics {
            if let Some(info) = self.cluster.topic(topic) {
                if info.error_code == 0 && !info.partitions.is_empty() {
                    partition_counts.insert(
                        topic.clone(),
                        i32::try_from(info.partitions.len()).unwrap_or(i32::MAX),
                    );
                }
            }
        }
        Ok(partition_counts)
    }

    /// As Java's leader: if a subscribed topic appeared, vanished or changed
    /// its partition count since the assignment, ask for a rebalance.
    async fn maybe_check_leader_metadata(&mut self) {
        let Some(group) = self.group.clone() else {
            return;
        };
        let Some(view) = self.leader_view.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now < view.next_check || group.membership().needs_join() {
            return;
        }
        let some_missing = view.topics.len() > view.partition_counts.len();
        let recheck = if some_missing {
            MISSING_TOPIC_RECHECK
        } else {
            Duration::from_millis(self.config.metadata_max_age_ms)
        };
        view.next_check = now + recheck;
        let topics = view.topics.clone();
        match self.partition_counts(&topics).await {
            Ok(counts) => {
                if self
                    .leader_view
                    .as_ref()
                    .is_some_and(|v| v.partition_counts != counts)
                {
                    tracing::info!(group = %group.group_id, "subscribed topics changed; rebalancing");
                    group.membership().rejoin_needed = true;
                }
            }
            Err(e) => tracing::debug!(error = %e, "leader metadata check failed"),
        }
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit || self.group.is_none() || self.assignment.is_empty() {
            return;
        }
        let now = Instant::now();
        if now < self.last_auto_commit + Duration::from_millis(self.config.auto_commit_interval_ms)
        {
            return;
        }
        self.last_auto_commit = now;
        if let Err(e) = self.commit_sync(None).await {
            tracing::warn!(error = %e, "automatic offset commit failed");
        }
    }

    /// The positions of all assigned partitions that have one.
    fn consumed_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        let last_returned_instead_of_next = crate::planted!(OffByOneCommit);
        self.partitions
            .iter()
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .map(|(tp, position)| {
                if last_returned_instead_of_next && position > 0 {
                    (tp, position - 1)
                } else {
                    (tp, position)
                }
            })
            .collect()
    }

    /// OffsetCommit of `offsets` (next offset to read per partition), or of
    /// the current positions when `None`.
    pub async fn commit_sync(
        &mut self,
        offsets: Option<BTreeMap<TopicPartition, i64>>,
    ) -> Result<(), ClientError> {
        let offsets = offsets.unwrap_or_else(|| self.consumed_offsets());
        if offsets.is_empty() {
            return Ok(());
        }
        let group = self
            .group
            .clone()
            .ok_or_else(|| ClientError::Config("offset commits need group.id".to_string()))?;
        let subscribed = self.subscription.is_some();
        let deadline = self.api_deadline();
        commit_offsets(&group, subscribed, &offsets, deadline, self.backoff()).await
    }

    /// Starts an OffsetCommit in the background and returns its handle.
    pub fn commit_async(
        &mut self,
        offsets: Option<BTreeMap<TopicPartition, i64>>,
    ) -> JoinHandle<Result<(), ClientError>> {
        let offsets = offsets.unwrap_or_else(|| self.consumed_offsets());
        let group = self.group.clone();
        let subscribed = self.subscription.is_some();
        let deadline = self.api_deadline();
        let backoff = self.backoff();
        tokio::spawn(async move {
            if offsets.is_empty() {
                return Ok(());
            }
            let group = group
                .ok_or_else(|| ClientError::Config("offset commits need group.id".to_string()))?;
            commit_offsets(&group, subscribed, &offsets, deadline, backoff).await
        })
    }

    /// The group's committed offset for `tp`, via OffsetFetch.
    pub async fn committed(&mut self, tp: &TopicPartition) -> Result<Option<i64>, ClientError> {
        let offsets = self
            .fetch_committed(std::slice::from_ref(tp), self.api_deadline())
            .await?;
        Ok(offsets.get(tp).copied())
    }

    async fn fetch_committed(
        &self,
        partitions: &[TopicPartition],
        deadline: Instant,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let group = self
            .group
            .clone()
            .ok_or_else(|| ClientError::Config("committed offsets need group.id".to_string()))?;
        loop {
            let connection = group.coordinator(deadline).await?;
            match fetch_committed_offsets(&connection, &group.group_id, Some(partitions)).await {
                Ok(offsets) => return Ok(offsets),
                Err(e) if Instant::now() + self.backoff() < deadline => {
                    if !self.recover_async(&group, &e).await? {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets the next offset `poll` returns for `tp`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClientError> {
        let state = self
            .partitions
            .get_mut(tp)
            .ok_or_else(|| ClientError::Invalid(format!("{tp} is not assigned")))?;
        if offset < 0 {
            return Err(ClientError::Invalid(format!("negative offset {offset}")));
        }
        *state = PartitionState {
            position: Some(offset),
            high_watermark: state.high_watermark,
            ..PartitionState::default()
        };
        Ok(())
    }

    /// Seeks `partitions` to their log start offsets.
    pub async fn seek_to_beginning(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<(), ClientError> {
        self.seek_to_timestamp(partitions, EARLIEST_TIMESTAMP).await
    }

    /// Seeks `partitions` to their log end offsets.
    pub async fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        self.seek_to_timestamp(partitions, LATEST_TIMESTAMP).await
    }

    /// Seeks each partition to the first offset whose timestamp is at least
    /// `timestamp`, or to the end if there is none.
    pub async fn seek_to_time(
        &mut self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<(), ClientError> {
        self.seek_to_timestamp(partitions, timestamp).await
    }

    async fn seek_to_timestamp(
        &mut self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<(), ClientError> {
        for tp in partitions {
            if !self.partitions.contains_key(tp) {
                return Err(ClientError::Invalid(format!("{tp} is not assigned")));
            }
        }
        let wait = Duration::from_millis(self.config.default_api_timeout_ms);
        let mut found = self
            .cluster
            .list_offsets(partitions, timestamp, wait)
            .await?;
        let missing: Vec<TopicPartition> = found
            .iter()
            .filter(|(_, (offset, _))| *offset < 0)
            .map(|(tp, _)| tp.clone())
            .collect();
        if !missing.is_empty() {
            // No record at or after the timestamp: the end, as Java's seek does.
            found.extend(
                self.cluster
                    .list_offsets(&missing, LATEST_TIMESTAMP, wait)
                    .await?,
            );
        }
        for (tp, (offset, _)) in found {
            self.seek(&tp, offset.max(0))?;
        }
        Ok(())
    }

    /// Log start offsets (Java's `beginningOffsets`); needs no assignment.
    pub async fn beginning_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        self.list_offsets_at(partitions, EARLIEST_TIMESTAMP).await
    }

    /// Log end offsets, i.e. high watermarks (Java's `endOffsets`); needs no
    /// assignment.
    pub async fn end_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        self.list_offsets_at(partitions, LATEST_TIMESTAMP).await
    }

    async fn list_offsets_at(
        &self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let wait = Duration::from_millis(self.config.default_api_timeout_ms);
        Ok(self
            .cluster
            .list_offsets(partitions, timestamp, wait)
            .await?
            .into_iter()
            .map(|(tp, (offset, _))| (tp, offset))
            .collect())
    }

    /// For each partition, the first `(offset, timestamp)` at or after the
    /// queried timestamp; `None` when no record is that recent.
    pub async fn offsets_for_times(
        &mut self,
        query: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, Option<(i64, i64)>>, ClientError> {
        let mut by_timestamp: BTreeMap<i64, Vec<TopicPartition>> = BTreeMap::new();
        for (tp, timestamp) in query {
            if *timestamp < 0 {
                return Err(ClientError::Invalid(format!(
                    "negative timestamp {timestamp} for {tp}"
                )));
            }
            by_timestamp.entry(*timestamp).or_default().push(tp.clone());
        }
        let wait = Duration::from_millis(self.config.default_api_timeout_ms);
        let mut result = BTreeMap::new();
        for (timestamp, tps) in by_timestamp {
            for (tp, (offset, found_timestamp)) in
                self.cluster.list_offsets(&tps, timestamp, wait).await?
            {
                result.insert(tp, (offset >= 0).then_some((offset, found_timestamp)));
            }
        }
        Ok(result)
    }

    /// The next offset `poll` would return for `tp`, resolving it (committed
    /// offset or `auto.offset.reset`) if needed.
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<i64, ClientError> {
        if !self.partitions.contains_key(tp) {
            return Err(ClientError::Invalid(format!("{tp} is not assigned")));
        }
        self.resolve_positions(self.api_deadline()).await?;
        self.partitions
            .get(tp)
            .and_then(|s| s.position)
            .ok_or_else(|| ClientError::Metadata(format!("position of {tp} unknown")))
    }

    /// `high_watermark - position` from the last fetch response, if both are known.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let state = self.partitions.get(tp)?;
        Some(state.high_watermark?.saturating_sub(state.position?).max(0))
    }

    /// Fills in positions of partitions that have none: the committed offset
    /// (with a group) or `auto.offset.reset`.
    async fn resolve_positions(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let missing: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let lookup: Vec<TopicPartition> = missing
            .iter()
            .filter(|tp| self.partitions.get(*tp).is_some_and(|s| !s.reset_needed))
            .cloned()
            .collect();
        if self.group.is_some() && !lookup.is_empty() {
            let committed = self
                .fetch_committed(&lookup, deadline.max(Instant::now() + self.backoff()))
                .await?;
            for (tp, offset) in committed {
                if let Some(state) = self.partitions.get_mut(&tp) {
                    state.position = Some(offset);
                }
            }
        }
        let reset: Vec<TopicPartition> = missing
            .into_iter()
            .filter(|tp| {
                self.partitions
                    .get(tp)
                    .is_some_and(|s| s.position.is_none())
            })
            .collect();
        if reset.is_empty() {
            return Ok(());
        }
        let timestamp = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => EARLIEST_TIMESTAMP,
            AutoOffsetReset::Latest => LATEST_TIMESTAMP,
            AutoOffsetReset::None => {
                return Err(ClientError::Invalid(format!(
                    "no offset for {} and auto.offset.reset=none",
                    reset[0]
                )))
            }
        };
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(self.backoff());
        for (tp, (offset, _)) in self.cluster.list_offsets(&reset, timestamp, wait).await? {
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.position = Some(offset.max(0));
                state.reset_needed = false;
            }
        }
        Ok(())
    }

    /// Hands out buffered records, at most `max.poll.records`, advancing positions.
    fn drain_buffers(&mut self) -> Vec<ConsumerRecord> {
        let limit = self.config.max_poll_records;
        let mut out = Vec::new();
        let count = self.partitions.len().max(1);
        let start = self.drain_from % count;
        let mut last_taken = None;
        let (before, after): (Vec<_>, Vec<_>) = self
            .partitions
            .values_mut()
            .enumerate()
            .partition(|(index, _)| *index < start);
        for (index, state) in after.into_iter().chain(before) {
            if out.len() < limit && !state.buffer.is_empty() {
                last_taken = Some(index);
            }
            while out.len() < limit {
                let Some(record) = state.buffer.pop_front() else {
                    break;
                };
                state.position = Some(record.offset.saturating_add(1));
                out.push(record);
            }
            if state.buffer.is_empty() {
                if let Some(end) = state.buffer_end.take() {
                    state.position = Some(state.position.map_or(end, |p| p.max(end)));
                }
            }
        }
        if let Some(index) = last_taken {
            self.drain_from = index + 1;
        }
        out
    }

    /// Whether some partition with a position has nothing buffered while
    /// another has records to hand out, and no fetch went out for
    /// `fetch.max.wait.ms`.
    fn refill_due(&self) -> bool {
        let empty = |state: &PartitionState| state.buffer.is_empty() && state.buffer_end.is_none();
        Instant::now() >= self.next_refill_fetch
            && self
                .partitions
                .values()
                .any(|state| !state.buffer.is_empty())
            && self
                .partitions
                .values()
                .any(|state| state.position.is_some() && empty(state))
    }

    /// One Fetch per leader for partitions with a position and an empty
    /// buffer. Returns whether any request was sent.
    async fn fetch_round(&mut self, max_wait: Duration) -> Result<bool, ClientError> {
        self.next_refill_fetch =
            Instant::now() + Duration::from_millis(self.config.fetch_max_wait_ms);
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let mut unknown_topics: Vec<String> = Vec::new();
        for (tp, state) in &self.partitions {
            let Some(position) = state.position else {
                continue;
            };
            if !state.buffer.is_empty() || state.buffer_end.is_some() {
                continue;
            }
            match self.cluster.leader(tp) {
                Some(leader) => by_leader
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), position)),
                None => {
                    if !unknown_topics.contains(&tp.topic) {
                        unknown_topics.push(tp.topic.clone());
                    }
                }
            }
        }
        if !unknown_topics.is_empty() {
            if let Err(e) = self.cluster.refresh(Some(&unknown_topics), false).await {
                tracing::debug!(error = %e, "consumer metadata refresh failed");
            }
        }
        if by_leader.is_empty() {
            return Ok(false);
        }
        let max_wait_ms = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let timeout = Duration::from_millis(self.config.request_timeout_ms) + max_wait;
        let mut requests = Vec::new();
        for (leader, partitions) in by_leader {
            let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
            for (tp, position) in &partitions {
                topics.entry(tp.topic.clone()).or_default().push(
                    FetchPartition::default()
                        .with_partition(tp.partition)
                        .with_current_leader_epoch(self.cluster.leader_epoch(tp).unwrap_or(-1))
                        .with_fetch_offset(*position)
                        .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
                );
            }
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(self.config.fetch_min_bytes)
                .with_max_bytes(self.config.fetch_max_bytes)
                .with_isolation_level(0)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            FetchTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            let cluster = self.cluster.clone();
            // One task per broker so their long polls overlap; they are
            // awaited in broker-id order, so results apply deterministically.
            let task = tokio::spawn(async move {
                let connection = cluster.broker_connection(leader)?;
                let version = connection.version::<FetchRequest>().await?;
                let mut req = req;
                if version < FETCH_CURRENT_LEADER_EPOCH_VERSION {
                    // Older brokers cannot be told the epoch.
                    for partition in req.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                        partition.current_leader_epoch = -1;
                    }
                }
                connection.send_with_timeout(req, version, timeout).await
            });
            requests.push((leader, partitions, task));
        }
        for (leader, partitions, task) in requests {
            let result = match task.await {
                Ok(result) => result,
                Err(join_error) => Err(ClientError::Network {
                    addr: format!("broker {leader}"),
                    message: format!("fetch task failed: {join_error}"),
                }),
            };
            match result {
                Ok(response) => self.apply_fetch(&partitions, response)?,
                Err(e) => {
                    tracing::debug!(leader, error = %e, "fetch failed");
                    for (tp, _) in &partitions {
                        self.cluster.invalidate(&tp.topic);
                    }
                }
            }
        }
        Ok(true)
    }

    fn apply_fetch(
        &mut self,
        requested: &[(TopicPartition, i64)],
        response: FetchResponse,
    ) -> Result<(), ClientError> {
        if response.error_code != 0 {
            tracing::debug!(code = response.error_code, "fetch failed as a whole");
            return Ok(());
        }
        for topic in response.responses {
            let topic_name = topic.topic.0.to_string();
            for p in topic.partitions {
                let tp = TopicPartition::new(topic_name.clone(), p.partition_index);
                let Some(&(_, fetched_at)) = requested.iter().find(|(r, _)| *r == tp) else {
                    continue;
                };
                let Some(state) = self.partitions.get_mut(&tp) else {
                    continue;
                };
                if state.position != Some(fetched_at) {
                    continue;
                }
                match p.error_code {
                    0 => {}
                    codes::OFFSET_OUT_OF_RANGE => {
                        if self.config.auto_offset_reset == AutoOffsetReset::None {
                            return Err(ClientError::Broker(
                                kafka_protocol::error::ResponseError::OffsetOutOfRange,
                            ));
                        }
                        tracing::info!(%tp, offset = fetched_at, "offset out of range; resetting");
                        state.position = None;
                        state.reset_needed = true;
                        continue;
                    }
                    code if is_stale_metadata_error(code) => {
                        self.cluster.invalidate(&tp.topic);
                        continue;
                    }
                    code => {
                        tracing::debug!(%tp, code, "fetch error for partition");
                        continue;
                    }
                }
                state.high_watermark = Some(p.high_watermark);
                let Some(bytes) = p.records else { continue };
                let batches = decode_fetched(bytes).map_err(|error| match error {
                    FetchDecodeError::Corrupt(message) => ClientError::CorruptRecords {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        message,
                    },
                    FetchDecodeError::Unsupported(message) => ClientError::UnreadableRecords {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        message,
                    },
                })?;
                let mut end = fetched_at;
                for batch in batches {
                    end = end.max(batch.last_offset.saturating_add(1));
                    if batch.control {
                        continue;
                    }
                    for record in batch.records {
                        if record.offset < fetched_at || record.control {
                            continue;
                        }
                        state.buffer.push_back(ConsumerRecord {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            offset: record.offset,
                            key: record.key,
                            value: record.value,
                            headers: record
                                .headers
                                .into_iter()
                                .map(|(key, value)| Header {
                                    key: key.to_string(),
                                    value,
                                })
                                .collect(),
                            timestamp: record.timestamp,
                        });
                    }
                }
                if end > fetched_at {
                    state.buffer_end = Some(end);
                }
            }
        }
        Ok(())
    }

    /// Commits (with auto commit), runs the revoke callback, leaves the group
    /// and stops the heartbeat task.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let result = self.give_up_partitions().await;
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        result
    }

    /// Leaves the group (or drops a manual assignment): commits with auto
    /// commit on, runs the revoke callback, sends LeaveGroup. The consumer
    /// can `subscribe` or `assign` again afterwards.
    pub async fn unsubscribe(&mut self) -> Result<(), ClientError> {
        let result = self.give_up_partitions().await;
        self.subscription = None;
        self.listener = None;
        result
    }

    async fn give_up_partitions(&mut self) -> Result<(), ClientError> {
        let mut result = Ok(());
        if self.config.enable_auto_commit && self.group.is_some() && !self.assignment.is_empty() {
            result = self.commit_sync(None).await;
        }
        let revoked = std::mem::take(&mut self.assignment);
        self.partitions.clear();
        self.leader_view = None;
        if self.subscription.is_none() {
            return result;
        }
        if let Some(group) = &self.group {
            group.record_revoked(&revoked);
        }
        if let Some(listener) = &self.listener {
            lock(listener).on_partitions_revoked(&revoked);
        }
        if let Some(group) = self.group.clone() {
            let member_id = {
                let mut m = group.membership();
                let member_id = (!m.member_id.is_empty()).then(|| m.member_id.clone());
                // Out of the generation first, so the heartbeat task stops.
                m.reset_member();
                member_id
            };
            // A static member keeps its membership across a restart; the
            // coordinator expires it if it does not come back in time.
            let connection = lock(&group.coordinator)
                .clone()
                .filter(|_| group.instance_id.is_none());
            if let (Some(member_id), Some(connection)) = (member_id, connection) {
                if let Err(e) = group.leave(&connection, &member_id).await {
                    tracing::debug!(error = %e, "LeaveGroup failed");
                }
            }
        }
        result
    }
}

/// OffsetCommit with retries on coordinator errors until `deadline`. In a
/// subscribed group the commit carries the generation, so a member that was
/// replaced cannot overwrite its successor's offsets.
async fn commit_offsets(
    group: &GroupShared,
    subscribed: bool,
    offsets: &BTreeMap<TopicPartition, i64>,
    deadline: Instant,
    backoff: Duration,
) -> Result<(), ClientError> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, offset) in offsets {
        by_topic.entry(tp.topic.as_str()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*offset),
        );
    }
    let topics: Vec<OffsetCommitRequestTopic> = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    loop {
        let (generation_id, member_id) = if subscribed {
            let m = group.membership();
            // A rebalance that is only announced still lets the current
            // generation commit: that is the commit before revocation.
            if m.state != MemberState::Stable {
                return Err(ClientError::Broker(
                    kafka_protocol::error::ResponseError::RebalanceInProgress,
                ));
            }
            (m.generation_id, m.member_id.clone())
        } else {
            (-1, String::new())
        };
        let connection = group.coordinator(deadline).await?;
        let version = connection.version::<OffsetCommitRequest>().await?;
        group.check_static_support("OffsetCommit", version, 7)?;
        let mut req = OffsetCommitRequest::default()
            .with_group_id(group.group_id())
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_topics(topics.clone());
        if version >= 7 && subscribed {
            req.group_instance_id = group.instance_id();
        }
        let attempt = group
            .next_commit_attempt
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        group.record(GroupEvent::CommitSent {
            attempt,
            group_id: group.group_id.clone(),
            generation_id,
            member_id,
            offsets: offsets.clone(),
        });
        let result = connection.send(req, version).await.and_then(|response| {
            for topic in &response.topics {
                for p in &topic.partitions {
                    ClientError::check(p.error_code)?;
                }
            }
            Ok(())
        });
        group.record(GroupEvent::CommitDone {
            attempt,
            outcome: CommitOutcome::of(&result),
        });
        let error = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let recovery = match &error {
            ClientError::Broker(e) => recovery_for(e.code()),
            other => recovery_for_error(other),
        };
        group.membership().apply(recovery);
        match recovery {
            Recovery::FindCoordinator | Recovery::Retry if Instant::now() + backoff < deadline => {
                if recovery == Recovery::FindCoordinator {
                    group.coordinator_lost();
                }
                tokio::time::sleep(backoff).await;
            }
            // Rejoin / reset: the generation is over; the offsets belong to
            // whoever gets the partitions next (Java's CommitFailedException).
            _ => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use indexmap::IndexMap;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, control: bool) -> Record {
        Record {
            transactional: control,
            control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 9,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: i32::try_from(offset).unwrap(),
            timestamp: 1_000 + offset,
            key: if control {
                Some(Bytes::from_static(&[0, 0, 0, 1]))
            } else {
                None
            },
            value: Some(Bytes::from(format!("v{offset}"))),
            headers: IndexMap::new(),
        }
    }

    fn batch(records: &[Record]) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn response(records: Bytes, high_watermark: i64) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![PartitionData::default()
                .with_partition_index(0)
                .with_high_watermark(high_watermark)
                .with_records(Some(records))])])
    }

    #[test]
    fn settings_by_kafka_key() {
        let mut config = ConsumerConfig::default();
        assert!(config.set("group.id", "g").unwrap());
        assert!(config.set("auto.offset.reset", "earliest").unwrap());
        assert!(config
            .set(
                "partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.RoundRobinAssignor, range"
            )
            .unwrap());
        assert!(config.set("max.poll.records", " 7 ").unwrap());
        assert_eq!(config.group_id.as_deref(), Some("g"));
        assert_eq!(config.auto_offset_reset, AutoOffsetReset::Earliest);
        assert_eq!(
            config.partition_assignment_strategy,
            vec![AssignmentStrategy::RoundRobin, AssignmentStrategy::Range]
        );
        assert_eq!(config.max_poll_records, 7);
        assert!(!config.set("no.such.key", "1").unwrap());
        assert!(config.set("fetch.min.bytes", "lots").is_err());
        assert!(config
            .set("partition.assignment.strategy", "CooperativeStickyAssignor")
            .is_err());
    }

    #[tokio::test]
    async fn fetched_batches_skip_records_below_the_position_and_control_batches() {
        let config = ConsumerConfig {
            bootstrap_servers: "unused:9092".into(),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(
            config,
            Arc::new(crate::net::TcpConnector),
            Arc::new(crate::clock::ManualClock::new(0)),
        )
        .unwrap();
        let tp = TopicPartition::new("t", 0);
        consumer.assign(vec![tp.clone()]).unwrap();
        consumer.seek(&tp, 1).unwrap();

        // A data batch at 0..=2 (the fetch returns it whole) and a commit
        // marker at 3, as a transactional producer leaves behind.
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&batch(&[
            record(0, false),
            record(1, false),
            record(2, false),
        ]));
        bytes.extend_from_slice(&batch(&[record(3, true)]));
        consumer
            .apply_fetch(&[(tp.clone(), 1)], response(bytes.freeze(), 4))
            .unwrap();

        let records = consumer.drain_buffers();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1, 2]);
        assert_eq!(records[0].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(
            consumer.partitions[&tp].position,
            Some(4),
            "past the control batch"
        );
        assert_eq!(consumer.lag(&tp), Some(0));
    }

    #[tokio::test]
    async fn a_stale_response_or_garbage_does_not_move_the_position_or_panic() {
        let config = ConsumerConfig {
            bootstrap_servers: "unused:9092".into(),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(
            config,
            Arc::new(crate::net::TcpConnector),
            Arc::new(crate::clock::ManualClock::new(0)),
        )
        .unwrap();
        let tp = TopicPartition::new("t", 0);
        consumer.assign(vec![tp.clone()]).unwrap();
        consumer.seek(&tp, 5).unwrap();
        // Fetched at 1, but the position moved to 5 since: ignored.
        consumer
            .apply_fetch(&[(tp.clone(), 1)], response(batch(&[record(1, false)]), 9))
            .unwrap();
        assert!(consumer.drain_buffers().is_empty());
        assert_eq!(consumer.partitions[&tp].position, Some(5));
        // Bytes that are not a batch: an error, no panic, position kept.
        let garbage = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 80, 1, 2, 3]);
        let mut padded = BytesMut::from(&garbage[..]);
        padded.extend_from_slice(&[0u8; 80]);
        assert!(consumer
            .apply_fetch(&[(tp.clone(), 5)], response(padded.freeze(), 9))
            .is_err());
        assert_eq!(consumer.partitions[&tp].position, Some(5));
    }
}
