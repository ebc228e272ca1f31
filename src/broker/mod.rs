//! The broker: topics and partitions, the request handler, the group
//! coordinator's shell, and the background work (group timers, flushes,
//! retention).
//!
//! Everything here is shared by the real binary and the simulation: storage,
//! clock and network come in as seams; time-based work runs on `tokio::time`.

mod active_controller;
mod api;
mod cluster;
mod configs;
mod create_partitions;
mod offsets;
pub mod partition;
mod replication;
pub mod wire;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::SharedClock;
use crate::config::BrokerConfig;
use crate::group::{Effect, GroupCoordinator, JoinResult, SyncResult, WaiterId};
use crate::log::PartitionLog;
use crate::metadata::{BrokerEndpoint, MetadataImage, PartitionImage};
use crate::observe::{Fact, Observed};
use crate::storage::SharedStorage;
use crate::topic_config::TopicConfigs;

pub use api::HandleOutcome;
pub use cluster::Placement;
use partition::Partition;

pub use crate::metadata::OFFSETS_TOPIC;

/// The cluster id Metadata reports. One fixed id until a cluster is
/// formatted with its own.
const CLUSTER_ID: &str = "sluice";

/// Producer ids are reserved in blocks; the block's end is persisted before
/// any id in it is handed out, so ids never repeat across restarts.
const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
const PRODUCER_ID_BLOCK_FILE: &str = "producer_id_block";

/// In a cluster, broker `n` hands out producer ids from `n << 32`: 2^32 ids
/// per broker before ranges could meet, far more than a broker's lifetime
/// of InitProducerId calls.
const PRODUCER_ID_NODE_SHIFT: u32 = 32;

/// Counts the broker's starts; each start persists the next number before
/// serving, and group member ids carry it, so no member id handed out after
/// a restart can equal one handed out before.
const INCARNATION_FILE: &str = "broker_incarnation";

/// How a broker's requests to another broker name themselves (then its node
/// id), so a forwarded admin request is not forwarded again.
pub const BROKER_CLIENT_ID_PREFIX: &str = "sluice-broker-";

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// How often group timers (session expiry, rebalance deadlines) are checked.
/// Timeouts are in seconds, so a tenth of a second keeps them sharp.
const GROUP_TICK_MS: u64 = 100;

/// Upper bound on partitions per topic, so one request cannot exhaust memory
/// or file handles.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

pub struct Topic {
    pub name: String,
    /// The partitions this broker holds a replica of, by index: all of them
    /// on a single node, those the controller assigned here in a cluster.
    pub partitions: BTreeMap<i32, Arc<Partition>>,
}

/// Callers parked until the coordinator answers them: JoinGroup,
/// SyncGroup, OffsetCommit (until durable) and topic deletion (until the
/// offsets' tombstones are durable).
#[derive(Default)]
struct Waiters {
    joins: BTreeMap<WaiterId, oneshot::Sender<JoinResult>>,
    syncs: BTreeMap<WaiterId, oneshot::Sender<SyncResult>>,
    commits: BTreeMap<WaiterId, oneshot::Sender<Result<(), i16>>>,
    persists: BTreeMap<WaiterId, oneshot::Sender<Result<(), i16>>>,
}

struct ProducerIds {
    next: i64,
    block_end: i64,
}

pub struct Broker {
    config: BrokerConfig,
    storage: SharedStorage,
    clock: SharedClock,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation and deletion, which do async file work.
    topic_admin: tokio::sync::Mutex<()>,
    coordinator: Mutex<GroupCoordinator>,
    waiters: Mutex<Waiters>,
    next_waiter: AtomicU64,
    /// Numbers connections in accept order, from 1.
    next_connection: AtomicU64,
    /// Whether the coordinator serves groups: while this broker leads the
    /// offsets partition and has loaded it (see [`offsets`]).
    coordinator_load: Mutex<offsets::CoordinatorLoad>,
    /// The coordinator's writes, in its order, for [`offsets::persist_loop`].
    persist_queue: mpsc::Sender<offsets::PersistRequest>,
    producer_ids: tokio::sync::Mutex<ProducerIds>,
    /// Bumped whenever a high watermark moves, to wake long-polling fetches.
    data_arrived: watch::Sender<u64>,
    /// The cluster as Metadata, FindCoordinator and CreateTopics see it. The
    /// broker's own endpoint in it is set once the listener is bound.
    metadata: RwLock<MetadataImage>,
    /// Who hears the broker's facts (the simulation's recorder); nobody in
    /// the real binary.
    observed: Observed,
    /// The controller quorum, when `controller.quorum.voters` names more
    /// than this broker: then topics come from the metadata log.
    cluster: Option<cluster::ClusterState>,
    /// The topics a single node's `topic_configs` file names, as last read
    /// or written (orphans of a cut-short creation or deletion included),
    /// so a change that would not alter the file skips writing it.
    config_file_topics: Mutex<std::collections::BTreeSet<String>>,
    /// This broker's start count, persisted before serving; in a cluster
    /// it registers with it, and a new one tells the controller the broker
    /// restarted.
    incarnation: u64,
}

/// Splits `topic-3` into ("topic", 3).
fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    if topic.is_empty() || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), index.parse().ok()?))
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TOPIC_NAME_MAX_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn split_host_port(address: &str) -> (String, i32) {
    match address.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(['[', ']']).to_string(),
            port.parse().unwrap_or(9092),
        ),
        None => (address.to_string(), 9092),
    }
}

impl Broker {
    /// Opens the data directory, recovering every partition log, the offsets
    /// log and the producer-id block.
    pub async fn open(
        config: BrokerConfig,
        storage: SharedStorage,
        clock: SharedClock,
    ) -> io::Result<Arc<Self>> {
        Self::open_observed(
            config,
            storage,
            clock,
            Arc::new(crate::net::TcpConnector),
            Observed::none(),
        )
        .await
    }

    /// [`Broker::open`], dialling other brokers through `connector` and
    /// reporting facts to `observed`.
    pub async fn open_observed(
        config: BrokerConfig,
        storage: SharedStorage,
        clock: SharedClock,
        connector: Arc<dyn crate::net::Connector>,
        observed: Observed,
    ) -> io::Result<Arc<Self>> {
        let data_dir = config.log_dirs.clone();
        storage.create_dir(&data_dir).await.map_err(|error| {
            io::Error::new(error.kind(), format!("{}: {error}", data_dir.display()))
        })?;
        let now_ms = clock.now_ms();
        let clustered = config.controller_quorum_voters.len() > 1;
        let mut found: BTreeMap<String, BTreeMap<i32, PathBuf>> = BTreeMap::new();
        // In a cluster the metadata log says which partitions live here; the
        // directories are opened as its records are applied.
        let names = if clustered {
            Vec::new()
        } else {
            storage.list(&data_dir).await?
        };
        let has_config_file = names.iter().any(|name| name == configs::TOPIC_CONFIGS_FILE);
        for name in names {
            if let Some((topic, index)) = parse_partition_dir(&name) {
                if topic != OFFSETS_TOPIC && valid_topic_name(&topic) {
                    found
                        .entry(topic)
                        .or_default()
                        .insert(index, data_dir.join(&name));
                }
            }
        }
        let (host, port) = split_host_port(
            config
                .advertised_listener
                .as_deref()
                .unwrap_or(&config.listener),
        );
        let node_id = config.node_id;
        let mut metadata = if clustered {
            MetadataImage::empty(CLUSTER_ID)
        } else {
            MetadataImage::single_node(
                CLUSTER_ID,
                BrokerEndpoint {
                    node_id,
                    host,
                    port,
                },
            )
        };
        let mut topics = BTreeMap::new();
        let mut max_producer_id = -1;
        // A single node's topic overrides; a cluster's come with its topics
        // from the metadata log. Entries for topics with no directories
        // (a creation or deletion cut short) are dropped here.
        let mut stored_configs = if has_config_file {
            configs::load(storage.as_ref(), &data_dir).await?
        } else {
            BTreeMap::new()
        };
        let config_file_topics = stored_configs.keys().cloned().collect();
        for (name, partitions) in found {
            let count = partitions.keys().next_back().map_or(0, |last| last + 1);
            let topic_configs = stored_configs.remove(&name).unwrap_or_default();
            let settings = crate::topic_config::settings(&config, &topic_configs);
            let mut opened = BTreeMap::new();
            for index in 0..count {
                let dir = data_dir.join(format!("{name}-{index}"));
                let log = PartitionLog::open(storage.clone(), &dir, settings.log.clone(), now_ms)
                    .await
                    .map_err(|error| {
                        io::Error::other(format!("opening {}: {error}", dir.display()))
                    })?;
                max_producer_id = max_producer_id.max(log.max_producer_id().unwrap_or(-1));
                report_recovered(&observed, &name, index, &log, false);
                let partition = Partition::new(name.clone(), index, log, node_id, observed.clone());
                partition.apply_settings(&settings).await;
                opened.insert(index, Arc::new(partition));
            }
            tracing::info!(topic = %name, partitions = count, "loaded topic");
            metadata
                .add_topic_with_configs(
                    &name,
                    false,
                    vec![PartitionImage::single_replica(node_id); count as usize],
                    topic_configs,
                )
                .map_err(|error| io::Error::other(format!("loading topic {name}: {error:?}")))?;
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    name,
                    partitions: opened,
                }),
            );
        }
        let incarnation =
            read_number_file(storage.as_ref(), &data_dir, INCARNATION_FILE).await? + 1;
        write_number_file(storage.as_ref(), &data_dir, INCARNATION_FILE, incarnation).await?;
        if !clustered {
            // A single node leads the offsets topic's one partition; in a
            // cluster it is hosted where the controller places it.
            let offsets_dir = data_dir.join(format!("{OFFSETS_TOPIC}-0"));
            let offsets_log = PartitionLog::open(
                storage.clone(),
                &offsets_dir,
                offsets::log_config(&config.log),
                now_ms,
            )
            .await
            .map_err(|error| io::Error::other(format!("opening the offsets log: {error}")))?;
            topics.insert(
                OFFSETS_TOPIC.to_string(),
                Arc::new(Topic {
                    name: OFFSETS_TOPIC.to_string(),
                    partitions: BTreeMap::from([(
                        0,
                        Arc::new(Partition::new(
                            OFFSETS_TOPIC.to_string(),
                            0,
                            offsets_log,
                            node_id,
                            Observed::none(),
                        )),
                    )]),
                }),
            );
        }
        let persisted_block_end =
            read_number_file(storage.as_ref(), &data_dir, PRODUCER_ID_BLOCK_FILE).await?;
        let next = if clustered {
            // Every broker hands out producer ids, so each takes its own
            // range, node.id in the high 32 bits, and its persisted block
            // alone keeps ids from repeating across restarts. (The logs'
            // largest id may be another broker's.)
            persisted_block_end.max(i64::from(node_id) << PRODUCER_ID_NODE_SHIFT)
        } else {
            persisted_block_end.max(max_producer_id + 1)
        };
        let (data_arrived, _) = watch::channel(0);
        let (persist_queue, persist_requests) = mpsc::channel(offsets::PERSIST_QUEUE_MAX);
        let cluster = if clustered {
            Some(
                cluster::ClusterState::open(&config, &storage, &clock, connector, observed.clone())
                    .await?,
            )
        } else {
            None
        };
        let broker = Arc::new(Self {
            storage,
            clock,
            topics: RwLock::new(topics),
            topic_admin: tokio::sync::Mutex::new(()),
            coordinator: Mutex::new(GroupCoordinator::default()),
            waiters: Mutex::new(Waiters::default()),
            next_waiter: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            coordinator_load: Mutex::new(offsets::CoordinatorLoad::default()),
            persist_queue,
            producer_ids: tokio::sync::Mutex::new(ProducerIds {
                next,
                block_end: next,
            }),
            data_arrived,
            metadata: RwLock::new(metadata),
            config_file_topics: Mutex::new(config_file_topics),
            config,
            observed,
            cluster,
            incarnation: incarnation as u64,
        });
        tokio::spawn(offsets::persist_loop(
            Arc::downgrade(&broker),
            persist_requests,
        ));
        // A single node loads its groups before it serves anything.
        broker.sync_coordinator().await;
        Ok(broker)
    }

    /// The facts' destination, for the request handlers.
    pub(crate) fn observed(&self) -> &Observed {
        &self.observed
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Sets the address Metadata and FindCoordinator advertise (the bound
    /// address, unless `advertised.listeners` says otherwise).
    pub fn set_bound_address(&self, address: &str) {
        if self.config.advertised_listener.is_none() {
            let (host, port) = split_host_port(address);
            let endpoint = BrokerEndpoint {
                node_id: self.config.node_id,
                host,
                port,
            };
            match &self.cluster {
                // A cluster learns addresses from registrations.
                Some(cluster) => cluster.set_endpoint(endpoint),
                None => self
                    .metadata
                    .write()
                    .expect("metadata lock")
                    .set_endpoint(endpoint),
            }
        }
    }

    /// A requested replication factor, -1 meaning `default.replication.factor`.
    pub fn replication_factor(&self, requested: i16) -> i16 {
        if requested == -1 {
            self.config.default_replication_factor
        } else {
            requested
        }
    }

    /// Reads the metadata image.
    fn with_metadata<R>(&self, read: impl FnOnce(&MetadataImage) -> R) -> R {
        read(&self.metadata.read().expect("metadata lock"))
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.topic(topic)?.partitions.get(&index).cloned()
    }

    /// Creates a topic with `replication_factor` replicas per partition
    /// (-1: `default.replication.factor`). Errors are Kafka error codes.
    pub async fn create_topic(
        &self,
        name: &str,
        partition_count: i32,
        replication_factor: i16,
        validate_only: bool,
    ) -> Result<(), i16> {
        let placement = Placement::Spread {
            partition_count,
            replication_factor,
        };
        self.create_topic_placed(name, placement, TopicConfigs::new(), validate_only)
            .await
            .map_err(|(code, _)| code)
    }

    /// Creates a topic whose replicas are placed as `placement` says, with
    /// the configuration overrides `configs` (validated by the caller).
    /// Errors are Kafka error codes, with a message where Kafka gives one.
    pub async fn create_topic_placed(
        &self,
        name: &str,
        placement: Placement,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        use kafka_protocol::error::ResponseError;
        let code = |error: ResponseError| (error.code(), String::new());
        if !valid_topic_name(name) || name.starts_with("__") {
            return Err(code(ResponseError::InvalidTopicException));
        }
        let partition_count = match &placement {
            Placement::Spread {
                partition_count, ..
            } => *partition_count,
            Placement::Manual(assignments) => i32::try_from(assignments.len()).unwrap_or(i32::MAX),
        };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partition_count) {
            return Err(code(ResponseError::InvalidPartitions));
        }
        let placement = match placement {
            Placement::Spread {
                partition_count,
                replication_factor,
            } => Placement::Spread {
                partition_count,
                replication_factor: self.replication_factor(replication_factor),
            },
            manual => manual,
        };
        if self.cluster.is_some() {
            return self
                .create_topic_in_cluster(name, placement, configs, validate_only)
                .await;
        }
        // One broker holds one replica of each partition.
        match &placement {
            Placement::Spread {
                replication_factor, ..
            } if *replication_factor != 1 => {
                return Err((
                    ResponseError::InvalidReplicationFactor.code(),
                    format!(
                        "replication factor {replication_factor} is more than the brokers available"
                    ),
                ));
            }
            Placement::Manual(assignments) => {
                let registered = std::collections::BTreeSet::from([self.config.node_id]);
                crate::controller::manual_assignment(assignments, &registered)
                    .map_err(|message| (ResponseError::InvalidReplicaAssignment.code(), message))?;
            }
            Placement::Spread { .. } => {}
        }
        let _admin = self.topic_admin.lock().await;
        if self.topic(name).is_some() {
            return Err(code(ResponseError::TopicAlreadyExists));
        }
        if validate_only {
            return Ok(());
        }
        // The overrides are durable before any directory exists, so a
        // topic never comes back from a crash without them.
        if let Err(error) = self.save_topic_configs(Some((name, &configs))).await {
            tracing::error!(topic = name, %error, "persisting topic configs failed");
            return Err(code(ResponseError::KafkaStorageError));
        }
        let settings = self.topic_settings(&configs);
        let partitions = self
            .open_local_partitions(name, 0..partition_count, &settings)
            .await
            .map_err(|()| code(ResponseError::KafkaStorageError))?;
        tracing::info!(topic = name, partitions = partition_count, "created topic");
        let topic = Arc::new(Topic {
            name: name.to_string(),
            partitions,
        });
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_string(), topic);
        self.metadata
            .write()
            .expect("metadata lock")
            .add_topic_with_configs(
                name,
                false,
                vec![PartitionImage::single_replica(self.config.node_id); partition_count as usize],
                configs,
            )
            .expect("topic admin is serialised, so the name is free, and one replica leads itself");
        Ok(())
    }

    /// A single node's new partitions `indexes` of `name`, each opened (its
    /// directory created) with `settings`, then the data directory synced
    /// so the directories survive a crash. A storage error is logged.
    async fn open_local_partitions(
        &self,
        name: &str,
        indexes: std::ops::Range<i32>,
        settings: &crate::topic_config::TopicSettings,
    ) -> Result<BTreeMap<i32, Arc<Partition>>, ()> {
        let now_ms = self.clock.now_ms();
        let mut partitions = BTreeMap::new();
        for index in indexes {
            let dir = self.config.log_dirs.join(format!("{name}-{index}"));
            let log = PartitionLog::open(self.storage.clone(), &dir, settings.log.clone(), now_ms)
                .await
                .map_err(|error| {
                    tracing::error!(topic = name, partition = index, %error, "creating a partition failed");
                })?;
            let partition = Partition::new(
                name.to_string(),
                index,
                log,
                self.config.node_id,
                self.observed.clone(),
            );
            partition.apply_settings(settings).await;
            partitions.insert(index, Arc::new(partition));
        }
        if let Err(error) = self.storage.sync_dir(&self.config.log_dirs).await {
            tracing::error!(topic = name, %error, "syncing the data directory failed");
            return Err(());
        }
        Ok(partitions)
    }

    /// Deletes a topic. Its committed offsets are tombstoned durably first:
    /// were the files deleted first, a crash in between would leave offsets
    /// that a recreated topic of the same name would resume from.
    pub async fn delete_topic(&self, name: &str) -> Result<(), i16> {
        use kafka_protocol::error::ResponseError;
        if name == OFFSETS_TOPIC {
            // Kafka refuses to delete its internal topics too.
            return Err(ResponseError::InvalidTopicException.code());
        }
        if self.cluster.is_some() {
            return self.delete_topic_in_cluster(name).await;
        }
        let _admin = self.topic_admin.lock().await;
        if self.topic(name).is_none() {
            return Err(ResponseError::UnknownTopicOrPartition.code());
        }
        let waiter = self.new_waiter();
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .persists
            .insert(waiter, sender);
        self.coordinate(|coordinator, _| coordinator.remove_topic(name, Some(waiter)));
        match receiver.await {
            Ok(Ok(())) => {}
            Ok(Err(code)) => return Err(code),
            Err(_) => return Err(ResponseError::KafkaStorageError.code()),
        }
        let Some(topic) = self.topics.write().expect("topics lock").remove(name) else {
            return Err(ResponseError::UnknownTopicOrPartition.code());
        };
        self.metadata
            .write()
            .expect("metadata lock")
            .remove_topic(name)
            .expect("topic admin is serialised, so the topic is still in the image");
        for partition in topic.partitions.values() {
            if let Err(error) = partition.delete().await {
                tracing::error!(topic = name, partition = partition.index, %error, "deleting partition files failed");
            }
        }
        // After the directories: a crash in between leaves overrides for a
        // topic with no directories, which the next start drops.
        if let Err(error) = self.save_topic_configs(None).await {
            tracing::error!(topic = name, %error, "dropping the topic's configs failed");
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Hands out a fresh producer id, persisting a new block when needed.
    pub async fn allocate_producer_id(&self) -> io::Result<i64> {
        let mut ids = self.producer_ids.lock().await;
        if ids.next >= ids.block_end {
            let block_end = ids.next + PRODUCER_ID_BLOCK_SIZE;
            write_number_file(
                self.storage.as_ref(),
                &self.config.log_dirs,
                PRODUCER_ID_BLOCK_FILE,
                block_end,
            )
            .await?;
            ids.block_end = block_end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// Wakes long-polling fetches: a high watermark moved.
    fn notify_data_arrived(&self) {
        self.data_arrived
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// The number of a newly accepted connection; later ones are larger.
    pub fn number_connection(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    fn new_waiter(&self) -> WaiterId {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `f` on the coordinator and carries out what it returns, in
    /// order: writes go onto the persistence queue while the coordinator
    /// lock is still held (so the offsets log sees them in the order the
    /// coordinator made them), then parked callers are answered and facts
    /// reported.
    pub(crate) fn coordinate(&self, f: impl FnOnce(&mut GroupCoordinator, i64) -> Vec<Effect>) {
        let load = self.coordinator_load.lock().expect("coordinator load lock");
        self.coordinate_locked(&load, f);
    }

    /// [`Broker::coordinate`] under the coordinator-load lock the caller
    /// holds (it is always taken before the coordinator's). Writes are
    /// tagged with the load's term; only a loaded coordinator's reach the
    /// log, any other's fail at once.
    fn coordinate_locked(
        &self,
        load: &offsets::CoordinatorLoad,
        f: impl FnOnce(&mut GroupCoordinator, i64) -> Vec<Effect>,
    ) {
        let loaded = matches!(load.role, offsets::CoordinatorRole::Loaded { .. });
        let now_ms = self.clock.now_ms();
        let mut deliver = Vec::new();
        {
            let mut coordinator = self.coordinator.lock().expect("coordinator lock");
            let mut queue = std::collections::VecDeque::from(f(&mut coordinator, now_ms));
            while let Some(effect) = queue.pop_front() {
                match effect {
                    Effect::Persist(id, durable) => {
                        let request = offsets::PersistRequest {
                            id,
                            durable,
                            term: load.term,
                            // tokio's clock, virtual under the simulation,
                            // as every wait in the broker.
                            queued_at: tokio::time::Instant::now(),
                        };
                        let queued = if loaded {
                            self.persist_queue.try_send(request).map_err(|error| {
                                tracing::warn!(%error, "group persistence queue full; failing the write");
                            })
                        } else {
                            tracing::warn!(
                                "a group write while the coordinator is not loaded; failing it"
                            );
                            Err(())
                        };
                        if queued.is_err() {
                            let failed = coordinator.on_persisted(now_ms, id, false);
                            for (at, effect) in failed.into_iter().enumerate() {
                                queue.insert(at, effect);
                            }
                        }
                    }
                    other => deliver.push(other),
                }
            }
        }
        let mut waiters = self.waiters.lock().expect("waiters lock");
        for effect in deliver {
            // A caller may have timed out and gone: nothing to do then.
            match effect {
                Effect::CompleteJoin(waiter, result) => {
                    if let Some(sender) = waiters.joins.remove(&waiter) {
                        let _ = sender.send(result);
                    }
                }
                Effect::CompleteSync(waiter, result) => {
                    if let Some(sender) = waiters.syncs.remove(&waiter) {
                        let _ = sender.send(result);
                    }
                }
                Effect::CompleteCommit(waiter, result) => {
                    if let Some(sender) = waiters.commits.remove(&waiter) {
                        let _ = sender.send(result);
                    }
                }
                Effect::CompletePersist(waiter, result) => {
                    if let Some(sender) = waiters.persists.remove(&waiter) {
                        let _ = sender.send(result);
                    }
                }
                Effect::Report(fact) => {
                    if let Fact::Generation { group, generation } = &fact {
                        tracing::info!(group_id = %group, generation_id = generation, "group generation changed");
                    }
                    self.observed.report(|| fact);
                }
                Effect::Persist(..) => unreachable!("queued above"),
            }
        }
    }

    /// Runs the periodic work until the returned handles are aborted: group
    /// timers, `log.flush.interval.ms` and retention.
    pub fn spawn_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = self.spawn_cluster();
        let broker = Arc::clone(self);
        handles.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(GROUP_TICK_MS));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                broker.coordinate(|coordinator, now_ms| coordinator.tick(now_ms));
            }
        }));
        let broker = Arc::clone(self);
        handles.push(tokio::spawn(async move {
            let period =
                Duration::from_millis(broker.config.log_flush_scheduler_interval_ms.max(1));
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                broker.flush_due_logs().await;
            }
        }));
        let broker = Arc::clone(self);
        handles.push(tokio::spawn(async move {
            let period =
                Duration::from_millis(broker.config.log_retention_check_interval_ms.max(1));
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                broker.apply_retention().await;
            }
        }));
        if self.config.log_cleaner_enable {
            let broker = Arc::clone(self);
            handles.push(tokio::spawn(async move {
                let backoff = Duration::from_millis(broker.config.log_cleaner_backoff_ms.max(1));
                loop {
                    tokio::time::sleep(backoff).await;
                    broker.clean_logs().await;
                }
            }));
        }
        handles
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let topics = self.topics.read().expect("topics lock");
        topics
            .values()
            .flat_map(|t| t.partitions.values().cloned())
            .collect()
    }

    /// Flushes every log whose oldest unflushed write is past `log.flush.interval.ms`.
    pub async fn flush_due_logs(&self) {
        let now_ms = self.clock.now_ms();
        let mut moved = false;
        for partition in self.all_partitions() {
            let result = partition
                .with_log(async |log| {
                    if log.flush_due(now_ms) {
                        log.flush().await?;
                        return Ok(true);
                    }
                    Ok(false)
                })
                .await;
            if matches!(result, Ok(true)) {
                moved = true;
            }
        }
        if moved {
            self.notify_data_arrived();
        }
    }

    /// Applies `log.retention.ms` and `log.retention.bytes` to every log.
    pub async fn apply_retention(&self) {
        let now_ms = self.clock.now_ms();
        for partition in self.all_partitions() {
            let result = partition
                .with_log(async |log| log.apply_retention(now_ms).await)
                .await;
            if let Err(error) = result {
                tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "retention failed");
            }
        }
    }

    /// Runs one cleaning pass over every compacted log that is due (the
    /// log cleaner, `src/log/cleaner.rs`). The log's lock is held only to
    /// plan the map and each segment's rewrite and to install it; the dirty
    /// part is read and each segment rewritten without it.
    pub async fn clean_logs(&self) {
        let dedupe_bytes_max = self.config.log_cleaner_dedupe_buffer_size;
        for partition in self.all_partitions() {
            if !partition.is_compacted() {
                continue;
            }
            let now_ms = self.clock.now_ms();
            // The map is planned under the log's lock and built without it;
            // which segments it covers is read under the lock again.
            let planned = partition
                .with_log(async |log| {
                    Ok(log
                        .cleaning_due(now_ms)
                        .map(|due| (due, log.plan_map(&due))))
                })
                .await;
            let (due, map_job) = match planned {
                Ok(Some(planned)) => planned,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "log cleaner failed");
                    continue;
                }
            };
            let map = match map_job.build(dedupe_bytes_max).await {
                Ok(map) => map,
                Err(error) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "log cleaner failed");
                    continue;
                }
            };
            let Ok(bases) = partition
                .with_log(async |log| Ok(log.segments_to_clean(&map)))
                .await
            else {
                continue;
            };
            let mut pass = crate::log::cleaner::PassCleaned {
                keys_mapped: map.len(),
                ..Default::default()
            };
            let mut complete = true;
            for base in bases {
                let now_ms = self.clock.now_ms();
                match self.clean_segment(&partition, base, &map, now_ms).await {
                    Ok(Some(cleaned)) => pass.add(&cleaned),
                    Ok(None) => complete = false,
                    Err(error) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "log cleaner failed");
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                let _ = partition
                    .with_log(async |log| {
                        log.finish_cleaning(&map, &pass);
                        Ok(())
                    })
                    .await;
            }
            tracing::info!(
                topic = %partition.topic,
                partition = partition.index,
                dirty_ratio = due.dirty_ratio,
                keys = pass.keys_mapped,
                segments = pass.segments,
                bytes_before = pass.bytes_before,
                bytes_after = pass.bytes_after,
                records_removed = pass.records_removed,
                tombstones_removed = pass.tombstones_removed,
                "log cleaner pass"
            );
        }
    }

    /// Cleans one segment of `partition`: planned and installed under the
    /// log's lock, rewritten without it, so produce and fetch go on while
    /// the segment is read and written.
    async fn clean_segment(
        &self,
        partition: &Partition,
        base: i64,
        map: &crate::log::cleaner::OffsetMap,
        now_ms: i64,
    ) -> Result<Option<crate::log::cleaner::SegmentCleaned>, partition::PartitionError> {
        let Some(job) = partition
            .with_log(async |log| Ok(log.plan_clean(base)))
            .await?
        else {
            return Ok(None);
        };
        let rewritten = job
            .rewrite(map, now_ms)
            .await
            .map_err(partition::PartitionError::Log)?;
        partition
            .with_log(async |log| log.install_cleaned(&job, rewritten).await)
            .await
    }

    /// Flushes every log, for a clean shutdown.
    pub async fn flush_all(&self) {
        for partition in self.all_partitions() {
            let _ = partition.with_log(async |log| log.flush().await).await;
        }
    }
}

/// Reports a recovered partition log. Recovery sets the high watermark too
/// (to what it kept); a single broker serves it at once, so both facts are
/// reported before anything can be fetched. A replica of a cluster serves
/// nothing until it leads, and reports its high watermark then.
fn report_recovered(
    observed: &Observed,
    topic: &str,
    partition: i32,
    log: &PartitionLog,
    replicated: bool,
) {
    observed.report(|| Fact::Recovered {
        topic: topic.to_string(),
        partition,
        log_end_offset: log.log_end_offset(),
        high_watermark: log.high_watermark(),
    });
    if replicated {
        return;
    }
    observed.report(|| Fact::HighWatermark {
        topic: topic.to_string(),
        partition,
        high_watermark: log.high_watermark(),
    });
}

/// Reads a number kept in its own file in `dir`; 0 when the file is new.
async fn read_number_file(
    storage: &dyn crate::storage::Storage,
    dir: &Path,
    name: &str,
) -> io::Result<i64> {
    let path = dir.join(name);
    let in_path =
        |error: io::Error| io::Error::new(error.kind(), format!("{}: {error}", path.display()));
    let file = storage.open(&path).await.map_err(in_path)?;
    let bytes = file.read_at(0, 64).await.map_err(in_path)?;
    if bytes.is_empty() {
        return Ok(0);
    }
    let text = String::from_utf8_lossy(&bytes);
    text.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{} holds {text:?}, not a number", path.display())))
}

/// Writes a number file atomically: a temporary file, synced, then renamed.
async fn write_number_file(
    storage: &dyn crate::storage::Storage,
    dir: &Path,
    name: &str,
    value: i64,
) -> io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let _ = storage.remove(&temporary).await;
    let file = storage.open(&temporary).await?;
    file.append(bytes::Bytes::from(format!("{value}\n")))
        .await?;
    file.sync().await?;
    storage.rename(&temporary, &dir.join(name)).await?;
    storage.sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_directories_and_topic_names_parse() {
        assert_eq!(
            parse_partition_dir("orders-12"),
            Some(("orders".into(), 12))
        );
        assert_eq!(
            parse_partition_dir("my-topic-0"),
            Some(("my-topic".into(), 0))
        );
        assert_eq!(parse_partition_dir("noindex"), None);
        assert!(valid_topic_name("a.b_c-1"));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("has space"));
        assert!(!valid_topic_name(&"x".repeat(250)));
    }
}
