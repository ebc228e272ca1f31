//! The client's view of the cluster, and an admin helper.
//!
//! [`Cluster`] holds one [`Connection`] per broker address and a cache of
//! brokers and topic -> partition -> leader, filled from Metadata responses.
//! Callers invalidate a topic when a broker says the cache is stale
//! (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, a connection error);
//! the next lookup fetches it again. [`Admin`] builds the topic and group
//! operations the CLI needs on top of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
// tokio's clock, not the OS's: virtual (and deterministic) under the
// simulation, real time in the binary.
use tokio::time::Instant;

use super::assignor::decode_assignment;
use super::connection::{Connection, ConnectionConfig};
use super::{codes, ClientError, TopicPartition};
use crate::net::Connector;

/// Kafka's `retry.backoff.ms` default: the pause between metadata retries.
pub const RETRY_BACKOFF_MS_DEFAULT: u64 = 100;

/// Connections kept per client. A cluster has few brokers; the bound guards
/// against a broker advertising an unbounded stream of new addresses.
const CONNECTIONS_MAX: usize = 1024;

/// ListOffsets timestamp meaning "the log end offset".
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp meaning "the log start offset".
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// One partition as the cluster last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// Broker id of the leader; -1 when there is none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// One topic as the cluster last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub error_code: i16,
    pub is_internal: bool,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionInfo>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignor chosen for the current generation.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    /// A static member's `group.instance.id`.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded from the consumer-protocol assignment; empty for other protocols.
    pub assignment: Vec<TopicPartition>,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// Empty when the broker's ListGroups version predates states (v4).
    pub state: String,
}

#[derive(Default)]
struct ClusterState {
    /// Broker id -> "host:port".
    brokers: BTreeMap<i32, String>,
    controller: Option<i32>,
    topics: BTreeMap<String, TopicInfo>,
}

/// Connections and the metadata cache, shared by the parts of one client.
pub struct Cluster {
    bootstrap: Vec<String>,
    connector: Arc<dyn Connector>,
    config: ConnectionConfig,
    retry_backoff: Duration,
    connections: Mutex<BTreeMap<String, Arc<Connection>>>,
    state: Mutex<ClusterState>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning means a panic elsewhere; the maps are still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Splits `bootstrap.servers` ("host:port,host:port").
pub fn parse_bootstrap(servers: &str) -> Vec<String> {
    servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Cluster {
    /// `bootstrap` is Kafka's `bootstrap.servers`: comma-separated host:port.
    pub fn new(
        bootstrap: &str,
        connector: Arc<dyn Connector>,
        config: ConnectionConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            bootstrap: parse_bootstrap(bootstrap),
            connector,
            config,
            retry_backoff: Duration::from_millis(RETRY_BACKOFF_MS_DEFAULT),
            connections: Mutex::new(BTreeMap::new()),
            state: Mutex::new(ClusterState::default()),
        })
    }

    pub fn connection_config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// The (shared) connection to `addr`.
    pub fn connection(&self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        let mut connections = lock(&self.connections);
        if let Some(connection) = connections.get(addr) {
            return Ok(connection.clone());
        }
        if connections.len() >= CONNECTIONS_MAX {
            return Err(ClientError::Metadata(format!(
                "more than {CONNECTIONS_MAX} broker addresses"
            )));
        }
        let connection = Arc::new(Connection::new(
            addr,
            self.connector.clone(),
            self.config.clone(),
        ));
        connections.insert(addr.to_string(), connection.clone());
        Ok(connection)
    }

    /// The connection to broker `node_id`, if the cache knows its address.
    pub fn broker_connection(&self, node_id: i32) -> Result<Arc<Connection>, ClientError> {
        let addr = lock(&self.state).brokers.get(&node_id).cloned();
        match addr {
            Some(addr) => self.connection(&addr),
            None => Err(ClientError::Metadata(format!("broker {node_id} unknown"))),
        }
    }

    /// Known brokers, by id.
    pub fn brokers(&self) -> BTreeMap<i32, String> {
        lock(&self.state).brokers.clone()
    }

    /// Addresses to try for a request any broker can answer: known brokers by
    /// id, then the bootstrap list (deduplicated, order kept).
    fn candidate_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = lock(&self.state).brokers.values().cloned().collect();
        for addr in &self.bootstrap {
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        addrs
    }

    /// Sends `req` to the first broker that answers. Broker errors are the
    /// caller's; only connection-level failures move on to the next broker.
    pub async fn call_any<R: Request + Clone>(&self, req: R) -> Result<R::Response, ClientError> {
        let mut last_error = ClientError::Metadata("no bootstrap servers".to_string());
        for addr in self.candidate_addrs() {
            let connection = self.connection(&addr)?;
            match connection.call(req.clone()).await {
                Ok(response) => return Ok(response),
                Err(
                    e @ (ClientError::Network { .. }
                    | ClientError::Timeout { .. }
                    | ClientError::Protocol { .. }),
                ) => {
                    tracing::debug!(%addr, error = %e, "broker unreachable, trying the next");
                    last_error = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error)
    }

    /// Fetches metadata for `topics` (all topics when `None`) and updates the
    /// cache. `allow_auto_topic_creation` is the producer's
    /// `allow.auto.create.topics`.
    pub async fn refresh(
        &self,
        topics: Option<&[String]>,
        allow_auto_topic_creation: bool,
    ) -> Result<(), ClientError> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(allow_auto_topic_creation);
        // Metadata v1..=3 cannot carry allow_auto_topic_creation=false; the
        // encoder rejects it, and then auto-creation is simply the broker's.
        let response = match self.call_any(req.clone()).await {
            Err(ClientError::Invalid(_)) if !allow_auto_topic_creation => {
                self.call_any(req.with_allow_auto_topic_creation(true))
                    .await?
            }
            other => other?,
        };
        let mut state = lock(&self.state);
        if topics.is_none() {
            state.topics.clear();
        }
        for broker in &response.brokers {
            let port = broker.port;
            state
                .brokers
                .insert(broker.node_id.0, format!("{}:{port}", broker.host.as_str()));
        }
        state.controller = (response.controller_id.0 >= 0).then_some(response.controller_id.0);
        for topic in response.topics {
            let Some(name) = topic.name else { continue };
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let info = TopicInfo {
                name: name.0.to_string(),
                error_code: topic.error_code,
                is_internal: topic.is_internal,
                partitions,
            };
            state.topics.insert(info.name.clone(), info);
        }
        Ok(())
    }

    /// The cached description of `topic`, if any.
    pub fn topic(&self, topic: &str) -> Option<TopicInfo> {
        lock(&self.state).topics.get(topic).cloned()
    }

    /// Forgets `topic` so the next lookup asks the cluster again.
    pub fn invalidate(&self, topic: &str) {
        lock(&self.state).topics.remove(topic);
    }

    /// Reads `tp`'s cached description, if the cache has one.
    fn cached_partition<R>(
        &self,
        tp: &TopicPartition,
        read: impl FnOnce(&PartitionInfo) -> R,
    ) -> Option<R> {
        let state = lock(&self.state);
        let topic = state.topics.get(&tp.topic)?;
        topic
            .partitions
            .iter()
            .find(|p| p.partition == tp.partition)
            .map(read)
    }

    /// The leader of `tp` according to the cache.
    pub fn leader(&self, tp: &TopicPartition) -> Option<i32> {
        self.cached_partition(tp, |p| p.leader)
            .filter(|leader| *leader >= 0)
    }

    /// The leader epoch of `tp` according to the cache, which fetches carry
    /// as `current_leader_epoch` so a deposed leader refuses them (KIP-320).
    pub fn leader_epoch(&self, tp: &TopicPartition) -> Option<i32> {
        self.cached_partition(tp, |p| p.leader_epoch)
            .filter(|epoch| *epoch >= 0)
    }

    /// `topic` with its partitions, refreshing the cache until the topic is
    /// known with at least one partition or `wait` has passed.
    pub async fn topic_info(
        &self,
        topic: &str,
        allow_auto_topic_creation: bool,
        wait: Duration,
    ) -> Result<TopicInfo, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(info) = self.topic(topic) {
                if info.error_code == 0 && !info.partitions.is_empty() {
                    return Ok(info);
                }
            }
            // Bounded by the caller's wait even if every broker is slow to
            // answer (each would otherwise take a whole request timeout).
            let refreshed = tokio::time::timeout_at(
                deadline,
                self.refresh(Some(&[topic.to_string()]), allow_auto_topic_creation),
            )
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Metadata(format!(
                    "metadata for {topic} timed out"
                )))
            });
            if let Some(info) = self.topic(topic) {
                if info.error_code == 0 && !info.partitions.is_empty() {
                    return Ok(info);
                }
                if info.error_code != 0
                    && info.error_code != codes::UNKNOWN_TOPIC_OR_PARTITION
                    && info.error_code != codes::LEADER_NOT_AVAILABLE
                {
                    ClientError::check(info.error_code)?;
                }
            }
            if Instant::now() + self.retry_backoff >= deadline {
                return Err(match refreshed {
                    Err(e) => e,
                    Ok(()) => ClientError::Metadata(format!("topic {topic} not available")),
                });
            }
            tokio::time::sleep(self.retry_backoff).await;
        }
    }

    /// The connection to the leader of `tp`, refreshing metadata if needed.
    pub async fn leader_connection(
        &self,
        tp: &TopicPartition,
        wait: Duration,
    ) -> Result<(i32, Arc<Connection>), ClientError> {
        if self.leader(tp).is_none() {
            self.topic_info(&tp.topic, false, wait).await?;
        }
        let leader = self
            .leader(tp)
            .ok_or_else(|| ClientError::Metadata(format!("no leader for {tp}")))?;
        Ok((leader, self.broker_connection(leader)?))
    }

    /// The coordinator of `group_id`, via FindCoordinator.
    pub async fn find_coordinator(
        &self,
        group_id: &str,
    ) -> Result<(i32, Arc<Connection>), ClientError> {
        // The version depends on the broker that answers; ask the first
        // candidate for it, then shape the request to match.
        let mut last_error = ClientError::Metadata("no bootstrap servers".to_string());
        for addr in self.candidate_addrs() {
            let connection = self.connection(&addr)?;
            let version = match connection.version::<FindCoordinatorRequest>().await {
                Ok(v) => v,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let mut req = FindCoordinatorRequest::default();
            if version >= 4 {
                req.coordinator_keys = vec![StrBytes::from_string(group_id.to_string())];
            } else {
                req.key = StrBytes::from_string(group_id.to_string());
            }
            let response = match connection.send(req, version).await {
                Ok(r) => r,
                Err(
                    e @ (ClientError::Network { .. }
                    | ClientError::Timeout { .. }
                    | ClientError::Protocol { .. }),
                ) => {
                    last_error = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (error_code, node_id, host, port) = if version >= 4 {
                let c = response
                    .coordinators
                    .first()
                    .ok_or_else(|| ClientError::Protocol {
                        addr: addr.clone(),
                        message: "FindCoordinator response without coordinators".to_string(),
                    })?;
                (c.error_code, c.node_id.0, c.host.to_string(), c.port)
            } else {
                (
                    response.error_code,
                    response.node_id.0,
                    response.host.to_string(),
                    response.port,
                )
            };
            ClientError::check(error_code)?;
            let coordinator_addr = format!("{host}:{port}");
            lock(&self.state)
                .brokers
                .insert(node_id, coordinator_addr.clone());
            return Ok((node_id, self.connection(&coordinator_addr)?));
        }
        Err(last_error)
    }

    /// ListOffsets for each partition at `timestamp` (or [`LATEST_TIMESTAMP`],
    /// [`EARLIEST_TIMESTAMP`]). Returns `(offset, timestamp)` per partition;
    /// offset -1 means "no record at or after the timestamp". Partitions whose
    /// leader fails are retried after a metadata refresh until `wait` passes.
    pub async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        timestamp: i64,
        wait: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, i64)>, ClientError> {
        let deadline = Instant::now() + wait;
        let mut remaining: Vec<TopicPartition> = partitions.to_vec();
        let mut result = BTreeMap::new();
        loop {
            let mut last_error = None;
            let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
            // Partitions with no leader yet go to `retry`.
            let mut retry = Vec::new();
            for tp in std::mem::take(&mut remaining) {
                let leader = tokio::time::timeout_at(
                    deadline,
                    self.leader_connection(&tp, deadline.saturating_duration_since(Instant::now())),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Metadata(format!("no leader for {tp} in time")))
                });
                match leader {
                    Ok((leader, _)) => by_leader.entry(leader).or_default().push(tp),
                    Err(e) => {
                        last_error = Some(e);
                        retry.push(tp);
                    }
                }
            }
            for (leader, tps) in by_leader {
                let answered = tokio::time::timeout_at(
                    deadline,
                    self.list_offsets_on(leader, &tps, timestamp),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Metadata("list offsets timed out".to_string()))
                });
                match answered {
                    Ok(answers) => {
                        for (tp, answer) in answers {
                            match answer {
                                Ok(found) => {
                                    result.insert(tp, found);
                                }
                                Err(e) => {
                                    if e.code().is_some_and(super::is_stale_metadata_error) {
                                        self.invalidate(&tp.topic);
                                    } else if !e.is_retriable() {
                                        return Err(e);
                                    }
                                    last_error = Some(e);
                                    retry.push(tp);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        for tp in &tps {
                            self.invalidate(&tp.topic);
                        }
                        if !e.is_retriable() {
                            return Err(e);
                        }
                        last_error = Some(e);
                        retry.extend(tps);
                    }
                }
            }
            if retry.is_empty() {
                return Ok(result);
            }
            if Instant::now() + self.retry_backoff >= deadline {
                return Err(last_error
                    .unwrap_or_else(|| ClientError::Metadata("list offsets timed out".into())));
            }
            tokio::time::sleep(self.retry_backoff).await;
            remaining = retry;
        }
    }

    async fn list_offsets_on(
        &self,
        leader: i32,
        tps: &[TopicPartition],
        timestamp: i64,
    ) -> Result<Vec<(TopicPartition, Result<(i64, i64), ClientError>)>, ClientError> {
        let connection = self.broker_connection(leader)?;
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            topics
                .entry(tp.topic.as_str())
                .or_default()
                .push(tp.partition);
        }
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = connection.call(req).await?;
        let mut answers = Vec::new();
        for tp in tps {
            let found = response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == tp.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == tp.partition);
            let answer = match found {
                None => Err(ClientError::Protocol {
                    addr: connection.addr().to_string(),
                    message: format!("ListOffsets response lacks {tp}"),
                }),
                Some(p) => ClientError::check(p.error_code).map(|()| (p.offset, p.timestamp)),
            };
            answers.push((tp.clone(), answer));
        }
        Ok(answers)
    }

    /// The controller connection if known, else any broker's; for CreateTopics
    /// and DeleteTopics (KRaft brokers forward them to the controller).
    async fn controller_connection(&self) -> Result<Arc<Connection>, ClientError> {
        if lock(&self.state).controller.is_none() {
            self.refresh(Some(&[]), false).await?;
        }
        let controller = lock(&self.state).controller;
        // A controller the metadata names but lists no address for (it has
        // not registered yet) is reached through any broker, which answers
        // NOT_CONTROLLER until the metadata catches up.
        if let Some(connection) = controller.and_then(|id| self.broker_connection(id).ok()) {
            return Ok(connection);
        }
        let addr = self
            .candidate_addrs()
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Metadata("no bootstrap servers".to_string()))?;
        self.connection(&addr)
    }
}

/// Items keyed by partition, grouped by topic in topic order, as requests
/// that list partitions per topic need them.
fn by_topic<'a, T>(
    items: impl IntoIterator<Item = (&'a TopicPartition, T)>,
) -> BTreeMap<&'a str, Vec<T>> {
    let mut grouped: BTreeMap<&str, Vec<T>> = BTreeMap::new();
    for (tp, item) in items {
        grouped.entry(tp.topic.as_str()).or_default().push(item);
    }
    grouped
}

/// A broker's error code with the message it gave, if any: the message
/// says why (an unknown config, a count below the current one), so it is
/// kept. A code without a message is the plain [`ClientError::check`], so
/// callers can still match on it (NOT_CONTROLLER is retried).
fn check_with_message(code: i16, message: Option<&StrBytes>) -> Result<(), ClientError> {
    match (ClientError::check(code), message) {
        (Err(error), Some(message)) if !message.is_empty() => {
            Err(ClientError::Invalid(format!("{error}: {message}")))
        }
        (result, _) => result,
    }
}

fn creatable_configs(configs: &[(String, String)]) -> Vec<CreatableTopicConfig> {
    configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .collect()
}

/// What DescribeConfigs and IncrementalAlterConfigs act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    /// A broker, by node id.
    Broker(i32),
}

impl ConfigResource {
    /// Kafka's resource type code and the resource's name.
    fn type_and_name(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(name) => (2, name.clone()),
            ConfigResource::Broker(node_id) => (4, node_id.to_string()),
        }
    }
}

/// One configuration as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's ConfigSource: 1 a topic override, 4 the broker's
    /// server.properties, 5 the default.
    pub source: i8,
    pub read_only: bool,
}

/// Attempts at a controller request before its error is returned.
const CONTROLLER_ATTEMPTS_MAX: u32 = 20;

/// The pause between attempts: an election takes a second or two.
const CONTROLLER_RETRY_BACKOFF_MS: u64 = 250;

/// Topic and group administration: what `kafka-topics.sh` and
/// `kafka-consumer-groups.sh` do.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    pub fn new(bootstrap: &str, connector: Arc<dyn Connector>, config: ConnectionConfig) -> Self {
        Self {
            cluster: Cluster::new(bootstrap, connector, config),
        }
    }

    pub fn from_cluster(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// CreateTopics for one topic. `replication_factor` -1 means the broker default.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(creatable_configs(configs));
        self.create(name, topic).await
    }

    /// CreateTopics for one topic whose replicas are placed by hand:
    /// `(partition index, replica node ids)`, the first replica leading, as
    /// kafka-topics' `--replica-assignment` does.
    pub async fn create_topic_with_assignment(
        &self,
        name: &str,
        assignment: &[(i32, Vec<i32>)],
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
        let topic = CreatableTopic::default()
            .with_configs(creatable_configs(configs))
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(
                assignment
                    .iter()
                    .map(|(partition, replicas)| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(*partition)
                            .with_broker_ids(replicas.iter().map(|id| BrokerId(*id)).collect())
                    })
                    .collect(),
            );
        self.create(name, topic).await
    }

    async fn create(&self, name: &str, topic: CreatableTopic) -> Result<(), ClientError> {
        let timeout_ms = i32::try_from(self.cluster.config.request_timeout_ms).unwrap_or(i32::MAX);
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(timeout_ms);
        self.at_controller(|connection| {
            let req = req.clone();
            async move {
                let response = connection.call(req).await?;
                let result = response
                    .topics
                    .iter()
                    .find(|t| t.name.0.as_str() == name)
                    .ok_or_else(|| ClientError::Protocol {
                        addr: connection.addr().to_string(),
                        message: format!("CreateTopics response lacks {name}"),
                    })?;
                ClientError::check(result.error_code)
            }
        })
        .await?;
        self.cluster.invalidate(name);
        Ok(())
    }

    /// Runs a controller request, following the controller as Kafka's admin
    /// client does: on NOT_CONTROLLER it refreshes the metadata and tries
    /// again, a bounded number of times. Other errors are the caller's.
    async fn at_controller<F, Fut>(&self, request: F) -> Result<(), ClientError>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<(), ClientError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.cluster.controller_connection().await {
                Ok(connection) => request(connection).await,
                Err(error) => Err(error),
            };
            let not_controller = |error: &ClientError| {
                error.code() == Some(kafka_protocol::error::ResponseError::NotController.code())
            };
            match result {
                Err(error) if attempt < CONTROLLER_ATTEMPTS_MAX && not_controller(&error) => {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        CONTROLLER_RETRY_BACKOFF_MS,
                    ))
                    .await;
                    self.cluster.refresh(Some(&[]), false).await.ok();
                }
                other => return other,
            }
        }
    }

    /// DescribeQuorum at the active controller: the metadata quorum's
    /// leader, epoch, high watermark and voters.
    pub async fn describe_quorum(
        &self,
    ) -> Result<kafka_protocol::messages::DescribeQuorumResponse, ClientError> {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        use kafka_protocol::messages::DescribeQuorumRequest;
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default()])]);
        let answer = std::sync::Mutex::new(None);
        self.at_controller(|connection| {
            let req = req.clone();
            let answer = &answer;
            async move {
                let response = connection.call(req).await?;
                let code = response
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .map_or(response.error_code, |p| p.error_code);
                ClientError::check(code)?;
                *answer.lock().expect("answer lock") = Some(response);
                Ok(())
            }
        })
        .await?;
        answer
            .into_inner()
            .expect("answer lock")
            .ok_or_else(|| ClientError::Metadata("DescribeQuorum gave no answer".to_string()))
    }

    /// CreatePartitions: grows `name` to `count` partitions, placed by the
    /// controller. Records keyed before and after the change may land in
    /// different partitions.
    pub async fn create_partitions(&self, name: &str, count: i32) -> Result<(), ClientError> {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        use kafka_protocol::messages::CreatePartitionsRequest;
        let timeout_ms = i32::try_from(self.cluster.config.request_timeout_ms).unwrap_or(i32::MAX);
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_count(count)
                .with_assignments(None)]);
        self.at_controller(|connection| {
            let req = req.clone();
            async move {
                let response = connection.call(req).await?;
                let result = response
                    .results
                    .iter()
                    .find(|r| r.name.0.as_str() == name)
                    .ok_or_else(|| ClientError::Protocol {
                        addr: connection.addr().to_string(),
                        message: format!("CreatePartitions response lacks {name}"),
                    })?;
                check_with_message(result.error_code, result.error_message.as_ref())
            }
        })
        .await?;
        self.cluster.invalidate(name);
        Ok(())
    }

    /// DeleteRecords on `tp`'s leader: its log start moves to `offset` (-1:
    /// the high watermark). Returns the new low watermark.
    pub async fn delete_records(
        &self,
        tp: &TopicPartition,
        offset: i64,
    ) -> Result<i64, ClientError> {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        use kafka_protocol::messages::DeleteRecordsRequest;
        let wait = Duration::from_millis(self.cluster.config.request_timeout_ms);
        let (_, connection) = self.cluster.leader_connection(tp, wait).await?;
        let timeout_ms = i32::try_from(self.cluster.config.request_timeout_ms).unwrap_or(i32::MAX);
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(tp.partition)
                    .with_offset(offset)])]);
        let response = connection.call(req).await?;
        let partition = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol {
                addr: connection.addr().to_string(),
                message: "DeleteRecords response without the partition".to_string(),
            })?;
        ClientError::check(partition.error_code)?;
        Ok(partition.low_watermark)
    }

    /// ElectLeaders at the controller: `unclean` false for a preferred
    /// election. `partitions` None asks for every partition. Returns each
    /// partition's error code (ELECTION_NOT_NEEDED when its leader already
    /// was the one asked for) and message.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<Vec<(TopicPartition, i16, Option<String>)>, ClientError> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        use kafka_protocol::messages::ElectLeadersRequest;
        let topic_partitions = partitions.map(|tps| {
            let by_topic = by_topic(tps.iter().map(|tp| (tp, tp.partition)));
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect()
        });
        let timeout_ms = i32::try_from(self.cluster.config.request_timeout_ms).unwrap_or(i32::MAX);
        let req = ElectLeadersRequest::default()
            .with_election_type(i8::from(unclean))
            .with_topic_partitions(topic_partitions)
            .with_timeout_ms(timeout_ms);
        let answer = std::sync::Mutex::new(Vec::new());
        self.at_controller(|connection| {
            let req = req.clone();
            let answer = &answer;
            async move {
                let response = connection.call(req).await?;
                ClientError::check(response.error_code)?;
                let mut results = Vec::new();
                for topic in response.replica_election_results {
                    for partition in topic.partition_result {
                        if partition.error_code
                            == kafka_protocol::error::ResponseError::NotController.code()
                        {
                            return ClientError::check(partition.error_code);
                        }
                        results.push((
                            TopicPartition::new(topic.topic.0.as_str(), partition.partition_id),
                            partition.error_code,
                            partition.error_message.map(|m| m.to_string()),
                        ));
                    }
                }
                *answer.lock().expect("answer lock") = results;
                Ok(())
            }
        })
        .await?;
        Ok(answer.into_inner().expect("answer lock"))
    }

    /// DeleteTopics for one topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.at_controller(|connection| self.delete_topic_at(connection, name))
            .await?;
        self.cluster.invalidate(name);
        Ok(())
    }

    async fn delete_topic_at(
        &self,
        connection: Arc<Connection>,
        name: &str,
    ) -> Result<(), ClientError> {
        let version = connection.version::<DeleteTopicsRequest>().await?;
        let topic_name = TopicName(StrBytes::from_string(name.to_string()));
        let timeout_ms = i32::try_from(self.cluster.config.request_timeout_ms).unwrap_or(i32::MAX);
        let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
        if version >= 6 {
            req.topics = vec![DeleteTopicState::default().with_name(Some(topic_name))];
        } else {
            req.topic_names = vec![topic_name];
        }
        let response = connection.send(req, version).await?;
        let result = response
            .responses
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .ok_or_else(|| ClientError::Protocol {
                addr: connection.addr().to_string(),
                message: format!("DeleteTopics response lacks {name}"),
            })?;
        ClientError::check(result.error_code)
    }

    /// Names of all non-internal topics, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .describe_topics(None)
            .await?
            .into_iter()
            .filter(|t| !t.is_internal)
            .map(|t| t.name)
            .collect())
    }

    /// Descriptions of `names` (all topics when `None`), sorted by name.
    /// A topic that does not exist comes back with its error code set.
    pub async fn describe_topics(
        &self,
        names: Option<&[String]>,
    ) -> Result<Vec<TopicInfo>, ClientError> {
        self.cluster.refresh(names, false).await?;
        let state = lock(&self.cluster.state);
        Ok(match names {
            None => state.topics.values().cloned().collect(),
            Some(names) => {
                let mut sorted: Vec<&String> = names.iter().collect();
                sorted.sort();
                sorted.dedup();
                sorted
                    .into_iter()
                    .map(|name| {
                        state.topics.get(name).cloned().unwrap_or(TopicInfo {
                            name: name.clone(),
                            error_code: codes::UNKNOWN_TOPIC_OR_PARTITION,
                            is_internal: false,
                            partitions: Vec::new(),
                        })
                    })
                    .collect()
            }
        })
    }

    /// DescribeConfigs for one resource: a topic's configs (any broker
    /// answers), or a broker's (that broker answers), in name order.
    pub async fn describe_configs(
        &self,
        resource: ConfigResource,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::DescribeConfigsRequest;
        let (resource_type, name) = resource.type_and_name();
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configuration_keys(None),
        ]);
        let response = match resource {
            ConfigResource::Broker(node_id) => {
                self.cluster.refresh(Some(&[]), false).await?;
                self.cluster.broker_connection(node_id)?.call(req).await?
            }
            ConfigResource::Topic(_) => self.cluster.call_any(req).await?,
        };
        let result =
            response.results.into_iter().next().ok_or_else(|| {
                ClientError::Metadata("DescribeConfigs gave no result".to_string())
            })?;
        ClientError::check(result.error_code)?;
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: c.config_source,
                read_only: c.read_only,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// IncrementalAlterConfigs for one resource: each `(key, Some(value))`
    /// is set, each `(key, None)` deleted (back to its default). Any broker
    /// takes it; in a cluster it forwards to the active controller.
    pub async fn alter_configs(
        &self,
        resource: ConfigResource,
        changes: &[(String, Option<String>)],
    ) -> Result<(), ClientError> {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        let (resource_type, name) = resource.type_and_name();
        let configs = changes
            .iter()
            .map(|(key, value)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    // SET is 0, DELETE 1 (KIP-339).
                    .with_config_operation(if value.is_some() { 0 } else { 1 })
                    .with_value(value.clone().map(StrBytes::from_string))
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name))
                .with_configs(configs),
        ]);
        let response = self.cluster.call_any(req).await?;
        let result = response.responses.into_iter().next().ok_or_else(|| {
            ClientError::Metadata("IncrementalAlterConfigs gave no result".to_string())
        })?;
        check_with_message(result.error_code, result.error_message.as_ref())
    }

    /// Groups from every known broker (each coordinates some), sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        self.cluster.refresh(Some(&[]), false).await?;
        let mut groups = BTreeMap::new();
        for (_, addr) in self.cluster.brokers() {
            let connection = self.cluster.connection(&addr)?;
            let response = connection.call(ListGroupsRequest::default()).await?;
            ClientError::check(response.error_code)?;
            for group in response.groups {
                let listing = GroupListing {
                    group_id: group.group_id.0.to_string(),
                    protocol_type: group.protocol_type.to_string(),
                    state: group.group_state.to_string(),
                };
                groups.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// DescribeGroups on the group's coordinator.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription, ClientError> {
        let (_, connection) = self.coordinator(group_id).await?;
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group_id.to_string()))]);
        let response = connection.call(req).await?;
        let group = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol {
                addr: connection.addr().to_string(),
                message: "DescribeGroups response without groups".to_string(),
            })?;
        ClientError::check(group.error_code)?;
        let consumer_protocol = group.protocol_type.as_str() == "consumer";
        Ok(GroupDescription {
            group_id: group.group_id.0.to_string(),
            state: group.group_state.to_string(),
            protocol_type: group.protocol_type.to_string(),
            protocol: group.protocol_data.to_string(),
            members: group
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(|id| id.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: if consumer_protocol {
                        decode_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups on the group's coordinator: the group and its committed
    /// offsets go, durably. A group with members is NON_EMPTY_GROUP.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ClientError> {
        use kafka_protocol::messages::DeleteGroupsRequest;
        let (_, connection) = self.coordinator(group_id).await?;
        let req = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group_id.to_string()))]);
        let response = connection.call(req).await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| ClientError::Protocol {
                addr: connection.addr().to_string(),
                message: "DeleteGroups response without results".to_string(),
            })?;
        ClientError::check(result.error_code)
    }

    /// OffsetDelete on the group's coordinator: forgets the group's
    /// committed offsets of `partitions`. A topic a member of the group
    /// subscribes to is GROUP_SUBSCRIBED_TO_TOPIC.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<(), ClientError> {
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        use kafka_protocol::messages::OffsetDeleteRequest;
        let by_topic = by_topic(partitions.iter().map(|tp| (tp, tp.partition)));
        let topics = by_topic
            .into_iter()
            .map(|(topic, indexes)| {
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(
                        indexes
                            .into_iter()
                            .map(|p| {
                                OffsetDeleteRequestPartition::default().with_partition_index(p)
                            })
                            .collect(),
                    )
            })
            .collect();
        let (_, connection) = self.coordinator(group_id).await?;
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
            .with_topics(topics);
        let response = connection.call(req).await?;
        ClientError::check(response.error_code)?;
        for topic in &response.topics {
            for partition in &topic.partitions {
                ClientError::check(partition.error_code)?;
            }
        }
        Ok(())
    }

    /// OffsetCommit without a member (generation -1), as
    /// kafka-consumer-groups' `--reset-offsets --execute` does: only a group
    /// with no active members accepts it (UNKNOWN_MEMBER_ID otherwise).
    pub async fn commit_group_offsets(
        &self,
        group_id: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::OffsetCommitRequest;
        let by_topic = by_topic(offsets.iter().map(|(tp, offset)| {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*offset);
            (tp, partition)
        }));
        let topics = by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect();
        let (_, connection) = self.coordinator(group_id).await?;
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(topics);
        let response = connection.call(req).await?;
        for topic in &response.topics {
            for partition in &topic.partitions {
                ClientError::check(partition.error_code)?;
            }
        }
        Ok(())
    }

    /// Committed offsets of `group_id` for every partition it has committed.
    pub async fn group_offsets(
        &self,
        group_id: &str,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let (_, connection) = self.coordinator(group_id).await?;
        fetch_committed_offsets(&connection, group_id, None).await
    }

    async fn coordinator(&self, group_id: &str) -> Result<(i32, Arc<Connection>), ClientError> {
        // COORDINATOR_NOT_AVAILABLE is normal right after a broker starts;
        // retry for one request timeout.
        let deadline =
            Instant::now() + Duration::from_millis(self.cluster.config.request_timeout_ms);
        loop {
            match self.cluster.find_coordinator(group_id).await {
                Err(e)
                    if e.is_retriable()
                        && Instant::now() + self.cluster.retry_backoff < deadline =>
                {
                    tokio::time::sleep(self.cluster.retry_backoff).await;
                }
                other => return other,
            }
        }
    }
}

/// OffsetFetch for `partitions` (every committed partition when `None`).
/// Partitions without a committed offset are left out.
pub(crate) async fn fetch_committed_offsets(
    connection: &Connection,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
    let version = connection.version::<OffsetFetchRequest>().await?;
    let topics = match partitions {
        None if version < 2 => {
            return Err(ClientError::UnsupportedVersion {
                addr: connection.addr().to_string(),
                api_key: OffsetFetchRequest::KEY,
                min: 2,
                max: 7,
            })
        }
        None => None,
        Some(tps) => {
            let by_topic = by_topic(tps.iter().map(|tp| (tp, tp.partition)));
            Some(
                by_topic
                    .into_iter()
                    .map(|(topic, indexes)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            )
        }
    };
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_topics(topics);
    let response = connection.send(req, version).await?;
    ClientError::check(response.error_code)?;
    let mut offsets = BTreeMap::new();
    for topic in response.topics {
        for p in topic.partitions {
            ClientError::check(p.error_code)?;
            if p.committed_offset >= 0 {
                offsets.insert(
                    TopicPartition::new(topic.name.0.as_str(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(offsets)
}
