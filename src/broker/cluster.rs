//! The broker in a cluster: it runs a voter of the controller quorum,
//! applies the committed metadata log to its image, opens the partitions
//! the controller assigned to it, registers its address, and, while it
//! leads the quorum, is the active controller that writes topic records.
//!
//! Only committed records are applied, in log order, so every broker's
//! image passes through the same states. A controller write is answered
//! once this broker has applied it (the high watermark passed it with the
//! epoch it was written in), so a client that saw the answer finds the
//! topic in this broker's Metadata.
//!
//! Not here yet: partitions with more than one replica (followers fetching
//! from leaders, ISR changes, leader failover), broker heartbeats and
//! fencing, and forwarding controller requests from other brokers.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use tokio::sync::watch;

use super::partition::Partition;
use super::{Broker, Topic};
use crate::client::connection::{Connection, ConnectionConfig};
use crate::clock::SharedClock;
use crate::cluster::{ControllerQuorum, PeerQueues, ProposeError, QuorumSetup, QuorumStatus};
use crate::config::BrokerConfig;
use crate::controller::LogReport;
use crate::log::PartitionLog;
use crate::metadata::{BrokerEndpoint, MetadataRecord, PartitionImage, OFFSETS_TOPIC};
use crate::net::Connector;
use crate::observe::Fact;
use crate::quorum::LEADER_CHANGE;
use crate::replica::ReplicaConfig;
use crate::storage::SharedStorage;
use crate::topic_config::TopicConfigs;

/// How long a controller write may wait to be committed and applied before
/// the request is answered REQUEST_TIMED_OUT. Elections take a few seconds
/// at most; a write that waits longer is waiting on a lost majority.
const CONTROLLER_WRITE_TIMEOUT_MS: u64 = 10_000;

/// How often a broker checks that the controller knows its address, and
/// how often it retries while it does not.
const REGISTRATION_RETRY_MS: u64 = 500;
const REGISTRATION_CHECK_MS: u64 = 5_000;

/// Bounds on a broker-to-broker request's timeout: long enough for a held
/// follower fetch's answer to travel, short enough that a lost peer is
/// noticed well within Kafka's request timeout.
const BROKER_REQUEST_TIMEOUT_MS_MIN: u64 = 500;
const BROKER_REQUEST_TIMEOUT_MS_MAX: u64 = 30_000;

/// The CreateTopics version a broker forwards auto-creation with.
const FORWARDED_CREATE_TOPICS_VERSION: i16 = 5;

pub(super) struct ClusterState {
    pub(super) quorum: Arc<ControllerQuorum>,
    peer_queues: std::sync::Mutex<Option<PeerQueues>>,
    connector: Arc<dyn Connector>,
    /// How many metadata log entries this broker has applied to its image.
    applied: watch::Sender<u64>,
    /// Where clients reach this broker, as it registers itself.
    endpoint: RwLock<BrokerEndpoint>,
    /// Set while the controller's write of the offsets topic is in flight.
    offsets_topic_pending: AtomicBool,
    /// When the active controller next looks for partitions to hand back to
    /// their preferred leaders (`leader.imbalance.check.interval.seconds`);
    /// `i64::MIN` until its first tick.
    pub(super) next_preferred_election_ms: std::sync::atomic::AtomicI64,
    /// Set once this broker's registration in its current incarnation is
    /// applied. Until then it leads nothing: after a restart it may have
    /// lost unsynced records, and the registration takes it out of the ISRs
    /// it shared (see `MetadataRecord::BrokerIncarnation`).
    registered: AtomicBool,
    /// How long a request to another broker may take: half of
    /// `broker.session.timeout.ms`, within [`BROKER_REQUEST_TIMEOUT_MS_MIN`,
    /// `BROKER_REQUEST_TIMEOUT_MS_MAX`].
    pub(super) request_timeout_ms: u64,
    /// The quorum epoch in which this broker, leading the quorum, has
    /// applied every entry it had when elected: only then does its image
    /// hold what its predecessors decided, and only then does it judge
    /// registrations, heartbeats and ISR changes (-1: not yet).
    pub(super) caught_up_epoch: std::sync::atomic::AtomicI32,
    /// One follower fetcher per leader broker.
    pub(super) fetchers: std::sync::Mutex<BTreeMap<i32, tokio::task::JoinHandle<()>>>,
    /// The brokers' sessions while this broker is the active controller,
    /// with the quorum epoch they were started in.
    pub(super) sessions: std::sync::Mutex<Option<(i32, crate::controller::BrokerSessions)>>,
}

impl ClusterState {
    pub(super) async fn open(
        config: &BrokerConfig,
        storage: &SharedStorage,
        clock: &SharedClock,
        connector: Arc<dyn Connector>,
        observed: crate::observe::Observed,
    ) -> io::Result<ClusterState> {
        let voters: BTreeMap<i32, String> =
            config.controller_quorum_voters.iter().cloned().collect();
        let setup = QuorumSetup {
            node_id: config.node_id,
            voters,
            log_dirs: &config.log_dirs,
            log_config: &config.log,
            seed: config.quorum_seed,
        };
        let (quorum, peer_queues) =
            ControllerQuorum::open(setup, storage.clone(), clock.clone(), observed).await?;
        let (host, port) = super::split_host_port(
            config
                .advertised_listener
                .as_deref()
                .unwrap_or(&config.listener),
        );
        Ok(ClusterState {
            quorum,
            peer_queues: std::sync::Mutex::new(Some(peer_queues)),
            connector,
            applied: watch::channel(0).0,
            endpoint: RwLock::new(BrokerEndpoint {
                node_id: config.node_id,
                host,
                port,
            }),
            offsets_topic_pending: AtomicBool::new(false),
            next_preferred_election_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            registered: AtomicBool::new(false),
            request_timeout_ms: u64::try_from(config.broker_session_timeout_ms / 2)
                .unwrap_or(0)
                .clamp(BROKER_REQUEST_TIMEOUT_MS_MIN, BROKER_REQUEST_TIMEOUT_MS_MAX),
            caught_up_epoch: std::sync::atomic::AtomicI32::new(-1),
            fetchers: std::sync::Mutex::new(BTreeMap::new()),
            sessions: std::sync::Mutex::new(None),
        })
    }

    /// A broker's connection to another broker (its quorum address, or its
    /// client listener for follower fetches). Requests time out within half
    /// a broker session, so a controller that went away holds up neither
    /// registration nor heartbeats for longer than a session lasts.
    pub(super) fn broker_connection(&self, address: String, node_id: i32) -> Connection {
        Connection::new(
            address,
            Arc::clone(&self.connector),
            ConnectionConfig {
                client_id: format!("{}{node_id}", super::BROKER_CLIENT_ID_PREFIX),
                request_timeout_ms: self.request_timeout_ms,
                ..ConnectionConfig::default()
            },
        )
    }

    pub(super) fn set_endpoint(&self, endpoint: BrokerEndpoint) {
        *self.endpoint.write().expect("endpoint lock") = endpoint;
    }

    fn endpoint(&self) -> BrokerEndpoint {
        self.endpoint.read().expect("endpoint lock").clone()
    }
}

impl Broker {
    pub(super) fn cluster(&self) -> &ClusterState {
        self.cluster.as_ref().expect("called only in a cluster")
    }

    /// The quorum's tasks, the apply loop and the registration loop.
    pub(super) fn spawn_cluster(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut handles = Vec::new();
        if let Some(queues) = cluster.peer_queues.lock().expect("queues lock").take() {
            handles.extend(cluster.quorum.spawn(queues, Arc::clone(&cluster.connector)));
        }
        handles.push(tokio::spawn(apply_loop(
            Arc::downgrade(self),
            cluster.quorum.status(),
        )));
        handles.push(tokio::spawn(register_loop(Arc::downgrade(self))));
        handles.push(tokio::spawn(super::replication::replica_loop(
            Arc::downgrade(self),
        )));
        handles.push(tokio::spawn(super::active_controller::controller_loop(
            Arc::downgrade(self),
        )));
        handles
    }

    /// A clean shutdown: if this broker is the active controller it
    /// resigns and tells the other voters, so they elect a successor at
    /// once (EndQuorumEpoch) instead of after the fetch timeout.
    pub async fn resign_controller(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.quorum.resign().await;
        }
    }

    /// Whether this broker leads the quorum and has applied the metadata
    /// log it was elected with, so its image holds every earlier decision.
    pub(super) fn is_active_controller(&self) -> bool {
        match &self.cluster {
            Some(cluster) => {
                let status = cluster.quorum.current_status();
                status.leader_id == Some(self.config.node_id)
                    && cluster.caught_up_epoch.load(Ordering::Acquire) == status.epoch
            }
            None => true,
        }
    }

    /// Writes `record` through the quorum and waits until this broker has
    /// applied it. Returns the record's offset in the metadata log.
    pub(super) async fn controller_write(&self, record: MetadataRecord) -> Result<u64, i16> {
        let cluster = self.cluster();
        let (offset, epoch) = cluster
            .quorum
            .propose(record.encode())
            .await
            .map_err(|error| match error {
                ProposeError::NotLeader(_) => ResponseError::NotController.code(),
                ProposeError::Failed => ResponseError::KafkaStorageError.code(),
            })?;
        let mut applied = cluster.applied.subscribe();
        let waited = tokio::time::timeout(
            Duration::from_millis(CONTROLLER_WRITE_TIMEOUT_MS),
            applied.wait_for(|applied| *applied > offset),
        )
        .await
        .is_ok_and(|result| result.is_ok());
        if !waited {
            return Err(ResponseError::RequestTimedOut.code());
        }
        // A new leader may have replaced the entry before it committed.
        match cluster.quorum.committed(offset).await.first() {
            Some(entry) if entry.epoch == epoch => Ok(offset),
            _ => Err(ResponseError::NotController.code()),
        }
    }

    /// CreateTopics in a cluster: the active controller places each
    /// partition's replicas as `placement` says (round-robin over the
    /// registered brokers, `crate::controller::assign_replicas`, or by hand,
    /// `crate::controller::manual_assignment`) and writes the topic record.
    /// A refused manual assignment is INVALID_REPLICA_ASSIGNMENT with
    /// Kafka's message.
    pub(super) async fn create_topic_in_cluster(
        &self,
        name: &str,
        placement: Placement,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let _admin = self.topic_admin.lock().await;
        let code = |error: ResponseError| (error.code(), String::new());
        if !self.is_active_controller() {
            return Err(code(ResponseError::NotController));
        }
        let (exists, brokers, topic_count) = self.with_metadata(|image| {
            (
                image.topic(name).is_some(),
                image.brokers().map(|b| b.node_id).collect::<Vec<_>>(),
                image.topic_names().len(),
            )
        });
        if exists {
            return Err(code(ResponseError::TopicAlreadyExists));
        }
        let partitions = match placement {
            Placement::Spread {
                partition_count,
                replication_factor,
            } => {
                let replication_factor = usize::try_from(replication_factor).unwrap_or(0);
                if replication_factor == 0 || replication_factor > brokers.len() {
                    return Err((
                        ResponseError::InvalidReplicationFactor.code(),
                        format!(
                            "replication factor {replication_factor} is more than the brokers available"
                        ),
                    ));
                }
                // Start each topic on the next broker, so small topics spread too.
                crate::controller::assign_replicas(
                    &brokers,
                    partition_count as usize,
                    replication_factor,
                    topic_count,
                )
            }
            Placement::Manual(assignments) => {
                let registered = brokers.iter().copied().collect();
                crate::controller::manual_assignment(&assignments, &registered)
                    .map_err(|message| (ResponseError::InvalidReplicaAssignment.code(), message))?
            }
        };
        if validate_only {
            return Ok(());
        }
        self.controller_write(MetadataRecord::Topic {
            name: name.to_string(),
            internal: false,
            partitions,
            configs,
        })
        .await
        .map(|_| ())
        .map_err(|error| (error, String::new()))
    }

    pub(super) async fn delete_topic_in_cluster(&self, name: &str) -> Result<(), i16> {
        let _admin = self.topic_admin.lock().await;
        if !self.is_active_controller() {
            return Err(ResponseError::NotController.code());
        }
        if self.with_metadata(|image| image.topic(name).is_none()) {
            return Err(ResponseError::UnknownTopicOrPartition.code());
        }
        self.controller_write(MetadataRecord::RemoveTopic {
            name: name.to_string(),
        })
        .await
        .map(|_| ())
    }

    /// Sends CreateTopics for an auto-created topic to the active
    /// controller, in the background; the client's next Metadata finds the
    /// topic once this broker has applied the record. A topic that exists
    /// by then is no error.
    pub(super) fn forward_create_topic(&self, name: &str, partition_count: i32) {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let Some(cluster) = &self.cluster else {
            return;
        };
        let leader = cluster.quorum.current_status().leader_id;
        let Some(address) = leader.and_then(|id| cluster.quorum.voters().get(&id).cloned()) else {
            return;
        };
        let connection = cluster.broker_connection(address, self.config.node_id);
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(CONTROLLER_WRITE_TIMEOUT_MS as i32)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(partition_count)
                .with_replication_factor(-1)]);
        let topic = name.to_string();
        tokio::spawn(async move {
            if let Err(error) = connection
                .send(request, FORWARDED_CREATE_TOPICS_VERSION)
                .await
            {
                tracing::debug!(%topic, %error, "forwarding an auto-created topic failed");
            }
            connection.close().await;
        });
    }

    /// Sends `request` to the active controller at `version` and returns
    /// its answer: how a broker that is not the controller serves an admin
    /// request only the controller can carry out.
    pub(super) async fn forward_to_controller<R>(
        &self,
        request: R,
        version: i16,
    ) -> Result<R::Response, String>
    where
        R: kafka_protocol::protocol::Request,
    {
        let cluster = self.cluster();
        let leader = cluster.quorum.current_status().leader_id;
        let address = leader
            .filter(|id| *id != self.config.node_id)
            .and_then(|id| cluster.quorum.voters().get(&id).cloned())
            .ok_or_else(|| "no other broker is the active controller".to_string())?;
        let connection = cluster.broker_connection(address, self.config.node_id);
        let answer = connection
            .send(request, version)
            .await
            .map_err(|error| error.to_string());
        connection.close().await;
        answer
    }

    /// Applies one committed record to the image, then opens or deletes the
    /// partitions it gives to or takes from this broker, and takes on the
    /// leaderships it records.
    async fn apply_record(self: &Arc<Self>, record: MetadataRecord) {
        let applied = self.metadata.write().expect("metadata lock").apply(&record);
        if let Err(error) = applied {
            tracing::warn!(
                ?record,
                ?error,
                "a committed metadata record was refused by the image"
            );
            return;
        }
        match record {
            MetadataRecord::Topic {
                name, partitions, ..
            } => self.open_hosted_partitions(&name, &partitions, 0).await,
            MetadataRecord::AddPartitions { topic, partitions } => {
                // The image now holds them after the topic's earlier ones.
                let count =
                    self.with_metadata(|image| image.topic(&topic).map(|t| t.partitions.len()));
                let first = count.unwrap_or(0).saturating_sub(partitions.len());
                self.open_hosted_partitions(&topic, &partitions, first)
                    .await
            }
            MetadataRecord::RemoveTopic { name } => {
                // The coordinator tombstones the topic's committed offsets;
                // a broker that is not coordinating has none to drop.
                if self.coordinator_loaded() {
                    self.coordinate(|coordinator, _| coordinator.remove_topic(&name, None));
                }
                let removed = self.topics.write().expect("topics lock").remove(&name);
                for partition in removed.iter().flat_map(|t| t.partitions.values()) {
                    if let Err(error) = partition.delete().await {
                        tracing::error!(topic = %name, partition = partition.index, %error, "deleting partition files failed");
                    }
                }
            }
            MetadataRecord::PartitionChange {
                topic, partition, ..
            } => self.take_leadership(&topic, Some(partition)).await,
            MetadataRecord::TopicConfigs { name, .. } => self.apply_topic_settings(&name).await,
            MetadataRecord::BrokerIncarnation {
                node_id,
                incarnation,
            } => {
                self.observed.report(|| Fact::BrokerRegistered {
                    node_id,
                    incarnation,
                });
                if node_id == self.config.node_id && incarnation == self.incarnation {
                    self.cluster().registered.store(true, Ordering::Release);
                }
                for topic in self.with_metadata(|image| image.all_topic_names()) {
                    self.take_leadership(&topic, None).await;
                }
            }
            _ => {}
        }
        // Any of these may have moved the offsets partition's leadership.
        self.sync_coordinator().await;
    }

    /// What this broker's replicas hold: each partition's last epoch and log
    /// end, for its registration (`controller::restart_handovers`).
    pub(super) async fn log_report(&self) -> LogReport {
        let mut report = LogReport::new();
        for partition in self.all_partitions() {
            if let Ok(position) = partition.fetch_position().await {
                let key = (partition.topic.clone(), partition.index);
                report.insert(key, (position.last_fetched_epoch, position.log_end_offset));
            }
        }
        report
    }

    /// Whether this broker's registration in its current incarnation has
    /// been applied (always, outside a cluster).
    pub(super) fn is_registered(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|cluster| cluster.registered.load(Ordering::Acquire))
    }

    /// The leadership this broker takes on for a partition, with the
    /// partition's epoch: the image's, or, until its registration is
    /// applied, none (a follower of -1, which fetches from nobody and serves
    /// nothing).
    fn leadership(&self, topic: &str, index: i32) -> Option<(PartitionImage, i32)> {
        let (mut leadership, partition_epoch) = self.with_metadata(|image| {
            let leadership = image
                .topic(topic)?
                .partitions
                .get(usize::try_from(index).ok()?)
                .cloned()?;
            Some((leadership, image.partition_epoch(topic, index)))
        })?;
        if !self.is_registered() {
            leadership.leader_id = -1;
        }
        Some((leadership, partition_epoch))
    }

    /// Brings the roles of this broker's replicas of `topic` (or of one of
    /// its partitions) in line with the image, and starts the fetchers its
    /// followers need.
    async fn take_leadership(self: &Arc<Self>, topic: &str, only: Option<i32>) {
        let Some(hosted) = self.topic(topic) else {
            return;
        };
        let now_ms = self.clock.now_ms();
        for (index, partition) in &hosted.partitions {
            if only.is_some_and(|wanted| wanted != *index) {
                continue;
            }
            let Some((leadership, partition_epoch)) = self.leadership(topic, *index) else {
                continue;
            };
            partition
                .apply_leadership((&leadership, partition_epoch), now_ms)
                .await;
            self.ensure_fetcher(partition.leader_id());
        }
        self.notify_data_arrived();
    }

    fn replica_config(&self) -> ReplicaConfig {
        ReplicaConfig {
            node_id: self.config.node_id,
            flush_on_ack: self.config.log.flush_on_ack,
            min_insync_replicas: self.config.min_insync_replicas,
            replica_lag_time_max_ms: self.config.replica_lag_time_max_ms,
        }
    }

    /// Opens the replicas this broker hosts of `partitions`, the topic's
    /// partitions from index `first` on, beside any it already hosts.
    async fn open_hosted_partitions(
        self: &Arc<Self>,
        name: &str,
        partitions: &[PartitionImage],
        first: usize,
    ) {
        let node_id = self.config.node_id;
        let now_ms = self.clock.now_ms();
        let mut hosted = self
            .topic(name)
            .map(|topic| topic.partitions.clone())
            .unwrap_or_default();
        for (offset, partition) in partitions.iter().enumerate() {
            if !partition.replicas.contains(&node_id) {
                continue;
            }
            let index = (first + offset) as i32;
            let Some((leadership, partition_epoch)) = self.leadership(name, index) else {
                continue;
            };
            let dir = self.config.log_dirs.join(format!("{name}-{index}"));
            // The offsets log keeps its own settings, and its facts stay
            // out of the harness's history, which is about clients' topics.
            let mut replica_config = self.replica_config();
            let (log_config, observed) = if name == OFFSETS_TOPIC {
                (
                    super::offsets::log_config(&self.config.log),
                    crate::observe::Observed::none(),
                )
            } else {
                let configs = self.topic_configs(name).unwrap_or_default();
                let settings = self.topic_settings(&configs);
                replica_config.min_insync_replicas = settings.min_insync_replicas;
                (settings.log, self.observed.clone())
            };
            replica_config.flush_on_ack = log_config.flush_on_ack;
            match PartitionLog::open(self.storage.clone(), &dir, log_config, now_ms).await {
                Ok(mut log) => {
                    // Recovery sets the high watermark to the log end, which
                    // is right for a lone replica. A replica of a cluster may
                    // hold records that were never committed (it led, and
                    // lost the lead before its followers had them), and it
                    // keeps no high-watermark checkpoint as Kafka does: only
                    // its log start is known committed until a leader's
                    // fetch response says more. Elected first, it advances
                    // from there as its ISR fetches, never exposing what
                    // the ISR lacks.
                    log.set_high_watermark(log.log_start_offset());
                    super::report_recovered(&observed, name, index, &log, true);
                    hosted.insert(
                        index,
                        Arc::new(Partition::replicated(
                            (name.to_string(), index),
                            log,
                            replica_config,
                            (&leadership, partition_epoch),
                            now_ms,
                            observed,
                        )),
                    );
                }
                Err(error) => {
                    tracing::error!(topic = name, partition = index, %error, "opening a partition failed")
                }
            }
        }
        if let Err(error) = self.storage.sync_dir(&self.config.log_dirs).await {
            tracing::error!(topic = name, %error, "syncing the data directory failed");
        }
        tracing::info!(topic = name, partitions = hosted.len(), "hosting topic");
        let leaders: Vec<i32> = hosted.values().map(|p| p.leader_id()).collect();
        self.topics.write().expect("topics lock").insert(
            name.to_string(),
            Arc::new(Topic {
                name: name.to_string(),
                partitions: hosted,
            }),
        );
        for leader_id in leaders {
            self.ensure_fetcher(leader_id);
        }
    }

    /// What the active controller does unasked: create the offsets topic
    /// once `offsets.topic.replication.factor` brokers have registered to
    /// hold it (as Kafka does; until then groups are unavailable).
    fn controller_duties(self: &Arc<Self>, status: QuorumStatus) {
        if status.leader_id != Some(self.config.node_id) {
            return;
        }
        let replication_factor =
            usize::try_from(self.config.offsets_topic_replication_factor).unwrap_or(1);
        let placement = self.with_metadata(|image| {
            if image.topic(OFFSETS_TOPIC).is_some() {
                return None;
            }
            let brokers: Vec<i32> = image.brokers().map(|b| b.node_id).collect();
            if brokers.len() < replication_factor {
                tracing::debug!(
                    registered = brokers.len(),
                    replication_factor,
                    "waiting for enough brokers to create the offsets topic"
                );
                return None;
            }
            Some(crate::controller::assign_replicas(
                &brokers,
                1,
                replication_factor,
                0,
            ))
        });
        let Some(partitions) = placement else {
            return;
        };
        let cluster = self.cluster();
        if cluster.offsets_topic_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let broker = Arc::clone(self);
        tokio::spawn(async move {
            let record = MetadataRecord::Topic {
                name: OFFSETS_TOPIC.to_string(),
                internal: true,
                partitions,
                configs: TopicConfigs::new(),
            };
            if let Err(code) = broker.controller_write(record).await {
                tracing::info!(
                    code,
                    "creating the offsets topic did not commit; will retry"
                );
            }
            broker
                .cluster()
                .offsets_topic_pending
                .store(false, Ordering::Release);
        });
    }
}

/// Applies committed metadata records as the quorum's high watermark moves.
async fn apply_loop(broker: Weak<Broker>, mut status: watch::Receiver<QuorumStatus>) {
    let mut applied = 0u64;
    loop {
        let current = *status.borrow_and_update();
        {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            broker
                .metadata
                .write()
                .expect("metadata lock")
                .set_controller_id(current.leader_id.unwrap_or(-1));
            let cluster = broker.cluster();
            let entries = cluster.quorum.committed(applied).await;
            for entry in entries {
                applied += 1;
                broker.observed.report(|| Fact::MetadataApplied {
                    offset: applied - 1,
                    epoch: entry.epoch,
                    digest: crc32c::crc32c(&entry.payload),
                });
                if entry.payload.as_ref() == LEADER_CHANGE {
                    continue;
                }
                match MetadataRecord::decode(&entry.payload) {
                    Ok(record) => broker.apply_record(record).await,
                    Err(error) => {
                        tracing::error!(offset = applied - 1, %error, "skipping a metadata record")
                    }
                }
            }
            cluster.applied.send_if_modified(|count| {
                let moved = *count != applied;
                *count = applied;
                moved
            });
            if current.leader_id == Some(broker.config.node_id) && applied >= current.log_end_offset
            {
                cluster
                    .caught_up_epoch
                    .store(current.epoch, Ordering::Release);
            }
            broker.controller_duties(current);
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Makes sure the controller has this broker's address and incarnation:
/// sends BrokerRegistration to the active controller until the image shows
/// both.
async fn register_loop(broker: Weak<Broker>) {
    let mut connections: BTreeMap<i32, Connection> = BTreeMap::new();
    loop {
        let registered = {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let cluster = broker.cluster();
            let endpoint = cluster.endpoint();
            let incarnation = broker.incarnation;
            let known = broker.with_metadata(|image| {
                image.broker(endpoint.node_id) == Some(&endpoint)
                    && image.incarnation(endpoint.node_id) == Some(incarnation)
            });
            if known {
                true
            } else {
                match cluster.quorum.current_status().leader_id {
                    None => false,
                    Some(leader) if leader == broker.config.node_id => {
                        let report = broker.log_report().await;
                        broker
                            .register_broker(endpoint, incarnation, report)
                            .await
                            .is_ok()
                    }
                    Some(leader) => {
                        let address = cluster.quorum.voters().get(&leader).cloned();
                        let Some(address) = address else {
                            return;
                        };
                        let connection = connections.entry(leader).or_insert_with(|| {
                            cluster.broker_connection(address, broker.config.node_id)
                        });
                        let report = broker.log_report().await;
                        send_registration(connection, &endpoint, incarnation, &report).await
                    }
                }
            }
        };
        let pause = if registered {
            REGISTRATION_CHECK_MS
        } else {
            REGISTRATION_RETRY_MS
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn send_registration(
    connection: &Connection,
    endpoint: &BrokerEndpoint,
    incarnation: u64,
    report: &LogReport,
) -> bool {
    use kafka_protocol::messages::broker_registration_request::Listener;
    use kafka_protocol::messages::{BrokerId, BrokerRegistrationRequest};
    use kafka_protocol::protocol::StrBytes;
    let request = BrokerRegistrationRequest::default()
        .with_broker_id(BrokerId(endpoint.node_id))
        .with_cluster_id(StrBytes::from_static_str(super::CLUSTER_ID))
        .with_incarnation_id(incarnation_id(endpoint.node_id, incarnation))
        .with_listeners(vec![Listener::default()
            .with_name(StrBytes::from_static_str("PLAINTEXT"))
            .with_host(StrBytes::from_string(endpoint.host.clone()))
            .with_port(u16::try_from(endpoint.port).unwrap_or(0))])
        .with_unknown_tagged_fields(BTreeMap::from([(
            LOG_REPORT_TAG,
            encode_log_report(report),
        )]));
    match connection
        .send(request, super::api::BROKER_REGISTRATION_VERSION)
        .await
    {
        Ok(response) if response.error_code == 0 => true,
        Ok(response) => {
            tracing::debug!(code = response.error_code, "broker registration refused");
            false
        }
        Err(error) => {
            tracing::debug!(%error, "broker registration failed");
            false
        }
    }
}

/// How CreateTopics places a new topic's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `partition_count` partitions of `replication_factor` replicas,
    /// spread round-robin over the registered brokers.
    Spread {
        partition_count: i32,
        replication_factor: i16,
    },
    /// By hand: `(partition index, replica node ids)`, the first leading.
    Manual(Vec<(i32, Vec<i32>)>),
}

/// The tagged field of BrokerRegistration in which a broker reports what its
/// logs hold (`controller::LogReport`), a field of sluice's own: Kafka's
/// controller learns replicas' log ends only in KIP-966's unclean recovery,
/// and another broker skips an unknown tag.
const LOG_REPORT_TAG: i32 = 10_966;

/// At most this many partitions are reported (and decoded): far more than
/// a broker hosts, small enough to bound the request.
const LOG_REPORT_PARTITIONS_MAX: usize = 100_000;

/// The report as bytes: a count, then per partition the topic name
/// (length-prefixed), the partition index, the last epoch and the log end.
fn encode_log_report(report: &LogReport) -> bytes::Bytes {
    use bytes::BufMut;
    let mut buf = bytes::BytesMut::new();
    let entries: Vec<_> = report.iter().take(LOG_REPORT_PARTITIONS_MAX).collect();
    buf.put_u32(entries.len() as u32);
    for ((topic, partition), (epoch, log_end_offset)) in entries {
        let name = topic.as_bytes();
        buf.put_u16(u16::try_from(name.len()).unwrap_or(0));
        buf.put_slice(&name[..usize::from(u16::try_from(name.len()).unwrap_or(0))]);
        buf.put_i32(*partition);
        buf.put_i32(*epoch);
        buf.put_i64(*log_end_offset);
    }
    buf.freeze()
}

/// The report a registration carries, or None when it carries none (or one
/// that does not decode).
pub(super) fn decode_log_report(tagged: &BTreeMap<i32, bytes::Bytes>) -> Option<LogReport> {
    use bytes::Buf;
    let mut buf = tagged.get(&LOG_REPORT_TAG)?.clone();
    let count = usize::try_from(buf.try_get_u32().ok()?).ok()?;
    if count > LOG_REPORT_PARTITIONS_MAX {
        return None;
    }
    let mut report = LogReport::new();
    for _ in 0..count {
        let length = usize::from(buf.try_get_u16().ok()?);
        if buf.remaining() < length {
            return None;
        }
        let topic = String::from_utf8(buf.split_to(length).to_vec()).ok()?;
        let partition = buf.try_get_i32().ok()?;
        let epoch = buf.try_get_i32().ok()?;
        let log_end_offset = buf.try_get_i64().ok()?;
        report.insert((topic, partition), (epoch, log_end_offset));
    }
    Some(report)
}

/// A broker's incarnation as BrokerRegistration carries it: its node id and
/// its persisted start count.
pub(super) fn incarnation_id(node_id: i32, incarnation: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(node_id as u64, incarnation)
}

/// The start count in an incarnation id.
pub(super) fn incarnation_of(id: uuid::Uuid) -> u64 {
    id.as_u64_pair().1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_report_survives_its_tagged_field_and_garbage_is_refused() {
        let report = LogReport::from([
            (("orders".to_string(), 0), (3, 120)),
            (("__consumer_offsets".to_string(), 0), (-1, 0)),
        ]);
        let tagged = BTreeMap::from([(LOG_REPORT_TAG, encode_log_report(&report))]);
        assert_eq!(decode_log_report(&tagged), Some(report));
        assert_eq!(decode_log_report(&BTreeMap::new()), None);
        let truncated = BTreeMap::from([(
            LOG_REPORT_TAG,
            bytes::Bytes::from_static(&[0, 0, 0, 1, 0, 9, b'x']),
        )]);
        assert_eq!(decode_log_report(&truncated), None);
    }
}
